/* test_kinds.c — the tables of router and FFN kinds (src/moe/router.c,
 * src/model/ffn.c): every kind is found by its name, makes what its name
 * says, agrees with its ops table, and the config's "router" and "ffn" keys
 * take exactly the kinds' names; what other layers read from a kind
 * (causal, exportable, its own keys) holds for the model it makes. */
#include <string.h>

#include "harness.h"
#include "moe/model/config.h"
#include "moe/model/decode.h"
#include "moe/model/ffn.h"
#include "moe/moe/router.h"

/* A small model config of ffn kind `ffn` with router `router`, valid for
 * every kind (hash: one expert per token; cartesian: TopK). */
static void small_config(moe_config *c, const char *ffn, const char *router) {
    moe_config_defaults(c);
    c->vocab_size = 32; c->hidden = 8; c->ffn_dim = 16; c->n_layers = 1;
    c->n_heads = 2; c->n_kv_heads = 1; c->max_seq_len = 16; c->seq_len = 8;
    c->n_experts = 4; c->top_k = 1; c->lory_segment = 4;
    snprintf(c->ffn, sizeof c->ffn, "%s", ffn);
    snprintf(c->router, sizeof c->router, "%s", router);
}

/* Every router kind: found by name, unique, creates a router whose ops
 * carry its name; an unknown name is refused with the key named. */
static void test_router_table(void) {
    size_t n = 0;
    for (const moe_router_kind *k; (k = moe_router_kind_at(n)); n++) {
        CHECK(k->name && k->create && strlen(k->name) < sizeof ((moe_config *)0)->router,
              "router kind %zu: no name or create, or a name longer than the config holds", n);
        CHECK(moe_router_kind_find(k->name) == k, "router '%s' not found by its name", k->name);
        CHECK(k->gates != MOE_GATES_NONE, "router '%s' has no ONNX gate rule", k->name);
        CHECK(!(k->exportable && k->no_export), "router '%s' both exportable and refused", k->name);
        moe_config c;
        small_config(&c, "moe", k->name);
        moe_err err;
        moe_router *r = NULL;
        CHECK(moe_config_finalize(&c, &err) == 0, "%s: %s", k->name, err.msg);
        CHECK(moe_router_create(&c, &r, &err) == 0, "%s: %s", k->name, err.msg);
        if (r) CHECK(!strcmp(r->ops->name, k->name), "router '%s' made ops '%s'", k->name, r->ops->name);
        moe_router_destroy(r);
    }
    CHECK(moe_router_kind_find("relux") == NULL && moe_router_kind_at(n) == NULL, "a kind past the table");
    moe_config c;
    small_config(&c, "moe", "relux");
    moe_router *r = NULL;
    moe_err err;
    CHECK(moe_router_create(&c, &r, &err) == -1 && strstr(err.msg, "key 'router'") &&
          strstr(err.msg, "'relux'"), "unknown router: %s", err.msg);
}

/* Every FFN kind: found by name, unique; its routed layers have its ops,
 * and a kind that is not routed makes dense layers. */
static void test_ffn_table(void) {
    size_t n = 0;
    for (const moe_ffn_kind *k; (k = moe_ffn_kind_at(n)); n++) {
        CHECK(k->name && k->create && strlen(k->name) < sizeof ((moe_config *)0)->ffn,
              "ffn kind %zu: no name or create, or a name longer than the config holds", n);
        CHECK(moe_ffn_kind_find(k->name) == k, "ffn '%s' not found by its name", k->name);
        CHECK(!(k->exportable && k->no_export), "ffn '%s' both exportable and refused", k->name);
        CHECK(!k->router_options || k->uses_router, "ffn '%s': router options without a router", k->name);
        CHECK(k->routed || (!k->uses_router && !k->expert_parallel), "dense ffn '%s' routes", k->name);
        moe_config c;
        small_config(&c, k->name, "topk");
        moe_err err;
        moe_ffn *f = NULL;
        CHECK(moe_config_finalize(&c, &err) == 0, "%s: %s", k->name, err.msg);
        CHECK(moe_ffn_create(&c, 0, &f, &err) == 0, "%s: %s", k->name, err.msg);
        if (f) CHECK(!strcmp(f->ops->kind, k->routed ? k->name : "dense"), "ffn '%s' made '%s'", k->name,
                     f->ops->kind);
        if (f) CHECK(!k->routed == !f->ops->routing, "ffn '%s': routing read-out %s", k->name,
                     f->ops->routing ? "present" : "absent");
        moe_ffn_destroy(f);
        c.top_k = 2;  /* k = 2 of E = 4; Lory computes one merged FFN: 1 of 4 */
        double share = moe_ffn_active_share(&c);
        CHECK(share == (k->merges_experts ? 0.25 : 0.5), "ffn '%s': active share %g", k->name, share);
        const moe_router_kind *rk = moe_ffn_router_kind(&c);
        CHECK(k->uses_router ? rk && !strcmp(rk->name, "topk") : rk == NULL, "ffn '%s': router kind %s",
              k->name, rk ? rk->name : "none");
    }
    CHECK(moe_ffn_kind_find("moe2") == NULL, "an unknown ffn kind found");
}

/* The names of the kinds, '|'-separated: ffn kinds if ffn, else routers. */
static void kind_names(char *out, size_t cap, int ffn) {
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; n < cap; i++) {
        const char *name = ffn ? (moe_ffn_kind_at(i) ? moe_ffn_kind_at(i)->name : NULL)
                               : (moe_router_kind_at(i) ? moe_router_kind_at(i)->name : NULL);
        if (!name) break;
        n += (size_t)snprintf(out + n, cap - n, "%s%s", i ? "|" : "", name);
    }
}

/* The config's "ffn" and "router" keys take the kinds' names, in table
 * order (the first the default), with the messages they always had
 * (docs/CONFIG.md, checked by tests/cli/test_cli.sh, lists them). */
static void test_config_names(void) {
    moe_config c;
    moe_config_defaults(&c);
    CHECK(!strcmp(c.ffn, moe_ffn_kind_at(0)->name) && !strcmp(c.router, moe_router_kind_at(0)->name),
          "defaults ffn '%s', router '%s'", c.ffn, c.router);
    const char *json[2] = {"{\"router\": \"relux\"}", "{\"ffn\": \"lory2\"}"};
    for (int ffn = 0; ffn < 2; ffn++) {
        char names[256], want[400];
        kind_names(names, sizeof names, ffn);
        snprintf(want, sizeof want, "c.json: key '%s': expected one of \"%s\"", ffn ? "ffn" : "router", names);
        moe_err err;
        moe_json_value *j = moe_json_parse(json[ffn], strlen(json[ffn]), "c.json", &err);
        CHECK(j && moe_config_apply_json(&c, j, "c.json", &err) == -1 && !strcmp(err.msg, want),
              "%s: %s", json[ffn], err.msg);
        moe_json_free(j);
        for (size_t i = 0; ffn ? moe_ffn_kind_at(i) != NULL : moe_router_kind_at(i) != NULL; i++) {
            char one[64];
            snprintf(one, sizeof one, "{\"%s\": \"%s\"}", ffn ? "ffn" : "router",
                     ffn ? moe_ffn_kind_at(i)->name : moe_router_kind_at(i)->name);
            j = moe_json_parse(one, strlen(one), "c.json", &err);
            CHECK(j && moe_config_apply_json(&c, j, "c.json", &err) == 0, "%s: %s", one, err.msg);
            moe_json_free(j);
        }
    }
    moe_buf doc = {0};
    CHECK(moe_config_doc(&doc) == 0 && doc.data && strstr(doc.data, "| `router` | string | \"topk\" | topk, relu,") &&
          strstr(doc.data, "| `ffn` | string | \"dense\" | dense, moe, cartesian, lory |"), "doc rows");
    free(doc.data);
}

/* What the kinds say about causality is what generation does. */
static void test_causal(void) {
    for (size_t i = 0; moe_router_kind_at(i); i++) {
        const moe_router_kind *k = moe_router_kind_at(i);
        moe_config c;
        small_config(&c, "moe", k->name);
        moe_err err;
        const char *why = NULL;
        CHECK(moe_config_causal(&c, &why) == !k->not_causal, "%s", k->name);
        int refused = moe_decode_check(&c, &err) != 0;
        CHECK(refused == !!k->not_causal && (!refused || (strstr(err.msg, k->name) && strstr(err.msg, why))),
              "%s: generation %s: %s", k->name, refused ? "refused" : "allowed", refused ? err.msg : "");
    }
    CHECK(moe_router_kind_find("expert_choice")->not_causal && moe_ffn_kind_find("lory")->not_causal,
          "expert choice and lory look ahead");
    moe_config c;
    moe_err err;
    small_config(&c, "lory", "topk");  /* lory is its own router: named by its kind */
    CHECK(moe_decode_check(&c, &err) != 0 && strstr(err.msg, "router 'lory' is not causal"), "%s", err.msg);
    small_config(&c, "dense", "expert_choice");  /* no layer routes */
    CHECK(moe_config_causal(&c, NULL) == 1, "a dense model is causal whatever its router key");
}

/* A router's own keys, set with another router or FFN kind, are refused
 * naming the key; with the router on the MoE layer they are accepted. */
static void test_own_keys(void) {
    static const double tries[] = {1, 2, 0.5};
    for (size_t i = 0; moe_router_kind_at(i); i++) {
        const moe_router_kind *owner = moe_router_kind_at(i);
        for (const char *const *key = owner->own_keys; key && *key; key++) {
            moe_config c;
            moe_err err;
            int refused = 0, numeric = 0;
            for (size_t t = 0; t < 3 && !refused; t++) {
                small_config(&c, "moe", owner == moe_router_kind_at(0) ? moe_router_kind_at(1)->name
                                                                      : moe_router_kind_at(0)->name);
                if (moe_config_set(&c, *key, tries[t], &err)) break;  /* not a numeric key */
                numeric = 1;
                refused = moe_config_finalize(&c, &err) != 0;
            }
            if (!numeric) continue;  /* scoring_func: test_routers.c sets it by name */
            CHECK(refused && strstr(err.msg, *key) && strstr(err.msg, owner->name), "%s with another router: %s",
                  *key, refused ? err.msg : "accepted");
            snprintf(c.router, sizeof c.router, "%s", owner->name);
            CHECK(moe_config_finalize(&c, &err) == 0, "%s with %s: %s", *key, owner->name, err.msg);
            snprintf(c.ffn, sizeof c.ffn, "cartesian");
            CHECK(moe_config_finalize(&c, &err) != 0, "%s accepted on cartesian", *key);
        }
    }
}

int main(void) {
    RUN(test_router_table);
    RUN(test_ffn_table);
    RUN(test_config_names);
    RUN(test_causal);
    RUN(test_own_keys);
    TEST_MAIN_END();
}
