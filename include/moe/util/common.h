/* common.h — the error value every library call returns through, and small
 * helpers shared by all modules (checked allocation, string builder, clock). */
#ifndef MOE_COMMON_H
#define MOE_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* Errors travel as values: a function returns 0 on success or -1 on failure
 * and, on failure, writes a one-line message into *err (if err is not NULL).
 * The message names the file / key / value and what was expected. */
typedef struct moe_err {
    char msg[1024];
} moe_err;

/* Formats a message into err and returns -1, so callers can write
 *   if (bad) return moe_errf(err, "%s: expected ..., found ...", path, ...); */
int moe_errf(moe_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prefixes an existing message: "context: old message". Returns -1. */
int moe_err_prefix(moe_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* malloc/calloc that report failure through err (returns NULL on failure). */
void *moe_malloc(size_t bytes, moe_err *err);
void *moe_calloc(size_t n, size_t size, moe_err *err);
/* n zeroed floats aligned to 64 bytes (one cache line, one AVX-512 vector),
 * as the optimizer's streaming stores need. The pages are the kernel's zero
 * pages until written, so memory is committed only where it is used (an
 * inference run never touches the gradients). Release with moe_floats_free. */
float *moe_floats_alloc(size_t n, moe_err *err);
void moe_floats_free(float *p);

/* A growable byte buffer used to build text (JSON, messages). */
typedef struct moe_buf {
    char *data;   /* always NUL-terminated when len > 0 */
    size_t len;
    size_t cap;
} moe_buf;

int moe_buf_append(moe_buf *b, const void *data, size_t len);
int moe_buf_printf(moe_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void moe_buf_free(moe_buf *b);

/* Formats a file path into out[cap]; a path that does not fit is an error
 * ("path too long: ...") rather than a silent truncation. */
int moe_path(char *out, size_t cap, moe_err *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Levenshtein distance of two names, capped at 9 (for "did you mean"). */
int moe_edit_distance(const char *a, const char *b);

/* Seconds on the monotonic clock (CLOCK_MONOTONIC): for durations only, its
 * zero is arbitrary. The one clock of the library, the program and benches. */
double moe_now_seconds(void);

#endif
