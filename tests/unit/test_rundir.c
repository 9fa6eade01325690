/* test_rundir.c — unit tests of a run folder's files (src/run/rundir.c):
 * what makes a folder a run, metrics.jsonl written, read back and cut back
 * to a step, eval.json merged by data file and task (and not merged across
 * checkpoints or window lengths), a sweep's flat metrics of a run from its
 * metrics.jsonl and eval.json, sweep.json and the per-run lock. */
#include "harness.h"
#include "moe/util/fileio.h"
#include "moe/run/rundir.h"

#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[256];

/* A fresh folder ROOT/name. */
static void fresh(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", root, name);
    moe_err err;
    CHECK(!moe_mkdirs(out, &err), "%s", err.msg);
}

static void test_run_detection(void) {
    char dir[512], p[600];
    moe_err err;
    fresh(dir, sizeof dir, "detect");
    CHECK(!moe_rundir_is_run(dir), "an empty folder is not a run");
    CHECK(!moe_rundir_path(p, sizeof p, dir, MOE_RUN_EVAL, &err), "%s", err.msg);
    CHECK(!strcmp(p + strlen(dir), "/eval.json"), "path %s", p);
    CHECK(moe_write_file_atomic(p, "{}", 2, &err) == 0, "%s", err.msg);
    CHECK(!moe_rundir_is_run(dir), "eval.json alone does not make a run");
    CHECK(moe_rundir_has(dir, MOE_RUN_EVAL), "eval.json is there");
    CHECK(!moe_rundir_append_line(dir, MOE_RUN_METRICS, "{\"step\": 1}\n", 12, &err), "%s", err.msg);
    CHECK(moe_rundir_is_run(dir), "metrics.jsonl makes a run");
    CHECK(!strcmp(moe_rundir_name(MOE_RUN_METRICS), "metrics.jsonl"), "name");
    char small[8];
    CHECK(moe_rundir_path(small, sizeof small, dir, MOE_RUN_METRICS, &err) == -1, "a path too long is refused");
}

static void test_metrics_round_trip(void) {
    char dir[512], line[128];
    moe_err err;
    fresh(dir, sizeof dir, "metrics");
    for (int s = 1; s <= 5; s++) {
        int n = snprintf(line, sizeof line, "{\"step\": %d, \"lm_loss\": %.2f, \"sparsity\": 0.5}\n", s, 4.0 - 0.5 * s);
        CHECK(!moe_rundir_append_line(dir, MOE_RUN_METRICS, line, (size_t)n, &err), "%s", err.msg);
    }
    moe_json_value **L;
    size_t n;
    CHECK(!moe_rundir_read_lines(dir, MOE_RUN_METRICS, &L, &n, &err), "%s", err.msg);
    CHECK(n == 5, "%zu lines", n);
    for (size_t i = 0; i < n; i++) {
        CHECK(moe_json_get_number(L[i], "step", -1) == (double)(i + 1), "line %zu: step", i);
        CHECK_CLOSE(moe_json_get_number(L[i], "lm_loss", NAN), 4.0 - 0.5 * (double)(i + 1), 0, 1e-12);
    }
    moe_rundir_lines_free(L, n);
    /* a resumed run cuts its log back to its checkpoint */
    CHECK(!moe_rundir_keep_steps(dir, MOE_RUN_METRICS, 3, &err), "%s", err.msg);
    CHECK(!moe_rundir_read_lines(dir, MOE_RUN_METRICS, &L, &n, &err), "%s", err.msg);
    CHECK(n == 3 && moe_json_get_number(L[2], "step", -1) == 3, "%zu lines after keep_steps(3)", n);
    moe_rundir_lines_free(L, n);
    /* a missing log has no lines; a line that is not JSON is named */
    CHECK(!moe_rundir_read_lines(dir, MOE_RUN_CALIBRATION, &L, &n, &err) && n == 0, "missing calibration.jsonl");
    moe_rundir_lines_free(L, n);
    CHECK(!moe_rundir_append_line(dir, MOE_RUN_METRICS, "{\"step\": 4,\n", 12, &err), "%s", err.msg);
    CHECK(moe_rundir_read_lines(dir, MOE_RUN_METRICS, &L, &n, &err) == -1, "a broken line is an error");
    CHECK(strstr(err.msg, "metrics.jsonl line 4") != NULL, "message: %s", err.msg);
}

/* One data file's sums: 2 domains, losses nll over count. */
static void sums(moe_loss_sums *s, double nll0, double nll1) {
    moe_err err;
    CHECK(!moe_loss_sums_init(s, 2, &err), "%s", err.msg);
    s->nll[0] = nll0; s->count[0] = 10;
    s->nll[1] = nll1; s->count[1] = 10;
    s->total_nll = nll0 + nll1;
    s->total_count = 20;
    s->read = (moe_read_info){20, 20, 1, 20, 0, 0};
}

/* The entry named name of array key of eval.json at path, its "loss" or "acc". */
static double entry(const char *path, const char *key, const char *name, const char *field) {
    moe_err err;
    moe_json_value *j = moe_json_parse_file(path, &err);
    double v = NAN;
    const moe_json_value *a = j ? moe_json_get(j, key) : NULL;
    for (size_t i = 0; a && i < a->count; i++)
        if (!strcmp(moe_json_get_string(&a->items[i], "name", ""), name)) v = moe_json_get_number(&a->items[i], field, NAN);
    moe_json_free(j);
    return v;
}

static size_t entries(const char *path, const char *key) {
    moe_err err;
    moe_json_value *j = moe_json_parse_file(path, &err);
    const moe_json_value *a = j ? moe_json_get(j, key) : NULL;
    size_t n = a ? a->count : 0;
    moe_json_free(j);
    return n;
}

static void test_eval_merge(void) {
    char dir[512], path[600], note[600];
    moe_err err;
    fresh(dir, sizeof dir, "eval");
    CHECK(!moe_rundir_path(path, sizeof path, dir, MOE_RUN_EVAL, &err), "%s", err.msg);
    moe_config cfg;
    moe_config_defaults(&cfg);
    char *domains[] = {"news", "code"};
    moe_loss_sums a, b, a2;
    sums(&a, 20, 40);
    sums(&b, 10, 10);
    sums(&a2, 30, 50);
    moe_mc_result r1 = {100, 0.5, 0.6, 0.05, 0.05}, r2 = {50, 0.25, 0.3, 0.06, 0.06};
    moe_eval_file fa = {"a", "a.tok", &a, NULL, domains, 2}, fb = {"b", "b.tok", &b, &a2, domains, 2};
    moe_eval_file fa2 = {"a", "a.tok", &a2, NULL, domains, 2};
    moe_eval_task t1 = {"t1", "t1.jsonl", &r1}, t2 = {"t2", "t2.jsonl", &r2};

    /* first: data a and task t1 */
    moe_eval_results r = {"RUN", "RUN/checkpoints/step-00000010", &cfg, 16, &fa, 1, &t1, 1};
    CHECK(!moe_eval_write(path, &r, 1, note, sizeof note, &err), "%s", err.msg);
    CHECK(note[0] == 0, "no earlier results, no note: %s", note);
    CHECK_CLOSE(entry(path, "data", "a", "loss"), 3.0, 0, 1e-12);
    CHECK_CLOSE(entry(path, "tasks", "t1", "acc"), 0.5, 0, 1e-12);
    /* then data b only: a and t1 are kept */
    r = (moe_eval_results){"RUN", "RUN/checkpoints/step-00000010", &cfg, 16, &fb, 1, &t2, 1};
    CHECK(!moe_eval_write(path, &r, 1, note, sizeof note, &err), "%s", err.msg);
    CHECK(entries(path, "data") == 2 && entries(path, "tasks") == 2, "merged: %zu data, %zu tasks",
          entries(path, "data"), entries(path, "tasks"));
    CHECK_CLOSE(entry(path, "data", "a", "loss"), 3.0, 0, 1e-12);
    CHECK_CLOSE(entry(path, "data", "b", "loss"), 1.0, 0, 1e-12);
    CHECK_CLOSE(entry(path, "tasks", "t2", "acc"), 0.25, 0, 1e-12);
    /* a again, with other numbers: its entry is replaced, not doubled */
    r = (moe_eval_results){"RUN", "RUN/checkpoints/step-00000010", &cfg, 16, &fa2, 1, NULL, 0};
    CHECK(!moe_eval_write(path, &r, 1, note, sizeof note, &err), "%s", err.msg);
    CHECK(entries(path, "data") == 2, "%zu data entries", entries(path, "data"));
    CHECK_CLOSE(entry(path, "data", "a", "loss"), 4.0, 0, 1e-12);   /* a2: 80 / 20 */
    CHECK(entries(path, "tasks") == 2, "%zu tasks kept", entries(path, "tasks"));
    /* b's robustness part: perplexity with the top expert dropped */
    moe_err e2;
    moe_json_value *j = moe_json_parse_file(path, &e2);
    const moe_json_value *d = j ? moe_json_get(j, "data") : NULL;
    const moe_json_value *rb = NULL;
    for (size_t i = 0; d && i < d->count; i++)
        if (!strcmp(moe_json_get_string(&d->items[i], "name", ""), "b")) rb = moe_json_get(&d->items[i], "robustness");
    CHECK(rb && fabs(moe_json_get_number(rb, "ppl", NAN) - exp(4.0)) < 1e-9, "robustness ppl");
    moe_json_free(j);
    /* another checkpoint: nothing merged, and a note says why */
    r = (moe_eval_results){"RUN", "RUN/checkpoints/step-00000020", &cfg, 16, &fb, 1, NULL, 0};
    CHECK(!moe_eval_write(path, &r, 1, note, sizeof note, &err), "%s", err.msg);
    CHECK(strstr(note, "another checkpoint") != NULL, "note: %s", note);
    CHECK(entries(path, "data") == 1 && entries(path, "tasks") == 0, "replaced");
    /* another window length */
    r.seq = 32;
    CHECK(!moe_eval_write(path, &r, 1, note, sizeof note, &err), "%s", err.msg);
    CHECK(strstr(note, "another --seq") != NULL, "note: %s", note);
    /* a file that is not JSON is replaced, with a warning */
    CHECK(!moe_write_file_atomic(path, "{", 1, &err), "%s", err.msg);
    CHECK(!moe_eval_write(path, &r, 1, note, sizeof note, &err), "%s", err.msg);
    CHECK(strstr(note, "cannot be read") != NULL, "note: %s", note);
    CHECK(entries(path, "data") == 1, "written after the unreadable one");
    moe_loss_sums_free(&a);
    moe_loss_sums_free(&b);
    moe_loss_sums_free(&a2);
}

static void test_collect_and_done(void) {
    char dir[512], line[128], p[600];
    moe_err err;
    fresh(dir, sizeof dir, "sweep/topk/seed-1");
    CHECK(moe_run_state_of(dir) == MOE_RUN_NEW, "a fresh run is new");
    moe_run_metrics ms;
    CHECK(moe_run_collect(dir, 1.0, &ms, &err) == -1, "a run without metrics.jsonl cannot be collected");
    /* 20 steps: the last tenth is steps 19 and 20 */
    for (int s = 1; s <= 20; s++) {
        int n = snprintf(line, sizeof line, "{\"step\": %d, \"lm_loss\": %d, \"sparsity\": %g, \"seconds\": %g}\n",
                         s, s, 0.01 * s, 0.25 * s);
        CHECK(!moe_rundir_append_line(dir, MOE_RUN_METRICS, line, (size_t)n, &err), "%s", err.msg);
    }
    const char *ev = "{\"checkpoint\": \"x\", \"seq\": 16, \"data\": [{\"name\": \"valid\", \"loss\": 2.5, "
                     "\"ppl\": 12.18, \"robustness\": {\"ppl\": 14}}], \"tasks\": [{\"name\": \"cloze\", "
                     "\"acc\": 0.5, \"acc_norm\": 0.75}]}";
    CHECK(!moe_rundir_path(p, sizeof p, dir, MOE_RUN_EVAL, &err) && !moe_write_file_atomic(p, ev, strlen(ev), &err),
          "%s", err.msg);
    CHECK(!moe_run_collect(dir, 42.0, &ms, &err), "%s", err.msg);
    CHECK_CLOSE(moe_run_metric(&ms, "train_loss"), 19.5, 0, 1e-12);
    CHECK_CLOSE(moe_run_metric(&ms, "sparsity"), 0.195, 0, 1e-12);
    CHECK_CLOSE(moe_run_metric(&ms, "seconds"), 42.0, 0, 0);
    CHECK_CLOSE(moe_run_metric(&ms, "train_seconds"), 0.25 * 20 * 21 / 2, 0, 1e-12);  /* every step's, summed */
    CHECK_CLOSE(moe_run_metric(&ms, "valid.loss"), 2.5, 0, 0);
    CHECK_CLOSE(moe_run_metric(&ms, "valid.ppl_drop_top"), 14, 0, 0);
    CHECK_CLOSE(moe_run_metric(&ms, "cloze.acc_norm"), 0.75, 0, 0);
    CHECK(isnan(moe_run_metric(&ms, "nothing")), "an absent key is NAN");
    CHECK(isnan(moe_run_metric(&ms, "imbalance")) && isnan(moe_run_metric(&ms, "flip_rate")),
          "no layers, no probe: no routing metrics");
    const char *hk;
    CHECK(moe_run_headline(&ms, &hk) == 2.5 && !strcmp(hk, "valid.loss"), "headline %s", hk);
    /* sweep.json: written, read back, and the run is done */
    CHECK(!moe_run_mark_done(dir, "topk", 1, &ms, &err), "%s", err.msg);
    CHECK(moe_run_state_of(dir) == MOE_RUN_DONE, "marked done");
    moe_run_metrics back;
    CHECK(moe_run_read_done(dir, &back, &err) == 1, "read back");
    CHECK(back.n == ms.n, "%zu metrics back of %zu", back.n, ms.n);
    for (size_t i = 0; i < ms.n && i < back.n; i++)
        CHECK(!strcmp(back.m[i].key, ms.m[i].key) && back.m[i].value == ms.m[i].value, "metric %zu", i);
    char other[512];
    fresh(other, sizeof other, "sweep/topk/seed-2");
    CHECK(moe_run_read_done(other, &back, &err) == 0 && back.n == 0, "not done: 0");
    /* the run folder of a sweep, and the sweep's summary seen from it */
    CHECK(!moe_sweep_run_dir(p, sizeof p, "OUT", "topk", 3, &err) && !strcmp(p, "OUT/topk/seed-3"), "%s", p);
    CHECK(!moe_sweep_summary_of(p, sizeof p, "OUT/topk/seed-3", &err) &&
          !strcmp(p, "OUT/topk/seed-3/../../summary.json"), "%s", p);
}

/* The routing metrics of a MoE run, from hand-computed per-layer loads:
 * over the last tenth (steps 19, 20) layer 0 has tokens [6, 2, 0, 0]
 * (max/mean 3) and [2, 2, 2, 2] (1), layer 1 [4, 4, 0, 0] (2) twice; flip
 * rates of the last tenth of 10 probes: only probe 10's. */
static void test_collect_routing(void) {
    char dir[512], line[512];
    moe_err err;
    fresh(dir, sizeof dir, "sweep/remoe/seed-1");
    for (int s = 1; s <= 20; s++) {
        const char *l0 = s == 19 ? "[6, 2, 0, 0]" : s == 20 ? "[2, 2, 2, 2]" : "[9, 0, 0, 0]";
        int n = snprintf(line, sizeof line, "{\"step\": %d, \"lm_loss\": 1, \"layers\": ["
                         "{\"tokens_per_expert\": %s, \"active_per_token\": %g, \"no_expert\": %g}, "
                         "{\"tokens_per_expert\": [4, 4, 0, 0], \"active_per_token\": 0.5, \"no_expert\": %g}]}\n",
                         s, l0, s == 19 ? 1.0 : 2.0, 0.0, s == 20 ? 0.6 : 0.4);
        CHECK(!moe_rundir_append_line(dir, MOE_RUN_METRICS, line, (size_t)n, &err), "%s", err.msg);
    }
    moe_run_metrics ms;
    CHECK(!moe_run_collect(dir, 1.0, &ms, &err), "%s", err.msg);
    CHECK(isnan(moe_run_metric(&ms, "flip_rate")), "no calibration.jsonl, no flip rate");
    CHECK_CLOSE(moe_run_metric(&ms, "imbalance"), (2.0 + 2.0) / 2, 0, 1e-12);  /* layer 0: (3 + 1) / 2 */
    CHECK_CLOSE(moe_run_metric(&ms, "imbalance_worst"), 2.0, 0, 1e-12);
    CHECK_CLOSE(moe_run_metric(&ms, "active_min_layer"), 0.5, 0, 1e-12);
    CHECK_CLOSE(moe_run_metric(&ms, "no_expert_max_layer"), 0.5, 0, 1e-12);
    for (int s = 0; s <= 9; s++) {
        int n = s ? snprintf(line, sizeof line, "{\"step\": %d, \"flip_rate\": %g}\n", s * 10, 0.01 * s)
                  : snprintf(line, sizeof line, "{\"step\": 0, \"flip_rate\": null}\n");
        CHECK(!moe_rundir_append_line(dir, MOE_RUN_CALIBRATION, line, (size_t)n, &err), "%s", err.msg);
    }
    CHECK(!moe_run_collect(dir, 1.0, &ms, &err), "%s", err.msg);
    CHECK_CLOSE(moe_run_metric(&ms, "flip_rate"), 0.09, 0, 1e-12);
}

static void test_lock(void) {
    char dir[512], p[600];
    moe_err err;
    fresh(dir, sizeof dir, "lock");
    CHECK(moe_run_lock(dir, &err) == 1, "taken");
    CHECK(moe_rundir_has(dir, MOE_RUN_SWEEP_LOCK), "sweep.lock written");
    moe_run_unlock(dir);
    CHECK(!moe_rundir_has(dir, MOE_RUN_SWEEP_LOCK), "sweep.lock removed");
    /* held by a live process (pid 1): not taken; by a gone one: taken over */
    CHECK(!moe_rundir_path(p, sizeof p, dir, MOE_RUN_SWEEP_LOCK, &err) && !moe_write_file_atomic(p, "1\n", 2, &err),
          "%s", err.msg);
    CHECK(moe_run_lock(dir, &err) == 0, "a live holder keeps it");
    CHECK(!moe_write_file_atomic(p, "2147483000\n", 11, &err), "%s", err.msg);
    CHECK(moe_run_lock(dir, &err) == 1, "a stale lock is taken over");
    moe_run_unlock(dir);
}

int main(void) {
    snprintf(root, sizeof root, "/tmp/moe_test_rundir_XXXXXX");
    if (!mkdtemp(root)) { perror("mkdtemp"); return 1; }
    RUN(test_run_detection);
    RUN(test_metrics_round_trip);
    RUN(test_eval_merge);
    RUN(test_collect_and_done);
    RUN(test_collect_routing);
    RUN(test_lock);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", root);
    TEST_MAIN_END();
}
