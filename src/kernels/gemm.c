/* gemm.c — the matrix-product backend of kernels.h. fp32 products go
 * through moe_k_sgemm, which picks the library by shape as bench/gemm_rate.c
 * measures it (oneDNN's dnnl_sgemm, which dispatches on the CPU's own
 * features, except for matrix-vector shapes where OpenBLAS is faster).
 * bf16 products (moe_k_ctx with MOE_K_BF16) round both inputs to bf16 and run
 * oneDNN's matmul primitive with fp32 accumulation and an fp32 result; the
 * primitives are cached per shape in the context. Nothing outside
 * src/kernels/ names a BLAS. */
#include "moe/kernels/kernels.h"

#include <assert.h>
#include <cblas.h>
#include <dnnl.h>
#include <omp.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "fastmath.h"

/* Rows below which OpenBLAS wins: at M = 1 (one decode query per head)
 * OpenBLAS ran 1.2-1.6x dnnl_sgemm; from M = 32 dnnl_sgemm was 1.0-1.7x
 * OpenBLAS on every shape of the models (docs/PERFORMANCE.md). */
#define K_SGEMM_SMALL_M 4

void moe_k_sgemm(int ta, int tb, size_t M, size_t N, size_t K, float alpha, const float *A,
             size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc) {
    if (M == 0 || N == 0) return;
    /* each row-major operand's rows are at least as long as its columns:
     * op(A)[M,K] stores rows of K (M when transposed), op(B)[K,N] of N (K),
     * C[M,N] of N; CBLAS takes them as int */
    assert(lda >= (ta ? M : K) && ldb >= (tb ? K : N) && ldc >= N);
    assert(M <= INT_MAX && N <= INT_MAX && K <= INT_MAX && lda <= INT_MAX && ldb <= INT_MAX &&
           ldc <= INT_MAX);
    if (M < K_SGEMM_SMALL_M) {
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
        return;
    }
    /* Cannot fail for valid row-major arguments (the callers' shapes). */
    dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', (dnnl_dim_t)M, (dnnl_dim_t)N, (dnnl_dim_t)K,
               alpha, A, (dnnl_dim_t)lda, B, (dnnl_dim_t)ldb, beta, C, (dnnl_dim_t)ldc);
}

/* ---- bf16 ---------------------------------------------------------------- */

/* Shapes are bucketed so that the primitive cache stays small although an
 * expert's row count changes every step: rows are split into a main part of
 * a multiple of ROW_BLOCK rows, written in place, and a tail padded with
 * zero rows to a multiple of TAIL_BLOCK, computed into scratch and copied;
 * an inner dimension K (an expert's rows in a weight gradient) is padded
 * with zeros to a multiple of K_BLOCK. Zero padding changes no sum. With
 * TAIL_BLOCK = K_BLOCK the bf16 copy of dout made for din ([N rounded up,
 * O]) is the one dW needs, so the backward converts it once. */
#define ROW_BLOCK 32
#define TAIL_BLOCK 32      /* = K_BLOCK: a converted dout serves din and dW */
#define K_BLOCK 32
#define MAX_PRIMS 4096     /* beyond this, products fall back to fp32 */
#define MAX_FROZEN 4096    /* bf16 weight copies kept while frozen */
#define MAX_SLOTS 256      /* threads with their own buffers and stream */
#define GEMV_ROWS 4        /* fewer rows (decode) with a frozen weight: gemv_bf16 */

typedef struct {
    int ta, tb, acc;
    size_t M, N, K;
    dnnl_primitive_t prim;
    dnnl_memory_desc_t scratch;  /* its scratchpad (size 0: none) */
} kc_prim;

typedef struct {            /* one per OpenMP thread (number) of the outer team */
    uint16_t *a, *b;        /* bf16 copies of the inputs */
    size_t cap_a, cap_b;
    float *c;               /* [TAIL_BLOCK, N] result of the row tail */
    size_t cap_c;
    void *scratch;          /* the primitives' scratchpad */
    size_t cap_scratch;
    dnnl_stream_t stream;
} kc_slot;

typedef struct {
    const float *src;       /* the fp32 weight (frozen mode only) */
    size_t rows, cols;
    uint16_t *bf;           /* [rows, cols] rounded */
} kc_frozen;

struct moe_k_ctx {
    moe_k_precision prec;       /* in effect (after fallback) */
    dnnl_engine_t engine;
    omp_lock_t lock;        /* guards prims and frozen */
    kc_prim *prims;
    size_t n_prims, cap_prims;
    kc_slot *slots;
    int n_slots;
    const float *frozen;    /* [n_frozen] weights that do not change: their */
    size_t n_frozen;        /* bf16 copies are kept (NULL: none) */
    kc_frozen *fz;
    size_t n_fz;
    int gemv;               /* the CPU has AVX512_BF16: gemv_bf16, fast conversion */
};

static int has_avx512bf16(void);

int moe_k_bf16_available(void) {
    const char *off = getenv("MOE_NO_BF16");
    if (off && *off && strcmp(off, "0") != 0) return 0;
    /* what oneDNN may use (honours ONEDNN_MAX_CPU_ISA as well); the ISA
     * values are nested bit sets: AMX includes AVX512_CORE_BF16 */
    unsigned isa = (unsigned)dnnl_get_effective_cpu_isa();
    return (isa & dnnl_cpu_isa_avx512_core_bf16) == dnnl_cpu_isa_avx512_core_bf16;
}

int moe_k_bf16_amx(void) {
    unsigned isa = (unsigned)dnnl_get_effective_cpu_isa();
    return moe_k_bf16_available() && (isa & dnnl_cpu_isa_avx512_core_amx) == dnnl_cpu_isa_avx512_core_amx;
}

int moe_k_ctx_create(moe_k_precision want, moe_k_ctx **out, moe_err *err) {
    *out = NULL;
    moe_k_ctx *kc = moe_calloc(1, sizeof *kc, err);
    if (!kc) return -1;
    kc->prec = MOE_K_FP32;
    omp_init_lock(&kc->lock);
    if (want == MOE_K_BF16 && moe_k_bf16_available()) {
        kc->n_slots = MAX_SLOTS;
        kc->slots = moe_calloc((size_t)kc->n_slots, sizeof *kc->slots, err);
        if (!kc->slots) { moe_k_ctx_free(kc); return -1; }
        if (dnnl_engine_create(&kc->engine, dnnl_cpu, 0) != dnnl_success) {
            moe_k_ctx_free(kc);
            return moe_errf(err, "bf16: cannot create the oneDNN CPU engine");
        }
        kc->prec = MOE_K_BF16;
        kc->gemv = has_avx512bf16();
    }
    *out = kc;
    return 0;
}

static void frozen_clear(moe_k_ctx *kc) {
    for (size_t i = 0; i < kc->n_fz; i++) free(kc->fz[i].bf);
    free(kc->fz);
    kc->fz = NULL;
    kc->n_fz = 0;
}

void moe_k_ctx_free(moe_k_ctx *kc) {
    if (!kc) return;
    for (size_t i = 0; i < kc->n_prims; i++) dnnl_primitive_destroy(kc->prims[i].prim);
    free(kc->prims);
    for (int i = 0; i < kc->n_slots; i++) {
        free(kc->slots[i].a);
        free(kc->slots[i].b);
        free(kc->slots[i].c);
        free(kc->slots[i].scratch);
        if (kc->slots[i].stream) dnnl_stream_destroy(kc->slots[i].stream);
    }
    free(kc->slots);
    frozen_clear(kc);
    if (kc->engine) dnnl_engine_destroy(kc->engine);
    omp_destroy_lock(&kc->lock);
    free(kc);
}

moe_k_precision moe_k_ctx_precision(const moe_k_ctx *kc) { return kc ? kc->prec : MOE_K_FP32; }

void moe_k_ctx_freeze_weights(moe_k_ctx *kc, const float *params, size_t n) {
    if (!kc) return;
    omp_set_lock(&kc->lock);
    frozen_clear(kc);
    kc->frozen = params;
    kc->n_frozen = params ? n : 0;
    omp_unset_lock(&kc->lock);
}

/* Round to nearest even (as PyTorch's and oneDNN's conversions); NaN stays
 * NaN (quiet bit forced so that rounding cannot carry it into infinity). */
static inline uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float moe_k_round_bf16(float x) {
    uint32_t u = (uint32_t)to_bf16(x) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#if defined(__x86_64__)
/* d[n] = bf16(s[n]) by vcvtne2ps2bf16: round to nearest even as to_bf16,
 * NaN stays NaN; denormal inputs become zero (the instruction's rule). */
__attribute__((target("avx512f,avx512bw,avx512bf16")))
static void convert_row_avx512(uint16_t *d, const float *s, size_t n) {
    size_t j = 0;
    for (; j + 32 <= n; j += 32) {
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(s + j + 16), _mm512_loadu_ps(s + j));
        _mm512_storeu_si512(d + j, (__m512i)v);
    }
    if (j < n) {
        size_t t = n - j;
        __mmask16 lo = (__mmask16)(t >= 16 ? 0xffff : (1u << t) - 1);
        __mmask16 hi = (__mmask16)(t > 16 ? (1u << (t - 16)) - 1 : 0);
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, s + j + 16),
                                         _mm512_maskz_loadu_ps(lo, s + j));
        _mm512_mask_storeu_epi16(d + j, (__mmask32)((1ull << t) - 1), (__m512i)v);
    }
}
#endif

/* dst[rp, cp] = bf16(src[r, c] with row stride ld), zeros outside. fast:
 * the CPU converts itself (vcvtne2ps2bf16). */
static void convert(uint16_t *dst, const float *src, size_t r, size_t c, size_t ld,
                    size_t rp, size_t cp, int fast) {
    #pragma omp parallel for schedule(static) if (r * c > 65536 && !omp_in_parallel())
    for (size_t i = 0; i < r; i++) {
        const float *s = src + i * ld;
        uint16_t *d = dst + i * cp;
#if defined(__x86_64__)
        if (fast) convert_row_avx512(d, s, c);
        else
#endif
        {
            #pragma omp simd
            for (size_t j = 0; j < c; j++) d[j] = to_bf16(s[j]);
        }
        for (size_t j = c; j < cp; j++) d[j] = 0;
    }
    (void)fast;
    if (rp > r) memset(dst + r * cp, 0, (rp - r) * cp * sizeof(uint16_t));
}

/* dst[rp, cp] = src[r, c] (bf16 already, row stride ld), zeros outside. */
static void copy_padded(uint16_t *dst, const uint16_t *src, size_t r, size_t c, size_t ld, size_t rp,
                        size_t cp) {
    for (size_t i = 0; i < r; i++) {
        memcpy(dst + i * cp, src + i * ld, c * sizeof(uint16_t));
        memset(dst + i * cp + c, 0, (cp - c) * sizeof(uint16_t));
    }
    if (rp > r) memset(dst + r * cp, 0, (rp - r) * cp * sizeof(uint16_t));
}

/* *p holds at least `bytes` (old contents dropped), 64-byte aligned. */
static int grow(void **p, size_t *cap, size_t bytes) {
    if (bytes <= *cap) return 0;
    void *q = NULL;
    if (posix_memalign(&q, 64, bytes)) return -1;
    free(*p);
    *p = q;
    *cap = bytes;
    return 0;
}

/* The primitive for dst[M,N] (+)= A B with A stored [M,K] (ta = 0) or
 * [K,M] (ta = 1), B stored [K,N] (tb = 0) or [N,K] (tb = 1), all dense.
 * Its scratchpad is the caller's (user mode): with the library's own,
 * threads running primitives at once (the experts, one per thread) share
 * one scratchpad and corrupt each other's results. 0: found or made. */
static int get_prim(moe_k_ctx *kc, int ta, int tb, int acc, size_t M, size_t N, size_t K,
                    kc_prim *out) {
    int found = 0;
    omp_set_lock(&kc->lock);
    for (size_t i = 0; i < kc->n_prims; i++) {
        kc_prim *e = &kc->prims[i];
        if (e->ta == ta && e->tb == tb && e->acc == acc && e->M == M && e->N == N && e->K == K) {
            *out = *e;
            found = 1;
            break;
        }
    }
    if (!found && kc->n_prims < MAX_PRIMS) {
        dnnl_memory_desc_t a, b, c;
        dnnl_dims_t da = {(dnnl_dim_t)M, (dnnl_dim_t)K}, db = {(dnnl_dim_t)K, (dnnl_dim_t)N},
                    dc = {(dnnl_dim_t)M, (dnnl_dim_t)N};
        dnnl_matmul_desc_t md;
        dnnl_primitive_attr_t attr = NULL;
        dnnl_post_ops_t po = NULL;
        dnnl_primitive_desc_t pd = NULL;
        dnnl_primitive_t p = NULL;
        int ok = dnnl_memory_desc_init_by_tag(&a, 2, da, dnnl_bf16, ta ? dnnl_ba : dnnl_ab) == 0 &&
                 dnnl_memory_desc_init_by_tag(&b, 2, db, dnnl_bf16, tb ? dnnl_ba : dnnl_ab) == 0 &&
                 dnnl_memory_desc_init_by_tag(&c, 2, dc, dnnl_f32, dnnl_ab) == 0 &&
                 dnnl_matmul_desc_init(&md, &a, &b, NULL, &c) == 0 &&
                 dnnl_primitive_attr_create(&attr) == 0 &&
                 dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) == 0;
        if (ok && acc)
            ok = dnnl_post_ops_create(&po) == 0 && dnnl_post_ops_append_sum(po, 1.0f) == 0 &&
                 dnnl_primitive_attr_set_post_ops(attr, po) == 0;
        if (ok) ok = dnnl_primitive_desc_create(&pd, &md, attr, kc->engine, NULL) == 0;
        kc_prim e = {ta, tb, acc, M, N, K, NULL, {0}};
        if (ok) {
            const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
            if (smd) e.scratch = *smd;
            ok = dnnl_primitive_create(&p, pd) == 0;
        }
        if (pd) dnnl_primitive_desc_destroy(pd);
        if (po) dnnl_post_ops_destroy(po);
        if (attr) dnnl_primitive_attr_destroy(attr);
        if (ok && kc->n_prims == kc->cap_prims) {
            size_t cap = kc->cap_prims ? 2 * kc->cap_prims : 64;
            kc_prim *np = realloc(kc->prims, cap * sizeof *np);
            if (np) { kc->prims = np; kc->cap_prims = cap; }
        }
        if (ok && kc->n_prims < kc->cap_prims) {
            e.prim = p;
            kc->prims[kc->n_prims++] = e;
            *out = e;
            found = 1;
        } else if (p) dnnl_primitive_destroy(p);
    }
    omp_unset_lock(&kc->lock);
    return found ? 0 : -1;
}

static int run_prim(const kc_prim *e, kc_slot *s, dnnl_engine_t eng, const uint16_t *A,
                    const uint16_t *B, float *C) {
    dnnl_memory_desc_t a, b, c;
    dnnl_dims_t da = {(dnnl_dim_t)e->M, (dnnl_dim_t)e->K}, db = {(dnnl_dim_t)e->K, (dnnl_dim_t)e->N},
                dc = {(dnnl_dim_t)e->M, (dnnl_dim_t)e->N};
    dnnl_memory_t ma = NULL, mb = NULL, mc = NULL, ms = NULL;
    size_t sbytes = dnnl_memory_desc_get_size(&e->scratch);
    if (sbytes && grow((void **)&s->scratch, &s->cap_scratch, sbytes)) return -1;
    int ok = dnnl_memory_desc_init_by_tag(&a, 2, da, dnnl_bf16, e->ta ? dnnl_ba : dnnl_ab) == 0 &&
             dnnl_memory_desc_init_by_tag(&b, 2, db, dnnl_bf16, e->tb ? dnnl_ba : dnnl_ab) == 0 &&
             dnnl_memory_desc_init_by_tag(&c, 2, dc, dnnl_f32, dnnl_ab) == 0 &&
             dnnl_memory_create(&ma, &a, eng, (void *)A) == 0 &&
             dnnl_memory_create(&mb, &b, eng, (void *)B) == 0 &&
             dnnl_memory_create(&mc, &c, eng, C) == 0 &&
             (!sbytes || dnnl_memory_create(&ms, &e->scratch, eng, s->scratch) == 0);
    if (ok) {
        dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc},
                                   {DNNL_ARG_SCRATCHPAD, ms}};
        ok = dnnl_primitive_execute(e->prim, s->stream, sbytes ? 4 : 3, args) == 0 &&
             dnnl_stream_wait(s->stream) == 0;
    }
    if (ma) dnnl_memory_destroy(ma);
    if (mb) dnnl_memory_destroy(mb);
    if (mc) dnnl_memory_destroy(mc);
    if (ms) dnnl_memory_destroy(ms);
    return ok ? 0 : -1;
}

/* The bf16 copy of a frozen weight W[rows, cols] (NULL: not kept). */
static const uint16_t *frozen_weight(moe_k_ctx *kc, const float *W, size_t rows, size_t cols) {
    const uint16_t *bf = NULL;
    omp_set_lock(&kc->lock);
    if (kc->frozen && W >= kc->frozen && W + rows * cols <= kc->frozen + kc->n_frozen) {
        for (size_t i = 0; i < kc->n_fz; i++)
            if (kc->fz[i].src == W && kc->fz[i].rows == rows && kc->fz[i].cols == cols) {
                bf = kc->fz[i].bf;
                break;
            }
        if (!bf && kc->n_fz < MAX_FROZEN) {
            uint16_t *c = malloc(rows * cols * sizeof *c);
            kc_frozen *nf = realloc(kc->fz, (kc->n_fz + 1) * sizeof *nf);
            if (nf) kc->fz = nf;
            if (c && nf) {
                convert(c, W, rows, cols, cols, rows, cols, kc->gemv);
                kc->fz[kc->n_fz++] = (kc_frozen){W, rows, cols, c};
                bf = c;
            } else free(c);
        }
    }
    omp_unset_lock(&kc->lock);
    return bf;
}

#if defined(__x86_64__)
/* y[N] (beta 0: =, 1: +=) for one row: y[j] = sum_k x[k] W[j,k], x and W
 * in bf16 (W [N,K] rows), fp32 accumulation by vdpbf16ps (pairs of
 * products, as the bf16 matmul). Decode's one-token products: a matmul
 * primitive call costs more than this whole product there. K is a multiple
 * of 32 (K_BLOCK: frozen copies exist only for such weights). */
__attribute__((target("avx512f,avx512bf16")))
static void gemv_bf16(float *y, const uint16_t *x, const uint16_t *W, size_t N, size_t K,
                      float beta) {
    size_t K32 = K / 32 * 32;
    #pragma omp parallel for schedule(static) if (N * K > 65536 && !omp_in_parallel())
    for (size_t j = 0; j < N; j++) {
        const uint16_t *w = W + j * K;
        __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
        size_t k = 0;
        for (; k + 64 <= K32; k += 64) {
            acc0 = _mm512_dpbf16_ps(acc0, (__m512bh)_mm512_loadu_si512(x + k),
                                    (__m512bh)_mm512_loadu_si512(w + k));
            acc1 = _mm512_dpbf16_ps(acc1, (__m512bh)_mm512_loadu_si512(x + k + 32),
                                    (__m512bh)_mm512_loadu_si512(w + k + 32));
        }
        for (; k < K32; k += 32)
            acc0 = _mm512_dpbf16_ps(acc0, (__m512bh)_mm512_loadu_si512(x + k),
                                    (__m512bh)_mm512_loadu_si512(w + k));
        float v = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
        y[j] = beta != 0.0f ? y[j] + v : v;
    }
}
static int has_avx512bf16(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16");
}
#else
static void gemv_bf16(float *y, const uint16_t *x, const uint16_t *W, size_t N, size_t K,
                      float beta) { (void)y; (void)x; (void)W; (void)N; (void)K; (void)beta; }
static int has_avx512bf16(void) { return 0; }
#endif

/* C[M,N] (beta 0: =, 1: +=) bf16(A) bf16(B), fp32 accumulation, with the
 * storage conventions of get_prim and dense A, B, C. A and B are fp32
 * (rounded here), or bf16 already when A16 / B16 is given instead (an
 * activation kept in bf16: see moe_k_act_size; only A untransposed and B
 * untransposed are taken that way, as the model's products need). A_ready:
 * this thread's bf16 copy of A from the previous call is the one needed.
 * B_frozen: B is a weight whose bf16 copy may be kept (frozen mode). Returns
 * -1 (C untouched) when oneDNN or memory fails; the caller then computes in
 * fp32. */
static int gemm_bf16(moe_k_ctx *kc, int ta, int tb, size_t M, size_t N, size_t K, const float *A,
                     const uint16_t *A16, int A_ready, const float *B, const uint16_t *B16, int B_frozen,
                     float beta, float *C) {
    int t = omp_get_thread_num();
    if (t >= kc->n_slots) return -1;
    kc_slot *s = &kc->slots[t];
    if (!s->stream &&  /* made by its own thread, on first use */
        dnnl_stream_create(&s->stream, kc->engine, dnnl_stream_default_flags) != dnnl_success)
        return -1;
    int acc = beta != 0.0f;
    size_t Kp = (K + K_BLOCK - 1) / K_BLOCK * K_BLOCK;
    size_t Mm = ta ? M : M / ROW_BLOCK * ROW_BLOCK;       /* main rows, in place */
    size_t r = M - Mm, rp = (r + TAIL_BLOCK - 1) / TAIL_BLOCK * TAIL_BLOCK;
    size_t Mp = Mm + rp;
    /* A: stored [Mp, Kp] or [Kp, M]; the main rows at a, the tail's at a_tail */
    const uint16_t *a = s->a, *a_tail = s->a + Mm * Kp;
    if (A16 && Kp == K) {  /* the main rows in place; only the tail padded */
        if (rp && grow((void **)&s->a, &s->cap_a, rp * Kp * sizeof(uint16_t))) return -1;
        if (rp) copy_padded(s->a, A16 + Mm * K, r, K, K, rp, Kp);
        a = A16;
        a_tail = s->a;
    } else if (A16) {
        if (grow((void **)&s->a, &s->cap_a, Mp * Kp * sizeof(uint16_t))) return -1;
        copy_padded(s->a, A16, M, K, K, Mp, Kp);
        a = s->a;
        a_tail = s->a + Mm * Kp;
    } else if (!A_ready) {  /* else s->a holds it already (moe_k_matmul_backward) */
        if (grow((void **)&s->a, &s->cap_a, (ta ? Kp * M : Mp * Kp) * sizeof(uint16_t))) return -1;
        if (ta) convert(s->a, A, K, M, M, Kp, M, kc->gemv);
        else convert(s->a, A, M, K, K, Mp, Kp, kc->gemv);
        a = s->a;
        a_tail = s->a + Mm * Kp;
    }
    /* B: stored [Kp, N] or [N, Kp] */
    const uint16_t *b = NULL;
    if (B_frozen && Kp == K) b = frozen_weight(kc, B, tb ? N : K, tb ? K : N);
    if (b && !ta && tb && M < GEMV_ROWS && kc->gemv) {  /* decode: row by row */
        for (size_t i = 0; i < M; i++) gemv_bf16(C + i * N, a + i * Kp, b, N, K, beta);
        return 0;
    }
    if (B16 && Kp == K) {
        b = B16;
    } else if (B16) {  /* K rows of N, padded with zero rows */
        if (grow((void **)&s->b, &s->cap_b, Kp * N * sizeof(uint16_t))) return -1;
        copy_padded(s->b, B16, K, N, N, Kp, N);
        b = s->b;
    } else if (!b) {
        if (grow((void **)&s->b, &s->cap_b, Kp * N * sizeof(uint16_t))) return -1;
        if (tb) convert(s->b, B, N, K, K, N, Kp, kc->gemv);
        else convert(s->b, B, K, N, N, Kp, N, kc->gemv);
        b = s->b;
    }
    kc_prim pm, pt;
    if ((Mm && get_prim(kc, ta, tb, acc, Mm, N, Kp, &pm)) ||
        (rp && get_prim(kc, ta, tb, 0, rp, N, Kp, &pt)))
        return -1;
    if (rp && grow((void **)&s->c, &s->cap_c, rp * N * sizeof(float))) return -1;
    if (Mm && run_prim(&pm, s, kc->engine, a, b, C)) return -1;
    if (rp) {
        if (run_prim(&pt, s, kc->engine, a_tail, b, s->c)) return -1;
        float *dst = C + Mm * N;
        if (acc) for (size_t i = 0; i < r * N; i++) dst[i] += s->c[i];
        else memcpy(dst, s->c, r * N * sizeof(float));
    }
    return 0;
}

static int use_bf16(const moe_k_ctx *kc) { return kc && kc->prec == MOE_K_BF16; }

void moe_k_matmul_forward(moe_k_ctx *kc, float *out, const float *in, const float *W,
                      size_t N, size_t C, size_t O, float beta) {
    if (N == 0) return;
    if (use_bf16(kc) && gemm_bf16(kc, 0, 1, N, O, C, in, NULL, 0, W, NULL, 1, beta, out) == 0) return;
    moe_k_sgemm(0, 1, N, O, C, 1.0f, in, C, W, C, beta, out, O);
}

/* x[n] as fp32 (the fallback when a bf16 product fails). */
static float *widen(const uint16_t *x, size_t n) {
    float *f = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; f && i < n; i++) {
        uint32_t u = (uint32_t)x[i] << 16;
        memcpy(&f[i], &u, 4);
    }
    return f;
}

/* The bf16 backward of rows [0, N) of one call: din rows, then dW with
 * din's copy of dout when it is the one dW needs. in (fp32) or in16 (bf16). */
static void backward_bf16(moe_k_ctx *kc, float *din, float *dW, const float *dout, const float *in,
                          const uint16_t *in16, const float *W, size_t N, size_t C, size_t O,
                          int accumulate) {
    int din_bf = 0;
    if (din) {
        din_bf = gemm_bf16(kc, 0, 0, N, C, O, dout, NULL, 0, W, NULL, 1, accumulate ? 1.0f : 0.0f, din) == 0;
        if (!din_bf) moe_k_sgemm(0, 0, N, C, O, 1.0f, dout, O, W, C, accumulate ? 1.0f : 0.0f, din, C);
    }
    /* dW: dout stored [N, O] is A transposed; din's copy ([N up to 32, O],
     * zero rows below) is the same bytes when O needs no padding */
    int ready = din_bf && O % K_BLOCK == 0;
    if (!dW || gemm_bf16(kc, 1, 0, O, C, N, dout, NULL, ready, in, in16, 0, 1.0f, dW) == 0) return;
    float *f = in16 ? widen(in16, N * C) : NULL;  /* exact: bf16 values are fp32 values */
    if (in16 && !f) abort();                       /* no memory for the fallback of a failed product */
    moe_k_sgemm(1, 0, O, C, N, 1.0f, dout, O, f ? f : in, C, 1.0f, dW, C);
    free(f);
}

/* Rows of one bf16 backward call: the thread's bf16 copy of dout is at most
 * [BWD_ROWS, O] (the LM head's gradient, [N, vocabulary], would otherwise
 * be the largest buffer a bf16 step adds); dW adds the blocks' products. */
#define BWD_ROWS 256

/* Both backward products, in row blocks under bf16. */
static void backward(moe_k_ctx *kc, float *din, float *dW, const float *dout, const float *in,
                     const uint16_t *in16, const float *W, size_t N, size_t C, size_t O, int accumulate) {
    if (N == 0) return;
    if (!use_bf16(kc)) {
        if (din) moe_k_sgemm(0, 0, N, C, O, 1.0f, dout, O, W, C, accumulate ? 1.0f : 0.0f, din, C);
        if (dW) moe_k_sgemm(1, 0, O, C, N, 1.0f, dout, O, in, C, 1.0f, dW, C);
        return;
    }
    for (size_t r0 = 0; r0 < N; r0 += BWD_ROWS) {
        size_t n = N - r0 < BWD_ROWS ? N - r0 : BWD_ROWS;
        backward_bf16(kc, din ? din + r0 * C : NULL, dW, dout + r0 * O, in ? in + r0 * C : NULL,
                      in16 ? in16 + r0 * C : NULL, W, n, C, O, accumulate);
    }
}

void moe_k_matmul_backward(moe_k_ctx *kc, float *din, float *dW, const float *dout, const float *in,
                       const float *W, size_t N, size_t C, size_t O, int accumulate) {
    backward(kc, din, dW, dout, in, NULL, W, N, C, O, accumulate);
}

/* ---- activations kept in the context's precision ----------------------- */

size_t moe_k_act_size(const moe_k_ctx *kc) { return use_bf16(kc) ? sizeof(uint16_t) : sizeof(float); }

void moe_k_swiglu_forward_act(const moe_k_ctx *kc, void *a, const float *h1, const float *h3, size_t n) {
    if (!use_bf16(kc)) { moe_k_swiglu_forward(a, h1, h3, n); return; }
    enum { CHUNK = 1024 };  /* moe_k_swiglu_forward's values, rounded as convert() rounds */
    uint16_t *d = a;
    #pragma omp parallel for schedule(static)
    for (size_t c = 0; c < (n + CHUNK - 1) / CHUNK; c++) {
        float v[CHUNK];
        size_t i0 = c * CHUNK, m = n - i0 < CHUNK ? n - i0 : CHUNK;
        for (size_t i = 0; i < m; i++) v[i] = moe_swiglu(h1[i0 + i], h3[i0 + i]);
        convert(d + i0, v, 1, m, m, 1, m, kc->gemv);
    }
}

void moe_k_matmul_forward_act(moe_k_ctx *kc, float *out, const void *in, const float *W, size_t N, size_t C,
                          size_t O, float beta) {
    if (!use_bf16(kc)) { moe_k_matmul_forward(kc, out, in, W, N, C, O, beta); return; }
    if (N == 0 || gemm_bf16(kc, 0, 1, N, O, C, NULL, in, 0, W, NULL, 1, beta, out) == 0) return;
    float *f = widen(in, N * C);  /* exact: bf16 values are fp32 values */
    if (!f) abort();              /* no memory for the fallback of a failed product */
    moe_k_sgemm(0, 1, N, O, C, 1.0f, f, C, W, C, beta, out, O);
    free(f);
}

void moe_k_matmul_backward_act(moe_k_ctx *kc, float *din, float *dW, const float *dout, const void *in,
                           const float *W, size_t N, size_t C, size_t O, int accumulate) {
    if (use_bf16(kc)) backward(kc, din, dW, dout, NULL, in, W, N, C, O, accumulate);
    else backward(kc, din, dW, dout, in, NULL, W, N, C, O, accumulate);
}
