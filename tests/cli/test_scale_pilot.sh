#!/usr/bin/env bash
# once: scripts/scale-pilot.sh is shell around `moe sweep`, whose runs the sanitizer suite already covers (asan/cli/test_sweep)
# test_scale_pilot.sh — scripts/scale-pilot.sh loses nothing when it is
# stopped: a copy of the scripts in a scratch repository (data/paper/ stood
# in by tiny token files, one tiny grid of two runs) is started with two
# workers and stopped mid-run as a user stops it (pkill -f scale-pilot.sh:
# the script and its workers get SIGTERM). It must exit 143 with no run
# left going, a checkpoint in each run, and an archive in
# bench/results/scale/ holding both runs' curves.
# Started again, the runs resume from their checkpoints (not from step 0)
# and finish, and the archive written at the end marks them done. On a fresh
# machine (the runs gone, the archives kept) a start restores the marks and
# trains nothing. A grid that fails does not stop the grids after it (exit
# 1, named); an unknown grid name stops the script before anything runs.
set -u
build=${1:-build}
moe_dir="$(cd "$(dirname "$build")" && pwd)/$(basename "$build")"
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
pilot_pid=
trap '[ -n "$pilot_pid" ] && kill -TERM "$pilot_pid" 2>/dev/null; wait; [ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT
pass=0; fail=0
. "$(dirname "$0")/lib.sh"

repo=$tmp/repo
mkdir -p "$repo/scripts" "$repo/configs/scale/grids" "$repo/data/paper" "$repo/bench/results/scale"
cp "$root/scripts/scale-pilot.sh" "$root/scripts/paper-data.sh" "$root/scripts/scale-results.py" \
  "$root/scripts/seed_stats.py" "$repo/scripts/"
cp -r "$root/tools" "$repo/tools"
cd "$repo/data/paper" && tiny_tokens "$root" && cd "$repo"
# slow enough (1,000 steps of 256 tokens, some 5 s; checkpoint every 100) that
# SIGTERM finds both running
cat > configs/tiny-topk.json <<'J'
{"vocab_size": 64, "hidden": 16, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "max_seq_len": 16,
 "ffn": "moe", "router": "topk", "n_experts": 4, "top_k": 1, "steps": 1000, "batch_size": 16,
 "seq_len": 16, "lr": 3e-3, "checkpoint_every": 100, "threads": 1}
J
# dense is short (200 steps): its worker has finished, and has no run left to
# stop, when the SIGTERM comes (the script must still stop the other and
# archive both)
sed -e 's/"ffn": "moe", "router": "topk", "n_experts": 4, "top_k": 1/"ffn": "dense"/' -e 's/"steps": 1000/"steps": 200/' \
  configs/tiny-topk.json > configs/tiny-dense.json
cat > configs/scale/grids/tiny.json <<'J'
{"out": "runs/scale/pilot-tiny", "data": "data/paper/train.tok", "eval_data": "data/paper/valid.tok",
 "eval_args": ["--threads", "1"],
 "train_args": ["--eval-every", "100", "--eval-data", "data/paper/valid.tok", "--eval-tokens", "256"],
 "seeds": [1], "baseline": "dense",
 "runs": [{"name": "dense", "config": "configs/tiny-dense.json"}, {"name": "topk", "config": "configs/tiny-topk.json"}]}
J
runs=runs/scale/pilot-tiny
steps_of() { ls -d "$repo/$runs/$1/seed-1/checkpoints/step-"* 2>/dev/null | sed 's/.*step-0*//' | sort -n | tail -1; }
archived() {  # archived FILE RUN: RUN's last step in archive FILE, and "done" if it holds a done-mark
  /usr/bin/python3 - "$1" "$2" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["runs"].get("pilot-tiny", {}).get(sys.argv[2] + "/seed-1") or {}
print((r.get("last") or {}).get("step", -1), "done" if r.get("finished") and r.get("sweep") else "running")
PY
}

# 1. stopped mid-run: exit 143, checkpoints, an archive of both runs
scripts/scale-pilot.sh "$moe_dir" 2 tiny > pilot1.log 2>&1 &
pilot_pid=$!
for _ in $(seq 600); do  # up to 60 s for dense to finish and topk to pass its first checkpoint
  [ -f "$runs/dense/seed-1/sweep.json" ] && [ -n "$(steps_of topk)" ] && break
  sleep 0.1
done
# as a user stops it (pkill -f scale-pilot.sh): the script and its workers,
# bash lines of the same script, all get SIGTERM
pkill -TERM -f "scale-pilot.sh $moe_dir 2 tiny"; wait "$pilot_pid"; rc=$?; pilot_pid=
left_running() {  # moe processes still working in the scratch repository
  local p
  for p in $(pgrep -f 'moe (sweep|train)'); do [ "$(readlink "/proc/$p/cwd")" = "$repo" ] && echo "$p"; done
}
check stop_exits_143 [ "$rc" -eq 143 ]
check stop_ends_every_run [ -z "$(left_running)" ]
check stop_checkpoints_the_run grep -q 'stopped by signal 15 at step' "$runs/topk/seed-1/train.log"
check stop_leaves_checkpoints bash -c "[ -n '$(steps_of dense)' ] && [ -n '$(steps_of topk)' ]"
a1=$(ls bench/results/scale/*.json 2>/dev/null | head -1)
check stop_writes_archive [ -n "$a1" ]
d1=$(archived "$a1" dense); t1=$(archived "$a1" topk)
check archive_holds_both_runs [ "$d1 ${t1#* }" = "200 done running" ]
check archive_topk_curve [ "${t1% *}" -ge 100 ]
stopped_at=$(steps_of topk)

# 2. started again: the runs resume where they stopped and finish; the
# closing archive marks them done
mv "$a1" "$tmp/first-archive.json"
scripts/scale-pilot.sh "$moe_dir" 1 tiny > pilot2.log 2>&1   # one worker: nothing here needs two
check restart_finishes [ $? -eq 0 ]
check restart_resumes bash -c "grep -A3 'stopped by signal 15' '$runs/topk/seed-1/train.log' | grep -q \"(the checkpoint's)\""
# metrics.jsonl: steps 1..1000 once each (the lines past the checkpoint cut
# back, none lost before it)
check restart_every_step_once /usr/bin/python3 -c '
import json, sys
steps = [json.loads(l)["step"] for l in open(sys.argv[1]) if "\"loss\"" in l]
sys.exit(0 if sorted(steps) == list(range(1, 1001)) and int(sys.argv[2]) < 1000 else 1)' "$runs/topk/seed-1/metrics.jsonl" "$stopped_at"
a2=$(ls bench/results/scale/*.json 2>/dev/null | head -1)
check finish_archive_marks_done [ "$(archived "$a2" topk) $(archived "$a2" dense)" = "1000 done 200 done" ]

# 3. a fresh machine: the runs are gone, the archive is in git; nothing retrains
mv runs "$tmp/runs-gone"
scripts/scale-pilot.sh "$moe_dir" 1 tiny > pilot3.log 2>&1
check fresh_machine_ok [ $? -eq 0 ]
check fresh_machine_trains_nothing bash -c "! ls $runs/*/seed-1/metrics.jsonl >/dev/null 2>&1 && [ \$(cat runs/scale-worker-*.log | grep -c 'skipped') -ge 2 ]"
# 4. a grid that fails (a run whose config is missing) does not stop the
# grids after it; a grid name that does not exist stops the script at once
cat > configs/scale/grids/broken.json <<'J'
{"out": "runs/scale/broken", "data": "data/paper/train.tok", "seeds": [1],
 "runs": [{"name": "gone", "config": "configs/no-such-config.json"}]}
J
scripts/scale-pilot.sh "$moe_dir" 1 broken tiny > pilot4.log 2>&1
rc=$?
check failed_grid_exit_1 [ $rc -eq 1 ]
check failed_grid_named bash -c "grep -q 'grid broken failed' runs/scale-worker-1.log && grep -q 'a grid failed' pilot4.log"
check next_grid_still_runs bash -c "grep -A3 'grid broken failed' runs/scale-worker-1.log | grep -q 'topk seed 1: done earlier'"
rm -f runs/scale-worker-*.log
scripts/scale-pilot.sh "$moe_dir" 1 tiny tinny > pilot5.log 2>&1
rc=$?
check unknown_grid_refused_first bash -c "[ $rc -eq 2 ] && grep -q 'no grid configs/scale/grids/tinny.json (there are: broken tiny )' pilot5.log && ! ls runs/scale-worker-*.log >/dev/null 2>&1"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
