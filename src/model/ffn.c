/* ffn.c — picks the feed-forward implementation of each block from the config. */
#include "moe/ffn.h"

#include <string.h>

int moe_ffn_create(const moe_config *cfg, int layer, moe_ffn **out, moe_err *err) {
    if (!strcmp(cfg->ffn, "dense")) return moe_ffn_dense_create(cfg, layer, out, err);
    if (!strcmp(cfg->ffn, "moe"))
        return (layer + 1) % cfg->moe_every == 0 ? moe_ffn_moe_create(cfg, layer, out, err)
                                                 : moe_ffn_dense_create(cfg, layer, out, err);
    return moe_errf(err, "config: key 'ffn': unknown feed-forward kind '%s'", cfg->ffn);
}

void moe_ffn_destroy(moe_ffn *f) {
    if (f) f->ops->destroy(f);
}
