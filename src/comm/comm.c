/* comm.c — the collectives' wrappers (timing, byte counts, size-1 short
 * cuts), the single-process group, agreement on errors, and block splits. */
#include "moe/comm/comm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the single-process group ------------------------------------------ */

static int single_allreduce(moe_comm *c, void *buf, size_t n, moe_dtype t, moe_err *err) {
    (void)c; (void)buf; (void)n; (void)t; (void)err;
    return 0;
}
static int single_reduce_scatter(moe_comm *c, const void *send, void *recv, const size_t *counts,
                                 moe_dtype t, moe_err *err) {
    (void)c; (void)err;
    if (recv != send) memmove(recv, send, counts[0] * moe_dtype_size(t));
    return 0;
}
static int single_allgather(moe_comm *c, void *buf, const size_t *counts, moe_dtype t, moe_err *err) {
    (void)c; (void)buf; (void)counts; (void)t; (void)err;
    return 0;
}
static int single_alltoallv(moe_comm *c, const void *send, const size_t *scounts, void *recv,
                            const size_t *rcounts, moe_dtype t, moe_err *err) {
    (void)c;
    if (scounts[0] != rcounts[0]) return moe_errf(err, "alltoallv: send %zu, receive %zu", scounts[0], rcounts[0]);
    if (recv != send) memmove(recv, send, scounts[0] * moe_dtype_size(t));
    return 0;
}
static int single_broadcast(moe_comm *c, void *buf, size_t n, moe_dtype t, int root, moe_err *err) {
    (void)c; (void)buf; (void)n; (void)t; (void)root; (void)err;
    return 0;
}
static int single_barrier(moe_comm *c, moe_err *err) { (void)c; (void)err; return 0; }
static void single_abort(moe_comm *c, int code) { (void)c; exit(code); }
static int single_split(moe_comm *c, int color, int key, moe_comm **out, moe_err *err) {
    (void)c; (void)color; (void)key;
    return moe_comm_single(out, err);
}
static void single_destroy(moe_comm *c) { free(c); }

static const moe_comm_ops SINGLE_OPS = {
    .name = "single", .allreduce_sum = single_allreduce, .reduce_scatter_sum = single_reduce_scatter,
    .allgather = single_allgather, .alltoallv = single_alltoallv, .broadcast = single_broadcast,
    .barrier = single_barrier, .abort = single_abort, .split = single_split, .destroy = single_destroy,
};

int moe_comm_single(moe_comm **out, moe_err *err) {
    moe_comm *c = moe_calloc(1, sizeof *c, err);
    if (!c) return -1;
    c->ops = &SINGLE_OPS;
    c->rank = 0;
    c->size = 1;
    *out = c;
    return 0;
}

void moe_comm_free(moe_comm *c) {
    if (c) c->ops->destroy(c);
}

/* ---- wrappers ------------------------------------------------------------ */

static size_t sum_counts(const size_t *counts, int size) {
    size_t n = 0;
    for (int r = 0; r < size; r++) n += counts[r];
    return n;
}

int moe_comm_allreduce(moe_comm *c, void *buf, size_t n, moe_dtype t, moe_err *err) {
    if (c->size == 1) return 0;
    double t0 = moe_now_seconds();
    int rc = c->ops->allreduce_sum(c, buf, n, t, err);
    c->seconds += moe_now_seconds() - t0;
    /* reduce-scatter + all-gather: 2 (P-1)/P of the buffer leaves each rank */
    c->bytes += 2.0 * (double)(c->size - 1) / (double)c->size * (double)(n * moe_dtype_size(t));
    return rc;
}

int moe_comm_reduce_scatter(moe_comm *c, const void *send, void *recv, const size_t *counts,
                            moe_dtype t, moe_err *err) {
    if (c->size == 1) return c->ops->reduce_scatter_sum(c, send, recv, counts, t, err);
    double t0 = moe_now_seconds();
    int rc = c->ops->reduce_scatter_sum(c, send, recv, counts, t, err);
    c->seconds += moe_now_seconds() - t0;
    c->bytes += (double)((sum_counts(counts, c->size) - counts[c->rank]) * moe_dtype_size(t));
    return rc;
}

int moe_comm_allgather(moe_comm *c, void *buf, const size_t *counts, moe_dtype t, moe_err *err) {
    if (c->size == 1) return 0;
    double t0 = moe_now_seconds();
    int rc = c->ops->allgather(c, buf, counts, t, err);
    c->seconds += moe_now_seconds() - t0;
    c->bytes += (double)(counts[c->rank] * (size_t)(c->size - 1) * moe_dtype_size(t));
    return rc;
}

int moe_comm_alltoallv(moe_comm *c, const void *send, const size_t *scounts, void *recv,
                       const size_t *rcounts, moe_dtype t, moe_err *err) {
    if (c->size == 1) return c->ops->alltoallv(c, send, scounts, recv, rcounts, t, err);
    double t0 = moe_now_seconds();
    int rc = c->ops->alltoallv(c, send, scounts, recv, rcounts, t, err);
    c->seconds += moe_now_seconds() - t0;
    c->bytes += (double)((sum_counts(scounts, c->size) - scounts[c->rank]) * moe_dtype_size(t));
    return rc;
}

int moe_comm_broadcast(moe_comm *c, void *buf, size_t n, moe_dtype t, int root, moe_err *err) {
    if (c->size == 1) return 0;
    double t0 = moe_now_seconds();
    int rc = c->ops->broadcast(c, buf, n, t, root, err);
    c->seconds += moe_now_seconds() - t0;
    if (c->rank == root) c->bytes += (double)(n * moe_dtype_size(t));
    return rc;
}

int moe_comm_barrier(moe_comm *c, moe_err *err) {
    return c->size == 1 ? 0 : c->ops->barrier(c, err);
}

/* ---- agreement and blocks ------------------------------------------------ */

enum { AGREE_MSG = 512 };

int moe_comm_agree(moe_comm *c, int rc, moe_err *err) {
    if (c->size == 1) return rc;
    /* every rank's status byte and message, gathered everywhere */
    size_t P = (size_t)c->size;
    char *all = moe_calloc(P, AGREE_MSG, err);
    size_t *counts = moe_calloc(P, sizeof *counts, err);
    if (!all || !counts) { free(all); free(counts); return -1; }
    char *mine = all + (size_t)c->rank * AGREE_MSG;
    mine[0] = rc ? 1 : 0;
    if (rc) snprintf(mine + 1, AGREE_MSG - 1, "%.*s", AGREE_MSG - 2, err->msg);
    for (size_t r = 0; r < P; r++) counts[r] = AGREE_MSG;
    moe_err cerr;
    int out = 0;
    if (moe_comm_allgather(c, all, counts, MOE_BYTE, &cerr)) {
        *err = cerr;
        out = -1;
    } else {
        for (size_t r = 0; r < P && !out; r++)
            if (all[r * AGREE_MSG]) {
                moe_errf(err, "rank %zu: %s", r, all + r * AGREE_MSG + 1);
                out = -1;
            }
    }
    free(all);
    free(counts);
    return out;
}

void moe_comm_blocks(size_t n, int size, size_t align, size_t *counts, size_t *first) {
    size_t per = n / (size_t)size;
    per = align > 1 ? (per + align - 1) / align * align : per;
    size_t at = 0;
    for (int r = 0; r < size; r++) {
        size_t c = r == size - 1 ? n - at : (per < n - at ? per : n - at);
        first[r] = at;
        counts[r] = c;
        at += c;
    }
}
