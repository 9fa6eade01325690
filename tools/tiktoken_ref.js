// tiktoken_ref.js — the reference encoders for tests and benchmarks: encodes
// a UTF-8 text file with r50k_base from the npm package gpt-tokenizer
// (default) or tiktoken (WASM), and prints the ids separated by spaces.
// Usage: node tools/tiktoken_ref.js [--lib gpt-tokenizer|tiktoken] FILE
'use strict';
const fs = require('fs');
const path = require('path');
const nm = path.join(__dirname, '..', '.cache', 'npm', 'node_modules');
let lib = 'gpt-tokenizer';
const args = process.argv.slice(2);
if (args[0] === '--lib') { lib = args[1]; args.splice(0, 2); }
if (args.length !== 1) { console.error('usage: node tools/tiktoken_ref.js [--lib gpt-tokenizer|tiktoken] FILE'); process.exit(2); }
const raw = fs.readFileSync(args[0]);
const text = raw.toString('utf8');
if (!Buffer.from(text, 'utf8').equals(raw)) {
  console.error('tiktoken_ref: the file is not valid UTF-8, which the reference encoders cannot take');
  process.exit(3);
}
let ids;
if (lib === 'gpt-tokenizer' && /[\u0085\ufeff]/.test(text)) {
  // JavaScript's \s counts U+FEFF and not U+0085; Unicode White_Space (tiktoken) the reverse
  console.error('tiktoken_ref: text holds U+0085 or U+FEFF, where gpt-tokenizer differs from tiktoken');
  process.exit(3);
}
if (lib === 'gpt-tokenizer') {
  const { encode } = require(path.join(nm, 'gpt-tokenizer', 'cjs', 'encoding', 'r50k_base.js'));
  ids = encode(text, { disallowedSpecial: new Set() });
} else if (lib === 'tiktoken') {
  const { get_encoding } = require(path.join(nm, 'tiktoken'));
  const enc = get_encoding('r50k_base');
  ids = Array.from(enc.encode_ordinary(text));
  enc.free();
} else {
  console.error(`tiktoken_ref: unknown --lib ${lib}`); process.exit(2);
}
process.stdout.write(ids.join(' ') + '\n');
