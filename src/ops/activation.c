/* Activation kernels, y = f(x) elementwise with attribute parameters: Relu, LeakyRelu, Elu, Selu,
 * Celu, Sigmoid, HardSigmoid, HardSwish, Softplus, Softsign, ThresholdedRelu, Shrink, Tanh and
 * Clip. (PRelu, which broadcasts its slope, lives with the broadcasting kernels in binary.c.)
 *
 * As in elementwise.c: one typed loop per dtype, float16/bfloat16 through the float loop in
 * blocks, libm through <tgmath.h>, and branch-free float32 Sigmoid and Tanh that gcc vectorizes. */
#include "ops/typelist.h"
#include "ops/util.h"
#include "ops/vmath.h"

#include <float.h>
#include <stdlib.h>
#include <string.h>
#include <tgmath.h>

/* ------------------------------------------------------------------ float32 approximations */

/* 1 / (1 + e^-x), relative error below 3e-7. Written through e = e^-|x| so that tiny results for
 * very negative x (e / (1 + e)) keep their precision instead of underflowing via 1 / inf. */
static inline float fast_sigmoidf(float x) {
  float e = kx_fast_expf(-fabsf(x));
  return (x >= 0 ? 1.0f : e) / (1.0f + e);
}

/* tanh(x), relative error below 2e-7. |x| < 0.625: x + x^3 P(x^2), a degree-5 minimax fit;
 * elsewhere 1 - 2 / (e^2|x| + 1) with x's sign, which has no cancellation there. */
static inline float fast_tanhf(float x) {
  float a = fabsf(x), u = x * x;
  float p = 0.0022928286f;
  p = p * u + -0.008344028f;
  p = p * u + 0.021768946f;
  p = p * u + -0.053959265f;
  p = p * u + 0.13333304f;
  p = p * u + -0.33333334f;
  float small = x + x * u * p;
  float t = 1.0f - 2.0f / (kx_fast_expf(2.0f * a) + 1.0f);
  float large = x < 0 ? -t : t;
  return a < 0.625f ? small : large;
}

/* ------------------------------------------------------------------ typed loops */

/* min(max(v, 0), 1), keeping NaN (unlike fmin/fmax), for float and double like <tgmath.h>. */
static inline float clamp01f(float v) { return v < 0 ? 0 : v > 1 ? 1 : v; }
static inline double clamp01d(double v) { return v < 0 ? 0 : v > 1 ? 1 : v; }
#define clamp01(v) _Generic((v), float : clamp01f, double : clamp01d)(v)

/* The attributes of an activation, as floats (ONNX defines them so). */
typedef struct act_params {
  float alpha, beta;
} act_params;

/* One Clip bound: an element of the input's dtype (float for float16/bfloat16). */
typedef union clip_value {
  int8_t i8;
  int16_t i16;
  int32_t i32;
  int64_t i64;
  uint8_t u8;
  uint16_t u16;
  uint32_t u32;
  uint64_t u64;
  float f32;
  double f64;
} clip_value;

typedef struct clip_bounds {
  clip_value lo, hi;
} clip_bounds;

/* args: an act_params, or for Clip a clip_bounds. */
typedef void (*act_fn)(const void *args, const void *x, void *y, int64_t n);

/* A loop computing EXPR of `x`, with the attributes as `alpha` and `beta` of type T. */
#define ACT_LOOP(name, T, EXPR)                                             \
  static void name(const void *args, const void *px, void *py, int64_t n) { \
    const act_params *p = args;                                             \
    const T alpha = (T)p->alpha, beta = (T)p->beta;                         \
    const T *vx = px;                                                       \
    T *vy = py;                                                             \
    (void)alpha, (void)beta;                                                \
    for (int64_t i = 0; i < n; i++) {                                       \
      T x = vx[i];                                                          \
      vy[i] = (EXPR);                                                       \
    }                                                                       \
  }

#define REAL_LOOPS(op, EXPR)      \
  ACT_LOOP(op##_f32, float, EXPR) \
  ACT_LOOP(op##_f64, double, EXPR)

REAL_LOOPS(relu, x > 0 ? x : 0)
ACT_LOOP(relu_i8, int8_t, x > 0 ? x : 0)
ACT_LOOP(relu_i16, int16_t, x > 0 ? x : 0)
ACT_LOOP(relu_i32, int32_t, x > 0 ? x : 0)
ACT_LOOP(relu_i64, int64_t, x > 0 ? x : 0)
REAL_LOOPS(leaky_relu, x < 0 ? alpha * x : x)
REAL_LOOPS(elu, x < 0 ? alpha * expm1(x) : x)
REAL_LOOPS(selu, x > 0 ? beta * x : beta * alpha * expm1(x)) /* beta holds gamma */
REAL_LOOPS(celu, x > 0 ? x : alpha * expm1(x / alpha))
ACT_LOOP(sigmoid_f32, float, fast_sigmoidf(x))
ACT_LOOP(sigmoid_f64, double, 1 / (1 + exp(-x)))
REAL_LOOPS(hard_sigmoid, clamp01(alpha *x + beta))
REAL_LOOPS(hard_swish, x *clamp01(x / 6 + 0.5f))
REAL_LOOPS(softplus, x > 0 ? x + log1p(exp(-x)) : log1p(exp(x))) /* never overflows */
REAL_LOOPS(softsign, x / (1 + fabs(x)))
REAL_LOOPS(thresholded_relu, x > alpha ? x : 0)
REAL_LOOPS(shrink, x<-alpha ? x + beta : x> alpha ? x - beta : 0) /* alpha: lambd, beta: bias */
ACT_LOOP(tanh_f32, float, fast_tanhf(x))
ACT_LOOP(tanh_f64, double, tanh(x))

/* Clip keeps NaN (comparisons with it are false); with lo > hi everything becomes hi. */
#define CLIP_LOOP(name, T)                                                  \
  static void name(const void *args, const void *px, void *py, int64_t n) { \
    const clip_bounds *bounds = args;                                       \
    T lo, hi;                                                               \
    memcpy(&lo, &bounds->lo, sizeof lo);                                    \
    memcpy(&hi, &bounds->hi, sizeof hi);                                    \
    const T *vx = px;                                                       \
    T *vy = py;                                                             \
    for (int64_t i = 0; i < n; i++) {                                       \
      T v = vx[i] < lo ? lo : vx[i];                                        \
      vy[i] = v > hi ? hi : v;                                              \
    }                                                                       \
  }
CLIP_LOOP(clip_i8, int8_t)
CLIP_LOOP(clip_i16, int16_t)
CLIP_LOOP(clip_i32, int32_t)
CLIP_LOOP(clip_i64, int64_t)
CLIP_LOOP(clip_u8, uint8_t)
CLIP_LOOP(clip_u16, uint16_t)
CLIP_LOOP(clip_u32, uint32_t)
CLIP_LOOP(clip_u64, uint64_t)
CLIP_LOOP(clip_f32, float)
CLIP_LOOP(clip_f64, double)

/* ------------------------------------------------------------------ op descriptions */

typedef struct act_op {
  const char *name;
  double cost;          /* rough scalar operations per element */
  const char *attrs[2]; /* the attributes read into alpha and beta, NULL where unused */
  float defaults[2];
  act_fn fns[KILN_DTYPE_COUNT]; /* by input dtype; float16/bfloat16 use fns[KILN_FLOAT] */
} act_op;

static const act_op act_ops[] = {
    {"Relu",
     1,
     {NULL, NULL},
     {0, 0},
     {REAL_ENTRIES(relu), [KILN_INT8] = relu_i8, [KILN_INT16] = relu_i16, [KILN_INT32] = relu_i32,
      [KILN_INT64] = relu_i64}},
    {"LeakyRelu", 1, {"alpha", NULL}, {0.01f, 0}, {REAL_ENTRIES(leaky_relu)}},
    {"Elu", 20, {"alpha", NULL}, {1.0f, 0}, {REAL_ENTRIES(elu)}},
    {"Selu", 20, {"alpha", "gamma"}, {1.67326319217681884765625f, 1.05070102214813232421875f}, {REAL_ENTRIES(selu)}},
    {"Celu", 20, {"alpha", NULL}, {1.0f, 0}, {REAL_ENTRIES(celu)}},
    {"Sigmoid", 10, {NULL, NULL}, {0, 0}, {REAL_ENTRIES(sigmoid)}},
    {"HardSigmoid", 2, {"alpha", "beta"}, {0.2f, 0.5f}, {REAL_ENTRIES(hard_sigmoid)}},
    {"HardSwish", 2, {NULL, NULL}, {0, 0}, {REAL_ENTRIES(hard_swish)}},
    {"Softplus", 40, {NULL, NULL}, {0, 0}, {REAL_ENTRIES(softplus)}},
    {"Softsign", 2, {NULL, NULL}, {0, 0}, {REAL_ENTRIES(softsign)}},
    {"ThresholdedRelu", 1, {"alpha", NULL}, {1.0f, 0}, {REAL_ENTRIES(thresholded_relu)}},
    {"Shrink", 1, {"lambd", "bias"}, {0.5f, 0.0f}, {REAL_ENTRIES(shrink)}},
    {"Tanh", 12, {NULL, NULL}, {0, 0}, {REAL_ENTRIES(tanh)}},
};

static const act_fn clip_fns[KILN_DTYPE_COUNT] = {
    [KILN_INT8] = clip_i8,   [KILN_INT16] = clip_i16,  [KILN_INT32] = clip_i32,  [KILN_INT64] = clip_i64,
    [KILN_UINT8] = clip_u8,  [KILN_UINT16] = clip_u16, [KILN_UINT32] = clip_u32, [KILN_UINT64] = clip_u64,
    [KILN_FLOAT] = clip_f32, [KILN_DOUBLE] = clip_f64,
};

typedef struct act_node {
  const act_op *op; /* NULL for Clip */
  act_params params;
  /* Clip before opset 11: the min/max attributes */
  float clip_min, clip_max;
} act_node;

/* ------------------------------------------------------------------ running */

enum { HALF_BLOCK = 256 };

typedef struct act_job {
  act_fn fn;
  const void *args;
  const char *x;
  char *y;
  size_t size;
  kiln_dtype half; /* float16/bfloat16: fn is the float loop */
} act_job;

static void act_range(void *arg, int64_t begin, int64_t end) {
  const act_job *j = arg;
  if (!j->half) {
    j->fn(j->args, j->x + (size_t)begin * j->size, j->y + (size_t)begin * j->size, end - begin);
    return;
  }
  float buf[HALF_BLOCK];
  for (int64_t i = begin; i < end; i += HALF_BLOCK) {
    int64_t m = end - i < HALF_BLOCK ? end - i : HALF_BLOCK;
    kx_to_float(j->half, j->x + (size_t)i * j->size, buf, m);
    j->fn(j->args, buf, buf, m);
    kx_from_float(j->half, buf, j->y + (size_t)i * j->size, m);
  }
}

static int is_half(kiln_dtype t) { return t == KILN_FLOAT16 || t == KILN_BFLOAT16; }

/* y = fn(x) with the same shape and dtype. */
static kiln_status act_apply(kx_ctx *c, const kiln_tensor *x, act_fn fn, const void *args, double cost) {
  kiln_tensor *y;
  kiln_status s;
  if ((s = kx_output(c, 0, x->dtype, x->rank, x->dims, &y))) return s;
  act_job j = {fn, args, x->data, y->data, kiln_dtype_size(x->dtype), is_half(x->dtype) ? x->dtype : 0};
  kx_parallel(c, kiln_tensor_numel(x), cost, act_range, &j);
  return NULL;
}

static act_fn act_kernel(const act_fn *fns, kiln_dtype t) {
  return (unsigned)t < KILN_DTYPE_COUNT ? fns[is_half(t) ? KILN_FLOAT : t] : NULL;
}

static kiln_status act_run(kx_ctx *c) {
  const act_node *p = c->node->params;
  const kiln_tensor *x;
  kiln_status s;
  if ((s = kx_require(c, 0, &x))) return s;
  act_fn fn = act_kernel(p->op->fns, x->dtype);
  if (!fn)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s does not support %s inputs", p->op->name, kiln_dtype_name(x->dtype));
  return act_apply(c, x, fn, &p->params, p->op->cost);
}

/* The lowest (or highest) value of dtype t (float for float16/bfloat16). */
static clip_value clip_limit(kiln_dtype t, int highest) {
  clip_value v;
  switch (t) {
  case KILN_INT8: v.i8 = highest ? INT8_MAX : INT8_MIN; break;
  case KILN_INT16: v.i16 = highest ? INT16_MAX : INT16_MIN; break;
  case KILN_INT32: v.i32 = highest ? INT32_MAX : INT32_MIN; break;
  case KILN_INT64: v.i64 = highest ? INT64_MAX : INT64_MIN; break;
  case KILN_UINT8: v.u8 = highest ? UINT8_MAX : 0; break;
  case KILN_UINT16: v.u16 = highest ? UINT16_MAX : 0; break;
  case KILN_UINT32: v.u32 = highest ? UINT32_MAX : 0; break;
  case KILN_UINT64: v.u64 = highest ? UINT64_MAX : 0; break;
  case KILN_DOUBLE: v.f64 = highest ? INFINITY : -INFINITY; break;
  default: v.f32 = highest ? INFINITY : -INFINITY; break;
  }
  return v;
}

/* Clip bound input i (opset >= 11): absent, or one element of x's dtype. */
static kiln_status clip_bound(kx_ctx *c, int i, const kiln_tensor *x, clip_bounds *b) {
  const kiln_tensor *t = kx_input(c, i);
  const char *what = i == 1 ? "min" : "max";
  clip_value *out = i == 1 ? &b->lo : &b->hi;
  if (!t) {
    *out = clip_limit(x->dtype, i == 2);
    return NULL;
  }
  if (t->dtype != x->dtype)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s has dtype %s, input has %s", what, kiln_dtype_name(t->dtype),
                      kiln_dtype_name(x->dtype));
  if (kiln_tensor_numel(t) != 1)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s must be a scalar, it has %lld elements", what,
                      (long long)kiln_tensor_numel(t));
  if (is_half(t->dtype))
    kx_to_float(t->dtype, t->data, &out->f32, 1);
  else
    memcpy(out, t->data, kiln_dtype_size(t->dtype));
  return NULL;
}

static kiln_status clip_run(kx_ctx *c) {
  const act_node *p = c->node->params;
  const kiln_tensor *x;
  kiln_status s;
  if ((s = kx_require(c, 0, &x))) return s;
  act_fn fn = act_kernel(clip_fns, x->dtype);
  if (!fn) return kiln_error(KILN_INVALID_ARGUMENT, "Clip does not support %s inputs", kiln_dtype_name(x->dtype));
  clip_bounds b;
  if (c->node->opset >= 11) {
    if ((s = clip_bound(c, 1, x, &b)) || (s = clip_bound(c, 2, x, &b))) return s;
  } else if (x->dtype == KILN_DOUBLE) {
    b.lo.f64 = p->clip_min;
    b.hi.f64 = p->clip_max;
  } else if (x->dtype == KILN_FLOAT || is_half(x->dtype)) {
    b.lo.f32 = p->clip_min;
    b.hi.f32 = p->clip_max;
  } else {
    return kiln_error(KILN_INVALID_ARGUMENT, "Clip before opset 11 does not support %s inputs",
                      kiln_dtype_name(x->dtype));
  }
  return act_apply(c, x, fn, &b, 1);
}

/* ------------------------------------------------------------------ prepare */

static kiln_status act_prepare(kx_node *n) {
  const act_op *op = NULL;
  for (size_t i = 0; i < sizeof act_ops / sizeof act_ops[0] && !op; i++)
    if (strcmp(act_ops[i].name, n->op_type) == 0) op = &act_ops[i];
  if (!op) return kiln_error(KILN_INTERNAL, "no activation kernel named %s", n->op_type);
  if (n->n_in != 1) return kiln_error(KILN_INVALID_ARGUMENT, "%s takes 1 input, got %d", op->name, n->n_in);
  act_params params = {
      op->attrs[0] ? kx_attr_float(n->proto, op->attrs[0], op->defaults[0]) : 0,
      op->attrs[1] ? kx_attr_float(n->proto, op->attrs[1], op->defaults[1]) : 0,
  };
  if (strcmp(op->name, "Celu") == 0 && params.alpha == 0) /* it divides by alpha */
    return kiln_error(KILN_INVALID_ARGUMENT, "Celu's alpha must not be 0");
  act_node *p = calloc(1, sizeof *p);
  if (!p) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  p->op = op;
  p->params = params;
  n->params = p;
  return NULL;
}

static kiln_status clip_prepare(kx_node *n) {
  int max_in = n->opset >= 11 ? 3 : 1;
  if (n->n_in < 1 || n->n_in > max_in)
    return kiln_error(KILN_INVALID_ARGUMENT, "Clip takes 1 to %d inputs, got %d", max_in, n->n_in);
  act_node *p = calloc(1, sizeof *p);
  if (!p) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  p->clip_min = kx_attr_float(n->proto, "min", -FLT_MAX);
  p->clip_max = kx_attr_float(n->proto, "max", FLT_MAX);
  n->params = p;
  return NULL;
}

/* Relu and LeakyRelu run fused into their producer when it allows (kx_op.fuse_activation). */
static int relu_as_activation(const kx_node *n, kx_activation *out) {
  *out = (kx_activation){.kind = KX_ACT_RELU};
  return n->n_in == 1;
}

static int leaky_relu_as_activation(const kx_node *n, kx_activation *out) {
  *out = (kx_activation){.kind = KX_ACT_LEAKY_RELU, .alpha = kx_attr_float(n->proto, "alpha", 0.01f)};
  return n->n_in == 1;
}

/* Clip fuses when its bounds are known at load: attributes before opset 11, constant float
 * inputs (or none) after. */
static int clip_as_activation(const kx_node *n, kx_activation *out) {
  *out = (kx_activation){.kind = KX_ACT_CLIP, .lo = -INFINITY, .hi = INFINITY};
  if (n->opset < 11) {
    out->lo = kx_attr_float(n->proto, "min", -FLT_MAX);
    out->hi = kx_attr_float(n->proto, "max", FLT_MAX);
    return n->n_in == 1;
  }
  for (int i = 1; i < n->n_in && i < 3; i++) {
    if (n->in[i] < 0) continue;
    const kiln_tensor *t = n->consts[i];
    if (!t || kiln_tensor_numel(t) != 1 || (t->dtype != KILN_FLOAT && !is_half(t->dtype))) return 0;
    float v;
    kx_to_float(t->dtype, t->data, &v, 1);
    if (i == 1) out->lo = v;
    else out->hi = v;
  }
  return n->n_in <= 3;
}

#define ACTIVATION(name, since) \
  { "", name, since, 0, act_prepare, act_run, NULL, 0, 0, NULL }

const kx_op kx_ops_activation[] = {
    {"", "Relu", 1, 0, act_prepare, act_run, NULL, 0, 0, relu_as_activation},
    {"", "LeakyRelu", 1, 0, act_prepare, act_run, NULL, 0, 0, leaky_relu_as_activation},
    ACTIVATION("Elu", 1),
    ACTIVATION("Selu", 1),
    ACTIVATION("Celu", 12),
    ACTIVATION("Sigmoid", 1),
    ACTIVATION("HardSigmoid", 1),
    ACTIVATION("HardSwish", 14),
    ACTIVATION("Softplus", 1),
    ACTIVATION("Softsign", 1),
    ACTIVATION("ThresholdedRelu", 10),
    ACTIVATION("Shrink", 9),
    ACTIVATION("Tanh", 1),
    {"", "Clip", 1, 0, clip_prepare, clip_run, NULL, 0, 0, clip_as_activation},
    {0},
};
