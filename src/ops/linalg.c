/* Linear algebra: Det. */
#include "ops/util.h"

#include <math.h>
#include <string.h>

typedef struct det_job {
  const kiln_tensor *x;
  kiln_tensor *y;
  int64_t n, count, chunks;
  double *work; /* chunks * n * n doubles */
} det_job;

/* Determinant of the n x n matrix a (overwritten) by LU decomposition with partial pivoting. */
static double lu_det(double *a, int64_t n) {
  double det = 1;
  for (int64_t k = 0; k < n; k++) {
    int64_t p = k;
    for (int64_t i = k + 1; i < n; i++)
      if (fabs(a[i * n + k]) > fabs(a[p * n + k])) p = i;
    if (a[p * n + k] == 0) return 0;
    if (p != k) {
      for (int64_t j = k; j < n; j++) {
        double t = a[k * n + j];
        a[k * n + j] = a[p * n + j], a[p * n + j] = t;
      }
      det = -det;
    }
    double pivot = a[k * n + k];
    det *= pivot;
    for (int64_t i = k + 1; i < n; i++) {
      double f = a[i * n + k] / pivot;
      for (int64_t j = k + 1; j < n; j++) a[i * n + j] -= f * a[k * n + j];
    }
  }
  return det;
}

static void det_chunks(void *arg, int64_t begin, int64_t end) {
  const det_job *j = arg;
  const int64_t nn = j->n * j->n;
  for (int64_t chunk = begin; chunk < end; chunk++) {
    double *a = j->work + chunk * nn;
    for (int64_t m = chunk * j->count / j->chunks; m < (chunk + 1) * j->count / j->chunks; m++) {
      for (int64_t i = 0; i < nn; i++) a[i] = kiln_tensor_get_f64(j->x, m * nn + i);
      kx_set_f64(j->y, m, lu_det(a, j->n));
    }
  }
}

static kiln_status det_run(kx_ctx *c) {
  const kiln_tensor *x;
  kiln_status s;
  if ((s = kx_require(c, 0, &x)) || (s = kx_check_dtype(x, 0, KX_FLOATS))) return s;
  if (x->rank < 2 || x->dims[x->rank - 1] != x->dims[x->rank - 2]) {
    char b[96];
    return kiln_error(KILN_INVALID_ARGUMENT, "input must be [..., M, M], got %s", kiln_tensor_describe(x, b, sizeof b));
  }
  kiln_tensor *y;
  if ((s = kx_output(c, 0, x->dtype, x->rank - 2, x->dims, &y))) return s;
  det_job j = {x, y, x->dims[x->rank - 1], kiln_tensor_numel(y), 1, NULL};
  if (j.count == 0) return NULL;
  j.chunks = j.count < c->threads ? j.count : c->threads;
  if (j.chunks < 1) j.chunks = 1;
  j.work = kx_scratch(c, (size_t)(j.chunks * j.n * j.n) * sizeof(double));
  if (!j.work) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for %lldx%lld matrices", (long long)j.n, (long long)j.n);
  double per_chunk = (double)j.count / (double)j.chunks * (double)(j.n * j.n * (j.n + 2));
  kx_parallel(c, j.chunks, per_chunk, det_chunks, &j);
  return NULL;
}

const kx_op kx_ops_linalg[] = {
    {"", "Det", 11, 0, NULL, det_run, NULL, 0},
    {0},
};
