/* Pooling on NHWC images, forward and backward side by side: max_pooling2d (which saves where
 * each maximum came from), average_pooling2d (TF's "same": padded cells are not counted) and
 * global_average_pooling2d. Channels are the innermost loop, so every window step is a run of
 * contiguous floats the compiler vectorizes. */
#include "train/train.h"

#include "data/data.h"

#include <math.h>
#include <string.h>

#include <cjson/cJSON.h>

/* The arg-max is saved as the cell's index inside its window, a float: exact while a window has
 * at most 2^24 cells. */
#define MAX_POOL 4096

static kiln_status configure(kx_layer *l, const cJSON *config, const char *where) {
  kiln_status s = kx_spec_keys(config, where, (const char *const[]){"pool_size", "strides", "padding", NULL});
  l->kernel[0] = l->kernel[1] = 2;
  l->strides[0] = l->strides[1] = 0;
  if (!s) s = kx_spec_pair(config, where, "pool_size", 0, 1, MAX_POOL, l->kernel);
  if (!s) s = kx_spec_pair(config, where, "strides", 0, 1, MAX_POOL, l->strides);
  if (!s) s = kx_spec_padding(l, config, where);
  if (s) return s;
  if (!l->strides[0]) { /* Keras: strides default to the pool size */
    l->strides[0] = l->kernel[0];
    l->strides[1] = l->kernel[1];
  }
  return NULL;
}

static kiln_status build(kx_layer *l) {
  int64_t channels;
  kiln_status s = kx_window_build(l, "pool", &channels);
  if (s) return s;
  if (strcmp(l->ops->name, "max_pooling2d") == 0) l->saved_per_sample = kx_shape_size(&l->out); /* the arg-max */
  return NULL;
}

/* Window rows [*i0, *i1) and columns [*j0, *j1) that lie inside the image at output (oy, ox). */
static void window(const kx_layer *l, int64_t oy, int64_t ox, int64_t *i0, int64_t *i1, int64_t *j0, int64_t *j1) {
  int64_t y0 = oy * l->strides[0] - l->pad[0], x0 = ox * l->strides[1] - l->pad[1];
  *i0 = y0 < 0 ? -y0 : 0;
  *i1 = y0 + l->kernel[0] > l->in.d[0] ? l->in.d[0] - y0 : l->kernel[0];
  *j0 = x0 < 0 ? -x0 : 0;
  *j1 = x0 + l->kernel[1] > l->in.d[1] ? l->in.d[1] - x0 : l->kernel[1];
}

typedef struct pool_job {
  const kx_layer *l;
  const float *x, *dy;
  float *y, *dx;
} pool_job;

/* Channels of one image: 1 for [H, W]. */
static int64_t channels(const kx_layer *l) { return l->in.rank == 3 ? l->in.d[2] : 1; }

/* Every window holds at least one image cell (TF's padding is smaller than the window), so the
 * maximum starts from the first one and a window of NaNs still points inside the image. */
static void max_forward_range(void *arg, int64_t begin, int64_t end) {
  const pool_job *jb = arg;
  const kx_layer *l = jb->l;
  int64_t w = l->in.d[1], c = channels(l), oh = l->out.d[0], ow = l->out.d[1], pw = l->kernel[1];
  for (int64_t n = begin; n < end; n++) {
    const float *x = jb->x + n * l->in.d[0] * w * c;
    for (int64_t oy = 0; oy < oh; oy++)
      for (int64_t ox = 0; ox < ow; ox++) {
        int64_t i0, i1, j0, j1, o = ((n * oh + oy) * ow + ox) * c;
        int64_t y0 = oy * l->strides[0] - l->pad[0], x0 = ox * l->strides[1] - l->pad[1];
        float *restrict y = jb->y + o, *restrict at = l->saved + o;
        window(l, oy, ox, &i0, &i1, &j0, &j1);
        const float *first = x + ((y0 + i0) * w + x0 + j0) * c;
        for (int64_t t = 0; t < c; t++) {
          y[t] = first[t];
          at[t] = (float)(i0 * pw + j0);
        }
        for (int64_t i = i0; i < i1; i++)
          for (int64_t j = j0; j < j1; j++) {
            const float *restrict xi = x + ((y0 + i) * w + x0 + j) * c;
            float cell = (float)(i * pw + j);
            /* The cell index moves by a 0-or-1 factor (exact on these small integers) rather than
             * a second select, which gcc would not if-convert, leaving the loop scalar. */
            for (int64_t t = 0; t < c; t++) {
              float v = xi[t], best = y[t], more = (float)(v > best);
              y[t] = v > best ? v : best;
              at[t] += more * (cell - at[t]);
            }
          }
      }
  }
}

static void max_backward_range(void *arg, int64_t begin, int64_t end) {
  const pool_job *jb = arg;
  const kx_layer *l = jb->l;
  int64_t h = l->in.d[0], w = l->in.d[1], c = channels(l), oh = l->out.d[0], ow = l->out.d[1], pw = l->kernel[1];
  for (int64_t n = begin; n < end; n++) {
    float *dx = jb->dx + n * h * w * c;
    memset(dx, 0, (size_t)(h * w * c) * sizeof(float));
    for (int64_t oy = 0; oy < oh; oy++)
      for (int64_t ox = 0; ox < ow; ox++) {
        int64_t o = ((n * oh + oy) * ow + ox) * c;
        int64_t y0 = oy * l->strides[0] - l->pad[0], x0 = ox * l->strides[1] - l->pad[1];
        for (int64_t t = 0; t < c; t++) {
          int64_t cell = (int64_t)l->saved[o + t];
          dx[((y0 + cell / pw) * w + x0 + cell % pw) * c + t] += jb->dy[o + t];
        }
      }
  }
}

/* Average over the window's image cells only: in "valid" that is the whole window, in "same"
 * the cells that are not padding (TF's count, unlike PyTorch's count_include_pad default). */
static void avg_forward_range(void *arg, int64_t begin, int64_t end) {
  const pool_job *jb = arg;
  const kx_layer *l = jb->l;
  int64_t w = l->in.d[1], c = channels(l), oh = l->out.d[0], ow = l->out.d[1];
  for (int64_t n = begin; n < end; n++) {
    const float *x = jb->x + n * l->in.d[0] * w * c;
    for (int64_t oy = 0; oy < oh; oy++)
      for (int64_t ox = 0; ox < ow; ox++) {
        int64_t i0, i1, j0, j1;
        int64_t y0 = oy * l->strides[0] - l->pad[0], x0 = ox * l->strides[1] - l->pad[1];
        float *restrict y = jb->y + ((n * oh + oy) * ow + ox) * c;
        window(l, oy, ox, &i0, &i1, &j0, &j1);
        memset(y, 0, (size_t)c * sizeof(float));
        for (int64_t i = i0; i < i1; i++)
          for (int64_t j = j0; j < j1; j++) {
            const float *restrict xi = x + ((y0 + i) * w + x0 + j) * c;
            for (int64_t t = 0; t < c; t++) y[t] += xi[t];
          }
        float scale = 1.0f / (float)((i1 - i0) * (j1 - j0));
        for (int64_t t = 0; t < c; t++) y[t] *= scale;
      }
  }
}

static void avg_backward_range(void *arg, int64_t begin, int64_t end) {
  const pool_job *jb = arg;
  const kx_layer *l = jb->l;
  int64_t h = l->in.d[0], w = l->in.d[1], c = channels(l), oh = l->out.d[0], ow = l->out.d[1];
  for (int64_t n = begin; n < end; n++) {
    float *dx = jb->dx + n * h * w * c;
    memset(dx, 0, (size_t)(h * w * c) * sizeof(float));
    for (int64_t oy = 0; oy < oh; oy++)
      for (int64_t ox = 0; ox < ow; ox++) {
        int64_t i0, i1, j0, j1;
        int64_t y0 = oy * l->strides[0] - l->pad[0], x0 = ox * l->strides[1] - l->pad[1];
        const float *restrict dy = jb->dy + ((n * oh + oy) * ow + ox) * c;
        window(l, oy, ox, &i0, &i1, &j0, &j1);
        float scale = 1.0f / (float)((i1 - i0) * (j1 - j0));
        for (int64_t i = i0; i < i1; i++)
          for (int64_t j = j0; j < j1; j++) {
            float *restrict dxi = dx + ((y0 + i) * w + x0 + j) * c;
            for (int64_t t = 0; t < c; t++) dxi[t] += dy[t] * scale;
          }
      }
  }
}

static void run_samples(const kx_pass *p, kiln_range_fn fn, const kx_layer *l, const float *x, float *y,
                        const float *dy, float *dx) {
  pool_job j = {l, x, dy, y, dx};
  kiln_parallel_for(p->pool, p->threads, p->batch, (double)(kx_shape_size(&l->out) * l->kernel[0] * l->kernel[1]), fn, &j);
}

static void max_forward(const kx_pass *p, kx_layer *l, const float *x, float *y) {
  run_samples(p, max_forward_range, l, x, y, NULL, NULL);
}

static void max_backward(const kx_pass *p, kx_layer *l, const float *x, const float *y, float *dy, float *dx) {
  if (dx) run_samples(p, max_backward_range, l, x, NULL, dy, dx);
}

static void avg_forward(const kx_pass *p, kx_layer *l, const float *x, float *y) {
  run_samples(p, avg_forward_range, l, x, y, NULL, NULL);
}

static void avg_backward(const kx_pass *p, kx_layer *l, const float *x, const float *y, float *dy, float *dx) {
  if (dx) run_samples(p, avg_backward_range, l, x, NULL, dy, dx);
}

const kx_layer_ops kx_layer_max_pooling2d = {.name = "max_pooling2d", .configure = configure, .build = build,
                                             .forward = max_forward, .backward = max_backward};
const kx_layer_ops kx_layer_average_pooling2d = {.name = "average_pooling2d", .configure = configure, .build = build,
                                                 .forward = avg_forward, .backward = avg_backward};

/* ---------------------------------------------------------------- global_average_pooling2d */

static kiln_status configure_global(kx_layer *l, const cJSON *config, const char *where) {
  return kx_spec_keys(config, where, (const char *const[]){NULL});
}

static kiln_status build_global(kx_layer *l) {
  if (l->in.rank < 2)
    return kiln_error(KILN_INVALID_ARGUMENT, "global_average_pooling2d takes images [H, W, C] (or [H, W]) per sample, got a vector of %lld values",
                      (long long)l->in.d[0]);
  int64_t c = channels(l);
  l->out = (kx_shape){1, {c}};
  return NULL;
}

static void global_forward(const kx_pass *p, kx_layer *l, const float *x, float *y) {
  int64_t hw = l->in.d[0] * l->in.d[1], c = channels(l);
  float scale = 1.0f / (float)hw;
  for (int64_t n = 0; n < p->batch; n++) {
    float *restrict yn = y + n * c;
    memset(yn, 0, (size_t)c * sizeof(float));
    for (int64_t i = 0; i < hw; i++) {
      const float *restrict xi = x + (n * hw + i) * c;
      for (int64_t t = 0; t < c; t++) yn[t] += xi[t];
    }
    for (int64_t t = 0; t < c; t++) yn[t] *= scale;
  }
}

static void global_backward(const kx_pass *p, kx_layer *l, const float *x, const float *y, float *dy, float *dx) {
  int64_t hw = l->in.d[0] * l->in.d[1], c = channels(l);
  float scale = 1.0f / (float)hw;
  for (int64_t n = 0; dx && n < p->batch; n++)
    for (int64_t i = 0; i < hw; i++) {
      float *restrict dxi = dx + (n * hw + i) * c;
      const float *restrict dyn = dy + n * c;
      for (int64_t t = 0; t < c; t++) dxi[t] = dyn[t] * scale;
    }
}

const kx_layer_ops kx_layer_global_average_pooling2d = {.name = "global_average_pooling2d", .configure = configure_global,
                                                        .build = build_global, .forward = global_forward,
                                                        .backward = global_backward};
