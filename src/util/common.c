/* common.c — error formatting, checked allocation, the string builder and
 * the monotonic clock. */
#include "moe/util/common.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

int moe_errf(moe_err *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int moe_err_prefix(moe_err *err, const char *fmt, ...) {
    if (err) {
        char prefix[512], old[sizeof err->msg];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(prefix, sizeof prefix, fmt, ap);
        va_end(ap);
        memcpy(old, err->msg, sizeof old);
        if (snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old) >= (int)sizeof err->msg)
            err->msg[sizeof err->msg - 1] = '\0';  /* a long message is cut, not lost */
    }
    return -1;
}

void *moe_malloc(size_t bytes, moe_err *err) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) moe_errf(err, "out of memory allocating %zu bytes", bytes);
    return p;
}

void *moe_calloc(size_t n, size_t size, moe_err *err) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) moe_errf(err, "out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

/* A mapping of its own per array: FLOATS_HEADER bytes holding the mapping's
 * length, then the floats (64-byte aligned, as the mapping is page-aligned). */
enum { FLOATS_HEADER = 64 };

float *moe_floats_alloc(size_t n, moe_err *err) {
    if (n > (SIZE_MAX - FLOATS_HEADER) / sizeof(float)) {
        moe_errf(err, "out of memory allocating %zu floats", n);
        return NULL;
    }
    size_t bytes = FLOATS_HEADER + n * sizeof(float);
    void *base = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
        moe_errf(err, "out of memory allocating %zu floats: %s", n, strerror(errno));
        return NULL;
    }
    memcpy(base, &bytes, sizeof bytes);
    return (float *)((char *)base + FLOATS_HEADER);
}

void moe_floats_free(float *p) {
    if (!p) return;
    char *base = (char *)p - FLOATS_HEADER;
    size_t bytes;
    memcpy(&bytes, base, sizeof bytes);
    munmap(base, bytes);
}

int moe_buf_append(moe_buf *b, const void *data, size_t len) {
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + len + 1) cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p) return -1;
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int moe_buf_printf(moe_buf *b, const char *fmt, ...) {
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return -1;
    if ((size_t)n < sizeof small) return moe_buf_append(b, small, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (!big) return -1;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rc = moe_buf_append(b, big, (size_t)n);
    free(big);
    return rc;
}

void moe_buf_free(moe_buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int moe_path(char *out, size_t cap, moe_err *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap) return moe_errf(err, "path too long: %.200s...", out);
    return 0;
}

int moe_edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 40 || lb > 40) return 9;
    int row[41];
    for (size_t j = 0; j <= lb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            diag = up;
            row[j] = best;
        }
    }
    return row[lb] < 9 ? row[lb] : 9;
}

double moe_now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
