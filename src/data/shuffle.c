/* The shuffle stage, as tf.data's: a buffer of buffer_size records; each output is a uniformly
 * drawn buffer slot, refilled from upstream. Seeded, the order depends only on (seed, epoch) and
 * the upstream order — never on threads or timing. */
#include "data/data.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <time.h>

typedef struct shuffle_stage {
  kx_stage base;
  int64_t capacity;
  kiln_record *buffer;
  int64_t filled;
  int upstream_done;
  uint64_t seed;
  int reshuffle; /* a new order every epoch (tf.data's reshuffle_each_iteration) */
  uint64_t state;
} shuffle_stage;

/* splitmix64: small, fast and well mixed; seeds from consecutive (seed, epoch) pairs diverge. */
static uint64_t next_random(uint64_t *state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* Uniform in [0, n) without modulo bias (Lemire's method). */
static int64_t draw(uint64_t *state, int64_t n) {
  uint64_t range = (uint64_t)n;
  uint64_t threshold = -range % range;
  for (;;) {
    unsigned __int128 m = (unsigned __int128)next_random(state) * range;
    if ((uint64_t)m >= threshold) return (int64_t)(m >> 64);
  }
}

static void seed_epoch(shuffle_stage *sh, int64_t epoch) {
  sh->state = sh->seed;
  uint64_t mix = next_random(&sh->state) ^ (uint64_t)(sh->reshuffle ? epoch : 0);
  sh->state = mix;
}

static void shuffle_clear(shuffle_stage *sh) {
  for (int64_t i = 0; i < sh->filled; i++) kiln_record_release(&sh->buffer[i]);
  sh->filled = 0;
}

static kiln_status shuffle_next(kx_stage *s, kiln_record *out, int *done) {
  shuffle_stage *sh = (shuffle_stage *)s;
  while (!sh->upstream_done && sh->filled < sh->capacity) {
    int up_done = 0;
    kiln_status st = s->up->ops->next(s->up, &sh->buffer[sh->filled], &up_done);
    if (st) return st;
    if (up_done) sh->upstream_done = 1;
    else sh->filled++;
  }
  if (sh->filled == 0) {
    *done = 1;
    return NULL;
  }
  int64_t i = draw(&sh->state, sh->filled);
  *out = sh->buffer[i];
  *done = 0;
  /* refill the slot from upstream, or close the gap with the last record */
  if (!sh->upstream_done) {
    int up_done = 0;
    kiln_status st = s->up->ops->next(s->up, &sh->buffer[i], &up_done);
    if (st) {
      sh->buffer[i] = sh->buffer[--sh->filled];
      kiln_record_release(out);
      return st;
    }
    if (!up_done) return NULL;
    sh->upstream_done = 1;
  }
  sh->buffer[i] = sh->buffer[--sh->filled];
  return NULL;
}

static kiln_status shuffle_reset(kx_stage *s, int64_t epoch) {
  shuffle_stage *sh = (shuffle_stage *)s;
  shuffle_clear(sh);
  sh->upstream_done = 0;
  seed_epoch(sh, epoch);
  return s->up->ops->reset(s->up, epoch);
}

static void shuffle_free(kx_stage *s) {
  shuffle_stage *sh = (shuffle_stage *)s;
  shuffle_clear(sh);
  free(sh->buffer);
  free(sh);
}

static const kx_stage_ops shuffle_ops = {"shuffle", shuffle_next, shuffle_reset, shuffle_free, NULL};

kiln_status kx_shuffle_open(kx_data_ctx *ctx, kx_stage *up, const cJSON *args, const char *where, kx_stage **out) {
  static const char *const keys[] = {"buffer_size", "seed", "reshuffle_each_iteration", NULL};
  cJSON *tmp;
  const cJSON *a = kx_spec_shorthand(args, "buffer_size", &tmp);
  int64_t size = 0, seed = -1;
  int reshuffle = 1;
  kiln_status s = a ? kx_spec_keys(a, where, keys) : kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  /* the buffer holds whole records: 2^24 of them is already more memory than most datasets */
  if (!s) s = kx_spec_int(a, where, "buffer_size", 1, 1, 1 << 24, &size);
  if (!s) s = kx_spec_int(a, where, "seed", 0, 0, INT64_MAX, &seed);
  if (!s) s = kx_spec_bool(a, where, "reshuffle_each_iteration", &reshuffle);
  cJSON_Delete(tmp);
  if (s) return s;
  shuffle_stage *sh = calloc(1, sizeof *sh);
  if (!sh || !(sh->buffer = calloc((size_t)size, sizeof *sh->buffer))) {
    free(sh);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: out of memory for a buffer of %lld records", where, (long long)size);
  }
  sh->base = (kx_stage){&shuffle_ops, up, ctx};
  sh->capacity = size;
  /* no seed: a different order every run, as in tf.data */
  sh->seed = seed >= 0 ? (uint64_t)seed : (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)sh;
  sh->reshuffle = reshuffle;
  seed_epoch(sh, 0);
  *out = &sh->base;
  return NULL;
}
