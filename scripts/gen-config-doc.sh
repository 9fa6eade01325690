#!/usr/bin/env bash
# gen-config-doc.sh — rewrites the key table of docs/CONFIG.md from
# `moe config --doc` (the prose above the table is kept).
# Usage: scripts/gen-config-doc.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
moe=${1:-build}/moe
{ sed '/^| key |/,$d' docs/CONFIG.md; "$moe" config --doc; } > docs/CONFIG.md.tmp
mv docs/CONFIG.md.tmp docs/CONFIG.md
