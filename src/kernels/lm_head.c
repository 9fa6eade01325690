/* lm_head.c — the LM head and its cross-entropy fused over row blocks
 * (kernels.h: moe_k_lm_head). A block's logits [rows, V] are formed by one
 * product, turned into the loss and, when training, into
 * dlogits = (softmax - onehot) * dscale in place, and consumed at once by
 * the two backward products, while they are still in cache: the batch's
 * [N, V] logits never exist (docs/PERFORMANCE.md, "The LM head"). */
#include "moe/kernels/kernels.h"

#include "fastmath.h"

#include <assert.h>
#include <math.h>
#include <string.h>

/* Rows of one block: the block's logits take at most HEAD_BLOCK_FLOATS
 * floats (2 MiB, 128 rows of a 4096 vocabulary: in L3 on every machine
 * here, so the backward products read the block back from cache; on a
 * Zen 3 the head ran 173 ms with 128-row blocks against 188-202 ms with
 * 32, 64 or 256, one thread), between HEAD_MIN_ROWS (products of fewer
 * rows run far below the FMA peak) and HEAD_MAX_ROWS; a multiple of 32,
 * the bf16 products' row block (gemm.c). */
#define HEAD_BLOCK_FLOATS (512u * 1024u)
#define HEAD_MIN_ROWS 32
#define HEAD_MAX_ROWS 256

size_t moe_k_head_rows(size_t V) {
    size_t r = V ? HEAD_BLOCK_FLOATS / V / 32 * 32 : HEAD_MAX_ROWS;
    return r < HEAD_MIN_ROWS ? HEAD_MIN_ROWS : r > HEAD_MAX_ROWS ? HEAD_MAX_ROWS : r;
}

/* One row of logits l[V]: lse, the loss and argmax; with grad, l becomes
 * dlogits = (softmax - onehot(t)) * dscale (0 when t < 0). One exp per
 * logit: e = exp(l - max) is kept in place and scaled by dscale / sum. */
static void head_row(float *restrict l, size_t V, int t, float dscale, int grad, float *lse,
                     float *loss, int *argmax) {
    float mx = l[0], sum = 0.0f;
    #pragma omp simd reduction(max:mx)
    for (size_t j = 0; j < V; j++) mx = l[j] > mx ? l[j] : mx;
    if (argmax) {  /* the first maximum: ties go to the lower id */
        size_t a = 0;
        while (a < V && !(l[a] == mx)) a++;
        *argmax = a < V ? (int)a : 0;
    }
    assert(t < (long)V);  /* the data's ids were checked against the vocabulary */
    float target = t >= 0 ? l[t] : 0.0f;
    if (grad) {
        #pragma omp simd reduction(+:sum)
        for (size_t j = 0; j < V; j++) {
            float e = moe_expf(l[j] - mx);
            l[j] = e;
            sum += e;
        }
    } else {
        #pragma omp simd reduction(+:sum)
        for (size_t j = 0; j < V; j++) sum += moe_expf(l[j] - mx);
    }
    *lse = logf(sum) + mx;
    *loss = t >= 0 ? *lse - target : 0.0f;
    if (!grad) return;
    float s = t >= 0 ? dscale / sum : 0.0f;
    #pragma omp simd
    for (size_t j = 0; j < V; j++) l[j] *= s;
    if (t >= 0) l[t] -= dscale;
}

size_t moe_k_head_scratch(size_t D, size_t V) { return moe_k_head_rows(V) * V + D * V; }

/* dW[V,D] += dWt[D,V]^T, in 64 x 64 tiles (a tile of each stays in L1). */
static void add_transposed(float *restrict dW, const float *restrict dWt, size_t D, size_t V) {
    enum { TILE = 64 };
    size_t tiles = (V + TILE - 1) / TILE;
    #pragma omp parallel for schedule(static)
    for (size_t tv = 0; tv < tiles; tv++) {
        size_t v0 = tv * TILE, v1 = v0 + TILE < V ? v0 + TILE : V;
        for (size_t d0 = 0; d0 < D; d0 += TILE) {
            size_t d1 = d0 + TILE < D ? d0 + TILE : D;
            for (size_t v = v0; v < v1; v++)
                for (size_t d = d0; d < d1; d++) dW[v * D + d] += dWt[d * V + v];
        }
    }
}

double moe_k_lm_head(moe_k_ctx *kc, const moe_k_head *h) {
    size_t N = h->N, D = h->D, V = h->V, R = moe_k_head_rows(V);
    int grad = h->dx != NULL;
    assert(N == 0 || (h->x && h->W && h->scratch && h->losses && h->lse));
    assert(!grad || h->dW);  /* dx and dW come together */
    float *blk = h->scratch, *dWt = h->scratch + R * V;
    double total = 0.0;  /* summed in row order: the same bits at any thread count */
    for (size_t r0 = 0; r0 < N; r0 += R) {
        size_t n = N - r0 < R ? N - r0 : R;
        const float *x = h->x + r0 * D;
        /* blk[n, V] = x[n, D] @ W[V, D]^T */
        moe_k_matmul_forward(kc, blk, x, h->W, n, D, V, 0.0f);
        if (h->logits) memcpy(h->logits + r0 * V, blk, n * V * sizeof(float));
        #pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) {
            size_t row = r0 + i;
            head_row(blk + i * V, V, h->targets ? h->targets[row] : -1, h->dscale, grad,
                     &h->lse[row], &h->losses[row], h->argmax ? &h->argmax[row] : NULL);
        }
        for (size_t i = 0; i < n; i++) total += h->losses[r0 + i];
        if (!grad) continue;
        /* dx[n, D] = dlogits @ W.  The weight gradient is summed transposed,
         * dWt[D, V] (+)= x^T @ dlogits, and added to dW once at the end:
         * the product dW += dlogits^T @ x, [V, D] from a transposed
         * [n, V], ran at 40% of this one's rate in dnnl_sgemm (Zen 3, AVX2;
         * docs/PERFORMANCE.md) */
        moe_k_matmul_backward(kc, h->dx + r0 * D, NULL, blk, x, h->W, n, D, V, 0);
        if (r0 == 0) memset(dWt, 0, D * V * sizeof(float));
        moe_k_matmul_backward(kc, NULL, dWt, x, blk, NULL, n, V, D, 0);
    }
    if (grad && N) add_transposed(h->dW, dWt, D, V);
    return total;
}
