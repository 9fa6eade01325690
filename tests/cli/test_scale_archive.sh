#!/usr/bin/env bash
# test_scale_archive.sh — the scale pilot outlives its machine: a tiny grid
# shaped like the pilot (runs dense and topk, seeds 1 and 2, validation every
# 20 steps)
# runs under `moe sweep`; scripts/scale-results.py --archive condenses it;
# from the archive alone the report gives the same validation curve as the
# runs' metrics.jsonl; --restore marks the finished runs done in an empty
# folder, and `moe sweep` on the same grid then trains nothing and
# aggregates the same results.
set -u
build=${1:-build}
moe="$(cd "$(dirname "$build")" && pwd)/$(basename "$build")/moe"
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0
. "$(dirname "$0")/lib.sh"
cd "$tmp"
sr() { MOE_SCALE_ARCHIVES="$tmp/archives" /usr/bin/python3 "$root/scripts/scale-results.py" "$@"; }

tiny_tokens "$root"
cat > topk.json <<'J'
{"vocab_size": 64, "hidden": 16, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "max_seq_len": 16,
 "ffn": "moe", "router": "topk", "n_experts": 4, "top_k": 1, "steps": 60, "batch_size": 2,
 "seq_len": 16, "lr": 3e-3, "checkpoint_every": 30, "threads": 1}
J
sed 's/"ffn": "moe", "router": "topk", "n_experts": 4, "top_k": 1/"ffn": "dense"/' topk.json > dense.json
cat > grid.json <<'J'
{"out": "runs/pilot-h128", "data": "train.tok", "eval_data": "valid.tok", "eval_args": ["--threads", "1"],
 "train_args": ["--eval-every", "20", "--eval-data", "valid.tok", "--eval-tokens", "512"],
 "seeds": [1, 2], "baseline": "dense",
 "runs": [{"name": "dense", "config": "dense.json"}, {"name": "topk", "config": "topk.json"}]}
J
"$moe" sweep --grid grid.json >s1.out 2>s1.err
check sweep_trains_all bash -c "[ \$(ls runs/pilot-h128/*/seed-*/sweep.json | wc -l) -eq 4 ]"
check curve_logged [ "$(grep -c '"val_loss"' runs/pilot-h128/topk/seed-1/metrics.jsonl)" -eq 3 ]

mkdir archives
sr --archive archives/a.json runs >/dev/null 2>arch.err
check archive_written bash -c "[ -s archives/a.json ] && [ \$(wc -c < archives/a.json) -lt 20000 ]"
sr runs figs-live >live.md 2>/dev/null
mv runs runs-gone
sr runs figs-archived >archived.md 2>/dev/null
# the same table rows (tokens and losses) from the archive as from the runs
check archive_same_curve bash -c "diff <(grep '^| [0-9]*\.[0-9] |' live.md) <(grep '^| [0-9]*\.[0-9] |' archived.md) && [ \$(grep -c '^| [0-9]*\.[0-9] |' live.md) -eq 3 ]"
check archive_names_source grep -q "$tmp/archives/a.json" archived.md

sr --restore runs >restore.out 2>&1
check restore_marks_every_seed [ "$(grep -c 'marked done' restore.out)" -eq 4 ]
check restore_writes_marks_only bash -c "[ -f runs/pilot-h128/topk/seed-2/sweep.json ] && [ ! -e runs/pilot-h128/topk/seed-2/metrics.jsonl ]"
"$moe" sweep --grid grid.json >s2.out 2>s2.err
check sweep_after_restore_trains_nothing bash -c "[ \$(grep -c 'done earlier, skipped' s2.err) -eq 4 ] && ! ls runs/pilot-h128/*/seed-*/metrics.jsonl >/dev/null 2>&1"
same_summary() {  # the cells' metrics of two summary.json, equal
  /usr/bin/python3 - "$1" "$2" <<'PY'
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:])
cells = lambda s: {c["name"]: c["metrics"] for c in s["cells"]}
sys.exit(0 if cells(a) == cells(b) and len(cells(a)) == 2 and cells(a)["topk"]["valid.loss"]["n"] == 2 else 1)
PY
}
check sweep_after_restore_same_summary same_summary runs-gone/pilot-h128/summary.json runs/pilot-h128/summary.json
sr --restore runs >restore2.out 2>&1
check restore_twice_does_nothing [ ! -s restore2.out ]

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
