/* The KServe V2 (Triton) REST front end: /v2, /v2/health/{live,ready},
 * /v2/models/M[/versions/V][/ready | /infer], JSON tensors and the binary tensor extension. */
#include "serve/serve.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct route {
  char model[256];
  int64_t version; /* -1: none named */
  char action[16]; /* "", "ready" or "infer" */
} route;

static kiln_status parse_route(const char *path, route *r) {
  memset(r, 0, sizeof *r);
  r->version = -1;
  const char *p = path + strlen("/v2/models/");
  const char *slash = strchr(p, '/');
  size_t n = slash ? (size_t)(slash - p) : strlen(p);
  if (n == 0 || n >= sizeof r->model) return kiln_error(KILN_NOT_FOUND, "no such endpoint: %s", path);
  memcpy(r->model, p, n);
  p += n;
  if (strncmp(p, "/versions/", 10) == 0) {
    p += 10;
    char text[32];
    slash = strchr(p, '/');
    n = slash ? (size_t)(slash - p) : strlen(p);
    if (n >= sizeof text) return kiln_error(KILN_INVALID_ARGUMENT, "version in '%s' is not a non-negative integer", path);
    memcpy(text, p, n);
    text[n] = '\0';
    kiln_status s = kx_parse_version(text, &r->version);
    if (s) return s;
    p += n;
  }
  if (*p == '\0') return NULL;
  if (strcmp(p, "/ready") == 0 || strcmp(p, "/infer") == 0) {
    strcpy(r->action, p + 1);
    return NULL;
  }
  return kiln_error(KILN_NOT_FOUND, "no such endpoint: %s", path);
}

static void answer_flag(kiln_server *s, kx_call *c, int status, const char *key, int value) {
  char *body = malloc(32);
  int len = body ? snprintf(body, 32, "{\"%s\":%s}", key, value ? "true" : "false") : 0;
  kx_answer(s, c, status, "application/json", NULL, body, (size_t)len);
}

static void server_metadata(kiln_server *s, kx_call *c) {
  kx_buf b = {0};
  kx_buf_puts(&b, "{\"name\":\"kiln\",\"version\":");
  kx_buf_json_string(&b, kiln_version());
  kx_buf_puts(&b, ",\"extensions\":[\"binary_tensor_data\"]}");
  kx_answer_json(s, c, &b);
}

static void model_ready(kiln_server *s, kx_call *c, const route *rt) {
  kx_version *v;
  kiln_status e = kx_manager_acquire(s->manager, rt->model, rt->version, NULL, NULL, &v, NULL);
  if (e && kiln_status_code(e) == KILN_NOT_FOUND) {
    kx_answer_error(s, c, e);
    return;
  }
  int ready = !e;
  if (ready) c->version = v; /* released once answered: the metrics read its labels */
  kiln_status_free(e);
  /* the protocol answers "not ready" with a 4xx status */
  kx_buf b = {0};
  kx_buf_puts(&b, "{\"name\":");
  kx_buf_json_string(&b, rt->model);
  kx_buf_printf(&b, ",\"ready\":%s}", ready ? "true" : "false");
  size_t len;
  char *body = kx_buf_take(&b, &len);
  kx_answer(s, c, ready ? 200 : 400, "application/json", NULL, body, body ? len : 0);
  if (ready) kx_version_release(v);
}

static void model_metadata(kiln_server *s, kx_call *c, const route *rt) {
  kx_version *v;
  kiln_status e = kx_manager_acquire(s->manager, rt->model, rt->version, NULL, NULL, &v, NULL);
  if (e) {
    kx_answer_error(s, c, e);
    return;
  }
  c->version = v;
  int64_t versions[64];
  int n = 1;
  versions[0] = v->number;
  if (rt->version < 0 && (n = kx_manager_versions(s->manager, rt->model, versions, 64)) < 0) n = 0;
  kx_buf b = {0};
  kx_v2_encode_metadata(kx_request_sig(v), rt->model, versions, n, &b);
  kx_answer_json(s, c, &b);
  kx_version_release(v);
}

static kiln_status decode(kx_request *r, const void *message) {
  const kiln_http_request *req = message;
  return kx_v2_decode_infer(kx_request_sig(r->version), req->body ? req->body : "", req->body_len, req->inference_header_length,
                            r->inputs, &r->v2);
}

void kx_v2_handle(kiln_server *s, kx_call *c, const kiln_http_request *req) {
  const char *p = req->path;
  int get = strcmp(req->method, "GET") == 0, post = strcmp(req->method, "POST") == 0;
  if (strcmp(p, "/v2") == 0 || strcmp(p, "/v2/") == 0) {
    c->api = KX_API_V2_SERVER;
    if (get) server_metadata(s, c);
    else kx_answer_error(s, c, kiln_error(KILN_INVALID_ARGUMENT, "%s takes GET, not %s", p, req->method));
    return;
  }
  if (strcmp(p, "/v2/health/live") == 0 || strcmp(p, "/v2/health/ready") == 0) {
    c->api = KX_API_HEALTH;
    int ready = p[11] == 'l' || kx_server_ready(s);
    answer_flag(s, c, ready ? 200 : 503, p[11] == 'l' ? "live" : "ready", ready);
    return;
  }
  route rt;
  kiln_status e = strncmp(p, "/v2/models/", 11) == 0 ? parse_route(p, &rt)
                                                       : kiln_error(KILN_NOT_FOUND, "no such endpoint: %s", p);
  if (e) {
    kx_answer_error(s, c, e);
  } else if (strcmp(rt.action, "infer") == 0) {
    c->api = KX_API_V2_INFER;
    if (post) kx_infer(s, c, rt.model, rt.version, NULL, req, decode);
    else kx_answer_error(s, c, kiln_error(KILN_INVALID_ARGUMENT, "%s takes POST, not %s", p, req->method));
  } else if (!get) {
    kx_answer_error(s, c, kiln_error(KILN_INVALID_ARGUMENT, "%s takes GET, not %s", p, req->method));
  } else if (strcmp(rt.action, "ready") == 0) {
    c->api = KX_API_V2_READY;
    model_ready(s, c, &rt);
  } else {
    c->api = KX_API_V2_METADATA;
    model_metadata(s, c, &rt);
  }
}

kiln_status kx_v2_encode_response(kx_request *r, const kiln_tensor *const *outputs, kx_buf *out, size_t *json_len) {
  return kx_v2_encode_infer(&r->version->sig, r->version->model_name, r->version->number, &r->v2, outputs, out,
                            json_len);
}
