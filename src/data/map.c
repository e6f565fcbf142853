/* The map and filter stages. map applies its transforms to chunks of records in parallel on the
 * dataset's pool and hands them out in their original order, so results never depend on the
 * thread count; filter keeps the records its predicate accepts. */
#include "data/data.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Records per chunk per thread: enough to amortise a pool dispatch over cheap transforms, few
 * enough that a chunk of decoded images stays small. */
#define CHUNK_PER_THREAD 64
/* "autotune": a chunk whose transforms take less than this on one thread is not worth waking
 * other threads for (they would take cores from the threads reading and consuming the data);
 * one that takes more is split. */
#define PARALLEL_ABOVE_S 1e-3

typedef struct map_stage {
  kx_stage base;
  kx_transforms *transforms;
  int threads; /* at most this many threads work on a chunk */
  int autotune; /* choose between one thread and `threads` from how long chunks take */
  int parallel; /* autotune's current choice */
  int capacity;
  kiln_record *records;
  kiln_status *errors;
  int filled, next; /* records in the chunk, and the next to hand out */
  int upstream_done;
} map_stage;

static void map_range(void *arg, int64_t begin, int64_t end) {
  map_stage *m = arg;
  for (int64_t i = begin; i < end; i++) m->errors[i] = kx_transforms_apply(m->transforms, &m->records[i]);
}

static void map_clear(map_stage *m) {
  for (int i = m->next; i < m->filled; i++) {
    kiln_record_release(&m->records[i]);
    kiln_status_free(m->errors[i]);
  }
  m->filled = m->next = 0;
}

/* Pulls the next chunk and transforms it. */
static kiln_status map_fill(map_stage *m) {
  m->filled = m->next = 0;
  while (m->filled < m->capacity && !m->upstream_done) {
    int done = 0;
    kiln_status s = m->base.up->ops->next(m->base.up, &m->records[m->filled], &done);
    if (s) return s;
    if (done) m->upstream_done = 1;
    else m->errors[m->filled++] = NULL;
  }
  if (!m->filled) return NULL;
  int threads = m->autotune && !m->parallel ? 1 : m->threads;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  kiln_parallel_for(m->base.ctx->pool, threads, m->filled, 1e9, map_range, m);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  /* per thread-second of work: a full chunk on one thread, or the split one times its threads */
  double work = ((double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec)) * threads;
  if (m->autotune && m->filled == m->capacity) m->parallel = work > PARALLEL_ABOVE_S;
  return NULL;
}

static kiln_status map_next(kx_stage *s, kiln_record *out, int *done) {
  map_stage *m = (map_stage *)s;
  for (;;) {
    if (m->next == m->filled) {
      if (m->upstream_done) {
        *done = 1;
        return NULL;
      }
      kiln_status st = map_fill(m);
      if (st) return st;
      continue;
    }
    int i = m->next++;
    if (!m->errors[i]) {
      *out = m->records[i];
      *done = 0;
      return NULL;
    }
    kiln_status st = kx_bad_parsed_record(s->ctx, &m->records[i], m->errors[i]);
    m->errors[i] = NULL;
    kiln_record_release(&m->records[i]);
    if (st) return st;
  }
}

static kiln_status map_reset(kx_stage *s, int64_t epoch) {
  map_stage *m = (map_stage *)s;
  map_clear(m);
  m->upstream_done = 0;
  return s->up->ops->reset(s->up, epoch);
}

static void map_free(kx_stage *s) {
  map_stage *m = (map_stage *)s;
  map_clear(m);
  kx_transforms_free(m->transforms);
  free(m->records);
  free(m->errors);
  free(m);
}

static const kx_stage_ops map_ops = {"map", map_next, map_reset, map_free, NULL};

/* num_parallel_calls: a count, or "autotune" / -1 (the default): up to the dataset's thread
 * count, when the transforms are worth it. */
static kiln_status parallel_calls(kx_data_ctx *ctx, const cJSON *args, const char *where, int *threads,
                                  int *autotune) {
  const cJSON *n = cJSON_GetObjectItemCaseSensitive(args, "num_parallel_calls");
  *threads = ctx->threads;
  *autotune = 1;
  if (!n || (cJSON_IsString(n) && strcmp(n->valuestring, "autotune") == 0)) return NULL;
  *autotune = 0;
  int64_t v = 0;
  kiln_status s = kx_spec_int(args, where, "num_parallel_calls", 1, -1, 4096, &v);
  if (s) return kiln_status_prefix(s, "(or \"autotune\") ");
  if (v == 0) return kiln_error(KILN_INVALID_ARGUMENT, "%s.num_parallel_calls: must be positive, or -1 / \"autotune\"", where);
  /* more than the pool has would only hold more records per chunk */
  if (v > 0) *threads = v < ctx->threads ? (int)v : ctx->threads;
  else *autotune = 1;
  return NULL;
}

kiln_status kx_map_open(kx_data_ctx *ctx, kx_stage *up, const cJSON *args, const char *where, kx_stage **out) {
  static const char *const keys[] = {"transforms", "num_parallel_calls", "deterministic", NULL};
  /* tf.data's deterministic=false lets results out of order; kiln's chunks keep the order at no
   * cost, so the flag is accepted and the order kept either way */
  int deterministic = 1, threads = 1, autotune = 1;
  char list_where[160];
  kiln_status s = kx_spec_keys(args, where, keys);
  if (!s) s = kx_spec_bool(args, where, "deterministic", &deterministic);
  if (!s) s = parallel_calls(ctx, args, where, &threads, &autotune);
  const cJSON *list = cJSON_GetObjectItemCaseSensitive(args, "transforms");
  if (!s && !cJSON_IsArray(list))
    s = kiln_error(KILN_INVALID_ARGUMENT, "%s.transforms: expected a list of transforms", where);
  if (s) return s;
  map_stage *m = calloc(1, sizeof *m);
  if (!m) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  m->base = (kx_stage){&map_ops, up, ctx};
  m->threads = threads;
  m->autotune = autotune;
  m->capacity = CHUNK_PER_THREAD * threads;
  m->records = calloc((size_t)m->capacity, sizeof *m->records);
  m->errors = calloc((size_t)m->capacity, sizeof *m->errors);
  snprintf(list_where, sizeof list_where, "%s.transforms", where);
  s = m->records && m->errors ? kx_transforms_parse(ctx, list, list_where, &m->transforms)
                              : kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  if (s) {
    free(m->records);
    free(m->errors);
    free(m);
    return s;
  }
  *out = &m->base;
  return NULL;
}

/* ---------------------------------------------------------------- filter */

typedef struct filter_stage {
  kx_stage base;
  kx_predicate *predicate;
} filter_stage;

static kiln_status filter_next(kx_stage *s, kiln_record *out, int *done) {
  filter_stage *f = (filter_stage *)s;
  for (;;) {
    kiln_status st = s->up->ops->next(s->up, out, done);
    if (st || *done) return st;
    int keep = 0;
    st = kx_predicate_eval(f->predicate, out, &keep);
    if (st) st = kx_bad_parsed_record(s->ctx, out, st);
    else if (keep) return NULL;
    kiln_record_release(out);
    if (st) return st;
  }
}

static kiln_status filter_reset(kx_stage *s, int64_t epoch) { return s->up->ops->reset(s->up, epoch); }

static void filter_free(kx_stage *s) {
  kx_predicate_free(((filter_stage *)s)->predicate);
  free(s);
}

static const kx_stage_ops filter_ops = {"filter", filter_next, filter_reset, filter_free, NULL};

kiln_status kx_filter_open(kx_data_ctx *ctx, kx_stage *up, const cJSON *args, const char *where, kx_stage **out) {
  filter_stage *f = calloc(1, sizeof *f);
  if (!f) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  f->base = (kx_stage){&filter_ops, up, ctx};
  kiln_status s = kx_predicate_parse(args, where, &f->predicate);
  if (s) {
    free(f);
    return s;
  }
  *out = &f->base;
  return NULL;
}
