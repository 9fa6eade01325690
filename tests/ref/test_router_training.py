# once: a statistical end-to-end check (300 steps per router); every router's code runs under the sanitizers in unit/test_routers and ref/test_parity
"""test_router_training.py — end to end: every router and feed-forward kind
(docs/ROUTERS.md) trains a tiny model on the real small corpus for 300 steps
without diverging. Pass: every loss is finite, no step's loss exceeds the
first step's by more than 0.5, and the mean LM loss of the last 20 steps is
below the unigram entropy of the training tokens (in nats). The unigram
entropy is the loss of the best model that ignores context, so a run below
it has learned to use the context (its routed layers passing useful
gradients); a run that diverged or stalled stays above it (a model at initialisation sits at about ln(vocab) = 5.77 > 4.6).
Runtime: 13 tiny models (hidden 32, 2 layers, 8 experts, 256 tokens per
step), about 2 s each on one thread, two at a time (one per core; two
OpenMP threads on such small matrices are many times slower). Usage: test_router_training.py BUILD_DIR"""
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import moe_files  # noqa: E402

VOCAB = 320
BASE = {"vocab_size": VOCAB, "hidden": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "max_seq_len": 32,
        "ffn_dim": 64, "n_experts": 8, "top_k": 2, "steps": 300, "batch_size": 8, "seq_len": 32,
        "lr": 3e-3, "warmup": 5, "threads": 1}
MOE = {"ffn": "moe"}
CASES = {
    "dense": {"ffn": "dense"},
    "dense_x_E": {"ffn": "dense", "ffn_dim": 64 * 8},                      # Dense x E
    "topk": dict(MOE, router="topk"),                                      # dMoE / SMoE-Top2
    "relu": dict(MOE, router="relu"),                                      # ReMoE
    "topp_shared": dict(MOE, router="topp", n_shared_experts=1),           # TopP
    "hash": dict(MOE, router="hash", top_k=1),                             # Hash
    "learned_hash": dict(MOE, router="learned_hash"),                      # CartesianMoE's Hash
    "expert_choice": dict(MOE, router="expert_choice"),                    # EC (not causal)
    "sparsemixer": dict(MOE, router="sparsemixer"),                        # SparseMixer-v2
    "smoe_share": dict(MOE, router="topk", n_shared_experts=1, shared_gate=True),   # SMoE-Share
    "fine_grained_shared": dict(MOE, router="topk", granularity=2, top_k=1, n_shared_experts=1),
    "cartesian": {"ffn": "cartesian", "router": "topk"},                   # CartesianMoE top-(2+2)
    "lory": {"ffn": "lory", "lory_segment": 8},                            # Lory
}


def data(build, tmp):
    """Small corpus (built from packages if missing), a 320-id tokenizer, train tokens."""
    train = os.path.join(ROOT, "data/corpus/small/train.jsonl")
    if not os.path.exists(train):
        subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "tools/build_corpus.py"), "--profile", "small",
                        "--quiet"], check=True, cwd=ROOT)
    tok, out = os.path.join(tmp, "tok"), os.path.join(tmp, "train.tok")
    subprocess.run([f"{build}/moe", "tokenizer", "train", "--input", train, "--vocab", str(VOCAB), "--out", tok],
                   check=True, capture_output=True)
    subprocess.run([f"{build}/moe", "prepare", "--input", train, "--tokenizer", tok, "--out", out],
                   check=True, capture_output=True)
    return out


def unigram_entropy(path):
    ids = moe_files.read_tokens(path)["ids"]
    p = np.bincount(ids).astype(np.float64)
    p = p[p > 0] / len(ids)
    return float(-(p * np.log(p)).sum())


def main():
    build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
    names = sys.argv[2:] or list(CASES)
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        tokens = data(build, tmp)
        H = unigram_entropy(tokens)
        print(f"# unigram entropy of the training tokens: {H:.4f} nats")
        procs = {}
        for i, name in enumerate(names):  # two runs at a time
            cfg = dict(BASE, **CASES[name])
            path = os.path.join(tmp, name + ".json")
            with open(path, "w") as f:
                json.dump(cfg, f)
            procs[name] = subprocess.Popen([f"{build}/moe", "train", "--config", path, "--data", tokens,
                                            "--out", os.path.join(tmp, name)],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if i % 2 == 1 or i + 1 == len(names):
                for p in procs.values():
                    p.wait()
        for name in names:
            cfg = dict(BASE, **CASES[name])
            r = procs[name]
            problems = []
            recs = []
            if r.returncode != 0:
                problems.append(f"moe train failed: {r.stderr.read().strip()[-300:]}")
            else:
                with open(os.path.join(tmp, name, "metrics.jsonl")) as f:
                    recs = [json.loads(line) for line in f]
            r.stderr.close()
            losses = [rec["lm_loss"] for rec in recs]
            if recs and len(recs) != cfg["steps"]:
                problems.append(f"{len(recs)} metric lines, expected {cfg['steps']}")
            if any(not math.isfinite(rec["loss"]) for rec in recs):
                problems.append("a loss is not finite")
            if losses and max(losses) > losses[0] + 0.5:
                problems.append(f"diverged: max loss {max(losses):.3f}, first {losses[0]:.3f}")
            last = float(np.mean(losses[-20:])) if losses else float("nan")
            if not last < H:
                problems.append(f"mean loss of the last 20 steps {last:.4f} is not below the unigram entropy {H:.4f}")
            sparsity = recs[-1].get("sparsity") if recs else None
            summary = f"first {losses[0]:.3f}, last-20 mean {last:.4f}" if losses else ""
            if sparsity is not None:
                summary += f", sparsity {sparsity:.3f}"
            if problems:
                failed += 1
                print(f"FAIL train_{name} ({summary})")
                for p in problems:
                    print("   ", p)
            else:
                passed += 1
                print(f"ok   train_{name} ({summary})")
        # routing robustness (CartesianMoE table 4) on the trained Cartesian and TopK models:
        # dropping each token's top expert must cost perplexity, and both numbers are finite
        for name in [n for n in ("cartesian", "topk") if n in names]:
            out = os.path.join(tmp, name + ".eval.json")
            r = subprocess.run([f"{build}/moe", "eval", "--model", os.path.join(tmp, name), "--data", tokens,
                                "--robustness", "--max-tokens", "4096", "--json", out],
                               capture_output=True, text=True)
            ok = r.returncode == 0
            detail = r.stderr.strip()[-200:]
            if ok:
                d = json.load(open(out))["data"][0]
                ppl, drop = d["ppl"], d["robustness"]["ppl"]
                ok = math.isfinite(ppl) and math.isfinite(drop) and drop > ppl
                detail = f"ppl {ppl:.2f} -> {drop:.2f} without the top expert"
            passed, failed = passed + ok, failed + (not ok)
            print(f"{'ok  ' if ok else 'FAIL'} robustness_{name} ({detail})")
    print(f"# {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
