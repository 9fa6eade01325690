/* topk.c — the TopK router (dMoE baseline, METHOD §2.1): softmax over all
 * experts, the k largest probabilities become the gates (optionally
 * renormalised to sum 1, at every k), with the load-balancing loss
 *     L_aux = c_aux * E / (k T^2) * sum_e (sum_t p[t,e]) * n_e
 * (n_e = tokens whose top-k holds e, a constant), an optional z-loss
 * c_z * mean_t logsumexp(logits_t)^2 and an optional near-dense warm-up
 * (k_warm experts for the first k_warm_steps steps). With
 * ctx->drop_top_expert (robustness eval, METHOD §2.3) each token's most
 * probable expert is disabled and the k gates come from the others.
 * With scoring_func "sigmoid" (DeepSeek-V3) the scores are s = sigmoid(logits)
 * instead of the softmax, the k chosen are always renormalised, and the
 * balance loss uses q[t,e] = s[t,e] / sum_e' s[t,e'] where the softmax has p;
 * routed_scaling_factor multiplies the chosen gates (either scoring).
 * With global_batch_balance (Qwen, arXiv 2501.11873) n_e and T of the
 * balance loss are the whole step's (every micro-batch and rank): with more
 * than one micro-batch the trainer first runs a routing-only pass over them
 * (ctx->prepass), which this router counts in step_n; each micro-batch's loss
 * is then grad_accum times its share, so that their mean is
 *     c_aux E/(k T_step^2) sum_e P_e(step) n_e(step).
 * With aux_free_bias (auxiliary-loss-free balancing, Wang et al. 2024;
 * DeepSeek-V3) a per-expert bias b[E] is added to the scores only to choose
 * the top-k; the gates are the unbiased scores. b is router state
 * "expert_bias" [E] (no gradient, saved with the model), moved once per
 * optimiser step by b_e += u sign(mean load - load_e) with the loads the
 * step's exact token counts over micro-batches and ranks. */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moe/util/json.h"
#include "moe/moe/router.h"

typedef struct topk {
    float *p;          /* [N,E] the scores of the last route: softmax probabilities,
                        * or sigmoid(logits) */
    float *lse;        /* [N] softmax: logsumexp of each token's logits;
                        * sigmoid: the sum of the token's scores */
    double *n_e;       /* [E+1] tokens that selected e over the global batch, then
                        * the global batch's token count (== N in one process) */
    size_t cap, k_eff;
    double aux, z;     /* the two losses of the last route (weighted) */
    double *step_n;    /* [E+1] global_batch_balance: the step's n_e and tokens from the
                        * routing-only pass (step_n[E] = 0: none this step) */
    double passes;     /* micro-batches in that pass */
    const double *aux_n; /* n_e the last route's balance loss used (n_e or step_n) */
    double aux_factor; /* and its constant: mult c_aux E / (k T^2) */
    float *bias;       /* [E] aux_free_bias: the selection bias (else NULL) */
    double *load;      /* [E] aux_free_bias: tokens per expert this step (global) */
} topk;

/* The score expert e is chosen by: its probability, plus its bias. */
static inline double choice_score(const topk *s, const float *p, size_t e) {
    return s->bias ? (double)p[e] + (double)s->bias[e] : (double)p[e];
}

static int topk_reserve(topk *s, size_t N, size_t E, moe_err *err) {
    if (N <= s->cap) return 0;
    free(s->p); free(s->lse);
    s->p = moe_malloc(N * E * sizeof(float), err);
    s->lse = moe_malloc(N * sizeof(float), err);
    if (!s->p || !s->lse) { s->cap = 0; return -1; }
    s->cap = N;
    return 0;
}

static int is_sigmoid(const moe_config *c) { return !strcmp(c->scoring_func, "sigmoid"); }

/* Whether the k selected gates are divided by their sum: always with
 * norm_topk_prob (k = 1 gives a gate of exactly 1, as Mixtral's) and with
 * sigmoid scores, only for k > 1 under CartesianMoE's rule
 * (MOE_RENORM_IF_SEVERAL, METHOD §2.3). */
static int topk_renormalises(const moe_config *c, size_t k) {
    return c->norm_topk_prob == 1 || (c->norm_topk_prob == MOE_RENORM_IF_SEVERAL && k > 1) || is_sigmoid(c);
}

static int topk_route(moe_router *r, float *gates, const float *logits, size_t N,
                      const moe_ffn_ctx *ctx, double *aux, moe_err *err) {
    topk *s = r->impl;
    const moe_config *c = r->cfg;
    size_t E = r->E;
    if (topk_reserve(s, N, E, err)) return -1;
    s->k_eff = c->k_warm > 0 && ctx->step < c->k_warm_steps ? (size_t)c->k_warm * c->granularity : r->k;
    /* robustness eval: the top expert is disabled, k come from the rest */
    int drop = ctx->drop_top_expert && E > 1;
    if (drop && s->k_eff > E - 1) s->k_eff = E - 1;
    size_t k = s->k_eff;
    int renorm = topk_renormalises(c, k), sigmoid = is_sigmoid(c);
    double scale = c->routed_scaling_factor;
    #pragma omp parallel for schedule(static)
    for (size_t t = 0; t < N; t++) {
        const float *l = logits + t * E;
        float *p = s->p + t * E, *g = gates + t * E;
        if (sigmoid) {
            double sum = 0.0;
            for (size_t e = 0; e < E; e++) {
                p[e] = (float)(1.0 / (1.0 + exp(-(double)l[e])));
                sum += p[e];
                g[e] = 0.0f;
            }
            s->lse[t] = (float)sum;
        } else {
            float mx = l[0];
            for (size_t e = 1; e < E; e++) mx = l[e] > mx ? l[e] : mx;
            double sum = 0.0;
            for (size_t e = 0; e < E; e++) sum += exp((double)(l[e] - mx));
            s->lse[t] = (float)(log(sum) + mx);
            for (size_t e = 0; e < E; e++) { p[e] = (float)(exp((double)(l[e] - mx)) / sum); g[e] = 0.0f; }
        }
        /* k passes of arg-max over the unselected: k is small; ties go to
         * the lower index. A dropped expert is marked -1 until the end. */
        double picked = 0.0;
        size_t top = 0;
        for (size_t e = 1; e < E && drop; e++) top = choice_score(s, p, e) > choice_score(s, p, top) ? e : top;
        if (drop) g[top] = -1.0f;
        for (size_t j = 0; j < k; j++) {
            size_t best = E;
            for (size_t e = 0; e < E; e++)
                if (g[e] == 0.0f && (best == E || choice_score(s, p, e) > choice_score(s, p, best))) best = e;
            assert(best < E);  /* k <= the experts left unselected (E - 1 when one is dropped) */
            g[best] = p[best] > 0.0f ? p[best] : 1e-30f;  /* selected gates stay non-zero */
            picked += g[best];
        }
        if (drop) g[top] = 0.0f;
        if (renorm)
            for (size_t e = 0; e < E; e++) g[e] = (float)(g[e] / fmax(picked, 1e-20));
        if (scale != 1.0)
            for (size_t e = 0; e < E; e++) g[e] = (float)(g[e] * scale);
    }
    memset(s->n_e, 0, E * sizeof(double));
    for (size_t t = 0; t < N; t++)
        for (size_t e = 0; e < E; e++) s->n_e[e] += gates[t * E + e] != 0.0f;
    /* across ranks the counts and T are the global batch's, so each rank's
     * loss below is its share of the single-process loss (the shares add up) */
    s->n_e[E] = (double)N;
    if (moe_router_global(ctx, s->n_e, E + 1, err)) return -1;
    double Ng = s->n_e[E];
    s->aux = s->z = 0.0;
    *aux = 0.0;
    if (ctx->prepass) {  /* global_batch_balance: count the step, nothing else */
        for (size_t e = 0; e <= E; e++) s->step_n[e] += s->n_e[e];
        s->passes += 1.0;
        return 0;
    }
    if (s->load && ctx->training)  /* the step's loads, for the bias update */
        for (size_t e = 0; e < E; e++) s->load[e] += s->n_e[e];
    /* the balance loss's counts: this micro-batch's, or the whole step's */
    int whole = s->step_n && s->step_n[E] > 0;
    double Tb = whole ? s->step_n[E] : Ng;
    s->aux_n = whole ? s->step_n : s->n_e;
    s->aux_factor = (whole ? s->passes : 1.0) * c->aux_loss_coef * (double)E / ((double)k * Tb * Tb);
    if (ctx->training && c->aux_loss_coef > 0) {
        double acc = 0.0;
        for (size_t e = 0; e < E; e++) {
            double P = 0.0;
            for (size_t t = 0; t < N; t++) P += sigmoid ? s->p[t * E + e] / (double)s->lse[t] : s->p[t * E + e];
            acc += P * s->aux_n[e];
        }
        s->aux = s->aux_factor * acc;
    }
    if (ctx->training && c->z_loss_coef > 0) {
        double acc = 0.0;
        for (size_t t = 0; t < N; t++) acc += (double)s->lse[t] * s->lse[t];
        s->z = c->z_loss_coef * acc / Ng;
    }
    *aux = s->aux + s->z;
    return 0;
}

static int topk_backward(moe_router *r, float *dlogits, const float *dgates,
                         const float *logits, const float *gates, size_t N,
                         const moe_ffn_ctx *ctx, moe_err *err) {
    (void)logits; (void)err;
    topk *s = r->impl;
    const moe_config *c = r->cfg;
    size_t E = r->E, k = s->k_eff;
    int renorm = topk_renormalises(c, k), sigmoid = is_sigmoid(c);
    double scale = c->routed_scaling_factor;
    double Ng = s->n_e[E];  /* the global batch's tokens */
    double aux_scale = ctx->training && c->aux_loss_coef > 0 ? ctx->loss_scale * s->aux_factor : 0.0;
    const double *n_e = s->aux_n;  /* this micro-batch's counts, or the whole step's */
    double z_scale = ctx->training && c->z_loss_coef > 0
        ? ctx->loss_scale * c->z_loss_coef * 2.0 / Ng : 0.0;
    #pragma omp parallel for schedule(static)
    for (size_t t = 0; t < N; t++) {
        const float *p = s->p + t * E, *g = gates + t * E, *dg = dgates + t * E;
        float *dl = dlogits + t * E;
        /* dp: through the selected gates g = scale p (/ picked when renormalised) */
        double picked = 0.0, dot = 0.0;
        for (size_t e = 0; e < E; e++)
            if (g[e] != 0.0f) { picked += p[e]; dot += (double)dg[e] * g[e]; }
        if (sigmoid) {  /* the balance loss's q = s / S, S = sum of the token's scores */
            double S = s->lse[t], aq = 0.0;
            for (size_t e = 0; e < E; e++) aq += aux_scale * n_e[e] * p[e] / S;
            for (size_t e = 0; e < E; e++) {
                double ds = (aux_scale * n_e[e] - aq) / S;
                if (g[e] != 0.0f) ds += (scale * dg[e] - dot) / fmax(picked, 1e-20);
                dl[e] = (float)(ds * p[e] * (1.0 - p[e]));  /* sigmoid backward */
            }
            continue;
        }
        double pdp = 0.0;
        for (size_t e = 0; e < E; e++) {
            double dp = 0.0;
            if (g[e] != 0.0f) dp = renorm ? (scale * dg[e] - dot) / fmax(picked, 1e-20) : scale * dg[e];
            dp += aux_scale * n_e[e];
            dl[e] = (float)dp;  /* temporarily dp */
            pdp += p[e] * dp;
        }
        /* softmax backward, plus the z-loss gradient */
        for (size_t e = 0; e < E; e++)
            dl[e] = (float)(p[e] * (dl[e] - pdp) + z_scale * s->lse[t] * p[e]);
    }
    return 0;
}

static int topk_stats(const moe_router *r, moe_buf *out) {
    const topk *s = r->impl;
    int rc = moe_buf_printf(out, ", \"lb_loss\": %.9g, \"z_loss\": %.9g, \"k\": %zu", s->aux, s->z, s->k_eff);
    for (size_t e = 0; s->bias && e < r->E; e++) {  /* after the step's update */
        rc |= moe_buf_printf(out, e ? ", " : ", \"expert_bias\": [");
        rc |= moe_json_write_float(out, s->bias[e]);
    }
    if (s->bias) rc |= moe_buf_printf(out, "]");
    return rc ? -1 : 0;
}

/* aux_free_bias, once per optimiser step: b_e += u sign(mean - load_e),
 * comparing exact counts (load_e E against their sum); fp32 as stored. */
static void topk_end_step(moe_router *r, int apply) {
    topk *s = r->impl;
    if (s->step_n) { memset(s->step_n, 0, (r->E + 1) * sizeof(double)); s->passes = 0.0; }
    if (!s->bias) return;
    double total = 0.0, u = r->cfg->aux_free_rate;
    for (size_t e = 0; e < r->E; e++) total += s->load[e];
    for (size_t e = 0; apply && total > 0 && e < r->E; e++) {
        double over = s->load[e] * (double)r->E - total;  /* E (load_e - mean) */
        if (over != 0.0) s->bias[e] = (float)((double)s->bias[e] + (over < 0 ? u : -u));
    }
    memset(s->load, 0, r->E * sizeof(double));
}

static size_t topk_state(moe_router *r, moe_router_state *out, size_t cap) {
    topk *s = r->impl;
    if (!s->bias) return 0;
    if (cap >= 1) out[0] = (moe_router_state){"expert_bias", s->bias, r->E};
    return 1;
}

static void topk_destroy(moe_router *r) {
    topk *s = r->impl;
    if (s) { free(s->p); free(s->lse); free(s->n_e); free(s->step_n); free(s->bias); free(s->load); free(s); }
}

static const moe_router_ops TOPK_OPS = {
    .name = "topk", .route = topk_route, .backward = topk_backward,
    .stats_json = topk_stats, .end_step = topk_end_step, .state = topk_state,
    .destroy = topk_destroy,
};

int moe_router_topk_create(const moe_config *cfg, moe_router *r, moe_err *err) {
    topk *s = moe_calloc(1, sizeof *s, err);
    if (!s) return -1;
    s->n_e = moe_calloc(r->E + 1, sizeof(double), err);
    if (s->n_e && cfg->aux_free_bias) {
        s->bias = moe_calloc(r->E, sizeof(float), err);
        s->load = s->bias ? moe_calloc(r->E, sizeof(double), err) : NULL;
    }
    if (s->n_e && cfg->global_batch_balance) {
        s->step_n = moe_calloc(r->E + 1, sizeof(double), err);
        r->wants_prepass = 1;
    }
    if (!s->n_e || (cfg->aux_free_bias && !s->load) || (cfg->global_batch_balance && !s->step_n)) {
        free(s->n_e); free(s->bias); free(s->load); free(s); return -1;
    }
    r->ops = &TOPK_OPS;
    r->impl = s;
    return 0;
}

const moe_router_kind moe_router_kind_topk = {
    .name = "topk", .create = moe_router_topk_create, .exportable = 1, .gates = MOE_GATES_TOPK,
    .fixed_k = 1, .zero_experts = 1,
    .own_keys = (const char *const[]){"scoring_func", "routed_scaling_factor", "global_batch_balance",
                                      "aux_free_bias", NULL},
};
