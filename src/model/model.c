/* model.c — the transformer: parameter layout and counts, init, activation
 * buffers, and training's forward and backward (METHOD §1): the embedding,
 * the blocks of block.c in turn (block l reads res[l], leaves res_mid[l]
 * after attention and res[l+1] after its FFN slot), the final norm and the
 * LM head fused with its loss. */
#include "moe/model/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moe/comm/comm.h"
#include "moe/kernels/kernels.h"
#include "moe/util/rng.h"
#include "moe/moe/router.h"

/* ---- parameters ------------------------------------------------------- */

/* Declares every tensor in checkpoint order (see layout.h: called twice). */
static void model_layout(moe_model *m) {
    const moe_config *c = &m->cfg;
    moe_layout *L = &m->layout;
    int64_t D = c->hidden, V = c->vocab_size, hd = c->hidden / c->n_heads;
    int64_t qdim = c->n_heads * hd, kvdim = c->n_kv_heads * hd;
    float std = (float)c->init_std, out_std = (float)(c->init_std / sqrt(2.0 * c->n_layers));

    m->embed = moe_layout_add(L, &m->d_embed, std, 2, (int64_t[]){V, D}, "model.embed_tokens.weight");
    for (int l = 0; l < c->n_layers; l++) {
        moe_block *b = &m->blocks[l];
        char prefix[64];
        snprintf(prefix, sizeof prefix, "model.layers.%d", l);
        b->attn_norm = moe_layout_add(L, &b->d_attn_norm, 0, 1, (int64_t[]){D}, "%s.input_layernorm.weight", prefix);
        b->wq = moe_layout_add(L, &b->d_wq, std, 2, (int64_t[]){qdim, D}, "%s.self_attn.q_proj.weight", prefix);
        b->wk = moe_layout_add(L, &b->d_wk, std, 2, (int64_t[]){kvdim, D}, "%s.self_attn.k_proj.weight", prefix);
        b->wv = moe_layout_add(L, &b->d_wv, std, 2, (int64_t[]){kvdim, D}, "%s.self_attn.v_proj.weight", prefix);
        b->wo = moe_layout_add(L, &b->d_wo, out_std, 2, (int64_t[]){D, qdim}, "%s.self_attn.o_proj.weight", prefix);
        b->ffn_norm = moe_layout_add(L, &b->d_ffn_norm, 0, 1, (int64_t[]){D}, "%s.post_attention_layernorm.weight", prefix);
        char mlp[80];
        snprintf(mlp, sizeof mlp, "%s.mlp", prefix);
        b->ffn->ops->layout(b->ffn, L, mlp);
    }
    m->final_norm = moe_layout_add(L, &m->d_final_norm, 0, 1, (int64_t[]){D}, "model.norm.weight");
    m->lm_head = moe_layout_add(L, &m->d_lm_head, std, 2, (int64_t[]){V, D}, "lm_head.weight");
}

/* The model without its parameter memory: FFN slots built and the tensor
 * table counted (pass 1), so that its size is known before anything large
 * is allocated. It holds part `part` of `parts` of the routed experts. */
static moe_model *model_shell(const moe_config *cfg, int part, int parts, moe_err *err) {
    moe_model *m = moe_calloc(1, sizeof *m, err);
    if (!m) return NULL;
    m->cfg = *cfg;
    m->layout.part = part;
    m->layout.parts = parts;
    m->rs.lambda = (float)cfg->relu_lambda0;
    m->blocks = moe_calloc((size_t)cfg->n_layers, sizeof *m->blocks, err);
    if (!m->blocks) goto fail;
    for (int l = 0; l < cfg->n_layers; l++)
        if (moe_ffn_create(&m->cfg, l, &m->blocks[l].ffn, err)) goto fail;
    model_layout(m);                       /* pass 1: count */
    if (m->layout.failed) { moe_errf(err, "out of memory building the tensor table"); goto fail; }
    double whole = 0.0;  /* the sizes again in floating point: one beyond size_t is refused, not wrapped */
    for (size_t i = 0; i < m->layout.count; i++) {
        const moe_tensor *t = &m->layout.tensors[i];
        double n = 1.0;
        for (int d = 0; d < t->ndim; d++) n *= (double)t->shape[d];
        whole += n;
    }
    if (whole > 0x1p60) {
        moe_errf(err, "config: %.3g parameters, more than a process can address", whole);
        goto fail;
    }
    for (size_t i = 0; i < m->layout.count; i++) {
        const moe_tensor *t = &m->layout.tensors[i];
        if (t->split && t->shape[0] % parts) {
            moe_errf(err, "%s: %lld experts cannot be divided among %d processes", t->name,
                     (long long)t->shape[0], parts);
            goto fail;
        }
    }
    m->n_params = m->layout.total;
    return m;
fail:
    moe_model_free(m);
    return NULL;
}

int moe_model_create(const moe_config *cfg, moe_model **out, moe_err *err) {
    return moe_model_create_part(cfg, 0, 1, out, err);
}

/* The kernels' precision that a config's precision asks for: "auto"
 * resolved (moe_precision_resolve), "" read as fp32; -1 naming any other. */
static int asked_precision(const char *precision, moe_k_precision *want, moe_err *err) {
    precision = moe_precision_resolve(precision, NULL);
    if (!precision[0] || strcmp(precision, "fp32") == 0) *want = MOE_K_FP32;
    else if (strcmp(precision, "bf16") == 0) *want = MOE_K_BF16;
    else return moe_errf(err, "precision: expected auto, fp32 or bf16, found \"%s\"", precision);
    return 0;
}

int moe_model_create_part(const moe_config *cfg, int part, int parts, moe_model **out, moe_err *err) {
    if (parts < 1 || part < 0 || part >= parts)
        return moe_errf(err, "part %d of %d: expected 0 <= part < parts", part, parts);
    /* The model's config is the one it is built with, and stays so. auto is
     * recorded as what it resolved to, so that a resume, eval or score of
     * the checkpoint runs the same products; an explicit bf16 is recorded
     * as asked (not the fallback): the checkpoint asks for bf16 again on a
     * CPU that has it. */
    moe_k_precision want = MOE_K_FP32;
    if (asked_precision(cfg->precision, &want, err)) return -1;
    moe_config built = *cfg;
    snprintf(built.precision, sizeof built.precision, "%s", want == MOE_K_BF16 ? "bf16" : "fp32");
    moe_model *m = model_shell(&built, part, parts, err);
    if (!m) return -1;
    m->params = moe_floats_alloc(m->n_params, err);
    m->grads = m->params ? moe_floats_alloc(m->n_params, err) : NULL;
    if (!m->grads) goto fail;
    moe_layout_rewind(&m->layout, m->params, m->grads);
    model_layout(m);                       /* pass 2: assign pointers */
    if (moe_k_ctx_create(want, &m->kc, err)) goto fail;  /* bf16 falls back to fp32 where the CPU lacks it */
    *out = m;
    return 0;
fail:
    moe_model_free(m);
    return -1;
}

int moe_model_count_params(const moe_config *cfg, int parts, moe_param_count *out, moe_err *err) {
    return moe_model_count_params_at(cfg, parts, moe_ffn_active_share(cfg), out, err);
}

int moe_model_count_params_at(const moe_config *cfg, int parts, double share, moe_param_count *out, moe_err *err) {
    if (parts < 1) return moe_errf(err, "parameter count: %d parts, expected at least 1", parts);
    if (!(share >= 0.0 && share <= 1.0))
        return moe_errf(err, "parameter count: active share %g of the routed experts, expected 0 to 1", share);
    moe_model *m = model_shell(cfg, 0, parts, err);  /* pass 1 only: counts, no memory */
    if (!m) return -1;
    memset(out, 0, sizeof *out);
    out->held = m->n_params;
    double active = 0.0, experts_active = 0.0;
    for (size_t i = 0; i < m->layout.count; i++) {
        const moe_tensor *t = &m->layout.tensors[i];
        size_t n = t->full;  /* the whole tensor, whichever part one process holds */
        out->total += n;
        if (!strcmp(t->name, "model.embed_tokens.weight") || !strcmp(t->name, "lm_head.weight"))
            out->embedding += n;
        if (strstr(t->name, ".experts.") && !strstr(t->name, ".shared_experts.")) {
            out->experts += n;
            experts_active += share * (double)n;
            active += share * (double)n;
        } else if (strstr(t->name, ".shared_experts.")) {
            out->experts += n;
            experts_active += (double)n;
            active += (double)n;
        } else if (strstr(t->name, ".router.token_weight")) {
            out->router += n;
            active += (double)n / (double)cfg->vocab_size;
        } else if (strstr(t->name, ".router.") || strstr(t->name, ".shared_gate.")) {
            out->router += n;
            active += (double)n;
        } else {
            active += (double)n;
        }
    }
    out->active = (size_t)(active + 0.5);
    out->experts_active = (size_t)(experts_active + 0.5);
    moe_model_free(m);
    return 0;
}

static void free_acts(moe_model *m) {
    free(m->acts_mem); free(m->res); free(m->res_mid); free(m->acts);
    free(m->tokens); free(m->targets); free(m->argmax);
    m->acts_mem = NULL; m->res = m->res_mid = NULL; m->acts = NULL;
    m->tokens = m->targets = m->argmax = NULL;
    m->cap_rows = m->cap_B = m->cap_T = 0;
}

void moe_model_free(moe_model *m) {
    if (!m) return;
    if (m->blocks)
        for (int l = 0; l < m->cfg.n_layers; l++) moe_ffn_destroy(m->blocks[l].ffn);
    free(m->blocks);
    moe_floats_free(m->params);
    moe_floats_free(m->grads);
    moe_layout_free(&m->layout);
    free_acts(m);
    free(m->logits);
    moe_k_ctx_free(m->kc);
    free(m);
}

const char *moe_model_precision(const moe_model *m) {
    return moe_k_ctx_precision(m->kc) == MOE_K_BF16 ? "bf16" : "fp32";
}

const char *moe_precision_resolve(const char *precision, const char **why) {
    if (why) *why = NULL;
    if (strcmp(precision, "auto")) return precision;
    /* bf16 only where it is faster: on AMX tiles. With AVX512_BF16 alone
     * (AMD Zen 4/5) rounding the inputs costs more than the products save
     * at these widths (docs/PERFORMANCE.md, "bf16 without AMX") */
    int native = moe_k_bf16_available(), amx = native && moe_k_bf16_amx();
    const char *off = getenv("MOE_NO_BF16");  /* what moe_k_bf16_available honours first */
    if (why)
        *why = amx ? "auto: this CPU runs bf16 products on AMX tiles"
             : native ? "auto: this CPU has AVX512_BF16 but no AMX, where bf16 trains slower than fp32"
             : off && *off && strcmp(off, "0") ? "auto: MOE_NO_BF16 is set"
             : "auto: no native bf16 on this CPU";
    return amx ? "bf16" : "fp32";
}

void moe_model_init(moe_model *m, uint64_t seed) {
    moe_rng rng;
    moe_rng_seed(&rng, seed);
    for (size_t i = 0; i < m->layout.count; i++) {
        const moe_tensor *t = &m->layout.tensors[i];
        float *p = m->params + t->offset;
        /* one stream over the whole tensors, so a process holding some rows
         * of a split tensor draws the values one process would give them */
        size_t first = t->first, end = first + t->size;
        for (size_t j = 0; j < t->full; j++) {
            float v = t->init_std < 0 ? 1.0f : (float)(t->init_std * moe_rng_normal(&rng));
            if (j >= first && j < end) p[j - first] = v;
        }
    }
}

void moe_model_zero_grad(moe_model *m) { memset(m->grads, 0, m->n_params * sizeof(float)); }

moe_router *moe_model_router(const moe_model *m, int layer, int which) {
    const moe_ffn *f = m->blocks[layer].ffn;
    return f->ops->router ? f->ops->router((moe_ffn *)f, which) : NULL;
}

/* Every router's end of step (apply: update its state, else forget). */
static void routers_end_step(moe_model *m, int apply) {
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int w = 0;; w++) {
            moe_router *r = moe_model_router(m, l, w);
            if (!r) break;
            if (r->ops->end_step) r->ops->end_step(r, apply);
        }
}

double moe_model_end_step(moe_model *m) {
    moe_routing_state *rs = &m->rs;
    double sparsity = rs->total_pairs > 0 ? 1.0 - rs->active_pairs / rs->total_pairs : 0.0;
    const moe_router_kind *kind = moe_ffn_router_kind(&m->cfg);
    if (rs->total_pairs > 0 && kind && kind->sparsity_lambda)
        rs->lambda = moe_relu_lambda_next(rs->lambda, sparsity, m->cfg.target_sparsity, m->cfg.relu_alpha);
    rs->active_pairs = rs->total_pairs = 0.0;
    routers_end_step(m, 1);
    return sparsity;
}

int moe_model_wants_prepass(const moe_model *m) {
    for (int l = 0; l < m->cfg.n_layers; l++) {
        moe_router *r = moe_model_router(m, l, 0);
        if (r && r->wants_prepass) return 1;
    }
    return 0;
}

void moe_model_discard_step(moe_model *m) {
    m->rs.active_pairs = m->rs.total_pairs = 0.0;
    routers_end_step(m, 0);
}

/* ---- activations ------------------------------------------------------ */

/* Floats of the model's own activation buffers for a B x T batch (the
 * layout ensure_acts carves). */
static size_t acts_floats(const moe_config *c, size_t B, size_t T) {
    size_t N = B * T, L = (size_t)c->n_layers, D = (size_t)c->hidden, V = (size_t)c->vocab_size;
    size_t H = (size_t)c->n_heads, KV = (size_t)c->n_kv_heads, hd = D / H, kvd = KV * hd;
    size_t per_block = N * D * 4 + N * 2 + N * kvd * 2 + B * H * T;
    return per_block * L + (L + 1) * N * D + L * N * D    /* res, res_mid */
         + N * D + N + 2 * N + T * hd                     /* lnf, rstdf, losses, lse, rope */
         + moe_k_head_scratch(D, V)                           /* the LM head's blocks */
         + N * D * 4 + N * kvd * 2 + moe_k_attention_scratch(B, T, H, hd);  /* backward scratch */
}

size_t moe_model_memory_estimate(const moe_config *c, size_t n_params, size_t B, size_t T) {
    size_t N = B * T, D = (size_t)c->hidden, L = (size_t)c->n_layers;
    size_t ffn;  /* per layer, floats, worst case */
    const moe_ffn_kind *kind = moe_ffn_kind_find(c->ffn);
    if (!kind || !kind->routed) {
        ffn = 5 * N * (size_t)c->ffn_dim;
    } else {  /* every (token, expert) pair active, as ReLU routing can be early on */
        size_t E = (size_t)c->n_experts * (size_t)c->granularity + (size_t)c->n_shared_experts;
        size_t Fe = (size_t)(c->ffn_dim / c->granularity);
        ffn = 5 * N * E + N * E * (3 * D + 5 * Fe);
    }
    return 4 * (4 * n_params + acts_floats(c, B, T) + L * ffn);
}

/* Makes room for a batch of B sequences of T tokens (grow-only). */
static int ensure_acts(moe_model *m, size_t B, size_t T, moe_err *err) {
    const moe_config *c = &m->cfg;
    size_t N = B * T, L = (size_t)c->n_layers, D = (size_t)c->hidden;
    size_t V = (size_t)c->vocab_size, H = (size_t)c->n_heads, KV = (size_t)c->n_kv_heads;
    size_t hd = D / H, kvd = KV * hd;
    size_t old_T = m->T;
    m->B = B;
    m->T = T;
    if (m->acts_mem && N <= m->cap_rows && B <= m->cap_B && T <= m->cap_T) {
        if (T != old_T) moe_k_rope_tables(m->rope_cos, m->rope_sin, T, hd, c->rope_theta);
        return 0;
    }
    free_acts(m);
    size_t total = acts_floats(c, B, T);
    m->acts_mem = moe_malloc(total * sizeof(float), err);
    m->res = moe_calloc(L + 1, sizeof(float *), err);
    m->res_mid = moe_calloc(L, sizeof(float *), err);
    m->acts = moe_calloc(L, sizeof(block_acts), err);
    m->tokens = moe_calloc(N, sizeof(int), err);
    m->targets = moe_calloc(N, sizeof(int), err);
    m->argmax = moe_calloc(N, sizeof(int), err);
    if (!m->acts_mem || !m->res || !m->res_mid || !m->acts || !m->tokens || !m->targets || !m->argmax) {
        free_acts(m);
        return moe_errf(err, "out of memory for activations of a %zu x %zu batch (%.1f MB)",
                        B, T, total * 4.0 / 1e6);
    }
    float *p = m->acts_mem;
#define TAKE(ptr, n) do { (ptr) = p; p += (n); } while (0)
    for (size_t l = 0; l < L; l++) {
        block_acts *a = &m->acts[l];
        TAKE(a->ln1, N * D); TAKE(a->rstd1, N);
        TAKE(a->q, N * D); TAKE(a->k, N * kvd); TAKE(a->v, N * kvd);
        TAKE(a->lse, B * H * T);
        TAKE(a->attn_out, N * D);
        TAKE(a->ln2, N * D); TAKE(a->rstd2, N);
    }
    for (size_t l = 0; l <= L; l++) TAKE(m->res[l], N * D);
    for (size_t l = 0; l < L; l++) TAKE(m->res_mid[l], N * D);
    TAKE(m->lnf, N * D); TAKE(m->rstdf, N); TAKE(m->losses, N); TAKE(m->lse, N);
    TAKE(m->head_scratch, moe_k_head_scratch(D, V));
    TAKE(m->rope_cos, T * hd / 2); TAKE(m->rope_sin, T * hd / 2);
    TAKE(m->dres, N * D); TAKE(m->dln, N * D); TAKE(m->dq, N * D); TAKE(m->dattn, N * D);
    TAKE(m->dk, N * kvd); TAKE(m->dv, N * kvd); TAKE(m->dscratch, moe_k_attention_scratch(B, T, H, hd));
#undef TAKE
    m->cap_rows = N;
    m->cap_B = B;
    m->cap_T = T;
    moe_k_rope_tables(m->rope_cos, m->rope_sin, T, hd, c->rope_theta);
    return 0;
}

/* ---- forward ---------------------------------------------------------- */

static moe_ffn_ctx ffn_ctx(moe_model *m, float loss_scale) {
    moe_ffn_ctx ctx = {.tokens = m->tokens, .B = m->B, .T = m->T, .step = m->step,
                       .training = m->training, .loss_scale = loss_scale, .rs = &m->rs,
                       .prepass = m->prepass,
                       .drop_top_expert = m->drop_top_expert, .prof = m->prof,
                       .kc = m->kc,
                       .dp = m->dp, .ep = m->ep, .row0 = m->row0};
    return ctx;
}

/* The LM head on the final norm's output, fused with its loss (moe_k_lm_head):
 * the per-token losses, argmax and (keep_logits) every logit; with
 * loss_scale >= 0 also its gradients, dln = d lnf and d_lm_head +=, for the
 * backward that follows. *sum: the losses' sum. */
static int head(moe_model *m, const int *targets, float loss_scale, double *sum, moe_err *err) {
    size_t N = m->B * m->T, D = (size_t)m->cfg.hidden, V = (size_t)m->cfg.vocab_size;
    if (m->keep_logits && N * V > m->cap_logits) {
        free(m->logits);
        m->cap_logits = 0;
        if (!(m->logits = moe_malloc(N * V * sizeof(float), err))) return -1;
        m->cap_logits = N * V;
    }
    moe_k_head h = {.x = m->lnf, .W = m->lm_head, .targets = targets, .N = N, .D = D, .V = V,
                .scratch = m->head_scratch, .losses = m->losses, .lse = m->lse,
                .argmax = loss_scale < 0 ? m->argmax : NULL,
                .logits = m->keep_logits ? m->logits : NULL};
    if (loss_scale >= 0) {
        h.dx = m->dln;
        h.dW = m->d_lm_head;
        h.dscale = m->loss_count > 0 ? loss_scale / (float)m->loss_count : 0.0f;
    }
    *sum = moe_k_lm_head(m->kc, &h);
    return 0;
}

/* moe_model_forward; loss_scale >= 0 (with targets): the LM head's
 * gradients too, for backward(loss_scale). */
static int forward(moe_model *m, const int *inputs, const int *targets, size_t B, size_t T,
                   float loss_scale, double *lm_loss, double *aux_loss, moe_err *err) {
    const moe_config *c = &m->cfg;
    if (T > (size_t)c->max_seq_len)
        return moe_errf(err, "sequence of %zu tokens exceeds max_seq_len %d", T, c->max_seq_len);
    if (ensure_acts(m, B, T, err)) return -1;
    size_t N = B * T, D = (size_t)c->hidden;
    for (size_t i = 0; i < N; i++) {
        if (inputs[i] < 0 || inputs[i] >= c->vocab_size)
            return moe_errf(err, "token id %d at position %zu is outside the vocabulary [0, %d)",
                            inputs[i], i, c->vocab_size);
        if (targets && targets[i] >= c->vocab_size)
            return moe_errf(err, "target id %d at position %zu is outside the vocabulary [0, %d)",
                            targets[i], i, c->vocab_size);
    }
    moe_prof_mark(m->prof, PROF_OTHER);
    memcpy(m->tokens, inputs, N * sizeof(int));
    m->has_targets = targets != NULL;
    if (targets) memcpy(m->targets, targets, N * sizeof(int));
    moe_ffn_ctx ctx = ffn_ctx(m, 1.0f);

    /* res[0][N,D] = embed[tokens] */
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < N; i++)
        memcpy(m->res[0] + i * D, m->embed + (size_t)inputs[i] * D, D * sizeof(float));
    moe_prof_mark(m->prof, PROF_EMBED);

    double aux = 0.0;
    for (int l = 0; l < c->n_layers; l++) {
        if (moe_block_forward(m, l, m->res[l], m->res_mid[l], m->res[l + 1], &m->acts[l], NULL, &ctx, err))
            return -1;
        aux += m->blocks[l].ffn->aux_loss;
    }
    moe_k_rmsnorm_forward(m->lnf, m->rstdf, m->res[c->n_layers], m->final_norm, N, D, (float)c->norm_eps);
    moe_prof_mark(m->prof, PROF_NORMS);
    if (targets) {
        /* the mean is over the global batch's targets: across ranks each
         * rank's loss is its share of it */
        size_t count = 0;
        for (size_t i = 0; i < N; i++) count += targets[i] >= 0;
        m->loss_count = (double)count;
        if (m->dp && m->dp->size > 1 && moe_comm_allreduce(m->dp, &m->loss_count, 1, MOE_F64, err))
            return -1;
    }
    double sum = 0.0;
    if ((targets || m->keep_logits) && head(m, targets, targets ? loss_scale : -1.0f, &sum, err))
        return -1;
    if (lm_loss) *lm_loss = targets && m->loss_count > 0 ? sum / m->loss_count : 0.0;
    if (aux_loss) *aux_loss = aux;
    moe_prof_mark(m->prof, PROF_HEAD);
    return 0;
}

int moe_model_forward(moe_model *m, const int *inputs, const int *targets,
                      size_t B, size_t T, double *lm_loss, double *aux_loss,
                      moe_err *err) {
    return forward(m, inputs, targets, B, T, -1.0f, lm_loss, aux_loss, err);
}

/* ---- backward --------------------------------------------------------- */

/* The backward of forward(loss_scale), whose head left dln = d lnf and
 * its d_lm_head. */
static int backward(moe_model *m, float loss_scale, moe_err *err) {
    const moe_config *c = &m->cfg;
    size_t N = m->B * m->T, D = (size_t)c->hidden;
    moe_ffn_ctx ctx = ffn_ctx(m, loss_scale);

    /* the final norm (the LM head's gradients came with the forward) */
    moe_prof_mark(m->prof, PROF_OTHER);
    moe_k_rmsnorm_backward(m->dres, m->d_final_norm, m->dln, m->res[c->n_layers], m->final_norm,
                       m->rstdf, N, D, 0);
    moe_prof_mark(m->prof, PROF_NORMS);

    for (int l = c->n_layers - 1; l >= 0; l--)
        if (moe_block_backward(m, l, &ctx, err)) return -1;
    /* embedding rows: 16 columns (a cache line) per task, tokens added in
     * order, so the bits do not depend on the thread count */
    size_t blocks = (D + 15) / 16;
    #pragma omp parallel for schedule(static)
    for (size_t bj = 0; bj < blocks; bj++) {
        size_t j0 = bj * 16, nj = D - j0 < 16 ? D - j0 : 16;
        for (size_t i = 0; i < N; i++) {
            float *de = m->d_embed + (size_t)m->tokens[i] * D + j0;
            const float *dr = m->dres + i * D + j0;
            #pragma omp simd
            for (size_t j = 0; j < nj; j++) de[j] += dr[j];
        }
    }
    moe_prof_mark(m->prof, PROF_EMBED);
    return 0;
}

int moe_model_forward_backward(moe_model *m, const int *inputs, const int *targets, size_t B,
                               size_t T, float loss_scale, double *lm_loss, double *aux_loss,
                               moe_err *err) {
    if (!targets || !(loss_scale >= 0))
        return moe_errf(err, "forward_backward: expected targets and a loss scale >= 0, found %s, %g",
                        targets ? "targets" : "none", (double)loss_scale);
    if (forward(m, inputs, targets, B, T, loss_scale, lm_loss, aux_loss, err)) return -1;
    return backward(m, loss_scale, err);
}
