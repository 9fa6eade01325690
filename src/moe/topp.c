/* topp.c — the TopP router (dynamic routing, Huang et al. 2024; CartesianMoE's
 * "TopP" baseline, METHOD §2.4): p = softmax(logits); each token takes experts
 * in order of falling probability until their summed probability reaches
 * top_p (at least one); gate = p (not renormalised). Losses, per layer:
 *   load balance  c_aux * E / (kbar T^2) * sum_e (sum_t p[t,e]) * n_e,
 *                 n_e = tokens that selected e, kbar = mean experts per
 *                 token (both constants),
 *   dynamic loss  c_d * (1/T) sum_t sum_e -p[t,e] log p[t,e]  (entropy:
 *                 keeps the router from spreading p to activate many).
 * Pair it with a shared expert (n_shared_experts 1) as the paper does. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moe/moe/router.h"

typedef struct topp {
    float *p;          /* [N,E] probabilities of the last route */
    double *n_e;       /* [E+1] tokens that selected e, then the token count
                        * (both over the global batch across ranks) */
    size_t cap;
    double kbar, lb, ent;  /* mean experts per token; the two weighted losses */
} topp;

static int topp_route(moe_router *r, float *gates, const float *logits, size_t N,
                      const moe_ffn_ctx *ctx, double *aux, moe_err *err) {
    topp *s = r->impl;
    const moe_config *c = r->cfg;
    size_t E = r->E;
    if (N > s->cap) {
        free(s->p);
        s->p = moe_malloc(N * E * sizeof(float), err);
        if (!s->p) { s->cap = 0; return -1; }
        s->cap = N;
    }
    int drop = ctx->drop_top_expert && E > 1;
    double thr = c->top_p;
    #pragma omp parallel for schedule(static)
    for (size_t t = 0; t < N; t++) {
        float *p = s->p + t * E, *g = gates + t * E;
        moe_router_softmax(p, logits + t * E, E);
        for (size_t e = 0; e < E; e++) g[e] = 0.0f;
        /* arg-max passes (ties to the lower index); a dropped expert is
         * marked -1 and does not count towards the sum */
        size_t top = 0;
        for (size_t e = 1; e < E; e++) top = p[e] > p[top] ? e : top;
        if (drop) g[top] = -1.0f;
        double cum = 0.0;
        for (size_t j = 0; j < E - (size_t)drop && cum < thr; j++) {
            size_t best = E;
            for (size_t e = 0; e < E; e++)
                if (g[e] == 0.0f && (best == E || p[e] > p[best])) best = e;
            g[best] = p[best] > 0.0f ? p[best] : 1e-30f;
            cum += p[best];
        }
        if (drop) g[top] = 0.0f;
    }
    memset(s->n_e, 0, E * sizeof(double));
    for (size_t t = 0; t < N; t++)
        for (size_t e = 0; e < E; e++) s->n_e[e] += gates[t * E + e] != 0.0f;
    s->n_e[E] = (double)N;
    if (moe_router_global(ctx, s->n_e, E + 1, err)) return -1;
    double Ng = s->n_e[E];
    double pairs = 0.0;
    for (size_t e = 0; e < E; e++) pairs += s->n_e[e];
    s->kbar = Ng > 0 ? pairs / Ng : 1.0;
    s->lb = s->ent = 0.0;
    if (ctx->training && c->aux_loss_coef > 0) {
        double acc = 0.0;
        for (size_t e = 0; e < E; e++) {
            double P = 0.0;
            for (size_t t = 0; t < N; t++) P += s->p[t * E + e];
            acc += P * s->n_e[e];
        }
        s->lb = c->aux_loss_coef * (double)E / (s->kbar * Ng * Ng) * acc;
    }
    if (ctx->training && c->topp_entropy_coef > 0) {
        double acc = 0.0;
        for (size_t i = 0; i < N * E; i++)
            if (s->p[i] > 0.0f) acc -= (double)s->p[i] * log((double)s->p[i]);
        s->ent = c->topp_entropy_coef * acc / Ng;
    }
    *aux = s->lb + s->ent;
    return 0;
}

static int topp_backward(moe_router *r, float *dlogits, const float *dgates,
                         const float *logits, const float *gates, size_t N,
                         const moe_ffn_ctx *ctx, moe_err *err) {
    (void)logits; (void)err;
    topp *s = r->impl;
    const moe_config *c = r->cfg;
    size_t E = r->E;
    double Ng = s->n_e[E];
    double lb_scale = ctx->training && c->aux_loss_coef > 0
        ? ctx->loss_scale * c->aux_loss_coef * (double)E / (s->kbar * Ng * Ng) : 0.0;
    double ent_scale = ctx->training && c->topp_entropy_coef > 0
        ? ctx->loss_scale * c->topp_entropy_coef / Ng : 0.0;
    #pragma omp parallel for schedule(static)
    for (size_t t = 0; t < N; t++) {
        const float *p = s->p + t * E, *g = gates + t * E, *dg = dgates + t * E;
        float *dl = dlogits + t * E;
        double pdp = 0.0;
        for (size_t e = 0; e < E; e++) {
            double dp = g[e] != 0.0f ? dg[e] : 0.0;
            dp += lb_scale * s->n_e[e];
            if (p[e] > 0.0f) dp -= ent_scale * (log((double)p[e]) + 1.0);
            dl[e] = (float)dp;
            pdp += p[e] * dp;
        }
        for (size_t e = 0; e < E; e++) dl[e] = (float)(p[e] * (dl[e] - pdp));
    }
    return 0;
}

static int topp_stats(const moe_router *r, moe_buf *out) {
    const topp *s = r->impl;
    return moe_buf_printf(out, ", \"lb_loss\": %.9g, \"entropy_loss\": %.9g, \"k_mean\": %.9g",
                          s->lb, s->ent, s->kbar);
}

static void topp_destroy(moe_router *r) {
    topp *s = r->impl;
    if (s) { free(s->p); free(s->n_e); free(s); }
}

static const moe_router_ops TOPP_OPS = {
    .name = "topp", .route = topp_route, .backward = topp_backward,
    .stats_json = topp_stats, .destroy = topp_destroy,
};

static int topp_create(const moe_config *cfg, moe_router *r, moe_err *err) {
    (void)cfg;
    topp *s = moe_calloc(1, sizeof *s, err);
    if (!s) return -1;
    s->n_e = moe_calloc(r->E + 1, sizeof(double), err);
    if (!s->n_e) { free(s); return -1; }
    r->ops = &TOPP_OPS;
    r->impl = s;
    return 0;
}

const moe_router_kind moe_router_kind_topp = {
    .name = "topp", .create = topp_create, .gates = MOE_GATES_TOPP,
    .no_export = "TopP routing (router \"topp\": as many experts as reach probability top_p)",
};
