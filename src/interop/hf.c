/* hf.c — the Hugging Face (transformers) layout: `moe export --format hf`
 * writes config.json (LlamaForCausalLM, MixtralForCausalLM or
 * Qwen2MoeForCausalLM, with transformers' key names), model.safetensors
 * (transformers' tensor names; Mixtral's and Qwen2-MoE's experts one tensor
 * each, as on the Hub), tokenizer.json (a byte-level BPE), tokenizer_config.json
 * and generation_config.json; `moe import DIR` reads them back (also
 * sharded checkpoints with model.safetensors.index.json). */
#include "ix.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moe/util/fileio.h"
#include "moe/util/json.h"

/* ---- export --------------------------------------------------------------- */

static int write_text(const char *dir, const char *name, const moe_buf *b, moe_err *err) {
    char path[4096];
    if (moe_path(path, sizeof path, err, "%s/%s", dir, name)) return -1;
    return moe_write_file_atomic(path, b->data, b->len, err);
}

static int config_json(const moe_model *m, const moe_ix_plan *p, const moe_tokenizer *tok, moe_st_dtype type, moe_buf *o) {
    const moe_config *c = &m->cfg;
    int mixtral = !strcmp(p->arch, "MixtralForCausalLM"), qwen = !strcmp(p->arch, "Qwen2MoeForCausalLM");
    uint32_t eot = moe_tokenizer_eot(tok);
    int rc = moe_buf_printf(o, "{\n  \"architectures\": [\"%s\"],\n  \"model_type\": \"%s\",\n", p->arch,
                            mixtral ? "mixtral" : qwen ? "qwen2_moe" : "llama");
    rc |= moe_buf_printf(o, "  \"vocab_size\": %d,\n  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n"
                         "  \"num_hidden_layers\": %d,\n  \"num_attention_heads\": %d,\n"
                         "  \"num_key_value_heads\": %d,\n  \"head_dim\": %d,\n  \"max_position_embeddings\": %d,\n",
                         c->vocab_size, c->hidden, mixtral ? p->expert_ff : c->ffn_dim, c->n_layers, c->n_heads,
                         c->n_kv_heads, c->hidden / c->n_heads, c->max_seq_len);
    rc |= moe_buf_printf(o, "  \"rms_norm_eps\": ");
    rc |= moe_json_write_double(o, c->norm_eps);
    rc |= moe_buf_printf(o, ",\n  \"rope_theta\": ");
    rc |= moe_json_write_double(o, c->rope_theta);
    rc |= moe_buf_printf(o, ",\n  \"initializer_range\": ");
    rc |= moe_json_write_double(o, c->init_std);
    rc |= moe_buf_printf(o, ",\n  \"rope_scaling\": null,\n  \"hidden_act\": \"silu\",\n  \"tie_word_embeddings\": false,\n"
                         "  \"attention_dropout\": 0.0,\n  \"use_cache\": true,\n  \"bos_token_id\": %u,\n"
                         "  \"eos_token_id\": %u,\n  \"torch_dtype\": \"%s\",\n", eot, eot,
                         type == MOE_ST_F16 ? "float16" : type == MOE_ST_BF16 ? "bfloat16" : "float32");
    if (!p->moe) {
        rc |= moe_buf_printf(o, "  \"attention_bias\": false,\n  \"mlp_bias\": false,\n  \"pretraining_tp\": 1,\n");
    } else if (mixtral) {
        rc |= moe_buf_printf(o, "  \"num_local_experts\": %d,\n  \"num_experts_per_tok\": %d,\n"
                             "  \"output_router_logits\": false,\n  \"sliding_window\": null,\n"
                             "  \"router_aux_loss_coef\": ", p->n_expert, p->n_used);
        rc |= moe_json_write_double(o, c->aux_loss_coef);
        rc |= moe_buf_printf(o, ",\n");
    } else {
        rc |= moe_buf_printf(o, "  \"num_experts\": %d,\n  \"num_experts_per_tok\": %d,\n  \"moe_intermediate_size\": %d,\n"
                             "  \"shared_expert_intermediate_size\": %d,\n  \"norm_topk_prob\": %s,\n"
                             "  \"decoder_sparse_step\": %d,\n  \"mlp_only_layers\": [],\n"
                             "  \"qkv_bias\": true,\n  \"use_sliding_window\": false,\n  \"sliding_window\": null,\n"
                             "  \"max_window_layers\": %d,\n  \"output_router_logits\": false,\n"
                             "  \"router_aux_loss_coef\": ", p->n_expert, p->n_used, p->expert_ff, p->expert_ff,
                             p->renorm ? "true" : "false", p->moe_every, c->n_layers);
        rc |= moe_json_write_double(o, c->aux_loss_coef);
        rc |= moe_buf_printf(o, ",\n");
    }
    rc |= moe_buf_printf(o, "  \"moe_config\": ");
    rc |= moe_config_to_json(c, o);
    rc |= moe_buf_printf(o, "}\n");
    return rc ? -1 : 0;
}

int moe_ix_tokenizer_json(const moe_tokenizer *tok, const moe_ix_vocab *v, const char *regex, moe_buf *o) {
    /* every special token (eot among them) is an added token, matched whole */
    int rc = moe_buf_printf(o, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n"
                            "  \"added_tokens\": [");
    for (uint32_t i = 0; i < moe_tokenizer_n_special(tok) && !rc; i++) {
        uint32_t id;
        const char *text = moe_tokenizer_special(tok, i, &id);
        rc |= moe_buf_printf(o, "%s{\"id\": %u, \"content\": ", i ? ",\n    " : "", id);
        rc |= moe_json_write_string(o, text, strlen(text));
        rc |= moe_buf_printf(o, ", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, "
                             "\"normalized\": false, \"special\": true}");
    }
    rc |= moe_buf_printf(o, "],\n  \"normalizer\": null,\n"
                         "  \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [\n"
                         "    {\"type\": \"Split\", \"pattern\": {\"Regex\": ");
    rc |= moe_json_write_string(o, regex, strlen(regex));
    rc |= moe_buf_printf(o, "}, \"behavior\": \"Isolated\", \"invert\": false},\n"
                         "    {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, "
                         "\"use_regex\": false}]},\n  \"post_processor\": null,\n"
                         "  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
                         "\"trim_offsets\": true, \"use_regex\": false},\n"
                         "  \"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, "
                         "\"continuing_subword_prefix\": null, \"end_of_word_suffix\": null, "
                         "\"fuse_unk\": false, \"byte_fallback\": false, \"ignore_merges\": false,\n"
                         "    \"vocab\": {");
    for (uint32_t i = 0; i < v->n && !rc; i++) {
        rc |= moe_buf_printf(o, "%s\n      ", i ? "," : "");
        rc |= moe_json_write_string(o, v->text.data + v->off[i], v->off[i + 1] - v->off[i]);
        rc |= moe_buf_printf(o, ": %u", i);
    }
    rc |= moe_buf_printf(o, "},\n    \"merges\": [");
    for (size_t i = 0; i < v->n_merges && !rc; i++) {
        rc |= moe_buf_printf(o, "%s\n      ", i ? "," : "");
        rc |= moe_json_write_string(o, v->merges.data + v->moff[i], v->moff[i + 1] - v->moff[i]);
    }
    rc |= moe_buf_printf(o, "]}\n}\n");
    return rc ? -1 : 0;
}

int moe_ix_tokenizer_files(const char *dir, const moe_tokenizer *tok, const moe_ix_vocab *v, const char *regex,
                       int max_len, moe_err *err) {
    moe_buf b = {0};
    uint32_t eot = moe_tokenizer_eot(tok);
    int rc = moe_ix_tokenizer_json(tok, v, regex, &b) ? moe_errf(err, "out of memory") : write_text(dir, "tokenizer.json", &b, err);
    b.len = 0;
    if (!rc) rc = moe_buf_printf(&b, "{\n  \"tokenizer_class\": \"PreTrainedTokenizerFast\",\n"
                                 "  \"bos_token\": \"" MOE_EOT_TEXT "\",\n  \"eos_token\": \"" MOE_EOT_TEXT "\",\n"
                                 "  \"add_bos_token\": false,\n  \"add_eos_token\": false,\n"
                                 "  \"clean_up_tokenization_spaces\": false,\n  \"model_max_length\": %d\n}\n",
                                 max_len) ? moe_errf(err, "out of memory")
                                          : write_text(dir, "tokenizer_config.json", &b, err);
    b.len = 0;
    if (!rc) rc = moe_buf_printf(&b, "{\n  \"bos_token_id\": %u,\n  \"eos_token_id\": %u,\n  \"max_length\": %d\n}\n",
                                 eot, eot, max_len) ? moe_errf(err, "out of memory")
                                                    : write_text(dir, "generation_config.json", &b, err);
    moe_buf_free(&b);
    return rc;
}

int moe_export_hf(const moe_model *m, const moe_tokenizer *tok, const char *dir, moe_st_dtype type, moe_err *err) {
    if (type != MOE_ST_F32 && type != MOE_ST_F16 && type != MOE_ST_BF16)
        return moe_errf(err, "export: tensor type must be f32, f16 or bf16");
    moe_ix_plan p;
    const char *regex;
    if (moe_ix_plan_make(&m->cfg, MOE_IX_HF, &p, err) || moe_ix_pretok_names(tok, NULL, &regex, err)) return -1;
    moe_ix_map *maps;
    size_t n;
    moe_ix_vocab v;
    if (moe_ix_maps_make(m, &p, &maps, &n, err)) return -1;
    if (moe_ix_vocab_make(tok, (uint32_t)m->cfg.vocab_size, &v, err)) { free(maps); return -1; }
    moe_st_entry *e = moe_calloc(n, sizeof *e, err);
    void **bufs = moe_calloc(n, sizeof *bufs, err);
    int rc = e && bufs ? moe_mkdirs(dir, err) : -1;
    for (size_t i = 0; i < n && !rc; i++) {
        const moe_ix_map *x = &maps[i];
        size_t k = moe_ix_map_size(x);
        float *f = moe_malloc(k * sizeof(float), err);
        if (!(bufs[i] = f)) { rc = -1; break; }
        moe_ix_map_export(x, m->params, f);
        if (type != MOE_ST_F32) {
            uint16_t *h = (uint16_t *)f;  /* in place: h[j] is written after f[j] is read */
            for (size_t j = 0; j < k; j++) h[j] = type == MOE_ST_F16 ? moe_ix_f32_to_f16(f[j]) : moe_ix_f32_to_bf16(f[j]);
        }
        e[i].name = x->name;
        e[i].dtype = type;
        e[i].ndim = x->ndim;
        for (int d = 0; d < x->ndim; d++) e[i].shape[d] = x->shape[d];
        e[i].data = f;
    }
    char path[4096];
    const char *mk[] = {"format"}, *mv[] = {"pt"};
    if (!rc) rc = moe_path(path, sizeof path, err, "%s/model.safetensors", dir) || moe_st_write(path, e, n, mk, mv, 1, err);
    moe_buf b = {0};
    if (!rc) rc = config_json(m, &p, tok, type, &b) ? moe_errf(err, "out of memory") : write_text(dir, "config.json", &b, err);
    b.len = 0;
    if (!rc) rc = moe_ix_tokenizer_files(dir, tok, &v, regex, m->cfg.max_seq_len, err);
    moe_buf_free(&b);
    for (size_t i = 0; bufs && i < n; i++) free(bufs[i]);
    free(bufs);
    free(e);
    free(maps);
    moe_ix_vocab_free(&v);
    return rc;
}

/* ---- import --------------------------------------------------------------- */

typedef struct { moe_st_file *files; size_t n; } shards;

static void shards_free(shards *s) {
    for (size_t i = 0; i < s->n; i++) moe_st_free(&s->files[i]);
    free(s->files);
    *s = (shards){0};  /* shards_open frees on failure, and its caller frees again */
}

/* model.safetensors, or every file named by model.safetensors.index.json */
static int shards_open(const char *dir, shards *s, moe_err *err) {
    memset(s, 0, sizeof *s);
    char path[4096];
    if (moe_path(path, sizeof path, err, "%s/model.safetensors.index.json", dir)) return -1;
    moe_json_value *idx = NULL;
    FILE *probe = fopen(path, "rb");
    if (probe) {
        fclose(probe);
        if (!(idx = moe_json_parse_file(path, err))) return -1;
    }
    const moe_json_value *wm = idx ? moe_json_get(idx, "weight_map") : NULL;
    if (idx && (!wm || wm->type != MOE_JSON_OBJECT)) {
        moe_json_free(idx);
        return moe_errf(err, "%s: no \"weight_map\" object", path);
    }
    size_t cap = wm ? wm->count : 1;
    s->files = calloc(cap ? cap : 1, sizeof *s->files);
    if (!s->files) { moe_json_free(idx); return moe_errf(err, "out of memory"); }
    int rc = 0;
    if (!wm) {
        rc = moe_path(path, sizeof path, err, "%s/model.safetensors", dir) || moe_st_read(path, &s->files[0], err);
        if (!rc) s->n = 1;
    }
    for (size_t i = 0; wm && i < wm->count && !rc; i++) {
        const moe_json_value *f = &wm->items[i];
        if (f->type != MOE_JSON_STRING || strchr(f->string, '/')) { rc = moe_errf(err, "%s/model.safetensors.index.json: bad file name for '%s'", dir, wm->keys[i]); break; }
        int seen = 0;
        for (size_t j = 0; j < s->n && !seen; j++) {
            const char *base = strrchr(s->files[j].path, '/');
            seen = !strcmp(base ? base + 1 : s->files[j].path, f->string);
        }
        if (seen) continue;
        rc = moe_path(path, sizeof path, err, "%s/%s", dir, f->string) || moe_st_read(path, &s->files[s->n], err);
        if (!rc) s->n++;
    }
    moe_json_free(idx);
    if (rc) shards_free(s);
    return rc;
}

static const moe_st_tensor *shards_find(const shards *s, const char *name, const moe_st_file **in) {
    for (size_t i = 0; i < s->n; i++) {
        const moe_st_tensor *t = moe_st_find(&s->files[i], name);
        if (t) { *in = &s->files[i]; return t; }
    }
    return NULL;
}

static size_t st_count(const moe_st_tensor *t) {
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
    return n;
}

/* f32 values of a F32 / F16 / BF16 tensor; -1 for other dtypes */
static int st_to_f32(const moe_st_tensor *t, float *out) {
    size_t n = st_count(t);
    const uint8_t *p = t->data;
    if (t->dtype == MOE_ST_F32) { memcpy(out, p, n * 4); return 0; }
    if (t->dtype != MOE_ST_F16 && t->dtype != MOE_ST_BF16) return -1;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        out[i] = t->dtype == MOE_ST_F16 ? moe_ix_f16_to_f32(h) : moe_ix_bf16_to_f32(h);
    }
    return 0;
}

static int st_all_zero(const moe_st_tensor *t) {
    size_t n = st_count(t), es = moe_st_dtype_size(t->dtype);
    const uint8_t *p = t->data;
    for (size_t i = 0; i < n; i++) {
        /* all bytes zero but the sign bit (the top byte's high bit) */
        for (size_t b = 0; b < es; b++)
            if (p[i * es + b] & (b + 1 == es ? 0x7F : 0xFF)) return 0;
    }
    return 1;
}

/* An int member: -1 when absent or not a number. */
static int jint(const moe_json_value *cfg, const char *key, int *out) {
    const moe_json_value *v = moe_json_get_typed(cfg, key, MOE_JSON_NUMBER);
    if (!v) return -1;
    /* saturated: a cast of a number no int holds would be undefined, and
     * INT_MAX or INT_MIN is refused by the checks that follow */
    *out = v->number >= INT_MAX ? INT_MAX : v->number <= INT_MIN ? INT_MIN : (int)v->number;
    return 0;
}

static int hf_config(const char *dir, const moe_json_value *j, moe_config *c, const char **arch, moe_err *err) {
    moe_config_defaults(c);
    const moe_json_value *own = moe_json_get(j, "moe_config");
    if (own && own->type == MOE_JSON_OBJECT && moe_config_apply_json(c, own, "config.json: moe_config", err)) return -1;
    const moe_json_value *a = moe_json_get(j, "architectures");
    if (!a || a->type != MOE_JSON_ARRAY || a->count != 1 || a->items[0].type != MOE_JSON_STRING)
        return moe_errf(err, "%s/config.json: \"architectures\" must list one class", dir);
    *arch = a->items[0].string;
    int llama = !strcmp(*arch, "LlamaForCausalLM"), mixtral = !strcmp(*arch, "MixtralForCausalLM"),
        qwen = !strcmp(*arch, "Qwen2MoeForCausalLM");
    if (!llama && !mixtral && !qwen)
        return moe_errf(err, "%s/config.json: class %s is not one moe imports (LlamaForCausalLM, "
                        "MixtralForCausalLM, Qwen2MoeForCausalLM)", dir, *arch);
    if (jint(j, "vocab_size", &c->vocab_size) || jint(j, "hidden_size", &c->hidden) ||
        jint(j, "num_hidden_layers", &c->n_layers) || jint(j, "num_attention_heads", &c->n_heads) ||
        jint(j, "intermediate_size", &c->ffn_dim))
        return moe_errf(err, "%s/config.json: missing one of vocab_size, hidden_size, num_hidden_layers, "
                        "num_attention_heads, intermediate_size", dir);
    if (jint(j, "num_key_value_heads", &c->n_kv_heads)) c->n_kv_heads = c->n_heads;
    jint(j, "max_position_embeddings", &c->max_seq_len);
    c->norm_eps = moe_json_get_number(j, "rms_norm_eps", c->norm_eps);
    c->rope_theta = moe_json_get_number(j, "rope_theta", c->rope_theta);
    int hd;
    if (c->n_heads < 1 || c->hidden < 1)
        return moe_errf(err, "%s/config.json: hidden_size %d and num_attention_heads %d must be positive",
                        dir, c->hidden, c->n_heads);
    if (!jint(j, "head_dim", &hd) && hd != c->hidden / c->n_heads)
        return moe_errf(err, "%s/config.json: head_dim %d: moe's heads are hidden_size / num_attention_heads = %d",
                        dir, hd, c->hidden / c->n_heads);
    const moe_json_value *rs = moe_json_get(j, "rope_scaling"), *act = moe_json_get(j, "hidden_act");
    if (rs && rs->type != MOE_JSON_NULL) return moe_errf(err, "%s/config.json: rope_scaling is set; moe has no RoPE scaling", dir);
    if (act && (act->type != MOE_JSON_STRING || strcmp(act->string, "silu")))
        return moe_errf(err, "%s/config.json: hidden_act must be \"silu\" (SwiGLU)", dir);
    if (moe_json_get_bool(j, "attention_bias", 0) || moe_json_get_bool(j, "mlp_bias", 0))
        return moe_errf(err, "%s/config.json: attention_bias / mlp_bias: moe's projections have no bias", dir);
    if (llama) {
        strcpy(c->ffn, "dense");
        c->moe_every = 1;
        return 0;
    }
    int E, k, fe = c->ffn_dim;
    if (jint(j, mixtral ? "num_local_experts" : "num_experts", &E) || jint(j, "num_experts_per_tok", &k) ||
        (qwen && jint(j, "moe_intermediate_size", &fe)))
        return moe_errf(err, "%s/config.json: missing the expert counts or sizes of %s", dir, *arch);
    strcpy(c->ffn, "moe");
    strcpy(c->router, "topk");
    int G = c->granularity >= 1 && E % c->granularity == 0 && k % c->granularity == 0 ? c->granularity : 1;
    if (fe < 1 || fe > 1048576 / G)  /* the table's ffn_dim range, before fe * G can overflow */
        return moe_errf(err, "%s/config.json: %s %d: expected 1 to %d", dir,
                        qwen ? "moe_intermediate_size" : "intermediate_size", fe, 1048576 / G);
    c->granularity = G;
    c->n_experts = E / G;
    c->top_k = k / G;
    c->n_shared_experts = 0;
    c->shared_gate = 0;
    if (mixtral) {
        c->ffn_dim = fe * G;
        c->norm_topk_prob = 1;
        c->moe_every = 1;
        return 0;
    }
    const moe_json_value *mlo = moe_json_get(j, "mlp_only_layers");
    c->norm_topk_prob = moe_json_get_bool(j, "norm_topk_prob", 0);
    if (jint(j, "decoder_sparse_step", &c->moe_every)) c->moe_every = 1;
    if (c->moe_every < 1)
        return moe_errf(err, "%s/config.json: decoder_sparse_step %d: expected at least 1", dir, c->moe_every);
    if (mlo && (mlo->type != MOE_JSON_ARRAY || mlo->count))
        return moe_errf(err, "%s/config.json: mlp_only_layers is not empty; moe places experts by moe_every only", dir);
    if (fe * G != c->ffn_dim && c->moe_every == 1) c->ffn_dim = fe * G;  /* no dense layer uses ffn_dim */
    if (fe * G != c->ffn_dim)
        return moe_errf(err, "%s/config.json: moe_intermediate_size %d x %d != intermediate_size %d: moe's "
                        "experts are ffn_dim / granularity wide", dir, fe, G, c->ffn_dim);
    return 0;
}

static int hf_tokenizer(const char *dir, moe_tokenizer **tok, char *why, size_t cap, moe_err *err) {
    *tok = NULL;
    char path[4096];
    if (moe_path(path, sizeof path, err, "%s/tokenizer.json", dir)) return -1;
    FILE *probe = fopen(path, "rb");
    if (!probe) { snprintf(why, cap, "%s/tokenizer.json is missing", dir); return 0; }
    fclose(probe);
    return moe_tokenizer_from_hf_json(path, tok, why, cap, err);
}

int moe_import_hf(const char *dir, moe_model **out, moe_tokenizer **tok, char *why, size_t why_cap, moe_err *err) {
    *out = NULL;
    *tok = NULL;
    char path[4096];
    if (moe_path(path, sizeof path, err, "%s/config.json", dir)) return -1;
    moe_json_value *j = moe_json_parse_file(path, err);
    if (!j) return -1;
    moe_config c;
    const char *arch = "";
    moe_model *m = NULL;
    moe_ix_plan p;
    moe_ix_map *maps = NULL;
    size_t n = 0;
    shards s = {0};
    int rc = hf_config(dir, j, &c, &arch, err) ? -1 : 0;
    if (!rc) {
        moe_ix_config_fit(&c);
        if (moe_config_finalize(&c, err)) rc = moe_err_prefix(err, "%s/config.json", dir);
    }
    if (!rc) rc = shards_open(dir, &s, err);
    double held = 0;
    for (size_t k = 0; k < s.n && !rc; k++)
        for (size_t i = 0; i < s.files[k].count; i++) held += (double)st_count(&s.files[k].tensors[i]);
    if (!rc) {
        char what[4200];
        snprintf(what, sizeof what, "%s/config.json", dir);
        rc = moe_ix_check_held(&c, held + (double)c.vocab_size * c.hidden, what, "the safetensors", err);  /* + a tied head */
    }
    if (!rc) rc = moe_model_create(&c, &m, err) || moe_ix_plan_make(&c, MOE_IX_HF, &p, err) ||
                  moe_ix_maps_make(m, &p, &maps, &n, err) ? -1 : 0;
    if (!rc && strcmp(p.arch, arch))
        rc = moe_errf(err, "%s/config.json: class %s, but its keys describe what moe writes as %s", dir, arch, p.arch);
    int tied = moe_json_get_bool(j, "tie_word_embeddings", 0);
    float *buf = NULL;
    for (size_t i = 0; i < n && !rc; i++) {
        const moe_ix_map *x = &maps[i];
        const moe_st_file *f;
        const moe_st_tensor *t = shards_find(&s, x->name, &f);
        if (!t && tied && !strcmp(x->name, "lm_head.weight"))  /* tied: the head is the embedding */
            t = shards_find(&s, "model.embed_tokens.weight", &f);
        if (!t) {
            if (x->op == MOE_IX_ZERO) continue;  /* a missing bias or unused shared expert is zero */
            rc = moe_errf(err, "%s: missing tensor '%s'", dir, x->name);
            break;
        }
        int same = t->ndim == x->ndim;
        for (int d = 0; d < x->ndim && same; d++) same = t->shape[d] == x->shape[d];
        if (!same) { rc = moe_errf(err, "%s: tensor '%s' does not have the shape config.json implies", f->path, x->name); break; }
        if (x->op == MOE_IX_ZERO) {
            if (!st_all_zero(t))
                rc = moe_errf(err, "%s: tensor '%s' is not zero: moe has no %s", f->path, x->name,
                              strstr(x->name, "bias") ? "attention biases" : "sigmoid-gated shared expert");
            continue;
        }
        free(buf);
        if (!(buf = moe_malloc(moe_ix_map_size(x) * sizeof(float), err))) { rc = -1; break; }
        if (st_to_f32(t, buf)) { rc = moe_errf(err, "%s: tensor '%s' is %s; moe imports F32, F16 and BF16", f->path, x->name, moe_st_dtype_name(t->dtype)); break; }
        moe_ix_map_import(x, buf, m->params);
    }
    free(buf);
    for (size_t k = 0; k < s.n && !rc; k++)
        for (size_t i = 0; i < s.files[k].count && !rc; i++) {
            const char *name = s.files[k].tensors[i].name;
            int known = strstr(name, "rotary_emb.inv_freq") != NULL;  /* old checkpoints keep RoPE's table */
            for (size_t q = 0; q < n && !known; q++) known = !strcmp(maps[q].name, name);
            if (!known) rc = moe_errf(err, "%s: tensor '%s' has no place in a moe model", s.files[k].path, name);
        }
    if (!rc) rc = hf_tokenizer(dir, tok, why, why_cap, err);
    shards_free(&s);
    free(maps);
    moe_json_free(j);
    if (rc) { moe_model_free(m); return -1; }
    *out = m;
    return 0;
}
