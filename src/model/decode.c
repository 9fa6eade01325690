/* decode.c — incremental decoding with a KV cache: a pass runs n new tokens
 * through every block (moe_block_forward, the forward training runs, given
 * the cache), attending to the cached keys / values of the earlier tokens,
 * and appends its own. The same pass is the prefill (n = prompt length) and
 * a decode step (n = 1).
 * Also the sampler and a UTF-8 helper for streaming output. */
#include "moe/model/decode.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moe/kernels/kernels.h"
#include "moe/data/tokenizer.h"

/* ---- the cache -------------------------------------------------------- */

int moe_decode_check(const moe_config *cfg, moe_err *err) {
    const char *why = NULL;
    if (moe_config_causal(cfg, &why)) return 0;
    /* the router is named by the ffn kind for layers that are their own
     * router (lory), else by the router key */
    const moe_ffn_kind *kind = moe_ffn_kind_find(cfg->ffn);
    int own = kind && kind->routed && !kind->uses_router;
    return moe_errf(err, "router '%s' is not causal, so the model cannot generate token by token: %s",
                    own ? cfg->ffn : cfg->router, why ? why : "a token's output depends on later tokens");
}

int moe_kv_cache_create(const moe_model *m, moe_kv_cache **out, moe_err *err) {
    const moe_config *cfg = &m->cfg;
    if (moe_decode_check(cfg, err)) return -1;
    moe_kv_cache *c = moe_calloc(1, sizeof *c, err);
    if (!c) return -1;
    c->n_layers = (size_t)cfg->n_layers;
    c->max_len = (size_t)cfg->max_seq_len;
    c->H = (size_t)cfg->n_heads;
    c->KV = (size_t)cfg->n_kv_heads;
    c->hd = (size_t)cfg->hidden / c->H;
    c->kvd = c->KV * c->hd;
    size_t kv_floats = c->n_layers * c->max_len * c->kvd;
    c->k = moe_malloc(kv_floats * sizeof(float), err);
    c->v = c->k ? moe_malloc(kv_floats * sizeof(float), err) : NULL;
    c->rope_cos = c->v ? moe_malloc(c->max_len * c->hd / 2 * sizeof(float), err) : NULL;
    c->rope_sin = c->rope_cos ? moe_malloc(c->max_len * c->hd / 2 * sizeof(float), err) : NULL;
    c->active_pairs = c->rope_sin ? moe_calloc(c->n_layers, sizeof(double), err) : NULL;
    c->routed_tokens = c->active_pairs ? moe_calloc(c->n_layers, sizeof(double), err) : NULL;
    c->n_experts = c->routed_tokens ? moe_calloc(c->n_layers, sizeof(int), err) : NULL;
    if (!c->n_experts) {
        moe_kv_cache_free(c);
        return moe_err_prefix(err, "KV cache of %zu layers x %zu positions x %zu",
                              c->n_layers, c->max_len, c->kvd);
    }
    moe_k_rope_tables(c->rope_cos, c->rope_sin, c->max_len, c->hd, cfg->rope_theta);
    *out = c;
    return 0;
}

void moe_kv_cache_free(moe_kv_cache *c) {
    if (!c) return;
    void *bufs[] = {c->k, c->v, c->rope_cos, c->rope_sin, c->active_pairs, c->routed_tokens,
                    c->n_experts, c->x, c->y, c->ln, c->q, c->att, c->rstd, c->scores,
                    c->tokens};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(c);
}

void moe_kv_cache_rewind(moe_kv_cache *c, size_t len) {
    if (len < c->len) c->len = len;
}

void moe_kv_cache_reset_stats(moe_kv_cache *c) {
    for (size_t l = 0; l < c->n_layers; l++) c->active_pairs[l] = c->routed_tokens[l] = 0.0;
}

/* Makes the work buffers hold a pass of n rows (grow-only). The scores get
 * room for n rows against the whole max_len, so that later steps of one row
 * never allocate. */
static int reserve(moe_kv_cache *c, size_t n, size_t D, moe_err *err) {
    if (n <= c->cap_rows) return 0;
    free(c->x); free(c->y); free(c->ln); free(c->q); free(c->att); free(c->rstd);
    free(c->scores); free(c->tokens);
    c->x = moe_malloc(n * D * sizeof(float), err);
    c->ln = moe_malloc(n * D * sizeof(float), err);
    c->q = moe_malloc(n * D * sizeof(float), err);
    c->att = moe_malloc(n * D * sizeof(float), err);
    c->y = moe_malloc(n * D * sizeof(float), err);
    c->rstd = moe_malloc(n * sizeof(float), err);
    c->scores = moe_malloc(c->H * n * c->max_len * sizeof(float), err);
    c->tokens = moe_malloc(n * sizeof(int), err);
    if (!c->x || !c->ln || !c->q || !c->att || !c->y || !c->rstd || !c->scores || !c->tokens) {
        c->cap_rows = 0;
        return moe_err_prefix(err, "decode buffers for %zu rows", n);
    }
    c->cap_rows = n;
    c->cap_scores = n * c->max_len;
    return 0;
}

/* ---- one pass ------------------------------------------------------------ */

/* Adds the routing of layer l's last forward (n rows) to the read-out. */
static void count_routing(moe_kv_cache *c, size_t l, const moe_ffn *f, size_t n) {
    if (!f->ops->routing) return;
    const float *g;
    size_t N, E;
    int routed = 0;
    for (int which = 0; f->ops->routing(f, which, &g, &N, &E) == 0; which++) {
        if (N != n) break;
        size_t active = 0;
        for (size_t i = 0; i < N * E; i++) active += g[i] != 0.0f;
        c->active_pairs[l] += (double)active;
        if (which == 0) c->n_experts[l] = (int)E;
        routed = 1;
    }
    if (routed) c->routed_tokens[l] += (double)n;
}

/* ids[n] at positions c->len.. : logits of every row (all_rows) or of the
 * last one into logits_out (NULL: none). */
static int decode_pass(moe_model *m, moe_kv_cache *c, const int *ids, size_t n,
                       float *logits_out, int all_rows, moe_err *err) {
    const moe_config *cfg = &m->cfg;
    size_t D = (size_t)cfg->hidden, V = (size_t)cfg->vocab_size;
    size_t p0 = c->len;
    float eps = (float)cfg->norm_eps;
    if (n == 0) return moe_errf(err, "decode: no tokens to run");
    if (p0 + n > c->max_len)
        return moe_errf(err, "context full: %zu cached + %zu new tokens exceed max_seq_len %zu",
                        p0, n, c->max_len);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= cfg->vocab_size)
            return moe_errf(err, "token id %d at position %zu is outside the vocabulary [0, %d)",
                            ids[i], p0 + i, cfg->vocab_size);
    if (reserve(c, n, D, err)) return -1;
    memcpy(c->tokens, ids, n * sizeof(int));
    moe_ffn_ctx ctx = {.tokens = c->tokens, .B = 1, .T = n, .step = m->step, .training = 0,
                       .loss_scale = 1.0f, .rs = &m->rs, .drop_top_expert = m->drop_top_expert,
                       .kc = m->kc};

    /* x[n,D] = embed[ids]; each block reads the residual stream from x and
     * leaves it in y (attention updates x in place), then they swap */
    float *x = c->x, *y = c->y;
    for (size_t i = 0; i < n; i++)
        memcpy(x + i * D, m->embed + (size_t)ids[i] * D, D * sizeof(float));
    block_acts a = {.ln1 = c->ln, .rstd1 = c->rstd, .q = c->q, .attn_out = c->att,
                    .ln2 = c->ln, .rstd2 = c->rstd};
    for (size_t l = 0; l < c->n_layers; l++) {
        if (moe_block_forward(m, (int)l, x, x, y, &a, c, &ctx, err)) return -1;
        count_routing(c, l, m->blocks[l].ffn, n);
        float *t = x;
        x = y;
        y = t;
    }
    c->len = p0 + n;
    if (!logits_out) return 0;
    size_t first = all_rows ? 0 : n - 1, rows = n - first;
    moe_k_rmsnorm_forward(c->ln, c->rstd, x + first * D, m->final_norm, rows, D, eps);
    moe_k_matmul_forward(m->kc, logits_out, c->ln, m->lm_head, rows, D, V, 0.0f);
    return 0;
}

int moe_decode_prefill(moe_model *m, moe_kv_cache *c, const int *ids, size_t n,
                       float *logits_out, moe_err *err) {
    return decode_pass(m, c, ids, n, logits_out, 0, err);
}

int moe_decode_prefill_all(moe_model *m, moe_kv_cache *c, const int *ids, size_t n,
                           float *logits_out, moe_err *err) {
    return decode_pass(m, c, ids, n, logits_out, 1, err);
}

int moe_decode_step(moe_model *m, moe_kv_cache *c, int id, float *logits_out, moe_err *err) {
    return decode_pass(m, c, &id, 1, logits_out, 0, err);
}

/* ---- sampling ------------------------------------------------------------ */

int moe_sampler_init(moe_sampler *s, size_t V, double temperature, long top_k,
                     double top_p, moe_err *err) {
    memset(s, 0, sizeof *s);
    if (V == 0) return moe_errf(err, "sampler: empty vocabulary");
    if (!(temperature >= 0)) return moe_errf(err, "sampler: temperature %g must be >= 0", temperature);
    if (top_k < 0) return moe_errf(err, "sampler: top_k %ld must be >= 0", top_k);
    if (!(top_p > 0 && top_p <= 1)) return moe_errf(err, "sampler: top_p %g must be in (0, 1]", top_p);
    s->temperature = temperature;
    s->top_k = top_k;
    s->top_p = top_p;
    s->V = V;
    s->prob = moe_malloc(V * sizeof(float), err);
    s->cand = s->prob ? moe_malloc(V * sizeof(moe_sample_cand), err) : NULL;
    if (!s->cand) { moe_sampler_free(s); return -1; }
    return 0;
}

void moe_sampler_free(moe_sampler *s) {
    free(s->prob);
    free(s->cand);
    s->prob = NULL;
    s->cand = NULL;
}

/* a ranks before b: more probable, ties to the lower id (a total order, so
 * the result does not depend on the sorting algorithm) */
static inline int ranks_before(moe_sample_cand a, moe_sample_cand b) {
    return a.p > b.p || (a.p == b.p && a.id < b.id);
}
static int cmp_cand(const void *pa, const void *pb) {
    moe_sample_cand a = *(const moe_sample_cand *)pa, b = *(const moe_sample_cand *)pb;
    return ranks_before(a, b) ? -1 : ranks_before(b, a) ? 1 : 0;
}
/* heap whose root is the candidate ranked last */
static void heap_down(moe_sample_cand *h, size_t n, size_t i) {
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && ranks_before(h[w], h[l])) w = l;
        if (r < n && ranks_before(h[w], h[r])) w = r;
        if (w == i) return;
        moe_sample_cand t = h[i]; h[i] = h[w]; h[w] = t;
        i = w;
    }
}

int moe_sample(moe_sampler *s, const float *logits, moe_rng *rng) {
    size_t V = s->V, best = 0;
    for (size_t i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
    if (s->temperature <= 0 || s->top_k == 1) return (int)best;
    /* p_i ∝ exp((l_i - l_max) / T) */
    double total = 0.0;
    float mx = logits[best], inv_t = (float)(1.0 / s->temperature);
    for (size_t i = 0; i < V; i++) {
        s->prob[i] = expf((logits[i] - mx) * inv_t);
        total += s->prob[i];
    }
    int use_k = s->top_k > 0 && (size_t)s->top_k < V, use_p = s->top_p < 1.0;
    if (!use_k && !use_p) {
        double u = moe_rng_uniform(rng) * total;
        for (size_t i = 0; i < V; i++) {
            u -= s->prob[i];
            if (u < 0) return (int)i;
        }
        return (int)best;
    }
    moe_sample_cand *c = s->cand;
    size_t n = 0;
    double mass;  /* of the distribution top-p applies to */
    if (use_k) {  /* the k most probable: a heap of k, then sorted */
        size_t k = (size_t)s->top_k;
        for (size_t i = 0; i < k; i++) c[i] = (moe_sample_cand){s->prob[i], (int)i};
        for (size_t i = k / 2; i-- > 0;) heap_down(c, k, i);
        for (size_t i = k; i < V; i++) {
            moe_sample_cand x = {s->prob[i], (int)i};
            if (ranks_before(x, c[0])) { c[0] = x; heap_down(c, k, 0); }
        }
        n = k;
        mass = 0.0;
        for (size_t r = 0; r < n; r++) mass += c[r].p;
    } else {
        /* The ids with prob <= cut hold at most V * cut = (1 - p) of the
         * mass, so the ids above it already reach p: the nucleus is among
         * them, and only they need sorting. */
        double cut = (1.0 - s->top_p) / (double)V * total;
        for (size_t i = 0; i < V; i++)
            if (s->prob[i] > cut || i == best) c[n++] = (moe_sample_cand){s->prob[i], (int)i};
        mass = total;
    }
    qsort(c, n, sizeof *c, cmp_cand);
    double kept = mass;
    if (use_p) {  /* the smallest prefix whose mass reaches p */
        double target = s->top_p * mass, cum = 0.0;
        size_t r = 0;
        while (r < n) { cum += c[r++].p; if (cum >= target) break; }
        n = r;
        kept = cum;
    }
    double u = moe_rng_uniform(rng) * kept;
    for (size_t r = 0; r < n; r++) {
        u -= c[r].p;
        if (u < 0) return c[r].id;
    }
    return c[n - 1].id;
}

/* ---- UTF-8 ----------------------------------------------------------- */

size_t moe_utf8_complete(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    /* look back at most 3 bytes for the lead byte of the last sequence */
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        unsigned char c = u[n - back];
        if ((c & 0xC0) == 0x80) continue;          /* continuation byte: keep looking */
        size_t need = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 && c < 0xF0 ? 3
                    : c >= 0xC2 && c < 0xE0 ? 2 : 1;
        return need > back ? n - back : n;          /* incomplete: hold it back */
    }
    return n;
}

int moe_sample_holes(const moe_tokenizer *t, uint32_t **ids, size_t *n, moe_err *err) {
    uint32_t tv = moe_tokenizer_vocab_size(t);
    size_t len;
    *ids = NULL;
    *n = 0;
    for (uint32_t id = 0; id < tv; id++) {
        if (moe_tokenizer_token(t, id, &len)) continue;
        uint32_t *u = realloc(*ids, (*n + 1) * sizeof *u);
        if (!u) { free(*ids); *ids = NULL; *n = 0; return moe_errf(err, "out of memory"); }
        *ids = u;
        (*ids)[(*n)++] = id;
    }
    return 0;
}
