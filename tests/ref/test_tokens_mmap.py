"""test_tokens_mmap.py — corpora larger than memory: a token file is read
through a memory map and checked in chunks whose pages are handed back, so
the peak resident memory of `moe train` and `moe eval` on a 40M-token file
stays within a few MB of the same commands on a 1M-token file (before the
map, each read copied the file and widened every id to 4 bytes: 240 MB
more at 40M tokens). The two files differ in length only.
Usage: test_tokens_mmap.py BUILD_DIR"""
import json
import os
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moe_files  # noqa: E402
from reflib import Checks  # noqa: E402

V = 512
CFG = {"vocab_size": V, "hidden": 32, "n_layers": 1, "n_heads": 4, "n_kv_heads": 2, "max_seq_len": 64,
       "ffn": "moe", "router": "topk", "n_experts": 4, "top_k": 1, "steps": 3, "batch_size": 4,
       "seq_len": 64, "precision": "fp32", "threads": 1}
# The loader's shuffled row order is the one structure that grows with the
# file: 8 bytes a row of 64 tokens, 5 MB at 40M tokens. Pages of mapped ids
# the steps touch and allocator noise stay well under the rest of the margin.
MARGIN_MB = 8


def peak_rss_mb(*args):
    """Runs args (must succeed) and returns its peak resident set in MB."""
    log = tempfile.TemporaryFile()
    pid = os.fork()
    if pid == 0:
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        os.dup2(log.fileno(), 2)
        os.execv(args[0], list(args))
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        log.seek(0)
        raise RuntimeError(f"{' '.join(args)} exited {os.waitstatus_to_exitcode(status)}: "
                           f"{log.read().decode(errors='replace')[-600:]}")
    return usage.ru_maxrss / 1024.0


def write_corpus(path, n, rng):
    """n ids in 7 domains of equal-length documents, like a prepared corpus."""
    ids = rng.integers(0, V, size=n, dtype=np.uint32)
    docs = list(range(0, n, n // 70))
    moe_files.write_tokens(path, ids, vocab_size=V, doc_start=docs,
                           doc_domain=[i % 7 for i in range(len(docs))],
                           domains=[f"d{k}" for k in range(7)])


def main():
    moe = os.path.join(sys.argv[1] if len(sys.argv) > 1 else "build", "moe")
    c = Checks()
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "cfg.json")
        with open(cfg, "w") as f:
            json.dump(CFG, f)
        rss = {}
        for name, n in (("small", 1_000_000), ("large", 40_000_000)):
            tok = os.path.join(tmp, f"{name}.tok")
            write_corpus(tok, n, rng)
            run = os.path.join(tmp, f"run-{name}")
            rss[name, "train"] = peak_rss_mb(moe, "train", "--config", cfg, "--data", tok, "--out", run)
            rss[name, "eval"] = peak_rss_mb(moe, "eval", "--model", run, "--data", tok,
                                            "--max-tokens", "8192", "--threads", "1")
            os.remove(tok)
        for cmd in ("train", "eval"):
            small, large = rss["small", cmd], rss["large", cmd]
            c.check(f"{cmd}: peak RSS at 40M tokens within {MARGIN_MB} MB of 1M tokens",
                    large - small <= MARGIN_MB, f"{small:.1f} MB against {large:.1f} MB")
    return c.end()


if __name__ == "__main__":
    sys.exit(main())
