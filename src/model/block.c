/* block.c — one transformer block (METHOD §1), the one place its equations
 * are written:
 *     mid = x + Wo·Attn(RoPE(Wq·n1), RoPE(Wk·n1), Wv·n1),  n1 = RMSNorm(x)
 *     out = mid + FFN(n2),                                 n2 = RMSNorm(mid)
 * Its forward serves training (model.c: B sequences of T tokens from
 * position 0, keeping what the backward reads) and decoding (decode.c: the
 * next tokens of one sequence, attending to the KV cache); its backward is
 * training's. */
#include <string.h>

#include "moe/model/decode.h"
#include "moe/kernels/kernels.h"
#include "moe/model/model.h"

/* q[nq], k[nk], v[nk] rounded to bf16 in place (precision bf16: what
 * moe_k_attention_forward's products read; the cache keeps the rounded rows). */
static void round_bf16(float *q, float *k, float *v, size_t nq, size_t nk) {
    for (size_t i = 0; i < nq; i++) q[i] = moe_k_round_bf16(q[i]);
    for (size_t i = 0; i < nk; i++) { k[i] = moe_k_round_bf16(k[i]); v[i] = moe_k_round_bf16(v[i]); }
}

int moe_block_forward(moe_model *m, int l, const float *x, float *mid, float *out, const block_acts *a,
                      moe_kv_cache *kv, moe_ffn_ctx *ctx, moe_err *err) {
    const moe_config *c = &m->cfg;
    moe_block *b = &m->blocks[l];
    size_t B = ctx->B, T = ctx->T, n = B * T, D = (size_t)c->hidden;
    size_t H = (size_t)c->n_heads, KV = (size_t)c->n_kv_heads, hd = D / H, qd = H * hd, kvd = KV * hd;
    float eps = (float)c->norm_eps;
    /* where this pass's keys and values go, and the rotary angles of its
     * first position: training, a's buffers and position 0; decoding, the
     * cache's rows of positions p0 = kv->len.. */
    float *K = a->k, *V = a->v;
    const float *cos_t = m->rope_cos, *sin_t = m->rope_sin;
    size_t p0 = 0;
    if (kv) {
        p0 = kv->len;
        K = kv->k + (size_t)l * kv->max_len * kvd + p0 * kvd;
        V = kv->v + (size_t)l * kv->max_len * kvd + p0 * kvd;
        cos_t = kv->rope_cos + p0 * (hd / 2);
        sin_t = kv->rope_sin + p0 * (hd / 2);
    }

    moe_k_rmsnorm_forward(a->ln1, a->rstd1, x, b->attn_norm, n, D, eps);
    moe_prof_mark(ctx->prof, PROF_NORMS);
    moe_k_matmul_forward(m->kc, a->q, a->ln1, b->wq, n, D, qd, 0.0f);
    moe_k_matmul_forward(m->kc, K, a->ln1, b->wk, n, D, kvd, 0.0f);
    moe_k_matmul_forward(m->kc, V, a->ln1, b->wv, n, D, kvd, 0.0f);
    moe_k_rope(a->q, cos_t, sin_t, B, T, H, hd, 0);
    moe_k_rope(K, cos_t, sin_t, B, T, KV, hd, 0);
    if (!kv) {
        moe_k_attention_forward(moe_k_ctx_precision(m->kc), a->attn_out, a->lse, m->dscratch, a->q, K, V,
                            B, T, H, KV, hd);
    } else {
        if (moe_k_ctx_precision(m->kc) == MOE_K_BF16)  /* attention's products read them rounded, as the forward's */
            round_bf16(a->q, K, V, n * qd, n * kvd);
        float *K0 = K - p0 * kvd, *V0 = V - p0 * kvd;  /* the layer's cache from position 0 */
        moe_k_attention_cached(a->attn_out, kv->scores, a->q, K0, V0, n, p0, H, KV, hd);
    }
    /* mid = x + attn_out Wo^T */
    if (mid != x) memcpy(mid, x, n * D * sizeof(float));
    moe_k_matmul_forward(m->kc, mid, a->attn_out, b->wo, n, qd, D, 1.0f);
    moe_prof_mark(ctx->prof, PROF_ATTENTION);
    moe_k_rmsnorm_forward(a->ln2, a->rstd2, mid, b->ffn_norm, n, D, eps);
    moe_prof_mark(ctx->prof, PROF_NORMS);
    /* out = mid + FFN(ln2) */
    ctx->residual = mid;
    if (b->ffn->ops->forward(b->ffn, out, a->ln2, n, ctx, err))
        return moe_err_prefix(err, "layer %d ffn", l);
    moe_k_add(out, mid, n * D);
    moe_prof_mark(ctx->prof, b->ffn->ops->routing ? PROF_EXPERTS : PROF_FFN);
    return 0;
}

int moe_block_backward(moe_model *m, int l, moe_ffn_ctx *ctx, moe_err *err) {
    const moe_config *c = &m->cfg;
    moe_block *b = &m->blocks[l];
    block_acts *a = &m->acts[l];
    size_t B = m->B, T = m->T, N = B * T, D = (size_t)c->hidden;
    size_t H = (size_t)c->n_heads, KV = (size_t)c->n_kv_heads, hd = D / H, kvd = KV * hd;
    /* res[l+1] = res_mid + FFN(RMSNorm(res_mid)): dres flows to both */
    ctx->residual = m->res_mid[l];
    ctx->dresidual = m->dres;
    if (b->ffn->ops->backward(b->ffn, m->dln, m->dres, a->ln2, N, ctx, err))
        return moe_err_prefix(err, "layer %d ffn backward", l);
    moe_prof_mark(ctx->prof, b->ffn->ops->routing ? PROF_EXPERTS : PROF_FFN);
    moe_k_rmsnorm_backward(m->dres, b->d_ffn_norm, m->dln, m->res_mid[l], b->ffn_norm,
                       a->rstd2, N, D, 1);
    /* res_mid = res + attn_out Wo^T */
    moe_prof_mark(ctx->prof, PROF_NORMS);
    moe_k_matmul_backward(m->kc, m->dattn, b->d_wo, m->dres, a->attn_out, b->wo, N, D, D, 0);
    moe_k_attention_backward(moe_k_ctx_precision(m->kc), m->dq, m->dk, m->dv, m->dscratch, m->dattn,
                         a->attn_out, a->lse, a->q, a->k,
                         a->v, B, T, H, KV, hd);
    moe_k_rope(m->dq, m->rope_cos, m->rope_sin, B, T, H, hd, 1);
    moe_k_rope(m->dk, m->rope_cos, m->rope_sin, B, T, KV, hd, 1);
    moe_k_matmul_backward(m->kc, m->dln, b->d_wq, m->dq, a->ln1, b->wq, N, D, D, 0);
    moe_k_matmul_backward(m->kc, m->dln, b->d_wk, m->dk, a->ln1, b->wk, N, D, kvd, 1);
    moe_k_matmul_backward(m->kc, m->dln, b->d_wv, m->dv, a->ln1, b->wv, N, D, kvd, 1);
    moe_prof_mark(ctx->prof, PROF_ATTENTION);
    moe_k_rmsnorm_backward(m->dres, b->d_attn_norm, m->dln, m->res[l], b->attn_norm,
                       a->rstd1, N, D, 1);
    moe_prof_mark(ctx->prof, PROF_NORMS);
    return 0;
}
