/* gemm_rate.c — the machine's ceilings for model FLOPs utilisation, all
 * OpenMP threads at once, best of R runs:
 *   - the cores' fp32 peak: their widest FMAs (vfmadd: 512-bit with AVX-512,
 *     else 256-bit with AVX2 + FMA), 12 independent chains per thread (more
 *     than latency x throughput), registers only, many short runs (the best
 *     of them is the figure); the JSON names the width (fma_bits);
 *   - the cores' bf16 dot-product peak: vdpbf16ps (AVX512_BF16), same scheme
 *     (each instruction: 16 lanes x 2 products x 2 FLOPs);
 *   - what the libraries reach: square products (OpenBLAS sgemm, oneDNN's
 *     dnnl_sgemm, oneDNN's bf16 matmul with fp32 accumulation, which may use
 *     AMX tiles; its implementation name is reported), and the products of
 *     the models' shapes (row-major, out[M,N] = A[M,K] B^T as the layers do).
 * Prints a table on stderr and one JSON object on stdout.
 * Usage: gemm_rate [REPEATS] */
#include <cblas.h>
#include <dnnl.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moe/util/common.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define CHAINS 12
/* GFLOP/s of CHAINS independent chains of 16-lane FMAs per thread. */
__attribute__((target("avx512f"))) static double fma_peak(int repeats) {
    const long iters = 1000000;  /* ~2 ms: the best of many short runs finds the cores free on a busy machine */
    double best = 1e30;
    float sink = 0.0f;
    for (int r = 0; r < 40 * repeats; r++) {
        double t0 = moe_now_seconds();
        #pragma omp parallel reduction(+:sink)
        {
            __m512 acc[CHAINS], b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
            for (int k = 0; k < CHAINS; k++) acc[k] = _mm512_set1_ps((float)(k + 1));
            for (long i = 0; i < iters; i++)
                for (int k = 0; k < CHAINS; k++) acc[k] = _mm512_fmadd_ps(acc[k], b, c);
            for (int k = 1; k < CHAINS; k++) acc[0] = _mm512_add_ps(acc[0], acc[k]);
            sink += _mm512_reduce_add_ps(acc[0]);
        }
        double t = moe_now_seconds() - t0;
        if (t < best) best = t;
    }
    volatile float keep = sink;  /* the chains' result is used: not optimised away */
    (void)keep;
    return (double)omp_get_max_threads() * (double)iters * CHAINS * 32 / best / 1e9;
}

/* The same with 8-lane (256-bit) FMAs, for CPUs without AVX-512 (Zen 3,
 * older Intel): their fp32 peak. */
__attribute__((target("avx2,fma"))) static double fma_peak_avx2(int repeats) {
    const long iters = 1000000;
    double best = 1e30;
    float sink = 0.0f;
    for (int r = 0; r < 40 * repeats; r++) {
        double t0 = moe_now_seconds();
        #pragma omp parallel reduction(+:sink)
        {
            __m256 acc[CHAINS], b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
            for (int k = 0; k < CHAINS; k++) acc[k] = _mm256_set1_ps((float)(k + 1));
            for (long i = 0; i < iters; i++)
                for (int k = 0; k < CHAINS; k++) acc[k] = _mm256_fmadd_ps(acc[k], b, c);
            for (int k = 1; k < CHAINS; k++) acc[0] = _mm256_add_ps(acc[0], acc[k]);
            float lanes[8];
            _mm256_storeu_ps(lanes, acc[0]);
            for (int k = 0; k < 8; k++) sink += lanes[k];
        }
        double t = moe_now_seconds() - t0;
        if (t < best) best = t;
    }
    volatile float keep = sink;
    (void)keep;
    return (double)omp_get_max_threads() * (double)iters * CHAINS * 16 / best / 1e9;
}

/* The widest FMA peak this CPU has; *bits says which. */
static double fma_peak_any(int repeats, int *bits);

/* GFLOP/s of CHAINS chains of vdpbf16ps per thread: acc += a.b over pairs. */
__attribute__((target("avx512f,avx512bf16"))) static double bf16_dot_peak(int repeats) {
    const long iters = 1000000;  /* ~2 ms: the best of many short runs finds the cores free on a busy machine */
    double best = 1e30;
    float sink = 0.0f;
    for (int r = 0; r < 40 * repeats; r++) {
        double t0 = moe_now_seconds();
        #pragma omp parallel reduction(+:sink)
        {
            __m512 acc[CHAINS];
            __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x3300);
            for (int k = 0; k < CHAINS; k++) acc[k] = _mm512_set1_ps((float)(k + 1));
            for (long i = 0; i < iters; i++)
                for (int k = 0; k < CHAINS; k++) acc[k] = _mm512_dpbf16_ps(acc[k], a, b);
            for (int k = 1; k < CHAINS; k++) acc[0] = _mm512_add_ps(acc[0], acc[k]);
            sink += _mm512_reduce_add_ps(acc[0]);
        }
        double t = moe_now_seconds() - t0;
        if (t < best) best = t;
    }
    volatile float keep = sink;
    (void)keep;
    return (double)omp_get_max_threads() * (double)iters * CHAINS * 64 / best / 1e9;
}
static int has(const char *feature) {
    __builtin_cpu_init();
    return !strcmp(feature, "avx512f") ? __builtin_cpu_supports("avx512f")
         : !strcmp(feature, "avx2fma") ? __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
                                       : __builtin_cpu_supports("avx512bf16");
}

static double fma_peak_any(int repeats, int *bits) {
    if (has("avx512f")) { *bits = 512; return fma_peak(repeats); }
    if (has("avx2fma")) { *bits = 256; return fma_peak_avx2(repeats); }
    *bits = 0;
    return 0.0;
}
#else
static double fma_peak(int repeats) { (void)repeats; return 0.0; }
static double bf16_dot_peak(int repeats) { (void)repeats; return 0.0; }
static int has(const char *feature) { (void)feature; return 0; }
static double fma_peak_any(int repeats, int *bits) { (void)repeats; *bits = 0; return 0.0; }
#endif

static uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

typedef struct { int M, N, K, tb; const char *what; } shape;

/* Best GFLOP/s of C[M,N] = A[M,K] op(B) by each library; *impl names
 * oneDNN's bf16 implementation. */
static void measure(const shape *s, int repeats, dnnl_engine_t eng, dnnl_stream_t st,
                    double *blas, double *dsg, double *bf, const char **impl) {
    size_t M = (size_t)s->M, N = (size_t)s->N, K = (size_t)s->K;
    float *A = malloc(M * K * 4), *B = malloc(N * K * 4), *C = malloc(M * N * 4);
    uint16_t *Ab = malloc(M * K * 2), *Bb = malloc(N * K * 2);
    for (size_t i = 0; i < M * K; i++) { A[i] = (float)(i % 7) * 0.1f; Ab[i] = to_bf16(A[i]); }
    for (size_t i = 0; i < N * K; i++) { B[i] = (float)(i % 5) * 0.1f; Bb[i] = to_bf16(B[i]); }
    double flops = 2.0 * (double)M * (double)N * (double)K, tb = 1e30, td = 1e30, tf = 1e30;
    int ldb = s->tb ? s->K : s->N;
    /* at least `repeats` runs each, more while under 0.3 s: on a busy
     * machine the best of many runs is the one that found the cores free */
    double spent = 0.0;
    for (int r = 0; r < repeats || (spent < 0.3 && r < 200); r++) {
        double t0 = moe_now_seconds();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, s->tb ? CblasTrans : CblasNoTrans, s->M, s->N, s->K,
                    1.0f, A, s->K, B, ldb, 0.0f, C, s->N);
        double t1 = moe_now_seconds();
        dnnl_sgemm('N', s->tb ? 'T' : 'N', s->M, s->N, s->K, 1.0f, A, s->K, B, ldb, 0.0f, C, s->N);
        double t2 = moe_now_seconds();
        if (t1 - t0 < tb) tb = t1 - t0;
        if (t2 - t1 < td) td = t2 - t1;
        spent += t2 - t0;
    }
    dnnl_memory_desc_t a, b, c;
    dnnl_dims_t da = {s->M, s->K}, db = {s->K, s->N}, dc = {s->M, s->N};
    dnnl_matmul_desc_t md;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t p = NULL;
    dnnl_memory_t ma, mb, mc;
    *impl = "none";
    if (dnnl_memory_desc_init_by_tag(&a, 2, da, dnnl_bf16, dnnl_ab) == 0 &&
        dnnl_memory_desc_init_by_tag(&b, 2, db, dnnl_bf16, s->tb ? dnnl_ba : dnnl_ab) == 0 &&
        dnnl_memory_desc_init_by_tag(&c, 2, dc, dnnl_f32, dnnl_ab) == 0 &&
        dnnl_matmul_desc_init(&md, &a, &b, NULL, &c) == 0 &&
        dnnl_primitive_desc_create(&pd, &md, NULL, eng, NULL) == 0 &&
        dnnl_primitive_create(&p, pd) == 0 && dnnl_memory_create(&ma, &a, eng, Ab) == 0 &&
        dnnl_memory_create(&mb, &b, eng, Bb) == 0 && dnnl_memory_create(&mc, &c, eng, C) == 0) {
        dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, impl);
        dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}};
        spent = 0.0;
        for (int r = 0; r < repeats + 1 || (spent < 0.15 && r < 200); r++) {  /* run 0: warm-up */
            double t0 = moe_now_seconds();
            dnnl_primitive_execute(p, st, 3, args);
            dnnl_stream_wait(st);
            double t = moe_now_seconds() - t0;
            if (r && t < tf) tf = t;
            spent += t;
        }
        dnnl_memory_destroy(ma); dnnl_memory_destroy(mb); dnnl_memory_destroy(mc);
    }
    if (p) dnnl_primitive_destroy(p);
    *blas = flops / tb / 1e9;
    *dsg = flops / td / 1e9;
    *bf = tf < 1e30 ? flops / tf / 1e9 : 0.0;
    free(A); free(B); free(C); free(Ab); free(Bb);
}

int main(int argc, char **argv) {
    int repeats = argc > 1 ? atoi(argv[1]) : 5;
    if (repeats < 1) repeats = 1;
    dnnl_engine_t eng;
    dnnl_stream_t st;
    if (dnnl_engine_create(&eng, dnnl_cpu, 0) || dnnl_stream_create(&st, eng, dnnl_stream_default_flags)) {
        fprintf(stderr, "gemm_rate: cannot create oneDNN's CPU engine\n");
        return 1;
    }
    const int sizes[] = {256, 512, 1024, 2048};
    /* the layers' products at the demo size (2048 tokens, D 128, F 512,
     * vocab 4096) and at hidden 512 (2048 tokens, F 2048); one expert of
     * eight at k=1 sees about N/8 rows */
    const shape shapes[] = {
        {2048, 128, 128, 1, "demo q/o projection"},  {2048, 512, 128, 1, "demo FFN up"},
        {2048, 128, 512, 1, "demo FFN down"},        {256, 512, 128, 1, "demo expert up (N/8 rows)"},
        {2048, 4096, 128, 1, "demo LM head"},        {2048, 512, 512, 1, "h512 q/o projection"},
        {2048, 2048, 512, 1, "h512 FFN up"},         {2048, 512, 2048, 1, "h512 FFN down"},
        {256, 2048, 512, 1, "h512 expert up (N/8 rows)"}, {2048, 4096, 512, 1, "h512 LM head"},
        {32, 128, 32, 1, "attention block (hd 32)"},  {1, 256, 32, 1, "decode query (one row)"},
    };
    size_t n_sz = sizeof sizes / sizeof sizes[0], n_sh = sizeof shapes / sizeof shapes[0];
    double sq[4][3], sh[16][3];
    const char *sq_impl[4], *sh_impl[16];
    for (size_t i = 0; i < n_sz; i++) {
        shape s = {sizes[i], sizes[i], sizes[i], 0, "square"};
        measure(&s, repeats, eng, st, &sq[i][0], &sq[i][1], &sq[i][2], &sq_impl[i]);
    }
    for (size_t i = 0; i < n_sh; i++)
        measure(&shapes[i], repeats, eng, st, &sh[i][0], &sh[i][1], &sh[i][2], &sh_impl[i]);
    /* Peaks: all threads at once, and one thread times the thread count; on a
     * busy machine one thread finds a free core far more often than all of
     * them find theirs at once, and the cores are alike, so the ceiling is
     * the larger of the two (if anything an overestimate: a single active
     * core may clock higher, which makes the MFU figures conservative). */
    int threads = omp_get_max_threads();
    int fma_bits = 0;
    double fma_all = fma_peak_any(repeats, &fma_bits);
    double dot_all = has("avx512bf16") ? bf16_dot_peak(repeats) : 0.0;
    omp_set_num_threads(1);
    double fma_one = fma_peak_any(repeats, &fma_bits);
    double dot_one = has("avx512bf16") ? bf16_dot_peak(repeats) : 0.0;
    omp_set_num_threads(threads);
    double fma = fma_all > threads * fma_one ? fma_all : threads * fma_one;
    double dot = dot_all > threads * dot_one ? dot_all : threads * dot_one;
    double bf_best = 0.0;
    for (size_t i = 0; i < n_sz; i++) if (sq[i][2] > bf_best) bf_best = sq[i][2];
    for (size_t i = 0; i < n_sh; i++) if (sh[i][2] > bf_best) bf_best = sh[i][2];

    fprintf(stderr, "%d threads. Peaks: fp32 FMA %.0f GFLOP/s (one core %.0f, all threads at once "
            "%.0f), bf16 vdpbf16ps %.0f GFLOP/s (one core %.0f, all %.0f); best bf16 matmul %.0f "
            "GFLOP/s (%s)\n", threads, fma, fma_one, fma_all, dot, dot_one, dot_all, bf_best,
            sq_impl[n_sz - 1]);
    fprintf(stderr, "%-28s %16s %10s %10s %10s\n", "product", "M x N x K", "OpenBLAS", "dnnl_sgemm", "bf16");
    for (size_t i = 0; i < n_sz; i++)
        fprintf(stderr, "%-28s %5d^3 %10s %10.0f %10.0f %10.0f\n", "square", sizes[i], "", sq[i][0], sq[i][1], sq[i][2]);
    for (size_t i = 0; i < n_sh; i++)
        fprintf(stderr, "%-28s %4dx%4dx%4d %3s %10.0f %10.0f %10.0f\n", shapes[i].what, shapes[i].M, shapes[i].N,
                shapes[i].K, shapes[i].tb ? "NT" : "NN", sh[i][0], sh[i][1], sh[i][2]);

    printf("{\"threads\": %d, \"fma_bits\": %d, \"fma_peak_gflops\": %.1f, \"bf16_dot_peak_gflops\": %.1f, "
           "\"fma_one_core_gflops\": %.1f, \"fma_all_threads_gflops\": %.1f, "
           "\"bf16_dot_one_core_gflops\": %.1f, \"bf16_dot_all_threads_gflops\": %.1f, "
           "\"bf16_matmul_best_gflops\": %.1f, \"bf16_matmul_impl\": \"%s\",\n \"sgemm_gflops\": {",
           threads, fma_bits, fma, dot, fma_one, fma_all, dot_one, dot_all, bf_best, sq_impl[n_sz - 1]);
    for (size_t i = 0; i < n_sz; i++) printf("%s\"%d\": %.1f", i ? ", " : "", sizes[i], sq[i][0]);
    printf("},\n \"dnnl_sgemm_gflops\": {");
    for (size_t i = 0; i < n_sz; i++) printf("%s\"%d\": %.1f", i ? ", " : "", sizes[i], sq[i][1]);
    printf("},\n \"bf16_matmul_gflops\": {");
    for (size_t i = 0; i < n_sz; i++) printf("%s\"%d\": %.1f", i ? ", " : "", sizes[i], sq[i][2]);
    printf("},\n \"shapes\": [");
    for (size_t i = 0; i < n_sh; i++)
        printf("%s\n  {\"what\": \"%s\", \"M\": %d, \"N\": %d, \"K\": %d, \"b_transposed\": %s, "
               "\"openblas\": %.1f, \"dnnl_sgemm\": %.1f, \"bf16_matmul\": %.1f, \"bf16_impl\": \"%s\"}",
               i ? "," : "", shapes[i].what, shapes[i].M, shapes[i].N, shapes[i].K,
               shapes[i].tb ? "true" : "false", sh[i][0], sh[i][1], sh[i][2], sh_impl[i]);
    printf("]}\n");
    dnnl_stream_destroy(st);
    dnnl_engine_destroy(eng);
    return 0;
}
