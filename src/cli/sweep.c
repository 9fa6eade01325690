/* sweep.c — `moe sweep --grid FILE`: trains every (config, seed) of a grid
 * (docs/SWEEP.md) one after the other by running this program's own `train`
 * and `eval`, resumably: a finished run (RUN/sweep.json) is skipped, an
 * interrupted one continues with `train --resume`. One progress line per
 * run with an ETA for the grid; then mean ± std over seeds per cell and
 * paired differences against a baseline cell, as OUT/summary.json and
 * OUT/summary.md. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "moe/config.h"
#include "moe/fileio.h"
#include "moe/json.h"
#include "moe/model.h"

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

#define MAX_RUNS 256
#define MAX_SEEDS 64
#define MAX_ARGS 64
#define MAX_METRICS 64

typedef struct {
    char name[128];
    char config[4096];
    const json_value *set;   /* the run's own overrides (NULL: none) */
} grid_run;

typedef struct {
    json_value *root;
    char path[4096], out[4096], data[4096];
    const char *eval_data[16];
    size_t n_eval;
    const char *train_args[MAX_ARGS], *eval_args[MAX_ARGS];
    size_t n_train_args, n_eval_args;
    const json_value *set;
    long seeds[MAX_SEEDS];
    size_t n_seeds;
    grid_run runs[MAX_RUNS];
    size_t n_runs;
    const char *baseline;
} grid;

static volatile sig_atomic_t stop_sig = 0;
static volatile pid_t child_pid = 0;
static void on_signal(int sig) {
    stop_sig = sig;
    if (child_pid > 0) kill(child_pid, sig);
}

/* ---- the grid file ------------------------------------------------------ */

static int str_list(const json_value *v, const char *key, const char **out, size_t cap, size_t *n,
                    const char *path, moe_err *err) {
    *n = 0;
    if (!v) return 0;
    if (v->type == JSON_STRING) { out[(*n)++] = v->string; return 0; }
    if (v->type != JSON_ARRAY || v->count > cap)
        return moe_errf(err, "%s: key '%s': expected a string or an array of at most %zu strings", path, key, cap);
    for (size_t i = 0; i < v->count; i++) {
        if (v->items[i].type != JSON_STRING)
            return moe_errf(err, "%s: key '%s': element %zu is not a string", path, key, i);
        out[(*n)++] = v->items[i].string;
    }
    return 0;
}

/* A path of the grid file is relative to the current directory (as on the
 * command line); copied with a length check. */
static int copy_str(char *out, size_t cap, const json_value *v, const char *key, const char *path,
                    moe_err *err) {
    if (!v || v->type != JSON_STRING || !v->string[0])
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

static int grid_load(grid *g, const char *path, moe_err *err) {
    memset(g, 0, sizeof *g);
    snprintf(g->path, sizeof g->path, "%s", path);
    g->root = json_parse_file(path, err);
    if (!g->root) return -1;
    const json_value *r = g->root;
    if (r->type != JSON_OBJECT) return moe_errf(err, "%s: expected a JSON object (docs/SWEEP.md)", path);
    static const char *KNOWN[] = {"out", "data", "eval_data", "eval_args", "train_args", "seeds", "set",
                                  "baseline", "runs", "comment"};
    for (size_t i = 0; i < r->count; i++) {
        size_t k = 0;
        while (k < sizeof KNOWN / sizeof KNOWN[0] && strcmp(KNOWN[k], r->keys[i])) k++;
        if (k == sizeof KNOWN / sizeof KNOWN[0])
            return moe_errf(err, "%s: unknown key '%s' (expected out, data, eval_data, eval_args, train_args, "
                            "seeds, set, baseline, runs, comment)", path, r->keys[i]);
    }
    if (copy_str(g->out, sizeof g->out, json_get(r, "out"), "out", path, err) ||
        copy_str(g->data, sizeof g->data, json_get(r, "data"), "data", path, err) ||
        str_list(json_get(r, "eval_data"), "eval_data", g->eval_data, 16, &g->n_eval, path, err) ||
        str_list(json_get(r, "train_args"), "train_args", g->train_args, MAX_ARGS, &g->n_train_args, path, err) ||
        str_list(json_get(r, "eval_args"), "eval_args", g->eval_args, MAX_ARGS, &g->n_eval_args, path, err))
        return -1;
    const json_value *seeds = json_get(r, "seeds");
    if (!seeds || seeds->type != JSON_ARRAY || seeds->count == 0 || seeds->count > MAX_SEEDS)
        return moe_errf(err, "%s: key 'seeds': expected an array of 1 to %d integers", path, MAX_SEEDS);
    for (size_t i = 0; i < seeds->count; i++) {
        const json_value *s = &seeds->items[i];
        if (s->type != JSON_NUMBER || s->number != floor(s->number) || s->number < 0 || s->number > 2147483647)
            return moe_errf(err, "%s: key 'seeds': element %zu: expected an integer in [0, 2147483647]", path, i);
        g->seeds[i] = (long)s->number;
        for (size_t j = 0; j < i; j++)
            if (g->seeds[j] == g->seeds[i]) return moe_errf(err, "%s: key 'seeds': %ld twice", path, g->seeds[i]);
    }
    g->n_seeds = seeds->count;
    g->set = json_get(r, "set");
    if (g->set && g->set->type != JSON_OBJECT)
        return moe_errf(err, "%s: key 'set': expected an object of config keys", path);
    const json_value *runs = json_get(r, "runs");
    if (!runs || runs->type != JSON_ARRAY || runs->count == 0 || runs->count > MAX_RUNS)
        return moe_errf(err, "%s: key 'runs': expected an array of 1 to %d objects", path, MAX_RUNS);
    for (size_t i = 0; i < runs->count; i++) {
        const json_value *o = &runs->items[i];
        grid_run *gr = &g->runs[i];
        char what[64];
        snprintf(what, sizeof what, "runs[%zu].", i);
        if (o->type != JSON_OBJECT) return moe_errf(err, "%s: runs[%zu]: expected an object", path, i);
        for (size_t k = 0; k < o->count; k++)
            if (strcmp(o->keys[k], "name") && strcmp(o->keys[k], "config") && strcmp(o->keys[k], "set"))
                return moe_errf(err, "%s: runs[%zu]: unknown key '%s' (expected name, config, set)", path, i,
                                o->keys[k]);
        char key[80];
        snprintf(key, sizeof key, "%sname", what);
        if (copy_str(gr->name, sizeof gr->name, json_get(o, "name"), key, path, err)) return -1;
        if (!name_ok(gr->name))
            return moe_errf(err, "%s: runs[%zu].name '%s': use letters, digits, '-', '_' and '.' only", path, i,
                            gr->name);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(g->runs[j].name, gr->name))
                return moe_errf(err, "%s: runs[%zu].name '%s' is used twice", path, i, gr->name);
        snprintf(key, sizeof key, "%sconfig", what);
        if (copy_str(gr->config, sizeof gr->config, json_get(o, "config"), key, path, err)) return -1;
        gr->set = json_get(o, "set");
        if (gr->set && gr->set->type != JSON_OBJECT)
            return moe_errf(err, "%s: runs[%zu].set: expected an object of config keys", path, i);
    }
    g->n_runs = runs->count;
    const json_value *b = json_get(r, "baseline");
    if (b) {
        if (b->type != JSON_STRING) return moe_errf(err, "%s: key 'baseline': expected a run name", path);
        size_t i = 0;
        while (i < g->n_runs && strcmp(g->runs[i].name, b->string)) i++;
        if (i == g->n_runs) return moe_errf(err, "%s: key 'baseline': no run is named '%s'", path, b->string);
        g->baseline = b->string;
    }
    return 0;
}

/* The full config of (run, seed): the run's file, then the grid's "set",
 * the run's "set", and the seed; validated; its JSON text into *b. */
static int config_text(const grid *g, const grid_run *gr, long seed, moe_buf *b, moe_err *err) {
    moe_config c;
    moe_config_defaults(&c);
    json_value *j = json_parse_file(gr->config, err);
    if (!j) return moe_err_prefix(err, "%s: run '%s'", g->path, gr->name);
    int rc = moe_config_apply_json(&c, j, gr->config, err);
    json_free(j);
    if (rc || (g->set && moe_config_apply_json(&c, g->set, "grid 'set'", err)) ||
        (gr->set && moe_config_apply_json(&c, gr->set, "run 'set'", err)))
        return moe_err_prefix(err, "%s: run '%s'", g->path, gr->name);
    c.seed = (int)seed;
    if (moe_config_finalize(&c, err)) return moe_err_prefix(err, "%s: run '%s'", g->path, gr->name);
    if (moe_config_to_json(&c, b) || !b->data) { moe_buf_free(b); return moe_errf(err, "out of memory"); }
    return 0;
}

/* The config of (run, seed), written as OUT/configs/NAME-seed-S.json. */
static int write_config(const grid *g, const grid_run *gr, long seed, char *out, size_t cap, moe_err *err) {
    moe_buf b = {0};
    char dir[4096];
    if (config_text(g, gr, seed, &b, err)) return -1;
    int rc = moe_path(dir, sizeof dir, err, "%s/configs", g->out) || moe_mkdirs(dir, err) ||
             moe_path(out, cap, err, "%s/%s-seed-%ld.json", dir, gr->name, seed) ||
             moe_write_file_atomic(out, b.data, b.len, err) ? -1 : 0;
    moe_buf_free(&b);
    return rc;
}

/* A config value as text for a message. */
static void value_text(const json_value *v, char *out, size_t cap) {
    if (v->type == JSON_STRING) snprintf(out, cap, "\"%.60s\"", v->string);
    else if (v->type == JSON_NUMBER) snprintf(out, cap, "%.10g", v->number);
    else if (v->type == JSON_BOOL) snprintf(out, cap, "%s", v->boolean ? "true" : "false");
    else snprintf(out, cap, "%s", v->type == JSON_NULL ? "null" : "...");
}

/* A run that has trained (done or interrupted) with another config than the
 * grid now gives for it is refused: its results would be reported as the new
 * grid's. The config it ran with is OUT/configs/NAME-seed-S.json, written when
 * it started; keys that only one of the two configs has (a newer moe's) are
 * not compared. */
static int check_unchanged(const grid *g, const grid_run *gr, long seed, const char *dir, moe_err *err) {
    char path[4200];
    snprintf(path, sizeof path, "%s/configs/%s-seed-%ld.json", g->out, gr->name, seed);
    if (access(path, F_OK)) return 0;
    moe_buf b = {0};
    if (config_text(g, gr, seed, &b, err)) return -1;
    json_value *now = json_parse(b.data, b.len, "the grid's config", err), *was = now ? json_parse_file(path, err) : NULL;
    moe_buf_free(&b);
    if (!was) { json_free(now); return -1; }
    char diff[600] = "", x[80], y[80];
    size_t used = 0, n = 0;
    for (size_t i = 0; was->type == JSON_OBJECT && i < was->count; i++) {
        const json_value *a = &was->items[i], *c = json_get(now, was->keys[i]);
        if (!c || a->type != c->type) continue;
        value_text(a, x, sizeof x);
        value_text(c, y, sizeof y);
        if (!strcmp(x, y)) continue;
        if (n++ < 4 && used + 200 < sizeof diff)
            used += (size_t)snprintf(diff + used, sizeof diff - used, "%s%s: %s, now %s", used ? "; " : "",
                                     was->keys[i], x, y);
    }
    json_free(now);
    json_free(was);
    if (!n) return 0;
    return moe_errf(err, "%s ran with another config than %s now gives it (%s%s): its results would be reported "
                    "as the new grid's; remove %s to run it again, or give the grid another \"out\"", dir,
                    g->path, diff, n > 4 ? "; ..." : "", dir);
}

/* ---- running -------------------------------------------------------------- */

/* Runs this program with args, its stdout and stderr appended to log;
 * returns its exit status (128 + signal when killed), -1 if it could not start. */
static int run_self(const char *const *args, size_t n, const char *log, moe_err *err) {
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0) return moe_errf(err, "cannot find this program (/proc/self/exe): %s", strerror(errno));
    self[len] = 0;
    const char *argv[MAX_ARGS * 2 + 16];
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
    child_pid = pid;
    if (stop_sig) kill(pid, stop_sig);  /* a signal that came just before the fork */
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) { child_pid = 0; return moe_errf(err, "waitpid: %s", strerror(errno)); }
    child_pid = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

typedef enum { RUN_NEW, RUN_INTERRUPTED, RUN_DONE } run_state;

static run_state state_of(const char *dir) {
    char p[4200];
    snprintf(p, sizeof p, "%s/sweep.json", dir);
    if (!access(p, F_OK)) return RUN_DONE;
    char ck[4096];
    moe_err ignored;
    return moe_resolve_checkpoint(dir, ck, sizeof ck, &ignored) ? RUN_NEW : RUN_INTERRUPTED;
}

/* RUN/sweep.lock holds the pid of the sweep running RUN, so that several
 * sweep processes can share one grid (each takes the runs nobody holds).
 * Returns 1 if taken, 0 if a live process holds it, -1 on error. A lock
 * whose process is gone is taken over. */
static int lock_run(const char *dir, moe_err *err) {
    char p[4200];
    snprintf(p, sizeof p, "%s/sweep.lock", dir);
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

static void unlock_run(const char *dir) {
    char p[4200];
    snprintf(p, sizeof p, "%s/sweep.lock", dir);
    unlink(p);
}

static void fmt_dur(char *out, size_t cap, double s) {
    if (s < 60) snprintf(out, cap, "%.0fs", s);
    else if (s < 3600) snprintf(out, cap, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(out, cap, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- metrics of a finished run ------------------------------------------ */

typedef struct { char key[96]; double value; } metric;
typedef struct { metric m[MAX_METRICS]; size_t n; } metrics;

static void put(metrics *ms, const char *key, double v) {
    if (ms->n >= MAX_METRICS || !isfinite(v)) return;
    snprintf(ms->m[ms->n].key, sizeof ms->m[ms->n].key, "%s", key);
    ms->m[ms->n++].value = v;
}

static double num(const json_value *o, const char *key) {
    const json_value *v = o ? json_get(o, key) : NULL;
    return v && v->type == JSON_NUMBER ? v->number : NAN;
}

/* From RUN/metrics.jsonl: the mean lm_loss and sparsity over the last tenth
 * of the steps (at least one); from RUN/eval.json: loss and ppl per data file
 * (and with the top expert dropped), acc and acc_norm per task. */
static int collect(const char *dir, double seconds, metrics *ms, moe_err *err) {
    memset(ms, 0, sizeof *ms);
    char p[4200];
    snprintf(p, sizeof p, "%s/metrics.jsonl", dir);
    FILE *f = fopen(p, "r");
    if (!f) return moe_errf(err, "%s: %s", p, strerror(errno));
    size_t cap = 0, n = 0;
    double *loss = NULL, *sp = NULL;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    while ((len = getline(&line, &lcap, f)) > 0) {
        moe_err e2;
        json_value *j = json_parse(line, (size_t)len, p, &e2);
        if (!j) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 256;
            double *a = realloc(loss, cap * sizeof *a), *b = a ? realloc(sp, cap * sizeof *b) : NULL;
            if (a) loss = a;
            if (b) sp = b;
            if (!a || !b) { json_free(j); fclose(f); free(line); free(loss); free(sp); return moe_errf(err, "out of memory"); }
        }
        loss[n] = num(j, "lm_loss");
        sp[n++] = num(j, "sparsity");
        json_free(j);
    }
    free(line);
    fclose(f);
    size_t tail = n / 10 ? n / 10 : n, nl = 0, ns = 0;
    double sl = 0, ss = 0;
    for (size_t i = n - tail; i < n; i++) {
        if (isfinite(loss[i])) { sl += loss[i]; nl++; }
        if (isfinite(sp[i])) { ss += sp[i]; ns++; }
    }
    free(loss);
    free(sp);
    if (nl) put(ms, "train_loss", sl / (double)nl);
    if (ns) put(ms, "sparsity", ss / (double)ns);
    put(ms, "seconds", seconds);
    snprintf(p, sizeof p, "%s/eval.json", dir);
    if (access(p, F_OK)) return 0;
    json_value *ev = json_parse_file(p, err);
    if (!ev) return -1;
    const json_value *data = json_get(ev, "data"), *tasks = json_get(ev, "tasks");
    char key[96];
    for (size_t i = 0; data && data->type == JSON_ARRAY && i < data->count; i++) {
        const json_value *d = &data->items[i];
        const json_value *nm = json_get(d, "name");
        const char *name = nm && nm->type == JSON_STRING ? nm->string : "data";
        snprintf(key, sizeof key, "%s.loss", name); put(ms, key, num(d, "loss"));
        snprintf(key, sizeof key, "%s.ppl", name); put(ms, key, num(d, "ppl"));
        const json_value *rb = json_get(d, "robustness");
        snprintf(key, sizeof key, "%s.ppl_drop_top", name); put(ms, key, num(rb, "ppl"));
    }
    for (size_t i = 0; tasks && tasks->type == JSON_ARRAY && i < tasks->count; i++) {
        const json_value *t = &tasks->items[i];
        const json_value *nm = json_get(t, "name");
        const char *name = nm && nm->type == JSON_STRING ? nm->string : "task";
        snprintf(key, sizeof key, "%s.acc", name); put(ms, key, num(t, "acc"));
        snprintf(key, sizeof key, "%s.acc_norm", name); put(ms, key, num(t, "acc_norm"));
    }
    json_free(ev);
    return 0;
}

static int write_done(const char *dir, const char *name, long seed, const metrics *ms, moe_err *err) {
    moe_buf b = {0};
    moe_buf_printf(&b, "{\"name\": ");
    json_write_string(&b, name, strlen(name));
    moe_buf_printf(&b, ", \"seed\": %ld, \"metrics\": {", seed);
    for (size_t i = 0; i < ms->n; i++) {
        moe_buf_printf(&b, "%s", i ? ", " : "");
        json_write_string(&b, ms->m[i].key, strlen(ms->m[i].key));
        moe_buf_printf(&b, ": ");
        json_write_double(&b, ms->m[i].value);
    }
    moe_buf_printf(&b, "}}\n");
    char p[4200];
    snprintf(p, sizeof p, "%s/sweep.json", dir);
    int rc = b.data ? moe_write_file_atomic(p, b.data, b.len, err) : moe_errf(err, "out of memory");
    moe_buf_free(&b);
    return rc;
}

/* Reads RUN/sweep.json back: 1 if present and read, 0 if absent. */
static int read_done(const char *dir, metrics *ms, moe_err *err) {
    char p[4200];
    snprintf(p, sizeof p, "%s/sweep.json", dir);
    memset(ms, 0, sizeof *ms);
    if (access(p, F_OK)) return 0;
    json_value *j = json_parse_file(p, err);
    if (!j) return -1;
    const json_value *m = json_get(j, "metrics");
    for (size_t i = 0; m && m->type == JSON_OBJECT && i < m->count; i++)
        if (m->items[i].type == JSON_NUMBER) put(ms, m->keys[i], m->items[i].number);
    json_free(j);
    return 1;
}

static double lookup(const metrics *ms, const char *key) {
    for (size_t i = 0; i < ms->n; i++)
        if (!strcmp(ms->m[i].key, key)) return ms->m[i].value;
    return NAN;
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
    json_write_double(b, m);
    moe_buf_printf(b, ", \"std\": ");
    json_write_double(b, s);
    moe_buf_printf(b, ", \"n\": %zu, \"values\": [", n);
    for (size_t i = 0; i < n; i++) { moe_buf_printf(b, "%s", i ? ", " : ""); json_write_double(b, v[i]); }
    moe_buf_printf(b, "]}");
}

/* The metric keys in first-seen order over all finished runs. */
static size_t metric_keys(metrics *all, size_t n, char (*keys)[96], size_t cap) {
    size_t nk = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t m = 0; m < all[i].n; m++) {
            size_t k = 0;
            while (k < nk && strcmp(keys[k], all[i].m[m].key)) k++;
            if (k == nk && nk < cap) snprintf(keys[nk++], 96, "%s", all[i].m[m].key);
        }
    return nk;
}

/* The headline metric: the first eval file's loss, else the training loss. */
static const char *headline(char (*keys)[96], size_t nk) {
    for (size_t k = 0; k < nk; k++) {
        size_t l = strlen(keys[k]);
        if (l > 5 && !strcmp(keys[k] + l - 5, ".loss")) return keys[k];
    }
    return "train_loss";
}

static int aggregate(const grid *g, moe_err *err) {
    size_t R = g->n_runs, S = g->n_seeds;
    metrics *all = moe_calloc(R * S, sizeof *all, err);
    int *have = all ? moe_calloc(R * S, sizeof *have, err) : NULL;
    if (!have) { free(all); return -1; }
    int rc = 0;
    for (size_t r = 0; r < R && !rc; r++)
        for (size_t s = 0; s < S && !rc; s++) {
            char dir[4096];
            if (moe_path(dir, sizeof dir, err, "%s/%s/seed-%ld", g->out, g->runs[r].name, g->seeds[s])) rc = -1;
            else if ((have[r * S + s] = read_done(dir, &all[r * S + s], err)) < 0) rc = -1;
        }
    static char keys[MAX_METRICS][96];
    size_t nk = rc ? 0 : metric_keys(all, R * S, keys, MAX_METRICS);
    const char *head = headline(keys, nk);
    long base = -1;
    for (size_t r = 0; g->baseline && r < R; r++) if (!strcmp(g->runs[r].name, g->baseline)) base = (long)r;
    moe_buf b = {0}, md = {0};
    double v[MAX_SEEDS], w[MAX_SEEDS];
    moe_buf_printf(&b, "{\"format\": \"moe-sweep-summary\", \"version\": 1, \"grid\": ");
    json_write_string(&b, g->path, strlen(g->path));
    moe_buf_printf(&b, ", \"seeds\": [");
    for (size_t s = 0; s < S; s++) moe_buf_printf(&b, "%s%ld", s ? ", " : "", g->seeds[s]);
    moe_buf_printf(&b, "], \"headline\": ");
    json_write_string(&b, head, strlen(head));
    moe_buf_printf(&b, ",\n\"cells\": [");
    moe_buf_printf(&md, "| run | seeds done | %s (mean ± std) |%s", head, base >= 0 ? " − baseline (paired mean ± std) |" : "");
    for (size_t k = 0; k < nk; k++)
        if (strcmp(keys[k], head)) moe_buf_printf(&md, " %s |", keys[k]);
    moe_buf_printf(&md, "\n|---|---|---|%s", base >= 0 ? "---|" : "");
    for (size_t k = 0; k < nk; k++) if (strcmp(keys[k], head)) moe_buf_printf(&md, "---|");
    moe_buf_printf(&md, "\n");
    for (size_t r = 0; r < R && !rc; r++) {
        size_t done = 0;
        for (size_t s = 0; s < S; s++) done += have[r * S + s] > 0;
        moe_buf_printf(&b, "%s\n {\"name\": ", r ? "," : "");
        json_write_string(&b, g->runs[r].name, strlen(g->runs[r].name));
        moe_buf_printf(&b, ", \"config\": ");
        json_write_string(&b, g->runs[r].config, strlen(g->runs[r].config));
        moe_buf_printf(&b, ", \"seeds_done\": %zu, \"metrics\": {", done);
        moe_buf_printf(&md, "| %s | %zu/%zu |", g->runs[r].name, done, S);
        for (size_t k = 0, first = 1; k < nk; k++) {
            size_t n = 0;
            for (size_t s = 0; s < S; s++)
                if (have[r * S + s] > 0 && isfinite(lookup(&all[r * S + s], keys[k])))
                    v[n++] = lookup(&all[r * S + s], keys[k]);
            if (!n) continue;
            moe_buf_printf(&b, "%s\"%s\": ", first ? "" : ", ", keys[k]);
            first = 0;
            stat_json(&b, v, n);
        }
        moe_buf_printf(&b, "}");
        /* the markdown row: headline, paired difference, the other metrics */
        for (int pass = 0; pass < 2; pass++)
            for (size_t k = 0; k < nk; k++) {
                if ((pass == 0) != !strcmp(keys[k], head)) continue;
                size_t n = 0;
                for (size_t s = 0; s < S; s++)
                    if (have[r * S + s] > 0 && isfinite(lookup(&all[r * S + s], keys[k])))
                        v[n++] = lookup(&all[r * S + s], keys[k]);
                double m, sd;
                mean_std(v, n, &m, &sd);
                if (n) moe_buf_printf(&md, " %.4f ± %.4f |", m, sd); else moe_buf_printf(&md, " — |");
                if (pass == 0 && base >= 0) {
                    size_t np = 0;
                    for (size_t s = 0; s < S && (size_t)base != r; s++) {
                        double a = have[r * S + s] > 0 ? lookup(&all[r * S + s], head) : NAN;
                        double c = have[(size_t)base * S + s] > 0 ? lookup(&all[(size_t)base * S + s], head) : NAN;
                        if (isfinite(a) && isfinite(c)) w[np++] = a - c;
                    }
                    mean_std(w, np, &m, &sd);
                    if (np) moe_buf_printf(&md, " %+.4f ± %.4f (n=%zu) |", m, sd, np);
                    else moe_buf_printf(&md, " %s |", (size_t)base == r ? "(baseline)" : "—");
                }
            }
        moe_buf_printf(&md, "\n");
        /* paired differences against the baseline, every metric, by seed */
        if (base >= 0 && (size_t)base != r) {
            moe_buf_printf(&b, ", \"minus_baseline\": {");
            for (size_t k = 0, first = 1; k < nk; k++) {
                size_t np = 0;
                for (size_t s = 0; s < S; s++) {
                    double a = have[r * S + s] > 0 ? lookup(&all[r * S + s], keys[k]) : NAN;
                    double c = have[(size_t)base * S + s] > 0 ? lookup(&all[(size_t)base * S + s], keys[k]) : NAN;
                    if (isfinite(a) && isfinite(c)) w[np++] = a - c;
                }
                if (!np) continue;
                moe_buf_printf(&b, "%s\"%s\": ", first ? "" : ", ", keys[k]);
                first = 0;
                stat_json(&b, w, np);
            }
            moe_buf_printf(&b, "}");
        }
        moe_buf_printf(&b, "}");
    }
    moe_buf_printf(&b, "]");
    if (base >= 0) {
        moe_buf_printf(&b, ",\n\"baseline\": ");
        json_write_string(&b, g->baseline, strlen(g->baseline));
    }
    moe_buf_printf(&b, "}\n");
    char p[4200];
    if (!rc && (!b.data || !md.data)) rc = moe_errf(err, "out of memory");
    if (!rc && (moe_mkdirs(g->out, err) || moe_path(p, sizeof p, err, "%s/summary.json", g->out) ||
                moe_write_file_atomic(p, b.data, b.len, err) ||
                moe_path(p, sizeof p, err, "%s/summary.md", g->out) ||
                moe_write_file_atomic(p, md.data, md.len, err)))
        rc = -1;
    if (!rc) {
        fwrite(md.data, 1, md.len, stdout);
        printf("moe sweep: wrote %s/summary.json and %s/summary.md\n", g->out, g->out);
    }
    moe_buf_free(&b);
    moe_buf_free(&md);
    free(all);
    free(have);
    return rc;
}

/* OUT/report.html: `moe report` over the first finished seed of every run
 * (at most 64), which also shows the sweep's summary. */
static int sweep_report(const grid *g, moe_err *err) {
    static char dirs[64][4096];
    const char *args[64 + 8];
    size_t n = 0, nd = 0;
    args[n++] = "report";
    for (size_t r = 0; r < g->n_runs && nd < 64; r++)
        for (size_t s = 0; s < g->n_seeds; s++) {
            if (moe_path(dirs[nd], sizeof dirs[nd], err, "%s/%s/seed-%ld", g->out, g->runs[r].name, g->seeds[s]))
                return -1;
            if (state_of(dirs[nd]) != RUN_DONE) continue;
            args[n++] = dirs[nd++];
            break;
        }
    if (!nd) return 0;
    char out[4200], log[4200];
    snprintf(out, sizeof out, "%s/report.html", g->out);
    snprintf(log, sizeof log, "%s/report.log", g->out);
    args[n++] = "--out";
    args[n++] = out;
    int rc = run_self(args, n, log, err);
    if (rc < 0) return -1;
    if (rc) fprintf(stderr, "moe sweep: the report failed (see %s); the summary is written\n", log);
    else fprintf(stderr, "moe sweep: wrote %s\n", out);
    return 0;
}

/* ---- the command ----------------------------------------------------------- */

/* Trains (or resumes) and evaluates one run; 0 done, >0 the child's failing
 * status (the sweep stops), -1 an error of the sweep itself. */
static int do_run(const grid *g, const grid_run *gr, long seed, const char *dir, run_state st,
                  moe_err *err) {
    char cfg[4096], log[4200];
    const char *args[MAX_ARGS * 2 + 16];
    size_t n = 0;
    if (moe_mkdirs(dir, err) || write_config(g, gr, seed, cfg, sizeof cfg, err)) return -1;
    args[n++] = "train";
    if (st == RUN_INTERRUPTED) { args[n++] = "--resume"; args[n++] = dir; }
    else { args[n++] = "--config"; args[n++] = cfg; args[n++] = "--out"; args[n++] = dir; }
    args[n++] = "--data";
    args[n++] = g->data;
    for (size_t i = 0; i < g->n_train_args; i++) args[n++] = g->train_args[i];
    snprintf(log, sizeof log, "%s/train.log", dir);
    int rc = run_self(args, n, log, err);
    if (rc) return rc < 0 ? -1 : rc;
    if (g->n_eval) {
        n = 0;
        args[n++] = "eval";
        args[n++] = "--model";
        args[n++] = dir;
        for (size_t i = 0; i < g->n_eval; i++) { args[n++] = "--data"; args[n++] = g->eval_data[i]; }
        for (size_t i = 0; i < g->n_eval_args; i++) args[n++] = g->eval_args[i];
        snprintf(log, sizeof log, "%s/eval.log", dir);
        rc = run_self(args, n, log, err);
        if (rc) return rc < 0 ? -1 : rc;
    }
    return 0;
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
    static grid g;
    moe_err err;
    int rc = 1;
    if (grid_load(&g, grid_path, &err)) goto fail;
    /* runs that trained with another config are refused, before anything is written */
    for (size_t r = 0; r < g.n_runs; r++)
        for (size_t s = 0; s < g.n_seeds; s++) {
            char dir[4096];
            if (moe_path(dir, sizeof dir, &err, "%s/%s/seed-%ld", g.out, g.runs[r].name, g.seeds[s])) goto fail;
            if (state_of(dir) != RUN_NEW && check_unchanged(&g, &g.runs[r], g.seeds[s], dir, &err)) goto fail;
        }
    /* every config is checked before anything runs */
    for (size_t r = 0; r < g.n_runs; r++) {
        char cfg[4096];
        if (write_config(&g, &g.runs[r], g.seeds[0], cfg, sizeof cfg, &err)) goto fail;
    }
    size_t total = g.n_runs * g.n_seeds, k = 0, executed = 0, left = 0, busy = 0;
    for (size_t r = 0; r < g.n_runs; r++)
        for (size_t s = 0; s < g.n_seeds; s++) {
            char dir[4096];
            if (moe_path(dir, sizeof dir, &err, "%s/%s/seed-%ld", g.out, g.runs[r].name, g.seeds[s])) goto fail;
            run_state st = state_of(dir);
            left += st != RUN_DONE;
            if (dry) printf("%-40s %s\n", dir, st == RUN_DONE ? "done" : st == RUN_INTERRUPTED ? "interrupted" : "new");
        }
    if (dry) { printf("moe sweep: %zu runs, %zu to do\n", total, left); rc = 0; goto done; }
    if (agg_only) {
        if (aggregate(&g, &err) || sweep_report(&g, &err)) goto fail;
        rc = 0;
        goto done;
    }

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    double spent = 0.0;
    for (size_t r = 0; r < g.n_runs && !stop_sig; r++)
        for (size_t s = 0; s < g.n_seeds && !stop_sig; s++) {
            k++;
            const grid_run *gr = &g.runs[r];
            char dir[4096];
            if (moe_path(dir, sizeof dir, &err, "%s/%s/seed-%ld", g.out, gr->name, g.seeds[s])) goto fail;
            run_state st = state_of(dir);
            if (st == RUN_DONE) {
                fprintf(stderr, "moe sweep: [%zu/%zu] %s seed %ld: done earlier, skipped\n", k, total, gr->name,
                        g.seeds[s]);
                continue;
            }
            if (moe_mkdirs(dir, &err)) goto fail;
            int locked = lock_run(dir, &err);
            if (locked < 0) goto fail;
            if (!locked) {
                fprintf(stderr, "moe sweep: [%zu/%zu] %s seed %ld: another sweep is running it, skipped\n", k,
                        total, gr->name, g.seeds[s]);
                busy++;
                continue;
            }
            st = state_of(dir);  /* another sweep may have finished it meanwhile */
            if (st == RUN_DONE) { unlock_run(dir); left--; continue; }
            double t0 = now();
            int crc = do_run(&g, gr, g.seeds[s], dir, st, &err);
            unlock_run(dir);
            if (crc < 0) goto fail;
            if (stop_sig) {
                fprintf(stderr, "moe sweep: [%zu/%zu] %s seed %ld: stopped by signal %d (checkpoint kept); "
                        "run the same command to continue\n", k, total, gr->name, g.seeds[s], (int)stop_sig);
                break;
            }
            if (crc > 0) {
                moe_errf(&err, "%s seed %ld failed (exit status %d): see %s/train.log and %s/eval.log", gr->name,
                         g.seeds[s], crc, dir, dir);
                goto fail;
            }
            double secs = now() - t0;
            metrics ms;
            if (collect(dir, secs, &ms, &err) || write_done(dir, gr->name, g.seeds[s], &ms, &err)) goto fail;
            spent += secs;
            executed++;
            left--;
            char took[32], eta[32], head[64] = "";
            fmt_dur(took, sizeof took, secs);
            fmt_dur(eta, sizeof eta, spent / (double)executed * (double)left);
            double hl = NAN;
            const char *hk = "train_loss";
            for (size_t i = 0; i < ms.n && !isfinite(hl); i++) {
                size_t l = strlen(ms.m[i].key);
                if (l > 5 && !strcmp(ms.m[i].key + l - 5, ".loss")) { hl = ms.m[i].value; hk = ms.m[i].key; }
            }
            if (!isfinite(hl)) hl = lookup(&ms, "train_loss");
            if (isfinite(hl)) snprintf(head, sizeof head, ", %s %.4f", hk, hl);
            fprintf(stderr, "moe sweep: [%zu/%zu] %s seed %ld: %s in %s%s | %zu left, ETA %s\n", k, total,
                    gr->name, g.seeds[s], st == RUN_INTERRUPTED ? "resumed and finished" : "finished", took, head,
                    left, eta);
        }
    if (stop_sig) { rc = 128 + (int)stop_sig; goto done; }
    if (busy)
        fprintf(stderr, "moe sweep: %zu runs are with another sweep; the last one to finish aggregates "
                "(or run --aggregate)\n", busy);
    if (aggregate(&g, &err) || sweep_report(&g, &err)) goto fail;
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "moe sweep: %s\n", err.msg);
    rc = 1;
done:
    json_free(g.root);
    return rc;
}
