/* Unary math kernels, y = f(x) elementwise: Abs, Neg, Sign, Reciprocal, Sqrt, Exp, Log, the
 * trigonometric and hyperbolic functions, Erf, Gelu, Floor, Ceil, Round, IsNaN, IsInf and Not.
 * (Gelu is ONNX opset 20; kiln also runs it for the decomposed GELU of torch.onnx exports, which
 * the graph compiler fuses into one Gelu node.)
 *
 * Each op has one typed loop per supported dtype; float16/bfloat16 are widened to float in blocks,
 * computed with the float loop and narrowed back. Loops are split over the pool. float32 Exp uses
 * the branch-free approximation of vmath.h so that gcc vectorizes it, and float32 Erf (GELU's, on
 * the hot path of transformers) its own in AVX2 registers below; everything else calls libm
 * (through <tgmath.h>, so one expression serves float and double). */
#include "ops/typelist.h"
#include "ops/util.h"
#include "ops/vmath.h"

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>
#include <tgmath.h>

/* ------------------------------------------------------------------ float32 approximations */

/* erf(x) on eight floats, relative error below 2e-7. |x| < 1: x * P(x^2), a degree-6 minimax fit
 * of erf(x)/x. 1 <= |x| < 3.92: 1 - e^-x^2 * Q(1/|x|), Q a degree-7 fit of erfcx = e^x^2 erfc(x);
 * from 3.92 on, erf rounds to +-1. Both branches are computed and one selected. e^-x^2 is
 * kx_fast_expf's method, simpler here: -x^2 lies in [-15.4, -1], so 2^k is one normal factor.
 * NaN takes the second branch, where it propagates (the clamps keep it: max_ps and min_ps return
 * their second operand when one is NaN). */
static inline __m256 erf8(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
  __m256 a = _mm256_andnot_ps(sign, x), u = _mm256_mul_ps(x, x);
  __m256 p = _mm256_set1_ps(7.853858e-05f);
  p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(-0.00080101925f));
  p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(0.0051883277f));
  p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(-0.026853811f));
  p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(0.112835854f));
  p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(-0.37612626f));
  p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(1.1283791f));
  __m256 small = _mm256_mul_ps(x, p);

  __m256 ac = _mm256_min_ps(_mm256_set1_ps(3.92f), _mm256_max_ps(one, a));
  __m256 t = _mm256_div_ps(one, ac);
  __m256 q = _mm256_set1_ps(-0.017136415f);
  q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(0.117817365f));
  q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(-0.3494357f));
  q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(0.57147706f));
  q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(-0.50364393f));
  q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(0.050307654f));
  q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(0.55785555f));
  q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(0.00034202146f));

  /* e^v for v = -ac^2: v = k ln2 + r, e^r by kx_fast_expf's polynomial, 2^k in the exponent bits */
  const __m256 round_magic = _mm256_set1_ps(12582912.0f);
  __m256 v = _mm256_fnmadd_ps(ac, ac, _mm256_setzero_ps());
  __m256 kr = _mm256_fmadd_ps(v, _mm256_set1_ps(1.44269504f), round_magic);
  __m256 k = _mm256_sub_ps(kr, round_magic);
  __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), v);
  r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 e = _mm256_set1_ps(0.0013836834f);
  e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(0.008374822f));
  e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(0.041668225f));
  e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(0.1666642f));
  e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(0.4999999f));
  e = _mm256_fmadd_ps(e, r, one);
  e = _mm256_fmadd_ps(e, r, one);
  __m256i bits = _mm256_sub_epi32(_mm256_castps_si256(kr), _mm256_castps_si256(round_magic));
  e = _mm256_mul_ps(e, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(127)), 23)));

  __m256 large = _mm256_fnmadd_ps(e, q, one);
  large = _mm256_blendv_ps(large, one, _mm256_cmp_ps(a, _mm256_set1_ps(3.92f), _CMP_GE_OQ));
  large = _mm256_or_ps(large, _mm256_and_ps(x, sign)); /* large is positive: x's sign */
  return _mm256_blendv_ps(large, small, _mm256_cmp_ps(a, one, _CMP_LT_OQ));
}

/* ------------------------------------------------------------------ typed loops */

typedef void (*unary_fn)(const void *x, void *y, int64_t n);

#define UNARY_LOOP(name, TX, TY, EXPR)                    \
  static void name(const void *px, void *py, int64_t n) { \
    const TX *vx = px;                                    \
    TY *vy = py;                                          \
    for (int64_t i = 0; i < n; i++) {                     \
      TX x = vx[i];                                       \
      (void)x; /* IsInf detecting nothing ignores it */   \
      vy[i] = (EXPR);                                     \
    }                                                     \
  }

/* A float and a double loop from one type-generic expression. */
#define REAL_LOOPS(op, EXPR)               \
  UNARY_LOOP(op##_f32, float, float, EXPR) \
  UNARY_LOOP(op##_f64, double, double, EXPR)

#define DEF_ABS_SIGNED(op, D, S, T, W) UNARY_LOOP(op##_##S, T, T, (T)(x < 0 ? 0 - (W)x : (W)x))
#define DEF_IDENTITY(op, D, S, T, W) UNARY_LOOP(op##_##S, T, T, x)
#define DEF_NEG_SIGNED(op, D, S, T, W) UNARY_LOOP(op##_##S, T, T, (T)(0 - (W)x))
#define DEF_SIGN_SIGNED(op, D, S, T, W) UNARY_LOOP(op##_##S, T, T, (T)((x > 0) - (x < 0)))
#define DEF_SIGN_UNSIGNED(op, D, S, T, W) UNARY_LOOP(op##_##S, T, T, (T)(x > 0))
SIGNED_TYPES(DEF_ABS_SIGNED, abs)
UNSIGNED_TYPES(DEF_IDENTITY, abs)
REAL_LOOPS(abs, fabs(x))
SIGNED_TYPES(DEF_NEG_SIGNED, neg)
REAL_LOOPS(neg, -x)
SIGNED_TYPES(DEF_SIGN_SIGNED, sign)
UNSIGNED_TYPES(DEF_SIGN_UNSIGNED, sign)
REAL_LOOPS(sign, x > 0 ? 1 : x < 0 ? -1 : x) /* keeps +-0 and NaN, like numpy */

REAL_LOOPS(reciprocal, 1 / x)
REAL_LOOPS(sqrt, sqrt(x))
REAL_LOOPS(log, log(x))
REAL_LOOPS(sin, sin(x))
REAL_LOOPS(cos, cos(x))
REAL_LOOPS(tan, tan(x))
REAL_LOOPS(asin, asin(x))
REAL_LOOPS(acos, acos(x))
REAL_LOOPS(atan, atan(x))
REAL_LOOPS(sinh, sinh(x))
REAL_LOOPS(cosh, cosh(x))
REAL_LOOPS(asinh, asinh(x))
REAL_LOOPS(acosh, acosh(x))
REAL_LOOPS(atanh, atanh(x))
REAL_LOOPS(floor, floor(x))
REAL_LOOPS(ceil, ceil(x))
REAL_LOOPS(round, rint(x)) /* the default rounding mode: halves to even */
UNARY_LOOP(exp_f32, float, float, kx_fast_expf(x))
UNARY_LOOP(exp_f64, double, double, exp(x))

/* Eight at a time; the last n % 8 through a block on the stack, so that an element's result does
 * not depend on where a thread's range starts. */
static void erf_f32(const void *px, void *py, int64_t n) {
  const float *x = px;
  float *y = py;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, erf8(_mm256_loadu_ps(x + i)));
  if (i < n) {
    float block[8] = {0};
    memcpy(block, x + i, (size_t)(n - i) * sizeof *x);
    _mm256_storeu_ps(block, erf8(_mm256_loadu_ps(block)));
    memcpy(y + i, block, (size_t)(n - i) * sizeof *y);
  }
}
UNARY_LOOP(erf_f64, double, double, erf(x))

/* GELU, x * (1 + erf(x / sqrt 2)) / 2, eight at a time as erf_f32. */
static inline __m256 gelu8(__m256 x) {
  const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
  __m256 e = erf8(_mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f)));
  return _mm256_mul_ps(_mm256_mul_ps(half, x), _mm256_add_ps(one, e));
}

static void gelu_f32(const void *px, void *py, int64_t n) {
  const float *x = px;
  float *y = py;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, gelu8(_mm256_loadu_ps(x + i)));
  if (i < n) {
    float block[8] = {0};
    memcpy(block, x + i, (size_t)(n - i) * sizeof *x);
    _mm256_storeu_ps(block, gelu8(_mm256_loadu_ps(block)));
    memcpy(y + i, block, (size_t)(n - i) * sizeof *y);
  }
}
UNARY_LOOP(gelu_f64, double, double, 0.5 * x * (1 + erf(x * 0.70710678118654752440)))
/* approximate="tanh": x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3))) / 2 */
REAL_LOOPS(gelu_tanh, 0.5 * x * (1 + tanh(0.79788456080286535588 * (x + 0.044715 * x * x * x))))

UNARY_LOOP(isnan_f32, float, uint8_t, x != x)
UNARY_LOOP(isnan_f64, double, uint8_t, x != x)
UNARY_LOOP(isinf_f32, float, uint8_t, fabs(x) == INFINITY)
UNARY_LOOP(isinf_f64, double, uint8_t, fabs(x) == INFINITY)
UNARY_LOOP(isposinf_f32, float, uint8_t, x == INFINITY)
UNARY_LOOP(isposinf_f64, double, uint8_t, x == INFINITY)
UNARY_LOOP(isneginf_f32, float, uint8_t, x == -INFINITY)
UNARY_LOOP(isneginf_f64, double, uint8_t, x == -INFINITY)
UNARY_LOOP(never_f32, float, uint8_t, 0)
UNARY_LOOP(never_f64, double, uint8_t, 0)

UNARY_LOOP(not_bool, uint8_t, uint8_t, x == 0)

/* ------------------------------------------------------------------ op descriptions */

typedef struct unary_op {
  const char *name;
  double cost;                    /* rough scalar operations per element */
  int to_bool;                    /* IsNaN, IsInf: the output is bool */
  unary_fn fns[KILN_DTYPE_COUNT]; /* by input dtype; float16/bfloat16 use fns[KILN_FLOAT] */
} unary_op;

static const unary_op unary_ops[] = {
    {"Abs", 1, 0, {SIGNED_TYPES(ENTRY, abs) UNSIGNED_TYPES(ENTRY, abs) REAL_ENTRIES(abs)}},
    {"Neg", 1, 0, {SIGNED_TYPES(ENTRY, neg) REAL_ENTRIES(neg)}},
    {"Sign", 1, 0, {SIGNED_TYPES(ENTRY, sign) UNSIGNED_TYPES(ENTRY, sign) REAL_ENTRIES(sign)}},
    {"Reciprocal", 2, 0, {REAL_ENTRIES(reciprocal)}},
    {"Sqrt", 4, 0, {REAL_ENTRIES(sqrt)}},
    {"Exp", 8, 0, {REAL_ENTRIES(exp)}},
    {"Log", 20, 0, {REAL_ENTRIES(log)}},
    {"Sin", 20, 0, {REAL_ENTRIES(sin)}},
    {"Cos", 20, 0, {REAL_ENTRIES(cos)}},
    {"Tan", 30, 0, {REAL_ENTRIES(tan)}},
    {"Asin", 30, 0, {REAL_ENTRIES(asin)}},
    {"Acos", 30, 0, {REAL_ENTRIES(acos)}},
    {"Atan", 30, 0, {REAL_ENTRIES(atan)}},
    {"Sinh", 30, 0, {REAL_ENTRIES(sinh)}},
    {"Cosh", 30, 0, {REAL_ENTRIES(cosh)}},
    {"Asinh", 30, 0, {REAL_ENTRIES(asinh)}},
    {"Acosh", 30, 0, {REAL_ENTRIES(acosh)}},
    {"Atanh", 30, 0, {REAL_ENTRIES(atanh)}},
    {"Erf", 10, 0, {REAL_ENTRIES(erf)}},
    {"Gelu", 12, 0, {REAL_ENTRIES(gelu)}},
    {"Floor", 1, 0, {REAL_ENTRIES(floor)}},
    {"Ceil", 1, 0, {REAL_ENTRIES(ceil)}},
    {"Round", 1, 0, {REAL_ENTRIES(round)}},
    {"IsNaN", 1, 1, {REAL_ENTRIES(isnan)}},
    {"Not", 1, 0, {[KILN_BOOL] = not_bool}},
};

static const unary_op gelu_tanh_op = {"Gelu", 30, 0, {REAL_ENTRIES(gelu_tanh)}};

/* IsInf, by (detect_positive, detect_negative). */
static const unary_op isinf_ops[2][2] = {
    {{"IsInf", 1, 1, {REAL_ENTRIES(never)}}, {"IsInf", 1, 1, {REAL_ENTRIES(isneginf)}}},
    {{"IsInf", 1, 1, {REAL_ENTRIES(isposinf)}}, {"IsInf", 1, 1, {REAL_ENTRIES(isinf)}}},
};

typedef struct unary_params {
  const unary_op *op;
} unary_params;

/* ------------------------------------------------------------------ running */

enum { HALF_BLOCK = 256 };

typedef struct unary_job {
  unary_fn fn;
  const char *x;
  char *y;
  size_t x_size, y_size;
  kiln_dtype half; /* float16/bfloat16 input: fn is the float loop */
  int to_bool;
} unary_job;

static void unary_range(void *arg, int64_t begin, int64_t end) {
  const unary_job *j = arg;
  if (!j->half) {
    j->fn(j->x + (size_t)begin * j->x_size, j->y + (size_t)begin * j->y_size, end - begin);
    return;
  }
  float fx[HALF_BLOCK], fy[HALF_BLOCK];
  for (int64_t i = begin; i < end; i += HALF_BLOCK) {
    int64_t m = end - i < HALF_BLOCK ? end - i : HALF_BLOCK;
    char *y = j->y + (size_t)i * j->y_size;
    kx_to_float(j->half, j->x + (size_t)i * j->x_size, fx, m);
    j->fn(fx, j->to_bool ? (void *)y : fy, m);
    if (!j->to_bool) kx_from_float(j->half, fy, y, m);
  }
}

static kiln_status unary_run(kx_ctx *c) {
  const unary_op *op = ((const unary_params *)c->node->params)->op;
  const kiln_tensor *x;
  kiln_status s;
  if ((s = kx_require(c, 0, &x))) return s;
  int half = x->dtype == KILN_FLOAT16 || x->dtype == KILN_BFLOAT16;
  unary_fn fn = (unsigned)x->dtype < KILN_DTYPE_COUNT ? op->fns[half ? KILN_FLOAT : x->dtype] : NULL;
  if (!fn)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s does not support %s inputs", op->name, kiln_dtype_name(x->dtype));
  kiln_tensor *y;
  if ((s = kx_output(c, 0, op->to_bool ? KILN_BOOL : x->dtype, x->rank, x->dims, &y))) return s;
  unary_job j = {
      fn, x->data, y->data, kiln_dtype_size(x->dtype), kiln_dtype_size(y->dtype), half ? x->dtype : 0, op->to_bool};
  kx_parallel(c, kiln_tensor_numel(x), op->cost, unary_range, &j);
  return NULL;
}

static kiln_status unary_prepare(kx_node *n) {
  const unary_op *op = NULL;
  if (strcmp(n->op_type, "IsInf") == 0) {
    int pos = kx_attr_int(n->proto, "detect_positive", 1) != 0, neg = kx_attr_int(n->proto, "detect_negative", 1) != 0;
    op = &isinf_ops[pos][neg];
  } else if (strcmp(n->op_type, "Gelu") == 0) {
    char approx[16];
    kx_attr_string(n->proto, "approximate", "none", approx, sizeof approx);
    if (strcmp(approx, "tanh") == 0) op = &gelu_tanh_op;
    else if (strcmp(approx, "none") != 0)
      return kiln_error(KILN_INVALID_ARGUMENT, "Gelu's approximate must be 'none' or 'tanh', got '%s'", approx);
  }
  for (size_t i = 0; i < sizeof unary_ops / sizeof unary_ops[0] && !op; i++)
    if (strcmp(unary_ops[i].name, n->op_type) == 0) op = &unary_ops[i];
  if (!op) return kiln_error(KILN_INTERNAL, "no unary kernel named %s", n->op_type);
  if (n->n_in != 1) return kiln_error(KILN_INVALID_ARGUMENT, "%s takes 1 input, got %d", op->name, n->n_in);
  unary_params *p = malloc(sizeof *p);
  if (!p) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  p->op = op;
  n->params = p;
  return NULL;
}

#define UNARY(name, since) \
  { "", name, since, 0, unary_prepare, unary_run, NULL, 0 }

const kx_op kx_ops_elementwise[] = {
    UNARY("Abs", 1),   UNARY("Neg", 1),
    UNARY("Sign", 9),  UNARY("Reciprocal", 1),
    UNARY("Sqrt", 1),  UNARY("Exp", 1),
    UNARY("Log", 1),   UNARY("Sin", 7),
    UNARY("Cos", 7),   UNARY("Tan", 7),
    UNARY("Asin", 7),  UNARY("Acos", 7),
    UNARY("Atan", 7),  UNARY("Sinh", 9),
    UNARY("Cosh", 9),  UNARY("Asinh", 9),
    UNARY("Acosh", 9), UNARY("Atanh", 9),
    UNARY("Erf", 9),   UNARY("Gelu", 20),
    UNARY("Floor", 1),
    UNARY("Ceil", 1),  UNARY("Round", 11),
    UNARY("IsNaN", 9), UNARY("IsInf", 10),
    UNARY("Not", 1),   {0},
};
