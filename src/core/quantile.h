/* Nearest-rank quantiles of samples (internal to kiln): the latency figures of kiln bench, the
 * validation gate and the canary's judgement are all read this one way. */
#ifndef KILN_CORE_QUANTILE_H
#define KILN_CORE_QUANTILE_H

#include <stddef.h>

/* Sorts n doubles ascending. */
void kx_sort_doubles(double *x, size_t n);
/* The smallest of the ascending samples with at least the fraction q (0..1) of them at or below
 * it (rank ceil(q n), at least 1); NaN when n is 0. */
double kx_quantile_sorted(const double *sorted, size_t n, double q);

#endif
