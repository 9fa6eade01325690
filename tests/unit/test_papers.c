/* test_papers.c — hand-worked cases taken from the papers' own equations,
 * not from this code's rules: each expected number below was worked out on
 * paper (exact fractions; the steps are in the comments) from the equation
 * cited beside it, so a misreading shared by the C code, test_moe.c's
 * reference and tools/ref_model.py fails here. Where a paper leaves a choice
 * open, the comment says which one moe takes (docs/TESTING.md lists them).
 *
 * Tolerances: the inputs are fp32 (logits such as ln 3 are rounded to 24
 * bits, relative error <= u = 2^-24 ~ 6e-8 of |l| <= 3), the routers work in
 * double from there, so each result carries a relative error of a few u;
 * 1e-6 relative is ~16 u. Each of these one-line bugs fails a case here
 * (checked): the balance loss without its 1/k, lambda multiplied at equality,
 * the L1 gradient halved, Cartesian's h1 without the residual h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "moe/model/ffn.h"
#include "moe/moe/router.h"

#define REL 1e-6

/* Two tokens, three experts, with softmax rows of simple fractions:
 * logits (ln 3, ln 2, 0) -> p = (1/2, 1/3, 1/6),
 * logits (0, ln 3, ln 2) -> p = (1/6, 1/2, 1/3). */
static void two_token_logits(float *l) {
    const float L3 = (float)log(3.0), L2 = (float)log(2.0);
    const float v[6] = {L3, L2, 0.0f, 0.0f, L3, L2};
    memcpy(l, v, sizeof v);
}

static moe_router *make_router(moe_config *cfg, const char *router, int E, int k, int l1_lb) {
    moe_config_defaults(cfg);
    cfg->l1_load_balance = l1_lb;
    strcpy(cfg->ffn, "moe");
    strcpy(cfg->router, router);
    cfg->n_experts = E; cfg->top_k = k; cfg->granularity = 1;
    cfg->aux_loss_coef = 0.01; cfg->z_loss_coef = 0.0; cfg->norm_topk_prob = 0;
    moe_err err;
    moe_router *r = NULL;
    CHECK(moe_router_create(cfg, &r, &err) == 0, "%s", err.msg);
    return r;
}

/* Switch Transformer (Fedus, Zoph, Shazeer, JMLR 2022), eq. (4)-(6):
 *   loss = alpha * N * sum_i f_i * P_i,
 *   f_i = (1/T) sum_x 1{argmax p(x) = i},  P_i = (1/T) sum_x p_i(x),
 * N experts, T tokens; f is a count (no gradient), P carries the gradient.
 * Here N = 3, T = 2, k = 1: token 0 picks expert 0, token 1 expert 1, so
 * f = (1/2, 1/2, 0) and P = ((1/2+1/6)/2, (1/3+1/2)/2, (1/6+1/3)/2)
 *   = (1/3, 5/12, 1/4);  sum f P = 1/6 + 5/24 = 3/8;  loss = alpha * 9/8.
 * Gates (top-1 of p, no renormalisation): token 0 (1/2, 0, 0), token 1
 * (0, 1/2, 0).
 * Gradient (through P only): d loss / d l[t,j] = alpha N / T *
 * p[t,j] (f_j - sum_i f_i p[t,i]); token 0: sum f p = 5/12, so
 * (3/2)(1/2 * 1/12, 1/3 * 1/12, 1/6 * -5/12) = (1/16, 1/24, -5/48);
 * token 1: sum f p = 1/3, so (3/2)(1/6 * 1/6, 1/2 * 1/6, 1/3 * -1/3)
 *   = (1/24, 1/8, -1/6)   (times alpha; each row sums to 0). */
static void test_switch_balance_loss_k1(void) {
    moe_config cfg;
    moe_router *r = make_router(&cfg, "topk", 3, 1, 1);
    if (!r) return;
    float l[6], g[6], dg[6] = {0}, dl[6];
    two_token_logits(l);
    double aux = -1;
    moe_err err;
    moe_ffn_ctx ctx = {.B = 1, .T = 2, .training = 1, .loss_scale = 1.0f};
    CHECK(r->ops->route(r, g, l, 2, &ctx, &aux, &err) == 0, "%s", err.msg);
    const double alpha = 0.01;
    CHECK_CLOSE(aux, alpha * 9.0 / 8.0, REL, 0);
    const double want_g[6] = {1.0 / 2, 0, 0, 0, 1.0 / 2, 0};
    for (int i = 0; i < 6; i++) CHECK_CLOSE(g[i], want_g[i], REL, 0);
    CHECK(r->ops->backward(r, dl, dg, l, g, 2, &ctx, &err) == 0, "%s", err.msg);
    const double want_dl[6] = {1.0 / 16, 1.0 / 24, -5.0 / 48, 1.0 / 24, 1.0 / 8, -1.0 / 6};
    for (int i = 0; i < 6; i++) CHECK_CLOSE(dl[i], alpha * want_dl[i], REL, 1e-12);
    moe_router_destroy(r);
}

/* The top-k generalisation of the Switch loss used by ReMoE's TopK baseline
 * (Megatron-LM, which ReMoE's code is a fork of): f_i is the fraction of the
 * k*T assignments that go to expert i, f_i = n_i / (k T), so that perfectly
 * uniform routing costs alpha for every k. The papers leave this
 * normalisation open (GShard-style codes use n_i / T, which doubles the loss
 * at k = 2); moe takes Megatron's, as METHOD §2.1 writes it
 * (alpha E / (k T^2) sum_e n_e sum_t p[t,e]).
 * k = 2: token 0 picks experts {0, 1}, token 1 {1, 2}: n = (1, 2, 1),
 * f = (1/4, 1/2, 1/4), P = (1/3, 5/12, 1/4) as above;
 * sum f P = 1/12 + 5/24 + 1/16 = 17/48;  loss = alpha * 3 * 17/48 = alpha * 17/16.
 * Gates without renormalisation (the default): (1/2, 1/3, 0), (0, 1/2, 1/3). */
static void test_topk_balance_loss_k2(void) {
    moe_config cfg;
    moe_router *r = make_router(&cfg, "topk", 3, 2, 1);
    if (!r) return;
    float l[6], g[6];
    two_token_logits(l);
    double aux = -1;
    moe_err err;
    moe_ffn_ctx ctx = {.B = 1, .T = 2, .training = 1, .loss_scale = 1.0f};
    CHECK(r->ops->route(r, g, l, 2, &ctx, &aux, &err) == 0, "%s", err.msg);
    CHECK_CLOSE(aux, 0.01 * 17.0 / 16.0, REL, 0);
    const double want_g[6] = {1.0 / 2, 1.0 / 3, 0, 0, 1.0 / 2, 1.0 / 3};
    for (int i = 0; i < 6; i++) CHECK_CLOSE(g[i], want_g[i], REL, 0);
    moe_router_destroy(r);
}

/* ReMoE (Wang, Chen, Zhu, ICLR 2025) §3.3-3.4: ReLU gates R(x) = ReLU(x Wr^T)
 * and the load-balanced L1 term
 *   L_reg = 1/(L T) sum_l sum_t sum_e f[l,e] R_e(x_t),
 *   f[l,e] = E/(k T) sum_t 1{R_e(x_t) > 0}   (a constant: no gradient),
 * with loss = L_lm + lambda L_reg; plain L1 is f = 1. The paper divides by
 * the number of MoE layers L, ReMoE's reference code does not; moe follows
 * the code (METHOD §2.2), so with one layer both agree and a model with L
 * layers carries L times the paper's term (lambda adapts either way).
 * Here E = 3, k = 1, T = 2, lambda = 1/2, logits (1, -1, 1/2), (2, 1/4, -3):
 * gates (1, 0, 1/2), (2, 1/4, 0); counts (2, 1, 1); f = 3/2 * counts =
 * (3, 3/2, 3/2); column sums (3, 1/4, 1/2);
 * L_reg = (3*3 + 3/2 * 1/4 + 3/2 * 1/2) / 2 = (9 + 3/8 + 3/4) / 2 = 81/16,
 * lambda L_reg = 81/32. Gradient: lambda f_e / T where the gate is positive,
 * 0 elsewhere: (3/4, 0, 3/8), (3/4, 3/8, 0).
 * Plain L1: L_reg = (1 + 1/2 + 2 + 1/4) / 2 = 15/8, lambda L_reg = 15/16,
 * gradient lambda / T = 1/4 where positive. */
static void check_relu_l1(int load_balanced) {
    moe_config cfg;
    moe_router *r = make_router(&cfg, "relu", 3, 1, load_balanced);
    if (!r) return;
    const float l[6] = {1.0f, -1.0f, 0.5f, 2.0f, 0.25f, -3.0f};
    float g[6], dg[6] = {0}, dl[6];
    double aux = -1;
    moe_err err;
    moe_routing_state rs = {0.5f, 0, 0};
    moe_ffn_ctx ctx = {.B = 1, .T = 2, .training = 1, .loss_scale = 1.0f, .rs = &rs};
    CHECK(r->ops->route(r, g, l, 2, &ctx, &aux, &err) == 0, "%s", err.msg);
    const double want_g[6] = {1, 0, 0.5, 2, 0.25, 0};
    for (int i = 0; i < 6; i++) CHECK(g[i] == want_g[i], "gate %d: %g", i, g[i]);
    CHECK_CLOSE(aux, load_balanced ? 81.0 / 32 : 15.0 / 16, REL, 0);
    CHECK(r->ops->backward(r, dl, dg, l, g, 2, &ctx, &err) == 0, "%s", err.msg);
    const double lb[6] = {3.0 / 4, 0, 3.0 / 8, 3.0 / 4, 3.0 / 8, 0};
    const double plain[6] = {0.25, 0, 0.25, 0.25, 0.25, 0};
    for (int i = 0; i < 6; i++)
        CHECK_CLOSE(dl[i], load_balanced ? lb[i] : plain[i], REL, 1e-12);
    moe_router_destroy(r);
}

static void test_remoe_l1_load_balanced(void) { check_relu_l1(1); }
static void test_remoe_l1_plain(void) { check_relu_l1(0); }

/* ReMoE §3.3, the adaptive coefficient:
 *   lambda_{i+1} = lambda_i * alpha^{sign((1 - k/E) - S_i)}.
 * Below the target sparsity (sign +1) lambda grows by alpha, above it
 * (sign -1) it shrinks by alpha. At S_i exactly equal to the target the
 * paper's sign is 0 and lambda would stay; ReMoE's reference code and METHOD
 * §2.2 ("lambda * alpha if S_i < target, else lambda / alpha") divide there,
 * and moe follows them: equality is treated as "sparse enough". With
 * alpha = 5/4 and lambda = 1 every value is exact in binary: 5/4, and
 * 1 / (5/4) = 4/5 rounded once to fp32. S = 3/4 = 1 - 1/4 is exact too, as
 * it is when the trainer computes it from counts (1 - 24/96). */
static void test_remoe_lambda_update(void) {
    const double target = 1.0 - 1.0 / 4.0;  /* k = 1, E = 4 */
    CHECK(moe_relu_lambda_next(1.0f, 0.5, target, 1.25) == 1.25f, "below the target: times alpha");
    CHECK(moe_relu_lambda_next(1.0f, 0.875, target, 1.25) == 0.8f, "above the target: over alpha");
    CHECK(moe_relu_lambda_next(1.0f, 1.0 - 24.0 / 96.0, target, 1.25) == 0.8f,
          "at the target: over alpha (METHOD §2.2; the paper's sign(0) would keep lambda)");
    /* lambda is fp32: 4/5 is not representable, and each step rounds once */
    float lam = 1.0f;
    for (int i = 0; i < 3; i++) lam = moe_relu_lambda_next(lam, 0.9, target, 1.25);
    CHECK(lam == (float)((float)((float)(1.0 / 1.25) / 1.25) / 1.25), "three steps down: %.9g", lam);
}

/* CartesianMoE (Su et al., NAACL 2025) §3, the Cartesian Product Layer, and
 * its official code (sub-layer A's output added to the residual stream, an
 * RMSNorm, sub-layer B, the second residual):
 *   x1 = RMSNorm_A(h);  a = c0 * sum_{i in S} w_i A_i(x1) + c1 * A_shared(x1)
 *   h1 = h + a;  x2 = RMSNorm_B(h1);  b = likewise with B on x2;  out = h1 + b
 * with c = softmax(Wc x + bc) the 2-way shared-mix gate and w_i = p_i,
 * renormalised over the top-k only when k > 1 (as the official code).
 * The slot's input x is x1 (the block's pre-FFN norm); it returns out - h.
 * The layer here: D = 2, two routed sub-experts per sub-layer of size 1,
 * k = 1. Routers zero: p = (1/2, 1/2), both routed experts identical (the
 * tie cannot matter), w = 1/2. Shared gate Wc = 0, bc = (ln 3, 0):
 * c = (3/4, 1/4). Experts (SwiGLU W2(silu(W1 x) * W3 x)):
 *   routed   W1 = [1 0], W3 = [0 1], W2 = [1 0]^T: A(x) = (silu(x0) x1, 0)
 *   shared   W1 = [1 0], W3 = [1 0], W2 = [0 1]^T: S(x) = (0, silu(x0) x0)
 * the same in B; RMSNorm_B weight (1, 2).
 * With x = (1, 2), h = (3, -1), s = silu(1) = 1/(1 + e^-1):
 *   a  = (3/4 * 1/2 * s * 2, 1/4 * s * 1) = (3s/4, s/4)
 *   h1 = (3 + 3s/4, -1 + s/4)
 *   x2 = h1 / sqrt((h1_0^2 + h1_1^2)/2 + eps) * (1, 2)
 *   b  = (3/8 silu(x2_0) x2_1, 1/4 silu(x2_0) x2_0);   y = a + b.
 * (Dropping the residual into h1, h1 = a, moves y[0] from 0.286 to 0.905:
 * checked by introducing that bug.) */
static double silu(double v) { return v / (1.0 + exp(-v)); }

static void test_cartesian_structure(void) {
    moe_config cfg;
    moe_config_defaults(&cfg);
    cfg.hidden = 2; cfg.ffn_dim = 2; cfg.n_layers = 1;
    strcpy(cfg.ffn, "cartesian");
    strcpy(cfg.router, "topk");
    cfg.n_experts = 2; cfg.top_k = 1; cfg.granularity = 1;
    moe_err err;
    moe_ffn *f = NULL;
    CHECK(moe_ffn_cartesian_create(&cfg, 0, &f, &err) == 0, "%s", err.msg);
    if (!f) return;
    moe_layout L = {0};
    f->ops->layout(f, &L, "mlp");
    float *params = calloc(L.total, sizeof(float)), *grads = calloc(L.total, sizeof(float));
    moe_layout_rewind(&L, params, grads);
    f->ops->layout(f, &L, "mlp");
    memset(params, 0, L.total * sizeof(float));
    int set = 0;
    for (size_t i = 0; i < L.count; i++) {
        const moe_tensor *t = &L.tensors[i];
        float *p = params + t->offset;
        const char *n = strchr(t->name, '.') + 1;  /* after "mlp." */
        if (!strcmp(n, "norm_b.weight")) { p[0] = 1; p[1] = 2; set++; continue; }
        n = strchr(n, '.') + 1;                    /* after "layer_a." */
        /* routed [2 experts][Fe = 1][D = 2] or [2][D][1]; shared [1][..] */
        if (!strcmp(n, "experts.gate_proj.weight")) { p[0] = 1; p[2] = 1; set++; }
        else if (!strcmp(n, "experts.up_proj.weight")) { p[1] = 1; p[3] = 1; set++; }
        else if (!strcmp(n, "experts.down_proj.weight")) { p[0] = 1; p[2] = 1; set++; }
        else if (!strcmp(n, "shared_experts.gate_proj.weight")) { p[0] = 1; set++; }
        else if (!strcmp(n, "shared_experts.up_proj.weight")) { p[0] = 1; set++; }
        else if (!strcmp(n, "shared_experts.down_proj.weight")) { p[1] = 1; set++; }
        else if (!strcmp(n, "shared_gate.bias")) { p[0] = (float)log(3.0); set++; }
    }
    CHECK(set == 15, "the layer's tensors are not the ones this case sets up (%d set)", set);
    const float x[2] = {1, 2}, h[2] = {3, -1};
    float y[2];
    moe_routing_state rs = {0, 0, 0};
    moe_ffn_ctx ctx = {.B = 1, .T = 1, .training = 0, .loss_scale = 1.0f, .rs = &rs, .residual = h};
    CHECK(f->ops->forward(f, y, x, 1, &ctx, &err) == 0, "%s", err.msg);
    const double s = silu(1.0), a0 = 3 * s / 4, a1 = s / 4;
    const double h10 = 3 + a0, h11 = -1 + a1;
    const double rstd = 1.0 / sqrt((h10 * h10 + h11 * h11) / 2 + cfg.norm_eps);
    const double x20 = h10 * rstd * 1, x21 = h11 * rstd * 2;
    const double b0 = 3.0 / 8 * silu(x20) * x21, b1 = 1.0 / 4 * silu(x20) * x20;
    CHECK_CLOSE(y[0], a0 + b0, REL, 1e-7);
    CHECK_CLOSE(y[1], a1 + b1, REL, 1e-7);
    free(params); free(grads);
    moe_layout_free(&L);
    moe_ffn_destroy(f);
}

int main(void) {
    RUN(test_switch_balance_loss_k1);
    RUN(test_topk_balance_loss_k2);
    RUN(test_remoe_l1_load_balanced);
    RUN(test_remoe_l1_plain);
    RUN(test_remoe_lambda_update);
    RUN(test_cartesian_structure);
    TEST_MAIN_END();
}
