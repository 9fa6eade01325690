/* ffn.h — the feed-forward slot of a transformer block. A dense SwiGLU FFN
 * and every mixture-of-experts layer implement this one interface; the block,
 * the trainer and the checkpoint code only ever see it. Each FFN kind is
 * described once, by its moe_ffn_kind (below), listed in src/model/ffn.c. */
#ifndef MOE_FFN_H
#define MOE_FFN_H

#include "moe/util/common.h"
#include "moe/model/config.h"
#include "moe/kernels/kernels.h"
#include "moe/model/layout.h"
#include "moe/util/profile.h"

/* State shared by the MoE layers of one model: ReMoE's adaptive lambda
 * (kept across steps, saved in checkpoints) and the routing counts gathered
 * over the MoE layers and micro-batches of the current optimiser step. */
typedef struct moe_routing_state {
    float lambda;          /* ReMoE L1 coefficient (fp32, as METHOD §2.2) */
    double active_pairs;   /* (token, expert) pairs with a non-zero gate, this step */
    double total_pairs;    /* tokens x experts routed by MoE layers, this step */
} moe_routing_state;

/* What a forward / backward call knows about the batch it works on. */
typedef struct moe_ffn_ctx {
    const int *tokens;     /* [N] input token ids (hash routing uses them) */
    size_t B, T;           /* N = B*T rows, batch-major */
    long step;             /* optimiser step (for warm-up schedules) */
    int training;          /* 1 in training: auxiliary losses are computed */
    float loss_scale;      /* d(objective)/d(this micro-batch's loss): 1/grad_accum */
    moe_routing_state *rs; /* shared routing state (NULL outside a model) */
    /* The block's residual stream h [N,D] that x = RMSNorm(h) came from,
     * for layers that need it (CartesianMoE's second sub-layer), and in
     * backward the place to ADD dObjective/dh through such paths. dresidual
     * may alias dy: add to it only after dy has been read for the last time.
     * Both NULL outside a model. */
    const float *residual;
    float *dresidual;
    /* Evaluation of routing robustness (METHOD §2.3): every router disables
     * each token's highest-probability expert and re-selects from the rest. */
    int drop_top_expert;
    /* A routing-only pass over the step's micro-batches before their
     * forward and backward (training, grad_accum > 1, for a router with
     * wants_prepass): routers add the step's counts and nothing else;
     * nothing is counted for the step's statistics; no backward follows. */
    int prepass;
    moe_profile *prof;     /* time accounting (NULL: off); a layer may mark
                            * PROF_ROUTER after routing, its caller marks the rest */
    moe_k_ctx *kc;             /* the weight products' precision and cache (NULL: fp32) */
    /* Training across processes (docs/DISTRIBUTED.md); NULL or one rank:
     * everything is local. dp: the ranks whose rows together make the global
     * batch (routers sum their batch statistics over it in training); ep:
     * the ranks that share each MoE layer's experts (expert_parallel);
     * row0: the global index of this rank's first row (x T: first token). */
    struct moe_comm *dp, *ep;
    size_t row0;
} moe_ffn_ctx;

typedef struct moe_ffn moe_ffn;

/* Where expert parallel runs one MoE layer's routed experts (the trainer
 * chooses and moves them: src/train/placement.c, docs/DISTRIBUTED.md). The
 * P ranks of the group hold E/P experts each, in slots; position
 * p * (E/P) + s is rank p's slot s. at[] starts as the identity (rank p
 * holds experts [p E/P, (p + 1) E/P)) and is what the checkpoint's order
 * is; the trainer may swap the experts of one slot index among the ranks. */
typedef struct moe_placement {
    size_t E;          /* routed experts */
    int *at;           /* [E] the expert at each position */
    double *rows;      /* [E] rows routed to each expert by this rank's
                        * training forwards, by expert (the trainer reads
                        * and zeroes them) */
    float *w[3];       /* gate, up, down: the held experts' parameters,
                        * slot s at w[k] + s * block */
    size_t block;      /* floats of one expert in each of w[] */
} moe_placement;

typedef struct moe_ffn_ops {
    const char *kind;
    /* Declares the parameters under `prefix` ("model.layers.3.mlp"). */
    void (*layout)(moe_ffn *f, moe_layout *L, const char *prefix);
    /* y[N,D] = FFN(x[N,D]); keeps what backward needs; sets f->aux_loss. */
    int (*forward)(moe_ffn *f, float *y, const float *x, size_t N,
                   const moe_ffn_ctx *ctx, moe_err *err);
    /* dx[N,D] = dL/dx (overwritten) given dy; adds the parameter gradients,
     * including those of the auxiliary loss (scaled by ctx->loss_scale). */
    int (*backward)(moe_ffn *f, float *dx, const float *dy, const float *x,
                    size_t N, const moe_ffn_ctx *ctx, moe_err *err);
    /* Optional: writes a JSON object of routing statistics of the last
     * forward into out (no-op for dense). */
    int (*stats_json)(const moe_ffn *f, moe_buf *out);
    /* Optional (NULL for dense): the routing of the last forward for router
     * `which` (0, 1, ... : CartesianMoE has two): *gates points at [N, E]
     * gate values, 0 where the expert is not active. Returns -1 when the
     * layer has no router `which`. Valid until the next forward. */
    int (*routing)(const moe_ffn *f, int which, const float **gates, size_t *N, size_t *E);
    /* Optional (NULL for dense): the placement of sub-layer `which`'s
     * routed experts (0, 1, ... : CartesianMoE has two); NULL when the
     * layer has no sub-layer `which`. */
    moe_placement *(*placement)(moe_ffn *f, int which);
    /* Optional (NULL for dense): router `which` (0, 1, ...) of the layer,
     * for the model's per-step hooks and router state; NULL when none. */
    struct moe_router *(*router)(moe_ffn *f, int which);
    void (*destroy)(moe_ffn *f);
} moe_ffn_ops;

struct moe_ffn {
    const moe_ffn_ops *ops;
    const moe_config *cfg;
    int layer;
    double aux_loss;      /* auxiliary loss of the last forward (0 for dense) */
    void *impl;           /* the implementation's own state */
};

/* What the rest of the program knows about an FFN kind, so that no code
 * outside src/moe/ compares its name: defined in the kind's own file
 * (const moe_ffn_kind moe_ffn_kind_NAME), listed once in the table of
 * src/model/ffn.c. Flags are 0 unless set. */
typedef struct moe_ffn_kind {
    const char *name;       /* the config's "ffn" value */
    /* Creates a layer of this kind (a routed kind: the layers moe_every and
     * dense_first_layers give it; the others are dense). */
    int (*create)(const moe_config *cfg, int layer, moe_ffn **out, moe_err *err);
    int routed;             /* 1: routed layers (experts, routers, routing statistics);
                             * 0: every layer is the dense FFN */
    int uses_router;        /* its layers route with the kind of the config's "router" */
    int router_options;     /* ... and with all of that router's options: its own keys,
                             * MoE++'s zero-computation experts, shared_gate (0: the
                             * layer fixes them itself, as CartesianMoE does) */
    const char *not_causal; /* NULL: causal as far as the FFN goes; else why not */
    int exportable;         /* GGUF and Hugging Face express it (src/interop/plan.c) */
    const char *no_export;  /* not exportable: what it is, for the refusal */
    int expert_parallel;    /* its experts may be split over ranks (expert_parallel) */
    int upcycle_target;     /* moe upcycle can make it from a dense model */
    int merges_experts;     /* experts merged into one FFN per segment (Lory): the
                             * ONNX export writes that graph */
    /* Optional: the share of a routed expert tensor that one token uses
     * (the active-parameter count); NULL: as its router kind says
     * (moe_ffn_active_share). */
    double (*active_share)(const moe_config *c);
    /* Optional: the kind's own rules on a config (moe_config_finalize);
     * -1 with a message naming the key. */
    int (*validate)(const moe_config *c, moe_err *err);
} moe_ffn_kind;

/* The kind of that name, or NULL; the i-th of the table (in the order the
 * config's "ffn" key lists them, the first the default), or NULL past the
 * end. */
const moe_ffn_kind *moe_ffn_kind_find(const char *name);
const moe_ffn_kind *moe_ffn_kind_at(size_t i);
/* The router kind of the config's routed layers: cfg->router's when its FFN
 * kind uses_router, else NULL (dense, Lory's own routing, unknown names). */
const struct moe_router_kind *moe_ffn_router_kind(const moe_config *cfg);
/* The share of a routed expert tensor that one token uses (the
 * active-parameter count): the FFN kind's active_share, else its router
 * kind's, else top_k / n_experts, at most 1 (zero-computation experts
 * beside the FFN ones: at most every FFN expert). */
double moe_ffn_active_share(const moe_config *cfg);

/* Creates the FFN of block `layer` as the config says. */
int moe_ffn_create(const moe_config *cfg, int layer, moe_ffn **out, moe_err *err);
void moe_ffn_destroy(moe_ffn *f);

/* The dense SwiGLU FFN. */
int moe_ffn_dense_create(const moe_config *cfg, int layer, moe_ffn **out, moe_err *err);
/* The mixture-of-experts layer (src/moe/layer.c). */
int moe_ffn_moe_create(const moe_config *cfg, int layer, moe_ffn **out, moe_err *err);
/* CartesianMoE's two sequential sub-layers of half-size experts
 * (src/moe/cartesian.c, METHOD §2.3). */
int moe_ffn_cartesian_create(const moe_config *cfg, int layer, moe_ffn **out, moe_err *err);
/* Lory's segment-level expert merging (src/moe/lory.c, METHOD §2.4). */
int moe_ffn_lory_create(const moe_config *cfg, int layer, moe_ffn **out, moe_err *err);

#endif
