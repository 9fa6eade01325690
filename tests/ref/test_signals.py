"""test_signals.py — a run that a signal or a closed pipe ends leaves a
checkpoint it resumes from, and ends cleanly (issue 26.3, 26.4): SIGHUP
(a closed terminal) checkpoints and stops like SIGTERM; a closed pipe on
stdout and stderr (`moe train ... | head`) does not end the run;
checkpoint_minutes writes checkpoints by wall time (30 minutes by default);
and SIGINT / SIGTERM / SIGHUP sent at many moments of a ReLU run (inside
steps and checkpoint writes) each end with exit 128 + signal and a
checkpoint, never a crash; so does a storm of SIGINTs inside the steps of
an fp32 run (one every 0.2 ms): each signal taken by a computing thread
wrote its frame below oneDNN's no-copy sgemm, whose stack pointer is in a
heap workspace while it runs, and damaged the heap (issue 26.4).
Usage: test_signals.py BUILD_DIR [--seconds S] [--seed N]"""
import argparse
import json
import os
import random
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
       "keep_checkpoints": 2, "threads": 2, "precision": "fp32"}


def steps_logged(run):
    try:
        with open(os.path.join(run, "metrics.jsonl")) as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def wait_for_step(run, step, proc, timeout=120):
    t0 = time.time()
    while proc.poll() is None and time.time() - t0 < timeout and steps_logged(run) < step:
        time.sleep(0.005)


def checkpoints(run):
    d = os.path.join(run, "checkpoints")
    return sorted(n for n in os.listdir(d) if n.startswith("step-")) if os.path.isdir(d) else []


def weights(run):
    with open(os.path.join(moe_files.resolve_checkpoint(run), "model.safetensors"), "rb") as f:
        return f.read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build", nargs="?", default="build")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--storm-seconds", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    a = ap.parse_args()
    moe = os.path.join(os.path.abspath(a.build), "moe")
    rng = random.Random(a.seed)
    passed = failed = 0

    def report(ok, name, detail=""):
        nonlocal passed, failed
        passed, failed = passed + ok, failed + (not ok)
        print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}", flush=True)

    def train(args, **kw):
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen([moe, "train"] + args, **kw)

    def resume(run, data, steps):
        p = train(["--resume", run, "--data", data, "--steps", str(steps)])
        _, err = p.communicate()
        return p.returncode, err.decode()

    with tempfile.TemporaryDirectory() as tmp:
        def config(name, **over):
            path = os.path.join(tmp, name)
            with open(path, "w") as f:
                json.dump({**CFG, **over}, f)
            return path
        cfg = config("cfg.json")
        data = os.path.join(tmp, "data.tok")
        moe_files.write_tokens(data, [(i * 7 + i // 5) % 64 for i in range(20000)], 64)
        ref = os.path.join(tmp, "ref")
        p = train(["--config", cfg, "--data", data, "--out", ref])
        _, err = p.communicate()
        if p.returncode:
            sys.exit(f"reference run failed: {err.decode()}")
        with open(os.path.join(moe_files.resolve_checkpoint(ref), "config.json")) as f:
            minutes = json.load(f).get("checkpoint_minutes")
        report(minutes == 30, "checkpoint_minutes_default_30", f"(config.json says {minutes})")

        # SIGHUP: a checkpoint, exit 129, and the resumed run equals the uninterrupted one
        run = os.path.join(tmp, "hup")
        p = train(["--config", cfg, "--data", data, "--out", run])
        wait_for_step(run, CFG["steps"] // 2, p)
        p.send_signal(signal.SIGHUP)
        _, err = p.communicate()
        clean = p.returncode == 129 and b"checkpoint written" in err and checkpoints(run)
        rc, rerr = resume(run, data, CFG["steps"]) if clean else (None, "")
        report(bool(clean) and rc == 0 and weights(run) == weights(ref), "sighup_checkpoints_and_resumes",
               f"(exit {p.returncode}, resume {rc}) " + ("" if rc == 0 else rerr.strip()[-200:]))

        # a closed pipe: the reader of stdout and stderr goes away after the first line
        run = os.path.join(tmp, "pipe")
        p = train(["--config", cfg, "--data", data, "--out", run], stdout=subprocess.PIPE,
                  stderr=subprocess.STDOUT)
        p.stdout.readline()
        p.stdout.close()
        p.wait()
        ck = checkpoints(run)
        report(p.returncode == 0 and ck == [f"step-{CFG['steps']:08d}"] and weights(run) == weights(ref),
               "closed_pipe_trains_on", f"(exit {p.returncode}, checkpoints {ck})")

        # checkpoint_minutes: a tiny interval checkpoints after every step (no checkpoint_every)
        run = os.path.join(tmp, "minutes")
        p = train(["--config", config("min.json", steps=6, keep_checkpoints=100, checkpoint_minutes=1e-9),
                   "--data", data, "--out", run])
        _, err = p.communicate()
        ck = checkpoints(run)
        report(p.returncode == 0 and ck == [f"step-{s:08d}" for s in range(1, 7)], "checkpoint_minutes_by_wall_time",
               f"(exit {p.returncode}, checkpoints {ck}) " + (err.decode().strip()[-200:] if p.returncode else ""))

        # signals at many moments of a long ReLU run (checkpoints every 2 steps,
        # so some land inside a checkpoint write): each ends 128 + signal with a
        # checkpoint to resume, never a crash (free(): invalid pointer, 134)
        sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        t0, n, bad = time.time(), 0, []
        many = config("many.json", steps=1000000, checkpoint_every=2)
        while time.time() - t0 < a.seconds or n < 6:
            run = os.path.join(tmp, f"many{n}")
            p = train(["--config", many, "--data", data, "--out", run])
            wait_for_step(run, 1, p)   # the handlers are in place from the first step
            time.sleep(rng.uniform(0, 0.3))
            sig = rng.choice(sigs)
            p.send_signal(sig)
            _, err = p.communicate()
            if p.returncode != 128 + int(sig) or not checkpoints(run):
                bad.append(f"{signal.Signals(sig).name} -> exit {p.returncode}: {err.decode().strip()[-300:]}")
            n += 1
        report(not bad, "signals_at_many_points_end_cleanly", f"({n} runs, seed {a.seed}) " + " | ".join(bad[:3]))

        # a storm of SIGINTs while an fp32 run computes (2048 rows a step: most of
        # its products run in oneDNN's no-copy sgemm): one run crashed within a few
        # hundred signals when they were taken by the computing thread
        storm = config("storm.json", steps=1000000, batch_size=64, precision="fp32")
        t0, n, sent, bad = time.time(), 0, 0, []
        while time.time() - t0 < a.storm_seconds or n < 2:
            run = os.path.join(tmp, f"storm{n}")
            p = train(["--config", storm, "--data", data, "--out", run])
            wait_for_step(run, 1, p)
            while p.poll() is None:
                try:
                    p.send_signal(signal.SIGINT)
                except ProcessLookupError:
                    break
                sent += 1
                time.sleep(0.0002)
            _, err = p.communicate()
            if p.returncode != 130 or not checkpoints(run):
                bad.append(f"exit {p.returncode}: {err.decode().strip()[-200:]}")
            n += 1
        report(not bad, "signal_storm_inside_steps", f"({n} runs, {sent} signals) " + " | ".join(bad[:3]))
    print(f"# {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
