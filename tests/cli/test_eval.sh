#!/usr/bin/env bash
# test_eval.sh — `moe eval`, `moe analyze`, `moe report` and the training-time
# probe on tiny models: the files they write and their keys, the terminal
# table, resume of calibration.jsonl, and bad input refused with one clear line.
set -u
build=${1:-build}
moe="$build/moe"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0
. "$(dirname "$0")/lib.sh"
py() { /usr/bin/python3 - "$@"; }

for c in eval analyze report; do
  check "help_$c" bash -c "'$moe' $c --help | grep -q usage"
done

# two domains of text, bytes tokenizer
py "$tmp" <<'PY'
import json, random, sys
r = random.Random(1)
words = {"cats": "the cat sat on a mat and the cat ate a rat".split(),
         "code": "int main ( void ) { return x + y ; } if for while".split()}
for split, n in (("train", 40), ("valid", 12)):
    with open(f"{sys.argv[1]}/{split}.jsonl", "w") as f:
        for i in range(n):
            d = "cats" if i % 2 else "code"
            f.write(json.dumps({"text": " ".join(r.choice(words[d]) for _ in range(40)), "domain": d}) + "\n")
with open(f"{sys.argv[1]}/task.jsonl", "w") as f:
    for i in range(6):
        f.write(json.dumps({"id": str(i), "context": "the cat sat on a", "choices": [" mat", " while", " {"], "gold": 0}) + "\n")
PY
for s in train valid; do "$moe" prepare --input "$tmp/$s.jsonl" --tokenizer bytes --out "$tmp/$s.tok" >/dev/null || bad "prepare $s"; done
for r in relu topk; do
  cat >"$tmp/$r.json" <<JSON
{"vocab_size": 257, "hidden": 16, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "max_seq_len": 32,
 "ffn": "moe", "router": "$r", "n_experts": 4, "top_k": 1,
 "steps": 16, "batch_size": 4, "seq_len": 32, "lr": 3e-3, "warmup": 2, "checkpoint_every": 8, "keep_checkpoints": 4}
JSON
done

# training with the probe
check train_with_probe "$moe" train --config "$tmp/relu.json" --data "$tmp/train.tok" --out "$tmp/relu" \
  --tokenizer bytes --analysis-every 4 --analysis-data "$tmp/valid.tok" --analysis-tokens 96 2>/dev/null
check calibration_lines py "$tmp/relu/calibration.jsonl" <<'PY'
import json, sys
L = [json.loads(l) for l in open(sys.argv[1])]
assert [x["step"] for x in L] == [0, 4, 8, 12, 16], [x["step"] for x in L]
assert L[0]["flip_rate"] is None and all(0 <= x["flip_rate"] <= 1 for x in L[1:])
assert all(abs(x["flip_count"] - 4 * x["flip_rate"]) < 1e-12 for x in L[1:])
assert all(x["tokens"] == 96 and len(x["layers"]) == 2 and 0 <= x["sparsity"] <= 1 for x in L)
PY
check train_topk_without_probe "$moe" train --config "$tmp/topk.json" --data "$tmp/train.tok" --out "$tmp/topk" --tokenizer bytes 2>/dev/null
check no_probe_no_file test ! -e "$tmp/topk/calibration.jsonl"
# resume from step 8: lines after 8 are rewritten, none doubled
rm -rf "$tmp/relu/checkpoints/step-00000016"
cp "$tmp/relu/calibration.jsonl" "$tmp/calib_before.jsonl"
check resume_with_probe "$moe" train --resume "$tmp/relu" --data "$tmp/train.tok" --analysis-every 4 \
  --analysis-data "$tmp/valid.tok" --analysis-tokens 96 2>/dev/null
check resume_same_calibration py "$tmp/calib_before.jsonl" "$tmp/relu/calibration.jsonl" <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert [x["step"] for x in b] == [0, 4, 8, 12, 16]
for x, y in zip(a, b):   # exact resume: the same numbers, flip rate included
    assert x == y, (x, y)
PY

# eval: table and JSON
check eval_runs bash -c "'$moe' eval --model '$tmp/relu' --data '$tmp/valid.tok' --task '$tmp/task.jsonl' --robustness >'$tmp/eval.out' 2>/dev/null"
check eval_table grep -q "cats" "$tmp/eval.out"
check eval_json py "$tmp/relu/eval.json" <<'PY'
import json, math, sys
d = json.load(open(sys.argv[1]))
assert d["format"] == "moe-eval" and d["router"] == "relu"
v = d["data"][0]
assert v["name"] == "valid" and sorted(x["name"] for x in v["domains"]) == ["cats", "code"]
assert sum(x["tokens"] for x in v["domains"]) == v["tokens"]
nll = sum(x["loss"] * x["tokens"] for x in v["domains"]) / v["tokens"]
assert abs(nll - v["loss"]) < 1e-9 and abs(math.exp(v["loss"]) - v["ppl"]) < 1e-6 * v["ppl"]
assert "robustness" in v and v["robustness"]["tokens"] == v["tokens"]
t = d["tasks"][0]
assert t["name"] == "task" and t["items"] == 6 and 0 <= t["acc"] <= 1 and 0 <= t["acc_norm"] <= 1
PY
check eval_json_flag bash -c "'$moe' eval --model '$tmp/topk' --data '$tmp/valid.tok' --json '$tmp/e.json' --max-tokens 200 >/dev/null 2>&1 && test -s '$tmp/e.json' && test ! -e '$tmp/topk/eval.json'"
check eval_topk_run bash -c "'$moe' eval --model '$tmp/topk' --data '$tmp/valid.tok' --task '$tmp/task.jsonl' --limit 3 >/dev/null 2>&1 && test -s '$tmp/topk/eval.json'"

# analyze
check analyze_runs bash -c "'$moe' analyze --model '$tmp/relu' --data '$tmp/valid.tok' --min-count 2 >'$tmp/an.out' 2>/dev/null"
check analyze_json py "$tmp/relu/analysis.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["format"] == "moe-analysis" and len(d["sites"]) == 2 and [x["name"] for x in d["domains"]] == ["code", "cats"]
for s in d["sites"]:
    assert len(s["routed_ratio"]) == 4 and len(s["routed_ratio_by_domain"]) == 2 and len(s["top_tokens"]) == 4
    assert abs(1 - s["sparsity"] - sum(s["routed_ratio"]) / 4) < 1e-9
    for toks in s["top_tokens"]:
        assert all(t["count"] >= 2 and 0 < t["prob"] <= 1 for t in toks)
        assert [t["prob"] for t in toks] == sorted((t["prob"] for t in toks), reverse=True)
assert sum(b["occurrences"] for b in d["frequency_buckets"]) == d["tokens"]
PY
check analyze_topk bash -c "'$moe' analyze --model '$tmp/topk' --data '$tmp/valid.tok' >/dev/null 2>&1"

# report
check report_writes bash -c "'$moe' report '$tmp/relu' '$tmp/topk' --out '$tmp/r.html' >/dev/null"
check report_self_contained py "$tmp/r.html" <<'PY'
import re, sys
h = open(sys.argv[1]).read()
assert h.startswith("<!DOCTYPE html>") and h.rstrip().endswith("</html>")
assert "<script" not in h and not re.search(r'(src|href)\s*=\s*"(https?:)?//', h), "external references"
charts = h.count('<figure class="chart"')
assert charts >= 15, charts
assert h.count("<svg") == charts and "stage" in h and "cloze" not in h
assert "relu" in h and "topk" in h and "acc_norm" in h
assert "tokens read" in h and "analysis tokens" in h, "the report says what eval and analyze read"
PY
check report_default_out bash -c "'$moe' report '$tmp/topk' >/dev/null && test -s '$tmp/topk/report.html'"
# ReMoE with a lambda per layer: the report draws one per layer; eval reads
# the lambdas back from router_state.safetensors with the weights
sed 's/"router": "relu",/"router": "relu", "relu_lambda_per_layer": true,/' "$tmp/relu.json" >"$tmp/relu_pl.json"
check train_relu_per_layer bash -c "'$moe' train --config '$tmp/relu_pl.json' --data '$tmp/train.tok' --out '$tmp/relu_pl' >/dev/null 2>&1 && test -s '$tmp/relu_pl/checkpoints/step-00000016/router_state.safetensors'"
check eval_relu_per_layer bash -c "'$moe' eval --model '$tmp/relu_pl' --data '$tmp/valid.tok' >/dev/null 2>&1"
check report_lambda_per_layer bash -c "'$moe' report '$tmp/relu_pl' --out '$tmp/rpl.html' >/dev/null && grep -q 'λ of layer 0' '$tmp/rpl.html' && grep -q 'λ of layer 1' '$tmp/rpl.html'"

# bad input
printf '{"context": "a", "choices": [" b", " c"], "gold": 0}\n{"context": "a", "choices": [" b"], "gold": 0}\n' >"$tmp/bad.jsonl"
expect_error task_bad_line "bad.jsonl:2: expected \"choices\"" "$moe" eval --model "$tmp/relu" --task "$tmp/bad.jsonl"
printf '{"context": "a", "choices": [" b", " c"], "gold": 0}\n{oops}\n' >"$tmp/bad.jsonl"
expect_error task_not_json "bad.jsonl:2:2:" "$moe" eval --model "$tmp/relu" --task "$tmp/bad.jsonl"
expect_error task_unknown_name "task 'nosuchtask': no nosuchtask.jsonl" "$moe" eval --model "$tmp/relu" --task nosuchtask
expect_error eval_needs_input "at least one --data or --task" "$moe" eval --model "$tmp/relu"
expect_error eval_missing_data "nope.tok" "$moe" eval --model "$tmp/relu" --data "$tmp/nope.tok"
expect_error eval_missing_model "not a model directory" "$moe" eval --model "$tmp/nope" --data "$tmp/valid.tok"
expect_error analyze_needs_data "--data FILE are required" "$moe" analyze --model "$tmp/relu"
expect_error report_not_a_run "no metrics.jsonl" "$moe" report "$tmp"
expect_error train_bad_analysis_every "--analysis-every" "$moe" train --config "$tmp/relu.json" --data "$tmp/train.tok" --out "$tmp/x" --analysis-every -1
mkdir -p "$tmp/notok" && cp "$tmp/relu/checkpoints/step-00000016/"{config.json,model.safetensors} "$tmp/notok/" 2>/dev/null
[ -f "$tmp/relu/checkpoints/step-00000016/checksums" ] && rm -f "$tmp/notok/"* && cp "$tmp/relu/checkpoints/step-00000016/"* "$tmp/notok/" && rm -f "$tmp/notok/tokenizer"
expect_error task_needs_tokenizer "no tokenizer file" "$moe" eval --model "$tmp/notok" --task "$tmp/task.jsonl"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
