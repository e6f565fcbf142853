/* A map stage's per-record transforms (decode, resize, crop, scale, normalize, one_hot, cast,
 * select, rename): parsed once from the spec into read-only state, then applied to records in
 * place from any number of threads. Resize kernels live in resize.c, predicates in predicate.c. */
#include "data/data.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TRANSFORMS 1024
#define MAX_FEATURES 4096   /* features one transform may name */
#define MAX_STATS 65536     /* per-channel mean / std values */
#define MAX_SIDE 65536      /* resize and crop sides */
#define MAX_DEPTH (1 << 24) /* one_hot depth */
#define MAX_SCHEMA_BYTES ((size_t)64 << 20)
#define MAX_LAYOUTS 256 /* distinct feature lists one rename sees (upstream stages have one or a few) */

typedef enum xf_kind { XF_DECODE, XF_RESIZE, XF_CROP, XF_SCALE, XF_NORMALIZE, XF_ONE_HOT, XF_CAST, XF_SELECT, XF_RENAME } xf_kind;

static const char *const kind_names[] = {"decode", "resize", "crop", "scale", "normalize", "one_hot", "cast",
                                         "select", "rename", NULL};

/* Keys each transform accepts. */
static const char *const keys_decode[] = {"feature", "features", "channels", NULL};
static const char *const keys_resize[] = {"feature", "features", "size", "method", NULL};
static const char *const keys_crop[] = {"feature", "features", "size", "offset", "center", NULL};
static const char *const keys_scale[] = {"feature", "features", "factor", "offset", NULL};
static const char *const keys_normalize[] = {"feature", "features", "mean", "std", "schema", NULL};
static const char *const keys_one_hot[] = {"feature", "features", "depth", "dtype", NULL};
static const char *const keys_cast[] = {"feature", "features", "dtype", NULL};
static const char *const keys_select[] = {"feature", "features", NULL};
static const char *const keys_rename[] = {"from", "to", NULL};
static const char *const *const kind_keys[] = {keys_decode, keys_resize, keys_crop, keys_scale, keys_normalize,
                                               keys_one_hot, keys_cast, keys_select, keys_rename};

/* A rename's output names for one upstream feature list: records of a dataset share their names
 * array, so the renamed array is built the first time a list is seen and reused after. */
typedef struct name_layout {
  int count;
  const char **in;  /* the upstream names (pointers compared, strings not owned) */
  const char **out; /* the same with `from` replaced by `to` */
  struct name_layout *next;
} name_layout;

/* Mean and std for one feature: one value, or one per channel (the last axis). */
typedef struct norm_stats {
  int n_mean, n_std;
  double *mean, *std;
} norm_stats;

typedef struct xf {
  xf_kind kind;
  char *where;     /* "stages[1].map.transforms[2].resize" */
  char **features; /* inputs; for select also the record's new names, in order */
  int n_features;
  int channels;        /* decode */
  int64_t size[2];     /* resize, crop: [height, width] */
  int nearest;         /* resize */
  int64_t offset[2];   /* crop: [y, x] */
  int center;          /* crop */
  double factor, bias; /* scale */
  norm_stats *stats;   /* normalize: one per feature */
  int64_t depth;       /* one_hot */
  kiln_dtype dtype;    /* one_hot, cast */
  char *from, *to;     /* rename */
  pthread_mutex_t lock; /* rename: guards layouts */
  int lock_ready;
  name_layout *layouts;
  int n_layouts;
} xf;

struct kx_transforms {
  int count;
  xf *items;
};

/* ---------------------------------------------------------------- helpers */

static int is_numeric(kiln_dtype t) {
  switch (t) {
  case KILN_FLOAT: case KILN_UINT8: case KILN_INT8: case KILN_UINT16: case KILN_INT16: case KILN_INT32:
  case KILN_INT64: case KILN_BOOL: case KILN_FLOAT16: case KILN_DOUBLE: case KILN_UINT32: case KILN_UINT64:
  case KILN_BFLOAT16: return 1;
  default: return 0;
  }
}

static kiln_status no_memory(const char *where) {
  return kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: out of memory", where);
}

static char *format_where(const char *where, int index, const char *kind) {
  size_t n = strlen(where) + strlen(kind) + 24;
  char *s = malloc(n);
  if (s) snprintf(s, n, "%s[%d].%s", where, index, kind);
  return s;
}

/* Reads "feature" (one name) or "features" (a non-empty list of distinct names). */
static kiln_status parse_features(const cJSON *obj, const char *where, xf *x) {
  const cJSON *one = cJSON_GetObjectItemCaseSensitive(obj, "feature");
  const cJSON *many = cJSON_GetObjectItemCaseSensitive(obj, "features");
  if (one && many) return kiln_error(KILN_INVALID_ARGUMENT, "%s: give 'feature' or 'features', not both", where);
  if (!one && !many) return kiln_error(KILN_INVALID_ARGUMENT, "%s: missing required key 'feature' (or 'features')", where);
  if (one && !cJSON_IsString(one)) return kiln_error(KILN_INVALID_ARGUMENT, "%s.feature: expected a string", where);
  if (many && (!cJSON_IsArray(many) || !many->child))
    return kiln_error(KILN_INVALID_ARGUMENT, "%s.features: expected a non-empty list of strings", where);
  int n = one ? 1 : cJSON_GetArraySize(many);
  if (n > MAX_FEATURES) return kiln_error(KILN_INVALID_ARGUMENT, "%s.features: more than %d features", where, MAX_FEATURES);
  if (!(x->features = calloc((size_t)n, sizeof *x->features))) return no_memory(where);
  const cJSON *e = one ? one : many->child;
  for (int i = 0; i < n; i++, e = e->next) {
    if (!cJSON_IsString(e)) return kiln_error(KILN_INVALID_ARGUMENT, "%s.features[%d]: expected a string", where, i);
    for (int j = 0; j < i; j++)
      if (strcmp(x->features[j], e->valuestring) == 0)
        return kiln_error(KILN_INVALID_ARGUMENT, "%s.features: '%s' is listed twice", where, e->valuestring);
    if (!(x->features[i] = strdup(e->valuestring))) return no_memory(where);
    x->n_features = i + 1;
  }
  return NULL;
}

/* A required [a, b] pair of integers in lo..hi. */
static kiln_status parse_pair(const cJSON *obj, const char *where, const char *key, int64_t lo, int64_t hi,
                              int64_t out[2]) {
  double v[2];
  int n = 0;
  kiln_status s = kx_spec_doubles(obj, where, key, 1, v, 2, &n);
  if (s) return s;
  if (n != 2) return kiln_error(KILN_INVALID_ARGUMENT, "%s.%s: expected [height, width], found %d value(s)", where, key, n);
  for (int i = 0; i < 2; i++) {
    if (v[i] != floor(v[i]) || v[i] < (double)lo || v[i] > (double)hi)
      return kiln_error(KILN_INVALID_ARGUMENT, "%s.%s[%d]: expected an integer in %lld..%lld, found %.17g", where, key,
                        i, (long long)lo, (long long)hi, v[i]);
    out[i] = (int64_t)v[i];
  }
  return NULL;
}

/* A numeric (or bool) dtype by name. */
static kiln_status parse_dtype(const cJSON *obj, const char *where, int required, kiln_dtype *out) {
  const char *name = NULL;
  kiln_status s = kx_spec_string(obj, where, "dtype", required, &name);
  if (s || !name) return s;
  kiln_dtype t = kiln_dtype_from_name(name);
  if (!is_numeric(t))
    return kiln_error(KILN_INVALID_ARGUMENT, "%s.dtype: '%s' is not a numeric dtype (float, double, int64, uint8, bool, ...)",
                      where, name);
  *out = t;
  return NULL;
}

/* A list of mean or std values, copied (std: every value finite and > 0). */
static kiln_status parse_stats_list(const cJSON *obj, const char *where, const char *key, int is_std, double **out,
                                    int *n) {
  double *v = malloc(MAX_STATS * sizeof *v);
  if (!v) return no_memory(where);
  kiln_status s = kx_spec_doubles(obj, where, key, 1, v, MAX_STATS, n);
  if (!s && *n == 0) s = kiln_error(KILN_INVALID_ARGUMENT, "%s.%s: expected at least one value", where, key);
  for (int i = 0; !s && i < *n; i++) {
    if (!isfinite(v[i]))
      s = kiln_error(KILN_INVALID_ARGUMENT, "%s.%s[%d]: expected a finite number", where, key, i);
    else if (is_std && v[i] <= 0)
      s = kiln_error(KILN_INVALID_ARGUMENT, "%s.%s[%d]: std must be > 0 (it divides), found %.17g", where, key, i, v[i]);
  }
  if (s) {
    free(v);
    return s;
  }
  double *shrunk = realloc(v, (size_t)*n * sizeof *v);
  *out = shrunk ? shrunk : v;
  return NULL;
}

static kiln_status parse_stats(const cJSON *obj, const char *where, norm_stats *st) {
  kiln_status s = parse_stats_list(obj, where, "mean", 0, &st->mean, &st->n_mean);
  if (!s) s = parse_stats_list(obj, where, "std", 1, &st->std, &st->n_std);
  /* one value, or one per channel: lists of two lengths would leave channels without a value */
  if (!s && st->n_mean > 1 && st->n_std > 1 && st->n_mean != st->n_std)
    s = kiln_error(KILN_INVALID_ARGUMENT, "%s: %d mean values and %d std values: give one, or one per channel for both",
                   where, st->n_mean, st->n_std);
  return s;
}

/* normalize {"schema": path}: each feature's "stats" from the schema file, read now so that a
 * missing file or feature fails when the pipeline opens, not at its first record. */
static kiln_status parse_schema_stats(kx_data_ctx *ctx, const char *file, const char *where, xf *x) {
  char *path = ctx ? kx_data_path(ctx, file) : strdup(file);
  if (!path) return no_memory(where);
  void *text = NULL;
  size_t len = 0;
  kiln_status s = kiln_file_read(path, MAX_SCHEMA_BYTES, &text, &len);
  if (s) {
    s = kiln_status_prefix(s, "%s.schema: ", where);
    free(path);
    return s;
  }
  cJSON *root = cJSON_ParseWithLength(text, len);
  free(text);
  const cJSON *version = root ? cJSON_GetObjectItemCaseSensitive(root, "kiln_schema") : NULL;
  const cJSON *features = root ? cJSON_GetObjectItemCaseSensitive(root, "features") : NULL;
  if (!root) s = kiln_error(KILN_INVALID_ARGUMENT, "%s.schema: %s is not valid JSON", where, path);
  else if (!cJSON_IsNumber(version) || version->valuedouble != 1)
    s = kiln_error(KILN_INVALID_ARGUMENT, "%s.schema: %s: expected \"kiln_schema\": 1", where, path);
  else if (!cJSON_IsArray(features))
    s = kiln_error(KILN_INVALID_ARGUMENT, "%s.schema: %s: expected a \"features\" list", where, path);
  for (int f = 0; !s && f < x->n_features; f++) {
    const cJSON *entry = NULL;
    int k = 0;
    for (const cJSON *e = features->child; e && !entry; e = e->next, k++) {
      const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
      if (cJSON_IsString(name) && strcmp(name->valuestring, x->features[f]) == 0) entry = e;
    }
    if (!entry) {
      s = kiln_error(KILN_NOT_FOUND, "%s.schema: %s has no feature '%s'", where, path, x->features[f]);
      break;
    }
    const cJSON *stats = cJSON_GetObjectItemCaseSensitive(entry, "stats");
    char at[128];
    snprintf(at, sizeof at, "%s: features[%d].stats", file, k - 1);
    if (!cJSON_IsObject(stats))
      s = kiln_error(KILN_INVALID_ARGUMENT, "%s.schema: %s: feature '%s' has no \"stats\" object (not numeric?)", where,
                     path, x->features[f]);
    else if ((s = parse_stats(stats, at, &x->stats[f])))
      s = kiln_status_prefix(s, "%s.schema: ", where);
  }
  cJSON_Delete(root);
  free(path);
  return s;
}

/* Parses the options of one transform (its object's keys already checked). */
static kiln_status parse_options(kx_data_ctx *ctx, const cJSON *o, const char *w, xf *x) {
  kiln_status s = NULL;
  if (x->kind == XF_RENAME) {
    const char *from = NULL, *to = NULL;
    if ((s = kx_spec_string(o, w, "from", 1, &from)) || (s = kx_spec_string(o, w, "to", 1, &to))) return s;
    if (pthread_mutex_init(&x->lock, NULL) != 0) return kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: cannot create a lock", w);
    x->lock_ready = 1;
    if (!(x->from = strdup(from)) || !(x->to = strdup(to))) return no_memory(w);
    return NULL;
  }
  if ((s = parse_features(o, w, x))) return s;
  switch (x->kind) {
  case XF_DECODE: {
    int64_t c = 0;
    if ((s = kx_spec_int(o, w, "channels", 0, 0, 3, &c))) return s;
    if (c == 2) return kiln_error(KILN_INVALID_ARGUMENT, "%s.channels: expected 0 (as stored), 1 or 3, found 2", w);
    x->channels = (int)c;
    return NULL;
  }
  case XF_RESIZE: {
    const char *method = "bilinear";
    if ((s = parse_pair(o, w, "size", 1, MAX_SIDE, x->size)) || (s = kx_spec_string(o, w, "method", 0, &method))) return s;
    if (strcmp(method, "nearest") == 0) x->nearest = 1;
    else if (strcmp(method, "bilinear") != 0)
      return kiln_error(KILN_INVALID_ARGUMENT, "%s.method: expected \"bilinear\" or \"nearest\", found \"%s\"", w, method);
    return NULL;
  }
  case XF_CROP: {
    if ((s = parse_pair(o, w, "size", 1, MAX_SIDE, x->size)) || (s = kx_spec_bool(o, w, "center", &x->center))) return s;
    int has_offset = cJSON_GetObjectItemCaseSensitive(o, "offset") != NULL;
    if (has_offset && x->center) return kiln_error(KILN_INVALID_ARGUMENT, "%s: give 'offset' or \"center\": true, not both", w);
    if (!has_offset && !x->center)
      return kiln_error(KILN_INVALID_ARGUMENT, "%s: missing required key 'offset' (or \"center\": true)", w);
    return has_offset ? parse_pair(o, w, "offset", 0, INT32_MAX, x->offset) : NULL;
  }
  case XF_SCALE:
    x->factor = 1;
    if ((s = kx_spec_double(o, w, "factor", 0, &x->factor)) || (s = kx_spec_double(o, w, "offset", 0, &x->bias))) return s;
    if (!isfinite(x->factor) || !isfinite(x->bias))
      return kiln_error(KILN_INVALID_ARGUMENT, "%s: factor and offset must be finite", w);
    return NULL;
  case XF_NORMALIZE: {
    const char *schema = NULL;
    if ((s = kx_spec_string(o, w, "schema", 0, &schema))) return s;
    int explicit = cJSON_GetObjectItemCaseSensitive(o, "mean") || cJSON_GetObjectItemCaseSensitive(o, "std");
    if (schema && explicit) return kiln_error(KILN_INVALID_ARGUMENT, "%s: give 'schema' or 'mean' and 'std', not both", w);
    if (!(x->stats = calloc((size_t)x->n_features, sizeof *x->stats))) return no_memory(w);
    if (schema) return parse_schema_stats(ctx, schema, w, x);
    if (!explicit) return kiln_error(KILN_INVALID_ARGUMENT, "%s: missing required keys 'mean' and 'std' (or 'schema')", w);
    for (int f = 0; f < x->n_features && !s; f++) s = parse_stats(o, w, &x->stats[f]);
    return s;
  }
  case XF_ONE_HOT:
    x->dtype = KILN_FLOAT;
    if ((s = kx_spec_int(o, w, "depth", 1, 1, MAX_DEPTH, &x->depth))) return s;
    return parse_dtype(o, w, 0, &x->dtype);
  case XF_CAST: return parse_dtype(o, w, 1, &x->dtype);
  default: return NULL; /* select: the features are all it needs */
  }
}

static void free_item(xf *x) {
  for (int i = 0; i < x->n_features; i++) free(x->features[i]);
  free(x->features);
  if (x->stats)
    for (int i = 0; i < x->n_features; i++) {
      free(x->stats[i].mean);
      free(x->stats[i].std);
    }
  free(x->stats);
  if (x->lock_ready) {
    for (name_layout *l = x->layouts, *next; l; l = next) {
      next = l->next;
      free(l->in);
      free(l->out);
      free(l);
    }
    pthread_mutex_destroy(&x->lock);
  }
  free(x->from);
  free(x->to);
  free(x->where);
}

void kx_transforms_free(kx_transforms *t) {
  if (!t) return;
  for (int i = 0; i < t->count; i++) free_item(&t->items[i]);
  free(t->items);
  free(t);
}

/* `where` names the list ("stages[1].map.transforms"); each transform's errors then start with
 * "stages[1].map.transforms[2].resize: ". ctx resolves a normalize schema's path (NULL: as given). */
kiln_status kx_transforms_parse(kx_data_ctx *ctx, const cJSON *list, const char *where, kx_transforms **out) {
  *out = NULL;
  if (!cJSON_IsArray(list)) return kiln_error(KILN_INVALID_ARGUMENT, "%s: expected a list of transforms", where);
  int n = cJSON_GetArraySize(list);
  if (n > MAX_TRANSFORMS) return kiln_error(KILN_INVALID_ARGUMENT, "%s: more than %d transforms", where, MAX_TRANSFORMS);
  kx_transforms *t = calloc(1, sizeof *t);
  if (!t || (n && !(t->items = calloc((size_t)n, sizeof *t->items)))) {
    free(t);
    return no_memory(where);
  }
  kiln_status s = NULL;
  int i = 0;
  for (const cJSON *e = list->child; e && !s; e = e->next, i++) {
    if (!cJSON_IsObject(e) || !e->child || e->child->next) {
      s = kiln_error(KILN_INVALID_ARGUMENT, "%s[%d]: expected an object with exactly one key, the transform's name", where, i);
      break;
    }
    const char *name = e->child->string;
    int kind = 0;
    while (kind_names[kind] && strcmp(kind_names[kind], name) != 0) kind++;
    if (!kind_names[kind]) {
      s = kiln_error(KILN_INVALID_ARGUMENT,
                     "%s[%d]: unknown transform '%s' (known: decode, resize, crop, scale, normalize, one_hot, cast, "
                     "select, rename)", where, i, name);
      break;
    }
    xf *x = &t->items[i];
    t->count = i + 1;
    x->kind = (xf_kind)kind;
    if (!(x->where = format_where(where, i, name))) {
      s = no_memory(where);
      break;
    }
    s = kx_spec_keys(e->child, x->where, kind_keys[kind]);
    if (!s) s = parse_options(ctx, e->child, x->where, x);
  }
  if (s) {
    kx_transforms_free(t);
    return s;
  }
  *out = t;
  return NULL;
}

/* ---------------------------------------------------------------- apply */

static kiln_status apply_error(const xf *x, const char *feature, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static kiln_status apply_error(const xf *x, const char *feature, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  kiln_status s = kiln_errorv(KILN_INVALID_ARGUMENT, fmt, ap);
  va_end(ap);
  return kiln_status_prefix(s, "%s: feature '%s': ", x->where, feature);
}

/* The index of a feature that must be in the record and not missing. */
static kiln_status find_feature(const xf *x, const kiln_record *r, const char *name, int *out) {
  int i = kiln_record_find(r, name);
  if (i < 0) {
    char known[256] = "";
    size_t used = 0;
    for (int k = 0; k < r->count && used < sizeof known; k++)
      used += (size_t)snprintf(known + used, sizeof known - used, "%s%s", k ? ", " : "", r->names[k]);
    return apply_error(x, name, "not in the record (it has: %s)", r->count ? known : "nothing");
  }
  if (r->values[i].dtype == KILN_UNDEFINED) return apply_error(x, name, "the value is missing (null)");
  *out = i;
  return NULL;
}

static kiln_status apply_decode(const xf *x, const char *name, kiln_tensor *v, kiln_tensor *out) {
  char desc[96];
  const uint8_t *bytes;
  size_t len;
  if (v->dtype == KILN_UINT8 && v->rank == 1) {
    bytes = v->data;
    len = (size_t)v->dims[0];
  } else if (v->dtype == KILN_STRING && kiln_tensor_numel(v) == 1) {
    bytes = (const uint8_t *)((char *const *)v->data)[0];
    len = bytes ? strlen((const char *)bytes) : 0;
  } else {
    return apply_error(x, name, "expected encoded image bytes (uint8[N] or one string), found %s",
                       kiln_tensor_describe(v, desc, sizeof desc));
  }
  kiln_status s = kx_image_decode(bytes, len, x->channels, out);
  return s ? kiln_status_prefix(s, "%s: feature '%s': ", x->where, name) : NULL;
}

static kiln_status apply_crop(const xf *x, const char *name, const kiln_tensor *v, kiln_tensor *out) {
  char desc[96];
  if ((v->rank != 2 && v->rank != 3) || !is_numeric(v->dtype))
    return apply_error(x, name, "expected a numeric image [H, W, C] or [H, W], found %s",
                       kiln_tensor_describe(v, desc, sizeof desc));
  const int64_t ih = v->dims[0], iw = v->dims[1], h = x->size[0], w = x->size[1];
  int64_t y0 = x->offset[0], x0 = x->offset[1];
  if (x->center) {
    /* floor, as tf.image.resize_with_crop_or_pad does */
    y0 = (ih - h) / 2;
    x0 = (iw - w) / 2;
  }
  if (h > ih || w > iw || y0 < 0 || x0 < 0 || y0 > ih - h || x0 > iw - w)
    return apply_error(x, name, "a %lldx%lld crop at (%lld, %lld) does not fit in %s", (long long)h, (long long)w,
                       (long long)y0, (long long)x0, kiln_tensor_describe(v, desc, sizeof desc));
  const int64_t c = v->rank == 3 ? v->dims[2] : 1;
  int64_t dims[3] = {h, w, c};
  kiln_status s = kiln_tensor_alloc(out, v->dtype, v->rank, dims);
  if (s || !out->data) return s;
  const size_t pixel = (size_t)c * kiln_dtype_size(v->dtype);
  const char *src = (const char *)v->data + ((size_t)y0 * (size_t)iw + (size_t)x0) * pixel;
  char *dst = out->data;
  for (int64_t y = 0; y < h; y++, src += (size_t)iw * pixel, dst += (size_t)w * pixel) memcpy(dst, src, (size_t)w * pixel);
  return NULL;
}

/* Loads n elements from index `at` of a numeric tensor as doubles (one dtype switch per chunk). */
static void load_f64(const kiln_tensor *t, int64_t at, int64_t n, double *dst) {
#define LOAD(T)                                                                   \
  do {                                                                            \
    const T *p = (const T *)t->data + at;                                         \
    for (int64_t i = 0; i < n; i++) dst[i] = (double)p[i];                        \
  } while (0)
  switch (t->dtype) {
  case KILN_BOOL:
  case KILN_UINT8: LOAD(uint8_t); break;
  case KILN_INT8: LOAD(int8_t); break;
  case KILN_UINT16: LOAD(uint16_t); break;
  case KILN_INT16: LOAD(int16_t); break;
  case KILN_INT32: LOAD(int32_t); break;
  case KILN_UINT32: LOAD(uint32_t); break;
  case KILN_INT64: LOAD(int64_t); break;
  case KILN_UINT64: LOAD(uint64_t); break;
  case KILN_FLOAT: LOAD(float); break;
  case KILN_DOUBLE: LOAD(double); break;
  default:
    for (int64_t i = 0; i < n; i++) dst[i] = kiln_tensor_get_f64(t, at + i);
    break;
  }
#undef LOAD
}

#define CHUNK 1024

/* normalize: float32 out = (x - mean[c]) / std[c], c the last-axis index when a list has one
 * value per channel; computed in double and rounded once. */
static kiln_status apply_normalize(const xf *x, int f, const char *name, const kiln_tensor *v, kiln_tensor *out) {
  char desc[96];
  const norm_stats *st = &x->stats[f];
  if (!is_numeric(v->dtype))
    return apply_error(x, name, "expected a numeric tensor, found %s", kiln_tensor_describe(v, desc, sizeof desc));
  const int64_t last = v->rank ? v->dims[v->rank - 1] : 1;
  const int n_max = st->n_mean > st->n_std ? st->n_mean : st->n_std;
  if (n_max > 1 && last != n_max)
    return apply_error(x, name, "%d per-channel mean/std values need a last axis of %d, found %s", n_max, n_max,
                       kiln_tensor_describe(v, desc, sizeof desc));
  kiln_status s = kiln_tensor_alloc(out, KILN_FLOAT, v->rank, v->dims);
  if (s) return s;
  const int64_t n = kiln_tensor_numel(v);
  float *dst = out->data;
  double buf[CHUNK];
  for (int64_t at = 0; at < n; at += CHUNK) {
    const int64_t m = n - at < CHUNK ? n - at : CHUNK;
    load_f64(v, at, m, buf);
    if (n_max == 1) {
      const double a = st->mean[0], b = st->std[0];
      for (int64_t i = 0; i < m; i++) dst[at + i] = (float)((buf[i] - a) / b);
    } else {
      for (int64_t i = 0; i < m; i++) {
        const int64_t c = (at + i) % last;
        dst[at + i] = (float)((buf[i] - st->mean[st->n_mean > 1 ? c : 0]) / st->std[st->n_std > 1 ? c : 0]);
      }
    }
  }
  return NULL;
}

/* scale: float32 out = x * factor + offset, computed in double and rounded once. */
static kiln_status apply_scale(const xf *x, const char *name, const kiln_tensor *v, kiln_tensor *out) {
  char desc[96];
  if (!is_numeric(v->dtype))
    return apply_error(x, name, "expected a numeric tensor, found %s", kiln_tensor_describe(v, desc, sizeof desc));
  kiln_status s = kiln_tensor_alloc(out, KILN_FLOAT, v->rank, v->dims);
  if (s) return s;
  const int64_t n = kiln_tensor_numel(v);
  float *dst = out->data;
  double buf[CHUNK];
  for (int64_t at = 0; at < n; at += CHUNK) {
    const int64_t m = n - at < CHUNK ? n - at : CHUNK;
    load_f64(v, at, m, buf);
    for (int64_t i = 0; i < m; i++) dst[at + i] = (float)(buf[i] * x->factor + x->bias);
  }
  return NULL;
}

/* Stores a value known to fit the (numeric) dtype. */
static void store_f64(void *data, int64_t i, kiln_dtype t, double v) {
  switch (t) {
  case KILN_FLOAT: ((float *)data)[i] = (float)v; break;
  case KILN_DOUBLE: ((double *)data)[i] = v; break;
  case KILN_FLOAT16: ((uint16_t *)data)[i] = kiln_float_to_half((float)v); break;
  case KILN_BFLOAT16: ((uint16_t *)data)[i] = kiln_float_to_bfloat16((float)v); break;
  case KILN_BOOL: ((uint8_t *)data)[i] = v != 0; break;
  case KILN_UINT8: ((uint8_t *)data)[i] = (uint8_t)v; break;
  case KILN_INT8: ((int8_t *)data)[i] = (int8_t)v; break;
  case KILN_UINT16: ((uint16_t *)data)[i] = (uint16_t)v; break;
  case KILN_INT16: ((int16_t *)data)[i] = (int16_t)v; break;
  case KILN_INT32: ((int32_t *)data)[i] = (int32_t)v; break;
  case KILN_UINT32: ((uint32_t *)data)[i] = (uint32_t)v; break;
  case KILN_INT64: ((int64_t *)data)[i] = (int64_t)v; break;
  case KILN_UINT64: ((uint64_t *)data)[i] = (uint64_t)v; break;
  default: break;
  }
}

static kiln_status apply_one_hot(const xf *x, const char *name, const kiln_tensor *v, kiln_tensor *out) {
  char desc[96];
  if (!is_numeric(v->dtype) || v->dtype == KILN_BOOL || v->rank >= KILN_MAX_RANK)
    return apply_error(x, name, "expected integer labels (a scalar or a vector), found %s",
                       kiln_tensor_describe(v, desc, sizeof desc));
  int64_t dims[KILN_MAX_RANK];
  memcpy(dims, v->dims, sizeof(int64_t) * (size_t)v->rank);
  dims[v->rank] = x->depth;
  kiln_status s = kiln_tensor_alloc(out, x->dtype, v->rank + 1, dims);
  if (s) return s;
  const int64_t n = kiln_tensor_numel(v);
  for (int64_t i = 0; i < n; i++) {
    double label = kiln_tensor_get_f64(v, i);
    if (!(label >= 0 && label < (double)x->depth) || label != floor(label)) {
      kiln_tensor_release(out);
      return apply_error(x, name, "label %.17g (element %lld) is not an integer in 0..%lld", label, (long long)i,
                         (long long)(x->depth - 1));
    }
    store_f64(out->data, i * x->depth + (int64_t)label, x->dtype, 1);
  }
  return NULL;
}

/* ---------------------------------------------------------------- cast */

static int is_float_type(kiln_dtype t) { return kiln_dtype_is_float(t); }

/* Signed-integer view of an integer element; uint64 elements come back through *u. */
static int64_t int_at(const kiln_tensor *t, int64_t i, uint64_t *u) {
  int64_t v = 0;
  switch (t->dtype) {
  case KILN_BOOL:
  case KILN_UINT8: v = ((const uint8_t *)t->data)[i]; break;
  case KILN_INT8: v = ((const int8_t *)t->data)[i]; break;
  case KILN_UINT16: v = ((const uint16_t *)t->data)[i]; break;
  case KILN_INT16: v = ((const int16_t *)t->data)[i]; break;
  case KILN_INT32: v = ((const int32_t *)t->data)[i]; break;
  case KILN_UINT32: v = ((const uint32_t *)t->data)[i]; break;
  case KILN_INT64: v = ((const int64_t *)t->data)[i]; break;
  case KILN_UINT64: *u = ((const uint64_t *)t->data)[i]; return 0;
  default: break;
  }
  *u = (uint64_t)v;
  return v;
}

/* Stores the low bytes of a two's-complement value: integer casts wrap as numpy's astype does. */
static void store_bits(void *data, int64_t i, size_t size, uint64_t bits) {
  uint8_t b8 = (uint8_t)bits;
  uint16_t b16 = (uint16_t)bits;
  uint32_t b32 = (uint32_t)bits;
  char *p = (char *)data + (size_t)i * size;
  switch (size) {
  case 1: memcpy(p, &b8, 1); break;
  case 2: memcpy(p, &b16, 2); break;
  case 4: memcpy(p, &b32, 4); break;
  default: memcpy(p, &bits, 8); break;
  }
}

/* The range of an integer dtype, as doubles that are exact (or the next float value past it). */
static void int_limits(kiln_dtype t, double *lo, double *hi_excl) {
  const size_t bits = kiln_dtype_size(t) * 8;
  const int is_signed = t == KILN_INT8 || t == KILN_INT16 || t == KILN_INT32 || t == KILN_INT64;
  *lo = is_signed ? -ldexp(1, (int)bits - 1) : 0;
  *hi_excl = is_signed ? ldexp(1, (int)bits - 1) : ldexp(1, (int)bits);
}

/* Between numeric dtypes and bool. Float to integer truncates toward zero like numpy's astype;
 * NaN and values outside the target's range are an error (numpy's result there is undefined).
 * Integer to integer wraps (two's complement), as numpy does. Anything to bool is x != 0. */
static kiln_status apply_cast(const xf *x, const char *name, const kiln_tensor *v, kiln_tensor *out) {
  char desc[96];
  if (!is_numeric(v->dtype))
    return apply_error(x, name, "cannot cast %s to %s (only numeric and bool tensors cast)",
                       kiln_tensor_describe(v, desc, sizeof desc), kiln_dtype_name(x->dtype));
  kiln_status s = kiln_tensor_alloc(out, x->dtype, v->rank, v->dims);
  if (s) return s;
  const int64_t n = kiln_tensor_numel(v);
  const kiln_dtype to = x->dtype;
  if (v->dtype == to) {
    if (n) memcpy(out->data, v->data, kiln_tensor_nbytes(v));
    return NULL;
  }
  const size_t size = kiln_dtype_size(to);
  double lo = 0, hi = 0;
  if (!is_float_type(to) && to != KILN_BOOL) int_limits(to, &lo, &hi);
  for (int64_t i = 0; i < n; i++) {
    if (is_float_type(v->dtype)) {
      double d = kiln_tensor_get_f64(v, i);
      if (is_float_type(to) || to == KILN_BOOL) {
        store_f64(out->data, i, to, d);
        continue;
      }
      double t = trunc(d);
      if (!(t >= lo && t < hi)) {
        kiln_tensor_release(out);
        return apply_error(x, name, "element %lld (%.17g) does not fit %s", (long long)i, d, kiln_dtype_name(to));
      }
      store_bits(out->data, i, size, t < 0 ? (uint64_t)(int64_t)t : (uint64_t)t);
    } else {
      uint64_t u;
      int64_t s64 = int_at(v, i, &u);
      if (to == KILN_BOOL) ((uint8_t *)out->data)[i] = u != 0;
      else if (!is_float_type(to)) store_bits(out->data, i, size, u);
      else if (to == KILN_FLOAT && v->dtype == KILN_UINT64) ((float *)out->data)[i] = (float)u; /* one rounding */
      else if (v->dtype == KILN_UINT64) store_f64(out->data, i, to, (double)u);
      else if (to == KILN_FLOAT) ((float *)out->data)[i] = (float)s64; /* one rounding, not two */
      else store_f64(out->data, i, to, (double)s64);
    }
  }
  return NULL;
}

/* ---------------------------------------------------------------- select, rename */

static kiln_status apply_select(const xf *x, kiln_record *r) {
  int stack_idx[64];
  int *idx = x->n_features <= 64 ? stack_idx : malloc((size_t)x->n_features * sizeof *idx);
  kiln_tensor *kept = malloc((size_t)x->n_features * sizeof *kept);
  if (!idx || !kept) {
    if (idx != stack_idx) free(idx);
    free(kept);
    return no_memory(x->where);
  }
  kiln_status s = NULL;
  for (int k = 0; k < x->n_features && !s; k++) {
    idx[k] = kiln_record_find(r, x->features[k]);
    if (idx[k] < 0) s = find_feature(x, r, x->features[k], &idx[k]);
  }
  if (!s) {
    /* move the kept values aside, release the rest, then write them back in the listed order:
     * values stay in this record's own array, so views into its block remain valid */
    for (int k = 0; k < x->n_features; k++) {
      kept[k] = r->values[idx[k]];
      memset(&r->values[idx[k]], 0, sizeof r->values[idx[k]]);
    }
    for (int i = 0; i < r->count; i++) kiln_tensor_release(&r->values[i]);
    memcpy(r->values, kept, (size_t)x->n_features * sizeof *kept);
    r->count = x->n_features;
    r->names = (const char *const *)x->features;
  }
  if (idx != stack_idx) free(idx);
  free(kept);
  return s;
}

static const char *const *find_layout(const xf *x, const kiln_record *r) {
  for (const name_layout *l = x->layouts; l; l = l->next)
    if (l->count == r->count && memcmp(l->in, r->names, (size_t)r->count * sizeof *l->in) == 0) return l->out;
  return NULL;
}

static kiln_status apply_rename(xf *x, kiln_record *r) {
  int i = kiln_record_find(r, x->from);
  if (i < 0) return find_feature(x, r, x->from, &i);
  if (strcmp(x->from, x->to) != 0 && kiln_record_find(r, x->to) >= 0)
    return apply_error(x, x->from, "cannot rename it to '%s': the record already has a feature of that name", x->to);
  kiln_status s = NULL;
  pthread_mutex_lock(&x->lock);
  const char *const *names = find_layout(x, r);
  if (!names) {
    name_layout *l = calloc(1, sizeof *l);
    size_t bytes = (size_t)(r->count ? r->count : 1) * sizeof(char *);
    if (l) l->in = malloc(bytes), l->out = malloc(bytes);
    if (x->n_layouts >= MAX_LAYOUTS) {
      s = apply_error(x, x->from, "more than %d different feature lists reached this rename", MAX_LAYOUTS);
    } else if (!l || !l->in || !l->out) {
      s = no_memory(x->where);
    } else {
      l->count = r->count;
      memcpy(l->in, r->names, (size_t)r->count * sizeof(char *));
      memcpy(l->out, r->names, (size_t)r->count * sizeof(char *));
      l->out[i] = x->to;
      l->next = x->layouts;
      x->layouts = l;
      x->n_layouts++;
      names = l->out;
      l = NULL;
    }
    if (l) {
      free(l->in);
      free(l->out);
      free(l);
    }
  }
  pthread_mutex_unlock(&x->lock);
  if (!s) r->names = names;
  return s;
}

/* ---------------------------------------------------------------- dispatch */

static kiln_status apply_one(const xf *x, kiln_record *r) {
  if (x->kind == XF_SELECT) return apply_select(x, r);
  /* the layout cache is the one piece of state apply writes; it has its own lock */
  if (x->kind == XF_RENAME) return apply_rename((xf *)x, r);
  for (int f = 0; f < x->n_features; f++) {
    const char *name = x->features[f];
    int i;
    kiln_status s = find_feature(x, r, name, &i);
    if (s) return s;
    kiln_tensor *v = &r->values[i], out = {0};
    switch (x->kind) {
    case XF_DECODE: s = apply_decode(x, name, v, &out); break;
    case XF_RESIZE:
      s = kx_resize_image(v, x->size[0], x->size[1], x->nearest, &out);
      if (s) s = kiln_status_prefix(s, "%s: feature '%s': ", x->where, name);
      break;
    case XF_CROP: s = apply_crop(x, name, v, &out); break;
    case XF_SCALE: s = apply_scale(x, name, v, &out); break;
    case XF_NORMALIZE: s = apply_normalize(x, f, name, v, &out); break;
    case XF_ONE_HOT: s = apply_one_hot(x, name, v, &out); break;
    case XF_CAST: s = apply_cast(x, name, v, &out); break;
    default: break;
    }
    if (s) return s;
    kiln_record_set(r, i, &out);
  }
  return NULL;
}

kiln_status kx_transforms_apply(const kx_transforms *t, kiln_record *r) {
  for (int i = 0; i < t->count; i++) {
    kiln_status s = apply_one(&t->items[i], r);
    if (s) return s;
  }
  return NULL;
}
