/* Tensor comparison with numpy's allclose semantics: the check behind the conformance runner,
 * the reference tests and golden outputs. */
#include "kiln/core.h"

#include <math.h>
#include <string.h>

/* How far element i is outside the tolerance: <= 0 when it matches. Integers and bools must be
 * equal (tolerance 0), int64/uint64 and strings exactly (INFINITY when they differ), NaN matches
 * NaN and an infinity the same infinity (INFINITY otherwise). */
static double element_excess(const kiln_tensor *got, const kiln_tensor *want, int64_t i, double rtol, double atol) {
  if (got->dtype == KILN_STRING) {
    const char *x = ((char *const *)got->data)[i], *y = ((char *const *)want->data)[i];
    return strcmp(x ? x : "", y ? y : "") != 0 ? INFINITY : 0;
  }
  if (got->dtype == KILN_INT64 || got->dtype == KILN_UINT64) /* exact, beyond double's 53 bits */
    return memcmp((const char *)got->data + i * 8, (const char *)want->data + i * 8, 8) != 0 ? INFINITY : 0;
  double x = kiln_tensor_get_f64(got, i), y = kiln_tensor_get_f64(want, i);
  if (isnan(x) || isnan(y)) return isnan(x) && isnan(y) ? 0 : INFINITY;
  if (isinf(x) || isinf(y)) return x == y ? 0 : INFINITY;
  double tol = kiln_dtype_is_float(got->dtype) ? atol + rtol * fabs(y) : 0;
  return fabs(x - y) - tol;
}

static int same_shape(const kiln_tensor *a, const kiln_tensor *b) {
  if (a->dtype != b->dtype || a->rank != b->rank) return 0;
  for (int d = 0; d < a->rank; d++)
    if (a->dims[d] != b->dims[d]) return 0;
  return 1;
}

int64_t kiln_tensor_first_mismatch(const kiln_tensor *got, const kiln_tensor *want, double rtol, double atol) {
  if (!same_shape(got, want)) return -1;
  int64_t n = kiln_tensor_numel(got);
  for (int64_t i = 0; i < n; i++)
    if (element_excess(got, want, i, rtol, atol) > 0) return i;
  return -1;
}

kiln_status kiln_tensor_compare(const kiln_tensor *got, const kiln_tensor *want, double rtol, double atol) {
  char a[128], b[128];
  if (!same_shape(got, want))
    return kiln_error(KILN_INVALID_ARGUMENT, "got %s, expected %s", kiln_tensor_describe(got, a, sizeof a),
                      kiln_tensor_describe(want, b, sizeof b));
  int64_t n = kiln_tensor_numel(got), bad = 0, worst = -1;
  double worst_excess = -1;
  for (int64_t i = 0; i < n; i++) {
    double excess = element_excess(got, want, i, rtol, atol);
    if (excess <= 0) continue;
    if (excess > worst_excess) { /* strictly: the first of several non-finite mismatches is reported */
      worst_excess = excess;
      worst = i;
    }
    bad++;
  }
  if (!bad) return NULL;
  if (got->dtype == KILN_STRING)
    return kiln_error(KILN_INVALID_ARGUMENT, "%lld of %lld strings differ; first at %lld: got '%s', expected '%s'", (long long)bad,
                      (long long)n, (long long)worst, ((char *const *)got->data)[worst], ((char *const *)want->data)[worst]);
  return kiln_error(KILN_INVALID_ARGUMENT, "%lld of %lld elements differ (rtol %g, atol %g); worst at flat index %lld: got %.9g, expected %.9g",
                    (long long)bad, (long long)n, rtol, atol, (long long)worst, kiln_tensor_get_f64(got, worst),
                    kiln_tensor_get_f64(want, worst));
}

kiln_status kiln_value_compare(const kiln_value *got, const kiln_value *want, double rtol, double atol) {
  static const char *kinds[] = {"a tensor", "a sequence", "an empty optional"};
  if (got->kind != want->kind)
    return kiln_error(KILN_INVALID_ARGUMENT, "got %s, expected %s", kinds[got->kind], kinds[want->kind]);
  if (got->kind == KILN_VALUE_TENSOR) return kiln_tensor_compare(&got->tensor, &want->tensor, rtol, atol);
  if (got->kind == KILN_VALUE_NONE) return NULL;
  if (got->count != want->count)
    return kiln_error(KILN_INVALID_ARGUMENT, "sequence has %zu items, expected %zu", got->count, want->count);
  for (size_t i = 0; i < got->count; i++) {
    kiln_status s = kiln_tensor_compare(&got->items[i], &want->items[i], rtol, atol);
    if (s) return kiln_status_prefix(s, "sequence item %zu: ", i);
  }
  return NULL;
}
