/* Image resizing for the data layer's resize transform: TF2's tf.image.resize (no antialias) in
 * bilinear and nearest modes, on [H, W, C] / [H, W] tensors of any numeric dtype.
 *
 * It is separate from ops/resize.c (the ONNX Resize kernel) because that kernel lives behind the
 * graph executor's node interface and the data layer does not depend on ops (DESIGN.md). Both
 * follow the same plan: per-axis source indices and weights computed once per call, then a pass
 * that allocates nothing per pixel. Index arithmetic is done in float, exactly as TF and PyTorch
 * do it, so that ties land on the same pixels. */
#include "data/data.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Per output index of one axis: the two input indices a bilinear sample blends and the weight of
 * the second (half-pixel centres; source positions left of the first centre clamp to it). */
static void linear_axis(int64_t in, int64_t out, int64_t *i0, int64_t *i1, float *w1) {
  const float scale = (float)in / (float)out;
  for (int64_t o = 0; o < out; o++) {
    float src = scale * ((float)o + 0.5f) - 0.5f;
    if (src < 0) src = 0;
    int64_t a = (int64_t)src; /* 0 <= src < in */
    if (a > in - 1) a = in - 1;
    i0[o] = a;
    i1[o] = a < in - 1 ? a + 1 : a;
    w1[o] = src - (float)a;
  }
}

/* TF2's nearest with half-pixel centres (torch's "nearest-exact"): floor((o + 0.5) * in / out). */
static void nearest_axis(int64_t in, int64_t out, int64_t *idx) {
  const float scale = (float)in / (float)out;
  for (int64_t o = 0; o < out; o++) {
    float src = floorf(((float)o + 0.5f) * scale);
    int64_t i = src < 0 ? 0 : (int64_t)src;
    idx[o] = i > in - 1 ? in - 1 : i;
  }
}

/* One input row interpolated along the width into floats: dst[o * c + k]. */
typedef void (*hpass_fn)(const void *row, int64_t c, int64_t ow, const int64_t *x0, const int64_t *x1,
                         const float *wx, float *dst);

#define HPASS(T, NAME)                                                                                   \
  static void NAME(const void *row, int64_t c, int64_t ow, const int64_t *x0, const int64_t *x1,        \
                   const float *wx, float *dst) {                                                        \
    const T *v = row;                                                                                    \
    for (int64_t o = 0; o < ow; o++) {                                                                   \
      const T *a = v + x0[o] * c, *b = v + x1[o] * c;                                                    \
      const float w1 = wx[o], w0 = 1.0f - w1;                                                            \
      for (int64_t k = 0; k < c; k++) dst[o * c + k] = w0 * (float)a[k] + w1 * (float)b[k];              \
    }                                                                                                    \
  }
HPASS(uint8_t, hpass_u8)
HPASS(int8_t, hpass_i8)
HPASS(uint16_t, hpass_u16)
HPASS(int16_t, hpass_i16)
HPASS(int32_t, hpass_i32)
HPASS(uint32_t, hpass_u32)
HPASS(int64_t, hpass_i64)
HPASS(uint64_t, hpass_u64)
HPASS(float, hpass_f32)
HPASS(double, hpass_f64)

static float half_at(const uint16_t *v, int64_t i, int bf16) {
  return bf16 ? kiln_bfloat16_to_float(v[i]) : kiln_half_to_float(v[i]);
}

#define HPASS_HALF(NAME, BF16)                                                                           \
  static void NAME(const void *row, int64_t c, int64_t ow, const int64_t *x0, const int64_t *x1,        \
                   const float *wx, float *dst) {                                                        \
    const uint16_t *v = row;                                                                             \
    for (int64_t o = 0; o < ow; o++) {                                                                   \
      const float w1 = wx[o], w0 = 1.0f - w1;                                                            \
      for (int64_t k = 0; k < c; k++)                                                                    \
        dst[o * c + k] = w0 * half_at(v, x0[o] * c + k, BF16) + w1 * half_at(v, x1[o] * c + k, BF16);    \
    }                                                                                                    \
  }
HPASS_HALF(hpass_f16, 0)
HPASS_HALF(hpass_bf16, 1)

static hpass_fn hpass_for(kiln_dtype t) {
  switch (t) {
  case KILN_BOOL:
  case KILN_UINT8: return hpass_u8;
  case KILN_INT8: return hpass_i8;
  case KILN_UINT16: return hpass_u16;
  case KILN_INT16: return hpass_i16;
  case KILN_INT32: return hpass_i32;
  case KILN_UINT32: return hpass_u32;
  case KILN_INT64: return hpass_i64;
  case KILN_UINT64: return hpass_u64;
  case KILN_FLOAT: return hpass_f32;
  case KILN_DOUBLE: return hpass_f64;
  case KILN_FLOAT16: return hpass_f16;
  case KILN_BFLOAT16: return hpass_bf16;
  default: return NULL;
  }
}

/* Two width-interpolated rows are kept: output rows walk down the input, so each input row is
 * interpolated once however much the image grows. */
typedef struct row_cache {
  float *buf[2];
  int64_t id[2];
} row_cache;

static const float *cached_row(row_cache *rc, int64_t y, int avoid, int *slot, hpass_fn pass, const char *src,
                               size_t row_bytes, int64_t c, int64_t ow, const int64_t *x0, const int64_t *x1,
                               const float *wx) {
  for (int k = 0; k < 2; k++)
    if (rc->id[k] == y) {
      *slot = k;
      return rc->buf[k];
    }
  int k = avoid == 0 ? 1 : avoid == 1 ? 0 : rc->id[0] < rc->id[1] ? 0 : 1;
  pass(src + (size_t)y * row_bytes, c, ow, x0, x1, wx, rc->buf[k]);
  rc->id[k] = y;
  *slot = k;
  return rc->buf[k];
}

static kiln_status resize_bilinear(const kiln_tensor *in, int64_t oh, int64_t ow, int64_t c, kiln_tensor *out) {
  const int64_t ih = in->dims[0], iw = in->dims[1];
  hpass_fn pass = hpass_for(in->dtype);
  /* scratch: y0, y1, x0, x1 indices, then y and x weights, then two rows of ow * c floats */
  size_t n_idx = (size_t)(2 * oh + 2 * ow), n_float = (size_t)(oh + ow) + 2 * (size_t)(ow * c);
  char *scratch = malloc(n_idx * sizeof(int64_t) + n_float * sizeof(float));
  if (!scratch) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory resizing to %lldx%lld", (long long)oh, (long long)ow);
  int64_t *y0 = (int64_t *)scratch, *y1 = y0 + oh, *x0 = y1 + oh, *x1 = x0 + ow;
  float *wy = (float *)(x1 + ow), *wx = wy + oh;
  row_cache rc = {{wx + ow, wx + ow + ow * c}, {-1, -1}};
  linear_axis(ih, oh, y0, y1, wy);
  linear_axis(iw, ow, x0, x1, wx);
  const size_t row_bytes = (size_t)(iw * c) * kiln_dtype_size(in->dtype);
  float *dst = out->data;
  const int64_t n = ow * c;
  for (int64_t oy = 0; oy < oh; oy++, dst += n) {
    int s0, s1;
    const float *r0 = cached_row(&rc, y0[oy], -1, &s0, pass, in->data, row_bytes, c, ow, x0, x1, wx);
    const float *r1 = cached_row(&rc, y1[oy], s0, &s1, pass, in->data, row_bytes, c, ow, x0, x1, wx);
    const float b = wy[oy], a = 1.0f - b;
    for (int64_t k = 0; k < n; k++) dst[k] = a * r0[k] + b * r1[k];
  }
  free(scratch);
  return NULL;
}

static kiln_status resize_nearest(const kiln_tensor *in, int64_t oh, int64_t ow, int64_t c, kiln_tensor *out) {
  const int64_t ih = in->dims[0], iw = in->dims[1];
  int64_t *ys = malloc((size_t)(oh + ow) * sizeof *ys);
  if (!ys) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory resizing to %lldx%lld", (long long)oh, (long long)ow);
  int64_t *xs = ys + oh;
  nearest_axis(ih, oh, ys);
  nearest_axis(iw, ow, xs);
  const size_t pixel = (size_t)c * kiln_dtype_size(in->dtype), row_bytes = (size_t)iw * pixel;
  const char *src = in->data;
  char *dst = out->data;
  for (int64_t oy = 0; oy < oh; oy++) {
    const char *row = src + (size_t)ys[oy] * row_bytes;
    if (pixel == 1) {
      for (int64_t ox = 0; ox < ow; ox++) dst[ox] = row[xs[ox]];
      dst += ow;
    } else if (pixel == 3) { /* RGB bytes: a call to memcpy per pixel would cost more than the copy */
      for (int64_t ox = 0; ox < ow; ox++, dst += 3) {
        const char *p = row + (size_t)xs[ox] * 3;
        dst[0] = p[0];
        dst[1] = p[1];
        dst[2] = p[2];
      }
    } else {
      for (int64_t ox = 0; ox < ow; ox++, dst += pixel) memcpy(dst, row + (size_t)xs[ox] * pixel, pixel);
    }
  }
  free(ys);
  return NULL;
}

kiln_status kx_resize_image(const kiln_tensor *in, int64_t height, int64_t width, int nearest, kiln_tensor *out) {
  char desc[96];
  memset(out, 0, sizeof *out);
  if (in->rank != 2 && in->rank != 3)
    return kiln_error(KILN_INVALID_ARGUMENT, "expected an image [H, W, C] or [H, W], found %s",
                      kiln_tensor_describe(in, desc, sizeof desc));
  if (!hpass_for(in->dtype))
    return kiln_error(KILN_INVALID_ARGUMENT, "expected a numeric image, found %s",
                      kiln_tensor_describe(in, desc, sizeof desc));
  if (in->dims[0] < 1 || in->dims[1] < 1)
    return kiln_error(KILN_INVALID_ARGUMENT, "cannot resize an empty image %s",
                      kiln_tensor_describe(in, desc, sizeof desc));
  if (height < 1 || width < 1)
    return kiln_error(KILN_INVALID_ARGUMENT, "cannot resize to %lldx%lld", (long long)height, (long long)width);
  const int64_t c = in->rank == 3 ? in->dims[2] : 1;
  int64_t dims[3] = {height, width, c};
  kiln_status s = kiln_tensor_alloc(out, nearest ? in->dtype : KILN_FLOAT, in->rank, dims);
  if (s || c == 0) return s;
  s = nearest ? resize_nearest(in, height, width, c, out) : resize_bilinear(in, height, width, c, out);
  if (s) kiln_tensor_release(out);
  return s;
}
