/* The gRPC server of include/kiln/net.h, its transport: on the I/O threads of io_group.c (one ev
 * loop each, as under http.c), per connection one nghttp2 server session (cleartext HTTP/2 with prior
 * knowledge, as gRPC's insecure channels speak it) fed from recv() and written with send(). The
 * gRPC calls on the session's streams live in grpc_call.c.
 *
 * A connection and its streams are only touched on the I/O thread that accepted it. It closes
 * when the client closes (its calls are cancelled), after an idle period with no call open, when
 * the client stops reading for that long, or, once the server drains, when its last call is done
 * (after a graceful GOAWAY: a shutdown notice, a PING, then the final GOAWAY). */
#include "kiln/net.h"

#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/grpc_call.h"
#include "net/grpc_internal.h"
#include "net/listen.h"

#define READ_CHUNK 65536
#define READS_PER_EVENT 16 /* then other connections get their turn */
#define LINGER_MS 1000             /* longest wait for the client to close after our GOAWAY */
#define OUT_HIGH (256 * 1024)      /* output queued beyond this: stop making frames and reading */
#define STREAM_WINDOW (1 << 20)    /* per stream, so a large tensor flows without WINDOW_UPDATEs */
#define CONNECTION_WINDOW (16 << 20)
#define DRAIN_GOAWAY_MS 1000       /* shutdown notice to final GOAWAY, when the PING goes unanswered */
#define KEEP_BUFFER (1 << 20)      /* an output buffer larger than this is freed once written */

/* ---------------------------------------------------------------- nghttp2 callbacks */

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
  kx_grpc_conn *c = user_data;
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  kiln_grpc_call *call = kx_grpc_call_new(c, frame->hd.stream_id);
  if (!call) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
  nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, call);
  return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data) {
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  kiln_grpc_call *call = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
  if (call) kx_grpc_call_header(call, frame->headers.cat == NGHTTP2_HCAT_REQUEST, name, namelen, value, valuelen);
  return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
  kx_grpc_conn *c = user_data;
  if (frame->hd.type == NGHTTP2_PING && (frame->hd.flags & NGHTTP2_FLAG_ACK) && c->goaway_notice && !c->goaway_final) {
    /* the client has seen the shutdown notice: streams it opens from now on are refused */
    c->goaway_final = 1;
    nghttp2_submit_goaway(session, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(session),
                          NGHTTP2_NO_ERROR, NULL, 0);
    return 0;
  }
  if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
  kiln_grpc_call *call = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
  if (!call) return 0;
  if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) kx_grpc_call_begin(call);
  if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && call->conn) kx_grpc_call_half_close(call);
  return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t len,
                         void *user_data) {
  kiln_grpc_call *call = nghttp2_session_get_stream_user_data(session, stream_id);
  if (call && call->accepted) kx_grpc_call_data(call, data, len);
  return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
  if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) || !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
    return 0;
  kiln_grpc_call *call = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
  if (call) call->end_sent = 1;
  /* The answer is complete while the client is still sending: tell it to stop (as gRPC servers do). */
  if (nghttp2_session_get_stream_remote_close(session, frame->hd.stream_id) == 0)
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
  return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user_data) {
  kiln_grpc_call *call = nghttp2_session_get_stream_user_data(session, stream_id);
  if (!call) return 0;
  kx_grpc_call_release_stream(call);
  return 0;
}

static kiln_status make_callbacks(nghttp2_session_callbacks **out) {
  if (nghttp2_session_callbacks_new(out) != 0) return kiln_error(KILN_RESOURCE_EXHAUSTED, "grpc: out of memory");
  nghttp2_session_callbacks *cb = *out;
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
  nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
  return NULL;
}

/* ---------------------------------------------------------------- connections */

static void conn_on_event(ev_loop *l, int fd, int ready, void *arg);
static void conn_on_timer(ev_loop *l, void *arg);
static void conn_on_drain_timer(ev_loop *l, void *arg);

static kx_grpc_conn *conn_new(kx_grpc_io *io, int fd) {
  kx_grpc_conn *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->io = io;
  c->fd = fd;
  ev_timer_init(&c->timer, conn_on_timer, c);
  ev_timer_init(&c->drain_timer, conn_on_drain_timer, c);
  return c;
}

/* Ends the connection: its calls lose their stream (and are cancelled unless answered), the
 * socket and the session go. The struct itself stays for conn_release. */
static void conn_shut(kx_grpc_conn *c) {
  kx_grpc_io *io = c->io;
  if (c->dead) return;
  c->dead = 1;
  while (c->calls) {
    kiln_grpc_call *call = c->calls;
    kx_grpc_call_release_stream(call);
  }
  if (c->fd >= 0) {
    ev_remove(io->loop, c->fd);
    close(c->fd);
    c->fd = -1;
  }
  ev_timer_stop(io->loop, &c->timer);
  ev_timer_stop(io->loop, &c->drain_timer);
  nghttp2_session_del(c->session);
  c->session = NULL;
  kx_buf_free(&c->out);
  c->out_off = 0;
  if (c->counted) atomic_fetch_sub(&io->server->connections, 1);
  c->counted = 0;
}

static void conn_release(kx_grpc_conn *c) {
  kx_grpc_io *io = c->io;
  conn_shut(c);
  if (c->prev) c->prev->next = c->next;
  else if (io->conns == c) io->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  free(c);
}

/* Frees the connection (or, with its close job pending, shuts it). Returns -1 so callers can
 * `return conn_free(c)`. */
static int conn_free(kx_grpc_conn *c) {
  if (c->closing) conn_shut(c);
  else conn_release(c);
  return -1;
}

/* The close job: what the service answered meanwhile is written out, then the connection goes. */
static void conn_on_close_job(ev_loop *l, void *arg) {
  kx_grpc_conn *c = arg;
  if (!c->dead) kx_grpc_conn_flush(c);
  c->closing = 0;
  conn_release(c);
}

/* The client closed its side. gRPC clients never half-close a connection: it is gone, and its
 * calls are cancelled; but first, in a job queued behind the answers services gave in this same
 * round of the loop, those answers are written out (to a client that only shut down writing). */
static int conn_eof(kx_grpc_conn *c) {
  if (c->closing) return 0;
  c->closing = 1;
  ev_timer_stop(c->io->loop, &c->timer);
  ev_timer_stop(c->io->loop, &c->drain_timer);
  c->job = (ev_job){.fn = conn_on_close_job, .arg = c};
  ev_post(c->io->loop, &c->job);
  return kx_grpc_conn_flush(c);
}

static size_t out_pending(const kx_grpc_conn *c) { return c->out.len - c->out_off; }

/* Our side is done: shut down writing and read until the client closes (or LINGER_MS), so that
 * closing on unread data does not reset the connection and destroy the GOAWAY. */
static int conn_linger(kx_grpc_conn *c) {
  if (shutdown(c->fd, SHUT_WR) != 0) return conn_free(c);
  c->lingering = 1;
  if (ev_timer_start(c->io->loop, &c->timer, LINGER_MS) != 0) return conn_free(c);
  if (ev_set(c->io->loop, c->fd, EV_READABLE) != 0) return conn_free(c);
  return 0;
}

/* Sets epoll interest from the session's wishes; closes a connection that is done. */
static int conn_update(kx_grpc_conn *c) {
  size_t pending = out_pending(c);
  int want_read = nghttp2_session_want_read(c->session), want_write = nghttp2_session_want_write(c->session);
  if (!pending && !want_write && (!want_read || (c->goaway_final && c->open_calls == 0))) return conn_linger(c);
  int mask = 0;
  if (want_read && pending < OUT_HIGH && !c->closing) mask |= EV_READABLE;
  if (pending) mask |= EV_WRITABLE;
  if (ev_set(c->io->loop, c->fd, mask) != 0) return conn_free(c);
  return 0;
}

/* Serialises what nghttp2 has to send and writes it; -1 when the connection is gone. */
int kx_grpc_conn_flush(kx_grpc_conn *c) {
  if (c->dead) return -1;
  if (c->lingering) return 0;
  for (;;) {
    if (c->out_off == c->out.len) {
      if (c->out.cap > KEEP_BUFFER) kx_buf_free(&c->out);
      c->out.len = c->out_off = 0;
    } else if (c->out_off >= OUT_HIGH) {
      memmove(c->out.data, c->out.data + c->out_off, c->out.len - c->out_off);
      c->out.len -= c->out_off;
      c->out_off = 0;
    }
    while (out_pending(c) < OUT_HIGH) {
      const uint8_t *data;
      ssize_t n = nghttp2_session_mem_send(c->session, &data);
      if (n < 0) {
        kiln_log(KILN_LOG_DEBUG, "grpc: %s: %s", c->peer, nghttp2_strerror((int)n));
        return conn_free(c);
      }
      if (n == 0) break;
      if (c->out_off == c->out.len) c->last_write_ms = ev_now_ms(); /* a stall is timed from here */
      kx_buf_append(&c->out, data, (size_t)n);
      if (c->out.failed) return conn_free(c);
    }
    if (!out_pending(c)) break;
    ssize_t w = send(c->fd, c->out.data + c->out_off, out_pending(c), MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (w < 0) return conn_free(c);
    c->out_off += (size_t)w;
    c->last_write_ms = ev_now_ms();
  }
  return conn_update(c);
}

static int conn_read(kx_grpc_conn *c) {
  uint8_t buf[READ_CHUNK];
  for (int i = 0; i < READS_PER_EVENT && out_pending(c) < OUT_HIGH; i++) {
    ssize_t r = recv(c->fd, buf, sizeof buf, 0);
    if (r > 0) {
      ssize_t n = nghttp2_session_mem_recv(c->session, buf, (size_t)r);
      if (n < 0) {
        kiln_log(KILN_LOG_DEBUG, "grpc: %s: %s", c->peer, nghttp2_strerror((int)n));
        return conn_free(c);
      }
      if (!nghttp2_session_want_read(c->session)) break;
    } else if (r == 0) {
      return conn_eof(c);
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      break;
    } else if (errno != EINTR) {
      return conn_free(c);
    }
  }
  return kx_grpc_conn_flush(c);
}

static void conn_linger_read(kx_grpc_conn *c) {
  char sink[4096];
  for (int i = 0; i < READS_PER_EVENT; i++) {
    ssize_t r = recv(c->fd, sink, sizeof sink, 0);
    if (r > 0) continue;
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    conn_free(c);
    return;
  }
}

static void conn_on_event(ev_loop *l, int fd, int ready, void *arg) {
  kx_grpc_conn *c = arg;
  if (c->lingering) {
    if (ready & (EV_READABLE | EV_HANGUP)) conn_linger_read(c);
    return;
  }
  if ((ready & EV_WRITABLE) && kx_grpc_conn_flush(c) != 0) return;
  if ((ready & (EV_READABLE | EV_HANGUP)) && !c->closing) conn_read(c);
}

/* Sends the final GOAWAY (the last stream the server will serve) and closes once calls are done. */
static int conn_goaway(kx_grpc_conn *c, uint32_t error_code, const char *debug) {
  if (!c->goaway_final) {
    c->goaway_final = 1;
    int rc = nghttp2_submit_goaway(c->session, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->session),
                                   error_code, (const uint8_t *)debug, debug ? strlen(debug) : 0);
    if (rc != 0) return conn_free(c);
  }
  return kx_grpc_conn_flush(c);
}

/* Idle connections go; so do clients that stopped reading what we write. */
static void conn_on_timer(ev_loop *l, void *arg) {
  kx_grpc_conn *c = arg;
  if (c->lingering) {
    conn_free(c);
    return;
  }
  int64_t now = ev_now_ms(), limit = c->io->server->opt.idle_timeout_ms, next = limit;
  if (out_pending(c)) {
    if (now - c->last_write_ms >= limit) {
      kiln_log(KILN_LOG_DEBUG, "grpc: %s: client stopped reading for %lld ms; closing", c->peer, (long long)limit);
      conn_free(c);
      return;
    }
    next = c->last_write_ms + limit - now;
  } else if (c->open_calls == 0) {
    if (now - c->idle_since_ms >= limit) {
      conn_goaway(c, NGHTTP2_NO_ERROR, "idle");
      return;
    }
    next = c->idle_since_ms + limit - now;
  }
  if (ev_timer_start(l, &c->timer, next) != 0) conn_free(c);
}

static void conn_on_drain_timer(ev_loop *l, void *arg) { conn_goaway(arg, NGHTTP2_NO_ERROR, NULL); }

/* Graceful GOAWAY: a notice first (streams the client opens meanwhile are still served), then the
 * final GOAWAY when a PING shows the notice has arrived, or after DRAIN_GOAWAY_MS. */
static int conn_drain(kx_grpc_conn *c) {
  if (c->goaway_notice || c->goaway_final || c->lingering || c->dead) return 0;
  c->goaway_notice = 1;
  if (nghttp2_submit_shutdown_notice(c->session) != 0 || nghttp2_submit_ping(c->session, NGHTTP2_FLAG_NONE, NULL) != 0 ||
      ev_timer_start(c->io->loop, &c->drain_timer, DRAIN_GOAWAY_MS) != 0)
    return conn_goaway(c, NGHTTP2_NO_ERROR, NULL);
  return kx_grpc_conn_flush(c);
}

static int conn_session(kx_grpc_conn *c) {
  kiln_grpc_server *s = c->io->server;
  if (nghttp2_session_server_new(&c->session, s->callbacks, c) != 0) return -1;
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, (uint32_t)s->opt.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)(s->opt.max_header_bytes > UINT32_MAX ? UINT32_MAX : s->opt.max_header_bytes)},
  };
  if (nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) != 0) return -1;
  if (nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0, CONNECTION_WINDOW) != 0) return -1;
  return 0;
}

/* Takes over a connected socket on its loop's thread; one beyond max_connections gets GOAWAY
 * (ENHANCE_YOUR_CALM) and is closed. */
static void conn_start(kx_grpc_conn *c) {
  kiln_grpc_server *s = c->io->server;
  long long n = atomic_fetch_add(&s->connections, 1) + 1;
  int over = n > s->opt.max_connections;
  if (over) atomic_fetch_sub(&s->connections, 1);
  else atomic_fetch_add(&s->connections_total, 1);
  c->counted = !over;
  kx_grpc_io *io = c->io;
  c->next = io->conns;
  if (io->conns) io->conns->prev = c;
  io->conns = c;
  c->idle_since_ms = c->last_write_ms = ev_now_ms();
  if (ev_add(io->loop, c->fd, EV_READABLE, conn_on_event, c) != 0 || conn_session(c) != 0 ||
      ev_timer_start(io->loop, &c->timer, s->opt.idle_timeout_ms) != 0) {
    conn_free(c);
    return;
  }
  if (over) {
    kiln_log(KILN_LOG_WARN, "grpc: %s: over max_connections (%d); refused", c->peer, s->opt.max_connections);
    conn_goaway(c, NGHTTP2_ENHANCE_YOUR_CALM, "too many connections");
    return;
  }
  if (kx_io_group_draining(s->group)) {
    conn_goaway(c, NGHTTP2_NO_ERROR, NULL);
    return;
  }
  kx_grpc_conn_flush(c);
}

static void conn_on_adopt(ev_loop *l, void *arg) { conn_start(arg); }

/* ---------------------------------------------------------------- the I/O group's callbacks */

static void on_conn(kx_io *base, int fd, const char *peer) {
  kx_grpc_conn *c = conn_new(base->data, fd);
  if (!c) {
    close(fd);
    return;
  }
  memcpy(c->peer, peer, sizeof c->peer);
  conn_start(c);
}

/* On each loop, once it has dropped the listener: start every connection's GOAWAY. */
static void on_stop_accepting(kx_io *base) {
  kx_grpc_io *io = base->data;
  kx_grpc_conn *next;
  for (kx_grpc_conn *c = io->conns; c; c = next) {
    next = c->next;
    conn_drain(c);
  }
}

void kiln_grpc_server_stop_accepting(kiln_grpc_server *s) { kx_io_group_stop_accepting(s->group); }

/* ---------------------------------------------------------------- server */

static kiln_status resolve_options(const kiln_grpc_options *in, kiln_grpc_options *o) {
  *o = in ? *in : (kiln_grpc_options){0};
  kiln_status st = kx_io_group_defaults("grpc", &o->host, o->port, &o->threads);
  if (st) return st;
  if (!o->max_message_bytes) o->max_message_bytes = 64 * 1024 * 1024;
  if (o->max_message_bytes > UINT32_MAX) o->max_message_bytes = UINT32_MAX; /* the prefix's limit */
  if (!o->max_header_bytes) o->max_header_bytes = 64 * 1024;
  if (o->max_connections <= 0) o->max_connections = 10000;
  if (o->max_concurrent_streams <= 0) o->max_concurrent_streams = 1000;
  if (o->idle_timeout_ms <= 0) o->idle_timeout_ms = 300000;
  return NULL;
}

/* The I/O threads, each with this server's state for its loop. */
static kiln_status start_io(kiln_grpc_server *s, int listen_fd) {
  kx_io_group_config cfg = {
      .what = "grpc", .threads = s->opt.threads, .on_conn = on_conn, .on_stop_accepting = on_stop_accepting};
  kiln_status st = kx_io_group_create(&cfg, listen_fd, &s->group);
  if (st) return st;
  s->io = calloc((size_t)kx_io_group_size(s->group), sizeof *s->io);
  if (!s->io) return kiln_error(KILN_RESOURCE_EXHAUSTED, "grpc: out of memory");
  s->nio = kx_io_group_size(s->group);
  for (int i = 0; i < s->nio; i++) {
    kx_io *base = kx_io_group_io(s->group, i);
    s->io[i] = (kx_grpc_io){.server = s, .loop = base->loop};
    base->data = &s->io[i];
  }
  return kx_io_group_start(s->group);
}

kiln_status kiln_grpc_server_start(const kiln_grpc_options *opt, const kiln_grpc_service *service,
                                   kiln_grpc_server **out) {
  *out = NULL;
  if (!service || !service->kind || !service->message || !service->half_close)
    return kiln_error(KILN_INVALID_ARGUMENT, "grpc server: the service needs kind, message and half_close callbacks");
  kiln_grpc_server *s = calloc(1, sizeof *s);
  if (!s) return kiln_error(KILN_RESOURCE_EXHAUSTED, "grpc server: out of memory");
  s->service = *service;
  int listen_fd = -1;
  kiln_status st = resolve_options(opt, &s->opt);
  if (!st) st = make_callbacks(&s->callbacks);
  if (!st) st = kx_open_listener(s->opt.host, s->opt.port, &listen_fd, &s->port);
  if (!st) st = start_io(s, listen_fd);
  if (st) {
    kiln_grpc_server_free(s);
    return st;
  }
  *out = s;
  return NULL;
}

kiln_status kx_grpc_serve_fd(kiln_grpc_server *s, int fd) {
  kx_io *base;
  kiln_status st = kx_io_group_adopt(s->group, fd, &base);
  if (st) return st;
  kx_grpc_conn *c = conn_new(base->data, fd);
  if (!c) return kiln_error(KILN_RESOURCE_EXHAUSTED, "grpc: out of memory");
  c->job = (ev_job){.fn = conn_on_adopt, .arg = c};
  ev_post(base->loop, &c->job);
  return NULL;
}

int kiln_grpc_server_port(const kiln_grpc_server *s) { return s->port; }

void kiln_grpc_server_stats(kiln_grpc_server *s, kiln_grpc_stats *out) {
  out->connections = atomic_load(&s->connections);
  out->connections_total = atomic_load(&s->connections_total);
  out->calls = atomic_load(&s->calls);
  out->calls_total = atomic_load(&s->calls_total);
  out->rejected_total = atomic_load(&s->rejected_total);
}

void kiln_grpc_server_free(kiln_grpc_server *s) {
  if (!s) return;
  kx_io_group_join(s->group);
  for (int i = 0; i < s->nio; i++)
    while (s->io[i].conns) conn_release(s->io[i].conns);
  kx_io_group_free(s->group);
  if (s->callbacks) nghttp2_session_callbacks_del(s->callbacks);
  free(s->io);
  free(s);
}
