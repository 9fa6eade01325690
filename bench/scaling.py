#!/usr/bin/env python3
"""scaling.py — training across processes against threads (docs/DISTRIBUTED.md):
tokens/s, per-rank peak memory, the share of step time spent in collectives,
and bytes sent per step (measured, and the model of docs/DISTRIBUTED.md
beside it), on the hidden-512 TopK and ReMoE configs of bench/train_speed.py.

For each model:  1 rank x 1 thread, 1 rank x 2 threads, and 2 ranks x 1
thread with data parallel (DP), expert parallel 2 (EP) and ZeRO-1. The ratio
column is tokens/s against 1 rank x 2 threads measured in the same run (the
target: 2 ranks x 1 thread >= 0.9x). ReMoE starts past stage I (a short
warm-up run, as bench/train_speed.py does), so its experts are sparse.

The gradient sum and the optimizer cost the same per optimiser step however
many tokens the step has, so their share, and with it the ratio, depends on
the tokens per step: --grad-accum G runs G micro-batches of 8 x 256 tokens
per step (the papers' steps hold 0.5M tokens).

Usage: bench/scaling.py --build build [--steps 4] [--grad-accum 1] [--out bench/results/scaling.json]"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import moe_files  # noqa: E402

H512 = {"vocab_size": 4096, "hidden": 512, "n_layers": 8, "n_heads": 8, "n_kv_heads": 4,
        "max_seq_len": 256, "batch_size": 8, "seq_len": 256, "lr": 1e-3, "warmup": 0,
        "ffn": "moe", "n_experts": 8, "top_k": 1}
# ReMoE starts at lambda_0 = 1e-4 so that a short warm-up reaches sparse routing
MODELS = {"topk-h512": dict(H512, router="topk"), "remoe-h512": dict(H512, router="relu", relu_lambda0=1e-4)}
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
RANKS_LINE = re.compile(r"per rank: collectives (.*) of the step time; sent per step (.*); peak memory (.*)")


def run(cmd, threads):
    """Runs cmd with OMP_NUM_THREADS=threads; returns (stderr, peak RSS of the
    process tree's largest process in MiB, from wait4 for one process)."""
    env = dict(ENV, OMP_NUM_THREADS=str(threads))
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, ru = os.wait4(p.pid, 0)
    err = p.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    return err, ru.ru_maxrss / 1024.0


def bytes_model(cfg, n_params, ranks, mode, active_per_token, n_held=None):
    """Bytes one rank sends per step (docs/DISTRIBUTED.md): the gradient sum
    (all-reduce = reduce-scatter + all-gather, or ZeRO-1's reduce-scatter of
    the gradients + all-gather of the weights: the same 2 (P-1)/P of 4 n
    bytes). With EP (E_p = ranks here, one replica of each part) each rank
    holds n_held = the whole tensors + 1/E_p of the routed experts: only the
    whole tensors are summed, over the group, plus the rows of the routed
    pairs that leave the rank: out and back in forward, out and back in
    backward."""
    if ranks == 1:
        return 0.0
    P = ranks
    grads = 2.0 * (P - 1) / P * 4 * n_params
    if mode != "ep":
        return grads
    n_routed = (n_params - n_held) * P / (P - 1)
    whole = 2.0 * (P - 1) / P * 4 * (n_params - n_routed)
    n_local = cfg["batch_size"] * cfg["seq_len"] * cfg.get("grad_accum", 1) / P
    moe_layers = cfg["n_layers"]
    a2a = 4 * (P - 1) / P * n_local * active_per_token * cfg["hidden"] * 4 * moe_layers
    return whole + a2a


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--steps", type=int, default=4, help="steps per run (the first is not timed)")
    ap.add_argument("--warm-steps", type=int, default=40, help="ReMoE warm-up steps (past stage I)")
    ap.add_argument("--models", default="topk-h512,remoe-h512")
    ap.add_argument("--grad-accum", type=int, default=1,
                    help="micro-batches per optimiser step: the gradient sum and the optimizer run once "
                         "per step, so their share of the step falls as this grows")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench/results/scaling.json"))
    a = ap.parse_args()
    moe = os.path.abspath(os.path.join(a.build, "moe"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data.tok")
        moe_files.write_tokens(data, [(i * 2654435761) % 4096 for i in range(400000)], 4096)
        for name in a.models.split(","):
            cfg = dict(MODELS[name], steps=a.steps, grad_accum=a.grad_accum)
            path = os.path.join(tmp, name + ".json")
            with open(path, "w") as f:
                json.dump(cfg, f)
            start = ["--config", path]
            if cfg["router"] == "relu":  # past stage I: sparse experts
                warm = os.path.join(tmp, name + "-warm")
                run([moe, "train", "--config", path, "--data", data, "--out", warm, "--grad-accum", "1", "--batch", "1",
                     "--seq", "64", "--steps", str(a.warm_steps), "--lr", "1e-3"], 2)
                start = ["--model", warm, "--steps", str(a.steps), "--grad-accum", str(a.grad_accum),
                         "--batch", str(cfg["batch_size"]),
                         "--seq", str(cfg["seq_len"])]
            runs = [("1x1", 1, 1, "single", []), ("1x2", 1, 2, "single", []),
                    ("2x1 DP", 2, 1, "dp", []), ("2x1 EP", 2, 1, "ep", ["--expert-parallel", "2"]),
                    ("2x1 ZeRO-1", 2, 1, "zero1", ["--zero-stage", "1"])]
            for label, ranks, threads, mode, flags in runs:
                out = os.path.join(tmp, f"{name}-{mode}-{ranks}x{threads}")
                cmd = [moe, "train"] + start + ["--data", data, "--out", out, "--threads", str(threads)] + flags
                if ranks > 1:
                    cmd = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(ranks)] + cmd
                t0 = time.time()
                err, rss = run(cmd, threads)
                with open(os.path.join(out, "metrics.jsonl")) as f:
                    m = [json.loads(x) for x in f]
                timed = m[1:] if len(m) > 1 else m
                secs = sum(x["seconds"] for x in timed)
                toks = sum(x["tokens"] for x in timed)
                apt = [l["active_per_token"] for x in timed for l in x.get("layers", [])]
                active = sum(apt) / len(apt) if apt else 1.0
                n_params = int(re.search(r"moe train: (\d+) parameters", err).group(1))
                held = re.search(r"parameters, (\d+) held by each rank", err)
                n_held = int(held.group(1)) if held else n_params
                row = {"model": name, "run": label, "ranks": ranks, "threads": threads, "mode": mode,
                       "grad_accum": a.grad_accum,
                       "tokens_per_s": toks / secs, "step_s": secs / len(timed),
                       "active_per_token": active, "n_params": n_params, "n_held": n_held,
                       "model_bytes_per_step": bytes_model(cfg, n_params, ranks, mode, active, n_held),
                       "wall_s": time.time() - t0}
                r = RANKS_LINE.search(err)
                if r:
                    row["comm_share"] = [float(x.rstrip("%")) / 100 for x in r.group(1).split()]
                    row["sent_bytes_per_step"] = [float(x) * 1e6 for x in r.group(2).split(" MB")[0:ranks]]
                    row["peak_mib"] = [float(x) for x in re.findall(r"([\d.]+) MiB", r.group(3))]
                else:
                    row["comm_share"], row["sent_bytes_per_step"], row["peak_mib"] = [0.0], [0.0], [rss]
                rows.append(row)
                print(f"  {name:11s} {label:11s} {row['tokens_per_s']:8.0f} tok/s", flush=True)
                save(a.out, a.steps, rows)
    for name in a.models.split(","):
        ref = next(r for r in rows if r["model"] == name and r["run"] == "1x2")["tokens_per_s"]
        for r in rows:
            if r["model"] == name:
                r["vs_1x2"] = r["tokens_per_s"] / ref
    print("\nmodel        run          tok/s  vs 1x2  comm share   peak MiB/rank    sent MB/step/rank  model MB")
    for r in rows:
        print(f"{r['model']:12s} {r['run']:11s} {r['tokens_per_s']:7.0f}  {r['vs_1x2']:5.2f}x  "
              f"{'/'.join(f'{100 * c:.0f}%' for c in r['comm_share']):10s}  "
              f"{'/'.join(f'{p:.0f}' for p in r['peak_mib']):15s}  "
              f"{'/'.join(f'{b / 1e6:.0f}' for b in r['sent_bytes_per_step']):17s}  "
              f"{r['model_bytes_per_step'] / 1e6:.0f}")
    save(a.out, a.steps, rows)
    print(f"\nwrote {a.out}")


def save(path, steps, rows):
    """The JSON so far (written after every run, so a long study that is
    stopped keeps what it measured)."""
    for r in rows:
        ref = [x["tokens_per_s"] for x in rows if x["model"] == r["model"] and x["run"] == "1x2"]
        if ref:
            r["vs_1x2"] = r["tokens_per_s"] / ref[0]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"steps": steps, "grad_accum": rows[0].get("grad_accum", 1) if rows else 1,
                   "loadavg_at_end": os.getloadavg(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
