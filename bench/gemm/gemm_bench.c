/* kiln_gemm_bench: kiln's own GEMM (src/ops/gemm.c) against OpenBLAS's cblas_sgemm, side by side
 * in one process, on the matrix shapes the benchmark models spend their time in.
 *
 *   kiln_gemm_bench [--threads N] [--seconds S]
 *
 * Both get the same threads: kiln its pool, OpenBLAS openblas_set_num_threads. Each shape is
 * timed in alternating rounds (kiln, then OpenBLAS) and the median of each side is kept; the last
 * column is OpenBLAS's time over kiln's (above 1: kiln is faster). The results of the two are
 * compared as well, so that a fast wrong kernel cannot pass for a fast one. */
#include "ops/gemm.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void openblas_set_num_threads(int);

#define ROUNDS 5

typedef struct shape {
  const char *what;
  int64_t M, N, K;
} shape;

static const shape SHAPES[] = {
    {"mlp fc1 b1 (GEMV)", 1, 128, 784},
    {"mlp fc1 b64", 64, 128, 784},
    {"resnet18 conv 3x3x64 @56x56", 64, 3136, 576},
    {"resnet18 conv 3x3x256 @14x14", 256, 196, 2304},
    {"resnet18 conv 3x3x512 @7x7", 512, 49, 4608},
    {"mobilenetv2 1x1 96->576 @14x14", 576, 196, 96},
    {"transformer qkv 512x512, 256 tokens", 256, 512, 512},
    {"transformer ffn 512->2048, 256 tokens", 256, 2048, 512},
    {"square 1024", 1024, 1024, 1024},
};

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, n, sizeof *v, cmp_double);
  return v[n / 2];
}

typedef struct problem {
  const shape *s;
  float *A, *B, *C;
  kx_ctx *ctx;
  void *ws;
} problem;

static void run_kiln(const problem *p) {
  kx_gemm g = {.M = p->s->M, .N = p->s->N, .K = p->s->K, .A = p->A, .lda = p->s->K, .B = p->B, .ldb = p->s->N,
               .alpha = 1, .beta = 0, .C = p->C, .ldc = p->s->N};
  kx_gemm_run(p->ctx, &g, p->ws);
}

static void run_openblas(const problem *p) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, p->s->M, p->s->N, p->s->K, 1, p->A, p->s->K, p->B, p->s->N,
              0, p->C, p->s->N);
}

/* Seconds per call of f, over as many calls as fill `budget` seconds (at least 3). */
static double time_calls(void (*f)(const problem *), const problem *p, double budget) {
  f(p);
  int calls = 0;
  double t0 = now(), t;
  do {
    f(p);
    calls++;
    t = now() - t0;
  } while (t < budget || calls < 3);
  return t / calls;
}

int main(int argc, char **argv) {
  int threads = 0;
  double seconds = 0.2;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
    else {
      fprintf(stderr, "usage: %s [--threads N] [--seconds S]\n", argv[0]);
      return !!strcmp(argv[i], "--help") * 2;
    }
  }
  kiln_pool *pool;
  kiln_status st = kiln_pool_create(threads, &pool);
  if (st) {
    fprintf(stderr, "kiln_gemm_bench: %s\n", kiln_status_message(st));
    return 1;
  }
  threads = kiln_pool_threads(pool);
  openblas_set_num_threads(threads);
  kx_ctx ctx = {.pool = pool, .threads = threads};

  printf("threads %d, median of %d rounds of %.2f s each side\n", threads, ROUNDS, seconds);
  printf("%-40s %6s %6s %6s %10s %10s %8s\n", "shape", "M", "N", "K", "kiln GF/s", "BLAS GF/s", "ratio");
  double log_sum = 0;
  int bad = 0, n_shapes = (int)(sizeof SHAPES / sizeof *SHAPES);
  for (int i = 0; i < n_shapes; i++) {
    const shape *s = &SHAPES[i];
    problem p = {.s = s, .ctx = &ctx};
    p.A = malloc(sizeof(float) * s->M * s->K);
    p.B = malloc(sizeof(float) * s->K * s->N);
    p.C = malloc(sizeof(float) * s->M * s->N);
    float *ref = malloc(sizeof(float) * s->M * s->N);
    p.ws = malloc(kx_gemm_workspace(threads));
    if (!p.A || !p.B || !p.C || !ref || !p.ws) {
      fprintf(stderr, "kiln_gemm_bench: out of memory\n");
      return 1;
    }
    srand(7 + i);
    for (int64_t j = 0; j < s->M * s->K; j++) p.A[j] = (float)rand() / RAND_MAX - 0.5f;
    for (int64_t j = 0; j < s->K * s->N; j++) p.B[j] = (float)rand() / RAND_MAX - 0.5f;

    run_openblas(&p);
    memcpy(ref, p.C, sizeof(float) * s->M * s->N);
    run_kiln(&p);
    double worst = 0;
    for (int64_t j = 0; j < s->M * s->N; j++) worst = fmax(worst, fabs(p.C[j] - ref[j]) / (1 + fabs(ref[j])));
    if (worst > 1e-4) {
      fprintf(stderr, "kiln_gemm_bench: %s: kiln and OpenBLAS differ by %g\n", s->what, worst);
      bad = 1;
    }

    double tk[ROUNDS], tb[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
      tk[r] = time_calls(run_kiln, &p, seconds);
      tb[r] = time_calls(run_openblas, &p, seconds);
    }
    double flop = 2.0 * s->M * s->N * s->K, k = median(tk, ROUNDS), b = median(tb, ROUNDS);
    printf("%-40s %6lld %6lld %6lld %10.1f %10.1f %8.2f\n", s->what, (long long)s->M, (long long)s->N,
           (long long)s->K, flop / k * 1e-9, flop / b * 1e-9, b / k);
    log_sum += log(b / k);
    free(p.A), free(p.B), free(p.C), free(ref), free(p.ws);
  }
  printf("geometric mean ratio (OpenBLAS time / kiln time): %.2f\n", exp(log_sum / n_shapes));
  kiln_pool_free(pool);
  return bad;
}
