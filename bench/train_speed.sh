#!/usr/bin/env bash
# train_speed.sh — moe training speed against PyTorch (see train_speed.py), as
# docs/PERFORMANCE.md reports it, in fp32 (peer: PyTorch float32) and bf16
# (peer: PyTorch under bf16 autocast): the demo-size models (30 steps, 5 repeats,
# bench/results/train_speed.json), then hidden 512 / 8 layers (12 steps, 3
# repeats: a step takes seconds; bench/results/train_speed_h512.json).
# then every router kind at the ReMoE paper's CPU twin (hidden 64) and at hidden
# 256 at moe's default precision (bf16 where the CPU has it natively, against
# PyTorch bf16 autocast; else fp32 against PyTorch fp32;
# bench/results/train_speed_widths.json). About 90 minutes on a quiet 2-core
# machine.
# Usage: bench/train_speed.sh [BUILD_DIR] [extra train_speed.py options]
set -euo pipefail
build=${1:-build}; shift || true
here=$(dirname "$0")
/usr/bin/python3 "$here/train_speed.py" --build "$build" \
  --models dense,remoe,remoe-stage1,topk,cartesian --steps 30 --repeats 5 "$@"
/usr/bin/python3 "$here/train_speed.py" --build "$build" \
  --models dense-h512,remoe-h512,topk-h512 --steps 12 --repeats 3 \
  --out "$here/results/train_speed_h512.json" "$@"
/usr/bin/python3 "$here/train_speed.py" --build "$build" \
  --models dense-h64,topk-h64,remoe-h64,cartesian-h64,dense-h256,topk-h256,remoe-h256,cartesian-h256 \
  --steps 20 --repeats 3 --precisions default --out "$here/results/train_speed_widths.json" "$@"
