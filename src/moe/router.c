/* router.c — the table of router kinds (the one place a new router is
 * registered), router creation by kind, and the small helpers several
 * routers share: a row softmax in double and SparseMixer's counter-based
 * random numbers. */
#include "moe/moe/router.h"

#include <math.h>

#include "moe/comm/comm.h"
#include <stdlib.h>
#include <string.h>

/* The router kinds, in the order the config's "router" key lists them (the
 * first is the default). X(NAME): src/moe/NAME.c defines moe_router_kind_NAME.
 * Adding a router: its file, and one X(...) here. */
#define ROUTER_KINDS(X) \
    X(topk) X(relu) X(topp) X(hash) X(expert_choice) X(sparsemixer) X(learned_hash)

#define DECLARE(n) extern const moe_router_kind moe_router_kind_##n;
ROUTER_KINDS(DECLARE)
#undef DECLARE
#define ENTRY(n) &moe_router_kind_##n,
static const moe_router_kind *const KINDS[] = {ROUTER_KINDS(ENTRY)};
#undef ENTRY
#define N_KINDS (sizeof KINDS / sizeof KINDS[0])

const moe_router_kind *moe_router_kind_at(size_t i) {
    return i < N_KINDS ? KINDS[i] : NULL;
}

const moe_router_kind *moe_router_kind_find(const char *name) {
    for (size_t i = 0; i < N_KINDS; i++)
        if (!strcmp(name, KINDS[i]->name)) return KINDS[i];
    return NULL;
}

int moe_router_create(const moe_config *cfg, moe_router **out, moe_err *err) {
    const moe_router_kind *kind = moe_router_kind_find(cfg->router);
    if (!kind) return moe_errf(err, "config: key 'router': unknown router '%s'", cfg->router);
    moe_router *r = moe_calloc(1, sizeof *r, err);
    if (!r) return -1;
    r->cfg = cfg;
    r->E = (size_t)cfg->n_experts * (size_t)cfg->granularity +  /* MoE++'s zero-computation ones after */
           (size_t)(cfg->n_zero_experts + cfg->n_copy_experts + cfg->n_const_experts);
    r->k = (size_t)cfg->top_k * (size_t)cfg->granularity;
    r->has_weight = 1;
    if (kind->create(cfg, r, err)) { free(r); return -1; }
    *out = r;
    return 0;
}

int moe_router_global(const moe_ffn_ctx *ctx, double *v, size_t n, moe_err *err) {
    if (!ctx->training || !ctx->dp || ctx->dp->size == 1) return 0;
    return moe_comm_allreduce(ctx->dp, v, n, MOE_F64, err);
}

void moe_router_destroy(moe_router *r) {
    if (!r) return;
    if (r->ops && r->ops->destroy) r->ops->destroy(r);
    free(r);
}

double moe_router_softmax(float *p, const float *l, size_t E) {
    float mx = l[0];
    for (size_t e = 1; e < E; e++) mx = l[e] > mx ? l[e] : mx;
    double sum = 0.0;
    for (size_t e = 0; e < E; e++) sum += exp((double)(l[e] - mx));
    for (size_t e = 0; e < E; e++) p[e] = (float)(exp((double)(l[e] - mx)) / sum);
    return log(sum) + mx;
}

static uint64_t splitmix64(uint64_t x) {
    uint64_t z = x + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double moe_router_uniform(uint64_t seed, uint64_t layer, uint64_t step, uint64_t t,
                          uint64_t token, uint64_t stream) {
    uint64_t h = splitmix64(seed);
    h = splitmix64(h ^ layer);
    h = splitmix64(h ^ step);
    h = splitmix64(h ^ t);
    h = splitmix64(h ^ token);
    h = splitmix64(h ^ stream);
    return ((double)(h >> 11) + 0.5) * 0x1.0p-53;
}
