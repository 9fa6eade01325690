"""test_kill_resume.py — nothing is lost on a crash: a ReMoE training run
killed with SIGKILL at random moments and resumed from its last checkpoint
ends with byte-identical weights, the same lambda and the same metrics
(timings aside) as an uninterrupted run with the same thread count; SIGTERM
and SIGINT write a checkpoint and exit cleanly.
Usage: test_kill_resume.py BUILD_DIR [--kills N] [--seed S]"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import moe_files  # noqa: E402

CFG = {"vocab_size": 64, "hidden": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "max_seq_len": 32,
       "ffn": "moe", "router": "relu", "n_experts": 4, "top_k": 1, "relu_lambda0": 1e-3,
       "steps": 40, "batch_size": 4, "seq_len": 32, "lr": 3e-3, "warmup": 4,
       "checkpoint_every": 3, "keep_checkpoints": 2, "threads": 2,
       "precision": "fp32"}  # the fp32 path's bits (the default, auto, is bf16 on some CPUs)


def final_state(run):
    ck = moe_files.resolve_checkpoint(run)
    with open(os.path.join(ck, "model.safetensors"), "rb") as f:
        weights = f.read()
    with open(os.path.join(ck, "trainer_state.json")) as f:
        state = json.load(f)
    with open(os.path.join(run, "metrics.jsonl")) as f:
        metrics = [json.loads(line) for line in f]
    for m in metrics:
        m.pop("seconds")
    return weights, state, metrics


def train(build, args, **kw):
    return subprocess.Popen([f"{build}/moe", "train"] + args, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, **kw)


def wait_for_step(run, step, proc, timeout=120):
    """Polls metrics.jsonl until it holds `step` lines (or the run ends)."""
    path, t0 = os.path.join(run, "metrics.jsonl"), time.time()
    while proc.poll() is None and time.time() - t0 < timeout:
        try:
            with open(path) as f:
                if sum(1 for _ in f) >= step:
                    return
        except FileNotFoundError:
            pass
        time.sleep(0.005)


def finish(build, run, cfg, data):
    """Resumes until done (or starts afresh when the kill came before any checkpoint)."""
    has_ckpt = os.path.isdir(os.path.join(run, "checkpoints")) and any(
        d.startswith("step-") for d in os.listdir(os.path.join(run, "checkpoints")))
    args = ["--resume", run, "--data", data] if has_ckpt else ["--config", cfg, "--data", data, "--out", run]
    p = train(build, args)
    _, err = p.communicate()
    if p.returncode != 0:
        raise RuntimeError(f"resume failed ({p.returncode}): {err.decode()}")
    return has_ckpt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build", nargs="?", default="build")
    ap.add_argument("--kills", type=int, default=4)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    rng = random.Random(a.seed)
    passed = failed = 0

    def report(ok, name, detail=""):
        nonlocal passed, failed
        passed, failed = passed + ok, failed + (not ok)
        print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "cfg.json")
        with open(cfg, "w") as f:
            json.dump(CFG, f)
        data = os.path.join(tmp, "data.tok")
        moe_files.write_tokens(data, [(i * 7 + i // 5) % 64 for i in range(20000)], 64)
        ref_run = os.path.join(tmp, "ref")
        t0 = time.time()
        p = train(build, ["--config", cfg, "--data", data, "--out", ref_run])
        _, err = p.communicate()
        if p.returncode:
            sys.exit(f"reference run failed: {err.decode()}")
        duration = time.time() - t0
        ref = final_state(ref_run)
        print(f"# reference run: {duration:.2f}s, seed {a.seed}")

        step_time = duration / CFG["steps"]
        for k in range(a.kills):
            run = os.path.join(tmp, f"kill{k}")
            p = train(build, ["--config", cfg, "--data", data, "--out", run])
            # a random step, then a random moment inside it (a checkpoint write included)
            at = rng.randrange(0, CFG["steps"] - 1)
            wait_for_step(run, at, p)
            delay = rng.uniform(0, step_time)
            time.sleep(delay)
            p.send_signal(signal.SIGKILL)
            p.wait()
            try:
                resumed = finish(build, run, cfg, data)
                got = final_state(run)
                same = got == ref
                detail = (f"(killed {delay:.3f}s after step {at}, "
                          f"{'resumed' if resumed else 'before any checkpoint: restarted'})")
                if not same:
                    diffs = [n for n, x, y in zip(("weights", "state", "metrics"), got, ref) if x != y]
                    detail += f" differs in {diffs}"
                report(same, f"sigkill_{k}", detail)
            except RuntimeError as e:
                report(False, f"sigkill_{k}", str(e))
            shutil.rmtree(run, ignore_errors=True)

        for sig in (signal.SIGTERM, signal.SIGINT):
            run = os.path.join(tmp, f"sig{int(sig)}")
            p = train(build, ["--config", cfg, "--data", data, "--out", run])
            wait_for_step(run, CFG["steps"] // 2, p)
            p.send_signal(sig)
            _, err = p.communicate()
            clean = p.returncode == 128 + int(sig) and b"checkpoint written" in err
            finish(build, run, cfg, data)
            same = final_state(run) == ref
            report(clean and same, f"{signal.Signals(sig).name.lower()}_checkpoints_and_resumes",
                   f"(exit {p.returncode})" + ("" if same else " final state differs"))
    print(f"# {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
