/* test_eval.c — the measurements of METHOD §3 against known answers: flip rate
 * of hand-built masks, acc vs acc_norm on a crafted task where they
 * disagree, per-domain loss on a crafted shard (with a hand-built unigram
 * model whose every log-probability is known), routed-token ratios and
 * per-token routing probability of hand-built gates, active experts against
 * frequency, the calibration probe, task-file errors and the report. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "moe/analysis/analysis.h"
#include "moe/eval/eval.h"
#include "moe/util/fileio.h"

/* Log-likelihoods of the unigram model against their values in double: sums
 * of a few float32 log-probabilities (~u = 6e-8 relative each), measured
 * 1.2e-8 .. 4.1e-8 relative; LL_TOL is ~10x that. */
#define LL_TOL 5e-7

static char tmpdir[256];

static void write_text(const char *name, const char *text, char *path, size_t cap) {
    snprintf(path, cap, "%s/%s", tmpdir, name);
    moe_err err;
    CHECK(!moe_write_file_atomic(path, text, strlen(text), &err), "%s", err.msg);
}

/* ---- the unigram model: logits = c * s[v] whatever the context ------------ */

/* A one-layer dense model with every weight zero except embed[v][0] = 1 and
 * lm_head[v][0] = s[v] / c, norms 1: attention and FFN add nothing, the final
 * RMSNorm maps [1, 0, ...] to [c, 0, ...], so logits[v] = s[v] exactly.
 * Vocabulary 257 (the bytes tokenizer). */
static moe_model *unigram_model(const double *s) {
    moe_config cfg;
    moe_config_defaults(&cfg);
    strcpy(cfg.precision, "fp32");  /* exact fp32 products, whatever "auto" picks on this CPU */
    cfg.vocab_size = 257;
    cfg.hidden = 8;
    cfg.n_layers = 1;
    cfg.n_heads = 1;
    cfg.n_kv_heads = 1;
    cfg.max_seq_len = 64;
    cfg.seq_len = 16;
    strcpy(cfg.ffn, "dense");
    moe_err err;
    moe_model *m = NULL;
    if (moe_config_finalize(&cfg, &err) || moe_model_create(&cfg, &m, &err)) {
        CHECK(0, "model: %s", err.msg);
        return NULL;
    }
    memset(m->params, 0, m->n_params * sizeof(float));
    size_t D = 8;
    double c = 1.0 / sqrt(1.0 / (double)D + cfg.norm_eps);
    for (size_t v = 0; v < 257; v++) {
        m->embed[v * D] = 1.0f;
        m->lm_head[v * D] = (float)(s[v] / c);
    }
    for (size_t d = 0; d < D; d++) {
        m->final_norm[d] = 1.0f;
        m->blocks[0].attn_norm[d] = 1.0f;
        m->blocks[0].ffn_norm[d] = 1.0f;
    }
    return m;
}

/* log p(v) of the unigram model with scores s. */
static double unigram_lp(const double *s, size_t v) {
    double mx = -1e300, sum = 0;
    for (size_t i = 0; i < 257; i++) mx = fmax(mx, s[i]);
    for (size_t i = 0; i < 257; i++) sum += exp(s[i] - mx);
    return s[v] - mx - log(sum);
}

static void scores(double *s) {
    for (size_t i = 0; i < 257; i++) s[i] = 0.0;
    s['a'] = 8.0;
    s['z'] = -8.0;
    s[' '] = 3.0;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_flip_rate_of_known_masks(void) {
    /* L = 2 layers, T = 2 tokens, E = 4 experts: 16 entries, 3 differ */
    uint8_t prev[16] = {1, 0, 0, 0, 0, 1, 0, 0, /* layer 1 */ 1, 1, 0, 0, 0, 0, 0, 1};
    uint8_t cur[16] = {0, 1, 0, 0, 0, 1, 0, 0, /* layer 1 */ 1, 1, 0, 0, 0, 0, 1, 1};
    double r = moe_flip_rate(prev, cur, 16);
    CHECK_CLOSE(r, 3.0 / 16.0, 0, 1e-15);
    CHECK_CLOSE(4 * r, 0.75, 0, 1e-15);  /* flip count = E * flip rate */
    CHECK(moe_flip_rate(prev, prev, 16) == 0.0, "identical masks flip nothing");
    float gates[8] = {0.5f, 0, 0, 0, 0, 2.0f, -0.0f, 1e-30f};
    uint8_t mask[8];
    moe_mask_from_gates(gates, 2, 4, mask);
    uint8_t want[8] = {1, 0, 0, 0, 0, 1, 0, 1};
    CHECK(!memcmp(mask, want, 8), "mask = gates != 0");
}

static void test_mc_pick_acc_vs_norm(void) {
    double ll[3] = {-2.0, -3.0, -9.0};
    size_t bytes[3] = {2, 6, 3};
    int p, pn;
    moe_mc_pick(ll, bytes, 3, &p, &pn);
    CHECK(p == 0 && pn == 1, "acc picks the largest sum (0), acc_norm the largest per byte (1): %d %d", p, pn);
    double tie[2] = {-1.0, -1.0};
    size_t tb[2] = {1, 1};
    moe_mc_pick(tie, tb, 2, &p, &pn);
    CHECK(p == 0 && pn == 0, "ties go to the first choice");
}

static void test_mc_task_where_acc_and_norm_disagree(void) {
    double s[257];
    scores(s);
    moe_model *m = unigram_model(s);
    moe_err err;
    moe_tokenizer *tok = moe_tokenizer_bytes(&err);
    if (!m || !tok) { CHECK(0, "setup"); moe_model_free(m); moe_tokenizer_free(tok); return; }
    /* item 1: " zz" has the larger sum, " xxxxx" the larger sum per byte; gold is " xxxxx"
     * item 2: " a" wins both ways; gold is " a" */
    char path[512];
    write_text("task.jsonl",
               "{\"id\": \"one\", \"context\": \"q\", \"choices\": [\" zz\", \" xxxxx\"], \"gold\": 1}\n"
               "\n"
               "{\"context\": \"q\", \"choices\": [\" a\", \" z\"], \"gold\": 0}\n", path, sizeof path);
    moe_task t;
    CHECK(!moe_task_load(path, &t, &err), "%s", err.msg);
    CHECK(t.n == 2 && !strcmp(t.name, "task") && t.items[1].line == 3, "two items, line numbers kept");
    double ll[2];
    CHECK(!moe_mc_loglik(m, tok, &t.items[0], ll, &err), "%s", err.msg);
    double lsp = unigram_lp(s, ' '), lz = unigram_lp(s, 'z'), lx = unigram_lp(s, 'x');
    CHECK_CLOSE(ll[0], lsp + 2 * lz, LL_TOL, 0);
    CHECK_CLOSE(ll[1], lsp + 5 * lx, LL_TOL, 0);
    CHECK(ll[0] > ll[1] && ll[0] / 3 < ll[1] / 6, "the crafted item separates the two rules");
    moe_mc_result r;
    CHECK(!moe_mc_eval(m, tok, &t, 0, &r, &err), "%s", err.msg);
    CHECK(r.n == 2, "items %zu", r.n);
    CHECK_CLOSE(r.acc, 0.5, 0, 1e-12);
    CHECK_CLOSE(r.acc_norm, 1.0, 0, 1e-12);
    CHECK_CLOSE(r.acc_stderr, 0.5, 0, 1e-12);  /* sqrt(0.25 / 1) */
    CHECK(!moe_mc_eval(m, tok, &t, 1, &r, &err) && r.n == 1 && r.acc == 0.0, "limit 1");
    /* a context longer than max_seq_len is cut from the left; the sum is unchanged */
    moe_mc_item it = t.items[0];
    char longctx[200];
    memset(longctx, 'q', sizeof longctx - 1);
    longctx[sizeof longctx - 1] = 0;
    it.context = longctx;
    double ll2[2];
    CHECK(!moe_mc_loglik(m, tok, &it, ll2, &err), "%s", err.msg);
    CHECK_CLOSE(ll2[0], ll[0], LL_TOL, 0);
    moe_task_free(&t);
    moe_tokenizer_free(tok);
    moe_model_free(m);
}

/* ---- lm-evaluation-harness's JSONL forms ---------------------------------- */

/* Each fixture of tests/fixtures/harness/ (hand-written records in the
 * forms of the datasets the harness reads) becomes the prompt the harness
 * builds: the expected contexts and choices below are written out by hand
 * from the harness's templates. */
static void test_harness_forms(void) {
    static const struct {
        const char *file;
        size_t item, n_choices;
        int gold, last_word;
        const char *context, *choice0, *choice_gold;
    } want[] = {
        {"arc", 0, 4, 1, 0, "Question: Which part of a plant takes in water?\nAnswer:", " leaves", " roots"},
        {"arc", 1, 3, 0, 0, "Question: What do magnets attract?\nAnswer:", " iron", " iron"},
        {"boolq", 0, 2, 1, 0, "The Sun is the star at the center of the Solar System.\nQuestion: is the sun a star?\nAnswer:",
         " no", " yes"},
        {"boolq", 1, 2, 0, 0, "Fish are aquatic animals with gills and scales.\nQuestion: do fish have fur?\nAnswer:",
         " no", " no"},
        {"hellaswag", 0, 4, 3, 0, "Removing ice from car: Then, the man writes over the snow covering the window of a car, "
         "and a woman wearing winter clothes smiles. Then", " , the man adds wax to the windshield and cuts it.",
         " , the man continues removing the snow on his car."},
        /* " [title]" -> ". ", "[header]" and "[step]" dropped, double spaces single, ctx_b "" */
        {"hellaswag", 1, 2, 0, 0, "Home and Garden: How to plant a tree. Dig a hole.",
         "  Make it twice as wide as the root ball.", "  Make it twice as wide as the root ball."},
        {"piqa", 1, 2, 1, 0, "Question: To dry wet shoes,\nAnswer:", " fill them with ice.", " stuff them with newspaper."},
        {"race", 0, 4, 1, 0, "Article: Tom lives in a small town. Every morning he walks to school.\n\nHow does Tom go to school?",
         " By bus", " On foot"},
        {"race", 1, 2, 0, 0, "Article: Mary likes apples.\n\nMary likes _ .", " apples", " apples"},
        {"lambada", 0, 1, 0, 1, "She opened the door and saw her old", " friend", " friend"},
        {"lambada", 1, 1, 0, 1, "The dog wagged its tail at the", " mailman", " mailman"},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char path[256];
        snprintf(path, sizeof path, "tests/fixtures/harness/%s.jsonl", want[i].file);
        moe_task t;
        moe_err err;
        if (moe_task_load(path, &t, &err)) { CHECK(0, "%s: %s", path, err.msg); continue; }
        CHECK(t.n == 2, "%s: %zu items", path, t.n);
        const moe_mc_item *it = &t.items[want[i].item];
        CHECK(!strcmp(it->context, want[i].context), "%s[%zu] context '%s'", want[i].file, want[i].item, it->context);
        CHECK(it->n_choices == want[i].n_choices && it->gold == want[i].gold && it->last_word == want[i].last_word,
              "%s[%zu]: %zu choices, gold %d, last_word %d", want[i].file, want[i].item, it->n_choices, it->gold,
              it->last_word);
        CHECK(!strcmp(it->choices[0], want[i].choice0) && !strcmp(it->choices[it->gold], want[i].choice_gold),
              "%s[%zu] choices '%s' / gold '%s'", want[i].file, want[i].item, it->choices[0], it->choices[it->gold]);
        CHECK(it->delim_bytes == 1, "%s: the harness's delimiter is not counted by acc_norm", want[i].file);
        moe_task_free(&t);
    }
    /* a malformed record of a known form names the form and what it lacks */
    char path[512];
    moe_task t;
    moe_err err;
    write_text("arcbad.jsonl", "{\"question\": \"q\", \"choices\": {\"text\": [\"a\", \"b\"], \"label\": [\"A\", \"B\"]}, "
               "\"answerKey\": \"C\"}\n", path, sizeof path);
    CHECK(moe_task_load(path, &t, &err) == -1 && strstr(err.msg, "arcbad.jsonl:1: ARC item: expected \"answerKey\""),
          "%s", err.msg);
    write_text("hsbad.jsonl", "{\"activity_label\": \"x\", \"ctx\": \"y\", \"endings\": [\"a\", \"b\"], \"label\": \"2\"}\n",
               path, sizeof path);
    CHECK(moe_task_load(path, &t, &err) == -1 && strstr(err.msg, "hsbad.jsonl:1: HellaSwag item"), "%s", err.msg);
}

/* A bigram model over bytes: one-hot embeddings (hidden 258 >= 257 ids),
 * attention and FFN zero, so logits[w] = B[previous byte][w] exactly. */
static moe_model *bigram_model(double (*B)(size_t prev, size_t next)) {
    moe_config cfg;
    moe_config_defaults(&cfg);
    strcpy(cfg.precision, "fp32");  /* exact fp32 products, whatever "auto" picks on this CPU */
    cfg.vocab_size = 257; cfg.hidden = 258; cfg.n_layers = 1; cfg.n_heads = 1; cfg.n_kv_heads = 1;
    cfg.max_seq_len = 64; cfg.seq_len = 16;
    strcpy(cfg.ffn, "dense");
    moe_err err;
    moe_model *m = NULL;
    if (moe_config_finalize(&cfg, &err) || moe_model_create(&cfg, &m, &err)) { CHECK(0, "%s", err.msg); return NULL; }
    memset(m->params, 0, m->n_params * sizeof(float));
    size_t D = 258;
    double c = 1.0 / sqrt(1.0 / (double)D + cfg.norm_eps);  /* RMSNorm of a one-hot row */
    for (size_t v = 0; v < 257; v++) {
        m->embed[v * D + v] = 1.0f;
        for (size_t w = 0; w < 257; w++) m->lm_head[w * D + v] = (float)(B(v, w) / c);
    }
    for (size_t d = 0; d < D; d++) m->final_norm[d] = m->blocks[0].attn_norm[d] = m->blocks[0].ffn_norm[d] = 1.0f;
    return m;
}

/* after ' ' the likeliest byte is 'a'; after anything else, ' ' */
static double bigram_space_a(size_t prev, size_t next) {
    if (prev == ' ') return next == 'a' ? 5.0 : 0.0;
    return next == ' ' ? 5.0 : 0.0;
}

/* LAMBADA's accuracy is greedy: right iff every token of " word" is the
 * argmax. "b a": ' ' after 'b', 'a' after ' ' (right); "b z": 'z' is not
 * the argmax after ' ' (wrong), though its log-probability is finite. */
static void test_lambada_greedy(void) {
    moe_model *m = bigram_model(bigram_space_a);
    moe_err err;
    moe_tokenizer *tok = moe_tokenizer_bytes(&err);
    if (!m || !tok) { CHECK(0, "setup"); moe_model_free(m); moe_tokenizer_free(tok); return; }
    char path[512];
    write_text("lambada.jsonl", "{\"text\": \"b a\"}\n{\"text\": \"b z\"}\n{\"text\": \"c c b a\"}\n", path, sizeof path);
    moe_task t;
    CHECK(!moe_task_load(path, &t, &err), "%s", err.msg);
    moe_mc_result r;
    CHECK(!moe_mc_eval(m, tok, &t, 0, &r, &err), "%s", err.msg);
    CHECK(r.n == 3, "items %zu", r.n);
    CHECK_CLOSE(r.acc, 2.0 / 3, 0, 1e-12);
    CHECK_CLOSE(r.acc_norm, r.acc, 0, 1e-12);
    moe_task_free(&t);
    moe_tokenizer_free(tok);
    moe_model_free(m);
}

static void test_task_errors_name_file_line_and_expectation(void) {
    static const struct { const char *text, *want; } cases[] = {
        {"{\"context\": \"a\", \"choices\": [\" b\", \" c\"], \"gold\": 0}\nnot json\n", "bad.jsonl:2:2: expected"},
        {"{\"context\": \"a\", \"choices\": [\" b\"], \"gold\": 0}\n", "bad.jsonl:1: expected \"choices\": an array of at least 2 strings"},
        {"{\"context\": \"a\", \"choices\": [\" b\", \" c\"], \"gold\": 2}\n", "bad.jsonl:1: expected \"gold\": an integer index into the 2 choices"},
        {"{\"choices\": [\" b\", \" c\"], \"gold\": 0}\n", "bad.jsonl:1: expected a string \"context\""},
        {"[1, 2]\n", "bad.jsonl:1: expected a JSON object"},
        {"{\"context\": \"a\", \"choices\": [\" b\", 3], \"gold\": 0}\n", "bad.jsonl:1: choice 1: expected a non-empty string"},
        {"\n\n", "no task items"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[512];
        write_text("bad.jsonl", cases[i].text, path, sizeof path);
        moe_task t;
        moe_err err = {{0}};
        int rc = moe_task_load(path, &t, &err);
        CHECK(rc == -1 && strstr(err.msg, cases[i].want), "case %zu: '%s' lacks '%s'", i, err.msg, cases[i].want);
    }
}

static void test_per_domain_loss_on_crafted_shard(void) {
    double s[257];
    scores(s);
    moe_model *m = unigram_model(s);
    if (!m) return;
    /* three documents: "aaa<eot>" (domain a), "zz<eot>" (domain z), "ab<eot>" (domain a) */
    uint32_t ids[] = {'a', 'a', 'a', 256, 'z', 'z', 256, 'a', 'b', 256};
    uint64_t starts[] = {0, 4, 7};
    uint32_t doms[] = {0, 1, 0};
    char *names[] = {"a", "z"};
    moe_tokens t = {.ids = ids, .n = 10, .vocab_size = 257, .n_docs = 3, .doc_start = starts,
                    .doc_domain = doms, .n_domains = 2, .domain_names = names};
    CHECK(moe_tokens_domain_at(&t, 0) == 0 && moe_tokens_domain_at(&t, 4) == 1 &&
          moe_tokens_domain_at(&t, 6) == 1 && moe_tokens_domain_at(&t, 7) == 0 &&
          moe_tokens_domain_at(&t, 9) == 0, "domain of a position = its document's");
    /* predictions of positions 1..9: domain a gets 1,2,3 and 7,8,9; domain z gets 4,5,6 */
    double want_a = -(2 * unigram_lp(s, 'a') + unigram_lp(s, 256) + unigram_lp(s, 'a') + unigram_lp(s, 'b') +
                      unigram_lp(s, 256)),
           want_z = -(2 * unigram_lp(s, 'z') + unigram_lp(s, 256));
    moe_err err;
    size_t windows[] = {3, 4, 9, 64};  /* window length must not matter for a unigram model */
    for (size_t w = 0; w < 4; w++) {
        moe_loss_sums ls;
        CHECK(!moe_eval_loss(m, &t, 2, windows[w], 0, &ls, NULL, &err), "%s", err.msg);
        CHECK(ls.n_domains == 2 && ls.count[0] == 6 && ls.count[1] == 3 && ls.total_count == 9,
              "T=%zu: counts %g %g", windows[w], ls.count[0], ls.count[1]);
        CHECK_CLOSE(ls.nll[0], want_a, LL_TOL, 0);
        CHECK_CLOSE(ls.nll[1], want_z, LL_TOL, 0);
        CHECK_CLOSE(ls.total_nll, want_a + want_z, LL_TOL, 0);
        moe_loss_sums_free(&ls);
    }
    /* max_tokens 5: one window of 4 predictions; of the two windows (tokens
     * 0..4 in domain a, 4..8 in z) a's comes first on the tie: positions 1..4 */
    moe_loss_sums ls;
    CHECK(!moe_eval_loss(m, &t, 8, 16, 5, &ls, NULL, &err), "%s", err.msg);
    CHECK(ls.count[0] == 3 && ls.count[1] == 1, "max_tokens: %g %g", ls.count[0], ls.count[1]);
    moe_loss_sums_free(&ls);
    CHECK(m->training == 0, "training flag restored");
    moe_model_free(m);
}

static void test_route_stats_on_hand_gates(void) {
    /* one router, E = 2, 4 positions: tokens 5,5,7,5 in domains 0,0,1,1 */
    moe_site site = {.layer = 3, .which = 0, .E = 2};
    moe_route_stats st;
    moe_err err;
    CHECK(!moe_route_stats_init(&st, &site, 1, 10, 2, &err), "%s", err.msg);
    float g[8] = {0.5f, 0, /**/ 0.3f, 0.2f, /**/ 0, 0.9f, /**/ 0, 0};
    const float *gates[1] = {g};
    int tokens[4] = {5, 5, 7, 5};
    uint32_t doms[4] = {0, 0, 1, 1};
    moe_route_stats_add(&st, gates, 4, tokens, doms);
    CHECK_CLOSE(moe_routed_ratio(&st, 0, -1, 0), 2.0 / 4, 0, 1e-12);   /* positions 0,1 */
    CHECK_CLOSE(moe_routed_ratio(&st, 0, -1, 1), 2.0 / 4, 0, 1e-12);   /* positions 1,2 */
    CHECK_CLOSE(moe_routed_ratio(&st, 0, 0, 0), 1.0, 0, 1e-12);
    CHECK_CLOSE(moe_routed_ratio(&st, 0, 1, 0), 0.0, 0, 1e-12);
    CHECK_CLOSE(moe_routed_ratio(&st, 0, 1, 1), 0.5, 0, 1e-12);
    /* token 5 occurs 3 times: expert 0 takes 2 of them, expert 1 one */
    CHECK_CLOSE(moe_token_routing_prob(&st, 0, 0, 5), 2.0 / 3, 0, 1e-12);
    CHECK_CLOSE(moe_token_routing_prob(&st, 0, 1, 5), 1.0 / 3, 0, 1e-12);
    CHECK_CLOSE(moe_token_routing_prob(&st, 0, 1, 7), 1.0, 0, 1e-12);
    CHECK(moe_token_routing_prob(&st, 0, 0, 9) == 0.0, "unseen token");
    /* position 3 has no active expert: 1 of 4 positions */
    CHECK_CLOSE(moe_no_expert_fraction(&st, 0), 1.0 / 4, 0, 1e-12);
    /* frequency buckets: token 7 (count 1) in [1,2), token 5 (count 3) in [2,4);
     * active experts: token 7 -> 1; token 5 -> (1 + 2 + 0) / 3 */
    moe_freq_bucket *b;
    long nb = moe_freq_buckets(&st, &b, &err);
    CHECK(nb == 2, "buckets %ld", nb);
    if (nb == 2) {
        CHECK(b[0].lo == 1 && b[0].hi == 2 && b[0].types == 1 && b[0].occurrences == 1, "bucket 0");
        CHECK_CLOSE(b[0].active, 1.0, 0, 1e-12);
        CHECK(b[1].lo == 2 && b[1].types == 1 && b[1].occurrences == 3, "bucket 1");
        CHECK_CLOSE(b[1].active, 1.0, 0, 1e-12);
        CHECK_CLOSE(b[1].active_dom[0], 1.5, 0, 1e-12);  /* positions 0, 1 */
        CHECK_CLOSE(b[1].active_dom[1], 0.0, 0, 1e-12);  /* position 3 */
        CHECK(isnan(b[0].active_dom[0]), "token 7 never occurs in domain 0");
    }
    moe_freq_buckets_free(b, nb);
    /* the JSON parses back and lists token 5 first for expert 0 */
    moe_buf out = {0};
    moe_buf_printf(&out, "{");
    char *names[] = {"d0", "d1"};
    CHECK(!moe_route_stats_json(&st, NULL, names, 3, 1, &out, &err), "%s", err.msg);
    moe_buf_printf(&out, "}");
    moe_json_value *j = moe_json_parse(out.data, out.len, "analysis", &err);
    CHECK(j != NULL, "%s", err.msg);
    if (j) {
        const moe_json_value *site0 = &moe_json_get(j, "sites")->items[0];
        const moe_json_value *top0 = &moe_json_get(site0, "top_tokens")->items[0];
        CHECK(top0->count == 1 && moe_json_get(&top0->items[0], "id")->number == 5,
              "expert 0's top token is id 5");
        CHECK_CLOSE(moe_json_get(site0, "sparsity")->number, 1.0 - 4.0 / 8.0, 0, 1e-12);
        CHECK_CLOSE(moe_json_get(site0, "no_expert")->number, 0.25, 0, 1e-12);
        moe_json_free(j);
    }
    moe_buf_free(&out);
    moe_route_stats_free(&st);
}

static void test_json_text_keeps_utf8_marks_broken_bytes(void) {
    moe_buf b = {0};
    const uint8_t s[] = {'a', 0xC3, 0xA9, 0xE2, 0x82, '"', 0xFF};
    moe_json_text(&b, s, sizeof s);
    CHECK(b.data && !strcmp(b.data, "\"a\xC3\xA9<0xE2><0x82>\\\"<0xFF>\""), "got %s", b.data);
    moe_buf_free(&b);
}

/* A small random ReMoE model for the probe and the analysis pass. */
static moe_model *relu_model(void) {
    moe_config cfg;
    moe_config_defaults(&cfg);
    strcpy(cfg.precision, "fp32");  /* exact fp32 products, whatever "auto" picks on this CPU */
    cfg.vocab_size = 50;
    cfg.hidden = 16;
    cfg.n_layers = 2;
    cfg.n_heads = 2;
    cfg.n_kv_heads = 1;
    cfg.max_seq_len = 16;
    cfg.seq_len = 8;
    cfg.batch_size = 2;
    strcpy(cfg.ffn, "moe");
    strcpy(cfg.router, "relu");
    cfg.n_experts = 4;
    cfg.top_k = 1;
    cfg.init_std = 0.5;
    moe_err err;
    moe_model *m = NULL;
    if (moe_config_finalize(&cfg, &err) || moe_model_create(&cfg, &m, &err)) {
        CHECK(0, "model: %s", err.msg);
        return NULL;
    }
    moe_model_init(m, 7);
    return m;
}

static void test_probe_lines_and_state(void) {
    moe_model *m = relu_model();
    if (!m) return;
    uint32_t ids[100];
    for (size_t i = 0; i < 100; i++) ids[i] = (uint32_t)(i * 7 % 50);
    moe_tokens t = {.ids = ids, .n = 100, .vocab_size = 50};
    char path[512];
    snprintf(path, sizeof path, "%s/calibration.jsonl", tmpdir);
    unlink(path);
    moe_probe p;
    moe_err err;
    CHECK(!moe_probe_init(&p, &t, 40, 2, 8, path, &err), "%s", err.msg);
    CHECK(p.rows == 5, "40 tokens = 5 rows of 8, got %zu", p.rows);
    m->training = 1;
    m->rs.active_pairs = 12;
    m->rs.total_pairs = 34;
    CHECK(!moe_probe_measure(&p, m, 0, &err), "%s", err.msg);
    CHECK(!moe_probe_measure(&p, m, 10, &err), "%s", err.msg);
    CHECK(m->training == 1 && m->rs.active_pairs == 12 && m->rs.total_pairs == 34,
          "training flag and the step's routing counts untouched");
    /* a changed router moves some routing */
    for (size_t i = 0; i < m->layout.count; i++)
        if (strstr(m->layout.tensors[i].name, "router"))
            for (size_t j = 0; j < m->layout.tensors[i].size; j++) m->params[m->layout.tensors[i].offset + j] *= -1.0f;
    CHECK(!moe_probe_measure(&p, m, 20, &err), "%s", err.msg);
    size_t n;
    moe_json_value *lines[3] = {0};
    char *text = moe_read_file(path, &n, &err);
    CHECK(text != NULL, "%s", err.msg);
    size_t k = 0;
    for (char *line = text; text && *line && k < 3; k++) {
        char *nl = strchr(line, '\n');
        lines[k] = moe_json_parse(line, (size_t)(nl - line), "calibration", &err);
        line = nl + 1;
    }
    CHECK(k == 3 && lines[0] && lines[1] && lines[2], "three lines");
    if (lines[2]) {
        CHECK(moe_json_get(lines[0], "flip_rate")->type == MOE_JSON_NULL, "first measurement: no flip rate");
        CHECK(moe_json_get(lines[1], "flip_rate")->number == 0.0, "same model: nothing flips");
        double r = moe_json_get(lines[2], "flip_rate")->number;
        CHECK(r > 0.1, "negated router flips many entries: %g", r);
        CHECK_CLOSE(moe_json_get(lines[2], "flip_count")->number, 4 * r, 1e-12, 0);
        CHECK(moe_json_get(lines[2], "layers")->count == 2, "two MoE layers");
        double s = moe_json_get(lines[2], "sparsity")->number;
        CHECK(s >= 0 && s <= 1, "sparsity %g", s);
        CHECK(moe_json_get(lines[1], "step")->number == 10, "step recorded");
    }
    for (size_t i = 0; i < 3; i++) moe_json_free(lines[i]);
    free(text);
    /* resume: keep steps <= 10 */
    CHECK(!moe_jsonl_keep_steps(path, 10, &err), "%s", err.msg);
    text = moe_read_file(path, &n, &err);
    size_t nl = 0;
    for (size_t i = 0; text && i < n; i++) nl += text[i] == '\n';
    CHECK(nl == 2, "two lines kept, got %zu", nl);
    free(text);
    moe_probe_free(&p);
    moe_model_free(m);
}

static void test_analyze_pass_matches_forward(void) {
    moe_model *m = relu_model();
    if (!m) return;
    uint32_t ids[40];
    for (size_t i = 0; i < 40; i++) ids[i] = (uint32_t)(i * 3 % 50);
    uint64_t starts[] = {0, 20};
    uint32_t doms[] = {1, 0};
    char *names[] = {"x", "y"};
    moe_tokens t = {.ids = ids, .n = 40, .vocab_size = 50, .n_docs = 2, .doc_start = starts,
                    .doc_domain = doms, .n_domains = 2, .domain_names = names};
    moe_route_stats st;
    moe_err err;
    CHECK(!moe_analyze_tokens(m, &t, 3, 8, 0, &st, NULL, &err), "%s", err.msg);
    CHECK(st.n_sites == 2 && st.tokens == 40 && st.dom_tokens[0] == 20 && st.dom_tokens[1] == 20,
          "sites %zu tokens %g", st.n_sites, st.tokens);
    /* the same rows as one forward: the routed counts agree */
    int in[40];
    for (size_t i = 0; i < 40; i++) in[i] = (int)ids[i];
    moe_model_forward(m, in, NULL, 5, 8, NULL, NULL, &err);
    moe_site sites[4];
    size_t ns = moe_routing_sites(m, sites, 4);
    CHECK(ns == 2 && sites[1].layer == 1 && sites[1].E == 4, "two routers");
    for (size_t s = 0; s < ns; s++) {
        size_t N;
        const float *g = moe_site_gates(m, &sites[s], &N);
        for (size_t e = 0; e < 4; e++) {
            double c = 0;
            for (size_t i = 0; i < N; i++) c += g[i * 4 + e] != 0.0f;
            CHECK_CLOSE(moe_routed_ratio(&st, s, -1, e), c / 40, 0, 1e-12);
        }
    }
    moe_route_stats_free(&st);
    moe_model_free(m);
}

/* Issue 14.9: a partial read samples the whole file. 1000 tokens sorted by
 * domain (100 of d0, 300 of d1, 600 of d2), windows of 10: 10 windows are
 * one per domain plus 7 split by the largest remainder of 7 x (9, 29, 59)/97
 * = (0.65, 2.09, 4.26): 2, 3, 5; within a domain of c windows the j-th of q
 * is its local window floor((2j+1) c / 2q). */
static void test_sample_is_stratified_and_even(void) {
    uint64_t starts[3] = {0, 100, 400};
    uint32_t doms[3] = {0, 1, 2};
    char *names[3] = {"d0", "d1", "d2"};
    uint32_t *ids = calloc(1000, sizeof *ids);
    moe_tokens t = {.ids = ids, .n = 1000, .n_docs = 3, .doc_start = starts, .doc_domain = doms,
                    .n_domains = 3, .domain_names = names};
    size_t *st;
    moe_read_info ri;
    moe_err err;
    CHECK(moe_tokens_sample(&t, 10, 10, 100, &st, &ri, &err) == 0, "%s", err.msg);
    size_t want[10] = {20, 70,                 /* d0: local 2, 7 of 10 */
                       150, 250, 350,          /* d1: local 5, 15, 25 of 30 */
                       460, 580, 700, 820, 940}; /* d2: local 6, 18, 30, 42, 54 of 60 */
    CHECK(ri.windows == 10 && ri.tokens == 100 && ri.of == 1000 && ri.sampled && ri.stratified,
          "%zu windows, %zu tokens", ri.windows, ri.tokens);
    for (size_t i = 0; i < 10 && ri.windows == 10; i++)
        CHECK(st[i] == want[i], "window %zu starts at %zu, expected %zu", i, st[i], want[i]);
    free(st);
    /* fewer windows than domains: the largest domains first */
    CHECK(moe_tokens_sample(&t, 10, 10, 25, &st, &ri, &err) == 0 && ri.windows == 2 &&
          st[0] >= 100 && st[1] >= 400, "2 windows: %zu at %zu, %zu", ri.windows, st[0], st[1]);
    free(st);
    /* no domains: evenly spaced through the file; windows one token longer
     * than their stride (eval: T predictions) make (1000 - 11)/10 + 1 = 99
     * windows, of which 4 are floor((2j+1) 99/8) = 12, 37, 61, 86 */
    t.n_docs = 0;
    t.n_domains = 0;
    CHECK(moe_tokens_sample(&t, 11, 10, 40, &st, &ri, &err) == 0 && ri.windows == 4 && !ri.stratified,
          "%s", err.msg);
    CHECK(ri.windows == 4 && st[0] == 120 && st[1] == 370 && st[2] == 610 && st[3] == 860,
          "evenly spaced: %zu %zu %zu %zu", st[0], st[1], st[2], st[3]);
    free(st);
    /* bounds: at least one window, at most all of them */
    CHECK(moe_tokens_sample(&t, 10, 10, 3, &st, &ri, &err) == 0 && ri.windows == 1, "at least one");
    free(st);
    CHECK(moe_tokens_sample(&t, 11, 10, 999, &st, &ri, &err) == 0 && ri.windows == 99 && st[98] == 980,
          "at most (1000 - 11) / 10 + 1 = 99: %zu", ri.windows);
    free(st);
    CHECK(moe_tokens_sample(&t, 2000, 2000, 10, &st, &ri, &err) < 0 && strstr(err.msg, "2000"),
          "a window longer than the file: %s", err.msg);
    free(ids);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/moe_test_eval_XXXXXX");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
    RUN(test_flip_rate_of_known_masks);
    RUN(test_mc_pick_acc_vs_norm);
    RUN(test_mc_task_where_acc_and_norm_disagree);
    RUN(test_task_errors_name_file_line_and_expectation);
    RUN(test_harness_forms);
    RUN(test_lambada_greedy);
    RUN(test_per_domain_loss_on_crafted_shard);
    RUN(test_route_stats_on_hand_gates);
    RUN(test_json_text_keeps_utf8_marks_broken_bytes);
    RUN(test_probe_lines_and_state);
    RUN(test_analyze_pass_matches_forward);
    RUN(test_sample_is_stratified_and_even);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", tmpdir);
    TEST_MAIN_END();
}
