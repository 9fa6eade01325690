/* cartesian.c — the CartesianMoE layer (Su et al., NAACL 2025; METHOD §2.3):
 * two sequential MoE sub-layers A and B, each with N routed sub-experts of
 * intermediate size ffn_dim/2 (half a full expert), one shared sub-expert,
 * its own softmax top-k router (renormalised when k > 1, TopK balance loss
 * with c_aux) and its own 2-way shared-mix gate with bias:
 *     x1 = RMSNorm_A(h)   (the block's pre-FFN norm: the slot's input x)
 *     a  = MoE_A(x1);  h1 = h + a;  x2 = RMSNorm_B(h1);  b = MoE_B(x2)
 *     out = h1 + b,  so the slot returns y = a + b and the block adds h.
 * h is ctx->residual; backward adds the h-gradient of the RMSNorm_B path to
 * ctx->dresidual. Each sub-layer is an ordinary MoE layer (layer.c) built
 * from a copy of the config: ffn_dim/2, router topk, norm_topk_prob,
 * one shared expert, shared_gate. Parameters:
 *     mlp.layer_a.*  (router [E, D], experts, shared expert, shared_gate)
 *     mlp.norm_b.weight [D]
 *     mlp.layer_b.*  likewise */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moe/kernels/kernels.h"
#include "moe/moe/router.h"

typedef struct cartesian {
    moe_config sub_cfg;      /* the sub-layers' config (they keep a pointer to it) */
    moe_ffn *A, *B;
    size_t D, cap;
    float *wn, *dwn;         /* RMSNorm_B weight [D] */
    float *h1, *x2, *b;      /* [N, D] */
    float *rstd;             /* [N] */
    float *dx2, *da;         /* [N, D] backward scratch */
} cartesian;

static void cart_layout(moe_ffn *f, moe_layout *L, const char *prefix) {
    cartesian *c = f->impl;
    char sub[MOE_NAME_MAX];
    snprintf(sub, sizeof sub, "%s.layer_a", prefix);
    c->A->ops->layout(c->A, L, sub);
    c->wn = moe_layout_add(L, &c->dwn, 0, 1, (int64_t[]){(int64_t)c->D}, "%s.norm_b.weight", prefix);
    snprintf(sub, sizeof sub, "%s.layer_b", prefix);
    c->B->ops->layout(c->B, L, sub);
}

static int cart_reserve(cartesian *c, size_t N, moe_err *err) {
    if (N <= c->cap) return 0;
    float **bufs[] = {&c->h1, &c->x2, &c->b, &c->dx2, &c->da};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        free(*bufs[i]);
        *bufs[i] = moe_malloc(N * c->D * sizeof(float), err);
        if (!*bufs[i]) { c->cap = 0; return -1; }
    }
    free(c->rstd);
    c->rstd = moe_malloc(N * sizeof(float), err);
    if (!c->rstd) { c->cap = 0; return -1; }
    c->cap = N;
    return 0;
}

static int cart_forward(moe_ffn *f, float *y, const float *x, size_t N,
                        const moe_ffn_ctx *ctx, moe_err *err) {
    cartesian *c = f->impl;
    size_t D = c->D;
    if (!ctx->residual)
        return moe_errf(err, "cartesian layer: needs the block's residual stream (ctx->residual)");
    if (cart_reserve(c, N, err)) return -1;
    moe_ffn_ctx sub = *ctx;
    sub.residual = NULL;
    sub.dresidual = NULL;
    /* a[N,D] = MoE_A(x), written into y; h1 = h + a */
    if (c->A->ops->forward(c->A, y, x, N, &sub, err)) return moe_err_prefix(err, "sub-layer A");
    for (size_t i = 0; i < N * D; i++) c->h1[i] = ctx->residual[i] + y[i];
    moe_k_rmsnorm_forward(c->x2, c->rstd, c->h1, c->wn, N, D, (float)f->cfg->norm_eps);
    moe_prof_mark(ctx->prof, PROF_NORMS);
    if (c->B->ops->forward(c->B, c->b, c->x2, N, &sub, err)) return moe_err_prefix(err, "sub-layer B");
    moe_k_add(y, c->b, N * D);  /* y = a + b */
    f->aux_loss = c->A->aux_loss + c->B->aux_loss;
    return 0;
}

static int cart_backward(moe_ffn *f, float *dx, const float *dy, const float *x,
                         size_t N, const moe_ffn_ctx *ctx, moe_err *err) {
    cartesian *c = f->impl;
    size_t D = c->D;
    if (!ctx->dresidual)
        return moe_errf(err, "cartesian layer: needs the residual gradient (ctx->dresidual)");
    moe_ffn_ctx sub = *ctx;
    sub.residual = NULL;
    sub.dresidual = NULL;
    /* out = h1 + b: db = dy; through B and its norm to dh1 (norm path) */
    if (c->B->ops->backward(c->B, c->dx2, dy, c->x2, N, &sub, err)) return moe_err_prefix(err, "sub-layer B");
    moe_k_rmsnorm_backward(c->da, c->dwn, c->dx2, c->h1, c->wn, c->rstd, N, D, 0);
    moe_prof_mark(ctx->prof, PROF_NORMS);
    /* a feeds out directly and through h1: da = dy + dh1_norm. Then h gets
     * dh1_norm (its direct dy is the block's residual add); dresidual may
     * alias dy, so it is written only after dy's last read (da). */
    float *dh1n = c->dx2;
    memcpy(dh1n, c->da, N * D * sizeof(float));
    moe_k_add(c->da, dy, N * D);
    moe_k_add(ctx->dresidual, dh1n, N * D);
    if (c->A->ops->backward(c->A, dx, c->da, x, N, &sub, err)) return moe_err_prefix(err, "sub-layer A");
    return 0;
}

static int cart_stats(const moe_ffn *f, moe_buf *out) {
    const cartesian *c = f->impl;
    moe_buf sa = {0}, sb = {0};
    int rc = c->A->ops->stats_json(c->A, &sa) | c->B->ops->stats_json(c->B, &sb);
    /* top level: the layer's sparsity over both sub-layers, the summed aux
     * loss, tokens_per_expert of A then B (2E entries); then each sub-layer */
    const float *ga, *gb;
    size_t N = 0, E = 0;
    double active = 0.0;
    if (!c->A->ops->routing(c->A, 0, &ga, &N, &E) && !c->B->ops->routing(c->B, 0, &gb, &N, &E))
        for (size_t i = 0; i < N * E; i++) active += (ga[i] != 0.0f) + (gb[i] != 0.0f);
    double total = 2.0 * (double)N * (double)E;
    rc |= moe_buf_printf(out, "{\"layer\": %d, \"router\": \"cartesian\", \"sparsity\": %.9g, "
                         "\"active_per_token\": %.9g, \"aux_loss\": %.9g, \"tokens_per_expert\": [",
                         f->layer, total > 0 ? 1.0 - active / total : 0.0, N ? active / (double)N : 0.0,
                         f->aux_loss);
    for (int s = 0; s < 2 && N; s++) {
        const float *g = s ? gb : ga;
        for (size_t e = 0; e < E; e++) {
            size_t n = 0;
            for (size_t t = 0; t < N; t++) n += g[t * E + e] != 0.0f;
            rc |= moe_buf_printf(out, "%s%zu", s || e ? ", " : "", n);
        }
    }
    rc |= moe_buf_printf(out, "], \"sub_layers\": [%s, %s]}", sa.data ? sa.data : "{}", sb.data ? sb.data : "{}");
    moe_buf_free(&sa);
    moe_buf_free(&sb);
    return rc ? -1 : 0;
}

static int cart_routing(const moe_ffn *f, int which, const float **gates, size_t *N, size_t *E) {
    const cartesian *c = f->impl;
    if (which == 0) return c->A->ops->routing(c->A, 0, gates, N, E);
    if (which == 1) return c->B->ops->routing(c->B, 0, gates, N, E);
    return -1;
}

static moe_placement *cart_placement(moe_ffn *f, int which) {
    cartesian *c = f->impl;
    moe_ffn *sub = which == 0 ? c->A : which == 1 ? c->B : NULL;
    return sub ? sub->ops->placement(sub, 0) : NULL;
}

static void cart_destroy(moe_ffn *f) {
    cartesian *c = f->impl;
    if (c) {
        moe_ffn_destroy(c->A);
        moe_ffn_destroy(c->B);
        free(c->h1); free(c->x2); free(c->b); free(c->rstd); free(c->dx2); free(c->da);
        free(c);
    }
    free(f);
}

static const moe_ffn_ops CARTESIAN_OPS = {
    .kind = "cartesian",
    .layout = cart_layout,
    .forward = cart_forward,
    .backward = cart_backward,
    .stats_json = cart_stats,
    .routing = cart_routing,
    .placement = cart_placement,
    .destroy = cart_destroy,
};

int moe_ffn_cartesian_create(const moe_config *cfg, int layer, moe_ffn **out, moe_err *err) {
    moe_ffn *f = moe_calloc(1, sizeof *f, err);
    cartesian *c = f ? moe_calloc(1, sizeof *c, err) : NULL;
    if (!c) { free(f); return -1; }
    f->ops = &CARTESIAN_OPS;
    f->cfg = cfg;
    f->layer = layer;
    f->impl = c;
    c->D = (size_t)cfg->hidden;
    c->sub_cfg = *cfg;
    strcpy(c->sub_cfg.ffn, "moe");
    strcpy(c->sub_cfg.router, "topk");
    c->sub_cfg.ffn_dim = cfg->ffn_dim / 2;
    c->sub_cfg.norm_topk_prob = MOE_RENORM_IF_SEVERAL;
    c->sub_cfg.n_shared_experts = 1;
    c->sub_cfg.shared_gate = 1;
    if (moe_ffn_moe_create(&c->sub_cfg, layer, &c->A, err) ||
        moe_ffn_moe_create(&c->sub_cfg, layer, &c->B, err)) {
        cart_destroy(f);
        return -1;
    }
    *out = f;
    return 0;
}

/* Both sub-layers route with TopK; their experts are half the size. */
static int cart_validate(const moe_config *c, moe_err *err) {
    if (strcmp(c->router, "topk"))
        return moe_errf(err, "config: key 'router': ffn \"cartesian\" routes each sub-layer with "
                        "\"topk\", found \"%s\"", c->router);
    if (c->ffn_dim % (2 * c->granularity))
        return moe_errf(err, "config: key 'ffn_dim': cartesian sub-experts have ffn_dim/(2 G); "
                        "%d is not divisible by %d", c->ffn_dim, 2 * c->granularity);
    return 0;
}

const moe_ffn_kind moe_ffn_kind_cartesian = {
    .name = "cartesian", .create = moe_ffn_cartesian_create, .routed = 1, .uses_router = 1,
    .no_export = "CartesianMoE (ffn \"cartesian\": two routed sub-layers in sequence with a norm "
                 "between them and gated shared sub-experts)",
    .expert_parallel = 1, .validate = cart_validate,
};
