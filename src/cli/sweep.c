/* sweep.c — `moe sweep --grid FILE`: the options and what the user sees of
 * a sweep (src/run/sweep.c runs it, docs/SWEEP.md): the list of runs and
 * their states (--dry-run), one progress line per run with an ETA for the
 * grid, the summary table, and Ctrl-C or SIGTERM passed on to the run in
 * progress, which stops with a checkpoint. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "moe/run/sweep.h"

static void help(FILE *f) {
    fprintf(f,
        "usage: moe sweep --grid FILE.json [--dry-run] [--aggregate]\n\n"
        "  --grid FILE    the grid: configs x seeds, data, evaluation, baseline\n"
        "                 (format in docs/SWEEP.md)\n"
        "  --dry-run      list every run and its state (done, interrupted, new); run nothing\n"
        "  --aggregate    only aggregate the finished runs into OUT/summary.json and .md\n\n"
        "Runs OUT/NAME/seed-S for every run and seed, one at a time, each as\n"
        "`moe train` (its output in RUN/train.log) then `moe eval` on eval_data\n"
        "(RUN/eval.log, RUN/eval.json); RUN/sweep.json marks it done. Rerunning the\n"
        "same command skips finished runs and resumes an interrupted one from its\n"
        "last checkpoint (Ctrl-C or SIGTERM stops the run in progress with a\n"
        "checkpoint). Finally writes OUT/summary.json (mean, std over seeds; paired\n"
        "differences against \"baseline\"), OUT/summary.md, and OUT/report.html (moe report\n"
        "over the first seed of every run, with the summary).\n");
}

/* The sweep a signal is passed on to (signal handlers see only globals). */
static moe_sweep *volatile signalled = NULL;

static void on_signal(int sig) {
    moe_sweep *s = signalled;
    if (!s) return;
    s->stop = sig;
    if (s->child > 0) kill(s->child, sig);
}

static void fmt_dur(char *out, size_t cap, double s) {
    if (s < 60) snprintf(out, cap, "%.0fs", s);
    else if (s < 3600) snprintf(out, cap, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(out, cap, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

/* Counts the runs left to do; with dry, lists every run and its state. */
static int list_runs(const moe_sweep *s, int dry, size_t *left, moe_err *err) {
    *left = 0;
    for (size_t r = 0; r < s->n_runs; r++)
        for (size_t k = 0; k < s->n_seeds; k++) {
            char dir[4096];
            if (moe_sweep_dir(s, r, k, dir, sizeof dir, err)) return -1;
            moe_run_state st = moe_run_state_of(dir);
            *left += st != MOE_RUN_DONE;
            if (dry)
                printf("%-40s %s\n", dir, st == MOE_RUN_DONE ? "done" : st == MOE_RUN_INTERRUPTED ? "interrupted" : "new");
        }
    return 0;
}

/* The line of a run finished here: how long it took, its headline, and the
 * grid's ETA. */
static void say_finished(const moe_sweep_outcome *o, size_t k, size_t total, const char *name, long seed,
                         size_t left, double eta) {
    char took[32], when[32], head[64] = "";
    fmt_dur(took, sizeof took, o->seconds);
    fmt_dur(when, sizeof when, eta);
    const char *hk;
    double hl = moe_run_headline(&o->metrics, &hk);
    if (isfinite(hl)) snprintf(head, sizeof head, ", %s %.4f", hk, hl);
    fprintf(stderr, "moe sweep: [%zu/%zu] %s seed %ld: %s in %s%s | %zu left, ETA %s\n", k, total, name, seed,
            o->was == MOE_RUN_INTERRUPTED ? "resumed and finished" : "finished", took, head, left, when);
}

/* Every run of the grid, in order, until a signal stops one; a line each. */
static int run_all(moe_sweep *s, size_t left, size_t *busy, moe_err *err) {
    size_t total = s->n_runs * s->n_seeds, k = 0, executed = 0;
    double spent = 0.0;
    for (size_t r = 0; r < s->n_runs && !s->stop; r++)
        for (size_t j = 0; j < s->n_seeds && !s->stop; j++) {
            const char *name = s->runs[r].name;
            long seed = s->seeds[j];
            moe_sweep_outcome o;
            k++;
            if (moe_sweep_run_one(s, r, j, &o, err)) return -1;
            switch (o.result) {
            case MOE_SWEEP_DONE_EARLIER:
                fprintf(stderr, "moe sweep: [%zu/%zu] %s seed %ld: done earlier, skipped\n", k, total, name, seed);
                break;
            case MOE_SWEEP_BUSY:
                fprintf(stderr, "moe sweep: [%zu/%zu] %s seed %ld: another sweep is running it, skipped\n", k,
                        total, name, seed);
                (*busy)++;
                break;
            case MOE_SWEEP_DONE_ELSEWHERE: left--; break;
            case MOE_SWEEP_STOPPED:
                fprintf(stderr, "moe sweep: [%zu/%zu] %s seed %ld: stopped by signal %d (checkpoint kept); "
                        "run the same command to continue\n", k, total, name, seed, (int)s->stop);
                return 0;
            case MOE_SWEEP_FINISHED:
                spent += o.seconds;
                executed++;
                left--;
                say_finished(&o, k, total, name, seed, left, spent / (double)executed * (double)left);
                break;
            }
        }
    return 0;
}

/* summary.json and .md (the table on stdout), then report.html. */
static int aggregate(moe_sweep *s, moe_err *err) {
    moe_buf md;
    if (moe_sweep_aggregate(s, &md, err)) return -1;
    fwrite(md.data, 1, md.len, stdout);
    printf("moe sweep: wrote %s/summary.json and %s/summary.md\n", s->out, s->out);
    moe_buf_free(&md);
    int rc = moe_sweep_report(s, err);
    if (rc == 2) fprintf(stderr, "moe sweep: the report failed (see %s/report.log); the summary is written\n", s->out);
    else if (rc == 1) fprintf(stderr, "moe sweep: wrote %s/report.html\n", s->out);
    return rc < 0 ? -1 : 0;
}

int cmd_sweep(int argc, char **argv) {
    enum { O_GRID = 256, O_DRY_RUN, O_AGGREGATE };
    static const struct option opts[] = {
        {"help", no_argument, 0, 'h'}, {"grid", required_argument, 0, O_GRID},
        {"dry-run", no_argument, 0, O_DRY_RUN}, {"aggregate", no_argument, 0, O_AGGREGATE}, {0, 0, 0, 0}};
    const char *grid_path = NULL;
    int dry = 0, agg_only = 0;
    cli_parser p;
    cli_begin(&p, "sweep", argc, argv, opts);
    for (int c; (c = cli_next(&p)) != -1;) {
        switch (c) {
        case 'h': help(stdout); return 0;
        case O_GRID: grid_path = p.value; break;
        case O_DRY_RUN: dry = 1; break;
        case O_AGGREGATE: agg_only = 1; break;
        default: return 2;
        }
    }
    if (cli_positionals(&p, 0) < 0) return 2;
    if (!grid_path) { fprintf(stderr, "moe sweep: --grid FILE is required\n"); return 2; }
    moe_err err;
    moe_sweep *s = calloc(1, sizeof *s);
    size_t left = 0, busy = 0;
    int rc = 1;
    if (!s) { fprintf(stderr, "moe sweep: out of memory\n"); return 1; }
    /* runs that trained with another config are refused, and every config
     * is checked, before anything runs */
    if (moe_sweep_load(s, grid_path, &err) || moe_sweep_check(s, &err) || list_runs(s, dry, &left, &err)) goto fail;
    if (dry) { printf("moe sweep: %zu runs, %zu to do\n", s->n_runs * s->n_seeds, left); rc = 0; goto done; }
    if (!agg_only) {
        signalled = s;
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
        if (run_all(s, left, &busy, &err)) goto fail;
        if (s->stop) { rc = 128 + (int)s->stop; goto done; }
        if (busy)
            fprintf(stderr, "moe sweep: %zu runs are with another sweep; the last one to finish aggregates "
                    "(or run --aggregate)\n", busy);
    }
    if (aggregate(s, &err)) goto fail;
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "moe sweep: %s\n", err.msg);
    rc = 1;
done:
    moe_sweep_free(s);
    free(s);
    return rc;
}
