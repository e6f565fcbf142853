/* A gRPC echo server on kiln's gRPC layer, for test_grpc_wire.py to talk to with a real gRPC client
 * (Debian's python3-grpcio): prints "port N" once listening; SIGTERM drains it and exits once the
 * last connection is gone.
 * /test.Echo/Unary: the request back, with its x-request-id as response metadata;
 * /test.Echo/Stream: each message back, OK at the half-close;
 * /test.Echo/Slow: the request back from another thread after 300 ms (unless cancelled);
 * /test.Echo/Fail: INVALID_ARGUMENT with a message that needs percent-encoding. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kiln/net.h"

static volatile sig_atomic_t stop_requested;

static void on_term(int sig) { stop_requested = 1; }

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static uint8_t *copy(const uint8_t *s, size_t n) {
  uint8_t *d = malloc(n ? n : 1);
  if (d && n) memcpy(d, s, n);
  return d;
}

static kiln_grpc_kind kind(void *ctx, const char *method) {
  if (!strcmp(method, "/test.Echo/Stream")) return KILN_GRPC_STREAMING;
  if (!strcmp(method, "/test.Echo/Unary") || !strcmp(method, "/test.Echo/Slow") || !strcmp(method, "/test.Echo/Fail"))
    return KILN_GRPC_UNARY;
  return KILN_GRPC_UNKNOWN;
}

typedef struct slow {
  kiln_grpc_call *call;
  uint8_t *data;
  size_t len;
} slow;

static void *slow_main(void *arg) {
  slow *w = arg;
  for (int i = 0; i < 30 && !kiln_grpc_cancelled(w->call); i++) sleep_ms(10);
  if (kiln_grpc_cancelled(w->call)) fprintf(stderr, "grpc_echo: slow call cancelled\n");
  kiln_grpc_finish(w->call, KILN_GRPC_OK, NULL, w->data, w->len);
  free(w);
  return NULL;
}

static void message(void *ctx, kiln_grpc_call *call, const kiln_grpc_request *req) {
  if (!strcmp(req->method, "/test.Echo/Stream")) {
    kiln_grpc_send(call, copy(req->message, req->len), req->len);
  } else if (!strcmp(req->method, "/test.Echo/Fail")) {
    kiln_grpc_finish(call, KILN_GRPC_INVALID_ARGUMENT, "bad: 100% \xc3\xbcnicode\nline two", NULL, 0);
  } else if (!strcmp(req->method, "/test.Echo/Slow")) {
    slow *w = malloc(sizeof *w);
    pthread_t t;
    if (w) *w = (slow){call, copy(req->message, req->len), req->len};
    if (!w || pthread_create(&t, NULL, slow_main, w) != 0) {
      kiln_grpc_finish(call, KILN_GRPC_INTERNAL, "cannot start a thread", NULL, 0);
      if (w) free(w->data);
      free(w);
      return;
    }
    pthread_detach(t);
  } else {
    if (req->request_id) kiln_grpc_add_header(call, "x-request-id", req->request_id);
    kiln_grpc_finish(call, KILN_GRPC_OK, NULL, copy(req->message, req->len), req->len);
  }
}

static void half_close(void *ctx, kiln_grpc_call *call, int64_t n) {
  char text[64];
  snprintf(text, sizeof text, "%lld messages", (long long)n);
  kiln_grpc_finish(call, KILN_GRPC_OK, text, NULL, 0);
}

int main(void) {
  signal(SIGTERM, on_term);
  signal(SIGPIPE, SIG_IGN);
  kiln_grpc_service svc = {NULL, kind, message, half_close};
  kiln_grpc_options o = {.host = "127.0.0.1", .threads = 2, .max_message_bytes = 32 << 20};
  kiln_grpc_server *s = NULL;
  kiln_status st = kiln_grpc_server_start(&o, &svc, &s);
  if (st) {
    fprintf(stderr, "grpc_echo: %s\n", kiln_status_message(st));
    kiln_status_free(st);
    return 2;
  }
  printf("port %d\n", kiln_grpc_server_port(s));
  fflush(stdout);
  while (!stop_requested) sleep_ms(10);
  kiln_grpc_server_stop_accepting(s);
  kiln_grpc_stats stats;
  do {
    sleep_ms(10);
    kiln_grpc_server_stats(s, &stats);
  } while (stats.connections > 0 || stats.calls > 0);
  kiln_grpc_server_free(s);
  fprintf(stderr, "grpc_echo: drained after %lld calls\n", (long long)stats.calls_total);
  return 0;
}
