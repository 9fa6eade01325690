#!/usr/bin/env python3
"""test_report_browser.py — opens the HTML report of `moe report` in headless
Chromium (file:// URL): it must render with no console messages, every chart
must have drawn marks, a title, axis labels and a legend, the page must load
nothing from outside, and a PNG screenshot is saved as a test artefact
(BUILD/artifacts/report.png). Installs chromium (scripts/install-deps.sh) if
it is missing; if it cannot be installed, exits 77 (the runner's SKIP) after
a line saying so.
Usage: test_report_browser.py BUILD_DIR"""
import json
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
  var out = {charts: [], external: [], height: document.documentElement.scrollHeight};
  document.querySelectorAll('figure.chart').forEach(function (f) {
    var svg = f.querySelector('svg'), r = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
    var marks = svg ? svg.querySelectorAll('g.marks > *') : [];
    var drawn = 0;
    marks.forEach(function (m) { var b = m.getBBox(); if (b.width > 0 || b.height > 0) drawn++; });
    out.charts.push({id: f.id, width: r.width, height: r.height, marks: marks.length, drawn: drawn,
                     title: svg ? (svg.querySelector('text.title') || {}).textContent || '' : '',
                     labels: svg ? svg.querySelectorAll('text.label').length : 0,
                     legend: svg ? svg.querySelectorAll('g.legend > *').length : 0});
  });
  document.querySelectorAll('[src],[href],link,img,iframe,object,embed').forEach(function (e) {
    out.external.push(e.outerHTML.slice(0, 120));
  });
  var pre = document.createElement('pre');
  pre.id = 'moe-check';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
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
