/* test_asserts.c — the assert()s on internal invariants fire where they are
 * compiled in: the sanitizer build (`make test`'s asan/ suite; the default
 * build has -DNDEBUG, so there this program skips). Each test breaks one
 * invariant in a child process, which must die of SIGABRT. */
#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "moe/kernels/kernels.h"
#include "moe/model/layout.h"

/* A sanitizer build that compiled the checks out would run the asan/ suite
 * with them silently off. */
#if defined(__SANITIZE_ADDRESS__) && defined(NDEBUG)
#error "the AddressSanitizer build keeps assert() on: build it without -DNDEBUG"
#endif

/* Runs fn in a child with stderr closed (assert's message is expected);
 * returns 1 when the child was killed by SIGABRT. */
static int aborts(void (*fn)(void)) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) return 0;
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stderr)) _exit(2);
        fn();
        _exit(0);  /* the invariant was not checked */
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) return 0;
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

/* op(A)[4,4] stored with rows of 2: lda < K */
static void sgemm_short_lda(void) {
    float A[16] = {0}, B[16] = {0}, C[16] = {0};
    moe_k_sgemm(0, 0, 4, 4, 4, 1.0f, A, 2, B, 4, 0.0f, C, 4);
}

/* rotate-half needs an even head size */
static void rope_odd_head(void) {
    float x[3] = {0}, c[1] = {1}, s[1] = {0};
    moe_k_rope(x, c, s, 1, 1, 1, 3, 0);
}

/* the assigning pass hands out more floats than the counting pass sized */
static void layout_overrun(void) {
    moe_layout L = {0};
    int64_t small[1] = {4}, big[1] = {8};
    moe_layout_add(&L, NULL, 0.02f, 1, small, "w");
    float params[8];
    moe_layout_rewind(&L, params, NULL);
    moe_layout_add(&L, NULL, 0.02f, 1, big, "w");
    moe_layout_free(&L);
}

static int compiled_in(void) {
#ifdef NDEBUG
    SKIP_TEST("assert() is compiled out of this build (-DNDEBUG); the sanitizer build (asan/) runs this");
    return 0;
#else
    return 1;
#endif
}

static void test_sgemm_leading_dimension(void) {
    if (!compiled_in()) return;
    CHECK(aborts(sgemm_short_lda), "moe_k_sgemm with lda < K did not abort");
}

static void test_rope_even_head(void) {
    if (!compiled_in()) return;
    CHECK(aborts(rope_odd_head), "moe_k_rope with an odd head size did not abort");
}

static void test_layout_range(void) {
    if (!compiled_in()) return;
    CHECK(aborts(layout_overrun), "a layout's second pass past the counted size did not abort");
}

int main(void) {
    RUN(test_sgemm_leading_dimension);
    RUN(test_rope_even_head);
    RUN(test_layout_range);
    TEST_MAIN_END();
}
