/* pretok.c — the pre-split: tiktoken's split patterns (GPT-2 / r50k, cl100k
 * and Llama 3, o200k) matched by hand over the Unicode 16 classes of
 * unicode_tables.c, with the leftmost-first, greedy-with-backtracking
 * meaning that tiktoken's regex engine gives them; text may hold invalid
 * UTF-8. Also the safe cut points for splitting a large text into pieces
 * that pre-split exactly as the whole does. */
#include "tok_internal.h"

/* One character at p: its classes and byte length; n = 0 at the end of the
 * text or at a byte that does not start a valid UTF-8 sequence (shortest
 * form, no surrogates, at most U+10FFFF). */
typedef struct uch { unsigned c, n; } uch;

static inline int cont(uint8_t b) { return (b & 0xc0) == 0x80; }

static inline uch at(const uint8_t *s, size_t len, size_t p) {
    uch r = {0, 0};
    if (p >= len) return r;
    uint8_t b = s[p];
    if (b < 0x80) { r.c = moe_tok_uc_stage2[b]; r.n = 1; return r; }  /* block 0 holds ASCII */
    size_t left = len - p;
    uint32_t cp;
    if (b >= 0xc2 && b <= 0xdf) {
        if (left < 2 || !cont(s[p + 1])) return r;
        cp = (uint32_t)(b & 0x1f) << 6 | (s[p + 1] & 0x3f);
        r.n = 2;
    } else if (b >= 0xe0 && b <= 0xef) {
        if (left < 3 || !cont(s[p + 1]) || !cont(s[p + 2])) return r;
        if ((b == 0xe0 && s[p + 1] < 0xa0) || (b == 0xed && s[p + 1] > 0x9f)) return r;
        cp = (uint32_t)(b & 0x0f) << 12 | (uint32_t)(s[p + 1] & 0x3f) << 6 | (s[p + 2] & 0x3f);
        r.n = 3;
    } else if (b >= 0xf0 && b <= 0xf4) {
        if (left < 4 || !cont(s[p + 1]) || !cont(s[p + 2]) || !cont(s[p + 3])) return r;
        if ((b == 0xf0 && s[p + 1] < 0x90) || (b == 0xf4 && s[p + 1] > 0x8f)) return r;
        cp = (uint32_t)(b & 0x07) << 18 | (uint32_t)(s[p + 1] & 0x3f) << 12 |
             (uint32_t)(s[p + 2] & 0x3f) << 6 | (s[p + 3] & 0x3f);
        r.n = 4;
    } else {
        return r;
    }
    r.c = tok_uclass(cp);
    return r;
}

/* [^\s\p{L}\p{N}]: a valid character that is none of these. */
static inline int other(uch u) { return u.n && !(u.c & (TOK_C_WS | TOK_C_L | TOK_C_N)); }
static inline int crlf(const uint8_t *s, size_t len, size_t p) {
    return p < len && (s[p] == '\r' || s[p] == '\n');
}

/* End of the run of characters from p that have any of the class bits. */
static size_t run(const uint8_t *s, size_t len, size_t p, unsigned bits) {
    for (;;) {
        uch u = at(s, len, p);
        if (!u.n || !(u.c & bits)) return p;
        p += u.n;
    }
}
static size_t run_other(const uint8_t *s, size_t len, size_t p) {
    for (;;) {
        uch u = at(s, len, p);
        if (!other(u)) return p;
        p += u.n;
    }
}

/* A contraction 's 't 're 've 'm 'll 'd at p: its byte length or 0. With
 * ci, case-insensitively as Unicode simple case folding has it (so 's also
 * matches 'S and U+017F LATIN SMALL LETTER LONG S). */
static size_t contraction(const uint8_t *s, size_t len, size_t p, int ci) {
    if (p + 1 >= len || s[p] != '\'') return 0;
    uint8_t a = s[p + 1];
    if (ci) {
        if (a >= 'A' && a <= 'Z') a |= 0x20;
        if (a == 0xc5 && p + 2 < len && s[p + 2] == 0xbf) return 3;
    }
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (p + 2 >= len) return 0;
    uint8_t b = s[p + 2];
    if (ci && b >= 'A' && b <= 'Z') b |= 0x20;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

/* The white-space alternatives shared by all patterns, at a white-space
 * character i: with nl, \s*[\r\n]+ (up to the last \r or \n of the run);
 * then \s+(?!\S) (the run less its last character when a non-space follows
 * it and it has two or more); then \s+. */
static size_t match_space(const uint8_t *s, size_t len, size_t i, int nl) {
    size_t p = i, last = i, after_nl = 0;
    int chars = 0;
    for (;;) {
        uch u = at(s, len, p);
        if (!u.n || !(u.c & TOK_C_WS)) break;
        if (s[p] == '\r' || s[p] == '\n') after_nl = p + 1;
        last = p;
        p += u.n;
        chars++;
    }
    if (nl && after_nl) return after_nl;
    if (!at(s, len, p).n) return p;       /* end of text or an invalid byte: (?!\S) holds */
    return chars >= 2 ? last : p;
}

/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t match_gpt2(const uint8_t *s, size_t len, size_t i) {
    size_t k = contraction(s, len, i, 0);
    if (k) return i + k;
    uch u = at(s, len, i);
    size_t j = i;
    if (s[i] == ' ') {
        uch v = at(s, len, i + 1);
        if (v.n && (v.c & (TOK_C_L | TOK_C_N) || other(v))) { j = i + 1; u = v; }
    }
    if (u.c & TOK_C_L) return run(s, len, j, TOK_C_L);
    if (u.c & TOK_C_N) return run(s, len, j, TOK_C_N);
    if (other(u)) return run_other(s, len, j);
    return match_space(s, len, i, 0);
}

/* ' ?[^\s\p{L}\p{N}]+' followed by [\r\n]* (extra '/' too for o200k), or 0
 * when it does not match at i. */
static size_t match_punct(const uint8_t *s, size_t len, size_t i, int slash) {
    size_t j = i;
    if (s[i] == ' ' && other(at(s, len, i + 1))) j = i + 1;
    if (!other(at(s, len, j))) return 0;
    j = run_other(s, len, j);
    while (j < len && (s[j] == '\r' || s[j] == '\n' || (slash && s[j] == '/'))) j++;
    return j;
}

/* \p{N}{1,3} at a number i. */
static size_t match_digits(const uint8_t *s, size_t len, size_t i) {
    size_t p = i;
    for (int k = 0; k < 3; k++) {
        uch u = at(s, len, p);
        if (!(u.c & TOK_C_N)) break;
        p += u.n;
    }
    return p;
}

/* (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
 * | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+   (cl100k, Llama 3) */
static size_t match_cl100k(const uint8_t *s, size_t len, size_t i) {
    size_t k = contraction(s, len, i, 1);
    if (k) return i + k;
    uch u = at(s, len, i);
    if (u.c & TOK_C_L) return run(s, len, i, TOK_C_L);
    if (!(u.c & TOK_C_N) && !crlf(s, len, i) && (at(s, len, i + u.n).c & TOK_C_L))
        return run(s, len, i + u.n, TOK_C_L);
    if (u.c & TOK_C_N) return match_digits(s, len, i);
    size_t e = match_punct(s, len, i, 0);
    return e ? e : match_space(s, len, i, 1);
}

/* [^\r\n\p{L}\p{N}]? UP* LO+ C?  from st (the character before st, if any,
 * being the optional first one): UP* is greedy and gives back characters
 * until LO+ can match, so LO+ starts at the last LO character at or before
 * the end of the UP run. Returns the end, or 0. */
static size_t o200k_alt1(const uint8_t *s, size_t len, size_t st) {
    size_t p = st, lastlo = SIZE_MAX, lastn = 0;
    uch u;
    for (;;) {
        u = at(s, len, p);
        if (!u.n || !(u.c & TOK_C_UP)) break;
        if (u.c & TOK_C_LO) { lastlo = p; lastn = u.n; }
        p += u.n;
    }
    size_t w;
    if (u.n && (u.c & TOK_C_LO)) w = run(s, len, p, TOK_C_LO);
    else if (lastlo != SIZE_MAX) w = lastlo + lastn;
    else return 0;
    return w + contraction(s, len, w, 1);
}

/* [^\r\n\p{L}\p{N}]? UP+ LO* C?  from st, or 0. */
static size_t o200k_alt2(const uint8_t *s, size_t len, size_t st) {
    if (!(at(s, len, st).c & TOK_C_UP)) return 0;
    size_t w = run(s, len, run(s, len, st, TOK_C_UP), TOK_C_LO);
    return w + contraction(s, len, w, 1);
}

/* o200k: the two letter alternatives above, then \p{N}{1,3}
 * | ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t match_o200k(const uint8_t *s, size_t len, size_t i) {
    uch u = at(s, len, i);
    int pre = !(u.c & (TOK_C_L | TOK_C_N)) && !crlf(s, len, i);  /* [^\r\n\p{L}\p{N}] */
    size_t e;
    if (pre && (e = o200k_alt1(s, len, i + u.n))) return e;
    if ((e = o200k_alt1(s, len, i))) return e;
    if (pre && (e = o200k_alt2(s, len, i + u.n))) return e;
    if ((e = o200k_alt2(s, len, i))) return e;
    if (u.c & TOK_C_N) return match_digits(s, len, i);
    e = match_punct(s, len, i, 1);
    return e ? e : match_space(s, len, i, 1);
}

void moe_tok_iter_init(moe_tok_iter *it, moe_tok_pattern pat) {
    memset(it, 0, sizeof *it);
    it->pat = pat;
}

void moe_tok_iter_reset(moe_tok_iter *it, const char *s, size_t len) {
    it->s = (const uint8_t *)s;
    it->len = len;
    it->pos = 0;
}

int moe_tok_iter_next(moe_tok_iter *it, size_t *start, size_t *end) {
    size_t i = it->pos;
    if (i >= it->len) return 0;
    size_t e;
    if (!at(it->s, it->len, i).n) e = i + 1;  /* a byte of invalid UTF-8 */
    else if (it->pat == MOE_PAT_GPT2) e = match_gpt2(it->s, it->len, i);
    else if (it->pat == MOE_PAT_O200K) e = match_o200k(it->s, it->len, i);
    else e = match_cl100k(it->s, it->len, i);
    *start = i;
    *end = e;
    it->pos = e;
    return 1;
}

/* A cut at p is safe when text[p-2] is a printable ASCII character other than
 * space, text[p-1] is '\n' and text[p] is a printable ASCII character other
 * than space and '/': the chunk holding the '\n' ends at p both in the whole
 * and in the left piece (what precedes it is no white space, the lookahead
 * (?!\S) cannot extend it, and of the trailing [\r\n]* / [\r\n/]* of the
 * punctuation alternatives only o200k's '/' could continue past p), and no
 * match starts before p and ends after it. No pattern has a lookbehind, so
 * matching from p onward does not depend on what precedes p. */
static int graph(uint8_t c) { return c > 0x20 && c < 0x7f; }

size_t moe_pretok_safe_cut(const char *text, size_t len, size_t lo) {
    const uint8_t *s = (const uint8_t *)text;
    if (lo < 2) lo = 2;
    for (size_t p = lo; p < len; p++) {
        if (s[p - 1] != '\n') {
            const void *nl = memchr(s + p, '\n', len - p);
            if (!nl) return len;
            p = (size_t)((const uint8_t *)nl - s);  /* loop ++ puts p after the '\n' */
            continue;
        }
        if (graph(s[p - 2]) && graph(s[p]) && s[p] != '/') return p;
    }
    return len;
}
