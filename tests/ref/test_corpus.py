#!/usr/bin/python3
# once: it runs no moe code
"""Test of tools/build_corpus.py: builds the small profile twice into temp
folders (sharing the download cache .cache/corpus, so only the first run ever
touches the network) and checks the output.  Prints "ok NAME" / "FAIL NAME"
lines; exits 1 if any check fails.

    /usr/bin/python3 tests/ref/test_corpus.py [--cache DIR]
"""

import filecmp
import hashlib
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(REPO, "tools", "build_corpus.py")
SPLITS = ("train", "valid", "test")
SMALL_DOMAINS = {"fiction", "speeches", "email"}

failures = 0


def check(name, cond, detail=""):
    global failures
    if cond:
        print("ok " + name)
    else:
        failures += 1
        print("FAIL " + name + (": " + detail if detail else ""))


def load(path):
    rows, bad = [], []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            try:
                rows.append(json.loads(line))
            except ValueError as e:
                bad.append("%s:%d: %s" % (os.path.basename(path), i, e))
    return rows, bad


def main():
    cache = os.path.join(REPO, ".cache", "corpus")
    if "--cache" in sys.argv:
        cache = sys.argv[sys.argv.index("--cache") + 1]
    with tempfile.TemporaryDirectory(prefix="moe-corpus-") as tmp:
        outs = [os.path.join(tmp, "a"), os.path.join(tmp, "b")]
        for o in outs:
            p = subprocess.run([sys.executable, BUILD, "--profile", "small", "--out", o,
                                "--cache", cache, "--quiet"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            check("build exits 0 (%s)" % os.path.basename(o), p.returncode == 0, p.stdout[-2000:])
            if p.returncode != 0:
                return 1
        a, b = outs

        files = sorted(os.path.relpath(os.path.join(dp, f), a)
                       for dp, _, fs in os.walk(a) for f in fs)
        expected = ["brown.jsonl", "stats.json", "tasks/cloze.jsonl",
                    "test.jsonl", "train.jsonl", "valid.jsonl"]
        check("expected files", all(f in files for f in expected),
              "have %s" % files)
        same = [f for f in files if os.path.exists(os.path.join(b, f))
                and filecmp.cmp(os.path.join(a, f), os.path.join(b, f), shallow=False)]
        check("deterministic: two builds are byte-identical", same == files,
              "differ: %s" % sorted(set(files) - set(same)))

        # splits: valid JSON, the three fields, domains, disjointness
        sources, texts = {}, {}
        domains = set()
        bad_rows = []
        for s in SPLITS:
            rows, bad = load(os.path.join(a, s + ".jsonl"))
            bad_rows += bad
            check("%s split non-empty" % s, len(rows) > 0)
            for i, r in enumerate(rows):
                if set(r) != {"text", "domain", "source"} or not all(
                        isinstance(r[k], str) and r[k] for k in ("text", "domain", "source")):
                    bad_rows.append("%s.jsonl:%d: fields %s" % (s, i + 1, sorted(r)))
                    continue
                domains.add(r["domain"])
                sources.setdefault(r["source"], set()).add(s)
                texts.setdefault(hashlib.sha1(r["text"].encode()).hexdigest(), set()).add(s)
            for dom in SMALL_DOMAINS:
                check("domain %s in %s" % (dom, s), any(r.get("domain") == dom for r in rows))
        check("every line valid JSON with text/domain/source", not bad_rows, "; ".join(bad_rows[:5]))
        check("all expected domains present", SMALL_DOMAINS <= domains,
              "have %s" % sorted(domains))
        check("brown not a training domain", "brown" not in domains)
        dup_src = [k for k, v in sources.items() if len(v) > 1]
        dup_txt = [k for k, v in texts.items() if len(v) > 1]
        check("no source id in two splits", not dup_src, str(dup_src[:3]))
        check("no document text in two splits", not dup_txt, "%d shared" % len(dup_txt))

        # brown
        rows, bad = load(os.path.join(a, "brown.jsonl"))
        check("brown valid JSON", not bad, "; ".join(bad[:3]))
        genres = {r.get("genre") for r in rows}
        check("brown has 500 documents", len(rows) == 500, "%d" % len(rows))
        check("brown has genres (15)", len(genres) == 15 and None not in genres, str(sorted(map(str, genres))))
        check("brown rows well-formed", all(r.get("domain") == "brown" and r.get("source")
                                           and len(r.get("text", "")) > 1000
                                           and "/" not in r["text"].split(" ", 3)[1]
                                           for r in rows))
        check("brown held out of the splits", not any(r["source"] in sources for r in rows))

        # cloze task
        items, bad = load(os.path.join(a, "tasks", "cloze.jsonl"))
        check("cloze valid JSON", not bad, "; ".join(bad[:3]))
        check("cloze has items", len(items) >= 20, "%d" % len(items))
        probs = []
        ids = set()
        test_text = " ".join(" ".join(r["text"].split()) for r in
                             load(os.path.join(a, "test.jsonl"))[0] if r["domain"] == "fiction")
        for it in items:
            ch = it.get("choices")
            ok = (set(it) == {"context", "choices", "gold", "id"} and isinstance(ch, list)
                  and len(ch) == 4 and len(set(ch)) == 4
                  and all(isinstance(c, str) and c.startswith(" ") and c.strip() for c in ch)
                  and isinstance(it["gold"], int) and 0 <= it["gold"] < 4
                  and isinstance(it["context"], str) and len(it["context"]) > 50
                  and it["id"] not in ids)
            if ok and it["context"] + ch[it["gold"]] not in test_text:
                ok = False
            if not ok:
                probs.append(it.get("id"))
            ids.add(it.get("id"))
        check("cloze well-formed (4 distinct choices, gold in range, from test fiction)",
              not probs, str(probs[:3]))
        golds = [it["gold"] for it in items]
        check("cloze gold positions shuffled", len(set(golds)) == 4)

        st = json.load(open(os.path.join(a, "stats.json")))
        check("stats.json lists the domains", SMALL_DOMAINS <= set(st.get("domains", {})))
    print("%d failure(s)" % failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
