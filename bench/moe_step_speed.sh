#!/usr/bin/env bash
# moe_step_speed.sh — ReMoE step time against TopK at the same sparsity (moe_step_speed.py).
set -euo pipefail
build=${1:-build}; shift || true
exec /usr/bin/python3 "$(dirname "$0")/moe_step_speed.py" --build "$build" "$@"
