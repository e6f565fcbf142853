/* The batcher: one queue per model version and the inference workers that drain it. With
 * batching, a worker merges queued requests whose inputs agree beyond the first dimension into one
 * run of up to max_batch_size rows (waiting at most batch_timeout_micros after the first), pads to
 * the next allowed batch size, and hands each request its rows of the outputs. */
#include "serve/serve.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Queued work, in seconds per awake worker, beyond which another worker is woken. */
#define WAKE_BACKLOG_S 200e-6

typedef struct worker {
  kx_batcher *b;
  pthread_t thread;
  int started;
  kiln_session *session;
  void **scratch; /* per input: the merged batch's buffer */
  size_t *scratch_cap;
  const kiln_tensor **in; /* per input: what the next run reads */
} worker;

struct kx_batcher {
  const kiln_model *model;
  kx_batcher_options opt;
  int n_inputs, n_outputs;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  kx_request *head, *tail;
  int queued;
  int forming; /* a worker is gathering a batch: the others leave the queue to it */
  int waiting;       /* workers asleep on an empty queue */
  double run_seconds; /* moving average of one batch's run, answering included */
  int stop;
  int ready, failed; /* workers done with warm-up; first warm-up error kept in warmup_error */
  kiln_status warmup_error;
  atomic_int warmup_nonfinite; /* a warm-up run returned NaN or Inf */
  worker *workers;
};

static int64_t rows_of(const kx_request *r) { return r->inputs[0].rank > 0 ? r->inputs[0].dims[0] : 1; }

/* Requests merge when every input has the same dtype, rank and dimensions after the first. */
static int compatible(const kx_batcher *b, const kx_request *a, const kx_request *c) {
  for (int i = 0; i < b->n_inputs; i++) {
    const kiln_tensor *x = &a->inputs[i], *y = &c->inputs[i];
    if (x->dtype != y->dtype || x->rank != y->rank || x->rank < 1) return 0;
    for (int d = 1; d < x->rank; d++)
      if (x->dims[d] != y->dims[d]) return 0;
  }
  return 1;
}

static void finish(kx_batcher *b, kx_request *r, const kiln_tensor *const *outputs, kiln_status error) {
  b->opt.done(b->opt.done_ctx, r, outputs, error);
}

/* Unlinks and returns the first request after `prev` (NULL: the head). Lock held. */
static kx_request *unlink_after(kx_batcher *b, kx_request *prev) {
  kx_request *r = prev ? prev->next : b->head;
  if (!r) return NULL;
  if (prev) prev->next = r->next;
  else b->head = r->next;
  if (b->tail == r) b->tail = prev;
  r->next = NULL;
  r->taken_at = kiln_now(); /* the end of its "queue" span */
  b->queued--;
  return r;
}

static double deadline_of(double first_enqueued, int64_t micros) { return first_enqueued + (double)micros * 1e-6; }

static void timed_wait(kx_batcher *b, double until) {
  double left = until - kiln_now();
  if (left <= 0) return;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  double t = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9 + left;
  ts.tv_sec = (time_t)t;
  ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
  pthread_cond_timedwait(&b->cond, &b->lock, &ts);
}

/* Whether a queued request is not worth running: its deadline passed, or its gRPC client cancelled it. */
static int stale(const kx_request *r) {
  return kiln_now() > r->deadline || (r->call.grpc && kiln_grpc_cancelled(r->call.grpc));
}

/* Without batching: the next request that has not expired (expired ones go to `expired`).
 * Returns 1, or 0 when stopping. Lock held on entry and exit. */
static int take_one(kx_batcher *b, kx_request **batch, kx_request **expired) {
  while (!b->stop && !b->head) {
    b->waiting++;
    pthread_cond_wait(&b->cond, &b->lock);
    b->waiting--;
  }
  while (b->head) {
    kx_request *r = unlink_after(b, NULL);
    if (!stale(r)) {
      batch[0] = r;
      return 1;
    }
    r->next = *expired;
    *expired = r;
  }
  return 0;
}

/* Takes the next batch off the queue into `batch` (at most max entries); expired requests go to
 * `expired`. One worker gathers at a time, waiting up to batch_timeout_micros after the batch's
 * first request for more. Returns the batch's count; 0 when stopping. Lock held on entry and
 * exit. */
static int gather(kx_batcher *b, kx_request **batch, int max, kx_request **expired) {
  if (!b->opt.batching) return take_one(b, batch, expired);
  while (!(b->stop && !b->head) && (!b->head || b->forming)) pthread_cond_wait(&b->cond, &b->lock);
  if (!b->head) return 0;
  int n = 0;
  int64_t rows = 0, limit = b->opt.config->max_batch_size;
  double until = 0;
  b->forming = 1;
  for (;;) {
    kx_request *prev = NULL;
    for (kx_request *r = b->head; r && n < max && rows < limit;) {
      if (stale(r)) {
        kx_request *e = unlink_after(b, prev);
        e->next = *expired;
        *expired = e;
        r = prev ? prev->next : b->head;
        continue;
      }
      if (n > 0 && (!compatible(b, batch[0], r) || rows + rows_of(r) > limit)) {
        prev = r;
        r = r->next;
        continue;
      }
      if (n == 0) until = deadline_of(r->enqueued_at, b->opt.config->batch_timeout_micros);
      batch[n++] = unlink_after(b, prev);
      rows += rows_of(batch[n - 1]);
      r = prev ? prev->next : b->head;
    }
    if (n == 0 || n == max || rows >= limit || b->stop || kiln_now() >= until) break;
    timed_wait(b, until);
  }
  b->forming = 0;
  pthread_cond_broadcast(&b->cond); /* the next gatherer may start */
  return n;
}

/* The smallest allowed batch size that holds `rows` (rows itself when none is given or fits). */
static int64_t padded_rows(const kx_batcher *b, int64_t rows) {
  const kiln_batching_config *c = b->opt.config;
  if (!b->opt.batching) return rows;
  for (int i = 0; i < c->n_allowed_batch_sizes; i++)
    if (c->allowed_batch_sizes[i] >= rows) return c->allowed_batch_sizes[i];
  return rows;
}

/* Copies the batch's inputs, one after the other along dimension 0, into the worker's buffers;
 * rows up to `padded` repeat the first row. */
static kiln_status merge_inputs(worker *w, kx_request **batch, int n, int64_t padded, kiln_tensor *merged) {
  kx_batcher *b = w->b;
  for (int i = 0; i < b->n_inputs; i++) {
    const kiln_tensor *first = &batch[0]->inputs[i];
    int64_t dims[KILN_MAX_RANK];
    memcpy(dims, first->dims, sizeof dims);
    dims[0] = padded;
    kiln_tensor *t = &merged[i];
    kiln_status s = kiln_tensor_set_shape(t, first->dtype, first->rank, dims);
    if (s) return s;
    size_t need = kiln_tensor_nbytes(t), row = (size_t)first->strides[0];
    if (need > w->scratch_cap[i]) {
      void *p = realloc(w->scratch[i], need);
      if (!p) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory merging a batch of %lld rows", (long long)padded);
      w->scratch[i] = p;
      w->scratch_cap[i] = need;
    }
    char *dst = w->scratch[i];
    for (int k = 0; k < n; k++) {
      size_t bytes = kiln_tensor_nbytes(&batch[k]->inputs[i]);
      if (bytes) memcpy(dst, batch[k]->inputs[i].data, bytes);
      dst += bytes;
    }
    for (char *end = (char *)w->scratch[i] + need; dst < end; dst += row) memcpy(dst, first->data, row);
    t->data = w->scratch[i];
    t->owner = NULL;
  }
  return NULL;
}

/* Each request's rows of the outputs, as views. Returns 0 when some output is not batch-major. */
static int split_outputs(const kx_batcher *b, const kiln_tensor *const *outputs, int64_t padded, int64_t offset,
                         int64_t rows, kiln_tensor *views, const kiln_tensor **ptrs) {
  for (int o = 0; o < b->n_outputs; o++) {
    const kiln_tensor *t = outputs[o];
    if (t->rank < 1 || t->dims[0] != padded) return 0;
    views[o] = *t;
    views[o].dims[0] = rows;
    views[o].data = t->data ? (char *)t->data + offset * t->strides[0] : NULL;
    views[o].owner = NULL;
    ptrs[o] = &views[o];
  }
  return 1;
}

static kiln_status run_one(worker *w, const kiln_tensor *inputs, const kiln_tensor **outputs) {
  for (int i = 0; i < w->b->n_inputs; i++) w->in[i] = &inputs[i];
  return kiln_session_run_tensors(w->session, w->in, outputs);
}

static void observe(kiln_metric *m, const kx_batcher *b, double v) { kiln_metric_observe(m, b->opt.labels, v); }

/* Runs the requests one by one (a single request, or a batch whose outputs are not batch-major). */
static void run_each(worker *w, kx_request **batch, int n, const kiln_tensor **outputs) {
  for (int k = 0; k < n; k++) {
    double t0 = kiln_now();
    kiln_status s = run_one(w, batch[k]->inputs, outputs);
    double t1 = kiln_now();
    batch[k]->run_start = t0;
    batch[k]->run_end = t1;
    batch[k]->batch_rows = rows_of(batch[k]);
    observe(w->b->opt.inference_seconds, w->b, t1 - t0);
    observe(w->b->opt.batch_size, w->b, (double)rows_of(batch[k]));
    finish(w->b, batch[k], s ? NULL : outputs, s);
  }
}

static void run_batch(worker *w, kx_request **batch, int n, kiln_tensor *merged, kiln_tensor *views,
                      const kiln_tensor **outputs, const kiln_tensor **ptrs) {
  kx_batcher *b = w->b;
  double start = kiln_now();
  int64_t rows = 0;
  for (int k = 0; k < n; k++) {
    observe(b->opt.queue_seconds, b, start - batch[k]->enqueued_at);
    rows += rows_of(batch[k]);
  }
  int64_t padded = padded_rows(b, rows);
  if (n == 1 && padded == rows) {
    run_each(w, batch, 1, outputs);
    return;
  }
  kiln_status s = merge_inputs(w, batch, n, padded, merged);
  double run_start = kiln_now();
  if (!s) s = run_one(w, merged, outputs);
  double run_end = kiln_now();
  for (int k = 0; k < n; k++) {
    batch[k]->run_start = run_start;
    batch[k]->run_end = run_end;
    batch[k]->batch_rows = padded;
  }
  observe(b->opt.inference_seconds, b, run_end - start);
  observe(b->opt.batch_size, b, (double)padded);
  if (s) {
    for (int k = 0; k < n; k++) {
      kiln_status e = k + 1 < n ? kiln_error(kiln_status_code(s), "%s", kiln_status_message(s)) : s;
      finish(b, batch[k], NULL, e);
    }
    return;
  }
  int64_t offset = 0;
  for (int k = 0; k < n; k++) {
    if (!split_outputs(b, outputs, padded, offset, rows_of(batch[k]), views, ptrs)) {
      run_each(w, batch + k, n - k, outputs); /* outputs not batch-major: no merging for this model */
      return;
    }
    offset += rows_of(batch[k]);
    finish(b, batch[k], ptrs, NULL);
  }
}

static kiln_status warm_up(worker *w) {
  kx_batcher *b = w->b;
  const kiln_tensor **outputs = calloc((size_t)b->n_outputs + 1, sizeof *outputs);
  if (!outputs) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  kiln_status s = NULL;
  for (int r = 0; r < b->opt.n_warmup && !s; r++)
    for (int k = 0; k < b->opt.warmup_runs && !s; k++) {
      s = run_one(w, b->opt.warmup[r], outputs);
      if (!s && k == 0 && kx_outputs_nonfinite(outputs, b->n_outputs)) atomic_store(&b->warmup_nonfinite, 1);
    }
  free(outputs);
  return s ? kiln_status_prefix(s, "warm-up: ") : NULL;
}

static void *worker_main(void *arg) {
  worker *w = arg;
  kx_batcher *b = w->b;
  kiln_session_options so = {.pool = b->opt.pool, .threads = b->opt.intra_op_threads};
  kiln_status s = kiln_session_create(b->model, &so, &w->session);
  if (!s) s = warm_up(w);
  pthread_mutex_lock(&b->lock);
  if (s) {
    if (!b->warmup_error) b->warmup_error = s;
    else kiln_status_free(s);
    b->failed++;
  } else {
    b->ready++;
  }
  pthread_cond_broadcast(&b->cond);
  pthread_mutex_unlock(&b->lock);

  int max = b->opt.batching ? (int)b->opt.config->max_batch_size : 1;
  kx_request **batch = calloc((size_t)max, sizeof *batch);
  kiln_tensor *merged = calloc((size_t)b->n_inputs + 1, sizeof *merged);
  kiln_tensor *views = calloc((size_t)b->n_outputs + 1, sizeof *views);
  const kiln_tensor **outputs = calloc((size_t)b->n_outputs + 1, sizeof *outputs);
  const kiln_tensor **ptrs = calloc((size_t)b->n_outputs + 1, sizeof *ptrs);
  int ok = batch && merged && views && outputs && ptrs && w->session;
  pthread_mutex_lock(&b->lock);
  for (;;) {
    kx_request *expired = NULL;
    int n = ok ? gather(b, batch, max, &expired) : 0;
    if (!n && !expired && (b->stop || !ok)) break;
    pthread_mutex_unlock(&b->lock);
    while (expired) {
      kx_request *e = expired;
      expired = e->next;
      int cancelled = kiln_now() <= e->deadline;
      finish(b, e, NULL, cancelled ? kiln_error(KILN_CANCELLED, "the client cancelled the request")
                                   : kiln_error(KILN_DEADLINE_EXCEEDED, "request waited longer than its deadline"));
    }
    double t0 = kiln_now();
    if (n) run_batch(w, batch, n, merged, views, outputs, ptrs);
    double took = kiln_now() - t0;
    pthread_mutex_lock(&b->lock);
    if (n) b->run_seconds += 0.1 * (took - b->run_seconds);
  }
  pthread_mutex_unlock(&b->lock);
  free(batch);
  free(merged);
  free(views);
  free(outputs);
  free(ptrs);
  return NULL;
}

kiln_status kx_batcher_start(const kiln_model *m, const kx_batcher_options *opt, kx_batcher **out) {
  *out = NULL;
  kx_batcher *b = calloc(1, sizeof *b);
  if (!b) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  atomic_init(&b->warmup_nonfinite, 0);
  b->model = m;
  b->opt = *opt;
  if (b->opt.workers < 1) b->opt.workers = 1;
  if (b->opt.batching && b->opt.config->max_batch_size < 1) b->opt.batching = 0;
  b->n_inputs = kiln_model_input_count(m);
  b->n_outputs = kiln_model_output_count(m);
  pthread_mutex_init(&b->lock, NULL);
  pthread_cond_init(&b->cond, NULL);
  b->workers = calloc((size_t)b->opt.workers, sizeof *b->workers);
  if (!b->workers) {
    kx_batcher_free(b);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  }
  int started = 0;
  for (int i = 0; i < b->opt.workers; i++) {
    worker *w = &b->workers[i];
    w->b = b;
    w->scratch = calloc((size_t)b->n_inputs + 1, sizeof *w->scratch);
    w->scratch_cap = calloc((size_t)b->n_inputs + 1, sizeof *w->scratch_cap);
    w->in = calloc((size_t)b->n_inputs + 1, sizeof *w->in);
    if (!w->scratch || !w->scratch_cap || !w->in || pthread_create(&w->thread, NULL, worker_main, w) != 0) break;
    w->started = 1;
    started++;
  }
  pthread_mutex_lock(&b->lock);
  if (started < b->opt.workers) b->failed += b->opt.workers - started;
  while (b->ready + b->failed < b->opt.workers) pthread_cond_wait(&b->cond, &b->lock);
  kiln_status s = b->warmup_error;
  b->warmup_error = NULL;
  if (!s && b->failed) s = kiln_error(KILN_RESOURCE_EXHAUSTED, "could not start %d inference threads", b->opt.workers);
  pthread_mutex_unlock(&b->lock);
  if (s) {
    kx_batcher_free(b);
    return s;
  }
  *out = b;
  return NULL;
}

int kx_batcher_submit(kx_batcher *b, kx_request *req) {
  pthread_mutex_lock(&b->lock);
  if (b->queued >= b->opt.max_queue || b->stop) {
    pthread_mutex_unlock(&b->lock);
    return -1;
  }
  req->next = NULL;
  req->enqueued_at = kiln_now();
  if (b->tail) b->tail->next = req;
  else b->head = req;
  b->tail = req;
  b->queued++;
  /* Batching: the gathering worker must hear of it as well as the idle ones. Otherwise a sleeping
   * worker is woken when no worker is awake, or when the queue holds more than WAKE_BACKLOG_S of
   * work for the awake ones: a small model's requests then flow through one awake worker instead
   * of paying a wake-up (and a core taken from the I/O threads) each. */
  int awake = b->opt.workers - b->waiting;
  if (b->opt.batching) pthread_cond_broadcast(&b->cond);
  else if (b->waiting && (awake == 0 || b->queued * b->run_seconds > WAKE_BACKLOG_S * awake))
    pthread_cond_signal(&b->cond);
  pthread_mutex_unlock(&b->lock);
  return 0;
}

void kx_batcher_free(kx_batcher *b) {
  if (!b) return;
  pthread_mutex_lock(&b->lock);
  b->stop = 1;
  pthread_cond_broadcast(&b->cond);
  pthread_mutex_unlock(&b->lock);
  for (int i = 0; b->workers && i < b->opt.workers; i++) {
    worker *w = &b->workers[i];
    if (w->started) pthread_join(w->thread, NULL);
    kiln_session_free(w->session);
    for (int k = 0; w->scratch && k < b->n_inputs; k++) free(w->scratch[k]);
    free(w->scratch);
    free(w->scratch_cap);
    free(w->in);
  }
  /* workers that failed to start leave requests behind only if none ever ran: answer them */
  while (b->head) {
    kx_request *r = unlink_after(b, NULL);
    finish(b, r, NULL, kiln_error(KILN_UNAVAILABLE, "the model version is being unloaded"));
  }
  kiln_status_free(b->warmup_error);
  free(b->workers);
  pthread_cond_destroy(&b->cond);
  pthread_mutex_destroy(&b->lock);
  free(b);
}

int kx_batcher_warmup_nonfinite(const kx_batcher *b) { return atomic_load(&b->warmup_nonfinite); }
