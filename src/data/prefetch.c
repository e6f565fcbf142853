/* The prefetch stage: a background thread runs everything upstream and keeps up to buffer_size
 * records ready, so the consumer (a training step) never waits on reading or transforming. */
#include "data/data.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

/* tf.data's AUTOTUNE buffer, fixed: enough to hide the jitter of a parallel map. */
#define AUTOTUNE_BUFFER 4

typedef struct prefetch_stage {
  kx_stage base;
  int capacity;
  kiln_record *queue; /* ring */
  int head, count;
  int finished;        /* the producer saw the end (or an error) */
  kiln_status error;   /* what stopped the producer, handed out after the queued records */
  int stop;            /* asks the producer to quit */
  int running;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t not_full, not_empty;
} prefetch_stage;

static void *producer(void *arg) {
  prefetch_stage *p = arg;
  kx_stage *up = p->base.up;
  for (;;) {
    kiln_record r;
    int done = 0;
    kiln_status s = up->ops->next(up, &r, &done);
    pthread_mutex_lock(&p->mu);
    if (s || done) {
      p->error = s;
      p->finished = 1;
      pthread_cond_signal(&p->not_empty);
      pthread_mutex_unlock(&p->mu);
      return NULL;
    }
    while (p->count == p->capacity && !p->stop) pthread_cond_wait(&p->not_full, &p->mu);
    if (p->stop) {
      pthread_mutex_unlock(&p->mu);
      kiln_record_release(&r);
      return NULL;
    }
    p->queue[(p->head + p->count) % p->capacity] = r;
    p->count++;
    pthread_cond_signal(&p->not_empty);
    pthread_mutex_unlock(&p->mu);
  }
}

static kiln_status prefetch_next(kx_stage *s, kiln_record *out, int *done) {
  prefetch_stage *p = (prefetch_stage *)s;
  if (!p->running) {
    if (pthread_create(&p->thread, NULL, producer, p) != 0)
      return kiln_error(KILN_RESOURCE_EXHAUSTED, "prefetch: cannot start a thread");
    p->running = 1;
  }
  pthread_mutex_lock(&p->mu);
  while (p->count == 0 && !p->finished) pthread_cond_wait(&p->not_empty, &p->mu);
  kiln_status st = NULL;
  if (p->count > 0) {
    *out = p->queue[p->head];
    p->head = (p->head + 1) % p->capacity;
    p->count--;
    *done = 0;
    pthread_cond_signal(&p->not_full);
  } else {
    st = p->error;
    p->error = NULL;
    *done = 1;
  }
  pthread_mutex_unlock(&p->mu);
  return st;
}

/* Stops the producer and drops what it queued. */
static void prefetch_stop(prefetch_stage *p) {
  if (p->running) {
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_signal(&p->not_full);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    p->running = 0;
  }
  for (; p->count > 0; p->count--, p->head = (p->head + 1) % p->capacity) kiln_record_release(&p->queue[p->head]);
  kiln_status_free(p->error);
  p->error = NULL;
  p->head = 0;
  p->finished = p->stop = 0;
}

static kiln_status prefetch_reset(kx_stage *s, int64_t epoch) {
  prefetch_stop((prefetch_stage *)s);
  return s->up->ops->reset(s->up, epoch);
}

static void prefetch_free(kx_stage *s) {
  prefetch_stage *p = (prefetch_stage *)s;
  prefetch_stop(p);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->not_full);
  pthread_cond_destroy(&p->not_empty);
  free(p->queue);
  free(p);
}

static const kx_stage_ops prefetch_ops = {"prefetch", prefetch_next, prefetch_reset, prefetch_free, NULL};

kiln_status kx_prefetch_open(kx_data_ctx *ctx, kx_stage *up, const cJSON *args, const char *where, kx_stage **out) {
  static const char *const keys[] = {"buffer_size", NULL};
  cJSON *tmp = NULL;
  const cJSON *a = kx_spec_shorthand(args, "buffer_size", &tmp);
  int64_t size = AUTOTUNE_BUFFER;
  kiln_status s = a ? kx_spec_keys(a, where, keys) : kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  const cJSON *b = s ? NULL : cJSON_GetObjectItemCaseSensitive(a, "buffer_size");
  if (!s && b && !(cJSON_IsString(b) && strcmp(b->valuestring, "autotune") == 0)) {
    s = kx_spec_int(a, where, "buffer_size", 1, -1, 1 << 16, &size);
    if (!s && size <= 0) size = AUTOTUNE_BUFFER; /* -1 is tf.data.AUTOTUNE */
  }
  cJSON_Delete(tmp);
  if (s) return s;
  prefetch_stage *p = calloc(1, sizeof *p);
  if (!p || !(p->queue = calloc((size_t)size, sizeof *p->queue))) {
    free(p);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: out of memory", where);
  }
  p->base = (kx_stage){&prefetch_ops, up, ctx};
  p->capacity = (int)size;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->not_full, NULL);
  pthread_cond_init(&p->not_empty, NULL);
  *out = &p->base;
  return NULL;
}
