/* Optimizers of the ai.onnx.preview.training domain (opset 1): Adagrad, Adam, Momentum.
 *
 * Each takes the learning rate R and the update count T (scalars), then several tensors to update
 * as lists: all the X's, then all their gradients G, then each optimizer state in turn (Adagrad: H;
 * Adam: V, H; Momentum: V). Outputs are the updated X's followed by each updated state list. The
 * update is elementwise; it is computed in double and stored in the tensors' type. */
#include "ops/util.h"

#include <math.h>
#include <string.h>

#define TRAINING_DOMAIN "ai.onnx.preview.training"

/* Input lists (X, G, states); the outputs are one list fewer (X, states). */
static int input_lists(const char *op) { return !strcmp(op, "Adam") ? 4 : 3; }

static kiln_status optimizer_prepare(kx_node *n) {
  int lists = input_lists(n->op_type);
  if (n->n_in < 2 + lists || (n->n_in - 2) % lists || n->n_out != (n->n_in - 2) / lists * (lists - 1))
    return kiln_error(KILN_INVALID_ARGUMENT, "%s takes R, T and %d lists of tensors and returns %d lists: got %d inputs and %d outputs",
                      n->op_type, lists, lists - 1, n->n_in, n->n_out);
  if (!strcmp(n->op_type, "Momentum")) {
    const char *required[] = {"alpha", "beta", "mode", "norm_coefficient"};
    for (int i = 0; i < 4; i++)
      if (!kx_attr_has(n->proto, required[i]))
        return kiln_error(KILN_INVALID_ARGUMENT, "attribute '%s' is required", required[i]);
    char mode[16];
    kx_attr_string(n->proto, "mode", "", mode, sizeof mode);
    if (strcmp(mode, "standard") && strcmp(mode, "nesterov"))
      return kiln_error(KILN_INVALID_ARGUMENT, "mode must be 'standard' or 'nesterov', got '%s'", mode);
  }
  return NULL;
}

static inline double load(const kiln_tensor *t, int64_t i) {
  return t->dtype == KILN_FLOAT ? ((const float *)t->data)[i] : ((const double *)t->data)[i];
}

static inline void store(kiln_tensor *t, int64_t i, double v) {
  if (t->dtype == KILN_FLOAT) ((float *)t->data)[i] = (float)v;
  else ((double *)t->data)[i] = v;
}

/* One updated tensor: in[0] = X, in[1] = G, in[2..] = states; out[0] = X_new, out[1..] = states. */
typedef struct update {
  const kiln_tensor *in[4];
  kiln_tensor *out[3];
} update;

typedef void (*update_fn)(const kx_node *n, double r, int64_t t, const update *u, int64_t count);

/* Reads R and T, checks every list entry against its X (same dtype and shape), allocates the
 * outputs and applies fn to each updated tensor. */
static kiln_status optimizer_run(kx_ctx *c, update_fn fn) {
  const kx_node *node = c->node;
  int lists = input_lists(node->op_type), n = (node->n_in - 2) / lists;
  const kiln_tensor *rt, *tt;
  kiln_status s;
  if ((s = kx_require(c, 0, &rt)) || (s = kx_require(c, 1, &tt)) ||
      (s = kx_check_dtype(rt, 0, KX_BIT(KILN_FLOAT) | KX_BIT(KILN_DOUBLE))) ||
      (s = kx_check_dtype(tt, 1, KX_BIT(KILN_INT64))))
    return s;
  double r, t;
  if ((s = kx_read_scalar(rt, "R", &r)) || (s = kx_read_scalar(tt, "T", &t))) return s;
  for (int i = 0; i < n; i++) {
    update u;
    for (int l = 0; l < lists; l++) {
      if ((s = kx_require(c, 2 + l * n + i, &u.in[l]))) return s;
      if ((s = kx_check_dtype(u.in[l], 2 + l * n + i, KX_BIT(KILN_FLOAT) | KX_BIT(KILN_DOUBLE)))) return s;
      int same = u.in[l]->dtype == u.in[0]->dtype && u.in[l]->rank == u.in[0]->rank;
      for (int d = 0; same && d < u.in[0]->rank; d++) same = u.in[l]->dims[d] == u.in[0]->dims[d];
      if (!same) {
        char b1[96], b2[96];
        return kiln_error(KILN_INVALID_ARGUMENT, "input %d is %s, but the tensor it belongs to (input %d) is %s",
                          2 + l * n + i, kiln_tensor_describe(u.in[l], b1, sizeof b1), 2 + i,
                          kiln_tensor_describe(u.in[0], b2, sizeof b2));
      }
    }
    /* outputs: X_new, then the states (inputs 2.. of the list, skipping G) */
    for (int l = 0; l < lists - 1; l++)
      if ((s = kx_output(c, l * n + i, u.in[0]->dtype, u.in[0]->rank, u.in[0]->dims, &u.out[l]))) return s;
    fn(node, r, (int64_t)t, &u, kiln_tensor_numel(u.in[0]));
  }
  return NULL;
}

static void adagrad_update(const kx_node *n, double r, int64_t t, const update *u, int64_t count) {
  double norm = kx_attr_float(n->proto, "norm_coefficient", 0), eps = kx_attr_float(n->proto, "epsilon", 1e-6f);
  double rate = r / (1 + (double)t * kx_attr_float(n->proto, "decay_factor", 0));
  for (int64_t i = 0; i < count; i++) {
    double x = load(u->in[0], i), g = norm * x + load(u->in[1], i);
    double h = load(u->in[2], i) + g * g;
    store(u->out[0], i, x - rate * g / (sqrt(h) + eps));
    store(u->out[1], i, h);
  }
}

static void adam_update(const kx_node *n, double r, int64_t t, const update *u, int64_t count) {
  const Onnx__NodeProto *p = n->proto;
  double alpha = kx_attr_float(p, "alpha", 0.9f), beta = kx_attr_float(p, "beta", 0.999f);
  double eps = kx_attr_float(p, "epsilon", 1e-6f), norm = kx_attr_float(p, "norm_coefficient", 0);
  double post = kx_attr_float(p, "norm_coefficient_post", 0);
  /* bias correction of the averages, from the second update on */
  double rate = t > 0 ? r * sqrt(1 - pow(beta, (double)t)) / (1 - pow(alpha, (double)t)) : r;
  for (int64_t i = 0; i < count; i++) {
    double x = load(u->in[0], i), g = norm * x + load(u->in[1], i);
    double v = alpha * load(u->in[2], i) + (1 - alpha) * g;
    double h = beta * load(u->in[3], i) + (1 - beta) * g * g;
    store(u->out[0], i, (1 - post) * (x - rate * v / (sqrt(h) + eps)));
    store(u->out[1], i, v);
    store(u->out[2], i, h);
  }
}

static void momentum_update(const kx_node *n, double r, int64_t t, const update *u, int64_t count) {
  const Onnx__NodeProto *p = n->proto;
  double alpha = kx_attr_float(p, "alpha", 0), norm = kx_attr_float(p, "norm_coefficient", 0);
  double beta = t > 0 ? kx_attr_float(p, "beta", 0) : 1; /* the first update takes the whole gradient */
  char mode[16];
  int nesterov = !strcmp(kx_attr_string(p, "mode", "", mode, sizeof mode), "nesterov");
  for (int64_t i = 0; i < count; i++) {
    double x = load(u->in[0], i), g = norm * x + load(u->in[1], i);
    double v = alpha * load(u->in[2], i) + beta * g;
    store(u->out[0], i, x - r * (nesterov ? g + alpha * v : v));
    store(u->out[1], i, v);
  }
}

static kiln_status adagrad_run(kx_ctx *c) { return optimizer_run(c, adagrad_update); }
static kiln_status adam_run(kx_ctx *c) { return optimizer_run(c, adam_update); }
static kiln_status momentum_run(kx_ctx *c) { return optimizer_run(c, momentum_update); }

const kx_op kx_ops_training[] = {
    {TRAINING_DOMAIN, "Adagrad", 1, 0, optimizer_prepare, adagrad_run, NULL, 0},
    {TRAINING_DOMAIN, "Adam", 1, 0, optimizer_prepare, adam_run, NULL, 0},
    {TRAINING_DOMAIN, "Momentum", 1, 0, optimizer_prepare, momentum_run, NULL, 0},
    {0},
};
