/* kiln net: the servers every network front end of kiln sits on — HTTP/1.1 (below) and gRPC over
 * HTTP/2 (kiln_grpc_*, at the end).
 *
 * HTTP/1.1: a small set of I/O threads, each running its own epoll loop over a share of the connections
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

/* ---------------------------------------------------------------- gRPC over HTTP/2 (grpc.c)
 *
 * gRPC's wire protocol on nghttp2 (cleartext HTTP/2, "prior knowledge", as gRPC clients speak it
 * to an insecure channel), on the same kind of epoll loops as the HTTP/1.1 server: a set of I/O
 * threads, one listening socket. The server knows nothing of protobuf: it delivers each call's
 * request messages (the bytes inside gRPC's 5-byte length prefix) to a service and sends back the
 * messages and the status the service gives it. Every size that comes from a client has a
 * maximum; a slow or idle client only holds a connection slot.
 *
 * What the server answers itself, as grpc-core and grpc-go do: an unknown method UNIMPLEMENTED;
 * a message over max_message_bytes RESOURCE_EXHAUSTED (from its prefix, before its body is
 * read); a compressed message UNIMPLEMENTED (responses say grpc-accept-encoding: identity); a
 * malformed grpc-timeout INTERNAL; a method other than POST HTTP 405 and a content-type other
 * than application/grpc[+...] HTTP 415 (both with grpc-status INTERNAL); a passed deadline
 * DEADLINE_EXCEEDED. Each counts in rejected_total. */

typedef struct kiln_grpc_server kiln_grpc_server;
/* One call (an HTTP/2 stream). The service holds it from its first message until it calls
 * kiln_grpc_finish; the server keeps it alive that long even when the client has gone. */
typedef struct kiln_grpc_call kiln_grpc_call;

typedef enum kiln_grpc_kind {
  KILN_GRPC_UNKNOWN = 0, /* answered UNIMPLEMENTED by the server itself */
  KILN_GRPC_UNARY,       /* one request message (delivered once the client has half-closed), one answer */
  KILN_GRPC_STREAMING,   /* bidirectional: messages delivered as they arrive, answers sent as given */
} kiln_grpc_kind;

/* gRPC status codes (the canonical codes, which kiln_code shares). */
enum {
  KILN_GRPC_OK = 0,
  KILN_GRPC_CANCELLED = 1,
  KILN_GRPC_UNKNOWN_ERROR = 2,
  KILN_GRPC_INVALID_ARGUMENT = 3,
  KILN_GRPC_DEADLINE_EXCEEDED = 4,
  KILN_GRPC_NOT_FOUND = 5,
  KILN_GRPC_PERMISSION_DENIED = 7,
  KILN_GRPC_RESOURCE_EXHAUSTED = 8,
  KILN_GRPC_FAILED_PRECONDITION = 9,
  KILN_GRPC_UNIMPLEMENTED = 12,
  KILN_GRPC_INTERNAL = 13,
  KILN_GRPC_UNAVAILABLE = 14,
  KILN_GRPC_UNAUTHENTICATED = 16,
};

/* A request message and the call's metadata. Pointers stay valid until the callback returns. */
typedef struct kiln_grpc_request {
  const char *method;        /* the :path, "/tensorflow.serving.PredictionService/Predict" */
  const uint8_t *message;    /* the message (may be NULL when len is 0) */
  size_t len;
  int64_t index;             /* 0 for the call's first message, then 1, 2, ... */
  const char *request_id;    /* x-request-id metadata, NULL when absent */
  const char *traceparent;   /* W3C traceparent metadata, NULL when absent */
  const char *tracestate;    /* NULL when absent */
  const char *authorization; /* NULL when absent */
  const char *peer;          /* "127.0.0.1:5000" or "[::1]:5000" */
  double received_at;        /* kiln_now() when this message was complete */
  double deadline;           /* kiln_now() value from the client's grpc-timeout; 0: none */
} kiln_grpc_request;

typedef struct kiln_grpc_service {
  void *ctx;
  /* Which kind of method a :path is; on an I/O thread, when a call's headers arrive. */
  kiln_grpc_kind (*kind)(void *ctx, const char *method);
  /* A request message, on the I/O thread; must not block. For a unary method it comes once, after
   * the client half-closed (a unary call with no message or with several is answered INTERNAL by
   * the server itself); for a streaming one, each message as it completes. No callback comes for
   * a call after its kiln_grpc_finish (later messages are dropped). */
  void (*message)(void *ctx, kiln_grpc_call *call, const kiln_grpc_request *req);
  /* Streaming only: the client half-closed after sending n_messages (>= 0) messages. The service
   * calls kiln_grpc_finish once it has sent its last answer (at once when it has none pending).
   * With n_messages == 0 the service has never seen the call: it must still finish it.
   * It also comes (with kiln_grpc_cancelled true) when a streaming call the service holds is
   * cancelled before the client half-closed: the client reset it, left, or its deadline passed. */
  void (*half_close)(void *ctx, kiln_grpc_call *call, int64_t n_messages);
} kiln_grpc_service;

typedef struct kiln_grpc_options {
  const char *host;           /* NULL: "0.0.0.0" */
  int port;                   /* 0: any free port */
  int threads;                /* I/O threads; <= 0: the CPU count */
  size_t max_message_bytes;   /* one request message; 0: 64 MiB. Beyond: RESOURCE_EXHAUSTED */
  size_t max_header_bytes;    /* a call's request metadata (HTTP/2's count: name + value + 32 per header);
                               * 0: 64 KiB. Beyond: RESOURCE_EXHAUSTED */
  int max_connections;        /* over all threads; 0: 10000. Beyond: GOAWAY and close */
  int max_concurrent_streams; /* per connection (HTTP/2 SETTINGS); 0: 1000 */
  int idle_timeout_ms;        /* a connection with no call open; 0: 300000. Then GOAWAY and close (as
                               * is a client that stops reading our answers for that long) */
} kiln_grpc_options;

/* Binds, listens and starts the I/O threads; the service's callbacks must all be set. Errors name
 * the address ("127.0.0.1:8500: Address already in use"). */
kiln_status kiln_grpc_server_start(const kiln_grpc_options *opt, const kiln_grpc_service *service,
                                   kiln_grpc_server **out);
/* The port actually bound. */
int kiln_grpc_server_port(const kiln_grpc_server *s);

/* Adds response metadata (a header sent before the first answer, "x-request-id", say); only on
 * the I/O thread, inside the callback that delivered the call's first message or its half-close,
 * before the call's first kiln_grpc_send or kiln_grpc_finish. Names are lower-case. */
void kiln_grpc_add_header(kiln_grpc_call *call, const char *name, const char *value);
/* The service's own pointer for a call (NULL until set); only on the I/O thread, inside a callback
 * for the call. */
void kiln_grpc_set_context(kiln_grpc_call *call, void *context);
void *kiln_grpc_context(const kiln_grpc_call *call);
/* Sends a response message; any thread, before kiln_grpc_finish. Takes ownership of `message`
 * (malloc'd; may be NULL when len is 0). Dropped when the call is cancelled. */
void kiln_grpc_send(kiln_grpc_call *call, uint8_t *message, size_t len);
/* Ends the call with a status (KILN_GRPC_*) and a message (may be NULL; sent as grpc-message,
 * percent-encoded), after `last` (a final response message, owned as by kiln_grpc_send; NULL for
 * none, so an empty final message is a non-NULL `last` with len 0, or kiln_grpc_send(call, NULL,
 * 0) first). Any thread, exactly once; the call is gone for the service afterwards. An error
 * before any message goes out as a Trailers-Only response. */
void kiln_grpc_finish(kiln_grpc_call *call, int code, const char *message, uint8_t *last, size_t len);
/* Whether the call is over for the client: it reset the stream, closed the connection, or its
 * deadline passed (the server has then answered DEADLINE_EXCEEDED itself). Any thread; work for
 * a cancelled call can be skipped, but the service must still kiln_grpc_finish it. */
int kiln_grpc_cancelled(const kiln_grpc_call *call);

/* Stops accepting and sends every connection GOAWAY: calls open now run to their end; then each
 * connection closes. Drained when the stats report no connections. */
void kiln_grpc_server_stop_accepting(kiln_grpc_server *s);

typedef struct kiln_grpc_stats {
  int64_t connections;       /* open now */
  int64_t connections_total; /* accepted since start */
  int64_t calls;             /* calls held by the service now (first message to kiln_grpc_finish) */
  int64_t calls_total;       /* calls started since start */
  int64_t rejected_total;    /* calls the server answered itself with an error */
} kiln_grpc_stats;
void kiln_grpc_server_stats(kiln_grpc_server *s, kiln_grpc_stats *out);

/* Closes every connection and joins the I/O threads. Calls not yet finished must be finished
 * first: call this after `calls` has reached 0. Not from a callback. */
void kiln_grpc_server_free(kiln_grpc_server *s);

/* Text of an HTTP status ("Not Found"); "Unknown" for codes it does not know. */
const char *kiln_http_reason(int status);

/* Monotonic clock in seconds, the clock of received_at. */
double kiln_now(void);

#ifdef __cplusplus
}
#endif
#endif
