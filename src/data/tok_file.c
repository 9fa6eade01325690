/* tok_file.c — tokenizers as files: our tokenizer file (docs/FORMAT.md,
 * "Tokenizer file"), read strictly with every error naming its line, and
 * written; tiktoken rank files (read); and, by way of tok_hf.c, a Hugging
 * Face tokenizer.json (read). */
#include "tok_internal.h"

#include <stdio.h>
#include <stdlib.h>

#include "moe/util/fileio.h"

/* ------------------------------------------------------------------ base64 */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64_encode(moe_buf *b, const uint8_t *p, size_t n) {
    char q[4];
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n) v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n) v |= p[i + 2];
        q[0] = B64[v >> 18 & 63];
        q[1] = B64[v >> 12 & 63];
        q[2] = i + 1 < n ? B64[v >> 6 & 63] : '=';
        q[3] = i + 2 < n ? B64[v & 63] : '=';
        if (moe_buf_append(b, q, 4)) return -1;
    }
    return 0;
}

static int b64_val(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Strict decoding (length a multiple of 4, padding only at the end, unused
 * bits zero) into out (capacity >= n/4*3). Returns the length or -1. */
static long b64_decode(const char *s, size_t n, uint8_t *out) {
    if (n == 0 || n % 4) return -1;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            if (s[i + k] == '=' && i + 4 == n && k >= 2) { v[k] = 0; pad++; continue; }
            if (pad) return -1;
            if ((v[k] = b64_val(s[i + k])) < 0) return -1;
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        if (pad == 2 && (w & 0xffff)) return -1;
        if (pad == 1 && (w & 0xff)) return -1;
        out[o++] = (uint8_t)(w >> 16);
        if (pad < 2) out[o++] = (uint8_t)(w >> 8);
        if (pad < 1) out[o++] = (uint8_t)w;
    }
    return (long)o;
}

/* ------------------------------------------------------------------ parser */

typedef struct lines {
    const char *what;
    const char *p, *end;
    size_t lineno;
    const char *s;   /* current line */
    size_t n;
} lines;

/* Next line into L->s / L->n; 0 at end of text; -1 (with message) when the
 * line is not terminated by '\n' or holds '\r'. */
static int next_line(lines *L, moe_err *err) {
    if (L->p >= L->end) return 0;
    const char *nl = memchr(L->p, '\n', (size_t)(L->end - L->p));
    L->lineno++;
    if (!nl) return moe_errf(err, "%s:%zu: expected the line to end with a newline, found end of file",
                             L->what, L->lineno);
    L->s = L->p;
    L->n = (size_t)(nl - L->p);
    L->p = nl + 1;
    if (L->n && L->s[L->n - 1] == '\r')
        return moe_errf(err, "%s:%zu: found a carriage return (the file must use '\\n' line ends)",
                        L->what, L->lineno);
    return 1;
}

/* A short, printable quote of a line for messages. */
static const char *quote(const char *s, size_t n, char *buf, size_t cap) {
    size_t o = 0;  /* invariant: o <= cap - 4, room for "..." and the NUL */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        size_t need = c >= 0x20 && c < 0x7f ? 1 : 4;
        if (o + need + 4 > cap) { memcpy(buf + o, "...", 3); o += 3; break; }
        if (need == 1) buf[o++] = (char)c;
        else o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
    }
    buf[o] = 0;
    return buf;
}

/* Strict decimal: digits only, no leading zero unless "0", <= max. */
static int parse_u32(const char *s, size_t n, uint32_t max, uint32_t *out) {
    if (n == 0 || n > 10 || (n > 1 && s[0] == '0')) return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > max) return -1;
    *out = (uint32_t)v;
    return 0;
}

/* Splits a line at single spaces into at most `max` fields; returns the count
 * or -1 when a field is empty (double / leading / trailing space). */
static int fields(const char *s, size_t n, const char **f, size_t *fl, int max) {
    int k = 0;
    size_t i = 0;
    for (;;) {
        size_t j = i;
        while (j < n && s[j] != ' ') j++;
        if (j == i || k == max) return -1;
        f[k] = s + i;
        fl[k] = j - i;
        k++;
        if (j == n) return k;
        i = j + 1;
    }
}

#define LINE_ERR(L, err, ...) do { \
    char h_q[96]; \
    moe_errf(err, "%s:%zu: expected %s, found '%s'", (L)->what, (L)->lineno, __VA_ARGS__, \
             quote((L)->s, (L)->n, h_q, sizeof h_q)); \
    goto fail; } while (0)

/* "<key> <u32>" */
static int key_u32(const lines *L, const char *key, uint32_t max, uint32_t *out) {
    const char *f[3];
    size_t fl[3];
    int k = fields(L->s, L->n, f, fl, 3);
    if (k != 2 || fl[0] != strlen(key) || memcmp(f[0], key, fl[0])) return -1;
    return parse_u32(f[1], fl[1], max, out);
}

/* Special token text: 1..64 printable ASCII characters other than space. */
static int special_text_ok(const char *s, size_t n) {
    if (n == 0 || n > 64) return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] <= 0x20 || s[i] >= 0x7f) return 0;
    return 1;
}

/* "specials K" then K lines "<id> <text>", ids ascending in [tokens,
 * vocab_size), texts distinct; eot must be one of them. Then end of file. */
static int parse_specials(lines *L, moe_tokenizer *t, uint32_t vocab, uint32_t eot, moe_err *err) {
    const char *f[3];
    size_t fl[3];
    char ex[160];
    uint32_t k, has_eot = 0;
    int rc;
    snprintf(ex, sizeof ex, "'specials <count>' with a count in [1, %u]", vocab - t->n_tokens);
    if (key_u32(L, "specials", vocab - t->n_tokens, &k) || k == 0) LINE_ERR(L, err, ex);
    for (uint32_t i = 0; i < k; i++) {
        if ((rc = next_line(L, err)) <= 0) {
            if (rc == 0) moe_errf(err, "%s:%zu: expected special token %u of %u, found end of file",
                                  L->what, L->lineno + 1, i, k);
            return -1;
        }
        uint32_t id, lo = i ? t->special_id[i - 1] + 1 : t->n_tokens;
        snprintf(ex, sizeof ex, "'<id> <text>' with an id in [%u, %u) (ascending) and a text of 1-64 "
                 "printable ASCII characters", lo, vocab);
        if (fields(L->s, L->n, f, fl, 3) != 2 || parse_u32(f[0], fl[0], vocab - 1, &id) || id < lo ||
            !special_text_ok(f[1], fl[1]))
            LINE_ERR(L, err, ex);
        char text[65];
        memcpy(text, f[1], fl[1]);
        text[fl[1]] = 0;
        for (uint32_t j = 0; j < i; j++)
            if (!strcmp(t->special_text[j], text)) LINE_ERR(L, err, "a text no other special token has");
        if (moe_tok_add_special(t, id, text, err)) return -1;
        has_eot |= id == eot;
    }
    if ((rc = next_line(L, err)) != 0) {
        if (rc > 0) LINE_ERR(L, err, "end of file after the last special token");
        return -1;
    }
    if (!has_eot) return moe_errf(err, "%s: eot %u is none of the special tokens", L->what, eot);
    t->vocab_size = vocab;
    t->eot = eot;
    return 0;
fail:
    return -1;
}

static int parse_moe(const char *text, size_t len, const char *what, moe_tokenizer **out,
                     moe_err *err) {
    lines L = {what, text, text + len, 0, NULL, 0};
    moe_tokenizer *t = NULL;
    uint8_t *tokbuf = NULL;
    moe_buf bytes = {0};
    int rc;
    const char *f[5];
    size_t fl[5];
    char ex[160];

    if ((rc = next_line(&L, err)) <= 0) {
        if (rc == 0) moe_errf(err, "%s: empty file", what);
        return -1;
    }
    int k = fields(L.s, L.n, f, fl, 5);
    if (k != 4 || fl[0] != 13 || memcmp(f[0], "moe-tokenizer", 13))
        LINE_ERR(&L, err, "'moe-tokenizer 1 <bytes|bpe|ranks> <vocab_size>'");
    uint32_t version, vocab;
    if (parse_u32(f[1], fl[1], UINT32_MAX, &version) || version != 1)
        LINE_ERR(&L, err, "format version 1 (the only one this build reads)");
    moe_tok_kind kind;
    if (fl[2] == 5 && !memcmp(f[2], "bytes", 5)) kind = MOE_TOK_BYTES;
    else if (fl[2] == 3 && !memcmp(f[2], "bpe", 3)) kind = MOE_TOK_BPE;
    else if (fl[2] == 5 && !memcmp(f[2], "ranks", 5)) kind = MOE_TOK_RANKS;
    else LINE_ERR(&L, err, "kind 'bytes', 'bpe' or 'ranks'");
    uint32_t vmin = 257;
    uint32_t vmax = kind == MOE_TOK_BYTES ? 257 : 0x7fffffffu;
    if (parse_u32(f[3], fl[3], UINT32_MAX, &vocab) || vocab < vmin || vocab > vmax) {
        snprintf(ex, sizeof ex, "a vocab_size in [%u, %u] for kind %.*s", vmin, vmax,
                 (int)fl[2], f[2]);
        LINE_ERR(&L, err, ex);
    }

    if ((rc = next_line(&L, err)) <= 0) goto eof;
    moe_tok_pattern pat = MOE_PAT_GPT2;
    if (kind == MOE_TOK_RANKS) {
        if (L.n < 8 || memcmp(L.s, "pattern ", 8) || moe_tok_pattern_parse(L.s + 8, L.n - 8, &pat) ||
            pat == MOE_PAT_NONE || memcmp(L.s + 8, moe_tok_pattern_name(pat), L.n - 8))
            LINE_ERR(&L, err, "'pattern <gpt2|cl100k|o200k|llama3>'");
    } else {
        const char *pname = kind == MOE_TOK_BYTES ? "none" : "gpt2";
        snprintf(ex, sizeof ex, "'pattern %s'", pname);
        if (L.n != 8 + strlen(pname) || memcmp(L.s, "pattern ", 8) || memcmp(L.s + 8, pname, strlen(pname)))
            LINE_ERR(&L, err, ex);
    }

    /* ranks may name their special tokens in a last section; without it
     * <|endoftext|> is the last id, as for bytes and bpe */
    if ((rc = next_line(&L, err)) <= 0) goto eof;
    uint32_t eot;
    if (kind == MOE_TOK_RANKS) {
        snprintf(ex, sizeof ex, "'eot <id>' with an id < vocab_size %u", vocab);
        if (key_u32(&L, "eot", vocab - 1, &eot)) LINE_ERR(&L, err, ex);
    } else {
        snprintf(ex, sizeof ex, "'eot %u' (<|endoftext|> is the last id)", vocab - 1);
        if (key_u32(&L, "eot", UINT32_MAX, &eot) || eot != vocab - 1) LINE_ERR(&L, err, ex);
    }

    if ((rc = next_line(&L, err)) <= 0) goto eof;
    const char *sect = kind == MOE_TOK_RANKS ? "tokens" : "merges";
    uint32_t count, want = kind == MOE_TOK_RANKS ? vocab - 1 : vocab - 257;
    if (kind == MOE_TOK_RANKS) {
        snprintf(ex, sizeof ex, "'tokens <count>' with a count in [256, %u] (from vocab_size %u)", vocab - 1, vocab);
        if (key_u32(&L, sect, vocab - 1, &count) || count < 256) LINE_ERR(&L, err, ex);
    } else {
        snprintf(ex, sizeof ex, "'%s %u' (from vocab_size %u)", sect, want, vocab);
        if (key_u32(&L, sect, UINT32_MAX, &count) || count != want) LINE_ERR(&L, err, ex);
    }

    if (kind == MOE_TOK_BYTES) {
        if ((rc = next_line(&L, err)) != 0) {
            if (rc > 0) LINE_ERR(&L, err, "end of file");
            return -1;
        }
        *out = moe_tokenizer_bytes(err);
        return *out ? 0 : -1;
    }

    if (kind == MOE_TOK_BPE) {
        uint32_t *ma = moe_malloc((size_t)(count ? count : 1) * sizeof *ma, err);
        uint32_t *mb = moe_malloc((size_t)(count ? count : 1) * sizeof *mb, err);
        moe_tok_pairmap seen = {0};
        if (!ma || !mb) { free(ma); free(mb); return -1; }
        for (uint32_t i = 0; i < count; i++) {
            if ((rc = next_line(&L, err)) <= 0) {
                free(ma); free(mb); moe_tok_pair_free(&seen);
                if (rc == 0) moe_errf(err, "%s:%zu: expected merge %u of %u, found end of file",
                                      what, L.lineno + 1, i, count);
                return -1;
            }
            int nf = fields(L.s, L.n, f, fl, 3);
            if (nf != 2 || parse_u32(f[0], fl[0], 255 + i, &ma[i]) ||
                parse_u32(f[1], fl[1], 255 + i, &mb[i])) {
                free(ma); free(mb); moe_tok_pair_free(&seen);
                snprintf(ex, sizeof ex, "a merge '<left id> <right id>' with ids < %u "
                         "(merge %u creates id %u)", 256 + i, i, 256 + i);
                LINE_ERR(&L, err, ex);
            }
            int put = moe_tok_pair_put(&seen, ma[i], mb[i], i, 0);
            if (put <= 0) {
                uint32_t r = 0, id;
                tok_pair_get(&seen, ma[i], mb[i], &r, &id);
                free(ma); free(mb); moe_tok_pair_free(&seen);
                if (put < 0) return moe_errf(err, "%s: out of memory", what);
                snprintf(ex, sizeof ex, "a new merge (this one repeats merge %u on line %u)",
                         r, r + 5);
                LINE_ERR(&L, err, ex);
            }
        }
        moe_tok_pair_free(&seen);
        if ((rc = next_line(&L, err)) != 0) {
            free(ma); free(mb);
            if (rc > 0) LINE_ERR(&L, err, "end of file after the last merge");
            return -1;
        }
        rc = moe_tokenizer_from_merges(ma, mb, count, out, err);
        free(ma); free(mb);
        if (rc) return moe_err_prefix(err, "%s", what);
        return 0;
    }

    /* ranks: one base64 token per line, line i is id i */
    t = moe_tok_alloc(MOE_TOK_RANKS, err);
    if (!t) return -1;
    t->n_tokens = count;
    t->tok_off = moe_malloc(((size_t)count + 1) * sizeof *t->tok_off, err);
    tokbuf = moe_malloc(L.end - L.p + 1, err);
    if (!t->tok_off || !tokbuf) goto fail;
    for (uint32_t i = 0; i < count; i++) {
        if ((rc = next_line(&L, err)) <= 0) {
            if (rc == 0) moe_errf(err, "%s:%zu: expected token %u of %u, found end of file",
                                  what, L.lineno + 1, i, count);
            goto fail;
        }
        long n = b64_decode(L.s, L.n, tokbuf);
        if (n <= 0) LINE_ERR(&L, err, "a token's bytes in base64 (one token per line)");
        t->tok_off[i] = (uint32_t)bytes.len;
        if (moe_buf_append(&bytes, tokbuf, (size_t)n)) { moe_errf(err, "%s: out of memory", what); goto fail; }
    }
    t->tok_off[count] = (uint32_t)bytes.len;
    t->tok_bytes = (uint8_t *)bytes.data;
    if (!t->tok_bytes) t->tok_bytes = malloc(1);
    free(tokbuf);
    tokbuf = NULL;
    t->pat = pat;
    if ((rc = next_line(&L, err)) < 0) goto fail;
    if (rc == 0) {
        if (count != vocab - 1 || eot != vocab - 1) {
            moe_errf(err, "%s:%zu: expected a 'specials <count>' section (tokens %u and eot %u differ "
                     "from vocab_size - 1 = %u), found end of file", what, L.lineno + 1, count, eot, vocab - 1);
            goto fail;
        }
    } else if (parse_specials(&L, t, vocab, eot, err)) {
        goto fail;
    }
    if (moe_tok_finish_build(t, err)) { moe_err_prefix(err, "%s", what); goto fail; }
    *out = t;
    return 0;
eof:
    if (rc == 0) moe_errf(err, "%s:%zu: unexpected end of file in the header", what, L.lineno + 1);
    return -1;
fail:
    free(tokbuf);
    if (t && !t->tok_bytes) free(bytes.data);
    moe_tokenizer_free(t);
    return -1;
}

/* tiktoken: lines "base64 rank", ranks 0, 1, 2, ... in order. */
static int parse_tiktoken(const char *text, size_t len, const char *what, moe_tokenizer **out,
                          moe_err *err) {
    lines L = {what, text, text + len, 0, NULL, 0};
    moe_tokenizer *t = moe_tok_alloc(MOE_TOK_RANKS, err);
    moe_buf bytes = {0};
    uint32_t *off = NULL;
    size_t n = 0, cap = 0;
    uint8_t *tokbuf = moe_malloc(len + 1, err);
    const char *f[3];
    size_t fl[3];
    char ex[128];
    int rc;
    if (!t || !tokbuf) goto fail;
    while ((rc = next_line(&L, err)) > 0) {
        if (fields(L.s, L.n, f, fl, 3) != 2)
            LINE_ERR(&L, err, "'<base64 token> <rank>' (tiktoken format)");
        long nb = b64_decode(f[0], fl[0], tokbuf);
        if (nb <= 0) LINE_ERR(&L, err, "a non-empty base64 token before the rank");
        uint32_t r;
        snprintf(ex, sizeof ex, "rank %zu (ranks must be 0, 1, 2, ... in order)", n);
        if (parse_u32(f[1], fl[1], UINT32_MAX - 1, &r) || r != n) LINE_ERR(&L, err, ex);
        if (n + 1 >= cap) {
            cap = cap ? cap * 2 : 65536;
            uint32_t *no = realloc(off, cap * sizeof *off);
            if (!no) { moe_errf(err, "%s: out of memory", what); goto fail; }
            off = no;
        }
        off[n++] = (uint32_t)bytes.len;
        if (moe_buf_append(&bytes, tokbuf, (size_t)nb)) { moe_errf(err, "%s: out of memory", what); goto fail; }
    }
    if (rc < 0) goto fail;
    if (n < 256) {
        moe_errf(err, "%s: expected at least 256 tokens (one per byte), found %zu", what, n);
        goto fail;
    }
    off[n] = (uint32_t)bytes.len;
    t->n_tokens = (uint32_t)n;
    t->tok_off = off;
    t->tok_bytes = (uint8_t *)bytes.data;
    off = NULL;
    free(tokbuf);
    tokbuf = NULL;
    if (moe_tok_finish_build(t, err)) { moe_err_prefix(err, "%s", what); moe_tokenizer_free(t); return -1; }
    *out = t;
    return 0;
fail:
    free(tokbuf);
    free(off);
    free(bytes.data);
    moe_tokenizer_free(t);
    return -1;
}

int moe_tokenizer_parse(const char *text, size_t len, const char *what,
                        moe_tokenizer **out, moe_err *err) {
    *out = NULL;
    if (len >= 14 && !memcmp(text, "moe-tokenizer ", 14)) return parse_moe(text, len, what, out, err);
    if (len == 0) return moe_errf(err, "%s: empty file (expected a tokenizer file or a tiktoken rank file)", what);
    return parse_tiktoken(text, len, what, out, err);
}

int moe_tokenizer_load(const char *path, moe_tokenizer **out, moe_err *err) {
    *out = NULL;
    if (!strcmp(path, "bytes")) {
        *out = moe_tokenizer_bytes(err);
        return *out ? 0 : -1;
    }
    size_t len;
    char *text = moe_read_file(path, &len, err);
    if (!text) return -1;
    size_t k = 0;
    while (k < len && (text[k] == ' ' || text[k] == '\n' || text[k] == '\r' || text[k] == '\t')) k++;
    if (k < len && text[k] == '{') {  /* JSON: a Hugging Face tokenizer.json (moe export --format hf) */
        free(text);
        char why[512] = "";
        if (moe_tokenizer_from_hf_json(path, out, why, sizeof why, err)) return -1;
        return *out ? 0 : moe_errf(err, "%s: a tokenizer.json that moe cannot read: %s", path, why);
    }
    int rc = moe_tokenizer_parse(text, len, path, out, err);
    free(text);
    return rc;
}

int moe_tokenizer_serialize(const moe_tokenizer *t, moe_buf *b, moe_err *err) {
    static const char *kinds[] = {"bytes", "bpe", "ranks"};
    int bad = moe_buf_printf(b, "moe-tokenizer 1 %s %u\npattern %s\neot %u\n", kinds[t->kind],
                             t->vocab_size, moe_tok_pattern_name(t->pat), t->eot);
    if (t->kind == MOE_TOK_RANKS) {
        bad |= moe_buf_printf(b, "tokens %u\n", t->n_tokens);
        for (uint32_t i = 0; i < t->n_tokens && !bad; i++) {
            size_t n;
            const uint8_t *p = tok_at(t, i, &n);
            bad |= b64_encode(b, p, n);
            bad |= moe_buf_append(b, "\n", 1);
        }
        int dflt = t->n_special == 1 && t->special_id[0] == t->n_tokens && t->vocab_size == t->n_tokens + 1 &&
                   !strcmp(t->special_text[0], MOE_EOT_TEXT);
        if (!dflt) {
            bad |= moe_buf_printf(b, "specials %u\n", t->n_special);
            for (uint32_t i = 0; i < t->n_special && !bad; i++)
                bad |= moe_buf_printf(b, "%u %s\n", t->special_id[i], t->special_text[i]);
        }
    } else {
        uint32_t m = t->n_tokens - 256;
        bad |= moe_buf_printf(b, "merges %u\n", m);
        for (uint32_t i = 0; i < m && !bad; i++)
            bad |= moe_buf_printf(b, "%u %u\n", t->merge_a[i], t->merge_b[i]);
    }
    return bad ? moe_errf(err, "tokenizer: out of memory writing the file text") : 0;
}

int moe_tokenizer_save(const moe_tokenizer *t, const char *path, moe_err *err) {
    moe_buf b = {0};
    if (moe_tokenizer_serialize(t, &b, err)) { moe_buf_free(&b); return -1; }
    int rc = moe_write_file_atomic(path, b.data, b.len, err);
    moe_buf_free(&b);
    return rc;
}
