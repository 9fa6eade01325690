/* relu.c — the ReLU router of ReMoE (METHOD §2.2): gates = ReLU(logits), so
 * routing is fully differentiable and the number of active experts per
 * token varies. Sparsity is steered by the load-balanced L1 term
 *     L_reg = (1/T) sum_t sum_e f_e g[t,e],  f_e = E/(k T) sum_t 1{g[t,e] > 0}
 * (f a constant; f = 1 for plain L1) weighted by the adaptive lambda, which
 * moe_relu_lambda_next() updates once per optimiser step: the model's one
 * lambda from the mean sparsity over layers (the paper), or with
 * relu_lambda_per_layer this router's own, from this layer's sparsity of the
 * step (its training routes over the micro-batches and ranks), kept as
 * router state "lambda" [1] (saved with the model). */
#include <stdlib.h>
#include <string.h>

#include "moe/util/json.h"
#include "moe/moe/router.h"

typedef struct relu {
    double *f;          /* [E+1] load-balancing weights of the last route; then
                         * the global batch's token count (== N in one process) */
    double reg;         /* L_reg of the last route (unweighted) */
    double active;      /* active pairs of the last route */
    size_t N;
    float lambda;       /* lambda used by the last route */
    /* relu_lambda_per_layer: this layer's own lambda (fp32, as the global
     * one), the step's (token, expert) pairs over micro-batches and ranks,
     * and the last completed step's sparsity and lambda (for metrics) */
    float own;
    double step_active, step_total, last_sparsity;
    float last_lambda;
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
    if (ctx->training && !ctx->prepass)  /* the step's pairs, for the per-layer rule */
        for (size_t e = 0; e < E; e++) { s->step_active += s->f[e]; s->step_total += Ng; }
    for (size_t e = 0; e < E; e++)
        s->f[e] = r->cfg->l1_load_balance ? (double)E / ((double)r->k * Ng) * s->f[e] : 1.0;
    double reg = 0.0;
    for (size_t t = 0; t < N; t++)
        for (size_t e = 0; e < E; e++) reg += s->f[e] * gates[t * E + e];
    s->reg = reg / Ng;
    s->N = (size_t)Ng;
    s->lambda = r->cfg->relu_lambda_per_layer ? s->own : ctx->rs ? ctx->rs->lambda : (float)r->cfg->relu_lambda0;
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
    int rc = moe_buf_printf(out, ", \"reg_loss\": %.9g", s->reg);
    if (r->cfg->relu_lambda_per_layer) {  /* the step just ended: its sparsity and the lambda it used */
        rc |= moe_buf_printf(out, ", \"step_sparsity\": ");
        rc |= moe_json_write_double(out, s->last_sparsity);
        rc |= moe_buf_printf(out, ", \"lambda\": ");
        rc |= moe_json_write_float(out, s->last_lambda);
    }
    return rc ? -1 : 0;
}

/* The per-layer rule once per optimiser step (apply = 0: forget the step). */
static void relu_end_step(moe_router *r, int apply) {
    relu *s = r->impl;
    const moe_config *c = r->cfg;
    if (apply && c->relu_lambda_per_layer && s->step_total > 0) {
        s->last_sparsity = 1.0 - s->step_active / s->step_total;
        s->last_lambda = s->own;
        s->own = moe_relu_lambda_next(s->own, s->last_sparsity, c->target_sparsity, c->relu_alpha);
    }
    s->step_active = s->step_total = 0.0;
}

static size_t relu_state(moe_router *r, moe_router_state *out, size_t cap) {
    relu *s = r->impl;
    if (!r->cfg->relu_lambda_per_layer) return 0;
    if (cap >= 1) out[0] = (moe_router_state){"lambda", &s->own, 1};
    return 1;
}

static void relu_destroy(moe_router *r) {
    relu *s = r->impl;
    if (s) { free(s->f); free(s); }
}

static const moe_router_ops RELU_OPS = {
    .name = "relu", .route = relu_route, .backward = relu_backward,
    .stats_json = relu_stats, .end_step = relu_end_step, .state = relu_state,
    .destroy = relu_destroy,
};

static int relu_create(const moe_config *cfg, moe_router *r, moe_err *err) {
    relu *s = moe_calloc(1, sizeof *s, err);
    if (!s) return -1;
    s->f = moe_calloc(r->E + 1, sizeof(double), err);
    if (!s->f) { free(s); return -1; }
    s->own = s->last_lambda = (float)cfg->relu_lambda0;
    r->ops = &RELU_OPS;
    r->impl = s;
    return 0;
}

const moe_router_kind moe_router_kind_relu = {
    .name = "relu", .create = relu_create, .gates = MOE_GATES_RELU,
    .no_export = "ReMoE's ReLU router (router \"relu\": gates relu(logits), a varying number of "
                 "experts per token)",
    .zero_experts = 1, .sparsity_lambda = 1, .own_keys = (const char *const[]){"relu_lambda_per_layer", NULL},
};
