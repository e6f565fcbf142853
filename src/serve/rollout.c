/* Canary rollout's judgement: each served version's health (failures, NaN/Inf outputs, a window of
 * recent latencies), the verdict on a canary against stable, and where a request id falls in the
 * traffic split. The manager acts on the verdict. */
#include "serve/serve.h"
#include "core/quantile.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Below this difference two p99 latencies are the same: scheduler and timer noise on a model
 * that answers in microseconds is not a slow canary. */
#define LATENCY_FLOOR_MS 1.0

void kx_health_init(kx_health *h) {
  memset(h, 0, sizeof *h);
  atomic_init(&h->requests, 0);
  atomic_init(&h->errors, 0);
  atomic_init(&h->nonfinite, 0);
  pthread_mutex_init(&h->lock, NULL);
}

void kx_health_destroy(kx_health *h) { pthread_mutex_destroy(&h->lock); }

void kx_health_record(kx_health *h, int failed, int nonfinite, double seconds) {
  atomic_fetch_add(&h->requests, 1);
  if (failed) atomic_fetch_add(&h->errors, 1);
  if (nonfinite) atomic_fetch_add(&h->nonfinite, 1);
  pthread_mutex_lock(&h->lock);
  h->latency_ms[h->next_latency] = (float)(seconds * 1e3);
  h->next_latency = (h->next_latency + 1) % KX_LATENCY_WINDOW;
  if (h->n_latency < KX_LATENCY_WINDOW) h->n_latency++;
  pthread_mutex_unlock(&h->lock);
}

/* The median and the 99th percentile of the latency window (nearest rank); NaN when it is empty. */
static void percentiles_ms(kx_health *h, double *p50, double *p99) {
  double copy[KX_LATENCY_WINDOW];
  pthread_mutex_lock(&h->lock);
  int n = h->n_latency;
  for (int i = 0; i < n; i++) copy[i] = h->latency_ms[i];
  pthread_mutex_unlock(&h->lock);
  kx_sort_doubles(copy, (size_t)n);
  *p50 = kx_quantile_sorted(copy, (size_t)n, 0.5);
  *p99 = kx_quantile_sorted(copy, (size_t)n, 0.99);
}

kiln_canary_options kx_canary_defaults(const kiln_canary_options *o) {
  kiln_canary_options d = *o;
  if (d.min_requests <= 0) d.min_requests = 100;
  if (d.max_error_rate <= 0) d.max_error_rate = 0.01;
  if (d.max_latency_ratio <= 0) d.max_latency_ratio = 2;
  return d;
}

static double rate(long long part, long long whole) { return whole > 0 ? (double)part / (double)whole : 0; }

int kx_canary_breach(const kiln_canary_options *opt, kx_health *canary, kx_health *stable, const char **kind,
                     char *reason, size_t size) {
  kiln_canary_options o = kx_canary_defaults(opt);
  long long n = atomic_load(&canary->requests), sn = atomic_load(&stable->requests);
  if (n < o.min_requests) return 0;
  double nonfinite = rate(atomic_load(&canary->nonfinite), n), stable_nonfinite = rate(atomic_load(&stable->nonfinite), sn);
  double errors = rate(atomic_load(&canary->errors), n), stable_errors = rate(atomic_load(&stable->errors), sn);
  if (nonfinite > stable_nonfinite + o.max_error_rate) {
    *kind = "nonfinite";
    snprintf(reason, size, "NaN/Inf outputs in %.1f%% of %lld canary requests (stable: %.1f%%; allowed: +%.1f%%)",
             100 * nonfinite, n, 100 * stable_nonfinite, 100 * o.max_error_rate);
    return 1;
  }
  if (errors > stable_errors + o.max_error_rate) {
    *kind = "error_rate";
    snprintf(reason, size, "errors in %.1f%% of %lld canary requests (stable: %.1f%%; allowed: +%.1f%%)", 100 * errors, n,
             100 * stable_errors, 100 * o.max_error_rate);
    return 1;
  }
  if (sn < o.min_requests) return 0; /* no latency to compare with yet */
  /* A slow canary moves its whole distribution; a few descheduled requests on a busy machine move
   * only the tail of the fewer samples the canary has. So the median must be slow too. */
  double p50, p99, stable_p50, stable_p99;
  percentiles_ms(canary, &p50, &p99);
  percentiles_ms(stable, &stable_p50, &stable_p99);
  if (p99 > stable_p99 * o.max_latency_ratio + LATENCY_FLOOR_MS && p50 > stable_p50 * o.max_latency_ratio + LATENCY_FLOOR_MS) {
    *kind = "latency";
    snprintf(reason, size, "p99 latency %.2f ms (median %.2f) over %lld canary requests, stable's %.2f ms (median %.2f); allowed: %.1fx + %.0f ms",
             p99, p50, n, stable_p99, stable_p50, o.max_latency_ratio, LATENCY_FLOOR_MS);
    return 1;
  }
  return 0;
}

int kx_outputs_nonfinite(const kiln_tensor *const *outputs, int n) {
  for (int i = 0; i < n; i++) {
    const kiln_tensor *t = outputs[i];
    if (!t || (t->dtype != KILN_FLOAT && t->dtype != KILN_DOUBLE && t->dtype != KILN_FLOAT16 && t->dtype != KILN_BFLOAT16))
      continue;
    int64_t count = kiln_tensor_numel(t);
    if (t->dtype == KILN_FLOAT) {
      const float *x = t->data;
      for (int64_t k = 0; k < count; k++)
        if (!isfinite(x[k])) return 1;
    } else {
      for (int64_t k = 0; k < count; k++)
        if (!isfinite(kiln_tensor_get_f64(t, k))) return 1;
    }
  }
  return 0;
}

int kx_canary_bucket(const char *request_id) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (const unsigned char *p = (const unsigned char *)request_id; *p; p++) h = (h ^ *p) * 1099511628211ull;
  h ^= h >> 33; /* ids differ in their last characters: mix them into the low bits */
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return (int)(h % 100);
}
