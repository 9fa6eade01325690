/* model_io.c — a model on disk: DIR/config.json (every config key) and
 * DIR/model.safetensors (one F32 tensor per layout entry, Hugging-Face names). */
#include "moe/model.h"

#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "moe/checksum.h"
#include "moe/fileio.h"
#include "moe/safetensors.h"
#include "moe/tokenizer.h"

int moe_model_save(const moe_model *m, const char *dir, moe_err *err) {
    /* poisoned weights are never written: a checkpoint is always one to return to */
    for (size_t k = 0; k < m->layout.count; k++) {
        const moe_tensor *t = &m->layout.tensors[k];
        for (size_t i = 0; i < t->size; i++)
            if (!isfinite(m->params[t->offset + i]))
                return moe_errf(err, "%s not written: tensor '%s' holds a non-finite value (%g at "
                                "element %zu)", dir, t->name, (double)m->params[t->offset + i], i);
    }
    if (moe_mkdirs(dir, err)) return -1;
    char path[4096];
    moe_buf cfg = {0};
    if (moe_path(path, sizeof path, err, "%s/config.json", dir)) return -1;
    if (moe_config_to_json(&m->cfg, &cfg)) return moe_errf(err, "out of memory writing config");
    int rc = moe_write_file_atomic(path, cfg.data, cfg.len, err);
    moe_buf_free(&cfg);
    if (rc) return -1;

    size_t n = m->layout.count;
    st_entry *e = moe_calloc(n, sizeof *e, err);
    if (!e) return -1;
    for (size_t i = 0; i < n; i++) {
        const moe_tensor *t = &m->layout.tensors[i];
        e[i].name = t->name;
        e[i].dtype = ST_F32;
        e[i].ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++) e[i].shape[d] = t->shape[d];
        e[i].data = m->params + t->offset;
    }
    const char *mk[] = {"format"}, *mv[] = {"pt"};
    rc = moe_path(path, sizeof path, err, "%s/model.safetensors", dir) ? -1 :
         st_write(path, e, n, mk, mv, 1, err);
    free(e);
    return rc ? rc : moe_checksums_write(dir, err);
}

int moe_checkpoint_config(const char *dir, moe_config *cfg, moe_err *err) {
    char path[4096];
    if (moe_path(path, sizeof path, err, "%s/config.json", dir) ||
        moe_checksums_verify(dir, "config.json", err))
        return -1;
    return moe_config_load(path, cfg, err);
}

int moe_model_load_weights(moe_model *m, const char *ckpt, moe_err *err) {
    char path[4096];
    st_file f;
    if (moe_path(path, sizeof path, err, "%s/model.safetensors", ckpt) ||
        moe_checksums_verify(ckpt, "model.safetensors", err) || st_read(path, &f, err))
        return -1;
    int rc = 0;
    for (size_t i = 0; i < m->layout.count && !rc; i++) {
        const moe_tensor *t = &m->layout.tensors[i];
        rc = st_load_f32(&f, t->name, t->shape, t->ndim, m->params + t->offset, err);
    }
    for (size_t i = 0; i < f.count && !rc; i++)
        if (!moe_layout_find(&m->layout, f.tensors[i].name))
            rc = moe_errf(err, "%s: unexpected tensor '%s' (config.json does not describe it)",
                          path, f.tensors[i].name);
    st_free(&f);
    return rc;
}

int moe_model_load(const char *dir, moe_model **out, moe_err *err) {
    char ckpt[4096];
    if (moe_resolve_checkpoint(dir, ckpt, sizeof ckpt, err)) return -1;
    moe_config cfg;
    if (moe_checkpoint_config(ckpt, &cfg, err)) return -1;
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

int moe_resolve_checkpoint(const char *dir, char *out, size_t cap, moe_err *err) {
    char path[4096], best_name[256] = "";
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
