/* conv2d: y = act(conv(x, W) + b) on NHWC images with Keras' kernel layout W[kh, kw, cin, cout],
 * forward and backward side by side, each one GEMM over an im2col copy in the net's scratch; also
 * the window geometry (kernel or pool size, strides, TF's padding) that pooling shares. */
#include "train/train.h"

#include "data/data.h"
#include "ops/gemm.h"

#include <math.h>
#include <string.h>

#include <cjson/cJSON.h>

/* Bounds on what a config may ask for, so that no size computed below overflows. */
#define MAX_WINDOW 4096
#define MAX_LAYER_FLOATS ((int64_t)1 << 28)

kiln_status kx_spec_pair(const cJSON *config, const char *where, const char *key, int required, int64_t min,
                         int64_t max, int64_t out[2]) {
  double v[2];
  int n = 0;
  kiln_status s = kx_spec_doubles(config, where, key, required, v, 2, &n);
  if (s) return s;
  if (n == 0) /* absent and optional, or an empty list */
    return cJSON_GetObjectItemCaseSensitive(config, key)
               ? kiln_error(KILN_INVALID_ARGUMENT, "%s.%s: expected an integer or a pair of integers, got an empty list", where, key)
               : NULL;
  if (n == 1) v[1] = v[0];
  for (int i = 0; i < 2; i++)
    if (!(v[i] >= (double)min && v[i] <= (double)max) || v[i] != (double)(int64_t)v[i])
      return kiln_error(KILN_INVALID_ARGUMENT, "%s.%s: expected an integer or a pair of integers in [%lld, %lld], got %g", where,
                        key, (long long)min, (long long)max, v[i]);
  out[0] = (int64_t)v[0];
  out[1] = (int64_t)v[1];
  return NULL;
}

kiln_status kx_spec_padding(kx_layer *l, const cJSON *config, const char *where) {
  const char *padding = "valid";
  kiln_status s = kx_spec_string(config, where, "padding", 0, &padding);
  if (s) return s;
  if (strcmp(padding, "valid") != 0 && strcmp(padding, "same") != 0)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s.padding: expected \"valid\" or \"same\", got \"%s\"", where, padding);
  l->same = padding[0] == 's';
  return NULL;
}

kiln_status kx_window_build(kx_layer *l, const char *what, int64_t *channels) {
  if (l->in.rank < 2)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s takes images [H, W, C] (or [H, W]) per sample, got a vector of %lld values (add a reshape layer before it)",
                      l->ops->name, (long long)l->in.d[0]);
  int64_t out[2];
  for (int i = 0; i < 2; i++) {
    int64_t n = l->in.d[i], k = l->kernel[i], s = l->strides[i];
    if (l->same) {
      out[i] = (n + s - 1) / s;
      int64_t total = (out[i] - 1) * s + k - n;
      l->pad[i] = total > 0 ? total / 2 : 0;
    } else {
      if (k > n)
        return kiln_error(KILN_INVALID_ARGUMENT, "%s %lldx%lld is larger than the input %lldx%lld (padding \"valid\")", what,
                          (long long)l->kernel[0], (long long)l->kernel[1], (long long)l->in.d[0], (long long)l->in.d[1]);
      out[i] = (n - k) / s + 1;
      l->pad[i] = 0;
    }
  }
  *channels = l->in.rank == 3 ? l->in.d[2] : 1;
  l->out = (kx_shape){3, {out[0], out[1], *channels}};
  return NULL;
}

/* ---------------------------------------------------------------- conv2d */

static kiln_status configure(kx_layer *l, const cJSON *config, const char *where) {
  kiln_status s = kx_spec_keys(config, where,
                               (const char *const[]){"filters", "kernel_size", "strides", "padding", "activation", "use_bias", NULL});
  l->use_bias = 1;
  l->strides[0] = l->strides[1] = 1;
  if (!s) s = kx_spec_int(config, where, "filters", 1, 1, 1 << 20, &l->filters);
  if (!s) s = kx_spec_pair(config, where, "kernel_size", 1, 1, MAX_WINDOW, l->kernel);
  if (!s) s = kx_spec_pair(config, where, "strides", 0, 1, MAX_WINDOW, l->strides);
  if (!s) s = kx_spec_padding(l, config, where);
  if (!s) s = kx_actfn_read(config, where, 0, &l->act);
  if (!s) s = kx_spec_bool(config, where, "use_bias", &l->use_bias);
  return s;
}

/* Floats in one row of the im2col matrix: one output pixel's receptive field. */
static int64_t patch_size(const kx_layer *l) { return l->kernel[0] * l->kernel[1] * (l->in.rank == 3 ? l->in.d[2] : 1); }

/* When the im2col matrix would equal the input itself (1x1 kernels at stride 1, or one window
 * covering the whole unpadded image), the GEMMs read x and write dx directly. */
static int direct(const kx_layer *l) {
  int one_by_one = l->kernel[0] == 1 && l->kernel[1] == 1 && l->strides[0] == 1 && l->strides[1] == 1;
  int whole = l->out.d[0] == 1 && l->out.d[1] == 1 && l->kernel[0] == l->in.d[0] && l->kernel[1] == l->in.d[1] &&
              l->pad[0] == 0 && l->pad[1] == 0;
  return one_by_one || whole;
}

static kiln_status build(kx_layer *l) {
  int64_t cin;
  kiln_status s = kx_window_build(l, "kernel", &cin);
  if (s) return s;
  l->out.d[2] = l->filters;
  int64_t k = patch_size(l), pixels = l->out.d[0] * l->out.d[1];
  if (k > MAX_LAYER_FLOATS / l->filters)
    return kiln_error(KILN_INVALID_ARGUMENT, "a %lldx%lldx%lld kernel with %lld filters is over kiln's limit of %lld weights",
                      (long long)l->kernel[0], (long long)l->kernel[1], (long long)cin, (long long)l->filters,
                      (long long)MAX_LAYER_FLOATS);
  if (pixels > MAX_LAYER_FLOATS / k)
    return kiln_error(KILN_INVALID_ARGUMENT, "its im2col matrix (%lld pixels x %lld) is over kiln's limit of %lld floats per sample",
                      (long long)pixels, (long long)k, (long long)MAX_LAYER_FLOATS);
  l->n_params = k * l->filters + (l->use_bias ? l->filters : 0);
  l->scratch_per_sample = direct(l) ? 0 : pixels * k;
  return NULL;
}

/* Glorot uniform over fan_in = kh * kw * cin and fan_out = kh * kw * cout, zero bias (Keras). */
static void init(kx_layer *l, kx_rng *rng) {
  int64_t k = patch_size(l), n = k * l->filters;
  float limit = sqrtf(6.0f / (float)(k + l->kernel[0] * l->kernel[1] * l->filters));
  for (int64_t i = 0; i < n; i++) l->params[i] = (2 * kx_rng_uniform(rng) - 1) * limit;
  if (l->use_bias) memset(l->params + n, 0, (size_t)l->filters * sizeof(float));
}

/* The columns [j0, j1) of a kernel row that fall inside the image for output column ox. */
static void kernel_cols(const kx_layer *l, int64_t ox, int64_t *j0, int64_t *j1) {
  int64_t x0 = ox * l->strides[1] - l->pad[1], w = l->in.d[1];
  *j0 = x0 < 0 ? -x0 : 0;
  *j1 = x0 + l->kernel[1] > w ? w - x0 : l->kernel[1];
  if (*j1 < *j0) *j1 = *j0;
}

typedef struct im2col_job {
  const kx_layer *l;
  const float *x; /* im2col: the images; col2im: the patch gradients */
  float *out;     /* im2col: the patches; col2im: the image gradients */
} im2col_job;

/* Samples [begin, end): row (oy, ox) of a sample's patch matrix holds the window at that output
 * pixel, kernel row by kernel row, each a run of (kernel columns x channels) that is one copy
 * from the NHWC image, zeros where the window hangs over the padding. */
static void im2col_range(void *arg, int64_t begin, int64_t end) {
  const im2col_job *j = arg;
  const kx_layer *l = j->l;
  int64_t h = l->in.d[0], w = l->in.d[1], c = l->in.rank == 3 ? l->in.d[2] : 1, kh = l->kernel[0], kw = l->kernel[1];
  int64_t oh = l->out.d[0], ow = l->out.d[1], k = kh * kw * c;
  for (int64_t n = begin; n < end; n++) {
    const float *x = j->x + n * h * w * c;
    float *col = j->out + n * oh * ow * k;
    for (int64_t oy = 0; oy < oh; oy++)
      for (int64_t ox = 0; ox < ow; ox++) {
        float *row = col + (oy * ow + ox) * k;
        int64_t j0, j1, x0 = ox * l->strides[1] - l->pad[1];
        kernel_cols(l, ox, &j0, &j1);
        for (int64_t i = 0; i < kh; i++) {
          int64_t iy = oy * l->strides[0] - l->pad[0] + i;
          float *dst = row + i * kw * c;
          if (iy < 0 || iy >= h) {
            memset(dst, 0, (size_t)(kw * c) * sizeof(float));
            continue;
          }
          if (j0 > 0) memset(dst, 0, (size_t)(j0 * c) * sizeof(float));
          if (j1 > j0) memcpy(dst + j0 * c, x + (iy * w + x0 + j0) * c, (size_t)((j1 - j0) * c) * sizeof(float));
          if (j1 < kw) memset(dst + j1 * c, 0, (size_t)((kw - j1) * c) * sizeof(float));
        }
      }
  }
}

/* The adjoint of im2col: each patch gradient is added back onto the pixels it was copied from. */
static void col2im_range(void *arg, int64_t begin, int64_t end) {
  const im2col_job *j = arg;
  const kx_layer *l = j->l;
  int64_t h = l->in.d[0], w = l->in.d[1], c = l->in.rank == 3 ? l->in.d[2] : 1, kh = l->kernel[0], kw = l->kernel[1];
  int64_t oh = l->out.d[0], ow = l->out.d[1], k = kh * kw * c;
  for (int64_t n = begin; n < end; n++) {
    float *dx = j->out + n * h * w * c;
    const float *col = j->x + n * oh * ow * k;
    memset(dx, 0, (size_t)(h * w * c) * sizeof(float));
    for (int64_t oy = 0; oy < oh; oy++)
      for (int64_t ox = 0; ox < ow; ox++) {
        const float *row = col + (oy * ow + ox) * k;
        int64_t j0, j1, x0 = ox * l->strides[1] - l->pad[1];
        kernel_cols(l, ox, &j0, &j1);
        for (int64_t i = 0; i < kh; i++) {
          int64_t iy = oy * l->strides[0] - l->pad[0] + i;
          if (iy < 0 || iy >= h || j1 == j0) continue;
          float *restrict dst = dx + (iy * w + x0 + j0) * c;
          const float *restrict src = row + (i * kw + j0) * c;
          for (int64_t t = 0; t < (j1 - j0) * c; t++) dst[t] += src[t];
        }
      }
  }
}

static void run_samples(const kx_pass *p, kiln_range_fn fn, const kx_layer *l, const float *x, float *out) {
  im2col_job j = {l, x, out};
  kiln_parallel_for(p->pool, p->threads, p->batch, (double)(l->out.d[0] * l->out.d[1] * patch_size(l)), fn, &j);
}

static void forward(const kx_pass *p, kx_layer *l, const float *x, float *y) {
  int64_t k = patch_size(l), f = l->filters, rows = p->batch * l->out.d[0] * l->out.d[1];
  kx_ctx c = {.pool = p->pool, .threads = p->threads};
  const float *col = x;
  if (!direct(l)) {
    run_samples(p, im2col_range, l, x, p->scratch);
    col = p->scratch;
  }
  static const kx_activation relu = {.kind = KX_ACT_RELU};
  kx_gemm g = {.M = rows, .N = f, .K = k, .A = col, .lda = k, .B = l->params, .ldb = f, .alpha = 1, .C = y, .ldc = f,
               .col_bias = l->use_bias ? l->params + k * f : NULL, .act = l->act == KX_ACTFN_RELU ? &relu : NULL};
  kx_gemm_run(&c, &g, NULL);
  if (l->act != KX_ACTFN_RELU) kx_actfn_forward(l->act, y, rows, f);
}

static void backward(const kx_pass *p, kx_layer *l, const float *x, const float *y, float *dy, float *dx) {
  int64_t k = patch_size(l), f = l->filters, rows = p->batch * l->out.d[0] * l->out.d[1];
  kx_ctx c = {.pool = p->pool, .threads = p->threads};
  kx_actfn_backward(l->act, y, dy, rows, f);
  const float *col = x;
  if (!direct(l)) { /* recomputed rather than saved: the patches are kh * kw times the input */
    run_samples(p, im2col_range, l, x, p->scratch);
    col = p->scratch;
  }
  /* dW[k, f] = col^T . dz */
  kx_sgemm(&c, 1, 0, k, f, rows, 1, col, k, dy, f, 0, l->grads, f);
  if (l->use_bias) {
    float *restrict db = l->grads + k * f;
    memset(db, 0, (size_t)f * sizeof *db);
    for (int64_t r = 0; r < rows; r++)
      for (int64_t j = 0; j < f; j++) db[j] += dy[r * f + j];
  }
  if (!dx) return;
  /* dcol[rows, k] = dz . W^T, over the patches (no longer needed), then folded back onto dx */
  if (direct(l)) {
    kx_sgemm(&c, 0, 1, rows, k, f, 1, dy, f, l->params, f, 0, dx, k);
    return;
  }
  kx_sgemm(&c, 0, 1, rows, k, f, 1, dy, f, l->params, f, 0, p->scratch, k);
  run_samples(p, col2im_range, l, p->scratch, dx);
}

const kx_layer_ops kx_layer_conv2d = {.name = "conv2d", .configure = configure, .build = build, .init = init,
                                      .forward = forward, .backward = backward};
