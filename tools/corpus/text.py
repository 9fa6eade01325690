"""Text clean-up and cutting into documents.

chunk(): cut a long text into pieces of about `target` characters at
paragraph boundaries (blank lines), falling back to line and then to hard
boundaries, so no piece exceeds `hard` characters.  clean(): normalise
newlines, strip trailing spaces and squeeze runs of blank lines.  Email,
HTML, OSIS and Brown-corpus helpers live here too."""

import email
import email.policy
import html
import re

TARGET = 32 * 1024        # aim for documents of about 32 KB ...
HARD = 48 * 1024          # ... and never longer than 48 KB
MIN_DOC = 200             # shorter documents are dropped (noise, headers)

_ws_tail = re.compile(r"[ \t]+\n")
_blank_run = re.compile(r"\n{3,}")


def clean(text):
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = _ws_tail.sub("\n", text)
    text = _blank_run.sub("\n\n", text)
    return text.strip()


def _split_hard(piece, hard):
    out = []
    while len(piece) > hard:
        cut = piece.rfind("\n", 0, hard)
        if cut < hard // 2:
            cut = piece.rfind(" ", 0, hard)
        if cut < hard // 2:
            cut = hard
        out.append(piece[:cut])
        piece = piece[cut:].lstrip("\n ")
    out.append(piece)
    return out


def chunk(text, target=TARGET, hard=HARD, sep="\n\n"):
    """Cut TEXT into pieces of roughly TARGET chars at SEP boundaries."""
    if len(text) <= hard:
        return [text]
    paras = []
    for p in text.split(sep):
        paras.extend(_split_hard(p, hard) if len(p) > hard else [p])
    out, cur, size = [], [], 0
    for p in paras:
        if cur and size + len(p) + len(sep) > target:
            out.append(sep.join(cur))
            cur, size = [], 0
        cur.append(p)
        size += len(p) + len(sep)
    if cur:
        last = sep.join(cur)
        # fold a short tail into the previous piece when that stays under HARD
        if out and len(last) < target // 4 and len(out[-1]) + len(sep) + len(last) <= hard:
            out[-1] = out[-1] + sep + last
        else:
            out.append(last)
    return out


def unwrap(lines):
    """Join hard-wrapped lines into paragraphs; empty lines separate them."""
    paras, cur = [], []
    for line in lines:
        line = (line or "").strip()
        if line:
            cur.append(line)
        elif cur:
            paras.append(" ".join(cur))
            cur = []
    if cur:
        paras.append(" ".join(cur))
    return "\n\n".join(paras)


# -- HTML ------------------------------------------------------------------
_script = re.compile(r"<(script|style)\b.*?</\1\s*>", re.I | re.S)
_comment = re.compile(r"<!--.*?-->", re.S)
_block = re.compile(r"<\s*/?\s*(p|div|br|tr|li|h[1-6]|table|blockquote|pre)\b[^>]*>", re.I)
_tag = re.compile(r"<[^>]{0,2000}>", re.S)
_spaces = re.compile(r"[ \t\u00a0]+")


def strip_html(s):
    s = _script.sub(" ", s)
    s = _comment.sub(" ", s)
    s = _block.sub("\n", s)
    s = _tag.sub("", s)
    s = html.unescape(s)
    s = _spaces.sub(" ", s)
    return clean("\n".join(l.strip() for l in s.split("\n")))


_looks_html = re.compile(r"<\s*(html|body|p|div|br|font|table|a\s)\b", re.I)


# -- email -----------------------------------------------------------------
def _part_text(part):
    try:
        payload = part.get_payload(decode=True)     # undoes base64 / quoted-printable
    except Exception:
        payload = None
    if payload is None:
        p = part.get_payload()
        return p if isinstance(p, str) else ""
    charset = part.get_content_charset() or "latin-1"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("latin-1", errors="replace")


def email_text(raw):
    """Subject line + readable body of one RFC-822 message (bytes)."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    plain, htmls = [], []
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        if ctype == "text/plain":
            plain.append(_part_text(part))
        elif ctype == "text/html":
            htmls.append(_part_text(part))
    if plain:
        body = "\n\n".join(plain)
        if _looks_html.search(body):
            body = strip_html(body)
    elif htmls:
        body = "\n\n".join(strip_html(h) for h in htmls)
    else:
        body = ""
    subject = msg.get("Subject", "") or ""
    try:
        parts = email.header.decode_header(subject)
        subject = "".join(t.decode(c or "latin-1", errors="replace") if isinstance(t, bytes) else t
                          for t, c in parts)
    except Exception:
        pass
    subject = " ".join(str(subject).split())
    body = clean(body)
    return ("Subject: %s\n\n%s" % (subject, body)) if subject else body, len(body)


# -- OSIS (SWORD modules) -----------------------------------------------------
_osis_note = re.compile(r"<note\b[^>]*>.*?</note>", re.S)
_osis_title = re.compile(r"<title\b[^>]*>(.*?)</title>", re.S)


def strip_osis(s):
    s = _osis_note.sub("", s)
    s = _osis_title.sub(lambda m: "\n\n" + m.group(1) + "\n\n", s)
    s = re.sub(r"<(?:div|p|lb|l)\b[^>]*/?>", "\n", s)
    s = _tag.sub("", s)
    s = html.unescape(s)
    s = _spaces.sub(" ", s)
    return s


# -- Brown corpus ------------------------------------------------------------
_no_space_before = {",", ".", ";", ":", "!", "?", ")", "]", "}", "''", "'", "%", "n't", "'s",
                    "'re", "'ve", "'ll", "'d", "'m"}
_no_space_after = {"``", "`", "(", "[", "{", "$"}


def brown_detok(tagged):
    """Untag and detokenize one Brown corpus file (word/tag tokens)."""
    sents = []
    for line in tagged.split("\n"):
        toks = line.split()
        if not toks:
            continue
        words = []
        for t in toks:
            w = t.rsplit("/", 1)[0] if "/" in t else t
            words.append(w)
        out = ""
        glue = False
        for w in words:
            if w == "." and out.endswith("."):
                continue                    # "Jr." ending a sentence
            if out and not glue and w not in _no_space_before:
                out += " "
            out += '"' if w in ("``", "''") else w
            glue = w in _no_space_after
        sents.append(out)
    return " ".join(sents)
