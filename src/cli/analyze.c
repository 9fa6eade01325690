/* analyze.c — `moe analyze`: routing statistics of a model over a token file
 * (routed-token ratio per layer and expert, overall and per domain; active
 * experts against token frequency; the tokens each expert takes most; per-layer
 * sparsity): a summary on the terminal and JSON (docs/EVAL.md, "analysis.json"). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "moe/analysis/analysis.h"
#include "moe/run/rundir.h"

static void help(FILE *f) {
    fprintf(f,
        "usage: moe analyze --model DIR --data FILE.tok [--out FILE.json] [options]\n\n"
        "  --model DIR        model or run directory (a run uses its newest checkpoint)\n"
        "  --data FILE.tok    token file; its document table gives the domains\n"
        "  --out FILE.json    where to write the analysis (default: DIR/analysis.json\n"
        "                     when DIR is a run directory, i.e. holds metrics.jsonl;\n"
        "                     '-': stdout, the summary then goes to stderr)\n"
        "  --max-tokens N     analyse about N tokens in rows spread evenly over the file,\n"
        "                     each domain its share (default 65536; 0: all)\n"
        "  --top N            tokens listed per expert (default 10)\n"
        "  --min-count N      only ids seen at least N times are listed (default 5)\n"
        "  --seq T  --batch B rows of T tokens, B per forward (default: seq_len, 8)\n"
        "  --tokenizer FILE   to decode tokens (default: the checkpoint's; else ids)\n"
        "  --threads N        OpenMP threads (default: all cores)\n");
}

typedef struct analyze_opts {
    const char *model_dir, *data, *out, *tok_path;
    long max_tokens, top, min_count, seq, batch, threads;
} analyze_opts;

/* 0 to go on, 1 after --help, 2 on a usage error (its line printed). */
static int parse(int argc, char **argv, analyze_opts *o) {
    enum { O_MODEL = 256, O_DATA, O_OUT, O_TOKENIZER, O_MAX_TOKENS, O_TOP, O_MIN_COUNT, O_SEQ, O_BATCH, O_THREADS };
    static const struct option opts[] = {
        {"help", no_argument, 0, 'h'}, {"model", required_argument, 0, O_MODEL},
        {"data", required_argument, 0, O_DATA}, {"out", required_argument, 0, O_OUT},
        {"tokenizer", required_argument, 0, O_TOKENIZER}, {"max-tokens", required_argument, 0, O_MAX_TOKENS},
        {"top", required_argument, 0, O_TOP}, {"min-count", required_argument, 0, O_MIN_COUNT},
        {"seq", required_argument, 0, O_SEQ}, {"batch", required_argument, 0, O_BATCH},
        {"threads", required_argument, 0, O_THREADS}, {0, 0, 0, 0}};
    cli_parser p;
    cli_begin(&p, "analyze", argc, argv, opts);
    for (int c; (c = cli_next(&p)) != -1;) {
        const char *v = p.value;
        int bad = 0;
        switch (c) {
        case 'h': help(stdout); return 1;
        case O_MODEL: o->model_dir = v; break;
        case O_DATA: o->data = v; break;
        case O_OUT: o->out = v; break;
        case O_TOKENIZER: o->tok_path = v; break;
        case O_MAX_TOKENS: bad = cli_int(&p, v, 0, 1L << 40, &o->max_tokens); break;
        case O_TOP: bad = cli_int(&p, v, 0, 1000, &o->top); break;
        case O_MIN_COUNT: bad = cli_int(&p, v, 1, 1L << 40, &o->min_count); break;
        case O_SEQ: bad = cli_int(&p, v, 1, 1 << 20, &o->seq); break;
        case O_BATCH: bad = cli_int(&p, v, 1, 4096, &o->batch); break;
        case O_THREADS: bad = cli_int(&p, v, 1, 1024, &o->threads); break;
        default: return 2;
        }
        if (bad) return 2;
    }
    if (cli_positionals(&p, 0) < 0) return 2;
    if (!o->model_dir || !o->data) {
        fprintf(stderr, "moe analyze: --model DIR and --data FILE are required\n");
        return 2;
    }
    return 0;
}

/* The summary on stdout: per router its sparsity, active experts, share of
 * tokens on no expert and routed-token ratios; then active experts against
 * token frequency. */
static int print_summary(const moe_route_stats *st, const char *ckpt, const moe_model *m, const char *data,
                         moe_err *err) {
    char read[256];
    moe_read_info_text(&st->read, read, sizeof read);
    printf("moe analyze: %s (%s router) over %s (%s)\n\n", ckpt, m->cfg.router, data, read);
    printf("  %-10s %8s %7s %9s  routed-token ratio per expert\n", "layer", "sparsity", "active", "no expert");
    char idle_layers[256] = "";
    for (size_t s = 0; s < st->n_sites; s++) {
        double act = 0.0, idle = moe_no_expert_fraction(st, s);
        for (size_t e = 0; e < st->sites[s].E; e++) act += moe_routed_ratio(st, s, -1, e);
        char name[32];
        snprintf(name, sizeof name, st->sites[s].which ? "%d.%d" : "%d", st->sites[s].layer, st->sites[s].which);
        printf("  %-10s %8.4f %7.3f %9.3f ", name, 1.0 - act / (double)st->sites[s].E, act, idle);
        for (size_t e = 0; e < st->sites[s].E && e < 16; e++) printf(" %.3f", moe_routed_ratio(st, s, -1, e));
        printf("%s\n", st->sites[s].E > 16 ? " ..." : "");
        size_t used = strlen(idle_layers);
        if (idle > MOE_NO_EXPERT_WARN && used + 40 < sizeof idle_layers)
            snprintf(idle_layers + used, sizeof idle_layers - used, "%s%s (%.0f%%)", used ? ", " : "", name,
                     100.0 * idle);
    }
    if (idle_layers[0])
        printf("\n  warning: most tokens use no expert in layer %s: their FFN output is zero there "
               "(only the residual passes)\n", idle_layers);
    moe_freq_bucket *fb;
    long nb = moe_freq_buckets(st, &fb, err);
    if (nb < 0) return -1;
    printf("\n  %-16s %7s %11s  active experts per router\n", "token frequency", "ids", "occurrences");
    for (long i = 0; i < nb; i++)
        if (fb[i].types)
            printf("  [%6.0f, %6.0f) %7zu %11.0f  %.3f\n", fb[i].lo, fb[i].hi, fb[i].types, fb[i].occurrences,
                   fb[i].active);
    moe_freq_buckets_free(fb, nb);
    return 0;
}

int cmd_analyze(int argc, char **argv) {
    analyze_opts o = {.max_tokens = 65536, .top = 10, .min_count = 5, .batch = 8};
    int rc = parse(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : 2;
    if (o.threads) omp_set_num_threads((int)o.threads);
    char stdout_path[32], ckpt[4096], out_default[4200];
    const char *out = cli_stdout_output(o.out, stdout_path, sizeof stdout_path);
    moe_err err;
    moe_model *m = NULL;
    moe_tokenizer *tok = NULL;
    moe_tokens t = {0};
    moe_route_stats st = {0};
    rc = 1;
    if (moe_resolve_checkpoint(o.model_dir, ckpt, sizeof ckpt, &err) || moe_model_load(ckpt, &m, &err)) goto fail;
    if (!out && moe_rundir_is_run(o.model_dir)) {  /* a run directory gets analysis.json */
        if (moe_rundir_path(out_default, sizeof out_default, o.model_dir, MOE_RUN_ANALYSIS, &err)) goto fail;
        out = out_default;
    }
    if (out && out != stdout_path && cli_check_writable(out, "--out", &err)) goto fail;
    if (moe_tokens_read(o.data, &t, &err)) goto fail;
    cli_warn_data_tokenizer("analyze", ckpt, o.tok_path, &t, o.data);
    if (moe_checkpoint_tokenizer(ckpt, o.tok_path, &tok, &err)) goto fail;
    size_t T = o.seq ? (size_t)o.seq : (size_t)m->cfg.seq_len;
    fprintf(stderr, "moe analyze: %s over %s ...\n", ckpt, o.data);
    cli_progress pr;
    cli_progress_start(&pr, "analyze", o.data);
    if (moe_analyze_tokens(m, &t, (size_t)o.batch, T, (size_t)o.max_tokens, &st,
                           &(moe_progress){cli_progress_fn, &pr}, &err)) {
        moe_err_prefix(&err, "%s", o.data);
        goto fail;
    }
    if (st.n_sites == 0) {
        moe_errf(&err, "%s has no routed layers (ffn \"%s\"): nothing to analyse", ckpt, m->cfg.ffn);
        goto fail;
    }
    if (print_summary(&st, ckpt, m, o.data, &err)) goto fail;
    moe_analysis_info info = {o.model_dir, ckpt, o.data, &m->cfg, (size_t)o.top, (size_t)o.min_count, tok,
                              t.n_domains ? t.domain_names : NULL};
    if (out) {
        if (moe_analysis_write(out, &info, &st, &err)) goto fail;
        if (out != stdout_path) printf("\nmoe analyze: wrote %s\n", out);
    } else {
        printf("\n(give --out FILE.json to keep the full analysis)\n");
    }
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "moe analyze: %s\n", err.msg);
done:
    moe_route_stats_free(&st);
    moe_tokens_free(&t);
    moe_tokenizer_free(tok);
    moe_model_free(m);
    return rc;
}
