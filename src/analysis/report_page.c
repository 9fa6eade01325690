/* report_page.c — `moe report`'s page: from each run's metrics.jsonl,
 * calibration.jsonl, eval.json and analysis.json (docs/EVAL.md), which
 * src/run/rundir.c reads (moe_rundir_report), it writes
 * one self-contained HTML file (inline CSS and SVG, no scripts, no network)
 * that puts the runs side by side: loss curves, sparsity / lambda / the
 * regulariser with ReMoE's three stages marked, per-layer sparsity, expert
 * load, domain specialisation, flip rate, active experts against token
 * frequency, top tokens per expert and the evaluation tables. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "analysis/svg.h"
#include "moe/analysis/analysis.h"
#include "moe/model/ffn.h"
#include "moe/util/json.h"
#include "moe/moe/router.h"

#define MAX_SITES 64

typedef struct run_data {
    char dir[4096], name[256];
    char ffn[32], router[32];
    int n_experts, top_k, n_layers, relu;
    double target;                      /* target sparsity (1 - k/E unless set) */
    /* metrics.jsonl, one entry per step [n] */
    size_t n;
    double *step, *lm_loss, *sparsity, *lambda, *reg;
    size_t n_sites, E;
    int site_layer[MAX_SITES];
    double *site_sparsity[MAX_SITES];   /* [n] */
    double *site_active[MAX_SITES];     /* [n] active experts per token */
    double *site_idle[MAX_SITES];       /* [n] fraction of tokens with no expert (NaN: not logged) */
    double *site_lambda[MAX_SITES];     /* [n] the layer's own lambda (relu_lambda_per_layer; else NaN) */
    int per_layer_lambda;               /* some line logged a layer's own lambda */
    double *load[MAX_SITES];            /* [E, n] share of the site's routed tokens */
    /* the validation losses in metrics.jsonl (train --eval-every) [nv] */
    size_t nv;
    double *v_step, *v_loss;
    /* calibration.jsonl [nc] */
    size_t nc;
    double *c_step, *c_loss, *c_flip;
    const moe_json_value *eval, *analysis;  /* the moe_report_run's */
    long stage2, stage3;                /* first step index of stage II / III, -1 if none */
} run_data;

static void run_free(run_data *r) {
    free(r->step); free(r->lm_loss); free(r->sparsity); free(r->lambda); free(r->reg);
    for (size_t s = 0; s < MAX_SITES; s++) {
        free(r->site_sparsity[s]); free(r->load[s]); free(r->site_active[s]); free(r->site_idle[s]);
        free(r->site_lambda[s]);
    }
    free(r->c_step); free(r->c_loss); free(r->c_flip);
    free(r->v_step); free(r->v_loss);
}

static double *dalloc(size_t n, moe_err *err) {
    double *d = moe_malloc((n ? n : 1) * sizeof(double), err);
    for (size_t i = 0; d && i < n; i++) d[i] = NAN;
    return d;
}

/* ReMoE's stages from the sparsity curve (docs/EVAL.md): stage III starts
 * at the first step after which sparsity stays within +-band of the target;
 * stage II starts where, after its lowest point before stage III, sparsity
 * has climbed a tenth of the way to the target. */
static void find_stages(const double *s, size_t n, double target, double band, long *stage2, long *stage3) {
    *stage2 = *stage3 = -1;
    if (n == 0) return;
    long i3 = (long)n;
    while (i3 > 0 && isfinite(s[i3 - 1]) && fabs(s[i3 - 1] - target) <= band) i3--;
    if (i3 < (long)n) *stage3 = i3;
    long end = i3 < (long)n ? i3 : (long)n, imin = 0;
    for (long i = 0; i < end; i++) if (s[i] < s[imin]) imin = i;
    if (end == 0) return;
    double thr = s[imin] + 0.1 * (target - s[imin]);
    if (!(target > s[imin])) return;
    for (long i = imin; i < (long)n; i++)
        if (s[i] >= thr) { *stage2 = i; break; }
}

static int load_run(run_data *r, const moe_report_run *in, moe_err *err) {
    const char *dir = in->dir;
    memset(r, 0, sizeof *r);
    r->stage2 = r->stage3 = -1;
    if (moe_path(r->dir, sizeof r->dir, err, "%s", dir)) return -1;
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/') dl--;
    const char *base = dir + dl;
    while (base > dir && base[-1] != '/') base--;
    snprintf(r->name, sizeof r->name, "%.*s", (int)(dir + dl - base), base);
    char path[4200];

    /* the config of the newest checkpoint */
    strcpy(r->ffn, "?");
    strcpy(r->router, "?");
    char ckpt[4096];
    moe_err ignore;
    if (!moe_resolve_checkpoint(dir, ckpt, sizeof ckpt, &ignore) &&
        !moe_path(path, sizeof path, &ignore, "%s/config.json", ckpt)) {
        moe_json_value *c = moe_json_parse_file(path, &ignore);
        if (c) {
            snprintf(r->ffn, sizeof r->ffn, "%s", moe_json_get_string(c, "ffn", "?"));
            snprintf(r->router, sizeof r->router, "%s", moe_json_get_string(c, "router", "?"));
            r->n_experts = (int)moe_json_get_number(c, "n_experts", NAN);
            r->top_k = (int)moe_json_get_number(c, "top_k", NAN);
            r->n_layers = (int)moe_json_get_number(c, "n_layers", NAN);
            r->target = moe_json_get_number(c, "target_sparsity", NAN);
            moe_json_free(c);
        }
    }
    if (!(r->target > 0) && r->n_experts > 0) r->target = 1.0 - (double)r->top_k / r->n_experts;
    const moe_router_kind *rk = moe_router_kind_find(r->router);
    r->relu = rk && rk->sparsity_lambda;  /* ReMoE's lambda and stages */

    /* metrics.jsonl */
    moe_json_value *const *L = in->metrics;
    size_t n = in->n_metrics;
    r->n = n;
    r->step = dalloc(n, err); r->lm_loss = dalloc(n, err); r->sparsity = dalloc(n, err);
    r->lambda = dalloc(n, err); r->reg = dalloc(n, err);
    r->v_step = dalloc(n, err); r->v_loss = dalloc(n, err);
    int rc = r->step && r->lm_loss && r->sparsity && r->lambda && r->reg && r->v_step && r->v_loss ? 0 : -1;
    for (size_t i = 0; i < n && !rc; i++) {
        r->step[i] = moe_json_get_number(L[i], "step", NAN);
        r->lm_loss[i] = moe_json_get_number(L[i], "lm_loss", NAN);
        if (isfinite(moe_json_get_number(L[i], "val_loss", NAN))) {
            r->v_step[r->nv] = r->step[i];
            r->v_loss[r->nv++] = moe_json_get_number(L[i], "val_loss", NAN);
        }
        r->sparsity[i] = moe_json_get_number(L[i], "sparsity", NAN);
        r->lambda[i] = moe_json_get_number(L[i], "lambda", NAN);
        const moe_json_value *layers = moe_json_get(L[i], "layers");
        if (!layers || layers->type != MOE_JSON_ARRAY) continue;
        double reg = 0.0;
        int have_reg = 0;
        for (size_t s = 0; s < layers->count && s < MAX_SITES && !rc; s++) {
            const moe_json_value *e = &layers->items[s];
            const moe_json_value *tpe = moe_json_get(e, "tokens_per_expert");
            if (s >= r->n_sites) {  /* a site first seen on this line */
                r->n_sites = s + 1;
                r->site_layer[s] = (int)moe_json_get_number(e, "layer", NAN);
                if (!(r->site_sparsity[s] = dalloc(n, err)) || !(r->site_active[s] = dalloc(n, err)) ||
                    !(r->site_idle[s] = dalloc(n, err)) || !(r->site_lambda[s] = dalloc(n, err))) { rc = -1; break; }
                size_t E = tpe && tpe->type == MOE_JSON_ARRAY ? tpe->count : 0;
                if (E > r->E) r->E = E;
            }
            /* the layer's sparsity over the whole step where logged (relu_lambda_per_layer:
             * what its lambda steered by), else over the last micro-batch */
            double whole = moe_json_get_number(e, "step_sparsity", NAN);
            r->site_sparsity[s][i] = isfinite(whole) ? whole : moe_json_get_number(e, "sparsity", NAN);
            r->site_active[s][i] = moe_json_get_number(e, "active_per_token", NAN);
            r->site_idle[s][i] = moe_json_get_number(e, "no_expert", NAN);
            r->site_lambda[s][i] = moe_json_get_number(e, "lambda", NAN);
            if (isfinite(r->site_lambda[s][i])) r->per_layer_lambda = 1;
            double x = moe_json_get_number(e, "reg_loss", NAN);
            if (!isfinite(x)) x = moe_json_get_number(e, "aux_loss", NAN);
            if (isfinite(x)) { reg += x; have_reg = 1; }
        }
        if (have_reg) r->reg[i] = reg;
    }
    /* expert load: share of each site's routed tokens per step */
    for (size_t s = 0; s < r->n_sites && !rc && r->E; s++) {
        if (!(r->load[s] = dalloc(r->E * n, err))) { rc = -1; break; }
        for (size_t i = 0; i < n; i++) {
            const moe_json_value *layers = moe_json_get(L[i], "layers");
            if (!layers || layers->type != MOE_JSON_ARRAY || s >= layers->count) continue;
            const moe_json_value *tpe = moe_json_get(&layers->items[s], "tokens_per_expert");
            if (!tpe || tpe->type != MOE_JSON_ARRAY) continue;
            double tot = 0.0;
            for (size_t e = 0; e < tpe->count; e++) tot += tpe->items[e].number;
            for (size_t e = 0; e < tpe->count && e < r->E; e++)
                r->load[s][e * n + i] = tot > 0 ? tpe->items[e].number / tot : NAN;
        }
    }
    if (rc) return -1;
    if (r->relu && r->n > 0) {
        double band = 0.25 * (1.0 - r->target);
        find_stages(r->sparsity, r->n, r->target, band, &r->stage2, &r->stage3);
    }

    /* calibration.jsonl (optional) */
    L = in->calibration;
    r->nc = n = in->n_calibration;
    r->c_step = dalloc(n, err); r->c_loss = dalloc(n, err); r->c_flip = dalloc(n, err);
    if (!r->c_step || !r->c_loss || !r->c_flip) return -1;
    for (size_t i = 0; i < n; i++) {
        r->c_step[i] = moe_json_get_number(L[i], "step", NAN);
        r->c_loss[i] = moe_json_get_number(L[i], "loss", NAN);
        r->c_flip[i] = moe_json_get_number(L[i], "flip_rate", NAN);
    }

    /* eval.json and analysis.json (optional) */
    r->eval = in->eval;
    r->analysis = in->analysis;
    return 0;
}

/* ---- page pieces ------------------------------------------------------------ */

static const char *CSS =
    "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1d2330;background:#f4f6f9}"
    "header{background:#1d2b44;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px;font-weight:600}"
    "header p{margin:4px 0 0;color:#c6d0e0}main{padding:8px 28px 40px}"
    "section{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08);margin:18px 0;padding:14px 18px}"
    "h2{font-size:17px;margin:0 0 4px}h3{font-size:14px;margin:10px 0 4px;color:#33415c}"
    ".note{color:#5b6475;font-size:12.5px;margin:2px 0 8px;max-width:1100px}"
    ".grid{display:flex;flex-wrap:wrap;gap:10px 18px;align-items:flex-start}"
    ".runs{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(580px,100%),1fr));gap:10px 18px}"
    ".runs>*,.grid>*{min-width:0;max-width:100%}"
    ".run{border-top:3px solid var(--c);padding-top:4px}.run>h3{color:var(--c)}"
    "figure.chart{margin:4px 0;max-width:100%}svg{background:#fff;font-family:inherit;max-width:100%;height:auto}"
    "svg .title{font-size:13px;font-weight:600;fill:#1d2330}svg .tick{font-size:10.5px;fill:#5b6475}"
    "svg .label{font-size:11.5px;fill:#33415c}svg .legend-text{font-size:11px;fill:#33415c}"
    "svg .grid{stroke:#e6e9ef;stroke-width:1}svg .axis{stroke:#8a93a3;stroke-width:1}svg .tickmark{stroke:#8a93a3}"
    "svg .band-label{font-size:11px;font-weight:600;fill:#7a5c00;opacity:.75}"
    "table{border-collapse:collapse;font-size:13px;margin:6px 0;display:block;max-width:100%;overflow-x:auto}th,td{padding:4px 10px;text-align:right;border-bottom:1px solid #e6e9ef}"
    "th{background:#f0f3f8;font-weight:600}td:first-child,th:first-child{text-align:left}"
    "td.sub{padding-left:24px;color:#5b6475}td.best{font-weight:700;color:#0b6b2e}th.sub{font-weight:500;font-size:12px;color:#5b6475}"
    "td.robust{color:#6b4b9a}td.robust.best{color:#0b6b2e}td small{color:#8a93a3}"
    ".swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px;background:var(--c)}"
    ".tok{font:12px ui-monospace,Menlo,Consolas,monospace;background:#eef2f8;border-radius:3px;padding:0 4px;margin:1px 3px 1px 0;display:inline-block;white-space:pre}"
    ".tok small{color:#5b6475;margin-left:3px}table.tokens td{text-align:left}"
    ".missing{color:#8a5a00;background:#fff6e0;border-radius:4px;padding:6px 10px;font-size:12.5px}"
    "details summary{cursor:pointer;color:#33415c;margin:6px 0}"
    "dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;font-size:13px}dt{font-weight:600}dd{margin:0;color:#3b4456}"
    "header p{overflow-wrap:anywhere}.key{display:flex;flex-wrap:wrap;gap:4px 18px;font-size:12.5px;color:#3b4456;margin:4px 0}"
    ".key span{white-space:nowrap}.box{display:inline-block;width:14px;height:10px;border:1px solid #c9ced8;margin-right:5px;vertical-align:-1px}"
    "@media (max-width:640px){header{padding:12px 12px}main{padding:4px 6px 24px}section{padding:10px 8px;margin:10px 0}"
    ".runs,.grid{gap:8px}}";

static void esc(moe_buf *b, const char *s) { moe_svg_text(b, s); }

static void run_head(moe_buf *b, const run_data *r, size_t i) {
    moe_buf_printf(b, "<div class=\"run\" style=\"--c:%s\"><h3>", moe_svg_color(i));
    esc(b, r->name);
    moe_buf_printf(b, " <small>(%s, %s router)</small></h3>", r->ffn, r->router);
}

/* Active experts per token and the share of tokens with none, per layer,
 * averaged over the last tenth of the steps; a layer where most tokens use
 * no expert (no_expert > 1/2, or, for metrics without that key, fewer
 * than 1/2 active per token on average, which implies it) is flagged. */
static void activity_table(moe_buf *b, const run_data *r) {
    size_t tail = r->n / 10 ? r->n / 10 : r->n ? 1 : 0, from = r->n - tail;
    int warned = 0;
    moe_buf_printf(b, "<table><tr><th>layer</th><th>active experts / token</th><th>tokens with no expert</th>"
                   "</tr>");
    for (size_t s = 0; s < r->n_sites; s++) {
        double a = 0, z = 0;
        size_t na = 0, nz = 0;
        for (size_t i = from; i < r->n; i++) {
            if (isfinite(r->site_active[s][i])) { a += r->site_active[s][i]; na++; }
            if (isfinite(r->site_idle[s][i])) { z += r->site_idle[s][i]; nz++; }
        }
        a = na ? a / (double)na : NAN;
        z = nz ? z / (double)nz : NAN;
        int idle = nz ? z > 0.5 : na && a < 0.5;
        warned |= idle;
        moe_buf_printf(b, "<tr%s><td>%d</td>", idle ? " style=\"background:#fde2e1\"" : "", r->site_layer[s]);
        if (na) moe_buf_printf(b, "<td>%.3f</td>", a); else moe_buf_printf(b, "<td>—</td>");
        if (nz) moe_buf_printf(b, "<td>%.1f%%%s</td></tr>", 100 * z, idle ? " ⚠" : "");
        else moe_buf_printf(b, "<td>%s</td></tr>", idle ? "most ⚠" : "—");
    }
    moe_buf_printf(b, "</table>");
    if (warned)
        moe_buf_printf(b, "<p class=\"note\"><b>Warning:</b> in the marked layers most tokens use no expert: "
                       "their FFN output is zero and only the residual passes (mean over the last tenth of the "
                       "steps). The global sparsity target can be met this way while some layers do almost "
                       "nothing.</p>");
}

/* When the first run belongs to a `moe sweep` (RUN = OUT/NAME/seed-S with
 * OUT/summary.json: j, read from path), the sweep's aggregate: per cell the
 * headline metric's mean ± std over seeds and the paired difference against
 * the baseline (docs/SWEEP.md). Nothing when there is no summary (j NULL). */
static int sweep_section(moe_buf *b, const moe_json_value *j, const char *path) {
    if (!j) return 0;
    const moe_json_value *cells = moe_json_get(j, "cells");
    const char *head = moe_json_get_string(j, "headline", "train_loss");
    const char *base = moe_json_get_string(j, "baseline", NULL);
    moe_buf_printf(b, "<section><h2>Sweep: mean ± std over seeds</h2><p class=\"note\">From ");
    esc(b, path);
    moe_buf_printf(b, " (<code>moe sweep</code>): every run of the grid, not only the runs above; differences are "
                   "paired by seed.</p><table><tr><th>run</th><th>seeds done</th><th>");
    esc(b, head);
    moe_buf_printf(b, "</th>");
    if (base) { moe_buf_printf(b, "<th>− "); esc(b, base); moe_buf_printf(b, " (paired)</th>"); }
    moe_buf_printf(b, "</tr>");
    for (size_t i = 0; cells && cells->type == MOE_JSON_ARRAY && i < cells->count; i++) {
        const moe_json_value *c = &cells->items[i], *m = moe_json_get(moe_json_get(c, "metrics"), head);
        const moe_json_value *d = moe_json_get(moe_json_get(c, "minus_baseline"), head);
        moe_buf_printf(b, "<tr><td>");
        esc(b, moe_json_get_string(c, "name", "?"));
        moe_buf_printf(b, "</td><td>%.0f</td>", moe_json_get_number(c, "seeds_done", NAN));
        if (m) moe_buf_printf(b, "<td>%.4f ± %.4f</td>", moe_json_get_number(m, "mean", NAN),
                              moe_json_get_number(m, "std", NAN));
        else moe_buf_printf(b, "<td>—</td>");
        if (base && d)
            moe_buf_printf(b, "<td>%+.4f ± %.4f (n=%.0f)</td>", moe_json_get_number(d, "mean", NAN),
                           moe_json_get_number(d, "std", NAN), moe_json_get_number(d, "n", NAN));
        else if (base)
            moe_buf_printf(b, "<td>%s</td>", strcmp(moe_json_get_string(c, "name", ""), base) ? "—" : "(baseline)");
        moe_buf_printf(b, "</tr>");
    }
    moe_buf_printf(b, "</table></section>\n");
    return 0;
}

static void missing(moe_buf *b, const char *what, const char *how) {
    moe_buf_printf(b, "<p class=\"missing\">%s — %s</p>", what, how);
}

/* Exponential moving average of y (NaN-aware), for readable loss curves. */
static double *ema(const double *y, size_t n, double alpha, moe_err *err) {
    double *o = dalloc(n, err), m = NAN;
    for (size_t i = 0; o && i < n; i++) {
        if (isfinite(y[i])) m = isfinite(m) ? m + alpha * (y[i] - m) : y[i];
        o[i] = m;
    }
    return o;
}

static const char *STAGE_FILL[3] = {"#fde2e4", "#fff1c2", "#dcf2e0"};
static const char *STAGE_NAME[3] = {"stage I (near-dense)", "stage II (sparsifying)", "stage III (settled)"};

static size_t stage_bands(const run_data *r, moe_svg_band *bands) {
    if (!r->relu || r->n == 0) return 0;
    double last = r->step[r->n - 1], first = r->step[0] - 1;
    double s2 = r->stage2 >= 0 ? r->step[r->stage2] - 0.5 : NAN, s3 = r->stage3 >= 0 ? r->step[r->stage3] - 0.5 : NAN;
    size_t nb = 0;
    double end1 = isfinite(s2) ? s2 : isfinite(s3) ? s3 : last;
    bands[nb++] = (moe_svg_band){first, end1, STAGE_NAME[0], STAGE_FILL[0]};
    if (isfinite(s2)) bands[nb++] = (moe_svg_band){s2, isfinite(s3) ? s3 : last, STAGE_NAME[1], STAGE_FILL[1]};
    if (isfinite(s3)) bands[nb++] = (moe_svg_band){s3, last, STAGE_NAME[2], STAGE_FILL[2]};
    return nb;
}

/* The entry named `name` of array `key` ("data" or "tasks") of a run's eval.json. */
static const moe_json_value *eval_entry(const run_data *r, const char *key, const char *name) {
    const moe_json_value *a = r->eval ? moe_json_get(r->eval, key) : NULL;
    for (size_t q = 0; a && a->type == MOE_JSON_ARRAY && q < a->count; q++)
        if (!strcmp(moe_json_get_string(&a->items[q], "name", ""), name)) return &a->items[q];
    return NULL;
}

/* Perplexity of domain `dom` (NULL: all) in a data entry or its robustness part. */
static double entry_ppl(const moe_json_value *e, int robust, const char *dom) {
    const moe_json_value *src = e && robust ? moe_json_get(e, "robustness") : e;
    if (!src) return NAN;
    if (!dom) return moe_json_get_number(src, "ppl", NAN);
    const moe_json_value *dd = moe_json_get(src, "domains");
    for (size_t z = 0; dd && dd->type == MOE_JSON_ARRAY && z < dd->count; z++)
        if (!strcmp(moe_json_get_string(&dd->items[z], "name", ""), dom))
            return moe_json_get_number(&dd->items[z], "ppl", NAN);
    return NAN;
}

/* Index of the single best value (lowest, or highest with want_high), or -1 when
 * there is no unique one. */
static long best_of(const double *v, size_t n, int want_high) {
    long best = -1;
    for (size_t j = 0; j < n; j++)
        if (isfinite(v[j]) && (best < 0 || (want_high ? v[j] > v[best] : v[j] < v[best]))) best = (long)j;
    size_t ties = 0;
    for (size_t j = 0; best >= 0 && j < n; j++) ties += v[j] == v[best];
    return n > 1 && ties == 1 ? best : -1;
}

/* Names of array `key` over all runs, first appearance first (at most cap). */
static size_t union_names(run_data *runs, size_t n, const char *key, const char **names, size_t cap) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const moe_json_value *a = runs[i].eval ? moe_json_get(runs[i].eval, key) : NULL;
        for (size_t q = 0; a && a->type == MOE_JSON_ARRAY && q < a->count; q++) {
            const char *nm = moe_json_get_string(&a->items[q], "name", "?");
            size_t j = 0;
            while (j < k && strcmp(names[j], nm)) j++;
            if (j == k && k < cap) names[k++] = nm;
        }
    }
    return k;
}

/* The evaluation tables: one per data file (rows: all, then its domains;
 * per run the perplexity and, with --robustness, the perplexity with the top
 * expert dropped), and one for the tasks. */
static void eval_table(moe_buf *b, run_data *runs, size_t n) {
    int any = 0;
    for (size_t i = 0; i < n; i++) any |= runs[i].eval != NULL;
    if (!any) {
        missing(b, "No eval.json in any run", "run <code>moe eval --model RUN --data valid.tok --task cloze --robustness</code>");
        return;
    }
    const char *sets[64], *tasks[64];
    size_t ns = union_names(runs, n, "data", sets, 64), nt = union_names(runs, n, "tasks", tasks, 64);
    moe_buf_printf(b, "<div class=\"grid\">");
    for (size_t k = 0; k < ns; k++) {
        int robust = 0;
        const moe_json_value *first = NULL;
        for (size_t i = 0; i < n; i++) {
            const moe_json_value *e = eval_entry(&runs[i], "data", sets[k]);
            if (e && !first) first = e;
            robust |= e && moe_json_get(e, "robustness");
        }
        moe_buf_printf(b, "<table><tr><th>");
        esc(b, sets[k]);
        moe_buf_printf(b, ": perplexity</th>");
        for (size_t i = 0; i < n; i++) {
            moe_buf_printf(b, "<th colspan=\"%d\"><span class=\"swatch\" style=\"--c:%s\"></span>", robust ? 2 : 1, moe_svg_color(i));
            esc(b, runs[i].name);
            moe_buf_printf(b, "</th>");
        }
        moe_buf_printf(b, "</tr>");
        if (robust) {
            moe_buf_printf(b, "<tr><th></th>");
            for (size_t i = 0; i < n; i++) moe_buf_printf(b, "<th class=\"sub\">ppl</th><th class=\"sub\">top expert dropped</th>");
            moe_buf_printf(b, "</tr>");
        }
        const moe_json_value *doms = first ? moe_json_get(first, "domains") : NULL;
        size_t nd = doms && doms->type == MOE_JSON_ARRAY && doms->count > 1 ? doms->count : 0;
        for (long d = -1; d < (long)nd; d++) {
            const char *dom = d < 0 ? NULL : moe_json_get_string(&doms->items[d], "name", "?");
            double v[64], w[64];
            for (size_t i = 0; i < n && i < 64; i++) {
                const moe_json_value *e = eval_entry(&runs[i], "data", sets[k]);
                v[i] = entry_ppl(e, 0, dom);
                w[i] = entry_ppl(e, 1, dom);
            }
            long bv = best_of(v, n, 0), bw = best_of(w, n, 0);
            moe_buf_printf(b, "<tr><td%s>", d >= 0 ? " class=\"sub\"" : "");
            esc(b, dom ? dom : "all");
            moe_buf_printf(b, "</td>");
            for (size_t i = 0; i < n && i < 64; i++) {
                if (isfinite(v[i])) moe_buf_printf(b, "<td%s>%.2f</td>", (long)i == bv ? " class=\"best\"" : "", v[i]);
                else moe_buf_printf(b, "<td>—</td>");
                if (!robust) continue;
                if (isfinite(w[i])) moe_buf_printf(b, "<td class=\"%s\">%.2f</td>", (long)i == bw ? "best robust" : "robust", w[i]);
                else moe_buf_printf(b, "<td class=\"robust\">—</td>");
            }
            moe_buf_printf(b, "</tr>");
        }
        /* what each run read of the file (eval --max-tokens samples it) */
        moe_buf_printf(b, "<tr><td class=\"sub\">tokens read</td>");
        for (size_t i = 0; i < n && i < 64; i++) {
            const moe_json_value *e = eval_entry(&runs[i], "data", sets[k]), *rd = e ? moe_json_get(e, "read") : NULL;
            moe_buf_printf(b, "<td colspan=\"%d\" class=\"sub\">", robust ? 2 : 1);
            if (rd && !strcmp(moe_json_get_string(rd, "sampling", "all"), "all"))
                moe_buf_printf(b, "all %.0f", moe_json_get_number(rd, "of", NAN));
            else if (rd)
                moe_buf_printf(b, "%.0f of %.0f, sampled", moe_json_get_number(rd, "tokens", NAN),
                               moe_json_get_number(rd, "of", NAN));
            else moe_buf_printf(b, "—");
            moe_buf_printf(b, "</td>");
        }
        moe_buf_printf(b, "</tr></table>");
    }
    if (nt) {
        moe_buf_printf(b, "<table><tr><th>task</th><th>items</th>");
        for (size_t i = 0; i < n; i++) {
            moe_buf_printf(b, "<th colspan=\"2\"><span class=\"swatch\" style=\"--c:%s\"></span>", moe_svg_color(i));
            esc(b, runs[i].name);
            moe_buf_printf(b, "</th>");
        }
        moe_buf_printf(b, "</tr><tr><th></th><th></th>");
        for (size_t i = 0; i < n; i++) moe_buf_printf(b, "<th class=\"sub\">acc</th><th class=\"sub\">acc_norm</th>");
        moe_buf_printf(b, "</tr>");
        for (size_t k = 0; k < nt; k++) {
            double a[64], an[64], items = NAN;
            for (size_t i = 0; i < n && i < 64; i++) {
                const moe_json_value *e = eval_entry(&runs[i], "tasks", tasks[k]);
                a[i] = e ? moe_json_get_number(e, "acc", NAN) : NAN;
                an[i] = e ? moe_json_get_number(e, "acc_norm", NAN) : NAN;
                if (e) items = moe_json_get_number(e, "items", NAN);
            }
            long ba = best_of(a, n, 1), bn = best_of(an, n, 1);
            moe_buf_printf(b, "<tr><td>");
            esc(b, tasks[k]);
            moe_buf_printf(b, "</td><td>%.0f</td>", items);
            for (size_t i = 0; i < n && i < 64; i++) {
                const moe_json_value *e = eval_entry(&runs[i], "tasks", tasks[k]);
                for (int norm = 0; norm < 2; norm++) {
                    double x = norm ? an[i] : a[i];
                    if (!isfinite(x)) { moe_buf_printf(b, "<td>—</td>"); continue; }
                    moe_buf_printf(b, "<td%s>%.3f <small>± %.3f</small></td>",
                                   (long)i == (norm ? bn : ba) ? " class=\"best\"" : "", x,
                                   moe_json_get_number(e, norm ? "acc_norm_stderr" : "acc_stderr", NAN));
                }
            }
            moe_buf_printf(b, "</tr>");
        }
        moe_buf_printf(b, "</table>");
    }
    moe_buf_printf(b, "</div><p class=\"note\">Perplexity = exp(mean next-token loss) over the token file, and per "
                   "domain of its document table; lower is better. <i>Tokens read</i>: how much of the file the "
                   "evaluation saw; with <code>--max-tokens</code>, windows spread evenly over the file, each "
                   "domain its share. <i>Top expert dropped</i>: every router disables "
                   "each token's highest-scoring expert (routing robustness; a router that does not implement it "
                   "shows the same number). Multiple choice: acc picks the choice with the largest summed "
                   "log-probability given the context, acc_norm divides that sum by the choice's length in bytes "
                   "(lm-evaluation-harness conventions); ± is the standard error. The best of a row is in green "
                   "(none on ties).</p>");
}

/* What every colour of the page means, in one place. */
static void colour_key(moe_buf *b, const run_data *runs, size_t n) {
    char lo[8], mid[8], hi[8];
    moe_svg_heat_color(0.0, lo);
    moe_svg_heat_color(0.5, mid);
    moe_svg_heat_color(1.0, hi);
    moe_buf_printf(b, "<h3>Colours</h3><div class=\"key\">");
    for (size_t i = 0; i < n; i++) {
        moe_buf_printf(b, "<span><span class=\"swatch\" style=\"--c:%s\"></span>", moe_svg_color(i));
        esc(b, runs[i].name);
        moe_buf_printf(b, " (lines, bars, headings)</span>");
    }
    for (int k = 0; k < 3; k++)
        moe_buf_printf(b, "<span><span class=\"box\" style=\"background:%s\"></span>ReMoE %s</span>", STAGE_FILL[k],
                       STAGE_NAME[k]);
    moe_buf_printf(b, "<span><span class=\"box\" style=\"background:linear-gradient(90deg,%s,%s,%s)\"></span>"
                   "heatmaps: low → high, white or palest: (almost) none</span>"
                   "<span><span class=\"box\" style=\"background:%s\"></span>heatmap cell without data</span>"
                   "<span>white lines in a heatmap: between layers</span>"
                   "<span>dashed grey line: a reference (target, 1 − k/E, even load)</span>"
                   "<span style=\"color:#0b6b2e;font-weight:700\">green: best of a table row</span>"
                   "<span style=\"color:#6b4b9a\">purple: with each token's top expert dropped</span></div>",
                   lo, mid, hi, MOE_SVG_NO_DATA);
}

/* The runs table: config and headline numbers. */
static void runs_table(moe_buf *b, run_data *runs, size_t n) {
    moe_buf_printf(b, "<table><tr><th>run</th><th>ffn / router</th><th>experts E, k</th><th>layers</th>"
                   "<th>steps</th><th>final train loss</th><th>final calibration loss</th><th>final validation loss</th>"
                   "<th>final sparsity</th><th>target</th><th>stage III from step</th></tr>");
    for (size_t i = 0; i < n; i++) {
        run_data *r = &runs[i];
        double tl = NAN, cl = NAN, sp = NAN;
        for (size_t k = r->n; k-- > 0 && !isfinite(tl);) tl = r->lm_loss[k];
        for (size_t k = r->nc; k-- > 0 && !isfinite(cl);) cl = r->c_loss[k];
        for (size_t k = r->n; k-- > 0 && !isfinite(sp);) sp = r->sparsity[k];
        moe_buf_printf(b, "<tr><td><span class=\"swatch\" style=\"--c:%s\"></span>", moe_svg_color(i));
        esc(b, r->name);
        const moe_ffn_kind *fk = moe_ffn_kind_find(r->ffn);
        if (fk && !fk->routed)  /* no router, no experts (its config still holds their defaults) */
            moe_buf_printf(b, "</td><td>dense</td><td>—</td><td>%d</td><td>%.0f</td><td>%.4f</td>", r->n_layers,
                           r->n ? r->step[r->n - 1] : 0.0, tl);
        else
            moe_buf_printf(b, "</td><td>%s / %s</td><td>%d, %d</td><td>%d</td><td>%.0f</td><td>%.4f</td>",
                           r->ffn, r->router, r->n_experts, r->top_k, r->n_layers, r->n ? r->step[r->n - 1] : 0.0,
                           tl);
        if (isfinite(cl)) moe_buf_printf(b, "<td>%.4f</td>", cl); else moe_buf_printf(b, "<td>—</td>");
        if (r->nv) moe_buf_printf(b, "<td>%.4f</td>", r->v_loss[r->nv - 1]); else moe_buf_printf(b, "<td>—</td>");
        if (isfinite(sp)) moe_buf_printf(b, "<td>%.3f</td><td>%.3f</td>", sp, r->target); else moe_buf_printf(b, "<td>—</td><td>—</td>");
        if (r->stage3 >= 0) moe_buf_printf(b, "<td>%.0f</td></tr>", r->step[r->stage3]);
        else moe_buf_printf(b, "<td>%s</td></tr>", r->relu ? "not settled" : "—");
    }
    moe_buf_printf(b, "</table>");
}

static int overlay_charts(moe_buf *b, run_data *runs, size_t n, moe_err *err) {
    moe_svg_series se[128];
    double *tmp[64] = {0};
    char names[64][3][300];
    size_t ns = 0;
    for (size_t i = 0; i < n && i < 64; i++) {
        if (!(tmp[i] = ema(runs[i].lm_loss, runs[i].n, 0.1, err))) { for (size_t j = 0; j < i; j++) free(tmp[j]); return -1; }
        snprintf(names[i][0], sizeof names[i][0], "%s train (EMA)", runs[i].name);
        snprintf(names[i][1], sizeof names[i][1], "%s calibration", runs[i].name);
        se[ns++] = (moe_svg_series){names[i][0], moe_svg_color(i), runs[i].step, tmp[i], runs[i].n, 0, 0, 0};
        if (runs[i].nc)
            se[ns++] = (moe_svg_series){names[i][1], moe_svg_color(i), runs[i].c_step, runs[i].c_loss, runs[i].nc, 1, 1, 0};
        snprintf(names[i][2], sizeof names[i][2], "%s validation", runs[i].name);
        if (runs[i].nv && ns < 128)
            se[ns++] = (moe_svg_series){names[i][2], moe_svg_color(i), runs[i].v_step, runs[i].v_loss, runs[i].nv, 0, 1, 0};
    }
    moe_svg_line(b, &(moe_svg_line_chart){.id = "loss", .title = "Loss: training (EMA ~10 steps), calibration, validation",
             .xlabel = "optimiser step", .ylabel = "loss (nats / token)", .ymin = NAN, .ymax = NAN,
             .series = se, .n_series = ns, .width = 580, .height = 300});
    for (size_t i = 0; i < n && i < 64; i++) free(tmp[i]);
    /* flip rate */
    ns = 0;
    for (size_t i = 0; i < n && i < 64; i++) {
        int any = 0;  /* dense runs and single measurements have no flip rate */
        for (size_t k = 0; k < runs[i].nc; k++) any |= isfinite(runs[i].c_flip[k]);
        if (any) se[ns++] = (moe_svg_series){runs[i].name, moe_svg_color(i), runs[i].c_step, runs[i].c_flip, runs[i].nc, 0, 1, 0};
    }
    if (ns)
        moe_svg_line(b, &(moe_svg_line_chart){.id = "flip-rate", .title = "Routing flip rate on the calibration set",
                 .xlabel = "optimiser step", .ylabel = "flip rate (fraction of mask entries)", .ymin = 0, .ymax = NAN,
                 .series = se, .n_series = ns, .width = 580, .height = 300});
    else
        missing(b, "No flip rate", "train a routed model with <code>--analysis-every N</code> to measure it");
    return 0;
}

/* Whether every sparsity of the run (overall and per layer) is one value, as
 * a fixed-k router makes it: *value set. Such charts are flat lines. */
static int sparsity_flat(const run_data *r, double *value) {
    double first = NAN;
    for (size_t s = 0; s <= r->n_sites; s++) {
        const double *y = s == r->n_sites ? r->sparsity : r->site_sparsity[s];
        for (size_t i = 0; y && i < r->n; i++) {
            if (!isfinite(y[i])) continue;
            if (!isfinite(first)) first = y[i];
            else if (fabs(y[i] - first) > 1e-6) return 0;
        }
    }
    *value = first;
    return isfinite(first);
}

static void flat_note(moe_buf *b, const run_data *r, double value, const char *what) {
    moe_buf_printf(b, "<p class=\"note\">%s: constant at %.4g in every step and layer (%s routing fixes it at "
                   "1 − k/E = 1 − %d/%d), so its flat chart is left out.</p>", what, value, r->router, r->top_k,
                   r->n_experts);
}

static void dynamics_charts(moe_buf *b, const run_data *r, size_t ci) {
    moe_svg_band bands[3];
    size_t nb = stage_bands(r, bands);
    char id[300], title[400];
    moe_svg_hline target = {r->target, r->relu ? "target sparsity" : "1 − k/E", "#555"};
    moe_svg_series s = {"sparsity", moe_svg_color(ci), r->step, r->sparsity, r->n, 0, 0, 0};
    snprintf(id, sizeof id, "sparsity-%zu", ci);
    double flat;
    if (!r->relu && sparsity_flat(r, &flat))
        flat_note(b, r, flat, "Sparsity");
    else
        moe_svg_line(b, &(moe_svg_line_chart){.id = id, .title = "Sparsity per step (all MoE layers)", .xlabel = "optimiser step",
                 .ylabel = "sparsity (inactive fraction)", .ymin = 0, .ymax = 1, .series = &s, .n_series = 1,
                 .bands = bands, .n_bands = nb, .hlines = &target, .n_hlines = isfinite(r->target) ? 1 : 0});
    if (r->relu && r->per_layer_lambda) {  /* relu_lambda_per_layer: one lambda per layer */
        moe_svg_series l[MAX_SITES];
        char names[MAX_SITES][32];
        for (size_t s = 0; s < r->n_sites; s++) {
            snprintf(names[s], sizeof names[s], "λ of layer %d", r->site_layer[s]);
            l[s] = (moe_svg_series){names[s], moe_svg_color(s), r->step, r->site_lambda[s], r->n, 0, 0, 0};
        }
        snprintf(id, sizeof id, "lambda-%zu", ci);
        moe_svg_line(b, &(moe_svg_line_chart){.id = id, .title = "ReMoE λ per layer and step (each layer's own, × or ÷ α "
                 "each step from its own sparsity)", .xlabel = "optimiser step", .ylabel = "λ (log scale)",
                 .logy = 1, .ymin = NAN, .ymax = NAN, .series = l, .n_series = r->n_sites, .bands = bands,
                 .n_bands = nb});
    } else if (r->relu) {
        moe_svg_series l = {"λ (L1 coefficient)", moe_svg_color(ci), r->step, r->lambda, r->n, 0, 0, 0};
        snprintf(id, sizeof id, "lambda-%zu", ci);
        moe_svg_line(b, &(moe_svg_line_chart){.id = id, .title = "ReMoE λ per step (adaptive, × or ÷ α each step)",
                 .xlabel = "optimiser step", .ylabel = "λ (log scale)", .logy = 1, .ymin = NAN, .ymax = NAN,
                 .series = &l, .n_series = 1, .bands = bands, .n_bands = nb});
    }
    moe_svg_series g = {r->relu ? "L_reg (sum over layers)" : "auxiliary loss (sum over layers)", moe_svg_color(ci),
                    r->step, r->reg, r->n, 0, 0, 0};
    snprintf(id, sizeof id, "reg-%zu", ci);
    snprintf(title, sizeof title, "%s per step", r->relu ? "Load-balanced L1 regulariser (unweighted)" :
             "Load-balancing auxiliary loss (weighted)");
    moe_svg_line(b, &(moe_svg_line_chart){.id = id, .title = title, .xlabel = "optimiser step",
             .ylabel = r->relu ? "L_reg (gate units)" : "aux loss (nats)", .ymin = NAN, .ymax = NAN,
             .series = &g, .n_series = 1, .bands = bands, .n_bands = nb});
}

static void layer_charts(moe_buf *b, const run_data *r, size_t ci) {
    char id[300];
    moe_svg_series se[MAX_SITES];
    char names[MAX_SITES][32];
    /* viridis, stopping short of its pale yellow end */
    static const char *const LAYER_COLORS[] = {"#440154", "#46327e", "#365c8d", "#277f8e", "#1fa187", "#4ac16d", "#8fb82e"};
    for (size_t s = 0; s < r->n_sites; s++) {
        snprintf(names[s], sizeof names[s], "layer %d", r->site_layer[s]);
        se[s] = (moe_svg_series){names[s], r->n_sites <= 7 ? LAYER_COLORS[r->n_sites > 1 ? s * 6 / (r->n_sites - 1) : 0] : moe_svg_color(s),
                             r->step, r->site_sparsity[s], r->n, 0, 0, 1.3};
    }
    moe_svg_hline target = {r->target, r->relu ? "target sparsity" : "1 − k/E", "#555"};
    double flat;
    if (!r->relu && sparsity_flat(r, &flat)) {
        flat_note(b, r, flat, "Sparsity per layer");
        return;
    }
    snprintf(id, sizeof id, "layer-sparsity-%zu", ci);
    moe_svg_line(b, &(moe_svg_line_chart){.id = id, .title = "Sparsity per layer", .xlabel = "optimiser step",
             .ylabel = "sparsity (inactive fraction)", .ymin = 0, .ymax = 1, .series = se, .n_series = r->n_sites,
             .hlines = &target, .n_hlines = 1});
}

#define LBL 48  /* bytes per label */

/* The expert-load heatmap's cells: each site's experts' share of the routed
 * tokens, averaged over *cols (at most 60) equal bins of steps; [n_sites*E, cols]. */
static double *load_bins(const run_data *r, size_t *cols, moe_err *err) {
    *cols = r->n < 60 ? r->n : 60;
    size_t rows = r->n_sites * r->E;
    double *v = dalloc(rows * *cols, err);
    for (size_t s = 0; v && s < r->n_sites; s++)
        for (size_t e = 0; e < r->E; e++)
            for (size_t c = 0; c < *cols; c++) {
                size_t i0 = c * r->n / *cols, i1 = (c + 1) * r->n / *cols, k = 0;
                double sum = 0;
                for (size_t i = i0; i < i1; i++)
                    if (isfinite(r->load[s][e * r->n + i])) { sum += r->load[s][e * r->n + i]; k++; }
                v[(s * r->E + e) * *cols + c] = k ? sum / k : NAN;
            }
    return v;
}

/* The largest expert-load cell over all runs: one colour scale for all of
 * them, so that the runs compare by eye. -1 on error. */
static double load_scale(const run_data *runs, size_t n, moe_err *err) {
    double hi = 0;
    for (size_t i = 0; i < n; i++) {
        if (!runs[i].E || !runs[i].n) continue;
        size_t cols;
        double *v = load_bins(&runs[i], &cols, err);
        if (!v) return -1;
        for (size_t k = 0; k < runs[i].n_sites * runs[i].E * cols; k++) if (v[k] > hi) hi = v[k];
        free(v);
    }
    return hi > 0 ? hi : 1;
}

static int load_heatmap(moe_buf *b, const run_data *r, size_t ci, double hi, moe_err *err) {
    if (!r->E || !r->n) return 0;
    size_t cols, rows = r->n_sites * r->E;
    double *v = load_bins(r, &cols, err);
    char **rl = moe_calloc(rows, sizeof(char *), err), **cl = moe_calloc(cols, sizeof(char *), err);
    char *mem = moe_calloc(rows * LBL + cols * LBL + r->n_sites * LBL, 1, err);
    const char **gl = moe_calloc(r->n_sites + 1, sizeof(char *), err);
    if (!v || !rl || !cl || !mem || !gl) { free(v); free(rl); free(cl); free(mem); free(gl); return -1; }
    for (size_t s = 0; s < r->n_sites; s++) {
        char *g = mem + rows * LBL + cols * LBL + s * LBL;
        snprintf(g, LBL, "layer %d", r->site_layer[s]);
        gl[s] = g;
        for (size_t e = 0; e < r->E; e++) {
            size_t row = s * r->E + e;
            rl[row] = mem + row * LBL;
            snprintf(rl[row], LBL, "layer %d, expert %zu", r->site_layer[s], e);
        }
    }
    for (size_t c = 0; c < cols; c++) {  /* cell titles: the bin's steps */
        cl[c] = mem + rows * LBL + c * LBL;
        size_t i0 = c * r->n / cols, i1 = (c + 1) * r->n / cols - 1;
        if (i1 > i0) snprintf(cl[c], LBL, "steps %.0f-%.0f", r->step[i0], r->step[i1]);
        else snprintf(cl[c], LBL, "step %.0f", r->step[i0]);
    }
    char id[64];
    snprintf(id, sizeof id, "load-%zu", ci);
    /* the x axis in steps, ticks on round ones: the bins cover the steps evenly */
    int rc = moe_svg_heat(b, &(moe_svg_heatmap){.id = id, .title = "Expert load over training, per layer",
             .xlabel = "optimiser step", .ylabel = "layer / expert", .scale_label = "share of the layer's routed tokens",
             .rows = rows, .cols = cols, .values = v, .row_labels = (const char *const *)rl,
             .col_labels = (const char *const *)cl, .row_group = r->E, .group_labels = gl,
             .lo = 0, .hi = hi, .x0 = r->step[0] - 0.5, .x1 = r->step[r->n - 1] + 0.5});
    free(v); free(rl); free(cl); free(mem); free(gl);
    return rc;
}

/* The largest routed-token ratio in any run's analysis.json: the routed
 * heatmaps' common scale. */
static double routed_scale(const run_data *runs, size_t n) {
    double hi = 0;
    for (size_t i = 0; i < n; i++) {
        const moe_json_value *sites = runs[i].analysis ? moe_json_get(runs[i].analysis, "sites") : NULL;
        for (size_t s = 0; sites && sites->type == MOE_JSON_ARRAY && s < sites->count; s++) {
            const moe_json_value *rr = moe_json_get(&sites->items[s], "routed_ratio");
            for (size_t e = 0; rr && rr->type == MOE_JSON_ARRAY && e < rr->count; e++)
                if (rr->items[e].type == MOE_JSON_NUMBER && rr->items[e].number > hi) hi = rr->items[e].number;
        }
    }
    return hi > 0 ? hi : 1;
}

/* From analysis.json: routed ratio heatmap and domain bars per layer. */
static int analysis_charts(moe_buf *b, const run_data *r, size_t ci, double scale, moe_err *err) {
    const moe_json_value *sites = moe_json_get(r->analysis, "sites"), *doms = moe_json_get(r->analysis, "domains");
    if (!sites || sites->type != MOE_JSON_ARRAY || sites->count == 0) return 0;
    size_t ns = sites->count, E = 0, nd = doms && doms->type == MOE_JSON_ARRAY ? doms->count : 0;
    for (size_t s = 0; s < ns; s++) {
        const moe_json_value *rr = moe_json_get(&sites->items[s], "routed_ratio");
        if (rr && rr->type == MOE_JSON_ARRAY && rr->count > E) E = rr->count;
    }
    if (!E) return 0;
    double *v = dalloc(ns * E, err), *mean = dalloc(ns, err);
    char (*lab)[24] = moe_calloc(ns + E, 24, err);
    const char **rl = moe_calloc(ns + E, sizeof(char *), err);
    if (!v || !lab || !rl || !mean) { free(v); free(lab); free(rl); free(mean); return -1; }
    for (size_t s = 0; s < ns; s++) {
        const moe_json_value *st = &sites->items[s], *rr = moe_json_get(st, "routed_ratio");
        double layer = moe_json_get_number(st, "layer", NAN), which = moe_json_get_number(st, "which", NAN);
        snprintf(lab[s], 24, which > 0 ? "layer %.0f.%.0f" : "layer %.0f", layer, which);
        rl[s] = lab[s];
        double sum = 0;
        size_t k = 0;
        for (size_t e = 0; rr && rr->type == MOE_JSON_ARRAY && e < rr->count; e++) {
            v[s * E + e] = rr->items[e].number;
            if (isfinite(v[s * E + e])) { sum += v[s * E + e]; k++; }
        }
        mean[s] = k ? sum / (double)k : NAN;  /* what every expert would get if the layer's load were even */
    }
    for (size_t e = 0; e < E; e++) { snprintf(lab[ns + e], 24, "%zu", e); rl[ns + e] = lab[ns + e]; }
    char id[64], title[200];
    snprintf(id, sizeof id, "routed-%zu", ci);
    const moe_json_value *rd = moe_json_get(r->analysis, "read");
    if (rd && !strcmp(moe_json_get_string(rd, "sampling", "all"), "all"))
        snprintf(title, sizeof title, "Routed-token ratio per layer and expert (all %.0f analysis tokens)",
                 moe_json_get_number(rd, "of", NAN));
    else if (rd)
        snprintf(title, sizeof title, "Routed-token ratio per layer and expert (%.0f of %.0f analysis tokens, "
                 "%s)", moe_json_get_number(rd, "tokens", NAN), moe_json_get_number(rd, "of", NAN),
                 moe_json_get_string(rd, "sampling", "sampled"));
    else
        snprintf(title, sizeof title, "Routed-token ratio per layer and expert (analysis data)");
    moe_svg_heat(b, &(moe_svg_heatmap){.id = id, .title = title,
             .xlabel = "expert", .ylabel = "layer", .scale_label = "fraction of tokens routed to the expert",
             .rows = ns, .cols = E, .values = v, .row_labels = rl, .col_labels = rl + ns, .lo = 0, .hi = scale});
    /* domain specialisation: one bar chart per site */
    const char *dn[64];
    for (size_t d = 0; d < nd && d < 64; d++) dn[d] = moe_json_get_string(&doms->items[d], "name", "?");
    double *bv = dalloc((nd ? nd : 1) * E, err);
    if (!bv) { free(v); free(lab); free(rl); free(mean); return -1; }
    /* the even-load reference: k/E for a fixed-k router; a ReMoE (or top-p,
     * ...) layer activates a varying number of experts, so its reference is
     * the mean ratio of its own experts */
    const moe_ffn_kind *fk = moe_ffn_kind_find(r->ffn);
    const moe_router_kind *rk = moe_router_kind_find(r->router);
    int fixed_k = fk && fk->router_options && rk && rk->fixed_k;
    for (size_t s = 0; s < ns && nd; s++) {
        double uniform = fixed_k && r->n_experts > 0 ? (double)r->top_k / r->n_experts : mean[s];
        moe_svg_hline hl = {uniform, fixed_k ? "uniform k/E" : "even load (the layer's mean over experts)", "#555"};
        const moe_json_value *bd = moe_json_get(&sites->items[s], "routed_ratio_by_domain");
        for (size_t d = 0; d < nd && d < 64; d++)
            for (size_t e = 0; e < E; e++) {
                const moe_json_value *row = bd && bd->type == MOE_JSON_ARRAY && d < bd->count ? &bd->items[d] : NULL;
                bv[d * E + e] = row && row->type == MOE_JSON_ARRAY && e < row->count ? row->items[e].number : NAN;
            }
        snprintf(id, sizeof id, "domains-%zu-%zu", ci, s);
        snprintf(title, sizeof title, "Domain specialisation, %s", rl[s]);
        moe_svg_bars(b, &(moe_svg_bar_chart){.id = id, .title = title, .xlabel = "expert",
                 .ylabel = "routed-token ratio (fraction)", .groups = E, .n_series = nd < 64 ? nd : 64,
                 .group_labels = rl + ns, .series_names = dn, .values = bv, .hlines = &hl,
                 .n_hlines = isfinite(uniform) ? 1 : 0, .height = 220});
    }
    free(bv); free(v); free(lab); free(rl); free(mean);
    return 0;
}

/* A token's text with its whitespace made visible. */
static void tok_text(moe_buf *b, const char *s) {
    for (; *s; s++) {
        if (*s == ' ') moe_buf_printf(b, "␣");
        else if (*s == '\n') moe_buf_printf(b, "⏎");
        else if (*s == '\t') moe_buf_printf(b, "⇥");
        else { char c[2] = {*s, 0}; esc(b, c); }
    }
}

static void token_table(moe_buf *b, const moe_json_value *site) {
    const moe_json_value *top = moe_json_get(site, "top_tokens");
    if (!top || top->type != MOE_JSON_ARRAY) return;
    moe_buf_printf(b, "<table class=\"tokens\"><tr><th>expert</th><th>tokens most often routed to it "
                   "(fraction of the token's occurrences)</th></tr>");
    for (size_t e = 0; e < top->count; e++) {
        moe_buf_printf(b, "<tr><td>%zu</td><td>", e);
        const moe_json_value *list = &top->items[e];
        for (size_t i = 0; list->type == MOE_JSON_ARRAY && i < list->count; i++) {
            moe_buf_printf(b, "<span class=\"tok\">");
            tok_text(b, moe_json_get_string(&list->items[i], "text", "?"));
            moe_buf_printf(b, "<small>%.0f%%</small></span>",
                           100 * moe_json_get_number(&list->items[i], "prob", NAN));
        }
        moe_buf_printf(b, "</td></tr>");
    }
    moe_buf_printf(b, "</table>");
}

static void freq_chart(moe_buf *b, run_data *runs, size_t n, moe_err *err) {
    moe_svg_series se[64];
    double *xs[64] = {0}, *ys[64] = {0};
    size_t ns = 0;
    for (size_t i = 0; i < n && i < 64; i++) {
        const moe_json_value *fb = runs[i].analysis ? moe_json_get(runs[i].analysis, "frequency_buckets") : NULL;
        if (!fb || fb->type != MOE_JSON_ARRAY || !fb->count) continue;
        xs[ns] = dalloc(fb->count, err);
        ys[ns] = dalloc(fb->count, err);
        if (!xs[ns] || !ys[ns]) break;
        for (size_t k = 0; k < fb->count; k++) {
            xs[ns][k] = moe_json_get_number(&fb->items[k], "lo", NAN);
            ys[ns][k] = moe_json_get_number(&fb->items[k], "active_experts", NAN);
        }
        se[ns] = (moe_svg_series){runs[i].name, moe_svg_color(i), xs[ns], ys[ns], fb->count, 0, 1, 0};
        ns++;
    }
    if (ns)
        moe_svg_line(b, &(moe_svg_line_chart){.id = "active-vs-frequency",
                 .title = "Active experts per token against token frequency", .logx = 1,
                 .xlabel = "token frequency in the analysis data (occurrences, log2 buckets)",
                 .ylabel = "active experts per layer (mean)", .ymin = 0, .ymax = NAN, .series = se, .n_series = ns,
                 .width = 580, .height = 300});
    else
        missing(b, "No analysis.json", "run <code>moe analyze --model RUN --data valid.tok</code>");
    for (size_t i = 0; i < 64; i++) { free(xs[i]); free(ys[i]); }
}

int moe_report_html(const moe_report_run *in, size_t n, const moe_json_value *summary, const char *summary_path,
                    moe_buf *out, moe_err *err) {
    if (n == 0) return moe_errf(err, "no run directories given");
    if (n > 64) return moe_errf(err, "at most 64 runs per report, got %zu", n);
    run_data *runs = moe_calloc(n, sizeof *runs, err);
    if (!runs) return -1;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) rc = load_run(&runs[i], &in[i], err);
    if (rc) goto done;
    moe_buf *b = out;
    time_t now = time(NULL);
    char when[64];
    strftime(when, sizeof when, "%Y-%m-%d %H:%M", localtime(&now));
    moe_buf_printf(b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                   "<meta name=\"viewport\" content=\"width=device-width\"><title>moe report: ");
    for (size_t i = 0; i < n; i++) { if (i) moe_buf_printf(b, " vs "); esc(b, runs[i].name); }
    moe_buf_printf(b, "</title><style>%s</style></head><body>\n<header><h1>moe report: ", CSS);
    for (size_t i = 0; i < n; i++) { if (i) moe_buf_printf(b, " vs "); esc(b, runs[i].name); }
    moe_buf_printf(b, "</h1><p>%zu run%s · generated %s · ", n, n > 1 ? "s" : "", when);
    for (size_t i = 0; i < n; i++) { if (i) moe_buf_printf(b, ", "); esc(b, runs[i].dir); }
    moe_buf_printf(b, "</p></header><main>\n");

    moe_buf_printf(b, "<section><h2>Runs</h2>");
    runs_table(b, runs, n);
    colour_key(b, runs, n);
    moe_buf_printf(b, "</section>\n");
    sweep_section(b, summary, summary_path);
    moe_buf_printf(b, "<section><h2>Evaluation</h2>");
    eval_table(b, runs, n);
    moe_buf_printf(b, "</section>\n<section><h2>Training</h2><p class=\"note\">Training loss from "
                   "metrics.jsonl; the calibration loss and the flip rate come from a fixed token set forwarded in "
                   "eval mode every N steps (<code>moe train --analysis-every N</code>). Flip rate = "
                   "Σ<sub>l</sub>|M<sub>i</sub><sup>l</sup> − M<sub>i−1</sub><sup>l</sup>|<sub>1</sub> / (L·T·E) "
                   "between consecutive measurements.</p><div class=\"grid\">");
    if ((rc = overlay_charts(b, runs, n, err))) goto done;
    moe_buf_printf(b, "</div></section>\n<section><h2>Sparsity, λ and the regulariser</h2><p class=\"note\">"
                   "Sparsity = 1 − active (token, expert) pairs / (L·T·E). For ReLU routing (ReMoE) the shading "
                   "marks the three stages: <b>I</b> near-dense until sparsity, after its lowest point, has climbed "
                   "a tenth of the way to the target; <b>II</b> sparsifying; <b>III</b> from the first step after "
                   "which it stays within ±¼·k/E of the target.</p><div class=\"runs\">");
    for (size_t i = 0; i < n; i++) {
        run_head(b, &runs[i], i);
        if (runs[i].n_sites) dynamics_charts(b, &runs[i], i);
        else missing(b, "No routed layers", "a dense model has no sparsity or routing regulariser");
        moe_buf_printf(b, "</div>");
    }
    double lscale = load_scale(runs, n, err), rscale = routed_scale(runs, n);
    if (lscale < 0) { rc = -1; goto done; }
    moe_buf_printf(b, "</div></section>\n<section><h2>Per layer</h2><p class=\"note\">Expert load: one row per "
                   "expert, white lines between layers; the darker, the larger the expert's share of its layer's "
                   "routed tokens, on one scale for all runs (0 to %.3g); the palest cells are experts that took "
                   "(almost) no tokens in those steps.</p><div class=\"runs\">", lscale);
    for (size_t i = 0; i < n; i++) {
        run_head(b, &runs[i], i);
        if (runs[i].n_sites) {
            layer_charts(b, &runs[i], i);
            activity_table(b, &runs[i]);
            if ((rc = load_heatmap(b, &runs[i], i, lscale, err))) goto done;
        } else {
            missing(b, "No routed layers", "a dense model has no routing to show");
        }
        moe_buf_printf(b, "</div>");
    }
    moe_buf_printf(b, "</div></section>\n<section><h2>Routing on held-out data</h2><p class=\"note\">From "
                   "<code>moe analyze</code> (analysis.json): the fraction of each domain's tokens routed to each "
                   "expert (domain specialisation), and how many experts a token activates against how frequent "
                   "it is.</p><div class=\"grid\">");
    freq_chart(b, runs, n, err);
    moe_buf_printf(b, "</div><div class=\"runs\">");
    for (size_t i = 0; i < n; i++) {
        run_head(b, &runs[i], i);
        if (runs[i].analysis) { if ((rc = analysis_charts(b, &runs[i], i, rscale, err))) goto done; }
        else missing(b, "No analysis.json", "run <code>moe analyze --model RUN --data valid.tok</code>");
        moe_buf_printf(b, "</div>");
    }
    moe_buf_printf(b, "</div></section>\n<section><h2>Top tokens per expert</h2><p class=\"note\">For each "
                   "expert, the token ids with the largest fraction of their occurrences routed to it (ReMoE "
                   "table 12), among ids seen often enough; last routed layer shown, the others folded.</p>"
                   "<div class=\"runs\">");
    for (size_t i = 0; i < n; i++) {
        run_head(b, &runs[i], i);
        const moe_json_value *sites = runs[i].analysis ? moe_json_get(runs[i].analysis, "sites") : NULL;
        if (sites && sites->type == MOE_JSON_ARRAY && sites->count) {
            size_t last = sites->count - 1;
            moe_buf_printf(b, "<h3>layer %.0f</h3>", moe_json_get_number(&sites->items[last], "layer", NAN));
            token_table(b, &sites->items[last]);
            for (size_t s = 0; s < last; s++) {
                moe_buf_printf(b, "<details><summary>layer %.0f</summary>",
                               moe_json_get_number(&sites->items[s], "layer", NAN));
                token_table(b, &sites->items[s]);
                moe_buf_printf(b, "</details>");
            }
        } else {
            missing(b, "No analysis.json", "run <code>moe analyze --model RUN --data valid.tok</code>");
        }
        moe_buf_printf(b, "</div>");
    }
    moe_buf_printf(b, "</div></section>\n</main></body></html>\n");
done:
    for (size_t i = 0; i < n; i++) run_free(&runs[i]);
    free(runs);
    return rc;
}
