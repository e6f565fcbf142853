/* Single-precision GEMM for kernels.
 *
 * kx_gemm_run is kiln's own AVX2/FMA GEMM: 6x16 register tiles over packed panels of B, with the
 * bias and beta * C folded into the final store, a caller-supplied B packer (Conv packs straight
 * from the image, with no im2col buffer) and a matrix-vector path for single-row products. It
 * takes its packing memory from the caller (kx_scratch) and splits across kiln's pool.
 *
 * kx_sgemm is the simple entry point for families that need no workspace: the same kernels,
 * packing into smaller blocks on the stack.
 *
 * Fused activations (n->post) are applied in registers by the kernels of this family (the GEMM's
 * final store, Conv's direct, depthwise and Winograd kernels) with the helpers below, so that
 * Conv -> Relu costs no second pass over the output. */
#ifndef KX_GEMM_H
#define KX_GEMM_H

#include "ops/op.h"
#include "ops/util.h"

#include <immintrin.h>

/* The node's fused activation when a vector kernel may apply it, marking the fused work applied
 * (the caller must then apply it to every element of output 0); NULL when there is none or when
 * it must stay with the executor: a Clip whose bounds are unordered or NaN, where a clamp and
 * kx_activation_f32 would disagree, or a fused bias (post_bias), which only callers of
 * kx_take_post_bias apply. */
static inline const kx_activation *kx_take_post(kx_ctx *c) {
  const kx_activation *a = &c->node->post;
  if (c->node->post_bias || a->kind == KX_ACT_NONE || (a->kind == KX_ACT_CLIP && !(a->lo <= a->hi))) return NULL;
  c->post_applied = 1;
  return a;
}

/* For GEMMs whose output rows are `width` wide: takes the fused bias (one value per column, added
 * before the activation) and activation together, marking both applied; returns 0, taking
 * neither, when they must stay with the executor. */
static inline int kx_take_post_bias(kx_ctx *c, int64_t width, const float **bias, const kx_activation **act) {
  const kx_node *n = c->node;
  const kx_activation *a = &n->post;
  *bias = NULL;
  *act = NULL;
  if (a->kind == KX_ACT_CLIP && !(a->lo <= a->hi)) return 0;
  if (n->post_bias && (n->post_bias->dtype != KILN_FLOAT || kiln_tensor_numel(n->post_bias) != width)) return 0;
  *bias = n->post_bias ? n->post_bias->data : NULL;
  *act = a->kind != KX_ACT_NONE ? a : NULL;
  c->post_applied = 1;
  return 1;
}

/* a (not NULL) on eight floats. The operand order of max/min makes NaN, -0 and the bounds come
 * out exactly as kx_activation_f32's comparisons do. */
static inline __attribute__((always_inline)) __m256 kx_act_m256(const kx_activation *a, __m256 v) {
  switch (a->kind) {
  case KX_ACT_RELU: return _mm256_max_ps(v, _mm256_setzero_ps()); /* NaN -> 0, as v > 0 ? v : 0 */
  case KX_ACT_CLIP: return _mm256_min_ps(_mm256_set1_ps(a->hi), _mm256_max_ps(_mm256_set1_ps(a->lo), v));
  case KX_ACT_LEAKY_RELU: {
    __m256 keep = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GE_OQ);
    return _mm256_blendv_ps(_mm256_mul_ps(v, _mm256_set1_ps(a->alpha)), v, keep);
  }
  default: return v;
  }
}

/* The same on one float (a may be NULL). */
static inline float kx_act_f32(const kx_activation *a, float v) {
  if (a) kx_activation_f32(a, &v, 1);
  return v;
}

/* Columns of one packed panel of B, and the most columns a B packer is asked for at once. */
#define KX_GEMM_NR 16
#define KX_GEMM_NC 256

/* Packs rows [k0, k0+kc) and columns [j0, j0+nc) of B into panels of KX_GEMM_NR columns:
 * dst[p * kc * NR + k * NR + q] = B[k0 + k][j0 + p * NR + q], zero for columns past j0 + nc. */
typedef void (*kx_pack_b_fn)(const void *arg, int64_t k0, int64_t kc, int64_t j0, int64_t nc, float *dst);

/* C[M,N] = act(alpha * op(A)[M,K] . op(B)[K,N] + beta * C + row_bias[i] + col_bias[j]),
 * row-major with leading dimensions. beta 0 never reads C. When pack_b is set it supplies B (B,
 * ldb and trans_b are unused). Biases and the activation are optional (NULL); an activation comes
 * from kx_take_post. */
typedef struct kx_gemm {
  int64_t M, N, K;
  const float *A;
  int64_t lda;
  int trans_a;
  /* Instead of A: 16-bit elements (a16_bf16: bfloat16, else IEEE half), widened while packing;
   * the trainer's mixed precision keeps activations so. */
  const uint16_t *A16;
  int a16_bf16;
  const float *B;
  int64_t ldb;
  int trans_b;
  kx_pack_b_fn pack_b;
  const void *pack_b_arg;
  float alpha, beta;
  float *C;
  int64_t ldc;
  const float *row_bias, *col_bias;
  const kx_activation *act;
} kx_gemm;

/* Threads kx_gemm_run may use under c (1 when c is NULL). */
int kx_gemm_threads(const kx_ctx *c);
/* Bytes of workspace kx_gemm_run needs with up to `threads` threads. */
size_t kx_gemm_workspace(int threads);
/* Runs g. With a context it splits across up to kx_gemm_threads(c) threads; with c NULL it runs
 * on the caller (for kernels that parallelize over their own units). */
void kx_gemm_run(const kx_ctx *c, const kx_gemm *g, void *workspace);

/* C[M,N] = alpha * op(A)[M,K] . op(B)[K,N] + beta * C; row-major with leading dimensions. */
void kx_sgemm(const kx_ctx *c, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* The same for doubles: a plain loop on the caller (doubles are rare in inference graphs). */
void kx_dgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double *A, int64_t lda,
              const double *B, int64_t ldb, double beta, double *C, int64_t ldc);

#endif
