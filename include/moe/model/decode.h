/* decode.h — using a trained model token by token: the KV cache, batched
 * prefill and one-token decode steps over it, the sampler (temperature,
 * top-k, top-p) and a UTF-8 helper for streaming decoded text. */
#ifndef MOE_DECODE_H
#define MOE_DECODE_H

#include "moe/util/common.h"
#include "moe/model/model.h"
#include "moe/util/rng.h"

/* Keys and values of every layer for the tokens seen so far. Grouped-query
 * attention: only the n_kv_heads KV heads are stored. Keys are stored after
 * RoPE, so a cached row never changes. Positions run 0..len-1; the next
 * token goes to position len. */
typedef struct moe_kv_cache {
    size_t n_layers, max_len;   /* max_len = the model's max_seq_len */
    size_t H, KV, hd, kvd;      /* heads, KV heads, head dim, kvd = KV*hd */
    size_t len;                 /* tokens in the cache */
    float *k, *v;               /* [n_layers, max_len, kvd] */
    float *rope_cos, *rope_sin; /* [max_len, hd/2] */

    /* Routing read-out, summed over every pass since create / stats reset:
     * per layer, (token, expert) pairs with a non-zero gate and tokens
     * routed (0 for dense layers). For CartesianMoE-like layers with several
     * routers, the pairs of all routers are added. */
    double *active_pairs, *routed_tokens;  /* [n_layers] */
    int *n_experts;                        /* [n_layers]: experts per router, 0 if dense */

    /* work buffers of a pass (grow-only; a decode step allocates nothing) */
    size_t cap_rows, cap_scores;
    float *x, *y;                               /* [cap_rows, D] the residual stream: a
                                                   block reads one and writes the other */
    float *ln, *q, *att, *rstd;                 /* [cap_rows, D] ([cap_rows] for rstd) */
    float *scores;                              /* [H, cap_scores] */
    int *tokens;                                /* [cap_rows] */
} moe_kv_cache;

/* 0 if a model of this config can decode token by token; else -1 and a
 * one-line message naming the router and the reason (moe_config_causal:
 * e.g. expert choice picks tokens across the batch, later ones included). */
int moe_decode_check(const moe_config *cfg, moe_err *err);

/* Creates an empty cache for m (refuses what moe_decode_check refuses). */
int moe_kv_cache_create(const moe_model *m, moe_kv_cache **out, moe_err *err);
void moe_kv_cache_free(moe_kv_cache *c);
/* Forgets the tokens after the first len (len <= c->len): the next pass
 * continues at position len. moe_kv_cache_rewind(c, 0) empties it. */
void moe_kv_cache_rewind(moe_kv_cache *c, size_t len);
/* Zeroes the routing read-out. */
void moe_kv_cache_reset_stats(moe_kv_cache *c);

/* Runs ids[n] at positions c->len .. c->len+n-1 in one batched pass (every
 * layer sees n rows; attention reads the cache plus these rows), appends
 * their keys and values and writes the logits of the LAST token into
 * logits_out[V] (may be NULL). Fails, leaving the cache unchanged, if
 * c->len + n > max_len or an id is outside the vocabulary. */
int moe_decode_prefill(moe_model *m, moe_kv_cache *c, const int *ids, size_t n,
                       float *logits_out, moe_err *err);
/* The same, with the logits of every row: logits_out[n, V]. */
int moe_decode_prefill_all(moe_model *m, moe_kv_cache *c, const int *ids, size_t n,
                           float *logits_out, moe_err *err);
/* One token at position c->len: one query per head against the cache.
 * logits_out[V]. */
int moe_decode_step(moe_model *m, moe_kv_cache *c, int id, float *logits_out,
                    moe_err *err);

/* Sampling. Order of the filters: temperature, then top-k, then top-p
 * (the smallest set of most probable tokens whose probability reaches p).
 * temperature 0 is greedy (argmax; ties to the lowest id). */
typedef struct moe_sample_cand { float p; int id; } moe_sample_cand;

typedef struct moe_sampler {
    double temperature;   /* >= 0 */
    long top_k;           /* 0: off */
    double top_p;         /* in (0, 1]; 1: off */
    size_t V;             /* ids sampled: 0..V-1 */
    float *prob;          /* [V] scratch: unnormalised probabilities */
    moe_sample_cand *cand;/* [V] scratch: candidates, most probable first */
} moe_sampler;

int moe_sampler_init(moe_sampler *s, size_t V, double temperature, long top_k,
                     double top_p, moe_err *err);
void moe_sampler_free(moe_sampler *s);
/* Draws one id from logits[0..V-1] (one uniform from rng unless greedy). */
int moe_sample(moe_sampler *s, const float *logits, moe_rng *rng);

/* The ids below the tokenizer's vocabulary size that name no token (holes a
 * rank table leaves, e.g. cl100k's 100256): a sampler must never draw them
 * (set their logits to -inf). *ids is malloc'd, NULL when there are none. */
struct moe_tokenizer;
int moe_sample_holes(const struct moe_tokenizer *t, uint32_t **ids, size_t *n, moe_err *err);

/* Streaming text: how many of the n bytes of s can be printed now. The
 * rest (at most 3 bytes) is the start of a UTF-8 sequence that the next
 * token may complete. Bytes that cannot start a valid sequence are never
 * held back. */
size_t moe_utf8_complete(const char *s, size_t n);

#endif
