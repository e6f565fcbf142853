/* Softmax, LogSoftmax and Hardmax.
 *
 * Up to opset 12 the input is coerced to 2-D at `axis` (default 1) and each row of the flattened
 * trailing block is normalized; from opset 13 the normalization runs along `axis` (default -1)
 * alone. Both views are a [outer, n, inner] layout normalized along n: inner is 1 for the old
 * semantics and for the last axis (the transformer case, [B,H,S,S] over S), where rows are
 * contiguous; otherwise columns of `inner` floats are processed in tiles so the loops still run
 * over contiguous memory.
 *
 * float32 runs on a polynomial exp that gcc vectorizes (libm's expf is a call per element);
 * float16/bfloat16 are widened to float32, double is computed with libm in double. */
#include "ops/util.h"
#include "ops/vmath.h"

#include <math.h>
#include <string.h>

/* Columns per tile when normalizing along a non-last axis (two float arrays on the stack). */
enum { TILE = 256 };

/* The smallest argument whose exp is still a normal float: exp_core needs 2^n to be normal. */
#define EXP_LO (-87.33f)

typedef enum sm_kind { SOFTMAX, LOG_SOFTMAX, HARDMAX } sm_kind;

/* exp(x) for x in [EXP_LO, 88]: x = n ln2 + r with |r| <= ln2/2, exp(r) by the Cephes expf
 * polynomial (relative error about 1e-7), 2^n assembled in the exponent bits. Branch-free, so
 * loops calling it vectorize; fmaf compiles to one instruction with -mfma (ISO C mode does not
 * contract a * b + c on its own). */
static inline float exp_core(float x) {
  const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer in the low bits */
  float t = fmaf(x, 1.44269504088896341f, magic);
  float n = t - magic;
  float r = fmaf(n, -0.693359375f, x); /* x - n ln2, with ln2 split in two so n * ln2 is exact */
  r = fmaf(n, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = fmaf(p, r, 1.3981999507e-3f);
  p = fmaf(p, r, 8.3334519073e-3f);
  p = fmaf(p, r, 4.1665795894e-2f);
  p = fmaf(p, r, 1.6666665459e-1f);
  p = fmaf(p, r, 5.0000001201e-1f);
  p = fmaf(p, r * r, r + 1.0f);
  uint32_t bits;
  memcpy(&bits, &t, sizeof bits);
  bits = (bits - 0x4B400000u + 127u) << 23; /* n + bias, from t's mantissa (0x4B400000 = magic) */
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

/* m[i] = max(m[i], x[i]) */
static void max_each(float *restrict m, const float *restrict x, int64_t n) {
  int64_t i = 0;
  for (; i + KX_LANES <= n; i += KX_LANES)
    for (int k = 0; k < KX_LANES; k++) m[i + k] = x[i + k] > m[i + k] ? x[i + k] : m[i + k];
  for (; i < n; i++) m[i] = x[i] > m[i] ? x[i] : m[i];
}

/* The argument range exp_core handles; a NaN stays NaN. */
static inline float exp_arg(float v) { return v < EXP_LO ? EXP_LO : v; }

/* y = exp_arg(x - m): kept apart from the exp so that both loops vectorize. */
static void shift(float *restrict y, const float *restrict x, float m, int64_t n) {
  int64_t i = 0;
  for (; i + KX_LANES <= n; i += KX_LANES)
    for (int k = 0; k < KX_LANES; k++) y[i + k] = exp_arg(x[i + k] - m);
  for (; i < n; i++) y[i] = exp_arg(x[i] - m);
}

/* y = exp_arg(x - m[i]), for columns. */
static void shift_each(float *restrict y, const float *restrict x, const float *restrict m, int64_t n) {
  int64_t i = 0;
  for (; i + KX_LANES <= n; i += KX_LANES)
    for (int k = 0; k < KX_LANES; k++) y[i + k] = exp_arg(x[i + k] - m[i + k]);
  for (; i < n; i++) y[i] = exp_arg(x[i] - m[i]);
}

/* y = exp(y) in place; returns the sum. */
static float exp_sum(float *y, int64_t n) {
  float acc[KX_LANES] = {0};
  int64_t i = 0;
  for (; i + KX_LANES <= n; i += KX_LANES)
    for (int k = 0; k < KX_LANES; k++) {
      y[i + k] = exp_core(y[i + k]);
      acc[k] += y[i + k];
    }
  float s = 0;
  for (int k = 0; k < KX_LANES; k++) s += acc[k];
  for (; i < n; i++) {
    y[i] = exp_core(y[i]);
    s += y[i];
  }
  return s;
}

/* y = exp(y) in place, sum[i] += y[i]. */
static void exp_accumulate(float *restrict y, float *restrict sum, int64_t n) {
  int64_t i = 0;
  for (; i + KX_LANES <= n; i += KX_LANES)
    for (int k = 0; k < KX_LANES; k++) {
      y[i + k] = exp_core(y[i + k]);
      sum[i + k] += y[i + k];
    }
  for (; i < n; i++) {
    y[i] = exp_core(y[i]);
    sum[i] += y[i];
  }
}

static void scale(float *y, float f, int64_t n) {
  int64_t i = 0;
  for (; i + KX_LANES <= n; i += KX_LANES)
    for (int k = 0; k < KX_LANES; k++) y[i + k] *= f;
  for (; i < n; i++) y[i] *= f;
}

static void scale_each(float *restrict y, const float *restrict f, int64_t n) {
  int64_t i = 0;
  for (; i + KX_LANES <= n; i += KX_LANES)
    for (int k = 0; k < KX_LANES; k++) y[i + k] *= f[i + k];
  for (; i < n; i++) y[i] *= f[i];
}

static void reciprocal(float *y, int64_t n) {
  int64_t i = 0;
  for (; i + KX_LANES <= n; i += KX_LANES)
    for (int k = 0; k < KX_LANES; k++) y[i + k] = 1.0f / y[i + k];
  for (; i < n; i++) y[i] = 1.0f / y[i];
}

/* y = (x - m) - ls: LogSoftmax's output, ls being log(sum). Subtracting the maximum first keeps
 * the digits that m + ls would round away when x is large. */
static void log_out(float *restrict y, const float *restrict x, float m, float ls, int64_t n) {
  int64_t i = 0;
  for (; i + KX_LANES <= n; i += KX_LANES)
    for (int k = 0; k < KX_LANES; k++) y[i + k] = (x[i + k] - m) - ls;
  for (; i < n; i++) y[i] = (x[i] - m) - ls;
}

static void log_out_each(float *restrict y, const float *restrict x, const float *restrict m, const float *restrict ls,
                         int64_t n) {
  int64_t i = 0;
  for (; i + KX_LANES <= n; i += KX_LANES)
    for (int k = 0; k < KX_LANES; k++) y[i + k] = (x[i + k] - m[i + k]) - ls[i + k];
  for (; i < n; i++) y[i] = (x[i] - m[i]) - ls[i];
}

/* ---- float32 */

typedef struct sm_job {
  sm_kind kind;
  int64_t n, inner, tiles; /* tiles: column tiles per outer block (inner > 1) */
  const float *x;
  float *y;
} sm_job;

/* Normalizes contiguous rows of n floats. */
static void rows_f32(void *arg, int64_t begin, int64_t end) {
  const sm_job *j = arg;
  int64_t n = j->n;
  for (int64_t row = begin; row < end; row++) {
    const float *x = j->x + row * n;
    float *y = j->y + row * n;
    float m = kx_max_f32(x, n);
    shift(y, x, m, n);
    float sum = exp_sum(y, n);
    if (j->kind == SOFTMAX)
      scale(y, 1.0f / sum, n);
    else
      log_out(y, x, m, logf(sum), n);
  }
}

/* Normalizes along n with elements `inner` apart: each item is one tile of up to TILE adjacent
 * columns of one outer block, walked row by row. */
static void cols_f32(void *arg, int64_t begin, int64_t end) {
  const sm_job *j = arg;
  int64_t n = j->n, inner = j->inner;
  float m[TILE], s[TILE];
  for (int64_t item = begin; item < end; item++) {
    int64_t outer = item / j->tiles, c0 = item % j->tiles * TILE;
    int64_t w = inner - c0 < TILE ? inner - c0 : TILE;
    const float *x = j->x + outer * n * inner + c0;
    float *y = j->y + outer * n * inner + c0;
    memcpy(m, x, (size_t)w * sizeof *m);
    for (int64_t r = 1; r < n; r++) max_each(m, x + r * inner, w);
    memset(s, 0, sizeof s);
    for (int64_t r = 0; r < n; r++) {
      shift_each(y + r * inner, x + r * inner, m, w);
      exp_accumulate(y + r * inner, s, w);
    }
    if (j->kind == SOFTMAX) {
      reciprocal(s, w);
      for (int64_t r = 0; r < n; r++) scale_each(y + r * inner, s, w);
    } else {
      for (int64_t c = 0; c < w; c++) s[c] = logf(s[c]);
      for (int64_t r = 0; r < n; r++) log_out_each(y + r * inner, x + r * inner, m, s, w);
    }
  }
}

static void run_f32(kx_ctx *c, sm_kind kind, const float *x, float *y, int64_t outer, int64_t n, int64_t inner) {
  sm_job j = {kind, n, inner, (inner + TILE - 1) / TILE, x, y};
  if (inner == 1)
    kx_parallel(c, outer, (double)n * 24, rows_f32, &j);
  else
    kx_parallel(c, outer * j.tiles, (double)n * (inner < TILE ? inner : TILE) * 24, cols_f32, &j);
}

/* ---- double: plain strided loops on libm */

typedef struct sm_job_f64 {
  sm_kind kind;
  int64_t n, inner;
  const double *x;
  double *y;
} sm_job_f64;

static void lines_f64(void *arg, int64_t begin, int64_t end) {
  const sm_job_f64 *j = arg;
  int64_t n = j->n, inner = j->inner;
  for (int64_t line = begin; line < end; line++) {
    int64_t base = line / inner * n * inner + line % inner;
    const double *x = j->x + base;
    double *y = j->y + base;
    double m = x[0], sum = 0;
    for (int64_t r = 1; r < n; r++) m = x[r * inner] > m ? x[r * inner] : m;
    for (int64_t r = 0; r < n; r++) {
      y[r * inner] = exp(x[r * inner] - m);
      sum += y[r * inner];
    }
    if (j->kind == SOFTMAX) {
      for (int64_t r = 0; r < n; r++) y[r * inner] /= sum;
    } else {
      double ls = log(sum);
      for (int64_t r = 0; r < n; r++) y[r * inner] = (x[r * inner] - m) - ls;
    }
  }
}

/* ---- Hardmax: 1 at the first maximum of each line, 0 elsewhere. Reads elements as double (exact
 * for every float type); not on any hot path. */

typedef struct hardmax_job {
  int64_t n, inner;
  const kiln_tensor *x;
  kiln_tensor *y;
} hardmax_job;

static void hardmax_lines(void *arg, int64_t begin, int64_t end) {
  const hardmax_job *j = arg;
  int64_t n = j->n, inner = j->inner;
  for (int64_t line = begin; line < end; line++) {
    int64_t base = line / inner * n * inner + line % inner, best = base;
    double m = kiln_tensor_get_f64(j->x, base);
    for (int64_t r = 1; r < n; r++) {
      double v = kiln_tensor_get_f64(j->x, base + r * inner);
      if (v > m) {
        m = v;
        best = base + r * inner;
      }
    }
    kx_set_f64(j->y, best, 1.0);
  }
}

/* ---- the kernels */

/* The [outer, n, inner] view of x for the node's opset and axis. */
static kiln_status layout(const kx_ctx *c, const kiln_tensor *x, int64_t *outer, int64_t *n, int64_t *inner) {
  int legacy = c->node->opset < 13;
  int axis;
  kiln_status s = kx_axis(kx_attr_int(c->node->proto, "axis", legacy ? 1 : -1), x->rank, 0, &axis);
  if (s) return s;
  *outer = kx_prod(x->dims, 0, axis);
  *n = legacy ? kx_prod(x->dims, axis, x->rank) : x->dims[axis];
  *inner = legacy ? 1 : kx_prod(x->dims, axis + 1, x->rank);
  return NULL;
}

static kiln_status normalize(kx_ctx *c, sm_kind kind) {
  const kiln_tensor *x;
  kiln_tensor *y;
  kiln_status s;
  int64_t outer, n, inner;
  if ((s = kx_require(c, 0, &x)) || (s = kx_check_dtype(x, 0, KX_FLOATS)) || (s = layout(c, x, &outer, &n, &inner)) ||
      (s = kx_output(c, 0, x->dtype, x->rank, x->dims, &y)))
    return s;
  int64_t count = kiln_tensor_numel(x);
  if (count == 0) return NULL;
  if (kind == HARDMAX) {
    memset(y->data, 0, kiln_tensor_nbytes(y));
    hardmax_job j = {n, inner, x, y};
    kx_parallel(c, outer * inner, (double)n * 4, hardmax_lines, &j);
    return NULL;
  }
  if (x->dtype == KILN_DOUBLE) {
    sm_job_f64 j = {kind, n, inner, x->data, y->data};
    kx_parallel(c, outer * inner, (double)n * 40, lines_f64, &j);
    return NULL;
  }
  if (x->dtype == KILN_FLOAT) {
    run_f32(c, kind, x->data, y->data, outer, n, inner);
    return NULL;
  }
  float *buf = kx_scratch(c, (size_t)count * 2 * sizeof *buf); /* float16/bfloat16: widen, run, narrow */
  if (!buf)
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for a %lld-element float buffer", (long long)count * 2);
  kx_to_float(x->dtype, x->data, buf, count);
  run_f32(c, kind, buf, buf + count, outer, n, inner);
  kx_from_float(y->dtype, buf + count, y->data, count);
  return NULL;
}

static kiln_status softmax_run(kx_ctx *c) { return normalize(c, SOFTMAX); }
static kiln_status log_softmax_run(kx_ctx *c) { return normalize(c, LOG_SOFTMAX); }
static kiln_status hardmax_run(kx_ctx *c) { return normalize(c, HARDMAX); }

const kx_op kx_ops_softmax[] = {
    {"", "Softmax", 1, 0, NULL, softmax_run, NULL, 0},
    {"", "LogSoftmax", 1, 0, NULL, log_softmax_run, NULL, 0},
    {"", "Hardmax", 1, 0, NULL, hardmax_run, NULL, 0},
    {0},
};
