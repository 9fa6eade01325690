#!/usr/bin/env bash
# test_outputs.sh — a user's files are never replaced by a command that did
# not say it would (issue 26): an output path that is a symlink keeps being
# one and its target gets the content; a device stays a device; "-" means
# stdout; import and export never write over a model, a checkpoint or a run.
set -u
build=${1:-build}
moe="$(cd "$(dirname "$build/moe")" && pwd)/moe"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0
. "$(dirname "$0")/lib.sh"

cat >"$tmp/cfg.json" <<'JSON'
{"vocab_size": 257, "hidden": 16, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1,
 "ffn": "moe", "router": "topk", "n_experts": 4, "top_k": 1,
 "max_seq_len": 16, "seq_len": 16, "batch_size": 2, "steps": 3}
JSON
/usr/bin/python3 - "$tmp" <<'PY'
import sys; sys.path.insert(0, "tools")
import moe_files
moe_files.write_tokens(sys.argv[1] + "/data.tok", [i * 7 % 257 for i in range(500)], 257)
PY
"$moe" train --config "$tmp/cfg.json" --data "$tmp/data.tok" --out "$tmp/run" >/dev/null 2>&1 || bad "setup: train"

# 1. a symlinked output: the link stays, its target gets the content
echo old >"$tmp/target.json"
ln -s target.json "$tmp/link.json"
"$moe" eval --model "$tmp/run" --data "$tmp/data.tok" --json "$tmp/link.json" >/dev/null 2>&1 || bad "eval --json link"
check symlink_json_stays_link test -L "$tmp/link.json"
check symlink_json_target_written grep -q '"moe-eval"' "$tmp/target.json"
echo old >"$tmp/target.gguf"
ln -s "$tmp/target.gguf" "$tmp/link.gguf"
"$moe" export --format gguf --tokenizer bytes --out "$tmp/link.gguf" "$tmp/run" >/dev/null 2>&1 || bad "export --out link"
check symlink_gguf_stays_link test -L "$tmp/link.gguf"
check symlink_gguf_target_written bash -c "head -c 4 '$tmp/target.gguf' | grep -q GGUF"

# 1. a device stays a device (a copy of /dev/null; as root, --out /dev/null
# itself used to be replaced by a regular file)
if mknod "$tmp/null" c 1 3 2>/dev/null; then
  "$moe" export --format gguf --tokenizer bytes --out "$tmp/null" "$tmp/run" >/dev/null 2>&1 || bad "export --out device"
  "$moe" eval --model "$tmp/run" --data "$tmp/data.tok" --json "$tmp/null" >/dev/null 2>&1 || bad "eval --json device"
  check device_stays_device test -c "$tmp/null"
fi
mkfifo "$tmp/fifo"
cat "$tmp/fifo" >"$tmp/fifo.out" &
reader=$!
"$moe" analyze --model "$tmp/run" --data "$tmp/data.tok" --out "$tmp/fifo" >/dev/null 2>&1 || bad "analyze --out fifo"
[ -p "$tmp/fifo" ] || kill $reader 2>/dev/null   # nobody will write to the pipe
wait $reader
check fifo_stays_fifo test -p "$tmp/fifo"
check fifo_reader_got_analysis grep -q '"moe-analysis"' "$tmp/fifo.out"

# 1. "-" is stdout: the JSON alone there (the table goes to stderr), no file "-"
(cd "$tmp" && "$moe" eval --model run --data data.tok --json - >stdout.json 2>stderr.txt) || bad "eval --json -"
check json_dash_is_stdout /usr/bin/python3 -c "import json,sys; assert json.load(open(sys.argv[1]))['format'] == 'moe-eval'" "$tmp/stdout.json"
check json_dash_no_file test ! -e "$tmp/-"
check json_dash_table_on_stderr grep -q "loss" "$tmp/stderr.txt"
(cd "$tmp" && "$moe" analyze --model run --data data.tok --out - >analysis.json 2>/dev/null) || bad "analyze --out -"
check analyze_dash_is_stdout /usr/bin/python3 -c "import json,sys; assert json.load(open(sys.argv[1]))['format'] == 'moe-analysis'" "$tmp/analysis.json"
check analyze_dash_no_file test ! -e "$tmp/-"
(cd "$tmp" && "$moe" export --format gguf --tokenizer bytes --out - run >stdout.gguf 2>/dev/null) || bad "export --out -"
"$moe" export --format gguf --tokenizer bytes --out "$tmp/file.gguf" "$tmp/run" >/dev/null 2>&1 || bad "export --out file"
check export_dash_is_the_file_alone cmp -s "$tmp/stdout.gguf" "$tmp/file.gguf"
(cd "$tmp" && "$moe" report run --out - >stdout.html 2>/dev/null) || bad "report --out -"
check report_dash_is_the_page_alone bash -c "head -c 15 '$tmp/stdout.html' | grep -qi '<!doctype html' && ! grep -q 'moe report: wrote' '$tmp/stdout.html'"

# 2. import and export to a directory never write over a checkpoint or a run,
# and over a model only with --force (as init: one mechanism)
"$moe" export --format gguf --tokenizer bytes --out "$tmp/m.gguf" "$tmp/run" >/dev/null 2>&1 || bad "setup: export"
ck=$(ls -d "$tmp"/run/checkpoints/step-* | tail -1)
sums() { cat "$ck/CHECKSUMS" "$tmp/run/metrics.jsonl"; ls "$tmp/run"; }
before=$(sums)
expect_error import_refuses_checkpoint "$ck is a training checkpoint; import never" "$moe" import --out "$ck" "$tmp/m.gguf"
expect_error import_force_spares_checkpoint "training checkpoint" "$moe" import --force --out "$ck" "$tmp/m.gguf"
expect_error import_refuses_run "$tmp/run holds a training run" "$moe" import --out "$tmp/run" "$tmp/m.gguf"
expect_error export_hf_refuses_run "$tmp/run holds a training run; export never" "$moe" export --format hf --tokenizer bytes --out "$tmp/run" "$tmp/run"
expect_error export_hf_refuses_checkpoint "training checkpoint" "$moe" export --format hf --tokenizer bytes --out "$ck" "$tmp/run"
check import_export_left_run_alone test "$(sums)" = "$before"
check run_still_resumes bash -c "'$moe' train --resume '$tmp/run' --steps 4 >/dev/null 2>&1"
"$moe" import --out "$tmp/imp" "$tmp/m.gguf" >/dev/null 2>&1 || bad "setup: import"
expect_error import_refuses_model "$tmp/imp already holds a model.*--force" "$moe" import --out "$tmp/imp" "$tmp/m.gguf"
check import_force_overwrites_model bash -c "'$moe' import --force --out '$tmp/imp' '$tmp/m.gguf' >/dev/null 2>&1"
"$moe" export --format hf --tokenizer bytes --out "$tmp/hf" "$tmp/run" >/dev/null 2>&1 || bad "setup: export hf"
expect_error export_hf_refuses_model "$tmp/hf already holds a model.*--force" "$moe" export --format hf --tokenizer bytes --out "$tmp/hf" "$tmp/run"
check export_hf_force_overwrites bash -c "'$moe' export --format hf --force --tokenizer bytes --out '$tmp/hf' '$tmp/run' >/dev/null 2>&1"
expect_error export_hf_refuses_init_model "$tmp/imp already holds a model" "$moe" export --format hf --tokenizer bytes --out "$tmp/imp" "$tmp/run"

# another program's model given as --model: named, with moe import
expect_error model_gguf_says_import "$tmp/m.gguf is a GGUF file, not a moe model: bring it in with moe import --out DIR" \
  "$moe" eval --model "$tmp/m.gguf" --data "$tmp/data.tok"
expect_error model_hf_says_import "$tmp/hf is a transformers directory, not a moe model: bring it in with moe import" \
  "$moe" train --model "$tmp/hf" --data "$tmp/data.tok" --out "$tmp/fromhf"

# train --out into a model directory (init, import) names --model, not --resume
expect_error train_out_model_names_model "$tmp/imp holds a model, not a training run: train from it with --model $tmp/imp" \
  "$moe" train --config "$tmp/cfg.json" --data "$tmp/data.tok" --out "$tmp/imp"

echo "# $pass passed, $fail failed"
[ $fail -eq 0 ]
