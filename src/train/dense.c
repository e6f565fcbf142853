/* dense: y = act(x . W + b) with Keras' kernel layout W[in, units], forward and backward side by
 * side. Both passes are GEMMs on kiln's own kernels (ops/gemm.h), split across the pool; under
 * mixed precision the GEMMs read the 16-bit activations themselves while packing them. */
#include "train/train.h"

#include "data/data.h"
#include "ops/gemm.h"

#include <math.h>
#include <string.h>

#include <cjson/cJSON.h>

static kiln_status configure(kx_layer *l, const cJSON *config, const char *where) {
  kiln_status s = kx_spec_keys(config, where, (const char *const[]){"units", "activation", "use_bias", NULL});
  l->use_bias = 1;
  if (!s) s = kx_spec_int(config, where, "units", 1, 1, 1 << 20, &l->units);
  if (!s) s = kx_actfn_read(config, where, 0, &l->act);
  if (!s) s = kx_spec_bool(config, where, "use_bias", &l->use_bias);
  return s;
}

/* Keras' Dense works on the last axis; kiln's takes a flat feature vector (put a flatten first). */
static kiln_status build(kx_layer *l) {
  if (l->in.rank != 1)
    return kiln_error(KILN_INVALID_ARGUMENT, "dense takes a vector per sample, got rank %d (add a flatten layer before it)", l->in.rank);
  l->out = (kx_shape){1, {l->units}};
  l->n_params = l->in.d[0] * l->units + (l->use_bias ? l->units : 0);
  return NULL;
}

/* Glorot uniform kernel, zero bias (Keras' defaults). */
static void init(kx_layer *l, kx_rng *rng) {
  int64_t n = l->in.d[0] * l->units;
  float limit = sqrtf(6.0f / (float)(l->in.d[0] + l->units));
  for (int64_t i = 0; i < n; i++) l->params[i] = (2 * kx_rng_uniform(rng) - 1) * limit;
  if (l->use_bias) memset(l->params + n, 0, (size_t)l->units * sizeof(float));
}

static void forward(const kx_pass *p, kx_layer *l, const float *x, float *y) {
  int64_t in = l->in.d[0], units = l->units;
  kx_ctx c = {.pool = p->pool, .threads = p->threads};
  const float *w = l->params, *b = l->use_bias ? l->params + in * units : NULL;
  static const kx_activation relu = {.kind = KX_ACT_RELU};
  kx_gemm g = {.M = p->batch, .N = units, .K = in, .A = x, .A16 = p->x16, .a16_bf16 = p->bf16, .lda = in, .B = w,
               .ldb = units, .alpha = 1, .C = y, .ldc = units, .col_bias = b, .act = l->act == KX_ACTFN_RELU ? &relu : NULL};
  kx_gemm_run(&c, &g, NULL); /* no workspace: packs on the stack; the bias and a relu in its store */
  if (l->act != KX_ACTFN_RELU) kx_actfn_forward(l->act, y, p->batch, units);
}

static void backward(const kx_pass *p, kx_layer *l, const float *x, const float *y, float *dy, float *dx) {
  int64_t in = l->in.d[0], units = l->units, batch = p->batch;
  kx_ctx c = {.pool = p->pool, .threads = p->threads};
  if (p->y16) kx_actfn_backward16(l->act, p->bf16, p->y16, dy, batch, units);
  else kx_actfn_backward(l->act, y, dy, batch, units);
  /* dW[in, units] = x^T . dz */
  kx_gemm dw = {.M = in, .N = units, .K = batch, .A = x, .A16 = p->x16, .a16_bf16 = p->bf16, .lda = in, .trans_a = 1, .B = dy,
                .ldb = units, .alpha = 1, .C = l->grads, .ldc = units};
  kx_gemm_run(&c, &dw, NULL);
  if (l->use_bias) {
    float *db = l->grads + in * units;
    memset(db, 0, (size_t)units * sizeof *db);
    for (int64_t r = 0; r < batch; r++)
      for (int64_t j = 0; j < units; j++) db[j] += dy[r * units + j];
  }
  /* dx[batch, in] = dz . W^T */
  if (dx) kx_sgemm(&c, 0, 1, batch, in, units, 1, dy, units, l->params, units, 0, dx, in);
}

const kx_layer_ops kx_layer_dense = {.name = "dense", .half_io = 1, .configure = configure, .build = build, .init = init,
                                     .forward = forward, .backward = backward};
