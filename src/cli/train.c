/* train.c — `moe train`: the training loop as a user drives it: options,
 * live progress, metrics, periodic checkpoints, and a clean stop on
 * SIGINT / SIGTERM (a checkpoint is written first). Started by mpirun it
 * trains across the ranks (docs/DISTRIBUTED.md): setup errors are agreed
 * on and reported once by rank 0, rank 0 prints and writes. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/train_dist.h"
#include "moe/analysis.h"
#include "moe/eval.h"
#include "moe/comm_mpi.h"
#include "moe/router.h"
#include "moe/fileio.h"
#include "moe/tokenizer.h"
#include "moe/train.h"

static void help(FILE *f) {
    fprintf(f,
        "usage: moe train (--config FILE.json | --model DIR) --data FILE --out DIR [options]\n"
        "       moe train --resume DIR [--data FILE] [options]\n\n"
        "  --config FILE     new model from a config (docs/CONFIG.md), initialised with --seed\n"
        "  --model DIR       start from the weights of DIR (fresh optimiser; the ReLU\n"
        "                    router's lambda goes on from DIR's when DIR is a checkpoint)\n"
        "  --resume DIR      continue a run exactly where its last checkpoint stopped\n"
        "  --data FILE       token file (docs/FORMAT.md); with --resume the default is\n"
        "                    the one the run recorded. Either way a resumed run checks\n"
        "                    that it has the recorded size and CRC-32\n"
        "  --out DIR         run directory (default with --resume: the resumed run)\n"
        "  --tokenizer FILE  tokenizer of the data, copied into every checkpoint so that\n"
        "                    generate and eval find it (default: the resumed model's own)\n"
        "  --steps N  --batch B  --seq T  --grad-accum N  --lr X  --warmup N\n"
        "  --seed N  --threads N  --checkpoint-every N  --keep N\n"
        "                    override the config's training keys\n"
        "  --precision P     auto, fp32 or bf16 matrix products (config key precision;\n"
        "                    auto: bf16 where the CPU has native bf16 dot products)\n"
        "  --expert-parallel N  --zero-stage 0|1  --rebalance-experts N\n"
        "                    across processes (mpirun -np N moe train ...): ranks sharing\n"
        "                    each MoE layer's experts; 1 shards the AdamW moments; steps\n"
        "                    between placements of the experts on the ranks by load\n"
        "                    (default 100, 0: contiguous blocks) (docs/DISTRIBUTED.md)\n"
        "  --no-shuffle      read rows in order (batch b, row r = tokens[(bB+r)T ...])\n"
        "  --profile         print where the steps' time went (attention, experts, router,\n"
        "                    norms, optimizer, data, ...) at the end\n"
        "  --analysis-every N  every N steps (and at the first and last) forward a fixed\n"
        "                    calibration set in eval mode and append its loss, per-layer\n"
        "                    sparsity and routing flip rate to DIR/calibration.jsonl\n"
        "                    (docs/EVAL.md); 0 (default) is off and costs nothing\n"
        "  --analysis-data FILE  calibration token file (default: --data)\n"
        "  --analysis-tokens N   its first N tokens (default 4096)\n"
        "  --eval-every N    every N steps and at the last, the validation loss of\n"
        "                    --eval-data FILE (held-out tokens), overall and per domain,\n"
        "                    in that step's metrics.jsonl line (val_loss, val); 0 (default)\n"
        "                    is off\n"
        "  --eval-tokens N   about N tokens of it, in windows spread over the whole file,\n"
        "                    each domain its share, the same windows every time (default\n"
        "                    65536; 0: all of it)\n\n"
        "Writes DIR/metrics.jsonl (one JSON line per step) and\n"
        "DIR/checkpoints/step-NNNNNNNN/ (config.json, model.safetensors,\n"
        "optimizer.safetensors, trainer_state.json), every checkpoint_every steps and\n"
        "checkpoint_minutes of wall time (default 30). Ctrl-C, SIGTERM and SIGHUP write a\n"
        "checkpoint and stop; a closed output pipe does not stop training.\n");
}

/* --eval-every N --eval-data FILE: reads the held-out tokens, or says why
 * not. One process only for now: a validation pass on rank 0 would leave
 * the others waiting at the next step's collectives. */
static int open_validation(long every, const char *data, int many, const moe_config *cfg,
                           moe_tokens *t, moe_err *err) {
    if (!every && !data) return 0;
    if (!every) return moe_errf(err, "--eval-data %s is read only with --eval-every N", data);
    if (!data)
        return moe_errf(err, "--eval-every %ld needs --eval-data FILE: the held-out tokens to measure", every);
    if (many)
        return moe_errf(err, "--eval-every is not available across processes yet: run `moe eval` on the "
                        "checkpoints, or train on one process");
    if (moe_tokens_read(data, t, err)) return -1;
    if (t->vocab_size > (uint32_t)cfg->vocab_size)
        return moe_errf(err, "--eval-data %s: its vocabulary (%u ids) is larger than the model's "
                        "vocab_size (%d)", data, t->vocab_size, cfg->vocab_size);
    return 0;
}

/* The step's metrics.jsonl line, with the validation loss on the steps that
 * measure it (every `every` steps and the last). The pass runs after the
 * line's own members are formatted: it overwrites the layers' statistics
 * of the last forward, and changes nothing that training reads. */
static int log_step(moe_trainer *tr, const moe_step_stats *st, long every, moe_tokens *val,
                    size_t max_tokens, int rank0, moe_err *err) {
    moe_buf line;
    moe_trainer_log_begin(tr, st, &line);
    if (every && !st->skipped && !st->poisoned && (st->step % every == 0 || st->step == tr->cfg.steps)) {
        double loss;
        if (moe_eval_loss_members(tr->model, val, (size_t)tr->cfg.batch_size, (size_t)tr->cfg.seq_len,
                                  max_tokens, &line, &loss, err)) {
            moe_buf_free(&line);
            return -1;
        }
        if (rank0)
            fprintf(stderr, "%smoe train: step %ld validation loss %.4f (%s)\n", isatty(2) ? "\r\033[K" : "",
                    st->step, loss, val->path);
    }
    return moe_trainer_log_end(tr, &line, err);
}

static volatile sig_atomic_t stop_requested = 0;
static void on_signal(int sig) { stop_requested = sig; }

/* CLI flags that map one-to-one onto numeric config keys (whole: an
 * integer key); cli_next returns FLAG_KEY0 + their index. */
static const struct { const char *flag, *key; int whole; } FLAG_KEYS[] = {
    {"steps", "steps", 1}, {"batch", "batch_size", 1}, {"seq", "seq_len", 1},
    {"grad-accum", "grad_accum", 1}, {"lr", "lr", 0}, {"warmup", "warmup", 1},
    {"seed", "seed", 1}, {"threads", "threads", 1}, {"checkpoint-every", "checkpoint_every", 1},
    {"keep", "keep_checkpoints", 1}, {"expert-parallel", "expert_parallel", 1},
    {"zero-stage", "zero_stage", 1}, {"rebalance-experts", "rebalance_experts", 1},
};
#define N_FLAG_KEYS (sizeof FLAG_KEYS / sizeof FLAG_KEYS[0])
enum { O_CONFIG = 256, O_MODEL, O_RESUME, O_DATA, O_OUT, O_TOKENIZER, O_NO_SHUFFLE, O_PROFILE,
       O_ANALYSIS_EVERY, O_ANALYSIS_TOKENS, O_ANALYSIS_DATA, O_PRECISION, O_EVAL_EVERY, O_EVAL_DATA,
       O_EVAL_TOKENS, FLAG_KEY0 = 512 };

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

/* An update left parameters (or their AdamW moments) non-finite: the
 * weights are poisoned and cannot be skipped, so training returns to the
 * last checkpoint at once (never saving the poison), and gives up when that
 * happens again from the same checkpoint, or when there is none. */
static int guard_poisoned(moe_trainer *tr, const moe_step_stats *st, long *rolled_back_to, int tty,
                          moe_err *err) {
    fprintf(stderr, "%smoe train: step %ld: the update left %zu values non-finite (first in tensor "
            "'%s', its weights or AdamW moments)\n", tty ? "\r\033[K" : "", st->step, st->poisoned,
            st->poisoned_tensor);
    long back;
    if (moe_trainer_rollback(tr, &back, err))
        return moe_err_prefix(err, "step %ld poisoned the weights (tensor '%s'), nothing was saved, "
                              "and there is no checkpoint to return to: lower --lr, check adam_eps "
                              "and the data", st->step, st->poisoned_tensor);
    if (back == *rolled_back_to)
        return moe_errf(err, "training diverged: the weights became non-finite (tensor '%s') again "
                        "after returning to the checkpoint of step %ld; nothing was changed for you: "
                        "lower --lr (now %g), check adam_eps and the data", st->poisoned_tensor,
                        back, tr->cfg.lr);
    fprintf(stderr, "moe train: returned to the checkpoint of step %ld (weights, optimiser, data "
            "position, lambda); the learning rate and everything else are unchanged\n", back);
    *rolled_back_to = back;
    return 0;
}

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

/* What the console adds to a step's line: ReMoE's sparsity and λ, the
 * auxiliary loss of the other routers, and the calibration loss of the
 * latest probe measurement (calib: NAN when no probe runs). */
static void console_routing(const moe_config *c, const moe_step_stats *st, double calib, char *out,
                            size_t cap) {
    size_t n = 0;
    out[0] = '\0';
    const moe_ffn_kind *fk = moe_ffn_kind_find(c->ffn);
    const moe_router_kind *rk = moe_ffn_router_kind(c);
    if (rk && rk->sparsity_lambda)
        n += (size_t)snprintf(out, cap, "  sparsity %.3f  λ %.2e", st->sparsity, (double)st->lambda);
    else if (fk && fk->routed)
        n += (size_t)snprintf(out, cap, "  aux %.4f", st->aux_loss);
    if (isfinite(calib) && n < cap) snprintf(out + n, cap - n, "  calib %.4f", calib);
}

static void format_duration(char *out, size_t cap, double s) {
    if (s < 60) snprintf(out, cap, "%.0fs", s);
    else if (s < 3600) snprintf(out, cap, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(out, cap, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

/* The tokenizer that travels with the checkpoints: --tokenizer FILE
 * (validated, and no larger than the model's vocabulary), else the one in
 * the checkpoint we started from, else the one the token file records (moe
 * prepare writes it), else none, which is worth a warning unless the
 * vocabulary is the bytes' (generate and eval --task need a tokenizer). */
static int load_tokenizer(moe_trainer *tr, const char *path, const char *ckpt, const moe_tokens *data,
                          const char *data_path, moe_err *err) {
    moe_tokenizer *t = NULL;
    const char *what = path ? path : "the checkpoint's tokenizer";
    if (path || ckpt[0]) {
        if (moe_checkpoint_tokenizer(ckpt, path, &t, err)) return -1;
    }
    char recorded[4200];
    snprintf(recorded, sizeof recorded, "%s: its recorded tokenizer", data_path);
    if (!t && data->tokenizer_len) {
        if (moe_tokenizer_parse(data->tokenizer, data->tokenizer_len, recorded, &t, err)) return -1;
        what = recorded;
    }
    if (!t) {
        if (tr->model->cfg.vocab_size != 257)
            fprintf(stderr, "moe train: warning: no tokenizer (%s records none and no --tokenizer "
                    "was given): generate and eval --task will refuse this model's vocabulary of "
                    "%d ids; give --tokenizer FILE, or prepare the data again with moe prepare, "
                    "which records it\n", data_path, tr->model->cfg.vocab_size);
        return 0;
    }
    int rc = 0;
    if (moe_tokenizer_vocab_size(t) > (uint32_t)tr->model->cfg.vocab_size)
        rc = moe_errf(err, "%s: tokenizer has %u ids, more than the model's vocab_size %d", what,
                      moe_tokenizer_vocab_size(t), tr->model->cfg.vocab_size);
    else
        rc = moe_tokenizer_serialize(t, &tr->tokenizer, err);
    moe_tokenizer_free(t);
    if (!rc && data->tokenizer_len && (data->tokenizer_len != tr->tokenizer.len ||
                                       memcmp(data->tokenizer, tr->tokenizer.data, tr->tokenizer.len)))
        fprintf(stderr, "moe train: warning: %s differs from the tokenizer %s was prepared with\n",
                what, data_path);
    return rc;
}

/* Where `--resume DIR` (without --out) continues: DIR itself, unless DIR is
 * a checkpoint folder RUN/checkpoints/step-N, which continues in RUN (never
 * a run nested inside the checkpoint) when it is RUN's newest, and is
 * refused otherwise, since going on in RUN from an older step would
 * discard the later ones. owner: RUN, or "" for DIR itself. */
static int resume_target(const char *dir, char *owner, size_t cap, moe_err *err) {
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

int cmd_train(int argc, char **argv) {
    const char *config = NULL, *model_dir = NULL, *resume = NULL, *data = NULL, *out = NULL;
    const char *tokenizer = NULL;
    const char *override_key[N_FLAG_KEYS], *override_flag[N_FLAG_KEYS];
    double override_val[N_FLAG_KEYS];
    size_t n_over = 0;
    int no_shuffle = 0, profile = 0;
    const char *analysis_data = NULL, *precision = NULL;
    long analysis_every = 0, analysis_tokens = 4096;
    const char *eval_data = NULL;
    long eval_every = 0, eval_tokens_max = 65536;
    struct option opts[16 + N_FLAG_KEYS + 1] = {  /* the last one, zero, ends the table */
        {"help", no_argument, 0, 'h'}, {"config", required_argument, 0, O_CONFIG},
        {"model", required_argument, 0, O_MODEL}, {"resume", required_argument, 0, O_RESUME},
        {"data", required_argument, 0, O_DATA}, {"out", required_argument, 0, O_OUT},
        {"tokenizer", required_argument, 0, O_TOKENIZER}, {"no-shuffle", no_argument, 0, O_NO_SHUFFLE},
        {"profile", no_argument, 0, O_PROFILE}, {"analysis-every", required_argument, 0, O_ANALYSIS_EVERY},
        {"analysis-tokens", required_argument, 0, O_ANALYSIS_TOKENS},
        {"analysis-data", required_argument, 0, O_ANALYSIS_DATA},
        {"precision", required_argument, 0, O_PRECISION},
        {"eval-every", required_argument, 0, O_EVAL_EVERY}, {"eval-data", required_argument, 0, O_EVAL_DATA},
        {"eval-tokens", required_argument, 0, O_EVAL_TOKENS}};
    for (size_t k = 0; k < N_FLAG_KEYS; k++)
        opts[16 + k] = (struct option){FLAG_KEYS[k].flag, required_argument, 0, FLAG_KEY0 + (int)k};
    signal(SIGPIPE, SIG_IGN);   /* `moe train ... | head`: a closed pipe must not end a run unsaved */
    cli_parser p;
    cli_begin(&p, "train", argc, argv, opts);
    for (int c; (c = cli_next(&p)) != -1;) {
        const char *v = p.value;
        int bad = 0;
        switch (c) {
        case 'h': help(stdout); return 0;
        case O_CONFIG: config = v; break;
        case O_MODEL: model_dir = v; break;
        case O_RESUME: resume = v; break;
        case O_DATA: data = v; break;
        case O_OUT: out = v; break;
        case O_TOKENIZER: tokenizer = v; break;
        case O_NO_SHUFFLE: no_shuffle = 1; break;
        case O_PROFILE: profile = 1; break;
        case O_ANALYSIS_EVERY: bad = cli_int(&p, v, 0, 1L << 40, &analysis_every); break;
        case O_ANALYSIS_TOKENS: bad = cli_int(&p, v, 1, 1L << 40, &analysis_tokens); break;
        case O_ANALYSIS_DATA: analysis_data = v; break;
        case O_EVAL_EVERY: bad = cli_int(&p, v, 0, 1L << 40, &eval_every); break;
        case O_EVAL_DATA: eval_data = v; break;
        case O_EVAL_TOKENS: bad = cli_int(&p, v, 0, 1L << 40, &eval_tokens_max); break;
        case O_PRECISION: bad = cli_precision("train", v); precision = v; break;
        default:
            if (c < FLAG_KEY0 || c >= FLAG_KEY0 + (int)N_FLAG_KEYS) return 2;
            size_t k = 0;  /* a repeated flag: the last one wins */
            while (k < n_over && strcmp(override_flag[k], FLAG_KEYS[c - FLAG_KEY0].flag)) k++;
            override_flag[k] = FLAG_KEYS[c - FLAG_KEY0].flag;
            override_key[k] = FLAG_KEYS[c - FLAG_KEY0].key;
            bad = cli_number(&p, v, FLAG_KEYS[c - FLAG_KEY0].whole, &override_val[k]);
            if (k == n_over) n_over++;
        }
        if (bad) return 2;
    }
    if (cli_positionals(&p, 0) < 0) return 2;
    if ((config != NULL) + (model_dir != NULL) + (resume != NULL) != 1) {
        fprintf(stderr, "moe train: give exactly one of --config, --model or --resume\n");
        return 2;
    }
    if (!data && !resume) { fprintf(stderr, "moe train: --data FILE is required\n"); return 2; }
    if (!out && !resume) { fprintf(stderr, "moe train: --out DIR is required\n"); return 2; }

    moe_err err;
    char owner[4096];
    if (resume && !out && resume_target(resume, owner, sizeof owner, &err)) {
        fprintf(stderr, "moe train: %s\n", err.msg);
        return 1;
    }
    if (resume && !out && owner[0]) out = owner;
    moe_config cfg;
    moe_model *model = NULL;
    moe_tokens tokens = {0};
    moe_trainer tr = {0};
    moe_tokens calib_tokens = {0}, eval_tokens = {0};
    moe_probe probe = {0};
    char ckpt[4096] = "", run_data[4096];
    int rc = 1, have_trainer = 0;
    /* across processes: setup failures are agreed on at each CHECKPOINT (no
     * other collective lies between two), so a rank that fails meets the
     * others in the next agreement and rank 0 prints one message */
    moe_comm *world = NULL;
    int setup = 1;
    if (moe_comm_world(&world, &err)) { fprintf(stderr, "moe train: %s\n", err.msg); return 1; }
    int rank0 = world->rank == 0, many = world->size > 1;
#define CHECKPOINT() do { if (moe_comm_agree(world, 0, &err)) goto agreed; } while (0)

    /* the config first: the memory check comes before the model is allocated */
    if (config) {
        if (moe_config_load(config, &cfg, &err)) goto fail;
    } else {
        if (moe_resolve_checkpoint(resume ? resume : model_dir, ckpt, sizeof ckpt, &err) ||
            moe_checkpoint_config(ckpt, &cfg, &err))
            goto fail;
    }
    moe_config run_cfg = cfg;   /* with --resume: the run's own, to name what the options change */
    for (size_t k = 0; k < n_over; k++)
        if (moe_config_set(&cfg, override_key[k], override_val[k], &err)) {
            fprintf(stderr, "moe train: option --%s: %s\n", override_flag[k], err.msg);
            rc = 2;
            goto done;
        }
    if (no_shuffle) cfg.shuffle = 0;
    if (precision) snprintf(cfg.precision, sizeof cfg.precision, "%s", precision);
    if (moe_config_finalize(&cfg, &err)) goto fail;
    /* auto is resolved once, here: the model and its checkpoints record
     * what it chose, so a resume, eval or score runs the same products */
    const char *prec_why;
    char chosen[sizeof cfg.precision];
    snprintf(chosen, sizeof chosen, "%s", moe_precision_resolve(cfg.precision, &prec_why));
    snprintf(cfg.precision, sizeof cfg.precision, "%s", chosen);
    if (!prec_why) prec_why = precision ? "asked for by --precision" : config ? "asked for by the config"
                                                                 : "the checkpoint's";
    /* across ranks with expert parallel, each rank holds its part of the
     * experts: part rank % EP of EP (its position in its group) */
    int parts = many ? cfg.expert_parallel : 1, part = world->rank % parts;
    moe_param_count pc;
    if (moe_model_count_params(&cfg, parts, &pc, &err) || check_memory(&cfg, pc.held, &err))
        goto fail;
    omp_set_num_threads(cfg.threads > 0 ? cfg.threads : omp_get_num_procs());
    if (config) {
        if (moe_model_create_part(&cfg, part, parts, &model, &err)) goto fail;
        moe_model_init(model, (uint64_t)cfg.seed);
    } else {
        moe_config saved;
        if (moe_checkpoint_config(ckpt, &saved, &err) ||
            moe_model_create_part(&saved, part, parts, &model, &err) ||
            moe_model_load_weights(model, ckpt, &err))
            goto fail;
        model->cfg = cfg;  /* training keys may differ; model keys come from the checkpoint */
        if (moe_model_set_precision(model, cfg.precision, &err)) goto fail;
    }
    cli_note_precision("train", model);

    if (!data) {  /* --resume RUN alone: the data the run recorded (checked against it on restore) */
        int found = moe_checkpoint_data(ckpt, run_data, sizeof run_data, &err);
        if (found < 0) goto fail;
        if (found > 0) {
            moe_errf(&err, "%s does not record its token file (written by an older moe): give --data FILE",
                     ckpt);
            goto fail;
        }
        if (access(run_data, R_OK)) {
            moe_errf(&err, "the run was trained on %s, which is no longer there (%s): give --data FILE "
                     "with the same tokens", run_data, strerror(errno));
            goto fail;
        }
        data = run_data;
    }
    if (moe_tokens_read(data, &tokens, &err)) goto fail;
    have_trainer = 1;  /* from here the trainer owns the model */
    if (moe_trainer_create(&tr, &cfg, model, &tokens, out ? out : resume, &err)) goto fail;
    if (rank0 && moe_trainer_claim(&tr, &err)) goto fail;  /* rank 0 is the one writer */
    if (open_validation(eval_every, eval_data, many, &cfg, &eval_tokens, &err)) goto fail;
    if (many && analysis_every) {
        moe_errf(&err, "--analysis-every is not available across processes yet: run it on one process");
        goto fail;
    }
    CHECKPOINT();
    if (many && train_check_same_setup(world, &cfg, tokens.n, &err)) goto fail;
    CHECKPOINT();
    if (moe_trainer_distribute(&tr, world, &err)) goto fail;
    CHECKPOINT();
    if (resume && (moe_trainer_restore(&tr, ckpt, &err) ||
                   train_resume_changes(&run_cfg, &cfg, tr.step, tr.loader.position, 0, &err)))
        goto fail;
    if (data == run_data) fprintf(stderr, "moe train: resuming on the run's data, %s (size and CRC-32 as recorded)\n", data);
    if (model_dir) {  /* ReMoE's lambda goes on from the checkpoint's, not from relu_lambda0 */
        float lambda;
        int found = moe_checkpoint_lambda(ckpt, &lambda, &err);
        if (found < 0) goto fail;
        if (found == 0) model->rs.lambda = lambda;
    }
    if (!resume && rank0) {
        /* a fresh run never mixes with an earlier one in the same directory */
        char existing[4096];
        moe_err ignored;
        if (!moe_resolve_checkpoint(tr.out_dir, existing, sizeof existing, &ignored)) {
            char ckdir[4200];
            snprintf(ckdir, sizeof ckdir, "%s/checkpoints", tr.out_dir);
            if (access(ckdir, F_OK))  /* a model (init, import), not a run: --resume cannot go on from it */
                moe_errf(&err, "%s holds a model, not a training run: train from it with --model %s "
                         "--out NEWDIR, or choose another --out", tr.out_dir, tr.out_dir);
            else
                moe_errf(&err, "%s already holds a run (%s): continue it with --resume %s, or "
                         "choose another --out", tr.out_dir, existing, tr.out_dir);
            goto fail;
        }
        if (moe_trainer_truncate_metrics(&tr, &err)) goto fail;
    }
    if (load_tokenizer(&tr, tokenizer, ckpt, &tokens, data, &err)) goto fail;
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
    CHECKPOINT();
    setup = 0;
    if (tr.step >= cfg.steps) {
        if (rank0) printf("moe train: already at step %ld of %d; nothing to do\n", tr.step, cfg.steps);
        rc = 0;
        goto done;
    }

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGHUP, on_signal);   /* a closed terminal or a dropped ssh session */
    double last_save = omp_get_wtime();   /* checkpoint_minutes counts from here */
    int tty = isatty(2) && !many;
    long first = tr.step, every = cfg.steps / 20 > 0 ? cfg.steps / 20 : 1;
    double elapsed = 0.0;
    size_t seen = 0;
    if (rank0 && many)
        fprintf(stderr, "moe train: %d ranks (data parallel %d, expert parallel %d%s), %d threads each\n",
                world->size, world->size, cfg.expert_parallel, cfg.zero_stage ? ", ZeRO-1" : "",
                omp_get_max_threads());
    if (rank0 && many && cfg.expert_parallel > 1) {
        if (cfg.rebalance_experts)
            fprintf(stderr, "moe train: experts placed on the ranks by load after the first step and every "
                    "%d steps (rebalance_experts)\n", cfg.rebalance_experts);
        else
            fprintf(stderr, "moe train: experts in contiguous blocks per rank (rebalance_experts 0)\n");
    }
    if (rank0 && model->n_params < pc.total)
        fprintf(stderr, "moe train: %zu parameters, %zu held by each rank (the routed experts divided "
                "among %d)\n", pc.total, model->n_params, parts);
    if (rank0 && !strcmp(model->cfg.precision, moe_model_precision(model)))  /* else the note said why */
        fprintf(stderr, "moe train: precision %s (%s)\n", moe_model_precision(model), prec_why);
    if (resume && rank0)  /* setup went through: say what the changed options do */
        train_resume_changes(&run_cfg, &cfg, first, tr.loader.position, 1, &err);
    if (rank0)
        fprintf(stderr, "moe train: %zu parameters, %d steps of %d x %d x %d tokens, %d threads, "
                "%s, out %s\n", pc.total, cfg.steps, cfg.batch_size, cfg.seq_len,
                cfg.grad_accum, omp_get_max_threads(), moe_model_precision(model), tr.out_dir);
    int bad_in_row = 0;
    long rolled_back_to = -1;
    double profiled_seconds = 0.0;
    long profiled_steps = 0;
    tr.prof.on = profile;
    double comm0[2];
    moe_trainer_comm_usage(&tr, &comm0[0], &comm0[1]);
    int stop = 0;
    while (tr.step < cfg.steps && !stop) {
        moe_step_stats st;
        if (moe_trainer_step(&tr, &st, &err) ||
            log_step(&tr, &st, eval_every, &eval_tokens, (size_t)eval_tokens_max, rank0, &err))
            goto fail;
        /* checkpoint_minutes: a checkpoint after the step that ends that long after the last */
        int due = cfg.checkpoint_minutes > 0 && omp_get_wtime() - last_save >= 60.0 * cfg.checkpoint_minutes;
        if (many) {  /* a signal seen by any rank stops every rank after the same step; one due, saves */
            double s[2] = {(double)stop_requested, (double)due};
            if (moe_comm_allreduce(world, s, 2, MOE_F64, &err)) goto fail;
            if (s[0] > 0 && !stop_requested) stop_requested = SIGTERM;
            due = s[1] > 0;
        }
        stop = stop_requested != 0;
        if (st.skipped && guard_non_finite(&tr, &st, &bad_in_row, &rolled_back_to, tty, &err)) goto fail;
        if (st.skipped) continue;
        if (st.poisoned) {
            if (guard_poisoned(&tr, &st, &rolled_back_to, tty, &err)) goto fail;
            bad_in_row = 0;
            continue;
        }
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
        if (rank0 && (tty || tr.step % every == 0 || tr.step == cfg.steps)) {
            char routing[96];
            console_routing(&cfg, &st, analysis_every ? probe.last_loss : NAN, routing, sizeof routing);
            fprintf(stderr, "%sstep %ld/%d  loss %.4f  lr %.2e%s  %.0f tok/s  ETA %s%s",
                    tty ? "\r\033[K" : "", tr.step, cfg.steps, st.loss, st.lr, routing,
                    (double)seen / elapsed, eta_s, tty ? "" : "\n");
        }
        if (((cfg.checkpoint_every && tr.step % cfg.checkpoint_every == 0) || due) && tr.step < cfg.steps &&
            !stop_requested) {
            if (moe_trainer_save(&tr, &err)) goto fail;
            last_save = omp_get_wtime();
        }
    }
    if (tty) fprintf(stderr, "\n");
    if (many && train_print_ranks(world, &tr, comm0, elapsed, tr.step - first, &err)) goto fail;
    if (moe_trainer_save(&tr, &err)) goto fail;
    if (rank0) moe_print_layer_activity(stderr, model, "moe train");
    if (profile && rank0) print_profile(&tr.prof, profiled_seconds, profiled_steps, tr.cfg.batch_size *
                               tr.cfg.seq_len * tr.cfg.grad_accum);
    if (!rank0)
        ;
    else if (stop_requested)
        fprintf(stderr, "moe train: stopped by signal %d%s at step %ld; checkpoint written, resume with "
                "--resume %s\n", (int)stop_requested,
                many ? " (mpirun passes Ctrl-C on as SIGTERM, 15, and then exits 1 itself)" : "", tr.step,
                tr.out_dir);
    else
        fprintf(stderr, "moe train: done, checkpoint %s/checkpoints/step-%08ld\n", tr.out_dir, tr.step);
    rc = stop_requested ? 128 + (int)stop_requested : 0;
    goto done;
fail:
    if (many && setup) {  /* meet the other ranks at their next agreement */
        moe_comm_agree(world, -1, &err);
        goto agreed;
    }
    fprintf(stderr, "%smoe train: %s\n", isatty(2) && !many ? "\n" : "", err.msg);
    if (many) {  /* a failure of this rank alone in training: end every rank */
        fprintf(stderr, "moe train: rank %d failed: ending all %d ranks\n", world->rank, world->size);
        world->ops->abort(world, 1);
    }
    rc = 1;
    goto done;
agreed:  /* every rank knows; rank 0 says it once */
    if (rank0) fprintf(stderr, "moe train: %s\n", err.msg);
    rc = 1;
done:
    if (have_trainer) moe_trainer_free(&tr);
    else moe_model_free(model);
    moe_tokens_free(&tokens);
    moe_tokens_free(&calib_tokens);
    moe_tokens_free(&eval_tokens);
    moe_probe_free(&probe);
    moe_comm_free(world);
#undef CHECKPOINT
    if (stop_requested && rc == 128 + (int)stop_requested) {
        /* Stopped by a signal with the checkpoint written and everything
         * freed: end now. exit() would run the libraries' static destructors
         * (oneDNN's caches), which crashed now and then right after a
         * signal-stopped ReLU run ("free(): invalid pointer", issue 26.4);
         * there is nothing left for them to do. */
        fflush(stdout);
        fflush(stderr);
        _exit(rc);
    }
    return rc;
}
