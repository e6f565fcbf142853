/* The normalization family against naive reference loops: BatchNormalization (inference, spatial=0,
 * training mode), InstanceNormalization, LayerNormalization (any axis, broadcast scale/bias,
 * statistics outputs), LRN and MeanVarianceNormalization; float32 on one thread and a 2-thread pool,
 * float16 and double; parameters of the wrong size. */
#include "kiln/graph.h"
#include "onnx_builder.h"
#include "ops/util.h"
#include "test.h"

#include <stdint.h>

/* ---- harness: one-node models built in memory */

static uint64_t rng = 0x9E3779B97F4A7C15u;

static uint32_t next_u32(void) {
  rng = rng * 6364136223846793005u + 1442695040888963407u;
  return (uint32_t)(rng >> 33);
}

static int64_t rand_int(int64_t lo, int64_t hi) { return lo + (int64_t)(next_u32() % (uint32_t)(hi - lo + 1)); }
static float rand_float(void) { return (float)next_u32() / 2147483648.0f - 1.0f; }

static kiln_tensor make(kiln_dtype dtype, int rank, const int64_t *dims) {
  kiln_tensor t;
  kiln_status s = kiln_tensor_alloc(&t, dtype, rank, dims);
  if (s) abort();
  return t;
}

/* Adds a node whose inputs x0.. are graph inputs, or initializers where const_mask has their bit
 * (NULL entries are absent inputs), with outputs y0... */
static tb_node *add_node(tb_model *b, const char *op, const kiln_tensor *const *in, int n_in, unsigned const_mask,
                         int n_out) {
  char ins[128] = "", outs[128] = "", name[16];
  for (int i = 0; i < n_in; i++) {
    snprintf(name, sizeof name, "x%d", i);
    if (in[i] && (const_mask >> i & 1))
      tb_initializer(b, name, in[i]);
    else if (in[i])
      tb_input(b, name, in[i]->dtype, in[i]->rank, in[i]->dims);
    snprintf(ins + strlen(ins), sizeof ins - strlen(ins), "%s%s", i ? "," : "", in[i] ? name : "");
  }
  for (int i = 0; i < n_out; i++) {
    snprintf(name, sizeof name, "y%d", i);
    tb_output(b, name, KILN_FLOAT);
    snprintf(outs + strlen(outs), sizeof outs - strlen(outs), "%s%s", i ? "," : "", name);
  }
  return tb_add_node(b, op, ins, outs);
}

/* Loads and runs the model twice (the second run uses the planned arena) on `threads` threads;
 * copies the outputs of the last run into out. Frees the builder. */
static kiln_status run(tb_model *b, const kiln_tensor *const *in, int n_in, unsigned const_mask, kiln_tensor *out,
                       int n_out, int threads) {
  kiln_model *m = NULL;
  kiln_session *session = NULL;
  kiln_pool *pool = NULL;
  kiln_status s = tb_load(b, &m);
  tb_free(b);
  if (!s && threads > 1) s = kiln_pool_create(threads, &pool);
  kiln_session_options opt = {.pool = pool};
  if (!s) s = kiln_session_create(m, &opt, &session);
  const kiln_tensor *inputs[8], *outputs[8];
  int k = 0;
  for (int i = 0; i < n_in; i++)
    if (in[i] && !(const_mask >> i & 1)) inputs[k++] = in[i];
  for (int rep = 0; rep < 2 && !s; rep++) s = kiln_session_run_tensors(session, inputs, outputs);
  for (int i = 0; i < n_out && !s; i++) s = kiln_tensor_copy(&out[i], outputs[i]);
  kiln_session_free(session);
  kiln_model_free(m);
  kiln_pool_free(pool);
  return s;
}

static void release(kiln_tensor *t, int n) {
  for (int i = 0; i < n; i++) kiln_tensor_release(&t[i]);
}

/* Elementwise comparison: |got - want| <= tol * max(1, |want|); NaNs and same-signed infinities
 * match. Reports the first mismatch with `what`. */
static int close_to(const kiln_tensor *got, const kiln_tensor *want, double tol, const char *what) {
  if (got->dtype != want->dtype || got->rank != want->rank) {
    fprintf(stderr, "%s: got %s rank %d, want %s rank %d\n", what, kiln_dtype_name(got->dtype), got->rank,
            kiln_dtype_name(want->dtype), want->rank);
    return 0;
  }
  for (int d = 0; d < got->rank; d++)
    if (got->dims[d] != want->dims[d]) {
      fprintf(stderr, "%s: dimension %d is %lld, want %lld\n", what, d, (long long)got->dims[d],
              (long long)want->dims[d]);
      return 0;
    }
  for (int64_t i = 0; i < kiln_tensor_numel(got); i++) {
    double g = kiln_tensor_get_f64(got, i), w = kiln_tensor_get_f64(want, i);
    if ((isnan(g) && isnan(w)) || g == w) continue;
    if (!(fabs(g - w) <= tol * (fabs(w) > 1 ? fabs(w) : 1))) {
      fprintf(stderr, "%s: element %lld is %.9g, want %.9g\n", what, (long long)i, g, w);
      return 0;
    }
  }
  return 1;
}

static void fill(kiln_tensor *t, double lo, double hi) {
  for (int64_t i = 0; i < kiln_tensor_numel(t); i++) kx_set_f64(t, i, lo + (hi - lo) * (rand_float() + 1) / 2);
}

static double at(const kiln_tensor *t, int64_t i) { return kiln_tensor_get_f64(t, i); }

/* ---------------------------------------------------------------- BatchNormalization */

/* Inference with per-channel parameters (or per channel and position when per_position). */
static kiln_tensor bn_reference(const kiln_tensor *const *in, double eps, int per_position) {
  const kiln_tensor *x = in[0];
  kiln_tensor want = make(x->dtype, x->rank, x->dims);
  int64_t c = x->dims[1], plane = kx_prod(x->dims, 2, x->rank);
  for (int64_t i = 0; i < kiln_tensor_numel(x); i++) {
    int64_t ch = i / plane % c, p = per_position ? ch * plane + i % plane : ch;
    double y = (at(x, i) - at(in[3], p)) / sqrt(at(in[4], p) + eps) * at(in[1], p) + at(in[2], p);
    kx_set_f64(&want, i, y);
  }
  return want;
}

static void bn_inputs(kiln_tensor *t, kiln_dtype dtype, int rank, const int64_t *dims, int64_t params) {
  t[0] = make(dtype, rank, dims);
  fill(&t[0], -2, 2);
  for (int i = 1; i < 5; i++) {
    t[i] = make(dtype, 1, (int64_t[]){params});
    fill(&t[i], i == 4 ? 0.1 : -1, 1); /* var > 0 */
  }
}

static void test_batchnorm(void) {
  const kiln_dtype types[] = {KILN_FLOAT, KILN_DOUBLE, KILN_FLOAT16};
  for (int iter = 0; iter < 36; iter++) {
    kiln_dtype t = types[iter % 3];
    int rank = (int)rand_int(2, 5);
    int64_t dims[5] = {rand_int(1, 3), rand_int(1, 70), rand_int(1, 40), rand_int(1, 30), 3};
    kiln_tensor in[5], y = {0};
    bn_inputs(in, t, rank, dims, dims[1]);
    const kiln_tensor *ins[5] = {&in[0], &in[1], &in[2], &in[3], &in[4]};
    kiln_tensor want = bn_reference(ins, 1e-3, 0);
    tb_model *b = tb_new(15);
    unsigned consts = iter % 2 ? 0x1e : 0; /* parameters as initializers, or as inputs */
    tb_attr_float(add_node(b, "BatchNormalization", ins, 5, consts, 1), "epsilon", 1e-3f);
    CHECK_OK(run(b, ins, 5, consts, &y, 1, iter % 4 < 2 ? 2 : 1));
    CHECK(close_to(&y, &want, t == KILN_FLOAT16 ? 4e-3 : 1e-5, "BatchNormalization"));
    release(in, 5);
    kiln_tensor_release(&y);
    kiln_tensor_release(&want);
  }
}

/* Opsets before 9: spatial = 0 keeps statistics per channel and position. */
static void test_batchnorm_per_position(void) {
  int64_t dims[4] = {2, 3, 4, 5};
  kiln_tensor in[5], y = {0};
  bn_inputs(in, KILN_FLOAT, 4, dims, 3 * 4 * 5);
  const kiln_tensor *ins[5] = {&in[0], &in[1], &in[2], &in[3], &in[4]};
  kiln_tensor want = bn_reference(ins, 1e-5, 1);
  tb_model *b = tb_new(7);
  tb_attr_int(add_node(b, "BatchNormalization", ins, 5, 0, 1), "spatial", 0);
  CHECK_OK(run(b, ins, 5, 0, &y, 1, 1));
  CHECK(close_to(&y, &want, 1e-5, "spatial=0"));
  release(in, 5);
  kiln_tensor_release(&y);
  kiln_tensor_release(&want);
}

/* training_mode: normalized with the batch statistics; running statistics updated by momentum. */
static void test_batchnorm_training(void) {
  int64_t dims[4] = {3, 4, 5, 6}, plane = 30, count = 3 * plane;
  kiln_tensor in[5], out[5] = {{0}};
  bn_inputs(in, KILN_FLOAT, 4, dims, 4);
  double mean[4] = {0}, var[4] = {0}, momentum = 0.8;
  for (int64_t i = 0; i < 3 * 4 * plane; i++) mean[i / plane % 4] += at(&in[0], i) / (double)count;
  for (int64_t i = 0; i < 3 * 4 * plane; i++) {
    double d = at(&in[0], i) - mean[i / plane % 4];
    var[i / plane % 4] += d * d / (double)count;
  }
  kiln_tensor batch_mean = make(KILN_FLOAT, 1, (int64_t[]){4}), batch_var = make(KILN_FLOAT, 1, (int64_t[]){4});
  for (int c = 0; c < 4; c++) {
    kx_set_f64(&batch_mean, c, mean[c]);
    kx_set_f64(&batch_var, c, var[c]);
  }
  const kiln_tensor *stats[5] = {&in[0], &in[1], &in[2], &batch_mean, &batch_var};
  kiln_tensor want = bn_reference(stats, 1e-5, 0);
  const kiln_tensor *ins[5] = {&in[0], &in[1], &in[2], &in[3], &in[4]};
  for (int opset = 9; opset <= 15; opset += 6) { /* opset 9: training by outputs; 15: by attribute */
    tb_model *b = tb_new(opset);
    tb_node *n = add_node(b, "BatchNormalization", ins, 5, 0, opset == 9 ? 5 : 3);
    tb_attr_float(n, "momentum", (float)momentum);
    if (opset == 15) tb_attr_int(n, "training_mode", 1);
    CHECK_OK(run(b, ins, 5, 0, out, opset == 9 ? 5 : 3, 1));
    CHECK(close_to(&out[0], &want, 1e-5, "training Y"));
    for (int c = 0; c < 4 && out[2].data; c++) {
      CHECK_NEAR(at(&out[1], c), at(&in[3], c) * momentum + mean[c] * (1 - momentum), 1e-5);
      CHECK_NEAR(at(&out[2], c), at(&in[4], c) * momentum + var[c] * (1 - momentum), 1e-5);
      if (opset == 9 && out[4].data) {
        CHECK_NEAR(at(&out[3], c), mean[c], 1e-5);
        CHECK_NEAR(at(&out[4], c), var[c], 1e-5);
      }
    }
    release(out, opset == 9 ? 5 : 3);
  }
  release(in, 5);
  release(&batch_mean, 1);
  release(&batch_var, 1);
  kiln_tensor_release(&want);
}

static void test_batchnorm_errors(void) {
  kiln_tensor in[5], y = {0};
  bn_inputs(in, KILN_FLOAT, 4, (int64_t[]){1, 3, 2, 2}, 3);
  kiln_tensor_release(&in[1]);
  in[1] = make(KILN_FLOAT, 1, (int64_t[]){4});
  const kiln_tensor *ins[5] = {&in[0], &in[1], &in[2], &in[3], &in[4]};
  tb_model *b = tb_new(15);
  add_node(b, "BatchNormalization", ins, 5, 0, 1);
  CHECK_ERROR(run(b, ins, 5, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, "scale has 4 elements, expected 3");
  kiln_tensor flat = make(KILN_FLOAT, 1, (int64_t[]){3});
  ins[0] = &flat;
  ins[1] = &in[2];
  b = tb_new(15);
  add_node(b, "BatchNormalization", ins, 5, 0, 1);
  CHECK_ERROR(run(b, ins, 5, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, "rank >= 2");
  release(in, 5);
  release(&flat, 1);
}

/* ---------------------------------------------------------------- InstanceNormalization */

static void test_instance_norm(void) {
  const kiln_dtype types[] = {KILN_FLOAT, KILN_DOUBLE, KILN_FLOAT16};
  for (int iter = 0; iter < 12; iter++) {
    kiln_dtype t = types[iter % 3];
    int64_t dims[4] = {rand_int(1, 3), rand_int(1, 20), rand_int(1, 60), rand_int(1, 70)};
    kiln_tensor x = make(t, 4, dims), scale = make(t, 1, &dims[1]), bias = make(t, 1, &dims[1]), y = {0};
    fill(&x, -3, 3);
    fill(&scale, -1, 1);
    fill(&bias, -1, 1);
    kiln_tensor want = make(t, 4, dims);
    int64_t plane = dims[2] * dims[3];
    for (int64_t p = 0; p < dims[0] * dims[1]; p++) {
      double mean = 0, var = 0;
      for (int64_t i = 0; i < plane; i++) mean += at(&x, p * plane + i) / (double)plane;
      for (int64_t i = 0; i < plane; i++)
        var += (at(&x, p * plane + i) - mean) * (at(&x, p * plane + i) - mean) / (double)plane;
      for (int64_t i = 0; i < plane; i++)
        kx_set_f64(&want, p * plane + i,
                   (at(&x, p * plane + i) - mean) / sqrt(var + 1e-5) * at(&scale, p % dims[1]) +
                       at(&bias, p % dims[1]));
    }
    const kiln_tensor *ins[3] = {&x, &scale, &bias};
    tb_model *b = tb_new(6);
    add_node(b, "InstanceNormalization", ins, 3, 0, 1);
    CHECK_OK(run(b, ins, 3, 0, &y, 1, iter % 2 ? 2 : 1));
    CHECK(close_to(&y, &want, t == KILN_FLOAT16 ? 4e-3 : 1e-4, "InstanceNormalization"));
    release(&x, 1);
    release(&scale, 1);
    release(&bias, 1);
    kiln_tensor_release(&y);
    kiln_tensor_release(&want);
  }
  kiln_tensor x = make(KILN_FLOAT, 3, (int64_t[]){1, 2, 3}), scale = make(KILN_FLOAT, 1, (int64_t[]){2});
  kiln_tensor bias = make(KILN_FLOAT, 1, (int64_t[]){3}), y = {0};
  const kiln_tensor *ins[3] = {&x, &scale, &bias};
  tb_model *b = tb_new(6);
  add_node(b, "InstanceNormalization", ins, 3, 0, 1);
  CHECK_ERROR(run(b, ins, 3, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, "B has 3 elements, expected 2");
  release(&x, 1);
  release(&scale, 1);
  release(&bias, 1);
}

/* ---------------------------------------------------------------- LayerNormalization */

/* Y, Mean and InvStdDev over x.dims[axis:], scale and bias broadcast numpy-style. */
static void ln_reference(const kiln_tensor *x, const kiln_tensor *scale, const kiln_tensor *bias, int axis, double eps,
                         kiln_tensor *out) {
  int64_t stat_dims[KILN_MAX_RANK], n = kx_prod(x->dims, axis, x->rank), rows = kx_prod(x->dims, 0, axis);
  for (int d = 0; d < x->rank; d++) stat_dims[d] = d < axis ? x->dims[d] : 1;
  out[0] = make(x->dtype, x->rank, x->dims);
  out[1] = make(KILN_FLOAT, x->rank, stat_dims);
  out[2] = make(KILN_FLOAT, x->rank, stat_dims);
  int64_t sstr[KILN_MAX_RANK], bstr[KILN_MAX_RANK];
  kx_broadcast_strides(scale, x->rank - axis, x->dims + axis, sstr);
  if (bias) kx_broadcast_strides(bias, x->rank - axis, x->dims + axis, bstr);
  for (int64_t r = 0; r < rows; r++) {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < n; i++) mean += at(x, r * n + i) / (double)n;
    for (int64_t i = 0; i < n; i++) var += (at(x, r * n + i) - mean) * (at(x, r * n + i) - mean) / (double)n;
    double inv = 1 / sqrt(var + eps);
    for (int64_t i = 0; i < n; i++) {
      int64_t rest = i, so = 0, bo = 0;
      for (int d = x->rank - 1; d >= axis; d--) {
        so += rest % x->dims[d] * sstr[d - axis];
        bo += rest % x->dims[d] * (bias ? bstr[d - axis] : 0);
        rest /= x->dims[d];
      }
      kx_set_f64(&out[0], r * n + i, (at(x, r * n + i) - mean) * inv * at(scale, so) + (bias ? at(bias, bo) : 0));
    }
    kx_set_f64(&out[1], r, mean);
    kx_set_f64(&out[2], r, inv);
  }
}

static void test_layer_norm(void) {
  const kiln_dtype types[] = {KILN_FLOAT, KILN_FLOAT, KILN_DOUBLE, KILN_FLOAT16};
  for (int iter = 0; iter < 48; iter++) {
    kiln_dtype t = types[iter % 4];
    int rank = (int)rand_int(1, 4), axis = (int)rand_int(0, rank - 1), with_bias = iter % 3 != 0;
    int64_t dims[KILN_MAX_RANK], pdims[KILN_MAX_RANK];
    for (int d = 0; d < rank; d++) dims[d] = rand_int(1, d == rank - 1 ? 300 : 12);
    /* scale and bias: the normalized shape, or a broadcastable one (leading dims dropped or 1) */
    int prank = rank - axis - (int)rand_int(0, rank - axis - 1);
    for (int d = 0; d < prank; d++) pdims[d] = rand_int(0, 3) ? dims[rank - prank + d] : 1;
    kiln_tensor x = make(t, rank, dims), scale = make(t, prank, pdims), bias = make(t, prank, pdims);
    fill(&x, -2, 2);
    fill(&scale, -1, 1);
    fill(&bias, -1, 1);
    kiln_tensor want[3], got[3] = {{0}};
    ln_reference(&x, &scale, with_bias ? &bias : NULL, axis, 1e-4, want);
    const kiln_tensor *ins[3] = {&x, &scale, with_bias ? &bias : NULL};
    tb_model *b = tb_new(17);
    tb_node *n = add_node(b, "LayerNormalization", ins, 3, 0, 3);
    tb_attr_int(n, "axis", axis - (rand_int(0, 1) ? rank : 0));
    tb_attr_float(n, "epsilon", 1e-4f);
    CHECK_OK(run(b, ins, 3, 0, got, 3, iter % 2 ? 2 : 1));
    double tol = t == KILN_FLOAT16 ? 4e-3 : 1e-4;
    CHECK(close_to(&got[0], &want[0], tol, "LayerNormalization Y"));
    CHECK(close_to(&got[1], &want[1], tol, "LayerNormalization Mean"));
    CHECK(close_to(&got[2], &want[2], tol, "LayerNormalization InvStdDev"));
    release(&x, 1);
    release(&scale, 1);
    release(&bias, 1);
    release(want, 3);
    release(got, 3);
  }
}

static void test_layer_norm_errors(void) {
  kiln_tensor x = make(KILN_FLOAT, 2, (int64_t[]){3, 4}), scale = make(KILN_FLOAT, 1, (int64_t[]){5});
  kiln_tensor bias = make(KILN_FLOAT, 2, (int64_t[]){2, 4}), ok = make(KILN_FLOAT, 1, (int64_t[]){4}), y = {0};
  const kiln_tensor *ins[3] = {&x, &scale, NULL};
  tb_model *b = tb_new(17);
  add_node(b, "LayerNormalization", ins, 3, 0, 1);
  CHECK_ERROR(run(b, ins, 3, 0, &y, 1, 1), KILN_INVALID_ARGUMENT,
              "Scale float[5] does not broadcast to the normalized shape float[4] (X's dimensions from axis 1)");
  ins[1] = &ok;
  ins[2] = &bias;
  b = tb_new(17);
  add_node(b, "LayerNormalization", ins, 3, 0, 1);
  CHECK_ERROR(run(b, ins, 3, 0, &y, 1, 1), KILN_INVALID_ARGUMENT,
              "B float[2,4] does not broadcast to the normalized shape float[4]");
  b = tb_new(17);
  tb_attr_int(add_node(b, "LayerNormalization", ins, 2, 0, 1), "axis", 2);
  CHECK_ERROR(run(b, ins, 2, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, "axis 2 is out of range for rank 2");
  release(&x, 1);
  release(&scale, 1);
  release(&bias, 1);
  release(&ok, 1);
}

/* ---------------------------------------------------------------- LRN, MeanVarianceNormalization */

static void test_lrn(void) {
  for (int iter = 0; iter < 10; iter++) {
    int64_t dims[4] = {rand_int(1, 2), rand_int(1, 9), rand_int(1, 20), rand_int(1, 20)}, size = rand_int(1, 5);
    kiln_dtype t = iter % 3 == 2 ? KILN_DOUBLE : KILN_FLOAT;
    kiln_tensor x = make(t, 4, dims), y = {0}, want = make(t, 4, dims);
    fill(&x, -2, 2);
    int64_t plane = dims[2] * dims[3];
    double alpha = 1e-2, beta = 0.6, bias = 1.5;
    for (int64_t i = 0; i < kiln_tensor_numel(&x); i++) {
      int64_t c = i / plane % dims[1], base = i - c * plane;
      double sum = 0;
      for (int64_t k = c - (size - 1) / 2; k <= c + size / 2; k++)
        if (k >= 0 && k < dims[1]) sum += at(&x, base + k * plane) * at(&x, base + k * plane);
      kx_set_f64(&want, i, at(&x, i) / pow(bias + alpha / (double)size * sum, beta));
    }
    const kiln_tensor *ins[1] = {&x};
    tb_model *b = tb_new(13);
    tb_node *n = add_node(b, "LRN", ins, 1, 0, 1);
    tb_attr_int(n, "size", size);
    tb_attr_float(n, "alpha", (float)alpha);
    tb_attr_float(n, "beta", (float)beta);
    tb_attr_float(n, "bias", (float)bias);
    CHECK_OK(run(b, ins, 1, 0, &y, 1, iter % 2 ? 2 : 1));
    CHECK(close_to(&y, &want, 1e-5, "LRN"));
    release(&x, 1);
    kiln_tensor_release(&y);
    kiln_tensor_release(&want);
  }
  kiln_tensor x = make(KILN_FLOAT, 4, (int64_t[]){1, 2, 2, 2}), y = {0};
  const kiln_tensor *ins[1] = {&x};
  tb_model *b = tb_new(13);
  add_node(b, "LRN", ins, 1, 0, 1);
  CHECK_ERROR(run(b, ins, 1, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, "size must be a positive number");
  release(&x, 1);
}

static void test_mvn(void) {
  const int64_t axes_sets[3][3] = {{0, 2, 3}, {1, 0, 0}, {-1, -2, 0}};
  const int n_axes[3] = {3, 1, 2};
  for (int a = 0; a < 3; a++) {
    int64_t dims[4] = {2, 3, 4, 5};
    kiln_tensor x = make(KILN_FLOAT, 4, dims), y = {0}, want = make(KILN_FLOAT, 4, dims);
    fill(&x, -2, 2);
    int reduced[4] = {0};
    for (int i = 0; i < n_axes[a]; i++) reduced[(axes_sets[a][i] + 4) % 4] = 1;
    /* statistics per kept position, by brute force over all elements */
    for (int64_t i = 0; i < 120; i++) {
      double mean = 0, sq = 0, count = 0;
      for (int64_t k = 0; k < 120; k++) {
        int same = 1;
        for (int d = 0, ri = (int)i, rk = (int)k; d < 4; d++) {
          int64_t stride = kx_prod(dims, d + 1, 4);
          if (!reduced[d] && ri / stride != rk / stride) same = 0;
          ri %= (int)stride;
          rk %= (int)stride;
        }
        if (!same) continue;
        mean += at(&x, k);
        sq += at(&x, k) * at(&x, k);
        count++;
      }
      mean /= count;
      kx_set_f64(&want, i, (at(&x, i) - mean) / (sqrt(sq / count - mean * mean) + 1e-9));
    }
    const kiln_tensor *ins[1] = {&x};
    tb_model *b = tb_new(13);
    tb_attr_ints(add_node(b, "MeanVarianceNormalization", ins, 1, 0, 1), "axes", n_axes[a], axes_sets[a]);
    CHECK_OK(run(b, ins, 1, 0, &y, 1, 1));
    CHECK(close_to(&y, &want, 1e-4, "MeanVarianceNormalization"));
    release(&x, 1);
    kiln_tensor_release(&y);
    kiln_tensor_release(&want);
  }
}

TEST_MAIN(TEST(test_batchnorm), TEST(test_batchnorm_per_position), TEST(test_batchnorm_training),
          TEST(test_batchnorm_errors), TEST(test_instance_norm), TEST(test_layer_norm), TEST(test_layer_norm_errors),
          TEST(test_lrn), TEST(test_mvn))
