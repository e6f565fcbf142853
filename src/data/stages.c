/* The counting stages: repeat, shard, take and skip. Each keeps a counter and no records. */
#include "data/data.h"

#include <cjson/cJSON.h>
#include <stdlib.h>

typedef struct count_stage {
  kx_stage base;
  int64_t count;  /* repeat: passes (-1 = forever); take/skip: records (-1 = all); shard: shards */
  int64_t index;  /* shard: this shard */
  int64_t seen;   /* records (take, skip, shard) or finished passes (repeat) since reset */
  int64_t epoch;  /* repeat: the epoch of the last reset */
  int64_t pass_records; /* repeat: records in the current pass */
} count_stage;

static kiln_status pull(kx_stage *s, kiln_record *out, int *done) { return s->up->ops->next(s->up, out, done); }

static kiln_status count_reset(kx_stage *s, int64_t epoch) {
  count_stage *c = (count_stage *)s;
  c->seen = 0;
  c->epoch = epoch;
  c->pass_records = 0;
  return s->up->ops->reset(s->up, epoch);
}

/* repeat numbers the passes it runs: epoch e's k-th pass is upstream epoch e*count+k, so a shuffle
 * upstream draws a new order in every pass and a reset replays the same sequence */
static int64_t pass_epoch(const count_stage *c) {
  uint64_t e = (uint64_t)c->epoch * (uint64_t)(c->count > 0 ? c->count : 0) + (uint64_t)c->seen;
  return (int64_t)(e & (uint64_t)INT64_MAX); /* only its distinctness matters: wrapping is fine */
}

static kiln_status repeat_reset(kx_stage *s, int64_t epoch) {
  count_stage *c = (count_stage *)s;
  c->seen = 0;
  c->epoch = epoch;
  c->pass_records = 0;
  return s->up->ops->reset(s->up, pass_epoch(c));
}

static void count_free(kx_stage *s) { free(s); }

static kiln_status take_next(kx_stage *s, kiln_record *out, int *done) {
  count_stage *c = (count_stage *)s;
  if (c->count >= 0 && c->seen >= c->count) {
    *done = 1;
    return NULL;
  }
  kiln_status st = pull(s, out, done);
  if (!st && !*done) c->seen++;
  return st;
}

static kiln_status skip_next(kx_stage *s, kiln_record *out, int *done) {
  count_stage *c = (count_stage *)s;
  while (c->count < 0 || c->seen < c->count) {
    kiln_status st = pull(s, out, done);
    if (st || *done) {
      if (!st) c->seen = c->count < 0 ? 0 : c->count; /* nothing left to skip */
      return st;
    }
    kiln_record_release(out);
    c->seen++;
  }
  if (c->count < 0) {
    *done = 1;
    return NULL;
  }
  return pull(s, out, done);
}

static kiln_status shard_next(kx_stage *s, kiln_record *out, int *done) {
  count_stage *c = (count_stage *)s;
  for (;;) {
    kiln_status st = pull(s, out, done);
    if (st || *done) return st;
    if (c->seen++ % c->count == c->index) return NULL;
    kiln_record_release(out);
  }
}

static kiln_status repeat_next(kx_stage *s, kiln_record *out, int *done) {
  count_stage *c = (count_stage *)s;
  if (c->count == 0) { /* repeat(0): nothing, as in tf.data */
    *done = 1;
    return NULL;
  }
  for (;;) {
    kiln_status st = pull(s, out, done);
    if (st) return st;
    if (!*done) {
      c->pass_records++;
      return NULL;
    }
    c->seen++;
    /* an empty pass would repeat forever */
    if ((c->count >= 0 && c->seen >= c->count) || c->pass_records == 0) return NULL;
    c->pass_records = 0;
    st = s->up->ops->reset(s->up, pass_epoch(c));
    if (st) return st;
  }
}

static const kx_stage_ops take_ops = {"take", take_next, count_reset, count_free, NULL};
static const kx_stage_ops skip_ops = {"skip", skip_next, count_reset, count_free, NULL};
static const kx_stage_ops shard_ops = {"shard", shard_next, count_reset, count_free, NULL};
static const kx_stage_ops repeat_ops = {"repeat", repeat_next, repeat_reset, count_free, NULL};

static kiln_status make(kx_data_ctx *ctx, kx_stage *up, const kx_stage_ops *ops, int64_t count, int64_t index,
                        kx_stage **out) {
  count_stage *c = calloc(1, sizeof *c);
  if (!c) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  c->base = (kx_stage){ops, up, ctx};
  c->count = count;
  c->index = index;
  *out = &c->base;
  return NULL;
}

/* take, skip and repeat: one "count" argument, -1 meaning all / forever. */
static kiln_status open_counted(kx_data_ctx *ctx, kx_stage *up, const cJSON *args, const char *where,
                                const kx_stage_ops *ops, int64_t dflt, kx_stage **out) {
  static const char *const keys[] = {"count", NULL};
  cJSON *tmp;
  const cJSON *a = kx_spec_shorthand(args, "count", &tmp);
  int64_t count = dflt;
  kiln_status s = a ? kx_spec_keys(a, where, keys) : kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  if (!s) s = kx_spec_int(a, where, "count", 0, -1, INT64_MAX / 2, &count);
  cJSON_Delete(tmp);
  return s ? s : make(ctx, up, ops, count, 0, out);
}

kiln_status kx_take_open(kx_data_ctx *ctx, kx_stage *up, const cJSON *args, const char *where, kx_stage **out) {
  if (!cJSON_IsNumber(args) && !cJSON_GetObjectItemCaseSensitive(args, "count"))
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: missing required key 'count'", where);
  return open_counted(ctx, up, args, where, &take_ops, -1, out);
}

kiln_status kx_skip_open(kx_data_ctx *ctx, kx_stage *up, const cJSON *args, const char *where, kx_stage **out) {
  if (!cJSON_IsNumber(args) && !cJSON_GetObjectItemCaseSensitive(args, "count"))
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: missing required key 'count'", where);
  return open_counted(ctx, up, args, where, &skip_ops, 0, out);
}

kiln_status kx_repeat_open(kx_data_ctx *ctx, kx_stage *up, const cJSON *args, const char *where, kx_stage **out) {
  return open_counted(ctx, up, args, where, &repeat_ops, -1, out);
}

kiln_status kx_shard_open(kx_data_ctx *ctx, kx_stage *up, const cJSON *args, const char *where, kx_stage **out) {
  static const char *const keys[] = {"num_shards", "index", NULL};
  int64_t shards = 0, index = 0;
  kiln_status s = kx_spec_keys(args, where, keys);
  if (!s) s = kx_spec_int(args, where, "num_shards", 1, 1, 1 << 20, &shards);
  if (!s) s = kx_spec_int(args, where, "index", 1, 0, 1 << 20, &index);
  if (!s && index >= shards)
    s = kiln_error(KILN_INVALID_ARGUMENT, "%s: index %lld must be below num_shards %lld", where, (long long)index,
                   (long long)shards);
  return s ? s : make(ctx, up, &shard_ops, shards, index, out);
}
