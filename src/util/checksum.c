/* checksum.c — CRC-32 of files and the CHECKSUMS file of a directory. */
#include "moe/checksum.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "moe/fileio.h"

/* CRC-32 by slicing-by-16. Row 0 of the tables is the byte-at-a-time table
 * of the reflected polynomial 0xEDB88320; row k[b] is the CRC register after
 * byte b followed by k zero bytes. One step folds 16 input bytes into the
 * register with 16 lookups, a byte's row chosen by how many bytes follow it
 * in the block: bit-identical to the byte loop, ~4 GB/s against ~0.5. The
 * tables (16 KB) are built per call, in microseconds, next to a file's read
 * or a token file's gigabytes. The 16-byte step reads the input as
 * little-endian words, so a big-endian machine uses the byte loop alone. */
typedef struct crc_tables {
    uint32_t t[16][256];
} crc_tables;

static void crc_tables_build(crc_tables *c) {
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t r = b;
        for (int k = 0; k < 8; k++) r = (r >> 1) ^ (0xEDB88320u & (0u - (r & 1u)));
        c->t[0][b] = r;
    }
    for (int k = 1; k < 16; k++)
        for (uint32_t b = 0; b < 256; b++) {
            uint32_t prev = c->t[k - 1][b];
            c->t[k][b] = (prev >> 8) ^ c->t[0][prev & 0xFF];
        }
}

/* crc: a finished CRC (0 to start), as zlib's crc32() takes it. */
static uint32_t crc_update(const crc_tables *c, uint32_t crc, const unsigned char *p, size_t len) {
    const uint32_t (*t)[256] = c->t;
    crc = ~crc;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    for (; len >= 16; p += 16, len -= 16) {
        uint32_t a, b, c4, d;  /* memcpy: p need not be aligned */
        memcpy(&a, p, 4);
        memcpy(&b, p + 4, 4);
        memcpy(&c4, p + 8, 4);
        memcpy(&d, p + 12, 4);
        a ^= crc;
        crc = t[15][a & 0xFF] ^ t[14][(a >> 8) & 0xFF] ^ t[13][(a >> 16) & 0xFF] ^ t[12][a >> 24] ^
              t[11][b & 0xFF] ^ t[10][(b >> 8) & 0xFF] ^ t[9][(b >> 16) & 0xFF] ^ t[8][b >> 24] ^
              t[7][c4 & 0xFF] ^ t[6][(c4 >> 8) & 0xFF] ^ t[5][(c4 >> 16) & 0xFF] ^ t[4][c4 >> 24] ^
              t[3][d & 0xFF] ^ t[2][(d >> 8) & 0xFF] ^ t[1][(d >> 16) & 0xFF] ^ t[0][d >> 24];
    }
#endif
    for (; len > 0; p++, len--) crc = t[0][(crc ^ *p) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

uint32_t moe_crc32(uint32_t crc, const void *data, size_t len) {
    crc_tables c;
    crc_tables_build(&c);
    return crc_update(&c, crc, data, len);
}

/* CRC and size of a whole file, read 1 MiB at a time (fewer read calls than
 * 64 KiB: ~10% faster on a page-cached checkpoint). */
static int file_crc(const char *path, uint32_t *crc, size_t *size, moe_err *err) {
    enum { CHUNK = 1 << 20 };
    FILE *f = fopen(path, "rb");
    if (!f) return moe_errf(err, "cannot open %s: %s", path, strerror(errno));
    unsigned char *buf = malloc(CHUNK);
    if (!buf) {
        fclose(f);
        return moe_errf(err, "out of memory");
    }
    crc_tables tables;
    crc_tables_build(&tables);
    size_t n, total = 0;
    uint32_t c = 0;
    while ((n = fread(buf, 1, CHUNK, f)) > 0) {
        c = crc_update(&tables, c, buf, n);
        total += n;
    }
    int bad = ferror(f);
    fclose(f);
    free(buf);
    if (bad) return moe_errf(err, "cannot read %s", path);
    *crc = c;
    *size = total;
    return 0;
}

int moe_checksums_write(const char *dir, moe_err *err) {
    DIR *d = opendir(dir);
    if (!d) return moe_errf(err, "cannot open directory %s: %s", dir, strerror(errno));
    moe_buf out = {0};
    struct dirent *e;
    int rc = 0;
    char path[4096];
    /* names sorted so the file is the same whatever order readdir gives */
    char **names = NULL;
    size_t n = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !strcmp(e->d_name, "CHECKSUMS") || strstr(e->d_name, ".tmp.")) continue;
        char **g = realloc(names, (n + 1) * sizeof *names);
        if (!g || !(g[n] = strdup(e->d_name))) { names = g ? g : names; rc = moe_errf(err, "out of memory"); break; }
        names = g;
        n++;
    }
    closedir(d);
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char *t = names[j]; names[j] = names[j - 1]; names[j - 1] = t;
        }
    for (size_t i = 0; i < n && !rc; i++) {
        struct stat st;
        uint32_t crc;
        size_t size;
        if (moe_path(path, sizeof path, err, "%s/%s", dir, names[i])) { rc = -1; break; }
        if (stat(path, &st) || !S_ISREG(st.st_mode)) continue;
        rc = file_crc(path, &crc, &size, err);
        if (!rc) rc = moe_buf_printf(&out, "%08x %zu %s\n", crc, size, names[i]);
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    if (!rc) rc = moe_path(path, sizeof path, err, "%s/CHECKSUMS", dir) ? -1
                : moe_write_file_atomic(path, out.data ? out.data : "", out.len, err);
    moe_buf_free(&out);
    return rc;
}

int moe_checksums_verify(const char *dir, const char *name, moe_err *err) {
    char path[4096];
    if (moe_path(path, sizeof path, err, "%s/CHECKSUMS", dir)) return -1;
    FILE *f = fopen(path, "r");
    if (!f) return errno == ENOENT ? 0 : moe_errf(err, "cannot open %s: %s", path, strerror(errno));
    char line[1024];
    int found = 0, rc = 0, lineno = 0;
    unsigned want_crc = 0;
    size_t want_size = 0;
    /* every line is checked, so a damaged CHECKSUMS is noticed by any reader */
    while (fgets(line, sizeof line, f)) {
        char fname[512];
        unsigned crc_l;
        size_t size_l;
        int used = 0;
        lineno++;
        if (sscanf(line, "%8x %zu %511s%n", &crc_l, &size_l, fname, &used) != 3 ||
            strspn(line, "0123456789abcdef") != 8 || strcmp(line + used, "\n")) {
            rc = moe_errf(err, "%s:%d: expected \"<crc32> <size> <name>\"", path, lineno);
            break;
        }
        if (!strcmp(fname, name)) { found = 1; want_crc = crc_l; want_size = size_l; }
    }
    fclose(f);
    if (rc) return rc;
    if (!found) return moe_errf(err, "%s does not list %s: the checkpoint is incomplete", path, name);
    uint32_t crc;
    size_t size;
    if (moe_path(path, sizeof path, err, "%s/%s", dir, name) || file_crc(path, &crc, &size, err))
        return -1;
    if (size != want_size)
        return moe_errf(err, "%s: %zu bytes, CHECKSUMS says %zu: the file is truncated or was "
                        "changed after it was written", path, size, want_size);
    if (crc != want_crc)
        return moe_errf(err, "%s: checksum %08x, CHECKSUMS says %08x: the file is corrupt", path,
                        crc, want_crc);
    return 0;
}
