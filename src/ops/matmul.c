/* Matrix products: MatMul (numpy semantics), Gemm and Einsum.
 *
 * Floats go through kx_gemm_run (Gemm's bias row or column folded into its store), doubles
 * through kx_dgemm; float16 and bfloat16 are widened to float in scratch memory first and
 * narrowed at the end. Integer products use a plain loop in 64-bit unsigned arithmetic, which
 * wraps exactly like the narrower signed and unsigned types do (and, unlike signed C arithmetic,
 * is defined on overflow). Einsum with two float operands becomes a batched GEMM over gathered
 * copies; any other Einsum walks every index. */
#include "ops/gemm.h"
#include "ops/util.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ shared helpers */

static int is_half(kiln_dtype t) { return t == KILN_FLOAT16 || t == KILN_BFLOAT16; }

/* Whether v is a whole number that int64 holds (checked before the cast, which is undefined
 * out of range). */
static int integral(float v) { return fabsf(v) < 9.2e18f && v == (float)(int64_t)v; }

/* Widens n integer elements (any of the eight integer types) to uint64 with sign extension for
 * the signed ones, so that wrapping uint64 arithmetic gives the narrow type's result. */
static void ints_to_u64(const kiln_tensor *t, uint64_t *dst, int64_t n) {
  const void *p = t->data;
  switch (t->dtype) {
  case KILN_INT8: for (int64_t i = 0; i < n; i++) dst[i] = (uint64_t)(int64_t)((const int8_t *)p)[i]; break;
  case KILN_UINT8: for (int64_t i = 0; i < n; i++) dst[i] = ((const uint8_t *)p)[i]; break;
  case KILN_INT16: for (int64_t i = 0; i < n; i++) dst[i] = (uint64_t)(int64_t)((const int16_t *)p)[i]; break;
  case KILN_UINT16: for (int64_t i = 0; i < n; i++) dst[i] = ((const uint16_t *)p)[i]; break;
  case KILN_INT32: for (int64_t i = 0; i < n; i++) dst[i] = (uint64_t)(int64_t)((const int32_t *)p)[i]; break;
  case KILN_UINT32: for (int64_t i = 0; i < n; i++) dst[i] = ((const uint32_t *)p)[i]; break;
  case KILN_INT64: for (int64_t i = 0; i < n; i++) dst[i] = (uint64_t)((const int64_t *)p)[i]; break;
  default: if (n) memcpy(dst, p, (size_t)n * sizeof *dst); break; /* uint64 */
  }
}

/* Narrows wrapped uint64 results into an integer tensor (truncation keeps the low bits). */
static void u64_to_ints(const uint64_t *src, kiln_tensor *t, int64_t n) {
  void *p = t->data;
  switch (t->dtype) {
  case KILN_INT8: case KILN_UINT8: for (int64_t i = 0; i < n; i++) ((uint8_t *)p)[i] = (uint8_t)src[i]; break;
  case KILN_INT16: case KILN_UINT16: for (int64_t i = 0; i < n; i++) ((uint16_t *)p)[i] = (uint16_t)src[i]; break;
  case KILN_INT32: case KILN_UINT32: for (int64_t i = 0; i < n; i++) ((uint32_t *)p)[i] = (uint32_t)src[i]; break;
  default: if (n) memcpy(p, src, (size_t)n * sizeof *src); break;
  }
}

/* C[M,N] (+)= A[M,K] . B[K,N] in wrapping uint64 arithmetic; lda/ldb/ldc in elements. */
static void gemm_u64(int64_t M, int64_t N, int64_t K, const uint64_t *A, int64_t lda, int64_t a_col,
                     const uint64_t *B, int64_t ldb, int64_t b_col, uint64_t *C, int accumulate) {
  for (int64_t i = 0; i < M; i++) {
    uint64_t *c = C + i * N;
    if (!accumulate)
      for (int64_t j = 0; j < N; j++) c[j] = 0;
    for (int64_t k = 0; k < K; k++) {
      uint64_t a = A[i * lda + k * a_col];
      const uint64_t *b = B + k * ldb;
      for (int64_t j = 0; j < N; j++) c[j] += a * b[j * b_col];
    }
  }
}

/* ------------------------------------------------------------------ MatMul */

/* A MatMul's shapes after numpy's promotion of 1-D operands (A [K] -> [1,K], B [K] -> [K,1]). */
typedef struct mm_shape {
  int64_t M, N, K;
  int batch_rank;
  int64_t batch[KILN_MAX_RANK];    /* the broadcast batch dims */
  int64_t a_step[KILN_MAX_RANK];   /* per batch dim: matrices to step in A (0 = broadcast) */
  int64_t b_step[KILN_MAX_RANK];
  int64_t count;                   /* number of matrix products */
  int a_whole;                     /* A's batch dims are the output's: A is one tall matrix */
  int out_rank;
  int64_t out_dims[KILN_MAX_RANK];
} mm_shape;

static kiln_status mm_shapes(const kiln_tensor *a, const kiln_tensor *b, mm_shape *s) {
  char da[128], db[128];
  if (a->rank < 1 || b->rank < 1)
    return kiln_error(KILN_INVALID_ARGUMENT, "MatMul operands must have rank >= 1, got A %s and B %s",
                      kiln_tensor_describe(a, da, sizeof da), kiln_tensor_describe(b, db, sizeof db));
  int ra = a->rank, rb = b->rank;
  int64_t ak = a->dims[ra - 1], bk = rb == 1 ? b->dims[0] : b->dims[rb - 2];
  if (ak != bk)
    return kiln_error(KILN_INVALID_ARGUMENT, "MatMul inner dimensions differ: A %s has %lld columns, B %s has %lld rows",
                      kiln_tensor_describe(a, da, sizeof da), (long long)ak, kiln_tensor_describe(b, db, sizeof db),
                      (long long)bk);
  memset(s, 0, sizeof *s);
  s->K = ak;
  s->M = ra == 1 ? 1 : a->dims[ra - 2];
  s->N = rb == 1 ? 1 : b->dims[rb - 1];
  int ba = ra > 2 ? ra - 2 : 0, bb = rb > 2 ? rb - 2 : 0;
  s->batch_rank = ba > bb ? ba : bb;
  int64_t sa = 1, sb = 1;
  for (int d = s->batch_rank - 1; d >= 0; d--) {
    int ia = d - (s->batch_rank - ba), ib = d - (s->batch_rank - bb);
    int64_t xa = ia >= 0 ? a->dims[ia] : 1, xb = ib >= 0 ? b->dims[ib] : 1;
    if (xa != xb && xa != 1 && xb != 1)
      return kiln_error(KILN_INVALID_ARGUMENT, "MatMul batch dimensions of A %s and B %s cannot be broadcast",
                        kiln_tensor_describe(a, da, sizeof da), kiln_tensor_describe(b, db, sizeof db));
    s->batch[d] = xa > xb ? xa : xb;
    if (xa == 0 || xb == 0) s->batch[d] = 0;
    s->a_step[d] = xa == 1 ? 0 : sa;
    s->b_step[d] = xb == 1 ? 0 : sb;
    sa *= xa;
    sb *= xb;
  }
  s->count = kx_prod(s->batch, 0, s->batch_rank);
  s->a_whole = sa == s->count;
  for (int d = 0; d < s->batch_rank; d++) s->out_dims[s->out_rank++] = s->batch[d];
  if (ra > 1) s->out_dims[s->out_rank++] = s->M;
  if (rb > 1) s->out_dims[s->out_rank++] = s->N;
  return NULL;
}

/* Matrix offsets (in matrices) of batch item i in A and B. */
static void mm_item(const mm_shape *s, int64_t i, int64_t *ai, int64_t *bi) {
  *ai = *bi = 0;
  for (int d = s->batch_rank - 1; d >= 0; d--) {
    int64_t x = i % s->batch[d];
    i /= s->batch[d];
    *ai += x * s->a_step[d];
    *bi += x * s->b_step[d];
  }
}

/* How a float or double MatMul's products run. A shared B (a Linear layer over [batch, seq, d])
 * folds into one tall product. With at least one product per thread, workers take equal shares
 * of the products, each on one thread; otherwise the products run in turn, each split across
 * the pool. */
typedef struct mm_plan {
  mm_shape s;
  int dbl, workers;
  size_t ws_bytes; /* GEMM workspace for all workers (floats only) */
} mm_plan;

static void mm_plan_make(const kx_ctx *c, const mm_shape *s, int dbl, mm_plan *p) {
  int b_shared = 1;
  for (int d = 0; d < s->batch_rank; d++) b_shared &= s->b_step[d] == 0;
  p->s = *s;
  p->dbl = dbl;
  if (s->count > 1 && b_shared && s->a_whole) {
    p->s.M = s->M * s->count;
    p->s.batch_rank = 0;
    p->s.count = 1;
  }
  int threads = kx_gemm_threads(c);
  double work = (double)p->s.count * (double)p->s.M * (double)p->s.N * (double)p->s.K;
  p->workers = threads > 1 && p->s.count >= threads && work >= 1e5 * threads ? threads : 1;
  p->ws_bytes = dbl ? 0 : p->workers > 1 ? (size_t)p->workers * kx_gemm_workspace(1) : kx_gemm_workspace(threads);
}

typedef struct mm_job {
  const mm_plan *p;
  const void *A, *B;
  void *Y;
  char *ws;
  const float *bias;        /* floats only: one value per column, added in the GEMM's store */
  const kx_activation *act; /* floats only: applied in the GEMM's store, after the bias */
} mm_job;

/* Product i; c as for kx_gemm_run. */
static void mm_product(const mm_job *j, const kx_ctx *c, int64_t i, void *ws) {
  const mm_shape *s = &j->p->s;
  int64_t ai, bi;
  mm_item(s, i, &ai, &bi);
  int64_t ao = ai * s->M * s->K, bo = bi * s->K * s->N, yo = i * s->M * s->N;
  if (j->p->dbl) {
    kx_dgemm(0, 0, s->M, s->N, s->K, 1, (const double *)j->A + ao, s->K, (const double *)j->B + bo, s->N, 0,
             (double *)j->Y + yo, s->N);
    return;
  }
  kx_gemm g = {.M = s->M, .N = s->N, .K = s->K, .A = (const float *)j->A + ao, .lda = s->K, .B = (const float *)j->B + bo,
               .ldb = s->N, .alpha = 1, .beta = 0, .C = (float *)j->Y + yo, .ldc = s->N, .col_bias = j->bias,
               .act = j->act};
  kx_gemm_run(c, &g, ws);
}

static void mm_workers(void *arg, int64_t begin, int64_t end) {
  const mm_job *j = arg;
  int64_t n = j->p->s.count, w_n = j->p->workers;
  for (int64_t w = begin; w < end; w++)
    for (int64_t i = n * w / w_n; i < n * (w + 1) / w_n; i++) mm_product(j, NULL, i, j->ws + w * kx_gemm_workspace(1));
}

/* Runs the plan; ws holds p->ws_bytes. bias and act (floats only, or NULL) apply to every product. */
static void mm_run(const kx_ctx *c, const mm_plan *p, const void *A, const void *B, void *Y, void *ws,
                   const float *bias, const kx_activation *act) {
  mm_job j = {p, A, B, Y, ws, bias, act};
  if (p->workers > 1) {
    kx_parallel(c, p->workers, 1e12, mm_workers, &j);
    return;
  }
  for (int64_t i = 0; i < p->s.count; i++) mm_product(&j, c, i, ws);
}

static kiln_status mm_ints(kx_ctx *c, const mm_shape *s, const kiln_tensor *a, const kiln_tensor *b, kiln_tensor *y) {
  int64_t na = kiln_tensor_numel(a), nb = kiln_tensor_numel(b), ny = kiln_tensor_numel(y);
  uint64_t *buf = kx_scratch(c, (size_t)(na + nb + ny) * sizeof *buf);
  if (!buf) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for MatMul scratch");
  uint64_t *A = buf, *B = A + na, *Y = B + nb;
  ints_to_u64(a, A, na);
  ints_to_u64(b, B, nb);
  for (int64_t i = 0; i < s->count; i++) {
    int64_t ai, bi;
    mm_item(s, i, &ai, &bi);
    gemm_u64(s->M, s->N, s->K, A + ai * s->M * s->K, s->K, 1, B + bi * s->K * s->N, s->N, 1, Y + i * s->M * s->N, 0);
  }
  u64_to_ints(Y, y, ny);
  return NULL;
}

static kiln_status matmul_run(kx_ctx *c) {
  const kiln_tensor *a, *b;
  kiln_status st;
  if ((st = kx_require(c, 0, &a)) || (st = kx_require(c, 1, &b))) return st;
  if ((st = kx_check_dtype(a, 0, KX_NUMERIC)) || (st = kx_check_dtype(b, 1, KX_NUMERIC))) return st;
  if (a->dtype != b->dtype)
    return kiln_error(KILN_INVALID_ARGUMENT, "MatMul operands have different dtypes: A is %s, B is %s",
                      kiln_dtype_name(a->dtype), kiln_dtype_name(b->dtype));
  mm_shape s;
  if ((st = mm_shapes(a, b, &s))) return st;
  kiln_tensor *y;
  if ((st = kx_output(c, 0, a->dtype, s.out_rank, s.out_dims, &y))) return st;
  if (kiln_tensor_numel(y) == 0) return NULL;
  if (!kiln_dtype_is_float(a->dtype)) return mm_ints(c, &s, a, b, y);
  mm_plan p;
  int half = is_half(a->dtype);
  mm_plan_make(c, &s, a->dtype == KILN_DOUBLE, &p);
  int64_t na = kiln_tensor_numel(a), nb = kiln_tensor_numel(b), ny = kiln_tensor_numel(y);
  size_t wide = half ? (size_t)(na + nb + ny) * sizeof(float) : 0;
  char *buf = kx_scratch(c, p.ws_bytes + wide);
  if (!buf) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for %zu bytes of MatMul scratch", p.ws_bytes + wide);
  if (!half) {
    const float *bias = NULL;
    const kx_activation *act = NULL;
    if (a->dtype == KILN_FLOAT) kx_take_post_bias(c, s.N, &bias, &act);
    mm_run(c, &p, a->data, b->data, y->data, buf, bias, act);
    return NULL;
  }
  float *fa = (float *)(buf + p.ws_bytes), *fb = fa + na, *fy = fb + nb;
  kx_to_float(a->dtype, a->data, fa, na);
  kx_to_float(b->dtype, b->data, fb, nb);
  mm_run(c, &p, fa, fb, fy, buf, NULL, NULL);
  kx_from_float(y->dtype, fy, y->data, ny);
  return NULL;
}

/* ------------------------------------------------------------------ Gemm */

typedef struct gemm_params {
  int trans_a, trans_b;
  float alpha, beta;
} gemm_params;

static kiln_status gemm_prepare(kx_node *n) {
  gemm_params *p = calloc(1, sizeof *p);
  if (!p) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  p->trans_a = kx_attr_int(n->proto, "transA", 0) != 0;
  p->trans_b = kx_attr_int(n->proto, "transB", 0) != 0;
  p->alpha = kx_attr_float(n->proto, "alpha", 1.0f);
  p->beta = kx_attr_float(n->proto, "beta", 1.0f);
  n->params = p;
  return NULL;
}

/* How Gemm's C, unidirectionally broadcast to [M,N], is indexed. */
typedef struct gemm_bias {
  const kiln_tensor *C;
  int64_t row_step, col_step; /* element steps of C along Y's rows / columns (0 = broadcast) */
} gemm_bias;

static kiln_status gemm_bias_init(const kiln_tensor *C, int64_t M, int64_t N, gemm_bias *b) {
  b->C = C;
  if (!C) return NULL;
  char dc[128];
  int64_t cm = C->rank == 2 ? C->dims[0] : 1, cn = C->rank >= 1 ? C->dims[C->rank - 1] : 1;
  if (C->rank > 2 || (cm != M && cm != 1) || (cn != N && cn != 1))
    return kiln_error(KILN_INVALID_ARGUMENT, "Gemm: C %s cannot be broadcast to [%lld,%lld]",
                      kiln_tensor_describe(C, dc, sizeof dc), (long long)M, (long long)N);
  b->row_step = cm == 1 ? 0 : cn;
  b->col_step = cn == 1 ? 0 : 1;
  return NULL;
}

static kiln_status gemm_run(kx_ctx *c) {
  const gemm_params *p = c->node->params;
  const kiln_tensor *a, *b, *C = kx_input(c, 2);
  kiln_status st;
  if ((st = kx_require(c, 0, &a)) || (st = kx_require(c, 1, &b))) return st;
  if ((st = kx_check_dtype(a, 0, KX_NUMERIC)) || (st = kx_check_dtype(b, 1, KX_NUMERIC)) ||
      (st = kx_check_dtype(C, 2, KX_NUMERIC)))
    return st;
  char da[128], db[128];
  if (a->dtype != b->dtype || (C && C->dtype != a->dtype))
    return kiln_error(KILN_INVALID_ARGUMENT, "Gemm inputs have different dtypes: A %s, B %s%s%s", kiln_dtype_name(a->dtype),
                      kiln_dtype_name(b->dtype), C ? ", C " : "", C ? kiln_dtype_name(C->dtype) : "");
  if (a->rank != 2 || b->rank != 2)
    return kiln_error(KILN_INVALID_ARGUMENT, "Gemm: A and B must be 2-D, got A %s and B %s",
                      kiln_tensor_describe(a, da, sizeof da), kiln_tensor_describe(b, db, sizeof db));
  int64_t M = a->dims[p->trans_a ? 1 : 0], K = a->dims[p->trans_a ? 0 : 1];
  int64_t Kb = b->dims[p->trans_b ? 1 : 0], N = b->dims[p->trans_b ? 0 : 1];
  if (K != Kb)
    return kiln_error(KILN_INVALID_ARGUMENT, "Gemm inner dimensions differ: op(A) of A %s has %lld columns, op(B) of B %s has %lld rows",
                      kiln_tensor_describe(a, da, sizeof da), (long long)K, kiln_tensor_describe(b, db, sizeof db),
                      (long long)Kb);
  gemm_bias bias = {0};
  if ((st = gemm_bias_init(C, M, N, &bias))) return st;
  kiln_tensor *y;
  if ((st = kx_output(c, 0, a->dtype, 2, (int64_t[]){M, N}, &y))) return st;
  if (M == 0 || N == 0) return NULL;
  int64_t lda = a->dims[1], ldb = b->dims[1];

  if (a->dtype == KILN_FLOAT || is_half(a->dtype)) {
    int half = is_half(a->dtype);
    int64_t na = M * K, nb = K * N, nc = C ? kiln_tensor_numel(C) : 0;
    size_t ws = kx_gemm_workspace(kx_gemm_threads(c)), wide = half ? (size_t)(na + nb + nc + M * N) * sizeof(float) : 0;
    char *buf = kx_scratch(c, ws + wide);
    if (!buf) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for %zu bytes of Gemm scratch", ws + wide);
    kx_gemm g = {.M = M, .N = N, .K = K, .A = a->data, .lda = lda, .trans_a = p->trans_a, .B = b->data, .ldb = ldb,
                 .trans_b = p->trans_b, .alpha = p->alpha, .beta = 0, .C = y->data, .ldc = N};
    const float *cv = C ? C->data : NULL;
    if (half) { /* widen A, B and C, compute into a float Y, narrow */
      float *wa = (float *)(buf + ws), *wb = wa + na, *wc = wb + nb;
      kx_to_float(a->dtype, a->data, wa, na);
      kx_to_float(b->dtype, b->data, wb, nb);
      if (C) kx_to_float(C->dtype, C->data, wc, nc);
      g.A = wa;
      g.B = wb;
      g.C = wc + nc;
      cv = wc;
    }
    /* a bias row or column goes into the GEMM's store; other shapes of C are written first */
    if (C && p->beta == 1 && bias.row_step == 0 && bias.col_step == 1) {
      g.col_bias = cv;
    } else if (C && p->beta == 1 && bias.row_step == 1 && bias.col_step == 0) {
      g.row_bias = cv;
    } else if (C) {
      for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) g.C[i * N + j] = p->beta * cv[i * bias.row_step + j * bias.col_step];
      g.beta = 1;
    }
    if (!half) g.act = kx_take_post(c);
    kx_gemm_run(c, &g, buf);
    if (half) kx_from_float(y->dtype, g.C, y->data, M * N);
  } else if (a->dtype == KILN_DOUBLE) {
    double *Y = y->data;
    if (C) {
      const double *cv = C->data;
      for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) Y[i * N + j] = (double)p->beta * cv[i * bias.row_step + j * bias.col_step];
    }
    kx_dgemm(p->trans_a, p->trans_b, M, N, K, p->alpha, a->data, lda, b->data, ldb, C ? 1.0 : 0.0, Y, N);
  } else {
    /* integers: alpha and beta are floats in the spec; integer models use 1 and 1 (or 0) */
    if (!integral(p->alpha) || !integral(p->beta))
      return kiln_error(KILN_UNIMPLEMENTED, "Gemm on %s with non-integral alpha %g or beta %g",
                        kiln_dtype_name(a->dtype), (double)p->alpha, (double)p->beta);
    int64_t nc = C ? kiln_tensor_numel(C) : 0;
    uint64_t *buf = kx_scratch(c, (size_t)(M * K + K * N + nc + M * N) * sizeof *buf);
    if (!buf) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for Gemm scratch");
    uint64_t *A = buf, *B = A + M * K, *cv = B + K * N, *Y = cv + nc;
    uint64_t alpha = (uint64_t)(int64_t)p->alpha, beta = (uint64_t)(int64_t)p->beta;
    ints_to_u64(a, A, M * K);
    ints_to_u64(b, B, K * N);
    if (C) ints_to_u64(C, cv, nc);
    gemm_u64(M, N, K, A, p->trans_a ? 1 : lda, p->trans_a ? lda : 1, B, p->trans_b ? 1 : ldb, p->trans_b ? ldb : 1,
             Y, 0);
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++)
        Y[i * N + j] = alpha * Y[i * N + j] + (C ? beta * cv[i * bias.row_step + j * bias.col_step] : 0);
    u64_to_ints(Y, y, M * N);
  }
  return NULL;
}

/* ------------------------------------------------------------------ Einsum */

/* Labels: 'A'..'Z' are 0..25 and 'a'..'z' 26..51 (so sorting ids sorts as ASCII does, which is
 * the order of an implicit output); the dims an ellipsis stands for get ids 52.. aligned from
 * the right across operands, as numpy broadcasts them. */
#define EIN_LETTERS 52
#define EIN_LABELS (EIN_LETTERS + KILN_MAX_RANK)
#define EIN_MAX_TERMS 16
#define EIN_ELLIPSIS (-1)

typedef struct ein_term {
  int n;                         /* tokens: a letter id or EIN_ELLIPSIS */
  int tok[KILN_MAX_RANK + 1];
  int has_ellipsis;
} ein_term;

typedef struct ein_params {
  int n_in;
  ein_term in[EIN_MAX_TERMS];
  int explicit_out;
  ein_term out;
} ein_params;

static int ein_letter(char ch) {
  if (ch >= 'A' && ch <= 'Z') return ch - 'A';
  if (ch >= 'a' && ch <= 'z') return 26 + ch - 'a';
  return -1;
}

/* Parses one term ("bij", "...ii"), spaces already removed. */
static kiln_status ein_parse_term(const char *s, size_t len, ein_term *t) {
  memset(t, 0, sizeof *t);
  for (size_t i = 0; i < len;) {
    if (t->n == KILN_MAX_RANK + 1)
      return kiln_error(KILN_INVALID_ARGUMENT, "Einsum: term '%.*s' has more than %d subscripts", (int)len, s, KILN_MAX_RANK);
    if (s[i] == '.') {
      if (len - i < 3 || s[i + 1] != '.' || s[i + 2] != '.' || t->has_ellipsis)
        return kiln_error(KILN_INVALID_ARGUMENT, "Einsum: bad ellipsis in term '%.*s'", (int)len, s);
      t->has_ellipsis = 1;
      t->tok[t->n++] = EIN_ELLIPSIS;
      i += 3;
      continue;
    }
    int l = ein_letter(s[i]);
    if (l < 0) return kiln_error(KILN_INVALID_ARGUMENT, "Einsum: invalid character '%c' in term '%.*s'", s[i], (int)len, s);
    t->tok[t->n++] = l;
    i++;
  }
  if (t->n - t->has_ellipsis > KILN_MAX_RANK)
    return kiln_error(KILN_INVALID_ARGUMENT, "Einsum: term '%.*s' has more than %d subscripts", (int)len, s, KILN_MAX_RANK);
  return NULL;
}

static kiln_status einsum_prepare(kx_node *n) {
  char eq[512], clean[512];
  kx_attr_string(n->proto, "equation", "", eq, sizeof eq);
  size_t len = 0;
  for (const char *p = eq; *p; p++)
    if (!isspace((unsigned char)*p)) clean[len++] = *p;
  clean[len] = '\0';
  if (len == 0) return kiln_error(KILN_INVALID_ARGUMENT, "Einsum: missing equation");
  ein_params *e = calloc(1, sizeof *e);
  if (!e) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  kiln_status st = NULL;
  const char *arrow = strstr(clean, "->");
  size_t lhs_len = arrow ? (size_t)(arrow - clean) : len;
  for (size_t start = 0; !st;) {
    size_t end = start;
    while (end < lhs_len && clean[end] != ',') end++;
    if (e->n_in == EIN_MAX_TERMS) st = kiln_error(KILN_UNIMPLEMENTED, "Einsum with more than %d operands", EIN_MAX_TERMS);
    else st = ein_parse_term(clean + start, end - start, &e->in[e->n_in++]);
    if (end >= lhs_len) break;
    start = end + 1;
  }
  if (!st && arrow) {
    e->explicit_out = 1;
    st = ein_parse_term(arrow + 2, strlen(arrow + 2), &e->out);
    for (int i = 0; !st && i < e->out.n; i++)
      for (int j = 0; j < i; j++)
        if (e->out.tok[i] == e->out.tok[j] && e->out.tok[i] != EIN_ELLIPSIS) {
          st = kiln_error(KILN_INVALID_ARGUMENT, "Einsum: output subscript repeated in '%s'", eq);
          break;
        }
  }
  if (!st && n->n_in != e->n_in)
    st = kiln_error(KILN_INVALID_ARGUMENT, "Einsum equation '%s' has %d operands, the node has %d inputs", eq, e->n_in, n->n_in);
  if (st) {
    free(e);
    return st;
  }
  n->params = e;
  return NULL;
}

/* An Einsum resolved against its inputs' shapes: every label's size, each operand's element
 * stride per label (repeated labels add up, which walks the diagonal; broadcast ellipsis dims
 * get 0) and the output's labels. */
typedef struct ein_plan {
  int64_t size[EIN_LABELS];
  int64_t stride[EIN_MAX_TERMS][EIN_LABELS];
  unsigned char uses[EIN_MAX_TERMS][EIN_LABELS];
  int out_n;
  int out[EIN_LABELS];
  int red_n; /* labels summed over */
  int red[EIN_LABELS];
} ein_plan;

static kiln_status ein_resolve(const ein_params *e, const kiln_tensor *const *x, ein_plan *p) {
  memset(p, 0, sizeof *p);
  for (int l = 0; l < EIN_LABELS; l++) p->size[l] = -1;
  int ell_rank = 0;
  int count[EIN_LABELS] = {0};
  for (int i = 0; i < e->n_in; i++) {
    const ein_term *t = &e->in[i];
    int letters = t->n - t->has_ellipsis, er = x[i]->rank - letters;
    if (er < 0 || (!t->has_ellipsis && er != 0))
      return kiln_error(KILN_INVALID_ARGUMENT, "Einsum: operand %d has rank %d, its term has %d subscripts%s", i,
                        x[i]->rank, letters, t->has_ellipsis ? " plus an ellipsis" : "");
    if (er > ell_rank) ell_rank = er;
  }
  for (int i = 0; i < e->n_in; i++) {
    const ein_term *t = &e->in[i];
    int er = x[i]->rank - (t->n - t->has_ellipsis), axis = 0;
    int64_t strides[KILN_MAX_RANK];
    kx_strides(x[i]->rank, x[i]->dims, strides);
    for (int k = 0; k < t->n; k++) {
      int first = 0, n = 1;
      if (t->tok[k] == EIN_ELLIPSIS) {
        first = EIN_LETTERS + ell_rank - er;
        n = er;
      }
      for (int q = 0; q < n; q++, axis++) {
        int l = t->tok[k] == EIN_ELLIPSIS ? first + q : t->tok[k];
        int64_t d = x[i]->dims[axis];
        if (l >= EIN_LETTERS) { /* ellipsis dims broadcast */
          if (d != 1) {
            if (p->size[l] > 1 && p->size[l] != d)
              return kiln_error(KILN_INVALID_ARGUMENT, "Einsum: ellipsis dimensions of operand %d do not broadcast (%lld vs %lld)",
                                i, (long long)d, (long long)p->size[l]);
            p->size[l] = d;
            p->stride[i][l] += strides[axis];
          } else if (p->size[l] < 1) {
            p->size[l] = 1;
          }
        } else {
          if (p->size[l] >= 0 && p->size[l] != d)
            return kiln_error(KILN_INVALID_ARGUMENT, "Einsum: subscript '%c' has size %lld in operand %d but %lld elsewhere",
                              l < 26 ? 'A' + l : 'a' + l - 26, (long long)d, i, (long long)p->size[l]);
          p->size[l] = d;
          p->stride[i][l] += strides[axis];
          count[l]++;
        }
        p->uses[i][l] = 1;
      }
    }
  }
  unsigned char in_out[EIN_LABELS] = {0};
  if (e->explicit_out) {
    for (int k = 0; k < e->out.n; k++) {
      if (e->out.tok[k] == EIN_ELLIPSIS) {
        for (int l = EIN_LETTERS; l < EIN_LETTERS + ell_rank; l++) p->out[p->out_n++] = l;
        continue;
      }
      int l = e->out.tok[k];
      if (p->size[l] < 0)
        return kiln_error(KILN_INVALID_ARGUMENT, "Einsum: output subscript '%c' appears in no operand", l < 26 ? 'A' + l : 'a' + l - 26);
      p->out[p->out_n++] = l;
    }
  } else { /* implicit: the ellipsis dims, then the letters used exactly once, in order */
    for (int l = EIN_LETTERS; l < EIN_LETTERS + ell_rank; l++) p->out[p->out_n++] = l;
    for (int l = 0; l < EIN_LETTERS; l++)
      if (count[l] == 1) p->out[p->out_n++] = l;
  }
  if (p->out_n > KILN_MAX_RANK) return kiln_error(KILN_INVALID_ARGUMENT, "Einsum: output rank %d exceeds %d", p->out_n, KILN_MAX_RANK);
  for (int k = 0; k < p->out_n; k++) in_out[p->out[k]] = 1;
  for (int l = 0; l < EIN_LETTERS + ell_rank; l++)
    if (p->size[l] >= 0 && !in_out[l]) p->red[p->red_n++] = l;
  return NULL;
}

/* A strided walk: visits every index of n dims in row-major order, keeping the element offset
 * (sum of index x stride) up to date. */
typedef struct walk {
  int n;
  int64_t size[EIN_LABELS], stride[EIN_LABELS], idx[EIN_LABELS];
  int64_t off;
} walk;

static void walk_next(walk *w) {
  for (int d = w->n - 1; d >= 0; d--) {
    w->off += w->stride[d];
    if (++w->idx[d] < w->size[d]) return;
    w->off -= w->stride[d] * w->size[d];
    w->idx[d] = 0;
  }
}

static int64_t ein_total(const ein_plan *p, const int *labels, int n) {
  int64_t t = 1;
  for (int k = 0; k < n; k++) t *= p->size[labels[k]];
  return t;
}

/* Copies operand `i` into a contiguous buffer ordered by `labels` (a label the operand lacks
 * repeats its values, stride 0). */
static void ein_gather(const ein_plan *p, int i, const int *labels, int n, const void *src, void *dst, int dbl) {
  walk w = {.n = n};
  for (int k = 0; k < n; k++) {
    w.size[k] = p->size[labels[k]];
    w.stride[k] = p->stride[i][labels[k]];
  }
  int64_t total = ein_total(p, labels, n);
  if (total == 0) return;
  for (int64_t o = 0; o < total; o++, walk_next(&w)) {
    if (dbl) ((double *)dst)[o] = ((const double *)src)[w.off];
    else ((float *)dst)[o] = ((const float *)src)[w.off];
  }
}

/* Two float operands: batch labels (in both and the output), M (A and output), N (B and
 * output) and K (everything summed) make it a batched GEMM over gathered copies. */
static kiln_status ein_gemm(kx_ctx *c, const ein_plan *p, const void *a, const void *b, int dbl, void *y) {
  int bl[EIN_LABELS], ml[EIN_LABELS], nl[EIN_LABELS], kl[EIN_LABELS], nb = 0, nm = 0, nn = 0, nk = 0;
  for (int k = 0; k < p->out_n; k++) {
    int l = p->out[k];
    if (p->uses[0][l] && p->uses[1][l]) bl[nb++] = l;
    else if (p->uses[0][l]) ml[nm++] = l;
    else nl[nn++] = l;
  }
  for (int k = 0; k < p->red_n; k++) kl[nk++] = p->red[k];
  int64_t B = ein_total(p, bl, nb), M = ein_total(p, ml, nm), N = ein_total(p, nl, nn), K = ein_total(p, kl, nk);
  mm_shape s = {.M = M, .N = N, .K = K, .batch_rank = 1, .batch = {B}, .a_step = {1}, .b_step = {1}, .count = B, .a_whole = 1};
  mm_plan plan;
  mm_plan_make(c, &s, dbl, &plan);
  size_t es = dbl ? sizeof(double) : sizeof(float), bytes = (size_t)(B * M * K + B * K * N + B * M * N) * es;
  char *buf = kx_scratch(c, plan.ws_bytes + bytes);
  if (!buf) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for %zu bytes of Einsum scratch", plan.ws_bytes + bytes);
  char *A = buf + plan.ws_bytes, *Bm = A + (size_t)(B * M * K) * es, *T = Bm + (size_t)(B * K * N) * es;
  int order[EIN_LABELS], n = 0;
  for (int k = 0; k < nb; k++) order[n++] = bl[k];
  for (int k = 0; k < nm; k++) order[n++] = ml[k];
  for (int k = 0; k < nk; k++) order[n++] = kl[k];
  ein_gather(p, 0, order, n, a, A, dbl);
  n = nb;
  for (int k = 0; k < nk; k++) order[n++] = kl[k];
  for (int k = 0; k < nn; k++) order[n++] = nl[k];
  ein_gather(p, 1, order, n, b, Bm, dbl);
  mm_run(c, &plan, A, Bm, T, buf, NULL, NULL);
  /* T is ordered (batch, M, N): scatter it into the output's label order */
  int tl[EIN_LABELS];
  n = 0;
  for (int k = 0; k < nb; k++) tl[n++] = bl[k];
  for (int k = 0; k < nm; k++) tl[n++] = ml[k];
  for (int k = 0; k < nn; k++) tl[n++] = nl[k];
  ein_plan tp = *p;
  int64_t stride = 1;
  for (int k = n - 1; k >= 0; k--) {
    tp.stride[0][tl[k]] = stride;
    stride *= p->size[tl[k]];
  }
  ein_gather(&tp, 0, p->out, p->out_n, T, y, dbl);
  return NULL;
}

/* Steps the odometer over labels[0..n) by one, keeping every operand's offset current. */
static void ein_step(const ein_plan *p, int n_in, const int *labels, int n, int64_t *idx, int64_t *off) {
  for (int k = n - 1; k >= 0; k--) {
    int l = labels[k];
    for (int i = 0; i < n_in; i++) off[i] += p->stride[i][l];
    if (++idx[k] < p->size[l]) return;
    for (int i = 0; i < n_in; i++) off[i] -= p->stride[i][l] * p->size[l];
    idx[k] = 0;
  }
}

/* Any number of operands, any numeric type: y[out] = sum over the other labels of the product
 * of the operands. Floats accumulate in double, integers in wrapping uint64. */
static kiln_status ein_generic(kx_ctx *c, const ein_params *e, const ein_plan *p, const kiln_tensor *const *x,
                               kiln_tensor *y) {
  int ints = !kiln_dtype_is_float(y->dtype);
  int64_t total_in = 0, ny = kiln_tensor_numel(y);
  for (int i = 0; i < e->n_in; i++) total_in += kiln_tensor_numel(x[i]);
  /* doubles and uint64s share the 8-byte slots */
  double *buf = kx_scratch(c, (size_t)(total_in + ny) * sizeof(double));
  if (!buf) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for Einsum scratch");
  const double *fx[EIN_MAX_TERMS];
  const uint64_t *ix[EIN_MAX_TERMS];
  int64_t at = 0;
  for (int i = 0; i < e->n_in; i++) {
    int64_t n = kiln_tensor_numel(x[i]);
    if (ints) ints_to_u64(x[i], (uint64_t *)(buf + at), n);
    else
      for (int64_t k = 0; k < n; k++) buf[at + k] = kiln_tensor_get_f64(x[i], k);
    fx[i] = buf + at;
    ix[i] = (const uint64_t *)(buf + at);
    at += n;
  }
  double *fy = buf + at;
  uint64_t *iy = (uint64_t *)fy;
  int all[EIN_LABELS], n = 0; /* output labels, then the summed ones: output-major order */
  for (int k = 0; k < p->out_n; k++) all[n++] = p->out[k];
  for (int k = 0; k < p->red_n; k++) all[n++] = p->red[k];
  int64_t red = ein_total(p, p->red, p->red_n), idx[EIN_LABELS] = {0}, off[EIN_MAX_TERMS] = {0};
  for (int64_t o = 0; o < ny; o++) {
    double fs = 0;
    uint64_t is = 0;
    for (int64_t r = 0; r < red; r++) {
      double fp = 1;
      uint64_t ip = 1;
      for (int i = 0; i < e->n_in; i++) {
        if (ints) ip *= ix[i][off[i]];
        else fp *= fx[i][off[i]];
      }
      fs += fp;
      is += ip;
      ein_step(p, e->n_in, all, n, idx, off);
    }
    if (red == 0) ein_step(p, e->n_in, all, p->out_n, idx, off); /* nothing summed: move on by hand */
    if (ints) iy[o] = is;
    else fy[o] = fs;
  }
  if (ints) u64_to_ints(iy, y, ny);
  else
    for (int64_t o = 0; o < ny; o++) kx_set_f64(y, o, fy[o]);
  return NULL;
}

static kiln_status einsum_run(kx_ctx *c) {
  const ein_params *e = c->node->params;
  const kiln_tensor *x[EIN_MAX_TERMS];
  kiln_status st;
  for (int i = 0; i < e->n_in; i++) {
    if ((st = kx_require(c, i, &x[i])) || (st = kx_check_dtype(x[i], i, KX_NUMERIC))) return st;
    if (x[i]->dtype != x[0]->dtype)
      return kiln_error(KILN_INVALID_ARGUMENT, "Einsum operands have different dtypes: %s and %s",
                        kiln_dtype_name(x[0]->dtype), kiln_dtype_name(x[i]->dtype));
  }
  ein_plan p;
  if ((st = ein_resolve(e, x, &p))) return st;
  int64_t dims[KILN_MAX_RANK];
  for (int k = 0; k < p.out_n; k++) dims[k] = p.size[p.out[k]];
  kiln_tensor *y;
  if ((st = kx_output(c, 0, x[0]->dtype, p.out_n, dims, &y))) return st;
  if (kiln_tensor_numel(y) == 0) return NULL;
  if (e->n_in == 2 && (x[0]->dtype == KILN_FLOAT || x[0]->dtype == KILN_DOUBLE))
    return ein_gemm(c, &p, x[0]->data, x[1]->data, x[0]->dtype == KILN_DOUBLE, y->data);
  return ein_generic(c, e, &p, x, y);
}

const kx_op kx_ops_matmul[] = {
    {"", "MatMul", 1, 0, NULL, matmul_run, NULL, 0, 1},
    {"", "Gemm", 1, 0, gemm_prepare, gemm_run, NULL, 0, 1},
    {"", "Einsum", 12, 0, einsum_prepare, einsum_run, NULL, 0},
    {0},
};
