/* cpu.c — the CPU backend of kernels.h: OpenMP loops for everything but
 * the matrix products (gemm.c). Static schedules only, so that results
 * are bit-identical from run to run at a fixed thread count. */
#include "moe/kernels.h"

#include "fastmath.h"

#include <math.h>
#include <string.h>

void k_rmsnorm_forward(float *y, float *rstd, const float *x, const float *w,
                       size_t N, size_t D, float eps) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < N; i++) {
        const float *xi = x + i * D;
        float *yi = y + i * D;
        double ss = 0.0;
        for (size_t j = 0; j < D; j++) ss += (double)xi[j] * xi[j];
        float r = (float)(1.0 / sqrt(ss / (double)D + eps));
        rstd[i] = r;
        for (size_t j = 0; j < D; j++) yi[j] = xi[j] * r * w[j];
    }
}

void k_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x,
                        const float *w, const float *rstd, size_t N, size_t D,
                        int accumulate) {
    /* dx = r*g - x * r^3 * mean(g*x), g = dy*w;   dw += sum_i dy*x*r */
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < N; i++) {
        const float *xi = x + i * D, *dyi = dy + i * D;
        float *dxi = dx + i * D;
        float r = rstd[i];
        double dot = 0.0;
        for (size_t j = 0; j < D; j++) dot += (double)dyi[j] * w[j] * xi[j];
        float c = (float)(dot / (double)D) * r * r * r;
        for (size_t j = 0; j < D; j++) {
            float v = r * dyi[j] * w[j] - xi[j] * c;
            dxi[j] = accumulate ? dxi[j] + v : v;
        }
    }
    /* parameter gradient: 16 columns (one cache line) per task, rows summed
     * in order, so the bits do not depend on the thread count; the rows are
     * read a line at a time and the 16 sums vectorise */
    size_t blocks = (D + 15) / 16;
    #pragma omp parallel for schedule(static)
    for (size_t bj = 0; bj < blocks; bj++) {
        size_t j0 = bj * 16, nj = D - j0 < 16 ? D - j0 : 16;
        float s[16] = {0};
        for (size_t i = 0; i < N; i++) {
            const float *dyi = dy + i * D + j0, *xi = x + i * D + j0;
            float r = rstd[i];
            #pragma omp simd
            for (size_t j = 0; j < nj; j++) s[j] += dyi[j] * xi[j] * r;
        }
        for (size_t j = 0; j < nj; j++) dw[j0 + j] += s[j];
    }
}

void k_rope_tables(float *cos_t, float *sin_t, size_t T, size_t hd, double theta) {
    size_t half = hd / 2;
    for (size_t t = 0; t < T; t++)
        for (size_t i = 0; i < half; i++) {
            double freq = pow(theta, -2.0 * (double)i / (double)hd);
            double a = (double)t * freq;
            cos_t[t * half + i] = (float)cos(a);
            sin_t[t * half + i] = (float)sin(a);
        }
}

void k_rope(float *x, const float *cos_t, const float *sin_t, size_t B, size_t T,
            size_t nh, size_t hd, int inverse) {
    size_t half = hd / 2, width = nh * hd;
    float sgn = inverse ? -1.0f : 1.0f;
    #pragma omp parallel for schedule(static)
    for (size_t row = 0; row < B * T; row++) {
        size_t t = row % T;
        const float *c = cos_t + t * half, *s = sin_t + t * half;
        for (size_t h = 0; h < nh; h++) {
            float *xh = x + row * width + h * hd;
            for (size_t i = 0; i < half; i++) {
                float a = xh[i], b = xh[i + half], si = sgn * s[i];
                xh[i] = a * c[i] - b * si;
                xh[i + half] = b * c[i] + a * si;
            }
        }
    }
}

/* Causal attention in blocks of ATT_BLOCK query rows. Rows [i0,i1) attend
 * only to keys [0,i1), so each product runs on the [i0,i1) x [0,i1) part of
 * the [T,T] score matrix: S[nb,i1] = Q[i0:i1] K[0:i1]^T, O[i0:i1] = P[nb,i1]
 * V[0:i1] (nb = i1 - i0). The blocks right of the diagonal are never
 * computed (about half of the T^2 work at large T); att still holds the full
 * [T,T] rows, written as zeros above the diagonal. The backward does dS, dQ
 * by the same row blocks and dK, dV by column blocks (keys [j0,j1) are seen
 * by query rows [j0,T)). */
#define ATT_BLOCK 32  /* rows per block; 16..128 measured, 32 best at T=128 and 256 */

void k_attention_forward(float *out, float *att, const float *q, const float *k,
                         const float *v, size_t B, size_t T, size_t H, size_t KV,
                         size_t hd) {
    size_t qw = H * hd, kw = KV * hd, group = H / KV;
    float scale = 1.0f / sqrtf((float)hd);
    #pragma omp parallel for schedule(static) collapse(2)
    for (size_t b = 0; b < B; b++)
        for (size_t h = 0; h < H; h++) {
            const float *qb = q + b * T * qw + h * hd;
            const float *kb = k + b * T * kw + (h / group) * hd;
            const float *vb = v + b * T * kw + (h / group) * hd;
            float *ob = out + b * T * qw + h * hd;
            float *P = att + (b * H + h) * T * T;
            for (size_t i0 = 0; i0 < T; i0 += ATT_BLOCK) {
                size_t i1 = i0 + ATT_BLOCK < T ? i0 + ATT_BLOCK : T, nb = i1 - i0;
                float *Pb = P + i0 * T;  /* rows [i0,i1), columns [0,i1) */
                /* S[nb,i1] = scale * Q[i0:i1] K[0:i1]^T */
                k_sgemm(0, 1, nb, i1, hd, scale, qb + i0 * qw, qw, kb, kw, 0.0f, Pb, T);
                for (size_t i = i0; i < i1; i++) {  /* causal softmax of row i: columns 0..i */
                    float *row = P + i * T;
                    float mx = row[0], sum = 0.0f;
                    #pragma omp simd reduction(max:mx)
                    for (size_t j = 0; j <= i; j++) mx = row[j] > mx ? row[j] : mx;
                    #pragma omp simd
                    for (size_t j = 0; j <= i; j++) row[j] = moe_expf(row[j] - mx);
                    #pragma omp simd reduction(+:sum)
                    for (size_t j = 0; j <= i; j++) sum += row[j];
                    float inv = 1.0f / sum;
                    #pragma omp simd
                    for (size_t j = 0; j <= i; j++) row[j] *= inv;
                    memset(row + i + 1, 0, (T - i - 1) * sizeof(float));
                }
                /* O[i0:i1, hd] = P[nb,i1] V[0:i1] */
                k_sgemm(0, 0, nb, hd, i1, 1.0f, Pb, T, vb, kw, 0.0f, ob + i0 * qw, qw);
            }
        }
}

void k_attention_backward(float *dq, float *dk, float *dv, float *scratch,
                          const float *dout, const float *att, const float *q,
                          const float *k, const float *v, size_t B, size_t T,
                          size_t H, size_t KV, size_t hd) {
    size_t qw = H * hd, kw = KV * hd, group = H / KV;
    float scale = 1.0f / sqrtf((float)hd);
    /* One task per (batch, KV head): the heads of a group add into the same
     * dk / dv columns, so they run in order inside the task. */
    #pragma omp parallel for schedule(static) collapse(2)
    for (size_t b = 0; b < B; b++)
        for (size_t g = 0; g < KV; g++) {
            float *dS = scratch + (b * KV + g) * T * T;  /* [T,T] */
            const float *kb = k + b * T * kw + g * hd, *vb = v + b * T * kw + g * hd;
            float *dkb = dk + b * T * kw + g * hd, *dvb = dv + b * T * kw + g * hd;
            for (size_t t = 0; t < T; t++) {
                memset(dkb + t * kw, 0, hd * sizeof(float));
                memset(dvb + t * kw, 0, hd * sizeof(float));
            }
            for (size_t h = g * group; h < (g + 1) * group; h++) {
                const float *P = att + (b * H + h) * T * T;
                const float *dob = dout + b * T * qw + h * hd, *qb = q + b * T * qw + h * hd;
                float *dqb = dq + b * T * qw + h * hd;
                /* Row blocks: dS and dQ of query rows [i0,i1) need keys [0,i1). */
                for (size_t i0 = 0; i0 < T; i0 += ATT_BLOCK) {
                    size_t i1 = i0 + ATT_BLOCK < T ? i0 + ATT_BLOCK : T, nb = i1 - i0;
                    /* dP[nb,i1] = dO[i0:i1] V[0:i1]^T */
                    k_sgemm(0, 1, nb, i1, hd, 1.0f, dob + i0 * qw, qw, vb, kw, 0.0f, dS + i0 * T, T);
                    /* dS = P * (dP - sum_j P dP) * scale, zero right of the diagonal */
                    for (size_t i = i0; i < i1; i++) {
                        const float *p = P + i * T;
                        float *d = dS + i * T;
                        float dot = 0.0f;
                        #pragma omp simd reduction(+:dot)
                        for (size_t j = 0; j <= i; j++) dot += p[j] * d[j];
                        #pragma omp simd
                        for (size_t j = 0; j <= i; j++) d[j] = p[j] * (d[j] - dot) * scale;
                        memset(d + i + 1, 0, (i1 - i - 1) * sizeof(float));
                    }
                    /* dQ[i0:i1] = dS[nb,i1] K[0:i1] */
                    k_sgemm(0, 0, nb, hd, i1, 1.0f, dS + i0 * T, T, kb, kw, 0.0f, dqb + i0 * qw, qw);
                }
                /* Column blocks: keys [j0,j1) are seen by query rows [j0,T).
                 *   dV[j0:j1] += P[j0:T, j0:j1]^T dO[j0:T]
                 *   dK[j0:j1] += dS[j0:T, j0:j1]^T Q[j0:T]
                 * Same block edges as the rows, so dS is fully written there. */
                for (size_t j0 = 0; j0 < T; j0 += ATT_BLOCK) {
                    size_t j1 = j0 + ATT_BLOCK < T ? j0 + ATT_BLOCK : T, nb = j1 - j0;
                    size_t nr = T - j0;  /* query rows j0..T-1 */
                    k_sgemm(1, 0, nb, hd, nr, 1.0f, P + j0 * T + j0, T, dob + j0 * qw, qw, 1.0f, dvb + j0 * kw, kw);
                    k_sgemm(1, 0, nb, hd, nr, 1.0f, dS + j0 * T + j0, T, qb + j0 * qw, qw, 1.0f, dkb + j0 * kw, kw);
                }
            }
        }
}


void k_swiglu_forward(float *a, const float *h1, const float *h3, size_t n) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) a[i] = moe_swiglu(h1[i], h3[i]);
}

void k_swiglu_backward(float *dh1, float *dh3, const float *da, const float *h1,
                       const float *h3, size_t n) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float s = moe_sigmoidf(h1[i]), z = h1[i];
        float d = da[i];
        dh3[i] = d * z * s;
        dh1[i] = d * h3[i] * s * (1.0f + z * (1.0f - s));
    }
}

double k_cross_entropy_forward(float *losses, float *lse, const float *logits,
                               const int *targets, size_t N, size_t V) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < N; i++) {
        const float *l = logits + i * V;
        float mx = l[0], sum = 0.0f;
        #pragma omp simd reduction(max:mx)
        for (size_t j = 0; j < V; j++) mx = l[j] > mx ? l[j] : mx;
        #pragma omp simd reduction(+:sum)
        for (size_t j = 0; j < V; j++) sum += moe_expf(l[j] - mx);
        lse[i] = logf(sum) + mx;
        losses[i] = targets[i] >= 0 ? lse[i] - l[targets[i]] : 0.0f;
    }
    double total = 0.0;  /* summed in order: the same bits at any thread count */
    for (size_t i = 0; i < N; i++) total += losses[i];
    return total;
}

void k_cross_entropy_backward(float *dlogits, const float *logits, const float *lse,
                              const int *targets, size_t N, size_t V, float dscale) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < N; i++) {
        const float *l = logits + i * V;
        float *d = dlogits + i * V;
        int t = targets[i];
        float m = lse[i], s = t >= 0 ? dscale : 0.0f;
        float target_logit = t >= 0 ? l[t] : 0.0f;  /* read before d (maybe l) is written */
        #pragma omp simd
        for (size_t j = 0; j < V; j++) d[j] = moe_expf(l[j] - m) * s;
        if (t >= 0) d[t] = (moe_expf(target_logit - m) - 1.0f) * dscale;
    }
}

void k_add(float *y, const float *x, size_t n) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}
