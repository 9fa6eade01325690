/* rng.h — the seeded random number generator (xoshiro256**, seeded through
 * splitmix64). Every random choice in moe goes through one of these, so the
 * same seed gives the same run. */
#ifndef MOE_RNG_H
#define MOE_RNG_H

#include <stdint.h>

typedef struct moe_rng { uint64_t s[4]; } moe_rng;

void moe_rng_seed(moe_rng *r, uint64_t seed);
uint64_t moe_rng_next(moe_rng *r);
/* uniform in [0, 1) with 53 random bits */
double moe_rng_uniform(moe_rng *r);
/* standard normal (Box-Muller, both values used in turn is NOT done: one draw
 * consumes two uniforms, which keeps the stream position simple) */
double moe_rng_normal(moe_rng *r);
/* uniform integer in [0, n) */
uint64_t moe_rng_below(moe_rng *r, uint64_t n);

#endif
