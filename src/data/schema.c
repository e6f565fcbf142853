/* The schema: inferred from statistics, read from and written to its JSON file (strictly: users
 * edit it), and checked against records one at a time (the server) or over a dataset (validate). */
#include "data/data.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"

#define MAX_FEATURES 1000000
#define MAX_DOMAIN 1000000
#define MAX_BINS 100000
#define MAX_DIM (INT64_C(1) << 40)
#define MAX_SCHEMA_BYTES ((size_t)256 << 20)
#define EXAMPLES 5
/* Unexpected feature names a validation tells apart; further ones share the last entry. */
#define MAX_UNEXPECTED 1000

const char *kiln_anomaly_kind_name(kiln_anomaly_kind kind) {
  static const char *const names[KILN_ANOMALY_KINDS] = {"missing_feature", "unexpected_feature", "wrong_type",
                                                         "shape_mismatch",  "out_of_range",       "new_category",
                                                         "nan"};
  return (unsigned)kind < KILN_ANOMALY_KINDS ? names[kind] : "unknown";
}

/* ---------------------------------------------------------------- the schema object */

static void feature_init(kiln_schema_feature *f) {
  memset(f, 0, sizeof *f);
  f->rank = -1;
  f->max_missing_rate = 1;
  f->min = f->max = NAN;
  f->allow_nan = 1;
  f->domain_count = -1;
  f->mean = f->std = f->stats_min = f->stats_max = NAN;
}

static void feature_release(kiln_schema_feature *f) {
  free(f->name);
  for (int i = 0; i < f->domain_count; i++) free(f->domain[i]);
  free(f->domain);
  free(f->edges);
  free(f->counts);
}

void kiln_schema_free(kiln_schema *s) {
  if (!s) return;
  for (int i = 0; i < s->count; i++) feature_release(&s->features[i]);
  free(s->features);
  free(s->by_name);
  free(s);
}

static int cmp_string(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

typedef struct named {
  const char *name;
  int index;
} named;

static int cmp_named(const void *a, const void *b) { return strcmp(((const named *)a)->name, ((const named *)b)->name); }

/* Sorts feature indices by name; a repeated name is an error. */
static kiln_status index_names(kiln_schema *s, const char *where) {
  s->by_name = malloc(((size_t)s->count + 1) * sizeof *s->by_name);
  named *n = malloc(((size_t)s->count + 1) * sizeof *n);
  if (!s->by_name || !n) {
    free(n);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory indexing the schema");
  }
  for (int i = 0; i < s->count; i++) n[i] = (named){s->features[i].name, i};
  qsort(n, (size_t)s->count, sizeof *n, cmp_named);
  kiln_status e = NULL;
  for (int i = 0; i < s->count; i++) {
    s->by_name[i] = n[i].index;
    if (!e && i && strcmp(n[i].name, n[i - 1].name) == 0)
      e = kiln_error(KILN_INVALID_ARGUMENT, "%s: feature '%s' is listed twice", where, n[i].name);
  }
  free(n);
  return e;
}

int kiln_schema_find(const kiln_schema *s, const char *name) {
  int lo = 0, hi = s->count - 1;
  while (lo <= hi) {
    int mid = lo + (hi - lo) / 2;
    int c = strcmp(s->features[s->by_name[mid]].name, name);
    if (c == 0) return s->by_name[mid];
    if (c < 0) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

/* ---------------------------------------------------------------- from statistics */

kiln_status kiln_schema_from_stats(const kiln_stats *st, kiln_schema **out) {
  *out = NULL;
  kiln_schema *s = calloc(1, sizeof *s);
  if (s) s->features = calloc((size_t)st->count + 1, sizeof *s->features);
  if (!s || !s->features) {
    free(s);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory making a schema");
  }
  s->num_records = st->num_records;
  kiln_status e = NULL;
  for (int i = 0; i < st->count && !e; i++) {
    const kiln_feature_stats *fs = &st->features[i];
    kiln_schema_feature *f = &s->features[s->count++];
    feature_init(f);
    f->name = strdup(fs->name);
    if (!f->name) {
      e = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory making a schema");
      break;
    }
    f->dtype = fs->dtype;
    f->rank = fs->rank;
    memcpy(f->dims, fs->dims, sizeof f->dims);
    f->missing_rate = st->num_records ? (double)fs->missing / (double)st->num_records : 0;
    /* Rounded up to a whole percent: a sample's rate is a little noisy, and a complete column
     * (rate 0) stays required. The 1e-9 keeps 0.07 (computed as 0.0700000001) at 0.07. */
    f->max_missing_rate = ceil(f->missing_rate * 100 - 1e-9) / 100;
    if (f->max_missing_rate < f->missing_rate) f->max_missing_rate = f->missing_rate;
    if (f->max_missing_rate > 1) f->max_missing_rate = 1;
    if (!(f->max_missing_rate > 0)) f->max_missing_rate = 0; /* not -0 */
    if (fs->numeric && fs->count > 0) {
      f->min = fs->min;
      f->max = fs->max;
    }
    if (fs->numeric) f->allow_nan = fs->nan > 0;
    if (fs->dtype == KILN_STRING && fs->categorical && !fs->too_many) {
      f->domain = calloc((size_t)fs->distinct + 1, sizeof *f->domain);
      if (!f->domain) {
        e = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory making a schema");
        break;
      }
      f->domain_count = 0;
      for (int k = 0; k < fs->distinct && !e; k++) {
        f->domain[k] = strdup(fs->values[k].value);
        if (!f->domain[k]) e = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory making a schema");
        else f->domain_count++;
      }
      qsort(f->domain, (size_t)f->domain_count, sizeof *f->domain, cmp_string);
    }
    if (fs->numeric) {
      f->has_stats = 1;
      f->mean = fs->mean;
      f->std = fs->std;
      f->stats_min = fs->min;
      f->stats_max = fs->max;
      if (fs->edges && fs->counts) {
        f->edges = malloc(((size_t)fs->bins + 1) * sizeof *f->edges);
        f->counts = malloc((size_t)fs->bins * sizeof *f->counts);
        if (!f->edges || !f->counts) {
          e = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory making a schema");
          break;
        }
        f->bins = fs->bins;
        memcpy(f->edges, fs->edges, ((size_t)fs->bins + 1) * sizeof *f->edges);
        memcpy(f->counts, fs->counts, (size_t)fs->bins * sizeof *f->counts);
      }
    }
  }
  if (!e) e = index_names(s, "schema");
  if (e) {
    kiln_schema_free(s);
    return e;
  }
  *out = s;
  return NULL;
}

/* ---------------------------------------------------------------- JSON out */

static void put_number(kx_buf *b, double v) {
  if (isfinite(v)) kx_buf_json_double(b, v);
  else kx_buf_puts(b, "null");
}

char *kiln_schema_to_json(const kiln_schema *s) {
  kx_buf b = {0};
  kx_buf_printf(&b, "{\n  \"kiln_schema\": 1,\n  \"num_records\": %lld,\n  \"features\": [", (long long)s->num_records);
  for (int i = 0; i < s->count; i++) {
    const kiln_schema_feature *f = &s->features[i];
    kx_buf_puts(&b, i ? ",\n    {\n      \"name\": " : "\n    {\n      \"name\": ");
    kx_buf_json_string(&b, f->name);
    if (f->dtype == KILN_UNDEFINED) kx_buf_puts(&b, ",\n      \"dtype\": null");
    else kx_buf_printf(&b, ",\n      \"dtype\": \"%s\"", kiln_dtype_name(f->dtype));
    kx_buf_puts(&b, ",\n      \"shape\": ");
    kx_stats_put_shape(&b, f->rank, f->dims);
    kx_buf_puts(&b, ",\n      \"missing_rate\": ");
    put_number(&b, f->missing_rate);
    kx_buf_puts(&b, ",\n      \"max_missing_rate\": ");
    put_number(&b, f->max_missing_rate);
    if (kx_dtype_is_numeric(f->dtype) || f->dtype == KILN_UNDEFINED) {
      kx_buf_puts(&b, ",\n      \"min\": ");
      put_number(&b, f->min);
      kx_buf_puts(&b, ",\n      \"max\": ");
      put_number(&b, f->max);
    }
    if (kiln_dtype_is_float(f->dtype)) kx_buf_printf(&b, ",\n      \"allow_nan\": %s", f->allow_nan ? "true" : "false");
    if (f->domain_count >= 0) {
      kx_buf_puts(&b, ",\n      \"domain\": [");
      for (int k = 0; k < f->domain_count; k++) {
        if (k) kx_buf_puts(&b, ", ");
        kx_buf_json_string(&b, f->domain[k]);
      }
      kx_buf_putc(&b, ']');
    }
    if (f->has_stats) {
      kx_buf_puts(&b, ",\n      \"stats\": {\"mean\": ");
      put_number(&b, f->mean);
      kx_buf_puts(&b, ", \"std\": ");
      put_number(&b, f->std);
      kx_buf_puts(&b, ", \"min\": ");
      put_number(&b, f->stats_min);
      kx_buf_puts(&b, ", \"max\": ");
      put_number(&b, f->stats_max);
      if (f->bins > 0) {
        kx_buf_puts(&b, ", \"histogram\": {\"edges\": [");
        for (int k = 0; k <= f->bins; k++) {
          if (k) kx_buf_puts(&b, ", ");
          put_number(&b, f->edges[k]);
        }
        kx_buf_puts(&b, "], \"counts\": [");
        for (int k = 0; k < f->bins; k++) kx_buf_printf(&b, "%s%lld", k ? ", " : "", (long long)f->counts[k]);
        kx_buf_puts(&b, "]}");
      }
      kx_buf_putc(&b, '}');
    }
    kx_buf_puts(&b, "\n    }");
  }
  kx_buf_puts(&b, s->count ? "\n  ]\n}\n" : "]\n}\n");
  return kx_buf_take(&b, NULL);
}

/* ---------------------------------------------------------------- JSON in */

/* Unknown keys are refused, and so are repeated ones (cJSON keeps both, and which one a reader
 * then sees is an accident). */
static kiln_status check_keys(const cJSON *obj, const char *where, const char *const *allowed) {
  kiln_status e = kx_spec_keys(obj, where, allowed);
  if (e) return e;
  for (const cJSON *m = obj->child; m; m = m->next)
    for (const cJSON *p = obj->child; p != m; p = p->next)
      if (strcmp(p->string, m->string) == 0)
        return kiln_error(KILN_INVALID_ARGUMENT, "%s: key '%s' appears twice", where, m->string);
  return NULL;
}

/* A finite number, or NaN for null / absent. */
static kiln_status get_number(const cJSON *obj, const char *where, const char *key, double *out) {
  const cJSON *m = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!m || cJSON_IsNull(m)) return NULL;
  if (!cJSON_IsNumber(m) || !isfinite(m->valuedouble))
    return kiln_error(KILN_INVALID_ARGUMENT, "%s.%s: expected a number or null", where, key);
  *out = m->valuedouble;
  return NULL;
}

static kiln_status get_rate(const cJSON *obj, const char *where, const char *key, double *out) {
  const cJSON *m = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!m) return NULL;
  if (!cJSON_IsNumber(m) || !(m->valuedouble >= 0 && m->valuedouble <= 1))
    return kiln_error(KILN_INVALID_ARGUMENT, "%s.%s: expected a number in [0, 1]", where, key);
  *out = m->valuedouble;
  return NULL;
}

static int count_items(const cJSON *a) {
  int n = 0;
  for (const cJSON *e = a->child; e && n < INT32_MAX; e = e->next) n++;
  return n;
}

static kiln_status parse_shape(const cJSON *m, const char *where, kiln_schema_feature *f) {
  if (!m || cJSON_IsNull(m)) return NULL;
  if (!cJSON_IsArray(m)) return kiln_error(KILN_INVALID_ARGUMENT, "%s.shape: expected a list of sizes or null", where);
  int rank = 0;
  for (const cJSON *d = m->child; d; d = d->next, rank++) {
    if (rank == KILN_MAX_RANK)
      return kiln_error(KILN_INVALID_ARGUMENT, "%s.shape: more than %d dimensions", where, KILN_MAX_RANK);
    double v = d->valuedouble;
    if (!cJSON_IsNumber(d) || v != floor(v) || v < 0 || v > (double)MAX_DIM)
      return kiln_error(KILN_INVALID_ARGUMENT, "%s.shape[%d]: expected a size in 0..%lld", where, rank,
                        (long long)MAX_DIM);
    f->dims[rank] = (int64_t)v;
  }
  f->rank = rank;
  return NULL;
}

static kiln_status parse_domain(const cJSON *m, const char *where, kiln_schema_feature *f) {
  if (!m) return NULL;
  if (f->dtype != KILN_STRING)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s.domain: only string features have a domain (dtype is %s)", where,
                      f->dtype ? kiln_dtype_name(f->dtype) : "null");
  if (!cJSON_IsArray(m)) return kiln_error(KILN_INVALID_ARGUMENT, "%s.domain: expected a list of strings", where);
  int n = count_items(m);
  if (n > MAX_DOMAIN) return kiln_error(KILN_INVALID_ARGUMENT, "%s.domain: %d values, at most %d", where, n, MAX_DOMAIN);
  f->domain = calloc((size_t)n + 1, sizeof *f->domain);
  if (!f->domain) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory reading %s.domain", where);
  f->domain_count = 0;
  for (const cJSON *d = m->child; d; d = d->next) {
    if (!cJSON_IsString(d))
      return kiln_error(KILN_INVALID_ARGUMENT, "%s.domain[%d]: expected a string", where, f->domain_count);
    if (!(f->domain[f->domain_count] = strdup(d->valuestring)))
      return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory reading %s.domain", where);
    f->domain_count++;
  }
  qsort(f->domain, (size_t)f->domain_count, sizeof *f->domain, cmp_string);
  for (int k = 1; k < f->domain_count; k++)
    if (strcmp(f->domain[k], f->domain[k - 1]) == 0)
      return kiln_error(KILN_INVALID_ARGUMENT, "%s.domain: '%s' is listed twice", where, f->domain[k]);
  return NULL;
}

static kiln_status parse_histogram(const cJSON *h, const char *where, kiln_schema_feature *f) {
  static const char *const keys[] = {"edges", "counts", NULL};
  kiln_status e = check_keys(h, where, keys);
  if (e) return e;
  const cJSON *edges = cJSON_GetObjectItemCaseSensitive(h, "edges"), *counts = cJSON_GetObjectItemCaseSensitive(h, "counts");
  if (!cJSON_IsArray(edges)) return kiln_error(KILN_INVALID_ARGUMENT, "%s.edges: expected a list of numbers", where);
  if (!cJSON_IsArray(counts)) return kiln_error(KILN_INVALID_ARGUMENT, "%s.counts: expected a list of counts", where);
  int ne = count_items(edges), nc = count_items(counts);
  if (ne < 2 || ne > MAX_BINS + 1)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s.edges: %d edges, expected 2..%d", where, ne, MAX_BINS + 1);
  if (nc != ne - 1)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s.counts: %d counts for %d edges, expected %d", where, nc, ne, ne - 1);
  f->edges = malloc((size_t)ne * sizeof *f->edges);
  f->counts = malloc((size_t)nc * sizeof *f->counts);
  if (!f->edges || !f->counts) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory reading %s", where);
  int k = 0;
  for (const cJSON *x = edges->child; x; x = x->next, k++) {
    if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble) || (k && x->valuedouble < f->edges[k - 1]))
      return kiln_error(KILN_INVALID_ARGUMENT, "%s.edges[%d]: expected a finite number no less than the edge before", where, k);
    f->edges[k] = x->valuedouble;
  }
  k = 0;
  for (const cJSON *x = counts->child; x; x = x->next, k++) {
    double v = x->valuedouble;
    if (!cJSON_IsNumber(x) || v != floor(v) || v < 0 || v > 9007199254740992.0)
      return kiln_error(KILN_INVALID_ARGUMENT, "%s.counts[%d]: expected a count (a whole number >= 0)", where, k);
    f->counts[k] = (int64_t)v;
  }
  f->bins = nc;
  return NULL;
}

static kiln_status parse_stats(const cJSON *m, const char *where, kiln_schema_feature *f) {
  static const char *const keys[] = {"mean", "std", "min", "max", "histogram", NULL};
  char w[320];
  snprintf(w, sizeof w, "%.250s.stats", where);
  kiln_status e = check_keys(m, w, keys);
  if (!e) e = get_number(m, w, "mean", &f->mean);
  if (!e) e = get_number(m, w, "std", &f->std);
  if (!e) e = get_number(m, w, "min", &f->stats_min);
  if (!e) e = get_number(m, w, "max", &f->stats_max);
  if (e) return e;
  if (f->std < 0) return kiln_error(KILN_INVALID_ARGUMENT, "%s.std: %g is negative", w, f->std);
  f->has_stats = 1;
  const cJSON *h = cJSON_GetObjectItemCaseSensitive(m, "histogram");
  if (!h || cJSON_IsNull(h)) return NULL;
  snprintf(w, sizeof w, "%.250s.stats.histogram", where);
  return parse_histogram(h, w, f);
}

static kiln_status parse_feature(const cJSON *m, const char *where, kiln_schema_feature *f) {
  static const char *const keys[] = {"name", "dtype", "shape", "missing_rate", "max_missing_rate", "min", "max",
                                     "allow_nan", "domain", "stats", NULL};
  kiln_status e = check_keys(m, where, keys);
  if (e) return e;
  const cJSON *name = cJSON_GetObjectItemCaseSensitive(m, "name");
  if (!cJSON_IsString(name) || !name->valuestring[0])
    return kiln_error(KILN_INVALID_ARGUMENT, "%s.name: expected a non-empty string", where);
  if (!(f->name = strdup(name->valuestring))) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory reading %s", where);
  const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(m, "dtype");
  if (!dtype) return kiln_error(KILN_INVALID_ARGUMENT, "%s ('%s'): missing required key 'dtype'", where, f->name);
  if (!cJSON_IsNull(dtype)) {
    if (!cJSON_IsString(dtype)) return kiln_error(KILN_INVALID_ARGUMENT, "%s.dtype: expected a dtype name or null", where);
    f->dtype = kiln_dtype_from_name(dtype->valuestring);
    if (!kx_dtype_is_numeric(f->dtype) && f->dtype != KILN_STRING)
      return kiln_error(KILN_INVALID_ARGUMENT, "%s.dtype: '%s' is not a dtype a feature can have (float, int64, string, ...)",
                        where, dtype->valuestring);
  }
  e = parse_shape(cJSON_GetObjectItemCaseSensitive(m, "shape"), where, f);
  if (!e) e = get_rate(m, where, "missing_rate", &f->missing_rate);
  if (!e) e = get_rate(m, where, "max_missing_rate", &f->max_missing_rate);
  if (!e) e = get_number(m, where, "min", &f->min);
  if (!e) e = get_number(m, where, "max", &f->max);
  if (!e) e = kx_spec_bool(m, where, "allow_nan", &f->allow_nan);
  if (e) return e;
  if ((!isnan(f->min) || !isnan(f->max)) && f->dtype == KILN_STRING)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: a string feature has no min or max", where);
  if (f->min > f->max) return kiln_error(KILN_INVALID_ARGUMENT, "%s: min %g is above max %g", where, f->min, f->max);
  e = parse_domain(cJSON_GetObjectItemCaseSensitive(m, "domain"), where, f);
  if (e) return e;
  const cJSON *stats = cJSON_GetObjectItemCaseSensitive(m, "stats");
  if (stats && !cJSON_IsNull(stats)) return parse_stats(stats, where, f);
  return NULL;
}

/* `name` begins every error: the file's path, or "schema". */
static kiln_status parse_named(const char *json, size_t len, const char *name, kiln_schema **out) {
  *out = NULL;
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
  if (!root) {
    size_t at = end && end >= json && end <= json + len ? (size_t)(end - json) : 0;
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: not valid JSON (near byte %zu)", name, at);
  }
  while (end && end < json + len && (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t')) end++;
  kiln_status e = NULL;
  if (end && end < json + len && *end)
    e = kiln_error(KILN_INVALID_ARGUMENT, "%s: unexpected text after the JSON object (byte %zu)", name, (size_t)(end - json));
  kiln_schema *s = calloc(1, sizeof *s);
  if (!e && !s) e = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory reading %s", name);
  static const char *const keys[] = {"kiln_schema", "num_records", "features", NULL};
  if (!e) e = check_keys(root, name, keys);
  const cJSON *version = cJSON_GetObjectItemCaseSensitive(root, "kiln_schema");
  if (!e && (!cJSON_IsNumber(version) || version->valuedouble != 1))
    e = kiln_error(KILN_INVALID_ARGUMENT, "%s: expected \"kiln_schema\": 1 (a kiln schema file, version 1)", name);
  int64_t n = 0;
  if (!e) e = kx_spec_int(root, name, "num_records", 0, 0, INT64_C(1) << 53, &n);
  if (s) s->num_records = n;
  const cJSON *features = cJSON_GetObjectItemCaseSensitive(root, "features");
  if (!e && !cJSON_IsArray(features)) e = kiln_error(KILN_INVALID_ARGUMENT, "%s.features: expected a list of features", name);
  if (!e) {
    int count = count_items(features);
    if (count > MAX_FEATURES)
      e = kiln_error(KILN_INVALID_ARGUMENT, "%s.features: %d features, at most %d", name, count, MAX_FEATURES);
    else if (!(s->features = calloc((size_t)count + 1, sizeof *s->features)))
      e = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory reading %s", name);
  }
  for (const cJSON *m = e ? NULL : features->child; m && !e; m = m->next) {
    char where[256];
    snprintf(where, sizeof where, "%.200s: features[%d]", name, s->count);
    kiln_schema_feature *f = &s->features[s->count++];
    feature_init(f);
    e = parse_feature(m, where, f);
  }
  if (!e) e = index_names(s, name);
  cJSON_Delete(root);
  if (e) {
    kiln_schema_free(s);
    return e;
  }
  *out = s;
  return NULL;
}

kiln_status kiln_schema_parse(const char *json, size_t len, kiln_schema **out) {
  return parse_named(json, len, "schema", out);
}

kiln_status kiln_schema_read(const char *path, kiln_schema **out) {
  *out = NULL;
  void *text;
  size_t len;
  kiln_status e = kiln_file_read(path, MAX_SCHEMA_BYTES, &text, &len);
  if (e) return e;
  e = parse_named(text, len, path, out);
  free(text);
  return e;
}

/* ---------------------------------------------------------------- checking records */

/* Receives each anomaly of one record: the schema feature (or -1 and the record's feature k for
 * an unexpected one), its kind and a description. */
typedef void (*emit_fn)(void *ctx, int feature, int k, kiln_anomaly_kind kind, const char *detail);

static void describe_shape(char *buf, size_t size, int rank, const int64_t *dims) {
  size_t n = (size_t)snprintf(buf, size, "[");
  for (int d = 0; d < rank && n < size; d++) n += (size_t)snprintf(buf + n, size - n, "%s%lld", d ? "," : "", (long long)dims[d]);
  if (n < size) snprintf(buf + n, size - n, "]");
}

static const char *number_text(double v, char buf[KX_NUMBER_CHARS]) {
  if (isnan(v)) return "NaN";
  if (isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  return kx_format_number(v, 0, buf);
}

static int in_domain(const kiln_schema_feature *f, const char *v) {
  return bsearch(&v, f->domain, (size_t)f->domain_count, sizeof *f->domain, cmp_string) != NULL;
}

static void check_value(const kiln_schema_feature *f, int fi, int k, const kiln_tensor *t, emit_fn emit, void *ctx) {
  char detail[400];
  if (f->dtype != KILN_UNDEFINED && !kx_dtype_fits(f->dtype, t->dtype)) {
    snprintf(detail, sizeof detail, "expected %s, found %s", kiln_dtype_name(f->dtype), kiln_dtype_name(t->dtype));
    emit(ctx, fi, k, KILN_ANOMALY_WRONG_TYPE, detail);
    return;
  }
  if (f->rank >= 0 && (t->rank != f->rank || memcmp(t->dims, f->dims, (size_t)f->rank * sizeof *f->dims) != 0)) {
    char want[160], have[160];
    describe_shape(want, sizeof want, f->rank, f->dims);
    describe_shape(have, sizeof have, t->rank, t->dims);
    snprintf(detail, sizeof detail, "expected shape %s, found %s", want, have);
    emit(ctx, fi, k, KILN_ANOMALY_SHAPE_MISMATCH, detail);
  }
  int64_t numel = kiln_tensor_numel(t);
  if (numel > 0 && !t->data) return;
  if (kx_dtype_is_numeric(t->dtype) && (!isnan(f->min) || !isnan(f->max) || !f->allow_nan)) {
    int range_done = 0, nan_done = f->allow_nan;
    for (int64_t i = 0; i < numel && !(range_done && nan_done); i++) {
      double v = kiln_tensor_get_f64(t, i);
      if (isnan(v)) {
        if (!nan_done) {
          emit(ctx, fi, k, KILN_ANOMALY_NAN, "NaN where the schema allows none (allow_nan is false)");
          nan_done = 1;
        }
      } else if (!range_done && (v < f->min || v > f->max)) {
        char a[KX_NUMBER_CHARS], lo[KX_NUMBER_CHARS], hi[KX_NUMBER_CHARS];
        snprintf(detail, sizeof detail, "%s is outside [%s, %s]", number_text(v, a),
                 isnan(f->min) ? "-Infinity" : number_text(f->min, lo), isnan(f->max) ? "Infinity" : number_text(f->max, hi));
        emit(ctx, fi, k, KILN_ANOMALY_OUT_OF_RANGE, detail);
        range_done = 1;
      }
    }
  }
  if (t->dtype == KILN_STRING && f->domain_count >= 0) {
    for (int64_t i = 0; i < numel; i++) {
      const char *v = ((char *const *)t->data)[i];
      if (!v) v = "";
      if (!in_domain(f, v)) {
        snprintf(detail, sizeof detail, "'%.64s%s' is not in the domain (%d values)", v, strlen(v) > 64 ? "..." : "",
                 f->domain_count);
        emit(ctx, fi, k, KILN_ANOMALY_NEW_CATEGORY, detail);
        break;
      }
    }
  }
}

/* Checks every feature of r; `seen` (one byte per schema feature, zeroed) is scratch space.
 * `dataset` 1: missing values are left to the caller (it judges rates over the whole dataset). */
static void check(const kiln_schema *s, const kiln_record *r, unsigned char *seen, int dataset, emit_fn emit,
                  void *ctx, int *feature_of) {
  for (int k = 0; k < r->count; k++) {
    int fi = kiln_schema_find(s, r->names[k]);
    if (fi >= 0 && seen[fi]) fi = -2; /* a repeated name: its first value counts */
    feature_of[k] = fi;
    if (fi == -1) {
      emit(ctx, -1, k, KILN_ANOMALY_UNEXPECTED_FEATURE, "not in the schema");
      continue;
    }
    if (fi < 0) continue;
    seen[fi] = 1;
    if (r->values[k].dtype == KILN_UNDEFINED) {
      seen[fi] = 2;
      continue;
    }
    check_value(&s->features[fi], fi, k, &r->values[k], emit, ctx);
  }
  if (dataset) return;
  for (int fi = 0; fi < s->count; fi++)
    if (seen[fi] != 1 && s->features[fi].max_missing_rate <= 0)
      emit(ctx, fi, -1, KILN_ANOMALY_MISSING_FEATURE, seen[fi] ? "a required feature has no value" : "a required feature is absent");
}

typedef struct record_report {
  const kiln_schema *schema;
  const kiln_record *record;
  kx_buf buf;
  int n;
} record_report;

static void report_anomaly(void *ctx, int fi, int k, kiln_anomaly_kind kind, const char *detail) {
  record_report *rr = ctx;
  const char *name = fi >= 0 ? rr->schema->features[fi].name : rr->record->names[k];
  kx_buf_puts(&rr->buf, rr->n++ ? "; feature " : "feature ");
  kx_buf_json_string(&rr->buf, name);
  kx_buf_printf(&rr->buf, ": %s: %s", kiln_anomaly_kind_name(kind), detail);
}

kiln_status kiln_schema_check_record(const kiln_schema *s, const kiln_record *r) {
  unsigned char small_seen[256];
  int small_map[64];
  unsigned char *seen = s->count <= 256 ? small_seen : calloc((size_t)s->count, 1);
  int *feature_of = r->count <= 64 ? small_map : malloc((size_t)r->count * sizeof *feature_of);
  if (!seen || !feature_of) {
    if (seen != small_seen) free(seen);
    if (feature_of != small_map) free(feature_of);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory checking a record");
  }
  if (seen == small_seen) memset(seen, 0, sizeof small_seen);
  record_report rr = {.schema = s, .record = r};
  check(s, r, seen, 0, report_anomaly, &rr, feature_of);
  if (seen != small_seen) free(seen);
  if (feature_of != small_map) free(feature_of);
  if (!rr.n) {
    kx_buf_free(&rr.buf);
    return NULL;
  }
  if (rr.buf.failed) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory describing a record's anomalies");
  kiln_status e;
  if (r->source && r->index >= 0)
    e = kiln_error(KILN_INVALID_ARGUMENT, "%s: record %lld: %d anomal%s: %s", r->source, (long long)r->index, rr.n,
                   rr.n == 1 ? "y" : "ies", rr.buf.data);
  else
    e = kiln_error(KILN_INVALID_ARGUMENT, "%d anomal%s: %s", rr.n, rr.n == 1 ? "y" : "ies", rr.buf.data);
  kx_buf_free(&rr.buf);
  return e;
}

/* ---------------------------------------------------------------- validating a dataset */

typedef struct tally {
  int64_t count;
  int64_t last; /* the position of the record last counted, so one record counts once */
  int64_t examples[EXAMPLES];
  int n_examples;
  char *first; /* the first occurrence's description */
} tally;

struct kx_validation_state {
  const kiln_schema *schema;
  tally *tallies; /* schema features x kinds */
  int64_t *present;
  unsigned char *seen;
  int *feature_of;
  int feature_of_cap;
  char **unexpected; /* names */
  tally *unexpected_tallies;
  int n_unexpected;
  const kiln_record *record; /* being checked */
  int64_t position;          /* its position in the stream */
  int64_t record_id;         /* its index in its file, else its position */
  int overflow;              /* more unexpected names than MAX_UNEXPECTED */
  int failed;                /* memory ran out */
  int finished;
};

static void tally_add(tally *t, int64_t position, int64_t record, const char *detail) {
  if (t->count && t->last == position) return;
  t->last = position;
  t->count++;
  if (t->n_examples < EXAMPLES) t->examples[t->n_examples++] = record;
  if (!t->first && detail) t->first = strdup(detail); /* out of memory: a shorter description */
}

static void validation_anomaly(void *ctx, int fi, int k, kiln_anomaly_kind kind, const char *detail) {
  struct kx_validation_state *st = ctx;
  if (fi >= 0) {
    tally_add(&st->tallies[(size_t)fi * KILN_ANOMALY_KINDS + kind], st->position, st->record_id, detail);
    return;
  }
  /* Unexpected features are few in practice: a linear search over a capped list, whose last
   * entry takes every name past the cap. */
  const char *name = st->record->names[k];
  int u = 0;
  while (u < st->n_unexpected && strcmp(st->unexpected[u], name) != 0) u++;
  if (u == st->n_unexpected) {
    if (u == MAX_UNEXPECTED) {
      u = MAX_UNEXPECTED - 1;
      st->overflow = 1;
    } else {
      if (!(st->unexpected[u] = strdup(name))) {
        st->failed = 1;
        return;
      }
      st->n_unexpected++;
    }
  }
  tally_add(&st->unexpected_tallies[u], st->position, st->record_id, detail);
}
kiln_status kiln_validation_create(const kiln_schema *schema, kiln_validation **out) {
  *out = NULL;
  kiln_validation *v = calloc(1, sizeof *v);
  struct kx_validation_state *st = calloc(1, sizeof *st);
  size_t n = (size_t)schema->count + 1;
  if (st) {
    st->tallies = calloc(n * KILN_ANOMALY_KINDS, sizeof *st->tallies);
    st->present = calloc(n, sizeof *st->present);
    st->seen = calloc(n, 1);
    st->unexpected = calloc(MAX_UNEXPECTED, sizeof *st->unexpected);
    st->unexpected_tallies = calloc(MAX_UNEXPECTED, sizeof *st->unexpected_tallies);
  }
  if (!v || !st || !st->tallies || !st->present || !st->seen || !st->unexpected || !st->unexpected_tallies) {
    if (st) {
      free(st->tallies);
      free(st->present);
      free(st->seen);
      free(st->unexpected);
      free(st->unexpected_tallies);
    }
    free(st);
    free(v);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory starting a validation");
  }
  st->schema = schema;
  v->state = st;
  *out = v;
  return NULL;
}

kiln_status kiln_validation_add(kiln_validation *v, const kiln_record *r) {
  struct kx_validation_state *st = v->state;
  const kiln_schema *s = st->schema;
  if (st->finished) return kiln_error(KILN_FAILED_PRECONDITION, "validation: a record added after the validation finished");
  if (r->count > st->feature_of_cap) {
    int *m = realloc(st->feature_of, (size_t)r->count * sizeof *m);
    if (!m) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory validating a record of %d features", r->count);
    st->feature_of = m;
    st->feature_of_cap = r->count;
  }
  memset(st->seen, 0, (size_t)s->count);
  st->record = r;
  st->position = v->records;
  st->record_id = r->index >= 0 ? r->index : v->records;
  check(s, r, st->seen, 1, validation_anomaly, st, st->feature_of);
  for (int fi = 0; fi < s->count; fi++) {
    if (st->seen[fi] == 1) st->present[fi]++;
    else tally_add(&st->tallies[(size_t)fi * KILN_ANOMALY_KINDS + KILN_ANOMALY_MISSING_FEATURE], st->position, st->record_id, NULL);
  }
  st->record = NULL;
  v->records++;
  if (st->failed) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory validating records");
  return NULL;
}

static kiln_status push_anomaly(kiln_validation *v, const char *feature, kiln_anomaly_kind kind, const tally *t,
                                int64_t count, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static kiln_status push_anomaly(kiln_validation *v, const char *feature, kiln_anomaly_kind kind, const tally *t,
                                int64_t count, const char *fmt, ...) {
  kiln_anomaly *a = &v->anomalies[v->count];
  memset(a, 0, sizeof *a);
  a->feature = feature;
  a->kind = kind;
  a->count = count;
  a->n_examples = t->n_examples;
  memcpy(a->examples, t->examples, sizeof a->examples);
  kx_buf b = {0};
  va_list ap;
  va_start(ap, fmt);
  char text[512];
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  kx_buf_puts(&b, text);
  a->description = kx_buf_take(&b, NULL);
  if (!a->description) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory describing anomalies");
  v->count++;
  return NULL;
}

kiln_status kiln_validation_finish(kiln_validation *v) {
  struct kx_validation_state *st = v->state;
  const kiln_schema *s = st->schema;
  if (st->finished) return NULL;
  st->finished = 1;
  v->anomalies = calloc((size_t)s->count * KILN_ANOMALY_KINDS + (size_t)st->n_unexpected + 1, sizeof *v->anomalies);
  if (!v->anomalies) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory listing anomalies");
  kiln_status e = NULL;
  int64_t n = v->records;
  for (int fi = 0; fi < s->count && !e; fi++) {
    const kiln_schema_feature *f = &s->features[fi];
    for (int kind = 0; kind < KILN_ANOMALY_KINDS && !e; kind++) {
      const tally *t = &st->tallies[(size_t)fi * KILN_ANOMALY_KINDS + kind];
      if (!t->count) continue;
      if (kind == KILN_ANOMALY_MISSING_FEATURE) {
        double rate = (double)t->count / (double)n;
        if (st->present[fi] == 0)
          e = push_anomaly(v, f->name, KILN_ANOMALY_MISSING_FEATURE, t, t->count, "no value in any of the %lld records",
                           (long long)n);
        else if (rate > f->max_missing_rate + 1e-12)
          e = push_anomaly(v, f->name, KILN_ANOMALY_MISSING_FEATURE, t, t->count,
                           "missing in %lld of %lld records (rate %.4g, max_missing_rate %.4g)", (long long)t->count,
                           (long long)n, rate, f->max_missing_rate);
        continue;
      }
      e = push_anomaly(v, f->name, (kiln_anomaly_kind)kind, t, t->count, "%s (first at record %lld; %lld records)",
                       t->first ? t->first : kiln_anomaly_kind_name((kiln_anomaly_kind)kind), (long long)t->examples[0],
                       (long long)t->count);
    }
  }
  for (int u = 0; u < st->n_unexpected && !e; u++) {
    const tally *t = &st->unexpected_tallies[u];
    int more = st->overflow && u == MAX_UNEXPECTED - 1;
    e = push_anomaly(v, st->unexpected[u], KILN_ANOMALY_UNEXPECTED_FEATURE, t, t->count,
                     "not in the schema (in %lld records%s)", (long long)t->count,
                     more ? "; further unexpected names are counted here too" : "");
  }
  return e;
}

char *kiln_validation_to_json(const kiln_validation *v) {
  kx_buf b = {0};
  kx_buf_printf(&b, "{\"records\":%lld,\"anomalies\":[", (long long)v->records);
  for (int i = 0; i < v->count; i++) {
    const kiln_anomaly *a = &v->anomalies[i];
    kx_buf_puts(&b, i ? ",{\"feature\":" : "{\"feature\":");
    kx_buf_json_string(&b, a->feature);
    kx_buf_printf(&b, ",\"kind\":\"%s\",\"description\":", kiln_anomaly_kind_name(a->kind));
    kx_buf_json_string(&b, a->description);
    kx_buf_printf(&b, ",\"count\":%lld,\"examples\":[", (long long)a->count);
    for (int k = 0; k < a->n_examples; k++) kx_buf_printf(&b, "%s%lld", k ? "," : "", (long long)a->examples[k]);
    kx_buf_puts(&b, "]}");
  }
  kx_buf_printf(&b, "],\"clean\":%s}", v->count ? "false" : "true");
  return kx_buf_take(&b, NULL);
}

void kiln_validation_free(kiln_validation *v) {
  if (!v) return;
  struct kx_validation_state *st = v->state;
  for (int i = 0; i < v->count; i++) free(v->anomalies[i].description);
  free(v->anomalies);
  size_t n = (size_t)st->schema->count * KILN_ANOMALY_KINDS;
  for (size_t i = 0; i < n; i++) free(st->tallies[i].first);
  for (int u = 0; u < st->n_unexpected; u++) {
    free(st->unexpected[u]);
    free(st->unexpected_tallies[u].first);
  }
  free(st->tallies);
  free(st->present);
  free(st->seen);
  free(st->feature_of);
  free(st->unexpected);
  free(st->unexpected_tallies);
  free(st);
  free(v);
}
