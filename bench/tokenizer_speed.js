// tokenizer_speed.js — the reference side of bench/tokenizer_speed.sh: times
// encoding of a UTF-8 text file with the npm package tiktoken (WASM; r50k_base
// or the ENCODING given) or gpt-tokenizer (pure JS, r50k_base),
// single-threaded, and prints one JSON line
// {"lib", "encoding", "bytes", "ids", "seconds", "mb_per_s"}. The text is encoded in
// pieces of about 1 MB cut after a '\n' (one call per piece, as a data
// pipeline would feed documents); the timing excludes reading the file.
// Usage: node bench/tokenizer_speed.js tiktoken|gpt-tokenizer FILE [ENCODING]
'use strict';
const fs = require('fs');
const path = require('path');
const [lib, file, encoding = 'r50k_base'] = process.argv.slice(2);
const nm = path.join(__dirname, '..', '.cache', 'npm', 'node_modules');
const raw = fs.readFileSync(file);
const pieces = [];
for (let p = 0; p < raw.length;) {
  let q = Math.min(raw.length, p + (1 << 20));
  if (q < raw.length) { const nl = raw.indexOf(10, q); q = nl < 0 ? raw.length : nl + 1; }
  pieces.push(raw.subarray(p, q).toString('utf8'));
  p = q;
}
let encode, done = () => {};
if (lib === 'tiktoken') {
  const { get_encoding } = require(path.join(nm, 'tiktoken'));
  const enc = get_encoding(encoding);
  encode = s => enc.encode_ordinary(s).length;
  done = () => enc.free();
} else if (lib === 'gpt-tokenizer') {
  const m = require(path.join(nm, 'gpt-tokenizer', 'cjs', 'encoding', 'r50k_base.js'));
  encode = s => m.encode(s, { disallowedSpecial: new Set() }).length;
} else {
  console.error('usage: node bench/tokenizer_speed.js tiktoken|gpt-tokenizer FILE [ENCODING]');
  process.exit(2);
}
encode('warm up the encoder once');
const t0 = process.hrtime.bigint();
let ids = 0;
for (const s of pieces) ids += encode(s);
const secs = Number(process.hrtime.bigint() - t0) / 1e9;
done();
console.log(JSON.stringify({ lib, encoding, bytes: raw.length, ids, seconds: secs, mb_per_s: raw.length / 1e6 / secs }));
