/* test_session.c — a training run driven through the library's session
 * (src/run/session.c), without the moe program: a run stopped and resumed
 * ends bit-identical to an uninterrupted one; non-finite steps are skipped
 * and, max_bad_steps in a row, rolled back to the last checkpoint (then the
 * run ends as if they had not happened, metrics.jsonl included); the same failure again after that
 * return, or a poisoned update with no checkpoint, is an error; the
 * options' overrides land in the model's one config; what open refuses. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "moe/comm/comm.h"
#include "moe/util/fileio.h"
#include "moe/run/rundir.h"
#include "moe/run/session.h"

/* The lines a session said, one after another. */
typedef struct heard {
    char text[32768];
    size_t len;
} heard;

static void hear(void *ctx, const char *line) {
    heard *h = ctx;
    int n = snprintf(h->text + h->len, sizeof h->text - h->len, "%s\n", line);
    if (n > 0 && h->len + (size_t)n < sizeof h->text) h->len += (size_t)n;
}

/* A temporary folder with a config and a token file, and the one-process world. */
typedef struct env {
    char dir[64], cfg[128], data[128];
    moe_comm *world;
} env;

/* vocab_size may exceed the data's 50 ids (rows that never see a gradient). */
static int env_open(env *e, int vocab_size) {
    moe_err err;
    snprintf(e->dir, sizeof e->dir, "/tmp/moe_test_sessionXXXXXX");
    if (!mkdtemp(e->dir) || moe_comm_single(&e->world, &err)) return -1;
    snprintf(e->cfg, sizeof e->cfg, "%s/cfg.json", e->dir);
    snprintf(e->data, sizeof e->data, "%s/data.tok", e->dir);
    FILE *f = fopen(e->cfg, "w");
    if (!f) return -1;
    fprintf(f, "{\"vocab_size\": %d, \"hidden\": 32, \"n_layers\": 2, \"n_heads\": 4, \"max_seq_len\": 16, "
            "\"seq_len\": 16, \"batch_size\": 4, \"steps\": 20, \"threads\": 1, \"precision\": \"fp32\", "
            "\"checkpoint_every\": 4, \"keep_checkpoints\": 2, \"max_bad_steps\": 2}\n", vocab_size);
    fclose(f);
    moe_tokens t = {0};
    t.n = 3000;
    t.vocab_size = 50;
    t.ids = malloc(t.n * sizeof(uint32_t));
    for (size_t i = 0; i < t.n; i++) t.ids[i] = (uint32_t)((i * 7 + i / 13) % 50);
    int rc = moe_tokens_write(e->data, &t, &err);
    free(t.ids);
    return rc;
}

static void env_close(env *e) {
    moe_comm_free(e->world);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", e->dir);
    CHECK(system(cmd) == 0, "cleanup");
}

/* The options of a new run from the env's config into e->dir/NAME, with
 * --steps 8 (the config says 20: the override must win). */
static moe_session_opts new_run(const env *e, char *out, size_t cap, const char *name, heard *h,
                                volatile sig_atomic_t *stop) {
    static const moe_session_override steps8 = {"steps", "steps", 8};
    snprintf(out, cap, "%s/%s", e->dir, name);
    moe_session_opts o = {0};
    o.config = e->cfg;
    o.data = e->data;
    o.out = out;
    o.overrides = &steps8;
    o.n_overrides = 1;
    o.world = e->world;
    o.stop = stop;
    o.say = hear;
    o.say_ctx = h;
    o.analysis_tokens = 4096;
    o.eval_tokens = 65536;
    return o;
}

/* Called before each step (a fault to inject). */
typedef void (*before_fn)(moe_session *s, void *ctx);

/* Steps s to its end and writes the last checkpoint; the step losses go
 * to loss[step] (up to 16). 0 or -1 (err). */
static int run_out(moe_session *s, before_fn before, void *ctx, double *loss, moe_err *err) {
    while (!moe_session_finished(s)) {
        if (before) before(s, ctx);
        moe_session_event ev;
        if (moe_session_step(s, &ev, err)) return -1;
        if (ev.trained && loss && ev.st.step < 16) loss[ev.st.step] = ev.st.loss;
    }
    return moe_session_close(s, err);
}

/* A copy of the model's parameters. */
static float *params_of(const moe_session *s) {
    float *p = malloc(s->model->n_params * sizeof(float));
    if (p) memcpy(p, s->model->params, s->model->n_params * sizeof(float));
    return p;
}

/* An uninterrupted run of 8 steps: its weights (and losses), or NULL. */
static float *reference_run(const env *e, double *loss) {
    char out[256];
    heard h = {{0}, 0};
    moe_session s;
    moe_err err;
    moe_session_opts o = new_run(e, out, sizeof out, "reference", &h, NULL);
    float *p = NULL;
    if (moe_session_open(&s, &o, &err) || run_out(&s, NULL, NULL, loss, &err))
        fprintf(stderr, "  reference run: %s\n", err.msg);
    else
        p = params_of(&s);
    moe_session_free(&s);
    return p;
}

/* A new env and its uninterrupted run's weights (and losses). */
static float *open_with_reference(env *e, double *loss) {
    CHECK(env_open(e, 50) == 0, "setup");
    float *ref = reference_run(e, loss);
    CHECK(ref != NULL, "the reference run");
    return ref;
}

static void stop_at_3(moe_session *s, void *ctx) {
    if (s->tr.step == 2) *(volatile sig_atomic_t *)ctx = SIGTERM;  /* read after step 3 */
}

/* Stopped after step 3 (as a signal stops it), resumed with --resume RUN
 * alone (its data found in the checkpoint): the weights and every later
 * loss equal an uninterrupted run's, bit for bit. */
static void test_stop_and_resume_exact(void) {
    env e;
    double want[16] = {0}, got[16] = {0};
    float *ref = open_with_reference(&e, want);

    char out[256];
    heard h = {{0}, 0};
    volatile sig_atomic_t stop = 0;
    moe_session s;
    moe_err err;
    moe_session_opts o = new_run(&e, out, sizeof out, "stopped", &h, &stop);
    CHECK(moe_session_open(&s, &o, &err) == 0, "%s", err.msg);
    CHECK(s.tr.cfg == &s.model->cfg && s.model->cfg.steps == 8,
          "one config, the model's, with the override: steps %d", s.model->cfg.steps);
    CHECK(run_out(&s, stop_at_3, (void *)&stop, NULL, &err) == 0, "%s", err.msg);
    CHECK(s.tr.step == 3 && s.stopping, "stopped after step 3: at %ld", s.tr.step);
    moe_session_free(&s);

    moe_session_opts r = {0};
    r.resume = out;
    r.world = e.world;
    r.say = hear;
    r.say_ctx = &h;
    CHECK(moe_session_open(&s, &r, &err) == 0, "resume: %s", err.msg);
    CHECK(s.tr.step == 3 && !strcmp(s.tr.out_dir, out), "resumed at step %ld in %s", s.tr.step, s.tr.out_dir);
    CHECK(strstr(h.text, "resuming on the run's data") != NULL, "said: %s", h.text);
    CHECK(run_out(&s, NULL, NULL, got, &err) == 0, "%s", err.msg);
    CHECK(s.tr.step == 8, "ended at step %ld", s.tr.step);
    if (ref) CHECK(memcmp(ref, s.model->params, s.model->n_params * sizeof(float)) == 0,
                   "resumed weights bit-identical to the uninterrupted run's");
    for (int k = 4; k <= 8; k++) CHECK(got[k] == want[k], "step %d loss %.9g, uninterrupted %.9g", k, got[k], want[k]);
    moe_session_free(&s);

    /* checkpoints 4 and 8 are kept: the older one cannot go on in the run */
    char older[300], owner[4096];
    snprintf(older, sizeof older, "%s/checkpoints/step-00000004", out);
    CHECK(moe_resume_target(older, owner, sizeof owner, &err) < 0 && strstr(err.msg, "older checkpoint"),
          "resume from an older checkpoint: %s", err.msg);
    free(ref);
    env_close(&e);
}

/* Fills every parameter with NaN before the next of the steps in ctx (a
 * list ending in 0; each is used once, then marked -1): the loss is not
 * finite, the step is skipped, and so are the next until a return to a
 * checkpoint. */
static void nan_before(moe_session *s, void *ctx) {
    long *at = ctx;
    while (*at < 0) at++;
    if (*at && s->tr.step + 1 == *at) {
        for (size_t i = 0; i < s->model->n_params; i++) s->model->params[i] = NAN;
        *at = -1;
    }
}

/* Whether the run file f of dir holds the lines of steps first..n, in
 * order, once each. */
static int log_steps_are(const char *dir, moe_run_file f, long first, long n) {
    moe_json_value **lines;
    size_t k;
    moe_err err;
    if (moe_rundir_read_lines(dir, f, &lines, &k, &err)) return 0;
    int ok = k == (size_t)(n - first + 1);
    for (size_t i = 0; ok && i < k; i++) {
        const moe_json_value *step = moe_json_get(lines[i], "step");
        ok = step && step->type == MOE_JSON_NUMBER && step->number == (double)(first + (long)i);
    }
    moe_rundir_lines_free(lines, k);
    return ok;
}

/* Steps 6 and 7 are not finite: skipped, then (max_bad_steps 2) the run
 * returns to the checkpoint of step 4 and ends as the uninterrupted run
 * does; step 5's lines, written before the return, are not doubled. The
 * same again after that return: training diverged. */
static void test_non_finite_rollback_and_divergence(void) {
    env e;
    double want[16] = {0}, got[16] = {0};
    float *ref = open_with_reference(&e, want);

    char out[256];
    heard h = {{0}, 0};
    moe_session s;
    moe_err err;
    moe_session_opts o = new_run(&e, out, sizeof out, "rollback", &h, NULL);
    o.analysis_every = 1;  /* the calibration probe after every step */
    long once[] = {6, 0};
    CHECK(moe_session_open(&s, &o, &err) == 0, "%s", err.msg);
    CHECK(run_out(&s, nan_before, once, got, &err) == 0, "%s", err.msg);
    CHECK(strstr(h.text, "step 6: the loss is not finite") && strstr(h.text, "step 7: the loss is not finite") &&
          strstr(h.text, "2 non-finite steps in a row: returned to the checkpoint of step 4"), "said: %s", h.text);
    CHECK(s.tr.step == 8 && s.rolled_back_to == 4, "ended at %ld, returned to %ld", s.tr.step, s.rolled_back_to);
    if (ref) CHECK(memcmp(ref, s.model->params, s.model->n_params * sizeof(float)) == 0,
                   "after the return the weights are the uninterrupted run's, bit for bit");
    for (int k = 5; k <= 8; k++) CHECK(got[k] == want[k], "step %d loss %.9g, uninterrupted %.9g", k, got[k], want[k]);
    CHECK(log_steps_are(out, MOE_RUN_METRICS, 1, 8), "metrics.jsonl holds steps 1..8 once each: the steps "
          "after the return are written again, and kept");
    CHECK(log_steps_are(out, MOE_RUN_CALIBRATION, 0, 8), "calibration.jsonl holds steps 0..8 once each: step 5's probe, "
          "written before the return, is not doubled");
    moe_session_free(&s);

    /* again after the return to the same checkpoint: steps 5, 6, and 5, 6 once more */
    o = new_run(&e, out, sizeof out, "diverged", &h, NULL);
    long twice[] = {5, 5, 0};
    CHECK(moe_session_open(&s, &o, &err) == 0, "%s", err.msg);
    CHECK(run_out(&s, nan_before, twice, NULL, &err) < 0 &&
          strstr(err.msg, "training diverged: 2 non-finite steps in a row again after returning to the "
                 "checkpoint of step 4"), "diverged: %s", err.msg);
    moe_session_free(&s);
    free(ref);
    env_close(&e);
}

/* adam_eps 0 from the step named in ctx on (a fault past the config's
 * validation): rows 50..59 of the embedding never see a gradient, so the
 * update computes 0/0 there. */
static void zero_eps_before(moe_session *s, void *ctx) {
    if (s->tr.step + 1 == *(const long *)ctx) s->model->cfg.adam_eps = 0.0;
}

/* A poisoned update returns to the last checkpoint at once; poisoned again
 * from there, training diverged; with no checkpoint yet, an error that says
 * so. */
static void test_poisoned_update(void) {
    env e;
    CHECK(env_open(&e, 60) == 0, "setup");
    char out[256];
    heard h = {{0}, 0};
    moe_session s;
    moe_err err;
    moe_session_opts o = new_run(&e, out, sizeof out, "poisoned", &h, NULL);
    long at = 5;
    CHECK(moe_session_open(&s, &o, &err) == 0, "%s", err.msg);
    CHECK(run_out(&s, zero_eps_before, &at, NULL, &err) < 0 &&
          strstr(err.msg, "training diverged: the weights became non-finite (tensor 'model.embed_tokens.weight') "
                 "again after returning to the checkpoint of step 4"), "diverged: %s", err.msg);
    CHECK(strstr(h.text, "step 5: the update left") &&
          strstr(h.text, "returned to the checkpoint of step 4 (weights, optimiser"), "said: %s", h.text);
    moe_session_free(&s);

    o = new_run(&e, out, sizeof out, "poisoned-first", &h, NULL);
    at = 1;
    CHECK(moe_session_open(&s, &o, &err) == 0, "%s", err.msg);
    CHECK(run_out(&s, zero_eps_before, &at, NULL, &err) < 0 && strstr(err.msg, "no checkpoint to return to") &&
          strstr(err.msg, "step 1 poisoned the weights"), "no checkpoint: %s", err.msg);
    moe_session_free(&s);
    env_close(&e);
}

/* What open refuses, each with its message: a bad override (a usage
 * error), a fresh run into a run's folder, a resume that would move the
 * data position. */
static void test_open_refusals(void) {
    env e;
    CHECK(env_open(&e, 50) == 0, "setup");
    char out[256];
    heard h = {{0}, 0};
    moe_session s;
    moe_err err;
    moe_session_opts o = new_run(&e, out, sizeof out, "run", &h, NULL);
    moe_session_override bad = {"lr", "lr", -1};
    o.overrides = &bad;
    CHECK(moe_session_open(&s, &o, &err) == MOE_SESSION_USAGE && strstr(err.msg, "option --lr") &&
          strstr(err.msg, "'lr'"), "bad override: %s", err.msg);
    moe_session_free(&s);

    o = new_run(&e, out, sizeof out, "run", &h, NULL);
    CHECK(moe_session_open(&s, &o, &err) == 0 && run_out(&s, NULL, NULL, NULL, &err) == 0, "%s", err.msg);
    moe_session_free(&s);
    CHECK(moe_session_open(&s, &o, &err) == MOE_SESSION_FAILED && strstr(err.msg, "already holds a run") &&
          !s.quiet, "a second fresh run there: %s", err.msg);
    moe_session_free(&s);

    moe_session_override seq = {"seq", "seq_len", 8};
    moe_session_opts r = {0};
    r.resume = out;
    r.overrides = &seq;
    r.n_overrides = 1;
    r.world = e.world;
    CHECK(moe_session_open(&s, &r, &err) == MOE_SESSION_FAILED && strstr(err.msg, "--seq 8, but the run has "
          "seq_len 16"), "resume with another seq_len: %s", err.msg);
    moe_session_free(&s);
    env_close(&e);
}

int main(void) {
    RUN(test_stop_and_resume_exact);
    RUN(test_non_finite_rollback_and_divergence);
    RUN(test_poisoned_update);
    RUN(test_open_refusals);
    TEST_MAIN_END();
}
