/* optim.c — AdamW and the warm-up + cosine learning-rate schedule. */
#include <math.h>
#include <stdlib.h>

#include "moe/train.h"

double moe_lr_at(const moe_config *cfg, long step) {
    double peak = cfg->lr, floor_lr = cfg->lr * cfg->min_lr_ratio;
    if (step < cfg->warmup) return peak * (double)(step + 1) / (double)cfg->warmup;
    long span = cfg->steps - cfg->warmup;
    double progress = span > 0 ? (double)(step - cfg->warmup) / (double)span : 1.0;
    if (progress > 1.0) progress = 1.0;
    return floor_lr + (peak - floor_lr) * 0.5 * (1.0 + cos(M_PI * progress));
}

double moe_grad_norm(const float *g, size_t n) {
    /* fixed chunks summed in parallel, then added in chunk order: the same
     * bits whatever the thread count */
    enum { CHUNK = 1 << 16 };
    size_t chunks = (n + CHUNK - 1) / CHUNK;
    double *part = malloc((chunks ? chunks : 1) * sizeof(double));
    double s = 0.0;
    if (!part) {  /* no memory for the partial sums: one pass, same order */
        for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
        return sqrt(s);
    }
    #pragma omp parallel for schedule(static)
    for (size_t c = 0; c < chunks; c++) {
        size_t end = (c + 1) * CHUNK < n ? (c + 1) * CHUNK : n;
        double acc = 0.0;
        #pragma omp simd reduction(+:acc)
        for (size_t i = c * CHUNK; i < end; i++) acc += (double)g[i] * g[i];
        part[c] = acc;
    }
    for (size_t c = 0; c < chunks; c++) s += part[c];
    free(part);
    return sqrt(s);
}

void moe_adamw_update(const moe_layout *L, float *params, float *grads, float grad_scale,
                      float *m, float *v, double lr, long t, const moe_config *cfg) {
    float b1 = (float)cfg->beta1, b2 = (float)cfg->beta2, eps = (float)cfg->adam_eps;
    double bc1 = 1.0 - pow(cfg->beta1, (double)t), bc2 = 1.0 - pow(cfg->beta2, (double)t);
    float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    /* one pass over all tensors: each thread takes a fixed slice of every
     * tensor, reads p, g, m, v once and leaves the gradient zeroed */
    #pragma omp parallel
    for (size_t k = 0; k < L->count; k++) {
        const moe_tensor *tn = &L->tensors[k];
        float decay = tn->decay ? (float)(1.0 - lr * cfg->weight_decay) : 1.0f;
        #pragma omp for schedule(static) nowait
        for (size_t i = tn->offset; i < tn->offset + tn->size; i++) {
            float g = grads[i] * grad_scale;
            grads[i] = 0.0f;
            float mi = b1 * m[i] + (1.0f - b1) * g;
            float vi = b2 * v[i] + (1.0f - b2) * g * g;
            m[i] = mi;
            v[i] = vi;
            params[i] = params[i] * decay - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
        }
    }
}
