/* The admin API: POST /v1/admin/models/{m}/labels, /reload and /rollback, guarded by a bearer
 * token (compared in constant time) and recorded, every attempt, in an audit log of JSON lines
 * (who, what, when, result). It changes the repository (kiln/registry.h) and wakes the model
 * manager, which follows the repository as it does on every poll. */
#include "serve/serve.h"
#include "core/sha256.h"
#include "core/utc.h"
#include "kiln/registry.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <nettle/memops.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

kiln_status kx_admin_start(kiln_server *s) {
  if (!s->opt.admin_token) return NULL;
  if (!s->opt.admin_token[0]) return kiln_error(KILN_INVALID_ARGUMENT, "the admin token is empty");
  kx_sha256_hex(s->opt.admin_token, strlen(s->opt.admin_token), s->admin_token_sha256);
  s->opt.admin_token = NULL; /* the caller's memory; only the digest is kept */
  s->admin_enabled = 1;
  const char *path = s->opt.admin_audit_log;
  s->opt.admin_audit_log = NULL;
  if (path && (s->audit_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640)) < 0)
    return kiln_error(KILN_IO, "cannot open the audit log %s: %s", path, strerror(errno));
  return NULL;
}

void kx_admin_stop(kiln_server *s) {
  if (s->audit_fd >= 0) close(s->audit_fd);
  s->audit_fd = -1;
}

typedef struct admin_call {
  const char *action; /* "labels", "reload", "rollback", or NULL for an unknown path */
  char model[128];
  const char *who;    /* "token", "no token", "wrong token" */
  const char *peer;   /* the client's address */
  cJSON *params;      /* the request's JSON body, when it had one */
} admin_call;

void kx_admin_audit(kiln_server *s, const kx_call *c, const char *who, const char *peer, const char *action,
                    const char *model, const cJSON *params, int status, const char *result) {
  char when[KX_UTC_SIZE];
  kx_utc_now(1, when);
  kx_buf b = {0};
  kx_buf_printf(&b, "{\"time\":\"%s\",\"type\":\"audit\",\"remote\":", when);
  kx_buf_json_string(&b, peer ? peer : "");
  kx_buf_puts(&b, ",\"request_id\":");
  kx_buf_json_string(&b, c->request_id);
  kx_buf_puts(&b, ",\"auth\":");
  kx_buf_json_string(&b, who);
  kx_buf_puts(&b, ",\"method\":");
  kx_buf_json_string(&b, c->method);
  kx_buf_puts(&b, ",\"path\":");
  kx_buf_json_string(&b, c->path);
  kx_buf_puts(&b, ",\"action\":");
  kx_buf_json_string(&b, action ? action : "");
  kx_buf_puts(&b, ",\"model\":");
  kx_buf_json_string(&b, model ? model : "");
  char *text = params ? cJSON_PrintUnformatted(params) : NULL;
  kx_buf_printf(&b, ",\"params\":%s,\"status\":%d,\"result\":", text ? text : "null", status);
  free(text);
  kx_buf_json_string(&b, result);
  kx_buf_puts(&b, "}\n");
  size_t len;
  char *line = kx_buf_take(&b, &len);
  if (!line) {
    kiln_log_field f[1] = {{"request_id", c->request_id}};
    kiln_log_fields(KILN_LOG_ERROR, f, 1, "audit: out of memory writing the entry for %s %s", c->method, c->path);
    return;
  }
  if (s->audit_fd >= 0) {
    if (write(s->audit_fd, line, len) != (ssize_t)len) {
      kiln_log_field f[1] = {{"request_id", c->request_id}};
      kiln_log_fields(KILN_LOG_ERROR, f, 1, "audit: cannot append to the audit log: %s", strerror(errno));
    }
  } else {
    line[len - 1] = '\0';
    kiln_log_field f[2] = {{"type", "audit"}, {"request_id", c->request_id}};
    kiln_log_fields(KILN_LOG_INFO, f, 2, "%s", line);
  }
  free(line);
}

static void audit(kiln_server *s, const kx_call *c, const admin_call *a, int status, const char *result) {
  kx_admin_audit(s, c, a->who, a->peer, a->action, a->model, a->params, status, result);
}

/* Audits an admin call and answers it: `body` on success (error NULL), else the error (taken) with
 * `status`, or the status its code maps to when that is 0. */
static void finish(kiln_server *s, kx_call *c, const admin_call *a, kiln_status error, kx_buf *body, int status,
                   const char *extra_headers) {
  if (!error) {
    audit(s, c, a, 200, "ok");
    kx_answer_json(s, c, body);
    return;
  }
  kx_buf_free(body);
  if (!status) status = kx_http_status(kiln_status_code(error));
  audit(s, c, a, status, kiln_status_message(error));
  size_t len;
  char *msg = kiln_http_error_body(kiln_status_message(error), &len);
  kiln_status_free(error);
  kx_answer(s, c, msg ? status : 500, "application/json", extra_headers, msg, len);
}

/* "Bearer <token>", checked against the digest in constant time (the digests have one length
 * whatever the token's, so neither content nor length leaks through timing). */
const char *kx_admin_authenticate(const kiln_server *s, const char *header) {
  if (!header || strncasecmp(header, "Bearer ", 7) != 0) return "no token";
  const char *token = header + 7;
  while (*token == ' ') token++;
  char digest[KX_SHA256_HEX];
  kx_sha256_hex(token, strlen(token), digest);
  return memeql_sec(digest, s->admin_token_sha256, sizeof digest) ? "token" : "wrong token";
}

kiln_status kx_admin_label_params(const cJSON *body, int64_t *version, const char **label) {
  if (!cJSON_IsObject(body)) return kiln_error(KILN_INVALID_ARGUMENT, "the body must be a JSON object {\"version\": N, \"label\": \"NAME\"}");
  for (const cJSON *k = body->child; k; k = k->next)
    if (strcmp(k->string, "version") != 0 && strcmp(k->string, "label") != 0)
      return kiln_error(KILN_INVALID_ARGUMENT, "unknown key '%s' (expected version and label)", k->string);
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, "version"), *l = cJSON_GetObjectItemCaseSensitive(body, "label");
  if (cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble <= 9e15 && v->valuedouble == (double)(int64_t)v->valuedouble)
    *version = (int64_t)v->valuedouble;
  else if (!cJSON_IsString(v))
    return kiln_error(KILN_INVALID_ARGUMENT, "'version' must be a version number");
  else {
    kiln_status s = kx_parse_version(v->valuestring, version);
    if (s) return kiln_status_prefix(s, "'version': ");
  }
  if (!cJSON_IsString(l)) return kiln_error(KILN_INVALID_ARGUMENT, "'label' must be a string");
  *label = l->valuestring;
  return NULL;
}

/* Splits /v1/admin/models/{m}/{action}. */
static int parse_path(const char *path, admin_call *a) {
  const char *p = path + strlen("/v1/admin/");
  if (strncmp(p, "models/", 7) != 0) return -1;
  p += 7;
  const char *slash = strchr(p, '/');
  if (!slash || slash == p || (size_t)(slash - p) >= sizeof a->model) return -1;
  memcpy(a->model, p, (size_t)(slash - p));
  a->model[slash - p] = '\0';
  static const char *actions[] = {"labels", "reload", "rollback"};
  for (int i = 0; i < 3; i++)
    if (strcmp(slash + 1, actions[i]) == 0) a->action = actions[i];
  return a->action ? 0 : -1;
}

void kx_admin_handle(kiln_server *s, kx_call *c, const kiln_http_request *req) {
  c->api = KX_API_ADMIN;
  admin_call a = {.who = "no token", .peer = req->peer};
  kx_buf body = {0};
  if (!s->admin_enabled) {
    kx_answer_error(s, c, kiln_error(KILN_NOT_FOUND, "the admin API is disabled: start kiln serve with --admin_token_file"));
    return;
  }
  a.who = kx_admin_authenticate(s, req->authorization);
  int known = parse_path(req->path, &a) == 0;
  if (strcmp(a.who, "token") != 0) {
    int missing = strcmp(a.who, "no token") == 0;
    finish(s, c, &a, kiln_error(KILN_INVALID_ARGUMENT, missing ? "the admin API needs an Authorization: Bearer token" : "the admin token is wrong"),
           &body, missing ? 401 : 403, missing ? "WWW-Authenticate: Bearer realm=\"kiln admin\"\r\n" : NULL);
    return;
  }
  if (!known) {
    finish(s, c, &a, kiln_error(KILN_NOT_FOUND, "no such admin endpoint: %s (POST /v1/admin/models/{model}/labels|reload|rollback)", req->path),
           &body, 404, NULL);
    return;
  }
  if (strcmp(req->method, "POST") != 0) {
    finish(s, c, &a, kiln_error(KILN_INVALID_ARGUMENT, "%s takes POST, not %s", req->path, req->method), &body, 405, "Allow: POST\r\n");
    return;
  }
  char base[4096];
  kiln_status e = kx_manager_base_path(s->manager, a.model, base, sizeof base);
  if (!e && req->body_len && !(a.params = cJSON_ParseWithLength(req->body, req->body_len)))
    e = kiln_error(KILN_INVALID_ARGUMENT, "the body is not valid JSON");
  if (!e && strcmp(a.action, "labels") == 0) {
    int64_t version;
    const char *label = NULL;
    e = kx_admin_label_params(a.params, &version, &label);
    if (!e) e = kiln_registry_label(base, version, label);
    if (!e) {
      kx_buf_puts(&body, "{\"model\":");
      kx_buf_json_string(&body, a.model);
      kx_buf_puts(&body, ",\"label\":");
      kx_buf_json_string(&body, label);
      kx_buf_printf(&body, ",\"version\":\"%lld\"}", (long long)version);
    }
  } else if (!e && strcmp(a.action, "rollback") == 0) {
    int64_t stable;
    e = kiln_registry_rollback(base, &stable);
    if (!e) {
      kx_buf_puts(&body, "{\"model\":");
      kx_buf_json_string(&body, a.model);
      kx_buf_printf(&body, ",\"stable\":\"%lld\"}", (long long)stable);
    }
  } else if (!e) {
    kx_buf_puts(&body, "{\"model\":");
    kx_buf_json_string(&body, a.model);
    kx_buf_puts(&body, ",\"reload\":\"scheduled\"}");
  }
  if (!e) kx_manager_poll_now(s->manager);
  finish(s, c, &a, e, &body, 0, NULL);
  cJSON_Delete(a.params);
}
