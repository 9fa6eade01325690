/* session.h — a training run as the library sees it (src/run/session.c):
 * open it (the config with the caller's overrides, the memory check, a new
 * model, one from weights or a resumed run, its tokenizer, the ranks'
 * agreement), step it (the divergence guards, the calibration probe, the
 * validation pass, periodic checkpoints, a requested stop) and close it
 * (the last checkpoint). The console is the caller's: what a session has to
 * tell its user comes back as lines through opts.say.
 *
 *   moe_session s;
 *   if (moe_session_open(&s, &opts, &err)) { report err; moe_session_free(&s); }
 *   while (!moe_session_finished(&s)) {
 *       moe_session_event ev;
 *       if (moe_session_step(&s, &ev, &err)) ...;   (ev.trained: show ev.st)
 *   }
 *   moe_session_close(&s, &err);                    (the last checkpoint)
 *   moe_session_free(&s);
 */
#ifndef MOE_SESSION_H
#define MOE_SESSION_H

#include <signal.h>

#include "moe/analysis/analysis.h"
#include "moe/comm/comm.h"
#include "moe/model/config.h"
#include "moe/data/data.h"
#include "moe/train/train.h"

/* A numeric config key set by an option (--steps 100: flag "steps", key
 * "steps", value 100); flag names it in a refusal. */
typedef struct moe_session_override {
    const char *flag, *key;
    double value;
} moe_session_override;

/* One line for the user (no "moe train: " prefix, no newline). */
typedef void (*moe_session_say_fn)(void *ctx, const char *line);

typedef struct moe_session_opts {
    /* exactly one: a new model from a config file, the weights of a model
     * or run folder (a fresh optimiser), or a run to continue */
    const char *config, *model_dir, *resume;
    const char *data;       /* token file; NULL with resume: the one the run recorded */
    const char *out;        /* run folder; NULL with resume: the resumed run */
    const char *tokenizer;  /* copied into every checkpoint; NULL: the checkpoint's, else the data's */
    const moe_session_override *overrides;  /* [n_overrides], applied in order */
    size_t n_overrides;
    int no_shuffle;         /* read rows in order */
    const char *precision;  /* "auto", "fp32" or "bf16"; NULL: the config's */
    long analysis_every;    /* calibration probe every N steps (0: off, docs/EVAL.md) */
    long analysis_tokens;   /* its first N tokens */
    const char *analysis_data;  /* its token file (NULL: data) */
    long eval_every;        /* validation loss every N steps and at the last (0: off) */
    long eval_tokens;       /* about N tokens of eval_data (0: all) */
    const char *eval_data;  /* held-out tokens */
    int profile;            /* time the steps' parts (tr.prof), the first step not counted */
    moe_comm *world;        /* every rank of the run (borrowed; one process: moe_comm_single's) */
    /* A stop requested by the caller (a signal number, 0: none), read after
     * each step; across ranks one seen by any rank is set to SIGTERM on the
     * others, so that every rank stops after the same step. May be NULL. */
    volatile sig_atomic_t *stop;
    moe_session_say_fn say; /* may be NULL: silent */
    void *say_ctx;
} moe_session_opts;

/* What one moe_session_step did. */
typedef struct moe_session_event {
    moe_step_stats st;      /* the trainer's step */
    int trained;            /* the update was applied (not skipped, not rolled back) */
    double calib_loss;      /* the probe's latest loss (NAN: no probe) */
} moe_session_event;

typedef struct moe_session {
    moe_session_opts opts;  /* as given (strings borrowed) */
    moe_trainer tr;         /* owns the model from moe_session_open on (tr.model) */
    moe_model *model;       /* the model being trained; its cfg is the run's one config */
    int have_trainer, rank0, many;
    int parts;              /* ranks sharing each MoE layer's experts (1: all on each) */
    size_t total_params;    /* of the whole model; model->n_params is this rank's part */
    const char *precision_why;  /* why the model runs the precision it does */
    moe_config run_cfg;     /* with resume: the run's config before the options */
    const char *out;        /* the run folder (opts.out, or where opts.resume goes on) */
    char owner[4096];       /* opts.resume alone: the run of a checkpoint folder ("": itself) */
    char ckpt[4096];        /* the checkpoint started from ("" for a new model) */
    const char *data;       /* the token file read: opts.data or run_data */
    char run_data[4096];    /* opts.resume alone: the token file the run recorded */
    moe_tokens tokens, calib_tokens, eval_tokens;
    moe_probe probe;
    long first_step;        /* the step the session opened at */
    /* the divergence guards */
    int bad_in_row;         /* non-finite steps in a row */
    long rolled_back_to;    /* the checkpoint step last returned to (-1: none) */
    /* what the steps took (applied steps only) */
    double seconds;
    size_t tokens_seen;
    double profiled_seconds;
    long profiled_steps;
    double last_save;       /* omp_get_wtime() of the last checkpoint (checkpoint_minutes) */
    double comm0[2];        /* collectives' [seconds, bytes] when stepping began */
    int stopping;           /* a stop was requested: moe_session_finished */
    int quiet;              /* after a failed open: another rank reports the error */
} moe_session;

/* moe_session_open's failures: MOE_SESSION_FAILED (err set; s->quiet on the
 * ranks that leave the report to rank 0: across ranks a setup failure is
 * agreed on, so every rank returns it and rank 0 reports it once), or
 * MOE_SESSION_USAGE: an override's value was refused (err names its flag). */
enum { MOE_SESSION_FAILED = -1, MOE_SESSION_USAGE = -2 };

/* Opens the run of opts (docs/CLI.md `moe train`): reads the config (or the
 * checkpoint's) and applies the overrides, no_shuffle and precision before
 * it is finalized (the model's one config, never written afterwards),
 * refuses a run that cannot fit in memory, creates or loads the model,
 * reads the data, spreads the run over the ranks, restores a resumed run
 * (refusing options that would point its data position at other tokens),
 * finds the tokenizer and starts the probe. Every rank calls it. After any
 * return, moe_session_free. */
int moe_session_open(moe_session *s, const moe_session_opts *opts, moe_err *err);

/* 1 when stepping is over: the config's steps reached, or a stop requested. */
int moe_session_finished(const moe_session *s);

/* One optimiser step with what goes with it: its metrics.jsonl line (with
 * the validation loss when due), the ranks' agreement on a requested stop
 * and on a checkpoint_minutes checkpoint, the guards (a non-finite loss or
 * gradient skips the update, max_bad_steps of them in a row return to the
 * last checkpoint; an update that poisons the weights returns at once;
 * either returning again to the same checkpoint is an error: training
 * diverged), the probe, and a checkpoint every checkpoint_every steps.
 * Every rank calls it. */
int moe_session_step(moe_session *s, moe_session_event *ev, moe_err *err);

/* Writes the last checkpoint. Every rank calls it. */
int moe_session_close(moe_session *s, moe_err *err);

/* Frees everything the session holds (the model included), once; s may be
 * from a failed open. */
void moe_session_free(moe_session *s);

/* With opts.resume, after open: says (opts.say) each setting that differs
 * from the run's and what that does. */
void moe_session_say_changes(const moe_session *s);

/* Across ranks, after stepping: every rank's [seconds in collectives,
 * seconds stepping, bytes sent, peak resident bytes] since the first step,
 * into out[4 * world size] on every rank. Collective. */
int moe_session_rank_usage(const moe_session *s, double *out, moe_err *err);

/* ---- resuming (src/run/resume.c) ---------------------------------------- */

/* Where `--resume DIR` (without --out) continues: DIR itself (owner ""),
 * unless DIR is a checkpoint folder RUN/checkpoints/step-N, which continues
 * in RUN (never a run nested inside the checkpoint) when it is RUN's newest,
 * and is refused otherwise, since going on in RUN from an older step would
 * discard the later ones. */
int moe_resume_target(const char *dir, char *owner, size_t cap, moe_err *err);

/* A resumed run's settings against the run's own: was, the run's config;
 * now, with the options applied; step and position, where the checkpoint
 * stands. A difference that breaks the data position (seq_len, seed,
 * shuffle) is refused: -1 (err). Else, when say is not NULL, each other
 * difference is named with what it does, one line each. */
int moe_resume_changes(const moe_config *was, const moe_config *now, long step,
                       unsigned long long position, moe_session_say_fn say, void *ctx, moe_err *err);

#endif
