/* test_decode.c — incremental decoding: prefill + steps over the KV cache
 * give the logits of a full forward (dense, TopK, ReLU and every other
 * causal router / FFN kind), only experts with a non-zero gate are computed
 * per token, the refusal of non-causal routers, the sampler (determinism,
 * top-k, top-p) and the UTF-8 hold-back used when streaming. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "moe/model/decode.h"
#include "moe/util/json.h"
#include "moe/model/model.h"

#define DECODE_TOL 3e-6

enum { TT = 24, V = 61 };

/* A small random model; init_std 0.05 so that routing varies by token. */
static moe_model *make_model(const char *extra) {
    char text[512];
    snprintf(text, sizeof text,
             "{\"vocab_size\": %d, \"hidden\": 32, \"n_layers\": 2, \"n_heads\": 4, \"n_kv_heads\": 2,"
             " \"ffn_dim\": 48, \"max_seq_len\": 32, \"seq_len\": 32, \"init_std\": 0.05%s}", V, extra);
    moe_config c;
    moe_err err = {{0}};
    moe_config_defaults(&c);
    strcpy(c.precision, "fp32");  /* exact fp32 products, whatever "auto" picks on this CPU */
    moe_json_value *j = moe_json_parse(text, strlen(text), "cfg", &err);
    CHECK(j != NULL, "%s", err.msg);
    if (!j) return NULL;
    int rc = moe_config_apply_json(&c, j, "cfg", &err);
    moe_json_free(j);
    if (!rc) rc = moe_config_finalize(&c, &err);
    moe_model *m = NULL;
    if (!rc) rc = moe_model_create(&c, &m, &err);
    CHECK(rc == 0, "%s: %s", extra, err.msg);
    if (rc) return NULL;
    moe_model_init(m, 7);
    return m;
}

static void make_tokens(int *ids, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) ids[i] = (int)((i * 17 + seed * 31 + (i * i) % 7) % V);
}

/* max |a - b| / max |b| over n floats */
static double rel_err(const float *a, const float *b, size_t n) {
    double d = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        mx = fmax(mx, fabs((double)b[i]));
    }
    return mx > 0 ? d / mx : d;
}

/* Full forward of ids[TT] vs prefill of `pre` tokens, a second prefill of
 * `mid` tokens (as an interactive turn appends), then one step per token. */
static void check_parity(const char *extra, size_t pre, size_t mid) {
    moe_model *m = make_model(extra);
    if (!m) return;
    moe_err err = {{0}};
    int ids[TT];
    make_tokens(ids, TT, 3);
    m->keep_logits = 1;
    CHECK(moe_model_forward(m, ids, NULL, 1, TT, NULL, NULL, &err) == 0, "%s", err.msg);
    float *full = malloc(TT * V * sizeof(float)), *inc = malloc(TT * V * sizeof(float));
    memcpy(full, m->logits, TT * V * sizeof(float));
    moe_kv_cache *c = NULL;
    CHECK(moe_kv_cache_create(m, &c, &err) == 0, "%s", err.msg);
    if (!c) { free(full); free(inc); moe_model_free(m); return; }
    CHECK(moe_decode_prefill_all(m, c, ids, pre, inc, &err) == 0, "%s", err.msg);
    CHECK(moe_decode_prefill_all(m, c, ids + pre, mid, inc + pre * V, &err) == 0, "%s", err.msg);
    for (size_t t = pre + mid; t < TT; t++)
        CHECK(moe_decode_step(m, c, ids[t], inc + t * V, &err) == 0, "%s", err.msg);
    CHECK(c->len == TT, "cache holds %zu tokens", c->len);
    /* incremental and full forward do the same float32 products in another
     * order (one row against a cache vs. a whole block): a few u = 6e-8 of
     * the logits' scale, measured 8e-8 .. 3.0e-7 over every config here;
     * DECODE_TOL is ~10x that */
    double e = rel_err(inc, full, TT * V);
    CHECK(e <= DECODE_TOL, "%s: relative error %.3g", extra, e);
    /* the last-row prefill gives the last row of prefill_all */
    float last[V];
    moe_kv_cache_rewind(c, 0);
    CHECK(moe_decode_prefill(m, c, ids, TT, last, &err) == 0, "%s", err.msg);
    e = rel_err(last, full + (TT - 1) * V, V);
    CHECK(e <= DECODE_TOL, "%s: last-row prefill relative error %.3g", extra, e);
    /* a full cache refuses one more token and stays as it was */
    moe_kv_cache_rewind(c, 0);
    int many[33] = {0};
    CHECK(moe_decode_prefill(m, c, many, 33, NULL, &err) < 0 && strstr(err.msg, "max_seq_len"), "%s", err.msg);
    CHECK(c->len == 0, "failed prefill left %zu tokens", c->len);
    int bad = V;
    CHECK(moe_decode_step(m, c, bad, last, &err) < 0 && strstr(err.msg, "vocabulary"), "%s", err.msg);
    moe_kv_cache_free(c);
    free(full);
    free(inc);
    moe_model_free(m);
}

static void test_parity_dense(void) { check_parity("", 7, 5); }
static void test_parity_topk(void) {
    check_parity(", \"ffn\": \"moe\", \"router\": \"topk\", \"n_experts\": 4, \"top_k\": 1", 7, 5);
    check_parity(", \"ffn\": \"moe\", \"router\": \"topk\", \"n_experts\": 8, \"top_k\": 2, \"n_shared_experts\": 1", 1, 10);
}
static void test_parity_relu(void) {
    check_parity(", \"ffn\": \"moe\", \"router\": \"relu\", \"n_experts\": 4, \"top_k\": 1", 7, 5);
}

/* Every other causal router and FFN kind. */
static void test_parity_other_routers(void) {
    static const char *cfgs[] = {
        ", \"ffn\": \"moe\", \"router\": \"topp\", \"n_experts\": 4, \"top_k\": 1, \"top_p\": 0.5, \"n_shared_experts\": 1",
        ", \"ffn\": \"moe\", \"router\": \"hash\", \"n_experts\": 4, \"top_k\": 1",
        ", \"ffn\": \"moe\", \"router\": \"sparsemixer\", \"n_experts\": 4, \"top_k\": 2",
        ", \"ffn\": \"moe\", \"router\": \"topk\", \"n_experts\": 4, \"top_k\": 2, \"n_shared_experts\": 1, \"shared_gate\": true",
        ", \"ffn\": \"moe\", \"router\": \"relu\", \"n_experts\": 4, \"top_k\": 1, \"granularity\": 2",
        ", \"ffn\": \"cartesian\", \"router\": \"topk\", \"n_experts\": 4, \"top_k\": 1",
    };
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) check_parity(cfgs[i], 5, 6);
}

/* Per decode step, the read-out counts exactly k active experts per token
 * for TopK, and an expert with a zero gate is not computed: poisoning its
 * weights with NaN leaves the step's logits unchanged. */
static void check_sparse(const char *extra, double expect_active) {
    moe_model *m = make_model(extra);
    if (!m) return;
    moe_err err = {{0}};
    moe_kv_cache *c = NULL;
    CHECK(moe_kv_cache_create(m, &c, &err) == 0, "%s", err.msg);
    if (!c) { moe_model_free(m); return; }
    int ids[TT];
    make_tokens(ids, TT, 5);
    float a[V], b[V];
    CHECK(moe_decode_prefill(m, c, ids, 4, a, &err) == 0, "%s", err.msg);
    moe_kv_cache_reset_stats(c);
    for (size_t t = 4; t < 12; t++) CHECK(moe_decode_step(m, c, ids[t], a, &err) == 0, "%s", err.msg);
    for (size_t l = 0; l < c->n_layers; l++) {
        CHECK(c->routed_tokens[l] == 8 && c->n_experts[l] == 4, "layer %zu: %g tokens, E %d", l,
              c->routed_tokens[l], c->n_experts[l]);
        double mean = c->active_pairs[l] / c->routed_tokens[l];
        if (expect_active > 0) CHECK(mean == expect_active, "layer %zu: %g active per token", l, mean);
        else CHECK(mean > 0 && mean < 4, "layer %zu: %g active per token", l, mean);
    }
    /* the step at position 11 again, with the inactive experts poisoned */
    int poisoned = 0;
    for (size_t l = 0; l < c->n_layers; l++) {
        const float *g;
        size_t N, E;
        moe_ffn *f = m->blocks[l].ffn;
        CHECK(f->ops->routing(f, 0, &g, &N, &E) == 0 && N == 1, "routing of a step");
        char name[96];
        snprintf(name, sizeof name, "model.layers.%zu.mlp.experts.gate_proj.weight", l);
        const moe_tensor *t = moe_layout_find(&m->layout, name);
        CHECK(t != NULL, "no tensor %s", name);
        if (!t) continue;
        size_t per = t->size / E;
        for (size_t e = 0; e < E; e++)
            if (g[e] == 0.0f) {
                float *w = m->params + t->offset + e * per;
                for (size_t i = 0; i < per; i++) w[i] = NAN;
                poisoned++;
            }
    }
    CHECK(poisoned > 0, "no inactive expert to poison");
    moe_kv_cache_rewind(c, 11);
    CHECK(moe_decode_step(m, c, ids[11], b, &err) == 0, "%s", err.msg);
    CHECK(memcmp(a, b, sizeof a) == 0, "%s: logits changed when inactive experts were poisoned", extra);
    moe_kv_cache_free(c);
    moe_model_free(m);
}

static void test_sparse_execution(void) {
    check_sparse(", \"ffn\": \"moe\", \"router\": \"topk\", \"n_experts\": 4, \"top_k\": 1", 1.0);
    check_sparse(", \"ffn\": \"moe\", \"router\": \"relu\", \"n_experts\": 4, \"top_k\": 1", 0);
}

/* A non-causal router is refused by name, whether or not it is built in. */
static void test_refuses_non_causal(void) {
    moe_model *m = make_model(", \"ffn\": \"moe\", \"router\": \"topk\", \"n_experts\": 4, \"top_k\": 1");
    if (!m) return;
    moe_err err = {{0}};
    moe_kv_cache *c = NULL;
    strcpy(m->cfg.router, "expert_choice");
    CHECK(moe_kv_cache_create(m, &c, &err) < 0 && strstr(err.msg, "'expert_choice'") &&
          strstr(err.msg, "batch") && !strchr(err.msg, '\n'), "%s", err.msg);
    CHECK(c == NULL, "no cache on refusal");
    moe_model_free(m);
}

/* Greedy decoding from a prompt: temperature 0 ignores the seed; the same
 * seed gives the same sample, another seed (almost surely) another. */
static void generate(moe_model *m, double temp, long top_k, double top_p, uint64_t seed, int *out, size_t n) {
    moe_err err = {{0}};
    moe_kv_cache *c = NULL;
    moe_sampler s;
    CHECK(moe_kv_cache_create(m, &c, &err) == 0, "%s", err.msg);
    CHECK(moe_sampler_init(&s, V, temp, top_k, top_p, &err) == 0, "%s", err.msg);
    if (!c) return;
    moe_rng rng;
    moe_rng_seed(&rng, seed);
    int prompt[3] = {1, 2, 3};
    float logits[V];
    CHECK(moe_decode_prefill(m, c, prompt, 3, logits, &err) == 0, "%s", err.msg);
    for (size_t i = 0; i < n; i++) {
        out[i] = moe_sample(&s, logits, &rng);
        if (i + 1 < n) CHECK(moe_decode_step(m, c, out[i], logits, &err) == 0, "%s", err.msg);
    }
    moe_sampler_free(&s);
    moe_kv_cache_free(c);
}

static void test_determinism(void) {
    moe_model *m = make_model(", \"ffn\": \"moe\", \"router\": \"relu\", \"n_experts\": 4, \"top_k\": 1");
    if (!m) return;
    enum { G = 20 };
    int a[G], b[G], c[G];
    generate(m, 0.0, 0, 1.0, 1, a, G);
    generate(m, 0.0, 0, 1.0, 99, b, G);
    CHECK(!memcmp(a, b, sizeof a), "greedy decoding depends on the seed");
    /* greedy = argmax of the full forward's last row, token by token */
    int ctx[3 + G] = {1, 2, 3};
    memcpy(ctx + 3, a, sizeof a);
    moe_err err = {{0}};
    m->keep_logits = 1;
    CHECK(moe_model_forward(m, ctx, NULL, 1, 3 + G - 1, NULL, NULL, &err) == 0, "%s", err.msg);
    int agree = 1;
    for (size_t t = 2; t < 2 + G; t++) {
        const float *row = m->logits + t * V;
        size_t best = 0;
        for (size_t i = 1; i < V; i++) if (row[i] > row[best]) best = i;
        agree &= (int)best == ctx[t + 1];
    }
    CHECK(agree, "greedy tokens differ from the full forward's argmax");
    generate(m, 1.0, 0, 0.9, 5, a, G);
    generate(m, 1.0, 0, 0.9, 5, b, G);
    generate(m, 1.0, 0, 0.9, 6, c, G);
    CHECK(!memcmp(a, b, sizeof a), "same seed, different samples");
    CHECK(memcmp(a, c, sizeof a), "different seeds, same samples");
    moe_model_free(m);
}

/* Sampler filters on a known distribution. */
static void test_sampler(void) {
    enum { n = 8 };
    float logits[n];
    double p[n] = {0.4, 0.3, 0.1, 0.1, 0.05, 0.03, 0.01, 0.01};
    for (int i = 0; i < n; i++) logits[i] = (float)log(p[i]);
    logits[3] += 1e-6f;  /* id 3 ranks before id 2 */
    moe_err err = {{0}};
    moe_rng rng;
    moe_rng_seed(&rng, 42);
    moe_sampler s;
    int count[n];
    struct { double temp; long k; double top_p; int allowed; } cases[] = {
        {1.0, 0, 1.0, 0xff},   /* everything */
        {1.0, 2, 1.0, 0x03},   /* top-2: ids 0, 1 */
        {1.0, 0, 0.65, 0x03},  /* nucleus 0.4 + 0.3 >= 0.65 */
        {1.0, 0, 0.75, 0x0b},  /* 0.4 + 0.3 + 0.1 (id 3) */
        {1.0, 3, 0.5, 0x03},   /* top-3 {0, 1, 3} renormalised: 0.4/0.8+ < 0.5, so {0, 1} */
        {0.0, 0, 0.3, 0x01},   /* greedy */
        {1.0, 1, 1.0, 0x01},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        CHECK(moe_sampler_init(&s, n, cases[ci].temp, cases[ci].k, cases[ci].top_p, &err) == 0, "%s", err.msg);
        memset(count, 0, sizeof count);
        for (int r = 0; r < 20000; r++) {
            int id = moe_sample(&s, logits, &rng);
            CHECK(id >= 0 && id < n, "id %d", id);
            if (id >= 0 && id < n) count[id]++;
        }
        int seen = 0;
        for (int i = 0; i < n; i++) seen |= count[i] ? 1 << i : 0;
        int want = cases[ci].allowed;
        CHECK((seen & ~want) == 0 && (seen & 1), "case %zu: ids seen 0x%x, allowed 0x%x", ci, seen, want);
        if (ci == 0) CHECK(fabs(count[0] / 20000.0 - 0.4) < 0.02 && fabs(count[4] / 20000.0 - 0.05) < 0.01,
                           "frequencies %d %d", count[0], count[4]);
        if (ci == 1) CHECK(fabs(count[0] / 20000.0 - 0.4 / 0.7) < 0.02, "top-2 frequency %d", count[0]);
        moe_sampler_free(&s);
    }
    CHECK(moe_sampler_init(&s, n, 1.0, 0, 0.0, &err) < 0 && strstr(err.msg, "top_p"), "top_p 0 refused");
    CHECK(moe_sampler_init(&s, n, -1.0, 0, 1.0, &err) < 0 && strstr(err.msg, "temperature"), "negative temperature");
}

static void test_utf8_hold(void) {
    CHECK(moe_utf8_complete("abc", 3) == 3, "ascii");
    CHECK(moe_utf8_complete("a\xC3", 2) == 1, "2-byte lead held");
    CHECK(moe_utf8_complete("a\xC3\xA9", 3) == 3, "complete é");
    CHECK(moe_utf8_complete("\xE2\x82", 2) == 0, "partial €");
    CHECK(moe_utf8_complete("x\xE2\x82\xAC", 4) == 4, "complete €");
    CHECK(moe_utf8_complete("\xF0\x9F\x98", 3) == 0, "partial emoji");
    CHECK(moe_utf8_complete("\xF0\x9F\x98\x80", 4) == 4, "complete emoji");
    CHECK(moe_utf8_complete("a\xFF", 2) == 2, "invalid byte not held");
    CHECK(moe_utf8_complete("\x80\x80", 2) == 2, "stray continuation bytes not held");
    CHECK(moe_utf8_complete("", 0) == 0, "empty");
}

int main(void) {
    RUN(test_parity_dense);
    RUN(test_parity_topk);
    RUN(test_parity_relu);
    RUN(test_parity_other_routers);
    RUN(test_sparse_execution);
    RUN(test_refuses_non_causal);
    RUN(test_determinism);
    RUN(test_sampler);
    RUN(test_utf8_hold);
    TEST_MAIN_END();
}
