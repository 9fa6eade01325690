#!/usr/bin/python3
"""scale-results.py — the scale pilot of docs/RESULTS.md ("Where MoE pays at
CPU scale") from its runs (runs/scale/pilot-*/NAME/seed-1/metrics.jsonl, as
far as they have got): the validation loss every ~2M tokens per model, the
crossover (the first measured token count from which TopK stays below
dense), ReMoE's per-layer share of tokens on no expert at its last step and
over training (SVG), and an SVG plot of validation loss against tokens for
each width. Runs still in progress are
shown up to their last measurement and marked.

    scripts/scale-results.py [RUNS_DIR [FIG_DIR]]   (default runs/scale docs/figures) -> Markdown on stdout
    scripts/scale-results.py --update docs/RESULTS.md   the same, written between the page's
                                                        scale-pilot markers
"""
import contextlib
import io
import json
import os
import sys

UPDATE = sys.argv[2] if len(sys.argv) > 2 and sys.argv[1] == "--update" else None
ARGS = [] if UPDATE else sys.argv[1:]
RUNS = ARGS[0] if len(ARGS) > 0 else "runs/scale"
FIGS = ARGS[1] if len(ARGS) > 1 else "docs/figures"
MODELS = ("dense", "topk", "remoe")
COLORS = {"dense": "#444444", "topk": "#1f77b4", "remoe": "#d62728"}


def load(grid, name):
    """(curve [(tokens, val_loss)], last metrics line, finished) of one run, or None."""
    path = os.path.join(RUNS, grid, name, "seed-1", "metrics.jsonl")
    if not os.path.exists(path):
        return None
    curve, last, tokens = [], None, 0
    with open(path) as f:
        for line in f:
            try:
                m = json.loads(line)
            except ValueError:
                continue  # a line being written
            tokens = m.get("tokens", 0) * m["step"]
            last = m
            if "val_loss" in m:
                curve.append((tokens, m["val_loss"]))
    done = os.path.exists(os.path.join(RUNS, grid, name, "seed-1", "sweep.json"))
    return curve, last, done


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
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    return True


def svg(runs, path):
    """Validation loss against tokens, one line per model."""
    lines = [(name + ("" if r[2] else " (running)"), COLORS[name], r[0]) for name, r in runs.items() if r and r[0]]
    vals = [v for _, _, ps in lines for _, v in ps]
    if not vals:
        return False
    pad = 0.02 * (max(vals) - min(vals) + 1e-9)
    return line_chart(path, lines, "validation loss", min(vals) - pad, max(vals) + pad)


def layer_activity(grid, path):
    """ReMoE's share of tokens on no expert, per layer, against tokens (the
    mean over each 100 steps of metrics.jsonl's per-layer no_expert)."""
    f = os.path.join(RUNS, grid, "remoe", "seed-1", "metrics.jsonl")
    if not os.path.exists(f):
        return False
    sums, tokens = {}, {}
    with open(f) as fh:
        for line in fh:
            try:
                m = json.loads(line)
            except ValueError:
                continue
            b = (m["step"] - 1) // 100
            tokens[b] = m.get("tokens", 0) * (b + 1) * 100
            for i, l in enumerate(m.get("layers", [])):
                if l.get("no_expert") is not None:
                    sums.setdefault(i, {}).setdefault(b, []).append(l["no_expert"])
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    lines = [(f"layer {i}", palette[i % len(palette)],
              [(tokens[b], sum(v) / len(v)) for b, v in sorted(per.items())]) for i, per in sorted(sums.items())]
    return line_chart(path, lines, "tokens on no expert", 0.0, 1.0)


def table(grid, title):
    runs = {m: load(grid, m) for m in MODELS}
    print(f"#### {title}\n")
    if not any(runs.values()):
        print("Not started yet.\n")
        return
    steps = sorted({t for r in runs.values() if r for t, _ in r[0]})
    print("| tokens (M) | " + " | ".join(MODELS) + " | TopK − dense | ReMoE − dense |")
    print("|---:|" + "---:|" * (len(MODELS) + 2))
    for t in steps:
        vals = {m: dict(runs[m][0]).get(t) if runs[m] else None for m in MODELS}
        cell = lambda v: f"{v:.4f}" if v is not None else "—"
        diff = lambda a, b: f"{a - b:+.4f}" if a is not None and b is not None else "—"
        print(f"| {t / 1e6:.1f} | " + " | ".join(cell(vals[m]) for m in MODELS) +
              f" | {diff(vals['topk'], vals['dense'])} | {diff(vals['remoe'], vals['dense'])} |")
    state = ", ".join(f"{m}: {'finished' if r[2] else 'step %d' % (r[1]['step'] if r[1] else 0)}"
                      for m, r in runs.items() if r)
    print(f"\nRuns: {state}.")
    if runs["dense"] and runs["topk"]:
        c = crossover(runs["dense"][0], runs["topk"][0])
        print("Crossover (TopK below dense from then on): " +
              (f"{c / 1e6:.1f}M tokens." if c is not None else "none within the tokens measured so far."))
    r = runs["remoe"]
    if r and r[1] and "layers" in r[1]:
        share = [l.get("no_expert") for l in r[1]["layers"]]
        act = [l.get("active_per_token") for l in r[1]["layers"]]
        print("ReMoE at its last step (%d), per layer: tokens on no expert %s; active experts per token %s." %
              (r[1]["step"], ", ".join("%.2f" % s if s is not None else "—" for s in share),
               ", ".join("%.2f" % a if a is not None else "—" for a in act)))
    fig = os.path.join(FIGS, f"scale-{grid}.svg")
    if svg(runs, fig):
        print(f"\n![validation loss against tokens, {title}](figures/scale-{grid}.svg)")
    fig = os.path.join(FIGS, f"scale-{grid}-remoe-layers.svg")
    if layer_activity(grid, fig):
        print(f"\n![ReMoE: share of tokens on no expert per layer, {title}](figures/scale-{grid}-remoe-layers.svg)")
    print()


def report():
    table("pilot-h128", "Hidden 128, 6 layers (2.5M active parameters, 42% embedding and head), 50.2M tokens")
    table("pilot-h256", "Hidden 256, 4 layers (6.0M active parameters, 35% embedding and head), 20.1M tokens")


if __name__ == "__main__":
    if not UPDATE:
        report()
        sys.exit(0)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        report()
    page = open(UPDATE).read()
    begin, end = "<!-- scale-pilot: generated by scripts/scale-results.py -->", "<!-- /scale-pilot -->"
    if begin not in page or end not in page:
        sys.exit(f"{UPDATE}: no scale-pilot markers ({begin} ... {end})")
    head, rest = page.split(begin, 1)
    page = head + begin + "\n" + buf.getvalue() + rest[rest.index(end):]
    with open(UPDATE, "w") as f:
        f.write(page)
