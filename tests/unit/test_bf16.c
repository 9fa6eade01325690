/* test_bf16.c — the bf16 matrix products of kernels.h (precision "bf16"):
 * rounding to bf16, the three products of moe_k_matmul_forward / _backward
 * against double-precision references within derived bounds (shapes that
 * take every path: row tails, padded inner dimensions, accumulation), the
 * weight copies of inference (frozen weights), products run by several
 * threads at once (bit-identical to serial ones), activations kept in bf16
 * (the bits of the fp32-kept path), the fallback to fp32
 * when the CPU has no bf16 dot products (forced by MOE_NO_BF16), and the
 * default precision "auto" (bf16 exactly where the CPU has them). The tests
 * that need bf16 products skip (77) on a CPU without them. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "moe/util/checksum.h"
#include "moe/model/decode.h"
#include "moe/util/fileio.h"
#include "moe/kernels/kernels.h"
#include "moe/model/model.h"
#include "moe/util/rng.h"

static int have_bf16;  /* this CPU runs bf16 products (else those tests skip) */

/* 1 when the kernel lists `flag` among the CPU's flags in /proc/cpuinfo. */
static int cpu_flag(const char *flag) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[8192];
    int found = 0;
    size_t n = strlen(flag);
    while (f && !found && fgets(line, sizeof line, f)) {
        if (strncmp(line, "flags", 5)) continue;
        for (char *p = strstr(line, flag); p && !found; p = strstr(p + 1, flag))
            found = p[-1] == ' ' && (p[n] == ' ' || p[n] == '\n');
    }
    if (f) fclose(f);
    return found;
}

static float bits_to_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static void test_rounding(void) {
    /* bf16 keeps 8 significant bits: the spacing above 1 is 2^-7 */
    CHECK(moe_k_round_bf16(1.0f + 0x1p-8f) == 1.0f, "tie rounds to even (down)");
    CHECK(moe_k_round_bf16(1.0f + 3 * 0x1p-8f) == 1.0f + 0x1p-6f, "tie rounds to even (up)");
    CHECK(moe_k_round_bf16(1.0f + 0x1p-8f + 0x1p-20f) == 1.0f + 0x1p-7f, "above the tie rounds up");
    CHECK(moe_k_round_bf16(-3.0f) == -3.0f, "exact values stay");
    CHECK(isinf(moe_k_round_bf16(bits_to_float(0x7f7fffffu))), "the largest float rounds to infinity");
    CHECK(isnan(moe_k_round_bf16(bits_to_float(0x7f800001u))), "a NaN stays NaN");
    CHECK(isinf(moe_k_round_bf16(INFINITY)) && moe_k_round_bf16(INFINITY) > 0, "infinity stays");
}

static void fill(moe_rng *r, float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(2.0 * moe_rng_uniform(r) - 1.0);
}

/* Checks C[M,N] against the double product of A and B (A(i,k), B(k,j) read
 * through strides), per element:
 *   rounded = 0: |C - AB| <= (2u + u^2 + g) sum_k |A(i,k) B(k,j)| (+ |C0|-term)
 *   rounded = 1: the inputs rounded to bf16 first: |C - bf(A)bf(B)| <= g sum|..|
 * u = 2^-8 is bf16's unit roundoff (each rounded input is x(1+d), |d| <= u,
 * so a product term is off by at most (2u + u^2) of its size) and
 * g = K 2^-24 / (1 - K 2^-24) bounds the fp32 accumulation of K terms. C0
 * (accumulated into) adds one more fp32 rounding of |C0 + AB|.
 * Returns the largest error relative to sum|..| (to show bf16 is in effect). */
static double check_product(const float *C, const float *C0, const float *A, size_t sai, size_t sak,
                            const float *B, size_t sbk, size_t sbj, size_t M, size_t N, size_t K,
                            int rounded, const char *what) {
    double u = 0x1p-8, g = (double)K * 0x1p-24 / (1.0 - (double)K * 0x1p-24), worst = 0.0;
    int bad = 0;
    for (size_t i = 0; i < M; i++)
        for (size_t j = 0; j < N; j++) {
            double ref = C0 ? C0[i * N + j] : 0.0, mag = 0.0;
            for (size_t k = 0; k < K; k++) {
                double a = A[i * sai + k * sak], b = B[k * sbk + j * sbj];
                if (rounded) { a = moe_k_round_bf16((float)a); b = moe_k_round_bf16((float)b); }
                ref += a * b;
                mag += fabs(a * b);
            }
            double bound = (rounded ? g : 2 * u + u * u + g) * mag + 0x1p-24 * fabs(ref) + 1e-30;
            double err = fabs((double)C[i * N + j] - ref);
            if (mag > 0 && err / mag > worst) worst = err / mag;
            if (err > bound && bad++ < 3)
                CHECK(0, "%s (%zu,%zu) M=%zu N=%zu K=%zu: %.9g vs %.9g, error %.3g > bound %.3g",
                      what, i, j, M, N, K, C[i * N + j], ref, err, bound);
        }
    return worst;
}

static void test_products(void) {
    if (!have_bf16) { SKIP_TEST("this CPU has no bf16 dot products (AVX512_BF16 or AMX, as oneDNN reports)"); return; }
    moe_k_ctx *kc;
    moe_err err;
    CHECK(moe_k_ctx_create(MOE_K_BF16, &kc, &err) == 0, "%s", err.msg);
    CHECK(moe_k_ctx_precision(kc) == MOE_K_BF16, "bf16 in effect");
    /* N rows: 1 and 5 (tail only), 37 and 100 (main + tail), 64 (main only);
     * C = 517 is not a multiple of the padding block; O = 24, 33, and 64, 32 */
    const size_t shapes[][3] = {{1, 16, 24}, {5, 517, 33}, {37, 517, 24}, {64, 128, 33}, {100, 40, 24},
                                {37, 40, 64}, {3, 96, 32}};  /* O % 32 == 0: dout converted once */
    moe_rng r;
    moe_rng_seed(&r, 11);
    double worst_plain = 0.0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        size_t N = shapes[s][0], C = shapes[s][1], O = shapes[s][2];
        float *in = malloc(N * C * 4), *W = malloc(O * C * 4), *dout = malloc(N * O * 4);
        float *out = malloc(N * O * 4), *out0 = malloc(N * O * 4), *din = malloc(N * C * 4);
        float *din0 = malloc(N * C * 4), *dW = malloc(O * C * 4), *dW0 = malloc(O * C * 4);
        fill(&r, in, N * C); fill(&r, W, O * C); fill(&r, dout, N * O);
        fill(&r, out0, N * O); fill(&r, din0, N * C); fill(&r, dW0, O * C);
        for (int rounded = 0; rounded < 2; rounded++) {
            /* out = in W^T, then out = out0 + in W^T */
            moe_k_matmul_forward(kc, out, in, W, N, C, O, 0.0f);
            double w = check_product(out, NULL, in, C, 1, W, 1, C, N, O, C, rounded, "forward");
            memcpy(out, out0, N * O * 4);
            moe_k_matmul_forward(kc, out, in, W, N, C, O, 1.0f);
            check_product(out, out0, in, C, 1, W, 1, C, N, O, C, rounded, "forward beta=1");
            /* din = dout W (and += ), dW = dW0 + dout^T in */
            memcpy(din, din0, N * C * 4);
            memcpy(dW, dW0, O * C * 4);
            moe_k_matmul_backward(kc, din, dW, dout, in, W, N, C, O, 1);
            check_product(din, din0, dout, O, 1, W, C, 1, N, C, O, rounded, "din +=");
            check_product(dW, dW0, dout, 1, O, in, C, 1, O, C, N, rounded, "dW +=");
            moe_k_matmul_backward(kc, din, NULL, dout, in, W, N, C, O, 0);
            check_product(din, NULL, dout, O, 1, W, C, 1, N, C, O, rounded, "din");
            if (!rounded && w > worst_plain) worst_plain = w;
        }
        free(in); free(W); free(dout); free(out); free(out0); free(din); free(din0); free(dW); free(dW0);
    }
    /* the rounding must show: fp32 products would stay below K 2^-24 */
    CHECK(worst_plain > 1e-4, "largest error %.3g: are the inputs rounded to bf16 at all?", worst_plain);
    moe_k_ctx_free(kc);
}

/* Inference keeps bf16 copies of frozen weights: the results must not
 * change, and a weight outside the frozen range is converted each call. */
static void test_frozen_weights(void) {
    if (!have_bf16) { SKIP_TEST("this CPU has no bf16 dot products (AVX512_BF16 or AMX, as oneDNN reports)"); return; }
    enum { N = 40, C = 96, O = 32 };
    static float in[N * C], W[2 * O * C], a[N * O], b[N * O];
    moe_rng r;
    moe_rng_seed(&r, 5);
    fill(&r, in, N * C); fill(&r, W, 2 * O * C);
    moe_k_ctx *kc;
    moe_err err;
    CHECK(moe_k_ctx_create(MOE_K_BF16, &kc, &err) == 0, "%s", err.msg);
    moe_k_matmul_forward(kc, a, in, W, N, C, O, 0.0f);
    moe_k_ctx_freeze_weights(kc, W, O * C);  /* only the first weight */
    for (int rep = 0; rep < 2; rep++) {
        moe_k_matmul_forward(kc, b, in, W, N, C, O, 0.0f);
        CHECK(memcmp(a, b, sizeof a) == 0, "frozen weight: same bits (call %d)", rep);
    }
    /* one row (decode) with a frozen weight takes the vdpbf16ps product:
     * within fp32 accumulation error of the rounded inputs' product */
    static float y[O], y0[O];
    fill(&r, y0, O);
    moe_k_matmul_forward(kc, y, in, W, 1, C, O, 0.0f);
    check_product(y, NULL, in, C, 1, W, 1, C, 1, O, C, 1, "one-row forward, frozen");
    memcpy(y, y0, sizeof y);
    moe_k_matmul_forward(kc, y, in, W, 1, C, O, 1.0f);
    check_product(y, y0, in, C, 1, W, 1, C, 1, O, C, 1, "one-row forward += , frozen");
    float *W2 = W + O * C;  /* outside the frozen range: must follow changes */
    moe_k_matmul_forward(kc, a, in, W2, N, C, O, 0.0f);
    for (size_t i = 0; i < O * C; i++) W2[i] *= 2.0f;
    moe_k_matmul_forward(kc, b, in, W2, N, C, O, 0.0f);
    for (size_t i = 0; i < N * O; i++)
        if (b[i] != 2.0f * a[i]) { CHECK(0, "unfrozen weight changed: %g vs 2 x %g", b[i], a[i]); break; }
    moe_k_ctx_free(kc);
}

/* Experts run one per thread: the same cached primitives executed by
 * several threads at once must give the bits of a serial run (each thread
 * has its own buffers and scratchpad). */
static void test_concurrent(void) {
    if (!have_bf16) { SKIP_TEST("this CPU has no bf16 dot products (AVX512_BF16 or AMX, as oneDNN reports)"); return; }
    enum { E = 8, N = 19, C = 64, O = 256 };
    static float x[E][N * C], g[E][N * O], W[E][O * C], ref[E][O * C], dW[E][O * C];
    moe_rng r;
    moe_rng_seed(&r, 21);
    for (int e = 0; e < E; e++) { fill(&r, x[e], N * C); fill(&r, g[e], N * O); fill(&r, W[e], O * C); }
    moe_k_ctx *kc;
    moe_err err;
    CHECK(moe_k_ctx_create(MOE_K_BF16, &kc, &err) == 0, "%s", err.msg);
    memset(ref, 0, sizeof ref);
    for (int e = 0; e < E; e++) moe_k_matmul_backward(kc, NULL, ref[e], g[e], x[e], W[e], N, C, O, 0);
    int bad = 0;
    for (int rep = 0; rep < 20 && !bad; rep++) {
        memset(dW, 0, sizeof dW);
        #pragma omp parallel for schedule(static, 1) num_threads(4)
        for (int e = 0; e < E; e++) moe_k_matmul_backward(kc, NULL, dW[e], g[e], x[e], W[e], N, C, O, 0);
        for (int e = 0; e < E; e++) bad += memcmp(dW[e], ref[e], sizeof dW[e]) != 0;
    }
    CHECK(!bad, "%d concurrent weight gradients differ from the serial ones", bad);
    moe_k_ctx_free(kc);
}

/* MOE_NO_BF16=1 forces the fallback: a bf16 request gives fp32 products,
 * bit for bit those of moe_k_sgemm, and a model says which precision it runs. */
static void test_fallback(void) {
    setenv("MOE_NO_BF16", "1", 1);
    CHECK(!moe_k_bf16_available(), "MOE_NO_BF16 turns bf16 off");
    moe_k_ctx *kc;
    moe_err err;
    CHECK(moe_k_ctx_create(MOE_K_BF16, &kc, &err) == 0, "%s", err.msg);
    CHECK(moe_k_ctx_precision(kc) == MOE_K_FP32, "fell back to fp32");
    enum { N = 37, C = 48, O = 20 };
    static float in[N * C], W[O * C], a[N * O], b[N * O];
    moe_rng r;
    moe_rng_seed(&r, 9);
    fill(&r, in, N * C); fill(&r, W, O * C);
    moe_k_matmul_forward(kc, a, in, W, N, C, O, 0.0f);
    moe_k_sgemm(0, 1, N, O, C, 1.0f, in, C, W, C, 0.0f, b, O);
    CHECK(memcmp(a, b, sizeof a) == 0, "fallback products are moe_k_sgemm's");
    moe_k_ctx_free(kc);

    moe_config cfg;
    moe_config_defaults(&cfg);
    snprintf(cfg.precision, sizeof cfg.precision, "bf16");
    CHECK(moe_config_finalize(&cfg, &err) == 0, "%s", err.msg);
    moe_model *m = NULL;
    CHECK(moe_model_create(&cfg, &m, &err) == 0, "%s", err.msg);
    if (m) {
        CHECK(strcmp(moe_model_precision(m), "fp32") == 0, "model runs fp32");
        CHECK(strcmp(m->cfg.precision, "bf16") == 0, "and still asks for bf16 (checkpoints keep it)");
        moe_model_free(m);
    }
    unsetenv("MOE_NO_BF16");
    if (have_bf16) {
        CHECK(moe_model_create(&cfg, &m, &err) == 0, "%s", err.msg);
        if (m) CHECK(strcmp(moe_model_precision(m), "bf16") == 0, "bf16 again without the variable");
        moe_model_free(m);
    }
    moe_model *bad = NULL;
    snprintf(cfg.precision, sizeof cfg.precision, "fp16");  /* past the config's validation */
    CHECK(moe_model_create(&cfg, &bad, &err) != 0 && !bad && strstr(err.msg, "fp16"),
          "an unknown precision is refused by name: %s", err.msg);
}

/* A small model of precision `precision` saved in dir (NULL on failure). */
static moe_model *saved_model(const char *precision, const char *dir) {
    moe_config cfg;
    moe_err err;
    moe_config_defaults(&cfg);
    cfg.vocab_size = 40; cfg.hidden = 16; cfg.n_layers = 1; cfg.n_heads = 2; cfg.n_kv_heads = 1;
    if (precision) snprintf(cfg.precision, sizeof cfg.precision, "%s", precision);
    moe_model *m = NULL;
    CHECK(moe_config_finalize(&cfg, &err) == 0 && moe_model_create(&cfg, &m, &err) == 0, "%s", err.msg);
    if (m && moe_model_save(m, dir, &err)) { CHECK(0, "%s", err.msg); moe_model_free(m); m = NULL; }
    return m;
}

/* The precision a checkpoint's config.json reads as ("" on failure). */
static const char *saved_precision(const char *dir, moe_config *cfg) {
    moe_err err;
    if (moe_checkpoint_config(dir, cfg, &err)) { CHECK(0, "%s", err.msg); return ""; }
    return cfg->precision;
}

/* The default precision "auto" is bf16 exactly where the CPU computes bf16
 * dot products (as oneDNN reports: moe_k_bf16_available), resolved when the
 * model is created; the model runs it and its checkpoint records the
 * resolved value, so resume, eval and score run the same products.
 * MOE_NO_BF16=1 makes auto fp32; an explicit fp32 stays fp32 on any CPU; a
 * checkpoint whose config.json has no precision key (written before the key
 * existed) reads as fp32, not auto. */
static void test_auto_precision(void) {
    moe_config cfg;
    moe_config_defaults(&cfg);
    CHECK(!strcmp(cfg.precision, "auto"), "the default is auto, found %s", cfg.precision);
    /* auto is bf16 only on AMX: read from the CPU's own flags, not oneDNN */
    const char *expect = have_bf16 && cpu_flag("amx_bf16") ? "bf16" : "fp32";
    const char *why;
    CHECK(!strcmp(moe_precision_resolve("auto", &why), expect) && why && strstr(why, "auto"),
          "auto resolves to %s here", expect);
    CHECK(!strcmp(moe_precision_resolve("fp32", &why), "fp32") && !why, "fp32 is fp32");
    char dir[] = "/tmp/moe_test_bf16_XXXXXX";
    if (!mkdtemp(dir)) { CHECK(0, "mkdtemp"); return; }
    moe_model *m = saved_model(NULL, dir);
    if (m) {
        CHECK(!strcmp(m->cfg.precision, expect) && !strcmp(moe_model_precision(m), expect),
              "auto: records %s, runs %s; expected %s", m->cfg.precision, moe_model_precision(m), expect);
        moe_model_free(m);
    }
    CHECK(!strcmp(saved_precision(dir, &cfg), expect), "the checkpoint records %s, expected %s",
          cfg.precision, expect);
    /* the same checkpoint as written before the key existed: fp32 */
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    moe_err err;
    size_t len;
    char *text = moe_read_file(path, &len, &err), *line = text ? strstr(text, "\"precision\"") : NULL;
    CHECK(line != NULL, "config.json has a precision line");
    if (line) {
        char *end = strchr(line, '\n');
        memmove(line, end + 1, strlen(end + 1) + 1);
        CHECK(moe_write_file_atomic(path, text, strlen(text), &err) == 0 && moe_checksums_write(dir, &err) == 0,
              "%s", err.msg);
        CHECK(!strcmp(saved_precision(dir, &cfg), "fp32"), "no key reads as fp32, found %s", cfg.precision);
    }
    free(text);
    setenv("MOE_NO_BF16", "1", 1);
    m = saved_model("auto", dir);
    if (m) CHECK(!strcmp(m->cfg.precision, "fp32") && !strcmp(moe_model_precision(m), "fp32"),
                 "auto under MOE_NO_BF16=1: records %s, runs %s", m->cfg.precision, moe_model_precision(m));
    moe_model_free(m);
    CHECK(!strcmp(saved_precision(dir, &cfg), "fp32"), "under MOE_NO_BF16=1 the checkpoint records %s",
          cfg.precision);
    unsetenv("MOE_NO_BF16");
    m = saved_model("fp32", dir);
    if (m) CHECK(!strcmp(m->cfg.precision, "fp32") && !strcmp(moe_model_precision(m), "fp32"),
                 "fp32 asked: records %s, runs %s", m->cfg.precision, moe_model_precision(m));
    moe_model_free(m);
    CHECK(!strcmp(saved_precision(dir, &cfg), "fp32"), "fp32 asked: the checkpoint records %s", cfg.precision);
    /* --precision of score, eval, generate: the model is built in it, and
     * its config says so; the checkpoint is not touched */
    m = NULL;
    CHECK(moe_model_load_precision(dir, "auto", &m, &err) == 0, "%s", err.msg);
    if (m) CHECK(!strcmp(m->cfg.precision, expect) && !strcmp(moe_model_precision(m), expect),
                 "loaded with auto: records %s, runs %s; expected %s", m->cfg.precision,
                 moe_model_precision(m), expect);
    moe_model_free(m);
    m = NULL;
    CHECK(moe_model_load_precision(dir, NULL, &m, &err) == 0, "%s", err.msg);
    if (m) CHECK(!strcmp(m->cfg.precision, "fp32"), "loaded without: the checkpoint's fp32, found %s",
                 m->cfg.precision);
    moe_model_free(m);
    m = NULL;
    CHECK(moe_model_load_precision(dir, "fp16", &m, &err) != 0 && !m && strstr(err.msg, "fp16"),
          "loaded with fp16: refused by name: %s", err.msg);
    CHECK(!strcmp(saved_precision(dir, &cfg), "fp32"), "the checkpoint still records %s", cfg.precision);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0, "%s", cmd);
}

/* A bf16 model's cached decoding rounds q, k and v as its forward's
 * attention does: prefilling a sequence in one pass (the same weight
 * products, row for row, as the forward) gives the forward's logits up to
 * fp32 sums in another order and, rarely, an input of a later product that
 * then rounds to the other bf16 neighbour. Without the rounding every
 * attention input would differ by up to 2^-9 relative (logits off by
 * ~1e-3 of their size on average); with it the mean error is ~1e-6, so
 * the mean over the logits must be below 1e-4 of their mean size. */
static void test_decode_rounds_like_forward(void) {
    if (!have_bf16) { SKIP_TEST("this CPU has no bf16 dot products (AVX512_BF16 or AMX, as oneDNN reports)"); return; }
    enum { TT = 24, VV = 64 };
    moe_config cfg;
    moe_err err;
    moe_config_defaults(&cfg);
    cfg.vocab_size = VV; cfg.hidden = 64; cfg.n_layers = 2; cfg.n_heads = 4; cfg.n_kv_heads = 2;
    cfg.max_seq_len = 32; cfg.seq_len = 32; cfg.init_std = 0.05;
    snprintf(cfg.precision, sizeof cfg.precision, "bf16");
    moe_model *m = NULL;
    CHECK(moe_config_finalize(&cfg, &err) == 0 && moe_model_create(&cfg, &m, &err) == 0, "%s", err.msg);
    if (!m) return;
    moe_model_init(m, 11);
    int ids[TT];
    for (int i = 0; i < TT; i++) ids[i] = (i * 13 + 5) % VV;
    static float full[TT * VV], inc[TT * VV];
    m->keep_logits = 1;
    CHECK(moe_model_forward(m, ids, NULL, 1, TT, NULL, NULL, &err) == 0, "%s", err.msg);
    memcpy(full, m->logits, sizeof full);
    moe_kv_cache *c = NULL;
    CHECK(moe_kv_cache_create(m, &c, &err) == 0 && moe_decode_prefill_all(m, c, ids, TT, inc, &err) == 0,
          "%s", err.msg);
    double diff = 0, size = 0;
    for (size_t i = 0; i < TT * VV; i++) { diff += fabs((double)inc[i] - full[i]); size += fabs(full[i]); }
    CHECK(diff <= 1e-4 * size, "decoding's logits are off by %.3g of their size on average", diff / size);
    moe_kv_cache_free(c);
    moe_model_free(m);
}

/* Activations kept in bf16 (moe_k_act_size 2): the SwiGLU output written in
 * bf16 and read by the products gives the very bits of the fp32-kept path
 * (the products round it the same way), for row counts and widths that
 * take the in-place, tail-padded and fully padded paths; under fp32 the
 * _act functions are the float ones. */
static void test_kept_activations(void) {
    moe_k_ctx *kc;
    moe_err err;
    CHECK(moe_k_ctx_create(MOE_K_BF16, &kc, &err) == 0, "%s", err.msg);
    CHECK(moe_k_act_size(kc) == (have_bf16 ? 2u : 4u), "bytes an element: %zu", moe_k_act_size(kc));
    size_t shapes[][3] = {{64, 96, 32}, {77, 96, 48}, {5, 40, 24}, {33, 256, 64}};  /* N, F, D */
    moe_rng r;
    moe_rng_seed(&r, 17);
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        size_t N = shapes[i][0], F = shapes[i][1], D = shapes[i][2];
        float *h1 = malloc(N * F * 4), *h3 = malloc(N * F * 4), *a = malloc(N * F * 4), *W = malloc(D * F * 4);
        float *dy = malloc(N * D * 4), *y0 = malloc(N * D * 4), *y1 = malloc(N * D * 4);
        float *da0 = malloc(N * F * 4), *da1 = malloc(N * F * 4), *dW0 = calloc(D * F, 4), *dW1 = calloc(D * F, 4);
        void *ak = malloc(N * F * moe_k_act_size(kc));
        fill(&r, h1, N * F); fill(&r, h3, N * F); fill(&r, W, D * F); fill(&r, dy, N * D);
        moe_k_swiglu_forward(a, h1, h3, N * F);
        moe_k_matmul_forward(kc, y0, a, W, N, F, D, 0.0f);
        moe_k_matmul_backward(kc, da0, dW0, dy, a, W, N, F, D, 0);
        moe_k_swiglu_forward_act(kc, ak, h1, h3, N * F);
        moe_k_matmul_forward_act(kc, y1, ak, W, N, F, D, 0.0f);
        moe_k_matmul_backward_act(kc, da1, dW1, dy, ak, W, N, F, D, 0);
        CHECK(!memcmp(y0, y1, N * D * 4) && !memcmp(da0, da1, N * F * 4) && !memcmp(dW0, dW1, D * F * 4),
              "N %zu F %zu D %zu: kept in %zu bytes, the products differ from the fp32-kept ones", N, F, D,
              moe_k_act_size(kc));
        free(h1); free(h3); free(a); free(W); free(dy); free(y0); free(y1); free(da0); free(da1);
        free(dW0); free(dW1); free(ak);
    }
    moe_k_ctx_free(kc);
}

int main(void) {
    unsetenv("MOE_NO_BF16");
    have_bf16 = moe_k_bf16_available();
    if (!have_bf16) printf("note: no bf16 dot products here; only the fallback is tested\n");
    RUN(test_rounding);
    RUN(test_products);
    RUN(test_frozen_weights);
    RUN(test_concurrent);
    RUN(test_kept_activations);
    RUN(test_fallback);
    RUN(test_auto_precision);
    RUN(test_decode_rounds_like_forward);
    TEST_MAIN_END();
}
