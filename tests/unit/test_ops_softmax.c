/* The softmax family (Softmax, LogSoftmax, Hardmax) against naive reference loops: both axis
 * semantics (opset 11's 2-D coercion, opset 13's single axis), the row path and the column-tile
 * path, one thread and a 2-thread pool; float16/bfloat16/double; extreme inputs; bad inputs. */
#include "op_harness.h"

/* ---------------------------------------------------------------- reference */

enum { SOFTMAX, LOG_SOFTMAX, HARDMAX };
static const char *const names[] = {"Softmax", "LogSoftmax", "Hardmax"};

/* Normalizes along [outer, n, inner] in double. */
static kiln_tensor reference(int kind, const kiln_tensor *x, int opset, int axis) {
  kiln_tensor want = oh_tensor(x->dtype, x->rank, x->dims);
  int64_t n = opset < 13 ? kx_prod(x->dims, axis, x->rank) : x->dims[axis];
  int64_t inner = opset < 13 ? 1 : kx_prod(x->dims, axis + 1, x->rank);
  int64_t lines = n ? kiln_tensor_numel(x) / n : 0;
  for (int64_t line = 0; line < lines; line++) {
    int64_t base = line / inner * n * inner + line % inner, best = 0;
    double m = -INFINITY, sum = 0;
    for (int64_t r = 0; r < n; r++) {
      double v = kiln_tensor_get_f64(x, base + r * inner);
      if (v > m) {
        m = v;
        best = r;
      }
    }
    for (int64_t r = 0; r < n; r++) sum += exp(kiln_tensor_get_f64(x, base + r * inner) - m);
    for (int64_t r = 0; r < n; r++) {
      double v = kiln_tensor_get_f64(x, base + r * inner);
      double out = kind == SOFTMAX ? exp(v - m) / sum : kind == LOG_SOFTMAX ? v - m - log(sum) : r == best;
      kx_set_f64(&want, base + r * inner, out);
    }
  }
  return want;
}

static kiln_status run_kind(int kind, int opset, const kiln_tensor *x, int64_t axis, kiln_tensor *y, int threads) {
  tb_model *b = tb_new(opset);
  const kiln_tensor *in[1] = {x};
  tb_attr_int(oh_node(b, names[kind], in, 1, 0, 1), "axis", axis);
  return oh_run(b, in, 1, 0, y, 1, threads);
}

/* ---------------------------------------------------------------- tests */

/* Random shapes and axes: rows (last axis, or any axis before opset 13), column tiles of up to 256
 * with partial last tiles, row lengths that are not multiples of 8, sizes that split over the
 * pool. */
static void test_random(void) {
  static const int64_t sizes[] = {1, 2, 3, 7, 8, 13, 64, 129, 300};
  for (int iter = 0; iter < 180; iter++) {
    int kind = iter % 3, opset = iter / 3 % 2 ? 13 : 11, rank = (int)oh_int(1, 4);
    int64_t dims[KILN_MAX_RANK], total = 1;
    for (int d = 0; d < rank; d++) {
      dims[d] = sizes[oh_int(0, 8)];
      if (total * dims[d] > 200000) dims[d] = 1;
      total *= dims[d];
    }
    int axis = (int)oh_int(0, rank - 1);
    kiln_tensor x = oh_tensor(KILN_FLOAT, rank, dims), y = {0};
    oh_fill_uniform(&x, -8, 8);
    kiln_tensor want = reference(kind, &x, opset, axis);
    CHECK_OK(run_kind(kind, opset, &x, oh_int(0, 1) ? axis : axis - rank, &y, iter % 2 ? 2 : 1));
    char what[96];
    snprintf(what, sizeof what, "%s opset %d rank %d axis %d", names[kind], opset, rank, axis);
    CHECK(oh_close_to(&y, &want, 1e-5, what));
    oh_release(&x, 1);
    kiln_tensor_release(&y);
    kiln_tensor_release(&want);
  }
}

static void test_float_types(void) {
  const kiln_dtype types[] = {KILN_DOUBLE, KILN_FLOAT16, KILN_BFLOAT16};
  for (int t = 0; t < 3; t++)
    for (int kind = 0; kind < 3; kind++)
      for (int axis = 0; axis < 3; axis++) {
        kiln_tensor x = oh_tensor(types[t], 3, (int64_t[]){4, 5, 70}), y = {0};
        oh_fill_uniform(&x, -4, 4);
        kiln_tensor want = reference(kind, &x, 13, axis);
        CHECK_OK(run_kind(kind, 13, &x, axis, &y, 2));
        CHECK(oh_close_to(&y, &want,
                       types[t] == KILN_DOUBLE    ? 1e-12
                       : types[t] == KILN_FLOAT16 ? 2e-3
                                                  : 1e-2,
                       names[kind]));
        oh_release(&x, 1);
        kiln_tensor_release(&y);
        kiln_tensor_release(&want);
      }
}

/* exp's polynomial over the whole range softmax feeds it: softmax([0, -t]) for t up to 87. */
static void test_exp_range(void) {
  kiln_tensor x = oh_tensor(KILN_FLOAT, 2, (int64_t[]){871, 2}), y = {0};
  for (int i = 0; i < 871; i++) {
    ((float *)x.data)[2 * i] = 0;
    ((float *)x.data)[2 * i + 1] = -(float)i / 10;
  }
  CHECK_OK(run_kind(SOFTMAX, 13, &x, -1, &y, 1));
  for (int i = 0; i < 871 && y.data; i++) {
    double t = -((float *)x.data)[2 * i + 1], want = exp(-t) / (1 + exp(-t)), got = ((float *)y.data)[2 * i + 1];
    if (fabs(got - want) > 1e-6 * want) {
      fprintf(stderr, "softmax([0, -%g]) = %.9g, want %.9g\n", t, got, want);
      test_failures++;
      break;
    }
  }
  kiln_tensor_release(&y);
  oh_release(&x, 1);
}

/* Large values, masked (-inf) entries, constant rows. */
static void test_extremes(void) {
  const float inf = INFINITY;
  const float v[4][4] = {{1000, 1001, 1002, 1003}, {-inf, 0, -inf, 1}, {5, 5, 5, 5}, {-3e38f, 3e38f, 0, -1}};
  kiln_tensor x = oh_tensor(KILN_FLOAT, 2, (int64_t[]){4, 4}), y = {0};
  memcpy(x.data, v, sizeof v);
  for (int kind = 0; kind < 3; kind++) {
    kiln_tensor want = reference(kind, &x, 13, 1);
    CHECK_OK(run_kind(kind, 13, &x, 1, &y, 1));
    CHECK(oh_close_to(&y, &want, 1e-6, names[kind]));
    kiln_tensor_release(&y);
    kiln_tensor_release(&want);
  }
  oh_release(&x, 1);
}

static void test_empty(void) {
  const int64_t shapes[2][2] = {{0, 4}, {3, 0}};
  for (int i = 0; i < 2; i++)
    for (int kind = 0; kind < 3; kind++) {
      kiln_tensor x = oh_tensor(KILN_FLOAT, 2, shapes[i]), y = {0};
      CHECK_OK(run_kind(kind, 13, &x, 1, &y, 1));
      CHECK(y.rank == 2 && y.dims[0] == shapes[i][0] && y.dims[1] == shapes[i][1]);
      oh_release(&x, 1);
      kiln_tensor_release(&y);
    }
}

static void test_errors(void) {
  kiln_tensor x = oh_tensor(KILN_FLOAT, 2, (int64_t[]){2, 3}), y = {0};
  CHECK_ERROR(run_kind(SOFTMAX, 13, &x, 2, &y, 1), KILN_INVALID_ARGUMENT, "axis 2 is out of range for rank 2");
  CHECK_ERROR(run_kind(LOG_SOFTMAX, 11, &x, -3, &y, 1), KILN_INVALID_ARGUMENT, "axis -3 is out of range for rank 2");
  kiln_tensor scalar = oh_tensor(KILN_FLOAT, 0, NULL);
  CHECK_ERROR(run_kind(HARDMAX, 13, &scalar, -1, &y, 1), KILN_INVALID_ARGUMENT, "out of range for rank 0");
  kiln_tensor ints = oh_tensor(KILN_INT32, 2, (int64_t[]){2, 3});
  CHECK_ERROR(run_kind(SOFTMAX, 13, &ints, 1, &y, 1), KILN_UNIMPLEMENTED, "dtype int32");
  oh_release(&x, 1);
  oh_release(&scalar, 1);
  oh_release(&ints, 1);
}

TEST_MAIN(TEST(test_random), TEST(test_float_types), TEST(test_exp_range), TEST(test_extremes), TEST(test_empty),
          TEST(test_errors))
