/* Single-precision GEMM for kernels.
 *
 * kx_gemm_run is kiln's own AVX2/FMA GEMM: 6x16 register tiles over packed panels of B, with the
 * bias and beta * C folded into the final store, a caller-supplied B packer (Conv packs straight
 * from the image, with no im2col buffer) and a matrix-vector path for single-row products. It
 * takes its packing memory from the caller (kx_scratch) and splits across kiln's pool.
 *
 * kx_sgemm is the simple entry point for families that need no workspace: the same kernels,
 * packing into smaller blocks on the stack. */
#ifndef KX_GEMM_H
#define KX_GEMM_H

#include "ops/op.h"

/* Columns of one packed panel of B, and the most columns a B packer is asked for at once. */
#define KX_GEMM_NR 16
#define KX_GEMM_NC 256

/* Packs rows [k0, k0+kc) and columns [j0, j0+nc) of B into panels of KX_GEMM_NR columns:
 * dst[p * kc * NR + k * NR + q] = B[k0 + k][j0 + p * NR + q], zero for columns past j0 + nc. */
typedef void (*kx_pack_b_fn)(const void *arg, int64_t k0, int64_t kc, int64_t j0, int64_t nc, float *dst);

/* C[M,N] = alpha * op(A)[M,K] . op(B)[K,N] + beta * C + row_bias[i] + col_bias[j], row-major
 * with leading dimensions. beta 0 never reads C. When pack_b is set it supplies B (B, ldb and
 * trans_b are unused). Biases are optional (NULL). */
typedef struct kx_gemm {
  int64_t M, N, K;
  const float *A;
  int64_t lda;
  int trans_a;
  const float *B;
  int64_t ldb;
  int trans_b;
  kx_pack_b_fn pack_b;
  const void *pack_b_arg;
  float alpha, beta;
  float *C;
  int64_t ldc;
  const float *row_bias, *col_bias;
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
