/* cpu.c — the CPU backend of kernels.h: OpenMP loops for everything but
 * the matrix products (gemm.c) and attention (attention.c). Static
 * schedules only, so that results are bit-identical from run to run at a
 * fixed thread count. */
#include "moe/kernels/kernels.h"

#include "fastmath.h"

#include <assert.h>
#include <math.h>
#include <string.h>

void moe_k_rmsnorm_forward(float *y, float *rstd, const float *x, const float *w,
                       size_t N, size_t D, float eps) {
    assert(D > 0);  /* the mean over a row */
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

void moe_k_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x,
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

void moe_k_rope_tables(float *cos_t, float *sin_t, size_t T, size_t hd, double theta) {
    assert(hd % 2 == 0);  /* rotate-half pairs column i with i + hd/2 */
    size_t half = hd / 2;
    for (size_t t = 0; t < T; t++)
        for (size_t i = 0; i < half; i++) {
            double freq = pow(theta, -2.0 * (double)i / (double)hd);
            double a = (double)t * freq;
            cos_t[t * half + i] = (float)cos(a);
            sin_t[t * half + i] = (float)sin(a);
        }
}

void moe_k_rope(float *x, const float *cos_t, const float *sin_t, size_t B, size_t T,
            size_t nh, size_t hd, int inverse) {
    assert(hd % 2 == 0);
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

void moe_k_swiglu_forward(float *a, const float *h1, const float *h3, size_t n) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) a[i] = moe_swiglu(h1[i], h3[i]);
}

void moe_k_swiglu_backward(float *dh1, float *dh3, const float *da, const float *h1,
                       const float *h3, size_t n) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float s = moe_sigmoidf(h1[i]), z = h1[i];
        float d = da[i];
        dh3[i] = d * z * s;
        dh1[i] = d * h3[i] * s * (1.0f + z * (1.0f - s));
    }
}

void moe_k_add(float *y, const float *x, size_t n) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}
