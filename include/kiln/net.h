/* kiln net: the HTTP/1.1 server every network front end of kiln sits on.
 *
 * A small set of I/O threads, each running its own epoll loop over a share of the connections
 * (one listening socket, accepted with EPOLLEXCLUSIVE). Requests are parsed with http-parser;
 * every size that comes from a client has a configured maximum, and a slow or idle client only
 * holds a connection slot, never a thread. The handler runs on the I/O thread and must not
 * block: it either answers at once or hands the exchange to another thread, which answers
 * later with kiln_http_respond. */
#ifndef KILN_NET_H
#define KILN_NET_H

#include "kiln/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kiln_http_server kiln_http_server;
/* One request in flight; valid until kiln_http_respond is called for it. */
typedef struct kiln_http_exchange kiln_http_exchange;

/* A parsed request. Every pointer stays valid until the exchange is answered. */
typedef struct kiln_http_request {
  const char *method; /* "GET", "POST", ... */
  const char *path;   /* percent-decoded path without the query, e.g. "/v1/models/m:predict" */
  const char *query;  /* raw query string after '?', "" when none */
  const char *body;   /* NULL when empty; NUL-terminated past body_len */
  size_t body_len;
  const char *content_type;         /* NULL when absent */
  int64_t inference_header_length;  /* Inference-Header-Content-Length, -1 when absent */
  const char *request_id;           /* X-Request-Id, NULL when absent */
  const char *traceparent;          /* W3C traceparent, NULL when absent */
  const char *tracestate;           /* W3C tracestate (several headers joined by ','), NULL when absent */
  const char *authorization;        /* Authorization, NULL when absent */
  const char *peer;                 /* the client's address, "127.0.0.1:5000" or "[::1]:5000" */
  int keep_alive;                   /* the connection stays open after the response */
  double received_at;               /* CLOCK_MONOTONIC seconds when the request was complete */
} kiln_http_request;

typedef void (*kiln_http_handler)(void *ctx, kiln_http_exchange *ex, const kiln_http_request *req);

typedef struct kiln_http_options {
  const char *host;        /* address to bind; NULL: "0.0.0.0" */
  int port;                /* 0: any free port (kiln_http_server_port tells which) */
  int threads;             /* I/O threads; <= 0: the CPU count */
  size_t max_header_bytes; /* request line + headers; 0: 64 KiB. Beyond: 431 */
  size_t max_body_bytes;   /* 0: 64 MiB. Beyond: 413, before the body is read */
  int max_connections;     /* open connections over all threads; 0: 10000. Beyond: 503 + close */
  int idle_timeout_ms;     /* keep-alive connection with no request in progress (and a response
                            * the client stops reading); 0: 60000 */
  int request_timeout_ms;  /* from a request's first byte to its last; 0: 30000. Beyond: 408 */
} kiln_http_options;

/* Binds, listens and starts the I/O threads. Errors name the address ("127.0.0.1:8501: address
 * already in use"). */
kiln_status kiln_http_server_start(const kiln_http_options *opt, kiln_http_handler handler, void *ctx,
                                   kiln_http_server **out);
/* The port actually bound. */
int kiln_http_server_port(const kiln_http_server *s);

/* Answers an exchange; callable from any thread, exactly once per exchange (the exchange is
 * gone afterwards). Takes ownership of `body` (malloc'd, may be NULL when len is 0).
 * `extra_headers` is NULL or complete header lines, each ending in "\r\n". When the client has
 * gone away the response is dropped. While the server drains, responses carry
 * "Connection: close". */
void kiln_http_respond(kiln_http_exchange *ex, int status, const char *content_type, const char *extra_headers,
                       char *body, size_t len);
/* The same with a JSON body {"error": message}. */
void kiln_http_respond_error(kiln_http_exchange *ex, int status, const char *message);
/* That body, {"error": "<message, JSON-escaped>"}, malloc'd; NULL (len 0) when out of memory. For
 * callers that answer with kiln_http_respond to add headers of their own. */
char *kiln_http_error_body(const char *message, size_t *len);

/* Stops accepting: the listening socket is closed; every response from now on carries
 * "Connection: close" and its connection closes after it; an idle keep-alive connection gets one
 * second (or idle_timeout_ms, if shorter) to send one more request, then is closed. Drained when
 * kiln_http_server_stats reports no connections. */
void kiln_http_server_stop_accepting(kiln_http_server *s);

typedef struct kiln_http_stats {
  int64_t connections;       /* open now */
  int64_t connections_total; /* accepted since start */
  int64_t in_flight;         /* requests handed to the handler and not yet answered */
  int64_t rejected_total;    /* requests answered by the HTTP layer itself (4xx/5xx) */
} kiln_http_stats;
void kiln_http_server_stats(kiln_http_server *s, kiln_http_stats *out);

/* Closes every connection and joins the I/O threads. Exchanges not yet answered must be answered
 * (or their owners stopped) first: call this after in_flight has reached 0. Not from a handler. */
void kiln_http_server_free(kiln_http_server *s);

/* Text of an HTTP status ("Not Found"); "Unknown" for codes it does not know. */
const char *kiln_http_reason(int status);

/* Monotonic clock in seconds, the clock of received_at. */
double kiln_now(void);

#ifdef __cplusplus
}
#endif
#endif
