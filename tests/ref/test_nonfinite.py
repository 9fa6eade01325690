"""test_nonfinite.py — the non-finite guard. A model whose loss is infinite
whenever one token is a target (its weights are finite: a model holding a
NaN is refused by every loader), trained on data where that token appears
only in chosen steps (sequential mode): those steps are skipped and logged
while the others train normally; with more poisoned steps in a row than
max_bad_steps, training returns to the last checkpoint, says so, and, when
the same happens again from there, stops with an error that says what it did
and did not do. adam_eps 0 (0/0 for a parameter without gradient) is refused.
An update that leaves weights or moments non-finite (finite loss and gradient
norm: one gradient element so large that its square overflows the second
moment) returns to the last checkpoint at once, counting the values, and
stops when it happens again; ref/test_mpi runs it across ranks.
Usage: test_nonfinite.py BUILD_DIR"""
import json
import os
import re
import subprocess
import sys
import tempfile
import zlib

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import moe_files  # noqa: E402

V, B, T = 64, 4, 16
CFG = {"vocab_size": V, "hidden": 32, "n_layers": 1, "n_heads": 4, "n_kv_heads": 2, "max_seq_len": T,
       "ffn": "moe", "router": "relu", "n_experts": 4, "top_k": 1, "steps": 16, "batch_size": B,
       "seq_len": T, "shuffle": False, "checkpoint_every": 4, "max_bad_steps": 3,
       "precision": "fp32"}  # bf16 would round the poison's -FLT_MAX to -inf: every step non-finite


def poisoned_data(path, steps_with_poison):
    """Tokens 0..V-2 everywhere, token V-1 only in the batches of the given (1-based) steps."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, V - 1, 40 * B * T + 1)
    for s in steps_with_poison:
        ids[(s - 1) * B * T + 5] = V - 1
    moe_files.write_tokens(path, ids, V)


def poison_model(model_dir):
    """Finite weights whose logit for token V-1 is -inf at every position, so
    that the loss is +inf exactly where V-1 is a target: dimension 0 of every
    embedding is 1, so the final norm's output there is about sqrt(hidden)
    (> 1) everywhere, and lm_head's row V-1 is -FLT_MAX in that dimension
    only (its product overflows to -inf; softmax gives V-1 probability 0, so
    the row's gradient is 0 on the other steps and it stays put)."""
    st, meta = moe_files.read_safetensors(f"{model_dir}/model.safetensors")
    st["model.embed_tokens.weight"][:, 0] = 1.0
    st["lm_head.weight"][V - 1, :] = 0.0
    st["lm_head.weight"][V - 1, 0] = -np.finfo(np.float32).max
    rewrite_model(model_dir, st, meta)


def rewrite_model(model_dir, st, meta):
    """model.safetensors replaced by st, and CHECKSUMS to match."""
    moe_files.write_safetensors(f"{model_dir}/model.safetensors", st, meta)
    lines = []
    for name in sorted(os.listdir(model_dir)):
        if name != "CHECKSUMS":
            raw = open(f"{model_dir}/{name}", "rb").read()
            lines.append(f"{zlib.crc32(raw):08x} {len(raw)} {name}\n")
    open(f"{model_dir}/CHECKSUMS", "w").write("".join(lines))


# the poisoned-update scenario: its config, the step whose update is
# poisoned, the checkpoint training returns to, and the tensor it names
UPDATE_CFG = dict(CFG, grad_clip=0, threads=1)
UPDATE_STEP, UPDATE_BACK = 10, 8
UPDATE_TENSOR = "model.layers.0.mlp.experts.down_proj.weight"


def poison_update_model(model_dir):
    """Finite weights whose loss and gradient norm stay finite, but whose
    update is poisoned on the steps holding token V-1 (poisoned_data): the
    gradient of 32 elements of the last expert's down_proj is about 1e24,
    whose square overflows AdamW's second moment to +inf. Token V-1's
    embedding is dimension 1 alone, every other token's has dimension 2 at 1:
    the router row of the last expert, (dim 1) - (dim 2), is negative for
    every other token (the ReLU gate exactly 0: that expert never runs, its
    gradients are exactly 0 and it stays as set) and positive for V-1. Its
    hidden unit 0 reads dimension 1 with weights 1e13 (gate and up: h0 about
    3e27 for V-1), and its down_proj column 0 is 0, so the output stays
    finite while the column's gradient, dout * h0, is enormous. UPDATE_CFG
    turns gradient clipping off (clipping would shrink that gradient). The
    other tokens all go to experts 0 and 1 and never to 2 (router rows +-0.5
    on dimension 2), so that expert parallel's placement by load (ref/test_mpi)
    moves experts between the ranks before the poisoned step."""
    st, meta = moe_files.read_safetensors(f"{model_dir}/model.safetensors")
    emb, pre = st["model.embed_tokens.weight"], "model.layers.0.mlp."
    emb[:, 1:3] = 0.0
    emb[:V - 1, 2] = 1.0
    emb[V - 1, :] = 0.0
    emb[V - 1, 1] = 1.0
    e = CFG["n_experts"] - 1
    st[pre + "router.weight"][e, :] = 0.0
    st[pre + "router.weight"][e, 1:3] = (1.0, -1.0)
    st[pre + "router.weight"][:e, 2] = (0.5, 0.5, -0.5)
    for name in ("gate_proj", "up_proj"):
        st[f"{pre}experts.{name}.weight"][e, 0, :] = 0.0
        st[f"{pre}experts.{name}.weight"][e, 0, 1] = 1e13
    st[pre + "experts.down_proj.weight"][e, :, 0] = 0.0
    rewrite_model(model_dir, st, meta)


def update_poisoned(stderr):
    """[(step, values, tensor)] of each "the update left N values non-finite" line."""
    return [(int(a), int(n), t) for a, n, t in
            re.findall(r"step (\d+): the update left (\d+) values non-finite \(first in tensor '([^']+)'", stderr)]


def run(build, tmp, name, poison_steps, config=CFG, poison=poison_model):
    cfg = os.path.join(tmp, f"{name}.json")
    json.dump(config, open(cfg, "w"))
    data, model, out = (os.path.join(tmp, f"{name}.{x}") for x in ("tok", "init", "run"))
    poisoned_data(data, poison_steps)
    subprocess.run([f"{build}/moe", "init", "--config", cfg, "--out", model], check=True, capture_output=True)
    poison(model)
    p = subprocess.run([f"{build}/moe", "train", "--model", model, "--data", data, "--out", out],
                       capture_output=True, text=True)
    metrics = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    return p, metrics


def main():
    build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
    passed = failed = 0

    def check(ok, name, detail=""):
        nonlocal passed, failed
        passed, failed = passed + ok, failed + (not ok)
        print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}")

    with tempfile.TemporaryDirectory() as tmp:
        # two poisoned steps: skipped, logged, the run finishes with finite weights
        p, m = run(build, tmp, "skip", [6, 7])
        skipped = [r["step"] for r in m if r.get("skipped")]
        check(p.returncode == 0 and skipped == [6, 7], "skips_and_continues",
              f"(exit {p.returncode}, skipped {skipped})")
        check(p.stderr.count("update skipped") == 2 and "step 6" in p.stderr, "says_what_it_skipped")
        final = moe_files.read_safetensors(
            os.path.join(moe_files.resolve_checkpoint(os.path.join(tmp, "skip.run")), "model.safetensors"))[0]
        finite = all(np.isfinite(v).all() for k, v in final.items() if k != "model.embed_tokens.weight")
        check(finite and all(np.isfinite(r["loss"]) for r in m if not r.get("skipped")), "weights_stay_finite")
        # adam_eps 0 divides 0 by 0 where a gradient is zero: outside the range
        bad = dict(CFG, adam_eps=0)
        json.dump(bad, open(os.path.join(tmp, "eps0.json"), "w"))
        p = subprocess.run([f"{build}/moe", "train", "--config", os.path.join(tmp, "eps0.json"), "--data",
                            os.path.join(tmp, "skip.tok"), "--out", os.path.join(tmp, "eps0")],
                           capture_output=True, text=True)
        check(p.returncode != 0 and "'adam_eps'" in p.stderr and not os.path.exists(os.path.join(tmp, "eps0")),
              "adam_eps_0_refused", p.stderr.strip())
        # three in a row (= max_bad_steps): back to the checkpoint of step 8, then the same again: stop
        p, m = run(build, tmp, "rollback", [10, 11, 12])
        check("returned to the checkpoint of step 8" in p.stderr, "returns_to_last_checkpoint",
              p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "")
        check(p.returncode == 1 and "training diverged" in p.stderr and "lower --lr" in p.stderr,
              "gives_up_when_it_recurs", f"(exit {p.returncode})")
        steps = [r["step"] for r in m]
        check(steps == sorted(set(steps)) and steps[:8] == list(range(1, 9)) and max(steps) <= 12,
              "metrics_hold_no_step_twice", str(steps))
        # a poisoned update (finite loss): counted, named, back to step 8 at once, then the same again: stop
        p, m = run(build, tmp, "update", [UPDATE_STEP], UPDATE_CFG, poison_update_model)
        said = update_poisoned(p.stderr)
        check(len(said) == 2 and said[0] == said[1] and said[0][0] == UPDATE_STEP and said[0][1] >= 16 and
              said[0][2] == UPDATE_TENSOR, "update_poisoned_counted_and_named", str(said))
        check(f"returned to the checkpoint of step {UPDATE_BACK}" in p.stderr and
              [r["step"] for r in m] == list(range(1, UPDATE_BACK + 1)) and
              all(np.isfinite(r["loss"]) and not r.get("skipped") for r in m),
              "update_poisoned_returns_at_once", p.stderr.strip()[-300:])
        check(p.returncode == 1 and "weights became non-finite" in p.stderr and f"'{UPDATE_TENSOR}'" in p.stderr,
              "update_poisoned_gives_up_when_it_recurs", f"(exit {p.returncode})")
    print(f"# {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
