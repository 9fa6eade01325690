/* train.h — the optimiser (AdamW, METHOD §1), the learning-rate schedule, and
 * the trainer: one optimiser step over grad_accum micro-batches, its metrics
 * line, and checkpoints that hold everything needed to resume exactly. */
#ifndef MOE_TRAIN_H
#define MOE_TRAIN_H

#include "moe/util/common.h"
#include "moe/model/config.h"
#include "moe/data/data.h"
#include "moe/model/model.h"

/* Learning rate of optimiser step `step` (0-based): linear warm-up over
 * cfg->warmup steps to cfg->lr, then cosine decay to lr * min_lr_ratio at
 * cfg->steps. */
double moe_lr_at(const moe_config *cfg, long step);

/* sqrt(sum g^2) over n floats, accumulated in double in a fixed order
 * (independent of the thread count). part: moe_grad_norm_parts(n) doubles
 * of scratch, allocated once by the caller. */
size_t moe_grad_norm_parts(size_t n);
double moe_grad_norm(const float *g, size_t n, double *part);

/* One AdamW update (PyTorch semantics: decoupled decay lr*wd*p on tensors
 * with decay set; bias-corrected moments) with the gradients multiplied by
 * grad_scale (the clipping factor) and left zeroed for the next step. t is
 * the 1-based step count. Returns how many elements the update left
 * non-finite (a parameter or either of its moments), counted in the same
 * pass. */
size_t moe_adamw_update(const moe_layout *L, float *params, float *grads, float grad_scale,
                        float *m, float *v, double lr, long t, const moe_config *cfg);
/* The same update restricted to parameters [lo, hi) (lo a multiple of 16):
 * m and v hold only that slice (m[0] is parameter lo's moment), as a rank
 * of a ZeRO-1 run keeps them. Each element gets the same bits as from
 * moe_adamw_update; the count is of this slice. */
size_t moe_adamw_update_range(const moe_layout *L, float *params, float *grads, float grad_scale,
                              float *m, float *v, double lr, long t, const moe_config *cfg,
                              size_t lo, size_t hi);

/* What one optimiser step measured. */
typedef struct moe_step_stats {
    long step;            /* 1-based number of the step just taken */
    double loss;          /* lm_loss + aux_loss, mean over micro-batches */
    double lm_loss;       /* mean next-token cross-entropy */
    double aux_loss;      /* summed auxiliary losses of the FFN slots */
    double lr;
    double grad_norm;     /* before clipping */
    double sparsity;      /* MoE: 1 - active pairs / (L T E) over the step (METHOD §2.2) */
    float lambda;         /* ReMoE: the L1 coefficient this step used */
    size_t tokens;        /* tokens in this step */
    double seconds;       /* wall time of this step */
    int skipped;          /* the loss or gradient norm was not finite: no update */
    size_t poisoned;      /* elements the update left non-finite (parameters or AdamW
                           * moments): the model must return to a checkpoint */
    const char *poisoned_tensor;  /* the first tensor holding one (NULL if none) */
    double ep_balance;    /* expert parallel: the step's rows per rank under the
                           * placement it ran on, over the layers: the ranks'
                           * mean over the busiest rank's (1 = even; 0 without EP) */
    int experts_moved;    /* expert parallel: experts that changed rank after it */
} moe_step_stats;

struct moe_comm;

/* Parameters [first, first + count) of one kind: whole tensors (every rank
 * holds them) or split ones (expert parallel: divided among the group). */
typedef struct moe_param_run {
    size_t first, count;
    int split;
} moe_param_run;

typedef struct moe_trainer {
    const moe_config *cfg;    /* the model's (&model->cfg): its one config, training keys included */
    moe_model *model;
    float *adam_m, *adam_v;   /* [n_params] first and second moments; with
                               * ZeRO-1 [shard_count]: parameters
                               * [shard_first, shard_first + shard_count) */
    double *norm_parts;       /* [moe_grad_norm_parts(n_params)] scratch of the norm */
    long step;                /* optimiser steps completed */
    moe_loader loader;
    const moe_tokens *data;
    int *inputs, *targets;    /* [B*T] current micro-batch */
    char out_dir[4096];
    moe_buf tokenizer;        /* tokenizer file copied into every checkpoint (may be empty) */
    moe_profile prof;         /* --profile: where the steps' time went */
    int lock_fd;              /* out_dir/.lock, held while the trainer lives (-1: none) */
    /* across processes (moe_trainer_distribute; NULL: one process) */
    struct moe_comm *comm;    /* every rank of the run (borrowed) */
    struct moe_comm *ep;      /* this rank's expert-parallel group (owned) */
    struct moe_comm *replicas;/* the ranks holding the same experts as this one:
                               * the data-parallel copies of its parameters (owned) */
    moe_param_run *runs;      /* [n_runs] the parameters as runs of whole and of
                               * split tensors (summed over different groups) */
    size_t n_runs;
    size_t *shard_counts, *shard_firsts;  /* [replicas->size] ZeRO-1 slices */
    size_t shard_first, shard_count;      /* this rank's (all parameters without ZeRO) */
    size_t fetched;           /* checkpoint parts received by rank 0 in this save */
    /* expert parallel's placement of the experts (src/train/placement.c) */
    struct moe_placement **places;  /* [n_places] every MoE (sub-)layer's */
    size_t n_places, n_routed;      /* and their routed experts in all */
    double *load;             /* [n_routed] rows per expert, all ranks, since the
                               * placement was last chosen */
    double *step_rows;        /* [n_routed] scratch: one step's */
    int *kept;                /* [n_routed] the placement being moved to, or
                               * the one kept over a checkpoint save */
    int placed;               /* a placement was chosen since the start (or rollback) */
} moe_trainer;

/* Seconds spent in collectives and bytes sent by this rank so far, over
 * all of the trainer's groups (0 for one process). */
void moe_trainer_comm_usage(const moe_trainer *tr, double *seconds, double *bytes);

/* Takes ownership of model, whose config holds the training keys too
 * (steps, batch, ...). Creates out_dir. */
int moe_trainer_create(moe_trainer *tr, moe_model *model, const moe_tokens *data, const char *out_dir,
                       moe_err *err);
/* The process that writes the run's checkpoints (the only one, or rank 0
 * across processes) claims out_dir: locks it (moe_dir_lock), so that a
 * second writer is refused while this trainer lives, and removes what a
 * killed writer left half-written. */
int moe_trainer_claim(moe_trainer *tr, moe_err *err);
/* Spreads the run over the ranks of comm (docs/DISTRIBUTED.md): each rank
 * takes batch_size / size rows of every global batch, gradients are summed
 * over the ranks, expert_parallel ranks share each MoE layer's experts, and
 * with zero_stage 1 the AdamW moments are sharded. Call right after create
 * (before restore); a no-op for one rank. Every rank must call it. */
int moe_trainer_distribute(moe_trainer *tr, struct moe_comm *comm, moe_err *err);
/* Restores optimiser moments, step and data position from a checkpoint
 * directory written by moe_trainer_save (the model is loaded separately). */
int moe_trainer_restore(moe_trainer *tr, const char *ckpt_dir, moe_err *err);
/* The ReLU router's lambda saved in ckpt_dir/trainer_state.json (checksum
 * verified): 0 with *lambda set, 1 when the directory has no trainer state
 * (a model from moe init), -1 on a damaged file. */
int moe_checkpoint_lambda(const char *ckpt_dir, float *lambda, moe_err *err);
/* The token file a checkpoint's run was trained on (trainer_state.json's
 * data_path, absolute): 0 with path set, 1 when the checkpoint does not
 * record it (no trainer state, or one from an older moe), -1 on error.
 * moe_trainer_restore checks that the data it is given has the recorded size
 * and CRC-32. */
int moe_checkpoint_data(const char *ckpt_dir, char *path, size_t cap, moe_err *err);
/* One optimiser step. A non-finite loss or gradient norm skips the update
 * (the data and the schedule still advance) and sets st->skipped. */
int moe_trainer_step(moe_trainer *tr, moe_step_stats *st, moe_err *err);
/* Returns to the newest checkpoint of out_dir: weights, optimiser, step, data
 * position and lambda; *step_out is its step. */
int moe_trainer_rollback(moe_trainer *tr, long *step_out, moe_err *err);
/* The step's line of metrics.jsonl (docs/FORMAT.md), formatted into a new
 * *line and left open: the caller may append `, "key": value` members
 * measured after the step (a validation pass), then closes it with "}\n".
 * The trainer writes no run file but its checkpoints: the session appends
 * the line (src/run/rundir.c owns metrics.jsonl). */
void moe_trainer_metrics_line(const moe_trainer *tr, const moe_step_stats *st, moe_buf *line);
/* Writes out_dir/checkpoints/step-NNNNNNNN (model, optimiser, state)
 * through a temporary directory renamed into place, then keeps only the
 * newest cfg.keep_checkpoints. Across processes every rank calls it: the
 * sharded moments are gathered and rank 0 writes (one checkpoint, today's
 * format); every rank returns its result. */
int moe_trainer_save(moe_trainer *tr, moe_err *err);
void moe_trainer_free(moe_trainer *tr);

/* ---- expert parallel's placement (src/train/placement.c) ---------------
 * Every MoE layer waits in its all-to-all for the rank with the most rows,
 * so the trainer gives each rank experts of nearly equal load: after the
 * first step of a run and every rebalance_experts steps, from the rows
 * counted since the last choice. */

/* Collects the layers' placements (moe_trainer_distribute, EP > 1). */
int moe_placement_init(moe_trainer *tr, moe_err *err);
/* After a step: sums its rows over the ranks, sets st->ep_balance, and when
 * due chooses a placement and moves the experts that change rank (their
 * weights and AdamW moments; st->experts_moved). Every rank calls it. */
int moe_placement_update(moe_trainer *tr, moe_step_stats *st, moe_err *err);
/* home = 1: moves every expert to the checkpoint's order (before a save);
 * home = 0: back to the placement it had. Every rank calls it. */
int moe_placement_home(moe_trainer *tr, int home, moe_err *err);
/* After the weights and moments were loaded again (in the checkpoint's
 * order): the identity placement, nothing counted. */
void moe_placement_reset(moe_trainer *tr);
void moe_placement_free(moe_trainer *tr);
/* The choice, for E experts on P ranks (E/P slots each) under load[E]:
 * within each slot index ("column") the P experts there trade ranks,
 * columns of the widest spread first, each's heaviest expert to the rank
 * with the least load so far; then the ranks are renamed so that as many
 * experts as possible stay. at[E] is the current placement (position ->
 * expert), out[E] the new one. Returns the busiest rank's load under out. */
double moe_placement_choose(size_t E, size_t P, const double *load, const int *at, int *out);

#endif
