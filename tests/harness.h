/* harness.h — the tiny unit-test harness: each test file defines test
 * functions and a main() that runs them with RUN(); the program prints one
 * line per test and exits non-zero if any check failed. */
#ifndef MOE_TEST_HARNESS_H
#define MOE_TEST_HARNESS_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int h_failed_checks = 0, h_tests_passed = 0, h_tests_failed = 0;

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

#define RUN(fn) do { \
    int h_before = h_failed_checks; fn(); \
    if (h_failed_checks == h_before) { h_tests_passed++; printf("ok   %s\n", #fn); } \
    else { h_tests_failed++; printf("FAIL %s\n", #fn); } \
    fflush(stdout); } while (0)

#define TEST_MAIN_END() do { \
    printf("# %d passed, %d failed\n", h_tests_passed, h_tests_failed); \
    return h_tests_failed ? 1 : 0; } while (0)

#endif
