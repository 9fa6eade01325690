/* expert_choice.c — Expert Choice routing (Zhou et al. 2022; METHOD §2.4):
 * p = softmax(logits) per token; every expert e takes the C = max(1,
 * floor(T k / E)) tokens of the micro-batch with the largest p[t,e] (ties to
 * the earlier token), gate = p[t,e]. A token may be taken by several experts
 * or by none. No auxiliary loss: the load is balanced by construction.
 * Not causal: a token's routing depends on the other tokens of the batch,
 * later ones included (moe_config_causal refuses generation). Gradient:
 * through p of the selected pairs (the selection is a constant). */
#include <stdlib.h>
#include <string.h>

#include "moe/moe/router.h"

typedef struct { float p; int t; } ec_item;

typedef struct ec {
    float *p;          /* [N,E] probabilities of the last route */
    ec_item *items;    /* [N] scratch for one expert's column */
    size_t cap, C;
} ec;

static int ec_cmp(const void *a, const void *b) {
    const ec_item *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return (x->t > y->t) - (x->t < y->t);
}

static int ec_route(moe_router *r, float *gates, const float *logits, size_t N,
                    const moe_ffn_ctx *ctx, double *aux, moe_err *err) {
    (void)ctx;
    ec *s = r->impl;
    size_t E = r->E;
    if (N > s->cap) {
        free(s->p); free(s->items);
        s->p = moe_malloc(N * E * sizeof(float), err);
        s->items = moe_malloc(N * sizeof(ec_item), err);
        if (!s->p || !s->items) { s->cap = 0; return -1; }
        s->cap = N;
    }
    for (size_t t = 0; t < N; t++) moe_router_softmax(s->p + t * E, logits + t * E, E);
    size_t C = N * r->k / E;
    s->C = C < 1 ? 1 : C > N ? N : C;
    memset(gates, 0, N * E * sizeof(float));
    for (size_t e = 0; e < E; e++) {
        for (size_t t = 0; t < N; t++) s->items[t] = (ec_item){s->p[t * E + e], (int)t};
        qsort(s->items, N, sizeof *s->items, ec_cmp);
        for (size_t i = 0; i < s->C; i++) {
            float p = s->items[i].p;
            gates[(size_t)s->items[i].t * E + e] = p > 0.0f ? p : 1e-30f;
        }
    }
    *aux = 0.0;
    return 0;
}

static int ec_backward(moe_router *r, float *dlogits, const float *dgates,
                       const float *logits, const float *gates, size_t N,
                       const moe_ffn_ctx *ctx, moe_err *err) {
    (void)logits; (void)ctx; (void)err;
    ec *s = r->impl;
    size_t E = r->E;
    #pragma omp parallel for schedule(static)
    for (size_t t = 0; t < N; t++) {
        const float *p = s->p + t * E, *g = gates + t * E, *dg = dgates + t * E;
        float *dl = dlogits + t * E;
        double pdp = 0.0;
        for (size_t e = 0; e < E; e++) pdp += g[e] != 0.0f ? (double)p[e] * dg[e] : 0.0;
        for (size_t e = 0; e < E; e++)
            dl[e] = (float)(p[e] * ((g[e] != 0.0f ? dg[e] : 0.0) - pdp));
    }
    return 0;
}

static int ec_stats(const moe_router *r, moe_buf *out) {
    const ec *s = r->impl;
    return moe_buf_printf(out, ", \"capacity\": %zu", s->C);
}

static void ec_destroy(moe_router *r) {
    ec *s = r->impl;
    if (s) { free(s->p); free(s->items); free(s); }
}

static const moe_router_ops EC_OPS = {
    .name = "expert_choice", .route = ec_route, .backward = ec_backward,
    .stats_json = ec_stats, .destroy = ec_destroy,
};

static int ec_create(const moe_config *cfg, moe_router *r, moe_err *err) {
    (void)cfg;
    ec *s = moe_calloc(1, sizeof *s, err);
    if (!s) return -1;
    r->ops = &EC_OPS;
    r->impl = s;
    return 0;
}

const moe_router_kind moe_router_kind_expert_choice = {
    .name = "expert_choice", .create = ec_create, .gates = MOE_GATES_EXPERT_CHOICE,
    .not_causal = "expert-choice routing picks tokens across the whole batch, later tokens included",
    .no_export = "expert-choice routing (router \"expert_choice\": experts pick tokens across the "
                 "batch, not causal)",
};
