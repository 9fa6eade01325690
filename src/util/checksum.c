/* checksum.c — CRC-32 of files and the CHECKSUMS file of a directory. */
#include "moe/checksum.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "moe/fileio.h"

uint32_t moe_crc32(uint32_t crc, const void *data, size_t len) {
    /* bitwise-table CRC-32 (reflected polynomial 0xEDB88320), 4 bits at a time */
    static const uint32_t nibble[16] = {
        0x00000000, 0x1DB71064, 0x3B6E20C8, 0x26D930AC, 0x76DC4190, 0x6B6B51F4,
        0x4DB26158, 0x5005713C, 0xEDB88320, 0xF00F9344, 0xD6D6A3E8, 0xCB61B38C,
        0x9B64C2B0, 0x86D3D2D4, 0xA00AE278, 0xBDBDF21C};
    const unsigned char *p = data;
    crc = ~crc;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        crc = (crc >> 4) ^ nibble[crc & 15];
        crc = (crc >> 4) ^ nibble[crc & 15];
    }
    return ~crc;
}

/* CRC and size of a whole file. */
static int file_crc(const char *path, uint32_t *crc, size_t *size, moe_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return moe_errf(err, "cannot open %s: %s", path, strerror(errno));
    unsigned char buf[1 << 16];
    size_t n, total = 0;
    uint32_t c = 0;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        c = moe_crc32(c, buf, n);
        total += n;
    }
    int bad = ferror(f);
    fclose(f);
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
    while (fgets(line, sizeof line, f)) {
        char fname[512];
        lineno++;
        if (sscanf(line, "%8x %zu %511s", &want_crc, &want_size, fname) != 3) {
            rc = moe_errf(err, "%s:%d: expected \"<crc32> <size> <name>\"", path, lineno);
            break;
        }
        if (!strcmp(fname, name)) { found = 1; break; }
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
