/* GEMM through OpenBLAS, parallelized by kiln's pool over rows (or columns when there are few
 * rows). OpenBLAS runs single-threaded inside each call. */
#include "ops/gemm.h"

#include <cblas.h>
#include <pthread.h>

static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
static void blas_single_threaded(void) { openblas_set_num_threads(1); }

typedef struct gemm_job {
  int trans_a, trans_b, by_rows;
  int64_t M, N, K, lda, ldb, ldc;
  float alpha, beta;
  const float *A, *B;
  float *C;
} gemm_job;

static void gemm_range(void *arg, int64_t begin, int64_t end) {
  const gemm_job *j = arg;
  enum CBLAS_TRANSPOSE ta = j->trans_a ? CblasTrans : CblasNoTrans, tb = j->trans_b ? CblasTrans : CblasNoTrans;
  if (j->by_rows) {
    const float *A = j->trans_a ? j->A + begin : j->A + begin * j->lda;
    cblas_sgemm(CblasRowMajor, ta, tb, (int)(end - begin), (int)j->N, (int)j->K, j->alpha, A, (int)j->lda, j->B,
                (int)j->ldb, j->beta, j->C + begin * j->ldc, (int)j->ldc);
  } else {
    const float *B = j->trans_b ? j->B + begin * j->ldb : j->B + begin;
    cblas_sgemm(CblasRowMajor, ta, tb, (int)j->M, (int)(end - begin), (int)j->K, j->alpha, j->A, (int)j->lda, B,
                (int)j->ldb, j->beta, j->C + begin, (int)j->ldc);
  }
}

void kx_sgemm(const kx_ctx *c, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  pthread_once(&blas_once, blas_single_threaded);
  if (M == 0 || N == 0) return;
  gemm_job j = {trans_a, trans_b, 1, M, N, K, lda, ldb, ldc, alpha, beta, A, B, C};
  int threads = c ? kiln_pool_threads(c->pool) : 1;
  if (c && c->threads > 0 && c->threads < threads) threads = c->threads;
  if (K == 0) { /* BLAS leaves C untouched when K is 0 only if beta is 1; do it by hand */
    for (int64_t i = 0; i < M; i++)
      for (int64_t k = 0; k < N; k++) C[i * ldc + k] = beta == 0 ? 0 : beta * C[i * ldc + k];
    return;
  }
  /* split the larger side, in blocks that keep the BLAS micro-kernels busy */
  j.by_rows = M >= 4 * threads || M >= N;
  if (!c || threads <= 1) {
    gemm_range(&j, 0, j.by_rows ? M : N);
    return;
  }
  if (j.by_rows) kiln_parallel_for(c->pool, threads, M, 2.0 * (double)N * (double)K, gemm_range, &j);
  else kiln_parallel_for(c->pool, threads, N, 2.0 * (double)M * (double)K, gemm_range, &j);
}

void kx_dgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double *A, int64_t lda,
              const double *B, int64_t ldb, double beta, double *C, int64_t ldc) {
  pthread_once(&blas_once, blas_single_threaded);
  if (M == 0 || N == 0) return;
  if (K == 0) {
    for (int64_t i = 0; i < M; i++)
      for (int64_t k = 0; k < N; k++) C[i * ldc + k] = beta == 0 ? 0 : beta * C[i * ldc + k];
    return;
  }
  cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, (int)M, (int)N,
              (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}
