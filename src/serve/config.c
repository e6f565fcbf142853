/* TF Serving's configuration files for kiln serve: ModelServerConfig (--model_config_file) and
 * BatchingParameters (--batching_parameters_file), mapped from the text-format tree
 * (textproto.h) onto kiln's structs and validated, so that the server only sees configs it can
 * act on. Fields TF Serving knows but kiln does not implement are errors, never ignored. */
#include "kiln/serve.h"

#include <stdlib.h>
#include <string.h>

#include "serve/textproto.h"

/* Upper bounds on the batching sizes (nginx's rule: every size from outside has a maximum). */
#define MAX_BATCH_SIZE_LIMIT (1 << 20)
#define MAX_ENQUEUED_BATCHES_LIMIT (1 << 20)
#define NUM_BATCH_THREADS_LIMIT 4096
#define BATCH_TIMEOUT_MICROS_LIMIT ((int64_t)3600 * 1000000) /* an hour */
/* latest.num_versions is a uint32 in TF Serving's proto */
#define NUM_VERSIONS_LIMIT ((int64_t)UINT32_MAX)

static kiln_status out_of_memory(void) { return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory"); }

#define ERR(name, line, col, ...) kx_tp_error(name, line, col, KILN_INVALID_ARGUMENT, __VA_ARGS__)

static int is(const kx_tp_field *f, const char *field) { return strcmp(f->name, field) == 0; }

static kiln_status unknown_field(const char *name, const kx_tp_field *f, const char *type) {
  return ERR(name, f->line, f->col, "unknown field '%.100s' in %s", f->name, type);
}

static kiln_status unsupported_field(const char *name, const kx_tp_field *f, const char *type) {
  return ERR(name, f->line, f->col, "field '%s' of %s is not supported by kiln", f->name, type);
}

/* A singular field: one value, not a list, and given once (`*first` remembers where). */
static kiln_status singular(const char *name, const kx_tp_field *f, const char *type, const kx_tp_field **first) {
  if (*first)
    return ERR(name, f->line, f->col, "field '%s' of %s is given twice (first at %d:%d)", f->name, type,
               (*first)->line, (*first)->col);
  if (f->is_list) return ERR(name, f->line, f->col, "field '%s' of %s takes one value, not a list", f->name, type);
  *first = f;
  return NULL;
}

static kiln_status want(const char *name, const kx_tp_field *f, const kx_tp_value *v, kx_tp_kind kind,
                        const char *type) {
  if (v->kind == kind) return NULL;
  if (v->kind == KX_TP_IDENT)
    return ERR(name, v->line, v->col, "field '%s' of %s takes %s, got %.40s%s", f->name, type, kx_tp_kind_name(kind),
               v->s, kind == KX_TP_STRING ? " (strings are quoted)" : "");
  return ERR(name, v->line, v->col, "field '%s' of %s takes %s, got %s", f->name, type, kx_tp_kind_name(kind),
             kx_tp_kind_name(v->kind));
}

/* A singular string field copied into *dst; NULs are refused (kiln's strings are C strings). */
static kiln_status take_string(const char *name, const kx_tp_field *f, const char *type, const kx_tp_field **first,
                               char **dst) {
  kiln_status s = singular(name, f, type, first);
  if (s) return s;
  const kx_tp_value *v = &f->values[0];
  if ((s = want(name, f, v, KX_TP_STRING, type))) return s;
  if (memchr(v->s, '\0', v->len)) return ERR(name, v->line, v->col, "field '%s' of %s holds a NUL byte", f->name, type);
  if (!(*dst = strdup(v->s))) return out_of_memory();
  return NULL;
}

static kiln_status take_int(const char *name, const kx_tp_field *f, const char *type, const kx_tp_field **first,
                            int64_t *dst) {
  kiln_status s = singular(name, f, type, first);
  if (s) return s;
  if ((s = want(name, f, &f->values[0], KX_TP_INT, type))) return s;
  *dst = f->values[0].i;
  return NULL;
}

/* protobuf's bools: true/false, True/False, t/f, 1/0. */
static kiln_status take_bool(const char *name, const kx_tp_field *f, const char *type, const kx_tp_field **first,
                             int *dst) {
  kiln_status s = singular(name, f, type, first);
  if (s) return s;
  const kx_tp_value *v = &f->values[0];
  if (v->kind == KX_TP_INT && (v->i == 0 || v->i == 1)) {
    *dst = (int)v->i;
    return NULL;
  }
  if (v->kind == KX_TP_IDENT) {
    static const char *const yes[] = {"true", "True", "t"}, *const no[] = {"false", "False", "f"};
    for (int i = 0; i < 3; i++) {
      if (strcmp(v->s, yes[i]) == 0) return *dst = 1, NULL;
      if (strcmp(v->s, no[i]) == 0) return *dst = 0, NULL;
    }
  }
  return ERR(name, v->line, v->col, "field '%s' of %s takes true or false", f->name, type);
}

/* ---------------------------------------------------------------- duplicates */

/* A key and where it was written, to find duplicates by sorting instead of comparing all pairs. */
typedef struct keyed {
  const char *s; /* string keys; NULL for integer keys */
  int64_t i;
  int order, line, col;
} keyed;

static int keyed_equal(const keyed *x, const keyed *y) { return x->s ? strcmp(x->s, y->s) == 0 : x->i == y->i; }

static int keyed_compare(const void *a, const void *b) {
  const keyed *x = a, *y = b;
  int c = x->s ? strcmp(x->s, y->s) : (x->i > y->i) - (x->i < y->i);
  return c ? c : (x->order > y->order) - (x->order < y->order);
}

/* Sorts the keys and returns the first repetition in document order (NULL: none), with *first
 * the occurrence it repeats. */
static const keyed *find_duplicate(keyed *keys, int n, const keyed **first) {
  qsort(keys, (size_t)n, sizeof *keys, keyed_compare);
  const keyed *dup = NULL;
  for (int i = 1; i < n; i++) {
    /* keys[i] is the second of its run of equal keys: the first repetition of that key */
    if (!keyed_equal(&keys[i - 1], &keys[i]) || (i >= 2 && keyed_equal(&keys[i - 2], &keys[i]))) continue;
    if (!dup || keys[i].order < dup->order) dup = &keys[i], *first = &keys[i - 1];
  }
  return dup;
}

/* ---------------------------------------------------------------- ModelServerConfig */

static kiln_status parse_latest(const char *name, const kx_tp_value *m, kiln_model_config *mc) {
  const char *type = "ServableVersionPolicy.Latest";
  const kx_tp_field *num = NULL;
  kiln_status s;
  mc->policy = KILN_POLICY_LATEST;
  mc->latest_num_versions = 1;
  for (int i = 0; i < m->n_fields; i++) {
    const kx_tp_field *f = &m->fields[i];
    if (!is(f, "num_versions")) return unknown_field(name, f, type);
    if ((s = take_int(name, f, type, &num, &mc->latest_num_versions))) return s;
    const kx_tp_value *v = &f->values[0];
    if (v->i < 1 || v->i > NUM_VERSIONS_LIMIT)
      return ERR(name, v->line, v->col, "latest.num_versions must be between 1 and %lld, got %lld",
                 (long long)NUM_VERSIONS_LIMIT, (long long)v->i);
  }
  return NULL;
}

static kiln_status parse_specific(const char *name, const kx_tp_field *owner, const kx_tp_value *m,
                                  kiln_model_config *mc) {
  const char *type = "ServableVersionPolicy.Specific";
  kiln_status s;
  mc->policy = KILN_POLICY_SPECIFIC;
  int n = 0;
  for (int i = 0; i < m->n_fields; i++) {
    if (!is(&m->fields[i], "versions")) return unknown_field(name, &m->fields[i], type);
    n += m->fields[i].n_values;
  }
  if (n == 0) return ERR(name, owner->line, owner->col, "the specific version policy lists no versions");
  keyed *keys = calloc((size_t)n, sizeof *keys);
  if (!keys || !(mc->versions = calloc((size_t)n, sizeof *mc->versions))) {
    free(keys);
    return out_of_memory();
  }
  s = NULL;
  for (int i = 0; i < m->n_fields && !s; i++) {
    const kx_tp_field *f = &m->fields[i];
    for (int j = 0; j < f->n_values && !s; j++) {
      const kx_tp_value *v = &f->values[j];
      if ((s = want(name, f, v, KX_TP_INT, type))) break;
      if (v->i < 0) {
        s = ERR(name, v->line, v->col, "version %lld is negative: versions are >= 0", (long long)v->i);
        break;
      }
      keys[mc->n_versions] = (keyed){NULL, v->i, mc->n_versions, v->line, v->col};
      mc->versions[mc->n_versions++] = v->i;
    }
  }
  const keyed *first = NULL, *dup = s ? NULL : find_duplicate(keys, n, &first);
  if (dup)
    s = ERR(name, dup->line, dup->col, "version %lld is listed twice (first at %d:%d)", (long long)dup->i, first->line,
            first->col);
  free(keys);
  return s;
}

static kiln_status parse_policy(const char *name, const kx_tp_value *m, kiln_model_config *mc) {
  const char *type = "ServableVersionPolicy";
  const kx_tp_field *choice = NULL;
  kiln_status s;
  for (int i = 0; i < m->n_fields; i++) {
    const kx_tp_field *f = &m->fields[i];
    if (!is(f, "latest") && !is(f, "all") && !is(f, "specific")) return unknown_field(name, f, type);
    if (choice && strcmp(choice->name, f->name) != 0)
      return ERR(name, f->line, f->col,
                 "model_version_policy takes one of latest, all and specific: '%s' and '%s' are both given",
                 choice->name, f->name);
    if ((s = singular(name, f, type, &choice))) return s;
    const kx_tp_value *v = &f->values[0];
    if ((s = want(name, f, v, KX_TP_MESSAGE, type))) return s;
    if (is(f, "latest")) {
      s = parse_latest(name, v, mc);
    } else if (is(f, "all")) {
      mc->policy = KILN_POLICY_ALL;
      if (v->n_fields) s = unknown_field(name, &v->fields[0], "ServableVersionPolicy.All");
    } else {
      s = parse_specific(name, f, v, mc);
    }
    if (s) return s;
  }
  return NULL;
}

static kiln_status parse_label(const char *name, const kx_tp_value *m, kiln_version_label *label, keyed *key) {
  const char *type = "ModelConfig.VersionLabelsEntry";
  const kx_tp_field *f_key = NULL, *f_value = NULL;
  kiln_status s;
  for (int i = 0; i < m->n_fields; i++) {
    const kx_tp_field *f = &m->fields[i];
    if (is(f, "key")) s = take_string(name, f, type, &f_key, &label->label);
    else if (is(f, "value")) s = take_int(name, f, type, &f_value, &label->version);
    else s = unknown_field(name, f, type);
    if (s) return s;
  }
  if (!label->label || !label->label[0]) return ERR(name, m->line, m->col, "version_labels entry without a key");
  if (!f_value) return ERR(name, m->line, m->col, "version label '%.100s' has no value", label->label);
  if (label->version < 0)
    return ERR(name, f_value->values[0].line, f_value->values[0].col,
               "version label '%.100s' points at version %lld: versions are >= 0", label->label,
               (long long)label->version);
  *key = (keyed){label->label, 0, 0, f_key->line, f_key->col};
  return NULL;
}

static kiln_status parse_labels(const char *name, const kx_tp_value *m, int n, kiln_model_config *mc) {
  keyed *keys = calloc((size_t)n, sizeof *keys);
  if (!keys || !(mc->labels = calloc((size_t)n, sizeof *mc->labels))) {
    free(keys);
    return out_of_memory();
  }
  kiln_status s = NULL;
  for (int i = 0; i < m->n_fields && !s; i++) {
    const kx_tp_field *f = &m->fields[i];
    if (!is(f, "version_labels")) continue;
    for (int j = 0; j < f->n_values && !s; j++) {
      if (!(s = want(name, f, &f->values[j], KX_TP_MESSAGE, "ModelConfig"))) {
        int k = mc->n_labels++;
        s = parse_label(name, &f->values[j], &mc->labels[k], &keys[k]);
        keys[k].order = k;
      }
    }
  }
  const keyed *first = NULL, *dup = s ? NULL : find_duplicate(keys, n, &first);
  if (dup)
    s = ERR(name, dup->line, dup->col, "version label '%.100s' is given twice (first at %d:%d)", dup->s, first->line,
            first->col);
  free(keys);
  return s;
}

/* One `config { ... }` entry; *name_at gets where its name was written. */
static kiln_status parse_model(const char *name, const kx_tp_field *owner, const kx_tp_value *m, kiln_model_config *mc,
                               keyed *name_at) {
  const char *type = "ModelConfig";
  const kx_tp_field *f_name = NULL, *f_path = NULL, *f_platform = NULL, *f_policy = NULL;
  int n_labels = 0;
  kiln_status s = NULL;
  mc->policy = KILN_POLICY_LATEST;
  mc->latest_num_versions = 1;
  for (int i = 0; i < m->n_fields && !s; i++) {
    const kx_tp_field *f = &m->fields[i];
    if (is(f, "name")) {
      s = take_string(name, f, type, &f_name, &mc->name);
    } else if (is(f, "base_path")) {
      s = take_string(name, f, type, &f_path, &mc->base_path);
    } else if (is(f, "model_platform")) {
      s = take_string(name, f, type, &f_platform, &mc->platform);
    } else if (is(f, "model_version_policy")) {
      if (!(s = singular(name, f, type, &f_policy)) && !(s = want(name, f, &f->values[0], KX_TP_MESSAGE, type)))
        s = parse_policy(name, &f->values[0], mc);
    } else if (is(f, "version_labels")) {
      n_labels += f->n_values;
    } else if (is(f, "model_type") || is(f, "logging_config")) {
      s = unsupported_field(name, f, type);
    } else {
      s = unknown_field(name, f, type);
    }
  }
  if (s) return s;
  if (!mc->name || !mc->name[0]) return ERR(name, owner->line, owner->col, "a model config has no name");
  if (!mc->base_path || !mc->base_path[0])
    return ERR(name, owner->line, owner->col, "model '%.100s' has no base_path", mc->name);
  if (!mc->platform && !(mc->platform = strdup(""))) return out_of_memory();
  if (n_labels && (s = parse_labels(name, m, n_labels, mc))) return s;
  *name_at = (keyed){mc->name, 0, 0, f_name->line, f_name->col};
  return NULL;
}

static kiln_status parse_model_list(const char *name, const kx_tp_field *owner, const kx_tp_value *m,
                                    kiln_model_server_config *out) {
  int n = 0;
  for (int i = 0; i < m->n_fields; i++) {
    if (!is(&m->fields[i], "config")) return unknown_field(name, &m->fields[i], "ModelConfigList");
    n += m->fields[i].n_values;
  }
  if (n == 0) return ERR(name, owner->line, owner->col, "model_config_list holds no models (config { ... })");
  keyed *names = calloc((size_t)n, sizeof *names);
  if (!names || !(out->models = calloc((size_t)n, sizeof *out->models))) {
    free(names);
    return out_of_memory();
  }
  kiln_status s = NULL;
  for (int i = 0; i < m->n_fields && !s; i++) {
    const kx_tp_field *f = &m->fields[i];
    for (int j = 0; j < f->n_values && !s; j++) {
      const kx_tp_value *v = &f->values[j];
      if ((s = want(name, f, v, KX_TP_MESSAGE, "ModelConfigList"))) break;
      int k = out->n_models++;
      s = parse_model(name, f, v, &out->models[k], &names[k]);
      names[k].order = k;
    }
  }
  const keyed *first = NULL, *dup = s ? NULL : find_duplicate(names, n, &first);
  if (dup)
    s = ERR(name, dup->line, dup->col, "model name '%.100s' is used twice (first at %d:%d)", dup->s, first->line,
            first->col);
  free(names);
  return s;
}

static kiln_status parse_server_config(const char *name, const kx_tp_value *root, kiln_model_server_config *out) {
  const char *type = "ModelServerConfig";
  const kx_tp_field *list = NULL;
  kiln_status s;
  for (int i = 0; i < root->n_fields; i++) {
    const kx_tp_field *f = &root->fields[i];
    if (is(f, "model_config_list")) {
      if ((s = singular(name, f, type, &list)) || (s = want(name, f, &f->values[0], KX_TP_MESSAGE, type))) return s;
    } else if (is(f, "custom_model_config_list")) {
      return unsupported_field(name, f, type);
    } else {
      return unknown_field(name, f, type);
    }
  }
  if (!list)
    return kiln_error(KILN_INVALID_ARGUMENT,
                      "%s: no models: the config needs model_config_list { config { name: ... base_path: ... } }",
                      name);
  return parse_model_list(name, list, &list->values[0], out);
}

kiln_status kiln_model_server_config_parse(const char *text, size_t len, const char *name,
                                           kiln_model_server_config *out) {
  memset(out, 0, sizeof *out);
  if (!name) name = "model config";
  kx_tp_value root;
  kiln_status s = kx_tp_parse(text, len, name, &root);
  if (s) return s;
  s = parse_server_config(name, &root, out);
  kx_tp_free(&root);
  if (s) kiln_model_server_config_free(out);
  return s;
}

void kiln_model_server_config_free(kiln_model_server_config *c) {
  if (!c) return;
  for (int i = 0; i < c->n_models; i++) {
    kiln_model_config *m = &c->models[i];
    free(m->name);
    free(m->base_path);
    free(m->platform);
    free(m->versions);
    for (int j = 0; j < m->n_labels; j++) free(m->labels[j].label);
    free(m->labels);
  }
  free(c->models);
  memset(c, 0, sizeof *c);
}

/* ---------------------------------------------------------------- BatchingParameters */

/* An Int64Value field, written plain (max_batch_size: 128) or wrapped (max_batch_size { value:
 * 128 }); an empty wrapper is 0, as in protobuf. *at gets the value's position. */
static kiln_status take_wrapped_int(const char *name, const kx_tp_field *f, const kx_tp_field **first, int64_t *dst,
                                    const kx_tp_value **at) {
  const char *type = "BatchingParameters";
  kiln_status s = singular(name, f, type, first);
  if (s) return s;
  const kx_tp_value *v = &f->values[0];
  *at = v;
  if (v->kind == KX_TP_INT) {
    *dst = v->i;
    return NULL;
  }
  if (v->kind != KX_TP_MESSAGE)
    return ERR(name, v->line, v->col, "field '%s' of %s takes an integer or { value: N }, got %s", f->name, type,
               kx_tp_kind_name(v->kind));
  const kx_tp_field *value = NULL;
  *dst = 0;
  for (int i = 0; i < v->n_fields; i++) {
    const kx_tp_field *g = &v->fields[i];
    if (!is(g, "value")) return unknown_field(name, g, "google.protobuf.Int64Value");
    if ((s = take_int(name, g, "google.protobuf.Int64Value", &value, dst))) return s;
    *at = &g->values[0];
  }
  return NULL;
}

/* A StringValue field, plain or wrapped; only checked, since kiln ignores the one there is. */
static kiln_status check_wrapped_string(const char *name, const kx_tp_field *f, const kx_tp_field **first) {
  const char *type = "BatchingParameters";
  kiln_status s = singular(name, f, type, first);
  if (s) return s;
  const kx_tp_value *v = &f->values[0];
  if (v->kind == KX_TP_STRING) return NULL;
  if (v->kind != KX_TP_MESSAGE)
    return ERR(name, v->line, v->col, "field '%s' of %s takes a string or { value: \"...\" }, got %s", f->name, type,
               kx_tp_kind_name(v->kind));
  const kx_tp_field *value = NULL;
  for (int i = 0; i < v->n_fields; i++) {
    const kx_tp_field *g = &v->fields[i];
    if (!is(g, "value")) return unknown_field(name, g, "google.protobuf.StringValue");
    if ((s = singular(name, g, "google.protobuf.StringValue", &value)) ||
        (s = want(name, g, &g->values[0], KX_TP_STRING, "google.protobuf.StringValue")))
      return s;
  }
  return NULL;
}

/* Checks lo <= *v <= hi for a field that was given (at != NULL). */
static kiln_status in_range(const char *name, const char *field, const kx_tp_value *at, int64_t v, int64_t lo,
                            int64_t hi) {
  if (!at || (v >= lo && v <= hi)) return NULL;
  if (v < lo) return ERR(name, at->line, at->col, "%s must be >= %lld, got %lld", field, (long long)lo, (long long)v);
  return ERR(name, at->line, at->col, "%s must be <= %lld, got %lld", field, (long long)hi, (long long)v);
}

void kiln_batching_config_default(kiln_batching_config *c) {
  memset(c, 0, sizeof *c);
  c->max_batch_size = 32;
  c->batch_timeout_micros = 1000;
  c->max_enqueued_batches = 16;
  c->num_batch_threads = 0;
}

static kiln_status parse_allowed_sizes(const char *name, const kx_tp_value *root, int n, kiln_batching_config *out) {
  const char *type = "BatchingParameters";
  if (!(out->allowed_batch_sizes = calloc((size_t)n, sizeof *out->allowed_batch_sizes))) return out_of_memory();
  const kx_tp_value *last = NULL;
  kiln_status s;
  for (int i = 0; i < root->n_fields; i++) {
    const kx_tp_field *f = &root->fields[i];
    if (!is(f, "allowed_batch_sizes")) continue;
    for (int j = 0; j < f->n_values; j++) {
      const kx_tp_value *v = &f->values[j];
      if ((s = want(name, f, v, KX_TP_INT, type))) return s;
      if (v->i <= 0)
        return ERR(name, v->line, v->col, "allowed_batch_sizes must be positive, got %lld", (long long)v->i);
      if (last && v->i <= last->i)
        return ERR(name, v->line, v->col, "allowed_batch_sizes must be strictly increasing: %lld after %lld",
                   (long long)v->i, (long long)last->i);
      out->allowed_batch_sizes[out->n_allowed_batch_sizes++] = v->i;
      last = v;
    }
  }
  if (last && last->i != out->max_batch_size)
    return ERR(name, last->line, last->col,
               "the last of allowed_batch_sizes (%lld) must equal max_batch_size (%lld), as in TF Serving",
               (long long)last->i, (long long)out->max_batch_size);
  if (!last) { /* allowed_batch_sizes: [] says nothing: any size */
    free(out->allowed_batch_sizes);
    out->allowed_batch_sizes = NULL;
  }
  return NULL;
}

static kiln_status parse_batching(const char *name, const kx_tp_value *root, kiln_batching_config *out) {
  const char *type = "BatchingParameters";
  const kx_tp_field *f_max = NULL, *f_timeout = NULL, *f_enqueued = NULL, *f_threads = NULL, *f_pad = NULL,
                    *f_pool = NULL;
  const kx_tp_value *at_max = NULL, *at_timeout = NULL, *at_enqueued = NULL, *at_threads = NULL;
  int n_allowed = 0, pad = 0;
  kiln_status s = NULL;
  for (int i = 0; i < root->n_fields && !s; i++) {
    const kx_tp_field *f = &root->fields[i];
    if (is(f, "max_batch_size")) {
      s = take_wrapped_int(name, f, &f_max, &out->max_batch_size, &at_max);
    } else if (is(f, "batch_timeout_micros")) {
      s = take_wrapped_int(name, f, &f_timeout, &out->batch_timeout_micros, &at_timeout);
    } else if (is(f, "max_enqueued_batches")) {
      s = take_wrapped_int(name, f, &f_enqueued, &out->max_enqueued_batches, &at_enqueued);
    } else if (is(f, "num_batch_threads")) {
      s = take_wrapped_int(name, f, &f_threads, &out->num_batch_threads, &at_threads);
    } else if (is(f, "allowed_batch_sizes")) {
      n_allowed += f->n_values;
    } else if (is(f, "pad_variable_length_inputs")) {
      if (!(s = take_bool(name, f, type, &f_pad, &pad)))
        kiln_log(KILN_LOG_WARN, "%s:%d:%d: pad_variable_length_inputs is accepted and ignored by kiln", name, f->line,
                 f->col);
    } else if (is(f, "thread_pool_name")) {
      if (!(s = check_wrapped_string(name, f, &f_pool)))
        kiln_log(KILN_LOG_WARN, "%s:%d:%d: thread_pool_name is accepted and ignored by kiln", name, f->line, f->col);
    } else if (is(f, "enable_large_batch_splitting") || is(f, "max_execution_batch_size") ||
               is(f, "batch_padding_policy")) {
      s = unsupported_field(name, f, type);
    } else {
      s = unknown_field(name, f, type);
    }
  }
  if (!s) s = in_range(name, "max_batch_size", at_max, out->max_batch_size, 1, MAX_BATCH_SIZE_LIMIT);
  if (!s)
    s = in_range(name, "batch_timeout_micros", at_timeout, out->batch_timeout_micros, 0, BATCH_TIMEOUT_MICROS_LIMIT);
  if (!s)
    s = in_range(name, "max_enqueued_batches", at_enqueued, out->max_enqueued_batches, 1, MAX_ENQUEUED_BATCHES_LIMIT);
  if (!s) s = in_range(name, "num_batch_threads", at_threads, out->num_batch_threads, 0, NUM_BATCH_THREADS_LIMIT);
  if (!s && n_allowed) s = parse_allowed_sizes(name, root, n_allowed, out);
  return s;
}

kiln_status kiln_batching_config_parse(const char *text, size_t len, const char *name, kiln_batching_config *out) {
  memset(out, 0, sizeof *out);
  if (!name) name = "batching parameters";
  kx_tp_value root;
  kiln_status s = kx_tp_parse(text, len, name, &root);
  if (s) return s;
  kiln_batching_config_default(out);
  s = parse_batching(name, &root, out);
  kx_tp_free(&root);
  if (s) kiln_batching_config_free(out);
  return s;
}

void kiln_batching_config_free(kiln_batching_config *c) {
  if (!c) return;
  free(c->allowed_batch_sizes);
  memset(c, 0, sizeof *c);
}
