/* stop_signals.h — SIGINT, SIGTERM and SIGHUP for a command that stops
 * cleanly (train: taken by a thread of their own; generate --interactive:
 * SIGINT held while it computes), so that no signal frame is ever written
 * on a thread that computes (stop_signals.c says why). */
#ifndef MOE_CLI_STOP_SIGNALS_H
#define MOE_CLI_STOP_SIGNALS_H

#include <signal.h>

#include "moe/util/common.h"

/* Blocks the three signals in this thread, and so in every thread made
 * after it (OpenMP's team, MPI's), and starts the one thread that takes
 * them. Until cli_stop_signals_arm, a signal ends the process as it would
 * have without any of this (its default action). Call it first, before
 * anything starts a thread. */
int cli_stop_signals_block(moe_err *err);

/* From now on a signal sets *flag to its number (and nothing else). */
void cli_stop_signals_arm(volatile sig_atomic_t *flag);

/* For a command that takes SIGINT itself at quiet moments (generate
 * --interactive: Ctrl-C at its prompt ends a read, a handler's job):
 * cli_sigint_hold(1) blocks SIGINT in this thread, and so in every thread
 * made after it; cli_sigint_hold(0) lets it through again while nothing
 * computes (a pending one is dropped first: it belonged to the work just
 * done). In between, cli_sigint_take() says whether one came (and takes it). */
void cli_sigint_hold(int hold);
int cli_sigint_take(void);

#endif
