/* The validation gate's golden check: recorded model inputs run through the new version and its
 * outputs compared with the recorded outputs, case by case. */
#include "kiln/onnx.h"
#include "registry/validate_internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CASES 10000
#define PATH_CHARS 4096

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void free_names(char **names, int n) {
  for (int i = 0; i < n; i++) free(names[i]);
  free(names);
}

/* The case folders of `dir` (sub-folders not starting with '.'), sorted by name. */
static kiln_status list_cases(const char *dir, char ***out, int *n_out) {
  *out = NULL;
  *n_out = 0;
  DIR *d = opendir(dir);
  if (!d) return kiln_error(errno == ENOENT ? KILN_NOT_FOUND : KILN_IO, "golden folder %s: %s", dir, strerror(errno));
  char **names = NULL, path[PATH_CHARS];
  int n = 0;
  kiln_status s = NULL;
  struct dirent *e;
  while (!s && (e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    int w = snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    if (w < 0 || (size_t)w >= sizeof path || !kx_is_dir(path)) continue;
    if (n == MAX_CASES) {
      s = kiln_error(KILN_RESOURCE_EXHAUSTED, "golden folder %s: more than %d cases", dir, MAX_CASES);
      break;
    }
    char **grown = realloc(names, (size_t)(n + 1) * sizeof *names);
    char *name = grown ? strdup(e->d_name) : NULL;
    if (grown) names = grown;
    if (!name) s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory listing %s", dir);
    else names[n++] = name;
  }
  closedir(d);
  if (s) {
    free_names(names, n);
    return s;
  }
  if (n) qsort(names, (size_t)n, sizeof *names, by_name);
  *out = names;
  *n_out = n;
  return NULL;
}

/* CASE/PREFIX_K.npy or CASE/PREFIX_K.pb into *v; *found = 0 (and no error) when neither exists. */
static kiln_status read_golden(const char *case_dir, const char *prefix, int k, const kiln_value_info *info, kiln_value *v,
                               int *found) {
  char path[PATH_CHARS];
  *found = 0;
  int w = snprintf(path, sizeof path, "%s/%s_%d.npy", case_dir, prefix, k);
  if (w < 0 || (size_t)w >= sizeof path) return kiln_error(KILN_INVALID_ARGUMENT, "golden path too long: %s", case_dir);
  if (kx_is_file(path)) {
    *found = 1;
    v->kind = KILN_VALUE_TENSOR;
    return kiln_npy_read(path, &v->tensor);
  }
  snprintf(path, sizeof path, "%s/%s_%d.pb", case_dir, prefix, k);
  if (!kx_is_file(path)) return NULL;
  *found = 1;
  kiln_proto_kind kind = info->optional                     ? KILN_PROTO_OPTIONAL
                         : info->kind == KILN_VALUE_SEQUENCE ? KILN_PROTO_SEQUENCE
                                                             : KILN_PROTO_TENSOR;
  return kiln_proto_value_read(path, kind, v);
}

/* What the case's run and comparison found. */
typedef struct case_result {
  char *message; /* NULL: the case passed */
  int output;    /* the first output that differs, -1 when the run itself failed */
  int64_t index; /* its first differing element, -1 when not one element (type, shape, sequence) */
  double got, expected;
} case_result;

/* Compares output k of one case; fills r for the first difference. */
static void compare_output(const kiln_model *m, int k, const kiln_value *got, const kiln_value *want, double rtol, double atol,
                           case_result *r) {
  kiln_status s = kiln_value_compare(got, want, rtol, atol);
  if (!s) return;
  r->output = k;
  r->index = -1;
  if (got->kind == KILN_VALUE_TENSOR && want->kind == KILN_VALUE_TENSOR) {
    r->index = kiln_tensor_first_mismatch(&got->tensor, &want->tensor, rtol, atol);
    if (r->index >= 0) {
      r->got = kiln_tensor_get_f64(&got->tensor, r->index);
      r->expected = kiln_tensor_get_f64(&want->tensor, r->index);
    }
  }
  char text[1024];
  if (r->index >= 0)
    snprintf(text, sizeof text, "output %d '%s': first difference at flat index %lld: got %.9g, expected %.9g (%s)", k,
             kiln_model_output(m, k)->name, (long long)r->index, r->got, r->expected, kiln_status_message(s));
  else snprintf(text, sizeof text, "output %d '%s': %s", k, kiln_model_output(m, k)->name, kiln_status_message(s));
  kiln_status_free(s);
  r->message = strdup(text);
  if (!r->message) r->message = strdup("differs");
}

/* One case: reads its files (an error: unreadable golden data), runs it and compares (a
 * difference or a failing run goes into r). */
static kiln_status run_case(const kiln_model *m, kiln_session *session, const char *case_dir, double rtol, double atol,
                            case_result *r) {
  int n_in = kiln_model_input_count(m), n_out = kiln_model_output_count(m), checked = 0;
  kiln_value *inputs = calloc((size_t)n_in + 1, sizeof *inputs), *expected = calloc((size_t)n_out + 1, sizeof *expected);
  int *have = calloc((size_t)n_out + 1, sizeof *have);
  const kiln_value **in_ptrs = calloc((size_t)n_in + 1, sizeof *in_ptrs), **outputs = calloc((size_t)n_out + 1, sizeof *outputs);
  kiln_status s = NULL;
  if (!inputs || !expected || !have || !in_ptrs || !outputs) s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  for (int i = 0; !s && i < n_in; i++) {
    const kiln_value_info *info = kiln_model_input(m, i);
    int found;
    s = read_golden(case_dir, "input", i, info, &inputs[i], &found);
    if (!s && found) in_ptrs[i] = &inputs[i];
    if (!s && !found && !info->optional)
      s = kiln_error(KILN_NOT_FOUND, "%s: no input_%d.npy or input_%d.pb for the model's input '%s'", case_dir, i, i,
                     info->name);
  }
  for (int k = 0; !s && k < n_out; k++) {
    s = read_golden(case_dir, "output", k, kiln_model_output(m, k), &expected[k], &have[k]);
    checked += have[k];
  }
  if (!s && !checked) s = kiln_error(KILN_NOT_FOUND, "%s: no output_K.npy or output_K.pb to compare with", case_dir);
  if (!s) {
    kiln_status run = kiln_session_run(session, in_ptrs, outputs);
    if (run) {
      char text[1024];
      snprintf(text, sizeof text, "the run failed: %s", kiln_status_message(run));
      kiln_status_free(run);
      r->output = -1;
      r->message = strdup(text);
      if (!r->message) s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    }
    for (int k = 0; !run && k < n_out && !r->message; k++)
      if (have[k]) compare_output(m, k, outputs[k], &expected[k], rtol, atol, r);
  }
  for (int i = 0; inputs && i < n_in; i++) kiln_value_release(&inputs[i]);
  for (int k = 0; expected && k < n_out; k++) kiln_value_release(&expected[k]);
  free(inputs);
  free(expected);
  free(have);
  free(in_ptrs);
  free(outputs);
  return s;
}

/* Adds {"case", "output", "index", "expected", "got", "message"} to the mismatches array. */
static int add_mismatch(cJSON *list, const kiln_model *m, const char *name, const case_result *r) {
  cJSON *o = cJSON_CreateObject();
  if (!o || !cJSON_AddItemToArray(list, o)) {
    cJSON_Delete(o);
    return -1;
  }
  int ok = cJSON_AddStringToObject(o, "case", name) != NULL;
  if (r->output >= 0) ok = ok && cJSON_AddStringToObject(o, "output", kiln_model_output(m, r->output)->name);
  if (r->index >= 0)
    ok = ok && cJSON_AddNumberToObject(o, "index", (double)r->index) && cJSON_AddNumberToObject(o, "expected", r->expected) &&
         cJSON_AddNumberToObject(o, "got", r->got);
  ok = ok && cJSON_AddStringToObject(o, "message", r->message);
  return ok ? 0 : -1;
}

kiln_status kx_validate_golden(const kiln_model *m, kiln_session *session, const char *dir, double rtol, double atol,
                               kx_check *c) {
  char **cases = NULL, case_dir[PATH_CHARS], probe[PATH_CHARS];
  int n_cases = 0;
  /* a folder holding input_0.* is a single case */
  int single = (snprintf(probe, sizeof probe, "%s/input_0.npy", dir), kx_is_file(probe)) ||
               (snprintf(probe, sizeof probe, "%s/input_0.pb", dir), kx_is_file(probe));
  kiln_status s = single ? NULL : list_cases(dir, &cases, &n_cases);
  if (s) return s;
  if (!single && n_cases == 0) return kiln_error(KILN_NOT_FOUND, "golden folder %s holds no cases (sub-folders with input_K/output_K files)", dir);
  int total = single ? 1 : n_cases, failed = 0;
  cJSON *mismatches = cJSON_AddArrayToObject(c->extra, "mismatches");
  if (!mismatches) s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  char first[1200] = "";
  for (int i = 0; !s && i < total; i++) {
    const char *name = single ? "." : cases[i];
    int w = single ? snprintf(case_dir, sizeof case_dir, "%s", dir) : snprintf(case_dir, sizeof case_dir, "%s/%s", dir, name);
    if (w < 0 || (size_t)w >= sizeof case_dir) {
      s = kiln_error(KILN_INVALID_ARGUMENT, "golden path too long: %s/%s", dir, name);
      break;
    }
    case_result r = {.output = -1, .index = -1};
    s = run_case(m, session, case_dir, rtol, atol, &r);
    if (!s && r.message) {
      if (!failed++) snprintf(first, sizeof first, "case '%s': %s", name, r.message);
      if (add_mismatch(mismatches, m, name, &r)) s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    }
    free(r.message);
  }
  free_names(cases, n_cases);
  if (s) return s;
  if (!cJSON_AddNumberToObject(c->extra, "cases", total) || !cJSON_AddNumberToObject(c->extra, "failed_cases", failed) ||
      !cJSON_AddNumberToObject(c->extra, "rtol", rtol) || !cJSON_AddNumberToObject(c->extra, "atol", atol))
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  if (failed) kx_check_set(c, KILN_CHECK_FAIL, "%d of %d cases differ; first: %s", failed, total, first);
  else kx_check_set(c, KILN_CHECK_PASS, "%d of %d cases match (rtol %g, atol %g)", total, total, rtol, atol);
  return NULL;
}
