#!/usr/bin/env bash
# test_prepare_bin.sh — `moe prepare --input FILE.bin`: nanoGPT's raw uint16
# token files become moe token files with the same ids (read back by the
# independent Python reader tools/moe_files.py), the tokenizer recorded when
# given, training runs on them; bad files and missing vocabularies refused
# with one line.
set -u
build=${1:-build}
moe="$build/moe"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0
. "$(dirname "$0")/lib.sh"
py() { /usr/bin/python3 - "$tmp" "$@"; }

py <<'PY'
import numpy as np, sys
t = sys.argv[1]
np.random.default_rng(3).integers(0, 50257, size=300001, dtype=np.uint16).tofile(f"{t}/gpt2.bin")
np.random.default_rng(4).integers(0, 257, size=5000, dtype=np.uint16).tofile(f"{t}/bytes.bin")
open(f"{t}/odd.bin", "wb").write(b"\x01\x00\x02")
PY
"$moe" prepare --input "$tmp/gpt2.bin" --out "$tmp/gpt2.tok" --vocab 50257 >/dev/null 2>&1 || bad "prepare gpt2.bin"
"$moe" prepare --input "$tmp/bytes.bin" --out "$tmp/bytes.tok" --tokenizer bytes >/dev/null 2>&1 || bad "prepare bytes.bin"
py <<'PY' && ok "the ids read back by tools/moe_files.py equal the .bin's; vocab and tokenizer recorded" || bad "ids or header differ"
import numpy as np, sys
sys.path.insert(0, "tools")
import moe_files
t = sys.argv[1]
a = moe_files.read_tokens(f"{t}/gpt2.tok")
assert np.array_equal(np.asarray(a["ids"]), np.fromfile(f"{t}/gpt2.bin", dtype="<u2")), "gpt2 ids"
assert a["vocab_size"] == 50257 and not a.get("tokenizer"), (a["vocab_size"], a.get("tokenizer"))
b = moe_files.read_tokens(f"{t}/bytes.tok")
assert np.array_equal(np.asarray(b["ids"]), np.fromfile(f"{t}/bytes.bin", dtype="<u2")), "bytes ids"
assert b["vocab_size"] == 257 and b.get("tokenizer"), "tokenizer not recorded"
PY
cat >"$tmp/c.json" <<JSON
{"vocab_size": 257, "hidden": 16, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "max_seq_len": 32,
 "steps": 3, "batch_size": 2, "seq_len": 32, "precision": "fp32", "threads": 1}
JSON
check "train runs on a converted file" bash -c "'$moe' train --config '$tmp/c.json' --data '$tmp/bytes.tok' --out '$tmp/run' >/dev/null 2>&1"
expect_error "an odd number of bytes" "even number of bytes" "$moe" prepare --input "$tmp/odd.bin" --out "$tmp/o.tok" --vocab 10
expect_error "an id outside --vocab" "outside the vocabulary of 1000" "$moe" prepare --input "$tmp/gpt2.bin" --out "$tmp/g.tok" --vocab 1000
expect_error "no vocabulary given" "give --tokenizer FILE" "$moe" prepare --input "$tmp/gpt2.bin" --out "$tmp/g.tok"
expect_error "--vocab disagreeing with the tokenizer" "differs from the tokenizer" "$moe" prepare --input "$tmp/bytes.bin" --out "$tmp/g.tok" --tokenizer bytes --vocab 300
check "a refused conversion leaves no output" test ! -e "$tmp/g.tok"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
