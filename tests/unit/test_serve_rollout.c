/* The canary's judgement (serve/rollout.c): the minimum sample count, each threshold (failure rate,
 * NaN/Inf rate, p99 and median latency against stable's, with its floor), NaN/Inf detection in every
 * floating-point dtype, and the traffic split's share and stickiness. */
#include <math.h>

#include "serve/serve.h"
#include "test.h"

/* n requests of `ms` milliseconds each, `failed` and `nonfinite` of them bad. */
static void feed(kx_health *h, int n, double ms, int failed, int nonfinite) {
  for (int i = 0; i < n; i++) kx_health_record(h, i < failed, i < nonfinite, ms * 1e-3);
}

static int judge(const kiln_canary_options *o, kx_health *canary, kx_health *stable, const char **kind) {
  char reason[200];
  *kind = "";
  return kx_canary_breach(o, canary, stable, kind, reason, sizeof reason);
}

static void test_min_requests(void) {
  kiln_canary_options o = {.min_requests = 50};
  kx_health c, s;
  kx_health_init(&c);
  kx_health_init(&s);
  feed(&s, 100, 1, 0, 0);
  feed(&c, 49, 1, 49, 0); /* every request failed, but too few to judge */
  const char *kind;
  CHECK(judge(&o, &c, &s, &kind) == 0);
  feed(&c, 1, 1, 1, 0);
  CHECK(judge(&o, &c, &s, &kind) == 1);
  CHECK(strcmp(kind, "error_rate") == 0);
  kx_health_destroy(&c);
  kx_health_destroy(&s);
}

static void test_error_rate_relative_to_stable(void) {
  kiln_canary_options o = {.min_requests = 100, .max_error_rate = 0.05};
  kx_health c, s;
  kx_health_init(&c);
  kx_health_init(&s);
  feed(&s, 100, 1, 10, 0); /* stable fails 10% */
  feed(&c, 100, 1, 14, 0); /* 14% <= 10% + 5% */
  const char *kind;
  char reason[200];
  CHECK(kx_canary_breach(&o, &c, &s, &kind, reason, sizeof reason) == 0);
  feed(&c, 100, 1, 30, 0); /* 44 of 200 = 22% */
  CHECK(kx_canary_breach(&o, &c, &s, &kind, reason, sizeof reason) == 1);
  CHECK(strcmp(kind, "error_rate") == 0);
  CHECK(strstr(reason, "22.0%") && strstr(reason, "10.0%"));
  kx_health_destroy(&c);
  kx_health_destroy(&s);
}

static void test_nonfinite(void) {
  kiln_canary_options o = {.min_requests = 20};
  kx_health c, s;
  kx_health_init(&c);
  kx_health_init(&s);
  feed(&s, 20, 1, 0, 0);
  feed(&c, 20, 1, 0, 1); /* 5% NaN > 0% + 1% (the default) */
  const char *kind;
  CHECK(judge(&o, &c, &s, &kind) == 1);
  CHECK(strcmp(kind, "nonfinite") == 0);
  kx_health_destroy(&c);
  kx_health_destroy(&s);
}

static void test_latency(void) {
  kiln_canary_options o = {.min_requests = 20, .max_latency_ratio = 2};
  kx_health c, s;
  kx_health_init(&c);
  kx_health_init(&s);
  feed(&s, 200, 2, 0, 0);
  feed(&c, 200, 4.9, 0, 0); /* 4.9 <= 2 * 2 + 1 */
  const char *kind;
  CHECK(judge(&o, &c, &s, &kind) == 0);
  feed(&c, 20, 50, 0, 0); /* a tail of descheduled requests: p99 50 ms, the median still 4.9 */
  CHECK(judge(&o, &c, &s, &kind) == 0);
  feed(&c, 300, 20, 0, 0); /* the whole distribution: p99 and median 20 ms or more */
  CHECK(judge(&o, &c, &s, &kind) == 1);
  CHECK(strcmp(kind, "latency") == 0);
  kx_health_destroy(&c);
  kx_health_destroy(&s);
  /* microsecond models: ten times slower is still under the 1 ms floor */
  kx_health_init(&c);
  kx_health_init(&s);
  feed(&s, 100, 0.02, 0, 0);
  feed(&c, 100, 0.2, 0, 0);
  CHECK(judge(&o, &c, &s, &kind) == 0);
  kx_health_destroy(&c);
  kx_health_destroy(&s);
  /* a stable with too few requests gives no latency to compare with */
  kx_health_init(&c);
  kx_health_init(&s);
  feed(&s, 5, 1, 0, 0);
  feed(&c, 100, 50, 0, 0);
  CHECK(judge(&o, &c, &s, &kind) == 0);
  kx_health_destroy(&c);
  kx_health_destroy(&s);
}

static void test_defaults(void) {
  kiln_canary_options zero = {0}, d = kx_canary_defaults(&zero);
  CHECK(d.min_requests == 100 && d.max_error_rate == 0.01 && d.max_latency_ratio == 2 && d.percent == 0);
}

static void test_nonfinite_outputs(void) {
  int64_t dims[1] = {3};
  kiln_tensor f, d, h, b, i;
  CHECK_OK(kiln_tensor_alloc(&f, KILN_FLOAT, 1, dims));
  CHECK_OK(kiln_tensor_alloc(&d, KILN_DOUBLE, 1, dims));
  CHECK_OK(kiln_tensor_alloc(&h, KILN_FLOAT16, 1, dims));
  CHECK_OK(kiln_tensor_alloc(&b, KILN_BFLOAT16, 1, dims));
  CHECK_OK(kiln_tensor_alloc(&i, KILN_INT64, 1, dims));
  for (int k = 0; k < 3; k++) {
    ((float *)f.data)[k] = 1;
    ((double *)d.data)[k] = 1;
    ((uint16_t *)h.data)[k] = 0x3c00;  /* 1.0 */
    ((uint16_t *)b.data)[k] = 0x3f80;  /* 1.0 */
    ((int64_t *)i.data)[k] = INT64_MAX;
  }
  const kiln_tensor *all[5] = {&f, &d, &h, &b, &i};
  CHECK(kx_outputs_nonfinite(all, 5) == 0);
  ((float *)f.data)[2] = NAN;
  CHECK(kx_outputs_nonfinite(all, 1) == 1);
  ((float *)f.data)[2] = 0;
  ((double *)d.data)[1] = -INFINITY;
  CHECK(kx_outputs_nonfinite(all, 5) == 1);
  ((double *)d.data)[1] = 0;
  ((uint16_t *)h.data)[0] = 0x7c00; /* +inf */
  CHECK(kx_outputs_nonfinite(all, 5) == 1);
  ((uint16_t *)h.data)[0] = 0;
  ((uint16_t *)b.data)[1] = 0x7fc0; /* NaN */
  CHECK(kx_outputs_nonfinite(all, 5) == 1);
  for (int k = 0; k < 5; k++) kiln_tensor_release((kiln_tensor *)all[k]);
}

static void test_bucket(void) {
  int counts[100] = {0};
  char id[40];
  for (int k = 0; k < 20000; k++) {
    snprintf(id, sizeof id, "%016llx%08x", 0x1234abcdull, k); /* the server's ids: a salt and a counter */
    int b = kx_canary_bucket(id);
    CHECK(b >= 0 && b < 100);
    counts[b]++;
    CHECK(kx_canary_bucket(id) == b); /* sticky */
  }
  int under10 = 0;
  for (int b = 0; b < 10; b++) under10 += counts[b];
  CHECK(under10 > 1700 && under10 < 2300); /* 10% of 20000, within a generous margin */
}

TEST_MAIN(TEST(test_min_requests), TEST(test_error_rate_relative_to_stable), TEST(test_nonfinite), TEST(test_latency),
          TEST(test_defaults), TEST(test_nonfinite_outputs), TEST(test_bucket))
