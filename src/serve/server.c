/* The model server: the HTTP handler that routes every request to a front end or an operations
 * endpoint (/metrics, health), the path an inference request takes to a batcher and back, and
 * the server's life cycle (start, reload, drain, free). */
#include "serve/serve.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *api_names[KX_API_COUNT] = {
    [KX_API_TFS_PREDICT] = "tfserving_predict", [KX_API_TFS_STATUS] = "tfserving_status",
    [KX_API_TFS_METADATA] = "tfserving_metadata", [KX_API_V2_INFER] = "v2_infer",
    [KX_API_V2_METADATA] = "v2_metadata", [KX_API_V2_READY] = "v2_ready",
    [KX_API_V2_SERVER] = "v2_server", [KX_API_HEALTH] = "health",
    [KX_API_METRICS] = "metrics", [KX_API_ADMIN] = "admin", [KX_API_GRPC_PREDICT] = "grpc_predict",
    [KX_API_GRPC_TFS_METADATA] = "grpc_metadata", [KX_API_GRPC_TFS_STATUS] = "grpc_status",
    [KX_API_GRPC_RELOAD] = "grpc_reload", [KX_API_GRPC_V2_INFER] = "grpc_v2_infer",
    [KX_API_GRPC_V2_STREAM] = "grpc_v2_stream_infer", [KX_API_GRPC_V2_METADATA] = "grpc_v2_metadata",
    [KX_API_GRPC_V2_READY] = "grpc_v2_ready", [KX_API_GRPC_V2_SERVER] = "grpc_v2_server",
    [KX_API_GRPC_HEALTH] = "grpc_health", [KX_API_UNKNOWN] = "unknown",
};

/* The HTTP status for a kiln code, as TF Serving maps gRPC codes. */
int kx_http_status(kiln_code code) {
  switch (code) {
  case KILN_OK: return 200;
  case KILN_INVALID_ARGUMENT:
  case KILN_FAILED_PRECONDITION:
  case KILN_OUT_OF_RANGE: return 400;
  case KILN_CANCELLED: return 499; /* nginx's "client closed request" */
  case KILN_UNAUTHENTICATED: return 401;
  case KILN_PERMISSION_DENIED: return 403;
  case KILN_NOT_FOUND: return 404;
  case KILN_RESOURCE_EXHAUSTED: return 429;
  case KILN_UNIMPLEMENTED: return 501;
  case KILN_UNAVAILABLE: return 503;
  case KILN_DEADLINE_EXCEEDED: return 504;
  default: return 500;
  }
}

static void access_log(const kx_call *c, int status, size_t len, double seconds, const char *grpc_status) {
  char took[32], code[8], bytes[24], trace[33];
  snprintf(took, sizeof took, "%.3f", seconds * 1e3);
  snprintf(code, sizeof code, "%d", status);
  snprintf(bytes, sizeof bytes, "%zu", len);
  kiln_log_field f[10] = {{"type", "access"},
                          {"method", c->method},
                          {"path", c->path},
                          {"status", code},
                          {"duration_ms", took},
                          {"bytes", bytes},
                          {"request_id", c->request_id},
                          {"model", c->version ? c->version->model_name : NULL},
                          {"trace_id", kiln_trace_hex(c->trace_id, 16, trace)},
                          {"grpc_status", grpc_status}};
  kiln_log_fields(KILN_LOG_INFO, f, 10, "%s %s %d", c->method, c->path, status);
}

void kx_record(kiln_server *s, kx_call *c, int status, size_t len, const char *grpc_status) {
  double seconds = kiln_now() - c->received_at;
  char code[8];
  snprintf(code, sizeof code, "%d", status);
  const char *labels[4] = {c->version ? c->version->model_name : "", c->version ? c->version->version_text : "",
                           api_names[c->api], code};
  kiln_metric_add(s->requests, labels, 1);
  kiln_metric_observe(s->request_seconds, labels, seconds);
  if (s->opt.access_log) access_log(c, status, len, seconds, grpc_status);
  kx_trace_receive(s, c, status);
}

void kx_answer(kiln_server *s, kx_call *c, int status, const char *content_type, const char *extra_headers,
               char *body, size_t len) {
  kx_record(s, c, status, len, NULL);
  /* the id (< 40 bytes), traceparent, tracestate (<= 512 bytes), at most Inference-Header-Content-Length */
  char headers[1024], trace[700];
  snprintf(headers, sizeof headers, "X-Request-Id: %s\r\n%s%s", c->request_id, kx_trace_headers(c, trace, sizeof trace),
           extra_headers ? extra_headers : "");
  kiln_http_respond(c->ex, status, content_type, headers, body, len);
}

void kx_log_error(const kx_call *c, kiln_code code, const char *message) {
  int status = kx_http_status(code);
  if (status < 500 || status == 503) return;
  char trace[33];
  kiln_log_field f[4] = {{"model", c->version ? c->version->model_name : NULL},
                         {"version", c->version ? c->version->version_text : NULL},
                         {"request_id", c->request_id},
                         {"trace_id", kiln_trace_hex(c->trace_id, 16, trace)}};
  kiln_log_fields(KILN_LOG_ERROR, f, 4, "%s %s: %s", c->method, c->path, message);
}

void kx_answer_error(kiln_server *s, kx_call *c, kiln_status error) {
  if (c->grpc) {
    kx_grpc_answer_error(s, c, error);
    return;
  }
  int status = kx_http_status(kiln_status_code(error));
  kx_log_error(c, kiln_status_code(error), kiln_status_message(error));
  size_t len;
  char *body = kiln_http_error_body(kiln_status_message(error), &len);
  c->error = kiln_status_message(error); /* the receive span's status */
  kx_answer(s, c, body ? status : 500, "application/json", NULL, body, len);
  kiln_status_free(error);
}

/* Answers 200 with the body in `out` (taken), or 429 when building it ran out of memory. */
static void answer_buf(kiln_server *s, kx_call *c, const char *content_type, const char *extra_headers, kx_buf *out) {
  size_t len;
  char *body = kx_buf_take(out, &len);
  if (!body) {
    kx_answer_error(s, c, kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory writing the response"));
    return;
  }
  kx_answer(s, c, 200, content_type, extra_headers, body, len);
}

void kx_answer_json(kiln_server *s, kx_call *c, kx_buf *out) { answer_buf(s, c, "application/json", NULL, out); }

/* Room for a request's inputs: the raw features as decoded, then the model's inputs. */
static int input_slots(const kx_version *v) {
  int raw = kx_request_sig(v)->n_inputs;
  return raw > v->sig.n_inputs ? raw : v->sig.n_inputs;
}

/* A request for version `v` (whose reference it takes over), with room for its inputs. */
static kiln_status request_new(const kx_call *c, kx_version *v, kx_request **out) {
  kx_request *r = calloc(1, sizeof *r);
  if (r) r->inputs = calloc((size_t)input_slots(v) + 1, sizeof *r->inputs);
  if (!r || !r->inputs) {
    free(r);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  }
  r->call = *c;
  r->call.version = v;
  r->version = v;
  *out = r;
  return NULL;
}

/* Frees the inputs and the request and drops its version reference. */
static void request_free(kx_request *r) {
  if (r->inputs)
    for (int i = 0; i < input_slots(r->version); i++) kiln_tensor_release(&r->inputs[i]);
  free(r->inputs);
  kx_v2_request_free(&r->v2);
  kx_version_release(r->version);
  free(r);
}

static void submit(kiln_server *s, kx_request *r);

/* A canary request that failed or returned NaN/Inf (`why`) goes to stable instead, when there is one
 * that takes the same inputs; returns whether it did (the request is then stable's, in the same
 * trace: the canary's attempt keeps its spans). */
static int fall_back(kiln_server *s, kx_request *r, const char *why) {
  kx_version *canary = r->version, *stable = kx_manager_acquire_fallback(s->manager, canary);
  if (!stable) return 0;
  int same = kx_signature_equal(&stable->sig, &canary->sig) && input_slots(stable) == input_slots(canary);
  if (!same) {
    kx_version_release(stable);
    return 0;
  }
  kx_trace_request(s, r, why, NULL);
  r->taken_at = r->run_start = r->run_end = 0;
  r->version = stable;
  r->call.version = stable;
  r->canary = 0;
  kx_version_release(canary);
  submit(s, r);
  return 1;
}

/* inference_done's end for a gRPC request: encode the protobuf response, answer, free. */
static void grpc_done(kiln_server *s, kx_request *r, const kiln_tensor *const *outputs, kiln_status error) {
  uint8_t *message = NULL;
  size_t len = 0;
  int run_failed = error != NULL;
  if (!error) {
    r->encode_start = kiln_now();
    error = kx_grpc_encode_response(r, outputs, &message, &len);
    r->encode_end = kiln_now();
  }
  const char *text = error ? kiln_status_message(error) : NULL;
  kx_trace_request(s, r, run_failed ? text : NULL, run_failed ? NULL : text);
  if (error) kx_answer_error(s, &r->call, error);
  else kx_grpc_answer(s, &r->call, message, len);
  request_free(r);
}

/* The batcher's completion callback, on a worker thread: judge, encode, answer, free. */
static void inference_done(void *ctx, kx_request *r, const kiln_tensor *const *outputs, kiln_status error) {
  kiln_server *s = ctx;
  int nonfinite = !error && kx_outputs_nonfinite(outputs, r->version->sig.n_outputs);
  kx_manager_observe(s->manager, r->version, error != NULL, nonfinite, kiln_now() - r->call.received_at);
  if (r->canary && (error || nonfinite) &&
      fall_back(s, r, error ? kiln_status_message(error) : "the canary's outputs hold NaN or Inf")) {
    kiln_status_free(error);
    return;
  }
  if (r->call.grpc) {
    grpc_done(s, r, outputs, error);
    return;
  }
  kx_buf b = {0};
  size_t json_len = 0;
  int run_failed = error != NULL;
  if (!error) {
    r->encode_start = kiln_now();
    if (r->call.api == KX_API_TFS_PREDICT) error = kx_tfs_encode_response(r, outputs, &b);
    else error = kx_v2_encode_response(r, outputs, &b, &json_len);
    r->encode_end = kiln_now();
  }
  const char *message = error ? kiln_status_message(error) : NULL;
  kx_trace_request(s, r, run_failed ? message : NULL, run_failed ? NULL : message);
  if (error) {
    kx_buf_free(&b);
    kx_answer_error(s, &r->call, error);
  } else if (r->call.api == KX_API_V2_INFER && json_len != b.len) {
    char extra[64];
    snprintf(extra, sizeof extra, "Inference-Header-Content-Length: %zu\r\n", json_len);
    answer_buf(s, &r->call, "application/octet-stream", extra, &b);
  } else {
    kx_answer_json(s, &r->call, &b);
  }
  request_free(r);
}

/* Queues a decoded request (answering 429 when the version's queue is full). */
static void submit(kiln_server *s, kx_request *r) {
  r->deadline = r->call.received_at + (s->opt.timeout_ms > 0 ? s->opt.timeout_ms : 30000) * 1e-3;
  if (r->call.deadline > 0 && r->call.deadline < r->deadline) r->deadline = r->call.deadline;
  if (kx_batcher_submit(r->version->batcher, r) == 0) return;
  kx_answer_error(s, &r->call,
                  kiln_error(KILN_RESOURCE_EXHAUSTED, "model '%s' version %s: the request queue is full; retry later",
                             r->version->model_name, r->version->version_text));
  request_free(r);
}

/* Turns a preprocessing version's decoded raw features into the model's inputs, which must then
 * have the dtypes and shapes the model declares. */
static kiln_status preprocess(kx_request *r) {
  const kx_version *v = r->version;
  const kiln_value_info *want = v->sig.inputs;
  int n = v->sig.n_inputs, n_raw = v->request_sig.n_inputs;
  kiln_tensor *model_inputs = calloc((size_t)n + 1, sizeof *model_inputs);
  const char **names = calloc((size_t)n + 1, sizeof *names);
  kiln_status e = model_inputs && names ? NULL : kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  for (int i = 0; !e && i < n; i++) names[i] = want[i].name;
  if (!e) e = kiln_preprocess_apply(v->pre, r->inputs, n, names, model_inputs);
  for (int i = 0; !e && i < n; i++) {
    const kiln_tensor *t = &model_inputs[i];
    int fits = (want[i].dtype == KILN_UNDEFINED || t->dtype == want[i].dtype) && (want[i].rank < 0 || t->rank == want[i].rank);
    for (int d = 0; fits && want[i].rank >= 0 && d < t->rank; d++) fits = want[i].dims[d] < 0 || want[i].dims[d] == t->dims[d];
    if (!fits) {
      char got[96];
      e = kiln_error(KILN_INVALID_ARGUMENT, "the preprocessing made input '%s' %s, which the model does not take (check preprocess.json)",
                     want[i].name, kiln_tensor_describe(t, got, sizeof got));
    }
  }
  for (int i = 0; i < n_raw; i++) kiln_tensor_release(&r->inputs[i]);
  for (int i = 0; !e && i < n; i++) r->inputs[i] = model_inputs[i];
  if (e && model_inputs)
    for (int i = 0; i < n; i++) kiln_tensor_release(&model_inputs[i]);
  free(model_inputs);
  free(names);
  return e;
}

void kx_infer(kiln_server *s, kx_call *c, const char *model, int64_t version, const char *label,
              const void *message, kx_decode_fn decode) {
  kx_version *v;
  kx_request *r = NULL;
  int canary;
  kiln_status e = kx_manager_acquire(s->manager, model, version, label, c->request_id, &v, &canary);
  if (!e && (e = request_new(c, v, &r))) kx_version_release(v);
  if (r) r->canary = canary;
  if (!e && (e = decode(r, message)) == NULL && v->pre) e = preprocess(r);
  if (r && e) {
    kx_answer_error(s, &r->call, e);
    request_free(r);
    return;
  }
  if (e) kx_answer_error(s, c, e);
  else submit(s, r);
}

/* ---------------------------------------------------------------- operations endpoints */

int kx_server_ready(kiln_server *s) {
  return atomic_load(&s->loaded) && !atomic_load(&s->draining) && kx_manager_ready(s->manager);
}

static void answer_metrics(kiln_server *s, kx_call *c) {
  kiln_http_stats st;
  kiln_http_server_stats(s->http, &st);
  kiln_grpc_stats gs = {0};
  if (s->grpc) kiln_grpc_server_stats(s->grpc, &gs);
  kiln_metric_set(s->in_flight, NULL, (double)(st.in_flight + gs.calls));
  kiln_metric_set(s->connections, NULL, (double)st.connections);
  kiln_metric_set(s->grpc_connections, NULL, (double)gs.connections);
  char *text;
  size_t len;
  kiln_status e = kiln_metrics_render(s->metrics, &text, &len);
  if (e) kx_answer_error(s, c, e);
  else kx_answer(s, c, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, text, len);
}

void kx_set_request_id(kiln_server *s, kx_call *c, const char *given) {
  size_t n = given ? strlen(given) : 0;
  if (n > 0 && n < sizeof c->request_id && strspn(given, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:") == n) {
    memcpy(c->request_id, given, n + 1);
    return;
  }
  uint64_t id = atomic_fetch_add(&s->next_id, 1);
  snprintf(c->request_id, sizeof c->request_id, "%016llx%08llx", (unsigned long long)s->id_salt, (unsigned long long)id);
}

static void handle(void *ctx, kiln_http_exchange *ex, const kiln_http_request *req) {
  kiln_server *s = ctx;
  kx_call c = {.ex = ex, .api = KX_API_UNKNOWN, .received_at = req->received_at};
  snprintf(c.method, sizeof c.method, "%s", req->method);
  snprintf(c.path, sizeof c.path, "%s", req->path);
  kx_set_request_id(s, &c, req->request_id);
  kx_trace_begin(s, &c, req->traceparent, req->tracestate);
  const char *p = req->path;
  int get = strcmp(req->method, "GET") == 0;
  if (strncmp(p, "/v1/admin/", 10) == 0) {
    kx_admin_handle(s, &c, req);
  } else if (strncmp(p, "/v1/", 4) == 0) {
    kx_tfs_handle(s, &c, req);
  } else if (strcmp(p, "/v2") == 0 || strncmp(p, "/v2/", 4) == 0) {
    kx_v2_handle(s, &c, req);
  } else if (strcmp(p, "/metrics") == 0 || strcmp(p, "/monitoring/prometheus/metrics") == 0) {
    c.api = KX_API_METRICS;
    if (get) answer_metrics(s, &c);
    else kx_answer_error(s, &c, kiln_error(KILN_INVALID_ARGUMENT, "%s takes GET, not %s", p, req->method));
  } else {
    kx_answer_error(s, &c, kiln_error(KILN_NOT_FOUND, "no such endpoint: %s", p));
  }
}

/* ---------------------------------------------------------------- life cycle */

kiln_status kiln_server_start(const kiln_server_options *opt, kiln_server **out) {
  *out = NULL;
  kiln_server *s = calloc(1, sizeof *s);
  if (!s) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  s->opt = *opt;
  s->audit_fd = -1;
  pthread_mutex_init(&s->reload_lock, NULL);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  s->id_salt = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ (uint64_t)getpid();
  atomic_init(&s->next_id, 1);
  atomic_init(&s->loaded, 0);
  atomic_init(&s->draining, 0);
  atomic_init(&s->reloads, 0);
  kiln_status e = kiln_metrics_create(&s->metrics);
  if (e) {
    free(s);
    return e;
  }
  const char *labels[4] = {"model", "version", "api", "code"};
  s->requests = kiln_metrics_counter(s->metrics, "kiln_requests_total", "HTTP requests answered.", 4, labels);
  s->request_seconds = kiln_metrics_histogram(s->metrics, "kiln_request_duration_seconds",
                                              "Time from a request's last byte to its response.", 4, labels,
                                              kiln_latency_bucket_count, kiln_latency_buckets);
  s->in_flight = kiln_metrics_gauge(s->metrics, "kiln_requests_in_flight", "Requests received and not yet answered.", 0, NULL);
  s->connections = kiln_metrics_gauge(s->metrics, "kiln_http_connections", "Open HTTP connections.", 0, NULL);
  s->grpc_connections = kiln_metrics_gauge(s->metrics, "kiln_grpc_connections", "Open gRPC (HTTP/2) connections.", 0, NULL);
  int intra = opt->intra_op_threads > 0 ? opt->intra_op_threads : 1;
  if (!e && intra > 1) e = kiln_pool_create(kiln_cpu_count(), &s->pool);
  kx_manager_options mo = {.server = &s->opt,
                           .pool = s->pool,
                           .done = inference_done,
                           .done_ctx = s,
                           .metrics = s->metrics,
                           .version_metrics = {s->requests, s->request_seconds},
                           .n_version_metrics = 2};
  if (!e && opt->otlp_endpoint) {
    kiln_tracer_options to = {.endpoint = opt->otlp_endpoint, .max_queue_spans = opt->otlp_max_queue_spans,
                              .metrics = s->metrics};
    e = kiln_tracer_create(&to, &s->tracer);
  }
  if (!e) e = kx_manager_create(&mo, &s->manager);
  if (!e) e = kx_admin_start(s);
  kiln_http_options ho = {
      .host = opt->host,
      .port = opt->rest_port,
      .threads = opt->rest_threads,
      .max_header_bytes = opt->max_header_bytes,
      .max_body_bytes = opt->max_body_bytes,
      .max_connections = opt->max_connections,
      .idle_timeout_ms = opt->idle_timeout_ms,
      .request_timeout_ms = opt->read_timeout_ms,
  };
  if (!e) e = kiln_http_server_start(&ho, handle, s, &s->http);
  if (!e) {
    kiln_log(KILN_LOG_INFO, "REST API listening on %s:%d", opt->host ? opt->host : "0.0.0.0", kiln_http_server_port(s->http));
    if (opt->grpc_port >= 0) e = kx_grpc_start(s);
  }
  if (!e) {
    e = kx_manager_configure(s->manager, opt->models);
    atomic_store(&s->loaded, 1);
  }
  if (!e) e = kx_manager_start_polling(s->manager, opt->poll_wait_seconds);
  if (e) {
    kiln_server_free(s);
    return e;
  }
  *out = s;
  return NULL;
}

int kiln_server_port(const kiln_server *s) { return kiln_http_server_port(s->http); }

int kiln_server_grpc_port(const kiln_server *s) { return s->grpc ? kiln_grpc_server_port(s->grpc) : -1; }

kiln_status kiln_server_reload(kiln_server *s, const kiln_model_server_config *models) {
  return kx_manager_configure(s->manager, models);
}

int64_t kiln_server_drain(kiln_server *s, double timeout_s) {
  atomic_store(&s->draining, 1);
  kiln_http_server_stop_accepting(s->http);
  if (s->grpc) kiln_grpc_server_stop_accepting(s->grpc);
  double until = kiln_now() + timeout_s;
  kiln_http_stats st;
  kiln_grpc_stats gs = {0};
  for (;;) {
    kiln_http_server_stats(s->http, &st);
    if (s->grpc) kiln_grpc_server_stats(s->grpc, &gs);
    if ((st.in_flight + gs.calls == 0 && st.connections + gs.connections == 0) || kiln_now() >= until) break;
    nanosleep(&(struct timespec){0, 2000000}, NULL);
  }
  return st.in_flight + gs.calls;
}

void kiln_server_free(kiln_server *s) {
  if (!s) return;
  if (s->http) kiln_http_server_stop_accepting(s->http);
  if (s->grpc) kiln_grpc_server_stop_accepting(s->grpc);
  while (atomic_load(&s->reloads) > 0) nanosleep(&(struct timespec){0, 2000000}, NULL);
  kx_manager_free(s->manager); /* answers everything queued */
  kiln_http_server_free(s->http);
  kiln_grpc_server_free(s->grpc);
  kiln_pool_free(s->pool);
  kiln_tracer_free(s->tracer); /* after every request is answered: exports the last spans (2 s at most) */
  kiln_metrics_free(s->metrics);
  kx_admin_stop(s);
  pthread_mutex_destroy(&s->reload_lock);
  free(s);
}
