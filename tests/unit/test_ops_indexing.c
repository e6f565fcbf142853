/* Indexing kernels (src/ops/indexing.c): Gather, TopK and Unique match naive references over
 * random shapes on a 2-thread pool; every out-of-range index is reported with its position,
 * value and the valid range; Scatter reductions and OneHot/Compress edge cases behave as the
 * spec says. */
#include "op_harness.h"

static const kiln_dtype copy_dtypes[] = {KILN_FLOAT, KILN_UINT8, KILN_FLOAT16, KILN_DOUBLE, KILN_STRING};

static kiln_tensor index_tensor(kiln_dtype dtype, int rank, const int64_t *dims, int64_t lo, int64_t hi) {
  kiln_tensor t;
  CHECK_OK(kiln_tensor_alloc(&t, dtype, rank, dims));
  for (int64_t i = 0; i < kiln_tensor_numel(&t); i++) {
    int64_t v = oh_int(lo, hi);
    if (dtype == KILN_INT64) ((int64_t *)t.data)[i] = v;
    else ((int32_t *)t.data)[i] = (int32_t)v;
  }
  return t;
}

static int64_t index_value(const kiln_tensor *t, int64_t i) {
  return t->dtype == KILN_INT64 ? ((int64_t *)t->data)[i] : ((int32_t *)t->data)[i];
}

/* ---- Gather */

static void test_gather_matches_reference(void) {
  for (int iter = 0; iter < 50; iter++) {
    int rank = (int)oh_int(1, 4), irank = (int)oh_int(0, 3), axis = (int)oh_int(0, rank - 1);
    int64_t dims[KILN_MAX_RANK], idims[KILN_MAX_RANK];
    for (int d = 0; d < rank; d++) dims[d] = oh_int(1, rank <= 2 ? 300 : 20);
    for (int d = 0; d < irank; d++) idims[d] = oh_int(iter % 9 == 0 ? 0 : 1, 12);
    if (iter % 5 == 0) { /* an embedding table: [vocab, hidden] rows picked by [batch, seq] */
      rank = 2, irank = 2, axis = 0;
      dims[0] = 1000, dims[1] = 768, idims[0] = 4, idims[1] = 40;
    }
    kiln_dtype dtype = copy_dtypes[iter % 5];
    kiln_tensor x = oh_random_tensor(dtype, rank, dims);
    kiln_tensor ind = index_tensor(iter % 2 ? KILN_INT32 : KILN_INT64, irank, idims, -dims[axis], dims[axis] - 1), want, y;
    int64_t out[KILN_MAX_RANK], idx[KILN_MAX_RANK], src[KILN_MAX_RANK];
    int orank = rank - 1 + irank;
    for (int d = 0; d < orank; d++) out[d] = d < axis ? dims[d] : d < axis + irank ? idims[d - axis] : dims[d - irank + 1];
    CHECK_OK(kiln_tensor_alloc(&want, dtype, orank, out));
    for (int64_t i = 0; i < kiln_tensor_numel(&want); i++) {
      oh_unravel(i, orank, out, idx);
      for (int d = 0; d < axis; d++) src[d] = idx[d];
      int64_t v = index_value(&ind, oh_ravel(irank, idims, idx + axis));
      src[axis] = v < 0 ? v + dims[axis] : v;
      for (int d = axis + 1; d < rank; d++) src[d] = idx[d - 1 + irank];
      oh_put(&want, i, &x, oh_ravel(rank, dims, src));
    }
    const kiln_tensor *in[2] = {&x, &ind};
    tb_node *n;
    tb_model *b = oh_model(13, "Gather", in, 2, 1, &n);
    tb_attr_int(n, "axis", oh_rand() % 2 ? axis : axis - rank);
    CHECK_OK(oh_run_once(b, in, 2, 0, &y, 1, 2));
    CHECK(oh_same(&y, &want));
    kiln_tensor_release(&y);
    kiln_tensor_release(&want);
    kiln_tensor_release(&ind);
    kiln_tensor_release(&x);
  }
}

static void test_gather_errors(void) {
  kiln_tensor x = oh_random_tensor(KILN_FLOAT, 2, (int64_t[]){5, 3}), y;
  kiln_tensor ind = oh_ints(2, (int64_t[]){2, 2}, (int64_t[]){0, 4, -5, 5});
  const kiln_tensor *in[2] = {&x, &ind};
  tb_node *n;
  CHECK_ERROR(oh_run_once(oh_model(13, "Gather", in, 2, 1, &n), in, 2, 0, &y, 1, 2), KILN_INVALID_ARGUMENT,
              "indices[1,1] = 5 is out of range for data axis 0 of size 5 (valid: -5..4)");
  tb_model *b = oh_model(13, "Gather", in, 2, 1, &n);
  tb_attr_int(n, "axis", 2);
  CHECK_ERROR(oh_run_once(b, in, 2, 0, &y, 1, 2), KILN_INVALID_ARGUMENT, "axis 2 is out of range for rank 2");
  kiln_tensor floats = oh_random_tensor(KILN_FLOAT, 1, (int64_t[]){2});
  const kiln_tensor *bad_dtype[2] = {&x, &floats};
  CHECK_ERROR(oh_run_once(oh_model(13, "Gather", bad_dtype, 2, 1, &n), bad_dtype, 2, 0, &y, 1, 2), KILN_INVALID_ARGUMENT, "indices must be int32 or int64, got float");
  /* GatherElements: same rank, and each index checked against the axis */
  kiln_tensor ge = oh_ints(2, (int64_t[]){1, 3}, (int64_t[]){0, 1, -6});
  const kiln_tensor *ge_in[2] = {&x, &ge};
  CHECK_ERROR(oh_run_once(oh_model(13, "GatherElements", ge_in, 2, 1, &n), ge_in, 2, 0, &y, 1, 2), KILN_INVALID_ARGUMENT,
              "indices[0,2] = -6 is out of range for data axis 0 of size 5 (valid: -5..4)");
  kiln_tensor wide = oh_ints(2, (int64_t[]){1, 4}, (int64_t[]){0, 0, 0, 0});
  const kiln_tensor *wide_in[2] = {&x, &wide};
  CHECK_ERROR(oh_run_once(oh_model(13, "GatherElements", wide_in, 2, 1, &n), wide_in, 2, 0, &y, 1, 2), KILN_INVALID_ARGUMENT,
              "indices int64[1,4] do not fit data float[5,3]");
  /* GatherND: tuples longer than the rank, and indices out of range along the second axis */
  kiln_tensor long_tuple = oh_ints(2, (int64_t[]){1, 3}, (int64_t[]){0, 0, 0});
  const kiln_tensor *nd_long[2] = {&x, &long_tuple};
  CHECK_ERROR(oh_run_once(oh_model(13, "GatherND", nd_long, 2, 1, &n), nd_long, 2, 0, &y, 1, 2), KILN_INVALID_ARGUMENT,
              "index tuples have 3 values; 1..2 allowed");
  kiln_tensor nd = oh_ints(2, (int64_t[]){2, 2}, (int64_t[]){4, 2, 0, 3});
  const kiln_tensor *nd_in[2] = {&x, &nd};
  CHECK_ERROR(oh_run_once(oh_model(13, "GatherND", nd_in, 2, 1, &n), nd_in, 2, 0, &y, 1, 2), KILN_INVALID_ARGUMENT,
              "indices[1,1] = 3 is out of range for data axis 1 of size 3");
  kiln_tensor_release(&nd);
  kiln_tensor_release(&long_tuple);
  kiln_tensor_release(&wide);
  kiln_tensor_release(&ge);
  kiln_tensor_release(&floats);
  kiln_tensor_release(&ind);
  kiln_tensor_release(&x);
}

/* ---- Scatter */

static void test_scatter(void) {
  /* repeated indices: none keeps the last update, add sums them all */
  kiln_tensor x = oh_ints(2, (int64_t[]){2, 3}, (int64_t[]){1, 1, 1, 1, 1, 1});
  kiln_tensor ind = oh_ints(2, (int64_t[]){1, 3}, (int64_t[]){1, 1, -1});
  kiln_tensor upd = oh_ints(2, (int64_t[]){1, 3}, (int64_t[]){10, 20, 30}), y;
  const kiln_tensor *in[3] = {&x, &ind, &upd};
  tb_node *n;
  tb_model *b = oh_model(16, "ScatterElements", in, 3, 1, &n);
  tb_attr_int(n, "axis", 1);
  CHECK_OK(oh_run_once(b, in, 3, 0, &y, 1, 2));
  CHECK(memcmp(y.data, (int64_t[]){1, 20, 30, 1, 1, 1}, 6 * sizeof(int64_t)) == 0);
  kiln_tensor_release(&y);
  b = oh_model(16, "ScatterElements", in, 3, 1, &n);
  tb_attr_int(n, "axis", 1);
  tb_attr_string(n, "reduction", "add");
  CHECK_OK(oh_run_once(b, in, 3, 0, &y, 1, 2));
  CHECK(memcmp(y.data, (int64_t[]){1, 31, 31, 1, 1, 1}, 6 * sizeof(int64_t)) == 0);
  kiln_tensor_release(&y);
  /* reduction arrived in opset 16; max in 18 */
  b = oh_model(13, "ScatterElements", in, 3, 1, &n);
  tb_attr_string(n, "reduction", "add");
  CHECK_ERROR(oh_run_once(b, in, 3, 0, &y, 1, 2), KILN_INVALID_ARGUMENT, "reduction 'add' is not supported at opset 13");
  b = oh_model(16, "ScatterElements", in, 3, 1, &n);
  tb_attr_string(n, "reduction", "max");
  CHECK_ERROR(oh_run_once(b, in, 3, 0, &y, 1, 2), KILN_INVALID_ARGUMENT, "reduction 'max' is not supported at opset 16");
  /* out of range */
  ((int64_t *)ind.data)[2] = 3;
  b = oh_model(16, "ScatterElements", in, 3, 1, &n);
  tb_attr_int(n, "axis", 1);
  CHECK_ERROR(oh_run_once(b, in, 3, 0, &y, 1, 2), KILN_INVALID_ARGUMENT, "indices[0,2] = 3 is out of range for data axis 1 of size 3 (valid: -3..2)");
  kiln_tensor short_upd = oh_ints(2, (int64_t[]){1, 2}, (int64_t[]){1, 2});
  const kiln_tensor *mismatch[3] = {&x, &ind, &short_upd};
  CHECK_ERROR(oh_run_once(oh_model(16, "ScatterElements", mismatch, 3, 1, &n), mismatch, 3, 0, &y, 1, 2), KILN_INVALID_ARGUMENT,
              "updates int64[1,2] must have the indices' shape");
  /* ScatterND: rows by index, mul reduction, out of range */
  kiln_tensor nd = oh_ints(2, (int64_t[]){2, 1}, (int64_t[]){1, 1}), rows = oh_ints(2, (int64_t[]){2, 3}, (int64_t[]){2, 3, 4, 5, 6, 7});
  const kiln_tensor *nd_in[3] = {&x, &nd, &rows};
  b = oh_model(16, "ScatterND", nd_in, 3, 1, &n);
  tb_attr_string(n, "reduction", "mul");
  CHECK_OK(oh_run_once(b, nd_in, 3, 0, &y, 1, 2));
  CHECK(memcmp(y.data, (int64_t[]){1, 1, 1, 10, 18, 28}, 6 * sizeof(int64_t)) == 0);
  kiln_tensor_release(&y);
  ((int64_t *)nd.data)[0] = -3;
  CHECK_ERROR(oh_run_once(oh_model(16, "ScatterND", nd_in, 3, 1, &n), nd_in, 3, 0, &y, 1, 2), KILN_INVALID_ARGUMENT,
              "indices[0,0] = -3 is out of range for data axis 0 of size 2 (valid: -2..1)");
  kiln_tensor_release(&nd);
  kiln_tensor_release(&rows);
  kiln_tensor_release(&short_upd);
  kiln_tensor_release(&x);
  kiln_tensor_release(&ind);
  kiln_tensor_release(&upd);
}

/* ---- OneHot, Compress, NonZero, ReverseSequence */

static void test_small_ops(void) {
  kiln_tensor ind = oh_ints(1, (int64_t[]){4}, (int64_t[]){0, -1, 3, 7}), depth = oh_ints(0, NULL, (int64_t[]){4});
  kiln_tensor values = oh_ints(1, (int64_t[]){2}, (int64_t[]){5, 9}), y;
  const kiln_tensor *in[3] = {&ind, &depth, &values};
  tb_node *n;
  tb_model *b = oh_model(11, "OneHot", in, 3, 1, &n);
  tb_attr_int(n, "axis", 0);
  CHECK_OK(oh_run_once(b, in, 3, 0, &y, 1, 2));
  /* [depth, 4]: column j has 9 at row indices[j]; 7 is out of range and leaves a column of 5s */
  CHECK(y.rank == 2 && y.dims[0] == 4 && y.dims[1] == 4);
  CHECK(memcmp(y.data, (int64_t[]){9, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 9, 9, 5}, 16 * sizeof(int64_t)) == 0);
  kiln_tensor_release(&y);
  ((int64_t *)depth.data)[0] = -2;
  CHECK_ERROR(oh_run_once(oh_model(11, "OneHot", in, 3, 1, &n), in, 3, 0, &y, 1, 2), KILN_INVALID_ARGUMENT, "depth -2 must be a positive number of classes");

  kiln_tensor x = oh_ints(2, (int64_t[]){2, 2}, (int64_t[]){1, 2, 3, 4}), cond;
  CHECK_OK(kiln_tensor_alloc(&cond, KILN_BOOL, 1, (int64_t[]){3}));
  memcpy(cond.data, (uint8_t[]){0, 1, 1}, 3);
  const kiln_tensor *c_in[2] = {&x, &cond};
  b = oh_model(11, "Compress", c_in, 2, 1, &n);
  tb_attr_int(n, "axis", 1);
  CHECK_ERROR(oh_run_once(b, c_in, 2, 0, &y, 1, 2), KILN_INVALID_ARGUMENT, "condition[2] is true but the axis has only 2 elements");
  CHECK_OK(oh_run_once(oh_model(11, "Compress", c_in, 2, 1, &n), c_in, 2, 0, &y, 1, 2)); /* flattened: keeps elements 1 and 2 */
  CHECK(y.rank == 1 && y.dims[0] == 2 && ((int64_t *)y.data)[0] == 2 && ((int64_t *)y.data)[1] == 3);
  kiln_tensor_release(&y);

  kiln_tensor f;
  CHECK_OK(kiln_tensor_alloc(&f, KILN_FLOAT, 2, (int64_t[]){2, 3}));
  memcpy(f.data, (float[]){0, -0.0f, NAN, 1, 0, -2}, sizeof(float) * 6);
  const kiln_tensor *f_in[1] = {&f};
  CHECK_OK(oh_run_once(oh_model(13, "NonZero", f_in, 1, 1, &n), f_in, 1, 0, &y, 1, 2));
  CHECK(y.rank == 2 && y.dims[0] == 2 && y.dims[1] == 3);
  CHECK(memcmp(y.data, (int64_t[]){0, 1, 1, 2, 0, 2}, 6 * sizeof(int64_t)) == 0);
  kiln_tensor_release(&y);

  kiln_tensor lens = oh_ints(1, (int64_t[]){2}, (int64_t[]){2, 3});
  const kiln_tensor *r_in[2] = {&x, &lens};
  CHECK_ERROR(oh_run_once(oh_model(10, "ReverseSequence", r_in, 2, 1, &n), r_in, 2, 0, &y, 1, 2), KILN_INVALID_ARGUMENT, "sequence_lens[1] = 3 is outside 0..2");
  kiln_tensor_release(&lens);
  kiln_tensor_release(&f);
  kiln_tensor_release(&cond);
  kiln_tensor_release(&x);
  kiln_tensor_release(&ind);
  kiln_tensor_release(&depth);
  kiln_tensor_release(&values);
}

/* ---- TopK */

static int64_t topk_axis;
static int topk_largest;

static void test_topk_matches_reference(void) {
  for (int iter = 0; iter < 40; iter++) {
    int rank = (int)oh_int(1, 3);
    int64_t dims[KILN_MAX_RANK];
    for (int d = 0; d < rank; d++) dims[d] = oh_int(1, rank == 1 ? 5000 : 60);
    topk_axis = oh_int(0, rank - 1);
    topk_largest = (int)(oh_rand() % 2);
    int64_t dim = dims[topk_axis], k = oh_int(0, dim), out[KILN_MAX_RANK];
    kiln_dtype dtype = iter % 3 == 0 ? KILN_INT32 : iter % 3 == 1 ? KILN_FLOAT : KILN_DOUBLE;
    kiln_tensor x;
    CHECK_OK(kiln_tensor_alloc(&x, dtype, rank, dims));
    for (int64_t i = 0; i < kiln_tensor_numel(&x); i++) { /* few distinct values: many ties */
      double v = (double)oh_int(-20, 20) / 4;
      if (dtype == KILN_INT32) ((int32_t *)x.data)[i] = (int32_t)(v * 4);
      else if (dtype == KILN_FLOAT) ((float *)x.data)[i] = (float)v;
      else ((double *)x.data)[i] = v;
    }
    memcpy(out, dims, sizeof dims);
    out[topk_axis] = k;
    kiln_tensor want_v, want_i, got[2], k_t = oh_vec(1, &k);
    CHECK_OK(kiln_tensor_alloc(&want_v, dtype, rank, out));
    CHECK_OK(kiln_tensor_alloc(&want_i, KILN_INT64, rank, out));
    /* selection by repeated scans: the best unused element, lowest index on ties */
    int64_t inner = 1, outer = 1;
    for (int d = (int)topk_axis + 1; d < rank; d++) inner *= dims[d];
    for (int d = 0; d < topk_axis; d++) outer *= dims[d];
    unsigned char *used = calloc((size_t)dim, 1);
    for (int64_t o = 0; o < outer; o++)
      for (int64_t r = 0; r < inner; r++) {
        memset(used, 0, (size_t)dim);
        for (int64_t j = 0; j < k; j++) {
          int64_t best = -1;
          for (int64_t i = 0; i < dim; i++) {
            if (used[i]) continue;
            double v = kiln_tensor_get_f64(&x, (o * dim + i) * inner + r), b = best < 0 ? 0 : kiln_tensor_get_f64(&x, (o * dim + best) * inner + r);
            if (best < 0 || (topk_largest ? v > b : v < b)) best = i;
          }
          used[best] = 1;
          oh_put(&want_v, (o * k + j) * inner + r, &x, (o * dim + best) * inner + r);
          ((int64_t *)want_i.data)[(o * k + j) * inner + r] = best;
        }
      }
    free(used);
    const kiln_tensor *in[2] = {&x, &k_t};
    tb_node *n;
    tb_model *b = oh_model(11, "TopK", in, 2, 2, &n);
    tb_attr_int(n, "axis", topk_axis);
    tb_attr_int(n, "largest", topk_largest);
    CHECK_OK(oh_run_once(b, in, 2, 0, got, 2, 2));
    CHECK(oh_same(&got[0], &want_v) && oh_same(&got[1], &want_i));
    kiln_tensor_release(&got[0]);
    kiln_tensor_release(&got[1]);
    kiln_tensor_release(&want_v);
    kiln_tensor_release(&want_i);
    kiln_tensor_release(&k_t);
    kiln_tensor_release(&x);
  }
  kiln_tensor x = oh_random_tensor(KILN_FLOAT, 2, (int64_t[]){3, 4}), k = oh_vec(1, (int64_t[]){5}), got[2];
  const kiln_tensor *in[2] = {&x, &k};
  tb_node *n;
  CHECK_ERROR(oh_run_once(oh_model(11, "TopK", in, 2, 2, &n), in, 2, 0, got, 2, 2), KILN_INVALID_ARGUMENT, "k = 5 is outside 0..4 (the size of axis 1)");
  kiln_tensor_release(&k);
  kiln_tensor_release(&x);
}

/* ---- Unique */

static void unsorted(tb_node *n) { tb_attr_int(n, "sorted", 0); }

static void test_unique(void) {
  kiln_tensor x = oh_ints(1, (int64_t[]){7}, (int64_t[]){3, 1, 3, 2, 1, 1, 5}), out[4];
  tb_node *n;
  const kiln_tensor *in[1] = {&x};
  for (int sorted = 1; sorted >= 0; sorted--) {
    tb_model *b = oh_model(11, "Unique", in, 1, 4, &n);
    if (!sorted) unsorted(n);
    CHECK_OK(oh_run_once(b, in, 1, 0, out, 4, 2));
    static const int64_t want[2][4][7] = {
        {{3, 1, 2, 5}, {0, 1, 3, 6}, {0, 1, 0, 2, 1, 1, 3}, {2, 3, 1, 1}},
        {{1, 2, 3, 5}, {1, 3, 0, 6}, {2, 0, 2, 1, 0, 0, 3}, {3, 1, 2, 1}},
    };
    CHECK(out[0].dims[0] == 4 && out[2].dims[0] == 7);
    for (int i = 0; i < 4; i++) {
      CHECK(memcmp(out[i].data, want[sorted][i], (size_t)out[i].dims[0] * sizeof(int64_t)) == 0);
      kiln_tensor_release(&out[i]);
    }
  }
  /* along an axis: rows [1 2] [0 9] [1 2] -> sorted unique rows [0 9] [1 2] */
  kiln_tensor m = oh_ints(2, (int64_t[]){3, 2}, (int64_t[]){1, 2, 0, 9, 1, 2});
  in[0] = &m;
  tb_model *b = oh_model(11, "Unique", in, 1, 4, &n);
  tb_attr_int(n, "axis", 0);
  CHECK_OK(oh_run_once(b, in, 1, 0, out, 4, 2));
  CHECK(out[0].rank == 2 && out[0].dims[0] == 2 && memcmp(out[0].data, (int64_t[]){0, 9, 1, 2}, 4 * sizeof(int64_t)) == 0);
  CHECK(memcmp(out[2].data, (int64_t[]){1, 0, 1}, 3 * sizeof(int64_t)) == 0);
  for (int i = 0; i < 4; i++) kiln_tensor_release(&out[i]);
  b = oh_model(11, "Unique", in, 1, 4, &n);
  tb_attr_int(n, "axis", -3);
  CHECK_ERROR(oh_run_once(b, in, 1, 0, out, 4, 2), KILN_INVALID_ARGUMENT, "axis -3 is out of range for rank 2");
  kiln_tensor_release(&m);
  kiln_tensor_release(&x);
}

TEST_MAIN(TEST(test_gather_matches_reference), TEST(test_gather_errors), TEST(test_scatter), TEST(test_small_ops),
          TEST(test_topk_matches_reference), TEST(test_unique))
