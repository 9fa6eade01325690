/* train_dist.h — `moe train` across ranks (src/cli/train_dist.c). */
#ifndef MOE_CLI_TRAIN_DIST_H
#define MOE_CLI_TRAIN_DIST_H

#include "moe/comm.h"
#include "moe/config.h"
#include "moe/train.h"

/* Every rank's config (after the command-line overrides) and token count
 * must be rank 0's; a rank that differs names the first differing line.
 * Collective. */
int train_check_same_setup(moe_comm *world, const moe_config *cfg, size_t data_tokens, moe_err *err);
/* After training: rank 0 prints each rank's share of time in collectives,
 * bytes sent per step and peak memory (bench/scaling reads this line).
 * comm0: [seconds, bytes] of the collectives when the loop began. Collective. */
int train_print_ranks(moe_comm *world, const moe_trainer *tr, const double comm0[2], double seconds,
                      long steps, moe_err *err);

#endif
