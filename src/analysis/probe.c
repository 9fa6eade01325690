/* probe.c — the training-time calibration probe (`moe train
 * --analysis-every N`): a fixed token set forwarded in eval mode every N
 * steps, giving its loss, per-layer sparsity and the flip rate of the routing
 * masks against the previous measurement (METHOD §3). One JSON line per
 * measurement in RUN/calibration.jsonl (docs/EVAL.md). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "moe/analysis/analysis.h"
#include "moe/util/fileio.h"
#include "moe/util/json.h"

int moe_probe_init(moe_probe *p, const moe_tokens *t, size_t n_tokens, size_t B, size_t T,
                   const char *path, moe_err *err) {
    memset(p, 0, sizeof *p);
    p->last_loss = NAN;
    if (t->n < T + 1)
        return moe_errf(err, "the calibration data has %zu tokens, fewer than one row of %zu + 1", t->n, T);
    size_t rows = n_tokens / T;
    if (rows == 0) rows = 1;
    if (rows > (t->n - 1) / T) rows = (t->n - 1) / T;
    p->rows = rows;
    p->B = B ? B : 1;
    p->T = T;
    if (moe_path(p->path, sizeof p->path, err, "%s", path)) return -1;
    p->inputs = moe_malloc(rows * T * sizeof(int), err);
    p->targets = p->inputs ? moe_malloc(rows * T * sizeof(int), err) : NULL;
    if (!p->targets) { moe_probe_free(p); return -1; }
    for (size_t i = 0; i < rows * T; i++) {
        p->inputs[i] = (int)moe_token(t, i);
        p->targets[i] = (int)moe_token(t, i + 1);
    }
    moe_tokens_release(t, 0, rows * T + 1);
    return 0;
}

void moe_probe_free(moe_probe *p) {
    free(p->inputs);
    free(p->targets);
    free(p->prev);
    free(p->cur);
    memset(p, 0, sizeof *p);
}

/* The measurement; write 0 only keeps the routing mask (moe_probe_prime). */
static int measure(moe_probe *p, moe_model *m, long step, int write, moe_err *err) {
    moe_site sites[256];
    size_t ns = 0, off[257] = {0};
    double nll = 0.0, active[256] = {0}, flips[256] = {0};
    int training = m->training, rc = 0;
    m->training = 0;
    for (size_t r = 0; r < p->rows && !rc; r += p->B) {
        size_t br = p->rows - r < p->B ? p->rows - r : p->B, N = br * p->T;
        double loss;
        if ((rc = moe_model_forward(m, p->inputs + r * p->T, p->targets + r * p->T, br, p->T,
                                    &loss, NULL, err)))
            break;
        nll += loss * (double)N;
        if (r == 0) {
            ns = moe_routing_sites(m, sites, 256);
            if (ns > 256) { rc = moe_errf(err, "more than 256 routers"); break; }
            for (size_t s = 0; s < ns; s++) off[s + 1] = off[s] + p->rows * p->T * sites[s].E;
            if (!p->cur && off[ns]) {
                p->mask_len = off[ns];
                p->cur = moe_calloc(p->mask_len, 1, err);
                p->prev = p->cur ? moe_calloc(p->mask_len, 1, err) : NULL;
                if (!p->prev) { rc = -1; break; }
            } else if (off[ns] != p->mask_len) {
                rc = moe_errf(err, "the routers changed shape between measurements");
                break;
            }
        }
        for (size_t s = 0; s < ns; s++) {
            size_t n, E = sites[s].E;
            const float *g = moe_site_gates(m, &sites[s], &n);
            if (!g || n != N) { rc = moe_errf(err, "layer %d: no routing read-out", sites[s].layer); break; }
            uint8_t *mask = p->cur + off[s] + r * p->T * E;
            moe_mask_from_gates(g, N, E, mask);
            for (size_t i = 0; i < N * E; i++) active[s] += mask[i];
        }
    }
    m->training = training;
    if (rc) return rc;

    size_t tokens = p->rows * p->T;
    double all_active = 0.0, all_pairs = 0.0, all_flips = 0.0, sumE = 0.0;
    for (size_t s = 0; s < ns; s++) {
        size_t n = off[s + 1] - off[s];
        if (p->have_prev) flips[s] = moe_flip_rate(p->prev + off[s], p->cur + off[s], n) * (double)n;
        all_active += active[s];
        all_pairs += (double)n;
        all_flips += flips[s];
        sumE += (double)sites[s].E;
    }
    p->last_loss = nll / (double)tokens;
    moe_buf b = {0};
    moe_buf_printf(&b, "{\"step\": %ld, \"tokens\": %zu, \"loss\": ", step, tokens);
    moe_json_write_double(&b, nll / (double)tokens);
    if (ns) {
        double rate = all_flips / all_pairs;
        moe_buf_printf(&b, ", \"sparsity\": ");
        moe_json_write_double(&b, 1.0 - all_active / all_pairs);
        moe_buf_printf(&b, ", \"flip_rate\": ");
        if (p->have_prev) moe_json_write_double(&b, rate); else moe_buf_printf(&b, "null");
        moe_buf_printf(&b, ", \"flip_count\": ");
        if (p->have_prev) moe_json_write_double(&b, rate * sumE / (double)ns); else moe_buf_printf(&b, "null");
        moe_buf_printf(&b, ", \"layers\": [");
        for (size_t s = 0; s < ns; s++) {
            double n = (double)(off[s + 1] - off[s]);
            moe_buf_printf(&b, "%s{\"layer\": %d, \"which\": %d, \"sparsity\": ", s ? ", " : "",
                           sites[s].layer, sites[s].which);
            moe_json_write_double(&b, 1.0 - active[s] / n);
            moe_buf_printf(&b, ", \"flip_rate\": ");
            if (p->have_prev) moe_json_write_double(&b, flips[s] / n); else moe_buf_printf(&b, "null");
            moe_buf_printf(&b, "}");
        }
        moe_buf_printf(&b, "]");
        uint8_t *t = p->prev; p->prev = p->cur; p->cur = t;
        p->have_prev = 1;
    }
    moe_buf_printf(&b, "}\n");
    if (!write) { moe_buf_free(&b); return 0; }
    FILE *f = b.data ? fopen(p->path, "a") : NULL;
    if (!f) rc = moe_errf(err, "cannot open %s: %s", p->path, b.data ? strerror(errno) : "out of memory");
    else {
        if (fwrite(b.data, 1, b.len, f) != b.len) rc = moe_errf(err, "cannot write %s: %s", p->path, strerror(errno));
        if (fclose(f) && !rc) rc = moe_errf(err, "cannot write %s: %s", p->path, strerror(errno));
    }
    moe_buf_free(&b);
    return rc;
}

int moe_probe_measure(moe_probe *p, moe_model *m, long step, moe_err *err) {
    return measure(p, m, step, 1, err);
}

int moe_probe_prime(moe_probe *p, moe_model *m, moe_err *err) {
    return measure(p, m, 0, 0, err);
}
