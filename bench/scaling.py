#!/usr/bin/env python3
"""scaling.py — training across processes against threads (docs/DISTRIBUTED.md):
tokens/s, per-rank peak memory, the share of step time spent in collectives,
and bytes sent per step (measured, and the model of docs/DISTRIBUTED.md
beside it), on the hidden-512 TopK and ReMoE configs of bench/train_speed.py.

For each model:  1 rank x 1 thread, 1 rank x 2 threads, and 2 ranks x 1
thread with data parallel (DP), expert parallel 2 (EP: with its experts
placed by load, the default; and "EP contiguous", rebalance_experts 0, each
rank holding a fixed block of experts) and ZeRO-1. The ratio
column is tokens/s against 1 rank x 2 threads measured in the same run (the
target: 2 ranks x 1 thread >= 0.9x): the ratio of the medians, and
"paired", the median of each round's ratio against that round's 1x2 run.
"2x1 apart" is two one-thread
processes that train at the same time and never communicate (their
tokens/s added): what two processes can reach on this machine at all, with
its two cores sharing caches and one memory bus, and the ceiling of every
two-rank row.

Where the runs start: a model in the state a training run spends its time
in, on real text (the small corpus with a 4096-id tokenizer, as
bench/train_speed.py builds it). Each model first trains --warm-steps
steps of 4 x 128 tokens after a 20-step learning-rate warm-up: ReMoE gets
past its near-dense stage I, and TopK's load-balancing loss spreads the
tokens over the experts. Expert parallel waits for the rank whose experts
got the most rows, so its speed follows that balance: from init, on an
arithmetic token stream and with no learning-rate warm-up (this benchmark
before), TopK's routing collapsed onto one or two experts within three
steps (measured), which no training run with a warm-up sees. The timed runs load
that checkpoint with a fresh optimizer at the start of a long learning-rate
warm-up, so the few timed steps keep the warm-up's routing (a fresh AdamW's
first steps move every weight by about lr). The column "balance" is
expert parallel's bound from the routing: over the layers, the mean of the
two ranks' expert rows over the larger (1.0 = even). In the EP row it is the
balance the run had under its placement (logged by the run: the experts
are placed after the first, untimed, step); in the others, that of
contiguous blocks (exact in the one-process rows, estimated from rank 0's
tokens in the two-rank rows).

The gradient sum and the optimizer cost the same per optimiser step however
many tokens the step has, so their share, and with it the ratio, depends on
the tokens per step: --grad-accum 1,4 measures 1 and 4 micro-batches of
8 x 256 tokens per step (the papers' steps hold 0.5M tokens).

The machine is shared with others' work that this process cannot see
(the same run measured twice moved by up to 20 %), so each row is the median
of --repeats rounds, and a round runs every configuration once, each round
starting one configuration later than the one before.

Usage: bench/scaling.py --build build [--steps 4] [--repeats 3] [--warm-steps 150] [--grad-accum 1,4]
       [--out bench/results/scaling.json]"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import train_speed  # noqa: E402

H512 = {"vocab_size": 4096, "hidden": 512, "n_layers": 8, "n_heads": 8, "n_kv_heads": 4,
        "max_seq_len": 256, "batch_size": 8, "seq_len": 256, "lr": 1e-3, "warmup": 0,
        "ffn": "moe", "n_experts": 8, "top_k": 1}
# ReMoE starts at lambda_0 = 1e-4 so that a short warm-up reaches sparse routing
WARM = {"batch": 4, "seq": 128, "lr_warmup": 20}
MODELS = {"topk-h512": dict(H512, router="topk"), "remoe-h512": dict(H512, router="relu", relu_lambda0=1e-4)}
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
RANKS_LINE = re.compile(r"per rank: collectives (.*) of the step time; sent per step (.*); peak memory (.*)")


def run(cmds, threads):
    """Runs the commands cmds at once with OMP_NUM_THREADS=threads; returns
    (stderr of the first, peak RSS in MiB of its largest process, from wait4
    for one process)."""
    env = dict(ENV, OMP_NUM_THREADS=str(threads))
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env) for c in cmds]
    got = []
    for p in procs:
        _, status, ru = os.wait4(p.pid, 0)
        err = p.stderr.read().decode()
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"{' '.join(p.args)} failed:\n{err[-2000:]}")
        got.append((err, ru.ru_maxrss / 1024.0))
    return got[0]


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


def ep_balance(steps, P):
    """Expert parallel's bound from the routing in metrics.jsonl records
    (each step's last micro-batch) if P ranks own the experts in contiguous
    blocks (rebalance_experts 0): every layer waits for the rank with the
    most expert rows, so the share of the expert work done in parallel is,
    over the layers, the sum of the ranks' mean over the sum of their
    maximum; averaged over steps. 1.0 when every rank gets as many rows;
    from a multi-rank run only rank 0's rows are recorded (an estimate).
    An expert-parallel run logs the balance it had ("ep_balance": every
    rank's rows, under the placement it ran on), which measure() prefers."""
    out = []
    for x in steps:
        mean = most = 0.0
        for layer in x.get("layers", []):
            n = layer.get("tokens_per_expert")
            if not n or len(n) % P:
                continue
            per = [sum(n[q * len(n) // P:(q + 1) * len(n) // P]) for q in range(P)]
            mean += sum(per) / P
            most += max(per)
        if most > 0:
            out.append(mean / most)
    return sum(out) / len(out) if out else 1.0


RUNS = [("1x1", 1, 1, "single", []), ("1x2", 1, 2, "single", []),
        ("2x1 DP", 2, 1, "dp", []), ("2x1 EP", 2, 1, "ep", ["--expert-parallel", "2"]),
        ("2x1 EP contiguous", 2, 1, "ep", ["--expert-parallel", "2", "--rebalance-experts", "0"]),
        ("2x1 ZeRO-1", 2, 1, "zero1", ["--zero-stage", "1"]), ("2x1 apart", 1, 1, "apart", [])]


def warm_up(moe, name, path, data, steps, tmp):
    """The checkpoint the timed runs start from (see the top of the file)."""
    warm = os.path.join(tmp, name + "-warm")
    t0 = time.time()
    run([[moe, "train", "--config", path, "--data", data, "--out", warm, "--grad-accum", "1",
          "--batch", str(WARM["batch"]), "--seq", str(WARM["seq"]), "--steps", str(steps),
          "--warmup", str(WARM["lr_warmup"]), "--checkpoint-every", "0"]], 2)
    with open(os.path.join(warm, "metrics.jsonl")) as f:
        last = [json.loads(x) for x in f][-10:]
    print(f"  ({name}: {steps} warm-up steps of {WARM['batch']}x{WARM['seq']} tokens in "
          f"{time.time() - t0:.0f} s; over the last 10: loss {sum(x['loss'] for x in last) / len(last):.3f}, "
          f"sparsity {sum(x['sparsity'] for x in last) / len(last):.3f}, "
          f"expert-parallel balance {ep_balance(last, 2):.2f})", flush=True)
    return warm


def measure(cmds, outs, ranks, threads):
    """One timed run: tokens/s over its steps but the first, the routing's
    balance and active experts, and the ranks' line (collectives, bytes,
    peak memory) where there is one. Several commands (writing to outs) run
    at once, their tokens/s added."""
    err, rss = run(cmds, threads)
    tokens_per_s, timed = 0.0, []
    for o in outs:
        with open(os.path.join(o, "metrics.jsonl")) as f:
            m = [json.loads(x) for x in f]
        shutil.rmtree(o)  # a checkpoint of this size is 2.5 GB
        timed = m[1:] if len(m) > 1 else m
        tokens_per_s += sum(x["tokens"] for x in timed) / sum(x["seconds"] for x in timed)
    apt = [l["active_per_token"] for x in timed for l in x.get("layers", [])]
    held = re.search(r"parameters, (\d+) held by each rank", err)
    logged = [x["ep_balance"] for x in timed if "ep_balance" in x]
    res = {"tokens_per_s": tokens_per_s,
           "active_per_token": sum(apt) / len(apt) if apt else 1.0,
           "ep_balance_contiguous": ep_balance(timed, 2),
           "ep_balance": sum(logged) / len(logged) if logged else ep_balance(timed, 2),
           "experts_moved": sum(x.get("experts_moved", 0) for x in m),
           "n_params": int(re.search(r"moe train: (\d+) parameters", err).group(1))}
    res["n_held"] = int(held.group(1)) if held else res["n_params"]
    r = RANKS_LINE.search(err)
    if r:
        res["comm_share"] = [float(x.rstrip("%")) / 100 for x in r.group(1).split()]
        res["sent_bytes_per_step"] = [float(x) * 1e6 for x in r.group(2).split(" MB")[0:ranks]]
        res["peak_mib"] = [float(x) for x in re.findall(r"([\d.]+) MiB", r.group(3))]
    else:
        res["comm_share"], res["sent_bytes_per_step"], res["peak_mib"] = [0.0], [0.0], [rss]
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--steps", type=int, default=4, help="steps per run (the first is not timed)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="rounds over the runs (interleaved, so that a slow spell of the machine hits every "
                         "run alike); each row is the median")
    ap.add_argument("--warm-steps", type=int, default=150,
                    help="warm-up steps before the timed runs (ReMoE past stage I, TopK's loads balanced)")
    ap.add_argument("--models", default="topk-h512,remoe-h512")
    ap.add_argument("--grad-accum", default="1,4",
                    help="micro-batches per optimiser step, a list: the gradient sum and the optimizer run "
                         "once per step, so their share of the step falls as this grows")
    ap.add_argument("--runs", default=",".join(r[0] for r in RUNS),
                    help="which runs, by label (1x2 is always measured: the ratios are against it)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench/results/scaling.json"))
    a = ap.parse_args()
    wanted = set(a.runs.split(",")) | {"1x2"}
    runs = [r for r in RUNS if r[0] in wanted]
    WARM["steps"] = a.warm_steps
    moe = os.path.abspath(os.path.join(a.build, "moe"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = train_speed.data_file(os.path.dirname(moe), tmp)
        for name in a.models.split(","):
            path = os.path.join(tmp, name + ".json")
            with open(path, "w") as f:
                json.dump(MODELS[name], f)
            warm = warm_up(moe, name, path, data, a.warm_steps, tmp)
            for accum in [int(x) for x in a.grad_accum.split(",")]:
                cfg = dict(MODELS[name], grad_accum=accum)
                # timed: full batches, at the start of a long learning-rate warm-up
                start = ["--model", warm, "--steps", str(a.steps), "--grad-accum", str(accum),
                         "--batch", str(cfg["batch_size"]), "--seq", str(cfg["seq_len"]), "--warmup", "100000"]
                got = {label: [] for label, *_ in runs}
                for rep in range(a.repeats):
                    # each round starts one run later, so that a machine
                    # speeding up or slowing down over a study does not favour
                    # the runs that always come late in a round
                    for label, ranks, threads, mode, flags in runs[rep % len(runs):] + runs[:rep % len(runs)]:
                        out = os.path.join(tmp, f"{name}-{mode}-{ranks}x{threads}")
                        # "apart": two one-process runs at once that never talk
                        outs = [f"{out}-{i}" for i in range(2)] if mode == "apart" else [out]
                        mpi = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(ranks)] if ranks > 1 else []
                        cmds = [mpi + [moe, "train"] + start + ["--data", data, "--out", o, "--threads", str(threads)]
                                + flags for o in outs]
                        got[label].append(measure(cmds, outs, ranks, threads))
                        print(f"  {name:11s} accum {accum} {label:17s} round {rep + 1}: "
                              f"{got[label][-1]['tokens_per_s']:6.0f} tok/s", flush=True)
                for label, ranks, threads, mode, flags in runs:
                    by_speed = sorted(got[label], key=lambda x: x["tokens_per_s"])
                    # the median; of an even count of rounds, the lower middle
                    row = dict(by_speed[(len(by_speed) - 1) // 2], model=name, run=label, ranks=ranks,
                               threads=threads, mode=mode,
                               grad_accum=accum, tokens_per_s_runs=[x["tokens_per_s"] for x in got[label]])
                    row["model_bytes_per_step"] = bytes_model(cfg, row["n_params"], ranks, mode,
                                                              row["active_per_token"], row["n_held"])
                    rows.append(row)
                save(a.out, a.steps, rows)
            shutil.rmtree(warm)
    print("\nmodel       accum run                tok/s  vs 1x2  paired  balance  comm share   peak MiB/rank    "
          "sent MB/step/rank  model MB")
    for r in rows:
        print(f"{r['model']:12s} {r['grad_accum']:4d} {r['run']:17s} {r['tokens_per_s']:7.0f}  {r['vs_1x2']:5.2f}x  {r['vs_1x2_paired']:5.2f}x  "
              f"{r['ep_balance']:7.2f}  {'/'.join(f'{100 * c:.0f}%' for c in r['comm_share']):10s}  "
              f"{'/'.join(f'{p:.0f}' for p in r['peak_mib']):15s}  "
              f"{'/'.join(f'{b / 1e6:.0f}' for b in r['sent_bytes_per_step']):17s}  "
              f"{r['model_bytes_per_step'] / 1e6:.0f}")
    print(f"\nwrote {a.out}")


def save(path, steps, rows):
    """The JSON so far (written after each model's runs at one step size, so
    a long study that is stopped keeps what it measured)."""
    for r in rows:
        ref = [x for x in rows if x["model"] == r["model"] and x["grad_accum"] == r["grad_accum"] and x["run"] == "1x2"]
        if ref:
            r["vs_1x2"] = r["tokens_per_s"] / ref[0]["tokens_per_s"]
            # paired: each round's ratio against the 1x2 run of the same
            # round (minutes apart, so a slow spell of the machine hits both)
            pairs = sorted(a / b for a, b in zip(r["tokens_per_s_runs"], ref[0]["tokens_per_s_runs"]))
            r["vs_1x2_rounds"] = [a / b for a, b in zip(r["tokens_per_s_runs"], ref[0]["tokens_per_s_runs"])]
            r["vs_1x2_paired"] = pairs[(len(pairs) - 1) // 2]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"steps": steps, "warm": WARM, "loadavg_at_end": os.getloadavg(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
