/* tok_encode.c — text to ids and back: the encoder (pre-split chunks merged
 * by rank, a per-encoder chunk cache, special tokens, OpenMP over pieces of
 * large inputs), the id vector, and decoding. */
#include "tok_internal.h"

#include <omp.h>
#include <stdlib.h>

#include "moe/data/data.h"

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
    moe_tok_iter it;
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
    moe_tok_iter_init(&e->it, t->pat);
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
    const moe_tok_pairmap *pm = &t->pairs;
    uint32_t *sym = e->sym, *rank = e->rank, id = 0;
    for (size_t i = 0; i < n; i++) sym[i] = t->byte_id[p[i]];
    if (n < 2) return n;
    if (n <= 48) {
        for (size_t i = 0; i + 1 < n; i++)
            if (!tok_pair_get(pm, sym[i], sym[i + 1], &rank[i], &id)) rank[i] = MOE_TOK_NONE;
        size_t m = n;
        for (;;) {
            uint32_t best = MOE_TOK_NONE;
            size_t bi = 0;
            for (size_t i = 0; i + 1 < m; i++)
                if (rank[i] < best) { best = rank[i]; bi = i; }
            if (best == MOE_TOK_NONE) break;
            uint32_t r;
            tok_pair_get(pm, sym[bi], sym[bi + 1], &r, &id);
            sym[bi] = id;
            memmove(sym + bi + 1, sym + bi + 2, (m - bi - 2) * sizeof *sym);
            if (m >= bi + 3) memmove(rank + bi + 1, rank + bi + 2, (m - bi - 3) * sizeof *rank);
            m--;
            if (bi + 1 < m) {
                if (!tok_pair_get(pm, sym[bi], sym[bi + 1], &rank[bi], &id)) rank[bi] = MOE_TOK_NONE;
            } else {
                rank[bi] = MOE_TOK_NONE;
            }
            if (bi > 0 && !tok_pair_get(pm, sym[bi - 1], sym[bi], &rank[bi - 1], &id))
                rank[bi - 1] = MOE_TOK_NONE;
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
        uint32_t id = tok_bytes_get(t, p, n);
        if (id != MOE_TOK_NONE) return moe_ids_push(out, id);
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
    moe_tok_iter_reset(&e->it, text, len);
    size_t a, b;
    while (moe_tok_iter_next(&e->it, &a, &b))
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

int moe_encode_pieces(const moe_tokenizer *t, const char *const *texts, const size_t *lens, size_t n,
                      unsigned flags, int threads, const moe_progress *progress, moe_ids *out,
                      size_t *failed_at, moe_err *err) {
    uint64_t done = 0, total = 0;
    for (size_t i = 0; i < n; i++) total += lens[i];
    int failed = 0;
    size_t at = SIZE_MAX;
    moe_err first = {{0}};
    #pragma omp parallel num_threads(threads > 0 ? threads : omp_get_max_threads())
    {
        moe_err lerr;
        moe_encoder *e = moe_encoder_new(t, &lerr);
        if (!e) {
            #pragma omp critical
            { if (!failed) first = lerr; failed = 1; }
        }
        #pragma omp for schedule(dynamic, 1)
        for (size_t i = 0; i < n; i++) {
            if (!e || failed) continue;
            if (moe_encoder_encode(e, texts[i], lens[i], flags, &out[i], &lerr)) {
                #pragma omp critical
                { if (!failed) { first = lerr; at = i; } failed = 1; }
            }
            if (!progress) continue;
            uint64_t d;
            #pragma omp atomic capture
            d = done += lens[i];
            if (omp_get_thread_num() == 0) progress->fn(progress->ctx, (size_t)d, (size_t)total);
        }
        moe_encoder_free(e);
    }
    if (!failed) return 0;
    if (failed_at) *failed_at = at;
    if (err) *err = first;
    return -1;
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
    const char **texts = parts ? moe_malloc(nb * sizeof *texts, err) : NULL;
    size_t *lens = texts ? moe_malloc(nb * sizeof *lens, err) : NULL;
    if (!lens) { free(texts); free(parts); free(cut); return -1; }
    for (size_t i = 0; i < nb; i++) { texts[i] = text + cut[i]; lens[i] = cut[i + 1] - cut[i]; }
    moe_err first = {{0}};
    int failed = moe_encode_pieces(t, texts, lens, nb, flags, 0, NULL, parts, NULL, &first) != 0;
    free(texts);
    free(lens);
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
