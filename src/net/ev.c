/* The epoll event loop (see ev.h): descriptors in a table indexed by fd as in redis' ae.c,
 * timers in a binary min-heap that knows each timer's position (so re-arming is O(log n)), and
 * a mutex-protected job list that other threads append to and wake the loop with an eventfd. */
#include "net/ev.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define EV_BATCH 256

typedef struct ev_file {
  int registered;
  uint64_t round; /* the loop round it was added in: that round's events predate it */
  int mask; /* EV_READABLE | EV_WRITABLE */
  ev_io_fn fn;
  void *arg;
} ev_file;

struct ev_loop {
  int epfd;
  int wakefd; /* eventfd: a write makes epoll_wait return */
  atomic_int stop;
  uint64_t round; /* epoll_wait calls so far */
  ev_file *files; /* indexed by fd */
  size_t nfiles;
  ev_timer **heap;
  size_t nheap, capheap;
  pthread_mutex_t mu; /* guards jobs_head / jobs_tail */
  ev_job *jobs_head, *jobs_tail;
};

int64_t ev_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------- create / free */

kiln_status ev_loop_create(ev_loop **out) {
  *out = NULL;
  ev_loop *l = calloc(1, sizeof *l);
  if (!l) return kiln_error(KILN_RESOURCE_EXHAUSTED, "event loop: out of memory");
  l->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (l->epfd < 0) {
    kiln_status s = kiln_error(KILN_UNAVAILABLE, "epoll_create1: %s", strerror(errno));
    free(l);
    return s;
  }
  l->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = -1};
  if (l->wakefd < 0 || epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->wakefd, &ev) != 0) {
    kiln_status s = kiln_error(KILN_UNAVAILABLE, "eventfd: %s", strerror(errno));
    if (l->wakefd >= 0) close(l->wakefd);
    close(l->epfd);
    free(l);
    return s;
  }
  int rc = pthread_mutex_init(&l->mu, NULL);
  if (rc != 0) {
    close(l->wakefd);
    close(l->epfd);
    free(l);
    return kiln_error(KILN_UNAVAILABLE, "pthread_mutex_init: %s", strerror(rc));
  }
  atomic_init(&l->stop, 0);
  *out = l;
  return NULL;
}

void ev_loop_free(ev_loop *l) {
  if (!l) return;
  /* Taking the lock orders this thread after every poster's writes to the jobs it queued. */
  pthread_mutex_lock(&l->mu);
  l->jobs_head = l->jobs_tail = NULL;
  pthread_mutex_unlock(&l->mu);
  pthread_mutex_destroy(&l->mu);
  close(l->wakefd);
  close(l->epfd);
  free(l->files);
  free(l->heap);
  free(l);
}

/* ---------------------------------------------------------------- descriptors */

static uint32_t epoll_events(int mask) {
  uint32_t e = 0;
  if (mask & EV_READABLE) e |= EPOLLIN;
  if (mask & EV_WRITABLE) e |= EPOLLOUT;
  return e;
}

/* Makes files[fd] addressable. */
static int grow_files(ev_loop *l, int fd) {
  if ((size_t)fd < l->nfiles) return 0;
  size_t n = l->nfiles ? l->nfiles : 64;
  while (n <= (size_t)fd) n *= 2;
  ev_file *f = realloc(l->files, n * sizeof *f);
  if (!f) {
    errno = ENOMEM;
    return -1;
  }
  memset(f + l->nfiles, 0, (n - l->nfiles) * sizeof *f);
  l->files = f;
  l->nfiles = n;
  return 0;
}

int ev_add(ev_loop *l, int fd, int mask, ev_io_fn fn, void *arg) {
  if (fd < 0) {
    errno = EBADF;
    return -1;
  }
  if (grow_files(l, fd) != 0) return -1;
  struct epoll_event ev = {.events = epoll_events(mask), .data.fd = fd};
  if (mask & EV_EXCLUSIVE) ev.events |= EPOLLEXCLUSIVE;
  if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) return -1;
  l->files[fd] = (ev_file){.registered = 1, .round = l->round, .mask = mask & (EV_READABLE | EV_WRITABLE), .fn = fn, .arg = arg};
  return 0;
}

int ev_set(ev_loop *l, int fd, int mask) {
  if (fd < 0 || (size_t)fd >= l->nfiles || !l->files[fd].registered) {
    errno = EBADF;
    return -1;
  }
  mask &= EV_READABLE | EV_WRITABLE;
  if (l->files[fd].mask == mask) return 0;
  struct epoll_event ev = {.events = epoll_events(mask), .data.fd = fd};
  if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev) != 0) return -1;
  l->files[fd].mask = mask;
  return 0;
}

void ev_remove(ev_loop *l, int fd) {
  if (fd < 0 || (size_t)fd >= l->nfiles || !l->files[fd].registered) return;
  /* Fails only when fd is already closed, which removed it from the epoll set anyway. */
  (void)epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
  l->files[fd] = (ev_file){0};
}

/* ---------------------------------------------------------------- timers */

void ev_timer_init(ev_timer *t, ev_timer_fn fn, void *arg) {
  t->deadline_ms = 0;
  t->index = SIZE_MAX;
  t->fn = fn;
  t->arg = arg;
}

int ev_timer_armed(const ev_timer *t) { return t->index != SIZE_MAX; }

static void heap_place(ev_loop *l, size_t i, ev_timer *t) {
  l->heap[i] = t;
  t->index = i;
}

static void heap_up(ev_loop *l, size_t i) {
  ev_timer *t = l->heap[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (l->heap[parent]->deadline_ms <= t->deadline_ms) break;
    heap_place(l, i, l->heap[parent]);
    i = parent;
  }
  heap_place(l, i, t);
}

static void heap_down(ev_loop *l, size_t i) {
  ev_timer *t = l->heap[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= l->nheap) break;
    if (c + 1 < l->nheap && l->heap[c + 1]->deadline_ms < l->heap[c]->deadline_ms) c++;
    if (t->deadline_ms <= l->heap[c]->deadline_ms) break;
    heap_place(l, i, l->heap[c]);
    i = c;
  }
  heap_place(l, i, t);
}

void ev_timer_stop(ev_loop *l, ev_timer *t) {
  if (t->index == SIZE_MAX) return;
  size_t i = t->index;
  t->index = SIZE_MAX;
  l->nheap--;
  if (i == l->nheap) return;
  ev_timer *last = l->heap[l->nheap];
  heap_place(l, i, last);
  heap_up(l, i);
  if (last->index == i) heap_down(l, i);
}

int ev_timer_start(ev_loop *l, ev_timer *t, int64_t ms) {
  ev_timer_stop(l, t);
  if (l->nheap == l->capheap) {
    size_t cap = l->capheap ? l->capheap * 2 : 64;
    ev_timer **h = realloc(l->heap, cap * sizeof *h);
    if (!h) return -1;
    l->heap = h;
    l->capheap = cap;
  }
  t->deadline_ms = ev_now_ms() + (ms > 0 ? ms : 0);
  heap_place(l, l->nheap++, t);
  heap_up(l, t->index);
  return 0;
}

/* Milliseconds epoll_wait may sleep: until the first deadline, -1 when there is none. */
static int wait_ms(ev_loop *l) {
  if (l->nheap == 0) return -1;
  int64_t d = l->heap[0]->deadline_ms - ev_now_ms();
  if (d <= 0) return 0;
  return d > 60000 ? 60000 : (int)d;
}

static void run_timers(ev_loop *l) {
  int64_t now = ev_now_ms();
  while (l->nheap > 0 && l->heap[0]->deadline_ms <= now) {
    ev_timer *t = l->heap[0];
    ev_timer_stop(l, t);
    t->fn(l, t->arg);
  }
}

/* ---------------------------------------------------------------- jobs */

static void wake(ev_loop *l) {
  uint64_t one = 1;
  /* EAGAIN means the counter is already non-zero: the loop wakes anyway. */
  ssize_t n = write(l->wakefd, &one, sizeof one);
  (void)n;
}

void ev_post(ev_loop *l, ev_job *job) {
  job->next = NULL;
  pthread_mutex_lock(&l->mu);
  int was_empty = l->jobs_head == NULL;
  if (l->jobs_tail) l->jobs_tail->next = job;
  else l->jobs_head = job;
  l->jobs_tail = job;
  pthread_mutex_unlock(&l->mu);
  /* A non-empty list has a wake-up pending or is about to be taken by the loop. */
  if (was_empty) wake(l);
}

static void run_jobs(ev_loop *l) {
  pthread_mutex_lock(&l->mu);
  ev_job *j = l->jobs_head;
  l->jobs_head = l->jobs_tail = NULL;
  pthread_mutex_unlock(&l->mu);
  while (j) {
    ev_job *next = j->next; /* j may be reused (even re-posted) by its callback */
    j->fn(l, j->arg);
    j = next;
  }
}

void ev_stop(ev_loop *l) {
  atomic_store(&l->stop, 1);
  wake(l);
}

/* ---------------------------------------------------------------- the loop */

static void dispatch(ev_loop *l, const struct epoll_event *e) {
  int fd = e->data.fd;
  if (fd < 0) {
    uint64_t n;
    ssize_t r = read(l->wakefd, &n, sizeof n); /* EAGAIN: another round drained it */
    (void)r;
    return;
  }
  if ((size_t)fd >= l->nfiles || !l->files[fd].registered) return; /* removed this round */
  ev_file *f = &l->files[fd];
  if (f->round == l->round) return; /* closed and its number reused this round */
  int ready = 0;
  if (e->events & (EPOLLIN | EPOLLRDHUP)) ready |= EV_READABLE;
  if (e->events & EPOLLOUT) ready |= EV_WRITABLE;
  if (e->events & (EPOLLHUP | EPOLLERR)) ready |= EV_HANGUP | EV_READABLE | EV_WRITABLE;
  ready &= f->mask | EV_HANGUP;
  if (ready) f->fn(l, fd, ready, f->arg);
}

void ev_run(ev_loop *l) {
  struct epoll_event events[EV_BATCH];
  while (!atomic_load(&l->stop)) {
    int n = epoll_wait(l->epfd, events, EV_BATCH, wait_ms(l));
    l->round++;
    if (n < 0 && errno != EINTR) {
      kiln_log(KILN_LOG_ERROR, "epoll_wait: %s", strerror(errno));
      return;
    }
    for (int i = 0; i < n; i++) dispatch(l, &events[i]);
    run_timers(l);
    run_jobs(l);
  }
}
