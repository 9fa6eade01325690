/* relu.c — the ReLU router of ReMoE (METHOD §2.2): gates = ReLU(logits), so
 * routing is fully differentiable and the number of active experts per
 * token varies. Sparsity is steered by the load-balanced L1 term
 *     L_reg = (1/T) sum_t sum_e f_e g[t,e],  f_e = E/(k T) sum_t 1{g[t,e] > 0}
 * (f a constant; f = 1 for plain L1) weighted by the adaptive lambda, which
 * moe_relu_lambda_next() updates once per optimiser step. */
#include <stdlib.h>
#include <string.h>

#include "moe/router.h"

typedef struct relu {
    double *f;          /* [E+1] load-balancing weights of the last route; then
                         * the global batch's token count (== N in one process) */
    double reg;         /* L_reg of the last route (unweighted) */
    double active;      /* active pairs of the last route */
    size_t N;
    float lambda;       /* lambda used by the last route */
} relu;

float moe_relu_lambda_next(float lambda, double sparsity, double target, double alpha) {
    return sparsity < target ? (float)(lambda * alpha) : (float)(lambda / alpha);
}

static int relu_route(moe_router *r, float *gates, const float *logits, size_t N,
                      const moe_ffn_ctx *ctx, double *aux, moe_err *err) {
    relu *s = r->impl;
    size_t E = r->E;
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < N * E; i++) gates[i] = logits[i] > 0.0f ? logits[i] : 0.0f;
    if (ctx->drop_top_expert)  /* robustness eval: each token loses its largest gate */
        for (size_t t = 0; t < N; t++) {
            size_t best = 0;
            for (size_t e = 1; e < E; e++) if (gates[t * E + e] > gates[t * E + best]) best = e;
            gates[t * E + best] = 0.0f;
        }
    memset(s->f, 0, E * sizeof(double));
    for (size_t t = 0; t < N; t++)
        for (size_t e = 0; e < E; e++) s->f[e] += gates[t * E + e] > 0.0f;
    s->active = 0.0;
    for (size_t e = 0; e < E; e++) s->active += s->f[e];
    /* across ranks f and T are the global batch's: each rank's L_reg is its
     * share of the single-process one (the shares add up) */
    s->f[E] = (double)N;
    if (moe_router_global(ctx, s->f, E + 1, err)) return -1;
    double Ng = s->f[E];
    for (size_t e = 0; e < E; e++)
        s->f[e] = r->cfg->l1_load_balance ? (double)E / ((double)r->k * Ng) * s->f[e] : 1.0;
    double reg = 0.0;
    for (size_t t = 0; t < N; t++)
        for (size_t e = 0; e < E; e++) reg += s->f[e] * gates[t * E + e];
    s->reg = reg / Ng;
    s->N = (size_t)Ng;
    s->lambda = ctx->rs ? ctx->rs->lambda : (float)r->cfg->relu_lambda0;
    /* the layer adds the active pairs to ctx->rs (the step's sparsity) */
    *aux = ctx->training ? (double)s->lambda * s->reg : 0.0;
    return 0;
}

static int relu_backward(moe_router *r, float *dlogits, const float *dgates,
                         const float *logits, const float *gates, size_t N,
                         const moe_ffn_ctx *ctx, moe_err *err) {
    (void)gates; (void)err;
    relu *s = r->impl;
    size_t E = r->E;
    double reg_scale = ctx->training ? ctx->loss_scale * (double)s->lambda / (double)s->N : 0.0;
    #pragma omp parallel for schedule(static)
    for (size_t t = 0; t < N; t++)
        for (size_t e = 0; e < E; e++) {
            size_t i = t * E + e;
            dlogits[i] = logits[i] > 0.0f ? (float)(dgates[i] + reg_scale * s->f[e]) : 0.0f;
        }
    return 0;
}

static int relu_stats(const moe_router *r, moe_buf *out) {
    const relu *s = r->impl;
    return moe_buf_printf(out, ", \"reg_loss\": %.9g", s->reg);
}

static void relu_destroy(moe_router *r) {
    relu *s = r->impl;
    if (s) { free(s->f); free(s); }
}

static const moe_router_ops RELU_OPS = {
    .name = "relu", .route = relu_route, .backward = relu_backward,
    .stats_json = relu_stats, .destroy = relu_destroy,
};

int moe_router_relu_create(const moe_config *cfg, moe_router *r, moe_err *err) {
    (void)cfg;
    relu *s = moe_calloc(1, sizeof *s, err);
    if (!s) return -1;
    s->f = moe_calloc(r->E + 1, sizeof(double), err);
    if (!s->f) { free(s); return -1; }
    r->ops = &RELU_OPS;
    r->impl = s;
    return 0;
}
