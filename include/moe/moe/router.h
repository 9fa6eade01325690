/* router.h — the router interface of the MoE layer (METHOD §2). A router turns
 * router logits [N, E] into gates [N, E] (zero = expert not active for that
 * token) plus an auxiliary loss, and back-propagates through both. The MoE
 * layer (src/moe/layer.c) turns the gates into per-expert token lists, runs
 * the experts and combines. Each router kind is described once, by its
 * moe_router_kind (below): adding a router is one file defining its ops and
 * its kind, and one line in the table of src/moe/router.c (docs/ROUTERS.md,
 * "Adding a router"). */
#ifndef MOE_ROUTER_H
#define MOE_ROUTER_H

#include "moe/util/common.h"
#include "moe/model/config.h"
#include "moe/model/ffn.h"

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

/* How the ONNX export (src/interop/onnx.c) writes a router's gates: one
 * graph per rule. MOE_GATES_NONE: no graph yet, the export is refused. */
typedef enum moe_gate_rule {
    MOE_GATES_NONE = 0,
    MOE_GATES_TOPK,          /* the k largest softmax (or sigmoid) scores (topk.c) */
    MOE_GATES_RELU,          /* relu(logits) (relu.c) */
    MOE_GATES_TOPP,          /* by falling probability up to top_p (topp.c) */
    MOE_GATES_SPARSEMIXER,   /* k picks among the candidates (sparsemixer.c, eval) */
    MOE_GATES_EXPERT_CHOICE, /* each expert takes its C best tokens (expert_choice.c) */
    MOE_GATES_BY_TOKEN,      /* a function of the token id alone: the router is run
                              * once over every id and its gates become a table */
} moe_gate_rule;

/* What the rest of the program knows about a router kind, so that no code
 * outside src/moe/ compares its name: defined in the kind's own file
 * (const moe_router_kind moe_router_kind_NAME), listed once in the table of
 * src/moe/router.c. Flags are 0 unless set. */
typedef struct moe_router_kind {
    const char *name;       /* the config's "router" value */
    /* Fills r (r->E, r->k, r->has_weight = 1 and r->cfg already set): its
     * ops, impl and any change to has_weight. */
    int (*create)(const moe_config *cfg, moe_router *r, moe_err *err);
    /* NULL: a token's gates depend on that token and the earlier ones only;
     * else why not (generation refuses it: moe_config_causal). */
    const char *not_causal;
    int exportable;         /* GGUF and Hugging Face express it (src/interop/plan.c) */
    const char *no_export;  /* not exportable: what it is, for "... has no counterpart
                             * there" (NULL: a generic refusal) */
    moe_gate_rule gates;    /* its gates in the ONNX export */
    int fixed_k;            /* every token activates exactly k experts (the report
                             * draws the even load k/E; else the layer's mean) */
    int zero_experts;       /* may route to MoE++'s zero-computation experts */
    int sparsity_lambda;    /* steers its sparsity toward target_sparsity with the
                             * model's adaptive coefficient lambda (ReMoE, METHOD §2.2):
                             * the model updates lambda after each step, the console
                             * and the report show sparsity and lambda */
    /* Config keys that only this router reads (NULL-terminated, or NULL):
     * setting one away from its default with another router, or on an FFN
     * kind without router_options, is refused, naming the key. */
    const char *const *own_keys;
    /* Optional: the share of the routed experts one token uses, on average
     * (the active-parameter count, moe_ffn_active_share); NULL: top_k /
     * n_experts, at most 1. */
    double (*active_share)(const moe_config *c);
    /* Optional: the kind's own rules on a config (moe_config_finalize calls
     * it when the FFN kind routes with the config's router and its options);
     * -1 with a message naming the key. */
    int (*validate)(const moe_config *c, moe_err *err);
} moe_router_kind;

/* The kind of that name, or NULL; the i-th of the table (in the order the
 * config's "router" key lists them, the first the default), or NULL past
 * the end. */
const moe_router_kind *moe_router_kind_find(const char *name);
const moe_router_kind *moe_router_kind_at(size_t i);

/* The routers; moe_router_create makes one of cfg->router's kind. */
int moe_router_create(const moe_config *cfg, moe_router **out, moe_err *err);
void moe_router_destroy(moe_router *r);
/* TopK's create (learned_hash.c wraps a TopK router). */
int moe_router_topk_create(const moe_config *cfg, moe_router *r, moe_err *err);

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
