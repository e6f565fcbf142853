/* binary kernels (placeholder: float Add only, until the family lands). */
#include "ops/util.h"

typedef struct add_job {
  const float *a, *b;
  float *y;
} add_job;

static void add_range(void *arg, int64_t begin, int64_t end) {
  const add_job *j = arg;
  for (int64_t i = begin; i < end; i++) j->y[i] = j->a[i] + j->b[i];
}

static kiln_status add_run(kx_ctx *c) {
  const kiln_tensor *a, *b;
  kiln_status s;
  if ((s = kx_require(c, 0, &a)) || (s = kx_require(c, 1, &b))) return s;
  if (a->dtype != KILN_FLOAT || b->dtype != KILN_FLOAT || a->rank != b->rank)
    return kiln_error(KILN_UNIMPLEMENTED, "placeholder Add");
  for (int d = 0; d < a->rank; d++)
    if (a->dims[d] != b->dims[d]) return kiln_error(KILN_UNIMPLEMENTED, "placeholder Add");
  kiln_tensor *y;
  if ((s = kx_output(c, 0, KILN_FLOAT, a->rank, a->dims, &y))) return s;
  add_job j = {a->data, b->data, y->data};
  kx_parallel(c, kiln_tensor_numel(a), 1, add_range, &j);
  return NULL;
}

const kx_op kx_ops_binary[] = {
    {"", "Add", 1, 0, NULL, add_run, NULL, 0},
    {0},
};
