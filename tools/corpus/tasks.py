"""Held-out multiple-choice evaluation tasks.

Both tasks write one JSON object per line:
    {"id": str, "context": str, "choices": [str, ...], "gold": int}
A model scores each choice as a continuation of `context` (choices carry
their leading space) and is right when the best-scoring choice is `gold`.

cloze:   LAMBADA-style last word of a passage of test-split fiction; the
         distractors are other words of the same passage (or document).
wordnet: "which word does this gloss define", 4 ways, from WordNet synsets
         whose document landed in the test split.

Every random choice comes from random.Random seeded with a hash of the
item id, so the files are identical on every run."""

import hashlib
import random
import re


def _rng(key):
    return random.Random(int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:16], 16))


STOP = set("""a about above after again against all am an and any are as at be because been
before being below between both but by can could did do does doing down during each few for
from further had has have having he her here hers herself him himself his how i if in into is
it its itself just me more most my myself no nor not now of off on once only or other our ours
ourselves out over own same she should so some such than that the their theirs them themselves
then there these they this those through to too under until up very was we were what when where
which while who whom why will with would you your yours yourself yourselves said upon one""".split())

_sent_split = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"”’')\]]))\s+(?=[\"“‘'(\[]?[A-Z])")
_last_word = re.compile(r"^(.*\S)\s+([A-Za-z][a-z]*)([.!?]+[\"”’']*)$", re.S)
_word = re.compile(r"[A-Za-z][a-z]+")


def _good(w):
    return len(w) >= 3 and w.lower() not in STOP


def _pick_distractors(rng, gold, pools, n=3):
    lo = gold.lower()
    cap = gold[0].isupper()
    chosen = []
    for pool in pools:
        cands = sorted({w for w in pool if _good(w) and w.lower() != lo
                        and w[0].isupper() == cap})
        rng.shuffle(cands)
        for w in cands:
            if len(chosen) == n:
                break
            if all(w.lower() != c.lower() for c in chosen):
                chosen.append(w)
    return chosen if len(chosen) == n else None


def cloze(docs, max_items=2000, min_words=50, max_words=150):
    """docs: list of (source_id, text) of held-out fiction.  Returns items."""
    items = []
    per_doc = max(1, max_items // max(1, len(docs)) + 1)
    for sid, text in sorted(docs):
        doc_words = _word.findall(text)
        made = 0
        sents = [s.strip() for s in _sent_split.split(" ".join(text.split())) if s.strip()]
        i = 0
        while i < len(sents) and made < per_doc:
            # a passage: whole sentences from i, at least MIN_WORDS words
            j, nwords = i, 0
            while j < len(sents) and nwords < min_words:
                nwords += len(sents[j].split())
                j += 1
            passage = " ".join(sents[i:j])
            i = j
            if nwords < min_words or nwords > max_words:
                continue
            m = _last_word.match(passage)
            if not m or not _good(m.group(2)):
                continue
            context, gold = m.group(1), m.group(2)
            iid = "cloze-%s-%d" % (sid, made)
            rng = _rng(iid)
            dis = _pick_distractors(rng, gold, [_word.findall(context), doc_words])
            if dis is None:
                continue
            choices = [gold] + dis
            rng.shuffle(choices)
            items.append({"id": iid, "context": context,
                          "choices": [" " + c for c in choices],
                          "gold": choices.index(gold)})
            made += 1
    items.sort(key=lambda it: hashlib.sha1(it["id"].encode()).hexdigest())
    return sorted(items[:max_items], key=lambda it: it["id"])


def _gloss_definition(gloss):
    """The definition part of a WordNet gloss, without the quoted examples."""
    d = gloss.split('; "')[0].split(' "')[0].strip().rstrip(";").strip()
    return d


def wordnet(groups, max_items=2000):
    """groups: list of (source_id, [synsets]) from test-split WordNet documents."""
    pool = {}           # pos -> sorted list of single-word lemmas
    cand = []
    for sid, syns in groups:
        for part, off, pos, lemmas, gloss in syns:
            single = [l for l in lemmas if re.fullmatch(r"[a-z]{3,}", l)]
            pool.setdefault(part, set()).update(single)
            if not single:
                continue
            word = single[0]
            d = _gloss_definition(gloss)
            if len(d) < 10 or word in d.lower():
                continue
            cand.append((part, off, word, set(lemmas), d))
    pool = {k: sorted(v) for k, v in pool.items()}
    items = []
    for part, off, word, lemmas, d in cand:
        iid = "wordnet-%s-%s" % (part, off)
        rng = _rng(iid)
        choices = [word]
        others = [w for w in pool[part] if w not in lemmas and w not in d.lower()]
        if len(others) < 3:
            continue
        while len(choices) < 4:
            w = others[rng.randrange(len(others))]
            if w not in choices:
                choices.append(w)
        rng.shuffle(choices)
        items.append({"id": iid,
                      "context": "Definition: %s.\nWord:" % d.rstrip("."),
                      "choices": [" " + c for c in choices],
                      "gold": choices.index(word)})
    items.sort(key=lambda it: hashlib.sha1(it["id"].encode()).hexdigest())
    return sorted(items[:max_items], key=lambda it: it["id"])
