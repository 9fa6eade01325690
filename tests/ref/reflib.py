"""reflib.py — what the Python reference tests share: running a program that
must succeed, and counting named checks with the runner's closing line. Not
a test itself (tests/run.sh runs test_*.py only)."""
import os
import subprocess
import sys


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


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NODE_PATH = os.path.join(ROOT, ".cache", "npm", "node_modules")


def skip(why):
    """Ends a test that cannot run here: its last line says why, exit 77."""
    print(f"skip: {why}")
    sys.exit(77)


def node_env(package):
    """Installs the pinned npm packages (tools/npm_deps.sh) and returns the
    environment in which node loads `package`, or skips saying why not."""
    if subprocess.run([os.path.join(ROOT, "tools", "npm_deps.sh")]).returncode != 0:
        skip(f"tools/npm_deps.sh could not install {package} (no npm registry?)")
    env = dict(os.environ, NODE_PATH=NODE_PATH)
    try:
        r = subprocess.run(["node", "-e", f"require('{package}')"], env=env, capture_output=True)
    except FileNotFoundError:
        skip("node is not installed (apt-get install nodejs)")
    if r.returncode != 0:
        last = (r.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        skip(f"{package} does not load here: {last[:300]}")
    return env


def docs_corpus(moe, tmp, vocab):
    """A tokenizer of `vocab` ids trained on the repository's docs/ and the
    docs as a token file: (tokenizer path, token file path) in tmp."""
    docs = os.path.join(ROOT, "docs")
    tok, data = os.path.join(tmp, "tok"), os.path.join(tmp, "train.tok")
    run(moe, "tokenizer", "train", "--input", docs, "--vocab", str(vocab), "--out", tok, "--threads", "1")
    run(moe, "prepare", "--input", docs, "--tokenizer", tok, "--out", data)
    return tok, data
