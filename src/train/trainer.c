/* trainer.c — one optimiser step (grad_accum micro-batches, clipping,
 * AdamW), each step's metrics line, and checkpoints that resume exactly; across
 * processes, the data-parallel split, the gradient sums and ZeRO-1's
 * sharded moments (docs/DISTRIBUTED.md). */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "moe/util/checksum.h"
#include "moe/comm/comm.h"
#include "moe/util/fileio.h"
#include "moe/util/json.h"
#include "moe/util/safetensors.h"
#include "moe/train/train.h"

static void remove_flat_dir(const char *dir);
static void remove_leftovers(const char *out_dir);

int moe_trainer_create(moe_trainer *tr, moe_model *model, const moe_tokens *data, const char *out_dir,
                       moe_err *err) {
    memset(tr, 0, sizeof *tr);
    tr->lock_fd = -1;
    const moe_config *cfg = tr->cfg = &model->cfg;
    tr->model = model;
    tr->data = data;
    if (moe_path(tr->out_dir, sizeof tr->out_dir, err, "%s", out_dir)) return -1;
    const char *file = data->path ? data->path : "the token file";
    if (data->vocab_size > (uint32_t)model->cfg.vocab_size)
        return moe_errf(err, "%s: its vocabulary (%u ids) is larger than the model's vocab_size (%d)",
                        file, data->vocab_size, model->cfg.vocab_size);
    size_t N = (size_t)cfg->batch_size * (size_t)cfg->seq_len;
    tr->adam_m = moe_floats_alloc(model->n_params, err);
    tr->adam_v = tr->adam_m ? moe_floats_alloc(model->n_params, err) : NULL;
    tr->inputs = tr->adam_v ? moe_calloc(N, sizeof(int), err) : NULL;
    tr->targets = tr->inputs ? moe_calloc(N, sizeof(int), err) : NULL;
    tr->norm_parts = tr->targets ? moe_calloc(moe_grad_norm_parts(model->n_params), sizeof(double), err)
                                 : NULL;
    if (!tr->norm_parts) return -1;
    tr->shard_count = model->n_params;  /* one process holds every moment */
    if (moe_loader_init(&tr->loader, data, (size_t)cfg->batch_size, (size_t)cfg->seq_len,
                        cfg->shuffle, (uint64_t)cfg->seed, err))
        return moe_err_prefix(err, "%s", file);
    return moe_mkdirs(out_dir, err);
}

int moe_trainer_claim(moe_trainer *tr, moe_err *err) {
    if (moe_dir_lock(tr->out_dir, &tr->lock_fd, err)) return -1;
    remove_leftovers(tr->out_dir);
    return 0;
}

/* True when the run spans more than one rank. */
static int distributed(const moe_trainer *tr) { return tr->comm && tr->comm->size > 1; }

/* The layout as maximal runs of whole and of split tensors. */
static int param_runs(moe_trainer *tr, moe_err *err) {
    const moe_layout *L = &tr->model->layout;
    tr->runs = moe_calloc(L->count ? L->count : 1, sizeof *tr->runs, err);
    if (!tr->runs) return -1;
    for (size_t i = 0; i < L->count; i++) {
        const moe_tensor *t = &L->tensors[i];
        moe_param_run *r = tr->n_runs ? &tr->runs[tr->n_runs - 1] : NULL;
        if (r && r->split == t->split && r->first + r->count == t->offset)
            r->count += t->size;
        else
            tr->runs[tr->n_runs++] = (moe_param_run){t->offset, t->size, t->split};
    }
    return 0;
}

int moe_trainer_distribute(moe_trainer *tr, moe_comm *comm, moe_err *err) {
    const moe_config *c = tr->cfg;
    moe_model *m = tr->model;
    size_t n = m->n_params;
    tr->shard_first = 0;
    tr->shard_count = n;
    if (!comm || comm->size == 1) return 0;
    int W = comm->size, EP = c->expert_parallel;
    if (c->batch_size % W)
        return moe_errf(err, "batch_size %d is not divisible by the %d ranks: every rank takes "
                        "batch_size / ranks rows of each global batch", c->batch_size, W);
    if (W % EP)
        return moe_errf(err, "%d ranks are not a multiple of expert_parallel %d (ranks = data "
                        "parallel x expert parallel)", W, EP);
    int parts = m->layout.parts > 1 ? m->layout.parts : 1, part = parts > 1 ? m->layout.part : 0;
    if (parts != EP || part != comm->rank % EP)
        return moe_errf(err, "rank %d: the model holds part %d of %d of the experts, expert_parallel "
                        "%d needs part %d (moe_model_create_part)", comm->rank, part, parts, EP,
                        comm->rank % EP);
    tr->comm = comm;
    /* the expert-parallel group: EP consecutive ranks, one per part; the
     * replicas: the ranks holding the same part (all of them without EP) */
    if (comm->ops->split(comm, comm->rank / EP, comm->rank, &tr->ep, err) ||
        comm->ops->split(comm, comm->rank % EP, comm->rank, &tr->replicas, err) || param_runs(tr, err))
        return -1;
    m->dp = comm;
    m->ep = tr->ep;
    m->row0 = (size_t)comm->rank * (size_t)(c->batch_size / W);
    int R = tr->replicas->size;
    tr->shard_counts = moe_calloc((size_t)R, sizeof(size_t), err);
    tr->shard_firsts = moe_calloc((size_t)R, sizeof(size_t), err);
    if (!tr->shard_counts || !tr->shard_firsts) return -1;
    /* slices of 16 floats' multiples, so each rank's AdamW groups and
     * alignment are those of the whole array */
    moe_comm_blocks(n, R, 16, tr->shard_counts, tr->shard_firsts);
    if (EP > 1 && moe_placement_init(tr, err)) return -1;
    if (!c->zero_stage) return 0;
    tr->shard_first = tr->shard_firsts[tr->replicas->rank];
    tr->shard_count = tr->shard_counts[tr->replicas->rank];
    moe_floats_free(tr->adam_m);
    moe_floats_free(tr->adam_v);
    tr->adam_v = NULL;
    tr->adam_m = moe_floats_alloc(tr->shard_count ? tr->shard_count : 16, err);
    tr->adam_v = tr->adam_m ? moe_floats_alloc(tr->shard_count ? tr->shard_count : 16, err) : NULL;
    return tr->adam_v ? 0 : -1;
}

void moe_trainer_comm_usage(const moe_trainer *tr, double *seconds, double *bytes) {
    const moe_comm *g[] = {tr->comm, tr->ep, tr->replicas};
    *seconds = *bytes = 0.0;
    for (size_t i = 0; i < 3; i++)
        if (g[i]) { *seconds += g[i]->seconds; *bytes += g[i]->bytes; }
}

void moe_trainer_free(moe_trainer *tr) {
    moe_comm_free(tr->ep);
    moe_comm_free(tr->replicas);
    moe_placement_free(tr);
    free(tr->runs);
    free(tr->shard_counts);
    free(tr->shard_firsts);
    moe_floats_free(tr->adam_m);
    moe_floats_free(tr->adam_v);
    free(tr->inputs);
    free(tr->targets);
    free(tr->norm_parts);
    moe_loader_free(&tr->loader);
    moe_buf_free(&tr->tokenizer);
    moe_model_free(tr->model);
    moe_dir_unlock(tr->lock_fd);
    memset(tr, 0, sizeof *tr);
    tr->lock_fd = -1;
}

/* The index of the first tensor whose parameters or AdamW moments (where
 * this rank holds them) hold a NaN or an infinity; L->count if none (a rare
 * path: only after an update reported one). */
static size_t first_nonfinite(const moe_trainer *tr) {
    const moe_layout *L = &tr->model->layout;
    size_t lo = tr->shard_first, hi = lo + tr->shard_count;  /* the moments held */
    for (size_t k = 0; k < L->count; k++) {
        const moe_tensor *t = &L->tensors[k];
        for (size_t i = t->offset; i < t->offset + t->size; i++)
            if (!isfinite(tr->model->params[i]) ||
                (i >= lo && i < hi && (!isfinite(tr->adam_m[i - lo]) || !isfinite(tr->adam_v[i - lo]))))
                return k;
    }
    return L->count;
}

/* The name of the first poisoned tensor; across ranks the lowest index any
 * rank found (each holds its own experts and its slice of the moments). */
static int poisoned_name(moe_trainer *tr, const char **name, moe_err *err) {
    const moe_layout *L = &tr->model->layout;
    double first = (double)first_nonfinite(tr);
    if (distributed(tr)) {
        size_t P = (size_t)tr->comm->size;
        double *all = moe_calloc(P, sizeof(double), err);
        size_t *counts = all ? moe_calloc(P, sizeof(size_t), err) : NULL;
        int rc = counts ? 0 : -1;
        for (size_t r = 0; counts && r < P; r++) counts[r] = 1;
        if (!rc) all[tr->comm->rank] = first;
        if (!rc) rc = moe_comm_allgather(tr->comm, all, counts, MOE_F64, err);
        for (size_t r = 0; !rc && r < P; r++) first = all[r] < first ? all[r] : first;
        free(all);
        free(counts);
        if (rc) return -1;
    }
    *name = (size_t)first < L->count ? L->tensors[(size_t)first].name : "?";
    return 0;
}

/* Across ranks, after the micro-batches: the losses (each rank's share of
 * the global means) and the routing counts are summed, and the gradients:
 * all-reduced, or with ZeRO-1 reduce-scattered (this rank's slice is the
 * sum, the rest is stale until the update zeroes it). Every sum is added in
 * rank order, the same bits on every rank. */
static int sum_over_ranks(moe_trainer *tr, moe_step_stats *st, moe_err *err) {
    moe_model *m = tr->model;
    double v[4] = {st->lm_loss, st->aux_loss, m->rs.active_pairs, m->rs.total_pairs};
    if (moe_comm_allreduce(tr->comm, v, 4, MOE_F64, err)) return -1;
    st->lm_loss = v[0];
    st->aux_loss = v[1];
    m->rs.active_pairs = v[2];
    m->rs.total_pairs = v[3];
    moe_prof_mark(m->prof, PROF_OTHER);
    /* whole tensors: the expert-parallel group's contributions first (a
     * split tensor's gradient is complete on its owner, which ran its
     * experts for the whole group's tokens), then every tensor over the
     * replicas */
    int rc = 0;
    for (size_t i = 0; tr->ep->size > 1 && i < tr->n_runs && !rc; i++)
        if (!tr->runs[i].split)
            rc = moe_comm_allreduce(tr->ep, m->grads + tr->runs[i].first, tr->runs[i].count, MOE_F32, err);
    if (!rc)
        rc = tr->cfg->zero_stage
            ? moe_comm_reduce_scatter(tr->replicas, m->grads, m->grads + tr->shard_first, tr->shard_counts,
                                      MOE_F32, err)
            : moe_comm_allreduce(tr->replicas, m->grads, m->n_params, MOE_F32, err);
    moe_prof_mark(m->prof, PROF_COMM);
    return rc;
}

/* Across ranks: the norm of the summed gradient. Each rank adds the
 * squares of its slice (everything it holds without ZeRO), whole and split
 * tensors apart; the slices' sums are added over the replicas, the split
 * tensors' over the expert-parallel group (each owner its own experts). */
static int grad_norm_distributed(moe_trainer *tr, double *norm, moe_err *err) {
    moe_model *m = tr->model;
    size_t lo = tr->shard_first, hi = lo + tr->shard_count;
    double sq[2] = {0.0, 0.0};
    for (size_t i = 0; i < tr->n_runs; i++) {
        size_t a, b;
        if (!moe_span_clip(tr->runs[i].first, tr->runs[i].count, lo, hi, &a, &b)) continue;
        double r = moe_grad_norm(m->grads + a, b - a, tr->norm_parts);
        sq[tr->runs[i].split] += r * r;
    }
    if ((tr->cfg->zero_stage && moe_comm_allreduce(tr->replicas, sq, 2, MOE_F64, err)) ||
        moe_comm_allreduce(tr->ep, &sq[1], 1, MOE_F64, err))
        return -1;
    *norm = sqrt(sq[0] + sq[1]);
    return 0;
}

/* Across ranks: the elements the update left non-finite, as one process
 * would count them (whole tensors once, every expert once), known to every
 * rank so that all return to the checkpoint together. `bad`: this rank's
 * count over what it updated. */
static int poisoned_over_ranks(moe_trainer *tr, size_t bad, size_t *out, moe_err *err) {
    const moe_layout *L = &tr->model->layout;
    size_t lo = tr->shard_first, hi = lo + tr->shard_count;
    double n[2] = {0.0, 0.0};  /* whole, split */
    for (size_t k = 0; bad && k < L->count; k++) {  /* a rare path: recount by kind */
        const moe_tensor *t = &L->tensors[k];
        size_t a, b;
        moe_span_clip(t->offset, t->size, lo, hi, &a, &b);
        for (size_t i = a; i < b; i++)
            n[t->split] += !isfinite(tr->model->params[i]) || !isfinite(tr->adam_m[i - lo]) ||
                           !isfinite(tr->adam_v[i - lo]);
    }
    if (moe_comm_allreduce(tr->replicas, n, 2, MOE_F64, err) ||
        moe_comm_allreduce(tr->ep, &n[1], 1, MOE_F64, err))
        return -1;
    /* without ZeRO every replica updated the same elements: counted once */
    if (!tr->cfg->zero_stage) { n[0] /= tr->replicas->size; n[1] /= tr->replicas->size; }
    *out = (size_t)(n[0] + n[1]);
    return 0;
}

/* Global-batch statistics (moe_model_wants_prepass) with more than one
 * micro-batch: the step's micro-batches are forwarded once, routing only
 * counted, before the first backward; the loader then reads them again. */
static int routing_prepass(moe_trainer *tr, size_t Bl, size_t T, size_t off, moe_err *err) {
    moe_model *m = tr->model;
    uint64_t position = tr->loader.position;
    m->prepass = 1;
    int rc = 0;
    for (int micro = 0; micro < tr->cfg->grad_accum && !rc; micro++)
        rc = moe_loader_next(&tr->loader, tr->inputs, tr->targets, err) ||
             moe_model_forward(m, tr->inputs + off, NULL, Bl, T, NULL, NULL, err) ? -1 : 0;
    m->prepass = 0;
    tr->loader.position = position;
    return rc;
}

int moe_trainer_step(moe_trainer *tr, moe_step_stats *st, moe_err *err) {
    moe_model *m = tr->model;
    const moe_config *c = tr->cfg;
    size_t B = (size_t)c->batch_size, T = (size_t)c->seq_len;
    double t0 = moe_now_seconds();
    tr->prof.last = t0;
    memset(st, 0, sizeof *st);  /* the gradients are zero: the last update cleared them */
    m->step = tr->step;
    m->training = 1;
    float scale = 1.0f / (float)c->grad_accum;
    m->prof = tr->prof.on ? &tr->prof : NULL;
    moe_prof_mark(m->prof, PROF_OPTIMIZER);  /* zeroing the gradients */
    /* across ranks: every rank reads the whole global batch (the same rows
     * in the same order as one process) and computes rows [row0, row0 + Bl) */
    size_t Bl = distributed(tr) ? B / (size_t)tr->comm->size : B, off = m->row0 * T;
    if (c->grad_accum > 1 && moe_model_wants_prepass(m) && routing_prepass(tr, Bl, T, off, err)) return -1;
    for (int micro = 0; micro < c->grad_accum; micro++) {
        double lm, aux;
        if (moe_loader_next(&tr->loader, tr->inputs, tr->targets, err)) return -1;
        moe_prof_mark(m->prof, PROF_DATA);
        if (moe_model_forward_backward(m, tr->inputs + off, tr->targets + off, Bl, T, scale, &lm, &aux,
                                       err))
            return -1;
        st->lm_loss += lm / c->grad_accum;
        st->aux_loss += aux / c->grad_accum;
    }
    if (distributed(tr) && sum_over_ranks(tr, st, err)) return -1;
    st->loss = st->lm_loss + st->aux_loss;
    if (!distributed(tr))
        st->grad_norm = moe_grad_norm(m->grads, m->n_params, tr->norm_parts);
    else if (grad_norm_distributed(tr, &st->grad_norm, err))
        return -1;
    st->lr = moe_lr_at(c, tr->step);
    st->lambda = m->rs.lambda;
    st->tokens = B * T * (size_t)c->grad_accum;
    if (!isfinite(st->loss) || !isfinite(st->grad_norm)) {
        /* no update from a broken step; lambda keeps its value */
        st->skipped = 1;
        moe_model_zero_grad(m);
        moe_model_discard_step(m);
        st->step = ++tr->step;
        if (moe_placement_update(tr, st, err)) return -1;
        st->seconds = moe_now_seconds() - t0;
        return 0;
    }
    float clip = c->grad_clip > 0 && st->grad_norm > c->grad_clip
                     ? (float)(c->grad_clip / (st->grad_norm + 1e-6)) : 1.0f;
    if (!distributed(tr) || !c->zero_stage) {
        st->poisoned = moe_adamw_update(&m->layout, m->params, m->grads, clip, tr->adam_m, tr->adam_v,
                                        st->lr, tr->step + 1, c);
    } else {  /* ZeRO-1: update this rank's slice, then every rank gets every slice */
        size_t lo = tr->shard_first, hi = lo + tr->shard_count;
        st->poisoned = moe_adamw_update_range(&m->layout, m->params, m->grads, clip, tr->adam_m,
                                              tr->adam_v, st->lr, tr->step + 1, c, lo, hi);
        memset(m->grads, 0, lo * sizeof(float));
        memset(m->grads + hi, 0, (m->n_params - hi) * sizeof(float));
        if (moe_comm_allgather(tr->replicas, m->params, tr->shard_counts, MOE_F32, err)) return -1;
    }
    /* across ranks with ZeRO's slices or expert parallel's own experts, the
     * ranks updated different elements: every rank must agree to roll back
     * (plain data parallel: every rank made the same update) */
    if (distributed(tr) && (c->zero_stage || tr->ep->size > 1) &&
        poisoned_over_ranks(tr, st->poisoned, &st->poisoned, err))
        return -1;
    if (st->poisoned && poisoned_name(tr, &st->poisoned_tensor, err)) return -1;
    st->sparsity = moe_model_end_step(m);
    moe_prof_mark(m->prof, PROF_OPTIMIZER);
    st->step = ++tr->step;
    if (moe_placement_update(tr, st, err)) return -1;
    moe_prof_mark(m->prof, PROF_COMM);
    st->seconds = moe_now_seconds() - t0;
    return 0;
}

void moe_trainer_metrics_line(const moe_trainer *tr, const moe_step_stats *st, moe_buf *line) {
    moe_buf b = {0};
    moe_buf_printf(&b, "{\"step\": %ld, \"loss\": ", st->step);
    moe_json_write_double(&b, st->loss);
    moe_buf_printf(&b, ", \"lm_loss\": ");
    moe_json_write_double(&b, st->lm_loss);
    moe_buf_printf(&b, ", \"aux_loss\": ");
    moe_json_write_double(&b, st->aux_loss);
    moe_buf_printf(&b, ", \"lr\": ");
    moe_json_write_double(&b, st->lr);
    moe_buf_printf(&b, ", \"grad_norm\": ");
    moe_json_write_double(&b, st->grad_norm);
    moe_buf_printf(&b, ", \"tokens\": %zu, \"seconds\": %.6f", st->tokens, st->seconds);
    if (st->skipped) moe_buf_printf(&b, ", \"skipped\": true");
    if (st->poisoned) moe_buf_printf(&b, ", \"nonfinite_params\": %zu", st->poisoned);
    if (tr->n_places) moe_buf_printf(&b, ", \"ep_balance\": %.6f", st->ep_balance);
    if (st->experts_moved) moe_buf_printf(&b, ", \"experts_moved\": %d", st->experts_moved);
    int moe_layers = 0;
    for (int l = 0; l < tr->model->cfg.n_layers; l++) {
        const moe_ffn *f = tr->model->blocks[l].ffn;
        if (!f->ops->stats_json) continue;
        if (moe_layers++ == 0) {
            moe_buf_printf(&b, ", \"sparsity\": ");
            moe_json_write_double(&b, st->sparsity);
            moe_buf_printf(&b, ", \"lambda\": ");
            moe_json_write_float(&b, st->lambda);
            moe_buf_printf(&b, ", \"layers\": [");
        } else {
            moe_buf_printf(&b, ", ");
        }
        f->ops->stats_json(f, &b);
    }
    if (moe_layers) moe_buf_printf(&b, "]");
    *line = b;
}

/* ---- checkpoints ------------------------------------------------------ */

/* Removes a directory of plain files (checkpoints have no subdirectories). */
static void remove_flat_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
            !moe_path(path, sizeof path, NULL, "%s/%s", dir, e->d_name))
            unlink(path);
    closedir(d);
    rmdir(dir);
}

/* Checkpoint directories being written (.tmp-step-N) or removed
 * (.old-step-N) by a process that was killed: the lock is ours, so they
 * are debris. */
static void remove_leftovers(const char *out_dir) {
    char ckdir[4096], path[4096];
    if (moe_path(ckdir, sizeof ckdir, NULL, "%s/checkpoints", out_dir)) return;
    DIR *d = opendir(ckdir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)))
        if ((!strncmp(e->d_name, ".tmp-step-", 10) || !strncmp(e->d_name, ".old-step-", 10)) &&
            !moe_path(path, sizeof path, NULL, "%s/%s", ckdir, e->d_name))
            remove_flat_dir(path);
    closedir(d);
}

/* Removes a checkpoint so that it is never seen half-deleted: renamed out
 * of the step-* names first (old: a free .old-step-N path), then emptied. */
static void retire_checkpoint(const char *dir, const char *old) {
    if (rename(dir, old) == 0) remove_flat_dir(old);
}

/* What rank 0's fetch callback needs: the expert-parallel group. */
static int fetch_part(void *arg, int array, const moe_tensor *t, int part, float *buf, moe_err *err);

static int write_optimizer(moe_trainer *tr, const float *adam_m, const float *adam_v,
                           const char *dir, moe_err *err) {
    const float *arrays[] = {adam_m, adam_v};
    const char *prefix[] = {"exp_avg.", "exp_avg_sq."};
    char path[4096];
    return moe_path(path, sizeof path, err, "%s/optimizer.safetensors", dir) ? -1
         : moe_layout_write(path, &tr->model->layout, 2, arrays, prefix, tr->ep ? fetch_part : NULL, tr,
                            NULL, NULL, 0, err);
}

static int write_state(const moe_trainer *tr, const char *dir, moe_err *err) {
    char path[4096];
    if (moe_path(path, sizeof path, err, "%s/trainer_state.json", dir)) return -1;
    moe_buf b = {0};
    moe_buf_printf(&b, "{\n  \"format\": \"moe-trainer-state\",\n  \"version\": 1,\n"
                   "  \"step\": %ld,\n  \"loader_position\": %llu,\n  \"data_tokens\": %zu,\n"
                   "  \"lambda\": ", tr->step, (unsigned long long)tr->loader.position, tr->data->n);
    moe_json_write_float(&b, tr->model->rs.lambda);
    if (tr->data->path) {  /* the data, so that --resume finds it and knows it again */
        char abs[PATH_MAX];
        const char *p = realpath(tr->data->path, abs) ? abs : tr->data->path;
        moe_buf_printf(&b, ",\n  \"data_path\": ");
        moe_json_write_string(&b, p, strlen(p));
        moe_buf_printf(&b, ",\n  \"data_bytes\": %llu,\n  \"data_crc32\": \"%08x\"",
                       (unsigned long long)tr->data->file_bytes, tr->data->file_crc);
    }
    moe_buf_printf(&b, "\n}\n");
    int rc = b.data ? moe_write_file_atomic(path, b.data, b.len, err)
                    : moe_errf(err, "out of memory");
    moe_buf_free(&b);
    return rc;
}

/* Step numbers of out_dir/checkpoints/step-*, ascending; returns the count. */
static size_t list_checkpoints(const char *ckdir, long *steps, size_t cap) {
    DIR *d = opendir(ckdir);
    size_t n = 0;
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < cap) {
        char *end;
        if (strncmp(e->d_name, "step-", 5)) continue;
        long s = strtol(e->d_name + 5, &end, 10);
        if (!*end && end != e->d_name + 5) steps[n++] = s;
    }
    closedir(d);
    for (size_t i = 1; i < n; i++)  /* insertion sort: a handful of entries */
        for (size_t j = i; j > 0 && steps[j - 1] > steps[j]; j--) {
            long t = steps[j]; steps[j] = steps[j - 1]; steps[j - 1] = t;
        }
    return n;
}

static int save_local(moe_trainer *tr, const float *adam_m, const float *adam_v, moe_err *err) {
    char ckdir[4096], tmp[4096], final[4096], old[4096];
    if (moe_path(ckdir, sizeof ckdir, err, "%s/checkpoints", tr->out_dir) ||
        moe_path(tmp, sizeof tmp, err, "%s/.tmp-step-%08ld", ckdir, tr->step) ||
        moe_path(final, sizeof final, err, "%s/step-%08ld", ckdir, tr->step) ||
        moe_path(old, sizeof old, err, "%s/.old-step-%08ld", ckdir, tr->step))
        return -1;
    remove_flat_dir(tmp);
    char tok_path[4096];
    if (moe_model_save_divided(tr->model, tmp, tr->ep ? fetch_part : NULL, tr, err) ||
        write_optimizer(tr, adam_m, adam_v, tmp, err) ||
        write_state(tr, tmp, err) ||
        (tr->tokenizer.len &&
         (moe_path(tok_path, sizeof tok_path, err, "%s/tokenizer", tmp) ||
          moe_write_file_atomic(tok_path, tr->tokenizer.data, tr->tokenizer.len, err))) ||
        moe_checksums_write(tmp, err)) {
        remove_flat_dir(tmp);
        long steps[1];
        if (list_checkpoints(ckdir, steps, 1) == 0)  /* nothing to fall back on: say so */
            return moe_err_prefix(err, "checkpoint at step %ld not written, and this run has no "
                                  "earlier checkpoint: nothing of it is saved", tr->step);
        return moe_err_prefix(err, "checkpoint at step %ld not written (earlier ones are intact)",
                              tr->step);
    }
    remove_flat_dir(old);
    retire_checkpoint(final, old);  /* the same step written again (after a rollback) */
    if (rename(tmp, final)) {
        int e = errno;
        remove_flat_dir(tmp);
        return moe_errf(err, "cannot rename %s to %s: %s", tmp, final, strerror(e));
    }
    if (moe_fsync_dir(ckdir, err)) return -1;
    long steps[4096];
    size_t n = list_checkpoints(ckdir, steps, 4096);
    remove_flat_dir(old);
    for (size_t i = 0; i + (size_t)tr->cfg->keep_checkpoints < n; i++) {
        char dir[4096];
        if (!moe_path(dir, sizeof dir, NULL, "%s/step-%08ld", ckdir, steps[i]) &&
            !moe_path(old, sizeof old, NULL, "%s/.old-step-%08ld", ckdir, steps[i]))
            retire_checkpoint(dir, old);
    }
    return 0;
}

/* Rank 0 of the expert-parallel group receives `count` floats from member
 * `part` (an all-to-all in which only that pair moves data); every member
 * calls it, the sender with its rows in `send`. */
static int part_to_rank0(moe_comm *ep, int part, const float *send, float *recv, size_t count, moe_err *err) {
    size_t P = (size_t)ep->size, sc[P], rc[P];
    memset(sc, 0, sizeof sc);
    memset(rc, 0, sizeof rc);
    if (ep->rank == part) sc[0] = count;
    if (ep->rank == 0) rc[part] = count;
    return moe_comm_alltoallv(ep, send, sc, recv, rc, MOE_F32, err);
}

static int fetch_part(void *arg, int array, const moe_tensor *t, int part, float *buf, moe_err *err) {
    (void)array;
    moe_trainer *tr = arg;
    tr->fetched++;
    return part_to_rank0(tr->ep, part, NULL, buf, t->size, err);
}

/* Every part rank 0 receives while it writes a checkpoint, in the order it
 * writes them: model.safetensors (the weights), then optimizer.safetensors
 * (both moments of each tensor); parts 1.. of each split tensor. A member
 * of rank 0's group sends its own; rank 0, after writing (or failing to),
 * receives what it has not fetched yet, so the group always finishes the
 * exchange together. weights, m, v: this rank's whole arrays. */
static int serve_parts(moe_trainer *tr, const float *weights, const float *m, const float *v, moe_err *err) {
    const moe_layout *L = &tr->model->layout;
    const float *file_arrays[2][2] = {{weights, NULL}, {m, v}};
    int n_arrays[2] = {1, 2}, me = tr->ep->rank, rc = 0;
    size_t seen = 0, biggest = 0;
    for (size_t i = 0; i < L->count; i++) biggest = L->tensors[i].split && L->tensors[i].size > biggest ? L->tensors[i].size : biggest;
    float *scratch = me == 0 && biggest ? moe_floats_alloc(biggest, err) : NULL;
    if (me == 0 && biggest && !scratch) return -1;
    for (int f = 0; f < 2; f++)
        for (size_t i = 0; i < L->count; i++) {
            const moe_tensor *t = &L->tensors[i];
            if (!t->split) continue;
            for (int k = 0; k < n_arrays[f]; k++)
                for (int p = 1; p < tr->ep->size; p++, seen++) {
                    if (me == 0 && seen < tr->fetched) continue;  /* fetched while writing */
                    int r = part_to_rank0(tr->ep, p, p == me ? file_arrays[f][k] + t->offset : NULL, scratch,
                                          t->size, err);
                    if (r && !rc) rc = -1;
                }
        }
    moe_floats_free(scratch);
    return rc;
}

/* Across ranks: rank 0 writes. The replicas of a part hold the same
 * weights; ZeRO-1's moment slices first come to the replicas' first rank
 * (the member of rank 0's expert-parallel group), one rank at a time (each
 * rank holds at most one slice extra; that rank the whole moments of its
 * part: the first in the gradients' buffer, zero between steps, the second
 * in 4 n bytes of its own). With expert parallel, rank 0 then receives the
 * other parts of every split tensor from their owners as it writes. */
static int save_distributed(moe_trainer *tr, moe_err *err) {
    moe_comm *c = tr->comm, *rep = tr->replicas;
    int zero = tr->cfg->zero_stage, rc = 0, first_replica = rep->rank == 0;
    float *full_m = tr->adam_m, *full_v = tr->adam_v, *scratch = NULL;
    if (zero) {
        size_t n = tr->model->n_params, biggest = 0;
        for (int r = 0; r < rep->size; r++)
            biggest = tr->shard_counts[r] > biggest ? tr->shard_counts[r] : biggest;
        if (first_replica) {  /* the gradients are zero between steps: m borrows them */
            full_m = tr->model->grads;
            full_v = moe_floats_alloc(n, err);
            rc = full_v ? 0 : -1;
        } else {
            scratch = moe_floats_alloc(biggest ? biggest : 16, err);
            rc = scratch ? 0 : -1;
        }
        rc = moe_comm_agree(c, rc, err);
        for (int r = 0; r < rep->size && !rc; r++)
            for (int k = 0; k < 2 && !rc; k++) {
                float *mine = k ? tr->adam_v : tr->adam_m, *full = k ? full_v : full_m;
                float *buf = rep->rank == r ? mine : first_replica ? full + tr->shard_firsts[r] : scratch;
                if (first_replica && r == 0) memcpy(full + tr->shard_firsts[0], mine, tr->shard_counts[0] * sizeof(float));
                rc = moe_comm_broadcast(rep, buf, tr->shard_counts[r], MOE_F32, r, err);
            }
    }
    int writers = c->rank < tr->ep->size;  /* rank 0's expert-parallel group */
    if (!rc) {  /* (agreed: either every rank goes on, or none) */
        moe_err e;
        tr->fetched = 0;
        if (c->rank == 0) rc = save_local(tr, full_m, full_v, err);
        /* after it, and even after a failure, rank 0 finishes the exchange */
        if (writers && tr->ep->size > 1 && serve_parts(tr, tr->model->params, full_m, full_v, &e) && !rc) {
            rc = -1;
            *err = e;
        }
    }
    if (zero && first_replica) {
        memset(tr->model->grads, 0, tr->model->n_params * sizeof(float));
        moe_floats_free(full_v);
    }
    moe_floats_free(scratch);
    return moe_comm_agree(c, rc, err);
}

int moe_trainer_save(moe_trainer *tr, moe_err *err) {
    if (!distributed(tr)) return save_local(tr, tr->adam_m, tr->adam_v, err);
    /* the checkpoint holds the experts in their own order */
    if (moe_placement_home(tr, 1, err)) return -1;
    int rc = save_distributed(tr, err);
    moe_err e;
    if (moe_placement_home(tr, 0, rc ? &e : err)) rc = -1;
    return rc;
}

int moe_checkpoint_lambda(const char *ckpt, float *lambda, moe_err *err) {
    char path[4096];
    if (moe_path(path, sizeof path, err, "%s/trainer_state.json", ckpt)) return -1;
    if (access(path, F_OK) != 0) return 1;
    if (moe_checksums_verify(ckpt, "trainer_state.json", err)) return -1;
    moe_json_value *j = moe_json_parse_file(path, err);
    if (!j) return -1;
    const moe_json_value *l = moe_json_get(j, "lambda");
    int rc = 0;
    if (!l || l->type != MOE_JSON_NUMBER || !(l->number >= 0))
        rc = moe_errf(err, "%s: expected a non-negative number \"lambda\"", path);
    else
        *lambda = (float)l->number;
    moe_json_free(j);
    return rc;
}

/* The data a checkpoint's state records (data_path, data_bytes, data_crc32):
 * 0 and the fields set, 1 when it records none (a checkpoint from before
 * they were written), -1 when they are malformed. */
static int state_data(const moe_json_value *j, const char *state, const char **path, uint64_t *bytes,
                      uint32_t *crc, moe_err *err) {
    const moe_json_value *p = moe_json_get(j, "data_path"), *b = moe_json_get(j, "data_bytes"),
                     *c = moe_json_get(j, "data_crc32");
    if (!p && !b && !c) return 1;
    char *end;
    unsigned long v = c && c->type == MOE_JSON_STRING ? strtoul(c->string, &end, 16) : 0;
    if (!p || p->type != MOE_JSON_STRING || !b || b->type != MOE_JSON_NUMBER || !(b->number >= 0) || !c ||
        c->type != MOE_JSON_STRING || strlen(c->string) != 8 || *end || v > 0xFFFFFFFFul)
        return moe_errf(err, "%s: expected a string \"data_path\", a number \"data_bytes\" and an "
                        "8-digit hex string \"data_crc32\"", state);
    *path = p->string;
    *bytes = (uint64_t)b->number;
    *crc = (uint32_t)v;
    return 0;
}

/* The token file being used is the one the run recorded: same size and CRC. */
static int check_data(const moe_json_value *j, const char *state, const moe_tokens *t, moe_err *err) {
    const char *path = NULL;
    uint64_t bytes = 0;
    uint32_t crc = 0;
    int r = state_data(j, state, &path, &bytes, &crc, err);
    if (r) return r < 0 ? -1 : 0;
    if (!t->path) return 0;  /* built in memory: nothing to compare */
    if (bytes != t->file_bytes || crc != t->file_crc)
        return moe_errf(err, "%s is not the data this run was trained on: the run recorded %s "
                        "(%llu bytes, CRC-32 %08x), this file has %llu bytes, CRC-32 %08x; it was "
                        "changed or replaced: resume with the same data, or start a new run with "
                        "--model", t->path, path, (unsigned long long)bytes, crc,
                        (unsigned long long)t->file_bytes, t->file_crc);
    return 0;
}

int moe_checkpoint_data(const char *ckpt, char *path_out, size_t cap, moe_err *err) {
    char path[4096];
    if (moe_path(path, sizeof path, err, "%s/trainer_state.json", ckpt)) return -1;
    if (access(path, F_OK) != 0) return 1;
    if (moe_checksums_verify(ckpt, "trainer_state.json", err)) return -1;
    moe_json_value *j = moe_json_parse_file(path, err);
    if (!j) return -1;
    const char *p = NULL;
    uint64_t bytes = 0;
    uint32_t crc = 0;
    int rc = state_data(j, path, &p, &bytes, &crc, err);
    if (rc == 0 && moe_path(path_out, cap, err, "%s", p)) rc = -1;
    moe_json_free(j);
    return rc;
}

int moe_trainer_restore(moe_trainer *tr, const char *ckpt, moe_err *err) {
    char path[4096];
    const moe_layout *L = &tr->model->layout;
    moe_st_file f;
    if (moe_path(path, sizeof path, err, "%s/optimizer.safetensors", ckpt) ||
        moe_checksums_verify(ckpt, "optimizer.safetensors", err) ||
        moe_checksums_verify(ckpt, "trainer_state.json", err) || moe_st_read(path, &f, err))
        return -1;
    int rc = 0;
    /* this rank's moments: its slice [lo, hi) (everything without ZeRO) of
     * the rows it holds of each tensor */
    size_t lo = tr->shard_first, hi = lo + tr->shard_count;
    for (size_t i = 0; i < L->count && !rc; i++) {
        const moe_tensor *t = &L->tensors[i];
        size_t a, b;
        if (!moe_span_clip(t->offset, t->size, lo, hi, &a, &b)) continue;
        size_t first = t->first + (a - t->offset);
        for (int k = 0; k < 2 && !rc; k++) {
            char name[MOE_NAME_MAX + 16];
            snprintf(name, sizeof name, "%s.%s", k ? "exp_avg_sq" : "exp_avg", t->name);
            rc = moe_st_load_f32_range(&f, name, t->shape, t->ndim, first, b - a, (k ? tr->adam_v : tr->adam_m) + (a - lo),
                                   err);
        }
    }
    moe_st_free(&f);
    if (rc) return -1;
    if (moe_path(path, sizeof path, err, "%s/trainer_state.json", ckpt)) return -1;
    moe_json_value *j = moe_json_parse_file(path, err);
    if (!j) return -1;
    const moe_json_value *step = moe_json_get(j, "step"), *pos = moe_json_get(j, "loader_position"),
                     *ntok = moe_json_get(j, "data_tokens"), *fmt = moe_json_get(j, "format"),
                     *lambda = moe_json_get(j, "lambda");
    if (!fmt || fmt->type != MOE_JSON_STRING || strcmp(fmt->string, "moe-trainer-state"))
        rc = moe_errf(err, "%s: expected \"format\": \"moe-trainer-state\"", path);
    else if (!step || step->type != MOE_JSON_NUMBER || step->number < 0 ||
             !pos || pos->type != MOE_JSON_NUMBER || pos->number < 0 ||
             !ntok || ntok->type != MOE_JSON_NUMBER || !lambda || lambda->type != MOE_JSON_NUMBER ||
             !(lambda->number >= 0))
        rc = moe_errf(err, "%s: expected non-negative numbers \"step\", \"loader_position\", "
                      "\"data_tokens\" and \"lambda\"", path);
    else if ((size_t)ntok->number != tr->data->n)
        rc = moe_errf(err, "%s: the run was trained on a token file of %.0f tokens, this one has "
                      "%zu: resume with the same --data", path, ntok->number, tr->data->n);
    else if (check_data(j, path, tr->data, err))
        rc = -1;
    else {
        tr->step = (long)step->number;
        tr->loader.position = (uint64_t)pos->number;
        tr->model->rs.lambda = (float)lambda->number;
    }
    moe_json_free(j);
    return rc;
}

int moe_trainer_rollback(moe_trainer *tr, long *step_out, moe_err *err) {
    char ckpt[4096];
    if (moe_resolve_checkpoint(tr->out_dir, ckpt, sizeof ckpt, err))
        return moe_err_prefix(err, "no checkpoint to return to");
    if (moe_model_load_weights(tr->model, ckpt, err) || moe_trainer_restore(tr, ckpt, err)) return -1;
    moe_model_discard_step(tr->model);
    moe_model_zero_grad(tr->model);
    moe_placement_reset(tr);  /* loaded in the checkpoint's order */
    *step_out = tr->step;
    return 0;
}
