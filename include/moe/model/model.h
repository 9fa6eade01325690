/* model.h — the LLaMA-style transformer (METHOD §1): embedding, blocks of
 * RMSNorm + causal GQA attention with RoPE + RMSNorm + FFN slot, final norm,
 * untied lm_head. Forward, backward, init, save and load. */
#ifndef MOE_MODEL_H
#define MOE_MODEL_H

#include "moe/util/common.h"
#include "moe/model/config.h"
#include "moe/model/ffn.h"
#include "moe/model/layout.h"

typedef struct moe_block {
    /* parameters and their gradients (d_ prefix), pointers into the model's
     * two allocations */
    float *attn_norm, *wq, *wk, *wv, *wo, *ffn_norm;
    float *d_attn_norm, *d_wq, *d_wk, *d_wv, *d_wo, *d_ffn_norm;
    moe_ffn *ffn;
} moe_block;

/* Saved activations of one block for B*T = N rows. */
typedef struct block_acts {
    float *ln1, *rstd1;     /* [N,D], [N] */
    float *q, *k, *v;       /* [N,H*hd], [N,KV*hd], [N,KV*hd] (q, k after RoPE) */
    float *lse;             /* [B,H,T] logsumexp of each query row's scores (attention's backward) */
    float *attn_out;        /* [N,H*hd] before the output projection */
    float *ln2, *rstd2;     /* [N,D], [N] */
} block_acts;

typedef struct moe_model {
    moe_config cfg;
    moe_layout layout;
    float *params, *grads;  /* layout.total floats each */
    size_t n_params;
    float *embed, *d_embed;           /* [V,D] model.embed_tokens.weight */
    float *final_norm, *d_final_norm; /* [D] */
    float *lm_head, *d_lm_head;       /* [V,D] */
    moe_block *blocks;                /* [n_layers] */

    /* activations for the last forward (grown to the largest B,T seen) */
    size_t B, T, cap_rows, cap_B, cap_T;
    float *acts_mem;
    float **res;            /* [L+1] residual stream entering block l, [N,D] */
    float **res_mid;        /* [L] after attention, [N,D] */
    block_acts *acts;       /* [L] */
    float *lnf, *rstdf;     /* [N,D], [N] */
    float *head_scratch;    /* the LM head's blocks (moe_k_lm_head): no [N,V] logits in training */
    float *losses;          /* [N] per-token loss of the last forward with targets */
    float *lse;             /* [N] logsumexp of each row of logits */
    int *argmax;            /* [N] each row's first maximal logit (moe_model_forward with targets) */
    int keep_logits;        /* set: forward also writes every row's logits into logits */
    float *logits;          /* [N,V] with keep_logits only (NULL until then) */
    size_t cap_logits;
    float *rope_cos, *rope_sin;  /* [T, hd/2] */
    int *tokens, *targets;  /* [N] copies of the last batch */
    /* backward scratch */
    float *dres, *dln, *dq, *dk, *dv, *dattn, *dscratch;
    int has_targets;
    moe_routing_state rs;   /* ReMoE lambda and this step's routing counts */
    long step;              /* set by the trainer; read by FFNs with schedules */
    int training;
    int drop_top_expert;    /* evaluation of routing robustness (METHOD §2.3) */
    int prepass;            /* forwards are the step's routing-only pass (moe_ffn_ctx.prepass) */
    moe_profile *prof;      /* time accounting of forward/backward (NULL: off) */
    moe_k_ctx *kc;              /* matrix products: precision in effect, bf16 cache */
    /* Training across processes (set by the trainer; NULL: one process).
     * With dp of more than one rank this rank holds rows [row0, row0 + B)
     * of the global batch, and the losses forward returns are its shares of
     * the global means (their sum over the ranks is the global loss). */
    struct moe_comm *dp, *ep;
    size_t row0;
    double loss_count;      /* targets counted by the last forward's mean (global) */
} moe_model;

/* Bytes a training run of this model needs at most: parameters, gradients
 * and AdamW moments, activations for a B x T micro-batch, and the FFN
 * buffers with every (token, expert) pair active (ReLU routing's worst case). */
size_t moe_model_memory_estimate(const moe_config *c, size_t n_params, size_t B, size_t T);

/* Parameter counts of a config, from its tensor table (nothing allocated:
 * works for models far larger than memory): the one parameter counter,
 * which `moe config --params`, training's memory check and the importers'
 * size checks all read. `active`: the parameters one
 * token uses, with each routed expert tensor counted at the layer's k/E
 * (top_k/n_experts; granularity cancels; TopP, ReLU and expert choice use
 * their target k; Lory counts one merged expert; a learned-hash table one
 * row), everything else in full, shared experts included. `embedding`:
 * input embedding plus LM head (the papers' sizes include both: untied). */
typedef struct moe_param_count {
    size_t total, active, embedding;
    size_t experts;        /* routed and shared expert tensors, all of them */
    size_t experts_active; /* of them, what one token uses (routed at k/E) */
    size_t router;         /* routers and shared gates, in full (a learned-hash
                              table too, though active counts one row of it) */
    size_t held;           /* what one process holding part of `parts` of the
                              routed experts allocates (moe_model_create_part:
                              its n_params); total when parts is 1 */
} moe_param_count;
int moe_model_count_params(const moe_config *cfg, int parts, moe_param_count *out, moe_err *err);
/* The same with the routed experts' active share given (0..1: 1 - the
 * sparsity a run measured, e.g. ReMoE's) instead of the nominal one that
 * moe_model_count_params takes from the kinds (k of E). */
int moe_model_count_params_at(const moe_config *cfg, int parts, double share, moe_param_count *out,
                              moe_err *err);

/* Builds a model from a finalized config; parameters zero (call init or load).
 * Its matrix products run in cfg->precision ("auto" resolved here, once,
 * and m->cfg.precision records what it resolved to; bf16 falls back to
 * fp32 where the CPU lacks it: moe_model_precision says which is in
 * effect). m->cfg is read-only from here on: the routers and FFNs hold
 * pointers into it, and a checkpoint saves it. */
int moe_model_create(const moe_config *cfg, moe_model **out, moe_err *err);
/* The same, holding only part `part` of `parts` of every MoE layer's routed
 * experts (expert parallel, docs/DISTRIBUTED.md: experts [part E/parts,
 * (part+1) E/parts); layout.h's split tensors). Only the owners of an
 * expert run it, so such a model runs only inside its expert-parallel
 * group; init and load fill the rows it holds. */
int moe_model_create_part(const moe_config *cfg, int part, int parts, moe_model **out, moe_err *err);
void moe_model_free(moe_model *m);
/* "fp32" or "bf16": the precision the model's products run in. */
const char *moe_model_precision(const moe_model *m);
/* "auto" resolved to what this CPU runs best: "bf16" where oneDNN runs bf16
 * products on AMX tiles (moe_k_bf16_amx), else "fp32" (also with AVX512_BF16
 * alone, where bf16 measured slower than fp32); any other value
 * is returned as it is. *why (may be NULL) gets the reason for auto's
 * choice, NULL for an explicit value. */
const char *moe_precision_resolve(const char *precision, const char **why);
/* METHOD §1 init: normal(0, init_std), output projections init_std/sqrt(2L), norms 1. */
void moe_model_init(moe_model *m, uint64_t seed);

/* Forward over inputs[B*T]. With targets (may be NULL) computes the mean
 * next-token cross-entropy (across ranks: this rank's share, see dp) into *lm_loss and the summed auxiliary losses of
 * the FFN slots into *aux_loss (either pointer may be NULL). */
int moe_model_forward(moe_model *m, const int *inputs, const int *targets,
                      size_t B, size_t T, double *lm_loss, double *aux_loss,
                      moe_err *err);
/* One training micro-batch: moe_model_forward with targets, then the
 * backward of (lm_loss + aux_loss) * loss_scale (>= 0), ADDED into m->grads.
 * The LM head's loss and gradients are one fused pass over row blocks
 * (moe_k_lm_head): the [B*T, V] logits are never formed. */
int moe_model_forward_backward(moe_model *m, const int *inputs, const int *targets, size_t B,
                               size_t T, float loss_scale, double *lm_loss, double *aux_loss,
                               moe_err *err);
void moe_model_zero_grad(moe_model *m);

/* Closes an optimiser step for the routers: returns the step's sparsity
 * over all MoE layers and micro-batches (METHOD §2.2; 0 without MoE layers),
 * applies ReMoE's lambda rule when the router is relu, lets every router
 * update its own state (its end_step: per-layer lambda, aux-loss-free
 * bias), and resets the counts. */
double moe_model_end_step(moe_model *m);
/* A step that makes no update (skipped, or rolled back): the counts are
 * forgotten and no router state changes. */
void moe_model_discard_step(moe_model *m);
/* Whether a router needs the routing counts of the whole step before the
 * first backward (global-batch balancing): with grad_accum > 1 the trainer
 * then forwards the step's micro-batches once with m->prepass set. */
int moe_model_wants_prepass(const moe_model *m);
/* Router `which` (0, 1, ...) of block `layer`; NULL when it has none. */
struct moe_router *moe_model_router(const moe_model *m, int layer, int which);
/* The routers' state tensors (src/moe/moe/router.h) are saved beside
 * model.safetensors as router_state.safetensors, named
 * "model.layers.L.mlp.router.NAME", by moe_model_save and read back by
 * moe_model_load_weights (docs/FORMAT.md). */

/* One block, the one place its equations are written (block.c):
 *     mid = x + Wo·Attn(RoPE(Wq·n1), RoPE(Wk·n1), Wv·n1),  n1 = RMSNorm(x)
 *     out = mid + FFN(n2),                                 n2 = RMSNorm(mid)
 * Forward of block l over ctx->B sequences of ctx->T rows (n = B*T):
 * x, mid, out [n,D]; mid may be x (then updated in place), out is neither.
 * a receives ln1 = n1, ln2 = n2 (one buffer may serve both when nothing
 * reads n1 later), rstd1, rstd2, q and attn_out.
 * kv NULL (training): every sequence starts at position 0 (m's RoPE tables
 * and attention scratch); the keys, values and lse go to a->k, a->v, a->lse
 * for moe_block_backward.
 * kv (decoding, B = 1): the rows are positions kv->len.. of one sequence;
 * their keys and values are written into layer l's cache at those rows
 * (a->k, a->v, a->lse unused) and each row attends to the cache up to its
 * own position. The caller advances kv->len after the last block.
 * ctx: the FFN slot's context (ctx->residual is set to mid). */
struct moe_kv_cache;
int moe_block_forward(moe_model *m, int l, const float *x, float *mid, float *out, const block_acts *a,
                      struct moe_kv_cache *kv, moe_ffn_ctx *ctx, moe_err *err);
/* Backward of training's last forward of block l (x = m->res[l], mid =
 * m->res_mid[l], a = m->acts[l]): m->dres holds dObjective/d res[l+1] on
 * entry and dObjective/d res[l] on return; parameter gradients are added
 * into m->grads. */
int moe_block_backward(moe_model *m, int l, moe_ffn_ctx *ctx, moe_err *err);

/* Logits of the last forward: [B*T, V], when m->keep_logits was set for
 * it (else NULL or stale: no forward forms them otherwise). */
static inline const float *moe_model_logits(const moe_model *m) { return m->logits; }

/* Checkpoint I/O: DIR/config.json and DIR/model.safetensors. Saving
 * refuses weights holding a NaN or an infinity (naming the tensor), and
 * loading refuses them too (moe_st_load_f32), so poison never travels. */
int moe_model_save(const moe_model *m, const char *dir, moe_err *err);

/* Part `part` of split tensor t of array `array` (the index among those
 * being written) from the process that holds it, into buf[t->size]: how
 * rank 0 writes a model whose experts are divided among processes. */
typedef int (*moe_fetch_part)(void *arg, int array, const moe_tensor *t, int part, float *buf,
                              moe_err *err);
/* Writes n_arrays arrays laid out as L into one safetensors file, tensor by
 * tensor: array k under the name prefixes[k] + the tensor's name, each
 * tensor whole (a split tensor's other parts come from fetch, called for
 * every part in order even after a failure: see moe_st_write_from). Refuses a
 * NaN or an infinity, naming the tensor. */
int moe_layout_write(const char *path, const moe_layout *L, int n_arrays, const float *const *arrays,
                     const char *const *prefixes, moe_fetch_part fetch, void *arg,
                     const char *const *meta_keys, const char *const *meta_values, size_t meta_count,
                     moe_err *err);
/* moe_model_save for a model divided among processes (fetch as above). */
int moe_model_save_divided(const moe_model *m, const char *dir, moe_fetch_part fetch, void *arg,
                           moe_err *err);
int moe_model_load(const char *dir, moe_model **out, moe_err *err);
/* moe_model_load with the products in `precision` ("auto", "fp32" or
 * "bf16"; NULL: the checkpoint's own): the --precision of score, eval,
 * generate and serve, set on the config before the model is built (as
 * train's options are), so m->cfg.precision says what was asked for. */
int moe_model_load_precision(const char *dir, const char *precision, moe_model **out, moe_err *err);
/* CKPT/config.json (checksum-verified) as a finalized config: what a model
 * load would build, known before anything is allocated. */
int moe_checkpoint_config(const char *ckpt, moe_config *cfg, moe_err *err);
/* The tokenizer that goes with checkpoint CKPT: the file `path` when it is
 * given, else CKPT/tokenizer (checksum-verified); *out is NULL (and 0 is
 * returned) when there is neither, so the caller decides what to do. */
struct moe_tokenizer;
int moe_checkpoint_tokenizer(const char *ckpt, const char *path, struct moe_tokenizer **out,
                             moe_err *err);

/* Reads CKPT/model.safetensors into an existing model of the same config. */
int moe_model_load_weights(moe_model *m, const char *ckpt, moe_err *err);
/* Resolves a model or run directory to the checkpoint directory to read:
 * DIR itself if it holds model.safetensors, else the newest DIR/checkpoints/step-*. */
int moe_resolve_checkpoint(const char *dir, char *out, size_t cap, moe_err *err);
/* 1 when ckpt is a checkpoint folder RUN/checkpoints/step-N of a training
 * run, with the run's absolute path in run[cap]; else 0. */
int moe_checkpoint_run(const char *ckpt, char *run, size_t cap);

#endif
