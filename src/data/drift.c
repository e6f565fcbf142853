/* Drift between two datasets' statistics: Jensen-Shannon divergence of numeric histograms over
 * common edges, L-infinity distance of categorical value frequencies (TFDV's two skew measures). */
#include "data/data.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"

double kx_js_divergence(const int64_t *p, const int64_t *q, int n) {
  double sp = 0, sq = 0;
  for (int i = 0; i < n; i++) {
    sp += (double)p[i];
    sq += (double)q[i];
  }
  if (sp == 0 || sq == 0) return sp == sq ? 0 : 1;
  double js = 0;
  for (int i = 0; i < n; i++) {
    double a = (double)p[i] / sp, b = (double)q[i] / sq, m = (a + b) / 2;
    if (a > 0) js += 0.5 * a * log2(a / m);
    if (b > 0) js += 0.5 * b * log2(b / m);
  }
  return js < 0 ? 0 : js > 1 ? 1 : js;
}

static int by_value(const void *x, const void *y) {
  return strcmp(((const kiln_value_count *)x)->value, ((const kiln_value_count *)y)->value);
}

static double total(const kiln_value_count *v, int n) {
  double t = 0;
  for (int i = 0; i < n; i++) t += (double)v[i].count;
  return t;
}

double kx_linf_distance(const kiln_value_count *p, int np, const kiln_value_count *q, int nq) {
  double sp = total(p, np), sq = total(q, nq);
  if (sp == 0 || sq == 0) return sp == sq ? 0 : 1;
  kiln_value_count *a = malloc(((size_t)np + 1) * sizeof *a), *b = malloc(((size_t)nq + 1) * sizeof *b);
  if (!a || !b) {
    free(a);
    free(b);
    return NAN;
  }
  if (np) memcpy(a, p, (size_t)np * sizeof *a);
  if (nq) memcpy(b, q, (size_t)nq * sizeof *b);
  qsort(a, (size_t)np, sizeof *a, by_value);
  qsort(b, (size_t)nq, sizeof *b, by_value);
  double worst = 0;
  int i = 0, j = 0;
  while (i < np || j < nq) {
    int c = i == np ? 1 : j == nq ? -1 : strcmp(a[i].value, b[j].value);
    double fa = c <= 0 ? (double)a[i].count / sp : 0, fb = c >= 0 ? (double)b[j].count / sq : 0;
    double d = fabs(fa - fb);
    worst = d > worst ? d : worst;
    if (c <= 0) i++;
    if (c >= 0) j++;
  }
  free(a);
  free(b);
  return worst;
}

static int is_categorical(const kiln_feature_stats *f) { return f->dtype == KILN_STRING || f->dtype == KILN_BOOL; }

/* The distance of one feature present on both sides. */
static kiln_status compare(const kiln_feature_stats *a, const kiln_feature_stats *b, kiln_drift_feature *out) {
  out->distance = NAN;
  if (is_categorical(a) || is_categorical(b)) {
    out->method = "l_infinity";
    if (!a->categorical || !b->categorical || (a->dtype == KILN_STRING) != (b->dtype == KILN_STRING))
      out->note = "the dtypes differ";
    else if (a->too_many || b->too_many)
      out->note = "too many distinct values";
    else
      out->distance = kx_linf_distance(a->values, a->distinct, b->values, b->distinct);
    if (!out->note && isnan(out->distance)) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory comparing '%s'", a->name);
    return NULL;
  }
  out->method = "jensen_shannon";
  if (!a->numeric || !b->numeric) {
    out->note = "the dtypes differ";
    return NULL;
  }
  if (!a->edges || !b->edges) {
    out->distance = !a->edges && !b->edges ? 0 : 1;
    out->note = "no finite values on one side";
    if (!a->edges && !b->edges) out->note = "no finite values on either side";
    return NULL;
  }
  if (a->bins != b->bins || memcmp(a->edges, b->edges, ((size_t)a->bins + 1) * sizeof *a->edges) != 0)
    return kiln_error(KILN_INVALID_ARGUMENT, "drift: feature '%s': the two histograms have different edges", a->name);
  out->distance = kx_js_divergence(a->counts, b->counts, a->bins);
  return NULL;
}

kiln_status kiln_drift_from_stats(kiln_stats *a, kiln_stats *b, kiln_drift **out) {
  *out = NULL;
  kiln_drift *d = calloc(1, sizeof *d);
  if (d) d->features = calloc((size_t)a->count + (size_t)b->count + 1, sizeof *d->features);
  if (!d || !d->features) {
    free(d);
    kiln_stats_free(a);
    kiln_stats_free(b);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory comparing statistics");
  }
  d->a = a;
  d->b = b;
  for (int i = 0; i < a->count; i++) {
    kiln_drift_feature *f = &d->features[d->count++];
    f->name = a->features[i].name;
    int j = kiln_stats_find(b, f->name);
    if (j < 0) {
      *f = (kiln_drift_feature){f->name, "presence", 1, "only in the first dataset"};
      continue;
    }
    kiln_status s = compare(&a->features[i], &b->features[j], f);
    if (s) {
      kiln_drift_free(d);
      return s;
    }
  }
  for (int j = 0; j < b->count; j++)
    if (kiln_stats_find(a, b->features[j].name) < 0)
      d->features[d->count++] = (kiln_drift_feature){b->features[j].name, "presence", 1, "only in the second dataset"};
  *out = d;
  return NULL;
}

void kiln_drift_free(kiln_drift *d) {
  if (!d) return;
  kiln_stats_free(d->a);
  kiln_stats_free(d->b);
  free(d->features);
  free(d);
}

char *kiln_drift_to_json(const kiln_drift *d, double threshold) {
  int drifted = 0;
  for (int i = 0; i < d->count; i++) drifted |= d->features[i].distance > threshold;
  kx_buf b = {0};
  kx_buf_puts(&b, "{\"threshold\":");
  kx_buf_json_double(&b, threshold);
  kx_buf_printf(&b, ",\"drifted\":%s,\"features\":[", drifted ? "true" : "false");
  for (int i = 0; i < d->count; i++) {
    const kiln_drift_feature *f = &d->features[i];
    kx_buf_puts(&b, i ? ",{\"name\":" : "{\"name\":");
    kx_buf_json_string(&b, f->name);
    kx_buf_printf(&b, ",\"method\":\"%s\",\"distance\":", f->method);
    if (isfinite(f->distance)) kx_buf_json_double(&b, f->distance);
    else kx_buf_puts(&b, "null");
    kx_buf_printf(&b, ",\"drifted\":%s,\"note\":", f->distance > threshold ? "true" : "false");
    if (f->note) kx_buf_json_string(&b, f->note);
    else kx_buf_puts(&b, "null");
    kx_buf_putc(&b, '}');
  }
  kx_buf_puts(&b, "]}");
  return kx_buf_take(&b, NULL);
}
