/* kiln graph: loading ONNX models and running them.
 *
 * A kiln_model is immutable once loaded and may be shared by any number of threads. Each thread
 * that runs it uses its own kiln_session, which holds the run state: value slots, the memory
 * plans (one per distinct input shape, computed on the first run with that shape) and the arena
 * they share. After the first run with a given shape, a run allocates nothing. */
#ifndef KILN_GRAPH_H
#define KILN_GRAPH_H

#include "kiln/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kiln_model kiln_model;
typedef struct kiln_session kiln_session;

/* A graph input's or output's declared type. */
typedef struct kiln_value_info {
  const char *name;
  kiln_value_kind kind; /* KILN_VALUE_TENSOR or KILN_VALUE_SEQUENCE */
  int optional;         /* declared as optional(...) */
  kiln_dtype dtype;     /* element type; KILN_UNDEFINED when the model does not say */
  int rank;             /* -1 when the model gives no shape */
  int64_t dims[KILN_MAX_RANK];         /* -1 for a symbolic or unknown dimension */
  const char *dim_names[KILN_MAX_RANK]; /* the symbolic name ("batch"), or NULL */
} kiln_value_info;

typedef struct kiln_load_options {
  /* Name used in error messages; defaults to the path, or "<memory>" for buffers. */
  const char *name;
  /* Folder that external data is relative to, for kiln_model_load_buffer (the model file's
   * folder for kiln_model_load). NULL: external data is refused. */
  const char *base_dir;
  /* Load a model that uses operators kiln lacks, for inspection (kiln info): sessions refuse it. */
  int allow_unsupported;
} kiln_load_options;

/* Loads a model file. Errors name the file and what is wrong with it:
 * "model.onnx: node 17 (Conv): input 'w' is not produced by any node",
 * "model.onnx: unsupported operator 'Foo' (domain '', opset 13)". */
kiln_status kiln_model_load(const char *path, const kiln_load_options *opt, kiln_model **out);
/* Loads from memory; the buffer is not needed after the call. */
kiln_status kiln_model_load_buffer(const void *buf, size_t len, const kiln_load_options *opt, kiln_model **out);
void kiln_model_free(kiln_model *m);

/* The inputs a caller feeds (initializers that are also listed as graph inputs are excluded:
 * they keep their stored value) and the graph outputs. */
int kiln_model_input_count(const kiln_model *m);
const kiln_value_info *kiln_model_input(const kiln_model *m, int i);
int kiln_model_output_count(const kiln_model *m);
const kiln_value_info *kiln_model_output(const kiln_model *m, int i);
/* Index of the input / output with this name, or -1. */
int kiln_model_input_index(const kiln_model *m, const char *name);
int kiln_model_output_index(const kiln_model *m, const char *name);

/* Facts for `kiln info`. */
typedef struct kiln_model_summary {
  int64_t ir_version;
  const char *producer; /* producer_name, "" when absent */
  const char *producer_version;
  int n_opsets;
  const char *const *opset_domains; /* "" is ai.onnx */
  const int64_t *opset_versions;
  int n_nodes;       /* top-level graph */
  int64_t parameters; /* elements in all initializers */
  int64_t parameter_bytes;
} kiln_model_summary;
void kiln_model_summarize(const kiln_model *m, kiln_model_summary *out);
/* Node i's op type in the top-level graph (0 <= i < n_nodes). */
const char *kiln_model_node_op(const kiln_model *m, int i);
/* Operators without a kernel (only with allow_unsupported), e.g. "Foo (domain '', opset 13)". */
int kiln_model_unsupported_count(const kiln_model *m);
const char *kiln_model_unsupported(const kiln_model *m, int i);

/* Synthetic tensor for a declared input (benchmarks, warm-up): the batch dimension (dimension 0
 * when it is symbolic or unknown) set to `batch`, other unknown dimensions to 1 unless `dims`
 * (rank entries, -1 = unset) overrides them. Floats are uniform in [-1, 1), integers 0..99,
 * bools 0/1, strings "kiln"; deterministic for a seed. */
kiln_status kiln_tensor_synthetic(const kiln_value_info *info, int64_t batch, const int64_t *dims, uint64_t seed,
                                  kiln_tensor *out);

typedef struct kiln_session_options {
  kiln_pool *pool; /* shared thread pool; NULL runs every kernel on the calling thread */
  int threads;     /* most pool threads one run uses; <= 0: all of them */
  int profile;     /* time every node of the main graph (kiln_session_profile) */
} kiln_session_options;

kiln_status kiln_session_create(const kiln_model *m, const kiln_session_options *opt, kiln_session **out);
void kiln_session_free(kiln_session *s);

/* Runs the model. inputs[i] feeds model input i; its dtype and shape are checked against the
 * declared type (errors name the input, the expected and the actual type). On success,
 * outputs[i] points at output i, owned by the session and valid until its next run or free. */
kiln_status kiln_session_run(kiln_session *s, const kiln_value *const *inputs, const kiln_value **outputs);
/* The same for models whose inputs and outputs are all tensors. */
kiln_status kiln_session_run_tensors(kiln_session *s, const kiln_tensor *const *inputs, const kiln_tensor **outputs);

/* What a session holds, for metrics and tests. */
typedef struct kiln_session_stats {
  size_t arena_bytes;           /* the planned arena shared by every plan */
  int plans;                    /* memory plans cached (one per distinct input shape) */
  int64_t last_run_allocations; /* buffers the last run allocated outside the arena: 0 once planned */
} kiln_session_stats;
void kiln_session_stats_get(const kiln_session *s, kiln_session_stats *out);

/* Time spent in one node of the main graph over all runs since the session was created (a node
 * running a subgraph includes the subgraph's time). Needs kiln_session_options.profile. */
typedef struct kiln_node_profile {
  int index;      /* position in the model's node list */
  const char *op; /* op_type */
  const char *name;
  int64_t calls;
  double total_us;
} kiln_node_profile;
/* Fills up to max entries in execution order; returns the number of nodes (0 without profiling). */
int kiln_session_profile(const kiln_session *s, kiln_node_profile *out, int max);

#ifdef __cplusplus
}
#endif
#endif
