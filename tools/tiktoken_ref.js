// tiktoken_ref.js — the reference encoders for tests and benchmarks: encodes
// a UTF-8 text file with the npm package tiktoken (WASM build of OpenAI's
// Rust core; default) or gpt-tokenizer (r50k_base only), and prints the ids
// separated by spaces.
//   --encoding r50k_base|cl100k_base|o200k_base  tiktoken's own tables
//   --encoding llama3  tiktoken's core given Llama 3's ranks (exported by
//     tools/export_tiktoken.js to .cache/tiktoken/llama3.tiktoken), its split
//     pattern (cl100k's) and special tokens
//   --allow-special    special token texts become their ids (default: plain text)
// Usage: node tools/tiktoken_ref.js [--lib tiktoken|gpt-tokenizer] [--encoding NAME] [--allow-special] FILE
'use strict';
const fs = require('fs');
const path = require('path');
const root = path.join(__dirname, '..');
const nm = path.join(root, '.cache', 'npm', 'node_modules');
let lib = 'tiktoken', encoding = 'r50k_base', special = false;
const args = process.argv.slice(2);
for (;;) {
  if (args[0] === '--lib') { lib = args[1]; args.splice(0, 2); }
  else if (args[0] === '--encoding') { encoding = args[1]; args.splice(0, 2); }
  else if (args[0] === '--allow-special') { special = true; args.splice(0, 1); }
  else break;
}
if (args.length !== 1) {
  console.error('usage: node tools/tiktoken_ref.js [--lib tiktoken|gpt-tokenizer] [--encoding NAME] [--allow-special] FILE');
  process.exit(2);
}
const raw = fs.readFileSync(args[0]);
const text = raw.toString('utf8');
if (!Buffer.from(text, 'utf8').equals(raw)) {
  console.error('tiktoken_ref: the file is not valid UTF-8, which the reference encoders cannot take');
  process.exit(3);
}
let ids;
if (lib === 'gpt-tokenizer') {
  if (encoding !== 'r50k_base') { console.error('tiktoken_ref: gpt-tokenizer is used for r50k_base only'); process.exit(2); }
  if (/[\u0085\ufeff]/.test(text)) {
    // JavaScript's \s counts U+FEFF and not U+0085; Unicode White_Space (tiktoken) the reverse
    console.error('tiktoken_ref: text holds U+0085 or U+FEFF, where gpt-tokenizer differs from tiktoken');
    process.exit(3);
  }
  const { encode } = require(path.join(nm, 'gpt-tokenizer', 'cjs', 'encoding', 'r50k_base.js'));
  ids = encode(text, special ? { allowedSpecial: 'all' } : { disallowedSpecial: new Set() });
} else if (lib === 'tiktoken') {
  const tk = require(path.join(nm, 'tiktoken'));
  let enc;
  if (encoding === 'llama3') {
    const ranks = fs.readFileSync(path.join(root, '.cache', 'tiktoken', 'llama3.tiktoken'), 'utf8')
      .split('\n').filter(Boolean).map(l => l.split(' ')[0]);
    const names = ['<|begin_of_text|>', '<|end_of_text|>', '<|reserved_special_token_0|>',
      '<|reserved_special_token_1|>', '<|reserved_special_token_2|>', '<|reserved_special_token_3|>',
      '<|start_header_id|>', '<|end_header_id|>', '<|reserved_special_token_4|>', '<|eot_id|>'];
    for (let i = 5; i < 251; i++) names.push(`<|reserved_special_token_${i}|>`);
    const sp = {};
    names.forEach((n, i) => { sp[n] = ranks.length + i; });
    const cl = require(path.join(nm, 'tiktoken', 'encoders', 'cl100k_base.json'));
    enc = new tk.Tiktoken('! 0 ' + ranks.join(' '), sp, cl.pat_str);  // Llama 3 splits as cl100k
  } else {
    enc = tk.get_encoding(encoding);
  }
  ids = Array.from(special ? enc.encode(text, 'all') : enc.encode_ordinary(text));
  enc.free();
} else {
  console.error(`tiktoken_ref: unknown --lib ${lib}`); process.exit(2);
}
process.stdout.write(ids.join(' ') + '\n');
