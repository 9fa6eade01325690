"""test_parity.py — moe against the independent PyTorch reference
(tools/ref_model.py, float64): logits, losses and every parameter gradient
(max relative error <= 1e-4), then 10 AdamW steps in sequential mode (losses
<= 1e-4 relative). Each case is a config; the MoE issues add theirs.
Usage: test_parity.py BUILD_DIR [CASE ...]"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import moe_files  # noqa: E402
import ref_model  # noqa: E402

BASE = {"vocab_size": 61, "hidden": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2,
        "max_seq_len": 32, "seq_len": 16, "batch_size": 3, "steps": 10, "warmup": 3,
        "lr": 3e-3, "init_std": 0.05, "shuffle": False, "grad_clip": 1.0}

# name -> (config overrides, grad_accum for the training check)
MOE = {"ffn": "moe", "n_experts": 4, "top_k": 1, "ffn_dim": 48}
CASES = {
    "dense": ({}, 1),
    "dense_gqa1_accum": ({"n_kv_heads": 1, "ffn_dim": 48}, 2),
    "dense_mha": ({"n_kv_heads": 4, "n_layers": 1}, 1),
    "topk": (dict(MOE, router="topk"), 1),
    "topk_k2_renorm_zloss_shared": (dict(MOE, router="topk", top_k=2, norm_topk_prob=True,
                                         z_loss_coef=1e-3, n_shared_experts=1), 2),
    "topk_warmup_G2_every2": (dict(MOE, router="topk", granularity=2, k_warm=3, k_warm_steps=4,
                                   moe_every=2, n_layers=3), 1),
    # a large lambda_0 so the regulariser matters within 10 steps
    "relu": (dict(MOE, router="relu", relu_lambda0=0.05), 1),
    "relu_accum_G2": (dict(MOE, router="relu", granularity=2, relu_lambda0=0.05), 2),
    "relu_plain_l1_shared": (dict(MOE, router="relu", l1_load_balance=False, n_shared_experts=1,
                                  relu_lambda0=0.05), 1),
    # the papers' baselines (docs/ROUTERS.md)
    "smoe_share": (dict(MOE, router="topk", top_k=2, n_shared_experts=1, shared_gate=True), 1),
    "topp_shared": (dict(MOE, router="topp", n_shared_experts=1, topp_entropy_coef=0.01), 2),
    "hash": (dict(MOE, router="hash", n_shared_experts=1), 1),
    # CartesianMoE's Hash baseline, with its reference's first layer dense
    "learned_hash_dense_first": (dict(MOE, router="learned_hash", top_k=2, n_layers=3,
                                      dense_first_layers=1), 2),
    "expert_choice": (dict(MOE, router="expert_choice", top_k=2), 1),
    # a wide candidate threshold so that Gumbel samples and w = 1/3 occur
    "sparsemixer": (dict(MOE, router="sparsemixer", top_k=2, jitter_eps=0.5), 2),
    "cartesian": (dict(MOE, ffn="cartesian", top_k=2), 1),
    "cartesian_k1_every2": (dict(MOE, ffn="cartesian", top_k=1, moe_every=2), 2),
    "lory": (dict(MOE, ffn="lory", lory_segment=6), 1),
}

TOL = 1e-4


def rel_err(a, b):
    """max |a - b| / max |b|: error relative to the tensor's scale."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def run_case(build, name, overrides, grad_accum, tmp):
    cfg = dict(BASE, **overrides)
    cfg_path = os.path.join(tmp, f"{name}.json")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    model_dir = os.path.join(tmp, name)
    subprocess.run([f"{build}/moe", "init", "--config", cfg_path, "--out", model_dir, "--seed", "7"],
                   check=True, capture_output=True)
    rng = np.random.default_rng(3)
    data = os.path.join(tmp, "data.tok")
    moe_files.write_tokens(data, rng.integers(0, cfg["vocab_size"], 4000), cfg["vocab_size"])
    B, T = cfg["batch_size"], cfg["seq_len"]
    dump = os.path.join(tmp, f"{name}.grads.safetensors")
    subprocess.run([f"{build}/tests/ref_dump_grads", model_dir, data, str(B), str(T), dump], check=True)
    ours, _ = moe_files.read_safetensors(dump)

    ref = ref_model.load(model_dir, torch.float64)
    x, y = ref_model.sequential_batch(moe_files.read_tokens(data)["ids"], 0, B, T)
    logits, lm, aux = ref.forward(x, y)
    (lm + aux).backward()
    failures = []
    checks = [("logits", ours["logits"], logits.detach().numpy()),
              ("lm_loss", ours["losses"][0:1], [lm.item()]),
              ("aux_loss", ours["losses"][1:2], [float(aux)])]
    for pname, p in ref.P.items():
        checks.append((f"grad {pname}", ours[f"grad.{pname}"], p.grad.numpy()))
    worst = 0.0
    for what, a, b in checks:
        if np.abs(np.asarray(b)).max() == 0 and np.abs(np.asarray(a)).max() == 0:
            continue
        e = rel_err(a, b)
        worst = max(worst, e)
        if e > TOL:
            failures.append(f"{what}: relative error {e:.3g}")

    # the benchmarks' sparse PyTorch dispatch must compute the same function
    if cfg.get("ffn") == "moe":
        ref_model.FFNMoE.sparse = True
        ref_s = ref_model.load(model_dir, torch.float64)
        logits_s, lm_s, aux_s = ref_s.forward(x, y)
        (lm_s + aux_s).backward()
        ref_model.FFNMoE.sparse = False
        e = max([rel_err(logits_s.detach().numpy(), logits.detach().numpy())] +
                [rel_err(ref_s.P[n].grad.numpy(), p.grad.numpy()) for n, p in ref.P.items()])
        if e > 1e-9:
            failures.append(f"sparse PyTorch dispatch differs from the dense one: {e:.3g}")

    # 10 AdamW steps, sequential data
    run_dir = os.path.join(tmp, f"{name}.run")
    subprocess.run([f"{build}/moe", "train", "--model", model_dir, "--data", data, "--out", run_dir,
                    "--steps", "10", "--no-shuffle", "--grad-accum", str(grad_accum), "--threads", "2"],
                   check=True, capture_output=True)
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        ours_steps = [json.loads(line) for line in f]
    ref = ref_model.load(model_dir, torch.float64)
    tcfg = dict(ref.cfg, grad_accum=grad_accum)
    ref_steps = list(ref_model.train(ref, moe_files.read_tokens(data)["ids"], tcfg, 10))
    for o, r in zip(ours_steps, ref_steps):
        for key in ("loss", "lm_loss"):
            e = abs(o[key] - r[key]) / max(abs(r[key]), 1e-30)
            worst = max(worst, e)
            if e > TOL:
                failures.append(f"step {o['step']} {key}: ours {o[key]:.8g} ref {r[key]:.8g}")
        # the discrete parts must agree exactly: sparsity and the lambda sequence
        for key in ("sparsity", "lambda"):
            as_key = np.float32 if key == "lambda" else float
            if key in r and (key not in o or as_key(o[key]) != as_key(r[key])):
                failures.append(f"step {o['step']} {key}: ours {o.get(key)} ref {r[key]}")
    if len(ours_steps) != 10:
        failures.append(f"moe wrote {len(ours_steps)} metric lines, expected 10")
    return failures, worst


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    names = sys.argv[2:] or list(CASES)
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            overrides, ga = CASES[name]
            failures, worst = run_case(build, name, overrides, ga, tmp)
            if failures:
                failed += 1
                print(f"FAIL parity_{name}")
                for f in failures[:40]:
                    print("   ", f)
            else:
                passed += 1
                print(f"ok   parity_{name} (worst relative error {worst:.2e})")
    print(f"# {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
