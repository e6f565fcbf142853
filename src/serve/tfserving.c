/* The TF Serving REST front end: /v1/models/M[/versions/V | /labels/L][/metadata | :predict].
 * Same URLs, bodies and error format as TF Serving, so its REST clients work unchanged. */
#include "serve/serve.h"

#include <stdlib.h>
#include <string.h>

typedef struct route {
  char model[256];
  int64_t version; /* -1: none named */
  char label[128];
  int has_label;
  int metadata;
  char verb[16]; /* after ':' ("predict"), "" when none */
} route;

/* Copies the next '/'-separated segment of *p into buf; returns its length (-1 when too long). */
static int segment(const char **p, char *buf, size_t size) {
  const char *s = *p, *e = strchr(s, '/');
  size_t n = e ? (size_t)(e - s) : strlen(s);
  if (n >= size) return -1;
  memcpy(buf, s, n);
  buf[n] = '\0';
  *p = e ? e + 1 : s + n;
  return (int)n;
}

kiln_status kx_parse_version(const char *text, int64_t *out) {
  size_t n = strlen(text);
  if (n == 0 || n > 18 || strspn(text, "0123456789") != n)
    return kiln_error(KILN_INVALID_ARGUMENT, "version '%s' is not a non-negative integer", text);
  *out = strtoll(text, NULL, 10);
  return NULL;
}

static kiln_status parse_route(const char *path, route *r) {
  memset(r, 0, sizeof *r);
  r->version = -1;
  char rest[1024];
  if (strncmp(path, "/v1/models/", 11) != 0 || strlen(path + 11) >= sizeof rest)
    return kiln_error(KILN_NOT_FOUND, "Malformed request: %s", path);
  strcpy(rest, path + 11);
  char *last = strrchr(rest, '/');
  char *colon = strchr(last ? last : rest, ':');
  if (colon) {
    if (strlen(colon + 1) >= sizeof r->verb) return kiln_error(KILN_NOT_FOUND, "Malformed request: %s", path);
    strcpy(r->verb, colon + 1);
    *colon = '\0';
  }
  const char *p = rest;
  char seg[256];
  if (segment(&p, r->model, sizeof r->model) <= 0) return kiln_error(KILN_NOT_FOUND, "Malformed request: %s", path);
  while (*p) {
    if (segment(&p, seg, sizeof seg) < 0) return kiln_error(KILN_NOT_FOUND, "Malformed request: %s", path);
    if (strcmp(seg, "versions") == 0 && r->version < 0 && !r->has_label && *p) {
      if (segment(&p, seg, sizeof seg) < 0) return kiln_error(KILN_NOT_FOUND, "Malformed request: %s", path);
      kiln_status s = kx_parse_version(seg, &r->version);
      if (s) return s;
    } else if (strcmp(seg, "labels") == 0 && r->version < 0 && !r->has_label && *p) {
      if (segment(&p, r->label, sizeof r->label) <= 0) return kiln_error(KILN_NOT_FOUND, "Malformed request: %s", path);
      r->has_label = 1;
    } else if (strcmp(seg, "metadata") == 0 && !*p && !r->metadata) {
      r->metadata = 1;
    } else {
      return kiln_error(KILN_NOT_FOUND, "Malformed request: %s", path);
    }
  }
  return NULL;
}

static kiln_status decode(kx_request *r, const void *message) {
  const kiln_http_request *req = message;
  return kx_tfs_decode_predict(kx_request_sig(r->version), req->body ? req->body : "", req->body_len, r->inputs, &r->columnar);
}

static void metadata(kiln_server *s, kx_call *c, const route *rt) {
  kx_version *v;
  kiln_status e = kx_manager_acquire(s->manager, rt->model, rt->version, rt->has_label ? rt->label : NULL, NULL, &v, NULL);
  if (e) {
    kx_answer_error(s, c, e);
    return;
  }
  c->version = v;
  kx_buf b = {0};
  kx_tfs_encode_metadata(kx_request_sig(v), rt->model, v->number, &b);
  kx_answer_json(s, c, &b);
  kx_version_release(v);
}

void kx_tfs_handle(kiln_server *s, kx_call *c, const kiln_http_request *req) {
  route rt;
  kiln_status e = parse_route(req->path, &rt);
  int get = strcmp(req->method, "GET") == 0, post = strcmp(req->method, "POST") == 0;
  if (e) {
    kx_answer_error(s, c, e);
  } else if (rt.verb[0]) {
    c->api = KX_API_TFS_PREDICT;
    if (strcmp(rt.verb, "predict") != 0 || rt.metadata)
      kx_answer_error(s, c, kiln_error(strcmp(rt.verb, "classify") == 0 || strcmp(rt.verb, "regress") == 0
                                           ? KILN_UNIMPLEMENTED : KILN_NOT_FOUND,
                                       "':%s' is not supported: kiln serves ':predict'", rt.verb));
    else if (!post) kx_answer_error(s, c, kiln_error(KILN_INVALID_ARGUMENT, ":predict takes POST, not %s", req->method));
    else kx_infer(s, c, rt.model, rt.version, rt.has_label ? rt.label : NULL, req, decode);
  } else if (!get) {
    kx_answer_error(s, c, kiln_error(KILN_INVALID_ARGUMENT, "%s takes GET, not %s", req->path, req->method));
  } else if (rt.metadata) {
    c->api = KX_API_TFS_METADATA;
    metadata(s, c, &rt);
  } else {
    c->api = KX_API_TFS_STATUS;
    kx_buf b = {0};
    e = kx_manager_status_json(s->manager, rt.model, rt.version, rt.has_label ? rt.label : NULL, &b);
    if (e) {
      kx_buf_free(&b);
      kx_answer_error(s, c, e);
    } else {
      kx_answer_json(s, c, &b);
    }
  }
}

kiln_status kx_tfs_encode_response(kx_request *r, const kiln_tensor *const *outputs, kx_buf *out) {
  return kx_tfs_encode_predict(&r->version->sig, outputs, r->columnar, out);
}
