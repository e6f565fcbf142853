/* Single-precision GEMM for kernels: OpenBLAS, split across kiln's pool (OpenBLAS's own threads
 * are turned off so the two never oversubscribe the cores). */
#ifndef KX_GEMM_H
#define KX_GEMM_H

#include "ops/op.h"

/* C[M,N] = alpha * op(A)[M,K] . op(B)[K,N] + beta * C; row-major with leading dimensions. */
void kx_sgemm(const kx_ctx *c, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* The same for doubles (no splitting: doubles are rare in inference graphs). */
void kx_dgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double *A, int64_t lda,
              const double *B, int64_t ldb, double beta, double *C, int64_t ldc);

#endif
