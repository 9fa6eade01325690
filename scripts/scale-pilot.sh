#!/usr/bin/env bash
# scale-pilot.sh — runs the scale pilot of docs/RESULTS.md ("Where MoE pays at
# CPU scale"): configs/scale/grids/pilot-h128.json, pilot-h256.json, pilot-lr.json,
# each a resumable `moe sweep`, with N sweep processes working through the
# grids at once (each takes the runs the others do not hold). Stop it with
# SIGTERM (each run checkpoints) and start it again at any time: it continues
# where it stopped. Builds data/paper/ first if it is missing. When it
# stops (SIGTERM, or all done) it archives what the runs reached (curves and
# finished runs' results) into bench/results/scale/TIME-ISA.json
# (scripts/scale-results.py --archive): commit that file before the machine
# goes, and the next start, on any machine, restores the finished runs.
# Then configs/scale/grids/table-a-h128.json (table a at the pilot's width, 3
# seeds), routers-h128.json (issue 29's comparison), table-b-h128.json and
# table-e-h128.json (tables b and e at the pilot's width).
# Usage: [MOE_SCALE_RUNS=DIR] scripts/scale-pilot.sh [BUILD_DIR [N_PROCESSES [GRID...]]]
#   (default: build $(nproc) pilot-h128 pilot-h256 pilot-lr table-a-h128 routers-h128 table-b-h128
#   table-e-h128); name grids
#   to run only those, e.g. on a session too short to finish a 50M-token run
set -euo pipefail
build=${1:-build}
n=${2:-$(nproc)}   # one run per core (each runs one thread)
shift $(( $# < 2 ? $# : 2 ))
grids=("$@")
[ ${#grids[@]} -gt 0 ] || grids=(pilot-h128 pilot-h256 pilot-lr table-a-h128 routers-h128 table-b-h128 table-e-h128)
cd "$(dirname "$0")/.."
moe="$build/moe"
scripts/paper-data.sh "$build"
# MOE_SCALE_RUNS=DIR keeps the runs outside the checkout, so that a fresh
# checkout continues them: runs/scale becomes a link to DIR
mkdir -p runs   # the workers' logs, and runs/scale
if [ -n "${MOE_SCALE_RUNS:-}" ]; then
  mkdir -p "$MOE_SCALE_RUNS"
  [ -e runs/scale ] || ln -s "$MOE_SCALE_RUNS" runs/scale
fi
for g in "${grids[@]}"; do  # every name first: a typo must not wait for days of earlier grids
  [ -f "configs/scale/grids/$g.json" ] || {
    echo "scale-pilot.sh: no grid configs/scale/grids/$g.json (there are: $(cd configs/scale/grids && ls *.json | sed 's/\.json$//' | tr '\n' ' '))" >&2
    exit 2
  }
done
# worker: the grids in order. A grid that fails (a run that fails stops its
# sweep, which names the run and its log) does not stop the grids after it:
# the queue is days long and unattended. A signal stops the worker.
# Each worker writes its current sweep's pid to runs/scale-worker-I.pid, so
# that a stop reaches the sweep even when the worker itself is gone (a
# `pkill -f scale-pilot.sh` signals the workers too: bash lines of the same
# script; a worker killed so leaves its sweep running, no longer its child).
worker() {  # worker I
  local g rc failed=0
  for g in "${grids[@]}"; do
    "$moe" sweep --grid "configs/scale/grids/$g.json" &
    echo $! > "runs/scale-worker-$1.pid"
    rc=0
    wait $! || rc=$?
    [ $rc -eq 0 ] && continue
    [ $rc -ge 128 ] && return $rc
    echo "scale-pilot.sh: grid $g failed (exit $rc); going on with the next grid" >&2
    failed=1
  done
  return $failed
}
# runs an earlier session finished on another machine (bench/results/scale/)
# count as done: their sweep marks come back, and the sweeps skip them
/usr/bin/python3 scripts/scale-results.py --restore runs/scale
pids=()
rm -f runs/scale-worker-*.pid
# SIGTERM/SIGINT reach each worker's `moe sweep`, which passes it to its run
# (a checkpoint, then exit); the script waits for every sweep to end
# archive: what the runs reached, into bench/results/scale/ (one file per
# stop, named for the time and the CPU's vector unit), to be committed
archive() {
  local isa=avx2
  grep -qw amx_bf16 /proc/cpuinfo && isa=amx || { grep -qw avx512f /proc/cpuinfo && isa=avx512; }
  /usr/bin/python3 scripts/scale-results.py --archive \
    "bench/results/scale/$(date -u +%Y-%m-%dT%H%M)-$isa.json" runs/scale || true
}
# sweeps: the pids of the workers' sweeps (finished ones too: kill fails on them)
sweeps() { cat runs/scale-worker-*.pid 2>/dev/null || true; }
stop() {
  local p
  trap '' TERM INT   # one stop: a second signal (pkill -f reaches us twice) must not cut it short
  # (nothing here may fail under set -e before the archive is written:
  # a worker that has finished its grids has no sweep left to signal)
  for p in $(sweeps); do kill -TERM "$p" 2>/dev/null || true; done
  for p in $(sweeps); do while kill -0 "$p" 2>/dev/null; do sleep 1; done; done
  wait || true
  rm -f runs/scale-worker-*.pid
  archive
  exit 143
}
trap stop TERM INT
for i in $(seq "$n"); do
  worker "$i" > "runs/scale-worker-$i.log" 2>&1 &
  pids+=($!)
  sleep 2 & wait $!   # let each take its lock before the next looks (a wait, so a signal is not held back)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
rm -f runs/scale-worker-*.pid
archive
[ $status -eq 0 ] || echo "scale-pilot.sh: a grid failed: see runs/scale-worker-*.log" >&2
exit $status
