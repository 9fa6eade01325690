/* harness.h — the tiny unit-test harness: each test file defines test
 * functions and a main() that runs them with RUN(); the program prints one
 * line per test and exits 1 if any check failed, else 77 (the runner's SKIP,
 * tests/run.sh) if a test called SKIP_TEST because something it needs is
 * missing, else 0. */
#ifndef MOE_TEST_HARNESS_H
#define MOE_TEST_HARNESS_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int h_failed_checks = 0, h_tests_passed = 0, h_tests_failed = 0, h_tests_skipped = 0;
static int h_skip_now = 0;
static char h_skip_why[256];

#define CHECK(cond, ...) do { \
    if (!(cond)) { \
        fprintf(stderr, "  %s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
        fprintf(stderr, __VA_ARGS__); fprintf(stderr, "\n"); \
        h_failed_checks++; \
    } } while (0)

#define CHECK_CLOSE(a, b, rtol, atol) do { \
    double h_a = (a), h_b = (b); \
    CHECK(fabs(h_a - h_b) <= (atol) + (rtol) * fabs(h_b), \
          "%s = %.10g, %s = %.10g", #a, h_a, #b, h_b); } while (0)

/* Inside a test: it cannot run because something it needs is missing (say
 * what, and how to get it); the caller returns right after. */
#define SKIP_TEST(...) do { \
    h_skip_now = 1; snprintf(h_skip_why, sizeof h_skip_why, __VA_ARGS__); } while (0)

#define RUN(fn) do { \
    int h_before = h_failed_checks; h_skip_now = 0; fn(); \
    if (h_failed_checks != h_before) { h_tests_failed++; printf("FAIL %s\n", #fn); } \
    else if (h_skip_now) { h_tests_skipped++; printf("SKIP %s (%s)\n", #fn, h_skip_why); } \
    else { h_tests_passed++; printf("ok   %s\n", #fn); } \
    fflush(stdout); } while (0)

/* The last line names the (last) skipped test: the runner shows it as why. */
#define TEST_MAIN_END() do { \
    printf("# %d passed, %d failed, %d skipped\n", h_tests_passed, h_tests_failed, h_tests_skipped); \
    if (!h_tests_failed && h_tests_skipped) printf("skipped: %s\n", h_skip_why); \
    return h_tests_failed ? 1 : h_tests_skipped ? 77 : 0; } while (0)

#endif
