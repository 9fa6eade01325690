/* tok_internal.h — what the tokenizer files of src/data share: the tokenizer
 * struct, the GPT-2 pre-split iterator (PCRE2), hashing and the pair map. */
#ifndef MOE_TOK_INTERNAL_H
#define MOE_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <string.h>

#include "moe/tokenizer.h"

/* The GPT-2 pre-split pattern (r50k_base / p50k_base). */
#define MOE_GPT2_PATTERN \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

/* An open-addressing map (a, b) -> (rank, id) of the merges that the encoder
 * may apply. For BPE, rank = merge index and id = 256 + rank; for RANKS every
 * split of a token into two tokens is an entry, rank = id = the whole token. */
typedef struct tok_pairmap {
    uint64_t *keys;     /* [cap] (a << 32 | b), TOK_EMPTY when free */
    uint32_t *rank;     /* [cap] */
    uint32_t *id;       /* [cap] */
    size_t cap, used;   /* cap is a power of two */
} tok_pairmap;
#define TOK_EMPTY UINT64_MAX
#define TOK_NONE UINT32_MAX

struct moe_tokenizer {
    moe_tok_kind kind;
    uint32_t vocab_size;    /* ordinary tokens + 1 (<|endoftext|>) */
    uint32_t eot;           /* vocab_size - 1 */
    uint32_t n_tokens;      /* ordinary tokens: ids 0..n_tokens-1 */
    uint32_t byte_id[256];  /* id of each single byte */
    uint32_t *tok_off;      /* [n_tokens + 1] offsets into tok_bytes */
    uint8_t *tok_bytes;     /* all ordinary tokens' bytes, concatenated */
    uint32_t *merge_a, *merge_b;  /* BPE: [n_tokens - 256] */
    tok_pairmap pairs;
    uint32_t *byslot;       /* RANKS: [bycap] id + 1 of the token hashed there, 0 free */
    size_t bycap;
    pcre2_code *re;         /* NULL for BYTES */
    int jit;                /* re was JIT compiled */
};

static inline uint64_t tok_hash(const uint8_t *p, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        h = (h ^ v) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
        p += 8;
        n -= 8;
    }
    uint64_t v = 0;
    memcpy(&v, p, n);
    h = (h ^ v) * 0x94d049bb133111ebull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return h;
}

static inline uint64_t tok_hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

/* Looks up pair (a, b): returns 1 and sets rank / id, or 0. */
static inline int tok_pair_get(const tok_pairmap *m, uint32_t a, uint32_t b,
                               uint32_t *rank, uint32_t *id) {
    if (!m->cap) return 0;
    uint64_t key = (uint64_t)a << 32 | b;
    size_t mask = m->cap - 1, i = tok_hash_u64(key) & mask;
    for (;;) {
        uint64_t k = m->keys[i];
        if (k == key) { *rank = m->rank[i]; *id = m->id[i]; return 1; }
        if (k == TOK_EMPTY) return 0;
        i = (i + 1) & mask;
    }
}
/* Inserts (a, b) -> (rank, id); returns 1 if new, 0 if present, -1 on OOM. */
int tok_pair_put(tok_pairmap *m, uint32_t a, uint32_t b, uint32_t rank, uint32_t id);
void tok_pair_free(tok_pairmap *m);

/* Compiles the GPT-2 pattern (UTF + UCP + MATCH_INVALID_UTF), JIT if it can. */
pcre2_code *tok_compile_gpt2(int *jit, moe_err *err);

/* Iterates over the pre-split chunks of s[len]: the pattern's matches, and
 * each byte that is not part of valid UTF-8 as a chunk of its own. */
typedef struct tok_iter {
    const pcre2_code *re;
    int jit;
    pcre2_match_data *md;
    pcre2_match_context *mc;
    pcre2_jit_stack *js;
    const uint8_t *s;
    size_t len, pos;
    size_t m_start, m_end;  /* a match found beyond pos (after invalid bytes) */
    int have_m;
} tok_iter;
int tok_iter_init(tok_iter *it, const pcre2_code *re, int jit, moe_err *err);
void tok_iter_reset(tok_iter *it, const char *s, size_t len);
/* 1: a chunk [*start, *end); 0: done; -1: error (message in err). */
int tok_iter_next(tok_iter *it, size_t *start, size_t *end, moe_err *err);
void tok_iter_free(tok_iter *it);

/* Builds a tokenizer's derived tables (byte ids, pair map, bytes map, regex)
 * once kind, n_tokens, tok_off, tok_bytes (and merges for BPE) are set. */
int tok_finish_build(moe_tokenizer *t, moe_err *err);

#endif
