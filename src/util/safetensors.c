/* safetensors.c — the safetensors reader (validates every header field, names
 * the file and tensor in each error) and the atomic, 8-byte-aligned writer. */
#include "moe/util/safetensors.h"
#include "moe/util/fileio.h"
#include "moe/util/json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#error "safetensors.c assumes a little-endian host (tensor data is copied as is)"
#endif

#define ST_MAX_HEADER (100u * 1000u * 1000u)

static const char *const dtype_names[] = {"F32", "F64", "I32", "I64", "U8", "F16", "BF16"};
static const size_t dtype_sizes[] = {4, 8, 4, 8, 1, 2, 2};
#define ST_NDTYPES (sizeof dtype_names / sizeof dtype_names[0])

size_t moe_st_dtype_size(moe_st_dtype d) {
    return (unsigned)d < ST_NDTYPES ? dtype_sizes[d] : 0;
}

const char *moe_st_dtype_name(moe_st_dtype d) {
    return (unsigned)d < ST_NDTYPES ? dtype_names[d] : "?";
}

/* "[10, 20]" into buf. */
static void fmt_shape(const int64_t *shape, int ndim, char *buf, size_t n) {
    size_t at = 0;
    at += (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && at < n; i++)
        at += (size_t)snprintf(buf + at, n - at, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (at < n) snprintf(buf + at, n - at, "]");
}

/* Bytes of a tensor: product(shape) * dtype size; -1 on size_t overflow. */
static int tensor_bytes(moe_st_dtype d, const int64_t *shape, int ndim, size_t *out) {
    size_t total = moe_st_dtype_size(d);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return -1;
        size_t s = (size_t)shape[i];
        if (s != 0 && total > (size_t)-1 / s) return -1;
        total *= s;
    }
    *out = total;
    return 0;
}

/* A JSON number that is an exact non-negative integer below 2^53. */
static int json_uint(const moe_json_value *v, uint64_t *out) {
    if (!v || v->type != MOE_JSON_NUMBER) return -1;
    double x = v->number;
    if (!(x >= 0) || x > 9007199254740992.0 || floor(x) != x) return -1;
    *out = (uint64_t)x;
    return 0;
}

/* Describes a JSON value for messages: "-3", "1.5", "a string", ... */
static void describe_value(const moe_json_value *v, char *buf, size_t n) {
    if (v->type == MOE_JSON_NUMBER) snprintf(buf, n, "%.17g", v->number);
    else snprintf(buf, n, "%s", moe_json_type_name(v->type));
}

void moe_st_free(moe_st_file *f) {
    if (!f) return;
    for (size_t i = 0; i < f->count; i++) free(f->tensors[i].name);
    for (size_t i = 0; i < f->meta_count; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->tensors);
    free(f->meta_keys);
    free(f->meta_values);
    free(f->blob);
    free(f->path);
    memset(f, 0, sizeof *f);
}

static char *dupstr(const char *s, moe_err *err) {
    size_t n = strlen(s);
    char *d = moe_malloc(n + 1, err);
    if (d) memcpy(d, s, n + 1);
    return d;
}

static int parse_metadata(moe_st_file *f, const moe_json_value *m, moe_err *err) {
    const char *path = f->path;
    if (m->type != MOE_JSON_OBJECT)
        return moe_errf(err, "%s: '__metadata__' is %s, expected an object of string -> string",
                        path, moe_json_type_name(m->type));
    if (m->count == 0) return 0;
    f->meta_keys = moe_calloc(m->count, sizeof *f->meta_keys, err);
    f->meta_values = moe_calloc(m->count, sizeof *f->meta_values, err);
    if (!f->meta_keys || !f->meta_values) return -1;
    for (size_t i = 0; i < m->count; i++) {
        const moe_json_value *v = &m->items[i];
        if (v->type != MOE_JSON_STRING || strlen(v->string) != v->len)
            return moe_errf(err, "%s: '__metadata__' entry '%s' is %s, expected a string%s", path,
                            m->keys[i], moe_json_type_name(v->type),
                            v->type == MOE_JSON_STRING ? " without \\u0000" : "");
        f->meta_keys[i] = dupstr(m->keys[i], err);
        if (!f->meta_keys[i]) return -1;
        f->meta_count = i + 1;   /* so moe_st_free releases what exists */
        f->meta_values[i] = dupstr(v->string, err);
        if (!f->meta_values[i]) return -1;
    }
    return 0;
}

/* Validates one header entry into t (t->name is already set). */
static int parse_entry(const moe_st_file *f, const moe_json_value *e, moe_st_tensor *t, moe_err *err) {
    const char *path = f->path, *name = t->name;
    char found[64];
    if (e->type != MOE_JSON_OBJECT)
        return moe_errf(err, "%s: tensor '%s': expected an object with dtype, shape and data_offsets, found %s",
                        path, name, moe_json_type_name(e->type));
    for (size_t i = 0; i < e->count; i++) {
        const char *k = e->keys[i];
        if (strcmp(k, "dtype") && strcmp(k, "shape") && strcmp(k, "data_offsets"))
            return moe_errf(err, "%s: tensor '%s': unexpected key '%s' (expected exactly dtype, shape, data_offsets)",
                            path, name, k);
    }
    const moe_json_value *dt = moe_json_get(e, "dtype"), *sh = moe_json_get(e, "shape"),
                     *off = moe_json_get(e, "data_offsets");
    const char *missing = !dt ? "dtype" : !sh ? "shape" : !off ? "data_offsets" : NULL;
    if (missing) return moe_errf(err, "%s: tensor '%s': missing '%s'", path, name, missing);

    if (dt->type != MOE_JSON_STRING)
        return moe_errf(err, "%s: tensor '%s': dtype is %s, expected a string", path, name, moe_json_type_name(dt->type));
    size_t d = 0;
    while (d < ST_NDTYPES && strcmp(dt->string, dtype_names[d]) != 0) d++;
    if (d == ST_NDTYPES)
        return moe_errf(err, "%s: tensor '%s': unknown dtype '%.64s' (expected one of F32, F64, I32, I64, U8, F16, BF16)",
                        path, name, dt->string);
    t->dtype = (moe_st_dtype)d;

    if (sh->type != MOE_JSON_ARRAY)
        return moe_errf(err, "%s: tensor '%s': shape is %s, expected an array of non-negative integers",
                        path, name, moe_json_type_name(sh->type));
    if (sh->count > MOE_ST_MAX_DIMS)
        return moe_errf(err, "%s: tensor '%s': shape has %zu dimensions, expected at most %d",
                        path, name, sh->count, MOE_ST_MAX_DIMS);
    t->ndim = (int)sh->count;
    for (size_t i = 0; i < sh->count; i++) {
        uint64_t x;
        if (json_uint(&sh->items[i], &x)) {
            describe_value(&sh->items[i], found, sizeof found);
            return moe_errf(err, "%s: tensor '%s': shape[%zu] is %s, expected a non-negative integer",
                            path, name, i, found);
        }
        t->shape[i] = (int64_t)x;
    }

    if (off->type != MOE_JSON_ARRAY || off->count != 2)
        return moe_errf(err, "%s: tensor '%s': data_offsets is %s%s, expected an array [begin, end]",
                        path, name, moe_json_type_name(off->type), off->type == MOE_JSON_ARRAY ?
                        (off->count < 2 ? " with fewer than 2 items" : " with more than 2 items") : "");
    uint64_t be[2];
    for (int i = 0; i < 2; i++) {
        if (json_uint(&off->items[i], &be[i])) {
            describe_value(&off->items[i], found, sizeof found);
            return moe_errf(err, "%s: tensor '%s': data_offsets[%d] is %s, expected a non-negative integer",
                            path, name, i, found);
        }
    }
    if (be[0] > be[1])
        return moe_errf(err, "%s: tensor '%s': data_offsets [%llu, %llu] has begin > end", path, name,
                        (unsigned long long)be[0], (unsigned long long)be[1]);
    if (be[1] > f->data_len)
        return moe_errf(err, "%s: tensor '%s': data_offsets [%llu, %llu] end past the data section (%zu bytes)",
                        path, name, (unsigned long long)be[0], (unsigned long long)be[1], f->data_len);
    t->begin = (size_t)be[0];
    t->end = (size_t)be[1];

    char shape[256];
    fmt_shape(t->shape, t->ndim, shape, sizeof shape);
    size_t bytes;
    if (tensor_bytes(t->dtype, t->shape, t->ndim, &bytes))
        return moe_errf(err, "%s: tensor '%s': shape %s of %s is too large (size overflows)",
                        path, name, shape, dtype_names[d]);
    if (t->end - t->begin != bytes)
        return moe_errf(err, "%s: tensor '%s': data_offsets [%zu, %zu] do not match shape %s of %s (%zu bytes)",
                        path, name, t->begin, t->end, shape, dtype_names[d], bytes);
    t->data = f->data + t->begin;
    return 0;
}

static int cmp_by_offsets(const void *a, const void *b) {
    const moe_st_tensor *x = *(const moe_st_tensor *const *)a, *y = *(const moe_st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* Tensors must tile the data section exactly: no overlaps, no holes (as the
 * reference Python implementation requires). */
static int check_layout(const moe_st_file *f, moe_err *err) {
    if (f->count == 0) {
        if (f->data_len) return moe_errf(err, "%s: %zu bytes of data after the header but no tensors",
                                         f->path, f->data_len);
        return 0;
    }
    const moe_st_tensor **order = moe_calloc(f->count, sizeof *order, err);
    if (!order) return -1;
    for (size_t i = 0; i < f->count; i++) order[i] = &f->tensors[i];
    qsort(order, f->count, sizeof *order, cmp_by_offsets);
    size_t at = 0;
    int rc = 0;
    for (size_t i = 0; i < f->count && rc == 0; i++) {
        const moe_st_tensor *t = order[i];
        if (t->begin < at)
            rc = moe_errf(err, "%s: tensor '%s': data_offsets [%zu, %zu] overlap tensor '%s' [%zu, %zu]",
                          f->path, t->name, t->begin, t->end, order[i - 1]->name,
                          order[i - 1]->begin, order[i - 1]->end);
        else if (t->begin > at)
            rc = moe_errf(err, "%s: tensor '%s': data_offsets [%zu, %zu] leave bytes [%zu, %zu) of the data section unused",
                          f->path, t->name, t->begin, t->end, at, t->begin);
        at = t->end;
    }
    if (rc == 0 && at != f->data_len)
        rc = moe_errf(err, "%s: tensors end at byte %zu of the data section, but it has %zu bytes",
                      f->path, at, f->data_len);
    free(order);
    return rc;
}

int moe_st_read(const char *path, moe_st_file *out, moe_err *err) {
    memset(out, 0, sizeof *out);
    moe_json_value *h = NULL;
    char *what = NULL;
    out->path = dupstr(path, err);
    if (!out->path) return -1;
    out->blob = (unsigned char *)moe_read_file(path, &out->blob_len, err);
    if (!out->blob) goto fail;
    size_t n = out->blob_len;
    if (n < 8) {
        moe_errf(err, "%s: file is %zu bytes, expected at least 8 (the header length)", path, n);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | out->blob[i];
    if (hlen > ST_MAX_HEADER) {
        moe_errf(err, "%s: header length %llu is larger than the 100 MB limit", path, (unsigned long long)hlen);
        goto fail;
    }
    if (hlen > n - 8) {
        moe_errf(err, "%s: header length %llu is larger than the file (%zu bytes after the length)",
                 path, (unsigned long long)hlen, n - 8);
        goto fail;
    }
    out->data = out->blob + 8 + hlen;
    out->data_len = n - 8 - (size_t)hlen;

    size_t wn = strlen(path) + 16;
    what = moe_malloc(wn, err);
    if (!what) goto fail;
    snprintf(what, wn, "%s header", path);
    h = moe_json_parse((const char *)out->blob + 8, (size_t)hlen, what, err);
    if (!h) goto fail;
    if (h->type != MOE_JSON_OBJECT) {
        moe_errf(err, "%s: header is %s, expected a JSON object", path, moe_json_type_name(h->type));
        goto fail;
    }
    out->tensors = moe_calloc(h->count, sizeof *out->tensors, err);
    if (!out->tensors) goto fail;
    for (size_t i = 0; i < h->count; i++) {
        if (strcmp(h->keys[i], "__metadata__") == 0) {
            if (parse_metadata(out, &h->items[i], err)) goto fail;
            continue;
        }
        moe_st_tensor *t = &out->tensors[out->count];
        t->name = dupstr(h->keys[i], err);
        if (!t->name) goto fail;
        out->count++;
        if (parse_entry(out, &h->items[i], t, err)) goto fail;
    }
    if (check_layout(out, err)) goto fail;
    moe_json_free(h);
    free(what);
    return 0;
fail:
    moe_json_free(h);
    free(what);
    moe_st_free(out);
    return -1;
}

const moe_st_tensor *moe_st_find(const moe_st_file *f, const char *name) {
    for (size_t i = 0; i < f->count; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *moe_st_meta(const moe_st_file *f, const char *key) {
    for (size_t i = 0; i < f->meta_count; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
    return NULL;
}

int moe_st_load_f32_range(const moe_st_file *f, const char *name, const int64_t *shape, int ndim,
                      size_t first, size_t count, float *dst, moe_err *err) {
    const moe_st_tensor *t = moe_st_find(f, name);
    if (!t) return moe_errf(err, "%s: tensor '%s' not found", f->path, name);
    if (t->dtype != MOE_ST_F32)
        return moe_errf(err, "%s: tensor '%s' has dtype %s, expected F32", f->path, name,
                        moe_st_dtype_name(t->dtype));
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char have[256], want[256];
        fmt_shape(t->shape, t->ndim, have, sizeof have);
        fmt_shape(shape, ndim < 0 ? 0 : ndim > MOE_ST_MAX_DIMS ? MOE_ST_MAX_DIMS : ndim, want, sizeof want);
        return moe_errf(err, "%s: tensor '%s' has shape %s, expected %s", f->path, name, have, want);
    }
    size_t n = (t->end - t->begin) / sizeof(float);
    if (first > n || count > n - first)
        return moe_errf(err, "%s: tensor '%s': elements [%zu, %zu) asked of %zu", f->path, name, first,
                        first + count, n);
    if (count) memcpy(dst, (const float *)t->data + first, count * sizeof(float));
    /* a valid checksum over a NaN is still poison: refuse it, naming the tensor */
    for (size_t i = 0; i < count; i++)
        if (!isfinite(dst[i]))
            return moe_errf(err, "%s: tensor '%s' holds a non-finite value (%g at element %zu): "
                            "these weights are poisoned; use an earlier checkpoint", f->path, name,
                            (double)dst[i], first + i);
    return 0;
}

int moe_st_load_f32(const moe_st_file *f, const char *name, const int64_t *shape, int ndim,
                float *dst, moe_err *err) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    return moe_st_load_f32_range(f, name, shape, ndim, 0, ndim >= 0 ? n : 0, dst, err);
}

/* Checks the entries (their data pointers too when need_data) and builds
 * the header JSON, padded to a multiple of 8. */
static int build_header(const char *path, const moe_st_entry *entries, size_t n,
                        const char *const *meta_keys, const char *const *meta_values,
                        size_t meta_count, int need_data, moe_buf *h, moe_err *err) {
    int oom = 0;
    oom |= moe_buf_append(h, "{", 1);
    if (meta_count) {
        oom |= moe_buf_append(h, "\"__metadata__\":{", 16);
        for (size_t i = 0; i < meta_count; i++) {
            if (!meta_keys[i] || !meta_values[i])
                return moe_errf(err, "%s: metadata entry %zu has a NULL key or value", path, i);
            for (size_t j = 0; j < i; j++)
                if (strcmp(meta_keys[i], meta_keys[j]) == 0)
                    return moe_errf(err, "%s: duplicate metadata key '%s'", path, meta_keys[i]);
            if (i) oom |= moe_buf_append(h, ",", 1);
            oom |= moe_json_write_string(h, meta_keys[i], strlen(meta_keys[i]));
            oom |= moe_buf_append(h, ":", 1);
            oom |= moe_json_write_string(h, meta_values[i], strlen(meta_values[i]));
        }
        oom |= moe_buf_append(h, "}", 1);
    }
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const moe_st_entry *e = &entries[i];
        if (!e->name || strcmp(e->name, "__metadata__") == 0)
            return moe_errf(err, "%s: tensor %zu: name must be set and not '__metadata__'", path, i);
        for (size_t j = 0; j < i; j++)
            if (strcmp(e->name, entries[j].name) == 0)
                return moe_errf(err, "%s: duplicate tensor name '%s'", path, e->name);
        if ((unsigned)e->dtype >= ST_NDTYPES)
            return moe_errf(err, "%s: tensor '%s': invalid dtype %d", path, e->name, (int)e->dtype);
        if (e->ndim < 0 || e->ndim > MOE_ST_MAX_DIMS)
            return moe_errf(err, "%s: tensor '%s': ndim %d, expected 0..%d", path, e->name, e->ndim, MOE_ST_MAX_DIMS);
        size_t bytes;
        if (tensor_bytes(e->dtype, e->shape, e->ndim, &bytes) || bytes > (size_t)-1 - at) {
            char shape[256];
            fmt_shape(e->shape, e->ndim, shape, sizeof shape);
            return moe_errf(err, "%s: tensor '%s': shape %s, expected non-negative sizes that fit in memory",
                            path, e->name, shape);
        }
        if (need_data && bytes && !e->data)
            return moe_errf(err, "%s: tensor '%s': data is NULL", path, e->name);
        if (i || meta_count) oom |= moe_buf_append(h, ",", 1);
        oom |= moe_json_write_string(h, e->name, strlen(e->name));
        oom |= moe_buf_printf(h, ":{\"dtype\":\"%s\",\"shape\":[", dtype_names[e->dtype]);
        for (int d = 0; d < e->ndim; d++) oom |= moe_buf_printf(h, "%s%lld", d ? "," : "", (long long)e->shape[d]);
        oom |= moe_buf_printf(h, "],\"data_offsets\":[%zu,%zu]}", at, at + bytes);
        at += bytes;
    }
    oom |= moe_buf_append(h, "}", 1);
    while (!oom && h->len % 8) oom |= moe_buf_append(h, " ", 1);
    if (oom) return moe_errf(err, "%s: out of memory building the header", path);
    return 0;
}

struct moe_st_sink {
    moe_afile *file;
    size_t bytes;      /* written for the current tensor */
    int failed;
    moe_err err;       /* the first failure */
};

void moe_st_sink_write(moe_st_sink *sink, const void *data, size_t bytes) {
    sink->bytes += bytes;
    if (!sink->failed && moe_afile_write(sink->file, data, bytes, &sink->err)) sink->failed = 1;
}

int moe_st_write_from(const char *path, const moe_st_entry *entries, size_t n,
                  const char *const *meta_keys, const char *const *meta_values,
                  size_t meta_count, st_fill fill, void *arg, moe_err *err) {
    moe_buf h = {0};
    if (build_header(path, entries, n, meta_keys, meta_values, meta_count, 0, &h, err)) {
        moe_buf_free(&h);
        return -1;
    }
    unsigned char lenbuf[8];
    uint64_t hl = h.len;
    for (int i = 0; i < 8; i++) lenbuf[i] = (unsigned char)(hl >> (8 * i));
    moe_afile f = {0};
    moe_st_sink sink = {.file = &f};
    if (moe_afile_open(&f, path, &sink.err)) sink.failed = 1;
    moe_st_sink_write(&sink, lenbuf, 8);
    moe_st_sink_write(&sink, h.data, h.len);
    moe_buf_free(&h);
    for (size_t i = 0; i < n; i++) {  /* every fill runs, even after a failure */
        size_t bytes = 0;
        moe_err e;
        tensor_bytes(entries[i].dtype, entries[i].shape, entries[i].ndim, &bytes);
        sink.bytes = 0;
        int rc = fill(arg, i, &sink, &e);
        if (sink.failed) continue;
        if (rc) {
            sink.failed = 1;
            sink.err = e;
        } else if (sink.bytes != bytes) {
            sink.failed = 1;
            moe_errf(&sink.err, "%s: tensor '%s': %zu bytes supplied, expected %zu", path,
                     entries[i].name, sink.bytes, bytes);
        }
    }
    if (!sink.failed && moe_afile_commit(&f, &sink.err)) sink.failed = 1;
    if (!sink.failed) return 0;
    moe_afile_abort(&f);
    *err = sink.err;
    return -1;
}

/* The entries' own data, for moe_st_write. */
static int fill_from_entries(void *arg, size_t i, moe_st_sink *sink, moe_err *err) {
    (void)err;
    const moe_st_entry *e = &((const moe_st_entry *)arg)[i];
    size_t bytes = 0;
    tensor_bytes(e->dtype, e->shape, e->ndim, &bytes);
    moe_st_sink_write(sink, e->data, bytes);
    return 0;
}

int moe_st_write(const char *path, const moe_st_entry *entries, size_t n,
             const char *const *meta_keys, const char *const *meta_values,
             size_t meta_count, moe_err *err) {
    moe_buf h = {0};  /* the entries' data pointers are checked here */
    int rc = build_header(path, entries, n, meta_keys, meta_values, meta_count, 1, &h, err);
    moe_buf_free(&h);
    return rc ? rc : moe_st_write_from(path, entries, n, meta_keys, meta_values, meta_count,
                                   fill_from_entries, (void *)entries, err);
}
