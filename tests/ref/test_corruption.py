"""test_corruption.py — damaged checkpoints are refused cleanly. For every
file of a real checkpoint (config, weights, optimizer state, trainer state,
tokenizer, CHECKSUMS): truncations, bit flips at many places, and rewrites
that keep the file well-formed while lying (a wrong dtype, a wrong shape,
offsets past the end, a wrong config value) with CHECKSUMS recomputed so the
structural checks are what must catch them. Each case must fail with exit
code 1 and one line naming the file (no crash, no sanitizer report, no
silent load). Usage: test_corruption.py BUILD_DIR"""
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import moe_files  # noqa: E402

CFG = {"vocab_size": 300, "hidden": 16, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "max_seq_len": 16,
       "ffn": "moe", "router": "relu", "n_experts": 4, "top_k": 1, "steps": 2, "batch_size": 2, "seq_len": 16}


def rewrite_checksums(ck):
    lines = []
    for name in sorted(os.listdir(ck)):
        if name != "CHECKSUMS" and not name.startswith("."):
            raw = open(os.path.join(ck, name), "rb").read()
            lines.append(f"{zlib.crc32(raw):08x} {len(raw)} {name}\n")
    open(os.path.join(ck, "CHECKSUMS"), "w").write("".join(lines))


def set_header(path, edit):
    """Rewrites a safetensors JSON header through edit(header) -> header, data unchanged."""
    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = edit(json.loads(blob[8:8 + n]))
    text = json.dumps(header).encode()
    text += b" " * (-(8 + len(text)) % 8)
    open(path, "wb").write(struct.pack("<Q", len(text)) + text + blob[8 + n:])


def first_tensor(h):
    return next(k for k in h if k != "__metadata__")


def main():
    build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
    rng = random.Random(5)
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "cfg.json")
        json.dump(CFG, open(cfg, "w"))
        data = os.path.join(tmp, "data.tok")
        moe_files.write_tokens(data, [(i * 13) % 257 for i in range(2000)], 300)
        subprocess.run([f"{build}/moe", "train", "--config", cfg, "--data", data, "--out", f"{tmp}/run",
                        "--tokenizer", "bytes"], check=True, capture_output=True)
        good = moe_files.resolve_checkpoint(f"{tmp}/run")
        ids = os.path.join(tmp, "ids.txt")
        open(ids, "w").write("1 2 3 4")

        cases = []  # (name, file, damage(path, ckdir)[, other file the message may name])
        for name in sorted(os.listdir(good)):
            size = os.path.getsize(os.path.join(good, name))
            for cut in sorted({0, 1, 7, 8, size // 3, size // 2, size - 1}):
                if cut < size:
                    cases.append((f"{name}: truncated to {cut}", name,
                                  lambda p, ck, c=cut: open(p, "r+b").truncate(c)))
            for _ in range(6):
                pos, bit = rng.randrange(size), rng.randrange(8)

                def flip(p, ck, pos=pos, bit=bit):
                    b = bytearray(open(p, "rb").read())
                    b[pos] ^= 1 << bit
                    open(p, "wb").write(b)
                cases.append((f"{name}: bit {bit} of byte {pos} flipped", name, flip))
        lies = {
            "dtype F64": lambda h: {**h, first_tensor(h): {**h[first_tensor(h)], "dtype": "F64"}},
            "wrong shape": lambda h: {**h, first_tensor(h): {**h[first_tensor(h)],
                                                               "shape": h[first_tensor(h)]["shape"][::-1] + [1]}},
            "offsets past the end": lambda h: {**h, first_tensor(h): {**h[first_tensor(h)], "data_offsets": [
                h[first_tensor(h)]["data_offsets"][0], h[first_tensor(h)]["data_offsets"][1] + 4096]}},
        }
        for target in ("model.safetensors", "optimizer.safetensors"):
            for lie, edit in lies.items():
                cases.append((f"{target}: {lie} (checksums redone)", target,
                              lambda p, ck, e=edit: (set_header(p, e), rewrite_checksums(ck))))
        # a well-formed config that contradicts the weights: the weights' shapes are refused
        cases.append(("config.json: hidden changed (checksums redone)", "config.json",
                      lambda p, ck: (open(p, "w").write(json.dumps({**CFG, "hidden": 32})), rewrite_checksums(ck)),
                      "model.safetensors"))
        cases.append(("trainer_state.json: negative step (checksums redone)", "trainer_state.json",
                      lambda p, ck: (open(p, "w").write('{"format": "moe-trainer-state", "version": 1, '
                                                        '"step": -3, "loader_position": 0, "data_tokens": 2000, '
                                                        '"lambda": 1e-8}'), rewrite_checksums(ck))))

        for label, name, damage, *also in cases:
            ck = os.path.join(tmp, "case")
            shutil.rmtree(ck, ignore_errors=True)
            shutil.copytree(good, ck)
            damage(os.path.join(ck, name), ck)
            # --resume reads every file; score reads the config and the weights
            res = [subprocess.run([f"{build}/moe", "train", "--resume", ck, "--data", data, "--steps", "3",
                                   "--out", os.path.join(tmp, "out")], capture_output=True, text=True)]
            if name in ("config.json", "model.safetensors"):
                res.append(subprocess.run([f"{build}/moe", "score", "--model", ck, "--tokens", ids],
                                          capture_output=True, text=True))
            problems = []
            for r in res:
                lines = [l for l in r.stderr.splitlines() if l.strip() and not l.startswith("step ")]
                if r.returncode != 1:
                    problems.append(f"exit {r.returncode}")
                elif len(lines) != 1 or "Sanitizer" in r.stderr:
                    problems.append(f"{len(lines)} error lines: {lines[:3]}")
                elif not any(n in lines[0] for n in [name, "CHECKSUMS"] + also):
                    problems.append(f"message does not name {name}: {lines[0]}")
            shutil.rmtree(os.path.join(tmp, "out"), ignore_errors=True)
            if problems:
                failed += 1
                print(f"FAIL {label}: {'; '.join(problems)}")
            else:
                passed += 1
    print(f"# {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
