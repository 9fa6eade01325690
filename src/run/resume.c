/* resume.c — what continuing a run needs beyond the trainer's restore:
 * where `--resume DIR` goes on, and what settings that differ from the
 * run's do: each difference is named with what it does, and one that would
 * point the data position at other tokens (a changed seq_len, seed or
 * shuffle) is refused. */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moe/util/common.h"
#include "moe/model/config.h"
#include "moe/model/model.h"
#include "moe/run/session.h"
#include "moe/train/train.h"

int moe_resume_target(const char *dir, char *owner, size_t cap, moe_err *err) {
    char run[4096], newest[4096], a[PATH_MAX], b[PATH_MAX];
    owner[0] = '\0';
    if (!moe_checkpoint_run(dir, run, sizeof run)) return 0;
    if (moe_resolve_checkpoint(run, newest, sizeof newest, err)) return -1;
    if (realpath(dir, a) && realpath(newest, b) && strcmp(a, b))
        return moe_errf(err, "%s is an older checkpoint of the run %s (its newest is %s); going on "
                        "in that run from here would discard the later ones: continue the run with "
                        "--resume %s, or start a new run from this checkpoint with --resume %s "
                        "--out NEWDIR", dir, run, newest, run, dir);
    return moe_path(owner, cap, err, "%s", run);
}

/* One line "resuming with ..." through say (when there is one). */
static void say_line(moe_session_say_fn say, void *ctx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void say_line(moe_session_say_fn say, void *ctx, const char *fmt, ...) {
    if (!say) return;
    char line[1024];
    int n = snprintf(line, sizeof line, "resuming with ");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    say(ctx, line);
}

int moe_resume_changes(const moe_config *was, const moe_config *now, long step,
                       unsigned long long position, moe_session_say_fn say, void *ctx, moe_err *err) {
    static const char *restart = "to train on from these weights with new settings, start a new run: "
                                 "--model RUN --out NEWDIR";
    if (now->seq_len != was->seq_len)
        return moe_errf(err, "--seq %d, but the run has seq_len %d: its data position counts rows of %d "
                        "tokens, so the run would read some tokens again and skip others; %s",
                        now->seq_len, was->seq_len, was->seq_len, restart);
    if (now->seed != was->seed)
        return moe_errf(err, "--seed %d, but the run has seed %d: the seed orders the rows, so the run would "
                        "read some rows again and skip others; %s", now->seed, was->seed, restart);
    if (now->shuffle != was->shuffle)
        return moe_errf(err, "%s, but the run %s its rows: the data position would point at other rows; %s",
                        now->shuffle ? "shuffle" : "--no-shuffle", was->shuffle ? "shuffles" : "reads in order",
                        restart);
    if (now->steps != was->steps || now->lr != was->lr || now->warmup != was->warmup ||
        now->min_lr_ratio != was->min_lr_ratio) {
        char old_lr[64];
        if (step < was->steps) snprintf(old_lr, sizeof old_lr, "%.3e", moe_lr_at(was, step));
        else snprintf(old_lr, sizeof old_lr, "it had ended at step %d with lr %.3e", was->steps,
                      moe_lr_at(was, was->steps - 1));
        say_line(say, ctx, "steps %d, lr %g, warmup %d (the run: %d, %g, %d): the learning-rate schedule is "
                 "recomputed over the new settings; the lr of step %ld is %.3e (the run's schedule: %s)",
                 now->steps, now->lr, now->warmup, was->steps, was->lr, was->warmup, step + 1,
                 moe_lr_at(now, step), old_lr);
    }
    if (now->batch_size != was->batch_size || now->grad_accum != was->grad_accum)
        say_line(say, ctx, "batch_size %d x grad_accum %d (the run: %d x %d): each step now reads %d rows; the "
                 "data goes on from row %llu of the run's order (none read twice, none skipped), but the steps "
                 "are no longer those of the original run", now->batch_size, now->grad_accum, was->batch_size,
                 was->grad_accum, now->batch_size * now->grad_accum, position);
    if (now->threads != was->threads)
        say_line(say, ctx, "threads %d (the run: %d; 0: all cores): sums are taken in another order, so the "
                 "weights will not be bit-identical to an uninterrupted run's", now->threads, was->threads);
    if (strcmp(now->precision, was->precision))
        say_line(say, ctx, "precision %s (the run: %s): the matrix products change from here", now->precision,
                 was->precision);
    if (now->checkpoint_every != was->checkpoint_every || now->keep_checkpoints != was->keep_checkpoints)
        say_line(say, ctx, "checkpoint_every %d, keep_checkpoints %d (the run: %d, %d): checkpoints only",
                 now->checkpoint_every, now->keep_checkpoints, was->checkpoint_every, was->keep_checkpoints);
    if (now->expert_parallel != was->expert_parallel || now->zero_stage != was->zero_stage ||
        now->rebalance_experts != was->rebalance_experts)
        say_line(say, ctx, "expert_parallel %d, zero_stage %d, rebalance_experts %d (the run: %d, %d, %d): how "
                 "the work is divided among the ranks; the results agree with the run's within rounding",
                 now->expert_parallel, now->zero_stage, now->rebalance_experts, was->expert_parallel,
                 was->zero_stage, was->rebalance_experts);
    return 0;
}
