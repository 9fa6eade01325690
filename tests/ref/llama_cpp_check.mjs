// llama_cpp_check.mjs — loads a GGUF file in real llama.cpp (npm node-llama-cpp,
// its prebuilt CPU binary) and prints, as one JSON object: the ids of a text,
// the greedy continuation of a prompt, and the log-probability llama.cpp gives
// each next token of a scored sequence (from its full next-token distribution).
// Usage: node llama_cpp_check.mjs MODEL.gguf REQUEST.json
//   REQUEST: {"text": str, "prompt": [ids], "n_greedy": n, "score": [ids]}
import {readFileSync} from "node:fs";
import {dirname, join} from "node:path";
import {fileURLToPath, pathToFileURL} from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const {getLlama} = await import(pathToFileURL(
  join(root, ".cache", "npm", "node_modules", "node-llama-cpp", "dist", "index.js")).href);

const [path, reqPath] = process.argv.slice(2);
const req = JSON.parse(readFileSync(reqPath, "utf8"));
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath: path});
const out = {tokens: Array.from(model.tokenize(req.text, false))};
// One thread (ggml's workers spin while waiting: on a shared 2-core machine
// more only wait longer). The KV cache in f32 and flash attention off, as
// moe computes: llama.cpp's CPU flash attention rounds Q and K to f16, which
// alone moves log-probs by up to ~7e-4 (measured) where the rest agrees to ~1e-6.
const ctx = await model.createContext({contextSize: 256, sequences: 1, batchSize: 256, threads: 1,
  flashAttention: false, experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32"});
const seq = ctx.getSequence();
out.greedy = [];
for await (const t of seq.evaluate(req.prompt, {temperature: 0})) {
  out.greedy.push(t);
  if (out.greedy.length >= req.n_greedy) break;
}
await seq.clearHistory();
const items = req.score.map((t, i) => i + 1 < req.score.length
  ? [t, {generateNext: {probabilities: true, options: {temperature: 1, topK: 0, topP: 1, minP: 0}}}] : t);
const res = await seq.controlledEvaluate(items);
out.logprobs = [];
out.vocab_seen = [];
for (let i = 0; i + 1 < req.score.length; i++) {
  const probs = res[i].next.probabilities;
  const p = probs.get(req.score[i + 1]) ?? 0;
  out.logprobs.push(Math.log(p));
  out.vocab_seen.push(probs.size);
}
console.log(JSON.stringify(out));
await ctx.dispose();
await model.dispose();
