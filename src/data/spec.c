/* Reading the pipeline's JSON description: typed members with errors that name the key. */
#include "data/data.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

kiln_status kx_spec_keys(const cJSON *obj, const char *where, const char *const *allowed) {
  if (!cJSON_IsObject(obj)) return kiln_error(KILN_INVALID_ARGUMENT, "%s: expected a JSON object", where);
  for (const cJSON *m = obj->child; m; m = m->next) {
    const char *const *a = allowed;
    while (*a && strcmp(*a, m->string) != 0) a++;
    if (!*a) {
      char known[512] = "";
      size_t used = 0;
      for (a = allowed; *a && used < sizeof known; a++)
        used += (size_t)snprintf(known + used, sizeof known - used, "%s%s", a == allowed ? "" : ", ", *a);
      return kiln_error(KILN_INVALID_ARGUMENT, "%s: unknown key '%s' (known: %s)", where, m->string, known);
    }
  }
  return NULL;
}

/* The member, NULL when absent; an error when absent and required. */
static kiln_status member(const cJSON *obj, const char *where, const char *key, int required, const cJSON **out) {
  *out = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!*out && required) return kiln_error(KILN_INVALID_ARGUMENT, "%s: missing required key '%s'", where, key);
  return NULL;
}

kiln_status kx_spec_string(const cJSON *obj, const char *where, const char *key, int required, const char **out) {
  const cJSON *m;
  kiln_status s = member(obj, where, key, required, &m);
  if (s || !m) return s;
  if (!cJSON_IsString(m)) return kiln_error(KILN_INVALID_ARGUMENT, "%s.%s: expected a string", where, key);
  *out = m->valuestring;
  return NULL;
}

kiln_status kx_spec_int(const cJSON *obj, const char *where, const char *key, int required, int64_t min,
                        int64_t max, int64_t *out) {
  const cJSON *m;
  kiln_status s = member(obj, where, key, required, &m);
  if (s || !m) return s;
  double v = m->valuedouble;
  if (!cJSON_IsNumber(m) || v != floor(v))
    return kiln_error(KILN_INVALID_ARGUMENT, "%s.%s: expected an integer", where, key);
  if (v < (double)min || v > (double)max)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s.%s: %.17g is outside %lld..%lld", where, key, v, (long long)min,
                      (long long)max);
  *out = (int64_t)v;
  return NULL;
}

kiln_status kx_spec_double(const cJSON *obj, const char *where, const char *key, int required, double *out) {
  const cJSON *m;
  kiln_status s = member(obj, where, key, required, &m);
  if (s || !m) return s;
  if (!cJSON_IsNumber(m)) return kiln_error(KILN_INVALID_ARGUMENT, "%s.%s: expected a number", where, key);
  *out = m->valuedouble;
  return NULL;
}

kiln_status kx_spec_bool(const cJSON *obj, const char *where, const char *key, int *out) {
  const cJSON *m = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!m) return NULL;
  if (!cJSON_IsBool(m)) return kiln_error(KILN_INVALID_ARGUMENT, "%s.%s: expected true or false", where, key);
  *out = cJSON_IsTrue(m);
  return NULL;
}

kiln_status kx_spec_doubles(const cJSON *obj, const char *where, const char *key, int required, double *out,
                            int max, int *n) {
  const cJSON *m;
  kiln_status s = member(obj, where, key, required, &m);
  if (s || !m) return s;
  if (cJSON_IsNumber(m)) {
    if (max < 1) return kiln_error(KILN_INVALID_ARGUMENT, "%s.%s: too many values", where, key);
    out[0] = m->valuedouble;
    *n = 1;
    return NULL;
  }
  if (!cJSON_IsArray(m)) return kiln_error(KILN_INVALID_ARGUMENT, "%s.%s: expected a number or a list of numbers", where, key);
  int count = 0;
  for (const cJSON *e = m->child; e; e = e->next, count++) {
    if (!cJSON_IsNumber(e)) return kiln_error(KILN_INVALID_ARGUMENT, "%s.%s[%d]: expected a number", where, key, count);
    if (count == max) return kiln_error(KILN_INVALID_ARGUMENT, "%s.%s: more than %d values", where, key, max);
    out[count] = e->valuedouble;
  }
  *n = count;
  return NULL;
}

const cJSON *kx_spec_shorthand(const cJSON *args, const char *key, cJSON **tmp) {
  *tmp = NULL;
  if (!cJSON_IsNumber(args)) return args;
  *tmp = cJSON_CreateObject();
  if (*tmp) cJSON_AddNumberToObject(*tmp, key, args->valuedouble);
  return *tmp;
}
