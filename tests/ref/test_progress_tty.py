# once: redraws at a pseudo-terminal; eval's and analyze's code runs under the sanitizers in cli/test_eval
"""test_progress_tty.py — `moe eval` and `moe analyze` show their progress
(issue 14): at a terminal (a pseudo-terminal as stderr) a line with the
percentage and the batches done is redrawn while a pass runs, and it ends at
100%; in a log (stderr a file) a line at most every 30 seconds and the last,
so a pass this short writes none (unless a slow build, e.g. ASan on a busy
machine, makes it outlast 30 s: then as many as its time allows).

Usage: test_progress_tty.py BUILD_DIR
"""
import json
import os
import pty
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import moe_files  # noqa: E402
from reflib import Checks, run  # noqa: E402


def stderr_at_terminal(args):
    """Runs args with stderr on a pseudo-terminal; returns (exit status, what it wrote there)."""
    master, slave = pty.openpty()
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return p.wait(), out.decode(errors="replace")


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    moe = os.path.abspath(os.path.join(build, "moe"))
    checks = Checks()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "c.json")
        with open(cfg, "w") as f:
            json.dump({"vocab_size": 257, "hidden": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2,
                       "ffn_dim": 64, "max_seq_len": 64, "seq_len": 64, "ffn": "moe", "router": "relu",
                       "n_experts": 4, "top_k": 1}, f)
        model = os.path.join(tmp, "m")
        run(moe, "init", "--config", cfg, "--out", model)
        data = os.path.join(tmp, "d.tok")
        # enough batches that the pass outlasts the terminal's 0.1 s redraw interval
        moe_files.write_tokens(data, np.random.default_rng(0).integers(0, 256, 300000), 257)
        for cmd in (["eval", "--model", model, "--data", data, "--max-tokens", "0", "--json",
                     os.path.join(tmp, "e.json")],
                    ["analyze", "--model", model, "--data", data, "--max-tokens", "0", "--out",
                     os.path.join(tmp, "a.json"), "--tokenizer", "bytes"]):
            name = cmd[0]
            rc, text = stderr_at_terminal([moe] + cmd)
            lines = re.findall(r"moe \w+: [^\r\n]*?(\d+)% \((\d+)/(\d+) batches", text)
            checks.check(f"{name}_exit", rc == 0, "" if rc == 0 else text[-300:])
            checks.check(f"{name}_progress_redrawn", len(lines) >= 2 and "\r\033[K" in text,
                         f"{len(lines)} progress lines")
            checks.check(f"{name}_progress_ends_at_100", bool(lines) and lines[-1][0] == "100" and
                         lines[-1][1] == lines[-1][2], str(lines[-1:]))
            t0 = time.monotonic()
            r = subprocess.run([moe] + cmd, capture_output=True, stdin=subprocess.DEVNULL)
            seconds = time.monotonic() - t0
            shown = r.stderr.count(b"batches")
            allowed = int(seconds // 30)
            allowed += 1 if allowed else 0  # every 30 s, then the last line
            ok = r.returncode == 0 and shown <= allowed
            checks.check(f"{name}_log_stays_short", ok,
                         "" if ok else f"{shown} progress lines in {seconds:.0f} s (at most {allowed}): " +
                         r.stderr.decode(errors="replace")[-300:])
    return checks.end()


if __name__ == "__main__":
    sys.exit(main())
