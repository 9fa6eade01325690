/* attention.c — causal grouped-query attention of kernels.h in blocks
 * (flash-style, the FlashAttention-2 scheme): for each block of ATT_BR query
 * rows the keys are visited in blocks of ATT_BC with an online softmax (a
 * running maximum and sum per row), so the [T,T] score matrix is never
 * stored; the forward keeps only each row's logsumexp, from which the
 * backward recomputes the probabilities block by block. One task per
 * (batch, head) in the forward and per (batch, KV head) in the backward
 * (the heads of a group add into the same dk, dv), static schedules, sums
 * in a fixed order: the same bits at any thread count.
 *
 * The block products go through moe_k_sgemm (oneDNN's sgemm): products written
 * here as FMA loops over 32 x 32 blocks ran the whole pass 1.7-2.3x slower
 * at head size 32 (Zen 3, AVX2), so key blocks are wide (ATT_BC) and each
 * is a few library calls. The backward recomputes the scores (one product
 * more than keeping the [T,T] probabilities): measured on one Zen 3 core
 * at B 16, H 4, KV 2, hd 32, forward + backward take 1.28x the time of the
 * kernel that kept them at T = 128, the same at T = 512 and 0.84x at
 * T = 1024, in memory B H T floats a layer instead of B H T^2. The
 * products read q, k and v from per-task copies, which precision bf16
 * rounds to bf16 (nearest-even, as the weight products round their
 * inputs): q k^T is then a product of bf16 values, exact in fp32 and
 * summed in fp32, as bf16 dot products with fp32 accumulation compute it;
 * the probabilities, dout and the score gradients stay fp32, so the
 * rounding is of the three inputs only (what tools/ref_model.py mirrors).
 * This runs on fp32 units on every CPU.
 *
 * Decoding's attention of a few new rows against a KV cache
 * (moe_k_attention_cached) keeps each row's probabilities whole instead: one
 * library product for the scores and one for the output, per head. */
#include "moe/kernels/kernels.h"

#include <math.h>
#include <string.h>

#include "fastmath.h"

#define ATT_BR 32   /* query rows per block (32 and 64 measured: 32 is faster at T = 128) */
#define ATT_BC 128  /* keys per block */

/* Per-task scratch (floats): the head's keys, values and queries copied
 * (rounded under bf16), block accumulators. */
static size_t task_floats(size_t T, size_t hd) {
    return 3 * T * hd                          /* Kc, Vc, Qc: [T, hd] */
         + (size_t)(ATT_BR + 2 * ATT_BC) * hd  /* Oacc; dKacc, dVacc */
         + (size_t)(2 * ATT_BR * ATT_BC)      /* S (P), dP (dS) */
         + (size_t)(2 * ATT_BR) + T;           /* m, l; D */
}

size_t moe_k_attention_scratch(size_t B, size_t T, size_t H, size_t hd) {
    return B * H * task_floats(T, hd);
}

/* d[r, :n] = s[r * lds, :n] for r < rows, rounded to bf16 when bf. */
static void copy_head(float *d, const float *s, size_t lds, size_t rows, size_t n, int bf) {
    for (size_t r = 0; r < rows; r++) {
        const float *sr = s + r * lds;
        float *dr = d + r * n;
        if (bf) for (size_t c = 0; c < n; c++) dr[c] = moe_k_round_bf16(sr[c]);
        else memcpy(dr, sr, n * sizeof(float));
    }
}

/* Keys j0 .. j0 + nc - 1 that row i sees: 0 .. nc (causal). */
static size_t seen(size_t i, size_t j0, size_t nc) {
    size_t n = i + 1 > j0 ? i + 1 - j0 : 0;
    return n < nc ? n : nc;
}

/* One (batch, head): rows qb, kb, vb, ob are the head's columns (strides
 * qw, kw, kw, qw); lse[T]. */
static void forward_head(float *ob, float *lse, const float *qb, const float *kb, const float *vb,
                         size_t T, size_t hd, size_t qw, size_t kw, float scale, int bf, float *ws) {
    float *Kc = ws, *Vc = Kc + T * hd, *Qc = Vc + T * hd, *Oacc = Qc + T * hd;
    float *S = Oacc + (ATT_BR + 2 * ATT_BC) * hd, *mx = S + 2 * ATT_BR * ATT_BC, *sum = mx + ATT_BR;
    copy_head(Kc, kb, kw, T, hd, bf);
    copy_head(Vc, vb, kw, T, hd, bf);
    copy_head(Qc, qb, qw, T, hd, bf);
    for (size_t i0 = 0; i0 < T; i0 += ATT_BR) {
        size_t nb = T - i0 < ATT_BR ? T - i0 : ATT_BR, i1 = i0 + nb;
        memset(Oacc, 0, nb * hd * sizeof(float));
        for (size_t r = 0; r < nb; r++) { mx[r] = -INFINITY; sum[r] = 0.0f; }
        for (size_t j0 = 0; j0 < i1; j0 += ATT_BC) {  /* keys [j0, j0 + nc) seen by some row < i1 */
            size_t nc = i1 - j0 < ATT_BC ? i1 - j0 : ATT_BC;
            /* S[nb, nc] = scale Q K^T */
            moe_k_sgemm(0, 1, nb, nc, hd, scale, Qc + i0 * hd, hd, Kc + j0 * hd, hd, 0.0f, S, ATT_BC);
            for (size_t r = 0; r < nb; r++) {  /* the online softmax of row i0 + r */
                float *s = S + r * ATT_BC, m = mx[r], add = 0.0f;
                size_t valid = seen(i0 + r, j0, nc);
                if (!valid) { memset(s, 0, nc * sizeof(float)); continue; }  /* no key yet */
                #pragma omp simd reduction(max:m)
                for (size_t c = 0; c < valid; c++) m = s[c] > m ? s[c] : m;
                #pragma omp simd reduction(+:add)
                for (size_t c = 0; c < valid; c++) { s[c] = moe_expf(s[c] - m); add += s[c]; }
                for (size_t c = valid; c < nc; c++) s[c] = 0.0f;
                float *o = Oacc + r * hd;
                if (m != mx[r]) {  /* a new maximum: rescale what the row has so far */
                    float alpha = moe_expf(mx[r] - m);  /* ~0 the first time */
                    sum[r] *= alpha;
                    #pragma omp simd
                    for (size_t d = 0; d < hd; d++) o[d] *= alpha;
                }
                sum[r] += add;
                mx[r] = m;
            }
            /* O[nb, hd] += P[nb, nc] V[j0:j0+nc] */
            moe_k_sgemm(0, 0, nb, hd, nc, 1.0f, S, ATT_BC, Vc + j0 * hd, hd, 1.0f, Oacc, hd);
        }
        for (size_t r = 0; r < nb; r++) {
            float inv = 1.0f / sum[r], *o = ob + (i0 + r) * qw;
            for (size_t d = 0; d < hd; d++) o[d] = Oacc[r * hd + d] * inv;
            lse[i0 + r] = mx[r] + logf(sum[r]);
        }
    }
}

void moe_k_attention_forward(moe_k_precision prec, float *out, float *lse, float *scratch, const float *q,
                         const float *k, const float *v, size_t B, size_t T, size_t H, size_t KV,
                         size_t hd) {
    size_t qw = H * hd, kw = KV * hd, group = H / KV, per = task_floats(T, hd);
    float scale = 1.0f / sqrtf((float)hd);
    int bf = prec == MOE_K_BF16;
    #pragma omp parallel for schedule(static) collapse(2)
    for (size_t b = 0; b < B; b++)
        for (size_t h = 0; h < H; h++) {
            size_t g = h / group;
            forward_head(out + b * T * qw + h * hd, lse + (b * H + h) * T, q + b * T * qw + h * hd,
                         k + b * T * kw + g * hd, v + b * T * kw + g * hd, T, hd, qw, kw, scale, bf,
                         scratch + (b * H + h) * per);
        }
}

/* One head h of a (batch, KV head) task whose keys and values ws already
 * holds (Kc, Vc): adds the head's part to dkb, dvb (rows kw apart) and
 * writes its dq rows. */
static void backward_head(float *dqb, float *dkb, float *dvb, const float *dob, const float *ob,
                          const float *lse, const float *qb, size_t T, size_t hd, size_t qw, size_t kw,
                          float scale, int bf, float *ws) {
    float *Kc = ws, *Vc = Kc + T * hd, *Qc = Vc + T * hd;
    float *dKacc = Qc + T * hd + ATT_BR * hd, *dVacc = dKacc + ATT_BC * hd;
    float *P = dVacc + ATT_BC * hd, *dP = P + ATT_BR * ATT_BC, *D = dP + ATT_BR * ATT_BC + 2 * ATT_BR;
    copy_head(Qc, qb, qw, T, hd, bf);
    /* D[i] = dO_i . O_i = sum_j P_ij dP_ij (fp32, the rows' own values) */
    for (size_t i = 0; i < T; i++) {
        const float *a = dob + i * qw, *o = ob + i * qw;
        float s = 0.0f;
        #pragma omp simd reduction(+:s)
        for (size_t d = 0; d < hd; d++) s += a[d] * o[d];
        D[i] = s;
        memset(dqb + i * qw, 0, hd * sizeof(float));
    }
    for (size_t j0 = 0; j0 < T; j0 += ATT_BC) {  /* keys [j0, j0 + nc): seen by rows >= j0 */
        size_t nc = T - j0 < ATT_BC ? T - j0 : ATT_BC;
        const float *Kj = Kc + j0 * hd, *Vj = Vc + j0 * hd;
        memset(dKacc, 0, nc * hd * sizeof(float));
        memset(dVacc, 0, nc * hd * sizeof(float));
        for (size_t i0 = j0 / ATT_BR * ATT_BR; i0 < T; i0 += ATT_BR) {
            size_t nb = T - i0 < ATT_BR ? T - i0 : ATT_BR;
            size_t nv = seen(i0 + nb - 1, j0, nc);  /* the keys of the block that these rows see */
            const float *dOi = dob + i0 * qw, *Qi = Qc + i0 * hd;
            moe_k_sgemm(0, 1, nb, nv, hd, scale, Qi, hd, Kj, hd, 0.0f, P, ATT_BC);   /* scaled scores */
            moe_k_sgemm(0, 1, nb, nv, hd, 1.0f, dOi, qw, Vj, hd, 0.0f, dP, ATT_BC);  /* dP = dO V^T */
            for (size_t r = 0; r < nb; r++) {  /* P = exp(s - lse), dS = P (dP - D) scale */
                float *p = P + r * ATT_BC, *dp = dP + r * ATT_BC, m = lse[i0 + r], Di = D[i0 + r];
                size_t valid = seen(i0 + r, j0, nv);
                #pragma omp simd
                for (size_t c = 0; c < valid; c++) p[c] = moe_expf(p[c] - m);
                for (size_t c = valid; c < nv; c++) p[c] = 0.0f;
                #pragma omp simd
                for (size_t c = 0; c < nv; c++) dp[c] = p[c] * (dp[c] - Di) * scale;
            }
            moe_k_sgemm(1, 0, nv, hd, nb, 1.0f, P, ATT_BC, dOi, qw, 1.0f, dVacc, hd);              /* dV += P^T dO */
            moe_k_sgemm(0, 0, nb, hd, nv, 1.0f, dP, ATT_BC, Kj, hd, 1.0f, dqb + i0 * qw, qw);      /* dQ += dS K */
            moe_k_sgemm(1, 0, nv, hd, nb, 1.0f, dP, ATT_BC, Qi, hd, 1.0f, dKacc, hd);              /* dK += dS^T Q */
        }
        for (size_t c = 0; c < nc; c++) {
            float *dk_r = dkb + (j0 + c) * kw, *dv_r = dvb + (j0 + c) * kw;
            for (size_t d = 0; d < hd; d++) { dk_r[d] += dKacc[c * hd + d]; dv_r[d] += dVacc[c * hd + d]; }
        }
    }
}

void moe_k_attention_backward(moe_k_precision prec, float *dq, float *dk, float *dv, float *scratch,
                          const float *dout, const float *out, const float *lse, const float *q,
                          const float *k, const float *v, size_t B, size_t T, size_t H, size_t KV,
                          size_t hd) {
    size_t qw = H * hd, kw = KV * hd, group = H / KV, per = task_floats(T, hd);
    float scale = 1.0f / sqrtf((float)hd);
    int bf = prec == MOE_K_BF16;
    #pragma omp parallel for schedule(static) collapse(2)
    for (size_t b = 0; b < B; b++)
        for (size_t g = 0; g < KV; g++) {
            float *dkb = dk + b * T * kw + g * hd, *dvb = dv + b * T * kw + g * hd;
            float *ws = scratch + (b * KV + g) * per;
            copy_head(ws, k + b * T * kw + g * hd, kw, T, hd, bf);
            copy_head(ws + T * hd, v + b * T * kw + g * hd, kw, T, hd, bf);
            for (size_t t = 0; t < T; t++) {
                memset(dkb + t * kw, 0, hd * sizeof(float));
                memset(dvb + t * kw, 0, hd * sizeof(float));
            }
            for (size_t h = g * group; h < (g + 1) * group; h++) {
                size_t o = b * T * qw + h * hd;
                backward_head(dq + o, dkb, dvb, dout + o, out + o, lse + (b * H + h) * T, q + o, T, hd,
                              qw, kw, scale, bf, ws);
            }
        }
}

/* ---- against a KV cache (decoding) ----------------------------------------- */

void moe_k_attention_cached(float *out, float *scores, const float *q, const float *K, const float *V,
                        size_t n, size_t p0, size_t H, size_t KV, size_t hd) {
    size_t qw = H * hd, kw = KV * hd, group = H / KV, S = p0 + n;
    float scale = 1.0f / sqrtf((float)hd);
    #pragma omp parallel for schedule(static)
    for (size_t h = 0; h < H; h++) {
        float *P = scores + h * n * S;  /* [n, S] */
        const float *Kh = K + (h / group) * hd, *Vh = V + (h / group) * hd;
        moe_k_sgemm(0, 1, n, S, hd, scale, q + h * hd, qw, Kh, kw, 0.0f, P, S);
        for (size_t i = 0; i < n; i++) {
            float *row = P + i * S;
            size_t last = p0 + i;  /* causal: keys 0..last */
            float mx = row[0];
            for (size_t j = 1; j <= last; j++) mx = row[j] > mx ? row[j] : mx;
            float sum = 0.0f;
            for (size_t j = 0; j <= last; j++) { row[j] = expf(row[j] - mx); sum += row[j]; }
            float inv = 1.0f / sum;
            for (size_t j = 0; j <= last; j++) row[j] *= inv;
            for (size_t j = last + 1; j < S; j++) row[j] = 0.0f;
        }
        moe_k_sgemm(0, 0, n, hd, S, 1.0f, P, S, Vh, kw, 0.0f, out + h * hd, qw);
    }
}
