/* upcycle.c — sparse upcycling (Komatsuzaki et al., 2023): an MoE model
 * starts from a trained dense one, every expert a copy of the layer's dense
 * FFN, the routers freshly initialised. With gates that sum to 1 (TopK with
 * norm_topk_prob) the upcycled model computes exactly what the dense one did. */
#include "moe/interop/interop.h"

#include <stdio.h>
#include <string.h>

int moe_upcycle(moe_model *dst, const moe_model *dense, moe_err *err) {
    const moe_config *a = &dense->cfg, *b = &dst->cfg;
    const moe_ffn_kind *ka = moe_ffn_kind_find(a->ffn), *kb = moe_ffn_kind_find(b->ffn);
    if (!ka || ka->routed)
        return moe_errf(err, "upcycle: the source model has ffn \"%s\"; it must be dense", a->ffn);
    if (!kb || !kb->upcycle_target)
        return moe_errf(err, "upcycle: the config's ffn is \"%s\"; upcycling makes an \"moe\" model", b->ffn);
    if (b->granularity != 1 || b->n_shared_experts != 0)
        return moe_errf(err, "upcycle: granularity %d, n_shared_experts %d: each expert is a whole copy of "
                        "the dense FFN (granularity 1, no shared experts)", b->granularity, b->n_shared_experts);
    if (a->vocab_size != b->vocab_size || a->hidden != b->hidden || a->n_layers != b->n_layers ||
        a->n_heads != b->n_heads || a->n_kv_heads != b->n_kv_heads || a->ffn_dim != b->ffn_dim)
        return moe_errf(err, "upcycle: the config's shape (vocab_size %d, hidden %d, n_layers %d, n_heads %d, "
                        "n_kv_heads %d, ffn_dim %d) differs from the dense model's (%d, %d, %d, %d, %d, %d)",
                        b->vocab_size, b->hidden, b->n_layers, b->n_heads, b->n_kv_heads, b->ffn_dim,
                        a->vocab_size, a->hidden, a->n_layers, a->n_heads, a->n_kv_heads, a->ffn_dim);
    for (size_t i = 0; i < dst->layout.count; i++) {
        const moe_tensor *t = &dst->layout.tensors[i];
        float *p = dst->params + t->offset;
        const moe_tensor *s = moe_layout_find(&dense->layout, t->name);
        if (s && s->size == t->size) {
            memcpy(p, dense->params + s->offset, t->size * sizeof(float));
            continue;
        }
        int layer;
        char w[16], tail[32];
        if (sscanf(t->name, "model.layers.%d.mlp.experts.%15[a-z]_proj.weig%31s", &layer, w, tail) == 3) {
            char name[MOE_NAME_MAX];
            snprintf(name, sizeof name, "model.layers.%d.mlp.%s_proj.weight", layer, w);
            s = moe_layout_find(&dense->layout, name);
            if (!s || t->size % s->size)
                return moe_errf(err, "upcycle: no dense tensor %s for %s", name, t->name);
            for (size_t e = 0; e < t->size / s->size; e++)
                memcpy(p + e * s->size, dense->params + s->offset, s->size * sizeof(float));
            continue;
        }
        if (strstr(t->name, ".router.")) continue;  /* fresh: keeps its init */
        return moe_errf(err, "upcycle: the dense model has no tensor for %s", t->name);
    }
    return 0;
}
