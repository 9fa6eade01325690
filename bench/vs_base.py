#!/usr/bin/python3
"""vs_base.py — moe's training speed at default settings against an earlier
commit of moe (default 008bef5, where issue 25 measured it), both built
here and run on the same machine in one session, interleaved: every round
runs each configuration on both builds, the order of the two builds
alternating between rounds, so drift of the machine favours neither. A
figure is the median over rounds of tokens / (time of all steps but the
first two), from each run's metrics.jsonl. Prints a table and writes JSON.

Configurations (issue 25's target): the ReMoE paper's 182M CPU twin with
TopK (1 thread) and dense (1 thread), and the demo TopK model (2 threads),
each with no precision option, i.e. each build's default.

  bench/vs_base.py [--base COMMIT] [--build build] [--rounds 2] [--steps 40]
                   [--out bench/results/vs_base.json]

The base commit is extracted with `git archive` into .cache/base-COMMIT and
built there once (make build/moe)."""
import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_speed import cpu_name  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = [  # name, config file, threads, steps scale
    ("twin-topk", "configs/paper/remoe/cpu/182m/topk-e8.json", 1, 1.0),
    ("twin-dense", "configs/paper/remoe/cpu/182m/dense.json", 1, 1.0),
    ("demo-topk", "configs/demo_topk.json", 2, 0.5),
]


def build_base(commit):
    d = os.path.join(ROOT, ".cache", f"base-{commit}")
    if not os.path.exists(os.path.join(d, "build", "moe")):
        os.makedirs(d, exist_ok=True)
        arch = subprocess.run(["git", "-C", ROOT, "archive", commit], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", d], input=arch, check=True)
        subprocess.run(["make", "-j2", "build/moe"], cwd=d, check=True, capture_output=True)
    return os.path.join(d, "build")


def data_file(build):
    """data/paper/train.tok, built by scripts/paper-data.sh if missing."""
    subprocess.run([os.path.join(ROOT, "scripts/paper-data.sh"), build], check=True, cwd=ROOT)
    return os.path.join(ROOT, "data/paper/train.tok")


def run(moe, cfg, threads, steps, data, tmp):
    out = tempfile.mkdtemp(dir=tmp)
    r = subprocess.run([moe, "train", "--config", os.path.join(ROOT, cfg), "--data", data, "--out", out,
                        "--steps", str(steps), "--threads", str(threads), "--no-shuffle",
                        "--checkpoint-every", "0"], capture_output=True, text=True,
                       env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    if r.returncode:
        sys.exit(f"{moe} train {cfg} failed:\n{r.stderr[-1500:]}")
    lines = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
    prec = next((l.split("precision ")[1].split()[0] for l in r.stderr.splitlines()
                 if l.startswith("moe train: precision ")), "fp32")
    timed = lines[2:]
    return sum(l["tokens"] for l in timed) / sum(l["seconds"] for l in timed), prec


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="008bef5")
    ap.add_argument("--build", default="build")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench/results/vs_base.json"))
    a = ap.parse_args()
    builds = {"base": os.path.join(build_base(a.base), "moe"), "now": os.path.join(os.path.abspath(a.build), "moe")}
    data = data_file(a.build)
    rates = {(c[0], side): [] for c in CONFIGS for side in builds}
    precision = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(a.rounds):
            for name, cfg, threads, scale in CONFIGS:
                order = ("base", "now") if rnd % 2 == 0 else ("now", "base")
                for side in order:
                    tps, prec = run(builds[side], cfg, threads, max(8, int(a.steps * scale)), data, tmp)
                    rates[name, side].append(tps)
                    precision[name, side] = prec
                    print(f"  round {rnd + 1} {name:11s} {side:4s} {tps:9.0f} tok/s ({prec})", flush=True)
    rows, ratios = [], []
    print(f"\nmoe now against {a.base}, default settings, median of {a.rounds} interleaved rounds, {cpu_name()}")
    print(f"{'config':12s} {'threads':>7s} {'base tok/s':>11s} {'now tok/s':>10s} {'now prec':>8s} {'ratio':>6s}")
    for name, cfg, threads, _ in CONFIGS:
        b, n = statistics.median(rates[name, "base"]), statistics.median(rates[name, "now"])
        ratios.append(n / b)
        rows.append({"config": name, "file": cfg, "threads": threads, "base_tokens_per_s": b,
                     "now_tokens_per_s": n, "now_precision": precision[name, "now"],
                     "base_precision": precision[name, "base"], "ratio": n / b,
                     "rounds": {s: rates[name, s] for s in builds}})
        print(f"{name:12s} {threads:7d} {b:11.0f} {n:10.0f} {precision[name, 'now']:>8s} {n / b:6.2f}")
    geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    print(f"geometric mean of the ratios: {geo:.2f}x (issue 25: >= 1.8x, goal 2.5x)")
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"base": a.base, "cpu": cpu_name(), "machine": platform.node(), "rounds": a.rounds,
                   "rows": rows, "geomean": geo}, f, indent=1)


if __name__ == "__main__":
    main()
