/* Generator kernels: operators that make tensors from a shape and a few scalars
 * (ConstantOfShape, Range, EyeLike) or from random numbers.
 *
 * Random numbers come from a counter-based generator (splitmix64 evaluated at the element's
 * position), so they do not depend on how the work is split over threads. A node with a `seed`
 * draws the same numbers on every run; one without draws from a stream keyed by the node and a
 * per-node run counter, so runs differ but a freshly loaded model repeats the same sequence. */
#include "ops/util.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ ConstantOfShape */

typedef struct constant_params {
  kiln_dtype dtype;
  char value[16]; /* one element */
} constant_params;

/* The `value` attribute: a one-element tensor, float 0 when absent. */
static kiln_status constant_of_shape_prepare(kx_node *n) {
  constant_params *p = calloc(1, sizeof *p);
  if (!p) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  n->params = p;
  p->dtype = KILN_FLOAT;
  const Onnx__TensorProto *tp = kx_attr_tensor(n->proto, "value");
  if (!tp) return NULL;
  kx_tensor_source src = {0};
  kiln_tensor t = {0};
  kiln_status s = kx_tensor_from_proto(tp, &src, &t);
  if (s) return kiln_status_prefix(s, "value: ");
  if (kiln_tensor_numel(&t) != 1 || t.dtype == KILN_STRING || kiln_dtype_size(t.dtype) > sizeof p->value)
    s = kiln_error(KILN_INVALID_ARGUMENT, "value must be one numeric or bool element, got %s", kiln_tensor_describe(&t, (char[96]){0}, 96));
  else {
    p->dtype = t.dtype;
    memcpy(p->value, t.data, kiln_dtype_size(t.dtype));
  }
  kiln_tensor_release(&t);
  return s;
}

/* Fills n elements of `size` bytes with one value; constant sizes let the loop vectorize. */
static inline void fill_elems(char *dst, const char *value, int64_t n, size_t size) {
  for (int64_t i = 0; i < n; i++) memcpy(dst + i * (int64_t)size, value, size);
}

static void fill(kiln_tensor *t, const char *value) {
  int64_t n = kiln_tensor_numel(t);
  size_t es = kiln_dtype_size(t->dtype);
  switch (es) {
  case 1: fill_elems(t->data, value, n, 1); break;
  case 2: fill_elems(t->data, value, n, 2); break;
  case 4: fill_elems(t->data, value, n, 4); break;
  case 8: fill_elems(t->data, value, n, 8); break;
  default: fill_elems(t->data, value, n, es);
  }
}

/* The output's shape from a 1-D int64 input; dims come from outside, so each is checked. */
static kiln_status shape_input(const kiln_tensor *t, int *rank, int64_t *dims) {
  if (t->rank != 1) return kiln_error(KILN_INVALID_ARGUMENT, "shape must be 1-D, got rank %d", t->rank);
  kiln_status s = kx_read_ints(t, "shape", dims, KILN_MAX_RANK, rank);
  for (int d = 0; !s && d < *rank; d++)
    if (dims[d] < 0) s = kiln_error(KILN_INVALID_ARGUMENT, "shape[%d] is negative (%lld)", d, (long long)dims[d]);
  return s;
}

static kiln_status constant_of_shape_run(kx_ctx *c) {
  const constant_params *p = c->node->params;
  const kiln_tensor *shape;
  kiln_tensor *y;
  int64_t dims[KILN_MAX_RANK];
  int rank;
  kiln_status s;
  if ((s = kx_require(c, 0, &shape)) || (s = shape_input(shape, &rank, dims)) || (s = kx_output(c, 0, p->dtype, rank, dims, &y))) return s;
  fill(y, p->value);
  return NULL;
}

/* ------------------------------------------------------------------ Range */

/* Range: start, start + delta, ... up to (not including) limit; max(ceil((limit - start) /
 * delta), 0) elements. Integers are computed exactly, in unsigned 64-bit arithmetic that cannot
 * overflow where the true values fit. */
static kiln_status range_run(kx_ctx *c) {
  const kiln_tensor *start_t, *limit_t, *delta_t;
  kiln_status s;
  if ((s = kx_require(c, 0, &start_t)) || (s = kx_require(c, 1, &limit_t)) || (s = kx_require(c, 2, &delta_t))) return s;
  kiln_dtype t = start_t->dtype;
  unsigned ok = KX_BIT(KILN_FLOAT) | KX_BIT(KILN_DOUBLE) | KX_BIT(KILN_INT16) | KX_BIT(KILN_INT32) | KX_BIT(KILN_INT64);
  if (!(ok & KX_BIT(t)) || limit_t->dtype != t || delta_t->dtype != t)
    return kiln_error(KILN_INVALID_ARGUMENT, "start, limit and delta must share one of float, double, int16, int32, int64 (got %s, %s, %s)",
                      kiln_dtype_name(t), kiln_dtype_name(limit_t->dtype), kiln_dtype_name(delta_t->dtype));
  double start, limit, delta;
  if ((s = kx_read_scalar(start_t, "start", &start)) || (s = kx_read_scalar(limit_t, "limit", &limit)) ||
      (s = kx_read_scalar(delta_t, "delta", &delta)))
    return s;
  if (delta == 0 || delta != delta) return kiln_error(KILN_INVALID_ARGUMENT, "delta must be non-zero, got %g", delta);
  const double most = (double)((int64_t)1 << 48);
  int64_t n;
  if (kiln_dtype_is_float(t)) {
    double count = ceil((limit - start) / delta);
    if (!(count <= most)) return kiln_error(KILN_INVALID_ARGUMENT, "range [%g, %g) by %g has too many elements", start, limit, delta);
    n = count > 0 ? (int64_t)count : 0;
  } else {
    int64_t a = start_t->dtype == KILN_INT64 ? *(const int64_t *)start_t->data : (int64_t)start;
    int64_t b = limit_t->dtype == KILN_INT64 ? *(const int64_t *)limit_t->data : (int64_t)limit;
    int64_t d = delta_t->dtype == KILN_INT64 ? *(const int64_t *)delta_t->data : (int64_t)delta;
    uint64_t dist = d > 0 ? (b > a ? (uint64_t)b - (uint64_t)a : 0) : (a > b ? (uint64_t)a - (uint64_t)b : 0);
    uint64_t step = d > 0 ? (uint64_t)d : 0 - (uint64_t)d, count = dist / step + (dist % step != 0);
    if (count > (uint64_t)1 << 48)
      return kiln_error(KILN_INVALID_ARGUMENT, "range [%lld, %lld) by %lld has too many elements", (long long)a, (long long)b, (long long)d);
    n = (int64_t)count;
    kiln_tensor *y;
    if ((s = kx_output(c, 0, t, 1, &n, &y))) return s;
    for (int64_t i = 0; i < n; i++) {
      int64_t v = (int64_t)((uint64_t)a + (uint64_t)i * (uint64_t)d);
      if (t == KILN_INT64) ((int64_t *)y->data)[i] = v; /* exact beyond 2^53, where doubles are not */
      else kx_set_f64(y, i, (double)v);
    }
    return NULL;
  }
  kiln_tensor *y;
  if ((s = kx_output(c, 0, t, 1, &n, &y))) return s;
  for (int64_t i = 0; i < n; i++) kx_set_f64(y, i, start + (double)i * delta);
  return NULL;
}

/* ------------------------------------------------------------------ EyeLike */

/* The `dtype` attribute, or `def` when absent; `allowed` lists what the operator accepts. */
static kiln_status dtype_attr(const kx_node *n, kiln_dtype def, unsigned allowed, kiln_dtype *out) {
  int64_t v = kx_attr_int(n->proto, "dtype", def);
  if (v <= 0 || v >= KILN_DTYPE_COUNT || !(allowed & KX_BIT(v)))
    return kiln_error(KILN_INVALID_ARGUMENT, "dtype %lld (%s) is not supported here", (long long)v,
                      v > 0 && v < KILN_DTYPE_COUNT ? kiln_dtype_name((kiln_dtype)v) : "unknown");
  *out = (kiln_dtype)v;
  return NULL;
}

/* EyeLike: a 2-D tensor of the input's shape with ones on diagonal k. */
static kiln_status eye_like_run(kx_ctx *c) {
  const kiln_tensor *x;
  kiln_dtype t;
  kiln_status s;
  const unsigned allowed = (KX_NUMERIC | KX_BIT(KILN_BOOL)) & ~KX_BIT(KILN_BFLOAT16);
  if ((s = kx_require(c, 0, &x)) || (s = dtype_attr(c->node, x->dtype, allowed, &t))) return s;
  if (x->rank != 2) return kiln_error(KILN_INVALID_ARGUMENT, "input must be 2-D, got rank %d", x->rank);
  int64_t k = kx_attr_int(c->node->proto, "k", 0), rows = x->dims[0], cols = x->dims[1];
  kiln_tensor *y;
  if ((s = kx_output(c, 0, t, 2, x->dims, &y))) return s;
  memset(y->data, 0, kiln_tensor_nbytes(y));
  /* row i holds its one at column i + k, for the rows where that column exists */
  k = k < -rows ? -rows : k > cols ? cols : k;
  int64_t first = k < 0 ? -k : 0, last = cols - k < rows ? cols - k : rows;
  for (int64_t i = first; i < last; i++) kx_set_f64(y, i * cols + i + k, 1);
  return NULL;
}

/* ------------------------------------------------------------------ random */

typedef struct random_params {
  int like;          /* RandomUniformLike / RandomNormalLike: shape (and default dtype) from input 0 */
  int normal;
  kiln_dtype dtype;  /* KILN_UNDEFINED: the input's (Like ops only) */
  double a, b;       /* low and high, or mean and scale */
  int seeded;
  uint64_t key;      /* from the seed */
  int rank;
  int64_t dims[KILN_MAX_RANK];
  atomic_uint_fast64_t runs;
} random_params;

#define RANDOM_DTYPES (KX_BIT(KILN_FLOAT) | KX_BIT(KILN_DOUBLE) | KX_BIT(KILN_FLOAT16))

static kiln_status random_prepare(kx_node *n) {
  random_params *p = calloc(1, sizeof *p);
  if (!p) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  n->params = p;
  atomic_init(&p->runs, 0);
  p->like = strstr(n->op_type, "Like") != NULL;
  p->normal = strncmp(n->op_type, "RandomNormal", 12) == 0;
  p->a = kx_attr_float(n->proto, p->normal ? "mean" : "low", 0);
  p->b = kx_attr_float(n->proto, p->normal ? "scale" : "high", 1);
  if (kx_attr_has(n->proto, "seed")) {
    double seed = kx_attr_float(n->proto, "seed", 0);
    uint64_t bits;
    memcpy(&bits, &seed, sizeof bits);
    p->seeded = 1;
    p->key = kx_mix64(bits);
  }
  kiln_status s = NULL;
  if (!p->like || kx_attr_has(n->proto, "dtype")) s = dtype_attr(n, KILN_FLOAT, RANDOM_DTYPES, &p->dtype);
  if (s || p->like) return s;
  const int64_t *dims;
  int64_t rank = kx_attr_ints(n->proto, "shape", &dims);
  if (rank < 0 || rank > KILN_MAX_RANK) return kiln_error(KILN_INVALID_ARGUMENT, "shape attribute is missing or longer than %d", KILN_MAX_RANK);
  p->rank = (int)rank;
  for (int d = 0; d < p->rank; d++) {
    if (dims[d] < 0) return kiln_error(KILN_INVALID_ARGUMENT, "shape[%d] is negative (%lld)", d, (long long)dims[d]);
    p->dims[d] = dims[d];
  }
  return NULL;
}

typedef struct random_job {
  const random_params *p;
  kiln_tensor *y;
  uint64_t key;
} random_job;

/* Normal samples by Box-Muller from the uniforms at 2i and 2i + 1. */
static void random_range(void *arg, int64_t begin, int64_t end) {
  const random_job *j = arg;
  const random_params *p = j->p;
  float buf[256];
  for (int64_t i = begin; i < end; i += 256) {
    int64_t n = end - i < 256 ? end - i : 256;
    for (int64_t k = 0; k < n; k++) {
      uint64_t at = (uint64_t)(i + k);
      double v;
      if (p->normal) {
        double u1 = kx_uniform_at(j->key, 2 * at), u2 = kx_uniform_at(j->key, 2 * at + 1);
        v = p->a + p->b * sqrt(-2 * log1p(-u1)) * cos(2 * M_PI * u2);
      } else {
        v = p->a + (p->b - p->a) * kx_uniform_at(j->key, at);
      }
      if (j->y->dtype == KILN_DOUBLE) ((double *)j->y->data)[i + k] = v;
      else buf[k] = (float)v;
    }
    if (j->y->dtype != KILN_DOUBLE) kx_from_float(j->y->dtype, buf, (char *)j->y->data + i * (int64_t)kiln_dtype_size(j->y->dtype), n);
  }
}

static kiln_status random_run(kx_ctx *c) {
  random_params *p = c->node->params;
  kiln_dtype t = p->dtype;
  int rank = p->rank;
  const int64_t *dims = p->dims;
  kiln_status s;
  if (p->like) {
    const kiln_tensor *x;
    if ((s = kx_require(c, 0, &x))) return s;
    if (t == KILN_UNDEFINED) t = x->dtype;
    if (!(RANDOM_DTYPES & KX_BIT(t)))
      return kiln_error(KILN_INVALID_ARGUMENT, "output dtype %s is not float16, float or double; set the dtype attribute", kiln_dtype_name(t));
    rank = x->rank;
    dims = x->dims;
  }
  kiln_tensor *y;
  if ((s = kx_output(c, 0, t, rank, dims, &y))) return s;
  uint64_t key = p->seeded ? p->key : kx_mix64(((uint64_t)c->node->index << 32) ^ atomic_fetch_add(&p->runs, 1));
  random_job j = {p, y, key};
  kx_parallel(c, kiln_tensor_numel(y), p->normal ? 60 : 20, random_range, &j);
  return NULL;
}

const kx_op kx_ops_generator[] = {
    {"", "ConstantOfShape", 9, 0, constant_of_shape_prepare, constant_of_shape_run, NULL, 0},
    {"", "Range", 11, 0, NULL, range_run, NULL, 0},
    {"", "EyeLike", 9, 0, NULL, eye_like_run, NULL, 0},
    {"", "RandomUniform", 1, 0, random_prepare, random_run, NULL, 0, .nondeterministic = 1},
    {"", "RandomNormal", 1, 0, random_prepare, random_run, NULL, 0, .nondeterministic = 1},
    {"", "RandomUniformLike", 1, 0, random_prepare, random_run, NULL, 0, .nondeterministic = 1},
    {"", "RandomNormalLike", 1, 0, random_prepare, random_run, NULL, 0, .nondeterministic = 1},
    {0},
};
