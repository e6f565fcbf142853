/* The validation gate's signature check: what a new version changes in the inputs and outputs
 * clients see, split into breaking changes and compatible ones. */
#include "registry/validate_internal.h"

#include <stdio.h>
#include <string.h>

typedef struct diff_sink {
  kx_signature_diff *d;
  int failed; /* an allocation failed */
} diff_sink;

static void add_line(diff_sink *k, cJSON *array, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void add_line(diff_sink *k, cJSON *array, const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  cJSON *item = cJSON_CreateString(line);
  if (!item || !cJSON_AddItemToArray(array, item)) {
    cJSON_Delete(item);
    k->failed = 1;
  }
}

/* "float[N,4]"-style: the dtype, and the dims with symbolic names (or '?') for dynamic ones. */
static const char *describe(const kiln_value_info *v, char *buf, size_t size) {
  size_t n = (size_t)snprintf(buf, size, "%s%s", v->kind == KILN_VALUE_SEQUENCE ? "sequence of " : "",
                              kiln_dtype_name(v->dtype));
  if (v->rank < 0) {
    if (n < size) snprintf(buf + n, size - n, "[unknown shape]");
    return buf;
  }
  for (int d = 0; d < v->rank && n < size; d++) {
    int w;
    if (v->dims[d] >= 0) w = snprintf(buf + n, size - n, "%s%lld", d ? "," : "[", (long long)v->dims[d]);
    else w = snprintf(buf + n, size - n, "%s%s", d ? "," : "[", v->dim_names[d] ? v->dim_names[d] : "?");
    if (w < 0) break;
    n += (size_t)w;
  }
  if (n < size) snprintf(buf + n, size - n, v->rank ? "]" : "[]");
  return buf;
}

/* One input or output present in both versions. */
static void compare_value(diff_sink *k, const char *what, const kiln_value_info *p, const kiln_value_info *c) {
  char a[256], b[256];
  cJSON *breaking = k->d->breaking, *notes = k->d->notes;
  if (p->kind != c->kind || p->dtype != c->dtype) {
    add_line(k, breaking, "%s '%s': type %s -> %s", what, p->name, describe(p, a, sizeof a), describe(c, b, sizeof b));
    return;
  }
  if (p->rank < 0 && c->rank < 0) return;
  if (p->rank < 0 || c->rank < 0) { /* a shape declared or dropped */
    if (c->rank < 0) add_line(k, notes, "%s '%s': shape %s no longer declared", what, p->name, describe(p, a, sizeof a));
    else add_line(k, breaking, "%s '%s': shape now declared as %s", what, p->name, describe(c, b, sizeof b));
    return;
  }
  if (p->rank != c->rank) {
    add_line(k, breaking, "%s '%s': rank %d -> %d (%s -> %s)", what, p->name, p->rank, c->rank, describe(p, a, sizeof a),
             describe(c, b, sizeof b));
    return;
  }
  for (int d = 0; d < p->rank; d++) {
    int64_t x = p->dims[d], y = c->dims[d];
    if (x >= 0 && y >= 0 && x != y)
      add_line(k, breaking, "%s '%s': dimension %d %lld -> %lld", what, p->name, d, (long long)x, (long long)y);
    else if (x < 0 && y >= 0)
      add_line(k, breaking, "%s '%s': dimension %d dynamic -> fixed %lld", what, p->name, d, (long long)y);
    else if (x >= 0 && y < 0)
      add_line(k, notes, "%s '%s': dimension %d %lld -> dynamic", what, p->name, d, (long long)x);
  }
}

kiln_status kx_validate_signature(const kiln_model *prev, const kiln_model *cand, kx_signature_diff *out) {
  out->breaking = cJSON_CreateArray();
  out->notes = cJSON_CreateArray();
  diff_sink k = {.d = out, .failed = !out->breaking || !out->notes};
  for (int i = 0; !k.failed && i < kiln_model_input_count(prev); i++) {
    const kiln_value_info *p = kiln_model_input(prev, i);
    int j = kiln_model_input_index(cand, p->name);
    if (j < 0) add_line(&k, out->breaking, "input '%s' removed (or renamed)", p->name);
    else compare_value(&k, "input", p, kiln_model_input(cand, j));
  }
  for (int j = 0; !k.failed && j < kiln_model_input_count(cand); j++) {
    const kiln_value_info *c = kiln_model_input(cand, j);
    if (kiln_model_input_index(prev, c->name) >= 0) continue;
    if (c->optional) add_line(&k, out->notes, "new optional input '%s'", c->name);
    else add_line(&k, out->breaking, "new required input '%s'", c->name);
  }
  for (int i = 0; !k.failed && i < kiln_model_output_count(prev); i++) {
    const kiln_value_info *p = kiln_model_output(prev, i);
    int j = kiln_model_output_index(cand, p->name);
    if (j < 0) add_line(&k, out->breaking, "output '%s' removed (or renamed)", p->name);
    else compare_value(&k, "output", p, kiln_model_output(cand, j));
  }
  for (int j = 0; !k.failed && j < kiln_model_output_count(cand); j++) {
    const kiln_value_info *c = kiln_model_output(cand, j);
    if (kiln_model_output_index(prev, c->name) < 0) add_line(&k, out->notes, "new output '%s'", c->name);
  }
  if (!k.failed) return NULL;
  cJSON_Delete(out->breaking);
  cJSON_Delete(out->notes);
  out->breaking = out->notes = NULL;
  return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory comparing signatures");
}
