/* test_moe.c — the MoE layer: finite-difference gradient checks (double
 * precision) for each router including the auxiliary / L1 terms, the
 * dispatch invariants (dropless, compute follows active pairs), and
 * ReMoE's lambda rule against hand-computed sequences. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "moe/model/ffn.h"
#include "moe/util/rng.h"
#include "moe/moe/router.h"

/* Gradient checks against double central differences (h = 1e-6): their own
 * error (~1e-9 relative) is negligible; the float32 layer's rounding is what
 * is measured, 2.3e-7 (TopK k=1), 8e-8 .. 1e-7 for the others
 * (max |error| / max |gradient|). The tolerance is ~10x the worst.
 * The forward objective sum R . y + aux is float32 sums of products
 * (~u = 6e-8 of the size of its terms): measured 5e-9 .. 7.8e-8 of sum |terms|. */
#define FD_TOL 3e-6
#define FWD_TOL 1e-6

enum { N = 6, D = 5, F = 8, MAXP = 4096 };

typedef struct {
    moe_config cfg;
    size_t E, k, Fe, S, n_params;
    double R[N * D];        /* objective weights */
    double lambda;
    int step;
} ref_ctx;

/* Reference objective in double: sum(R * MoE(x)) + aux, with x and the
 * parameters packed as [x | router | W1 | W3 | W2 | S1 | S3 | S2]. */
static double swiglu_ref(const double *x, const double *w1, const double *w3, const double *w2,
                         size_t Fe, size_t d_out, double *y) {
    double a[64];
    for (size_t f = 0; f < Fe; f++) {
        double h1 = 0, h3 = 0;
        for (size_t d = 0; d < D; d++) { h1 += w1[f * D + d] * x[d]; h3 += w3[f * D + d] * x[d]; }
        a[f] = h1 / (1 + exp(-h1)) * h3;
    }
    for (size_t d = 0; d < d_out; d++) {
        y[d] = 0;
        for (size_t f = 0; f < Fe; f++) y[d] += w2[d * Fe + f] * a[f];
    }
    return 0;
}

static double f_moe(const double *v, void *vctx) {
    ref_ctx *c = vctx;
    const moe_config *cf = &c->cfg;
    size_t E = c->E, Fe = c->Fe, S = c->S;
    const double *x = v, *wr = x + N * D, *w1 = wr + E * D, *w3 = w1 + E * Fe * D,
                 *w2 = w3 + E * Fe * D, *s1 = w2 + E * D * Fe, *s3 = s1 + S * Fe * D,
                 *s2 = s3 + S * Fe * D;
    double gates[N][16], p[N][16], lse[N], obj = 0, aux = 0;
    size_t k = c->k;
    if (!strcmp(cf->router, "topk") && cf->k_warm > 0 && c->step < cf->k_warm_steps)
        k = (size_t)cf->k_warm * cf->granularity;
    for (size_t t = 0; t < N; t++) {
        double l[16], mx = -1e300, sum = 0;
        for (size_t e = 0; e < E; e++) {
            l[e] = 0;
            for (size_t d = 0; d < D; d++) l[e] += wr[e * D + d] * x[t * D + d];
            mx = fmax(mx, l[e]);
        }
        if (!strcmp(cf->router, "relu")) {
            for (size_t e = 0; e < E; e++) gates[t][e] = l[e] > 0 ? l[e] : 0;
            continue;
        }
        for (size_t e = 0; e < E; e++) sum += exp(l[e] - mx);
        lse[t] = log(sum) + mx;
        for (size_t e = 0; e < E; e++) { p[t][e] = exp(l[e] - mx) / sum; gates[t][e] = 0; }
        double picked = 0;
        for (size_t j = 0; j < k; j++) {
            size_t best = E;
            for (size_t e = 0; e < E; e++)
                if (gates[t][e] == 0 && (best == E || p[t][e] > p[t][best])) best = e;
            gates[t][best] = p[t][best];
            picked += p[t][best];
        }
        if (cf->norm_topk_prob == 1 || (cf->norm_topk_prob == MOE_RENORM_IF_SEVERAL && k > 1))
            for (size_t e = 0; e < E; e++) gates[t][e] /= picked;
    }
    if (!strcmp(cf->router, "topk")) {
        double acc = 0;
        for (size_t e = 0; e < E; e++) {
            double P = 0, n_e = 0;
            for (size_t t = 0; t < N; t++) { P += p[t][e]; n_e += gates[t][e] != 0; }
            acc += P * n_e;
        }
        aux = cf->aux_loss_coef * (double)E / ((double)k * N * N) * acc;
        for (size_t t = 0; t < N; t++) aux += cf->z_loss_coef * lse[t] * lse[t] / N;
    } else {
        double reg = 0;
        for (size_t e = 0; e < E; e++) {
            double cnt = 0, col = 0;
            for (size_t t = 0; t < N; t++) { cnt += gates[t][e] > 0; col += gates[t][e]; }
            double f = cf->l1_load_balance ? (double)E / ((double)c->k * N) * cnt : 1.0;
            reg += f * col;
        }
        aux = c->lambda * reg / N;
    }
    for (size_t t = 0; t < N; t++) {
        double y[D];
        for (size_t e = 0; e < E; e++) {
            if (gates[t][e] == 0) continue;
            swiglu_ref(x + t * D, w1 + e * Fe * D, w3 + e * Fe * D, w2 + e * D * Fe, Fe, D, y);
            for (size_t d = 0; d < D; d++) obj += c->R[t * D + d] * gates[t][e] * y[d];
        }
        for (size_t j = 0; j < S; j++) {
            swiglu_ref(x + t * D, s1 + j * Fe * D, s3 + j * Fe * D, s2 + j * D * Fe, Fe, D, y);
            for (size_t d = 0; d < D; d++) obj += c->R[t * D + d] * y[d];
        }
    }
    return obj + aux;
}

/* Checks one configuration: float layer backward vs central differences. */
static void check_layer(const char *router, int k, int G, int shared, int renorm, double z,
                        int l1_lb, int k_warm, uint64_t seed) {
    static ref_ctx c;
    memset(&c, 0, sizeof c);
    moe_config_defaults(&c.cfg);
    c.cfg.hidden = D; c.cfg.ffn_dim = F; c.cfg.n_layers = 1;
    strcpy(c.cfg.ffn, "moe");
    strcpy(c.cfg.router, router);
    c.cfg.n_experts = 4; c.cfg.top_k = k; c.cfg.granularity = G;
    c.cfg.n_shared_experts = shared; c.cfg.norm_topk_prob = renorm; c.cfg.z_loss_coef = z;
    c.cfg.aux_loss_coef = 0.05; c.cfg.l1_load_balance = l1_lb;
    c.cfg.k_warm = k_warm; c.cfg.k_warm_steps = k_warm ? 5 : 0;
    c.E = (size_t)(4 * G); c.k = (size_t)(k * G); c.Fe = (size_t)(F / G); c.S = (size_t)shared;
    c.lambda = 0.3;
    moe_err err;
    moe_ffn *f;
    CHECK(moe_ffn_moe_create(&c.cfg, 0, &f, &err) == 0, "%s", err.msg);
    moe_layout L = {0};
    f->ops->layout(f, &L, "mlp");
    size_t NP = L.total, NX = N * D, n = NX + NP;
    CHECK(n <= MAXP, "too many parameters for the test buffers");
    static double v[MAXP], fd[MAXP];
    static float params[MAXP], grads[MAXP], xf[N * D], y[N * D], Rf[N * D], g[MAXP];
    memset(grads, 0, sizeof grads);
    moe_layout_rewind(&L, params, grads);
    f->ops->layout(f, &L, "mlp");
    /* draw inputs until no ReLU logit is within 0.05 of its kink and no
     * top-k choice is within 1e-3 of a tie: the function is smooth there */
    moe_rng r;
    moe_rng_seed(&r, seed);
    for (int attempt = 0; attempt < 1000; attempt++) {
        for (size_t i = 0; i < n; i++) v[i] = (i < NX ? 1.0 : 0.6) * moe_rng_normal(&r);
        int smooth = 1;
        for (size_t t = 0; t < N && smooth; t++)
            for (size_t e = 0; e < c.E && smooth; e++) {
                double l = 0;
                for (size_t d = 0; d < D; d++) l += v[NX + e * D + d] * v[t * D + d];
                if (fabs(l) < 0.05) smooth = 0;
                for (size_t e2 = 0; e2 < e && smooth; e2++) {
                    double l2 = 0;
                    for (size_t d = 0; d < D; d++) l2 += v[NX + e2 * D + d] * v[t * D + d];
                    if (fabs(l - l2) < 1e-3) smooth = 0;
                }
            }
        if (smooth) break;
    }
    for (size_t i = 0; i < N * D; i++) c.R[i] = moe_rng_normal(&r);
    for (size_t i = 0; i < NX; i++) xf[i] = (float)v[i];
    for (size_t i = 0; i < NP; i++) params[i] = (float)v[NX + i];
    for (size_t i = 0; i < NX; i++) Rf[i] = (float)c.R[i];
    moe_routing_state rs = {(float)c.lambda, 0, 0};
    c.lambda = rs.lambda;  /* the fp32 value the layer uses */
    moe_ffn_ctx ctx = {.B = 1, .T = N, .training = 1, .loss_scale = 1.0f, .rs = &rs};
    CHECK(f->ops->forward(f, y, xf, N, &ctx, &err) == 0, "%s", err.msg);
    /* forward: the sum R . y cancels, so its float error is measured against
     * the size of its terms, scale = |aux| + sum |R_i y_i| */
    double obj = f->aux_loss, scale = fabs(f->aux_loss);
    for (size_t i = 0; i < NX; i++) { obj += Rf[i] * y[i]; scale += fabs(Rf[i] * y[i]); }
    CHECK(fabs(obj - f_moe(v, &c)) <= FWD_TOL * scale, "forward %.9g, reference %.9g (terms %.3g)",
          obj, f_moe(v, &c), scale);
    CHECK(f->ops->backward(f, g, Rf, xf, N, &ctx, &err) == 0, "%s", err.msg);
    memcpy(g + NX, grads, NP * sizeof(float));
    double h = 1e-6, max_err = 0, max_ref = 0;
    for (size_t i = 0; i < n; i++) {
        double keep = v[i];
        v[i] = keep + h; double fp = f_moe(v, &c);
        v[i] = keep - h; double fm = f_moe(v, &c);
        v[i] = keep;
        fd[i] = (fp - fm) / (2 * h);
        max_err = fmax(max_err, fabs(fd[i] - g[i]));
        max_ref = fmax(max_ref, fabs(fd[i]));
    }
    double rel = max_err / max_ref;
    CHECK(rel < FD_TOL, "%s k=%d G=%d shared=%d renorm=%d z=%g lb=%d: relative error %.3g",
          router, k, G, shared, renorm, z, l1_lb, rel);
    /* the auxiliary term really is in the gradient: without it the router
     * gradient differs */
    CHECK(f->aux_loss > 0, "auxiliary loss is positive (%g)", f->aux_loss);
    moe_layout_free(&L);
    moe_ffn_destroy(f);
}

static void test_fd_topk(void) { check_layer("topk", 1, 1, 0, 0, 0, 1, 0, 1); }
static void test_fd_topk_k2_renorm_zloss(void) { check_layer("topk", 2, 1, 0, 1, 0.01, 1, 0, 2); }
static void test_fd_topk_G2_shared_warm(void) { check_layer("topk", 1, 2, 1, 0, 0, 1, 3, 3); }
static void test_fd_relu(void) { check_layer("relu", 1, 1, 0, 0, 0, 1, 0, 4); }
static void test_fd_relu_plain_l1_G2_shared(void) { check_layer("relu", 1, 2, 1, 0, 0, 0, 0, 5); }

/* The dispatch is dropless: with the ReLU router every positive gate is
 * computed, and the pair count reported is exactly the positive gates. */
static void test_dropless_counts(void) {
    moe_config cfg;
    moe_config_defaults(&cfg);
    cfg.hidden = 8; cfg.ffn_dim = 16; strcpy(cfg.ffn, "moe"); strcpy(cfg.router, "relu");
    cfg.n_experts = 8; cfg.top_k = 1;
    moe_err err;
    moe_ffn *f;
    moe_ffn_moe_create(&cfg, 0, &f, &err);
    moe_layout L = {0};
    f->ops->layout(f, &L, "mlp");
    float *params = calloc(L.total, sizeof(float)), *grads = calloc(L.total, sizeof(float));
    moe_layout_rewind(&L, params, grads);
    f->ops->layout(f, &L, "mlp");
    moe_rng r; moe_rng_seed(&r, 9);
    for (size_t i = 0; i < L.total; i++) params[i] = (float)moe_rng_normal(&r);
    enum { T = 64 };
    float x[T * 8], y[T * 8];
    for (int i = 0; i < T * 8; i++) x[i] = (float)moe_rng_normal(&r);
    moe_routing_state rs = {1e-8f, 0, 0};
    moe_ffn_ctx ctx = {.B = 1, .T = T, .training = 1, .loss_scale = 1.0f, .rs = &rs};
    f->ops->forward(f, y, x, T, &ctx, &err);
    /* count positive router logits by hand */
    double positive = 0;
    for (int t = 0; t < T; t++)
        for (int e = 0; e < 8; e++) {
            double l = 0;
            for (int d = 0; d < 8; d++) l += (double)params[e * 8 + d] * x[t * 8 + d];
            positive += l > 0;
        }
    CHECK(rs.active_pairs == positive, "active pairs %g, positive logits %g", rs.active_pairs, positive);
    CHECK(rs.total_pairs == T * 8, "total pairs %g", rs.total_pairs);
    moe_buf b = {0};
    f->ops->stats_json(f, &b);
    CHECK(b.data && strstr(b.data, "\"tokens_per_expert\""), "stats: %s", b.data ? b.data : "");
    moe_buf_free(&b);
    free(params); free(grads);
    moe_layout_free(&L);
    moe_ffn_destroy(f);
}

/* Routing robustness with ReLU routing: each token's largest gate is dropped,
 * the other positive gates stay. */
static void test_relu_drop_top_expert(void) {
    moe_config cfg;
    moe_config_defaults(&cfg);
    cfg.n_experts = 4;
    strcpy(cfg.ffn, "moe");
    strcpy(cfg.router, "relu");
    moe_err err;
    moe_router *r;
    CHECK(moe_router_create(&cfg, &r, &err) == 0, "%s", err.msg);
    const float logits[8] = {0.5f, 2.0f, -1.0f, 0.25f, -0.5f, -0.1f, 3.0f, 1.0f};
    float gates[8];
    double aux;
    moe_ffn_ctx ctx = {.B = 1, .T = 2, .training = 0, .drop_top_expert = 1};
    r->ops->route(r, gates, logits, 2, &ctx, &aux, &err);
    const float want[8] = {0.5f, 0.0f, 0.0f, 0.25f, 0.0f, 0.0f, 0.0f, 1.0f};
    CHECK(!memcmp(gates, want, sizeof want), "gates %g %g %g %g | %g %g %g %g", gates[0], gates[1],
          gates[2], gates[3], gates[4], gates[5], gates[6], gates[7]);
    moe_router_destroy(r);
}

/* lambda_{i+1} = lambda_i * alpha if S_i < target else lambda_i / alpha, fp32. */
static void test_lambda_rule(void) {
    const double S[] = {0.1, 0.5, 0.88, 0.9, 0.7, 0.875, 0.874};
    /* by hand, target 0.875, alpha 1.2, lambda_0 1e-8 */
    const double expect[] = {1e-8, 1.2e-8, 1.44e-8, 1.2e-8, 1e-8, 1.2e-8, 1e-8, 1.2e-8};
    float lambda = 1e-8f;
    for (int i = 0; i < 7; i++) {
        CHECK(fabs(lambda - expect[i]) <= 1e-6 * expect[i], "step %d: lambda %.9g, expected %.9g",
              i, lambda, expect[i]);
        lambda = moe_relu_lambda_next(lambda, S[i], 0.875, 1.2);
    }
    CHECK(fabs(lambda - expect[7]) <= 1e-6 * expect[7], "final lambda %.9g", lambda);
    /* alpha 1.5 from 1: up, up, down gives 1.5 exactly in fp32 */
    lambda = 1.0f;
    lambda = moe_relu_lambda_next(lambda, 0.1, 0.5, 1.5);
    lambda = moe_relu_lambda_next(lambda, 0.1, 0.5, 1.5);
    lambda = moe_relu_lambda_next(lambda, 0.9, 0.5, 1.5);
    CHECK(lambda == 1.5f, "lambda %.9g", lambda);
}

/* relu_lambda_per_layer: each layer's router runs the rule on its own
 * sparsity of the step, summed over the step's micro-batches (two routes a
 * step here, of 4 tokens x 4 experts each). Layer 0 is kept dense-ish and
 * layer 1 sparse, so their lambdas move apart; a discarded step (apply 0)
 * changes nothing, and the state tensor is the lambda itself. */
static void test_lambda_per_layer(void) {
    moe_config c;
    moe_config_defaults(&c);
    strcpy(c.ffn, "moe");
    strcpy(c.router, "relu");
    c.n_experts = 4;
    c.top_k = 1;
    c.relu_lambda0 = 1.0;
    c.relu_alpha = 2.0;
    c.relu_lambda_per_layer = 1;
    moe_err err;
    CHECK(moe_config_finalize(&c, &err) == 0, "%s", err.msg);  /* target 1 - 1/4 = 0.75 */
    moe_router *r[2];
    CHECK(moe_router_create(&c, &r[0], &err) == 0 && moe_router_create(&c, &r[1], &err) == 0, "%s", err.msg);
    moe_ffn_ctx ctx = {.B = 1, .T = 4, .training = 1, .loss_scale = 1.0f};
    /* active pairs per micro-batch (of 16) for each layer and step; a
     * step's sparsity is 1 - (a + b) / 32 against the target 0.75 */
    const int active[4][2][2] = {
        {{8, 8}, {2, 2}},    /* S = 0.5 (< 0.75: x2),   0.875 (/2) */
        {{4, 4}, {4, 4}},    /* S = 0.75 (not below: /2) twice   */
        {{16, 0}, {1, 0}},   /* S = 0.5 (x2),           0.96875 (/2) */
        {{3, 4}, {9, 0}},    /* S = 0.78125 (/2),       0.71875 (x2) */
    };
    const float expect[5][2] = {{1, 1}, {2, 0.5f}, {1, 0.25f}, {2, 0.125f}, {1, 0.25f}};
    float gates[16], logits[16];
    for (int step = 0; step < 4; step++) {
        for (int l = 0; l < 2; l++) {
            moe_router_state st;
            CHECK(r[l]->ops->state(r[l], &st, 1) == 1 && st.n == 1 && !strcmp(st.name, "lambda"), "state");
            CHECK(*st.data == expect[step][l], "step %d layer %d: lambda %.9g, expected %.9g", step, l,
                  *st.data, expect[step][l]);
            for (int mb = 0; mb < 2; mb++) {
                for (int i = 0; i < 16; i++) logits[i] = i < active[step][l][mb] ? 0.5f : -0.5f;
                double aux;
                CHECK(r[l]->ops->route(r[l], gates, logits, 4, &ctx, &aux, &err) == 0, "%s", err.msg);
                CHECK(aux > 0 || active[step][l][mb] == 0, "the layer's own lambda weights L_reg");
            }
            if (step == 1) r[l]->ops->end_step(r[l], 0);  /* a skipped step: forgotten */
        }
        for (int l = 0; l < 2; l++) {
            if (step == 1) {  /* redo the step after the discarded one */
                for (int mb = 0; mb < 2; mb++) {
                    for (int i = 0; i < 16; i++) logits[i] = i < active[step][l][mb] ? 0.5f : -0.5f;
                    double aux;
                    r[l]->ops->route(r[l], gates, logits, 4, &ctx, &aux, &err);
                }
            }
            r[l]->ops->end_step(r[l], 1);
        }
    }
    for (int l = 0; l < 2; l++) {
        moe_router_state st;
        r[l]->ops->state(r[l], &st, 1);
        CHECK(*st.data == expect[4][l], "final layer %d: lambda %.9g, expected %.9g", l, *st.data, expect[4][l]);
        moe_buf b = {0};
        r[l]->ops->stats_json(r[l], &b);
        CHECK(b.data && strstr(b.data, "\"step_sparsity\": ") && strstr(b.data, "\"lambda\": "), "stats %s",
              b.data ? b.data : "");
        moe_buf_free(&b);
        moe_router_destroy(r[l]);
    }
    /* the paper's single lambda: no per-layer state */
    c.relu_lambda_per_layer = 0;
    moe_router *g;
    CHECK(moe_router_create(&c, &g, &err) == 0, "%s", err.msg);
    CHECK(g->ops->state(g, NULL, 0) == 0, "no router state without relu_lambda_per_layer");
    moe_router_destroy(g);
    /* only for the MoE layer's ReLU router */
    strcpy(c.router, "topk");
    c.relu_lambda_per_layer = 1;
    CHECK(moe_config_finalize(&c, &err) != 0 && strstr(err.msg, "relu_lambda_per_layer"), "refused with topk");
}

int main(void) {
    RUN(test_fd_topk);
    RUN(test_fd_topk_k2_renorm_zloss);
    RUN(test_fd_topk_G2_shared_warm);
    RUN(test_fd_relu);
    RUN(test_fd_relu_plain_l1_G2_shared);
    RUN(test_dropless_counts);
    RUN(test_relu_drop_top_expert);
    RUN(test_lambda_rule);
    RUN(test_lambda_per_layer);
    TEST_MAIN_END();
}
