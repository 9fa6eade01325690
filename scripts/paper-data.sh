#!/usr/bin/env bash
# paper-data.sh — builds data/paper/ (the full corpus, a 4096-id tokenizer and
# the train / valid / test token files) unless it is already there: the data
# of the CPU-scale grids (scripts/paper-grids.sh) and the scale pilot
# (scripts/scale-pilot.sh). Usage: scripts/paper-data.sh [BUILD_DIR]
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
moe="$build/moe"
d=data/paper
[ -f $d/valid.tok ] && exit 0
/usr/bin/python3 tools/build_corpus.py --profile full --quiet
mkdir -p $d
[ -f $d/tokenizer.moe ] || "$moe" tokenizer train --input data/corpus/full/train.jsonl --vocab 4096 --out $d/tokenizer.moe
for s in train valid test; do
  [ -f $d/$s.tok ] || "$moe" prepare --input data/corpus/full/$s.jsonl --tokenizer $d/tokenizer.moe --out $d/$s.tok
done
