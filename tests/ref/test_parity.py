# once: whole models against PyTorch (~30 s under the sanitizers); every forward and backward it covers runs under them in unit/test_grad, test_moe and test_decode
"""test_parity.py — moe against the independent PyTorch reference
(tools/ref_model.py, float64): logits, losses and every parameter gradient of
one step, then 10 AdamW steps in sequential mode: the losses of each step,
the trained weights and AdamW's moments (exp_avg, exp_avg_sq) of every
tensor; ReMoE's sparsity and lambda sequence exactly. Each case is a config
with its own tolerances (TOL, derived below). The bf16_* cases run moe with
precision "bf16" against the reference rounding the same products' inputs
(ref_model.BF16), with tolerances of their own (TOL_BF16); they run from
test_parity_bf16.py, which skips (77) on a CPU without bf16 dot products.
Every other case pins precision "fp32" (the default "auto" is bf16 where the
CPU has it). Usage:
  test_parity.py BUILD_DIR [CASE ...]            check (default: the fp32 cases)
  test_parity.py --measure BUILD_DIR [CASE ...]  print each case's worst errors
"""
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
        "lr": 3e-3, "init_std": 0.05, "shuffle": False, "grad_clip": 1.0, "precision": "fp32"}

# name -> (config overrides, grad_accum for the training check)
MOE = {"ffn": "moe", "n_experts": 4, "top_k": 1, "ffn_dim": 48}
CASES = {
    "dense": ({}, 1),
    "dense_gqa1_accum": ({"n_kv_heads": 1, "ffn_dim": 48}, 2),
    "dense_mha": ({"n_kv_heads": 4, "n_layers": 1}, 1),
    "topk": (dict(MOE, router="topk"), 1),
    "topk_k2_renorm_zloss_shared": (dict(MOE, router="topk", top_k=2, norm_topk_prob=True,
                                         z_loss_coef=1e-3, n_shared_experts=1), 2),
    # k = 1 with norm_topk_prob: the single gate is exactly 1 (Mixtral, METHOD §2.1)
    "topk_k1_renorm": (dict(MOE, router="topk", norm_topk_prob=True), 1),
    # auxiliary-loss-free balancing: the bias moves 0.01 a step, enough to
    # change choices within 10 steps; loads over 2 micro-batches
    "topk_aux_free_k2_accum": (dict(MOE, router="topk", top_k=2, aux_loss_coef=0.0, aux_free_bias=True,
                                    aux_free_rate=0.01), 2),
    # DeepSeek-V3's gate: sigmoid scores, renormalised over k and scaled, with
    # the aux-free bias and a balance loss on the normalised scores
    "topk_sigmoid_bias_scale": (dict(MOE, router="topk", top_k=2, scoring_func="sigmoid",
                                     routed_scaling_factor=2.5, aux_free_bias=True, aux_free_rate=0.01,
                                     n_shared_experts=1), 1),
    # global-batch balancing: n_e of the balance loss over the step's 3
    # micro-batches (a routing-only pass first), k = 2 with the z-loss
    "topk_global_batch_accum3": (dict(MOE, router="topk", top_k=2, global_batch_balance=True, aux_loss_coef=0.05,
                                      z_loss_coef=1e-3), 3),
    # MoE++'s zero-computation experts beside the FFN experts, TopK and ReLU
    "topk_zero_copy_const": (dict(MOE, router="topk", top_k=2, norm_topk_prob=True, n_zero_experts=1,
                                  n_copy_experts=1, n_const_experts=1), 1),
    "relu_zero_copy_const_accum": (dict(MOE, router="relu", relu_lambda0=0.05, n_zero_experts=1,
                                        n_copy_experts=1, n_const_experts=2), 2),
    "topk_warmup_G2_every2": (dict(MOE, router="topk", granularity=2, k_warm=3, k_warm_steps=4,
                                   moe_every=2, n_layers=3), 1),
    # a large lambda_0 so the regulariser matters within 10 steps
    "relu": (dict(MOE, router="relu", relu_lambda0=0.05), 1),
    "relu_accum_G2": (dict(MOE, router="relu", granularity=2, relu_lambda0=0.05), 2),
    "relu_plain_l1_shared": (dict(MOE, router="relu", l1_load_balance=False, n_shared_experts=1,
                                  relu_lambda0=0.05), 1),
    # each layer's own lambda (a target the layers cross at different steps)
    "relu_per_layer_accum": (dict(MOE, router="relu", relu_lambda0=0.05, target_sparsity=0.6,
                                  relu_lambda_per_layer=True), 2),
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
    # precision bf16: the reference rounds the same products' inputs
    # (ref_model.lin); see TOL_BF16
    "bf16_dense": ({"precision": "bf16"}, 1),
    "bf16_relu_shared": (dict(MOE, router="relu", relu_lambda0=0.05, n_shared_experts=1,
                              precision="bf16"), 2),
    "bf16_topk": (dict(MOE, router="topk", precision="bf16"), 1),
}

# The error categories, each the worst over its tensors:
#   fwd      logits and the two losses of one forward pass     (rel_err)
#   grad     every parameter gradient of that pass             (rel_err)
#   train    the loss and lm_loss of each of the 10 AdamW steps (rel_err)
#   weights  every parameter after the 10 steps, relative to how far training
#            moved it: ||W_moe - W_ref|| / ||W_ref - W_0||      (norm_err)
#   moments  AdamW's exp_avg and exp_avg_sq after them          (norm_err)
CATEGORIES = ("fwd", "grad", "train", "weights", "moments")

# Tolerances: about 10x the worst error measured (`--measure`) for each case,
# over a plain (-O2) and an ASan (-O1) build on an Intel Xeon (AVX-512,
# OpenBLAS), rounded up; the measured worst is in each line's comment. Why the
# errors are what they are (moe computes in float32, u = 2^-24 ~ 6.0e-8; the
# reference in float64, whose own error is ~1e-16 and negligible):
#   fwd      each logit is a chain of dot products of K = 32..48 terms through
#            2-3 blocks; rounding errors of random sign add up like sqrt(K) u
#            ~ 3.4e-7 per product: measured 1.8e-7 .. 3.0e-7 in every case.
#   grad     the backward pass has twice the products, and weight gradients
#            also sum over the B*T = 48 rows: sqrt(48) u ~ 4e-7, measured
#            3.9e-7 .. 7e-7; up to 1.9e-6 where a gradient is a sum with
#            cancellation (shared-gate biases, Cartesian's two chained
#            sub-layers, the shared expert of smoe_share).
#   train    the loss is a mean of 48 cross-entropies, each a log-sum-exp
#            over 61 logits of the error above, averaged: measured 5e-9 ..
#            3e-8 relative, 1.1e-7 for cartesian_k1_every2.
#   weights  each step rounds every float32 weight once (half an ulp, up to
#            u |w|, 6e-8 for the norm weights near 1) while a weight moves by
#            at most lr ~ 1e-3..3e-3 a step: 10 such roundings are ~1e-5 of
#            the movement, measured 1.1e-5 .. 1.5e-5 with the norm weights the
#            worst. Larger (up to 8.8e-5) where one element's gradient is
#            smaller than its own rounding error, so that Adam's m / sqrt(v),
#            which normalises the gradient away, moves that element by a
#            different amount: a property of AdamW in float32, not a bug.
#            Should a new machine exceed a tolerance by one tensor, this is
#            the first suspect; a bug (weight decay on norm weights, a wrong
#            bias correction or eps) moves every element by a fraction of lr,
#            1e-2 of the movement or more.
#   moments  m and v average the gradients (error as grad), and from step 2
#            on the gradients are those of weights that already differ as
#            above: measured 5e-7 .. 3.4e-5.
# A bug worth more than ~10x a case's rounding error fails; the hand-worked
# cases of tests/unit/test_papers.c pin the formulas themselves.
TOL = {
    "dense": dict(fwd=3e-06, grad=6e-06, train=2e-07, weights=2e-04, moments=7e-06),  # 2.4e-07 5.4e-07 1.6e-08 1.3e-05 6.0e-07
    "dense_gqa1_accum": dict(fwd=3e-06, grad=8e-06, train=2e-07, weights=2e-04, moments=1e-05),  # 2.4e-07 7.0e-07 1.3e-08 1.3e-05 9.9e-07
    "dense_mha": dict(fwd=3e-06, grad=5e-06, train=3e-07, weights=6e-04, moments=8e-05),  # 2.0e-07 4.6e-07 2.5e-08 5.5e-05 7.1e-06
    "topk": dict(fwd=3e-06, grad=6e-06, train=2e-07, weights=2e-04, moments=7e-06),  # 2.4e-07 5.1e-07 1.2e-08 1.2e-05 6.5e-07
    "topk_k2_renorm_zloss_shared": dict(fwd=3e-06, grad=7e-06, train=2e-07, weights=2e-04, moments=2e-05),  # 2.5e-07 6.3e-07 1.7e-08 1.3e-05 1.8e-06
    "topk_k1_renorm": dict(fwd=3e-06, grad=6e-06, train=2e-07, weights=2e-04, moments=6e-06),  # 3.1e-07 5.9e-07 8.1e-09 1.3e-05 6.0e-07
    # no choice differs between moe and the reference (the closest k-th and (k+1)-th scores p + b
    # over the 10 steps are 1.2e-5 apart, far above float32's rounding of p; the bias sequence is
    # equal); its worst tensors are norm weights and their moments, the float32 AdamW effect
    # described above, measured up to 7x plain TopK's (7e-8 train, 5e-5 weights, 2e-5 moments)
    "topk_aux_free_k2_accum": dict(fwd=3e-06, grad=5e-06, train=8e-07, weights=6e-04, moments=3e-04),  # 2.9e-07 4.9e-07 7.2e-08 5.2e-05 2.2e-05
    "topk_sigmoid_bias_scale": dict(fwd=4e-06, grad=7e-06, train=3e-07, weights=2e-04, moments=2e-05),  # 3.3e-07 6.4e-07 2.1e-08 1.5e-05 1.4e-06
    "topk_global_batch_accum3": dict(fwd=3e-06, grad=6e-06, train=2e-07, weights=2e-04, moments=4e-05),  # 2.9e-07 5.2e-07 1.7e-08 1.5e-05 3.9e-06
    # router gradient: the copy expert's gate gradient dy.x enters the renormalisation's dg - g.dg, a
    # difference of similar sums (cancellation, as the shared gate's)
    "topk_zero_copy_const": dict(fwd=3e-06, grad=3e-05, train=2e-07, weights=2e-04, moments=2e-05),  # 2.1e-07 2.7e-06 1.8e-08 1.3e-05 1.5e-06
    "relu_zero_copy_const_accum": dict(fwd=3e-06, grad=8e-06, train=2e-07, weights=3e-04, moments=3e-05),  # 2.7e-07 7.0e-07 1.4e-08 2.2e-05 2.6e-06
    "topk_warmup_G2_every2": dict(fwd=3e-06, grad=7e-06, train=2e-07, weights=3e-04, moments=3e-05),  # 2.7e-07 6.4e-07 1.6e-08 3.0e-05 3.0e-06
    "relu": dict(fwd=3e-06, grad=5e-06, train=2e-07, weights=9e-04, moments=2e-05),  # 2.8e-07 4.8e-07 1.9e-08 8.8e-05 1.2e-06
    "relu_accum_G2": dict(fwd=3e-06, grad=5e-06, train=2e-07, weights=2e-04, moments=2e-05),  # 2.7e-07 4.8e-07 1.4e-08 1.2e-05 1.7e-06
    "relu_plain_l1_shared": dict(fwd=3e-06, grad=6e-06, train=2e-07, weights=2e-04, moments=6e-06),  # 3.0e-07 5.8e-07 1.1e-08 1.1e-05 6.0e-07
    "relu_per_layer_accum": dict(fwd=3e-06, grad=7e-06, train=2e-07, weights=2e-04, moments=4e-05),  # 2.4e-07 5.8e-07 1.8e-08 1.5e-05 4.0e-06
    "smoe_share": dict(fwd=3e-06, grad=2e-05, train=3e-07, weights=2e-04, moments=9e-06),  # 2.2e-07 1.7e-06 2.2e-08 1.5e-05 8.9e-07
    "topp_shared": dict(fwd=3e-06, grad=6e-06, train=2e-07, weights=4e-04, moments=5e-05),  # 2.4e-07 5.6e-07 1.3e-08 3.1e-05 5.0e-06
    "hash": dict(fwd=3e-06, grad=6e-06, train=2e-07, weights=2e-04, moments=6e-06),  # 2.3e-07 5.2e-07 1.6e-08 1.1e-05 5.9e-07
    "expert_choice": dict(fwd=3e-06, grad=7e-06, train=2e-07, weights=2e-04, moments=2e-05),  # 2.5e-07 6.1e-07 1.8e-08 1.5e-05 1.4e-06
    "sparsemixer": dict(fwd=3e-06, grad=6e-06, train=2e-07, weights=2e-04, moments=8e-06),  # 2.5e-07 5.9e-07 1.3e-08 1.5e-05 7.6e-07
    "cartesian": dict(fwd=3e-06, grad=2e-05, train=2e-07, weights=4e-04, moments=9e-05),  # 2.8e-07 1.5e-06 1.0e-08 3.5e-05 8.8e-06
    "cartesian_k1_every2": dict(fwd=3e-06, grad=2e-05, train=2e-06, weights=7e-04, moments=4e-04),  # 2.0e-07 1.9e-06 1.1e-07 6.1e-05 3.4e-05
    "learned_hash_dense_first": dict(fwd=3e-06, grad=6e-06, train=2e-07, weights=2e-04, moments=2e-05),  # 2.0e-07 5.4e-07 1.3e-08 1.5e-05 1.4e-06
    "lory": dict(fwd=3e-06, grad=6e-06, train=2e-07, weights=2e-04, moments=2e-05),  # 2.1e-07 5.3e-07 1.8e-08 1.3e-05 2.0e-06
}

# bf16 cases. Both sides round the same products' inputs to bf16, but from
# values that differ at float32 level, so now and then one input rounds to the
# other neighbour: one bf16 ulp (2^-7 relative) on one element, which then
# moves its row downstream by about a rounding error. Measured: tensors
# without such a flip agree at 1e-7, those with one up to 2e-3; against an
# unrounded reference every tensor is off by 4e-3..9e-3 (median 5e-3). So:
# fwd and grad, each tensor within half a bf16 ulp (2^-8) and the median over
# the gradients within 2^-10 (which the unrounded reference fails by 5x);
# train, the loss within 2^-6 over 10 steps (flips accumulate: 4e-3 measured
# by step 6; measured 3e-5 here); weights and moments after 10 steps,
# relative to the movement, within 2^-3 and 2^-4, about 10x the measured
# 1.1e-2 and 6.5e-3 (a flip changes a gradient element by ~2^-8 and Adam's
# normalisation passes it to the update whole). ReLU sparsity and lambda are not compared exactly: a flip can turn
# a gate near 0 on or off.
TOL_BF16 = dict(fwd=2.0 ** -8, grad=2.0 ** -8, train=2.0 ** -6, weights=2.0 ** -3, moments=2.0 ** -4)
TOL_BF16_MEDIAN = 2.0 ** -10
for _name in CASES:
    if _name.startswith("bf16_"):
        TOL[_name] = TOL_BF16


def rel_err(a, b):
    """max |a - b| / max |b|: error relative to the tensor's scale."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def norm_err(a, b, origin=0.0):
    """||a - b|| / ||b - origin|| (2-norms over the tensor)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b - origin), 1e-30))


def run_case(build, name, overrides, grad_accum, tmp):
    """Runs one case; returns ({category: (worst error, where)}, [hard failures])."""
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
    out = subprocess.run([f"{build}/tests/ref_dump_grads", model_dir, data, str(B), str(T), dump],
                         check=True, capture_output=True, text=True).stdout
    bf16 = cfg.get("precision") == "bf16"
    if bf16 and "precision bf16" not in out:
        return None, []  # the CPU has no bf16 products: moe fell back to fp32
    ref_model.BF16 = bf16
    try:
        return compare(build, cfg, model_dir, data, dump, grad_accum, name, tmp, bf16)
    finally:
        ref_model.BF16 = False


def compare(build, cfg, model_dir, data, dump, grad_accum, name, tmp, bf16):
    """The checks of run_case, with the reference in moe's precision."""
    B, T = cfg["batch_size"], cfg["seq_len"]
    ours, _ = moe_files.read_safetensors(dump)

    worst = {c: (0.0, "") for c in CATEGORIES}
    failures = []

    def note(cat, what, a, b, err=rel_err):
        if np.abs(np.asarray(b)).max() == 0 and np.abs(np.asarray(a)).max() == 0:
            return
        e = err(a, b)
        if not e <= worst[cat][0]:  # NaN is worse than anything
            worst[cat] = (e, what)

    ref = ref_model.load(model_dir, torch.float64)
    x, y = ref_model.sequential_batch(moe_files.read_tokens(data)["ids"], 0, B, T)
    logits, lm, aux = ref.forward(x, y)
    (lm + aux).backward()
    note("fwd", "logits", ours["logits"], logits.detach().numpy())
    note("fwd", "lm_loss", ours["losses"][0:1], [lm.item()])
    note("fwd", "aux_loss", ours["losses"][1:2], [float(aux)])
    grad_errs = []
    for pname, p in ref.P.items():
        note("grad", pname, ours[f"grad.{pname}"], p.grad.numpy())
        grad_errs.append(rel_err(ours[f"grad.{pname}"], p.grad.numpy()))
    if bf16 and np.median(grad_errs) > TOL_BF16_MEDIAN:
        failures.append(f"median gradient error {np.median(grad_errs):.3g} > {TOL_BF16_MEDIAN:.3g}")

    # the benchmarks' sparse PyTorch dispatch must compute the same function:
    # both are float64, so only reordered sums differ (~1e-16 relative)
    if cfg.get("ffn") == "moe":
        ref_model.FFNMoE.sparse = True
        ref_s = ref_model.load(model_dir, torch.float64)
        logits_s, lm_s, aux_s = ref_s.forward(x, y)
        (lm_s + aux_s).backward()
        ref_model.FFNMoE.sparse = False
        e = max([rel_err(logits_s.detach().numpy(), logits.detach().numpy())] +
                [rel_err(ref_s.P[n].grad.numpy(), p.grad.numpy()) for n, p in ref.P.items()])
        if e > 1e-12:
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
            note("train", f"step {o['step']} {key}", [o[key]], [r[key]])
        # the discrete parts must agree exactly: sparsity and the lambda sequence
        for key in () if bf16 else ("sparsity", "lambda"):
            as_key = np.float32 if key == "lambda" else float
            if key in r and (key not in o or as_key(o[key]) != as_key(r[key])):
                failures.append(f"step {o['step']} {key}: ours {o.get(key)} ref {r[key]}")
            # per-layer router state in the metrics (relu_lambda_per_layer: lambda, step_sparsity)
            for i, rl in enumerate(r.get("layers", [])):
                ol = o.get("layers", [{}] * (i + 1))[i] if i < len(o.get("layers", [])) else {}
                for lk in ("lambda", "step_sparsity", "expert_bias") if key == "lambda" else ():
                    cast = np.float32 if lk in ("lambda", "expert_bias") else float
                    if lk in rl and (lk not in ol or np.any(np.asarray(ol[lk], cast) != np.asarray(rl[lk], cast))):
                        failures.append(f"step {o['step']} layer {i} {lk}: ours {ol.get(lk)} ref {rl[lk]}")
    if len(ours_steps) != 10:
        failures.append(f"moe wrote {len(ours_steps)} metric lines, expected 10")
    # the trained weights and the optimizer state of the last checkpoint
    ck = moe_files.resolve_checkpoint(run_dir)
    w, _ = moe_files.read_safetensors(os.path.join(ck, "model.safetensors"))
    opt, _ = moe_files.read_safetensors(os.path.join(ck, "optimizer.safetensors"))
    moments = ref_model.adamw_moments(ref)
    w0, _ = moe_files.read_safetensors(os.path.join(model_dir, "model.safetensors"))
    for pname, p in ref.P.items():
        moved = p.detach().numpy() - w0[pname]
        if np.abs(moved).max() > 0:  # relative to how far training moved the tensor
            note("weights", pname, w[pname] - w0[pname], moved, norm_err)
        m, v = moments[pname]
        note("moments", f"exp_avg.{pname}", opt[f"exp_avg.{pname}"], m, norm_err)
        note("moments", f"exp_avg_sq.{pname}", opt[f"exp_avg_sq.{pname}"], v, norm_err)
    return worst, failures


def main(default_names=None):
    args = sys.argv[1:]
    measure = "--measure" in args
    args = [a for a in args if a != "--measure"]
    build = args[0] if args else "build"
    names = args[1:] or default_names or [n for n in CASES if not n.startswith("bf16_")]
    passed = failed = skipped = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            overrides, ga = CASES[name]
            worst, failures = run_case(build, name, overrides, ga, tmp)
            if worst is None:
                skipped += 1
                print(f"SKIP parity_{name}: this CPU has no bf16 dot products (moe ran fp32)")
                continue
            if measure:
                print(f"{name:30s} " + " ".join(f"{c} {worst[c][0]:.2e}" for c in CATEGORIES) +
                      "   (" + "; ".join(f"{c}: {worst[c][1]}" for c in CATEGORIES) + ")", flush=True)
                continue
            if name not in TOL:
                failures.append(f"no tolerances for this case: run with --measure and add ~10x its worst to TOL")
            for c in CATEGORIES if name in TOL else ():
                e, what = worst[c]
                if not e <= TOL[name][c]:
                    failures.append(f"{c}: {what}: relative error {e:.3g} > {TOL[name][c]:.0e}")
            if failures:
                failed += 1
                print(f"FAIL parity_{name}")
                for f in failures[:40]:
                    print("   ", f)
            else:
                passed += 1
                print(f"ok   parity_{name} (" + ", ".join(f"{c} {worst[c][0]:.1e}" for c in CATEGORIES) + ")")
            sys.stdout.flush()
    if not measure:
        print(f"# {passed} passed, {failed} failed, {skipped} skipped")
    if not failed and skipped:  # the runner's SKIP: its reason is the last line
        print("the bf16 cases need a CPU with bf16 dot products (AVX512_BF16 or AMX, as oneDNN reports)")
        sys.exit(77)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
