#!/usr/bin/env bash
# train_speed.sh — moe training speed against PyTorch (see train_speed.py).
# Usage: bench/train_speed.sh [BUILD_DIR] [extra train_speed.py options]
set -euo pipefail
build=${1:-build}; shift || true
exec /usr/bin/python3 "$(dirname "$0")/train_speed.py" --build "$build" "$@"
