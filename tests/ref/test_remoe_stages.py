# once: a statistical end-to-end check (hundreds of steps); the ReLU router's code runs under the sanitizers in unit/test_moe and ref/test_parity
"""test_remoe_stages.py — end to end: small ReMoE models (E=8, k=1; and
E=16, k=2, G=2: 32 experts of half size, 4 active) trained on the real small corpus go through the three stages of
the ReMoE paper: near-dense early (sparsity < 0.3 within the first 30 steps),
then sparsifying (sparsity passes 0.8), and then holding the target: the mean
sparsity of the last 100 of 300 steps lies within 0.02 of 1 - k/E = 0.875.
Usage: test_remoe_stages.py BUILD_DIR"""
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = {"vocab_size": 1024, "hidden": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2,
        "max_seq_len": 64, "ffn": "moe", "router": "relu", "n_experts": 8, "top_k": 1,
        "steps": 300, "batch_size": 8, "seq_len": 64, "lr": 2e-3, "warmup": 10}
CASES = {"E8_k1": {}, "E16_k2_G2": {"n_experts": 16, "top_k": 2, "granularity": 2}}


def data(build, tmp):
    """Small corpus (built from packages if missing), a 1024-id tokenizer, train tokens."""
    subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "tools/build_corpus.py"), "--profile", "small",
                    "--quiet"], check=True, cwd=ROOT)
    train = os.path.join(ROOT, "data/corpus/small/train.jsonl")
    tok, out = os.path.join(tmp, "tok"), os.path.join(tmp, "train.tok")
    subprocess.run([f"{build}/moe", "tokenizer", "train", "--input", train, "--vocab", "1024", "--out", tok],
                   check=True, capture_output=True)
    subprocess.run([f"{build}/moe", "prepare", "--input", train, "--tokenizer", tok, "--out", out],
                   check=True, capture_output=True)
    return out


def main():
    build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        tokens = data(build, tmp)
        for name, over in CASES.items():
            cfg = dict(BASE, **over)
            path = os.path.join(tmp, name + ".json")
            with open(path, "w") as f:
                json.dump(cfg, f)
            run = os.path.join(tmp, name)
            subprocess.run([f"{build}/moe", "train", "--config", path, "--data", tokens, "--out", run],
                           check=True, capture_output=True)
            with open(os.path.join(run, "metrics.jsonl")) as f:
                s = [json.loads(line)["sparsity"] for line in f]
            target = 1 - cfg["top_k"] / cfg["n_experts"]
            early, late = min(s[:30]), statistics.mean(s[-100:])
            peak = max(s[30:])
            problems = []
            if early >= 0.3:
                problems.append(f"stage I: min sparsity of the first 30 steps is {early:.3f}, expected < 0.3")
            if peak <= 0.8:
                problems.append(f"stage II: sparsity never passes 0.8 (max {peak:.3f})")
            if abs(late - target) > 0.02:
                problems.append(f"stage III: mean sparsity of the last 100 steps {late:.4f}, target {target}")
            summary = (f"first-30 min {early:.3f}, last-100 mean {late:.4f} "
                       f"(sd {statistics.pstdev(s[-100:]):.4f}), target {target}")
            if problems:
                failed += 1
                print(f"FAIL remoe_stages_{name}: {summary}")
                for p in problems:
                    print("   ", p)
            else:
                passed += 1
                print(f"ok   remoe_stages_{name}: {summary}")
    print(f"# {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
