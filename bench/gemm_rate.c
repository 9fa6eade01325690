/* gemm_rate.c — the machine's single-precision GEMM rate through the system
 * BLAS, the yardstick for model FLOPs utilisation: GFLOP/s of square sgemm
 * at several sizes (best of R runs), and the cores' arithmetic peak (fused
 * multiply-adds on registers only, every OpenMP thread), which says how
 * close the BLAS itself comes to the machine. Prints one JSON object.
 * Usage: gemm_rate [REPEATS] */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#if defined(__AVX512F__)
#include <immintrin.h>
/* GFLOP/s of 12 independent chains of 16-lane FMAs per thread (enough to
 * hide the FMA latency), all threads at once; best of `repeats`. */
static double fma_peak(int repeats) {
    const long iters = 20000000;
    double best = 1e30;
    float sink = 0.0f;
    for (int r = 0; r < repeats; r++) {
        double t0 = now();
        #pragma omp parallel reduction(+:sink)
        {
            __m512 acc[12], b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
            for (int k = 0; k < 12; k++) acc[k] = _mm512_set1_ps((float)(k + 1));
            for (long i = 0; i < iters; i++)
                for (int k = 0; k < 12; k++) acc[k] = _mm512_fmadd_ps(acc[k], b, c);
            for (int k = 1; k < 12; k++) acc[0] = _mm512_add_ps(acc[0], acc[k]);
            sink += _mm512_reduce_add_ps(acc[0]);
        }
        double t = now() - t0;
        if (t < best) best = t;
    }
    volatile float keep = sink;  /* the chains' result is used: not optimised away */
    (void)keep;
    return (double)omp_get_max_threads() * (double)iters * 12 * 32 / best / 1e9;
}
#else
static double fma_peak(int repeats) { (void)repeats; return 0.0; }  /* not measured here */
#endif

int main(int argc, char **argv) {
    int repeats = argc > 1 ? atoi(argv[1]) : 5;
    const int sizes[] = {256, 512, 1024, 2048};
    printf("{\"sgemm_gflops\": {");
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int n = sizes[s];
        float *a = malloc((size_t)n * n * sizeof(float)), *b = malloc((size_t)n * n * sizeof(float));
        float *c = malloc((size_t)n * n * sizeof(float));
        for (size_t i = 0; i < (size_t)n * n; i++) { a[i] = (float)(i % 7) * 0.1f; b[i] = (float)(i % 5) * 0.1f; }
        double best = 1e30;
        for (int r = 0; r < repeats; r++) {
            double t0 = now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
            double t = now() - t0;
            if (t < best) best = t;
        }
        printf("%s\"%d\": %.1f", s ? ", " : "", n, 2.0 * n * n * (double)n / best / 1e9);
        free(a); free(b); free(c);
    }
    printf("}, \"fma_peak_gflops\": %.1f}\n", fma_peak(repeats));
    return 0;
}
