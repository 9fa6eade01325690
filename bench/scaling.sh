#!/usr/bin/env bash
# scaling.sh — training across processes (mpirun -np 2) against one process
# with 2 threads, on the hidden-512 TopK and ReMoE configs: tokens/s, peak
# memory per rank, share of time in collectives, bytes per step (measured and
# modelled), from a warm-up checkpoint, 3 interleaved rounds, 1 and 4
# micro-batches per step, expert parallel with and without its placement by
# load. Writes bench/results/scaling.json. About two and a half hours on the
# 2-core machine. Usage: bench/scaling.sh [BUILD_DIR] [scaling.py options]
set -euo pipefail
build=${1:-build}; shift || true
exec /usr/bin/python3 "$(dirname "$0")/scaling.py" --build "$build" "$@"
