/* BatchNormalization, InstanceNormalization, LayerNormalization, LRN and MeanVarianceNormalization.
 *
 * float32 is the fast path (contiguous loops in blocks gcc vectorizes, parallel over rows or
 * channel planes); float16/bfloat16 are widened to float32 in scratch memory and narrowed back;
 * double runs plain loops in double. Statistics of float data are accumulated in float lanes, and
 * variances are taken around the mean (two passes), never as E[x^2] - E[x]^2. */
#include "ops/util.h"
#include "ops/vmath.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* sum (x - mean)^2 */
static float centered_sumsq_f32(const float *x, float mean, int64_t n) {
  float acc[KX_LANES] = {0};
  int64_t i = 0;
  for (; i + KX_LANES <= n; i += KX_LANES)
    for (int k = 0; k < KX_LANES; k++) acc[k] += (x[i + k] - mean) * (x[i + k] - mean);
  float s = 0;
  for (int k = 0; k < KX_LANES; k++) s += acc[k];
  for (; i < n; i++) s += (x[i] - mean) * (x[i] - mean);
  return s;
}

/* y = x * a + b */
static void affine_f32(float *restrict y, const float *restrict x, float a, float b, int64_t n) {
  int64_t i = 0;
  for (; i + KX_LANES <= n; i += KX_LANES)
    for (int k = 0; k < KX_LANES; k++) y[i + k] = x[i + k] * a + b;
  for (; i < n; i++) y[i] = x[i] * a + b;
}

/* The input must be [N, C, ...] */
static kiln_status require_nc(const kiln_tensor *x) {
  if (x->rank < 2)
    return kiln_error(KILN_INVALID_ARGUMENT, "input must have rank >= 2 ([N, C, ...]), got rank %d", x->rank);
  return NULL;
}

/* A per-channel parameter (or a per-feature one, for BatchNormalization with spatial=0) must hold
 * exactly `count` values. */
static kiln_status require_len(const kiln_tensor *t, const char *what, int64_t count) {
  if (kiln_tensor_numel(t) != count)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s has %lld elements, expected %lld", what,
                      (long long)kiln_tensor_numel(t), (long long)count);
  return NULL;
}

/* ---------------------------------------------------------------- BatchNormalization */

typedef struct bn_params {
  float epsilon, momentum;
  int spatial;  /* 0: one set of statistics per (channel, position), opsets < 9 */
  int training; /* batch statistics instead of the running ones */
} bn_params;

static kiln_status bn_prepare(kx_node *n) {
  bn_params *p = calloc(1, sizeof *p);
  if (!p) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  p->epsilon = kx_attr_float(n->proto, "epsilon", 1e-5f);
  p->momentum = kx_attr_float(n->proto, "momentum", 0.9f);
  p->spatial = n->opset < 9 ? kx_attr_int(n->proto, "spatial", 1) != 0 : 1;
  /* Up to opset 13 the optional statistics outputs select training mode (opsets < 7 also say so
   * with is_test = 0); from opset 14 the training_mode attribute does. */
  int extra_outputs = 0;
  for (int i = 1; i < n->n_out; i++) extra_outputs |= n->out[i] >= 0;
  if (n->opset >= 14)
    p->training = kx_attr_int(n->proto, "training_mode", 0) != 0;
  else if (n->opset < 7)
    p->training = extra_outputs && kx_attr_int(n->proto, "is_test", 0) == 0;
  else
    p->training = extra_outputs;
  n->params = p;
  return NULL;
}

typedef struct bn_job {
  int64_t params, group; /* x is [N, params, group] */
  const double *a, *b;   /* y = x * a[p] + b[p] */
  const void *x;
  void *y;
} bn_job;

static void bn_apply_f32(void *arg, int64_t begin, int64_t end) {
  const bn_job *j = arg;
  for (int64_t item = begin; item < end; item++) {
    int64_t p = item % j->params;
    affine_f32((float *)j->y + item * j->group, (const float *)j->x + item * j->group, (float)j->a[p], (float)j->b[p],
               j->group);
  }
}

static void bn_apply_f64(void *arg, int64_t begin, int64_t end) {
  const bn_job *j = arg;
  for (int64_t item = begin; item < end; item++) {
    int64_t p = item % j->params;
    const double *x = (const double *)j->x + item * j->group;
    double *y = (double *)j->y + item * j->group;
    for (int64_t g = 0; g < j->group; g++) y[g] = x[g] * j->a[p] + j->b[p];
  }
}

/* Batch mean and (population) variance of each parameter slot over N and the group. */
static void bn_batch_stats(const kiln_tensor *x, int64_t batch, int64_t params, int64_t group, double *mean,
                           double *var) {
  double count = (double)(batch * group);
  for (int64_t p = 0; p < params; p++) {
    double s = 0, ss = 0;
    for (int64_t n = 0; n < batch; n++)
      for (int64_t g = 0; g < group; g++) s += kiln_tensor_get_f64(x, (n * params + p) * group + g);
    mean[p] = s / count;
    for (int64_t n = 0; n < batch; n++)
      for (int64_t g = 0; g < group; g++) {
        double d = kiln_tensor_get_f64(x, (n * params + p) * group + g) - mean[p];
        ss += d * d;
      }
    var[p] = ss / count;
  }
}

/* Training mode's extra outputs: running statistics (momentum-weighted) and, up to opset 13,
 * the batch statistics themselves. */
static kiln_status bn_write_stats(kx_ctx *c, const bn_params *p, const kiln_tensor *const *in, const double *mean,
                                  const double *var, int64_t params) {
  const double *batch[2] = {mean, var};
  kiln_status s;
  for (int i = 1; i < c->node->n_out && i <= 4; i++) {
    if (!kx_has_output(c, i)) continue;
    const kiln_tensor *like = in[3 + (i - 1) % 2]; /* outputs take the dtype of input_mean / input_var */
    kiln_tensor *out;
    if ((s = kx_output(c, i, like->dtype, like->rank, like->dims, &out))) return s;
    const double *stat = batch[(i - 1) % 2];
    for (int64_t k = 0; k < params; k++) {
      double v = stat[k];
      if (i <= 2) v = kiln_tensor_get_f64(like, k) * p->momentum + v * (1 - p->momentum);
      kx_set_f64(out, k, v);
    }
  }
  return NULL;
}

/* y = x * a[p] + b[p] in x's type; float16/bfloat16 through buf (2 * numel floats). */
static void bn_apply(kx_ctx *c, int64_t batch, int64_t params, int64_t group, const double *a, const double *b,
                     const kiln_tensor *x, kiln_tensor *y, float *buf) {
  bn_job j = {params, group, a, b, x->data, y->data};
  int64_t count = batch * params * group;
  if (x->dtype == KILN_DOUBLE) {
    kx_parallel(c, batch * params, (double)group * 2, bn_apply_f64, &j);
  } else if (x->dtype == KILN_FLOAT) {
    kx_parallel(c, batch * params, (double)group * 2, bn_apply_f32, &j);
  } else {
    kx_to_float(x->dtype, x->data, buf, count);
    j.x = buf;
    j.y = buf + count;
    kx_parallel(c, batch * params, (double)group * 2, bn_apply_f32, &j);
    kx_from_float(y->dtype, buf + count, y->data, count);
  }
}

static kiln_status bn_run(kx_ctx *c) {
  const bn_params *p = c->node->params;
  const kiln_tensor *in[5];
  kiln_status s;
  static const char *const names[5] = {"X", "scale", "B", "mean", "var"};
  for (int i = 0; i < 5; i++)
    if ((s = kx_require(c, i, &in[i])) || (s = kx_check_dtype(in[i], i, KX_FLOATS))) return s;
  const kiln_tensor *x = in[0];
  if ((s = require_nc(x))) return s;
  int64_t batch = x->dims[0], channels = x->dims[1], spatial = kx_prod(x->dims, 2, x->rank);
  int64_t params = p->spatial ? channels : channels * spatial, group = p->spatial ? spatial : 1;
  for (int i = 1; i < 5; i++)
    if ((s = require_len(in[i], names[i], params)))
      return kiln_status_prefix(
          s, "%s: ", p->spatial ? "one value per channel" : "one value per channel and position (spatial=0)");
  kiln_tensor *y;
  if ((s = kx_output(c, 0, x->dtype, x->rank, x->dims, &y))) return s;
  int64_t count = kiln_tensor_numel(x);
  int widen = x->dtype == KILN_FLOAT16 || x->dtype == KILN_BFLOAT16;
  /* scratch: a, b, and the batch mean and variance in training mode; then widened x and y */
  size_t stats_bytes = (size_t)params * (p->training ? 4 : 2) * sizeof(double);
  size_t bytes = stats_bytes + (widen ? (size_t)count * 2 * sizeof(float) : 0);
  double *a = kx_scratch(c, bytes);
  if (!a) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for %zu bytes of scratch", bytes);
  double *b = a + params, *mean = b + params, *var = mean + params;
  if (p->training) bn_batch_stats(x, batch, params, group, mean, var);
  for (int64_t k = 0; k < params; k++) {
    double m = p->training ? mean[k] : kiln_tensor_get_f64(in[3], k);
    double v = p->training ? var[k] : kiln_tensor_get_f64(in[4], k);
    a[k] = kiln_tensor_get_f64(in[1], k) / sqrt(v + p->epsilon);
    b[k] = kiln_tensor_get_f64(in[2], k) - m * a[k];
  }
  if (count > 0) bn_apply(c, batch, params, group, a, b, x, y, (float *)((char *)a + stats_bytes));
  return p->training ? bn_write_stats(c, p, in, mean, var, params) : NULL;
}

/* ---------------------------------------------------------------- InstanceNormalization */

typedef struct in_job {
  int64_t channels, plane;
  float epsilon;
  const kiln_tensor *scale, *bias;
  const void *x;
  void *y;
} in_job;

static void in_planes_f32(void *arg, int64_t begin, int64_t end) {
  const in_job *j = arg;
  for (int64_t item = begin; item < end; item++) {
    const float *x = (const float *)j->x + item * j->plane;
    float *y = (float *)j->y + item * j->plane;
    int64_t ch = item % j->channels;
    float mean = kx_sum_f32(x, j->plane) / (float)j->plane;
    float var = centered_sumsq_f32(x, mean, j->plane) / (float)j->plane;
    float a = (float)kiln_tensor_get_f64(j->scale, ch) / sqrtf(var + j->epsilon);
    affine_f32(y, x, a, (float)kiln_tensor_get_f64(j->bias, ch) - mean * a, j->plane);
  }
}

static void in_planes_f64(void *arg, int64_t begin, int64_t end) {
  const in_job *j = arg;
  for (int64_t item = begin; item < end; item++) {
    const double *x = (const double *)j->x + item * j->plane;
    double *y = (double *)j->y + item * j->plane;
    int64_t ch = item % j->channels;
    double mean = 0, var = 0;
    for (int64_t i = 0; i < j->plane; i++) mean += x[i];
    mean /= (double)j->plane;
    for (int64_t i = 0; i < j->plane; i++) var += (x[i] - mean) * (x[i] - mean);
    var /= (double)j->plane;
    double a = kiln_tensor_get_f64(j->scale, ch) / sqrt(var + j->epsilon);
    double b = kiln_tensor_get_f64(j->bias, ch) - mean * a;
    for (int64_t i = 0; i < j->plane; i++) y[i] = x[i] * a + b;
  }
}

static kiln_status instance_norm_run(kx_ctx *c) {
  const kiln_tensor *x, *scale, *bias;
  kiln_tensor *y;
  kiln_status s;
  if ((s = kx_require(c, 0, &x)) || (s = kx_require(c, 1, &scale)) || (s = kx_require(c, 2, &bias)) ||
      (s = kx_check_dtype(x, 0, KX_FLOATS)) || (s = kx_check_dtype(scale, 1, KX_FLOATS)) ||
      (s = kx_check_dtype(bias, 2, KX_FLOATS)) || (s = require_nc(x)) ||
      (s = require_len(scale, "scale", x->dims[1])) || (s = require_len(bias, "B", x->dims[1])) ||
      (s = kx_output(c, 0, x->dtype, x->rank, x->dims, &y)))
    return s;
  int64_t planes = x->dims[0] * x->dims[1], plane = kx_prod(x->dims, 2, x->rank), count = planes * plane;
  if (count == 0) return NULL;
  in_job j = {x->dims[1], plane, kx_attr_float(c->node->proto, "epsilon", 1e-5f), scale, bias, x->data, y->data};
  if (x->dtype == KILN_DOUBLE) {
    kx_parallel(c, planes, (double)plane * 5, in_planes_f64, &j);
  } else if (x->dtype == KILN_FLOAT) {
    kx_parallel(c, planes, (double)plane * 5, in_planes_f32, &j);
  } else {
    float *buf = kx_scratch_floats(c, 2 * count, &s); /* widened x and y */
    if (!buf) return s;
    kx_to_float(x->dtype, x->data, buf, count);
    j.x = buf;
    j.y = buf + count;
    kx_parallel(c, planes, (double)plane * 5, in_planes_f32, &j);
    kx_from_float(y->dtype, buf + count, y->data, count);
  }
  return NULL;
}

/* ---------------------------------------------------------------- LayerNormalization */

typedef struct ln_job {
  int64_t n; /* the normalized length: each row is n contiguous elements */
  float epsilon;
  const void *x, *scale, *bias; /* scale and bias: n elements each; bias may be NULL */
  void *y;
  kiln_tensor *mean, *inv_std; /* one value per row; NULL when not requested */
} ln_job;

/* y = (x - mean) * inv * scale + bias */
static void ln_row_f32(float *restrict y, const float *restrict x, float mean, float inv, const float *restrict scale,
                       const float *restrict bias, int64_t n) {
  int64_t i = 0;
  if (bias) {
    for (; i + KX_LANES <= n; i += KX_LANES)
      for (int k = 0; k < KX_LANES; k++) y[i + k] = (x[i + k] - mean) * inv * scale[i + k] + bias[i + k];
    for (; i < n; i++) y[i] = (x[i] - mean) * inv * scale[i] + bias[i];
  } else {
    for (; i + KX_LANES <= n; i += KX_LANES)
      for (int k = 0; k < KX_LANES; k++) y[i + k] = (x[i + k] - mean) * inv * scale[i + k];
    for (; i < n; i++) y[i] = (x[i] - mean) * inv * scale[i];
  }
}

static void ln_rows_f32(void *arg, int64_t begin, int64_t end) {
  const ln_job *j = arg;
  int64_t n = j->n;
  for (int64_t row = begin; row < end; row++) {
    const float *x = (const float *)j->x + row * n;
    float mean = kx_sum_f32(x, n) / (float)n;
    float inv = 1.0f / sqrtf(centered_sumsq_f32(x, mean, n) / (float)n + j->epsilon);
    ln_row_f32((float *)j->y + row * n, x, mean, inv, j->scale, j->bias, n);
    if (j->mean) kx_set_f64(j->mean, row, mean);
    if (j->inv_std) kx_set_f64(j->inv_std, row, inv);
  }
}

static void ln_rows_f64(void *arg, int64_t begin, int64_t end) {
  const ln_job *j = arg;
  int64_t n = j->n;
  const double *scale = j->scale, *bias = j->bias;
  for (int64_t row = begin; row < end; row++) {
    const double *x = (const double *)j->x + row * n;
    double *y = (double *)j->y + row * n;
    double mean = 0, var = 0;
    for (int64_t i = 0; i < n; i++) mean += x[i];
    mean /= (double)n;
    for (int64_t i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
    double inv = 1.0 / sqrt(var / (double)n + j->epsilon);
    for (int64_t i = 0; i < n; i++) y[i] = (x[i] - mean) * inv * scale[i] + (bias ? bias[i] : 0);
    if (j->mean) kx_set_f64(j->mean, row, mean);
    if (j->inv_std) kx_set_f64(j->inv_std, row, inv);
  }
}

/* Scale and B broadcast to the normalized shape x.dims[axis:] (numpy rules, one-directional). */
static kiln_status ln_check_param(const kiln_tensor *t, const char *what, const kiln_tensor *x, int axis) {
  int norm_rank = x->rank - axis, ok = t->rank <= norm_rank;
  if (t->dtype != x->dtype)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s has dtype %s, X has %s", what, kiln_dtype_name(t->dtype),
                      kiln_dtype_name(x->dtype));
  for (int d = 0; ok && d < t->rank; d++) {
    int64_t want = x->dims[x->rank - t->rank + d];
    ok = t->dims[d] == want || t->dims[d] == 1;
  }
  if (ok) return NULL;
  char a[96], b[96];
  kiln_tensor norm = {.dtype = x->dtype, .rank = norm_rank};
  memcpy(norm.dims, x->dims + axis, (size_t)norm_rank * sizeof *norm.dims);
  return kiln_error(KILN_INVALID_ARGUMENT,
                    "%s %s does not broadcast to the normalized shape %s (X's dimensions from axis %d)", what,
                    kiln_tensor_describe(t, a, sizeof a), kiln_tensor_describe(&norm, b, sizeof b), axis);
}

/* Copies a scale or bias into dst (n floats or doubles), broadcasting it over the normalized shape
 * and widening float16/bfloat16. */
static void ln_expand_param(const kiln_tensor *t, const kiln_tensor *x, int axis, void *dst, int64_t n) {
  int norm_rank = x->rank - axis;
  int64_t strides[KILN_MAX_RANK], idx[KILN_MAX_RANK] = {0};
  kx_broadcast_strides(t, norm_rank, x->dims + axis, strides);
  int64_t src = 0;
  for (int64_t i = 0; i < n; i++) {
    double v = kiln_tensor_get_f64(t, src);
    if (x->dtype == KILN_DOUBLE)
      ((double *)dst)[i] = v;
    else
      ((float *)dst)[i] = (float)v;
    for (int d = norm_rank - 1; d >= 0; d--) { /* odometer over the normalized shape */
      src += strides[d];
      if (++idx[d] < x->dims[axis + d]) break;
      src -= strides[d] * idx[d];
      idx[d] = 0;
    }
  }
}

static kiln_status layer_norm_run(kx_ctx *c) {
  const kiln_tensor *x, *scale, *bias = kx_input(c, 2);
  kiln_status s;
  int axis;
  if ((s = kx_require(c, 0, &x)) || (s = kx_require(c, 1, &scale)) || (s = kx_check_dtype(x, 0, KX_FLOATS)) ||
      (s = kx_axis(kx_attr_int(c->node->proto, "axis", -1), x->rank, 0, &axis)) ||
      (s = ln_check_param(scale, "Scale", x, axis)) || (bias && (s = ln_check_param(bias, "B", x, axis))))
    return s;
  int64_t stash = kx_attr_int(c->node->proto, "stash_type", KILN_FLOAT);
  if (stash != KILN_FLOAT && stash != KILN_DOUBLE && stash != KILN_FLOAT16 && stash != KILN_BFLOAT16)
    return kiln_error(KILN_INVALID_ARGUMENT, "stash_type %lld is not a float type", (long long)stash);
  int64_t rows = kx_prod(x->dims, 0, axis), n = kx_prod(x->dims, axis, x->rank), count = rows * n;
  int64_t stat_dims[KILN_MAX_RANK];
  for (int d = 0; d < x->rank; d++) stat_dims[d] = d < axis ? x->dims[d] : 1;
  kiln_tensor *y, *mean = NULL, *inv_std = NULL;
  if ((s = kx_output(c, 0, x->dtype, x->rank, x->dims, &y)) ||
      (kx_has_output(c, 1) && (s = kx_output(c, 1, (kiln_dtype)stash, x->rank, stat_dims, &mean))) ||
      (kx_has_output(c, 2) && (s = kx_output(c, 2, (kiln_dtype)stash, x->rank, stat_dims, &inv_std))))
    return s;
  if (count == 0) { /* the statistics of nothing */
    for (int64_t r = 0; r < rows; r++) {
      if (mean) kx_set_f64(mean, r, NAN);
      if (inv_std) kx_set_f64(inv_std, r, NAN);
    }
    return NULL;
  }
  /* scratch: scale and bias expanded to n values each, then widened x and y for float16/bfloat16 */
  int widen = x->dtype == KILN_FLOAT16 || x->dtype == KILN_BFLOAT16;
  size_t elem = x->dtype == KILN_DOUBLE ? sizeof(double) : sizeof(float);
  size_t bytes = (size_t)n * 2 * elem + (widen ? (size_t)count * 2 * sizeof(float) : 0);
  char *buf = kx_scratch(c, bytes);
  if (!buf) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for %zu bytes of scratch", bytes);
  void *scale_buf = buf, *bias_buf = buf + n * elem;
  ln_expand_param(scale, x, axis, scale_buf, n);
  if (bias) ln_expand_param(bias, x, axis, bias_buf, n);
  ln_job j = {n,
              kx_attr_float(c->node->proto, "epsilon", 1e-5f),
              x->data,
              scale_buf,
              bias ? bias_buf : NULL,
              y->data,
              mean,
              inv_std};
  if (x->dtype == KILN_DOUBLE) {
    kx_parallel(c, rows, (double)n * 6, ln_rows_f64, &j);
  } else if (!widen) {
    kx_parallel(c, rows, (double)n * 6, ln_rows_f32, &j);
  } else {
    float *xf = (float *)(buf + n * 2 * elem);
    kx_to_float(x->dtype, x->data, xf, count);
    j.x = xf;
    j.y = xf + count;
    kx_parallel(c, rows, (double)n * 6, ln_rows_f32, &j);
    kx_from_float(y->dtype, xf + count, y->data, count);
  }
  return NULL;
}

/* ---------------------------------------------------------------- LRN */

typedef struct lrn_job {
  int64_t channels, plane, size;
  float alpha, beta, bias;
  const void *x;
  void *y;
} lrn_job;

/* y[c] = x[c] / (bias + alpha / size * sum of x[c']^2 over the channels c' around c)^beta; the
 * sum is accumulated in the output plane first. */
static void lrn_planes_f32(void *arg, int64_t begin, int64_t end) {
  const lrn_job *j = arg;
  int64_t before = (j->size - 1) / 2, after = j->size - 1 - before;
  for (int64_t item = begin; item < end; item++) {
    int64_t ch = item % j->channels, n0 = item - ch;
    int64_t lo = ch - before < 0 ? 0 : ch - before, hi = ch + after >= j->channels ? j->channels - 1 : ch + after;
    float *y = (float *)j->y + item * j->plane;
    memset(y, 0, (size_t)j->plane * sizeof *y);
    for (int64_t k = lo; k <= hi; k++) {
      const float *xk = (const float *)j->x + (n0 + k) * j->plane;
      int64_t i = 0;
      for (; i + KX_LANES <= j->plane; i += KX_LANES)
        for (int l = 0; l < KX_LANES; l++) y[i + l] += xk[i + l] * xk[i + l];
      for (; i < j->plane; i++) y[i] += xk[i] * xk[i];
    }
    const float *x = (const float *)j->x + item * j->plane;
    float a = j->alpha / (float)j->size;
    for (int64_t i = 0; i < j->plane; i++) y[i] = x[i] * powf(j->bias + a * y[i], -j->beta);
  }
}

static void lrn_planes_f64(void *arg, int64_t begin, int64_t end) {
  const lrn_job *j = arg;
  int64_t before = (j->size - 1) / 2, after = j->size - 1 - before;
  for (int64_t item = begin; item < end; item++) {
    int64_t ch = item % j->channels, n0 = item - ch;
    int64_t lo = ch - before < 0 ? 0 : ch - before, hi = ch + after >= j->channels ? j->channels - 1 : ch + after;
    const double *x = (const double *)j->x + item * j->plane;
    double *y = (double *)j->y + item * j->plane;
    for (int64_t i = 0; i < j->plane; i++) {
      double sum = 0;
      for (int64_t k = lo; k <= hi; k++) {
        double v = ((const double *)j->x)[(n0 + k) * j->plane + i];
        sum += v * v;
      }
      y[i] = x[i] * pow((double)j->bias + (double)j->alpha / (double)j->size * sum, -(double)j->beta);
    }
  }
}

static kiln_status lrn_run(kx_ctx *c) {
  const kiln_tensor *x;
  kiln_tensor *y;
  kiln_status s;
  if ((s = kx_require(c, 0, &x)) || (s = kx_check_dtype(x, 0, KX_FLOATS)) || (s = require_nc(x))) return s;
  int64_t size = kx_attr_int(c->node->proto, "size", 0);
  if (size < 1)
    return kiln_error(KILN_INVALID_ARGUMENT, "size must be a positive number of channels, got %lld", (long long)size);
  if ((s = kx_output(c, 0, x->dtype, x->rank, x->dims, &y))) return s;
  int64_t planes = x->dims[0] * x->dims[1], plane = kx_prod(x->dims, 2, x->rank), count = planes * plane;
  if (count == 0) return NULL;
  lrn_job j = {x->dims[1],
               plane,
               size,
               kx_attr_float(c->node->proto, "alpha", 1e-4f),
               kx_attr_float(c->node->proto, "beta", 0.75f),
               kx_attr_float(c->node->proto, "bias", 1.0f),
               x->data,
               y->data};
  double cost = (double)plane * (double)(size + 20);
  if (x->dtype == KILN_DOUBLE) {
    kx_parallel(c, planes, cost, lrn_planes_f64, &j);
  } else if (x->dtype == KILN_FLOAT) {
    kx_parallel(c, planes, cost, lrn_planes_f32, &j);
  } else {
    float *buf = kx_scratch_floats(c, 2 * count, &s); /* widened x and y */
    if (!buf) return s;
    kx_to_float(x->dtype, x->data, buf, count);
    j.x = buf;
    j.y = buf + count;
    kx_parallel(c, planes, cost, lrn_planes_f32, &j);
    kx_from_float(y->dtype, buf + count, y->data, count);
  }
  return NULL;
}

/* ---------------------------------------------------------------- MeanVarianceNormalization */

/* y = (x - mean) / (sqrt(variance) + 1e-9) with the statistics over `axes` (default [0, 2, 3]);
 * the epsilon is the one of ONNX's function definition. Not on any hot path: computed in double
 * over elements read one by one, for every float type. */
static kiln_status mvn_run(kx_ctx *c) {
  const kiln_tensor *x;
  kiln_tensor *y;
  kiln_status s;
  if ((s = kx_require(c, 0, &x)) || (s = kx_check_dtype(x, 0, KX_FLOATS))) return s;
  static const int64_t default_axes[] = {0, 2, 3};
  const int64_t *axes = default_axes;
  int64_t n_axes = kx_attr_ints(c->node->proto, "axes", &axes);
  if (n_axes < 0) {
    axes = default_axes;
    n_axes = 3;
  }
  int reduced[KILN_MAX_RANK] = {0};
  for (int64_t i = 0; i < n_axes; i++) {
    int a;
    if ((s = kx_axis(axes[i], x->rank, 0, &a))) return s;
    if (reduced[a]) return kiln_error(KILN_INVALID_ARGUMENT, "axis %d appears twice in axes", a);
    reduced[a] = 1;
  }
  if ((s = kx_output(c, 0, x->dtype, x->rank, x->dims, &y))) return s;
  int64_t count = kiln_tensor_numel(x), groups = 1;
  for (int d = 0; d < x->rank; d++)
    if (!reduced[d]) groups *= x->dims[d];
  if (count == 0) return NULL;
  double *mean = kx_scratch(c, (size_t)groups * 2 * sizeof *mean),
         *dev2 = mean + groups; /* sum of squared deviations */
  if (!mean)
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for %lld doubles of scratch", (long long)groups * 2);
  int64_t idx[KILN_MAX_RANK];
  memset(mean, 0, (size_t)groups * 2 * sizeof *mean);
  double per_group = (double)(count / groups);
  /* pass 1: means; pass 2: variances around them; pass 3: output */
  for (int pass = 0; pass < 3; pass++) {
    memset(idx, 0, sizeof idx);
    for (int64_t i = 0; i < count; i++) {
      int64_t g = 0;
      for (int d = 0; d < x->rank; d++)
        if (!reduced[d]) g = g * x->dims[d] + idx[d];
      double v = kiln_tensor_get_f64(x, i);
      if (pass == 0)
        mean[g] += v; /* a sum until the pass ends */
      else if (pass == 1)
        dev2[g] += (v - mean[g]) * (v - mean[g]);
      else
        kx_set_f64(y, i, (v - mean[g]) / (sqrt(dev2[g] / per_group) + 1e-9));
      for (int d = x->rank - 1; d >= 0 && ++idx[d] == x->dims[d]; d--) idx[d] = 0;
    }
    if (pass == 0)
      for (int64_t g = 0; g < groups; g++) mean[g] /= per_group;
  }
  return NULL;
}

const kx_op kx_ops_normalization[] = {
    {"", "BatchNormalization", 1, 0, bn_prepare, bn_run, NULL, 0},
    {"", "InstanceNormalization", 1, 0, NULL, instance_norm_run, NULL, 0},
    {"", "LayerNormalization", 17, 0, NULL, layer_norm_run, NULL, 0},
    {"", "LRN", 1, 0, NULL, lrn_run, NULL, 0},
    {"", "MeanVarianceNormalization", 9, 0, NULL, mvn_run, NULL, 0},
    {0},
};
