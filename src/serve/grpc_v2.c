/* KServe V2's gRPC front end (inference.GRPCInferenceService, as Triton serves it) and gRPC's own
 * health check (grpc.health.v1.Health/Check, what Kubernetes' grpc probes call): health,
 * server and model metadata, ModelInfer, and ModelStreamInfer, whose messages each go the way of
 * a ModelInfer and are answered on the stream in the order they finish. */
#include "serve/serve.h"

#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "kserve/grpc_predict_v2.pb-c.h"
#include "serve/codec_grpc.h"

static kiln_status unparsable(const char *type) {
  return kiln_error(KILN_INVALID_ARGUMENT, "the request is not a valid %s message", type);
}

/* A request's model_version: "" for the default, else a version number. */
static kiln_status read_version(const char *text, int64_t *out) {
  *out = -1;
  return text && text[0] ? kx_parse_version(text, out) : NULL;
}

void kx_grpc_v2_live(kiln_server *s, kx_call *c, const kiln_grpc_request *req) {
  (void)req;
  Inference__ServerLiveResponse r = INFERENCE__SERVER_LIVE_RESPONSE__INIT;
  r.live = 1;
  kx_grpc_answer_message(s, c, &r.base);
}

void kx_grpc_v2_ready(kiln_server *s, kx_call *c, const kiln_grpc_request *req) {
  (void)req;
  Inference__ServerReadyResponse r = INFERENCE__SERVER_READY_RESPONSE__INIT;
  r.ready = kx_server_ready(s);
  kx_grpc_answer_message(s, c, &r.base);
}

void kx_grpc_health_check(kiln_server *s, kx_call *c, const kiln_grpc_request *req) {
  Grpc__Health__V1__HealthCheckRequest *m = grpc__health__v1__health_check_request__unpack(NULL, req->len, req->message);
  static const char *services[] = {"", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService",
                                   "inference.GRPCInferenceService", "grpc.health.v1.Health"};
  int known = 0;
  for (size_t i = 0; m && i < sizeof services / sizeof *services; i++) known |= strcmp(m->service, services[i]) == 0;
  if (!m) {
    kx_answer_error(s, c, unparsable("grpc.health.v1.HealthCheckRequest"));
  } else if (!known) {
    kx_answer_error(s, c, kiln_error(KILN_NOT_FOUND, "unknown service '%s'", m->service));
  } else {
    /* every service kiln serves is ready when the server is: its models loaded, not draining */
    Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    r.status = kx_server_ready(s) ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                                  : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    kx_grpc_answer_message(s, c, &r.base);
  }
  if (m) grpc__health__v1__health_check_request__free_unpacked(m, NULL);
}

void kx_grpc_v2_model_ready(kiln_server *s, kx_call *c, const kiln_grpc_request *req) {
  Inference__ModelReadyRequest *m = inference__model_ready_request__unpack(NULL, req->len, req->message);
  int64_t version = -1;
  kiln_status e = m ? read_version(m->version, &version) : unparsable("inference.ModelReadyRequest");
  kx_version *v = NULL;
  int ready = 0;
  if (!e) {
    kiln_status missing = kx_manager_acquire(s->manager, m->name, version, NULL, NULL, &v, NULL);
    /* a model that exists but has no version serving is "not ready", not an error */
    if (missing && kiln_status_code(missing) == KILN_NOT_FOUND) e = missing;
    else kiln_status_free(missing);
    ready = v != NULL;
    c->version = v;
  }
  if (e) {
    kx_answer_error(s, c, e);
  } else {
    Inference__ModelReadyResponse r = INFERENCE__MODEL_READY_RESPONSE__INIT;
    r.ready = ready;
    kx_grpc_answer_message(s, c, &r.base);
  }
  if (v) kx_version_release(v);
  if (m) inference__model_ready_request__free_unpacked(m, NULL);
}

void kx_grpc_v2_server_metadata(kiln_server *s, kx_call *c, const kiln_grpc_request *req) {
  (void)req;
  Inference__ServerMetadataResponse r = INFERENCE__SERVER_METADATA_RESPONSE__INIT;
  char *extensions[] = {"binary_tensor_data"};
  r.name = "kiln";
  r.version = (char *)kiln_version();
  r.n_extensions = 1;
  r.extensions = extensions;
  kx_grpc_answer_message(s, c, &r.base);
}

void kx_grpc_v2_model_metadata(kiln_server *s, kx_call *c, const kiln_grpc_request *req) {
  Inference__ModelMetadataRequest *m = inference__model_metadata_request__unpack(NULL, req->len, req->message);
  int64_t version = -1;
  kiln_status e = m ? read_version(m->version, &version) : unparsable("inference.ModelMetadataRequest");
  kx_version *v = NULL;
  if (!e) e = kx_manager_acquire(s->manager, m->name, version, NULL, NULL, &v, NULL);
  uint8_t *out = NULL;
  size_t len = 0;
  if (!e) {
    c->version = v;
    int64_t versions[64];
    int n = 1;
    versions[0] = v->number;
    if (version < 0 && (n = kx_manager_versions(s->manager, m->name, versions, 64)) < 0) n = 0;
    e = kx_grpc_encode_v2_metadata(kx_request_sig(v), m->name, versions, n, &out, &len);
  }
  if (e) kx_answer_error(s, c, e);
  else kx_grpc_answer(s, c, out, len);
  if (v) kx_version_release(v);
  if (m) inference__model_metadata_request__free_unpacked(m, NULL);
}

static kiln_status decode_infer(kx_request *r, const void *message) {
  return kx_grpc_decode_v2_infer(kx_request_sig(r->version), message, r->inputs, &r->v2);
}

void kx_grpc_v2_infer(kiln_server *s, kx_call *c, const kiln_grpc_request *req) {
  Inference__ModelInferRequest *m = inference__model_infer_request__unpack(NULL, req->len, req->message);
  int64_t version = -1;
  kiln_status e = m ? read_version(m->model_version, &version) : unparsable("inference.ModelInferRequest");
  if (!e && (!m->model_name || !m->model_name[0])) e = kiln_error(KILN_INVALID_ARGUMENT, "model_name is empty");
  if (e) kx_answer_error(s, c, e);
  else kx_infer(s, c, m->model_name, version, NULL, m, decode_infer);
  if (m) inference__model_infer_request__free_unpacked(m, NULL);
}
