// tiktoken_cases.js — records the expected r50k_base ids of the tokenizer's
// merge-priority cases (tests/unit/test_tokenizer.c, test_r50k_merge_priority)
// from npm's tiktoken (the WASM build of OpenAI's Rust core). Each case is a
// unit repeated COUNT times; prints one C initializer line per case:
//   {"UNIT", COUNT, "ID ID ..."},
// Run once (after tools/npm_deps.sh) and paste the output into the test:
//   node tools/tiktoken_cases.js
'use strict';
const path = require('path');
const nm = path.join(__dirname, '..', '.cache', 'npm', 'node_modules');
const { get_encoding } = require(path.join(nm, 'tiktoken'));
// repeated pairs of equal rank (ties: leftmost first), runs either side of
// 48 bytes (the encoder's switch from a scan to a heap), multi-byte letters,
// digits and whitespace
const CASES = [
  ['a', 3], ['a', 5], ['a', 7], ['a', 9], ['a', 17], ['a', 33], ['a', 47], ['a', 48], ['a', 49],
  ['a', 50], ['a', 64], ['a', 97], ['a', 200],
  ['ab', 3], ['ab', 24], ['ab', 25], ['aab', 17], ['xyz', 16], ['xyz', 17],
  ['\u00e9', 24], ['\u00e9', 25], ['\u00e9', 31],
  ['0', 7], ['0', 49], ['7', 60], [' ', 49], ['\n', 50],
];
const enc = get_encoding('r50k_base');
const cstr = (s) => Array.from(Buffer.from(s, 'utf8')).map((b) =>
  b >= 0x20 && b < 0x7f && b !== 0x22 && b !== 0x5c ? String.fromCharCode(b) : '\\x' + b.toString(16).padStart(2, '0')).join('');
for (const [unit, count] of CASES) {
  const ids = Array.from(enc.encode_ordinary(unit.repeat(count)));
  process.stdout.write(`        {"${cstr(unit)}", ${count}, "${ids.join(' ')}"},\n`);
}
enc.free();
