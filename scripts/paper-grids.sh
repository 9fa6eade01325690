#!/usr/bin/env bash
# paper-grids.sh — runs the CPU-scale reproduction grids of docs/RESULTS.md
# (configs/paper/grids/), each a resumable `moe sweep`: rerun it at any time
# to continue where it stopped. Builds the corpus, tokenizer and token files
# first if they are missing (data/paper/).
# Usage: scripts/paper-grids.sh [BUILD_DIR [GRID ...]]   (default: all grids, in order)
set -euo pipefail
build=${1:-build}
shift || true
cd "$(dirname "$0")/.."
moe="$build/moe"
grids=("$@")
[ ${#grids[@]} -gt 0 ] || grids=(remoe-main-cpu remoe-experts-cpu cartesian-cpu remoe-sensitivity-cpu remoe-granularity-cpu)
scripts/paper-data.sh "$build"
# a grid with a failed run does not stop the others; the failed run is
# tried again by the next invocation, and the exit status says one failed
status=0
for g in "${grids[@]}"; do
  echo "== $g"
  "$moe" sweep --grid "configs/paper/grids/$g.json" || status=1
done
exit $status
