"""test_generate_tty.py — `moe generate --interactive` at a real terminal (a
pseudo-terminal, so Ctrl-C goes through the line discipline as SIGINT, as it
does for a user): the banner, Ctrl-C stopping an answer without ending the
program, /commands changing the sampling, Ctrl-C at the prompt and Ctrl-D
leaving with status 0.

Usage: test_generate_tty.py BUILD_DIR
"""
import os
import pty
import select
import subprocess
import sys
import tempfile
import time

build = sys.argv[1] if len(sys.argv) > 1 else "build"
moe = os.path.abspath(os.path.join(build, "moe"))
passed = failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print("ok   " + name)
    else:
        failed += 1
        print("FAIL " + name + (": " + detail if detail else ""))


class Term:
    """moe in a pseudo-terminal: stdin, stdout and stderr are the terminal."""

    def __init__(self, args):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execv(moe, [moe] + args)
        self.out = b""
        self.pos = 0  # where the next search starts: past the last match

    def read_until(self, pattern, timeout):
        """Reads until pattern appears past the last match; True if it did."""
        end = time.time() + timeout
        while True:
            i = self.out.find(pattern, self.pos)
            if i >= 0:
                self.pos = i + len(pattern)
                return True
            if time.time() >= end:
                return False
            r, _, _ = select.select([self.fd], [], [], 0.1)
            if r:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:  # the child is gone
                    chunk = b""
                if not chunk:
                    return False
                self.out += chunk

    def drain(self, seconds):
        """Reads for `seconds`, matching nothing."""
        pos = self.pos
        self.read_until(b"\0never\0", seconds)
        self.pos = pos

    def send(self, data):
        os.write(self.fd, data)

    def wait(self, timeout):
        """(exited, status) of the child within timeout seconds; drains output meanwhile."""
        end = time.time() + timeout
        while time.time() < end:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return True, status
            self.drain(0.1)
        return False, None

    def kill(self):
        try:
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
        except OSError:
            pass


def main():
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "cfg.json")
        with open(cfg, "w") as f:
            f.write('{"vocab_size": 257, "hidden": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2,'
                    ' "ffn_dim": 64, "max_seq_len": 512, "seq_len": 16, "init_std": 0.05}')
        model = os.path.join(tmp, "m")
        subprocess.run([moe, "init", "--config", cfg, "--out", model], check=True, stdout=subprocess.DEVNULL)

        # a long answer that Ctrl-C stops: greedy decoding of this random model
        # runs thousands of tokens without <|endoftext|> (a million take minutes)
        os.environ["OMP_NUM_THREADS"] = "1"  # one token at a time: one thread is fastest
        t = Term(["generate", "--model", model, "--interactive", "--max-tokens", "1000000",
                  "--temperature", "0"])
        try:
            check("banner", t.read_until(b"> ", 10) and b"Ctrl-C stops an answer" in t.out
                  and b"Ctrl-D" in t.out and b"An empty line continues the text" in t.out,
                  repr(t.out[-300:]))
            t.send(b"hello\n")
            end = time.time() + 15  # a sanitizer build on a busy machine is slow: wait for 200 bytes
            while len(t.out) - t.pos <= 200 and time.time() < end:
                t.drain(0.2)
            before = len(t.out) - t.pos
            check("answer_streams", before > 200 and b"> " not in t.out[t.pos:],
                  "%d bytes: %r" % (before, t.out[t.pos:t.pos + 300]))
            t.send(b"\x03")  # Ctrl-C: the terminal sends SIGINT
            stopped = t.read_until(b"[stopped]", 5) and t.read_until(b"> ", 5)
            exited, status = (True, None) if not stopped else t.wait(0.5)
            check("ctrl_c_stops_answer", stopped and not exited,
                  "exited %s status %s: %r" % (exited, status, t.out[-200:]))

            # commands change the sampling: 5 tokens per answer
            t.send(b"/temp 0.7\n")
            check("cmd_temp", t.read_until(b"temperature 0.7", 5))
            t.send(b"/max 5\n")
            check("cmd_max", t.read_until(b"at most 5 tokens per answer", 5))
            t.send(b"/top-p 2\n")
            check("cmd_out_of_range", t.read_until(b"value out of range", 5))
            t.send(b"/frobnicate\n")
            check("cmd_unknown", t.read_until(b"unknown command '/frobnicate'", 5))
            t.send(b"/help\n")
            check("cmd_help", t.read_until(b"/top-k K", 5) and t.read_until(b"> ", 5), repr(t.out[-600:]))
            mark = t.pos
            t.send(b"ab\n")
            got_prompt = t.read_until(b"> ", 10)
            answer = t.out[mark:t.pos]
            check("short_answer_after_max", got_prompt and len(answer) < 200, repr(answer))

            # Ctrl-C at the prompt leaves, with status 0
            t.send(b"\x03")
            exited, status = t.wait(5)
            check("ctrl_c_at_prompt_exits", exited and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0,
                  "exited %s status %s" % (exited, status))
        finally:
            t.kill()

        # Ctrl-D (end of input) at the prompt leaves, with status 0
        t = Term(["generate", "--model", model, "--interactive", "--max-tokens", "3"])
        try:
            t.read_until(b"> ", 10)
            t.send(b"\x04")
            exited, status = t.wait(5)
            check("ctrl_d_exits", exited and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0,
                  "exited %s status %s" % (exited, status))
        finally:
            t.kill()

    print("# %d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


main()
