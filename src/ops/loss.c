/* Loss kernels: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss over scores [N, C, d1..dk]
 * and targets [N, d1..dk], with class weights, ignore_index and reduction none / sum / mean
 * (mean divides by the total weight of the targets counted, as ONNX's reference does). Both are
 * training-time operators, so the work is done plainly in double and narrowed at the end. */
#include "ops/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef enum { REDUCE_NONE, REDUCE_SUM, REDUCE_MEAN } reduction;

typedef struct loss_params {
  reduction reduce;
  int has_ignore;
  int64_t ignore;
} loss_params;

static kiln_status loss_prepare(kx_node *n) {
  char name[16];
  kx_attr_string(n->proto, "reduction", "mean", name, sizeof name);
  loss_params p = {.has_ignore = kx_attr_has(n->proto, "ignore_index"), .ignore = kx_attr_int(n->proto, "ignore_index", 0)};
  if (strcmp(name, "none") == 0) p.reduce = REDUCE_NONE;
  else if (strcmp(name, "sum") == 0) p.reduce = REDUCE_SUM;
  else if (strcmp(name, "mean") == 0) p.reduce = REDUCE_MEAN;
  else return kiln_error(KILN_INVALID_ARGUMENT, "reduction must be 'none', 'sum' or 'mean', got '%s'", name);
  loss_params *out = malloc(sizeof *out);
  if (!out) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  *out = p;
  n->params = out;
  return NULL;
}

static void widen(const kiln_tensor *t, double *out) {
  int64_t n = kiln_tensor_numel(t);
  switch (t->dtype) {
  case KILN_DOUBLE:
    if (n) memcpy(out, t->data, (size_t)n * sizeof *out);
    break;
  case KILN_FLOAT:
    for (int64_t i = 0; i < n; i++) out[i] = ((const float *)t->data)[i];
    break;
  case KILN_FLOAT16:
    for (int64_t i = 0; i < n; i++) out[i] = kiln_half_to_float(((const uint16_t *)t->data)[i]);
    break;
  default: /* bfloat16 */
    for (int64_t i = 0; i < n; i++) out[i] = kiln_bfloat16_to_float(((const uint16_t *)t->data)[i]);
  }
}

static void narrow(const double *src, kiln_tensor *y) {
  int64_t n = kiln_tensor_numel(y);
  switch (y->dtype) {
  case KILN_DOUBLE:
    if (n) memcpy(y->data, src, (size_t)n * sizeof *src);
    break;
  case KILN_FLOAT:
    for (int64_t i = 0; i < n; i++) ((float *)y->data)[i] = (float)src[i];
    break;
  case KILN_FLOAT16:
    for (int64_t i = 0; i < n; i++) ((uint16_t *)y->data)[i] = kiln_float_to_half((float)src[i]);
    break;
  default: /* bfloat16 */
    for (int64_t i = 0; i < n; i++) ((uint16_t *)y->data)[i] = kiln_float_to_bfloat16((float)src[i]);
  }
}

/* The checked inputs and the computation's layout: scores as [n, c, d] with d the product of the
 * trailing dimensions. */
typedef struct loss_inputs {
  const kiln_tensor *x, *target, *weight;
  int64_t n, c, d;
} loss_inputs;

static kiln_status check_inputs(const kx_ctx *c, loss_inputs *in) {
  kiln_status s;
  if ((s = kx_require(c, 0, &in->x)) || (s = kx_require(c, 1, &in->target)) || (s = kx_check_dtype(in->x, 0, KX_FLOATS))) return s;
  const kiln_tensor *x = in->x, *t = in->target, *w = in->weight = kx_input(c, 2);
  char a[96], b[96];
  if (x->rank < 2) return kiln_error(KILN_INVALID_ARGUMENT, "input 0 must be [N, C, ...], got %s", kiln_tensor_describe(x, a, sizeof a));
  if (t->dtype != KILN_INT64 && t->dtype != KILN_INT32)
    return kiln_error(KILN_INVALID_ARGUMENT, "the target must be int32 or int64, got %s", kiln_dtype_name(t->dtype));
  int fits = t->rank == x->rank - 1 && t->dims[0] == x->dims[0];
  for (int k = 1; fits && k < t->rank; k++) fits = t->dims[k] == x->dims[k + 1];
  if (!fits)
    return kiln_error(KILN_INVALID_ARGUMENT, "the target %s does not match the scores %s (expected the scores' shape without dimension 1)",
                      kiln_tensor_describe(t, a, sizeof a), kiln_tensor_describe(x, b, sizeof b));
  if (w && (w->dtype != x->dtype || w->rank != 1 || w->dims[0] != x->dims[1]))
    return kiln_error(KILN_INVALID_ARGUMENT, "the weight must be %s[%lld] (one per class), got %s", kiln_dtype_name(x->dtype),
                      (long long)x->dims[1], kiln_tensor_describe(w, a, sizeof a));
  in->n = x->dims[0];
  in->c = x->dims[1];
  in->d = kx_prod(x->dims, 2, x->rank);
  return NULL;
}

/* Scratch for one run: the widened (log-)probabilities, the class weights and the losses. */
typedef struct loss_work {
  double *logp, *weight, *loss;
} loss_work;

static kiln_status work_init(kx_ctx *c, const loss_inputs *in, loss_work *w) {
  size_t nx = (size_t)(in->n * in->c * in->d), nl = (size_t)(in->n * in->d);
  double *mem = kx_scratch(c, (nx + (size_t)in->c + nl + 1) * sizeof *mem);
  if (!mem) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  w->logp = mem;
  w->weight = mem + nx;
  w->loss = w->weight + in->c;
  widen(in->x, w->logp);
  if (in->weight) widen(in->weight, w->weight);
  else
    for (int64_t k = 0; k < in->c; k++) w->weight[k] = 1;
  return NULL;
}

/* loss[n, d] = -logp[n, target, d] * weight[target], 0 where the target is ignore_index; then
 * the reduction into output 0. */
static kiln_status nll(kx_ctx *c, const loss_inputs *in, loss_work *w) {
  const loss_params *p = c->node->params;
  const kiln_tensor *t = in->target;
  double total = 0, weights = 0;
  for (int64_t n = 0; n < in->n; n++)
    for (int64_t d = 0; d < in->d; d++) {
      int64_t i = n * in->d + d;
      int64_t k = t->dtype == KILN_INT64 ? ((const int64_t *)t->data)[i] : ((const int32_t *)t->data)[i];
      w->loss[i] = 0;
      if (p->has_ignore && k == p->ignore) continue;
      if (k < 0 || k >= in->c)
        return kiln_error(KILN_INVALID_ARGUMENT, "target value %lld (element %lld) is not a class in 0..%lld", (long long)k,
                          (long long)i, (long long)in->c - 1);
      w->loss[i] = -w->logp[(n * in->c + k) * in->d + d] * w->weight[k];
      total += w->loss[i];
      weights += w->weight[k];
    }
  kiln_tensor *y;
  kiln_status s;
  if (p->reduce == REDUCE_NONE) {
    if ((s = kx_output(c, 0, in->x->dtype, t->rank, t->dims, &y))) return s;
    narrow(w->loss, y);
    return NULL;
  }
  if ((s = kx_output(c, 0, in->x->dtype, 0, NULL, &y))) return s;
  double v = p->reduce == REDUCE_SUM ? total : total / weights; /* no counted target: 0/0, NaN as in the reference */
  narrow(&v, y);
  return NULL;
}

static kiln_status nll_run(kx_ctx *c) {
  loss_inputs in;
  loss_work w;
  kiln_status s;
  if ((s = check_inputs(c, &in)) || (s = work_init(c, &in, &w))) return s;
  return nll(c, &in, &w);
}

/* log_softmax over the class dimension, in place on [n, c, d]. */
static void log_softmax(double *v, int64_t n, int64_t c, int64_t d) {
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < d; j++) {
      double *row = v + i * c * d + j;
      double max = -INFINITY, sum = 0;
      for (int64_t k = 0; k < c; k++) max = row[k * d] > max ? row[k * d] : max;
      for (int64_t k = 0; k < c; k++) sum += exp(row[k * d] - max);
      double shift = max + log(sum);
      for (int64_t k = 0; k < c; k++) row[k * d] -= shift;
    }
}

static kiln_status sce_run(kx_ctx *c) {
  loss_inputs in;
  loss_work w;
  kiln_status s;
  if ((s = check_inputs(c, &in)) || (s = work_init(c, &in, &w))) return s;
  log_softmax(w.logp, in.n, in.c, in.d);
  if (kx_has_output(c, 1)) {
    kiln_tensor *y;
    if ((s = kx_output(c, 1, in.x->dtype, in.x->rank, in.x->dims, &y))) return s;
    narrow(w.logp, y);
  }
  return nll(c, &in, &w);
}

const kx_op kx_ops_loss[] = {
    {"", "NegativeLogLikelihoodLoss", 12, 0, loss_prepare, nll_run, NULL, 0},
    {"", "SoftmaxCrossEntropyLoss", 12, 0, loss_prepare, sce_run, NULL, 0},
    {0},
};
