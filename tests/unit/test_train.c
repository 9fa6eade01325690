/* test_train.c — config validation, token files, the loader's exact order,
 * the LR schedule, the AdamW kernel, determinism and exact resume from a
 * checkpoint. */
#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "moe/util/checksum.h"
#include "moe/util/fileio.h"
#include "moe/moe/router.h"
#include "moe/train/train.h"

static int parse_cfg(const char *text, moe_config *c, moe_err *err) {
    moe_config_defaults(c);
    strcpy(c->precision, "fp32");  /* exact fp32 products, whatever "auto" picks on this CPU */
    moe_json_value *j = moe_json_parse(text, strlen(text), "cfg.json", err);
    if (!j) return -1;
    int rc = moe_config_apply_json(c, j, "cfg.json", err);
    moe_json_free(j);
    return rc ? rc : moe_config_finalize(c, err);
}

static void test_config_validation(void) {
    moe_config c;
    moe_err err;
    CHECK(parse_cfg("{\"hidden\": 64}", &c, &err) == 0, "%s", err.msg);
    CHECK(c.ffn_dim == 256, "ffn_dim default is 4 x hidden, got %d", c.ffn_dim);
    CHECK(parse_cfg("{\"hiden\": 64}", &c, &err) < 0 && strstr(err.msg, "'hiden'"), "unknown key: %s", err.msg);
    CHECK(parse_cfg("{\"lr\": -1}", &c, &err) < 0 && strstr(err.msg, "'lr'"), "range: %s", err.msg);
    CHECK(parse_cfg("{\"n_layers\": 2.5}", &c, &err) < 0 && strstr(err.msg, "whole number"), "int: %s", err.msg);
    CHECK(parse_cfg("{\"shuffle\": 1}", &c, &err) < 0 && strstr(err.msg, "true or false"), "bool: %s", err.msg);
    CHECK(parse_cfg("{\"ffn\": \"sparse\"}", &c, &err) < 0 && strstr(err.msg, "'ffn'"), "enum: %s", err.msg);
    CHECK(parse_cfg("{\"hidden\": 64, \"n_heads\": 3}", &c, &err) < 0 && strstr(err.msg, "n_heads"), "heads: %s", err.msg);
    CHECK(parse_cfg("{\"n_kv_heads\": 3}", &c, &err) < 0 && strstr(err.msg, "n_kv_heads"), "kv: %s", err.msg);
    CHECK(parse_cfg("{\"seq_len\": 4096}", &c, &err) < 0 && strstr(err.msg, "max_seq_len"), "seq: %s", err.msg);
    CHECK(parse_cfg("[1]", &c, &err) < 0, "a non-object config is refused");
    /* issue 14.6: a string cut at \u0000 must not pass as its prefix */
    CHECK(parse_cfg("{\"ffn\": \"moe\", \"router\": \"relu\\u0000x\"}", &c, &err) < 0 &&
          strstr(err.msg, "'router'") && strstr(err.msg, "\\u0000"), "NUL in a string: %s", err.msg);
    /* issue 14.2: adam_eps 0 divides 0 by 0 for a parameter whose gradient is zero */
    CHECK(parse_cfg("{\"adam_eps\": 0}", &c, &err) < 0 && strstr(err.msg, "'adam_eps'"),
          "adam_eps 0: %s", err.msg);
    CHECK(parse_cfg("{\"adam_eps\": 1e-30}", &c, &err) == 0, "a tiny positive adam_eps: %s", err.msg);
}

/* A config filled by a program, as the GGUF and Hugging Face importers
 * fill one from a file's metadata, meets the same table as a JSON config
 * does: moe_config_finalize refuses a value out of range before its own
 * checks divide by it (the fuzzer's GGUF with n_experts 0). */
static void test_config_finalize_table(void) {
    static const struct { const char *key; size_t off; int value; } bad_ints[] = {
        {"n_experts", offsetof(moe_config, n_experts), 0},
        {"n_heads", offsetof(moe_config, n_heads), 0},
        {"moe_every", offsetof(moe_config, moe_every), 0},
        {"granularity", offsetof(moe_config, granularity), 0},
        {"n_kv_heads", offsetof(moe_config, n_kv_heads), 0},
        {"top_k", offsetof(moe_config, top_k), -1},
        {"hidden", offsetof(moe_config, hidden), 1},
        {"expert_parallel", offsetof(moe_config, expert_parallel), 0},
    };
    moe_err err;
    for (size_t i = 0; i < sizeof bad_ints / sizeof bad_ints[0]; i++) {
        moe_config c;
        CHECK(parse_cfg("{\"ffn\": \"moe\"}", &c, &err) == 0, "%s", err.msg);
        int *field = (int *)((char *)&c + bad_ints[i].off);
        *field = bad_ints[i].value;
        char want[64];
        snprintf(want, sizeof want, "key '%s': expected a whole number", bad_ints[i].key);
        CHECK(moe_config_finalize(&c, &err) < 0 && strstr(err.msg, want), "%s = %d: %s", bad_ints[i].key,
              bad_ints[i].value, err.msg);
    }
    moe_config c;
    CHECK(parse_cfg("{}", &c, &err) == 0, "%s", err.msg);
    c.norm_eps = NAN;
    CHECK(moe_config_finalize(&c, &err) < 0 && strstr(err.msg, "'norm_eps'"), "NaN norm_eps: %s", err.msg);
    CHECK(parse_cfg("{}", &c, &err) == 0, "%s", err.msg);
    c.shuffle = 2;
    CHECK(moe_config_finalize(&c, &err) < 0 && strstr(err.msg, "'shuffle'"), "bool 2: %s", err.msg);
    CHECK(parse_cfg("{}", &c, &err) == 0, "%s", err.msg);
    strcpy(c.router, "relux");
    CHECK(moe_config_finalize(&c, &err) < 0 && strstr(err.msg, "'router'") && strstr(err.msg, "\"relux\""),
          "enum: %s", err.msg);
    /* finalizing twice is harmless: the values it fills in are in range */
    CHECK(parse_cfg("{\"ffn\": \"moe\", \"router\": \"relu\"}", &c, &err) == 0 &&
          moe_config_finalize(&c, &err) == 0, "a second finalize: %s", err.msg);
}

static void write_tokens(const char *path, size_t n, uint32_t vocab) {
    moe_tokens t = {0};
    t.ids = malloc(n * sizeof(uint32_t));
    for (size_t i = 0; i < n; i++) t.ids[i] = (uint32_t)((i * 7 + i / 13) % vocab);
    t.n = n;
    t.vocab_size = vocab;
    moe_err err;
    if (moe_tokens_write(path, &t, &err)) fprintf(stderr, "%s\n", err.msg);
    free(t.ids);
}

static void test_tokens_roundtrip_and_errors(void) {
    char path[] = "/tmp/moe_test_tokXXXXXX";
    int fd = mkstemp(path);
    close(fd);
    moe_tokens t = {0}, u;
    uint32_t ids[5] = {1, 70000, 3, 4, 5};
    uint64_t starts[2] = {0, 3};
    uint32_t doms[2] = {0, 1};
    char *names[2] = {"fiction", "code"};
    t.ids = ids; t.n = 5; t.n_docs = 2; t.doc_start = starts; t.doc_domain = doms;
    t.n_domains = 2; t.domain_names = names;
    moe_err err;
    CHECK(moe_tokens_write(path, &t, &err) == 0, "%s", err.msg);
    CHECK(moe_tokens_read(path, &u, &err) == 0, "%s", err.msg);
    CHECK(u.tokenizer == NULL && u.tokenizer_len == 0, "a file without a tokenizer section has none");
    moe_tokens_free(&u);
    /* with the tokenizer recorded (issue 14.8); the loops below cut and flip it too */
    char tok_text[] = "moe-tokenizer 1 bytes 257\npattern none\neot 256\nmerges 0\n";
    t.tokenizer = tok_text;
    t.tokenizer_len = strlen(tok_text);
    CHECK(moe_tokens_write(path, &t, &err) == 0, "%s", err.msg);
    CHECK(moe_tokens_read(path, &u, &err) == 0, "%s", err.msg);
    CHECK(u.n == 5 && moe_token(&u, 1) == 70000 && moe_token(&u, 4) == 5 && u.n_docs == 2 && u.doc_start[1] == 3 &&
          u.doc_domain[1] == 1 && !strcmp(u.domain_names[1], "code"), "round trip");
    CHECK(u.tokenizer_len == strlen(tok_text) && u.tokenizer && !memcmp(u.tokenizer, tok_text, u.tokenizer_len),
          "the tokenizer section round-trips");
    moe_tokens_free(&u);
    /* truncation at every length is refused, never loaded */
    FILE *f = fopen(path, "rb");
    unsigned char buf[256];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    for (size_t cut = 0; cut < len; cut++) {
        f = fopen(path, "wb");
        fwrite(buf, 1, cut, f);
        fclose(f);
        int rc = moe_tokens_read(path, &u, &err);
        CHECK(rc < 0 && strstr(err.msg, path), "truncated at %zu: rc %d msg %s", cut, rc, err.msg);
    }
    /* every single-bit flip is refused (header fields, CRC, ids, documents, names) */
    for (size_t byte = 0; byte < len; byte++)
        for (int bit = 0; bit < 8; bit += 3) {
            if (byte == 44 && bit == 0) continue;  /* the flag that turns the CRC off: the data stays intact */
            buf[byte] ^= (unsigned char)(1 << bit);
            f = fopen(path, "wb"); fwrite(buf, 1, len, f); fclose(f);
            int rc = moe_tokens_read(path, &u, &err);
            CHECK(rc < 0, "flip of bit %d of byte %zu was loaded", bit, byte);
            if (!rc) moe_tokens_free(&u);
            buf[byte] ^= (unsigned char)(1 << bit);
        }
    buf[0] = 'X';
    f = fopen(path, "wb"); fwrite(buf, 1, len, f); fclose(f);
    CHECK(moe_tokens_read(path, &u, &err) < 0 && strstr(err.msg, "magic"), "%s", err.msg);
    unlink(path);
}

static void test_loader_order(void) {
    moe_tokens t = {0};
    uint32_t ids[101];
    for (int i = 0; i < 101; i++) ids[i] = (uint32_t)i;
    t.ids = ids; t.n = 101;
    moe_loader l;
    moe_err err;
    size_t B = 3, T = 8;
    CHECK(moe_loader_init(&l, &t, B, T, 0, 0, &err) == 0, "%s", err.msg);
    CHECK(l.n_rows == 12, "rows %zu", l.n_rows);
    int x[24], y[24];
    for (size_t b = 0; b < 6; b++) {
        moe_loader_next(&l, x, y, &err);
        for (size_t r = 0; r < B; r++) {
            size_t start = ((b * B + r) % l.n_rows) * T;
            CHECK(x[r * T] == (int)start && y[r * T + T - 1] == (int)(start + T),
                  "batch %zu row %zu starts at %d, expected %zu", b, r, x[r * T], start);
        }
    }
    moe_loader_free(&l);
    /* shuffled: every row once per epoch, seeded */
    moe_loader a, c;
    moe_loader_init(&a, &t, 12, T, 1, 5, &err);
    moe_loader_init(&c, &t, 12, T, 1, 6, &err);
    int xa[96], ya[96], xc[96], yc[96], seen[12] = {0};
    moe_loader_next(&a, xa, ya, &err);
    moe_loader_next(&c, xc, yc, &err);
    for (int r = 0; r < 12; r++) seen[xa[r * 8] / 8]++;
    int all = 1;
    for (int r = 0; r < 12; r++) all &= seen[r] == 1;
    CHECK(all, "a shuffled epoch visits every row once");
    CHECK(memcmp(xa, xc, sizeof xa) != 0, "different seeds give different orders");
    moe_loader_free(&a);
    moe_loader_free(&c);
}

/* CRC-32 by its definition, a bit at a time (reflected polynomial
 * 0xEDB88320, register inverted before and after): the reference moe_crc32
 * (zlib's crc32()) must match bit for bit. */
static uint32_t crc32_bitwise(uint32_t crc, const unsigned char *p, size_t len) {
    crc = ~crc;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) crc = crc & 1 ? 0xEDB88320u ^ (crc >> 1) : crc >> 1;
    }
    return ~crc;
}

/* moe_crc32 against crc32_bitwise on random bytes: every length 0..70 at every
 * start offset 0..15 (zlib's word steps, their tails, unaligned loads), a few large
 * lengths, values Python's zlib.crc32 gives, any split of a buffer into pieces,
 * and the CRC of a file spanning several of file_crc's 1 MiB reads. */
static void test_crc32_against_definition(void) {
    size_t big = (3u << 20) + 77;
    unsigned char *buf = malloc(big + 16);
    CHECK(buf != NULL, "malloc");
    if (!buf) return;
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < big + 16; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        buf[i] = (unsigned char)(s >> 24);
    }
    int bad = 0;
    for (size_t off = 0; off < 16; off++)
        for (size_t len = 0; len <= 70; len++)
            if (moe_crc32(0, buf + off, len) != crc32_bitwise(0, buf + off, len)) bad++;
    CHECK(bad == 0, "%d of 16 x 71 short buffers differ from the definition", bad);
    const size_t large[] = {255, 256, 1000, 4096, 4099, 65536 + 7, (1u << 20) + 3, big};
    for (size_t i = 0; i < sizeof large / sizeof *large; i++)
        for (size_t off = 0; off < 4; off++) {
            uint32_t got = moe_crc32(0, buf + off, large[i]), want = crc32_bitwise(0, buf + off, large[i]);
            CHECK(got == want, "%zu bytes at offset %zu: %08x, definition %08x", large[i], off, got, want);
        }
    /* a non-zero starting CRC continues a CRC, as zlib's crc32() does */
    CHECK(moe_crc32(0x12345678u, buf, 33) == crc32_bitwise(0x12345678u, buf, 33), "starting CRC");
    CHECK(moe_crc32(0xdeadbeefu, buf, 0) == 0xdeadbeefu, "an empty buffer leaves the CRC as it is");

    /* values of Python's zlib.crc32 */
    CHECK(moe_crc32(0, "123456789", 9) == 0xcbf43926u, "CRC-32 check value");
    CHECK(moe_crc32(0, "a", 1) == 0xe8b7be43u, "zlib.crc32(b'a')");
    unsigned char *pat = calloc(100003, 1);
    CHECK(pat != NULL, "calloc");
    if (pat) {
        CHECK(moe_crc32(0, pat, 1 << 16) == 0xd7978eebu, "zlib.crc32(bytes(65536))");
        for (size_t i = 0; i < 100003; i++) pat[i] = (unsigned char)(i * 31 + 7);
        CHECK(moe_crc32(0, pat, 100003) == 0x17340963u,
              "zlib.crc32(bytes((i * 31 + 7) & 255 for i in range(100003)))");
        free(pat);
    }

    /* incremental: the CRC of the pieces, each continuing the last, is the CRC of the whole */
    bad = 0;
    uint32_t whole = moe_crc32(0, buf + 3, 70);
    for (size_t cut = 0; cut <= 70; cut++)
        if (moe_crc32(moe_crc32(0, buf + 3, cut), buf + 3 + cut, 70 - cut) != whole) bad++;
    CHECK(bad == 0, "%d of 71 splits of a 70-byte buffer differ", bad);
    const size_t cuts[] = {0, 1, 15, 16, 17, 4097, (1u << 20) + 1, big - 5, big};
    uint32_t whole_big = moe_crc32(0, buf, big);
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        uint32_t c = moe_crc32(moe_crc32(0, buf, cuts[i]), buf + cuts[i], big - cuts[i]);
        CHECK(c == whole_big, "split at %zu: %08x, whole %08x", cuts[i], c, whole_big);
    }
    uint32_t c3 = moe_crc32(moe_crc32(moe_crc32(0, buf, 5), buf + 5, 1000), buf + 1005, big - 1005);
    CHECK(c3 == whole_big, "three pieces: %08x, whole %08x", c3, whole_big);

    /* file_crc (through CHECKSUMS) over a file of several 1 MiB reads and a tail */
    char dir[] = "/tmp/moe_test_crcXXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char path[4200], line[256] = "", want[256];
    moe_err err;
    snprintf(path, sizeof path, "%s/big.bin", dir);
    CHECK(moe_write_file_atomic(path, buf + 1, big, &err) == 0, "%s", err.msg);
    CHECK(moe_checksums_write(dir, &err) == 0, "%s", err.msg);
    CHECK(moe_checksums_verify(dir, "big.bin", &err) == 0, "%s", err.msg);
    snprintf(path, sizeof path, "%s/CHECKSUMS", dir);
    FILE *f = fopen(path, "r");
    CHECK(f && fgets(line, sizeof line, f), "read %s", path);
    if (f) fclose(f);
    snprintf(want, sizeof want, "%08x %zu big.bin\n", crc32_bitwise(0, buf + 1, big), big);
    CHECK(!strcmp(line, want), "CHECKSUMS says \"%s\", the definition \"%s\"", line, want);
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
    free(buf);
}

static void test_crc32_and_checksums(void) {
    CHECK(moe_crc32(0, "123456789", 9) == 0xcbf43926u, "CRC-32 check value");
    char dir[] = "/tmp/moe_test_ckXXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char path[4200];
    moe_err err;
    snprintf(path, sizeof path, "%s/a.bin", dir);
    moe_write_file_atomic(path, "hello world", 11, &err);
    CHECK(moe_checksums_verify(dir, "a.bin", &err) == 0, "no CHECKSUMS: accepted unverified");
    CHECK(moe_checksums_write(dir, &err) == 0, "%s", err.msg);
    CHECK(moe_checksums_verify(dir, "a.bin", &err) == 0, "%s", err.msg);
    moe_write_file_atomic(path, "hello World", 11, &err);
    CHECK(moe_checksums_verify(dir, "a.bin", &err) < 0 && strstr(err.msg, "corrupt"), "%s", err.msg);
    moe_write_file_atomic(path, "hello", 5, &err);
    CHECK(moe_checksums_verify(dir, "a.bin", &err) < 0 && strstr(err.msg, "truncated"), "%s", err.msg);
    CHECK(moe_checksums_verify(dir, "b.bin", &err) < 0 && strstr(err.msg, "does not list"), "%s", err.msg);
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
}

static void test_lr_schedule(void) {
    moe_config c;
    moe_config_defaults(&c);
    c.steps = 100; c.warmup = 10; c.lr = 1e-3; c.min_lr_ratio = 0.1;
    CHECK_CLOSE(moe_lr_at(&c, 0), 1e-4, 1e-12, 0);
    CHECK_CLOSE(moe_lr_at(&c, 9), 1e-3, 1e-12, 0);
    CHECK_CLOSE(moe_lr_at(&c, 10), 1e-3, 1e-12, 0);
    CHECK_CLOSE(moe_lr_at(&c, 55), 0.55e-3, 1e-9, 0);
    CHECK_CLOSE(moe_lr_at(&c, 100), 1e-4, 1e-12, 0);
}

/* The inputs of element i in test_adamw_kernel. */
static void adamw_inputs(size_t i, float *p, float *g, float *m, float *v) {
    *p = 0.01f * (float)((i * 37) % 101) - 0.5f;
    *g = 0.003f * (float)((i * 11) % 23) - 0.03f;
    *m = 0.001f * (float)(i % 7);
    *v = 1e-5f * (float)(i % 5);
}

/* One AdamW update of tensors whose edges fall inside 16-float groups, on
 * buffers at `shift` floats past a 64-byte boundary; the inputs are rebuilt
 * from the same pattern each call. Returns params followed by m and v. */
static float *adamw_once(size_t shift, int threads) {
    enum { N = 37 + 100 + 19 + 64 };
    moe_tensor tensors[4] = {{.offset = 0, .size = 37, .decay = 1}, {.offset = 37, .size = 100, .decay = 0},
                             {.offset = 137, .size = 19, .decay = 1}, {.offset = 156, .size = 64, .decay = 1}};
    moe_layout L = {.tensors = tensors, .count = 4, .total = N};
    moe_config c;
    moe_config_defaults(&c);
    c.weight_decay = 0.1;
    moe_err err;
    float *buf[4];
    for (int b = 0; b < 4; b++) buf[b] = moe_floats_alloc(N + 16, &err);
    float *p = buf[0] + shift, *g = buf[1] + shift, *m = buf[2] + shift, *v = buf[3] + shift;
    for (size_t i = 0; i < N; i++) adamw_inputs(i, &p[i], &g[i], &m[i], &v[i]);
    omp_set_num_threads(threads);
    moe_adamw_update(&L, p, g, 0.5f, m, v, 1e-2, 3, &c);
    float *out = malloc(3 * N * sizeof(float));
    int zeroed = 1;
    for (size_t i = 0; i < N; i++) {
        out[i] = p[i], out[N + i] = m[i], out[2 * N + i] = v[i];
        zeroed &= g[i] == 0.0f;
    }
    CHECK(zeroed, "gradients left non-zero (shift %zu, %d threads)", shift, threads);
    for (int b = 0; b < 4; b++) moe_floats_free(buf[b]);
    return out;
}

/* The AdamW kernel against the formula in double (METHOD §1), and the same
 * bits whatever the buffers' alignment and the thread count. */
static void test_adamw_kernel(void) {
    enum { N = 37 + 100 + 19 + 64 };
    float *ref = adamw_once(0, 1);
    moe_config c;
    moe_config_defaults(&c);
    double b1 = c.beta1, b2 = c.beta2, eps = c.adam_eps, lr = 1e-2;
    for (size_t i = 0; i < N; i++) {
        float pf, gf, mf, vf;
        adamw_inputs(i, &pf, &gf, &mf, &vf);
        double p = pf, g = 0.5 * gf, m = mf, v = vf;  /* grad_scale 0.5 */
        int decay = !(i >= 37 && i < 137);
        /* float rounding bounds: 1e-6 of each sum's terms (a sum may cancel) */
        double tol_m = 1e-6 * (b1 * fabs(m) + (1 - b1) * fabs(g));
        m = b1 * m + (1 - b1) * g;
        v = b2 * v + (1 - b2) * g * g;
        double bc1 = 1 - pow(b1, 3), den = sqrt(v / (1 - pow(b2, 3))) + eps;
        double kept = p * (decay ? 1 - lr * 0.1 : 1.0), step = lr * m / bc1 / den;
        double tol_p = 1e-6 * (fabs(kept) + fabs(step)) + lr / bc1 * tol_m / den;
        CHECK_CLOSE(ref[i], kept - step, 0, tol_p);
        CHECK_CLOSE(ref[N + i], m, 0, tol_m);
        CHECK_CLOSE(ref[2 * N + i], v, 1e-6, 0);
    }
    size_t shifts[] = {0, 1, 5};
    for (size_t k = 0; k < 3; k++)
        for (int threads = 1; threads <= 3; threads++) {
            float *o = adamw_once(shifts[k], threads);
            CHECK(memcmp(o, ref, 3 * N * sizeof(float)) == 0, "shift %zu, %d threads", shifts[k], threads);
            free(o);
        }
    omp_set_num_threads(omp_get_num_procs());
    free(ref);
}

#define RUN_CFG "{\"vocab_size\": 50, \"hidden\": 32, \"n_layers\": 2, \"n_heads\": 4, " \
    "\"max_seq_len\": 16, \"seq_len\": 16, \"batch_size\": 4, \"steps\": 8, \"keep_checkpoints\": 1"

/* The routers' state tensors of a model, concatenated into out[cap]; their count. */
static size_t router_state(const moe_model *m, float *out, size_t cap) {
    size_t n = 0;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        moe_router *r = moe_model_router(m, l, 0);
        moe_router_state st[4];
        size_t k = r && r->ops->state ? r->ops->state(r, st, 4) : 0;
        for (size_t i = 0; i < k; i++)
            for (size_t j = 0; j < st[i].n; j++, n++)
                if (n < cap) out[n] = st[i].data[j];
    }
    return n;
}

/* Trains `steps` steps from the seed; optionally checkpoints at `save_at`
 * and resumes from it in a fresh trainer. Returns the final parameters;
 * with `state`, the routers' state (router_state) goes to state[64]. */
static float *train_run_cfg(const char *cfg, const char *dir, const char *data, int steps, int save_at,
                            int threads, float *state, size_t *n_state) {
    moe_config c;
    moe_err err;
    if (parse_cfg(cfg, &c, &err)) { fprintf(stderr, "%s\n", err.msg); return NULL; }
    c.threads = threads;
    moe_tokens tok;
    moe_model *m;
    moe_trainer tr;
    moe_step_stats st;
    if (moe_tokens_read(data, &tok, &err) || moe_model_create(&c, &m, &err)) return NULL;
    moe_model_init(m, 1);
    if (moe_trainer_create(&tr, m, &tok, dir, &err)) return NULL;
    for (int s = 0; s < steps; s++) {
        moe_trainer_step(&tr, &st, &err);
        if (s + 1 == save_at) {
            moe_trainer_save(&tr, &err);
            moe_trainer_free(&tr);
            char ck[4096];
            if (moe_resolve_checkpoint(dir, ck, sizeof ck, &err) || moe_model_load(ck, &m, &err) ||
                moe_trainer_create(&tr, m, &tok, dir, &err) || moe_trainer_restore(&tr, ck, &err)) {
                fprintf(stderr, "resume: %s\n", err.msg);
                return NULL;
            }
        }
    }
    float *p = malloc(tr.model->n_params * sizeof(float));
    memcpy(p, tr.model->params, tr.model->n_params * sizeof(float));
    if (state) *n_state = router_state(tr.model, state, 64);
    moe_trainer_free(&tr);
    moe_tokens_free(&tok);
    return p;
}

static float *train_run(const char *dir, const char *data, int steps, int save_at, int threads) {
    return train_run_cfg(RUN_CFG "}", dir, data, steps, save_at, threads, NULL, NULL);
}

/* Router state that is not trained resumes exactly: ReMoE's per-layer
 * lambda (a target the layers reach at different steps, so that their
 * lambdas part) continues from the checkpoint's, not from relu_lambda0;
 * TopK's aux-loss-free bias from the checkpoint's, not from 0. */
static void test_exact_resume_router_state(void) {
    static const char *const cfgs[] = {
        RUN_CFG ", \"ffn\": \"moe\", \"router\": \"relu\", \"n_experts\": 4, \"ffn_dim\": 32, "
        "\"relu_lambda0\": 0.05, \"target_sparsity\": 0.5, \"relu_lambda_per_layer\": true}",
        RUN_CFG ", \"ffn\": \"moe\", \"router\": \"topk\", \"n_experts\": 4, \"top_k\": 2, \"ffn_dim\": 32, "
        "\"aux_loss_coef\": 0, \"aux_free_bias\": true, \"aux_free_rate\": 0.01}",
    };
    char dir[] = "/tmp/moe_test_stateXXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char data[4200], run[4200];
    snprintf(data, sizeof data, "%s/data.tok", dir);
    write_tokens(data, 3000, 50);
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        float sa[64], sc[64];
        size_t na = 0, nc = 0;
        snprintf(run, sizeof run, "%s/a%zu", dir, i);
        float *a = train_run_cfg(cfgs[i], run, data, 8, 0, 2, sa, &na);
        snprintf(run, sizeof run, "%s/c%zu", dir, i);
        float *c = train_run_cfg(cfgs[i], run, data, 8, 3, 2, sc, &nc);
        CHECK(a && c && na > 0 && na == nc && na <= 64, "config %zu: runs finished, state %zu, %zu", i, na, nc);
        if (a && c && na == nc && na <= 64) {
            moe_config cfg;
            moe_err err;
            moe_model *m;
            parse_cfg(cfgs[i], &cfg, &err);
            moe_model_create(&cfg, &m, &err);
            CHECK(memcmp(a, c, m->n_params * sizeof(float)) == 0, "config %zu: resumed weights identical", i);
            CHECK(memcmp(sa, sc, na * sizeof(float)) == 0, "config %zu: resumed router state identical", i);
            int moved = 0;
            float s0[64];
            router_state(m, s0, 64);  /* the initial state */
            for (size_t j = 0; j < na; j++) moved |= sa[j] != s0[j];
            CHECK(moved, "config %zu: the router state changed in training", i);
            moe_model_free(m);
        }
        free(a);
        free(c);
    }
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
}

static void test_determinism_and_exact_resume(void) {
    char dir[] = "/tmp/moe_test_runXXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char data[4200], run[4200];
    snprintf(data, sizeof data, "%s/data.tok", dir);
    write_tokens(data, 3000, 50);
    snprintf(run, sizeof run, "%s/a", dir);
    float *a = train_run(run, data, 8, 0, 2);
    snprintf(run, sizeof run, "%s/b", dir);
    float *b = train_run(run, data, 8, 0, 2);
    snprintf(run, sizeof run, "%s/c", dir);
    float *c = train_run(run, data, 8, 3, 2);
    snprintf(run, sizeof run, "%s/d", dir);
    float *d = train_run(run, data, 7, 0, 2);
    CHECK(a && b && c && d, "runs finished");
    if (a && b && c && d) {
        size_t n = 0;
        moe_config cfg; moe_err err;
        parse_cfg("{\"vocab_size\": 50, \"hidden\": 32, \"n_layers\": 2, \"n_heads\": 4, "
                  "\"max_seq_len\": 16, \"seq_len\": 16}", &cfg, &err);
        moe_model *m;
        moe_model_create(&cfg, &m, &err);
        n = m->n_params;
        moe_model_free(m);
        CHECK(memcmp(a, b, n * sizeof(float)) == 0, "same seed, data and threads: identical weights");
        CHECK(memcmp(a, c, n * sizeof(float)) == 0, "checkpoint + resume: identical weights");
        CHECK(memcmp(a, d, n * sizeof(float)) != 0, "a different run differs");
    }
    free(a); free(b); free(c); free(d);
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
}

/* Issue 14.2: an update that leaves a parameter non-finite is caught in the
 * optimizer's own pass (here adam_eps 0, past validation: a parameter with a
 * zero gradient computes 0/0), and poisoned weights are never saved. */
static void test_poisoned_update_caught(void) {
    char dir[] = "/tmp/moe_test_poisonXXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char data[4200], run[4200];
    snprintf(data, sizeof data, "%s/data.tok", dir);
    snprintf(run, sizeof run, "%s/run", dir);
    write_tokens(data, 3000, 50);
    moe_config c;
    moe_err err;
    CHECK(parse_cfg("{\"vocab_size\": 60, \"hidden\": 16, \"n_layers\": 1, \"n_heads\": 2, "
                    "\"max_seq_len\": 16, \"seq_len\": 16, \"batch_size\": 2, \"steps\": 4}", &c, &err) == 0,
          "%s", err.msg);
    moe_tokens tok;
    moe_model *m;
    moe_trainer tr;
    moe_step_stats st;
    CHECK(moe_tokens_read(data, &tok, &err) == 0 && moe_model_create(&c, &m, &err) == 0, "%s", err.msg);
    moe_model_init(m, 1);
    CHECK(moe_trainer_create(&tr, m, &tok, run, &err) == 0, "%s", err.msg);
    CHECK(moe_trainer_step(&tr, &st, &err) == 0 && st.poisoned == 0 && !st.skipped,
          "a healthy step: %zu poisoned", st.poisoned);
    m->cfg.adam_eps = 0.0;  /* injected past validation: rows 50..59 of the embedding never see a gradient */
    CHECK(moe_trainer_step(&tr, &st, &err) == 0, "%s", err.msg);
    CHECK(st.poisoned >= 10 * 16 && st.poisoned_tensor && !strcmp(st.poisoned_tensor, "model.embed_tokens.weight"),
          "0/0 caught: %zu values, tensor %s", st.poisoned, st.poisoned_tensor ? st.poisoned_tensor : "(none)");
    CHECK(moe_trainer_save(&tr, &err) < 0 && strstr(err.msg, "non-finite") &&
          strstr(err.msg, "'model.embed_tokens.weight'"), "poisoned weights saved: %s", err.msg);
    char ck[4096];
    CHECK(moe_resolve_checkpoint(run, ck, sizeof ck, &err) < 0, "a checkpoint of poisoned weights exists");
    moe_trainer_free(&tr);
    moe_tokens_free(&tok);
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
}

int main(void) {
    RUN(test_config_validation);
    RUN(test_config_finalize_table);
    RUN(test_tokens_roundtrip_and_errors);
    RUN(test_loader_order);
    RUN(test_crc32_and_checksums);
    RUN(test_crc32_against_definition);
    RUN(test_lr_schedule);
    RUN(test_adamw_kernel);
    RUN(test_determinism_and_exact_resume);
    RUN(test_exact_resume_router_state);
    RUN(test_poisoned_update_caught);
    TEST_MAIN_END();
}
