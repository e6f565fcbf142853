/* A filter stage's predicate: membership ("in"), a comparison ("op" + "value") or presence of one
 * feature; parsed once into read-only state, evaluated per record from any thread. */
#include "data/data.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#define MAX_VALUES 65536 /* members of an "in" list */

typedef enum pred_kind { PRED_IN, PRED_OP, PRED_PRESENT } pred_kind;
typedef enum pred_op { OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE } pred_op;

static const char *const op_names[] = {"==", "!=", "<", "<=", ">", ">=", NULL};
static const char *const keys[] = {"feature", "in", "op", "value", "present", NULL};

struct kx_predicate {
  pred_kind kind;
  pred_op op;
  int present;  /* PRED_PRESENT: keep records where the feature is (1) or is not (0) present */
  int strings;  /* the values are strings: the feature must be text */
  int n;        /* values: the "in" list, or the one "value" */
  double *nums;
  char **strs;
  char *feature;
  char *where;
};

void kx_predicate_free(kx_predicate *p) {
  if (!p) return;
  if (p->strs)
    for (int i = 0; i < p->n; i++) free(p->strs[i]);
  free(p->strs);
  free(p->nums);
  free(p->feature);
  free(p->where);
  free(p);
}

/* Reads one value (a number, a bool read as 0/1, or a string) into slot i. */
static kiln_status read_value(kx_predicate *p, const cJSON *e, const char *where, int i) {
  int is_string = cJSON_IsString(e);
  if (!is_string && !cJSON_IsNumber(e) && !cJSON_IsBool(e))
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: expected a number, a bool or a string", where);
  if (i == 0) p->strings = is_string;
  else if (is_string != p->strings)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: mixes strings and numbers; the list must hold one kind", where);
  if (is_string) {
    if (!(p->strs[i] = strdup(e->valuestring))) return kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: out of memory", where);
  } else {
    p->nums[i] = cJSON_IsBool(e) ? (cJSON_IsTrue(e) ? 1 : 0) : e->valuedouble;
  }
  p->n = i + 1;
  return NULL;
}

static kiln_status alloc_values(kx_predicate *p, int n, const char *where) {
  p->nums = calloc((size_t)n, sizeof *p->nums);
  p->strs = calloc((size_t)n, sizeof *p->strs);
  return p->nums && p->strs ? NULL : kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: out of memory", where);
}

static kiln_status parse(const cJSON *obj, const char *where, kx_predicate *p) {
  const char *feature = NULL, *op = NULL;
  kiln_status s = kx_spec_keys(obj, where, keys);
  if (!s) s = kx_spec_string(obj, where, "feature", 1, &feature);
  if (!s) s = kx_spec_string(obj, where, "op", 0, &op);
  if (s) return s;
  if (!(p->feature = strdup(feature)) || !(p->where = strdup(where)))
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: out of memory", where);
  const cJSON *in = cJSON_GetObjectItemCaseSensitive(obj, "in");
  const cJSON *value = cJSON_GetObjectItemCaseSensitive(obj, "value");
  const cJSON *present = cJSON_GetObjectItemCaseSensitive(obj, "present");
  if ((in != NULL) + (op != NULL) + (present != NULL) != 1)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: expected exactly one of 'in', 'op' (with 'value') or 'present'", where);
  if (value && !op) return kiln_error(KILN_INVALID_ARGUMENT, "%s: 'value' needs an 'op'", where);
  char at[256];
  if (present) {
    p->kind = PRED_PRESENT;
    return kx_spec_bool(obj, where, "present", &p->present);
  }
  if (in) {
    p->kind = PRED_IN;
    int n = cJSON_GetArraySize(in);
    if (!cJSON_IsArray(in) || n == 0) return kiln_error(KILN_INVALID_ARGUMENT, "%s.in: expected a non-empty list", where);
    if (n > MAX_VALUES) return kiln_error(KILN_INVALID_ARGUMENT, "%s.in: more than %d values", where, MAX_VALUES);
    if ((s = alloc_values(p, n, where))) return s;
    int i = 0;
    for (const cJSON *e = in->child; e && !s; e = e->next, i++) {
      snprintf(at, sizeof at, "%s.in[%d]", where, i);
      s = read_value(p, e, at, i);
    }
    return s;
  }
  p->kind = PRED_OP;
  int k = 0;
  while (op_names[k] && strcmp(op_names[k], op) != 0) k++;
  if (!op_names[k])
    return kiln_error(KILN_INVALID_ARGUMENT, "%s.op: unknown operator \"%s\" (known: ==, !=, <, <=, >, >=)", where, op);
  p->op = (pred_op)k;
  if (!value) return kiln_error(KILN_INVALID_ARGUMENT, "%s: missing required key 'value'", where);
  if ((s = alloc_values(p, 1, where))) return s;
  snprintf(at, sizeof at, "%s.value", where);
  if ((s = read_value(p, value, at, 0))) return s;
  if (p->strings && p->op != OP_EQ && p->op != OP_NE)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s.op: strings compare only with == and !=, not %s", where, op);
  return NULL;
}

kiln_status kx_predicate_parse(const cJSON *obj, const char *where, kx_predicate **out) {
  *out = NULL;
  kx_predicate *p = calloc(1, sizeof *p);
  if (!p) return kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: out of memory", where);
  kiln_status s = parse(obj, where, p);
  if (s) {
    kx_predicate_free(p);
    return s;
  }
  *out = p;
  return NULL;
}

/* Numbers compare as doubles: exact for integers up to 2^53, which covers labels and counts. */
static int compare(pred_op op, double a, double b) {
  switch (op) {
  case OP_EQ: return a == b;
  case OP_NE: return a != b; /* NaN != anything, as in IEEE */
  case OP_LT: return a < b;
  case OP_LE: return a <= b;
  case OP_GT: return a > b;
  case OP_GE: return a >= b;
  }
  return 0;
}

kiln_status kx_predicate_eval(const kx_predicate *p, const kiln_record *r, int *keep) {
  *keep = 0;
  int i = kiln_record_find(r, p->feature);
  const kiln_tensor *v = i >= 0 ? &r->values[i] : NULL;
  if (p->kind == PRED_PRESENT) {
    *keep = (v && v->dtype != KILN_UNDEFINED) == p->present;
    return NULL;
  }
  char desc[96];
  if (!v) return kiln_error(KILN_INVALID_ARGUMENT, "%s: feature '%s' is not in the record", p->where, p->feature);
  if (v->dtype == KILN_UNDEFINED)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: feature '%s' is missing (null)", p->where, p->feature);
  if (kiln_tensor_numel(v) != 1)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: feature '%s': expected a scalar (one element), found %s", p->where,
                      p->feature, kiln_tensor_describe(v, desc, sizeof desc));
  int is_text = v->dtype == KILN_STRING;
  if (is_text != p->strings || v->dtype == KILN_COMPLEX64 || v->dtype == KILN_COMPLEX128)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: feature '%s' is %s but the predicate compares %s", p->where,
                      p->feature, kiln_tensor_describe(v, desc, sizeof desc), p->strings ? "strings" : "numbers");
  if (is_text) {
    const char *text = ((char *const *)v->data)[0];
    int found = 0;
    for (int k = 0; k < p->n && !found; k++) found = strcmp(text ? text : "", p->strs[k]) == 0;
    *keep = p->kind == PRED_IN ? found : p->op == OP_EQ ? found : !found;
    return NULL;
  }
  double x = kiln_tensor_get_f64(v, 0);
  if (p->kind == PRED_OP) {
    *keep = compare(p->op, x, p->nums[0]);
    return NULL;
  }
  for (int k = 0; k < p->n && !*keep; k++) *keep = x == p->nums[k];
  return NULL;
}
