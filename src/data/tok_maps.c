/* tok_maps.c — the tokenizer's two hash maps (open addressing): merge pairs
 * (a, b) -> (rank, id) that the encoder applies, and token bytes -> id for
 * rank tables. Their lookups, tok_pair_get and tok_bytes_get, are inline in
 * tok_internal.h. */
#include "tok_internal.h"

#include <stdlib.h>

/* ---------------------------------------------------------------- pair map */

int moe_tok_pair_put(moe_tok_pairmap *m, uint32_t a, uint32_t b, uint32_t rank, uint32_t id) {
    if ((m->used + 1) * 2 > m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 1024;
        uint64_t *nk = malloc(ncap * sizeof *nk);
        uint32_t *nr = malloc(ncap * sizeof *nr), *ni = malloc(ncap * sizeof *ni);
        if (!nk || !nr || !ni) { free(nk); free(nr); free(ni); return -1; }
        for (size_t i = 0; i < ncap; i++) nk[i] = MOE_TOK_EMPTY;
        for (size_t i = 0; i < m->cap; i++) {
            if (m->keys[i] == MOE_TOK_EMPTY) continue;
            size_t j = tok_hash_u64(m->keys[i]) & (ncap - 1);
            while (nk[j] != MOE_TOK_EMPTY) j = (j + 1) & (ncap - 1);
            nk[j] = m->keys[i];
            nr[j] = m->rank[i];
            ni[j] = m->id[i];
        }
        free(m->keys); free(m->rank); free(m->id);
        m->keys = nk; m->rank = nr; m->id = ni; m->cap = ncap;
    }
    uint64_t key = (uint64_t)a << 32 | b;
    size_t mask = m->cap - 1, i = tok_hash_u64(key) & mask;
    while (m->keys[i] != MOE_TOK_EMPTY) {
        if (m->keys[i] == key) return 0;
        i = (i + 1) & mask;
    }
    m->keys[i] = key;
    m->rank[i] = rank;
    m->id[i] = id;
    m->used++;
    return 1;
}

void moe_tok_pair_free(moe_tok_pairmap *m) {
    free(m->keys); free(m->rank); free(m->id);
    memset(m, 0, sizeof *m);
}

/* ------------------------------------------------------ token bytes -> id */

int moe_tok_bytes_build(moe_tokenizer *t, uint32_t *dup_a, uint32_t *dup_b, moe_err *err) {
    size_t cap = 1024;
    while (cap < (size_t)t->n_tokens * 2) cap *= 2;
    t->byslot = moe_calloc(cap, sizeof *t->byslot, err);
    if (!t->byslot) return -1;
    t->bycap = cap;
    *dup_a = *dup_b = MOE_TOK_NONE;
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
                if (*dup_a == MOE_TOK_NONE) { *dup_a = v - 1; *dup_b = id; }
                break;
            }
            i = (i + 1) & (cap - 1);
        }
    }
    return 0;
}
