/* batch_normalization over the last axis (channels), forward and backward side by side: batch
 * statistics while training (moving averages updated as Keras does), the moving statistics at
 * inference. Per-channel sums run over rows of C contiguous floats, accumulated in double. */
#include "train/train.h"

#include "data/data.h"

#include <math.h>
#include <string.h>

#include <cjson/cJSON.h>

static kiln_status configure(kx_layer *l, const cJSON *config, const char *where) {
  kiln_status s = kx_spec_keys(config, where, (const char *const[]){"momentum", "epsilon", "center", "scale", NULL});
  double momentum = 0.99, epsilon = 0.001;
  l->center = l->scale = 1;
  if (!s) s = kx_spec_double(config, where, "momentum", 0, &momentum);
  if (!s) s = kx_spec_double(config, where, "epsilon", 0, &epsilon);
  if (!s) s = kx_spec_bool(config, where, "center", &l->center);
  if (!s) s = kx_spec_bool(config, where, "scale", &l->scale);
  if (s) return s;
  if (!(momentum >= 0 && momentum <= 1))
    return kiln_error(KILN_INVALID_ARGUMENT, "%s.momentum: expected a number in [0, 1], got %g", where, momentum);
  if (!(epsilon > 0 && epsilon <= 1))
    return kiln_error(KILN_INVALID_ARGUMENT, "%s.epsilon: expected a number in (0, 1], got %g", where, epsilon);
  l->momentum = (float)momentum;
  l->epsilon = (float)epsilon;
  return NULL;
}

/* Channels: the last axis; an image [H, W] has one. */
static int64_t channels(const kx_layer *l) { return l->in.rank == 2 ? 1 : l->in.d[l->in.rank - 1]; }

/* Parameters gamma[C] (when scale) then beta[C] (when center), Keras' order; state
 * moving_mean[C] then moving_variance[C]. Saved: x_hat for the batch, then the per-channel mean
 * and 1 / sqrt(var + epsilon) the pass used (2C floats, which one sample's share covers). Scratch
 * (one sample's share is enough): two per-channel double sums, then three float coefficients. */
static kiln_status build(kx_layer *l) {
  int64_t c = channels(l);
  l->out = l->in;
  l->n_params = (l->scale + l->center) * c;
  l->n_state = 2 * c;
  l->saved_per_sample = kx_shape_size(&l->in) + 2 * c;
  l->scratch_per_sample = 7 * c;
  return NULL;
}

static void init(kx_layer *l, kx_rng *rng) {
  (void)rng;
  int64_t c = channels(l);
  for (int64_t t = 0; t < c; t++) {
    if (l->scale) l->params[t] = 1;
    if (l->center) l->params[(l->scale ? c : 0) + t] = 0;
    l->state[t] = 0;
    l->state[c + t] = 1;
  }
}

/* y = x_hat * gamma + beta with x_hat = (x - mean) * inv_std, per channel; every pointer restrict
 * because gcc's cheap cost model vectorizes no loop that would need alias checks. */
static void norm_rows(const float *restrict x, float *restrict y, float *restrict xhat, const float *restrict gamma,
                      const float *restrict beta, const float *restrict mean, const float *restrict inv, int64_t rows,
                      int64_t c) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t t = 0; t < c; t++) {
      float h = (x[r * c + t] - mean[t]) * inv[t];
      xhat[r * c + t] = h;
      y[r * c + t] = h * gamma[t] + beta[t];
    }
}

static void forward(const kx_pass *p, kx_layer *l, const float *x, float *y) {
  int64_t c = channels(l), n = p->batch * kx_shape_size(&l->in), rows = n / c;
  float *restrict xhat = l->saved, *restrict mean = l->saved + n, *restrict inv = mean + c;
  float *restrict moving_mean = l->state, *restrict moving_var = l->state + c;
  if (p->training) {
    double *restrict sum = (double *)p->scratch, *restrict sq = sum + c;
    memset(sum, 0, (size_t)(2 * c) * sizeof(double));
    for (int64_t r = 0; r < rows; r++)
      for (int64_t t = 0; t < c; t++) sum[t] += x[r * c + t];
    for (int64_t t = 0; t < c; t++) sum[t] /= (double)rows;
    for (int64_t r = 0; r < rows; r++) /* two passes: no cancellation in E[x^2] - E[x]^2 */
      for (int64_t t = 0; t < c; t++) {
        double d = x[r * c + t] - sum[t];
        sq[t] += d * d;
      }
    for (int64_t t = 0; t < c; t++) {
      double var = sq[t] / (double)rows; /* biased, for normalizing and (as Keras) for the moving average */
      mean[t] = (float)sum[t];
      inv[t] = (float)(1 / sqrt(var + l->epsilon));
      if (p->recomputing) continue; /* the statistics moved when this batch first went forward */
      moving_mean[t] = (float)(moving_mean[t] * l->momentum + sum[t] * (1 - l->momentum));
      moving_var[t] = (float)(moving_var[t] * l->momentum + var * (1 - l->momentum));
    }
  } else {
    for (int64_t t = 0; t < c; t++) {
      mean[t] = moving_mean[t];
      inv[t] = 1 / sqrtf(moving_var[t] + l->epsilon);
    }
  }
  /* Scratch is free again: the per-channel coefficients, gamma 1 and beta 0 where not trained. */
  float *restrict gamma = p->scratch, *restrict beta = gamma + c, *restrict mu = beta + c, *restrict is = mu + c;
  for (int64_t t = 0; t < c; t++) {
    gamma[t] = l->scale ? l->params[t] : 1;
    beta[t] = l->center ? l->params[(l->scale ? c : 0) + t] : 0;
    mu[t] = mean[t];
    is[t] = inv[t];
  }
  norm_rows(x, y, xhat, gamma, beta, mu, is, rows, c);
}

/* With N rows: dgamma = sum(dy * x_hat), dbeta = sum(dy), and, since the batch statistics depend
 * on every row, dx = gamma * inv_std * (dy - mean(dy) - x_hat * mean(dy * x_hat)); at inference the
 * statistics are constants and dx = gamma * inv_std * dy. */
static void backward(const kx_pass *p, kx_layer *l, const float *x, const float *y, float *dy, float *dx) {
  int64_t c = channels(l), n = p->batch * kx_shape_size(&l->in), rows = n / c;
  const float *restrict xhat = l->saved, *restrict inv = l->saved + n + c;
  double *restrict sum_dy = (double *)p->scratch, *restrict sum_dyh = sum_dy + c;
  memset(sum_dy, 0, (size_t)(2 * c) * sizeof(double));
  for (int64_t r = 0; r < rows; r++)
    for (int64_t t = 0; t < c; t++) {
      sum_dy[t] += dy[r * c + t];
      sum_dyh[t] += dy[r * c + t] * xhat[r * c + t];
    }
  if (l->scale)
    for (int64_t t = 0; t < c; t++) l->grads[t] = (float)sum_dyh[t];
  if (l->center)
    for (int64_t t = 0; t < c; t++) l->grads[(l->scale ? c : 0) + t] = (float)sum_dy[t];
  if (!dx) return;
  /* dx = k * dy - m1 - x_hat * m2 with per-channel floats after the sums */
  float *restrict k = p->scratch + 4 * c, *restrict m1 = k + c, *restrict m2 = m1 + c;
  for (int64_t t = 0; t < c; t++) {
    double g = (l->scale ? l->params[t] : 1) * (double)inv[t];
    k[t] = (float)g;
    m1[t] = p->training ? (float)(g * sum_dy[t] / (double)rows) : 0;
    m2[t] = p->training ? (float)(g * sum_dyh[t] / (double)rows) : 0;
  }
  for (int64_t r = 0; r < rows; r++)
    for (int64_t t = 0; t < c; t++) dx[r * c + t] = k[t] * dy[r * c + t] - m1[t] - xhat[r * c + t] * m2[t];
}

const kx_layer_ops kx_layer_batch_normalization = {.name = "batch_normalization", .configure = configure, .build = build,
                                                   .init = init, .forward = forward, .backward = backward};
