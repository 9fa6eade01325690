/* kernels.h — the numeric primitives every layer is built from: matrix
 * products (oneDNN / OpenBLAS, gemm.c), RMSNorm, RoPE, causal attention, SwiGLU, cross-entropy.
 * Forward / backward pairs over raw float pointers; shapes in the comments.
 * This is the one place a backend plugs in. Backward functions ACCUMULATE
 * (+=) into parameter gradients and, unless said otherwise, OVERWRITE input
 * gradients. Row-major throughout; N = number of tokens (B*T). */
#ifndef MOE_KERNELS_H
#define MOE_KERNELS_H

#include <stddef.h>

#include "moe/util/common.h"

/* C[M,N] = alpha op(A)[M,K] op(B)[K,N] + beta C, row-major with leading
 * dimensions lda, ldb, ldc; ta / tb non-zero: the operand is stored
 * transposed. The one entry to the fp32 matrix-product libraries (gemm.c);
 * bit-identical from run to run at a fixed thread count. */
void moe_k_sgemm(int ta, int tb, size_t M, size_t N, size_t K, float alpha, const float *A,
             size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc);

/* Precision of the weight matrix products (config key "precision"). */
typedef enum { MOE_K_FP32 = 0, MOE_K_BF16 = 1 } moe_k_precision;

/* The matrix-product context of one model: the precision in effect and,
 * for bf16, oneDNN's engine, one stream and input buffers per thread, and
 * the matmul primitives cached per shape. Safe to use from the threads of
 * one OpenMP team at once. */
typedef struct moe_k_ctx moe_k_ctx;

/* 1 when bf16 products can run fast here: oneDNN may use AVX512_BF16 (or
 * AMX) on this CPU. The environment variable MOE_NO_BF16=1 (or oneDNN's
 * ONEDNN_MAX_CPU_ISA below AVX512_CORE_BF16) makes it 0. */
int moe_k_bf16_available(void);
/* 1 when moe_k_bf16_available() and oneDNN runs the bf16 products on AMX tiles
 * (AMX-BF16: several times the fp32 FMA rate); 0 on CPUs whose bf16 is
 * AVX512_BF16 alone (at most about 2x the fp32 FMAs, less than the cost of
 * rounding the inputs at the widths moe trains on: docs/PERFORMANCE.md). */
int moe_k_bf16_amx(void);
/* want = MOE_K_BF16 falls back to MOE_K_FP32 when moe_k_bf16_available() is 0;
 * moe_k_ctx_precision tells which is in effect (MOE_K_FP32 for kc == NULL). */
int moe_k_ctx_create(moe_k_precision want, moe_k_ctx **out, moe_err *err);
void moe_k_ctx_free(moe_k_ctx *kc);
moe_k_precision moe_k_ctx_precision(const moe_k_ctx *kc);
/* The n floats at params (a model's parameters) do not change from now on
 * (inference): the bf16 copies of weights inside them are made once and
 * kept. params NULL: they may change again (the copies are dropped). */
void moe_k_ctx_freeze_weights(moe_k_ctx *kc, const float *params, size_t n);
/* x rounded to the nearest bf16 (ties to even), as the bf16 products round
 * their inputs. */
float moe_k_round_bf16(float x);

/* The weight products of the layers. kc NULL or fp32: moe_k_sgemm. bf16: in /
 * dout and W are rounded to bf16, products accumulate in fp32, results
 * (out, din, dW) are fp32.
 * out[N,O] = in[N,C] @ W[O,C]^T   (beta = 0: overwrite, 1: accumulate) */
void moe_k_matmul_forward(moe_k_ctx *kc, float *out, const float *in, const float *W,
                      size_t N, size_t C, size_t O, float beta);
/* din[N,C] (=, or += if accumulate) dout[N,O] @ W[O,C];  dW[O,C] += dout^T @ in.
 * din or dW may be NULL to skip it. */
void moe_k_matmul_backward(moe_k_ctx *kc, float *din, float *dW, const float *dout, const float *in,
                       const float *W, size_t N, size_t C, size_t O, int accumulate);

/* Activations that only products read later (the SwiGLU output a: the
 * down projection's input, and its weight gradient's) are kept in the
 * context's precision: moe_k_act_size bytes an element, 2 under bf16, where the
 * products would round them to bf16 anyway (same rounding, so the results
 * are the bits of the fp32-kept path at half the memory), 4 under fp32
 * (plain floats: the _act functions are the ones above). */
size_t moe_k_act_size(const moe_k_ctx *kc);
/* a[n] = silu(h1) * h3 (moe_k_swiglu_forward), stored in the context's precision. */
void moe_k_swiglu_forward_act(const moe_k_ctx *kc, void *a, const float *h1, const float *h3, size_t n);
/* moe_k_matmul_forward and _backward with `in` kept by moe_k_swiglu_forward_act. */
void moe_k_matmul_forward_act(moe_k_ctx *kc, float *out, const void *in, const float *W, size_t N, size_t C,
                          size_t O, float beta);
void moe_k_matmul_backward_act(moe_k_ctx *kc, float *din, float *dW, const float *dout, const void *in,
                           const float *W, size_t N, size_t C, size_t O, int accumulate);

/* y[N,D] = x * rstd * w, rstd[N] = 1/sqrt(mean(x^2) + eps) */
void moe_k_rmsnorm_forward(float *y, float *rstd, const float *x, const float *w,
                       size_t N, size_t D, float eps);
/* dx[N,D] (+= if accumulate, else =); dw[D] += */
void moe_k_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x,
                        const float *w, const float *rstd, size_t N, size_t D,
                        int accumulate);

/* Rotary tables for positions 0..T-1: cos, sin [T, hd/2], freq_i = theta^(-2i/hd). */
void moe_k_rope_tables(float *cos_t, float *sin_t, size_t T, size_t hd, double theta);
/* In-place rotation of x[B*T, nh*hd] (head h at columns h*hd..), rotate-half
 * convention (pairs i, i+hd/2) as in Hugging Face LLaMA. inverse = 1 rotates
 * by minus the angle (the backward pass). */
void moe_k_rope(float *x, const float *cos_t, const float *sin_t, size_t B, size_t T,
            size_t nh, size_t hd, int inverse);

/* Causal grouped-query attention in blocks (attention.c, flash-style: an
 * online softmax over key blocks; no [T,T] matrix is kept).
 * q[B*T, H*hd], k,v[B*T, KV*hd] -> out[B*T, H*hd]; lse[B, H, T] gets the
 * logsumexp of each query row's scaled scores, from which the backward
 * recomputes the probabilities. Head h reads KV head h / (H/KV); scale =
 * 1/sqrt(hd). prec MOE_K_BF16: q, k and v are rounded to bf16 where the
 * products read them (sums in fp32); the probabilities, dout, the softmax,
 * its statistics and the results stay fp32. scratch holds
 * moe_k_attention_scratch(B, T, H, hd) floats (either pass). */
size_t moe_k_attention_scratch(size_t B, size_t T, size_t H, size_t hd);
void moe_k_attention_forward(moe_k_precision prec, float *out, float *lse, float *scratch, const float *q,
                         const float *k, const float *v, size_t B, size_t T, size_t H, size_t KV,
                         size_t hd);
/* dq, dk, dv overwritten, from dout and the forward's out and lse. */
void moe_k_attention_backward(moe_k_precision prec, float *dq, float *dk, float *dv, float *scratch,
                          const float *dout, const float *out, const float *lse, const float *q,
                          const float *k, const float *v, size_t B, size_t T, size_t H, size_t KV,
                          size_t hd);

/* The same attention for n new rows of one sequence against a KV cache
 * (decoding): q[n, H*hd] holds the queries of positions p0..p0+n-1, K and
 * V [p0+n, KV*hd] the keys and values of positions 0..p0+n-1 (these rows
 * included); query i sees keys 0..p0+i. out[n, H*hd]; scores holds
 * H*n*(p0+n) floats (the probabilities, kept whole: n is small). Products
 * of the given values in fp32 (for bf16 the caller rounds q, K and V). */
void moe_k_attention_cached(float *out, float *scores, const float *q, const float *K, const float *V,
                        size_t n, size_t p0, size_t H, size_t KV, size_t hd);

/* a[N,F] = silu(h1) * h3 */
void moe_k_swiglu_forward(float *a, const float *h1, const float *h3, size_t n);
/* dh1, dh3 [N,F] from da */
void moe_k_swiglu_backward(float *dh1, float *dh3, const float *da, const float *h1,
                       const float *h3, size_t n);

/* The LM head and its cross-entropy, fused (lm_head.c): logits = x @ W^T are
 * formed moe_k_head_rows(V) rows at a time into scratch and never for the whole
 * batch; each block's loss and gradient are done before the next block.
 * Products in kc's precision. Returns the sum of the losses, in row order. */
typedef struct moe_k_head {
    const float *x;         /* [N,D] the final norm's output */
    const float *W;         /* [V,D] the head's weight */
    const int *targets;     /* [N], < 0 ignored (loss 0, no gradient); NULL: none */
    size_t N, D, V;
    float *scratch;         /* [moe_k_head_scratch(D, V)] */
    float *losses, *lse;    /* [N] out: each row's loss (0 for an ignored target < 0) and logsumexp */
    int *argmax;            /* [N] out, the first maximal logit (NULL: skipped) */
    float *logits;          /* [N,V] out, every logit (NULL: not kept) */
    /* gradients of dscale * sum(losses) (dx NULL: none): dx[N,D] overwritten,
     * dW[V,D] += (dlogits = (softmax - onehot) * dscale) */
    float *dx, *dW;
    float dscale;
} moe_k_head;
double moe_k_lm_head(moe_k_ctx *kc, const moe_k_head *h);
/* Rows of moe_k_lm_head's blocks for a vocabulary of V, and the floats of its
 * scratch: one block's logits [rows, V] and the weight gradient [D, V]. */
size_t moe_k_head_rows(size_t V);
size_t moe_k_head_scratch(size_t D, size_t V);

/* y[n] += x[n] */
void moe_k_add(float *y, const float *x, size_t n);

#endif
