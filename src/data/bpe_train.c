/* bpe_train.c — learning BPE merges: counting the pre-split chunks of the
 * training text (OpenMP, one hash map per thread, merged), then merging the
 * most frequent adjacent pair repeatedly with incremental pair counts (each
 * pair keeps the list of words it occurs in; a lazy max-heap finds the best). */
#include "tok_internal.h"

#include <omp.h>
#include <stdlib.h>

/* ------------------------------------------------ chunk -> count hash map */

typedef struct wslot {
    uint64_t h;
    uint64_t count;     /* 0: free */
    size_t off;         /* into arena */
    uint32_t len;
} wslot;

typedef struct wmap {
    wslot *slots;       /* [cap], cap a power of two */
    size_t cap, used;
    uint8_t *arena;     /* chunk bytes */
    size_t alen, acap;
} wmap;

static int wmap_init(wmap *m, size_t cap) {
    memset(m, 0, sizeof *m);
    m->slots = calloc(cap, sizeof *m->slots);
    m->cap = cap;
    return m->slots ? 0 : -1;
}

static void wmap_free(wmap *m) {
    free(m->slots);
    free(m->arena);
    memset(m, 0, sizeof *m);
}

static int wmap_grow(wmap *m) {
    size_t ncap = m->cap * 2;
    wslot *ns = calloc(ncap, sizeof *ns);
    if (!ns) return -1;
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->slots[i].count) continue;
        size_t j = m->slots[i].h & (ncap - 1);
        while (ns[j].count) j = (j + 1) & (ncap - 1);
        ns[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = ns;
    m->cap = ncap;
    return 0;
}

/* Adds count c to chunk p[n] (hash h). */
static int wmap_add(wmap *m, const uint8_t *p, size_t n, uint64_t h, uint64_t c) {
    size_t mask = m->cap - 1, i = h & mask;
    for (;;) {
        wslot *s = &m->slots[i];
        if (!s->count) break;
        if (s->h == h && s->len == n && !memcmp(m->arena + s->off, p, n)) {
            s->count += c;
            return 0;
        }
        i = (i + 1) & mask;
    }
    if (m->alen + n > m->acap) {
        size_t cap = m->acap ? m->acap : 1 << 16;
        while (cap < m->alen + n) cap *= 2;
        uint8_t *a = realloc(m->arena, cap);
        if (!a) return -1;
        m->arena = a;
        m->acap = cap;
    }
    memcpy(m->arena + m->alen, p, n);
    m->slots[i] = (wslot){h, c, m->alen, (uint32_t)n};
    m->alen += n;
    m->used++;
    if (m->used * 2 > m->cap && wmap_grow(m)) return -1;
    return 0;
}

struct moe_bpe_trainer {
    wmap words;
    uint64_t chunks;
};

moe_bpe_trainer *moe_bpe_trainer_new(moe_err *err) {
    moe_bpe_trainer *tr = moe_calloc(1, sizeof *tr, err);
    if (!tr) return NULL;
    if (wmap_init(&tr->words, 1 << 16)) {
        free(tr);
        moe_errf(err, "bpe: out of memory");
        return NULL;
    }
    return tr;
}

void moe_bpe_trainer_free(moe_bpe_trainer *tr) {
    if (!tr) return;
    wmap_free(&tr->words);
    free(tr);
}

void moe_bpe_trainer_stats(const moe_bpe_trainer *tr, uint64_t *chunks, size_t *unique) {
    if (chunks) *chunks = tr->chunks;
    if (unique) *unique = tr->words.used;
}

typedef struct block { const char *p; size_t n; } block;

#define TRAIN_BLOCK (1u << 20)

int moe_bpe_trainer_add(moe_bpe_trainer *tr, const char *const *texts, const size_t *lens,
                        size_t n, moe_bpe_progress progress, void *user, moe_err *err) {
    /* work list: each text, large ones cut at safe points */
    size_t nb = 0, cap = n + 16, total = 0;
    block *bl = moe_malloc(cap * sizeof *bl, err);
    if (!bl) return -1;
    for (size_t i = 0; i < n; i++) {
        total += lens[i];
        for (size_t p = 0; p < lens[i] || (p == 0 && lens[i] == 0);) {
            size_t q = lens[i] > TRAIN_BLOCK ? moe_pretok_safe_cut(texts[i], lens[i], p + TRAIN_BLOCK)
                                             : lens[i];
            if (nb == cap) {
                cap *= 2;
                block *nbl = realloc(bl, cap * sizeof *bl);
                if (!nbl) { free(bl); return moe_errf(err, "bpe: out of memory"); }
                bl = nbl;
            }
            bl[nb++] = (block){texts[i] + p, q - p};
            if (q == p) break;
            p = q;
        }
    }
    size_t done = 0;
    int failed = 0;
    moe_err first = {{0}};
    #pragma omp parallel
    {
        wmap local;
        moe_tok_iter it;
        moe_err lerr;
        uint64_t chunks = 0;
        int ok = wmap_init(&local, 1 << 16) == 0;
        int it_ok = ok;
        moe_tok_iter_init(&it, MOE_PAT_GPT2);
        if (!ok) {
            moe_errf(&lerr, "bpe: out of memory");
            #pragma omp critical
            { if (!failed) first = lerr; failed = 1; }
        }
        #pragma omp for schedule(dynamic, 8)
        for (size_t b = 0; b < nb; b++) {
            if (failed || !it_ok) continue;
            moe_tok_iter_reset(&it, bl[b].p, bl[b].n);
            size_t s, e;
            int rc;
            const uint8_t *base = (const uint8_t *)bl[b].p;
            while ((rc = moe_tok_iter_next(&it, &s, &e)) > 0) {
                chunks++;
                if (wmap_add(&local, base + s, e - s, tok_hash(base + s, e - s), 1)) {
                    moe_errf(&lerr, "bpe: out of memory counting chunks");
                    rc = -1;
                    break;
                }
            }
            if (rc < 0) {
                #pragma omp critical
                { if (!failed) first = lerr; failed = 1; }
            }
            size_t d;
            #pragma omp atomic capture
            d = done += bl[b].n;
            if (progress && omp_get_thread_num() == 0) progress(user, "count", d, total);
        }
        #pragma omp critical
        {
            if (ok && !failed) {
                for (size_t i = 0; i < local.cap; i++) {
                    const wslot *s = &local.slots[i];
                    if (s->count && wmap_add(&tr->words, local.arena + s->off, s->len, s->h, s->count)) {
                        moe_errf(&first, "bpe: out of memory merging chunk counts");
                        failed = 1;
                        break;
                    }
                }
                tr->chunks += chunks;
            }
        }
        if (ok) wmap_free(&local);
    }
    free(bl);
    if (failed) {
        if (err) *err = first;
        return -1;
    }
    if (progress) progress(user, "count", total, total);
    return 0;
}

/* ---------------------------------------------------------------- merging */

typedef struct tpair {
    uint32_t a, b;
    int64_t count;
    uint32_t *where;    /* words it occurs (or occurred) in; may repeat */
    uint32_t wn, wcap;
    uint32_t stamp;     /* last merge that created occurrences of it */
} tpair;

typedef struct hent { int64_t count; uint32_t a, b, idx; } hent;

typedef struct trainer_state {
    tpair *pairs;
    size_t np, capp;
    moe_tok_pairmap map;    /* (a, b) -> index into pairs (in .rank) */
    hent *heap;
    size_t nh, caph;
} trainer_state;

/* max-heap order: larger count, then smaller (a, b) */
static inline int hbefore(const hent *x, const hent *y) {
    if (x->count != y->count) return x->count > y->count;
    if (x->a != y->a) return x->a < y->a;
    return x->b < y->b;
}

static int hpush(trainer_state *S, hent x) {
    if (S->nh == S->caph) {
        size_t cap = S->caph ? S->caph * 2 : 1 << 16;
        hent *h = realloc(S->heap, cap * sizeof *h);
        if (!h) return -1;
        S->heap = h;
        S->caph = cap;
    }
    size_t i = S->nh++;
    while (i && hbefore(&x, &S->heap[(i - 1) / 2])) { S->heap[i] = S->heap[(i - 1) / 2]; i = (i - 1) / 2; }
    S->heap[i] = x;
    return 0;
}

static hent hpop(trainer_state *S) {
    hent top = S->heap[0], x = S->heap[--S->nh];
    size_t i = 0, n = S->nh;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && hbefore(&S->heap[c + 1], &S->heap[c])) c++;
        if (!hbefore(&S->heap[c], &x)) break;
        S->heap[i] = S->heap[c];
        i = c;
    }
    if (n) S->heap[i] = x;
    return top;
}

/* Index of pair (a, b), created with count 0 if absent; -1 on OOM. */
static long pair_index(trainer_state *S, uint32_t a, uint32_t b) {
    uint32_t idx, unused;
    if (tok_pair_get(&S->map, a, b, &idx, &unused)) return idx;
    if (S->np == S->capp) {
        size_t cap = S->capp ? S->capp * 2 : 1 << 16;
        tpair *p = realloc(S->pairs, cap * sizeof *p);
        if (!p) return -1;
        S->pairs = p;
        S->capp = cap;
    }
    S->pairs[S->np] = (tpair){a, b, 0, NULL, 0, 0, UINT32_MAX};
    if (moe_tok_pair_put(&S->map, a, b, (uint32_t)S->np, 0) < 0) return -1;
    return (long)S->np++;
}

static int where_push(tpair *p, uint32_t w) {
    if (p->wn && p->where[p->wn - 1] == w) return 0;
    if (p->wn == p->wcap) {
        uint32_t cap = p->wcap ? p->wcap * 2 : 4;
        uint32_t *q = realloc(p->where, cap * sizeof *q);
        if (!q) return -1;
        p->where = q;
        p->wcap = cap;
    }
    p->where[p->wn++] = w;
    return 0;
}

int moe_bpe_trainer_finish(moe_bpe_trainer *tr, uint32_t vocab_size,
                           moe_bpe_progress progress, void *user,
                           moe_tokenizer **out, moe_err *err) {
    *out = NULL;
    if (vocab_size < 257)
        return moe_errf(err, "bpe: vocab_size must be at least 257 (256 bytes + <|endoftext|>), found %u",
                        vocab_size);
    const size_t M = vocab_size - 257;
    const wmap *W = &tr->words;
    size_t nw = W->used, total = W->alen;
    uint64_t *wcount = malloc((nw ? nw : 1) * sizeof *wcount);
    size_t *woff = malloc((nw ? nw : 1) * sizeof *woff);
    uint32_t *wlen = malloc((nw ? nw : 1) * sizeof *wlen);
    uint32_t *wstamp = calloc(nw ? nw : 1, sizeof *wstamp);
    uint32_t *sym = malloc((total ? total : 1) * sizeof *sym);
    uint32_t *ma = malloc((M ? M : 1) * sizeof *ma), *mb = malloc((M ? M : 1) * sizeof *mb);
    uint32_t *touched = NULL;
    size_t ntouched = 0, captouched = 0;
    trainer_state S = {0};
    int rc = -1;
    if (!wcount || !woff || !wlen || !wstamp || !sym || !ma || !mb) goto oom;
    if (nw > UINT32_MAX - 1) { moe_errf(err, "bpe: too many distinct chunks (%zu)", nw); goto done; }

    /* words as symbol sequences */
    size_t w = 0, o = 0;
    for (size_t i = 0; i < W->cap; i++) {
        const wslot *s = &W->slots[i];
        if (!s->count) continue;
        wcount[w] = s->count;
        woff[w] = o;
        wlen[w] = s->len;
        for (uint32_t k = 0; k < s->len; k++) sym[o + k] = W->arena[s->off + k];
        o += s->len;
        w++;
    }
    /* initial pair counts and where-lists */
    for (w = 0; w < nw; w++) {
        const uint32_t *s = sym + woff[w];
        for (uint32_t k = 0; k + 1 < wlen[w]; k++) {
            long pi = pair_index(&S, s[k], s[k + 1]);
            if (pi < 0) goto oom;
            S.pairs[pi].count += (int64_t)wcount[w];
            if (where_push(&S.pairs[pi], (uint32_t)w)) goto oom;
        }
    }
    for (size_t i = 0; i < S.np; i++)
        if (hpush(&S, (hent){S.pairs[i].count, S.pairs[i].a, S.pairs[i].b, (uint32_t)i})) goto oom;

    size_t m = 0;
    for (; m < M; m++) {
        /* the best valid pair */
        long best = -1;
        while (S.nh) {
            hent x = hpop(&S);
            int64_t c = S.pairs[x.idx].count;
            if (c == x.count && c > 0) { best = x.idx; break; }
            if (c > 0 && hpush(&S, (hent){c, x.a, x.b, x.idx})) goto oom;
        }
        if (best < 0) break;
        const uint32_t a = S.pairs[best].a, b = S.pairs[best].b, nid = 256 + (uint32_t)m;
        ma[m] = a;
        mb[m] = b;
        uint32_t *where = S.pairs[best].where;
        uint32_t wn = S.pairs[best].wn;
        S.pairs[best].where = NULL;
        S.pairs[best].wn = S.pairs[best].wcap = 0;
        ntouched = 0;
        for (uint32_t wi = 0; wi < wn; wi++) {
            uint32_t ww = where[wi];
            if (wstamp[ww] == m + 1) continue;
            wstamp[ww] = (uint32_t)m + 1;
            uint32_t *s = sym + woff[ww], L = wlen[ww];
            int64_t c = (int64_t)wcount[ww];
            int found = 0;
            for (uint32_t k = 0; k + 1 < L; k++)
                if (s[k] == a && s[k + 1] == b) { found = 1; break; }
            if (!found) continue;
            /* remove the old pairs that hold a or b ... */
            for (uint32_t k = 0; k + 1 < L; k++) {
                if (s[k] != a && s[k] != b && s[k + 1] != a && s[k + 1] != b) continue;
                uint32_t pi = 0, unused;
                if (tok_pair_get(&S.map, s[k], s[k + 1], &pi, &unused)) S.pairs[pi].count -= c;
            }
            /* ... merge ... */
            uint32_t j = 0;
            for (uint32_t i = 0; i < L;) {
                if (i + 1 < L && s[i] == a && s[i + 1] == b) { s[j++] = nid; i += 2; }
                else s[j++] = s[i++];
            }
            wlen[ww] = L = j;
            /* ... and add the new pairs that hold a, b or the new id */
            for (uint32_t k = 0; k + 1 < L; k++) {
                int isnew = s[k] == nid || s[k + 1] == nid;
                if (!isnew && s[k] != a && s[k] != b && s[k + 1] != a && s[k + 1] != b) continue;
                long pi = pair_index(&S, s[k], s[k + 1]);
                if (pi < 0) goto oom;
                tpair *p = &S.pairs[pi];
                p->count += c;
                if (isnew) {
                    if (where_push(p, ww)) goto oom;
                    if (p->stamp != m) {
                        p->stamp = (uint32_t)m;
                        if (ntouched == captouched) {
                            captouched = captouched ? captouched * 2 : 1024;
                            uint32_t *t = realloc(touched, captouched * sizeof *t);
                            if (!t) goto oom;
                            touched = t;
                        }
                        touched[ntouched++] = (uint32_t)pi;
                    }
                }
            }
        }
        free(where);
        for (size_t i = 0; i < ntouched; i++) {
            tpair *p = &S.pairs[touched[i]];
            if (p->count > 0 && hpush(&S, (hent){p->count, p->a, p->b, touched[i]})) goto oom;
        }
        if (progress && (m % 64 == 0 || m + 1 == M)) progress(user, "merge", m + 1, M);
    }
    if (progress) progress(user, "merge", m, M);
    rc = moe_tokenizer_from_merges(ma, mb, m, out, err);
    goto done;
oom:
    moe_errf(err, "bpe: out of memory while learning merges");
done:
    for (size_t i = 0; i < S.np; i++) free(S.pairs[i].where);
    free(S.pairs);
    free(S.heap);
    moe_tok_pair_free(&S.map);
    free(touched);
    free(wcount); free(woff); free(wlen); free(wstamp); free(sym); free(ma); free(mb);
    return rc;
}

int moe_bpe_train(const char *const *texts, const size_t *lens, size_t n, uint32_t vocab_size,
                  moe_tokenizer **out, moe_err *err) {
    *out = NULL;
    moe_bpe_trainer *tr = moe_bpe_trainer_new(err);
    if (!tr) return -1;
    int rc = moe_bpe_trainer_add(tr, texts, lens, n, NULL, NULL, err);
    if (!rc) rc = moe_bpe_trainer_finish(tr, vocab_size, NULL, NULL, out, err);
    moe_bpe_trainer_free(tr);
    return rc;
}
