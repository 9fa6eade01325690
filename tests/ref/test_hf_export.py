# once: checks the exported files against transformers' maths; the exporter runs under the sanitizers in ref/test_interop
"""test_hf_export.py — `moe export --format hf` read as transformers would.
For a dense model (LlamaForCausalLM), TopK renormalised (MixtralForCausalLM)
and TopK default gates with moe_every 2 and granularity 2
(Qwen2MoeForCausalLM), the exported directory is run by transformers when it
is importable (else that case is a skip: exit 77, allowed by name in
tests/skips-allowed), and always by the forward below, written from transformers'
documented maths of the three classes (modeling_llama / modeling_mixtral /
modeling_qwen2_moe: RMSNorm, rotate-half RoPE, GQA, SwiGLU; Mixtral's
softmax top-k renormalised gates over experts w1/w2/w3; Qwen2-MoE's
norm_topk_prob, sigmoid-gated shared expert, q/k/v biases and
decoder_sparse_step), reading only config.json and model.safetensors by
their transformers names. Its log-probabilities must match `moe score`.
tokenizer.json is checked in Hugging Face's Rust tokenizers (npm
`tokenizers`): the same ids as `moe tokenizer encode` on a mixed text.
Usage: test_hf_export.py BUILD_DIR"""
import json
import math
import os
import subprocess
import sys
import tempfile

import reflib
from reflib import run

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import moe_files  # noqa: E402

MIXED = ("Hello world, the model's 12345 tokens: ünïcödé, 日本語, emoji 🙂 and\n"
         "  indented code() {return x+1;}\t<tab> 's 'll don't")
# rope_theta and norm_eps are not moe's defaults, so that a key written or read
# under a wrong name (and its reader's fallback, equal to the default) shows
BASE = {"rope_theta": 50000.0, "norm_eps": 1e-6, "vocab_size": 384, "hidden": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 64,
        "max_seq_len": 96, "seq_len": 32, "init_std": 0.1,
        "precision": "fp32"}  # TOL below is fp32's (the default, auto, is bf16 on some CPUs)
TOPK = {"ffn": "moe", "router": "topk", "n_experts": 4, "top_k": 2}
CASES = {
    "dense": ({}, "LlamaForCausalLM"),
    "mixtral": (dict(TOPK, norm_topk_prob=True), "MixtralForCausalLM"),
    "qwen2moe": (dict(TOPK, granularity=2, moe_every=2, n_layers=2), "Qwen2MoeForCausalLM"),
    "qwen2moe_k1_renorm": (dict(TOPK, top_k=1, norm_topk_prob=True, moe_every=2), "Qwen2MoeForCausalLM"),
}
# moe computes in float32, the reference in float64: ~1e-7 relative error
# per operation, through two layers and a log-softmax over 384 logits of
# size < 10: ~1e-5 at most (measured 9e-7). 1e-4 leaves a factor 10 and is
# far below any difference of maths (un-renormalised gates move log-probs by
# ~0.1-0.5, a wrong RoPE layout by more).
TOL = 1e-4


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), -1)


def swiglu(x, gate, up, down):
    return (torch.nn.functional.silu(x @ gate.T) * (x @ up.T)) @ down.T


def hf_forward(d, ids):
    """Logits [T, V] of the model in directory d, from config.json and
    model.safetensors only (transformers' documented maths, float64)."""
    cfg = json.load(open(os.path.join(d, "config.json")))
    W = {k: torch.tensor(v, dtype=torch.float64) for k, v in
         moe_files.read_safetensors(os.path.join(d, "model.safetensors"))[0].items()}
    arch = cfg["architectures"][0]
    H, KV, D = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["hidden_size"]
    hd, eps, T = D // H, cfg["rms_norm_eps"], len(ids)
    inv = 1.0 / cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    ang = torch.outer(torch.arange(T, dtype=torch.float64), inv)
    cos, sin = torch.cat((ang, ang), -1).cos(), torch.cat((ang, ang), -1).sin()
    h = W["model.embed_tokens.weight"][torch.tensor(ids)]
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        x = rms_norm(h, W[p + "input_layernorm.weight"], eps)

        def proj(n):
            y = x @ W[p + f"self_attn.{n}.weight"].T
            return y + W[p + f"self_attn.{n}.bias"] if p + f"self_attn.{n}.bias" in W else y
        q = proj("q_proj").view(T, H, hd).transpose(0, 1)
        k = proj("k_proj").view(T, KV, hd).transpose(0, 1)
        v = proj("v_proj").view(T, KV, hd).transpose(0, 1)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = k.repeat_interleave(H // KV, 0), v.repeat_interleave(H // KV, 0)
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd) + mask, -1)
        h = h + (att @ v).transpose(0, 1).reshape(T, H * hd) @ W[p + "self_attn.o_proj.weight"].T
        x = rms_norm(h, W[p + "post_attention_layernorm.weight"], eps)
        if arch == "MixtralForCausalLM":
            m = p + "block_sparse_moe."
            prob = torch.softmax(x @ W[m + "gate.weight"].T, -1)
            top, idx = prob.topk(cfg["num_experts_per_tok"], -1)
            top = top / top.sum(-1, keepdim=True)
            y = torch.zeros_like(x)
            for e in range(cfg["num_local_experts"]):
                g = (top * (idx == e)).sum(-1, keepdim=True)
                e_ = m + f"experts.{e}."
                y = y + g * swiglu(x, W[e_ + "w1.weight"], W[e_ + "w3.weight"], W[e_ + "w2.weight"])
        elif arch == "Qwen2MoeForCausalLM" and (l + 1) % cfg["decoder_sparse_step"] == 0 \
                and l not in cfg["mlp_only_layers"]:
            m = p + "mlp."
            prob = torch.softmax(x @ W[m + "gate.weight"].T, -1)
            top, idx = prob.topk(cfg["num_experts_per_tok"], -1)
            if cfg["norm_topk_prob"]:
                top = top / top.sum(-1, keepdim=True)
            y = torch.zeros_like(x)
            for e in range(cfg["num_experts"]):
                g = (top * (idx == e)).sum(-1, keepdim=True)
                e_ = m + f"experts.{e}."
                y = y + g * swiglu(x, W[e_ + "gate_proj.weight"], W[e_ + "up_proj.weight"], W[e_ + "down_proj.weight"])
            s = m + "shared_expert."
            y = y + torch.sigmoid(x @ W[m + "shared_expert_gate.weight"].T) * swiglu(
                x, W[s + "gate_proj.weight"], W[s + "up_proj.weight"], W[s + "down_proj.weight"])
        else:
            y = swiglu(x, W[p + "mlp.gate_proj.weight"], W[p + "mlp.up_proj.weight"], W[p + "mlp.down_proj.weight"])
        h = h + y
    return rms_norm(h, W["model.norm.weight"], eps) @ W["lm_head.weight"].T


def transformers_forward(d, ids):
    import transformers  # noqa: F401  (only when installed)
    model = transformers.AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float64)
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]



def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    moe = os.path.join(build, "moe")
    # two references, named apart: transformers itself (independent; skipped,
    # and counted as a skip, when it is not importable) and the documented
    # maths written in this test (always; a re-derivation, not transformers)
    try:
        import transformers  # noqa: F401
        forwards = [("transformers", transformers_forward), ("maths", hf_forward)]
        skipped = None
    except ImportError:
        forwards = [("maths", hf_forward)]
        skipped = ("transformers is not importable (no PyPI here): the exported directories were checked "
                   "against this test's float64 forward of transformers' documented maths only")
    checks = reflib.Checks()
    check = checks.check

    with tempfile.TemporaryDirectory() as tmp:
        tok = os.path.join(tmp, "tok")
        run(moe, "tokenizer", "train", "--input", os.path.join(ROOT, "docs"), "--vocab",
            str(BASE["vocab_size"]), "--out", tok, "--threads", "1")
        ids = [int(x) for x in run(moe, "tokenizer", "encode", "--tokenizer", tok, stdin=MIXED.encode()).split()]
        ids_file = os.path.join(tmp, "ids.txt")
        with open(ids_file, "w") as f:
            f.write(" ".join(map(str, ids)))
        for name, (over, cls) in CASES.items():
            cfg = dict(BASE, **over)
            cfg_path = os.path.join(tmp, f"{name}.json")
            with open(cfg_path, "w") as f:
                json.dump(cfg, f)
            model = os.path.join(tmp, name)
            run(moe, "init", "--config", cfg_path, "--out", model, "--seed", "5")
            d = os.path.join(tmp, f"{name}.hf")
            run(moe, "export", "--format", "hf", "--tokenizer", tok, "--out", d, model)
            hf_cfg = json.load(open(os.path.join(d, "config.json")))
            check(f"{name}_class", hf_cfg["architectures"] == [cls], f"{hf_cfg['architectures']}")
            for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
                check(f"{name}_{f}", os.path.isfile(os.path.join(d, f)))
            ours = json.loads(run(moe, "score", "--model", model, "--tokens", ids_file))["logprobs"]
            for how, forward in forwards:
                ref = torch.log_softmax(forward(d, ids[:-1]), -1)
                ref = [float(ref[i, ids[i + 1]]) for i in range(len(ids) - 1)]
                worst = max(abs(a - b) for a, b in zip(ours, ref))
                check(f"{name}_logprobs_{how}", len(ours) == len(ref) and worst <= TOL,
                      f"max |diff| {worst:.2e} over {len(ref)} positions")

        # tokenizer.json in Hugging Face's tokenizers (Rust, via npm)
        if subprocess.run([os.path.join(ROOT, "tools", "npm_deps.sh")]).returncode != 0:
            check("tokenizers_npm_install", False, "tools/npm_deps.sh failed")
        else:
            d = os.path.join(tmp, "dense.hf")
            for label, text, flags in (("mixed", MIXED, []),
                                       ("special", "a<|endoftext|>b 's", ["--allow-special"])):
                path = os.path.join(tmp, f"{label}.txt")
                with open(path, "w", encoding="utf-8") as f:
                    f.write(text)
                r = subprocess.run(["node", os.path.join(ROOT, "tests", "ref", "hf_tokenizer_check.js"),
                                    os.path.join(d, "tokenizer.json"), path], capture_output=True)
                if r.returncode != 0:
                    check(f"tokenizers_{label}", False, r.stderr.decode(errors="replace")[-300:])
                    continue
                theirs, rt = r.stdout.decode().splitlines()
                ours = run(moe, "tokenizer", "encode", "--tokenizer", tok, "--input", path, *flags).split()
                check(f"tokenizers_{label}_ids", [int(x) for x in theirs.split()] == [int(x) for x in ours],
                      f"{len(ours)} ids")
                check(f"tokenizers_{label}_decode", rt == "roundtrip")
            # tiktoken rank files: merges derived from the ranks; cl100k, o200k
            # and Llama 3 also have special tokens and ids their tables leave
            # unused, and split patterns of their own
            for name, vocab in (("r50k_base", 50257), ("cl100k_base", 100277), ("o200k_base", 200019),
                                ("llama3", 128256)):
                ranks = os.path.join(ROOT, ".cache", "tiktoken", f"{name}.tiktoken")
                cfg_path = os.path.join(tmp, f"{name}.json")
                with open(cfg_path, "w") as f:
                    json.dump(dict(BASE, vocab_size=vocab, hidden=8, n_heads=2, n_kv_heads=1, ffn_dim=8,
                                   n_layers=1), f)
                run(moe, "init", "--config", cfg_path, "--out", os.path.join(tmp, name))
                run(moe, "export", "--format", "hf", "--tokenizer", ranks, "--out",
                    os.path.join(tmp, f"{name}.hf"), os.path.join(tmp, name))
                path = os.path.join(tmp, f"{name}.txt")
                with open(path, "w", encoding="utf-8") as f:
                    f.write(MIXED + "   spaces\n\n 'S 'LL 12345 \u00c9COLE na\u00efve")
                r = subprocess.run(["node", os.path.join(ROOT, "tests", "ref", "hf_tokenizer_check.js"),
                                    os.path.join(tmp, f"{name}.hf", "tokenizer.json"), path], capture_output=True)
                theirs = r.stdout.decode().splitlines()
                ours = run(moe, "tokenizer", "encode", "--tokenizer", ranks, "--input", path).split()
                check(f"tokenizers_{name}_ids", r.returncode == 0 and theirs and
                      [int(x) for x in theirs[0].split()] == [int(x) for x in ours],
                      f"{len(ours)} ids; {r.stderr.decode(errors='replace')[-200:]}")
    status = checks.end()
    if status == 0 and skipped:  # the runner's SKIP (tests/skips-allowed names it): the reason is the last line
        print(f"SKIP logprobs_transformers: {skipped}")
        return 77
    return status


if __name__ == "__main__":
    sys.exit(main())
