/* The batch stage: stacks batch_size records into one whose features gain a leading batch
 * dimension. Every record must have the first record's features, dtypes and shapes; one that does
 * not (or has a missing value) is a bad record. */
#include "data/data.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

typedef struct batch_stage {
  kx_stage base;
  int64_t size;
  int drop_remainder;
  kiln_record *pending; /* the records of the batch being built */
} batch_stage;

/* Why r cannot join a batch that starts with `first`; NULL when it can. */
static kiln_status mismatch(const kiln_record *first, const kiln_record *r) {
  if (r == first) { /* the batch's first record: only a missing value can keep it out */
    for (int i = 0; i < r->count; i++)
      if (r->values[i].dtype == KILN_UNDEFINED)
        return kiln_error(KILN_INVALID_ARGUMENT, "feature '%s' is missing; a batch needs a value in every record",
                          r->names[i]);
    return NULL;
  }
  int same_names = r->names == first->names; /* sources share one names array across records */
  if (r->count != first->count)
    return kiln_error(KILN_INVALID_ARGUMENT, "has %d features where the batch's first record has %d", r->count,
                      first->count);
  for (int i = 0; i < r->count; i++) {
    const kiln_tensor *a = &first->values[i], *b = &r->values[i];
    if (!same_names && strcmp(r->names[i], first->names[i]) != 0)
      return kiln_error(KILN_INVALID_ARGUMENT, "feature %d is '%s' where the batch's first record has '%s'", i,
                        r->names[i], first->names[i]);
    if (b->dtype == KILN_UNDEFINED)
      return kiln_error(KILN_INVALID_ARGUMENT, "feature '%s' is missing; a batch needs a value in every record",
                        r->names[i]);
    int same = a->dtype == b->dtype && a->rank == b->rank;
    if (same && a->rank) same = memcmp(a->dims, b->dims, (size_t)a->rank * sizeof a->dims[0]) == 0;
    if (!same) {
      char want[96], got[96];
      return kiln_error(KILN_INVALID_ARGUMENT, "feature '%s' is %s where the batch's first record has %s", r->names[i],
                        kiln_tensor_describe(b, got, sizeof got), kiln_tensor_describe(a, want, sizeof want));
    }
  }
  return NULL;
}

/* Stacks pending[0..n) into *out. */
static kiln_status stack(const kiln_record *rs, int64_t n, kiln_record *out) {
  const kiln_record *first = &rs[0];
  size_t bytes = 0;
  for (int i = 0; i < first->count; i++)
    if (first->values[i].dtype != KILN_STRING) bytes += kx_align64(kiln_tensor_nbytes(&first->values[i]) * (size_t)n);
  char *data;
  kiln_status s = kiln_record_init(out, first->names, first->count, bytes, (void **)&data);
  if (s) return s;
  out->source = first->source;
  out->index = first->index;
  out->offset = first->offset;
  for (int i = 0; i < first->count && !s; i++) {
    const kiln_tensor *a = &first->values[i];
    kiln_tensor *t = &out->values[i];
    int64_t dims[KILN_MAX_RANK];
    if (a->rank + 1 > KILN_MAX_RANK) {
      s = kiln_error(KILN_UNIMPLEMENTED, "feature '%s' has rank %d; a batch of it exceeds kiln's %d", first->names[i],
                     a->rank, KILN_MAX_RANK);
      break;
    }
    dims[0] = n;
    memcpy(dims + 1, a->dims, (size_t)a->rank * sizeof *dims);
    if (a->dtype == KILN_STRING) {
      s = kiln_tensor_alloc(t, KILN_STRING, a->rank + 1, dims);
      int64_t per = kiln_tensor_numel(a);
      for (int64_t r = 0; r < n && !s; r++)
        for (int64_t k = 0; k < per && !s; k++) {
          const char *v = ((char *const *)rs[r].values[i].data)[k];
          if (!(((char **)t->data)[r * per + k] = strdup(v ? v : "")))
            s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory batching strings");
        }
      continue;
    }
    s = kiln_tensor_set_shape(t, a->dtype, a->rank + 1, dims);
    if (s) break;
    size_t each = kiln_tensor_nbytes(a);
    t->data = data;
    for (int64_t r = 0; r < n; r++)
      if (each) memcpy(data + (size_t)r * each, rs[r].values[i].data, each);
    data += kx_align64(each * (size_t)n);
  }
  if (s) kiln_record_release(out);
  return s;
}

static kiln_status batch_next(kx_stage *s, kiln_record *out, int *done) {
  batch_stage *b = (batch_stage *)s;
  if (s->up->ops->next_batch) { /* the upstream builds the batch itself, without a record per row */
    int ended = 0;
    memset(out, 0, sizeof *out);
    *done = 0;
    return s->up->ops->next_batch(s->up, b->size, b->drop_remainder, out, done, &ended);
  }
  int64_t n = 0;
  kiln_status st = NULL;
  while (n < b->size) {
    int up_done = 0;
    st = s->up->ops->next(s->up, &b->pending[n], &up_done);
    if (st || up_done) break;
    kiln_status why = mismatch(n ? &b->pending[0] : &b->pending[n], &b->pending[n]);
    if (why) {
      st = kx_bad_parsed_record(s->ctx, &b->pending[n], why);
      kiln_record_release(&b->pending[n]);
      if (st) break;
      continue;
    }
    n++;
  }
  if (!st && n > 0 && (n == b->size || !b->drop_remainder)) {
    st = stack(b->pending, n, out);
    *done = 0;
  } else if (!st) {
    *done = 1;
  }
  for (int64_t i = 0; i < n; i++) kiln_record_release(&b->pending[i]);
  return st;
}

static kiln_status batch_reset(kx_stage *s, int64_t epoch) { return s->up->ops->reset(s->up, epoch); }

static void batch_free(kx_stage *s) {
  free(((batch_stage *)s)->pending);
  free(s);
}

static const kx_stage_ops batch_ops = {"batch", batch_next, batch_reset, batch_free, NULL};

kiln_status kx_batch_open(kx_data_ctx *ctx, kx_stage *up, const cJSON *args, const char *where, kx_stage **out) {
  static const char *const keys[] = {"batch_size", "drop_remainder", NULL};
  cJSON *tmp;
  const cJSON *a = kx_spec_shorthand(args, "batch_size", &tmp);
  int64_t size = 0;
  int drop = 0;
  kiln_status s = a ? kx_spec_keys(a, where, keys) : kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  if (!s) s = kx_spec_int(a, where, "batch_size", 1, 1, 1 << 20, &size);
  if (!s) s = kx_spec_bool(a, where, "drop_remainder", &drop);
  cJSON_Delete(tmp);
  if (s) return s;
  batch_stage *b = calloc(1, sizeof *b);
  if (!b || !(b->pending = calloc((size_t)size, sizeof *b->pending))) {
    free(b);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: out of memory", where);
  }
  b->base = (kx_stage){&batch_ops, up, ctx};
  b->size = size;
  b->drop_remainder = drop;
  *out = &b->base;
  return NULL;
}
