/* Linear quantization: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, and the integer
 * products MatMulInteger, QLinearMatMul, ConvInteger and QLinearConv.
 *
 * Quantizing rounds half to even (nearbyintf under the default rounding mode) and saturates to
 * the 8-bit type. The products accumulate (x - zero_point) * (w - zero_point) in 32 bits; ONNX
 * lets that sum wrap, so it is kept in uint32_t, where wrapping is defined, and read back as
 * int32. QLinear* then requantize the sum with the float multiplier x_scale * w_scale / y_scale. */
#include "ops/util.h"

#include <math.h>
#include <string.h>

#define Q8 (KX_BIT(KILN_UINT8) | KX_BIT(KILN_INT8))
#define TILE 256

/* A zero point's element i as int32; an absent zero point is 0. */
static inline int32_t zp_at(const kiln_tensor *zp, int64_t i) {
  if (!zp) return 0;
  switch (zp->dtype) {
  case KILN_UINT8: return ((const uint8_t *)zp->data)[i];
  case KILN_INT8: return ((const int8_t *)zp->data)[i];
  default: return ((const int32_t *)zp->data)[i];
  }
}

/* Element i of an 8-bit tensor as int32. */
static inline int32_t q8_at(kiln_dtype t, const void *p, int64_t i) {
  return t == KILN_UINT8 ? ((const uint8_t *)p)[i] : ((const int8_t *)p)[i];
}

/* Rounds half to even, adds the zero point and saturates to the 8-bit output type, for n floats
 * of v in place; then stores them into y (uint8 or int8) starting at element at. */
static void quantize_floats(float *v, int64_t n, float zp, kiln_dtype yt, void *y, int64_t at) {
  float lo = yt == KILN_UINT8 ? 0.0f : -128.0f, hi = yt == KILN_UINT8 ? 255.0f : 127.0f;
  /* fmaxf before fminf also sends NaN to lo, so the conversions below are always defined */
  for (int64_t i = 0; i < n; i++) v[i] = fminf(fmaxf(nearbyintf(v[i]) + zp, lo), hi);
  if (yt == KILN_UINT8)
    for (int64_t i = 0; i < n; i++) ((uint8_t *)y)[at + i] = (uint8_t)v[i];
  else
    for (int64_t i = 0; i < n; i++) ((int8_t *)y)[at + i] = (int8_t)v[i];
}

static kiln_status dtype_mismatch(const char *zp_name, const kiln_tensor *zp, const char *what, kiln_dtype want) {
  return kiln_error(KILN_INVALID_ARGUMENT, "%s has dtype %s, but %s is %s: they must match", zp_name,
                    kiln_dtype_name(zp->dtype), what, kiln_dtype_name(want));
}

static kiln_status check_scale(const kiln_tensor *scale, const char *name) {
  if (scale->dtype != KILN_FLOAT)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s must be float, got %s", name, kiln_dtype_name(scale->dtype));
  return NULL;
}

/* ------------------------------------------------------------------ Quantize / DequantizeLinear */

/* Which scale applies to element i: channel (i / inner) % channels; per-tensor is one channel. */
typedef struct axis_layout {
  int64_t channels, inner;
} axis_layout;

/* Checks scale and zero point against x (per-tensor: one value; per-axis, opset 13 on: a 1-D tensor
 * of x.dims[axis] values) and works out the layout. */
static kiln_status quant_layout(const kx_ctx *c, const kiln_tensor *x, const kiln_tensor *scale,
                                const kiln_tensor *zp, const char *scale_name, axis_layout *out) {
  kiln_status s;
  if ((s = check_scale(scale, scale_name))) return s;
  int64_t count = kiln_tensor_numel(scale);
  if (zp && kiln_tensor_numel(zp) != count)
    return kiln_error(KILN_INVALID_ARGUMENT, "the zero point has %lld values and %s %lld: they must match",
                      (long long)kiln_tensor_numel(zp), scale_name, (long long)count);
  out->channels = 1;
  out->inner = kiln_tensor_numel(x);
  if (count == 1) return NULL;
  if (c->node->opset < 13 || scale->rank != 1)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s must be a scalar%s, got %lld values", scale_name,
                      c->node->opset < 13 ? " before opset 13" : " or 1-D", (long long)count);
  int axis;
  if ((s = kx_axis(kx_attr_int(c->node->proto, "axis", 1), x->rank, 0, &axis))) return s;
  if (x->dims[axis] != count)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s has %lld values, but axis %d of the input has %lld", scale_name,
                      (long long)count, axis, (long long)x->dims[axis]);
  out->channels = count;
  out->inner = kx_prod(x->dims, axis + 1, x->rank);
  return NULL;
}

typedef struct quant_job {
  const kiln_tensor *x, *scale, *zp;
  kiln_tensor *y;
  axis_layout lay;
} quant_job;

/* Calls span(job, from, to, channel) over [begin, end) split at channel boundaries. */
static void for_each_span(const quant_job *j, int64_t begin, int64_t end,
                          void (*span)(const quant_job *, int64_t, int64_t, int64_t)) {
  for (int64_t i = begin; i < end;) {
    int64_t block = i / j->lay.inner, stop = (block + 1) * j->lay.inner;
    if (stop > end) stop = end;
    span(j, i, stop, block % j->lay.channels);
    i = stop;
  }
}

static void quantize_span(const quant_job *j, int64_t from, int64_t to, int64_t ch) {
  float scale = ((const float *)j->scale->data)[ch], zp = (float)zp_at(j->zp, ch), v[TILE];
  for (int64_t i = from; i < to; i += TILE) {
    int64_t n = to - i < TILE ? to - i : TILE;
    if (j->x->dtype == KILN_FLOAT)
      for (int64_t k = 0; k < n; k++) v[k] = ((const float *)j->x->data)[i + k] / scale;
    else
      for (int64_t k = 0; k < n; k++) v[k] = (float)((const int32_t *)j->x->data)[i + k] / scale;
    quantize_floats(v, n, zp, j->y->dtype, j->y->data, i);
  }
}

static void quantize_range(void *arg, int64_t begin, int64_t end) { for_each_span(arg, begin, end, quantize_span); }

static kiln_status quantize_run(kx_ctx *c) {
  const kiln_tensor *x, *scale, *zp = kx_input(c, 2);
  kiln_status s;
  if ((s = kx_require(c, 0, &x)) || (s = kx_require(c, 1, &scale)) ||
      (s = kx_check_dtype(x, 0, KX_BIT(KILN_FLOAT) | KX_BIT(KILN_INT32))))
    return s;
  if (zp && !(Q8 & KX_BIT(zp->dtype)))
    return kiln_error(KILN_INVALID_ARGUMENT, "y_zero_point must be uint8 or int8, got %s", kiln_dtype_name(zp->dtype));
  quant_job j = {x, scale, zp, NULL, {1, 1}};
  if ((s = quant_layout(c, x, scale, zp, "y_scale", &j.lay))) return s;
  if ((s = kx_output(c, 0, zp ? zp->dtype : KILN_UINT8, x->rank, x->dims, &j.y))) return s;
  kx_parallel(c, kiln_tensor_numel(x), 4, quantize_range, &j);
  return NULL;
}

static void dequantize_span(const quant_job *j, int64_t from, int64_t to, int64_t ch) {
  float scale = ((const float *)j->scale->data)[ch], *y = j->y->data;
  int32_t zp = zp_at(j->zp, ch);
  const void *x = j->x->data;
  switch (j->x->dtype) {
  case KILN_UINT8:
    for (int64_t i = from; i < to; i++) y[i] = (float)(((const uint8_t *)x)[i] - zp) * scale;
    break;
  case KILN_INT8:
    for (int64_t i = from; i < to; i++) y[i] = (float)(((const int8_t *)x)[i] - zp) * scale;
    break;
  default: /* int32: the difference may not fit in 32 bits */
    for (int64_t i = from; i < to; i++) y[i] = (float)((int64_t)((const int32_t *)x)[i] - zp) * scale;
  }
}

static void dequantize_range(void *arg, int64_t begin, int64_t end) { for_each_span(arg, begin, end, dequantize_span); }

static kiln_status dequantize_run(kx_ctx *c) {
  const kiln_tensor *x, *scale, *zp = kx_input(c, 2);
  kiln_status s;
  if ((s = kx_require(c, 0, &x)) || (s = kx_require(c, 1, &scale)) ||
      (s = kx_check_dtype(x, 0, Q8 | KX_BIT(KILN_INT32))))
    return s;
  if (zp && zp->dtype != x->dtype) return dtype_mismatch("x_zero_point", zp, "x", x->dtype);
  quant_job j = {x, scale, zp, NULL, {1, 1}};
  if ((s = quant_layout(c, x, scale, zp, "x_scale", &j.lay))) return s;
  if ((s = kx_output(c, 0, KILN_FLOAT, x->rank, x->dims, &j.y))) return s;
  kx_parallel(c, kiln_tensor_numel(x), 2, dequantize_range, &j);
  return NULL;
}

/* ------------------------------------------------------------------ DynamicQuantizeLinear */

/* uint8 quantization whose range covers min(x) and max(x), and always 0: scale = (max - min) / 255,
 * zero point = round(-min / scale). A range of nothing (x all zeros, or empty) gets scale 1, as in
 * ONNX Runtime, so that no division by zero happens. */
static kiln_status dynamic_quantize_run(kx_ctx *c) {
  const kiln_tensor *x;
  kiln_status s;
  if ((s = kx_require(c, 0, &x)) || (s = kx_check_dtype(x, 0, KX_BIT(KILN_FLOAT)))) return s;
  const float *xv = x->data;
  int64_t n = kiln_tensor_numel(x);
  float lo = 0, hi = 0;
  for (int64_t i = 0; i < n; i++) {
    lo = xv[i] < lo ? xv[i] : lo;
    hi = xv[i] > hi ? xv[i] : hi;
  }
  float scale = hi == lo ? 1.0f : (hi - lo) / 255.0f;
  float zp = nearbyintf(fminf(fmaxf(-lo / scale, 0.0f), 255.0f));
  kiln_tensor *y, *y_scale, *y_zp;
  if ((s = kx_output(c, 0, KILN_UINT8, x->rank, x->dims, &y)) || (s = kx_output(c, 1, KILN_FLOAT, 0, NULL, &y_scale)) ||
      (s = kx_output(c, 2, KILN_UINT8, 0, NULL, &y_zp)))
    return s;
  *(float *)y_scale->data = scale;
  *(uint8_t *)y_zp->data = (uint8_t)zp;
  kiln_tensor scale_t = {.dtype = KILN_FLOAT, .rank = 0, .data = &scale};
  quant_job j = {x, &scale_t, y_zp, y, {1, n}};
  kx_parallel(c, n, 4, quantize_range, &j);
  return NULL;
}

/* ------------------------------------------------------------------ MatMulInteger / QLinearMatMul */

/* Where a scale or zero point's value for row (of a) or column (of b) r of matrix mb comes from:
 * one value for all, one per row/column shared by all matrices, or one per row/column per matrix. */
typedef enum { PER_TENSOR, PER_VECTOR, PER_MATRIX } param_mode;

static inline int64_t param_index(param_mode mode, int64_t mb, int64_t r, int64_t rows) {
  return mode == PER_TENSOR ? 0 : mode == PER_VECTOR ? r : mb * rows + r;
}

typedef struct qmatmul {
  kiln_dtype at;
  const void *a;
  int64_t M, K, N;
  int batch_rank;
  int64_t batch[KILN_MAX_RANK], a_stride[KILN_MAX_RANK], b_stride[KILN_MAX_RANK]; /* in matrices */
  const kiln_tensor *a_zp, *a_scale, *b_scale, *y_scale, *y_zp;
  param_mode a_mode, b_mode;
  int32_t *b_shifted; /* b - b_zero_point, the layout of b */
  uint32_t *acc;      /* batches * M * N sums */
  kiln_tensor *y;     /* QLinearMatMul's 8-bit output; NULL for MatMulInteger */
} qmatmul;

/* The mode of a's (per row: [M] or a's shape with K replaced by 1) or b's (per column: [N] or b's
 * shape with K replaced by 1) scale or zero point. */
static kiln_status param_layout(const kiln_tensor *p, const kiln_tensor *operand, int is_a, const char *name,
                                param_mode *mode) {
  int64_t count = kiln_tensor_numel(p), r = operand->rank;
  int64_t vec = r == 1 ? 1 : is_a ? operand->dims[r - 2] : operand->dims[r - 1];
  *mode = PER_TENSOR;
  if (count == 1) return NULL;
  if (p->rank == 1 && count == vec && r >= 2) {
    *mode = PER_VECTOR;
    return NULL;
  }
  int same = p->rank == r && r >= 2;
  for (int d = 0; same && d < r; d++) {
    int64_t want = d == (is_a ? r - 1 : r - 2) ? 1 : operand->dims[d];
    same = p->dims[d] == want;
  }
  if (same) {
    *mode = PER_MATRIX;
    return NULL;
  }
  char b1[96], b2[96];
  return kiln_error(KILN_INVALID_ARGUMENT, "%s of shape %s does not fit %s of shape %s (one value, or one per %s)", name,
                    kiln_tensor_describe(p, b1, sizeof b1), is_a ? "a" : "b", kiln_tensor_describe(operand, b2, sizeof b2),
                    is_a ? "row" : "column");
}

/* numpy.matmul shapes: a 1-D a is a row, a 1-D b a column (both dropped from the output); the
 * batch dimensions broadcast. Fills the geometry of q and the output shape. */
static kiln_status matmul_shape(qmatmul *q, const kiln_tensor *a, const kiln_tensor *b, int *rank, int64_t *dims) {
  char b1[96], b2[96];
  if (a->rank < 1 || b->rank < 1)
    return kiln_error(KILN_INVALID_ARGUMENT, "matmul operands need rank 1 or more, got ranks %d and %d", a->rank, b->rank);
  q->M = a->rank == 1 ? 1 : a->dims[a->rank - 2];
  q->K = a->dims[a->rank - 1];
  int64_t kb = b->rank == 1 ? b->dims[0] : b->dims[b->rank - 2];
  q->N = b->rank == 1 ? 1 : b->dims[b->rank - 1];
  if (kb != q->K)
    return kiln_error(KILN_INVALID_ARGUMENT, "cannot multiply %s by %s: inner dimensions %lld and %lld differ",
                      kiln_tensor_describe(a, b1, sizeof b1), kiln_tensor_describe(b, b2, sizeof b2), (long long)q->K,
                      (long long)kb);
  int ar = a->rank > 2 ? a->rank - 2 : 0, br = b->rank > 2 ? b->rank - 2 : 0;
  q->batch_rank = ar > br ? ar : br;
  int64_t as = 1, bs = 1;
  for (int d = q->batch_rank - 1; d >= 0; d--) {
    int da = d - (q->batch_rank - ar), db = d - (q->batch_rank - br);
    int64_t x = da >= 0 ? a->dims[da] : 1, y = db >= 0 ? b->dims[db] : 1;
    if (x != y && x != 1 && y != 1)
      return kiln_error(KILN_INVALID_ARGUMENT, "batch dimensions of %s and %s cannot be broadcast together",
                        kiln_tensor_describe(a, b1, sizeof b1), kiln_tensor_describe(b, b2, sizeof b2));
    q->batch[d] = x > y ? x : y;
    if (x == 0 || y == 0) q->batch[d] = 0;
    q->a_stride[d] = x == 1 ? 0 : as;
    q->b_stride[d] = y == 1 ? 0 : bs;
    as *= x, bs *= y;
  }
  *rank = 0;
  for (int d = 0; d < q->batch_rank; d++) dims[(*rank)++] = q->batch[d];
  if (a->rank > 1) dims[(*rank)++] = q->M;
  if (b->rank > 1) dims[(*rank)++] = q->N;
  return NULL;
}

/* One output row: item = batch * M + m. */
static void matmul_row(const qmatmul *q, int64_t item) {
  int64_t ob = item / q->M, m = item % q->M, ab = 0, bb = 0;
  for (int d = q->batch_rank - 1; d >= 0; d--) {
    int64_t i = ob % q->batch[d];
    ob /= q->batch[d];
    ab += i * q->a_stride[d], bb += i * q->b_stride[d];
  }
  const int64_t K = q->K, N = q->N;
  uint32_t *acc = q->acc + item * N;
  memset(acc, 0, (size_t)N * sizeof *acc);
  int32_t za = zp_at(q->a_zp, param_index(q->a_mode, ab, m, q->M));
  for (int64_t k = 0; k < K; k++) {
    uint32_t av = (uint32_t)(q8_at(q->at, q->a, (ab * q->M + m) * K + k) - za);
    if (!av) continue;
    const int32_t *bp = q->b_shifted + (bb * K + k) * N;
    for (int64_t n = 0; n < N; n++) acc[n] += av * (uint32_t)bp[n];
  }
  if (!q->y) return;
  float sa = ((const float *)q->a_scale->data)[param_index(q->a_mode, ab, m, q->M)];
  float sy = *(const float *)q->y_scale->data, zy = (float)zp_at(q->y_zp, 0), v[TILE];
  for (int64_t n0 = 0; n0 < N; n0 += TILE) {
    int64_t len = N - n0 < TILE ? N - n0 : TILE;
    for (int64_t n = 0; n < len; n++) {
      float sb = ((const float *)q->b_scale->data)[param_index(q->b_mode, bb, n0 + n, N)];
      v[n] = (float)(int32_t)acc[n0 + n] * (sa * sb / sy);
    }
    quantize_floats(v, len, zy, q->y->dtype, q->y->data, item * N + n0);
  }
}

static void matmul_rows(void *arg, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; i++) matmul_row(arg, i);
}

/* b - b_zero_point for every element of b, so the inner loop is a plain multiply-add. */
static void shift_b(const qmatmul *q, const kiln_tensor *b, const kiln_tensor *b_zp) {
  int64_t per_matrix = q->K * q->N, total = kiln_tensor_numel(b);
  for (int64_t i = 0; i < total; i++) {
    int64_t n = i % q->N, mb = i / per_matrix;
    q->b_shifted[i] = q8_at(b->dtype, b->data, i) - zp_at(b_zp, param_index(q->b_mode, mb, n, q->N));
  }
}

/* The shared body: a, b and their zero points at the given input indices; for QLinearMatMul
 * (quantized) the scales too. */
static kiln_status matmul_common(kx_ctx *c, int quantized) {
  const int ia = 0, ib = quantized ? 3 : 1, iza = 2, izb = quantized ? 5 : 3;
  const kiln_tensor *a, *b, *a_zp = kx_input(c, iza), *b_zp = kx_input(c, izb);
  kiln_status s;
  if ((s = kx_require(c, ia, &a)) || (s = kx_require(c, ib, &b)) || (s = kx_check_dtype(a, ia, Q8)) ||
      (s = kx_check_dtype(b, ib, Q8)))
    return s;
  if (a_zp && a_zp->dtype != a->dtype) return dtype_mismatch("a_zero_point", a_zp, "a", a->dtype);
  if (b_zp && b_zp->dtype != b->dtype) return dtype_mismatch("b_zero_point", b_zp, "b", b->dtype);
  qmatmul q = {.at = a->dtype, .a = a->data, .a_zp = a_zp};
  int rank = 0;
  int64_t dims[KILN_MAX_RANK + 2];
  if ((s = matmul_shape(&q, a, b, &rank, dims))) return s;
  param_mode zmode;
  if (a_zp && (s = param_layout(a_zp, a, 1, "a_zero_point", &q.a_mode))) return s;
  if (b_zp && (s = param_layout(b_zp, b, 0, "b_zero_point", &q.b_mode))) return s;
  kiln_dtype yt = KILN_INT32;
  if (quantized) {
    if ((s = kx_require(c, 1, &q.a_scale)) || (s = kx_require(c, 4, &q.b_scale)) || (s = kx_require(c, 6, &q.y_scale)) ||
        (s = kx_require(c, 7, &q.y_zp)) || (s = check_scale(q.a_scale, "a_scale")) ||
        (s = check_scale(q.b_scale, "b_scale")) || (s = check_scale(q.y_scale, "y_scale")))
      return s;
    if (!(Q8 & KX_BIT(q.y_zp->dtype)))
      return kiln_error(KILN_INVALID_ARGUMENT, "y_zero_point must be uint8 or int8, got %s", kiln_dtype_name(q.y_zp->dtype));
    if (kiln_tensor_numel(q.y_scale) != 1 || kiln_tensor_numel(q.y_zp) != 1)
      return kiln_error(KILN_INVALID_ARGUMENT, "y_scale and y_zero_point must hold one value each");
    /* a scale must be laid out like its zero point */
    if ((s = param_layout(q.a_scale, a, 1, "a_scale", &zmode))) return s;
    if (a_zp && zmode != q.a_mode) return kiln_error(KILN_INVALID_ARGUMENT, "a_scale and a_zero_point differ in shape");
    q.a_mode = zmode;
    if ((s = param_layout(q.b_scale, b, 0, "b_scale", &zmode))) return s;
    if (b_zp && zmode != q.b_mode) return kiln_error(KILN_INVALID_ARGUMENT, "b_scale and b_zero_point differ in shape");
    q.b_mode = zmode;
    yt = q.y_zp->dtype;
  }
  int64_t rows = q.M * kx_prod(q.batch, 0, q.batch_rank), b_count = kiln_tensor_numel(b);
  size_t bytes = (size_t)b_count * sizeof(int32_t) + (quantized ? (size_t)(rows * q.N) * sizeof(uint32_t) : 0);
  char *mem = kx_scratch(c, bytes);
  if (!mem) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for the integer matmul");
  kiln_tensor *y;
  if ((s = kx_output(c, 0, yt, rank, dims, &y))) return s;
  q.b_shifted = (int32_t *)mem;
  /* MatMulInteger sums straight into its int32 output (int32 and uint32 may alias) */
  q.acc = quantized ? (uint32_t *)(mem + (size_t)b_count * sizeof(int32_t)) : y->data;
  q.y = quantized ? y : NULL;
  shift_b(&q, b, b_zp);
  kx_parallel(c, rows, (double)(q.K * q.N), matmul_rows, &q);
  return NULL;
}

static kiln_status matmul_integer_run(kx_ctx *c) { return matmul_common(c, 0); }
static kiln_status qlinear_matmul_run(kx_ctx *c) { return matmul_common(c, 1); }

/* ------------------------------------------------------------------ ConvInteger / QLinearConv */

#define MAX_SPATIAL (KILN_MAX_RANK - 2)

typedef struct qconv {
  int S; /* spatial dimensions */
  int64_t N, C, M, group;
  int64_t in[MAX_SPATIAL], out[MAX_SPATIAL], kernel[MAX_SPATIAL];
  int64_t stride[MAX_SPATIAL], dilation[MAX_SPATIAL], pad[MAX_SPATIAL]; /* pad: at the beginning */
  int64_t in_size, out_size, kernel_size;
  const int32_t *x; /* x - x_zero_point */
  const int32_t *w; /* w - w_zero_point (per output channel) */
  uint32_t *acc;    /* N * M planes of out_size sums */
  /* QLinearConv only */
  const kiln_tensor *bias, *w_scale, *y_zp;
  float x_scale, y_scale;
  kiln_tensor *y;
} qconv;

/* Reads strides, dilations, pads / auto_pad and group, and computes the output shape. */
static kiln_status conv_geometry(const kx_ctx *c, const kiln_tensor *x, const kiln_tensor *w, qconv *q) {
  const Onnx__NodeProto *p = c->node->proto;
  char b1[96], b2[96];
  if (x->rank < 3 || w->rank != x->rank)
    return kiln_error(KILN_INVALID_ARGUMENT, "x must be [N, C, spatial...] and w [M, C/group, kernel...] of the same rank, got %s and %s",
                      kiln_tensor_describe(x, b1, sizeof b1), kiln_tensor_describe(w, b2, sizeof b2));
  q->S = x->rank - 2;
  q->N = x->dims[0], q->C = x->dims[1], q->M = w->dims[0];
  q->group = kx_attr_int(p, "group", 1);
  if (q->group < 1 || q->C % q->group || q->M % q->group || w->dims[1] * q->group != q->C)
    return kiln_error(KILN_INVALID_ARGUMENT, "group %lld does not fit x %s and w %s", (long long)q->group,
                      kiln_tensor_describe(x, b1, sizeof b1), kiln_tensor_describe(w, b2, sizeof b2));
  const int64_t *ks, *st, *dl, *pd;
  int64_t nk = kx_attr_ints(p, "kernel_shape", &ks), ns = kx_attr_ints(p, "strides", &st);
  int64_t nd = kx_attr_ints(p, "dilations", &dl), np = kx_attr_ints(p, "pads", &pd);
  if ((nk >= 0 && nk != q->S) || (ns >= 0 && ns != q->S) || (nd >= 0 && nd != q->S) || (np >= 0 && np != 2 * q->S))
    return kiln_error(KILN_INVALID_ARGUMENT, "kernel_shape, strides and dilations need %d values and pads %d", q->S, 2 * q->S);
  char mode[16];
  kx_attr_string(p, "auto_pad", "NOTSET", mode, sizeof mode);
  int same_upper = !strcmp(mode, "SAME_UPPER"), same_lower = !strcmp(mode, "SAME_LOWER");
  int valid = !strcmp(mode, "VALID");
  if (!same_upper && !same_lower && !valid && strcmp(mode, "NOTSET"))
    return kiln_error(KILN_INVALID_ARGUMENT, "unknown auto_pad '%s'", mode);
  q->in_size = q->out_size = q->kernel_size = 1;
  for (int d = 0; d < q->S; d++) {
    int64_t k = w->dims[2 + d], in = x->dims[2 + d];
    if (nk >= 0 && ks[d] != k)
      return kiln_error(KILN_INVALID_ARGUMENT, "kernel_shape[%d] = %lld, but w has %lld", d, (long long)ks[d], (long long)k);
    int64_t s = ns >= 0 ? st[d] : 1, dil = nd >= 0 ? dl[d] : 1;
    int64_t begin = np >= 0 ? pd[d] : 0, end = np >= 0 ? pd[q->S + d] : 0;
    if (s < 1 || dil < 1 || begin < 0 || end < 0)
      return kiln_error(KILN_INVALID_ARGUMENT, "strides and dilations must be positive and pads not negative (axis %d)", d);
    int64_t span = (k - 1) * dil + 1, out;
    if (same_upper || same_lower) {
      out = (in + s - 1) / s;
      int64_t total = (out - 1) * s + span - in;
      if (total < 0) total = 0;
      begin = same_upper ? total / 2 : total - total / 2;
    } else {
      if (valid) begin = end = 0;
      out = in + begin + end >= span ? (in + begin + end - span) / s + 1 : 0;
    }
    if (out < 1 || k < 1)
      return kiln_error(KILN_INVALID_ARGUMENT, "the kernel (%lld, dilation %lld) does not fit axis %d of size %lld padded by %lld+%lld",
                        (long long)k, (long long)dil, d, (long long)in, (long long)begin, (long long)end);
    q->in[d] = in, q->out[d] = out, q->kernel[d] = k;
    q->stride[d] = s, q->dilation[d] = dil, q->pad[d] = begin;
    q->in_size *= in, q->out_size *= out, q->kernel_size *= k;
  }
  return NULL;
}

/* Advances a multi-index over dims[0..n) (last fastest); returns 0 after the last one. */
static int next_index(int64_t *idx, const int64_t *dims, int n) {
  for (int d = n - 1; d >= 0; d--) {
    if (++idx[d] < dims[d]) return 1;
    idx[d] = 0;
  }
  return 0;
}

/* Smallest o with o * s >= a (s > 0, a of any sign). */
static int64_t ceil_div(int64_t a, int64_t s) { return a >= 0 ? (a + s - 1) / s : -(-a / s); }

/* Adds weight wv times the input plane xin, shifted by kernel offset kidx, into the output plane
 * acc. Rows (all output dims but the last) whose input row lies in the padding are skipped; along
 * the last dim only the output range that reads inside the input is visited. */
static void conv_tap(const qconv *q, const int64_t *kidx, uint32_t wv, const int32_t *xin, uint32_t *acc) {
  const int L = q->S - 1;
  const int64_t s = q->stride[L], off = kidx[L] * q->dilation[L] - q->pad[L];
  const int64_t lo = off >= 0 ? 0 : ceil_div(-off, s);
  int64_t hi = ceil_div(q->in[L] - off, s);
  if (hi > q->out[L]) hi = q->out[L];
  if (lo >= hi) return;
  int64_t o[MAX_SPATIAL] = {0};
  do {
    int64_t in_row = 0, out_row = 0, inside = 1;
    for (int d = 0; d < L; d++) {
      int64_t i = o[d] * q->stride[d] + kidx[d] * q->dilation[d] - q->pad[d];
      inside &= i >= 0 && i < q->in[d];
      in_row = in_row * q->in[d] + i;
      out_row = out_row * q->out[d] + o[d];
    }
    if (!inside) continue;
    const int64_t x0 = in_row * q->in[L] + off; /* may be negative: only x0 + lo * s is read first */
    uint32_t *ar = acc + out_row * q->out[L];
    for (int64_t i = lo; i < hi; i++) ar[i] += wv * (uint32_t)xin[x0 + i * s];
  } while (next_index(o, q->out, L));
}

/* One output plane: item = n * M + m. */
static void conv_plane(const qconv *q, int64_t item) {
  int64_t n = item / q->M, m = item % q->M, cg = q->C / q->group, g = m / (q->M / q->group);
  uint32_t *acc = q->acc + item * q->out_size;
  memset(acc, 0, (size_t)q->out_size * sizeof *acc);
  for (int64_t ci = 0; ci < cg; ci++) {
    const int32_t *xin = q->x + (n * q->C + g * cg + ci) * q->in_size;
    const int32_t *wk = q->w + (m * cg + ci) * q->kernel_size;
    int64_t kidx[MAX_SPATIAL] = {0}, k = 0;
    do {
      if (wk[k]) conv_tap(q, kidx, (uint32_t)wk[k], xin, acc);
      k++;
    } while (next_index(kidx, q->kernel, q->S));
  }
  if (!q->y) return;
  int64_t wi = kiln_tensor_numel(q->w_scale) == 1 ? 0 : m;
  float mult = q->x_scale * ((const float *)q->w_scale->data)[wi] / q->y_scale, v[TILE];
  int32_t bias = q->bias ? ((const int32_t *)q->bias->data)[m] : 0;
  float zy = (float)zp_at(q->y_zp, 0);
  for (int64_t i0 = 0; i0 < q->out_size; i0 += TILE) {
    int64_t len = q->out_size - i0 < TILE ? q->out_size - i0 : TILE;
    for (int64_t i = 0; i < len; i++) v[i] = (float)(int32_t)(acc[i0 + i] + (uint32_t)bias) * mult;
    quantize_floats(v, len, zy, q->y->dtype, q->y->data, item * q->out_size + i0);
  }
}

static void conv_planes(void *arg, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; i++) conv_plane(arg, i);
}

/* A per-tensor value, or (when per_channel) one per output channel. */
static kiln_status check_count(const kiln_tensor *t, const char *name, int64_t channels, int per_channel) {
  int64_t n = kiln_tensor_numel(t);
  if (n == 1 || (per_channel && t->rank == 1 && n == channels)) return NULL;
  return kiln_error(KILN_INVALID_ARGUMENT, "%s must hold one value%s, got %lld", name,
                    per_channel ? " or one per output channel" : "", (long long)n);
}

/* The shared body. Inputs: ConvInteger (x, w, x_zero_point, w_zero_point); QLinearConv (x,
 * x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, B). */
static kiln_status conv_common(kx_ctx *c, int quantized) {
  const int ix = 0, iw = quantized ? 3 : 1, izx = 2, izw = quantized ? 5 : 3;
  const kiln_tensor *x, *w, *x_zp = kx_input(c, izx), *w_zp = kx_input(c, izw);
  kiln_status s;
  if ((s = kx_require(c, ix, &x)) || (s = kx_require(c, iw, &w)) || (s = kx_check_dtype(x, ix, Q8)) ||
      (s = kx_check_dtype(w, iw, Q8)))
    return s;
  if (x_zp && x_zp->dtype != x->dtype) return dtype_mismatch("x_zero_point", x_zp, "x", x->dtype);
  if (w_zp && w_zp->dtype != w->dtype) return dtype_mismatch("w_zero_point", w_zp, "w", w->dtype);
  qconv q = {0};
  if ((s = conv_geometry(c, x, w, &q))) return s;
  if ((x_zp && (s = check_count(x_zp, "x_zero_point", q.M, 0))) || (w_zp && (s = check_count(w_zp, "w_zero_point", q.M, 1))))
    return s;
  kiln_dtype yt = KILN_INT32;
  if (quantized) {
    const kiln_tensor *x_scale, *y_scale;
    if ((s = kx_require(c, 1, &x_scale)) || (s = kx_require(c, 4, &q.w_scale)) || (s = kx_require(c, 6, &y_scale)) ||
        (s = kx_require(c, 7, &q.y_zp)) || (s = check_scale(x_scale, "x_scale")) ||
        (s = check_scale(q.w_scale, "w_scale")) || (s = check_scale(y_scale, "y_scale")) ||
        (s = check_count(x_scale, "x_scale", q.M, 0)) || (s = check_count(q.w_scale, "w_scale", q.M, 1)) ||
        (s = check_count(y_scale, "y_scale", q.M, 0)) || (s = check_count(q.y_zp, "y_zero_point", q.M, 0)))
      return s;
    if (!(Q8 & KX_BIT(q.y_zp->dtype)))
      return kiln_error(KILN_INVALID_ARGUMENT, "y_zero_point must be uint8 or int8, got %s", kiln_dtype_name(q.y_zp->dtype));
    q.bias = kx_input(c, 8);
    if (q.bias && (q.bias->dtype != KILN_INT32 || q.bias->rank != 1 || q.bias->dims[0] != q.M))
      return kiln_error(KILN_INVALID_ARGUMENT, "B must be int32 [%lld], got %s of rank %d", (long long)q.M,
                        kiln_dtype_name(q.bias->dtype), q.bias->rank);
    q.x_scale = *(const float *)x_scale->data;
    q.y_scale = *(const float *)y_scale->data;
    yt = q.y_zp->dtype;
  }
  int64_t dims[KILN_MAX_RANK] = {q.N, q.M};
  memcpy(dims + 2, q.out, (size_t)q.S * sizeof *dims);
  int64_t nx = kiln_tensor_numel(x), nw = kiln_tensor_numel(w), planes = q.N * q.M;
  size_t bytes = (size_t)(nx + nw) * sizeof(int32_t) + (quantized ? (size_t)(planes * q.out_size) * sizeof(uint32_t) : 0);
  int32_t *mem = kx_scratch(c, bytes);
  if (!mem) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for the integer convolution");
  kiln_tensor *y;
  if ((s = kx_output(c, 0, yt, x->rank, dims, &y))) return s;
  int32_t *xs = mem, *ws = mem + nx, zx = zp_at(x_zp, 0);
  for (int64_t i = 0; i < nx; i++) xs[i] = q8_at(x->dtype, x->data, i) - zx;
  int64_t per_m = nw / (q.M ? q.M : 1);
  for (int64_t i = 0; i < nw; i++)
    ws[i] = q8_at(w->dtype, w->data, i) - zp_at(w_zp, w_zp && kiln_tensor_numel(w_zp) > 1 ? i / per_m : 0);
  q.x = xs, q.w = ws;
  q.acc = quantized ? (uint32_t *)(mem + nx + nw) : y->data;
  q.y = quantized ? y : NULL;
  kx_parallel(c, planes, (double)(q.C / q.group * q.kernel_size * q.out_size), conv_planes, &q);
  return NULL;
}

static kiln_status conv_integer_run(kx_ctx *c) { return conv_common(c, 0); }
static kiln_status qlinear_conv_run(kx_ctx *c) { return conv_common(c, 1); }

const kx_op kx_ops_quantize[] = {
    {"", "QuantizeLinear", 10, 0, NULL, quantize_run, NULL, 0},
    {"", "DequantizeLinear", 10, 0, NULL, dequantize_run, NULL, 0},
    {"", "DynamicQuantizeLinear", 11, 0, NULL, dynamic_quantize_run, NULL, 0},
    {"", "MatMulInteger", 10, 0, NULL, matmul_integer_run, NULL, 0},
    {"", "QLinearMatMul", 10, 0, NULL, qlinear_matmul_run, NULL, 0},
    {"", "ConvInteger", 10, 0, NULL, conv_integer_run, NULL, 0},
    {"", "QLinearConv", 10, 0, NULL, qlinear_conv_run, NULL, 0},
    {0},
};
