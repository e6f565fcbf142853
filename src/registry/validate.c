/* The validation gate (`kiln validate`): runs the checks on a version folder in order and keeps
 * their outcome in a report that CI reads as JSON. The bigger checks live in validate_*.c. */
#include "kiln/data.h"
#include "registry/validate_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define PATH_CHARS 4096
/* Added to the baseline's p99 before the ratio test: timer and scheduler noise that a ratio of two
 * sub-millisecond latencies would magnify. */
#define LATENCY_SLACK_MS 0.05

struct kiln_gate_report {
  char *version_dir;
  kx_check *checks;
  int n, cap;
};

static const char *const check_order[] = {"load", "manifest", "signature", "golden", "accuracy", "latency", "baseline"};
#define N_CHECKS ((int)(sizeof check_order / sizeof check_order[0]))

void kx_check_set(kx_check *c, kiln_check_status status, const char *fmt, ...) {
  c->status = status;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *text = n >= 0 ? malloc((size_t)n + 1) : NULL;
  if (!text) return;
  va_start(ap, fmt);
  vsnprintf(text, (size_t)n + 1, fmt, ap);
  va_end(ap);
  free(c->detail);
  c->detail = text;
}

/* Appends every check as skipped with an empty detail; each step then fills its own. */
static kiln_status report_new(const char *version_dir, kiln_gate_report **out) {
  kiln_gate_report *r = calloc(1, sizeof *r);
  if (!r) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  r->version_dir = strdup(version_dir);
  r->checks = calloc(N_CHECKS, sizeof *r->checks);
  int ok = r->version_dir && r->checks;
  for (int i = 0; ok && i < N_CHECKS; i++) {
    r->checks[i] = (kx_check){.name = check_order[i], .status = KILN_CHECK_SKIPPED, .extra = cJSON_CreateObject()};
    ok = r->checks[i].extra != NULL;
    r->n = i + 1;
  }
  *out = r;
  return ok ? NULL : kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
}

static kx_check *check(kiln_gate_report *r, const char *name) {
  for (int i = 0; i < r->n; i++)
    if (strcmp(r->checks[i].name, name) == 0) return &r->checks[i];
  return NULL; /* not reached: every name is in check_order */
}

void kiln_gate_report_free(kiln_gate_report *r) {
  if (!r) return;
  for (int i = 0; i < r->n; i++) {
    free(r->checks[i].detail);
    cJSON_Delete(r->checks[i].extra);
  }
  free(r->checks);
  free(r->version_dir);
  free(r);
}

int kiln_gate_report_passed(const kiln_gate_report *r) {
  for (int i = 0; i < r->n; i++)
    if (r->checks[i].status == KILN_CHECK_FAIL) return 0;
  return 1;
}

int kiln_gate_report_count(const kiln_gate_report *r) { return r->n; }

void kiln_gate_report_check(const kiln_gate_report *r, int i, const char **name, kiln_check_status *status,
                                const char **detail) {
  *name = r->checks[i].name;
  *status = r->checks[i].status;
  *detail = r->checks[i].detail ? r->checks[i].detail : "";
}

const char *kiln_check_status_name(kiln_check_status s) {
  return s == KILN_CHECK_PASS ? "pass" : s == KILN_CHECK_FAIL ? "fail" : "skipped";
}

kiln_status kiln_gate_report_json(const kiln_gate_report *r, const char *error, char **out, size_t *len) {
  *out = NULL;
  *len = 0;
  cJSON *root = cJSON_CreateObject(), *checks = NULL;
  int ok = root && (r ? cJSON_AddStringToObject(root, "version_dir", r->version_dir) : cJSON_AddNullToObject(root, "version_dir")) &&
           cJSON_AddBoolToObject(root, "passed", !error && r && kiln_gate_report_passed(r)) &&
           (!error || cJSON_AddStringToObject(root, "error", error)) && (checks = cJSON_AddArrayToObject(root, "checks"));
  for (int i = 0; ok && r && i < r->n; i++) {
    const kx_check *c = &r->checks[i];
    cJSON *o = cJSON_CreateObject();
    ok = o && cJSON_AddItemToArray(checks, o);
    if (!ok) {
      cJSON_Delete(o);
      break;
    }
    ok = cJSON_AddStringToObject(o, "name", c->name) && cJSON_AddStringToObject(o, "status", kiln_check_status_name(c->status)) &&
         cJSON_AddStringToObject(o, "detail", c->detail ? c->detail : "");
    for (const cJSON *e = c->extra ? c->extra->child : NULL; ok && e; e = e->next) {
      cJSON *copy = cJSON_Duplicate(e, 1);
      ok = copy && cJSON_AddItemToObject(o, e->string, copy);
      if (!ok) cJSON_Delete(copy);
    }
  }
  ok = ok && cJSON_AddStringToObject(root, "kiln_version", kiln_version());
  char *text = ok ? cJSON_Print(root) : NULL;
  cJSON_Delete(root);
  if (!text) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory writing the validation report");
  *out = text;
  *len = strlen(text);
  return NULL;
}

/* ---------------------------------------------------------------- the run */

/* What the checks share. */
typedef struct gate {
  const kiln_gate_options *opt;
  kiln_gate_report *r;
  kiln_model *model, *base_model;
  kiln_session *session;
  int oom; /* a number could not be added to a check's extra */
} gate;

static void put_number(gate *g, kx_check *c, const char *key, double v) {
  if (!cJSON_AddNumberToObject(c->extra, key, v)) g->oom = 1;
}

static void put_string(gate *g, kx_check *c, const char *key, const char *v) {
  if (!cJSON_AddStringToObject(c->extra, key, v)) g->oom = 1;
}

int kx_is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int kx_is_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* dir/name into buf (PATH_CHARS); -1 when it does not fit. */
static int join(char *buf, const char *dir, const char *name) {
  int n = snprintf(buf, PATH_CHARS, "%s/%s", dir, name);
  return n < 0 || n >= PATH_CHARS ? -1 : 0;
}

static kiln_status join_status(char *buf, const char *dir, const char *name) {
  return join(buf, dir, name) ? kiln_error(KILN_INVALID_ARGUMENT, "path too long: %s/%s", dir, name) : NULL;
}

/* load: model.onnx (every operator supported), a session for it, and preprocess.json when present. */
static void check_load(gate *g) {
  kx_check *c = check(g->r, "load");
  char path[PATH_CHARS];
  kiln_preprocess *pre = NULL;
  kiln_status s = join_status(path, g->opt->version_dir, "model.onnx");
  if (!s) s = kiln_model_load(path, NULL, &g->model);
  kiln_session_options so = {0};
  if (!s) s = kiln_session_create(g->model, &so, &g->session);
  if (!s) s = kiln_preprocess_load(g->opt->version_dir, &pre);
  if (s) {
    kx_check_set(c, KILN_CHECK_FAIL, "%s", kiln_status_message(s));
    kiln_status_free(s);
    return;
  }
  int n_in = kiln_model_input_count(g->model), n_out = kiln_model_output_count(g->model);
  put_number(g, c, "inputs", n_in);
  put_number(g, c, "outputs", n_out);
  kx_check_set(c, KILN_CHECK_PASS, "model.onnx: %d input%s, %d output%s%s", n_in, n_in == 1 ? "" : "s", n_out,
               n_out == 1 ? "" : "s", pre ? "; preprocess.json loaded" : "");
  kiln_preprocess_free(pre);
}

static void check_manifest(gate *g) {
  kx_check *c = check(g->r, "manifest");
  char path[PATH_CHARS];
  kiln_status s = join_status(path, g->opt->version_dir, "manifest.json");
  if (!s && !kx_is_file(path)) {
    kx_check_set(c, KILN_CHECK_SKIPPED, "no manifest.json");
    return;
  }
  if (!s) s = kiln_manifest_verify(g->opt->version_dir);
  if (s) kx_check_set(c, KILN_CHECK_FAIL, "%s", kiln_status_message(s));
  else kx_check_set(c, KILN_CHECK_PASS, "every file matches manifest.json");
  kiln_status_free(s);
}

/* The highest-numbered version folder beside `dir` below its own number; -1 when there is none or
 * when dir's name is not a version number. prev_dir receives its path. */
static int64_t previous_version(const char *dir, char *prev_dir) {
  char parent[PATH_CHARS];
  int n = snprintf(parent, sizeof parent, "%s", dir);
  if (n < 0 || n >= PATH_CHARS) return -1;
  while (n > 1 && parent[n - 1] == '/') parent[--n] = 0; /* "models/m/3/" */
  char *slash = strrchr(parent, '/');
  const char *base = slash ? slash + 1 : parent;
  int64_t self, best = -1, *versions;
  if (!kiln_version_folder(base, &self)) return -1;
  if (slash == parent) snprintf(parent, sizeof parent, "/");
  else if (slash) *slash = 0;
  else snprintf(parent, sizeof parent, ".");
  int count;
  kiln_status s = kiln_registry_versions(parent, &versions, &count); /* ascending */
  if (s) {
    kiln_status_free(s);
    return -1;
  }
  for (int i = 0; i < count && versions[i] < self; i++) best = versions[i];
  free(versions);
  char name[24];
  snprintf(name, sizeof name, "%lld", (long long)best);
  if (best >= 0 && join(prev_dir, parent, name)) return -1; /* a path too long to name: as if there were none */
  return best;
}

/* Adds a summary of a list of lines to buf: the first, and how many more. */
static void first_of(const cJSON *lines, char *buf, size_t size) {
  int n = cJSON_GetArraySize(lines);
  const cJSON *first = cJSON_GetArrayItem(lines, 0);
  if (n == 0 || !cJSON_IsString(first)) snprintf(buf, size, "none");
  else if (n == 1) snprintf(buf, size, "%s", first->valuestring);
  else snprintf(buf, size, "%s (and %d more)", first->valuestring, n - 1);
}

static void check_signature(gate *g) {
  kx_check *c = check(g->r, "signature");
  char prev_dir[PATH_CHARS], what[PATH_CHARS + 64];
  kiln_model *prev = NULL;
  const kiln_model *against = g->base_model;
  if (against) {
    snprintf(what, sizeof what, "baseline %s", g->opt->baseline_dir);
    put_string(g, c, "against", g->opt->baseline_dir);
  } else {
    int64_t v = previous_version(g->opt->version_dir, prev_dir);
    if (v < 0) {
      kx_check_set(c, KILN_CHECK_SKIPPED, "no previous version to compare with (and no baseline)");
      return;
    }
    snprintf(what, sizeof what, "previous version %lld", (long long)v);
    put_string(g, c, "against", prev_dir);
    put_number(g, c, "previous_version", (double)v);
    char path[PATH_CHARS];
    kiln_load_options lo = {.allow_unsupported = 1}; /* only its declared types matter */
    kiln_status s = join_status(path, prev_dir, "model.onnx");
    if (!s) s = kiln_model_load(path, &lo, &prev);
    if (s) {
      kx_check_set(c, KILN_CHECK_FAIL, "%s does not load (name a --baseline to compare with instead): %s", what,
                   kiln_status_message(s));
      kiln_status_free(s);
      return;
    }
    against = prev;
  }
  kx_signature_diff d = {0};
  kiln_status s = kx_validate_signature(against, g->model, &d);
  kiln_model_free(prev);
  if (s) {
    kx_check_set(c, KILN_CHECK_FAIL, "%s", kiln_status_message(s));
    kiln_status_free(s);
    return;
  }
  char line[1024], notes[1024];
  first_of(d.breaking, line, sizeof line);
  first_of(d.notes, notes, sizeof notes);
  if (cJSON_GetArraySize(d.breaking) > 0) kx_check_set(c, KILN_CHECK_FAIL, "breaking change against %s: %s", what, line);
  else if (cJSON_GetArraySize(d.notes) > 0) kx_check_set(c, KILN_CHECK_PASS, "compatible with %s; note: %s", what, notes);
  else kx_check_set(c, KILN_CHECK_PASS, "same signature as %s", what);
  if (!cJSON_AddItemToObject(c->extra, "breaking", d.breaking)) {
    cJSON_Delete(d.breaking);
    g->oom = 1;
  }
  if (!cJSON_AddItemToObject(c->extra, "notes", d.notes)) {
    cJSON_Delete(d.notes);
    g->oom = 1;
  }
}

/* The accuracy of one folder through the caller's function; 0 on success. */
static int accuracy_of(gate *g, const char *dir, double *accuracy, int64_t *records, char *err, size_t size) {
  kiln_status s = g->opt->accuracy(g->opt->accuracy_ctx, dir, accuracy, records);
  if (!s) return 0;
  snprintf(err, size, "%s", kiln_status_message(s));
  kiln_status_free(s);
  return -1;
}

static void check_accuracy(gate *g, int *have, double *accuracy) {
  kx_check *c = check(g->r, "accuracy");
  const kiln_gate_options *o = g->opt;
  char err[1024];
  int64_t records = 0;
  if (!o->accuracy) {
    kx_check_set(c, KILN_CHECK_SKIPPED, "no evaluation data");
    return;
  }
  if (accuracy_of(g, o->version_dir, accuracy, &records, err, sizeof err)) {
    kx_check_set(c, KILN_CHECK_FAIL, "evaluation failed: %s", err);
    return;
  }
  *have = 1;
  put_number(g, c, "accuracy", *accuracy);
  put_number(g, c, "records", (double)records);
  if (o->min_accuracy >= 0) put_number(g, c, "min_accuracy", o->min_accuracy);
  if (o->min_accuracy >= 0 && *accuracy < o->min_accuracy)
    kx_check_set(c, KILN_CHECK_FAIL, "accuracy %.4f < minimum %.4f (%lld records)", *accuracy, o->min_accuracy, (long long)records);
  else if (o->min_accuracy >= 0)
    kx_check_set(c, KILN_CHECK_PASS, "accuracy %.4f >= minimum %.4f (%lld records)", *accuracy, o->min_accuracy, (long long)records);
  else kx_check_set(c, KILN_CHECK_PASS, "accuracy %.4f (%lld records; no minimum)", *accuracy, (long long)records);
}

/* latency, and the baseline's when there is one (measured together); lat[1] is the baseline's. */
static void check_latency(gate *g, int *have, kx_latency lat[2]) {
  kx_check *c = check(g->r, "latency");
  const kiln_gate_options *o = g->opt;
  if (o->latency_runs <= 0) {
    kx_check_set(c, KILN_CHECK_SKIPPED, "no latency runs asked for");
    return;
  }
  const kiln_model *models[2] = {g->model, g->base_model};
  const char *names[2] = {o->version_dir, o->baseline_dir};
  int threads = o->threads > 1 ? o->threads : 1;
  kiln_status s = kx_validate_latency(models, names, g->base_model ? 2 : 1, o->latency_runs, threads, lat);
  if (s) {
    kx_check_set(c, KILN_CHECK_FAIL, "%s", kiln_status_message(s));
    kiln_status_free(s);
    return;
  }
  *have = 1;
  put_number(g, c, "p50_ms", lat[0].p50_ms);
  put_number(g, c, "p99_ms", lat[0].p99_ms);
  put_number(g, c, "mean_ms", lat[0].mean_ms);
  put_number(g, c, "runs", lat[0].runs);
  put_number(g, c, "threads", threads);
  if (o->max_latency_p99_ms > 0) put_number(g, c, "max_p99_ms", o->max_latency_p99_ms);
  if (o->max_latency_p99_ms > 0 && lat[0].p99_ms > o->max_latency_p99_ms)
    kx_check_set(c, KILN_CHECK_FAIL, "p99 %.3g ms > budget %g ms (p50 %.3g ms, %d batch-1 runs)", lat[0].p99_ms,
                 o->max_latency_p99_ms, lat[0].p50_ms, lat[0].runs);
  else if (o->max_latency_p99_ms > 0)
    kx_check_set(c, KILN_CHECK_PASS, "p99 %.3g ms <= budget %g ms (p50 %.3g ms, %d batch-1 runs)", lat[0].p99_ms,
                 o->max_latency_p99_ms, lat[0].p50_ms, lat[0].runs);
  else
    kx_check_set(c, KILN_CHECK_PASS, "p99 %.3g ms, p50 %.3g ms (%d batch-1 runs; no budget)", lat[0].p99_ms, lat[0].p50_ms,
                 lat[0].runs);
}

static void check_baseline(gate *g, int have_accuracy, double accuracy, int have_latency, const kx_latency lat[2]) {
  kx_check *c = check(g->r, "baseline");
  const kiln_gate_options *o = g->opt;
  if (!o->baseline_dir) {
    kx_check_set(c, KILN_CHECK_SKIPPED, "no baseline");
    return;
  }
  double z = o->max_regression;
  char acc_text[1200] = "", lat_text[300] = "", err[1024];
  int failed = 0;
  put_string(g, c, "baseline_dir", o->baseline_dir);
  put_number(g, c, "max_regression", z);
  if (have_accuracy) {
    double base;
    int64_t records;
    if (accuracy_of(g, o->baseline_dir, &base, &records, err, sizeof err)) {
      failed = 1;
      snprintf(acc_text, sizeof acc_text, "the baseline's evaluation failed: %s", err);
    } else {
      double floor = base * (1 - z);
      failed |= accuracy < floor;
      put_number(g, c, "baseline_accuracy", base);
      put_number(g, c, "accuracy_floor", floor);
      snprintf(acc_text, sizeof acc_text, "accuracy %.4f %s baseline %.4f * (1 - %g) = %.4f", accuracy, accuracy < floor ? "<" : ">=",
               base, z, floor);
    }
  }
  if (have_latency) {
    double ceiling = lat[1].p99_ms * (1 + z) + LATENCY_SLACK_MS;
    failed |= lat[0].p99_ms > ceiling;
    put_number(g, c, "p99_ms", lat[0].p99_ms);
    put_number(g, c, "baseline_p99_ms", lat[1].p99_ms);
    put_number(g, c, "baseline_p50_ms", lat[1].p50_ms);
    put_number(g, c, "p99_ceiling_ms", ceiling);
    snprintf(lat_text, sizeof lat_text, "p99 %.3g ms %s baseline %.3g ms * (1 + %g) + %g ms = %.3g ms", lat[0].p99_ms,
             lat[0].p99_ms > ceiling ? ">" : "<=", lat[1].p99_ms, z, LATENCY_SLACK_MS, ceiling);
  }
  if (!have_accuracy && !have_latency)
    kx_check_set(c, KILN_CHECK_SKIPPED, "nothing to compare: no accuracy and no latency measured");
  else
    kx_check_set(c, failed ? KILN_CHECK_FAIL : KILN_CHECK_PASS, "%s%s%s", acc_text, *acc_text && *lat_text ? "; " : "", lat_text);
}

static kiln_status check_options(const kiln_gate_options *o) {
  if (!o->version_dir) return kiln_error(KILN_INVALID_ARGUMENT, "no version folder given");
  if (!kx_is_dir(o->version_dir)) return kiln_error(KILN_NOT_FOUND, "%s: not a folder (expected a version folder holding model.onnx)", o->version_dir);
  if (o->baseline_dir && !kx_is_dir(o->baseline_dir))
    return kiln_error(KILN_NOT_FOUND, "baseline %s: not a folder (expected a version folder holding model.onnx)", o->baseline_dir);
  if (o->golden_dir && !kx_is_dir(o->golden_dir)) return kiln_error(KILN_NOT_FOUND, "golden folder %s: not a folder", o->golden_dir);
  if (!(o->rtol >= 0) || !(o->atol >= 0)) return kiln_error(KILN_INVALID_ARGUMENT, "rtol and atol must be >= 0");
  if (!(o->max_regression >= 0 && o->max_regression < 1))
    return kiln_error(KILN_INVALID_ARGUMENT, "the maximum regression must be a fraction in [0, 1), not %g", o->max_regression);
  if (isnan(o->min_accuracy) || o->min_accuracy > 1)
    return kiln_error(KILN_INVALID_ARGUMENT, "the minimum accuracy must be in [0, 1], not %g", o->min_accuracy);
  if (isnan(o->max_latency_p99_ms)) return kiln_error(KILN_INVALID_ARGUMENT, "the p99 latency budget is not a number");
  if (o->max_latency_p99_ms > 0 && o->latency_runs <= 0)
    return kiln_error(KILN_INVALID_ARGUMENT, "a p99 latency budget needs latency runs");
  if (o->min_accuracy >= 0 && !o->accuracy) return kiln_error(KILN_INVALID_ARGUMENT, "a minimum accuracy needs evaluation data");
  return NULL;
}

kiln_status kiln_gate_run(const kiln_gate_options *opt, kiln_gate_report **report) {
  *report = NULL;
  kiln_status s = report_new(opt->version_dir ? opt->version_dir : "", report);
  if (!s) s = check_options(opt);
  for (int i = 0; s && *report && i < (*report)->n; i++)
    kx_check_set(&(*report)->checks[i], KILN_CHECK_SKIPPED, "not run: the gate stopped on an error");
  if (s) return s;
  gate g = {.opt = opt, .r = *report};
  check_load(&g);
  check_manifest(&g);
  char path[PATH_CHARS];
  if (g.model && opt->baseline_dir) { /* the gate's own input: an error, not a failed check */
    s = join_status(path, opt->baseline_dir, "model.onnx");
    if (!s) s = kiln_model_load(path, NULL, &g.base_model);
    if (s) s = kiln_status_prefix(s, "baseline: ");
  }
  if (!s && g.model) {
    check_signature(&g);
    if (opt->golden_dir) s = kx_validate_golden(g.model, g.session, opt->golden_dir, opt->rtol, opt->atol, check(g.r, "golden"));
    else kx_check_set(check(g.r, "golden"), KILN_CHECK_SKIPPED, "no golden folder");
  }
  if (!s && g.model) {
    int have_accuracy = 0, have_latency = 0;
    double accuracy = 0;
    kx_latency lat[2] = {{0}};
    check_accuracy(&g, &have_accuracy, &accuracy);
    check_latency(&g, &have_latency, lat);
    check_baseline(&g, have_accuracy, accuracy, have_latency, lat);
  }
  if (!g.model)
    for (int i = 2; i < g.r->n; i++) kx_check_set(&g.r->checks[i], KILN_CHECK_SKIPPED, "not run: the model did not load");
  if (!s && g.oom) s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory building the validation report");
  for (int i = 0; s && i < g.r->n; i++)
    if (!g.r->checks[i].detail) kx_check_set(&g.r->checks[i], KILN_CHECK_SKIPPED, "not run: the gate stopped on an error");
  kiln_session_free(g.session);
  kiln_model_free(g.model);
  kiln_model_free(g.base_model);
  return s;
}
