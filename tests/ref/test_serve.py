"""test_serve.py — `moe serve` against the real OpenAI client (npm openai
6.30.1, pinned in tools/npm_deps.sh, driven by tests/ref/serve_check.mjs).
A tiny BPE tokenizer and a ReLU (ReMoE) model trained a few steps; the
server on a free loopback port (127.0.0.1 only). Checks: /v1/models;
greedy completions, plain and streamed, equal `moe generate --temperature
0`, and sampled ones with a seed `moe generate --seed`; prompt log-probs (echo, logprobs, max_tokens 0, and the form
lm-evaluation-harness's local-completions sends) equal `moe score`'s; chat
(the messages' contents joined, each followed by a newline) plain and
streamed equals generate on that text; 8 concurrent clients, each with its
own prompt, seed and length, each get their own answer; the same seed samples the same text; stop strings;
bad requests get 4xx in OpenAI's error shape; a client that leaves
mid-stream does not hurt the next request; SIGTERM, with a request still
sending its body, ends the server with exit 0. Exits 77 (skip) when the npm package cannot be installed or moe was
built without libmicrohttpd. Usage: test_serve.py BUILD_DIR"""
import base64
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time

import reflib
from reflib import run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHECK = os.path.join(ROOT, "tests", "ref", "serve_check.mjs")
CFG = {"vocab_size": 384, "hidden": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 64,
       "ffn": "moe", "router": "relu", "n_experts": 4, "top_k": 1,
       "max_seq_len": 96, "seq_len": 32, "batch_size": 4, "steps": 30, "lr": 1e-2, "warmup": 1,
       "init_std": 0.1, "precision": "fp32"}
# Prompt log-probs: the server runs the very forward pass `moe score` runs
# (moe_model_forward with targets, same precision, same ids) and both write
# each value as the shortest decimal that reads back to the same double, so
# the derived tolerance is zero: any difference is a different computation.
PROMPTS = ["The router", "Experts", "A token", "ReLU", "The model", "Training", "Each layer", "Load"]


def skip(why):
    print(f"skip: {why}")
    sys.exit(77)


def start_server(moe, model):
    """Starts moe serve on a free port; returns (process, base URL)."""
    p = subprocess.Popen([moe, "serve", "--model", model, "--host", "127.0.0.1", "--port", "0"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    line, t0 = b"", time.time()
    while time.time() - t0 < 30 and b"http://" not in line:
        r, _, _ = select.select([p.stderr], [], [], 1.0)
        if r:
            line = p.stderr.readline()
            if not line:
                break
    if b"http://" not in line:
        p.kill()
        raise RuntimeError(f"moe serve did not start: {line!r} {p.stderr.read()[-500:]!r}")
    url = line.split(b"http://", 1)[1].split()[0].decode()
    return p, "http://" + url


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    moe = os.path.join(build, "moe")
    help_text = subprocess.run([moe, "serve", "--help"], capture_output=True)
    if help_text.returncode != 0:
        skip(f"moe serve is not available: {help_text.stderr.decode(errors='replace').strip()[-300:]}")
    if subprocess.run([os.path.join(ROOT, "tools", "npm_deps.sh")]).returncode != 0:
        skip("tools/npm_deps.sh could not install the npm openai client (no npm registry?)")
    if not os.path.isfile(os.path.join(ROOT, ".cache", "npm", "node_modules", "openai", "index.mjs")):
        skip("the npm openai client is not installed in .cache/npm")
    checks = reflib.Checks()
    check = checks.check
    with tempfile.TemporaryDirectory() as tmp:
        tok, data = reflib.docs_corpus(moe, tmp, CFG["vocab_size"])
        cfg = os.path.join(tmp, "cfg.json")
        with open(cfg, "w") as f:
            json.dump(CFG, f)
        model = os.path.join(tmp, "model")
        run(moe, "train", "--config", cfg, "--data", data, "--tokenizer", tok, "--out", model, "--threads", "2")

        def generate(prompt, n, temperature=0, seed=1):
            out = run(moe, "generate", "--model", model, "--prompt", prompt, "--max-tokens", str(n),
                      "--temperature", str(temperature), "--seed", str(seed))
            assert out.startswith(prompt.encode()) and out.endswith(b"\n")
            return base64.b64encode(out[len(prompt.encode()):-1]).decode()

        # the first greedy; the others sampled (temperature 1) with a seed and a length of their own
        greedy = [{"prompt": p, "max_tokens": 24 + i, "temperature": 1 if i else 0, "seed": 100 + i,
                   "expect_b64": generate(p, 24 + i, 1 if i else 0, 100 + i)} for i, p in enumerate(PROMPTS)]
        text = ("The router sends each token to the experts whose gate is positive; "
                "an L1 penalty keeps the number small.")
        ids = [int(x) for x in run(moe, "tokenizer", "encode", "--tokenizer", tok, stdin=text.encode()).split()]
        ids_file = os.path.join(tmp, "ids.txt")
        with open(ids_file, "w") as f:
            f.write(" ".join(map(str, ids)))
        expect = json.loads(run(moe, "score", "--model", model, "--tokens", ids_file))["logprobs"]
        check("score_not_uniform", max(expect) - min(expect) > 1.0,
              f"log-probs from {min(expect):.2f} to {max(expect):.2f}")
        messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "The router"}]
        chat_prompt = "".join(m["content"] + "\n" for m in messages)
        chat = {"messages": messages, "max_tokens": 20, "expect_b64": generate(chat_prompt, 20)}

        server, base = start_server(moe, model)
        try:
            req = os.path.join(tmp, "req.json")
            with open(req, "w") as f:
                json.dump({"base": base + "/v1" if not base.endswith("/v1") else base,
                           "context": CFG["max_seq_len"], "greedy": greedy,
                           "score": {"ids": ids, "expect": expect}, "chat": chat}, f)
            r = subprocess.run(["node", CHECK, req], capture_output=True, timeout=120)
            if r.returncode != 0:
                err = r.stderr.decode(errors="replace")
                if "Cannot find" in err or "ERR_MODULE_NOT_FOUND" in err:
                    skip(f"the npm openai client cannot run here: {err.strip().splitlines()[-1][:300]}")
                raise RuntimeError(f"serve_check.mjs: {err[-2000:]}")
            for name, ok, detail in json.loads(r.stdout):
                check(name, ok, detail)
            check("server_alive_after_checks", server.poll() is None)
        finally:
            # SIGTERM with a request in flight: its body only half sent
            host, port = base.split("//", 1)[1].split("/", 1)[0].split(":")
            half = None
            try:
                half = socket.create_connection((host, int(port)), timeout=5)
                half.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"prompt\":")
                time.sleep(0.2)
            except OSError:
                pass
            server.send_signal(signal.SIGTERM)
            try:
                rc = server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                rc = "hung"
            tail = server.stderr.read().decode(errors="replace")
            if half:
                half.close()
        check("sigterm_exit_0", rc == 0, f"exit {rc}; {tail.strip()[-300:]}")
        check("no_sanitizer_report", "runtime error" not in tail and "Sanitizer" not in tail, tail[-300:])
    return checks.end()


if __name__ == "__main__":
    sys.exit(main())
