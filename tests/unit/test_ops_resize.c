/* Resize (and Upsample, GridSample, RoiAlign): bad inputs, and every Resize path (nearest
 * gather, 2-D bilinear, separable passes) on a 2-thread pool against a naive port of the ONNX
 * reference implementation (onnx/backend/test/case/node/resize.py). */
#include "op_harness.h"

/* ------------------------------------------------------------------ the reference */

typedef struct resize_case {
  const char *mode, *coord, *nearest;
  float cubic_a;
  int exclude_outside;
  float extrapolation;
  int rank;
  int64_t in[5], sizes[5]; /* sizes[0] < 0: use scales */
  float scales[5], roi[10];
  kiln_dtype dtype;
} resize_case;

/* interpolate_1d_with_x's choice of taps for one axis: their (edge-clamped) indices and
 * coefficients; returns 0 when tf_crop_and_resize extrapolates. */
static int ref_taps(const resize_case *k, int d, double x, int64_t *idx, double *coef, int *n) {
  const double in = (double)k->in[d];
  const double scale = k->sizes[0] >= 0 ? (double)k->sizes[d] / in : k->scales[d];
  const double out = scale * in;
  const char *ct = k->coord;
  double xo;
  if (!strcmp(ct, "align_corners"))
    xo = out == 1 ? 0 : x * (in - 1) / (out - 1);
  else if (!strcmp(ct, "asymmetric"))
    xo = x / scale;
  else if (!strcmp(ct, "tf_crop_and_resize")) {
    double s = k->roi[d], e = k->roi[k->rank + d];
    xo = (out == 1 ? (e - s) * (in - 1) / 2 : x * (e - s) * (in - 1) / (out - 1)) + s * (in - 1);
    if (xo < 0 || xo > in - 1) return 0;
  } else if (!strcmp(ct, "pytorch_half_pixel")) { /* 0 at length 1 as the operator text says (resize.py: -0.5) */
    xo = out == 1 ? 0 : (x + 0.5) / scale - 0.5;
  } else if (!strcmp(ct, "tf_half_pixel_for_nn"))
    xo = (x + 0.5) / scale;
  else
    xo = (x + 0.5) / scale - 0.5;
  double fl = floor(xo), ratio = xo == fl ? 1 : xo - fl;
  const char *m = k->mode;
  if (!strcmp(m, "nearest")) {
    const char *nm = k->nearest;
    int second = xo == fl                            ? 1
                 : !strcmp(nm, "round_prefer_floor") ? ratio > 0.5
                 : !strcmp(nm, "round_prefer_ceil")  ? ratio >= 0.5
                 : !strcmp(nm, "floor")              ? 0
                                                     : 1;
    coef[0] = !second, coef[1] = second;
    *n = 2;
  } else if (!strcmp(m, "linear")) {
    coef[0] = 1 - ratio, coef[1] = ratio;
    *n = 2;
  } else {
    double A = k->cubic_a, r = ratio;
    coef[0] = ((A * (r + 1) - 5 * A) * (r + 1) + 8 * A) * (r + 1) - 4 * A;
    coef[1] = ((A + 2) * r - (A + 3)) * r * r + 1;
    coef[2] = ((A + 2) * (1 - r) - (A + 3)) * (1 - r) * (1 - r) + 1;
    coef[3] = ((A * ((1 - r) + 1) - 5 * A) * ((1 - r) + 1) + 8 * A) * ((1 - r) + 1) - 4 * A;
    *n = 4;
  }
  /* the n nearest indices of the edge-padded axis, ties to the smaller one */
  int64_t pad = (*n + 1) / 2, lo = -pad, hi = (int64_t)in - 1 + pad, cand[12];
  int nc = 0;
  for (int64_t i = (int64_t)fl - 5; i <= (int64_t)fl + 6; i++)
    if (i >= lo && i <= hi) cand[nc++] = i;
  for (int a = 0; a < nc; a++) /* sort by (distance, index) */
    for (int b = a + 1; b < nc; b++) {
      double da = fabs(xo - (double)cand[a]), db = fabs(xo - (double)cand[b]);
      if (db < da || (db == da && cand[b] < cand[a])) {
        int64_t t = cand[a];
        cand[a] = cand[b], cand[b] = t;
      }
    }
  for (int a = 0; a < *n; a++) /* the chosen n, ascending */
    for (int b = a + 1; b < *n; b++)
      if (cand[b] < cand[a]) {
        int64_t t = cand[a];
        cand[a] = cand[b], cand[b] = t;
      }
  double sum = 0;
  for (int a = 0; a < *n; a++) {
    if (k->exclude_outside && (cand[a] < 0 || cand[a] >= (int64_t)in)) coef[a] = 0;
    sum += coef[a];
    idx[a] = cand[a] < 0 ? 0 : cand[a] >= (int64_t)in ? (int64_t)in - 1 : cand[a];
  }
  if (k->exclude_outside)
    for (int a = 0; a < *n; a++) coef[a] /= sum;
  return 1;
}

static void out_shape(const resize_case *k, int64_t *out) {
  for (int d = 0; d < k->rank; d++)
    out[d] = k->sizes[0] >= 0 ? k->sizes[d] : (int64_t)floor((double)k->scales[d] * (double)k->in[d]);
}

/* Every output element as the sum over all tap combinations. */
static void reference(const resize_case *k, const double *x, double *y) {
  int64_t out[5], n_out = 1;
  out_shape(k, out);
  for (int d = 0; d < k->rank; d++) n_out *= out[d];
  for (int64_t e = 0; e < n_out; e++) {
    int64_t pos[5], rest = e, idx[5][4];
    double coef[5][4];
    int n[5], inside = 1;
    for (int d = k->rank - 1; d >= 0; d--) {
      pos[d] = rest % out[d];
      rest /= out[d];
    }
    for (int d = 0; d < k->rank; d++) inside &= ref_taps(k, d, (double)pos[d], idx[d], coef[d], &n[d]);
    if (!inside) {
      y[e] = k->extrapolation;
      continue;
    }
    double v = 0;
    int t[5] = {0};
    for (;;) {
      double w = 1;
      int64_t off = 0;
      for (int d = 0; d < k->rank; d++) {
        w *= coef[d][t[d]];
        off = off * k->in[d] + idx[d][t[d]];
      }
      v += w * x[off];
      int d = k->rank - 1;
      while (d >= 0 && ++t[d] == n[d]) t[d--] = 0;
      if (d < 0) break;
    }
    y[e] = v;
  }
}

/* ------------------------------------------------------------------ running a case */

static kiln_model *build_resize(const resize_case *k) {
  tb_model *b = tb_new(13);
  int crop = k->coord && !strcmp(k->coord, "tf_crop_and_resize");
  tb_input(b, "X", k->dtype, -1, NULL);
  if (crop) tb_input(b, "roi", KILN_FLOAT, 1, (int64_t[]){2 * k->rank});
  if (k->sizes[0] >= 0)
    tb_input(b, "sizes", KILN_INT64, 1, (int64_t[]){k->rank});
  else
    tb_input(b, "scales", KILN_FLOAT, 1, (int64_t[]){k->rank});
  tb_output(b, "Y", k->dtype);
  char inputs[64];
  snprintf(inputs, sizeof inputs, "X,%s,%s", crop ? "roi" : "", k->sizes[0] >= 0 ? ",sizes" : "scales");
  tb_node *n = tb_add_node(b, "Resize", inputs, "Y");
  tb_attr_string(n, "mode", k->mode);
  if (k->coord) tb_attr_string(n, "coordinate_transformation_mode", k->coord);
  if (k->nearest) tb_attr_string(n, "nearest_mode", k->nearest);
  if (k->cubic_a != 0) tb_attr_float(n, "cubic_coeff_a", k->cubic_a);
  if (k->exclude_outside) tb_attr_int(n, "exclude_outside", 1);
  if (k->extrapolation != 0) tb_attr_float(n, "extrapolation_value", k->extrapolation);
  return oh_load(b);
}

static void check_resize(resize_case k, kiln_pool *pool) {
  if (!k.cubic_a) k.cubic_a = -0.75f;
  if (!k.dtype) k.dtype = KILN_FLOAT;
  if (!k.coord) k.coord = "half_pixel";
  if (!k.nearest) k.nearest = "round_prefer_floor";
  kiln_model *m = build_resize(&k);
  if (!m) return;
  kiln_session *s;
  kiln_session_options opt = {.pool = pool};
  CHECK_OK(kiln_session_create(m, &opt, &s));
  kiln_tensor x, roi, geo;
  CHECK_OK(kiln_tensor_alloc(&x, k.dtype, k.rank, k.in));
  int64_t n_in = kiln_tensor_numel(&x), out[5], n_out = 1;
  double *xd = malloc((size_t)(n_in + 1) * sizeof *xd);
  for (int64_t i = 0; i < n_in; i++) {
    xd[i] = k.dtype == KILN_FLOAT ? oh_uniform(-5, 5) : (double)(int)oh_uniform(0, 200);
    if (k.dtype == KILN_FLOAT)
      ((float *)x.data)[i] = (float)xd[i];
    else if (k.dtype == KILN_UINT8)
      ((uint8_t *)x.data)[i] = (uint8_t)xd[i];
    else
      ((int64_t *)x.data)[i] = (int64_t)xd[i];
    if (k.dtype == KILN_FLOAT) xd[i] = ((float *)x.data)[i];
  }
  out_shape(&k, out);
  for (int d = 0; d < k.rank; d++) n_out *= out[d];
  double *want = malloc((size_t)(n_out + 1) * sizeof *want);
  reference(&k, xd, want);
  CHECK_OK(kiln_tensor_alloc(&roi, KILN_FLOAT, 1, (int64_t[]){2 * k.rank}));
  memcpy(roi.data, k.roi, (size_t)(2 * k.rank) * sizeof(float));
  if (k.sizes[0] >= 0) {
    CHECK_OK(kiln_tensor_alloc(&geo, KILN_INT64, 1, (int64_t[]){k.rank}));
    memcpy(geo.data, k.sizes, (size_t)k.rank * sizeof(int64_t));
  } else {
    CHECK_OK(kiln_tensor_alloc(&geo, KILN_FLOAT, 1, (int64_t[]){k.rank}));
    memcpy(geo.data, k.scales, (size_t)k.rank * sizeof(float));
  }
  const kiln_tensor *in3[] = {&x, &roi, &geo}, *in2[] = {&x, &geo}, *y[1];
  int crop = !strcmp(k.coord, "tf_crop_and_resize");
  for (int rep = 0; rep < 2; rep++) {
    kiln_status st = kiln_session_run_tensors(s, crop ? in3 : in2, y);
    if (st) {
      fprintf(stderr, "Resize %s %s: %s\n", k.mode, k.coord, kiln_status_message(st));
      kiln_status_free(st);
      test_failures++;
      break;
    }
    int shape_ok = y[0]->rank == k.rank && y[0]->dtype == k.dtype;
    for (int d = 0; d < k.rank && shape_ok; d++) shape_ok = y[0]->dims[d] == out[d];
    CHECK(shape_ok);
    if (!shape_ok) break;
    double worst = 0;
    int64_t at = 0;
    for (int64_t i = 0; i < n_out; i++) {
      double got = kiln_tensor_get_f64(y[0], i), w = want[i];
      if (k.dtype != KILN_FLOAT) w = nearbyint(w < 0 ? 0 : w); /* integers round (uint8 saturates) */
      double e = fabs(got - w) / (1 + fabs(w));
      if (!(e <= worst)) worst = e, at = i;
    }
    if (worst > 1e-5) {
      fprintf(stderr,
              "Resize mode=%s coord=%s nearest=%s rank=%d in=[%lld,%lld,...]: max error %g at %lld (got %g, want %g)\n",
              k.mode, k.coord, k.nearest, k.rank, (long long)k.in[0], (long long)k.in[1], worst, (long long)at,
              kiln_tensor_get_f64(y[0], at), want[at]);
      test_failures++;
    }
  }
  free(xd);
  free(want);
  kiln_tensor_release(&x);
  kiln_tensor_release(&roi);
  kiln_tensor_release(&geo);
  kiln_session_free(s);
  kiln_model_free(m);
}

static const char *const coords[] = {"half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
                                     "tf_half_pixel_for_nn"};

/* A random 4-D case resizing H and W only (the 2-D fast paths), scaled or sized. */
static resize_case random_hw_case(const char *mode, int use_sizes) {
  resize_case k = {.mode = mode,
                   .rank = 4,
                   .in = {oh_int(1, 2), oh_int(1, 3), oh_int(1, 7), oh_int(1, 9)}};
  k.sizes[0] = -1;
  k.scales[0] = k.scales[1] = 1;
  for (int d = 2; d < 4; d++) k.scales[d] = (float)oh_uniform(0.3, 3.3);
  if (use_sizes) {
    k.sizes[0] = k.in[0], k.sizes[1] = k.in[1];
    for (int d = 2; d < 4; d++) k.sizes[d] = oh_int(1, 12);
  }
  return k;
}

static void test_resize_nearest(void) {
  kiln_pool *pool;
  CHECK_OK(kiln_pool_create(2, &pool));
  const char *modes[] = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"};
  for (int i = 0; i < 40; i++) {
    resize_case k = random_hw_case("nearest", i % 2);
    k.coord = coords[i % 5];
    k.nearest = modes[i % 4];
    check_resize(k, pool);
  }
  /* other element sizes, and N and C resized too */
  for (int i = 0; i < 6; i++) {
    resize_case k = random_hw_case("nearest", 0);
    k.dtype = i % 2 ? KILN_UINT8 : KILN_INT64;
    k.scales[1] = i < 3 ? 2 : 0.5f;
    k.in[1] = 3;
    check_resize(k, pool);
  }
  /* tf_crop_and_resize extrapolates outside the roi */
  resize_case k = {.mode = "nearest",
                   .coord = "tf_crop_and_resize",
                   .extrapolation = 7.5f,
                   .rank = 3,
                   .in = {2, 5, 6},
                   .sizes = {2, 4, 7},
                   .roi = {0, -0.2f, -0.25f, 1, 1.3f, 0.8f}};
  check_resize(k, pool);
  kiln_pool_free(pool);
}

static void test_resize_linear(void) {
  kiln_pool *pool;
  CHECK_OK(kiln_pool_create(2, &pool));
  for (int i = 0; i < 40; i++) { /* 2-D bilinear */
    resize_case k = random_hw_case("linear", i % 2);
    k.coord = coords[i % 4];
    check_resize(k, pool);
  }
  for (int i = 0; i < 8; i++) { /* separable: C resized as well, or a 1-D / 5-D tensor */
    resize_case k = random_hw_case("linear", 0);
    k.coord = coords[i % 4];
    if (i < 4) {
      k.in[1] = 3;
      k.scales[1] = i % 2 ? 1.7f : 0.6f;
    } else if (i < 6) {
      k = (resize_case){
          .mode = "linear", .coord = coords[i % 4], .rank = 1, .in = {7}, .scales = {i % 2 ? 2.3f : 0.45f}};
      k.sizes[0] = -1;
    } else {
      k = (resize_case){
          .mode = "linear", .coord = coords[i % 4], .rank = 5, .in = {1, 2, 3, 4, 5}, .scales = {1, 1, 2, 0.5f, 1.5f}};
      k.sizes[0] = -1;
    }
    check_resize(k, pool);
  }
  resize_case k = {.mode = "linear",
                   .coord = "tf_crop_and_resize",
                   .extrapolation = -3,
                   .rank = 4,
                   .in = {1, 2, 5, 6},
                   .sizes = {1, 2, 4, 7},
                   .roi = {0, 0, -0.2f, -0.25f, 1, 1, 1.3f, 0.8f}};
  check_resize(k, pool);
  for (int i = 0; i < 4; i++) { /* integers round and saturate */
    resize_case u = random_hw_case("linear", 0);
    u.dtype = KILN_UINT8;
    check_resize(u, pool);
  }
  kiln_pool_free(pool);
}

static void test_resize_cubic(void) {
  kiln_pool *pool;
  CHECK_OK(kiln_pool_create(2, &pool));
  for (int i = 0; i < 24; i++) {
    resize_case k = random_hw_case("cubic", i % 2);
    k.coord = coords[i % 4];
    k.exclude_outside = (i / 4) % 2;
    k.cubic_a = i % 3 ? -0.75f : -0.5f;
    check_resize(k, pool);
  }
  resize_case k = {.mode = "cubic",
                   .coord = "tf_crop_and_resize",
                   .extrapolation = 2,
                   .rank = 3,
                   .in = {3, 5, 6},
                   .sizes = {2, 4, 7},
                   .roi = {0.1f, -0.2f, -0.25f, 0.9f, 1.3f, 0.8f}};
  check_resize(k, pool);
  kiln_pool_free(pool);
}

/* ------------------------------------------------------------------ bad inputs */

/* Loads a Resize with the given inputs (NULL = absent) and expects running it to fail. */
static void expect_resize_error(const kiln_tensor *x, const kiln_tensor *roi, const kiln_tensor *scales,
                                const kiln_tensor *sizes, const char *coord, const char *text) {
  const kiln_tensor *in[4] = {x, roi, scales, sizes};
  tb_model *b = tb_new(13);
  tb_node *node = oh_node(b, "Resize", in, 4, 0, 1);
  if (coord) tb_attr_string(node, "coordinate_transformation_mode", coord);
  kiln_tensor y;
  CHECK_ERROR(oh_run_once(b, in, 4, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, text);
}

static kiln_tensor floats(int n, const float *v) {
  kiln_tensor t;
  CHECK_OK(kiln_tensor_alloc(&t, KILN_FLOAT, 1, (int64_t[]){n}));
  memcpy(t.data, v, (size_t)n * sizeof *v);
  return t;
}

static void expect_load_error(const char *op, int opset, const char *attr, const char *value, const char *text) {
  tb_model *b = tb_new(opset);
  tb_input(b, "X", KILN_FLOAT, -1, NULL);
  tb_input(b, "S", KILN_FLOAT, -1, NULL);
  tb_output(b, "Y", KILN_FLOAT);
  tb_node *n = tb_add_node(b, op, "X,S", "Y");
  tb_attr_string(n, attr, value);
  kiln_model *m = NULL;
  CHECK_ERROR(tb_load(b, &m), KILN_INVALID_ARGUMENT, text);
  tb_free(b);
}

static void test_bad_inputs(void) {
  kiln_tensor x, sizes, neg_sizes;
  CHECK_OK(kiln_tensor_alloc(&x, KILN_FLOAT, 4, (int64_t[]){1, 1, 2, 2}));
  kiln_tensor three = floats(3, (float[]){1, 2, 2}), zero = floats(4, (float[]){1, 0, 2, 2});
  kiln_tensor good = floats(4, (float[]){1, 1, 2, 2}), roi = floats(4, (float[]){0, 0, 1, 1});
  CHECK_OK(kiln_tensor_alloc(&sizes, KILN_INT64, 1, (int64_t[]){4}));
  CHECK_OK(kiln_tensor_alloc(&neg_sizes, KILN_INT64, 1, (int64_t[]){4}));
  ((int64_t *)neg_sizes.data)[3] = -2;
  expect_resize_error(&x, NULL, &three, NULL, NULL, "scales has 3 values, expected 4");
  expect_resize_error(&x, NULL, &zero, NULL, NULL, "scales[1] is 0, must be positive");
  expect_resize_error(&x, NULL, &good, &sizes, NULL, "scales and sizes are both given");
  expect_resize_error(&x, NULL, NULL, NULL, NULL, "one of scales and sizes must be given");
  expect_resize_error(&x, NULL, NULL, &neg_sizes, NULL, "sizes[3] is -2, must not be negative");
  expect_resize_error(&x, &roi, &good, NULL, "tf_crop_and_resize", "roi has 4 values, expected 8");
  expect_load_error("Resize", 13, "mode", "bicubic", "mode 'bicubic' is not one of nearest, linear, cubic");
  expect_load_error("Resize", 10, "mode", "cubic", "mode 'cubic' is not one of nearest, linear");
  expect_load_error("Resize", 13, "coordinate_transformation_mode", "corner",
                    "unknown coordinate_transformation_mode 'corner'");
  expect_load_error("Resize", 13, "nearest_mode", "up", "unknown nearest_mode 'up'");
  expect_load_error("GridSample", 16, "padding_mode", "wrap",
                    "padding_mode 'wrap' is not one of zeros, border, reflection");
  expect_load_error("RoiAlign", 16, "mode", "sum", "mode 'sum' is not avg or max");

  /* GridSample: the grid must be [N, H_out, W_out, 2] */
  kiln_tensor grid = oh_tensor(KILN_FLOAT, 4, (int64_t[]){1, 3, 3, 3}), y;
  const kiln_tensor *grid_in[2] = {&x, &grid};
  tb_node *n;
  CHECK_ERROR(oh_run_once(oh_model(16, "GridSample", grid_in, 2, 1, &n), grid_in, 2, 0, &y, 1, 1), KILN_INVALID_ARGUMENT,
              "grid float[1,3,3,3] does not fit X float[1,1,2,2]: expected [N, H_out, W_out, 2]");

  /* RoiAlign: batch indices must name an image */
  kiln_tensor rois = oh_tensor(KILN_FLOAT, 2, (int64_t[]){2, 4}), idx = oh_tensor(KILN_INT64, 1, (int64_t[]){2});
  const kiln_tensor *roi_in[3] = {&x, &rois, &idx};
  ((int64_t *)idx.data)[1] = 1;
  CHECK_ERROR(oh_run_once(oh_model(16, "RoiAlign", roi_in, 3, 1, &n), roi_in, 3, 0, &y, 1, 1), KILN_INVALID_ARGUMENT,
              "batch_indices[1] is 1, outside [0, 1)");
  ((int64_t *)idx.data)[1] = 0;
  ((float *)rois.data)[2] = NAN;
  CHECK_ERROR(oh_run_once(oh_model(16, "RoiAlign", roi_in, 3, 1, &n), roi_in, 3, 0, &y, 1, 1), KILN_INVALID_ARGUMENT,
              "rois[0] holds a non-finite value");
  kiln_tensor *all[] = {&x, &sizes, &neg_sizes, &three, &zero, &good, &roi, &grid, &rois, &idx};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) kiln_tensor_release(all[i]);
}

/* Upsample-7 takes scales as an attribute; nearest repeats (opset < 11 rounding). */
static void test_upsample_attribute(void) {
  kiln_tensor x = oh_tensor(KILN_FLOAT, 2, (int64_t[]){2, 2}), y = {0};
  for (int i = 0; i < 4; i++) ((float *)x.data)[i] = (float)(i + 1);
  const kiln_tensor *in[1] = {&x};
  tb_node *n;
  tb_model *b = oh_model(7, "Upsample", in, 1, 1, &n);
  tb_attr_floats(n, "scales", 2, (float[]){2, 3});
  CHECK_OK(oh_run_once(b, in, 1, 0, &y, 1, 1));
  CHECK(y.dims[0] == 4 && y.dims[1] == 6);
  for (int i = 0; i < 24 && y.data; i++) CHECK(((float *)y.data)[i] == (float)((i / 6 / 2) * 2 + (i % 6) / 3 + 1));
  kiln_tensor_release(&y);
  kiln_tensor_release(&x);
}

TEST_MAIN(TEST(test_resize_nearest), TEST(test_resize_linear), TEST(test_resize_cubic), TEST(test_bad_inputs),
          TEST(test_upsample_attribute))
