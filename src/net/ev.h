/* The event loop under kiln's network servers: epoll, one-shot timers and a thread-safe job
 * queue woken through an eventfd. One loop per I/O thread; nothing in it is shared between loops
 * except through ev_post, ev_wake and ev_stop, the only functions other threads may call. */
#ifndef KILN_NET_EV_H
#define KILN_NET_EV_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/core.h"

typedef struct ev_loop ev_loop;

/* Interest and readiness bits. EV_HANGUP (EPOLLHUP or EPOLLERR) is only ever delivered, even to a
 * descriptor registered with no interest; EV_EXCLUSIVE is only accepted by ev_add. */
#define EV_READABLE 1
#define EV_WRITABLE 2
#define EV_HANGUP 4
#define EV_EXCLUSIVE 8

/* Called with the ready bits of `fd` (masked by its interest, plus EV_HANGUP). */
typedef void (*ev_io_fn)(ev_loop *loop, int fd, int ready, void *arg);
typedef void (*ev_timer_fn)(ev_loop *loop, void *arg);
typedef void (*ev_job_fn)(ev_loop *loop, void *arg);

/* A one-shot timer, owned (usually embedded) by its user; initialise with ev_timer_init. */
typedef struct ev_timer {
  int64_t deadline_ms; /* on ev_now_ms's clock */
  size_t index;        /* position in the loop's heap; SIZE_MAX when not armed */
  ev_timer_fn fn;
  void *arg;
} ev_timer;

/* A unit of work posted to a loop from any thread, owned by the poster; it must stay alive until
 * it has run (or the loop has been freed). A job may be posted again once it has run. */
typedef struct ev_job {
  ev_job_fn fn;
  void *arg;
  struct ev_job *next;
} ev_job;

/* Creates a loop (epoll instance, eventfd, empty timer heap). */
kiln_status ev_loop_create(ev_loop **out);
/* Frees the loop; registered descriptors are not closed, jobs still queued never run. Not while
 * ev_run is running on it. */
void ev_loop_free(ev_loop *l);

/* Runs callbacks until ev_stop: per round, the ready descriptors, then due timers, then the
 * posted jobs (so a timer or job may free objects other descriptors of the round point to). */
void ev_run(ev_loop *l);
/* Makes ev_run return after its current round; any thread. */
void ev_stop(ev_loop *l);

/* Registers fd with interest `mask` (EV_READABLE | EV_WRITABLE, 0 allowed, plus EV_EXCLUSIVE for
 * a listening socket shared by several loops). Returns 0, or -1 with errno set. */
int ev_add(ev_loop *l, int fd, int mask, ev_io_fn fn, void *arg);
/* Changes the interest of a registered fd; 0 or -1 with errno set. */
int ev_set(ev_loop *l, int fd, int mask);
/* Unregisters fd (before it is closed); events of the current round for it are dropped. */
void ev_remove(ev_loop *l, int fd);

void ev_timer_init(ev_timer *t, ev_timer_fn fn, void *arg);
/* Arms (or re-arms) t to fire once, `ms` milliseconds from now. 0, or -1 when out of memory. */
int ev_timer_start(ev_loop *l, ev_timer *t, int64_t ms);
/* Disarms t; harmless when it is not armed. */
void ev_timer_stop(ev_loop *l, ev_timer *t);
int ev_timer_armed(const ev_timer *t);

/* Queues job->fn(loop, job->arg) to run on the loop's thread and wakes the loop; any thread. */
void ev_post(ev_loop *l, ev_job *job);

/* Monotonic clock in milliseconds. */
int64_t ev_now_ms(void);

#endif
