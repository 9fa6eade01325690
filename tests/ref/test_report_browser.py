#!/usr/bin/env python3
# once: checks the page in Chromium; the report's C code runs under the sanitizers in cli/test_eval
"""test_report_browser.py — opens the HTML report of `moe report` in headless
Chromium (file:// URL): it must render with no console messages, every chart
must have drawn marks, a title, axis labels and a legend, the page must load
nothing from outside, and a PNG screenshot is saved as a test artefact
(BUILD/artifacts/report.png, 1300 px wide). At 420 px
(a phone) nothing may overflow the page sideways; paired heatmaps share one
colour scale; expert-load ticks fall on round steps; TopK's constant sparsity
is a note, not flat charts; ReMoE's domain bars use the layer's own even-load
line, not k/E; a colour key is present. Installs chromium
(scripts/install-deps.sh) if it is missing; skips (exit 77) with a message
only if it cannot be installed.
Usage: test_report_browser.py BUILD_DIR"""
import html as html_mod
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile

build = sys.argv[1] if len(sys.argv) > 1 else "build"
root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.chdir(root)
moe = os.path.join(build, "moe")


def find_chromium():
    for name in ("chromium", "chromium-browser"):
        p = shutil.which(name)
        if p:
            return p
    return None


chromium = find_chromium()
if not chromium:
    print("chromium missing: running scripts/install-deps.sh", flush=True)
    subprocess.run(["bash", "scripts/install-deps.sh"], check=False)
    chromium = find_chromium()
if not chromium:
    print("chromium is not installed and could not be installed (apt-get install chromium)")
    sys.exit(77)

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]

CHECK_SCRIPT = r"""
<script>
window.addEventListener('load', function () {
  var vw = document.documentElement.clientWidth;
  var out = {charts: [], external: [], height: document.documentElement.scrollHeight,
             viewport: vw, scroll_width: document.documentElement.scrollWidth, overflowing: [],
             notes: Array.prototype.map.call(document.querySelectorAll('p.note'), function (p) { return p.textContent; }),
             key: !!document.querySelector('.key')};
  /* anything whose right edge passes the viewport, outside a box that scrolls itself */
  document.querySelectorAll('body *').forEach(function (e) {
    var r = e.getBoundingClientRect();
    if (r.right <= vw + 0.5 || r.width == 0) return;
    for (var p = e.parentElement; p; p = p.parentElement)
      if (getComputedStyle(p).overflowX == 'auto' || getComputedStyle(p).overflowX == 'scroll') return;
    out.overflowing.push(e.tagName + (e.id ? '#' + e.id : '') + (e.className && e.className.baseVal === undefined ? '.' + e.className : '') + ' right ' + Math.round(r.right));
  });
  document.querySelectorAll('figure.chart').forEach(function (f) {
    var svg = f.querySelector('svg'), r = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
    var lg = svg ? svg.querySelector('g.legend') : null;
    var ticks = svg ? Array.prototype.map.call(svg.querySelectorAll('g.axes text.tick'), function (t) { return t.textContent; }) : [];
    var legends = svg ? Array.prototype.map.call(svg.querySelectorAll('g.legend text'), function (t) { return t.textContent; }) : [];
    var marks = svg ? svg.querySelectorAll('g.marks > *') : [];
    var drawn = 0;
    marks.forEach(function (m) { var b = m.getBBox(); if (b.width > 0 || b.height > 0) drawn++; });
    out.charts.push({id: f.id, width: r.width, height: r.height, marks: marks.length, drawn: drawn,
                     title: svg ? (svg.querySelector('text.title') || {}).textContent || '' : '',
                     right: r.right, viewbox: svg ? svg.getAttribute('viewBox') : null,
                     scale: lg && lg.dataset.hi ? [lg.dataset.lo, lg.dataset.hi] : null, ticks: ticks, legend_texts: legends,
                     labels: svg ? svg.querySelectorAll('text.label').length : 0,
                     legend: svg ? svg.querySelectorAll('g.legend > *').length : 0});
  });
  document.querySelectorAll('[src],[href],link,img,iframe,object,embed').forEach(function (e) {
    out.external.push(e.outerHTML.slice(0, 120));
  });
  /* in a srcdoc iframe (the 420 px check) the result goes to the host page, which --dump-dom prints */
  var host = window.frameElement ? parent.document : document;
  var pre = host.createElement('pre');
  pre.id = 'moe-check';
  pre.textContent = JSON.stringify(out);
  host.body.appendChild(pre);
});
</script>
"""


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)
    if r.returncode != 0:
        sys.exit("FAIL: %s\n%s%s" % (" ".join(cmd), r.stdout[-2000:], r.stderr[-2000:]))
    return r


def chrome(tmp, *args):
    prof = tempfile.mkdtemp(dir=tmp, prefix="profile-")
    return subprocess.run([chromium] + FLAGS + ["--user-data-dir=" + prof] + list(args),
                          capture_output=True, text=True, timeout=120)


with tempfile.TemporaryDirectory() as tmp:
    # two tiny runs (ReMoE with the calibration probe, TopK), evaluated and analysed
    docs = [{"text": " ".join(["the whale swam under the ship"] * 6), "domain": "fiction"},
            {"text": " ".join(["dear bob please send the report"] * 6), "domain": "email"}] * 10
    with open(f"{tmp}/d.jsonl", "w") as f:
        f.writelines(json.dumps(d) + "\n" for d in docs)
    with open(f"{tmp}/task.jsonl", "w") as f:
        for i in range(4):
            f.write(json.dumps({"context": "the whale swam under the", "choices": [" ship", " report"], "gold": 0}) + "\n")
    run([moe, "prepare", "--input", f"{tmp}/d.jsonl", "--tokenizer", "bytes", "--out", f"{tmp}/d.tok"])
    runs = []
    for router in ("relu", "topk"):
        cfg = {"vocab_size": 257, "hidden": 16, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "max_seq_len": 32,
               "ffn": "moe", "router": router, "n_experts": 4, "top_k": 1, "steps": 24, "batch_size": 4,
               "seq_len": 32, "lr": 3e-3, "warmup": 2}
        with open(f"{tmp}/{router}.json", "w") as f:
            json.dump(cfg, f)
        out = f"{tmp}/{router}"
        run([moe, "train", "--config", f"{tmp}/{router}.json", "--data", f"{tmp}/d.tok", "--out", out,
             "--tokenizer", "bytes", "--analysis-every", "4", "--analysis-tokens", "64"])
        run([moe, "eval", "--model", out, "--data", f"{tmp}/d.tok", "--task", f"{tmp}/task.jsonl", "--robustness"])
        run([moe, "analyze", "--model", out, "--data", f"{tmp}/d.tok", "--min-count", "2"])
        runs.append(out)
    report = f"{tmp}/report.html"
    run([moe, "report"] + runs + ["--out", report])

    # 1. load the page as it is: no console messages at all
    r = chrome(tmp, "--enable-logging=stderr", "--v=0", "--dump-dom", "file://" + report)
    console = [l for l in r.stderr.splitlines() if "CONSOLE" in l or "Uncaught" in l]
    if r.returncode != 0 or "</html>" not in r.stdout:
        sys.exit("FAIL: chromium did not render the report (rc %d): %s" % (r.returncode, r.stderr[-1500:]))
    if console:
        sys.exit("FAIL: console messages:\n" + "\n".join(console))
    print("ok   renders with no console messages")

    # 2. a copy with a checking script: every chart drawn, labelled, with a legend
    with open(report) as f:
        html = f.read()
    checked = f"{tmp}/checked.html"
    with open(checked, "w") as f:
        f.write(html.replace("</body>", CHECK_SCRIPT + "</body>"))
    r = chrome(tmp, "--window-size=1300,1000", "--dump-dom", "--virtual-time-budget=5000", "file://" + checked)
    m = re.search(r'<pre id="moe-check">(.*?)</pre>', r.stdout, re.S)
    if not m:
        sys.exit("FAIL: the checking script did not report (rc %d): %s" % (r.returncode, r.stderr[-1500:]))
    res = json.loads(m.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
    charts = res["charts"]
    bad = [c for c in charts if c["drawn"] < 1 or c["width"] < 100 or c["height"] < 80 or not c["title"]
           or c["labels"] < 2 or c["legend"] < 1]
    if len(charts) < 15 or bad:
        sys.exit("FAIL: %d charts; without marks, size, title, axis labels or legend: %s" % (len(charts), bad))
    if res["external"]:
        sys.exit("FAIL: the report references outside resources: %s" % res["external"])
    print("ok   %d charts, each with drawn marks (%d in all), a title, axis labels and a legend"
          % (len(charts), sum(c["drawn"] for c in charts)))
    by_id = {c["id"]: c for c in charts}

    # paired heatmaps (one per run) share one colour scale
    for kind in ("load", "routed"):
        scales = [by_id["%s-%d" % (kind, i)]["scale"] for i in range(len(runs)) if "%s-%d" % (kind, i) in by_id]
        if len(scales) != len(runs) or None in scales or len(set(map(tuple, scales))) != 1:
            sys.exit("FAIL: the %s heatmaps of the runs do not share one colour scale: %s" % (kind, scales))
    print("ok   paired heatmaps share one colour scale (load %s, routed %s)"
          % (by_id["load-0"]["scale"], by_id["routed-0"]["scale"]))

    # expert-load x ticks on round steps: evenly spaced multiples of a 1-2-5 step
    for i in range(len(runs)):
        t = [float(x) for x in by_id["load-%d" % i]["ticks"] if re.fullmatch(r"-?\d+(\.\d+)?", x)]
        steps = {round(b - a, 9) for a, b in zip(t, t[1:])}
        d = steps.pop() if len(steps) == 1 else 0
        mant = d / 10 ** math.floor(math.log10(d)) if d > 0 else 0
        if len(t) < 2 or steps or round(mant, 6) not in (1, 2, 5) or any(abs(x / d - round(x / d)) > 1e-9 for x in t):
            sys.exit("FAIL: load-%d x ticks are not on round steps: %s" % (i, by_id["load-%d" % i]["ticks"]))
    print("ok   expert-load x ticks on round steps (%s)" % ", ".join(by_id["load-1"]["ticks"]))

    # TopK (run 1): constant sparsity is one line of text, not two flat charts; ReMoE (run 0) keeps them
    if "sparsity-1" in by_id or "layer-sparsity-1" in by_id or "sparsity-0" not in by_id or "layer-sparsity-0" not in by_id:
        sys.exit("FAIL: flat TopK sparsity charts shown, or ReMoE's missing: %s" % sorted(by_id))
    if not any("constant at 0.75" in n and "left out" in n for n in res["notes"]):
        sys.exit("FAIL: no note saying that TopK's constant sparsity charts are left out")
    print("ok   TopK's constant sparsity: a note instead of flat charts")

    # the dashed even-load line: k/E for TopK, the layer's own mean for ReMoE
    relu_bars = [c for c in charts if c["id"].startswith("domains-0-")]
    topk_bars = [c for c in charts if c["id"].startswith("domains-1-")]
    if not relu_bars or any("uniform k/E" in c["legend_texts"] for c in relu_bars) \
            or not all(any("even load" in t for t in c["legend_texts"]) for c in relu_bars) \
            or not all("uniform k/E" in c["legend_texts"] for c in topk_bars):
        sys.exit("FAIL: domain bars' reference lines: relu %s, topk %s"
                 % ([c["legend_texts"] for c in relu_bars], [c["legend_texts"] for c in topk_bars]))
    if not res["key"]:
        sys.exit("FAIL: no colour key on the page")
    print("ok   ReMoE layers: even-load line from the layer's mean; TopK: k/E; a colour key")

    # 3b. a phone: 420 px wide, nothing overflows sideways, every chart scaled to fit. Headless
    # Chromium's window is at least 500 px wide, so the page is shown in a 420 px iframe.
    def in_frame(page, height):
        host = f"{tmp}/host-{height}.html"
        with open(page) as f:
            doc = f.read()
        with open(host, "w") as f:
            f.write('<!DOCTYPE html><html><body style="margin:0"><iframe style="width:420px;height:%dpx;border:0" '
                    'srcdoc="%s"></iframe></body></html>' % (height, html_mod.escape(doc, quote=True)))
        return host
    r = chrome(tmp, "--window-size=600,900", "--dump-dom", "--virtual-time-budget=5000", "file://" + in_frame(checked, 900))
    m = re.search(r'<pre id="moe-check">(.*?)</pre>', r.stdout, re.S)
    if not m:
        sys.exit("FAIL: the checking script did not report at 420 px (rc %d): %s" % (r.returncode, r.stderr[-1500:]))
    narrow = json.loads(m.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
    cut = [c["id"] for c in narrow["charts"] if c["right"] > narrow["viewport"] + 0.5 or not c["viewbox"]]
    if narrow["scroll_width"] > narrow["viewport"] or narrow["overflowing"] or cut:
        sys.exit("FAIL: at 420 px the page is %d px wide in a %d px viewport; overflowing: %s; charts cut: %s"
                 % (narrow["scroll_width"], narrow["viewport"], narrow["overflowing"][:10], cut))
    print("ok   at 420 px: no horizontal overflow (%d charts, each inside the %d px viewport)"
          % (len(narrow["charts"]), narrow["viewport"]))

    # 3. the screenshot, full page
    art = os.path.join(build, "artifacts")
    os.makedirs(art, exist_ok=True)
    png = os.path.join(art, "report.png")
    height = min(max(int(res["height"]) + 20, 800), 16000)
    r = chrome(tmp, "--window-size=1300,%d" % height, "--screenshot=" + os.path.abspath(png), "file://" + report)
    with open(png, "rb") as f:
        data = f.read()
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or len(data) < 20000:
        sys.exit("FAIL: screenshot %s is not a plausible PNG (%d bytes)" % (png, len(data)))
    print("ok   screenshot %s (1300 x %d, %d kB)" % (png, height, len(data) // 1024))
print("report browser test passed")
