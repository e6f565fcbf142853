/* Internal to the gRPC server: the objects grpc.c (connections, the HTTP/2 session, the I/O
 * threads) and grpc_call.c (gRPC calls on the session's streams) share, and the functions each
 * calls in the other. Everything here is touched on the owning I/O thread only, except where a
 * field says otherwise. */
#ifndef KILN_NET_GRPC_CALL_H
#define KILN_NET_GRPC_CALL_H

#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <stdatomic.h>

#include "core/buf.h"
#include "kiln/net.h"
#include "net/ev.h"
#include "net/io_group.h"

#define KX_GRPC_PREFIX 5 /* gRPC's message prefix: flag byte + 4-byte big-endian length */

typedef struct kx_grpc_io kx_grpc_io;
typedef struct kx_grpc_conn kx_grpc_conn;
typedef struct kx_grpc_outmsg kx_grpc_outmsg;

/* A response message waiting to be framed: the prefix, then the data. */
struct kx_grpc_outmsg {
  kx_grpc_outmsg *next;
  uint8_t prefix[KX_GRPC_PREFIX];
  uint8_t *data;
  size_t len;
  size_t off; /* bytes of prefix + data handed to nghttp2 */
};

struct kiln_grpc_call {
  kiln_grpc_server *server;
  kx_grpc_io *io;
  /* ---- on the I/O thread */
  kx_grpc_conn *conn; /* NULL once the stream is gone */
  kiln_grpc_call *prev, *next;
  int32_t stream_id;
  kiln_grpc_kind kind;
  kx_buf method, http_method, content_type, timeout, request_id, traceparent, tracestate, authorization;
  size_t header_bytes;
  int accepted;        /* headers checked: messages are read */
  double deadline;     /* kiln_now() clock; 0: none */
  ev_timer deadline_timer;
  uint8_t prefix[KX_GRPC_PREFIX];
  size_t prefix_got, msg_len, msg_got;
  kx_buf msg;   /* the message being read */
  kx_buf first; /* unary: the one message, until the client half-closes */
  int64_t n_messages;
  int service_holds, half_close_given, in_job;
  int headers_sent, deferred, end_sent;
  int finished; /* the status is decided (the service finished, or the server answered) */
  int code;
  char *status_message;
  kx_grpc_outmsg *out_head, *out_tail;
  kx_buf resp_headers; /* "name\0value\0" pairs from kiln_grpc_add_header */
  void *context;       /* the service's (kiln_grpc_set_context) */
  int n_resp_headers;
  /* ---- from any thread, under mu */
  pthread_mutex_t mu;
  kx_grpc_outmsg *pend_head, *pend_tail;
  int finish_called, finish_pending, job_posted;
  int fin_code;
  char *fin_message;
  ev_job job;
  atomic_int cancelled;
  atomic_int service_finished; /* kiln_grpc_finish was called: no more callbacks for this call */
};

struct kx_grpc_conn {
  kx_grpc_io *io;
  kx_grpc_conn *prev, *next;
  int fd;
  int counted; /* holds one of max_connections */
  char peer[64];
  nghttp2_session *session;
  kx_buf out; /* frames from nghttp2 waiting for send() */
  size_t out_off;
  int lingering, goaway_notice, goaway_final;
  int closing; /* the client closed: the close job is posted (conn_free only shuts until it runs) */
  int dead;    /* shut: socket, session and calls gone, the struct waits for the close job */
  int64_t open_calls;
  kiln_grpc_call *calls;
  int64_t idle_since_ms, last_write_ms;
  ev_timer timer;       /* idle, stalled writes, linger */
  ev_timer drain_timer; /* the final GOAWAY after the shutdown notice */
  ev_job job;           /* adoption by the loop (kx_grpc_serve_fd), then the close job */
};

/* This server's state for one loop of its I/O group. */
struct kx_grpc_io {
  kiln_grpc_server *server;
  ev_loop *loop;
  kx_grpc_conn *conns;
};

struct kiln_grpc_server {
  kiln_grpc_options opt; /* defaults filled in */
  kiln_grpc_service service;
  int port;
  int nio;
  kx_grpc_io *io;
  kx_io_group *group;
  nghttp2_session_callbacks *callbacks;
  atomic_llong connections, connections_total, calls, calls_total, rejected_total;
};

/* A new call for a request stream of c, linked into c's calls; NULL when out of memory. */
kiln_grpc_call *kx_grpc_call_new(kx_grpc_conn *c, int32_t stream_id);
/* One header of the stream's request (request_block) or of its trailers: counted against
 * max_header_bytes, and kept when the call needs it. */
void kx_grpc_call_header(kiln_grpc_call *call, int request_block, const uint8_t *name, size_t namelen,
                         const uint8_t *value, size_t valuelen);
/* The request's headers are complete: checks them and decides whether the call goes on. */
void kx_grpc_call_begin(kiln_grpc_call *call);
/* DATA of the call's stream. */
void kx_grpc_call_data(kiln_grpc_call *call, const uint8_t *data, size_t len);
/* The client half-closed the stream (END_STREAM). */
void kx_grpc_call_half_close(kiln_grpc_call *call);
/* The stream is gone (closed, or its connection ended): the call lets go of it, is cancelled
 * unless it was answered, and is freed unless the service or a posted job still holds it. */
void kx_grpc_call_release_stream(kiln_grpc_call *call);

/* Writes what the session has to send; -1 when the connection is gone (conn_free'd). */
int kx_grpc_conn_flush(kx_grpc_conn *c);

#endif
