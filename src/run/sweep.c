/* sweep.c — a sweep (include/moe/run/sweep.h, docs/SWEEP.md): the grid file
 * read and checked, each (config, seed) run by this program's own `train`
 * and `eval` as child processes, resumably and under a per-run lock, and
 * the finished runs aggregated into OUT/summary.json and OUT/summary.md:
 * mean ± std over seeds per run, paired differences against a baseline.
 * What it says to the user is the caller's (src/cli/sweep.c). */
#include "moe/run/sweep.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "moe/model/config.h"
#include "moe/util/fileio.h"
#include "moe/model/model.h"

/* ---- the grid file ------------------------------------------------------ */

static int str_list(const moe_json_value *v, const char *key, const char **out, size_t cap, size_t *n,
                    const char *path, moe_err *err) {
    *n = 0;
    if (!v) return 0;
    if (v->type == MOE_JSON_STRING) { out[(*n)++] = v->string; return 0; }
    if (v->type != MOE_JSON_ARRAY || v->count > cap)
        return moe_errf(err, "%s: key '%s': expected a string or an array of at most %zu strings", path, key, cap);
    for (size_t i = 0; i < v->count; i++) {
        if (v->items[i].type != MOE_JSON_STRING)
            return moe_errf(err, "%s: key '%s': element %zu is not a string", path, key, i);
        out[(*n)++] = v->items[i].string;
    }
    return 0;
}

/* A path of the grid file is relative to the current directory (as on the
 * command line); copied with a length check. */
static int copy_str(char *out, size_t cap, const moe_json_value *v, const char *key, const char *path,
                    moe_err *err) {
    if (!v || v->type != MOE_JSON_STRING || !v->string[0])
        return moe_errf(err, "%s: key '%s': expected a non-empty string", path, key);
    if (strlen(v->string) >= cap) return moe_errf(err, "%s: key '%s': too long", path, key);
    strcpy(out, v->string);
    return 0;
}

static int name_ok(const char *s) {
    if (!*s) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_' || *s == '.'))
            return 0;
    return 1;
}

static int load_seeds(moe_sweep *s, const moe_json_value *seeds, moe_err *err) {
    const char *path = s->path;
    if (!seeds || seeds->type != MOE_JSON_ARRAY || seeds->count == 0 || seeds->count > MOE_SWEEP_MAX_SEEDS)
        return moe_errf(err, "%s: key 'seeds': expected an array of 1 to %d integers", path, MOE_SWEEP_MAX_SEEDS);
    for (size_t i = 0; i < seeds->count; i++) {
        const moe_json_value *v = &seeds->items[i];
        if (v->type != MOE_JSON_NUMBER || v->number != floor(v->number) || v->number < 0 || v->number > 2147483647)
            return moe_errf(err, "%s: key 'seeds': element %zu: expected an integer in [0, 2147483647]", path, i);
        s->seeds[i] = (long)v->number;
        for (size_t j = 0; j < i; j++)
            if (s->seeds[j] == s->seeds[i]) return moe_errf(err, "%s: key 'seeds': %ld twice", path, s->seeds[i]);
    }
    s->n_seeds = seeds->count;
    return 0;
}

static int load_run(moe_sweep *s, size_t i, const moe_json_value *o, moe_err *err) {
    const char *path = s->path;
    moe_sweep_run *gr = &s->runs[i];
    if (o->type != MOE_JSON_OBJECT) return moe_errf(err, "%s: runs[%zu]: expected an object", path, i);
    for (size_t k = 0; k < o->count; k++)
        if (strcmp(o->keys[k], "name") && strcmp(o->keys[k], "config") && strcmp(o->keys[k], "set"))
            return moe_errf(err, "%s: runs[%zu]: unknown key '%s' (expected name, config, set)", path, i,
                            o->keys[k]);
    char key[80];
    snprintf(key, sizeof key, "runs[%zu].name", i);
    if (copy_str(gr->name, sizeof gr->name, moe_json_get(o, "name"), key, path, err)) return -1;
    if (!name_ok(gr->name))
        return moe_errf(err, "%s: runs[%zu].name '%s': use letters, digits, '-', '_' and '.' only", path, i,
                        gr->name);
    for (size_t j = 0; j < i; j++)
        if (!strcmp(s->runs[j].name, gr->name))
            return moe_errf(err, "%s: runs[%zu].name '%s' is used twice", path, i, gr->name);
    snprintf(key, sizeof key, "runs[%zu].config", i);
    if (copy_str(gr->config, sizeof gr->config, moe_json_get(o, "config"), key, path, err)) return -1;
    gr->set = moe_json_get(o, "set");
    if (gr->set && gr->set->type != MOE_JSON_OBJECT)
        return moe_errf(err, "%s: runs[%zu].set: expected an object of config keys", path, i);
    return 0;
}

static int load_runs(moe_sweep *s, const moe_json_value *runs, const moe_json_value *b, moe_err *err) {
    const char *path = s->path;
    if (!runs || runs->type != MOE_JSON_ARRAY || runs->count == 0 || runs->count > MOE_SWEEP_MAX_RUNS)
        return moe_errf(err, "%s: key 'runs': expected an array of 1 to %d objects", path, MOE_SWEEP_MAX_RUNS);
    for (size_t i = 0; i < runs->count; i++)
        if (load_run(s, i, &runs->items[i], err)) return -1;
    s->n_runs = runs->count;
    if (!b) return 0;
    if (b->type != MOE_JSON_STRING) return moe_errf(err, "%s: key 'baseline': expected a run name", path);
    size_t i = 0;
    while (i < s->n_runs && strcmp(s->runs[i].name, b->string)) i++;
    if (i == s->n_runs) return moe_errf(err, "%s: key 'baseline': no run is named '%s'", path, b->string);
    s->baseline = b->string;
    return 0;
}

int moe_sweep_load(moe_sweep *s, const char *path, moe_err *err) {
    memset(s, 0, sizeof *s);
    snprintf(s->path, sizeof s->path, "%s", path);
    s->root = moe_json_parse_file(path, err);
    if (!s->root) return -1;
    const moe_json_value *r = s->root;
    if (r->type != MOE_JSON_OBJECT) return moe_errf(err, "%s: expected a JSON object (docs/SWEEP.md)", path);
    static const char *KNOWN[] = {"out", "data", "eval_data", "eval_args", "train_args", "seeds", "set",
                                  "baseline", "runs", "comment"};
    for (size_t i = 0; i < r->count; i++) {
        size_t k = 0;
        while (k < sizeof KNOWN / sizeof KNOWN[0] && strcmp(KNOWN[k], r->keys[i])) k++;
        if (k == sizeof KNOWN / sizeof KNOWN[0])
            return moe_errf(err, "%s: unknown key '%s' (expected out, data, eval_data, eval_args, train_args, "
                            "seeds, set, baseline, runs, comment)", path, r->keys[i]);
    }
    if (copy_str(s->out, sizeof s->out, moe_json_get(r, "out"), "out", path, err) ||
        copy_str(s->data, sizeof s->data, moe_json_get(r, "data"), "data", path, err) ||
        str_list(moe_json_get(r, "eval_data"), "eval_data", s->eval_data, MOE_SWEEP_MAX_EVAL, &s->n_eval, path, err) ||
        str_list(moe_json_get(r, "train_args"), "train_args", s->train_args, MOE_SWEEP_MAX_ARGS, &s->n_train_args,
                 path, err) ||
        str_list(moe_json_get(r, "eval_args"), "eval_args", s->eval_args, MOE_SWEEP_MAX_ARGS, &s->n_eval_args, path,
                 err) ||
        load_seeds(s, moe_json_get(r, "seeds"), err))
        return -1;
    s->set = moe_json_get(r, "set");
    if (s->set && s->set->type != MOE_JSON_OBJECT)
        return moe_errf(err, "%s: key 'set': expected an object of config keys", path);
    return load_runs(s, moe_json_get(r, "runs"), moe_json_get(r, "baseline"), err);
}

void moe_sweep_free(moe_sweep *s) {
    moe_json_free(s->root);
    s->root = NULL;
}

int moe_sweep_dir(const moe_sweep *s, size_t r, size_t k, char *out, size_t cap, moe_err *err) {
    return moe_sweep_run_dir(out, cap, s->out, s->runs[r].name, s->seeds[k], err);
}

/* ---- configs ------------------------------------------------------------ */

/* The full config of (run, seed): the run's file, then the grid's "set",
 * the run's "set", and the seed; validated; its JSON text into *b. */
static int config_text(const moe_sweep *s, const moe_sweep_run *gr, long seed, moe_buf *b, moe_err *err) {
    moe_config c;
    moe_config_defaults(&c);
    moe_json_value *j = moe_json_parse_file(gr->config, err);
    if (!j) return moe_err_prefix(err, "%s: run '%s'", s->path, gr->name);
    int rc = moe_config_apply_json(&c, j, gr->config, err);
    moe_json_free(j);
    if (rc || (s->set && moe_config_apply_json(&c, s->set, "grid 'set'", err)) ||
        (gr->set && moe_config_apply_json(&c, gr->set, "run 'set'", err)))
        return moe_err_prefix(err, "%s: run '%s'", s->path, gr->name);
    c.seed = (int)seed;
    if (moe_config_finalize(&c, err)) return moe_err_prefix(err, "%s: run '%s'", s->path, gr->name);
    if (moe_config_to_json(&c, b) || !b->data) { moe_buf_free(b); return moe_errf(err, "out of memory"); }
    return 0;
}

/* The config of (run, seed), written as OUT/configs/NAME-seed-S.json. */
static int write_config(const moe_sweep *s, const moe_sweep_run *gr, long seed, char *out, size_t cap,
                        moe_err *err) {
    moe_buf b = {0};
    char dir[4096];
    if (config_text(s, gr, seed, &b, err)) return -1;
    int rc = moe_path(dir, sizeof dir, err, "%s/configs", s->out) || moe_mkdirs(dir, err) ||
             moe_sweep_config_path(out, cap, s->out, gr->name, seed, err) ||
             moe_write_file_atomic(out, b.data, b.len, err) ? -1 : 0;
    moe_buf_free(&b);
    return rc;
}

/* A config value as text for a message. */
static void value_text(const moe_json_value *v, char *out, size_t cap) {
    if (v->type == MOE_JSON_STRING) snprintf(out, cap, "\"%.60s\"", v->string);
    else if (v->type == MOE_JSON_NUMBER) snprintf(out, cap, "%.10g", v->number);
    else if (v->type == MOE_JSON_BOOL) snprintf(out, cap, "%s", v->boolean ? "true" : "false");
    else snprintf(out, cap, "%s", v->type == MOE_JSON_NULL ? "null" : "...");
}

/* A run that has trained with another config than the grid now gives it is
 * refused. The config it ran with is OUT/configs/NAME-seed-S.json, written
 * when it started; keys that only one of the two configs has (a newer
 * moe's) are not compared. */
static int check_unchanged(const moe_sweep *s, const moe_sweep_run *gr, long seed, const char *dir,
                           moe_err *err) {
    char path[4200];
    if (moe_sweep_config_path(path, sizeof path, s->out, gr->name, seed, err)) return -1;
    if (access(path, F_OK)) return 0;
    moe_buf b = {0};
    if (config_text(s, gr, seed, &b, err)) return -1;
    moe_json_value *now = moe_json_parse(b.data, b.len, "the grid's config", err), *was = now ? moe_json_parse_file(path, err) : NULL;
    moe_buf_free(&b);
    if (!was) { moe_json_free(now); return -1; }
    char diff[600] = "", x[80], y[80];
    size_t used = 0, n = 0;
    for (size_t i = 0; was->type == MOE_JSON_OBJECT && i < was->count; i++) {
        const moe_json_value *a = &was->items[i], *c = moe_json_get(now, was->keys[i]);
        if (!c || a->type != c->type) continue;
        value_text(a, x, sizeof x);
        value_text(c, y, sizeof y);
        if (!strcmp(x, y)) continue;
        if (n++ < 4 && used + 200 < sizeof diff)
            used += (size_t)snprintf(diff + used, sizeof diff - used, "%s%s: %s, now %s", used ? "; " : "",
                                     was->keys[i], x, y);
    }
    moe_json_free(now);
    moe_json_free(was);
    if (!n) return 0;
    return moe_errf(err, "%s ran with another config than %s now gives it (%s%s): its results would be reported "
                    "as the new grid's; remove %s to run it again, or give the grid another \"out\"", dir,
                    s->path, diff, n > 4 ? "; ..." : "", dir);
}

int moe_sweep_check(const moe_sweep *s, moe_err *err) {
    for (size_t r = 0; r < s->n_runs; r++)
        for (size_t k = 0; k < s->n_seeds; k++) {
            char dir[4096];
            if (moe_sweep_dir(s, r, k, dir, sizeof dir, err)) return -1;
            if (moe_run_state_of(dir) != MOE_RUN_NEW && check_unchanged(s, &s->runs[r], s->seeds[k], dir, err))
                return -1;
        }
    for (size_t r = 0; r < s->n_runs; r++) {
        char cfg[4096];
        if (write_config(s, &s->runs[r], s->seeds[0], cfg, sizeof cfg, err)) return -1;
    }
    return 0;
}

/* ---- running -------------------------------------------------------------- */

/* Runs this program with args, its stdout and stderr appended to log;
 * returns its exit status (128 + signal when killed), -1 if it could not start. */
static int run_self(moe_sweep *s, const char *const *args, size_t n, const char *log, moe_err *err) {
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0) return moe_errf(err, "cannot find this program (/proc/self/exe): %s", strerror(errno));
    self[len] = 0;
    const char *argv[MOE_SWEEP_MAX_ARGS * 2 + 16];
    argv[0] = self;
    for (size_t i = 0; i < n; i++) argv[i + 1] = args[i];
    argv[n + 1] = NULL;
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) return moe_errf(err, "cannot open %s: %s", log, strerror(errno));
    pid_t pid = fork();
    if (pid < 0) { close(fd); return moe_errf(err, "fork: %s", strerror(errno)); }
    if (pid == 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
        /* /proc/self/exe, not its target: it still runs when the binary
         * has been replaced on disk since this sweep started */
        execv("/proc/self/exe", (char *const *)argv);
        _exit(127);
    }
    close(fd);
    s->child = pid;
    if (s->stop) kill(pid, s->stop);  /* a signal that came just before the fork */
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) { s->child = 0; return moe_errf(err, "waitpid: %s", strerror(errno)); }
    s->child = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Trains (or resumes) and evaluates one run; 0 done, >0 the child's failing
 * status (the sweep stops), -1 an error of the sweep itself. */
static int train_and_eval(moe_sweep *s, const moe_sweep_run *gr, long seed, const char *dir, moe_run_state st,
                          moe_err *err) {
    char cfg[4096], log[4200];
    const char *args[MOE_SWEEP_MAX_ARGS * 2 + 16];
    size_t n = 0;
    if (moe_mkdirs(dir, err) || write_config(s, gr, seed, cfg, sizeof cfg, err)) return -1;
    args[n++] = "train";
    if (st == MOE_RUN_INTERRUPTED) { args[n++] = "--resume"; args[n++] = dir; }
    else { args[n++] = "--config"; args[n++] = cfg; args[n++] = "--out"; args[n++] = dir; }
    args[n++] = "--data";
    args[n++] = s->data;
    for (size_t i = 0; i < s->n_train_args; i++) args[n++] = s->train_args[i];
    if (moe_rundir_path(log, sizeof log, dir, MOE_RUN_TRAIN_LOG, err)) return -1;
    int rc = run_self(s, args, n, log, err);
    if (rc) return rc < 0 ? -1 : rc;
    if (!s->n_eval) return 0;
    n = 0;
    args[n++] = "eval";
    args[n++] = "--model";
    args[n++] = dir;
    for (size_t i = 0; i < s->n_eval; i++) { args[n++] = "--data"; args[n++] = s->eval_data[i]; }
    for (size_t i = 0; i < s->n_eval_args; i++) args[n++] = s->eval_args[i];
    if (moe_rundir_path(log, sizeof log, dir, MOE_RUN_EVAL_LOG, err)) return -1;
    rc = run_self(s, args, n, log, err);
    return rc < 0 ? -1 : rc;
}

int moe_sweep_run_one(moe_sweep *s, size_t r, size_t k, moe_sweep_outcome *o, moe_err *err) {
    const moe_sweep_run *gr = &s->runs[r];
    char dir[4096];
    memset(o, 0, sizeof *o);
    if (moe_sweep_dir(s, r, k, dir, sizeof dir, err)) return -1;
    o->was = moe_run_state_of(dir);
    if (o->was == MOE_RUN_DONE) { o->result = MOE_SWEEP_DONE_EARLIER; return 0; }
    if (moe_mkdirs(dir, err)) return -1;
    int locked = moe_run_lock(dir, err);
    if (locked < 0) return -1;
    if (!locked) { o->result = MOE_SWEEP_BUSY; return 0; }
    o->was = moe_run_state_of(dir);  /* another sweep may have finished it meanwhile */
    if (o->was == MOE_RUN_DONE) { moe_run_unlock(dir); o->result = MOE_SWEEP_DONE_ELSEWHERE; return 0; }
    double t0 = moe_now_seconds();
    int crc = train_and_eval(s, gr, s->seeds[k], dir, o->was, err);
    moe_run_unlock(dir);
    if (crc < 0) return -1;
    if (s->stop) { o->result = MOE_SWEEP_STOPPED; return 0; }
    if (crc > 0)
        return moe_errf(err, "%s seed %ld failed (exit status %d): see %s/%s and %s/%s", gr->name, s->seeds[k], crc,
                        dir, moe_rundir_name(MOE_RUN_TRAIN_LOG), dir, moe_rundir_name(MOE_RUN_EVAL_LOG));
    o->seconds = moe_now_seconds() - t0;
    if (moe_run_collect(dir, o->seconds, &o->metrics, err) ||
        moe_run_mark_done(dir, gr->name, s->seeds[k], &o->metrics, err))
        return -1;
    o->result = MOE_SWEEP_FINISHED;
    return 0;
}

/* ---- aggregation ---------------------------------------------------------- */

/* mean and sample standard deviation (n - 1; 0 for one value) of v[n] */
static void mean_std(const double *v, size_t n, double *mean, double *std) {
    double s = 0, q = 0;
    for (size_t i = 0; i < n; i++) s += v[i];
    *mean = n ? s / (double)n : NAN;
    for (size_t i = 0; i < n; i++) q += (v[i] - *mean) * (v[i] - *mean);
    *std = n > 1 ? sqrt(q / (double)(n - 1)) : 0.0;
}

static void stat_json(moe_buf *b, const double *v, size_t n) {
    double m, s;
    mean_std(v, n, &m, &s);
    moe_buf_printf(b, "{\"mean\": ");
    moe_json_write_double(b, m);
    moe_buf_printf(b, ", \"std\": ");
    moe_json_write_double(b, s);
    moe_buf_printf(b, ", \"n\": %zu, \"values\": [", n);
    for (size_t i = 0; i < n; i++) { moe_buf_printf(b, "%s", i ? ", " : ""); moe_json_write_double(b, v[i]); }
    moe_buf_printf(b, "]}");
}

/* The finished runs' metrics, [R*S] (run r, seed k at r*S + k), and the
 * metric keys in first-seen order. */
typedef struct results {
    size_t R, S;
    moe_run_metrics *all;
    int *have;              /* 1: run (r, k) is finished */
    char (*keys)[96];       /* [nk] */
    size_t nk;
    long base;              /* the baseline's run index, -1: none */
} results;

static int results_load(const moe_sweep *s, results *x, moe_err *err) {
    memset(x, 0, sizeof *x);
    x->R = s->n_runs;
    x->S = s->n_seeds;
    x->base = -1;
    x->all = moe_calloc(x->R * x->S, sizeof *x->all, err);
    x->have = x->all ? moe_calloc(x->R * x->S, sizeof *x->have, err) : NULL;
    x->keys = x->have ? moe_calloc(MOE_RUN_MAX_METRICS, sizeof *x->keys, err) : NULL;
    if (!x->keys) return -1;
    for (size_t r = 0; r < x->R; r++)
        for (size_t k = 0; k < x->S; k++) {
            char dir[4096];
            if (moe_sweep_dir(s, r, k, dir, sizeof dir, err)) return -1;
            if ((x->have[r * x->S + k] = moe_run_read_done(dir, &x->all[r * x->S + k], err)) < 0) return -1;
        }
    for (size_t i = 0; i < x->R * x->S; i++)
        for (size_t m = 0; m < x->all[i].n; m++) {
            size_t k = 0;
            while (k < x->nk && strcmp(x->keys[k], x->all[i].m[m].key)) k++;
            if (k == x->nk && x->nk < MOE_RUN_MAX_METRICS) snprintf(x->keys[x->nk++], 96, "%s", x->all[i].m[m].key);
        }
    for (size_t r = 0; s->baseline && r < x->R; r++) if (!strcmp(s->runs[r].name, s->baseline)) x->base = (long)r;
    return 0;
}

static void results_free(results *x) {
    free(x->all);
    free(x->have);
    free(x->keys);
}

/* The headline metric: the first eval file's loss, else the training loss. */
static const char *headline(const results *x) {
    for (size_t k = 0; k < x->nk; k++) {
        size_t l = strlen(x->keys[k]);
        if (l > 5 && !strcmp(x->keys[k] + l - 5, ".loss")) return x->keys[k];
    }
    return "train_loss";
}

/* Metric key of run r (finished seeds where it is finite) into v; the count. */
static size_t values(const results *x, size_t r, const char *key, double *v) {
    size_t n = 0;
    for (size_t k = 0; k < x->S; k++) {
        double a = x->have[r * x->S + k] > 0 ? moe_run_metric(&x->all[r * x->S + k], key) : NAN;
        if (isfinite(a)) v[n++] = a;
    }
    return n;
}

/* Run r minus the baseline, seed by seed where both are finite, into w. */
static size_t paired(const results *x, size_t r, const char *key, double *w) {
    size_t n = 0, b = (size_t)x->base;
    for (size_t k = 0; k < x->S && b != r; k++) {
        double a = x->have[r * x->S + k] > 0 ? moe_run_metric(&x->all[r * x->S + k], key) : NAN;
        double c = x->have[b * x->S + k] > 0 ? moe_run_metric(&x->all[b * x->S + k], key) : NAN;
        if (isfinite(a) && isfinite(c)) w[n++] = a - c;
    }
    return n;
}

/* {"KEY": {mean, std, n, values}, ...} over the metrics that have values:
 * run r's own, or (minus_baseline) its paired differences against the
 * baseline, seed by seed. */
static void metrics_json(moe_buf *b, const results *x, size_t r, int minus_baseline) {
    double v[MOE_SWEEP_MAX_SEEDS];
    moe_buf_printf(b, "{");
    for (size_t k = 0, first = 1; k < x->nk; k++) {
        size_t n = minus_baseline ? paired(x, r, x->keys[k], v) : values(x, r, x->keys[k], v);
        if (!n) continue;
        moe_buf_printf(b, "%s\"%s\": ", first ? "" : ", ", x->keys[k]);
        first = 0;
        stat_json(b, v, n);
    }
    moe_buf_printf(b, "}");
}

/* summary.json's cell of run r. */
static void cell_json(moe_buf *b, const moe_sweep *s, const results *x, size_t r) {
    size_t done = 0;
    for (size_t k = 0; k < x->S; k++) done += x->have[r * x->S + k] > 0;
    moe_buf_printf(b, "%s\n {\"name\": ", r ? "," : "");
    moe_json_write_string(b, s->runs[r].name, strlen(s->runs[r].name));
    moe_buf_printf(b, ", \"config\": ");
    moe_json_write_string(b, s->runs[r].config, strlen(s->runs[r].config));
    moe_buf_printf(b, ", \"seeds_done\": %zu, \"metrics\": ", done);
    metrics_json(b, x, r, 0);
    if (x->base >= 0 && (size_t)x->base != r) {
        moe_buf_printf(b, ", \"minus_baseline\": ");
        metrics_json(b, x, r, 1);
    }
    moe_buf_printf(b, "}");
}

/* summary.md's row of run r: the headline, its paired difference, the
 * other metrics. */
static void cell_md(moe_buf *md, const moe_sweep *s, const results *x, size_t r, const char *head) {
    double v[MOE_SWEEP_MAX_SEEDS], m, sd;
    size_t done = 0;
    for (size_t k = 0; k < x->S; k++) done += x->have[r * x->S + k] > 0;
    moe_buf_printf(md, "| %s | %zu/%zu |", s->runs[r].name, done, x->S);
    for (int pass = 0; pass < 2; pass++)
        for (size_t k = 0; k < x->nk; k++) {
            if ((pass == 0) != !strcmp(x->keys[k], head)) continue;
            size_t n = values(x, r, x->keys[k], v);
            mean_std(v, n, &m, &sd);
            if (n) moe_buf_printf(md, " %.4f ± %.4f |", m, sd); else moe_buf_printf(md, " — |");
            if (pass == 0 && x->base >= 0) {
                size_t np = paired(x, r, head, v);
                mean_std(v, np, &m, &sd);
                if (np) moe_buf_printf(md, " %+.4f ± %.4f (n=%zu) |", m, sd, np);
                else moe_buf_printf(md, " %s |", (size_t)x->base == r ? "(baseline)" : "—");
            }
        }
    moe_buf_printf(md, "\n");
}

/* The finished runs' train_seconds summed, in hours: what the grid cost
 * (times the threads per run for core-hours); *timed of the *done runs
 * have it. */
static void train_hours(const results *x, double *hours, size_t *timed, size_t *done) {
    for (size_t i = 0; i < x->R * x->S; i++) {
        if (x->have[i] <= 0) continue;
        (*done)++;
        double t = moe_run_metric(&x->all[i], "train_seconds");
        if (isfinite(t)) { *hours += t / 3600.0; (*timed)++; }
    }
}

static void summary_texts(const moe_sweep *s, const results *x, moe_buf *b, moe_buf *md) {
    const char *head = headline(x);
    moe_buf_printf(b, "{\"format\": \"moe-sweep-summary\", \"version\": 1, \"grid\": ");
    moe_json_write_string(b, s->path, strlen(s->path));
    moe_buf_printf(b, ", \"seeds\": [");
    for (size_t k = 0; k < x->S; k++) moe_buf_printf(b, "%s%ld", k ? ", " : "", s->seeds[k]);
    moe_buf_printf(b, "], \"headline\": ");
    moe_json_write_string(b, head, strlen(head));
    moe_buf_printf(b, ",\n\"cells\": [");
    moe_buf_printf(md, "| run | seeds done | %s (mean ± std) |%s", head,
                   x->base >= 0 ? " − baseline (paired mean ± std) |" : "");
    for (size_t k = 0; k < x->nk; k++)
        if (strcmp(x->keys[k], head)) moe_buf_printf(md, " %s |", x->keys[k]);
    moe_buf_printf(md, "\n|---|---|---|%s", x->base >= 0 ? "---|" : "");
    for (size_t k = 0; k < x->nk; k++) if (strcmp(x->keys[k], head)) moe_buf_printf(md, "---|");
    moe_buf_printf(md, "\n");
    for (size_t r = 0; r < x->R; r++) {
        cell_json(b, s, x, r);
        cell_md(md, s, x, r, head);
    }
    moe_buf_printf(b, "]");
    double hours = 0;
    size_t timed = 0, done = 0;
    train_hours(x, &hours, &timed, &done);
    moe_buf_printf(b, ",\n\"train_hours\": ");
    moe_json_write_double(b, hours);
    moe_buf_printf(b, ", \"runs_timed\": %zu, \"runs_done\": %zu", timed, done);
    moe_buf_printf(md, "\nTraining time: %.2f hours over %zu finished run%s (train_seconds summed%s).\n", hours,
                   timed, timed == 1 ? "" : "s", timed < done ? "; runs finished by an older moe are not timed" : "");
    if (x->base >= 0) {
        moe_buf_printf(b, ",\n\"baseline\": ");
        moe_json_write_string(b, s->baseline, strlen(s->baseline));
    }
    moe_buf_printf(b, "}\n");
}

int moe_sweep_aggregate(const moe_sweep *s, moe_buf *md, moe_err *err) {
    results x;
    moe_buf b = {0};
    char p[4200];
    *md = (moe_buf){0};
    int rc = results_load(s, &x, err);
    if (!rc) summary_texts(s, &x, &b, md);
    if (!rc && (!b.data || !md->data)) rc = moe_errf(err, "out of memory");
    if (!rc && (moe_mkdirs(s->out, err) || moe_rundir_path(p, sizeof p, s->out, MOE_SWEEP_SUMMARY, err) ||
                moe_write_file_atomic(p, b.data, b.len, err) ||
                moe_rundir_path(p, sizeof p, s->out, MOE_SWEEP_SUMMARY_MD, err) ||
                moe_write_file_atomic(p, md->data, md->len, err)))
        rc = -1;
    if (rc) moe_buf_free(md);
    moe_buf_free(&b);
    results_free(&x);
    return rc;
}

int moe_sweep_report(moe_sweep *s, moe_err *err) {
    char (*dirs)[4096] = moe_calloc(64, sizeof *dirs, err);
    if (!dirs) return -1;
    const char *args[64 + 8];
    size_t n = 0, nd = 0;
    int rc = 0;
    args[n++] = "report";
    for (size_t r = 0; r < s->n_runs && nd < 64 && !rc; r++)
        for (size_t k = 0; k < s->n_seeds; k++) {
            if (moe_sweep_dir(s, r, k, dirs[nd], sizeof dirs[nd], err)) { rc = -1; break; }
            if (moe_run_state_of(dirs[nd]) != MOE_RUN_DONE) continue;
            args[n++] = dirs[nd++];
            break;
        }
    char out[4200], log[4200];
    if (!rc && nd) {  /* some run is finished: draw the report */
        if (moe_rundir_path(out, sizeof out, s->out, MOE_RUN_REPORT, err) ||
            moe_rundir_path(log, sizeof log, s->out, MOE_SWEEP_REPORT_LOG, err)) {
            rc = -1;
        } else {
            args[n++] = "--out";
            args[n++] = out;
            int status = run_self(s, args, n, log, err);
            rc = status < 0 ? -1 : status ? 2 : 1;
        }
    }
    free(dirs);
    return rc;
}
