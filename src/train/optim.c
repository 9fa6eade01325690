/* optim.c — AdamW and the warm-up + cosine learning-rate schedule. */
#include <math.h>

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
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    return sqrt(s);
}

void moe_adamw_update(const moe_layout *L, float *params, const float *grads,
                      float *m, float *v, double lr, long t, const moe_config *cfg) {
    float b1 = (float)cfg->beta1, b2 = (float)cfg->beta2, eps = (float)cfg->adam_eps;
    double bc1 = 1.0 - pow(cfg->beta1, (double)t), bc2 = 1.0 - pow(cfg->beta2, (double)t);
    float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    for (size_t k = 0; k < L->count; k++) {
        const moe_tensor *tn = &L->tensors[k];
        float decay = tn->decay ? (float)(1.0 - lr * cfg->weight_decay) : 1.0f;
        #pragma omp parallel for schedule(static)
        for (size_t i = tn->offset; i < tn->offset + tn->size; i++) {
            float g = grads[i];
            params[i] *= decay;
            m[i] = b1 * m[i] + (1.0f - b1) * g;
            v[i] = b2 * v[i] + (1.0f - b2) * g * g;
            params[i] -= step_size * m[i] / (sqrtf(v[i]) / bc2_sqrt + eps);
        }
    }
}
