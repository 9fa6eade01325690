/* sparsemixer.c — SparseMixer-v2 (GRIN, Liu et al. 2024, arXiv 2409.12136;
 * METHOD §2.4): top-k by k sequential picks, with the SparseMixer gradient
 * estimator instead of straight-through TopK. We follow the GRIN reference
 * implementation (Hugging Face transformers' modeling_phimoe.py,
 * `sparsemixer` / `PhimoeMultiplier`); docs/ROUTERS.md has the equations.
 * Per token, pick j = 1..k over the experts not yet picked, logits z:
 *   m = max z;  candidates C_j = { e : (m - z_e) / max(|z_e|, m) <= 2 eps }
 *   pi_j = softmax of z over C_j (0 outside)
 *   training: s_j = argmax_{e in C_j} z_e - log(-log u_e) (Gumbel sample),
 *             w_j = 1 if s_j = argmax pi_j, else 1 if u' > 0.75 else 1/3
 *             (Heun's third-order method)
 *   eval:     s_j = argmax pi_j, w_j = 1
 *   gate[s_j] = pi_j[s_j] * w_j
 * Backward (the estimator): d z_e += dgate[s_j] * pi_j[s_j] * (1{e = s_j}
 * - pi_j[e]), i.e. the gradient of pi_j[s_j] without the factor w_j; the
 * experts see the forward gate. Random numbers are counter-based
 * (moe_router_uniform of seed, layer, step, position, token, stream), so a
 * run is reproducible. Plus the TopK load-balancing loss on softmax(z). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moe/moe/router.h"

typedef struct smix {
    float *p;          /* [N,E] full softmax (for the balance loss) */
    float *pi;         /* [N,k,E] each pick's candidate softmax */
    int *sel;          /* [N,k] picked expert */
    double *n_e;       /* [E+1] picks per expert, then the token count (global batch) */
    size_t cap, k_eff;
    double aux;
} smix;

static int smix_route(moe_router *r, float *gates, const float *logits, size_t N,
                      const moe_ffn_ctx *ctx, double *aux, moe_err *err) {
    smix *s = r->impl;
    const moe_config *c = r->cfg;
    size_t E = r->E, k = r->k;
    int drop = ctx->drop_top_expert && E > 1;
    if (drop && k > E - 1) k = E - 1;
    s->k_eff = k;
    if (N > s->cap) {
        free(s->p); free(s->pi); free(s->sel);
        s->p = moe_malloc(N * E * sizeof(float), err);
        s->pi = moe_malloc(N * r->k * E * sizeof(float), err);
        s->sel = moe_malloc(N * r->k * sizeof(int), err);
        if (!s->p || !s->pi || !s->sel) { s->cap = 0; return -1; }
        s->cap = N;
    }
    double eps2 = 2.0 * c->jitter_eps;
    #pragma omp parallel for schedule(static)
    for (size_t t = 0; t < N; t++) {
        const float *z = logits + t * E;
        float *g = gates + t * E;
        moe_router_softmax(s->p + t * E, z, E);
        for (size_t e = 0; e < E; e++) g[e] = 0.0f;
        uint64_t tok = ctx->tokens ? (uint64_t)ctx->tokens[t] : 0;
        /* taken: -1 marks picked (or dropped) experts while picking */
        if (drop) {
            size_t top = 0;
            for (size_t e = 1; e < E; e++) top = z[e] > z[top] ? e : top;
            g[top] = -1.0f;
        }
        for (size_t j = 0; j < k; j++) {
            float *pi = s->pi + (t * r->k + j) * E;
            size_t best = E;  /* arg-max of the remaining logits (ties: lower index) */
            for (size_t e = 0; e < E; e++)
                if (g[e] == 0.0f && (best == E || z[e] > z[best])) best = e;
            double mx = z[best], sum = 0.0;
            for (size_t e = 0; e < E; e++) {
                int cand = g[e] == 0.0f && !((mx - z[e]) / fmax(fabs((double)z[e]), mx) > eps2);
                pi[e] = cand ? 1.0f : 0.0f;  /* candidate mask for now */
                if (cand) sum += exp((double)z[e] - mx);
            }
            for (size_t e = 0; e < E; e++)
                pi[e] = pi[e] != 0.0f ? (float)(exp((double)z[e] - mx) / sum) : 0.0f;
            size_t pick = best;
            double w = 1.0;
            if (ctx->training) {
                double key_best = -INFINITY;
                for (size_t e = 0; e < E; e++) {
                    if (pi[e] == 0.0f) continue;
                    double u = moe_router_uniform((uint64_t)c->seed, (uint64_t)r->layer, (uint64_t)ctx->step,
                                                  t + ctx->row0 * ctx->T, tok, j * (E + 1) + e);
                    double key = (double)z[e] - log(-log(u));
                    if (key > key_best) { key_best = key; pick = e; }
                }
                if (pick != best) {
                    double u = moe_router_uniform((uint64_t)c->seed, (uint64_t)r->layer, (uint64_t)ctx->step,
                                                  t + ctx->row0 * ctx->T, tok, j * (E + 1) + E);
                    w = u > 0.75 ? 1.0 : 1.0 / 3.0;
                }
            }
            s->sel[t * r->k + j] = (int)pick;
            float gv = (float)(pi[pick] * w);
            g[pick] = gv > 0.0f ? gv : 1e-30f;
        }
        for (size_t e = 0; e < E; e++) if (g[e] < 0.0f) g[e] = 0.0f;
    }
    memset(s->n_e, 0, E * sizeof(double));
    for (size_t t = 0; t < N; t++)
        for (size_t e = 0; e < E; e++) s->n_e[e] += gates[t * E + e] != 0.0f;
    s->n_e[E] = (double)N;
    if (moe_router_global(ctx, s->n_e, E + 1, err)) return -1;
    double Ng = s->n_e[E];
    s->aux = 0.0;
    if (ctx->training && c->aux_loss_coef > 0) {
        double acc = 0.0;
        for (size_t e = 0; e < E; e++) {
            double P = 0.0;
            for (size_t t = 0; t < N; t++) P += s->p[t * E + e];
            acc += P * s->n_e[e];
        }
        s->aux = c->aux_loss_coef * (double)E / ((double)k * Ng * Ng) * acc;
    }
    *aux = s->aux;
    return 0;
}

static int smix_backward(moe_router *r, float *dlogits, const float *dgates,
                         const float *logits, const float *gates, size_t N,
                         const moe_ffn_ctx *ctx, moe_err *err) {
    (void)logits; (void)gates; (void)err;
    smix *s = r->impl;
    const moe_config *c = r->cfg;
    size_t E = r->E, k = s->k_eff;
    double aux_scale = ctx->training && c->aux_loss_coef > 0
        ? ctx->loss_scale * c->aux_loss_coef * (double)E / ((double)k * s->n_e[E] * s->n_e[E]) : 0.0;
    #pragma omp parallel for schedule(static)
    for (size_t t = 0; t < N; t++) {
        const float *p = s->p + t * E;
        float *dl = dlogits + t * E;
        /* the balance loss through the full softmax */
        double pdp = 0.0;
        for (size_t e = 0; e < E; e++) pdp += p[e] * aux_scale * s->n_e[e];
        for (size_t e = 0; e < E; e++) dl[e] = (float)(p[e] * (aux_scale * s->n_e[e] - pdp));
        /* the estimator: each pick's pi[s] without its factor w */
        for (size_t j = 0; j < k; j++) {
            const float *pi = s->pi + (t * r->k + j) * E;
            size_t sel = (size_t)s->sel[t * r->k + j];
            double go = (double)dgates[t * E + sel] * pi[sel];
            for (size_t e = 0; e < E; e++)
                dl[e] += (float)(go * ((e == sel) - (double)pi[e]));
        }
    }
    return 0;
}

static int smix_stats(const moe_router *r, moe_buf *out) {
    const smix *s = r->impl;
    return moe_buf_printf(out, ", \"lb_loss\": %.9g, \"k\": %zu", s->aux, s->k_eff);
}

static void smix_destroy(moe_router *r) {
    smix *s = r->impl;
    if (s) { free(s->p); free(s->pi); free(s->sel); free(s->n_e); free(s); }
}

static const moe_router_ops SMIX_OPS = {
    .name = "sparsemixer", .route = smix_route, .backward = smix_backward,
    .stats_json = smix_stats, .destroy = smix_destroy,
};

static int smix_create(const moe_config *cfg, moe_router *r, moe_err *err) {
    (void)cfg;
    smix *s = moe_calloc(1, sizeof *s, err);
    if (!s) return -1;
    s->n_e = moe_calloc(r->E + 1, sizeof(double), err);
    if (!s->n_e) { free(s); return -1; }
    r->ops = &SMIX_OPS;
    r->impl = s;
    return 0;
}

const moe_router_kind moe_router_kind_sparsemixer = {
    .name = "sparsemixer", .create = smix_create, .gates = MOE_GATES_SPARSEMIXER, .fixed_k = 1,
    .no_export = "SparseMixer-v2 (router \"sparsemixer\": gates from a softmax masked to the "
                 "candidates within jitter_eps)",
};
