/* gguf.c — llama.cpp's GGUF (version 3): the writer behind `moe export
 * --format gguf` and the reader behind `moe import` of a .gguf file.
 * Layout: "GGUF", version, tensor count, key-value count, the key-values,
 * the tensor infos (name, dims innermost first, ggml type, offset), then the
 * tensor data, each aligned to 32 bytes. */
#include "ix.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moe/util/fileio.h"
#include "moe/util/json.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#error "gguf.c assumes a little-endian host"
#endif

enum { G_U8, G_I8, G_U16, G_I16, G_U32, G_I32, G_F32, G_BOOL, G_STR, G_ARR, G_U64, G_I64, G_F64 };
enum { GT_F32 = 0, GT_F16 = 1, GT_BF16 = 30 };  /* ggml_type */
#define GGUF_ALIGN 32

/* ---- writing ------------------------------------------------------------- */

typedef struct { moe_buf b; size_t n_kv; int failed; } gw;

static void put(gw *w, const void *p, size_t n) { w->failed |= moe_buf_append(&w->b, p, n); }
static void put_u32(gw *w, uint32_t v) { put(w, &v, 4); }
static void put_u64(gw *w, uint64_t v) { put(w, &v, 8); }
static void put_str(gw *w, const char *s, size_t n) { put_u64(w, n); put(w, s, n); }
static void key(gw *w, const char *arch, const char *k, uint32_t type) {
    char name[160];
    snprintf(name, sizeof name, arch ? "%s.%s" : "%.0s%s", arch ? arch : "", k);
    put_str(w, name, strlen(name));
    put_u32(w, type);
    w->n_kv++;
}
static void kv_u32(gw *w, const char *arch, const char *k, uint32_t v) { key(w, arch, k, G_U32); put_u32(w, v); }
static void kv_f32(gw *w, const char *arch, const char *k, float v) { key(w, arch, k, G_F32); put(w, &v, 4); }
static void kv_bool(gw *w, const char *arch, const char *k, int v) { uint8_t b = !!v; key(w, arch, k, G_BOOL); put(w, &b, 1); }
static void kv_str(gw *w, const char *arch, const char *k, const char *v) { key(w, arch, k, G_STR); put_str(w, v, strlen(v)); }
/* An array of n strings: text + off[0..n] */
static void kv_strs(gw *w, const char *k, const char *text, const size_t *off, size_t n) {
    key(w, NULL, k, G_ARR);
    put_u32(w, G_STR);
    put_u64(w, n);
    for (size_t i = 0; i < n; i++) put_str(w, text + off[i], off[i + 1] - off[i]);
}

static void tokenizer_kvs(gw *w, const moe_ix_vocab *v, const moe_tokenizer *tok, const char *pre) {
    kv_str(w, NULL, "tokenizer.ggml.model", "gpt2");
    kv_str(w, NULL, "tokenizer.ggml.pre", pre);
    kv_strs(w, "tokenizer.ggml.tokens", v->text.data, v->off, v->n);
    key(w, NULL, "tokenizer.ggml.token_type", G_ARR);
    put_u32(w, G_I32);
    put_u64(w, v->n);
    for (uint32_t i = 0; i < v->n; i++) put(w, &v->type[i], 4);
    kv_strs(w, "tokenizer.ggml.merges", v->merges.data ? v->merges.data : "", v->moff, v->n_merges);
    uint32_t eot = moe_tokenizer_eot(tok);
    kv_u32(w, NULL, "tokenizer.ggml.bos_token_id", eot);
    kv_u32(w, NULL, "tokenizer.ggml.eos_token_id", eot);
    kv_bool(w, NULL, "tokenizer.ggml.add_bos_token", 0);
    kv_bool(w, NULL, "tokenizer.ggml.add_eos_token", 0);
}

static void model_kvs(gw *w, const moe_model *m, const moe_ix_plan *p, moe_st_dtype type) {
    const moe_config *c = &m->cfg;
    const char *a = p->arch;
    kv_str(w, NULL, "general.architecture", a);
    kv_str(w, NULL, "general.name", "moe");
    kv_u32(w, NULL, "general.file_type", type == MOE_ST_F16 ? 1 : type == MOE_ST_BF16 ? 32 : 0);
    kv_u32(w, NULL, "general.alignment", GGUF_ALIGN);
    kv_u32(w, a, "vocab_size", (uint32_t)c->vocab_size);
    kv_u32(w, a, "context_length", (uint32_t)c->max_seq_len);
    kv_u32(w, a, "embedding_length", (uint32_t)c->hidden);
    kv_u32(w, a, "block_count", (uint32_t)c->n_layers);
    /* llama's experts take feed_forward_length; the others have their own key */
    kv_u32(w, a, "feed_forward_length", (uint32_t)(p->moe && !strcmp(a, "llama") ? p->expert_ff : c->ffn_dim));
    kv_u32(w, a, "attention.head_count", (uint32_t)c->n_heads);
    kv_u32(w, a, "attention.head_count_kv", (uint32_t)c->n_kv_heads);
    kv_f32(w, a, "attention.layer_norm_rms_epsilon", (float)c->norm_eps);
    kv_f32(w, a, "rope.freq_base", (float)c->rope_theta);
    kv_u32(w, a, "rope.dimension_count", (uint32_t)(c->hidden / c->n_heads));
    if (!p->moe) return;
    kv_u32(w, a, "expert_count", (uint32_t)p->n_expert);
    kv_u32(w, a, "expert_used_count", (uint32_t)p->n_used);
    if (!strcmp(a, "llama")) return;
    kv_u32(w, a, "expert_feed_forward_length", (uint32_t)p->expert_ff);
    kv_u32(w, a, "expert_shared_count", (uint32_t)p->n_shared);
    kv_u32(w, a, "leading_dense_block_count", 0);
    kv_f32(w, a, "expert_weights_scale", 1.0f);
    if (!strcmp(a, "bailingmoe")) kv_bool(w, a, "expert_weights_norm", p->renorm);
}

static size_t align_up(size_t x) { return (x + GGUF_ALIGN - 1) / GGUF_ALIGN * GGUF_ALIGN; }

int moe_export_gguf(const moe_model *m, const moe_tokenizer *tok, const char *path,
                    moe_st_dtype type, moe_err *err) {
    if (type != MOE_ST_F32 && type != MOE_ST_F16 && type != MOE_ST_BF16)
        return moe_errf(err, "export: tensor type must be f32, f16 or bf16");
    moe_ix_plan p;
    const char *pre, *regex;
    if (moe_ix_plan_make(&m->cfg, MOE_IX_GGUF, &p, err) || moe_ix_pretok_names(tok, &pre, &regex, err)) return -1;
    moe_ix_map *maps;
    size_t n;
    moe_ix_vocab v;
    if (moe_ix_maps_make(m, &p, &maps, &n, err)) return -1;
    if (moe_ix_vocab_make(tok, (uint32_t)m->cfg.vocab_size, &v, err)) { free(maps); return -1; }
    gw w = {0};
    moe_buf cfg = {0};
    model_kvs(&w, m, &p, type);
    tokenizer_kvs(&w, &v, tok, pre);
    w.failed |= moe_config_to_json(&m->cfg, &cfg);
    if (!w.failed) kv_str(&w, NULL, "moe.config", cfg.data);  /* moe's own keys, for import */
    moe_buf_free(&cfg);
    moe_ix_vocab_free(&v);
    /* header, then tensor infos */
    gw h = {0};
    put(&h, "GGUF", 4);
    put_u32(&h, 3);
    put_u64(&h, n);
    put_u64(&h, w.n_kv);
    put(&h, w.b.data, w.b.len);
    moe_buf_free(&w.b);
    h.failed |= w.failed;
    size_t off = 0, maxn = 0;
    for (size_t i = 0; i < n; i++) {
        const moe_ix_map *x = &maps[i];
        int t16 = type != MOE_ST_F32 && !x->is_norm;
        put_str(&h, x->name, strlen(x->name));
        put_u32(&h, (uint32_t)x->ndim);
        for (int d = x->ndim - 1; d >= 0; d--) put_u64(&h, (uint64_t)x->shape[d]);
        put_u32(&h, t16 ? (type == MOE_ST_F16 ? GT_F16 : GT_BF16) : GT_F32);
        put_u64(&h, off);
        off = align_up(off + moe_ix_map_size(x) * (t16 ? 2 : 4));
        if (moe_ix_map_size(x) > maxn) maxn = moe_ix_map_size(x);
    }
    static const char zeros[GGUF_ALIGN];
    put(&h, zeros, align_up(h.b.len) - h.b.len);
    float *buf = h.failed ? NULL : moe_malloc(maxn * sizeof(float), err);
    moe_afile f;
    int rc = !buf ? -1 : moe_afile_open(&f, path, err);
    if (h.failed && buf) rc = moe_errf(err, "out of memory writing %s", path);
    if (!rc) rc = moe_afile_write(&f, h.b.data, h.b.len, err);
    for (size_t i = 0; i < n && !rc; i++) {
        const moe_ix_map *x = &maps[i];
        size_t k = moe_ix_map_size(x), bytes;
        moe_ix_map_export(x, m->params, buf);
        if (type != MOE_ST_F32 && !x->is_norm) {
            uint16_t *h16 = (uint16_t *)buf;  /* in place: h16[j] is written after buf[j] is read */
            for (size_t j = 0; j < k; j++) h16[j] = type == MOE_ST_F16 ? moe_ix_f32_to_f16(buf[j]) : moe_ix_f32_to_bf16(buf[j]);
            bytes = 2 * k;
        } else {
            bytes = 4 * k;
        }
        rc = moe_afile_write(&f, buf, bytes, err);
        if (!rc && align_up(bytes) > bytes) rc = moe_afile_write(&f, zeros, align_up(bytes) - bytes, err);
    }
    if (!rc) rc = moe_afile_commit(&f, err);
    else if (buf && !h.failed) moe_afile_abort(&f);
    free(buf);
    free(maps);
    moe_buf_free(&h.b);
    return rc;
}

/* ---- reading ------------------------------------------------------------- */

typedef struct gkv {
    char *key;
    uint32_t type, arr_type;
    uint64_t n;               /* array length */
    const uint8_t *val;       /* the value (for arrays: the first element) */
} gkv;

typedef struct gtensor {
    char *name;
    int ndim;
    int64_t shape[4];         /* row-major */
    uint32_t type;
    const uint8_t *data;
} gtensor;

typedef struct gfile {
    const char *path;
    uint8_t *blob;
    size_t len;
    gkv *kv;
    size_t n_kv;
    gtensor *t;
    size_t n_t;
} gfile;

typedef struct { const uint8_t *p, *end; const char *path; moe_err *err; int bad; } rd;

static int need(rd *r, size_t n) {
    if (r->bad) return -1;
    if ((size_t)(r->end - r->p) < n) {
        r->bad = 1;
        return moe_errf(r->err, "%s: truncated GGUF file (a header field runs past the end)", r->path);
    }
    return 0;
}
static uint32_t get_u32(rd *r) { uint32_t v = 0; if (!need(r, 4)) { memcpy(&v, r->p, 4); r->p += 4; } return v; }
static uint64_t get_u64(rd *r) { uint64_t v = 0; if (!need(r, 8)) { memcpy(&v, r->p, 8); r->p += 8; } return v; }
static char *get_str(rd *r) {
    uint64_t n = get_u64(r);
    if (r->bad || need(r, n)) return NULL;
    char *s = malloc(n + 1);
    if (!s) { r->bad = 1; moe_errf(r->err, "out of memory reading %s", r->path); return NULL; }
    memcpy(s, r->p, n);
    s[n] = 0;
    r->p += n;
    return s;
}
static size_t scalar_size(uint32_t t) {
    static const size_t sz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < 13 ? sz[t] : 0;
}
/* Skips one value of type t. */
static void skip_value(rd *r, uint32_t t) {
    if (t == G_STR) { uint64_t n = get_u64(r); if (!need(r, n)) r->p += n; return; }
    size_t s = scalar_size(t);
    if (!s) { r->bad = 1; moe_errf(r->err, "%s: unknown GGUF value type %u", r->path, t); return; }
    if (!need(r, s)) r->p += s;
}

static void gfile_free(gfile *g) {
    for (size_t i = 0; i < g->n_kv; i++) free(g->kv[i].key);
    for (size_t i = 0; i < g->n_t; i++) free(g->t[i].name);
    free(g->kv);
    free(g->t);
    free(g->blob);
}

static int gfile_read(const char *path, gfile *g, moe_err *err) {
    memset(g, 0, sizeof *g);
    g->path = path;
    if (!(g->blob = (uint8_t *)moe_read_file(path, &g->len, err))) return -1;
    rd r = {g->blob, g->blob + g->len, path, err, 0};
    if (g->len < 24 || memcmp(g->blob, "GGUF", 4))
        return moe_errf(err, "%s: not a GGUF file (no \"GGUF\" magic)", path);
    r.p += 4;
    uint32_t ver = get_u32(&r);
    if (ver != 2 && ver != 3) return moe_errf(err, "%s: GGUF version %u (expected 2 or 3)", path, ver);
    uint64_t nt = get_u64(&r), nkv = get_u64(&r);
    if (nt > g->len / 8 || nkv > g->len / 8) return moe_errf(err, "%s: implausible tensor or key count", path);
    g->kv = calloc(nkv ? nkv : 1, sizeof *g->kv);
    g->t = calloc(nt ? nt : 1, sizeof *g->t);
    if (!g->kv || !g->t) return moe_errf(err, "out of memory reading %s", path);
    uint64_t align = GGUF_ALIGN;
    for (uint64_t i = 0; i < nkv && !r.bad; i++) {
        gkv *k = &g->kv[g->n_kv++];
        k->key = get_str(&r);
        k->type = get_u32(&r);
        if (r.bad) break;
        if (k->type == G_ARR) {
            k->arr_type = get_u32(&r);
            k->n = get_u64(&r);
            k->val = r.p;
            if (k->arr_type == G_ARR) { r.bad = 1; moe_errf(err, "%s: key '%s': nested arrays", path, k->key); break; }
            for (uint64_t j = 0; j < k->n && !r.bad; j++) skip_value(&r, k->arr_type);
        } else {
            k->val = r.p;
            skip_value(&r, k->type);
        }
        if (!r.bad && !strcmp(k->key, "general.alignment") && k->type == G_U32) {
            uint32_t a;
            memcpy(&a, k->val, 4);
            if (!a || (a & (a - 1))) return moe_errf(err, "%s: general.alignment %u is not a power of two", path, a);
            align = a;
        }
    }
    for (uint64_t i = 0; i < nt && !r.bad; i++) {
        gtensor *t = &g->t[g->n_t++];
        t->name = get_str(&r);
        uint32_t nd = get_u32(&r);
        if (r.bad) break;
        if (nd < 1 || nd > 4) return moe_errf(err, "%s: tensor '%s': %u dimensions (expected 1..4)", path, t->name, nd);
        t->ndim = (int)nd;
        for (uint32_t d = 0; d < nd; d++) t->shape[nd - 1 - d] = (int64_t)get_u64(&r);
        t->type = get_u32(&r);
        t->data = (const uint8_t *)(uintptr_t)get_u64(&r);  /* offset for now */
    }
    if (r.bad) return -1;
    size_t data0 = ((size_t)(r.p - g->blob) + align - 1) / align * align;
    for (size_t i = 0; i < g->n_t; i++) {
        gtensor *t = &g->t[i];
        size_t off = (size_t)(uintptr_t)t->data, n = 1, es;
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] <= 0 || (size_t)t->shape[d] > g->len) return moe_errf(err, "%s: tensor '%s': bad dimension", path, t->name);
            n *= (size_t)t->shape[d];
            if (n > g->len) return moe_errf(err, "%s: tensor '%s' is larger than the file", path, t->name);
        }
        es = t->type == GT_F32 ? 4 : t->type == GT_F16 || t->type == GT_BF16 ? 2 : 0;
        if (!es)
            return moe_errf(err, "%s: tensor '%s' has ggml type %u; moe imports F32, F16 and BF16 only "
                            "(dequantize the file first)", path, t->name, t->type);
        if (data0 > g->len || off > g->len - data0 || n * es > g->len - data0 - off)
            return moe_errf(err, "%s: tensor '%s' runs past the end of the file", path, t->name);
        t->data = g->blob + data0 + off;
    }
    return 0;
}

static const gkv *gget(const gfile *g, const char *key) {
    for (size_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].key && !strcmp(g->kv[i].key, key)) return &g->kv[i];
    return NULL;
}

/* A numeric key as a double; -1 if missing or not a number. */
static int gnum(const gfile *g, const char *arch, const char *k, double *out) {
    char name[160];
    snprintf(name, sizeof name, arch ? "%s.%s" : "%.0s%s", arch ? arch : "", k);
    const gkv *v = gget(g, name);
    if (!v) return -1;
    switch (v->type) {
    case G_U32: { uint32_t x; memcpy(&x, v->val, 4); *out = x; return 0; }
    case G_I32: { int32_t x; memcpy(&x, v->val, 4); *out = x; return 0; }
    case G_U64: { uint64_t x; memcpy(&x, v->val, 8); *out = (double)x; return 0; }
    case G_F32: { float x; memcpy(&x, v->val, 4); *out = x; return 0; }
    case G_F64: { double x; memcpy(&x, v->val, 8); *out = x; return 0; }
    case G_BOOL: *out = v->val[0] != 0; return 0;
    case G_U8: *out = v->val[0]; return 0;
    default: return -1;
    }
}

static char *gstr(const gfile *g, const char *key) {
    const gkv *v = gget(g, key);
    if (!v || v->type != G_STR) return NULL;
    uint64_t n;
    memcpy(&n, v->val, 8);
    char *s = malloc(n + 1);
    if (s) { memcpy(s, v->val + 8, n); s[n] = 0; }
    return s;
}

static const gtensor *gtensor_find(const gfile *g, const char *name) {
    for (size_t i = 0; i < g->n_t; i++)
        if (!strcmp(g->t[i].name, name)) return &g->t[i];
    return NULL;
}

static size_t gtensor_size(const gtensor *t) {
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
    return n;
}

static void to_f32(const gtensor *t, float *out) {
    size_t n = gtensor_size(t);
    if (t->type == GT_F32) { memcpy(out, t->data, n * 4); return; }
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, t->data + 2 * i, 2);
        out[i] = t->type == GT_F16 ? moe_ix_f16_to_f32(h) : moe_ix_bf16_to_f32(h);
    }
}

static int all_zero(const gtensor *t) {  /* +0 and -0 both count */
    size_t n = gtensor_size(t);
    for (size_t i = 0; i < n; i++) {
        if (t->type == GT_F32) {
            uint32_t u;
            memcpy(&u, t->data + 4 * i, 4);
            if (u & 0x7FFFFFFF) return 0;
        } else {
            uint16_t h;
            memcpy(&h, t->data + 2 * i, 2);
            if (h & 0x7FFF) return 0;
        }
    }
    return 1;
}

/* A config value from the file (as f32) unless moe's own key rounds to it. */
static double prefer(double own, double file) { return (float)own == (float)file ? own : file; }

/* The moe config of a GGUF file: moe.config when present (training keys),
 * the architecture's keys for the shape (they win). */
/* A metadata number as a config integer: a value outside [0, INT_MAX] (or
 * NaN) becomes -1, which the config's own range check then refuses by
 * name, instead of an out-of-range conversion. */
static int gint(double v) { return v >= 0 && v <= 2147483647.0 ? (int)v : -1; }

static int gguf_config(const gfile *g, moe_config *c, moe_err *err) {
    moe_config_defaults(c);
    char *own = gstr(g, "moe.config");
    if (own) {
        moe_json_value *j = moe_json_parse(own, strlen(own), "moe.config", err);
        int rc = !j || moe_config_apply_json(c, j, "moe.config", err);
        moe_json_free(j);
        free(own);
        if (rc) return moe_err_prefix(err, "%s", g->path);
    }
    char *arch = gstr(g, "general.architecture");
    if (!arch) return moe_errf(err, "%s: no general.architecture", g->path);
    const char *a = arch;
    int llama = !strcmp(a, "llama"), ds = !strcmp(a, "deepseek"), bl = !strcmp(a, "bailingmoe");
    if (!llama && !ds && !bl) {
        moe_errf(err, "%s: architecture '%s' is not one moe imports (llama, Mixtral-style llama, "
                 "deepseek, bailingmoe)", g->path, a);
        free(arch);
        return -1;
    }
    double v, E = 0, k = 0, ff, eps, theta;
    const gtensor *emb = gtensor_find(g, "token_embd.weight");
    int rc = 0;
    if (!emb || emb->ndim != 2) rc = moe_errf(err, "%s: no 2-D token_embd.weight", g->path);
    else if (gnum(g, a, "embedding_length", &v) || (c->hidden = gint(v), 0) ||
             gnum(g, a, "block_count", &v) || (c->n_layers = gint(v), 0) ||
             gnum(g, a, "attention.head_count", &v) || (c->n_heads = gint(v), 0) ||
             gnum(g, a, "feed_forward_length", &ff))
        rc = moe_errf(err, "%s: missing one of %s.embedding_length, block_count, attention.head_count, "
                      "feed_forward_length", g->path, a);
    if (!rc && (c->hidden <= 0 || c->n_heads <= 0 || c->n_layers <= 0))
        rc = moe_errf(err, "%s: %s.embedding_length, block_count and attention.head_count must be "
                      "positive whole numbers", g->path, a);
    if (!rc) {
        c->vocab_size = gint((double)emb->shape[0]);
        c->n_kv_heads = gnum(g, a, "attention.head_count_kv", &v) ? c->n_heads : gint(v);
        if (!gnum(g, a, "context_length", &v)) c->max_seq_len = gint(v);
        if (!gnum(g, a, "attention.layer_norm_rms_epsilon", &eps)) c->norm_eps = prefer(c->norm_eps, eps);
        theta = 10000.0;
        gnum(g, a, "rope.freq_base", &theta);
        c->rope_theta = prefer(c->rope_theta, theta);
        if (!gnum(g, a, "rope.dimension_count", &v) && gint(v) != c->hidden / c->n_heads)
            rc = moe_errf(err, "%s: rope.dimension_count %g: moe rotates whole heads (%d)", g->path, v,
                          c->hidden / c->n_heads);
        char sk[96];
        snprintf(sk, sizeof sk, "%s.rope.scaling.type", a);
        char *scaling = gstr(g, sk);
        if (scaling && strcmp(scaling, "none"))
            rc = moe_errf(err, "%s: %s \"%s\": moe has no RoPE scaling", g->path, sk, scaling);
        free(scaling);
        gnum(g, a, "expert_count", &E);
        gnum(g, a, "expert_used_count", &k);
        if (E != 0 && (gint(E) < 1 || E != floor(E) || gint(k) < 1 || k != floor(k) || k > E))
            rc = moe_errf(err, "%s: %s.expert_count %g and expert_used_count %g: expected whole numbers, "
                          "1 <= used <= count", g->path, a, E, k);
    }
    if (!rc && E == 0) {
        strcpy(c->ffn, "dense");
        c->ffn_dim = gint(ff);
        c->moe_every = 1;
    } else if (!rc) {
        double fe = ff, S = 0, lead = 0, scale = 1, norm = 1;
        if (!llama) {
            if (gnum(g, a, "expert_feed_forward_length", &fe))
                rc = moe_errf(err, "%s: no %s.expert_feed_forward_length", g->path, a);
            gnum(g, a, "expert_shared_count", &S);
            gnum(g, a, "leading_dense_block_count", &lead);
            gnum(g, a, "expert_weights_scale", &scale);
            norm = ds ? 0 : (gnum(g, a, "expert_weights_norm", &norm), norm);
        }
        if (lead != 0) rc = moe_errf(err, "%s: leading_dense_block_count %g: moe puts experts in every layer or by moe_every", g->path, lead);
        if (scale != 0 && scale != 1) rc = moe_errf(err, "%s: expert_weights_scale %g: moe's gates are not scaled", g->path, scale);
        if (gget(g, "deepseek.expert_gating_func") || gget(g, "bailingmoe.expert_gating_func")) {
            if (!gnum(g, a, "expert_gating_func", &v) && v != 1)
                rc = moe_errf(err, "%s: expert_gating_func %g: moe's TopK gates are a softmax", g->path, v);
        }
        strcpy(c->ffn, "moe");
        strcpy(c->router, "topk");
        c->moe_every = 1;
        int G = c->granularity >= 1 && gint(E) % c->granularity == 0 && gint(k) % c->granularity == 0 ? c->granularity : 1;
        c->granularity = G;
        c->n_experts = gint(E) / G;
        c->top_k = gint(k) / G;
        c->ffn_dim = gint(fe * G);
        c->norm_topk_prob = norm != 0;
        c->n_shared_experts = gint(S);
        if (S > 0) {  /* an all-zero shared expert adds nothing: it is the architecture's, not the model's */
            const gtensor *sg = gtensor_find(g, "blk.0.ffn_gate_shexp.weight");
            int zero = 1;
            for (int l = 0; l < c->n_layers && zero; l++) {
                static const char *const w[] = {"gate", "up", "down"};
                for (int i = 0; i < 3 && zero; i++) {
                    char name[96];
                    snprintf(name, sizeof name, "blk.%d.ffn_%s_shexp.weight", l, w[i]);
                    const gtensor *t = gtensor_find(g, name);
                    zero = t && all_zero(t);
                }
            }
            if (zero && sg) c->n_shared_experts = 0;
        }
    }
    free(arch);
    moe_ix_config_fit(c);
    if (!rc) rc = moe_config_finalize(c, err) ? moe_err_prefix(err, "%s", g->path) : 0;
    double held = 0;
    for (size_t i = 0; i < g->n_t; i++) held += (double)gtensor_size(&g->t[i]);
    if (emb && !gtensor_find(g, "output.weight")) held += (double)gtensor_size(emb);   /* a tied head: copied */
    if (!rc) {
        char what[4200];
        snprintf(what, sizeof what, "%s: the metadata", g->path);
        rc = moe_ix_check_held(c, held, what, "the tensors", err);
    }
    return rc;
}

/* The tokenizer of the file as moe's BPE, or NULL with why. */
static int gguf_tokenizer(const gfile *g, moe_tokenizer **tok, char *why, size_t cap, moe_err *err) {
    *tok = NULL;
    char *model = gstr(g, "tokenizer.ggml.model");
    const gkv *tk = gget(g, "tokenizer.ggml.tokens"), *mg = gget(g, "tokenizer.ggml.merges");
    int ok = model && !strcmp(model, "gpt2") && tk && tk->type == G_ARR && tk->arr_type == G_STR &&
             mg && mg->type == G_ARR && mg->arr_type == G_STR;
    if (!ok) snprintf(why, cap, "the file's tokenizer is not a byte-level BPE (tokenizer.ggml.model \"%s\")",
                      model ? model : "missing");
    free(model);
    if (!ok) return 0;
    const gkv *lists[2] = {tk, mg};
    const char **s[2] = {NULL, NULL};
    size_t *len[2] = {NULL, NULL};
    int rc = 0;
    for (int i = 0; i < 2 && !rc; i++) {
        s[i] = malloc((lists[i]->n + 1) * sizeof(char *));
        len[i] = malloc((lists[i]->n + 1) * sizeof(size_t));
        if (!s[i] || !len[i]) { rc = moe_errf(err, "out of memory"); break; }
        const uint8_t *p = lists[i]->val;
        for (uint64_t j = 0; j < lists[i]->n; j++) {
            uint64_t n;
            memcpy(&n, p, 8);
            s[i][j] = (const char *)p + 8;
            len[i][j] = n;
            p += 8 + n;
        }
    }
    if (!rc) rc = moe_tokenizer_from_vocab_texts(s[0], len[0], tk->n, s[1], len[1], mg->n, tok, why, cap, err);
    for (int i = 0; i < 2; i++) { free(s[i]); free(len[i]); }
    return rc;
}

int moe_import_gguf(const char *path, moe_model **out, moe_tokenizer **tok, char *why, size_t why_cap,
                    moe_err *err) {
    gfile g;
    moe_config c;
    moe_model *m = NULL;
    moe_ix_map *maps = NULL;
    size_t n = 0;
    moe_ix_plan p;
    *out = NULL;
    *tok = NULL;
    int rc = gfile_read(path, &g, err) || gguf_config(&g, &c, err) ||
             moe_model_create(&c, &m, err) || moe_ix_plan_make(&c, MOE_IX_GGUF, &p, err) ||
             moe_ix_maps_make(m, &p, &maps, &n, err) ? -1 : 0;
    float *buf = NULL;
    for (size_t i = 0; i < n && !rc; i++) {
        const moe_ix_map *x = &maps[i];
        const gtensor *t = gtensor_find(&g, x->name);
        if (!t && !strcmp(x->name, "output.weight"))  /* tied to the embedding (llama.cpp reads it so): */
            t = gtensor_find(&g, "token_embd.weight");  /* moe's lm_head starts as its copy */
        if (!t) { rc = moe_errf(err, "%s: missing tensor '%s'", path, x->name); break; }
        int same = t->ndim == x->ndim;
        for (int d = 0; d < x->ndim && same; d++) same = t->shape[d] == x->shape[d];
        if (!same) { rc = moe_errf(err, "%s: tensor '%s' does not have the shape the metadata implies", path, x->name); break; }
        if (x->op == MOE_IX_ZERO) {
            if (!all_zero(t)) rc = moe_errf(err, "%s: tensor '%s' is not zero and moe has no place for it", path, x->name);
            continue;
        }
        free(buf);
        if (!(buf = moe_malloc(moe_ix_map_size(x) * sizeof(float), err))) { rc = -1; break; }
        to_f32(t, buf);
        moe_ix_map_import(x, buf, m->params);
    }
    free(buf);
    for (size_t i = 0; i < g.n_t && !rc; i++) {
        int known = 0;
        for (size_t j = 0; j < n && !known; j++) known = !strcmp(maps[j].name, g.t[i].name);
        if (!known) rc = moe_errf(err, "%s: tensor '%s' has no place in a moe model", path, g.t[i].name);
    }
    if (!rc) rc = gguf_tokenizer(&g, tok, why, why_cap, err);
    free(maps);
    gfile_free(&g);
    if (rc) { moe_model_free(m); return -1; }
    *out = m;
    return 0;
}
