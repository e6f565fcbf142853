/* The kernel interface: what an operator implementation sees of a node and of a run.
 *
 * Each op family (src/ops/<family>.c) defines a table `const kx_op kx_ops_<family>[]` ending in
 * an all-zero entry, listed in src/ops/registry.c. A kernel is one `run` function that checks its
 * inputs, computes its output shapes, asks the executor for output buffers (kx_output) and fills
 * them. Where outputs live is the executor's business: on the first run with given input shapes
 * they are allocated one by one; afterwards they come from a planned arena, so a kernel never
 * allocates in the hot path (use kx_scratch for temporary memory, once per run of the node).
 *
 * Kernels must not write to their inputs, keep pointers to them past the call, or touch files. */
#ifndef KX_OP_H
#define KX_OP_H

#include "kiln/core.h"
#include "onnx/onnx.h"

typedef struct kx_graph kx_graph; /* a compiled (sub)graph; opaque outside the graph layer */
typedef struct kx_ctx kx_ctx;
typedef struct kx_node kx_node;

/* A pointwise activation fused into the node that produces its input: Conv -> Relu runs as one
 * Conv node whose kernel applies the activation to output 0 while the data is hot (in registers
 * or cache), instead of a second pass over memory. */
typedef enum kx_act_kind { KX_ACT_NONE = 0, KX_ACT_RELU, KX_ACT_CLIP, KX_ACT_LEAKY_RELU } kx_act_kind;
typedef struct kx_activation {
  kx_act_kind kind;
  float lo, hi; /* KX_ACT_CLIP: the bounds (-inf / +inf when absent) */
  float alpha;  /* KX_ACT_LEAKY_RELU: the slope below 0 */
} kx_activation;

typedef struct kx_op {
  const char *domain; /* "" for the default ai.onnx domain */
  const char *name;
  int since, until;   /* opset versions of `domain` this entry serves; until 0 = no upper bound */
  /* Optional: validates attributes and constant inputs at load time and may store a parsed form
   * in n->params (freed with free(), or with release when set). Errors name what is wrong. */
  kiln_status (*prepare)(kx_node *n);
  kiln_status (*run)(kx_ctx *c);
  void (*release)(void *params);
  /* Output 0 always views input 0's buffer (Reshape, Squeeze, Identity...): the kernel calls
   * kx_output_view for it instead of kx_output, and the planner extends input 0's lifetime. */
  int view_output;
  /* The graph compiler may fuse a following activation (n->post) and, for MatMul, a bias
   * (n->post_bias) into this node. The kernel applies them where it can while writing output 0
   * and then sets c->post_applied; otherwise the executor applies them to output 0 after the
   * kernel returns. */
  int fuse_activation;
  /* For activation ops: whether this node can run as `out` inside its producer (Relu, LeakyRelu,
   * Clip with constant float bounds). */
  int (*as_activation)(const kx_node *n, kx_activation *out);
  /* Outputs may differ between runs with equal inputs (random ops): never folded at load. */
  int nondeterministic;
} kx_op;

struct kx_node {
  const kx_op *op;
  const Onnx__NodeProto *proto; /* attributes: kx_attr_*(n->proto, ...) */
  const char *op_type;
  const char *domain;
  const char *name; /* "" when the model gives none */
  int index;        /* position in the graph's node list, for messages */
  int opset;        /* the version of this node's domain that the model imports */
  int n_in, n_out;
  const int *in, *out;        /* value ids; -1 for an absent optional input/output */
  const kiln_tensor **consts; /* [n_in]: the input's tensor when it is a constant, else NULL */
  void *params;               /* set by prepare */
  int n_subgraphs;
  const char **subgraph_names; /* the graph attributes, compiled: "then_branch", "body", ... */
  kx_graph **subgraphs;
  /* Fused into output 0, in this order: a constant float bias added along the last axis (a
   * MatMul's Add), then an activation. */
  const kiln_tensor *post_bias;
  kx_activation post; /* kind KX_ACT_NONE: none */
};

/* What the executor offers a running kernel. Reached through the inline helpers below. */
typedef struct kx_exec_api {
  kiln_status (*output)(kx_ctx *c, int i, kiln_dtype dtype, int rank, const int64_t *dims, kiln_tensor **out);
  kiln_status (*output_view)(kx_ctx *c, int i, int rank, const int64_t *dims, kiln_tensor **out);
  kiln_value *(*output_value)(kx_ctx *c, int i);
  void *(*scratch)(kx_ctx *c, size_t bytes);
  int (*graph_input_count)(const kx_graph *g);
  int (*graph_output_count)(const kx_graph *g);
  kiln_status (*run_graph)(kx_ctx *c, const kx_graph *g, const kiln_value *const *inputs, int n,
                           const kiln_value **outputs);
} kx_exec_api;

struct kx_ctx {
  const kx_node *node;
  const kiln_value *const *in; /* [node->n_in]; NULL for absent inputs */
  const kx_exec_api *api;
  void *exec; /* the executor's own state */
  kiln_pool *pool;
  int threads;      /* the most threads this run may use */
  int post_applied; /* set by a kernel that applied node->post itself */
};

/* Input i as a tensor; NULL when absent (or when it is a sequence / empty optional). */
static inline const kiln_tensor *kx_input(const kx_ctx *c, int i) {
  if (i < 0 || i >= c->node->n_in || !c->in[i] || c->in[i]->kind != KILN_VALUE_TENSOR) return NULL;
  return &c->in[i]->tensor;
}
static inline const kiln_value *kx_input_value(const kx_ctx *c, int i) {
  return i >= 0 && i < c->node->n_in ? c->in[i] : NULL;
}
/* Whether the node's output i is consumed (kernels may skip work for absent optional outputs). */
static inline int kx_has_output(const kx_ctx *c, int i) {
  return i >= 0 && i < c->node->n_out && c->node->out[i] >= 0;
}
/* A buffer for tensor output i of the given shape (uninitialized memory). Works for absent
 * outputs too (a temporary the run discards). */
static inline kiln_status kx_output(kx_ctx *c, int i, kiln_dtype dtype, int rank, const int64_t *dims,
                                    kiln_tensor **out) {
  return c->api->output(c, i, dtype, rank, dims, out);
}
/* For kx_op.view_output ops: output i becomes input 0's data with a new shape (same element
 * count, checked by the caller). */
static inline kiln_status kx_output_view(kx_ctx *c, int i, int rank, const int64_t *dims, kiln_tensor **out) {
  return c->api->output_view(c, i, rank, dims, out);
}
/* Output i as an owned value the kernel fills (sequences, optionals): it starts released
 * (an empty tensor); the kernel sets kind and contents with owned memory. */
static inline kiln_value *kx_output_value(kx_ctx *c, int i) { return c->api->output_value(c, i); }
/* Temporary memory valid until the kernel returns; one request per run of the node. NULL when
 * memory runs out. */
static inline void *kx_scratch(kx_ctx *c, size_t bytes) { return c->api->scratch(c, bytes); }

/* Subgraph attribute of the node by name, NULL when absent. */
const kx_graph *kx_node_subgraph(const kx_node *n, const char *attr);

/* Runs on the pool: fn(arg, begin, end) over [0, n); cost = scalar operations per item. */
static inline void kx_parallel(const kx_ctx *c, int64_t n, double cost, kiln_range_fn fn, void *arg) {
  kiln_parallel_for(c->pool, c->threads, n, cost, fn, arg);
}

#endif
