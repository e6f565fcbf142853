/* kiln's single-precision GEMM (see gemm.h).
 *
 * The layout is the classic one of BLIS and OpenBLAS: B is packed block by block (KC rows by NC
 * columns, sized to stay in L2) into panels of NR columns, and a 6x16 register tile walks the
 * panels against six rows of A. A is read in place (six rows at a time, broadcast element by
 * element), so weights need no packed copy; only a transposed A (and a last partial row panel) is
 * packed.
 *
 * The first K block of each tile adds beta * C and the biases in registers before its store (later
 * blocks add into C), and the last one applies the fused activation, so neither costs a pass of
 * its own over C.
 *
 * Why not OpenBLAS (DESIGN.md's first choice): bench/gemm times both on the models' shapes. On two
 * cores this kernel is 2-3x faster on GEMV (batch 1), where OpenBLAS's per-call overhead
 * dominates, and within 15 % either way on batch-64 dense layers and the tall-skinny products of
 * late and pointwise convolutions; OpenBLAS is 5-25 % faster on large products (transformer
 * projections, ResNet's middle layers). What tips it: kiln packs convolution patches straight into
 * the panels (no im2col buffer), fuses bias and activation into the store, and splits work in
 * its own pool, with no second thread pool competing for the cores. */
#include "ops/gemm.h"

#include <immintrin.h>
#include <string.h>

#define MR 6
#define NR KX_GEMM_NR
#define KC 384
#define NC KX_GEMM_NC
#define WS_FLOATS (KC * NC + MR * KC) /* per thread: a B block and one A panel */
#define WS_ALIGN 64
/* kx_sgemm has no scratch memory: it packs into smaller blocks on the stack (38 KB) */
#define STACK_KC 256
#define STACK_NC 32
#define STACK_WS_FLOATS (STACK_KC * STACK_NC + MR * STACK_KC)

int kx_gemm_threads(const kx_ctx *c) {
  if (!c) return 1;
  int t = kiln_pool_threads(c->pool);
  return c->threads > 0 && c->threads < t ? c->threads : t;
}

size_t kx_gemm_workspace(int threads) { return (size_t)(threads > 1 ? threads : 1) * WS_FLOATS * sizeof(float) + WS_ALIGN; }

/* ------------------------------------------------------------------ the 6x16 tile */

/* Where a tile's results go and what the store adds to them. */
typedef struct tile_out {
  float *c;
  int64_t ldc;
  int mr, nr;  /* valid rows and columns of the tile */
  int first;   /* the first K block adds beta * C and the biases; later ones add C */
  float alpha, beta;
  const float *row_bias, *col_bias; /* at the tile's first row / column, or NULL */
  const kx_activation *act;         /* set on the last K block only */
} tile_out;

static inline __attribute__((always_inline)) __m256 row_init(const tile_out *o, int r, int half) {
  float *cr = o->c + r * o->ldc + 8 * half;
  if (!o->first) return _mm256_loadu_ps(cr);
  __m256 v = o->beta != 0 ? _mm256_mul_ps(_mm256_set1_ps(o->beta), _mm256_loadu_ps(cr)) : _mm256_setzero_ps();
  if (o->row_bias) v = _mm256_add_ps(v, _mm256_set1_ps(o->row_bias[r]));
  if (o->col_bias) v = _mm256_add_ps(v, _mm256_loadu_ps(o->col_bias + 8 * half));
  return v;
}

static inline __attribute__((always_inline)) void store_row(const tile_out *o, int r, __m256 v0, __m256 v1) {
  if (o->alpha != 1) {
    v0 = _mm256_mul_ps(v0, _mm256_set1_ps(o->alpha));
    v1 = _mm256_mul_ps(v1, _mm256_set1_ps(o->alpha));
  }
  v0 = _mm256_add_ps(v0, row_init(o, r, 0));
  v1 = _mm256_add_ps(v1, row_init(o, r, 1));
  if (o->act) {
    v0 = kx_act_m256(o->act, v0);
    v1 = kx_act_m256(o->act, v1);
  }
  _mm256_storeu_ps(o->c + r * o->ldc, v0);
  _mm256_storeu_ps(o->c + r * o->ldc + 8, v1);
}

/* The left half of a row, for tiles of eight columns. */
static inline void store_half_row(const tile_out *o, int r, __m256 v) {
  if (o->alpha != 1) v = _mm256_mul_ps(v, _mm256_set1_ps(o->alpha));
  v = _mm256_add_ps(v, row_init(o, r, 0));
  if (o->act) v = kx_act_m256(o->act, v);
  _mm256_storeu_ps(o->c + r * o->ldc, v);
}

/* The part of a partial tile inside C: whole rows as vectors when all 16 (or the first 8)
 * columns are in. */
static void store_partial(const tile_out *o, const float t[MR][NR]) {
  if (o->nr == NR || o->nr == NR / 2) {
    for (int r = 0; r < o->mr; r++)
      if (o->nr == NR) store_row(o, r, _mm256_loadu_ps(t[r]), _mm256_loadu_ps(t[r] + 8));
      else store_half_row(o, r, _mm256_loadu_ps(t[r]));
    return;
  }
  for (int r = 0; r < o->mr; r++)
    for (int q = 0; q < o->nr; q++) {
      float *cp = o->c + r * o->ldc + q, v = o->alpha * t[r][q];
      if (!o->first) v += *cp;
      else {
        if (o->beta != 0) v += o->beta * *cp;
        if (o->row_bias) v += o->row_bias[r];
        if (o->col_bias) v += o->col_bias[q];
      }
      *cp = kx_act_f32(o->act, v);
    }
}

/* acc[rows x cols] = sum over k of A[r][k] * Bpanel[k][0..cols), where A[r][k] = a[r * rs + k * ks]
 * (rs = lda, ks = 1 for rows of A in place; rs = 1, ks = MR for a packed panel). Inlined into
 * callers with constant strides, row and column counts, so the loop addresses stay simple, a
 * short last row panel (rows 2 or 4) does not pay for six and a last column panel of at most
 * eight columns (a 7x7 image has 49) does not pay for sixteen. */
static inline __attribute__((always_inline)) void tile(int64_t kc, const float *a, int64_t rs, int64_t ks,
                                                       const float *b, int rows, int cols, const tile_out *o) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  const float *a0 = a, *a3 = a + 3 * rs;
  for (int64_t k = 0; k < kc; k++) {
    __m256 b0 = _mm256_loadu_ps(b), b1 = cols > 8 ? _mm256_loadu_ps(b + 8) : b0;
    __m256 x = _mm256_broadcast_ss(a0);
    c00 = _mm256_fmadd_ps(x, b0, c00);
    if (cols > 8) c01 = _mm256_fmadd_ps(x, b1, c01);
    x = _mm256_broadcast_ss(a0 + rs);
    c10 = _mm256_fmadd_ps(x, b0, c10);
    if (cols > 8) c11 = _mm256_fmadd_ps(x, b1, c11);
    if (rows > 2) {
      x = _mm256_broadcast_ss(a0 + 2 * rs);
      c20 = _mm256_fmadd_ps(x, b0, c20);
      if (cols > 8) c21 = _mm256_fmadd_ps(x, b1, c21);
      x = _mm256_broadcast_ss(a3);
      c30 = _mm256_fmadd_ps(x, b0, c30);
      if (cols > 8) c31 = _mm256_fmadd_ps(x, b1, c31);
    }
    if (rows > 4) {
      x = _mm256_broadcast_ss(a3 + rs);
      c40 = _mm256_fmadd_ps(x, b0, c40);
      if (cols > 8) c41 = _mm256_fmadd_ps(x, b1, c41);
      x = _mm256_broadcast_ss(a3 + 2 * rs);
      c50 = _mm256_fmadd_ps(x, b0, c50);
      if (cols > 8) c51 = _mm256_fmadd_ps(x, b1, c51);
    }
    a0 += ks;
    a3 += ks;
    b += NR;
  }
  if (o->mr == MR && o->nr == NR) {
    store_row(o, 0, c00, c01);
    store_row(o, 1, c10, c11);
    store_row(o, 2, c20, c21);
    store_row(o, 3, c30, c31);
    store_row(o, 4, c40, c41);
    store_row(o, 5, c50, c51);
    return;
  }
  float t[MR][NR];
  _mm256_storeu_ps(t[0], c00), _mm256_storeu_ps(t[0] + 8, c01);
  _mm256_storeu_ps(t[1], c10), _mm256_storeu_ps(t[1] + 8, c11);
  _mm256_storeu_ps(t[2], c20), _mm256_storeu_ps(t[2] + 8, c21);
  _mm256_storeu_ps(t[3], c30), _mm256_storeu_ps(t[3] + 8, c31);
  _mm256_storeu_ps(t[4], c40), _mm256_storeu_ps(t[4] + 8, c41);
  _mm256_storeu_ps(t[5], c50), _mm256_storeu_ps(t[5] + 8, c51);
  store_partial(o, t);
}

static void tile_rows(int64_t kc, const float *a, int64_t lda, const float *b, const tile_out *o) {
  if (o->nr > 8) tile(kc, a, lda, 1, b, MR, 16, o);
  else tile(kc, a, lda, 1, b, MR, 8, o);
}
static void tile_packed(int64_t kc, const float *a, const float *b, const tile_out *o) {
  if (o->nr <= 8) tile(kc, a, 1, MR, b, 6, 8, o);
  else if (o->mr > 4) tile(kc, a, 1, MR, b, 6, 16, o);
  else if (o->mr > 2) tile(kc, a, 1, MR, b, 4, 16, o);
  else tile(kc, a, 1, MR, b, 2, 16, o);
}

/* ------------------------------------------------------------------ packing */

/* dst[c * ldd + r] = src[r * lds + c] for an 8x8 block. */
static inline void transpose8x8(const float *src, int64_t lds, float *dst, int64_t ldd) {
  __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + lds), r2 = _mm256_loadu_ps(src + 2 * lds);
  __m256 r3 = _mm256_loadu_ps(src + 3 * lds), r4 = _mm256_loadu_ps(src + 4 * lds), r5 = _mm256_loadu_ps(src + 5 * lds);
  __m256 r6 = _mm256_loadu_ps(src + 6 * lds), r7 = _mm256_loadu_ps(src + 7 * lds);
  __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3);
  __m256 t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0)), u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0)), u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0)), u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0)), u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  _mm256_storeu_ps(dst, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(dst + ldd, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(dst + 2 * ldd, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(dst + 3 * ldd, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(dst + 4 * ldd, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(dst + 5 * ldd, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(dst + 6 * ldd, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(dst + 7 * ldd, _mm256_permute2f128_ps(u3, u7, 0x31));
}

/* B as a plain matrix, into panels (see kx_pack_b_fn). */
static void pack_b_matrix(const kx_gemm *g, int64_t k0, int64_t kc, int64_t j0, int64_t nc, float *dst) {
  int64_t full = nc / NR, rem = nc % NR;
  if (!g->trans_b) {
    for (int64_t k = 0; k < kc; k++) {
      const float *src = g->B + (k0 + k) * g->ldb + j0;
      float *d = dst + k * NR;
      for (int64_t p = 0; p < full; p++, src += NR, d += kc * NR) {
        _mm256_storeu_ps(d, _mm256_loadu_ps(src));
        _mm256_storeu_ps(d + 8, _mm256_loadu_ps(src + 8));
      }
      if (rem) {
        memcpy(d, src, (size_t)rem * sizeof *d);
        memset(d + rem, 0, (size_t)(NR - rem) * sizeof *d);
      }
    }
    return;
  }
  /* op(B)[k][j] = B[j][k]: each column of a panel is a row of B. Whole 8x8 blocks go through
   * registers; the ragged edges (kc % 8, a partial last panel) element by element. */
  int64_t panels = full + (rem > 0), k8 = kc / 8 * 8;
  for (int64_t p = 0; p < panels; p++) {
    float *d = dst + p * kc * NR;
    int64_t cols = p < full ? NR : rem;
    for (int64_t q = 0; q + 8 <= cols; q += 8) {
      const float *src = g->B + (j0 + p * NR + q) * g->ldb + k0;
      for (int64_t k = 0; k < k8; k += 8) transpose8x8(src + k, g->ldb, d + k * NR + q, NR);
    }
    for (int64_t q = 0; q < NR; q++) {
      const float *src = g->B + (j0 + p * NR + q) * g->ldb + k0;
      int64_t from = q < cols / 8 * 8 ? k8 : 0; /* rows the 8x8 blocks already wrote */
      for (int64_t k = from; k < kc; k++) d[k * NR + q] = q < cols ? src[k] : 0;
    }
  }
}

/* Rows [i0, i0+mr) of op(A), columns [k0, k0+kc), as one packed MR-row panel (zero rows past
 * mr): for a transposed A, and for the last, partial row panel of an untransposed one. */
/* Element (i, k) of a 16-bit op(A). */
static inline float a16_at(const kx_gemm *g, int64_t i, int64_t k) {
  uint16_t h = g->trans_a ? g->A16[k * g->lda + i] : g->A16[i * g->lda + k];
  if (!g->a16_bf16) return _cvtsh_ss(h);
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

static void pack_a(const kx_gemm *g, int64_t i0, int mr, int64_t k0, int64_t kc, float *dst) {
  if (g->trans_a) { /* op(A)'s rows are A's columns: each k reads MR contiguous elements of A's row k */
    for (int64_t k = 0; k < kc; k++) {
      float *d = dst + k * MR;
      if (g->A16)
        for (int r = 0; r < MR; r++) d[r] = r < mr ? a16_at(g, i0 + r, k0 + k) : 0;
      else {
        const float *src = g->A + (k0 + k) * g->lda + i0;
        for (int r = 0; r < MR; r++) d[r] = r < mr ? src[r] : 0;
      }
    }
    return;
  }
  for (int r = 0; r < MR; r++) {
    if (r >= mr) {
      for (int64_t k = 0; k < kc; k++) dst[k * MR + r] = 0;
    } else if (g->A16) {
      for (int64_t k = 0; k < kc; k++) dst[k * MR + r] = a16_at(g, i0 + r, k0 + k);
    } else {
      const float *src = g->A + (i0 + r) * g->lda + k0;
      for (int64_t k = 0; k < kc; k++) dst[k * MR + r] = src[k];
    }
  }
}

/* ------------------------------------------------------------------ driver */

/* Asks for the next row panel of A (six rows of kc floats) while this one computes: weights read
 * in place come from memory in six streams, which the hardware prefetcher follows too late when
 * each panel is used for only a few column panels (a 7x7 image has four). */
static void prefetch_rows(const float *a, int64_t lda, int64_t kc) {
  for (int r = 0; r < MR; r++)
    for (int64_t k = 0; k < kc; k += 16) _mm_prefetch((const char *)(a + r * lda + k), _MM_HINT_T0);
}

/* The blocking of one workspace: B blocks of kc x nc, then one A panel. */
typedef struct blocking {
  int64_t kc, nc;
  float *ws;
} blocking;

/* C[i0..i1, j0..j1) on the calling thread. */
static void gemm_block(const kx_gemm *g, int64_t i0, int64_t i1, int64_t j0, int64_t j1, const blocking *bl) {
  float *bbuf = bl->ws, *abuf = bl->ws + bl->kc * bl->nc;
  for (int64_t jc = j0; jc < j1; jc += bl->nc) {
    int64_t nc = j1 - jc < bl->nc ? j1 - jc : bl->nc;
    for (int64_t pc = 0; pc < g->K; pc += bl->kc) {
      int64_t kc = g->K - pc < bl->kc ? g->K - pc : bl->kc;
      if (g->pack_b) g->pack_b(g->pack_b_arg, pc, kc, jc, nc, bbuf);
      else pack_b_matrix(g, pc, kc, jc, nc, bbuf);
      /* a row panel of A stays in L1 while the B panels stream from L2, and C is written along
       * rows (six sequential streams) */
      for (int64_t i = i0; i < i1; i += MR) {
        tile_out o = {.ldc = g->ldc, .mr = i1 - i < MR ? (int)(i1 - i) : MR, .first = pc == 0, .alpha = g->alpha,
                      .beta = g->beta, .row_bias = g->row_bias ? g->row_bias + i : NULL,
                      .act = pc + kc == g->K ? g->act : NULL};
        int in_place = !g->trans_a && !g->A16 && o.mr == MR;
        if (!in_place) pack_a(g, i, o.mr, pc, kc, abuf);
        if (in_place && i + 2 * MR <= i1) prefetch_rows(g->A + (i + MR) * g->lda + pc, g->lda, kc);
        for (int64_t jr = 0; jr < nc; jr += NR) {
          o.c = g->C + i * g->ldc + jc + jr;
          o.nr = nc - jr < NR ? (int)(nc - jr) : NR;
          o.col_bias = g->col_bias ? g->col_bias + jc + jr : NULL;
          if (in_place) tile_rows(kc, g->A + i * g->lda + pc, g->lda, bbuf + jr * kc, &o);
          else tile_packed(kc, abuf, bbuf + jr * kc, &o);
        }
      }
    }
  }
}

/* ------------------------------------------------------------------ one row: C = a . op(B) */

static inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

static inline float finish(const kx_gemm *g, int64_t j, float dot) {
  float v = g->alpha * dot;
  if (g->beta != 0) v += g->beta * g->C[j];
  if (g->row_bias) v += g->row_bias[0];
  if (g->col_bias) v += g->col_bias[j];
  return kx_act_f32(g->act, v);
}

/* Columns [j0, j1) of a single-row product. op(A) is the row a[k * as]. B untransposed is read
 * row by row into 64 column accumulators; transposed, each output is a dot product of two
 * contiguous vectors (as must be 1). */
static void gemv_block(const kx_gemm *g, int64_t j0, int64_t j1) {
  const float *a = g->A;
  int64_t as = g->trans_a ? g->lda : 1, K = g->K;
  float *y = g->C;
  if (!g->trans_b) {
    int64_t j = j0;
    for (; j + 64 <= j1; j += 64) {
      __m256 s[8];
      for (int q = 0; q < 8; q++) s[q] = _mm256_setzero_ps();
      const float *b = g->B + j;
      for (int64_t k = 0; k < K; k++, b += g->ldb) {
        __m256 x = _mm256_broadcast_ss(a + k * as);
        for (int q = 0; q < 8; q++) s[q] = _mm256_fmadd_ps(x, _mm256_loadu_ps(b + 8 * q), s[q]);
      }
      float t[64];
      for (int q = 0; q < 8; q++) _mm256_storeu_ps(t + 8 * q, s[q]);
      for (int q = 0; q < 64; q++) y[j + q] = finish(g, j + q, t[q]);
    }
    for (; j + 8 <= j1; j += 8) {
      __m256 s = _mm256_setzero_ps();
      const float *b = g->B + j;
      for (int64_t k = 0; k < K; k++, b += g->ldb) s = _mm256_fmadd_ps(_mm256_broadcast_ss(a + k * as), _mm256_loadu_ps(b), s);
      float t[8];
      _mm256_storeu_ps(t, s);
      for (int q = 0; q < 8; q++) y[j + q] = finish(g, j + q, t[q]);
    }
    for (; j < j1; j++) {
      float s = 0;
      for (int64_t k = 0; k < K; k++) s += a[k * as] * g->B[k * g->ldb + j];
      y[j] = finish(g, j, s);
    }
    return;
  }
  int64_t j = j0, K8 = K / 8 * 8;
  for (; j + 4 <= j1; j += 4) {
    const float *b0 = g->B + j * g->ldb, *b1 = b0 + g->ldb, *b2 = b1 + g->ldb, *b3 = b2 + g->ldb;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (int64_t k = 0; k < K8; k += 8) {
      __m256 x = _mm256_loadu_ps(a + k);
      s0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b0 + k), s0);
      s1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b1 + k), s1);
      s2 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b2 + k), s2);
      s3 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b3 + k), s3);
    }
    float d0 = hsum(s0), d1 = hsum(s1), d2 = hsum(s2), d3 = hsum(s3);
    for (int64_t k = K8; k < K; k++) {
      d0 += a[k] * b0[k];
      d1 += a[k] * b1[k];
      d2 += a[k] * b2[k];
      d3 += a[k] * b3[k];
    }
    y[j] = finish(g, j, d0);
    y[j + 1] = finish(g, j + 1, d1);
    y[j + 2] = finish(g, j + 2, d2);
    y[j + 3] = finish(g, j + 3, d3);
  }
  for (; j < j1; j++) {
    const float *b = g->B + j * g->ldb;
    __m256 s = _mm256_setzero_ps();
    for (int64_t k = 0; k < K8; k += 8) s = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), s);
    float d = hsum(s);
    for (int64_t k = K8; k < K; k++) d += a[k] * b[k];
    y[j] = finish(g, j, d);
  }
}

/* ------------------------------------------------------------------ splitting */

typedef struct split_job {
  const kx_gemm *g;
  int parts, by_rows, gemv;
  float *ws; /* parts x WS_FLOATS, or NULL: each part packs on its own stack */
} split_job;

/* Rows [a, b) or columns [a, b) of the product. */
static void run_part(const kx_gemm *g, int by_rows, int64_t a, int64_t b, const blocking *bl) {
  if (by_rows) gemm_block(g, a, b, 0, g->N, bl);
  else gemm_block(g, 0, g->M, a, b, bl);
}

static void run_part_on_stack(const kx_gemm *g, int by_rows, int64_t a, int64_t b) {
  _Alignas(WS_ALIGN) float ws[STACK_WS_FLOATS];
  blocking bl = {STACK_KC, STACK_NC, ws};
  run_part(g, by_rows, a, b, &bl);
}

/* Part p of the product: a range of rows or columns, cut at tile boundaries. */
static void split_range(void *arg, int64_t begin, int64_t end) {
  const split_job *s = arg;
  const kx_gemm *g = s->g;
  for (int64_t p = begin; p < end; p++) {
    int64_t n = s->by_rows ? g->M : g->N, unit = s->gemv ? 64 : s->by_rows ? MR : NR;
    int64_t units = (n + unit - 1) / unit, a = units * p / s->parts * unit, b = units * (p + 1) / s->parts * unit;
    if (b > n) b = n;
    if (a >= b) continue;
    if (s->gemv) {
      gemv_block(g, a, b);
    } else if (s->ws) {
      blocking bl = {KC, NC, s->ws + p * WS_FLOATS};
      run_part(g, s->by_rows, a, b, &bl);
    } else {
      run_part_on_stack(g, s->by_rows, a, b);
    }
  }
}

/* Work (multiply-adds) below which another thread does not pay for its wake-up. */
#define MIN_WORK_PER_THREAD (1 << 17)

/* What a split costs beyond its share of the tiles, in rows (or columns) of C: split by rows,
 * every part packs all of B; split by columns, every part streams all of A. */
#define SPLIT_OVERHEAD 4

/* Whether parts should take ranges of rows rather than columns: the split whose busiest part has
 * the least work, counting whole tiles (a 14x14 image's 196 columns are 13 panels, which two
 * threads cannot share evenly; 384 output channels are 64 row panels, which they can). */
static int split_by_rows(const kx_gemm *g, int parts) {
  int64_t row_units = (g->M + MR - 1) / MR, col_units = (g->N + NR - 1) / NR;
  double rows_busiest = (double)((row_units + parts - 1) / parts * MR), cols_busiest = (double)((col_units + parts - 1) / parts * NR);
  return (rows_busiest + SPLIT_OVERHEAD) * (double)(col_units * NR) < (cols_busiest + SPLIT_OVERHEAD) * (double)(row_units * MR);
}

static void run_split(const kx_ctx *c, const kx_gemm *g, float *ws, int gemv) {
  double work = (double)g->M * (double)g->N * (double)g->K;
  int threads = kx_gemm_threads(c);
  if (work < (double)threads * MIN_WORK_PER_THREAD) threads = (int)(work / MIN_WORK_PER_THREAD);
  split_job s = {g, threads > 1 ? threads : 1, 0, gemv, ws};
  s.by_rows = !gemv && s.parts > 1 && split_by_rows(g, s.parts);
  if (s.parts == 1) split_range(&s, 0, 1);
  else kx_parallel(c, s.parts, 1e9, split_range, &s);
}

static void scale_only(const kx_gemm *g) {
  for (int64_t i = 0; i < g->M; i++)
    for (int64_t j = 0; j < g->N; j++) {
      float *cp = g->C + i * g->ldc + j, v = g->beta != 0 ? g->beta * *cp : 0;
      if (g->row_bias) v += g->row_bias[i];
      if (g->col_bias) v += g->col_bias[j];
      *cp = kx_act_f32(g->act, v);
    }
}

/* A single-row product reads B once, with no packing: worth it unless B comes from a packer or
 * A's row is strided while B is transposed. */
static int gemv_fits(const kx_gemm *g) {
  return g->M == 1 && !g->pack_b && !g->A16 && (!g->trans_b || !g->trans_a || g->lda == 1);
}

void kx_gemm_run(const kx_ctx *c, const kx_gemm *g, void *workspace) {
  if (g->M <= 0 || g->N <= 0) return;
  if (g->K <= 0) {
    scale_only(g);
    return;
  }
  float *ws = (float *)(((uintptr_t)workspace + WS_ALIGN - 1) & ~(uintptr_t)(WS_ALIGN - 1));
  run_split(c, g, ws, gemv_fits(g));
}

/* ------------------------------------------------------------------ kx_sgemm / kx_dgemm */

void kx_sgemm(const kx_ctx *c, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  kx_gemm g = {.M = M, .N = N, .K = K, .A = A, .lda = lda, .trans_a = trans_a, .B = B, .ldb = ldb, .trans_b = trans_b,
               .alpha = alpha, .beta = beta, .C = C, .ldc = ldc};
  if (M <= 0 || N <= 0) return;
  if (K <= 0) scale_only(&g);
  else run_split(c, &g, NULL, gemv_fits(&g));
}

/* Doubles only appear in conformance-style graphs: a plain loop, right rather than fast. */
void kx_dgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double *A, int64_t lda,
              const double *B, int64_t ldb, double beta, double *C, int64_t ldc) {
  int64_t ars = trans_a ? 1 : lda, aks = trans_a ? lda : 1, bks = trans_b ? 1 : ldb, bjs = trans_b ? ldb : 1;
  for (int64_t i = 0; i < M; i++) {
    double *c = C + i * ldc;
    for (int64_t j = 0; j < N; j++) c[j] = beta == 0 ? 0 : beta * c[j];
    for (int64_t k = 0; k < K; k++) {
      double a = alpha * A[i * ars + k * aks];
      const double *b = B + k * bks;
      for (int64_t j = 0; j < N; j++) c[j] += a * b[j * bjs];
    }
  }
}
