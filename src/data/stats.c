/* Per-feature statistics streamed over records: dtype, shape, presence, moments, histograms and
 * value counts, in memory bounded by the feature count (TFDV's generate_statistics). */
#include "data/data.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"

#define DEFAULT_BINS 10
#define DEFAULT_CATEGORIES 1000
#define MAX_BINS 100000
#define MAX_CATEGORIES 1000000
/* Text of the distinct string values one feature may hold before counting stops. */
#define CATEGORY_BYTES (1u << 20)
/* Elements converted to double at a time. */
#define CHUNK 1024

/* Distinct values and their counts: open addressing over int64 keys (integers, bools) or
 * strings (owned copies). */
typedef struct value_table {
  int is_int;
  size_t cap, n, bytes;
  int64_t *ints;
  char **strs;
  int64_t *counts; /* 0 marks a free slot (a stored value has count >= 1) */
} value_table;

typedef struct feature_acc {
  double m2; /* sum of squared deviations from the mean, finite elements */
  int shape_set;
  int dtype_set;
  value_table table;
  char *text; /* the formatted integer values the value list points into */
} feature_acc;

struct kx_stats_state {
  int bins, max_categories;
  int cap;
  feature_acc *acc;
  int *slots; /* name hash: feature index + 1, 0 free */
  size_t n_slots;
  const char **last_names; /* the names array the last record used, and its feature indices */
  int last_count;
  int *last_map;
  int ended;
};

int kx_dtype_is_numeric(kiln_dtype t) {
  return t == KILN_BOOL || t == KILN_FLOAT || t == KILN_DOUBLE || t == KILN_FLOAT16 || t == KILN_BFLOAT16 ||
         t == KILN_INT8 || t == KILN_UINT8 || t == KILN_INT16 || t == KILN_UINT16 || t == KILN_INT32 ||
         t == KILN_UINT32 || t == KILN_INT64 || t == KILN_UINT64;
}

/* Integers whose every value converts to int64 exactly (uint64 does not). */
static int is_countable_int(kiln_dtype t) {
  return t == KILN_BOOL || t == KILN_INT8 || t == KILN_UINT8 || t == KILN_INT16 || t == KILN_UINT16 ||
         t == KILN_INT32 || t == KILN_UINT32 || t == KILN_INT64;
}

static int float_width(kiln_dtype t) {
  return t == KILN_DOUBLE ? 3 : t == KILN_FLOAT ? 2 : (t == KILN_FLOAT16 || t == KILN_BFLOAT16) ? 1 : 0;
}

int kx_dtype_fits(kiln_dtype want, kiln_dtype have) {
  if (want == have) return 1;
  if (!kx_dtype_is_numeric(want) || !kx_dtype_is_numeric(have)) return 0;
  if (kiln_dtype_is_float(want)) return !kiln_dtype_is_float(have) || float_width(have) <= float_width(want);
  if (want == KILN_BOOL) return 0;
  return !kiln_dtype_is_float(have); /* any integer or bool where an integer is declared: range checks the rest */
}

/* The dtype both a and b fit, where there is one; else a (the caller marks the dtype varied). */
static kiln_dtype widen(kiln_dtype a, kiln_dtype b) {
  if (kx_dtype_fits(a, b)) return a;
  if (kx_dtype_fits(b, a)) return b;
  if (!kx_dtype_is_numeric(a) || !kx_dtype_is_numeric(b)) return a;
  if (kiln_dtype_is_float(a) || kiln_dtype_is_float(b)) return KILN_DOUBLE; /* float16 vs bfloat16 */
  return KILN_INT64;
}

/* ---------------------------------------------------------------- value table */

static uint64_t hash_bytes(const void *p, size_t n) {
  const unsigned char *s = p;
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
  return h;
}

static uint64_t hash_int(int64_t v) {
  uint64_t x = (uint64_t)v;
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return x;
}

static void table_free(value_table *t) {
  if (t->strs)
    for (size_t i = 0; i < t->cap; i++) free(t->strs[i]);
  free(t->strs);
  free(t->ints);
  free(t->counts);
  memset(t, 0, sizeof *t);
}

static kiln_status table_grow(value_table *t) {
  size_t cap = t->cap ? t->cap * 2 : 16;
  value_table g = {.is_int = t->is_int, .cap = cap, .n = t->n, .bytes = t->bytes};
  g.counts = calloc(cap, sizeof *g.counts);
  if (t->is_int) g.ints = calloc(cap, sizeof *g.ints);
  else g.strs = calloc(cap, sizeof *g.strs);
  if (!g.counts || (!g.ints && !g.strs)) {
    free(g.counts);
    free(g.ints);
    free(g.strs);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory counting distinct values");
  }
  for (size_t i = 0; i < t->cap; i++) {
    if (!t->counts[i]) continue;
    uint64_t h = t->is_int ? hash_int(t->ints[i]) : hash_bytes(t->strs[i], strlen(t->strs[i]));
    size_t j = h & (cap - 1);
    while (g.counts[j]) j = (j + 1) & (cap - 1);
    g.counts[j] = t->counts[i];
    if (t->is_int) g.ints[j] = t->ints[i];
    else g.strs[j] = t->strs[i];
  }
  free(t->counts);
  free(t->ints);
  free(t->strs);
  *t = g;
  return NULL;
}

/* Counts one value; *overflow = 1 when it would be one distinct value too many (or its text too
 * much), in which case nothing is stored. */
static kiln_status table_add(value_table *t, int64_t iv, const char *sv, size_t limit, int *overflow) {
  *overflow = 0;
  if (t->n * 2 >= t->cap) {
    kiln_status s = table_grow(t);
    if (s) return s;
  }
  size_t len = sv ? strlen(sv) : 0;
  uint64_t h = t->is_int ? hash_int(iv) : hash_bytes(sv, len);
  size_t j = h & (t->cap - 1);
  while (t->counts[j]) {
    if (t->is_int ? t->ints[j] == iv : strcmp(t->strs[j], sv) == 0) {
      t->counts[j]++;
      return NULL;
    }
    j = (j + 1) & (t->cap - 1);
  }
  if (t->n + 1 > limit || (!t->is_int && t->bytes + len + 1 > CATEGORY_BYTES)) {
    *overflow = 1;
    return NULL;
  }
  if (t->is_int) {
    t->ints[j] = iv;
  } else {
    t->strs[j] = strdup(sv);
    if (!t->strs[j]) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory counting distinct values");
    t->bytes += len + 1;
  }
  t->counts[j] = 1;
  t->n++;
  return NULL;
}

/* ---------------------------------------------------------------- features */

static int find_slot(const kiln_stats *s, const char *name, size_t *slot) {
  const struct kx_stats_state *st = s->state;
  if (!st->n_slots) return -1;
  size_t j = hash_bytes(name, strlen(name)) & (st->n_slots - 1);
  while (st->slots[j]) {
    int i = st->slots[j] - 1;
    if (strcmp(s->features[i].name, name) == 0) return i;
    j = (j + 1) & (st->n_slots - 1);
  }
  if (slot) *slot = j;
  return -1;
}

int kiln_stats_find(const kiln_stats *s, const char *feature) { return find_slot(s, feature, NULL); }

static kiln_status rehash(kiln_stats *s, size_t n_slots) {
  struct kx_stats_state *st = s->state;
  int *slots = calloc(n_slots, sizeof *slots);
  if (!slots) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory indexing features");
  free(st->slots);
  st->slots = slots;
  st->n_slots = n_slots;
  for (int i = 0; i < s->count; i++) {
    size_t j = hash_bytes(s->features[i].name, strlen(s->features[i].name)) & (n_slots - 1);
    while (slots[j]) j = (j + 1) & (n_slots - 1);
    slots[j] = i + 1;
  }
  return NULL;
}

static kiln_status add_feature(kiln_stats *s, const char *name, int *index) {
  struct kx_stats_state *st = s->state;
  if (s->count == st->cap) {
    if (st->cap >= (1 << 24)) return kiln_error(KILN_RESOURCE_EXHAUSTED, "more than %d features", st->cap);
    int cap = st->cap ? st->cap * 2 : 16;
    kiln_feature_stats *f = realloc(s->features, (size_t)cap * sizeof *f);
    if (!f) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory adding feature '%s'", name);
    s->features = f;
    feature_acc *a = realloc(st->acc, (size_t)cap * sizeof *a);
    if (!a) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory adding feature '%s'", name);
    st->acc = a;
    st->cap = cap;
  }
  if ((size_t)(s->count + 1) * 2 > st->n_slots) {
    kiln_status e = rehash(s, st->n_slots ? st->n_slots * 2 : 32);
    if (e) return e;
  }
  char *copy = strdup(name);
  if (!copy) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory adding feature '%s'", name);
  int i = s->count++;
  kiln_feature_stats *f = &s->features[i];
  memset(f, 0, sizeof *f);
  f->name = copy;
  f->rank = -1;
  f->min = f->max = f->mean = f->std = NAN;
  memset(&st->acc[i], 0, sizeof st->acc[i]);
  size_t slot;
  find_slot(s, name, &slot);
  st->slots[slot] = i + 1;
  *index = i;
  return NULL;
}

/* Feature indices of a record's names (-1: unknown and not added), cached for the common case
 * of every record of a source sharing one names array. */
static kiln_status map_record(kiln_stats *s, const kiln_record *r, int add, const int **map) {
  struct kx_stats_state *st = s->state;
  if (st->last_names && st->last_count == r->count &&
      memcmp(st->last_names, r->names, (size_t)r->count * sizeof *r->names) == 0) {
    *map = st->last_map;
    return NULL;
  }
  free(st->last_names);
  free(st->last_map);
  st->last_names = NULL;
  st->last_count = 0;
  size_t n = r->count ? (size_t)r->count : 1;
  st->last_map = malloc(n * sizeof *st->last_map);
  st->last_names = malloc(n * sizeof *st->last_names);
  if (!st->last_map || !st->last_names) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory mapping features");
  for (int k = 0; k < r->count; k++) {
    int i = find_slot(s, r->names[k], NULL);
    if (i < 0 && add) {
      /* a record naming one feature twice counts its first value only */
      kiln_status e = add_feature(s, r->names[k], &i);
      if (e) return e;
    }
    for (int j = 0; j < k && i >= 0; j++)
      if (st->last_map[j] == i) i = -1;
    st->last_map[k] = i;
  }
  memcpy(st->last_names, r->names, (size_t)r->count * sizeof *r->names);
  st->last_count = r->count;
  *map = st->last_map;
  return NULL;
}

kiln_status kiln_stats_create(const kiln_stats_options *options, kiln_stats **out) {
  *out = NULL;
  int bins = options && options->bins > 0 ? options->bins : DEFAULT_BINS;
  int cats = options && options->max_categories > 0 ? options->max_categories : DEFAULT_CATEGORIES;
  if (bins > MAX_BINS) return kiln_error(KILN_INVALID_ARGUMENT, "%d histogram bins: at most %d", bins, MAX_BINS);
  if (cats > MAX_CATEGORIES)
    return kiln_error(KILN_INVALID_ARGUMENT, "%d distinct values per feature: at most %d", cats, MAX_CATEGORIES);
  kiln_stats *s = calloc(1, sizeof *s);
  struct kx_stats_state *st = calloc(1, sizeof *st);
  if (!s || !st) {
    free(s);
    free(st);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory creating statistics");
  }
  st->bins = bins;
  st->max_categories = cats;
  s->state = st;
  *out = s;
  return NULL;
}

void kiln_stats_free(kiln_stats *s) {
  if (!s) return;
  struct kx_stats_state *st = s->state;
  for (int i = 0; i < s->count; i++) {
    kiln_feature_stats *f = &s->features[i];
    free((char *)f->name);
    free(f->edges);
    free(f->counts);
    free(f->values);
    table_free(&st->acc[i].table);
    free(st->acc[i].text);
  }
  free(s->features);
  free(st->acc);
  free(st->slots);
  free(st->last_names);
  free(st->last_map);
  free(st);
  free(s);
}

/* ---------------------------------------------------------------- first pass */

static void to_doubles(const kiln_tensor *t, int64_t from, int64_t n, double *out) {
  const void *p = t->data;
  switch (t->dtype) {
#define CONVERT(DT, CT)                                                     \
  case DT:                                                                  \
    for (int64_t i = 0; i < n; i++) out[i] = (double)((const CT *)p)[from + i]; \
    break;
    CONVERT(KILN_FLOAT, float)
    CONVERT(KILN_DOUBLE, double)
    CONVERT(KILN_INT8, int8_t)
    CONVERT(KILN_UINT8, uint8_t)
    CONVERT(KILN_INT16, int16_t)
    CONVERT(KILN_UINT16, uint16_t)
    CONVERT(KILN_INT32, int32_t)
    CONVERT(KILN_UINT32, uint32_t)
    CONVERT(KILN_INT64, int64_t)
    CONVERT(KILN_UINT64, uint64_t)
#undef CONVERT
  default:
    for (int64_t i = 0; i < n; i++) out[i] = kiln_tensor_get_f64(t, from + i);
    break;
  }
}

static int64_t get_int(const kiln_tensor *t, int64_t i) {
  const void *p = t->data;
  switch (t->dtype) {
  case KILN_BOOL: return ((const uint8_t *)p)[i] != 0;
  case KILN_INT8: return ((const int8_t *)p)[i];
  case KILN_UINT8: return ((const uint8_t *)p)[i];
  case KILN_INT16: return ((const int16_t *)p)[i];
  case KILN_UINT16: return ((const uint16_t *)p)[i];
  case KILN_INT32: return ((const int32_t *)p)[i];
  case KILN_UINT32: return ((const uint32_t *)p)[i];
  default: return ((const int64_t *)p)[i];
  }
}

/* Moments of the finite elements, merged chunk by chunk (Chan et al.'s pairwise update keeps the
 * error of a long stream near that of numpy's pairwise sums). */
static void add_moments(kiln_feature_stats *f, feature_acc *a, const kiln_tensor *t, int64_t numel) {
  double x[CHUNK];
  for (int64_t at = 0; at < numel; at += CHUNK) {
    int64_t n = numel - at < CHUNK ? numel - at : CHUNK;
    to_doubles(t, at, n, x);
    double sum = 0, lo = INFINITY, hi = -INFINITY;
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) {
      double v = x[i];
      if (isnan(v)) {
        f->nan++;
      } else if (isinf(v)) {
        f->inf++;
      } else {
        x[k++] = v;
        sum += v;
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
      }
    }
    if (!k) continue;
    double mean = sum / (double)k, m2 = 0;
    for (int64_t i = 0; i < k; i++) m2 += (x[i] - mean) * (x[i] - mean);
    if (f->count == 0) {
      f->mean = mean;
      a->m2 = m2;
      f->min = lo;
      f->max = hi;
    } else {
      double total = (double)(f->count + k), delta = mean - f->mean;
      f->mean += delta * (double)k / total;
      a->m2 += m2 + delta * delta * (double)f->count * (double)k / total;
      f->min = lo < f->min ? lo : f->min;
      f->max = hi > f->max ? hi : f->max;
    }
    f->count += k;
  }
}

static kiln_status add_values(kiln_stats *s, kiln_feature_stats *f, feature_acc *a, const kiln_tensor *t,
                              int64_t numel) {
  if (!f->categorical || f->too_many) return NULL;
  int is_int = is_countable_int(t->dtype);
  if (a->table.is_int != is_int || (!is_int && t->dtype != KILN_STRING)) return NULL; /* a varied dtype */
  size_t limit = (size_t)s->state->max_categories;
  for (int64_t i = 0; i < numel; i++) {
    int overflow;
    const char *sv = NULL;
    if (!is_int) {
      sv = ((char *const *)t->data)[i];
      if (!sv) sv = "";
    }
    kiln_status e = table_add(&a->table, is_int ? get_int(t, i) : 0, sv, limit, &overflow);
    if (e) return e;
    if (overflow) {
      f->too_many = 1;
      table_free(&a->table);
      return NULL;
    }
  }
  return NULL;
}

static kiln_status add_value(kiln_stats *s, int i, const kiln_tensor *t) {
  kiln_feature_stats *f = &s->features[i];
  feature_acc *a = &s->state->acc[i];
  f->present++;
  if (!a->dtype_set) {
    a->dtype_set = 1;
    f->dtype = t->dtype;
    f->categorical = t->dtype == KILN_STRING || is_countable_int(t->dtype);
    a->table.is_int = is_countable_int(t->dtype);
  } else if (t->dtype != f->dtype) {
    f->dtype_varied = 1;
    f->dtype = widen(f->dtype, t->dtype);
  }
  if (!a->shape_set) {
    a->shape_set = 1;
    f->rank = t->rank;
    memcpy(f->dims, t->dims, sizeof f->dims);
  } else if (f->rank >= 0 &&
             (t->rank != f->rank || memcmp(t->dims, f->dims, (size_t)t->rank * sizeof t->dims[0]) != 0)) {
    f->rank = -1;
  }
  int64_t numel = kiln_tensor_numel(t);
  if (numel > 0 && !t->data) return kiln_error(KILN_INVALID_ARGUMENT, "feature '%s': a value without data", f->name);
  if (kx_dtype_is_numeric(t->dtype)) {
    f->numeric = 1;
    add_moments(f, a, t, numel);
  }
  return add_values(s, f, a, t, numel);
}

kiln_status kiln_stats_add(kiln_stats *s, const kiln_record *r) {
  if (s->state->ended) return kiln_error(KILN_FAILED_PRECONDITION, "statistics: a record added after the first pass ended");
  const int *map;
  kiln_status e = map_record(s, r, 1, &map);
  if (e) return e;
  s->num_records++;
  for (int k = 0; k < r->count; k++) {
    if (map[k] < 0 || r->values[k].dtype == KILN_UNDEFINED) continue;
    e = add_value(s, map[k], &r->values[k]);
    if (e) return kiln_status_prefix(e, "%s: record %lld: ", r->source ? r->source : "?", (long long)r->index);
  }
  return NULL;
}

/* ---------------------------------------------------------------- end of the first pass */

typedef struct sort_item {
  const char *text;
  int64_t ival;
  int64_t count;
  int is_int;
} sort_item;

static int by_count(const void *x, const void *y) {
  const sort_item *a = x, *b = y;
  if (a->count != b->count) return a->count > b->count ? -1 : 1;
  if (a->is_int) return (a->ival > b->ival) - (a->ival < b->ival);
  return strcmp(a->text, b->text);
}

static kiln_status make_value_list(kiln_feature_stats *f, feature_acc *a) {
  value_table *t = &a->table;
  if (!f->categorical || f->too_many || !t->n) return NULL;
  sort_item *items = malloc(t->n * sizeof *items);
  f->values = malloc(t->n * sizeof *f->values);
  if (t->is_int) a->text = malloc(t->n * 24);
  if (!items || !f->values || (t->is_int && !a->text)) {
    free(items);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory listing the values of '%s'", f->name);
  }
  size_t n = 0;
  for (size_t j = 0; j < t->cap; j++) {
    if (!t->counts[j]) continue;
    items[n].is_int = t->is_int;
    items[n].count = t->counts[j];
    if (t->is_int) {
      items[n].ival = t->ints[j];
      items[n].text = a->text + n * 24;
      snprintf(a->text + n * 24, 24, "%lld", (long long)t->ints[j]);
    } else {
      items[n].ival = 0;
      items[n].text = t->strs[j];
    }
    n++;
  }
  qsort(items, n, sizeof *items, by_count);
  for (size_t j = 0; j < n; j++) f->values[j] = (kiln_value_count){items[j].text, items[j].count};
  f->distinct = (int)n;
  free(items);
  return NULL;
}

static kiln_status set_edges(kiln_feature_stats *f, const double *edges, int n_edges) {
  double *e = malloc((size_t)n_edges * sizeof *e);
  int64_t *c = calloc((size_t)n_edges - 1, sizeof *c);
  if (!e || !c) {
    free(e);
    free(c);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for the histogram of '%s'", f->name);
  }
  memcpy(e, edges, (size_t)n_edges * sizeof *e);
  free(f->edges);
  free(f->counts);
  f->edges = e;
  f->counts = c;
  f->bins = n_edges - 1;
  f->outside = 0;
  return NULL;
}

kiln_status kx_stats_default_edges(kiln_feature_stats *f, double lo, double hi, int bins) {
  if (!(hi > lo)) bins = 1;
  double *e = malloc(((size_t)bins + 1) * sizeof *e);
  if (!e) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for the histogram of '%s'", f->name);
  double step = (hi - lo) / bins; /* numpy.linspace's arithmetic, so edges match numpy.histogram's */
  int wide = !isfinite(step);      /* a range beyond DBL_MAX: steps from halves instead */
  for (int i = 0; i <= bins; i++) e[i] = wide ? lo + (double)i * (hi / bins - lo / bins) : (double)i * step + lo;
  e[bins] = hi; /* exact, whatever the rounding above */
  kiln_status s = set_edges(f, e, bins + 1);
  free(e);
  return s;
}

kiln_status kiln_stats_end_pass(kiln_stats *s) {
  struct kx_stats_state *st = s->state;
  if (st->ended) return NULL;
  for (int i = 0; i < s->count; i++) {
    kiln_feature_stats *f = &s->features[i];
    feature_acc *a = &st->acc[i];
    f->missing = s->num_records - f->present;
    if (f->count > 0) f->std = sqrt(a->m2 / (double)f->count);
    kiln_status e = make_value_list(f, a);
    if (!e && f->numeric && f->count > 0) e = kx_stats_default_edges(f, f->min, f->max, st->bins);
    if (e) return e;
  }
  st->ended = 1;
  return NULL;
}

kiln_status kiln_stats_set_edges(kiln_stats *s, const char *feature, const double *edges, int n_edges) {
  if (!s->state->ended) /* end_pass would replace them with the default edges */
    return kiln_error(KILN_FAILED_PRECONDITION, "statistics: histogram edges set before the first pass ended");
  int i = kiln_stats_find(s, feature);
  if (i < 0) return kiln_error(KILN_NOT_FOUND, "statistics: no feature '%s'", feature);
  kiln_feature_stats *f = &s->features[i];
  if (!f->numeric) return kiln_error(KILN_INVALID_ARGUMENT, "statistics: feature '%s' is not numeric", feature);
  if (n_edges < 2 || n_edges > MAX_BINS + 1)
    return kiln_error(KILN_INVALID_ARGUMENT, "feature '%s': %d histogram edges, expected 2..%d", feature, n_edges,
                      MAX_BINS + 1);
  for (int k = 0; k < n_edges; k++)
    if (!isfinite(edges[k]) || (k && edges[k] < edges[k - 1]))
      return kiln_error(KILN_INVALID_ARGUMENT, "feature '%s': histogram edge %d (%g) is not finite and ascending",
                        feature, k, edges[k]);
  return set_edges(f, edges, n_edges);
}

/* ---------------------------------------------------------------- second pass */

static void add_to_histogram(kiln_feature_stats *f, const kiln_tensor *t) {
  int64_t numel = kiln_tensor_numel(t);
  double x[CHUNK];
  const double *e = f->edges;
  int bins = f->bins;
  for (int64_t at = 0; at < numel; at += CHUNK) {
    int64_t n = numel - at < CHUNK ? numel - at : CHUNK;
    to_doubles(t, at, n, x);
    for (int64_t i = 0; i < n; i++) {
      double v = x[i];
      if (!isfinite(v)) continue;
      if (v < e[0] || v > e[bins]) {
        f->outside++;
        continue;
      }
      /* the last bin whose lower edge is <= v */
      int lo = 0, hi = bins - 1;
      while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        if (e[mid] <= v) lo = mid;
        else hi = mid - 1;
      }
      f->counts[lo]++;
    }
  }
}

kiln_status kiln_stats_add_histogram(kiln_stats *s, const kiln_record *r) {
  if (!s->state->ended)
    return kiln_error(KILN_FAILED_PRECONDITION, "statistics: the histogram pass began before the first pass ended");
  const int *map;
  kiln_status e = map_record(s, r, 0, &map);
  if (e) return e;
  for (int k = 0; k < r->count; k++) {
    const kiln_tensor *t = &r->values[k];
    if (map[k] < 0 || !kx_dtype_is_numeric(t->dtype)) continue;
    kiln_feature_stats *f = &s->features[map[k]];
    if (f->edges && (kiln_tensor_numel(t) == 0 || t->data)) add_to_histogram(f, t);
  }
  return NULL;
}

/* ---------------------------------------------------------------- JSON */

static void put_number(kx_buf *b, double v) {
  if (isfinite(v)) kx_buf_json_double(b, v);
  else kx_buf_puts(b, "null");
}

void kx_stats_put_shape(kx_buf *b, int rank, const int64_t *dims) {
  if (rank < 0) {
    kx_buf_puts(b, "null");
    return;
  }
  kx_buf_putc(b, '[');
  for (int d = 0; d < rank; d++) kx_buf_printf(b, "%s%lld", d ? "," : "", (long long)dims[d]);
  kx_buf_putc(b, ']');
}

char *kiln_stats_to_json(const kiln_stats *s, int max_values) {
  kx_buf b = {0};
  kx_buf_printf(&b, "{\"num_records\":%lld,\"features\":[", (long long)s->num_records);
  for (int i = 0; i < s->count; i++) {
    const kiln_feature_stats *f = &s->features[i];
    kx_buf_puts(&b, i ? ",{\"name\":" : "{\"name\":");
    kx_buf_json_string(&b, f->name);
    kx_buf_printf(&b, ",\"dtype\":\"%s\",\"dtype_varied\":%s,\"shape\":", kiln_dtype_name(f->dtype),
                  f->dtype_varied ? "true" : "false");
    kx_stats_put_shape(&b, f->rank, f->dims);
    kx_buf_printf(&b, ",\"present\":%lld,\"missing\":%lld,\"missing_rate\":", (long long)f->present,
                  (long long)f->missing);
    put_number(&b, s->num_records ? (double)f->missing / (double)s->num_records : 0);
    if (f->numeric) {
      kx_buf_printf(&b, ",\"numeric\":{\"count\":%lld,\"nan\":%lld,\"inf\":%lld,\"min\":", (long long)f->count,
                    (long long)f->nan, (long long)f->inf);
      put_number(&b, f->min);
      kx_buf_puts(&b, ",\"max\":");
      put_number(&b, f->max);
      kx_buf_puts(&b, ",\"mean\":");
      put_number(&b, f->mean);
      kx_buf_puts(&b, ",\"std\":");
      put_number(&b, f->std);
      if (f->edges) {
        kx_buf_puts(&b, ",\"histogram\":{\"edges\":[");
        for (int k = 0; k <= f->bins; k++) {
          if (k) kx_buf_putc(&b, ',');
          put_number(&b, f->edges[k]);
        }
        kx_buf_puts(&b, "],\"counts\":[");
        for (int k = 0; k < f->bins; k++) kx_buf_printf(&b, "%s%lld", k ? "," : "", (long long)f->counts[k]);
        kx_buf_puts(&b, "]}");
      }
      kx_buf_putc(&b, '}');
    }
    if (f->categorical) {
      kx_buf_printf(&b, ",\"values\":{\"distinct\":%d,\"too_many\":%s,\"top\":[", f->distinct,
                    f->too_many ? "true" : "false");
      int n = max_values < 0 || max_values > f->distinct ? f->distinct : max_values;
      int is_int = f->dtype != KILN_STRING;
      for (int k = 0; k < n; k++) {
        kx_buf_puts(&b, k ? ",{\"value\":" : "{\"value\":");
        if (is_int) kx_buf_puts(&b, f->values[k].value);
        else kx_buf_json_string(&b, f->values[k].value);
        kx_buf_printf(&b, ",\"count\":%lld}", (long long)f->values[k].count);
      }
      kx_buf_puts(&b, "]}");
    }
    kx_buf_putc(&b, '}');
  }
  kx_buf_puts(&b, "]}");
  return kx_buf_take(&b, NULL);
}
