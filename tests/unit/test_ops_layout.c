/* Layout kernels (src/ops/layout.c): views stay views, the copy paths (Transpose's blocked path,
 * Slice, Concat, Tile, Pad) match naive references over random shapes on a 2-thread pool, and
 * bad inputs get clear errors. */
#include "op_harness.h"

/* Runs a one-input, one-output node whose attributes `setup` sets, on a 2-thread pool. */
static kiln_status run1(int opset, const char *op, const kiln_tensor *x, void (*setup)(tb_node *), kiln_tensor *y) {
  tb_node *n;
  tb_model *b = oh_model(opset, op, &x, 1, 1, &n);
  if (setup) setup(n);
  return oh_run_once(b, &x, 1, 0, y, 1, 2);
}

static const kiln_dtype copy_dtypes[] = {KILN_FLOAT, KILN_UINT8, KILN_FLOAT16, KILN_DOUBLE, KILN_STRING};

/* ---- views */

static void test_views_share_memory(void) {
  tb_model *b = tb_new(13);
  tb_input(b, "x", KILN_FLOAT, 3, (int64_t[]){2, 3, 4});
  tb_output(b, "y", KILN_FLOAT);
  int64_t shape[] = {4, -1, 1};
  kiln_tensor shape_t = oh_vec(3, shape);
  tb_initializer(b, "shape", &shape_t);
  kiln_tensor_release(&shape_t);
  tb_add_node(b, "Reshape", "x,shape", "a");
  tb_add_node(b, "Squeeze", "a", "s");
  tb_add_node(b, "Flatten", "s", "f");
  tb_add_node(b, "Identity", "f", "y");
  kiln_model *m;
  CHECK_OK(tb_load(b, &m));
  tb_free(b);
  kiln_session *s;
  CHECK_OK(kiln_session_create(m, NULL, &s));
  kiln_tensor x = oh_random_tensor(KILN_FLOAT, 3, (int64_t[]){2, 3, 4});
  const kiln_tensor *in[1] = {&x}, *out[1];
  for (int rep = 0; rep < 2; rep++) { /* recorded run, then planned run */
    CHECK_OK(kiln_session_run_tensors(s, in, out));
    CHECK(out[0]->data == x.data);
    CHECK(out[0]->rank == 2 && out[0]->dims[0] == 4 && out[0]->dims[1] == 6);
  }
  kiln_tensor_release(&x);
  kiln_session_free(s);
  kiln_model_free(m);
}

static void test_reshape_errors(void) {
  kiln_tensor x = oh_random_tensor(KILN_FLOAT, 2, (int64_t[]){2, 3}), y;
  struct {
    int n;
    int64_t shape[3];
    const char *error;
  } cases[] = {
      {2, {-1, -1}, "more than one -1"},
      {2, {4, 2}, "cannot reshape [2,3] (6 elements) into [4,2] (8 elements)"},
      {2, {-2, 3}, "shape[0] is -2"},
      {3, {1, 1, 0}, "shape[2] is 0 (copy the input's dim) but the input has rank 2"},
      {2, {-1, 4}, "the -1 dim cannot be inferred"},
      {2, {(int64_t)1 << 40, (int64_t)1 << 40}, "too many elements"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    kiln_tensor shape = oh_vec(cases[i].n, cases[i].shape);
    const kiln_tensor *in[2] = {&x, &shape};
    tb_node *n;
    CHECK_ERROR(oh_run_once(oh_model(13, "Reshape", in, 2, 1, &n), in, 2, 0, &y, 1, 2), KILN_INVALID_ARGUMENT, cases[i].error);
    kiln_tensor_release(&shape);
  }
  /* allowzero: 0 is a real dim, so [0, 3] holds no elements */
  kiln_tensor empty = oh_random_tensor(KILN_FLOAT, 2, (int64_t[]){0, 3}), shape = oh_vec(2, (int64_t[]){3, 0});
  const kiln_tensor *in[2] = {&empty, &shape};
  tb_node *n;
  tb_model *b = oh_model(14, "Reshape", in, 2, 1, &n);
  tb_attr_int(n, "allowzero", 1);
  CHECK_OK(oh_run_once(b, in, 2, 0, &y, 1, 2));
  CHECK(y.rank == 2 && y.dims[0] == 3 && y.dims[1] == 0);
  kiln_tensor_release(&y);
  kiln_tensor_release(&shape);
  kiln_tensor_release(&empty);
  kiln_tensor_release(&x);
}

static void squeeze_axis1(tb_node *n) { tb_attr_ints(n, "axes", 1, (int64_t[]){1}); }
static void unsqueeze_twice(tb_node *n) { tb_attr_ints(n, "axes", 2, (int64_t[]){1, -3}); }
static void flatten_axis3(tb_node *n) { tb_attr_int(n, "axis", 3); }
static void unsqueeze_many(tb_node *n) { tb_attr_ints(n, "axes", 8, (int64_t[]){0, 1, 2, 3, 4, 5, 6, 7}); }

static void test_view_errors(void) {
  kiln_tensor x = oh_random_tensor(KILN_FLOAT, 2, (int64_t[]){2, 3}), y;
  CHECK_ERROR(run1(11, "Squeeze", &x, squeeze_axis1, &y), KILN_INVALID_ARGUMENT, "cannot squeeze axis 1 of size 3");
  CHECK_ERROR(run1(11, "Unsqueeze", &x, unsqueeze_twice, &y), KILN_INVALID_ARGUMENT, "axis -3 appears more than once");
  CHECK_ERROR(run1(11, "Unsqueeze", &x, unsqueeze_many, &y), KILN_UNIMPLEMENTED, "output rank 10 is above kiln's limit");
  CHECK_ERROR(run1(13, "Flatten", &x, flatten_axis3, &y), KILN_INVALID_ARGUMENT, "axis 3 is out of range [-2, 2]");
  /* Squeeze 13 takes axes as an input */
  kiln_tensor axes = oh_vec(1, (int64_t[]){5});
  const kiln_tensor *in[2] = {&x, &axes};
  tb_node *n;
  CHECK_ERROR(oh_run_once(oh_model(13, "Squeeze", in, 2, 1, &n), in, 2, 0, &y, 1, 2), KILN_INVALID_ARGUMENT, "axes[0]: axis 5 is out of range for rank 2");
  kiln_tensor_release(&axes);
  kiln_tensor_release(&x);
}

/* ---- Dropout */

static void test_dropout(void) {
  kiln_tensor x, ratio, train, out[2];
  CHECK_OK(kiln_tensor_alloc(&x, KILN_FLOAT, 2, (int64_t[]){100, 100}));
  for (int i = 0; i < 10000; i++) ((float *)x.data)[i] = 1 + (float)(i % 7);
  CHECK_OK(kiln_tensor_alloc(&ratio, KILN_FLOAT, 0, NULL));
  CHECK_OK(kiln_tensor_alloc(&train, KILN_BOOL, 0, NULL));
  *(float *)ratio.data = 0.25f;
  const kiln_tensor *in[3] = {&x, &ratio, &train};
  tb_node *n;
  /* inference: the input and an all-true mask */
  CHECK_OK(oh_run_once(oh_model(13, "Dropout", in, 3, 2, &n), in, 3, 0, out, 2, 2));
  CHECK(oh_same(&out[0], &x));
  CHECK(out[1].dtype == KILN_BOOL && memchr(out[1].data, 0, 10000) == NULL);
  kiln_tensor_release(&out[0]);
  kiln_tensor_release(&out[1]);
  /* training: kept elements scaled by 1 / (1 - ratio), about a quarter dropped; a seed repeats */
  *(uint8_t *)train.data = 1;
  kiln_tensor again[2];
  for (int rep = 0; rep < 2; rep++) {
    tb_model *b = oh_model(13, "Dropout", in, 3, 2, &n);
    tb_attr_int(n, "seed", 7);
    CHECK_OK(oh_run_once(b, in, 3, 0, rep ? again : out, 2, 2));
  }
  int dropped = 0, consistent = 1;
  for (int i = 0; i < 10000; i++) {
    int keep = ((uint8_t *)out[1].data)[i];
    float want = keep ? ((float *)x.data)[i] / 0.75f : 0;
    dropped += !keep;
    consistent &= fabsf(((float *)out[0].data)[i] - want) < 1e-5f;
  }
  CHECK(consistent);
  CHECK(dropped > 2200 && dropped < 2800);
  CHECK(oh_same(&out[0], &again[0]) && oh_same(&out[1], &again[1]));
  for (int i = 0; i < 2; i++) {
    kiln_tensor_release(&out[i]);
    kiln_tensor_release(&again[i]);
  }
  *(float *)ratio.data = 1.5f;
  CHECK_ERROR(oh_run_once(oh_model(13, "Dropout", in, 3, 1, &n), in, 3, 0, out, 1, 2), KILN_INVALID_ARGUMENT, "ratio 1.5 is outside [0, 1)");
  kiln_tensor_release(&x);
  kiln_tensor_release(&ratio);
  kiln_tensor_release(&train);
}

/* ---- Shape */

static void shape_slice(tb_node *n) {
  tb_attr_int(n, "start", -3);
  tb_attr_int(n, "end", 100);
}

static void test_shape(void) {
  kiln_tensor x = oh_random_tensor(KILN_UINT8, 4, (int64_t[]){2, 3, 4, 5}), y;
  CHECK_OK(run1(15, "Shape", &x, shape_slice, &y));
  CHECK(y.rank == 1 && y.dims[0] == 3 && ((int64_t *)y.data)[0] == 3 && ((int64_t *)y.data)[2] == 5);
  kiln_tensor_release(&y);
  kiln_tensor_release(&x);
}

/* ---- Transpose */

static int64_t transpose_perm[KILN_MAX_RANK];
static int transpose_rank;
static void set_perm(tb_node *n) { tb_attr_ints(n, "perm", transpose_rank, transpose_perm); }

static void check_transpose(kiln_dtype dtype, int rank, const int64_t *dims, const int64_t *perm) {
  kiln_tensor x = oh_random_tensor(dtype, rank, dims), want, y;
  int64_t out_dims[KILN_MAX_RANK], idx[KILN_MAX_RANK], src[KILN_MAX_RANK];
  for (int d = 0; d < rank; d++) out_dims[d] = dims[perm[d]];
  CHECK_OK(kiln_tensor_alloc(&want, dtype, rank, out_dims));
  for (int64_t i = 0; i < kiln_tensor_numel(&want); i++) {
    oh_unravel(i, rank, out_dims, idx);
    for (int d = 0; d < rank; d++) src[perm[d]] = idx[d];
    oh_put(&want, i, &x, oh_ravel(rank, dims, src));
  }
  memcpy(transpose_perm, perm, (size_t)rank * sizeof *perm);
  transpose_rank = rank;
  CHECK_OK(run1(13, "Transpose", &x, set_perm, &y));
  if (!oh_same(&y, &want)) {
    char a[96];
    fprintf(stderr, "Transpose of %s differs from the reference\n", kiln_tensor_describe(&x, a, sizeof a));
    test_failures++;
  }
  kiln_tensor_release(&y);
  kiln_tensor_release(&want);
  kiln_tensor_release(&x);
}

static void test_transpose_matches_reference(void) {
  /* the layouts models use: 2-D, NCHW <-> NHWC, last-two swap, heads split (0, 2, 1, 3) */
  check_transpose(KILN_FLOAT, 2, (int64_t[]){300, 257}, (int64_t[]){1, 0});
  check_transpose(KILN_FLOAT, 4, (int64_t[]){2, 3, 67, 129}, (int64_t[]){0, 2, 3, 1});
  check_transpose(KILN_FLOAT, 4, (int64_t[]){2, 67, 129, 3}, (int64_t[]){0, 3, 1, 2});
  check_transpose(KILN_FLOAT16, 4, (int64_t[]){2, 12, 100, 64}, (int64_t[]){0, 1, 3, 2});
  check_transpose(KILN_FLOAT, 4, (int64_t[]){2, 100, 12, 64}, (int64_t[]){0, 2, 1, 3});
  /* attention's keys, [S, B*H, d] -> [B*H, d, S]: a 2-D transpose of 2560 rows in strips, 8x8 blocks */
  check_transpose(KILN_FLOAT, 3, (int64_t[]){128, 40, 64}, (int64_t[]){1, 2, 0});
  check_transpose(KILN_INT32, 3, (int64_t[]){13, 37, 9}, (int64_t[]){1, 2, 0});
  check_transpose(KILN_DOUBLE, 3, (int64_t[]){1, 1, 70000}, (int64_t[]){2, 0, 1});
  check_transpose(KILN_STRING, 3, (int64_t[]){5, 40, 3}, (int64_t[]){2, 0, 1});
  for (int iter = 0; iter < 40; iter++) {
    int rank = (int)oh_int(0, 6);
    int64_t dims[KILN_MAX_RANK], perm[KILN_MAX_RANK];
    for (int d = 0; d < rank; d++) {
      dims[d] = oh_int(iter % 5 == 0 ? 0 : 1, rank <= 3 ? 90 : 9);
      perm[d] = d;
    }
    for (int d = rank - 1; d > 0; d--) { /* Fisher-Yates */
      int e = (int)oh_int(0, d);
      int64_t t = perm[d];
      perm[d] = perm[e];
      perm[e] = t;
    }
    check_transpose(copy_dtypes[iter % 5], rank, dims, perm);
  }
}

static void perm_repeated(tb_node *n) { tb_attr_ints(n, "perm", 3, (int64_t[]){0, 2, 2}); }
static void perm_short(tb_node *n) { tb_attr_ints(n, "perm", 2, (int64_t[]){1, 0}); }

static void test_transpose_errors(void) {
  kiln_tensor x = oh_random_tensor(KILN_FLOAT, 3, (int64_t[]){2, 3, 4}), y;
  CHECK_ERROR(run1(13, "Transpose", &x, perm_repeated, &y), KILN_INVALID_ARGUMENT, "perm [0,2,2] is not a permutation of 0..2");
  CHECK_ERROR(run1(13, "Transpose", &x, perm_short, &y), KILN_INVALID_ARGUMENT, "perm has 2 values for an input of rank 3");
  kiln_tensor_release(&x);
}

/* ---- Slice */

static void test_slice_matches_reference(void) {
  for (int iter = 0; iter < 60; iter++) {
    int rank = (int)oh_int(1, 4), n = (int)oh_int(1, rank);
    int64_t dims[KILN_MAX_RANK], starts[KILN_MAX_RANK], ends[KILN_MAX_RANK], axes[KILN_MAX_RANK], steps[KILN_MAX_RANK];
    for (int d = 0; d < rank; d++) dims[d] = oh_int(iter % 7 == 0 ? 0 : 1, rank == 1 ? 200000 : 60);
    int64_t first[KILN_MAX_RANK] = {0}, step[KILN_MAX_RANK], len[KILN_MAX_RANK];
    for (int d = 0; d < rank; d++) {
      step[d] = 1;
      len[d] = dims[d];
    }
    int used = 0;
    for (int i = 0; i < n; i++) {
      int a;
      do a = (int)oh_int(0, rank - 1);
      while ((used >> a) & 1);
      used |= 1 << a;
      axes[i] = oh_rand() % 2 ? a : a - rank;
      int64_t dim = dims[a];
      steps[i] = oh_rand() % 3 ? oh_int(1, 3) : -oh_int(1, 3);
      starts[i] = oh_rand() % 5 ? oh_int(-dim - 2, dim + 2) : (oh_rand() % 2 ? INT64_MAX : INT64_MIN);
      ends[i] = oh_rand() % 5 ? oh_int(-dim - 2, dim + 2) : (oh_rand() % 2 ? INT64_MAX : INT64_MIN);
      /* ONNX's clamping: Python's slice.indices (PySlice_AdjustIndices), which numpy follows, except
       * that a start before the first element with a negative step is clamped to element 0 (Python
       * takes nothing; ONNX Runtime follows the spec) */
      int64_t s = starts[i], e = ends[i], count = 0;
      if (s < 0) s = s + dim < 0 ? (steps[i] < 0 && dim == 0 ? -1 : 0) : s + dim;
      else if (s >= dim) s = steps[i] < 0 ? dim - 1 : dim;
      if (e < 0) e = e + dim < 0 ? (steps[i] < 0 ? -1 : 0) : e + dim;
      else if (e >= dim) e = steps[i] < 0 ? dim - 1 : dim;
      for (int64_t k = s; steps[i] > 0 ? k < e : k > e; k += steps[i]) count++;
      first[a] = s;
      step[a] = steps[i];
      len[a] = count;
    }
    kiln_dtype dtype = copy_dtypes[iter % 5];
    kiln_tensor x = oh_random_tensor(dtype, rank, dims), want, y;
    CHECK_OK(kiln_tensor_alloc(&want, dtype, rank, len));
    int64_t idx[KILN_MAX_RANK];
    for (int64_t i = 0; i < kiln_tensor_numel(&want); i++) {
      oh_unravel(i, rank, len, idx);
      for (int d = 0; d < rank; d++) idx[d] = first[d] + idx[d] * step[d];
      oh_put(&want, i, &x, oh_ravel(rank, dims, idx));
    }
    kiln_tensor t_starts = oh_vec(n, starts), t_ends = oh_vec(n, ends), t_axes = oh_vec(n, axes), t_steps = oh_vec(n, steps);
    const kiln_tensor *in[5] = {&x, &t_starts, &t_ends, &t_axes, &t_steps};
    tb_node *node;
    CHECK_OK(oh_run_once(oh_model(13, "Slice", in, 5, 1, &node), in, 5, 0, &y, 1, 2));
    CHECK(oh_same(&y, &want));
    kiln_tensor_release(&y);
    kiln_tensor_release(&want);
    kiln_tensor_release(&x);
    kiln_tensor_release(&t_starts);
    kiln_tensor_release(&t_ends);
    kiln_tensor_release(&t_axes);
    kiln_tensor_release(&t_steps);
  }
}

static void test_slice_errors(void) {
  kiln_tensor x = oh_random_tensor(KILN_FLOAT, 2, (int64_t[]){4, 5}), y;
  kiln_tensor starts = oh_vec(1, (int64_t[]){0}), ends = oh_vec(1, (int64_t[]){3}), axes = oh_vec(1, (int64_t[]){2});
  kiln_tensor zero = oh_vec(1, (int64_t[]){0}), twice = oh_vec(2, (int64_t[]){1, -1}), two = oh_vec(2, (int64_t[]){0, 0});
  tb_node *n;
  const kiln_tensor *bad_axis[4] = {&x, &starts, &ends, &axes};
  CHECK_ERROR(oh_run_once(oh_model(13, "Slice", bad_axis, 4, 1, &n), bad_axis, 4, 0, &y, 1, 2), KILN_INVALID_ARGUMENT, "axis 2 is out of range for rank 2");
  const kiln_tensor *zero_step[5] = {&x, &starts, &ends, NULL, &zero};
  CHECK_ERROR(oh_run_once(oh_model(13, "Slice", zero_step, 5, 1, &n), zero_step, 5, 0, &y, 1, 2), KILN_INVALID_ARGUMENT, "steps[0] is 0");
  const kiln_tensor *repeated[4] = {&x, &two, &two, &twice};
  CHECK_ERROR(oh_run_once(oh_model(13, "Slice", repeated, 4, 1, &n), repeated, 4, 0, &y, 1, 2), KILN_INVALID_ARGUMENT, "axis 1 is sliced more than once");
  const kiln_tensor *mismatch[3] = {&x, &starts, &two};
  CHECK_ERROR(oh_run_once(oh_model(13, "Slice", mismatch, 3, 1, &n), mismatch, 3, 0, &y, 1, 2), KILN_INVALID_ARGUMENT, "different lengths");
  kiln_tensor_release(&starts);
  kiln_tensor_release(&ends);
  kiln_tensor_release(&axes);
  kiln_tensor_release(&zero);
  kiln_tensor_release(&twice);
  kiln_tensor_release(&two);
  kiln_tensor_release(&x);
}

/* ---- Concat, Split */

static void test_concat_matches_reference(void) {
  for (int iter = 0; iter < 40; iter++) {
    int rank = (int)oh_int(1, 4), axis = (int)oh_int(0, rank - 1), count = (int)oh_int(1, 4);
    kiln_dtype dtype = copy_dtypes[iter % 5];
    int64_t dims[KILN_MAX_RANK], total[KILN_MAX_RANK];
    for (int d = 0; d < rank; d++) dims[d] = oh_int(1, rank <= 2 ? 400 : 30);
    memcpy(total, dims, sizeof dims);
    total[axis] = 0;
    kiln_tensor parts[4], want, y;
    const kiln_tensor *in[4];
    for (int i = 0; i < count; i++) {
      dims[axis] = oh_int(0, 50);
      total[axis] += dims[axis];
      parts[i] = oh_random_tensor(dtype, rank, dims);
      in[i] = &parts[i];
    }
    CHECK_OK(kiln_tensor_alloc(&want, dtype, rank, total));
    int64_t idx[KILN_MAX_RANK];
    for (int64_t i = 0; i < kiln_tensor_numel(&want); i++) {
      oh_unravel(i, rank, total, idx);
      int k = 0;
      while (idx[axis] >= parts[k].dims[axis]) idx[axis] -= parts[k++].dims[axis];
      oh_put(&want, i, &parts[k], oh_ravel(rank, parts[k].dims, idx));
    }
    tb_node *n;
    tb_model *b = oh_model(13, "Concat", in, count, 1, &n);
    tb_attr_int(n, "axis", oh_rand() % 2 ? axis : axis - rank);
    CHECK_OK(oh_run_once(b, in, count, 0, &y, 1, 2));
    CHECK(oh_same(&y, &want));
    /* Split undoes it */
    kiln_tensor lens = oh_ints(1, (int64_t[]){count}, (int64_t[]){parts[0].dims[axis], count > 1 ? parts[1].dims[axis] : 0,
                                                               count > 2 ? parts[2].dims[axis] : 0, count > 3 ? parts[3].dims[axis] : 0});
    const kiln_tensor *split_in[2] = {&y, &lens};
    kiln_tensor back[4];
    b = oh_model(13, "Split", split_in, 2, count, &n);
    tb_attr_int(n, "axis", axis);
    CHECK_OK(oh_run_once(b, split_in, 2, 0, back, count, 2));
    for (int i = 0; i < count; i++) {
      CHECK(oh_same(&back[i], &parts[i]));
      kiln_tensor_release(&back[i]);
      kiln_tensor_release(&parts[i]);
    }
    kiln_tensor_release(&lens);
    kiln_tensor_release(&y);
    kiln_tensor_release(&want);
  }
}

static void test_concat_split_errors(void) {
  kiln_tensor a = oh_random_tensor(KILN_FLOAT, 2, (int64_t[]){2, 3}), b = oh_random_tensor(KILN_FLOAT, 2, (int64_t[]){3, 3});
  kiln_tensor c = oh_random_tensor(KILN_INT32, 2, (int64_t[]){2, 3}), y[3];
  tb_node *n;
  const kiln_tensor *in[2] = {&a, &b};
  tb_model *m = oh_model(13, "Concat", in, 2, 1, &n);
  tb_attr_int(n, "axis", 1);
  CHECK_ERROR(oh_run_once(m, in, 2, 0, y, 1, 2), KILN_INVALID_ARGUMENT, "input 1 is float[3,3], which cannot be joined on axis 1 with input 0's float[2,3]");
  const kiln_tensor *mixed[2] = {&a, &c};
  m = oh_model(13, "Concat", mixed, 2, 1, &n);
  tb_attr_int(n, "axis", 0);
  CHECK_ERROR(oh_run_once(m, mixed, 2, 0, y, 1, 2), KILN_INVALID_ARGUMENT, "input 1 is int32[2,3]");
  CHECK_ERROR(oh_run_once(oh_model(13, "Concat", in, 2, 1, &n), in, 2, 0, y, 1, 2), KILN_INVALID_ARGUMENT, "attribute 'axis' is required");
  /* Split: lengths that do not add up, unequal parts */
  kiln_tensor lens = oh_vec(2, (int64_t[]){2, 2});
  const kiln_tensor *split_in[2] = {&a, &lens};
  m = oh_model(13, "Split", split_in, 2, 2, &n);
  tb_attr_int(n, "axis", 1);
  CHECK_ERROR(oh_run_once(m, split_in, 2, 0, y, 2, 2), KILN_INVALID_ARGUMENT, "split lengths do not add up to axis 1's size 3");
  const kiln_tensor *only[1] = {&a};
  m = oh_model(13, "Split", only, 1, 2, &n);
  tb_attr_int(n, "axis", 1);
  CHECK_ERROR(oh_run_once(m, only, 1, 0, y, 2, 2), KILN_INVALID_ARGUMENT, "axis 1 of size 3 cannot be split into 2 equal parts");
  kiln_tensor_release(&lens);
  kiln_tensor_release(&a);
  kiln_tensor_release(&b);
  kiln_tensor_release(&c);
}

/* ---- Expand, Tile, Pad */

static void test_expand_tile(void) {
  for (int iter = 0; iter < 30; iter++) {
    int rank = (int)oh_int(1, 4);
    int64_t dims[KILN_MAX_RANK], reps[KILN_MAX_RANK], out[KILN_MAX_RANK], idx[KILN_MAX_RANK];
    for (int d = 0; d < rank; d++) {
      dims[d] = oh_int(1, 12);
      reps[d] = oh_int(0, 3);
      out[d] = dims[d] * reps[d];
    }
    kiln_dtype dtype = copy_dtypes[iter % 5];
    kiln_tensor x = oh_random_tensor(dtype, rank, dims), want, y, t_reps = oh_vec(rank, reps);
    CHECK_OK(kiln_tensor_alloc(&want, dtype, rank, out));
    for (int64_t i = 0; i < kiln_tensor_numel(&want); i++) {
      oh_unravel(i, rank, out, idx);
      for (int d = 0; d < rank; d++) idx[d] %= dims[d];
      oh_put(&want, i, &x, oh_ravel(rank, dims, idx));
    }
    const kiln_tensor *in[2] = {&x, &t_reps};
    tb_node *n;
    CHECK_OK(oh_run_once(oh_model(13, "Tile", in, 2, 1, &n), in, 2, 0, &y, 1, 2));
    CHECK(oh_same(&y, &want));
    kiln_tensor_release(&y);
    kiln_tensor_release(&want);
    kiln_tensor_release(&t_reps);
    kiln_tensor_release(&x);
  }
  /* Expand: [3, 1] against [2, 1, 6] broadcasts both ways to [2, 3, 6] */
  int64_t values[3] = {1, 2, 3};
  kiln_tensor x = oh_ints(2, (int64_t[]){3, 1}, values), shape = oh_vec(3, (int64_t[]){2, 1, 6}), y;
  const kiln_tensor *in[2] = {&x, &shape};
  tb_node *n;
  CHECK_OK(oh_run_once(oh_model(13, "Expand", in, 2, 1, &n), in, 2, 0, &y, 1, 2));
  CHECK(y.rank == 3 && y.dims[0] == 2 && y.dims[1] == 3 && y.dims[2] == 6);
  int ok = 1;
  for (int64_t i = 0; i < 36; i++) ok &= ((int64_t *)y.data)[i] == values[i / 6 % 3];
  CHECK(ok);
  kiln_tensor_release(&y);
  kiln_tensor_release(&shape);
  shape = oh_vec(2, (int64_t[]){4, 2});
  CHECK_ERROR(oh_run_once(oh_model(13, "Expand", in, 2, 1, &n), in, 2, 0, &y, 1, 2), KILN_INVALID_ARGUMENT, "input shape [3,1] cannot be expanded to [4,2]");
  kiln_tensor_release(&shape);
  shape = oh_vec(2, (int64_t[]){-1, 2});
  CHECK_ERROR(oh_run_once(oh_model(13, "Expand", in, 2, 1, &n), in, 2, 0, &y, 1, 2), KILN_INVALID_ARGUMENT, "shape[0] is negative (-1)");
  kiln_tensor_release(&shape);
  shape = oh_vec(2, (int64_t[]){-1, 2});
  CHECK_ERROR(oh_run_once(oh_model(13, "Tile", in, 2, 1, &n), in, 2, 0, &y, 1, 2), KILN_INVALID_ARGUMENT, "repeats[0] is negative (-1)");
  kiln_tensor_release(&shape);
  shape = oh_vec(2, (int64_t[]){(int64_t)1 << 60, 1});
  CHECK_ERROR(oh_run_once(oh_model(13, "Tile", in, 2, 1, &n), in, 2, 0, &y, 1, 2), KILN_INVALID_ARGUMENT, "makes dim 0 too large");
  kiln_tensor_release(&shape);
  shape = oh_vec(1, (int64_t[]){2});
  CHECK_ERROR(oh_run_once(oh_model(13, "Tile", in, 2, 1, &n), in, 2, 0, &y, 1, 2), KILN_INVALID_ARGUMENT, "repeats has 1 values for an input of rank 2");
  kiln_tensor_release(&shape);
  kiln_tensor_release(&x);
}

static const char *pad_mode;
static void set_pad_mode(tb_node *n) { tb_attr_string(n, "mode", pad_mode); }

static void test_pad(void) {
  /* numpy.pad results for [1, 2, 3] with pads (5, 2), and a crop of one on the left */
  static const struct {
    const char *mode;
    int64_t begin, end;
    int64_t want[10];
  } cases[] = {
      {"constant", 5, 2, {9, 9, 9, 9, 9, 1, 2, 3, 9, 9}},
      {"reflect", 5, 2, {2, 1, 2, 3, 2, 1, 2, 3, 2, 1}},
      {"edge", 5, 2, {1, 1, 1, 1, 1, 1, 2, 3, 3, 3}},
      {"constant", -1, 1, {2, 3, 9}},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    kiln_tensor x = oh_vec(3, (int64_t[]){1, 2, 3}), pads = oh_vec(2, (int64_t[]){cases[i].begin, cases[i].end}), value, y;
    value = oh_ints(0, NULL, (int64_t[]){9});
    const kiln_tensor *in[3] = {&x, &pads, &value};
    tb_node *n;
    tb_model *b = oh_model(13, "Pad", in, 3, 1, &n);
    tb_attr_string(n, "mode", cases[i].mode);
    CHECK_OK(oh_run_once(b, in, 3, 0, &y, 1, 2));
    int64_t len = 3 + cases[i].begin + cases[i].end;
    CHECK(y.rank == 1 && y.dims[0] == len && memcmp(y.data, cases[i].want, (size_t)len * sizeof(int64_t)) == 0);
    kiln_tensor_release(&y);
    kiln_tensor_release(&x);
    kiln_tensor_release(&pads);
    kiln_tensor_release(&value);
  }
  kiln_tensor x = oh_random_tensor(KILN_FLOAT, 2, (int64_t[]){0, 3}), pads = oh_vec(4, (int64_t[]){1, 0, 0, 0}), y;
  const kiln_tensor *in[2] = {&x, &pads};
  tb_node *n;
  tb_model *b = oh_model(13, "Pad", in, 2, 1, &n);
  tb_attr_string(n, "mode", "edge");
  CHECK_ERROR(oh_run_once(b, in, 2, 0, &y, 1, 2), KILN_INVALID_ARGUMENT, "axis 0 is empty: there is nothing to pad it with in edge mode");
  kiln_tensor_release(&pads);
  pads = oh_vec(3, (int64_t[]){1, 0, 0});
  CHECK_ERROR(oh_run_once(oh_model(13, "Pad", in, 2, 1, &n), in, 2, 0, &y, 1, 2), KILN_INVALID_ARGUMENT, "pads has 3 values, expected 2 * rank = 4");
  kiln_tensor_release(&pads);
  pads = oh_vec(4, (int64_t[]){0, -4, 0, 0});
  CHECK_ERROR(oh_run_once(oh_model(13, "Pad", in, 2, 1, &n), in, 2, 0, &y, 1, 2), KILN_INVALID_ARGUMENT, "pads -4 and 0 cannot apply to axis 1 of size 3");
  pad_mode = "wrap";
  CHECK_ERROR(run1(13, "Pad", &x, set_pad_mode, &y), KILN_INVALID_ARGUMENT, "mode 'wrap' is not one of constant, reflect, edge");
  kiln_tensor_release(&pads);
  kiln_tensor_release(&x);
}

/* ---- DepthToSpace, Trilu */

static void blocksize3(tb_node *n) { tb_attr_int(n, "blocksize", 3); }

static void test_depth_space_trilu_errors(void) {
  kiln_tensor x = oh_random_tensor(KILN_FLOAT, 4, (int64_t[]){1, 8, 2, 2}), flat = oh_random_tensor(KILN_FLOAT, 1, (int64_t[]){4}), y;
  CHECK_ERROR(run1(13, "DepthToSpace", &x, blocksize3, &y), KILN_INVALID_ARGUMENT, "channels 8 are not a multiple of blocksize² = 9");
  CHECK_ERROR(run1(13, "SpaceToDepth", &x, blocksize3, &y), KILN_INVALID_ARGUMENT, "height 2 and width 2 must be multiples of blocksize 3");
  CHECK_ERROR(run1(13, "DepthToSpace", &flat, blocksize3, &y), KILN_INVALID_ARGUMENT, "input must be 4-D");
  CHECK_ERROR(run1(14, "Trilu", &flat, NULL, &y), KILN_INVALID_ARGUMENT, "input must have rank >= 2, got 1");
  /* SpaceToDepth then DepthToSpace (DCR) is the identity */
  kiln_tensor big = oh_random_tensor(KILN_FLOAT, 4, (int64_t[]){2, 3, 9, 12}), back;
  CHECK_OK(run1(13, "SpaceToDepth", &big, blocksize3, &y));
  CHECK_OK(run1(13, "DepthToSpace", &y, blocksize3, &back));
  CHECK(oh_same(&back, &big));
  kiln_tensor_release(&back);
  kiln_tensor_release(&y);
  kiln_tensor_release(&big);
  /* Trilu with a k far outside the matrix keeps everything / nothing */
  kiln_tensor k = oh_ints(0, NULL, (int64_t[]){INT64_MIN});
  kiln_tensor m = oh_random_tensor(KILN_INT32, 3, (int64_t[]){2, 3, 4});
  const kiln_tensor *in[2] = {&m, &k};
  tb_node *n;
  CHECK_OK(oh_run_once(oh_model(14, "Trilu", in, 2, 1, &n), in, 2, 0, &y, 1, 2));
  CHECK(oh_same(&y, &m));
  kiln_tensor_release(&y);
  kiln_tensor_release(&m);
  kiln_tensor_release(&k);
  kiln_tensor_release(&x);
  kiln_tensor_release(&flat);
}

TEST_MAIN(TEST(test_views_share_memory), TEST(test_reshape_errors), TEST(test_view_errors), TEST(test_dropout),
          TEST(test_shape), TEST(test_transpose_matches_reference), TEST(test_transpose_errors), TEST(test_slice_matches_reference),
          TEST(test_slice_errors), TEST(test_concat_matches_reference), TEST(test_concat_split_errors), TEST(test_expand_tile),
          TEST(test_pad), TEST(test_depth_space_trilu_errors))
