/* router.c — the table of routers: the one place a new router is registered. */
#include "moe/router.h"

#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    int (*create)(const moe_config *cfg, moe_router *r, moe_err *err);
} ROUTERS[] = {
    {"topk", moe_router_topk_create},
    {"relu", moe_router_relu_create},
};

int moe_router_create(const moe_config *cfg, moe_router **out, moe_err *err) {
    for (size_t i = 0; i < sizeof ROUTERS / sizeof ROUTERS[0]; i++) {
        if (strcmp(cfg->router, ROUTERS[i].name)) continue;
        moe_router *r = moe_calloc(1, sizeof *r, err);
        if (!r) return -1;
        r->cfg = cfg;
        r->E = (size_t)cfg->n_experts * (size_t)cfg->granularity;
        r->k = (size_t)cfg->top_k * (size_t)cfg->granularity;
        if (ROUTERS[i].create(cfg, r, err)) { free(r); return -1; }
        *out = r;
        return 0;
    }
    return moe_errf(err, "config: key 'router': unknown router '%s'", cfg->router);
}

void moe_router_destroy(moe_router *r) {
    if (!r) return;
    if (r->ops && r->ops->destroy) r->ops->destroy(r);
    free(r);
}
