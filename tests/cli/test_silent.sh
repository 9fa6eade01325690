#!/usr/bin/env bash
# test_silent.sh — the ways a user could get a wrong or lost model with exit
# status 0 and no message (issue 14): each is now refused, or done right, and
# each check failed before its fix. Run folders are locked; init never
# overwrites a model; non-finite weights never load; configs and token lists
# holding a NUL byte are refused; a model without its tokenizer does not
# generate garbage; analyze / eval sample the whole file; a checkpoint folder
# resumes into the run that owns it.
set -u
build=${1:-build}
moe="$build/moe"
tmp=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
pass=0; fail=0
. "$(dirname "$0")/lib.sh"

cat >"$tmp/cfg.json" <<'JSON'
{"vocab_size": 40, "hidden": 16, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1,
 "max_seq_len": 16, "seq_len": 16, "batch_size": 2, "steps": 3}
JSON
/usr/bin/python3 - "$tmp" <<'PY'
import sys; sys.path.insert(0, "tools")
import moe_files
moe_files.write_tokens(sys.argv[1] + "/data.tok", [i * 7 % 40 for i in range(500)], 40)
PY
"$moe" train --config "$tmp/cfg.json" --data "$tmp/data.tok" --out "$tmp/run" 2>/dev/null || bad "setup: train"
echo "1 2 3 4 5" >"$tmp/ids.txt"

# 3. init never overwrites a model (a checkpoint least of all)
"$moe" init --config "$tmp/cfg.json" --out "$tmp/m" >/dev/null || bad "setup: init"
ck=$(ls -d "$tmp"/run/checkpoints/step-* | tail -1)
sum=$(cat "$ck/CHECKSUMS")
expect_error init_refuses_checkpoint "$ck" "$moe" init --config "$tmp/cfg.json" --out "$ck" --seed 5
if [ "$(cat "$ck/CHECKSUMS")" = "$sum" ]; then ok init_left_checkpoint_alone; else bad init_left_checkpoint_alone; fi
expect_error init_refuses_model "$tmp/m.*--force" "$moe" init --config "$tmp/cfg.json" --out "$tmp/m"
expect_error init_refuses_run "$tmp/run" "$moe" init --config "$tmp/cfg.json" --out "$tmp/run"
if "$moe" init --config "$tmp/cfg.json" --out "$tmp/m" --seed 9 --force >/dev/null 2>&1; then ok init_force_overwrites_model
else bad init_force_overwrites_model; fi
expect_error init_force_spares_checkpoint "checkpoint" "$moe" init --config "$tmp/cfg.json" --out "$ck" --force

# 6. a config string holding \u0000 is refused, naming the key
printf '{"ffn": "moe", "router": "relu\\u0000x"}\n' >"$tmp/nul.json"
expect_error config_nul_string "'router'" "$moe" init --config "$tmp/nul.json" --out "$tmp/nulm"

# 7. a NUL byte in a token list is refused, quoted where it is
printf '1 2 3\0004 5\n' >"$tmp/nul.txt"
expect_error score_nul_byte "nul.txt: token 3: .*'3\\\\x004'" "$moe" score --model "$tmp/run" --tokens "$tmp/nul.txt"
printf '65 66 \000 67\n' >"$tmp/nul2.txt"
expect_error decode_nul_quoted "found '\\\\x00'" "$moe" tokenizer decode --tokenizer bytes --input "$tmp/nul2.txt"
expect_error decode_nul_inside "found '3\\\\x004'" "$moe" tokenizer decode --tokenizer bytes --input "$tmp/nul.txt"

# 4. every loader refuses non-finite weights (a valid CRC over a NaN), naming the tensor
poison() {  # poison DIR FILE TENSOR: a NaN in TENSOR, CHECKSUMS rewritten to match
  /usr/bin/python3 - "$@" <<'PY'
import os, sys, zlib; sys.path.insert(0, "tools"); import moe_files
d, f, name = sys.argv[1:]
st, meta = moe_files.read_safetensors(f"{d}/{f}")
st[name].reshape(-1)[1] = float("nan")
moe_files.write_safetensors(f"{d}/{f}", st, meta)
lines = []
for n in sorted(os.listdir(d)):
    if n != "CHECKSUMS":
        raw = open(f"{d}/{n}", "rb").read()
        lines.append(f"{zlib.crc32(raw):08x} {len(raw)} {n}\n")
open(f"{d}/CHECKSUMS", "w").write("".join(lines))
PY
}
cp -r "$tmp/run" "$tmp/nanrun"
nck=$(ls -d "$tmp"/nanrun/checkpoints/step-* | tail -1)
poison "$nck" model.safetensors model.norm.weight
expect_error nan_score "'model.norm.weight' holds a non-finite" "$moe" score --model "$tmp/nanrun" --tokens "$tmp/ids.txt"
expect_error nan_generate "'model.norm.weight' holds a non-finite" "$moe" generate --model "$tmp/nanrun" --prompt x --max-tokens 2
expect_error nan_eval "'model.norm.weight' holds a non-finite" "$moe" eval --model "$tmp/nanrun" --data "$tmp/data.tok" --json "$tmp/e.json"
expect_error nan_analyze "'model.norm.weight' holds a non-finite" "$moe" analyze --model "$tmp/nanrun" --data "$tmp/data.tok" --out "$tmp/a.json"
expect_error nan_train_model "'model.norm.weight' holds a non-finite" "$moe" train --model "$tmp/nanrun" --data "$tmp/data.tok" --out "$tmp/nan2"
expect_error nan_resume "'model.norm.weight' holds a non-finite" "$moe" train --resume "$tmp/nanrun" --data "$tmp/data.tok" --steps 5
cp -r "$tmp/run" "$tmp/nanopt"
poison "$(ls -d "$tmp"/nanopt/checkpoints/step-* | tail -1)" optimizer.safetensors exp_avg_sq.lm_head.weight
expect_error nan_optimizer "'exp_avg_sq.lm_head.weight' holds a non-finite" "$moe" train --resume "$tmp/nanopt" --data "$tmp/data.tok" --steps 5

# 5. a model that cannot fit is refused before it is allocated: 1.6e10
# parameters (64 GB each for weights, gradients and moments) under a 4 GB
# address-space cap, which an allocation would have hit first (AddressSanitizer
# cannot start under such a cap: there the estimate alone refuses it)
cap="ulimit -v 4000000;"
ldd "$moe" 2>/dev/null | grep -q libasan && cap=""
echo '{"vocab_size": 16000000, "hidden": 512, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "max_seq_len": 16, "seq_len": 16, "batch_size": 2}' >"$tmp/huge.json"
expect_error memory_before_allocation "GiB are available" bash -c "$cap exec '$moe' train --config '$tmp/huge.json' --data '$tmp/data.tok' --out '$tmp/huge'"
/usr/bin/python3 - "$tmp" <<'PY'
import json, os, sys, zlib
t = sys.argv[1]
os.makedirs(t + "/hugem")
cfg = json.load(open(t + "/huge.json"))
open(t + "/hugem/config.json", "w").write(json.dumps(cfg))
open(t + "/hugem/model.safetensors", "wb").write(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
lines = []
for n in sorted(os.listdir(t + "/hugem")):
    raw = open(f"{t}/hugem/{n}", "rb").read()
    lines.append(f"{zlib.crc32(raw):08x} {len(raw)} {n}\n")
open(t + "/hugem/CHECKSUMS", "w").write("".join(lines))
PY
expect_error memory_before_loading "GiB are available" bash -c "$cap exec '$moe' train --model '$tmp/hugem' --data '$tmp/data.tok' --out '$tmp/huge2'"

# 1. one writer per run folder: a second trainer on the same --out is refused
# (naming the folder and the holder's pid) while the first runs; the lock
# dies with its process
"$moe" train --config "$tmp/cfg.json" --data "$tmp/data.tok" --out "$tmp/busy" --steps 1000000 --checkpoint-every 5 2>/dev/null &
holder=$!
for _ in $(seq 300); do ls "$tmp"/busy/checkpoints/step-* >/dev/null 2>&1 && break; sleep 0.1; done
expect_error lock_refuses_second_trainer "$tmp/busy.*pid $holder" "$moe" train --config "$tmp/cfg.json" --data "$tmp/data.tok" --out "$tmp/busy"
expect_error lock_refuses_resume "$tmp/busy.*pid $holder" "$moe" train --resume "$tmp/busy" --data "$tmp/data.tok" --steps 100
kill -TERM $holder; wait $holder
if "$moe" train --resume "$tmp/busy" --data "$tmp/data.tok" --steps 3 >/dev/null 2>&1; then
  ok lock_released_by_exit; else bad lock_released_by_exit; fi
"$moe" train --resume "$tmp/busy" --data "$tmp/data.tok" --steps 1000000 2>/dev/null &
holder=$!
sleep 0.5; kill -KILL $holder; wait $holder 2>/dev/null
if "$moe" train --resume "$tmp/busy" --data "$tmp/data.tok" --steps 1 >/dev/null 2>&1; then ok lock_dies_with_process
else bad lock_dies_with_process; fi
# only whole checkpoints are visible: every step-N holds its CHECKSUMS and nothing temporary
if [ -z "$(find "$tmp/busy/checkpoints" -mindepth 1 -name '.tmp-*' -o -name '.old-*' -o -name '*.tmp.*')" ] \
   && [ "$(ls "$tmp"/busy/checkpoints/step-*/CHECKSUMS | wc -l)" -ge 1 ]; then
  ok checkpoints_whole; else bad checkpoints_whole; fi

# 10. --resume RUN/checkpoints/step-N: the newest goes on in RUN; an older one
# is refused with the commands that do what was meant
"$moe" train --config "$tmp/cfg.json" --data "$tmp/data.tok" --out "$tmp/r10" --checkpoint-every 2 --steps 4 --keep 3 2>/dev/null
if "$moe" train --resume "$tmp/r10/checkpoints/step-00000004/" --data "$tmp/data.tok" --steps 6 2>/dev/null \
   && [ -d "$tmp/r10/checkpoints/step-00000006" ] && [ ! -e "$tmp/r10/checkpoints/step-00000004/checkpoints" ] \
   && [ "$(wc -l <"$tmp/r10/metrics.jsonl")" -eq 6 ]; then ok resume_checkpoint_goes_on_in_its_run
else bad resume_checkpoint_goes_on_in_its_run; fi
expect_error resume_old_checkpoint_refused "--resume $tmp/r10," "$moe" train --resume "$tmp/r10/checkpoints/step-00000004" --data "$tmp/data.tok" --steps 8
if [ ! -e "$tmp/r10/checkpoints/step-00000004/checkpoints" ] && [ ! -e "$tmp/r10/checkpoints/step-00000004/metrics.jsonl" ]; then
  ok checkpoint_never_nests_a_run; else bad checkpoint_never_nests_a_run; fi
if "$moe" train --resume "$tmp/r10/checkpoints/step-00000004" --out "$tmp/r10b" --data "$tmp/data.tok" --steps 5 2>/dev/null \
   && [ -d "$tmp/r10b/checkpoints/step-00000005" ]; then ok resume_old_checkpoint_into_new_run
else bad resume_old_checkpoint_into_new_run; fi

# 8. a model without its tokenizer does not generate with bytes unless its
# vocabulary is the bytes'; prepare records the tokenizer in the token file
# and train carries it into the checkpoints; without one, train warns
sed 's/"vocab_size": 40/"vocab_size": 300/' "$tmp/cfg.json" >"$tmp/v300.json"
"$moe" init --config "$tmp/v300.json" --out "$tmp/v300" >/dev/null
expect_error generate_needs_tokenizer "no tokenizer.*vocab_size is 300.*--tokenizer" "$moe" generate --model "$tmp/v300" --prompt hi --max-tokens 3
if "$moe" generate --model "$tmp/v300" --prompt hi --max-tokens 3 --tokenizer bytes --temperature 0 >/dev/null 2>&1; then
  ok generate_bytes_when_asked; else bad generate_bytes_when_asked; fi
for i in $(seq 40); do echo "{\"text\": \"the cat sat on the mat number $i and the dog ran\", \"domain\": \"d$((i % 2))\"}"; done >"$tmp/text.jsonl"
"$moe" tokenizer train --input "$tmp/text.jsonl" --vocab 300 --out "$tmp/t300.tokenizer" >/dev/null 2>&1
"$moe" prepare --input "$tmp/text.jsonl" --tokenizer "$tmp/t300.tokenizer" --out "$tmp/t300.tok" >/dev/null 2>&1
"$moe" train --config "$tmp/v300.json" --data "$tmp/t300.tok" --out "$tmp/r300" --steps 2 2>"$tmp/err"
ck300=$(ls -d "$tmp"/r300/checkpoints/step-* | tail -1)
if cmp -s "$ck300/tokenizer" "$tmp/t300.tokenizer" && ! grep -q warning "$tmp/err" \
   && "$moe" generate --model "$tmp/r300" --prompt "the cat" --max-tokens 3 >/dev/null 2>&1; then
  ok train_carries_token_file_tokenizer; else bad "train_carries_token_file_tokenizer: $(cat "$tmp/err" | tail -2)"; fi
"$moe" train --config "$tmp/v300.json" --data "$tmp/data.tok" --out "$tmp/r300b" --steps 1 2>"$tmp/err"
if [ $? -eq 0 ] && grep -q "warning: .*no tokenizer" "$tmp/err"; then ok train_warns_without_tokenizer
else bad "train_warns_without_tokenizer: $(tail -2 "$tmp/err")"; fi
if /usr/bin/python3 - "$tmp" <<'PY'
import sys; sys.path.insert(0, "tools"); import moe_files
t = moe_files.read_tokens(sys.argv[1] + "/t300.tok")
assert t["tokenizer"] == open(sys.argv[1] + "/t300.tokenizer", "rb").read(), "tokenizer not recorded"
assert moe_files.read_tokens(sys.argv[1] + "/data.tok")["tokenizer"] is None
PY
then ok token_file_records_tokenizer; else bad token_file_records_tokenizer; fi

# 9. eval --max-tokens and analyze read across the whole file, each domain
# its share, deterministically, and say what they read
/usr/bin/python3 - "$tmp" <<'PY'
import sys; sys.path.insert(0, "tools"); import moe_files
# 3000 tokens sorted by domain: 1000 of "a" (ids 1..19), then 2000 of "b" (ids 20..39)
ids = [1 + i % 19 for i in range(1000)] + [20 + i % 20 for i in range(2000)]
starts = list(range(0, 3000, 100))
moe_files.write_tokens(sys.argv[1] + "/sorted.tok", ids, 40, starts, [0 if s < 1000 else 1 for s in starts], ["a", "b"])
PY
sed 's/"steps": 3/"steps": 3, "ffn": "moe", "n_experts": 4, "top_k": 1/' "$tmp/cfg.json" >"$tmp/moe.json"
"$moe" init --config "$tmp/moe.json" --out "$tmp/moem" >/dev/null
"$moe" eval --model "$tmp/moem" --data "$tmp/sorted.tok" --max-tokens 300 --json "$tmp/e1.json" >/dev/null 2>&1
"$moe" eval --model "$tmp/moem" --data "$tmp/sorted.tok" --max-tokens 300 --json "$tmp/e2.json" >/dev/null 2>&1
"$moe" analyze --model "$tmp/moem" --data "$tmp/sorted.tok" --max-tokens 300 --out "$tmp/a1.json" >/dev/null 2>&1
if /usr/bin/python3 - "$tmp" <<'PY'
import json, sys
t = sys.argv[1]
e = json.load(open(t + "/e1.json"))["data"][0]
dom = {d["name"]: d["tokens"] for d in e["domains"]}
assert dom["a"] > 0 and dom["b"] > 0, dom
assert abs(dom["b"] / (dom["a"] + dom["b"]) - 2 / 3) < 0.15, dom   # each domain its share
assert e["read"]["tokens"] <= 300 and e["read"]["of"] == 3000 and "stratified" in e["read"]["sampling"], e["read"]
assert open(t + "/e1.json").read() == open(t + "/e2.json").read(), "not deterministic"
a = json.load(open(t + "/a1.json"))
dom = {d["name"]: d["tokens"] for d in a["domains"]}
assert dom["a"] > 0 and dom["b"] > 0, dom
assert a["read"]["tokens"] <= 300 and a["read"]["of"] == 3000 and "stratified" in a["read"]["sampling"], a["read"]
PY
then ok max_tokens_sample_every_domain; else bad max_tokens_sample_every_domain; fi
"$moe" eval --model "$tmp/moem" --data "$tmp/sorted.tok" --json "$tmp/e3.json" >"$tmp/out" 2>&1
if /usr/bin/python3 -c '
import json, sys; e = json.load(open(sys.argv[1]))["data"][0]
assert e["read"]["tokens"] == 3000 and e["read"]["sampling"] == "all", e["read"]' "$tmp/e3.json" \
   && grep -q "3000 of 3000 tokens" "$tmp/out"; then ok eval_says_it_read_all; else bad eval_says_it_read_all; fi

# frictions: a full disk before the first checkpoint does not claim earlier
# ones; the console shows what routing does (ReMoE: sparsity and lambda;
# TopK: the auxiliary loss) and the calibration loss when a probe runs
( trap '' XFSZ; ulimit -f 24; exec "$moe" train --config "$tmp/cfg.json" --data "$tmp/data.tok" --out "$tmp/full" ) >/dev/null 2>"$tmp/err"
if [ $? -ne 0 ] && grep -q "no earlier checkpoint" "$tmp/err" && ! grep -q "earlier ones are intact" "$tmp/err"; then
  ok disk_full_first_checkpoint_says_nothing_saved; else bad "disk_full_first_checkpoint_says_nothing_saved: $(tail -1 "$tmp/err")"; fi
sed 's/"steps": 3/"steps": 3, "ffn": "moe", "router": "relu", "n_experts": 4, "top_k": 1/' "$tmp/cfg.json" >"$tmp/relu.json"
"$moe" train --config "$tmp/relu.json" --data "$tmp/data.tok" --out "$tmp/crelu" --analysis-every 2 --analysis-tokens 32 2>"$tmp/err"
if grep -q "step 3/3 .*sparsity [0-9.]*  λ [0-9.e+-]* .*calib [0-9.]" "$tmp/err"; then ok console_shows_remoe_and_calibration
else bad "console_shows_remoe_and_calibration: $(grep step "$tmp/err" | tail -1)"; fi
"$moe" train --config "$tmp/moe.json" --data "$tmp/data.tok" --out "$tmp/ctopk" 2>"$tmp/err"
if grep -q "step 3/3 .*aux [0-9.]" "$tmp/err" && ! grep -q calib "$tmp/err"; then ok console_shows_topk_aux
else bad "console_shows_topk_aux: $(grep step "$tmp/err" | tail -1)"; fi

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
