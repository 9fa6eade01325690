/* placement.c — which rank of an expert-parallel group runs which routed
 * experts (docs/DISTRIBUTED.md "Placement"). Each MoE layer's all-to-all
 * waits for the rank with the most expert rows, and routing is uneven, so
 * holding contiguous blocks of experts (0..E/P-1 on rank 0, ...) leaves the
 * other ranks idle. The trainer counts every expert's routed rows (all
 * ranks, all micro-batches), and after the first step of a run and every
 * rebalance_experts steps gives each rank experts of nearly equal load,
 * moving the weights and AdamW moments of those that change rank.
 *
 * Only experts of the same slot index trade ranks (a "column": position
 * p * E/P + s for every rank p), so an expert's parameters land at the same
 * offsets of its new rank's arrays, inside the same ZeRO-1 slice: each rank
 * of the group exchanges just the part it holds with one other rank. The
 * placement changes no result: every expert still sees the group's rows in
 * the same order. Checkpoints keep the experts in their own order: a save
 * moves them home first and back after. */
#include <stdlib.h>
#include <string.h>

#include "moe/comm/comm.h"
#include "moe/train/train.h"

/* The placement's rows per rank of one layer, summed: the ranks' mean
 * (*mean) and the busiest rank's (*most). */
static void rank_loads(size_t E, size_t P, const double *load, const int *at, double *mean, double *most) {
    size_t El = E / P;
    double sum = 0.0, top = 0.0;
    for (size_t p = 0; p < P; p++) {
        double r = 0.0;
        for (size_t s = 0; s < El; s++) r += load[at[p * El + s]];
        sum += r;
        top = r > top ? r : top;
    }
    *mean = sum / (double)P;
    *most = top;
}

/* Which rank is called which does not change a placement's balance: the
 * ranks of out[] are renamed so that experts stay where at[] has them. Each
 * new rank would be named after the current rank that holds most of its
 * experts; the new ranks with the most such experts choose first, one that
 * finds its choice taken gets the lowest free name. On two ranks this keeps
 * at least half of the experts in place. */
static void keep_most(size_t E, size_t P, const int *at, int *out) {
    size_t El = E / P, rank_of[E], votes[P], pref[P], strength[P], order[P], to[P];
    int taken[P];
    for (size_t pos = 0; pos < E; pos++) rank_of[at[pos]] = pos / El;
    for (size_t q = 0; q < P; q++) { votes[q] = 0; taken[q] = 0; }
    for (size_t p = 0; p < P; p++) {
        pref[p] = strength[p] = 0;
        for (size_t c = 0; c < El; c++) {
            size_t q = rank_of[out[p * El + c]];
            if (++votes[q] > strength[p] || (votes[q] == strength[p] && q < pref[p])) {
                pref[p] = q;
                strength[p] = votes[q];
            }
        }
        for (size_t c = 0; c < El; c++) votes[rank_of[out[p * El + c]]] = 0;
        order[p] = p;
    }
    for (size_t i = 1; i < P; i++)  /* most experts kept first (ties: lower rank) */
        for (size_t k = i; k > 0 && strength[order[k]] > strength[order[k - 1]]; k--) {
            size_t t = order[k]; order[k] = order[k - 1]; order[k - 1] = t;
        }
    for (size_t i = 0; i < P; i++) {
        size_t p = order[i], q = pref[p];
        if (taken[q])  /* taken: the lowest free name */
            for (q = 0; taken[q]; q++) {}
        to[p] = q;
        taken[q] = 1;
    }
    int renamed[E];
    for (size_t p = 0; p < P; p++) memcpy(renamed + to[p] * El, out + p * El, El * sizeof(int));
    memcpy(out, renamed, E * sizeof(int));
}

double moe_placement_choose(size_t E, size_t P, const double *load, const int *at, int *out) {
    size_t El = E / P, cols[El], x[P], parts[P];
    double spread[El], got[P];
    for (size_t c = 0; c < El; c++) {  /* each column's spread: its heaviest minus its lightest */
        double lo = load[at[c]], hi = lo;
        for (size_t p = 1; p < P; p++) {
            double l = load[at[p * El + c]];
            lo = l < lo ? l : lo;
            hi = l > hi ? l : hi;
        }
        spread[c] = hi - lo;
        cols[c] = c;
    }
    for (size_t i = 1; i < El; i++)  /* widest first (ties: lower column) */
        for (size_t k = i; k > 0 && spread[cols[k]] > spread[cols[k - 1]]; k--) {
            size_t t = cols[k]; cols[k] = cols[k - 1]; cols[k - 1] = t;
        }
    for (size_t p = 0; p < P; p++) got[p] = 0.0;
    for (size_t i = 0; i < El; i++) {
        size_t c = cols[i];
        for (size_t p = 0; p < P; p++) { x[p] = (size_t)at[p * El + c]; parts[p] = p; }
        for (size_t a = 1; a < P; a++)  /* the column's experts, heaviest first (ties: lower index) */
            for (size_t k = a; k > 0 && (load[x[k]] > load[x[k - 1]] ||
                                         (load[x[k]] == load[x[k - 1]] && x[k] < x[k - 1])); k--) {
                size_t t = x[k]; x[k] = x[k - 1]; x[k - 1] = t;
            }
        for (size_t a = 1; a < P; a++)  /* the ranks, least loaded first (ties: lower rank) */
            for (size_t k = a; k > 0 && got[parts[k]] < got[parts[k - 1]]; k--) {
                size_t t = parts[k]; parts[k] = parts[k - 1]; parts[k - 1] = t;
            }
        for (size_t a = 0; a < P; a++) {
            out[parts[a] * El + c] = (int)x[a];
            got[parts[a]] += load[x[a]];
        }
    }
    keep_most(E, P, at, out);
    double most = 0.0;
    for (size_t p = 0; p < P; p++) most = got[p] > most ? got[p] : most;
    return most;
}

int moe_placement_init(moe_trainer *tr, moe_err *err) {
    moe_model *m = tr->model;
    size_t n = 0, E = 0;
    for (int pass = 0; pass < 2; pass++) {  /* count, then collect */
        n = E = 0;
        for (int l = 0; l < m->cfg.n_layers; l++) {
            moe_ffn *f = m->blocks[l].ffn;
            moe_placement *p;
            for (int which = 0; f->ops->placement && (p = f->ops->placement(f, which)); which++) {
                if (pass) tr->places[n] = p;
                n++;
                E += p->E;
            }
        }
        if (pass == 0) {
            tr->places = moe_calloc(n ? n : 1, sizeof *tr->places, err);
            tr->load = tr->places ? moe_calloc(E ? E : 1, sizeof(double), err) : NULL;
            tr->step_rows = tr->load ? moe_calloc(E ? E : 1, sizeof(double), err) : NULL;
            tr->kept = tr->step_rows ? moe_calloc(E ? E : 1, sizeof(int), err) : NULL;
            if (!tr->kept) return -1;
        }
    }
    tr->n_places = n;
    tr->n_routed = E;
    return 0;
}

void moe_placement_free(moe_trainer *tr) {
    free(tr->places);
    free(tr->load);
    free(tr->step_rows);
    free(tr->kept);
}

void moe_placement_reset(moe_trainer *tr) {
    for (size_t i = 0; i < tr->n_places; i++) {
        moe_placement *p = tr->places[i];
        for (size_t e = 0; e < p->E; e++) { p->at[e] = (int)e; p->rows[e] = 0.0; }
    }
    if (tr->load) memset(tr->load, 0, tr->n_routed * sizeof(double));
    tr->placed = 0;
}

/* Moves slot c of one layer from placement p->at to want[] across the
 * group: every array's part of the three weights at that slot goes to the
 * rank that now holds the expert. *moved += experts that changed rank. */
static int move_column(moe_trainer *tr, moe_placement *p, const int *want, size_t c, float *scratch,
                       int *moved, moe_err *err) {
    moe_comm *ep = tr->ep;
    size_t P = (size_t)ep->size, me = (size_t)ep->rank, El = p->E / P, to = me, from = me;
    for (size_t q = 0; q < P; q++) {
        if (want[q * El + c] == p->at[me * El + c]) to = q;    /* where this rank's expert goes */
        if (p->at[q * El + c] == want[me * El + c]) from = q;  /* where its new one comes from */
        *moved += want[q * El + c] != p->at[q * El + c];
    }
    /* the arrays and the parameters each holds: weights whole, moments its slice */
    float *arrays[3] = {tr->model->params, tr->adam_m, tr->adam_v};
    size_t lo[3] = {0, tr->shard_first, tr->shard_first};
    size_t hi[3] = {tr->model->n_params, tr->shard_first + tr->shard_count, tr->shard_first + tr->shard_count};
    for (size_t k = 0; k < 3; k++) {
        size_t first = (size_t)(p->w[k] - tr->model->params) + c * p->block;
        for (size_t a = 0; a < 3; a++) {
            size_t x, y, sc[P], rc[P];
            /* every rank of the group holds the same span (the same slice index) */
            if (!moe_span_clip(first, p->block, lo[a], hi[a], &x, &y)) continue;
            memset(sc, 0, sizeof sc);
            memset(rc, 0, sizeof rc);
            if (to != me) { sc[to] = y - x; rc[from] = y - x; }
            float *mine = arrays[a] + (x - lo[a]);
            if (moe_comm_alltoallv(ep, mine, sc, scratch, rc, MOE_F32, err)) return -1;
            if (to != me) memcpy(mine, scratch, (y - x) * sizeof(float));
        }
    }
    return 0;
}

/* Moves the experts of every layer to want[n_routed] (the placements'
 * at[] concatenated), then at = want. */
static int move_experts(moe_trainer *tr, const int *want, int *moved, moe_err *err) {
    size_t P = (size_t)tr->ep->size, block = 0;
    for (size_t i = 0; i < tr->n_places; i++)
        block = tr->places[i]->block > block ? tr->places[i]->block : block;
    float *scratch = NULL;
    int rc = 0;
    *moved = 0;
    for (size_t i = 0, k = 0; i < tr->n_places && !rc; k += tr->places[i++]->E) {
        moe_placement *p = tr->places[i];
        for (size_t c = 0; c < p->E / P && !rc; c++) {
            int same = 1;
            for (size_t q = 0; q < P; q++) same &= want[k + q * (p->E / P) + c] == p->at[q * (p->E / P) + c];
            if (same) continue;
            if (!scratch && !(scratch = moe_floats_alloc(block, err))) { rc = -1; break; }
            rc = move_column(tr, p, want + k, c, scratch, moved, err);
        }
        if (!rc) memcpy(p->at, want + k, p->E * sizeof(int));
    }
    moe_floats_free(scratch);
    return rc;
}

int moe_placement_update(moe_trainer *tr, moe_step_stats *st, moe_err *err) {
    if (!tr->n_places) return 0;
    size_t P = (size_t)tr->ep->size;
    double *rows = tr->step_rows;
    for (size_t i = 0, k = 0; i < tr->n_places; k += tr->places[i++]->E) {
        memcpy(rows + k, tr->places[i]->rows, tr->places[i]->E * sizeof(double));
        memset(tr->places[i]->rows, 0, tr->places[i]->E * sizeof(double));
    }
    if (moe_comm_allreduce(tr->comm, rows, tr->n_routed, MOE_F64, err)) return -1;
    double mean = 0.0, most = 0.0;
    for (size_t i = 0, k = 0; i < tr->n_places; k += tr->places[i++]->E) {
        double a, b;
        rank_loads(tr->places[i]->E, P, rows + k, tr->places[i]->at, &a, &b);
        mean += a;
        most += b;
    }
    st->ep_balance = most > 0.0 ? mean / most : 1.0;
    for (size_t e = 0; e < tr->n_routed; e++) tr->load[e] += rows[e];
    int every = tr->cfg->rebalance_experts;
    if (every <= 0 || (tr->placed && tr->step % every)) return 0;
    /* a layer takes the new placement only if its busiest rank gets less */
    int *want = tr->kept;
    for (size_t i = 0, k = 0; i < tr->n_places; k += tr->places[i++]->E) {
        moe_placement *p = tr->places[i];
        double was, now = moe_placement_choose(p->E, P, tr->load + k, p->at, want + k), dummy;
        rank_loads(p->E, P, tr->load + k, p->at, &dummy, &was);
        if (!(now < was)) memcpy(want + k, p->at, p->E * sizeof(int));
    }
    memset(tr->load, 0, tr->n_routed * sizeof(double));
    tr->placed = 1;
    return move_experts(tr, want, &st->experts_moved, err);
}

int moe_placement_home(moe_trainer *tr, int home, moe_err *err) {
    if (!tr->n_places) return 0;
    int moved, *want = tr->kept;
    if (home) {  /* keep the placement, go to the identity */
        int *ident = moe_calloc(tr->n_routed, sizeof(int), err);
        if (!ident) return -1;
        for (size_t i = 0, k = 0; i < tr->n_places; k += tr->places[i++]->E) {
            memcpy(want + k, tr->places[i]->at, tr->places[i]->E * sizeof(int));
            for (size_t e = 0; e < tr->places[i]->E; e++) ident[k + e] = (int)e;
        }
        int rc = move_experts(tr, ident, &moved, err);
        free(ident);
        return rc;
    }
    return move_experts(tr, want, &moved, err);
}
