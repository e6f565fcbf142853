/* Indexing kernels: operators driven by index tensors (Gather*, Scatter*, OneHot) or that
 * produce them (NonZero, Unique, TopK), plus Compress and ReverseSequence.
 *
 * Indices come from outside the model: every one is checked before anything is copied, and a bad
 * one is reported with its position, its value and the valid range. String elements are moved as
 * pointers and duplicated afterwards (kx_own_strings), so the copy loops serve every dtype. */
#include "ops/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ helpers */

/* Copies one element; called with constant sizes so the memcpy compiles to a single move. */
static inline void copy_elem(char *dst, const char *src, size_t size) { memcpy(dst, src, size); }

static kiln_status index_dtype(const kiln_tensor *t, const char *what) {
  if (t->dtype == KILN_INT64 || t->dtype == KILN_INT32) return NULL;
  return kiln_error(KILN_INVALID_ARGUMENT, "%s must be int32 or int64, got %s", what, kiln_dtype_name(t->dtype));
}

/* Index tensor element i (int32 or int64). */
static inline int64_t index_at(const kiln_tensor *t, int64_t i) {
  return t->dtype == KILN_INT64 ? ((const int64_t *)t->data)[i] : ((const int32_t *)t->data)[i];
}

/* "indices[1,2] = 7 is out of range for data axis 1 of size 5 (valid: -5..4)". */
static kiln_status index_error(const char *what, const kiln_tensor *t, int64_t flat, int64_t v, int axis, int64_t n) {
  char pos[200];
  size_t len = 0;
  int64_t rest = flat, coord[KILN_MAX_RANK];
  for (int d = t->rank - 1; d >= 0; d--) {
    coord[d] = t->dims[d] ? rest % t->dims[d] : 0;
    rest = t->dims[d] ? rest / t->dims[d] : 0;
  }
  for (int d = 0; d < t->rank && len < sizeof pos; d++)
    len += (size_t)snprintf(pos + len, sizeof pos - len, d ? ",%lld" : "%lld", (long long)coord[d]);
  if (t->rank == 0) pos[0] = '\0';
  return kiln_error(KILN_INVALID_ARGUMENT, "%s[%s] = %lld is out of range for data axis %d of size %lld (valid: %lld..%lld)", what, pos,
                    (long long)v, axis, (long long)n, (long long)-n, (long long)(n - 1));
}

/* Every index in [-n, n). */
static kiln_status check_indices(const char *what, const kiln_tensor *t, int axis, int64_t n) {
  int64_t count = kiln_tensor_numel(t);
  for (int64_t i = 0; i < count; i++) {
    int64_t v = index_at(t, i);
    if (v < -n || v >= n) return index_error(what, t, i, v, axis, n);
  }
  return NULL;
}

/* Output 0 starts as a copy of data (Scatter*). */
static kiln_status copy_input(kx_ctx *c, const kiln_tensor *x, kiln_tensor **y) {
  kiln_status s = kx_output(c, 0, x->dtype, x->rank, x->dims, y);
  if (!s && kiln_tensor_nbytes(x)) memcpy((*y)->data, x->data, kiln_tensor_nbytes(x));
  return s;
}

/* ------------------------------------------------------------------ Gather */

typedef struct gather_job {
  const char *src;
  char *dst;
  const int64_t *idx; /* normalized to [0, axis_dim) */
  int64_t n_idx, axis_dim;
  size_t row; /* bytes per gathered slice */
} gather_job;

static inline void gather_rows(const gather_job *j, int64_t begin, int64_t end, size_t row) {
  int64_t o = begin / j->n_idx, k = begin % j->n_idx;
  for (int64_t i = begin; i < end; i++) {
    memcpy(j->dst + i * (int64_t)row, j->src + (o * j->axis_dim + j->idx[k]) * (int64_t)row, row);
    if (++k == j->n_idx) {
      k = 0;
      o++;
    }
  }
}

/* Items are (outer, index) pairs; rows of one element get constant-size copies. */
static void gather_range(void *arg, int64_t begin, int64_t end) {
  const gather_job *j = arg;
  switch (j->row) {
  case 1: gather_rows(j, begin, end, 1); break;
  case 2: gather_rows(j, begin, end, 2); break;
  case 4: gather_rows(j, begin, end, 4); break;
  case 8: gather_rows(j, begin, end, 8); break;
  default: gather_rows(j, begin, end, j->row);
  }
}

/* Gather: out[o, i..., r] = data[o, indices[i...], r] along `axis`. Axis 0 with long rows is the
 * embedding lookup: one memcpy per index, split over the pool. */
static kiln_status gather_run(kx_ctx *c) {
  const kiln_tensor *x, *ind;
  kiln_status s;
  int axis;
  if ((s = kx_require(c, 0, &x)) || (s = kx_require(c, 1, &ind)) || (s = index_dtype(ind, "indices")) ||
      (s = kx_axis(kx_attr_int(c->node->proto, "axis", 0), x->rank, 0, &axis)))
    return s;
  int rank = x->rank - 1 + ind->rank;
  if (rank > KILN_MAX_RANK) return kiln_error(KILN_UNIMPLEMENTED, "output rank %d is above kiln's limit of %d", rank, KILN_MAX_RANK);
  int64_t dims[KILN_MAX_RANK], n_idx = kiln_tensor_numel(ind), axis_dim = x->dims[axis];
  memcpy(dims, x->dims, (size_t)axis * sizeof *dims);
  memcpy(dims + axis, ind->dims, (size_t)ind->rank * sizeof *dims);
  memcpy(dims + axis + ind->rank, x->dims + axis + 1, (size_t)(x->rank - axis - 1) * sizeof *dims);
  int64_t *idx = kx_scratch(c, (size_t)n_idx * sizeof *idx);
  if (!idx) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  for (int64_t i = 0; i < n_idx; i++) {
    int64_t v = index_at(ind, i);
    if (v < -axis_dim || v >= axis_dim) return index_error("indices", ind, i, v, axis, axis_dim);
    idx[i] = v < 0 ? v + axis_dim : v;
  }
  kiln_tensor *y;
  if ((s = kx_output(c, 0, x->dtype, rank, dims, &y))) return s;
  gather_job j = {x->data, y->data, idx, n_idx, axis_dim, (size_t)kx_prod(x->dims, axis + 1, x->rank) * kiln_dtype_size(x->dtype)};
  if (n_idx && j.row) kx_parallel(c, kx_prod(x->dims, 0, axis) * n_idx, 1 + (double)j.row / 8, gather_range, &j);
  return kx_own_strings(y);
}

/* ------------------------------------------------------------------ GatherElements */

typedef struct elements_job {
  const kiln_tensor *x, *ind;
  char *dst;
  int axis;
  int64_t xs[KILN_MAX_RANK]; /* data strides in elements */
} elements_job;

static inline void elements_rows(const elements_job *j, int64_t begin, int64_t end, size_t es) {
  const kiln_tensor *ind = j->ind;
  int r = ind->rank, a = j->axis;
  int64_t n = ind->dims[r - 1], idx[KILN_MAX_RANK], rest = begin, dim = j->x->dims[a];
  int64_t step = a == r - 1 ? 0 : j->xs[r - 1], astride = j->xs[a];
  for (int d = r - 2; d >= 0; d--) {
    idx[d] = rest % ind->dims[d];
    rest /= ind->dims[d];
  }
  const char *src = j->x->data;
  for (int64_t row = begin; row < end; row++) {
    int64_t base = 0;
    for (int d = 0; d < r - 1; d++) base += d == a ? 0 : idx[d] * j->xs[d];
    for (int64_t k = 0; k < n; k++) {
      int64_t v = index_at(ind, row * n + k);
      v += v < 0 ? dim : 0;
      copy_elem(j->dst + (row * n + k) * (int64_t)es, src + (base + k * step + v * astride) * (int64_t)es, es);
    }
    for (int d = r - 2; d >= 0 && ++idx[d] == ind->dims[d]; d--) idx[d] = 0;
  }
}

/* Items are rows of the indices (all dims but the last). */
static void elements_range(void *arg, int64_t begin, int64_t end) {
  const elements_job *j = arg;
  switch (kiln_dtype_size(j->x->dtype)) {
  case 1: elements_rows(j, begin, end, 1); break;
  case 2: elements_rows(j, begin, end, 2); break;
  case 4: elements_rows(j, begin, end, 4); break;
  case 8: elements_rows(j, begin, end, 8); break;
  default: elements_rows(j, begin, end, kiln_dtype_size(j->x->dtype));
  }
}

/* Indices and data of the same rank; off the axis, the indices' dims may not exceed data's. */
static kiln_status check_elementwise_shapes(const kiln_tensor *x, const kiln_tensor *ind, int axis) {
  int ok = ind->rank == x->rank;
  for (int d = 0; ok && d < x->rank; d++) ok = d == axis || ind->dims[d] <= x->dims[d];
  if (ok) return NULL;
  char a[96], b[96];
  return kiln_error(KILN_INVALID_ARGUMENT, "indices %s do not fit data %s (same rank; other dims no larger than data's off axis %d)",
                    kiln_tensor_describe(ind, a, sizeof a), kiln_tensor_describe(x, b, sizeof b), axis);
}

static kiln_status gather_elements_run(kx_ctx *c) {
  const kiln_tensor *x, *ind;
  kiln_status s;
  int axis;
  if ((s = kx_require(c, 0, &x)) || (s = kx_require(c, 1, &ind)) || (s = index_dtype(ind, "indices")) ||
      (s = kx_axis(kx_attr_int(c->node->proto, "axis", 0), x->rank, 0, &axis)) || (s = check_elementwise_shapes(x, ind, axis)) ||
      (s = check_indices("indices", ind, axis, x->dims[axis])))
    return s;
  kiln_tensor *y;
  if ((s = kx_output(c, 0, x->dtype, ind->rank, ind->dims, &y))) return s;
  if (kiln_tensor_numel(y) == 0) return NULL;
  elements_job j = {x, ind, y->data, axis, {0}};
  kx_strides(x->rank, x->dims, j.xs);
  kx_parallel(c, kiln_tensor_numel(ind) / ind->dims[ind->rank - 1], 4.0 * (double)ind->dims[ind->rank - 1], elements_range, &j);
  return kx_own_strings(y);
}

/* ------------------------------------------------------------------ GatherND */

typedef struct gather_nd_job {
  const kiln_tensor *x, *ind;
  char *dst;
  int b, k;
  int64_t per_batch; /* index tuples per batch */
  int64_t xs[KILN_MAX_RANK];
  size_t slice; /* bytes */
} gather_nd_job;

/* Items are index tuples. */
static void gather_nd_range(void *arg, int64_t begin, int64_t end) {
  const gather_nd_job *j = arg;
  size_t es = kiln_dtype_size(j->x->dtype);
  for (int64_t t = begin; t < end; t++) {
    int64_t off = j->b ? t / j->per_batch * j->xs[j->b - 1] : 0;
    for (int q = 0; q < j->k; q++) {
      int64_t v = index_at(j->ind, t * j->k + q), n = j->x->dims[j->b + q];
      off += (v < 0 ? v + n : v) * j->xs[j->b + q];
    }
    memcpy(j->dst + t * (int64_t)j->slice, (const char *)j->x->data + off * (int64_t)es, j->slice);
  }
}

/* GatherND: each tuple along the indices' last dim picks a slice of data; the first batch_dims
 * dims of data and indices go together. */
static kiln_status gather_nd_run(kx_ctx *c) {
  const kiln_tensor *x, *ind;
  kiln_status s;
  if ((s = kx_require(c, 0, &x)) || (s = kx_require(c, 1, &ind))) return s;
  if (ind->dtype != KILN_INT64) return kiln_error(KILN_INVALID_ARGUMENT, "indices must be int64, got %s", kiln_dtype_name(ind->dtype));
  int64_t b = kx_attr_int(c->node->proto, "batch_dims", 0);
  if (ind->rank < 1 || b < 0 || b >= ind->rank || b >= x->rank)
    return kiln_error(KILN_INVALID_ARGUMENT, "batch_dims %lld must be below both ranks (data %d, indices %d)", (long long)b, x->rank, ind->rank);
  int64_t k = ind->dims[ind->rank - 1];
  if (k < 1 || k > x->rank - b)
    return kiln_error(KILN_INVALID_ARGUMENT, "index tuples have %lld values; 1..%lld allowed for data of rank %d with batch_dims %lld",
                      (long long)k, (long long)(x->rank - b), x->rank, (long long)b);
  for (int d = 0; d < b; d++)
    if (x->dims[d] != ind->dims[d])
      return kiln_error(KILN_INVALID_ARGUMENT, "batch dim %d differs: data has %lld, indices %lld", d, (long long)x->dims[d], (long long)ind->dims[d]);
  int rank = ind->rank - 1 + x->rank - (int)b - (int)k;
  if (rank > KILN_MAX_RANK) return kiln_error(KILN_UNIMPLEMENTED, "output rank %d is above kiln's limit of %d", rank, KILN_MAX_RANK);
  int64_t count = kiln_tensor_numel(ind);
  for (int64_t i = 0; i < count; i++) {
    int axis = (int)(b + i % k);
    int64_t v = index_at(ind, i);
    if (v < -x->dims[axis] || v >= x->dims[axis]) return index_error("indices", ind, i, v, axis, x->dims[axis]);
  }
  int64_t dims[KILN_MAX_RANK];
  memcpy(dims, ind->dims, (size_t)(ind->rank - 1) * sizeof *dims);
  memcpy(dims + ind->rank - 1, x->dims + b + k, (size_t)(x->rank - b - k) * sizeof *dims);
  kiln_tensor *y;
  if ((s = kx_output(c, 0, x->dtype, rank, dims, &y))) return s;
  gather_nd_job j = {x, ind, y->data, (int)b, (int)k, kx_prod(ind->dims, (int)b, ind->rank - 1), {0},
                     (size_t)kx_prod(x->dims, (int)(b + k), x->rank) * kiln_dtype_size(x->dtype)};
  kx_strides(x->rank, x->dims, j.xs);
  if (count && j.slice) kx_parallel(c, count / k, 2 + (double)j.slice / 8, gather_nd_range, &j);
  return kx_own_strings(y);
}

/* ------------------------------------------------------------------ Scatter */

enum { REDUCE_NONE, REDUCE_ADD, REDUCE_MUL, REDUCE_MAX, REDUCE_MIN };

/* The `reduction` attribute; max and min arrived in opset 18. */
static kiln_status reduction(const kx_node *n, int *out) {
  char name[16];
  kx_attr_string(n->proto, "reduction", "none", name, sizeof name);
  static const char *const names[] = {"none", "add", "mul", "max", "min"};
  int count = n->opset >= 18 ? 5 : n->opset >= 16 ? 3 : 1;
  for (int i = 0; i < count; i++)
    if (strcmp(name, names[i]) == 0) {
      *out = i;
      return NULL;
    }
  return kiln_error(KILN_INVALID_ARGUMENT, "reduction '%s' is not supported at opset %d", name, n->opset);
}

static kiln_status reduction_dtype(int op, kiln_dtype t) {
  if (op == REDUCE_NONE || (t != KILN_STRING && t != KILN_BOOL && t != KILN_COMPLEX64 && t != KILN_COMPLEX128)) return NULL;
  return kiln_error(KILN_UNIMPLEMENTED, "reductions on %s are not supported", kiln_dtype_name(t));
}

static double combine_f(int op, double a, double b) {
  switch (op) {
  case REDUCE_ADD: return a + b;
  case REDUCE_MUL: return a * b;
  case REDUCE_MAX: return a > b ? a : b;
  default: return a < b ? a : b;
  }
}

/* Integers add and multiply modulo 2^64 (then narrow), as C's unsigned types do: no overflow. */
static uint64_t combine_u(int op, uint64_t a, uint64_t b) { return op == REDUCE_ADD ? a + b : a * b; }

#define COMBINE_INT(T)                                                           \
  {                                                                              \
    T a, b;                                                                      \
    memcpy(&a, dst, sizeof a);                                                   \
    memcpy(&b, src, sizeof b);                                                   \
    if (op == REDUCE_MAX || op == REDUCE_MIN) a = (op == REDUCE_MAX) == (a < b) ? b : a; \
    else a = (T)combine_u(op, (uint64_t)a, (uint64_t)b);                         \
    memcpy(dst, &a, sizeof a);                                                   \
    break;                                                                       \
  }

/* dst = dst (op) src for one element of type t; reductions are checked for the dtype first. */
static void combine(int op, kiln_dtype t, char *dst, const char *src) {
  switch (t) {
  case KILN_FLOAT: {
    float a, b;
    memcpy(&a, dst, sizeof a);
    memcpy(&b, src, sizeof b);
    a = (float)combine_f(op, a, b);
    memcpy(dst, &a, sizeof a);
    break;
  }
  case KILN_DOUBLE: {
    double a, b;
    memcpy(&a, dst, sizeof a);
    memcpy(&b, src, sizeof b);
    a = combine_f(op, a, b);
    memcpy(dst, &a, sizeof a);
    break;
  }
  case KILN_FLOAT16:
  case KILN_BFLOAT16: {
    float a, b;
    kx_to_float(t, dst, &a, 1);
    kx_to_float(t, src, &b, 1);
    a = (float)combine_f(op, a, b);
    kx_from_float(t, &a, dst, 1);
    break;
  }
  case KILN_INT8: COMBINE_INT(int8_t)
  case KILN_UINT8: COMBINE_INT(uint8_t)
  case KILN_INT16: COMBINE_INT(int16_t)
  case KILN_UINT16: COMBINE_INT(uint16_t)
  case KILN_INT32: COMBINE_INT(int32_t)
  case KILN_UINT32: COMBINE_INT(uint32_t)
  case KILN_INT64: COMBINE_INT(int64_t)
  case KILN_UINT64: COMBINE_INT(uint64_t)
  default: break;
  }
}

/* ScatterElements (and Scatter, its opset 9-10 name): output = data, then for every element of
 * updates, the element at its position with the axis coordinate replaced by the index receives
 * it. Runs in order, so with repeated indices the last update wins (or all are reduced). */
static kiln_status scatter_elements_run(kx_ctx *c) {
  const kiln_tensor *x, *ind, *upd;
  kiln_status s;
  int axis, op;
  if ((s = kx_require(c, 0, &x)) || (s = kx_require(c, 1, &ind)) || (s = kx_require(c, 2, &upd)) ||
      (s = index_dtype(ind, "indices")) || (s = reduction(c->node, &op)) || (s = reduction_dtype(op, x->dtype)) ||
      (s = kx_axis(kx_attr_int(c->node->proto, "axis", 0), x->rank, 0, &axis)) || (s = check_elementwise_shapes(x, ind, axis)))
    return s;
  int same = upd->dtype == x->dtype && upd->rank == ind->rank;
  for (int d = 0; same && d < ind->rank; d++) same = upd->dims[d] == ind->dims[d];
  if (!same) {
    char a[96], b[96];
    return kiln_error(KILN_INVALID_ARGUMENT, "updates %s must have the indices' shape and data's dtype (indices %s)",
                      kiln_tensor_describe(upd, a, sizeof a), kiln_tensor_describe(ind, b, sizeof b));
  }
  if ((s = check_indices("indices", ind, axis, x->dims[axis]))) return s;
  kiln_tensor *y;
  if ((s = copy_input(c, x, &y))) return s;
  int64_t xs[KILN_MAX_RANK], coord[KILN_MAX_RANK] = {0}, n = kiln_tensor_numel(ind), dim = x->dims[axis];
  size_t es = kiln_dtype_size(x->dtype);
  kx_strides(x->rank, x->dims, xs);
  for (int64_t i = 0; i < n; i++) {
    int64_t v = index_at(ind, i), off = 0;
    for (int d = 0; d < x->rank; d++) off += (d == axis ? (v < 0 ? v + dim : v) : coord[d]) * xs[d];
    char *dst = (char *)y->data + off * (int64_t)es;
    const char *src = (const char *)upd->data + i * (int64_t)es;
    if (op == REDUCE_NONE) memcpy(dst, src, es);
    else combine(op, x->dtype, dst, src);
    for (int d = ind->rank - 1; d >= 0 && ++coord[d] == ind->dims[d]; d--) coord[d] = 0;
  }
  return kx_own_strings(y);
}

/* ScatterND: each index tuple names a slice of data that the matching slice of updates replaces
 * (or is reduced into). */
static kiln_status scatter_nd_run(kx_ctx *c) {
  const kiln_tensor *x, *ind, *upd;
  kiln_status s;
  int op;
  if ((s = kx_require(c, 0, &x)) || (s = kx_require(c, 1, &ind)) || (s = kx_require(c, 2, &upd)) ||
      (s = reduction(c->node, &op)) || (s = reduction_dtype(op, x->dtype)))
    return s;
  if (ind->dtype != KILN_INT64) return kiln_error(KILN_INVALID_ARGUMENT, "indices must be int64, got %s", kiln_dtype_name(ind->dtype));
  int64_t k = ind->rank ? ind->dims[ind->rank - 1] : -1;
  if (k < 1 || k > x->rank) return kiln_error(KILN_INVALID_ARGUMENT, "index tuples have %lld values; 1..%d allowed", (long long)k, x->rank);
  /* updates: indices.shape[:-1] + data.shape[k:] */
  int ok = upd->dtype == x->dtype && upd->rank == ind->rank - 1 + x->rank - (int)k;
  for (int d = 0; ok && d < upd->rank; d++)
    ok = upd->dims[d] == (d < ind->rank - 1 ? ind->dims[d] : x->dims[d - (ind->rank - 1) + k]);
  if (!ok) {
    char a[96], b[96], e[96];
    return kiln_error(KILN_INVALID_ARGUMENT, "updates %s do not match indices %s and data %s", kiln_tensor_describe(upd, a, sizeof a),
                      kiln_tensor_describe(ind, b, sizeof b), kiln_tensor_describe(x, e, sizeof e));
  }
  int64_t count = kiln_tensor_numel(ind);
  for (int64_t i = 0; i < count; i++) {
    int axis = (int)(i % k);
    int64_t v = index_at(ind, i);
    if (v < -x->dims[axis] || v >= x->dims[axis]) return index_error("indices", ind, i, v, axis, x->dims[axis]);
  }
  kiln_tensor *y;
  if ((s = copy_input(c, x, &y))) return s;
  int64_t xs[KILN_MAX_RANK], slice = kx_prod(x->dims, (int)k, x->rank);
  size_t es = kiln_dtype_size(x->dtype);
  kx_strides(x->rank, x->dims, xs);
  for (int64_t t = 0; t < count / k; t++) {
    int64_t off = 0;
    for (int q = 0; q < k; q++) {
      int64_t v = index_at(ind, t * k + q);
      off += (v < 0 ? v + x->dims[q] : v) * xs[q];
    }
    char *dst = (char *)y->data + off * (int64_t)es;
    const char *src = (const char *)upd->data + t * slice * (int64_t)es;
    if (op == REDUCE_NONE) memcpy(dst, src, (size_t)slice * es);
    else
      for (int64_t e = 0; e < slice; e++) combine(op, x->dtype, dst + e * (int64_t)es, src + e * (int64_t)es);
  }
  return kx_own_strings(y);
}

/* ------------------------------------------------------------------ OneHot */

/* OneHot: a new dim of size depth at `axis`, off_value everywhere but at each index (negative
 * ones count from depth; out-of-range ones give a row of off_value, as the spec says). */
static kiln_status one_hot_run(kx_ctx *c) {
  const kiln_tensor *ind, *depth_t, *values;
  kiln_status s;
  double depth_v;
  int axis;
  if ((s = kx_require(c, 0, &ind)) || (s = kx_require(c, 1, &depth_t)) || (s = kx_require(c, 2, &values)) ||
      (s = kx_check_dtype(ind, 0, KX_NUMERIC)) || (s = kx_read_scalar(depth_t, "depth", &depth_v)) ||
      (s = kx_axis(kx_attr_int(c->node->proto, "axis", -1), ind->rank, 1, &axis)))
    return s;
  if (!(depth_v >= 1 && depth_v <= (double)((int64_t)1 << 40)))
    return kiln_error(KILN_INVALID_ARGUMENT, "depth %g must be a positive number of classes", depth_v);
  if (kiln_tensor_numel(values) != 2) return kiln_error(KILN_INVALID_ARGUMENT, "values must hold [off_value, on_value], it has %lld elements", (long long)kiln_tensor_numel(values));
  if (ind->rank + 1 > KILN_MAX_RANK) return kiln_error(KILN_UNIMPLEMENTED, "output rank %d is above kiln's limit of %d", ind->rank + 1, KILN_MAX_RANK);
  int64_t depth = (int64_t)depth_v, dims[KILN_MAX_RANK];
  memcpy(dims, ind->dims, (size_t)axis * sizeof *dims);
  dims[axis] = depth;
  memcpy(dims + axis + 1, ind->dims + axis, (size_t)(ind->rank - axis) * sizeof *dims);
  kiln_tensor *y;
  if ((s = kx_output(c, 0, values->dtype, ind->rank + 1, dims, &y))) return s;
  size_t es = kiln_dtype_size(values->dtype);
  const char *off_value = values->data, *on_value = off_value + es;
  int64_t total = kiln_tensor_numel(y), inner = kx_prod(ind->dims, axis, ind->rank), n = kiln_tensor_numel(ind);
  char *out = y->data;
  for (int64_t i = 0; i < total; i++) memcpy(out + i * (int64_t)es, off_value, es);
  for (int64_t i = 0; i < n; i++) {
    double v = kiln_tensor_get_f64(ind, i); /* float indices truncate, as a cast to int64 does */
    if (!(v > -(double)depth - 1 && v < (double)depth)) continue;
    int64_t k = (int64_t)v, o = i / inner, r = i % inner;
    if (k < 0) k += depth;
    if (k >= 0) memcpy(out + ((o * depth + k) * inner + r) * (int64_t)es, on_value, es);
  }
  return kx_own_strings(y);
}

/* ------------------------------------------------------------------ Compress */

/* Compress: keeps the slices along `axis` (of the flattened input when no axis is given) whose
 * condition is true; a condition shorter than the axis drops the rest, a longer one may only
 * be false past the end (as numpy.compress). */
static kiln_status compress_run(kx_ctx *c) {
  const kiln_tensor *x, *cond;
  kiln_status s;
  if ((s = kx_require(c, 0, &x)) || (s = kx_require(c, 1, &cond))) return s;
  if (cond->dtype != KILN_BOOL || cond->rank != 1)
    return kiln_error(KILN_INVALID_ARGUMENT, "condition must be a 1-D bool tensor, got %s", kiln_tensor_describe(cond, (char[96]){0}, 96));
  int has_axis = kx_attr_has(c->node->proto, "axis"), axis = 0;
  if (has_axis && (s = kx_axis(kx_attr_int(c->node->proto, "axis", 0), x->rank, 0, &axis))) return s;
  int64_t dim = has_axis ? x->dims[axis] : kiln_tensor_numel(x), n = cond->dims[0], kept = 0;
  const uint8_t *keep = cond->data;
  for (int64_t i = 0; i < n; i++) {
    if (keep[i] && i >= dim) return kiln_error(KILN_INVALID_ARGUMENT, "condition[%lld] is true but the axis has only %lld elements", (long long)i, (long long)dim);
    kept += keep[i] != 0;
  }
  int64_t dims[KILN_MAX_RANK] = {kept};
  int rank = 1;
  if (has_axis) {
    memcpy(dims, x->dims, sizeof dims);
    dims[axis] = kept;
    rank = x->rank;
  }
  kiln_tensor *y;
  if ((s = kx_output(c, 0, x->dtype, rank, dims, &y))) return s;
  size_t row = (size_t)(has_axis ? kx_prod(x->dims, axis + 1, x->rank) : 1) * kiln_dtype_size(x->dtype);
  int64_t outer = has_axis ? kx_prod(x->dims, 0, axis) : 1;
  char *dst = y->data;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < n && i < dim; i++)
      if (keep[i]) {
        memcpy(dst, (const char *)x->data + (o * dim + i) * (int64_t)row, row);
        dst += row;
      }
  return kx_own_strings(y);
}

/* ------------------------------------------------------------------ NonZero */

static int is_nonzero(const char *p, kiln_dtype t) {
  switch (t) {
  case KILN_FLOAT: {
    float v;
    memcpy(&v, p, sizeof v);
    return v != 0;
  }
  case KILN_DOUBLE: {
    double v;
    memcpy(&v, p, sizeof v);
    return v != 0;
  }
  case KILN_FLOAT16:
  case KILN_BFLOAT16: {
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return (v & 0x7fff) != 0; /* either zero */
  }
  case KILN_STRING: {
    const char *str;
    memcpy(&str, p, sizeof str);
    return str && *str;
  }
  default: /* integers and bool: any set bit */
    for (size_t i = 0; i < kiln_dtype_size(t); i++)
      if (p[i]) return 1;
    return 0;
  }
}

/* NonZero: the coordinates of the non-zero elements, one row per dim (a scalar counts as 1-D,
 * as numpy does). */
static kiln_status non_zero_run(kx_ctx *c) {
  const kiln_tensor *x;
  kiln_status s;
  if ((s = kx_require(c, 0, &x))) return s;
  int64_t n = kiln_tensor_numel(x), nnz = 0;
  size_t es = kiln_dtype_size(x->dtype);
  const char *p = x->data;
  for (int64_t i = 0; i < n; i++) nnz += is_nonzero(p + i * (int64_t)es, x->dtype);
  int rank = x->rank ? x->rank : 1;
  int64_t dims[2] = {rank, nnz}, coord[KILN_MAX_RANK] = {0};
  kiln_tensor *y;
  if ((s = kx_output(c, 0, KILN_INT64, 2, dims, &y))) return s;
  int64_t *out = y->data, k = 0;
  for (int64_t i = 0; i < n; i++) {
    if (is_nonzero(p + i * (int64_t)es, x->dtype)) {
      for (int d = 0; d < x->rank; d++) out[d * nnz + k] = coord[d];
      if (x->rank == 0) out[k] = 0;
      k++;
    }
    for (int d = x->rank - 1; d >= 0 && ++coord[d] == x->dims[d]; d--) coord[d] = 0;
  }
  return NULL;
}

/* ------------------------------------------------------------------ ReverseSequence */

/* ReverseSequence: for each batch entry b, the first sequence_lens[b] steps along time_axis are
 * reversed; the rest are copied. Batch and time are dims 0 and 1, in either order. */
static kiln_status reverse_sequence_run(kx_ctx *c) {
  const kiln_tensor *x, *lens;
  kiln_status s;
  if ((s = kx_require(c, 0, &x)) || (s = kx_require(c, 1, &lens))) return s;
  int64_t batch_axis = kx_attr_int(c->node->proto, "batch_axis", 1), time_axis = kx_attr_int(c->node->proto, "time_axis", 0);
  if (x->rank < 2) return kiln_error(KILN_INVALID_ARGUMENT, "input must have rank >= 2, got %d", x->rank);
  if ((batch_axis != 0 && batch_axis != 1) || (time_axis != 0 && time_axis != 1) || batch_axis == time_axis)
    return kiln_error(KILN_INVALID_ARGUMENT, "batch_axis %lld and time_axis %lld must be 0 and 1 in some order", (long long)batch_axis,
                      (long long)time_axis);
  int64_t batch = x->dims[batch_axis], steps = x->dims[time_axis];
  if (lens->dtype != KILN_INT64 || lens->rank != 1 || lens->dims[0] != batch)
    return kiln_error(KILN_INVALID_ARGUMENT, "sequence_lens must be int64 of shape [%lld], got %s", (long long)batch,
                      kiln_tensor_describe(lens, (char[96]){0}, 96));
  const int64_t *len = lens->data;
  for (int64_t b = 0; b < batch; b++)
    if (len[b] < 0 || len[b] > steps)
      return kiln_error(KILN_INVALID_ARGUMENT, "sequence_lens[%lld] = %lld is outside 0..%lld", (long long)b, (long long)len[b], (long long)steps);
  kiln_tensor *y;
  if ((s = kx_output(c, 0, x->dtype, x->rank, x->dims, &y))) return s;
  size_t row = (size_t)kx_prod(x->dims, 2, x->rank) * kiln_dtype_size(x->dtype);
  for (int64_t b = 0; b < batch; b++)
    for (int64_t t = 0; t < steps; t++) {
      int64_t from = t < len[b] ? len[b] - 1 - t : t;
      int64_t dst = batch_axis == 0 ? b * steps + t : t * batch + b, src = batch_axis == 0 ? b * steps + from : from * batch + b;
      memcpy((char *)y->data + dst * (int64_t)row, (const char *)x->data + src * (int64_t)row, row);
    }
  return kx_own_strings(y);
}

/* ------------------------------------------------------------------ Unique */

/* The items Unique compares: the elements of the flattened input, or its slices along axis. */
typedef struct unique_items {
  const char *data;
  kiln_dtype dtype;
  size_t es;
  int64_t outer, dim, inner; /* item i is data[o, i, r] for all o, r */
} unique_items;

static int cmp_elem(const char *a, const char *b, kiln_dtype t) {
  double x, y;
  switch (t) {
  case KILN_STRING: {
    const char *sa, *sb;
    memcpy(&sa, a, sizeof sa);
    memcpy(&sb, b, sizeof sb);
    return strcmp(sa ? sa : "", sb ? sb : "");
  }
  case KILN_INT64: {
    int64_t u, v;
    memcpy(&u, a, 8);
    memcpy(&v, b, 8);
    return (u > v) - (u < v);
  }
  case KILN_UINT64: {
    uint64_t u, v;
    memcpy(&u, a, 8);
    memcpy(&v, b, 8);
    return (u > v) - (u < v);
  }
  case KILN_FLOAT16:
  case KILN_BFLOAT16: {
    float f, g;
    kx_to_float(t, a, &f, 1);
    kx_to_float(t, b, &g, 1);
    x = f;
    y = g;
    break;
  }
  default: { /* every other type is exact in a double */
    kiln_tensor ta = {.dtype = t, .data = (void *)a}, tb = {.dtype = t, .data = (void *)b};
    x = kiln_tensor_get_f64(&ta, 0);
    y = kiln_tensor_get_f64(&tb, 0);
  }
  }
  if (x != x || y != y) return (x != x) - (y != y); /* NaN after every number, equal to NaN */
  return (x > y) - (x < y);
}

static int cmp_items(const unique_items *u, int64_t a, int64_t b) {
  for (int64_t o = 0; o < u->outer; o++)
    for (int64_t r = 0; r < u->inner; r++) {
      int64_t base = o * u->dim * u->inner + r;
      int c = cmp_elem(u->data + (base + a * u->inner) * (int64_t)u->es, u->data + (base + b * u->inner) * (int64_t)u->es, u->dtype);
      if (c) return c;
    }
  return 0;
}

/* Stable merge sort of item numbers (stability makes the first of equal items the earliest). */
static void sort_items(const unique_items *u, int64_t *order, int64_t *tmp, int64_t n) {
  for (int64_t width = 1; width < n; width *= 2) {
    for (int64_t lo = 0; lo < n; lo += 2 * width) {
      int64_t mid = lo + width < n ? lo + width : n, hi = lo + 2 * width < n ? lo + 2 * width : n, i = lo, j = mid, k = lo;
      while (i < mid && j < hi) tmp[k++] = cmp_items(u, order[j], order[i]) < 0 ? order[j++] : order[i++];
      while (i < mid) tmp[k++] = order[i++];
      while (j < hi) tmp[k++] = order[j++];
    }
    memcpy(order, tmp, (size_t)n * sizeof *order);
  }
}

/* Unique: the distinct items (sorted, or in order of first appearance), the index of each one's
 * first appearance, each input item's position in the output, and the counts. */
static kiln_status unique_run(kx_ctx *c) {
  const kiln_tensor *x;
  kiln_status s;
  if ((s = kx_require(c, 0, &x))) return s;
  int has_axis = kx_attr_has(c->node->proto, "axis"), axis = 0, sorted = kx_attr_int(c->node->proto, "sorted", 1) != 0;
  if (has_axis && (s = kx_axis(kx_attr_int(c->node->proto, "axis", 0), x->rank, 0, &axis))) return s;
  unique_items u = {x->data, x->dtype, kiln_dtype_size(x->dtype), 1, kiln_tensor_numel(x), 1};
  if (has_axis) {
    u.outer = kx_prod(x->dims, 0, axis);
    u.dim = x->dims[axis];
    u.inner = kx_prod(x->dims, axis + 1, x->rank);
  }
  int64_t n = u.dim;
  /* order, merge buffer, group of each item, then per group: first item, count, output slot */
  int64_t *order = kx_scratch(c, (size_t)n * 6 * sizeof *order);
  if (!order) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  int64_t *tmp = order + n, *group_of = tmp + n, *first = group_of + n, *count = first + n, *slot = count + n, groups = 0;
  for (int64_t i = 0; i < n; i++) order[i] = i;
  sort_items(&u, order, tmp, n);
  for (int64_t i = 0; i < n; i++) {
    if (i == 0 || cmp_items(&u, order[i - 1], order[i]) != 0) {
      first[groups] = order[i];
      count[groups++] = 0;
    }
    group_of[order[i]] = groups - 1;
    count[groups - 1]++;
  }
  int64_t next = 0;
  for (int64_t g = 0; sorted && g < groups; g++) slot[g] = g;
  for (int64_t i = 0; !sorted && i < n; i++) /* first appearances, in input order */
    if (first[group_of[i]] == i) slot[group_of[i]] = next++;

  int64_t dims[KILN_MAX_RANK] = {groups};
  if (has_axis) {
    memcpy(dims, x->dims, sizeof dims);
    dims[axis] = groups;
  }
  kiln_tensor *y, *indices, *inverse, *counts;
  if ((s = kx_output(c, 0, x->dtype, has_axis ? x->rank : 1, dims, &y)) || (s = kx_output(c, 1, KILN_INT64, 1, &groups, &indices)) ||
      (s = kx_output(c, 2, KILN_INT64, 1, &n, &inverse)) || (s = kx_output(c, 3, KILN_INT64, 1, &groups, &counts)))
    return s;
  size_t row = (size_t)u.inner * u.es;
  for (int64_t g = 0; g < groups; g++) {
    ((int64_t *)indices->data)[slot[g]] = first[g];
    ((int64_t *)counts->data)[slot[g]] = count[g];
    for (int64_t o = 0; o < u.outer; o++)
      memcpy((char *)y->data + (o * groups + slot[g]) * (int64_t)row, u.data + (o * n + first[g]) * (int64_t)row, row);
  }
  for (int64_t i = 0; i < n; i++) ((int64_t *)inverse->data)[i] = slot[group_of[i]];
  return kx_own_strings(y);
}

/* ------------------------------------------------------------------ TopK */

/* An element as a key whose unsigned order is the value order (NaN above everything), with its
 * index along the axis. */
typedef struct topk_item {
  uint64_t key;
  int64_t index;
} topk_item;

static uint64_t double_key(double d) {
  if (d != d) return UINT64_MAX;
  if (d == 0) d = 0; /* -0 == +0 */
  uint64_t u;
  memcpy(&u, &d, sizeof u);
  return u >> 63 ? ~u : u | (1ULL << 63);
}

static uint64_t key_of(const char *p, kiln_dtype t) {
  switch (t) {
  case KILN_FLOAT: {
    float v;
    memcpy(&v, p, sizeof v);
    return double_key(v);
  }
  case KILN_DOUBLE: {
    double v;
    memcpy(&v, p, sizeof v);
    return double_key(v);
  }
  case KILN_FLOAT16:
  case KILN_BFLOAT16: {
    float v;
    kx_to_float(t, p, &v, 1);
    return double_key(v);
  }
  case KILN_UINT64: {
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
  }
  case KILN_INT64: {
    int64_t v;
    memcpy(&v, p, sizeof v);
    return (uint64_t)v ^ (1ULL << 63);
  }
  default: { /* narrower integers are exact in a double */
    kiln_tensor tmp = {.dtype = t, .data = (void *)p};
    return double_key(kiln_tensor_get_f64(&tmp, 0));
  }
  }
}

/* Larger key first; among equal keys the lower index. */
static int better(topk_item a, topk_item b) { return a.key > b.key || (a.key == b.key && a.index < b.index); }

/* Restores the heap (worst item at the root) below position i. */
static void sift_down(topk_item *h, int64_t n, int64_t i) {
  for (;;) {
    int64_t w = i, l = 2 * i + 1, r = l + 1;
    if (l < n && better(h[w], h[l])) w = l;
    if (r < n && better(h[w], h[r])) w = r;
    if (w == i) return;
    topk_item t = h[i];
    h[i] = h[w];
    h[w] = t;
    i = w;
  }
}

typedef struct topk_job {
  const kiln_tensor *x;
  kiln_tensor *values, *indices;
  int64_t k, dim, inner, slices, chunks;
  int smallest;
  topk_item *heaps; /* k items per chunk */
} topk_job;

/* Items are chunks of slices, each with its own heap: the k best of a slice are kept in a heap
 * whose root is the worst of them, then sorted in place by popping. O(n log k) per slice. */
static void topk_range(void *arg, int64_t begin, int64_t end) {
  const topk_job *j = arg;
  kiln_dtype t = j->x->dtype;
  size_t es = kiln_dtype_size(t);
  uint64_t flip = j->smallest ? UINT64_MAX : 0;
  for (int64_t chunk = begin; chunk < end; chunk++) {
    topk_item *h = j->heaps + chunk * j->k;
    for (int64_t sl = chunk * j->slices / j->chunks; sl < (chunk + 1) * j->slices / j->chunks; sl++) {
      int64_t o = sl / j->inner, r = sl % j->inner, n = 0;
      const char *src = (const char *)j->x->data + (o * j->dim * j->inner + r) * (int64_t)es;
      for (int64_t i = 0; i < j->dim; i++) {
        topk_item it = {key_of(src + i * j->inner * (int64_t)es, t) ^ flip, i};
        if (n < j->k) { /* sift up */
          int64_t p = n++;
          for (; p > 0 && better(h[(p - 1) / 2], it); p = (p - 1) / 2) h[p] = h[(p - 1) / 2];
          h[p] = it;
        } else if (better(it, h[0])) {
          h[0] = it;
          sift_down(h, n, 0);
        }
      }
      for (int64_t m = n - 1; m > 0; m--) { /* the worst goes last */
        topk_item w = h[0];
        h[0] = h[m];
        h[m] = w;
        sift_down(h, m, 0);
      }
      for (int64_t i = 0; i < n; i++) {
        int64_t at = (o * j->k + i) * j->inner + r;
        memcpy((char *)j->values->data + at * (int64_t)es, src + h[i].index * j->inner * (int64_t)es, es);
        ((int64_t *)j->indices->data)[at] = h[i].index;
      }
    }
  }
}

/* TopK: the k largest (or smallest) along `axis`, sorted, ties to the lower index. k is an
 * attribute before opset 10 and input 1 after. */
static kiln_status topk_run(kx_ctx *c) {
  const kiln_tensor *x;
  kiln_status s;
  int axis;
  if ((s = kx_require(c, 0, &x)) || (s = kx_check_dtype(x, 0, KX_NUMERIC)) ||
      (s = kx_axis(kx_attr_int(c->node->proto, "axis", -1), x->rank, 0, &axis)))
    return s;
  int64_t k = kx_attr_int(c->node->proto, "k", -1);
  if (c->node->opset >= 10) {
    const kiln_tensor *k_t;
    int n;
    if ((s = kx_require(c, 1, &k_t)) || (s = kx_read_ints(k_t, "k", &k, 1, &n))) return s;
    if (n != 1) return kiln_error(KILN_INVALID_ARGUMENT, "k must hold one value");
  }
  int64_t dim = x->dims[axis];
  if (k < 0 || k > dim) return kiln_error(KILN_INVALID_ARGUMENT, "k = %lld is outside 0..%lld (the size of axis %d)", (long long)k, (long long)dim, axis);
  int64_t dims[KILN_MAX_RANK];
  memcpy(dims, x->dims, sizeof dims);
  dims[axis] = k;
  topk_job j = {x, NULL, NULL, k, dim, kx_prod(x->dims, axis + 1, x->rank), 0, 0,
                kx_attr_int(c->node->proto, "largest", 1) == 0, NULL};
  if ((s = kx_output(c, 0, x->dtype, x->rank, dims, &j.values)) || (s = kx_output(c, 1, KILN_INT64, x->rank, dims, &j.indices))) return s;
  j.slices = kx_prod(x->dims, 0, axis) * j.inner;
  if (k == 0 || j.slices == 0) return NULL;
  /* one chunk of slices (and one heap) per thread that may run */
  j.chunks = c->threads > 0 ? c->threads : c->pool ? kiln_pool_threads(c->pool) : 1;
  if (j.chunks > j.slices) j.chunks = j.slices;
  if (!(j.heaps = kx_scratch(c, (size_t)(j.chunks * k) * sizeof *j.heaps))) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  kx_parallel(c, j.chunks, (double)(j.slices / j.chunks) * (double)dim * 8, topk_range, &j);
  return NULL;
}

const kx_op kx_ops_indexing[] = {
    {"", "Gather", 1, 0, NULL, gather_run, NULL, 0},
    {"", "GatherElements", 11, 0, NULL, gather_elements_run, NULL, 0},
    {"", "GatherND", 11, 0, NULL, gather_nd_run, NULL, 0},
    {"", "Scatter", 9, 10, NULL, scatter_elements_run, NULL, 0},
    {"", "ScatterElements", 11, 0, NULL, scatter_elements_run, NULL, 0},
    {"", "ScatterND", 11, 0, NULL, scatter_nd_run, NULL, 0},
    {"", "OneHot", 9, 0, NULL, one_hot_run, NULL, 0},
    {"", "Compress", 9, 0, NULL, compress_run, NULL, 0},
    {"", "NonZero", 9, 0, NULL, non_zero_run, NULL, 0},
    {"", "ReverseSequence", 10, 0, NULL, reverse_sequence_run, NULL, 0},
    {"", "Unique", 11, 0, NULL, unique_run, NULL, 0},
    {"", "TopK", 1, 0, NULL, topk_run, NULL, 0},
    {0},
};
