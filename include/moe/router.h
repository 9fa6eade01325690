/* router.h — the router interface of the MoE layer (METHOD §2). A router turns
 * router logits [N, E] into gates [N, E] (zero = expert not active for that
 * token) plus an auxiliary loss, and back-propagates through both. The MoE
 * layer (src/moe/layer.c) turns the gates into per-expert token lists, runs
 * the experts and combines. Adding a router: one file defining its ops and
 * a create function, and one line in the table of src/moe/router.c. */
#ifndef MOE_ROUTER_H
#define MOE_ROUTER_H

#include "moe/common.h"
#include "moe/config.h"
#include "moe/ffn.h"

typedef struct moe_router moe_router;

/* A router's state that is not trained (no gradient, no AdamW) but belongs
 * to the model and is saved with it (router_state.safetensors beside
 * model.safetensors, docs/FORMAT.md): the aux-loss-free bias, ReMoE's
 * per-layer lambda. `name` is the tensor's name under the layer's
 * "mlp.router." prefix; data holds n floats. */
typedef struct moe_router_state {
    const char *name;
    float *data;
    size_t n;
} moe_router_state;

enum { MOE_ROUTER_TOKEN_TABLE = 2 };  /* has_weight: logits looked up by token id */

typedef struct moe_router_ops {
    const char *name;
    /* gates[N,E] from logits[N,E] (NULL for a router without a weight,
     * see has_weight); *aux = the auxiliary loss of this call, already
     * weighted by its coefficient (0 outside training). Keeps what backward
     * needs. With ctx->drop_top_expert the top-k family (topk, topp,
     * sparsemixer) disables each token's highest-probability expert. */
    int (*route)(moe_router *r, float *gates, const float *logits, size_t N,
                 const moe_ffn_ctx *ctx, double *aux, moe_err *err);
    /* dlogits[N,E] (overwritten) from dgates[N,E] = dObjective/dgates (only
     * read where a gate is active) plus the auxiliary loss's gradient times
     * ctx->loss_scale. */
    int (*backward)(moe_router *r, float *dlogits, const float *dgates,
                    const float *logits, const float *gates, size_t N,
                    const moe_ffn_ctx *ctx, moe_err *err);
    /* Writes router-specific statistics of the last route() as JSON members
     * (", \"key\": value" ...) or nothing. Optional. */
    int (*stats_json)(const moe_router *r, moe_buf *out);
    /* Optional: once per optimiser step, after the update, every router
     * sees the end of the step: apply = 1 updates its state from the
     * step's routing (counted by its training routes over the micro-batches,
     * summed over the ranks: the same on every rank); apply = 0 (a skipped
     * step, a rollback) only forgets the step's counts. */
    void (*end_step)(moe_router *r, int apply);
    /* Optional: the state tensors (see moe_router_state), how many; fills
     * out[0 .. min(count, cap)). Their values are the model's, restored
     * from a checkpoint before training goes on. */
    size_t (*state)(moe_router *r, moe_router_state *out, size_t cap);
    void (*destroy)(moe_router *r);
} moe_router_ops;

struct moe_router {
    const moe_router_ops *ops;
    const moe_config *cfg;
    size_t E;      /* experts routed (n_experts * granularity) */
    size_t k;      /* active per token (top_k * granularity) */
    int has_weight; /* 1 (default): the layer holds a router weight [E, D] and
                       passes logits = x W^T; 0 (hash): no router parameters, logits
                       NULL and backward is never called; MOE_ROUTER_TOKEN_TABLE
                       (learned_hash): the layer holds a table [vocab_size, E]
                       and passes logits[t] = table[tokens[t]] (no gradient to x) */
    int layer;     /* the block index (seeds SparseMixer's sampling) */
    int wants_prepass; /* needs the step's counts before its first backward
                          (moe_ffn_ctx.prepass; global-batch balancing) */
    void *impl;
};

/* The routers; moe_router_create picks one by cfg->router. */
int moe_router_create(const moe_config *cfg, moe_router **out, moe_err *err);
void moe_router_destroy(moe_router *r);
int moe_router_topk_create(const moe_config *cfg, moe_router *r, moe_err *err);
int moe_router_relu_create(const moe_config *cfg, moe_router *r, moe_err *err);
int moe_router_topp_create(const moe_config *cfg, moe_router *r, moe_err *err);
int moe_router_hash_create(const moe_config *cfg, moe_router *r, moe_err *err);
int moe_router_expert_choice_create(const moe_config *cfg, moe_router *r, moe_err *err);
int moe_router_sparsemixer_create(const moe_config *cfg, moe_router *r, moe_err *err);
int moe_router_learned_hash_create(const moe_config *cfg, moe_router *r, moe_err *err);

/* Batch statistics over the global batch: in training with ctx->dp of more
 * than one rank, v[n] becomes its sum over the ranks (deterministic, the
 * same bits everywhere); otherwise untouched. */
int moe_router_global(const moe_ffn_ctx *ctx, double *v, size_t n, moe_err *err);

/* Softmax of one row in double: p[E] = softmax(l[E]); returns logsumexp. */
double moe_router_softmax(float *p, const float *l, size_t E);
/* SparseMixer's counter-based uniform in (0, 1): a pure function of its
 * arguments (splitmix64 chain), so runs and the Python reference agree. */
double moe_router_uniform(uint64_t seed, uint64_t layer, uint64_t step, uint64_t t,
                          uint64_t token, uint64_t stream);

/* ReMoE's lambda rule, once per optimiser step (METHOD §2.2):
 * lambda * alpha if sparsity < target, else lambda / alpha. */
float moe_relu_lambda_next(float lambda, double sparsity, double target, double alpha);

#endif
