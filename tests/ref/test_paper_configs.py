# once: counts parameters of 215 configs; config loading runs under the sanitizers in unit/test_train and fuzz/fuzz_json_config
"""test_paper_configs.py — every config under configs/ loads and validates
(`moe config --params`, and `--check` on the demo and dense ones), and so does every run of every grid (its config with the grid's and the run's "set" applied); configs/paper/ is what scripts/gen-paper-configs.py writes; each
ReMoE config (and CPU twin) has the paper's size: its active parameters,
routers aside, within 0.5% of configs/paper/sizes.json (182M, 469M, 978M: the
dense model's parameters, untied embeddings and GQA included; a twin's dense
model computed independently by the generator); and in every CartesianMoE
group the MoE rows have the same expert parameters, in all and per token
(17 and 3 full FFNs per MoE layer), as the paper's table requires.
Usage: test_paper_configs.py BUILD_DIR"""
import glob
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(build):
    moe = os.path.join(build, "moe")
    passed = failed = 0

    def check(name, ok, msg=""):
        nonlocal passed, failed
        if ok:
            passed += 1
            print("ok  ", name)
        else:
            failed += 1
            print("FAIL", name, msg)

    gen = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "gen-paper-configs.py"), "--check"],
                         capture_output=True, text=True)
    check("paper_configs_current", gen.returncode == 0, gen.stdout + gen.stderr)

    counts, bad = {}, []
    for path in sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.json"), recursive=True)):
        rel = os.path.relpath(path, ROOT)
        if rel == "configs/paper/sizes.json" or "/grids/" in rel:  # not configs: sweep grids
            continue
        # --params validates as --check does (same loading), then counts; --check
        # itself is run on a sample, to keep the test cheap under ASan
        p = subprocess.run([moe, "config", "--params", path], capture_output=True, text=True)
        if p.returncode != 0:
            bad.append(f"{rel}: {p.stderr.strip()}")
            continue
        counts[os.path.relpath(path, os.path.join(ROOT, "configs", "paper"))] = json.loads(p.stdout)
        if "/paper/" not in path or path.endswith("/dense.json"):
            r = subprocess.run([moe, "config", "--check", path], capture_output=True, text=True)
            if r.returncode != 0 or "parameters" not in r.stderr or not json.loads(r.stdout):
                bad.append(f"{rel}: --check: {r.stderr.strip()}")
    check("every_config_checks", not bad, "; ".join(bad[:5]))

    # every run of every grid: its config file, then the grid's "set", then
    # the run's (as moe sweep merges them), valid and countable, so that a
    # grid of many machine-hours cannot stop at its tenth run on a bad key
    bad_runs, n_runs = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for grid in sorted(glob.glob(os.path.join(ROOT, "configs", "**", "grids", "*.json"), recursive=True)):
            g = json.load(open(grid))
            for run in g["runs"]:
                n_runs += 1
                cfg = json.load(open(os.path.join(ROOT, run["config"])))
                cfg.update(g.get("set", {}))
                cfg.update(run.get("set", {}))
                path = os.path.join(tmp, "run.json")
                with open(path, "w") as f:
                    json.dump(cfg, f)
                p = subprocess.run([moe, "config", "--params", path], capture_output=True, text=True)
                if p.returncode != 0:
                    bad_runs.append(f"{os.path.relpath(grid, ROOT)} run {run['name']}: {p.stderr.strip()}")
    check("every_grid_run_configures", not bad_runs and n_runs > 50, f"{n_runs} runs; " + "; ".join(bad_runs[:5]))

    sizes = json.load(open(os.path.join(ROOT, "configs", "paper", "sizes.json")))
    tol = sizes["tolerance"]
    off = []
    for rel, want in sizes["remoe"].items():
        c = counts.get(rel)
        if c is None:
            off.append(f"{rel}: not counted")
            continue
        got = c["active"] - c["router"]
        if abs(got - want) > tol * want:
            off.append(f"{rel}: {got / 1e6:.2f}M active, expected {want / 1e6:.2f}M")
    check("remoe_sizes_match_paper", not off and len(sizes["remoe"]) > 100, "; ".join(off[:5]))

    unequal = []
    for group in sizes["cartesian_groups"]:
        rows = {k: v for k, v in counts.items() if os.path.dirname(k) == group and not k.endswith("/dense.json")}
        ref = rows.get(f"{group}/cartesian.json")
        if ref is None or len(rows) < 6:
            unequal.append(f"{group}: {len(rows)} rows")
            continue
        for k, v in rows.items():
            if (v["experts"], v["experts_active"]) != (ref["experts"], ref["experts_active"]):
                unequal.append(f"{k}: experts {v['experts']}/{v['experts_active']}, cartesian "
                               f"{ref['experts']}/{ref['experts_active']}")
        # 17 full FFNs of expert parameters and 3 active per MoE layer
        cfg = json.load(open(os.path.join(ROOT, "configs", "paper", group, "cartesian.json")))
        D, F = cfg["hidden"], 4 * cfg["hidden"]
        moe_layers = cfg["n_layers"] - cfg["dense_first_layers"]
        if ref["experts"] != 17 * 3 * D * F * moe_layers or ref["experts_active"] != 3 * 3 * D * F * moe_layers:
            unequal.append(f"{group}: not 17 and 3 FFNs per MoE layer")
    check("cartesian_rows_equal_parameters", not unequal, "; ".join(unequal[:5]))

    # --sparsity S counts the routed experts at 1 - S (a run's measured
    # sparsity, as bench/train_speed.py's MFU needs): ReMoE E8 has no shared
    # expert, so experts_active is (1 - S) x experts, and S = 1 - k/E is the
    # nominal count; other parameters do not move
    remoe = os.path.join(ROOT, "configs", "paper", "remoe", "cpu", "182m", "remoe-e8.json")
    at = {}
    for s in ("0.5", "0.875", "0.96"):
        r = subprocess.run([moe, "config", "--params", remoe, "--sparsity", s], capture_output=True, text=True)
        at[s] = json.loads(r.stdout) if r.returncode == 0 else {}
    nominal = counts.get("remoe/cpu/182m/remoe-e8.json", {})
    wrong = [f"S={s}: {c}" for s, c in at.items()
             if not c or abs(c["experts_active"] - (1 - float(s)) * c["experts"]) > 0.5
             or c["active"] - c["experts_active"] != nominal.get("active", 0) - nominal.get("experts_active", 0)]
    if at["0.875"] != nominal:
        wrong.append(f"S=0.875 {at['0.875']} != nominal {nominal}")
    check("params_at_measured_sparsity", not wrong, "; ".join(wrong))
    for name, args, want in (("sparsity_out_of_range", ["--params", remoe, "--sparsity", "1.5"], "--sparsity"),
                             ("sparsity_needs_params", ["--check", remoe, "--sparsity", "0.5"], "with --params")):
        r = subprocess.run([moe, "config"] + args, capture_output=True, text=True)
        check(name, r.returncode == 2 and want in r.stderr, r.stderr)

    print(f"# {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "build"))
