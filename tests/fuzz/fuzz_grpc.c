/* libFuzzer target: the gRPC server's HTTP/2 and gRPC framing, limits and call state machine,
 * through a real connection of the server. Each input is the byte stream of one client
 * connection (preface, frames), written into one end of a socketpair whose other end the server
 * adopts (kx_grpc_serve_fd); the target shuts down writing, reads the replies until the server
 * closes, and waits until the connection and every call are gone, so nothing leaks from one
 * input to the next. The seeds (tests/fuzz/corpus/grpc) are well-formed connections: unary and
 * streaming calls, several streams, resets, deadlines, compressed and oversized messages. */
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
#include "net/grpc_internal.h"

#define WAIT_MS 5000 /* longer than this without progress is a hang: abort */

static uint8_t *copy(const uint8_t *s, size_t n) {
  uint8_t *d = malloc(n ? n : 1);
  if (!d) abort();
  if (n) memcpy(d, s, n);
  return d;
}

/* /f.S/U unary echo; /f.S/S streaming echo that finishes early at its third message. */
static kiln_grpc_kind kind(void *ctx, const char *method) {
  if (!strcmp(method, "/f.S/U")) return KILN_GRPC_UNARY;
  if (!strcmp(method, "/f.S/S")) return KILN_GRPC_STREAMING;
  return KILN_GRPC_UNKNOWN;
}

static void message(void *ctx, kiln_grpc_call *call, const kiln_grpc_request *req) {
  if (req->index == 0 && req->request_id) kiln_grpc_add_header(call, "x-request-id", req->request_id);
  if (!strcmp(req->method, "/f.S/U")) {
    kiln_grpc_finish(call, KILN_GRPC_OK, NULL, copy(req->message, req->len), req->len);
  } else if (req->index == 2) {
    kiln_grpc_finish(call, KILN_GRPC_INVALID_ARGUMENT, "three is \xe2\x80\x9ctoo many\xe2\x80\x9d", NULL, 0);
  } else {
    kiln_grpc_send(call, copy(req->message, req->len), req->len);
  }
}

static void half_close(void *ctx, kiln_grpc_call *call, int64_t n) { kiln_grpc_finish(call, KILN_GRPC_OK, NULL, NULL, 0); }

static kiln_grpc_server *server(void) {
  static kiln_grpc_server *s;
  static const kiln_grpc_service svc = {NULL, kind, message, half_close};
  if (s) return s;
  /* small limits, so that short inputs reach them */
  kiln_grpc_options o = {.host = "127.0.0.1", .threads = 1, .max_message_bytes = 4096, .max_header_bytes = 2048,
                         .max_connections = 4, .max_concurrent_streams = 16};
  kiln_status st = kiln_grpc_server_start(&o, &svc, &s);
  if (st) {
    fprintf(stderr, "fuzz_grpc: %s\n", kiln_status_message(st));
    abort();
  }
  return s;
}

static void sleep_ms(int ms) {
  struct timespec ts = {0, (long)ms * 1000000L};
  nanosleep(&ts, NULL);
}

/* Writes the input, shuts down writing, then reads until the server closes. */
static void converse(int fd, const uint8_t *data, size_t size) {
  size_t off = 0;
  int writing = 1;
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
      char buf[65536];
      ssize_t r = recv(fd, buf, sizeof buf, 0);
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) break;
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kiln_grpc_server *s = server();
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) abort();
  if (kx_grpc_serve_fd(s, sv[0]) != NULL) abort();
  int fl = fcntl(sv[1], F_GETFL);
  if (fl < 0 || fcntl(sv[1], F_SETFL, fl | O_NONBLOCK) != 0) abort();
  converse(sv[1], data, size);
  close(sv[1]);
  kiln_grpc_stats stats;
  for (int i = 0;; i++) {
    kiln_grpc_server_stats(s, &stats);
    if (stats.connections == 0 && stats.calls == 0) break;
    if (i == WAIT_MS) abort(); /* the connection or a call was never freed */
    sleep_ms(1);
  }
  return 0;
}
