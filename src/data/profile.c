/* Passes over datasets for the statistics engine, schema inference, validation and drift: the
 * only part of the schema code that pulls records itself (the rest takes records one by one). */
#include "data/data.h"

#include <stdlib.h>

/* Every remaining record of d, to fn (kiln_stats_add, kiln_stats_add_histogram, ...). */
static kiln_status each_record(kiln_dataset *d, kiln_status (*fn)(void *, const kiln_record *), void *arg) {
  for (;;) {
    kiln_record r;
    int done = 0;
    kiln_status e = kiln_dataset_next(d, &r, &done);
    if (e) return e;
    if (done) return NULL;
    e = fn(arg, &r);
    kiln_record_release(&r);
    if (e) return e;
  }
}

static kiln_status add_first(void *s, const kiln_record *r) { return kiln_stats_add(s, r); }
static kiln_status add_second(void *s, const kiln_record *r) { return kiln_stats_add_histogram(s, r); }
static kiln_status add_validation(void *v, const kiln_record *r) { return kiln_validation_add(v, r); }

/* The first pass: moments, value counts, default edges. */
static kiln_status first_pass(kiln_dataset *d, const kiln_stats_options *options, kiln_stats **out) {
  kiln_stats *s;
  kiln_status e = kiln_stats_create(options, &s);
  if (e) return e;
  e = each_record(d, add_first, s);
  if (!e) e = kiln_stats_end_pass(s);
  if (e) {
    kiln_stats_free(s);
    return e;
  }
  *out = s;
  return NULL;
}

static kiln_status second_pass(kiln_dataset *d, kiln_stats *s) {
  kiln_status e = kiln_dataset_reset(d, 0);
  if (!e) e = each_record(d, add_second, s);
  return e;
}

kiln_status kiln_stats_compute(kiln_dataset *d, const kiln_stats_options *options, kiln_stats **out) {
  *out = NULL;
  kiln_stats *s;
  kiln_status e = first_pass(d, options, &s);
  if (e) return e;
  e = second_pass(d, s);
  if (e) {
    kiln_stats_free(s);
    return e;
  }
  *out = s;
  return NULL;
}

kiln_status kiln_schema_infer(kiln_dataset *d, kiln_schema **out) {
  *out = NULL;
  kiln_stats *s;
  kiln_status e = kiln_stats_compute(d, NULL, &s);
  if (e) return e;
  e = kiln_schema_from_stats(s, out);
  kiln_stats_free(s);
  return e;
}

kiln_status kiln_validate(kiln_dataset *d, const kiln_schema *schema, kiln_validation **out) {
  *out = NULL;
  kiln_validation *v;
  kiln_status e = kiln_validation_create(schema, &v);
  if (e) return e;
  e = each_record(d, add_validation, v);
  if (!e) e = kiln_validation_finish(v);
  if (e) {
    kiln_validation_free(v);
    return e;
  }
  *out = v;
  return NULL;
}

/* Gives both sides' numeric features the same equal-width edges over the union of their ranges,
 * so their histograms compare bin by bin. */
static kiln_status common_edges(kiln_stats *a, kiln_stats *b, int bins) {
  for (int i = 0; i < a->count; i++) {
    kiln_feature_stats *fa = &a->features[i];
    int j = kiln_stats_find(b, fa->name);
    if (j < 0) continue;
    kiln_feature_stats *fb = &b->features[j];
    if (!fa->numeric || !fb->numeric || !fa->count || !fb->count) continue;
    double lo = fa->min < fb->min ? fa->min : fb->min, hi = fa->max > fb->max ? fa->max : fb->max;
    kiln_status e = kx_stats_default_edges(fa, lo, hi, bins);
    if (!e) e = kx_stats_default_edges(fb, lo, hi, bins);
    if (e) return e;
  }
  return NULL;
}

kiln_status kiln_drift_compare(kiln_dataset *a, kiln_dataset *b, const kiln_stats_options *options, kiln_drift **out) {
  *out = NULL;
  kiln_stats *sa = NULL, *sb = NULL;
  kiln_status e = first_pass(a, options, &sa);
  if (!e) e = first_pass(b, options, &sb);
  if (!e) e = common_edges(sa, sb, options && options->bins > 0 ? options->bins : 10 /* kiln_stats_options' default */);
  if (!e) e = second_pass(a, sa);
  if (!e) e = second_pass(b, sb);
  if (e) {
    kiln_stats_free(sa);
    kiln_stats_free(sb);
    return e;
  }
  return kiln_drift_from_stats(sa, sb, out);
}
