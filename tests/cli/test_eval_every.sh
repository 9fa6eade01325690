#!/usr/bin/env bash
# test_eval_every.sh — learning curves during training (issue 24): `moe train
# --eval-every N --eval-data FILE --eval-tokens M` puts the validation loss,
# overall and per domain, into the metrics.jsonl lines of steps N, 2N, ...
# and the last; the value equals `moe eval --max-tokens M` of the checkpoint
# of that step (the same windows); the pass changes nothing that training
# reads (final weights bit for bit); `moe report` draws it; bad use refused.
set -u
build=${1:-build}
moe="$build/moe"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0
. "$(dirname "$0")/lib.sh"

/usr/bin/python3 - "$tmp" <<'PY'
import json, random, sys
r = random.Random(2)
words = {"cats": "the cat sat on a mat and the cat ate a rat".split(),
         "code": "int main ( void ) { return x + y ; } if for while".split()}
for split, n in (("train", 40), ("valid", 16)):
    with open(f"{sys.argv[1]}/{split}.jsonl", "w") as f:
        for i in range(n):
            d = "cats" if i % 2 else "code"
            f.write(json.dumps({"text": " ".join(r.choice(words[d]) for _ in range(60)), "domain": d}) + "\n")
PY
for s in train valid; do "$moe" prepare --input "$tmp/$s.jsonl" --tokenizer bytes --out "$tmp/$s.tok" >/dev/null || bad "prepare $s"; done
cat >"$tmp/relu.json" <<JSON
{"vocab_size": 257, "hidden": 16, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "max_seq_len": 32,
 "ffn": "moe", "router": "relu", "n_experts": 4, "top_k": 1, "precision": "fp32", "threads": 1,
 "steps": 10, "batch_size": 4, "seq_len": 32, "lr": 3e-3, "warmup": 2, "checkpoint_every": 4, "keep_checkpoints": 4}
JSON
"$moe" train --config "$tmp/relu.json" --data "$tmp/train.tok" --out "$tmp/a" \
  --eval-every 4 --eval-data "$tmp/valid.tok" --eval-tokens 512 >/dev/null 2>"$tmp/a.err" || bad "train with --eval-every: $(tail -2 "$tmp/a.err")"
"$moe" train --config "$tmp/relu.json" --data "$tmp/train.tok" --out "$tmp/b" >/dev/null 2>&1 || bad "train without"

/usr/bin/python3 - "$tmp" <<'PY' && ok "val_loss on steps 4, 8 and the last (10) only, with both domains" || bad "val_loss lines"
import json, sys
L = [json.loads(l) for l in open(f"{sys.argv[1]}/a/metrics.jsonl")]
steps = [l["step"] for l in L if "val_loss" in l]
assert steps == [4, 8, 10], steps
for l in L:
    if "val_loss" in l:
        assert set(l["val"]["domains"]) == {"cats", "code"}, l["val"]
        assert l["val"]["tokens"] > 0 and "lm_loss" in l and "layers" in l
PY
check "the validation pass leaves training bit for bit unchanged" \
  cmp "$tmp/a/checkpoints/step-00000010/model.safetensors" "$tmp/b/checkpoints/step-00000010/model.safetensors"
for s in 4 8; do
  "$moe" eval --model "$tmp/a/checkpoints/step-0000000$s" --data "$tmp/valid.tok" --max-tokens 512 --batch 4 \
    --json "$tmp/e$s.json" >/dev/null 2>&1 || bad "eval step $s"
  /usr/bin/python3 - "$tmp" "$s" <<'PY' && ok "step $s val_loss equals moe eval --max-tokens of its checkpoint" || bad "step $s val_loss against moe eval"
import json, sys
tmp, s = sys.argv[1], int(sys.argv[2])
line = [json.loads(l) for l in open(f"{tmp}/a/metrics.jsonl") if json.loads(l)["step"] == s][0]
ev = json.load(open(f"{tmp}/e{s}.json"))
def find(o):
    if isinstance(o, dict):
        if "loss" in o and "ppl" in o: return o["loss"]
        for v in o.values():
            x = find(v)
            if x is not None: return x
    if isinstance(o, list):
        for v in o:
            x = find(v)
            if x is not None: return x
want = find(ev)
assert want is not None and abs(line["val_loss"] - want) <= 1e-5 * abs(want), (line["val_loss"], want)
PY
done
"$moe" report "$tmp/a" --out "$tmp/r.html" >/dev/null 2>&1 || bad "report"
check "the report draws the validation curve" grep -q "a validation" "$tmp/r.html"
expect_error "--eval-every without --eval-data" "needs --eval-data" \
  "$moe" train --config "$tmp/relu.json" --data "$tmp/train.tok" --out "$tmp/c" --eval-every 4
expect_error "--eval-data without --eval-every" "only with --eval-every" \
  "$moe" train --config "$tmp/relu.json" --data "$tmp/train.tok" --out "$tmp/d" --eval-data "$tmp/valid.tok"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
