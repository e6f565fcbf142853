/* labels.json: its parser (fuzzed) and writer, and the label, rollback and reject operations, each a
 * read-modify-write under the model's lock. */
#include "core/buf.h"
#include "core/utc.h"
#include "registry/registry_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

/* Bounds on what a labels file holds (registry.h): a model is labelled by hand and by its server,
 * far below these. */
#define MAX_ENTRIES 1024
#define MAX_REASON 4096
#define MAX_TIME 64

int kx_label_name_ok(const char *name) {
  size_t n = strlen(name);
  return n >= 1 && n <= 64 && strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") == n;
}

void kiln_labels_free(kiln_labels *l) {
  if (!l) return;
  for (int i = 0; i < l->n_labels; i++) free(l->labels[i].name);
  for (int i = 0; i < l->n_rejected; i++) free(l->rejected[i].reason), free(l->rejected[i].at);
  free(l->labels);
  free(l->stable_history);
  free(l->rejected);
  memset(l, 0, sizeof *l);
}

int64_t kiln_labels_get(const kiln_labels *l, const char *label) {
  for (int i = 0; i < l->n_labels; i++)
    if (strcmp(l->labels[i].name, label) == 0) return l->labels[i].version;
  return -1;
}

const kiln_rejection *kiln_labels_rejection(const kiln_labels *l, int64_t version) {
  for (int i = 0; i < l->n_rejected; i++)
    if (l->rejected[i].version == version) return &l->rejected[i];
  return NULL;
}

/* ---------------------------------------------------------------- parsing */

static int version_value(const cJSON *v, int64_t *out) {
  if (!cJSON_IsNumber(v)) return 0;
  double d = v->valuedouble;
  if (!isfinite(d) || d < 0 || d > (double)KX_MAX_VERSION || floor(d) != d) return 0;
  *out = (int64_t)d;
  return 1;
}

/* The children of an array or object, refusing more than MAX_ENTRIES. */
static kiln_status count_entries(const cJSON *c, const char *name, const char *key, int *n) {
  *n = 0;
  for (const cJSON *e = c->child; e; e = e->next)
    if (++*n > MAX_ENTRIES) return kiln_error(KILN_INVALID_ARGUMENT, "%s: '%s' has more than %d entries", name, key, MAX_ENTRIES);
  return NULL;
}

static kiln_status parse_labels(const cJSON *o, const char *name, kiln_labels *out) {
  if (!cJSON_IsObject(o)) return kiln_error(KILN_INVALID_ARGUMENT, "%s: 'labels' must be an object of label: version", name);
  int n;
  kiln_status s = count_entries(o, name, "labels", &n);
  if (s || n == 0) return s;
  if (!(out->labels = calloc((size_t)n, sizeof *out->labels))) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory reading %s", name);
  for (const cJSON *e = o->child; e; e = e->next) {
    int64_t v;
    if (!kx_label_name_ok(e->string))
      return kiln_error(KILN_INVALID_ARGUMENT, "%s: label '%s' is not a label name ([A-Za-z0-9_.-], 1 to 64 characters)", name, e->string);
    if (kiln_labels_get(out, e->string) >= 0) return kiln_error(KILN_INVALID_ARGUMENT, "%s: label '%s' appears twice", name, e->string);
    if (!version_value(e, &v)) return kiln_error(KILN_INVALID_ARGUMENT, "%s: label '%s' must name a version (a whole number, 0 or more)", name, e->string);
    if (!(out->labels[out->n_labels].name = strdup(e->string))) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory reading %s", name);
    out->labels[out->n_labels++].version = v;
  }
  return NULL;
}

static kiln_status parse_history(const cJSON *a, const char *name, kiln_labels *out) {
  if (!cJSON_IsArray(a)) return kiln_error(KILN_INVALID_ARGUMENT, "%s: 'stable_history' must be a list of versions", name);
  int n;
  kiln_status s = count_entries(a, name, "stable_history", &n);
  if (s || n == 0) return s;
  if (!(out->stable_history = calloc((size_t)n, sizeof *out->stable_history)))
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory reading %s", name);
  for (const cJSON *e = a->child; e; e = e->next)
    if (!version_value(e, &out->stable_history[out->n_history++]))
      return kiln_error(KILN_INVALID_ARGUMENT, "%s: stable_history[%d] must be a version (a whole number, 0 or more)", name, out->n_history - 1);
  return NULL;
}

static kiln_status parse_rejection(const cJSON *e, int i, const char *name, kiln_labels *out) {
  if (!cJSON_IsObject(e)) return kiln_error(KILN_INVALID_ARGUMENT, "%s: rejected[%d] must be an object {version, reason, at}", name, i);
  for (const cJSON *k = e->child; k; k = k->next)
    if (strcmp(k->string, "version") != 0 && strcmp(k->string, "reason") != 0 && strcmp(k->string, "at") != 0)
      return kiln_error(KILN_INVALID_ARGUMENT, "%s: unknown key '%s' in rejected[%d] (known: version, reason, at)", name, k->string, i);
  const cJSON *version = cJSON_GetObjectItemCaseSensitive(e, "version"), *reason = cJSON_GetObjectItemCaseSensitive(e, "reason"),
              *at = cJSON_GetObjectItemCaseSensitive(e, "at");
  int64_t v;
  if (!version_value(version, &v)) return kiln_error(KILN_INVALID_ARGUMENT, "%s: rejected[%d].version must be a whole number, 0 or more", name, i);
  if (!cJSON_IsString(reason) || strlen(reason->valuestring) > MAX_REASON)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: rejected[%d].reason must be a string of at most %d bytes", name, i, MAX_REASON);
  if (!cJSON_IsString(at) || strlen(at->valuestring) > MAX_TIME)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: rejected[%d].at must be a time (RFC 3339 UTC)", name, i);
  if (kiln_labels_rejection(out, v)) return kiln_error(KILN_INVALID_ARGUMENT, "%s: version %lld is rejected twice", name, (long long)v);
  kiln_rejection *r = &out->rejected[out->n_rejected];
  r->version = v;
  r->reason = strdup(reason->valuestring);
  r->at = strdup(at->valuestring);
  out->n_rejected++; /* counted before the check: kiln_labels_free frees what was copied */
  return r->reason && r->at ? NULL : kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory reading %s", name);
}

static kiln_status parse_rejected(const cJSON *a, const char *name, kiln_labels *out) {
  if (!cJSON_IsArray(a)) return kiln_error(KILN_INVALID_ARGUMENT, "%s: 'rejected' must be a list of {version, reason, at}", name);
  int n, i = 0;
  kiln_status s = count_entries(a, name, "rejected", &n);
  if (s || n == 0) return s;
  if (!(out->rejected = calloc((size_t)n, sizeof *out->rejected))) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory reading %s", name);
  for (const cJSON *e = a->child; !s && e; e = e->next, i++) s = parse_rejection(e, i, name, out);
  return s;
}

static kiln_status parse(const cJSON *root, const char *name, kiln_labels *out) {
  if (!cJSON_IsObject(root)) return kiln_error(KILN_INVALID_ARGUMENT, "%s: must be a JSON object", name);
  static const char *const keys[] = {"labels", "stable_history", "rejected"};
  for (const cJSON *a = root->child; a; a = a->next) {
    int known = 0;
    for (int i = 0; i < 3; i++) known |= strcmp(a->string, keys[i]) == 0;
    if (!known) return kiln_error(KILN_INVALID_ARGUMENT, "%s: unknown key '%s' (known: labels, stable_history, rejected)", name, a->string);
    for (const cJSON *b = root->child; b != a; b = b->next)
      if (strcmp(a->string, b->string) == 0) return kiln_error(KILN_INVALID_ARGUMENT, "%s: key '%s' appears twice", name, a->string);
  }
  const cJSON *labels = cJSON_GetObjectItemCaseSensitive(root, "labels"), *history = cJSON_GetObjectItemCaseSensitive(root, "stable_history"),
              *rejected = cJSON_GetObjectItemCaseSensitive(root, "rejected");
  kiln_status s = NULL;
  if (labels) s = parse_labels(labels, name, out);
  if (!s && history) s = parse_history(history, name, out);
  if (!s && rejected) s = parse_rejected(rejected, name, out);
  return s;
}

kiln_status kiln_labels_parse(const char *text, size_t len, const char *name, kiln_labels *out) {
  memset(out, 0, sizeof *out);
  if (len > KX_MAX_LABELS_BYTES)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: %zu bytes, more than a labels file may have (%zu)", name, len, KX_MAX_LABELS_BYTES);
  cJSON *root = cJSON_ParseWithLength(text, len);
  if (!root) return kiln_error(KILN_INVALID_ARGUMENT, "%s: not valid JSON", name);
  kiln_status s = parse(root, name, out);
  cJSON_Delete(root);
  if (s) kiln_labels_free(out);
  return s;
}

kiln_status kiln_labels_read(const char *model_dir, kiln_labels *out) {
  memset(out, 0, sizeof *out);
  char path[KX_PATH_MAX];
  void *text;
  size_t len;
  kiln_status s = kx_path(path, sizeof path, "%s/labels.json", model_dir);
  if (!s) s = kiln_file_read(path, KX_MAX_LABELS_BYTES, &text, &len);
  if (s && kiln_status_code(s) == KILN_NOT_FOUND) {
    kiln_status_free(s);
    return NULL;
  }
  if (s) return s;
  s = kiln_labels_parse(text, len, path, out);
  free(text);
  return s;
}

/* ---------------------------------------------------------------- writing */

kiln_status kx_labels_format(const kiln_labels *l, char **out) {
  cJSON *root = cJSON_CreateObject(), *labels = NULL, *history = NULL, *rejected = NULL;
  int ok = root && (labels = cJSON_AddObjectToObject(root, "labels")) && (history = cJSON_AddArrayToObject(root, "stable_history")) &&
           (rejected = cJSON_AddArrayToObject(root, "rejected"));
  for (int i = 0; ok && i < l->n_labels; i++) ok = cJSON_AddNumberToObject(labels, l->labels[i].name, (double)l->labels[i].version) != NULL;
  for (int i = 0; ok && i < l->n_history; i++) {
    cJSON *v = cJSON_CreateNumber((double)l->stable_history[i]);
    ok = v && cJSON_AddItemToArray(history, v);
    if (!ok) cJSON_Delete(v);
  }
  for (int i = 0; ok && i < l->n_rejected; i++) {
    cJSON *r = cJSON_CreateObject();
    if (!r || !cJSON_AddItemToArray(rejected, r)) {
      cJSON_Delete(r);
      ok = 0;
      break;
    }
    ok = cJSON_AddNumberToObject(r, "version", (double)l->rejected[i].version) && cJSON_AddStringToObject(r, "reason", l->rejected[i].reason) &&
         cJSON_AddStringToObject(r, "at", l->rejected[i].at);
  }
  *out = ok ? cJSON_Print(root) : NULL;
  cJSON_Delete(root);
  return *out ? NULL : kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory writing labels.json");
}

kiln_status kx_labels_write(const char *model_dir, const kiln_labels *l) {
  char path[KX_PATH_MAX], *text;
  kiln_status s = kx_path(path, sizeof path, "%s/labels.json", model_dir);
  if (!s) s = kx_labels_format(l, &text);
  if (s) return s;
  size_t len = strlen(text);
  text[len] = '\n'; /* cJSON_Print ends without one; the NUL's place is ours */
  s = kiln_file_write_atomic(path, text, len + 1);
  free(text);
  return s;
}

/* ---------------------------------------------------------------- edits */

static kiln_status set_label(kiln_labels *l, const char *name, int64_t version) {
  for (int i = 0; i < l->n_labels; i++)
    if (strcmp(l->labels[i].name, name) == 0) {
      l->labels[i].version = version;
      return NULL;
    }
  if (l->n_labels >= MAX_ENTRIES) return kiln_error(KILN_RESOURCE_EXHAUSTED, "a model has at most %d labels", MAX_ENTRIES);
  kiln_label *p = realloc(l->labels, (size_t)(l->n_labels + 1) * sizeof *p);
  if (!p) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  l->labels = p;
  if (!(p[l->n_labels].name = strdup(name))) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  p[l->n_labels++].version = version;
  return NULL;
}

static void remove_label_at(kiln_labels *l, int i) {
  free(l->labels[i].name);
  memmove(&l->labels[i], &l->labels[i + 1], (size_t)(l->n_labels - i - 1) * sizeof *l->labels);
  l->n_labels--;
}

/* Appends to stable_history, forgetting the oldest entry when it is full. */
static kiln_status push_history(kiln_labels *l, int64_t version) {
  if (l->n_history >= MAX_ENTRIES) {
    memmove(l->stable_history, l->stable_history + 1, (size_t)(l->n_history - 1) * sizeof *l->stable_history);
    l->n_history--;
  }
  int64_t *p = realloc(l->stable_history, (size_t)(l->n_history + 1) * sizeof *p);
  if (!p) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  l->stable_history = p;
  p[l->n_history++] = version;
  return NULL;
}

static void remove_rejection_at(kiln_labels *l, int i) {
  free(l->rejected[i].reason);
  free(l->rejected[i].at);
  memmove(&l->rejected[i], &l->rejected[i + 1], (size_t)(l->n_rejected - i - 1) * sizeof *l->rejected);
  l->n_rejected--;
}

static kiln_status label_edit(kiln_labels *l, int64_t version, const char *label) {
  if (strcmp(label, "stable") == 0) {
    int64_t previous = kiln_labels_get(l, "stable");
    if (previous == version) return NULL; /* already: no history entry for a no-op */
    if (previous >= 0) {
      kiln_status s = push_history(l, previous);
      if (s) return s;
    }
    for (int i = 0; i < l->n_labels; i++)
      if (strcmp(l->labels[i].name, "canary") == 0 && l->labels[i].version == version) {
        remove_label_at(l, i); /* the canary is promoted */
        break;
      }
  }
  for (int i = 0; i < l->n_rejected; i++)
    if (l->rejected[i].version == version) {
      remove_rejection_at(l, i);
      break;
    }
  return set_label(l, label, version);
}

/* The model's labels read under its lock, edited by `edit`, and written back when it succeeds. */
typedef kiln_status (*edit_fn)(kiln_labels *l, void *arg);

static kiln_status edit_labels(const char *model_dir, edit_fn edit, void *arg) {
  int lock;
  kiln_status s = kx_model_lock(model_dir, &lock);
  if (s) return s;
  kiln_labels l;
  s = kiln_labels_read(model_dir, &l);
  if (!s) s = edit(&l, arg);
  if (!s) s = kx_labels_write(model_dir, &l);
  kiln_labels_free(&l);
  kx_model_unlock(lock);
  return s;
}

typedef struct label_args {
  int64_t version;
  const char *label;
} label_args;

static kiln_status do_label(kiln_labels *l, void *arg) {
  label_args *a = arg;
  return label_edit(l, a->version, a->label);
}

kiln_status kiln_registry_label(const char *model_dir, int64_t version, const char *label) {
  if (!label || !kx_label_name_ok(label))
    return kiln_error(KILN_INVALID_ARGUMENT, "label '%s' is not a label name ([A-Za-z0-9_.-], 1 to 64 characters)", label ? label : "");
  if (version < 0 || version > KX_MAX_VERSION) return kiln_error(KILN_INVALID_ARGUMENT, "version %lld is out of range", (long long)version);
  if (!kx_version_exists(model_dir, version)) return kiln_error(KILN_NOT_FOUND, "%s: no version %lld", model_dir, (long long)version);
  label_args a = {version, label};
  return edit_labels(model_dir, do_label, &a);
}

typedef struct rollback_args {
  const char *model_dir;
  int64_t stable;
} rollback_args;

static kiln_status do_rollback(kiln_labels *l, void *arg) {
  rollback_args *a = arg;
  int64_t current = kiln_labels_get(l, "stable");
  for (int k = l->n_history - 1; k >= 0; k--) {
    int64_t v = l->stable_history[k];
    if (v == current || !kx_version_exists(a->model_dir, v) || kiln_labels_rejection(l, v)) continue;
    l->n_history = k; /* this entry and the newer ones it passed */
    a->stable = v;
    return set_label(l, "stable", v);
  }
  return kiln_error(KILN_FAILED_PRECONDITION, "%s: no earlier stable version to roll back to (stable_history holds none that is present and not rejected)",
                    a->model_dir);
}

kiln_status kiln_registry_rollback(const char *model_dir, int64_t *stable) {
  rollback_args a = {model_dir, -1};
  kiln_status s = edit_labels(model_dir, do_rollback, &a);
  if (!s) *stable = a.stable;
  return s;
}

typedef struct reject_args {
  int64_t version;
  const char *reason;
} reject_args;

static kiln_status do_reject(kiln_labels *l, void *arg) {
  reject_args *a = arg;
  if (kiln_labels_get(l, "stable") == a->version)
    return kiln_error(KILN_FAILED_PRECONDITION, "version %lld is labelled stable: a verdict on it as a canary came too late (it was promoted)",
                      (long long)a->version);
  for (int i = l->n_labels - 1; i >= 0; i--)
    if (l->labels[i].version == a->version) remove_label_at(l, i);
  char at[KX_UTC_SIZE];
  kx_utc_now(0, at);
  char *reason = strdup(a->reason), *when = strdup(at);
  if (!reason || !when) {
    free(reason), free(when);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  }
  for (int i = 0; i < l->n_rejected; i++)
    if (l->rejected[i].version == a->version) { /* rejected again: the latest reason */
      free(l->rejected[i].reason), free(l->rejected[i].at);
      l->rejected[i].reason = reason, l->rejected[i].at = when;
      return NULL;
    }
  if (l->n_rejected >= MAX_ENTRIES) remove_rejection_at(l, 0); /* the oldest is forgotten */
  kiln_rejection *p = realloc(l->rejected, (size_t)(l->n_rejected + 1) * sizeof *p);
  if (!p) {
    free(reason), free(when);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  }
  l->rejected = p;
  p[l->n_rejected++] = (kiln_rejection){a->version, reason, when};
  return NULL;
}

kiln_status kiln_registry_reject(const char *model_dir, int64_t version, const char *reason) {
  if (version < 0 || version > KX_MAX_VERSION) return kiln_error(KILN_INVALID_ARGUMENT, "version %lld is out of range", (long long)version);
  if (!reason || strlen(reason) > MAX_REASON || !kx_is_utf8(reason, strlen(reason)))
    return kiln_error(KILN_INVALID_ARGUMENT, "a rejection's reason must be UTF-8 text of at most %d bytes", MAX_REASON);
  reject_args a = {version, reason};
  return edit_labels(model_dir, do_reject, &a);
}
