/* The HTTP/1.1 server (include/kiln/net.h) driven over real sockets: framing (keep-alive,
 * pipelining, 100-continue, chunked), every configured limit and timeout, answers from other
 * threads, clients that leave early, draining, and many concurrent clients. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "kiln/net.h"
#include "test.h"

/* ---------------------------------------------------------------- the handler */

static pthread_mutex_t held_mu = PTHREAD_MUTEX_INITIALIZER;
static kiln_http_exchange *held; /* the exchange of the last /hold request */

typedef struct later {
  kiln_http_exchange *ex;
  int ms;
  char *body;
  size_t len;
} later;

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static void *later_main(void *arg) {
  later *l = arg;
  sleep_ms(l->ms);
  kiln_http_respond(l->ex, 200, "text/plain", "X-Answered-By: worker\r\n", l->body, l->len);
  free(l);
  return NULL;
}

static char *dup_bytes(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (n) memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

/* /echo: the body back; /info: what was parsed; /later?ms=N: answered by another thread after N
 * ms; /hold: kept until the test answers; /error: a JSON error; anything else: 404. */
static void test_handler(void *ctx, kiln_http_exchange *ex, const kiln_http_request *req) {
  (void)ctx;
  if (!strcmp(req->path, "/echo")) {
    kiln_http_respond(ex, 200, req->content_type ? req->content_type : "text/plain", NULL,
                      dup_bytes(req->body ? req->body : "", req->body_len), req->body_len);
  } else if (!strcmp(req->path, "/info")) {
    char text[1024];
    int n = snprintf(text, sizeof text, "method=%s path=%s query=%s ct=%s ihl=%lld rid=%s tp=%s ka=%d body=%zu",
                     req->method, req->path, req->query, req->content_type ? req->content_type : "(null)",
                     (long long)req->inference_header_length, req->request_id ? req->request_id : "(null)",
                     req->traceparent ? req->traceparent : "(null)", req->keep_alive, req->body_len);
    kiln_http_respond(ex, 200, "text/plain", NULL, dup_bytes(text, (size_t)n), (size_t)n);
  } else if (!strcmp(req->path, "/later")) {
    later *l = malloc(sizeof *l);
    l->ex = ex;
    l->ms = atoi(req->query[0] == 'm' && req->query[1] == 's' && req->query[2] == '=' ? req->query + 3 : "0");
    l->len = req->body_len;
    l->body = dup_bytes(req->body ? req->body : "", req->body_len);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, later_main, l) == 0);
    pthread_detach(t);
  } else if (!strcmp(req->path, "/hold")) {
    pthread_mutex_lock(&held_mu);
    held = ex;
    pthread_mutex_unlock(&held_mu);
  } else if (!strcmp(req->path, "/error")) {
    kiln_http_respond_error(ex, 404, "no \"such\" thing");
  } else {
    kiln_http_respond(ex, 404, NULL, NULL, NULL, 0);
  }
}

static kiln_http_exchange *wait_held(void) {
  for (int i = 0; i < 500; i++) {
    pthread_mutex_lock(&held_mu);
    kiln_http_exchange *ex = held;
    held = NULL;
    pthread_mutex_unlock(&held_mu);
    if (ex) return ex;
    sleep_ms(10);
  }
  return NULL;
}

static kiln_http_server *start(kiln_http_options o) {
  if (!o.host) o.host = "127.0.0.1";
  if (!o.threads) o.threads = 2;
  kiln_http_server *s = NULL;
  CHECK_OK(kiln_http_server_start(&o, test_handler, NULL, &s));
  return s;
}

/* Waits (up to 5 s) until the server has no connection and no exchange in flight, then frees it. */
static void stop(kiln_http_server *s) {
  if (!s) return;
  kiln_http_stats st;
  for (int i = 0; i < 500; i++) {
    kiln_http_server_stats(s, &st);
    if (st.in_flight == 0 && st.connections == 0) break;
    sleep_ms(10);
  }
  CHECK(st.in_flight == 0);
  kiln_http_server_free(s);
}

/* ---------------------------------------------------------------- a raw-socket client */

typedef struct client {
  int fd;
  char buf[1 << 16];
  size_t len;
} client;

typedef struct response {
  int status;
  char head[4096];
  char *body;
  size_t body_len;
} response;

static client *client_open(const char *host, int port) {
  client *c = calloc(1, sizeof *c);
  struct sockaddr_storage ss = {0};
  socklen_t sl;
  if (strchr(host, ':')) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)port);
    inet_pton(AF_INET6, host, &a->sin6_addr);
    sl = sizeof *a;
  } else {
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, host, &a->sin_addr);
    sl = sizeof *a;
  }
  c->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct timeval tv = {5, 0};
  setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&ss, sl) != 0) {
    if (c->fd >= 0) close(c->fd);
    free(c);
    return NULL;
  }
  return c;
}

static client *client_local(kiln_http_server *s) { return client_open("127.0.0.1", kiln_http_server_port(s)); }

static void client_close(client *c) {
  if (!c) return;
  close(c->fd);
  free(c);
}

static int client_send(client *c, const char *s) {
  size_t n = strlen(s), off = 0;
  while (off < n) {
    ssize_t w = send(c->fd, s + off, n - off, MSG_NOSIGNAL);
    if (w <= 0) return -1;
    off += (size_t)w;
  }
  return 0;
}

/* Reads more into c->buf; 0 on EOF, error or timeout. */
static int client_fill(client *c) {
  if (c->len == sizeof c->buf) return 0;
  ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
  if (r <= 0) return 0;
  c->len += (size_t)r;
  return 1;
}

/* Reads one response (head + Content-Length bytes); -1 when the connection ends first. */
static int client_response(client *c, response *r) {
  memset(r, 0, sizeof *r);
  char *end;
  while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4)))
    if (!client_fill(c)) return -1;
  size_t head_len = (size_t)(end - c->buf) + 4;
  if (head_len >= sizeof r->head) return -1;
  memcpy(r->head, c->buf, head_len);
  r->head[head_len] = '\0';
  if (sscanf(r->head, "HTTP/1.1 %d", &r->status) != 1) return -1;
  const char *cl = strstr(r->head, "Content-Length: ");
  r->body_len = cl ? strtoul(cl + 16, NULL, 10) : 0;
  while (c->len < head_len + r->body_len)
    if (!client_fill(c)) return -1;
  r->body = dup_bytes(c->buf + head_len, r->body_len);
  memmove(c->buf, c->buf + head_len + r->body_len, c->len - head_len - r->body_len);
  c->len -= head_len + r->body_len;
  return 0;
}

/* Sends a request and reads its response; the status, or -1. */
static int client_exchange(client *c, const char *request, response *r) {
  if (client_send(c, request) != 0) return -1;
  if (client_response(c, r) != 0) return -1;
  return r->status;
}

/* 1 when the server closes the connection (EOF or reset) with no further bytes. */
static int client_sees_close(client *c) {
  if (c->len) return 0;
  char b[256];
  ssize_t r = recv(c->fd, b, sizeof b, 0);
  return r == 0 || (r < 0 && errno == ECONNRESET);
}

static void response_free(response *r) {
  free(r->body);
  r->body = NULL;
}

/* ---------------------------------------------------------------- tests */

static void test_get_and_post(void) {
  kiln_http_server *s = start((kiln_http_options){0});
  client *c = client_local(s);
  CHECK(c);
  response r;
  CHECK(client_exchange(c,
                        "GET /in%66o?x=1&y=%41 HTTP/1.1\r\nHost: t\r\ncontent-TYPE: application/json \r\n"
                        "Inference-Header-Content-Length: 12\r\nX-Request-Id: abc-1\r\n"
                        "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n",
                        &r) == 200);
  CHECK(r.body && !strcmp(r.body, "method=GET path=/info query=x=1&y=%41 ct=application/json ihl=12 rid=abc-1 "
                                  "tp=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01 ka=1 body=0"));
  CHECK(strstr(r.head, "Content-Type: text/plain\r\n"));
  response_free(&r);
  CHECK(client_exchange(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: text/x\r\nContent-Length: 5\r\n\r\nhello",
                        &r) == 200);
  CHECK(r.body_len == 5 && !memcmp(r.body, "hello", 5));
  CHECK(strstr(r.head, "Content-Type: text/x\r\n") && !strstr(r.head, "Connection: close"));
  response_free(&r);
  CHECK(client_exchange(c, "GET /error HTTP/1.1\r\n\r\n", &r) == 404);
  CHECK(r.body && !strcmp(r.body, "{\"error\":\"no \\\"such\\\" thing\"}"));
  CHECK(strstr(r.head, "HTTP/1.1 404 Not Found\r\n") && strstr(r.head, "Content-Type: application/json\r\n"));
  response_free(&r);
  /* HEAD: the length of the body it would have, no body */
  CHECK(client_exchange(c, "HEAD /echo HTTP/1.1\r\n\r\n", &r) == 200);
  CHECK(strstr(r.head, "Content-Length: 0\r\n"));
  response_free(&r);
  /* HTTP/1.0 without keep-alive: answered, then closed */
  CHECK(client_exchange(c, "GET /echo HTTP/1.0\r\n\r\n", &r) == 200);
  CHECK(strstr(r.head, "Connection: close\r\n"));
  CHECK(client_sees_close(c));
  response_free(&r);
  client_close(c);
  stop(s);
}

/* A 4 MiB body each way: the response goes out in many partial writes (EPOLLOUT). */
static void test_large_body(void) {
  kiln_http_server *s = start((kiln_http_options){0});
  client *c = client_local(s);
  enum { SIZE = 4 << 20 };
  char *big = malloc(SIZE + 128);
  int n = snprintf(big, 128, "POST /echo HTTP/1.1\r\nContent-Length: %d\r\n\r\n", SIZE);
  for (int i = 0; i < SIZE; i++) big[n + i] = (char)('a' + i % 26);
  big[n + SIZE] = '\0';
  CHECK(client_send(c, big) == 0);
  /* read the head, then the body in pieces, slowly at first */
  size_t body = 0, head = 0;
  int bad = 0;
  char buf[65536];
  while (head == 0 || body < SIZE) {
    ssize_t r = recv(c->fd, buf, head ? sizeof buf : 1024, 0);
    if (r <= 0) break;
    size_t off = 0;
    if (!head) {
      char *e = memmem(buf, (size_t)r, "\r\n\r\n", 4);
      CHECK(e && !memcmp(buf, "HTTP/1.1 200 OK\r\n", 17));
      if (!e) break;
      head = off = (size_t)(e - buf) + 4;
      sleep_ms(50); /* let the server fill the socket and wait for EPOLLOUT */
    }
    for (; off < (size_t)r; off++, body++) bad |= buf[off] != (char)('a' + body % 26);
  }
  CHECK(body == SIZE && !bad);
  free(big);
  client_close(c);
  stop(s);
}

static void test_keep_alive(void) {
  kiln_http_server *s = start((kiln_http_options){0});
  client *c = client_local(s);
  response r;
  for (int i = 0; i < 5; i++) {
    char req[128], want[16];
    snprintf(want, sizeof want, "req%d", i);
    snprintf(req, sizeof req, "POST /echo HTTP/1.1\r\nContent-Length: %zu\r\n\r\n%s", strlen(want), want);
    CHECK(client_exchange(c, req, &r) == 200);
    CHECK(r.body && !strcmp(r.body, want));
    response_free(&r);
  }
  kiln_http_stats st;
  kiln_http_server_stats(s, &st);
  CHECK(st.connections == 1 && st.connections_total == 1 && st.in_flight == 0);
  client_close(c);
  stop(s);
}

static void test_pipelined(void) {
  kiln_http_server *s = start((kiln_http_options){0});
  client *c = client_local(s);
  response r;
  CHECK(client_send(c, "POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nonePOST /later?ms=30 HTTP/1.1\r\n"
                       "Content-Length: 3\r\n\r\ntwoGET /info?3 HTTP/1.1\r\n\r\n") == 0);
  CHECK(client_response(c, &r) == 0 && r.status == 200 && r.body && !strcmp(r.body, "one"));
  response_free(&r);
  CHECK(client_response(c, &r) == 0 && r.status == 200 && r.body && !strcmp(r.body, "two"));
  CHECK(strstr(r.head, "X-Answered-By: worker\r\n"));
  response_free(&r);
  CHECK(client_response(c, &r) == 0 && r.status == 200 && r.body && strstr(r.body, "query=3 "));
  response_free(&r);
  client_close(c);
  stop(s);
}

static void test_expect_continue(void) {
  kiln_http_server *s = start((kiln_http_options){.max_body_bytes = 1000});
  client *c = client_local(s);
  response r;
  CHECK(client_exchange(c, "POST /echo HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n", &r) == 100);
  CHECK(r.body_len == 0);
  response_free(&r);
  CHECK(client_exchange(c, "12345", &r) == 200);
  CHECK(r.body && !strcmp(r.body, "12345"));
  response_free(&r);
  /* too large: 413 instead of 100 */
  CHECK(client_exchange(c, "POST /echo HTTP/1.1\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n", &r) == 413);
  CHECK(strstr(r.head, "Connection: close\r\n"));
  CHECK(client_sees_close(c));
  response_free(&r);
  client_close(c);
  stop(s);
}

static void test_chunked(void) {
  kiln_http_server *s = start((kiln_http_options){.max_body_bytes = 16});
  client *c = client_local(s);
  response r;
  CHECK(client_exchange(c, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                        &r) == 200);
  CHECK(r.body && !strcmp(r.body, "hello world"));
  response_free(&r);
  /* 11 + 10 bytes > 16 */
  CHECK(client_exchange(c, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nb\r\nhello world\r\na\r\n0123456789\r\n0\r\n\r\n",
                        &r) == 413);
  CHECK(r.body && strstr(r.body, "larger than 16 bytes"));
  CHECK(client_sees_close(c));
  response_free(&r);
  client_close(c);
  stop(s);
}

static void test_limits(void) {
  kiln_http_server *s = start((kiln_http_options){.max_header_bytes = 1024, .max_body_bytes = 100});
  response r;
  /* headers over the limit */
  client *c = client_local(s);
  char big[4096];
  snprintf(big, sizeof big, "GET /echo HTTP/1.1\r\nX-Big: %03000d\r\n\r\n", 0);
  CHECK(client_exchange(c, big, &r) == 431);
  CHECK(strstr(r.head, "Connection: close\r\n") && r.body && strstr(r.body, "1024 bytes"));
  CHECK(client_sees_close(c));
  response_free(&r);
  client_close(c);
  /* just under the limit passes */
  c = client_local(s);
  snprintf(big, sizeof big, "GET /echo HTTP/1.1\r\nX-Big: %0*d\r\n\r\n", 1024 - 31, 0);
  CHECK(strlen(big) == 1024);
  CHECK(client_exchange(c, big, &r) == 200);
  response_free(&r);
  client_close(c);
  /* Content-Length over the limit: 413 before any of the body is sent */
  c = client_local(s);
  CHECK(client_exchange(c, "POST /echo HTTP/1.1\r\nContent-Length: 101\r\n\r\n", &r) == 413);
  CHECK(r.body && !strcmp(r.body, "{\"error\":\"request body larger than 100 bytes\"}"));
  CHECK(client_sees_close(c));
  response_free(&r);
  client_close(c);
  kiln_http_stats st;
  kiln_http_server_stats(s, &st);
  CHECK(st.rejected_total == 2);
  stop(s);
}

static void expect_400(kiln_http_server *s, const char *request, const char *text) {
  client *c = client_local(s);
  response r;
  CHECK(client_exchange(c, request, &r) == 400);
  if (!r.body || !strstr(r.body, text)) {
    fprintf(stderr, "  request %.40s: body %s, expected to contain %s\n", request, r.body ? r.body : "(none)", text);
    CHECK(0);
  }
  CHECK(client_sees_close(c));
  response_free(&r);
  client_close(c);
}

static void test_malformed(void) {
  kiln_http_server *s = start((kiln_http_options){0});
  expect_400(s, "HELLO WORLD\r\n\r\n", "{\"error\":\"malformed HTTP request: ");
  expect_400(s, "GET /echo HTTP/1.1\r\nContent-Length: x\r\n\r\n", "malformed HTTP request");
  expect_400(s, "GET /a%zz HTTP/1.1\r\n\r\n", "percent-escape");
  expect_400(s, "GET /a%2 HTTP/1.1\r\n\r\n", "percent-escape");
  expect_400(s, "GET /a%00b HTTP/1.1\r\n\r\n", "percent-escape");
  expect_400(s, "GET /info HTTP/1.1\r\nInference-Header-Content-Length: -3\r\n\r\n", "Inference-Header-Content-Length");
  expect_400(s, "GET /info HTTP/1.1\r\nInference-Header-Content-Length: 12x\r\n\r\n", "non-negative integer");
  stop(s);
}

static double now_s(void) { return kiln_now(); }

static void test_request_timeout(void) {
  kiln_http_server *s = start((kiln_http_options){.request_timeout_ms = 200});
  client *c = client_local(s);
  response r;
  double t0 = now_s();
  CHECK(client_exchange(c, "POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", &r) == 408);
  double dt = now_s() - t0;
  CHECK(dt > 0.15 && dt < 2.0);
  CHECK(r.body && !strcmp(r.body, "{\"error\":\"timed out: the request was not complete within 200 ms\"}"));
  CHECK(client_sees_close(c));
  response_free(&r);
  client_close(c);
  stop(s);
}

static void test_idle_timeout(void) {
  kiln_http_server *s = start((kiln_http_options){.idle_timeout_ms = 200});
  client *c = client_local(s);
  response r;
  CHECK(client_exchange(c, "GET /echo HTTP/1.1\r\n\r\n", &r) == 200);
  response_free(&r);
  double t0 = now_s();
  CHECK(client_sees_close(c));
  double dt = now_s() - t0;
  CHECK(dt > 0.15 && dt < 2.0);
  client_close(c);
  stop(s);
}

static void test_max_connections(void) {
  kiln_http_server *s = start((kiln_http_options){.max_connections = 2});
  response r;
  client *a = client_local(s), *b = client_local(s);
  CHECK(client_exchange(a, "GET /echo HTTP/1.1\r\n\r\n", &r) == 200);
  response_free(&r);
  CHECK(client_exchange(b, "GET /echo HTTP/1.1\r\n\r\n", &r) == 200);
  response_free(&r);
  client *c = client_local(s);
  CHECK(client_response(c, &r) == 0 && r.status == 503);
  CHECK(r.body && !strcmp(r.body, "{\"error\":\"too many connections\"}"));
  CHECK(client_sees_close(c));
  response_free(&r);
  client_close(c);
  client_close(a);
  kiln_http_stats st;
  for (int i = 0; i < 200; i++) {
    kiln_http_server_stats(s, &st);
    if (st.connections == 1) break;
    sleep_ms(5);
  }
  CHECK(st.connections == 1);
  c = client_local(s);
  CHECK(client_exchange(c, "GET /echo HTTP/1.1\r\n\r\n", &r) == 200);
  response_free(&r);
  client_close(c);
  client_close(b);
  stop(s);
}

static void test_respond_from_other_thread(void) {
  kiln_http_server *s = start((kiln_http_options){0});
  client *c = client_local(s);
  response r;
  double t0 = now_s();
  CHECK(client_exchange(c, "POST /later?ms=100 HTTP/1.1\r\nContent-Length: 4\r\n\r\nlate", &r) == 200);
  CHECK(now_s() - t0 >= 0.09);
  CHECK(r.body && !strcmp(r.body, "late") && strstr(r.head, "X-Answered-By: worker\r\n"));
  response_free(&r);
  /* the connection goes on after an answer from elsewhere */
  CHECK(client_exchange(c, "GET /info HTTP/1.1\r\n\r\n", &r) == 200);
  response_free(&r);
  /* and the test thread can answer a held exchange */
  CHECK(client_send(c, "GET /hold HTTP/1.1\r\n\r\n") == 0);
  kiln_http_exchange *ex = wait_held();
  CHECK(ex);
  kiln_http_stats st;
  kiln_http_server_stats(s, &st);
  CHECK(st.in_flight == 1);
  if (ex) kiln_http_respond(ex, 204, NULL, NULL, NULL, 0);
  CHECK(client_response(c, &r) == 0 && r.status == 204 && r.body_len == 0 && !strstr(r.head, "Content-Length"));
  response_free(&r);
  client_close(c);
  stop(s);
}

/* The client leaves while its request is with the handler; the late answer is dropped. */
static void client_leaves(int reset) {
  kiln_http_server *s = start((kiln_http_options){0});
  client *c = client_local(s);
  CHECK(client_send(c, "GET /hold HTTP/1.1\r\n\r\nGET /echo HTTP/1.1\r\n\r\n") == 0);
  kiln_http_exchange *ex = wait_held();
  CHECK(ex);
  if (reset) {
    struct linger lg = {1, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  client_close(c);
  sleep_ms(50);
  if (ex) kiln_http_respond(ex, 200, "text/plain", NULL, dup_bytes("dropped", 7), 7);
  stop(s);
}

static void test_client_closes_early(void) {
  client_leaves(0);
  client_leaves(1);
}

static void test_stop_accepting(void) {
  kiln_http_server *s = start((kiln_http_options){0});
  int port = kiln_http_server_port(s);
  response r;
  client *idle = client_local(s), *busy = client_local(s), *late = client_local(s);
  CHECK(client_exchange(idle, "GET /echo HTTP/1.1\r\n\r\n", &r) == 200);
  response_free(&r);
  CHECK(client_exchange(late, "GET /echo HTTP/1.1\r\n\r\n", &r) == 200);
  response_free(&r);
  CHECK(client_send(busy, "GET /hold HTTP/1.1\r\n\r\n") == 0);
  kiln_http_exchange *ex = wait_held();
  CHECK(ex);
  kiln_http_server_stop_accepting(s);
  CHECK(client_open("127.0.0.1", port) == NULL);
  /* an idle keep-alive client may still send one request: answered, then closed */
  CHECK(client_exchange(late, "GET /echo HTTP/1.1\r\n\r\n", &r) == 200);
  CHECK(strstr(r.head, "Connection: close\r\n"));
  CHECK(client_sees_close(late));
  response_free(&r);
  client_close(late);
  /* one that sends nothing is closed after a second */
  double t0 = now_s();
  CHECK(client_sees_close(idle));
  CHECK(now_s() - t0 < 3.0);
  if (ex) kiln_http_respond(ex, 200, "text/plain", NULL, dup_bytes("last", 4), 4);
  CHECK(client_response(busy, &r) == 0 && r.status == 200 && r.body && !strcmp(r.body, "last"));
  CHECK(strstr(r.head, "Connection: close\r\n"));
  CHECK(client_sees_close(busy));
  response_free(&r);
  client_close(idle);
  client_close(busy);
  kiln_http_server_stop_accepting(s); /* again: nothing happens */
  stop(s);
}

typedef struct load {
  int port, id, ok;
} load;

static void *load_main(void *arg) {
  load *l = arg;
  client *c = NULL;
  for (int i = 0; i < 200; i++) {
    if (!c) c = client_open("127.0.0.1", l->port);
    if (!c) continue;
    char body[64], req[256];
    int n = snprintf(body, sizeof body, "client %d request %d", l->id, i);
    int last = i % 50 == 49;
    snprintf(req, sizeof req, "POST %s HTTP/1.1\r\nContent-Length: %d\r\n%s\r\n%s",
             i % 10 == 3 ? "/later?ms=0" : "/echo", n, last ? "Connection: close\r\n" : "", body);
    response r;
    if (client_exchange(c, req, &r) == 200 && r.body && !strcmp(r.body, body)) l->ok++;
    response_free(&r);
    if (last) {
      client_close(c);
      c = NULL;
    }
  }
  client_close(c);
  return NULL;
}

static void test_many_clients(void) {
  kiln_http_server *s = start((kiln_http_options){0});
  enum { N = 16 };
  load loads[N];
  pthread_t t[N];
  for (int i = 0; i < N; i++) {
    loads[i] = (load){.port = kiln_http_server_port(s), .id = i};
    CHECK(pthread_create(&t[i], NULL, load_main, &loads[i]) == 0);
  }
  int ok = 0;
  for (int i = 0; i < N; i++) {
    pthread_join(t[i], NULL);
    ok += loads[i].ok;
  }
  CHECK(ok == N * 200);
  kiln_http_stats st;
  kiln_http_server_stats(s, &st);
  CHECK(st.connections_total == N * 4 && st.rejected_total == 0);
  stop(s);
}

static void test_ipv6(void) {
  kiln_http_server *s = NULL;
  kiln_http_options o = {.host = "::1", .threads = 1};
  kiln_status st = kiln_http_server_start(&o, test_handler, NULL, &s);
  if (st) {
    fprintf(stderr, "  skipped: IPv6 unavailable (%s)\n", kiln_status_message(st));
    kiln_status_free(st);
    return;
  }
  client *c = client_open("::1", kiln_http_server_port(s));
  CHECK(c);
  response r;
  if (c) {
    CHECK(client_exchange(c, "GET /echo HTTP/1.1\r\n\r\n", &r) == 200);
    response_free(&r);
  }
  client_close(c);
  stop(s);
}

static void test_start_errors(void) {
  kiln_http_server *s = start((kiln_http_options){0}), *t = NULL;
  char want[64];
  snprintf(want, sizeof want, "127.0.0.1:%d: Address already in use", kiln_http_server_port(s));
  kiln_http_options o = {.host = "127.0.0.1", .port = kiln_http_server_port(s)};
  CHECK_ERROR(kiln_http_server_start(&o, test_handler, NULL, &t), KILN_UNAVAILABLE, want);
  CHECK(t == NULL);
  o = (kiln_http_options){.host = "not an address", .port = 0};
  CHECK_ERROR(kiln_http_server_start(&o, test_handler, NULL, &t), KILN_INVALID_ARGUMENT, "not an address:0");
  o = (kiln_http_options){.port = 70000};
  CHECK_ERROR(kiln_http_server_start(&o, test_handler, NULL, &t), KILN_INVALID_ARGUMENT, "70000");
  stop(s);
  CHECK(!strcmp(kiln_http_reason(431), "Request Header Fields Too Large"));
  CHECK(!strcmp(kiln_http_reason(503), "Service Unavailable"));
  CHECK(!strcmp(kiln_http_reason(799), "Unknown"));
  double a = kiln_now();
  sleep_ms(20);
  CHECK(kiln_now() - a >= 0.019);
}

TEST_MAIN(TEST(test_get_and_post), TEST(test_large_body), TEST(test_keep_alive), TEST(test_pipelined), TEST(test_expect_continue),
          TEST(test_chunked), TEST(test_limits), TEST(test_malformed), TEST(test_request_timeout),
          TEST(test_idle_timeout), TEST(test_max_connections), TEST(test_respond_from_other_thread),
          TEST(test_client_closes_early), TEST(test_stop_accepting), TEST(test_many_clients), TEST(test_ipv6),
          TEST(test_start_errors))
