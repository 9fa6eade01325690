/* test_routers.c — the routers and layers of the papers' baselines (METHOD
 * §2.3, §2.4): finite-difference gradient checks in double precision of the
 * MoE layer with every router (topk with the top expert dropped, topp,
 * hash, expert_choice, sparsemixer), the shared gate, the CartesianMoE
 * layer (including the gradient it adds to the residual stream) and Lory;
 * the robustness rule (top expert disabled, top-k re-selected); hash's
 * gradient (none to a router, experts get theirs); the parameter counts of
 * CartesianMoE against SMoE-Top3 / SMoE-Share and of Dense x E; the
 * statistics and routing read-out of every kind.
 *
 * Discrete choices (which experts, SparseMixer's sample and factor w,
 * Lory's first-segment weights) are constants of the gradient by design:
 * the double reference records them at the base point and keeps them while
 * it differentiates, so the finite differences check exactly the gradient
 * each method defines. The forward value at the base point is compared
 * first, which checks the choices themselves. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "moe/model/ffn.h"
#include "moe/util/json.h"
#include "moe/model/model.h"
#include "moe/util/rng.h"
#include "moe/moe/router.h"

/* Gradient checks against double central differences (h = 1e-6): their own
 * error (~1e-9 relative) is negligible; the float32 layer's rounding is what
 * is measured, 6e-8 .. 2.0e-7 over every router and the Cartesian and Lory layers
 * (max |error| / max |gradient|). The tolerance is ~10x the worst.
 * The forward objective sum R . y + aux is float32 sums of products
 * (~u = 6e-8 of the size of its terms): measured 2e-9 .. 7.6e-8 of sum |terms|. */
#define FD_TOL 3e-6
#define FWD_TOL 1e-6

enum { D = 6, F = 8, NMAX = 12, EMAX = 8, KMAX = 4, MAXP = 8192 };

/* ---- the double reference --------------------------------------------- */

/* aux_free_bias: the selection bias the layer under test is given (the
 * reference chooses by p + bias, the gates stay p). */
static float fd_bias[EMAX];

/* Discrete decisions of one MoE layer, recorded at the base point. */
typedef struct {
    int set;
    unsigned char mask[NMAX][EMAX];
    int pick[NMAX][KMAX];
    unsigned char cand[NMAX][KMAX][EMAX];
    double omega[NMAX][KMAX], pi0[NMAX][KMAX];
    double w0[NMAX][EMAX];      /* Lory: first-segment weights */
    int resampled, down;        /* SparseMixer: picks that are not the arg-max; of them w = 1/3 */
} decisions;

/* Where one MoE layer's parameters are, as offsets into v (-1: absent). */
typedef struct { long wr, w1, w3, w2, s1, s3, s2, wc, bc, wt, wk, vk; } moe_offsets;

typedef struct {
    const moe_config *cfg;      /* the layer's config */
    size_t E, k, Fe, S;         /* E: every expert the router chooses among */
    size_t Ef, Z, C, K;         /* of them FFN experts first, then MoE++'s zero, copy, constant */
    int gated, training, drop;
    long step;
    const int *tokens;
} moe_spec;

static void softmax_d(double *p, const double *l, size_t E) {
    double mx = l[0], sum = 0;
    for (size_t e = 1; e < E; e++) mx = fmax(mx, l[e]);
    for (size_t e = 0; e < E; e++) sum += exp(l[e] - mx);
    for (size_t e = 0; e < E; e++) p[e] = exp(l[e] - mx) / sum;
}

static void swiglu_d(const double *x, const double *w1, const double *w3, const double *w2,
                     size_t Fe, double *y) {
    double a[64];
    for (size_t f = 0; f < Fe; f++) {
        double h1 = 0, h3 = 0;
        for (size_t d = 0; d < D; d++) { h1 += w1[f * D + d] * x[d]; h3 += w3[f * D + d] * x[d]; }
        a[f] = h1 / (1 + exp(-h1)) * h3;
    }
    for (size_t d = 0; d < D; d++) {
        y[d] = 0;
        for (size_t f = 0; f < Fe; f++) y[d] += w2[d * Fe + f] * a[f];
    }
}

/* arg-max over e with allowed[e], ties to the lower index */
static size_t argmax_d(const double *v, const unsigned char *allowed, size_t E) {
    size_t best = E;
    for (size_t e = 0; e < E; e++)
        if (allowed[e] && (best == E || v[e] > v[best])) best = e;
    return best;
}

/* gates[N][E] and the weighted auxiliary loss from logits (router per spec). */
static double route_d(const moe_spec *s, const double (*l)[EMAX], size_t N, decisions *dec,
                      double (*g)[EMAX]) {
    const moe_config *c = s->cfg;
    size_t E = s->E, k = s->k;
    double p[NMAX][EMAX], aux = 0;
    const char *r = c->router;
    int learned = !strcmp(r, "learned_hash");  /* TopK on table logits, always renormalised */
    if (learned) r = "topk";
    int sigmoid = !strcmp(c->scoring_func, "sigmoid");  /* TopK's scores s = sigmoid(l) */
    double q[NMAX][EMAX];  /* the balance loss's scores: p, or s normalised over the experts */
    for (size_t t = 0; t < N; t++) {
        double S = 0;
        if (sigmoid)
            for (size_t e = 0; e < E; e++) S += p[t][e] = 1 / (1 + exp(-l[t][e]));
        else if (strcmp(r, "hash"))
            softmax_d(p[t], l[t], E);
        for (size_t e = 0; e < E; e++) { g[t][e] = 0; q[t][e] = sigmoid ? p[t][e] / S : p[t][e]; }
    }
    if (!dec->set) {  /* choose the experts (non-sparsemixer routers) */
        memset(dec->mask, 0, sizeof dec->mask);
        if (!strcmp(r, "hash")) {
            for (size_t t = 0; t < N; t++) dec->mask[t][(size_t)s->tokens[t] % E] = 1;
        } else if (!strcmp(r, "expert_choice")) {
            size_t C = N * k / E;
            C = C < 1 ? 1 : C;
            for (size_t e = 0; e < E; e++)
                for (size_t j = 0; j < C; j++) {
                    size_t best = N;
                    for (size_t t = 0; t < N; t++)
                        if (!dec->mask[t][e] && (best == N || p[t][e] > p[best][e])) best = t;
                    dec->mask[best][e] = 1;
                }
        } else if (!strcmp(r, "topk") || !strcmp(r, "topp")) {
            for (size_t t = 0; t < N; t++) {
                unsigned char allowed[EMAX];
                double sc[EMAX];  /* the choice: p, plus the aux-free bias */
                for (size_t e = 0; e < E; e++) {
                    allowed[e] = 1;
                    sc[e] = p[t][e] + (c->aux_free_bias ? (double)fd_bias[e] : 0.0);
                }
                if (s->drop) allowed[argmax_d(sc, allowed, E)] = 0;
                double cum = 0;
                for (size_t j = 0; j < E; j++) {
                    if (!strcmp(r, "topk") ? j >= k : cum >= c->top_p) break;
                    size_t best = argmax_d(sc, allowed, E);
                    if (best == E) break;
                    allowed[best] = 0;
                    dec->mask[t][best] = 1;
                    cum += p[t][best];
                }
            }
        }
    }
    double n_e[EMAX] = {0};
    if (!strcmp(r, "relu")) {  /* ReMoE (lambda 1, the test's routing state): g = relu(l), L_reg with
                                * f_e = E/(k N) n_e, the active set of the base point a constant */
        if (!dec->set)
            for (size_t t = 0; t < N; t++)
                for (size_t e = 0; e < E; e++) dec->mask[t][e] = l[t][e] > 0;
        for (size_t t = 0; t < N; t++)
            for (size_t e = 0; e < E; e++) { g[t][e] = dec->mask[t][e] ? l[t][e] : 0; n_e[e] += dec->mask[t][e]; }
        dec->set = 1;
        if (!s->training) return 0;
        double reg = 0;
        for (size_t t = 0; t < N; t++)
            for (size_t e = 0; e < E; e++) reg += (double)E / ((double)k * N) * n_e[e] * g[t][e];
        return reg / (double)N;
    }
    if (!strcmp(r, "sparsemixer")) {
        double eps2 = 2 * c->jitter_eps;
        for (size_t t = 0; t < N; t++) {
            unsigned char left[EMAX];
            for (size_t e = 0; e < E; e++) left[e] = 1;
            if (s->drop) left[argmax_d(l[t], left, E)] = 0;
            for (size_t j = 0; j < k; j++) {
                size_t best = argmax_d(l[t], left, E);
                double mx = l[t][best], sum = 0, pi[EMAX];
                if (!dec->set)
                    for (size_t e = 0; e < E; e++)
                        dec->cand[t][j][e] = left[e] && !((mx - l[t][e]) / fmax(fabs(l[t][e]), mx) > eps2);
                for (size_t e = 0; e < E; e++) sum += dec->cand[t][j][e] ? exp(l[t][e] - mx) : 0;
                for (size_t e = 0; e < E; e++) pi[e] = dec->cand[t][j][e] ? exp(l[t][e] - mx) / sum : 0;
                if (!dec->set) {
                    size_t pick = best;
                    double w = 1;
                    if (s->training) {
                        double kb = -INFINITY;
                        for (size_t e = 0; e < E; e++) {
                            if (!dec->cand[t][j][e]) continue;
                            double u = moe_router_uniform((uint64_t)c->seed, 0, (uint64_t)s->step, t,
                                                          (uint64_t)s->tokens[t], j * (E + 1) + e);
                            double key = l[t][e] - log(-log(u));
                            if (key > kb) { kb = key; pick = e; }
                        }
                        dec->resampled += pick != best;
                        if (pick != best)
                            w = moe_router_uniform((uint64_t)c->seed, 0, (uint64_t)s->step, t,
                                                   (uint64_t)s->tokens[t], j * (E + 1) + E) > 0.75 ? 1 : 1.0 / 3;
                    }
                    dec->down += w < 1;
                    dec->pick[t][j] = (int)pick;
                    dec->omega[t][j] = w;
                    dec->pi0[t][j] = pi[pick];
                    dec->mask[t][pick] = 1;
                }
                size_t q = (size_t)dec->pick[t][j];
                /* the estimator as a surrogate: value pi0 * w, gradient of pi */
                g[t][q] = pi[q] + (dec->omega[t][j] - 1) * dec->pi0[t][j];
                left[q] = 0;
            }
        }
    } else {
        for (size_t t = 0; t < N; t++)
            for (size_t e = 0; e < E; e++)
                if (dec->mask[t][e]) g[t][e] = strcmp(r, "hash") ? p[t][e] : 1.0;
        if (!strcmp(r, "topk") && (learned ? k > 1 : c->norm_topk_prob == 1 || sigmoid ||
                                   (c->norm_topk_prob == MOE_RENORM_IF_SEVERAL && k > 1)))
            for (size_t t = 0; t < N; t++) {
                double sum = 0;
                for (size_t e = 0; e < E; e++) sum += g[t][e];
                for (size_t e = 0; e < E; e++) g[t][e] /= sum;
            }
        if (!strcmp(r, "topk"))
            for (size_t t = 0; t < N; t++)
                for (size_t e = 0; e < E; e++) g[t][e] *= c->routed_scaling_factor;
    }
    dec->set = 1;
    for (size_t t = 0; t < N; t++)
        for (size_t e = 0; e < E; e++) n_e[e] += dec->mask[t][e];
    if (!s->training) return 0;
    if (!strcmp(r, "topk") || !strcmp(r, "topp") || !strcmp(r, "sparsemixer")) {
        double kk = (double)k, acc = 0;
        if (!strcmp(r, "topk") && s->drop && k > E - 1) kk = (double)(E - 1);
        if (!strcmp(r, "topp")) {
            kk = 0;
            for (size_t e = 0; e < E; e++) kk += n_e[e];
            kk /= (double)N;
        }
        for (size_t e = 0; e < E; e++) {
            double P = 0;
            for (size_t t = 0; t < N; t++) P += q[t][e];
            acc += P * n_e[e];
        }
        aux += c->aux_loss_coef * (double)E / (kk * (double)N * (double)N) * acc;
    }
    if (!strcmp(r, "topp"))
        for (size_t t = 0; t < N; t++)
            for (size_t e = 0; e < E; e++) aux -= c->topp_entropy_coef * p[t][e] * log(p[t][e]) / (double)N;
    return aux;
}

/* y[N][D] of one MoE layer on x; returns its auxiliary loss. */
static double moe_d(const moe_spec *s, const double *v, const moe_offsets *o, const double *x,
                    size_t N, decisions *dec, double *y) {
    size_t E = s->E, Fe = s->Fe;
    double l[NMAX][EMAX] = {{0}}, g[NMAX][EMAX];
    if (o->wt >= 0)  /* learned_hash: row tokens[t] of the table */
        for (size_t t = 0; t < N; t++)
            for (size_t e = 0; e < E; e++) l[t][e] = v[o->wt + (long)((size_t)s->tokens[t] * E + e)];
    if (o->wr >= 0)
        for (size_t t = 0; t < N; t++)
            for (size_t e = 0; e < E; e++)
                for (size_t d = 0; d < D; d++) l[t][e] += v[o->wr + e * D + d] * x[t * D + d];
    double aux = route_d(s, (const double (*)[EMAX])l, N, dec, g);
    for (size_t t = 0; t < N; t++) {
        double r[D] = {0}, sh[D] = {0}, ye[D], c0 = 1, c1 = 1;
        const double *xt = x + t * D;
        for (size_t j = s->Ef + s->Z; j < E; j++) {  /* copy g x; constant g (a1 x + a2 v) */
            size_t q = j - s->Ef - s->Z;
            double a[2] = {1, 0};
            if (q >= s->C) {
                q -= s->C;
                double z[2] = {0, 0};
                for (size_t d = 0; d < D; d++) {
                    z[0] += v[o->wk + (long)(q * 2 * D + d)] * xt[d];
                    z[1] += v[o->wk + (long)(q * 2 * D + D + d)] * xt[d];
                }
                softmax_d(a, z, 2);
            }
            for (size_t d = 0; d < D; d++)
                r[d] += g[t][j] * (a[0] * xt[d] + (a[1] != 0 ? a[1] * v[o->vk + (long)(q * D + d)] : 0));
        }
        for (size_t e = 0; e < s->Ef; e++) {
            if (g[t][e] == 0 && !dec->mask[t][e]) continue;
            swiglu_d(x + t * D, v + o->w1 + e * Fe * D, v + o->w3 + e * Fe * D, v + o->w2 + e * D * Fe, Fe, ye);
            for (size_t d = 0; d < D; d++) r[d] += g[t][e] * ye[d];
        }
        for (size_t j = 0; j < s->S; j++) {
            swiglu_d(x + t * D, v + o->s1 + j * Fe * D, v + o->s3 + j * Fe * D, v + o->s2 + j * D * Fe, Fe, ye);
            for (size_t d = 0; d < D; d++) sh[d] += ye[d];
        }
        if (s->gated) {
            double z[2], c[2];
            for (int i = 0; i < 2; i++) {
                z[i] = v[o->bc + i];
                for (size_t d = 0; d < D; d++) z[i] += v[o->wc + i * D + d] * x[t * D + d];
            }
            softmax_d(c, z, 2);
            c0 = c[0]; c1 = c[1];
        }
        for (size_t d = 0; d < D; d++) y[t * D + d] = c0 * r[d] + c1 * sh[d];
    }
    return aux;
}

/* ---- the layers under test -------------------------------------------- */

typedef struct {
    moe_config cfg, sub;        /* the layer's config; cartesian's sub-layer config */
    const char *kind;           /* "moe", "cartesian", "lory" */
    size_t N, B, T, NX, NH;     /* tokens; x and h sizes in v */
    int tokens[NMAX];
    long step;
    int training, drop;
    moe_offsets oa, ob;         /* MoE params (cartesian: A and B) */
    long norm;                  /* cartesian: RMSNorm_B weight */
    decisions da, db;
    double R[NMAX * D];
} fd_ctx;

static moe_offsets find_offsets(const moe_layout *L, const char *prefix, long base) {
    const char *names[] = {"router.weight", "experts.gate_proj.weight", "experts.up_proj.weight",
                           "experts.down_proj.weight", "shared_experts.gate_proj.weight",
                           "shared_experts.up_proj.weight", "shared_experts.down_proj.weight",
                           "shared_gate.weight", "shared_gate.bias", "router.token_weight",
                           "const_experts.weight", "const_experts.vector"};
    long off[12];
    for (int i = 0; i < 12; i++) {
        char name[MOE_NAME_MAX];
        snprintf(name, sizeof name, "%s.%s", prefix, names[i]);
        const moe_tensor *t = moe_layout_find(L, name);
        off[i] = t ? base + (long)t->offset : -1;
    }
    return (moe_offsets){off[0], off[1], off[2], off[3], off[4], off[5], off[6], off[7], off[8], off[9],
                         off[10], off[11]};
}

static moe_spec spec_of(const moe_config *c, const fd_ctx *f) {
    size_t Ef = (size_t)(c->n_experts * c->granularity);
    size_t Z = (size_t)c->n_zero_experts, C = (size_t)c->n_copy_experts, K = (size_t)c->n_const_experts;
    moe_spec s = {c, Ef + Z + C + K, (size_t)(c->top_k * c->granularity),
                  (size_t)(c->ffn_dim / c->granularity), (size_t)c->n_shared_experts, Ef, Z, C, K,
                  c->shared_gate && c->n_shared_experts > 0, f->training, f->drop, f->step, f->tokens};
    return s;
}

static double lory_d(fd_ctx *f, const double *v, const double *x, double *y) {
    const moe_config *c = &f->cfg;
    size_t E = (size_t)c->n_experts, L = (size_t)c->lory_segment, T = f->T;
    size_t nseg = (T + L - 1) / L, FD = F * D;
    const moe_offsets *o = &f->oa;
    for (size_t b = 0; b < f->B; b++)
        for (size_t s = 0; s < nseg; s++) {
            size_t src = s ? s - 1 : 0, a0 = b * T + src * L, an = (src + 1) * L < T ? L : T - src * L;
            size_t r0 = b * T + s * L, n = (s + 1) * L < T ? L : T - s * L;
            double mu[D] = {0}, l[EMAX] = {0}, w[EMAX];
            for (size_t r = a0; r < a0 + an; r++)
                for (size_t d = 0; d < D; d++) mu[d] += x[r * D + d] / (double)an;
            for (size_t e = 0; e < E; e++)
                for (size_t d = 0; d < D; d++) l[e] += v[o->wr + e * D + d] * mu[d];
            softmax_d(w, l, E);
            if (s == 0) {  /* stop-gradient: the base point's weights */
                if (!f->da.set) memcpy(f->da.w0[b], w, sizeof w);
                memcpy(w, f->da.w0[b], sizeof w);
            }
            static double m1[F * D], m3[F * D], m2[F * D];
            for (size_t i = 0; i < FD; i++) {
                m1[i] = m3[i] = m2[i] = 0;
                for (size_t e = 0; e < E; e++) {
                    m1[i] += w[e] * v[o->w1 + e * FD + i];
                    m3[i] += w[e] * v[o->w3 + e * FD + i];
                    m2[i] += w[e] * v[o->w2 + e * FD + i];
                }
            }
            for (size_t r = r0; r < r0 + n; r++) swiglu_d(x + r * D, m1, m3, m2, F, y + r * D);
        }
    f->da.set = 1;
    return 0;
}

/* The objective: sum(R * y) + aux, v = [x | h (cartesian) | parameters]. */
static double objective(const double *v, void *vctx) {
    fd_ctx *f = vctx;
    size_t N = f->N;
    double y[NMAX * D], aux = 0;
    if (!strcmp(f->kind, "lory")) {
        aux = lory_d(f, v, v, y);
    } else if (!strcmp(f->kind, "moe")) {
        moe_spec s = spec_of(&f->cfg, f);
        aux = moe_d(&s, v, &f->oa, v, N, &f->da, y);
    } else {  /* cartesian: a = A(x); h1 = h + a; x2 = norm(h1); b = B(x2); y = a + b */
        moe_spec s = spec_of(&f->sub, f);
        const double *h = v + f->NX;
        double a[NMAX * D], h1[NMAX * D], x2[NMAX * D] = {0}, b[NMAX * D];
        aux = moe_d(&s, v, &f->oa, v, N, &f->da, a);
        for (size_t t = 0; t < N; t++) {
            double ms = 0;
            for (size_t d = 0; d < D; d++) { h1[t * D + d] = h[t * D + d] + a[t * D + d]; ms += h1[t * D + d] * h1[t * D + d]; }
            double rstd = 1 / sqrt(ms / D + f->cfg.norm_eps);
            for (size_t d = 0; d < D; d++) x2[t * D + d] = h1[t * D + d] * rstd * v[f->norm + d];
        }
        aux += moe_d(&s, v, &f->ob, x2, N, &f->db, b);
        for (size_t i = 0; i < N * D; i++) y[i] = a[i] + b[i];
    }
    double obj = aux;
    for (size_t i = 0; i < N * D; i++) obj += f->R[i] * y[i];
    return obj;
}

static void base_config(moe_config *c, const char *ffn, const char *router) {
    moe_config_defaults(c);
    c->hidden = D; c->ffn_dim = F; c->n_layers = 1; c->n_heads = 1; c->n_kv_heads = 1;
    strcpy(c->ffn, ffn);
    strcpy(c->router, router);
    c->n_experts = 4; c->top_k = 1;
    c->aux_loss_coef = 0.05;
    c->topp_entropy_coef = 0.02;
    c->seed = 11;
}

/* Creates the layer of f->cfg, draws inputs and parameters, compares the
 * forward with the reference and the backward with central differences. */
static void check_fd(fd_ctx *f, const char *what, uint64_t seed) {
    moe_err err;
    moe_ffn *ffn;
    moe_config *c = &f->cfg;
    if (!f->kind) f->kind = c->ffn;
    CHECK(moe_config_finalize(c, &err) == 0, "%s: %s", what, err.msg);
    CHECK(moe_ffn_create(c, 0, &ffn, &err) == 0, "%s: %s", what, err.msg);
    if (h_failed_checks) return;
    if (c->aux_free_bias) {  /* the router's state: the bias the reference uses */
        moe_router *rt = ffn->ops->router(ffn, 0);
        moe_router_state st;
        CHECK(rt->ops->state(rt, &st, 1) == 1 && st.n == (size_t)c->n_experts, "%s: expert_bias state", what);
        memcpy(st.data, fd_bias, st.n * sizeof(float));
    }
    moe_layout L = {0};
    ffn->ops->layout(ffn, &L, "mlp");
    size_t N = f->N, NX = N * D, NH = strcmp(f->kind, "cartesian") ? 0 : N * D, NP = L.total;
    size_t n = NX + NH + NP;
    f->NX = NX; f->NH = NH;
    CHECK(n <= MAXP, "%s: %zu variables exceed the test buffers", what, n);
    if (n > MAXP) return;
    static double v[MAXP];
    static float params[MAXP], grads[MAXP], g[MAXP], xf[NMAX * D], hf[NMAX * D], y[NMAX * D],
                 Rf[NMAX * D], dres[NMAX * D];
    /* every buffer starts as garbage (NaN), so that no test reads what an
     * earlier one left in these static arrays: each test is independent */
    for (size_t i = 0; i < MAXP; i++) params[i] = g[i] = NAN;
    for (size_t i = 0; i < NMAX * D; i++) xf[i] = hf[i] = y[i] = Rf[i] = dres[i] = NAN;
    memset(grads, 0, sizeof grads);
    moe_layout_rewind(&L, params, grads);
    ffn->ops->layout(ffn, &L, "mlp");
    long base = (long)(NX + NH);
    if (!strcmp(f->kind, "cartesian")) {
        f->sub = *c;
        strcpy(f->sub.ffn, "moe");
        f->sub.ffn_dim = c->ffn_dim / 2; f->sub.norm_topk_prob = MOE_RENORM_IF_SEVERAL;
        f->sub.n_shared_experts = 1; f->sub.shared_gate = 1;
        f->oa = find_offsets(&L, "mlp.layer_a", base);
        f->ob = find_offsets(&L, "mlp.layer_b", base);
        f->norm = base + (long)moe_layout_find(&L, "mlp.norm_b.weight")->offset;
    } else {
        f->oa = find_offsets(&L, "mlp", base);
    }
    moe_rng r;
    moe_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) v[i] = (i < NX + NH ? 1.0 : 0.6) * moe_rng_normal(&r);
    if (!strcmp(f->kind, "cartesian"))  /* norm weights near 1 */
        for (size_t d = 0; d < D; d++) v[f->norm + d] = 1.0 + 0.2 * v[f->norm + d];
    for (size_t i = 0; i < N * D; i++) f->R[i] = moe_rng_normal(&r);
    for (size_t i = 0; i < n; i++) v[i] = (float)v[i];  /* the float values the layer sees */
    for (size_t i = 0; i < NX; i++) xf[i] = (float)v[i];
    for (size_t i = 0; i < NH; i++) hf[i] = (float)v[NX + i];
    for (size_t i = 0; i < NP; i++) params[i] = (float)v[base + i];
    for (size_t i = 0; i < N * D; i++) { Rf[i] = (float)f->R[i]; dres[i] = 0.0f; }
    moe_routing_state rs = {1.0f, 0, 0};
    moe_ffn_ctx ctx = {.tokens = f->tokens, .B = f->B, .T = f->T, .step = f->step,
                       .training = f->training, .loss_scale = 1.0f, .rs = &rs,
                       .residual = NH ? hf : NULL, .dresidual = NH ? dres : NULL,
                       .drop_top_expert = f->drop};
    CHECK(ffn->ops->forward(ffn, y, xf, N, &ctx, &err) == 0, "%s: %s", what, err.msg);
    f->da.set = f->db.set = 0;
    /* forward: the sum R . y cancels, so its float error is measured against
     * the size of its terms, scale = |aux| + sum |R_i y_i| */
    double obj = ffn->aux_loss, scale = fabs(ffn->aux_loss);
    for (size_t i = 0; i < NX; i++) { obj += Rf[i] * y[i]; scale += fabs(Rf[i] * y[i]); }
    double ref = objective(v, f);
    CHECK(fabs(obj - ref) <= FWD_TOL * scale, "%s: forward %.9g, reference %.9g (terms %.3g)", what, obj,
          ref, scale);
    CHECK(ffn->ops->backward(ffn, g, Rf, xf, N, &ctx, &err) == 0, "%s: %s", what, err.msg);
    memcpy(g + NX, dres, NH * sizeof(float));
    memcpy(g + NX + NH, grads, NP * sizeof(float));
    double h = 1e-6, max_err = 0, max_ref = 0;
    size_t worst = 0;
    for (size_t i = 0; i < n; i++) {
        double keep = v[i];
        v[i] = keep + h; double fp = objective(v, f);
        v[i] = keep - h; double fm = objective(v, f);
        v[i] = keep;
        double fd = (fp - fm) / (2 * h);
        if (fabs(fd - g[i]) > max_err) { max_err = fabs(fd - g[i]); worst = i; }
        max_ref = fmax(max_ref, fabs(fd));
    }
    CHECK(max_err / max_ref < FD_TOL, "%s: relative error %.3g (worst variable %zu of %zu)", what,
          max_err / max_ref, worst, n);
    moe_layout_free(&L);
    moe_ffn_destroy(ffn);
}

static fd_ctx *new_ctx(const char *ffn, const char *router, size_t N) {
    static fd_ctx f;
    memset(&f, 0, sizeof f);
    base_config(&f.cfg, ffn, router);
    f.N = N; f.B = 1; f.T = N; f.training = 1; f.step = 3;
    for (size_t t = 0; t < N; t++) f.tokens[t] = (int)((t * 7 + 3) % 13);
    return &f;
}

static void test_fd_topk_drop(void) {
    fd_ctx *f = new_ctx("moe", "topk", 6);
    f->cfg.top_k = 2; f->drop = 1;
    check_fd(f, "topk k=2 drop_top_expert", 1);
}

static void test_fd_topk_shared_gate(void) {
    fd_ctx *f = new_ctx("moe", "topk", 6);  /* SMoE-Share: top-2 + gated shared expert */
    f->cfg.top_k = 2; f->cfg.n_shared_experts = 1; f->cfg.shared_gate = 1;
    check_fd(f, "topk k=2 shared_gate", 2);
}

/* Auxiliary-loss-free balancing: a bias large enough to change some
 * tokens' choice (checked against the unbiased choice); the gates and
 * the balance loss still use the unbiased probabilities. */
static void test_fd_topk_aux_free_bias(void) {
    const float b[4] = {0.3f, -0.2f, 0.1f, -0.25f};
    memcpy(fd_bias, b, sizeof b);
    fd_ctx *f = new_ctx("moe", "topk", 6);
    f->cfg.top_k = 2; f->cfg.aux_free_bias = 1;
    check_fd(f, "topk k=2 aux_free_bias", 14);
    decisions biased = f->da;
    f = new_ctx("moe", "topk", 6);
    f->cfg.top_k = 2;
    check_fd(f, "topk k=2 (no bias, same draw)", 14);
    CHECK(memcmp(biased.mask, f->da.mask, sizeof biased.mask) != 0, "the bias changed no token's choice");
    f = new_ctx("moe", "topk", 6);
    f->cfg.top_k = 1; f->cfg.aux_free_bias = 1; f->drop = 1; f->cfg.norm_topk_prob = 1;
    check_fd(f, "topk k=1 aux_free_bias drop_top_expert renorm", 15);
}

/* The bias rule on hand-made loads: b_e += u sign(mean - load_e) with the
 * loads summed over the step's micro-batches; a discarded step moves
 * nothing; evaluation routes count nothing. */
static void test_aux_free_bias_rule(void) {
    moe_config c;
    base_config(&c, "moe", "topk");
    c.aux_free_bias = 1; c.aux_free_rate = 0.125;  /* exact in fp32 */
    moe_err err;
    CHECK(moe_config_finalize(&c, &err) == 0, "%s", err.msg);
    moe_router *r;
    CHECK(moe_router_create(&c, &r, &err) == 0, "%s", err.msg);
    moe_router_state st;
    CHECK(r->ops->state(r, &st, 1) == 1 && st.n == 4 && !strcmp(st.name, "expert_bias") &&
          st.data[0] == 0 && st.data[3] == 0, "the bias starts at 0");
    float logits[8 * 4], gates[8 * 4];
    /* micro-batch loads by expert (k = 1: a token's expert = its largest logit) */
    const int loads[3][2][4] = {{{4, 2, 2, 0}, {4, 0, 2, 2}},   /* step: 8 2 4 2, mean 4 (e2 at it: stays) */
                                {{2, 2, 2, 2}, {0, 0, 0, 8}},   /* discarded */
                                {{0, 0, 8, 0}, {2, 2, 2, 2}}};  /* 2 2 10 2, mean 4 */
    const float expect[2][4] = {{-0.125f, 0.125f, 0.0f, 0.125f}, {0.0f, 0.25f, -0.125f, 0.25f}};
    moe_ffn_ctx ctx = {.B = 1, .T = 8, .training = 1, .loss_scale = 1.0f}, ev = ctx;
    ev.training = 0;
    for (int step = 0; step < 3; step++) {
        for (int mb = 0; mb < 2; mb++) {
            size_t t = 0;
            for (int e = 0; e < 4; e++)
                for (int i = 0; i < loads[step][mb][e]; i++, t++)
                    for (int j = 0; j < 4; j++) logits[t * 4 + j] = j == e ? 2.0f : 0.0f;
            double aux;
            CHECK(r->ops->route(r, gates, logits, 8, &ctx, &aux, &err) == 0, "%s", err.msg);
            CHECK(r->ops->route(r, gates, logits, 8, &ev, &aux, &err) == 0, "%s", err.msg);
        }
        r->ops->end_step(r, step != 1);
        if (step == 1) continue;
        for (int e = 0; e < 4; e++)
            CHECK(st.data[e] == expect[step / 2][e], "step %d: bias[%d] = %g, expected %g", step, e, st.data[e],
                  expect[step / 2][e]);
    }
    /* the bias steers the choice: equal logits go to the largest bias */
    for (int j = 0; j < 4; j++) logits[j] = 1.0f;
    double aux;
    r->ops->route(r, gates, logits, 1, &ev, &aux, &err);
    CHECK(gates[1] == 0.25f && gates[0] == 0 && gates[2] == 0 && gates[3] == 0,
          "tie broken by the bias toward expert 1, gate the unbiased p: %g %g %g %g", gates[0], gates[1],
          gates[2], gates[3]);
    moe_router_destroy(r);
    c.aux_free_bias = 1;
    strcpy(c.router, "relu");
    CHECK(moe_config_finalize(&c, &err) != 0 && strstr(err.msg, "aux_free_bias"), "refused with relu");
}

/* DeepSeek-V3's gate: sigmoid scores, top-k on them (plus the aux-free
 * bias), renormalised over the chosen k and scaled; the balance loss on the
 * scores normalised over all experts. */
static void test_fd_topk_sigmoid(void) {
    fd_ctx *f = new_ctx("moe", "topk", 6);
    f->cfg.top_k = 2; strcpy(f->cfg.scoring_func, "sigmoid"); f->cfg.routed_scaling_factor = 2.5;
    check_fd(f, "topk k=2 sigmoid scale 2.5", 16);
    const float b[4] = {0.05f, -0.1f, 0.2f, 0.0f};
    memcpy(fd_bias, b, sizeof b);
    f = new_ctx("moe", "topk", 6);
    f->cfg.top_k = 2; strcpy(f->cfg.scoring_func, "sigmoid"); f->cfg.aux_free_bias = 1;
    f->cfg.n_shared_experts = 1;
    check_fd(f, "topk k=2 sigmoid aux_free_bias shared", 17);
    f = new_ctx("moe", "topk", 6);
    f->cfg.top_k = 1; strcpy(f->cfg.scoring_func, "sigmoid"); f->cfg.routed_scaling_factor = 0.5;
    f->drop = 1;  /* k = 1: the gate is the factor, only the balance loss reaches the router */
    check_fd(f, "topk k=1 sigmoid drop_top_expert", 18);
    /* softmax scores with a scaling factor, not renormalised */
    f = new_ctx("moe", "topk", 6);
    f->cfg.top_k = 2; f->cfg.routed_scaling_factor = 1.7;
    check_fd(f, "topk k=2 softmax scale 1.7", 19);
    moe_config c;
    moe_err err;
    base_config(&c, "moe", "topk");
    strcpy(c.scoring_func, "sigmoid"); c.z_loss_coef = 1e-3;
    CHECK(moe_config_finalize(&c, &err) != 0 && strstr(err.msg, "z_loss_coef"), "z-loss refused with sigmoid");
    base_config(&c, "moe", "relu");
    strcpy(c.scoring_func, "sigmoid");
    CHECK(moe_config_finalize(&c, &err) != 0 && strstr(err.msg, "scoring_func"), "sigmoid refused with relu");
}

/* Global-batch balancing: after the routing-only pass over a step's two
 * micro-batches, each micro-batch's balance loss is 2x its share of
 *     c E/(k T^2) sum_e n_e(step) P_e(step)
 * (so their mean is the global loss), and its gradient in the logits is
 * that of the double reference with n_e(step) constant (central
 * differences); without the pass the counts are the micro-batch's own. */
static void test_global_batch_balance(void) {
    enum { T1 = 5, E4 = 4 };
    moe_config c;
    base_config(&c, "moe", "topk");
    c.top_k = 2; c.global_batch_balance = 1;
    moe_err err;
    CHECK(moe_config_finalize(&c, &err) == 0, "%s", err.msg);
    moe_router *r;
    CHECK(moe_router_create(&c, &r, &err) == 0 && r->wants_prepass, "%s", err.msg);
    float l[2][T1 * E4], gates[T1 * E4], dl[T1 * E4], dg[T1 * E4] = {0};
    moe_rng rng;
    moe_rng_seed(&rng, 21);
    for (int m = 0; m < 2; m++)
        for (int i = 0; i < T1 * E4; i++) l[m][i] = (float)moe_rng_normal(&rng);
    moe_ffn_ctx pre = {.B = 1, .T = T1, .training = 1, .loss_scale = 0.5f, .prepass = 1}, ctx = pre;
    ctx.prepass = 0;
    double aux[2], n[E4] = {0}, P[E4] = {0};
    for (int m = 0; m < 2; m++) CHECK(r->ops->route(r, gates, l[m], T1, &pre, &aux[0], &err) == 0, "%s", err.msg);
    for (int m = 0; m < 2; m++) {  /* the step's n_e and P_e, by hand in double */
        for (int t = 0; t < T1; t++) {
            double p[E4], ld[E4];
            for (int e = 0; e < E4; e++) ld[e] = l[m][t * E4 + e];
            softmax_d(p, ld, E4);
            int a = 0, b;
            for (int e = 1; e < E4; e++) a = p[e] > p[a] ? e : a;
            b = a ? 0 : 1;
            for (int e = 0; e < E4; e++) b = e != a && p[e] > p[b] ? e : b;
            n[a] += 1; n[b] += 1;
            for (int e = 0; e < E4; e++) P[e] += p[e];
        }
    }
    double want = 0, k = 2, Tg = 2 * T1;
    for (int e = 0; e < E4; e++) want += c.aux_loss_coef * E4 / (k * Tg * Tg) * n[e] * P[e];
    for (int m = 0; m < 2; m++) CHECK(r->ops->route(r, gates, l[m], T1, &ctx, &aux[m], &err) == 0, "%s", err.msg);
    CHECK(fabs((aux[0] + aux[1]) / 2 - want) <= 1e-6 * want, "mean of the micro-batches' losses %.9g, global %.9g",
          (aux[0] + aux[1]) / 2, want);
    /* the gradient of micro-batch 1's loss (scaled by 1/2, its share of the step) */
    CHECK(r->ops->backward(r, dl, dg, l[1], gates, T1, &ctx, &err) == 0, "%s", err.msg);
    double max_err = 0, max_ref = 0, h = 1e-6;
    for (int i = 0; i < T1 * E4; i++) {
        double f[2];
        for (int sgn = 0; sgn < 2; sgn++) {
            double lv[T1][E4], acc = 0;
            for (int j = 0; j < T1 * E4; j++) lv[j / E4][j % E4] = l[1][j] + (j == i ? (sgn ? -h : h) : 0);
            for (int t = 0; t < T1; t++) {
                double p[E4];
                softmax_d(p, lv[t], E4);
                for (int e = 0; e < E4; e++) acc += p[e] * n[e];
            }
            f[sgn] = 0.5 * 2 * c.aux_loss_coef * E4 / (k * Tg * Tg) * acc;
        }
        double fd = (f[0] - f[1]) / (2 * h);
        max_err = fmax(max_err, fabs(fd - dl[i]));
        max_ref = fmax(max_ref, fabs(fd));
    }
    CHECK(max_err / max_ref < FD_TOL, "global-batch balance gradient: relative error %.3g", max_err / max_ref);
    /* the end of the step forgets the pass: the micro-batch's own counts again */
    r->ops->end_step(r, 1);
    double own;
    r->ops->route(r, gates, l[1], T1, &ctx, &own, &err);
    CHECK(fabs(own - aux[1]) > 1e-6 * fabs(aux[1]), "without a pass the loss is the micro-batch's (%.9g vs %.9g)",
          own, aux[1]);
    moe_router_destroy(r);
}

/* MoE++'s zero-computation experts beside 4 FFN experts, with TopK and
 * ReLU routing: the copy and constant experts' outputs and gradients (the
 * constant experts' W and v included), the router's [E + Z + C + K] rows. */
static void test_fd_zero_computation(void) {
    fd_ctx *f = new_ctx("moe", "topk", 8);
    f->cfg.top_k = 2; f->cfg.n_zero_experts = 1; f->cfg.n_copy_experts = 1; f->cfg.n_const_experts = 2;
    f->cfg.norm_topk_prob = 1;
    check_fd(f, "topk k=2 + zero, copy, 2 constant experts", 20);
    int zc = 0;
    for (size_t t = 0; t < f->N; t++)
        for (size_t e = 4; e < 8; e++) zc += f->da.mask[t][e];
    CHECK(zc > 0, "no token chose a zero-computation expert");
    f = new_ctx("moe", "relu", 8);
    f->cfg.n_zero_experts = 1; f->cfg.n_copy_experts = 1; f->cfg.n_const_experts = 1;
    f->cfg.n_shared_experts = 1;
    check_fd(f, "relu + zero, copy, constant experts, shared", 21);
    moe_config c;
    moe_err err;
    base_config(&c, "moe", "topp");
    c.n_copy_experts = 1;
    CHECK(moe_config_finalize(&c, &err) != 0 && strstr(err.msg, "zero-computation"), "refused with topp");
    /* compute counts only the FFN experts: the same active parameters as without */
    moe_param_count a, b;
    base_config(&c, "moe", "topk");
    c.vocab_size = 32; c.n_layers = 2; c.top_k = 2;
    CHECK(moe_config_finalize(&c, &err) == 0 && moe_model_count_params(&c, 1, &a, &err) == 0, "%s", err.msg);
    c.n_zero_experts = 2; c.n_copy_experts = 1;
    CHECK(moe_config_finalize(&c, &err) == 0 && moe_model_count_params(&c, 1, &b, &err) == 0, "%s", err.msg);
    CHECK(a.experts_active == b.experts_active && b.router == a.router + 2 * 3 * (size_t)c.hidden,
          "experts active %zu vs %zu; router %zu vs %zu", a.experts_active, b.experts_active, a.router, b.router);
}

static void test_fd_topp(void) {
    fd_ctx *f = new_ctx("moe", "topp", 6);
    f->cfg.n_shared_experts = 1; f->cfg.top_p = 0.5;
    check_fd(f, "topp p=0.5 shared", 3);
    f = new_ctx("moe", "topp", 6);
    f->drop = 1;
    check_fd(f, "topp drop_top_expert", 4);
}

static void test_fd_hash(void) {
    fd_ctx *f = new_ctx("moe", "hash", 6);
    f->cfg.n_shared_experts = 1;
    check_fd(f, "hash shared", 5);
}

/* CartesianMoE's Hash baseline: logits are the token's row of a learned
 * table; top-2 renormalised although norm_topk_prob is false; token 3
 * occurs twice, so its row collects two tokens' gradients; rows of ids not
 * in the batch must get exactly zero (checked by the differences too). */
static void test_fd_learned_hash(void) {
    fd_ctx *f = new_ctx("moe", "learned_hash", 6);
    f->cfg.vocab_size = 16; f->cfg.top_k = 2;
    f->tokens[4] = 3;
    check_fd(f, "learned_hash k=2", 12);
    f = new_ctx("moe", "learned_hash", 6);
    f->cfg.vocab_size = 16; f->cfg.top_k = 2; f->drop = 1;
    check_fd(f, "learned_hash k=2 drop_top_expert", 13);
}

static void test_fd_expert_choice(void) {
    fd_ctx *f = new_ctx("moe", "expert_choice", 8);
    f->cfg.top_k = 2; f->cfg.granularity = 2;  /* 8 experts of F/2, C = 8*4/8 = 4 tokens each */
    check_fd(f, "expert_choice k=2 G=2", 6);
}

static void test_fd_sparsemixer(void) {
    fd_ctx *f = new_ctx("moe", "sparsemixer", 8);
    f->cfg.top_k = 2; f->cfg.jitter_eps = 0.4;  /* a wide threshold: several candidates, samples differ */
    check_fd(f, "sparsemixer k=2 training", 7);
    /* the Gumbel sample and Heun's factor really occur in this draw */
    CHECK(f->da.resampled > 0 && f->da.down > 0, "sampled picks %d, of them w = 1/3: %d",
          f->da.resampled, f->da.down);
    f = new_ctx("moe", "sparsemixer", 6);
    f->cfg.top_k = 2; f->training = 0; f->drop = 1;
    check_fd(f, "sparsemixer eval drop_top_expert", 8);
}

static void test_fd_cartesian(void) {
    fd_ctx *f = new_ctx("cartesian", "topk", 6);
    f->cfg.top_k = 2;
    check_fd(f, "cartesian top-(2+2)", 9);
    f = new_ctx("cartesian", "topk", 6);
    f->cfg.top_k = 1; f->drop = 1;
    check_fd(f, "cartesian top-(1+1) drop_top_expert", 10);
}

static void test_fd_lory(void) {
    fd_ctx *f = new_ctx("lory", "topk", 12);
    f->B = 2; f->T = 6; f->cfg.lory_segment = 2;  /* 3 segments per sequence */
    check_fd(f, "lory B=2 T=6 segment 2", 11);
    f = new_ctx("lory", "topk", 10);
    f->B = 2; f->T = 5; f->cfg.lory_segment = 2;  /* a short last segment */
    check_fd(f, "lory T=5 segment 2", 12);
}

/* ---- behaviour -------------------------------------------------------- */

typedef struct {
    moe_ffn *f;
    moe_layout L;
    float *params, *grads;
} built;

static int build(const moe_config *c, built *b, uint64_t seed) {
    moe_err err;
    memset(b, 0, sizeof *b);
    if (moe_ffn_create(c, 0, &b->f, &err)) { fprintf(stderr, "  %s\n", err.msg); return -1; }
    b->f->ops->layout(b->f, &b->L, "mlp");
    b->params = calloc(b->L.total, sizeof(float));
    b->grads = calloc(b->L.total, sizeof(float));
    moe_layout_rewind(&b->L, b->params, b->grads);
    b->f->ops->layout(b->f, &b->L, "mlp");
    moe_rng r;
    moe_rng_seed(&r, seed);
    for (size_t i = 0; i < b->L.total; i++) b->params[i] = (float)moe_rng_normal(&r);
    return 0;
}

static void unbuild(built *b) {
    free(b->params); free(b->grads);
    moe_layout_free(&b->L);
    moe_ffn_destroy(b->f);
}

/* Robustness (METHOD §2.3): with drop_top_expert every top-k-family router
 * gives the most probable expert gate 0 and selects the top-k of the rest;
 * the gates of the kept experts are their probabilities (topk, topp). */
static void test_drop_top_expert(void) {
    const char *routers[] = {"topk", "topp", "sparsemixer", "cartesian"};
    enum { T = 32, DM = 8 };
    for (int i = 0; i < 4; i++) {
        moe_config c;
        moe_config_defaults(&c);
        c.hidden = DM; c.ffn_dim = 16; c.n_layers = 1; c.n_experts = 8; c.top_k = 2;
        int cart = !strcmp(routers[i], "cartesian");
        strcpy(c.ffn, cart ? "cartesian" : "moe");
        strcpy(c.router, cart ? "topk" : routers[i]);
        moe_err err;
        CHECK(moe_config_finalize(&c, &err) == 0, "%s", err.msg);
        built b;
        if (build(&c, &b, 20 + (uint64_t)i)) { CHECK(0, "build %s", routers[i]); continue; }
        moe_rng r;
        moe_rng_seed(&r, 5);
        float x[T * DM], h[T * DM], y[T * DM];
        for (int j = 0; j < T * DM; j++) { x[j] = (float)moe_rng_normal(&r); h[j] = (float)moe_rng_normal(&r); }
        int tokens[T];
        for (int t = 0; t < T; t++) tokens[t] = t;
        for (int drop = 0; drop <= 1; drop++) {
            moe_ffn_ctx ctx = {.tokens = tokens, .B = 1, .T = T, .training = 0, .loss_scale = 1.0f,
                               .residual = h, .drop_top_expert = drop};
            CHECK(b.f->ops->forward(b.f, y, x, T, &ctx, &err) == 0, "%s", err.msg);
            {  /* router A (or the only one): its logits are x Wr^T */
                const float *g, *in = x;
                size_t n, E;
                CHECK(b.f->ops->routing(b.f, 0, &g, &n, &E) == 0, "%s routing", routers[i]);
                const float *wr = b.params + moe_layout_find(&b.L, cart ? "mlp.layer_a.router.weight"
                                                                       : "mlp.router.weight")->offset;
                for (int t = 0; t < T; t++) {
                    double l[8];
                    size_t top = 0, active = 0;
                    for (size_t e = 0; e < E; e++) {
                        l[e] = 0;
                        for (int d = 0; d < DM; d++) l[e] += (double)wr[e * DM + d] * in[t * DM + d];
                        if (l[e] > l[top]) top = e;
                        active += g[t * E + e] != 0.0f;
                    }
                    if (drop) CHECK(g[t * E + top] == 0.0f, "%s: token %d keeps its top expert", routers[i], t);
                    else if (strcmp(routers[i], "sparsemixer"))
                        CHECK(g[t * E + top] != 0.0f, "%s: token %d lost its top expert", routers[i], t);
                    if (strcmp(routers[i], "topp")) CHECK(active == 2, "%s: %zu active", routers[i], active);
                    if (!strcmp(routers[i], "topk") || !strcmp(routers[i], "sparsemixer")) {
                        /* the two kept are the best two of the rest */
                        for (size_t e = 0; e < E; e++) {
                            if (e == top && drop) continue;
                            if (g[t * E + e] == 0.0f) continue;
                            size_t better = 0;
                            for (size_t e2 = 0; e2 < E; e2++)
                                better += (e2 != top || !drop) && l[e2] > l[e];
                            CHECK(better < 2, "%s: token %d expert %zu is not in the top 2", routers[i], t, e);
                        }
                    }
                }
            }
            if (cart) {  /* B: exactly k per token with and without the drop */
                const float *g;
                size_t n, E;
                b.f->ops->routing(b.f, 1, &g, &n, &E);
                for (size_t t = 0; t < n; t++) {
                    size_t active = 0;
                    for (size_t e = 0; e < E; e++) active += g[t * E + e] != 0.0f;
                    CHECK(active == 2, "cartesian B: token %zu has %zu active", t, active);
                }
                CHECK(b.f->ops->routing(b.f, 2, &g, &n, &E) == -1, "cartesian has no router 2");
            }
        }
        unbuild(&b);
    }
}

/* Hash: no router parameters; each expert's gradient comes only from the
 * tokens hashed to it (an expert with none gets exactly zero). */
static void test_hash_gradient(void) {
    moe_config c;
    base_config(&c, "moe", "hash");
    c.n_experts = 4;
    moe_err err;
    CHECK(moe_config_finalize(&c, &err) == 0, "%s", err.msg);
    built b;
    if (build(&c, &b, 3)) { CHECK(0, "build"); return; }
    CHECK(moe_layout_find(&b.L, "mlp.router.weight") == NULL, "hash has a router weight");
    enum { T = 6 };
    int tokens[T] = {1, 5, 9, 2, 13, 6};  /* mod 4: 1 1 1 2 1 2 -> experts 0 and 3 get none */
    float x[T * D], y[T * D], dy[T * D], dx[T * D];
    for (int i = 0; i < T * D; i++) { x[i] = (float)sin(i); dy[i] = (float)cos(i); }
    moe_ffn_ctx ctx = {.tokens = tokens, .B = 1, .T = T, .training = 1, .loss_scale = 1.0f};
    CHECK(b.f->ops->forward(b.f, y, x, T, &ctx, &err) == 0, "%s", err.msg);
    CHECK(b.f->ops->backward(b.f, dx, dy, x, T, &ctx, &err) == 0, "%s", err.msg);
    const moe_tensor *w1 = moe_layout_find(&b.L, "mlp.experts.gate_proj.weight");
    size_t per = (size_t)(w1->shape[1] * w1->shape[2]);
    for (size_t e = 0; e < 4; e++) {
        double norm = 0;
        for (size_t i = 0; i < per; i++) norm += fabs(b.grads[w1->offset + e * per + i]);
        CHECK((e == 1 || e == 2) ? norm > 0 : norm == 0, "expert %zu gradient norm %g", e, norm);
    }
    CHECK(b.f->aux_loss == 0.0, "hash aux loss %g", b.f->aux_loss);
    ctx.tokens = NULL;
    CHECK(b.f->ops->forward(b.f, y, x, T, &ctx, &err) == -1 && strstr(err.msg, "token"),
          "hash without tokens: %s", err.msg);
    unbuild(&b);
}

/* Sums of the parameters of the layout's tensors whose names contain `part`. */
static size_t count_params(const moe_layout *L, const char *part) {
    size_t n = 0;
    for (size_t i = 0; i < L->count; i++)
        if (strstr(L->tensors[i].name, part)) n += L->tensors[i].size;
    return n;
}

/* Active expert parameters per token: k routed experts and the shared ones
 * of each MoE (sub-)layer, from the expert tensors' shapes. */
static size_t active_params(const moe_layout *L, size_t k_per_layer) {
    size_t n = 0;
    for (size_t i = 0; i < L->count; i++) {
        const moe_tensor *t = &L->tensors[i];
        size_t one = t->size / (size_t)t->shape[0];
        if (strstr(t->name, ".experts.")) n += k_per_layer * one;
        else if (strstr(t->name, ".shared_experts.")) n += t->size;
    }
    return n;
}

/* METHOD §2.3: CartesianMoE with N = 16 sub-experts per sub-layer and top-(2+2)
 * has the expert parameters of 17 full FFNs and 3 of them active, as
 * SMoE-Top3 (17 experts, top-3) and SMoE-Share (16 experts, top-2, one
 * shared); Dense x E has the expert parameters of E experts. */
static void test_parameter_counts(void) {
    moe_config cart, top3, share, dense, dense_e;
    base_config(&cart, "cartesian", "topk");
    cart.hidden = 16; cart.ffn_dim = 64; cart.n_experts = 16; cart.top_k = 2;
    top3 = cart; strcpy(top3.ffn, "moe"); top3.n_experts = 17; top3.top_k = 3;
    share = cart; strcpy(share.ffn, "moe"); share.n_experts = 16; share.top_k = 2;
    share.n_shared_experts = 1; share.shared_gate = 1;
    dense = cart; strcpy(dense.ffn, "dense");
    dense_e = dense; dense_e.ffn_dim = 64 * 16;  /* Dense x E, E = 16 */
    moe_err err;
    built bc, b3, bs, bd, bde;
    CHECK(moe_config_finalize(&cart, &err) == 0 && moe_config_finalize(&top3, &err) == 0 &&
          moe_config_finalize(&share, &err) == 0, "%s", err.msg);
    if (build(&cart, &bc, 1) || build(&top3, &b3, 1) || build(&share, &bs, 1) ||
        build(&dense, &bd, 1) || build(&dense_e, &bde, 1)) { CHECK(0, "build"); return; }
    size_t full = bd.L.total;  /* one full FFN: 3 * hidden * ffn_dim */
    size_t ce = count_params(&bc.L, "experts."), te = count_params(&b3.L, "experts."),
           se = count_params(&bs.L, "experts.");
    CHECK(ce == 17 * full && te == 17 * full && se == 17 * full,
          "expert parameters: cartesian %zu, top3 %zu, share %zu, 17 FFNs %zu", ce, te, se, 17 * full);
    size_t ca = active_params(&bc.L, 2), ta = active_params(&b3.L, 3), sa = active_params(&bs.L, 2);
    CHECK(ca == 3 * full && ta == 3 * full && sa == 3 * full,
          "active expert parameters: cartesian %zu, top3 %zu, share %zu, 3 FFNs %zu", ca, ta, sa, 3 * full);
    /* beyond the experts: cartesian has two routers [16, D], two shared gates
     * [2, D] + [2] and the extra norm [D]; share one router and one gate */
    size_t Dm = 16;
    CHECK(bc.L.total - ce == 2 * 16 * Dm + 2 * (2 * Dm + 2) + Dm, "cartesian other params %zu", bc.L.total - ce);
    CHECK(bs.L.total - se == 16 * Dm + 2 * Dm + 2, "share other params %zu", bs.L.total - se);
    CHECK(bde.L.total == 16 * full, "Dense x E: %zu parameters, E experts %zu", bde.L.total, 16 * full);
    unbuild(&bc); unbuild(&b3); unbuild(&bs); unbuild(&bd); unbuild(&bde);
}

/* Every kind reports tokens per expert, sparsity and active experts per
 * token, adds its pairs to the step's counts, and has a routing read-out. */
static void test_stats_every_router(void) {
    const char *kinds[][2] = {{"moe", "topk"}, {"moe", "relu"}, {"moe", "topp"}, {"moe", "hash"},
                              {"moe", "expert_choice"}, {"moe", "sparsemixer"}, {"cartesian", "topk"},
                              {"lory", "topk"}};
    enum { T = 16, DM = 8 };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        moe_config c;
        moe_config_defaults(&c);
        c.hidden = DM; c.ffn_dim = 16; c.n_layers = 1; c.n_experts = 4;
        c.lory_segment = 4;
        strcpy(c.ffn, kinds[i][0]);
        strcpy(c.router, kinds[i][1]);
        moe_err err;
        CHECK(moe_config_finalize(&c, &err) == 0, "%s", err.msg);
        built b;
        if (build(&c, &b, 7)) { CHECK(0, "build %s/%s", kinds[i][0], kinds[i][1]); continue; }
        float x[T * DM], h[T * DM], y[T * DM];
        int tokens[T];
        for (int j = 0; j < T * DM; j++) { x[j] = (float)sin(0.7 * j); h[j] = (float)cos(0.3 * j); }
        for (int t = 0; t < T; t++) tokens[t] = 3 * t;
        moe_routing_state rs = {1e-8f, 0, 0};
        moe_ffn_ctx ctx = {.tokens = tokens, .B = 2, .T = T / 2, .training = 1, .loss_scale = 1.0f,
                           .rs = &rs, .residual = h};
        CHECK(b.f->ops->forward(b.f, y, x, T, &ctx, &err) == 0, "%s", err.msg);
        moe_buf s = {0};
        CHECK(b.f->ops->stats_json(b.f, &s) == 0, "stats");
        const char *keys[] = {"\"tokens_per_expert\"", "\"sparsity\"", "\"active_per_token\"", "\"router\""};
        for (int k = 0; k < 4; k++)
            CHECK(s.data && strstr(s.data, keys[k]), "%s/%s stats lack %s: %s", kinds[i][0], kinds[i][1],
                  keys[k], s.data ? s.data : "");
        moe_json_value *j = s.data ? moe_json_parse(s.data, s.len, "stats", &err) : NULL;
        CHECK(j != NULL, "%s/%s stats are not JSON: %s", kinds[i][0], kinds[i][1], s.data ? s.data : "");
        moe_json_free(j);
        moe_buf_free(&s);
        CHECK(rs.total_pairs > 0 && rs.active_pairs > 0 && rs.active_pairs <= rs.total_pairs,
              "%s/%s: pairs %g of %g", kinds[i][0], kinds[i][1], rs.active_pairs, rs.total_pairs);
        const float *g;
        size_t n, E;
        CHECK(b.f->ops->routing(b.f, 0, &g, &n, &E) == 0 && n == T && E == 4, "%s routing", kinds[i][1]);
        unbuild(&b);
    }
}

/* Configs the methods cannot run are refused with the key named. */
static void test_config_checks(void) {
    struct { const char *ffn, *router; int shared, gate, k, G; const char *key; } bad[] = {
        {"moe", "topk", 0, 1, 1, 1, "shared_gate"},
        {"moe", "hash", 0, 0, 2, 1, "router"},
        {"cartesian", "relu", 0, 0, 1, 1, "router"},
        {"lory", "topk", 0, 0, 1, 2, "granularity"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        moe_config c;
        base_config(&c, bad[i].ffn, bad[i].router);
        c.n_shared_experts = bad[i].shared; c.shared_gate = bad[i].gate;
        c.top_k = bad[i].k; c.granularity = bad[i].G;
        moe_err err;
        CHECK(moe_config_finalize(&c, &err) == -1 && strstr(err.msg, bad[i].key),
              "%s/%s accepted or wrong message: %s", bad[i].ffn, bad[i].router, err.msg);
    }
    moe_config c;
    base_config(&c, "moe", "expert_choice");
    const char *why;
    CHECK(moe_config_causal(&c, &why) == 0, "expert choice is not causal");
    strcpy(c.ffn, "lory");
    CHECK(moe_config_causal(&c, &why) == 0, "lory is not causal");
    base_config(&c, "cartesian", "topk");
    CHECK(moe_config_causal(&c, &why) == 1, "cartesian is causal");
    /* dense_first_layers: the first layers are dense whatever moe_every says,
     * and it may not leave the model without a routed layer */
    base_config(&c, "moe", "topk");
    c.n_layers = 3; c.dense_first_layers = 3;
    moe_err err;
    CHECK(moe_config_finalize(&c, &err) == -1 && strstr(err.msg, "dense_first_layers"),
          "dense_first_layers = n_layers accepted: %s", err.msg);
    c.dense_first_layers = 1;
    CHECK(moe_config_finalize(&c, &err) == 0, "%s", err.msg);
    for (int l = 0; l < 3; l++) {
        moe_ffn *f = NULL;
        CHECK(moe_ffn_create(&c, l, &f, &err) == 0, "%s", err.msg);
        if (f) CHECK(!strcmp(f->ops->kind, l == 0 ? "dense" : "moe"), "layer %d is %s", l, f->ops->kind);
        moe_ffn_destroy(f);
    }
}

int main(void) {
    RUN(test_fd_topk_drop);
    RUN(test_fd_topk_shared_gate);
    RUN(test_fd_topk_aux_free_bias);
    RUN(test_aux_free_bias_rule);
    RUN(test_fd_topk_sigmoid);
    RUN(test_global_batch_balance);
    RUN(test_fd_zero_computation);
    RUN(test_fd_topp);
    RUN(test_fd_hash);
    RUN(test_fd_learned_hash);
    RUN(test_fd_expert_choice);
    RUN(test_fd_sparsemixer);
    RUN(test_fd_cartesian);
    RUN(test_fd_lory);
    RUN(test_drop_top_expert);
    RUN(test_hash_gradient);
    RUN(test_parameter_counts);
    RUN(test_stats_every_router);
    RUN(test_config_checks);
    TEST_MAIN_END();
}
