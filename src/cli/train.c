/* train.c — `moe train`: the training loop as a user drives it: options,
 * live progress, metrics, periodic checkpoints, and a clean stop on
 * SIGINT / SIGTERM (a checkpoint is written first). */
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "moe/analysis.h"
#include "moe/fileio.h"
#include "moe/tokenizer.h"
#include "moe/train.h"

static void help(FILE *f) {
    fprintf(f,
        "usage: moe train (--config FILE.json | --model DIR | --resume DIR) --data FILE\n"
        "                 [--out DIR] [options]\n\n"
        "  --config FILE     new model from a config (docs/CONFIG.md), initialised with --seed\n"
        "  --model DIR       start from the weights of DIR (fresh optimiser; the ReLU\n"
        "                    router's lambda goes on from DIR's when DIR is a checkpoint)\n"
        "  --resume DIR      continue a run exactly where its last checkpoint stopped\n"
        "  --data FILE       token file (docs/FORMAT.md)\n"
        "  --out DIR         run directory (default with --resume: the resumed run)\n"
        "  --tokenizer FILE  tokenizer of the data, copied into every checkpoint so that\n"
        "                    generate and eval find it (default: the resumed model's own)\n"
        "  --steps N  --batch B  --seq T  --grad-accum N  --lr X  --warmup N\n"
        "  --seed N  --threads N  --checkpoint-every N  --keep N\n"
        "                    override the config's training keys\n"
        "  --no-shuffle      read rows in order (batch b, row r = tokens[(bB+r)T ...])\n"
        "  --profile         print where the steps' time went (attention, experts, router,\n"
        "                    norms, optimizer, data, ...) at the end\n"
        "  --analysis-every N  every N steps (and at the first and last) forward a fixed\n"
        "                    calibration set in eval mode and append its loss, per-layer\n"
        "                    sparsity and routing flip rate to DIR/calibration.jsonl\n"
        "                    (docs/EVAL.md); 0 (default) is off and costs nothing\n"
        "  --analysis-data FILE  calibration token file (default: --data)\n"
        "  --analysis-tokens N   its first N tokens (default 4096)\n\n"
        "Writes DIR/metrics.jsonl (one JSON line per step) and\n"
        "DIR/checkpoints/step-NNNNNNNN/ (config.json, model.safetensors,\n"
        "optimizer.safetensors, trainer_state.json). Ctrl-C writes a checkpoint and stops.\n");
}

static volatile sig_atomic_t stop_requested = 0;
static void on_signal(int sig) { stop_requested = sig; }

/* CLI flags that map one-to-one onto numeric config keys. */
static const struct { const char *flag, *key; } FLAG_KEYS[] = {
    {"--steps", "steps"}, {"--batch", "batch_size"}, {"--seq", "seq_len"},
    {"--grad-accum", "grad_accum"}, {"--lr", "lr"}, {"--warmup", "warmup"},
    {"--seed", "seed"}, {"--threads", "threads"}, {"--checkpoint-every", "checkpoint_every"},
    {"--keep", "keep_checkpoints"},
};
#define N_FLAG_KEYS (sizeof FLAG_KEYS / sizeof FLAG_KEYS[0])

/* A step whose loss or gradient norm was not finite was skipped: say so;
 * after cfg.max_bad_steps in a row return to the last checkpoint, and give up
 * (an error) when that happens again from the same checkpoint. */
static int guard_non_finite(moe_trainer *tr, const moe_step_stats *st, int *bad_in_row,
                            long *rolled_back_to, int tty, moe_err *err) {
    fprintf(stderr, "%smoe train: step %ld: %s is not finite (loss %g, gradient norm %g); "
            "update skipped\n", tty ? "\r\033[K" : "", st->step,
            isfinite(st->loss) ? "the gradient norm" : "the loss", st->loss, st->grad_norm);
    if (++*bad_in_row < tr->cfg.max_bad_steps) return 0;
    long back;
    if (moe_trainer_rollback(tr, &back, err))
        return moe_err_prefix(err, "%d non-finite steps in a row", *bad_in_row);
    if (back == *rolled_back_to)
        return moe_errf(err, "training diverged: %d non-finite steps in a row again after returning "
                        "to the checkpoint of step %ld; nothing was changed for you: lower --lr "
                        "(now %g), raise warmup, or check the data", *bad_in_row, back, tr->cfg.lr);
    fprintf(stderr, "moe train: %d non-finite steps in a row: returned to the checkpoint of step %ld "
            "(weights, optimiser, data position, lambda); the learning rate and everything else "
            "are unchanged\n", *bad_in_row, back);
    *rolled_back_to = back;
    *bad_in_row = 0;
    return 0;
}

/* MemAvailable from /proc/meminfo, in bytes (0 if unknown). */
static size_t memory_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    size_t kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %zu kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb * 1024;
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

/* The --profile table: milliseconds per step and share of each part. */
static void print_profile(const moe_profile *p, double seconds, long steps, int tokens_per_step) {
    if (steps <= 0) { fprintf(stderr, "moe train: --profile needs at least 2 steps\n"); return; }
    double parts = 0.0;
    for (int i = 0; i < PROF_PARTS; i++) parts += p->seconds[i];
    fprintf(stderr, "\nprofile over %ld steps (the first is not counted), %.1f ms/step, %.0f tokens/s\n",
            steps, 1e3 * seconds / (double)steps, (double)tokens_per_step * (double)steps / seconds);
    fprintf(stderr, "  %-16s %10s %7s\n", "part", "ms/step", "share");
    for (int i = 0; i < PROF_PARTS; i++) {
        double s = p->seconds[i] + (i == PROF_OTHER ? seconds - parts : 0.0);
        if (s <= 0.0 && i != PROF_OTHER) continue;
        fprintf(stderr, "  %-16s %10.2f %6.1f%%\n", MOE_PROF_NAMES[i], 1e3 * s / (double)steps,
                100.0 * s / seconds);
    }
}

static void format_duration(char *out, size_t cap, double s) {
    if (s < 60) snprintf(out, cap, "%.0fs", s);
    else if (s < 3600) snprintf(out, cap, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(out, cap, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

/* The tokenizer that travels with the checkpoints: --tokenizer FILE
 * (validated, and no larger than the model's vocabulary), else the one in
 * the checkpoint we started from, else none. */
static int load_tokenizer(moe_trainer *tr, const char *path, const char *ckpt, moe_err *err) {
    moe_tokenizer *t = NULL;
    if (path || ckpt[0]) {
        if (moe_checkpoint_tokenizer(ckpt, path, &t, err)) return -1;
    }
    if (!t) return 0;
    if (!path) path = "the checkpoint's tokenizer";
    int rc = 0;
    if (moe_tokenizer_vocab_size(t) > (uint32_t)tr->model->cfg.vocab_size)
        rc = moe_errf(err, "%s: tokenizer has %u ids, more than the model's vocab_size %d", path,
                      moe_tokenizer_vocab_size(t), tr->model->cfg.vocab_size);
    else
        rc = moe_tokenizer_serialize(t, &tr->tokenizer, err);
    moe_tokenizer_free(t);
    return rc;
}

int cmd_train(int argc, char **argv) {
    const char *config = NULL, *model_dir = NULL, *resume = NULL, *data = NULL, *out = NULL;
    const char *tokenizer = NULL;
    const char *override_key[N_FLAG_KEYS];
    double override_val[N_FLAG_KEYS];
    size_t n_over = 0;
    int no_shuffle = 0, profile = 0;
    const char *analysis_data = NULL;
    long analysis_every = 0, analysis_tokens = 4096;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { help(stdout); return 0; }
        if (!strcmp(a, "--no-shuffle")) { no_shuffle = 1; continue; }
        if (!strcmp(a, "--profile")) { profile = 1; continue; }
        if (!strcmp(a, "--analysis-every")) {
            const char *v = cli_value("train", argc, argv, &i);
            if (!v || cli_int("train", a, v, 0, 1L << 40, &analysis_every)) return 2;
            continue;
        }
        if (!strcmp(a, "--analysis-tokens")) {
            const char *v = cli_value("train", argc, argv, &i);
            if (!v || cli_int("train", a, v, 1, 1L << 40, &analysis_tokens)) return 2;
            continue;
        }
        if (!strcmp(a, "--analysis-data")) {
            if (!(analysis_data = cli_value("train", argc, argv, &i))) return 2;
            continue;
        }
        const char **target = !strcmp(a, "--config") ? &config : !strcmp(a, "--model") ? &model_dir
                            : !strcmp(a, "--resume") ? &resume : !strcmp(a, "--data") ? &data
                            : !strcmp(a, "--out") ? &out : !strcmp(a, "--tokenizer") ? &tokenizer : NULL;
        if (target) { if (!(*target = cli_value("train", argc, argv, &i))) return 2; continue; }
        size_t k = 0;
        while (k < N_FLAG_KEYS && strcmp(a, FLAG_KEYS[k].flag)) k++;
        if (k == N_FLAG_KEYS) { fprintf(stderr, "moe train: unknown option '%s' (see --help)\n", a); return 2; }
        const char *v = cli_value("train", argc, argv, &i);
        double x;
        if (!v || cli_double("train", a, v, -1e18, 1e18, &x)) return 2;
        override_key[n_over] = FLAG_KEYS[k].key;
        override_val[n_over++] = x;
    }
    if ((config != NULL) + (model_dir != NULL) + (resume != NULL) != 1) {
        fprintf(stderr, "moe train: give exactly one of --config, --model or --resume\n");
        return 2;
    }
    if (!data) { fprintf(stderr, "moe train: --data FILE is required\n"); return 2; }
    if (!out && !resume) { fprintf(stderr, "moe train: --out DIR is required\n"); return 2; }

    moe_err err;
    moe_config cfg;
    moe_model *model = NULL;
    moe_tokens tokens = {0};
    moe_trainer tr = {0};
    moe_tokens calib_tokens = {0};
    moe_probe probe = {0};
    char ckpt[4096] = "";
    int rc = 1, have_trainer = 0;

    /* the model and its config */
    if (config) {
        if (moe_config_load(config, &cfg, &err)) goto fail;
    } else {
        if (moe_resolve_checkpoint(resume ? resume : model_dir, ckpt, sizeof ckpt, &err) ||
            moe_model_load(ckpt, &model, &err))
            goto fail;
        cfg = model->cfg;
    }
    for (size_t k = 0; k < n_over; k++)
        if (moe_config_set(&cfg, override_key[k], override_val[k], &err)) {
            fprintf(stderr, "moe train: %s\n", err.msg);
            rc = 2;
            goto done;
        }
    if (no_shuffle) cfg.shuffle = 0;
    if (moe_config_finalize(&cfg, &err)) goto fail;
    if (config) {
        if (moe_model_create(&cfg, &model, &err)) goto fail;
        moe_model_init(model, (uint64_t)cfg.seed);
    } else {
        model->cfg = cfg;  /* training keys may differ; model keys come from the checkpoint */
    }
    omp_set_num_threads(cfg.threads > 0 ? cfg.threads : omp_get_num_procs());
    if (check_memory(&cfg, model->n_params, &err)) goto fail;

    if (moe_tokens_read(data, &tokens, &err)) goto fail;
    have_trainer = 1;  /* from here the trainer owns the model */
    if (moe_trainer_create(&tr, &cfg, model, &tokens, out ? out : resume, &err)) goto fail;
    if (resume && moe_trainer_restore(&tr, ckpt, &err)) goto fail;
    if (model_dir) {  /* ReMoE's lambda goes on from the checkpoint's, not from relu_lambda0 */
        float lambda;
        int found = moe_checkpoint_lambda(ckpt, &lambda, &err);
        if (found < 0) goto fail;
        if (found == 0) model->rs.lambda = lambda;
    }
    if (!resume) {
        /* a fresh run never mixes with an earlier one in the same directory */
        char existing[4096];
        moe_err ignored;
        if (!moe_resolve_checkpoint(tr.out_dir, existing, sizeof existing, &ignored)) {
            moe_errf(&err, "%s already holds a run (%s): continue it with --resume %s, or "
                     "choose another --out", tr.out_dir, existing, tr.out_dir);
            goto fail;
        }
        if (moe_trainer_truncate_metrics(&tr, &err)) goto fail;
    }
    if (load_tokenizer(&tr, tokenizer, ckpt, &err)) goto fail;
    if (analysis_every) {  /* the calibration probe (docs/EVAL.md) */
        char path[4096];
        const moe_tokens *ct = &tokens;
        if (analysis_data && strcmp(analysis_data, data)) {
            if (moe_tokens_read(analysis_data, &calib_tokens, &err)) goto fail;
            ct = &calib_tokens;
        }
        if (moe_path(path, sizeof path, &err, "%s/calibration.jsonl", tr.out_dir) ||
            moe_probe_init(&probe, ct, (size_t)analysis_tokens, (size_t)cfg.batch_size,
                           (size_t)cfg.seq_len, path, &err))
            goto fail;
        if (resume && (moe_jsonl_keep_steps(path, tr.step, &err) || moe_probe_prime(&probe, model, &err)))
            goto fail;
        if (!resume && tr.step == 0 && moe_probe_measure(&probe, model, 0, &err)) goto fail;
    }
    if (tr.step >= cfg.steps) {
        printf("moe train: already at step %ld of %d; nothing to do\n", tr.step, cfg.steps);
        rc = 0;
        goto done;
    }

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    int tty = isatty(2);
    long first = tr.step, every = cfg.steps / 20 > 0 ? cfg.steps / 20 : 1;
    double elapsed = 0.0;
    size_t seen = 0;
    fprintf(stderr, "moe train: %zu parameters, %d steps of %d x %d x %d tokens, %d threads, out %s\n",
            model->n_params, cfg.steps, cfg.batch_size, cfg.seq_len, cfg.grad_accum,
            omp_get_max_threads(), tr.out_dir);
    int bad_in_row = 0;
    long rolled_back_to = -1;
    double profiled_seconds = 0.0;
    long profiled_steps = 0;
    tr.prof.on = profile;
    while (tr.step < cfg.steps && !stop_requested) {
        moe_step_stats st;
        if (moe_trainer_step(&tr, &st, &err) || moe_trainer_log(&tr, &st, &err)) goto fail;
        if (st.skipped && guard_non_finite(&tr, &st, &bad_in_row, &rolled_back_to, tty, &err)) goto fail;
        if (st.skipped) continue;
        bad_in_row = 0;
        if (analysis_every && (tr.step % analysis_every == 0 || tr.step == cfg.steps || stop_requested) &&
            moe_probe_measure(&probe, model, tr.step, &err))
            goto fail;
        elapsed += st.seconds;
        seen += st.tokens;
        if (profile && tr.step == first + 1) {  /* the first step allocates: not counted */
            memset(tr.prof.seconds, 0, sizeof tr.prof.seconds);
        } else if (profile) {
            profiled_seconds += st.seconds;
            profiled_steps++;
        }
        double eta = elapsed / (double)(tr.step - first) * (double)(cfg.steps - tr.step);
        char eta_s[32];
        format_duration(eta_s, sizeof eta_s, eta);
        if (tty || tr.step % every == 0 || tr.step == cfg.steps)
            fprintf(stderr, "%sstep %ld/%d  loss %.4f  lr %.2e  %.0f tok/s  ETA %s%s",
                    tty ? "\r\033[K" : "", tr.step, cfg.steps, st.loss, st.lr,
                    (double)seen / elapsed, eta_s, tty ? "" : "\n");
        if (cfg.checkpoint_every && tr.step % cfg.checkpoint_every == 0 && tr.step < cfg.steps &&
            moe_trainer_save(&tr, &err))
            goto fail;
    }
    if (tty) fprintf(stderr, "\n");
    if (moe_trainer_save(&tr, &err)) goto fail;
    moe_print_layer_activity(stderr, model, "moe train");
    if (profile) print_profile(&tr.prof, profiled_seconds, profiled_steps, tr.cfg.batch_size *
                               tr.cfg.seq_len * tr.cfg.grad_accum);
    if (stop_requested)
        fprintf(stderr, "moe train: stopped by signal %d at step %ld; checkpoint written, resume with "
                "--resume %s\n", (int)stop_requested, tr.step, tr.out_dir);
    else
        fprintf(stderr, "moe train: done, checkpoint %s/checkpoints/step-%08ld\n", tr.out_dir, tr.step);
    rc = stop_requested ? 128 + (int)stop_requested : 0;
    goto done;
fail:
    fprintf(stderr, "%smoe train: %s\n", isatty(2) ? "\n" : "", err.msg);
    rc = 1;
done:
    if (have_trainer) moe_trainer_free(&tr);
    else moe_model_free(model);
    moe_tokens_free(&tokens);
    moe_tokens_free(&calib_tokens);
    moe_probe_free(&probe);
    return rc;
}
