/* profile.h — where a training step's time goes (`moe train --profile`).
 * Each mark charges the time since the previous mark to one part; with the
 * profile off (NULL or on == 0) a mark does nothing. */
#ifndef MOE_PROFILE_H
#define MOE_PROFILE_H

#include "moe/util/common.h"

typedef enum {
    PROF_EMBED, PROF_ATTENTION, PROF_NORMS, PROF_ROUTER, PROF_EXPERTS, PROF_FFN,
    PROF_HEAD, PROF_OPTIMIZER, PROF_DATA, PROF_COMM, PROF_OTHER, PROF_PARTS
} moe_prof_part;

static const char *const MOE_PROF_NAMES[PROF_PARTS] = {
    "embedding", "attention", "norms", "router", "experts", "dense ffn",
    "lm head + loss", "optimizer", "data", "communication", "other"};

typedef struct moe_profile {
    int on;
    double seconds[PROF_PARTS];  /* accumulated */
    double last;                 /* time of the previous mark */
} moe_profile;

static inline void moe_prof_mark(moe_profile *p, moe_prof_part part) {
    if (!p || !p->on) return;
    double t = moe_now_seconds();
    p->seconds[part] += t - p->last;
    p->last = t;
}

#endif
