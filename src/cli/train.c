/* train.c — `moe train` as a user drives it: its options and its console
 * (live progress, the lines of setup and of the end, a clean stop on
 * SIGINT / SIGTERM / SIGHUP, whose handler sets the flag the session reads).
 * The run itself (setup, guards, validation, checkpoints, the ranks'
 * agreement) is the library's session, src/run/session.c. Started by
 * mpirun it trains across the ranks (docs/DISTRIBUTED.md): setup errors are
 * agreed on and reported once by rank 0, rank 0 prints and writes. */
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/stop_signals.h"
#include "moe/analysis/analysis.h"
#include "moe/comm/comm_mpi.h"
#include "moe/moe/router.h"
#include "moe/run/session.h"

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
        "                    auto: bf16 where the CPU has AMX, else fp32)\n"
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

static volatile sig_atomic_t stop_requested = 0;

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

/* The command line: the session's options and the overrides they point at. */
typedef struct train_args {
    moe_session_opts o;
    moe_session_override over[N_FLAG_KEYS];
} train_args;

/* One option's value into a (c: what cli_next returned). 0, or 2 (a
 * message was printed). */
static int take_option(cli_parser *p, int c, train_args *a) {
    moe_session_opts *o = &a->o;
    const char *v = p->value;
    switch (c) {
    case O_CONFIG: o->config = v; return 0;
    case O_MODEL: o->model_dir = v; return 0;
    case O_RESUME: o->resume = v; return 0;
    case O_DATA: o->data = v; return 0;
    case O_OUT: o->out = v; return 0;
    case O_TOKENIZER: o->tokenizer = v; return 0;
    case O_NO_SHUFFLE: o->no_shuffle = 1; return 0;
    case O_PROFILE: o->profile = 1; return 0;
    case O_ANALYSIS_EVERY: return cli_int(p, v, 0, 1L << 40, &o->analysis_every) ? 2 : 0;
    case O_ANALYSIS_TOKENS: return cli_int(p, v, 1, 1L << 40, &o->analysis_tokens) ? 2 : 0;
    case O_ANALYSIS_DATA: o->analysis_data = v; return 0;
    case O_EVAL_EVERY: return cli_int(p, v, 0, 1L << 40, &o->eval_every) ? 2 : 0;
    case O_EVAL_DATA: o->eval_data = v; return 0;
    case O_EVAL_TOKENS: return cli_int(p, v, 0, 1L << 40, &o->eval_tokens) ? 2 : 0;
    case O_PRECISION: o->precision = v; return cli_precision("train", v) ? 2 : 0;
    }
    if (c < FLAG_KEY0 || c >= FLAG_KEY0 + (int)N_FLAG_KEYS) return 2;
    size_t k = 0, f = (size_t)(c - FLAG_KEY0);  /* a repeated flag: the last one wins */
    while (k < o->n_overrides && strcmp(a->over[k].flag, FLAG_KEYS[f].flag)) k++;
    a->over[k].flag = FLAG_KEYS[f].flag;
    a->over[k].key = FLAG_KEYS[f].key;
    if (k == o->n_overrides) o->n_overrides++;
    return cli_number(p, v, FLAG_KEYS[f].whole, &a->over[k].value) ? 2 : 0;
}

/* Parses the command line into a: -1 to go on, else the exit status (0
 * after --help, 2 after a usage message). */
static int parse_args(int argc, char **argv, train_args *a) {
    memset(a, 0, sizeof *a);
    a->o.overrides = a->over;
    a->o.analysis_tokens = 4096;
    a->o.eval_tokens = 65536;
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
    cli_parser p;
    cli_begin(&p, "train", argc, argv, opts);
    for (int c; (c = cli_next(&p)) != -1;) {
        if (c == 'h') { help(stdout); return 0; }
        if (take_option(&p, c, a)) return 2;
    }
    if (cli_positionals(&p, 0) < 0) return 2;
    const moe_session_opts *o = &a->o;
    if ((o->config != NULL) + (o->model_dir != NULL) + (o->resume != NULL) != 1) {
        fprintf(stderr, "moe train: give exactly one of --config, --model or --resume\n");
        return 2;
    }
    if (!o->data && !o->resume) { fprintf(stderr, "moe train: --data FILE is required\n"); return 2; }
    if (!o->out && !o->resume) { fprintf(stderr, "moe train: --out DIR is required\n"); return 2; }
    return -1;
}

/* The console: on a terminal (one process) the step line is redrawn in
 * place, and every other line first clears it. */
typedef struct console {
    int tty;
} console;

/* The session's lines (opts.say). */
static void say(void *ctx, const char *line) {
    const console *con = ctx;
    fprintf(stderr, "%smoe train: %s\n", con->tty ? "\r\033[K" : "", line);
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

/* Before the first step (rank 0): how the run is spread over the ranks,
 * its precision, what a resume's changed options do, and its size. */
static void print_setup(const moe_session *s) {
    const moe_config *c = s->tr.cfg;
    const moe_model *model = s->model;
    int size = s->opts.world->size;
    if (!s->rank0) return;
    if (s->many)
        fprintf(stderr, "moe train: %d ranks (data parallel %d, expert parallel %d%s), %d threads each\n",
                size, size, c->expert_parallel, c->zero_stage ? ", ZeRO-1" : "", omp_get_max_threads());
    if (s->many && c->expert_parallel > 1) {
        if (c->rebalance_experts)
            fprintf(stderr, "moe train: experts placed on the ranks by load after the first step and every "
                    "%d steps (rebalance_experts)\n", c->rebalance_experts);
        else
            fprintf(stderr, "moe train: experts in contiguous blocks per rank (rebalance_experts 0)\n");
    }
    if (model->n_params < s->total_params)
        fprintf(stderr, "moe train: %zu parameters, %zu held by each rank (the routed experts divided "
                "among %d)\n", s->total_params, model->n_params, s->parts);
    if (!strcmp(c->precision, moe_model_precision(model)))  /* else cli_note_precision said why */
        fprintf(stderr, "moe train: precision %s (%s)\n", moe_model_precision(model), s->precision_why);
    moe_session_say_changes(s);  /* setup went through: say what the changed options do */
    fprintf(stderr, "moe train: %zu parameters, %d steps of %d x %d x %d tokens, %d threads, %s, out %s\n",
            s->total_params, c->steps, c->batch_size, c->seq_len, c->grad_accum, omp_get_max_threads(),
            moe_model_precision(model), s->tr.out_dir);
}

/* A step's line (rank 0): redrawn on a terminal, else 20 in a run and the last. */
static void print_step(const moe_session *s, const moe_session_event *ev, const console *con) {
    const moe_config *c = s->tr.cfg;
    long step = s->tr.step, every = c->steps / 20 > 0 ? c->steps / 20 : 1;
    if (!s->rank0 || !(con->tty || step % every == 0 || step == c->steps)) return;
    double eta = s->seconds / (double)(step - s->first_step) * (double)(c->steps - step);
    char eta_s[32], routing[96];
    format_duration(eta_s, sizeof eta_s, eta);
    console_routing(c, &ev->st, ev->calib_loss, routing, sizeof routing);
    fprintf(stderr, "%sstep %ld/%d  loss %.4f  lr %.2e%s  %.0f tok/s  ETA %s%s", con->tty ? "\r\033[K" : "",
            step, c->steps, ev->st.loss, ev->st.lr, routing, (double)s->tokens_seen / s->seconds, eta_s,
            con->tty ? "" : "\n");
}

/* Across ranks, after the last step: rank 0 prints each rank's share of
 * time in collectives, bytes sent per step and peak memory (bench/scaling
 * reads this line). Collective. */
static int print_ranks(const moe_session *s, moe_err *err) {
    size_t P = (size_t)s->opts.world->size;
    long steps = s->tr.step - s->first_step;
    double *all = moe_calloc(4 * P, sizeof(double), err);
    if (!all || moe_session_rank_usage(s, all, err)) { free(all); return -1; }
    if (s->rank0 && steps > 0) {
        fprintf(stderr, "moe train: per rank: collectives");
        for (size_t r = 0; r < P; r++) fprintf(stderr, " %.1f%%", 100.0 * all[4 * r] / fmax(all[4 * r + 1], 1e-9));
        fprintf(stderr, " of the step time; sent per step");
        for (size_t r = 0; r < P; r++) fprintf(stderr, " %.3f MB", all[4 * r + 2] / (double)steps / 1e6);
        fprintf(stderr, "; peak memory");
        for (size_t r = 0; r < P; r++) fprintf(stderr, " %.1f MiB", all[4 * r + 3] / 1048576.0);
        fprintf(stderr, "\n");
    }
    free(all);
    return 0;
}

/* After the last checkpoint (rank 0): the layers' activity, the profile,
 * and how the run ended. */
static void print_end(const moe_session *s) {
    const moe_config *c = s->tr.cfg;
    if (!s->rank0) return;
    moe_print_layer_activity(stderr, s->model, "moe train");
    if (s->opts.profile)
        print_profile(&s->tr.prof, s->profiled_seconds, s->profiled_steps,
                      c->batch_size * c->seq_len * c->grad_accum);
    if (stop_requested)
        fprintf(stderr, "moe train: stopped by signal %d%s at step %ld; checkpoint written, resume with "
                "--resume %s\n", (int)stop_requested,
                s->many ? " (mpirun passes Ctrl-C on as SIGTERM, 15, and then exits 1 itself)" : "", s->tr.step,
                s->tr.out_dir);
    else
        fprintf(stderr, "moe train: done, checkpoint %s/checkpoints/step-%08ld\n", s->tr.out_dir, s->tr.step);
}

/* A failure after setup: this rank says why, and across ranks ends them all. */
static int fail(const moe_session *s, const console *con, const moe_err *err) {
    moe_comm *world = s->opts.world;
    fprintf(stderr, "%smoe train: %s\n", con->tty ? "\n" : "", err->msg);
    if (s->many) {
        fprintf(stderr, "moe train: rank %d failed: ending all %d ranks\n", world->rank, world->size);
        world->ops->abort(world, 1);
    }
    return 1;
}

/* The steps, the last checkpoint and the closing lines: the exit status. */
static int train(moe_session *s, const console *con) {
    moe_err err;
    cli_stop_signals_arm(&stop_requested);  /* SIGINT, SIGTERM, SIGHUP (a closed terminal) */
    print_setup(s);
    while (!moe_session_finished(s)) {
        moe_session_event ev;
        if (moe_session_step(s, &ev, &err)) return fail(s, con, &err);
        if (ev.trained) print_step(s, &ev, con);
    }
    if (con->tty) fprintf(stderr, "\n");
    if ((s->many && print_ranks(s, &err)) || moe_session_close(s, &err)) return fail(s, con, &err);
    print_end(s);
    return stop_requested ? 128 + (int)stop_requested : 0;
}

/* Opens the run: -1 to go on, else the exit status (an error printed once
 * across ranks; 0 when the run has nothing left to do). */
static int start(moe_session *s, const moe_session_opts *o, const console *con) {
    moe_err err;
    int rc = moe_session_open(s, o, &err);
    if (rc == MOE_SESSION_USAGE) {
        fprintf(stderr, "moe train: %s\n", err.msg);
        return 2;
    }
    if (rc) {
        if (!s->quiet) fprintf(stderr, "%smoe train: %s\n", con->tty ? "\n" : "", err.msg);
        return 1;
    }
    cli_note_precision("train", s->model);
    if (!moe_session_finished(s)) return -1;
    if (s->rank0) printf("moe train: already at step %ld of %d; nothing to do\n", s->tr.step, s->tr.cfg->steps);
    return 0;
}

int cmd_train(int argc, char **argv) {
    moe_err err;
    if (cli_stop_signals_block(&err)) { fprintf(stderr, "moe train: %s\n", err.msg); return 1; }
    signal(SIGPIPE, SIG_IGN);   /* `moe train ... | head`: a closed pipe must not end a run unsaved */
    train_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0) return rc;
    moe_comm *world = NULL;
    if (moe_comm_world(&world, &err)) { fprintf(stderr, "moe train: %s\n", err.msg); return 1; }
    console con = {isatty(2) && world->size == 1};
    a.o.world = world;
    a.o.stop = &stop_requested;
    a.o.say = say;
    a.o.say_ctx = &con;
    moe_session s;
    rc = start(&s, &a.o, &con);
    if (rc < 0) rc = train(&s, &con);
    moe_session_free(&s);
    moe_comm_free(world);
    return rc;
}
