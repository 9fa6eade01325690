# once: checks the exported graphs in onnxruntime (tiny models, ~1 min); the exporter runs under the sanitizers in cli/test_export_onnx
"""test_onnx.py — `moe export --format onnx` against real onnxruntime (the
CPU library of npm onnxruntime-node 1.31.1, driven by tests/ref/onnx_check.js).
A tiny BPE tokenizer and one model per router and FFN kind, each trained a
few steps: dense, TopK (renormalised), TopK with granularity and a shared
expert, TopK with a gated shared expert, ReLU (ReMoE; some tokens get no
expert at all, which the test asserts from moe's own routing statistics),
CartesianMoE, hash, learned hash, TopP with a shared expert, SparseMixer-v2,
expert choice and Lory (segments of 16 tokens: the 70-odd-token window has
several). For each, onnxruntime must give next-token log-probs within
TOL_REL of `moe score` (one call over the window, empty cache) and, where
moe can generate (all but expert choice and Lory), 32 greedy tokens
with the KV cache equal to `moe generate --temperature 0`. Then f16: a TopK
model rounded to float16 (moe export --format hf --type f16, moe import)
exported with --type f16 gives that rounded model's log-probs, at the fp32
tolerance since both sides hold the same rounded weights. A batch of two
rows, one left-padded with masked positions, gives each row its own
log-probs (attention_mask and position_ids at work). Exits 77 (skip) when onnxruntime-node cannot be
installed or loaded. Usage: test_onnx.py BUILD_DIR"""
import json
import os
import subprocess
import sys
import tempfile

import reflib
from reflib import run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHECK = os.path.join(ROOT, "tests", "ref", "onnx_check.js")
TEXT = ("The router sends every token to the experts whose gates are not zero; "
        "the model adds their outputs, weighted, to the residual stream.")
BASE = {"vocab_size": 384, "hidden": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 64,
        "max_seq_len": 96, "seq_len": 32, "batch_size": 4, "steps": 4, "lr": 1e-2, "warmup": 1,
        "init_std": 0.1, "precision": "fp32"}
MOE = {"ffn": "moe", "n_experts": 4, "top_k": 2}
CASES = {  # name -> config overrides
    "dense": {},
    "topk": dict(MOE, router="topk", norm_topk_prob=True),
    "topk_shared": dict(MOE, router="topk", granularity=2, n_shared_experts=1),
    "shared_gate": dict(MOE, router="topk", top_k=1, n_shared_experts=1, shared_gate=True),
    # DeepSeek-V3's TopK: sigmoid scores with a routed scaling factor, and
    # the aux-loss-free selection bias (a fast rate: after 4 steps it moves
    # choices, so a graph without it would choose other experts)
    "topk_sigmoid": dict(MOE, router="topk", scoring_func="sigmoid", routed_scaling_factor=2.5),
    "aux_free": dict(MOE, router="topk", aux_free_bias=True, aux_free_rate=0.05),
    # MoE++: zero, copy and constant experts beside the FFN ones
    "moepp_topk": dict(MOE, router="topk", n_zero_experts=1, n_copy_experts=1, n_const_experts=1),
    "moepp_relu": dict(MOE, router="relu", top_k=1, n_zero_experts=1, n_copy_experts=1, n_const_experts=1),
    "relu": dict(MOE, router="relu", top_k=1),
    "cartesian": dict(MOE, ffn="cartesian", router="topk", top_k=1),
    "hash": dict(MOE, router="hash", top_k=1),
    "learned_hash": dict(MOE, router="learned_hash"),
    "topp": dict(MOE, router="topp", top_p=0.6, n_shared_experts=1),
    "sparsemixer": dict(MOE, router="sparsemixer", jitter_eps=0.3),
    "expert_choice": dict(MOE, router="expert_choice", top_k=1),
    "lory": dict(MOE, ffn="lory", lory_segment=16),
}
NOT_CAUSAL = ("expert_choice", "lory")  # moe does not generate with them
# Both sides compute in float32 from the same weights (the graph gathers
# moe's own RoPE tables and does the norms' mean square and the routers'
# softmax in double, as moe does). What differs is the order of the sums in
# the matrix products (K <= 64 terms), exp and sigmoid (~1 ulp), and the
# sum over experts: each rounding is 2^-24 = 6e-8 relative. About 20 such
# steps a layer, two layers, K-term sums adding as a random walk:
# sqrt(2 * 20 * 64) * 6e-8 = 3e-6 relative on logits of size < 10, which a
# log-softmax over 384 ids passes on at most that size: a log-prob (size
# ~6) moves by ~3e-5 at the very worst, 5e-6 relative; measured 1e-7.
# So |diff| <= 1e-5 * max(1, |log p|). A routing difference (a wrong gate,
# an expert not chosen, a token without experts given one) moves log-probs
# by 1e-2 or more and fails it.
TOL_REL = 1e-5


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    moe = os.path.join(build, "moe")
    env = reflib.node_env("onnxruntime-node")
    checks = reflib.Checks()
    check = checks.check

    with tempfile.TemporaryDirectory() as tmp:
        tok, data = reflib.docs_corpus(moe, tmp, BASE["vocab_size"])
        ids = [int(x) for x in run(moe, "tokenizer", "encode", "--tokenizer", tok, stdin=TEXT.encode()).split()]
        prompt = "The router"
        prompt_ids = [int(x) for x in run(moe, "tokenizer", "encode", "--tokenizer", tok,
                                          stdin=prompt.encode()).split()]
        ids_file = os.path.join(tmp, "score.txt")
        with open(ids_file, "w") as f:
            f.write(" ".join(map(str, ids)))
        # the scored window as a token file, for moe analyze's routing statistics
        text_file = os.path.join(tmp, "text.txt")
        with open(text_file, "w") as f:
            f.write(TEXT)
        text_tok = os.path.join(tmp, "text.tok")
        run(moe, "prepare", "--input", text_file, "--tokenizer", tok, "--out", text_tok)

        def ort(folder, greedy, padded=0):
            req = os.path.join(tmp, "req.json")
            with open(req, "w") as f:
                json.dump({"score": ids, "prompt": prompt_ids if greedy else None, "n_greedy": 32,
                           "padded": padded}, f)
            r = subprocess.run(["node", CHECK, folder, req], capture_output=True, env=env)
            if r.returncode != 0:
                raise RuntimeError(f"onnxruntime on {folder}: {r.stderr.decode(errors='replace')[-1500:]}")
            return json.loads(r.stdout)

        def compare(name, model, folder, greedy):
            got = ort(folder, greedy)
            ours = json.loads(run(moe, "score", "--model", model, "--tokens", ids_file))["logprobs"]
            theirs = got["logprobs"]
            worst = max(abs(a - b) / max(1.0, abs(a)) for a, b in zip(ours, theirs))
            check(f"{name}_logprobs", len(ours) == len(theirs) == len(ids) - 1 and worst <= TOL_REL,
                  f"max |diff| / max(1, |log p|) {worst:.2e} over {len(ours)} positions")
            if not greedy:
                return
            text = run(moe, "generate", "--model", model, "--prompt", prompt, "--max-tokens", "32",
                       "--temperature", "0")
            decoded = run(moe, "tokenizer", "decode", "--tokenizer", tok,
                          stdin=" ".join(map(str, got["greedy"])).encode())
            ours_cont = text[len(prompt.encode()):].rstrip(b"\n")
            # moe stops at <|endoftext|>, and its trailing newlines are cut
            decoded = decoded.split("<|endoftext|>".encode())[0].rstrip(b"\n")
            check(f"{name}_greedy_32", ours_cont == decoded and len(got["greedy"]) == 32,
                  f"moe {ours_cont!r} onnxruntime {decoded!r}")
            greedy_texts.append(decoded)

        models = {}
        greedy_texts = []  # a model may end its text at once (<|endoftext|>): not all of them
        for name, over in CASES.items():
            cfg_path = os.path.join(tmp, f"{name}.json")
            with open(cfg_path, "w") as f:
                json.dump(dict(BASE, **over), f)
            model = models[name] = os.path.join(tmp, name)
            run(moe, "train", "--config", cfg_path, "--data", data, "--tokenizer", tok, "--out", model,
                "--threads", "2")
            folder = os.path.join(tmp, f"{name}.onnx")
            run(moe, "export", "--format", "onnx", "--out", folder, model)
            check(f"{name}_files", all(os.path.isfile(os.path.join(folder, f))
                                       for f in ("model.onnx", "config.json", "tokenizer.json")))
            compare(name, model, folder, greedy=name not in NOT_CAUSAL)

        check("greedy_not_vacuous", sum(len(t) > 0 for t in greedy_texts) >= len(greedy_texts) - 2,
              f"{sum(len(t) > 0 for t in greedy_texts)} of {len(greedy_texts)} continuations hold text")

        # a batch of two, the second row left-padded with masked positions:
        # each row's log-probs are its own (routing is per token for these)
        for name in ("relu", "cartesian"):
            got = ort(os.path.join(tmp, f"{name}.onnx"), False, padded=7)
            pairs = list(zip(got["padded"], got["alone"]))
            ours = json.loads(run(moe, "score", "--model", models[name], "--tokens", ids_file))["logprobs"]
            pairs += list(zip(got["batch_first"], ours))
            worst = max(abs(a - b) / max(1.0, abs(a)) for a, b in pairs)
            check(f"{name}_batch_left_padded", len(got["padded"]) > 10 and worst <= TOL_REL,
                  f"max |diff| / max(1, |log p|) {worst:.2e} over {len(pairs)} positions")

        # ReLU: some (layer, token) pairs of the window have no expert at all
        out = os.path.join(tmp, "relu.analysis.json")
        run(moe, "analyze", "--model", models["relu"], "--data", text_tok, "--seq", str(len(ids) - 1),
            "--batch", "1", "--out", out)
        with open(out) as f:
            analysis = json.load(f)
        idle = [s.get("no_expert", 0) for s in find_sites(analysis)]
        check("relu_some_tokens_no_expert", any(x > 0 for x in idle), f"no_expert per layer {idle}")

        # f16: the same rounded weights on both sides
        hf = os.path.join(tmp, "topk.f16.hf")
        run(moe, "export", "--format", "hf", "--type", "f16", "--out", hf, models["topk"])
        back = os.path.join(tmp, "topk.f16.back")
        run(moe, "import", "--out", back, hf)
        f16 = os.path.join(tmp, "topk.f16.onnx")
        run(moe, "export", "--format", "onnx", "--type", "f16", "--out", f16, back)
        size32 = os.path.getsize(os.path.join(tmp, "topk.onnx", "model.onnx"))
        size16 = os.path.getsize(os.path.join(f16, "model.onnx"))
        check("f16_half_size", size16 < 0.6 * size32, f"{size16} bytes against {size32} in f32")
        compare("f16", back, f16, greedy=True)

    return checks.end()


def find_sites(analysis):
    """The per-layer routing entries of moe analyze's JSON (the objects that
    have a no_expert key), wherever they sit."""
    found = []

    def walk(v):
        if isinstance(v, dict):
            if "no_expert" in v:
                found.append(v)
            for w in v.values():
                walk(w)
        elif isinstance(v, list):
            for w in v:
                walk(w)
    walk(analysis)
    return found


if __name__ == "__main__":
    sys.exit(main())
