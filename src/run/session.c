/* session.c — a training run as the library sees it: opening it (the one
 * config with the caller's overrides, the memory check, a new model, one
 * from weights or a resumed run, the data, the ranks' agreement, the
 * tokenizer, the calibration probe), stepping it (the divergence guards,
 * validation, checkpoints, a requested stop) and closing it. The console is
 * the caller's (src/cli/train.c): lines for the user go out through
 * opts.say. Across ranks (docs/DISTRIBUTED.md) every rank runs the same
 * calls; setup failures are agreed on so that rank 0 reports one. */
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "moe/eval/eval.h"
#include "moe/run/rundir.h"
#include "moe/run/session.h"
#include "moe/data/tokenizer.h"

/* One line for the user through opts.say. */
static void say(const moe_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const moe_session *s, const char *fmt, ...) {
    if (!s->opts.say) return;
    char line[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    s->opts.say(s->opts.say_ctx, line);
}

/* The caller's stop request (a signal number; 0: none). */
static int stop_asked(const moe_session *s) { return s->opts.stop ? (int)*s->opts.stop : 0; }

/* ---- the run folder (its files' names: src/run/rundir.c) ---------------- */

/* metrics.jsonl keeps the lines of steps <= the trainer's step: a fresh
 * run (step 0) empties it, and after a resume or a rollback the steps that
 * follow are written again. Rank 0 writes the run's files. */
static int cut_metrics(const moe_session *s, moe_err *err) {
    return s->rank0 ? moe_rundir_keep_steps(s->tr.out_dir, MOE_RUN_METRICS, s->tr.step, err) : 0;
}

/* After a return to a checkpoint the run's step logs go back with it:
 * metrics.jsonl and calibration.jsonl keep the steps up to the checkpoint's,
 * and the probe takes that step's routing, so that its next flip rate is
 * measured from there (as after a resume). */
static int rewind_logs(moe_session *s, moe_err *err) {
    if (cut_metrics(s, err)) return -1;
    if (!s->opts.analysis_every) return 0;
    if (s->rank0 && moe_rundir_keep_steps(s->tr.out_dir, MOE_RUN_CALIBRATION, s->tr.step, err)) return -1;
    return moe_probe_prime(&s->probe, s->model, err);
}

/* A fresh run never mixes with an earlier one in the same folder: refused
 * when out_dir holds a run or a model; else its metrics.jsonl is emptied. */
static int fresh_run_folder(const moe_session *s, moe_err *err) {
    const moe_trainer *tr = &s->tr;
    char existing[4096];
    moe_err ignored;
    if (!moe_resolve_checkpoint(tr->out_dir, existing, sizeof existing, &ignored)) {
        char ckdir[4200];
        snprintf(ckdir, sizeof ckdir, "%s/checkpoints", tr->out_dir);
        if (access(ckdir, F_OK))  /* a model (init, import), not a run: --resume cannot go on from it */
            return moe_errf(err, "%s holds a model, not a training run: train from it with --model %s "
                            "--out NEWDIR, or choose another --out", tr->out_dir, tr->out_dir);
        return moe_errf(err, "%s already holds a run (%s): continue it with --resume %s, or "
                        "choose another --out", tr->out_dir, existing, tr->out_dir);
    }
    return cut_metrics(s, err);
}

/* ---- opening: the config and the model ----------------------------------- */

/* MemAvailable from /proc/meminfo, in bytes, or the address-space limit
 * (ulimit -v) when that is lower (0 if neither is known). */
static size_t memory_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    size_t kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %zu kB", &kb) == 1) break;
    if (f) fclose(f);
    size_t have = kb * 1024;
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && (!have || rl.rlim_cur < have))
        have = (size_t)rl.rlim_cur;
    return have;
}

/* Refuses, before the large allocations, a run that cannot fit in memory. */
static int check_memory(const moe_config *c, size_t n_params, moe_err *err) {
    size_t need = moe_model_memory_estimate(c, n_params, (size_t)c->batch_size, (size_t)c->seq_len);
    size_t have = memory_available();
    if (have && need > have)
        return moe_errf(err, "this run needs up to %.2f GiB (%zu parameters with gradients and AdamW "
                        "moments, activations of a %d x %d batch) but %.2f GiB are available: lower "
                        "batch_size or seq_len (or use grad_accum)", need / 1073741824.0, n_params,
                        c->batch_size, c->seq_len, have / 1073741824.0);
    return 0;
}

/* The run's one config: the config file's or the checkpoint's, with the
 * overrides, no_shuffle and precision applied before it is finalized.
 * "auto" precision is resolved here, once: the model and its checkpoints
 * record what it chose, so that a resume, eval or score runs the same
 * products. A refused override is MOE_SESSION_USAGE. */
static int open_config(moe_session *s, moe_config *cfg, moe_err *err) {
    const moe_session_opts *o = &s->opts;
    if (o->config) {
        if (moe_config_load(o->config, cfg, err)) return -1;
    } else if (moe_resolve_checkpoint(o->resume ? o->resume : o->model_dir, s->ckpt, sizeof s->ckpt, err) ||
               moe_checkpoint_config(s->ckpt, cfg, err)) {
        return -1;
    }
    s->run_cfg = *cfg;  /* with resume: the run's own, to name what the options change */
    for (size_t k = 0; k < o->n_overrides; k++)
        if (moe_config_set(cfg, o->overrides[k].key, o->overrides[k].value, err)) {
            moe_err_prefix(err, "option --%s", o->overrides[k].flag);
            return MOE_SESSION_USAGE;
        }
    if (o->no_shuffle) cfg->shuffle = 0;
    if (o->precision) snprintf(cfg->precision, sizeof cfg->precision, "%s", o->precision);
    char chosen[sizeof cfg->precision];
    snprintf(chosen, sizeof chosen, "%s", moe_precision_resolve(cfg->precision, &s->precision_why));
    snprintf(cfg->precision, sizeof cfg->precision, "%s", chosen);
    if (!s->precision_why)
        s->precision_why = o->precision ? "asked for by --precision" : o->config ? "asked for by the config"
                                                                     : "the checkpoint's";
    return moe_config_finalize(cfg, err);
}

/* The model of cfg, after the memory check: across ranks with expert
 * parallel each rank holds its part of the experts (part rank % EP of EP,
 * its position in its group). New (initialised with the seed) or with the
 * checkpoint's weights. */
static int open_model(moe_session *s, const moe_config *cfg, moe_err *err) {
    s->parts = s->many ? cfg->expert_parallel : 1;
    moe_param_count pc;
    if (moe_model_count_params(cfg, s->parts, &pc, err) || check_memory(cfg, pc.held, err)) return -1;
    s->total_params = pc.total;
    omp_set_num_threads(cfg->threads > 0 ? cfg->threads : omp_get_num_procs());
    if (moe_model_create_part(cfg, s->opts.world->rank % s->parts, s->parts, &s->model, err)) return -1;
    if (s->opts.config) {
        moe_model_init(s->model, (uint64_t)cfg->seed);
        return 0;
    }
    return moe_model_load_weights(s->model, s->ckpt, err);
}

/* The token file: opts.data, or with resume alone the one the run recorded
 * (moe_trainer_restore checks its size and CRC-32). */
static int open_data(moe_session *s, moe_err *err) {
    s->data = s->opts.data;
    if (!s->data) {
        int found = moe_checkpoint_data(s->ckpt, s->run_data, sizeof s->run_data, err);
        if (found < 0) return -1;
        if (found > 0)
            return moe_errf(err, "%s does not record its token file (written by an older moe): give --data "
                            "FILE", s->ckpt);
        if (access(s->run_data, R_OK))
            return moe_errf(err, "the run was trained on %s, which is no longer there (%s): give --data FILE "
                            "with the same tokens", s->run_data, strerror(errno));
        s->data = s->run_data;
    }
    return moe_tokens_read(s->data, &s->tokens, err);
}

/* --eval-every N --eval-data FILE: reads the held-out tokens, or says why
 * not. One process only for now: a validation pass on rank 0 would leave
 * the others waiting at the next step's collectives. */
static int open_validation(moe_session *s, moe_err *err) {
    long every = s->opts.eval_every;
    const char *data = s->opts.eval_data;
    if (!every && !data) return 0;
    if (!every) return moe_errf(err, "--eval-data %s is read only with --eval-every N", data);
    if (!data)
        return moe_errf(err, "--eval-every %ld needs --eval-data FILE: the held-out tokens to measure", every);
    if (s->many)
        return moe_errf(err, "--eval-every is not available across processes yet: run `moe eval` on the "
                        "checkpoints, or train on one process");
    if (moe_tokens_read(data, &s->eval_tokens, err)) return -1;
    if (s->eval_tokens.vocab_size > (uint32_t)s->model->cfg.vocab_size)
        return moe_errf(err, "--eval-data %s: its vocabulary (%u ids) is larger than the model's "
                        "vocab_size (%d)", data, s->eval_tokens.vocab_size, s->model->cfg.vocab_size);
    return 0;
}

/* Everything each rank can set up alone: config, model, data, trainer,
 * validation data. The trainer owns the model from its creation on. */
static int open_local(moe_session *s, moe_err *err) {
    moe_config cfg;
    int rc = open_config(s, &cfg, err);
    if (rc) return rc;
    if (open_model(s, &cfg, err) || open_data(s, err)) return -1;
    s->have_trainer = 1;
    if (moe_trainer_create(&s->tr, s->model, &s->tokens, s->out, err)) return -1;
    if (s->rank0 && moe_trainer_claim(&s->tr, err)) return -1;  /* rank 0 is the one writer */
    if (open_validation(s, err)) return -1;
    if (s->many && s->opts.analysis_every)
        return moe_errf(err, "--analysis-every is not available across processes yet: run it on one process");
    return 0;
}

/* Across ranks: every rank's config (after the overrides) and token count
 * must be rank 0's. Rank 0's text is broadcast; a rank that differs names
 * the first differing line. Collective. */
static int check_same_setup(moe_comm *world, const moe_config *cfg, size_t data_tokens, moe_err *err) {
    moe_buf b = {0};
    if (moe_config_to_json(cfg, &b) || moe_buf_printf(&b, "data tokens %zu\n", data_tokens))
        { moe_buf_free(&b); return moe_errf(err, "out of memory"); }
    double len = (double)b.len;
    if (moe_comm_broadcast(world, &len, 1, MOE_F64, 0, err)) { moe_buf_free(&b); return -1; }
    char *ref = moe_calloc((size_t)len + 1, 1, err);
    int rc = ref ? 0 : -1;
    if (ref && world->rank == 0) memcpy(ref, b.data, b.len);
    if (ref && moe_comm_broadcast(world, ref, (size_t)len, MOE_BYTE, 0, err)) rc = -1;
    if (!rc && ((size_t)len != b.len || memcmp(ref, b.data, b.len))) {
        const char *p = b.data, *q = ref;  /* the first line that differs */
        while (*p && *p == *q) { p++; q++; }
        while (p > b.data && p[-1] != '\n') { p--; q--; }
        int lp = (int)strcspn(p, "\n"), lq = (int)strcspn(q, "\n");
        rc = moe_errf(err, "the config or data differ from rank 0's: here '%.*s', rank 0 '%.*s'; every "
                      "rank must run the same command on the same files", lp, p, lq, q);
    }
    free(ref);
    moe_buf_free(&b);
    return rc;
}

/* ---- opening: what comes after the ranks are joined ---------------------- */

/* The tokenizer that travels with the checkpoints: opts.tokenizer
 * (validated, and no larger than the model's vocabulary), else the one in
 * the checkpoint we started from, else the one the token file records (moe
 * prepare writes it), else none, which is worth a warning unless the
 * vocabulary is the bytes' (generate and eval --task need a tokenizer). */
static int open_tokenizer(moe_session *s, moe_err *err) {
    const char *path = s->opts.tokenizer, *data_path = s->data;
    const moe_tokens *data = &s->tokens;
    int vocab = s->model->cfg.vocab_size;
    moe_buf *keep = &s->tr.tokenizer;
    moe_tokenizer *t = NULL;
    const char *what = path ? path : "the checkpoint's tokenizer";
    if ((path || s->ckpt[0]) && moe_checkpoint_tokenizer(s->ckpt, path, &t, err)) return -1;
    char recorded[4200];
    snprintf(recorded, sizeof recorded, "%s: its recorded tokenizer", data_path);
    if (!t && data->tokenizer_len) {
        if (moe_tokenizer_parse(data->tokenizer, data->tokenizer_len, recorded, &t, err)) return -1;
        what = recorded;
    }
    if (!t) {
        if (vocab != 257)
            say(s, "warning: no tokenizer (%s records none and no --tokenizer was given): generate and eval "
                "--task will refuse this model's vocabulary of %d ids; give --tokenizer FILE, or prepare the "
                "data again with moe prepare, which records it", data_path, vocab);
        return 0;
    }
    int rc = 0;
    if (moe_tokenizer_vocab_size(t) > (uint32_t)vocab)
        rc = moe_errf(err, "%s: tokenizer has %u ids, more than the model's vocab_size %d", what,
                      moe_tokenizer_vocab_size(t), vocab);
    else
        rc = moe_tokenizer_serialize(t, keep, err);
    moe_tokenizer_free(t);
    if (!rc && data->tokenizer_len &&
        (data->tokenizer_len != keep->len || memcmp(data->tokenizer, keep->data, keep->len)))
        say(s, "warning: %s differs from the tokenizer %s was prepared with", what, data_path);
    return rc;
}

/* The calibration probe (docs/EVAL.md): its data, its file (cut back to
 * the resumed step), and the measurement of the untrained model. */
static int open_probe(moe_session *s, moe_err *err) {
    const moe_session_opts *o = &s->opts;
    const moe_config *c = &s->model->cfg;
    const moe_tokens *ct = &s->tokens;
    char path[4096];
    if (o->analysis_data && strcmp(o->analysis_data, s->data)) {
        if (moe_tokens_read(o->analysis_data, &s->calib_tokens, err)) return -1;
        ct = &s->calib_tokens;
    }
    if (moe_rundir_path(path, sizeof path, s->tr.out_dir, MOE_RUN_CALIBRATION, err) ||
        moe_probe_init(&s->probe, ct, (size_t)o->analysis_tokens, (size_t)c->batch_size, (size_t)c->seq_len,
                       path, err))
        return -1;
    if (o->resume) {
        if (moe_rundir_keep_steps(s->tr.out_dir, MOE_RUN_CALIBRATION, s->tr.step, err) ||
            moe_probe_prime(&s->probe, s->model, err))
            return -1;
    } else if (s->tr.step == 0 && moe_probe_measure(&s->probe, s->model, 0, err)) {
        return -1;
    }
    return 0;
}

/* After the ranks are joined: a resumed run's state (and the options it
 * refuses), ReMoE's lambda from the weights' checkpoint, a fresh run's
 * folder, the tokenizer and the probe. */
static int open_run(moe_session *s, moe_err *err) {
    const moe_session_opts *o = &s->opts;
    moe_trainer *tr = &s->tr;
    if (o->resume && (moe_trainer_restore(tr, s->ckpt, err) || cut_metrics(s, err) ||
                      moe_resume_changes(&s->run_cfg, tr->cfg, tr->step, tr->loader.position, NULL, NULL, err)))
        return -1;
    if (s->data == s->run_data)
        say(s, "resuming on the run's data, %s (size and CRC-32 as recorded)", s->data);
    if (o->model_dir) {  /* ReMoE's lambda goes on from the checkpoint's, not from relu_lambda0 */
        float lambda;
        int found = moe_checkpoint_lambda(s->ckpt, &lambda, err);
        if (found < 0) return -1;
        if (found == 0) s->model->rs.lambda = lambda;
    }
    if (!o->resume && s->rank0 && fresh_run_folder(s, err)) return -1;
    if (open_tokenizer(s, err)) return -1;
    return o->analysis_every ? open_probe(s, err) : 0;
}

int moe_session_open(moe_session *s, const moe_session_opts *opts, moe_err *err) {
    memset(s, 0, sizeof *s);
    s->opts = *opts;
    s->rolled_back_to = -1;
    moe_comm *world = opts->world;
    s->rank0 = world->rank == 0;
    s->many = world->size > 1;
    s->out = opts->out;
    if (!s->out) {  /* --resume alone: the run it names (the run of a checkpoint folder) */
        if (moe_resume_target(opts->resume, s->owner, sizeof s->owner, err)) return MOE_SESSION_FAILED;
        s->out = s->owner[0] ? s->owner : opts->resume;
    }
    /* Across ranks, a failure is agreed on at each moe_comm_agree below (no
     * other collective lies between two), so a rank that fails meets the
     * others there and rank 0 reports one message. A refused override
     * fails alike on every rank, before any collective. */
    int rc = open_local(s, err);
    if (rc == MOE_SESSION_USAGE) return rc;
    if (moe_comm_agree(world, rc, err) ||
        moe_comm_agree(world, s->many ? check_same_setup(world, s->tr.cfg, s->tokens.n, err) : 0, err) ||
        moe_comm_agree(world, moe_trainer_distribute(&s->tr, world, err), err) ||
        moe_comm_agree(world, open_run(s, err), err)) {
        s->quiet = s->many && !s->rank0;
        return MOE_SESSION_FAILED;
    }
    s->first_step = s->tr.step;
    s->tr.prof.on = opts->profile;
    s->last_save = omp_get_wtime();  /* checkpoint_minutes counts from here */
    moe_trainer_comm_usage(&s->tr, &s->comm0[0], &s->comm0[1]);
    return 0;
}

void moe_session_say_changes(const moe_session *s) {
    moe_err ignored;
    if (s->opts.resume)
        moe_resume_changes(&s->run_cfg, s->tr.cfg, s->first_step, s->tr.loader.position, s->opts.say,
                           s->opts.say_ctx, &ignored);
}

/* ---- stepping ------------------------------------------------------------ */

int moe_session_finished(const moe_session *s) {
    return s->tr.step >= s->tr.cfg->steps || s->stopping;
}

/* The step's metrics.jsonl line, with the validation loss on the steps that
 * measure it (every eval_every steps and the last). The pass runs after the
 * line's own members are formatted: it overwrites the layers' statistics
 * of the last forward, and changes nothing that training reads. */
static int log_step(moe_session *s, const moe_step_stats *st, moe_err *err) {
    moe_trainer *tr = &s->tr;
    long every = s->opts.eval_every;
    moe_buf line;
    moe_trainer_metrics_line(tr, st, &line);
    if (every && !st->skipped && !st->poisoned && (st->step % every == 0 || st->step == tr->cfg->steps)) {
        double loss;
        if (moe_eval_loss_members(tr->model, &s->eval_tokens, (size_t)tr->cfg->batch_size,
                                  (size_t)tr->cfg->seq_len, (size_t)s->opts.eval_tokens, &line, &loss, err)) {
            moe_buf_free(&line);
            return -1;
        }
        if (s->rank0) say(s, "step %ld validation loss %.4f (%s)", st->step, loss, s->eval_tokens.path);
    }
    moe_buf_printf(&line, "}\n");
    int rc = 0;
    if (!line.data)
        rc = moe_errf(err, "out of memory writing %s/%s", tr->out_dir, moe_rundir_name(MOE_RUN_METRICS));
    else if (s->rank0)  /* each line flushed as it is written: a killed run keeps its steps */
        rc = moe_rundir_append_line(tr->out_dir, MOE_RUN_METRICS, line.data, line.len, err);
    moe_buf_free(&line);
    return rc;
}

/* A stop asked for on any rank stops every rank after the same step, and a
 * checkpoint_minutes checkpoint due on any rank is written by all. *due: on
 * entry this rank's, on return the ranks'. */
static int agree_stop(moe_session *s, int *due, moe_err *err) {
    if (s->many) {
        double v[2] = {(double)stop_asked(s), (double)*due};
        if (moe_comm_allreduce(s->opts.world, v, 2, MOE_F64, err)) return -1;
        if (v[0] > 0 && !stop_asked(s) && s->opts.stop) *s->opts.stop = SIGTERM;
        *due = v[1] > 0;
    }
    s->stopping = stop_asked(s) != 0;
    return 0;
}

/* A step whose loss or gradient norm was not finite was skipped: say so;
 * after max_bad_steps in a row return to the last checkpoint, and give up
 * (an error) when that happens again from the same checkpoint. */
static int guard_non_finite(moe_session *s, const moe_step_stats *st, moe_err *err) {
    moe_trainer *tr = &s->tr;
    say(s, "step %ld: %s is not finite (loss %g, gradient norm %g); update skipped", st->step,
        isfinite(st->loss) ? "the gradient norm" : "the loss", st->loss, st->grad_norm);
    if (++s->bad_in_row < tr->cfg->max_bad_steps) return 0;
    long back;
    if (moe_trainer_rollback(tr, &back, err) || rewind_logs(s, err))
        return moe_err_prefix(err, "%d non-finite steps in a row", s->bad_in_row);
    if (back == s->rolled_back_to)
        return moe_errf(err, "training diverged: %d non-finite steps in a row again after returning "
                        "to the checkpoint of step %ld; nothing was changed for you: lower --lr "
                        "(now %g), raise warmup, or check the data", s->bad_in_row, back, tr->cfg->lr);
    say(s, "%d non-finite steps in a row: returned to the checkpoint of step %ld (weights, optimiser, data "
        "position, lambda); the learning rate and everything else are unchanged", s->bad_in_row, back);
    s->rolled_back_to = back;
    s->bad_in_row = 0;
    return 0;
}

/* An update left parameters (or their AdamW moments) non-finite: the
 * weights are poisoned and cannot be skipped, so training returns to the
 * last checkpoint at once (never saving the poison), and gives up when that
 * happens again from the same checkpoint, or when there is none. */
static int guard_poisoned(moe_session *s, const moe_step_stats *st, moe_err *err) {
    moe_trainer *tr = &s->tr;
    say(s, "step %ld: the update left %zu values non-finite (first in tensor '%s', its weights or AdamW "
        "moments)", st->step, st->poisoned, st->poisoned_tensor);
    long back;
    if (moe_trainer_rollback(tr, &back, err) || rewind_logs(s, err))
        return moe_err_prefix(err, "step %ld poisoned the weights (tensor '%s'), nothing was saved, "
                              "and there is no checkpoint to return to: lower --lr, check adam_eps "
                              "and the data", st->step, st->poisoned_tensor);
    if (back == s->rolled_back_to)
        return moe_errf(err, "training diverged: the weights became non-finite (tensor '%s') again "
                        "after returning to the checkpoint of step %ld; nothing was changed for you: "
                        "lower --lr (now %g), check adam_eps and the data", st->poisoned_tensor,
                        back, tr->cfg->lr);
    say(s, "returned to the checkpoint of step %ld (weights, optimiser, data position, lambda); the "
        "learning rate and everything else are unchanged", back);
    s->rolled_back_to = back;
    s->bad_in_row = 0;
    return 0;
}

/* After an applied step: the probe when due, the time and tokens, and the
 * profile (the first step allocates: not counted). */
static int after_update(moe_session *s, const moe_step_stats *st, moe_err *err) {
    moe_trainer *tr = &s->tr;
    long every = s->opts.analysis_every;
    if (every && (tr->step % every == 0 || tr->step == tr->cfg->steps || stop_asked(s)) &&
        moe_probe_measure(&s->probe, s->model, tr->step, err))
        return -1;
    s->seconds += st->seconds;
    s->tokens_seen += st->tokens;
    if (s->opts.profile && tr->step == s->first_step + 1) {
        memset(tr->prof.seconds, 0, sizeof tr->prof.seconds);
    } else if (s->opts.profile) {
        s->profiled_seconds += st->seconds;
        s->profiled_steps++;
    }
    return 0;
}

int moe_session_step(moe_session *s, moe_session_event *ev, moe_err *err) {
    moe_trainer *tr = &s->tr;
    const moe_config *c = tr->cfg;
    moe_step_stats *st = &ev->st;
    ev->trained = 0;
    ev->calib_loss = NAN;
    if (moe_trainer_step(tr, st, err) || log_step(s, st, err)) return -1;
    /* checkpoint_minutes: a checkpoint after the step that ends that long after the last */
    int due = c->checkpoint_minutes > 0 && omp_get_wtime() - s->last_save >= 60.0 * c->checkpoint_minutes;
    if (agree_stop(s, &due, err)) return -1;
    if (st->skipped) return guard_non_finite(s, st, err);
    if (st->poisoned) return guard_poisoned(s, st, err);
    s->bad_in_row = 0;
    if (after_update(s, st, err)) return -1;
    ev->trained = 1;
    if (s->opts.analysis_every) ev->calib_loss = s->probe.last_loss;
    if (((c->checkpoint_every && tr->step % c->checkpoint_every == 0) || due) && tr->step < c->steps &&
        !stop_asked(s)) {
        if (moe_trainer_save(tr, err)) return -1;
        s->last_save = omp_get_wtime();
    }
    return 0;
}

/* ---- closing ------------------------------------------------------------- */

int moe_session_close(moe_session *s, moe_err *err) { return moe_trainer_save(&s->tr, err); }

/* VmHWM of /proc/self/status: this process's peak resident memory, bytes. */
static double peak_memory(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %lf kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb * 1024;
}

int moe_session_rank_usage(const moe_session *s, double *out, moe_err *err) {
    moe_comm *world = s->opts.world;
    size_t P = (size_t)world->size;
    size_t *counts = moe_calloc(P, sizeof(size_t), err);
    if (!counts) return -1;
    memset(out, 0, 4 * P * sizeof *out);
    double *mine = out + 4 * (size_t)world->rank;
    moe_trainer_comm_usage(&s->tr, &mine[0], &mine[2]);
    mine[0] -= s->comm0[0];
    mine[1] = s->seconds;
    mine[2] -= s->comm0[1];
    mine[3] = peak_memory();
    for (size_t r = 0; r < P; r++) counts[r] = 4;
    int rc = moe_comm_allgather(world, out, counts, MOE_F64, err);
    free(counts);
    return rc;
}

void moe_session_free(moe_session *s) {
    if (s->have_trainer) moe_trainer_free(&s->tr);
    else moe_model_free(s->model);
    s->model = NULL;
    s->have_trainer = 0;
    moe_tokens_free(&s->tokens);
    moe_tokens_free(&s->calib_tokens);
    moe_tokens_free(&s->eval_tokens);
    moe_probe_free(&s->probe);
}
