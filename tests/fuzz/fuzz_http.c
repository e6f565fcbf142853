/* libFuzzer target: HTTP/1.1 request parsing, limits and framing, through a real connection of
 * the server. Each input is written into one end of a socketpair whose other end the server
 * adopts (kx_http_serve_fd); the target reads the replies until the server closes, and waits
 * until the server has freed the connection, so nothing leaks from one input to the next. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "kiln/net.h"
#include "net/http_internal.h"

#define WAIT_MS 5000 /* longer than this without progress is a hang: abort */

/* /err...: a JSON error carrying the path; otherwise a summary of the request plus its body. */
static void handler(void *ctx, kiln_http_exchange *ex, const kiln_http_request *req) {
  (void)ctx;
  if (!strncmp(req->path, "/err", 4)) {
    kiln_http_respond_error(ex, 400, req->path);
    return;
  }
  char head[512];
  int n = snprintf(head, sizeof head, "%s %s ?%s ct=%s id=%s tp=%s ihl=%lld ka=%d\n", req->method, req->path, req->query,
                   req->content_type ? req->content_type : "-", req->request_id ? req->request_id : "-",
                   req->traceparent ? req->traceparent : "-", (long long)req->inference_header_length,
                   req->keep_alive);
  if (n < 0) n = 0;
  if ((size_t)n >= sizeof head) n = sizeof head - 1;
  char *body = malloc((size_t)n + req->body_len);
  if (!body) abort();
  memcpy(body, head, (size_t)n);
  if (req->body_len) memcpy(body + n, req->body, req->body_len);
  kiln_http_respond(ex, 200, "text/plain", "X-Fuzz: 1\r\n", body, (size_t)n + req->body_len);
}

static kiln_http_server *server(void) {
  static kiln_http_server *s;
  if (s) return s;
  /* small limits, so that short inputs reach them */
  kiln_http_options o = {.host = "127.0.0.1", .threads = 1, .max_header_bytes = 1024, .max_body_bytes = 2048,
                         .max_connections = 4};
  kiln_status st = kiln_http_server_start(&o, handler, NULL, &s);
  if (st) {
    fprintf(stderr, "fuzz_http: %s\n", kiln_status_message(st));
    abort();
  }
  return s;
}

static void sleep_ms(int ms) {
  struct timespec ts = {0, (long)ms * 1000000L};
  nanosleep(&ts, NULL);
}

/* Writes the input, then reads until EOF; every reply must start like an HTTP/1.1 response. */
static void converse(int fd, const uint8_t *data, size_t size) {
  size_t off = 0, got = 0;
  int writing = 1;
  char first[9];
  if (size == 0 && shutdown(fd, SHUT_WR) != 0) abort();
  if (size == 0) writing = 0;
  for (;;) {
    struct pollfd p = {.fd = fd, .events = POLLIN | (writing ? POLLOUT : 0)};
    int rc = poll(&p, 1, WAIT_MS);
    if (rc == 0) abort(); /* the server stalled */
    if (rc < 0) continue;
    if (writing && (p.revents & POLLOUT)) {
      ssize_t w = send(fd, data + off, size - off, MSG_NOSIGNAL);
      if (w > 0) off += (size_t)w;
      if (w < 0 && errno != EAGAIN && errno != EINTR) writing = 0; /* the server closed first */
      if (writing && off == size) {
        if (shutdown(fd, SHUT_WR) != 0) abort();
        writing = 0;
      }
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      char buf[4096];
      ssize_t r = recv(fd, buf, sizeof buf, 0);
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) break;
      for (ssize_t i = 0; i < r && got < sizeof first; i++) first[got++] = buf[i];
    }
  }
  if (got == sizeof first && memcmp(first, "HTTP/1.1 ", sizeof first) != 0) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kiln_http_server *s = server();
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) abort();
  kiln_status st = kx_http_serve_fd(s, sv[0]);
  if (st) abort();
  int fl = fcntl(sv[1], F_GETFL);
  if (fl < 0 || fcntl(sv[1], F_SETFL, fl | O_NONBLOCK) != 0) abort();
  converse(sv[1], data, size);
  close(sv[1]);
  kiln_http_stats stats;
  for (int i = 0;; i++) {
    kiln_http_server_stats(s, &stats);
    if (stats.connections == 0 && stats.in_flight == 0) break;
    if (i == WAIT_MS) abort(); /* the connection was never freed */
    sleep_ms(1);
  }
  return 0;
}
