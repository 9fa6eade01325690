"""moe_step_speed.py — a ReMoE training step against a TopK step at the same
sparsity (METHOD §4: the paper reports ReMoE within about 2% of TopK
throughput). Both models (the demo size: hidden 128, 4 layers, E=8, k=1) are
first trained until ReMoE's sparsity has settled near 0.875 (stage III);
then, in --rounds interleaved rounds, each resumes from its settled
checkpoint for --measure steps; the medians of all those step times are
compared (the first resumed step, which allocates, is left out).
Prints a table and writes JSON.

  python3 bench/moe_step_speed.py [--build build] [--settle 200] [--measure 20] [--rounds 3]"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from train_speed import DEMO, data_file  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--settle", type=int, default=200)
    ap.add_argument("--measure", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench/results/moe_step_speed.json"))
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = data_file(build, tmp)
        settled = {}
        for router in ("relu", "topk"):  # both trained to stage III first
            cfg = dict(DEMO, ffn="moe", router=router, n_experts=8, top_k=1, steps=a.settle, lr=1e-3, warmup=20)
            path = os.path.join(tmp, router + ".json")
            json.dump(cfg, open(path, "w"))
            settled[router] = os.path.join(tmp, router)
            subprocess.run([f"{build}/moe", "train", "--config", path, "--data", data, "--out", settled[router],
                            "--threads", str(a.threads)], check=True, capture_output=True)
        seconds = {"relu": [], "topk": []}
        sparsity = {"relu": [], "topk": []}
        for rnd in range(a.rounds):  # interleaved rounds from the settled checkpoints
            for router in ("relu", "topk"):
                run = os.path.join(tmp, f"{router}.{rnd}")
                shutil.copytree(settled[router], run)
                subprocess.run([f"{build}/moe", "train", "--resume", run, "--data", data, "--threads",
                                str(a.threads), "--steps", str(a.settle + a.measure)], check=True,
                               capture_output=True)
                m = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))][a.settle + 1:]
                seconds[router] += [r["seconds"] for r in m]
                sparsity[router] += [r["sparsity"] for r in m]
        for router in ("relu", "topk"):
            rows[router] = {"median_step_s": statistics.median(seconds[router]),
                            "mean_sparsity": statistics.mean(sparsity[router]),
                            "tokens_per_step": DEMO["batch_size"] * DEMO["seq_len"]}
    ratio = rows["relu"]["median_step_s"] / rows["topk"]["median_step_s"]
    print(f"{'router':<8} {'step ms':>8} {'sparsity':>9} {'tok/s':>8}")
    for r, v in rows.items():
        print(f"{r:<8} {v['median_step_s'] * 1e3:>8.1f} {v['mean_sparsity']:>9.3f} "
              f"{v['tokens_per_step'] / v['median_step_s']:>8.0f}")
    print(f"ReMoE step / TopK step: {ratio:.3f}x (goal <= 1.05x)")
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    json.dump({"benchmark": "moe_step_speed", "settle_steps": a.settle, "measured_steps": a.measure,
               "rounds": a.rounds,
               "threads": a.threads, "date": time.strftime("%Y-%m-%d"), "results": rows,
               "relu_over_topk": ratio}, open(a.out, "w"), indent=2)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
