/* rundir.h — a run folder's files: the one place that knows their names,
 * writes them and reads them back (formats in docs/EVAL.md, docs/FORMAT.md
 * and docs/SWEEP.md).
 *
 *   RUN/metrics.jsonl      one JSON line per training step (moe train);
 *                          holding it is what makes a folder a run
 *   RUN/calibration.jsonl  the calibration probe, one line per measurement
 *   RUN/eval.json          moe eval's results, merged by data file and task
 *   RUN/analysis.json      moe analyze's routing statistics
 *   RUN/report.html        moe report's page (by default)
 *   RUN/sweep.json         a sweep's mark that the run is done, with its
 *                          metrics; RUN/sweep.lock, the pid of the sweep
 *                          running it; RUN/train.log, RUN/eval.log
 *   OUT/NAME/seed-S        a sweep's run folders, OUT/configs/NAME-seed-S.json
 *                          their configs, OUT/summary.json and .md the
 *                          aggregate, OUT/report.html and report.log
 *
 * moe report's page is drawn from these files (moe_rundir_report reads
 * them, src/analysis/report_page.c draws). */
#ifndef MOE_RUNDIR_H
#define MOE_RUNDIR_H

#include <stdio.h>

#include "moe/analysis/analysis.h"
#include "moe/util/common.h"
#include "moe/model/config.h"
#include "moe/eval/eval.h"
#include "moe/util/json.h"
#include "moe/data/tokenizer.h"

/* ---- names -------------------------------------------------------------- */

typedef enum moe_run_file {
    MOE_RUN_METRICS,       /* metrics.jsonl */
    MOE_RUN_CALIBRATION,   /* calibration.jsonl */
    MOE_RUN_EVAL,          /* eval.json */
    MOE_RUN_ANALYSIS,      /* analysis.json */
    MOE_RUN_SWEEP_DONE,    /* sweep.json */
    MOE_RUN_SWEEP_LOCK,    /* sweep.lock */
    MOE_RUN_TRAIN_LOG,     /* train.log */
    MOE_RUN_EVAL_LOG,      /* eval.log */
    MOE_SWEEP_SUMMARY,     /* summary.json, in a sweep's OUT */
    MOE_SWEEP_SUMMARY_MD,  /* summary.md */
    MOE_RUN_REPORT,        /* report.html: moe report's page, in a run or a sweep's OUT */
    MOE_SWEEP_REPORT_LOG,  /* report.log */
    MOE_RUN_FILES
} moe_run_file;

/* The file's name ("metrics.jsonl"). */
const char *moe_rundir_name(moe_run_file f);
/* out = dir/NAME. 0 or -1 (err: too long). */
int moe_rundir_path(char *out, size_t cap, const char *dir, moe_run_file f, moe_err *err);
/* Whether dir/NAME exists. */
int moe_rundir_has(const char *dir, moe_run_file f);
/* A run folder (written by moe train) is one that holds metrics.jsonl. */
int moe_rundir_is_run(const char *dir);

/* ---- JSON-lines logs (metrics.jsonl, calibration.jsonl) ----------------- */

/* The lines of dir/NAME, each parsed: *lines [*n] (free with
 * moe_rundir_lines_free). A missing file gives 0 lines; a line that is not
 * JSON is an error naming the file and the line. */
int moe_rundir_read_lines(const char *dir, moe_run_file f, moe_json_value ***lines, size_t *n, moe_err *err);
void moe_rundir_lines_free(moe_json_value **lines, size_t n);
/* Appends line[len] (one JSON object and its newline) to dir/NAME. */
int moe_rundir_append_line(const char *dir, moe_run_file f, const char *line, size_t len, moe_err *err);
/* Keeps the lines of dir/NAME whose "step" is <= step (moe_jsonl_keep_steps):
 * a resumed run cuts its logs back to its checkpoint. */
int moe_rundir_keep_steps(const char *dir, moe_run_file f, long step, moe_err *err);

/* ---- eval.json ----------------------------------------------------------- */

/* One token file's results. */
typedef struct moe_eval_file {
    const char *name;                /* the file's base name without ".tok" */
    const char *path;
    const moe_loss_sums *base;
    const moe_loss_sums *drop;       /* with every token's top expert dropped (NULL: not measured) */
    char *const *domain_names;       /* [n_domains] (NULL: the file has no document table) */
    size_t n_domains;
} moe_eval_file;

/* One multiple-choice task's results. */
typedef struct moe_eval_task {
    const char *name, *path;
    const moe_mc_result *r;
} moe_eval_task;

typedef struct moe_eval_results {
    const char *model;               /* the --model directory */
    const char *checkpoint;          /* the checkpoint evaluated in it */
    const moe_config *cfg;           /* its config (ffn, router, n_experts, top_k) */
    size_t seq;                      /* window length */
    const moe_eval_file *data;       /* [n_data] */
    size_t n_data;
    const moe_eval_task *tasks;      /* [n_tasks] */
    size_t n_tasks;
} moe_eval_results;

/* The base name of path without ext ("data/valid.tok", ".tok": "valid"). */
void moe_rundir_base_name(char *out, size_t cap, const char *path, const char *ext);

/* The earlier results at path that an evaluation of checkpoint ckpt with
 * windows of seq keeps beside its own: those of the same checkpoint and seq
 * (NULL: none). When there were results it does not keep, note (cap bytes)
 * says which and why, as a line for the user; else note is "". */
moe_json_value *moe_eval_earlier(const char *path, const char *ckpt, size_t seq, char *note, size_t cap);
/* eval.json's text: r's results, then the entries of earlier (may be NULL)
 * under "data" and "tasks" whose names r does not have. */
int moe_eval_json(const moe_eval_results *r, const moe_json_value *earlier, moe_buf *out, moe_err *err);
/* Writes r to path (atomically), merged with the earlier results there
 * when merge is set (moe_eval_earlier; note as there). */
int moe_eval_write(const char *path, const moe_eval_results *r, int merge, char *note, size_t cap,
                   moe_err *err);

/* ---- analysis.json ------------------------------------------------------- */

typedef struct moe_analysis_info {
    const char *model, *checkpoint, *data;  /* the --model directory, its checkpoint, the token file */
    const moe_config *cfg;           /* the model's (ffn, router, n_experts, top_k) */
    size_t top, min_count;           /* tokens listed per expert; only ids seen this often */
    const moe_tokenizer *tok;        /* decodes them (NULL: ids) */
    char *const *domain_names;       /* the token file's (NULL: none) */
} moe_analysis_info;

/* analysis.json's text, of st over the data a describes. */
int moe_analysis_json(const moe_analysis_info *a, const moe_route_stats *st, moe_buf *out, moe_err *err);
/* ... written to path (atomically). */
int moe_analysis_write(const char *path, const moe_analysis_info *a, const moe_route_stats *st,
                       moe_err *err);

/* ---- reading back -------------------------------------------------------- */

/* dir/NAME parsed (eval.json, analysis.json, summary.json): 0 with *out set,
 * or with *out NULL when the file is absent or unreadable; -1 (err) when
 * it is not JSON. */
int moe_rundir_read_json(const char *dir, moe_run_file f, moe_json_value **out, moe_err *err);

/* moe report's page (moe_report_html) of the runs dirs[n] (1 to 64): each
 * run's metrics.jsonl (required), calibration.jsonl, eval.json and
 * analysis.json, and the summary of the sweep the first run belongs to when
 * there is one (moe_sweep_summary_of). */
int moe_rundir_report(const char *const *dirs, size_t n, moe_buf *out, moe_err *err);

/* ---- a sweep's state of one run ----------------------------------------- */

#define MOE_RUN_MAX_METRICS 64

/* A finished run's results as flat metrics: "train_loss", "sparsity",
 * "seconds", a MoE run's "imbalance", "imbalance_worst",
 * "active_min_layer", "no_expert_max_layer" and "flip_rate", and per
 * eval.json entry "NAME.loss", "NAME.ppl", "NAME.ppl_drop_top",
 * "TASK.acc", "TASK.acc_norm" (docs/SWEEP.md). */
typedef struct moe_run_metrics {
    struct { char key[96]; double value; } m[MOE_RUN_MAX_METRICS];
    size_t n;
} moe_run_metrics;

/* The value of key (NAN when absent). */
double moe_run_metric(const moe_run_metrics *ms, const char *key);
/* The headline of a run: the first "*.loss" (an eval file's loss), else
 * train_loss; *key set to its name. NAN when neither is there. */
double moe_run_headline(const moe_run_metrics *ms, const char **key);
/* From dir/metrics.jsonl the mean lm_loss and sparsity over the last tenth
 * of the steps (at least one), from dir/eval.json (when present) its
 * losses, perplexities and accuracies; "seconds" = seconds;
 * "train_seconds" = every step's seconds in metrics.jsonl, summed. */
int moe_run_collect(const char *dir, double seconds, moe_run_metrics *ms, moe_err *err);

typedef enum { MOE_RUN_NEW, MOE_RUN_INTERRUPTED, MOE_RUN_DONE } moe_run_state;

/* DONE when dir/sweep.json exists, INTERRUPTED when dir holds a checkpoint,
 * else NEW. */
moe_run_state moe_run_state_of(const char *dir);
/* dir/sweep.json: the run `name` of seed `seed` is done, with ms. */
int moe_run_mark_done(const char *dir, const char *name, long seed, const moe_run_metrics *ms, moe_err *err);
/* Reads dir/sweep.json's metrics back: 1 if present and read, 0 if absent
 * (ms empty), -1 on error. */
int moe_run_read_done(const char *dir, moe_run_metrics *ms, moe_err *err);

/* dir/sweep.lock holds the pid of the sweep running dir, so that several
 * sweep processes share one grid (each takes the runs nobody holds).
 * Returns 1 if taken, 0 if a live process holds it, -1 on error. A lock
 * whose process is gone is taken over. */
int moe_run_lock(const char *dir, moe_err *err);
void moe_run_unlock(const char *dir);

/* A sweep's folders: OUT/NAME/seed-S, OUT/configs/NAME-seed-S.json. */
int moe_sweep_run_dir(char *out, size_t cap, const char *sweep_out, const char *name, long seed, moe_err *err);
int moe_sweep_config_path(char *out, size_t cap, const char *sweep_out, const char *name, long seed,
                          moe_err *err);
/* The summary.json of the sweep that run folder dir belongs to
 * (dir/../../summary.json: dir is OUT/NAME/seed-S). */
int moe_sweep_summary_of(char *out, size_t cap, const char *dir, moe_err *err);

#endif
