/* The range source (tf.data's Dataset.range): integers without a file, for tests and benchmarks
 * of the stages themselves. */
#include "data/data.h"

#include <cjson/cJSON.h>
#include <stdlib.h>

typedef struct range_stage {
  kx_stage base;
  int64_t start, stop, step, next;
} range_stage;

static const char *const range_names[] = {"x"};

static kiln_status range_next(kx_stage *s, kiln_record *out, int *done) {
  range_stage *r = (range_stage *)s;
  if (r->step > 0 ? r->next >= r->stop : r->next <= r->stop) {
    *done = 1;
    return NULL;
  }
  void *data;
  kiln_status st = kiln_record_init(out, range_names, 1, sizeof(int64_t), &data);
  if (st) return st;
  kiln_tensor_set_shape(&out->values[0], KILN_INT64, 0, NULL);
  out->values[0].data = data;
  *(int64_t *)data = r->next;
  out->index = (r->next - r->start) / r->step;
  r->next += r->step;
  atomic_fetch_add(&s->ctx->read, 1);
  *done = 0;
  return NULL;
}

static kiln_status range_reset(kx_stage *s, int64_t epoch) {
  range_stage *r = (range_stage *)s;
  r->next = r->start;
  return NULL;
}

static void range_free(kx_stage *s) { free(s); }

static const kx_stage_ops range_ops = {"range", range_next, range_reset, range_free, NULL};

kiln_status kx_range_open(kx_data_ctx *ctx, const cJSON *spec, kx_stage **out) {
  static const char *const keys[] = {"format", "start", "stop", "step", NULL};
  int64_t start = 0, stop = 0, step = 1;
  const int64_t big = (int64_t)1 << 53;
  kiln_status s = kx_spec_keys(spec, "source", keys);
  if (!s) s = kx_spec_int(spec, "source", "start", 0, -big, big, &start);
  if (!s) s = kx_spec_int(spec, "source", "stop", 1, -big, big, &stop);
  if (!s) s = kx_spec_int(spec, "source", "step", 0, -big, big, &step);
  if (!s && step == 0) s = kiln_error(KILN_INVALID_ARGUMENT, "source.step: must not be 0");
  if (s) return s;
  range_stage *r = calloc(1, sizeof *r);
  if (!r) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  r->base = (kx_stage){&range_ops, NULL, ctx};
  r->start = r->next = start;
  r->stop = stop;
  r->step = step;
  *out = &r->base;
  return NULL;
}
