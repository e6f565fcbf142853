/* A minimal test harness: CHECK macros that report file:line and keep going, and a main that
 * runs the listed test functions and returns non-zero if any check failed. */
#ifndef KILN_TEST_H
#define KILN_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/core.h"

static int test_failures;

#define CHECK(cond)                                                                  \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);       \
      test_failures++;                                                               \
    }                                                                                \
  } while (0)

/* The status must be OK; a failure prints its message. */
#define CHECK_OK(expr)                                                                       \
  do {                                                                                       \
    kiln_status check_s_ = (expr);                                                           \
    if (check_s_) {                                                                          \
      fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #expr,                   \
              kiln_status_message(check_s_));                                                \
      kiln_status_free(check_s_);                                                            \
      test_failures++;                                                                       \
    }                                                                                        \
  } while (0)

/* The status must be an error with this code whose message contains `text`. */
#define CHECK_ERROR(expr, code, text)                                                        \
  do {                                                                                       \
    kiln_status check_s_ = (expr);                                                           \
    if (!check_s_) {                                                                         \
      fprintf(stderr, "%s:%d: %s succeeded, expected an error\n", __FILE__, __LINE__, #expr); \
      test_failures++;                                                                       \
    } else {                                                                                 \
      if (kiln_status_code(check_s_) != (code) || !strstr(kiln_status_message(check_s_), (text))) { \
        fprintf(stderr, "%s:%d: %s: got %s '%s', expected %s containing '%s'\n", __FILE__,    \
                __LINE__, #expr, kiln_code_name(kiln_status_code(check_s_)),                 \
                kiln_status_message(check_s_), kiln_code_name(code), (text));                \
        test_failures++;                                                                     \
      }                                                                                      \
      kiln_status_free(check_s_);                                                            \
    }                                                                                        \
  } while (0)

#define CHECK_NEAR(a, b, tol)                                                                \
  do {                                                                                       \
    double check_a_ = (a), check_b_ = (b);                                                   \
    if (!(fabs(check_a_ - check_b_) <= (tol))) {                                             \
      fprintf(stderr, "%s:%d: %s = %.9g, expected %.9g (tolerance %g)\n", __FILE__, __LINE__, \
              #a, check_a_, check_b_, (double)(tol));                                        \
      test_failures++;                                                                       \
    }                                                                                        \
  } while (0)

typedef struct test_case {
  const char *name;
  void (*fn)(void);
} test_case;

#define TEST_MAIN(...)                                                           \
  int main(void) {                                                               \
    static const test_case tests[] = {__VA_ARGS__};                              \
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {                \
      int before = test_failures;                                                \
      tests[i].fn();                                                             \
      fprintf(stderr, "%s %s\n", test_failures == before ? "ok  " : "FAIL", tests[i].name); \
    }                                                                            \
    return test_failures ? 1 : 0;                                                \
  }
#define TEST(fn) {#fn, fn}

#endif
