#!/usr/bin/env bash
# kill_resume_soak.sh — the long form of tests/ref/test_kill_resume.py:
# N (default 25) SIGKILLs at random steps and moments, each resumed and
# compared byte for byte with an uninterrupted run. Usage: scripts/kill_resume_soak.sh [BUILD] [N]
set -euo pipefail
cd "$(dirname "$0")/.."
exec /usr/bin/python3 tests/ref/test_kill_resume.py "${1:-build}" --kills "${2:-25}"
