/* The I/O threads shared by kiln's servers (HTTP/1.1 in http.c, gRPC in grpc.c): N ev loops, each
 * on its own thread, one listening socket registered on every loop, accepting with a pause when
 * out of descriptors, and stopping to accept when the server drains. Connections are the
 * server's: the group hands each accepted socket to the server's callback on the loop's thread. */
#ifndef KILN_NET_IO_GROUP_H
#define KILN_NET_IO_GROUP_H

#include <pthread.h>

#include "kiln/core.h"
#include "net/ev.h"

typedef struct kx_io_group kx_io_group;
typedef struct kx_io kx_io;

/* One I/O thread and its loop. The server reads loop and data; the other fields are the group's. */
struct kx_io {
  ev_loop *loop;
  void *data; /* the server's per-loop state, set before kx_io_group_start */
  kx_io_group *group;
  pthread_t thread;
  int thread_started;
  int listening; /* the listener is registered in this loop */
  ev_timer accept_timer;
  ev_job stop_job;
};

/* What a server gives the group. Both callbacks run on io's thread. */
typedef struct kx_io_group_config {
  const char *what; /* "http", "grpc": prefixes errors and log lines */
  int threads;      /* loops, >= 1 */
  /* An accepted connection: the server now owns fd (non-blocking, close-on-exec, TCP_NODELAY);
   * peer is its address ("ip:port"). */
  void (*on_conn)(kx_io *io, int fd, const char *peer);
  /* The loop has stopped accepting (kx_io_group_stop_accepting): the server starts winding down
   * its connections on this loop. */
  void (*on_stop_accepting)(kx_io *io);
} kx_io_group_config;

/* The host, port and thread defaults both servers share: host "0.0.0.0" when unset, threads the
 * CPU count when <= 0; a port outside [0, 65535] is an error naming `what`. */
kiln_status kx_io_group_defaults(const char *what, const char **host, int port, int *threads);

/* Creates cfg->threads loops with listen_fd registered on each (EV_EXCLUSIVE), threads not yet
 * running. The group owns listen_fd from here on, also on error. On error *out may still hold a
 * group: free it with kx_io_group_free. */
kiln_status kx_io_group_create(const kx_io_group_config *cfg, int listen_fd, kx_io_group **out);

/* The loops, index 0 .. kx_io_group_size - 1. */
int kx_io_group_size(const kx_io_group *g);
kx_io *kx_io_group_io(kx_io_group *g, int i);

/* Starts one thread per loop; none of them runs a callback before all are created. */
kiln_status kx_io_group_start(kx_io_group *g);

/* Whether the caller runs on io's thread (where io's connections may be touched directly). */
int kx_io_on_thread(const kx_io *io);

/* Whether kx_io_group_stop_accepting has been called; any thread. */
int kx_io_group_draining(kx_io_group *g);

/* Stops accepting, once: every loop drops the listener (the last one closes it) and calls
 * on_stop_accepting. Returns when the listener is closed, except on an I/O thread, which cannot
 * wait for its own loop and returns at once. */
void kx_io_group_stop_accepting(kx_io_group *g);

/* A socket for kx_http_serve_fd and the like: makes fd non-blocking and picks its loop (round
 * robin). The caller then posts its adoption to (*io)->loop. */
kiln_status kx_io_group_adopt(kx_io_group *g, int fd, kx_io **io);

/* Stops every loop and joins its thread. The loops stay (for the server to free the connections
 * on them) until kx_io_group_free. */
void kx_io_group_join(kx_io_group *g);

/* Joins (if not done yet), frees the loops and closes the listener if still open. NULL is fine. */
void kx_io_group_free(kx_io_group *g);

#endif
