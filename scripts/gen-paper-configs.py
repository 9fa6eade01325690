#!/usr/bin/python3
"""gen-paper-configs.py — writes configs/paper/ (docs in configs/paper/README.md):
the ReMoE backbones (182M, 469M, 978M) with E = 4..128 and granularity
variants, the CartesianMoE base and large models with their baselines, a
CPU twin of each, and configs/paper/sizes.json, the parameter counts each
config must have (checked by tests/cli/test_paper_configs.sh).

    scripts/gen-paper-configs.py            rewrite every file
    scripts/gen-paper-configs.py --check    exit 1 if a file would change
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "configs", "paper")

# ---- backbones --------------------------------------------------------------
# ReMoE (METHOD §1): LLaMA, GQA with 4 key/value heads, SwiGLU 4 x hidden,
# GPT-2 vocabulary padded to 51200, untied head; seq 1024, global batch 512
# (8 x 64 micro-batches here), 60k steps, AdamW lr 5e-4, warm-up 1%, cosine
# to 10%, RoPE theta 1e6.
REMOE = {
    "182m": dict(hidden=768, n_layers=12, n_heads=12, n_kv_heads=4),
    "469m": dict(hidden=1024, n_layers=24, n_heads=16, n_kv_heads=4),
    "978m": dict(hidden=1536, n_layers=24, n_heads=16, n_kv_heads=4),
}
REMOE_TRAIN = dict(vocab_size=51200, max_seq_len=1024, seq_len=1024, batch_size=8, grad_accum=64,
                   steps=60000, lr=5e-4, warmup=-1, min_lr_ratio=0.1, rope_theta=1e6,
                   checkpoint_every=1000)
# The paper's sizes: parameters a token uses (the dense model's), embeddings
# and head included.
REMOE_SIZE = {"182m": 182e6, "469m": 469e6, "978m": 978e6}

# CPU twins: ffn 4 x hidden, head size 32, GQA, experts, k, G, routers and
# the schedule's shape (1% warm-up, cosine to 10%) as the paper; width,
# depth, vocabulary (our 4096-id tokenizer), sequence, batch and steps
# scaled to run in minutes on 2 cores. Their non-embedding parameters grow
# from one twin to the next about as the papers do (x3.3, x8.0).
REMOE_CPU = {
    "182m": dict(hidden=64, n_layers=4, n_heads=2, n_kv_heads=1),
    "469m": dict(hidden=96, n_layers=6, n_heads=3, n_kv_heads=1),
    "978m": dict(hidden=128, n_layers=8, n_heads=4, n_kv_heads=2),
}
CPU_TRAIN = dict(vocab_size=4096, max_seq_len=128, seq_len=128, batch_size=4, grad_accum=1,
                 steps=1000, lr=2e-3, warmup=-1, min_lr_ratio=0.1, rope_theta=1e4, checkpoint_every=250)

# CartesianMoE: its reference is LLaMA code (32000-id vocabulary, untied,
# multi-head attention) with the first layer dense. The paper's base and
# large shapes are not in docs/METHOD.md: we take GPT-2/BERT's base (768 x 12) and
# large (1024 x 24), whose dense sizes (162M, 468M) fit the reference
# repository's "160M" run name. Training as ReMoE's (the paper's own is
# not in docs/METHOD.md).
CART = {
    "base": dict(hidden=768, n_layers=12, n_heads=12, n_kv_heads=12),
    "large": dict(hidden=1024, n_layers=24, n_heads=16, n_kv_heads=16),
}
CART_TRAIN = dict(REMOE_TRAIN, vocab_size=32000, rope_theta=1e4, dense_first_layers=1)
CART_CPU = {
    "base": dict(hidden=64, n_layers=4, n_heads=2, n_kv_heads=2),
    "large": dict(hidden=96, n_layers=6, n_heads=3, n_kv_heads=3),
}
CART_CPU_TRAIN = dict(CPU_TRAIN, dense_first_layers=1)


def remoe_variants():
    """name -> FFN keys. E sweep (paper fig. 5: E = 4..128, k = 1), the
    granularity sweep (E = 8, G = 2..64), and the main table's baselines."""
    v = {"dense": dict(ffn="dense")}
    for E in (4, 8, 16, 32, 64, 128):
        v[f"topk-e{E}"] = dict(ffn="moe", router="topk", n_experts=E, top_k=1)
        v[f"remoe-e{E}"] = dict(ffn="moe", router="relu", n_experts=E, top_k=1)
    for G in (2, 4, 8, 16, 32, 64):
        v[f"topk-e8-g{G}"] = dict(ffn="moe", router="topk", n_experts=8, top_k=1, granularity=G)
        v[f"remoe-e8-g{G}"] = dict(ffn="moe", router="relu", n_experts=8, top_k=1, granularity=G)
    moe8 = dict(ffn="moe", n_experts=8, top_k=1)
    v["topk-e8-warmup"] = dict(moe8, router="topk", k_warm=6, k_warm_steps=100)
    v["hash-e8"] = dict(moe8, router="hash")
    v["expert-choice-e8"] = dict(moe8, router="expert_choice")
    v["sparsemixer-e8"] = dict(moe8, router="sparsemixer")
    v["lory-e8"] = dict(ffn="lory", n_experts=8, lory_segment=256)
    v["topp-e8"] = dict(moe8, router="topp", n_shared_experts=1)
    return v


def cartesian_variants():
    """The CartesianMoE table (METHOD §2.3, §2.4): 17 full FFNs of expert
    parameters and 3 active per MoE layer in every row; gates renormalised
    whenever k > 1, as the reference does."""
    return {
        "cartesian": dict(ffn="cartesian", router="topk", n_experts=16, top_k=2),
        "smoe-share": dict(ffn="moe", router="topk", n_experts=16, top_k=2, norm_topk_prob=True,
                           n_shared_experts=1, shared_gate=True),
        "smoe-top3": dict(ffn="moe", router="topk", n_experts=17, top_k=3, norm_topk_prob=True),
        "hash": dict(ffn="moe", router="learned_hash", n_experts=16, top_k=2, n_shared_experts=1,
                     shared_gate=True),
        "fine-grained": dict(ffn="moe", router="topk", n_experts=16, top_k=2, granularity=2,
                             norm_topk_prob=True, n_shared_experts=2),
        "topp": dict(ffn="moe", router="topp", n_experts=16, top_k=2, n_shared_experts=1),
        "dense": dict(ffn="dense"),
    }


def dense_size(b, vocab):
    """Parameters of the dense model: embeddings + head, and per layer GQA
    attention, SwiGLU 4 x hidden and two norms; plus the final norm."""
    D, L, H, KV = b["hidden"], b["n_layers"], b["n_heads"], b["n_kv_heads"]
    hd = D // H
    attn = 2 * D * H * hd + 2 * D * KV * hd
    return 2 * vocab * D + L * (attn + 3 * D * 4 * D + 2 * D) + D


def files():
    out, sizes = {}, {}

    def put(path, cfg, size):
        out[path] = json.dumps(cfg, indent=1) + "\n"
        sizes[path] = size

    for bb, shape in REMOE.items():
        for name, ffn in remoe_variants().items():
            # TopP adds an always-active shared expert: more active parameters
            size = None if name.startswith("topp") else REMOE_SIZE[bb]
            put(f"remoe/{bb}/{name}.json", dict(shape, **ffn, **REMOE_TRAIN), size)
    for bb, shape in REMOE_CPU.items():
        for name, ffn in remoe_variants().items():
            ffn = dict(ffn, lory_segment=32) if "lory_segment" in ffn else ffn
            size = None if name.startswith("topp") else dense_size(shape, CPU_TRAIN["vocab_size"])
            put(f"remoe/cpu/{bb}/{name}.json", dict(shape, **ffn, **CPU_TRAIN), size)
    for bb, shape in CART.items():
        for name, ffn in cartesian_variants().items():
            put(f"cartesian/{bb}/{name}.json", dict(shape, **ffn, **CART_TRAIN), None)
    for bb, shape in CART_CPU.items():
        for name, ffn in cartesian_variants().items():
            put(f"cartesian/cpu/{bb}/{name}.json", dict(shape, **ffn, **CART_CPU_TRAIN), None)
    # sizes.json: the active parameters each ReMoE config must have, routers
    # aside (the paper's size; for a twin, its dense model's, computed
    # above; not for TopP, whose shared expert adds to them); the
    # CartesianMoE rows instead share their expert parameters (17 FFNs per
    # MoE layer) and their active ones (3), checked against each other.
    expect = {"remoe": {p: s for p, s in sizes.items() if s is not None},
              "cartesian_groups": sorted({os.path.dirname(p) for p in sizes if p.startswith("cartesian/")}),
              "tolerance": 0.005}
    out["sizes.json"] = json.dumps(expect, indent=1, sort_keys=True) + "\n"
    return out


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for rel, text in sorted(files().items()):
        path = os.path.join(OUT, rel)
        old = open(path).read() if os.path.exists(path) else None
        if old == text:
            continue
        stale.append(rel)
        if not check:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
    if check and stale:
        print("configs/paper is not current (run scripts/gen-paper-configs.py): " + ", ".join(stale[:5]))
        return 1
    if not check:
        print(f"configs/paper: {len(stale)} files written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
