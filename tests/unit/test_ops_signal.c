/* Signal kernels: DFT and STFT against a naive O(n^2) DFT over random lengths, layouts and thread
 * counts (radix-2 and Bluestein paths), the windows, MelWeightMatrix and bad inputs. */
#include "op_harness.h"

#define PI 3.14159265358979323846

/* The DFT of n complex values (x: re, im pairs, `count` of them, zero-padded) by the definition. */
static void naive_dft(const double *x, int64_t count, int64_t n, int inverse, double *out) {
  for (int64_t k = 0; k < n; k++) {
    double re = 0, im = 0;
    for (int64_t j = 0; j < count && j < n; j++) {
      double a = (inverse ? 2 : -2) * PI * (double)(j * k % n) / (double)n;
      re += x[2 * j] * cos(a) - x[2 * j + 1] * sin(a);
      im += x[2 * j] * sin(a) + x[2 * j + 1] * cos(a);
    }
    out[2 * k] = inverse ? re / (double)n : re, out[2 * k + 1] = inverse ? im / (double)n : im;
  }
}

/* One random DFT: shape [batch, d1, d2, comps] with the transform along axis 1 or 2. */
static void check_dft(int threads, int64_t batch, int64_t len, int64_t other, int axis, int comps, int inverse,
                      int onesided, int64_t dft_length, kiln_dtype dtype) {
  int64_t dims[4] = {batch, axis == 1 ? len : other, axis == 1 ? other : len, comps};
  kiln_tensor x, y = {0}, len_t = oh_scalar(dft_length);
  CHECK_OK(kiln_tensor_alloc(&x, dtype, 4, dims));
  oh_fill_uniform(&x, -1, 1);
  tb_node *node;
  const kiln_tensor *in[2] = {&x, dft_length > 0 ? &len_t : NULL};
  tb_model *b = oh_model(17, "DFT", in, 2, 1, &node);
  tb_attr_int(node, "axis", axis);
  tb_attr_int(node, "inverse", inverse);
  tb_attr_int(node, "onesided", onesided);
  CHECK_OK(oh_run_once(b, in, 2, 0, &y, 1, threads));
  int64_t n = dft_length > 0 ? dft_length : len, out_len = onesided ? n / 2 + 1 : n;
  int64_t inner = axis == 1 ? other : 1, outer = axis == 1 ? batch : batch * other;
  CHECK(y.dtype == dtype && y.rank == 4 && y.dims[axis] == out_len && y.dims[3] == 2);
  double *line = malloc((size_t)(2 * len + 2) * sizeof *line), *want = malloc((size_t)(2 * n) * sizeof *want);
  double worst = 0, peak = 0;
  for (int64_t o = 0; o < outer && y.rank == 4; o++)
    for (int64_t i = 0; i < inner; i++) {
      for (int64_t j = 0; j < len; j++)
        for (int part = 0; part < 2; part++) {
          int64_t at = ((o * len + j) * inner + i) * comps + part;
          double v = part < comps ? kiln_tensor_get_f64(&x, at) : 0;
          line[2 * j + part] = v;
        }
      naive_dft(line, len, n, inverse, want);
      for (int64_t k = 0; k < out_len; k++)
        for (int part = 0; part < 2; part++) {
          double got = kiln_tensor_get_f64(&y, ((o * out_len + k) * inner + i) * 2 + part);
          worst = fmax(worst, fabs(got - want[2 * k + part]));
          peak = fmax(peak, fabs(want[2 * k + part]));
        }
    }
  /* computed in double: the error is the output's own rounding */
  double tol = (dtype == KILN_FLOAT ? 2e-7 : 1e-12) * (1 + peak);
  if (!(worst <= tol))
    fprintf(stderr, "DFT len %lld n %lld axis %d comps %d inverse %d onesided %d: error %g > %g\n", (long long)len,
            (long long)n, axis, comps, inverse, onesided, worst, tol);
  CHECK(worst <= tol);
  free(line);
  free(want);
  kiln_tensor_release(&x);
  kiln_tensor_release(&y);
  kiln_tensor_release(&len_t);
}

static void test_dft_random(void) {
  for (int trial = 0; trial < 80; trial++) {
    int64_t len = trial < 40 ? oh_int(1, 40) : (int64_t[]){64, 128, 97, 100, 127, 256, 3, 2}[trial % 8];
    int64_t dft_length = oh_int(0, 2) == 0 ? oh_int(1, 2 * len + 2) : 0;
    check_dft(trial % 2 ? 2 : 1, oh_int(1, 3), len, oh_int(1, 3), (int)oh_int(1, 2), (int)oh_int(1, 2),
              (int)oh_int(0, 1), (int)oh_int(0, 1), dft_length, oh_int(0, 3) ? KILN_FLOAT : KILN_DOUBLE);
  }
  /* big enough that the pool splits the lines */
  check_dft(2, 4, 1000, 6, 1, 2, 0, 0, 0, KILN_FLOAT);
  check_dft(2, 4, 1024, 6, 2, 1, 1, 0, 0, KILN_DOUBLE);
}

static void test_dft_bad_inputs(void) {
  kiln_tensor x3, x, zero = oh_scalar(0), y = {0};
  CHECK_OK(kiln_tensor_alloc(&x3, KILN_FLOAT, 3, (int64_t[]){1, 5, 3}));
  CHECK_OK(kiln_tensor_alloc(&x, KILN_FLOAT, 3, (int64_t[]){1, 5, 1}));
  tb_node *node;
  const kiln_tensor *in[2] = {&x3, NULL};
  CHECK_ERROR(oh_run_once(oh_model(17, "DFT", in, 1, 1, &node), in, 1, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, "1 or 2], got float[1,5,3]");
  in[0] = &x;
  tb_model *b = oh_model(17, "DFT", in, 1, 1, &node);
  tb_attr_int(node, "axis", 2);
  CHECK_ERROR(oh_run_once(b, in, 1, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, "axis 2 is the real/imaginary dimension");
  b = oh_model(17, "DFT", in, 1, 1, &node);
  tb_attr_int(node, "axis", 3);
  CHECK_ERROR(oh_run_once(b, in, 1, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, "axis 3 is out of range for rank 3");
  b = oh_model(17, "DFT", in, 1, 1, &node);
  tb_attr_int(node, "onesided", 2);
  CHECK_ERROR(oh_run_once(b, in, 1, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, "onesided and inverse must be 0 or 1");
  in[1] = &zero;
  CHECK_ERROR(oh_run_once(oh_model(17, "DFT", in, 2, 1, &node), in, 2, 0, &y, 1, 1), KILN_INVALID_ARGUMENT,
              "dft_length must be positive, got 0");
  /* an odd, non-power-of-two length padded from an empty signal is all zeros */
  kiln_tensor empty, seven = oh_scalar(7);
  CHECK_OK(kiln_tensor_alloc(&empty, KILN_FLOAT, 3, (int64_t[]){2, 0, 2}));
  in[0] = &empty, in[1] = &seven;
  CHECK_OK(oh_run_once(oh_model(17, "DFT", in, 2, 1, &node), in, 2, 0, &y, 1, 1));
  CHECK(y.rank == 3 && y.dims[0] == 2 && y.dims[1] == 7 && y.dims[2] == 2);
  for (int i = 0; i < 28 && y.data; i++) CHECK(((float *)y.data)[i] == 0);
  kiln_tensor_release(&y);
  kiln_tensor_release(&empty);
  kiln_tensor_release(&seven);
  kiln_tensor_release(&x3);
  kiln_tensor_release(&x);
  kiln_tensor_release(&zero);
}

static void test_stft(void) {
  for (int trial = 0; trial < 12; trial++) {
    int64_t frame = oh_int(1, trial < 10 ? 20 : 300), length = frame + oh_int(0, trial < 10 ? 39 : 1999), step = oh_int(1, 7);
    int comps = (int)oh_int(1, 2), onesided = comps == 1 && oh_int(0, 1), batch = oh_int(1, 2);
    kiln_tensor x, window, frame_t = oh_scalar(frame), step_t = oh_scalar(step), y = {0};
    CHECK_OK(kiln_tensor_alloc(&x, KILN_FLOAT, 3, (int64_t[]){batch, length, comps}));
    CHECK_OK(kiln_tensor_alloc(&window, KILN_FLOAT, 1, &frame));
    oh_fill_uniform(&x, -1, 1);
    oh_fill_uniform(&window, -1, 1);
    tb_node *node;
    const kiln_tensor *in[4] = {&x, &step_t, &window, trial % 2 ? &frame_t : NULL};
    tb_model *b = oh_model(17, "STFT", in, 4, 1, &node);
    tb_attr_int(node, "onesided", onesided);
    CHECK_OK(oh_run_once(b, in, 4, 0, &y, 1, trial % 2 ? 2 : 1));
    int64_t frames = (length - frame) / step + 1, out_len = onesided ? frame / 2 + 1 : frame;
    CHECK(y.rank == 4 && y.dims[0] == batch && y.dims[1] == frames && y.dims[2] == out_len && y.dims[3] == 2);
    double *line = malloc((size_t)(2 * frame) * sizeof *line), *want = malloc((size_t)(2 * frame) * sizeof *want);
    double worst = 0, peak = 0;
    for (int64_t bi = 0; bi < batch && y.rank == 4; bi++)
      for (int64_t f = 0; f < frames; f++) {
        for (int64_t j = 0; j < frame; j++)
          for (int part = 0; part < 2; part++)
            line[2 * j + part] = part < comps ? ((float *)x.data)[(bi * length + f * step + j) * comps + part] *
                                                   (double)((float *)window.data)[j]
                                              : 0;
        naive_dft(line, frame, frame, 0, want);
        for (int64_t k = 0; k < out_len * 2; k++) {
          worst = fmax(worst, fabs(((float *)y.data)[((bi * frames + f) * out_len) * 2 + k] - want[k]));
          peak = fmax(peak, fabs(want[k]));
        }
      }
    CHECK(worst <= 2e-7 * (1 + peak));
    free(line);
    free(want);
    kiln_tensor_release(&y);
    kiln_tensor_release(&x);
    kiln_tensor_release(&window);
    kiln_tensor_release(&frame_t);
    kiln_tensor_release(&step_t);
  }
}

static void test_stft_bad_inputs(void) {
  kiln_tensor x, window, y = {0}, step = oh_scalar(2), len = oh_scalar(5), zero = oh_scalar(0), long_len = oh_scalar(20);
  CHECK_OK(kiln_tensor_alloc(&x, KILN_FLOAT, 3, (int64_t[]){1, 16, 1}));
  CHECK_OK(kiln_tensor_alloc(&window, KILN_FLOAT, 1, (int64_t[]){4}));
  tb_node *node;
  const kiln_tensor *in[4] = {&x, &step, &window, &len};
  CHECK_ERROR(oh_run_once(oh_model(17, "STFT", in, 4, 1, &node), in, 4, 0, &y, 1, 1), KILN_INVALID_ARGUMENT,
              "frame_length 5 differs from the window's length 4");
  in[2] = NULL;
  in[3] = NULL;
  CHECK_ERROR(oh_run_once(oh_model(17, "STFT", in, 4, 1, &node), in, 4, 0, &y, 1, 1), KILN_INVALID_ARGUMENT,
              "either window or frame_length must be given");
  in[3] = &long_len;
  CHECK_ERROR(oh_run_once(oh_model(17, "STFT", in, 4, 1, &node), in, 4, 0, &y, 1, 1), KILN_INVALID_ARGUMENT,
              "frame length 20 must be between 1 and the signal length 16");
  in[1] = &zero;
  in[3] = &len;
  CHECK_ERROR(oh_run_once(oh_model(17, "STFT", in, 4, 1, &node), in, 4, 0, &y, 1, 1), KILN_INVALID_ARGUMENT,
              "frame_step must be positive, got 0");
  kiln_tensor_release(&x);
  kiln_tensor_release(&window);
  kiln_tensor_release(&step);
  kiln_tensor_release(&len);
  kiln_tensor_release(&zero);
  kiln_tensor_release(&long_len);
}

static void test_windows(void) {
  kiln_tensor size = oh_scalar(8), one = oh_scalar(1), y = {0};
  tb_node *node;
  const kiln_tensor *in[1] = {&size};
  /* periodic Hann of 8 points = the first 8 of a symmetric one of 9, in double */
  tb_model *b = oh_model(17, "HannWindow", in, 1, 1, &node);
  tb_attr_int(node, "output_datatype", KILN_DOUBLE);
  CHECK_OK(oh_run_once(b, in, 1, 0, &y, 1, 1));
  CHECK(y.dtype == KILN_DOUBLE && y.rank == 1 && y.dims[0] == 8);
  for (int k = 0; k < 8 && y.dtype == KILN_DOUBLE; k++)
    CHECK_NEAR(((double *)y.data)[k], 0.5 - 0.5 * cos(2 * PI * k / 8), 1e-12);
  kiln_tensor_release(&y);
  /* a symmetric window of one point is [1] */
  in[0] = &one;
  b = oh_model(17, "BlackmanWindow", in, 1, 1, &node);
  tb_attr_int(node, "periodic", 0);
  CHECK_OK(oh_run_once(b, in, 1, 0, &y, 1, 1));
  CHECK(y.dims[0] == 1 && ((float *)y.data)[0] == 1.0f);
  kiln_tensor_release(&y);
  b = oh_model(17, "HammingWindow", in, 1, 1, &node);
  tb_attr_int(node, "output_datatype", KILN_STRING);
  CHECK_ERROR(oh_run_once(b, in, 1, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, "output_datatype 8 is not a numeric tensor type");
  kiln_tensor neg = oh_scalar(-1);
  in[0] = &neg;
  CHECK_ERROR(oh_run_once(oh_model(17, "HannWindow", in, 1, 1, &node), in, 1, 0, &y, 1, 1), KILN_INVALID_ARGUMENT,
              "size must not be negative, got -1");
  kiln_tensor_release(&neg);
  kiln_tensor_release(&size);
  kiln_tensor_release(&one);
}

static void test_mel(void) {
  kiln_tensor bins = oh_scalar(6), dft = oh_scalar(15), rate = oh_scalar(16000), lo, hi, y = {0};
  CHECK_OK(kiln_tensor_alloc(&lo, KILN_FLOAT, 0, NULL));
  CHECK_OK(kiln_tensor_alloc(&hi, KILN_FLOAT, 0, NULL));
  *(float *)lo.data = 0;
  *(float *)hi.data = 8000; /* Nyquist: with an odd dft_length the last corner falls off the matrix */
  tb_node *node;
  const kiln_tensor *in[5] = {&bins, &dft, &rate, &lo, &hi};
  CHECK_OK(oh_run_once(oh_model(17, "MelWeightMatrix", in, 5, 1, &node), in, 5, 0, &y, 1, 1));
  CHECK(y.rank == 2 && y.dims[0] == 8 && y.dims[1] == 6);
  for (int64_t i = 0; i < kiln_tensor_numel(&y); i++) CHECK(((float *)y.data)[i] >= 0 && ((float *)y.data)[i] <= 1);
  kiln_tensor_release(&y);
  *(float *)hi.data = -1;
  CHECK_ERROR(oh_run_once(oh_model(17, "MelWeightMatrix", in, 5, 1, &node), in, 5, 0, &y, 1, 1), KILN_INVALID_ARGUMENT,
              "need 0 <= lower_edge_hertz <= upper_edge_hertz");
  kiln_tensor_release(&bins);
  kiln_tensor_release(&dft);
  kiln_tensor_release(&rate);
  kiln_tensor_release(&lo);
  kiln_tensor_release(&hi);
}

TEST_MAIN(TEST(test_dft_random), TEST(test_dft_bad_inputs), TEST(test_stft), TEST(test_stft_bad_inputs),
          TEST(test_windows), TEST(test_mel))
