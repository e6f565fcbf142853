/* Reduce* (Sum, Mean, Max, Min, Prod, L1, L2, LogSum, LogSumExp, SumSquare), ArgMax, ArgMin and
 * CumSum.
 *
 * A reduction first merges adjacent dimensions that are all reduced or all kept. When a single
 * reduced run remains the input is an [outer, n, inner] block reduced along n, and float32 (and
 * float16/bfloat16, widened) take fast paths: contiguous rows when inner == 1 (the last-axis
 * ReduceMean of a decomposed LayerNormalization, ReduceMean over H,W), column tiles otherwise.
 * Everything else (several reduced runs, double, the integer types, empty reductions) goes through
 * a general path that walks the reduced elements of each output element with an odometer,
 * accumulating in double or, for integers, in 64-bit integers (exact, wrapping like the element
 * type). */
#include "ops/util.h"
#include "ops/vmath.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Columns per tile when reducing along a non-last axis (accumulators on the stack). */
enum { TILE = 256 };

typedef enum reduce_kind {
  R_SUM,
  R_MEAN,
  R_MAX,
  R_MIN,
  R_PROD,
  R_L1,
  R_L2,
  R_LOG_SUM,
  R_LOG_SUM_EXP,
  R_SUM_SQUARE,
} reduce_kind;

static const struct {
  const char *op;
  reduce_kind kind;
} reduce_ops[] = {
    {"ReduceSum", R_SUM},
    {"ReduceMean", R_MEAN},
    {"ReduceMax", R_MAX},
    {"ReduceMin", R_MIN},
    {"ReduceProd", R_PROD},
    {"ReduceL1", R_L1},
    {"ReduceL2", R_L2},
    {"ReduceLogSum", R_LOG_SUM},
    {"ReduceLogSumExp", R_LOG_SUM_EXP},
    {"ReduceSumSquare", R_SUM_SQUARE},
};

typedef struct reduce_params {
  reduce_kind kind;
  int keepdims;
  int noop_with_empty_axes;
  int axes_input; /* axes come from input 1 (ReduceSum from opset 13, every Reduce from 18) */
  int n_axes;     /* of the attribute; -1 when absent */
  int64_t axes[KILN_MAX_RANK];
} reduce_params;

static kiln_status reduce_prepare(kx_node *n) {
  reduce_params *p = calloc(1, sizeof *p);
  if (!p) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  n->params = p;
  for (size_t i = 0; i < sizeof reduce_ops / sizeof reduce_ops[0]; i++)
    if (strcmp(n->op_type, reduce_ops[i].op) == 0) p->kind = reduce_ops[i].kind;
  p->keepdims = kx_attr_int(n->proto, "keepdims", 1) != 0;
  p->noop_with_empty_axes = kx_attr_int(n->proto, "noop_with_empty_axes", 0) != 0;
  p->axes_input = n->opset >= (p->kind == R_SUM ? 13 : 18);
  const int64_t *axes;
  int64_t count = p->axes_input ? -1 : kx_attr_ints(n->proto, "axes", &axes);
  if (count > KILN_MAX_RANK)
    return kiln_error(KILN_INVALID_ARGUMENT, "axes has %lld values, more than the largest rank (%d)", (long long)count,
                      KILN_MAX_RANK);
  p->n_axes = (int)count;
  if (count > 0) memcpy(p->axes, axes, (size_t)count * sizeof *axes);
  return NULL;
}

/* ---------------------------------------------------------------- float32 fast paths */

static float row_sum_abs(const float *x, int64_t n) {
  float acc[KX_LANES] = {0};
  int64_t i = 0;
  for (; i + KX_LANES <= n; i += KX_LANES)
    for (int k = 0; k < KX_LANES; k++) acc[k] += fabsf(x[i + k]);
  float s = 0;
  for (int k = 0; k < KX_LANES; k++) s += acc[k];
  for (; i < n; i++) s += fabsf(x[i]);
  return s;
}

static float row_sum_square(const float *x, int64_t n) {
  float acc[KX_LANES] = {0};
  int64_t i = 0;
  for (; i + KX_LANES <= n; i += KX_LANES)
    for (int k = 0; k < KX_LANES; k++) acc[k] += x[i + k] * x[i + k];
  float s = 0;
  for (int k = 0; k < KX_LANES; k++) s += acc[k];
  for (; i < n; i++) s += x[i] * x[i];
  return s;
}

static float row_prod(const float *x, int64_t n) {
  float acc[KX_LANES] = {1, 1, 1, 1, 1, 1, 1, 1};
  int64_t i = 0;
  for (; i + KX_LANES <= n; i += KX_LANES)
    for (int k = 0; k < KX_LANES; k++) acc[k] *= x[i + k];
  float s = 1;
  for (int k = 0; k < KX_LANES; k++) s *= acc[k];
  for (; i < n; i++) s *= x[i];
  return s;
}

/* n >= 1 */
static float row_min(const float *x, int64_t n) {
  float acc[KX_LANES];
  for (int k = 0; k < KX_LANES; k++) acc[k] = x[0];
  int64_t i = 0;
  for (; i + KX_LANES <= n; i += KX_LANES)
    for (int k = 0; k < KX_LANES; k++) acc[k] = x[i + k] < acc[k] ? x[i + k] : acc[k];
  float m = acc[0];
  for (int k = 1; k < KX_LANES; k++) m = acc[k] < m ? acc[k] : m;
  for (; i < n; i++) m = x[i] < m ? x[i] : m;
  return m;
}

/* log(sum(exp(x))) computed as max + log(sum(exp(x - max))); n >= 1 */
static float row_log_sum_exp(const float *x, int64_t n) {
  float m = kx_max_f32(x, n);
  if (isinf(m)) return m;
  float s = 0;
  for (int64_t i = 0; i < n; i++) s += expf(x[i] - m);
  return m + logf(s);
}

typedef struct reduce_job {
  reduce_kind kind;
  int64_t n, inner, tiles; /* [outer, n, inner] reduced along n; tiles of TILE columns per outer */
  const void *x;
  void *y;
  /* the general path: output element o reads the n elements at kept_offset(o) + the offsets
   * of the reduced dimensions (merged runs, strides in elements) */
  const kiln_tensor *xt;
  kiln_tensor *yt;
  int kept_rank, reduced_rank;
  int64_t kept_dims[KILN_MAX_RANK], kept_strides[KILN_MAX_RANK];
  int64_t reduced_dims[KILN_MAX_RANK], reduced_strides[KILN_MAX_RANK];
} reduce_job;

static void rows_f32(void *arg, int64_t begin, int64_t end) {
  const reduce_job *j = arg;
  int64_t n = j->n;
  float *y = j->y;
  for (int64_t row = begin; row < end; row++) {
    const float *x = (const float *)j->x + row * n;
    switch (j->kind) {
    case R_SUM: y[row] = kx_sum_f32(x, n); break;
    case R_MEAN: y[row] = kx_sum_f32(x, n) / (float)n; break;
    case R_MAX: y[row] = kx_max_f32(x, n); break;
    case R_MIN: y[row] = row_min(x, n); break;
    case R_PROD: y[row] = row_prod(x, n); break;
    case R_L1: y[row] = row_sum_abs(x, n); break;
    case R_L2: y[row] = sqrtf(row_sum_square(x, n)); break;
    case R_LOG_SUM: y[row] = logf(kx_sum_f32(x, n)); break;
    case R_LOG_SUM_EXP: y[row] = row_log_sum_exp(x, n); break;
    case R_SUM_SQUARE: y[row] = row_sum_square(x, n); break;
    }
  }
}

/* acc[i] (op)= x[i] for one row of a column tile; blocks of KX_LANES and a scalar tail. */
static void accumulate(reduce_kind kind, float *restrict acc, const float *restrict x, int64_t w) {
  int64_t i = 0;
  switch (kind) {
  case R_SUM:
  case R_MEAN:
  case R_LOG_SUM:
    for (; i + KX_LANES <= w; i += KX_LANES)
      for (int k = 0; k < KX_LANES; k++) acc[i + k] += x[i + k];
    for (; i < w; i++) acc[i] += x[i];
    break;
  case R_L1:
    for (; i + KX_LANES <= w; i += KX_LANES)
      for (int k = 0; k < KX_LANES; k++) acc[i + k] += fabsf(x[i + k]);
    for (; i < w; i++) acc[i] += fabsf(x[i]);
    break;
  case R_L2:
  case R_SUM_SQUARE:
    for (; i + KX_LANES <= w; i += KX_LANES)
      for (int k = 0; k < KX_LANES; k++) acc[i + k] += x[i + k] * x[i + k];
    for (; i < w; i++) acc[i] += x[i] * x[i];
    break;
  case R_PROD:
    for (; i + KX_LANES <= w; i += KX_LANES)
      for (int k = 0; k < KX_LANES; k++) acc[i + k] *= x[i + k];
    for (; i < w; i++) acc[i] *= x[i];
    break;
  case R_MAX:
  case R_LOG_SUM_EXP: /* its first sweep finds the maximum */
    for (; i + KX_LANES <= w; i += KX_LANES)
      for (int k = 0; k < KX_LANES; k++) acc[i + k] = x[i + k] > acc[i + k] ? x[i + k] : acc[i + k];
    for (; i < w; i++) acc[i] = x[i] > acc[i] ? x[i] : acc[i];
    break;
  case R_MIN:
    for (; i + KX_LANES <= w; i += KX_LANES)
      for (int k = 0; k < KX_LANES; k++) acc[i + k] = x[i + k] < acc[i + k] ? x[i + k] : acc[i + k];
    for (; i < w; i++) acc[i] = x[i] < acc[i] ? x[i] : acc[i];
    break;
  }
}

/* Reduces along n with elements `inner` apart, one tile of up to TILE columns per item. */
static void cols_f32(void *arg, int64_t begin, int64_t end) {
  const reduce_job *j = arg;
  int64_t n = j->n, inner = j->inner;
  float acc[TILE], sum[TILE];
  for (int64_t item = begin; item < end; item++) {
    int64_t outer = item / j->tiles, c0 = item % j->tiles * TILE;
    int64_t w = inner - c0 < TILE ? inner - c0 : TILE;
    const float *x = (const float *)j->x + outer * n * inner + c0;
    float *y = (float *)j->y + outer * inner + c0;
    int from_first = j->kind == R_MAX || j->kind == R_MIN || j->kind == R_LOG_SUM_EXP;
    if (from_first)
      memcpy(acc, x, (size_t)w * sizeof *acc);
    else
      for (int64_t i = 0; i < w; i++) acc[i] = j->kind == R_PROD ? 1.0f : 0.0f;
    for (int64_t r = from_first ? 1 : 0; r < n; r++) accumulate(j->kind, acc, x + r * inner, w);
    switch (j->kind) {
    case R_MEAN:
      for (int64_t i = 0; i < w; i++) y[i] = acc[i] / (float)n;
      break;
    case R_L2:
      for (int64_t i = 0; i < w; i++) y[i] = sqrtf(acc[i]);
      break;
    case R_LOG_SUM:
      for (int64_t i = 0; i < w; i++) y[i] = logf(acc[i]);
      break;
    case R_LOG_SUM_EXP:
      memset(sum, 0, sizeof sum);
      for (int64_t r = 0; r < n; r++)
        for (int64_t i = 0; i < w; i++) sum[i] += expf(x[r * inner + i] - acc[i]);
      for (int64_t i = 0; i < w; i++) y[i] = isinf(acc[i]) ? acc[i] : acc[i] + logf(sum[i]);
      break;
    default: memcpy(y, acc, (size_t)w * sizeof *y);
    }
  }
}

/* ---------------------------------------------------------------- the general path */

/* Input offset of output element `o` (kept dimensions only). */
static int64_t kept_offset(const reduce_job *j, int64_t o) {
  int64_t off = 0;
  for (int d = j->kept_rank - 1; d >= 0; d--) {
    off += o % j->kept_dims[d] * j->kept_strides[d];
    o /= j->kept_dims[d];
  }
  return off;
}

/* Walks the reduced elements of one output element, in row-major order. */
typedef struct walker {
  const reduce_job *j;
  int64_t off, idx[KILN_MAX_RANK];
} walker;

static void walk_start(walker *w, const reduce_job *j, int64_t base) {
  w->j = j;
  w->off = base;
  memset(w->idx, 0, sizeof w->idx);
}

static void walk_next(walker *w) {
  const reduce_job *j = w->j;
  for (int d = j->reduced_rank - 1; d >= 0; d--) {
    w->off += j->reduced_strides[d];
    if (++w->idx[d] < j->reduced_dims[d]) return;
    w->off -= j->reduced_strides[d] * w->idx[d];
    w->idx[d] = 0;
  }
}

/* The reduction of the n elements of one output element, in double. */
static double reduce_real(const reduce_job *j, int64_t base) {
  double acc;
  switch (j->kind) {
  case R_MAX:
  case R_LOG_SUM_EXP: acc = -INFINITY; break;
  case R_MIN: acc = INFINITY; break;
  case R_PROD: acc = 1; break;
  default: acc = 0;
  }
  walker w;
  walk_start(&w, j, base);
  for (int64_t r = 0; r < j->n; r++, walk_next(&w)) {
    double v = kiln_tensor_get_f64(j->xt, w.off);
    switch (j->kind) {
    case R_MAX:
    case R_LOG_SUM_EXP: acc = v > acc ? v : acc; break;
    case R_MIN: acc = v < acc ? v : acc; break;
    case R_PROD: acc *= v; break;
    case R_L1: acc += fabs(v); break;
    case R_L2:
    case R_SUM_SQUARE: acc += v * v; break;
    default: acc += v;
    }
  }
  switch (j->kind) {
  case R_MEAN: return acc / (double)j->n;
  case R_L2: return sqrt(acc);
  case R_LOG_SUM: return log(acc);
  case R_LOG_SUM_EXP: {
    if (!isfinite(acc)) return acc; /* empty, all -inf, or an inf/NaN present */
    double s = 0;
    walk_start(&w, j, base);
    for (int64_t r = 0; r < j->n; r++, walk_next(&w)) s += exp(kiln_tensor_get_f64(j->xt, w.off) - acc);
    return acc + log(s);
  }
  default: return acc;
  }
}

static void general_real(void *arg, int64_t begin, int64_t end) {
  const reduce_job *j = arg;
  for (int64_t o = begin; o < end; o++) kx_set_f64(j->yt, o, reduce_real(j, kept_offset(j, o)));
}

static int is_unsigned(kiln_dtype t) {
  return t == KILN_UINT8 || t == KILN_UINT16 || t == KILN_UINT32 || t == KILN_UINT64;
}

/* Integer element i as a 64-bit two's complement pattern (signed types sign-extended), so sums
 * and products wrap as they do in the element type, without signed overflow. */
static uint64_t get_bits(const kiln_tensor *t, int64_t i) {
  const void *p = t->data;
  switch (t->dtype) {
  case KILN_INT8: return (uint64_t)(int64_t)((const int8_t *)p)[i];
  case KILN_UINT8: return ((const uint8_t *)p)[i];
  case KILN_INT16: return (uint64_t)(int64_t)((const int16_t *)p)[i];
  case KILN_UINT16: return ((const uint16_t *)p)[i];
  case KILN_INT32: return (uint64_t)(int64_t)((const int32_t *)p)[i];
  case KILN_UINT32: return ((const uint32_t *)p)[i];
  case KILN_INT64: return (uint64_t)((const int64_t *)p)[i];
  default: return ((const uint64_t *)p)[i];
  }
}

/* Stores the low bits of v (the element type's wrap-around). */
static void set_bits(kiln_tensor *t, int64_t i, uint64_t v) {
  void *p = t->data;
  switch (t->dtype) {
  case KILN_INT8:
  case KILN_UINT8: ((uint8_t *)p)[i] = (uint8_t)v; break;
  case KILN_INT16:
  case KILN_UINT16: ((uint16_t *)p)[i] = (uint16_t)v; break;
  case KILN_INT32:
  case KILN_UINT32: ((uint32_t *)p)[i] = (uint32_t)v; break;
  default: ((uint64_t *)p)[i] = v;
  }
}

/* The smallest and largest value of an integer type, as bit patterns. */
static void int_limits(kiln_dtype t, uint64_t *lo, uint64_t *hi) {
  int bits = (int)kiln_dtype_size(t) * 8;
  if (is_unsigned(t)) {
    *lo = 0;
    *hi = bits == 64 ? UINT64_MAX : (UINT64_C(1) << bits) - 1;
  } else {
    *hi = (UINT64_C(1) << (bits - 1)) - 1;
    *lo = ~*hi; /* sign-extended minimum */
  }
}

/* a < b for two elements of t's type. */
static int int_less(kiln_dtype t, uint64_t a, uint64_t b) { return is_unsigned(t) ? a < b : (int64_t)a < (int64_t)b; }

/* Sum, Mean, Max, Min, Prod, L1 and SumSquare of integers, exactly. */
static void general_int(void *arg, int64_t begin, int64_t end) {
  const reduce_job *j = arg;
  kiln_dtype t = j->xt->dtype;
  uint64_t lo, hi;
  int_limits(t, &lo, &hi);
  for (int64_t o = begin; o < end; o++) {
    int64_t base = kept_offset(j, o);
    uint64_t acc = j->kind == R_MAX ? lo : j->kind == R_MIN ? hi : j->kind == R_PROD ? 1 : 0;
    walker w;
    walk_start(&w, j, base);
    for (int64_t r = 0; r < j->n; r++, walk_next(&w)) {
      uint64_t v = get_bits(j->xt, w.off);
      switch (j->kind) {
      case R_MAX: acc = int_less(t, acc, v) ? v : acc; break;
      case R_MIN: acc = int_less(t, v, acc) ? v : acc; break;
      case R_PROD: acc *= v; break;
      case R_L1: acc += int_less(t, v, 0) ? 0 - v : v; break;
      case R_SUM_SQUARE: acc += v * v; break;
      default: acc += v;
      }
    }
    if (j->kind == R_MEAN && j->n > 0) acc = is_unsigned(t) ? acc / (uint64_t)j->n : (uint64_t)((int64_t)acc / j->n);
    set_bits(j->yt, o, acc);
  }
}

/* L2, LogSum and LogSumExp of integers: computed in double, stored saturated (NaN as 0). */
static void general_int_real(void *arg, int64_t begin, int64_t end) {
  const reduce_job *j = arg;
  kiln_dtype t = j->yt->dtype;
  uint64_t lo, hi;
  int_limits(t, &lo, &hi);
  double dlo = is_unsigned(t) ? 0 : (double)(int64_t)lo, dhi = is_unsigned(t) ? (double)hi : (double)(int64_t)hi;
  for (int64_t o = begin; o < end; o++) {
    double v = reduce_real(j, kept_offset(j, o));
    if (isnan(v) || v <= dlo) /* (double)hi rounds up to a power of two: >= catches it */
      set_bits(j->yt, o, isnan(v) ? 0 : lo);
    else if (v >= dhi)
      set_bits(j->yt, o, hi);
    else
      set_bits(j->yt, o, is_unsigned(t) ? (uint64_t)v : (uint64_t)(int64_t)v);
  }
}

/* The reduced axes as flags. With no axes (absent, or an empty list) every axis is reduced, or
 * none when noop_with_empty_axes is set. */
static kiln_status reduce_axes(const kx_ctx *c, const reduce_params *p, int rank, int *reduced) {
  int64_t from_input[KILN_MAX_RANK];
  const int64_t *axes = p->axes;
  int n = p->n_axes;
  kiln_status s;
  if (p->axes_input) {
    const kiln_tensor *t = kx_input(c, 1);
    n = -1;
    if (t && (s = kx_read_ints(t, "axes", from_input, KILN_MAX_RANK, &n))) return s;
    axes = from_input;
  }
  for (int d = 0; d < rank; d++) reduced[d] = n <= 0 && !p->noop_with_empty_axes;
  for (int i = 0; i < n; i++) {
    int a;
    if ((s = kx_axis(axes[i], rank, 0, &a))) return s;
    if (reduced[a]) return kiln_error(KILN_INVALID_ARGUMENT, "axis %d appears twice in axes", a);
    reduced[a] = 1;
  }
  return NULL;
}

/* Fills the general path's geometry: runs of adjacent kept / reduced dimensions merged (dimensions
 * of size 1 dropped); returns the number of reduced runs. */
static int reduce_geometry(const kiln_tensor *x, const int *reduced, reduce_job *j) {
  int64_t strides[KILN_MAX_RANK];
  kx_strides(x->rank, x->dims, strides);
  int runs = 0, last = -1;
  j->kept_rank = j->reduced_rank = 0;
  for (int d = 0; d < x->rank; d++) {
    if (x->dims[d] == 1) continue;
    int r = reduced[d];
    int *rank = r ? &j->reduced_rank : &j->kept_rank;
    int64_t *dims = r ? j->reduced_dims : j->kept_dims, *st = r ? j->reduced_strides : j->kept_strides;
    if (r == last) { /* merge into the previous run: it is the outer part */
      dims[*rank - 1] *= x->dims[d];
      st[*rank - 1] = strides[d];
    } else {
      dims[*rank] = x->dims[d];
      st[*rank] = strides[d];
      ++*rank;
      runs += r;
    }
    last = r;
  }
  return runs;
}

static kiln_status reduce_run(kx_ctx *c) {
  const reduce_params *p = c->node->params;
  const kiln_tensor *x;
  kiln_tensor *y;
  kiln_status s;
  int reduced[KILN_MAX_RANK];
  if ((s = kx_require(c, 0, &x)) || (s = kx_check_dtype(x, 0, KX_NUMERIC)) || (s = reduce_axes(c, p, x->rank, reduced)))
    return s;
  int64_t dims[KILN_MAX_RANK], n = 1;
  int rank = 0;
  for (int d = 0; d < x->rank; d++) {
    if (reduced[d]) n *= x->dims[d];
    if (!reduced[d] || p->keepdims) dims[rank++] = reduced[d] ? 1 : x->dims[d];
  }
  if ((s = kx_output(c, 0, x->dtype, rank, dims, &y))) return s;
  int64_t count = kiln_tensor_numel(y);
  if (count == 0) return NULL;
  reduce_job j = {.kind = p->kind, .n = n, .xt = x, .yt = y};
  int runs = reduce_geometry(x, reduced, &j);
  int widen = x->dtype == KILN_FLOAT16 || x->dtype == KILN_BFLOAT16;
  if (n > 0 && runs <= 1 && (x->dtype == KILN_FLOAT || widen)) {
    /* [outer, n, inner]: inner is what follows the reduced run (1 when n is 1) */
    int64_t inner = 1;
    for (int d = x->rank - 1; d >= 0 && !(reduced[d] && x->dims[d] > 1); d--) inner *= x->dims[d];
    if (n == 1) inner = 1;
    int64_t outer = count / inner, in_count = kiln_tensor_numel(x);
    j.inner = inner;
    j.tiles = (inner + TILE - 1) / TILE;
    j.x = x->data;
    j.y = y->data;
    float *buf = NULL;
    if (widen) {
      if (!(buf = kx_scratch_floats(c, in_count + count, &s))) return s;
      kx_to_float(x->dtype, x->data, buf, in_count);
      j.x = buf;
      j.y = buf + in_count;
    }
    if (inner == 1)
      kx_parallel(c, outer, (double)n * 2, rows_f32, &j);
    else
      kx_parallel(c, outer * j.tiles, (double)n * (inner < TILE ? inner : TILE) * 2, cols_f32, &j);
    if (widen) kx_from_float(y->dtype, buf + in_count, y->data, count);
    return NULL;
  }
  kiln_range_fn fn = general_real;
  if (!kiln_dtype_is_float(x->dtype))
    fn = p->kind == R_L2 || p->kind == R_LOG_SUM || p->kind == R_LOG_SUM_EXP ? general_int_real : general_int;
  kx_parallel(c, count, (double)n * 8, fn, &j);
  return NULL;
}

/* ---------------------------------------------------------------- ArgMax, ArgMin */

typedef struct arg_job {
  int64_t n, inner;
  int want_max, last; /* select_last_index: ties go to the later element */
  const void *x;
  int64_t *y;
} arg_job;

/* One kernel per element type: for each line (outer, inner) the index along n of the extreme
 * element. A line takes `v` when it is strictly better, or equal and ties go last. */
#define ARG_KERNEL(NAME, T)                                                                                            \
  static void NAME(void *arg, int64_t begin, int64_t end) {                                                            \
    const arg_job *j = arg;                                                                                            \
    int64_t n = j->n, inner = j->inner;                                                                                \
    for (int64_t line = begin; line < end; line++) {                                                                   \
      const T *x = (const T *)j->x + line / inner * n * inner + line % inner;                                          \
      T best = x[0];                                                                                                   \
      int64_t at = 0;                                                                                                  \
      for (int64_t r = 1; r < n; r++) {                                                                                \
        T v = x[r * inner];                                                                                            \
        int better = j->want_max ? v > best : v < best;                                                                \
        if (better || (j->last && v == best)) {                                                                        \
          best = v;                                                                                                    \
          at = r;                                                                                                      \
        }                                                                                                              \
      }                                                                                                                \
      j->y[line] = at;                                                                                                 \
    }                                                                                                                  \
  }

ARG_KERNEL(arg_f32, float)
ARG_KERNEL(arg_f64, double)
ARG_KERNEL(arg_i8, int8_t)
ARG_KERNEL(arg_u8, uint8_t)
ARG_KERNEL(arg_i16, int16_t)
ARG_KERNEL(arg_u16, uint16_t)
ARG_KERNEL(arg_i32, int32_t)
ARG_KERNEL(arg_u32, uint32_t)
ARG_KERNEL(arg_i64, int64_t)
ARG_KERNEL(arg_u64, uint64_t)

static kiln_range_fn arg_kernel(kiln_dtype t) {
  switch (t) {
  case KILN_FLOAT:
  case KILN_FLOAT16: /* widened first */
  case KILN_BFLOAT16: return arg_f32;
  case KILN_DOUBLE: return arg_f64;
  case KILN_INT8: return arg_i8;
  case KILN_UINT8: return arg_u8;
  case KILN_INT16: return arg_i16;
  case KILN_UINT16: return arg_u16;
  case KILN_INT32: return arg_i32;
  case KILN_UINT32: return arg_u32;
  case KILN_INT64: return arg_i64;
  default: return arg_u64;
  }
}

static kiln_status arg_run(kx_ctx *c, int want_max) {
  const kiln_tensor *x;
  kiln_tensor *y;
  kiln_status s;
  int axis;
  if ((s = kx_require(c, 0, &x)) || (s = kx_check_dtype(x, 0, KX_NUMERIC)) ||
      (s = kx_axis(kx_attr_int(c->node->proto, "axis", 0), x->rank, 0, &axis)))
    return s;
  if (x->dims[axis] == 0)
    return kiln_error(KILN_INVALID_ARGUMENT, "axis %d has no elements to take the arg%s of", axis,
                      want_max ? "max" : "min");
  int keepdims = kx_attr_int(c->node->proto, "keepdims", 1) != 0;
  int64_t dims[KILN_MAX_RANK];
  int rank = 0;
  for (int d = 0; d < x->rank; d++)
    if (d != axis || keepdims) dims[rank++] = d == axis ? 1 : x->dims[d];
  if ((s = kx_output(c, 0, KILN_INT64, rank, dims, &y))) return s;
  int64_t lines = kiln_tensor_numel(y);
  if (lines == 0) return NULL;
  arg_job j = {x->dims[axis], kx_prod(x->dims, axis + 1, x->rank),
               want_max,      kx_attr_int(c->node->proto, "select_last_index", 0) != 0,
               x->data,       y->data};
  if (x->dtype == KILN_FLOAT16 || x->dtype == KILN_BFLOAT16) {
    int64_t count = kiln_tensor_numel(x);
    float *buf = kx_scratch_floats(c, count, &s);
    if (!buf) return s;
    kx_to_float(x->dtype, x->data, buf, count);
    j.x = buf;
  }
  kx_parallel(c, lines, (double)j.n, arg_kernel(x->dtype), &j);
  return NULL;
}

static kiln_status argmax_run(kx_ctx *c) { return arg_run(c, 1); }
static kiln_status argmin_run(kx_ctx *c) { return arg_run(c, 0); }

/* ---------------------------------------------------------------- CumSum */

typedef struct cumsum_job {
  int64_t n, inner;
  int exclusive, reverse;
  const void *x;
  void *y;
} cumsum_job;

/* One kernel per element type, A being the type sums are formed in (uint64_t for integers, so
 * they wrap without signed overflow). Each item is one outer block, walked row by row along n
 * (backwards when reversed): a row is the previous output row plus the current input row, or
 * plus the previous input row when exclusive. */
#define CUMSUM_KERNEL(NAME, T, A)                                                                                      \
  static void NAME(void *arg, int64_t begin, int64_t end) {                                                            \
    const cumsum_job *j = arg;                                                                                         \
    int64_t n = j->n, inner = j->inner, step = j->reverse ? -inner : inner;                                            \
    for (int64_t block = begin; block < end; block++) {                                                                \
      int64_t first = block * n * inner + (j->reverse ? (n - 1) * inner : 0);                                          \
      const T *x = (const T *)j->x + first;                                                                            \
      T *y = (T *)j->y + first;                                                                                        \
      for (int64_t i = 0; i < inner; i++) y[i] = j->exclusive ? (T)0 : x[i];                                           \
      for (int64_t r = 1; r < n; r++) {                                                                                \
        const T *add = x + (j->exclusive ? (r - 1) * step : r * step);                                                 \
        T *prev = y + (r - 1) * step, *cur = y + r * step;                                                             \
        for (int64_t i = 0; i < inner; i++) cur[i] = (T)((A)prev[i] + (A)add[i]);                                      \
      }                                                                                                                \
    }                                                                                                                  \
  }

CUMSUM_KERNEL(cumsum_f32, float, float)
CUMSUM_KERNEL(cumsum_f64, double, double)
CUMSUM_KERNEL(cumsum_i32, int32_t, uint64_t)
CUMSUM_KERNEL(cumsum_u32, uint32_t, uint64_t)
CUMSUM_KERNEL(cumsum_i64, int64_t, uint64_t)
CUMSUM_KERNEL(cumsum_u64, uint64_t, uint64_t)

static kiln_status cumsum_run(kx_ctx *c) {
  const kiln_tensor *x, *axis_t;
  kiln_tensor *y;
  kiln_status s;
  const unsigned types =
      KX_FLOATS | KX_BIT(KILN_INT32) | KX_BIT(KILN_UINT32) | KX_BIT(KILN_INT64) | KX_BIT(KILN_UINT64);
  if ((s = kx_require(c, 0, &x)) || (s = kx_require(c, 1, &axis_t)) || (s = kx_check_dtype(x, 0, types))) return s;
  int64_t axis_v;
  int count_axis, axis;
  if (kiln_tensor_numel(axis_t) != 1)
    return kiln_error(KILN_INVALID_ARGUMENT, "axis must hold one value, it holds %lld",
                      (long long)kiln_tensor_numel(axis_t));
  if ((s = kx_read_ints(axis_t, "axis", &axis_v, 1, &count_axis))) return s;
  if ((s = kx_axis(axis_v, x->rank, 0, &axis)) || (s = kx_output(c, 0, x->dtype, x->rank, x->dims, &y))) return s;
  int64_t count = kiln_tensor_numel(x);
  if (count == 0) return NULL;
  cumsum_job j = {x->dims[axis],
                  kx_prod(x->dims, axis + 1, x->rank),
                  kx_attr_int(c->node->proto, "exclusive", 0) != 0,
                  kx_attr_int(c->node->proto, "reverse", 0) != 0,
                  x->data,
                  y->data};
  int64_t blocks = kx_prod(x->dims, 0, axis);
  double cost = (double)(j.n * j.inner);
  switch (x->dtype) {
  case KILN_FLOAT: kx_parallel(c, blocks, cost, cumsum_f32, &j); break;
  case KILN_DOUBLE: kx_parallel(c, blocks, cost, cumsum_f64, &j); break;
  case KILN_INT32: kx_parallel(c, blocks, cost, cumsum_i32, &j); break;
  case KILN_UINT32: kx_parallel(c, blocks, cost, cumsum_u32, &j); break;
  case KILN_INT64: kx_parallel(c, blocks, cost, cumsum_i64, &j); break;
  case KILN_UINT64: kx_parallel(c, blocks, cost, cumsum_u64, &j); break;
  default: { /* float16, bfloat16: summed in float */
    float *buf = kx_scratch_floats(c, count * 2, &s);
    if (!buf) return s;
    kx_to_float(x->dtype, x->data, buf, count);
    j.x = buf;
    j.y = buf + count;
    kx_parallel(c, blocks, cost, cumsum_f32, &j);
    kx_from_float(y->dtype, buf + count, y->data, count);
  }
  }
  return NULL;
}

const kx_op kx_ops_reduce[] = {
    {"", "ReduceSum", 1, 0, reduce_prepare, reduce_run, NULL, 0},
    {"", "ReduceMean", 1, 0, reduce_prepare, reduce_run, NULL, 0},
    {"", "ReduceMax", 1, 0, reduce_prepare, reduce_run, NULL, 0},
    {"", "ReduceMin", 1, 0, reduce_prepare, reduce_run, NULL, 0},
    {"", "ReduceProd", 1, 0, reduce_prepare, reduce_run, NULL, 0},
    {"", "ReduceL1", 1, 0, reduce_prepare, reduce_run, NULL, 0},
    {"", "ReduceL2", 1, 0, reduce_prepare, reduce_run, NULL, 0},
    {"", "ReduceLogSum", 1, 0, reduce_prepare, reduce_run, NULL, 0},
    {"", "ReduceLogSumExp", 1, 0, reduce_prepare, reduce_run, NULL, 0},
    {"", "ReduceSumSquare", 1, 0, reduce_prepare, reduce_run, NULL, 0},
    {"", "ArgMax", 1, 0, NULL, argmax_run, NULL, 0},
    {"", "ArgMin", 1, 0, NULL, argmin_run, NULL, 0},
    {"", "CumSum", 11, 0, NULL, cumsum_run, NULL, 0},
    {0},
};
