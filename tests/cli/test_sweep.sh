#!/usr/bin/env bash
# test_sweep.sh — `moe sweep` on a tiny grid (2 configs x 2 seeds, a few
# hundred steps of a 16-wide model): an uninterrupted sweep, and the same grid
# stopped by SIGTERM in the middle of a run and started again, which must skip
# the finished runs, resume the interrupted one from its checkpoint and end
# with the same numbers (training resumes exactly); the summary's means,
# standard deviations and paired differences recomputed from the runs'
# eval.json, and summary.md's cells equal to summary.json's; one progress
# line per run with an ETA; a grid changed under finished runs refused;
# bad grids refused with one line; two sweeps share a grid through per-run
# locks.
set -u
build=${1:-build}
moe="$(cd "$(dirname "$build")" && pwd)/$(basename "$build")/moe"
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0
. "$(dirname "$0")/lib.sh"
cd "$tmp"

check help_sweep bash -c "'$moe' sweep --help | grep -q usage"

tiny_tokens "$root"
cat > topk.json <<'EOF'
{"vocab_size": 64, "hidden": 16, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "max_seq_len": 16,
 "ffn": "moe", "router": "topk", "n_experts": 4, "top_k": 1, "steps": 600, "batch_size": 2,
 "seq_len": 16, "lr": 3e-3, "checkpoint_every": 100, "threads": 1}
EOF
sed 's/"topk"/"relu"/' topk.json > relu.json
grid() {  # grid OUT
  cat <<EOF
{"out": "$1", "data": "train.tok", "eval_data": "valid.tok", "eval_args": ["--threads", "1"],
 "seeds": [1, 2], "baseline": "topk", "set": {"steps": 600},
 "runs": [{"name": "topk", "config": "topk.json"},
          {"name": "relu", "config": "relu.json", "set": {"relu_lambda0": 0.01}}]}
EOF
}
grid a > a.json
grid b > b.json

"$moe" sweep --grid a.json >a.out 2>a.err
check sweep_runs_all [ $? -eq 0 ]
check one_line_per_run_with_eta [ "$(grep -c 'moe sweep: \[[1-4]/4\] .* | [0-3] left, ETA' a.err)" -eq 4 ]
check summary_written bash -c "[ -f a/summary.json ] && [ -f a/summary.md ]"
check report_with_summary bash -c "grep -q 'Sweep: mean ± std over seeds' a/report.html && grep -q '(baseline)' a/report.html"

# the same grid, stopped by SIGTERM while relu seed 1 trains, then rerun
"$moe" sweep --grid b.json >b1.out 2>b1.err &
pid=$!
for _ in $(seq 1 3000); do
  [ -s b/relu/seed-1/metrics.jsonl ] && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.01
done
kill -TERM $pid 2>/dev/null
wait $pid; rc=$?
check stop_exit_status [ $rc -eq 143 ]
check stop_says_how_to_continue grep -q "stopped by signal 15 .* run the same command to continue" b1.err
"$moe" sweep --grid b.json --dry-run >dry.out 2>&1
check dry_run_states bash -c "grep -q 'b/relu/seed-1 *interrupted' dry.out && grep -q 'b/topk/seed-2 *done' dry.out && grep -q 'b/relu/seed-2 *new' dry.out"
"$moe" sweep --grid b.json >b2.out 2>b2.err
check resume_exit_status [ $? -eq 0 ]
check finished_runs_skipped [ "$(grep -c 'done earlier, skipped' b2.err)" -eq 2 ]
check interrupted_run_resumed grep -q 'relu seed 1: resumed and finished' b2.err
check stopped_mid_run_then_resumed bash -c "grep -Eq 'stopped by signal 15 at step [0-9]+;' b/relu/seed-1/train.log && ! grep -q 'stopped by signal 15 at step 600;' b/relu/seed-1/train.log && grep -q 'done, checkpoint b/relu/seed-1/checkpoints/step-00000600' b/relu/seed-1/train.log"
"$moe" sweep --grid b.json >b3.out 2>b3.err
check all_skipped_on_rerun [ "$(grep -c 'done earlier, skipped' b3.err)" -eq 4 ]

# the numbers: resumed == uninterrupted; summary == recomputed from eval.json
/usr/bin/python3 - <<'PY' >py.out 2>&1
import json, statistics as st
def ev(d): return json.load(open(d + "/eval.json"))["data"][0]["loss"]
for run in ("topk", "relu"):
    for s in (1, 2):
        a, b = ev(f"a/{run}/seed-{s}"), ev(f"b/{run}/seed-{s}")
        assert a == b, (run, s, a, b)
S = json.load(open("b/summary.json"))
assert S["headline"] == "valid.loss", S["headline"]
cells = {c["name"]: c for c in S["cells"]}
for run in ("topk", "relu"):
    v = [ev(f"b/{run}/seed-{s}") for s in (1, 2)]
    m = cells[run]["metrics"]["valid.loss"]
    assert abs(m["mean"] - st.mean(v)) < 1e-12 and abs(m["std"] - st.stdev(v)) < 1e-12, (m, v)
d = [ev(f"b/relu/seed-{s}") - ev(f"b/topk/seed-{s}") for s in (1, 2)]
p = cells["relu"]["minus_baseline"]["valid.loss"]
assert abs(p["mean"] - st.mean(d)) < 1e-12 and abs(p["std"] - st.stdev(d)) < 1e-12, (p, d)
assert "minus_baseline" not in cells["topk"]
# the grid's training time: every run's steps' seconds, the resumed run's
# steps once each (600 of them)
secs = {}
for run in ("topk", "relu"):
    for s in (1, 2):
        lines = [json.loads(l) for l in open(f"b/{run}/seed-{s}/metrics.jsonl")]
        assert sorted(l["step"] for l in lines) == list(range(1, len(lines) + 1)), (run, s)
        secs[run, s] = sum(l["seconds"] for l in lines)
assert len([json.loads(l) for l in open("b/relu/seed-1/metrics.jsonl")]) == 600
assert S["runs_timed"] == S["runs_done"] == 4, S
assert abs(S["train_hours"] - sum(secs.values()) / 3600) < 1e-9, (S["train_hours"], secs)
assert abs(cells["relu"]["metrics"]["train_seconds"]["values"][0] - secs["relu", 1]) < 1e-6
print("ok")
PY
check resumed_equals_uninterrupted_and_summary_recomputes grep -qx ok py.out || cat py.out

# summary.md: every cell is summary.json's number, formatted (the headline's
# mean ± std, the paired difference from the baseline with its n, the other
# metrics), and a row per run
/usr/bin/python3 - <<'PY' >md.out 2>&1
import json
S = json.load(open("b/summary.json"))
head, cells = S["headline"], {c["name"]: c for c in S["cells"]}
rows = [l.strip().strip("|").split("|") for l in open("b/summary.md") if l.startswith("|")]
header = [h.strip() for h in rows[0]]
assert header[:4] == ["run", "seeds done", f"{head} (mean ± std)", "− baseline (paired mean ± std)"], header
others = header[4:]
assert sorted(others + [head]) == sorted(cells["relu"]["metrics"]), (others, cells["relu"]["metrics"].keys())
body = {r[0].strip(): [c.strip() for c in r[1:]] for r in rows[2:]}
assert sorted(body) == sorted(cells), body.keys()
ms = lambda m: "%.4f ± %.4f" % (m["mean"], m["std"])
for name, c in cells.items():
    row = body[name]
    assert row[0] == "%d/2" % c["seeds_done"], (name, row[0])
    assert row[1] == ms(c["metrics"][head]), (name, row[1], c["metrics"][head])
    if name == "topk":
        assert row[2] == "(baseline)", row[2]
    else:
        d = c["minus_baseline"][head]
        assert row[2] == "%+.4f ± %.4f (n=2)" % (d["mean"], d["std"]), (name, row[2], d)
    for k, cell in zip(others, row[3:]):
        assert cell == ms(c["metrics"][k]), (name, k, cell, c["metrics"][k])
print("ok")
PY
check summary_md_cells_equal_summary_json grep -qx ok md.out || cat md.out

# the grid changed under finished runs (steps 600 -> 700): refused, naming the
# run, the key and both values, before anything runs or is written; the
# old results are not reported as the new grid's
sed 's/"set": {"steps": 600}/"set": {"steps": 700}/' b.json > b700.json
cp b/summary.json summary.before
expect_error changed_grid_refused "b/topk/seed-1 ran with another config than b700.json now gives it (steps: 600, now 700; warmup: 6, now 7).*remove b/topk/seed-1" \
  "$moe" sweep --grid b700.json
expect_error changed_grid_refused_dry_run "steps: 600, now 700" "$moe" sweep --grid b700.json --dry-run
expect_error changed_grid_refused_aggregate "steps: 600, now 700" "$moe" sweep --grid b700.json --aggregate
check changed_grid_left_results cmp -s b/summary.json summary.before
check changed_grid_left_configs grep -q '"steps": 600' b/configs/topk-seed-1.json

# several sweeps can share a grid: a run locked by a live process is left
# to it; a lock whose process is gone is taken over
grid c > c.json
sleep 1000 & holder=$!
mkdir -p c/topk/seed-1 c/relu/seed-2
echo $holder > c/topk/seed-1/sweep.lock
echo 999999999 > c/relu/seed-2/sweep.lock
"$moe" sweep --grid c.json >c.out 2>c.err
check lock_held_run_skipped grep -q 'topk seed 1: another sweep is running it, skipped' c.err
check stale_lock_taken_over bash -c "grep -q 'relu seed 2: finished' c.err && [ -f c/relu/seed-2/sweep.json ] && [ ! -e c/relu/seed-2/sweep.lock ]"
kill $holder 2>/dev/null; wait $holder 2>/dev/null
rm c/topk/seed-1/sweep.lock
"$moe" sweep --grid c.json >c2.out 2>c2.err
check freed_run_done_later bash -c "grep -q 'topk seed 1: finished' c2.err && [ \$(grep -c 'done earlier, skipped' c2.err) -eq 3 ]"

# docs/SWEEP.md's example grid: its configs exist and pass (a dry run checks
# every config; its folders are made here, its data is not read)
mkdir -p docsgrid && ln -s "$root/configs" docsgrid/configs
/usr/bin/python3 - "$root/docs/SWEEP.md" > docsgrid/grid.json <<'PY'
import re, sys
print(re.search(r"## The grid file\s*```json\n(.*?)```", open(sys.argv[1]).read(), re.S).group(1))
PY
check docs_example_grid_runs bash -c "cd docsgrid && '$moe' sweep --grid grid.json --dry-run | grep -q 'moe sweep: 12 runs, 12 to do'"

# bad grids: one line naming the file and the key
echo '{"out": "x", "data": "train.tok", "seeds": [1], "runs": [{"name": "a", "config": "topk.json"}], "sedes": 1}' > bad1.json
expect_error bad_unknown_key "bad1.json: unknown key 'sedes'" "$moe" sweep --grid bad1.json
echo '{"out": "x", "data": "train.tok", "seeds": [1], "baseline": "zz", "runs": [{"name": "a", "config": "topk.json"}]}' > bad2.json
expect_error bad_baseline "key 'baseline': no run is named 'zz'" "$moe" sweep --grid bad2.json
echo '{"out": "x", "data": "train.tok", "seeds": [1], "runs": [{"name": "a", "config": "topk.json", "set": {"top_k": 9}}]}' > bad3.json
expect_error bad_config_checked_first "run 'a'.*top_k" "$moe" sweep --grid bad3.json
echo '{"out": "x", "data": "train.tok", "seeds": [1, 1], "runs": [{"name": "a", "config": "topk.json"}]}' > bad4.json
expect_error bad_seed_twice "key 'seeds': 1 twice" "$moe" sweep --grid bad4.json

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
