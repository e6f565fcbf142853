/* Indexing kernels (src/ops/indexing.c): Gather, TopK and Unique match naive references over
 * random shapes on a 2-thread pool; every out-of-range index is reported with its position,
 * value and the valid range; Scatter reductions and OneHot/Compress edge cases behave as the
 * spec says. */
#include "kiln/graph.h"
#include "onnx_builder.h"
#include "test.h"

static kiln_pool *pool;
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void) { /* xorshift64 */
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}
static int64_t rnd_in(int64_t lo, int64_t hi) { return lo + (int64_t)(rnd() % (uint64_t)(hi - lo + 1)); }

/* ---- a one-node model run through the public API */

/* A model of one `op` node reading inputs x0.. (NULL entries are absent) and writing y0... */
static tb_model *model(int opset, const char *op, int n_in, const kiln_tensor *const *in, int n_out, tb_node **node) {
  tb_model *b = tb_new(opset);
  char ins[128] = "", outs[128] = "", name[16];
  for (int i = 0; i < n_in; i++) {
    snprintf(name, sizeof name, "x%d", i);
    if (in[i]) tb_input(b, name, in[i]->dtype, -1, NULL);
    snprintf(ins + strlen(ins), sizeof ins - strlen(ins), "%s%s", i ? "," : "", in[i] ? name : "");
  }
  for (int i = 0; i < n_out; i++) {
    snprintf(name, sizeof name, "y%d", i);
    tb_output(b, name, KILN_UNDEFINED);
    snprintf(outs + strlen(outs), sizeof outs - strlen(outs), "%s%s", i ? "," : "", name);
  }
  *node = tb_add_node(b, op, ins, outs);
  return b;
}

/* Loads and runs the model (freeing the builder); out[i] receives copies of the outputs. */
static kiln_status run(tb_model *b, int n_in, const kiln_tensor *const *in, int n_out, kiln_tensor *out) {
  kiln_model *m;
  kiln_session *s = NULL;
  kiln_status st = tb_load(b, &m);
  tb_free(b);
  if (st) return st;
  kiln_session_options opt = {.pool = pool};
  const kiln_tensor *given[8], *got[8];
  int k = 0;
  for (int i = 0; i < n_in; i++)
    if (in[i]) given[k++] = in[i];
  if (!(st = kiln_session_create(m, &opt, &s)) && !(st = kiln_session_run_tensors(s, given, got)))
    for (int i = 0; i < n_out && !st; i++) st = kiln_tensor_copy(&out[i], got[i]);
  kiln_session_free(s);
  kiln_model_free(m);
  return st;
}

/* Runs a one-input, one-output node whose attributes `setup` sets. */
static kiln_status run1(int opset, const char *op, const kiln_tensor *x, void (*setup)(tb_node *), kiln_tensor *y) {
  tb_node *n;
  tb_model *b = model(opset, op, 1, &x, 1, &n);
  if (setup) setup(n);
  return run(b, 1, &x, 1, y);
}

static kiln_tensor ints(int rank, const int64_t *dims, const int64_t *values) {
  kiln_tensor t;
  CHECK_OK(kiln_tensor_alloc(&t, KILN_INT64, rank, dims));
  memcpy(t.data, values, kiln_tensor_nbytes(&t));
  return t;
}
static kiln_tensor vec(int n, const int64_t *values) { return ints(1, (int64_t[]){n}, values); }

/* A tensor of random bits (random short strings for KILN_STRING). */
static kiln_tensor random_tensor(kiln_dtype dtype, int rank, const int64_t *dims) {
  kiln_tensor t;
  CHECK_OK(kiln_tensor_alloc(&t, dtype, rank, dims));
  int64_t n = kiln_tensor_numel(&t);
  if (dtype == KILN_STRING) {
    for (int64_t i = 0; i < n; i++) {
      char buf[24];
      snprintf(buf, sizeof buf, "s%llu", (unsigned long long)(rnd() % 100000));
      ((char **)t.data)[i] = strdup(buf);
    }
  } else {
    for (size_t i = 0; i < kiln_tensor_nbytes(&t); i++) ((unsigned char *)t.data)[i] = (unsigned char)rnd();
  }
  return t;
}

static int same(const kiln_tensor *a, const kiln_tensor *b) {
  if (a->dtype != b->dtype || a->rank != b->rank) return 0;
  for (int d = 0; d < a->rank; d++)
    if (a->dims[d] != b->dims[d]) return 0;
  if (a->dtype != KILN_STRING) return kiln_tensor_nbytes(a) == 0 || memcmp(a->data, b->data, kiln_tensor_nbytes(a)) == 0;
  for (int64_t i = 0; i < kiln_tensor_numel(a); i++)
    if (strcmp(((char **)a->data)[i], ((char **)b->data)[i])) return 0;
  return 1;
}

/* Element i of src into element j of dst (string elements duplicated). */
static void put(kiln_tensor *dst, int64_t j, const kiln_tensor *src, int64_t i) {
  size_t es = kiln_dtype_size(src->dtype);
  if (src->dtype == KILN_STRING) ((char **)dst->data)[j] = strdup(((char **)src->data)[i]);
  else memcpy((char *)dst->data + j * (int64_t)es, (const char *)src->data + i * (int64_t)es, es);
}

static void unravel(int64_t flat, int rank, const int64_t *dims, int64_t *idx) {
  for (int d = rank - 1; d >= 0; d--) {
    idx[d] = flat % dims[d];
    flat /= dims[d];
  }
}
static int64_t ravel(int rank, const int64_t *dims, const int64_t *idx) {
  int64_t flat = 0;
  for (int d = 0; d < rank; d++) flat = flat * dims[d] + idx[d];
  return flat;
}

static const kiln_dtype copy_dtypes[] = {KILN_FLOAT, KILN_UINT8, KILN_FLOAT16, KILN_DOUBLE, KILN_STRING};

static kiln_tensor index_tensor(kiln_dtype dtype, int rank, const int64_t *dims, int64_t lo, int64_t hi) {
  kiln_tensor t;
  CHECK_OK(kiln_tensor_alloc(&t, dtype, rank, dims));
  for (int64_t i = 0; i < kiln_tensor_numel(&t); i++) {
    int64_t v = rnd_in(lo, hi);
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
    int rank = (int)rnd_in(1, 4), irank = (int)rnd_in(0, 3), axis = (int)rnd_in(0, rank - 1);
    int64_t dims[KILN_MAX_RANK], idims[KILN_MAX_RANK];
    for (int d = 0; d < rank; d++) dims[d] = rnd_in(1, rank <= 2 ? 300 : 20);
    for (int d = 0; d < irank; d++) idims[d] = rnd_in(iter % 9 == 0 ? 0 : 1, 12);
    if (iter % 5 == 0) { /* an embedding table: [vocab, hidden] rows picked by [batch, seq] */
      rank = 2, irank = 2, axis = 0;
      dims[0] = 1000, dims[1] = 768, idims[0] = 4, idims[1] = 40;
    }
    kiln_dtype dtype = copy_dtypes[iter % 5];
    kiln_tensor x = random_tensor(dtype, rank, dims);
    kiln_tensor ind = index_tensor(iter % 2 ? KILN_INT32 : KILN_INT64, irank, idims, -dims[axis], dims[axis] - 1), want, y;
    int64_t out[KILN_MAX_RANK], idx[KILN_MAX_RANK], src[KILN_MAX_RANK];
    int orank = rank - 1 + irank;
    for (int d = 0; d < orank; d++) out[d] = d < axis ? dims[d] : d < axis + irank ? idims[d - axis] : dims[d - irank + 1];
    CHECK_OK(kiln_tensor_alloc(&want, dtype, orank, out));
    for (int64_t i = 0; i < kiln_tensor_numel(&want); i++) {
      unravel(i, orank, out, idx);
      for (int d = 0; d < axis; d++) src[d] = idx[d];
      int64_t v = index_value(&ind, ravel(irank, idims, idx + axis));
      src[axis] = v < 0 ? v + dims[axis] : v;
      for (int d = axis + 1; d < rank; d++) src[d] = idx[d - 1 + irank];
      put(&want, i, &x, ravel(rank, dims, src));
    }
    const kiln_tensor *in[2] = {&x, &ind};
    tb_node *n;
    tb_model *b = model(13, "Gather", 2, in, 1, &n);
    tb_attr_int(n, "axis", rnd() % 2 ? axis : axis - rank);
    CHECK_OK(run(b, 2, in, 1, &y));
    CHECK(same(&y, &want));
    kiln_tensor_release(&y);
    kiln_tensor_release(&want);
    kiln_tensor_release(&ind);
    kiln_tensor_release(&x);
  }
}

static void test_gather_errors(void) {
  kiln_tensor x = random_tensor(KILN_FLOAT, 2, (int64_t[]){5, 3}), y;
  kiln_tensor ind = ints(2, (int64_t[]){2, 2}, (int64_t[]){0, 4, -5, 5});
  const kiln_tensor *in[2] = {&x, &ind};
  tb_node *n;
  CHECK_ERROR(run(model(13, "Gather", 2, in, 1, &n), 2, in, 1, &y), KILN_INVALID_ARGUMENT,
              "indices[1,1] = 5 is out of range for data axis 0 of size 5 (valid: -5..4)");
  tb_model *b = model(13, "Gather", 2, in, 1, &n);
  tb_attr_int(n, "axis", 2);
  CHECK_ERROR(run(b, 2, in, 1, &y), KILN_INVALID_ARGUMENT, "axis 2 is out of range for rank 2");
  kiln_tensor floats = random_tensor(KILN_FLOAT, 1, (int64_t[]){2});
  const kiln_tensor *bad_dtype[2] = {&x, &floats};
  CHECK_ERROR(run(model(13, "Gather", 2, bad_dtype, 1, &n), 2, bad_dtype, 1, &y), KILN_INVALID_ARGUMENT, "indices must be int32 or int64, got float");
  /* GatherElements: same rank, and each index checked against the axis */
  kiln_tensor ge = ints(2, (int64_t[]){1, 3}, (int64_t[]){0, 1, -6});
  const kiln_tensor *ge_in[2] = {&x, &ge};
  CHECK_ERROR(run(model(13, "GatherElements", 2, ge_in, 1, &n), 2, ge_in, 1, &y), KILN_INVALID_ARGUMENT,
              "indices[0,2] = -6 is out of range for data axis 0 of size 5 (valid: -5..4)");
  kiln_tensor wide = ints(2, (int64_t[]){1, 4}, (int64_t[]){0, 0, 0, 0});
  const kiln_tensor *wide_in[2] = {&x, &wide};
  CHECK_ERROR(run(model(13, "GatherElements", 2, wide_in, 1, &n), 2, wide_in, 1, &y), KILN_INVALID_ARGUMENT,
              "indices int64[1,4] do not fit data float[5,3]");
  /* GatherND: tuples longer than the rank, and indices out of range along the second axis */
  kiln_tensor long_tuple = ints(2, (int64_t[]){1, 3}, (int64_t[]){0, 0, 0});
  const kiln_tensor *nd_long[2] = {&x, &long_tuple};
  CHECK_ERROR(run(model(13, "GatherND", 2, nd_long, 1, &n), 2, nd_long, 1, &y), KILN_INVALID_ARGUMENT,
              "index tuples have 3 values; 1..2 allowed");
  kiln_tensor nd = ints(2, (int64_t[]){2, 2}, (int64_t[]){4, 2, 0, 3});
  const kiln_tensor *nd_in[2] = {&x, &nd};
  CHECK_ERROR(run(model(13, "GatherND", 2, nd_in, 1, &n), 2, nd_in, 1, &y), KILN_INVALID_ARGUMENT,
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
  kiln_tensor x = ints(2, (int64_t[]){2, 3}, (int64_t[]){1, 1, 1, 1, 1, 1});
  kiln_tensor ind = ints(2, (int64_t[]){1, 3}, (int64_t[]){1, 1, -1});
  kiln_tensor upd = ints(2, (int64_t[]){1, 3}, (int64_t[]){10, 20, 30}), y;
  const kiln_tensor *in[3] = {&x, &ind, &upd};
  tb_node *n;
  tb_model *b = model(16, "ScatterElements", 3, in, 1, &n);
  tb_attr_int(n, "axis", 1);
  CHECK_OK(run(b, 3, in, 1, &y));
  CHECK(memcmp(y.data, (int64_t[]){1, 20, 30, 1, 1, 1}, 6 * sizeof(int64_t)) == 0);
  kiln_tensor_release(&y);
  b = model(16, "ScatterElements", 3, in, 1, &n);
  tb_attr_int(n, "axis", 1);
  tb_attr_string(n, "reduction", "add");
  CHECK_OK(run(b, 3, in, 1, &y));
  CHECK(memcmp(y.data, (int64_t[]){1, 31, 31, 1, 1, 1}, 6 * sizeof(int64_t)) == 0);
  kiln_tensor_release(&y);
  /* reduction arrived in opset 16; max in 18 */
  b = model(13, "ScatterElements", 3, in, 1, &n);
  tb_attr_string(n, "reduction", "add");
  CHECK_ERROR(run(b, 3, in, 1, &y), KILN_INVALID_ARGUMENT, "reduction 'add' is not supported at opset 13");
  b = model(16, "ScatterElements", 3, in, 1, &n);
  tb_attr_string(n, "reduction", "max");
  CHECK_ERROR(run(b, 3, in, 1, &y), KILN_INVALID_ARGUMENT, "reduction 'max' is not supported at opset 16");
  /* out of range */
  ((int64_t *)ind.data)[2] = 3;
  b = model(16, "ScatterElements", 3, in, 1, &n);
  tb_attr_int(n, "axis", 1);
  CHECK_ERROR(run(b, 3, in, 1, &y), KILN_INVALID_ARGUMENT, "indices[0,2] = 3 is out of range for data axis 1 of size 3 (valid: -3..2)");
  kiln_tensor short_upd = ints(2, (int64_t[]){1, 2}, (int64_t[]){1, 2});
  const kiln_tensor *mismatch[3] = {&x, &ind, &short_upd};
  CHECK_ERROR(run(model(16, "ScatterElements", 3, mismatch, 1, &n), 3, mismatch, 1, &y), KILN_INVALID_ARGUMENT,
              "updates int64[1,2] must have the indices' shape");
  /* ScatterND: rows by index, mul reduction, out of range */
  kiln_tensor nd = ints(2, (int64_t[]){2, 1}, (int64_t[]){1, 1}), rows = ints(2, (int64_t[]){2, 3}, (int64_t[]){2, 3, 4, 5, 6, 7});
  const kiln_tensor *nd_in[3] = {&x, &nd, &rows};
  b = model(16, "ScatterND", 3, nd_in, 1, &n);
  tb_attr_string(n, "reduction", "mul");
  CHECK_OK(run(b, 3, nd_in, 1, &y));
  CHECK(memcmp(y.data, (int64_t[]){1, 1, 1, 10, 18, 28}, 6 * sizeof(int64_t)) == 0);
  kiln_tensor_release(&y);
  ((int64_t *)nd.data)[0] = -3;
  CHECK_ERROR(run(model(16, "ScatterND", 3, nd_in, 1, &n), 3, nd_in, 1, &y), KILN_INVALID_ARGUMENT,
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
  kiln_tensor ind = ints(1, (int64_t[]){4}, (int64_t[]){0, -1, 3, 7}), depth = ints(0, NULL, (int64_t[]){4});
  kiln_tensor values = ints(1, (int64_t[]){2}, (int64_t[]){5, 9}), y;
  const kiln_tensor *in[3] = {&ind, &depth, &values};
  tb_node *n;
  tb_model *b = model(11, "OneHot", 3, in, 1, &n);
  tb_attr_int(n, "axis", 0);
  CHECK_OK(run(b, 3, in, 1, &y));
  /* [depth, 4]: column j has 9 at row indices[j]; 7 is out of range and leaves a column of 5s */
  CHECK(y.rank == 2 && y.dims[0] == 4 && y.dims[1] == 4);
  CHECK(memcmp(y.data, (int64_t[]){9, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 9, 9, 5}, 16 * sizeof(int64_t)) == 0);
  kiln_tensor_release(&y);
  ((int64_t *)depth.data)[0] = -2;
  CHECK_ERROR(run(model(11, "OneHot", 3, in, 1, &n), 3, in, 1, &y), KILN_INVALID_ARGUMENT, "depth -2 must be a positive number of classes");

  kiln_tensor x = ints(2, (int64_t[]){2, 2}, (int64_t[]){1, 2, 3, 4}), cond;
  CHECK_OK(kiln_tensor_alloc(&cond, KILN_BOOL, 1, (int64_t[]){3}));
  memcpy(cond.data, (uint8_t[]){0, 1, 1}, 3);
  const kiln_tensor *c_in[2] = {&x, &cond};
  b = model(11, "Compress", 2, c_in, 1, &n);
  tb_attr_int(n, "axis", 1);
  CHECK_ERROR(run(b, 2, c_in, 1, &y), KILN_INVALID_ARGUMENT, "condition[2] is true but the axis has only 2 elements");
  CHECK_OK(run(model(11, "Compress", 2, c_in, 1, &n), 2, c_in, 1, &y)); /* flattened: keeps elements 1 and 2 */
  CHECK(y.rank == 1 && y.dims[0] == 2 && ((int64_t *)y.data)[0] == 2 && ((int64_t *)y.data)[1] == 3);
  kiln_tensor_release(&y);

  kiln_tensor f;
  CHECK_OK(kiln_tensor_alloc(&f, KILN_FLOAT, 2, (int64_t[]){2, 3}));
  memcpy(f.data, (float[]){0, -0.0f, NAN, 1, 0, -2}, sizeof(float) * 6);
  CHECK_OK(run1(13, "NonZero", &f, NULL, &y));
  CHECK(y.rank == 2 && y.dims[0] == 2 && y.dims[1] == 3);
  CHECK(memcmp(y.data, (int64_t[]){0, 1, 1, 2, 0, 2}, 6 * sizeof(int64_t)) == 0);
  kiln_tensor_release(&y);

  kiln_tensor lens = ints(1, (int64_t[]){2}, (int64_t[]){2, 3});
  const kiln_tensor *r_in[2] = {&x, &lens};
  CHECK_ERROR(run(model(10, "ReverseSequence", 2, r_in, 1, &n), 2, r_in, 1, &y), KILN_INVALID_ARGUMENT, "sequence_lens[1] = 3 is outside 0..2");
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
    int rank = (int)rnd_in(1, 3);
    int64_t dims[KILN_MAX_RANK];
    for (int d = 0; d < rank; d++) dims[d] = rnd_in(1, rank == 1 ? 5000 : 60);
    topk_axis = rnd_in(0, rank - 1);
    topk_largest = (int)(rnd() % 2);
    int64_t dim = dims[topk_axis], k = rnd_in(0, dim), out[KILN_MAX_RANK];
    kiln_dtype dtype = iter % 3 == 0 ? KILN_INT32 : iter % 3 == 1 ? KILN_FLOAT : KILN_DOUBLE;
    kiln_tensor x;
    CHECK_OK(kiln_tensor_alloc(&x, dtype, rank, dims));
    for (int64_t i = 0; i < kiln_tensor_numel(&x); i++) { /* few distinct values: many ties */
      double v = (double)rnd_in(-20, 20) / 4;
      if (dtype == KILN_INT32) ((int32_t *)x.data)[i] = (int32_t)(v * 4);
      else if (dtype == KILN_FLOAT) ((float *)x.data)[i] = (float)v;
      else ((double *)x.data)[i] = v;
    }
    memcpy(out, dims, sizeof dims);
    out[topk_axis] = k;
    kiln_tensor want_v, want_i, got[2], k_t = vec(1, &k);
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
          put(&want_v, (o * k + j) * inner + r, &x, (o * dim + best) * inner + r);
          ((int64_t *)want_i.data)[(o * k + j) * inner + r] = best;
        }
      }
    free(used);
    const kiln_tensor *in[2] = {&x, &k_t};
    tb_node *n;
    tb_model *b = model(11, "TopK", 2, in, 2, &n);
    tb_attr_int(n, "axis", topk_axis);
    tb_attr_int(n, "largest", topk_largest);
    CHECK_OK(run(b, 2, in, 2, got));
    CHECK(same(&got[0], &want_v) && same(&got[1], &want_i));
    kiln_tensor_release(&got[0]);
    kiln_tensor_release(&got[1]);
    kiln_tensor_release(&want_v);
    kiln_tensor_release(&want_i);
    kiln_tensor_release(&k_t);
    kiln_tensor_release(&x);
  }
  kiln_tensor x = random_tensor(KILN_FLOAT, 2, (int64_t[]){3, 4}), k = vec(1, (int64_t[]){5}), got[2];
  const kiln_tensor *in[2] = {&x, &k};
  tb_node *n;
  CHECK_ERROR(run(model(11, "TopK", 2, in, 2, &n), 2, in, 2, got), KILN_INVALID_ARGUMENT, "k = 5 is outside 0..4 (the size of axis 1)");
  kiln_tensor_release(&k);
  kiln_tensor_release(&x);
}

/* ---- Unique */

static void unsorted(tb_node *n) { tb_attr_int(n, "sorted", 0); }

static void test_unique(void) {
  kiln_tensor x = ints(1, (int64_t[]){7}, (int64_t[]){3, 1, 3, 2, 1, 1, 5}), out[4];
  tb_node *n;
  const kiln_tensor *in[1] = {&x};
  for (int sorted = 1; sorted >= 0; sorted--) {
    tb_model *b = model(11, "Unique", 1, in, 4, &n);
    if (!sorted) unsorted(n);
    CHECK_OK(run(b, 1, in, 4, out));
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
  kiln_tensor m = ints(2, (int64_t[]){3, 2}, (int64_t[]){1, 2, 0, 9, 1, 2});
  in[0] = &m;
  tb_model *b = model(11, "Unique", 1, in, 4, &n);
  tb_attr_int(n, "axis", 0);
  CHECK_OK(run(b, 1, in, 4, out));
  CHECK(out[0].rank == 2 && out[0].dims[0] == 2 && memcmp(out[0].data, (int64_t[]){0, 9, 1, 2}, 4 * sizeof(int64_t)) == 0);
  CHECK(memcmp(out[2].data, (int64_t[]){1, 0, 1}, 3 * sizeof(int64_t)) == 0);
  for (int i = 0; i < 4; i++) kiln_tensor_release(&out[i]);
  b = model(11, "Unique", 1, in, 4, &n);
  tb_attr_int(n, "axis", -3);
  CHECK_ERROR(run(b, 1, in, 4, out), KILN_INVALID_ARGUMENT, "axis -3 is out of range for rank 2");
  kiln_tensor_release(&m);
  kiln_tensor_release(&x);
}

static void test_setup(void) { CHECK_OK(kiln_pool_create(2, &pool)); }
static void test_teardown(void) { kiln_pool_free(pool); }

TEST_MAIN(TEST(test_setup), TEST(test_gather_matches_reference), TEST(test_gather_errors), TEST(test_scatter), TEST(test_small_ops),
          TEST(test_topk_matches_reference), TEST(test_unique), TEST(test_teardown))
