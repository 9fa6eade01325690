/* learned_hash.c — CartesianMoE's "Hash" baseline: a learned hash. Each
 * token id v owns a row of logits (the MoE layer's table
 * mlp.router.token_weight [vocab_size, E], looked up by the layer, see
 * has_weight); p = softmax(row), the top k are active, and their gates are
 * renormalised to sum 1 when k > 1 (always, whatever norm_topk_prob says:
 * the baseline is defined so). The routing depends on the token id alone,
 * as a hash does, but the assignment is learned. Routing, the load-balancing
 * loss, z-loss and the robustness drop are TopK's: this router wraps a TopK
 * router run on a copy of the config with norm_topk_prob set to CartesianMoE's
 * rule (MOE_RENORM_IF_SEVERAL: renormalise when k > 1). Gradient: to
 * the table rows of the batch's tokens only (the layer scatters dlogits),
 * never to the layer input through the router. */
#include <stdlib.h>

#include "moe/moe/router.h"

typedef struct learned_hash {
    moe_config cfg;   /* the user's config with norm_topk_prob = MOE_RENORM_IF_SEVERAL */
    moe_router inner; /* the TopK router doing the work */
} learned_hash;

static int lh_route(moe_router *r, float *gates, const float *logits, size_t N,
                    const moe_ffn_ctx *ctx, double *aux, moe_err *err) {
    learned_hash *s = r->impl;
    return s->inner.ops->route(&s->inner, gates, logits, N, ctx, aux, err);
}

static int lh_backward(moe_router *r, float *dlogits, const float *dgates, const float *logits,
                       const float *gates, size_t N, const moe_ffn_ctx *ctx, moe_err *err) {
    learned_hash *s = r->impl;
    return s->inner.ops->backward(&s->inner, dlogits, dgates, logits, gates, N, ctx, err);
}

static int lh_stats(const moe_router *r, moe_buf *out) {
    const learned_hash *s = r->impl;
    return s->inner.ops->stats_json(&s->inner, out);
}

static void lh_destroy(moe_router *r) {
    learned_hash *s = r->impl;
    if (!s) return;
    if (s->inner.ops && s->inner.ops->destroy) s->inner.ops->destroy(&s->inner);
    free(s);
}

static const moe_router_ops LEARNED_HASH_OPS = {
    .name = "learned_hash", .route = lh_route, .backward = lh_backward,
    .stats_json = lh_stats, .destroy = lh_destroy,
};

static int lh_create(const moe_config *cfg, moe_router *r, moe_err *err) {
    learned_hash *s = moe_calloc(1, sizeof *s, err);
    if (!s) return -1;
    s->cfg = *cfg;
    s->cfg.norm_topk_prob = MOE_RENORM_IF_SEVERAL;
    s->inner = *r;
    s->inner.cfg = &s->cfg;
    if (moe_router_topk_create(&s->cfg, &s->inner, err)) { free(s); return -1; }
    r->ops = &LEARNED_HASH_OPS;
    r->impl = s;
    r->has_weight = MOE_ROUTER_TOKEN_TABLE;
    return 0;
}

const moe_router_kind moe_router_kind_learned_hash = {
    .name = "learned_hash", .create = lh_create, .gates = MOE_GATES_BY_TOKEN, .fixed_k = 1,
};
