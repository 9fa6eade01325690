/* report.c — `moe report`: one self-contained HTML page comparing runs
 * (src/run/rundir.c reads their files, src/analysis/report_page.c draws
 * the page; docs/EVAL.md describes it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "moe/util/fileio.h"
#include "moe/run/rundir.h"

static void help(FILE *f) {
    fprintf(f,
        "usage: moe report RUN_DIR [RUN_DIR ...] [--out FILE.html]\n\n"
        "Writes one self-contained HTML file (inline SVG, no scripts, no network) that\n"
        "puts the runs side by side: loss curves, sparsity / lambda / regulariser with\n"
        "ReMoE's stages, per-layer sparsity, expert load, flip rate, and, where the run\n"
        "directory holds them, the results of `moe eval` (eval.json) and `moe analyze`\n"
        "(analysis.json). Reads RUN/metrics.jsonl and RUN/calibration.jsonl.\n\n"
        "  --out FILE.html   where to write (default: report.html in the first run)\n");
}

int cmd_report(int argc, char **argv) {
    enum { O_OUT = 256 };
    static const struct option opts[] = {
        {"help", no_argument, 0, 'h'}, {"out", required_argument, 0, O_OUT}, {0, 0, 0, 0}};
    const char *out = NULL;
    cli_parser p;
    cli_begin(&p, "report", argc, argv, opts);
    for (int c; (c = cli_next(&p)) != -1;) {
        switch (c) {
        case 'h': help(stdout); return 0;
        case O_OUT: out = p.value; break;
        default: return 2;
        }
    }
    /* the run directories: the positional arguments (getopt put them last) */
    const char **runs = (const char **)(argv + p.first_positional);
    size_t n = (size_t)(argc - p.first_positional);
    if (!n) { fprintf(stderr, "moe report: give at least one run directory\n"); return 2; }
    moe_err err;
    moe_buf b = {0};
    char path[4096];
    int rc = 1;
    if (!out) {
        if (moe_rundir_path(path, sizeof path, runs[0], MOE_RUN_REPORT, &err)) goto fail;
        out = path;
    }
    char stdout_path[32];
    out = cli_stdout_output(out, stdout_path, sizeof stdout_path);   /* "-": the page alone on stdout */
    if (moe_rundir_report(runs, n, &b, &err)) goto fail;
    if (!b.data) { moe_errf(&err, "out of memory"); goto fail; }
    if (moe_write_file_atomic(out, b.data, b.len, &err)) goto fail;
    printf("moe report: wrote %s (%zu run%s, %.0f kB)\n", out, n, n > 1 ? "s" : "", b.len / 1024.0);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "moe report: %s\n", err.msg);
done:
    moe_buf_free(&b);
    return rc;
}
