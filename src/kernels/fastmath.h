/* fastmath.h — a branch-free expf that compilers vectorise (Cephes
 * polynomial, about 1 ulp on the range used), for the softmax, SiLU and
 * cross-entropy loops. Private to the kernels and routers. */
#ifndef MOE_FASTMATH_H
#define MOE_FASTMATH_H

#include <math.h>
#include <stdint.h>

/* a ? b : c for a mask a of all ones or all zeros, on the bits: no branch,
 * so GCC if-converts the loops. With its default -ftrapping-math it will not
 * turn `x < -87 ? -87 : ...` followed by arithmetic into a blend (the
 * arithmetic could trap on one path only), and such loops stayed scalar. */
static inline float moe_selectf(uint32_t mask, float b, float c) {
    union { float f; uint32_t u; } x = {b}, y = {c}, r;
    r.u = (x.u & mask) | (y.u & ~mask);
    return r.f;
}

static inline float moe_expf(float x) {
    /* clamp to [-87, 88]; NaN stays NaN (both compares false) */
    float xc = moe_selectf(-(uint32_t)(x < -87.0f), -87.0f,
                           moe_selectf(-(uint32_t)(x > 88.0f), 88.0f, x));
    /* the integer path must never see a NaN */
    float v = moe_selectf(-(uint32_t)(xc == xc), xc, 0.0f);
    /* n = round(v / ln 2): adding and removing 1.5 * 2^23 rounds to an integer
     * without floorf, which compilers will not vectorise */
    float n = (v * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = v - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * r * r + r + 1.0f;
    union { uint32_t i; float f; } scale = {(uint32_t)((int32_t)n + 127) << 23};  /* 2^n, n >= -126 */
    return y * scale.f + (xc - xc);  /* + NaN when x is NaN, + 0 otherwise */
}

static inline float moe_sigmoidf(float z) { return 1.0f / (1.0f + moe_expf(-z)); }
/* SwiGLU's element: silu(h1) * h3 (one definition, so that every path
 * that stores it, in fp32 or bf16, computes the same bits). */
static inline float moe_swiglu(float h1, float h3) { return h1 * moe_sigmoidf(h1) * h3; }

#endif
