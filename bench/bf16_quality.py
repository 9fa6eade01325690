"""bf16_quality.py — does bf16 mixed precision train as well as fp32?
Trains the demo configs (configs/demo_topk.json, configs/demo_remoe.json) in
both precisions with several seeds, evaluates each final checkpoint on the
validation split, and checks the two criteria of docs/PERFORMANCE.md:

  * mean final validation loss of bf16 within 1% of fp32's (per config);
  * ReMoE: mean sparsity over the last 100 steps within +-0.02 of the target
    (1 - top_k / n_experts), in each precision.

Prints a table, writes JSON (every run's numbers) and an SVG figure (mean
training loss per step and ReMoE sparsity, both precisions).

  /usr/bin/python3 bench/bf16_quality.py [--build build] [--steps 1000]
      [--seeds 1,2,3] [--batch B] [--seq T] [--threads 1] [--jobs 2]
      [--out bench/results/bf16_quality.json] [--svg docs/bf16_quality.svg]

--batch / --seq override the configs' (16 x 128) to fit a run into the time
at hand; the JSON records what was used. Runs go --jobs at a time with
--threads threads each."""
import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = "/usr/bin/python3"


def data_files(build, work):
    """train.tok and valid.tok of the small corpus with a 4096-id BPE."""
    subprocess.run([PY, os.path.join(ROOT, "tools/build_corpus.py"), "--profile", "small", "--quiet"],
                   check=True, cwd=ROOT, capture_output=True)
    corpus = os.path.join(ROOT, "data/corpus/small")
    tok = os.path.join(work, "tok.moe")
    if not os.path.exists(tok):
        subprocess.run([f"{build}/moe", "tokenizer", "train", "--input", f"{corpus}/train.jsonl",
                        "--vocab", "4096", "--out", tok], check=True, capture_output=True)
    out = {}
    for split in ("train", "valid"):
        out[split] = os.path.join(work, f"{split}.tok")
        if not os.path.exists(out[split]):
            subprocess.run([f"{build}/moe", "prepare", "--input", f"{corpus}/{split}.jsonl",
                            "--tokenizer", tok, "--out", out[split]], check=True, capture_output=True)
    return out


def one_run(a, data, work, cfg_path, seed, prec):
    name = f"{os.path.basename(cfg_path)[:-5]}-{prec}-s{seed}"
    run = os.path.join(work, name)
    if a.partial and not os.path.exists(os.path.join(run, "eval.json")):
        return None
    if not os.path.exists(os.path.join(run, "eval.json")):
        subprocess.run(["rm", "-rf", run])
        cmd = [f"{a.build}/moe", "train", "--config", cfg_path, "--data", data["train"], "--out", run,
               "--steps", str(a.steps), "--seed", str(seed), "--precision", prec,
               "--threads", str(a.threads), "--checkpoint-every", "0"]
        if a.batch: cmd += ["--batch", str(a.batch)]
        if a.seq: cmd += ["--seq", str(a.seq)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode:
            sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
        ev = [f"{a.build}/moe", "eval", "--model", run, "--data", data["valid"], "--precision", prec,
              "--threads", str(a.threads), "--json", os.path.join(run, "eval.json")]
        if a.eval_tokens: ev += ["--max-tokens", str(a.eval_tokens)]
        p = subprocess.run(ev, capture_output=True, text=True)
        if p.returncode:
            sys.exit(f"{' '.join(ev)} failed:\n{p.stderr[-2000:]}")
    with open(os.path.join(run, "eval.json")) as f:
        val = json.load(f)["data"][0]["loss"]
    steps = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))]
    last = steps[-100:]
    return {"config": os.path.basename(cfg_path), "precision": prec, "seed": seed,
            "val_loss": val, "final_train_loss": steps[-1]["lm_loss"],
            "sparsity_last100": statistics.fmean(s["sparsity"] for s in last),
            "lm_loss": [s["lm_loss"] for s in steps], "sparsity": [s["sparsity"] for s in steps],
            "seconds": sum(s["seconds"] for s in steps)}


def smooth(xs, w=20):
    out, acc = [], 0.0
    for i, x in enumerate(xs):
        acc += x
        if i >= w: acc -= xs[i - w]
        out.append(acc / min(i + 1, w))
    return out


def svg(results, configs, path):
    """Two panels per config: mean training loss (smoothed over 20 steps)
    and sparsity, fp32 and bf16."""
    W, H, pad = 420, 220, 45
    colors = {"fp32": "#1f77b4", "bf16": "#d62728"}
    panels = []
    for c in configs:
        panels.append((c, "lm_loss", "training loss (mean of seeds, 20-step mean)"))
        if "remoe" in c: panels.append((c, "sparsity", "sparsity (mean of seeds)"))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W * len(panels)}" height="{H + 30}" '
           'font-family="sans-serif" font-size="11">']
    for pi, (c, key, title) in enumerate(panels):
        x0 = pi * W
        curves = {}
        for prec in ("fp32", "bf16"):
            runs = [r[key] for r in results if r["config"] == c and r["precision"] == prec]
            if not runs: continue
            n = min(len(r) for r in runs)
            mean = [statistics.fmean(r[i] for r in runs) for i in range(n)]
            curves[prec] = smooth(mean) if key == "lm_loss" else mean
        allv = [v for cv in curves.values() for v in cv[len(cv) // 20:]]
        lo, hi = min(allv), max(allv)
        if hi - lo < 1e-9: hi = lo + 1
        n = max(len(cv) for cv in curves.values())
        sx = lambda i: x0 + pad + (W - pad - 10) * i / max(n - 1, 1)
        sy = lambda v: 20 + (H - 40) * (1 - (min(max(v, lo), hi) - lo) / (hi - lo))
        out.append(f'<text x="{x0 + pad}" y="14">{c}: {title}</text>')
        out.append(f'<rect x="{x0 + pad}" y="20" width="{W - pad - 10}" height="{H - 40}" fill="none" stroke="#999"/>')
        for v in (lo, (lo + hi) / 2, hi):
            out.append(f'<text x="{x0 + 2}" y="{sy(v) + 4:.1f}">{v:.3f}</text>')
        out.append(f'<text x="{x0 + pad}" y="{H - 5}">step 1</text><text x="{x0 + W - 60}" y="{H - 5}">step {n}</text>')
        for prec, cv in curves.items():
            pts = " ".join(f"{sx(i):.1f},{sy(v):.1f}" for i, v in enumerate(cv))
            out.append(f'<polyline points="{pts}" fill="none" stroke="{colors[prec]}" stroke-width="1.2"/>')
        for k, prec in enumerate(curves):
            out.append(f'<text x="{x0 + W - 60}" y="{36 + 14 * k}" fill="{colors[prec]}">{prec}</text>')
    out.append(f'<text x="5" y="{H + 22}">bench/bf16_quality.py: mean over seeds; '
               'see bench/results/bf16_quality.json</text></svg>')
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--configs", default="configs/demo_topk.json,configs/demo_remoe.json")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=0)
    ap.add_argument("--seq", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--eval-tokens", type=int, default=0)
    ap.add_argument("--work", default="")
    ap.add_argument("--partial", action="store_true",
                    help="only summarise the runs of --work that have finished")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench/results/bf16_quality.json"))
    ap.add_argument("--svg", default=os.path.join(ROOT, "docs/bf16_quality.svg"))
    a = ap.parse_args()
    a.build = os.path.abspath(a.build)
    work = a.work or tempfile.mkdtemp(prefix="bf16q-")
    os.makedirs(work, exist_ok=True)
    data = data_files(a.build, work)
    configs = [os.path.join(ROOT, c) for c in a.configs.split(",")]
    seeds = [int(s) for s in a.seeds.split(",")]
    jobs = [(c, s, p) for c in configs for s in seeds for p in ("fp32", "bf16")]
    with concurrent.futures.ThreadPoolExecutor(a.jobs) as ex:
        results = [r for r in ex.map(lambda j: one_run(a, data, work, *j), jobs) if r]
    summary, ok_all = [], True
    print(f"{'config':<18} {'precision':<9} {'val loss (mean)':>16} {'seeds':>26} {'sparsity last 100':>18}")
    for c in configs:
        name = os.path.basename(c)
        cfg = json.load(open(c))
        target = 1 - cfg.get("top_k", 1) / cfg.get("n_experts", 8)
        row = {"config": name}
        for prec in ("fp32", "bf16"):
            rs = [r for r in results if r["config"] == name and r["precision"] == prec]
            if not rs:
                rs = [{"val_loss": float("nan"), "sparsity_last100": float("nan")}]
            vals = [r["val_loss"] for r in rs]
            sp = statistics.fmean(r["sparsity_last100"] for r in rs)
            row[prec] = {"val_loss_mean": statistics.fmean(vals), "val_loss": vals, "sparsity_last100": sp}
            print(f"{name:<18} {prec:<9} {statistics.fmean(vals):>16.4f} "
                  f"{' '.join(f'{v:.4f}' for v in vals):>26} {sp:>18.4f}")
        rel = row["bf16"]["val_loss_mean"] / row["fp32"]["val_loss_mean"] - 1
        row["bf16_vs_fp32_rel"] = rel
        row["loss_within_1pct"] = abs(rel) <= 0.01
        ok = row["loss_within_1pct"]
        if cfg.get("router") == "relu":
            row["sparsity_target"] = target
            row["sparsity_ok"] = all(abs(row[p]["sparsity_last100"] - target) <= 0.02 for p in ("fp32", "bf16"))
            ok = ok and row["sparsity_ok"]
        row["pass"] = ok
        ok_all = ok_all and ok
        summary.append(row)
        print(f"  bf16 / fp32 validation loss: {rel * 100:+.2f}%  ->  {'PASS' if ok else 'FAIL'}")
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"steps": a.steps, "runs_finished": len(results), "runs_planned": len(jobs), "seeds": seeds, "batch": a.batch or "config", "seq": a.seq or "config",
                   "threads": a.threads, "jobs": a.jobs, "eval_tokens": a.eval_tokens or "all",
                   "pass": ok_all, "summary": summary,
                   "runs": [{k: v for k, v in r.items() if k not in ("lm_loss", "sparsity")} for r in results],
                   "curves": {f"{r['config']}-{r['precision']}-s{r['seed']}":
                              {"lm_loss": r["lm_loss"], "sparsity": r["sparsity"]} for r in results}},
                  f, indent=1)
    svg(results, [os.path.basename(c) for c in configs], a.svg)
    print(f"wrote {a.out} and {a.svg}; overall {'PASS' if ok_all else 'FAIL'}")


if __name__ == "__main__":
    main()
