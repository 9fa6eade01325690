/* test_grad.c — finite-difference checks (double precision) of every
 * backward pass. Each op has a plain double-precision reference forward
 * written here, independently of src/kernels; the objective is
 * f = sum(R * op(inputs)) for a fixed random R, its gradient is taken by
 * central differences of the double reference, and compared with what the
 * float backward of moe computes.
 *
 * Tolerances: the central difference in double (h = 1e-6) is exact to far
 * below what is compared: truncation h^2 f'''/6 ~ 1e-12 and rounding
 * 1e-16 |f| / h ~ 1e-9 relative. What remains is the float32 rounding of the
 * analytic gradient, a few u = 2^-24 ~ 6e-8 per dot product of K terms
 * (~sqrt(K) u). Measured (max |error| / max |gradient|): matmul 7.7e-8,
 * rmsnorm 5.2e-8, rope 9.2e-8, attention 4.6e-7 (T = 68: longer softmax
 * sums), swiglu 4.4e-8, cross-entropy 1.4e-7, dense FFN 1.7e-7; each check
 * allows about 10x its own. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "moe/model/ffn.h"
#include "moe/kernels/kernels.h"
#include "moe/util/rng.h"
#include "kernels/fastmath.h"

/* The unfused cross-entropy, as the library computed it before the LM head
 * was fused with it (moe_k_lm_head): the reference the fused head is compared
 * with below, itself checked by finite differences. losses[N] (0 for an
 * ignored target < 0), lse[N]; returns the sum of the losses in row order.
 * The backward: dlogits = (softmax - onehot) * dscale, may alias logits. */
static double k_cross_entropy_forward(float *losses, float *lse, const float *logits,
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

static void k_cross_entropy_backward(float *dlogits, const float *logits, const float *lse,
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


#define MAXN 4096

/* An op under test: inputs packed into x[n]; ref(x, ctx) is the double
 * objective. */
typedef double (*objective)(const double *x, void *ctx);

static void fill(moe_rng *r, double *x, size_t n, double scale) {
    for (size_t i = 0; i < n; i++) x[i] = scale * moe_rng_normal(r);
}

/* Compares the analytic gradient g[n] with central differences of f. */
static double fd_error(objective f, void *ctx, const double *x0, const float *g, size_t n) {
    static double x[MAXN];
    memcpy(x, x0, n * sizeof(double));
    double max_err = 0.0, max_ref = 0.0, h = 1e-5;
    for (size_t i = 0; i < n; i++) {
        double keep = x[i];
        x[i] = keep + h; double fp = f(x, ctx);
        x[i] = keep - h; double fm = f(x, ctx);
        x[i] = keep;
        double fd = (fp - fm) / (2 * h);
        max_err = fmax(max_err, fabs(fd - g[i]));
        max_ref = fmax(max_ref, fabs(fd));
    }
    return max_err / fmax(max_ref, 1e-12);
}

static void to_float(float *dst, const double *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = (float)src[i];
}

/* ---- matmul: out[N,O] = in[N,C] W[O,C]^T ------------------------------- */
enum { MN = 5, MC = 7, MO = 4 };
static double R_mm[MN * MO];
static double f_matmul(const double *x, void *ctx) {
    (void)ctx;
    const double *in = x, *W = x + MN * MC;
    double s = 0;
    for (int i = 0; i < MN; i++)
        for (int o = 0; o < MO; o++) {
            double acc = 0;
            for (int c = 0; c < MC; c++) acc += in[i * MC + c] * W[o * MC + c];
            s += R_mm[i * MO + o] * acc;
        }
    return s;
}
static void test_matmul_backward(void) {
    moe_rng r; moe_rng_seed(&r, 1);
    double x[MN * MC + MO * MC];
    fill(&r, x, sizeof x / sizeof x[0], 1.0);
    fill(&r, R_mm, MN * MO, 1.0);
    float xf[MN * MC + MO * MC], Rf[MN * MO], g[MN * MC + MO * MC] = {0};
    to_float(xf, x, sizeof x / sizeof x[0]);
    to_float(Rf, R_mm, MN * MO);
    moe_k_matmul_backward(NULL, g, g + MN * MC, Rf, xf, xf + MN * MC, MN, MC, MO, 0);
    double e = fd_error(f_matmul, NULL, x, g, sizeof x / sizeof x[0]);
    CHECK(e < 8e-7, "matmul relative error %.3g", e);
}

/* ---- rmsnorm ------------------------------------------------------------ */
enum { RN = 5, RD = 37 };  /* D spans two 16-column blocks and a partial one */
static double R_rms[RN * RD];
static double f_rmsnorm(const double *x, void *ctx) {
    (void)ctx;
    const double *in = x, *w = x + RN * RD;
    double s = 0;
    for (int i = 0; i < RN; i++) {
        double ss = 0;
        for (int j = 0; j < RD; j++) ss += in[i * RD + j] * in[i * RD + j];
        double r = 1.0 / sqrt(ss / RD + 1e-5);
        for (int j = 0; j < RD; j++) s += R_rms[i * RD + j] * in[i * RD + j] * r * w[j];
    }
    return s;
}
static void test_rmsnorm_backward(void) {
    moe_rng r; moe_rng_seed(&r, 2);
    double x[RN * RD + RD];
    fill(&r, x, RN * RD, 1.0);
    for (int j = 0; j < RD; j++) x[RN * RD + j] = 1.0 + 0.3 * moe_rng_normal(&r);
    fill(&r, R_rms, RN * RD, 1.0);
    float xf[RN * RD + RD], Rf[RN * RD], y[RN * RD], rstd[RN], g[RN * RD + RD] = {0};
    to_float(xf, x, RN * RD + RD);
    to_float(Rf, R_rms, RN * RD);
    moe_k_rmsnorm_forward(y, rstd, xf, xf + RN * RD, RN, RD, 1e-5f);
    moe_k_rmsnorm_backward(g, g + RN * RD, Rf, xf, xf + RN * RD, rstd, RN, RD, 0);
    double e = fd_error(f_rmsnorm, NULL, x, g, RN * RD + RD);
    CHECK(e < 6e-7, "rmsnorm relative error %.3g", e);
}

/* ---- rope: B=2, T=3, nh=2, hd=6 ---------------------------------------- */
enum { PB = 2, PT = 3, PH = 2, PD = 6 };
static double R_rope[PB * PT * PH * PD];
static double f_rope(const double *x, void *ctx) {
    (void)ctx;
    double s = 0;
    for (int row = 0; row < PB * PT; row++) {
        int t = row % PT;
        for (int h = 0; h < PH; h++)
            for (int i = 0; i < PD / 2; i++) {
                double ang = t * pow(10000.0, -2.0 * i / PD);
                const double *xh = x + row * PH * PD + h * PD;
                double a = xh[i], b = xh[i + PD / 2];
                size_t o = (size_t)(row * PH * PD + h * PD);
                s += R_rope[o + i] * (a * cos(ang) - b * sin(ang));
                s += R_rope[o + i + PD / 2] * (b * cos(ang) + a * sin(ang));
            }
    }
    return s;
}
static void test_rope_backward(void) {
    moe_rng r; moe_rng_seed(&r, 3);
    enum { n = PB * PT * PH * PD };
    double x[n];
    fill(&r, x, n, 1.0);
    fill(&r, R_rope, n, 1.0);
    float c[PT * PD / 2], s[PT * PD / 2], g[n];
    moe_k_rope_tables(c, s, PT, PD, 10000.0);
    to_float(g, R_rope, n);
    moe_k_rope(g, c, s, PB, PT, PH, PD, 1);  /* backward: rotate dy by minus the angle */
    double e = fd_error(f_rope, NULL, x, g, n);
    CHECK(e < 1e-6, "rope relative error %.3g", e);
}

/* ---- attention: causal, grouped heads; q [B,T,H,hd], k, v [B,T,KV,hd] ---- */
typedef struct att_shape { int B, T, H, KV, hd; const double *R; } att_shape;
static double f_attention(const double *x, void *ctx) {
    const att_shape *a = ctx;
    int B = a->B, T = a->T, H = a->H, KV = a->KV, hd = a->hd;
    const double *q = x, *k = x + B * T * H * hd, *v = k + B * T * KV * hd;
    double s = 0, scale = 1.0 / sqrt((double)hd), sc[128];
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int g = h / (H / KV);
            for (int i = 0; i < T; i++) {
                double mx = -1e300, sum = 0;
                for (int j = 0; j <= i; j++) {
                    double d = 0;
                    for (int c = 0; c < hd; c++)
                        d += q[((b * T + i) * H + h) * hd + c] * k[((b * T + j) * KV + g) * hd + c];
                    sc[j] = d * scale;
                    mx = fmax(mx, sc[j]);
                }
                for (int j = 0; j <= i; j++) { sc[j] = exp(sc[j] - mx); sum += sc[j]; }
                for (int c = 0; c < hd; c++) {
                    double o = 0;
                    for (int j = 0; j <= i; j++) o += sc[j] / sum * v[((b * T + j) * KV + g) * hd + c];
                    s += a->R[((b * T + i) * H + h) * hd + c] * o;
                }
            }
        }
    return s;
}
/* One shape: the gradient by finite differences (the kernel works in
 * blocks of 32 query rows: T = 70 spans three; tests/unit/test_attention.c
 * checks the head sizes of the models and longer sequences). */
static void check_attention(att_shape a, uint64_t seed) {
    moe_rng r; moe_rng_seed(&r, seed);
    size_t nq = (size_t)(a.B * a.T * a.H * a.hd), nk = (size_t)(a.B * a.T * a.KV * a.hd);
    size_t n = nq + 2 * nk, nlse = (size_t)(a.B * a.H * a.T);
    double *x = malloc(n * sizeof *x), *R = malloc(nq * sizeof *R);
    float *xf = malloc(n * sizeof *xf), *Rf = malloc(nq * sizeof *Rf), *g = malloc(n * sizeof *g);
    float *out = malloc(nq * sizeof *out), *lse = malloc(nlse * sizeof *lse);
    float *scratch = malloc(moe_k_attention_scratch(a.B, a.T, a.H, a.hd) * sizeof *scratch);
    fill(&r, x, n, 1.0);
    fill(&r, R, nq, 1.0);
    a.R = R;
    to_float(xf, x, n);
    to_float(Rf, R, nq);
    moe_k_attention_forward(MOE_K_FP32, out, lse, scratch, xf, xf + nq, xf + nq + nk, a.B, a.T, a.H, a.KV, a.hd);
    moe_k_attention_backward(MOE_K_FP32, g, g + nq, g + nq + nk, scratch, Rf, out, lse, xf, xf + nq, xf + nq + nk,
                         a.B, a.T, a.H, a.KV, a.hd);
    double e = fd_error(f_attention, &a, x, g, n);
    CHECK(e < 5e-6, "attention T=%d relative error %.3g", a.T, e);
    free(x); free(R); free(xf); free(Rf); free(g); free(out); free(lse); free(scratch);
}
static void test_attention_backward(void) {
    check_attention((att_shape){.B = 2, .T = 4, .H = 4, .KV = 2, .hd = 3}, 4);
    check_attention((att_shape){.B = 1, .T = 70, .H = 2, .KV = 1, .hd = 2}, 5);
}

/* ---- swiglu ------------------------------------------------------------- */
enum { SN = 12 };
static double R_sw[SN];
static double f_swiglu(const double *x, void *ctx) {
    (void)ctx;
    double s = 0;
    for (int i = 0; i < SN; i++) s += R_sw[i] * x[i] / (1 + exp(-x[i])) * x[SN + i];
    return s;
}
static void test_swiglu_backward(void) {
    moe_rng r; moe_rng_seed(&r, 5);
    double x[2 * SN];
    fill(&r, x, 2 * SN, 2.0);
    fill(&r, R_sw, SN, 1.0);
    float xf[2 * SN], Rf[SN], g[2 * SN];
    to_float(xf, x, 2 * SN);
    to_float(Rf, R_sw, SN);
    moe_k_swiglu_backward(g, g + SN, Rf, xf, xf + SN, SN);
    double e = fd_error(f_swiglu, NULL, x, g, 2 * SN);
    CHECK(e < 5e-7, "swiglu relative error %.3g", e);
}

/* ---- cross-entropy (mean over counted tokens; target -1 ignored) --------- */
enum { CN = 5, CV = 7 };
static const int CE_T[CN] = {3, 0, -1, 6, 2};
static double f_ce(const double *x, void *ctx) {
    (void)ctx;
    double s = 0;
    for (int i = 0; i < CN; i++) {
        if (CE_T[i] < 0) continue;
        double mx = -1e300, sum = 0;
        for (int j = 0; j < CV; j++) mx = fmax(mx, x[i * CV + j]);
        for (int j = 0; j < CV; j++) sum += exp(x[i * CV + j] - mx);
        s += log(sum) + mx - x[i * CV + CE_T[i]];
    }
    return s / 4.0;
}
static void test_cross_entropy_backward(void) {
    moe_rng r; moe_rng_seed(&r, 6);
    double x[CN * CV];
    fill(&r, x, CN * CV, 2.0);
    float xf[CN * CV], g[CN * CV], losses[CN], lse[CN];
    to_float(xf, x, CN * CV);
    double total = k_cross_entropy_forward(losses, lse, xf, CE_T, CN, CV);
    k_cross_entropy_backward(g, xf, lse, CE_T, CN, CV, 0.25f);
    CHECK_CLOSE(total / 4.0, f_ce(x, NULL), 1e-5, 0);
    CHECK(losses[2] == 0.0f, "ignored target has loss %g", losses[2]);
    double e = fd_error(f_ce, NULL, x, g, CN * CV);
    CHECK(e < 2e-6, "cross-entropy relative error %.3g", e);
}

/* ---- the LM head fused with its loss, behind the final norm --------------
 * f = dscale * sum_i CE(RMSNorm(res_i) * w  @ W^T, t_i): res[HN,HD], w[HD],
 * W[HV,HD]. HN = 300 rows are more than one block of moe_k_lm_head (256 rows at
 * this vocabulary), so a full block and a partial one are both checked.
 * Tolerance: each gradient element is a float sum of at most HN (dW, dw),
 * HV (dx through the softmax) and HD (the logits) products, each rounded to
 * u = 2^-24, so its error is a few sqrt(HN + HV + HD) u ~ 1e-6 of the
 * largest gradient (random-walk rounding); measured 1.7e-7, allowed 2e-6. */
enum { HN = 300, HD = 4, HV = 8 };
static int H_T[HN];
static double f_head(const double *x, void *ctx) {
    (void)ctx;
    const double *res = x, *w = x + HN * HD, *W = w + HD;
    double s = 0;
    for (int i = 0; i < HN; i++) {
        if (H_T[i] < 0) continue;
        double ss = 0, y[HD], l[HV], mx = -1e300, sum = 0;
        for (int d = 0; d < HD; d++) ss += res[i * HD + d] * res[i * HD + d];
        double r = 1.0 / sqrt(ss / HD + 1e-5);
        for (int d = 0; d < HD; d++) y[d] = res[i * HD + d] * r * w[d];
        for (int v = 0; v < HV; v++) {
            l[v] = 0;
            for (int d = 0; d < HD; d++) l[v] += y[d] * W[v * HD + d];
            mx = fmax(mx, l[v]);
        }
        for (int v = 0; v < HV; v++) sum += exp(l[v] - mx);
        s += log(sum) + mx - l[H_T[i]];
    }
    return s / 7.0;
}
static void test_lm_head_fused(void) {
    enum { NX = HN * HD, NP = HD + HV * HD };
    CHECK(moe_k_head_rows(HV) < HN, "one block holds all %d rows: the test needs two", HN);
    moe_rng r; moe_rng_seed(&r, 8);
    for (int i = 0; i < HN; i++) H_T[i] = i % 13 == 5 ? -1 : (int)(moe_rng_next(&r) % HV);
    static double x[NX + NP];
    fill(&r, x, NX + NP, 1.0);
    for (int d = 0; d < HD; d++) x[NX + d] = 1.0 + 0.3 * x[NX + d];
    static float res[NX], w[HD], W[HV * HD], y[NX], rstd[HN], dy[NX], g[NX + NP];
    static float losses[HN], lse[HN], logits[HN * HV], scratch[256 * HV + HD * HV];
    to_float(res, x, NX);
    to_float(w, x + NX, HD);
    to_float(W, x + NX + HD, HV * HD);
    moe_k_rmsnorm_forward(y, rstd, res, w, HN, HD, 1e-5f);
    memset(g, 0, sizeof g);
    moe_k_head h = {.x = y, .W = W, .targets = H_T, .N = HN, .D = HD, .V = HV, .scratch = scratch,
                .losses = losses, .lse = lse, .logits = logits, .dx = dy, .dW = g + NX + HD,
                .dscale = 1.0f / 7.0f};
    CHECK(moe_k_head_scratch(HD, HV) <= sizeof scratch / sizeof *scratch, "scratch");
    for (size_t i = 0; i < sizeof scratch / sizeof *scratch; i++) scratch[i] = 1e30f;  /* no reliance on zeros */
    double total = moe_k_lm_head(NULL, &h);
    moe_k_rmsnorm_backward(g, g + NX, dy, res, w, rstd, HN, HD, 0);
    CHECK_CLOSE(total / 7.0, f_head(x, NULL), 1e-6, 0);
    CHECK(losses[5] == 0.0f, "ignored target has loss %g", losses[5]);
    double e = fd_error(f_head, NULL, x, g, NX + NP);
    CHECK(e < 2e-6, "fused LM head relative error %.3g", e);

    /* the same numbers as the unfused path: all logits, then the
     * cross-entropy kernels, then the two products */
    static float full[HN * HV], dx2[NX], dW2[HV * HD], losses2[HN], lse2[HN];
    moe_k_matmul_forward(NULL, full, y, W, HN, HD, HV, 0.0f);
    double e_logit = 0.0;
    for (int i = 0; i < HN * HV; i++) e_logit = fmax(e_logit, fabs(full[i] - logits[i]));
    CHECK(e_logit < 1e-5, "kept logits differ from the product by %.3g", e_logit);
    double total2 = k_cross_entropy_forward(losses2, lse2, full, H_T, HN, HV);
    k_cross_entropy_backward(full, full, lse2, H_T, HN, HV, 1.0f / 7.0f);
    memset(dW2, 0, sizeof dW2);
    moe_k_matmul_backward(NULL, dx2, dW2, full, y, W, HN, HD, HV, 0);
    CHECK_CLOSE(total, total2, 1e-6, 0);
    double e_dx = 0.0, m_dx = 0.0, e_dW = 0.0, m_dW = 0.0;
    for (int i = 0; i < NX; i++) { e_dx = fmax(e_dx, fabs(dx2[i] - dy[i])); m_dx = fmax(m_dx, fabs(dx2[i])); }
    for (int i = 0; i < HV * HD; i++) {
        e_dW = fmax(e_dW, fabs(dW2[i] - g[NX + HD + i]));
        m_dW = fmax(m_dW, fabs(dW2[i]));
    }
    CHECK(e_dx <= 2e-6 * m_dx && e_dW <= 2e-6 * m_dW, "fused against unfused: dx %.3g of %.3g, dW %.3g of %.3g",
          e_dx, m_dx, e_dW, m_dW);

    /* without gradients: the same losses, and each row's first maximal logit */
    static float losses3[HN], lse3[HN];
    static int amax[HN];
    moe_k_head f = {.x = y, .W = W, .targets = H_T, .N = HN, .D = HD, .V = HV, .scratch = scratch,
                .losses = losses3, .lse = lse3, .argmax = amax};
    double total3 = moe_k_lm_head(NULL, &f);
    CHECK(total3 == total, "loss with gradients %.17g, without %.17g", total, total3);
    int amax_ok = 1;
    for (int i = 0; i < HN; i++) {
        int best = 0;
        for (int v = 1; v < HV; v++) best = logits[i * HV + v] > logits[i * HV + best] ? v : best;
        amax_ok &= amax[i] == best;
    }
    CHECK(amax_ok, "argmax differs from the first maximal logit");
}

/* ---- the dense FFN through the slot interface --------------------------- */
enum { FN = 5, FD = 6, FF = 10 };
static double R_ffn[FN * FD];
static double f_ffn(const double *x, void *ctx) {
    (void)ctx;
    const double *in = x, *w1 = x + FN * FD, *w3 = w1 + FF * FD, *w2 = w3 + FF * FD;
    double s = 0;
    for (int i = 0; i < FN; i++) {
        double a[FF];
        for (int f = 0; f < FF; f++) {
            double h1 = 0, h3 = 0;
            for (int d = 0; d < FD; d++) { h1 += w1[f * FD + d] * in[i * FD + d]; h3 += w3[f * FD + d] * in[i * FD + d]; }
            a[f] = h1 / (1 + exp(-h1)) * h3;
        }
        for (int d = 0; d < FD; d++) {
            double y = 0;
            for (int f = 0; f < FF; f++) y += w2[d * FF + f] * a[f];
            s += R_ffn[i * FD + d] * y;
        }
    }
    return s;
}
static void test_dense_ffn_backward(void) {
    moe_config cfg;
    moe_config_defaults(&cfg);
    cfg.hidden = FD; cfg.ffn_dim = FF; cfg.n_layers = 1;
    moe_err err;
    moe_ffn *f;
    CHECK(moe_ffn_dense_create(&cfg, 0, &f, &err) == 0, "%s", err.msg);
    moe_layout L = {0};
    f->ops->layout(f, &L, "mlp");
    enum { NP = 3 * FF * FD, NX = FN * FD };
    CHECK(L.total == NP, "dense FFN declares %zu floats, expected %d", L.total, NP);
    float params[NP], grads[NP] = {0};
    moe_layout_rewind(&L, params, grads);
    f->ops->layout(f, &L, "mlp");
    moe_rng r; moe_rng_seed(&r, 7);
    double x[NX + NP];
    fill(&r, x, NX + NP, 0.5);
    fill(&r, R_ffn, NX, 1.0);
    float xf[NX], Rf[NX], y[NX], g[NX + NP];
    to_float(xf, x, NX);
    to_float(params, x + NX, NP);
    to_float(Rf, R_ffn, NX);
    moe_ffn_ctx ctx = {.B = 1, .T = FN, .training = 1, .loss_scale = 1.0f};
    CHECK(f->ops->forward(f, y, xf, FN, &ctx, &err) == 0, "%s", err.msg);
    CHECK(f->ops->backward(f, g, Rf, xf, FN, &ctx, &err) == 0, "%s", err.msg);
    memcpy(g + NX, grads, sizeof grads);  /* order matches x: gate, up, down */
    double e = fd_error(f_ffn, NULL, x, g, NX + NP);
    CHECK(e < 2e-6, "dense FFN relative error %.3g", e);
    moe_layout_free(&L);
    moe_ffn_destroy(f);
}

int main(void) {
    RUN(test_matmul_backward);
    RUN(test_rmsnorm_backward);
    RUN(test_rope_backward);
    RUN(test_attention_backward);
    RUN(test_swiglu_backward);
    RUN(test_cross_entropy_backward);
    RUN(test_lm_head_fused);
    RUN(test_dense_ffn_backward);
    TEST_MAIN_END();
}
