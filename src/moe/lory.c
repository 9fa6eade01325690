/* lory.c — Lory (Zhong et al. 2024; METHOD §2.4): fully differentiable
 * expert merging at segment level. Each sequence is cut into segments of
 * lory_segment tokens (the last may be shorter). For segment s:
 *     mbar = mean of x over segment s-1      [D]
 *     w    = softmax(Wr mbar)                [E]
 *     W    = sum_e w_e W_e  (W1, W3 and W2 each: one merged SwiGLU FFN)
 *     y_t  = W2( silu(W1 x_t) * W3 x_t )     for t in segment s
 * The first segment has no predecessor: it is routed by the mean of its own
 * inputs with the gradient stopped (w is a constant there: no gradient to
 * the router or to x through the routing). That peeks at later tokens of
 * the first segment, so the layer is not causal (moe_config_causal).
 * Gradient: dW_e += w_e dW; dw_e = <dW, W_e> summed over the three
 * matrices; softmax backward to the logits; dWr += dlogits mbar^T and
 * dx[t in s-1] += Wr^T dlogits / |s-1|. No auxiliary loss.
 * Parameters as the MoE layer: mlp.router.weight [E, D],
 * mlp.experts.{gate,up}_proj.weight [E, F, D], down_proj [E, D, F]. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moe/kernels/kernels.h"
#include "moe/moe/router.h"

typedef struct lory {
    size_t D, F, E, seg;
    float *wr, *dwr, *w1, *w3, *w2, *dw1, *dw3, *dw2;
    /* the last forward */
    size_t N, B, T, nseg, cap_rows, cap_segs;
    float *wts;               /* [B*nseg, E] merge weights */
    float *mean;              /* [B*nseg, D] routing input of each segment */
    float *dmean;             /* [B*nseg, D] backward: gradient of each mean */
    float *gates;             /* [N, E] each token's merge weights (routing read-out) */
    float *h1, *h3, *a, *dh1, *dh3;  /* [N, F] */
    float *m1, *m3, *m2;      /* merged weights [F, D], [F, D], [D, F] */
    float *g1, *g3, *g2;      /* their gradients */
} lory;

static void lory_layout(moe_ffn *f, moe_layout *L, const char *prefix) {
    lory *m = f->impl;
    int64_t E = (int64_t)m->E, D = (int64_t)m->D, F = (int64_t)m->F;
    float std = (float)f->cfg->init_std, out_std = (float)(f->cfg->init_std / sqrt(2.0 * f->cfg->n_layers));
    m->wr = moe_layout_add(L, &m->dwr, std, 2, (int64_t[]){E, D}, "%s.router.weight", prefix);
    m->w1 = moe_layout_add(L, &m->dw1, std, 3, (int64_t[]){E, F, D}, "%s.experts.gate_proj.weight", prefix);
    m->w3 = moe_layout_add(L, &m->dw3, std, 3, (int64_t[]){E, F, D}, "%s.experts.up_proj.weight", prefix);
    m->w2 = moe_layout_add(L, &m->dw2, out_std, 3, (int64_t[]){E, D, F}, "%s.experts.down_proj.weight", prefix);
}

static int regrow(float **p, size_t n, moe_err *err) {
    free(*p);
    *p = moe_malloc(n * sizeof(float), err);
    return *p ? 0 : -1;
}

static int lory_reserve(lory *m, size_t N, size_t segs, moe_err *err) {
    if (N > m->cap_rows) {
        m->cap_rows = 0;
        float **bufs[] = {&m->h1, &m->h3, &m->a, &m->dh1, &m->dh3};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            if (regrow(bufs[i], N * m->F, err)) return -1;
        if (regrow(&m->gates, N * m->E, err)) return -1;
        m->cap_rows = N;
    }
    if (segs > m->cap_segs) {
        m->cap_segs = 0;
        if (regrow(&m->wts, segs * m->E, err) || regrow(&m->mean, segs * m->D, err) ||
            regrow(&m->dmean, segs * m->D, err))
            return -1;
        m->cap_segs = segs;
    }
    return 0;
}

/* Rows [r0, r0+n) of segment s of sequence b. */
static void seg_rows(const lory *m, size_t b, size_t s, size_t *r0, size_t *n) {
    size_t start = s * m->seg, end = start + m->seg < m->T ? start + m->seg : m->T;
    *r0 = b * m->T + start;
    *n = end - start;
}

/* merged[rows, cols] = sum_e w_e W[e] */
static void merge(float *out, const float *W, const float *w, size_t E, size_t size) {
    memset(out, 0, size * sizeof(float));
    for (size_t e = 0; e < E; e++)
        for (size_t i = 0; i < size; i++) out[i] += w[e] * W[e * size + i];
}

static int lory_forward(moe_ffn *f, float *y, const float *x, size_t N,
                        const moe_ffn_ctx *ctx, moe_err *err) {
    lory *m = f->impl;
    size_t D = m->D, F = m->F, E = m->E;
    m->T = ctx->T && ctx->B * ctx->T == N ? ctx->T : N;
    m->B = N / m->T;
    m->nseg = (m->T + m->seg - 1) / m->seg;
    m->N = N;
    if (lory_reserve(m, N, m->B * m->nseg, err)) return -1;
    /* every segment's mean and merge weights first */
    for (size_t b = 0; b < m->B; b++)
        for (size_t s = 0; s < m->nseg; s++) {
            size_t r0, n, q = b * m->nseg + s;
            seg_rows(m, b, s ? s - 1 : 0, &r0, &n);
            float *mu = m->mean + q * D, logits[E];
            for (size_t d = 0; d < D; d++) {
                double acc = 0.0;
                for (size_t r = r0; r < r0 + n; r++) acc += x[r * D + d];
                mu[d] = (float)(acc / (double)n);
            }
            moe_k_matmul_forward(NULL, logits, mu, m->wr, 1, D, E, 0.0f);
            moe_router_softmax(m->wts + q * E, logits, E);
        }
    /* one merged SwiGLU FFN per segment */
    for (size_t q = 0; q < m->B * m->nseg; q++) {
        size_t r0, n;
        seg_rows(m, q / m->nseg, q % m->nseg, &r0, &n);
        const float *w = m->wts + q * E;
        merge(m->m1, m->w1, w, E, F * D);
        merge(m->m3, m->w3, w, E, F * D);
        merge(m->m2, m->w2, w, E, D * F);
        moe_k_matmul_forward(ctx->kc, m->h1 + r0 * F, x + r0 * D, m->m1, n, D, F, 0.0f);
        moe_k_matmul_forward(ctx->kc, m->h3 + r0 * F, x + r0 * D, m->m3, n, D, F, 0.0f);
        moe_k_swiglu_forward(m->a + r0 * F, m->h1 + r0 * F, m->h3 + r0 * F, n * F);
        moe_k_matmul_forward(ctx->kc, y + r0 * D, m->a + r0 * F, m->m2, n, F, D, 0.0f);
        for (size_t r = r0; r < r0 + n; r++) memcpy(m->gates + r * E, w, E * sizeof(float));
    }
    if (ctx->training && ctx->rs && !ctx->prepass) {  /* dense merge: every pair is active */
        ctx->rs->active_pairs += (double)N * (double)E;
        ctx->rs->total_pairs += (double)N * (double)E;
    }
    f->aux_loss = 0.0;
    return 0;
}

static double dot(const float *a, const float *b, size_t n) {
    double acc = 0.0;
    for (size_t i = 0; i < n; i++) acc += (double)a[i] * b[i];
    return acc;
}

static int lory_backward(moe_ffn *f, float *dx, const float *dy, const float *x,
                         size_t N, const moe_ffn_ctx *ctx, moe_err *err) {
    (void)err; (void)N;
    lory *m = f->impl;
    size_t D = m->D, F = m->F, E = m->E, FD = F * D;
    for (size_t q = 0; q < m->B * m->nseg; q++) {
        size_t r0, n, s = q % m->nseg;
        seg_rows(m, q / m->nseg, s, &r0, &n);
        const float *w = m->wts + q * E;
        merge(m->m1, m->w1, w, E, FD);
        merge(m->m3, m->w3, w, E, FD);
        merge(m->m2, m->w2, w, E, FD);
        memset(m->g1, 0, FD * sizeof(float));
        memset(m->g3, 0, FD * sizeof(float));
        memset(m->g2, 0, FD * sizeof(float));
        float *da = m->dh1 + r0 * F;  /* consumed by swiglu backward before dh1 is written */
        moe_k_matmul_backward(ctx->kc, da, m->g2, dy + r0 * D, m->a + r0 * F, m->m2, n, F, D, 0);
        moe_k_swiglu_backward(m->dh1 + r0 * F, m->dh3 + r0 * F, da, m->h1 + r0 * F, m->h3 + r0 * F, n * F);
        moe_k_matmul_backward(ctx->kc, dx + r0 * D, m->g1, m->dh1 + r0 * F, x + r0 * D, m->m1, n, D, F, 0);
        moe_k_matmul_backward(ctx->kc, dx + r0 * D, m->g3, m->dh3 + r0 * F, x + r0 * D, m->m3, n, D, F, 1);
        /* to the experts and the merge weights */
        double dw[E], wdw = 0.0;
        for (size_t e = 0; e < E; e++) {
            dw[e] = dot(m->g1, m->w1 + e * FD, FD) + dot(m->g3, m->w3 + e * FD, FD) +
                    dot(m->g2, m->w2 + e * FD, FD);
            wdw += w[e] * dw[e];
            for (size_t i = 0; i < FD; i++) {
                m->dw1[e * FD + i] += w[e] * m->g1[i];
                m->dw3[e * FD + i] += w[e] * m->g3[i];
                m->dw2[e * FD + i] += w[e] * m->g2[i];
            }
        }
        float *dmu = m->dmean + q * D;
        memset(dmu, 0, D * sizeof(float));
        if (s == 0) continue;  /* the first segment's routing is a constant */
        float dl[E];
        for (size_t e = 0; e < E; e++) dl[e] = (float)(w[e] * (dw[e] - wdw));
        moe_k_matmul_backward(NULL, dmu, m->dwr, dl, m->mean + q * D, m->wr, 1, D, E, 0);
    }
    /* the means: segment s-1's rows get dmean(s) / |s-1| */
    for (size_t q = 0; q < m->B * m->nseg; q++) {
        size_t r0, n, s = q % m->nseg;
        if (s == 0) continue;
        seg_rows(m, q / m->nseg, s - 1, &r0, &n);
        for (size_t r = r0; r < r0 + n; r++)
            for (size_t d = 0; d < D; d++) dx[r * D + d] += m->dmean[q * D + d] / (float)n;
    }
    return 0;
}

static int lory_stats(const moe_ffn *f, moe_buf *out) {
    const lory *m = f->impl;
    int rc = moe_buf_printf(out, "{\"layer\": %d, \"router\": \"lory\", \"sparsity\": 0, "
                            "\"active_per_token\": %zu, \"aux_loss\": 0, \"segments\": %zu, "
                            "\"tokens_per_expert\": [", f->layer, m->E, m->B * m->nseg);
    for (size_t e = 0; e < m->E; e++) rc |= moe_buf_printf(out, "%s%zu", e ? ", " : "", m->N);
    rc |= moe_buf_printf(out, "], \"expert_weight\": [");
    for (size_t e = 0; e < m->E; e++) {
        double acc = 0.0;
        for (size_t q = 0; q < m->B * m->nseg; q++) acc += m->wts[q * m->E + e];
        rc |= moe_buf_printf(out, "%s%.6g", e ? ", " : "", m->nseg ? acc / (double)(m->B * m->nseg) : 0.0);
    }
    rc |= moe_buf_printf(out, "]}");
    return rc ? -1 : 0;
}

static int lory_routing(const moe_ffn *f, int which, const float **gates, size_t *N, size_t *E) {
    const lory *m = f->impl;
    if (which != 0 || !m->gates) return -1;
    *gates = m->gates;
    *N = m->N;
    *E = m->E;
    return 0;
}

static void lory_destroy(moe_ffn *f) {
    lory *m = f->impl;
    if (m) {
        float *bufs[] = {m->wts, m->mean, m->dmean, m->gates, m->h1, m->h3, m->a, m->dh1, m->dh3,
                         m->m1, m->m3, m->m2, m->g1, m->g3, m->g2};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
        free(m);
    }
    free(f);
}

static const moe_ffn_ops LORY_OPS = {
    .kind = "lory",
    .layout = lory_layout,
    .forward = lory_forward,
    .backward = lory_backward,
    .stats_json = lory_stats,
    .routing = lory_routing,
    .destroy = lory_destroy,
};

int moe_ffn_lory_create(const moe_config *cfg, int layer, moe_ffn **out, moe_err *err) {
    moe_ffn *f = moe_calloc(1, sizeof *f, err);
    lory *m = f ? moe_calloc(1, sizeof *m, err) : NULL;
    if (!m) { free(f); return -1; }
    f->ops = &LORY_OPS;
    f->cfg = cfg;
    f->layer = layer;
    f->impl = m;
    m->D = (size_t)cfg->hidden;
    m->F = (size_t)cfg->ffn_dim;
    m->E = (size_t)cfg->n_experts;
    m->seg = (size_t)cfg->lory_segment;
    size_t FD = m->F * m->D;
    float **bufs[] = {&m->m1, &m->m3, &m->m2, &m->g1, &m->g3, &m->g2};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (regrow(bufs[i], FD, err)) { lory_destroy(f); return -1; }
    *out = f;
    return 0;
}

/* All E experts merge into one FFN per segment: a token computes as much
 * as with one expert. */
static double lory_active_share(const moe_config *c) {
    return 1.0 / (double)c->n_experts;
}

static int lory_validate(const moe_config *c, moe_err *err) {
    if (c->granularity != 1)
        return moe_errf(err, "config: key 'granularity': ffn \"lory\" merges whole experts: needs 1");
    return 0;
}

const moe_ffn_kind moe_ffn_kind_lory = {
    .name = "lory", .create = moe_ffn_lory_create, .routed = 1,
    .not_causal = "Lory merges experts per segment from the previous segment's mean; not implemented "
                  "for decoding",
    .no_export = "Lory (ffn \"lory\": experts merged into one FFN per segment, routed by the "
                 "previous segment)",
    .merges_experts = 1, .active_share = lory_active_share, .validate = lory_validate,
};
