/* Layers that only change how a sample's floats are seen (flatten and reshape: views, no pass
 * runs), plus dropout, which scales what it keeps. */
#include "train/train.h"

#include "data/data.h"

#include <string.h>

#include <cjson/cJSON.h>

static kiln_status configure_flatten(kx_layer *l, const cJSON *config, const char *where) {
  return kx_spec_keys(config, where, (const char *const[]){NULL});
}

static kiln_status build_flatten(kx_layer *l) {
  l->out = (kx_shape){1, {kx_shape_size(&l->in)}};
  return NULL;
}

static kiln_status configure_reshape(kx_layer *l, const cJSON *config, const char *where) {
  kiln_status s = kx_spec_keys(config, where, (const char *const[]){"target_shape", NULL});
  return s ? s : kx_shape_read(config, where, "target_shape", &l->target);
}

static kiln_status build_reshape(kx_layer *l) {
  if (kx_shape_size(&l->target) != kx_shape_size(&l->in))
    return kiln_error(KILN_INVALID_ARGUMENT, "reshape to %lld values from a sample of %lld values",
                      (long long)kx_shape_size(&l->target), (long long)kx_shape_size(&l->in));
  l->out = l->target;
  return NULL;
}

/* Views: the network passes their input on as their output, and the gradient back unchanged. */
const kx_layer_ops kx_layer_flatten = {.name = "flatten", .view = 1, .configure = configure_flatten, .build = build_flatten};
const kx_layer_ops kx_layer_reshape = {.name = "reshape", .view = 1, .configure = configure_reshape, .build = build_reshape};

/* ---------------------------------------------------------------- dropout */

static kiln_status configure_dropout(kx_layer *l, const cJSON *config, const char *where) {
  double rate = 0;
  kiln_status s = kx_spec_keys(config, where, (const char *const[]){"rate", NULL});
  if (!s) s = kx_spec_double(config, where, "rate", 1, &rate);
  if (s) return s;
  if (!(rate >= 0 && rate < 1)) return kiln_error(KILN_INVALID_ARGUMENT, "%s: 'rate' must be in [0, 1), got %g", where, rate);
  l->rate = (float)rate;
  return NULL;
}

/* Saves the mask it applied: 1 / (1 - rate) where kept, 0 where dropped (inverted dropout, as
 * Keras: inference is the identity). */
static kiln_status build_dropout(kx_layer *l) {
  l->out = l->in;
  l->saved_per_sample = kx_shape_size(&l->in);
  return NULL;
}

static void forward_dropout(const kx_pass *p, kx_layer *l, const float *x, float *y) {
  int64_t n = p->batch * kx_shape_size(&l->in);
  if (!p->training || l->rate == 0) {
    memcpy(y, x, (size_t)n * sizeof *y);
    for (int64_t i = 0; p->training && i < n; i++) l->saved[i] = 1;
    return;
  }
  float keep = 1 / (1 - l->rate);
  for (int64_t i = 0; i < n; i++) {
    l->saved[i] = kx_rng_uniform(p->rng) < l->rate ? 0 : keep;
    y[i] = x[i] * l->saved[i];
  }
}

static void backward_dropout(const kx_pass *p, kx_layer *l, const float *x, const float *y, float *dy, float *dx) {
  int64_t n = p->batch * kx_shape_size(&l->in);
  for (int64_t i = 0; dx && i < n; i++) dx[i] = dy[i] * l->saved[i];
}

const kx_layer_ops kx_layer_dropout = {.name = "dropout", .configure = configure_dropout, .build = build_dropout,
                                       .forward = forward_dropout, .backward = backward_dropout};
