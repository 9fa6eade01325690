"""train_speed.py — training tokens/s of `moe train` against the PyTorch
reference (tools/ref_model.py, the same model, weights, data, batch and
thread count), measured in the same run, in each precision: moe fp32
against PyTorch float32, moe `--precision bf16` against PyTorch float32
under torch.autocast("cpu", dtype=torch.bfloat16). Prints a table and
writes JSON.

  python3 bench/train_speed.py [--build build] [--models dense,remoe,...]
      [--steps N] [--repeats R] [--threads 2] [--precisions fp32,bf16]
      [--out bench/results/train_speed.json]

Per model: `moe init` writes the weights both sides load; each side trains
--steps optimiser steps in sequential mode, --repeats times; the figure is
the median over repeats of tokens / (time of all steps but the first two).
ReMoE rows start where a ReMoE run spends its training, past the near-dense
stage I: `moe train` first runs the model --warm-steps steps on short
batches (the sparsity controller works per step, whatever the batch), and
both sides then start from that checkpoint (weights and lambda); the
"-stage1" rows start from init instead.
Peak memory is the maximum resident set size of the training process.
MFU: model FLOPs per token (6 x the active parameters at the run's measured
sparsity, from `moe config --params --sparsity`, input embedding aside; plus
the attention matrix products: 12 T D per layer) x tokens/s, over the cores'
fp32 FMA peak (512-bit FMAs, build/bench/gemm_rate, same threads, same
run); bf16 rows also over the best rate oneDNN's bf16 matmul reached there
(AMX where the CPU has it) and the vdpbf16ps peak (in the JSON)."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = "/usr/bin/python3"

DEMO = {"vocab_size": 4096, "hidden": 128, "n_layers": 4, "n_heads": 4, "n_kv_heads": 2,
        "max_seq_len": 256, "batch_size": 16, "seq_len": 128, "lr": 1e-3, "warmup": 0}
H512 = dict(DEMO, hidden=512, n_layers=8, n_heads=8, n_kv_heads=4, batch_size=8, seq_len=256)
# the ReMoE paper's 182M CPU twin (configs/paper/remoe/cpu/182m) and a width between
H64 = dict(DEMO, hidden=64, n_layers=4, n_heads=2, n_kv_heads=1, batch_size=4, seq_len=128, max_seq_len=128)
H256 = dict(DEMO, hidden=256, n_layers=4, n_heads=8, n_kv_heads=4)
MOE8 = {"ffn": "moe", "n_experts": 8, "top_k": 1}
# "warm": [batch, seq] of the warm-up run that takes ReMoE past stage I
MODELS = {
    "dense": DEMO,
    "remoe": dict(DEMO, router="relu", warm=[4, 128], **MOE8),
    "remoe-stage1": dict(DEMO, router="relu", **MOE8),
    "topk": dict(DEMO, router="topk", **MOE8),
    "cartesian": dict(DEMO, ffn="cartesian", router="topk", n_experts=16, top_k=2),
    "dense-h512": H512,
    "remoe-h512": dict(H512, router="relu", warm=[1, 64], **MOE8),
    "topk-h512": dict(H512, router="topk", **MOE8),
    "cartesian-h512": dict(H512, ffn="cartesian", router="topk", n_experts=16, top_k=2),
    "dense-h64": H64,
    "topk-h64": dict(H64, router="topk", **MOE8),
    "remoe-h64": dict(H64, router="relu", warm=[4, 128], **MOE8),
    "cartesian-h64": dict(H64, ffn="cartesian", router="topk", n_experts=16, top_k=2),
    "dense-h256": H256,
    "topk-h256": dict(H256, router="topk", **MOE8),
    "remoe-h256": dict(H256, router="relu", warm=[2, 128], **MOE8),
    "cartesian-h256": dict(H256, ffn="cartesian", router="topk", n_experts=16, top_k=2),
}


def cpu_name():
    """The CPU's model name and the vector features that decide the kernels."""
    info = open("/proc/cpuinfo").read()
    name = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name")), "?")
    flags = next((l.split(":", 1)[1].split() for l in info.splitlines() if l.startswith("flags")), [])
    return f"{name} ({', '.join(f for f in ('avx2', 'avx512f', 'avx512_bf16', 'amx_bf16') if f in flags)})"


def run_measured(cmd, env=None, cpu=None):
    """Runs cmd; returns (stdout, peak RSS in MB); appends the process's CPU
    seconds (user + system, start-up included) to the list cpu if given."""
    with tempfile.TemporaryFile() as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, env=env)
        _, status, ru = os.wait4(p.pid, 0)
        err = p.stderr.read().decode()
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{err}")
        out.seek(0)
        if cpu is not None:
            cpu.append(ru.ru_utime + ru.ru_stime)
        return out.read().decode(), ru.ru_maxrss / 1024.0


def tokens_per_s(step_seconds, tokens_per_step):
    timed = step_seconds[2:] if len(step_seconds) > 3 else step_seconds
    return tokens_per_step * len(timed) / sum(timed)


def data_file(build, tmp):
    """The small corpus with a 4096-id tokenizer (built if missing)."""
    subprocess.run([PY, os.path.join(ROOT, "tools/build_corpus.py"), "--profile", "small", "--quiet"],
                   check=True, cwd=ROOT, capture_output=True)
    train = os.path.join(ROOT, "data/corpus/small/train.jsonl")
    tok, out = os.path.join(tmp, "tok"), os.path.join(tmp, "train.tok")
    subprocess.run([f"{build}/moe", "tokenizer", "train", "--input", train, "--vocab", "4096", "--out", tok],
                   check=True, capture_output=True)
    subprocess.run([f"{build}/moe", "prepare", "--input", train, "--tokenizer", tok, "--out", out],
                   check=True, capture_output=True)
    return out


def flops_per_token(build, path, cfg, sparsity):
    """6 x the active matrix parameters + the attention products (12 T D per
    layer). The active parameters are `moe config --params` at the run's
    measured sparsity (the project's one counter), less the input embedding
    (a lookup, not a product): `embedding` is embedding + head, V x D each."""
    counts = json.loads(subprocess.run([f"{build}/moe", "config", "--params", path, "--sparsity", f"{sparsity:.6f}"],
                                       check=True, capture_output=True, text=True).stdout)
    D, L, V, T = cfg["hidden"], cfg["n_layers"], cfg["vocab_size"], cfg["seq_len"]
    return 6 * (counts["active"] - counts["embedding"] + V * D) + 12 * T * D * L


def gemm_rate(build, threads):
    """{"sgemm_gflops": {size: GFLOP/s}, "fma_peak_gflops": the cores' FMA peak}"""
    out = subprocess.run([f"{build}/bench/gemm_rate", "5"], capture_output=True, text=True, check=True,
                         env=dict(os.environ, OMP_NUM_THREADS=str(threads))).stdout
    return json.loads(out)


def starting_point(build, name, cfg, path, data, warm_steps, threads, tmp):
    """The model both sides load: `moe init`, or for a "warm" model the last
    checkpoint of a warm-up run (weights and ReMoE's lambda)."""
    init = os.path.join(tmp, name + ".init")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if "warm" not in cfg:
        subprocess.run([f"{build}/moe", "init", "--config", path, "--out", init], check=True, capture_output=True)
        return init, None
    b, t = cfg["warm"]
    t0 = time.time()
    run_measured([f"{build}/moe", "train", "--config", path, "--data", data, "--out", init, "--steps",
                  str(warm_steps), "--batch", str(b), "--seq", str(t), "--no-shuffle", "--threads",
                  str(threads), "--checkpoint-every", str(warm_steps)], env)
    with open(os.path.join(init, "metrics.jsonl")) as f:
        last = [json.loads(l) for l in f][-10:]
    print(f"  ({name}: {warm_steps} warm-up steps of {b}x{t} tokens in {time.time() - t0:.0f} s, "
          f"sparsity {statistics.mean(l['sparsity'] for l in last):.3f} over the last 10)", flush=True)
    return init, warm_steps


def bench_model(build, name, cfg, data, steps, repeats, threads, warm_steps, tmp, precisions, native_bf16):
    cfg = dict(cfg, steps=steps)
    path = os.path.join(tmp, name + ".json")
    with open(path, "w") as f:
        json.dump({k: v for k, v in cfg.items() if k != "warm"}, f)
    init, warmed = starting_point(build, name, cfg, path, data, warm_steps, threads, tmp)
    B, T = cfg["batch_size"], cfg["seq_len"]
    shape = ["--steps", str(steps), "--batch", str(B), "--seq", str(T), "--threads", str(threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    rows = {}
    for prec in precisions:
        rows[prec] = {"moe": [], "torch": [], "moe_mb": 0.0, "torch_mb": 0.0, "sp": [], "sp_ref": [],
                      "moe_cpu": [], "torch_cpu": []}
    # the precisions of one repeat run back to back, so that a load spike of
    # the shared machine hits both alike
    for r in range(repeats):
        for prec in precisions:
            row = rows[prec]
            run = os.path.join(tmp, f"{name}.{prec}.run{r}")
            flag = [] if prec == "default" else ["--precision", prec]   # default: moe's own choice
            _, mem = run_measured([f"{build}/moe", "train", "--model", init, "--data", data, "--out", run,
                                   "--no-shuffle"] + flag + shape, env, row["moe_cpu"])
            with open(os.path.join(run, "metrics.jsonl")) as f:
                lines = [json.loads(l) for l in f]
            row["moe"].append(tokens_per_s([l["seconds"] for l in lines], B * T))
            row["sp"] += [l.get("sparsity", 0.0) for l in lines[2:]]
            row["moe_mb"] = max(row["moe_mb"], mem)
            peer = ["--autocast-bf16"] if prec == "bf16" or (prec == "default" and native_bf16) else []
            out, mem = run_measured([PY, os.path.join(ROOT, "tools/ref_model.py"), "train", "--model", init,
                                     "--data", data, "--dtype", "float32", "--sparse"] + peer + shape, env,
                                    row["torch_cpu"])
            recs = [json.loads(l) for l in out.splitlines()]
            row["torch"].append(tokens_per_s([l["seconds"] for l in recs], B * T))
            row["sp_ref"] += [l.get("sparsity", 0.0) for l in recs[2:]]
            row["torch_mb"] = max(row["torch_mb"], mem)
    out = []
    for prec in precisions:
        row = rows[prec]
        o, t = statistics.median(row["moe"]), statistics.median(row["torch"])
        sp = statistics.mean(row["sp"]) if row["sp"] else 0.0
        out.append({"model": name, "precision": prec,
                    "peer": "torch bf16 autocast" if prec == "bf16" or (prec == "default" and native_bf16)
                            else "torch fp32",
                    "config": cfg, "warm_steps": warmed, "moe_tokens_per_s": o, "torch_tokens_per_s": t,
                    "ratio": o / t, "moe_runs": row["moe"], "torch_runs": row["torch"],
                    "moe_peak_mb": row["moe_mb"], "torch_peak_mb": row["torch_mb"], "sparsity": sp,
                    "torch_sparsity": statistics.mean(row["sp_ref"]) if row["sp_ref"] else 0.0,
                    # CPU seconds of whole processes (start-up included): a
                    # cross-check of the ratio that time slicing on a shared
                    # machine does not move
                    "moe_cpu_s": row["moe_cpu"], "torch_cpu_s": row["torch_cpu"],
                    "cpu_ratio": statistics.median(row["torch_cpu"]) / statistics.median(row["moe_cpu"]),
                    "flops_per_token": flops_per_token(build, path, cfg, sp)})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--models", default="dense,remoe,remoe-stage1,topk,cartesian,dense-h512,remoe-h512,topk-h512")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warm-steps", type=int, default=200, help="warm-up steps of the ReMoE rows")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench/results/train_speed.json"))
    ap.add_argument("--precisions", default="fp32,bf16",
                    help="fp32 (peer: PyTorch fp32), bf16 (peer: PyTorch bf16 autocast) and/or default "
                         "(no --precision: moe's own choice, bf16 where the CPU has native bf16; the peer "
                         "is autocast there, fp32 elsewhere)")
    ap.add_argument("--note", default="", help="recorded in the JSON (e.g. machine load)")
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    import torch
    rows = []
    rates = gemm_rate(build, a.threads)
    fma = rates["fma_peak_gflops"]
    dot = rates.get("bf16_dot_peak_gflops", 0.0)
    amx = rates.get("bf16_matmul_best_gflops", 0.0)
    precisions = a.precisions.split(",")
    native_bf16 = dot > 0 or amx > 0
    print(f"CPU: {cpu_name()}", flush=True)
    print(f"{a.threads} threads: fp32 FMA peak {fma:.0f} GFLOP/s; bf16 vdpbf16ps peak {dot:.0f}; "
          f"best oneDNN bf16 matmul {amx:.0f} ({rates.get('bf16_matmul_impl', '?')}); "
          f"sgemm 2048^3: OpenBLAS {rates['sgemm_gflops']['2048']:.0f}, "
          f"dnnl {rates.get('dnnl_sgemm_gflops', {}).get('2048', 0):.0f}", flush=True)
    def save(rows, complete):
        """The JSON so far, written after every row (a stopped run keeps what it measured)."""
        os.makedirs(os.path.dirname(a.out), exist_ok=True)
        with open(a.out + ".tmp", "w") as f:
            json.dump({"benchmark": "train_speed", "threads": a.threads, "steps": a.steps, "repeats": a.repeats,
                       "warm_steps": a.warm_steps, "note": a.note, "rates": rates,
                       "sgemm_gflops": rates["sgemm_gflops"], "fma_peak_gflops": fma,
                       "torch_version": torch.__version__, "date": time.strftime("%Y-%m-%d"),
                       "cpu": cpu_name(), "complete": complete, "results": rows}, f, indent=2)
        os.replace(a.out + ".tmp", a.out)

    with tempfile.TemporaryDirectory() as tmp:
        data = data_file(build, tmp)
        print(f"{'model':<13} {'prec':<5} {'moe tok/s':>10} {'peer tok/s':>10} {'ratio':>6} {'cpu ratio':>9} {'MFU fp32pk':>10} "
              f"{'MFU bf16mm':>10} {'sparsity moe/peer':>17} {'moe MB':>7} {'peer MB':>8}")
        for name in a.models.split(","):
            for r in bench_model(build, name, MODELS[name], data, a.steps, a.repeats, a.threads,
                                 a.warm_steps, tmp, precisions, native_bf16):
                flops = r["flops_per_token"] * r["moe_tokens_per_s"]
                r["mfu_fp32_peak"] = flops / (fma * 1e9) if fma else 0.0
                r["mfu_bf16_dot_peak"] = flops / (dot * 1e9) if dot else 0.0
                r["mfu_bf16_matmul_best"] = flops / (amx * 1e9) if amx else 0.0
                r["torch_mfu_fp32_peak"] = r["flops_per_token"] * r["torch_tokens_per_s"] / (fma * 1e9) if fma else 0.0
                rows.append(r)
                mfu2 = f"{100 * r['mfu_bf16_matmul_best']:>9.0f}%" if r["precision"] != "fp32" and amx else f"{'-':>10}"
                print(f"{name:<13} {r['precision']:<5} {r['moe_tokens_per_s']:>10.0f} {r['torch_tokens_per_s']:>10.0f} "
                      f"{r['ratio']:>5.2f}x {r['cpu_ratio']:>8.2f}x {100 * r['mfu_fp32_peak']:>9.0f}% {mfu2} "
                      f"{r['sparsity']:>5.3f}/{r['torch_sparsity']:.3f} {r['moe_peak_mb']:>7.0f} "
                      f"{r['torch_peak_mb']:>8.0f}", flush=True)
                save(rows, complete=False)
    save(rows, complete=True)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
