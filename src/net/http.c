/* The HTTP/1.1 server of include/kiln/net.h: the connection state machine around http-parser on
 * the I/O threads of io_group.c (one ev loop each), with every client-controlled size and
 * duration bounded.
 *
 * A connection is owned by the I/O thread that accepted it and only ever touched there, with one
 * exception: kiln_http_respond, which on another thread builds the response head into the
 * connection's exchange and posts the exchange's job to the owner loop. A connection moves
 * through READ (waiting for or parsing a request) -> HANDLER (request with the handler; no
 * reading, so pipelined bytes wait in the buffer) -> WRITE (response being sent) -> READ again,
 * or LINGER (our side shut down; reading until the client closes, so that closing on unread data
 * does not reset the connection and destroy the response it has yet to read). */
#include "kiln/net.h"

#include <errno.h>
#include <http_parser.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "net/ev.h"
#include "net/http_internal.h"
#include "net/io_group.h"
#include "net/listen.h"

#define READ_CHUNK 16384
#define READS_PER_EVENT 16    /* then other connections get their turn */
#define LINGER_MS 1000        /* longest wait for the client to close after our last response */
#define KEEP_BUFFER (1 << 20) /* request buffers larger than this are freed between requests */
/* How long an idle keep-alive connection stays open once the server drains: a client that sends
 * its next request meanwhile is still answered (with Connection: close) instead of finding the
 * connection closed under it. */
#define DRAIN_IDLE_MS 1000

typedef struct http_io http_io;
typedef struct conn conn;

enum conn_state { C_READ, C_HANDLER, C_WRITE, C_LINGER };
enum timer_kind { T_NONE, T_IDLE, T_REQUEST, T_WRITE, T_LINGER };
enum header_part { H_NONE, H_FIELD, H_VALUE };

struct kiln_http_exchange {
  conn *conn;
  kx_buf head; /* status line + headers, built by kiln_http_respond on the caller's thread */
  char *body;
  size_t body_len;
  int close; /* the head says "Connection: close" */
  int ready; /* answered inside the handler: sent when the handler returns */
};

struct conn {
  http_io *io;
  conn *prev, *next; /* the I/O thread's list */
  int fd;            /* -1 once the client is gone while its exchange is in flight */
  enum conn_state state;
  int counted; /* holds one of max_connections (not so for one refused with 503) */
  int peer_eof, peer_gone;
  int in_request, headers_done, in_handler, close_after, expect_continue, keep_alive, is_head;
  http_parser parser;
  size_t head_bytes; /* request line + headers of the message being parsed */
  kx_buf in;         /* bytes read; [in_off, in.len) not yet parsed */
  size_t in_off;
  /* the request being assembled */
  kx_buf url, field, value, path, body, content_type, request_id, traceparent, authorization;
  int has_content_type, has_request_id, has_traceparent, has_authorization;
  kx_buf tracestate;
  int has_tracestate;
  char peer[64]; /* the client's address, "ip:port" */
  enum header_part header_part;
  int64_t inference_header_length;
  int reject_status; /* set by a parser callback: answer with this and close */
  char reject_msg[160];
  kiln_http_request req;
  kiln_http_exchange ex;
  ev_job job; /* adoption by the loop, then the completion of each exchange */
  /* bytes being written: out[out_off..] (100 Continue, response head), then the body */
  kx_buf out;
  size_t out_off;
  char *out_body;
  size_t out_body_len, out_body_off;
  ev_timer timer;
  enum timer_kind timer_kind;
};

struct http_io {
  kiln_http_server *server;
  ev_loop *loop;
  kx_io *base; /* the group's side of this loop */
  conn *conns;
};

struct kiln_http_server {
  kiln_http_options opt; /* defaults filled in */
  kiln_http_handler handler;
  void *ctx;
  int port;
  int nio;
  http_io *io;
  kx_io_group *group;
  atomic_llong connections, connections_total, in_flight, rejected_total;
};

static int conn_parse(conn *c);
static int conn_flush(conn *c);
static int conn_reject(conn *c, int status, const char *message);

/* ---------------------------------------------------------------- small helpers */

double kiln_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

const char *kiln_http_reason(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
  }
}

static void buf_clear(kx_buf *b) {
  if (b->cap > KEEP_BUFFER || b->failed) {
    kx_buf_free(b);
    return;
  }
  b->len = 0;
  if (b->data) b->data[0] = '\0';
}

/* The buffer's text; "" when nothing was ever appended. */
static const char *buf_str(const kx_buf *b) { return b->data ? b->data : ""; }

char *kiln_http_error_body(const char *message, size_t *len) {
  kx_buf b = {0};
  kx_buf_puts(&b, "{\"error\":");
  kx_buf_json_string(&b, message);
  kx_buf_putc(&b, '}');
  char *s = kx_buf_take(&b, len);
  if (!s) *len = 0;
  return s;
}

/* Status line and headers. `length` < 0: no Content-Length (1xx, 204, 304). */
static void build_head(kx_buf *b, int status, const char *content_type, const char *extra, long long length,
                       int close, int http10) {
  kx_buf_printf(b, "HTTP/1.1 %d %s\r\n", status, kiln_http_reason(status));
  if (content_type) kx_buf_printf(b, "Content-Type: %s\r\n", content_type);
  if (length >= 0) kx_buf_printf(b, "Content-Length: %lld\r\n", length);
  if (close) kx_buf_puts(b, "Connection: close\r\n");
  else if (http10) kx_buf_puts(b, "Connection: keep-alive\r\n");
  if (extra) kx_buf_puts(b, extra);
  kx_buf_puts(b, "\r\n");
}

/* ---------------------------------------------------------------- connection lifetime */

static void conn_on_event(ev_loop *l, int fd, int ready, void *arg);
static void conn_on_timer(ev_loop *l, void *arg);
static void conn_on_completion(ev_loop *l, void *arg);

static conn *conn_new(http_io *io, int fd) {
  conn *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->io = io;
  c->fd = fd;
  c->state = C_READ;
  c->inference_header_length = -1;
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  c->ex.conn = c;
  c->job.fn = conn_on_completion;
  c->job.arg = c;
  ev_timer_init(&c->timer, conn_on_timer, c);
  return c;
}

static void conn_link(conn *c) {
  http_io *io = c->io;
  c->prev = NULL;
  c->next = io->conns;
  if (io->conns) io->conns->prev = c;
  io->conns = c;
}

static void conn_unlink(conn *c) {
  if (c->prev) c->prev->next = c->next;
  else if (c->io->conns == c) c->io->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = NULL;
}

static void conn_close_fd(conn *c) {
  if (c->fd < 0) return;
  ev_remove(c->io->loop, c->fd);
  close(c->fd);
  c->fd = -1;
}

/* Frees the connection and everything it holds; returns -1 so callers can `return conn_free(c)`. */
static int conn_free(conn *c) {
  kiln_http_server *s = c->io->server;
  conn_close_fd(c);
  ev_timer_stop(c->io->loop, &c->timer);
  conn_unlink(c);
  kx_buf *bufs[] = {&c->in, &c->url, &c->field, &c->value, &c->path, &c->body,
                    &c->content_type, &c->request_id, &c->traceparent, &c->authorization, &c->out, &c->ex.head,
                    &c->tracestate};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) kx_buf_free(bufs[i]);
  free(c->ex.body);
  free(c->out_body);
  if (c->counted) atomic_fetch_sub(&s->connections, 1);
  free(c);
  return -1;
}

/* The client went away while its exchange is with the handler: the socket goes now, the object
 * stays until kiln_http_respond arrives (and drops the response). */
static void conn_detach(conn *c) {
  conn_close_fd(c);
  ev_timer_stop(c->io->loop, &c->timer);
  c->peer_gone = 1;
}

/* An I/O error: free the connection, or detach it while its exchange is in flight. */
static int conn_lost(conn *c) {
  if (c->state == C_HANDLER) {
    conn_detach(c);
    return -1;
  }
  return conn_free(c);
}

static int conn_arm(conn *c, enum timer_kind kind, int ms) {
  c->timer_kind = kind;
  return ev_timer_start(c->io->loop, &c->timer, ms);
}

static void conn_disarm(conn *c) {
  c->timer_kind = T_NONE;
  ev_timer_stop(c->io->loop, &c->timer);
}

static int out_pending(const conn *c) { return c->out_off < c->out.len || c->out_body_off < c->out_body_len; }

/* Sets epoll interest from the state; -1 (connection gone) if that fails. */
static int conn_update_interest(conn *c) {
  int mask = 0;
  if ((c->state == C_READ && !c->peer_eof) || c->state == C_LINGER) mask |= EV_READABLE;
  if (out_pending(c)) mask |= EV_WRITABLE;
  if (ev_set(c->io->loop, c->fd, mask) != 0) return conn_lost(c);
  return 0;
}

/* Our side is done: shut down writing and read until the client closes (or LINGER_MS). */
static int conn_linger(conn *c) {
  if (c->peer_eof || shutdown(c->fd, SHUT_WR) != 0) return conn_free(c);
  c->state = C_LINGER;
  c->in_off = c->in.len = 0;
  if (conn_arm(c, T_LINGER, LINGER_MS) != 0) return conn_free(c);
  return conn_update_interest(c);
}

static int conn_linger_read(conn *c) {
  char sink[4096];
  for (int i = 0; i < READS_PER_EVENT; i++) {
    ssize_t r = recv(c->fd, sink, sizeof sink, 0);
    if (r > 0) continue;
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    return conn_free(c);
  }
  return 0;
}

/* ---------------------------------------------------------------- parser callbacks */

/* Records a rejection for conn_parse to send; returns -1 to stop the parser. */
static int parse_reject(conn *c, int status, const char *message) {
  if (!c->reject_status) {
    c->reject_status = status;
    snprintf(c->reject_msg, sizeof c->reject_msg, "%s", message);
  }
  return -1;
}

static int parse_append(conn *c, kx_buf *b, const char *at, size_t len) {
  kx_buf_append(b, at, len);
  return b->failed ? parse_reject(c, 503, "out of memory") : 0;
}

static void reset_request(conn *c) {
  kx_buf *bufs[] = {&c->url, &c->field, &c->value, &c->path, &c->body, &c->content_type, &c->request_id,
                    &c->traceparent, &c->authorization, &c->tracestate};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) buf_clear(bufs[i]);
  c->has_content_type = c->has_request_id = c->has_traceparent = c->has_authorization = 0;
  c->has_tracestate = 0;
  c->header_part = H_NONE;
  c->inference_header_length = -1;
  c->in_request = c->headers_done = c->expect_continue = c->is_head = 0;
  c->head_bytes = 0;
  memset(&c->req, 0, sizeof c->req);
}

static int on_message_begin(http_parser *p) {
  conn *c = p->data;
  reset_request(c);
  c->in_request = 1;
  if (conn_arm(c, T_REQUEST, c->io->server->opt.request_timeout_ms) != 0)
    return parse_reject(c, 503, "out of memory");
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t len) {
  conn *c = p->data;
  return parse_append(c, &c->url, at, len);
}

/* Parses a non-negative decimal integer; -1 when it is not one (or overflows int64). */
static int64_t parse_length(const char *s, size_t n) {
  if (n == 0 || n > 18) return -1;
  int64_t v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

static int capture(conn *c, kx_buf *dst, int *has) {
  buf_clear(dst);
  kx_buf_append(dst, buf_str(&c->value), c->value.len);
  *has = 1;
  return dst->failed ? parse_reject(c, 503, "out of memory") : 0;
}

/* One complete header (field + value) has been seen: keep the ones kiln_http_request carries. */
static int finish_header(conn *c) {
  while (c->value.len > 0 && (c->value.data[c->value.len - 1] == ' ' || c->value.data[c->value.len - 1] == '\t'))
    c->value.data[--c->value.len] = '\0';
  const char *name = buf_str(&c->field), *value = buf_str(&c->value);
  if (!strcasecmp(name, "content-type")) return capture(c, &c->content_type, &c->has_content_type);
  if (!strcasecmp(name, "x-request-id")) return capture(c, &c->request_id, &c->has_request_id);
  if (!strcasecmp(name, "traceparent")) return capture(c, &c->traceparent, &c->has_traceparent);
  if (!strcasecmp(name, "authorization")) return capture(c, &c->authorization, &c->has_authorization);
  if (!strcasecmp(name, "tracestate")) { /* W3C: several tracestate headers form one list */
    if (c->has_tracestate) kx_buf_putc(&c->tracestate, ',');
    kx_buf_append(&c->tracestate, value, c->value.len);
    c->has_tracestate = 1;
    return c->tracestate.failed ? parse_reject(c, 503, "out of memory") : 0;
  }
  if (!strcasecmp(name, "expect")) {
    if (!strcasecmp(value, "100-continue")) c->expect_continue = 1;
    return 0;
  }
  if (!strcasecmp(name, "inference-header-content-length")) {
    c->inference_header_length = parse_length(value, c->value.len);
    if (c->inference_header_length < 0) {
      char msg[128];
      snprintf(msg, sizeof msg, "Inference-Header-Content-Length must be a non-negative integer, got '%.40s'", value);
      return parse_reject(c, 400, msg);
    }
  }
  return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
  conn *c = p->data;
  if (c->header_part == H_VALUE && finish_header(c) != 0) return -1;
  if (c->header_part != H_FIELD) {
    buf_clear(&c->field);
    buf_clear(&c->value);
  }
  c->header_part = H_FIELD;
  return parse_append(c, &c->field, at, len);
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  conn *c = p->data;
  if (c->header_part != H_VALUE) buf_clear(&c->value);
  c->header_part = H_VALUE;
  return parse_append(c, &c->value, at, len);
}

static int on_headers_complete(http_parser *p) {
  conn *c = p->data;
  const kiln_http_options *o = &c->io->server->opt;
  if (c->header_part != H_NONE && finish_header(c) != 0) return -1;
  c->header_part = H_NONE;
  c->headers_done = 1;
  int has_length = (p->flags & F_CONTENTLENGTH) != 0;
  if (has_length && p->content_length > o->max_body_bytes) {
    char msg[96];
    snprintf(msg, sizeof msg, "request body larger than %zu bytes", o->max_body_bytes);
    return parse_reject(c, 413, msg);
  }
  int has_body = (p->flags & F_CHUNKED) || (has_length && p->content_length > 0);
  if (c->expect_continue && has_body && p->http_major == 1 && p->http_minor >= 1) {
    kx_buf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
    if (c->out.failed) return parse_reject(c, 503, "out of memory");
  }
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  conn *c = p->data;
  size_t max = c->io->server->opt.max_body_bytes;
  if (len > max - c->body.len) {
    char msg[96];
    snprintf(msg, sizeof msg, "request body larger than %zu bytes", max);
    return parse_reject(c, 413, msg);
  }
  return parse_append(c, &c->body, at, len);
}

static int on_message_complete(http_parser *p) {
  conn *c = p->data;
  c->keep_alive = http_should_keep_alive(p);
  c->is_head = p->method == HTTP_HEAD;
  http_parser_pause(p, 1); /* one request at a time: the rest waits in the buffer */
  return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---------------------------------------------------------------- requests */

static int hex_digit(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

/* Percent-decodes [s, s+n) into out; -1 on a bad escape or an encoded NUL. */
static int decode_path(kx_buf *out, const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    if (ch == '%') {
      int hi = n - i >= 3 ? hex_digit(s[i + 1]) : -1, lo = n - i >= 3 ? hex_digit(s[i + 2]) : -1;
      if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) return -1;
      ch = (char)(hi * 16 + lo);
      i += 2;
    }
    kx_buf_putc(out, ch);
  }
  if (out->data == NULL) kx_buf_append(out, "", 0);
  return 0;
}

/* Splits the URL into the decoded path and the raw query (NUL-terminated in place). */
static int split_url(conn *c, const char **query) {
  char *u = c->url.data ? c->url.data : (char *)"";
  size_t n = c->url.len, path_off = 0, path_len = n;
  *query = "";
  if (n > 0 && u[0] != '/') { /* absolute-form (http://host/p?q) or authority (CONNECT) */
    struct http_parser_url pu;
    http_parser_url_init(&pu);
    if (http_parser_parse_url(u, n, c->parser.method == HTTP_CONNECT, &pu) == 0) {
      path_off = (pu.field_set & (1 << UF_PATH)) ? pu.field_data[UF_PATH].off : n;
      path_len = (pu.field_set & (1 << UF_PATH)) ? pu.field_data[UF_PATH].len : 0;
      if (pu.field_set & (1 << UF_QUERY)) {
        u[pu.field_data[UF_QUERY].off + pu.field_data[UF_QUERY].len] = '\0';
        *query = u + pu.field_data[UF_QUERY].off;
      }
    }
  } else {
    char *q = memchr(u, '?', n);
    if (q) {
      path_len = (size_t)(q - u);
      *q = '\0';
      *query = q + 1;
    }
  }
  if (decode_path(&c->path, u + path_off, path_len) != 0) return -1;
  return c->path.failed ? -2 : 0;
}

static int conn_complete(conn *c);

/* A whole request is in: hand it to the handler. */
static int conn_dispatch(conn *c) {
  kiln_http_server *s = c->io->server;
  const char *query;
  int rc = split_url(c, &query);
  if (rc == -1) return conn_reject(c, 400, "malformed request path: invalid percent-escape");
  if (rc != 0) return conn_reject(c, 503, "out of memory");
  conn_disarm(c);
  c->req = (kiln_http_request){
      .method = http_method_str((enum http_method)c->parser.method),
      .path = buf_str(&c->path),
      .query = query,
      .body = c->body.len ? c->body.data : NULL,
      .body_len = c->body.len,
      .content_type = c->has_content_type ? buf_str(&c->content_type) : NULL,
      .inference_header_length = c->inference_header_length,
      .request_id = c->has_request_id ? buf_str(&c->request_id) : NULL,
      .traceparent = c->has_traceparent ? buf_str(&c->traceparent) : NULL,
      .tracestate = c->has_tracestate ? buf_str(&c->tracestate) : NULL,
      .authorization = c->has_authorization ? buf_str(&c->authorization) : NULL,
      .peer = c->peer,
      .keep_alive = c->keep_alive && !kx_io_group_draining(s->group),
      .received_at = kiln_now(),
  };
  c->in_request = 0;
  /* no reading while the handler has the request: pipelined bytes wait in the buffer */
  if (ev_set(c->io->loop, c->fd, out_pending(c) ? EV_WRITABLE : 0) != 0) return conn_free(c);
  c->state = C_HANDLER;
  atomic_fetch_add(&s->in_flight, 1);
  c->ex.ready = 0;
  c->in_handler = 1;
  s->handler(s->ctx, &c->ex, &c->req);
  c->in_handler = 0;
  if (c->ex.ready) return conn_complete(c);
  return 0;
}

/* The response has been written: next request, or close. */
static int conn_after_response(conn *c) {
  free(c->out_body);
  c->out_body = NULL;
  c->out_body_len = c->out_body_off = 0;
  reset_request(c);
  if (c->close_after) return conn_linger(c);
  c->state = C_READ;
  /* A response without "Connection: close" whose drain began while it was on its way: the client
   * may already be sending its next request, so it gets the drain's idle window (that request is
   * answered with close) rather than a socket closed under it. */
  int ms = c->io->server->opt.idle_timeout_ms;
  if (kx_io_group_draining(c->io->server->group) && ms > DRAIN_IDLE_MS) ms = DRAIN_IDLE_MS;
  if (conn_arm(c, T_IDLE, ms) != 0) return conn_free(c);
  return conn_update_interest(c);
}

/* The exchange has been answered (ex filled in): queue the response for writing. */
static int conn_complete(conn *c) {
  kiln_http_exchange *ex = &c->ex;
  if (c->peer_gone || ex->head.failed) return conn_free(c);
  kx_buf_append(&c->out, ex->head.data, ex->head.len);
  buf_clear(&ex->head);
  if (c->out.failed) return conn_free(c);
  c->out_body = ex->body;
  c->out_body_len = ex->body_len;
  c->out_body_off = 0;
  ex->body = NULL;
  ex->body_len = 0;
  c->close_after = ex->close;
  c->state = C_WRITE;
  return conn_flush(c);
}

/* Continues with buffered bytes after a response went out on its own (not inside conn_parse). */
static void conn_resume(conn *c) {
  if (c->state == C_READ) conn_parse(c);
}

static void conn_on_completion(ev_loop *l, void *arg) {
  conn *c = arg;
  if (conn_complete(c) == 0) conn_resume(c);
}

/* ---------------------------------------------------------------- reading and writing */

/* Writes what is pending; at the end of a response moves on (conn_after_response). */
static int conn_flush(conn *c) {
  int progress = 0;
  while (out_pending(c)) {
    struct iovec iov[2];
    int n = 0;
    if (c->out_off < c->out.len) iov[n++] = (struct iovec){c->out.data + c->out_off, c->out.len - c->out_off};
    if (c->out_body_off < c->out_body_len)
      iov[n++] = (struct iovec){c->out_body + c->out_body_off, c->out_body_len - c->out_body_off};
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
    ssize_t w = sendmsg(c->fd, &m, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      /* a client that stops reading holds its connection for idle_timeout_ms at most */
      if (c->state == C_WRITE && (progress || c->timer_kind != T_WRITE) &&
          conn_arm(c, T_WRITE, c->io->server->opt.idle_timeout_ms) != 0)
        return conn_free(c);
      return conn_update_interest(c);
    }
    if (w < 0) return conn_lost(c);
    progress = 1;
    size_t done = (size_t)w, head = c->out.len - c->out_off;
    if (done >= head) {
      c->out_off = c->out.len;
      c->out_body_off += done - head;
    } else {
      c->out_off += done;
    }
  }
  buf_clear(&c->out);
  c->out_off = 0;
  if (c->state == C_WRITE) {
    conn_disarm(c);
    return conn_after_response(c);
  }
  return conn_update_interest(c);
}

/* Answers on behalf of the HTTP layer (4xx/5xx) and closes after it. */
static int conn_reject(conn *c, int status, const char *message) {
  kiln_http_server *s = c->io->server;
  atomic_fetch_add(&s->rejected_total, 1);
  size_t len;
  char *body = kiln_http_error_body(message, &len);
  build_head(&c->out, status, body ? "application/json" : NULL, NULL, (long long)len, 1, 0);
  if (c->out.failed) {
    free(body);
    return conn_free(c);
  }
  free(c->out_body);
  c->out_body = body;
  c->out_body_len = len;
  c->out_body_off = 0;
  c->in_off = c->in.len; /* nothing more is parsed */
  c->in_request = 0;
  c->close_after = 1;
  c->state = C_WRITE;
  conn_disarm(c);
  return conn_flush(c);
}

static int conn_reject_parse_error(conn *c, enum http_errno e) {
  const kiln_http_options *o = &c->io->server->opt;
  char msg[160];
  if (e == HPE_HEADER_OVERFLOW) {
    snprintf(msg, sizeof msg, "request line and headers larger than %zu bytes", o->max_header_bytes);
    return conn_reject(c, 431, msg);
  }
  snprintf(msg, sizeof msg, "malformed HTTP request: %s", http_errno_description(e));
  return conn_reject(c, 400, msg);
}

/* Parses buffered bytes while the connection is reading; dispatches each complete request. */
static int conn_parse(conn *c) {
  const kiln_http_options *o = &c->io->server->opt;
  while (c->state == C_READ && c->in_off < c->in.len) {
    size_t feed = c->in.len - c->in_off;
    /* Feeding a head at most up to the limit makes the count exact: a head not complete within
     * max_header_bytes is too large. */
    if (!c->headers_done && feed > o->max_header_bytes - c->head_bytes) feed = o->max_header_bytes - c->head_bytes;
    size_t n = http_parser_execute(&c->parser, &parser_settings, c->in.data + c->in_off, feed);
    c->in_off += n;
    if (!c->headers_done) c->head_bytes += n;
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (c->reject_status) return conn_reject(c, c->reject_status, c->reject_msg);
    if (e == HPE_PAUSED) {
      http_parser_pause(&c->parser, 0);
      if (conn_dispatch(c) != 0) return -1;
      continue;
    }
    if (e != HPE_OK) return conn_reject_parse_error(c, e);
    if (!c->headers_done && c->head_bytes >= o->max_header_bytes) return conn_reject_parse_error(c, HPE_HEADER_OVERFLOW);
  }
  if (c->state != C_READ) return 0;
  if (c->peer_eof) return conn_free(c); /* the client is done (possibly mid-request) */
  if (out_pending(c)) return conn_flush(c); /* 100 Continue */
  return conn_update_interest(c);
}

static int conn_read(conn *c) {
  for (int i = 0; i < READS_PER_EVENT && c->state == C_READ && !c->peer_eof; i++) {
    if (c->in_off == c->in.len) {
      c->in_off = c->in.len = 0;
    } else if (c->in_off > 0) {
      memmove(c->in.data, c->in.data + c->in_off, c->in.len - c->in_off);
      c->in.len -= c->in_off;
      c->in_off = 0;
    }
    char *p = kx_buf_reserve(&c->in, READ_CHUNK);
    if (!p) return conn_free(c);
    ssize_t r = recv(c->fd, p, READ_CHUNK, 0);
    if (r > 0) {
      c->in.len += (size_t)r;
      if (conn_parse(c) != 0) return -1;
    } else if (r == 0) {
      c->peer_eof = 1;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      break;
    } else if (errno != EINTR) {
      return conn_free(c);
    }
  }
  return conn_parse(c);
}

static void conn_on_event(ev_loop *l, int fd, int ready, void *arg) {
  conn *c = arg;
  if (c->state == C_HANDLER && (ready & EV_HANGUP)) {
    conn_detach(c); /* reset by the client; the response will be dropped */
    return;
  }
  if ((ready & EV_WRITABLE) && out_pending(c) && conn_flush(c) != 0) return;
  if (c->state == C_LINGER) {
    if (ready & (EV_READABLE | EV_HANGUP)) conn_linger_read(c);
    return;
  }
  if (c->state == C_READ && (ready & (EV_READABLE | EV_HANGUP))) {
    conn_read(c);
    return;
  }
  if ((ready & EV_HANGUP) && c->state != C_HANDLER) {
    conn_free(c);
    return;
  }
  conn_resume(c);
}

static void conn_on_timer(ev_loop *l, void *arg) {
  conn *c = arg;
  enum timer_kind kind = c->timer_kind;
  c->timer_kind = T_NONE;
  if (kind == T_REQUEST && c->state == C_READ) {
    char msg[96];
    snprintf(msg, sizeof msg, "timed out: the request was not complete within %d ms", c->io->server->opt.request_timeout_ms);
    conn_reject(c, 408, msg);
  } else if (kind == T_IDLE && c->state == C_READ && !c->in_request) {
    conn_free(c);
  } else if (kind == T_WRITE || kind == T_LINGER) {
    conn_lost(c);
  }
}

/* Takes over a connected socket on its loop's thread; a connection beyond max_connections is
 * answered 503 and closed. */
static void conn_start(conn *c) {
  kiln_http_server *s = c->io->server;
  long long n = atomic_fetch_add(&s->connections, 1) + 1;
  int over = n > s->opt.max_connections;
  if (over) atomic_fetch_sub(&s->connections, 1);
  else atomic_fetch_add(&s->connections_total, 1);
  c->counted = !over;
  conn_link(c);
  if (ev_add(c->io->loop, c->fd, EV_READABLE, conn_on_event, c) != 0) {
    conn_free(c);
    return;
  }
  if (over) {
    conn_reject(c, 503, "too many connections");
    return;
  }
  if (kx_io_group_draining(s->group)) {
    conn_linger(c);
    return;
  }
  if (conn_arm(c, T_IDLE, s->opt.idle_timeout_ms) != 0) conn_free(c);
}

static void conn_on_adopt(ev_loop *l, void *arg) {
  conn *c = arg;
  c->job.fn = conn_on_completion;
  conn_start(c);
}

/* ---------------------------------------------------------------- responding */

void kiln_http_respond(kiln_http_exchange *ex, int status, const char *content_type, const char *extra_headers,
                       char *body, size_t len) {
  conn *c = ex->conn;
  kiln_http_server *s = c->io->server;
  int close = !c->req.keep_alive || kx_io_group_draining(s->group);
  int bodiless = (status >= 100 && status < 200) || status == 204 || status == 304;
  buf_clear(&ex->head);
  build_head(&ex->head, status, content_type, extra_headers, bodiless ? -1 : (long long)len, close,
             c->parser.http_major == 1 && c->parser.http_minor == 0);
  if (bodiless || c->is_head) {
    free(body);
    body = NULL;
    len = 0;
  }
  ex->body = body;
  ex->body_len = len;
  ex->close = close;
  atomic_fetch_sub(&s->in_flight, 1);
  if (!kx_io_on_thread(c->io->base)) {
    ev_post(c->io->loop, &c->job);
  } else if (c->in_handler) {
    ex->ready = 1;
  } else if (conn_complete(c) == 0) {
    conn_resume(c);
  }
}

void kiln_http_respond_error(kiln_http_exchange *ex, int status, const char *message) {
  size_t len;
  char *body = kiln_http_error_body(message ? message : "", &len);
  kiln_http_respond(ex, status, body ? "application/json" : NULL, NULL, body, len);
}

/* ---------------------------------------------------------------- listener */

static void on_conn(kx_io *base, int fd, const char *peer) {
  conn *c = conn_new(base->data, fd);
  if (!c) {
    close(fd);
    return;
  }
  memcpy(c->peer, peer, sizeof c->peer);
  conn_start(c);
}

/* On each loop, once it has dropped the listener: give idle connections DRAIN_IDLE_MS (or the
 * idle timeout, if shorter) to send one more request. */
static void on_stop_accepting(kx_io *base) {
  http_io *io = base->data;
  kiln_http_server *s = io->server;
  conn *next;
  for (conn *c = io->conns; c; c = next) {
    next = c->next;
    if (c->state == C_READ && !c->in_request && !out_pending(c)) {
      int ms = s->opt.idle_timeout_ms < DRAIN_IDLE_MS ? s->opt.idle_timeout_ms : DRAIN_IDLE_MS;
      if (conn_arm(c, T_IDLE, ms) != 0) conn_free(c);
    }
  }
}

void kiln_http_server_stop_accepting(kiln_http_server *s) { kx_io_group_stop_accepting(s->group); }

/* ---------------------------------------------------------------- server */

static kiln_status resolve_options(const kiln_http_options *in, kiln_http_options *o) {
  *o = in ? *in : (kiln_http_options){0};
  kiln_status st = kx_io_group_defaults("http", &o->host, o->port, &o->threads);
  if (st) return st;
  if (!o->max_header_bytes) o->max_header_bytes = 64 * 1024;
  if (!o->max_body_bytes) o->max_body_bytes = 64 * 1024 * 1024;
  if (o->max_connections <= 0) o->max_connections = 10000;
  if (o->idle_timeout_ms <= 0) o->idle_timeout_ms = 60000;
  if (o->request_timeout_ms <= 0) o->request_timeout_ms = 30000;
  return NULL;
}

/* The I/O threads, each with this server's state for its loop. */
static kiln_status start_io(kiln_http_server *s, int listen_fd) {
  kx_io_group_config cfg = {
      .what = "http", .threads = s->opt.threads, .on_conn = on_conn, .on_stop_accepting = on_stop_accepting};
  kiln_status st = kx_io_group_create(&cfg, listen_fd, &s->group);
  if (st) return st;
  s->io = calloc((size_t)kx_io_group_size(s->group), sizeof *s->io);
  if (!s->io) return kiln_error(KILN_RESOURCE_EXHAUSTED, "http: out of memory");
  s->nio = kx_io_group_size(s->group);
  for (int i = 0; i < s->nio; i++) {
    http_io *io = &s->io[i];
    io->server = s;
    io->base = kx_io_group_io(s->group, i);
    io->loop = io->base->loop;
    io->base->data = io;
  }
  return kx_io_group_start(s->group);
}

kiln_status kiln_http_server_start(const kiln_http_options *opt, kiln_http_handler handler, void *ctx,
                                   kiln_http_server **out) {
  *out = NULL;
  if (!handler) return kiln_error(KILN_INVALID_ARGUMENT, "http server: no handler");
  kiln_http_server *s = calloc(1, sizeof *s);
  if (!s) return kiln_error(KILN_RESOURCE_EXHAUSTED, "http server: out of memory");
  s->handler = handler;
  s->ctx = ctx;
  int listen_fd = -1;
  kiln_status st = resolve_options(opt, &s->opt);
  if (!st) st = kx_open_listener(s->opt.host, s->opt.port, &listen_fd, &s->port);
  if (!st) st = start_io(s, listen_fd);
  if (st) {
    kiln_http_server_free(s);
    return st;
  }
  *out = s;
  return NULL;
}

kiln_status kx_http_serve_fd(kiln_http_server *s, int fd) {
  kx_io *base;
  kiln_status st = kx_io_group_adopt(s->group, fd, &base);
  if (st) return st;
  http_io *io = base->data;
  conn *c = conn_new(io, fd);
  if (!c) return kiln_error(KILN_RESOURCE_EXHAUSTED, "http: out of memory");
  c->job.fn = conn_on_adopt;
  ev_post(io->loop, &c->job);
  return NULL;
}

int kiln_http_server_port(const kiln_http_server *s) { return s->port; }

void kiln_http_server_stats(kiln_http_server *s, kiln_http_stats *out) {
  out->connections = atomic_load(&s->connections);
  out->connections_total = atomic_load(&s->connections_total);
  out->in_flight = atomic_load(&s->in_flight);
  out->rejected_total = atomic_load(&s->rejected_total);
}

void kiln_http_server_free(kiln_http_server *s) {
  if (!s) return;
  kx_io_group_join(s->group);
  for (int i = 0; i < s->nio; i++)
    while (s->io[i].conns) conn_free(s->io[i].conns);
  kx_io_group_free(s->group);
  free(s->io);
  free(s);
}
