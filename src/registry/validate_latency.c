/* The validation gate's latency measurement: batch-1 runs on synthetic inputs, a candidate and its
 * baseline interleaved so that what the machine does meanwhile slows both alike. */
#include "registry/validate_internal.h"
#include "core/quantile.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WARMUP_RUNS 20
#define WARMUP_SECONDS 2.0
#define TIMED_SECONDS 10.0
#define MAX_MODELS 2

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* One model's session and its synthetic inputs. */
typedef struct timed_model {
  const kiln_model *model;
  const char *name;
  kiln_session *session;
  kiln_tensor *inputs;
  const kiln_tensor **in_ptrs, **outputs;
  double *samples_ms;
  int n_inputs;
} timed_model;

static void timed_free(timed_model *t) {
  for (int i = 0; t->inputs && i < t->n_inputs; i++) kiln_tensor_release(&t->inputs[i]);
  free(t->inputs);
  free(t->in_ptrs);
  free(t->outputs);
  free(t->samples_ms);
  kiln_session_free(t->session);
  memset(t, 0, sizeof *t);
}

static kiln_status timed_init(timed_model *t, const kiln_model *m, const char *name, int runs, kiln_pool *pool, int threads) {
  t->model = m;
  t->name = name;
  t->n_inputs = kiln_model_input_count(m);
  int n_out = kiln_model_output_count(m);
  t->inputs = calloc((size_t)t->n_inputs + 1, sizeof *t->inputs);
  t->in_ptrs = calloc((size_t)t->n_inputs + 1, sizeof *t->in_ptrs);
  t->outputs = calloc((size_t)n_out + 1, sizeof *t->outputs);
  t->samples_ms = calloc((size_t)runs, sizeof *t->samples_ms);
  if (!t->inputs || !t->in_ptrs || !t->outputs || !t->samples_ms) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  for (int i = 0; i < t->n_inputs; i++) {
    const kiln_value_info *info = kiln_model_input(m, i);
    if (info->kind != KILN_VALUE_TENSOR)
      return kiln_error(KILN_UNIMPLEMENTED, "%s: input '%s' is not a tensor: latency is measured on tensor inputs only", name,
                        info->name);
    kiln_status s = kiln_tensor_synthetic(info, 1, NULL, (uint64_t)i + 1, &t->inputs[i]);
    if (s) return kiln_status_prefix(s, "%s: input '%s': ", name, info->name);
    t->in_ptrs[i] = &t->inputs[i];
  }
  kiln_session_options so = {.pool = pool, .threads = threads};
  return kiln_session_create(m, &so, &t->session);
}

/* One run; its time in ms. */
static kiln_status timed_run(timed_model *t, double *ms) {
  double start = now_s();
  kiln_status s = kiln_session_run_tensors(t->session, t->in_ptrs, t->outputs);
  *ms = (now_s() - start) * 1e3;
  return s ? kiln_status_prefix(s, "%s: ", t->name) : NULL;
}

kiln_status kx_validate_latency(const kiln_model *const *models, const char *const *names, int n, int runs, int threads,
                                kx_latency *out) {
  if (n < 1 || n > MAX_MODELS || runs < 1) return kiln_error(KILN_INVALID_ARGUMENT, "latency: bad arguments");
  timed_model t[MAX_MODELS] = {0};
  kiln_pool *pool = NULL;
  kiln_status s = threads > 1 ? kiln_pool_create(threads, &pool) : NULL;
  for (int m = 0; !s && m < n; m++) s = timed_init(&t[m], models[m], names[m], runs, pool, threads);
  double ms, deadline = now_s() + WARMUP_SECONDS;
  for (int r = 0; !s && r < WARMUP_RUNS && (r == 0 || now_s() < deadline); r++)
    for (int m = 0; !s && m < n; m++) s = timed_run(&t[m], &ms);
  int done = 0;
  deadline = now_s() + TIMED_SECONDS;
  for (; !s && done < runs && (done == 0 || now_s() < deadline); done++)
    for (int k = 0; !s && k < n; k++) {
      int m = (k + done) % n; /* alternate which model goes first */
      s = timed_run(&t[m], &t[m].samples_ms[done]);
    }
  for (int m = 0; !s && m < n; m++) {
    double sum = 0;
    for (int i = 0; i < done; i++) sum += t[m].samples_ms[i];
    kx_sort_doubles(t[m].samples_ms, (size_t)done);
    out[m].p50_ms = kx_quantile_sorted(t[m].samples_ms, (size_t)done, 0.50);
    out[m].p99_ms = kx_quantile_sorted(t[m].samples_ms, (size_t)done, 0.99);
    out[m].mean_ms = sum / done;
    out[m].runs = done;
  }
  for (int m = 0; m < n; m++) timed_free(&t[m]);
  kiln_pool_free(pool);
  return s;
}
