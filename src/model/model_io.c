/* model_io.c — a model on disk: DIR/config.json (every config key),
 * DIR/model.safetensors (one F32 tensor per layout entry, Hugging-Face names)
 * and, for routers that keep untrained state (router.h), DIR/router_state.safetensors. */
#include "moe/model/model.h"

#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "moe/util/checksum.h"
#include "moe/util/fileio.h"
#include "moe/moe/router.h"
#include "moe/util/json.h"
#include "moe/util/safetensors.h"
#include "moe/data/tokenizer.h"

/* What moe_layout_write's fill needs. */
typedef struct layout_source {
    const char *path;
    const moe_layout *L;
    int n_arrays;
    const float *const *arrays;
    moe_fetch_part fetch;
    void *arg;
    float *scratch;     /* [largest split tensor held] */
} layout_source;

/* `n` floats of tensor t (from element `first`) to the sink, if all finite. */
static int put_finite(const layout_source *s, const moe_tensor *t, const float *x, size_t n, size_t first,
                      moe_st_sink *sink, moe_err *err) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return moe_errf(err, "%s not written: tensor '%s' holds a non-finite value (%g at element %zu)",
                            s->path, t->name, (double)x[i], first + i);
    moe_st_sink_write(sink, x, n * sizeof(float));
    return 0;
}

/* Entry i: tensor i / n_arrays of array i % n_arrays; a split tensor's parts
 * in order, this process's from memory, the others fetched. */
static int fill_layout(void *arg, size_t i, moe_st_sink *sink, moe_err *err) {
    const layout_source *s = arg;
    const moe_tensor *t = &s->L->tensors[i / (size_t)s->n_arrays];
    int k = (int)(i % (size_t)s->n_arrays), rc = 0;
    const float *mine = s->arrays[k] + t->offset;
    if (!t->split) return put_finite(s, t, mine, t->size, 0, sink, err);
    for (int p = 0; p < s->L->parts; p++) {
        const float *x = mine;
        moe_err e;
        if (p != s->L->part) {
            if (!s->fetch) return moe_errf(err, "%s: tensor '%s' is divided among processes", s->path, t->name);
            if (s->fetch(s->arg, k, t, p, s->scratch, &e)) { if (!rc) { *err = e; rc = -1; } continue; }
            x = s->scratch;
        }
        if (!rc) rc = put_finite(s, t, x, t->size, (size_t)p * t->size, sink, err);
    }
    return rc;
}

int moe_layout_write(const char *path, const moe_layout *L, int n_arrays, const float *const *arrays,
                     const char *const *prefixes, moe_fetch_part fetch, void *arg,
                     const char *const *meta_keys, const char *const *meta_values, size_t meta_count,
                     moe_err *err) {
    size_t n = L->count * (size_t)n_arrays, biggest = 0;
    moe_st_entry *e = moe_calloc(n ? n : 1, sizeof *e, err);
    char (*names)[MOE_NAME_MAX + 16] = e ? moe_calloc(n ? n : 1, sizeof *names, err) : NULL;
    if (!names) { free(e); return -1; }
    for (size_t i = 0; i < n; i++) {
        const moe_tensor *t = &L->tensors[i / (size_t)n_arrays];
        snprintf(names[i], sizeof names[0], "%s%s", prefixes[i % (size_t)n_arrays], t->name);
        e[i].name = names[i];
        e[i].dtype = MOE_ST_F32;
        e[i].ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++) e[i].shape[d] = t->shape[d];
        if (t->split && t->size > biggest) biggest = t->size;
    }
    layout_source s = {path, L, n_arrays, arrays, fetch, arg, NULL};
    int rc = biggest && !(s.scratch = moe_floats_alloc(biggest, err)) ? -1 : 0;
    if (!rc) rc = moe_st_write_from(path, e, n, meta_keys, meta_values, meta_count, fill_layout, &s, err);
    moe_floats_free(s.scratch);
    free(names);
    free(e);
    return rc;
}

/* ---- router state ------------------------------------------------------ */

/* Every router's state tensors with their names ("model.layers.L.mlp.router.
 * NAME"); *n_out of them (0: the model has none). Free *out and *names.
 * (Only the first router of a layer: the layers with state have one.) */
static int router_states(const moe_model *m, moe_router_state **out, char (**names)[MOE_NAME_MAX],
                         size_t *n_out, moe_err *err) {
    size_t n = 0;
    *out = NULL;
    *names = NULL;
    *n_out = 0;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        moe_router *r = moe_model_router(m, l, 0);
        if (r && r->ops->state) n += r->ops->state(r, NULL, 0);
    }
    if (!n) return 0;
    *out = moe_calloc(n, sizeof **out, err);
    *names = *out ? moe_calloc(n, sizeof **names, err) : NULL;
    if (!*names) { free(*out); *out = NULL; return -1; }
    size_t k = 0;
    for (int l = 0; l < m->cfg.n_layers && k < n; l++) {
        moe_router *r = moe_model_router(m, l, 0);
        if (!r || !r->ops->state) continue;
        size_t got = r->ops->state(r, *out + k, n - k);
        for (size_t i = 0; i < got && k < n; i++, k++)
            snprintf((*names)[k], MOE_NAME_MAX, "model.layers.%d.mlp.router.%s", l, (*out)[k].name);
    }
    *n_out = k;
    return 0;
}

static int save_router_state(const moe_model *m, const char *dir, moe_err *err) {
    moe_router_state *st;
    char (*names)[MOE_NAME_MAX];
    size_t n;
    if (router_states(m, &st, &names, &n, err)) return -1;
    if (!n) return 0;
    moe_st_entry *e = moe_calloc(n, sizeof *e, err);
    char path[4096];
    int rc = e ? moe_path(path, sizeof path, err, "%s/router_state.safetensors", dir) : -1;
    for (size_t i = 0; !rc && i < n; i++)
        e[i] = (moe_st_entry){names[i], MOE_ST_F32, 1, {(int64_t)st[i].n}, st[i].data};
    const char *mk[] = {"format"}, *mv[] = {"pt"};
    if (!rc) rc = moe_st_write(path, e, n, mk, mv, 1, err);
    free(e);
    free(st);
    free(names);
    return rc;
}

/* Reads router_state.safetensors when the model has router state: every
 * tensor present, of its shape, and nothing else. */
static int load_router_state(moe_model *m, const char *ckpt, moe_err *err) {
    moe_router_state *st;
    char (*names)[MOE_NAME_MAX];
    size_t n;
    char path[4096];
    if (router_states(m, &st, &names, &n, err)) return -1;
    if (!n) return 0;
    moe_st_file f;
    int rc = moe_path(path, sizeof path, err, "%s/router_state.safetensors", ckpt);
    if (!rc && access(path, F_OK))
        rc = moe_errf(err, "%s: missing: config.json asks for router state (relu_lambda_per_layer, "
                      "aux_free_bias) that this file holds", path);
    if (!rc) rc = moe_checksums_verify(ckpt, "router_state.safetensors", err) || moe_st_read(path, &f, err) ? -1 : 0;
    if (!rc) {
        for (size_t i = 0; i < n && !rc; i++)
            rc = moe_st_load_f32(&f, names[i], (int64_t[]){(int64_t)st[i].n}, 1, st[i].data, err);
        for (size_t i = 0; i < f.count && !rc; i++) {
            size_t j = 0;
            while (j < n && strcmp(names[j], f.tensors[i].name)) j++;
            if (j == n)
                rc = moe_errf(err, "%s: unexpected tensor '%s' (config.json does not describe it)", path,
                              f.tensors[i].name);
        }
        moe_st_free(&f);
    }
    free(st);
    free(names);
    return rc;
}

int moe_model_save(const moe_model *m, const char *dir, moe_err *err) {
    return moe_model_save_divided(m, dir, NULL, NULL, err);
}

int moe_model_save_divided(const moe_model *m, const char *dir, moe_fetch_part fetch, void *arg,
                           moe_err *err) {
    if (moe_mkdirs(dir, err)) return -1;
    /* the weights first: poisoned ones are never written (a checkpoint is
     * always one to return to), and a refused save leaves no config.json
     * describing weights that are not there */
    char path[4096];
    const char *mk[] = {"format"}, *mv[] = {"pt"}, *prefix[] = {""};
    const float *arrays[] = {m->params};
    if (moe_path(path, sizeof path, err, "%s/model.safetensors", dir) ||
        moe_layout_write(path, &m->layout, 1, arrays, prefix, fetch, arg, mk, mv, 1, err) ||
        save_router_state(m, dir, err))
        return -1;
    moe_buf cfg = {0};
    if (moe_path(path, sizeof path, err, "%s/config.json", dir)) return -1;
    if (moe_config_to_json(&m->cfg, &cfg)) return moe_errf(err, "out of memory writing config");
    int rc = moe_write_file_atomic(path, cfg.data, cfg.len, err);
    moe_buf_free(&cfg);
    return rc ? rc : moe_checksums_write(dir, err);
}

int moe_checkpoint_config(const char *dir, moe_config *cfg, moe_err *err) {
    char path[4096];
    if (moe_path(path, sizeof path, err, "%s/config.json", dir) ||
        moe_checksums_verify(dir, "config.json", err))
        return -1;
    /* moe_config_load with one default changed: a checkpoint written before
     * the key existed (or before "auto") ran fp32, so no key means fp32 */
    moe_config_defaults(cfg);
    snprintf(cfg->precision, sizeof cfg->precision, "fp32");
    return moe_config_load_over(path, cfg, err);
}

int moe_model_load_weights(moe_model *m, const char *ckpt, moe_err *err) {
    char path[4096];
    moe_st_file f;
    if (moe_path(path, sizeof path, err, "%s/model.safetensors", ckpt) ||
        moe_checksums_verify(ckpt, "model.safetensors", err) || moe_st_read(path, &f, err))
        return -1;
    int rc = 0;
    for (size_t i = 0; i < m->layout.count && !rc; i++) {
        const moe_tensor *t = &m->layout.tensors[i];
        rc = moe_st_load_f32_range(&f, t->name, t->shape, t->ndim, t->first, t->size, m->params + t->offset, err);
    }
    for (size_t i = 0; i < f.count && !rc; i++)
        if (!moe_layout_find(&m->layout, f.tensors[i].name))
            rc = moe_errf(err, "%s: unexpected tensor '%s' (config.json does not describe it)",
                          path, f.tensors[i].name);
    moe_st_free(&f);
    return rc ? rc : load_router_state(m, ckpt, err);
}

int moe_model_load(const char *dir, moe_model **out, moe_err *err) {
    return moe_model_load_precision(dir, NULL, out, err);
}

int moe_model_load_precision(const char *dir, const char *precision, moe_model **out, moe_err *err) {
    char ckpt[4096];
    if (moe_resolve_checkpoint(dir, ckpt, sizeof ckpt, err)) return -1;
    moe_config cfg;
    if (moe_checkpoint_config(ckpt, &cfg, err)) return -1;
    if (precision) snprintf(cfg.precision, sizeof cfg.precision, "%s", precision);  /* create checks it */
    moe_model *m;
    if (moe_model_create(&cfg, &m, err)) return -1;
    if (moe_model_load_weights(m, ckpt, err)) { moe_model_free(m); return -1; }
    *out = m;
    return 0;
}

int moe_checkpoint_tokenizer(const char *ckpt, const char *path, moe_tokenizer **out, moe_err *err) {
    char own[4096];
    *out = NULL;
    if (!path) {
        if (moe_path(own, sizeof own, err, "%s/tokenizer", ckpt)) return -1;
        if (access(own, F_OK)) return 0;
        if (moe_checksums_verify(ckpt, "tokenizer", err)) return -1;
        path = own;
    }
    return moe_tokenizer_load(path, out, err);
}

static int is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* What another program's model at `dir` is ("a GGUF file", "a transformers
 * directory"), which moe import reads; NULL when it is none of these. */
static const char *foreign_model(const char *dir) {
    char path[4200], head[4] = {0};
    FILE *f = is_file(dir) ? fopen(dir, "rb") : NULL;
    if (f) {
        size_t n = fread(head, 1, 4, f);
        fclose(f);
        return n == 4 && !memcmp(head, "GGUF", 4) ? "a GGUF file" : NULL;
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    moe_err ignored;
    char *text = is_file(path) ? moe_read_file(path, NULL, &ignored) : NULL;
    int hf = text && strstr(text, "\"architectures\"") != NULL;
    free(text);
    return hf ? "a transformers directory" : NULL;
}

int moe_resolve_checkpoint(const char *dir, char *out, size_t cap, moe_err *err) {
    char path[4096], best_name[256] = "";
    const char *foreign = foreign_model(dir);
    if (foreign)
        return moe_errf(err, "%s is %s, not a moe model: bring it in with moe import --out DIR %s, then use DIR",
                        dir, foreign, dir);
    if (moe_path(path, sizeof path, err, "%s/model.safetensors", dir)) return -1;
    if (is_file(path)) return moe_path(out, cap, err, "%s", dir);
    if (moe_path(path, sizeof path, err, "%s/checkpoints", dir)) return -1;
    DIR *d = opendir(path);
    long best = -1;
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            char *end;
            if (strncmp(e->d_name, "step-", 5)) continue;
            long s = strtol(e->d_name + 5, &end, 10);
            if (*end || end == e->d_name + 5) continue;
            char mpath[4096];
            if (moe_path(mpath, sizeof mpath, NULL, "%s/%s/model.safetensors", path, e->d_name))
                continue;
            if (s > best && is_file(mpath)) {
                best = s;
                snprintf(best_name, sizeof best_name, "%s", e->d_name);
            }
        }
        closedir(d);
    }
    if (best < 0)
        return moe_errf(err, "%s: not a model directory (no model.safetensors, and no "
                        "checkpoints/step-*/model.safetensors inside)", dir);
    return moe_path(out, cap, err, "%s/%s", path, best_name);
}

int moe_checkpoint_run(const char *ckpt, char *run, size_t cap) {
    char real[PATH_MAX];
    if (!realpath(ckpt, real)) return 0;
    char *name = strrchr(real, '/');
    if (!name || name == real || strncmp(name + 1, "step-", 5)) return 0;
    *name = '\0';
    char *parent = strrchr(real, '/');
    if (!parent || strcmp(parent + 1, "checkpoints")) return 0;
    *parent = '\0';
    return moe_path(run, cap, NULL, "%s", parent == real ? "/" : real) ? 0 : 1;
}
