/* stop_signals.c — SIGINT, SIGTERM and SIGHUP taken by a thread of their
 * own, or SIGINT held while a command computes (stop_signals.h): never
 * taken by a thread that computes.
 *
 * Why (issue 26.4: "free(): invalid pointer" or "corrupted size vs.
 * prev_size", exit 134, now and then after Ctrl-C). A handler runs on the
 * stack of whichever thread the kernel picks, and the kernel writes the
 * signal frame (about 3 KB with the AVX-512 registers) just below that
 * thread's stack pointer. oneDNN 2.6's AVX-512 no-copy sgemm
 * (jit_avx512_common_gemm_f32, which dnnl_sgemm picks for nearly every
 * product of the models here: min(M, N) below about 1000) moves the stack
 * pointer into a malloc'ed workspace while it runs whenever K > 84
 * (`mov rsp, ARG_WS`: its stack area holds only 84 of K). A signal taken
 * there writes its frame over the heap memory before that workspace:
 * malloc's chunk headers and a neighbour's data. The next free() of a
 * damaged chunk aborts: in dnnl_sgemm's own free of the workspace, at
 * exit in a hash table's destructor, anywhere. The AVX2 kernels of a
 * CPU without AVX-512 do this far more rarely (only for K > 252, and with
 * smaller frames), which is why a Zen 3 never showed it.
 *
 * So the three signals are blocked before any other thread exists (every
 * thread made later, OpenMP's and MPI's, inherits the mask) and one thread
 * waits for them with sigwait: no signal frame is ever pushed on a
 * computing thread. Until the command arms them, a signal ends the process
 * by its default action, as it would without this. */
#include "cli/stop_signals.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

static _Atomic(volatile sig_atomic_t *) stop_flag;  /* NULL: not armed */

static void stop_set(sigset_t *set) {
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGHUP);   /* a closed terminal or a dropped ssh session */
}

static void *take_signals(void *arg) {
    (void)arg;
    sigset_t set;
    stop_set(&set);
    for (;;) {
        int sig;
        if (sigwait(&set, &sig)) continue;
        volatile sig_atomic_t *flag = atomic_load(&stop_flag);
        if (flag) {
            *flag = sig;
            continue;
        }
        /* not armed: the default action (the process ends by this signal) */
        sigset_t one;
        sigemptyset(&one);
        sigaddset(&one, sig);
        signal(sig, SIG_DFL);
        pthread_sigmask(SIG_UNBLOCK, &one, NULL);
        raise(sig);
    }
    return NULL;
}

int cli_stop_signals_block(moe_err *err) {
    sigset_t set;
    stop_set(&set);
    int rc = pthread_sigmask(SIG_BLOCK, &set, NULL);
    pthread_t t;
    if (!rc) rc = pthread_create(&t, NULL, take_signals, NULL);
    if (!rc) rc = pthread_detach(t);
    if (rc) {
        pthread_sigmask(SIG_UNBLOCK, &set, NULL);
        return moe_errf(err, "cannot start the thread that takes Ctrl-C: %s", strerror(rc));
    }
    return 0;
}

void cli_stop_signals_arm(volatile sig_atomic_t *flag) { atomic_store(&stop_flag, flag); }

static void sigint_set(sigset_t *set) {
    sigemptyset(set);
    sigaddset(set, SIGINT);
}

int cli_sigint_take(void) {
    sigset_t set;
    sigint_set(&set);
    struct timespec now = {0, 0};
    return sigtimedwait(&set, NULL, &now) == SIGINT;
}

void cli_sigint_hold(int hold) {
    sigset_t set;
    sigint_set(&set);
    if (!hold) cli_sigint_take();
    pthread_sigmask(hold ? SIG_BLOCK : SIG_UNBLOCK, &set, NULL);
}
