/* The reduce family (Reduce*, ArgMax, ArgMin, CumSum) against naive reference loops: random shapes
 * and axis sets that reach the row, column-tile and general paths, on one thread and on a
 * 2-thread pool; the integer, float16 and double paths; empty reductions; bad inputs. */
#include "op_harness.h"

/* ---------------------------------------------------------------- Reduce* */

enum { SUM, MEAN, MAX, MIN, PROD, L1, L2, LOG_SUM, LOG_SUM_EXP, SUM_SQUARE, N_REDUCE };
static const char *const reduce_names[N_REDUCE] = {"ReduceSum",       "ReduceMean",     "ReduceMax", "ReduceMin",
                                                   "ReduceProd",      "ReduceL1",       "ReduceL2",  "ReduceLogSum",
                                                   "ReduceLogSumExp", "ReduceSumSquare"};

/* The reduction in double, one input element at a time. */
static kiln_tensor reduce_reference(int op, const kiln_tensor *x, const int *reduced, int keepdims) {
  int64_t dims[KILN_MAX_RANK];
  int rank = 0;
  for (int d = 0; d < x->rank; d++)
    if (!reduced[d] || keepdims) dims[rank++] = reduced[d] ? 1 : x->dims[d];
  kiln_tensor want = oh_tensor(x->dtype, rank, dims);
  int64_t out = kiln_tensor_numel(&want), n = kiln_tensor_numel(x);
  double *acc = calloc((size_t)out * 3 + 1, sizeof *acc), *peak = acc + out, *count = peak + out;
  for (int64_t o = 0; o < out; o++) {
    acc[o] = op == PROD ? 1 : op == MAX ? -INFINITY : op == MIN ? INFINITY : 0;
    peak[o] = -INFINITY;
  }
  for (int pass = 0; pass < 2; pass++)
    for (int64_t i = 0; i < n; i++) {
      int64_t rest = i, o = 0, scale = 1;
      for (int d = x->rank - 1; d >= 0; d--) {
        int64_t c = rest % x->dims[d];
        rest /= x->dims[d];
        if (reduced[d]) continue;
        o += c * scale;
        scale *= x->dims[d];
      }
      double v = kiln_tensor_get_f64(x, i);
      if (pass == 0) {
        count[o] += 1;
        peak[o] = v > peak[o] ? v : peak[o];
        switch (op) {
        case MAX: acc[o] = v > acc[o] ? v : acc[o]; break;
        case MIN: acc[o] = v < acc[o] ? v : acc[o]; break;
        case PROD: acc[o] *= v; break;
        case L1: acc[o] += fabs(v); break;
        case L2:
        case SUM_SQUARE: acc[o] += v * v; break;
        case LOG_SUM_EXP: break;
        default: acc[o] += v;
        }
      } else if (op == LOG_SUM_EXP) {
        acc[o] += exp(v - peak[o]);
      }
    }
  for (int64_t o = 0; o < out; o++) {
    double v = acc[o];
    switch (op) {
    case MEAN: v /= count[o]; break;
    case L2: v = sqrt(v); break;
    case LOG_SUM: v = log(v); break;
    case LOG_SUM_EXP: v = count[o] ? peak[o] + log(v) : -INFINITY; break;
    default: break;
    }
    kx_set_f64(&want, o, v);
  }
  free(acc);
  return want;
}

/* Values each reduction is well conditioned on: products of numbers near 1, logs of positive sums. */
static void fill_for(int op, kiln_tensor *x) {
  for (int64_t i = 0; i < kiln_tensor_numel(x); i++) {
    double v = oh_uniform(-1, 1);
    if (op == PROD) v = 1 + v / 64;
    if (op == LOG_SUM) v = fabs(v) + 0.1;
    kx_set_f64(x, i, v);
  }
}

/* Runs `op` at opset 13 (axes as an attribute, or as an input for ReduceSum). */
static kiln_status run_reduce(int op, const kiln_tensor *x, const int *reduced, int keepdims, kiln_tensor *y,
                              int threads) {
  int64_t axes[KILN_MAX_RANK];
  int n_axes = 0;
  for (int d = 0; d < x->rank; d++)
    if (reduced[d]) axes[n_axes++] = oh_int(0, 1) ? d : d - x->rank; /* negative axes too */
  tb_model *b = tb_new(13);
  kiln_tensor axes_t = oh_tensor(KILN_INT64, 1, (int64_t[]){n_axes});
  memcpy(axes_t.data, axes, (size_t)n_axes * sizeof *axes);
  const kiln_tensor *in[2] = {x, &axes_t};
  tb_node *n = oh_node(b, reduce_names[op], in, op == SUM ? 2 : 1, 0, 1);
  tb_attr_int(n, "keepdims", keepdims);
  if (op != SUM) tb_attr_ints(n, "axes", n_axes, axes);
  kiln_status s = oh_run(b, in, op == SUM ? 2 : 1, 0, y, 1, threads);
  kiln_tensor_release(&axes_t);
  return s;
}

/* Random shapes and axis sets: last-axis rows, column tiles (inner > 1, partial tiles), several
 * reduced runs, size-1 dimensions, sizes that split over the pool. */
static void test_reduce_random(void) {
  static const int64_t sizes[] = {1, 2, 3, 5, 8, 9, 17, 64, 130, 300};
  for (int iter = 0; iter < 240; iter++) {
    int op = iter % N_REDUCE, rank = (int)oh_int(1, 4), reduced[KILN_MAX_RANK], any = 0;
    int64_t dims[KILN_MAX_RANK], total = 1;
    for (int d = 0; d < rank; d++) {
      dims[d] = sizes[oh_int(0, 9)];
      if (total * dims[d] > 300000) dims[d] = 1;
      total *= dims[d];
      reduced[d] = (int)oh_int(0, 1);
      any |= reduced[d];
    }
    if (!any) reduced[oh_int(0, rank - 1)] = 1;
    int keepdims = (int)oh_int(0, 1), threads = iter % 2 ? 2 : 1;
    kiln_tensor x = oh_tensor(KILN_FLOAT, rank, dims), y = {0};
    fill_for(op, &x);
    kiln_tensor want = reduce_reference(op, &x, reduced, keepdims);
    CHECK_OK(run_reduce(op, &x, reduced, keepdims, &y, threads));
    char what[128];
    snprintf(what, sizeof what, "%s rank %d [%lld,...] keepdims %d", reduce_names[op], rank, (long long)dims[0],
             keepdims);
    CHECK(oh_close_to(&y, &want, 2e-4, what));
    oh_release(&x, 1);
    kiln_tensor_release(&y);
    kiln_tensor_release(&want);
  }
}

/* double takes the general path; float16 is widened onto the fast paths. */
static void test_reduce_float_types(void) {
  const kiln_dtype types[] = {KILN_DOUBLE, KILN_FLOAT16, KILN_BFLOAT16};
  for (int t = 0; t < 3; t++)
    for (int op = 0; op < N_REDUCE; op++) {
      int reduced[3] = {0, 1, 0};
      if (op % 2) reduced[2] = 1; /* rows */
      kiln_tensor x = oh_tensor(types[t], 3, (int64_t[]){3, 40, 20}), y = {0};
      fill_for(op, &x);
      kiln_tensor want = reduce_reference(op, &x, reduced, 1);
      CHECK_OK(run_reduce(op, &x, reduced, 1, &y, 2));
      CHECK(oh_close_to(&y, &want,
                     types[t] == KILN_DOUBLE    ? 1e-12
                     : types[t] == KILN_FLOAT16 ? 2e-3
                                                : 1e-2,
                     reduce_names[op]));
      oh_release(&x, 1);
      kiln_tensor_release(&y);
      kiln_tensor_release(&want);
    }
}

/* Integers reduce exactly, in 64 bits: no rounding through double. */
static void test_reduce_integers(void) {
  const kiln_dtype types[] = {KILN_INT32, KILN_INT64, KILN_UINT32, KILN_UINT8, KILN_INT8};
  for (int t = 0; t < 5; t++)
    for (int op = 0; op < N_REDUCE; op++) {
      if (op == LOG_SUM || op == LOG_SUM_EXP || op == L2 || op == PROD) continue;
      int reduced[2] = {0, 1};
      kiln_tensor x = oh_tensor(types[t], 2, (int64_t[]){4, 5}), y = {0};
      for (int64_t i = 0; i < 20; i++)
        kx_set_f64(&x, i,
                   (double)(types[t] == KILN_UINT8 || types[t] == KILN_UINT32 ? oh_int(0, 9) : oh_int(-9, 9)));
      kiln_tensor want = reduce_reference(op, &x, reduced, 0);
      if (op == MEAN) /* integer division truncates toward zero */
        for (int64_t o = 0; o < 4; o++) {
          double sum = 0;
          for (int k = 0; k < 5; k++) sum += kiln_tensor_get_f64(&x, o * 5 + k);
          kx_set_f64(&want, o, trunc(sum / 5));
        }
      CHECK_OK(run_reduce(op, &x, reduced, 0, &y, 1));
      CHECK(oh_close_to(&y, &want, 0, reduce_names[op]));
      oh_release(&x, 1);
      kiln_tensor_release(&y);
      kiln_tensor_release(&want);
    }
  /* int64 beyond double's 53 bits */
  kiln_tensor x = oh_tensor(KILN_INT64, 1, (int64_t[]){3}), y = {0};
  int64_t *v = x.data;
  v[0] = (INT64_C(1) << 60) + 1;
  v[1] = 1;
  v[2] = INT64_C(1) << 60;
  int all[1] = {1};
  CHECK_OK(run_reduce(SUM, &x, all, 0, &y, 1));
  CHECK(y.data && *(int64_t *)y.data == (INT64_C(1) << 61) + 2);
  kiln_tensor_release(&y);
  CHECK_OK(run_reduce(MAX, &x, all, 0, &y, 1));
  CHECK(y.data && *(int64_t *)y.data == (INT64_C(1) << 60) + 1);
  kiln_tensor_release(&y);
  /* ReduceL2 of integers goes through double and is stored truncated */
  kiln_tensor small = oh_tensor(KILN_INT32, 1, (int64_t[]){2});
  ((int32_t *)small.data)[0] = 3;
  ((int32_t *)small.data)[1] = 4;
  CHECK_OK(run_reduce(L2, &small, all, 0, &y, 1));
  CHECK(y.data && *(int32_t *)y.data == 5);
  kiln_tensor_release(&y);
  oh_release(&x, 1);
  oh_release(&small, 1);
}

/* Reducing an axis of length 0 gives each reduction's identity. */
static void test_reduce_empty(void) {
  static const double want[N_REDUCE] = {0, NAN, -INFINITY, INFINITY, 1, 0, 0, -INFINITY, -INFINITY, 0};
  int reduced[3] = {0, 1, 0};
  for (int op = 0; op < N_REDUCE; op++) {
    kiln_tensor x = oh_tensor(KILN_FLOAT, 3, (int64_t[]){2, 0, 3}), y = {0};
    CHECK_OK(run_reduce(op, &x, reduced, 1, &y, 1));
    CHECK(y.rank == 3 && y.dims[0] == 2 && y.dims[1] == 1 && y.dims[2] == 3);
    for (int64_t i = 0; i < kiln_tensor_numel(&y); i++) {
      double g = kiln_tensor_get_f64(&y, i);
      if (!(g == want[op] || (isnan(g) && isnan(want[op])))) {
        fprintf(stderr, "%s of nothing: %g, want %g\n", reduce_names[op], g, want[op]);
        test_failures++;
        break;
      }
    }
    oh_release(&x, 1);
    kiln_tensor_release(&y);
  }
  kiln_tensor x = oh_tensor(KILN_INT32, 2, (int64_t[]){0, 2}), y = {0};
  int first[2] = {1, 0};
  CHECK_OK(run_reduce(MAX, &x, first, 0, &y, 1));
  CHECK(y.rank == 1 && y.dims[0] == 2 && ((int32_t *)y.data)[0] == INT32_MIN);
  kiln_tensor_release(&y);
  CHECK_OK(run_reduce(MIN, &x, first, 0, &y, 1));
  CHECK(y.rank == 1 && ((int32_t *)y.data)[1] == INT32_MAX);
  kiln_tensor_release(&y);
  oh_release(&x, 1);
}

/* ReduceSum's axes input (opset 13): absent, empty with and without noop_with_empty_axes, constant. */
static void test_reduce_sum_axes_input(void) {
  kiln_tensor x = oh_tensor(KILN_FLOAT, 2, (int64_t[]){2, 3}), y = {0};
  for (int i = 0; i < 6; i++) ((float *)x.data)[i] = (float)(i + 1);
  kiln_tensor empty = oh_tensor(KILN_INT64, 1, (int64_t[]){0}), one = oh_tensor(KILN_INT64, 1, (int64_t[]){1});
  ((int64_t *)one.data)[0] = -1;

  tb_model *b = tb_new(13);
  const kiln_tensor *absent[2] = {&x, NULL};
  oh_node(b, "ReduceSum", absent, 2, 0, 1);
  CHECK_OK(oh_run(b, absent, 2, 0, &y, 1, 1));
  CHECK(y.rank == 2 && y.dims[0] == 1 && y.dims[1] == 1 && ((float *)y.data)[0] == 21);
  kiln_tensor_release(&y);

  b = tb_new(13);
  const kiln_tensor *with_empty[2] = {&x, &empty};
  tb_attr_int(oh_node(b, "ReduceSum", with_empty, 2, 0, 1), "noop_with_empty_axes", 1);
  CHECK_OK(oh_run(b, with_empty, 2, 0, &y, 1, 1));
  CHECK(oh_close_to(&y, &x, 0, "noop_with_empty_axes"));
  kiln_tensor_release(&y);

  b = tb_new(13);
  oh_node(b, "ReduceSum", with_empty, 2, 0, 1);
  CHECK_OK(oh_run(b, with_empty, 2, 0, &y, 1, 1));
  CHECK(y.dims[0] == 1 && ((float *)y.data)[0] == 21);
  kiln_tensor_release(&y);

  b = tb_new(13);
  const kiln_tensor *with_axis[2] = {&x, &one};
  tb_attr_int(oh_node(b, "ReduceSum", with_axis, 2, 2, 1), "keepdims", 0);
  CHECK_OK(oh_run(b, with_axis, 2, 2, &y, 1, 1));
  CHECK(y.rank == 1 && y.dims[0] == 2 && ((float *)y.data)[0] == 6 && ((float *)y.data)[1] == 15);
  kiln_tensor_release(&y);

  /* opset 18 moves every Reduce's axes to an input */
  b = tb_new(18);
  oh_node(b, "ReduceMax", with_axis, 2, 0, 1);
  CHECK_OK(oh_run(b, with_axis, 2, 0, &y, 1, 1));
  CHECK(y.rank == 2 && y.dims[1] == 1 && ((float *)y.data)[1] == 6);
  kiln_tensor_release(&y);
  oh_release(&x, 1);
  oh_release(&empty, 1);
  oh_release(&one, 1);
}

static void test_reduce_errors(void) {
  kiln_tensor x = oh_tensor(KILN_FLOAT, 3, (int64_t[]){2, 3, 4}), y = {0}, axes = oh_tensor(KILN_INT64, 1, (int64_t[]){2});
  const kiln_tensor *in[2] = {&x, &axes};
  tb_model *b = tb_new(13);
  tb_attr_ints(oh_node(b, "ReduceMean", in, 1, 0, 1), "axes", 1, (int64_t[]){3});
  CHECK_ERROR(oh_run(b, in, 1, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, "axis 3 is out of range for rank 3");
  b = tb_new(13);
  tb_attr_ints(oh_node(b, "ReduceMean", in, 1, 0, 1), "axes", 2, (int64_t[]){1, -2});
  CHECK_ERROR(oh_run(b, in, 1, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, "axis 1 appears twice");
  ((int64_t *)axes.data)[0] = 0;
  ((int64_t *)axes.data)[1] = -4;
  b = tb_new(13);
  oh_node(b, "ReduceSum", in, 2, 0, 1);
  CHECK_ERROR(oh_run(b, in, 2, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, "axis -4 is out of range for rank 3");
  kiln_tensor flags = oh_tensor(KILN_BOOL, 1, (int64_t[]){3});
  const kiln_tensor *bools[1] = {&flags};
  b = tb_new(13);
  oh_node(b, "ReduceMax", bools, 1, 0, 1);
  CHECK_ERROR(oh_run(b, bools, 1, 0, &y, 1, 1), KILN_UNIMPLEMENTED, "dtype bool");
  oh_release(&x, 1);
  oh_release(&axes, 1);
  oh_release(&flags, 1);
}

/* ---------------------------------------------------------------- ArgMax, ArgMin */

static kiln_tensor arg_reference(const kiln_tensor *x, int axis, int keepdims, int want_max, int last) {
  int64_t dims[KILN_MAX_RANK], n = x->dims[axis], inner = kx_prod(x->dims, axis + 1, x->rank);
  int rank = 0;
  for (int d = 0; d < x->rank; d++)
    if (d != axis || keepdims) dims[rank++] = d == axis ? 1 : x->dims[d];
  kiln_tensor want = oh_tensor(KILN_INT64, rank, dims);
  for (int64_t line = 0; line < kiln_tensor_numel(&want); line++) {
    int64_t base = line / inner * n * inner + line % inner, at = 0;
    for (int64_t r = 1; r < n; r++) {
      double v = kiln_tensor_get_f64(x, base + r * inner), best = kiln_tensor_get_f64(x, base + at * inner);
      if (want_max ? v > best : v < best) at = r;
      if (last && v == best) at = r;
    }
    ((int64_t *)want.data)[line] = at;
  }
  return want;
}

static void test_arg_random(void) {
  const kiln_dtype types[] = {KILN_FLOAT, KILN_DOUBLE, KILN_INT8, KILN_UINT16, KILN_INT64, KILN_FLOAT16};
  for (int iter = 0; iter < 60; iter++) {
    kiln_dtype t = types[iter % 6];
    int rank = (int)oh_int(1, 4), axis = (int)oh_int(0, rank - 1), keepdims = (int)oh_int(0, 1);
    int want_max = iter % 2, last = (int)oh_int(0, 1);
    int64_t dims[KILN_MAX_RANK];
    for (int d = 0; d < rank; d++) dims[d] = oh_int(1, 12);
    kiln_tensor x = oh_tensor(t, rank, dims), y = {0};
    for (int64_t i = 0; i < kiln_tensor_numel(&x); i++) kx_set_f64(&x, i, (double)oh_int(0, 4)); /* ties */
    kiln_tensor want = arg_reference(&x, axis, keepdims, want_max, last);
    tb_model *b = tb_new(13);
    const kiln_tensor *in[1] = {&x};
    tb_node *n = oh_node(b, want_max ? "ArgMax" : "ArgMin", in, 1, 0, 1);
    tb_attr_int(n, "axis", axis - (oh_int(0, 1) ? rank : 0));
    tb_attr_int(n, "keepdims", keepdims);
    tb_attr_int(n, "select_last_index", last);
    CHECK_OK(oh_run(b, in, 1, 0, &y, 1, iter % 3 ? 1 : 2));
    CHECK(oh_close_to(&y, &want, 0, want_max ? "ArgMax" : "ArgMin"));
    oh_release(&x, 1);
    kiln_tensor_release(&y);
    kiln_tensor_release(&want);
  }
}

static void test_arg_errors(void) {
  kiln_tensor x = oh_tensor(KILN_FLOAT, 2, (int64_t[]){3, 0}), y = {0};
  const kiln_tensor *in[1] = {&x};
  tb_model *b = tb_new(13);
  tb_attr_int(oh_node(b, "ArgMax", in, 1, 0, 1), "axis", 1);
  CHECK_ERROR(oh_run(b, in, 1, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, "axis 1 has no elements");
  b = tb_new(13);
  tb_attr_int(oh_node(b, "ArgMin", in, 1, 0, 1), "axis", 2);
  CHECK_ERROR(oh_run(b, in, 1, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, "axis 2 is out of range for rank 2");
  oh_release(&x, 1);
}

/* ---------------------------------------------------------------- CumSum */

static kiln_tensor cumsum_reference(const kiln_tensor *x, int axis, int exclusive, int reverse) {
  kiln_tensor want = oh_tensor(x->dtype, x->rank, x->dims);
  int64_t n = x->dims[axis], inner = kx_prod(x->dims, axis + 1, x->rank), lines = kiln_tensor_numel(x) / n;
  for (int64_t line = 0; line < lines; line++) {
    int64_t base = line / inner * n * inner + line % inner;
    double sum = 0;
    for (int64_t k = 0; k < n; k++) {
      int64_t r = reverse ? n - 1 - k : k;
      double v = kiln_tensor_get_f64(x, base + r * inner);
      if (!exclusive) sum += v;
      kx_set_f64(&want, base + r * inner, sum);
      if (exclusive) sum += v;
    }
  }
  return want;
}

static void test_cumsum_random(void) {
  const kiln_dtype types[] = {KILN_FLOAT, KILN_DOUBLE, KILN_INT32, KILN_INT64, KILN_UINT32, KILN_FLOAT16};
  for (int iter = 0; iter < 48; iter++) {
    kiln_dtype t = types[iter % 6];
    int rank = (int)oh_int(1, 4), axis = (int)oh_int(0, rank - 1), exclusive = iter / 6 % 2,
        reverse = iter / 12 % 2;
    int64_t dims[KILN_MAX_RANK];
    for (int d = 0; d < rank; d++) dims[d] = oh_int(1, 9);
    kiln_tensor x = oh_tensor(t, rank, dims), y = {0}, axis_t = oh_tensor(KILN_INT32, 0, NULL);
    for (int64_t i = 0; i < kiln_tensor_numel(&x); i++)
      kx_set_f64(&x, i,
                 t == KILN_UINT32         ? (double)oh_int(0, 9)
                 : kiln_dtype_is_float(t) ? oh_uniform(-1, 1)
                                          : (double)oh_int(-9, 9));
    *(int32_t *)axis_t.data = axis - (int)(oh_int(0, 1) ? rank : 0);
    kiln_tensor want = cumsum_reference(&x, axis, exclusive, reverse);
    tb_model *b = tb_new(14);
    const kiln_tensor *in[2] = {&x, &axis_t};
    tb_node *n = oh_node(b, "CumSum", in, 2, 0, 1);
    tb_attr_int(n, "exclusive", exclusive);
    tb_attr_int(n, "reverse", reverse);
    CHECK_OK(oh_run(b, in, 2, 0, &y, 1, 1));
    CHECK(oh_close_to(&y, &want, t == KILN_FLOAT16 ? 5e-3 : 1e-5, "CumSum"));
    oh_release(&x, 1);
    oh_release(&axis_t, 1);
    kiln_tensor_release(&y);
    kiln_tensor_release(&want);
  }
}

static void test_cumsum_errors(void) {
  kiln_tensor x = oh_tensor(KILN_FLOAT, 2, (int64_t[]){2, 3}), y = {0}, axis = oh_tensor(KILN_INT64, 1, (int64_t[]){2});
  const kiln_tensor *in[2] = {&x, &axis};
  tb_model *b = tb_new(14);
  oh_node(b, "CumSum", in, 2, 0, 1);
  CHECK_ERROR(oh_run(b, in, 2, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, "axis must hold one value, it holds 2");
  kiln_tensor one = oh_tensor(KILN_INT64, 0, NULL);
  *(int64_t *)one.data = 2;
  in[1] = &one;
  b = tb_new(14);
  oh_node(b, "CumSum", in, 2, 0, 1);
  CHECK_ERROR(oh_run(b, in, 2, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, "axis 2 is out of range for rank 2");
  oh_release(&x, 1);
  oh_release(&axis, 1);
  oh_release(&one, 1);
}

TEST_MAIN(TEST(test_reduce_random), TEST(test_reduce_float_types), TEST(test_reduce_integers), TEST(test_reduce_empty),
          TEST(test_reduce_sum_axes_input), TEST(test_reduce_errors), TEST(test_arg_random), TEST(test_arg_errors),
          TEST(test_cumsum_random), TEST(test_cumsum_errors))
