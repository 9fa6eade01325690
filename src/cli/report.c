/* report.c — `moe report`: one self-contained HTML page comparing runs
 * (src/analysis/report.c draws it; docs/EVAL.md describes it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "moe/analysis.h"
#include "moe/fileio.h"

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
    const char *out = NULL;
    const char **runs = calloc((size_t)argc, sizeof *runs);
    size_t n = 0;
    if (!runs) return 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { help(stdout); free(runs); return 0; }
        if (!strcmp(argv[i], "--out")) {
            if (!(out = cli_value("report", argc, argv, &i))) { free(runs); return 2; }
        } else if (!strncmp(argv[i], "--", 2)) {
            fprintf(stderr, "moe report: unknown option '%s' (see --help)\n", argv[i]);
            free(runs);
            return 2;
        } else {
            runs[n++] = argv[i];
        }
    }
    if (!n) { fprintf(stderr, "moe report: give at least one run directory\n"); free(runs); return 2; }
    moe_err err;
    moe_buf b = {0};
    char path[4096];
    int rc = 1;
    if (!out) {
        if (moe_path(path, sizeof path, &err, "%s/report.html", runs[0])) goto fail;
        out = path;
    }
    if (moe_report_html(runs, n, &b, &err)) goto fail;
    if (!b.data) { moe_errf(&err, "out of memory"); goto fail; }
    if (moe_write_file_atomic(out, b.data, b.len, &err)) goto fail;
    printf("moe report: wrote %s (%zu run%s, %.0f kB)\n", out, n, n > 1 ? "s" : "", b.len / 1024.0);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "moe report: %s\n", err.msg);
done:
    moe_buf_free(&b);
    free(runs);
    return rc;
}
