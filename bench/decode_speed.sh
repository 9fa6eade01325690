#!/usr/bin/env bash
# decode_speed.sh — generation speed with the KV cache: prefill and decode
# tokens/s of `moe generate --stats` for a dense model and MoE models of one
# size (hidden 256, 4 layers, ffn_dim 1024 per expert, vocab 4096, random
# init), at sparsity 0.875 with TopK (E=8 k=1, E=32 k=1) and with ReLU
# routing (E=8, whose random init activates about half the experts). Shows
# that decode cost follows the active experts, not the total: prints a table
# with the E=32 / E=8 time-per-token ratio and writes
# bench/results/decode_speed.json.
# Runs are interleaved (every model once per round) and the median of the
# rounds is reported, so that a load spike on a shared machine hits every
# model alike. OMP_WAIT_POLICY defaults to passive here: on a machine shared
# with other jobs, spinning OpenMP barriers make 2-thread decode steps (many
# tiny parallel regions) several times slower and the figures meaningless.
# Usage: bench/decode_speed.sh [BUILD_DIR]  (MOE=path/to/moe overrides;
#        PROMPT=256 prompt tokens, GEN=256 generated tokens, REPS=5 rounds,
#        THREADS="1 <nproc>" OpenMP thread counts)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
moe=${MOE:-${1:-build}/moe}
prompt_len=${PROMPT:-256}
gen=${GEN:-256}
reps=${REPS:-5}
threads_list=${THREADS:-"1 $(nproc)"}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
[ -x "$moe" ] || { echo "decode_speed: $moe is missing (run make)" >&2; exit 1; }
work=.cache/bench/decode
mkdir -p "$work" bench/results

base='"vocab_size": 4096, "hidden": 256, "n_layers": 4, "n_heads": 4, "n_kv_heads": 2,
 "ffn_dim": 1024, "max_seq_len": 1024, "seq_len": 256, "init_std": 0.02'
models=(dense topk_e8_k1 topk_e32_k1 relu_e8)
declare -A extra=(
  [dense]=''
  [topk_e8_k1]=', "ffn": "moe", "router": "topk", "n_experts": 8, "top_k": 1'
  [topk_e32_k1]=', "ffn": "moe", "router": "topk", "n_experts": 32, "top_k": 1'
  [relu_e8]=', "ffn": "moe", "router": "relu", "n_experts": 8, "top_k": 1'
)
# a prompt of prompt_len bytes (the bytes tokenizer: one token per byte)
text=$(head -c 100000 docs/PERFORMANCE.md 2>/dev/null | tr -s '\n' ' ' | head -c "$prompt_len")
while [ ${#text} -lt "$prompt_len" ]; do text="$text $text"; done
text=${text:0:$prompt_len}

for name in "${models[@]}"; do
  echo "{${base}${extra[$name]}}" >"$work/$name.json"
  if [ ! -f "$work/$name/model.safetensors" ] || ! cmp -s "$work/$name.json" "$work/$name.used.json"; then
    "$moe" init --config "$work/$name.json" --out "$work/$name" --seed 1 --force >/dev/null
    cp "$work/$name.json" "$work/$name.used.json"
  fi
done
rows="$work/rows.tsv"; : >"$rows"
for r in $(seq "$reps"); do
  for th in $threads_list; do
    for name in "${models[@]}"; do
      OMP_NUM_THREADS=$th "$moe" generate --model "$work/$name" --tokenizer bytes --prompt "$text" --max-tokens "$gen" \
        --temperature 0.8 --seed "$r" --stats </dev/null >/dev/null 2>"$work/run.err"
      printf '%s\t%s\t%s\t%s\n' "$name" "$th" "$r" "$(tr '\n' '|' <"$work/run.err")" >>"$rows"
    done
  done
  echo "round $r of $reps done" >&2
done

/usr/bin/python3 - "$rows" "$prompt_len" "$gen" "$(nproc)" "$OMP_WAIT_POLICY" <<'PY'
import json, re, statistics, sys, platform
rows, prompt_len, gen, cores, policy = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
runs = {}
for line in open(rows):
    name, th, rep, err = line.rstrip("\n").split("\t")
    pre = re.search(r"stats: prefill (\d+) tokens in ([\d.]+) s", err)
    dec = re.search(r"stats: decode (\d+) tokens in ([\d.]+) s", err)
    act = [(float(a), int(e)) for a, e in re.findall(r"stats: layer \d+: ([\d.]+) active experts per token of (\d+)", err)]
    runs.setdefault((name, int(th)), []).append(dict(prefill_tokens=int(pre[1]), prefill_s=float(pre[2]),
        decode_tokens=int(dec[1]), decode_s=float(dec[2]), active=act))
out = {"model": "hidden 256, 4 layers, 4 heads (2 KV), ffn_dim 1024 per expert, vocab 4096, random init",
       "prompt_tokens": prompt_len, "max_new_tokens": gen, "cores": cores, "omp_wait_policy": policy,
       "note": "bytes tokenizer (sampling among ids 0..256; <|endoftext|> may stop a run early); decode time per token includes sampling",
       "cpu": platform.processor() or platform.machine(), "statistic": "median over runs", "models": []}
for (name, th), rs in runs.items():
    pre = statistics.median(r["prefill_tokens"] / r["prefill_s"] for r in rs)
    ms = statistics.median(1e3 * r["decode_s"] / r["decode_tokens"] for r in rs)
    act = rs[0]["active"]
    mean_act = statistics.mean(a for a, _ in act) if act else None
    E = act[0][1] if act else None
    out["models"].append(dict(name=name, threads=th, experts=E, mean_active_experts=mean_act,
        sparsity=(1 - mean_act / E) if act else None, prefill_tokens_per_s=pre,
        decode_ms_per_token=ms, decode_tokens_per_s=1e3 / ms,
        decode_ms_per_token_min=min(1e3 * r["decode_s"] / r["decode_tokens"] for r in rs), runs=rs))
print(f"{'model':<14} {'thr':>3} {'E':>3} {'active/tok':>10} {'sparsity':>8} {'prefill tok/s':>13} {'decode ms/tok':>13} {'decode tok/s':>12}")
for m in out["models"]:
    E = m["experts"] or "-"
    a = f"{m['mean_active_experts']:.3f}" if m["mean_active_experts"] is not None else "-"
    s = f"{m['sparsity']:.3f}" if m["sparsity"] is not None else "-"
    print(f"{m['name']:<14} {m['threads']:>3} {E:>3} {a:>10} {s:>8} {m['prefill_tokens_per_s']:>13.0f} {m['decode_ms_per_token']:>13.3f} {m['decode_tokens_per_s']:>12.0f}")
out["ratios"] = []
for th in sorted({m["threads"] for m in out["models"]}):
    by = {m["name"]: m for m in out["models"] if m["threads"] == th}
    ratio = by["topk_e32_k1"]["decode_ms_per_token"] / by["topk_e8_k1"]["decode_ms_per_token"]
    pratio = by["topk_e8_k1"]["prefill_tokens_per_s"] / by["topk_e32_k1"]["prefill_tokens_per_s"]
    out["ratios"].append(dict(threads=th, decode_time_e32_over_e8=ratio, prefill_time_e32_over_e8=pratio))
    print(f"{th} thread(s): time per token, TopK E=32 k=1 / E=8 k=1: decode {ratio:.2f}x (goal <= 1.3x), prefill {pratio:.2f}x")
json.dump(out, open("bench/results/decode_speed.json", "w"), indent=2)
print("wrote bench/results/decode_speed.json")
PY
