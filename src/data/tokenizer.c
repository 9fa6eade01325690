/* tokenizer.c — the tokenizer object: building its tables, the known rank
 * tables and their special tokens, the tokenizer file format and tiktoken
 * rank files (load / save, strict validation), encoding
 * (byte-pair merges by rank with a per-encoder chunk cache, OpenMP over
 * pieces of large inputs) and decoding. */
#include "tok_internal.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "moe/fileio.h"
#include "moe/interop.h"

/* ---------------------------------------------------------------- pair map */

int tok_pair_put(tok_pairmap *m, uint32_t a, uint32_t b, uint32_t rank, uint32_t id) {
    if ((m->used + 1) * 2 > m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 1024;
        uint64_t *nk = malloc(ncap * sizeof *nk);
        uint32_t *nr = malloc(ncap * sizeof *nr), *ni = malloc(ncap * sizeof *ni);
        if (!nk || !nr || !ni) { free(nk); free(nr); free(ni); return -1; }
        for (size_t i = 0; i < ncap; i++) nk[i] = TOK_EMPTY;
        for (size_t i = 0; i < m->cap; i++) {
            if (m->keys[i] == TOK_EMPTY) continue;
            size_t j = tok_hash_u64(m->keys[i]) & (ncap - 1);
            while (nk[j] != TOK_EMPTY) j = (j + 1) & (ncap - 1);
            nk[j] = m->keys[i];
            nr[j] = m->rank[i];
            ni[j] = m->id[i];
        }
        free(m->keys); free(m->rank); free(m->id);
        m->keys = nk; m->rank = nr; m->id = ni; m->cap = ncap;
    }
    uint64_t key = (uint64_t)a << 32 | b;
    size_t mask = m->cap - 1, i = tok_hash_u64(key) & mask;
    while (m->keys[i] != TOK_EMPTY) {
        if (m->keys[i] == key) return 0;
        i = (i + 1) & mask;
    }
    m->keys[i] = key;
    m->rank[i] = rank;
    m->id[i] = id;
    m->used++;
    return 1;
}

void tok_pair_free(tok_pairmap *m) {
    free(m->keys); free(m->rank); free(m->id);
    memset(m, 0, sizeof *m);
}

/* ------------------------------------------------------ token bytes -> id */

static const uint8_t *tok_at(const moe_tokenizer *t, uint32_t id, size_t *len) {
    *len = t->tok_off[id + 1] - t->tok_off[id];
    return t->tok_bytes + t->tok_off[id];
}

/* id of the token whose bytes are p[n], or TOK_NONE (RANKS only). */
static uint32_t bytes_get(const moe_tokenizer *t, const uint8_t *p, size_t n) {
    size_t mask = t->bycap - 1, i = tok_hash(p, n) & mask;
    for (;;) {
        uint32_t v = t->byslot[i];
        if (!v) return TOK_NONE;
        size_t l;
        const uint8_t *q = tok_at(t, v - 1, &l);
        if (l == n && !memcmp(p, q, n)) return v - 1;
        i = (i + 1) & mask;
    }
}

/* Fills byslot; returns the id of an earlier duplicate of a token or TOK_NONE
 * in *dup_a / *dup_b, -1 on OOM. */
static int bytes_build(moe_tokenizer *t, uint32_t *dup_a, uint32_t *dup_b, moe_err *err) {
    size_t cap = 1024;
    while (cap < (size_t)t->n_tokens * 2) cap *= 2;
    t->byslot = moe_calloc(cap, sizeof *t->byslot, err);
    if (!t->byslot) return -1;
    t->bycap = cap;
    *dup_a = *dup_b = TOK_NONE;
    for (uint32_t id = 0; id < t->n_tokens; id++) {
        size_t n;
        const uint8_t *p = tok_at(t, id, &n);
        size_t i = tok_hash(p, n) & (cap - 1);
        for (;;) {
            uint32_t v = t->byslot[i];
            if (!v) { t->byslot[i] = id + 1; break; }
            size_t l;
            const uint8_t *q = tok_at(t, v - 1, &l);
            if (l == n && !memcmp(p, q, n)) {
                if (*dup_a == TOK_NONE) { *dup_a = v - 1; *dup_b = id; }
                break;
            }
            i = (i + 1) & (cap - 1);
        }
    }
    return 0;
}

/* Adds special token (id, text); ids must come in ascending order. */
static int add_special(moe_tokenizer *t, uint32_t id, const char *text, moe_err *err) {
    uint32_t *ni = realloc(t->special_id, (t->n_special + 1) * sizeof *ni);
    if (ni) t->special_id = ni;
    char **nt = ni ? realloc(t->special_text, (t->n_special + 1) * sizeof *nt) : NULL;
    if (nt) t->special_text = nt;
    char *copy = nt ? strdup(text) : NULL;
    if (!copy) return moe_errf(err, "tokenizer: out of memory adding special tokens");
    t->special_id[t->n_special] = id;
    t->special_text[t->n_special++] = copy;
    if (t->n_special == 1) { t->special_first = (uint8_t)copy[0]; t->special_one_first = 1; }
    else if ((uint8_t)copy[0] != t->special_first) t->special_one_first = 0;
    return 0;
}

/* The rank tables that tiktoken ships, recognised by the hash of their
 * tokens (tok_table_hash), each with its split pattern and special tokens
 * (ids as tiktoken and Meta give them). Llama 3's file carries no special
 * tokens: its 256 are <|begin_of_text|> 128000, <|end_of_text|> 128001
 * (our eot), <|start_header_id|> 128006, <|end_header_id|> 128007,
 * <|eot_id|> 128009 and <|reserved_special_token_N|> for the rest. */
typedef struct known_special { uint32_t id; const char *text; } known_special;
static const known_special R50K_SP[] = {{50256, "<|endoftext|>"}};
static const known_special CL100K_SP[] = {{100257, "<|endoftext|>"}, {100258, "<|fim_prefix|>"},
    {100259, "<|fim_middle|>"}, {100260, "<|fim_suffix|>"}, {100276, "<|endofprompt|>"}};
static const known_special O200K_SP[] = {{199999, "<|endoftext|>"}, {200018, "<|endofprompt|>"}};
static const known_special LLAMA3_SP[] = {{128000, "<|begin_of_text|>"}, {128001, "<|end_of_text|>"},
    {128006, "<|start_header_id|>"}, {128007, "<|end_header_id|>"}, {128009, "<|eot_id|>"}};
static const struct known_vocab {
    const char *name;
    uint32_t n_tokens;
    uint64_t hash;
    moe_tok_pattern pat;
    uint32_t vocab_size, eot;
    const known_special *sp;
    uint32_t n_sp;
    int llama_reserved;   /* fill the other ids below vocab_size with reserved tokens */
} KNOWN[] = {
    {"r50k_base", 50256, 0xf4e43d3a9ab9bc0bull, MOE_PAT_GPT2, 50257, 50256, R50K_SP, 1, 0},
    {"cl100k_base", 100256, 0x56c627e49e38b04cull, MOE_PAT_CL100K, 100277, 100257, CL100K_SP, 5, 0},
    {"o200k_base", 199998, 0x4a541240bd046da7ull, MOE_PAT_O200K, 200019, 199999, O200K_SP, 2, 0},
    {"llama3", 128000, 0x801c3099a417d544ull, MOE_PAT_LLAMA3, 128256, 128001, LLAMA3_SP, 5, 1},
};

uint64_t tok_table_hash(const moe_tokenizer *t) {
    uint64_t h = tok_hash(t->tok_bytes, t->tok_off[t->n_tokens]);
    return h ^ tok_hash_u64(tok_hash((const uint8_t *)t->tok_off, ((size_t)t->n_tokens + 1) * sizeof *t->tok_off));
}

static const struct known_vocab *known_vocab(const moe_tokenizer *t) {
    if (t->kind != MOE_TOK_RANKS) return NULL;
    uint64_t h = 0;
    for (size_t k = 0; k < sizeof KNOWN / sizeof *KNOWN; k++) {
        if (KNOWN[k].n_tokens != t->n_tokens) continue;
        if (!h) h = tok_table_hash(t);
        if (KNOWN[k].hash == h) return &KNOWN[k];
    }
    return NULL;
}

/* A tiktoken rank file's pattern and special tokens: those of the known
 * table it is, else the GPT-2 pattern and <|endoftext|> after the ranks. */
static int set_known_specials(moe_tokenizer *t, const struct known_vocab *kv, moe_err *err) {
    t->pat = kv->pat;
    t->vocab_size = kv->vocab_size;
    t->eot = kv->eot;
    uint32_t next = 0;
    for (uint32_t id = t->n_tokens; id < kv->vocab_size; id++) {
        const char *text = NULL;
        char buf[64];
        if (next < kv->n_sp && kv->sp[next].id == id) text = kv->sp[next++].text;
        else if (kv->llama_reserved) {
            /* reserved 0-3 are 128002-128005, 4 is 128008, 5.. from 128010 */
            uint32_t r = id < 128006 ? id - 128002 : id == 128008 ? 4 : id - 128005;
            snprintf(buf, sizeof buf, "<|reserved_special_token_%u|>", r);
            text = buf;
        }
        if (text && add_special(t, id, text, err)) return -1;
    }
    return 0;
}

/* Without special tokens: <|endoftext|> right after the ordinary tokens. */
static int tok_default_special(moe_tokenizer *t, moe_err *err) {
    if (t->n_special) return 0;
    t->vocab_size = t->n_tokens + 1;
    t->eot = t->n_tokens;
    return add_special(t, t->eot, MOE_EOT_TEXT, err);
}

/* t->pat NONE for BPE or RANKS means: from the table (a known rank table's
 * pattern and special tokens), else GPT-2 with <|endoftext|> as the id after
 * the ordinary tokens. */
int tok_finish_build(moe_tokenizer *t, moe_err *err) {
    if (t->kind == MOE_TOK_BYTES) {
        for (int b = 0; b < 256; b++) t->byte_id[b] = (uint32_t)b;
        t->pat = MOE_PAT_NONE;
        return tok_default_special(t, err);
    }
    if (t->kind == MOE_TOK_BPE) {
        for (int b = 0; b < 256; b++) t->byte_id[b] = (uint32_t)b;
        for (uint32_t i = 0; i + 256 < t->n_tokens; i++) {
            int rc = tok_pair_put(&t->pairs, t->merge_a[i], t->merge_b[i], i, 256 + i);
            if (rc < 0) return moe_errf(err, "tokenizer: out of memory building the merge table");
        }
    } else {
        uint32_t da, db;
        if (bytes_build(t, &da, &db, err)) return -1;
        if (da != TOK_NONE)
            return moe_errf(err, "ranks %u and %u have the same token bytes", da, db);
        for (int b = 0; b < 256; b++) {
            uint8_t c = (uint8_t)b;
            t->byte_id[b] = bytes_get(t, &c, 1);
            if (t->byte_id[b] == TOK_NONE)
                return moe_errf(err, "the single byte 0x%02x has no token (every byte needs one)", b);
        }
        for (uint32_t id = 0; id < t->n_tokens; id++) {
            size_t n;
            const uint8_t *p = tok_at(t, id, &n);
            for (size_t k = 1; k < n; k++) {
                uint32_t l = bytes_get(t, p, k), r;
                if (l == TOK_NONE || (r = bytes_get(t, p + k, n - k)) == TOK_NONE) continue;
                if (tok_pair_put(&t->pairs, l, r, id, id) < 0)
                    return moe_errf(err, "tokenizer: out of memory building the pair table");
            }
        }
        const struct known_vocab *kv = known_vocab(t);
        t->vocab_name = kv ? kv->name : NULL;
        if (kv && t->pat == MOE_PAT_NONE && !t->n_special && set_known_specials(t, kv, err)) return -1;
    }
    if (t->pat == MOE_PAT_NONE) t->pat = MOE_PAT_GPT2;
    return tok_default_special(t, err);
}

static moe_tokenizer *tok_alloc(moe_tok_kind kind, moe_err *err) {
    moe_tokenizer *t = moe_calloc(1, sizeof *t, err);
    if (t) t->kind = kind;
    return t;
}

void moe_tokenizer_free(moe_tokenizer *t) {
    if (!t) return;
    free(t->tok_off);
    free(t->tok_bytes);
    free(t->merge_a);
    free(t->merge_b);
    tok_pair_free(&t->pairs);
    free(t->byslot);
    for (uint32_t i = 0; i < t->n_special; i++) free(t->special_text[i]);
    free(t->special_text);
    free(t->special_id);
    free(t);
}

moe_tokenizer *moe_tokenizer_bytes(moe_err *err) {
    moe_tokenizer *t = tok_alloc(MOE_TOK_BYTES, err);
    if (!t) return NULL;
    t->n_tokens = 256;
    t->tok_off = moe_malloc(257 * sizeof *t->tok_off, err);
    t->tok_bytes = moe_malloc(256, err);
    if (!t->tok_off || !t->tok_bytes) { moe_tokenizer_free(t); return NULL; }
    for (uint32_t i = 0; i < 256; i++) { t->tok_off[i] = i; t->tok_bytes[i] = (uint8_t)i; }
    t->tok_off[256] = 256;
    if (tok_finish_build(t, err)) { moe_tokenizer_free(t); return NULL; }
    return t;
}

/* Token bytes of a BPE from its merges. */
static int bpe_token_bytes(moe_tokenizer *t, moe_err *err) {
    size_t total;
    t->tok_off = moe_malloc(((size_t)t->n_tokens + 1) * sizeof *t->tok_off, err);
    if (!t->tok_off) return -1;
    /* lengths first */
    size_t *len = moe_malloc((size_t)t->n_tokens * sizeof *len, err);
    if (!len) return -1;
    total = 0;
    for (uint32_t i = 0; i < t->n_tokens; i++) {
        len[i] = i < 256 ? 1 : len[t->merge_a[i - 256]] + len[t->merge_b[i - 256]];
        total += len[i];
    }
    if (total > UINT32_MAX) { free(len); return moe_errf(err, "tokenizer: tokens too long"); }
    t->tok_bytes = moe_malloc(total, err);
    if (!t->tok_bytes) { free(len); return -1; }
    uint32_t off = 0;
    for (uint32_t i = 0; i < t->n_tokens; i++) {
        t->tok_off[i] = off;
        if (i < 256) {
            t->tok_bytes[off] = (uint8_t)i;
        } else {
            size_t la;
            size_t lb;
            const uint8_t *pa = tok_at(t, t->merge_a[i - 256], &la);
            memcpy(t->tok_bytes + off, pa, la);
            const uint8_t *pb = t->tok_bytes + t->tok_off[t->merge_b[i - 256]];
            lb = len[t->merge_b[i - 256]];
            memcpy(t->tok_bytes + off + la, pb, lb);
        }
        off += (uint32_t)len[i];
        t->tok_off[i + 1] = off;
    }
    free(len);
    return 0;
}

int moe_tokenizer_from_merges(const uint32_t *a, const uint32_t *b, size_t n_merges,
                              moe_tokenizer **out, moe_err *err) {
    *out = NULL;
    if (n_merges > UINT32_MAX - 512) return moe_errf(err, "tokenizer: too many merges");
    moe_tokenizer *t = tok_alloc(MOE_TOK_BPE, err);
    if (!t) return -1;
    t->n_tokens = 256 + (uint32_t)n_merges;
    t->merge_a = moe_malloc((n_merges ? n_merges : 1) * sizeof *t->merge_a, err);
    t->merge_b = moe_malloc((n_merges ? n_merges : 1) * sizeof *t->merge_b, err);
    if (!t->merge_a || !t->merge_b) goto fail;
    for (size_t i = 0; i < n_merges; i++) {
        if (a[i] >= 256 + i || b[i] >= 256 + i) {
            moe_errf(err, "merge %zu (%u %u) refers to an id not yet defined (ids so far < %zu)",
                     i, a[i], b[i], 256 + i);
            goto fail;
        }
        t->merge_a[i] = a[i];
        t->merge_b[i] = b[i];
    }
    if (bpe_token_bytes(t, err)) goto fail;
    if (tok_finish_build(t, err)) goto fail;
    if (t->pairs.used != n_merges) {
        /* find the repeat for the message */
        for (size_t i = 0; i < n_merges; i++) {
            uint32_t r, id;
            if (tok_pair_get(&t->pairs, a[i], b[i], &r, &id) && r != i) {
                moe_errf(err, "merge %zu (%u %u) repeats merge %u", i, a[i], b[i], r);
                goto fail;
            }
        }
        moe_errf(err, "tokenizer: merges repeat");
        goto fail;
    }
    *out = t;
    return 0;
fail:
    moe_tokenizer_free(t);
    return -1;
}

moe_tok_kind moe_tokenizer_kind(const moe_tokenizer *t) { return t->kind; }
uint32_t moe_tokenizer_vocab_size(const moe_tokenizer *t) { return t->vocab_size; }
uint32_t moe_tokenizer_eot(const moe_tokenizer *t) { return t->eot; }
moe_tok_pattern moe_tokenizer_pattern(const moe_tokenizer *t) { return t->pat; }

int moe_tokenizer_set_pattern(moe_tokenizer *t, moe_tok_pattern p, moe_err *err) {
    if (t->kind != MOE_TOK_RANKS || p == MOE_PAT_NONE || !moe_tok_pattern_name(p))
        return moe_errf(err, "tokenizer: only a rank table takes another pattern (this is %s; BPE trained "
                        "here splits with gpt2)", t->kind == MOE_TOK_BPE ? "a BPE" : "the bytes tokenizer");
    t->pat = p;
    return 0;
}
const char *moe_tokenizer_vocab_name(const moe_tokenizer *t) { return t->vocab_name; }
uint32_t moe_tokenizer_n_special(const moe_tokenizer *t) { return t->n_special; }

const char *moe_tokenizer_special(const moe_tokenizer *t, uint32_t i, uint32_t *id) {
    if (i >= t->n_special) return NULL;
    if (id) *id = t->special_id[i];
    return t->special_text[i];
}

static const char *PAT_NAMES[] = {"none", "gpt2", "cl100k", "o200k", "llama3"};

const char *moe_tok_pattern_name(moe_tok_pattern p) {
    return (unsigned)p < sizeof PAT_NAMES / sizeof *PAT_NAMES ? PAT_NAMES[p] : NULL;
}

int moe_tok_pattern_parse(const char *name, size_t len, moe_tok_pattern *out) {
    for (unsigned p = 0; p < sizeof PAT_NAMES / sizeof *PAT_NAMES; p++)
        if (strlen(PAT_NAMES[p]) == len && !memcmp(PAT_NAMES[p], name, len)) {
            *out = (moe_tok_pattern)p;
            return 0;
        }
    if ((len == 4 && !memcmp(name, "r50k", 4)) || (len == 4 && !memcmp(name, "p50k", 4))) {
        *out = MOE_PAT_GPT2;
        return 0;
    }
    return -1;
}

const char *moe_tok_pattern_regex(moe_tok_pattern p) {
    switch (p) {
    case MOE_PAT_GPT2: return MOE_PAT_GPT2_RE;
    case MOE_PAT_CL100K: case MOE_PAT_LLAMA3: return MOE_PAT_CL100K_RE;
    case MOE_PAT_O200K: return MOE_PAT_O200K_RE;
    default: return NULL;
    }
}

long moe_tokenizer_special_index(const moe_tokenizer *t, uint32_t id) {
    size_t lo = 0, hi = t->n_special;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (t->special_id[mid] < id) lo = mid + 1;
        else hi = mid;
    }
    return lo < t->n_special && t->special_id[lo] == id ? (long)lo : -1;
}

const uint8_t *moe_tokenizer_token(const moe_tokenizer *t, uint32_t id, size_t *len) {
    if (id < t->n_tokens) return tok_at(t, id, len);
    long k = moe_tokenizer_special_index(t, id);
    *len = k < 0 ? 0 : strlen(t->special_text[k]);
    return k < 0 ? NULL : (const uint8_t *)t->special_text[k];
}

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
        if (add_special(t, id, text, err)) return -1;
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
        tok_pairmap seen = {0};
        if (!ma || !mb) { free(ma); free(mb); return -1; }
        for (uint32_t i = 0; i < count; i++) {
            if ((rc = next_line(&L, err)) <= 0) {
                free(ma); free(mb); tok_pair_free(&seen);
                if (rc == 0) moe_errf(err, "%s:%zu: expected merge %u of %u, found end of file",
                                      what, L.lineno + 1, i, count);
                return -1;
            }
            int nf = fields(L.s, L.n, f, fl, 3);
            if (nf != 2 || parse_u32(f[0], fl[0], 255 + i, &ma[i]) ||
                parse_u32(f[1], fl[1], 255 + i, &mb[i])) {
                free(ma); free(mb); tok_pair_free(&seen);
                snprintf(ex, sizeof ex, "a merge '<left id> <right id>' with ids < %u "
                         "(merge %u creates id %u)", 256 + i, i, 256 + i);
                LINE_ERR(&L, err, ex);
            }
            int put = tok_pair_put(&seen, ma[i], mb[i], i, 0);
            if (put <= 0) {
                uint32_t r = 0, id;
                tok_pair_get(&seen, ma[i], mb[i], &r, &id);
                free(ma); free(mb); tok_pair_free(&seen);
                if (put < 0) return moe_errf(err, "%s: out of memory", what);
                snprintf(ex, sizeof ex, "a new merge (this one repeats merge %u on line %u)",
                         r, r + 5);
                LINE_ERR(&L, err, ex);
            }
        }
        tok_pair_free(&seen);
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
    t = tok_alloc(MOE_TOK_RANKS, err);
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
    if (tok_finish_build(t, err)) { moe_err_prefix(err, "%s", what); goto fail; }
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
    moe_tokenizer *t = tok_alloc(MOE_TOK_RANKS, err);
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
    if (tok_finish_build(t, err)) { moe_err_prefix(err, "%s", what); moe_tokenizer_free(t); return -1; }
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

/* ---------------------------------------------------------------- encoding */

typedef struct cache_slot {
    uint64_t h;
    uint32_t key_off, key_len;   /* into key arena; key_len 0: free */
    uint32_t ids_off, ids_n;     /* into id arena */
} cache_slot;

#define CACHE_SLOTS (1u << 17)
#define CACHE_MAX_KEY 64
#define CACHE_ARENA (CACHE_SLOTS / 2 * 16)

typedef struct heap_ent { uint32_t rank, pos; } heap_ent;

struct moe_encoder {
    const moe_tokenizer *t;
    tok_iter it;
    cache_slot *slots;           /* [CACHE_SLOTS] */
    size_t used;
    uint8_t *keys;               /* key arena [CACHE_ARENA] */
    uint32_t *cids;              /* id arena [CACHE_ARENA] */
    size_t keys_len, cids_len;
    /* scratch for one chunk */
    uint32_t *sym, *rank, *next, *prev;
    heap_ent *heap;
    size_t scap;
};

moe_encoder *moe_encoder_new(const moe_tokenizer *t, moe_err *err) {
    moe_encoder *e = moe_calloc(1, sizeof *e, err);
    if (!e) return NULL;
    e->t = t;
    if (t->kind == MOE_TOK_BYTES) return e;
    tok_iter_init(&e->it, t->pat);
    e->slots = moe_calloc(CACHE_SLOTS, sizeof *e->slots, err);
    e->keys = moe_malloc(CACHE_ARENA, err);
    e->cids = moe_malloc(CACHE_ARENA * sizeof *e->cids, err);
    if (!e->slots || !e->keys || !e->cids) { moe_encoder_free(e); return NULL; }
    return e;
}

void moe_encoder_free(moe_encoder *e) {
    if (!e) return;
    free(e->slots); free(e->keys); free(e->cids);
    free(e->sym); free(e->rank); free(e->next); free(e->prev); free(e->heap);
    free(e);
}

int moe_ids_push(moe_ids *v, uint32_t id) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 1024;
        uint32_t *p = realloc(v->ids, cap * sizeof *p);
        if (!p) return -1;
        v->ids = p;
        v->cap = cap;
    }
    v->ids[v->n++] = id;
    return 0;
}

static int ids_reserve(moe_ids *v, size_t extra) {
    if (v->n + extra <= v->cap) return 0;
    size_t cap = v->cap ? v->cap : 1024;
    while (cap < v->n + extra) cap *= 2;
    uint32_t *p = realloc(v->ids, cap * sizeof *p);
    if (!p) return -1;
    v->ids = p;
    v->cap = cap;
    return 0;
}

void moe_ids_free(moe_ids *v) {
    free(v->ids);
    v->ids = NULL;
    v->n = v->cap = 0;
}

static int scratch(moe_encoder *e, size_t n) {
    if (n <= e->scap) return 0;
    size_t cap = e->scap ? e->scap : 256;
    while (cap < n) cap *= 2;
    uint32_t *a = realloc(e->sym, cap * 4), *b = a ? realloc(e->rank, cap * 4) : NULL;
    if (a) e->sym = a;
    if (b) e->rank = b;
    if (!a || !b) return -1;
    if (!(a = realloc(e->next, cap * 4))) return -1;
    e->next = a;
    if (!(a = realloc(e->prev, cap * 4))) return -1;
    e->prev = a;
    heap_ent *h = realloc(e->heap, cap * 3 * sizeof *h);
    if (!h) return -1;
    e->heap = h;
    e->scap = cap;
    return 0;
}

static inline int heap_less(heap_ent x, heap_ent y) {
    return x.rank < y.rank || (x.rank == y.rank && x.pos < y.pos);
}
static void heap_push(heap_ent *h, size_t *n, heap_ent x) {
    size_t i = (*n)++;
    while (i && heap_less(x, h[(i - 1) / 2])) { h[i] = h[(i - 1) / 2]; i = (i - 1) / 2; }
    h[i] = x;
}
static heap_ent heap_pop(heap_ent *h, size_t *n) {
    heap_ent top = h[0], x = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && heap_less(h[c + 1], h[c])) c++;
        if (!heap_less(h[c], x)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = x;
    return top;
}

/* Byte-pair merging of one chunk p[n] into e->sym; returns the count. Short
 * chunks use tiktoken's scan for the lowest rank; long ones a heap over a
 * linked list (same result: lowest rank first, leftmost among equals). */
static size_t merge_chunk(moe_encoder *e, const uint8_t *p, size_t n) {
    const moe_tokenizer *t = e->t;
    const tok_pairmap *pm = &t->pairs;
    uint32_t *sym = e->sym, *rank = e->rank, id = 0;
    for (size_t i = 0; i < n; i++) sym[i] = t->byte_id[p[i]];
    if (n < 2) return n;
    if (n <= 48) {
        for (size_t i = 0; i + 1 < n; i++)
            if (!tok_pair_get(pm, sym[i], sym[i + 1], &rank[i], &id)) rank[i] = TOK_NONE;
        size_t m = n;
        for (;;) {
            uint32_t best = TOK_NONE;
            size_t bi = 0;
            for (size_t i = 0; i + 1 < m; i++)
                if (rank[i] < best) { best = rank[i]; bi = i; }
            if (best == TOK_NONE) break;
            uint32_t r;
            tok_pair_get(pm, sym[bi], sym[bi + 1], &r, &id);
            sym[bi] = id;
            memmove(sym + bi + 1, sym + bi + 2, (m - bi - 2) * sizeof *sym);
            if (m >= bi + 3) memmove(rank + bi + 1, rank + bi + 2, (m - bi - 3) * sizeof *rank);
            m--;
            if (bi + 1 < m) {
                if (!tok_pair_get(pm, sym[bi], sym[bi + 1], &rank[bi], &id)) rank[bi] = TOK_NONE;
            } else {
                rank[bi] = TOK_NONE;
            }
            if (bi > 0 && !tok_pair_get(pm, sym[bi - 1], sym[bi], &rank[bi - 1], &id))
                rank[bi - 1] = TOK_NONE;
        }
        return m;
    }
    uint32_t *next = e->next, *prev = e->prev;
    heap_ent *h = e->heap;
    size_t hn = 0;
    for (size_t i = 0; i < n; i++) { next[i] = (uint32_t)(i + 1); prev[i] = (uint32_t)i - 1; }
    for (size_t i = 0; i + 1 < n; i++) {
        uint32_t r;
        if (tok_pair_get(pm, sym[i], sym[i + 1], &r, &id)) heap_push(h, &hn, (heap_ent){r, (uint32_t)i});
    }
    /* rank[i] marks a dead symbol (merged into its left neighbour) */
    for (size_t i = 0; i < n; i++) rank[i] = 0;
    while (hn) {
        heap_ent x = heap_pop(h, &hn);
        uint32_t i = x.pos, j = next[i], r;
        if (rank[i] || j >= n || !tok_pair_get(pm, sym[i], sym[j], &r, &id) || r != x.rank) continue;
        sym[i] = id;
        rank[j] = 1;
        next[i] = next[j];
        if (next[j] < n) prev[next[j]] = i;
        if (prev[i] != UINT32_MAX && tok_pair_get(pm, sym[prev[i]], sym[i], &r, &id))
            heap_push(h, &hn, (heap_ent){r, prev[i]});
        if (next[i] < n && tok_pair_get(pm, sym[i], sym[next[i]], &r, &id))
            heap_push(h, &hn, (heap_ent){r, i});
    }
    size_t m = 0;
    for (uint32_t i = 0; i < n; i = next[i]) sym[m++] = sym[i];
    return m;
}

static int encode_chunk(moe_encoder *e, const uint8_t *p, size_t n, moe_ids *out) {
    const moe_tokenizer *t = e->t;
    if (n == 1) return moe_ids_push(out, t->byte_id[p[0]]);
    if (t->kind == MOE_TOK_RANKS) {  /* tiktoken: a chunk that is a token is that token */
        uint32_t id = bytes_get(t, p, n);
        if (id != TOK_NONE) return moe_ids_push(out, id);
    }
    uint64_t h = 0;
    size_t slot = 0;
    int cacheable = n <= CACHE_MAX_KEY;
    if (cacheable) {
        h = tok_hash(p, n);
        slot = h & (CACHE_SLOTS - 1);
        for (;;) {
            cache_slot *s = &e->slots[slot];
            if (!s->key_len) break;
            if (s->h == h && s->key_len == n && !memcmp(e->keys + s->key_off, p, n)) {
                if (ids_reserve(out, s->ids_n)) return -1;
                memcpy(out->ids + out->n, e->cids + s->ids_off, s->ids_n * sizeof *out->ids);
                out->n += s->ids_n;
                return 0;
            }
            slot = (slot + 1) & (CACHE_SLOTS - 1);
        }
    }
    if (scratch(e, n)) return -1;
    size_t m = merge_chunk(e, p, n);
    if (ids_reserve(out, m)) return -1;
    memcpy(out->ids + out->n, e->sym, m * sizeof *out->ids);
    out->n += m;
    if (cacheable) {
        if (e->used * 2 >= CACHE_SLOTS || e->keys_len + n > CACHE_ARENA || e->cids_len + m > CACHE_ARENA) {
            memset(e->slots, 0, CACHE_SLOTS * sizeof *e->slots);
            e->used = e->keys_len = e->cids_len = 0;
            slot = h & (CACHE_SLOTS - 1);
        }
        cache_slot *s = &e->slots[slot];
        s->h = h;
        s->key_off = (uint32_t)e->keys_len;
        s->key_len = (uint32_t)n;
        s->ids_off = (uint32_t)e->cids_len;
        s->ids_n = (uint32_t)m;
        memcpy(e->keys + e->keys_len, p, n);
        memcpy(e->cids + e->cids_len, e->sym, m * sizeof *e->cids);
        e->keys_len += n;
        e->cids_len += m;
        e->used++;
    }
    return 0;
}

static int encode_plain(moe_encoder *e, const char *text, size_t len, moe_ids *out, moe_err *err) {
    const moe_tokenizer *t = e->t;
    if (t->kind == MOE_TOK_BYTES) {
        if (ids_reserve(out, len)) return moe_errf(err, "tokenizer: out of memory");
        for (size_t i = 0; i < len; i++) out->ids[out->n++] = (uint8_t)text[i];
        return 0;
    }
    tok_iter_reset(&e->it, text, len);
    size_t a, b;
    while (tok_iter_next(&e->it, &a, &b))
        if (encode_chunk(e, (const uint8_t *)text + a, b - a, out))
            return moe_errf(err, "tokenizer: out of memory");
    return 0;
}

/* The first special token in s[len] (the longest of those starting at the
 * same place): its position, or NULL; *which is its index. */
static const char *find_special(const moe_tokenizer *t, const char *s, size_t len, uint32_t *which) {
    const char *end = s + len;
    while (s < end) {
        if (t->special_one_first && !(s = memchr(s, t->special_first, (size_t)(end - s)))) return NULL;
        size_t best = 0;
        for (uint32_t i = 0; i < t->n_special; i++) {
            const char *x = t->special_text[i];
            size_t n = strlen(x);
            if (n > best && n <= (size_t)(end - s) && !memcmp(s, x, n)) { best = n; *which = i; }
        }
        if (best) return s;
        s++;
    }
    return NULL;
}

int moe_encoder_encode(moe_encoder *e, const char *text, size_t len, unsigned flags,
                       moe_ids *out, moe_err *err) {
    if (!(flags & MOE_ENC_ALLOW_SPECIAL)) return encode_plain(e, text, len, out, err);
    const moe_tokenizer *t = e->t;
    while (len) {
        uint32_t k = 0;
        const char *s = find_special(t, text, len, &k);
        size_t seg = s ? (size_t)(s - text) : len;
        if (encode_plain(e, text, seg, out, err)) return -1;
        if (!s) break;
        if (moe_ids_push(out, t->special_id[k])) return moe_errf(err, "tokenizer: out of memory");
        size_t sl = strlen(t->special_text[k]);
        text += seg + sl;
        len -= seg + sl;
    }
    return 0;
}

#define PAR_MIN (1u << 20)
#define PAR_BLOCK (256u << 10)

int moe_tokenizer_encode_ex(const moe_tokenizer *t, const char *text, size_t len,
                            unsigned flags, uint32_t **ids, size_t *n, moe_err *err) {
    *ids = NULL;
    *n = 0;
    int nth = omp_get_max_threads();
    if (len < PAR_MIN || nth < 2 || t->kind == MOE_TOK_BYTES) {
        moe_encoder *e = moe_encoder_new(t, err);
        if (!e) return -1;
        moe_ids v = {0};
        int rc = moe_encoder_encode(e, text, len, flags, &v, err);
        moe_encoder_free(e);
        if (rc) { moe_ids_free(&v); return -1; }
        *ids = v.ids ? v.ids : malloc(sizeof **ids);
        *n = v.n;
        return *ids ? 0 : moe_errf(err, "tokenizer: out of memory");
    }
    /* cut into pieces at safe points; special tokens hold no '\n' so a cut
     * never splits one */
    size_t nb = 0, capb = len / PAR_BLOCK + 2;
    size_t *cut = moe_malloc((capb + 1) * sizeof *cut, err);
    if (!cut) return -1;
    cut[0] = 0;
    for (size_t p = 0; p < len;) {
        size_t q = moe_pretok_safe_cut(text, len, p + PAR_BLOCK);
        if (nb + 1 >= capb) {
            capb *= 2;
            size_t *nc = realloc(cut, (capb + 1) * sizeof *cut);
            if (!nc) { free(cut); return moe_errf(err, "tokenizer: out of memory"); }
            cut = nc;
        }
        cut[++nb] = q;
        p = q;
    }
    moe_ids *parts = moe_calloc(nb, sizeof *parts, err);
    if (!parts) { free(cut); return -1; }
    int failed = 0;
    moe_err first = {{0}};
    #pragma omp parallel
    {
        moe_err lerr;
        moe_encoder *e = moe_encoder_new(t, &lerr);
        if (!e) {
            #pragma omp critical
            { if (!failed) first = lerr; failed = 1; }
        }
        #pragma omp for schedule(dynamic, 1)
        for (size_t i = 0; i < nb; i++) {
            if (!e || failed) continue;
            if (moe_encoder_encode(e, text + cut[i], cut[i + 1] - cut[i], flags, &parts[i], &lerr)) {
                #pragma omp critical
                { if (!failed) first = lerr; failed = 1; }
            }
        }
        moe_encoder_free(e);
    }
    size_t total = 0;
    for (size_t i = 0; i < nb; i++) total += parts[i].n;
    uint32_t *all = failed ? NULL : moe_malloc(total * sizeof *all, &first);
    if (all) {
        size_t o = 0;
        for (size_t i = 0; i < nb; i++) {
            if (parts[i].n) memcpy(all + o, parts[i].ids, parts[i].n * sizeof *all);
            o += parts[i].n;
        }
    }
    for (size_t i = 0; i < nb; i++) moe_ids_free(&parts[i]);
    free(parts);
    free(cut);
    if (!all) {
        if (err) *err = first;
        return -1;
    }
    *ids = all;
    *n = total;
    return 0;
}

int moe_tokenizer_encode(const moe_tokenizer *t, const char *text, size_t len,
                         uint32_t **ids, size_t *n, moe_err *err) {
    return moe_tokenizer_encode_ex(t, text, len, 0, ids, n, err);
}

/* ---------------------------------------------------------------- decoding */

int moe_tokenizer_decode(const moe_tokenizer *t, const uint32_t *ids, size_t n,
                         moe_buf *out, moe_err *err) {
    for (size_t i = 0; i < n; i++) {
        size_t l;
        const uint8_t *p = moe_tokenizer_token(t, ids[i], &l);
        if (!p && ids[i] < t->vocab_size)
            return moe_errf(err, "decode: id %u at position %zu is no token (an unused id between the "
                            "ordinary and the special tokens)", ids[i], i);
        if (!p) return moe_errf(err, "decode: id %u at position %zu is outside the vocabulary (size %u)",
                                ids[i], i, t->vocab_size);
        if (moe_buf_append(out, p, l)) return moe_errf(err, "decode: out of memory");
    }
    return 0;
}
