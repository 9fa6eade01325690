#!/usr/bin/env bash
# train_speed.sh — moe training speed against PyTorch (see train_speed.py), as
# docs/PERFORMANCE.md reports it, in fp32 (peer: PyTorch float32) and bf16
# (peer: PyTorch under bf16 autocast): the demo-size models (30 steps, 5 repeats,
# bench/results/train_speed.json), then hidden 512 / 8 layers (12 steps, 3
# repeats: a step takes seconds; bench/results/train_speed_h512.json).
# About 70 minutes on a quiet 2-core machine (both precisions).
# Usage: bench/train_speed.sh [BUILD_DIR] [extra train_speed.py options]
set -euo pipefail
build=${1:-build}; shift || true
here=$(dirname "$0")
/usr/bin/python3 "$here/train_speed.py" --build "$build" \
  --models dense,remoe,remoe-stage1,topk,cartesian --steps 30 --repeats 5 "$@"
/usr/bin/python3 "$here/train_speed.py" --build "$build" \
  --models dense-h512,remoe-h512,topk-h512 --steps 12 --repeats 3 \
  --out "$here/results/train_speed_h512.json" "$@"
