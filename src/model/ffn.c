/* ffn.c — picks the feed-forward implementation of each block from the config. */
#include "moe/ffn.h"

#include <string.h>

#include "moe/router.h"

int moe_ffn_create(const moe_config *cfg, int layer, moe_ffn **out, moe_err *err) {
    static const struct {
        const char *kind;
        int (*create)(const moe_config *cfg, int layer, moe_ffn **out, moe_err *err);
    } KINDS[] = {
        {"moe", moe_ffn_moe_create},
        {"cartesian", moe_ffn_cartesian_create},
        {"lory", moe_ffn_lory_create},
    };
    if (!strcmp(cfg->ffn, "dense")) return moe_ffn_dense_create(cfg, layer, out, err);
    /* every other kind replaces the FFN of layers (l+1) % moe_every == 0,
     * except the first dense_first_layers */
    int routed = layer >= cfg->dense_first_layers && (layer + 1) % cfg->moe_every == 0;
    for (size_t i = 0; i < sizeof KINDS / sizeof KINDS[0]; i++)
        if (!strcmp(cfg->ffn, KINDS[i].kind))
            return routed ? KINDS[i].create(cfg, layer, out, err) : moe_ffn_dense_create(cfg, layer, out, err);
    return moe_errf(err, "config: key 'ffn': unknown feed-forward kind '%s'", cfg->ffn);
}

void moe_ffn_destroy(moe_ffn *f) {
    if (f) f->ops->destroy(f);
}
