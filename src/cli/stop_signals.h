/* stop_signals.h — SIGINT, SIGTERM and SIGHUP for a command that stops
 * cleanly (train): taken by a thread of their own, so that no signal frame
 * is ever written on a thread that computes (stop_signals.c says why). */
#ifndef MOE_CLI_STOP_SIGNALS_H
#define MOE_CLI_STOP_SIGNALS_H

#include <signal.h>

#include "moe/common.h"

/* Blocks the three signals in this thread, and so in every thread made
 * after it (OpenMP's team, MPI's), and starts the one thread that takes
 * them. Until cli_stop_signals_arm, a signal ends the process as it would
 * have without any of this (its default action). Call it first, before
 * anything starts a thread. */
int cli_stop_signals_block(moe_err *err);

/* From now on a signal sets *flag to its number (and nothing else). */
void cli_stop_signals_arm(volatile sig_atomic_t *flag);

#endif
