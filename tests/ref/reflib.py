"""reflib.py — what the Python reference tests share: running a program that
must succeed, and counting named checks with the runner's closing line. Not
a test itself (tests/run.sh runs test_*.py only)."""
import subprocess


def proc(*args, stdin=None, ok=True):
    """Runs args; with ok, a non-zero exit raises with the end of its stderr."""
    r = subprocess.run(args, input=stdin, capture_output=True)
    if ok and r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))}: {r.stderr.decode(errors='replace')[-800:]}")
    return r


def run(*args, stdin=None):
    """Runs args, which must succeed; returns its stdout (bytes)."""
    return proc(*args, stdin=stdin).stdout


class Checks:
    """check(name, cond, detail) prints ok / FAIL a line each; end() prints
    'N passed, N failed' and returns the exit status."""

    def __init__(self):
        self.passed = self.failed = 0

    def check(self, name, cond, detail=""):
        print(f"{'ok  ' if cond else 'FAIL'} {name}{(': ' + detail) if detail else ''}")
        self.passed += bool(cond)
        self.failed += not cond

    def end(self):
        print(f"{self.passed} passed, {self.failed} failed")
        return 1 if self.failed else 0
