/* gemm.c — the matrix-product backend of kernels.h: every fp32 product of
 * the library goes through k_sgemm here, which picks the library by shape
 * as bench/gemm_rate.c measures it (oneDNN's dnnl_sgemm, which dispatches on
 * the CPU's own features, except for matrix-vector shapes where OpenBLAS is
 * faster). Nothing outside src/kernels/ names a BLAS. */
#include "moe/kernels.h"

#include <cblas.h>
#include <dnnl.h>

/* Rows below which OpenBLAS wins: at M = 1 (one decode query per head)
 * OpenBLAS ran 1.2-1.6x dnnl_sgemm; from M = 32 dnnl_sgemm was 1.0-1.7x
 * OpenBLAS on every shape of the models (docs/PERFORMANCE.md). */
#define K_SGEMM_SMALL_M 4

void k_sgemm(int ta, int tb, size_t M, size_t N, size_t K, float alpha, const float *A,
             size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc) {
    if (M == 0 || N == 0) return;
    if (M < K_SGEMM_SMALL_M) {
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
        return;
    }
    /* Cannot fail for valid row-major arguments (the callers' shapes). */
    dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', (dnnl_dim_t)M, (dnnl_dim_t)N, (dnnl_dim_t)K,
               alpha, A, (dnnl_dim_t)lda, B, (dnnl_dim_t)ldb, beta, C, (dnnl_dim_t)ldc);
}

void k_matmul_forward(float *out, const float *in, const float *W,
                      size_t N, size_t C, size_t O, float beta) {
    k_sgemm(0, 1, N, O, C, 1.0f, in, C, W, C, beta, out, O);
}

void k_matmul_backward(float *din, float *dW, const float *dout, const float *in,
                       const float *W, size_t N, size_t C, size_t O, int accumulate) {
    if (N == 0) return;
    if (din) k_sgemm(0, 0, N, C, O, 1.0f, dout, O, W, C, accumulate ? 1.0f : 0.0f, din, C);
    if (dW) k_sgemm(1, 0, O, C, N, 1.0f, dout, O, in, C, 1.0f, dW, C);
}
