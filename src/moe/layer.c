/* layer.c — the dropless mixture-of-experts layer (METHOD §2), one moe_ffn:
 *   logits = x Wr^T (fp32) -> router -> gates [N,E]
 *   every (token, expert) pair with a non-zero gate is computed: tokens are
 *   gathered per expert, one SwiGLU GEMM chain per expert, and the outputs
 *   are added back weighted by the gate; shared experts see every token
 *   with gate 1. No capacity factor, no token dropping: compute follows the
 *   number of active pairs. With shared_gate (SMoE-Share, CartesianMoE's
 *   sub-layers) the routed sum r and the shared sum s are mixed as
 *     y = c0 r + c1 s,  c = softmax(Wc x + bc)  (a 2-way gate with bias).
 *   Parameters (E = n_experts * granularity, Fe = ffn_dim / granularity,
 *   S = n_shared_experts):
 *     mlp.router.weight                 [E, D]   (not for hash routing)
 *     mlp.router.token_weight           [V, E]   (learned_hash instead: the
 *                                                 logits of token id v are row v)
 *     mlp.experts.gate_proj.weight      [E, Fe, D]   (W1 of each expert)
 *     mlp.experts.up_proj.weight        [E, Fe, D]   (W3)
 *     mlp.experts.down_proj.weight      [E, D, Fe]   (W2)
 *     mlp.shared_experts.{gate,up,down}_proj.weight  [S, ...] likewise
 *     mlp.shared_gate.weight [2, D], mlp.shared_gate.bias [2]  (shared_gate)
 * MoE++'s zero-computation experts (Jin et al., ICLR 2025): Z zero, C copy
 * and K constant experts are routed beside the E FFN experts (the router has
 * Et = E + Z + C + K rows; its gates [N, Et] keep the FFN experts first):
 * a zero expert outputs 0, a copy expert x, a constant expert
 * a1 x + a2 v with [a1, a2] = softmax(Wk x); they run on every rank for its
 * own tokens, outside the FFN experts' dispatch, and count no FFN compute:
 *     mlp.const_experts.weight [K, 2, D], mlp.const_experts.vector [K, D] */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "moe/comm/comm.h"
#include "moe/kernels/kernels.h"
#include "moe/moe/router.h"

typedef struct moe_layer {
    size_t D, Fe, E, S;
    size_t Z, C, K, Et;                    /* zero, copy, constant experts; Et = E + Z + C + K */
    float *wk, *dwk, *vk, *dvk;            /* constant experts: [K, 2, D], [K, D] */
    int gated;                             /* shared_gate: c mixes routed and shared */
    moe_router *router;
    float *wr, *dwr;                       /* [E, D] (NULL without router weight) */
    float *wt, *dwt;                       /* [V, E] learned_hash's token table (else NULL) */
    float *wc, *dwc, *bc, *dbc;            /* shared gate [2, D], [2] */
    float *w1, *w3, *w2, *dw1, *dw3, *dw2; /* routed experts held, stacked by slot (all E,
                                            * unless expert parallel divided them) */
    moe_placement place;                   /* which expert each rank's slot holds (expert
                                            * parallel), and the routed rows counted */
    float *s1, *s3, *s2, *ds1, *ds3, *ds2; /* shared experts, stacked */

    /* the last forward, kept for backward (grow-only buffers) */
    size_t N, cap_rows, cap_pairs, pairs;
    float *logits, *gates, *dgates, *dlogits;   /* [N, E] */
    int *row_of;          /* [N, E] row of pair (t, e) in the pair buffers, -1 if inactive */
    size_t *offset;       /* [E+S+1] first row of each expert (slot) */
    size_t *order;        /* [E+S] slots by falling row count (the work schedule) */
    int *tok;             /* [pairs] token of each row */
    float *xe, *ye, *dxe; /* [pairs, D] gathered inputs (under expert parallel only the
                           * shared slots' rows: the routed ones leave from xs),
                           * expert outputs, input grads */
    float *h1, *h3;       /* [pairs, Fe] */
    void *a;              /* [pairs, Fe] silu(h1) h3, in the products' precision */
    size_t act;           /* bytes an element of a and ap (moe_k_act_size) */
    float *dh1, *dh3;     /* [pairs, Fe] */
    float *mix;           /* [N, 2] shared-gate probabilities c (1, 1 without the gate) */
    /* with zero-computation experts (Et > E): the router's logits and gates
     * [N, Et] and their gradients; m->gates [N, E] is then the FFN part */
    float *la, *ga, *dla, *dga;
    float *alpha;         /* [N, K, 2] the constant experts' a1, a2 */
    float *rsum, *ssum;   /* [N, D] routed and shared sums (shared gate only) */
    double aux;           /* router auxiliary loss of the last forward */
    moe_k_ctx *kc;            /* matrix products of the current call (ctx->kc) */

    /* expert parallel (ctx->ep of P > 1 ranks): this rank runs the routed
     * experts of its El slots (place.at[rank El + el]) for the tokens of
     * every rank of its group. Its own routed rows leave in position order
     * (the experts of rank 0's slots, then rank 1's, ...: one block per
     * owner); rows arrive by source rank (then slot) and are computed by
     * slot (then source rank: the group's token order) */
    size_t ep_cap, R;                /* rows held / received */
    int *cnt_send, *cnt_recv;        /* [P * El] rows per (rank, slot) */
    size_t *scnt, *rcnt;             /* [P] elements sent to / received from each rank */
    size_t *src_ofs, *exp_ofs;       /* [P * El] first row of block (s, el) by source / by slot */
    size_t *pofs;                    /* [E] first row of expert e's rows in position order */
    size_t xs_cap;                   /* rows of xs */
    float *xs;                       /* [routed, D] this rank's routed rows in position order */
    float *xr, *xp, *yp;             /* [R, D] by source; by slot; results by slot */
    float *h1p, *h3p, *dh1p, *dh3p;  /* [R, Fe] */
    void *ap;                        /* [R, Fe] as a */
} moe_layer;

/* ---- parameters ------------------------------------------------------- */

static void layer_layout(moe_ffn *f, moe_layout *L, const char *prefix) {
    moe_layer *m = f->impl;
    int64_t E = (int64_t)m->E, S = (int64_t)m->S, D = (int64_t)m->D, Fe = (int64_t)m->Fe;
    float std = (float)f->cfg->init_std, out_std = (float)(f->cfg->init_std / sqrt(2.0 * f->cfg->n_layers));
    if (m->router->has_weight == MOE_ROUTER_TOKEN_TABLE)
        m->wt = moe_layout_add(L, &m->dwt, std, 2, (int64_t[]){f->cfg->vocab_size, E}, "%s.router.token_weight",
                               prefix);
    else if (m->router->has_weight)
        m->wr = moe_layout_add(L, &m->dwr, std, 2, (int64_t[]){(int64_t)m->Et, D}, "%s.router.weight", prefix);
    /* the routed experts are divided among the layout's parts (expert parallel) */
    m->w1 = moe_layout_add_split(L, &m->dw1, std, 3, (int64_t[]){E, Fe, D}, "%s.experts.gate_proj.weight", prefix);
    m->w3 = moe_layout_add_split(L, &m->dw3, std, 3, (int64_t[]){E, Fe, D}, "%s.experts.up_proj.weight", prefix);
    m->w2 = moe_layout_add_split(L, &m->dw2, out_std, 3, (int64_t[]){E, D, Fe}, "%s.experts.down_proj.weight",
                                 prefix);
    m->place.w[0] = m->w1;
    m->place.w[1] = m->w3;
    m->place.w[2] = m->w2;
    m->place.block = m->Fe * m->D;
    if (m->K) {
        m->wk = moe_layout_add(L, &m->dwk, std, 3, (int64_t[]){(int64_t)m->K, 2, D}, "%s.const_experts.weight",
                               prefix);
        m->vk = moe_layout_add(L, &m->dvk, std, 2, (int64_t[]){(int64_t)m->K, D}, "%s.const_experts.vector",
                               prefix);
    }
    if (S == 0) return;
    m->s1 = moe_layout_add(L, &m->ds1, std, 3, (int64_t[]){S, Fe, D}, "%s.shared_experts.gate_proj.weight", prefix);
    m->s3 = moe_layout_add(L, &m->ds3, std, 3, (int64_t[]){S, Fe, D}, "%s.shared_experts.up_proj.weight", prefix);
    m->s2 = moe_layout_add(L, &m->ds2, out_std, 3, (int64_t[]){S, D, Fe}, "%s.shared_experts.down_proj.weight", prefix);
    if (!m->gated) return;
    m->wc = moe_layout_add(L, &m->dwc, std, 2, (int64_t[]){2, D}, "%s.shared_gate.weight", prefix);
    m->bc = moe_layout_add(L, &m->dbc, std, 1, (int64_t[]){2}, "%s.shared_gate.bias", prefix);
}

/* Weights of slot j: routed experts first, then the shared ones. A routed
 * j is a slot held here: expert j when one process holds them all; under
 * expert parallel, this rank's slot j (the owner runs expert place.at[...]). */
typedef struct { float *w1, *w3, *w2, *dw1, *dw3, *dw2; } expert_w;
static expert_w slot_weights(const moe_layer *m, size_t j) {
    size_t in = m->Fe * m->D;
    if (j < m->E) {
        return (expert_w){m->w1 + j * in, m->w3 + j * in, m->w2 + j * in,
                          m->dw1 + j * in, m->dw3 + j * in, m->dw2 + j * in};
    }
    j -= m->E;
    return (expert_w){m->s1 + j * in, m->s3 + j * in, m->s2 + j * in,
                      m->ds1 + j * in, m->ds3 + j * in, m->ds2 + j * in};
}

/* ---- buffers ------------------------------------------------------------ */

static int grow(void **p, size_t bytes, moe_err *err) {
    free(*p);
    *p = moe_malloc(bytes, err);
    return *p ? 0 : -1;
}

static int reserve_rows(moe_layer *m, size_t N, moe_err *err) {
    if (N <= m->cap_rows) return 0;
    size_t NE = N * m->E;
    if (grow((void **)&m->logits, NE * sizeof(float), err) || grow((void **)&m->gates, NE * sizeof(float), err) ||
        grow((void **)&m->dgates, NE * sizeof(float), err) ||
        grow((void **)&m->dlogits, N * (m->E > 2 ? m->E : 2) * sizeof(float), err) ||  /* also dz [N,2] */
        grow((void **)&m->row_of, NE * sizeof(int), err) || grow((void **)&m->mix, N * 2 * sizeof(float), err) ||
        (m->gated && (grow((void **)&m->rsum, N * m->D * sizeof(float), err) ||
                      grow((void **)&m->ssum, N * m->D * sizeof(float), err))) ||
        (m->Et > m->E && (grow((void **)&m->la, N * m->Et * sizeof(float), err) ||
                          grow((void **)&m->ga, N * m->Et * sizeof(float), err) ||
                          grow((void **)&m->dla, N * m->Et * sizeof(float), err) ||
                          grow((void **)&m->dga, N * m->Et * sizeof(float), err) ||
                          grow((void **)&m->alpha, N * (m->K ? m->K : 1) * 2 * sizeof(float), err)))) {
        m->cap_rows = 0;
        return -1;
    }
    m->cap_rows = N;
    return 0;
}

/* Row `row` of a [rows, Fe] buffer of activations kept at m->act bytes. */
static void *act_row(const moe_layer *m, void *base, size_t row) {
    return (char *)base + row * m->Fe * m->act;
}

static int reserve_pairs(moe_layer *m, size_t pairs, moe_err *err) {
    size_t act = moe_k_act_size(m->kc);
    if (act != m->act) m->cap_pairs = m->ep_cap = 0;  /* the precision changed: a, ap again */
    m->act = act;
    if (pairs <= m->cap_pairs) return 0;
    size_t D = m->D, F = m->Fe;
    if (grow((void **)&m->tok, pairs * sizeof(int), err) ||
        grow((void **)&m->xe, pairs * D * sizeof(float), err) || grow((void **)&m->ye, pairs * D * sizeof(float), err) ||
        grow((void **)&m->dxe, pairs * D * sizeof(float), err) || grow((void **)&m->h1, pairs * F * sizeof(float), err) ||
        grow((void **)&m->h3, pairs * F * sizeof(float), err) || grow(&m->a, pairs * F * act, err) ||
        grow((void **)&m->dh1, pairs * F * sizeof(float), err) || grow((void **)&m->dh3, pairs * F * sizeof(float), err)) {
        m->cap_pairs = 0;
        return -1;
    }
    m->cap_pairs = pairs;
    return 0;
}

/* ---- dispatch ----------------------------------------------------------- */

/* From the gates, the rows of every slot: expert e takes the tokens with a
 * non-zero gate in token order; shared slots take every token. */
static int build_plan(moe_layer *m, size_t N, moe_err *err) {
    size_t E = m->E, slots = E + m->S;
    for (size_t j = 0; j <= slots; j++) m->offset[j] = 0;
    for (size_t t = 0; t < N; t++)
        for (size_t e = 0; e < E; e++) m->offset[e + 1] += m->gates[t * E + e] != 0.0f;
    for (size_t j = E; j < slots; j++) m->offset[j + 1] = N;
    for (size_t j = 0; j < slots; j++) m->offset[j + 1] += m->offset[j];
    m->pairs = m->offset[slots];
    if (reserve_pairs(m, m->pairs, err)) return -1;
    size_t *fill = m->offset;  /* walk each expert's next free row */
    size_t next[E ? E : 1];
    for (size_t e = 0; e < E; e++) next[e] = fill[e];
    for (size_t t = 0; t < N; t++)
        for (size_t e = 0; e < E; e++) {
            int active = m->gates[t * E + e] != 0.0f;
            m->row_of[t * E + e] = active ? (int)next[e] : -1;
            if (active) m->tok[next[e]++] = (int)t;
        }
    for (size_t e = 0; e < E; e++) assert(next[e] == m->offset[e + 1]);  /* each expert's rows all filled */
    for (size_t j = E; j < slots; j++)
        for (size_t t = 0; t < N; t++) m->tok[m->offset[j] + t] = (int)t;
    return 0;
}

/* Weight of row r of slot j in the output: the gate (times c0 with the
 * shared gate) for a routed expert, 1 (or c1) for a shared one. */
static inline float row_gate(const moe_layer *m, size_t j, size_t r) {
    size_t t = (size_t)m->tok[r];
    return j < m->E ? m->gates[t * m->E + j] * m->mix[2 * t] : m->mix[2 * t + 1];
}

/* One expert on n rows: ye[n,D] = W2(silu(W1 xe) * W3 xe), keeping h1, h3,
 * a [n,Fe] for the backward (a in the products' precision). */
static void chain_forward(moe_k_ctx *kc, expert_w w, size_t n, size_t D, size_t F, const float *xe, float *h1,
                          float *h3, void *a, float *ye) {
    moe_k_matmul_forward(kc, h1, xe, w.w1, n, D, F, 0.0f);
    moe_k_matmul_forward(kc, h3, xe, w.w3, n, D, F, 0.0f);
    moe_k_swiglu_forward_act(kc, a, h1, h3, n * F);
    moe_k_matmul_forward_act(kc, ye, a, w.w2, n, F, D, 0.0f);
}

/* Its backward: d[n,D] holds dye on entry and dxe on return; adds the
 * weight gradients; dh1, dh3 [n,Fe] scratch. */
static void chain_backward(moe_k_ctx *kc, expert_w w, size_t n, size_t D, size_t F, float *d, const float *xe,
                           const float *h1, const float *h3, const void *a, float *dh1, float *dh3) {
    float *da = dh1;  /* read by swiglu backward before dh1 is written */
    moe_k_matmul_backward_act(kc, da, w.dw2, d, a, w.w2, n, F, D, 0);
    moe_k_swiglu_backward(dh1, dh3, da, h1, h3, n * F);
    moe_k_matmul_backward(kc, NULL, w.dw1, dh1, xe, w.w1, n, D, F, 0);
    moe_k_matmul_backward(kc, NULL, w.dw3, dh3, xe, w.w3, n, D, F, 0);
    /* dxe = dh1 W1 + dh3 W3 (overwrites dye, no longer needed) */
    moe_k_matmul_backward(kc, d, NULL, dh1, NULL, w.w1, n, D, F, 0);
    moe_k_matmul_backward(kc, d, NULL, dh3, NULL, w.w3, n, D, F, 1);
}

/* Slot j forward: gather its tokens' rows of x[N,D], then its chain. */
static void expert_forward(moe_layer *m, size_t j, const float *x) {
    size_t D = m->D, F = m->Fe, r0 = m->offset[j], n = m->offset[j + 1] - r0;
    for (size_t r = r0; r < r0 + n; r++) {
        assert(m->tok[r] >= 0 && (size_t)m->tok[r] < m->N);
        memcpy(m->xe + r * D, x + (size_t)m->tok[r] * D, D * sizeof(float));
    }
    chain_forward(m->kc, slot_weights(m, j), n, D, F, m->xe + r0 * D, m->h1 + r0 * F, m->h3 + r0 * F,
                  act_row(m, m->a, r0), m->ye + r0 * D);
}

/* The gate gradients of slot j's pairs and dye = gate * dy into dxe's rows. */
static void slot_dye(moe_layer *m, size_t j, const float *dy) {
    size_t D = m->D, E = m->E, r0 = m->offset[j], n = m->offset[j + 1] - r0;
    float *dye = m->dxe + r0 * D;
    for (size_t r = r0; r < r0 + n; r++) {
        size_t t = (size_t)m->tok[r];
        float g = row_gate(m, j, r);
        const float *dyt = dy + t * D, *ye = m->ye + r * D;
        double dot = 0.0;
        for (size_t d = 0; d < D; d++) {
            dot += (double)dyt[d] * ye[d];
            dye[(r - r0) * D + d] = g * dyt[d];
        }
        if (j < E) m->dgates[t * E + j] = (float)(dot * m->mix[2 * t]);
    }
}

/* Slot j backward from dy[N,D]: the gate gradients of its pairs, its weight
 * gradients, and dxe, the gradient of its gathered rows. */
static void expert_backward(moe_layer *m, size_t j, const float *dy) {
    size_t D = m->D, F = m->Fe, r0 = m->offset[j], n = m->offset[j + 1] - r0;
    slot_dye(m, j, dy);
    chain_backward(m->kc, slot_weights(m, j), n, D, F, m->dxe + r0 * D, m->xe + r0 * D, m->h1 + r0 * F,
                   m->h3 + r0 * F, act_row(m, m->a, r0), m->dh1 + r0 * F, m->dh3 + r0 * F);
}

/* Runs work(m, j, arg) for every slot with rows. Loads are uneven (ReLU
 * routing above all), so: a slot with more rows than an equal share of the
 * threads runs alone first, every thread inside its GEMMs; the others run
 * side by side, one thread each, largest first so the threads finish
 * together. Each slot writes only its own rows and weights, so the result
 * does not depend on the schedule. */
static void for_each_slot(moe_layer *m, size_t j0, void (*work)(moe_layer *, size_t, const float *),
                          const float *arg) {
    /* slots [j0, E + S): 0 for all, E for the shared ones only (expert parallel) */
    size_t slots = m->E + m->S - j0, threads = (size_t)omp_get_max_threads();
    size_t total = m->offset[m->E + m->S] - m->offset[j0];
    for (size_t j = 0; j < slots; j++) m->order[j] = j0 + j;
    for (size_t i = 1; i < slots; i++)  /* insertion sort by falling row count */
        for (size_t k = i; k > 0; k--) {
            size_t a = m->order[k - 1], b = m->order[k];
            if (m->offset[a + 1] - m->offset[a] >= m->offset[b + 1] - m->offset[b]) break;
            m->order[k - 1] = b;
            m->order[k] = a;
        }
    size_t first = 0;
    while (first < slots && threads > 1) {
        size_t j = m->order[first], rows = m->offset[j + 1] - m->offset[j];
        if (rows * threads <= total) break;
        work(m, j, arg);
        first++;
    }
    #pragma omp parallel for schedule(dynamic, 1)
    for (size_t i = first; i < slots; i++) {
        size_t j = m->order[i];
        if (m->offset[j + 1] > m->offset[j]) work(m, j, arg);
    }
}

/* ---- expert parallel ------------------------------------------------------ */

static int ep_on(const moe_ffn_ctx *ctx) { return ctx->ep && ctx->ep->size > 1; }

/* Rows of expert e in the plan: [offset[e], offset[e + 1]). */
static size_t expert_rows(const moe_layer *m, size_t e) { return m->offset[e + 1] - m->offset[e]; }

/* The group's routed rows for this rank's slots: counts exchanged (by
 * position: this rank's rows for each owner's slots), and the layout of
 * what will be sent (in position order, so each owner's rows are one
 * contiguous block) and of what arrives. */
static int ep_exchange_plan(moe_layer *m, moe_comm *ep, moe_err *err) {
    size_t P = (size_t)ep->size, El = m->E / P, D = m->D, F = m->Fe;
    const int *at = m->place.at;
    if (!m->cnt_send) {
        m->cnt_send = moe_calloc(P * El, sizeof(int), err);
        m->cnt_recv = moe_calloc(P * El, sizeof(int), err);
        m->scnt = moe_calloc(P, sizeof(size_t), err);
        m->rcnt = moe_calloc(P, sizeof(size_t), err);
        m->src_ofs = moe_calloc(P * El, sizeof(size_t), err);
        m->exp_ofs = moe_calloc(P * El, sizeof(size_t), err);
        m->pofs = moe_calloc(m->E, sizeof(size_t), err);
        if (!m->cnt_send || !m->cnt_recv || !m->scnt || !m->rcnt || !m->src_ofs || !m->exp_ofs || !m->pofs)
            return -1;
    }
    size_t per[P], sent = 0;
    for (size_t q = 0; q < P; q++) {
        per[q] = El;
        m->scnt[q] = 0;
        for (size_t el = 0; el < El; el++) {
            size_t e = (size_t)at[q * El + el], n = expert_rows(m, e);
            m->cnt_send[q * El + el] = (int)n;
            m->pofs[e] = sent;
            sent += n;
            m->scnt[q] += n * D;
        }
    }
    if (moe_comm_alltoallv(ep, m->cnt_send, per, m->cnt_recv, per, MOE_I32, err)) return -1;
    size_t R = 0;
    for (size_t s = 0; s < P; s++) {
        m->rcnt[s] = 0;
        for (size_t el = 0; el < El; el++) {
            m->src_ofs[s * El + el] = R;
            R += (size_t)m->cnt_recv[s * El + el];
            m->rcnt[s] += (size_t)m->cnt_recv[s * El + el] * D;
        }
    }
    size_t at_row = 0;  /* by slot, then source: the group's token order */
    for (size_t el = 0; el < El; el++)
        for (size_t s = 0; s < P; s++) {
            m->exp_ofs[s * El + el] = at_row;
            at_row += (size_t)m->cnt_recv[s * El + el];
        }
    m->R = R;
    if (sent > m->xs_cap) {
        if (grow((void **)&m->xs, sent * D * sizeof(float), err)) { m->xs_cap = 0; return -1; }
        m->xs_cap = sent;
    }
    if (R > m->ep_cap) {
        float **rows[] = {&m->xr, &m->xp, &m->yp}, **hid[] = {&m->h1p, &m->h3p, &m->dh1p, &m->dh3p};
        for (size_t i = 0; i < 3; i++) if (grow((void **)rows[i], R * D * sizeof(float), err)) return -1;
        for (size_t i = 0; i < 4; i++) if (grow((void **)hid[i], R * F * sizeof(float), err)) return -1;
        if (grow(&m->ap, R * F * m->act, err)) return -1;
        m->ep_cap = R;
    }
    return 0;
}

/* Moves this rank's routed [rows, D] between the plan's expert order and
 * the position order it is sent in. */
static void ep_reorder(const moe_layer *m, float *to, const float *from, int to_positions) {
    size_t D = m->D;
    #pragma omp parallel for schedule(static)
    for (size_t e = 0; e < m->E; e++) {
        size_t n = expert_rows(m, e), plan = m->offset[e], pos = m->pofs[e];
        if (n == 0) continue;
        memcpy(to + (to_positions ? pos : plan) * D, from + (to_positions ? plan : pos) * D, n * D * sizeof(float));
    }
}

/* Moves received [R, D] rows between the by-source and the by-slot layouts. */
static void ep_permute(const moe_layer *m, size_t P, float *to, const float *from, int to_slot) {
    size_t El = m->E / P, D = m->D;
    #pragma omp parallel for schedule(static)
    for (size_t b = 0; b < P * El; b++) {
        size_t n = (size_t)m->cnt_recv[b], src = m->src_ofs[b], byslot = m->exp_ofs[b];
        if (n == 0) continue;  /* a rank may receive no rows at all: its buffers are then NULL */
        memcpy(to + (to_slot ? byslot : src) * D, from + (to_slot ? src : byslot) * D, n * D * sizeof(float));
    }
}

/* Rows of slot el in the by-slot layout: [first, first + n). */
static void ep_rows(const moe_layer *m, size_t P, size_t el, size_t *first, size_t *n) {
    size_t El = m->E / P;
    *first = m->exp_ofs[el];  /* block (source 0, el) starts the slot */
    *n = 0;
    for (size_t s = 0; s < P; s++) *n += (size_t)m->cnt_recv[s * El + el];
}

/* Routed experts across the group, forward: this rank's routed rows go to
 * their owners, come back as ye. */
static int ep_forward(moe_layer *m, const float *x, moe_comm *ep, moe_err *err) {
    size_t P = (size_t)ep->size, El = m->E / P, D = m->D, F = m->Fe;
    if (ep_exchange_plan(m, ep, err)) return -1;
    /* the routed rows of x, gathered straight into position order */
    #pragma omp parallel for schedule(static)
    for (size_t e = 0; e < m->E; e++)
        for (size_t i = 0; i < expert_rows(m, e); i++)
            memcpy(m->xs + (m->pofs[e] + i) * D, x + (size_t)m->tok[m->offset[e] + i] * D, D * sizeof(float));
    if (moe_comm_alltoallv(ep, m->xs, m->scnt, m->xr, m->rcnt, MOE_F32, err)) return -1;
    ep_permute(m, P, m->xp, m->xr, 1);
    #pragma omp parallel for schedule(dynamic, 1)
    for (size_t el = 0; el < El; el++) {
        size_t r0, n;
        ep_rows(m, P, el, &r0, &n);
        if (n) chain_forward(m->kc, slot_weights(m, el), n, D, F, m->xp + r0 * D, m->h1p + r0 * F,
                             m->h3p + r0 * F, act_row(m, m->ap, r0), m->yp + r0 * D);
    }
    ep_permute(m, P, m->xr, m->yp, 0);  /* xr now holds the results by source */
    if (moe_comm_alltoallv(ep, m->xr, m->rcnt, m->xs, m->scnt, MOE_F32, err)) return -1;
    ep_reorder(m, m->ye, m->xs, 0);
    return 0;
}

/* And backward: dye (in dxe's routed rows) goes to the owners, which add
 * their experts' weight gradients and send dxe back. */
static int ep_backward(moe_layer *m, const float *dy, moe_comm *ep, moe_err *err) {
    size_t P = (size_t)ep->size, El = m->E / P, D = m->D, F = m->Fe;
    #pragma omp parallel for schedule(dynamic, 1)
    for (size_t j = 0; j < m->E; j++) slot_dye(m, j, dy);
    ep_reorder(m, m->xs, m->dxe, 1);
    if (moe_comm_alltoallv(ep, m->xs, m->scnt, m->xr, m->rcnt, MOE_F32, err)) return -1;
    ep_permute(m, P, m->yp, m->xr, 1);
    #pragma omp parallel for schedule(dynamic, 1)
    for (size_t el = 0; el < El; el++) {
        size_t r0, n;
        ep_rows(m, P, el, &r0, &n);
        if (n) chain_backward(m->kc, slot_weights(m, el), n, D, F, m->yp + r0 * D, m->xp + r0 * D,
                              m->h1p + r0 * F, m->h3p + r0 * F, act_row(m, m->ap, r0), m->dh1p + r0 * F,
                              m->dh3p + r0 * F);
    }
    ep_permute(m, P, m->xr, m->yp, 0);
    if (moe_comm_alltoallv(ep, m->xr, m->rcnt, m->xs, m->scnt, MOE_F32, err)) return -1;
    ep_reorder(m, m->dxe, m->xs, 0);
    return 0;
}

/* ---- zero-computation experts (MoE++) ------------------------------------ */

/* y[N,D] += each token's zero-computation experts: copy g x, constant
 * g (a1 x + a2 v), a = softmax(Wk x) kept in m->alpha. */
static void zc_forward(moe_layer *m, float *y, const float *x, size_t N) {
    size_t D = m->D, Et = m->Et, c0 = m->E + m->Z, k0 = c0 + m->C;
    #pragma omp parallel for schedule(static)
    for (size_t t = 0; t < N; t++) {
        const float *xt = x + t * D, *g = m->ga + t * Et;
        float *yt = y + t * D;
        for (size_t j = c0; j < k0; j++)
            if (g[j] != 0.0f)
                for (size_t d = 0; d < D; d++) yt[d] += g[j] * xt[d];
        for (size_t q = 0; q < m->K; q++) {
            const float *w = m->wk + q * 2 * D, *v = m->vk + q * D;
            float z[2] = {0.0f, 0.0f}, *a = m->alpha + (t * m->K + q) * 2;
            for (size_t d = 0; d < D; d++) { z[0] += w[d] * xt[d]; z[1] += w[D + d] * xt[d]; }
            moe_router_softmax(a, z, 2);
            float gq = g[k0 + q];
            if (gq != 0.0f)
                for (size_t d = 0; d < D; d++) yt[d] += gq * (a[0] * xt[d] + a[1] * v[d]);
        }
    }
}

/* Their backward from dy: the gate gradients dga[t, E..Et), dx += through
 * copy and constant experts (dx holds the FFN part), and dWk, dv. */
static void zc_backward(moe_layer *m, float *dx, const float *dy, const float *x, size_t N) {
    size_t D = m->D, Et = m->Et, c0 = m->E + m->Z, k0 = c0 + m->C;
    for (size_t t = 0; t < N; t++) {  /* serial over t: dWk, dv sum over the tokens */
        const float *xt = x + t * D, *dyt = dy + t * D, *g = m->ga + t * Et;
        float *dg = m->dga + t * Et, *dxt = dx + t * D;
        double dyx = 0.0;
        for (size_t d = 0; d < D; d++) dyx += (double)dyt[d] * xt[d];
        for (size_t j = m->E; j < c0; j++) dg[j] = 0.0f;  /* zero experts */
        for (size_t j = c0; j < k0; j++) {
            dg[j] = (float)dyx;
            if (g[j] != 0.0f)
                for (size_t d = 0; d < D; d++) dxt[d] += g[j] * dyt[d];
        }
        for (size_t q = 0; q < m->K; q++) {
            const float *w = m->wk + q * 2 * D, *v = m->vk + q * D, *a = m->alpha + (t * m->K + q) * 2;
            double dyv = 0.0;
            for (size_t d = 0; d < D; d++) dyv += (double)dyt[d] * v[d];
            float gq = g[k0 + q];
            dg[k0 + q] = (float)(a[0] * dyx + a[1] * dyv);
            if (gq == 0.0f) continue;
            /* da = g (dy.x, dy.v); dz = a (da - a.da) through the 2-way softmax */
            double da0 = gq * dyx, da1 = gq * dyv, ad = a[0] * da0 + a[1] * da1;
            float dz0 = (float)(a[0] * (da0 - ad)), dz1 = (float)(a[1] * (da1 - ad));
            float *dw = m->dwk + q * 2 * D, *dv = m->dvk + q * D;
            for (size_t d = 0; d < D; d++) {
                dxt[d] += gq * a[0] * dyt[d] + dz0 * w[d] + dz1 * w[D + d];
                dw[d] += dz0 * xt[d];
                dw[D + d] += dz1 * xt[d];
                dv[d] += gq * a[1] * dyt[d];
            }
        }
    }
}

static int layer_forward(moe_ffn *f, float *y, const float *x, size_t N,
                         const moe_ffn_ctx *ctx, moe_err *err) {
    moe_layer *m = f->impl;
    size_t D = m->D, E = m->E, slots = E + m->S;
    if (reserve_rows(m, N, err)) return -1;
    m->N = N;
    m->kc = ctx->kc;
    int zc = m->Et > E;  /* the router sees [N, Et], the FFN experts the first E columns */
    float *lg = zc ? m->la : m->logits, *gt = zc ? m->ga : m->gates;
    if (m->wr) moe_k_matmul_forward(NULL, lg, x, m->wr, N, D, m->Et, 0.0f);
    if (m->wt) {  /* learned_hash: the logits of a token are its row of the table */
        if (!ctx->tokens) return moe_errf(err, "learned_hash router: the batch's token ids are needed");
        for (size_t t = 0; t < N; t++) {
            int v = ctx->tokens[t];
            if (v < 0 || v >= f->cfg->vocab_size)
                return moe_errf(err, "learned_hash router: token id %d outside the vocabulary of %d", v,
                                f->cfg->vocab_size);
            memcpy(m->logits + t * E, m->wt + (size_t)v * E, E * sizeof(float));
        }
    }
    if (m->router->ops->route(m->router, gt, m->wr || m->wt ? lg : NULL, N, ctx, &m->aux, err))
        return -1;
    double zc_active = 0.0;
    for (size_t t = 0; zc && t < N; t++) {
        memcpy(m->gates + t * E, m->ga + t * m->Et, E * sizeof(float));
        for (size_t j = E; j < m->Et; j++) zc_active += m->ga[t * m->Et + j] != 0.0f;
    }
    if (build_plan(m, N, err)) return -1;
    moe_prof_mark(ctx->prof, PROF_ROUTER);
    if (ctx->training && ctx->rs && !ctx->prepass) {  /* the step's sparsity (METHOD §2.2), every router,
                                                       * over all the experts it chooses among */
        ctx->rs->active_pairs += (double)m->offset[E] + zc_active;
        ctx->rs->total_pairs += (double)N * (double)m->Et;
    }
    if (ctx->training && !ctx->prepass)  /* the loads that expert parallel's placement follows */
        for (size_t e = 0; e < E; e++) m->place.rows[e] += (double)expert_rows(m, e);
    /* the shared gate c[N,2] = softmax(x Wc^T + bc), else c = (1, 1) */
    for (size_t t = 0; t < N; t++) m->mix[2 * t] = m->mix[2 * t + 1] = 1.0f;
    if (m->gated) {
        moe_k_matmul_forward(NULL, m->mix, x, m->wc, N, D, 2, 0.0f);
        for (size_t t = 0; t < N; t++) {
            float z[2] = {m->mix[2 * t] + m->bc[0], m->mix[2 * t + 1] + m->bc[1]};
            moe_router_softmax(m->mix + 2 * t, z, 2);
        }
    }
    /* experts: independent slots, each a gather and three GEMMs; across an
     * expert-parallel group the routed ones run on their owners */
    if (ep_on(ctx)) {
        if (ep_forward(m, x, ctx->ep, err)) return -1;
        for_each_slot(m, E, expert_forward, x);
    } else {
        for_each_slot(m, 0, expert_forward, x);
    }
    /* combine: each token adds its experts in a fixed order; r = routed
     * sum, s = shared sum, y = c0 r + c1 s */
    #pragma omp parallel for schedule(static)
    for (size_t t = 0; t < N; t++) {
        float *rt = m->gated ? m->rsum + t * D : y + t * D;
        float *st = m->gated ? m->ssum + t * D : y + t * D;
        memset(rt, 0, D * sizeof(float));
        memset(st, 0, D * sizeof(float));
        for (size_t e = 0; e < E; e++) {
            int r = m->row_of[t * E + e];
            if (r < 0) continue;
            float g = m->gates[t * E + e];
            const float *ye = m->ye + (size_t)r * D;
            for (size_t d = 0; d < D; d++) rt[d] += g * ye[d];
        }
        for (size_t j = E; j < slots; j++) {
            const float *ye = m->ye + (m->offset[j] + t) * D;
            for (size_t d = 0; d < D; d++) st[d] += ye[d];
        }
        if (m->gated)
            for (size_t d = 0; d < D; d++) y[t * D + d] = m->mix[2 * t] * rt[d] + m->mix[2 * t + 1] * st[d];
    }
    if (zc) zc_forward(m, y, x, N);
    f->aux_loss = m->aux;
    moe_prof_mark(ctx->prof, PROF_EXPERTS);  /* the experts and the combine: here, so that a
                                               * CartesianMoE's second router is not charged them */
    return 0;
}

static int layer_backward(moe_ffn *f, float *dx, const float *dy, const float *x,
                          size_t N, const moe_ffn_ctx *ctx, moe_err *err) {
    moe_layer *m = f->impl;
    size_t D = m->D, E = m->E, slots = E + m->S;
    m->kc = ctx->kc;
    memset(m->dgates, 0, N * E * sizeof(float));
    if (ep_on(ctx)) {
        if (ep_backward(m, dy, ctx->ep, err)) return -1;
        for_each_slot(m, E, expert_backward, dy);
    } else {
        for_each_slot(m, 0, expert_backward, dy);
    }
    /* scatter the input gradients back, in a fixed order per token */
    #pragma omp parallel for schedule(static)
    for (size_t t = 0; t < N; t++) {
        float *dxt = dx + t * D;
        memset(dxt, 0, D * sizeof(float));
        for (size_t e = 0; e < E; e++) {
            int r = m->row_of[t * E + e];
            if (r < 0) continue;
            const float *d = m->dxe + (size_t)r * D;
            for (size_t i = 0; i < D; i++) dxt[i] += d[i];
        }
        for (size_t j = E; j < slots; j++) {
            const float *d = m->dxe + (m->offset[j] + t) * D;
            for (size_t i = 0; i < D; i++) dxt[i] += d[i];
        }
    }
    /* through the shared gate: dc = (dy.r, dy.s), dz = c * (dc - c.dc) */
    if (m->gated) {
        float *dz = m->dlogits;  /* [N, 2] scratch, before the router uses it */
        for (size_t t = 0; t < N; t++) {
            double dc0 = 0.0, dc1 = 0.0;
            for (size_t d = 0; d < D; d++) {
                dc0 += (double)dy[t * D + d] * m->rsum[t * D + d];
                dc1 += (double)dy[t * D + d] * m->ssum[t * D + d];
            }
            double c0 = m->mix[2 * t], c1 = m->mix[2 * t + 1], cd = c0 * dc0 + c1 * dc1;
            dz[2 * t] = (float)(c0 * (dc0 - cd));
            dz[2 * t + 1] = (float)(c1 * (dc1 - cd));
            m->dbc[0] += dz[2 * t];
            m->dbc[1] += dz[2 * t + 1];
        }
        moe_k_matmul_backward(NULL, dx, m->dwc, dz, x, m->wc, N, D, 2, 1);
    }
    int zc = m->Et > E;
    if (zc) {  /* the zero-computation experts; the router's gradients [N, Et] */
        zc_backward(m, dx, dy, x, N);
        for (size_t t = 0; t < N; t++) memcpy(m->dga + t * m->Et, m->dgates + t * E, E * sizeof(float));
    }
    /* through the router (a router without weight has no gradient to pass) */
    if (!m->wr && !m->wt) return 0;
    moe_prof_mark(ctx->prof, PROF_EXPERTS);
    if (zc) {
        if (m->router->ops->backward(m->router, m->dla, m->dga, m->la, m->ga, N, ctx, err)) return -1;
        moe_k_matmul_backward(NULL, dx, m->dwr, m->dla, x, m->wr, N, D, m->Et, 1);
        moe_prof_mark(ctx->prof, PROF_ROUTER);
        return 0;
    }
    if (m->router->ops->backward(m->router, m->dlogits, m->dgates, m->logits, m->gates, N, ctx, err))
        return -1;
    if (m->wt)  /* a table row per token: its gradient is the token's dlogits; nothing reaches x */
        for (size_t t = 0; t < N; t++) {
            assert(ctx->tokens[t] >= 0 && ctx->tokens[t] < f->cfg->vocab_size);  /* checked by the forward */
            for (size_t e = 0; e < E; e++) m->dwt[(size_t)ctx->tokens[t] * E + e] += m->dlogits[t * E + e];
        }
    else
        moe_k_matmul_backward(NULL, dx, m->dwr, m->dlogits, x, m->wr, N, D, E, 1);
    moe_prof_mark(ctx->prof, PROF_ROUTER);
    return 0;
}

/* ---- statistics --------------------------------------------------------- */

static int layer_stats(const moe_ffn *f, moe_buf *out) {
    const moe_layer *m = f->impl;
    size_t routed = m->offset[m->E];
    double n[3] = {0, 0, 0};  /* MoE++: zero, copy, constant experts chosen */
    size_t c0 = m->E + m->Z, k0 = c0 + m->C;
    for (size_t t = 0; m->Et > m->E && t < m->N; t++)
        for (size_t j = m->E; j < m->Et; j++) n[j < c0 ? 0 : j < k0 ? 1 : 2] += m->ga[t * m->Et + j] != 0.0f;
    /* sparsity over every expert the router chooses among; active: FFN experts only (compute) */
    double chosen = (double)routed + n[0] + n[1] + n[2];
    double sparsity = m->N ? 1.0 - chosen / ((double)m->N * (double)m->Et) : 0.0;
    double active = m->N ? (double)routed / (double)m->N : 0.0;
    size_t idle = 0;  /* tokens with no routed expert (only the residual and shared experts pass) */
    for (size_t t = 0; t < m->N; t++) {
        size_t e = 0;
        while (e < m->E && m->row_of[t * m->E + e] < 0) e++;
        idle += e == m->E;
    }
    int rc = moe_buf_printf(out, "{\"layer\": %d, \"router\": \"%s\", \"sparsity\": %.9g, "
                            "\"active_per_token\": %.9g, \"no_expert\": %.9g, \"aux_loss\": %.9g, "
                            "\"tokens_per_expert\": [",
                            f->layer, m->router->ops->name, sparsity, active,
                            m->N ? (double)idle / (double)m->N : 0.0, m->aux);
    for (size_t e = 0; e < m->E; e++)
        rc |= moe_buf_printf(out, "%s%zu", e ? ", " : "", m->offset[e + 1] - m->offset[e]);
    rc |= moe_buf_printf(out, "]");
    if (m->Et > m->E)  /* MoE++: experts per token of each zero-computation kind */
        rc |= moe_buf_printf(out, ", \"zero_per_token\": %.9g, \"copy_per_token\": %.9g, \"const_per_token\": %.9g",
                             m->N ? n[0] / m->N : 0.0, m->N ? n[1] / m->N : 0.0, m->N ? n[2] / m->N : 0.0);
    if (m->router->ops->stats_json) rc |= m->router->ops->stats_json(m->router, out);
    rc |= moe_buf_printf(out, "}");
    return rc ? -1 : 0;
}

static int layer_routing(const moe_ffn *f, int which, const float **gates, size_t *N, size_t *E) {
    const moe_layer *m = f->impl;
    if (which != 0 || !m->gates) return -1;
    *gates = m->gates;
    *N = m->N;
    *E = m->E;
    return 0;
}

static moe_placement *layer_placement(moe_ffn *f, int which) {
    moe_layer *m = f->impl;
    return which == 0 ? &m->place : NULL;
}

static moe_router *layer_router(moe_ffn *f, int which) {
    moe_layer *m = f->impl;
    return which == 0 ? m->router : NULL;
}

static void layer_destroy(moe_ffn *f) {
    moe_layer *m = f->impl;
    if (m) {
        moe_router_destroy(m->router);
        void *bufs[] = {m->logits, m->gates, m->dgates, m->dlogits, m->row_of, m->offset, m->order, m->tok,
                        m->xe, m->ye, m->dxe, m->h1, m->h3, m->a, m->dh1, m->dh3,
                        m->mix, m->rsum, m->ssum, m->cnt_send, m->cnt_recv, m->scnt, m->rcnt,
                        m->src_ofs, m->exp_ofs, m->pofs, m->xs, m->place.at, m->place.rows, m->xr, m->xp, m->yp, m->h1p, m->h3p, m->ap,
                        m->dh1p, m->dh3p, m->la, m->ga, m->dla, m->dga, m->alpha};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
        free(m);
    }
    free(f);
}

static const moe_ffn_ops MOE_OPS = {
    .kind = "moe",
    .layout = layer_layout,
    .forward = layer_forward,
    .backward = layer_backward,
    .stats_json = layer_stats,
    .routing = layer_routing,
    .placement = layer_placement,
    .router = layer_router,
    .destroy = layer_destroy,
};

int moe_ffn_moe_create(const moe_config *cfg, int layer, moe_ffn **out, moe_err *err) {
    moe_ffn *f = moe_calloc(1, sizeof *f, err);
    moe_layer *m = f ? moe_calloc(1, sizeof *m, err) : NULL;
    if (!m) { free(f); return -1; }
    f->ops = &MOE_OPS;
    f->cfg = cfg;
    f->layer = layer;
    f->impl = m;
    m->D = (size_t)cfg->hidden;
    m->Fe = (size_t)(cfg->ffn_dim / cfg->granularity);
    m->E = (size_t)cfg->n_experts * (size_t)cfg->granularity;
    m->S = (size_t)cfg->n_shared_experts;
    m->Z = (size_t)cfg->n_zero_experts;
    m->C = (size_t)cfg->n_copy_experts;
    m->K = (size_t)cfg->n_const_experts;
    m->Et = m->E + m->Z + m->C + m->K;
    m->gated = cfg->shared_gate && m->S > 0;
    m->offset = moe_calloc(m->E + m->S + 1, sizeof(size_t), err);
    m->order = m->offset ? moe_calloc(m->E + m->S, sizeof(size_t), err) : NULL;
    m->place.E = m->E;
    m->place.at = m->order ? moe_calloc(m->E ? m->E : 1, sizeof(int), err) : NULL;
    m->place.rows = m->place.at ? moe_calloc(m->E ? m->E : 1, sizeof(double), err) : NULL;
    for (size_t e = 0; m->place.rows && e < m->E; e++) m->place.at[e] = (int)e;
    if (!m->place.rows || moe_router_create(cfg, &m->router, err)) { layer_destroy(f); return -1; }
    m->router->layer = layer;
    *out = f;
    return 0;
}

const moe_ffn_kind moe_ffn_kind_moe = {
    .name = "moe", .create = moe_ffn_moe_create, .routed = 1, .uses_router = 1, .router_options = 1,
    .exportable = 1, .expert_parallel = 1, .upcycle_target = 1,
};
