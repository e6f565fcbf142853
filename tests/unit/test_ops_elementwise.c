/* The elementwise op families (elementwise.c, activation.c, binary.c, cast.c) through one-node
 * models: the broadcast fast paths and threading against naive reference loops, the float32
 * approximations against libm, integer and conversion semantics, and errors for bad inputs.
 * Nodes run on a 2-thread pool so that large tensors are split. */
#include <float.h>

#include "op_harness.h"

/* ------------------------------------------------------------------ helpers */

/* Runs a node without attributes on a 2-thread pool; *out receives a copy of its output. */
static kiln_status run_op(int opset, const char *op, int n, const kiln_tensor *const *ins, kiln_tensor *out) {
  tb_node *node;
  return oh_run_once(oh_model(opset, op, ins, n, 1, &node), ins, n, 0, out, 1, 2);
}

/* A tensor filled from doubles, each converted as kx_set_f64 does. */
static kiln_tensor values(kiln_dtype t, int rank, const int64_t *dims, const double *v) {
  kiln_tensor x = oh_tensor(t, rank, dims);
  for (int64_t i = 0; i < kiln_tensor_numel(&x); i++) kx_set_f64(&x, i, v[i]);
  return x;
}

static kiln_tensor vector(kiln_dtype t, int n, const double *v) { return values(t, 1, (int64_t[]){n}, v); }

/* Flat index into t of the element that numpy broadcasting maps to position `flat` of (rank, dims). */
static int64_t broadcast_index(const kiln_tensor *t, int rank, const int64_t *dims, int64_t flat) {
  int64_t index = 0, stride = 1;
  for (int d = rank - 1; d >= 0; d--) {
    int64_t i = flat % dims[d];
    flat /= dims[d];
    int td = d - (rank - t->rank);
    if (td < 0) continue;
    if (t->dims[td] != 1) index += i * stride;
    stride *= t->dims[td];
  }
  return index;
}

/* ------------------------------------------------------------------ broadcasting fast paths */

typedef struct shape_pair {
  int ra, rb;
  int64_t a[4], b[4];
} shape_pair;

/* Fixed cases for each fast path, large enough to be split over the pool, then random ones. */
static const shape_pair fixed_pairs[] = {
    {4, 4, {4, 64, 33, 17}, {4, 64, 33, 17}}, /* same shape */
    {4, 0, {4, 64, 33, 17}, {0}},             /* scalar */
    {4, 1, {4, 64, 33, 17}, {1}},             /* one-element vector */
    {0, 4, {0}, {4, 64, 33, 17}},             /* scalar first */
    {3, 1, {2, 50, 768}, {768}},              /* row */
    {4, 3, {2, 64, 30, 30}, {64, 1, 1}},      /* channel */
    {4, 4, {2, 64, 30, 30}, {1, 64, 1, 1}},   /* channel, same rank */
    {3, 4, {64, 1, 1}, {2, 64, 30, 30}},      /* channel first */
    {2, 2, {300, 1}, {1, 400}},               /* outer product */
    {3, 3, {2, 130, 257}, {2, 130, 1}},       /* per-row scalar (LayerNorm) */
    {4, 4, {3, 1, 5, 1}, {1, 4, 1, 6}},       /* general */
};

/* b broadcasts to a: a suffix of a's dims, some of them 1. */
static void random_unidirectional(shape_pair *p) {
  p->ra = (int)(oh_rand() % 5);
  for (int d = 0; d < p->ra; d++) p->a[d] = 1 + oh_rand() % 6;
  p->rb = p->ra ? (int)(oh_rand() % (p->ra + 1)) : 0;
  for (int d = 0; d < p->rb; d++) p->b[d] = oh_rand() % 3 == 0 ? 1 : p->a[d + p->ra - p->rb];
}

/* Two shapes that broadcast together, each possibly growing the other. */
static void random_pair(shape_pair *p) {
  random_unidirectional(p);
  for (int d = p->ra - p->rb; d < p->ra; d++) /* sometimes broadcast a too */
    if (p->b[d - (p->ra - p->rb)] != 1 && oh_rand() % 4 == 0) p->a[d] = 1;
  if (oh_rand() % 2) { /* swap */
    shape_pair q = {p->rb, p->ra, {0}, {0}};
    memcpy(q.a, p->b, sizeof q.a);
    memcpy(q.b, p->a, sizeof q.b);
    *p = q;
  }
}

static double ref_binary(const char *op, double a, double b) {
  if (!strcmp(op, "Add")) return (float)(a + b);
  if (!strcmp(op, "Sub")) return (float)(a - b);
  if (!strcmp(op, "Mul")) return (float)(a * b);
  if (!strcmp(op, "Div")) return (float)(a / b);
  if (!strcmp(op, "Max")) return a > b ? a : b;
  if (!strcmp(op, "Min")) return a < b ? a : b;
  if (!strcmp(op, "Greater")) return a > b;
  if (!strcmp(op, "LessOrEqual")) return a <= b;
  if (!strcmp(op, "PRelu")) return a < 0 ? (float)(a * b) : a;
  return powf((float)a, (float)b);
}

/* One op over one shape pair against the reference; exact, except Pow (libm vs. multiplies). */
static void check_binary(const char *op, const shape_pair *p, int opset) {
  kiln_tensor a = oh_uniform_tensor(KILN_FLOAT, p->ra, p->a, -3, 3);
  kiln_tensor b = oh_uniform_tensor(KILN_FLOAT, p->rb, p->b, 0.5, 3), y = {0};
  const kiln_tensor *ins[2] = {&a, &b};
  int rank;
  int64_t dims[KILN_MAX_RANK];
  int pow_exponent = !strcmp(op, "Pow") && p->rb == 0;
  if (pow_exponent) ((float *)b.data)[0] = (float)(2 + oh_rand() % 2); /* the x^2, x^3 paths */
  rank = p->ra > p->rb ? p->ra : p->rb;
  for (int d = 0; d < rank; d++) {
    int da = d - (rank - p->ra), db = d - (rank - p->rb);
    int64_t x = da >= 0 ? p->a[da] : 1, z = db >= 0 ? p->b[db] : 1;
    dims[d] = x > z ? x : z;
  }
  int to_bool = !strcmp(op, "Greater") || !strcmp(op, "LessOrEqual");
  kiln_status s = run_op(opset, op, 2, ins, &y);
  if (s) {
    fprintf(stderr, "%s: %s\n", op, kiln_status_message(s));
    kiln_status_free(s);
    test_failures++;
  } else if (!oh_has_shape(&y, rank, dims)) {
    fprintf(stderr, "%s: output rank %d, expected %d\n", op, y.rank, rank);
    test_failures++;
  } else {
    int64_t bad = 0;
    for (int64_t i = 0; i < kiln_tensor_numel(&y); i++) {
      double va = ((float *)a.data)[broadcast_index(&a, rank, dims, i)];
      double vb = ((float *)b.data)[broadcast_index(&b, rank, dims, i)];
      double want = ref_binary(op, va, vb);
      double got = to_bool ? ((uint8_t *)y.data)[i] : ((float *)y.data)[i];
      if (!strcmp(op, "Pow") ? fabs(got - want) > 1e-5 * fabs(want) : got != want) bad++;
    }
    if (bad) {
      fprintf(stderr, "%s [%d dims] op [%d dims]: %lld elements differ\n", op, p->ra, p->rb, (long long)bad);
      test_failures++;
    }
  }
  kiln_tensor_release(&a);
  kiln_tensor_release(&b);
  kiln_tensor_release(&y);
}

static void test_broadcast_paths(void) {
  const char *ops[] = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Greater", "LessOrEqual", "Pow"};
  for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
    for (size_t i = 0; i < sizeof fixed_pairs / sizeof fixed_pairs[0]; i++) check_binary(ops[o], &fixed_pairs[i], 17);
    for (int i = 0; i < 40; i++) {
      shape_pair p;
      random_pair(&p);
      check_binary(ops[o], &p, 17);
    }
  }
}

static void test_prelu(void) {
  /* slope broadcasts to X only; [C,1,1] is the common channel layout */
  const shape_pair pairs[] = {
      {4, 3, {2, 64, 30, 30}, {64, 1, 1}}, {4, 0, {2, 64, 30, 30}, {0}}, {3, 1, {4, 5, 6}, {6}}};
  for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) check_binary("PRelu", &pairs[i], 16);
  for (int i = 0; i < 20; i++) {
    shape_pair p;
    random_unidirectional(&p);
    check_binary("PRelu", &p, 16);
  }
  /* opset 6: a 1-D slope is per channel (dimension 1) */
  kiln_tensor x = values(KILN_FLOAT, 3, (int64_t[]){1, 2, 3}, (double[]){-1, -2, 3, -4, 5, -6});
  kiln_tensor slope = vector(KILN_FLOAT, 2, (double[]){0.5, 0.25}), y = {0};
  CHECK_OK(run_op(6, "PRelu", 2, (const kiln_tensor *[]){&x, &slope}, &y));
  const float want[] = {-0.5f, -1, 3, -1, 5, -1.5f};
  for (int i = 0; i < 6 && y.data; i++) CHECK(((float *)y.data)[i] == want[i]);
  kiln_tensor_release(&y);
  /* the slope may not grow X */
  kiln_tensor big = oh_tensor(KILN_FLOAT, 4, (int64_t[]){2, 1, 2, 3});
  CHECK_ERROR(run_op(16, "PRelu", 2, (const kiln_tensor *[]){&x, &big}, &y), KILN_INVALID_ARGUMENT,
              "does not broadcast to X's shape");
  kiln_tensor_release(&x);
  kiln_tensor_release(&slope);
  kiln_tensor_release(&big);
}

static void test_variadic(void) {
  for (int iter = 0; iter < 30; iter++) {
    shape_pair p, q;
    random_pair(&p);
    random_pair(&q);
    kiln_tensor t[3] = {oh_uniform_tensor(KILN_FLOAT, p.ra, p.a, -2, 2), oh_uniform_tensor(KILN_FLOAT, p.rb, p.b, -2, 2),
                        oh_uniform_tensor(KILN_FLOAT, 0, NULL, -2, 2)};
    const kiln_tensor *ins[3] = {&t[0], &t[1], &t[2]};
    int rank = p.ra > p.rb ? p.ra : p.rb;
    int64_t dims[KILN_MAX_RANK];
    for (int d = 0; d < rank; d++) {
      int da = d - (rank - p.ra), db = d - (rank - p.rb);
      int64_t x = da >= 0 ? p.a[da] : 1, z = db >= 0 ? p.b[db] : 1;
      dims[d] = x > z ? x : z;
    }
    const char *ops[] = {"Sum", "Mean", "Max", "Min"};
    for (int o = 0; o < 4; o++) {
      kiln_tensor y = {0};
      CHECK_OK(run_op(13, ops[o], 3, ins, &y));
      if (!y.data && kiln_tensor_numel(&y) > 0) continue;
      CHECK(oh_has_shape(&y, rank, dims));
      int64_t bad = 0;
      for (int64_t i = 0; i < kiln_tensor_numel(&y); i++) {
        float v[3];
        for (int k = 0; k < 3; k++) v[k] = ((float *)t[k].data)[broadcast_index(&t[k], rank, dims, i)];
        float want = o == 0   ? v[0] + v[1] + v[2]
                     : o == 1 ? (v[0] + v[1] + v[2]) / 3
                     : o == 2 ? fmaxf(fmaxf(v[0], v[1]), v[2])
                              : fminf(fminf(v[0], v[1]), v[2]);
        bad += ((float *)y.data)[i] != want;
      }
      CHECK(bad == 0);
      kiln_tensor_release(&y);
    }
    for (int k = 0; k < 3; k++) kiln_tensor_release(&t[k]);
  }
  /* one input is a copy; NaN propagates through Max */
  kiln_tensor a = vector(KILN_FLOAT, 2, (double[]){1, NAN}), b = vector(KILN_FLOAT, 2, (double[]){NAN, 0}), y = {0};
  CHECK_OK(run_op(13, "Max", 1, (const kiln_tensor *[]){&a}, &y));
  CHECK(y.data && ((float *)y.data)[0] == 1);
  kiln_tensor_release(&y);
  CHECK_OK(run_op(13, "Max", 2, (const kiln_tensor *[]){&a, &b}, &y));
  CHECK(y.data && isnan(((float *)y.data)[0]) && isnan(((float *)y.data)[1]));
  kiln_tensor_release(&y);
  kiln_tensor_release(&a);
  kiln_tensor_release(&b);
}

static void test_where(void) {
  for (int iter = 0; iter < 40; iter++) {
    shape_pair p, q;
    random_pair(&p);
    random_pair(&q);
    if (iter == 0) { /* an attention mask with a scalar fill, split over the pool */
      p = (shape_pair){4, 4, {8, 12, 64, 64}, {8, 1, 1, 64}};
      q.rb = 0;
    }
    kiln_tensor c = oh_tensor(KILN_BOOL, p.rb, p.b), x = oh_uniform_tensor(KILN_FLOAT, p.ra, p.a, -1, 1);
    kiln_tensor z = oh_uniform_tensor(KILN_FLOAT, q.rb, q.b, -1, 1), y = {0};
    for (int64_t i = 0; i < kiln_tensor_numel(&c); i++) ((uint8_t *)c.data)[i] = oh_rand() % 2;
    const kiln_tensor *ins[3] = {&c, &x, &z};
    kiln_status s = run_op(16, "Where", 3, ins, &y);
    if (s) { /* q's shape may not broadcast with p's */
      CHECK(kiln_status_code(s) == KILN_INVALID_ARGUMENT && strstr(kiln_status_message(s), "cannot be broadcast"));
      kiln_status_free(s);
    } else {
      int64_t bad = 0;
      for (int64_t i = 0; i < kiln_tensor_numel(&y); i++) {
        int cond = ((uint8_t *)c.data)[broadcast_index(&c, y.rank, y.dims, i)];
        const kiln_tensor *src = cond ? &x : &z;
        bad += ((float *)y.data)[i] != ((float *)src->data)[broadcast_index(src, y.rank, y.dims, i)];
      }
      CHECK(bad == 0);
    }
    kiln_tensor_release(&c);
    kiln_tensor_release(&x);
    kiln_tensor_release(&z);
    kiln_tensor_release(&y);
  }
  /* strings are copied */
  kiln_tensor c = vector(KILN_BOOL, 3, (double[]){1, 0, 1}), x = oh_tensor(KILN_STRING, 1, (int64_t[]){3});
  kiln_tensor z = oh_tensor(KILN_STRING, 0, NULL), y = {0};
  const char *words[] = {"a", "b", "c"};
  for (int i = 0; i < 3; i++) ((char **)x.data)[i] = strdup(words[i]);
  ((char **)z.data)[0] = strdup("-");
  CHECK_OK(run_op(16, "Where", 3, (const kiln_tensor *[]){&c, &x, &z}, &y));
  if (y.data) {
    char **out = y.data;
    CHECK(!strcmp(out[0], "a") && !strcmp(out[1], "-") && !strcmp(out[2], "c"));
  }
  kiln_tensor_release(&y);
  CHECK_ERROR(run_op(16, "Where", 3, (const kiln_tensor *[]){&x, &x, &z}, &y), KILN_INVALID_ARGUMENT,
              "condition must be bool");
  kiln_tensor_release(&c);
  kiln_tensor_release(&x);
  kiln_tensor_release(&z);
}

/* float16: computed in float, rounded once. */
static void test_half(void) {
  shape_pair p = {3, 1, {6, 100, 130}, {130}};
  kiln_tensor a = oh_tensor(KILN_FLOAT16, p.ra, p.a), b = oh_tensor(KILN_FLOAT16, p.rb, p.b), y = {0};
  oh_fill_uniform(&a, -4, 4);
  oh_fill_uniform(&b, -4, 4);
  CHECK_OK(run_op(14, "Mul", 2, (const kiln_tensor *[]){&a, &b}, &y));
  int64_t bad = 0;
  for (int64_t i = 0; i < kiln_tensor_numel(&y) && y.data; i++) {
    float va = kiln_half_to_float(((uint16_t *)a.data)[i]), vb = kiln_half_to_float(((uint16_t *)b.data)[i % 130]);
    bad += ((uint16_t *)y.data)[i] != kiln_float_to_half(va * vb);
  }
  CHECK(bad == 0);
  kiln_tensor_release(&y);
  CHECK_OK(run_op(13, "Greater", 2, (const kiln_tensor *[]){&a, &b}, &y));
  bad = 0;
  for (int64_t i = 0; i < kiln_tensor_numel(&y) && y.data; i++)
    bad += ((uint8_t *)y.data)[i] !=
           (kiln_half_to_float(((uint16_t *)a.data)[i]) > kiln_half_to_float(((uint16_t *)b.data)[i % 130]));
  CHECK(bad == 0);
  kiln_tensor_release(&y);
  CHECK_OK(run_op(13, "Sqrt", 1, (const kiln_tensor *[]){&b}, &y));
  for (int64_t i = 0; i < 130 && y.data; i++)
    CHECK(((uint16_t *)y.data)[i] == kiln_float_to_half(sqrtf(kiln_half_to_float(((uint16_t *)b.data)[i]))));
  kiln_tensor_release(&y);
  /* the blocked float16 path of activations, split over the pool */
  CHECK_OK(run_op(13, "Sigmoid", 1, (const kiln_tensor *[]){&a}, &y));
  bad = 0;
  for (int64_t i = 0; i < kiln_tensor_numel(&y) && y.data; i++) {
    double want = 1 / (1 + exp(-kiln_half_to_float(((uint16_t *)a.data)[i])));
    bad += fabs(kiln_half_to_float(((uint16_t *)y.data)[i]) - want) > 1e-3 * want;
  }
  CHECK(bad == 0);
  kiln_tensor_release(&y);
  kiln_tensor_release(&a);
  kiln_tensor_release(&b);
}

/* ------------------------------------------------------------------ integer semantics */

/* Element i of an integer or bool tensor. */
static int64_t int_at(const kiln_tensor *t, int64_t i) {
  switch (t->dtype) {
  case KILN_INT8: return ((int8_t *)t->data)[i];
  case KILN_INT16: return ((int16_t *)t->data)[i];
  case KILN_INT32: return ((int32_t *)t->data)[i];
  case KILN_INT64: return ((int64_t *)t->data)[i];
  case KILN_UINT16: return ((uint16_t *)t->data)[i];
  case KILN_UINT32: return ((uint32_t *)t->data)[i];
  case KILN_UINT64: return (int64_t)((uint64_t *)t->data)[i];
  default: return ((uint8_t *)t->data)[i]; /* uint8, bool */
  }
}

static void check_ints(const kiln_tensor *y, const int64_t *want, int n) {
  CHECK(kiln_tensor_numel(y) == n);
  for (int i = 0; i < n && i < kiln_tensor_numel(y); i++) {
    int64_t got = int_at(y, i);
    if (got != want[i]) {
      fprintf(stderr, "  element %d: got %lld, expected %lld\n", i, (long long)got, (long long)want[i]);
      test_failures++;
    }
  }
}

static kiln_status run_attr_int(int opset, const char *op, int n, const kiln_tensor *const *ins, kiln_dtype out,
                                const char *attr, int64_t value, kiln_tensor *y) {
  tb_node *node;
  tb_model *b = oh_model(opset, op, ins, n, 1, &node);
  tb_attr_int(node, attr, value);
  return oh_run_once(b, ins, n, 0, y, 1, 2);
}

static void test_integer_semantics(void) {
  kiln_tensor a = vector(KILN_INT32, 6, (double[]){7, -7, 7, -7, INT32_MIN, 5});
  kiln_tensor b = vector(KILN_INT32, 6, (double[]){2, 2, -2, -2, -1, 0}), y = {0};
  const kiln_tensor *ab[2] = {&a, &b};
  CHECK_OK(run_op(14, "Div", 2, ab, &y)); /* truncation; INT_MIN / -1 wraps; x / 0 = 0 */
  check_ints(&y, (int64_t[]){3, -3, -3, 3, INT32_MIN, 0}, 6);
  kiln_tensor_release(&y);
  CHECK_OK(run_op(13, "Mod", 2, ab, &y)); /* the divisor's sign */
  check_ints(&y, (int64_t[]){1, 1, -1, -1, 0, 0}, 6);
  kiln_tensor_release(&y);
  CHECK_OK(run_attr_int(13, "Mod", 2, ab, KILN_INT32, "fmod", 1, &y)); /* the dividend's sign */
  check_ints(&y, (int64_t[]){1, -1, 1, -1, 0, 0}, 6);
  kiln_tensor_release(&y);
  CHECK_OK(run_op(14, "Mul", 2, ab, &y)); /* wraps */
  check_ints(&y, (int64_t[]){14, -14, -14, 14, INT32_MIN, 0}, 6);
  kiln_tensor_release(&y);
  CHECK_OK(run_op(13, "Abs", 1, ab, &y));
  check_ints(&y, (int64_t[]){7, 7, 7, 7, INT32_MIN, 5}, 6);
  kiln_tensor_release(&y);
  CHECK_OK(run_op(13, "Neg", 1, ab, &y));
  check_ints(&y, (int64_t[]){-7, 7, -7, 7, INT32_MIN, -5}, 6);
  kiln_tensor_release(&y);
  CHECK_OK(run_op(13, "Sign", 1, ab, &y));
  check_ints(&y, (int64_t[]){1, -1, 1, -1, -1, 1}, 6);
  kiln_tensor_release(&y);
  kiln_tensor_release(&a);
  kiln_tensor_release(&b);

  /* Pow: exact integer powers, negative exponents truncate, float exponents saturate */
  kiln_tensor base = vector(KILN_INT64, 5, (double[]){3, -2, 2, -1, 10});
  kiln_tensor iexp = vector(KILN_INT64, 5, (double[]){39, 3, -1, -3, 2});
  kiln_tensor fexp = vector(KILN_FLOAT, 5, (double[]){2, 3, 0.5, 2, 30});
  CHECK_OK(run_op(15, "Pow", 2, (const kiln_tensor *[]){&base, &iexp}, &y));
  check_ints(&y, (int64_t[]){4052555153018976267, -8, 0, -1, 100}, 5);
  kiln_tensor_release(&y);
  CHECK_OK(run_op(15, "Pow", 2, (const kiln_tensor *[]){&base, &fexp}, &y));
  check_ints(&y, (int64_t[]){9, -8, 1, 1, INT64_MAX}, 5);
  kiln_tensor_release(&y);
  kiln_tensor_release(&base);
  kiln_tensor_release(&iexp);
  kiln_tensor_release(&fexp);

  /* BitShift: shifting by the width or more gives 0 */
  kiln_tensor u = vector(KILN_UINT8, 4, (double[]){1, 255, 16, 3}), s = vector(KILN_UINT8, 4, (double[]){7, 1, 4, 8});
  tb_node *node;
  tb_model *bm = oh_model(11, "BitShift", (const kiln_tensor *[]){&u, &s}, 2, 1, &node);
  tb_attr_string(node, "direction", "LEFT");
  CHECK_OK(oh_run_once(bm, (const kiln_tensor *[]){&u, &s}, 2, 0, &y, 1, 2));
  check_ints(&y, (int64_t[]){128, 254, 0, 0}, 4);
  kiln_tensor_release(&y);
  bm = oh_model(11, "BitShift", (const kiln_tensor *[]){&u, &s}, 2, 1, &node);
  tb_attr_string(node, "direction", "RIGHT");
  CHECK_OK(oh_run_once(bm, (const kiln_tensor *[]){&u, &s}, 2, 0, &y, 1, 2));
  check_ints(&y, (int64_t[]){0, 127, 1, 0}, 4);
  kiln_tensor_release(&y);
  bm = oh_model(11, "BitShift", (const kiln_tensor *[]){&u, &s}, 2, 1, &node);
  tb_attr_string(node, "direction", "UP");
  CHECK_ERROR(oh_run_once(bm, (const kiln_tensor *[]){&u, &s}, 2, 0, &y, 1, 2), KILN_INVALID_ARGUMENT,
              "direction must be LEFT or RIGHT, got 'UP'");
  kiln_tensor_release(&u);
  kiln_tensor_release(&s);

  /* Clip on ints, a bound left out; Relu on ints */
  kiln_tensor x8 = vector(KILN_INT8, 4, (double[]){-128, -3, 4, 127}), hi = values(KILN_INT8, 0, NULL, (double[]){3});
  CHECK_OK(run_op(13, "Clip", 3, (const kiln_tensor *[]){&x8, NULL, &hi}, &y));
  check_ints(&y, (int64_t[]){-128, -3, 3, 3}, 4);
  kiln_tensor_release(&y);
  CHECK_OK(run_op(14, "Relu", 1, (const kiln_tensor *[]){&x8}, &y));
  check_ints(&y, (int64_t[]){0, 0, 4, 127}, 4);
  kiln_tensor_release(&y);
  kiln_tensor_release(&x8);
  kiln_tensor_release(&hi);
}

/* ------------------------------------------------------------------ unary math and activations */

/* Runs op on n samples spread over [lo, hi] (and their negatives) and returns the largest relative
 * error against ref (absolute below 1e-30, where results are subnormal or zero). */
static double max_rel_error(const char *op, double (*ref)(double), float lo, float hi) {
  enum { N = 300000 };
  kiln_tensor x = oh_tensor(KILN_FLOAT, 1, (int64_t[]){N}), y = {0};
  for (int i = 0; i < N; i++) {
    float v = lo + (hi - lo) * (float)i / (N / 2);
    ((float *)x.data)[i] = i < N / 2 ? v : -(lo + (hi - lo) * (float)(i - N / 2) / (N / 2));
  }
  double worst = 0;
  kiln_status s = run_op(13, op, 1, (const kiln_tensor *[]){&x}, &y);
  CHECK_OK(s);
  for (int i = 0; i < N && y.data; i++) {
    double want = ref(((float *)x.data)[i]), got = ((float *)y.data)[i];
    double err = fabs(want) > 1e-30 ? fabs(got - want) / fabs(want) : fabs(got - want) * 1e30;
    if (err > worst) worst = err;
  }
  kiln_tensor_release(&x);
  kiln_tensor_release(&y);
  return worst;
}

static double sigmoid(double x) { return 1 / (1 + exp(-x)); }

static void test_float_approximations(void) {
  CHECK(max_rel_error("Exp", exp, 0, 88.7f) < 1e-6);
  CHECK(max_rel_error("Exp", exp, 0, 1e-3f) < 1e-6);
  CHECK(max_rel_error("Erf", erf, 0, 6) < 1e-6);
  CHECK(max_rel_error("Erf", erf, 0, 1e-3f) < 1e-6);
  /* float32 Erf runs eight elements at a time, the last few through a block of their own: a value
   * gives the same result wherever it sits */
  double same[19];
  for (int i = 0; i < 19; i++) same[i] = 0.7;
  kiln_tensor xs = vector(KILN_FLOAT, 19, same), ys = {0};
  CHECK_OK(run_op(13, "Erf", 1, (const kiln_tensor *[]){&xs}, &ys));
  for (int i = 1; i < 19 && ys.data; i++) CHECK(((float *)ys.data)[i] == ((float *)ys.data)[0]);
  kiln_tensor_release(&xs);
  kiln_tensor_release(&ys);
  CHECK(max_rel_error("Tanh", tanh, 0, 12) < 1e-6);
  CHECK(max_rel_error("Tanh", tanh, 0, 1e-3f) < 1e-6);
  CHECK(max_rel_error("Sigmoid", sigmoid, 0, 100) < 1e-6);
  /* special values, as libm gives them */
  const double special[] = {0, -0.0, INFINITY, -INFINITY, NAN, 88.72, 88.73, -87.5, -103.5, -110, 1e-40};
  kiln_tensor x = vector(KILN_FLOAT, 11, special);
  const char *ops[] = {"Exp", "Erf", "Tanh", "Sigmoid"};
  double (*refs[])(double) = {exp, erf, tanh, sigmoid};
  for (int o = 0; o < 4; o++) {
    kiln_tensor y = {0};
    CHECK_OK(run_op(13, ops[o], 1, (const kiln_tensor *[]){&x}, &y));
    for (int i = 0; i < 11 && y.data; i++) {
      float got = ((float *)y.data)[i], want = (float)refs[o]((float)special[i]);
      int ok = isnan(want) ? isnan(got) : got == want || fabsf(got - want) <= 2e-7f * fabsf(want) + 1.5e-45f;
      if (!ok) {
        fprintf(stderr, "  %s(%g) = %g, expected %g\n", ops[o], special[i], got, want);
        test_failures++;
      }
    }
    kiln_tensor_release(&y);
  }
  kiln_tensor_release(&x);
}

static void test_unary_values(void) {
  kiln_tensor x = vector(KILN_FLOAT, 6, (double[]){0.5, 1.5, 2.5, -0.5, -2.5, 2.6}), y = {0};
  CHECK_OK(run_op(11, "Round", 1, (const kiln_tensor *[]){&x}, &y)); /* halves to even */
  const float round_want[] = {0, 2, 2, -0.0f, -2, 3};
  for (int i = 0; i < 6 && y.data; i++) CHECK(((float *)y.data)[i] == round_want[i]);
  kiln_tensor_release(&y);
  kiln_tensor_release(&x);

  x = vector(KILN_DOUBLE, 5, (double[]){INFINITY, -INFINITY, NAN, 0, -1});
  const uint8_t inf_want[3][5] = {{1, 1, 0, 0, 0}, {1, 0, 0, 0, 0}, {0, 1, 0, 0, 0}};
  const int64_t attrs[3][2] = {{1, 1}, {1, 0}, {0, 1}};
  for (int k = 0; k < 3; k++) {
    tb_node *node;
    tb_model *b = oh_model(10, "IsInf", (const kiln_tensor *[]){&x}, 1, 1, &node);
    tb_attr_int(node, "detect_positive", attrs[k][0]);
    tb_attr_int(node, "detect_negative", attrs[k][1]);
    CHECK_OK(oh_run_once(b, (const kiln_tensor *[]){&x}, 1, 0, &y, 1, 2));
    for (int i = 0; i < 5 && y.data; i++) CHECK(((uint8_t *)y.data)[i] == inf_want[k][i]);
    kiln_tensor_release(&y);
  }
  CHECK_OK(run_op(13, "IsNaN", 1, (const kiln_tensor *[]){&x}, &y));
  for (int i = 0; i < 5 && y.data; i++) CHECK(((uint8_t *)y.data)[i] == (i == 2));
  kiln_tensor_release(&y);
  CHECK_OK(run_op(13, "Sign", 1, (const kiln_tensor *[]){&x}, &y));
  const double sign_want[] = {1, -1, NAN, 0, -1};
  for (int i = 0; i < 5 && y.data; i++)
    CHECK(i == 2 ? isnan(((double *)y.data)[i]) : ((double *)y.data)[i] == sign_want[i]);
  kiln_tensor_release(&y);
  kiln_tensor_release(&x);

  /* every float op against libm on double inputs (no approximation there) */
  const char *ops[] = {"Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Atanh", "Log", "Sqrt"};
  double (*refs[])(double) = {sin, cos, tan, asin, acos, atan, sinh, cosh, asinh, atanh, log, sqrt};
  x = vector(KILN_DOUBLE, 3, (double[]){0.25, 0.5, 0.75});
  for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
    CHECK_OK(run_op(13, ops[o], 1, (const kiln_tensor *[]){&x}, &y));
    for (int i = 0; i < 3 && y.data; i++) CHECK(((double *)y.data)[i] == refs[o](((double *)x.data)[i]));
    kiln_tensor_release(&y);
  }
  kiln_tensor_release(&x);

  kiln_tensor flags = vector(KILN_BOOL, 2, (double[]){1, 0});
  CHECK_OK(run_op(1, "Not", 1, (const kiln_tensor *[]){&flags}, &y));
  CHECK(y.data && ((uint8_t *)y.data)[0] == 0 && ((uint8_t *)y.data)[1] == 1);
  kiln_tensor_release(&y);
  kiln_tensor_release(&flags);
}

static kiln_status run_attrs(int opset, const char *op, const kiln_tensor *x, const char *a1, float v1, const char *a2,
                             float v2, kiln_tensor *y) {
  tb_node *node;
  tb_model *b = oh_model(opset, op, &x, 1, 1, &node);
  if (a1) tb_attr_float(node, a1, v1);
  if (a2) tb_attr_float(node, a2, v2);
  return oh_run_once(b, &x, 1, 0, y, 1, 2);
}

static void test_activations(void) {
  const double in[] = {-3, -0.5, 0, 0.25, 2, 40};
  kiln_tensor x = vector(KILN_DOUBLE, 6, in);
  struct {
    const char *op, *a1, *a2;
    float v1, v2;
    double (*f)(double x, double a, double b);
  } cases[] = {
      {"LeakyRelu", "alpha", NULL, 0.1f, 0, NULL},
      {"Elu", "alpha", NULL, 2, 0, NULL},
      {"Selu", "alpha", "gamma", 1.5f, 2, NULL},
      {"Celu", "alpha", NULL, 2, 0, NULL},
      {"HardSigmoid", "alpha", "beta", 0.25f, 0.5f, NULL},
      {"HardSwish", NULL, NULL, 0, 0, NULL},
      {"Softplus", NULL, NULL, 0, 0, NULL},
      {"Softsign", NULL, NULL, 0, 0, NULL},
      {"ThresholdedRelu", "alpha", NULL, 0.2f, 0, NULL},
      {"Shrink", "lambd", "bias", 0.4f, 0.1f, NULL},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    kiln_tensor y = {0};
    CHECK_OK(run_attrs(16, cases[k].op, &x, cases[k].a1, cases[k].v1, cases[k].a2, cases[k].v2, &y));
    for (int i = 0; i < 6 && y.data; i++) {
      double v = in[i], a = cases[k].v1, b = cases[k].v2, want;
      switch (k) {
      case 0: want = v < 0 ? a * v : v; break;
      case 1: want = v < 0 ? a * (exp(v) - 1) : v; break;
      case 2: want = v > 0 ? b * v : b * a * (exp(v) - 1); break;
      case 3: want = v > 0 ? v : a * (exp(v / a) - 1); break;
      case 4: want = fmax(0, fmin(1, a * v + b)); break;
      case 5: want = v * fmax(0, fmin(1, v / 6 + 0.5)); break;
      case 6: want = log1p(exp(v)); break;
      case 7: want = v / (1 + fabs(v)); break;
      case 8: want = v > a ? v : 0; break;
      default: want = v < -a ? v + b : v > a ? v - b : 0; break;
      }
      double got = ((double *)y.data)[i];
      if (fabs(got - want) > 1e-12 * (1 + fabs(want))) {
        fprintf(stderr, "  %s(%g) = %.17g, expected %.17g\n", cases[k].op, v, got, want);
        test_failures++;
      }
    }
    kiln_tensor_release(&y);
  }
  /* Softplus does not overflow where exp(x) would */
  kiln_tensor big = vector(KILN_FLOAT, 1, (double[]){200}), y = {0};
  CHECK_OK(run_op(13, "Softplus", 1, (const kiln_tensor *[]){&big}, &y));
  CHECK(y.data && ((float *)y.data)[0] == 200);
  kiln_tensor_release(&y);
  kiln_tensor_release(&big);

  /* Clip: opset 6 attributes; min > max gives max; NaN stays */
  kiln_tensor f = vector(KILN_FLOAT, 4, (double[]){-2, 0.5, 3, NAN});
  CHECK_OK(run_attrs(6, "Clip", &f, "min", -1, "max", 1, &y));
  const float want6[] = {-1, 0.5f, 1};
  for (int i = 0; i < 3 && y.data; i++) CHECK(((float *)y.data)[i] == want6[i]);
  CHECK(y.data && isnan(((float *)y.data)[3]));
  kiln_tensor_release(&y);
  kiln_tensor lo = values(KILN_FLOAT, 0, NULL, (double[]){2}), hi = values(KILN_FLOAT, 0, NULL, (double[]){1});
  CHECK_OK(run_op(13, "Clip", 3, (const kiln_tensor *[]){&f, &lo, &hi}, &y));
  for (int i = 0; i < 3 && y.data; i++) CHECK(((float *)y.data)[i] == 1);
  kiln_tensor_release(&y);
  kiln_tensor wrong = values(KILN_DOUBLE, 0, NULL, (double[]){1}), two = vector(KILN_FLOAT, 2, (double[]){0, 1});
  CHECK_ERROR(run_op(13, "Clip", 2, (const kiln_tensor *[]){&f, &wrong}, &y), KILN_INVALID_ARGUMENT,
              "min has dtype double, input has float");
  CHECK_ERROR(run_op(13, "Clip", 3, (const kiln_tensor *[]){&f, NULL, &two}, &y), KILN_INVALID_ARGUMENT,
              "max must be a scalar, it has 2 elements");
  kiln_tensor_release(&f);
  kiln_tensor_release(&lo);
  kiln_tensor_release(&hi);
  kiln_tensor_release(&wrong);
  kiln_tensor_release(&two);
  kiln_tensor_release(&x);
}

/* ------------------------------------------------------------------ Cast */

static void check_strings(const kiln_tensor *y, const char *const *want, int n) {
  for (int i = 0; i < n && y->data && i < kiln_tensor_numel(y); i++) {
    const char *got = ((char **)y->data)[i];
    if (!got || strcmp(got, want[i])) {
      fprintf(stderr, "  string %d: got '%s', expected '%s'\n", i, got ? got : "(null)", want[i]);
      test_failures++;
    }
  }
}

static kiln_status cast(const kiln_tensor *x, kiln_dtype to, kiln_tensor *y) {
  tb_node *node;
  tb_model *b = oh_model(13, "Cast", &x, 1, 1, &node);
  tb_attr_int(node, "to", to);
  return oh_run_once(b, &x, 1, 0, y, 1, 2);
}

static kiln_tensor strings(int n, const char *const *s) {
  kiln_tensor t = oh_tensor(KILN_STRING, 1, (int64_t[]){n});
  for (int i = 0; i < n; i++) ((char **)t.data)[i] = strdup(s[i]);
  return t;
}

static void test_cast_strings(void) {
  kiln_tensor f = vector(KILN_FLOAT, 14,
                         (double[]){1, 100, 1e16, 9.999e15, 1e-5, 1e-4, -0.0, 123456789, 1.0 / 3, 1.5e-5, INFINITY,
                                    -INFINITY, NAN, 0.039187793});
  kiln_tensor y = {0};
  CHECK_OK(cast(&f, KILN_STRING, &y));
  check_strings(&y,
                (const char *[]){"1.0", "100.0", "1e+16", "9999000000000000.0", "1e-05", "1e-04", "-0.0", "123456790.0",
                                 "0.33333334", "1.5e-05", "inf", "-inf", "nan", "0.039187793"},
                14);
  kiln_tensor_release(&y);
  kiln_tensor_release(&f);

  kiln_tensor d = vector(KILN_DOUBLE, 3, (double[]){0.1, 1.0 / 3, 2.5e-300});
  CHECK_OK(cast(&d, KILN_STRING, &y));
  check_strings(&y, (const char *[]){"0.1", "0.3333333333333333", "2.5e-300"}, 3);
  kiln_tensor_release(&y);
  kiln_tensor_release(&d);

  kiln_tensor h = vector(KILN_FLOAT16, 2, (double[]){0.1, 65504});
  CHECK_OK(cast(&h, KILN_STRING, &y));
  check_strings(&y, (const char *[]){"0.1", "65500.0"}, 2);
  kiln_tensor_release(&y);
  kiln_tensor_release(&h);

  kiln_tensor i = vector(KILN_INT64, 2, (double[]){-7, 1e15}), b = vector(KILN_BOOL, 2, (double[]){1, 0});
  CHECK_OK(cast(&i, KILN_STRING, &y));
  check_strings(&y, (const char *[]){"-7", "1000000000000000"}, 2);
  kiln_tensor_release(&y);
  CHECK_OK(cast(&b, KILN_STRING, &y));
  check_strings(&y, (const char *[]){"True", "False"}, 2);
  kiln_tensor_release(&y);
  kiln_tensor_release(&i);
  kiln_tensor_release(&b);

  kiln_tensor s = strings(6, (const char *[]){" 1.5 ", "-INF", "NaN", "1e3", "+inf", "0.47892547"});
  CHECK_OK(cast(&s, KILN_FLOAT, &y));
  if (y.data) {
    const float *v = y.data;
    CHECK(v[0] == 1.5f && v[1] == -INFINITY && isnan(v[2]) && v[3] == 1000 && v[4] == INFINITY && v[5] == 0.47892547f);
  }
  kiln_tensor_release(&y);
  kiln_tensor_release(&s);
  s = strings(4, (const char *[]){"12", "-3", "1e3", "9223372036854775807"});
  CHECK_OK(cast(&s, KILN_INT64, &y));
  check_ints(&y, (int64_t[]){12, -3, 1000, INT64_MAX}, 4);
  kiln_tensor_release(&y);
  kiln_tensor_release(&s);
  s = strings(4, (const char *[]){"True", "false", "0", "2"});
  CHECK_OK(cast(&s, KILN_BOOL, &y));
  check_ints(&y, (int64_t[]){1, 0, 0, 1}, 4);
  kiln_tensor_release(&y);
  kiln_tensor_release(&s);
  s = strings(2, (const char *[]){"1.5", "1.5x"});
  CHECK_ERROR(cast(&s, KILN_FLOAT, &y), KILN_INVALID_ARGUMENT, "cannot parse '1.5x' as float");
  kiln_tensor_release(&s);
}

static void test_cast_numbers(void) {
  kiln_tensor f = vector(KILN_FLOAT, 6, (double[]){300, -1e10, NAN, -1.9, 1.9, INFINITY}), y = {0};
  CHECK_OK(cast(&f, KILN_INT8, &y)); /* saturates; NaN -> 0; truncates toward zero */
  check_ints(&y, (int64_t[]){127, -128, 0, -1, 1, 127}, 6);
  kiln_tensor_release(&y);
  CHECK_OK(cast(&f, KILN_UINT8, &y));
  check_ints(&y, (int64_t[]){255, 0, 0, 0, 1, 255}, 6);
  kiln_tensor_release(&y);
  CHECK_OK(cast(&f, KILN_BOOL, &y)); /* NaN is true */
  check_ints(&y, (int64_t[]){1, 1, 1, 1, 1, 1}, 6);
  kiln_tensor_release(&y);
  kiln_tensor_release(&f);

  kiln_tensor i = vector(KILN_INT64, 3, (double[]){300, -1, 16777217}); /* integers wrap */
  CHECK_OK(cast(&i, KILN_UINT8, &y));
  check_ints(&y, (int64_t[]){44, 255, 1}, 3);
  kiln_tensor_release(&y);
  CHECK_OK(cast(&i, KILN_FLOAT, &y)); /* rounds to nearest even */
  CHECK(y.data && ((float *)y.data)[2] == 16777216.0f);
  kiln_tensor_release(&y);
  kiln_tensor_release(&i);

  kiln_tensor u = oh_tensor(KILN_UINT64, 1, (int64_t[]){2});
  ((uint64_t *)u.data)[0] = UINT64_MAX;
  ((uint64_t *)u.data)[1] = 1;
  CHECK_OK(cast(&u, KILN_INT64, &y));
  check_ints(&y, (int64_t[]){-1, 1}, 2);
  kiln_tensor_release(&y);
  CHECK_OK(cast(&u, KILN_DOUBLE, &y));
  CHECK(y.data && ((double *)y.data)[0] == 18446744073709551616.0);
  kiln_tensor_release(&y);
  kiln_tensor_release(&u);

  /* float -> bfloat16 keeps the top half of the bits (ONNX's reference); back is exact */
  kiln_tensor g = vector(KILN_FLOAT, 2, (double[]){0.8203125 - 1e-6, NAN});
  CHECK_OK(cast(&g, KILN_BFLOAT16, &y));
  CHECK(y.data && kiln_bfloat16_to_float(((uint16_t *)y.data)[0]) == 0.81640625f);
  CHECK(y.data && isnan(kiln_bfloat16_to_float(((uint16_t *)y.data)[1])));
  kiln_tensor back = {0};
  CHECK_OK(cast(&y, KILN_FLOAT, &back));
  CHECK(back.data && ((float *)back.data)[0] == 0.81640625f);
  kiln_tensor_release(&back);
  kiln_tensor_release(&y);

  /* CastLike takes the dtype of its second input; Cast before opset 6 names it */
  kiln_tensor like = vector(KILN_FLOAT16, 1, (double[]){0});
  CHECK_OK(run_op(15, "CastLike", 2, (const kiln_tensor *[]){&g, &like}, &y));
  CHECK(y.dtype == KILN_FLOAT16 && y.data && kiln_half_to_float(((uint16_t *)y.data)[0]) == 0.8203125f);
  kiln_tensor_release(&y);
  tb_node *node;
  tb_model *b = oh_model(1, "Cast", (const kiln_tensor *[]){&g}, 1, 1, &node);
  tb_attr_string(node, "to", "DOUBLE");
  CHECK_OK(oh_run_once(b, (const kiln_tensor *[]){&g}, 1, 0, &y, 1, 2));
  CHECK(y.dtype == KILN_DOUBLE);
  kiln_tensor_release(&y);
  b = oh_model(13, "Cast", (const kiln_tensor *[]){&g}, 1, 1, &node);
  CHECK_ERROR(oh_run_once(b, (const kiln_tensor *[]){&g}, 1, 0, &y, 1, 2), KILN_INVALID_ARGUMENT, "attribute 'to' is missing");
  b = oh_model(13, "Cast", (const kiln_tensor *[]){&g}, 1, 1, &node);
  tb_attr_int(node, "to", KILN_COMPLEX64);
  CHECK_ERROR(oh_run_once(b, (const kiln_tensor *[]){&g}, 1, 0, &y, 1, 2), KILN_UNIMPLEMENTED, "cannot cast to complex64");
  kiln_tensor_release(&like);
  kiln_tensor_release(&g);

  /* large casts are split over the pool */
  enum { N = 200003 };
  kiln_tensor big = oh_tensor(KILN_INT64, 1, (int64_t[]){N});
  for (int k = 0; k < N; k++) ((int64_t *)big.data)[k] = k - N / 2;
  CHECK_OK(cast(&big, KILN_FLOAT16, &y));
  int64_t bad = 0;
  for (int k = 0; k < N && y.data; k++) bad += ((uint16_t *)y.data)[k] != kiln_float_to_half((float)(k - N / 2));
  CHECK(bad == 0);
  kiln_tensor_release(&y);
  kiln_tensor_release(&big);
}

/* ------------------------------------------------------------------ bad inputs and edge shapes */

static void test_bad_inputs(void) {
  kiln_tensor a = oh_tensor(KILN_FLOAT, 2, (int64_t[]){2, 3}), b = oh_tensor(KILN_FLOAT, 1, (int64_t[]){4});
  kiln_tensor d = oh_tensor(KILN_DOUBLE, 2, (int64_t[]){2, 3}), s = oh_tensor(KILN_STRING, 1, (int64_t[]){3}), y = {0};
  CHECK_ERROR(run_op(14, "Add", 2, (const kiln_tensor *[]){&a, &b}, &y), KILN_INVALID_ARGUMENT,
              "shapes float[2,3] and float[4] cannot be broadcast together");
  CHECK_ERROR(run_op(14, "Mul", 2, (const kiln_tensor *[]){&a, &d}, &y), KILN_INVALID_ARGUMENT,
              "inputs have different dtypes: float and double");
  CHECK_ERROR(run_op(13, "Sum", 2, (const kiln_tensor *[]){&a, &d}, &y), KILN_INVALID_ARGUMENT,
              "input 1 has dtype double, input 0 has float");
  CHECK_ERROR(run_op(14, "Add", 3, (const kiln_tensor *[]){&a, &a, &a}, &y), KILN_INVALID_ARGUMENT,
              "Add takes 2 inputs, got 3");
  CHECK_ERROR(run_op(13, "Exp", 2, (const kiln_tensor *[]){&a, &a}, &y), KILN_INVALID_ARGUMENT,
              "Exp takes 1 input, got 2");
  CHECK_ERROR(run_op(13, "Relu", 2, (const kiln_tensor *[]){&a, &a}, &y), KILN_INVALID_ARGUMENT,
              "Relu takes 1 input, got 2");
  CHECK_ERROR(run_op(16, "Where", 2, (const kiln_tensor *[]){&a, &a}, &y), KILN_INVALID_ARGUMENT,
              "Where takes 3 inputs, got 2");
  CHECK_ERROR(run_op(13, "Clip", 4, (const kiln_tensor *[]){&a, &a, &a, &a}, &y), KILN_INVALID_ARGUMENT,
              "Clip takes 1 to 3 inputs, got 4");
  CHECK_ERROR(run_op(13, "Abs", 1, (const kiln_tensor *[]){&s}, &y), KILN_INVALID_ARGUMENT,
              "Abs does not support string inputs");
  CHECK_ERROR(run_op(13, "Not", 1, (const kiln_tensor *[]){&a}, &y), KILN_INVALID_ARGUMENT,
              "Not does not support float inputs");
  CHECK_ERROR(run_op(13, "Mod", 2, (const kiln_tensor *[]){&a, &a}, &y), KILN_INVALID_ARGUMENT,
              "fmod must be 1 for float inputs");
  CHECK_ERROR(run_op(7, "And", 2, (const kiln_tensor *[]){&a, &a}, &y), KILN_INVALID_ARGUMENT,
              "And does not support float inputs");
  kiln_tensor i8 = oh_tensor(KILN_INT8, 2, (int64_t[]){2, 3});
  CHECK_ERROR(run_op(15, "Pow", 2, (const kiln_tensor *[]){&i8, &a}, &y), KILN_INVALID_ARGUMENT,
              "Pow does not support int8 raised to float");
  /* opset < 7: shapes must match unless `broadcast` is set, and then B lines up at `axis` */
  kiln_tensor col = oh_tensor(KILN_FLOAT, 1, (int64_t[]){2}), row = vector(KILN_FLOAT, 3, (double[]){1, 2, 3});
  CHECK_ERROR(run_op(6, "Add", 2, (const kiln_tensor *[]){&a, &row}, &y), KILN_INVALID_ARGUMENT,
              "differ and the broadcast attribute is not set");
  tb_node *node;
  tb_model *m = oh_model(6, "Add", (const kiln_tensor *[]){&a, &col}, 2, 1, &node);
  tb_attr_int(node, "broadcast", 1);
  CHECK_ERROR(oh_run_once(m, (const kiln_tensor *[]){&a, &col}, 2, 0, &y, 1, 2), KILN_INVALID_ARGUMENT,
              "cannot broadcast float[2] to float[2,3] at axis 1");
  m = oh_model(6, "Add", (const kiln_tensor *[]){&a, &col}, 2, 1, &node);
  tb_attr_int(node, "broadcast", 1);
  tb_attr_int(node, "axis", 0);
  ((float *)col.data)[1] = 10;
  CHECK_OK(oh_run_once(m, (const kiln_tensor *[]){&a, &col}, 2, 0, &y, 1, 2));
  CHECK(y.data && ((float *)y.data)[2] == 0 && ((float *)y.data)[3] == 10);
  kiln_tensor_release(&y);
  kiln_tensor_release(&a);
  kiln_tensor_release(&b);
  kiln_tensor_release(&d);
  kiln_tensor_release(&s);
  kiln_tensor_release(&i8);
  kiln_tensor_release(&col);
  kiln_tensor_release(&row);
}

static void test_empty_and_scalar(void) {
  kiln_tensor e = oh_tensor(KILN_FLOAT, 2, (int64_t[]){0, 3}), r = oh_tensor(KILN_FLOAT, 1, (int64_t[]){3}), y = {0};
  CHECK_OK(run_op(14, "Add", 2, (const kiln_tensor *[]){&e, &r}, &y));
  CHECK(y.rank == 2 && y.dims[0] == 0 && y.dims[1] == 3);
  kiln_tensor_release(&y);
  CHECK_OK(run_op(13, "Sigmoid", 1, (const kiln_tensor *[]){&e}, &y));
  CHECK(y.rank == 2 && y.dims[0] == 0);
  kiln_tensor_release(&y);
  CHECK_OK(cast(&e, KILN_STRING, &y));
  CHECK(y.rank == 2 && y.dims[0] == 0 && y.dtype == KILN_STRING);
  kiln_tensor_release(&y);
  kiln_tensor_release(&e);
  kiln_tensor_release(&r);

  kiln_tensor s = values(KILN_FLOAT, 0, NULL, (double[]){2}), t = values(KILN_FLOAT, 0, NULL, (double[]){3});
  CHECK_OK(run_op(12, "Pow", 2, (const kiln_tensor *[]){&s, &t}, &y));
  CHECK(y.rank == 0 && y.data && ((float *)y.data)[0] == 8);
  kiln_tensor_release(&y);
  CHECK_OK(run_op(13, "Mean", 2, (const kiln_tensor *[]){&s, &t}, &y));
  CHECK(y.rank == 0 && y.data && ((float *)y.data)[0] == 2.5f);
  kiln_tensor_release(&y);
  kiln_tensor_release(&s);
  kiln_tensor_release(&t);
}

TEST_MAIN(TEST(test_broadcast_paths), TEST(test_prelu), TEST(test_variadic), TEST(test_where),
          TEST(test_half), TEST(test_integer_semantics), TEST(test_float_approximations), TEST(test_unary_values),
          TEST(test_activations), TEST(test_cast_strings), TEST(test_cast_numbers), TEST(test_bad_inputs),
          TEST(test_empty_and_scalar))
