"""moe_step_speed.py — a ReMoE training step against a TopK step at the same
sparsity (SPEC §4: the paper reports ReMoE within about 2% of TopK
throughput). Both models (the demo size: hidden 128, 4 layers, E=8, k=1) are
first trained until ReMoE's sparsity has settled near 0.875 (stage III);
then both train --measure more steps and the median step time is compared.
Prints a table and writes JSON.

  python3 bench/moe_step_speed.py [--build build] [--settle 250] [--measure 30]"""
import argparse
import json
import os
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
    ap.add_argument("--settle", type=int, default=250)
    ap.add_argument("--measure", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench/results/moe_step_speed.json"))
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = data_file(build, tmp)
        total = a.settle + a.measure
        for router in ("relu", "topk"):
            cfg = dict(DEMO, ffn="moe", router=router, n_experts=8, top_k=1, steps=total, lr=1e-3, warmup=20,
                       checkpoint_every=a.settle)
            path = os.path.join(tmp, router + ".json")
            json.dump(cfg, open(path, "w"))
            run = os.path.join(tmp, router)
            subprocess.run([f"{build}/moe", "train", "--config", path, "--data", data, "--out", run,
                            "--threads", str(a.threads)], check=True, capture_output=True)
            m = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))][-a.measure:]
            rows[router] = {"median_step_s": statistics.median(r["seconds"] for r in m),
                            "mean_sparsity": statistics.mean(r["sparsity"] for r in m),
                            "tokens_per_step": m[0]["tokens"]}
    ratio = rows["relu"]["median_step_s"] / rows["topk"]["median_step_s"]
    print(f"{'router':<8} {'step ms':>8} {'sparsity':>9} {'tok/s':>8}")
    for r, v in rows.items():
        print(f"{r:<8} {v['median_step_s'] * 1e3:>8.1f} {v['mean_sparsity']:>9.3f} "
              f"{v['tokens_per_step'] / v['median_step_s']:>8.0f}")
    print(f"ReMoE step / TopK step: {ratio:.3f}x (goal <= 1.05x)")
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    json.dump({"benchmark": "moe_step_speed", "settle_steps": a.settle, "measured_steps": a.measure,
               "threads": a.threads, "date": time.strftime("%Y-%m-%d"), "results": rows,
               "relu_over_topk": ratio}, open(a.out, "w"), indent=2)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
