/* test_comm.c — the single-process side of training across processes: the
 * collectives' single-process group (what every run without mpirun uses),
 * the split of parameters into ZeRO-1 slices, the AdamW update of a slice
 * (bit-equal to the whole update, the exactness docs/DISTRIBUTED.md claims),
 * the config checks of expert_parallel, and a model divided among
 * expert-parallel parts (init, load, save), and the choice of which rank
 * holds which experts (placement.c). The MPI side is checked end to end by
 * tests/ref/test_mpi.py. */
#include <string.h>

#include "harness.h"
#include "moe/comm/comm.h"
#include "moe/util/fileio.h"
#include "moe/model/config.h"
#include "moe/util/json.h"
#include "moe/model/model.h"
#include "moe/util/rng.h"
#include "moe/train/train.h"

static int parse_cfg(const char *text, moe_config *c, moe_err *err) {
    moe_config_defaults(c);
    strcpy(c->precision, "fp32");  /* exact fp32 products, whatever "auto" picks on this CPU */
    moe_json_value *j = moe_json_parse(text, strlen(text), "cfg.json", err);
    if (!j) return -1;
    int rc = moe_config_apply_json(c, j, "cfg.json", err);
    moe_json_free(j);
    return rc ? rc : moe_config_finalize(c, err);
}

static void test_single_process_group(void) {
    moe_err err;
    moe_comm *c = NULL;
    CHECK(moe_comm_single(&c, &err) == 0 && c, "single group");
    if (!c) return;
    CHECK(c->rank == 0 && c->size == 1, "rank 0 of 1");
    float a[5] = {1, 2, 3, 4, 5}, b[5] = {0};
    CHECK(moe_comm_allreduce(c, a, 5, MOE_F32, &err) == 0 && a[4] == 5.0f, "all-reduce of one rank: unchanged");
    size_t counts[1] = {5};
    CHECK(moe_comm_reduce_scatter(c, a, b, counts, MOE_F32, &err) == 0 && memcmp(a, b, sizeof a) == 0,
          "reduce-scatter of one rank: a copy");
    memset(b, 0, sizeof b);
    CHECK(moe_comm_alltoallv(c, a, counts, b, counts, MOE_F32, &err) == 0 && memcmp(a, b, sizeof a) == 0,
          "all-to-all of one rank: a copy");
    CHECK(moe_comm_allgather(c, a, counts, MOE_F32, &err) == 0 && a[0] == 1.0f, "all-gather: unchanged");
    CHECK(c->bytes == 0 && c->seconds == 0, "one rank sends nothing");
    /* agreement of one rank: its own status and message, no rank prefix */
    moe_errf(&err, "cannot open x.tok");
    CHECK(moe_comm_agree(c, -1, &err) == -1 && !strcmp(err.msg, "cannot open x.tok"), "%s", err.msg);
    CHECK(moe_comm_agree(c, 0, &err) == 0, "success agreed");
    moe_comm *sub = NULL;
    CHECK(c->ops->split(c, 0, 0, &sub, &err) == 0 && sub && sub->size == 1, "split of one rank");
    moe_comm_free(sub);
    moe_comm_free(c);
}

static void test_blocks(void) {
    size_t ns[] = {0, 1, 15, 16, 17, 1000, 123457};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++)
        for (int P = 1; P <= 5; P++) {
            size_t counts[5], first[5], at = 0;
            moe_comm_blocks(ns[i], P, 16, counts, first);
            for (int r = 0; r < P; r++) {
                CHECK(first[r] == at, "n %zu P %d: block %d starts where the last ended", ns[i], P, r);
                CHECK(first[r] % 16 == 0 || first[r] == ns[i], "n %zu P %d: block %d aligned", ns[i], P, r);
                at += counts[r];
            }
            CHECK(at == ns[i], "n %zu P %d: blocks cover every element", ns[i], P);
        }
}

/* AdamW over P slices (each with its own moment arrays, as ZeRO-1 ranks hold
 * them) gives the bits of the update over the whole array. */
static void test_adamw_slices_equal_whole(void) {
    moe_config c;
    moe_err err;
    CHECK(parse_cfg("{\"vocab_size\": 40, \"hidden\": 16, \"n_layers\": 2, \"n_heads\": 2, "
                    "\"n_kv_heads\": 1, \"ffn\": \"moe\", \"n_experts\": 4, \"ffn_dim\": 24}", &c, &err) == 0,
          "%s", err.msg);
    moe_model *m;
    if (moe_model_create(&c, &m, &err)) { CHECK(0, "%s", err.msg); return; }
    moe_model_init(m, 3);
    size_t n = m->n_params;
    float *p0 = malloc(n * 4), *g0 = malloc(n * 4), *m0 = calloc(n, 4), *v0 = calloc(n, 4);
    float *p1 = malloc(n * 4), *g1 = malloc(n * 4), *m1 = calloc(n, 4), *v1 = calloc(n, 4);
    moe_rng rng;
    moe_rng_seed(&rng, 9);
    for (size_t i = 0; i < n; i++) g0[i] = (float)(0.01 * moe_rng_normal(&rng));
    memcpy(p0, m->params, n * 4);
    memcpy(p1, m->params, n * 4);
    for (int P = 1; P <= 3; P++) {
        size_t counts[3], first[3];
        moe_comm_blocks(n, P, 16, counts, first);
        memcpy(p0, m->params, n * 4); memcpy(p1, m->params, n * 4);
        memset(m0, 0, n * 4); memset(v0, 0, n * 4); memset(m1, 0, n * 4); memset(v1, 0, n * 4);
        for (long t = 1; t <= 3; t++) {
            memcpy(g1, g0, n * 4);
            moe_adamw_update(&m->layout, p1, g1, 0.7f, m1, v1, 1e-3, t, &c);
            for (int r = 0; r < P; r++) {  /* each slice with moments of its own */
                float *g = malloc(n * 4);
                memcpy(g, g0, n * 4);
                moe_adamw_update_range(&m->layout, p0, g, 0.7f, m0 + first[r], v0 + first[r], 1e-3, t, &c,
                                       first[r], first[r] + counts[r]);
                int zeroed = 1;
                for (size_t i = first[r]; i < first[r] + counts[r]; i++) zeroed &= g[i] == 0.0f;
                CHECK(zeroed, "P %d slice %d: its gradients are zeroed", P, r);
                free(g);
            }
        }
        CHECK(memcmp(p0, p1, n * 4) == 0 && memcmp(m0, m1, n * 4) == 0 && memcmp(v0, v1, n * 4) == 0,
              "P %d: slices give the whole update's bits", P);
    }
    free(p0); free(g0); free(m0); free(v0); free(p1); free(g1); free(m1); free(v1);
    moe_model_free(m);
}

static void test_expert_parallel_config(void) {
    moe_config c;
    moe_err err;
    CHECK(parse_cfg("{\"ffn\": \"moe\", \"n_experts\": 8, \"expert_parallel\": 4}", &c, &err) == 0, "%s", err.msg);
    CHECK(parse_cfg("{\"ffn\": \"moe\", \"n_experts\": 8, \"expert_parallel\": 3}", &c, &err) != 0 &&
          strstr(err.msg, "'expert_parallel': 3 does not divide n_experts 8"), "%s", err.msg);
    CHECK(parse_cfg("{\"ffn\": \"dense\", \"expert_parallel\": 2}", &c, &err) != 0 &&
          strstr(err.msg, "expert_parallel"), "%s", err.msg);
    CHECK(parse_cfg("{\"zero_stage\": 2}", &c, &err) != 0 && strstr(err.msg, "zero_stage"), "%s", err.msg);
}

/* A model holding part p of P of the routed experts (expert parallel):
 * init draws the values one process gives those rows, load reads them from
 * a whole checkpoint, and rank 0's divided save, fetching the other parts
 * (here from the other part models in memory, where a run fetches them
 * from their ranks), writes the whole model's file byte for byte. */
static moe_model *divided_part[4];
static int fetch_from_parts(void *arg, int array, const moe_tensor *t, int part, float *buf, moe_err *err) {
    (void)arg; (void)array; (void)err;
    const moe_model *o = divided_part[part];
    const moe_tensor *ot = moe_layout_find(&o->layout, t->name);
    memcpy(buf, o->params + ot->offset, ot->size * sizeof(float));
    return 0;
}

static void test_divided_model(void) {
    moe_config c;
    moe_err err;
    CHECK(parse_cfg("{\"vocab_size\": 40, \"hidden\": 16, \"n_layers\": 2, \"n_heads\": 2, "
                    "\"n_kv_heads\": 1, \"ffn\": \"cartesian\", \"n_experts\": 4, \"ffn_dim\": 24, "
                    "\"n_shared_experts\": 1}", &c, &err) == 0, "%s", err.msg);
    char dir[] = "/tmp/moe_test_partsXXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char whole_dir[64], part_dir[64];
    snprintf(whole_dir, sizeof whole_dir, "%s/whole", dir);
    snprintf(part_dir, sizeof part_dir, "%s/part", dir);
    moe_model *whole;
    if (moe_model_create(&c, &whole, &err)) { CHECK(0, "%s", err.msg); return; }
    moe_model_init(whole, 5);
    CHECK(moe_model_save(whole, whole_dir, &err) == 0, "%s", err.msg);
    const int P = 2;
    size_t split_tensors = 0;
    for (int p = 0; p < P; p++) {
        moe_model *a, *b;
        CHECK(moe_model_create_part(&c, p, P, &a, &err) == 0 && moe_model_create_part(&c, p, P, &b, &err) == 0,
              "%s", err.msg);
        moe_model_init(a, 5);
        CHECK(moe_model_load_weights(b, whole_dir, &err) == 0, "%s", err.msg);
        size_t held = 0;
        for (size_t i = 0; i < a->layout.count; i++) {
            const moe_tensor *t = &a->layout.tensors[i], *w = moe_layout_find(&whole->layout, t->name);
            size_t first = t->split ? (size_t)p * w->size / P : 0;  /* part p of the rows */
            held += t->size;
            split_tensors += t->split && p == 0;
            CHECK(t->size == (t->split ? w->size / P : w->size) && t->full == w->size, "%s: sizes", t->name);
            CHECK(memcmp(a->params + t->offset, whole->params + w->offset + first, t->size * 4) == 0,
                  "part %d: init of %s is the whole model's rows", p, t->name);
            CHECK(memcmp(b->params + t->offset, whole->params + w->offset + first, t->size * 4) == 0,
                  "part %d: load of %s reads the whole model's rows", p, t->name);
        }
        moe_param_count pc;
        CHECK(moe_model_count_params(&c, P, &pc, &err) == 0 && pc.held == held && held == a->n_params,
              "part %d holds %zu, counted %zu", p, held, pc.held);
        CHECK(pc.total == whole->n_params, "the whole count %zu, the whole model %zu", pc.total,
              whole->n_params);
        divided_part[p] = a;
        moe_model_free(b);
    }
    CHECK(split_tensors == 2 * 2 * 3, "every routed expert tensor is split (2 layers x 2 sub-layers x 3): %zu",
          split_tensors);
    CHECK(moe_model_save_divided(divided_part[0], part_dir, fetch_from_parts, NULL, &err) == 0, "%s", err.msg);
    char pa[128], pb[128];
    snprintf(pa, sizeof pa, "%s/model.safetensors", whole_dir);
    snprintf(pb, sizeof pb, "%s/model.safetensors", part_dir);
    size_t na = 0, nb = 0;
    char *fa = moe_read_file(pa, &na, &err), *fb = moe_read_file(pb, &nb, &err);
    CHECK(fa && fb && na == nb && memcmp(fa, fb, na) == 0, "the divided save is the whole model's file");
    free(fa);
    free(fb);
    CHECK(moe_model_save(divided_part[0], part_dir, &err) == -1 && strstr(err.msg, "divided among processes"),
          "a divided model saved without a fetch: %s", err.msg);
    CHECK(moe_model_create_part(&c, 0, 3, &divided_part[2], &err) == -1 &&
          strstr(err.msg, "4 experts cannot be divided among 3"), "%s", err.msg);
    for (int p = 0; p < P; p++) moe_model_free(divided_part[p]);
    moe_model_free(whole);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
}

/* Rows per rank of a placement (position -> expert) under load. */
static void rank_rows(size_t E, size_t P, const double *load, const int *at, double *rows) {
    for (size_t p = 0; p < P; p++) {
        rows[p] = 0.0;
        for (size_t s = 0; s < E / P; s++) rows[p] += load[at[p * (E / P) + s]];
    }
}

static void test_placement_choice(void) {
    /* the worst case of contiguous blocks: the heavy experts all on rank 0
     * (26 rows against 4); trading within columns evens it exactly */
    double heavy[8] = {8, 7, 6, 5, 1, 1, 1, 1}, rows[4];
    int ident[16], out[16];
    for (int e = 0; e < 16; e++) ident[e] = e;
    double most = moe_placement_choose(8, 2, heavy, ident, out);
    rank_rows(8, 2, heavy, out, rows);
    CHECK(most == 15.0 && rows[0] == 15.0 && rows[1] == 15.0, "even split: %g (%g / %g)", most, rows[0], rows[1]);
    /* random loads on 4 ranks: a permutation that keeps every column's
     * experts, the returned maximum is the placement's, and the ranks differ
     * by at most the widest column's spread (pairing the heaviest expert with
     * the lightest rank never widens the range beyond the larger of the two) */
    moe_rng rng;
    moe_rng_seed(&rng, 7);
    for (int trial = 0; trial < 200; trial++) {
        double load[16], spread = 0.0;
        for (int e = 0; e < 16; e++) load[e] = (double)(moe_rng_next(&rng) % 1000);
        int at[16], seen[16] = {0}, columns_kept = 1;
        memcpy(at, ident, sizeof at);
        for (int i = 15; i > 0; i--) {  /* start from a shuffled column-respecting placement */
            int j = (int)(moe_rng_next(&rng) % 4) * 4 + i % 4;
            int t = at[i]; at[i] = at[j]; at[j] = t;
        }
        most = moe_placement_choose(16, 4, load, at, out);
        for (int q = 0; q < 16; q++) {
            seen[out[q]]++;
            columns_kept &= out[q] % 4 == q % 4;
        }
        for (int c = 0; c < 4; c++) {
            double lo = 1e9, hi = -1.0;
            for (int q = 0; q < 4; q++) {
                lo = load[at[q * 4 + c]] < lo ? load[at[q * 4 + c]] : lo;
                hi = load[at[q * 4 + c]] > hi ? load[at[q * 4 + c]] : hi;
            }
            spread = hi - lo > spread ? hi - lo : spread;
        }
        double r[4], lo = 1e18, hi = 0.0;
        rank_rows(16, 4, load, out, r);
        for (int q = 0; q < 4; q++) { lo = r[q] < lo ? r[q] : lo; hi = r[q] > hi ? r[q] : hi; }
        int perm = 1;
        for (int e = 0; e < 16; e++) perm &= seen[e] == 1;
        CHECK(perm && columns_kept, "trial %d: a permutation within columns", trial);
        CHECK(most == hi && hi - lo <= spread, "trial %d: max %g (returned %g), range %g, spread %g", trial, hi,
              most, hi - lo, spread);
    }
    /* on two ranks at most half of the experts move (the ranks' names are
     * free: a placement and its mirror image balance alike) */
    for (int trial = 0; trial < 200; trial++) {
        double load[16];
        for (int e = 0; e < 16; e++) load[e] = (double)(moe_rng_next(&rng) % 1000);
        moe_placement_choose(16, 2, load, ident, out);
        int moved = 0;
        for (int q = 0; q < 16; q++) moved += out[q] != ident[q];
        CHECK(moved <= 8, "trial %d: %d of 16 experts moved", trial, moved);
    }
}

int main(void) {
    RUN(test_single_process_group);
    RUN(test_blocks);
    RUN(test_adamw_slices_equal_whole);
    RUN(test_expert_parallel_config);
    RUN(test_divided_model);
    RUN(test_placement_choice);
    TEST_MAIN_END();
}
