#!/usr/bin/python3
"""scale-results.py — the scale pilot of docs/RESULTS.md ("Where MoE pays at
CPU scale") from its runs: the validation loss every ~2M tokens per model, the
crossover (the first measured token count from which TopK stays below
dense), ReMoE's per-layer share of tokens on no expert at its last step and
over training (SVG), and an SVG plot of validation loss against tokens for
each width. Runs still in progress are shown up to their last measurement
and marked.

A run (GRID, NAME/seed-S) is read from its folder (RUNS_DIR/GRID/NAME/seed-S)
or from an archive: the sessions that train the pilot get a new machine
each time, so before a session ends `--archive` condenses every run as far
as it got (the validation curve, the per-layer activity in 100-step means,
the last step, the machine) into one small JSON file that is committed
under bench/results/scale/ (or $MOE_SCALE_ARCHIVES). Of the sources that hold one model, the one that
got furthest is shown, with the machine that trained it. A run an archive
holds as finished keeps its sweep mark there, and `--restore` puts the mark
back, so that the next session's sweep goes on with the runs not yet done.

    scripts/scale-results.py [RUNS_DIR [FIG_DIR]]   (default runs/scale docs/figures) -> Markdown on stdout
    scripts/scale-results.py --update docs/RESULTS.md   the same, each block written between its
                                                        markers (BLOCKS)
    scripts/scale-results.py --archive OUT.json [RUNS_DIR]   condense the runs into OUT.json
    scripts/scale-results.py --restore [RUNS_DIR]   mark the runs the archives hold as finished
                                                    done in RUNS_DIR (scale-pilot.sh does this first)
"""
import contextlib
import functools
import glob
import io
import json
import os
import statistics as st
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from seed_stats import col, ms, paired, verdict  # noqa: E402

UPDATE = sys.argv[2] if len(sys.argv) > 2 and sys.argv[1] == "--update" else None
ARCHIVE = sys.argv[2] if len(sys.argv) > 2 and sys.argv[1] == "--archive" else None
RESTORE = len(sys.argv) > 1 and sys.argv[1] == "--restore"
ARGS = sys.argv[3:] if UPDATE or ARCHIVE else sys.argv[2:] if RESTORE else sys.argv[1:]
RUNS = ARGS[0] if len(ARGS) > 0 else "runs/scale"
FIGS = ARGS[1] if len(ARGS) > 1 else "docs/figures"
ARCHIVES = os.environ.get("MOE_SCALE_ARCHIVES") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench", "results", "scale")
GRIDS = ("pilot-h128", "pilot-h256")
MODELS = ("dense", "topk", "remoe")
COLORS = {"dense": "#444444", "topk": "#1f77b4", "remoe": "#d62728"}


def read_run(grid, run):
    """One run folder (RUNS/GRID/RUN, RUN = NAME/seed-S) condensed: {curve
    [(tokens, val_loss)], layers {i: [(tokens, mean no_expert over 100
    steps)]}, last (metrics line), finished, and a finished run's sweep
    mark}, or None without metrics.jsonl."""
    path = os.path.join(RUNS, grid, run, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    curve, last, sums, tokens, secs = [], None, {}, {}, 0.0
    with open(path) as f:
        for line in f:
            try:
                m = json.loads(line)
            except ValueError:
                continue  # a line being written
            last = m
            secs += m.get("seconds", 0.0)
            if "val_loss" in m:
                curve.append((m.get("tokens", 0) * m["step"], m["val_loss"]))
            b = (m["step"] - 1) // 100
            tokens[b] = m.get("tokens", 0) * (b + 1) * 100
            for i, l in enumerate(m.get("layers", [])):
                if l.get("no_expert") is not None:
                    sums.setdefault(i, {}).setdefault(b, []).append(l["no_expert"])
    layers = {i: [(tokens[b], sum(v) / len(v)) for b, v in sorted(per.items())] for i, per in sorted(sums.items())}
    mark = os.path.join(RUNS, grid, run, "sweep.json")
    r = {"curve": curve, "layers": layers, "last": last, "finished": os.path.exists(mark), "train_seconds": secs}
    if r["finished"]:
        with open(mark) as f:
            r["sweep"] = json.load(f)  # the sweep's mark, with the run's results
    return r


def machine():
    """This CPU in words: its model name and its widest vector units."""
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return "unknown CPU"
    name = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name")), "unknown CPU")
    flags = next((l.split(":", 1)[1].split() for l in info.splitlines() if l.startswith("flags")), [])
    isa = "AMX" if "amx_bf16" in flags else "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{name}, {isa}, {os.cpu_count()} cores"


@functools.lru_cache(maxsize=None)
def archives():
    """Every archive of bench/results/scale/ (read once), each with its file
    name added."""
    found = []
    for f in sorted(os.listdir(ARCHIVES)) if os.path.isdir(ARCHIVES) else []:
        if f.endswith(".json"):
            with open(os.path.join(ARCHIVES, f)) as fh:
                found.append(dict(json.load(fh), file=f))
    return tuple(found)


def shown(path):
    """PATH relative to the repository when it lies inside, else absolute."""
    root = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    path = os.path.normpath(os.path.abspath(path))
    return os.path.relpath(path, root) if path.startswith(root + os.sep) else path


def from_archives(grid, run):
    """Every archived copy of one run, each {curve, layers, last, finished,
    machine, archive}."""
    found = []
    for a in archives():
        f = a["file"]
        r = a.get("runs", {}).get(grid, {}).get(run)
        if r:
            r = dict(r, curve=[tuple(p) for p in r["curve"]],
                     layers={int(i): [tuple(p) for p in ps] for i, ps in r["layers"].items()},
                     machine=a.get("machine", "?"), archive=shown(os.path.join(ARCHIVES, f)))
            found.append(r)
    return found


def load(grid, run):
    """The copy of one run that got furthest: its folder here (on this
    machine) or an archive."""
    here = read_run(grid, run)
    copies = ([dict(here, machine=machine())] if here else []) + from_archives(grid, run)
    return max(copies, key=lambda r: (r["finished"], r["last"]["step"] if r["last"] else 0), default=None)


def restore():
    """Give every run an archive holds as finished its sweep mark here
    (RUNS/GRID/NAME/seed-S/sweep.json), so that `moe sweep` counts it done
    and aggregates it instead of training it again."""
    for grid, run in sorted({(g, n) for a in archives() for g, ns in a["runs"].items() for n in ns}):
        r = next((a for a in from_archives(grid, run) if a["finished"] and a.get("sweep")), None)
        d = os.path.join(RUNS, grid, run)
        if not r or os.path.exists(os.path.join(d, "sweep.json")):
            continue
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "sweep.json"), "w") as f:
            json.dump(r["sweep"], f)
            f.write("\n")
        print(f"{d}: finished in {r['archive']} ({r['machine']}), marked done")


def archive(out):
    """Write every run folder here (RUNS/GRID/NAME/seed-S, every seed),
    condensed, into OUT."""
    runs = {}
    for path in sorted(glob.glob(os.path.join(RUNS, "*", "*", "seed-*", "metrics.jsonl"))):
        grid, name, seed = os.path.relpath(os.path.dirname(path), RUNS).split(os.sep)
        runs.setdefault(grid, {})[f"{name}/{seed}"] = read_run(grid, f"{name}/{seed}")
    with open(out, "w") as f:
        json.dump({"machine": machine(), "runs": runs}, f, separators=(",", ":"))
        f.write("\n")
    print(f"{out}: " + "; ".join(f"{g}/{m} step {r['last']['step'] if r['last'] else 0}"
                                 for g in runs for m, r in runs[g].items()))


def crossover(dense, topk):
    """First token count from which TopK's validation loss stays below dense's."""
    d = dict(dense)
    common = [(t, l) for t, l in topk if t in d]
    for i, (t, _) in enumerate(common):
        if all(l < d[u] for u, l in common[i:]):
            return t
    return None


def line_chart(path, lines, ylabel, lo, hi):
    """An SVG chart of lines [(label, colour, [(tokens, y)])] against training
    tokens, y from lo to hi. Returns whether there was anything to draw."""
    pts = [p for _, _, ps in lines for p in ps]
    if not pts:
        return False
    W, H, L, B = 560, 300, 60, 40
    x1 = max(t for t, _ in pts) or 1
    X = lambda t: L + (W - L - 20) * t / x1
    Y = lambda v: 10 + (H - B - 10) * (hi - v) / (hi - lo)
    dec = 1 if x1 < 1e7 else 0
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="{H - 5}" text-anchor="middle">training tokens (millions)</text>',
           f'<text x="12" y="{H / 2}" transform="rotate(-90 12 {H / 2})" text-anchor="middle">{ylabel}</text>']
    for k in range(5):
        v, t = lo + (hi - lo) * k / 4, x1 * k / 4
        out.append(f'<line x1="{L}" x2="{W - 20}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" stroke="#ddd"/>'
                   f'<text x="{L - 4}" y="{Y(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>'
                   f'<text x="{X(t):.1f}" y="{H - B + 14}" text-anchor="middle">{t / 1e6:.{dec}f}</text>')
    for i, (label, colour, ps) in enumerate(lines):
        d = " ".join(f"{X(t):.1f},{Y(v):.1f}" for t, v in ps)
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.7" points="{d}"/>'
                   f'<text x="{W - 150}" y="{24 + 14 * i}" fill="{colour}">{label}</text>')
    out.append("</svg>")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    return True


def svg(runs, path):
    """Validation loss against tokens, one line per model."""
    lines = [(name + ("" if r["finished"] else " (running)"), COLORS[name], r["curve"])
             for name, r in runs.items() if r and r["curve"]]
    vals = [v for _, _, ps in lines for _, v in ps]
    if not vals:
        return False
    pad = 0.02 * (max(vals) - min(vals) + 1e-9)
    return line_chart(path, lines, "validation loss", min(vals) - pad, max(vals) + pad)


def layer_activity(run, path):
    """ReMoE's share of tokens on no expert, per layer, against tokens (the
    mean over each 100 steps of metrics.jsonl's per-layer no_expert)."""
    if not run or not run["layers"]:
        return False
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    lines = [(f"layer {i}", palette[i % len(palette)], ps) for i, ps in sorted(run["layers"].items())]
    return line_chart(path, lines, "tokens on no expert", 0.0, 1.0)


def hours(r):
    """A copy's training hours: its steps' seconds summed (read_run; 0 in an
    archive written before they were kept)."""
    return r.get("train_seconds", 0.0) / 3600.0


def table(grid, title):
    runs = {m: load(grid, f"{m}/seed-1") for m in MODELS}
    print(f"#### {title}\n")
    if not any(runs.values()):
        print("Not started yet.\n")
        return
    steps = sorted({t for r in runs.values() if r for t, _ in r["curve"]})
    print("| tokens (M) | " + " | ".join(MODELS) + " | TopK − dense | ReMoE − dense |")
    print("|---:|" + "---:|" * (len(MODELS) + 2))
    for t in steps:
        vals = {m: dict(runs[m]["curve"]).get(t) if runs[m] else None for m in MODELS}
        cell = lambda v: f"{v:.4f}" if v is not None else "—"
        diff = lambda a, b: f"{a - b:+.4f}" if a is not None and b is not None else "—"
        print(f"| {t / 1e6:.1f} | " + " | ".join(cell(vals[m]) for m in MODELS) +
              f" | {diff(vals['topk'], vals['dense'])} | {diff(vals['remoe'], vals['dense'])} |")
    state = "; ".join(f"{m}: {'finished' if r['finished'] else 'step %d' % (r['last']['step'] if r['last'] else 0)}"
                      f"{f', {hours(r):.1f} h' if hours(r) else ''} ({r['machine']}{', ' + r['archive'] if r.get('archive') else ''})"
                      for m, r in runs.items() if r)
    print(f"\nRuns (training hours, one thread each, where known): {state}.")
    if runs["dense"] and runs["topk"]:
        c = crossover(runs["dense"]["curve"], runs["topk"]["curve"])
        print("Crossover (TopK below dense from then on): " +
              (f"{c / 1e6:.1f}M tokens." if c is not None else "none within the tokens measured so far."))
    r = runs["remoe"]
    if r and r["last"] and "layers" in r["last"]:
        share = [l.get("no_expert") for l in r["last"]["layers"]]
        act = [l.get("active_per_token") for l in r["last"]["layers"]]
        print("ReMoE at its last step (%d), per layer: tokens on no expert %s; active experts per token %s." %
              (r["last"]["step"], ", ".join("%.2f" % s if s is not None else "—" for s in share),
               ", ".join("%.2f" % a if a is not None else "—" for a in act)))
    fig = os.path.join(FIGS, f"scale-{grid}.svg")
    if svg(runs, fig):
        print(f"\n![validation loss against tokens, {title}](figures/scale-{grid}.svg)")
    fig = os.path.join(FIGS, f"scale-{grid}-remoe-layers.svg")
    if layer_activity(runs["remoe"], fig):
        print(f"\n![ReMoE: share of tokens on no expert per layer, {title}](figures/scale-{grid}-remoe-layers.svg)")
    print()


def pilot():
    table("pilot-h128", "Hidden 128, 6 layers (2.5M active parameters, 42% embedding and head), 50.2M tokens")
    table("pilot-h256", "Hidden 256, 4 layers (6.0M active parameters, 35% embedding and head), 20.1M tokens")


# ---- the tables redone at the pilot's width, 3 seeds each -------------------

SEEDS = (1, 2, 3)


def copies(grid, name):
    """{seed: the furthest copy of GRID/NAME/seed-S} over the seeds that exist."""
    runs = {s: load(grid, f"{name}/seed-{s}") for s in SEEDS}
    return {s: r for s, r in runs.items() if r}


def done(runs):
    """{seed: sweep metrics} of the finished copies."""
    return {s: r["sweep"]["metrics"] for s, r in runs.items() if r["finished"] and r.get("sweep")}




def no_expert_per_layer(runs):
    """The share of tokens on no expert per layer at the end of training
    (the last 100-step mean), averaged over the finished seeds: 'a, b, ...'."""
    ends = [[ps[-1][1] for _, ps in sorted(r["layers"].items()) if ps]
            for r in runs.values() if r["finished"] and r["layers"]]
    if not ends:
        return "—"
    return ", ".join(f"{100 * st.mean(v):.0f}%" for v in zip(*ends))


def cost(grids_names):
    """'N of M runs finished, X hours of training (one thread each) so far;
    running: ...' over [(grid, name)]."""
    total, fin, spent, running = 0, 0, 0.0, []
    for grid, name in grids_names:
        runs = copies(grid, name)
        total += len(SEEDS)
        for s, r in runs.items():
            spent += hours(r)
            if r["finished"]:
                fin += 1
            else:
                running.append(f"{name}/seed-{s} at step {r['last']['step'] if r['last'] else 0}")
    line = f"{fin} of {total} runs finished, {spent:.1f} hours of training (one thread each) so far"
    return line + (f"; under way: {', '.join(running)}" if running else "") + "."


def ordering(label, a, b, key, paper_sign):
    """One line: a − b paired by seed, its verdict, and whether the paper's
    ordering (paper_sign < 0: a below b) holds."""
    diff, d = paired(a, b, key)
    v = verdict(d)
    print(f"- {label}: {diff}; the paper's ordering: {judged(v, paper_sign)}.")


def judged(v, paper_sign):
    """Whether a verdict (seed_stats.verdict) agrees with the paper's sign."""
    if v in ("lower", "higher"):
        return "holds" if (v == "lower") == (paper_sign < 0) else "does not hold"
    return "not resolved (within seed noise)" if v == "within noise" else "not testable yet (fewer than 3 seeds)"


def table_a():
    rows = [("dense", "Dense", None, 38.20), ("topk", "dMoE (TopK)", 1.936, 39.67),
            ("remoe", "ReMoE", 1.921, 40.03), ("remoe-per-layer", "ReMoE, λ per layer", None, None),
            ("topk-warmup", "MoE + warm-up", 1.928, None), ("hash", "Hash", None, 38.79)]
    grid = "table-a-h128"
    runs = {name: copies(grid, name) for name, *_ in rows}
    res = {name: done(r) for name, r in runs.items()}
    print("| method | paper valid loss | paper downstream avg | our valid loss | − Dense (paired) | | − TopK (paired) | "
          "| final sparsity | tokens on no expert per layer, end |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, label, pl, pd in rows:
        r = res[name]
        dd, d1 = paired(r, res["dense"], "valid.loss") if name != "dense" else ("(baseline)", None)
        dt, d2 = paired(r, res["topk"], "valid.loss") if name not in ("dense", "topk") else ("", None)
        sp = col(r, "sparsity")
        per = no_expert_per_layer(runs[name]) if name.startswith("remoe") else ""
        print(f"| {label} | {pl or '—'} | {pd or '—'} | {ms(col(r, 'valid.loss'))} | {dd} | {verdict(d1) if d1 else ''} | "
              f"{dt} | {verdict(d2) if d2 else ''} | {ms(sp) if sp and name != 'dense' else '—'} | {per} |")
    print("\nThe papers' orderings, paired by seed (resolved: the mean beyond two standard errors, 3 seeds):\n")
    ordering("MoE pays (TopK − Dense)", res["topk"], res["dense"], "valid.loss", -1)
    ordering("ReMoE − TopK", res["remoe"], res["topk"], "valid.loss", -1)
    ordering("MoE + warm-up − TopK", res["topk-warmup"], res["topk"], "valid.loss", -1)
    ordering("ReMoE − MoE + warm-up", res["remoe"], res["topk-warmup"], "valid.loss", -1)
    print(f"\nStatus: {cost([(grid, n) for n, *_ in rows])}\n")


def table_b():
    print("| E | TopK valid loss | ReMoE valid loss | ReMoE − TopK (paired) | | the paper's ordering (ReMoE lower) |")
    print("|---|---|---|---|---|---|")
    cells, gains = [], []
    for E in (8, 16, 32):
        grid, t_name, r_name = ("table-a-h128", "topk", "remoe") if E == 8 else \
            ("table-b-h128", f"topk-e{E}", f"remoe-e{E}")
        cells += [(grid, t_name), (grid, r_name)] if E != 8 else []
        t, r = done(copies(grid, t_name)), done(copies(grid, r_name))
        diff, d = paired(r, t, "valid.loss")
        v = verdict(d)
        gains.append(st.mean(d) if d and len(d) >= 3 else None)
        print(f"| {E} | {ms(col(t, 'valid.loss'))} | {ms(col(r, 'valid.loss'))} | {diff} | {v} | {judged(v, -1)} |")
    # the paper: ReMoE's gain over TopK grows with E (the paired difference
    # falls from E = 8 to 16 to 32)
    if None in gains:
        trend = "not testable yet (fewer than 3 seeds at some E)"
    else:
        trend = "holds" if gains[0] > gains[1] > gains[2] else "does not hold"
        trend += " at the means (" + ", ".join(f"{g:+.4f}" for g in gains) + "; their spreads are in the table)"
    print(f"\nThe paper's trend, ReMoE's gain over TopK growing with E: {trend}.")
    print(f"\nStatus (E = 16 and 32; E = 8 is table (a)'s): {cost(cells)}\n")


def table_e():
    paper = {"smoe-share": ("7.37", "6.13", "—"), "cartesian": ("7.19", "6.08", "6.08 → 27.72"),
             "smoe-top3": ("7.40", "6.18", "6.18 → 847"), "fine-grained": ("7.33", "6.16", "6.16 → 3095")}
    grid = "table-e-h128"
    res = {name: done(copies(grid, name)) for name in paper}
    print("| method | paper PPL base / large | paper robustness (large) | our valid PPL | − SMoE-Share (paired) | "
          "| our PPL, top expert dropped | drop × |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (pb, plg, rob) in paper.items():
        r = res[name]
        diff, d = paired(r, res["smoe-share"], "valid.ppl") if name != "smoe-share" else ("(baseline)", None)
        ratio = [m["valid.ppl_drop_top"] / m["valid.ppl"] for m in r.values()
                 if "valid.ppl_drop_top" in m and m.get("valid.ppl")]
        print(f"| {name} | {pb} / {plg} | {rob} | {ms(col(r, 'valid.ppl'))} | {diff} | {verdict(d) if d else ''} | "
              f"{ms(col(r, 'valid.ppl_drop_top'))} | {ms(ratio)} |")
    print("\nThe paper's orderings, paired by seed:\n")
    for other in ("smoe-share", "smoe-top3", "fine-grained"):
        ordering(f"CartesianMoE − {other} (PPL)", res["cartesian"], res[other], "valid.ppl", -1)
    print(f"\nStatus: {cost([(grid, n) for n in paper])}\n")


def routers():
    rows = [("topk-aux", "TopK + balance loss"), ("topk-auxfree", "TopK, bias without a loss"),
            ("topk-global", "TopK, global-batch balance loss"), ("sigmoid-bias", "sigmoid gates + bias"),
            ("remoe", "ReMoE"), ("remoe-per-layer", "ReMoE, λ per layer")]
    grid = "routers-h128"
    runs = {name: copies(grid, name) for name, _ in rows}
    res = {name: done(r) for name, r in runs.items()}
    print("| router | valid loss | − TopK + balance loss (paired) | | imbalance (max/mean) | worst layer's | "
          "least active layer (experts/token) | most starved layer (no expert) | flip rate | "
          "tokens on no expert per layer, end |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, label in rows:
        r = res[name]
        diff, d = paired(r, res["topk-aux"], "valid.loss") if name != "topk-aux" else ("(baseline)", None)
        cells = " | ".join(ms(col(r, k)) for k in ("imbalance", "imbalance_worst", "active_min_layer",
                                                    "no_expert_max_layer", "flip_rate"))
        per = no_expert_per_layer(runs[name]) if name.startswith("remoe") else ""
        print(f"| {label} | {ms(col(r, 'valid.loss'))} | {diff} | {verdict(d) if d else ''} | {cells} | {per} |")
    print(f"\nStatus: {cost([(grid, n) for n, _ in rows])}\n")


# the generated blocks of docs/RESULTS.md: <!-- NAME: generated by
# scripts/scale-results.py --> ... <!-- /NAME -->
BLOCKS = {"scale-pilot": pilot, "scale-table-a": table_a, "scale-table-b": table_b, "scale-table-e": table_e,
          "scale-routers": routers}


def report():
    for f in BLOCKS.values():
        f()


def update(path):
    """Rewrite every generated block of the page at path."""
    page = open(path).read()
    for name, f in BLOCKS.items():
        begin, end = f"<!-- {name}: generated by scripts/scale-results.py -->", f"<!-- /{name} -->"
        if begin not in page or end not in page:
            sys.exit(f"{path}: no {name} markers ({begin} ... {end})")
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            f()
        head, rest = page.split(begin, 1)
        page = head + begin + "\n" + buf.getvalue() + rest[rest.index(end):]
    with open(path, "w") as fh:
        fh.write(page)


if __name__ == "__main__":
    if ARCHIVE:
        archive(ARCHIVE)
    elif RESTORE:
        restore()
    elif UPDATE:
        update(UPDATE)
    else:
        report()
