/* comm.h — the collectives interface: the only way the library talks to
 * other processes. A moe_comm is a group of ranks (a context passed in, no
 * global state) with all-reduce, reduce-scatter, all-gather, all-to-all-v,
 * broadcast, barrier and abort. Two implementations: the single-process one
 * here (size 1; every call is a copy or nothing, so a run without mpirun is
 * today's run), and MPI (src/comm/comm_mpi.c, linked into the moe program
 * only; a NCCL one could follow with a GPU backend).
 *
 * Reductions are deterministic and give the same bits on every rank: every
 * sum is formed by one rank from the P contributions added in rank order
 * 0, 1, ..., P-1 (never a tree whose shape depends on timing). */
#ifndef MOE_COMM_H
#define MOE_COMM_H

#include <stddef.h>

#include "moe/util/common.h"

typedef enum { MOE_F32, MOE_F64, MOE_I32, MOE_BYTE } moe_dtype;

static inline size_t moe_dtype_size(moe_dtype t) {
    return t == MOE_F64 ? 8 : t == MOE_BYTE ? 1 : 4;
}

typedef struct moe_comm moe_comm;

/* What an implementation provides. counts are elements per rank ([size]);
 * displacements are implied (rank r's block follows rank r-1's). */
typedef struct moe_comm_ops {
    const char *name;
    /* buf[n] = sum over ranks of buf[n] (MOE_F32 / MOE_F64 / MOE_I32) */
    int (*allreduce_sum)(moe_comm *c, void *buf, size_t n, moe_dtype t, moe_err *err);
    /* recv[counts[rank]] = sum over ranks of send[block of rank] */
    int (*reduce_scatter_sum)(moe_comm *c, const void *send, void *recv, const size_t *counts,
                              moe_dtype t, moe_err *err);
    /* buf holds every rank's block in rank order; on entry only this rank's
     * block is set, on return all of them */
    int (*allgather)(moe_comm *c, void *buf, const size_t *counts, moe_dtype t, moe_err *err);
    /* send: blocks for ranks 0..P-1 (scounts), recv: blocks from ranks
     * 0..P-1 (rcounts) */
    int (*alltoallv)(moe_comm *c, const void *send, const size_t *scounts, void *recv,
                     const size_t *rcounts, moe_dtype t, moe_err *err);
    int (*broadcast)(moe_comm *c, void *buf, size_t n, moe_dtype t, int root, moe_err *err);
    int (*barrier)(moe_comm *c, moe_err *err);
    /* Ends every process of the job with `code` (does not return). */
    void (*abort)(moe_comm *c, int code);
    /* The sub-group of the ranks that pass the same color, ordered by key. */
    int (*split)(moe_comm *c, int color, int key, moe_comm **out, moe_err *err);
    void (*destroy)(moe_comm *c);
} moe_comm_ops;

struct moe_comm {
    const moe_comm_ops *ops;
    int rank, size;
    double seconds;        /* wall time spent inside collectives (bench/scaling) */
    double bytes;          /* bytes this rank sent (payload, the model of docs/DISTRIBUTED.md) */
    void *impl;
};

/* The single-process group (rank 0 of 1). */
int moe_comm_single(moe_comm **out, moe_err *err);
void moe_comm_free(moe_comm *c);

/* Wrappers: time and count the call, no-ops (or copies) at size 1. */
int moe_comm_allreduce(moe_comm *c, void *buf, size_t n, moe_dtype t, moe_err *err);
int moe_comm_reduce_scatter(moe_comm *c, const void *send, void *recv, const size_t *counts,
                            moe_dtype t, moe_err *err);
int moe_comm_allgather(moe_comm *c, void *buf, const size_t *counts, moe_dtype t, moe_err *err);
int moe_comm_alltoallv(moe_comm *c, const void *send, const size_t *scounts, void *recv,
                       const size_t *rcounts, moe_dtype t, moe_err *err);
int moe_comm_broadcast(moe_comm *c, void *buf, size_t n, moe_dtype t, int root, moe_err *err);
int moe_comm_barrier(moe_comm *c, moe_err *err);

/* Every rank passes its own status (rc 0 or -1 with *err): returns 0 when
 * all succeeded, else -1 on every rank with *err holding the message of the
 * lowest failing rank prefixed "rank R: " (so rank 0 can print one line). */
int moe_comm_agree(moe_comm *c, int rc, moe_err *err);

/* Splits n elements into size blocks whose boundaries are multiples of
 * `align` (the last block takes the rest): counts[size], first[size]. */
void moe_comm_blocks(size_t n, int size, size_t align, size_t *counts, size_t *first);

#endif
