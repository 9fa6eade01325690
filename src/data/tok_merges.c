/* tok_merges.c — a tokenizer as other programs describe one (Hugging Face
 * tokenizers, llama.cpp): the merge that makes each token. Used by the
 * exporters (src/interop/). */
#include "tok_internal.h"

#include <stdlib.h>

/* RANKS: the last merge of tiktoken's algorithm on the bytes of token id
 * with only the ranks below id allowed: the two pieces left are its merge.
 * Returns 1 when the token cannot be made that way (no merge). */
static int ranks_merge(const moe_tokenizer *t, uint32_t id, uint32_t *a, uint32_t *b) {
    size_t n;
    const uint8_t *p = moe_tokenizer_token(t, id, &n);
    if (!p || n < 2) return 1;
    uint32_t stack[64], *sym = n <= 64 ? stack : malloc(n * sizeof *sym);
    if (!sym) return -1;
    for (size_t i = 0; i < n; i++) sym[i] = t->byte_id[p[i]];
    size_t m = n;
    while (m > 2) {
        size_t best = m;
        uint32_t best_rank = id, best_id = 0;
        for (size_t i = 0; i + 1 < m; i++) {
            uint32_t r, w;
            if (tok_pair_get(&t->pairs, sym[i], sym[i + 1], &r, &w) && r < best_rank) {
                best = i;
                best_rank = r;
                best_id = w;
            }
        }
        if (best == m) break;
        sym[best] = best_id;
        memmove(sym + best + 1, sym + best + 2, (m - best - 2) * sizeof *sym);
        m--;
    }
    int rc = 1;
    if (m == 2) {
        *a = sym[0];
        *b = sym[1];
        rc = 0;
    }
    if (sym != stack) free(sym);
    return rc;
}

int moe_tokenizer_merge_of(const moe_tokenizer *t, uint32_t id, uint32_t *a, uint32_t *b) {
    if (id >= t->n_tokens) return 1;  /* eot or out of range */
    switch (t->kind) {
    case MOE_TOK_BYTES: return 1;
    case MOE_TOK_BPE:
        if (id < 256) return 1;
        *a = t->merge_a[id - 256];
        *b = t->merge_b[id - 256];
        return 0;
    case MOE_TOK_RANKS: return ranks_merge(t, id, a, b);
    }
    return 1;
}
