/* gRPC calls on the streams of the gRPC server's HTTP/2 sessions (see grpc.c for the transport):
 * request metadata and the 5-byte-prefixed messages, the statuses the server answers itself,
 * deadlines, and the public call API the services use from any thread.
 *
 * kiln_grpc_send and kiln_grpc_finish queue their work under the call's mutex and post the
 * call's job to its loop; the job hands the messages to nghttp2 (a data provider that defers
 * while the queue is empty) and ends the call.
 *
 * A call's memory has up to three holders: the stream (from the request's HEADERS until nghttp2
 * closes the stream or the connection goes), the service (from the first message it is given
 * until its kiln_grpc_finish has been processed on the loop), and the posted job. It is freed on
 * its loop when none is left (call_maybe_free), so whichever side ends first, the other never
 * touches freed memory: a send or finish for a call whose client has gone is dropped, and a stream
 * that closes under a call the service holds only marks it cancelled. */
#include "net/grpc_call.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEEP_BUFFER (1 << 20) /* message buffers larger than this are freed between messages */
#define PREFIX KX_GRPC_PREFIX

static void call_on_job(ev_loop *l, void *arg);
static void call_on_deadline(ev_loop *l, void *arg);

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

/* grpc-timeout: 1 to 8 digits and a unit (H M S m u n). Returns seconds (0: already passed), -1
 * when malformed, or -2 for "no deadline": like grpc-core, more digits are read, but a value
 * beyond 10^9 units means none. */
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
  return huge ? -2 : (double)v * unit;
}

static int is_grpc_content_type(const char *ct) {
  static const char base[] = "application/grpc";
  size_t n = sizeof base - 1;
  return ct && strncmp(ct, base, n) == 0 && (ct[n] == '\0' || ct[n] == '+' || ct[n] == ';');
}

#define NV(name, value) \
  { (uint8_t *)(name), (uint8_t *)(value), strlen(name), strlen(value), NGHTTP2_NV_FLAG_NONE }

/* ---------------------------------------------------------------- calls: lifetime */

static void outmsgs_free(kx_grpc_outmsg *m) {
  while (m) {
    kx_grpc_outmsg *next = m->next;
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

kiln_grpc_call *kx_grpc_call_new(kx_grpc_conn *c, int32_t stream_id) {
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
  kx_grpc_conn *c = call->conn;
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
    kx_grpc_outmsg *m = call->out_head;
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
  kx_grpc_outmsg *pend = call->pend_head;
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
  kx_grpc_conn *c = call->conn;
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
    kx_grpc_conn_flush(c);
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

static kx_grpc_outmsg *outmsg_new(uint8_t *message, size_t len) {
  kx_grpc_outmsg *m = calloc(1, sizeof *m);
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
  kx_grpc_outmsg *m = outmsg_new(message, len);
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
  kx_grpc_outmsg *m = NULL;
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

void kiln_grpc_set_context(kiln_grpc_call *call, void *context) { call->context = context; }

void *kiln_grpc_context(const kiln_grpc_call *call) { return call->context; }

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
  kx_grpc_conn *c = call->conn;
  if (!c || call->finished) return;
  call_answer(call, KILN_GRPC_DEADLINE_EXCEEDED, "deadline exceeded");
  kx_grpc_conn_flush(c);
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
void kx_grpc_call_data(kiln_grpc_call *call, const uint8_t *data, size_t len) {
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
void kx_grpc_call_half_close(kiln_grpc_call *call) {
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
void kx_grpc_call_begin(kiln_grpc_call *call) {
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
    if (t == -1) {
      snprintf(text, sizeof text, "malformed grpc-timeout '%.40s': expected up to 8 digits and a unit (H M S m u n)",
               call->timeout.data);
      call_answer(call, KILN_GRPC_INTERNAL, text);
      return;
    }
    if (t >= 0) {
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


void kx_grpc_call_release_stream(kiln_grpc_call *call) {
  call_detach(call);
  call_maybe_free(call);
}

static void capture(kx_buf *b, const uint8_t *value, size_t len) {
  b->len = 0;
  kx_buf_append(b, value, len);
}

void kx_grpc_call_header(kiln_grpc_call *call, int request_block, const uint8_t *name, size_t namelen,
                         const uint8_t *value, size_t valuelen) {
  call->header_bytes += namelen + valuelen + 32; /* HTTP/2's accounting of a header list */
  if (!request_block || call->header_bytes > call->server->opt.max_header_bytes) return;
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
}
