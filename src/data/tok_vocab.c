/* tok_vocab.c — the tokenizer object: its constructors (the bytes
 * tokenizer, a BPE from its merges), the tables derived once its tokens are
 * known, the rank tables tiktoken ships (recognised by hash) with their
 * special tokens, the split patterns' names, and the accessors. */
#include "tok_internal.h"

#include <stdio.h>
#include <stdlib.h>

int moe_tok_add_special(moe_tokenizer *t, uint32_t id, const char *text, moe_err *err) {
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
 * tokens (moe_tok_table_hash), each with its split pattern and special tokens
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

uint64_t moe_tok_table_hash(const moe_tokenizer *t) {
    uint64_t h = tok_hash(t->tok_bytes, t->tok_off[t->n_tokens]);
    return h ^ tok_hash_u64(tok_hash((const uint8_t *)t->tok_off, ((size_t)t->n_tokens + 1) * sizeof *t->tok_off));
}

static const struct known_vocab *known_vocab(const moe_tokenizer *t) {
    if (t->kind != MOE_TOK_RANKS) return NULL;
    uint64_t h = 0;
    for (size_t k = 0; k < sizeof KNOWN / sizeof *KNOWN; k++) {
        if (KNOWN[k].n_tokens != t->n_tokens) continue;
        if (!h) h = moe_tok_table_hash(t);
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
        if (text && moe_tok_add_special(t, id, text, err)) return -1;
    }
    return 0;
}

/* Without special tokens: <|endoftext|> right after the ordinary tokens. */
static int tok_default_special(moe_tokenizer *t, moe_err *err) {
    if (t->n_special) return 0;
    t->vocab_size = t->n_tokens + 1;
    t->eot = t->n_tokens;
    return moe_tok_add_special(t, t->eot, MOE_EOT_TEXT, err);
}

/* t->pat NONE for BPE or RANKS means: from the table (a known rank table's
 * pattern and special tokens), else GPT-2 with <|endoftext|> as the id after
 * the ordinary tokens. */
int moe_tok_finish_build(moe_tokenizer *t, moe_err *err) {
    if (t->kind == MOE_TOK_BYTES) {
        for (int b = 0; b < 256; b++) t->byte_id[b] = (uint32_t)b;
        t->pat = MOE_PAT_NONE;
        return tok_default_special(t, err);
    }
    if (t->kind == MOE_TOK_BPE) {
        for (int b = 0; b < 256; b++) t->byte_id[b] = (uint32_t)b;
        for (uint32_t i = 0; i + 256 < t->n_tokens; i++) {
            int rc = moe_tok_pair_put(&t->pairs, t->merge_a[i], t->merge_b[i], i, 256 + i);
            if (rc < 0) return moe_errf(err, "tokenizer: out of memory building the merge table");
        }
    } else {
        uint32_t da, db;
        if (moe_tok_bytes_build(t, &da, &db, err)) return -1;
        if (da != MOE_TOK_NONE)
            return moe_errf(err, "ranks %u and %u have the same token bytes", da, db);
        for (int b = 0; b < 256; b++) {
            uint8_t c = (uint8_t)b;
            t->byte_id[b] = tok_bytes_get(t, &c, 1);
            if (t->byte_id[b] == MOE_TOK_NONE)
                return moe_errf(err, "the single byte 0x%02x has no token (every byte needs one)", b);
        }
        for (uint32_t id = 0; id < t->n_tokens; id++) {
            size_t n;
            const uint8_t *p = tok_at(t, id, &n);
            for (size_t k = 1; k < n; k++) {
                uint32_t l = tok_bytes_get(t, p, k), r;
                if (l == MOE_TOK_NONE || (r = tok_bytes_get(t, p + k, n - k)) == MOE_TOK_NONE) continue;
                if (moe_tok_pair_put(&t->pairs, l, r, id, id) < 0)
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

moe_tokenizer *moe_tok_alloc(moe_tok_kind kind, moe_err *err) {
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
    moe_tok_pair_free(&t->pairs);
    free(t->byslot);
    for (uint32_t i = 0; i < t->n_special; i++) free(t->special_text[i]);
    free(t->special_text);
    free(t->special_id);
    free(t);
}

moe_tokenizer *moe_tokenizer_bytes(moe_err *err) {
    moe_tokenizer *t = moe_tok_alloc(MOE_TOK_BYTES, err);
    if (!t) return NULL;
    t->n_tokens = 256;
    t->tok_off = moe_malloc(257 * sizeof *t->tok_off, err);
    t->tok_bytes = moe_malloc(256, err);
    if (!t->tok_off || !t->tok_bytes) { moe_tokenizer_free(t); return NULL; }
    for (uint32_t i = 0; i < 256; i++) { t->tok_off[i] = i; t->tok_bytes[i] = (uint8_t)i; }
    t->tok_off[256] = 256;
    if (moe_tok_finish_build(t, err)) { moe_tokenizer_free(t); return NULL; }
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
    moe_tokenizer *t = moe_tok_alloc(MOE_TOK_BPE, err);
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
    if (moe_tok_finish_build(t, err)) goto fail;
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
