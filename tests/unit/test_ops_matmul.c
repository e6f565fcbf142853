/* MatMul, Gemm and Einsum against naive reference loops over random shapes that reach every
 * path (single-row products, both transposes, several GEMM blocks, batched broadcasting, folded
 * and parallel batches, integer and narrow-float types), with 1 and 2 threads; plus malformed
 * inputs. */
#include "op_harness.h"

/* ------------------------------------------------------------------ harness */

/* Floats uniform in [-1, 1); integers in [-50, 50) ([0, 100) unsigned). */
static kiln_tensor random_tensor(kiln_dtype dtype, int rank, const int64_t *dims) {
  if (dtype == KILN_UINT32) return oh_uniform_tensor(dtype, rank, dims, 0, 100);
  if (dtype == KILN_INT32 || dtype == KILN_INT64) return oh_uniform_tensor(dtype, rank, dims, -50, 50);
  return oh_uniform_tensor(dtype, rank, dims, -1, 1);
}

static double get(const kiln_tensor *t, int64_t i) { return kiln_tensor_get_f64(t, i); }

typedef struct node_attrs {
  int trans_a, trans_b;
  float alpha, beta; /* 0 and 0: not set */
  const char *equation;
  const char *act; /* an activation node after the product (fused into it): NULL, "Relu", "LeakyRelu", "Clip" */
} node_attrs;

#define ACT_SLOPE 0.2f         /* LeakyRelu's alpha */
#define ACT_LO (-0.5f)         /* Clip's bounds */
#define ACT_HI 0.75f

/* Runs a one-node model on inputs x0, x1, ... (NULL entries are absent optional inputs). */
static kiln_status run_node(const char *op, int opset, int n, const kiln_tensor *const *xs, const node_attrs *a,
                            kiln_pool *pool, kiln_tensor *y) {
  tb_model *m = tb_new(opset);
  char names[64] = "";
  const kiln_tensor *feed[8];
  int nf = 0;
  for (int i = 0; i < n; i++) {
    char nm[16];
    snprintf(nm, sizeof nm, "x%d", i);
    if (xs[i]) {
      tb_input(m, nm, xs[i]->dtype, xs[i]->rank, xs[i]->dims);
      feed[nf++] = xs[i];
    }
    strcat(names, i ? "," : "");
    strcat(names, xs[i] ? nm : "");
  }
  tb_output(m, "y", xs[0]->dtype);
  const char *act = a ? a->act : NULL;
  tb_node *node = tb_add_node(m, op, names, act ? "p" : "y");
  if (act && strcmp(act, "Clip") == 0) { /* bounds as constant inputs, as exporters write them */
    kiln_tensor lo, hi;
    if (kiln_tensor_alloc(&lo, KILN_FLOAT, 0, NULL) || kiln_tensor_alloc(&hi, KILN_FLOAT, 0, NULL)) abort();
    *(float *)lo.data = ACT_LO;
    *(float *)hi.data = ACT_HI;
    tb_initializer(m, "lo", &lo);
    tb_initializer(m, "hi", &hi);
    kiln_tensor_release(&lo);
    kiln_tensor_release(&hi);
    tb_add_node(m, "Clip", "p,lo,hi", "y");
  } else if (act) {
    tb_node *an = tb_add_node(m, act, "p", "y");
    if (strcmp(act, "LeakyRelu") == 0) tb_attr_float(an, "alpha", ACT_SLOPE);
  }
  if (a && a->trans_a) tb_attr_int(node, "transA", 1);
  if (a && a->trans_b) tb_attr_int(node, "transB", 1);
  if (a && (a->alpha != 0 || a->beta != 0)) {
    tb_attr_float(node, "alpha", a->alpha);
    tb_attr_float(node, "beta", a->beta);
  }
  if (a && a->equation) tb_attr_string(node, "equation", a->equation);
  kiln_model *model = NULL;
  kiln_status s = tb_load(m, &model);
  tb_free(m);
  if (s) return s;
  kiln_session *sess = NULL;
  kiln_session_options opt = {.pool = pool};
  if ((s = kiln_session_create(model, &opt, &sess))) {
    kiln_model_free(model);
    return s;
  }
  const kiln_tensor *out[1];
  for (int rep = 0; rep < 2 && !s; rep++) s = kiln_session_run_tensors(sess, feed, out); /* second run: planned arena */
  if (!s) s = kiln_tensor_copy(y, out[0]);
  kiln_session_free(sess);
  kiln_model_free(model);
  return s;
}

static double tolerance(kiln_dtype t) {
  return t == KILN_FLOAT16 || t == KILN_BFLOAT16 ? 3e-2 : kiln_dtype_is_float(t) ? 1e-4 : 0;
}

/* Runs with 1 and 2 threads and compares with want. */
static void check_node(const char *what, const char *op, int opset, int n, const kiln_tensor *const *xs, const node_attrs *a,
                       const kiln_tensor *want, kiln_pool *pool) {
  for (int variant = 0; variant < 2; variant++) {
    kiln_tensor y = {0};
    kiln_status s = run_node(op, opset, n, xs, a, variant ? pool : NULL, &y);
    if (s) {
      fprintf(stderr, "%s (%d threads): %s\n", what, variant + 1, kiln_status_message(s));
      kiln_status_free(s);
      test_failures++;
    } else if (!oh_values_close(&y, want, tolerance(xs[0]->dtype), what)) {
      fprintf(stderr, "  ... in %s with %d threads\n", what, variant + 1);
      test_failures++;
    }
    kiln_tensor_release(&y);
  }
}

static kiln_pool *test_pool(void) {
  kiln_pool *p = NULL;
  CHECK_OK(kiln_pool_create(2, &p));
  return p;
}

/* The activation of a (if any) on the reference result. */
static void ref_activation(const node_attrs *a, kiln_tensor *y) {
  double *v = y->data;
  for (int64_t i = 0; a && a->act && i < kiln_tensor_numel(y); i++) {
    if (strcmp(a->act, "Relu") == 0) v[i] = v[i] > 0 ? v[i] : 0;
    else if (strcmp(a->act, "LeakyRelu") == 0) v[i] = v[i] >= 0 ? v[i] : v[i] * ACT_SLOPE;
    else v[i] = v[i] < ACT_LO ? ACT_LO : v[i] > ACT_HI ? ACT_HI : v[i];
  }
}

static kiln_tensor doubles(int rank, const int64_t *dims) {
  kiln_tensor t;
  if (kiln_tensor_alloc(&t, KILN_DOUBLE, rank, dims)) abort();
  return t;
}

/* ------------------------------------------------------------------ Gemm */

static void gemm_act_case(const char *what, kiln_dtype dt, int64_t M, int64_t N, int64_t K, int ta, int tb, float alpha,
                          float beta, int c_rank, const int64_t *c_dims, const char *act, kiln_pool *pool) {
  kiln_tensor a = random_tensor(dt, 2, ta ? (int64_t[]){K, M} : (int64_t[]){M, K});
  kiln_tensor b = random_tensor(dt, 2, tb ? (int64_t[]){N, K} : (int64_t[]){K, N});
  kiln_tensor c = {0};
  if (c_rank >= 0) c = random_tensor(dt, c_rank, c_dims);
  kiln_tensor want = doubles(2, (int64_t[]){M, N});
  int64_t cm = c_rank == 2 ? c_dims[0] : 1, cn = c_rank >= 1 ? c_dims[c_rank - 1] : 1;
  int ints = !kiln_dtype_is_float(dt);
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) {
      double s = 0;
      for (int64_t k = 0; k < K; k++) s += get(&a, ta ? k * M + i : i * K + k) * get(&b, tb ? j * K + k : k * N + j);
      double v = alpha * s;
      if (c_rank >= 0) v += beta * get(&c, (cm == 1 ? 0 : i) * cn + (cn == 1 ? 0 : j));
      ((double *)want.data)[i * N + j] = ints ? (double)(int32_t)v : v;
    }
  node_attrs at = {.trans_a = ta, .trans_b = tb, .alpha = alpha, .beta = beta, .act = act};
  ref_activation(&at, &want);
  const kiln_tensor *xs[3] = {&a, &b, c_rank >= 0 ? &c : NULL};
  check_node(what, "Gemm", 13, 3, xs, &at, &want, pool);
  kiln_tensor_release(&a);
  kiln_tensor_release(&b);
  kiln_tensor_release(&c);
  kiln_tensor_release(&want);
}

static void gemm_case(const char *what, kiln_dtype dt, int64_t M, int64_t N, int64_t K, int ta, int tb, float alpha,
                      float beta, int c_rank, const int64_t *c_dims, kiln_pool *pool) {
  gemm_act_case(what, dt, M, N, K, ta, tb, alpha, beta, c_rank, c_dims, NULL, pool);
}

static void test_gemm(void) {
  kiln_pool *pool = test_pool();
  for (int t = 0; t < 4; t++) { /* every transpose combination, several blocks and edges */
    int ta = t & 1, tb = t >> 1;
    gemm_case("gemm blocks", KILN_FLOAT, 13, 300, 400, ta, tb, 1, 1, 1, (int64_t[]){300}, pool);
    gemm_case("gemm row (gemv)", KILN_FLOAT, 1, 133, 70, ta, tb, 0.5f, 2, 2, (int64_t[]){1, 133}, pool);
    gemm_case("gemm small", KILN_FLOAT, 5, 7, 3, ta, tb, 1, 1, -1, NULL, pool);
  }
  gemm_case("gemm column bias", KILN_FLOAT, 37, 70, 30, 0, 1, 1, 1, 2, (int64_t[]){37, 1}, pool);
  gemm_case("gemm matrix bias, beta", KILN_FLOAT, 20, 33, 17, 1, 0, 2, 0.5f, 2, (int64_t[]){20, 33}, pool);
  gemm_case("gemm scalar bias", KILN_FLOAT, 8, 9, 10, 0, 0, 1, 1, 0, NULL, pool);
  gemm_case("gemm vector bias, beta", KILN_FLOAT, 8, 9, 10, 0, 0, 1, 3, 1, (int64_t[]){9}, pool);
  gemm_case("gemm K = 0", KILN_FLOAT, 4, 5, 0, 0, 0, 1, 1, 1, (int64_t[]){5}, pool);
  gemm_case("gemm big, 2 threads by rows", KILN_FLOAT, 200, 20, 500, 0, 0, 1, 0, -1, NULL, pool);
  gemm_case("gemm double", KILN_DOUBLE, 6, 5, 4, 1, 1, 1.5f, 1, 1, (int64_t[]){5}, pool);
  gemm_case("gemm float16", KILN_FLOAT16, 6, 5, 4, 0, 1, 1, 1, 1, (int64_t[]){5}, pool);
  gemm_case("gemm int32", KILN_INT32, 6, 5, 4, 1, 0, 1, 1, 2, (int64_t[]){6, 1}, pool);
  kiln_pool_free(pool);
}

/* ------------------------------------------------------------------ MatMul */

/* Reference MatMul with numpy broadcasting; a or b may be 1-D. */
static kiln_tensor ref_matmul(const kiln_tensor *a, const kiln_tensor *b) {
  int ra = a->rank, rb = b->rank;
  int64_t M = ra == 1 ? 1 : a->dims[ra - 2], K = a->dims[ra - 1], N = rb == 1 ? 1 : b->dims[rb - 1];
  int ba = ra > 2 ? ra - 2 : 0, bb = rb > 2 ? rb - 2 : 0, br = ba > bb ? ba : bb, orank = 0;
  int64_t bd[8], od[8];
  for (int d = 0; d < br; d++) {
    int64_t xa = d - (br - ba) >= 0 ? a->dims[d - (br - ba)] : 1, xb = d - (br - bb) >= 0 ? b->dims[d - (br - bb)] : 1;
    bd[d] = xa == 1 ? xb : xa;
    od[orank++] = bd[d];
  }
  if (ra > 1) od[orank++] = M;
  if (rb > 1) od[orank++] = N;
  kiln_tensor y = doubles(orank, od);
  int64_t count = 1;
  for (int d = 0; d < br; d++) count *= bd[d];
  int ints = !kiln_dtype_is_float(a->dtype);
  for (int64_t it = 0; it < count; it++) {
    int64_t ao = 0, bo = 0, sa = 1, sb = 1, rem = it;
    for (int d = br - 1; d >= 0; d--) {
      int64_t x = rem % bd[d];
      rem /= bd[d];
      int64_t xa = d - (br - ba) >= 0 ? a->dims[d - (br - ba)] : 1, xb = d - (br - bb) >= 0 ? b->dims[d - (br - bb)] : 1;
      ao += (xa == 1 ? 0 : x) * sa;
      bo += (xb == 1 ? 0 : x) * sb;
      sa *= xa;
      sb *= xb;
    }
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) {
        double s = 0;
        for (int64_t k = 0; k < K; k++) s += get(a, ao * M * K + i * K + k) * get(b, bo * K * N + k * N + j);
        ((double *)y.data)[(it * M + i) * N + j] = ints ? (double)(int64_t)s : s;
      }
  }
  return y;
}

static void matmul_act_case(const char *what, kiln_dtype dt, int ra, const int64_t *da, int rb, const int64_t *db,
                            const char *act, kiln_pool *pool) {
  kiln_tensor a = random_tensor(dt, ra, da), b = random_tensor(dt, rb, db), want = ref_matmul(&a, &b);
  node_attrs at = {.act = act};
  ref_activation(&at, &want);
  const kiln_tensor *xs[2] = {&a, &b};
  check_node(what, "MatMul", 13, 2, xs, &at, &want, pool);
  kiln_tensor_release(&a);
  kiln_tensor_release(&b);
  kiln_tensor_release(&want);
}

static void matmul_case(const char *what, kiln_dtype dt, int ra, const int64_t *da, int rb, const int64_t *db, kiln_pool *pool) {
  matmul_act_case(what, dt, ra, da, rb, db, NULL, pool);
}

static void test_matmul(void) {
  kiln_pool *pool = test_pool();
  matmul_case("2-D", KILN_FLOAT, 2, (int64_t[]){23, 410}, 2, (int64_t[]){410, 290}, pool);
  matmul_case("row (gemv)", KILN_FLOAT, 2, (int64_t[]){1, 300}, 2, (int64_t[]){300, 150}, pool);
  matmul_case("1-D x 2-D", KILN_FLOAT, 1, (int64_t[]){9}, 2, (int64_t[]){9, 70}, pool);
  matmul_case("2-D x 1-D", KILN_FLOAT, 2, (int64_t[]){11, 9}, 1, (int64_t[]){9}, pool);
  matmul_case("1-D x 1-D", KILN_FLOAT, 1, (int64_t[]){17}, 1, (int64_t[]){17}, pool);
  matmul_case("shared B folds", KILN_FLOAT, 3, (int64_t[]){4, 5, 33}, 2, (int64_t[]){33, 20}, pool);
  matmul_case("batched small products", KILN_FLOAT, 4, (int64_t[]){2, 3, 7, 16}, 4, (int64_t[]){2, 3, 16, 7}, pool);
  matmul_case("batched, parallel products", KILN_FLOAT, 3, (int64_t[]){7, 40, 30}, 3, (int64_t[]){7, 30, 50}, pool);
  matmul_case("broadcast batch", KILN_FLOAT, 4, (int64_t[]){2, 1, 5, 7}, 3, (int64_t[]){3, 7, 4}, pool);
  matmul_case("broadcast A", KILN_FLOAT, 2, (int64_t[]){5, 7}, 3, (int64_t[]){3, 7, 4}, pool);
  matmul_case("batched 1-D B", KILN_FLOAT, 3, (int64_t[]){3, 5, 7}, 1, (int64_t[]){7}, pool);
  matmul_case("zero K", KILN_FLOAT, 2, (int64_t[]){3, 0}, 2, (int64_t[]){0, 4}, pool);
  matmul_case("empty batch", KILN_FLOAT, 3, (int64_t[]){0, 3, 2}, 2, (int64_t[]){2, 4}, pool);
  matmul_case("double", KILN_DOUBLE, 3, (int64_t[]){2, 3, 4}, 3, (int64_t[]){2, 4, 5}, pool);
  matmul_case("float16", KILN_FLOAT16, 3, (int64_t[]){2, 3, 4}, 2, (int64_t[]){4, 5}, pool);
  matmul_case("bfloat16", KILN_BFLOAT16, 2, (int64_t[]){3, 4}, 2, (int64_t[]){4, 5}, pool);
  matmul_case("int32", KILN_INT32, 3, (int64_t[]){2, 3, 4}, 2, (int64_t[]){4, 5}, pool);
  matmul_case("int64", KILN_INT64, 2, (int64_t[]){3, 4}, 3, (int64_t[]){2, 4, 5}, pool);
  matmul_case("uint32", KILN_UINT32, 2, (int64_t[]){3, 4}, 2, (int64_t[]){4, 5}, pool);
  kiln_pool_free(pool);
}

/* Relu, LeakyRelu and Clip fused into the GEMM's store (full and partial tiles, 8-column tails,
 * several K blocks, the single-row path, K = 0) and left to the executor for other dtypes. */
static void test_fused_activations(void) {
  kiln_pool *pool = test_pool();
  const char *acts[] = {"Relu", "LeakyRelu", "Clip"};
  for (int i = 0; i < 3; i++) {
    const char *act = acts[i];
    gemm_act_case(act, KILN_FLOAT, 13, 300, 400, 0, 1, 1, 1, 1, (int64_t[]){300}, act, pool);
    gemm_act_case(act, KILN_FLOAT, 20, 70, 33, 1, 0, 2, 0.5f, 2, (int64_t[]){20, 70}, act, pool);
    gemm_act_case(act, KILN_FLOAT, 1, 133, 70, 0, 0, 1, 1, 1, (int64_t[]){133}, act, pool);
    gemm_act_case(act, KILN_FLOAT, 4, 5, 0, 0, 0, 1, 1, 1, (int64_t[]){5}, act, pool);
    gemm_act_case(act, KILN_FLOAT16, 6, 5, 4, 0, 1, 1, 1, 1, (int64_t[]){5}, act, pool);
    matmul_act_case(act, KILN_FLOAT, 2, (int64_t[]){23, 410}, 2, (int64_t[]){410, 41}, act, pool);
    matmul_act_case(act, KILN_FLOAT, 2, (int64_t[]){1, 300}, 2, (int64_t[]){300, 150}, act, pool);
    matmul_act_case(act, KILN_FLOAT, 3, (int64_t[]){7, 40, 30}, 3, (int64_t[]){7, 30, 50}, act, pool);
  }
  matmul_act_case("int32 Relu", KILN_INT32, 2, (int64_t[]){3, 4}, 2, (int64_t[]){4, 5}, "Relu", pool);
  kiln_pool_free(pool);
}

/* ------------------------------------------------------------------ Einsum */

static void einsum_case(const char *eq, int n, const kiln_tensor *xs, const kiln_tensor *want, kiln_pool *pool) {
  const kiln_tensor *ps[3] = {&xs[0], n > 1 ? &xs[1] : NULL, n > 2 ? &xs[2] : NULL};
  node_attrs at = {.equation = eq};
  check_node(eq, "Einsum", 12, n, ps, &at, want, pool);
}

static void test_einsum(void) {
  kiln_pool *pool = test_pool();
  kiln_tensor x[3], w;

  /* bhid,bhjd->bhij: attention scores, a batched GEMM with a transposed operand */
  x[0] = random_tensor(KILN_FLOAT, 4, (int64_t[]){2, 3, 5, 8});
  x[1] = random_tensor(KILN_FLOAT, 4, (int64_t[]){2, 3, 6, 8});
  w = doubles(4, (int64_t[]){2, 3, 5, 6});
  for (int64_t bh = 0; bh < 6; bh++)
    for (int64_t i = 0; i < 5; i++)
      for (int64_t j = 0; j < 6; j++) {
        double s = 0;
        for (int64_t d = 0; d < 8; d++) s += get(&x[0], (bh * 5 + i) * 8 + d) * get(&x[1], (bh * 6 + j) * 8 + d);
        ((double *)w.data)[(bh * 5 + i) * 6 + j] = s;
      }
  einsum_case("bhid,bhjd->bhij", 2, x, &w, pool);
  einsum_case("...id, ...jd", 2, x, &w, pool); /* implicit output, ellipsis */
  kiln_tensor_release(&w);

  /* ij->ji on operand 0's first matrix, via a 2-D copy */
  kiln_tensor m = random_tensor(KILN_FLOAT, 2, (int64_t[]){4, 7});
  w = doubles(2, (int64_t[]){7, 4});
  for (int64_t i = 0; i < 4; i++)
    for (int64_t j = 0; j < 7; j++) ((double *)w.data)[j * 4 + i] = get(&m, i * 7 + j);
  einsum_case("ij->ji", 1, &m, &w, pool);
  kiln_tensor_release(&w);
  /* ij-> : the sum of everything */
  w = doubles(0, NULL);
  for (int64_t i = 0; i < 28; i++) ((double *)w.data)[0] += get(&m, i);
  einsum_case("ij->", 1, &m, &w, pool);
  kiln_tensor_release(&w);
  kiln_tensor_release(&m);

  /* ii->i and ii (trace, implicit) on a square matrix */
  kiln_tensor sq = random_tensor(KILN_DOUBLE, 2, (int64_t[]){5, 5});
  w = doubles(1, (int64_t[]){5});
  double tr = 0;
  for (int64_t i = 0; i < 5; i++) tr += ((double *)w.data)[i] = get(&sq, i * 6);
  einsum_case("ii->i", 1, &sq, &w, pool);
  kiln_tensor_release(&w);
  w = doubles(0, NULL);
  ((double *)w.data)[0] = tr;
  einsum_case("ii", 1, &sq, &w, pool);
  kiln_tensor_release(&w);
  kiln_tensor_release(&sq);

  /* i,j (outer product, implicit) and ij,ij->i (row dots), and a diagonal inside a product */
  kiln_tensor u[2] = {random_tensor(KILN_FLOAT, 1, (int64_t[]){3}), random_tensor(KILN_FLOAT, 1, (int64_t[]){4})};
  w = doubles(2, (int64_t[]){3, 4});
  for (int64_t i = 0; i < 3; i++)
    for (int64_t j = 0; j < 4; j++) ((double *)w.data)[i * 4 + j] = get(&u[0], i) * get(&u[1], j);
  einsum_case("i,j", 2, u, &w, pool);
  kiln_tensor_release(&w);
  kiln_tensor_release(&u[0]);
  kiln_tensor_release(&u[1]);
  kiln_tensor r[2] = {random_tensor(KILN_FLOAT, 3, (int64_t[]){4, 3, 3}), random_tensor(KILN_FLOAT, 2, (int64_t[]){4, 3})};
  w = doubles(1, (int64_t[]){4});
  for (int64_t i = 0; i < 4; i++)
    for (int64_t j = 0; j < 3; j++) ((double *)w.data)[i] += get(&r[0], i * 9 + j * 4) * get(&r[1], i * 3 + j);
  einsum_case("ijj,ij->i", 2, r, &w, pool);
  kiln_tensor_release(&w);
  kiln_tensor_release(&r[0]);
  kiln_tensor_release(&r[1]);

  /* three operands, and a summed label that only one operand has: abc,cd,de->ae */
  x[2] = random_tensor(KILN_FLOAT, 2, (int64_t[]){4, 2});
  kiln_tensor_release(&x[0]);
  kiln_tensor_release(&x[1]);
  x[0] = random_tensor(KILN_FLOAT, 3, (int64_t[]){2, 3, 5});
  x[1] = random_tensor(KILN_FLOAT, 2, (int64_t[]){5, 4});
  w = doubles(2, (int64_t[]){2, 2});
  for (int64_t a = 0; a < 2; a++)
    for (int64_t e = 0; e < 2; e++) {
      double s = 0;
      for (int64_t b = 0; b < 3; b++)
        for (int64_t c = 0; c < 5; c++)
          for (int64_t d = 0; d < 4; d++) s += get(&x[0], (a * 3 + b) * 5 + c) * get(&x[1], c * 4 + d) * get(&x[2], d * 2 + e);
      ((double *)w.data)[a * 2 + e] = s;
    }
  einsum_case("abc,cd,de->ae", 3, x, &w, pool);
  kiln_tensor_release(&w);
  /* abc,cd->ad: b summed from A alone */
  w = doubles(2, (int64_t[]){2, 4});
  for (int64_t a = 0; a < 2; a++)
    for (int64_t d = 0; d < 4; d++)
      for (int64_t b = 0; b < 3; b++)
        for (int64_t c = 0; c < 5; c++) ((double *)w.data)[a * 4 + d] += get(&x[0], (a * 3 + b) * 5 + c) * get(&x[1], c * 4 + d);
  einsum_case("abc,cd->ad", 2, x, &w, pool);
  kiln_tensor_release(&w);
  for (int i = 0; i < 3; i++) kiln_tensor_release(&x[i]);

  /* integers: ij,jk->ik */
  x[0] = random_tensor(KILN_INT32, 2, (int64_t[]){3, 4});
  x[1] = random_tensor(KILN_INT32, 2, (int64_t[]){4, 2});
  w = ref_matmul(&x[0], &x[1]);
  einsum_case("ij,jk->ik", 2, x, &w, pool);
  kiln_tensor_release(&w);
  kiln_tensor_release(&x[0]);
  kiln_tensor_release(&x[1]);
  kiln_pool_free(pool);
}

/* ------------------------------------------------------------------ errors */

static void expect_error(const char *op, int opset, int n, const kiln_tensor *const *xs, const node_attrs *a, kiln_code code,
                         const char *text) {
  kiln_tensor y = {0};
  kiln_status s = run_node(op, opset, n, xs, a, NULL, &y);
  if (!s || kiln_status_code(s) != code || !strstr(kiln_status_message(s), text)) {
    fprintf(stderr, "%s: got '%s', expected %s containing '%s'\n", op, s ? kiln_status_message(s) : "ok", kiln_code_name(code), text);
    test_failures++;
  }
  kiln_status_free(s);
  kiln_tensor_release(&y);
}

static void test_errors(void) {
  kiln_tensor a = random_tensor(KILN_FLOAT, 2, (int64_t[]){2, 3}), b = random_tensor(KILN_FLOAT, 2, (int64_t[]){4, 5});
  kiln_tensor s = random_tensor(KILN_FLOAT, 0, NULL), a3 = random_tensor(KILN_FLOAT, 3, (int64_t[]){2, 2, 3});
  kiln_tensor b3 = random_tensor(KILN_FLOAT, 3, (int64_t[]){3, 3, 5}), i32 = random_tensor(KILN_INT32, 2, (int64_t[]){3, 5});
  kiln_tensor c = random_tensor(KILN_FLOAT, 1, (int64_t[]){7});
  expect_error("MatMul", 13, 2, (const kiln_tensor *[]){&a, &b}, NULL, KILN_INVALID_ARGUMENT,
               "MatMul inner dimensions differ: A float[2,3] has 3 columns, B float[4,5] has 4 rows");
  expect_error("MatMul", 13, 2, (const kiln_tensor *[]){&s, &b}, NULL, KILN_INVALID_ARGUMENT, "MatMul operands must have rank >= 1");
  expect_error("MatMul", 13, 2, (const kiln_tensor *[]){&a3, &b3}, NULL, KILN_INVALID_ARGUMENT, "cannot be broadcast");
  expect_error("MatMul", 13, 2, (const kiln_tensor *[]){&a, &i32}, NULL, KILN_INVALID_ARGUMENT, "different dtypes");
  expect_error("Gemm", 13, 2, (const kiln_tensor *[]){&a3, &b}, NULL, KILN_INVALID_ARGUMENT, "Gemm: A and B must be 2-D");
  expect_error("Gemm", 13, 2, (const kiln_tensor *[]){&a, &b}, NULL, KILN_INVALID_ARGUMENT,
               "Gemm inner dimensions differ: op(A) of A float[2,3] has 3 columns, op(B) of B float[4,5] has 4 rows");
  kiln_tensor b35 = random_tensor(KILN_FLOAT, 2, (int64_t[]){3, 5});
  expect_error("Gemm", 13, 3, (const kiln_tensor *[]){&a, &b35, &c}, NULL, KILN_INVALID_ARGUMENT,
               "Gemm: C float[7] cannot be broadcast to [2,5]");
  node_attrs eq = {.equation = "ij,jk->ik"};
  expect_error("Einsum", 12, 1, (const kiln_tensor *[]){&a}, &eq, KILN_INVALID_ARGUMENT, "has 2 operands, the node has 1 inputs");
  expect_error("Einsum", 12, 2, (const kiln_tensor *[]){&a, &b}, &eq, KILN_INVALID_ARGUMENT,
               "subscript 'j' has size 4 in operand 1 but 3 elsewhere");
  eq.equation = "ijk->i";
  expect_error("Einsum", 12, 1, (const kiln_tensor *[]){&a}, &eq, KILN_INVALID_ARGUMENT, "operand 0 has rank 2, its term has 3 subscripts");
  eq.equation = "ij->iq";
  expect_error("Einsum", 12, 1, (const kiln_tensor *[]){&a}, &eq, KILN_INVALID_ARGUMENT, "output subscript 'q' appears in no operand");
  eq.equation = "i.j->i";
  expect_error("Einsum", 12, 1, (const kiln_tensor *[]){&a}, &eq, KILN_INVALID_ARGUMENT, "bad ellipsis");
  kiln_tensor_release(&a);
  kiln_tensor_release(&b);
  kiln_tensor_release(&s);
  kiln_tensor_release(&a3);
  kiln_tensor_release(&b3);
  kiln_tensor_release(&i32);
  kiln_tensor_release(&c);
  kiln_tensor_release(&b35);
}

TEST_MAIN(TEST(test_gemm), TEST(test_matmul), TEST(test_fused_activations), TEST(test_einsum), TEST(test_errors))
