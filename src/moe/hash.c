/* hash.c — hash routing (Roller et al. 2021; METHOD §2.4): token t goes to
 * expert tokens[t] mod E with gate 1. No router parameters (has_weight 0),
 * no auxiliary loss. Gradient: nothing reaches a router (there is none);
 * each expert gets the gradient of the tokens hashed to it, and the input
 * gets the gradient through those experts only. */
#include <stdlib.h>
#include <string.h>

#include "moe/moe/router.h"

static int hash_route(moe_router *r, float *gates, const float *logits, size_t N,
                      const moe_ffn_ctx *ctx, double *aux, moe_err *err) {
    (void)logits;
    size_t E = r->E;
    if (!ctx->tokens) return moe_errf(err, "hash router: the batch's token ids are needed (ctx->tokens)");
    memset(gates, 0, N * E * sizeof(float));
    for (size_t t = 0; t < N; t++) {
        if (ctx->tokens[t] < 0) return moe_errf(err, "hash router: negative token id %d", ctx->tokens[t]);
        gates[t * E + (size_t)ctx->tokens[t] % E] = 1.0f;
    }
    *aux = 0.0;
    return 0;
}

static int hash_backward(moe_router *r, float *dlogits, const float *dgates,
                         const float *logits, const float *gates, size_t N,
                         const moe_ffn_ctx *ctx, moe_err *err) {
    (void)dgates; (void)logits; (void)gates; (void)ctx; (void)err;
    if (dlogits) memset(dlogits, 0, N * r->E * sizeof(float));  /* no router: nothing to pass */
    return 0;
}

static const moe_router_ops HASH_OPS = {
    .name = "hash", .route = hash_route, .backward = hash_backward,
};

static int hash_create(const moe_config *cfg, moe_router *r, moe_err *err) {
    (void)cfg; (void)err;
    r->ops = &HASH_OPS;
    r->has_weight = 0;
    return 0;
}

/* One expert per token, by its id. */
static int hash_validate(const moe_config *c, moe_err *err) {
    if (c->top_k != 1 || c->granularity != 1)
        return moe_errf(err, "config: key 'router': hash routing sends each token to one expert: "
                        "needs top_k 1 and granularity 1");
    return 0;
}

const moe_router_kind moe_router_kind_hash = {
    .name = "hash", .create = hash_create, .gates = MOE_GATES_BY_TOKEN, .fixed_k = 1,
    .no_export = "hash routing (router \"hash\": the expert is a fixed function of the token id)",
    .validate = hash_validate,
};
