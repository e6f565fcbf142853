/* Activation functions (fused into dense and conv2d, or standalone layers) and their derivatives,
 * which every supported activation can take from its output alone, so backward needs no copy of
 * the pre-activation. */
#include "train/train.h"

#include "data/data.h"

#include <math.h>
#include <string.h>

#include <cjson/cJSON.h>

static const char *const names[] = {"linear", "relu", "sigmoid", "tanh", "softmax"};

static int parse(const char *name) {
  for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++)
    if (strcmp(name, names[i]) == 0) return i;
  return -1;
}

kiln_status kx_actfn_read(const cJSON *config, const char *where, int required, kx_actfn *out) {
  const char *name = "linear";
  kiln_status s = kx_spec_string(config, where, "activation", required, &name);
  if (s) return s;
  int a = parse(name);
  if (a < 0) return kiln_error(KILN_INVALID_ARGUMENT, "%s: unknown activation '%s' (known: linear, relu, sigmoid, tanh, softmax)", where, name);
  *out = (kx_actfn)a;
  return NULL;
}

void kx_actfn_forward(kx_actfn a, float *y, int64_t rows, int64_t width) {
  int64_t n = rows * width;
  switch (a) {
  case KX_ACTFN_LINEAR: break;
  case KX_ACTFN_RELU:
    for (int64_t i = 0; i < n; i++) y[i] = y[i] > 0 ? y[i] : 0;
    break;
  case KX_ACTFN_SIGMOID:
    for (int64_t i = 0; i < n; i++) y[i] = 1.0f / (1.0f + expf(-y[i]));
    break;
  case KX_ACTFN_TANH:
    for (int64_t i = 0; i < n; i++) y[i] = tanhf(y[i]);
    break;
  case KX_ACTFN_SOFTMAX:
    for (int64_t r = 0; r < rows; r++) {
      float *row = y + r * width, max = row[0], sum = 0;
      for (int64_t j = 1; j < width; j++) max = row[j] > max ? row[j] : max;
      for (int64_t j = 0; j < width; j++) sum += row[j] = expf(row[j] - max);
      for (int64_t j = 0; j < width; j++) row[j] /= sum;
    }
    break;
  }
}

void kx_actfn_backward(kx_actfn a, const float *y, float *dy, int64_t rows, int64_t width) {
  int64_t n = rows * width;
  switch (a) {
  case KX_ACTFN_LINEAR: break;
  case KX_ACTFN_RELU:
    for (int64_t i = 0; i < n; i++) dy[i] = y[i] > 0 ? dy[i] : 0;
    break;
  case KX_ACTFN_SIGMOID:
    for (int64_t i = 0; i < n; i++) dy[i] *= y[i] * (1 - y[i]);
    break;
  case KX_ACTFN_TANH:
    for (int64_t i = 0; i < n; i++) dy[i] *= 1 - y[i] * y[i];
    break;
  case KX_ACTFN_SOFTMAX: /* dz = y * (dy - sum(dy * y)) per row */
    for (int64_t r = 0; r < rows; r++) {
      const float *yr = y + r * width;
      float *dr = dy + r * width, dot = 0;
      for (int64_t j = 0; j < width; j++) dot += dr[j] * yr[j];
      for (int64_t j = 0; j < width; j++) dr[j] = yr[j] * (dr[j] - dot);
    }
    break;
  }
}

/* Widens y in blocks on the stack: no fp32 copy of a whole activation. */
#define BLOCK 512

void kx_actfn_backward16(kx_actfn a, int bf16, const uint16_t *y, float *dy, int64_t rows, int64_t width) {
  kx_precision p = bf16 ? KX_BF16 : KX_FP16;
  float block[BLOCK];
  if (a == KX_ACTFN_LINEAR) return;
  if (a != KX_ACTFN_SOFTMAX) { /* elementwise */
    for (int64_t i = 0, n = rows * width; i < n; i += BLOCK) {
      int64_t m = n - i < BLOCK ? n - i : BLOCK;
      kx_precision_load(p, block, y + i, m);
      kx_actfn_backward(a, block, dy + i, 1, m);
    }
    return;
  }
  for (int64_t r = 0; r < rows; r++) { /* dz = y * (dy - sum(dy * y)) per row, in two passes */
    const uint16_t *yr = y + r * width;
    float *dr = dy + r * width, dot = 0;
    for (int64_t j = 0; j < width; j += BLOCK) {
      int64_t m = width - j < BLOCK ? width - j : BLOCK;
      kx_precision_load(p, block, yr + j, m);
      for (int64_t k = 0; k < m; k++) dot += dr[j + k] * block[k];
    }
    for (int64_t j = 0; j < width; j += BLOCK) {
      int64_t m = width - j < BLOCK ? width - j : BLOCK;
      kx_precision_load(p, block, yr + j, m);
      for (int64_t k = 0; k < m; k++) dr[j + k] = block[k] * (dr[j + k] - dot);
    }
  }
}

/* ---------------------------------------------------------------- standalone activation layers */

static kiln_status configure(kx_layer *l, const cJSON *config, const char *where) {
  int general = strcmp(l->ops->name, "activation") == 0;
  kiln_status s = kx_spec_keys(config, where, general ? (const char *const[]){"activation", NULL}
                                                       : (const char *const[]){NULL});
  if (s || general) return s ? s : kx_actfn_read(config, where, 1, &l->act);
  l->act = (kx_actfn)parse(l->ops->name); /* relu, sigmoid, ...: the layer's name is the activation */
  return NULL;
}

static kiln_status build(kx_layer *l) {
  l->out = l->in;
  return NULL;
}

static void forward(const kx_pass *p, kx_layer *l, const float *x, float *y) {
  int64_t width = l->in.d[l->in.rank - 1];
  memcpy(y, x, (size_t)(p->batch * kx_shape_size(&l->in)) * sizeof *y);
  kx_actfn_forward(l->act, y, p->batch * kx_shape_size(&l->in) / width, width);
}

static void backward(const kx_pass *p, kx_layer *l, const float *x, const float *y, float *dy, float *dx) {
  int64_t width = l->in.d[l->in.rank - 1], n = p->batch * kx_shape_size(&l->in);
  kx_actfn_backward(l->act, y, dy, n / width, width);
  if (dx) memcpy(dx, dy, (size_t)n * sizeof *dx);
}

#define ACTIVATION_LAYER(var, keras) \
  const kx_layer_ops var = {.name = keras, .configure = configure, .build = build, .forward = forward, .backward = backward};
ACTIVATION_LAYER(kx_layer_activation, "activation")
ACTIVATION_LAYER(kx_layer_relu, "relu")
ACTIVATION_LAYER(kx_layer_sigmoid, "sigmoid")
ACTIVATION_LAYER(kx_layer_tanh, "tanh")
ACTIVATION_LAYER(kx_layer_softmax, "softmax")
