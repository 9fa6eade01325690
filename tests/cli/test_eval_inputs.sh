#!/usr/bin/env bash
# test_eval_inputs.sh — what eval and analyze do with their inputs and
# earlier results (issue 26): a token file prepared with another tokenizer
# than the model's is named in a warning (silent for the model's own), and
# each eval merges its results into RUN/eval.json by data file and task
# instead of replacing the earlier ones (of the same checkpoint), which the
# report then shows; an output that cannot be written is refused before the
# computation; a byte-order mark and blank lines in JSONL inputs are read;
# prepare refuses a token file, a binary, and JSON lines named .json.
set -u
build=${1:-build}
moe="$build/moe"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0
. "$(dirname "$0")/lib.sh"
py() { /usr/bin/python3 - "$@"; }

py "$tmp" <<'PY'
import json, random, sys
r = random.Random(1)
words = "the cat sat on a mat and the cat ate a rat while a dog ran".split()
with open(f"{sys.argv[1]}/text.jsonl", "w") as f:
    for i in range(60):
        f.write(json.dumps({"text": " ".join(r.choice(words) for _ in range(40))}) + "\n")
with open(f"{sys.argv[1]}/task.jsonl", "w") as f:
    for i in range(4):
        f.write(json.dumps({"id": str(i), "context": "the cat sat on a", "choices": [" mat", " dog"], "gold": 0}) + "\n")
PY
"$moe" tokenizer train --input "$tmp/text.jsonl" --vocab 300 --out "$tmp/tok" >/dev/null 2>&1 || bad "setup: tokenizer"
"$moe" prepare --input "$tmp/text.jsonl" --tokenizer "$tmp/tok" --out "$tmp/valid.tok" >/dev/null 2>&1 || bad "setup: prepare"
"$moe" prepare --input "$tmp/text.jsonl" --tokenizer bytes --out "$tmp/bytes.tok" >/dev/null 2>&1 || bad "setup: prepare bytes"
cat >"$tmp/cfg.json" <<'JSON'
{"vocab_size": 300, "hidden": 16, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "max_seq_len": 16,
 "ffn": "moe", "router": "relu", "n_experts": 4, "top_k": 1, "seq_len": 16, "batch_size": 2, "steps": 4}
JSON
"$moe" train --config "$tmp/cfg.json" --data "$tmp/valid.tok" --out "$tmp/run" >/dev/null 2>&1 || bad "setup: train"

# 6. another tokenizer's token file: one warning naming it; the model's own: none
"$moe" eval --model "$tmp/run" --data "$tmp/bytes.tok" --json "$tmp/x.json" >/dev/null 2>"$tmp/err" || bad "eval bytes.tok"
check eval_warns_other_tokenizer grep -q "warning: $tmp/bytes.tok was prepared with another tokenizer than the model's" "$tmp/err"
"$moe" analyze --model "$tmp/run" --data "$tmp/bytes.tok" --out "$tmp/a.json" >/dev/null 2>"$tmp/err" || bad "analyze bytes.tok"
check analyze_warns_other_tokenizer grep -q "warning: $tmp/bytes.tok was prepared with another tokenizer" "$tmp/err"
"$moe" eval --model "$tmp/run" --data "$tmp/valid.tok" --json "$tmp/x.json" >/dev/null 2>"$tmp/err" || bad "eval valid.tok"
check eval_own_tokenizer_silent bash -c "! grep -q 'another tokenizer' '$tmp/err'"
"$moe" analyze --model "$tmp/run" --data "$tmp/valid.tok" --out "$tmp/a.json" >/dev/null 2>"$tmp/err" || bad "analyze valid.tok"
check analyze_own_tokenizer_silent bash -c "! grep -q 'another tokenizer' '$tmp/err'"

# 7. perplexity, then a task, then the perplexity again: RUN/eval.json keeps both
names() { py "$tmp/run/eval.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(" ".join(sorted(x["name"] for x in d["data"])), "|", " ".join(sorted(x["name"] for x in d["tasks"])))
PY
}
"$moe" eval --model "$tmp/run" --data "$tmp/valid.tok" >/dev/null 2>&1 || bad "eval --data"
ppl=$(py "$tmp/run/eval.json" <<'PY'
import json, sys; print(json.load(open(sys.argv[1]))["data"][0]["ppl"])
PY
)
"$moe" eval --model "$tmp/run" --task "$tmp/task.jsonl" >/dev/null 2>&1 || bad "eval --task"
check eval_merges_task_with_data test "$(names)" = "valid | task"
"$moe" eval --model "$tmp/run" --data "$tmp/valid.tok" --data "$tmp/bytes.tok" >/dev/null 2>&1 || bad "eval --data twice"
check eval_replaces_same_name_keeps_task test "$(names)" = "bytes valid | task"
check eval_kept_ppl_unchanged py "$tmp/run/eval.json" "$ppl" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert [x["ppl"] for x in d["data"] if x["name"] == "valid"] == [float(sys.argv[2])]
PY
"$moe" report "$tmp/run" --out "$tmp/report.html" >/dev/null 2>&1 || bad "report"
check report_shows_task_and_ppl py "$tmp/report.html" "$ppl" <<'PY'
import sys
h = open(sys.argv[1]).read()
assert "task" in h and "valid" in h, "names"
assert ("%.2f" % float(sys.argv[2])) in h, "perplexity"
PY
# a later checkpoint: the earlier results are of another one, so they go
"$moe" train --resume "$tmp/run" --steps 6 >/dev/null 2>&1 || bad "resume"
"$moe" eval --model "$tmp/run" --task "$tmp/task.jsonl" >/dev/null 2>"$tmp/err" || bad "eval after resume"
check eval_drops_other_checkpoint test "$(names)" = " | task"
check eval_says_replaced grep -q "are of another checkpoint.*replaced, not merged" "$tmp/err"

# a dense run: the report does not call it "dense / topk, experts 8, 1", and
# --robustness does not blame a router it has not got
sed 's/"ffn": "moe", "router": "relu", "n_experts": 4, "top_k": 1, //' "$tmp/cfg.json" >"$tmp/dense.json"
"$moe" train --config "$tmp/dense.json" --data "$tmp/valid.tok" --out "$tmp/dense" >/dev/null 2>&1 || bad "setup: train dense"
"$moe" eval --model "$tmp/dense" --data "$tmp/valid.tok" --robustness >"$tmp/out" 2>/dev/null || bad "eval dense"
check robustness_dense_no_router_blamed bash -c "grep -q 'the model is dense, it has no experts' '$tmp/out' && ! grep -q 'router does not implement' '$tmp/out'"
"$moe" report "$tmp/dense" --out "$tmp/dense.html" >/dev/null 2>&1 || bad "report dense"
check report_dense_label bash -c "grep -q '<td>dense</td><td>—</td>' '$tmp/dense.html' && ! grep -q 'dense / ' '$tmp/dense.html'"

# a UTF-8 byte-order mark and lines of only spaces are read as nothing, in
# prepare's JSONL and in a task file (they were refused)
printf '\xef\xbb\xbf{"text": "the cat sat"}\n  \t \n{"text": "on a mat"}\n' >"$tmp/bom.jsonl"
check prepare_bom_and_blank_line bash -c "'$moe' prepare --input '$tmp/bom.jsonl' --out '$tmp/bom.tok' 2>&1 | grep -q '2 docs'"
printf '\xef\xbb\xbf{"id": "0", "context": "the cat sat on a", "choices": [" mat", " dog"], "gold": 0}\n \n' >"$tmp/bomtask.jsonl"
check task_bom_and_blank_line bash -c "'$moe' eval --model '$tmp/run' --task '$tmp/bomtask.jsonl' --json '$tmp/t.json' >/dev/null 2>&1"

# prepare reads text: a folder holding an earlier token file, a binary, or
# JSON lines named .json is refused with one line naming the file
mkdir -p "$tmp/in" && echo "some text" >"$tmp/in/a.txt"
cp "$tmp/valid.tok" "$tmp/in/old.tok"
expect_error prepare_refuses_token_file "in/old.tok is a moe token file" "$moe" prepare --input "$tmp/in" --out "$tmp/o.tok"
rm "$tmp/in/old.tok"; cp "$moe" "$tmp/in/prog"
expect_error prepare_refuses_binary "in/prog is not a text file (a NUL byte" "$moe" prepare --input "$tmp/in" --out "$tmp/o.tok"
rm "$tmp/in/prog"; printf '{"text": "a"}\n{"text": "b"}\n' >"$tmp/in/lines.json"
expect_error prepare_refuses_jsonl_named_json "in/lines.json holds JSON lines.*rename it to .jsonl" "$moe" prepare --input "$tmp/in" --out "$tmp/o.tok"
rm "$tmp/in/lines.json"; echo '{"a": 1}' >"$tmp/in/one.json"
check prepare_reads_text_and_json bash -c "'$moe' prepare --input '$tmp/in' --out '$tmp/o.tok' 2>&1 | grep -q '2 docs'"

# the tokenizer.json that moe exports is read back by the tokenizer commands
"$moe" export --format hf --out "$tmp/runhf" "$tmp/dense" >/dev/null 2>&1 || bad "setup: export hf"
echo "the cat sat on a mat" >"$tmp/line.txt"
check tokenizer_json_encodes_as_moe bash -c "[ \"\$('$moe' tokenizer encode --tokenizer '$tmp/runhf/tokenizer.json' --input '$tmp/line.txt')\" = \"\$('$moe' tokenizer encode --tokenizer '$tmp/tok' --input '$tmp/line.txt')\" ]"
check tokenizer_json_info bash -c "'$moe' tokenizer info --tokenizer '$tmp/runhf/tokenizer.json' | grep -q 'kind bpe'"

# an output that cannot be written is refused before the computation, in one
# line (it used to compute, then fail): a folder that is not one, and, when
# not root, a read-only run
expect_error eval_unwritable_first "cannot write /dev/null/e.json (/dev/null is not writable, checked before" \
  "$moe" eval --model "$tmp/run" --data "$tmp/valid.tok" --json /dev/null/e.json
expect_error analyze_unwritable_first "cannot write /dev/null/a.json.*--out - for stdout" \
  "$moe" analyze --model "$tmp/run" --data "$tmp/valid.tok" --out /dev/null/a.json
if [ "$(id -u)" -ne 0 ]; then
  chmod a-w "$tmp/run"
  expect_error eval_read_only_run "cannot write $tmp/run/eval.json.*--json FILE" "$moe" eval --model "$tmp/run" --data "$tmp/valid.tok"
  chmod u+w "$tmp/run"
fi

echo "# $pass passed, $fail failed"
[ $fail -eq 0 ]
