# once: checks the exported files in llama.cpp; the exporter runs under the sanitizers in ref/test_interop
"""test_llama_cpp.py — `moe export --format gguf` against real llama.cpp (the
prebuilt CPU binary of npm node-llama-cpp 3.21.1, driven by
tests/ref/llama_cpp_check.mjs). A tiny BPE tokenizer and four models trained
a few steps: dense (llama), TopK renormalised (Mixtral-style llama), TopK
default gates with granularity and a shared expert (deepseek), TopK
renormalised with a shared expert (bailingmoe). For each, llama.cpp must give:
the ids of a mixed text equal to `moe tokenizer encode`; 32 greedy tokens
equal to `moe generate --temperature 0`; next-token log-probabilities within
1e-3 of `moe score` (f32). The f16 and bf16 files are checked against moe
scoring the same file imported back (so both sides hold the same rounded
weights). Exits 77 (skip) when node-llama-cpp cannot be installed or run.
Usage: test_llama_cpp.py BUILD_DIR"""
import json
import os
import subprocess
import sys
import tempfile

import reflib
from reflib import run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHECK = os.path.join(ROOT, "tests", "ref", "llama_cpp_check.mjs")
MIXED = ("Hello world, the model's 12345 tokens: ünïcödé, 日本語, emoji 🙂 and\n"
         "  indented code() {return x+1;}\t<tab> 's 'll don't")
# rope_theta and norm_eps are not moe's defaults, so that a key written or read
# under a wrong name (and its reader's fallback, equal to the default) shows
BASE = {"rope_theta": 50000.0, "norm_eps": 1e-6, "vocab_size": 384, "hidden": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 64,
        "max_seq_len": 96, "seq_len": 32, "batch_size": 4, "steps": 6, "lr": 1e-2, "warmup": 1,
        "init_std": 0.1, "precision": "fp32"}  # TOL_F32 is fp32's (auto is bf16 on some CPUs)
TOPK = {"ffn": "moe", "router": "topk", "n_experts": 4, "top_k": 2}
CASES = {  # name -> (config overrides, llama.cpp architecture)
    "dense": ({}, "llama"),
    "mixtral": (dict(TOPK, norm_topk_prob=True), "llama"),
    "deepseek": (dict(TOPK, granularity=2, n_shared_experts=1), "deepseek"),
    "bailing": (dict(TOPK, norm_topk_prob=True, n_shared_experts=1), "bailingmoe"),
}
# f32 (flash attention off, f32 KV cache: llama_cpp_check.mjs): both sides
# compute in float32 from the same weights; what differs is the order of sums
# (ggml's blocked dot products vs oneDNN), RoPE angles (llama.cpp's float
# theta powers vs our double) and exp: each ~1e-7 relative on activations of
# size O(1), through two layers and a logsumexp over 384 logits of size < 10:
# ~1e-5 at most (measured 1.4e-6). The bound 1e-3 holds with room,
# and still catches any maths difference (un-renormalised gates: ~0.5 nats).
TOL_F32 = 1e-3
# 16-bit files: ggml rounds each matmul's activations to the weight type
# too (f16: relative 2^-11 = 4.9e-4; bf16: 2^-8 = 3.9e-3) while moe keeps
# them in float32. Independent roundings of ~12 matmul inputs of two layers
# add as a random walk, sqrt(12) ~ 3.5 units, on logits of size < 3 feeding a
# log-softmax: ~5e-3 (f16), ~4e-2 (bf16) at most; measured 1.2e-4 and 3.5e-3.
TOL_16 = {"f16": 5e-3, "bf16": 4e-2}


def skip(why):
    print(f"skip: {why}")
    sys.exit(77)



def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    moe = os.path.join(build, "moe")
    if subprocess.run([os.path.join(ROOT, "tools", "npm_deps.sh")]).returncode != 0:
        skip("tools/npm_deps.sh could not install node-llama-cpp (no npm registry?)")
    checks = reflib.Checks()
    check = checks.check

    with tempfile.TemporaryDirectory() as tmp:
        # a tokenizer and a corpus from the repository's own prose
        tok, data = reflib.docs_corpus(moe, tmp, BASE["vocab_size"])
        ours_ids = run(moe, "tokenizer", "encode", "--tokenizer", tok, stdin=MIXED.encode()).split()
        ours_ids = [int(x) for x in ours_ids]
        prompt = "The router"
        prompt_ids = [int(x) for x in run(moe, "tokenizer", "encode", "--tokenizer", tok,
                                          stdin=prompt.encode()).split()]
        score_ids = ours_ids[:60]
        req = os.path.join(tmp, "req.json")
        with open(req, "w") as f:
            json.dump({"text": MIXED, "prompt": prompt_ids, "n_greedy": 32, "score": score_ids}, f)
        ids_file = os.path.join(tmp, "score.txt")
        with open(ids_file, "w") as f:
            f.write(" ".join(map(str, score_ids)))

        def llama(gguf):
            r = subprocess.run(["node", CHECK, gguf, req], capture_output=True)
            if r.returncode != 0:
                err = r.stderr.decode(errors="replace")
                if "Cannot find" in err or "ERR_MODULE_NOT_FOUND" in err or "GLIBC" in err:
                    skip(f"node-llama-cpp cannot run here: {err.strip().splitlines()[-1][:300]}")
                raise RuntimeError(f"llama.cpp on {gguf}: {err[-1500:]}")
            return json.loads(r.stdout)

        def moe_logprobs(model):
            return json.loads(run(moe, "score", "--model", model, "--tokens", ids_file))["logprobs"]

        for name, (over, arch) in CASES.items():
            cfg = dict(BASE, **over)
            cfg_path = os.path.join(tmp, f"{name}.json")
            with open(cfg_path, "w") as f:
                json.dump(cfg, f)
            model = os.path.join(tmp, name)
            run(moe, "train", "--config", cfg_path, "--data", data, "--tokenizer", tok, "--out", model,
                "--threads", "2")
            gguf = os.path.join(tmp, f"{name}.gguf")
            run(moe, "export", "--format", "gguf", "--out", gguf, model)
            with open(gguf, "rb") as f:
                head = f.read(1 << 16)
            check(f"{name}_arch_{arch}", b"general.architecture" in head and
                  head.split(b"general.architecture", 1)[1][12:12 + len(arch)] == arch.encode())
            got = llama(gguf)
            check(f"{name}_tokenize", got["tokens"] == ours_ids,
                  f"llama.cpp {got['tokens'][:12]}... moe {ours_ids[:12]}...")
            # greedy: moe generate prints the prompt and the continuation text
            text = run(moe, "generate", "--model", model, "--prompt", prompt, "--max-tokens", "32",
                       "--temperature", "0")
            theirs = run(moe, "tokenizer", "decode", "--tokenizer", tok,
                         stdin=" ".join(map(str, got["greedy"])).encode())
            eot = "<|endoftext|>".encode()
            # generate ends its output with one newline of its own; the text
            # itself may end in newlines too, so drop exactly one
            ours_cont = text[len(prompt.encode()):]
            ours_cont = ours_cont[:-1] if ours_cont.endswith(b"\n") else ours_cont
            theirs = theirs.split(eot)[0]
            check(f"{name}_greedy_32", ours_cont.startswith(theirs) and len(got["greedy"]) == 32,
                  f"moe {ours_cont[:60]!r} llama.cpp {theirs[:60]!r}")
            ours_lp = moe_logprobs(model)
            # trained: the next-token distributions are far from uniform (-ln 384 = -5.95 each)
            check(f"{name}_not_uniform", max(ours_lp) - min(ours_lp) > 1.0,
                  f"log-probs from {min(ours_lp):.2f} to {max(ours_lp):.2f}")
            worst = max(abs(a - b) for a, b in zip(ours_lp, got["logprobs"]))
            check(f"{name}_logprobs_f32", len(ours_lp) == len(got["logprobs"]) and worst <= TOL_F32,
                  f"max |diff| {worst:.2e} over {len(ours_lp)} positions")
            if name != "deepseek":
                continue
            for t in ("f16", "bf16"):
                g16 = os.path.join(tmp, f"{name}.{t}.gguf")
                run(moe, "export", "--format", "gguf", "--type", t, "--out", g16, model)
                back = os.path.join(tmp, f"{name}.{t}.back")
                run(moe, "import", "--out", back, g16)
                got = llama(g16)
                lp = moe_logprobs(back)
                worst = max(abs(a - b) for a, b in zip(lp, got["logprobs"]))
                check(f"{name}_logprobs_{t}", worst <= TOL_16[t], f"max |diff| {worst:.2e}")
        # tiktoken rank files: merges derived from the ranks; cl100k and
        # Llama 3 also have special tokens, unused ids and llama.cpp's
        # "llama-bpe" pre-tokenizer (o200k is refused for GGUF: docs/INTEROP.md)
        text = MIXED + "   spaces\n\n 'S 'LL 12345 \u00c9COLE"
        for name, vocab in (("r50k_base", 50257), ("cl100k_base", 100277), ("llama3", 128256)):
            ranks = os.path.join(ROOT, ".cache", "tiktoken", f"{name}.tiktoken")
            cfg_path = os.path.join(tmp, f"{name}.json")
            with open(cfg_path, "w") as f:
                json.dump(dict(BASE, vocab_size=vocab, hidden=8, n_heads=2, n_kv_heads=1, ffn_dim=8, n_layers=1), f)
            run(moe, "init", "--config", cfg_path, "--out", os.path.join(tmp, name))
            gguf = os.path.join(tmp, f"{name}.gguf")
            run(moe, "export", "--format", "gguf", "--tokenizer", ranks, "--out", gguf, os.path.join(tmp, name))
            with open(req, "w") as f:
                json.dump({"text": text, "prompt": [1], "n_greedy": 1, "score": [1, 2]}, f)
            ours = run(moe, "tokenizer", "encode", "--tokenizer", ranks, stdin=text.encode())
            got = llama(gguf)["tokens"]
            want = [int(x) for x in ours.split()]
            check(f"{name}_tokenize", got == want, f"{len(want)} ids" if got == want else f"moe {want[:12]} llama.cpp {got[:12]}")
    return checks.end()


if __name__ == "__main__":
    sys.exit(main())
