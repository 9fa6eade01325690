/* progress.c — progress of a long pass (eval, analyze) on stderr: on a
 * terminal one line redrawn at most ten times a second; otherwise (a log) a
 * line at most every 30 seconds, so that logs stay short. */
#include <omp.h>
#include <stdio.h>
#include <unistd.h>

#include "cli/cli.h"

void cli_progress_start(cli_progress *p, const char *cmd, const char *what) {
    p->cmd = cmd;
    p->what = what;
    p->tty = isatty(2);
    p->t0 = p->last = omp_get_wtime();
    p->shown = 0;
}

void cli_progress_fn(void *ctx, size_t done, size_t total) {
    cli_progress *p = ctx;
    double now = omp_get_wtime(), el = now - p->t0;
    int last = done >= total;
    if (!last && now - p->last < (p->tty ? 0.1 : 30.0)) return;
    if (last && !p->shown) return;  /* a short pass says nothing */
    p->last = now;
    p->shown = 1;
    double frac = total ? (double)done / (double)total : 1.0;
    double eta = frac > 0 ? el * (1.0 - frac) / frac : 0.0;
    fprintf(stderr, "%smoe %s: %s %3.0f%% (%zu/%zu batches, %.0fs, ETA %.0fs)%s", p->tty ? "\r\033[K" : "",
            p->cmd, p->what, 100.0 * frac, done, total, el, eta, p->tty && !last ? "" : "\n");
}
