/* The gRPC server (include/kiln/net.h, src/net/grpc.c) driven over TCP by an nghttp2 client:
 * unary and streaming calls, many streams on one connection, flow control with a 10 MiB message,
 * every error the server answers itself, deadlines, cancellation by RST_STREAM and by a lost
 * connection (with the service finishing afterwards), answers from other threads, draining,
 * connection limits, idle connections and the statistics. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "kiln/net.h"
#include "test.h"

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static uint8_t *dup_bytes(const uint8_t *s, size_t n) {
  uint8_t *d = malloc(n ? n : 1);
  if (n) memcpy(d, s, n);
  return d;
}

/* ---------------------------------------------------------------- the test service
 *
 * /test.Echo/Unary: the request back (and its x-request-id as a response header);
 * /test.Echo/Stream: each message back, then OK at the half-close;
 * /test.Echo/Hold, /test.Echo/HoldStream: kept until the test finishes them;
 * /test.Echo/Later: answered by another thread 30 ms later;
 * /test.Echo/Fail: INVALID_ARGUMENT with a message that needs percent-encoding. */

static atomic_int svc_messages, svc_half_closes, svc_half_close_cancelled;
static atomic_llong svc_last_half_close_n;
static pthread_mutex_t held_mu = PTHREAD_MUTEX_INITIALIZER;
static kiln_grpc_call *held;
static char held_method[64];
static double held_deadline;

static int method_is(const char *m, const char *name) { return strcmp(m, name) == 0; }

static kiln_grpc_kind svc_kind(void *ctx, const char *method) {
  if (method_is(method, "/test.Echo/Stream") || method_is(method, "/test.Echo/HoldStream")) return KILN_GRPC_STREAMING;
  if (method_is(method, "/test.Echo/Unary") || method_is(method, "/test.Echo/Hold") ||
      method_is(method, "/test.Echo/Later") || method_is(method, "/test.Echo/Fail") ||
      method_is(method, "/test.Echo/Jitter"))
    return KILN_GRPC_UNARY;
  return KILN_GRPC_UNKNOWN;
}

typedef struct later {
  kiln_grpc_call *call;
  uint8_t *data;
  size_t len;
  int us; /* delay */
} later;

static void *later_main(void *arg) {
  later *l = arg;
  struct timespec ts = {0, (long)l->us * 1000L};
  nanosleep(&ts, NULL);
  kiln_grpc_send(l->call, l->data, l->len);
  kiln_grpc_finish(l->call, KILN_GRPC_OK, NULL, NULL, 0);
  free(l);
  return NULL;
}

static void svc_message(void *ctx, kiln_grpc_call *call, const kiln_grpc_request *req) {
  atomic_fetch_add(&svc_messages, 1);
  if (method_is(req->method, "/test.Echo/Unary")) {
    if (req->request_id) kiln_grpc_add_header(call, "x-request-id", req->request_id);
    kiln_grpc_finish(call, KILN_GRPC_OK, NULL, dup_bytes(req->message, req->len), req->len);
  } else if (method_is(req->method, "/test.Echo/Stream")) {
    kiln_grpc_send(call, dup_bytes(req->message, req->len), req->len);
  } else if (method_is(req->method, "/test.Echo/Later") || method_is(req->method, "/test.Echo/Jitter")) {
    later *l = malloc(sizeof *l);
    int jitter = method_is(req->method, "/test.Echo/Jitter");
    *l = (later){call, dup_bytes(req->message, req->len), req->len, jitter ? (int)(req->len * 97 % 2000) : 30000};
    pthread_t t;
    if (pthread_create(&t, NULL, later_main, l) == 0) pthread_detach(t);
  } else if (method_is(req->method, "/test.Echo/Fail")) {
    kiln_grpc_finish(call, KILN_GRPC_INVALID_ARGUMENT, "bad: 100% \xc3\xbcnicode\n", NULL, 0);
  } else if (req->index == 0) { /* Hold, HoldStream */
    pthread_mutex_lock(&held_mu);
    held = call;
    snprintf(held_method, sizeof held_method, "%s", req->method);
    held_deadline = req->deadline;
    pthread_mutex_unlock(&held_mu);
  }
}

static void svc_half_close(void *ctx, kiln_grpc_call *call, int64_t n) {
  atomic_fetch_add(&svc_half_closes, 1);
  atomic_store(&svc_last_half_close_n, n);
  if (kiln_grpc_cancelled(call)) atomic_fetch_add(&svc_half_close_cancelled, 1);
  pthread_mutex_lock(&held_mu);
  int is_held = held == call;
  pthread_mutex_unlock(&held_mu);
  if (!is_held) kiln_grpc_finish(call, KILN_GRPC_OK, NULL, NULL, 0);
}

static const kiln_grpc_service service = {NULL, svc_kind, svc_message, svc_half_close};

/* Waits (up to 2 s) for the held call and takes it. */
static kiln_grpc_call *take_held(void) {
  for (int i = 0; i < 200; i++) {
    pthread_mutex_lock(&held_mu);
    kiln_grpc_call *c = held;
    held = NULL;
    pthread_mutex_unlock(&held_mu);
    if (c) return c;
    sleep_ms(10);
  }
  return NULL;
}

static kiln_grpc_server *start(kiln_grpc_options o) {
  if (!o.host) o.host = "127.0.0.1";
  if (!o.threads) o.threads = 2;
  kiln_grpc_server *s = NULL;
  CHECK_OK(kiln_grpc_server_start(&o, &service, &s));
  return s;
}

/* Waits (up to 5 s) until no connection and no call is left, then frees the server. */
static void stop(kiln_grpc_server *s) {
  if (!s) return;
  kiln_grpc_stats st;
  for (int i = 0; i < 500; i++) {
    kiln_grpc_server_stats(s, &st);
    if (st.calls == 0 && st.connections == 0) break;
    sleep_ms(10);
  }
  CHECK(st.calls == 0);
  CHECK(st.connections == 0);
  kiln_grpc_server_free(s);
}

/* ---------------------------------------------------------------- a blocking nghttp2 client */

#define MAX_STREAMS 64

typedef struct h2stream {
  int32_t id;
  int closed;
  uint32_t error_code; /* RST_STREAM's code, 0 when none */
  int header_blocks;
  int http_status;
  int grpc_status; /* -1 until seen */
  char grpc_message[512];
  char request_id[64];
  char content_type[64];
  kx_buf data; /* the response's DATA */
  kx_buf body; /* request bytes to send */
  size_t body_off;
  int end; /* end the stream once body is sent */
  int deferred;
} h2stream;

typedef struct h2client {
  int fd;
  nghttp2_session *session;
  h2stream streams[MAX_STREAMS];
  int n;
  int goaway;
  uint32_t goaway_error;
  int eof;
} h2client;

static h2stream *find_stream(h2client *c, int32_t id) {
  for (int i = 0; i < c->n; i++)
    if (c->streams[i].id == id) return &c->streams[i];
  return NULL;
}

static int cl_on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                        const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data) {
  h2stream *st = find_stream(user_data, frame->hd.stream_id);
  if (!st) return 0;
  char v[512];
  snprintf(v, sizeof v, "%.*s", (int)valuelen, (const char *)value);
  if (namelen == 7 && !memcmp(name, ":status", 7)) st->http_status = atoi(v);
  if (namelen == 11 && !memcmp(name, "grpc-status", 11)) st->grpc_status = atoi(v);
  if (namelen == 12 && !memcmp(name, "grpc-message", 12)) snprintf(st->grpc_message, sizeof st->grpc_message, "%s", v);
  if (namelen == 12 && !memcmp(name, "x-request-id", 12)) snprintf(st->request_id, sizeof st->request_id, "%.63s", v);
  if (namelen == 12 && !memcmp(name, "content-type", 12)) snprintf(st->content_type, sizeof st->content_type, "%.63s", v);
  return 0;
}

static int cl_on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
  h2client *c = user_data;
  if (frame->hd.type == NGHTTP2_GOAWAY) {
    c->goaway++;
    c->goaway_error = frame->goaway.error_code;
  }
  if (frame->hd.type == NGHTTP2_HEADERS) {
    h2stream *st = find_stream(c, frame->hd.stream_id);
    if (st) st->header_blocks++;
  }
  return 0;
}

static int cl_on_data(nghttp2_session *session, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *user_data) {
  h2stream *st = find_stream(user_data, id);
  if (st) kx_buf_append(&st->data, data, len);
  return 0;
}

static int cl_on_close(nghttp2_session *session, int32_t id, uint32_t error_code, void *user_data) {
  h2stream *st = find_stream(user_data, id);
  if (st) {
    st->closed = 1;
    st->error_code = error_code;
  }
  return 0;
}

static ssize_t cl_read_body(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                            nghttp2_data_source *source, void *user_data) {
  h2stream *st = source->ptr;
  size_t left = st->body.len - st->body_off, n = left < length ? left : length;
  if (n) memcpy(buf, st->body.data + st->body_off, n);
  st->body_off += n;
  if (st->body_off == st->body.len) {
    if (st->end) *flags |= NGHTTP2_DATA_FLAG_EOF;
    else if (n == 0) {
      st->deferred = 1;
      return NGHTTP2_ERR_DEFERRED;
    }
  }
  return (ssize_t)n;
}

static h2client *h2_connect(int port) {
  h2client *c = calloc(1, sizeof *c);
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(c->fd);
    free(c);
    return NULL;
  }
  nghttp2_session_callbacks *cb;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_on_header_callback(cb, cl_on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, cl_on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, cl_on_data);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, cl_on_close);
  nghttp2_session_client_new(&c->session, cb, c);
  nghttp2_session_callbacks_del(cb);
  nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 24}};
  nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, 1);
  nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0, 1 << 26);
  return c;
}

static void h2_close(h2client *c) {
  if (!c) return;
  for (int i = 0; i < c->n; i++) {
    kx_buf_free(&c->streams[i].data);
    kx_buf_free(&c->streams[i].body);
  }
  nghttp2_session_del(c->session);
  if (c->fd >= 0) close(c->fd);
  free(c);
}

/* Sends what the session has, then waits up to `ms` for bytes and feeds them in. 0, or -1 when
 * the connection has ended. */
static int h2_pump(h2client *c, int ms) {
  for (;;) {
    const uint8_t *data;
    ssize_t n = nghttp2_session_mem_send(c->session, &data);
    if (n <= 0) break;
    for (ssize_t off = 0; off < n;) {
      ssize_t w = send(c->fd, data + off, (size_t)(n - off), MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return -1;
      off += w;
    }
  }
  struct pollfd p = {.fd = c->fd, .events = POLLIN};
  if (poll(&p, 1, ms) <= 0) return 0;
  uint8_t buf[65536];
  ssize_t r = recv(c->fd, buf, sizeof buf, 0);
  if (r <= 0) {
    c->eof = 1;
    return -1;
  }
  if (nghttp2_session_mem_recv(c->session, buf, (size_t)r) < 0) return -1;
  return 0;
}

/* A gRPC message: the 5-byte prefix (flag, big-endian length) and the bytes. */
static void grpc_frame(kx_buf *b, int flag, const void *data, size_t len, size_t declared) {
  uint8_t p[5] = {(uint8_t)flag, (uint8_t)(declared >> 24), (uint8_t)(declared >> 16), (uint8_t)(declared >> 8),
                  (uint8_t)declared};
  kx_buf_append(b, p, 5);
  kx_buf_append(b, data, len);
}

/* Starts a call: POST path with gRPC's headers (plus extra name/value pairs, NULL-ended), request
 * bytes `body` (already framed), ending the stream after them when `end`. */
static h2stream *h2_call(h2client *c, const char *path, const char **extra, const void *body, size_t len, int end) {
  h2stream *st = &c->streams[c->n++];
  memset(st, 0, sizeof *st);
  st->grpc_status = -1;
  st->end = end;
  kx_buf_append(&st->body, body, len);
  nghttp2_nv nva[16];
  size_t n = 0;
#define ADD(nm, v) nva[n++] = (nghttp2_nv){(uint8_t *)(nm), (uint8_t *)(v), strlen(nm), strlen(v), 0}
  int custom_method = 0, custom_ct = 0;
  for (int i = 0; extra && extra[i]; i += 2) {
    custom_method |= !strcmp(extra[i], ":method");
    custom_ct |= !strcmp(extra[i], "content-type");
  }
  if (!custom_method) ADD(":method", "POST");
  for (int i = 0; extra && extra[i]; i += 2) /* pseudo-headers first */
    if (extra[i][0] == ':') ADD(extra[i], extra[i + 1]);
  ADD(":scheme", "http");
  ADD(":authority", "localhost");
  ADD(":path", path);
  if (!custom_ct) ADD("content-type", "application/grpc");
  ADD("te", "trailers");
  for (int i = 0; extra && extra[i]; i += 2)
    if (extra[i][0] != ':') ADD(extra[i], extra[i + 1]);
#undef ADD
  nghttp2_data_provider dp = {.source.ptr = st, .read_callback = cl_read_body};
  st->id = nghttp2_submit_request(c->session, NULL, nva, n, (len || end) ? &dp : NULL, st);
  if (!len && !end) { /* headers only, body to come: a provider that waits */
    nghttp2_submit_data(c->session, NGHTTP2_FLAG_NONE, st->id, &dp);
  }
  return st;
}

/* Appends bytes to a call's request (ending it when `end`). */
static void h2_send_more(h2client *c, h2stream *st, const void *data, size_t len, int end) {
  kx_buf_append(&st->body, data, len);
  st->end = end;
  if (st->deferred) {
    st->deferred = 0;
    nghttp2_session_resume_data(c->session, st->id);
  }
}

/* Pumps until the stream has closed (or `ms` passed). */
static int h2_wait(h2client *c, h2stream *st, int ms) {
  for (int waited = 0; !st->closed && waited < ms; waited += 10)
    if (h2_pump(c, 10) != 0) break;
  return st->closed;
}

/* Message number `i` of a response's DATA; NULL when there are fewer. */
static const uint8_t *response_message(const h2stream *st, int i, size_t *len) {
  size_t off = 0;
  const uint8_t *d = (const uint8_t *)st->data.data;
  for (;;) {
    if (st->data.len - off < 5) return NULL;
    size_t n = (size_t)d[off + 1] << 24 | (size_t)d[off + 2] << 16 | (size_t)d[off + 3] << 8 | d[off + 4];
    if (st->data.len - off - 5 < n) return NULL;
    if (i-- == 0) {
      *len = n;
      return d + off + 5;
    }
    off += 5 + n;
  }
}

static int count_messages(const h2stream *st) {
  size_t len;
  int n = 0;
  while (response_message(st, n, &len)) n++;
  return n;
}

static int unary_roundtrip(h2client *c, const char *path, const char *text, h2stream **out) {
  kx_buf b = {0};
  grpc_frame(&b, 0, text, strlen(text), strlen(text));
  h2stream *st = h2_call(c, path, NULL, b.data, b.len, 1);
  kx_buf_free(&b);
  *out = st;
  return h2_wait(c, st, 3000);
}

static int is_message(const h2stream *st, int i, const char *text) {
  size_t len;
  const uint8_t *m = response_message(st, i, &len);
  return m && len == strlen(text) && memcmp(m, text, len) == 0;
}

/* ---------------------------------------------------------------- tests */

static void test_unary(void) {
  kiln_grpc_server *s = start((kiln_grpc_options){0});
  h2client *c = h2_connect(kiln_grpc_server_port(s));
  kx_buf b = {0};
  grpc_frame(&b, 0, "hello", 5, 5);
  const char *extra[] = {"x-request-id", "req-42", NULL};
  h2stream *st = h2_call(c, "/test.Echo/Unary", extra, b.data, b.len, 1);
  kx_buf_free(&b);
  CHECK(h2_wait(c, st, 3000));
  CHECK(st->http_status == 200);
  CHECK(st->grpc_status == 0);
  CHECK(!strcmp(st->content_type, "application/grpc"));
  CHECK(!strcmp(st->request_id, "req-42"));
  CHECK(st->header_blocks == 2); /* headers, then trailers */
  CHECK(count_messages(st) == 1 && is_message(st, 0, "hello"));
  /* an empty message is a message */
  b = (kx_buf){0};
  grpc_frame(&b, 0, "", 0, 0);
  st = h2_call(c, "/test.Echo/Unary", NULL, b.data, b.len, 1);
  kx_buf_free(&b);
  CHECK(h2_wait(c, st, 3000));
  CHECK(st->grpc_status == 0 && count_messages(st) == 1 && is_message(st, 0, ""));
  /* answered by another thread */
  CHECK(unary_roundtrip(c, "/test.Echo/Later", "from a worker", &st));
  CHECK(st->grpc_status == 0 && is_message(st, 0, "from a worker"));
  h2_close(c);
  stop(s);
}

static void test_concurrent_streams(void) {
  kiln_grpc_server *s = start((kiln_grpc_options){.threads = 1});
  h2client *c = h2_connect(kiln_grpc_server_port(s));
  h2stream *sts[40];
  char text[40][32];
  for (int i = 0; i < 40; i++) {
    snprintf(text[i], sizeof text[i], "message %d", i);
    kx_buf b = {0};
    grpc_frame(&b, 0, text[i], strlen(text[i]), strlen(text[i]));
    sts[i] = h2_call(c, i % 2 ? "/test.Echo/Unary" : "/test.Echo/Later", NULL, b.data, b.len, 1);
    kx_buf_free(&b);
  }
  for (int i = 0; i < 40; i++) {
    CHECK(h2_wait(c, sts[i], 3000));
    CHECK(sts[i]->grpc_status == 0 && is_message(sts[i], 0, text[i]));
  }
  h2_close(c);
  stop(s);
}

static void test_large_message(void) {
  kiln_grpc_server *s = start((kiln_grpc_options){0});
  h2client *c = h2_connect(kiln_grpc_server_port(s));
  size_t n = 10u << 20;
  uint8_t *big = malloc(n);
  for (size_t i = 0; i < n; i++) big[i] = (uint8_t)(i * 2654435761u >> 13);
  kx_buf b = {0};
  grpc_frame(&b, 0, big, n, n);
  h2stream *st = h2_call(c, "/test.Echo/Unary", NULL, b.data, b.len, 1);
  kx_buf_free(&b);
  CHECK(h2_wait(c, st, 20000));
  size_t len = 0;
  const uint8_t *m = response_message(st, 0, &len);
  CHECK(st->grpc_status == 0 && m && len == n && memcmp(m, big, n) == 0);
  free(big);
  h2_close(c);
  stop(s);
}

static void test_streaming(void) {
  kiln_grpc_server *s = start((kiln_grpc_options){0});
  h2client *c = h2_connect(kiln_grpc_server_port(s));
  atomic_store(&svc_last_half_close_n, -1);
  /* the first message alone: its answer comes before the client sends more */
  kx_buf b = {0};
  grpc_frame(&b, 0, "m0", 2, 2);
  h2stream *st = h2_call(c, "/test.Echo/Stream", NULL, b.data, b.len, 0);
  kx_buf_free(&b);
  for (int i = 0; i < 300 && count_messages(st) < 1; i++) h2_pump(c, 10);
  CHECK(count_messages(st) == 1 && !st->closed);
  b = (kx_buf){0};
  for (int i = 1; i < 100; i++) {
    char m[16];
    snprintf(m, sizeof m, "m%d", i);
    grpc_frame(&b, 0, m, strlen(m), strlen(m));
  }
  h2_send_more(c, st, b.data, b.len, 1);
  kx_buf_free(&b);
  CHECK(h2_wait(c, st, 5000));
  CHECK(st->grpc_status == 0);
  CHECK(count_messages(st) == 100);
  for (int i = 0; i < 100; i++) {
    char m[16];
    snprintf(m, sizeof m, "m%d", i);
    CHECK(is_message(st, i, m));
  }
  CHECK(atomic_load(&svc_last_half_close_n) == 100);
  /* zero messages: the service only sees the half-close, and must (and does) finish */
  st = h2_call(c, "/test.Echo/Stream", NULL, "", 0, 1);
  CHECK(h2_wait(c, st, 3000));
  CHECK(st->grpc_status == 0 && count_messages(st) == 0 && st->header_blocks == 1);
  CHECK(atomic_load(&svc_last_half_close_n) == 0);
  h2_close(c);
  stop(s);
}

/* A call the server answers itself: the status, the message, and the service never saw it. */
static void expect_status(kiln_grpc_server *s, const char *path, const char **extra, const void *body, size_t len,
                          int end, int code, const char *message) {
  kiln_grpc_stats before, after;
  kiln_grpc_server_stats(s, &before);
  int seen = atomic_load(&svc_messages);
  h2client *c = h2_connect(kiln_grpc_server_port(s));
  h2stream *st = h2_call(c, path, extra, body, len, end);
  CHECK(h2_wait(c, st, 3000));
  if (st->grpc_status != code || strcmp(st->grpc_message, message) != 0) {
    fprintf(stderr, "%s: got grpc-status %d '%s', expected %d '%s'\n", path, st->grpc_status, st->grpc_message, code,
            message);
    test_failures++;
  }
  CHECK(st->header_blocks == 1); /* Trailers-Only */
  CHECK(atomic_load(&svc_messages) == seen);
  kiln_grpc_server_stats(s, &after);
  CHECK(after.rejected_total == before.rejected_total + 1);
  h2_close(c);
}

static void test_errors(void) {
  kiln_grpc_server *s = start((kiln_grpc_options){.max_message_bytes = 1024, .max_header_bytes = 1024});
  kx_buf b = {0};
  grpc_frame(&b, 0, "x", 1, 1);
  expect_status(s, "/x.Y/Z", NULL, b.data, b.len, 1, 12, "unknown method /x.Y/Z");
  kx_buf_free(&b);
  /* too large: answered from the prefix alone, the stream reset before the body is sent */
  grpc_frame(&b, 0, "abc", 3, 2000);
  expect_status(s, "/test.Echo/Unary", NULL, b.data, b.len, 0, 8, "received message larger than max (2000 vs. 1024)");
  kx_buf_free(&b);
  grpc_frame(&b, 1, "abc", 3, 3);
  expect_status(s, "/test.Echo/Unary", NULL, b.data, b.len, 1, 12, "compressed messages are not supported");
  kx_buf_free(&b);
  grpc_frame(&b, 2, "abc", 3, 3);
  expect_status(s, "/test.Echo/Unary", NULL, b.data, b.len, 1, 13,
                "invalid message flag 0x02: expected 0 (uncompressed) or 1 (compressed)");
  kx_buf_free(&b);
  expect_status(s, "/test.Echo/Unary", NULL, "", 0, 1, 13, "expected one request message, got 0");
  grpc_frame(&b, 0, "a", 1, 1);
  grpc_frame(&b, 0, "b", 1, 1);
  expect_status(s, "/test.Echo/Unary", NULL, b.data, b.len, 1, 13, "expected one request message, got 2");
  kx_buf_free(&b);
  grpc_frame(&b, 0, "abc", 3, 10);
  expect_status(s, "/test.Echo/Unary", NULL, b.data, b.len, 1, 13, "request ended inside a message (8 of 15 bytes)");
  kx_buf_free(&b);
  grpc_frame(&b, 0, "a", 1, 1);
  const char *bad_timeout[] = {"grpc-timeout", "5x", NULL};
  expect_status(s, "/test.Echo/Unary", bad_timeout, b.data, b.len, 1, 13,
                "malformed grpc-timeout '5x': expected up to 8 digits and a unit (H M S m u n)");
  char big[1500];
  memset(big, 'v', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  const char *big_header[] = {"x-big", big, NULL};
  expect_status(s, "/test.Echo/Unary", big_header, b.data, b.len, 1, 8,
                "request metadata larger than max (1828 vs. 1024 bytes)");
  /* not gRPC: HTTP errors with a gRPC status (as grpc-go answers them) */
  const char *text_ct[] = {"content-type", "text/plain", NULL};
  expect_status(s, "/test.Echo/Unary", text_ct, b.data, b.len, 1, 13,
                "content-type must be application/grpc, got 'text/plain'");
  const char *put[] = {":method", "PUT", NULL};
  expect_status(s, "/test.Echo/Unary", put, b.data, b.len, 1, 13, "gRPC requires method POST, got 'PUT'");
  /* the service's own error: grpc-message percent-encoded (PROTOCOL-HTTP2: bytes outside 0x20-0x7E, and '%') */
  h2client *c = h2_connect(kiln_grpc_server_port(s));
  h2stream *st = h2_call(c, "/test.Echo/Fail", NULL, b.data, b.len, 1);
  CHECK(h2_wait(c, st, 3000));
  CHECK(st->grpc_status == 3);
  CHECK(!strcmp(st->grpc_message, "bad: 100%25 %C3%BCnicode%0A"));
  /* the connection outlives its failed calls */
  CHECK(unary_roundtrip(c, "/test.Echo/Unary", "still here", &st));
  CHECK(st->grpc_status == 0 && is_message(st, 0, "still here"));
  h2_close(c);
  kx_buf_free(&b);
  stop(s);
}

static void test_http_status_of_non_grpc(void) {
  kiln_grpc_server *s = start((kiln_grpc_options){0});
  h2client *c = h2_connect(kiln_grpc_server_port(s));
  const char *text_ct[] = {"content-type", "application/json", NULL};
  h2stream *st = h2_call(c, "/test.Echo/Unary", text_ct, "{}", 2, 1);
  CHECK(h2_wait(c, st, 3000));
  CHECK(st->http_status == 415);
  const char *get[] = {":method", "GET", NULL};
  st = h2_call(c, "/test.Echo/Unary", get, NULL, 0, 1);
  CHECK(h2_wait(c, st, 3000));
  CHECK(st->http_status == 405);
  h2_close(c);
  stop(s);
}

static void test_deadline(void) {
  kiln_grpc_server *s = start((kiln_grpc_options){0});
  h2client *c = h2_connect(kiln_grpc_server_port(s));
  kx_buf b = {0};
  grpc_frame(&b, 0, "x", 1, 1);
  const char *timeout[] = {"grpc-timeout", "50m", NULL};
  double t0 = kiln_now();
  h2stream *st = h2_call(c, "/test.Echo/Hold", timeout, b.data, b.len, 1);
  kx_buf_free(&b);
  h2_pump(c, 0);
  kiln_grpc_call *call = take_held();
  CHECK(call != NULL);
  CHECK(held_deadline > t0 && held_deadline < t0 + 0.2);
  CHECK(h2_wait(c, st, 3000));
  double took = kiln_now() - t0;
  CHECK(took >= 0.045 && took < 1.0);
  CHECK(st->grpc_status == 4 && !strcmp(st->grpc_message, "deadline exceeded"));
  if (call) {
    CHECK(kiln_grpc_cancelled(call));
    kiln_grpc_send(call, dup_bytes((const uint8_t *)"late", 4), 4);             /* dropped */
    kiln_grpc_finish(call, KILN_GRPC_OK, "late", dup_bytes((const uint8_t *)"x", 1), 1); /* harmless */
  }
  CHECK(unary_roundtrip(c, "/test.Echo/Unary", "after", &st));
  CHECK(st->grpc_status == 0 && is_message(st, 0, "after"));
  /* a deadline that has already passed; one too far away to matter (grpc-core's reading) */
  b = (kx_buf){0};
  grpc_frame(&b, 0, "x", 1, 1);
  const char *zero[] = {"grpc-timeout", "0S", NULL}, *far[] = {"grpc-timeout", "9999999999H", NULL};
  st = h2_call(c, "/test.Echo/Later", zero, b.data, b.len, 1);
  CHECK(h2_wait(c, st, 3000) && st->grpc_status == 4);
  st = h2_call(c, "/test.Echo/Unary", far, b.data, b.len, 1);
  CHECK(h2_wait(c, st, 3000) && st->grpc_status == 0);
  kx_buf_free(&b);
  h2_close(c);
  stop(s);
}

static void test_client_reset(void) {
  kiln_grpc_server *s = start((kiln_grpc_options){0});
  h2client *c = h2_connect(kiln_grpc_server_port(s));
  kx_buf b = {0};
  grpc_frame(&b, 0, "x", 1, 1);
  h2stream *st = h2_call(c, "/test.Echo/Hold", NULL, b.data, b.len, 1);
  kiln_grpc_call *call = NULL;
  for (int i = 0; i < 100 && !call; i++) {
    h2_pump(c, 10);
    pthread_mutex_lock(&held_mu);
    call = held;
    held = NULL;
    pthread_mutex_unlock(&held_mu);
  }
  CHECK(call != NULL);
  kiln_grpc_stats stats;
  kiln_grpc_server_stats(s, &stats);
  CHECK(stats.calls == 1);
  nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
  h2_pump(c, 10);
  int cancelled = 0;
  for (int i = 0; i < 300 && call && !(cancelled = kiln_grpc_cancelled(call)); i++) sleep_ms(10);
  CHECK(cancelled);
  if (call) kiln_grpc_finish(call, KILN_GRPC_OK, NULL, dup_bytes((const uint8_t *)"x", 1), 1);
  /* a streaming call the service holds learns of the reset through its half-close */
  int half_closes = atomic_load(&svc_half_closes), cancelled_closes = atomic_load(&svc_half_close_cancelled);
  st = h2_call(c, "/test.Echo/HoldStream", NULL, b.data, b.len, 0);
  call = NULL;
  for (int i = 0; i < 100 && !call; i++) {
    h2_pump(c, 10);
    pthread_mutex_lock(&held_mu);
    call = held;
    pthread_mutex_unlock(&held_mu);
  }
  CHECK(call != NULL);
  nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
  h2_pump(c, 10);
  for (int i = 0; i < 300 && atomic_load(&svc_half_closes) == half_closes; i++) sleep_ms(10);
  CHECK(atomic_load(&svc_half_close_cancelled) == cancelled_closes + 1);
  pthread_mutex_lock(&held_mu);
  held = NULL;
  pthread_mutex_unlock(&held_mu);
  if (call) kiln_grpc_finish(call, KILN_GRPC_OK, NULL, NULL, 0);
  kx_buf_free(&b);
  CHECK(unary_roundtrip(c, "/test.Echo/Unary", "after", &st));
  CHECK(st->grpc_status == 0 && is_message(st, 0, "after"));
  h2_close(c);
  stop(s);
}

/* The client goes away while the service holds its call; the service finishes from another
 * thread, before or after the server notices. */
static void test_connection_lost(void) {
  kiln_grpc_server *s = start((kiln_grpc_options){0});
  for (int round = 0; round < 2; round++) {
    h2client *c = h2_connect(kiln_grpc_server_port(s));
    kx_buf b = {0};
    grpc_frame(&b, 0, "x", 1, 1);
    h2_call(c, "/test.Echo/Hold", NULL, b.data, b.len, 1);
    kx_buf_free(&b);
    h2_pump(c, 0);
    kiln_grpc_call *call = take_held();
    CHECK(call != NULL);
    if (!call) {
      h2_close(c);
      continue;
    }
    if (round == 1) kiln_grpc_finish(call, KILN_GRPC_OK, NULL, dup_bytes((const uint8_t *)"y", 1), 1);
    h2_close(c);
    if (round == 0) {
      int cancelled = 0;
      for (int i = 0; i < 300 && !(cancelled = kiln_grpc_cancelled(call)); i++) sleep_ms(10);
      CHECK(cancelled);
      kiln_grpc_finish(call, KILN_GRPC_OK, NULL, dup_bytes((const uint8_t *)"y", 1), 1);
    }
  }
  stop(s);
}

/* Workers finish calls while their clients reset streams or drop the connection, in every order:
 * whichever side ends first, nothing is used after it is freed (ASan) and every call is released. */
static void test_races(void) {
  kiln_grpc_server *s = start((kiln_grpc_options){0});
  for (int round = 0; round < 20; round++) {
    h2client *c = h2_connect(kiln_grpc_server_port(s));
    h2stream *sts[MAX_STREAMS];
    for (int i = 0; i < 40; i++) {
      char text[32];
      int n = snprintf(text, sizeof text, "%*d", 1 + (round * 40 + i) % 25, i);
      kx_buf b = {0};
      grpc_frame(&b, 0, text, (size_t)n, (size_t)n);
      sts[i] = h2_call(c, "/test.Echo/Jitter", NULL, b.data, b.len, 1);
      kx_buf_free(&b);
    }
    h2_pump(c, 0);
    struct timespec ts = {0, (long)(round % 5) * 300000L};
    nanosleep(&ts, NULL);
    for (int i = 0; i < 40; i += 3) nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, sts[i]->id, NGHTTP2_CANCEL);
    h2_pump(c, round % 2);
    if (round % 4 == 3) { /* the rest finish normally */
      for (int i = 1; i < 40; i += 3) CHECK(h2_wait(c, sts[i], 3000) && sts[i]->grpc_status == 0);
    }
    h2_close(c);
  }
  stop(s);
}

static void test_stop_accepting(void) {
  kiln_grpc_server *s = start((kiln_grpc_options){0});
  int port = kiln_grpc_server_port(s);
  h2client *c = h2_connect(port);
  kx_buf b = {0};
  grpc_frame(&b, 0, "in flight", 9, 9);
  h2stream *st = h2_call(c, "/test.Echo/Hold", NULL, b.data, b.len, 1);
  kx_buf_free(&b);
  h2_pump(c, 0);
  kiln_grpc_call *call = take_held();
  CHECK(call != NULL);
  kiln_grpc_server_stop_accepting(s);
  CHECK(h2_connect(port) == NULL); /* the listener is closed */
  for (int i = 0; i < 100 && c->goaway < 2; i++) h2_pump(c, 10); /* notice, then the final GOAWAY */
  CHECK(c->goaway == 2 && c->goaway_error == NGHTTP2_NO_ERROR);
  CHECK(!st->closed && !c->eof);
  if (call) kiln_grpc_finish(call, KILN_GRPC_OK, NULL, dup_bytes((const uint8_t *)"in flight", 9), 9);
  CHECK(h2_wait(c, st, 3000));
  CHECK(st->grpc_status == 0 && is_message(st, 0, "in flight"));
  for (int i = 0; i < 300 && !c->eof; i++) h2_pump(c, 10); /* then the server closes */
  CHECK(c->eof);
  h2_close(c);
  stop(s);
}

static void test_limits_and_stats(void) {
  kiln_grpc_server *s = start((kiln_grpc_options){.max_connections = 1, .idle_timeout_ms = 300});
  int port = kiln_grpc_server_port(s);
  h2client *a = h2_connect(port);
  h2stream *st;
  CHECK(unary_roundtrip(a, "/test.Echo/Unary", "one", &st));
  double t0 = kiln_now();
  h2client *b = h2_connect(port);
  for (int i = 0; i < 300 && !b->eof; i++) h2_pump(b, 10);
  CHECK(b->goaway == 1 && b->goaway_error == NGHTTP2_ENHANCE_YOUR_CALM && b->eof);
  h2_close(b);
  kiln_grpc_stats stats;
  kiln_grpc_server_stats(s, &stats);
  CHECK(stats.connections == 1 && stats.connections_total == 1);
  CHECK(stats.calls_total == 1 && stats.calls == 0 && stats.rejected_total == 0);
  /* the idle connection gets GOAWAY and is closed */
  for (int i = 0; i < 300 && !a->eof; i++) h2_pump(a, 10);
  CHECK(a->goaway == 1 && a->goaway_error == NGHTTP2_NO_ERROR && a->eof);
  CHECK(kiln_now() - t0 > 0.25);
  h2_close(a);
  stop(s);
}

static void test_start_errors(void) {
  kiln_grpc_server *s = NULL;
  kiln_grpc_options o = {.host = "127.0.0.1", .port = 70000};
  CHECK_ERROR(kiln_grpc_server_start(&o, &service, &s), KILN_INVALID_ARGUMENT, "grpc port must be in [0, 65535], got 70000");
  kiln_grpc_server *first = start((kiln_grpc_options){0});
  o.port = kiln_grpc_server_port(first);
  char want[64];
  snprintf(want, sizeof want, "127.0.0.1:%d: Address already in use", o.port);
  CHECK_ERROR(kiln_grpc_server_start(&o, &service, &s), KILN_UNAVAILABLE, want);
  kiln_grpc_service none = {0};
  o.port = 0;
  CHECK_ERROR(kiln_grpc_server_start(&o, &none, &s), KILN_INVALID_ARGUMENT, "needs kind, message and half_close");
  stop(first);
}

TEST_MAIN(TEST(test_unary), TEST(test_concurrent_streams), TEST(test_large_message), TEST(test_streaming),
          TEST(test_errors), TEST(test_http_status_of_non_grpc), TEST(test_deadline), TEST(test_client_reset),
          TEST(test_connection_lost), TEST(test_races), TEST(test_stop_accepting), TEST(test_limits_and_stats), TEST(test_start_errors))
