/* Internal to the serve layer: the model manager, the batcher and the request that travels
 * between the front ends (on the I/O threads) and the inference workers. */
#ifndef KILN_SERVE_SERVE_H
#define KILN_SERVE_SERVE_H

#include <pthread.h>
#include <stdatomic.h>

#include "kiln/data.h"
#include "kiln/graph.h"
#include "kiln/net.h"
#include "kiln/obs.h"
#include "kiln/serve.h"
#include "serve/codec.h"

typedef struct kx_version kx_version;
typedef struct kx_batcher kx_batcher;
typedef struct kx_manager kx_manager;

/* ---------------------------------------------------------------- requests */

typedef enum kx_api {
  KX_API_TFS_PREDICT,
  KX_API_TFS_STATUS,
  KX_API_TFS_METADATA,
  KX_API_V2_INFER,
  KX_API_V2_METADATA,
  KX_API_V2_READY,
  KX_API_V2_SERVER,
  KX_API_HEALTH,
  KX_API_METRICS,
  KX_API_ADMIN,
  KX_API_GRPC_PREDICT, /* gRPC: TF Serving's PredictionService and ModelService */
  KX_API_GRPC_TFS_METADATA,
  KX_API_GRPC_TFS_STATUS,
  KX_API_GRPC_RELOAD,
  KX_API_GRPC_V2_INFER, /* gRPC: KServe V2's GRPCInferenceService */
  KX_API_GRPC_V2_STREAM,
  KX_API_GRPC_V2_METADATA,
  KX_API_GRPC_V2_READY,
  KX_API_GRPC_V2_SERVER,
  KX_API_GRPC_HEALTH,
  KX_API_UNKNOWN,
  KX_API_COUNT
} kx_api;

/* A request being answered (every endpoint, inference or not): what metrics and the access log
 * record about it. Inference requests carry theirs inside kx_request. */
typedef struct kx_grpc_stream kx_grpc_stream;

typedef struct kx_call {
  kiln_http_exchange *ex;   /* a REST call's exchange, else NULL */
  kiln_grpc_call *grpc;     /* a gRPC call, else NULL */
  kx_grpc_stream *stream;   /* a message of ModelStreamInfer: answered on the stream, which it holds open */
  double deadline;          /* the client's (gRPC's grpc-timeout), kiln_now() clock; 0: none */
  kx_api api;
  const kx_version *version; /* NULL until resolved */
  double received_at;
  char request_id[40];
  char method[8];
  char path[160]; /* truncated for the access log */
  /* Tracing (spans.c): the request's trace, from its traceparent or new; every call has one. */
  uint8_t trace_id[16];
  uint8_t parent_id[8];    /* the caller's span; all zero when kiln started the trace */
  uint8_t span_id[8];      /* kiln's "receive" span: the parent-id of the response's traceparent */
  uint8_t trace_flags;     /* the response's traceparent flags */
  int sampled;             /* spans are exported (tracing on and the trace sampled) */
  const char *tracestate;  /* the request's, valid, carried back; NULL: none. Lives as long as ex */
  int64_t clock_offset_ns; /* CLOCK_REALTIME ns minus kiln_now() ns, once per call (sampled only) */
  const char *error;       /* the message of the error being answered, for the span's status */
} kx_call;

/* One inference request: decoded inputs on their way to a version's batcher. Owned by the
 * batcher from submission until its completion callback returns. */
typedef struct kx_request {
  kx_call call;        /* the HTTP side: exchange, ids, timing */
  kx_version *version;  /* holds a reference (kx_version_release when done) */
  int canary;          /* routed to the canary by the traffic split: stable answers if it fails */
  kiln_tensor *inputs; /* version's n_inputs owned tensors; dims[0] is the batch */
  int columnar;        /* TF Serving: answer in the columnar format */
  kx_v2_request v2;    /* KServe V2: id and the outputs asked for */
  double deadline;     /* kiln_now() value after which it is answered DEADLINE_EXCEEDED */
  double enqueued_at;
  /* kiln_now() times the batcher records for the spans (0: not reached) */
  double taken_at;     /* a worker took it off the queue */
  double run_start;    /* the batch is merged, the model run starts */
  double run_end;
  int64_t batch_rows;  /* rows of the run it was part of (padding included) */
  double encode_start, encode_end;
  struct kx_request *next; /* queue link */
} kx_request;

/* ---------------------------------------------------------------- batcher */

/* Called on a worker thread for every request, exactly once: outputs (the model's n_outputs
 * tensors, views valid only during the call) on success, or an error (outputs NULL). The callback
 * owns `error` and the request (it answers the exchange and frees the request). */
typedef void (*kx_done_fn)(void *ctx, kx_request *req, const kiln_tensor *const *outputs, kiln_status error);

typedef struct kx_batcher_options {
  int workers;          /* inference threads, each with its own session */
  int intra_op_threads; /* kernel threads per run */
  kiln_pool *pool;
  int batching;                       /* merge requests (only when the model's inputs allow it) */
  const kiln_batching_config *config; /* when batching */
  int max_queue;                      /* requests waiting; beyond, submit refuses */
  /* Warm-up: each worker runs each record `warmup_runs` times before the batcher is ready. */
  const kiln_tensor *const *warmup; /* n_warmup records of n_inputs tensors each */
  int n_warmup;
  int warmup_runs;
  kx_done_fn done;
  void *done_ctx;
  /* metric labels {model, version} for queue/inference/batch histograms */
  kiln_metric *queue_seconds, *inference_seconds, *batch_size;
  const char *labels[2];
} kx_batcher_options;

/* Starts the workers and waits until every one has created its session and warmed up; an error
 * (a session that cannot be created, a failed warm-up run) stops them again. */
kiln_status kx_batcher_start(const kiln_model *m, const kx_batcher_options *opt, kx_batcher **out);
/* Queues a request; returns 0, or -1 when the queue is full (the caller answers 429). */
int kx_batcher_submit(kx_batcher *b, kx_request *req);
/* Whether a warm-up run returned NaN or Inf (the manager judges a canary by it). */
int kx_batcher_warmup_nonfinite(const kx_batcher *b);
/* Answers everything queued, then joins the workers and frees the batcher. */
void kx_batcher_free(kx_batcher *b);

/* ---------------------------------------------------------------- versions and the manager */

/* ---------------------------------------------------------------- rollout (rollout.c) */

/* What a version's answers have been like: counts since it was loaded and its recent latencies. */
#define KX_LATENCY_WINDOW 1024
typedef struct kx_health {
  atomic_llong requests, errors, nonfinite;
  pthread_mutex_t lock; /* the latency window */
  float latency_ms[KX_LATENCY_WINDOW];
  int n_latency, next_latency;
} kx_health;

void kx_health_init(kx_health *h);
void kx_health_destroy(kx_health *h);
/* One answered request: failed (an error), non-finite (NaN/Inf in its outputs), its latency. */
void kx_health_record(kx_health *h, int failed, int nonfinite, double seconds);
/* Whether the canary's health breaches the options' thresholds against stable's. Returns 0 while
 * it is healthy or has fewer than min_requests requests; otherwise 1 with `kind` ("error_rate",
 * "nonfinite" or "latency": p99 and median both over the ratio) and a sentence with the figures
 * in `reason`. */
int kx_canary_breach(const kiln_canary_options *o, kx_health *canary, kx_health *stable, const char **kind,
                     char *reason, size_t size);
/* The options with every default filled in. */
kiln_canary_options kx_canary_defaults(const kiln_canary_options *o);
/* Whether any floating-point output holds NaN or Inf. */
int kx_outputs_nonfinite(const kiln_tensor *const *outputs, int n);
/* 0..99, the same for the same request id: where it falls in the traffic split. */
int kx_canary_bucket(const char *request_id);

/* TF Serving's ManagerState names. */
typedef enum kx_state { KX_START, KX_LOADING, KX_AVAILABLE, KX_UNLOADING, KX_END } kx_state;
const char *kx_state_name(kx_state s);

struct kx_version {
  char *model_name;
  int64_t number;
  char version_text[24];
  kiln_model *model;
  kx_signature sig;         /* the model's */
  kiln_preprocess *pre;     /* the folder's preprocess.json, NULL when none */
  kx_signature request_sig; /* with `pre`: what requests carry (the raw features) and get back */
  kx_batcher *batcher;
  atomic_int refs;    /* one per request holding it, plus one while the manager serves it */
  kx_state state;     /* guarded by the manager's lock */
  kiln_status error;  /* why it is END without having served (load or warm-up failure) */
  int batchable;      /* every input has a free first dimension */
  kx_health health;
  atomic_int canary;       /* the model's `canary` label names it (changed under the manager's lock) */
  atomic_int rejected;     /* routed no more: a failed canary, on its way to being retired */
  atomic_int promote;      /* a healthy canary to be labelled stable by the poller */
  char reject_reason[240]; /* set before `rejected` becomes 1 */
};

/* The signature requests are decoded against and metadata describes: the raw features when the
 * version preprocesses its requests, else the model's. */
static inline const kx_signature *kx_request_sig(const kx_version *v) { return v->pre ? &v->request_sig : &v->sig; }

/* Drops a reference. The last drop of a retired version lets the manager free it. */
void kx_version_release(kx_version *v);

typedef struct kx_manager_options {
  const kiln_server_options *server;
  kiln_pool *pool;
  kx_done_fn done;
  void *done_ctx;
  kiln_metrics *metrics;
  /* Families whose first two labels are model and version: a version's series are removed when
   * it is freed, so that churning versions does not grow the registry. */
  kiln_metric *version_metrics[4];
  int n_version_metrics;
} kx_manager_options;

kiln_status kx_manager_create(const kx_manager_options *opt, kx_manager **out);
/* Replaces the model list and loads / unloads to match it (also what each poll does). */
kiln_status kx_manager_configure(kx_manager *mg, const kiln_model_server_config *cfg);
/* Starts polling every `seconds` on a thread of its own. */
kiln_status kx_manager_start_polling(kx_manager *mg, double seconds);

/* Finds the version a request names: `version` >= 0, else `label` non-NULL, else the default
 * (the "stable" label, else the newest AVAILABLE version that is not the canary) — or, for the
 * canary's share of request ids (`request_id` non-NULL), the canary, with *canary set (may be
 * NULL). Returns it with a reference taken, or an error: NOT_FOUND for an unknown model / version /
 * label, UNAVAILABLE when it exists but is not AVAILABLE (loading, unloading, failed). */
kiln_status kx_manager_acquire(kx_manager *mg, const char *model, int64_t version, const char *label,
                               const char *request_id, kx_version **out, int *canary);
/* The default version of a model other than `not` (where a failed canary request goes), with a
 * reference taken; NULL when there is none. */
kx_version *kx_manager_acquire_fallback(kx_manager *mg, const kx_version *not);
/* Records an answered request in the version's health and judges a canary: a breach stops its
 * traffic at once and leaves the repository change and the unload to the poller. */
void kx_manager_observe(kx_manager *mg, kx_version *v, int failed, int nonfinite, double seconds);
/* A model's base path (its repository folder) into out; NOT_FOUND for an unknown model. */
kiln_status kx_manager_base_path(kx_manager *mg, const char *model, char *out, size_t size);
/* Wakes the poller to scan now (labels, new versions; failed versions are retried). */
void kx_manager_poll_now(kx_manager *mg);
/* Status of a model's versions (all, or just the one named), as TF Serving's GetModelStatus
 * JSON: {"model_version_status":[{"version":"1","state":"AVAILABLE","status":{"error_code":"OK",
 * "error_message":""}}]}. NOT_FOUND for an unknown model or version. */
kiln_status kx_manager_status_json(kx_manager *mg, const char *model, int64_t version, const char *label,
                                   kx_buf *out);
/* AVAILABLE version numbers of a model, ascending (for V2 metadata); returns the count (at most
 * max), -1 for an unknown model. */
int kx_manager_versions(kx_manager *mg, const char *model, int64_t *out, int max);
/* Whether there are models and every one has at least one AVAILABLE version. */
int kx_manager_ready(kx_manager *mg);
/* Stops polling, retires every version (answering what is queued) and frees the manager. */
void kx_manager_free(kx_manager *mg);

#endif

/* ---------------------------------------------------------------- the server and its front ends */

struct kiln_server {
  kiln_server_options opt;
  kiln_http_server *http;
  kx_manager *manager;
  kiln_pool *pool;
  kiln_metrics *metrics;
  atomic_int loaded;   /* the first load of every configured model has been tried */
  atomic_int draining;
  atomic_uint_fast64_t next_id;
  uint64_t id_salt;
  kiln_metric *requests, *request_seconds, *in_flight, *connections, *grpc_connections;
  int admin_enabled;
  char admin_token_sha256[65]; /* of opt.admin_token (hex), compared in constant time */
  int audit_fd;                   /* the audit log, -1: the log */
  kiln_tracer *tracer;            /* NULL: tracing off */
  kiln_grpc_server *grpc;         /* NULL: gRPC off (--port 0 is any free port; a negative one turns it off) */
  pthread_mutex_t reload_lock;    /* one gRPC HandleReloadConfigRequest at a time */
  atomic_int reloads;             /* reload threads running: the server is freed after they end */
};

/* The HTTP status for a kiln code, as TF Serving maps gRPC codes. */
int kx_http_status(kiln_code code);
/* Records an answered call: its metrics (status: the HTTP status, or for gRPC the one its code maps
 * to), access-log line and receive span; grpc_code is the gRPC status code, -1 for REST. */
void kx_record(kiln_server *s, kx_call *c, int status, size_t len, int grpc_code);
/* Logs an error answer the server is to blame for (5xx but 503). */
void kx_log_error(const kx_call *c, kiln_code code, const char *message);
/* The call's request id: the client's (X-Request-Id / x-request-id) when it is a sane token, else
 * a new one. */
void kx_set_request_id(kiln_server *s, kx_call *c, const char *given);
/* Answers a call: records its metrics and access-log line, then responds (takes `body`). */
void kx_answer(kiln_server *s, kx_call *c, int status, const char *content_type, const char *extra_headers,
               char *body, size_t len);
/* Answers with {"error": message} and the HTTP status TF Serving maps the code to; frees `error`. */
void kx_answer_error(kiln_server *s, kx_call *c, kiln_status error);
/* Answers 200 with the JSON in `out` (freed). */
void kx_answer_json(kiln_server *s, kx_call *c, kx_buf *out);
/* Decodes a request body into r->inputs (and the front end's fields of r). */
typedef kiln_status (*kx_decode_fn)(kx_request *r, const void *message);
/* The inference path of every front end: finds the version (version >= 0, else label, else the
 * default), decodes `message` (the REST front ends' kiln_http_request, the gRPC ones' unpacked
 * protobuf) against its signature and queues the request; every error is answered here. */
void kx_infer(kiln_server *s, kx_call *c, const char *model, int64_t version, const char *label,
              const void *message, kx_decode_fn decode);

/* Parses a version number from a URL segment (digits only). */
kiln_status kx_parse_version(const char *text, int64_t *out);

/* The admin API (/v1/admin/models/{m}/labels|reload|rollback), on the I/O thread (admin.c). */
void kx_admin_handle(kiln_server *s, kx_call *c, const kiln_http_request *req);
/* The body of POST .../labels, {"version": 3, "label": "stable"} (the version a number or a
 * string of digits): *label points into `body`. Unknown keys are errors. */
struct cJSON;
kiln_status kx_admin_label_params(const struct cJSON *body, int64_t *version, const char **label);
/* Opens the audit log and keeps the token's digest (at server start). */
kiln_status kx_admin_start(kiln_server *s);
void kx_admin_stop(kiln_server *s);

/* Front ends: each answers the paths under its prefix (/v1/ and /v2), on the I/O thread. */
void kx_tfs_handle(kiln_server *s, kx_call *c, const kiln_http_request *req);
void kx_v2_handle(kiln_server *s, kx_call *c, const kiln_http_request *req);
/* Encodes a finished inference request's response body (on a worker thread). */
kiln_status kx_tfs_encode_response(kx_request *r, const kiln_tensor *const *outputs, kx_buf *out);
kiln_status kx_v2_encode_response(kx_request *r, const kiln_tensor *const *outputs, kx_buf *out, size_t *json_len);

/* ---------------------------------------------------------------- the gRPC front ends (grpc*.c) */

/* Starts the gRPC server on opt.grpc_port beside REST (grpc.c). */
kiln_status kx_grpc_start(kiln_server *s);
/* A gRPC call's answer: a packed response message (taken), or an error (freed) as the call's
 * status; a ModelStreamInfer message's answer goes on its stream. Records the call's metrics,
 * access-log line and receive span, as kx_answer does for REST. */
void kx_grpc_answer(kiln_server *s, kx_call *c, uint8_t *message, size_t len);
void kx_grpc_answer_error(kiln_server *s, kx_call *c, kiln_status error);
/* Packs a response message and answers with it (or with the packing's error). */
struct ProtobufCMessage;
void kx_grpc_answer_message(kiln_server *s, kx_call *c, const struct ProtobufCMessage *m);
/* Encodes a finished gRPC inference request's response (on a worker thread). */
kiln_status kx_grpc_encode_response(kx_request *r, const kiln_tensor *const *outputs, uint8_t **out, size_t *len);
/* The methods of each service, on the I/O thread: each answers its call. */
void kx_grpc_tfs_predict(kiln_server *s, kx_call *c, const kiln_grpc_request *req);
void kx_grpc_tfs_metadata(kiln_server *s, kx_call *c, const kiln_grpc_request *req);
void kx_grpc_tfs_status(kiln_server *s, kx_call *c, const kiln_grpc_request *req);
void kx_grpc_tfs_reload(kiln_server *s, kx_call *c, const kiln_grpc_request *req);
void kx_grpc_v2_live(kiln_server *s, kx_call *c, const kiln_grpc_request *req);
void kx_grpc_v2_ready(kiln_server *s, kx_call *c, const kiln_grpc_request *req);
void kx_grpc_v2_model_ready(kiln_server *s, kx_call *c, const kiln_grpc_request *req);
void kx_grpc_v2_server_metadata(kiln_server *s, kx_call *c, const kiln_grpc_request *req);
void kx_grpc_v2_model_metadata(kiln_server *s, kx_call *c, const kiln_grpc_request *req);
void kx_grpc_v2_infer(kiln_server *s, kx_call *c, const kiln_grpc_request *req);
/* grpc.health.v1.Health/Check: SERVING while kx_server_ready, else NOT_SERVING; NOT_FOUND for a
 * service kiln does not serve (grpc_v2.c). */
void kx_grpc_health_check(kiln_server *s, kx_call *c, const kiln_grpc_request *req);
/* Whether the server is ready: every configured model loaded once, not draining, every model with
 * an AVAILABLE version (REST's /v2/health/ready and gRPC's ServerReady). */
int kx_server_ready(kiln_server *s);
/* One admin audit line (JSON, to --admin_audit_log or the log), appended with a single write
 * (O_APPEND) so that concurrent lines never interleave: who ("token", "no token", "wrong
 * token"), the client, the action and model (or ""), its parameters (NULL: none), the HTTP status
 * (a gRPC call's mapped one) and the result ("ok" or the error). */
void kx_admin_audit(kiln_server *s, const kx_call *c, const char *who, const char *peer, const char *action,
                    const char *model, const struct cJSON *params, int status, const char *result);
/* The admin token check of an Authorization value: "token" when it is right, else "no token" or
 * "wrong token" (admin.c). */
const char *kx_admin_authenticate(const kiln_server *s, const char *authorization);

/* A model's versions as GetModelStatus describes them (manager.c). */
typedef struct kx_version_status {
  int64_t version;
  kx_state state;
  kiln_code code;
  char message[512];
} kx_version_status;
/* The statuses of a model's versions (all, newest first, or the one named by version or label),
 * malloc'd into *out; the same errors as kx_manager_status_json. */
kiln_status kx_manager_status(kx_manager *mg, const char *model, int64_t version, const char *label,
                              kx_version_status **out, int *n);

/* ---------------------------------------------------------------- tracing (spans.c) */

/* Gives the call its trace context: the request's traceparent when valid (and its tracestate when
 * that is valid too), else a new trace sampled at the server's ratio; a new receive span id. */
void kx_trace_begin(kiln_server *s, kx_call *c, const char *traceparent, const char *tracestate);
/* The traceparent of the call's response (its receive span) into buf; returns buf. */
char *kx_trace_parent(const kx_call *c, char buf[KILN_TRACEPARENT_SIZE]);
/* The traceparent (and tracestate) response header lines into buf; returns buf. */
char *kx_trace_headers(const kx_call *c, char *buf, size_t size);
/* The call's "receive" span (SERVER kind, from its last byte to now), when sampled: with HTTP's
 * attributes, or for a gRPC call (grpc_code >= 0) OpenTelemetry's rpc.* ones. */
void kx_trace_receive(kiln_server *s, const kx_call *c, int status, int grpc_code);
/* An inference request's "queue", "batch", "inference" and "encode" spans (children of receive),
 * those it reached, when sampled; run_error / encode_error give the failing span its status. */
void kx_trace_request(kiln_server *s, const kx_request *r, const char *run_error, const char *encode_error);
