/* sweep.h — a sweep (docs/SWEEP.md): a grid of configs x seeds trained and
 * evaluated one run after the other by this program's own `train` and
 * `eval`, resumably (a finished run is skipped, an interrupted one resumed),
 * several sweep processes sharing one grid through per-run locks; then the
 * mean ± std over seeds per run and the paired differences against a
 * baseline. The run folders' files are rundir.h's. */
#ifndef MOE_SWEEP_H
#define MOE_SWEEP_H

#include <signal.h>
#include <sys/types.h>

#include "moe/util/common.h"
#include "moe/util/json.h"
#include "moe/run/rundir.h"

#define MOE_SWEEP_MAX_RUNS 256
#define MOE_SWEEP_MAX_SEEDS 64
#define MOE_SWEEP_MAX_ARGS 64
#define MOE_SWEEP_MAX_EVAL 16

/* One entry of the grid's "runs". */
typedef struct moe_sweep_run {
    char name[128];
    char config[4096];
    const moe_json_value *set;   /* the run's own overrides (NULL: none) */
} moe_sweep_run;

typedef struct moe_sweep {
    moe_json_value *root;                 /* the grid file, parsed (the strings below point into it) */
    char path[4096], out[4096], data[4096];
    const char *eval_data[MOE_SWEEP_MAX_EVAL];
    size_t n_eval;
    const char *train_args[MOE_SWEEP_MAX_ARGS], *eval_args[MOE_SWEEP_MAX_ARGS];
    size_t n_train_args, n_eval_args;
    const moe_json_value *set;            /* the grid's overrides for every run (NULL: none) */
    long seeds[MOE_SWEEP_MAX_SEEDS];
    size_t n_seeds;
    moe_sweep_run runs[MOE_SWEEP_MAX_RUNS];
    size_t n_runs;
    const char *baseline;             /* a run's name (NULL: none) */
    /* while it runs: the caller's SIGINT / SIGTERM handler sets stop to the
     * signal's number and sends the signal on to child when it is > 0 */
    volatile sig_atomic_t stop;
    volatile pid_t child;             /* the `train`, `eval` or `report` running now (0: none) */
} moe_sweep;

/* Reads and checks the grid file (every message names path and the key). */
int moe_sweep_load(moe_sweep *s, const char *path, moe_err *err);
void moe_sweep_free(moe_sweep *s);

/* Before anything runs: refuses a run that has trained (done or
 * interrupted) with another config than the grid now gives it (its results
 * would be reported as the new grid's), then checks every run's config by
 * writing it (OUT/configs/NAME-seed-S.json of the first seed). */
int moe_sweep_check(const moe_sweep *s, moe_err *err);

/* Run (r, k) of the grid (runs[r], seeds[k]): its folder and state. */
int moe_sweep_dir(const moe_sweep *s, size_t r, size_t k, char *out, size_t cap, moe_err *err);

typedef enum {
    MOE_SWEEP_DONE_EARLIER,   /* it was done: skipped */
    MOE_SWEEP_BUSY,           /* another sweep process is running it: skipped */
    MOE_SWEEP_DONE_ELSEWHERE, /* another sweep finished it meanwhile */
    MOE_SWEEP_STOPPED,        /* a signal stopped it (its checkpoint kept) */
    MOE_SWEEP_FINISHED,       /* trained (or resumed), evaluated and marked done here */
} moe_sweep_result;

typedef struct moe_sweep_outcome {
    moe_sweep_result result;
    moe_run_state was;        /* its state before: MOE_RUN_NEW or MOE_RUN_INTERRUPTED */
    double seconds;           /* FINISHED: how long it took */
    moe_run_metrics metrics;  /* FINISHED: what RUN/sweep.json now holds */
} moe_sweep_outcome;

/* Runs (r, k) unless it is done or taken: creates its folder, locks it,
 * runs `train` (RUN/train.log; `train --resume` for an interrupted run) and
 * `eval` on eval_data (RUN/eval.log), collects its metrics and marks it
 * done. A train or eval that fails is an error naming the logs. */
int moe_sweep_run_one(moe_sweep *s, size_t r, size_t k, moe_sweep_outcome *o, moe_err *err);

/* OUT/summary.json (mean, std over seeds per run and metric; paired
 * differences against the baseline) and OUT/summary.md, from the finished
 * runs' RUN/sweep.json; *md (the caller frees it) gets summary.md's text. */
int moe_sweep_aggregate(const moe_sweep *s, moe_buf *md, moe_err *err);

/* OUT/report.html: `moe report` over the first finished seed of every run
 * (at most 64), which also shows the summary. Returns 0 when no run is
 * finished, 1 when written, 2 when `report` failed (see OUT/report.log),
 * -1 on an error of the sweep itself. */
int moe_sweep_report(moe_sweep *s, moe_err *err);

#endif
