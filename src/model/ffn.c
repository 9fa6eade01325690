/* ffn.c — the table of FFN kinds (the one place a new feed-forward kind is
 * registered) and the choice of each block's FFN from the config. */
#include "moe/model/ffn.h"

#include <string.h>

#include "moe/moe/router.h"

/* The FFN kinds, in the order the config's "ffn" key lists them (the first
 * is the default). X(NAME): its file defines moe_ffn_kind_NAME (dense in
 * src/model/ffn_dense.c, moe in src/moe/layer.c, the others in
 * src/moe/NAME.c). Adding a kind: its file, and one X(...) here. */
#define FFN_KINDS(X) X(dense) X(moe) X(cartesian) X(lory)

#define DECLARE(n) extern const moe_ffn_kind moe_ffn_kind_##n;
FFN_KINDS(DECLARE)
#undef DECLARE
#define ENTRY(n) &moe_ffn_kind_##n,
static const moe_ffn_kind *const KINDS[] = {FFN_KINDS(ENTRY)};
#undef ENTRY
#define N_KINDS (sizeof KINDS / sizeof KINDS[0])

const moe_ffn_kind *moe_ffn_kind_at(size_t i) {
    return i < N_KINDS ? KINDS[i] : NULL;
}

const moe_ffn_kind *moe_ffn_kind_find(const char *name) {
    for (size_t i = 0; i < N_KINDS; i++)
        if (!strcmp(name, KINDS[i]->name)) return KINDS[i];
    return NULL;
}

const moe_router_kind *moe_ffn_router_kind(const moe_config *cfg) {
    const moe_ffn_kind *kind = moe_ffn_kind_find(cfg->ffn);
    return kind && kind->uses_router ? moe_router_kind_find(cfg->router) : NULL;
}

double moe_ffn_active_share(const moe_config *cfg) {
    const moe_ffn_kind *kind = moe_ffn_kind_find(cfg->ffn);
    const moe_router_kind *router = moe_ffn_router_kind(cfg);
    if (kind && kind->active_share) return kind->active_share(cfg);
    if (router && router->active_share) return router->active_share(cfg);
    double share = (double)cfg->top_k / (double)cfg->n_experts;
    return share > 1.0 ? 1.0 : share;
}

int moe_ffn_create(const moe_config *cfg, int layer, moe_ffn **out, moe_err *err) {
    const moe_ffn_kind *kind = moe_ffn_kind_find(cfg->ffn);
    if (!kind) return moe_errf(err, "config: key 'ffn': unknown feed-forward kind '%s'", cfg->ffn);
    /* a routed kind replaces the FFN of layers (l+1) % moe_every == 0,
     * except the first dense_first_layers */
    int routed = kind->routed && layer >= cfg->dense_first_layers && (layer + 1) % cfg->moe_every == 0;
    return routed ? kind->create(cfg, layer, out, err) : moe_ffn_dense_create(cfg, layer, out, err);
}

void moe_ffn_destroy(moe_ffn *f) {
    if (f) f->ops->destroy(f);
}
