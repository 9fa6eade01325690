"""test_interop.py — moe export / import / init --upcycle (docs/INTEROP.md),
no foreign program needed:
  - export (GGUF and HF, f32) then import gives bit-identical weights, the
    same config shape and the same tokenizer, for dense and TopK models in
    each architecture; an imported model trains on (`moe train --model`);
  - f16 / bf16 files import to the rounded weights (|error| <= half an ulp);
  - routers and layouts no foreign program computes are refused with one
    line naming the reason; a file that is not GGUF is refused, and so is
    a transformers directory with impossible numbers in config.json or a
    damaged model.safetensors;
  - sparse upcycling: with renormalised TopK gates (they sum to 1) the
    upcycled model's step-0 loss equals the dense model's; with gates that
    do not sum to 1 it does not (so the check can fail).
Usage: test_interop.py BUILD_DIR"""
import json
import os
import struct
import sys
import tempfile

import reflib
from reflib import proc as run

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import moe_files  # noqa: E402

# rope_theta and norm_eps are not moe's defaults, so that a key written or read
# under a wrong name (and its reader's fallback, equal to the default) shows
BASE = {"rope_theta": 50000.0, "norm_eps": 1e-6, "vocab_size": 300, "hidden": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 64,
        "max_seq_len": 64, "seq_len": 16, "batch_size": 2, "steps": 2, "init_std": 0.1, "shuffle": False,
        "precision": "fp32"}  # upcycling's 1e-5 loss bound is fp32's (auto is bf16 on some CPUs)
TOPK = {"ffn": "moe", "router": "topk", "n_experts": 4, "top_k": 2}
ROUND_TRIP = {  # name -> (overrides, formats)
    "dense": ({}, ("gguf", "hf")),
    "mixtral": (dict(TOPK, norm_topk_prob=True), ("gguf", "hf")),
    "deepseek_G2_shared": (dict(TOPK, granularity=2, n_shared_experts=2, lr=5e-4), ("gguf",)),
    "bailing_shared": (dict(TOPK, norm_topk_prob=True, n_shared_experts=1), ("gguf",)),
    "topk_default": (dict(TOPK, aux_loss_coef=0.02), ("gguf", "hf")),
    "qwen2moe_every2": (dict(TOPK, moe_every=2, granularity=2), ("hf",)),
}
REFUSED = {  # name -> (overrides, format, what the one-line error must say)
    "relu": (dict(TOPK, router="relu"), "gguf", "ReLU router"),
    "hash": (dict(TOPK, router="hash", top_k=1), "hf", "hash routing"),
    "expert_choice": (dict(TOPK, router="expert_choice"), "gguf", "expert-choice"),
    "sparsemixer": (dict(TOPK, router="sparsemixer"), "gguf", "SparseMixer"),
    "topp": (dict(TOPK, router="topp"), "hf", "TopP"),
    "cartesian": (dict(TOPK, ffn="cartesian"), "gguf", "CartesianMoE"),
    "lory": (dict(TOPK, ffn="lory", lory_segment=8), "hf", "Lory"),
    "shared_gate": (dict(TOPK, n_shared_experts=1, shared_gate=True), "gguf", "shared_gate"),
    "gguf_moe_every": (dict(TOPK, moe_every=2), "gguf", "moe_every 2"),
    "hf_shared": (dict(TOPK, n_shared_experts=1), "hf", "n_shared_experts"),
}
KEYS = ("vocab_size", "hidden", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "max_seq_len", "ffn",
        "router", "n_experts", "top_k", "granularity", "n_shared_experts", "norm_topk_prob", "moe_every",
        "rope_theta", "norm_eps", "lr", "aux_loss_coef")


def gguf_infos(b):
    """The tensor infos of GGUF bytes b: ([(name, dims ne0 first, raw info
    bytes)], where the infos start, where the data starts, the key-value count,
    the version). Read here, independently of moe's reader."""
    pos = 4
    ver, nt, nkv = struct.unpack_from("<IQQ", b, pos); pos += 20
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    align = 32

    def string(p):
        n, = struct.unpack_from("<Q", b, p); return b[p + 8:p + 8 + n].decode(), p + 8 + n

    def value(t, p):
        if t == 8: return string(p)
        if t == 9:
            et, n = struct.unpack_from("<IQ", b, p); p += 12
            for _ in range(n): _, p = value(et, p)
            return None, p
        v = b[p:p + sizes[t]]; return (struct.unpack("<I", v)[0] if t == 4 else v), p + sizes[t]
    for _ in range(nkv):
        key, pos = string(pos)
        t, = struct.unpack_from("<I", b, pos); pos += 4
        v, pos = value(t, pos)
        if key == "general.alignment": align = v
    infos_at, infos = pos, []
    for _ in range(nt):
        start = pos
        name, pos = string(pos)
        nd, = struct.unpack_from("<I", b, pos)
        dims = list(struct.unpack_from(f"<{nd}Q", b, pos + 4))
        pos += 4 + 8 * nd + 4 + 8
        infos.append((name, dims, b[start:pos]))
    return infos, infos_at, (pos + align - 1) // align * align, nkv, ver, align


def untie(src, dst):
    """Writes GGUF src without its output.weight tensor info (a tied head, as
    llama.cpp's converter writes when the model ties it); the data stays put."""
    b = open(src, "rb").read()
    infos, infos_at, data_at, nkv, ver, align = gguf_infos(b)
    keep = [raw for name, _, raw in infos if name != "output.weight"]
    assert len(keep) == len(infos) - 1
    head = bytearray(b[:4]) + struct.pack("<IQQ", ver, len(keep), nkv) + b[24:infos_at] + b"".join(keep)
    head += bytes((-len(head)) % align)
    open(dst, "wb").write(bytes(head) + b[data_at:])


def llama_cpp_table(cfg):
    """llama.cpp's tensor names and shapes (ne0 first) for a llama model,
    written by hand from its create_tensor calls (LLM_ARCH_LLAMA in
    llama-model.cpp), not from moe's export map: a mistake both directions
    of moe's map share cannot hide here."""
    D, V, L, F = cfg["hidden"], cfg["vocab_size"], cfg["n_layers"], cfg["ffn_dim"]
    hd = D // cfg["n_heads"]
    t = {"token_embd.weight": [D, V], "output_norm.weight": [D], "output.weight": [D, V]}
    for l in range(L):
        t.update({f"blk.{l}.attn_norm.weight": [D], f"blk.{l}.attn_q.weight": [D, hd * cfg["n_heads"]],
                  f"blk.{l}.attn_k.weight": [D, hd * cfg["n_kv_heads"]],
                  f"blk.{l}.attn_v.weight": [D, hd * cfg["n_kv_heads"]],
                  f"blk.{l}.attn_output.weight": [hd * cfg["n_heads"], D], f"blk.{l}.ffn_norm.weight": [D]})
        if cfg.get("ffn", "dense") == "dense":
            t.update({f"blk.{l}.ffn_gate.weight": [D, F], f"blk.{l}.ffn_up.weight": [D, F],
                      f"blk.{l}.ffn_down.weight": [F, D]})
        else:
            E = cfg["n_experts"]
            t.update({f"blk.{l}.ffn_gate_inp.weight": [D, E], f"blk.{l}.ffn_gate_exps.weight": [D, F, E],
                      f"blk.{l}.ffn_up_exps.weight": [D, F, E], f"blk.{l}.ffn_down_exps.weight": [F, D, E]})
    return t


def transformers_table(cfg):
    """transformers' tensor names and shapes ([out, in], as nn.Linear stores
    them) for LlamaForCausalLM and MixtralForCausalLM, written by hand from
    modeling_llama.py / modeling_mixtral.py, not from moe's export map."""
    D, V, L, F = cfg["hidden"], cfg["vocab_size"], cfg["n_layers"], cfg["ffn_dim"]
    hd = D // cfg["n_heads"]
    t = {"model.embed_tokens.weight": [V, D], "model.norm.weight": [D], "lm_head.weight": [V, D]}
    for l in range(L):
        p = f"model.layers.{l}"
        t.update({f"{p}.input_layernorm.weight": [D], f"{p}.post_attention_layernorm.weight": [D],
                  f"{p}.self_attn.q_proj.weight": [hd * cfg["n_heads"], D],
                  f"{p}.self_attn.k_proj.weight": [hd * cfg["n_kv_heads"], D],
                  f"{p}.self_attn.v_proj.weight": [hd * cfg["n_kv_heads"], D],
                  f"{p}.self_attn.o_proj.weight": [D, hd * cfg["n_heads"]]})
        if cfg.get("ffn", "dense") == "dense":
            t.update({f"{p}.mlp.gate_proj.weight": [F, D], f"{p}.mlp.up_proj.weight": [F, D],
                      f"{p}.mlp.down_proj.weight": [D, F]})
        else:
            t[f"{p}.block_sparse_moe.gate.weight"] = [cfg["n_experts"], D]
            for e in range(cfg["n_experts"]):
                q = f"{p}.block_sparse_moe.experts.{e}"
                t.update({f"{q}.w1.weight": [F, D], f"{q}.w3.weight": [F, D], f"{q}.w2.weight": [D, F]})
    return t


def weights(d):
    return moe_files.read_safetensors(os.path.join(d, "model.safetensors"))[0]



def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    moe = os.path.join(build, "moe")
    checks = reflib.Checks()
    check = checks.check

    with tempfile.TemporaryDirectory() as tmp:
        tok = os.path.join(tmp, "tok")
        run(moe, "tokenizer", "train", "--input", os.path.join(ROOT, "docs"), "--vocab", str(BASE["vocab_size"]),
            "--out", tok, "--threads", "1")
        data = os.path.join(tmp, "train.tok")
        run(moe, "prepare", "--input", os.path.join(ROOT, "docs", "CLI.md"), "--tokenizer", tok, "--out", data)

        def make(name, over, init=True):
            cfg = dict(BASE, **over)
            path = os.path.join(tmp, f"{name}.json")
            with open(path, "w") as f:
                json.dump(cfg, f)
            d = os.path.join(tmp, name)
            if init:
                run(moe, "init", "--config", path, "--out", d, "--seed", "3")
            return path, d

        for name, (over, formats) in ROUND_TRIP.items():
            _, d = make(name, over)
            for fmt in formats:
                out = os.path.join(tmp, f"{name}.gguf" if fmt == "gguf" else f"{name}.hf")
                run(moe, "export", "--format", fmt, "--tokenizer", tok, "--out", out, d)
                back = os.path.join(tmp, f"{name}.{fmt}.back")
                r = run(moe, "import", "--out", back, out)
                a, b = weights(d), weights(back)
                same = a.keys() == b.keys() and all(a[k].shape == b[k].shape and
                                                   np.array_equal(a[k].view(np.uint32), b[k].view(np.uint32))
                                                   for k in a)
                check(f"{name}_{fmt}_weights_bit_identical", same, f"{len(a)} tensors")
                ca, cb = moe_files.read_config(d), moe_files.read_config(back)
                diff = [k for k in KEYS if ca[k] != cb[k]]
                check(f"{name}_{fmt}_config", not diff, ", ".join(f"{k}: {ca[k]} -> {cb[k]}" for k in diff))
                check(f"{name}_{fmt}_tokenizer", open(os.path.join(back, "tokenizer"), "rb").read() ==
                      open(tok, "rb").read(), r.stderr.decode().strip())
            if name in ("mixtral", "topk_default"):
                # a directory moe did not write (no moe_config, tied embeddings, no
                # tokenizer): the transformers keys alone give the same model
                hf = os.path.join(tmp, f"{name}.hf")
                cfg = json.load(open(os.path.join(hf, "config.json")))
                del cfg["moe_config"]
                w = weights(hf)
                w["lm_head.weight"] = w["model.embed_tokens.weight"]
                cfg["tie_word_embeddings"] = True
                foreign = os.path.join(tmp, f"{name}.foreign")
                os.makedirs(foreign)
                with open(os.path.join(foreign, "config.json"), "w") as f:
                    json.dump(cfg, f)
                moe_files.write_safetensors(os.path.join(foreign, "model.safetensors"),
                                            {k: v for k, v in w.items() if k != "lm_head.weight"})
                back = foreign + ".back"
                r = run(moe, "import", "--out", back, foreign)
                b, want = weights(back), weights(d)
                want["lm_head.weight"] = want["model.embed_tokens.weight"]
                same = b.keys() == want.keys() and all(np.array_equal(want[k], b[k]) for k in b)
                ca, cb = moe_files.read_config(d), moe_files.read_config(back)
                diff = [k for k in KEYS[:-2] if ca[k] != cb[k]]
                check(f"{name}_hf_foreign_import", same and not diff and "no tokenizer kept" in r.stderr.decode(),
                      ", ".join(f"{k}: {ca[k]} -> {cb[k]}" for k in diff) or r.stderr.decode().strip())
            if name == "mixtral":  # an imported model trains on
                r = run(moe, "train", "--model", back, "--data", data, "--out", os.path.join(tmp, "trained"),
                        "--steps", "2", "--threads", "1", ok=False)
                check("imported_model_trains", r.returncode == 0, r.stderr.decode()[-300:])

        # a config.json whose numbers moe cannot build is refused with one line
        # naming the key, before anything divides by it (decoder_sparse_step 0
        # was a division by zero)
        src = os.path.join(tmp, "qwen2moe_every2.hf")
        for key, value, says in (("decoder_sparse_step", 0, "decoder_sparse_step 0"),
                                 ("num_attention_heads", 0, "num_attention_heads 0"),
                                 ("num_experts", 0, "key 'n_experts'"),
                                 ("hidden_size", 1e30, "hidden_size"),
                                 ("moe_intermediate_size", 2 ** 31 - 1, "moe_intermediate_size")):
            bad = os.path.join(tmp, f"bad_{key}.hf")
            os.makedirs(bad)
            cfg = json.load(open(os.path.join(src, "config.json")))
            cfg[key] = value
            with open(os.path.join(bad, "config.json"), "w") as f:
                json.dump(cfg, f)
            os.symlink(os.path.join(src, "model.safetensors"), os.path.join(bad, "model.safetensors"))
            r = run(moe, "import", "--out", bad + ".back", bad, ok=False)
            err = r.stderr.decode().strip()
            check(f"hf_import_refuses_{key}", r.returncode == 1 and len(err.splitlines()) == 1 and says in err and
                  "config.json" in err and not os.path.exists(bad + ".back"), err)

        # a damaged model.safetensors is refused (it was freed twice: an abort)
        bad = os.path.join(tmp, "bad_safetensors.hf")
        os.makedirs(bad)
        os.symlink(os.path.join(src, "config.json"), os.path.join(bad, "config.json"))
        with open(os.path.join(src, "model.safetensors"), "rb") as f, \
                open(os.path.join(bad, "model.safetensors"), "wb") as g:
            g.write(f.read()[:100])
        r = run(moe, "import", "--out", bad + ".back", bad, ok=False)
        err = r.stderr.decode().strip()
        check("hf_import_refuses_damaged_safetensors", r.returncode == 1 and len(err.splitlines()) == 1 and
              "model.safetensors" in err and not os.path.exists(bad + ".back"), err)

        # 16-bit files: import gives the rounded weights
        _, d = make("r16", dict(TOPK, norm_topk_prob=True))
        a = weights(d)
        for t, u in (("f16", 2.0 ** -11), ("bf16", 2.0 ** -8)):  # unit roundoff: 10 and 7 stored bits
            for fmt in ("gguf", "hf"):
                out = os.path.join(tmp, f"r16.{t}.{fmt}")
                run(moe, "export", "--format", fmt, "--type", t, "--tokenizer", tok, "--out", out, d)
                back = out + ".back"
                run(moe, "import", "--out", back, out)
                b = weights(back)
                # round to nearest: |error| <= u |x| (f16 subnormals, |x| < 2^-14: half of
                # 2^-24 absolute, i.e. u relative to 2^-14)
                worst = max(float(np.max(np.abs(b[k] - a[k]) /
                                         np.maximum(np.abs(a[k]), 2.0 ** -14 if t == "f16" else 1e-30)))
                            for k in a if a[k].ndim > 1)
                norms_exact = all(np.array_equal(a[k], b[k]) for k in a if a[k].ndim == 1) if fmt == "gguf" else True
                check(f"{t}_{fmt}_rounded", worst <= u * (1 + 1e-6) and worst > 0 and norms_exact,
                      f"max relative error {worst:.2e} (unit roundoff {u:.2e})")

        for name, (over, fmt, says) in REFUSED.items():
            _, d = make(name, over)
            r = run(moe, "export", "--format", fmt, "--tokenizer", tok, "--out", os.path.join(tmp, "refused"), d, ok=False)
            err = r.stderr.decode().strip()
            check(f"refuses_{name}", r.returncode != 0 and len(err.splitlines()) == 1 and says in err and
                  not os.path.exists(os.path.join(tmp, "refused")), err)
        bogus = os.path.join(tmp, "bogus.gguf")
        with open(bogus, "wb") as f:
            f.write(b"GGML" + bytes(40))
        r = run(moe, "import", "--out", os.path.join(tmp, "nope"), bogus, ok=False)
        check("import_refuses_non_gguf", r.returncode != 0 and "not a GGUF file" in r.stderr.decode(),
              r.stderr.decode().strip())
        # expert_count as a float 0.5 made 0 experts, a division by zero (fuzz_gguf)
        key = b"deepseek.expert_count"
        raw = bytearray(open(os.path.join(tmp, "deepseek_G2_shared.gguf"), "rb").read())
        at = raw.index(struct.pack("<Q", len(key)) + key) + 8 + len(key)
        raw[at:at + 8] = struct.pack("<If", 6, 0.5)  # GGUF type 6: float32
        half = os.path.join(tmp, "half_expert.gguf")
        with open(half, "wb") as f:
            f.write(raw)
        r = run(moe, "import", "--out", os.path.join(tmp, "nope"), half, ok=False)
        check("import_refuses_fractional_expert_count", r.returncode == 1 and
              "deepseek.expert_count 0.5" in r.stderr.decode(), r.stderr.decode().strip())
        # the GGUF tensor names and shapes against llama.cpp's own, by hand
        for name in ("dense", "mixtral"):
            cfg = dict(BASE, **ROUND_TRIP[name][0])
            got = {n: d for n, d, _ in gguf_infos(open(os.path.join(tmp, f"{name}.gguf"), "rb").read())[0]}
            want = llama_cpp_table(cfg)
            diff = [k for k in sorted(set(got) | set(want)) if got.get(k) != want.get(k)]
            check(f"{name}_gguf_names_shapes_llama_cpp", not diff,
                  "; ".join(f"{k}: moe {got.get(k)}, llama.cpp {want.get(k)}" for k in diff[:4]))
        # the transformers tensor names and shapes against a table written by hand
        for name in ("dense", "mixtral"):
            cfg = dict(BASE, **ROUND_TRIP[name][0])
            got = {k: list(v.shape) for k, v in weights(os.path.join(tmp, f"{name}.hf")).items()}
            want = transformers_table(cfg)
            diff = [k for k in sorted(set(got) | set(want)) if got.get(k) != want.get(k)]
            check(f"{name}_hf_names_shapes_transformers", not diff,
                  "; ".join(f"{k}: moe {got.get(k)}, transformers {want.get(k)}" for k in diff[:4]))
        # a tied head (no output.weight, as llama.cpp's converter writes a model
        # that ties it) is imported with lm_head a copy of the embedding
        tied = os.path.join(tmp, "tied.gguf")
        untie(os.path.join(tmp, "dense.gguf"), tied)
        r = run(moe, "import", "--out", tied + ".back", tied, ok=False)
        w = weights(tied + ".back") if r.returncode == 0 else {}
        check("import_tied_head", r.returncode == 0 and
              np.array_equal(w["lm_head.weight"], w["model.embed_tokens.weight"]), r.stderr.decode().strip())
        trunc = os.path.join(tmp, "trunc.gguf")
        with open(os.path.join(tmp, "dense.gguf"), "rb") as f, open(trunc, "wb") as g:
            g.write(f.read()[:5000])
        r = run(moe, "import", "--out", os.path.join(tmp, "nope"), trunc, ok=False)
        check("import_refuses_truncated", r.returncode != 0 and "trunc" in r.stderr.decode(),
              r.stderr.decode().strip())

        # sparse upcycling: a trained dense model, then MoE models from it
        dense_cfg, dense = make("up_dense", {"lr": 1e-2}, init=False)
        run(moe, "train", "--config", dense_cfg, "--data", data, "--tokenizer", tok, "--out", dense,
            "--steps", "4", "--threads", "1")

        def step0(model):
            out = os.path.join(tmp, os.path.basename(model) + ".run")
            run(moe, "train", "--model", model, "--data", data, "--out", out, "--steps", "1", "--threads", "1",
                "--lr", "0")
            with open(os.path.join(out, "metrics.jsonl")) as f:
                return json.loads(f.readline())["lm_loss"]
        ref = step0(dense)
        for name, over, equal in (("renorm_k2", dict(TOPK, norm_topk_prob=True), True),
                                  ("renorm_k1", dict(TOPK, top_k=1, norm_topk_prob=True), True),
                                  ("softmax_k2", dict(TOPK), False)):
            cfg, _ = make(f"up_{name}", dict(over, lr=1e-2), init=False)
            up = os.path.join(tmp, f"up_{name}")
            run(moe, "init", "--config", cfg, "--upcycle", dense, "--out", up, "--seed", "9")
            loss = step0(up)
            # every expert is the dense FFN: y = sum_e g_e f(x) = f(x) when the gates sum to 1,
            # up to float rounding of the weighted sum (~1e-7 relative on a loss of ~5)
            same = abs(loss - ref) <= 1e-5 * abs(ref)
            check(f"upcycle_{name}_step0_loss", same == equal,
                  f"dense {ref:.8f} upcycled {loss:.8f} ({'equal' if equal else 'gates < 1: must differ'})")
        _, bad = make("up_bad", dict(TOPK, granularity=2), init=False)
        r = run(moe, "init", "--config", os.path.join(tmp, "up_bad.json"), "--upcycle", dense, "--out", bad, ok=False)
        check("upcycle_refuses_granularity", r.returncode != 0 and "granularity" in r.stderr.decode(),
              r.stderr.decode().strip())
    return checks.end()


if __name__ == "__main__":
    sys.exit(main())
