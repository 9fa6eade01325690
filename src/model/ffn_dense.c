/* ffn_dense.c — the dense SwiGLU feed-forward block:
 *   y = W2( silu(W1 x) * W3 x ),  W1, W3 [F, D], W2 [D, F]
 * stored as gate_proj (W1), up_proj (W3) and down_proj (W2). */
#include "moe/model/ffn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moe/kernels/kernels.h"

typedef struct dense {
    size_t D, F;
    float *w1, *w3, *w2;          /* params */
    float *dw1, *dw3, *dw2;       /* grads */
    float *h1, *h3;               /* [N, F] saved activations */
    void *a;                      /* [N, F] saved, in the products' precision (moe_k_act_size) */
    float *dh1, *dh3;             /* [N, F] scratch */
    size_t cap_rows, cap_a;       /* rows the float buffers hold; bytes of a */
} dense;

static void dense_layout(moe_ffn *f, moe_layout *L, const char *prefix) {
    dense *d = f->impl;
    int64_t in_shape[2] = {(int64_t)d->F, (int64_t)d->D};
    int64_t out_shape[2] = {(int64_t)d->D, (int64_t)d->F};
    double std = f->cfg->init_std, out_std = std / sqrt(2.0 * f->cfg->n_layers);
    d->w1 = moe_layout_add(L, &d->dw1, (float)std, 2, in_shape, "%s.gate_proj.weight", prefix);
    d->w3 = moe_layout_add(L, &d->dw3, (float)std, 2, in_shape, "%s.up_proj.weight", prefix);
    d->w2 = moe_layout_add(L, &d->dw2, (float)out_std, 2, out_shape, "%s.down_proj.weight", prefix);
}

/* Grows the activation buffers to hold N rows, a at `act` bytes an element
 * (never shrinks). */
static int dense_reserve(dense *d, size_t N, size_t act, moe_err *err) {
    if (N * d->F * act > d->cap_a) {
        free(d->a);
        d->a = moe_malloc(N * d->F * act, err);
        d->cap_a = d->a ? N * d->F * act : 0;
        if (!d->a) return -1;
    }
    if (N <= d->cap_rows) return 0;
    float **bufs[] = {&d->h1, &d->h3, &d->dh1, &d->dh3};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        free(*bufs[i]);
        *bufs[i] = moe_malloc(N * d->F * sizeof(float), err);
        if (!*bufs[i]) { d->cap_rows = 0; return -1; }
    }
    d->cap_rows = N;
    return 0;
}

static int dense_forward(moe_ffn *f, float *y, const float *x, size_t N,
                         const moe_ffn_ctx *ctx, moe_err *err) {
    dense *d = f->impl;
    if (dense_reserve(d, N, moe_k_act_size(ctx->kc), err)) return -1;
    moe_k_matmul_forward(ctx->kc, d->h1, x, d->w1, N, d->D, d->F, 0.0f);
    moe_k_matmul_forward(ctx->kc, d->h3, x, d->w3, N, d->D, d->F, 0.0f);
    moe_k_swiglu_forward_act(ctx->kc, d->a, d->h1, d->h3, N * d->F);
    moe_k_matmul_forward_act(ctx->kc, y, d->a, d->w2, N, d->F, d->D, 0.0f);
    f->aux_loss = 0.0;
    return 0;
}

static int dense_backward(moe_ffn *f, float *dx, const float *dy, const float *x,
                          size_t N, const moe_ffn_ctx *ctx, moe_err *err) {
    (void)err;
    dense *d = f->impl;
    float *da = d->dh1;  /* da is consumed before dh1 is written: reuse */
    /* da[N,F] = dy[N,D] @ W2[D,F];  dW2 += dy^T a */
    moe_k_matmul_backward_act(ctx->kc, da, d->dw2, dy, d->a, d->w2, N, d->F, d->D, 0);
    /* moe_k_swiglu_backward reads da[i] before it writes dh1[i] */
    moe_k_swiglu_backward(d->dh1, d->dh3, da, d->h1, d->h3, N * d->F);
    moe_k_matmul_backward(ctx->kc, dx, d->dw1, d->dh1, x, d->w1, N, d->D, d->F, 0);
    moe_k_matmul_backward(ctx->kc, dx, d->dw3, d->dh3, x, d->w3, N, d->D, d->F, 1);
    return 0;
}

static void dense_destroy(moe_ffn *f) {
    dense *d = f->impl;
    if (d) { free(d->h1); free(d->h3); free(d->a); free(d->dh1); free(d->dh3); free(d); }
    free(f);
}

static const moe_ffn_ops DENSE_OPS = {
    .kind = "dense",
    .layout = dense_layout,
    .forward = dense_forward,
    .backward = dense_backward,
    .stats_json = NULL,
    .destroy = dense_destroy,
};

int moe_ffn_dense_create(const moe_config *cfg, int layer, moe_ffn **out, moe_err *err) {
    moe_ffn *f = moe_calloc(1, sizeof *f, err);
    dense *d = f ? moe_calloc(1, sizeof *d, err) : NULL;
    if (!d) { free(f); return -1; }
    d->D = (size_t)cfg->hidden;
    d->F = (size_t)cfg->ffn_dim;
    f->ops = &DENSE_OPS;
    f->cfg = cfg;
    f->layer = layer;
    f->impl = d;
    *out = f;
    return 0;
}

const moe_ffn_kind moe_ffn_kind_dense = {
    .name = "dense", .create = moe_ffn_dense_create, .exportable = 1,
};
