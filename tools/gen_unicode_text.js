// gen_unicode_text.js — writes a deterministic stress text for the tokenizer
// reference test: words, digits, contractions, many kinds of Unicode white
// space, CJK, emoji, combining marks, control characters and long runs.
// Usage: node tools/gen_unicode_text.js OUT [pieces] [--js-safe]
// --js-safe leaves out U+0085 and U+FEFF, where JavaScript's \s differs from
// Unicode White_Space (and so gpt-tokenizer from tiktoken).
'use strict';
const args = process.argv.slice(2);
const jsSafe = args.includes('--js-safe');
const pos = args.filter(a => !a.startsWith('--'));
const out = pos[0], pieces = Number(pos[1] || 300000);
let pool = [' ', '  ', '   ', '\n', '\n\n', '\t', '\r\n', '\u00a0', '\u2028', '\u3000', '\u0085', '\ufeff',
  '\u200b', '\u2003', '\u1680', '\x0b', '\x0c', '\x1c', '\x1f', '\x00', 'a', 'Z', 'the', ' the', 'Whale',
  ' ocean', 'é', 'ß', '中文', '日本語', 'Ω', 'д', 'العربية', '٣', '²', '½', 'Ⅻ', '7', '42', ' 1999',
  "'s", "'ll", "'T", "'re", "'", '!', '?!', '...', '—', '🙂', '👍🏽', 'e\u0301', '\u0301', '$', '€',
  '<|endoftext|>', 'ﬁ', '\u200d', 'x'];
if (jsSafe) pool = pool.filter(p => p !== '\u0085' && p !== '\ufeff');
let s = 0x12345678;
function rnd(n) { s = (s * 1103515245 + 12345) >>> 0; return (s >>> 8) % n; }
const parts = [];
for (let i = 0; i < pieces; i++) {
  if (rnd(2000) === 0) {  // long runs: exercise long chunks
    const r = [' ', 'a', '7', '!', '\n', 'é'][rnd(6)];
    parts.push(r.repeat(50 + rnd(3000)));
  } else {
    parts.push(pool[rnd(pool.length)]);
  }
}
require('fs').writeFileSync(out, parts.join(''));
