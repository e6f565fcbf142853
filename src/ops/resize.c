/* Resampling: Resize (and its ancestor Upsample), GridSample and RoiAlign.
 *
 * Resize works axis by axis: for every output index along an axis it precomputes the input
 * indices it reads (already clamped to the edges) and their weights. Nearest mode then gathers
 * whole output rows; linear and cubic run one separable pass per resized axis, except for the
 * common 2-D case (only the last two axes resized, bilinear), which reads the four neighbours
 * of each output pixel directly. Interpolation is computed in float32.
 *
 * Where the ONNX reference implementation (onnx/backend/test/case/node/resize.py) and the
 * operator text differ, kiln follows the reference, which generated the conformance data: the
 * resized length in the coordinate formulas is input_length * scale, not the rounded output
 * length. One exception: pytorch_half_pixel samples a resized length of 1 at 0, as the operator
 * text and ONNX Runtime do (the reference uses -0.5; the two differ only for cubic).
 *
 * Opset 10 Resize and Upsample had no coordinate_transformation_mode or nearest_mode: they
 * sample at x / scale and round as ONNX Runtime's "simple" mode does (ceil when shrinking,
 * truncate when growing). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops/util.h"

/* ------------------------------------------------------------------ shared helpers */

/* Hands out 64-byte aligned pieces of one scratch block: a first pass with base NULL counts
 * the bytes, a second with the block hands out the same pieces. */
typedef struct carve {
  char *base;
  size_t used;
  int overflow;
} carve;

static void *carve_take(carve *cv, int64_t count, size_t elem) {
  void *p = cv->base ? cv->base + cv->used : NULL;
  size_t bytes;
  if (count < 0 || __builtin_mul_overflow((size_t)count, elem, &bytes) || bytes > SIZE_MAX / 4 - cv->used) {
    cv->overflow = 1;
    return NULL;
  }
  cv->used += (bytes + 63) & ~(size_t)63;
  return p;
}

/* Widens any numeric tensor into floats. */
static void load_floats(const kiln_tensor *t, float *dst) {
  int64_t n = kiln_tensor_numel(t);
  if (kiln_dtype_is_float(t->dtype))
    kx_to_float(t->dtype, t->data, dst, n);
  else
    for (int64_t i = 0; i < n; i++) dst[i] = (float)kiln_tensor_get_f64(t, i);
}

/* The values an integer dtype holds, as doubles that convert back without overflow. */
static void int_range(kiln_dtype t, double *lo, double *hi) {
  switch (t) {
  case KILN_INT8: *lo = INT8_MIN, *hi = INT8_MAX; break;
  case KILN_UINT8: *lo = 0, *hi = UINT8_MAX; break;
  case KILN_INT16: *lo = INT16_MIN, *hi = INT16_MAX; break;
  case KILN_UINT16: *lo = 0, *hi = UINT16_MAX; break;
  case KILN_INT32: *lo = INT32_MIN, *hi = INT32_MAX; break;
  case KILN_UINT32: *lo = 0, *hi = UINT32_MAX; break;
  case KILN_INT64: *lo = -0x1p63, *hi = 0x1p63 - 1024; break;
  case KILN_UINT64: *lo = 0, *hi = 0x1p64 - 2048; break;
  default: *lo = 0, *hi = 1; break; /* bool */
  }
}

/* Narrows floats into t's dtype: integers are rounded to nearest and saturated (NaN gives 0). */
static void store_floats(const float *src, kiln_tensor *t) {
  int64_t n = kiln_tensor_numel(t);
  if (kiln_dtype_is_float(t->dtype)) {
    kx_from_float(t->dtype, src, t->data, n);
    return;
  }
  double lo, hi;
  int_range(t->dtype, &lo, &hi);
  for (int64_t i = 0; i < n; i++) {
    double v = nearbyint(src[i]);
    kx_set_f64(t, i, v >= lo ? (v <= hi ? v : hi) : v < lo ? lo : 0);
  }
}

/* Index of a string among names, -1 when absent. */
static int lookup(const char *s, const char *const *names, int n) {
  for (int i = 0; i < n; i++)
    if (strcmp(s, names[i]) == 0) return i;
  return -1;
}

/* ------------------------------------------------------------------ Resize / Upsample: attributes */

typedef enum interp_mode { MODE_NEAREST, MODE_LINEAR, MODE_CUBIC } interp_mode;
typedef enum coord_mode {
  CT_HALF_PIXEL,
  CT_PYTORCH_HALF_PIXEL,
  CT_ALIGN_CORNERS,
  CT_ASYMMETRIC,
  CT_TF_HALF_PIXEL_FOR_NN,
  CT_TF_CROP_AND_RESIZE,
} coord_mode;
typedef enum nearest_mode {
  NEAREST_ROUND_PREFER_FLOOR,
  NEAREST_ROUND_PREFER_CEIL,
  NEAREST_FLOOR,
  NEAREST_CEIL,
  NEAREST_SIMPLE, /* opset 10 Resize, Upsample */
} nearest_mode;

static const char *const mode_names[] = {"nearest", "linear", "cubic"};
static const char *const coord_names[] = {"half_pixel", "pytorch_half_pixel",   "align_corners",
                                          "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize"};
static const char *const nearest_names[] = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"};

typedef struct resize_params {
  interp_mode mode;
  coord_mode coord;
  nearest_mode nearest;
  float cubic_a;
  int exclude_outside;
  float extrapolation;
  int roi_in, scales_in, sizes_in; /* input positions, -1 when the version has none */
  int n_attr_scales;               /* Upsample-7: scales is an attribute */
  float attr_scales[KILN_MAX_RANK];
} resize_params;

static kiln_status parse_mode(const kx_node *n, int allow_cubic, resize_params *p) {
  char buf[32];
  kx_attr_string(n->proto, "mode", "nearest", buf, sizeof buf);
  int m = lookup(buf, mode_names, allow_cubic ? 3 : 2);
  if (m < 0 && strcmp(buf, "bilinear") == 0 && !allow_cubic) m = MODE_LINEAR; /* Upsample's old name */
  if (m < 0)
    return kiln_error(KILN_INVALID_ARGUMENT, "mode '%s' is not one of nearest, linear%s", buf,
                      allow_cubic ? ", cubic" : "");
  p->mode = (interp_mode)m;
  return NULL;
}

static kiln_status resize_prepare(kx_node *n) {
  resize_params *p = calloc(1, sizeof *p);
  if (!p) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  kiln_status s = parse_mode(n, n->opset >= 11, p);
  p->coord = CT_ASYMMETRIC;
  p->nearest = NEAREST_SIMPLE;
  p->roi_in = p->sizes_in = -1;
  p->scales_in = 1;
  if (!s && n->opset >= 11) {
    char buf[32];
    p->roi_in = 1, p->scales_in = 2, p->sizes_in = 3;
    kx_attr_string(n->proto, "coordinate_transformation_mode", "half_pixel", buf, sizeof buf);
    int ct = lookup(buf, coord_names, 6);
    if (ct < 0) s = kiln_error(KILN_INVALID_ARGUMENT, "unknown coordinate_transformation_mode '%s'", buf);
    p->coord = (coord_mode)ct;
    kx_attr_string(n->proto, "nearest_mode", "round_prefer_floor", buf, sizeof buf);
    int nm = lookup(buf, nearest_names, 4);
    if (!s && nm < 0) s = kiln_error(KILN_INVALID_ARGUMENT, "unknown nearest_mode '%s'", buf);
    p->nearest = (nearest_mode)nm;
    p->cubic_a = kx_attr_float(n->proto, "cubic_coeff_a", -0.75f);
    p->exclude_outside = kx_attr_int(n->proto, "exclude_outside", 0) != 0;
    p->extrapolation = kx_attr_float(n->proto, "extrapolation_value", 0.0f);
  }
  if (s) {
    free(p);
    return s;
  }
  n->params = p;
  return NULL;
}

static kiln_status upsample_prepare(kx_node *n) {
  resize_params *p = calloc(1, sizeof *p);
  if (!p) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  kiln_status s = parse_mode(n, 0, p);
  p->coord = CT_ASYMMETRIC;
  p->nearest = NEAREST_SIMPLE;
  p->roi_in = p->sizes_in = -1;
  p->scales_in = n->opset >= 9 ? 1 : -1;
  if (!s && n->opset < 9) {
    const float *scales;
    int64_t count = kx_attr_floats(n->proto, "scales", &scales);
    if (count < 0)
      s = kiln_error(KILN_INVALID_ARGUMENT, "Upsample needs the scales attribute");
    else if (count > KILN_MAX_RANK)
      s = kiln_error(KILN_INVALID_ARGUMENT, "scales has %lld values, at most %d allowed", (long long)count,
                     KILN_MAX_RANK);
    else {
      p->n_attr_scales = (int)count;
      memcpy(p->attr_scales, scales, (size_t)count * sizeof *scales);
    }
  }
  if (s) {
    free(p);
    return s;
  }
  n->params = p;
  return NULL;
}

/* ------------------------------------------------------------------ Resize: geometry */

/* The output shape and, per axis, the scale and the resized length the coordinate formulas use. */
typedef struct resize_geometry {
  int rank;
  int64_t in[KILN_MAX_RANK], out[KILN_MAX_RANK];
  double scale[KILN_MAX_RANK], length[KILN_MAX_RANK];
  double roi_start[KILN_MAX_RANK], roi_end[KILN_MAX_RANK];
} resize_geometry;

/* An optional input counts as given when present and not empty (opset 11-12 models pass empty
 * tensors for the unused one of scales / sizes). */
static const kiln_tensor *given(const kx_ctx *c, int i) {
  const kiln_tensor *t = i >= 0 ? kx_input(c, i) : NULL;
  return t && kiln_tensor_numel(t) > 0 ? t : NULL;
}

static kiln_status read_float_list(const kiln_tensor *t, const char *what, int want, double *out) {
  if (!kiln_dtype_is_float(t->dtype))
    return kiln_error(KILN_INVALID_ARGUMENT, "%s must be a float tensor, got %s", what, kiln_dtype_name(t->dtype));
  if (t->rank != 1 || t->dims[0] != want)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s has %lld values, expected %d", what, (long long)kiln_tensor_numel(t),
                      want);
  for (int i = 0; i < want; i++) out[i] = kiln_tensor_get_f64(t, i);
  return NULL;
}

static kiln_status resize_shape(const kx_ctx *c, const resize_params *p, const kiln_tensor *x, resize_geometry *g) {
  const int r = x->rank;
  const kiln_tensor *scales = given(c, p->scales_in), *sizes = given(c, p->sizes_in), *roi = given(c, p->roi_in);
  kiln_status s;
  g->rank = r;
  for (int d = 0; d < r; d++) {
    g->in[d] = x->dims[d];
    g->roi_start[d] = 0;
    g->roi_end[d] = 1;
  }
  if (p->coord == CT_TF_CROP_AND_RESIZE && roi) {
    double v[2 * KILN_MAX_RANK];
    if ((s = read_float_list(roi, "roi", 2 * r, v))) return s;
    for (int d = 0; d < r; d++) g->roi_start[d] = v[d], g->roi_end[d] = v[r + d];
  }
  if (scales && sizes) return kiln_error(KILN_INVALID_ARGUMENT, "scales and sizes are both given; only one may be");
  if (sizes) {
    int64_t v[KILN_MAX_RANK];
    int count;
    if (sizes->rank != 1) return kiln_error(KILN_INVALID_ARGUMENT, "sizes must be 1-D, got rank %d", sizes->rank);
    if ((s = kx_read_ints(sizes, "sizes", v, KILN_MAX_RANK, &count))) return s;
    if (count != r)
      return kiln_error(KILN_INVALID_ARGUMENT, "sizes has %d values, expected %d (the rank of X)", count, r);
    for (int d = 0; d < r; d++) {
      if (v[d] < 0)
        return kiln_error(KILN_INVALID_ARGUMENT, "sizes[%d] is %lld, must not be negative", d, (long long)v[d]);
      if (g->in[d] == 0 && v[d] > 0)
        return kiln_error(KILN_INVALID_ARGUMENT, "cannot resize axis %d from 0 to %lld elements", d, (long long)v[d]);
      g->out[d] = v[d];
      g->scale[d] = g->in[d] ? (double)v[d] / (double)g->in[d] : 1;
      g->length[d] = (double)v[d];
    }
    return NULL;
  }
  double v[KILN_MAX_RANK];
  if (p->n_attr_scales) {
    if (p->n_attr_scales != r)
      return kiln_error(KILN_INVALID_ARGUMENT, "scales has %d values, expected %d (the rank of X)", p->n_attr_scales,
                        r);
    for (int d = 0; d < r; d++) v[d] = p->attr_scales[d];
  } else if (scales) {
    if ((s = read_float_list(scales, "scales", r, v))) return s;
  } else if (r > 0) {
    return kiln_error(KILN_INVALID_ARGUMENT,
                      p->sizes_in >= 0 ? "one of scales and sizes must be given" : "scales is missing");
  }
  for (int d = 0; d < r; d++) {
    if (!(v[d] > 0) || v[d] == INFINITY)
      return kiln_error(KILN_INVALID_ARGUMENT, "scales[%d] is %g, must be positive and finite", d, v[d]);
    g->scale[d] = v[d];
    g->length[d] = (double)g->in[d] * v[d];
    if (g->length[d] >= 0x1p62)
      return kiln_error(KILN_INVALID_ARGUMENT, "scales[%d] = %g makes axis %d too large", d, v[d], d);
    g->out[d] = (int64_t)floor(g->length[d]);
  }
  return NULL;
}

/* Where output index x of axis d samples the input (may fall outside [0, in - 1]). */
static double source_coord(const resize_params *p, const resize_geometry *g, int d, double x) {
  const double scale = g->scale[d], len = g->length[d], in = (double)g->in[d];
  switch (p->coord) {
  case CT_HALF_PIXEL: return (x + 0.5) / scale - 0.5;
  case CT_PYTORCH_HALF_PIXEL: return len > 1 ? (x + 0.5) / scale - 0.5 : 0;
  case CT_ALIGN_CORNERS: return len == 1 ? 0 : x * (in - 1) / (len - 1);
  case CT_ASYMMETRIC: return x / scale;
  case CT_TF_HALF_PIXEL_FOR_NN: return (x + 0.5) / scale;
  case CT_TF_CROP_AND_RESIZE: {
    const double start = g->roi_start[d], end = g->roi_end[d];
    if (len == 1) return (end - start) * (in - 1) / 2 + start * (in - 1);
    return x * (end - start) * (in - 1) / (len - 1) + start * (in - 1);
  }
  }
  return 0;
}

/* Per output index of one axis: `taps` input indices (clamped to the edges) and weights.
 * idx[o * taps] is -1 where tf_crop_and_resize samples outside the input: the output there is
 * extrapolation_value. */
typedef struct axis_map {
  int64_t in, out;
  int taps;
  int identity; /* output index o reads input index o with weight 1 */
  int64_t *idx;
  float *w;
} axis_map;

static int64_t clamp_index(int64_t i, int64_t n) { return i < 0 ? 0 : i >= n ? n - 1 : i; }

static int64_t nearest_index(nearest_mode m, double x, double scale) {
  double f = floor(x);
  switch (m) {
  case NEAREST_ROUND_PREFER_FLOOR: return (int64_t)(x - f <= 0.5 ? f : f + 1);
  case NEAREST_ROUND_PREFER_CEIL: return (int64_t)(x - f < 0.5 ? f : f + 1);
  case NEAREST_FLOOR: return (int64_t)f;
  case NEAREST_CEIL: return (int64_t)ceil(x);
  case NEAREST_SIMPLE: return (int64_t)(scale < 1 ? ceil(x) : trunc(x));
  }
  return 0;
}

/* The cubic convolution kernel at distance s (Keys, with parameter a). */
static double cubic_kernel(double s, double a) {
  s = fabs(s);
  if (s <= 1) return ((a + 2) * s - (a + 3)) * s * s + 1;
  if (s < 2) return ((a * s - 5 * a) * s + 8 * a) * s - 4 * a;
  return 0;
}

static void build_axis(const resize_params *p, const resize_geometry *g, int d, axis_map *m) {
  const int64_t in = g->in[d], taps = m->taps;
  m->identity = m->in == m->out;
  for (int64_t o = 0; o < m->out; o++) {
    int64_t *idx = m->idx + o * taps;
    float *w = m->w + o * taps;
    double x = source_coord(p, g, d, (double)o);
    if (p->coord == CT_TF_CROP_AND_RESIZE && !(x >= 0 && x <= (double)(in - 1))) {
      for (int k = 0; k < taps; k++) idx[k] = -1, w[k] = 0;
      m->identity = 0;
      continue;
    }
    /* past a few pixels outside, every tap clamps to the same edge: bound x so that it
     * converts to an integer safely */
    x = x < -4 ? -4 : x > (double)in + 4 ? (double)in + 4 : x;
    if (p->mode == MODE_NEAREST) {
      idx[0] = clamp_index(nearest_index(p->nearest, x, g->scale[d]), in);
      w[0] = 1;
    } else {
      double x0 = floor(x), t = x - x0;
      int64_t first = (int64_t)x0 - (taps == 4 ? 1 : 0);
      double sum = 0, wd[4];
      for (int k = 0; k < taps; k++) {
        wd[k] = taps == 2 ? (k ? t : 1 - t) : cubic_kernel(t - (k - 1), p->cubic_a);
        if (p->exclude_outside && (first + k < 0 || first + k >= in)) wd[k] = 0;
        sum += wd[k];
      }
      for (int k = 0; k < taps; k++) {
        idx[k] = clamp_index(first + k, in);
        w[k] = (float)(p->exclude_outside && sum != 0 ? wd[k] / sum : wd[k]);
      }
    }
    for (int k = 0; k < taps; k++)
      if (w[k] != 0 && (w[k] != 1 || idx[k] != o)) m->identity = 0;
  }
}

/* ------------------------------------------------------------------ Resize: nearest */

/* Nearest is a gather: the output is processed as rows along the last axis; a row's source
 * offset is the sum of the other axes' offsets, and each element adds the last axis's. */
typedef struct nearest_job {
  int rank;
  int64_t out[KILN_MAX_RANK];
  const int64_t *offset[KILN_MAX_RANK]; /* per axis and output index: input offset in elements, -1 outside */
  const void *src;
  void *dst;
  size_t elem;
  kiln_dtype dtype;
  uint64_t fill; /* extrapolation_value in the element's type */
  int failed;    /* a string copy ran out of memory */
} nearest_job;

static void copy_element(nearest_job *j, char *dst, int64_t src_offset) {
  if (j->dtype == KILN_STRING) {
    const char *s = src_offset < 0 ? "" : ((char *const *)j->src)[src_offset];
    if (!(*(char **)dst = strdup(s))) j->failed = 1;
  } else {
    memcpy(dst, src_offset < 0 ? (const void *)&j->fill : (const char *)j->src + src_offset * (int64_t)j->elem,
           j->elem);
  }
}

static void nearest_rows(void *arg, int64_t r0, int64_t r1) {
  nearest_job *j = arg;
  const int last = j->rank - 1;
  const int64_t width = j->out[last], *inner = j->offset[last];
  int64_t pos[KILN_MAX_RANK];
  for (int64_t r = r0, d = last - 1; d >= 0; d--) {
    pos[d] = r % j->out[d];
    r /= j->out[d];
  }
  int64_t prev_base = -2;
  for (int64_t r = r0; r < r1; r++) {
    int64_t base = 0;
    for (int d = 0; d < last; d++) {
      int64_t o = j->offset[d][pos[d]];
      if (o < 0 || base < 0)
        base = -1;
      else
        base += o;
    }
    char *dst = (char *)j->dst + r * width * (int64_t)j->elem;
    if (base == prev_base && j->dtype != KILN_STRING) { /* upsampling repeats rows: copy the last one */
      memcpy(dst, dst - width * (int64_t)j->elem, (size_t)width * j->elem);
    } else if (base >= 0 && j->elem == 4 && j->dtype != KILN_STRING) { /* float, int32: the common case */
      const uint32_t *src = (const uint32_t *)j->src + base;
      uint32_t *out = (uint32_t *)dst, fill;
      memcpy(&fill, &j->fill, sizeof fill);
      for (int64_t i = 0; i < width; i++) out[i] = inner[i] < 0 ? fill : src[inner[i]];
    } else {
      for (int64_t i = 0; i < width; i++)
        copy_element(j, dst + i * (int64_t)j->elem, base < 0 || inner[i] < 0 ? -1 : base + inner[i]);
    }
    prev_base = base;
    for (int d = last - 1; d >= 0 && ++pos[d] == j->out[d]; d--) pos[d] = 0;
  }
}

static kiln_status resize_nearest(kx_ctx *c, const resize_params *p, const kiln_tensor *x, const axis_map *maps,
                                  int64_t *offsets, kiln_tensor *y) {
  const int r = x->rank;
  nearest_job j = {.rank = r, .src = x->data, .dst = y->data, .elem = kiln_dtype_size(x->dtype), .dtype = x->dtype};
  if (x->dtype != KILN_STRING) { /* fill: extrapolation_value as one element of X's type */
    kiln_tensor one = {.dtype = x->dtype, .data = &j.fill};
    kx_set_f64(&one, 0, p->extrapolation);
  }
  int64_t stride = 1;
  for (int d = r - 1; d >= 0; d--) {
    j.out[d] = maps[d].out;
    j.offset[d] = offsets;
    for (int64_t o = 0; o < maps[d].out; o++) offsets[o] = maps[d].idx[o] < 0 ? -1 : maps[d].idx[o] * stride;
    offsets += maps[d].out;
    stride *= maps[d].in;
  }
  if (r == 0) { /* a scalar stays itself */
    copy_element(&j, y->data, 0);
  } else {
    int64_t rows = kiln_tensor_numel(y) / (j.out[r - 1] ? j.out[r - 1] : 1);
    if (j.out[r - 1]) kx_parallel(c, rows, 2.0 * (double)j.out[r - 1], nearest_rows, &j);
  }
  return j.failed ? kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory copying strings") : NULL;
}

/* ------------------------------------------------------------------ Resize: linear and cubic */

/* 2-D bilinear: out[p, oy, ox] from the four neighbours in plane p. */
typedef struct bilinear_job {
  const axis_map *ym, *xm;
  const float *src;
  float *dst;
  int64_t in_h, in_w;
} bilinear_job;

static void bilinear_rows(void *arg, int64_t r0, int64_t r1) {
  const bilinear_job *j = arg;
  const int64_t oh = j->ym->out, ow = j->xm->out;
  const int64_t *xi = j->xm->idx;
  const float *xw = j->xm->w;
  for (int64_t r = r0; r < r1; r++) {
    int64_t plane = r / oh, oy = r % oh;
    const float *src = j->src + plane * j->in_h * j->in_w;
    const float *row0 = src + j->ym->idx[2 * oy] * j->in_w, *row1 = src + j->ym->idx[2 * oy + 1] * j->in_w;
    const float wy0 = j->ym->w[2 * oy], wy1 = j->ym->w[2 * oy + 1];
    float *out = j->dst + r * ow;
    for (int64_t ox = 0; ox < ow; ox++) {
      int64_t x0 = xi[2 * ox], x1 = xi[2 * ox + 1];
      float top = row0[x0] * xw[2 * ox] + row0[x1] * xw[2 * ox + 1];
      float bottom = row1[x0] * xw[2 * ox] + row1[x1] * xw[2 * ox + 1];
      out[ox] = wy0 * top + wy1 * bottom;
    }
  }
}

/* One separable pass along an axis: [outer, in, inner] -> [outer, out, inner]. */
typedef struct pass_job {
  const axis_map *m;
  const float *src;
  float *dst;
  int64_t inner;
  float fill; /* extrapolation_value */
} pass_job;

static void pass_rows(void *arg, int64_t r0, int64_t r1) {
  const pass_job *j = arg;
  const axis_map *m = j->m;
  const int64_t inner = j->inner, taps = m->taps;
  for (int64_t r = r0; r < r1; r++) {
    int64_t outer = r / m->out, o = r % m->out;
    const int64_t *idx = m->idx + o * taps;
    const float *w = m->w + o * taps, *src = j->src + outer * m->in * inner;
    float *dst = j->dst + r * inner;
    if (idx[0] < 0) {
      for (int64_t i = 0; i < inner; i++) dst[i] = j->fill;
      continue;
    }
    const float *s0 = src + idx[0] * inner;
    for (int64_t i = 0; i < inner; i++) dst[i] = w[0] * s0[i];
    for (int64_t k = 1; k < taps; k++) {
      const float wk = w[k], *sk = src + idx[k] * inner;
      for (int64_t i = 0; i < inner; i++) dst[i] += wk * sk[i];
    }
  }
}

/* The last axis, where inner is 1: one output element per (outer, o). */
static void pass_last_axis(void *arg, int64_t r0, int64_t r1) {
  const pass_job *j = arg;
  const axis_map *m = j->m;
  const int64_t taps = m->taps;
  for (int64_t r = r0; r < r1; r++) {
    const float *src = j->src + r * m->in;
    float *dst = j->dst + r * m->out;
    for (int64_t o = 0; o < m->out; o++) {
      const int64_t *idx = m->idx + o * taps;
      const float *w = m->w + o * taps;
      if (idx[0] < 0) {
        dst[o] = j->fill;
        continue;
      }
      float v = 0;
      for (int64_t k = 0; k < taps; k++) v += w[k] * src[idx[k]];
      dst[o] = v;
    }
  }
}

static void resize_interpolate(kx_ctx *c, const resize_params *p, const axis_map *maps, int rank, const float *src,
                               float *dst, float *tmp[2]) {
  int64_t shape[KILN_MAX_RANK];
  int last_pass = -1, n_passes = 0;
  for (int d = 0; d < rank; d++) {
    shape[d] = maps[d].in;
    if (!maps[d].identity && last_pass < 0) last_pass = d; /* passes run from the last axis down */
    n_passes += !maps[d].identity;
  }
  /* the common 2-D case: a single fused bilinear pass */
  int only_hw = rank >= 2 && p->mode == MODE_LINEAR && p->coord != CT_TF_CROP_AND_RESIZE;
  for (int d = 0; d < rank - 2 && only_hw; d++) only_hw = maps[d].identity;
  if (only_hw && n_passes > 0) {
    bilinear_job j = {&maps[rank - 2], &maps[rank - 1], src, dst, maps[rank - 2].in, maps[rank - 1].in};
    int64_t rows = kx_prod(shape, 0, rank - 2) * maps[rank - 2].out;
    kx_parallel(c, rows, 8.0 * (double)maps[rank - 1].out, bilinear_rows, &j);
    return;
  }
  if (n_passes == 0) {
    memcpy(dst, src, (size_t)kx_prod(shape, 0, rank) * sizeof *dst);
    return;
  }
  /* innermost axis first, as the reference nests its 1-D interpolations; the last pass writes
   * the output */
  const float *cur = src;
  int which = 0;
  for (int d = rank - 1; d >= 0; d--) {
    if (maps[d].identity) continue;
    float *out = d == last_pass ? dst : tmp[which];
    pass_job j = {&maps[d], cur, out, kx_prod(shape, d + 1, rank), p->extrapolation};
    int64_t outer = kx_prod(shape, 0, d);
    if (j.inner == 1)
      kx_parallel(c, outer, 3.0 * (double)maps[d].taps * (double)maps[d].out, pass_last_axis, &j);
    else
      kx_parallel(c, outer * maps[d].out, 2.0 * (double)maps[d].taps * (double)j.inner, pass_rows, &j);
    shape[d] = maps[d].out;
    cur = out;
    which ^= 1;
  }
}

/* ------------------------------------------------------------------ Resize: the operator */

static kiln_status resize_run(kx_ctx *c) {
  const resize_params *p = c->node->params;
  const kiln_tensor *x;
  kiln_status s;
  if ((s = kx_require(c, 0, &x))) return s;
  if (p->mode != MODE_NEAREST && (s = kx_check_dtype(x, 0, KX_NUMERIC))) return s;
  resize_geometry g;
  if ((s = resize_shape(c, p, x, &g))) return s;
  const int r = x->rank, taps = p->mode == MODE_NEAREST ? 1 : p->mode == MODE_LINEAR ? 2 : 4;
  kiln_tensor *y;
  if ((s = kx_output(c, 0, x->dtype, r, g.out, &y))) return s;
  if (kiln_tensor_numel(y) == 0) return NULL;

  /* scratch: axis tables; for interpolation, float copies of X and Y unless float, and the
   * two buffers the separable passes alternate between */
  const int widen = x->dtype != KILN_FLOAT;
  int64_t sum_out = 0, biggest = 0, shape[KILN_MAX_RANK];
  memcpy(shape, g.in, sizeof shape);
  for (int d = r - 1; d >= 0; d--) {
    sum_out += g.out[d];
    shape[d] = g.out[d];
    int64_t n = kx_prod(shape, 0, r);
    if (n > biggest) biggest = n;
  }
  axis_map maps[KILN_MAX_RANK];
  int64_t *offsets = NULL;
  float *xf = NULL, *yf = NULL, *tmp[2] = {NULL, NULL};
  carve cv = {0};
  for (int round = 0; round < 2; round++) {
    for (int d = 0; d < r; d++) {
      maps[d] = (axis_map){.in = g.in[d], .out = g.out[d], .taps = taps};
      maps[d].idx = carve_take(&cv, g.out[d] * taps, sizeof(int64_t));
      maps[d].w = carve_take(&cv, g.out[d] * taps, sizeof(float));
    }
    if (p->mode == MODE_NEAREST) {
      offsets = carve_take(&cv, sum_out, sizeof(int64_t));
    } else {
      xf = widen ? carve_take(&cv, kiln_tensor_numel(x), sizeof(float)) : x->data;
      yf = widen ? carve_take(&cv, kiln_tensor_numel(y), sizeof(float)) : y->data;
      tmp[0] = carve_take(&cv, biggest, sizeof(float));
      tmp[1] = carve_take(&cv, biggest, sizeof(float));
    }
    if (cv.overflow) return kiln_error(KILN_RESOURCE_EXHAUSTED, "Resize working memory too large");
    if (round == 0) {
      cv = (carve){.base = kx_scratch(c, cv.used)};
      if (!cv.base) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for Resize scratch");
    }
  }
  for (int d = 0; d < r; d++) build_axis(p, &g, d, &maps[d]);
  if (p->mode == MODE_NEAREST) return resize_nearest(c, p, x, maps, offsets, y);
  if (widen) load_floats(x, xf);
  resize_interpolate(c, p, maps, r, xf, yf, tmp);
  if (widen) store_floats(yf, y);
  return NULL;
}

/* ------------------------------------------------------------------ GridSample */

/* Follows PyTorch's grid_sampler_2d, which ONNX's GridSample-16 is defined after and whose
 * outputs are the conformance data. */
typedef enum { GS_BILINEAR, GS_NEAREST, GS_BICUBIC } gs_mode;
typedef enum { GS_ZEROS, GS_BORDER, GS_REFLECTION } gs_padding;

typedef struct gs_params {
  gs_mode mode;
  gs_padding padding;
  int align_corners;
} gs_params;

static kiln_status gridsample_prepare(kx_node *n) {
  static const char *const modes[] = {"bilinear", "nearest", "bicubic"}, *const pads[] = {"zeros", "border",
                                                                                          "reflection"};
  char mode[32], pad[32];
  kx_attr_string(n->proto, "mode", "bilinear", mode, sizeof mode);
  kx_attr_string(n->proto, "padding_mode", "zeros", pad, sizeof pad);
  int m = lookup(mode, modes, 3), pm = lookup(pad, pads, 3);
  if (m < 0) return kiln_error(KILN_INVALID_ARGUMENT, "mode '%s' is not one of bilinear, nearest, bicubic", mode);
  if (pm < 0)
    return kiln_error(KILN_INVALID_ARGUMENT, "padding_mode '%s' is not one of zeros, border, reflection", pad);
  gs_params *p = calloc(1, sizeof *p);
  if (!p) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  p->mode = (gs_mode)m;
  p->padding = (gs_padding)pm;
  p->align_corners = kx_attr_int(n->proto, "align_corners", 0) != 0;
  n->params = p;
  return NULL;
}

/* A grid coordinate in [-1, 1] as a pixel coordinate. */
static float gs_unnormalize(float v, int64_t size, int align_corners) {
  return align_corners ? (v + 1) / 2 * (float)(size - 1) : ((v + 1) * (float)size - 1) / 2;
}

/* Reflects x into [twice_low / 2, twice_high / 2]. */
static float gs_reflect(float x, int64_t twice_low, int64_t twice_high) {
  if (twice_low == twice_high) return 0;
  float min = (float)twice_low / 2, span = (float)(twice_high - twice_low) / 2;
  x = fabsf(x - min);
  float extra = fmodf(x, span);
  double flips = floor((double)x / span);
  return fmod(flips, 2) == 0 ? extra + min : span - extra + min;
}

/* Applies the padding mode to a pixel coordinate (zeros: unchanged, checked at read time). */
static float gs_pad(const gs_params *p, float x, int64_t size) {
  if (p->padding == GS_ZEROS) return x;
  if (p->padding == GS_REFLECTION)
    x = p->align_corners ? gs_reflect(x, 0, 2 * (size - 1)) : gs_reflect(x, -1, 2 * size - 1);
  return x < 0 ? 0 : x > (float)(size - 1) ? (float)(size - 1) : x;
}

/* floor(x) as an index; NaN and far-away coordinates become an index that is out of bounds
 * (and stays so after adding a few), so they read zeros. */
static int64_t gs_floor(float x) { return x > -1e9f && x < 1e9f ? (int64_t)floorf(x) : -1000000; }

typedef struct gs_job {
  const gs_params *p;
  const float *x, *grid; /* [N, C, H, W], [N, Ho, Wo, 2] */
  float *y;              /* [N, C, Ho, Wo] */
  int64_t C, H, W, points;
} gs_job;

static float gs_read(const gs_job *j, const float *plane, int64_t ix, int64_t iy) {
  return ix >= 0 && ix < j->W && iy >= 0 && iy < j->H ? plane[iy * j->W + ix] : 0;
}

/* bicubic reads every tap through the padding mode, as PyTorch does */
static float gs_read_padded(const gs_job *j, const float *plane, int64_t ix, int64_t iy) {
  float px = gs_pad(j->p, (float)ix, j->W), py = gs_pad(j->p, (float)iy, j->H);
  return gs_read(j, plane, gs_floor(px), gs_floor(py));
}

static void cubic_weights(float t, float w[4]) {
  const double a = -0.75;
  for (int k = 0; k < 4; k++) w[k] = (float)cubic_kernel(t - (k - 1), a);
}

static void gs_points(void *arg, int64_t i0, int64_t i1) {
  const gs_job *j = arg;
  const gs_params *p = j->p;
  const int64_t HW = j->H * j->W;
  for (int64_t i = i0; i < i1; i++) {
    int64_t n = i / j->points, pt = i % j->points;
    float gx = gs_unnormalize(j->grid[2 * i], j->W, p->align_corners);
    float gy = gs_unnormalize(j->grid[2 * i + 1], j->H, p->align_corners);
    const float *planes = j->x + n * j->C * HW;
    float *out = j->y + n * j->C * j->points + pt;
    if (p->mode == GS_BICUBIC) {
      int64_t x0 = gs_floor(gx), y0 = gs_floor(gy);
      float wx[4], wy[4];
      cubic_weights(gx - floorf(gx), wx);
      cubic_weights(gy - floorf(gy), wy);
      for (int64_t ch = 0; ch < j->C; ch++) {
        float v = 0;
        for (int ky = 0; ky < 4; ky++) {
          float row = 0;
          for (int kx = 0; kx < 4; kx++) row += wx[kx] * gs_read_padded(j, planes + ch * HW, x0 - 1 + kx, y0 - 1 + ky);
          v += wy[ky] * row;
        }
        out[ch * j->points] = v;
      }
      continue;
    }
    gx = gs_pad(p, gx, j->W);
    gy = gs_pad(p, gy, j->H);
    if (p->mode == GS_NEAREST) {
      int64_t ix = gs_floor(nearbyintf(gx)), iy = gs_floor(nearbyintf(gy));
      for (int64_t ch = 0; ch < j->C; ch++) out[ch * j->points] = gs_read(j, planes + ch * HW, ix, iy);
      continue;
    }
    int64_t x0 = gs_floor(gx), y0 = gs_floor(gy);
    float tx = gx - (float)x0, ty = gy - (float)y0;
    for (int64_t ch = 0; ch < j->C; ch++) {
      const float *pl = planes + ch * HW;
      out[ch * j->points] = (1 - ty) * ((1 - tx) * gs_read(j, pl, x0, y0) + tx * gs_read(j, pl, x0 + 1, y0)) +
                            ty * ((1 - tx) * gs_read(j, pl, x0, y0 + 1) + tx * gs_read(j, pl, x0 + 1, y0 + 1));
    }
  }
}

static kiln_status gridsample_run(kx_ctx *c) {
  const gs_params *p = c->node->params;
  const kiln_tensor *x, *grid;
  kiln_status s;
  if ((s = kx_require(c, 0, &x)) || (s = kx_require(c, 1, &grid))) return s;
  if ((s = kx_check_dtype(x, 0, KX_NUMERIC)) || (s = kx_check_dtype(grid, 1, KX_FLOATS))) return s;
  if (x->rank != 4) return kiln_error(KILN_INVALID_ARGUMENT, "X must be 4-D [N, C, H, W], got rank %d", x->rank);
  if (grid->rank != 4 || grid->dims[0] != x->dims[0] || grid->dims[3] != 2) {
    char a[96], b[96];
    return kiln_error(KILN_INVALID_ARGUMENT, "grid %s does not fit X %s: expected [N, H_out, W_out, 2]",
                      kiln_tensor_describe(grid, a, sizeof a), kiln_tensor_describe(x, b, sizeof b));
  }
  const int64_t N = x->dims[0], C = x->dims[1];
  kiln_tensor *y;
  if ((s = kx_output(c, 0, x->dtype, 4, (int64_t[]){N, C, grid->dims[1], grid->dims[2]}, &y))) return s;
  if (kiln_tensor_numel(y) == 0) return NULL;
  const int wx = x->dtype != KILN_FLOAT, wg = grid->dtype != KILN_FLOAT, wy = y->dtype != KILN_FLOAT;
  carve cv = {0};
  float *xf = NULL, *gf = NULL, *yf = NULL;
  for (int round = 0; round < 2; round++) {
    xf = wx ? carve_take(&cv, kiln_tensor_numel(x), sizeof(float)) : x->data;
    gf = wg ? carve_take(&cv, kiln_tensor_numel(grid), sizeof(float)) : grid->data;
    yf = wy ? carve_take(&cv, kiln_tensor_numel(y), sizeof(float)) : y->data;
    if (cv.overflow) return kiln_error(KILN_RESOURCE_EXHAUSTED, "GridSample working memory too large");
    if (round == 0) {
      cv = (carve){.base = kx_scratch(c, cv.used)};
      if (!cv.base) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for GridSample scratch");
    }
  }
  if (wx) load_floats(x, xf);
  if (wg) load_floats(grid, gf);
  gs_job j = {p, xf, gf, yf, C, x->dims[2], x->dims[3], grid->dims[1] * grid->dims[2]};
  double taps = p->mode == GS_BICUBIC ? 16 : p->mode == GS_BILINEAR ? 4 : 1;
  kx_parallel(c, N * j.points, 4.0 * taps * (double)C + 20, gs_points, &j);
  if (wy) store_floats(yf, y);
  return NULL;
}

/* ------------------------------------------------------------------ RoiAlign */

/* Follows ONNX Runtime (and Caffe2's RoIAlign, which it derives from), including max mode,
 * which takes the largest of the weighted corner values rather than of interpolated values. */
typedef struct roi_params {
  int max_mode;
  int half_pixel; /* opset 16's default: pixel centres at +0.5 */
  int64_t out_h, out_w, sampling_ratio;
  float spatial_scale;
} roi_params;

static kiln_status roialign_prepare(kx_node *n) {
  char mode[32], ct[32];
  kx_attr_string(n->proto, "mode", "avg", mode, sizeof mode);
  kx_attr_string(n->proto, "coordinate_transformation_mode", n->opset >= 16 ? "half_pixel" : "output_half_pixel", ct,
                 sizeof ct);
  if (strcmp(mode, "avg") != 0 && strcmp(mode, "max") != 0)
    return kiln_error(KILN_INVALID_ARGUMENT, "mode '%s' is not avg or max", mode);
  if (strcmp(ct, "half_pixel") != 0 && strcmp(ct, "output_half_pixel") != 0)
    return kiln_error(KILN_INVALID_ARGUMENT,
                      "coordinate_transformation_mode '%s' is not half_pixel or output_half_pixel", ct);
  roi_params *p = calloc(1, sizeof *p);
  if (!p) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  p->max_mode = strcmp(mode, "max") == 0;
  p->half_pixel = strcmp(ct, "half_pixel") == 0;
  p->out_h = kx_attr_int(n->proto, "output_height", 1);
  p->out_w = kx_attr_int(n->proto, "output_width", 1);
  p->sampling_ratio = kx_attr_int(n->proto, "sampling_ratio", 0);
  p->spatial_scale = kx_attr_float(n->proto, "spatial_scale", 1.0f);
  kiln_status s = NULL;
  if (p->out_h < 1 || p->out_w < 1 || p->out_h > INT32_MAX || p->out_w > INT32_MAX)
    s = kiln_error(KILN_INVALID_ARGUMENT, "output_height and output_width must be positive, got %lld and %lld",
                   (long long)p->out_h, (long long)p->out_w);
  else if (p->sampling_ratio < 0 || p->sampling_ratio > INT32_MAX)
    s = kiln_error(KILN_INVALID_ARGUMENT, "sampling_ratio must be non-negative, got %lld",
                   (long long)p->sampling_ratio);
  else if (!isfinite(p->spatial_scale))
    s = kiln_error(KILN_INVALID_ARGUMENT, "spatial_scale must be finite, got %g", p->spatial_scale);
  if (s) {
    free(p);
    return s;
  }
  n->params = p;
  return NULL;
}

typedef struct roi_job {
  const roi_params *p;
  const float *x, *rois; /* [N, C, H, W], [R, 4] */
  const int64_t *batch;  /* [R] */
  float *y;              /* [R, C, out_h, out_w] */
  int64_t C, H, W;
  const int64_t *grid; /* [R, 2]: samples per bin along y and x */
} roi_job;

/* A roi in feature-map pixels: top-left corner and size. */
typedef struct roi_box {
  float x, y, w, h;
} roi_box;

static roi_box roi_geometry(const roi_params *p, const float *roi) {
  const float offset = p->half_pixel ? 0.5f : 0.0f;
  roi_box b = {roi[0] * p->spatial_scale - offset, roi[1] * p->spatial_scale - offset, 0, 0};
  b.w = roi[2] * p->spatial_scale - offset - b.x;
  b.h = roi[3] * p->spatial_scale - offset - b.y;
  if (!p->half_pixel) { /* the old behaviour makes a roi at least one pixel wide and high */
    b.w = b.w > 1 ? b.w : 1;
    b.h = b.h > 1 ? b.h : 1;
  }
  return b;
}

/* The bilinear sample at (y, x) as four weighted corners; all weights zero outside the map. */
typedef struct corners {
  int64_t pos[4];
  float w[4];
} corners;

static corners roi_sample(const roi_job *j, float y, float x) {
  corners k = {{0, 0, 0, 0}, {0, 0, 0, 0}};
  const int64_t H = j->H, W = j->W;
  if (H == 0 || W == 0 || y < -1.0f || y > (float)H || x < -1.0f || x > (float)W) return k;
  y = y <= 0 ? 0 : y;
  x = x <= 0 ? 0 : x;
  int64_t y0 = (int64_t)y, x0 = (int64_t)x, y1, x1;
  if (y0 >= H - 1)
    y0 = y1 = H - 1, y = (float)y0;
  else
    y1 = y0 + 1;
  if (x0 >= W - 1)
    x0 = x1 = W - 1, x = (float)x0;
  else
    x1 = x0 + 1;
  float ly = y - (float)y0, lx = x - (float)x0, hy = 1 - ly, hx = 1 - lx;
  k.pos[0] = y0 * W + x0, k.pos[1] = y0 * W + x1, k.pos[2] = y1 * W + x0, k.pos[3] = y1 * W + x1;
  k.w[0] = hy * hx, k.w[1] = hy * lx, k.w[2] = ly * hx, k.w[3] = ly * lx;
  return k;
}

static void roi_items(void *arg, int64_t i0, int64_t i1) {
  const roi_job *j = arg;
  const roi_params *p = j->p;
  for (int64_t i = i0; i < i1; i++) { /* one (roi, channel) pair */
    int64_t r = i / j->C, ch = i % j->C;
    const float *plane = j->x + (j->batch[r] * j->C + ch) * j->H * j->W;
    roi_box b = roi_geometry(p, j->rois + 4 * r);
    const float x_start = b.x, y_start = b.y, bin_h = b.h / (float)p->out_h, bin_w = b.w / (float)p->out_w;
    const int64_t gh = j->grid[2 * r], gw = j->grid[2 * r + 1];
    const float count = (float)(gh * gw > 0 ? gh * gw : 1);
    float *out = j->y + i * p->out_h * p->out_w;
    for (int64_t ph = 0; ph < p->out_h; ph++)
      for (int64_t pw = 0; pw < p->out_w; pw++) {
        float acc = 0;
        int first = 1;
        for (int64_t iy = 0; iy < gh; iy++) {
          float y = y_start + (float)ph * bin_h + ((float)iy + 0.5f) * bin_h / (float)gh;
          for (int64_t ix = 0; ix < gw; ix++) {
            float x = x_start + (float)pw * bin_w + ((float)ix + 0.5f) * bin_w / (float)gw;
            corners k = roi_sample(j, y, x);
            if (!p->max_mode) {
              for (int t = 0; t < 4; t++) acc += k.w[t] * plane[k.pos[t]];
              continue;
            }
            for (int t = 0; t < 4; t++) {
              float v = k.w[t] * plane[k.pos[t]];
              acc = first || v > acc ? v : acc;
              first = 0;
            }
          }
        }
        out[ph * p->out_w + pw] = p->max_mode ? acc : acc / count;
      }
  }
}

static kiln_status roialign_run(kx_ctx *c) {
  const roi_params *p = c->node->params;
  const kiln_tensor *x, *rois, *bi;
  kiln_status s;
  if ((s = kx_require(c, 0, &x)) || (s = kx_require(c, 1, &rois)) || (s = kx_require(c, 2, &bi))) return s;
  if ((s = kx_check_dtype(x, 0, KX_FLOATS))) return s;
  if (rois->dtype != x->dtype)
    return kiln_error(KILN_INVALID_ARGUMENT, "rois is %s but X is %s", kiln_dtype_name(rois->dtype),
                      kiln_dtype_name(x->dtype));
  if (x->rank != 4) return kiln_error(KILN_INVALID_ARGUMENT, "X must be 4-D [N, C, H, W], got rank %d", x->rank);
  if (rois->rank != 2 || rois->dims[1] != 4)
    return kiln_error(KILN_INVALID_ARGUMENT, "rois must be [num_rois, 4], got rank %d", rois->rank);
  const int64_t R = rois->dims[0], N = x->dims[0], C = x->dims[1];
  if (bi->dtype != KILN_INT64 && bi->dtype != KILN_INT32)
    return kiln_error(KILN_INVALID_ARGUMENT, "batch_indices must be int64, got %s", kiln_dtype_name(bi->dtype));
  if (bi->rank != 1 || bi->dims[0] != R)
    return kiln_error(KILN_INVALID_ARGUMENT, "batch_indices must be [num_rois] = [%lld]", (long long)R);
  kiln_tensor *y;
  if ((s = kx_output(c, 0, x->dtype, 4, (int64_t[]){R, C, p->out_h, p->out_w}, &y))) return s;
  const int widen = x->dtype != KILN_FLOAT;
  carve cv = {0};
  float *xf = NULL, *rf = NULL, *yf = NULL;
  int64_t *batch = NULL, *grid = NULL;
  for (int round = 0; round < 2; round++) {
    xf = widen ? carve_take(&cv, kiln_tensor_numel(x), sizeof(float)) : x->data;
    rf = widen ? carve_take(&cv, 4 * R, sizeof(float)) : rois->data;
    yf = widen ? carve_take(&cv, kiln_tensor_numel(y), sizeof(float)) : y->data;
    batch = carve_take(&cv, R, sizeof(int64_t));
    grid = carve_take(&cv, 2 * R, sizeof(int64_t));
    if (cv.overflow) return kiln_error(KILN_RESOURCE_EXHAUSTED, "RoiAlign working memory too large");
    if (round == 0) {
      cv = (carve){.base = kx_scratch(c, cv.used)};
      if (!cv.base) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for RoiAlign scratch");
    }
  }
  if (widen) {
    load_floats(x, xf);
    load_floats(rois, rf);
  }
  for (int64_t r = 0; r < R; r++) {
    batch[r] = bi->dtype == KILN_INT64 ? ((const int64_t *)bi->data)[r] : ((const int32_t *)bi->data)[r];
    if (batch[r] < 0 || batch[r] >= N)
      return kiln_error(KILN_INVALID_ARGUMENT, "batch_indices[%lld] is %lld, outside [0, %lld)", (long long)r,
                        (long long)batch[r], (long long)N);
    const float *roi = rf + 4 * r;
    for (int k = 0; k < 4; k++)
      if (!isfinite(roi[k]))
        return kiln_error(KILN_INVALID_ARGUMENT, "rois[%lld] holds a non-finite value", (long long)r);
    /* samples per bin along y and x: sampling_ratio, or adaptive (the bin size rounded up) */
    roi_box b = roi_geometry(p, roi);
    double extent[2] = {b.h / (float)p->out_h, b.w / (float)p->out_w};
    for (int k = 0; k < 2; k++) {
      double n = p->sampling_ratio > 0 ? (double)p->sampling_ratio : ceil(extent[k]);
      if (n > 1 << 20)
        return kiln_error(KILN_INVALID_ARGUMENT, "rois[%lld] needs %g samples per bin, more than kiln allows",
                          (long long)r, n);
      grid[2 * r + k] = n > 0 ? (int64_t)n : 0;
    }
  }
  roi_job j = {p, xf, rf, batch, yf, C, x->dims[2], x->dims[3], grid};
  kx_parallel(c, R * C, 40.0 * (double)(p->out_h * p->out_w), roi_items, &j);
  if (widen) store_floats(yf, y);
  return NULL;
}

const kx_op kx_ops_resize[] = {
    {"", "Resize", 10, 0, resize_prepare, resize_run, NULL, 0},
    {"", "Upsample", 7, 0, upsample_prepare, resize_run, NULL, 0},
    {"", "GridSample", 16, 0, gridsample_prepare, gridsample_run, NULL, 0},
    {"", "RoiAlign", 10, 0, roialign_prepare, roialign_run, NULL, 0},
    {0},
};
