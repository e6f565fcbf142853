/* The I/O threads shared by kiln's servers (see io_group.h): loops, threads, the listener on every
 * loop and its pause, stop and close. What happens to an accepted socket is the server's. */
#include "net/io_group.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net/listen.h"

#define ACCEPTS_PER_EVENT 64
#define ACCEPT_PAUSE_MS 100 /* out of descriptors: retry accepting after this */

struct kx_io_group {
  kx_io_group_config cfg;
  int nio;
  kx_io *io;
  pthread_mutex_t mu; /* start gate; listen_fd and listeners once threads run */
  pthread_cond_t cv;
  int mu_ready;
  int listen_fd;
  int listeners; /* loops that still have the listener registered */
  int joined;
  atomic_int stop_once, draining;
  atomic_uint next_io;
};

kiln_status kx_io_group_defaults(const char *what, const char **host, int port, int *threads) {
  if (!*host || !**host) *host = "0.0.0.0";
  if (port < 0 || port > 65535)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s port must be in [0, 65535], got %d", what, port);
  if (*threads <= 0) *threads = kiln_cpu_count();
  if (*threads <= 0) *threads = 1;
  return NULL;
}

static void on_accept(ev_loop *l, int fd, int ready, void *arg);

static int io_listen(kx_io *io) {
  if (ev_add(io->loop, io->group->listen_fd, EV_READABLE | EV_EXCLUSIVE, on_accept, io) != 0) return -1;
  io->listening = 1;
  return 0;
}

static void io_unlisten(kx_io *io) {
  if (io->listening) ev_remove(io->loop, io->group->listen_fd);
  io->listening = 0;
}

static void on_accept_resume(ev_loop *l, void *arg) {
  kx_io *io = arg;
  if (atomic_load(&io->group->draining) || io->listening) return;
  if (io_listen(io) != 0 && ev_timer_start(l, &io->accept_timer, ACCEPT_PAUSE_MS) != 0)
    kiln_log(KILN_LOG_ERROR, "%s: cannot resume accepting: %s", io->group->cfg.what, strerror(errno));
}

static void on_accept(ev_loop *l, int fd, int ready, void *arg) {
  kx_io *io = arg;
  const kx_io_group_config *cfg = &io->group->cfg;
  for (int i = 0; i < ACCEPTS_PER_EVENT; i++) {
    char peer[64];
    int cfd = kx_accept(fd, peer, sizeof peer, cfg->what);
    if (cfd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      /* out of descriptors or memory: the listener would stay readable, so step back a while */
      kiln_log(KILN_LOG_WARN, "%s: accept: %s; pausing for %d ms", cfg->what, strerror(errno), ACCEPT_PAUSE_MS);
      io_unlisten(io);
      if (ev_timer_start(l, &io->accept_timer, ACCEPT_PAUSE_MS) != 0)
        kiln_log(KILN_LOG_ERROR, "%s: cannot schedule accepting again", cfg->what);
      return;
    }
    cfg->on_conn(io, cfd, peer);
  }
}

/* On each loop: drop the listener (the last loop closes it), then the server's hook. */
static void io_on_stop_accepting(ev_loop *l, void *arg) {
  kx_io *io = arg;
  kx_io_group *g = io->group;
  io_unlisten(io);
  ev_timer_stop(l, &io->accept_timer);
  pthread_mutex_lock(&g->mu);
  if (--g->listeners == 0) {
    close(g->listen_fd);
    g->listen_fd = -1;
    pthread_cond_broadcast(&g->cv);
  }
  pthread_mutex_unlock(&g->mu);
  g->cfg.on_stop_accepting(io);
}

int kx_io_on_thread(const kx_io *io) { return io->thread_started && pthread_equal(pthread_self(), io->thread); }

int kx_io_group_draining(kx_io_group *g) { return atomic_load(&g->draining); }

void kx_io_group_stop_accepting(kx_io_group *g) {
  if (atomic_exchange(&g->stop_once, 1)) return;
  atomic_store(&g->draining, 1);
  int inside = 0;
  for (int i = 0; i < g->nio; i++) {
    inside |= kx_io_on_thread(&g->io[i]);
    ev_post(g->io[i].loop, &g->io[i].stop_job);
  }
  if (inside) return; /* an I/O thread cannot wait for its own loop */
  pthread_mutex_lock(&g->mu);
  while (g->listeners > 0) pthread_cond_wait(&g->cv, &g->mu);
  pthread_mutex_unlock(&g->mu);
}

kiln_status kx_io_group_create(const kx_io_group_config *cfg, int listen_fd, kx_io_group **out) {
  *out = NULL;
  kx_io_group *g = calloc(1, sizeof *g);
  if (!g) {
    close(listen_fd);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: out of memory", cfg->what);
  }
  g->cfg = *cfg;
  g->listen_fd = listen_fd;
  *out = g;
  if (pthread_mutex_init(&g->mu, NULL) != 0)
    return kiln_error(KILN_UNAVAILABLE, "%s server: cannot create a mutex", cfg->what);
  if (pthread_cond_init(&g->cv, NULL) != 0) {
    pthread_mutex_destroy(&g->mu);
    return kiln_error(KILN_UNAVAILABLE, "%s server: cannot create a mutex", cfg->what);
  }
  g->mu_ready = 1;
  g->io = calloc((size_t)cfg->threads, sizeof *g->io);
  if (!g->io) return kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: out of memory", cfg->what);
  for (int i = 0; i < cfg->threads; i++) {
    kx_io *io = &g->io[i];
    io->group = g;
    ev_timer_init(&io->accept_timer, on_accept_resume, io);
    io->stop_job = (ev_job){.fn = io_on_stop_accepting, .arg = io};
    kiln_status st = ev_loop_create(&io->loop);
    if (st) return st;
    g->nio++;
    if (io_listen(io) != 0) return kiln_error(KILN_UNAVAILABLE, "%s: epoll_ctl: %s", cfg->what, strerror(errno));
    g->listeners++;
  }
  return NULL;
}

int kx_io_group_size(const kx_io_group *g) { return g->nio; }

kx_io *kx_io_group_io(kx_io_group *g, int i) { return &g->io[i]; }

static void *io_main(void *arg) {
  kx_io *io = arg;
  /* the start gate: every io->thread has been written by the time this lock is free */
  pthread_mutex_lock(&io->group->mu);
  pthread_mutex_unlock(&io->group->mu);
  ev_run(io->loop);
  return NULL;
}

kiln_status kx_io_group_start(kx_io_group *g) {
  pthread_mutex_lock(&g->mu);
  kiln_status st = NULL;
  for (int i = 0; i < g->nio && !st; i++) {
    int rc = pthread_create(&g->io[i].thread, NULL, io_main, &g->io[i]);
    if (rc != 0) st = kiln_error(KILN_UNAVAILABLE, "%s: pthread_create: %s", g->cfg.what, strerror(rc));
    else g->io[i].thread_started = 1;
  }
  pthread_mutex_unlock(&g->mu);
  return st;
}

kiln_status kx_io_group_adopt(kx_io_group *g, int fd, kx_io **io) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: fd %d: %s", g->cfg.what, fd, strerror(errno));
  *io = &g->io[atomic_fetch_add(&g->next_io, 1) % (unsigned)g->nio];
  return NULL;
}

void kx_io_group_join(kx_io_group *g) {
  if (!g || g->joined) return;
  g->joined = 1;
  for (int i = 0; i < g->nio; i++)
    if (g->io[i].thread_started) ev_stop(g->io[i].loop);
  for (int i = 0; i < g->nio; i++)
    if (g->io[i].thread_started) pthread_join(g->io[i].thread, NULL);
}

void kx_io_group_free(kx_io_group *g) {
  if (!g) return;
  kx_io_group_join(g);
  for (int i = 0; i < g->nio; i++) ev_loop_free(g->io[i].loop);
  if (g->listen_fd >= 0) close(g->listen_fd);
  free(g->io);
  if (g->mu_ready) {
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
  }
  free(g);
}
