/* Generator kernels (src/ops/generator.c): shapes from outside are checked, Range is exact for
 * int64, and random ops are deterministic with a seed, vary without one, and have the right
 * distribution. */
#include "op_harness.h"

static void test_constant_of_shape(void) {
  kiln_tensor shape = oh_vec(2, (int64_t[]){2, -3}), y;
  tb_node *n;
  CHECK_ERROR(oh_run_once(oh_model(9, "ConstantOfShape", (const kiln_tensor *[]){&shape}, 1, 1, &n), (const kiln_tensor *[]){&shape}, 1, 0, &y, 1, 2),
              KILN_INVALID_ARGUMENT, "shape[1] is negative (-3)");
  kiln_tensor_release(&shape);
  shape = oh_vec(3, (int64_t[]){(int64_t)1 << 30, (int64_t)1 << 30, 4});
  CHECK_ERROR(oh_run_once(oh_model(9, "ConstantOfShape", (const kiln_tensor *[]){&shape}, 1, 1, &n), (const kiln_tensor *[]){&shape}, 1, 0, &y, 1, 2),
              KILN_RESOURCE_EXHAUSTED, "too large");
  kiln_tensor_release(&shape);
  /* an int32 value fills the output; an empty shape makes a scalar */
  shape = oh_vec(1, (int64_t[]){5});
  tb_model *b = oh_model(9, "ConstantOfShape", (const kiln_tensor *[]){&shape}, 1, 1, &n);
  Onnx__AttributeProto *a = tb_attr(n, "value", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR);
  kiln_tensor value;
  CHECK_OK(kiln_tensor_alloc(&value, KILN_INT32, 1, (int64_t[]){1}));
  *(int32_t *)value.data = 7;
  tb_initializer(b, "unused", &value); /* borrow the builder's TensorProto conversion */
  a->t = b->graph.initializer[--b->graph.n_initializer];
  CHECK_OK(oh_run_once(b, (const kiln_tensor *[]){&shape}, 1, 0, &y, 1, 2));
  CHECK(y.dtype == KILN_INT32 && y.dims[0] == 5 && ((int32_t *)y.data)[4] == 7);
  kiln_tensor_release(&y);
  kiln_tensor_release(&value);
  kiln_tensor_release(&shape);
}

static void test_range(void) {
  kiln_tensor start = oh_scalar(INT64_MAX - 10), limit = oh_scalar(INT64_MAX), delta = oh_scalar(3), y;
  const kiln_tensor *in[3] = {&start, &limit, &delta};
  tb_node *n;
  CHECK_OK(oh_run_once(oh_model(11, "Range", in, 3, 1, &n), in, 3, 0, &y, 1, 2));
  CHECK(y.dims[0] == 4 && ((int64_t *)y.data)[3] == INT64_MAX - 1);
  kiln_tensor_release(&y);
  *(int64_t *)delta.data = 0;
  CHECK_ERROR(oh_run_once(oh_model(11, "Range", in, 3, 1, &n), in, 3, 0, &y, 1, 2), KILN_INVALID_ARGUMENT, "delta must be non-zero");
  *(int64_t *)start.data = INT64_MIN;
  *(int64_t *)delta.data = 1;
  CHECK_ERROR(oh_run_once(oh_model(11, "Range", in, 3, 1, &n), in, 3, 0, &y, 1, 2), KILN_INVALID_ARGUMENT, "has too many elements");
  *(int64_t *)start.data = 5;
  *(int64_t *)limit.data = 0;
  CHECK_OK(oh_run_once(oh_model(11, "Range", in, 3, 1, &n), in, 3, 0, &y, 1, 2));
  CHECK(y.rank == 1 && y.dims[0] == 0);
  kiln_tensor_release(&y);
  kiln_tensor_release(&start);
  kiln_tensor_release(&limit);
  kiln_tensor_release(&delta);
}

static void test_eye_like(void) {
  kiln_tensor x, y;
  CHECK_OK(kiln_tensor_alloc(&x, KILN_FLOAT, 2, (int64_t[]){3, 4}));
  tb_node *n;
  tb_model *b = oh_model(9, "EyeLike", (const kiln_tensor *[]){&x}, 1, 1, &n);
  tb_attr_int(n, "k", INT64_MIN);
  CHECK_OK(oh_run_once(b, (const kiln_tensor *[]){&x}, 1, 0, &y, 1, 2));
  float sum = 0;
  for (int i = 0; i < 12; i++) sum += ((float *)y.data)[i];
  CHECK(sum == 0);
  kiln_tensor_release(&y);
  b = oh_model(9, "EyeLike", (const kiln_tensor *[]){&x}, 1, 1, &n);
  tb_attr_int(n, "k", 1);
  tb_attr_int(n, "dtype", KILN_INT64);
  CHECK_OK(oh_run_once(b, (const kiln_tensor *[]){&x}, 1, 0, &y, 1, 2));
  CHECK(y.dtype == KILN_INT64 && memcmp(y.data, (int64_t[]){0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1}, 12 * sizeof(int64_t)) == 0);
  kiln_tensor_release(&y);
  b = oh_model(9, "EyeLike", (const kiln_tensor *[]){&x}, 1, 1, &n);
  tb_attr_int(n, "dtype", KILN_STRING);
  CHECK_ERROR(oh_run_once(b, (const kiln_tensor *[]){&x}, 1, 0, &y, 1, 2), KILN_INVALID_ARGUMENT, "dtype 8 (string) is not supported here");
  kiln_tensor_release(&x);
}

/* Runs a random op twice in one session; *first and *second receive copies. */
static void run_random_twice(const char *op, int seeded, kiln_tensor *first, kiln_tensor *second) {
  tb_model *b = tb_new(13);
  /* an unused input: the executor keys its memory plans by the inputs, and the skeleton's
   * executor passes a NULL key to memcpy for a graph with none (UBSan stops there) */
  tb_input(b, "unused", KILN_FLOAT, 0, NULL);
  tb_output(b, "y", KILN_UNDEFINED);
  tb_node *n = tb_add_node(b, op, "", "y");
  tb_attr_ints(n, "shape", 2, (int64_t[]){300, 500});
  if (strcmp(op, "RandomUniform") == 0) {
    tb_attr_float(n, "low", -2);
    tb_attr_float(n, "high", 3);
  } else {
    tb_attr_float(n, "mean", 1);
    tb_attr_float(n, "scale", 2);
  }
  if (seeded) tb_attr_float(n, "seed", 42);
  kiln_model *m;
  kiln_session *s;
  CHECK_OK(tb_load(b, &m));
  tb_free(b);
  kiln_pool *pool = NULL;
  CHECK_OK(kiln_pool_create(2, &pool));
  kiln_session_options opt = {.pool = pool};
  CHECK_OK(kiln_session_create(m, &opt, &s));
  kiln_tensor unused;
  CHECK_OK(kiln_tensor_alloc(&unused, KILN_FLOAT, 0, NULL));
  const kiln_tensor *in[1] = {&unused}, *out[1];
  CHECK_OK(kiln_session_run_tensors(s, in, out));
  CHECK_OK(kiln_tensor_copy(first, out[0]));
  CHECK_OK(kiln_session_run_tensors(s, in, out));
  CHECK_OK(kiln_tensor_copy(second, out[0]));
  kiln_tensor_release(&unused);
  kiln_session_free(s);
  kiln_model_free(m);
  kiln_pool_free(pool);
}

static void test_random(void) {
  kiln_tensor a, b, c, d;
  run_random_twice("RandomUniform", 1, &a, &b);
  run_random_twice("RandomUniform", 1, &c, &d); /* another session: the seed alone decides */
  CHECK(memcmp(a.data, b.data, kiln_tensor_nbytes(&a)) == 0 && memcmp(a.data, c.data, kiln_tensor_nbytes(&a)) == 0);
  double sum = 0, lo = 1e9, hi = -1e9;
  int64_t n = kiln_tensor_numel(&a);
  for (int64_t i = 0; i < n; i++) {
    double v = ((float *)a.data)[i];
    sum += v;
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
  }
  CHECK(lo >= -2 && hi < 3 && lo < -1.99 && hi > 2.99);
  CHECK_NEAR(sum / (double)n, 0.5, 0.02);
  kiln_tensor_release(&a);
  kiln_tensor_release(&b);
  kiln_tensor_release(&c);
  kiln_tensor_release(&d);

  run_random_twice("RandomNormal", 0, &a, &b);
  CHECK(memcmp(a.data, b.data, kiln_tensor_nbytes(&a)) != 0); /* no seed: each run draws anew */
  double s1 = 0, s2 = 0;
  for (int64_t i = 0; i < n; i++) {
    double v = ((float *)a.data)[i];
    s1 += v;
    s2 += v * v;
  }
  double mean = s1 / (double)n;
  CHECK_NEAR(mean, 1, 0.02);
  CHECK_NEAR(sqrt(s2 / (double)n - mean * mean), 2, 0.02);
  kiln_tensor_release(&a);
  kiln_tensor_release(&b);
}

static void test_random_attributes(void) {
  tb_model *b = tb_new(13);
  tb_output(b, "y", KILN_UNDEFINED);
  tb_node *n = tb_add_node(b, "RandomUniform", "", "y");
  tb_attr_int(n, "dtype", KILN_INT32);
  tb_attr_ints(n, "shape", 1, (int64_t[]){3});
  kiln_model *m;
  CHECK_ERROR(tb_load(b, &m), KILN_INVALID_ARGUMENT, "dtype 6 (int32) is not supported here");
  tb_free(b);
  b = tb_new(13);
  tb_output(b, "y", KILN_UNDEFINED);
  n = tb_add_node(b, "RandomNormal", "", "y");
  tb_attr_ints(n, "shape", 2, (int64_t[]){3, -1});
  CHECK_ERROR(tb_load(b, &m), KILN_INVALID_ARGUMENT, "shape[1] is negative (-1)");
  tb_free(b);
}

TEST_MAIN(TEST(test_constant_of_shape), TEST(test_range), TEST(test_eye_like), TEST(test_random), TEST(test_random_attributes))
