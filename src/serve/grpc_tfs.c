/* TF Serving's gRPC front end: PredictionService (Predict, GetModelMetadata) and ModelService
 * (GetModelStatus, HandleReloadConfigRequest), with the messages and error texts TF Serving uses,
 * so that its gRPC clients work unchanged. */
#include "serve/serve.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "serve/codec_grpc.h"
#include "tensorflow_serving/apis/get_model_metadata.pb-c.h"
#include "tensorflow_serving/apis/get_model_status.pb-c.h"
#include "tensorflow_serving/apis/model_management.pb-c.h"
#include "tensorflow_serving/apis/predict.pb-c.h"

/* What a ModelSpec names: the model, and a version (>= 0) or a label (non-NULL), or neither. */
typedef struct spec {
  const char *name;
  int64_t version;
  const char *label;
} spec;

static kiln_status read_spec(const Tensorflow__Serving__ModelSpec *ms, spec *out) {
  *out = (spec){.version = -1};
  if (!ms || !ms->name || !ms->name[0]) return kiln_error(KILN_INVALID_ARGUMENT, "Missing ModelSpec: model_spec.name is empty");
  out->name = ms->name;
  if (ms->version_choice_case == TENSORFLOW__SERVING__MODEL_SPEC__VERSION_CHOICE_VERSION && ms->version) {
    if (ms->version->value < 0)
      return kiln_error(KILN_INVALID_ARGUMENT, "model_spec.version must be non-negative, got %lld", (long long)ms->version->value);
    out->version = ms->version->value;
  } else if (ms->version_choice_case == TENSORFLOW__SERVING__MODEL_SPEC__VERSION_CHOICE_VERSION_LABEL) {
    if (!ms->version_label || !ms->version_label[0]) return kiln_error(KILN_INVALID_ARGUMENT, "model_spec.version_label is empty");
    out->label = ms->version_label;
  }
  const char *sig = ms->signature_name ? ms->signature_name : "";
  if (sig[0] && strcmp(sig, "serving_default") != 0)
    return kiln_error(KILN_FAILED_PRECONDITION, "Serving signature name: \"%s\" not found in signature def", sig);
  return NULL;
}

static kiln_status unparsable(const char *type) {
  return kiln_error(KILN_INVALID_ARGUMENT, "the request is not a valid %s message", type);
}

/* ---------------------------------------------------------------- Predict */

static kiln_status decode_predict(kx_request *r, const void *message) {
  return kx_grpc_decode_predict(kx_request_sig(r->version), message, r->inputs, &r->v2);
}

void kx_grpc_tfs_predict(kiln_server *s, kx_call *c, const kiln_grpc_request *req) {
  Tensorflow__Serving__PredictRequest *m = tensorflow__serving__predict_request__unpack(NULL, req->len, req->message);
  spec sp = {.version = -1};
  kiln_status e = m ? read_spec(m->model_spec, &sp) : unparsable("tensorflow.serving.PredictRequest");
  if (e) kx_answer_error(s, c, e);
  else kx_infer(s, c, sp.name, sp.version, sp.label, m, decode_predict);
  if (m) tensorflow__serving__predict_request__free_unpacked(m, NULL);
}

/* ---------------------------------------------------------------- GetModelMetadata */

void kx_grpc_tfs_metadata(kiln_server *s, kx_call *c, const kiln_grpc_request *req) {
  Tensorflow__Serving__GetModelMetadataRequest *m =
      tensorflow__serving__get_model_metadata_request__unpack(NULL, req->len, req->message);
  spec sp = {.version = -1};
  kiln_status e = m ? read_spec(m->model_spec, &sp) : unparsable("tensorflow.serving.GetModelMetadataRequest");
  if (!e && m->n_metadata_field == 0)
    e = kiln_error(KILN_INVALID_ARGUMENT, "GetModelMetadataRequest must specify at least one metadata_field");
  for (size_t i = 0; !e && i < m->n_metadata_field; i++)
    if (strcmp(m->metadata_field[i], "signature_def") != 0)
      e = kiln_error(KILN_INVALID_ARGUMENT, "Metadata field %s is not supported", m->metadata_field[i]);
  kx_version *v = NULL;
  if (!e) e = kx_manager_acquire(s->manager, sp.name, sp.version, sp.label, NULL, &v, NULL);
  uint8_t *out = NULL;
  size_t len = 0;
  if (!e) {
    c->version = v;
    e = kx_grpc_encode_tfs_metadata(kx_request_sig(v), sp.name, v->number, &out, &len);
  }
  if (e) kx_answer_error(s, c, e);
  else kx_grpc_answer(s, c, out, len);
  if (v) kx_version_release(v);
  if (m) tensorflow__serving__get_model_metadata_request__free_unpacked(m, NULL);
}

/* ---------------------------------------------------------------- GetModelStatus */

static Tensorflow__Serving__ModelVersionStatus__State state_of(kx_state st) {
  switch (st) {
  case KX_START: return TENSORFLOW__SERVING__MODEL_VERSION_STATUS__STATE__START;
  case KX_LOADING: return TENSORFLOW__SERVING__MODEL_VERSION_STATUS__STATE__LOADING;
  case KX_AVAILABLE: return TENSORFLOW__SERVING__MODEL_VERSION_STATUS__STATE__AVAILABLE;
  case KX_UNLOADING: return TENSORFLOW__SERVING__MODEL_VERSION_STATUS__STATE__UNLOADING;
  case KX_END: return TENSORFLOW__SERVING__MODEL_VERSION_STATUS__STATE__END;
  }
  return TENSORFLOW__SERVING__MODEL_VERSION_STATUS__STATE__UNKNOWN;
}

/* Answers with the GetModelStatusResponse for the statuses. */
static void answer_status(kiln_server *s, kx_call *c, const kx_version_status *st, int n) {
  Tensorflow__Serving__ModelVersionStatus *items = calloc((size_t)n + 1, sizeof *items);
  Tensorflow__Serving__ModelVersionStatus **ptrs = calloc((size_t)n + 1, sizeof *ptrs);
  Tensorflow__Serving__StatusProto *codes = calloc((size_t)n + 1, sizeof *codes);
  if (items && ptrs && codes) {
    for (int i = 0; i < n; i++) {
      tensorflow__serving__model_version_status__init(&items[i]);
      tensorflow__serving__status_proto__init(&codes[i]);
      codes[i].error_code = (Tensorflow__Error__Code)st[i].code;
      codes[i].error_message = (char *)st[i].message;
      items[i].version = st[i].version;
      items[i].state = state_of(st[i].state);
      items[i].status = &codes[i];
      ptrs[i] = &items[i];
    }
    Tensorflow__Serving__GetModelStatusResponse r = TENSORFLOW__SERVING__GET_MODEL_STATUS_RESPONSE__INIT;
    r.n_model_version_status = (size_t)n;
    r.model_version_status = ptrs;
    kx_grpc_answer_message(s, c, &r.base);
  } else {
    kx_answer_error(s, c, kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory"));
  }
  free(items);
  free(ptrs);
  free(codes);
}

void kx_grpc_tfs_status(kiln_server *s, kx_call *c, const kiln_grpc_request *req) {
  Tensorflow__Serving__GetModelStatusRequest *m =
      tensorflow__serving__get_model_status_request__unpack(NULL, req->len, req->message);
  spec sp = {.version = -1};
  kiln_status e = m ? read_spec(m->model_spec, &sp) : unparsable("tensorflow.serving.GetModelStatusRequest");
  kx_version_status *st = NULL;
  int n = 0;
  if (!e) e = kx_manager_status(s->manager, sp.name, sp.version, sp.label, &st, &n);
  if (e) kx_answer_error(s, c, e);
  else answer_status(s, c, st, n);
  free(st);
  if (m) tensorflow__serving__get_model_status_request__free_unpacked(m, NULL);
}

/* ---------------------------------------------------------------- HandleReloadConfigRequest */

typedef struct reload_job {
  kiln_server *s;
  kx_call c;
  kiln_model_server_config cfg;
  char peer[64];
} reload_job;

/* The admin audit line of a reload: its outcome, with the model names of the new list. */
static void audit_reload(kiln_server *s, const kx_call *c, const char *who, const char *peer,
                         const kiln_model_server_config *cfg, kiln_status e) {
  cJSON *params = cJSON_CreateObject(), *models = params ? cJSON_AddArrayToObject(params, "models") : NULL;
  for (int i = 0; models && cfg && i < cfg->n_models; i++) cJSON_AddItemToArray(models, cJSON_CreateString(cfg->models[i].name));
  kx_admin_audit(s, c, who, peer, "reload_config", "", params, e ? kx_http_status(kiln_status_code(e)) : 200,
                 e ? kiln_status_message(e) : "ok");
  cJSON_Delete(params);
}

/* Loads the new model list off the I/O thread (as TF Serving does, the answer waits for it). */
static void *reload_main(void *arg) {
  reload_job *j = arg;
  kiln_server *s = j->s;
  pthread_mutex_lock(&s->reload_lock);
  kiln_status e = kiln_server_reload(s, &j->cfg);
  pthread_mutex_unlock(&s->reload_lock);
  audit_reload(s, &j->c, "token", j->peer, &j->cfg, e);
  if (e) {
    kx_answer_error(s, &j->c, e);
  } else {
    kiln_log(KILN_LOG_INFO, "gRPC HandleReloadConfigRequest: %d model(s) configured", j->cfg.n_models);
    Tensorflow__Serving__StatusProto ok = TENSORFLOW__SERVING__STATUS_PROTO__INIT;
    Tensorflow__Serving__ReloadConfigResponse r = TENSORFLOW__SERVING__RELOAD_CONFIG_RESPONSE__INIT;
    r.status = &ok;
    kx_grpc_answer_message(s, &j->c, &r.base);
  }
  kiln_model_server_config_free(&j->cfg);
  free(j);
  atomic_fetch_sub(&s->reloads, 1);
  return NULL;
}

void kx_grpc_tfs_reload(kiln_server *s, kx_call *c, const kiln_grpc_request *req) {
  if (!s->admin_enabled) {
    kx_answer_error(s, c, kiln_error(KILN_PERMISSION_DENIED, "HandleReloadConfigRequest is an admin call, and the admin API "
                                                             "is disabled: start kiln serve with --admin_token_file"));
    return;
  }
  kiln_status e = NULL;
  const char *who = kx_admin_authenticate(s, req->authorization);
  if (strcmp(who, "token") != 0)
    e = strcmp(who, "no token") == 0
            ? kiln_error(KILN_UNAUTHENTICATED, "HandleReloadConfigRequest needs the admin token: authorization: Bearer TOKEN")
            : kiln_error(KILN_PERMISSION_DENIED, "the admin token is wrong");
  Tensorflow__Serving__ReloadConfigRequest *m =
      e ? NULL : tensorflow__serving__reload_config_request__unpack(NULL, req->len, req->message);
  if (!e && !m) e = unparsable("tensorflow.serving.ReloadConfigRequest");
  reload_job *j = NULL;
  if (!e && !(j = calloc(1, sizeof *j))) e = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  if (!e) e = kx_grpc_decode_server_config(m->config, &j->cfg);
  if (m) tensorflow__serving__reload_config_request__free_unpacked(m, NULL);
  if (!e) {
    j->s = s;
    j->c = *c;
    snprintf(j->peer, sizeof j->peer, "%s", req->peer ? req->peer : "");
    atomic_fetch_add(&s->reloads, 1);
    pthread_t t;
    int rc = pthread_create(&t, NULL, reload_main, j);
    if (rc == 0) {
      pthread_detach(t);
      return;
    }
    atomic_fetch_sub(&s->reloads, 1);
    e = kiln_error(KILN_UNAVAILABLE, "cannot start the reload: %s", strerror(rc));
  }
  audit_reload(s, c, who, req->peer, NULL, e);
  if (j) kiln_model_server_config_free(&j->cfg);
  free(j);
  kx_answer_error(s, c, e);
}
