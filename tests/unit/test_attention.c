/* test_attention.c — the blocked (flash-style) causal attention of
 * kernels.h against a double-precision reference written here: forward
 * (out, lse) and backward (dq, dk, dv) for the head sizes of the models (16,
 * 32, 64, 128), T below, at and past the blocks (32 query rows, 128 keys)
 * and not a multiple of them, grouped-query heads (H/KV = 1, 2, 4); the reference's
 * backward checked in turn against central differences in double of its
 * forward; precision bf16 (q, k, v rounded) against the reference on the
 * rounded inputs; the same bits at 1 and 2 threads.
 *
 * Bounds, first order in u = 2^-24 (fp32) with Higham's gamma_n ~ n u for a
 * sum of n terms, per element, from the magnitudes of that element's own
 * terms (computed by the reference beside each value):
 *   a score s_ij = scale q_i.k_j is off by at most (hd + 1) u A, A the
 *     largest scale sum_c |q_ic k_jc| of the head;
 *   a probability p_ij = exp(s_ij - lse_i) then by a relative 2 (hd + 1) u A
 *     (its score and the row's maximum / logsumexp) + (T + 4) u (the sum
 *     of up to T exponentials, expf's ulp, the log and the division);
 *   out_i = sum_j p_ij v_j, at most T terms plus one rescaling per key
 *     block: |error| <= (2 (hd + 1) A + 2 T + 8) u sum_j p_ij |v_j|;
 *   the backward's sums (dP = dO v^T over hd, D = dO.out over hd, dS, then
 *     dq, dk over up to T terms, dv over up to T) each add their length
 *     times u relative to the sum of their absolute terms, on top of the
 *     probabilities' error: |error| <= (2 (hd + 1) A + 2 hd + 2 T + 16) u
 *     times the gradient computed with every term in absolute value.
 * Each check allows twice its bound (second-order terms); the error / bound
 * ratio of each check is printed (at most 0.015 measured on a Zen 3: the
 * bounds are worst cases, the errors of random sign); a bug in the blocks
 * (a missed rescale, a mask off by one, a lost scale) is 10^3-10^5 of them. Central
 * differences in double (h = 1e-5) are exact to ~1e-10 relative, far below
 * these bounds. bf16's rounding of q, k, v is exact to emulate (each
 * product of two bf16 values is exact in fp32), so the same bounds hold
 * against the reference on the rounded inputs. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "moe/kernels/kernels.h"
#include "moe/util/rng.h"

typedef struct { int B, T, H, KV, hd; } shape;

typedef struct {     /* the reference's results for one set of inputs */
    double *out, *lse, *oabs;              /* [B*T*H*hd], [B*H*T], the sum of |p v| */
    double *dq, *dk, *dv;                  /* gradients of sum(R * out) */
    double *dqa, *dka, *dva;               /* the same with every term in absolute value */
    double A;                              /* the largest scale sum_c |q_ic k_jc| */
} ref_result;

static size_t nq_of(shape s) { return (size_t)s.B * s.T * s.H * s.hd; }
static size_t nk_of(shape s) { return (size_t)s.B * s.T * s.KV * s.hd; }

/* q[(b T + t) H + h][hd], k, v likewise with KV heads. */
static double *at_q(const shape *s, double *q, int b, int t, int h) { return q + (((size_t)b * s->T + t) * s->H + h) * s->hd; }
static double *at_k(const shape *s, double *k, int b, int t, int g) { return k + (((size_t)b * s->T + t) * s->KV + g) * s->hd; }

/* The reference forward (and, with R, its backward) of one head's rows. */
static void ref_attention(shape s, double *q, double *k, double *v, const double *R, ref_result *o) {
    int T = s.T, hd = s.hd, group = s.H / s.KV;
    double scale = 1.0 / sqrt((double)hd);
    double *p = malloc((size_t)T * T * sizeof *p), *dp = malloc((size_t)T * T * sizeof *dp);
    double *dpa = malloc((size_t)T * T * sizeof *dpa), *D = malloc((size_t)T * sizeof *D);
    double *Da = malloc((size_t)T * sizeof *Da);
    o->A = 0;
    if (R) {
        memset(o->dk, 0, nk_of(s) * sizeof(double)); memset(o->dv, 0, nk_of(s) * sizeof(double));
        memset(o->dka, 0, nk_of(s) * sizeof(double)); memset(o->dva, 0, nk_of(s) * sizeof(double));
    }
    for (int b = 0; b < s.B; b++)
        for (int h = 0; h < s.H; h++) {
            int g = h / group;
            for (int i = 0; i < T; i++) {
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j <= i; j++) {
                    double d = 0, da = 0, *qi = at_q(&s, q, b, i, h), *kj = at_k(&s, k, b, j, g);
                    for (int c = 0; c < hd; c++) { d += qi[c] * kj[c]; da += fabs(qi[c] * kj[c]); }
                    p[i * T + j] = d * scale;
                    o->A = fmax(o->A, da * scale);
                    mx = fmax(mx, d * scale);
                }
                for (int j = 0; j <= i; j++) sum += exp(p[i * T + j] - mx);
                double lse = mx + log(sum);
                o->lse[((size_t)b * s.H + h) * T + i] = lse;
                for (int j = 0; j <= i; j++) p[i * T + j] = exp(p[i * T + j] - lse);
                double *oi = at_q(&s, o->out, b, i, h), *oa = at_q(&s, o->oabs, b, i, h);
                for (int c = 0; c < hd; c++) {
                    double acc = 0, acca = 0;
                    for (int j = 0; j <= i; j++) {
                        double t = p[i * T + j] * at_k(&s, v, b, j, g)[c];
                        acc += t; acca += fabs(t);
                    }
                    oi[c] = acc; oa[c] = acca;
                }
            }
            if (!R) continue;
            /* dO = R; dP = dO v^T; D = dO . out; dS = p (dP - D) scale */
            for (int i = 0; i < T; i++) {
                const double *dO = R + (((size_t)b * T + i) * s.H + h) * hd;
                double *oi = at_q(&s, o->out, b, i, h);
                D[i] = Da[i] = 0;
                for (int c = 0; c < hd; c++) { D[i] += dO[c] * oi[c]; Da[i] += fabs(dO[c] * oi[c]); }
                for (int j = 0; j <= i; j++) {
                    double *vj = at_k(&s, v, b, j, g), d = 0, da = 0;
                    for (int c = 0; c < hd; c++) { d += dO[c] * vj[c]; da += fabs(dO[c] * vj[c]); }
                    dp[i * T + j] = d; dpa[i * T + j] = da;
                }
            }
            for (int i = 0; i < T; i++) {
                const double *dO = R + (((size_t)b * T + i) * s.H + h) * hd;
                double *dqi = at_q(&s, o->dq, b, i, h), *dqa = at_q(&s, o->dqa, b, i, h);
                memset(dqi, 0, hd * sizeof(double)); memset(dqa, 0, hd * sizeof(double));
                for (int j = 0; j <= i; j++) {
                    double pij = p[i * T + j], ds = pij * (dp[i * T + j] - D[i]) * scale;
                    double dsa = pij * (dpa[i * T + j] + Da[i]) * scale;
                    double *kj = at_k(&s, k, b, j, g), *qi = at_q(&s, q, b, i, h);
                    double *dkj = at_k(&s, o->dk, b, j, g), *dka = at_k(&s, o->dka, b, j, g);
                    double *dvj = at_k(&s, o->dv, b, j, g), *dva = at_k(&s, o->dva, b, j, g);
                    for (int c = 0; c < hd; c++) {
                        dqi[c] += ds * kj[c]; dqa[c] += dsa * fabs(kj[c]);
                        dkj[c] += ds * qi[c]; dka[c] += dsa * fabs(qi[c]);
                        dvj[c] += pij * dO[c]; dva[c] += fabs(pij * dO[c]);
                    }
                }
            }
        }
    free(p); free(dp); free(dpa); free(D); free(Da);
}

static ref_result ref_alloc(shape s) {
    size_t nq = nq_of(s), nk = nk_of(s);
    ref_result r = {0};
    r.out = malloc(nq * sizeof(double)); r.oabs = malloc(nq * sizeof(double));
    r.lse = malloc((size_t)s.B * s.H * s.T * sizeof(double));
    r.dq = malloc(nq * sizeof(double)); r.dqa = malloc(nq * sizeof(double));
    r.dk = malloc(nk * sizeof(double)); r.dka = malloc(nk * sizeof(double));
    r.dv = malloc(nk * sizeof(double)); r.dva = malloc(nk * sizeof(double));
    return r;
}
static void ref_free(ref_result *r) {
    free(r->out); free(r->oabs); free(r->lse); free(r->dq); free(r->dqa);
    free(r->dk); free(r->dka); free(r->dv); free(r->dva);
}

/* max |got - want| / (2 bound), bound = c u mag + tiny; reports the worst. */
static double worst_ratio(const float *got, const double *want, const double *mag, size_t n, double c) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double bound = 2 * c * 0x1p-24 * mag[i] + 1e-30;
        double r = fabs((double)got[i] - want[i]) / bound;
        if (!(r <= worst)) worst = r;  /* NaN is the worst */
    }
    return worst;
}

typedef struct {      /* the kernel's results */
    float *out, *lse, *dq, *dk, *dv;
} run_result;

static run_result run_kernel(shape s, moe_k_precision prec, const float *q, const float *k, const float *v,
                             const float *R) {
    size_t nq = nq_of(s), nk = nk_of(s);
    run_result r = {malloc(nq * 4), malloc((size_t)s.B * s.H * s.T * 4), malloc(nq * 4), malloc(nk * 4),
                    malloc(nk * 4)};
    float *scratch = malloc(moe_k_attention_scratch(s.B, s.T, s.H, s.hd) * sizeof(float));
    moe_k_attention_forward(prec, r.out, r.lse, scratch, q, k, v, s.B, s.T, s.H, s.KV, s.hd);
    moe_k_attention_backward(prec, r.dq, r.dk, r.dv, scratch, R, r.out, r.lse, q, k, v, s.B, s.T, s.H, s.KV,
                         s.hd);
    free(scratch);
    return r;
}
static void run_free(run_result *r) { free(r->out); free(r->lse); free(r->dq); free(r->dk); free(r->dv); }

/* The kernel in `prec` against the reference on x (bf16: x rounded first). */
static void check_against_ref(shape s, moe_k_precision prec, const double *x, const double *R, const char *what) {
    size_t nq = nq_of(s), nk = nk_of(s), n = nq + 2 * nk, nl = (size_t)s.B * s.H * s.T;
    double *xr = malloc(n * sizeof *xr);
    float *xf = malloc(n * sizeof *xf), *Rf = malloc(nq * sizeof *Rf);
    for (size_t i = 0; i < n; i++) {
        xf[i] = (float)x[i];
        if (prec == MOE_K_BF16) xf[i] = moe_k_round_bf16(xf[i]);
        xr[i] = xf[i];  /* the reference sees exactly the kernel's inputs (rounded under bf16) */
    }
    for (size_t i = 0; i < nq; i++) Rf[i] = (float)R[i];
    double *Rd = malloc(nq * sizeof *Rd);
    for (size_t i = 0; i < nq; i++) Rd[i] = Rf[i];
    ref_result ref = ref_alloc(s);
    ref_attention(s, xr, xr + nq, xr + nq + nk, Rd, &ref);
    run_result got = run_kernel(s, prec, xf, xf + nq, xf + nq + nk, Rf);
    double A = ref.A, T = s.T, hd = s.hd;
    double cf = 2 * (hd + 1) * A + 2 * T + 8, cb = 2 * (hd + 1) * A + 2 * hd + 2 * T + 16;
    /* lse: the row's largest score and the log of a sum of T terms, each
     * relative (hd + 1) u A + (T + 4) u; magnitude max(|lse|, 1) */
    double *lmag = malloc(nl * sizeof *lmag);
    for (size_t i = 0; i < nl; i++) lmag[i] = fmax(fabs(ref.lse[i]), 1.0);
    double r_out = worst_ratio(got.out, ref.out, ref.oabs, nq, cf);
    double r_lse = worst_ratio(got.lse, ref.lse, lmag, nl, cf);
    double r_dq = worst_ratio(got.dq, ref.dq, ref.dqa, nq, cb);
    double r_dk = worst_ratio(got.dk, ref.dk, ref.dka, nk, cb);
    double r_dv = worst_ratio(got.dv, ref.dv, ref.dva, nk, cb);
    printf("  %s hd %d T %d H %d KV %d: error / bound out %.3f lse %.3f dq %.3f dk %.3f dv %.3f\n", what,
           s.hd, s.T, s.H, s.KV, r_out, r_lse, r_dq, r_dk, r_dv);
    CHECK(r_out <= 1 && r_lse <= 1, "%s hd %d T %d: forward beyond its bound (out %.3g, lse %.3g)", what,
          s.hd, s.T, r_out, r_lse);
    CHECK(r_dq <= 1 && r_dk <= 1 && r_dv <= 1, "%s hd %d T %d: backward beyond its bound (%.3g %.3g %.3g)",
          what, s.hd, s.T, r_dq, r_dk, r_dv);
    if (prec == MOE_K_BF16) {  /* the rounding is in effect: against the unrounded inputs it shows */
        ref_result raw = ref_alloc(s);
        double *xd = malloc(n * sizeof *xd);
        for (size_t i = 0; i < n; i++) xd[i] = (float)x[i];
        ref_attention(s, xd, xd + nq, xd + nq + nk, NULL, &raw);
        CHECK(worst_ratio(got.out, raw.out, raw.oabs, nq, cf) > 10,
              "bf16 hd %d: the output matches the unrounded inputs to fp32 accuracy", s.hd);
        ref_free(&raw);
        free(xd);
    }
    run_free(&got);
    ref_free(&ref);
    free(lmag); free(xr); free(xf); free(Rf); free(Rd);
}

/* sum(R * out(x)) by the reference. */
static double objective(shape s, double *x, const double *R) {
    size_t nq = nq_of(s), nk = nk_of(s);
    ref_result r = ref_alloc(s);
    ref_attention(s, x, x + nq, x + nq + nk, NULL, &r);
    double f = 0;
    for (size_t i = 0; i < nq; i++) f += R[i] * r.out[i];
    ref_free(&r);
    return f;
}

/* The reference's backward against central differences of its forward, at
 * `samples` coordinates spread over q, k and v. */
static void check_reference_fd(shape s, const double *x0, const double *R, int samples) {
    size_t nq = nq_of(s), nk = nk_of(s), n = nq + 2 * nk;
    double *x = malloc(n * sizeof *x);
    memcpy(x, x0, n * sizeof *x);
    ref_result r = ref_alloc(s);
    ref_attention(s, x, x + nq, x + nq + nk, R, &r);
    double worst = 0, scale = 0, h = 1e-5;
    for (int t = 0; t < samples; t++) {
        size_t i = (size_t)t * (n - 1) / (size_t)(samples - 1);
        double keep = x[i];
        x[i] = keep + h; double fp = objective(s, x, R);
        x[i] = keep - h; double fm = objective(s, x, R);
        x[i] = keep;
        double fd = (fp - fm) / (2 * h), g = i < nq ? r.dq[i] : i < nq + nk ? r.dk[i - nq] : r.dv[i - nq - nk];
        worst = fmax(worst, fabs(fd - g));
        scale = fmax(scale, fabs(fd));
    }
    /* truncation h^2 f'''/6 and rounding 1e-16 |f| / h: ~1e-10 relative */
    CHECK(worst <= 1e-7 * scale, "hd %d T %d: reference backward against central differences: %.3g of %.3g",
          s.hd, s.T, worst, scale);
    ref_free(&r);
    free(x);
}

static void inputs(shape s, uint64_t seed, double **x, double **R) {
    size_t nq = nq_of(s), n = nq + 2 * nk_of(s);
    moe_rng r;
    moe_rng_seed(&r, seed);
    *x = malloc(n * sizeof **x);
    *R = malloc(nq * sizeof **R);
    /* q, k of the size RMSNorm and the projections give (scores of a few
     * units), v and dout of order 1 */
    for (size_t i = 0; i < n; i++) (*x)[i] = moe_rng_normal(&r) * (i < n - nk_of(s) ? 0.7 : 1.0);
    for (size_t i = 0; i < nq; i++) (*R)[i] = moe_rng_normal(&r);
}

static const shape SHAPES[] = {
    {2, 45, 4, 2, 16},   /* GQA 2:1, T past one block, not a multiple of 32 */
    {1, 70, 4, 1, 32},   /* GQA 4:1, three blocks */
    {2, 33, 2, 2, 64},   /* MHA, one row past a block */
    {1, 40, 2, 1, 128},  /* GQA 2:1 */
    {1, 7, 2, 1, 16},    /* shorter than a block */
    {1, 64, 2, 2, 32},   /* exactly two blocks of rows */
    {2, 129, 2, 1, 16},  /* one key past a block of 128 keys: the online softmax rescales */
    {1, 300, 2, 1, 32},  /* three key blocks, the last partial */
};
#define N_SHAPES (sizeof SHAPES / sizeof SHAPES[0])

static void test_fp32_against_reference(void) {
    for (size_t i = 0; i < N_SHAPES; i++) {
        double *x, *R;
        inputs(SHAPES[i], 10 + i, &x, &R);
        check_against_ref(SHAPES[i], MOE_K_FP32, x, R, "fp32");
        free(x); free(R);
    }
}

static void test_reference_by_finite_differences(void) {
    /* this checks the test's own double-precision reference, no moe code:
     * under the sanitizers (where it is slowest) the first three shapes do */
#if defined(__SANITIZE_ADDRESS__)
    const size_t n_shapes = 3;
#else
    const size_t n_shapes = N_SHAPES;
#endif
    for (size_t i = 0; i < n_shapes; i++) {
        double *x, *R;
        inputs(SHAPES[i], 10 + i, &x, &R);
        check_reference_fd(SHAPES[i], x, R, 96);
        free(x); free(R);
    }
}

/* The bf16 branch (what a bf16 model runs): it needs no bf16 instructions,
 * so it runs on every CPU. */
static void test_bf16_against_reference(void) {
    for (size_t i = 0; i < N_SHAPES; i++) {
        double *x, *R;
        inputs(SHAPES[i], 30 + i, &x, &R);
        check_against_ref(SHAPES[i], MOE_K_BF16, x, R, "bf16");
        free(x); free(R);
    }
}

/* The same bits at 1 and 2 threads (static schedules, sums in a fixed order). */
static void test_threads_bit_identical(void) {
    shape s = {3, 50, 4, 2, 32};
    double *x, *R;
    inputs(s, 50, &x, &R);
    size_t nq = nq_of(s), nk = nk_of(s), n = nq + 2 * nk;
    float *xf = malloc(n * 4), *Rf = malloc(nq * 4);
    for (size_t i = 0; i < n; i++) xf[i] = (float)x[i];
    for (size_t i = 0; i < nq; i++) Rf[i] = (float)R[i];
    int keep = omp_get_max_threads();
    omp_set_num_threads(1);
    run_result a = run_kernel(s, MOE_K_FP32, xf, xf + nq, xf + nq + nk, Rf);
    omp_set_num_threads(2);
    run_result b = run_kernel(s, MOE_K_FP32, xf, xf + nq, xf + nq + nk, Rf);
    omp_set_num_threads(keep);
    CHECK(!memcmp(a.out, b.out, nq * 4) && !memcmp(a.dq, b.dq, nq * 4) && !memcmp(a.dk, b.dk, nk * 4) &&
          !memcmp(a.dv, b.dv, nk * 4), "1 and 2 threads differ");
    run_free(&a); run_free(&b);
    free(x); free(R); free(xf); free(Rf);
}

int main(void) {
    RUN(test_reference_by_finite_differences);
    RUN(test_fp32_against_reference);
    RUN(test_bf16_against_reference);
    RUN(test_threads_bit_identical);
    TEST_MAIN_END();
}
