/* The graph layer's internal structures: a compiled graph (values, sorted nodes, lifetimes),
 * the memory planner and the executor's frames. */
#ifndef KX_GRAPH_H
#define KX_GRAPH_H

#include "kiln/graph.h"
#include "ops/op.h"

typedef enum kx_val_kind {
  KX_VAL_NODE = 0, /* produced by a node */
  KX_VAL_INPUT,    /* fed by the caller */
  KX_VAL_CONST,    /* an initializer or a Constant node's value */
  KX_VAL_OUTER,    /* a subgraph's view of a value of an enclosing graph */
} kx_val_kind;

typedef struct kx_val {
  const char *name;
  kx_val_kind kind;
  int producer; /* KX_VAL_NODE: position of the producing node */
  int last_use; /* position of the last node reading it; n_nodes for graph outputs; -1 unused */
  int view_of;  /* the value whose buffer this one views (view ops), else -1 */
  kiln_value konst; /* KX_VAL_CONST */
} kx_val;

struct kx_graph {
  const kx_graph *parent;
  const char *name;
  int n_vals;
  kx_val *vals;
  int n_nodes;
  kx_node *nodes; /* in execution order */
  int **implicit; /* per node: outer values its subgraphs read, -1 terminated (NULL: none) */
  int n_inputs;
  int *inputs;
  kiln_value_info *input_info;
  int n_outputs;
  int *outputs;
  kiln_value_info *output_info;
  int n_outer;
  int *outer_local;  /* value ids in this graph ... */
  int *outer_parent; /* ... bound to these ids of the parent graph */
  int max_node_inputs;
  Onnx__NodeProto **synthesized; /* protos of nodes the fusion pass made (owned) */
  int n_synthesized;
};

/* Everything a compile needs from the model. */
typedef struct kx_compile_env {
  const char *model_name;
  int n_opsets;
  const char *const *opset_domains;
  const int64_t *opset_versions;
  kx_tensor_source source;
  int allow_unsupported;
  /* unsupported operators found, as "'Foo' (domain '', opset 13)", collected when allowed */
  char **unsupported;
  int n_unsupported;
} kx_compile_env;

/* Compiles a GraphProto (and its subgraphs); parent is NULL for the model's main graph. */
kiln_status kx_graph_compile(const Onnx__GraphProto *gp, kx_compile_env *env, const kx_graph *parent,
                             void *parent_scope, kx_graph **out);
void kx_graph_free(kx_graph *g);

/* Graph rewrites (optimize.c). kx_prepare_and_fold prepares every node in execution order and
 * folds the ones whose inputs are all constants (gone[pos] = 1); kx_fuse then fuses patterns,
 * marking the nodes it absorbs. The caller drops gone nodes afterwards. */
kiln_status kx_prepare_and_fold(kx_graph *g, unsigned char *gone);
kiln_status kx_fuse(kx_graph *g, unsigned char *gone);

/* "node 17 (Conv)" or "node 17 'conv1' (Conv)" for messages. */
const char *kx_node_label(const kx_node *n, char *buf, size_t size);

/* ---- memory plan: one per distinct input shape */
typedef struct kx_plan {
  int64_t *key;
  int key_len;
  size_t *offset; /* per value; SIZE_MAX when it has no arena slot */
  size_t *size;
  size_t *scratch_offset; /* per node */
  size_t *scratch_size;
  size_t arena_size;
  uint64_t last_used;
} kx_plan;

/* Places every buffer (value sizes with their lifetimes, per-node scratch) in one arena so that
 * buffers alive at the same time never overlap. Sizes of 0 get no slot. */
kiln_status kx_plan_build(const kx_graph *g, const size_t *value_size, const size_t *scratch_size, kx_plan *p);
void kx_plan_release(kx_plan *p);

/* ---- execution */
typedef struct kx_frame kx_frame;
kiln_status kx_frame_create(const kx_graph *g, kiln_pool *pool, int threads, kx_frame **out);
/* Starts timing every node of this frame (not of its subgraph frames). */
kiln_status kx_frame_profile(kx_frame *f);
/* Per node: total microseconds and calls since profiling started; NULL without profiling. */
const double *kx_frame_node_us(const kx_frame *f);
const int64_t *kx_frame_node_calls(const kx_frame *f);
void kx_frame_free(kx_frame *f);
/* Runs the graph: inputs feed g->inputs, outer holds the parent's values for g->outer_parent
 * (NULL for a main graph). outputs[i] are valid until the next run of this frame. */
kiln_status kx_frame_run(kx_frame *f, const kiln_value *const *inputs, const kiln_value *const *outer,
                         const kiln_value **outputs);
/* Adds this frame's and its subgraph frames' figures to out. */
void kx_frame_stats(const kx_frame *f, kiln_session_stats *out);

#endif
