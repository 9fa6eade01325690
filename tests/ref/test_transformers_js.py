# once: checks exported folders in Transformers.js (two tiny models); the exporter runs under the sanitizers in cli/test_export_onnx
"""test_transformers_js.py — `moe export --format onnx` folders in
Transformers.js (npm @huggingface/transformers 4.3.2, its text-generation
pipeline on onnxruntime-node's CPU library, driven by
tests/ref/transformers_js_check.js). A ReMoE (ReLU router) and a
CartesianMoE model, each trained a few steps: the pipeline loads the
folder, its tokenizer gives the prompt the ids `moe tokenizer encode`
gives, and its greedy generation (32 new tokens, the KV cache) is the
continuation `moe generate --temperature 0` prints. Exits 77 (skip) when
the package cannot be installed or loaded. Usage: test_transformers_js.py BUILD_DIR"""
import json
import os
import subprocess
import sys
import tempfile

import reflib
from reflib import run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHECK = os.path.join(ROOT, "tests", "ref", "transformers_js_check.js")
BASE = {"vocab_size": 384, "hidden": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 64,
        "max_seq_len": 96, "seq_len": 32, "batch_size": 4, "steps": 4, "lr": 1e-2, "warmup": 1,
        "init_std": 0.1, "precision": "fp32", "ffn": "moe", "n_experts": 4, "top_k": 1}
CASES = {"remoe": {"router": "relu"}, "cartesian": {"ffn": "cartesian", "router": "topk"}}
PROMPT = "The router"


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    moe = os.path.join(build, "moe")
    env = reflib.node_env("@huggingface/transformers")
    checks = reflib.Checks()
    check = checks.check

    with tempfile.TemporaryDirectory() as tmp:
        tok, data = reflib.docs_corpus(moe, tmp, BASE["vocab_size"])
        prompt_ids = [int(x) for x in run(moe, "tokenizer", "encode", "--tokenizer", tok,
                                          stdin=PROMPT.encode()).split()]
        texts = []
        for name, over in CASES.items():
            cfg_path = os.path.join(tmp, f"{name}.json")
            with open(cfg_path, "w") as f:
                json.dump(dict(BASE, **over), f)
            model = os.path.join(tmp, name)
            run(moe, "train", "--config", cfg_path, "--data", data, "--tokenizer", tok, "--out", model,
                "--threads", "2")
            folder = os.path.join(tmp, f"{name}-onnx")
            run(moe, "export", "--format", "onnx", "--out", folder, model)
            r = subprocess.run(["node", CHECK, folder, PROMPT, "32"], capture_output=True, env=env)
            if r.returncode != 0:
                raise RuntimeError(f"Transformers.js on {folder}: {r.stderr.decode(errors='replace')[-1500:]}")
            got = json.loads(r.stdout)
            check(f"{name}_prompt_ids", got["prompt_ids"] == prompt_ids,
                  f"Transformers.js {got['prompt_ids']} moe {prompt_ids}")
            text = run(moe, "generate", "--model", model, "--prompt", PROMPT, "--max-tokens", "32",
                       "--temperature", "0")
            ours = text[len(PROMPT.encode()):].rstrip(b"\n")
            theirs = run(moe, "tokenizer", "decode", "--tokenizer", tok,
                         stdin=" ".join(map(str, got["greedy"])).encode())
            # both stop at <|endoftext|>; moe's trailing newlines are cut
            theirs = theirs.split("<|endoftext|>".encode())[0].rstrip(b"\n")
            check(f"{name}_greedy_32", ours == theirs, f"moe {ours!r} Transformers.js {theirs!r}")
            texts.append(theirs)
            check(f"{name}_pipeline_text", got["text"].startswith(PROMPT),
                  repr(got["text"][:80]))
        # a model may end its text at once (<|endoftext|>), not both
        check("greedy_not_vacuous", any(texts), f"continuations {texts}")
    return checks.end()


if __name__ == "__main__":
    sys.exit(main())
