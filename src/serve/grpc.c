/* The gRPC front ends' common part: the method table of TF Serving's PredictionService and
 * ModelService, KServe V2's GRPCInferenceService and grpc.health.v1.Health, each call's kx_call (request id, trace,
 * deadline), and the answers: a unary call's status and message, a stream's messages. Metrics,
 * the access log and spans are those of REST, with the gRPC method as the path. */
#include "serve/serve.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kserve/grpc_predict_v2.pb-c.h"
#include "serve/codec_grpc.h"

typedef void (*method_fn)(kiln_server *s, kx_call *c, const kiln_grpc_request *req);

typedef struct method {
  const char *path;
  kiln_grpc_kind kind;
  kx_api api;
  method_fn fn;
} method;

static void stream_message(kiln_server *s, kx_call *c, const kiln_grpc_request *req);

static const method methods[] = {
    {"/tensorflow.serving.PredictionService/Predict", KILN_GRPC_UNARY, KX_API_GRPC_PREDICT, kx_grpc_tfs_predict},
    {"/tensorflow.serving.PredictionService/GetModelMetadata", KILN_GRPC_UNARY, KX_API_GRPC_TFS_METADATA, kx_grpc_tfs_metadata},
    {"/tensorflow.serving.ModelService/GetModelStatus", KILN_GRPC_UNARY, KX_API_GRPC_TFS_STATUS, kx_grpc_tfs_status},
    {"/tensorflow.serving.ModelService/HandleReloadConfigRequest", KILN_GRPC_UNARY, KX_API_GRPC_RELOAD, kx_grpc_tfs_reload},
    {"/inference.GRPCInferenceService/ServerLive", KILN_GRPC_UNARY, KX_API_GRPC_HEALTH, kx_grpc_v2_live},
    {"/inference.GRPCInferenceService/ServerReady", KILN_GRPC_UNARY, KX_API_GRPC_HEALTH, kx_grpc_v2_ready},
    {"/inference.GRPCInferenceService/ModelReady", KILN_GRPC_UNARY, KX_API_GRPC_V2_READY, kx_grpc_v2_model_ready},
    {"/inference.GRPCInferenceService/ServerMetadata", KILN_GRPC_UNARY, KX_API_GRPC_V2_SERVER, kx_grpc_v2_server_metadata},
    {"/inference.GRPCInferenceService/ModelMetadata", KILN_GRPC_UNARY, KX_API_GRPC_V2_METADATA, kx_grpc_v2_model_metadata},
    {"/inference.GRPCInferenceService/ModelInfer", KILN_GRPC_UNARY, KX_API_GRPC_V2_INFER, kx_grpc_v2_infer},
    {"/inference.GRPCInferenceService/ModelStreamInfer", KILN_GRPC_STREAMING, KX_API_GRPC_V2_STREAM, stream_message},
    {"/grpc.health.v1.Health/Check", KILN_GRPC_UNARY, KX_API_GRPC_HEALTH, kx_grpc_health_check},
};

static const method *find_method(const char *path) {
  for (size_t i = 0; i < sizeof methods / sizeof *methods; i++)
    if (strcmp(methods[i].path, path) == 0) return &methods[i];
  return NULL;
}

/* A ModelStreamInfer call: one reference for the open request side, one per message not yet
 * answered; the last one finishes the call. */
struct kx_grpc_stream {
  kiln_grpc_call *call;
  atomic_int refs;
  char request_id[40]; /* the call's x-request-id, "" when none: then each message gets its own */
};

static void stream_release(kx_grpc_stream *st) {
  if (atomic_fetch_sub(&st->refs, 1) != 1) return;
  kiln_grpc_finish(st->call, KILN_GRPC_OK, NULL, NULL, 0);
  free(st);
}

/* ---------------------------------------------------------------- answers */

/* The gRPC status for a kiln error code: the same canonical numbers. */
static int grpc_code(kiln_code code) { return code == KILN_IO ? KILN_GRPC_INTERNAL : (int)code; }

static void record(kiln_server *s, kx_call *c, kiln_code code, size_t len) {
  /* the HTTP status the code maps to, as for REST, so that one alert covers both protocols */
  kx_record(s, c, kx_http_status(code), len, grpc_code(code));
}

void kx_grpc_answer(kiln_server *s, kx_call *c, uint8_t *message, size_t len) {
  record(s, c, KILN_OK, len);
  if (c->stream) {
    kiln_grpc_send(c->grpc, message, len);
    stream_release(c->stream);
  } else {
    kiln_grpc_finish(c->grpc, KILN_GRPC_OK, NULL, message, len);
  }
}

void kx_grpc_answer_error(kiln_server *s, kx_call *c, kiln_status error) {
  kiln_code code = kiln_status_code(error);
  const char *text = kiln_status_message(error);
  kx_log_error(c, code, text);
  c->error = text;
  if (c->stream) {
    /* a stream carries on after a failed message: the error is an answer on it (Triton's way) */
    Inference__ModelStreamInferResponse m = INFERENCE__MODEL_STREAM_INFER_RESPONSE__INIT;
    m.error_message = (char *)text;
    uint8_t *message;
    size_t len;
    kiln_status packing = kx_grpc_pack(&m.base, NULL, &message, &len);
    if (!packing) {
      record(s, c, code, len);
      kiln_grpc_send(c->grpc, message, len);
    } else {
      record(s, c, kiln_status_code(packing), 0);
      kiln_status_free(packing);
    }
    stream_release(c->stream);
  } else {
    record(s, c, code, 0);
    kiln_grpc_finish(c->grpc, grpc_code(code), text, NULL, 0);
  }
  kiln_status_free(error);
}

void kx_grpc_answer_message(kiln_server *s, kx_call *c, const ProtobufCMessage *m) {
  uint8_t *message;
  size_t len;
  kiln_status e = kx_grpc_pack(m, NULL, &message, &len);
  if (e) kx_grpc_answer_error(s, c, e);
  else kx_grpc_answer(s, c, message, len);
}

kiln_status kx_grpc_encode_response(kx_request *r, const kiln_tensor *const *outputs, uint8_t **out, size_t *len) {
  const kx_version *v = r->version;
  if (r->call.api == KX_API_GRPC_PREDICT)
    return kx_grpc_encode_predict(&v->sig, v->model_name, v->number, &r->v2, outputs, out, len);
  return kx_grpc_encode_v2_infer(&v->sig, v->model_name, v->number, &r->v2, outputs, r->call.stream != NULL, out, len);
}

/* ---------------------------------------------------------------- calls */

/* The call's kx_call for one of its messages; on a call's first message, its response metadata. */
static void begin(kiln_server *s, kx_call *c, const method *m, kiln_grpc_call *call, const kiln_grpc_request *req,
                  const char *request_id) {
  *c = (kx_call){.grpc = call, .api = m->api, .received_at = req->received_at, .deadline = req->deadline};
  snprintf(c->method, sizeof c->method, "POST");
  snprintf(c->path, sizeof c->path, "%s", req->method);
  kx_set_request_id(s, c, request_id);
  kx_trace_begin(s, c, req->traceparent, req->tracestate);
  if (req->index == 0) {
    char traceparent[KILN_TRACEPARENT_SIZE];
    kiln_grpc_add_header(call, "x-request-id", c->request_id);
    kiln_grpc_add_header(call, "traceparent", kx_trace_parent(c, traceparent));
    if (c->tracestate) kiln_grpc_add_header(call, "tracestate", c->tracestate);
  }
  c->tracestate = NULL; /* the request's metadata is gone once this callback returns */
}

static void stream_message(kiln_server *s, kx_call *c, const kiln_grpc_request *req) {
  kx_grpc_stream *st = kiln_grpc_context(c->grpc);
  atomic_fetch_add(&st->refs, 1);
  c->stream = st;
  kx_grpc_v2_infer(s, c, req);
}

static kiln_grpc_kind on_kind(void *ctx, const char *path) {
  (void)ctx;
  const method *m = find_method(path);
  return m ? m->kind : KILN_GRPC_UNKNOWN;
}

static void on_message(void *ctx, kiln_grpc_call *call, const kiln_grpc_request *req) {
  kiln_server *s = ctx;
  const method *m = find_method(req->method);
  const char *request_id = req->request_id;
  if (m->kind == KILN_GRPC_STREAMING) {
    kx_grpc_stream *st = kiln_grpc_context(call);
    if (!st) {
      st = calloc(1, sizeof *st);
      if (!st) {
        kiln_grpc_finish(call, KILN_GRPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
        return;
      }
      st->call = call;
      atomic_init(&st->refs, 1);
      if (req->request_id) snprintf(st->request_id, sizeof st->request_id, "%s", req->request_id);
      kiln_grpc_set_context(call, st);
    }
    request_id = st->request_id[0] ? st->request_id : NULL;
  }
  kx_call c;
  begin(s, &c, m, call, req, request_id);
  m->fn(s, &c, req);
}

static void on_half_close(void *ctx, kiln_grpc_call *call, int64_t n_messages) {
  (void)ctx;
  kx_grpc_stream *st = n_messages > 0 ? kiln_grpc_context(call) : NULL;
  if (st) stream_release(st);
  else kiln_grpc_finish(call, KILN_GRPC_OK, NULL, NULL, 0);
}

kiln_status kx_grpc_start(kiln_server *s) {
  const kiln_server_options *o = &s->opt;
  kiln_grpc_options go = {
      .host = o->host,
      .port = o->grpc_port,
      .threads = o->grpc_threads,
      .max_message_bytes = o->grpc_max_message_bytes ? o->grpc_max_message_bytes : o->max_body_bytes,
      .max_header_bytes = o->max_header_bytes,
      .max_connections = o->max_connections,
      .max_concurrent_streams = o->grpc_max_concurrent_streams,
      .idle_timeout_ms = o->idle_timeout_ms,
  };
  kiln_grpc_service service = {.ctx = s, .kind = on_kind, .message = on_message, .half_close = on_half_close};
  kiln_status e = kiln_grpc_server_start(&go, &service, &s->grpc);
  if (!e)
    kiln_log(KILN_LOG_INFO, "gRPC API listening on %s:%d", o->host ? o->host : "0.0.0.0", kiln_grpc_server_port(s->grpc));
  return e;
}
