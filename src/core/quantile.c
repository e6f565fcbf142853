/* Nearest-rank quantiles of samples. */
#include "core/quantile.h"

#include <math.h>
#include <stdlib.h>

static int ascending(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

void kx_sort_doubles(double *x, size_t n) {
  if (n > 1) qsort(x, n, sizeof *x, ascending);
}

double kx_quantile_sorted(const double *sorted, size_t n, double q) {
  if (n == 0) return NAN;
  double rank = ceil(q * (double)n);
  if (rank < 1) rank = 1;
  if (rank > (double)n) rank = (double)n;
  return sorted[(size_t)rank - 1];
}
