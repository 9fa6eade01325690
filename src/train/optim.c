/* optim.c — AdamW and the warm-up + cosine learning-rate schedule. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "moe/train/train.h"

double moe_lr_at(const moe_config *cfg, long step) {
    double peak = cfg->lr, floor_lr = cfg->lr * cfg->min_lr_ratio;
    if (step < cfg->warmup) return peak * (double)(step + 1) / (double)cfg->warmup;
    long span = cfg->steps - cfg->warmup;
    double progress = span > 0 ? (double)(step - cfg->warmup) / (double)span : 1.0;
    if (progress > 1.0) progress = 1.0;
    return floor_lr + (peak - floor_lr) * 0.5 * (1.0 + cos(M_PI * progress));
}

enum { NORM_CHUNK = 1 << 16 };  /* floats per partial sum */

size_t moe_grad_norm_parts(size_t n) {
    return n ? (n + NORM_CHUNK - 1) / NORM_CHUNK : 1;
}

double moe_grad_norm(const float *g, size_t n, double *part) {
    /* fixed chunks summed in parallel, then added in chunk order: the same
     * bits whatever the thread count */
    size_t chunks = n ? moe_grad_norm_parts(n) : 0;
    #pragma omp parallel for schedule(static)
    for (size_t c = 0; c < chunks; c++) {
        size_t end = (c + 1) * NORM_CHUNK < n ? (c + 1) * NORM_CHUNK : n;
        double acc = 0.0;
        #pragma omp simd reduction(+:acc)
        for (size_t i = c * NORM_CHUNK; i < end; i++) acc += (double)g[i] * g[i];
        part[c] = acc;
    }
    double s = 0.0;
    for (size_t c = 0; c < chunks; c++) s += part[c];
    return sqrt(s);
}

/* The AdamW constants of one step. */
typedef struct adamw_step {
    float b1, b2, eps, step_size, bc2_sqrt, grad_scale;
    float c1, c2;  /* 1 - beta1, 1 - beta2, rounded from double: 1.0f - 0.999f
                    * would be 0.00100005, 5e-5 off (PyTorch rounds as here) */
} adamw_step;

/* The update runs as one parallel loop over the whole flat range, in
 * tasks of ADAMW_CHUNK floats (a multiple of 16 from lo, so that the
 * 16-float groups below are those of the whole array); a task walks the
 * tensors it overlaps, each a span of one weight-decay factor. Every
 * element gets the same arithmetic wherever the task boundaries fall. */
enum { ADAMW_CHUNK = 1 << 14 };

#if defined(__AVX512F__)
/* AdamW on one 16-float group [base, base + 16) restricted to the lanes in
 * `lanes`. A full group of 64-byte aligned buffers (moe_floats_alloc; base is
 * a multiple of 16) leaves by streaming stores, which do not read the old
 * cache lines first: the optimizer touches every parameter once per step,
 * far more than the caches hold, and those reads were a third of its memory
 * traffic. A partial group (a tensor's edge) uses masked ordinary stores.
 * Both do the same arithmetic, so an element's bits do not depend on which
 * kind of group it fell in. */
static inline __mmask16 adamw_group(float *p, float *g, float *m, float *v, size_t base,
                                    __mmask16 lanes, int aligned, float decay, const adamw_step *s) {
    const __m512 gs = _mm512_set1_ps(s->grad_scale), zero = _mm512_setzero_ps();
    __m512 gi = _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes, g + base), gs);
    __m512 mi = _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(s->b1), _mm512_maskz_loadu_ps(lanes, m + base)),
                              _mm512_mul_ps(_mm512_set1_ps(s->c1), gi));
    __m512 vi = _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(s->b2), _mm512_maskz_loadu_ps(lanes, v + base)),
                              _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(s->c2), gi), gi));
    __m512 den = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), _mm512_set1_ps(s->bc2_sqrt)),
                               _mm512_set1_ps(s->eps));
    __m512 pi = _mm512_sub_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(lanes, p + base), _mm512_set1_ps(decay)),
                              _mm512_div_ps(_mm512_mul_ps(_mm512_set1_ps(s->step_size), mi), den));
    if (aligned && lanes == 0xFFFF) {
        _mm512_stream_ps(g + base, zero);
        _mm512_stream_ps(m + base, mi);
        _mm512_stream_ps(v + base, vi);
        _mm512_stream_ps(p + base, pi);
    } else {
        _mm512_mask_storeu_ps(g + base, lanes, zero);
        _mm512_mask_storeu_ps(m + base, lanes, mi);
        _mm512_mask_storeu_ps(v + base, lanes, vi);
        _mm512_mask_storeu_ps(p + base, lanes, pi);
    }
    /* x - x is NaN exactly when x is NaN or infinite: the lanes this update
     * left non-finite (in the parameter or either moment) */
    __m512 poison = _mm512_add_ps(_mm512_sub_ps(pi, pi), _mm512_add_ps(_mm512_sub_ps(mi, mi),
                                                                       _mm512_sub_ps(vi, vi)));
    return _mm512_mask_cmp_ps_mask(lanes, poison, poison, _CMP_UNORD_Q);
}

/* Elements [lo, hi) of one span, in 16-float groups aligned to absolute
 * index multiples of 16. Returns how many the update left non-finite. */
static size_t adamw_span(float *p, float *g, float *m, float *v, size_t lo, size_t hi,
                         float decay, const adamw_step *s) {
    size_t first = lo / 16, end = (hi + 15) / 16, bad = 0;
    int aligned = (((uintptr_t)p | (uintptr_t)g | (uintptr_t)m | (uintptr_t)v) & 63) == 0;
    for (size_t k = first; k < end; k++) {
        size_t base = k * 16, a = base < lo ? lo - base : 0, b = base + 16 > hi ? hi - base : 16;
        __mmask16 lanes = (__mmask16)(((1u << b) - 1u) & ~((1u << a) - 1u));
        bad += (size_t)__builtin_popcount(adamw_group(p, g, m, v, base, lanes, aligned, decay, s));
    }
    return bad;
}
#define ADAMW_FENCE() _mm_sfence()  /* streaming stores are visible before the team's barrier */
#else
/* Elements [lo, hi) of one span; the compiler vectorises the loop (no call
 * per element: sqrtf is an instruction, the Makefile builds this file with
 * -fno-math-errno; `make` prints nothing from -fopt-info-vec-missed for it).
 * Returns how many the update left non-finite. */
static size_t adamw_span(float *restrict p, float *restrict g, float *restrict m, float *restrict v,
                         size_t lo, size_t hi, float decay, const adamw_step *s) {
    const float b1 = s->b1, b2 = s->b2, c1 = s->c1, c2 = s->c2, eps = s->eps;
    const float gs = s->grad_scale, step = s->step_size, bc2 = s->bc2_sqrt;
    size_t bad = 0;
    #pragma omp simd reduction(+:bad)
    for (size_t i = lo; i < hi; i++) {
        float gi = g[i] * gs;
        float mi = b1 * m[i] + c1 * gi;
        float vi = b2 * v[i] + c2 * gi * gi;
        float pi = p[i] * decay - step * mi / (sqrtf(vi) / bc2 + eps);
        g[i] = 0.0f;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi;
        /* x - x is NaN exactly when x is NaN or infinite */
        float poison = (pi - pi) + (mi - mi) + (vi - vi);
        bad += poison != poison;
    }
    return bad;
}
#define ADAMW_FENCE() ((void)0)
#endif

/* The tensor of L holding element i (tensors lie in offset order, end to
 * end; of tensors starting at i, the last: an empty one holds nothing). */
static size_t tensor_at(const moe_layout *L, size_t i) {
    size_t a = 0, b = L->count;
    while (b - a > 1) {
        size_t mid = a + (b - a) / 2;
        if (L->tensors[mid].offset <= i) a = mid;
        else b = mid;
    }
    return a;
}

size_t moe_adamw_update(const moe_layout *L, float *params, float *grads, float grad_scale,
                        float *m, float *v, double lr, long t, const moe_config *cfg) {
    return moe_adamw_update_range(L, params, grads, grad_scale, m, v, lr, t, cfg, 0, L->total);
}

size_t moe_adamw_update_range(const moe_layout *L, float *params, float *grads, float grad_scale,
                              float *m, float *v, double lr, long t, const moe_config *cfg,
                              size_t lo, size_t hi) {
    double bc1 = 1.0 - pow(cfg->beta1, (double)t), bc2 = 1.0 - pow(cfg->beta2, (double)t);
    adamw_step s = {.b1 = (float)cfg->beta1, .b2 = (float)cfg->beta2, .eps = (float)cfg->adam_eps,
                    .step_size = (float)(lr / bc1), .bc2_sqrt = (float)sqrt(bc2),
                    .grad_scale = grad_scale, .c1 = (float)(1.0 - cfg->beta1),
                    .c2 = (float)(1.0 - cfg->beta2)};
    /* one parallel loop over [lo, hi): p, g, m, v read once, the gradient
     * left zeroed, the non-finite results counted on the way. Indices are
     * relative to lo (a multiple of 16, so the 16-float groups and the
     * alignment are those of the whole array) */
    float *p = params + lo, *g = grads + lo;
    float decayed = (float)(1.0 - lr * cfg->weight_decay);
    size_t n = hi > lo ? hi - lo : 0, tasks = (n + ADAMW_CHUNK - 1) / ADAMW_CHUNK, bad = 0;
    #pragma omp parallel for schedule(static) reduction(+:bad)
    for (size_t c = 0; c < tasks; c++) {
        size_t c0 = lo + c * ADAMW_CHUNK, c1 = c0 + ADAMW_CHUNK < hi ? c0 + ADAMW_CHUNK : hi;
        for (size_t k = tensor_at(L, c0); k < L->count && L->tensors[k].offset < c1; k++) {
            const moe_tensor *tn = &L->tensors[k];
            size_t a, b;
            if (!moe_span_clip(tn->offset, tn->size, c0, c1, &a, &b)) continue;
            bad += adamw_span(p, g, m, v, a - lo, b - lo, tn->decay ? decayed : 1.0f, &s);
        }
        ADAMW_FENCE();
    }
    return bad;
}
