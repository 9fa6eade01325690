// onnx_check.js — runs a `moe export --format onnx` folder in onnxruntime-node
// (CPU) for tests/ref/test_onnx.py. Usage: node onnx_check.js DIR REQUEST.json
// REQUEST: {"score": [ids], "prompt": [ids], "n_greedy": n, "padded": p}. Prints JSON:
//   logprobs: log p(score[i+1] | score[..i]) from one call over score but
//             its last id, with an empty cache (as `moe score` runs a window);
//   padded, alone, batch_first (with "padded": p): the window's inputs and
//             their first n - p left-padded by p masked positions, run as one
//             batch of two: the second row's log-probs in the batch and run
//             alone, and the first row's in the batch;
//   greedy:   n tokens by arg-max after the prompt, one call per token with
//             the KV cache (present.* fed back as past_key_values.*).
'use strict';
const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');

function logSoftmaxAt(row, id) {
  let mx = -Infinity;
  for (const v of row) if (v > mx) mx = v;
  let s = 0;
  for (const v of row) s += Math.exp(v - mx);
  return row[id] - mx - Math.log(s);
}

function argmax(row) {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

async function main() {
  const [dir, reqPath] = process.argv.slice(2);
  const req = JSON.parse(fs.readFileSync(reqPath, 'utf8'));
  const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
  const L = cfg.num_hidden_layers, KV = cfg.num_key_value_heads, hd = cfg.head_dim, V = cfg.vocab_size;
  const session = await ort.InferenceSession.create(path.join(dir, 'model.onnx'),
    {executionProviders: ['cpu'], graphOptimizationLevel: 'disabled', intraOpNumThreads: 1});

  const emptyPast = () => {
    const feeds = {};
    for (let l = 0; l < L; l++)
      for (const kv of ['key', 'value'])
        feeds[`past_key_values.${l}.${kv}`] = new ort.Tensor('float32', new Float32Array(0), [1, KV, 0, hd]);
    return feeds;
  };
  // ids at positions p0.. after a cache of p0 positions
  async function run(ids, past, p0) {
    const n = ids.length, total = p0 + n;
    const feeds = Object.assign({}, past, {
      input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, n]),
      attention_mask: new ort.Tensor('int64', new BigInt64Array(total).fill(1n), [1, total]),
      position_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map((_, i) => BigInt(p0 + i))), [1, n]),
    });
    const out = await session.run(feeds);
    const next = {};
    for (let l = 0; l < L; l++)
      for (const kv of ['key', 'value']) next[`past_key_values.${l}.${kv}`] = out[`present.${l}.${kv}`];
    return {logits: out.logits.data, past: next};
  }

  const result = {};
  if (req.score) {
    // the window's inputs, as moe score runs them: every id but the last
    // (expert choice routes over the tokens of the call)
    const ids = req.score;
    const {logits} = await run(ids.slice(0, -1), emptyPast(), 0);
    result.logprobs = [];
    for (let i = 0; i + 1 < ids.length; i++)
      result.logprobs.push(logSoftmaxAt(logits.subarray(i * V, (i + 1) * V), ids[i + 1]));
  }
  if (req.padded) {
    // a batch of two: the window's inputs, and its first n - pad of them
    // left-padded with pad masked positions (ids 0, position_ids 0); the
    // second row's log-probs, from the batch and from the row alone
    const ids = req.score.slice(0, -1), pad = req.padded, n = ids.length, m = n - pad;
    const feeds = {};
    for (let l = 0; l < L; l++)
      for (const kv of ['key', 'value'])
        feeds[`past_key_values.${l}.${kv}`] = new ort.Tensor('float32', new Float32Array(0), [2, KV, 0, hd]);
    const row2 = new Array(pad).fill(0).concat(ids.slice(0, m));
    feeds.input_ids = new ort.Tensor('int64', BigInt64Array.from(ids.concat(row2).map(BigInt)), [2, n]);
    const mask = new Array(n).fill(1).concat(new Array(pad).fill(0), new Array(m).fill(1));
    feeds.attention_mask = new ort.Tensor('int64', BigInt64Array.from(mask.map(BigInt)), [2, n]);
    const pos = ids.map((_, i) => i).concat(new Array(pad).fill(0), ids.slice(0, m).map((_, i) => i));
    feeds.position_ids = new ort.Tensor('int64', BigInt64Array.from(pos.map(BigInt)), [2, n]);
    const out = (await session.run(feeds)).logits.data;
    const alone = (await run(ids.slice(0, m), emptyPast(), 0)).logits;
    result.padded = [];
    result.alone = [];
    for (let i = 0; i + 1 < m; i++) {
      result.padded.push(logSoftmaxAt(out.subarray((n + pad + i) * V, (n + pad + i + 1) * V), ids[i + 1]));
      result.alone.push(logSoftmaxAt(alone.subarray(i * V, (i + 1) * V), ids[i + 1]));
    }
    result.batch_first = [];
    for (let i = 0; i + 1 < n; i++) result.batch_first.push(logSoftmaxAt(out.subarray(i * V, (i + 1) * V), ids[i + 1]));
  }
  if (req.prompt) {
    let {logits, past} = await run(req.prompt, emptyPast(), 0);
    let pos = req.prompt.length;
    result.greedy = [];
    for (let i = 0; i < req.n_greedy; i++) {
      const n = logits.length / V;
      const id = argmax(logits.subarray((n - 1) * V, n * V));
      result.greedy.push(id);
      if (i + 1 === req.n_greedy) break;
      ({logits, past} = await run([id], past, pos));
      pos += 1;
    }
  }
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((e) => { console.error(e && e.stack || String(e)); process.exit(1); });
