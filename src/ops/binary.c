/* Elementwise kernels of two or more inputs with numpy broadcasting: arithmetic (Add, Sub, Mul, Div,
 * Pow, Mod), BitShift, logic (And, Or, Xor), comparisons, the variadic Max/Min/Sum/Mean, Where, and
 * PRelu (an activation, but its slope broadcasts, so it shares this machinery).
 *
 * All of them run through one broadcast walker. The output shape is simplified first: size-1
 * dimensions are dropped and neighbouring dimensions that every operand walks contiguously (or
 * not at all) are merged. The output is then produced in runs along the innermost remaining
 * dimension, over which each operand is either a contiguous array or one repeated value. The
 * common layouts all become long runs: same shape and scalar broadcast a single run, [B,S,D] op [D]
 * runs of D, [N,C,H,W] op [C,1,1] runs of H*W against a per-run scalar. The typed inner loops
 * below therefore only ever see plain arrays (or a scalar), which gcc vectorizes.
 *
 * float16 and bfloat16 are computed in float: the walker widens each run block-wise into float
 * buffers, calls the float kernel and narrows the result.
 *
 * Integer semantics: +, -, * wrap around (computed in unsigned arithmetic, as numpy does). Division
 * and Mod by zero, which ONNX leaves undefined, give 0 rather than trapping; INT_MIN / -1 wraps.
 * Shifts by the bit width or more give 0. */
#include "ops/typelist.h"
#include "ops/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ broadcast walker */

#define MAX_OPERANDS 3 /* Where */

/* The output shape after simplification, with each operand's element strides (0 where it is
 * broadcast). rank >= 1; the innermost stride of every operand is 0 or 1. */
typedef struct walk_shape {
  int rank;
  int64_t dims[KILN_MAX_RANK];
  int64_t strides[MAX_OPERANDS][KILN_MAX_RANK];
} walk_shape;

static void walk_init(walk_shape *w, int n, const kiln_tensor *const *ts, int rank, const int64_t *dims) {
  int64_t strides[MAX_OPERANDS][KILN_MAX_RANK];
  for (int i = 0; i < n; i++) kx_broadcast_strides(ts[i], rank, dims, strides[i]);
  w->rank = 0;
  for (int d = 0; d < rank; d++) {
    if (dims[d] == 1) continue;
    int r = w->rank, merge = r > 0;
    for (int i = 0; i < n && merge; i++) merge = w->strides[i][r - 1] == strides[i][d] * dims[d];
    if (merge) {
      w->dims[r - 1] *= dims[d];
    } else {
      w->dims[r] = dims[d];
      w->rank++;
    }
    for (int i = 0; i < n; i++) w->strides[i][w->rank - 1] = strides[i][d];
  }
  if (w->rank == 0) { /* a single element */
    w->rank = 1;
    w->dims[0] = 1;
    for (int i = 0; i < n; i++) w->strides[i][0] = 0;
  }
}

/* A position in the walk: the multi-index and each operand's element offset. */
typedef struct walk_pos {
  int64_t idx[KILN_MAX_RANK];
  int64_t off[MAX_OPERANDS];
} walk_pos;

static void walk_seek(const walk_shape *w, int n, int64_t pos, walk_pos *p) {
  for (int i = 0; i < n; i++) p->off[i] = 0;
  for (int d = w->rank - 1; d >= 0; d--) {
    p->idx[d] = pos % w->dims[d];
    pos /= w->dims[d];
    for (int i = 0; i < n; i++) p->off[i] += p->idx[d] * w->strides[i][d];
  }
}

/* Moves past `len` elements of the innermost dimension (at most to its end), carrying outwards. */
static void walk_advance(const walk_shape *w, int n, int64_t len, walk_pos *p) {
  int d = w->rank - 1;
  p->idx[d] += len;
  for (int i = 0; i < n; i++) p->off[i] += len * w->strides[i][d];
  for (; d > 0 && p->idx[d] == w->dims[d]; d--) {
    p->idx[d] = 0;
    p->idx[d - 1]++;
    for (int i = 0; i < n; i++) p->off[i] += w->strides[i][d - 1] - w->dims[d] * w->strides[i][d];
  }
}

/* Length of the run starting at p, capped at `left` elements. */
static int64_t walk_run(const walk_shape *w, const walk_pos *p, int64_t left) {
  int64_t rest = w->dims[w->rank - 1] - p->idx[w->rank - 1];
  return rest < left ? rest : left;
}

/* ------------------------------------------------------------------ typed inner loops */

/* One run: y[i] = EXPR for i in [0, n), where EXPR reads `a` = A[i * a_step] and b = B[i * b_step]
 * (steps are 0 or 1). Each step combination is its own plain loop. EXPR may ignore an operand. */
typedef void (*binary_fn)(const void *a, const void *b, void *y, int64_t n, int a_step, int b_step);

#define BINARY_LOOP(name, TA, TB, TY, EXPR)                                                       \
  static void name(const void *pa, const void *pb, void *py, int64_t n, int a_step, int b_step) { \
    const TA *va = pa;                                                                            \
    const TB *vb = pb;                                                                            \
    TY *vy = py;                                                                                  \
    if (a_step && b_step) {                                                                       \
      for (int64_t i = 0; i < n; i++) {                                                           \
        TA a = va[i];                                                                             \
        TB b = vb[i];                                                                             \
        (void)a, (void)b;                                                                         \
        vy[i] = (EXPR);                                                                           \
      }                                                                                           \
    } else if (a_step) {                                                                          \
      TB b = vb[0];                                                                               \
      for (int64_t i = 0; i < n; i++) {                                                           \
        TA a = va[i];                                                                             \
        (void)a, (void)b;                                                                         \
        vy[i] = (EXPR);                                                                           \
      }                                                                                           \
    } else if (b_step) {                                                                          \
      TA a = va[0];                                                                               \
      for (int64_t i = 0; i < n; i++) {                                                           \
        TB b = vb[i];                                                                             \
        (void)a, (void)b;                                                                         \
        vy[i] = (EXPR);                                                                           \
      }                                                                                           \
    } else {                                                                                      \
      TA a = va[0];                                                                               \
      TB b = vb[0];                                                                               \
      (void)a, (void)b;                                                                           \
      TY v = (EXPR);                                                                              \
      for (int64_t i = 0; i < n; i++) vy[i] = v;                                                  \
    }                                                                                             \
  }

#define DEF_ADD(op, D, S, T, W) BINARY_LOOP(op##_##S, T, T, T, (T)((W)a + (W)b))
#define DEF_SUB(op, D, S, T, W) BINARY_LOOP(op##_##S, T, T, T, (T)((W)a - (W)b))
#define DEF_MUL(op, D, S, T, W) BINARY_LOOP(op##_##S, T, T, T, (T)((W)a * (W)b))
NUMERIC_TYPES(DEF_ADD, add)
NUMERIC_TYPES(DEF_SUB, sub)
NUMERIC_TYPES(DEF_MUL, mul)

/* Signed integer division and remainders, widened to int64 (integer division does not vectorize
 * anyway). Division by zero gives 0; INT_MIN / -1 wraps, where C would overflow. */
static int64_t trunc_div(int64_t a, int64_t b) {
  if (b == 0) return 0;
  return b == -1 ? (int64_t)(0 - (uint64_t)a) : a / b;
}

/* The remainder with the dividend's sign (C's %, Mod with fmod=1). */
static int64_t trunc_mod(int64_t a, int64_t b) { return b == 0 || b == -1 ? 0 : a % b; }

/* The remainder with the divisor's sign (Python's %, Mod with fmod=0). */
static int64_t floor_mod(int64_t a, int64_t b) {
  int64_t r = trunc_mod(a, b);
  return r != 0 && (r < 0) != (b < 0) ? r + b : r;
}

#define DEF_DIV_SIGNED(op, D, S, T, W) BINARY_LOOP(op##_##S, T, T, T, (T)trunc_div(a, b))
#define DEF_DIV_UNSIGNED(op, D, S, T, W) BINARY_LOOP(op##_##S, T, T, T, b == 0 ? 0 : (T)(a / b))
#define DEF_DIV_REAL(op, D, S, T, W) BINARY_LOOP(op##_##S, T, T, T, a / b)
SIGNED_TYPES(DEF_DIV_SIGNED, div)
UNSIGNED_TYPES(DEF_DIV_UNSIGNED, div)
REAL_TYPES(DEF_DIV_REAL, div)

/* Mod: with fmod=0 the result takes the divisor's sign, with fmod=1 the dividend's (C's fmod).
 * Unsigned remainders agree; floats only have fmod=1 (ONNX requires it for them). */
#define DEF_MOD_SIGNED(op, D, S, T, W) BINARY_LOOP(op##_##S, T, T, T, (T)floor_mod(a, b))
#define DEF_FMOD_SIGNED(op, D, S, T, W) BINARY_LOOP(op##_##S, T, T, T, (T)trunc_mod(a, b))
#define DEF_MOD_UNSIGNED(op, D, S, T, W) BINARY_LOOP(op##_##S, T, T, T, b == 0 ? 0 : (T)(a % b))
SIGNED_TYPES(DEF_MOD_SIGNED, mod)
UNSIGNED_TYPES(DEF_MOD_UNSIGNED, mod)
SIGNED_TYPES(DEF_FMOD_SIGNED, fmod)
UNSIGNED_TYPES(DEF_MOD_UNSIGNED, fmod)
BINARY_LOOP(fmod_f32, float, float, float, fmodf(a, b))
BINARY_LOOP(fmod_f64, double, double, double, fmod(a, b))

/* NaN propagates, as in numpy's maximum/minimum. */
#define DEF_MAX(op, D, S, T, W) BINARY_LOOP(op##_##S, T, T, T, a > b || a != a ? a : b)
#define DEF_MIN(op, D, S, T, W) BINARY_LOOP(op##_##S, T, T, T, a < b || a != a ? a : b)
NUMERIC_TYPES(DEF_MAX, max)
NUMERIC_TYPES(DEF_MIN, min)

#define DEF_COMPARE(op, D, S, T, W) BINARY_LOOP(op##_##S, T, T, uint8_t, a CMP_##op b)
#define CMP_eq ==
#define CMP_gt >
#define CMP_ge >=
#define CMP_lt <
#define CMP_le <=
NUMERIC_TYPES(DEF_COMPARE, eq)
NUMERIC_TYPES(DEF_COMPARE, gt)
NUMERIC_TYPES(DEF_COMPARE, ge)
NUMERIC_TYPES(DEF_COMPARE, lt)
NUMERIC_TYPES(DEF_COMPARE, le)
BINARY_LOOP(eq_bool, uint8_t, uint8_t, uint8_t, (a != 0) == (b != 0))
typedef const char *cstring;
BINARY_LOOP(eq_string, cstring, cstring, uint8_t, strcmp(a ? a : "", b ? b : "") == 0)

BINARY_LOOP(and_bool, uint8_t, uint8_t, uint8_t, (a != 0) & (b != 0))
BINARY_LOOP(or_bool, uint8_t, uint8_t, uint8_t, (a != 0) | (b != 0))
BINARY_LOOP(xor_bool, uint8_t, uint8_t, uint8_t, (a != 0) ^ (b != 0))

/* PRelu: y = x < 0 ? x * slope : x. Unsigned x is never negative. */
#define DEF_PRELU(op, D, S, T, W) BINARY_LOOP(op##_##S, T, T, T, a < 0 ? (T)((W)a * (W)b) : a)
#define DEF_PRELU_UNSIGNED(op, D, S, T, W) BINARY_LOOP(op##_##S, T, T, T, a)
SIGNED_TYPES(DEF_PRELU, prelu)
REAL_TYPES(DEF_PRELU, prelu)
UNSIGNED_TYPES(DEF_PRELU_UNSIGNED, prelu)

/* Shifting by the bit width or more is undefined in C; here it gives 0. */
#define DEF_SHL(op, D, S, T, W) BINARY_LOOP(op##_##S, T, T, T, b < 8 * sizeof(T) ? (T)((W)a << b) : 0)
#define DEF_SHR(op, D, S, T, W) BINARY_LOOP(op##_##S, T, T, T, b < 8 * sizeof(T) ? (T)(a >> b) : 0)
UNSIGNED_TYPES(DEF_SHL, shl)
UNSIGNED_TYPES(DEF_SHR, shr)

/* ---- Pow. The base is int32, int64, float or double (float16/bfloat16 via float); the exponent
 * any numeric type. Integer powers are exact and wrap; a negative integer exponent truncates
 * 1/base^|e| toward zero (1 or -1 for base +-1, else 0). Mixed float cases compute in double, as
 * numpy's type promotion does, then round to the base type. */
static int64_t int_pow(int64_t base, uint64_t exp, int negative) {
  if (negative) return base == 1 ? 1 : base == -1 ? (exp & 1 ? -1 : 1) : 0;
  uint64_t r = 1, b = (uint64_t)base;
  for (; exp; exp >>= 1, b *= b)
    if (exp & 1) r *= b;
  return (int64_t)r;
}

/* double -> integer, truncating toward zero, saturating at [lo, hi], NaN -> 0 (C leaves
 * out-of-range conversions undefined). */
static int64_t f64_to_int(double v, int64_t lo, int64_t hi) {
  if (v != v) return 0;
  if (v <= (double)lo) return lo;
  if (v >= (double)hi) return hi; /* (double)INT64_MAX is 2^63: anything below it fits */
  return (int64_t)v;
}

/* The base type and range of each pow_<base> kernel family, looked up by pasting its prefix. */
#define POW_BASE_pow_i32 int32_t
#define POW_BASE_pow_i64 int64_t
#define POW_BASE_pow_f32 float
#define POW_BASE_pow_f64 double
#define POW_RANGE_pow_i32 INT32_MIN, INT32_MAX
#define POW_RANGE_pow_i64 INT64_MIN, INT64_MAX

#define POW_INT_SIGNED_EXP(op, D, S, T, W) \
  BINARY_LOOP(op##_##S, POW_BASE_##op, T, POW_BASE_##op, (POW_BASE_##op)int_pow(a, (uint64_t)b, b < 0))
#define POW_INT_UNSIGNED_EXP(op, D, S, T, W) \
  BINARY_LOOP(op##_##S, POW_BASE_##op, T, POW_BASE_##op, (POW_BASE_##op)int_pow(a, b, 0))
#define POW_INT_REAL_EXP(op, D, S, T, W)                 \
  BINARY_LOOP(op##_##S, POW_BASE_##op, T, POW_BASE_##op, \
              (POW_BASE_##op)f64_to_int(pow((double)a, (double)b), POW_RANGE_##op))
#define POW_REAL(op, D, S, T, W) \
  BINARY_LOOP(op##_##S, POW_BASE_##op, T, POW_BASE_##op, (POW_BASE_##op)pow((double)a, (double)b))
SIGNED_TYPES(POW_INT_SIGNED_EXP, pow_i32)
UNSIGNED_TYPES(POW_INT_UNSIGNED_EXP, pow_i32)
REAL_TYPES(POW_INT_REAL_EXP, pow_i32)
SIGNED_TYPES(POW_INT_SIGNED_EXP, pow_i64)
UNSIGNED_TYPES(POW_INT_UNSIGNED_EXP, pow_i64)
REAL_TYPES(POW_INT_REAL_EXP, pow_i64)
SIGNED_TYPES(POW_REAL, pow_f32)
UNSIGNED_TYPES(POW_REAL, pow_f32)
BINARY_LOOP(pow_f32_f32, float, float, float, powf(a, b))
POW_REAL(pow_f32, KILN_DOUBLE, f64, double, double)
NUMERIC_TYPES(POW_REAL, pow_f64)

/* x^2 and x^3 with a constant exponent (LayerNorm's variance, tanh-GELU) as plain multiplies. */
BINARY_LOOP(square_f32, float, float, float, a *a)
BINARY_LOOP(cube_f32, float, float, float, a *a *a)
BINARY_LOOP(square_f64, double, double, double, a *a)
BINARY_LOOP(cube_f64, double, double, double, a *a *a)

#define POW_ROW(base) \
  { NUMERIC_TYPES(ENTRY, base) }
static const binary_fn pow_fns[KILN_DTYPE_COUNT][KILN_DTYPE_COUNT] = {
    [KILN_INT32] = POW_ROW(pow_i32),
    [KILN_INT64] = POW_ROW(pow_i64),
    [KILN_FLOAT] = POW_ROW(pow_f32),
    [KILN_DOUBLE] = POW_ROW(pow_f64),
};

/* ------------------------------------------------------------------ op descriptions */

typedef enum op_kind {
  PAIRWISE, /* two inputs of one dtype */
  POW,      /* two inputs, base and exponent dtypes may differ: pow_fns */
  VARIADIC, /* Max, Min, Sum: one or more inputs folded pairwise */
  MEAN,     /* Sum, then alt_fns divides by the input count */
  PRELU,    /* the slope broadcasts to X's shape (unidirectionally) */
} op_kind;

typedef struct binary_op {
  const char *name;
  op_kind kind;
  int to_bool;                         /* comparisons and logic: the output is bool */
  double cost;                         /* rough scalar operations per element */
  binary_fn fns[KILN_DTYPE_COUNT];     /* by input dtype; float16/bfloat16 use fns[KILN_FLOAT] */
  binary_fn alt_fns[KILN_DTYPE_COUNT]; /* Mod with fmod=1, BitShift to the right */
} binary_op;

#define ALL_NUMERIC(op) \
  { NUMERIC_TYPES(ENTRY, op) }

static const binary_op binary_ops[] = {
    {"Add", PAIRWISE, 0, 1, ALL_NUMERIC(add), {0}},
    {"Sub", PAIRWISE, 0, 1, ALL_NUMERIC(sub), {0}},
    {"Mul", PAIRWISE, 0, 1, ALL_NUMERIC(mul), {0}},
    {"Div", PAIRWISE, 0, 2, ALL_NUMERIC(div), {0}},
    {"Pow", POW, 0, 30, {0}, {0}},
    {"Mod", PAIRWISE, 0, 10, {SIGNED_TYPES(ENTRY, mod) UNSIGNED_TYPES(ENTRY, mod)}, ALL_NUMERIC(fmod)},
    {"BitShift", PAIRWISE, 0, 1, {UNSIGNED_TYPES(ENTRY, shl)}, {UNSIGNED_TYPES(ENTRY, shr)}},
    {"And", PAIRWISE, 1, 1, {[KILN_BOOL] = and_bool}, {0}},
    {"Or", PAIRWISE, 1, 1, {[KILN_BOOL] = or_bool}, {0}},
    {"Xor", PAIRWISE, 1, 1, {[KILN_BOOL] = xor_bool}, {0}},
    {"Equal", PAIRWISE, 1, 1, {NUMERIC_TYPES(ENTRY, eq)[KILN_BOOL] = eq_bool, [KILN_STRING] = eq_string}, {0}},
    {"Greater", PAIRWISE, 1, 1, ALL_NUMERIC(gt), {0}},
    {"GreaterOrEqual", PAIRWISE, 1, 1, ALL_NUMERIC(ge), {0}},
    {"Less", PAIRWISE, 1, 1, ALL_NUMERIC(lt), {0}},
    {"LessOrEqual", PAIRWISE, 1, 1, ALL_NUMERIC(le), {0}},
    {"Max", VARIADIC, 0, 1, ALL_NUMERIC(max), {0}},
    {"Min", VARIADIC, 0, 1, ALL_NUMERIC(min), {0}},
    {"Sum", VARIADIC, 0, 1, {REAL_TYPES(ENTRY, add)}, {0}},
    {"Mean", MEAN, 0, 1, {REAL_TYPES(ENTRY, add)}, {REAL_TYPES(ENTRY, div)}},
    {"PRelu", PRELU, 0, 1, ALL_NUMERIC(prelu), {0}},
};

typedef struct binary_params {
  const binary_op *op;
  int alt;       /* use op->alt_fns (fmod=1, direction=RIGHT) */
  int legacy;    /* opset < 7: broadcasting only as the `broadcast`/`axis` attributes say */
  int broadcast; /* legacy `broadcast` attribute */
  int has_axis;
  int64_t axis; /* legacy `axis` attribute */
} binary_params;

static int is_half(kiln_dtype t) { return t == KILN_FLOAT16 || t == KILN_BFLOAT16; }

/* ------------------------------------------------------------------ running a binary op */

enum { HALF_BLOCK = 256 };

typedef struct binary_job {
  walk_shape shape;
  const char *a, *b;
  char *y;
  size_t a_size, b_size, y_size;     /* element sizes in the tensors */
  kiln_dtype a_half, b_half, y_half; /* float16/bfloat16 widened to (narrowed from) float, else 0 */
  binary_fn fn;
} binary_job;

/* One run whose operands or result are float16/bfloat16: fn works on float blocks. */
static void binary_half_run(const binary_job *j, const char *a, int sa, const char *b, int sb, char *y, int64_t n) {
  float fa[HALF_BLOCK], fb[HALF_BLOCK], fy[HALF_BLOCK];
  for (int64_t i = 0; i < n; i += HALF_BLOCK) {
    int64_t m = n - i < HALF_BLOCK ? n - i : HALF_BLOCK;
    const void *pa = a + (size_t)(i * sa) * j->a_size, *pb = b + (size_t)(i * sb) * j->b_size;
    void *py = y + (size_t)i * j->y_size;
    if (j->a_half) {
      kx_to_float(j->a_half, pa, fa, sa ? m : 1);
      pa = fa;
    }
    if (j->b_half) {
      kx_to_float(j->b_half, pb, fb, sb ? m : 1);
      pb = fb;
    }
    j->fn(pa, pb, j->y_half ? fy : py, m, sa, sb);
    if (j->y_half) kx_from_float(j->y_half, fy, py, m);
  }
}

static void binary_range(void *arg, int64_t begin, int64_t end) {
  const binary_job *j = arg;
  const walk_shape *w = &j->shape;
  int sa = w->strides[0][w->rank - 1] != 0, sb = w->strides[1][w->rank - 1] != 0;
  int half = j->a_half || j->b_half || j->y_half;
  walk_pos p;
  walk_seek(w, 2, begin, &p);
  for (int64_t pos = begin; pos < end;) {
    int64_t n = walk_run(w, &p, end - pos);
    const char *a = j->a + (size_t)p.off[0] * j->a_size, *b = j->b + (size_t)p.off[1] * j->b_size;
    char *y = j->y + (size_t)pos * j->y_size;
    if (half)
      binary_half_run(j, a, sa, b, sb, y, n);
    else
      j->fn(a, b, y, n, sa, sb);
    pos += n;
    walk_advance(w, 2, n, &p);
  }
}

/* y = fn(a, b) with a and b broadcast to y's shape. fn is the float kernel where an operand or y
 * is float16/bfloat16. y may be a itself (the variadic ops fold into their output). */
static void binary_apply(kx_ctx *c, binary_fn fn, double cost, const kiln_tensor *a, const kiln_tensor *b,
                         kiln_tensor *y) {
  binary_job j = {.a = a->data, .b = b->data, .y = y->data, .fn = fn};
  const kiln_tensor *ops[2] = {a, b};
  walk_init(&j.shape, 2, ops, y->rank, y->dims);
  j.a_size = kiln_dtype_size(a->dtype);
  j.b_size = kiln_dtype_size(b->dtype);
  j.y_size = kiln_dtype_size(y->dtype);
  j.a_half = is_half(a->dtype) ? a->dtype : 0;
  j.b_half = is_half(b->dtype) ? b->dtype : 0;
  j.y_half = is_half(y->dtype) ? y->dtype : 0;
  kx_parallel(c, kiln_tensor_numel(y), cost, binary_range, &j);
}

/* The kernel of a same-dtype op for dtype t, from fns or alt_fns (NULL when unsupported). */
static binary_fn binary_kernel(const binary_op *op, int alt, kiln_dtype t) {
  if ((unsigned)t >= KILN_DTYPE_COUNT) return NULL;
  return (alt ? op->alt_fns : op->fns)[is_half(t) ? KILN_FLOAT : t];
}

static binary_fn pow_kernel(kiln_dtype base, kiln_dtype exp, const kiln_tensor *e) {
  if ((unsigned)base >= KILN_DTYPE_COUNT || (unsigned)exp >= KILN_DTYPE_COUNT) return NULL;
  if (is_half(base)) base = KILN_FLOAT;
  if (is_half(exp)) exp = KILN_FLOAT;
  if (base == exp && (base == KILN_FLOAT || base == KILN_DOUBLE) && kiln_tensor_numel(e) == 1) {
    double v = kiln_tensor_get_f64(e, 0);
    if (v == 2) return base == KILN_FLOAT ? square_f32 : square_f64;
    if (v == 3) return base == KILN_FLOAT ? cube_f32 : cube_f64;
  }
  return pow_fns[base][exp];
}

/* Opset < 7: without `broadcast`, shapes must match; with it, B's dims line up with A's from
 * `axis` (default: the trailing ones) and B repeats over the rest. *view gets B with its shape
 * padded with ones to A's rank. */
static kiln_status legacy_broadcast(const binary_params *p, const kiln_tensor *a, const kiln_tensor *b,
                                    kiln_tensor *view) {
  char sa[96], sb[96];
  *view = *b;
  int same = a->rank == b->rank;
  for (int d = 0; same && d < a->rank; d++) same = a->dims[d] == b->dims[d];
  if (same) return NULL;
  if (!p->broadcast)
    return kiln_error(KILN_INVALID_ARGUMENT, "shapes %s and %s differ and the broadcast attribute is not set",
                      kiln_tensor_describe(a, sa, sizeof sa), kiln_tensor_describe(b, sb, sizeof sb));
  int64_t axis = p->has_axis ? p->axis : a->rank - b->rank, dims[KILN_MAX_RANK];
  if (axis < 0) axis += a->rank;
  int fits = axis >= 0 && axis + b->rank <= a->rank;
  for (int d = 0; d < a->rank && fits; d++) {
    dims[d] = d >= axis && d < axis + b->rank ? b->dims[d - axis] : 1;
    fits = dims[d] == 1 || dims[d] == a->dims[d];
  }
  if (!fits)
    return kiln_error(KILN_INVALID_ARGUMENT, "cannot broadcast %s to %s at axis %lld",
                      kiln_tensor_describe(b, sb, sizeof sb), kiln_tensor_describe(a, sa, sizeof sa), (long long)axis);
  return kiln_tensor_set_shape(view, b->dtype, a->rank, dims);
}

static kiln_status binary_run(kx_ctx *c) {
  const binary_params *p = c->node->params;
  const kiln_tensor *a, *b;
  kiln_status s;
  if ((s = kx_require(c, 0, &a)) || (s = kx_require(c, 1, &b))) return s;
  int is_pow = p->op->kind == POW;
  binary_fn fn = is_pow ? pow_kernel(a->dtype, b->dtype, b) : binary_kernel(p->op, p->alt, a->dtype);
  if (!is_pow && a->dtype != b->dtype)
    return kiln_error(KILN_INVALID_ARGUMENT, "inputs have different dtypes: %s and %s", kiln_dtype_name(a->dtype),
                      kiln_dtype_name(b->dtype));
  if (!fn && is_pow)
    return kiln_error(KILN_INVALID_ARGUMENT, "Pow does not support %s raised to %s", kiln_dtype_name(a->dtype),
                      kiln_dtype_name(b->dtype));
  if (!fn && strcmp(p->op->name, "Mod") == 0 && kiln_dtype_is_float(a->dtype))
    return kiln_error(KILN_INVALID_ARGUMENT, "fmod must be 1 for %s inputs", kiln_dtype_name(a->dtype));
  if (!fn)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s does not support %s inputs", p->op->name, kiln_dtype_name(a->dtype));
  kiln_tensor legacy;
  int rank;
  int64_t dims[KILN_MAX_RANK];
  if (p->legacy) {
    if ((s = legacy_broadcast(p, a, b, &legacy))) return s;
    b = &legacy;
    rank = a->rank;
    memcpy(dims, a->dims, sizeof dims);
  } else {
    const kiln_tensor *ts[2] = {a, b};
    if ((s = kx_broadcast(2, ts, &rank, dims))) return s;
  }
  kiln_tensor *y;
  if ((s = kx_output(c, 0, p->op->to_bool ? KILN_BOOL : a->dtype, rank, dims, &y))) return s;
  if (kiln_tensor_numel(y) > 0) binary_apply(c, fn, p->op->cost, a, b, y);
  return NULL;
}

/* ------------------------------------------------------------------ PRelu */

static kiln_status prelu_run(kx_ctx *c) {
  const binary_params *p = c->node->params;
  const kiln_tensor *x, *slope;
  kiln_status s;
  if ((s = kx_require(c, 0, &x)) || (s = kx_require(c, 1, &slope))) return s;
  if (x->dtype != slope->dtype)
    return kiln_error(KILN_INVALID_ARGUMENT, "X has dtype %s, slope has %s", kiln_dtype_name(x->dtype),
                      kiln_dtype_name(slope->dtype));
  binary_fn fn = binary_kernel(p->op, 0, x->dtype);
  if (!fn) return kiln_error(KILN_INVALID_ARGUMENT, "PRelu does not support %s inputs", kiln_dtype_name(x->dtype));
  /* Before opset 7 a 1-D slope holds one value per channel (dimension 1), not per last element. */
  kiln_tensor channels;
  if (c->node->opset < 7 && slope->rank == 1 && x->rank >= 2 && slope->dims[0] == x->dims[1] && slope->dims[0] != 1) {
    int64_t dims[KILN_MAX_RANK] = {slope->dims[0], 1, 1, 1, 1, 1, 1, 1};
    channels = *slope;
    if ((s = kiln_tensor_set_shape(&channels, slope->dtype, x->rank - 1, dims))) return s;
    slope = &channels;
  }
  const kiln_tensor *ts[2] = {x, slope};
  int rank;
  int64_t dims[KILN_MAX_RANK];
  if ((s = kx_broadcast(2, ts, &rank, dims))) return s;
  int unidirectional = rank == x->rank;
  for (int d = 0; d < rank && unidirectional; d++) unidirectional = dims[d] == x->dims[d];
  if (!unidirectional) {
    char a[96], b[96];
    return kiln_error(KILN_INVALID_ARGUMENT, "slope %s does not broadcast to X's shape %s",
                      kiln_tensor_describe(slope, b, sizeof b), kiln_tensor_describe(x, a, sizeof a));
  }
  kiln_tensor *y;
  if ((s = kx_output(c, 0, x->dtype, x->rank, x->dims, &y))) return s;
  if (kiln_tensor_numel(y) > 0) binary_apply(c, fn, p->op->cost, x, slope, y);
  return NULL;
}

/* ------------------------------------------------------------------ variadic: Max, Min, Sum, Mean */

static kiln_status variadic_run(kx_ctx *c) {
  const binary_params *p = c->node->params;
  const kiln_tensor *ts[64], *first;
  int n = c->node->n_in;
  kiln_status s;
  if (n < 1 || n > (int)(sizeof ts / sizeof ts[0]))
    return kiln_error(KILN_UNIMPLEMENTED, "%d inputs; at most %d are supported", n, (int)(sizeof ts / sizeof ts[0]));
  for (int i = 0; i < n; i++) {
    if ((s = kx_require(c, i, &ts[i]))) return s;
    if (ts[i]->dtype != ts[0]->dtype)
      return kiln_error(KILN_INVALID_ARGUMENT, "input %d has dtype %s, input 0 has %s", i,
                        kiln_dtype_name(ts[i]->dtype), kiln_dtype_name(ts[0]->dtype));
  }
  first = ts[0];
  binary_fn fn = binary_kernel(p->op, 0, first->dtype);
  if (!fn)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s does not support %s inputs", p->op->name,
                      kiln_dtype_name(first->dtype));
  int rank;
  int64_t dims[KILN_MAX_RANK];
  if ((s = kx_broadcast(n, ts, &rank, dims))) return s;
  kiln_tensor *y;
  if ((s = kx_output(c, 0, first->dtype, rank, dims, &y))) return s;
  if (kiln_tensor_numel(y) == 0) return NULL;
  if (n == 1) {
    memcpy(y->data, first->data, kiln_tensor_nbytes(y));
    return NULL;
  }
  /* y = in0 op in1, then y = y op in_k for the rest. */
  binary_apply(c, fn, p->op->cost, ts[0], ts[1], y);
  for (int i = 2; i < n; i++) binary_apply(c, fn, p->op->cost, y, ts[i], y);
  if (p->op->kind == MEAN) {
    double count; /* storage for one element of y's dtype */
    kiln_tensor divisor = {.dtype = y->dtype, .rank = 0, .data = &count};
    kx_set_f64(&divisor, 0, n);
    binary_apply(c, binary_kernel(p->op, 1, y->dtype), p->op->cost, y, &divisor, y);
  }
  return NULL;
}

/* ------------------------------------------------------------------ Where */

/* out[i] = c[i] ? x[i] : y[i] over a run, each operand contiguous (step 1) or repeated (step 0).
 * A repeated x or y is first spread over a block buffer, so that the loop is always the contiguous
 * one; a repeated condition picks one operand for the whole run. */
#define WHERE_LOOP(name, T)                                                                                           \
  static void name(const uint8_t *c, int sc, const void *px, int sx, const void *py, int sy, void *pout, int64_t n) { \
    const T *x = px, *y = py;                                                                                         \
    T *out = pout;                                                                                                    \
    if (!sc) {                                                                                                        \
      const T *src = c[0] ? x : y;                                                                                    \
      if (c[0] ? sx : sy)                                                                                             \
        memcpy(out, src, (size_t)n * sizeof(T));                                                                      \
      else                                                                                                            \
        for (int64_t i = 0; i < n; i++) out[i] = src[0];                                                              \
      return;                                                                                                         \
    }                                                                                                                 \
    T x_block[WHERE_BLOCK], y_block[WHERE_BLOCK];                                                                     \
    for (int64_t i = 0; i < WHERE_BLOCK && i < n; i++) {                                                              \
      x_block[i] = x[0];                                                                                              \
      y_block[i] = y[0];                                                                                              \
    }                                                                                                                 \
    for (int64_t i = 0; i < n; i += WHERE_BLOCK) {                                                                    \
      int64_t m = n - i < WHERE_BLOCK ? n - i : WHERE_BLOCK;                                                          \
      const T *xs = sx ? x + i : x_block, *ys = sy ? y + i : y_block;                                                 \
      for (int64_t k = 0; k < m; k++) {                                                                               \
        T a = xs[k], b = ys[k];                                                                                       \
        out[i + k] = c[i + k] ? a : b;                                                                                \
      }                                                                                                               \
    }                                                                                                                 \
  }
enum { WHERE_BLOCK = 256 };
WHERE_LOOP(where_1, uint8_t)
WHERE_LOOP(where_2, uint16_t)
WHERE_LOOP(where_4, uint32_t)
WHERE_LOOP(where_8, uint64_t)

typedef struct where_job {
  walk_shape shape;
  const uint8_t *cond;
  const char *x, *y;
  char *out;
  size_t size;
} where_job;

static void where_range(void *arg, int64_t begin, int64_t end) {
  const where_job *j = arg;
  const walk_shape *w = &j->shape;
  int inner = w->rank - 1;
  int sc = w->strides[0][inner] != 0, sx = w->strides[1][inner] != 0, sy = w->strides[2][inner] != 0;
  walk_pos p;
  walk_seek(w, 3, begin, &p);
  for (int64_t pos = begin; pos < end;) {
    int64_t n = walk_run(w, &p, end - pos);
    const uint8_t *c = j->cond + p.off[0];
    const char *x = j->x + (size_t)p.off[1] * j->size, *y = j->y + (size_t)p.off[2] * j->size;
    char *out = j->out + (size_t)pos * j->size;
    switch (j->size) {
    case 1: where_1(c, sc, x, sx, y, sy, out, n); break;
    case 2: where_2(c, sc, x, sx, y, sy, out, n); break;
    case 4: where_4(c, sc, x, sx, y, sy, out, n); break;
    default: where_8(c, sc, x, sx, y, sy, out, n); break;
    }
    pos += n;
    walk_advance(w, 3, n, &p);
  }
}

/* Strings: every output element is a copy; runs serially since it allocates. */
static kiln_status where_strings(const walk_shape *w, const uint8_t *cond, char *const *x, char *const *y, char **out,
                                 int64_t n) {
  walk_pos p;
  walk_seek(w, 3, 0, &p);
  for (int64_t i = 0; i < n; i++) {
    const char *src = cond[p.off[0]] ? x[p.off[1]] : y[p.off[2]];
    if (!(out[i] = strdup(src ? src : ""))) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory copying strings");
    walk_advance(w, 3, 1, &p);
  }
  return NULL;
}

static kiln_status where_run(kx_ctx *c) {
  const kiln_tensor *ts[3];
  kiln_status s;
  for (int i = 0; i < 3; i++)
    if ((s = kx_require(c, i, &ts[i]))) return s;
  if (ts[0]->dtype != KILN_BOOL)
    return kiln_error(KILN_INVALID_ARGUMENT, "condition must be bool, got %s", kiln_dtype_name(ts[0]->dtype));
  if (ts[1]->dtype != ts[2]->dtype)
    return kiln_error(KILN_INVALID_ARGUMENT, "X and Y have different dtypes: %s and %s", kiln_dtype_name(ts[1]->dtype),
                      kiln_dtype_name(ts[2]->dtype));
  size_t size = kiln_dtype_size(ts[1]->dtype);
  if (size != 1 && size != 2 && size != 4 && size != 8)
    return kiln_error(KILN_UNIMPLEMENTED, "Where does not support %s", kiln_dtype_name(ts[1]->dtype));
  int rank;
  int64_t dims[KILN_MAX_RANK];
  if ((s = kx_broadcast(3, ts, &rank, dims))) return s;
  kiln_tensor *out;
  if ((s = kx_output(c, 0, ts[1]->dtype, rank, dims, &out))) return s;
  int64_t n = kiln_tensor_numel(out);
  if (n == 0) return NULL;
  where_job j = {.cond = ts[0]->data, .x = ts[1]->data, .y = ts[2]->data, .out = out->data, .size = size};
  walk_init(&j.shape, 3, ts, rank, dims);
  if (out->dtype == KILN_STRING) return where_strings(&j.shape, j.cond, ts[1]->data, ts[2]->data, out->data, n);
  kx_parallel(c, n, 1, where_range, &j);
  return NULL;
}

/* ------------------------------------------------------------------ prepare */

/* Whether the node asks for op->alt_fns: Mod's fmod=1, BitShift's direction=RIGHT. */
static kiln_status use_alt(const kx_node *n, const binary_op *op, int *alt) {
  *alt = 0;
  if (strcmp(op->name, "Mod") == 0) {
    int64_t fmod = kx_attr_int(n->proto, "fmod", 0);
    if (fmod != 0 && fmod != 1)
      return kiln_error(KILN_INVALID_ARGUMENT, "fmod must be 0 or 1, got %lld", (long long)fmod);
    *alt = fmod == 1;
  } else if (strcmp(op->name, "BitShift") == 0) {
    char dir[16];
    kx_attr_string(n->proto, "direction", "", dir, sizeof dir);
    if (strcmp(dir, "LEFT") != 0 && strcmp(dir, "RIGHT") != 0)
      return kiln_error(KILN_INVALID_ARGUMENT, "direction must be LEFT or RIGHT, got '%s'", dir);
    *alt = strcmp(dir, "RIGHT") == 0;
  }
  return NULL;
}

static kiln_status binary_prepare(kx_node *n) {
  const binary_op *op = NULL;
  for (size_t i = 0; i < sizeof binary_ops / sizeof binary_ops[0] && !op; i++)
    if (strcmp(binary_ops[i].name, n->op_type) == 0) op = &binary_ops[i];
  if (!op) return kiln_error(KILN_INTERNAL, "no binary kernel named %s", n->op_type);
  int variadic = op->kind == VARIADIC || op->kind == MEAN, alt;
  if (variadic ? n->n_in < 1 : n->n_in != 2)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s takes %s, got %d", op->name,
                      variadic ? "at least 1 input" : "2 inputs", n->n_in);
  kiln_status s = use_alt(n, op, &alt);
  if (s) return s;
  binary_params *p = malloc(sizeof *p);
  if (!p) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  p->op = op;
  p->alt = alt;
  p->legacy = (op->kind == PAIRWISE || op->kind == POW) && n->opset < 7;
  p->broadcast = kx_attr_int(n->proto, "broadcast", 0) != 0;
  p->has_axis = kx_attr_has(n->proto, "axis");
  p->axis = kx_attr_int(n->proto, "axis", 0);
  n->params = p;
  return NULL;
}

static kiln_status where_prepare(kx_node *n) {
  if (n->n_in != 3) return kiln_error(KILN_INVALID_ARGUMENT, "Where takes 3 inputs, got %d", n->n_in);
  return NULL;
}

const kx_op kx_ops_binary[] = {
    {"", "Add", 1, 0, binary_prepare, binary_run, NULL, 0, 1},
    {"", "Sub", 1, 0, binary_prepare, binary_run, NULL, 0},
    {"", "Mul", 1, 0, binary_prepare, binary_run, NULL, 0},
    {"", "Div", 1, 0, binary_prepare, binary_run, NULL, 0},
    {"", "Pow", 1, 0, binary_prepare, binary_run, NULL, 0},
    {"", "Mod", 10, 0, binary_prepare, binary_run, NULL, 0},
    {"", "BitShift", 11, 0, binary_prepare, binary_run, NULL, 0},
    {"", "And", 1, 0, binary_prepare, binary_run, NULL, 0},
    {"", "Or", 1, 0, binary_prepare, binary_run, NULL, 0},
    {"", "Xor", 1, 0, binary_prepare, binary_run, NULL, 0},
    {"", "Equal", 1, 0, binary_prepare, binary_run, NULL, 0},
    {"", "Greater", 1, 0, binary_prepare, binary_run, NULL, 0},
    {"", "GreaterOrEqual", 12, 0, binary_prepare, binary_run, NULL, 0},
    {"", "Less", 1, 0, binary_prepare, binary_run, NULL, 0},
    {"", "LessOrEqual", 12, 0, binary_prepare, binary_run, NULL, 0},
    {"", "Max", 1, 0, binary_prepare, variadic_run, NULL, 0},
    {"", "Min", 1, 0, binary_prepare, variadic_run, NULL, 0},
    {"", "Sum", 1, 0, binary_prepare, variadic_run, NULL, 0},
    {"", "Mean", 1, 0, binary_prepare, variadic_run, NULL, 0},
    {"", "PRelu", 1, 0, binary_prepare, prelu_run, NULL, 0},
    {"", "Where", 9, 0, where_prepare, where_run, NULL, 0},
    {0},
};
