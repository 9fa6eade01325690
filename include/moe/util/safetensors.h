/* safetensors.h — reading and writing the safetensors format
 * (8-byte little-endian header length N, N bytes of JSON header, then data).
 * Every header field is validated on read: dtype, shape, offsets inside the
 * data, no overlaps, total size. */
#ifndef MOE_SAFETENSORS_H
#define MOE_SAFETENSORS_H

#include "moe/util/common.h"

typedef enum { MOE_ST_F32, MOE_ST_F64, MOE_ST_I32, MOE_ST_I64, MOE_ST_U8, MOE_ST_F16, MOE_ST_BF16 } moe_st_dtype;

#define MOE_ST_MAX_DIMS 8

typedef struct moe_st_tensor {
    char *name;
    moe_st_dtype dtype;
    int ndim;
    int64_t shape[MOE_ST_MAX_DIMS];
    size_t begin, end;      /* byte offsets into the data section */
    const void *data;       /* points into moe_st_file.data (read side) */
} moe_st_tensor;

typedef struct moe_st_file {
    char *path;
    moe_st_tensor *tensors;
    size_t count;
    unsigned char *blob;    /* the whole file */
    size_t blob_len;
    const unsigned char *data;  /* start of the data section inside blob */
    size_t data_len;
    /* "__metadata__": string -> string pairs (may be empty) */
    char **meta_keys, **meta_values;
    size_t meta_count;
} moe_st_file;

/* Reads and validates a file. Errors name the path and the tensor. */
int moe_st_read(const char *path, moe_st_file *out, moe_err *err);
void moe_st_free(moe_st_file *f);
const moe_st_tensor *moe_st_find(const moe_st_file *f, const char *name);
const char *moe_st_meta(const moe_st_file *f, const char *key);

/* Looks up `name`, checks it is F32 with exactly the given shape, and copies
 * its values into dst. Errors: missing tensor, wrong dtype, wrong shape, a
 * non-finite value (NaN or infinity: a poisoned model or optimiser state). */
int moe_st_load_f32(const moe_st_file *f, const char *name, const int64_t *shape, int ndim,
                float *dst, moe_err *err);

/* One tensor to write. */
typedef struct moe_st_entry {
    const char *name;
    moe_st_dtype dtype;
    int ndim;
    int64_t shape[MOE_ST_MAX_DIMS];
    const void *data;       /* product(shape) * dtype size bytes */
} moe_st_entry;

/* Writes entries (in the given order, data 8-byte aligned by padding the
 * header with spaces) atomically via moe_afile. meta may be NULL. */
int moe_st_write(const char *path, const moe_st_entry *entries, size_t n,
             const char *const *meta_keys, const char *const *meta_values,
             size_t meta_count, moe_err *err);

/* Writing tensors that are not all in one memory (a model whose experts are
 * divided among processes): entries give names, dtypes and shapes (their
 * data is not used), and fill(arg, i, sink, err) supplies tensor i's bytes
 * in order, by any number of moe_st_sink_write calls. fill is called for every
 * tensor even after a failure (of a write, or of an earlier fill), with the
 * sink then swallowing the bytes, so that a source that receives them from
 * other processes stays in step with the senders; the first error is
 * returned at the end and nothing is renamed into place. */
typedef struct moe_st_sink moe_st_sink;
typedef int (*st_fill)(void *arg, size_t i, moe_st_sink *sink, moe_err *err);
void moe_st_sink_write(moe_st_sink *sink, const void *data, size_t bytes);
int moe_st_write_from(const char *path, const moe_st_entry *entries, size_t n,
                  const char *const *meta_keys, const char *const *meta_values,
                  size_t meta_count, st_fill fill, void *arg, moe_err *err);

/* Elements [first, first + count) of F32 tensor `name` (of the given
 * shape) into dst: one process's rows of a tensor divided along dimension
 * 0. The checks of moe_st_load_f32. */
int moe_st_load_f32_range(const moe_st_file *f, const char *name, const int64_t *shape, int ndim,
                      size_t first, size_t count, float *dst, moe_err *err);

size_t moe_st_dtype_size(moe_st_dtype d);
const char *moe_st_dtype_name(moe_st_dtype d);

#endif
