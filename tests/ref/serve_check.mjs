// serve_check.mjs — drives a running `moe serve` with the real OpenAI client
// (npm openai, pinned in tools/npm_deps.sh) and raw fetch for what a client
// library hides (error bodies, a client that leaves mid-stream), and prints
// one JSON array of [name, ok, detail] checks for tests/ref/test_serve.py.
// Usage: node serve_check.mjs REQUEST.json
//   REQUEST: {"base": "http://127.0.0.1:PORT/v1", "context": n,
//             "greedy": [{"prompt": str, "max_tokens": n, "temperature": t, "seed": s,
//                         "expect_b64": moe generate's continuation}] (the first greedy),
//             "score": {"ids": [...], "expect": [moe score's logprobs]},
//             "chat": {"messages": [...], "max_tokens": n, "expect_b64": ...}}
import {readFileSync} from "node:fs";
import {dirname, join} from "node:path";
import {fileURLToPath, pathToFileURL} from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const {default: OpenAI} = await import(pathToFileURL(
  join(root, ".cache", "npm", "node_modules", "openai", "index.mjs")).href);

const req = JSON.parse(readFileSync(process.argv[2], "utf8"));
const client = new OpenAI({baseURL: req.base, apiKey: "none", maxRetries: 0, timeout: 30000});
const out = [];
const check = (name, ok, detail = "") => out.push([name, !!ok, String(detail).slice(0, 300)]);
// moe's bytes as a client sees them: UTF-8 with U+FFFD for invalid bytes
const text = (b64) => new TextDecoder().decode(Buffer.from(b64, "base64"));
const short = (s) => JSON.stringify(s.slice(0, 40));

async function raw(path, body, init = {}) {
  const r = await fetch(req.base + path, {method: "POST", headers: {"content-type": "application/json"},
    body: typeof body === "string" ? body : JSON.stringify(body), ...init});
  return {status: r.status, json: await r.json().catch(() => null)};
}
const openaiShape = (j) => j && j.error && typeof j.error.message === "string" && j.error.message.length > 0 &&
  j.error.type === "invalid_request_error" && "param" in j.error && j.error.code === null;

async function greedy(g, stream = false) {
  const args = {model: "m", prompt: g.prompt, max_tokens: g.max_tokens, temperature: g.temperature, seed: g.seed};
  if (!stream) return (await client.completions.create(args)).choices[0].text;
  let s = "", finish = null;
  for await (const c of await client.completions.create({...args, stream: true})) {
    s += c.choices[0].text;
    finish = c.choices[0].finish_reason ?? finish;
  }
  return finish ? s : "(no finish_reason)";
}

// /v1/models
const models = await client.models.list();
check("models", models.data.length === 1 && typeof models.data[0].id === "string", JSON.stringify(models.data));

// greedy completions, plain and streamed, equal moe generate --temperature 0
const g0 = req.greedy[0];
const plain = await greedy(g0);
check("greedy_equals_generate", plain === text(g0.expect_b64), `${short(plain)} vs ${short(text(g0.expect_b64))}`);
const streamed = await greedy(g0, true);
check("stream_equals_plain", streamed === plain, `${short(streamed)} vs ${short(plain)}`);

// prompt log-probs: echo + logprobs + max_tokens 0, and lm-evaluation-harness's form
const sc = req.score;
const lp = (await client.completions.create({model: "m", prompt: sc.ids, max_tokens: 0, echo: true, logprobs: 1,
  temperature: 0})).choices[0].logprobs;
const tl = lp.token_logprobs;
const worst = tl.length === sc.ids.length ? Math.max(...sc.expect.map((v, i) => Math.abs(v - tl[i + 1]))) : Infinity;
check("prompt_logprobs_equal_score", tl[0] === null && worst === 0,
  `first ${tl[0]}, max |diff| ${worst} over ${sc.expect.length}`);
check("prompt_logprobs_fields", lp.tokens.length === sc.ids.length && lp.text_offset.length === sc.ids.length &&
  lp.top_logprobs[0] === null && lp.top_logprobs.slice(1).every((t) => Object.keys(t).length === 1) &&
  lp.text_offset.every((o, i) => i === 0 || o >= lp.text_offset[i - 1]), JSON.stringify(lp.top_logprobs.slice(0, 3)));
// each top entry is the most probable: no other value above the token's own when it is listed
const greedyOk = lp.top_logprobs.slice(1).every((t, i) => Math.max(...Object.values(t)) >= tl[i + 1]);
check("top_logprobs_at_least_token", greedyOk);
const harness = await client.completions.create({model: "m", prompt: [sc.ids], max_tokens: 1, echo: true,
  logprobs: 1, temperature: 0, seed: 1234});
const htl = harness.choices[0].logprobs.token_logprobs;
check("lm_eval_form", htl.length === sc.ids.length + 1 && sc.expect.every((v, i) => v === htl[i + 1]),
  `${htl.length} values for ${sc.ids.length} prompt tokens + 1`);

// chat: the messages' contents joined, each followed by "\n"
const ch = req.chat;
const chat = await client.chat.completions.create({model: "m", messages: ch.messages, max_tokens: ch.max_tokens,
  temperature: 0});
const chatText = chat.choices[0].message.content;
check("chat_equals_generate", chat.choices[0].message.role === "assistant" && chatText === text(ch.expect_b64),
  `${short(chatText)} vs ${short(text(ch.expect_b64))}`);
let chatStream = "", role = null;
for await (const c of await client.chat.completions.create({model: "m", messages: ch.messages,
  max_tokens: ch.max_tokens, temperature: 0, stream: true, stream_options: {include_usage: true}})) {
  if (c.choices.length) { chatStream += c.choices[0].delta.content ?? ""; role = c.choices[0].delta.role ?? role; }
}
check("chat_stream_equals_chat", role === "assistant" && chatStream === chatText, short(chatStream));

// 8 clients at once, half streaming, seven sampling with their own seed and
// length: each gets its own answer, as moe generate gives it alone
const all = await Promise.all(req.greedy.map((g, i) => greedy(g, i % 2 === 1)));
const wrong = all.map((s, i) => s === text(req.greedy[i].expect_b64) ? -1 : i).filter((i) => i >= 0);
check("concurrent_8", req.greedy.length === 8 && wrong.length === 0 &&
  new Set(all).size === 8, `wrong answers for clients [${wrong}]; ${new Set(all).size} distinct`);

// seeded sampling: the same seed gives the same text
const sampled = (seed) => client.completions.create({model: "m", prompt: g0.prompt, max_tokens: 16,
  temperature: 1, top_p: 0.9, seed}).then((r) => r.choices[0].text);
const [s1, s2] = [await sampled(7), await sampled(7)];
check("seed_repeats", s1 === s2, short(s1));
// stop: the text ends before the stop string, finish_reason "stop"
const stopAt = plain.length > 6 ? plain.slice(3, 5) : null;
if (stopAt && !stopAt.includes("\ufffd")) {
  const r = (await client.completions.create({model: "m", prompt: g0.prompt, max_tokens: g0.max_tokens,
    temperature: 0, stop: [stopAt]})).choices[0];
  check("stop_string", r.text === plain.slice(0, plain.indexOf(stopAt)) && r.finish_reason === "stop",
    `${short(r.text)} stop ${JSON.stringify(stopAt)}`);
}

// bad requests: 4xx in OpenAI's shape, through the client and raw
const bad = [
  ["malformed_json", "/completions", '{"prompt": "x",', 400, null],
  ["unknown_field", "/completions", {prompt: "x", bogus: 1}, 400, "bogus"],
  ["max_tokens_huge", "/completions", {prompt: "x", max_tokens: 1e9}, 400, "max_tokens"],
  ["prompt_too_long", "/completions", {prompt: Array(req.context + 1).fill(1), max_tokens: 0}, 400, "prompt"],
  ["bad_token_id", "/completions", {prompt: [1, 1e7]}, 400, "prompt"],
  ["wrong_type", "/completions", {prompt: "x", temperature: "hot"}, 400, "temperature"],
  ["no_prompt", "/completions", {max_tokens: 2}, 400, "prompt"],
  ["chat_no_messages", "/chat/completions", {messages: []}, 400, "messages"],
  ["chat_bad_role", "/chat/completions", {messages: [{role: "robot", content: "x"}]}, 400, "messages"],
  ["body_too_large", "/completions", JSON.stringify({prompt: "x".repeat(2 << 20)}), 413, null],
];
for (const [name, path, body, status, param] of bad) {
  const r = await raw(path, body);
  check(`bad_${name}`, r.status === status && openaiShape(r.json) && r.json.error.param === param,
    `${r.status} ${JSON.stringify(r.json)}`);
}
const nf = await fetch(req.base + "/nothing");
check("bad_404", nf.status === 404 && openaiShape(await nf.json()));
try {
  await client.completions.create({model: "m", prompt: "x", max_tokens: 1e9});
  check("client_sees_400", false, "no error");
} catch (e) {
  check("client_sees_400", e.status === 400 && e.param === "max_tokens" && e.type === "invalid_request_error",
    `${e.status} ${e.message}`);
}

// a client that leaves mid-stream does not hurt the next request
const ac = new AbortController();
const r = await fetch(req.base + "/completions", {method: "POST", headers: {"content-type": "application/json"},
  body: JSON.stringify({prompt: g0.prompt, max_tokens: req.context - 8, temperature: 0.5, stream: true}),
  signal: ac.signal});
const reader = r.body.getReader();
const first = await reader.read();
ac.abort();
await reader.read().catch(() => null);
const after = await greedy(g0);
check("disconnect_then_next", first.value && first.value.length > 0 && after === plain, short(after));

console.log(JSON.stringify(out));
