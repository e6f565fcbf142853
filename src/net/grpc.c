/* The gRPC server of include/kiln/net.h: the listener and I/O threads (one ev loop each, as in
 * http.c), one nghttp2 server session per connection, and gRPC's calls on top of its streams.
 *
 * Everything about a connection and its streams happens on the I/O thread that accepted it. The
 * only entry points from other threads are kiln_grpc_send, kiln_grpc_finish and
 * kiln_grpc_cancelled: the first two queue their work under the call's mutex and post the call's
 * job to its loop; the job hands the messages to nghttp2 (a data provider that defers while the
 * queue is empty) and ends the call.
 *
 * A call's memory has up to three holders: the stream (from the request's HEADERS until nghttp2
 * closes the stream or the connection goes), the service (from the first message it is given
 * until its kiln_grpc_finish has been processed on the loop), and the posted job. It is freed on
 * its loop when none is left (call_maybe_free), so whichever side ends first, the other never
 * touches freed memory: a send or finish for a call whose client has gone is dropped, and a stream
 * that closes under a call the service holds only marks it cancelled. */
#include "kiln/net.h"

#include <errno.h>
#include <fcntl.h>
#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/buf.h"
#include "net/ev.h"
#include "net/grpc_internal.h"
#include "net/listen.h"

#define READ_CHUNK 65536
#define READS_PER_EVENT 16 /* then other connections get their turn */
#define ACCEPTS_PER_EVENT 64
#define ACCEPT_PAUSE_MS 100        /* out of descriptors: retry accepting after this */
#define LINGER_MS 1000             /* longest wait for the client to close after our GOAWAY */
#define OUT_HIGH (256 * 1024)      /* output queued beyond this: stop making frames and reading */
#define STREAM_WINDOW (1 << 20)    /* per stream, so a large tensor flows without WINDOW_UPDATEs */
#define CONNECTION_WINDOW (16 << 20)
#define DRAIN_GOAWAY_MS 1000       /* shutdown notice to final GOAWAY, when the PING goes unanswered */
#define KEEP_BUFFER (1 << 20)      /* message buffers larger than this are freed between messages */
#define PREFIX 5                   /* gRPC's message prefix: flag byte + 4-byte big-endian length */

typedef struct gio gio;
typedef struct gconn gconn;
typedef struct outmsg outmsg;

/* A response message waiting to be framed: the prefix, then the data. */
struct outmsg {
  outmsg *next;
  uint8_t prefix[PREFIX];
  uint8_t *data;
  size_t len;
  size_t off; /* bytes of prefix + data handed to nghttp2 */
};

struct kiln_grpc_call {
  kiln_grpc_server *server;
  gio *io;
  /* ---- on the I/O thread */
  gconn *conn; /* NULL once the stream is gone */
  kiln_grpc_call *prev, *next;
  int32_t stream_id;
  kiln_grpc_kind kind;
  kx_buf method, http_method, content_type, timeout, request_id, traceparent, tracestate, authorization;
  size_t header_bytes;
  int accepted;        /* headers checked: messages are read */
  double deadline;     /* kiln_now() clock; 0: none */
  ev_timer deadline_timer;
  uint8_t prefix[PREFIX];
  size_t prefix_got, msg_len, msg_got;
  kx_buf msg;   /* the message being read */
  kx_buf first; /* unary: the one message, until the client half-closes */
  int64_t n_messages;
  int service_holds, half_close_given, in_job;
  int headers_sent, deferred, end_sent;
  int finished; /* the status is decided (the service finished, or the server answered) */
  int code;
  char *status_message;
  outmsg *out_head, *out_tail;
  kx_buf resp_headers; /* "name\0value\0" pairs from kiln_grpc_add_header */
  int n_resp_headers;
  /* ---- from any thread, under mu */
  pthread_mutex_t mu;
  outmsg *pend_head, *pend_tail;
  int finish_called, finish_pending, job_posted;
  int fin_code;
  char *fin_message;
  ev_job job;
  atomic_int cancelled;
  atomic_int service_finished; /* kiln_grpc_finish was called: no more callbacks for this call */
};

struct gconn {
  gio *io;
  gconn *prev, *next;
  int fd;
  int counted; /* holds one of max_connections */
  char peer[64];
  nghttp2_session *session;
  kx_buf out; /* frames from nghttp2 waiting for send() */
  size_t out_off;
  int lingering, goaway_notice, goaway_final;
  int64_t open_calls;
  kiln_grpc_call *calls;
  int64_t idle_since_ms, last_write_ms;
  ev_timer timer;       /* idle, stalled writes, linger */
  ev_timer drain_timer; /* the final GOAWAY after the shutdown notice */
  ev_job job;           /* adoption by the loop (kx_grpc_serve_fd) */
};

struct gio {
  kiln_grpc_server *server;
  ev_loop *loop;
  pthread_t thread;
  int thread_started;
  int listening;
  ev_timer accept_timer;
  ev_job stop_job;
  gconn *conns;
};

struct kiln_grpc_server {
  kiln_grpc_options opt; /* defaults filled in */
  kiln_grpc_service service;
  int port;
  int nio;
  gio *io;
  nghttp2_session_callbacks *callbacks;
  pthread_mutex_t mu; /* start gate; listen_fd and listeners once threads run */
  pthread_cond_t cv;
  int listen_fd;
  int listeners;
  atomic_int stop_once, draining;
  atomic_uint next_io;
  atomic_llong connections, connections_total, calls, calls_total, rejected_total;
};

static int conn_flush(gconn *c);
static void call_on_job(ev_loop *l, void *arg);
static void call_on_deadline(ev_loop *l, void *arg);

static int on_io_thread(const gio *io) { return io->thread_started && pthread_equal(pthread_self(), io->thread); }

static const char *opt_str(const kx_buf *b) { return b->data; }

static void buf_reset(kx_buf *b) {
  if (b->cap > KEEP_BUFFER || b->failed) kx_buf_free(b);
  b->len = 0;
}

/* ---------------------------------------------------------------- small protocol helpers */

/* grpc-message is percent-encoded: bytes outside printable ASCII, and '%' itself (PROTOCOL-HTTP2). */
static void percent_encode(kx_buf *b, const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p >= 0x20 && *p <= 0x7e && *p != '%') {
      kx_buf_putc(b, (char)*p);
    } else {
      char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
      kx_buf_append(b, e, 3);
    }
  }
  if (!b->data) kx_buf_append(b, "", 0);
}

/* grpc-timeout: 1 to 8 digits and a unit (H M S m u n). Returns seconds, or -1 when malformed.
 * Like grpc-core, more digits are read but a value beyond 10^9 units means no deadline (+inf
 * becomes 0 here, "none"). */
static double parse_timeout(const char *s) {
  const char *p = s;
  while (*p == ' ' || *p == '\t') p++;
  int64_t v = 0;
  int digits = 0, huge = 0;
  for (; *p >= '0' && *p <= '9'; p++, digits++) {
    if (v > 1000000000) huge = 1;
    else v = v * 10 + (*p - '0');
  }
  if (!digits) return -1;
  while (*p == ' ' || *p == '\t') p++;
  double unit;
  switch (*p) {
    case 'H': unit = 3600; break;
    case 'M': unit = 60; break;
    case 'S': unit = 1; break;
    case 'm': unit = 1e-3; break;
    case 'u': unit = 1e-6; break;
    case 'n': unit = 1e-9; break;
    default: return -1;
  }
  for (p++; *p == ' ' || *p == '\t'; p++) {
  }
  if (*p) return -1;
  return huge ? 0 : (double)v * unit;
}

static int is_grpc_content_type(const char *ct) {
  static const char base[] = "application/grpc";
  size_t n = sizeof base - 1;
  return ct && strncmp(ct, base, n) == 0 && (ct[n] == '\0' || ct[n] == '+' || ct[n] == ';');
}

#define NV(name, value) \
  { (uint8_t *)(name), (uint8_t *)(value), strlen(name), strlen(value), NGHTTP2_NV_FLAG_NONE }

/* ---------------------------------------------------------------- calls: lifetime */

static void outmsgs_free(outmsg *m) {
  while (m) {
    outmsg *next = m->next;
    free(m->data);
    free(m);
    m = next;
  }
}

static void call_free(kiln_grpc_call *call) {
  kx_buf *bufs[] = {&call->method, &call->http_method, &call->content_type, &call->timeout, &call->request_id,
                    &call->traceparent, &call->tracestate, &call->authorization, &call->msg, &call->first,
                    &call->resp_headers};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) kx_buf_free(bufs[i]);
  outmsgs_free(call->out_head);
  outmsgs_free(call->pend_head);
  free(call->status_message);
  free(call->fin_message);
  pthread_mutex_destroy(&call->mu);
  free(call);
}

/* Frees the call once neither the stream, the service nor a posted job holds it. */
static void call_maybe_free(kiln_grpc_call *call) {
  if (call->conn || call->service_holds || call->in_job) return;
  pthread_mutex_lock(&call->mu);
  int posted = call->job_posted;
  pthread_mutex_unlock(&call->mu);
  if (!posted) call_free(call);
}

static kiln_grpc_call *call_new(gconn *c, int32_t stream_id) {
  kiln_grpc_call *call = calloc(1, sizeof *call);
  if (!call) return NULL;
  if (pthread_mutex_init(&call->mu, NULL) != 0) {
    free(call);
    return NULL;
  }
  call->server = c->io->server;
  call->io = c->io;
  call->conn = c;
  call->stream_id = stream_id;
  call->job = (ev_job){.fn = call_on_job, .arg = call};
  atomic_init(&call->cancelled, 0);
  atomic_init(&call->service_finished, 0);
  ev_timer_init(&call->deadline_timer, call_on_deadline, call);
  call->next = c->calls;
  if (c->calls) c->calls->prev = call;
  c->calls = call;
  c->open_calls++;
  return call;
}

/* The service takes the call (first message, or the half-close of a zero-message stream). */
static void call_hold(kiln_grpc_call *call) {
  if (call->service_holds) return;
  call->service_holds = 1;
  atomic_fetch_add(&call->server->calls, 1);
}

/* The call is over for the client. A streaming call the service holds, whose client has not
 * half-closed, gets its half_close now, so that the service knows to finish it. */
static void call_cancel(kiln_grpc_call *call) {
  atomic_store(&call->cancelled, 1);
  if (call->kind == KILN_GRPC_STREAMING && call->service_holds && !call->half_close_given &&
      !atomic_load(&call->service_finished)) {
    call->half_close_given = 1;
    const kiln_grpc_service *svc = &call->server->service;
    svc->half_close(svc->ctx, call, call->n_messages);
  }
}

/* The stream is gone (closed by nghttp2, or its connection went): the call loses its stream. */
static void call_detach(kiln_grpc_call *call) {
  gconn *c = call->conn;
  if (!c) return;
  ev_timer_stop(c->io->loop, &call->deadline_timer);
  if (call->prev) call->prev->next = call->next;
  else c->calls = call->next;
  if (call->next) call->next->prev = call->prev;
  call->prev = call->next = NULL;
  if (--c->open_calls == 0) c->idle_since_ms = ev_now_ms();
  call->conn = NULL;
  if (c->session) nghttp2_session_set_stream_user_data(c->session, call->stream_id, NULL);
  outmsgs_free(call->out_head);
  call->out_head = call->out_tail = NULL;
  if (!call->end_sent) call_cancel(call);
}

/* ---------------------------------------------------------------- calls: responding */

/* The response's data: queued messages with their prefixes, then (NO_END_STREAM) the trailers. */
static ssize_t read_data(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                         uint32_t *data_flags, nghttp2_data_source *source, void *user_data) {
  kiln_grpc_call *call = source->ptr;
  size_t n = 0;
  while (n < length && call->out_head) {
    outmsg *m = call->out_head;
    if (m->off < PREFIX) {
      size_t k = PREFIX - m->off < length - n ? PREFIX - m->off : length - n;
      memcpy(buf + n, m->prefix + m->off, k);
      m->off += k;
      n += k;
    }
    if (m->off >= PREFIX && n < length) {
      size_t done = m->off - PREFIX, k = m->len - done < length - n ? m->len - done : length - n;
      if (k) memcpy(buf + n, m->data + done, k);
      m->off += k;
      n += k;
    }
    if (m->off == PREFIX + m->len) {
      call->out_head = m->next;
      if (!call->out_head) call->out_tail = NULL;
      free(m->data);
      free(m);
    }
  }
  if (call->out_head) return (ssize_t)n;
  if (!call->finished) {
    if (n > 0) return (ssize_t)n;
    call->deferred = 1;
    return NGHTTP2_ERR_DEFERRED;
  }
  *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
  kx_buf text = {0};
  percent_encode(&text, call->status_message ? call->status_message : "");
  char code[16];
  snprintf(code, sizeof code, "%d", call->code);
  nghttp2_nv trailers[2] = {NV("grpc-status", code), NV("grpc-message", text.data ? text.data : "")};
  int rc = nghttp2_submit_trailer(session, stream_id, trailers, call->status_message && *call->status_message ? 2 : 1);
  kx_buf_free(&text);
  if (rc != 0) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
  return (ssize_t)n;
}

/* Response headers: the fixed ones, the service's, and (Trailers-Only) the status. */
static int submit_headers(kiln_grpc_call *call, int trailers_only, int http_status) {
  nghttp2_nv nva[64];
  size_t n = 0;
  char status[8], code[16];
  snprintf(status, sizeof status, "%d", http_status);
  nva[n++] = (nghttp2_nv)NV(":status", status);
  nva[n++] = (nghttp2_nv)NV("content-type", "application/grpc");
  nva[n++] = (nghttp2_nv)NV("grpc-accept-encoding", "identity");
  const char *p = call->resp_headers.data;
  for (int i = 0; i < call->n_resp_headers && n < 60; i++) {
    const char *name = p, *value = p + strlen(p) + 1;
    nva[n++] = (nghttp2_nv)NV(name, value);
    p = value + strlen(value) + 1;
  }
  kx_buf text = {0};
  if (trailers_only) {
    snprintf(code, sizeof code, "%d", call->code);
    nva[n++] = (nghttp2_nv)NV("grpc-status", code);
    if (call->status_message && *call->status_message) {
      percent_encode(&text, call->status_message);
      if (text.failed) return -1;
      nva[n++] = (nghttp2_nv)NV("grpc-message", text.data);
    }
  }
  nghttp2_data_provider dp = {.source.ptr = call, .read_callback = read_data};
  int rc = nghttp2_submit_response(call->conn->session, call->stream_id, nva, n, trailers_only ? NULL : &dp);
  kx_buf_free(&text);
  call->headers_sent = 1;
  return rc;
}

/* Hands what the call has to nghttp2: the headers with the first message (or the Trailers-Only
 * response), then more data as it comes. */
static void call_push(kiln_grpc_call *call) {
  int rc = 0;
  if (!call->headers_sent) {
    if (call->out_head) rc = submit_headers(call, 0, 200);
    else if (call->finished) rc = submit_headers(call, 1, 200);
  } else if (call->deferred) {
    call->deferred = 0;
    rc = nghttp2_session_resume_data(call->conn->session, call->stream_id);
  }
  if (rc != 0) {
    kiln_log(KILN_LOG_WARN, "grpc: stream %d: cannot respond: %s", (int)call->stream_id,
             rc < 0 ? nghttp2_strerror(rc) : "out of memory");
    nghttp2_submit_rst_stream(call->conn->session, NGHTTP2_FLAG_NONE, call->stream_id, NGHTTP2_INTERNAL_ERROR);
  }
}

/* The server answers the call itself with an error (on the I/O thread, the stream still open). */
static void call_answer(kiln_grpc_call *call, int code, const char *message) {
  if (call->finished || !call->conn) return;
  atomic_fetch_add(&call->server->rejected_total, 1);
  call->finished = 1;
  call->code = code;
  free(call->status_message);
  call->status_message = strdup(message);
  call_push(call);
  call_cancel(call);
}

/* A non-gRPC request (wrong method or content type): an HTTP error status with a gRPC status, as
 * grpc-go answers it, so that both HTTP and gRPC clients see what went wrong. */
static void call_reject_http(kiln_grpc_call *call, int http_status, const char *message) {
  atomic_fetch_add(&call->server->rejected_total, 1);
  call->finished = 1;
  call->code = KILN_GRPC_INTERNAL;
  call->status_message = strdup(message);
  if (submit_headers(call, 1, http_status) != 0)
    nghttp2_submit_rst_stream(call->conn->session, NGHTTP2_FLAG_NONE, call->stream_id, NGHTTP2_INTERNAL_ERROR);
  atomic_store(&call->cancelled, 1);
}

/* The call's job on its loop: takes what other threads queued and hands it on. */
static void call_on_job(ev_loop *l, void *arg) {
  kiln_grpc_call *call = arg;
  pthread_mutex_lock(&call->mu);
  outmsg *pend = call->pend_head;
  call->pend_head = call->pend_tail = NULL;
  int fin = call->finish_pending, fin_code = call->fin_code;
  char *fin_message = call->fin_message;
  call->finish_pending = 0;
  call->fin_message = NULL;
  call->job_posted = 0;
  pthread_mutex_unlock(&call->mu);
  call->in_job = 1;
  if (fin) {
    call->service_holds = 0;
    atomic_fetch_sub(&call->server->calls, 1);
  }
  gconn *c = call->conn;
  if (c && !call->finished && !atomic_load(&call->cancelled)) {
    if (pend) {
      if (call->out_tail) call->out_tail->next = pend;
      else call->out_head = pend;
      while (pend->next) pend = pend->next;
      call->out_tail = pend;
      pend = NULL;
    }
    if (fin) {
      call->finished = 1;
      call->code = fin_code;
      call->status_message = fin_message;
      fin_message = NULL;
    }
    call_push(call);
    conn_flush(c);
  }
  outmsgs_free(pend);
  free(fin_message);
  call->in_job = 0;
  call_maybe_free(call);
}

/* Queues work for the call's loop; the caller holds call->mu. */
static void call_post_locked(kiln_grpc_call *call) {
  if (call->job_posted) return;
  call->job_posted = 1;
  ev_post(call->io->loop, &call->job);
}

static outmsg *outmsg_new(uint8_t *message, size_t len) {
  outmsg *m = calloc(1, sizeof *m);
  if (!m) return NULL;
  m->data = message;
  m->len = len;
  m->prefix[0] = 0;
  m->prefix[1] = (uint8_t)(len >> 24);
  m->prefix[2] = (uint8_t)(len >> 16);
  m->prefix[3] = (uint8_t)(len >> 8);
  m->prefix[4] = (uint8_t)len;
  return m;
}

void kiln_grpc_send(kiln_grpc_call *call, uint8_t *message, size_t len) {
  if (atomic_load(&call->cancelled)) {
    free(message);
    return;
  }
  if (len > UINT32_MAX) {
    kiln_log(KILN_LOG_ERROR, "grpc: response message of %zu bytes exceeds gRPC's 4 GiB limit; dropped", len);
    free(message);
    return;
  }
  outmsg *m = outmsg_new(message, len);
  if (!m) {
    free(message);
    kiln_log(KILN_LOG_ERROR, "grpc: out of memory queueing a response message");
    return;
  }
  pthread_mutex_lock(&call->mu);
  if (call->finish_called) {
    pthread_mutex_unlock(&call->mu);
    kiln_log(KILN_LOG_ERROR, "grpc: kiln_grpc_send after kiln_grpc_finish; dropped");
    outmsgs_free(m);
    return;
  }
  if (call->pend_tail) call->pend_tail->next = m;
  else call->pend_head = m;
  call->pend_tail = m;
  call_post_locked(call);
  pthread_mutex_unlock(&call->mu);
}

void kiln_grpc_finish(kiln_grpc_call *call, int code, const char *message, uint8_t *last, size_t len) {
  outmsg *m = NULL;
  if (last && !atomic_load(&call->cancelled) && len <= UINT32_MAX) m = outmsg_new(last, len);
  if (!m) free(last);
  char *text = message && *message ? strdup(message) : NULL;
  pthread_mutex_lock(&call->mu);
  if (call->finish_called) {
    pthread_mutex_unlock(&call->mu);
    kiln_log(KILN_LOG_ERROR, "grpc: kiln_grpc_finish called twice for one call; ignored");
    outmsgs_free(m);
    free(text);
    return;
  }
  call->finish_called = 1;
  atomic_store(&call->service_finished, 1);
  if (m) {
    if (call->pend_tail) call->pend_tail->next = m;
    else call->pend_head = m;
    call->pend_tail = m;
  }
  call->finish_pending = 1;
  call->fin_code = code;
  call->fin_message = text;
  call_post_locked(call);
  pthread_mutex_unlock(&call->mu);
}

int kiln_grpc_cancelled(const kiln_grpc_call *call) { return atomic_load(&call->cancelled); }

void kiln_grpc_add_header(kiln_grpc_call *call, const char *name, const char *value) {
  if (call->headers_sent) {
    kiln_log(KILN_LOG_ERROR, "grpc: kiln_grpc_add_header(%s) after the response headers went out; ignored", name);
    return;
  }
  if (call->n_resp_headers >= 32) {
    kiln_log(KILN_LOG_ERROR, "grpc: more than 32 response headers; %s ignored", name);
    return;
  }
  kx_buf_append(&call->resp_headers, name, strlen(name) + 1);
  kx_buf_append(&call->resp_headers, value, strlen(value) + 1);
  call->n_resp_headers++;
}

/* ---------------------------------------------------------------- calls: requests */

static void call_on_deadline(ev_loop *l, void *arg) {
  kiln_grpc_call *call = arg;
  gconn *c = call->conn;
  if (!c || call->finished) return;
  call_answer(call, KILN_GRPC_DEADLINE_EXCEEDED, "deadline exceeded");
  conn_flush(c);
}

static void call_deliver(kiln_grpc_call *call, const kx_buf *msg, int64_t index) {
  const kiln_grpc_service *svc = &call->server->service;
  kiln_grpc_request req = {
      .method = call->method.data,
      .message = (const uint8_t *)msg->data,
      .len = msg->len,
      .index = index,
      .request_id = opt_str(&call->request_id),
      .traceparent = opt_str(&call->traceparent),
      .tracestate = opt_str(&call->tracestate),
      .authorization = opt_str(&call->authorization),
      .peer = call->conn->peer,
      .received_at = kiln_now(),
      .deadline = call->deadline,
  };
  call_hold(call);
  svc->message(svc->ctx, call, &req);
}

/* A message is complete: keep it (unary) or deliver it (streaming). */
static void call_message_done(kiln_grpc_call *call) {
  int64_t index = call->n_messages++;
  call->prefix_got = call->msg_got = 0;
  if (call->kind == KILN_GRPC_UNARY) {
    if (index == 0) {
      call->first = call->msg;
      call->msg = (kx_buf){0};
    }
    return;
  }
  if (!atomic_load(&call->service_finished)) call_deliver(call, &call->msg, index);
  buf_reset(&call->msg);
}

/* DATA for a call: splits it into messages along their prefixes. */
static void call_data(kiln_grpc_call *call, const uint8_t *data, size_t len) {
  const kiln_grpc_options *o = &call->server->opt;
  while (len > 0 && !call->finished && call->conn) {
    if (call->prefix_got < PREFIX) {
      size_t k = PREFIX - call->prefix_got < len ? PREFIX - call->prefix_got : len;
      memcpy(call->prefix + call->prefix_got, data, k);
      call->prefix_got += k;
      data += k;
      len -= k;
      if (call->prefix_got < PREFIX) return;
      const uint8_t *p = call->prefix;
      call->msg_len = (size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | p[4];
      char text[128];
      if (p[0] == 1) {
        call_answer(call, KILN_GRPC_UNIMPLEMENTED, "compressed messages are not supported");
        return;
      }
      if (p[0] != 0) {
        snprintf(text, sizeof text, "invalid message flag 0x%02x: expected 0 (uncompressed) or 1 (compressed)", p[0]);
        call_answer(call, KILN_GRPC_INTERNAL, text);
        return;
      }
      if (call->msg_len > o->max_message_bytes) {
        snprintf(text, sizeof text, "received message larger than max (%zu vs. %zu)", call->msg_len, o->max_message_bytes);
        call_answer(call, KILN_GRPC_RESOURCE_EXHAUSTED, text);
        return;
      }
      if (call->msg_len == 0) call_message_done(call);
      continue;
    }
    size_t k = call->msg_len - call->msg_got < len ? call->msg_len - call->msg_got : len;
    /* a unary call's second message is only counted: the call fails at the half-close anyway */
    if (call->kind != KILN_GRPC_UNARY || call->n_messages == 0) {
      kx_buf_append(&call->msg, data, k);
      if (call->msg.failed) {
        call_answer(call, KILN_GRPC_RESOURCE_EXHAUSTED, "out of memory reading a request message");
        return;
      }
    }
    call->msg_got += k;
    data += k;
    len -= k;
    if (call->msg_got == call->msg_len) call_message_done(call);
  }
}

/* The client half-closed (END_STREAM). */
static void call_half_close(kiln_grpc_call *call) {
  if (call->finished || !call->accepted) return;
  char text[128];
  if (call->prefix_got > 0) {
    snprintf(text, sizeof text, "request ended inside a message (%zu of %zu bytes)",
             call->prefix_got < PREFIX ? call->prefix_got : PREFIX + call->msg_got,
             call->prefix_got < PREFIX ? (size_t)PREFIX : PREFIX + call->msg_len);
    call_answer(call, KILN_GRPC_INTERNAL, text);
    return;
  }
  if (call->kind == KILN_GRPC_UNARY) {
    if (call->n_messages != 1) {
      snprintf(text, sizeof text, "expected one request message, got %lld", (long long)call->n_messages);
      call_answer(call, KILN_GRPC_INTERNAL, text);
      return;
    }
    call_deliver(call, &call->first, 0);
    kx_buf_free(&call->first);
    return;
  }
  const kiln_grpc_service *svc = &call->server->service;
  if (atomic_load(&call->service_finished)) return;
  call->half_close_given = 1;
  call_hold(call);
  svc->half_close(svc->ctx, call, call->n_messages);
}

/* The request's headers are complete: is this a gRPC call we serve? */
static void call_begin(kiln_grpc_call *call) {
  kiln_grpc_server *s = call->server;
  atomic_fetch_add(&s->calls_total, 1);
  char text[200];
  if (call->header_bytes > s->opt.max_header_bytes) {
    snprintf(text, sizeof text, "request metadata larger than max (%zu vs. %zu bytes)", call->header_bytes,
             s->opt.max_header_bytes);
    call_answer(call, KILN_GRPC_RESOURCE_EXHAUSTED, text);
    return;
  }
  if (call->method.failed || call->http_method.failed || call->content_type.failed || call->timeout.failed ||
      call->request_id.failed || call->traceparent.failed || call->tracestate.failed || call->authorization.failed) {
    call_answer(call, KILN_GRPC_RESOURCE_EXHAUSTED, "out of memory reading request metadata");
    return;
  }
  const char *http_method = call->http_method.data ? call->http_method.data : "";
  if (strcmp(http_method, "POST") != 0) {
    snprintf(text, sizeof text, "gRPC requires method POST, got '%.40s'", http_method);
    call_reject_http(call, 405, text);
    return;
  }
  const char *ct = call->content_type.data;
  if (!is_grpc_content_type(ct)) {
    snprintf(text, sizeof text, "content-type must be application/grpc, got '%.60s'", ct ? ct : "");
    call_reject_http(call, 415, text);
    return;
  }
  if (call->timeout.data) {
    double t = parse_timeout(call->timeout.data);
    if (t < 0) {
      snprintf(text, sizeof text, "malformed grpc-timeout '%.40s': expected up to 8 digits and a unit (H M S m u n)",
               call->timeout.data);
      call_answer(call, KILN_GRPC_INTERNAL, text);
      return;
    }
    if (t > 0) {
      call->deadline = kiln_now() + t;
      double ms = t * 1000.0 + 0.999;
      if (ev_timer_start(call->io->loop, &call->deadline_timer, ms > 4e15 ? (int64_t)4e15 : (int64_t)ms) != 0) {
        call_answer(call, KILN_GRPC_RESOURCE_EXHAUSTED, "out of memory arming the call's deadline");
        return;
      }
    }
  }
  const char *method = call->method.data ? call->method.data : "";
  call->kind = s->service.kind(s->service.ctx, method);
  if (call->kind != KILN_GRPC_UNARY && call->kind != KILN_GRPC_STREAMING) {
    snprintf(text, sizeof text, "unknown method %.160s", method);
    call_answer(call, KILN_GRPC_UNIMPLEMENTED, text);
    return;
  }
  call->accepted = 1;
}

/* ---------------------------------------------------------------- nghttp2 callbacks */

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
  gconn *c = user_data;
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  kiln_grpc_call *call = call_new(c, frame->hd.stream_id);
  if (!call) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
  nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, call);
  return 0;
}

static void capture(kx_buf *b, const uint8_t *value, size_t len) {
  b->len = 0;
  kx_buf_append(b, value, len);
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data) {
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  kiln_grpc_call *call = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
  if (!call) return 0;
  call->header_bytes += namelen + valuelen + 32; /* HTTP/2's accounting of a header list */
  if (frame->headers.cat != NGHTTP2_HCAT_REQUEST || call->header_bytes > call->server->opt.max_header_bytes) return 0;
  const char *n = (const char *)name;
#define IS(lit) (namelen == sizeof(lit) - 1 && memcmp(n, lit, namelen) == 0)
  if (IS(":path")) capture(&call->method, value, valuelen);
  else if (IS(":method")) capture(&call->http_method, value, valuelen);
  else if (IS("content-type")) capture(&call->content_type, value, valuelen);
  else if (IS("grpc-timeout")) capture(&call->timeout, value, valuelen);
  else if (IS("x-request-id")) capture(&call->request_id, value, valuelen);
  else if (IS("traceparent")) capture(&call->traceparent, value, valuelen);
  else if (IS("authorization")) capture(&call->authorization, value, valuelen);
  else if (IS("tracestate")) { /* W3C: several tracestate headers form one list */
    if (call->tracestate.data) kx_buf_putc(&call->tracestate, ',');
    kx_buf_append(&call->tracestate, value, valuelen);
  }
#undef IS
  return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
  gconn *c = user_data;
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
  if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) call_begin(call);
  if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && call->conn) call_half_close(call);
  return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t len,
                         void *user_data) {
  kiln_grpc_call *call = nghttp2_session_get_stream_user_data(session, stream_id);
  if (call && call->accepted) call_data(call, data, len);
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
  call_detach(call);
  call_maybe_free(call);
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

static gconn *conn_new(gio *io, int fd) {
  gconn *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->io = io;
  c->fd = fd;
  ev_timer_init(&c->timer, conn_on_timer, c);
  ev_timer_init(&c->drain_timer, conn_on_drain_timer, c);
  return c;
}

/* Frees the connection; its calls lose their stream (and are cancelled unless answered). Returns
 * -1 so callers can `return conn_free(c)`. */
static int conn_free(gconn *c) {
  gio *io = c->io;
  while (c->calls) {
    kiln_grpc_call *call = c->calls;
    call_detach(call);
    call_maybe_free(call);
  }
  if (c->fd >= 0) {
    ev_remove(io->loop, c->fd);
    close(c->fd);
  }
  ev_timer_stop(io->loop, &c->timer);
  ev_timer_stop(io->loop, &c->drain_timer);
  if (c->prev) c->prev->next = c->next;
  else if (io->conns == c) io->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  nghttp2_session_del(c->session);
  kx_buf_free(&c->out);
  if (c->counted) atomic_fetch_sub(&io->server->connections, 1);
  free(c);
  return -1;
}

static size_t out_pending(const gconn *c) { return c->out.len - c->out_off; }

/* Our side is done: shut down writing and read until the client closes (or LINGER_MS), so that
 * closing on unread data does not reset the connection and destroy the GOAWAY. */
static int conn_linger(gconn *c) {
  if (shutdown(c->fd, SHUT_WR) != 0) return conn_free(c);
  c->lingering = 1;
  if (ev_timer_start(c->io->loop, &c->timer, LINGER_MS) != 0) return conn_free(c);
  if (ev_set(c->io->loop, c->fd, EV_READABLE) != 0) return conn_free(c);
  return 0;
}

/* Sets epoll interest from the session's wishes; closes a connection that is done. */
static int conn_update(gconn *c) {
  size_t pending = out_pending(c);
  int want_read = nghttp2_session_want_read(c->session), want_write = nghttp2_session_want_write(c->session);
  if (!pending && !want_write && (!want_read || (c->goaway_final && c->open_calls == 0))) return conn_linger(c);
  int mask = 0;
  if (want_read && pending < OUT_HIGH) mask |= EV_READABLE;
  if (pending) mask |= EV_WRITABLE;
  if (ev_set(c->io->loop, c->fd, mask) != 0) return conn_free(c);
  return 0;
}

/* Serialises what nghttp2 has to send and writes it; -1 when the connection is gone. */
static int conn_flush(gconn *c) {
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

static int conn_read(gconn *c) {
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
      return conn_free(c); /* gRPC clients never half-close a connection: it is gone */
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      break;
    } else if (errno != EINTR) {
      return conn_free(c);
    }
  }
  return conn_flush(c);
}

static void conn_linger_read(gconn *c) {
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
  gconn *c = arg;
  if (c->lingering) {
    if (ready & (EV_READABLE | EV_HANGUP)) conn_linger_read(c);
    return;
  }
  if ((ready & EV_WRITABLE) && conn_flush(c) != 0) return;
  if (ready & (EV_READABLE | EV_HANGUP)) conn_read(c);
}

/* Sends the final GOAWAY (the last stream the server will serve) and closes once calls are done. */
static int conn_goaway(gconn *c, uint32_t error_code, const char *debug) {
  if (!c->goaway_final) {
    c->goaway_final = 1;
    int rc = nghttp2_submit_goaway(c->session, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->session),
                                   error_code, (const uint8_t *)debug, debug ? strlen(debug) : 0);
    if (rc != 0) return conn_free(c);
  }
  return conn_flush(c);
}

/* Idle connections go; so do clients that stopped reading what we write. */
static void conn_on_timer(ev_loop *l, void *arg) {
  gconn *c = arg;
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
static int conn_drain(gconn *c) {
  if (c->goaway_notice || c->goaway_final || c->lingering) return 0;
  c->goaway_notice = 1;
  if (nghttp2_submit_shutdown_notice(c->session) != 0 || nghttp2_submit_ping(c->session, NGHTTP2_FLAG_NONE, NULL) != 0 ||
      ev_timer_start(c->io->loop, &c->drain_timer, DRAIN_GOAWAY_MS) != 0)
    return conn_goaway(c, NGHTTP2_NO_ERROR, NULL);
  return conn_flush(c);
}

static int conn_session(gconn *c) {
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
static void conn_start(gconn *c) {
  kiln_grpc_server *s = c->io->server;
  long long n = atomic_fetch_add(&s->connections, 1) + 1;
  int over = n > s->opt.max_connections;
  if (over) atomic_fetch_sub(&s->connections, 1);
  else atomic_fetch_add(&s->connections_total, 1);
  c->counted = !over;
  gio *io = c->io;
  c->next = io->conns;
  if (io->conns) io->conns->prev = c;
  io->conns = c;
  c->idle_since_ms = c->last_write_ms = ev_now_ms();
  if (ev_add(io->loop, c->fd, EV_READABLE, conn_on_event, c) != 0 || conn_session(c) != 0) {
    conn_free(c);
    return;
  }
  if (over) {
    kiln_log(KILN_LOG_WARN, "grpc: %s: over max_connections (%d); refused", c->peer, s->opt.max_connections);
    conn_goaway(c, NGHTTP2_ENHANCE_YOUR_CALM, "too many connections");
    return;
  }
  if (ev_timer_start(io->loop, &c->timer, s->opt.idle_timeout_ms) != 0) {
    conn_free(c);
    return;
  }
  if (atomic_load(&s->draining)) {
    conn_goaway(c, NGHTTP2_NO_ERROR, NULL);
    return;
  }
  conn_flush(c);
}

static void conn_on_adopt(ev_loop *l, void *arg) { conn_start(arg); }

/* ---------------------------------------------------------------- listener and threads */

static void on_accept(ev_loop *l, int fd, int ready, void *arg);

static int io_listen(gio *io) {
  if (ev_add(io->loop, io->server->listen_fd, EV_READABLE | EV_EXCLUSIVE, on_accept, io) != 0) return -1;
  io->listening = 1;
  return 0;
}

static void io_unlisten(gio *io) {
  if (io->listening) ev_remove(io->loop, io->server->listen_fd);
  io->listening = 0;
}

static void on_accept_resume(ev_loop *l, void *arg) {
  gio *io = arg;
  if (atomic_load(&io->server->draining) || io->listening) return;
  if (io_listen(io) != 0 && ev_timer_start(l, &io->accept_timer, ACCEPT_PAUSE_MS) != 0)
    kiln_log(KILN_LOG_ERROR, "grpc: cannot resume accepting: %s", strerror(errno));
}

static void on_accept(ev_loop *l, int fd, int ready, void *arg) {
  gio *io = arg;
  for (int i = 0; i < ACCEPTS_PER_EVENT; i++) {
    char peer[64];
    int cfd = kx_accept(fd, peer, sizeof peer, "grpc");
    if (cfd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      kiln_log(KILN_LOG_WARN, "grpc: accept: %s; pausing for %d ms", strerror(errno), ACCEPT_PAUSE_MS);
      io_unlisten(io);
      if (ev_timer_start(l, &io->accept_timer, ACCEPT_PAUSE_MS) != 0)
        kiln_log(KILN_LOG_ERROR, "grpc: cannot schedule accepting again");
      return;
    }
    gconn *c = conn_new(io, cfd);
    if (!c) {
      close(cfd);
      continue;
    }
    memcpy(c->peer, peer, sizeof c->peer);
    conn_start(c);
  }
}

/* On each loop: drop the listener (the last loop closes it) and start every connection's GOAWAY. */
static void io_on_stop_accepting(ev_loop *l, void *arg) {
  gio *io = arg;
  kiln_grpc_server *s = io->server;
  io_unlisten(io);
  ev_timer_stop(l, &io->accept_timer);
  pthread_mutex_lock(&s->mu);
  if (--s->listeners == 0) {
    close(s->listen_fd);
    s->listen_fd = -1;
    pthread_cond_broadcast(&s->cv);
  }
  pthread_mutex_unlock(&s->mu);
  gconn *next;
  for (gconn *c = io->conns; c; c = next) {
    next = c->next;
    conn_drain(c);
  }
}

void kiln_grpc_server_stop_accepting(kiln_grpc_server *s) {
  if (atomic_exchange(&s->stop_once, 1)) return;
  atomic_store(&s->draining, 1);
  int inside = 0;
  for (int i = 0; i < s->nio; i++) {
    inside |= on_io_thread(&s->io[i]);
    ev_post(s->io[i].loop, &s->io[i].stop_job);
  }
  if (inside) return; /* an I/O thread cannot wait for its own loop */
  pthread_mutex_lock(&s->mu);
  while (s->listeners > 0) pthread_cond_wait(&s->cv, &s->mu);
  pthread_mutex_unlock(&s->mu);
}

static kiln_status resolve_options(const kiln_grpc_options *in, kiln_grpc_options *o) {
  *o = in ? *in : (kiln_grpc_options){0};
  if (!o->host || !*o->host) o->host = "0.0.0.0";
  if (o->port < 0 || o->port > 65535)
    return kiln_error(KILN_INVALID_ARGUMENT, "grpc port must be in [0, 65535], got %d", o->port);
  if (o->threads <= 0) o->threads = kiln_cpu_count();
  if (o->threads <= 0) o->threads = 1;
  if (!o->max_message_bytes) o->max_message_bytes = 64 * 1024 * 1024;
  if (o->max_message_bytes > UINT32_MAX) o->max_message_bytes = UINT32_MAX; /* the prefix's limit */
  if (!o->max_header_bytes) o->max_header_bytes = 64 * 1024;
  if (o->max_connections <= 0) o->max_connections = 10000;
  if (o->max_concurrent_streams <= 0) o->max_concurrent_streams = 1000;
  if (o->idle_timeout_ms <= 0) o->idle_timeout_ms = 300000;
  return NULL;
}

static void *io_main(void *arg) {
  gio *io = arg;
  /* the start gate: every io->thread has been written by the time this lock is free */
  pthread_mutex_lock(&io->server->mu);
  pthread_mutex_unlock(&io->server->mu);
  ev_run(io->loop);
  return NULL;
}

static kiln_status create_loops(kiln_grpc_server *s) {
  s->io = calloc((size_t)s->opt.threads, sizeof *s->io);
  if (!s->io) return kiln_error(KILN_RESOURCE_EXHAUSTED, "grpc: out of memory");
  for (int i = 0; i < s->opt.threads; i++) {
    gio *io = &s->io[i];
    io->server = s;
    ev_timer_init(&io->accept_timer, on_accept_resume, io);
    io->stop_job = (ev_job){.fn = io_on_stop_accepting, .arg = io};
    kiln_status st = ev_loop_create(&io->loop);
    if (st) return st;
    s->nio++;
    if (io_listen(io) != 0) return kiln_error(KILN_UNAVAILABLE, "grpc: epoll_ctl: %s", strerror(errno));
    s->listeners++;
  }
  return NULL;
}

static kiln_status start_threads(kiln_grpc_server *s) {
  pthread_mutex_lock(&s->mu);
  kiln_status st = NULL;
  for (int i = 0; i < s->nio && !st; i++) {
    int rc = pthread_create(&s->io[i].thread, NULL, io_main, &s->io[i]);
    if (rc != 0) st = kiln_error(KILN_UNAVAILABLE, "grpc: pthread_create: %s", strerror(rc));
    else s->io[i].thread_started = 1;
  }
  pthread_mutex_unlock(&s->mu);
  return st;
}

kiln_status kiln_grpc_server_start(const kiln_grpc_options *opt, const kiln_grpc_service *service,
                                   kiln_grpc_server **out) {
  *out = NULL;
  if (!service || !service->kind || !service->message || !service->half_close)
    return kiln_error(KILN_INVALID_ARGUMENT, "grpc server: the service needs kind, message and half_close callbacks");
  kiln_grpc_server *s = calloc(1, sizeof *s);
  if (!s) return kiln_error(KILN_RESOURCE_EXHAUSTED, "grpc server: out of memory");
  s->listen_fd = -1;
  s->service = *service;
  if (pthread_mutex_init(&s->mu, NULL) != 0 || pthread_cond_init(&s->cv, NULL) != 0) {
    free(s);
    return kiln_error(KILN_UNAVAILABLE, "grpc server: cannot create a mutex");
  }
  kiln_status st = resolve_options(opt, &s->opt);
  if (!st) st = make_callbacks(&s->callbacks);
  if (!st) st = kx_open_listener(s->opt.host, s->opt.port, &s->listen_fd, &s->port);
  if (!st) st = create_loops(s);
  if (!st) st = start_threads(s);
  if (st) {
    kiln_grpc_server_free(s);
    return st;
  }
  *out = s;
  return NULL;
}

kiln_status kx_grpc_serve_fd(kiln_grpc_server *s, int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0)
    return kiln_error(KILN_INVALID_ARGUMENT, "grpc: fd %d: %s", fd, strerror(errno));
  gio *io = &s->io[atomic_fetch_add(&s->next_io, 1) % (unsigned)s->nio];
  gconn *c = conn_new(io, fd);
  if (!c) return kiln_error(KILN_RESOURCE_EXHAUSTED, "grpc: out of memory");
  c->job = (ev_job){.fn = conn_on_adopt, .arg = c};
  ev_post(io->loop, &c->job);
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
  for (int i = 0; i < s->nio; i++)
    if (s->io[i].thread_started) ev_stop(s->io[i].loop);
  for (int i = 0; i < s->nio; i++)
    if (s->io[i].thread_started) pthread_join(s->io[i].thread, NULL);
  for (int i = 0; i < s->nio; i++) {
    gio *io = &s->io[i];
    while (io->conns) conn_free(io->conns);
    ev_loop_free(io->loop);
  }
  if (s->listen_fd >= 0) close(s->listen_fd);
  if (s->callbacks) nghttp2_session_callbacks_del(s->callbacks);
  free(s->io);
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->mu);
  free(s);
}
