/* test_safetensors.c — unit tests of the safetensors reader and writer: round
 * trips, a file assembled byte by byte from the format spec, and every
 * validation error with its message. */
#include "harness.h"
#include "moe/util/fileio.h"
#include "moe/util/safetensors.h"

#include <stdint.h>
#include <string.h>
#include <unistd.h>

static char dir[256];

/* Writes 8-byte length + header + data by hand (independent of moe_st_write). */
static void write_raw_len(const char *path, uint64_t hlen, const char *header, size_t header_len,
                          const void *data, size_t data_len) {
    FILE *fp = fopen(path, "wb");
    if (!fp) { perror(path); exit(1); }
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)(hlen >> (8 * i));
    fwrite(len, 1, 8, fp);
    fwrite(header, 1, header_len, fp);
    if (data_len) fwrite(data, 1, data_len, fp);
    fclose(fp);
}

static void write_raw(const char *path, const char *header, size_t data_len) {
    static const unsigned char zeros[4096];
    write_raw_len(path, strlen(header), header, strlen(header), zeros, data_len);
}

static void expect_read_error(const char *header, size_t data_len, const char *want) {
    char path[512];
    snprintf(path, sizeof path, "%s/bad.safetensors", dir);
    write_raw(path, header, data_len);
    moe_st_file f;
    moe_err err = {{0}};
    int rc = moe_st_read(path, &f, &err);
    CHECK(rc == -1, "accepted header %s", header);
    CHECK(strncmp(err.msg, path, strlen(path)) == 0, "message does not name the file: %s", err.msg);
    CHECK(strstr(err.msg, want) != NULL, "header %s: message '%s' lacks '%s'", header, err.msg, want);
    CHECK(f.tensors == NULL && f.blob == NULL && f.count == 0, "moe_st_read left state behind on failure");
    if (rc == 0) moe_st_free(&f);
}

static void test_round_trip(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/rt.safetensors", dir);
    float w[2][3] = {{1, 2, 3}, {4, 5, -6.5f}};
    int64_t ids[3] = {-1, 0, INT64_MAX};
    unsigned char bytes[5] = {1, 2, 3, 4, 5};
    uint16_t half[2] = {0x3c00, 0xc000};
    double scalar = 3.25;
    int32_t i32[4] = {7, 8, 9, 10};
    moe_st_entry e[] = {
        {"model.w", MOE_ST_F32, 2, {2, 3}, w},
        {"bytes", MOE_ST_U8, 1, {5}, bytes},         /* odd size: later data is unaligned */
        {"ids", MOE_ST_I64, 1, {3}, ids},
        {"h", MOE_ST_BF16, 2, {1, 2}, half},
        {"f16", MOE_ST_F16, 1, {2}, half},
        {"empty", MOE_ST_F32, 2, {0, 4}, NULL},
        {"scalar", MOE_ST_F64, 0, {0}, &scalar},
        {"i32", MOE_ST_I32, 4, {1, 1, 2, 2}, i32},
    };
    size_t n = sizeof e / sizeof e[0];
    const char *mk[] = {"format", "note"}, *mv[] = {"pt", "quote \" and \\ and \xc3\xa9"};
    moe_err err = {{0}};
    CHECK(moe_st_write(path, e, n, mk, mv, 2, &err) == 0, "%s", err.msg);

    moe_st_file f;
    CHECK(moe_st_read(path, &f, &err) == 0, "%s", err.msg);
    if (f.blob == NULL) return;
    CHECK(f.count == n, "count %zu", f.count);
    CHECK((size_t)(f.data - f.blob) % 8 == 0, "data section starts at %zu, not 8-aligned", (size_t)(f.data - f.blob));
    size_t at = 0;
    for (size_t i = 0; i < n && i < f.count; i++) {
        const moe_st_tensor *t = &f.tensors[i];
        CHECK(strcmp(t->name, e[i].name) == 0, "order: %s at %zu", t->name, i);
        CHECK(t->dtype == e[i].dtype && t->ndim == e[i].ndim, "%s dtype/ndim", t->name);
        for (int d = 0; d < t->ndim; d++) CHECK(t->shape[d] == e[i].shape[d], "%s shape", t->name);
        CHECK(t->begin == at, "%s laid out at %zu, expected %zu", t->name, t->begin, at);
        size_t sz = t->end - t->begin;
        CHECK(sz == 0 || memcmp(t->data, e[i].data, sz) == 0, "%s data differs", t->name);
        at = t->end;
    }
    CHECK(at == f.data_len, "data_len %zu, tensors end at %zu", f.data_len, at);
    CHECK(f.meta_count == 2 && strcmp(moe_st_meta(&f, "format"), "pt") == 0, "meta format");
    CHECK(moe_st_meta(&f, "note") && strcmp(moe_st_meta(&f, "note"), mv[1]) == 0, "meta note");
    CHECK(moe_st_meta(&f, "nope") == NULL, "missing meta");
    CHECK(moe_st_find(&f, "ids") == &f.tensors[2] && moe_st_find(&f, "nope") == NULL, "moe_st_find");

    float back[2][3];
    int64_t shape[2] = {2, 3};
    CHECK(moe_st_load_f32(&f, "model.w", shape, 2, &back[0][0], &err) == 0, "%s", err.msg);
    CHECK(memcmp(back, w, sizeof w) == 0, "loaded values differ");
    char want[600];
    CHECK(moe_st_load_f32(&f, "nope", shape, 2, &back[0][0], &err) == -1, "missing tensor loaded");
    snprintf(want, sizeof want, "%s: tensor 'nope' not found", path);
    CHECK(strcmp(err.msg, want) == 0, "%s", err.msg);
    int64_t s3[1] = {3};
    CHECK(moe_st_load_f32(&f, "ids", s3, 1, &back[0][0], &err) == -1, "I64 loaded as F32");
    snprintf(want, sizeof want, "%s: tensor 'ids' has dtype I64, expected F32", path);
    CHECK(strcmp(err.msg, want) == 0, "%s", err.msg);
    int64_t wrong[2] = {3, 2};
    CHECK(moe_st_load_f32(&f, "model.w", wrong, 2, &back[0][0], &err) == -1, "wrong shape loaded");
    snprintf(want, sizeof want, "%s: tensor 'model.w' has shape [2, 3], expected [3, 2]", path);
    CHECK(strcmp(err.msg, want) == 0, "%s", err.msg);
    CHECK(moe_st_load_f32(&f, "model.w", shape, 1, &back[0][0], &err) == -1 &&
          strstr(err.msg, "expected [2]"), "%s", err.msg);
    moe_st_free(&f);
    moe_st_free(&f);   /* safe on a freed (zeroed) file */

    /* issue 14.4: a valid file over a NaN or an infinity loads nothing */
    for (int k = 0; k < 2; k++) {
        float bad[2][3] = {{1, 2, 3}, {4, 5, 6}};
        bad[1][k] = k ? INFINITY : NAN;
        moe_st_entry be = {.name = "model.norm.weight", .dtype = MOE_ST_F32, .ndim = 2, .shape = {2, 3}, .data = bad};
        CHECK(moe_st_write(path, &be, 1, NULL, NULL, 0, &err) == 0 && moe_st_read(path, &f, &err) == 0, "%s", err.msg);
        char at[32];
        snprintf(at, sizeof at, "element %d)", 3 + k);
        CHECK(moe_st_load_f32(&f, "model.norm.weight", shape, 2, &back[0][0], &err) == -1 &&
              strstr(err.msg, "'model.norm.weight'") && strstr(err.msg, "non-finite") &&
              strstr(err.msg, at), "%s value loaded: %s", k ? "inf" : "nan", err.msg);
        moe_st_free(&f);
    }

    /* no tensors, no metadata */
    CHECK(moe_st_write(path, NULL, 0, NULL, NULL, 0, &err) == 0, "%s", err.msg);
    CHECK(moe_st_read(path, &f, &err) == 0 && f.count == 0 && f.meta_count == 0 && f.data_len == 0, "%s", err.msg);
    moe_st_free(&f);
}

/* A file assembled byte by byte as the format spec describes: 8-byte
 * little-endian header size, JSON header (tensors listed out of data order,
 * header length not a multiple of 8, trailing space padding), then data. */
static void test_hand_assembled(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/hand.safetensors", dir);
    const char header[] =
        "{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]},"
        "\"__metadata__\":{\"k\":\"v\"},"
        "\"a\":{\"shape\":[2],\"data_offsets\":[0,8],\"dtype\":\"I32\"}}   ";
    unsigned char data[16];
    int32_t a[2] = {-5, 70000};
    float b[2] = {0.5f, -1e30f};
    /* explicit little-endian byte order */
    for (int i = 0; i < 2; i++) {
        uint32_t ua = (uint32_t)a[i], ub;
        memcpy(&ub, &b[i], 4);
        for (int k = 0; k < 4; k++) {
            data[4 * i + k] = (unsigned char)(ua >> (8 * k));
            data[8 + 4 * i + k] = (unsigned char)(ub >> (8 * k));
        }
    }
    size_t hl = sizeof header - 1;
    write_raw_len(path, hl, header, hl, data, sizeof data);

    moe_st_file f;
    moe_err err = {{0}};
    CHECK(moe_st_read(path, &f, &err) == 0, "%s", err.msg);
    if (!f.blob) return;
    CHECK(f.blob_len == 8 + hl + 16 && f.data_len == 16, "sizes %zu %zu", f.blob_len, f.data_len);
    CHECK(f.count == 2 && strcmp(f.tensors[0].name, "b") == 0 && strcmp(f.tensors[1].name, "a") == 0,
          "header order kept");
    const moe_st_tensor *ta = moe_st_find(&f, "a");
    CHECK(ta && ta->dtype == MOE_ST_I32 && ta->begin == 0 && ta->end == 8, "a");
    int32_t aa[2];
    if (ta) memcpy(aa, ta->data, 8);
    CHECK(ta && aa[0] == -5 && aa[1] == 70000, "a values");
    float bb[2];
    int64_t shape[1] = {2};
    CHECK(moe_st_load_f32(&f, "b", shape, 1, bb, &err) == 0 && bb[0] == 0.5f && bb[1] == -1e30f, "%s", err.msg);
    CHECK(moe_st_meta(&f, "k") && strcmp(moe_st_meta(&f, "k"), "v") == 0, "metadata");
    moe_st_free(&f);
}

static void test_header_errors(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/bad.safetensors", dir);
    moe_st_file f;
    moe_err err = {{0}};
    char want[700];

    CHECK(moe_st_read("/nonexistent/x.safetensors", &f, &err) == -1 &&
          strstr(err.msg, "cannot open /nonexistent/x.safetensors: No such file or directory"), "%s", err.msg);

    FILE *fp = fopen(path, "wb");
    fwrite("\x02\0\0\0\0", 1, 5, fp);
    fclose(fp);
    CHECK(moe_st_read(path, &f, &err) == -1, "5-byte file accepted");
    snprintf(want, sizeof want, "%s: file is 5 bytes, expected at least 8 (the header length)", path);
    CHECK(strcmp(err.msg, want) == 0, "%s", err.msg);

    write_raw_len(path, 1000, "{}", 2, NULL, 0);
    CHECK(moe_st_read(path, &f, &err) == -1, "header longer than file");
    snprintf(want, sizeof want, "%s: header length 1000 is larger than the file (2 bytes after the length)", path);
    CHECK(strcmp(err.msg, want) == 0, "%s", err.msg);

    write_raw_len(path, 200000000ull, "{}", 2, NULL, 0);
    CHECK(moe_st_read(path, &f, &err) == -1 && strstr(err.msg, "header length 200000000 is larger than the 100 MB limit"),
          "%s", err.msg);
    write_raw_len(path, UINT64_MAX, "{}", 2, NULL, 0);
    CHECK(moe_st_read(path, &f, &err) == -1 && strstr(err.msg, "larger than the 100 MB limit"), "%s", err.msg);

    expect_read_error("{\"a\": ", 0, "bad.safetensors header:1:7: expected a JSON value, found end of input");
    expect_read_error("{\"a\":1}x", 0, "expected end of input after the JSON value, found 'x'");
    expect_read_error("[1, 2]  ", 0, ": header is an array, expected a JSON object");
    expect_read_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
                      "found duplicate key \"a\"");
    expect_read_error("{\"t\": 5}", 0,
                      ": tensor 't': expected an object with dtype, shape and data_offsets, found a number");
    expect_read_error("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4,
                      ": tensor 't': unexpected key 'x' (expected exactly dtype, shape, data_offsets)");
    expect_read_error("{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, ": tensor 't': missing 'shape'");
    expect_read_error("{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, ": tensor 't': missing 'dtype'");
    expect_read_error("{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, ": tensor 't': missing 'data_offsets'");
    expect_read_error("{\"t\":{\"dtype\":\"F8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
                      ": tensor 't': unknown dtype 'F8' (expected one of F32, F64, I32, I64, U8, F16, BF16)");
    expect_read_error("{\"t\":{\"dtype\":1,\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
                      ": tensor 't': dtype is a number, expected a string");
    expect_read_error("{\"t\":{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,16]}}", 16,
                      ": tensor 't': shape is a number, expected an array of non-negative integers");
    expect_read_error("{\"t\":{\"dtype\":\"F32\",\"shape\":[2,-3],\"data_offsets\":[0,0]}}", 0,
                      ": tensor 't': shape[1] is -3, expected a non-negative integer");
    expect_read_error("{\"t\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4,
                      ": tensor 't': shape[0] is 1.5, expected a non-negative integer");
    expect_read_error("{\"t\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8,
                      ": tensor 't': shape[0] is a string, expected a non-negative integer");
    expect_read_error("{\"t\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
                      ": tensor 't': shape has 9 dimensions, expected at most 8");
    expect_read_error("{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", 1,
                      ": tensor 't': data_offsets is an array with fewer than 2 items, expected an array [begin, end]");
    expect_read_error("{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", 1,
                      "data_offsets is an array with more than 2 items");
    expect_read_error("{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":{}}}", 1,
                      "data_offsets is an object, expected an array [begin, end]");
    expect_read_error("{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[-1,0]}}", 1,
                      ": tensor 't': data_offsets[0] is -1, expected a non-negative integer");
    expect_read_error("{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1e300]}}", 1,
                      ": tensor 't': data_offsets[1] is 1.0000000000000001e+300, expected a non-negative integer");
    expect_read_error("{\"t\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[3,2]}}", 4,
                      ": tensor 't': data_offsets [3, 2] has begin > end");
    expect_read_error("{\"t\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}", 4,
                      ": tensor 't': data_offsets [0, 8] end past the data section (4 bytes)");
    expect_read_error("{\"lm_head.weight\":{\"dtype\":\"F32\",\"shape\":[10,20],\"data_offsets\":[0,400]}}", 400,
                      ": tensor 'lm_head.weight': data_offsets [0, 400] do not match shape [10, 20] of F32 (800 bytes)");
    expect_read_error("{\"t\":{\"dtype\":\"F64\",\"shape\":[1048576,1048576,1048576,1048576],\"data_offsets\":[0,8]}}", 8,
                      ": tensor 't': shape [1048576, 1048576, 1048576, 1048576] of F64 is too large (size overflows)");
    expect_read_error("{\"t\":{\"dtype\":\"F64\",\"shape\":[4294967296,536870912],\"data_offsets\":[0,0]}}", 8,
                      "is too large (size overflows)");   /* elements fit, bytes do not */
    /* layout: overlap, hole, unused tail */
    expect_read_error("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                      "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}", 6,
                      ": tensor 'b': data_offsets [2, 6] overlap tensor 'a' [0, 4]");
    expect_read_error("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                      "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4,
                      ": tensor 'b': data_offsets [0, 4] overlap tensor 'a' [0, 4]");
    expect_read_error("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                      "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[6,8]}}", 8,
                      ": tensor 'b': data_offsets [6, 8] leave bytes [4, 6) of the data section unused");
    expect_read_error("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 6,
                      ": tensors end at byte 4 of the data section, but it has 6 bytes");
    expect_read_error("{}", 3, ": 3 bytes of data after the header but no tensors");
    /* metadata */
    expect_read_error("{\"__metadata__\":[]}", 0,
                      ": '__metadata__' is an array, expected an object of string -> string");
    expect_read_error("{\"__metadata__\":{\"a\":\"b\",\"n\":1}}", 0,
                      ": '__metadata__' entry 'n' is a number, expected a string");
    expect_read_error("{\"__metadata__\":{\"z\":\"a\\u0000b\"}}", 0,
                      ": '__metadata__' entry 'z' is a string, expected a string without \\u0000");

    /* zero-size tensors may sit anywhere in the tiling, empty metadata is fine */
    write_raw(path, "{\"__metadata__\":{},\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
                    "\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
                    "\"e\":{\"dtype\":\"F32\",\"shape\":[3,0],\"data_offsets\":[0,0]}}", 4);
    CHECK(moe_st_read(path, &f, &err) == 0, "%s", err.msg);
    if (f.blob) CHECK(f.count == 3 && f.meta_count == 0 && f.tensors[1].ndim == 0, "count %zu", f.count);
    moe_st_free(&f);
}

static void test_write_errors(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/w.safetensors", dir);
    float x[2] = {1, 2};
    moe_err err = {{0}};
    moe_st_entry dup[2] = {{"a", MOE_ST_F32, 1, {1}, x}, {"a", MOE_ST_F32, 1, {1}, x + 1}};
    CHECK(moe_st_write(path, dup, 2, NULL, NULL, 0, &err) == -1 && strstr(err.msg, "duplicate tensor name 'a'"),
          "%s", err.msg);
    moe_st_entry meta[1] = {{"__metadata__", MOE_ST_F32, 1, {1}, x}};
    CHECK(moe_st_write(path, meta, 1, NULL, NULL, 0, &err) == -1 && strstr(err.msg, "'__metadata__'"), "%s", err.msg);
    moe_st_entry nd[1] = {{"a", MOE_ST_F32, 9, {1}, x}};
    CHECK(moe_st_write(path, nd, 1, NULL, NULL, 0, &err) == -1 && strstr(err.msg, "ndim 9"), "%s", err.msg);
    moe_st_entry neg[1] = {{"a", MOE_ST_F32, 1, {-1}, x}};
    CHECK(moe_st_write(path, neg, 1, NULL, NULL, 0, &err) == -1 && strstr(err.msg, "shape [-1]"), "%s", err.msg);
    moe_st_entry nodata[1] = {{"a", MOE_ST_F32, 1, {2}, NULL}};
    CHECK(moe_st_write(path, nodata, 1, NULL, NULL, 0, &err) == -1 && strstr(err.msg, "data is NULL"), "%s", err.msg);
    const char *k[] = {"x", "x"}, *v[] = {"1", "2"};
    moe_st_entry ok[1] = {{"a", MOE_ST_F32, 1, {2}, x}};
    CHECK(moe_st_write(path, ok, 1, k, v, 2, &err) == -1 && strstr(err.msg, "duplicate metadata key 'x'"), "%s", err.msg);
    CHECK(access(path, F_OK) != 0, "a failed write left a file");

    /* a previous file survives a write into an unwritable place untouched */
    CHECK(moe_st_write(path, ok, 1, NULL, NULL, 0, &err) == 0, "%s", err.msg);
    char bad[600];
    snprintf(bad, sizeof bad, "%s/missing/w.safetensors", dir);
    CHECK(moe_st_write(bad, ok, 1, NULL, NULL, 0, &err) == -1 && strstr(err.msg, "missing/w.safetensors.tmp.") &&
          strstr(err.msg, "No such file or directory"), "%s", err.msg);
}

/* moe_st_write_from: a fill runs for every tensor even after an earlier one
 * failed (a source that receives bytes from other processes must stay in
 * step with them), the first error is the one returned, nothing is renamed
 * into place; a tensor given the wrong number of bytes is refused. And
 * moe_st_load_f32_range reads a block of a tensor. */
typedef struct { int calls, fail_at, short_at; float *x; } fill_probe;
static int probe_fill(void *arg, size_t i, moe_st_sink *sink, moe_err *err) {
    fill_probe *p = arg;
    p->calls++;
    if ((int)i == p->fail_at) return moe_errf(err, "source failed at %zu", i);
    moe_st_sink_write(sink, p->x + 2 * i, ((int)i == p->short_at ? 1 : 2) * sizeof(float));
    return 0;
}

static void test_write_from(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/from.safetensors", dir);
    float x[6] = {1, 2, 3, 4, 5, 6};
    moe_st_entry e[3] = {{"a", MOE_ST_F32, 1, {2}, NULL}, {"b", MOE_ST_F32, 1, {2}, NULL}, {"c", MOE_ST_F32, 1, {2}, NULL}};
    moe_err err = {{0}};
    fill_probe fail = {0, 1, -1, x};
    CHECK(moe_st_write_from(path, e, 3, NULL, NULL, 0, probe_fill, &fail, &err) == -1 &&
          strstr(err.msg, "source failed at 1"), "%s", err.msg);
    CHECK(fail.calls == 3, "fill called %d times after a failure, expected every tensor (3)", fail.calls);
    CHECK(access(path, F_OK) != 0, "a failed write left a file");
    fill_probe shortp = {0, -1, 2, x};
    CHECK(moe_st_write_from(path, e, 3, NULL, NULL, 0, probe_fill, &shortp, &err) == -1 &&
          strstr(err.msg, "tensor 'c': 4 bytes supplied, expected 8"), "%s", err.msg);
    fill_probe good = {0, -1, -1, x};
    CHECK(moe_st_write_from(path, e, 3, NULL, NULL, 0, probe_fill, &good, &err) == 0, "%s", err.msg);
    moe_st_file f;
    CHECK(moe_st_read(path, &f, &err) == 0, "%s", err.msg);
    float got[2] = {0, 0};
    CHECK(moe_st_load_f32_range(&f, "b", (int64_t[]){2}, 1, 1, 1, got, &err) == 0 && got[0] == 4.0f && got[1] == 0.0f,
          "range read %g %g: %s", got[0], got[1], err.msg);
    CHECK(moe_st_load_f32_range(&f, "c", (int64_t[]){2}, 1, 1, 2, got, &err) == -1 &&
          strstr(err.msg, "elements [1, 3) asked of 2"), "%s", err.msg);
    moe_st_free(&f);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/moe_test_st_XXXXXX");
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    RUN(test_round_trip);
    RUN(test_hand_assembled);
    RUN(test_header_errors);
    RUN(test_write_errors);
    RUN(test_write_from);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    TEST_MAIN_END();
}
