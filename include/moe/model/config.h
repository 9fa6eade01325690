/* config.h — every number a user sets (model shape, training), with its
 * default, allowed range and documentation in one table (src/model/config_keys.c).
 * Configs are JSON objects; unknown keys and out-of-range values are refused
 * with a message naming the key. */
#ifndef MOE_CONFIG_H
#define MOE_CONFIG_H

#include "moe/util/common.h"
#include "moe/util/json.h"

typedef struct moe_config {
    /* model */
    int vocab_size;       /* token ids are 0..vocab_size-1 */
    int hidden;           /* model width D */
    int n_layers;
    int n_heads;
    int n_kv_heads;       /* grouped-query attention: n_heads % n_kv_heads == 0 */
    int ffn_dim;          /* SwiGLU intermediate size (0 in JSON: 4 x hidden) */
    int max_seq_len;
    double rope_theta;
    double norm_eps;
    double init_std;
    char ffn[16];         /* feed-forward kind: "dense", "moe", "cartesian" or "lory" */
    int moe_every;        /* with ffn not "dense": layer l uses it iff (l+1) % moe_every == 0 */
    int dense_first_layers; /* layers 0..N-1 are dense whatever moe_every says */
    /* mixture of experts (METHOD §2) */
    char router[16];      /* "topk" (dMoE), "relu" (ReMoE), "topp", "hash",
                             "expert_choice", "sparsemixer", "learned_hash" (docs/ROUTERS.md) */
    int n_experts;        /* E */
    int top_k;            /* k: active experts per token (on average for relu) */
    int granularity;      /* G: E*G experts of ffn_dim/G, k*G active */
    int n_shared_experts; /* always-active experts of size ffn_dim/G */
    int n_zero_experts, n_copy_experts, n_const_experts; /* MoE++'s zero-computation experts,
                             routed beside the E G FFN experts */
    int norm_topk_prob;   /* bool: renormalise the top-k gates to sum 1 (at every k; the
                             internal value MOE_RENORM_IF_SEVERAL only when k > 1) */
    double aux_loss_coef; /* TopK load-balancing loss c_aux */
    double z_loss_coef;   /* router z-loss c_z (0: off) */
    int k_warm;           /* TopK near-dense warm-up: k_warm experts ... (0: off) */
    int k_warm_steps;     /* ... for the first k_warm_steps steps */
    char scoring_func[16]; /* TopK scores: "softmax" or "sigmoid" (DeepSeek-V3) */
    double routed_scaling_factor; /* TopK: the chosen gates are multiplied by it */
    int global_batch_balance; /* bool: TopK's balance loss counts n_e over the whole step */
    int aux_free_bias;    /* bool: TopK's per-expert selection bias (auxiliary-loss-free balancing) */
    double aux_free_rate; /* u: the bias moves by u per step toward the mean load */
    double relu_lambda0;  /* ReMoE: initial L1 coefficient */
    double relu_alpha;    /* ReMoE: lambda multiplier per step */
    int l1_load_balance;  /* bool: ReMoE load-balanced L1 (false: plain L1) */
    double target_sparsity; /* ReMoE target; 0 means 1 - k/E */
    int relu_lambda_per_layer; /* bool: each MoE layer its own lambda, from its own sparsity */
    int shared_gate;      /* bool: mix routed and shared output by a learned 2-way softmax */
    double top_p;         /* TopP: cumulative probability threshold */
    double topp_entropy_coef; /* TopP: dynamic (entropy) loss coefficient */
    double jitter_eps;    /* SparseMixer-v2: candidate threshold eps */
    int lory_segment;     /* Lory: segment length in tokens */
    /* training */
    int steps;
    int batch_size;       /* sequences per micro-batch */
    int seq_len;
    int grad_accum;       /* micro-batches per optimiser step */
    double lr;
    int warmup;           /* steps of linear warm-up (-1 in JSON: 1% of steps) */
    double min_lr_ratio;  /* cosine decays to lr * min_lr_ratio */
    double weight_decay;
    double beta1, beta2, adam_eps;
    double grad_clip;     /* global-norm clip; 0 disables */
    int seed;
    int threads;          /* 0: all cores */
    char precision[16];   /* weight products: "auto" (resolved at model creation), "fp32" or "bf16" */
    int shuffle;          /* bool */
    int checkpoint_every; /* steps between checkpoints; 0: only at the end */
    double checkpoint_minutes; /* also after a step this many wall minutes after the last (0: off) */
    int keep_checkpoints; /* how many step checkpoints to keep */
    int expert_parallel;  /* EP: ranks sharing each MoE layer's experts */
    int zero_stage;       /* 1: AdamW moments sharded over the ranks (ZeRO-1) */
    int rebalance_experts;/* EP: steps between choices of the experts' ranks (0: never) */
    int max_bad_steps;    /* non-finite steps in a row before returning to the last checkpoint */
} moe_config;

/* norm_topk_prob of CartesianMoE's sub-layers (never read from JSON):
 * renormalise only when more than one gate is selected (METHOD §2.3). */
#define MOE_RENORM_IF_SEVERAL 2

void moe_config_defaults(moe_config *c);
/* Applies the keys of a JSON object on top of *c. `what` names the source. */
int moe_config_apply_json(moe_config *c, const moe_json_value *obj, const char *what, moe_err *err);
/* defaults + file + validation */
int moe_config_load(const char *path, moe_config *c, moe_err *err);
/* The same over c as the caller has filled it (defaults with some changed):
 * the file's keys applied, then finalized. */
int moe_config_load_over(const char *path, moe_config *c, moe_err *err);
/* Sets one numeric key by name, with the table's range check (CLI flags). */
int moe_config_set(moe_config *c, const char *key, double value, moe_err *err);
/* Cross-key checks and derived defaults (ffn_dim 0, warmup -1). */
int moe_config_finalize(moe_config *c, moe_err *err);
/* Every key, as a pretty JSON object. */
int moe_config_to_json(const moe_config *c, moe_buf *out);
/* 1 if every layer of the model is causal (a token's output depends only on
 * itself and earlier tokens), so it can generate token by token; else 0 and
 * *why names the reason (e.g. expert choice looks across the batch). */
int moe_config_causal(const moe_config *c, const char **why);

/* Markdown table of every key (docs/CONFIG.md is generated from this). */
int moe_config_doc(moe_buf *out);

#endif
