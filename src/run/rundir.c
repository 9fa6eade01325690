/* rundir.c — a run folder's files (include/moe/run/rundir.h): their names, the
 * JSON-lines logs read back, eval.json written and merged, analysis.json
 * written, and a sweep's state of each run (sweep.json, sweep.lock). Every
 * command that writes or reads one of these files goes through here. */
#include "moe/run/rundir.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "moe/util/fileio.h"
#include "moe/model/model.h"

/* ---- names -------------------------------------------------------------- */

static const char *const NAMES[MOE_RUN_FILES] = {
    [MOE_RUN_METRICS] = "metrics.jsonl",   [MOE_RUN_CALIBRATION] = "calibration.jsonl",
    [MOE_RUN_EVAL] = "eval.json",          [MOE_RUN_ANALYSIS] = "analysis.json",
    [MOE_RUN_SWEEP_DONE] = "sweep.json",   [MOE_RUN_SWEEP_LOCK] = "sweep.lock",
    [MOE_RUN_TRAIN_LOG] = "train.log",     [MOE_RUN_EVAL_LOG] = "eval.log",
    [MOE_SWEEP_SUMMARY] = "summary.json",  [MOE_SWEEP_SUMMARY_MD] = "summary.md",
    [MOE_RUN_REPORT] = "report.html",      [MOE_SWEEP_REPORT_LOG] = "report.log",
};

const char *moe_rundir_name(moe_run_file f) { return NAMES[f]; }

int moe_rundir_path(char *out, size_t cap, const char *dir, moe_run_file f, moe_err *err) {
    return moe_path(out, cap, err, "%s/%s", dir, NAMES[f]);
}

int moe_rundir_has(const char *dir, moe_run_file f) {
    char p[4200];
    return !moe_rundir_path(p, sizeof p, dir, f, NULL) && !access(p, F_OK);
}

int moe_rundir_is_run(const char *dir) { return moe_rundir_has(dir, MOE_RUN_METRICS); }

/* ---- JSON-lines logs ----------------------------------------------------- */

void moe_rundir_lines_free(moe_json_value **lines, size_t n) {
    for (size_t i = 0; i < n; i++) moe_json_free(lines[i]);
    free(lines);
}

int moe_rundir_read_lines(const char *dir, moe_run_file f, moe_json_value ***lines, size_t *n, moe_err *err) {
    char path[4200];
    *lines = NULL;
    *n = 0;
    if (moe_rundir_path(path, sizeof path, dir, f, err)) return -1;
    if (access(path, R_OK)) return (*lines = moe_calloc(1, sizeof **lines, err)) ? 0 : -1;
    size_t len, cap = 64;
    char *text = moe_read_file(path, &len, err);
    moe_json_value **v = text ? moe_calloc(cap, sizeof *v, err) : NULL;
    if (!v) { free(text); return -1; }
    size_t line = 0, k = 0;
    for (char *p = text; *p;) {
        char *nl = strchr(p, '\n');
        size_t l = nl ? (size_t)(nl - p) : strlen(p);
        line++;
        if (l > 0) {
            char what[4300];
            snprintf(what, sizeof what, "%s line %zu", path, line);
            moe_json_value *j = moe_json_parse(p, l, what, err);
            if (!j) { moe_rundir_lines_free(v, k); free(text); return -1; }
            if (k == cap) {
                moe_json_value **g = realloc(v, 2 * cap * sizeof *v);
                if (!g) { moe_json_free(j); break; }
                v = g;
                cap *= 2;
            }
            v[k++] = j;
        }
        p += l + (nl != NULL);
    }
    free(text);
    *lines = v;
    *n = k;
    return 0;
}

int moe_rundir_append_line(const char *dir, moe_run_file f, const char *line, size_t len, moe_err *err) {
    char path[4200];
    if (moe_rundir_path(path, sizeof path, dir, f, err)) return -1;
    FILE *fp = fopen(path, "a");
    if (!fp) return moe_errf(err, "cannot open %s: %s", path, strerror(errno));
    int ok = fwrite(line, 1, len, fp) == len;
    if (fclose(fp) || !ok) return moe_errf(err, "cannot write %s: %s", path, strerror(errno));
    return 0;
}

int moe_rundir_keep_steps(const char *dir, moe_run_file f, long step, moe_err *err) {
    char path[4200];
    if (moe_rundir_path(path, sizeof path, dir, f, err)) return -1;
    return moe_jsonl_keep_steps(path, step, err);
}

int moe_rundir_read_json(const char *dir, moe_run_file f, moe_json_value **out, moe_err *err) {
    char path[4200];
    *out = NULL;
    if (moe_rundir_path(path, sizeof path, dir, f, err)) return -1;
    if (access(path, R_OK)) return 0;
    return (*out = moe_json_parse_file(path, err)) ? 0 : -1;
}

/* ---- eval.json ----------------------------------------------------------- */

void moe_rundir_base_name(char *out, size_t cap, const char *path, const char *ext) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    size_t n = strlen(b), e = strlen(ext);
    if (n > e && !strcmp(b + n - e, ext)) n -= e;
    if (n >= cap) n = cap - 1;
    memcpy(out, b, n);
    out[n] = 0;
}

static double ppl(double nll, double n) { return n > 0 ? exp(nll / n) : NAN; }

static void write_sums(moe_buf *b, const moe_loss_sums *s, char *const *names, size_t n_names) {
    moe_buf_printf(b, "\"tokens\": %.0f, \"loss\": ", s->total_count);
    moe_json_write_double(b, s->total_count > 0 ? s->total_nll / s->total_count : NAN);
    moe_buf_printf(b, ", \"ppl\": ");
    moe_json_write_double(b, ppl(s->total_nll, s->total_count));
    moe_buf_printf(b, ", \"domains\": [");
    for (size_t d = 0; d < s->n_domains; d++) {
        /* a token file without a document table has one domain and no names */
        const char *name = names && d < n_names && names[d] ? names[d] : "all";
        moe_buf_printf(b, "%s{\"name\": ", d ? ", " : "");
        moe_json_write_string(b, name, strlen(name));
        moe_buf_printf(b, ", \"tokens\": %.0f, \"loss\": ", s->count[d]);
        moe_json_write_double(b, s->count[d] > 0 ? s->nll[d] / s->count[d] : NAN);
        moe_buf_printf(b, ", \"ppl\": ");
        moe_json_write_double(b, ppl(s->nll[d], s->count[d]));
        moe_buf_printf(b, "}");
    }
    moe_buf_printf(b, "]");
}

/* v as JSON text (the results kept from an earlier eval.json). */
static void write_value(moe_buf *b, const moe_json_value *v) {
    switch (v->type) {
    case MOE_JSON_NULL: moe_buf_printf(b, "null"); break;
    case MOE_JSON_BOOL: moe_buf_printf(b, v->boolean ? "true" : "false"); break;
    case MOE_JSON_NUMBER: moe_json_write_double(b, v->number); break;
    case MOE_JSON_STRING: moe_json_write_string(b, v->string, v->len); break;
    case MOE_JSON_ARRAY:
    case MOE_JSON_OBJECT:
        moe_buf_printf(b, v->type == MOE_JSON_ARRAY ? "[" : "{");
        for (size_t i = 0; i < v->count; i++) {
            if (i) moe_buf_printf(b, ", ");
            if (v->type == MOE_JSON_OBJECT) {
                moe_json_write_string(b, v->keys[i], strlen(v->keys[i]));
                moe_buf_printf(b, ": ");
            }
            write_value(b, &v->items[i]);
        }
        moe_buf_printf(b, v->type == MOE_JSON_ARRAY ? "]" : "}");
        break;
    }
}

moe_json_value *moe_eval_earlier(const char *path, const char *ckpt, size_t seq, char *note, size_t cap) {
    struct stat st;
    if (cap) note[0] = 0;
    if (stat(path, &st) || !S_ISREG(st.st_mode)) return NULL;
    moe_err err;
    moe_json_value *old = moe_json_parse_file(path, &err);
    if (!old) {
        snprintf(note, cap, "warning: the earlier results in %s cannot be read (%s): replacing them", path,
                 err.msg);
        return NULL;
    }
    const moe_json_value *c = moe_json_get(old, "checkpoint"), *s = moe_json_get(old, "seq");
    const char *why = !c || c->type != MOE_JSON_STRING ? "no checkpoint recorded"
                    : strcmp(c->string, ckpt) ? "another checkpoint"
                    : !s || s->type != MOE_JSON_NUMBER || s->number != (double)seq ? "another --seq" : NULL;
    if (why) {
        snprintf(note, cap, "the earlier results in %s are of %s (%s): replaced, not merged", path, why,
                 c && c->type == MOE_JSON_STRING ? c->string : "?");
        moe_json_free(old);
        return NULL;
    }
    return old;
}

/* Appends the entries of array `key` of old whose "name" is none of
 * names[0..n) (this evaluation's own replace them); first: no entry yet. */
static void keep_entries(moe_buf *b, const moe_json_value *old, const char *key, const char *const *names,
                         size_t n, int first) {
    const moe_json_value *a = old ? moe_json_get(old, key) : NULL;
    for (size_t i = 0; a && a->type == MOE_JSON_ARRAY && i < a->count; i++) {
        const moe_json_value *nm = moe_json_get(&a->items[i], "name");
        int replaced = !nm || nm->type != MOE_JSON_STRING;
        for (size_t k = 0; k < n && !replaced; k++) replaced = !strcmp(names[k], nm->string);
        if (replaced) continue;
        moe_buf_printf(b, "%s\n ", first ? "" : ",");
        write_value(b, &a->items[i]);
        first = 0;
    }
}

static void write_data_entry(moe_buf *b, const moe_eval_file *f) {
    moe_buf_printf(b, "{\"name\": ");
    moe_json_write_string(b, f->name, strlen(f->name));
    moe_buf_printf(b, ", \"path\": ");
    moe_json_write_string(b, f->path, strlen(f->path));
    moe_buf_printf(b, ", ");
    moe_read_info_json(&f->base->read, b);
    moe_buf_printf(b, ", ");
    write_sums(b, f->base, f->domain_names, f->n_domains);
    if (f->drop) {
        moe_buf_printf(b, ",\n  \"robustness\": {");
        write_sums(b, f->drop, f->domain_names, f->n_domains);
        moe_buf_printf(b, "}");
    }
    moe_buf_printf(b, "}");
}

static void write_task_entry(moe_buf *b, const moe_eval_task *t) {
    moe_buf_printf(b, "{\"name\": ");
    moe_json_write_string(b, t->name, strlen(t->name));
    moe_buf_printf(b, ", \"path\": ");
    moe_json_write_string(b, t->path, strlen(t->path));
    moe_buf_printf(b, ", \"items\": %zu, \"acc\": ", t->r->n);
    moe_json_write_double(b, t->r->acc);
    moe_buf_printf(b, ", \"acc_stderr\": ");
    moe_json_write_double(b, t->r->acc_stderr);
    moe_buf_printf(b, ", \"acc_norm\": ");
    moe_json_write_double(b, t->r->acc_norm);
    moe_buf_printf(b, ", \"acc_norm_stderr\": ");
    moe_json_write_double(b, t->r->acc_norm_stderr);
    moe_buf_printf(b, "}");
}

/* The opening of eval.json and analysis.json: format, version, the model
 * directory and its checkpoint. */
static void write_header(moe_buf *b, const char *format, const char *model, const char *checkpoint) {
    moe_buf_printf(b, "{\n\"format\": \"%s\", \"version\": 1,\n\"model\": ", format);
    moe_json_write_string(b, model, strlen(model));
    moe_buf_printf(b, ", \"checkpoint\": ");
    moe_json_write_string(b, checkpoint, strlen(checkpoint));
}

int moe_eval_json(const moe_eval_results *r, const moe_json_value *earlier, moe_buf *out, moe_err *err) {
    moe_buf b = {0};
    const moe_config *c = r->cfg;
    write_header(&b, "moe-eval", r->model, r->checkpoint);
    moe_buf_printf(&b, ", \"ffn\": \"%s\", \"router\": \"%s\", \"n_experts\": %d, \"top_k\": %d, \"seq\": %zu,\n"
                   "\"data\": [", c->ffn, c->router, c->n_experts, c->top_k, r->seq);
    for (size_t i = 0; i < r->n_data; i++) {
        moe_buf_printf(&b, "%s\n ", i ? "," : "");
        write_data_entry(&b, &r->data[i]);
    }
    /* the earlier results on other data files and tasks */
    const char **names = calloc(r->n_data + r->n_tasks + 1, sizeof *names);
    if (!names) { moe_buf_free(&b); return moe_errf(err, "out of memory"); }
    for (size_t i = 0; i < r->n_data; i++) names[i] = r->data[i].name;
    for (size_t i = 0; i < r->n_tasks; i++) names[r->n_data + i] = r->tasks[i].name;
    keep_entries(&b, earlier, "data", names, r->n_data, r->n_data == 0);
    moe_buf_printf(&b, "],\n\"tasks\": [");
    for (size_t i = 0; i < r->n_tasks; i++) {
        moe_buf_printf(&b, "%s\n ", i ? "," : "");
        write_task_entry(&b, &r->tasks[i]);
    }
    keep_entries(&b, earlier, "tasks", names + r->n_data, r->n_tasks, r->n_tasks == 0);
    moe_buf_printf(&b, "]\n}\n");
    free(names);
    if (!b.data) return moe_errf(err, "out of memory");
    *out = b;
    return 0;
}

int moe_eval_write(const char *path, const moe_eval_results *r, int merge, char *note, size_t cap,
                   moe_err *err) {
    if (cap) note[0] = 0;
    moe_json_value *earlier = merge ? moe_eval_earlier(path, r->checkpoint, r->seq, note, cap) : NULL;
    moe_buf b = {0};
    int rc = moe_eval_json(r, earlier, &b, err) || moe_write_file_atomic(path, b.data, b.len, err) ? -1 : 0;
    moe_json_free(earlier);
    moe_buf_free(&b);
    return rc;
}

/* ---- analysis.json ------------------------------------------------------- */

int moe_analysis_json(const moe_analysis_info *a, const moe_route_stats *st, moe_buf *out, moe_err *err) {
    moe_buf b = {0};
    const moe_config *c = a->cfg;
    write_header(&b, "moe-analysis", a->model, a->checkpoint);
    moe_buf_printf(&b, ", \"data\": ");
    moe_json_write_string(&b, a->data, strlen(a->data));
    moe_buf_printf(&b, ",\n\"ffn\": \"%s\", \"router\": \"%s\", \"n_experts\": %d, \"top_k\": %d, "
                   "\"min_count\": %zu,\n", c->ffn, c->router, c->n_experts, c->top_k, a->min_count);
    moe_read_info_json(&st->read, &b);
    moe_buf_printf(&b, ",\n");
    if (moe_route_stats_json(st, a->tok, a->domain_names, a->top, a->min_count, &b, err)) {
        moe_buf_free(&b);
        return -1;
    }
    moe_buf_printf(&b, "\n}\n");
    if (!b.data) return moe_errf(err, "out of memory");
    *out = b;
    return 0;
}

int moe_analysis_write(const char *path, const moe_analysis_info *a, const moe_route_stats *st,
                       moe_err *err) {
    moe_buf b = {0};
    int rc = moe_analysis_json(a, st, &b, err) || moe_write_file_atomic(path, b.data, b.len, err) ? -1 : 0;
    moe_buf_free(&b);
    return rc;
}

/* ---- moe report's inputs ------------------------------------------------ */

static int report_load(moe_report_run *r, const char *dir, moe_err *err) {
    char p[4200];
    r->dir = dir;
    if (moe_rundir_path(p, sizeof p, dir, MOE_RUN_METRICS, err)) return -1;
    if (access(p, R_OK))
        return moe_errf(err, "%s: no metrics.jsonl (is it a run directory written by moe train?)", dir);
    if (moe_rundir_read_lines(dir, MOE_RUN_METRICS, &r->metrics, &r->n_metrics, err) ||
        moe_rundir_read_lines(dir, MOE_RUN_CALIBRATION, &r->calibration, &r->n_calibration, err) ||
        moe_rundir_read_json(dir, MOE_RUN_EVAL, &r->eval, err) ||
        moe_rundir_read_json(dir, MOE_RUN_ANALYSIS, &r->analysis, err))
        return -1;
    return 0;
}

static void report_free(moe_report_run *r) {
    moe_rundir_lines_free(r->metrics, r->n_metrics);
    moe_rundir_lines_free(r->calibration, r->n_calibration);
    moe_json_free(r->eval);
    moe_json_free(r->analysis);
}

int moe_rundir_report(const char *const *dirs, size_t n, moe_buf *out, moe_err *err) {
    if (n == 0) return moe_errf(err, "no run directories given");
    if (n > 64) return moe_errf(err, "at most 64 runs per report, got %zu", n);
    moe_report_run *runs = moe_calloc(n, sizeof *runs, err);
    if (!runs) return -1;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) rc = report_load(&runs[i], dirs[i], err);
    /* the sweep's summary, when the first run is one of a sweep's (a summary
     * that cannot be read is left out of the page) */
    char path[4200] = "";
    moe_json_value *summary = NULL;
    moe_err ignored;
    if (!rc && !moe_sweep_summary_of(path, sizeof path, dirs[0], NULL) && !access(path, F_OK))
        summary = moe_json_parse_file(path, &ignored);
    if (!rc) rc = moe_report_html(runs, n, summary, path, out, err);
    moe_json_free(summary);
    for (size_t i = 0; i < n; i++) report_free(&runs[i]);
    free(runs);
    return rc;
}

/* ---- a sweep's state of one run ----------------------------------------- */

static void put(moe_run_metrics *ms, const char *key, double v) {
    if (ms->n >= MOE_RUN_MAX_METRICS || !isfinite(v)) return;
    snprintf(ms->m[ms->n].key, sizeof ms->m[ms->n].key, "%s", key);
    ms->m[ms->n++].value = v;
}

double moe_run_metric(const moe_run_metrics *ms, const char *key) {
    for (size_t i = 0; i < ms->n; i++)
        if (!strcmp(ms->m[i].key, key)) return ms->m[i].value;
    return NAN;
}

double moe_run_headline(const moe_run_metrics *ms, const char **key) {
    for (size_t i = 0; i < ms->n; i++) {
        size_t l = strlen(ms->m[i].key);
        if (l > 5 && !strcmp(ms->m[i].key + l - 5, ".loss")) { *key = ms->m[i].key; return ms->m[i].value; }
    }
    *key = "train_loss";
    return moe_run_metric(ms, "train_loss");
}

/* Per MoE site (a layer, or a CartesianMoE sub-layer) of metrics.jsonl's
 * "layers": sums over the steps of the last tenth. */
#define MAX_SITES 256
typedef struct {
    size_t n;                                   /* sites seen */
    double imbalance[MAX_SITES];                /* max_e n_e / mean_e n_e */
    double active[MAX_SITES], no_expert[MAX_SITES];
    size_t steps[MAX_SITES];
} site_sums;

/* Adds one step's "layers" array to the sums. */
static void add_sites(site_sums *ss, const moe_json_value *layers) {
    for (size_t i = 0; layers && layers->type == MOE_JSON_ARRAY && i < layers->count && i < MAX_SITES; i++) {
        const moe_json_value *l = &layers->items[i], *tpe = moe_json_get(l, "tokens_per_expert");
        double most = 0, sum = 0;
        size_t E = tpe && tpe->type == MOE_JSON_ARRAY ? tpe->count : 0;
        for (size_t e = 0; e < E; e++) {
            double v = tpe->items[e].type == MOE_JSON_NUMBER ? tpe->items[e].number : 0;
            sum += v;
            if (v > most) most = v;
        }
        if (sum <= 0) continue;
        ss->imbalance[i] += most / (sum / (double)E);
        ss->active[i] += moe_json_get_number(l, "active_per_token", 0);
        ss->no_expert[i] += moe_json_get_number(l, "no_expert", 0);
        ss->steps[i]++;
        if (i + 1 > ss->n) ss->n = i + 1;
    }
}

/* The routing metrics of a MoE run from the sums (docs/SWEEP.md): the load
 * imbalance averaged over sites and at the worst site, the least active
 * site's experts per token and the most starved site's share of tokens on
 * no expert. */
static void put_sites(moe_run_metrics *ms, const site_sums *ss) {
    double imb = 0, worst = 0, act_min = INFINITY, none_max = 0;
    size_t k = 0;
    for (size_t i = 0; i < ss->n; i++) {
        if (!ss->steps[i]) continue;
        double c = (double)ss->steps[i], im = ss->imbalance[i] / c;
        imb += im;
        k++;
        if (im > worst) worst = im;
        if (ss->active[i] / c < act_min) act_min = ss->active[i] / c;
        if (ss->no_expert[i] / c > none_max) none_max = ss->no_expert[i] / c;
    }
    if (!k) return;
    put(ms, "imbalance", imb / (double)k);
    put(ms, "imbalance_worst", worst);
    put(ms, "active_min_layer", act_min);
    put(ms, "no_expert_max_layer", none_max);
}

/* The mean flip rate over the last tenth of calibration.jsonl's probes
 * (none without --analysis-every). */
static int collect_flips(const char *dir, moe_run_metrics *ms, moe_err *err) {
    if (!moe_rundir_has(dir, MOE_RUN_CALIBRATION)) return 0;
    moe_json_value **lines;
    size_t n, k = 0;
    if (moe_rundir_read_lines(dir, MOE_RUN_CALIBRATION, &lines, &n, err)) return -1;
    size_t tail = n / 10 ? n / 10 : n;
    double sum = 0;
    for (size_t i = n - tail; i < n; i++) {
        double f = moe_json_get_number(lines[i], "flip_rate", NAN);
        if (isfinite(f)) { sum += f; k++; }
    }
    moe_rundir_lines_free(lines, n);
    if (k) put(ms, "flip_rate", sum / (double)k);
    return 0;
}

/* The mean lm_loss and sparsity over the last tenth of metrics.jsonl's
 * steps (at least one), the routing metrics over the same steps, and
 * train_seconds: every step's seconds summed (the run's training time over
 * all the sessions that trained it: a resume cuts the lines back to its
 * checkpoint, so no step counts twice). */
static int collect_training(const char *dir, moe_run_metrics *ms, moe_err *err) {
    char p[4200];
    if (moe_rundir_path(p, sizeof p, dir, MOE_RUN_METRICS, err)) return -1;
    if (access(p, R_OK)) return moe_errf(err, "%s: %s", p, strerror(errno));
    moe_json_value **lines;
    size_t n;
    if (moe_rundir_read_lines(dir, MOE_RUN_METRICS, &lines, &n, err)) return -1;
    size_t tail = n / 10 ? n / 10 : n, nl = 0, ns = 0, nt = 0;
    double sl = 0, ss = 0, st = 0;
    site_sums *sites = calloc(1, sizeof *sites);
    if (!sites) { moe_rundir_lines_free(lines, n); return moe_errf(err, "out of memory"); }
    for (size_t i = 0; i < n; i++) {
        double t = moe_json_get_number(lines[i], "seconds", NAN);
        if (isfinite(t)) { st += t; nt++; }
    }
    for (size_t i = n - tail; i < n; i++) {
        double loss = moe_json_get_number(lines[i], "lm_loss", NAN);
        double sp = moe_json_get_number(lines[i], "sparsity", NAN);
        if (isfinite(loss)) { sl += loss; nl++; }
        if (isfinite(sp)) { ss += sp; ns++; }
        add_sites(sites, moe_json_get(lines[i], "layers"));
    }
    moe_rundir_lines_free(lines, n);
    if (nl) put(ms, "train_loss", sl / (double)nl);
    if (ns) put(ms, "sparsity", ss / (double)ns);
    if (nt) put(ms, "train_seconds", st);
    put_sites(ms, sites);
    free(sites);
    return collect_flips(dir, ms, err);
}

/* eval.json's losses and perplexities per data file, accuracies per task. */
static int collect_eval(const char *dir, moe_run_metrics *ms, moe_err *err) {
    moe_json_value *ev;
    if (moe_rundir_read_json(dir, MOE_RUN_EVAL, &ev, err)) return -1;
    const moe_json_value *data = ev ? moe_json_get(ev, "data") : NULL, *tasks = ev ? moe_json_get(ev, "tasks") : NULL;
    char key[96];
    for (size_t i = 0; data && data->type == MOE_JSON_ARRAY && i < data->count; i++) {
        const moe_json_value *d = &data->items[i];
        const char *name = moe_json_get_string(d, "name", "data");
        snprintf(key, sizeof key, "%s.loss", name); put(ms, key, moe_json_get_number(d, "loss", NAN));
        snprintf(key, sizeof key, "%s.ppl", name); put(ms, key, moe_json_get_number(d, "ppl", NAN));
        const moe_json_value *rb = moe_json_get(d, "robustness");
        snprintf(key, sizeof key, "%s.ppl_drop_top", name); put(ms, key, moe_json_get_number(rb, "ppl", NAN));
    }
    for (size_t i = 0; tasks && tasks->type == MOE_JSON_ARRAY && i < tasks->count; i++) {
        const moe_json_value *t = &tasks->items[i];
        const char *name = moe_json_get_string(t, "name", "task");
        snprintf(key, sizeof key, "%s.acc", name); put(ms, key, moe_json_get_number(t, "acc", NAN));
        snprintf(key, sizeof key, "%s.acc_norm", name); put(ms, key, moe_json_get_number(t, "acc_norm", NAN));
    }
    moe_json_free(ev);
    return 0;
}

int moe_run_collect(const char *dir, double seconds, moe_run_metrics *ms, moe_err *err) {
    memset(ms, 0, sizeof *ms);
    if (collect_training(dir, ms, err)) return -1;
    put(ms, "seconds", seconds);
    return collect_eval(dir, ms, err);
}

moe_run_state moe_run_state_of(const char *dir) {
    if (moe_rundir_has(dir, MOE_RUN_SWEEP_DONE)) return MOE_RUN_DONE;
    char ck[4096];
    moe_err ignored;
    return moe_resolve_checkpoint(dir, ck, sizeof ck, &ignored) ? MOE_RUN_NEW : MOE_RUN_INTERRUPTED;
}

int moe_run_mark_done(const char *dir, const char *name, long seed, const moe_run_metrics *ms, moe_err *err) {
    moe_buf b = {0};
    moe_buf_printf(&b, "{\"name\": ");
    moe_json_write_string(&b, name, strlen(name));
    moe_buf_printf(&b, ", \"seed\": %ld, \"metrics\": {", seed);
    for (size_t i = 0; i < ms->n; i++) {
        moe_buf_printf(&b, "%s", i ? ", " : "");
        moe_json_write_string(&b, ms->m[i].key, strlen(ms->m[i].key));
        moe_buf_printf(&b, ": ");
        moe_json_write_double(&b, ms->m[i].value);
    }
    moe_buf_printf(&b, "}}\n");
    char p[4200];
    int rc = moe_rundir_path(p, sizeof p, dir, MOE_RUN_SWEEP_DONE, err) ? -1
           : b.data ? moe_write_file_atomic(p, b.data, b.len, err) : moe_errf(err, "out of memory");
    moe_buf_free(&b);
    return rc;
}

int moe_run_read_done(const char *dir, moe_run_metrics *ms, moe_err *err) {
    char p[4200];
    memset(ms, 0, sizeof *ms);
    if (moe_rundir_path(p, sizeof p, dir, MOE_RUN_SWEEP_DONE, err)) return -1;
    if (access(p, F_OK)) return 0;
    moe_json_value *j = moe_json_parse_file(p, err);
    if (!j) return -1;
    const moe_json_value *m = moe_json_get(j, "metrics");
    for (size_t i = 0; m && m->type == MOE_JSON_OBJECT && i < m->count; i++)
        if (m->items[i].type == MOE_JSON_NUMBER) put(ms, m->keys[i], m->items[i].number);
    moe_json_free(j);
    return 1;
}

int moe_run_lock(const char *dir, moe_err *err) {
    char p[4200];
    if (moe_rundir_path(p, sizeof p, dir, MOE_RUN_SWEEP_LOCK, err)) return -1;
    for (int attempt = 0; attempt < 2; attempt++) {
        int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd >= 0) {
            char pid[32];
            int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
            int ok = write(fd, pid, (size_t)n) == n;
            close(fd);
            return ok ? 1 : moe_errf(err, "cannot write %s", p);
        }
        if (errno != EEXIST) return moe_errf(err, "cannot create %s: %s", p, strerror(errno));
        FILE *f = fopen(p, "r");
        long holder = 0;
        if (f) { if (fscanf(f, "%ld", &holder) != 1) holder = 0; fclose(f); }
        if (holder > 0 && holder != (long)getpid() && (kill((pid_t)holder, 0) == 0 || errno == EPERM)) return 0;
        unlink(p);  /* stale: its sweep is gone */
    }
    return 0;
}

void moe_run_unlock(const char *dir) {
    char p[4200];
    if (!moe_rundir_path(p, sizeof p, dir, MOE_RUN_SWEEP_LOCK, NULL)) unlink(p);
}

int moe_sweep_run_dir(char *out, size_t cap, const char *sweep_out, const char *name, long seed, moe_err *err) {
    return moe_path(out, cap, err, "%s/%s/seed-%ld", sweep_out, name, seed);
}

int moe_sweep_config_path(char *out, size_t cap, const char *sweep_out, const char *name, long seed,
                          moe_err *err) {
    return moe_path(out, cap, err, "%s/configs/%s-seed-%ld.json", sweep_out, name, seed);
}

int moe_sweep_summary_of(char *out, size_t cap, const char *dir, moe_err *err) {
    return moe_path(out, cap, err, "%s/../../%s", dir, NAMES[MOE_SWEEP_SUMMARY]);
}
