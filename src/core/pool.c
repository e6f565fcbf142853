/* The process's thread pool. Jobs are ranges split into chunks; the caller of parallel_for runs
 * chunks of its own job too, so a job finishes even when every worker is busy elsewhere (several
 * model runs may share the pool). Workers spin briefly before sleeping, which keeps the wake-up
 * latency of back-to-back kernels low. */
#include "kiln/core.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

/* Work (cost x items) below which splitting a job costs more than it saves. */
#define MIN_WORK_PER_THREAD 32768.0
#define SPIN_ROUNDS 20000

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

typedef struct job {
  kiln_range_fn fn;
  void *arg;
  int64_t n, chunk, nchunks;
  atomic_llong next; /* next unclaimed chunk */
  atomic_llong done; /* chunks finished */
  int active;        /* workers inside the job; guarded by the pool mutex */
  int max_workers;
  struct job *next_job;
} job;

struct kiln_pool {
  int threads;
  pthread_t *workers;
  int started;
  pthread_mutex_t mu;
  pthread_cond_t work_cv, done_cv;
  job *head;
  int sleepers;
  int stop;
  atomic_uint generation; /* bumped on every job push, watched by spinning workers */
  atomic_int spin;        /* pause rounds before sleeping (kiln_pool_set_spin) */
};

int kiln_cpu_count(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

int kiln_default_threads(void) {
  const char *env = getenv("KILN_NUM_THREADS");
  if (env && *env) {
    char *end;
    long n = strtol(env, &end, 10);
    if (*end == '\0' && n > 0 && n <= 1024) return (int)n;
  }
  return kiln_cpu_count();
}

static void run_chunks(job *j) {
  for (;;) {
    int64_t c = atomic_fetch_add(&j->next, 1);
    if (c >= j->nchunks) return;
    int64_t begin = c * j->chunk;
    int64_t end = begin + j->chunk < j->n ? begin + j->chunk : j->n;
    j->fn(j->arg, begin, end);
    atomic_fetch_add(&j->done, 1);
  }
}

static void unlink_job(kiln_pool *p, job *j) {
  for (job **at = &p->head; *at; at = &(*at)->next_job)
    if (*at == j) {
      *at = j->next_job;
      return;
    }
}

/* A queued job that still has unclaimed chunks and room for one more worker. */
static job *claimable(kiln_pool *p) {
  for (job *j = p->head; j; j = j->next_job)
    if (atomic_load(&j->next) < j->nchunks && j->active < j->max_workers) return j;
  return NULL;
}

static void *worker_main(void *arg) {
  kiln_pool *p = arg;
  unsigned seen = atomic_load(&p->generation);
  pthread_mutex_lock(&p->mu);
  while (!p->stop) {
    job *j = claimable(p);
    if (!j) {
      pthread_mutex_unlock(&p->mu);
      for (int i = 0, n = atomic_load(&p->spin); i < n && atomic_load(&p->generation) == seen; i++)
        cpu_relax();
      pthread_mutex_lock(&p->mu);
      if (atomic_load(&p->generation) == seen && !p->stop && !claimable(p)) {
        p->sleepers++;
        pthread_cond_wait(&p->work_cv, &p->mu);
        p->sleepers--;
      }
      seen = atomic_load(&p->generation);
      continue;
    }
    j->active++;
    pthread_mutex_unlock(&p->mu);
    run_chunks(j);
    pthread_mutex_lock(&p->mu);
    j->active--;
    unlink_job(p, j);
    if (j->active == 0) pthread_cond_broadcast(&p->done_cv);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

kiln_status kiln_pool_create(int threads, kiln_pool **out) {
  if (threads <= 0) threads = kiln_cpu_count();
  kiln_pool *p = calloc(1, sizeof *p);
  if (!p) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory creating the thread pool");
  p->threads = threads;
  atomic_init(&p->spin, SPIN_ROUNDS);
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->work_cv, NULL);
  pthread_cond_init(&p->done_cv, NULL);
  if (threads > 1) {
    p->workers = calloc((size_t)threads - 1, sizeof *p->workers);
    if (!p->workers) {
      kiln_pool_free(p);
      return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory creating the thread pool");
    }
    for (int i = 0; i < threads - 1; i++) {
      if (pthread_create(&p->workers[i], NULL, worker_main, p) != 0) {
        kiln_pool_free(p);
        return kiln_error(KILN_RESOURCE_EXHAUSTED, "cannot start worker thread %d of %d", i + 1, threads);
      }
      p->started++;
    }
  }
  *out = p;
  return NULL;
}

void kiln_pool_free(kiln_pool *p) {
  if (!p) return;
  pthread_mutex_lock(&p->mu);
  p->stop = 1;
  atomic_fetch_add(&p->generation, 1);
  pthread_cond_broadcast(&p->work_cv);
  pthread_mutex_unlock(&p->mu);
  for (int i = 0; i < p->started; i++) pthread_join(p->workers[i], NULL);
  free(p->workers);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->work_cv);
  pthread_cond_destroy(&p->done_cv);
  free(p);
}

int kiln_pool_threads(const kiln_pool *p) { return p ? p->threads : 1; }

void kiln_pool_set_spin(kiln_pool *p, int rounds) { atomic_store(&p->spin, rounds > 0 ? rounds : 0); }

void kiln_parallel_for(kiln_pool *p, int max_threads, int64_t n, double cost, kiln_range_fn fn,
                       void *arg) {
  if (n <= 0) return;
  int threads = p ? p->threads : 1;
  if (max_threads > 0 && max_threads < threads) threads = max_threads;
  double work = (double)n * (cost > 0 ? cost : 1);
  if ((double)threads * MIN_WORK_PER_THREAD > work) threads = (int)(work / MIN_WORK_PER_THREAD);
  if (threads > n) threads = (int)n;
  if (threads <= 1) {
    fn(arg, 0, n);
    return;
  }
  /* A few chunks per thread even out uneven progress without much claiming traffic. */
  int64_t nchunks = (int64_t)threads * 4 < n ? (int64_t)threads * 4 : n;
  job j = {.fn = fn, .arg = arg, .n = n, .max_workers = threads - 1};
  j.chunk = (n + nchunks - 1) / nchunks;
  j.nchunks = (n + j.chunk - 1) / j.chunk;
  atomic_init(&j.next, 0);
  atomic_init(&j.done, 0);

  pthread_mutex_lock(&p->mu);
  j.next_job = p->head;
  p->head = &j;
  atomic_fetch_add(&p->generation, 1);
  if (p->sleepers) pthread_cond_broadcast(&p->work_cv);
  pthread_mutex_unlock(&p->mu);

  run_chunks(&j);

  for (int i = 0, n = atomic_load(&p->spin); i < n && atomic_load(&j.done) < j.nchunks; i++) cpu_relax();
  pthread_mutex_lock(&p->mu);
  unlink_job(p, &j);
  while (atomic_load(&j.done) < j.nchunks || j.active > 0) pthread_cond_wait(&p->done_cv, &p->mu);
  pthread_mutex_unlock(&p->mu);
}
