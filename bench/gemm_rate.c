/* gemm_rate.c — the machine's single-precision GEMM rate through the system
 * BLAS, the yardstick for model FLOPs utilisation: GFLOP/s of square sgemm
 * at several sizes (best of R runs). Prints one JSON object.
 * Usage: gemm_rate [REPEATS] */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

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
    printf("}}\n");
    return 0;
}
