/* comm_mpi.c — the collectives interface (include/moe/comm/comm.h) on MPI: the
 * only file that names MPI. Standard MPI-3 calls only (Open MPI or MPICH).
 * Linked into the moe program, not into the library, so the fuzzers and the
 * unit tests build without MPI.
 *
 * Sums are deterministic and identical on every rank: a reduce-scatter is an
 * all-to-all of blocks after which each rank adds the P copies of its own
 * block in rank order; an all-reduce is that reduce-scatter followed by an
 * all-gather (small vectors: all-gather of the whole vector, then every rank
 * adds in rank order). MPI_SUM's order is left to the library, so it is not
 * used. */
#include "moe/comm/comm_mpi.h"

#include <limits.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct mpi_impl {
    MPI_Comm comm;
    int world;            /* finalize MPI when this group is freed */
    void *scratch;        /* grow-only receive buffer of the sums */
    size_t scratch_bytes;
    int *ic, *id, *oc, *od;   /* [size] int counts and displacements */
    MPI_Request *req;         /* [2 size] requests of one exchange */
    size_t chunk;             /* elements of each rank's block moved per round (CHUNK) */
} mpi_impl;

static MPI_Datatype mpi_type(moe_dtype t) {
    return t == MOE_F32 ? MPI_FLOAT : t == MOE_F64 ? MPI_DOUBLE : t == MOE_I32 ? MPI_INT : MPI_BYTE;
}

static int mpi_fail(int code, const char *what, moe_err *err) {
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(code, s, &len) != MPI_SUCCESS) snprintf(s, sizeof s, "error %d", code);
    return moe_errf(err, "MPI %s failed: %s", what, s);
}

static int scratch(mpi_impl *m, size_t bytes, moe_err *err) {
    if (bytes <= m->scratch_bytes) return 0;
    free(m->scratch);
    m->scratch = moe_malloc(bytes ? bytes : 1, err);
    m->scratch_bytes = m->scratch ? bytes : 0;
    return m->scratch ? 0 : -1;
}

/* size_t counts -> int counts and displacements (MPI's int interface). */
static int int_counts(const size_t *counts, int size, int *c, int *d, moe_err *err) {
    size_t at = 0;
    for (int r = 0; r < size; r++) {
        if (counts[r] > INT_MAX || at > INT_MAX)
            return moe_errf(err, "MPI: a block of %zu elements is larger than MPI's int counts", counts[r]);
        c[r] = (int)counts[r];
        d[r] = (int)at;
        at += counts[r];
    }
    return 0;
}

/* out[i] = in[0][i] + in[1][i] + ... in rank order, blocks of n elements. */
static void sum_in_order(void *out, const void *in, size_t n, int P, moe_dtype t) {
    if (t == MOE_F32) {
        const float *a = in;
        float *o = out;
        for (size_t i = 0; i < n; i++) {
            float s = a[i];
            for (int r = 1; r < P; r++) s += a[(size_t)r * n + i];
            o[i] = s;
        }
    } else if (t == MOE_F64) {
        const double *a = in;
        double *o = out;
        for (size_t i = 0; i < n; i++) {
            double s = a[i];
            for (int r = 1; r < P; r++) s += a[(size_t)r * n + i];
            o[i] = s;
        }
    } else {
        const int32_t *a = in;
        int32_t *o = out;
        for (size_t i = 0; i < n; i++) {
            int32_t s = a[i];
            for (int r = 1; r < P; r++) s += a[(size_t)r * n + i];
            o[i] = s;
        }
    }
}

/* Elements of each rank's block moved per round: the scratch of a
 * reduce-scatter is P x this (64 MiB of floats at P = 2), not P x the block
 * (a whole model's gradients), and every message's count fits MPI's int
 * whatever the model's size. The environment variable MOE_COMM_CHUNK sets
 * a smaller one, so that tests run the rounds on small models. */
enum { CHUNK = 1 << 23 };

static size_t round_count(size_t count, size_t k, size_t chunk) {
    return count > k ? (count - k < chunk ? count - k : chunk) : 0;
}

/* One round of point-to-point exchange: to rank r, sbuf[r] (scount[r]
 * elements); from rank r, into rbuf[r] (rcount[r]); the own rank is
 * skipped. Pointers are computed in size_t, so no int displacement limits. */
static int exchange(moe_comm *c, char *const *sbuf, const size_t *scount, char *const *rbuf,
                    const size_t *rcount, moe_dtype t, const char *what, moe_err *err) {
    mpi_impl *m = c->impl;
    int P = c->size, n = 0;
    for (int r = 0; r < P; r++) {
        if (r == c->rank || !rcount[r]) continue;
        int rc = MPI_Irecv(rbuf[r], (int)rcount[r], mpi_type(t), r, 7, m->comm, &m->req[n++]);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, what, err);
    }
    for (int i = 1; i < P; i++) {  /* sends in a rotated order: rank + 1 first */
        int r = (c->rank + i) % P;
        if (!scount[r]) continue;
        int rc = MPI_Isend(sbuf[r], (int)scount[r], mpi_type(t), r, 7, m->comm, &m->req[n++]);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, what, err);
    }
    int rc = MPI_Waitall(n, m->req, MPI_STATUSES_IGNORE);
    return rc == MPI_SUCCESS ? 0 : mpi_fail(rc, what, err);
}

static int m_reduce_scatter(moe_comm *c, const void *send, void *recv, const size_t *counts,
                            moe_dtype t, moe_err *err) {
    mpi_impl *m = c->impl;
    int P = c->size, me = c->rank;
    size_t es = moe_dtype_size(t), mine = counts[me], longest = 0, first = 0;
    for (int r = 0; r < P; r++) longest = counts[r] > longest ? counts[r] : longest;
    size_t chunk = longest < m->chunk ? longest : m->chunk;
    if (scratch(m, (size_t)P * chunk * es, err)) return -1;
    size_t scount[P], rcount[P], at[P];
    char *sbuf[P], *rbuf[P];
    for (int r = 0; r < P; r++) { at[r] = first; first += counts[r]; }
    /* round k: elements [k, k + chunk) of every block; every rank runs the
     * same rounds (the counts are known everywhere) */
    for (size_t k = 0; k < longest; k += m->chunk) {
        size_t got = round_count(mine, k, m->chunk);
        for (int r = 0; r < P; r++) {
            scount[r] = round_count(counts[r], k, m->chunk);
            sbuf[r] = (char *)send + (at[r] + k) * es;
            rcount[r] = got;
            rbuf[r] = (char *)m->scratch + (size_t)r * got * es;
        }
        if (exchange(c, sbuf, scount, rbuf, rcount, t, "reduce-scatter", err)) return -1;
        memcpy(rbuf[me], sbuf[me], got * es);
        /* recv may be this rank's block of send (an all-reduce in place):
         * this round's elements were copied to scratch above and no later
         * round reads them */
        sum_in_order((char *)recv + k * es, m->scratch, got, P, t);
    }
    return 0;
}

static int m_allgather(moe_comm *c, void *buf, const size_t *counts, moe_dtype t, moe_err *err) {
    const mpi_impl *m = c->impl;
    int P = c->size, me = c->rank;
    size_t es = moe_dtype_size(t), longest = 0, first = 0;
    size_t scount[P], rcount[P], at[P];
    char *sbuf[P], *rbuf[P];
    for (int r = 0; r < P; r++) {
        at[r] = first;
        first += counts[r];
        longest = counts[r] > longest ? counts[r] : longest;
    }
    for (size_t k = 0; k < longest; k += m->chunk) {
        for (int r = 0; r < P; r++) {
            scount[r] = round_count(counts[me], k, m->chunk);
            sbuf[r] = (char *)buf + (at[me] + k) * es;
            rcount[r] = round_count(counts[r], k, m->chunk);
            rbuf[r] = (char *)buf + (at[r] + k) * es;
        }
        if (exchange(c, sbuf, scount, rbuf, rcount, t, "all-gather", err)) return -1;
    }
    return 0;
}

static int m_allreduce(moe_comm *c, void *buf, size_t n, moe_dtype t, moe_err *err) {
    mpi_impl *m = c->impl;
    int P = c->size;
    size_t es = moe_dtype_size(t);
    if (n <= 4096) {  /* small: every rank gathers every vector and adds in rank order */
        if (n > INT_MAX / (size_t)P) return moe_errf(err, "MPI: all-reduce too large");
        if (scratch(m, (size_t)P * n * es, err)) return -1;
        int rc = MPI_Allgather(buf, (int)n, mpi_type(t), m->scratch, (int)n, mpi_type(t), m->comm);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, "all-reduce (all-gather)", err);
        sum_in_order(buf, m->scratch, n, P, t);
        return 0;
    }
    size_t counts[P], first[P];
    moe_comm_blocks(n, P, 16, counts, first);
    if (m_reduce_scatter(c, buf, (char *)buf + first[c->rank] * es, counts, t, err)) return -1;
    return m_allgather(c, buf, counts, t, err);
}

static int m_alltoallv(moe_comm *c, const void *send, const size_t *scounts, void *recv,
                       const size_t *rcounts, moe_dtype t, moe_err *err) {
    mpi_impl *m = c->impl;
    if (int_counts(scounts, c->size, m->ic, m->id, err) || int_counts(rcounts, c->size, m->oc, m->od, err))
        return -1;
    int rc = MPI_Alltoallv(send, m->ic, m->id, mpi_type(t), recv, m->oc, m->od, mpi_type(t), m->comm);
    return rc == MPI_SUCCESS ? 0 : mpi_fail(rc, "all-to-all", err);
}

static int m_broadcast(moe_comm *c, void *buf, size_t n, moe_dtype t, int root, moe_err *err) {
    mpi_impl *m = c->impl;
    size_t es = moe_dtype_size(t);
    for (size_t k = 0; k < n; k += m->chunk) {  /* pieces whose counts fit an int */
        int rc = MPI_Bcast((char *)buf + k * es, (int)round_count(n, k, m->chunk), mpi_type(t), root, m->comm);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, "broadcast", err);
    }
    return 0;
}

static int m_barrier(moe_comm *c, moe_err *err) {
    int rc = MPI_Barrier(((mpi_impl *)c->impl)->comm);
    return rc == MPI_SUCCESS ? 0 : mpi_fail(rc, "barrier", err);
}

static void m_abort(moe_comm *c, int code) {
    MPI_Abort(((mpi_impl *)c->impl)->comm, code);
    exit(code);
}

static int wrap(MPI_Comm comm, int world, moe_comm **out, moe_err *err);

static int m_split(moe_comm *c, int color, int key, moe_comm **out, moe_err *err) {
    MPI_Comm sub;
    int rc = MPI_Comm_split(((mpi_impl *)c->impl)->comm, color, key, &sub);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "communicator split", err);
    return wrap(sub, 0, out, err);
}

static void m_destroy(moe_comm *c) {
    mpi_impl *m = c->impl;
    if (m) {
        if (m->world) MPI_Finalize();
        else MPI_Comm_free(&m->comm);
        free(m->scratch);
        free(m->ic); free(m->id); free(m->oc); free(m->od); free(m->req);
        free(m);
    }
    free(c);
}

static const moe_comm_ops MPI_OPS = {
    .name = "mpi", .allreduce_sum = m_allreduce, .reduce_scatter_sum = m_reduce_scatter,
    .allgather = m_allgather, .alltoallv = m_alltoallv, .broadcast = m_broadcast,
    .barrier = m_barrier, .abort = m_abort, .split = m_split, .destroy = m_destroy,
};

static int wrap(MPI_Comm comm, int world, moe_comm **out, moe_err *err) {
    moe_comm *c = moe_calloc(1, sizeof *c, err);
    mpi_impl *m = c ? moe_calloc(1, sizeof *m, err) : NULL;
    if (!m) { free(c); return -1; }
    c->ops = &MPI_OPS;
    c->impl = m;
    m->comm = comm;
    const char *chunk = getenv("MOE_COMM_CHUNK");   /* tests only: see CHUNK */
    m->chunk = chunk && atol(chunk) > 0 && atol(chunk) < CHUNK ? (size_t)atol(chunk) : CHUNK;
    m->world = world;
    MPI_Comm_rank(comm, &c->rank);
    MPI_Comm_size(comm, &c->size);
    size_t P = (size_t)c->size;
    m->ic = moe_calloc(P, sizeof(int), err);
    m->id = moe_calloc(P, sizeof(int), err);
    m->oc = moe_calloc(P, sizeof(int), err);
    m->od = moe_calloc(P, sizeof(int), err);
    m->req = moe_calloc(2 * P, sizeof(MPI_Request), err);
    if (!m->ic || !m->id || !m->oc || !m->od || !m->req) { m->world = 0; m_destroy(c); return -1; }
    *out = c;
    return 0;
}

int moe_comm_mpi_launched(void) {
    static const char *VARS[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK"};
    for (size_t i = 0; i < sizeof VARS / sizeof VARS[0]; i++)
        if (getenv(VARS[i])) return 1;
    return 0;
}

int moe_comm_world(moe_comm **out, moe_err *err) {
    if (!moe_comm_mpi_launched()) return moe_comm_single(out, err);
    int provided = 0;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return moe_errf(err, "MPI_Init_thread failed");
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int size = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size == 1) {  /* mpirun -np 1: exactly the single-process run */
        MPI_Finalize();
        return moe_comm_single(out, err);
    }
    return wrap(MPI_COMM_WORLD, 1, out, err);
}
