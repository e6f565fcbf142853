/* The normalization family against naive reference loops: BatchNormalization (inference, spatial=0,
 * training mode), InstanceNormalization, LayerNormalization (any axis, broadcast scale/bias,
 * statistics outputs), LRN and MeanVarianceNormalization; float32 on one thread and a 2-thread pool,
 * float16 and double; parameters of the wrong size. */
#include "op_harness.h"

static double at(const kiln_tensor *t, int64_t i) { return kiln_tensor_get_f64(t, i); }

/* ---------------------------------------------------------------- BatchNormalization */

/* Inference with per-channel parameters (or per channel and position when per_position). */
static kiln_tensor bn_reference(const kiln_tensor *const *in, double eps, int per_position) {
  const kiln_tensor *x = in[0];
  kiln_tensor want = oh_tensor(x->dtype, x->rank, x->dims);
  int64_t c = x->dims[1], plane = kx_prod(x->dims, 2, x->rank);
  for (int64_t i = 0; i < kiln_tensor_numel(x); i++) {
    int64_t ch = i / plane % c, p = per_position ? ch * plane + i % plane : ch;
    double y = (at(x, i) - at(in[3], p)) / sqrt(at(in[4], p) + eps) * at(in[1], p) + at(in[2], p);
    kx_set_f64(&want, i, y);
  }
  return want;
}

static void bn_inputs(kiln_tensor *t, kiln_dtype dtype, int rank, const int64_t *dims, int64_t params) {
  t[0] = oh_tensor(dtype, rank, dims);
  oh_fill_uniform(&t[0], -2, 2);
  for (int i = 1; i < 5; i++) {
    t[i] = oh_tensor(dtype, 1, (int64_t[]){params});
    oh_fill_uniform(&t[i], i == 4 ? 0.1 : -1, 1); /* var > 0 */
  }
}

static void test_batchnorm(void) {
  const kiln_dtype types[] = {KILN_FLOAT, KILN_DOUBLE, KILN_FLOAT16};
  for (int iter = 0; iter < 36; iter++) {
    kiln_dtype t = types[iter % 3];
    int rank = (int)oh_int(2, 5);
    int64_t dims[5] = {oh_int(1, 3), oh_int(1, 70), oh_int(1, 40), oh_int(1, 30), 3};
    kiln_tensor in[5], y = {0};
    bn_inputs(in, t, rank, dims, dims[1]);
    const kiln_tensor *ins[5] = {&in[0], &in[1], &in[2], &in[3], &in[4]};
    kiln_tensor want = bn_reference(ins, 1e-3, 0);
    tb_model *b = tb_new(15);
    unsigned consts = iter % 2 ? 0x1e : 0; /* parameters as initializers, or as inputs */
    tb_attr_float(oh_node(b, "BatchNormalization", ins, 5, consts, 1), "epsilon", 1e-3f);
    CHECK_OK(oh_run(b, ins, 5, consts, &y, 1, iter % 4 < 2 ? 2 : 1));
    CHECK(oh_close_to(&y, &want, t == KILN_FLOAT16 ? 4e-3 : 1e-5, "BatchNormalization"));
    oh_release(in, 5);
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
  tb_attr_int(oh_node(b, "BatchNormalization", ins, 5, 0, 1), "spatial", 0);
  CHECK_OK(oh_run(b, ins, 5, 0, &y, 1, 1));
  CHECK(oh_close_to(&y, &want, 1e-5, "spatial=0"));
  oh_release(in, 5);
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
  kiln_tensor batch_mean = oh_tensor(KILN_FLOAT, 1, (int64_t[]){4}), batch_var = oh_tensor(KILN_FLOAT, 1, (int64_t[]){4});
  for (int c = 0; c < 4; c++) {
    kx_set_f64(&batch_mean, c, mean[c]);
    kx_set_f64(&batch_var, c, var[c]);
  }
  const kiln_tensor *stats[5] = {&in[0], &in[1], &in[2], &batch_mean, &batch_var};
  kiln_tensor want = bn_reference(stats, 1e-5, 0);
  const kiln_tensor *ins[5] = {&in[0], &in[1], &in[2], &in[3], &in[4]};
  for (int opset = 9; opset <= 15; opset += 6) { /* opset 9: training by outputs; 15: by attribute */
    tb_model *b = tb_new(opset);
    tb_node *n = oh_node(b, "BatchNormalization", ins, 5, 0, opset == 9 ? 5 : 3);
    tb_attr_float(n, "momentum", (float)momentum);
    if (opset == 15) tb_attr_int(n, "training_mode", 1);
    CHECK_OK(oh_run(b, ins, 5, 0, out, opset == 9 ? 5 : 3, 1));
    CHECK(oh_close_to(&out[0], &want, 1e-5, "training Y"));
    for (int c = 0; c < 4 && out[2].data; c++) {
      CHECK_NEAR(at(&out[1], c), at(&in[3], c) * momentum + mean[c] * (1 - momentum), 1e-5);
      CHECK_NEAR(at(&out[2], c), at(&in[4], c) * momentum + var[c] * (1 - momentum), 1e-5);
      if (opset == 9 && out[4].data) {
        CHECK_NEAR(at(&out[3], c), mean[c], 1e-5);
        CHECK_NEAR(at(&out[4], c), var[c], 1e-5);
      }
    }
    oh_release(out, opset == 9 ? 5 : 3);
  }
  oh_release(in, 5);
  oh_release(&batch_mean, 1);
  oh_release(&batch_var, 1);
  kiln_tensor_release(&want);
}

static void test_batchnorm_errors(void) {
  kiln_tensor in[5], y = {0};
  bn_inputs(in, KILN_FLOAT, 4, (int64_t[]){1, 3, 2, 2}, 3);
  kiln_tensor_release(&in[1]);
  in[1] = oh_tensor(KILN_FLOAT, 1, (int64_t[]){4});
  const kiln_tensor *ins[5] = {&in[0], &in[1], &in[2], &in[3], &in[4]};
  tb_model *b = tb_new(15);
  oh_node(b, "BatchNormalization", ins, 5, 0, 1);
  CHECK_ERROR(oh_run(b, ins, 5, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, "scale has 4 elements, expected 3");
  kiln_tensor flat = oh_tensor(KILN_FLOAT, 1, (int64_t[]){3});
  ins[0] = &flat;
  ins[1] = &in[2];
  b = tb_new(15);
  oh_node(b, "BatchNormalization", ins, 5, 0, 1);
  CHECK_ERROR(oh_run(b, ins, 5, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, "rank >= 2");
  oh_release(in, 5);
  oh_release(&flat, 1);
}

/* ---------------------------------------------------------------- InstanceNormalization */

static void test_instance_norm(void) {
  const kiln_dtype types[] = {KILN_FLOAT, KILN_DOUBLE, KILN_FLOAT16};
  for (int iter = 0; iter < 12; iter++) {
    kiln_dtype t = types[iter % 3];
    int64_t dims[4] = {oh_int(1, 3), oh_int(1, 20), oh_int(1, 60), oh_int(1, 70)};
    kiln_tensor x = oh_tensor(t, 4, dims), scale = oh_tensor(t, 1, &dims[1]), bias = oh_tensor(t, 1, &dims[1]), y = {0};
    oh_fill_uniform(&x, -3, 3);
    oh_fill_uniform(&scale, -1, 1);
    oh_fill_uniform(&bias, -1, 1);
    kiln_tensor want = oh_tensor(t, 4, dims);
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
    oh_node(b, "InstanceNormalization", ins, 3, 0, 1);
    CHECK_OK(oh_run(b, ins, 3, 0, &y, 1, iter % 2 ? 2 : 1));
    CHECK(oh_close_to(&y, &want, t == KILN_FLOAT16 ? 4e-3 : 1e-4, "InstanceNormalization"));
    oh_release(&x, 1);
    oh_release(&scale, 1);
    oh_release(&bias, 1);
    kiln_tensor_release(&y);
    kiln_tensor_release(&want);
  }
  kiln_tensor x = oh_tensor(KILN_FLOAT, 3, (int64_t[]){1, 2, 3}), scale = oh_tensor(KILN_FLOAT, 1, (int64_t[]){2});
  kiln_tensor bias = oh_tensor(KILN_FLOAT, 1, (int64_t[]){3}), y = {0};
  const kiln_tensor *ins[3] = {&x, &scale, &bias};
  tb_model *b = tb_new(6);
  oh_node(b, "InstanceNormalization", ins, 3, 0, 1);
  CHECK_ERROR(oh_run(b, ins, 3, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, "B has 3 elements, expected 2");
  oh_release(&x, 1);
  oh_release(&scale, 1);
  oh_release(&bias, 1);
}

/* ---------------------------------------------------------------- LayerNormalization */

/* Y, Mean and InvStdDev over x.dims[axis:], scale and bias broadcast numpy-style. */
static void ln_reference(const kiln_tensor *x, const kiln_tensor *scale, const kiln_tensor *bias, int axis, double eps,
                         kiln_tensor *out) {
  int64_t stat_dims[KILN_MAX_RANK], n = kx_prod(x->dims, axis, x->rank), rows = kx_prod(x->dims, 0, axis);
  for (int d = 0; d < x->rank; d++) stat_dims[d] = d < axis ? x->dims[d] : 1;
  out[0] = oh_tensor(x->dtype, x->rank, x->dims);
  out[1] = oh_tensor(KILN_FLOAT, x->rank, stat_dims);
  out[2] = oh_tensor(KILN_FLOAT, x->rank, stat_dims);
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
    int rank = (int)oh_int(1, 4), axis = (int)oh_int(0, rank - 1), with_bias = iter % 3 != 0;
    int64_t dims[KILN_MAX_RANK], pdims[KILN_MAX_RANK];
    for (int d = 0; d < rank; d++) dims[d] = oh_int(1, d == rank - 1 ? 300 : 12);
    /* scale and bias: the normalized shape, or a broadcastable one (leading dims dropped or 1) */
    int prank = rank - axis - (int)oh_int(0, rank - axis - 1);
    for (int d = 0; d < prank; d++) pdims[d] = oh_int(0, 3) ? dims[rank - prank + d] : 1;
    kiln_tensor x = oh_tensor(t, rank, dims), scale = oh_tensor(t, prank, pdims), bias = oh_tensor(t, prank, pdims);
    oh_fill_uniform(&x, -2, 2);
    oh_fill_uniform(&scale, -1, 1);
    oh_fill_uniform(&bias, -1, 1);
    kiln_tensor want[3], got[3] = {{0}};
    ln_reference(&x, &scale, with_bias ? &bias : NULL, axis, 1e-4, want);
    const kiln_tensor *ins[3] = {&x, &scale, with_bias ? &bias : NULL};
    tb_model *b = tb_new(17);
    tb_node *n = oh_node(b, "LayerNormalization", ins, 3, 0, 3);
    tb_attr_int(n, "axis", axis - (oh_int(0, 1) ? rank : 0));
    tb_attr_float(n, "epsilon", 1e-4f);
    CHECK_OK(oh_run(b, ins, 3, 0, got, 3, iter % 2 ? 2 : 1));
    double tol = t == KILN_FLOAT16 ? 4e-3 : 1e-4;
    CHECK(oh_close_to(&got[0], &want[0], tol, "LayerNormalization Y"));
    CHECK(oh_close_to(&got[1], &want[1], tol, "LayerNormalization Mean"));
    CHECK(oh_close_to(&got[2], &want[2], tol, "LayerNormalization InvStdDev"));
    oh_release(&x, 1);
    oh_release(&scale, 1);
    oh_release(&bias, 1);
    oh_release(want, 3);
    oh_release(got, 3);
  }
}

static void test_layer_norm_errors(void) {
  kiln_tensor x = oh_tensor(KILN_FLOAT, 2, (int64_t[]){3, 4}), scale = oh_tensor(KILN_FLOAT, 1, (int64_t[]){5});
  kiln_tensor bias = oh_tensor(KILN_FLOAT, 2, (int64_t[]){2, 4}), ok = oh_tensor(KILN_FLOAT, 1, (int64_t[]){4}), y = {0};
  const kiln_tensor *ins[3] = {&x, &scale, NULL};
  tb_model *b = tb_new(17);
  oh_node(b, "LayerNormalization", ins, 3, 0, 1);
  CHECK_ERROR(oh_run(b, ins, 3, 0, &y, 1, 1), KILN_INVALID_ARGUMENT,
              "Scale float[5] does not broadcast to the normalized shape float[4] (X's dimensions from axis 1)");
  ins[1] = &ok;
  ins[2] = &bias;
  b = tb_new(17);
  oh_node(b, "LayerNormalization", ins, 3, 0, 1);
  CHECK_ERROR(oh_run(b, ins, 3, 0, &y, 1, 1), KILN_INVALID_ARGUMENT,
              "B float[2,4] does not broadcast to the normalized shape float[4]");
  b = tb_new(17);
  tb_attr_int(oh_node(b, "LayerNormalization", ins, 2, 0, 1), "axis", 2);
  CHECK_ERROR(oh_run(b, ins, 2, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, "axis 2 is out of range for rank 2");
  oh_release(&x, 1);
  oh_release(&scale, 1);
  oh_release(&bias, 1);
  oh_release(&ok, 1);
}

/* ---------------------------------------------------------------- LRN, MeanVarianceNormalization */

static void test_lrn(void) {
  for (int iter = 0; iter < 10; iter++) {
    int64_t dims[4] = {oh_int(1, 2), oh_int(1, 9), oh_int(1, 20), oh_int(1, 20)}, size = oh_int(1, 5);
    kiln_dtype t = iter % 3 == 2 ? KILN_DOUBLE : KILN_FLOAT;
    kiln_tensor x = oh_tensor(t, 4, dims), y = {0}, want = oh_tensor(t, 4, dims);
    oh_fill_uniform(&x, -2, 2);
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
    tb_node *n = oh_node(b, "LRN", ins, 1, 0, 1);
    tb_attr_int(n, "size", size);
    tb_attr_float(n, "alpha", (float)alpha);
    tb_attr_float(n, "beta", (float)beta);
    tb_attr_float(n, "bias", (float)bias);
    CHECK_OK(oh_run(b, ins, 1, 0, &y, 1, iter % 2 ? 2 : 1));
    CHECK(oh_close_to(&y, &want, 1e-5, "LRN"));
    oh_release(&x, 1);
    kiln_tensor_release(&y);
    kiln_tensor_release(&want);
  }
  kiln_tensor x = oh_tensor(KILN_FLOAT, 4, (int64_t[]){1, 2, 2, 2}), y = {0};
  const kiln_tensor *ins[1] = {&x};
  tb_model *b = tb_new(13);
  oh_node(b, "LRN", ins, 1, 0, 1);
  CHECK_ERROR(oh_run(b, ins, 1, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, "size must be a positive number");
  oh_release(&x, 1);
}

static void test_mvn(void) {
  const int64_t axes_sets[3][3] = {{0, 2, 3}, {1, 0, 0}, {-1, -2, 0}};
  const int n_axes[3] = {3, 1, 2};
  for (int a = 0; a < 3; a++) {
    int64_t dims[4] = {2, 3, 4, 5};
    kiln_tensor x = oh_tensor(KILN_FLOAT, 4, dims), y = {0}, want = oh_tensor(KILN_FLOAT, 4, dims);
    oh_fill_uniform(&x, -2, 2);
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
    tb_attr_ints(oh_node(b, "MeanVarianceNormalization", ins, 1, 0, 1), "axes", n_axes[a], axes_sets[a]);
    CHECK_OK(oh_run(b, ins, 1, 0, &y, 1, 1));
    CHECK(oh_close_to(&y, &want, 1e-4, "MeanVarianceNormalization"));
    oh_release(&x, 1);
    kiln_tensor_release(&y);
    kiln_tensor_release(&want);
  }
}

TEST_MAIN(TEST(test_batchnorm), TEST(test_batchnorm_per_position), TEST(test_batchnorm_training),
          TEST(test_batchnorm_errors), TEST(test_instance_norm), TEST(test_layer_norm), TEST(test_layer_norm_errors),
          TEST(test_lrn), TEST(test_mvn))
