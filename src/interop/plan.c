/* plan.c — which foreign architecture a model goes to (or why none), the
 * map from each foreign tensor to a moe tensor, the byte-level token text
 * of GPT-2 tokenizers, the pre-tokenizer names, and 16-bit floats. Shared
 * by gguf.c and hf.c; the maths of each choice is in docs/INTEROP.md. */
#include "ix.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moe/moe/router.h"

/* ---- the plan ------------------------------------------------------------ */

/* Why a router, an FFN kind or an option has no counterpart in llama.cpp /
 * transformers (the kinds say it of themselves: moe_ffn_kind.no_export,
 * moe_router_kind.no_export); NULL if nothing is named. */
static const char *refusal(const moe_config *c, const moe_ffn_kind *fk, const moe_router_kind *rk) {
    if (fk->no_export) return fk->no_export;
    if (fk->uses_router && rk->no_export) return rk->no_export;
    if (c->shared_gate)
        return "shared_gate (routed and shared outputs mixed by a learned 2-way softmax)";
    if (c->n_zero_experts + c->n_copy_experts + c->n_const_experts)
        return "MoE++'s zero-computation experts (n_zero_experts, n_copy_experts, n_const_experts: "
               "routed experts that output 0, x or a1 x + a2 v)";
    if (!strcmp(c->scoring_func, "sigmoid"))
        return "sigmoid gating (scoring_func \"sigmoid\": llama.cpp's sigmoid gate belongs to deepseek2, "
               "whose multi-head latent attention moe does not have)";
    if (c->routed_scaling_factor != 1)
        return "a routed_scaling_factor other than 1 (the architectures moe writes add the chosen "
               "gates unscaled)";
    if (c->aux_free_bias)
        return "the aux-loss-free expert bias (aux_free_bias: a per-expert bias added to the scores to "
               "choose the top-k; llama.cpp's slot for it, exp_probs_b, belongs to deepseek2, whose "
               "multi-head latent attention moe does not have)";
    return NULL;
}

int moe_ix_plan_make(const moe_config *c, moe_ix_format format, moe_ix_plan *p, moe_err *err) {
    const char *fmt = format == MOE_IX_GGUF ? "GGUF (llama.cpp)" : "the Hugging Face layout (transformers)";
    memset(p, 0, sizeof *p);
    p->format = format;
    p->moe_every = c->moe_every;
    const moe_ffn_kind *fk = moe_ffn_kind_find(c->ffn);
    const moe_router_kind *rk = moe_router_kind_find(c->router);
    if (!fk || !rk)
        return moe_errf(err, "cannot export to %s: unknown ffn \"%s\" or router \"%s\"", fmt, c->ffn, c->router);
    if (!fk->routed) {
        p->arch = format == MOE_IX_GGUF ? "llama" : "LlamaForCausalLM";
        return 0;
    }
    const char *why = refusal(c, fk, rk);
    if (why) return moe_errf(err, "cannot export to %s: %s has no counterpart there", fmt, why);
    if (!fk->exportable || !rk->exportable)
        return moe_errf(err, "cannot export to %s: ffn \"%s\" with router \"%s\" is not supported",
                        fmt, c->ffn, c->router);
    p->moe = 1;
    p->n_expert = c->n_experts * c->granularity;
    p->n_used = c->top_k * c->granularity;
    p->expert_ff = c->ffn_dim / c->granularity;
    p->n_shared = c->n_shared_experts;
    p->renorm = c->norm_topk_prob == 1;
    if (format == MOE_IX_GGUF) {
        if (c->moe_every != 1)
            return moe_errf(err, "cannot export to %s: moe_every %d alternates dense and MoE layers, "
                            "which no llama.cpp architecture with this attention expresses "
                            "(set moe_every 1)", fmt, c->moe_every);
        if (p->renorm && p->n_shared == 0) {
            p->arch = "llama";            /* Mixtral: softmax, top-k, renormalised */
        } else if (!p->renorm) {
            p->arch = "deepseek";         /* DeepSeekMoE: softmax top-k, not renormalised, shared */
        } else {
            p->arch = "bailingmoe";       /* renormalised (expert_weights_norm) with shared */
        }
        if (strcmp(p->arch, "llama") && p->n_shared == 0) {
            p->n_shared = 1;              /* the architecture requires a shared expert */
            p->zero_shared = 1;
        }
        return 0;
    }
    if (p->n_shared > 0)
        return moe_errf(err, "cannot export to %s: shared experts (n_shared_experts %d) are added "
                        "with weight 1 here, while Qwen2-MoE, the transformers class with shared "
                        "experts and Llama attention, gates its shared expert by a learned sigmoid "
                        "(set n_shared_experts 0, or export to GGUF)", fmt, c->n_shared_experts);
    if (p->renorm && c->moe_every == 1) {
        p->arch = "MixtralForCausalLM";
    } else {
        p->arch = "Qwen2MoeForCausalLM";  /* norm_topk_prob as ours; decoder_sparse_step */
        p->n_shared = 1;
        p->zero_shared = 1;
        p->qkv_bias = 1;
    }
    return 0;
}

void moe_ix_config_fit(moe_config *c) {
    if (c->seq_len > c->max_seq_len) c->seq_len = c->max_seq_len;
}

int moe_ix_check_held(const moe_config *c, double held, const char *what, const char *where, moe_err *err) {
    /* counting builds the model's shell, which keeps a few words per expert
     * and layer: first those must be within what the file holds */
    double experts = (double)c->n_layers * ((double)c->n_experts * c->granularity + c->n_shared_experts);
    if (experts > held)
        return moe_errf(err, "%s describes %.0f experts in all, more than the %.0f values %s hold",
                        what, experts, held, where);
    moe_param_count pc;
    if (moe_model_count_params(c, 1, &pc, err)) return moe_err_prefix(err, "%s", what);
    if ((double)pc.total > held)
        return moe_errf(err, "%s describes %zu parameters but %s hold %.0f values", what, pc.total, where, held);
    return 0;
}

/* ---- the maps ------------------------------------------------------------ */

typedef struct {
    moe_ix_map *v;
    size_t n, cap;
    int failed;
} maplist;

static moe_ix_map *add(maplist *L, const moe_tensor *src, moe_ix_op op, int arg, int ndim,
                   const int64_t *shape, const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static moe_ix_map *add(maplist *L, const moe_tensor *src, moe_ix_op op, int arg, int ndim,
                   const int64_t *shape, const char *fmt, ...) {
    if (L->failed) return NULL;
    if (L->n == L->cap) {
        size_t cap = L->cap ? 2 * L->cap : 64;
        moe_ix_map *v = realloc(L->v, cap * sizeof *v);
        if (!v) { L->failed = 1; return NULL; }
        L->v = v;
        L->cap = cap;
    }
    moe_ix_map *x = &L->v[L->n++];
    memset(x, 0, sizeof *x);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->name, sizeof x->name, fmt, ap);
    va_end(ap);
    x->src = src;
    x->op = op;
    x->arg = arg;
    x->ndim = ndim;
    for (int i = 0; i < ndim; i++) x->shape[i] = shape[i];
    x->is_norm = ndim == 1;
    return x;
}

/* The moe tensor `name` (printf-style), or NULL (then the map fails). */
static const moe_tensor *find(const moe_model *m, maplist *L, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static const moe_tensor *find(const moe_model *m, maplist *L, const char *fmt, ...) {
    char name[MOE_NAME_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    const moe_tensor *t = moe_layout_find(&m->layout, name);
    if (!t) L->failed = 2;
    return t;
}

#define SH(...) ((const int64_t[]){__VA_ARGS__})

static void gguf_layer(const moe_model *m, const moe_ix_plan *p, maplist *L, int l) {
    const moe_config *c = &m->cfg;
    int64_t D = c->hidden, hd = c->hidden / c->n_heads, F = c->ffn_dim;
    int64_t q = c->n_heads * hd, kv = c->n_kv_heads * hd, E = p->n_expert, Fe = p->expert_ff;
    const char *pre = "model.layers";
    add(L, find(m, L, "%s.%d.input_layernorm.weight", pre, l), MOE_IX_COPY, 0, 1, SH(D), "blk.%d.attn_norm.weight", l);
    add(L, find(m, L, "%s.%d.self_attn.q_proj.weight", pre, l), MOE_IX_ROPE, c->n_heads, 2, SH(q, D), "blk.%d.attn_q.weight", l);
    add(L, find(m, L, "%s.%d.self_attn.k_proj.weight", pre, l), MOE_IX_ROPE, c->n_kv_heads, 2, SH(kv, D), "blk.%d.attn_k.weight", l);
    add(L, find(m, L, "%s.%d.self_attn.v_proj.weight", pre, l), MOE_IX_COPY, 0, 2, SH(kv, D), "blk.%d.attn_v.weight", l);
    add(L, find(m, L, "%s.%d.self_attn.o_proj.weight", pre, l), MOE_IX_COPY, 0, 2, SH(D, q), "blk.%d.attn_output.weight", l);
    add(L, find(m, L, "%s.%d.post_attention_layernorm.weight", pre, l), MOE_IX_COPY, 0, 1, SH(D), "blk.%d.ffn_norm.weight", l);
    if (!p->moe) {
        add(L, find(m, L, "%s.%d.mlp.gate_proj.weight", pre, l), MOE_IX_COPY, 0, 2, SH(F, D), "blk.%d.ffn_gate.weight", l);
        add(L, find(m, L, "%s.%d.mlp.up_proj.weight", pre, l), MOE_IX_COPY, 0, 2, SH(F, D), "blk.%d.ffn_up.weight", l);
        add(L, find(m, L, "%s.%d.mlp.down_proj.weight", pre, l), MOE_IX_COPY, 0, 2, SH(D, F), "blk.%d.ffn_down.weight", l);
        return;
    }
    add(L, find(m, L, "%s.%d.mlp.router.weight", pre, l), MOE_IX_COPY, 0, 2, SH(E, D), "blk.%d.ffn_gate_inp.weight", l);
    add(L, find(m, L, "%s.%d.mlp.experts.gate_proj.weight", pre, l), MOE_IX_COPY, 0, 3, SH(E, Fe, D), "blk.%d.ffn_gate_exps.weight", l);
    add(L, find(m, L, "%s.%d.mlp.experts.up_proj.weight", pre, l), MOE_IX_COPY, 0, 3, SH(E, Fe, D), "blk.%d.ffn_up_exps.weight", l);
    add(L, find(m, L, "%s.%d.mlp.experts.down_proj.weight", pre, l), MOE_IX_COPY, 0, 3, SH(E, D, Fe), "blk.%d.ffn_down_exps.weight", l);
    if (!p->n_shared) return;
    int64_t SF = p->n_shared * Fe;
    if (p->zero_shared) {
        add(L, NULL, MOE_IX_ZERO, 0, 2, SH(SF, D), "blk.%d.ffn_gate_shexp.weight", l);
        add(L, NULL, MOE_IX_ZERO, 0, 2, SH(SF, D), "blk.%d.ffn_up_shexp.weight", l);
        add(L, NULL, MOE_IX_ZERO, 0, 2, SH(D, SF), "blk.%d.ffn_down_shexp.weight", l);
        return;
    }
    add(L, find(m, L, "%s.%d.mlp.shared_experts.gate_proj.weight", pre, l), MOE_IX_COPY, 0, 2, SH(SF, D), "blk.%d.ffn_gate_shexp.weight", l);
    add(L, find(m, L, "%s.%d.mlp.shared_experts.up_proj.weight", pre, l), MOE_IX_COPY, 0, 2, SH(SF, D), "blk.%d.ffn_up_shexp.weight", l);
    add(L, find(m, L, "%s.%d.mlp.shared_experts.down_proj.weight", pre, l), MOE_IX_SHARED_DOWN, p->n_shared, 2, SH(D, SF), "blk.%d.ffn_down_shexp.weight", l);
}

static void hf_layer(const moe_model *m, const moe_ix_plan *p, maplist *L, int l) {
    const moe_config *c = &m->cfg;
    int64_t D = c->hidden, hd = c->hidden / c->n_heads, F = c->ffn_dim;
    int64_t q = c->n_heads * hd, kv = c->n_kv_heads * hd, Fe = p->expert_ff;
    const char *pre = "model.layers";
    add(L, find(m, L, "%s.%d.input_layernorm.weight", pre, l), MOE_IX_COPY, 0, 1, SH(D), "%s.%d.input_layernorm.weight", pre, l);
    static const char *const qkv[] = {"q_proj", "k_proj", "v_proj"};
    for (int i = 0; i < 3; i++) {
        int64_t rows = i ? kv : q;
        add(L, find(m, L, "%s.%d.self_attn.%s.weight", pre, l, qkv[i]), MOE_IX_COPY, 0, 2, SH(rows, D),
            "%s.%d.self_attn.%s.weight", pre, l, qkv[i]);
        if (p->qkv_bias) add(L, NULL, MOE_IX_ZERO, 0, 1, SH(rows), "%s.%d.self_attn.%s.bias", pre, l, qkv[i]);
    }
    add(L, find(m, L, "%s.%d.self_attn.o_proj.weight", pre, l), MOE_IX_COPY, 0, 2, SH(D, q), "%s.%d.self_attn.o_proj.weight", pre, l);
    add(L, find(m, L, "%s.%d.post_attention_layernorm.weight", pre, l), MOE_IX_COPY, 0, 1, SH(D),
        "%s.%d.post_attention_layernorm.weight", pre, l);
    int sparse = p->moe && (l + 1) % p->moe_every == 0;
    if (!sparse) {
        static const char *const w[] = {"gate_proj", "up_proj", "down_proj"};
        for (int i = 0; i < 3; i++)
            add(L, find(m, L, "%s.%d.mlp.%s.weight", pre, l, w[i]), MOE_IX_COPY, 0, 2, i == 2 ? SH(D, F) : SH(F, D),
                "%s.%d.mlp.%s.weight", pre, l, w[i]);
        return;
    }
    const moe_tensor *r = find(m, L, "%s.%d.mlp.router.weight", pre, l);
    const moe_tensor *g = find(m, L, "%s.%d.mlp.experts.gate_proj.weight", pre, l);
    const moe_tensor *u = find(m, L, "%s.%d.mlp.experts.up_proj.weight", pre, l);
    const moe_tensor *d = find(m, L, "%s.%d.mlp.experts.down_proj.weight", pre, l);
    int mixtral = !strcmp(p->arch, "MixtralForCausalLM");
    add(L, r, MOE_IX_COPY, 0, 2, SH(p->n_expert, D), mixtral ? "%s.%d.block_sparse_moe.gate.weight" : "%s.%d.mlp.gate.weight", pre, l);
    for (int e = 0; e < p->n_expert; e++) {
        if (mixtral) {  /* w1 gate, w3 up, w2 down */
            add(L, g, MOE_IX_SLICE, e, 2, SH(Fe, D), "%s.%d.block_sparse_moe.experts.%d.w1.weight", pre, l, e);
            add(L, d, MOE_IX_SLICE, e, 2, SH(D, Fe), "%s.%d.block_sparse_moe.experts.%d.w2.weight", pre, l, e);
            add(L, u, MOE_IX_SLICE, e, 2, SH(Fe, D), "%s.%d.block_sparse_moe.experts.%d.w3.weight", pre, l, e);
        } else {
            add(L, g, MOE_IX_SLICE, e, 2, SH(Fe, D), "%s.%d.mlp.experts.%d.gate_proj.weight", pre, l, e);
            add(L, u, MOE_IX_SLICE, e, 2, SH(Fe, D), "%s.%d.mlp.experts.%d.up_proj.weight", pre, l, e);
            add(L, d, MOE_IX_SLICE, e, 2, SH(D, Fe), "%s.%d.mlp.experts.%d.down_proj.weight", pre, l, e);
        }
    }
    if (p->zero_shared) {  /* Qwen2-MoE's shared expert and its sigmoid gate, all zero: adds 0 */
        add(L, NULL, MOE_IX_ZERO, 0, 2, SH(Fe, D), "%s.%d.mlp.shared_expert.gate_proj.weight", pre, l);
        add(L, NULL, MOE_IX_ZERO, 0, 2, SH(Fe, D), "%s.%d.mlp.shared_expert.up_proj.weight", pre, l);
        add(L, NULL, MOE_IX_ZERO, 0, 2, SH(D, Fe), "%s.%d.mlp.shared_expert.down_proj.weight", pre, l);
        add(L, NULL, MOE_IX_ZERO, 0, 2, SH(1, D), "%s.%d.mlp.shared_expert_gate.weight", pre, l);
    }
}

int moe_ix_maps_make(const moe_model *m, const moe_ix_plan *p, moe_ix_map **maps, size_t *n, moe_err *err) {
    const moe_config *c = &m->cfg;
    maplist L = {0};
    int64_t V = c->vocab_size, D = c->hidden;
    int gguf = p->format == MOE_IX_GGUF;
    add(&L, find(m, &L, "model.embed_tokens.weight"), MOE_IX_COPY, 0, 2, SH(V, D),
        gguf ? "token_embd.weight" : "model.embed_tokens.weight");
    for (int l = 0; l < c->n_layers; l++) (gguf ? gguf_layer : hf_layer)(m, p, &L, l);
    add(&L, find(m, &L, "model.norm.weight"), MOE_IX_COPY, 0, 1, SH(D), gguf ? "output_norm.weight" : "model.norm.weight");
    add(&L, find(m, &L, "lm_head.weight"), MOE_IX_COPY, 0, 2, SH(V, D), gguf ? "output.weight" : "lm_head.weight");
    if (L.failed) {
        free(L.v);
        return L.failed == 1 ? moe_errf(err, "out of memory building the tensor map")
                             : moe_errf(err, "export: the model lacks a tensor its config implies");
    }
    *maps = L.v;
    *n = L.n;
    return 0;
}

size_t moe_ix_map_size(const moe_ix_map *x) {
    size_t n = 1;
    for (int i = 0; i < x->ndim; i++) n *= (size_t)x->shape[i];
    return n;
}

/* Row r of the interleaved (llama.cpp) layout comes from row rope_src(r) of
 * the rotate-half layout: within a head of hd rows, row 2i+j <- j*hd/2 + i. */
static size_t rope_src(size_t r, size_t hd) {
    size_t h = r / hd, w = r % hd, i = w / 2, j = w % 2;
    return h * hd + j * (hd / 2) + i;
}

void moe_ix_map_export(const moe_ix_map *x, const float *params, float *out) {
    size_t n = moe_ix_map_size(x);
    if (x->op == MOE_IX_ZERO) { memset(out, 0, n * sizeof *out); return; }
    const float *src = params + x->src->offset;
    switch (x->op) {
    case MOE_IX_COPY: memcpy(out, src, n * sizeof *out); break;
    case MOE_IX_SLICE: memcpy(out, src + (size_t)x->arg * n, n * sizeof *out); break;
    case MOE_IX_ROPE: {
        size_t rows = (size_t)x->shape[0], cols = (size_t)x->shape[1], hd = rows / (size_t)x->arg;
        for (size_t r = 0; r < rows; r++) memcpy(out + r * cols, src + rope_src(r, hd) * cols, cols * sizeof *out);
        break;
    }
    case MOE_IX_SHARED_DOWN: {  /* src [S, D, Fe] -> out [D, S*Fe] */
        size_t S = (size_t)x->arg, D = (size_t)x->shape[0], Fe = (size_t)x->shape[1] / S;
        for (size_t s = 0; s < S; s++)
            for (size_t d = 0; d < D; d++)
                memcpy(out + d * S * Fe + s * Fe, src + (s * D + d) * Fe, Fe * sizeof *out);
        break;
    }
    case MOE_IX_ZERO: break;
    }
}

void moe_ix_map_import(const moe_ix_map *x, const float *in, float *params) {
    size_t n = moe_ix_map_size(x);
    if (x->op == MOE_IX_ZERO) return;
    float *dst = params + x->src->offset;
    switch (x->op) {
    case MOE_IX_COPY: memcpy(dst, in, n * sizeof *in); break;
    case MOE_IX_SLICE: memcpy(dst + (size_t)x->arg * n, in, n * sizeof *in); break;
    case MOE_IX_ROPE: {
        size_t rows = (size_t)x->shape[0], cols = (size_t)x->shape[1], hd = rows / (size_t)x->arg;
        for (size_t r = 0; r < rows; r++) memcpy(dst + rope_src(r, hd) * cols, in + r * cols, cols * sizeof *in);
        break;
    }
    case MOE_IX_SHARED_DOWN: {
        size_t S = (size_t)x->arg, D = (size_t)x->shape[0], Fe = (size_t)x->shape[1] / S;
        for (size_t s = 0; s < S; s++)
            for (size_t d = 0; d < D; d++)
                memcpy(dst + (s * D + d) * Fe, in + d * S * Fe + s * Fe, Fe * sizeof *in);
        break;
    }
    case MOE_IX_ZERO: break;
    }
}

/* ---- tokenizer text ----------------------------------------------------- */

/* The text other programs list for id: the model's padding rows past the
 * tokenizer and the ids a rank table leaves unused get a placeholder, a
 * special token (eot among them) its own text, any other token its bytes in
 * GPT-2's byte-to-character code. */
int moe_ix_vocab_text(const moe_tokenizer *tok, uint32_t id, moe_buf *out) {
    uint32_t vt = moe_tokenizer_vocab_size(tok);
    if (id >= vt) return moe_buf_printf(out, "<|moe_pad_%u|>", id - vt);
    size_t n;
    const uint8_t *p = moe_tokenizer_token(tok, id, &n);
    if (!p) return moe_buf_printf(out, "<|moe_unused_%u|>", id);
    if (moe_tokenizer_special_index(tok, id) >= 0) return moe_buf_append(out, p, n);
    return moe_tok_bytes_to_text(p, n, out);
}

/* The tokenizer's split pattern, by its name in llama.cpp
 * (tokenizer.ggml.pre); the regex goes into tokenizer.json as tiktoken
 * writes it. cl100k_base and Llama 3 share one expression (llama-bpe).
 * o200k has no entry: llama.cpp's "gpt-4o" was not checked against it. */
static const struct { moe_tok_pattern pattern; const char *gguf_pre; } PRETOK[] = {
    {MOE_PAT_GPT2, "gpt-2"}, {MOE_PAT_CL100K, "llama-bpe"}, {MOE_PAT_LLAMA3, "llama-bpe"},
};

int moe_ix_pretok_names(const moe_tokenizer *tok, const char **gguf_pre, const char **regex, moe_err *err) {
    moe_tok_pattern pat = moe_tokenizer_pattern(tok);
    if (pat == MOE_PAT_NONE) pat = MOE_PAT_GPT2;  /* bytes: any split gives the same ids */
    *regex = moe_tok_pattern_regex(pat);
    if (!gguf_pre) return 0;  /* tokenizer.json takes any regex */
    for (size_t i = 0; i < sizeof PRETOK / sizeof PRETOK[0]; i++)
        if (pat == PRETOK[i].pattern) {
            *gguf_pre = PRETOK[i].gguf_pre;
            return 0;
        }
    return moe_errf(err, "cannot export the tokenizer: its split pattern '%s' has no pre-tokenizer "
                    "name in llama.cpp that moe has checked (gpt2, cl100k and llama3 have)",
                    moe_tok_pattern_name(pat));
}

/* ---- 16-bit floats -------------------------------------------------------- */

uint16_t moe_ix_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7FFFFFFF) > 0x7F800000) return (uint16_t)((u >> 16) | 0x40);  /* quiet NaN */
    u += 0x7FFF + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

float moe_ix_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t moe_ix_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000, a = u & 0x7FFFFFFF;
    if (a > 0x7F800000) return (uint16_t)(sign | 0x7E00);
    if (a >= 0x477FF000) return (uint16_t)(sign | 0x7C00);  /* rounds to >= 65520: inf */
    if (a < 0x38800000) {  /* below 2^-14: subnormal half (or zero) */
        float v;
        memcpy(&v, &a, 4);
        return (uint16_t)(sign | (uint32_t)lrintf(v * 16777216.0f));  /* units of 2^-24, RNE */
    }
    uint32_t r = a + 0xFFF + ((a >> 13) & 1);  /* round to nearest even at bit 13 */
    return (uint16_t)(sign | ((r - 0x38000000) >> 13));
}

float moe_ix_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1F, m = h & 0x3FF, u;
    if (e == 0) {
        float v = ldexpf((float)m, -24);
        memcpy(&u, &v, 4);
        u |= sign;
    } else if (e == 31) {
        u = sign | 0x7F800000 | (m << 13);
    } else {
        u = sign | ((e + 112) << 23) | (m << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- the vocabulary as text ------------------------------------------- */

typedef struct { const char *s; size_t n; uint32_t id; } text_ref;

static int cmp_text(const void *a, const void *b) {
    const text_ref *x = a, *y = b;
    size_t n = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->s, y->s, n);
    return c ? c : (x->n > y->n) - (x->n < y->n);
}

int moe_ix_vocab_make(const moe_tokenizer *tok, uint32_t V, moe_ix_vocab *v, moe_err *err) {
    memset(v, 0, sizeof *v);
    uint32_t vt = moe_tokenizer_vocab_size(tok), eot = moe_tokenizer_eot(tok);
    if (vt > V)
        return moe_errf(err, "the tokenizer has %u ids but the model's vocab_size is %u", vt, V);
    v->n = V;
    v->off = moe_calloc((size_t)V + 1, sizeof *v->off, err);
    v->type = moe_calloc(V, sizeof *v->type, err);
    v->moff = moe_calloc((size_t)V + 1, sizeof *v->moff, err);
    text_ref *refs = moe_calloc(V, sizeof *refs, err);
    if (!v->off || !v->type || !v->moff || !refs) goto oom;
    for (uint32_t id = 0; id < V; id++) {
        v->off[id] = v->text.len;
        if (moe_ix_vocab_text(tok, id, &v->text)) goto oom;
        size_t n;
        int unused = id >= vt || !moe_tokenizer_token(tok, id, &n);
        int special = id == eot || (!unused && moe_tokenizer_special_index(tok, id) >= 0);
        v->type[id] = unused ? 5 : special ? 3 : 1;  /* unused, control, normal */
        uint32_t a, b;
        int r = v->type[id] == 1 ? moe_tokenizer_merge_of(tok, id, &a, &b) : 1;
        if (r < 0) goto oom;
        if (r == 0) {
            if (moe_ix_vocab_text(tok, a, &v->merges) || moe_buf_append(&v->merges, " ", 1) ||
                moe_ix_vocab_text(tok, b, &v->merges))
                goto oom;
            v->moff[++v->n_merges] = v->merges.len;
        }
    }
    v->off[V] = v->text.len;
    for (uint32_t id = 0; id < V; id++)
        refs[id] = (text_ref){v->text.data + v->off[id], v->off[id + 1] - v->off[id], id};
    qsort(refs, V, sizeof *refs, cmp_text);
    for (uint32_t i = 1; i < V; i++)
        if (!cmp_text(&refs[i - 1], &refs[i])) {
            uint32_t a = refs[i - 1].id, b = refs[i].id;
            free(refs);
            moe_ix_vocab_free(v);
            return moe_errf(err, "cannot export the tokenizer: ids %u and %u are the same bytes, which "
                            "llama.cpp and tokenizer.json cannot tell apart", a < b ? a : b, a < b ? b : a);
        }
    free(refs);
    return 0;
oom:
    free(refs);
    moe_ix_vocab_free(v);
    return moe_errf(err, "out of memory writing the vocabulary");
}

void moe_ix_vocab_free(moe_ix_vocab *v) {
    moe_buf_free(&v->text);
    moe_buf_free(&v->merges);
    free(v->off);
    free(v->type);
    free(v->moff);
    memset(v, 0, sizeof *v);
}
