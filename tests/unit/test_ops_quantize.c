/* Quantization kernels: rounding and saturation, per-axis layouts, and the integer matmul and
 * convolution against naive loops over random shapes (on one thread and on a pool of two), plus
 * bad inputs. */
#include "op_harness.h"

/* Fills an 8-bit tensor with random values of its type. */
static void fill_q8(kiln_tensor *t) {
  for (int64_t i = 0; i < kiln_tensor_numel(t); i++) {
    if (t->dtype == KILN_UINT8) ((uint8_t *)t->data)[i] = (uint8_t)oh_int(0, 255);
    else ((int8_t *)t->data)[i] = (int8_t)oh_int(-128, 127);
  }
}

static kiln_dtype random_q8(void) { return oh_int(0, 1) ? KILN_UINT8 : KILN_INT8; }

static float saturate(float v, kiln_dtype t) {
  float lo = t == KILN_UINT8 ? 0 : -128, hi = t == KILN_UINT8 ? 255 : 127;
  return v < lo ? lo : v > hi ? hi : v;
}

/* ------------------------------------------------------------------ Quantize / Dequantize */

static void test_quantize_rounding(void) {
  float xs[] = {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 300, -300, 3.49f, NAN};
  int8_t want_i8[] = {0, 2, 2, 0, -2, -2, 127, -128, 3, -128};
  uint8_t want_u8[] = {10, 12, 12, 10, 8, 8, 255, 0, 13, 0};
  kiln_tensor x = oh_tensor(KILN_FLOAT, 1, (int64_t[]){10}), scale = oh_tensor(KILN_FLOAT, 0, NULL);
  kiln_tensor zp8 = oh_tensor(KILN_INT8, 0, NULL), zpu = oh_tensor(KILN_UINT8, 0, NULL), y = {0};
  memcpy(x.data, xs, sizeof xs);
  *(float *)scale.data = 1;
  *(uint8_t *)zpu.data = 10;
  tb_node *node;
  const kiln_tensor *in[3] = {&x, &scale, &zp8};
  CHECK_OK(oh_run_once(oh_model(13, "QuantizeLinear", in, 3, 1, &node), in, 3, 0, &y, 1, 1));
  CHECK(y.dtype == KILN_INT8);
  for (int i = 0; i < 10 && y.dtype == KILN_INT8; i++) CHECK(((int8_t *)y.data)[i] == want_i8[i]);
  kiln_tensor_release(&y);
  in[2] = &zpu;
  CHECK_OK(oh_run_once(oh_model(10, "QuantizeLinear", in, 3, 1, &node), in, 3, 0, &y, 1, 1));
  for (int i = 0; i < 10 && y.dtype == KILN_UINT8; i++) CHECK(((uint8_t *)y.data)[i] == want_u8[i]);
  kiln_tensor_release(&y);
  /* no zero point: uint8 with zero point 0 */
  CHECK_OK(oh_run_once(oh_model(13, "QuantizeLinear", in, 2, 1, &node), in, 2, 0, &y, 1, 1));
  CHECK(y.dtype == KILN_UINT8 && ((uint8_t *)y.data)[2] == 2 && ((uint8_t *)y.data)[4] == 0);
  kiln_tensor_release(&y);
  kiln_tensor_release(&x);
  kiln_tensor_release(&scale);
  kiln_tensor_release(&zp8);
  kiln_tensor_release(&zpu);
}

/* Per-axis QuantizeLinear and DequantizeLinear against a naive loop. */
static void check_per_axis(int threads, int rank, const int64_t *dims, int axis, kiln_dtype qt) {
  int64_t ch = dims[axis], inner = 1, total = 1;
  for (int d = 0; d < rank; d++) total *= dims[d];
  for (int d = axis + 1; d < rank; d++) inner *= dims[d];
  kiln_tensor x = oh_tensor(KILN_FLOAT, rank, dims), scale = oh_tensor(KILN_FLOAT, 1, &ch), zp = oh_tensor(qt, 1, &ch), y = {0}, back = {0};
  oh_fill_uniform(&x, -300, 300);
  oh_fill_uniform(&scale, 0.05, 3);
  fill_q8(&zp);
  tb_node *node;
  const kiln_tensor *in[3] = {&x, &scale, &zp};
  tb_model *b = oh_model(13, "QuantizeLinear", in, 3, 1, &node);
  tb_attr_int(node, "axis", axis - rank); /* negative: counted from the end */
  CHECK_OK(oh_run_once(b, in, 3, 0, &y, 1, threads));
  int bad = 0;
  for (int64_t i = 0; i < total && y.dtype == qt; i++) {
    int64_t c = i / inner % ch;
    float z = (float)(qt == KILN_UINT8 ? ((uint8_t *)zp.data)[c] : ((int8_t *)zp.data)[c]);
    float want = saturate(nearbyintf(((float *)x.data)[i] / ((float *)scale.data)[c]) + z, qt);
    float got = (float)(qt == KILN_UINT8 ? ((uint8_t *)y.data)[i] : ((int8_t *)y.data)[i]);
    bad += got != want;
  }
  CHECK(bad == 0);
  in[0] = &y;
  b = oh_model(13, "DequantizeLinear", in, 3, 1, &node);
  tb_attr_int(node, "axis", axis);
  CHECK_OK(oh_run_once(b, in, 3, 0, &back, 1, threads));
  bad = 0;
  for (int64_t i = 0; i < total && back.dtype == KILN_FLOAT; i++) {
    int64_t c = i / inner % ch;
    float z = (float)(qt == KILN_UINT8 ? ((uint8_t *)zp.data)[c] : ((int8_t *)zp.data)[c]);
    float q = (float)(qt == KILN_UINT8 ? ((uint8_t *)y.data)[i] : ((int8_t *)y.data)[i]);
    bad += ((float *)back.data)[i] != (q - z) * ((float *)scale.data)[c];
  }
  CHECK(bad == 0);
  kiln_tensor_release(&x);
  kiln_tensor_release(&scale);
  kiln_tensor_release(&zp);
  kiln_tensor_release(&y);
  kiln_tensor_release(&back);
}

static void test_quantize_per_axis(void) {
  for (int trial = 0; trial < 30; trial++) {
    int rank = (int)oh_int(1, 4);
    int64_t dims[4];
    for (int d = 0; d < rank; d++) dims[d] = oh_int(1, 5);
    check_per_axis(trial % 2 ? 2 : 1, rank, dims, (int)oh_int(0, rank - 1), random_q8());
  }
  check_per_axis(2, 3, (int64_t[]){7, 3, 50000}, 1, KILN_INT8); /* split over the pool */
}

static void test_dequantize_int32(void) {
  kiln_tensor x = oh_tensor(KILN_INT32, 1, (int64_t[]){3}), scale = oh_tensor(KILN_FLOAT, 0, NULL), y = {0};
  int32_t xs[] = {INT32_MIN, 0, INT32_MAX};
  memcpy(x.data, xs, sizeof xs);
  *(float *)scale.data = 0.5f;
  tb_node *node;
  const kiln_tensor *in[2] = {&x, &scale};
  CHECK_OK(oh_run_once(oh_model(13, "DequantizeLinear", in, 2, 1, &node), in, 2, 0, &y, 1, 1));
  CHECK(((float *)y.data)[0] == -1073741824.0f && ((float *)y.data)[1] == 0 && ((float *)y.data)[2] == 1073741824.0f);
  kiln_tensor_release(&x);
  kiln_tensor_release(&scale);
  kiln_tensor_release(&y);
}

static void test_quantize_bad_inputs(void) {
  kiln_tensor x = oh_tensor(KILN_FLOAT, 2, (int64_t[]){2, 3}), q = oh_tensor(KILN_UINT8, 2, (int64_t[]){2, 3});
  kiln_tensor scale = oh_tensor(KILN_FLOAT, 0, NULL), scale3 = oh_tensor(KILN_FLOAT, 1, (int64_t[]){3});
  kiln_tensor zp32 = oh_tensor(KILN_INT32, 0, NULL), zp8 = oh_tensor(KILN_INT8, 0, NULL), zp2 = oh_tensor(KILN_UINT8, 1, (int64_t[]){2});
  kiln_tensor dscale = oh_tensor(KILN_DOUBLE, 0, NULL), y = {0};
  tb_node *node;
  const kiln_tensor *in[3] = {&x, &scale, &zp32};
  CHECK_ERROR(oh_run_once(oh_model(13, "QuantizeLinear", in, 3, 1, &node), in, 3, 0, &y, 1, 1), KILN_INVALID_ARGUMENT,
              "y_zero_point must be uint8 or int8, got int32");
  in[0] = &q, in[2] = &zp8;
  CHECK_ERROR(oh_run_once(oh_model(13, "DequantizeLinear", in, 3, 1, &node), in, 3, 0, &y, 1, 1), KILN_INVALID_ARGUMENT,
              "x_zero_point has dtype int8, but x is uint8");
  /* per-axis along axis 1 (the default): 3 values fit, 2 do not */
  in[0] = &x, in[1] = &scale3, in[2] = NULL;
  CHECK_OK(oh_run_once(oh_model(13, "QuantizeLinear", in, 2, 1, &node), in, 2, 0, &y, 1, 1));
  kiln_tensor_release(&y);
  tb_model *b = oh_model(13, "QuantizeLinear", in, 2, 1, &node);
  tb_attr_int(node, "axis", 0);
  CHECK_ERROR(oh_run_once(b, in, 2, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, "y_scale has 3 values, but axis 0 of the input has 2");
  in[2] = &zp2;
  CHECK_ERROR(oh_run_once(oh_model(13, "QuantizeLinear", in, 3, 1, &node), in, 3, 0, &y, 1, 1), KILN_INVALID_ARGUMENT,
              "the zero point has 2 values and y_scale 3");
  CHECK_ERROR(oh_run_once(oh_model(10, "QuantizeLinear", in, 2, 1, &node), in, 2, 0, &y, 1, 1), KILN_INVALID_ARGUMENT,
              "y_scale must be a scalar before opset 13, got 3 values");
  in[1] = &dscale;
  CHECK_ERROR(oh_run_once(oh_model(13, "QuantizeLinear", in, 2, 1, &node), in, 2, 0, &y, 1, 1), KILN_INVALID_ARGUMENT,
              "y_scale must be float, got double");
  kiln_tensor_release(&x);
  kiln_tensor_release(&q);
  kiln_tensor_release(&scale);
  kiln_tensor_release(&scale3);
  kiln_tensor_release(&zp32);
  kiln_tensor_release(&zp8);
  kiln_tensor_release(&zp2);
  kiln_tensor_release(&dscale);
}

static void test_dynamic_quantize(void) {
  kiln_tensor x = oh_tensor(KILN_FLOAT, 1, (int64_t[]){4}), out[3] = {{0}};
  tb_node *node;
  const kiln_tensor *in[1] = {&x};
  memset(x.data, 0, 4 * sizeof(float)); /* no range at all: scale 1, zero point 0 */
  CHECK_OK(oh_run_once(oh_model(11, "DynamicQuantizeLinear", in, 1, 3, &node), in, 1, 0, out, 3, 1));
  CHECK(*(float *)out[1].data == 1.0f && *(uint8_t *)out[2].data == 0 && ((uint8_t *)out[0].data)[3] == 0);
  for (int i = 0; i < 3; i++) kiln_tensor_release(&out[i]);
  float xs[] = {-1, 0.25f, 3, 2};
  memcpy(x.data, xs, sizeof xs);
  CHECK_OK(oh_run_once(oh_model(11, "DynamicQuantizeLinear", in, 1, 3, &node), in, 1, 0, out, 3, 1));
  float scale = 4.0f / 255.0f, zp = nearbyintf(1 / scale);
  CHECK(*(float *)out[1].data == scale && *(uint8_t *)out[2].data == (uint8_t)zp);
  for (int i = 0; i < 4; i++) CHECK(((uint8_t *)out[0].data)[i] == (uint8_t)saturate(nearbyintf(xs[i] / scale) + zp, KILN_UINT8));
  for (int i = 0; i < 3; i++) kiln_tensor_release(&out[i]);
  kiln_tensor_release(&x);
}

/* ------------------------------------------------------------------ integer matmul */

static int32_t q8(const kiln_tensor *t, int64_t i) {
  return t->dtype == KILN_UINT8 ? ((uint8_t *)t->data)[i] : ((int8_t *)t->data)[i];
}

/* Random a [.., M, K] and b [.., K, N] with broadcast batch dimensions (or 1-D operands), per-tensor
 * or per-row / per-column zero points and scales; checks MatMulInteger and QLinearMatMul. */
static void check_matmul(int threads, int64_t batch, int64_t M, int64_t K, int64_t N, int a_1d, int b_1d) {
  int a_batched = !a_1d && oh_int(0, 1), b_batched = !b_1d && (oh_int(0, 1) || !a_batched);
  kiln_tensor a = a_1d ? oh_tensor(random_q8(), 1, &K) : oh_tensor(random_q8(), a_batched ? 3 : 2, a_batched ? (int64_t[]){batch, M, K} : (int64_t[]){M, K});
  kiln_tensor b = b_1d ? oh_tensor(random_q8(), 1, &K) : oh_tensor(random_q8(), b_batched ? 3 : 2, b_batched ? (int64_t[]){batch, K, N} : (int64_t[]){K, N});
  if (a_1d) M = 1;
  if (b_1d) N = 1;
  fill_q8(&a);
  fill_q8(&b);
  int a_rows = !a_1d && oh_int(0, 1), b_cols = !b_1d && oh_int(0, 1);
  kiln_tensor za = oh_tensor(a.dtype, a_rows, &M), zb = oh_tensor(b.dtype, b_cols, &N);
  kiln_tensor sa = oh_tensor(KILN_FLOAT, a_rows, &M), sb = oh_tensor(KILN_FLOAT, b_cols, &N);
  kiln_tensor sy = oh_tensor(KILN_FLOAT, 0, NULL), zy = oh_tensor(random_q8(), 0, NULL), y = {0}, qy = {0};
  fill_q8(&za);
  fill_q8(&zb);
  fill_q8(&zy);
  oh_fill_uniform(&sa, 0.001, 0.02);
  oh_fill_uniform(&sb, 0.001, 0.02);
  oh_fill_uniform(&sy, 0.01, 0.5);
  tb_node *node;
  const kiln_tensor *in[8] = {&a, &b, &za, &zb};
  CHECK_OK(oh_run_once(oh_model(10, "MatMulInteger", in, 4, 1, &node), in, 4, 0, &y, 1, threads));
  const kiln_tensor *qin[8] = {&a, &sa, &za, &b, &sb, &zb, &sy, &zy};
  CHECK_OK(oh_run_once(oh_model(10, "QLinearMatMul", qin, 8, 1, &node), qin, 8, 0, &qy, 1, threads));
  int64_t batches = a_batched || b_batched ? batch : 1;
  CHECK(kiln_tensor_numel(&y) == batches * M * N && y.dtype == KILN_INT32);
  CHECK(kiln_tensor_numel(&qy) == batches * M * N && qy.dtype == zy.dtype);
  int bad = 0, qbad = 0;
  for (int64_t bi = 0; bi < batches && y.dtype == KILN_INT32 && qy.dtype == zy.dtype; bi++)
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = 0; n < N; n++) {
        int64_t acc = 0, ab = a_batched ? bi : 0, bb = b_batched ? bi : 0;
        for (int64_t k = 0; k < K; k++)
          acc += (int64_t)(q8(&a, (ab * M + m) * K + k) - q8(&za, a_rows ? m : 0)) *
                 (q8(&b, (bb * K + k) * N + n) - q8(&zb, b_cols ? n : 0));
        int64_t at = (bi * M + m) * N + n;
        bad += ((int32_t *)y.data)[at] != acc;
        float scale = ((float *)sa.data)[a_rows ? m : 0] * ((float *)sb.data)[b_cols ? n : 0] / *(float *)sy.data;
        float want = saturate(nearbyintf((float)acc * scale) + (float)q8(&zy, 0), zy.dtype);
        qbad += (float)q8(&qy, at) != want;
      }
  CHECK(bad == 0);
  CHECK(qbad == 0);
  kiln_tensor *all[] = {&a, &b, &za, &zb, &sa, &sb, &sy, &zy, &y, &qy};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) kiln_tensor_release(all[i]);
}

static void test_matmul_random(void) {
  for (int trial = 0; trial < 40; trial++)
    check_matmul(trial % 2 ? 2 : 1, oh_int(1, 3), oh_int(1, 6), oh_int(0, 8), oh_int(1, 7), oh_int(0, 5) == 0, oh_int(0, 5) == 0);
  check_matmul(2, 3, 64, 100, 80, 0, 0);
}

static void test_matmul_bad_inputs(void) {
  kiln_tensor a = oh_tensor(KILN_UINT8, 2, (int64_t[]){2, 3}), b = oh_tensor(KILN_INT8, 2, (int64_t[]){3, 4});
  kiln_tensor b5 = oh_tensor(KILN_INT8, 2, (int64_t[]){5, 4}), za = oh_tensor(KILN_INT8, 0, NULL), za3 = oh_tensor(KILN_UINT8, 1, (int64_t[]){3});
  kiln_tensor y = {0};
  tb_node *node;
  const kiln_tensor *in[4] = {&a, &b, &za, NULL};
  CHECK_ERROR(oh_run_once(oh_model(10, "MatMulInteger", in, 4, 1, &node), in, 4, 0, &y, 1, 1), KILN_INVALID_ARGUMENT,
              "a_zero_point has dtype int8, but a is uint8");
  in[2] = &za3;
  CHECK_ERROR(oh_run_once(oh_model(10, "MatMulInteger", in, 4, 1, &node), in, 4, 0, &y, 1, 1), KILN_INVALID_ARGUMENT,
              "a_zero_point of shape uint8[3] does not fit a of shape uint8[2,3] (one value, or one per row)");
  in[1] = &b5, in[2] = NULL;
  CHECK_ERROR(oh_run_once(oh_model(10, "MatMulInteger", in, 4, 1, &node), in, 4, 0, &y, 1, 1), KILN_INVALID_ARGUMENT,
              "inner dimensions 3 and 5 differ");
  kiln_tensor *all[] = {&a, &b, &b5, &za, &za3};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) kiln_tensor_release(all[i]);
}

/* ------------------------------------------------------------------ integer convolution */

typedef struct conv_case {
  int S;
  int64_t N, C, M, group, in[3], k[3], stride[3], dil[3], pad[6];
  const char *auto_pad;
} conv_case;

static void check_conv(int threads, const conv_case *cc) {
  int S = cc->S;
  int64_t xd[5] = {cc->N, cc->C}, wd[5] = {cc->M, cc->C / cc->group}, out[3], pb[3];
  for (int d = 0; d < S; d++) {
    xd[2 + d] = cc->in[d], wd[2 + d] = cc->k[d];
    int64_t span = (cc->k[d] - 1) * cc->dil[d] + 1;
    if (!strcmp(cc->auto_pad, "VALID")) {
      pb[d] = 0;
      out[d] = (cc->in[d] - span) / cc->stride[d] + 1;
    } else if (strcmp(cc->auto_pad, "NOTSET")) {
      out[d] = (cc->in[d] + cc->stride[d] - 1) / cc->stride[d];
      int64_t total = (out[d] - 1) * cc->stride[d] + span - cc->in[d];
      total = total < 0 ? 0 : total;
      pb[d] = strcmp(cc->auto_pad, "SAME_UPPER") ? total - total / 2 : total / 2;
    } else {
      pb[d] = cc->pad[d];
      out[d] = (cc->in[d] + cc->pad[d] + cc->pad[S + d] - span) / cc->stride[d] + 1;
    }
  }
  kiln_tensor x = oh_tensor(random_q8(), 2 + S, xd), w = oh_tensor(random_q8(), 2 + S, wd);
  int per_channel = (int)oh_int(0, 1);
  kiln_tensor zx = oh_tensor(x.dtype, 0, NULL), zw = oh_tensor(w.dtype, per_channel, &cc->M);
  kiln_tensor sx = oh_tensor(KILN_FLOAT, 0, NULL), sw = oh_tensor(KILN_FLOAT, per_channel, &cc->M), sy = oh_tensor(KILN_FLOAT, 0, NULL);
  kiln_tensor zy = oh_tensor(random_q8(), 0, NULL), bias = oh_tensor(KILN_INT32, 1, &cc->M), y = {0}, qy = {0};
  kiln_tensor *q8s[] = {&x, &w, &zx, &zw, &zy};
  for (int i = 0; i < 5; i++) fill_q8(q8s[i]);
  oh_fill_uniform(&sx, 0.001, 0.02);
  oh_fill_uniform(&sy, 0.01, 0.3);
  oh_fill_uniform(&sw, 0.001, 0.02);
  for (int64_t m = 0; m < cc->M; m++) ((int32_t *)bias.data)[m] = (int32_t)oh_int(-10000, 10000);
  tb_node *node;
  const kiln_tensor *in[4] = {&x, &w, &zx, &zw}, *qin[9] = {&x, &sx, &zx, &w, &sw, &zw, &sy, &zy, &bias};
  for (int quantized = 0; quantized < 2; quantized++) {
    tb_model *b = quantized ? oh_model(10, "QLinearConv", qin, 9, 1, &node) : oh_model(10, "ConvInteger", in, 4, 1, &node);
    tb_attr_ints(node, "strides", S, cc->stride);
    tb_attr_ints(node, "dilations", S, cc->dil);
    tb_attr_int(node, "group", cc->group);
    if (strcmp(cc->auto_pad, "NOTSET")) tb_attr_string(node, "auto_pad", cc->auto_pad);
    else tb_attr_ints(node, "pads", 2 * S, cc->pad);
    CHECK_OK(oh_run_once(b, quantized ? qin : in, quantized ? 9 : 4, 0, quantized ? &qy : &y, 1, threads));
  }
  int64_t out_size = 1, k_size = 1, in_size = 1, cg = cc->C / cc->group;
  for (int d = 0; d < S; d++) out_size *= out[d], k_size *= cc->k[d], in_size *= cc->in[d];
  CHECK(kiln_tensor_numel(&y) == cc->N * cc->M * out_size && kiln_tensor_numel(&qy) == kiln_tensor_numel(&y));
  int bad = 0, qbad = 0;
  for (int64_t n = 0; n < cc->N && kiln_tensor_numel(&y) == cc->N * cc->M * out_size; n++)
    for (int64_t m = 0; m < cc->M; m++)
      for (int64_t o = 0; o < out_size; o++) {
        int64_t acc = 0, g = m / (cc->M / cc->group);
        for (int64_t c = 0; c < cg; c++)
          for (int64_t k = 0; k < k_size; k++) {
            int64_t in_at = 0, oi = o, ki = k, inside = 1, div_o = out_size, div_k = k_size;
            for (int d = 0; d < S; d++) {
              div_o /= out[d], div_k /= cc->k[d];
              int64_t od = oi / div_o, kd = ki / div_k;
              oi %= div_o, ki %= div_k;
              int64_t id = od * cc->stride[d] - pb[d] + kd * cc->dil[d];
              inside &= id >= 0 && id < cc->in[d];
              in_at = in_at * cc->in[d] + id;
            }
            if (!inside) continue;
            acc += (int64_t)(q8(&x, (n * cc->C + g * cg + c) * in_size + in_at) - q8(&zx, 0)) *
                   (q8(&w, (m * cg + c) * k_size + k) - q8(&zw, per_channel ? m : 0));
          }
        int64_t at = (n * cc->M + m) * out_size + o;
        bad += ((int32_t *)y.data)[at] != acc;
        float mult = *(float *)sx.data * ((float *)sw.data)[per_channel ? m : 0] / *(float *)sy.data;
        float v = (float)(int32_t)(acc + ((int32_t *)bias.data)[m]) * mult;
        qbad += (float)q8(&qy, at) != saturate(nearbyintf(v) + (float)q8(&zy, 0), zy.dtype);
      }
  CHECK(bad == 0);
  CHECK(qbad == 0);
  kiln_tensor *all[] = {&x, &w, &zx, &zw, &sx, &sw, &sy, &zy, &bias, &y, &qy};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) kiln_tensor_release(all[i]);
}

static void test_conv_random(void) {
  const char *modes[] = {"NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"};
  for (int trial = 0; trial < 40; trial++) {
    conv_case cc = {.S = (int)oh_int(1, 3), .N = oh_int(1, 2), .group = oh_int(1, 2), .auto_pad = modes[oh_int(0, 4)]};
    cc.C = cc.group * oh_int(1, 3);
    cc.M = cc.group * oh_int(1, 3);
    for (int d = 0; d < cc.S; d++) {
      cc.k[d] = oh_int(1, 3), cc.stride[d] = oh_int(1, 2), cc.dil[d] = oh_int(1, 2);
      cc.pad[d] = oh_int(0, 2), cc.pad[cc.S + d] = oh_int(0, 2);
      cc.in[d] = (cc.k[d] - 1) * cc.dil[d] + oh_int(1, 5);
    }
    check_conv(trial % 2 ? 2 : 1, &cc);
  }
  conv_case big = {2, 2, 4, 8, 2, {40, 40}, {3, 3}, {1, 1}, {1, 1}, {1, 1, 1, 1}, "NOTSET"};
  check_conv(2, &big);
}

static void test_conv_bad_inputs(void) {
  kiln_tensor x = oh_tensor(KILN_UINT8, 4, (int64_t[]){1, 3, 5, 5}), w = oh_tensor(KILN_UINT8, 4, (int64_t[]){4, 2, 3, 3});
  kiln_tensor w3 = oh_tensor(KILN_UINT8, 4, (int64_t[]){4, 3, 3, 3}), zx = oh_tensor(KILN_INT8, 0, NULL), y = {0};
  tb_node *node;
  const kiln_tensor *in[4] = {&x, &w, NULL, NULL};
  CHECK_ERROR(oh_run_once(oh_model(10, "ConvInteger", in, 4, 1, &node), in, 4, 0, &y, 1, 1), KILN_INVALID_ARGUMENT,
              "group 1 does not fit x uint8[1,3,5,5] and w uint8[4,2,3,3]");
  in[1] = &w3, in[2] = &zx;
  CHECK_ERROR(oh_run_once(oh_model(10, "ConvInteger", in, 4, 1, &node), in, 4, 0, &y, 1, 1), KILN_INVALID_ARGUMENT,
              "x_zero_point has dtype int8, but x is uint8");
  in[2] = NULL;
  tb_model *b = oh_model(10, "ConvInteger", in, 4, 1, &node);
  tb_attr_ints(node, "dilations", 2, (int64_t[]){3, 3});
  CHECK_ERROR(oh_run_once(b, in, 4, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, "does not fit axis 0 of size 5");
  b = oh_model(10, "ConvInteger", in, 4, 1, &node);
  tb_attr_string(node, "auto_pad", "SAME");
  CHECK_ERROR(oh_run_once(b, in, 4, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, "unknown auto_pad 'SAME'");
  kiln_tensor *all[] = {&x, &w, &w3, &zx};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) kiln_tensor_release(all[i]);
}

TEST_MAIN(TEST(test_quantize_rounding), TEST(test_quantize_per_axis), TEST(test_dequantize_int32),
          TEST(test_quantize_bad_inputs), TEST(test_dynamic_quantize), TEST(test_matmul_random),
          TEST(test_matmul_bad_inputs), TEST(test_conv_random), TEST(test_conv_bad_inputs))
