/* The executor. A frame is the run state of one graph: value slots, the memory plans (one per
 * distinct input shape) and the arena they share. The first run with a new input shape records
 * what every node allocates (buffers freed at their last use); a plan is then built from those
 * sizes, and later runs with that shape take every buffer from the arena. A buffer that outgrows
 * its planned slot (data-dependent shapes) is allocated on its own and the plan is rebuilt after
 * the run, so a steady state always reaches zero allocations. */
#include "graph/graph.h"
#include "ops/util.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_PLANS 32
#define ARENA_ALIGN 64

struct kx_frame {
  const kx_graph *g;
  kiln_pool *pool;
  int threads;
  kiln_value *values;
  unsigned char *owned; /* the value holds memory of its own to release */
  kx_plan plans[MAX_PLANS];
  int n_plans;
  uint64_t tick;
  kx_plan *plan; /* the plan of the current run; NULL while recording */
  int stale;     /* a buffer outgrew the plan this run */
  size_t *rec_size;    /* per value: bytes asked this run */
  size_t *rec_scratch; /* per node */
  char *arena;
  size_t arena_cap;
  void *scratch_dyn; /* this node's scratch when it is not planned */
  kiln_tensor tmp_out[4]; /* outputs the node has but the graph does not use */
  int n_tmp;
  const kiln_value **in_ptrs;
  kx_frame ***children; /* per node, per subgraph: lazily created frames */
  const kiln_value **child_outer;
  int pos; /* node being run */
  int64_t *key;
  int key_len, key_cap;
  int64_t allocations; /* buffers this run took outside the arena (outputs and scratch) */
  double *node_us;     /* with profiling: per node, total time and calls */
  int64_t *node_calls;
};

static char empty_buffer[ARENA_ALIGN] __attribute__((aligned(ARENA_ALIGN)));

kiln_status kx_frame_create(const kx_graph *g, kiln_pool *pool, int threads, kx_frame **out) {
  kx_frame *f = calloc(1, sizeof *f);
  if (!f) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  f->g = g;
  f->pool = pool;
  f->threads = threads;
  size_t nv = (size_t)g->n_vals + 1, nn = (size_t)g->n_nodes + 1;
  f->values = calloc(nv, sizeof *f->values);
  f->owned = calloc(nv, 1);
  f->rec_size = calloc(nv, sizeof *f->rec_size);
  f->rec_scratch = calloc(nn, sizeof *f->rec_scratch);
  f->in_ptrs = calloc((size_t)g->max_node_inputs + 1, sizeof *f->in_ptrs);
  f->children = calloc(nn, sizeof *f->children);
  /* allocated up front: a graph without inputs has an empty key, still compared and copied */
  f->key_cap = 32;
  f->key = malloc((size_t)f->key_cap * sizeof *f->key);
  if (!f->values || !f->owned || !f->rec_size || !f->rec_scratch || !f->in_ptrs || !f->children || !f->key) {
    kx_frame_free(f);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  }
  for (int v = 0; v < g->n_vals; v++)
    if (g->vals[v].kind == KX_VAL_CONST) f->values[v] = g->vals[v].konst; /* a view: never released */
  *out = f;
  return NULL;
}

static void release_value(kx_frame *f, int v) {
  if (f->owned[v]) kiln_value_release(&f->values[v]);
  else memset(&f->values[v], 0, sizeof f->values[v]);
  f->owned[v] = 0;
}

/* Frees what the last run left behind (its outputs, or everything after a failure). */
static void release_all(kx_frame *f) {
  for (int v = 0; v < f->g->n_vals; v++)
    if (f->g->vals[v].kind != KX_VAL_CONST) release_value(f, v);
  for (int i = 0; i < f->n_tmp; i++) kiln_tensor_release(&f->tmp_out[i]);
  f->n_tmp = 0;
  free(f->scratch_dyn);
  f->scratch_dyn = NULL;
}

void kx_frame_free(kx_frame *f) {
  if (!f) return;
  if (f->values) release_all(f);
  for (int i = 0; i < f->n_plans; i++) kx_plan_release(&f->plans[i]);
  if (f->children)
    for (int pos = 0; pos < f->g->n_nodes; pos++) {
      if (!f->children[pos]) continue;
      for (int j = 0; j < f->g->nodes[pos].n_subgraphs; j++) kx_frame_free(f->children[pos][j]);
      free(f->children[pos]);
    }
  free(f->children);
  free(f->child_outer);
  free(f->values);
  free(f->owned);
  free(f->rec_size);
  free(f->rec_scratch);
  free(f->in_ptrs);
  free(f->arena);
  free(f->key);
  free(f->node_us);
  free(f->node_calls);
  free(f);
}

kiln_status kx_frame_profile(kx_frame *f) {
  f->node_us = calloc((size_t)f->g->n_nodes + 1, sizeof *f->node_us);
  f->node_calls = calloc((size_t)f->g->n_nodes + 1, sizeof *f->node_calls);
  if (!f->node_us || !f->node_calls) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  return NULL;
}

const double *kx_frame_node_us(const kx_frame *f) { return f->node_us; }
const int64_t *kx_frame_node_calls(const kx_frame *f) { return f->node_calls; }

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* ---- the kernel-facing API */

static kiln_status api_output(kx_ctx *c, int i, kiln_dtype dtype, int rank, const int64_t *dims, kiln_tensor **out) {
  kx_frame *f = c->exec;
  const kx_node *n = c->node;
  int v = i < n->n_out ? n->out[i] : -1;
  kiln_tensor shape = {0};
  kiln_status s = kiln_tensor_set_shape(&shape, dtype, rank, dims);
  if (s) return kiln_status_prefix(s, "output %d: ", i);
  size_t bytes = kiln_tensor_nbytes(&shape);
  if (v < 0) { /* an output nobody reads: a temporary until the node finishes */
    if (f->n_tmp == (int)(sizeof f->tmp_out / sizeof f->tmp_out[0]))
      return kiln_error(KILN_INTERNAL, "too many unused outputs");
    kiln_tensor *t = &f->tmp_out[f->n_tmp];
    if ((s = kiln_tensor_alloc(t, dtype, rank, dims))) return s;
    f->n_tmp++;
    *out = t;
    return NULL;
  }
  release_value(f, v);
  kiln_value *val = &f->values[v];
  val->kind = KILN_VALUE_TENSOR;
  val->tensor = shape;
  kiln_tensor *t = &val->tensor;
  if (dtype == KILN_STRING) { /* strings own their elements: never in the arena */
    if ((s = kiln_tensor_alloc(t, dtype, rank, dims))) return s;
    f->owned[v] = 1;
  } else if (bytes == 0) {
    t->data = empty_buffer;
  } else if (f->plan && f->plan->offset[v] != SIZE_MAX && bytes <= f->plan->size[v]) {
    t->data = f->arena + f->plan->offset[v];
  } else {
    if (f->plan) f->stale = 1;
    f->allocations++;
    t->data = t->owner = malloc(bytes);
    if (!t->data) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory allocating %zu bytes for output %d", bytes, i);
    f->owned[v] = 1;
  }
  if (bytes > f->rec_size[v]) f->rec_size[v] = bytes;
  *out = t;
  return NULL;
}

static kiln_status api_output_view(kx_ctx *c, int i, int rank, const int64_t *dims, kiln_tensor **out) {
  kx_frame *f = c->exec;
  const kx_node *n = c->node;
  const kiln_tensor *src = n->n_in > 0 && c->in[0] && c->in[0]->kind == KILN_VALUE_TENSOR ? &c->in[0]->tensor : NULL;
  int v = i < n->n_out ? n->out[i] : -1;
  if (!src || i != 0 || !n->op->view_output) return kiln_error(KILN_INTERNAL, "output_view used outside a view op");
  kiln_tensor view = {0};
  kiln_status s = kiln_tensor_set_shape(&view, src->dtype, rank, dims);
  if (s) return s;
  if (kiln_tensor_numel(&view) != kiln_tensor_numel(src))
    return kiln_error(KILN_INTERNAL, "view changes the element count");
  view.data = src->data;
  if (v < 0) {
    f->tmp_out[f->n_tmp] = view;
    *out = &f->tmp_out[f->n_tmp++];
    return NULL;
  }
  release_value(f, v);
  f->values[v].kind = KILN_VALUE_TENSOR;
  f->values[v].tensor = view;
  *out = &f->values[v].tensor;
  return NULL;
}

static kiln_value *api_output_value(kx_ctx *c, int i) {
  kx_frame *f = c->exec;
  const kx_node *n = c->node;
  int v = i < n->n_out ? n->out[i] : -1;
  if (v < 0) return NULL;
  release_value(f, v);
  f->owned[v] = 1;
  return &f->values[v];
}

static void *api_scratch(kx_ctx *c, size_t bytes) {
  kx_frame *f = c->exec;
  int pos = f->pos;
  if (bytes > f->rec_scratch[pos]) f->rec_scratch[pos] = bytes;
  if (bytes == 0) return empty_buffer;
  if (f->plan && f->plan->scratch_offset[pos] != SIZE_MAX && bytes <= f->plan->scratch_size[pos])
    return f->arena + f->plan->scratch_offset[pos];
  if (f->plan) f->stale = 1;
  f->allocations++;
  free(f->scratch_dyn);
  f->scratch_dyn = malloc(bytes);
  return f->scratch_dyn;
}

static int api_graph_inputs(const kx_graph *g) { return g->n_inputs; }
static int api_graph_outputs(const kx_graph *g) { return g->n_outputs; }

static kiln_status api_run_graph(kx_ctx *c, const kx_graph *sub, const kiln_value *const *inputs, int n,
                                 const kiln_value **outputs) {
  kx_frame *f = c->exec;
  const kx_node *node = c->node;
  int j = 0;
  while (j < node->n_subgraphs && node->subgraphs[j] != sub) j++;
  if (j == node->n_subgraphs) return kiln_error(KILN_INTERNAL, "subgraph does not belong to this node");
  if (n != sub->n_inputs)
    return kiln_error(KILN_INVALID_ARGUMENT, "subgraph '%s' takes %d inputs, %d given", node->subgraph_names[j], sub->n_inputs, n);
  if (!f->children[f->pos]) {
    f->children[f->pos] = calloc((size_t)node->n_subgraphs, sizeof **f->children);
    if (!f->children[f->pos]) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  }
  kx_frame **child = &f->children[f->pos][j];
  kiln_status s;
  if (!*child && (s = kx_frame_create(sub, f->pool, f->threads, child))) return s;
  /* the subgraph's captured values, read from this frame */
  const kiln_value *outer_buf[16];
  const kiln_value **outer = outer_buf;
  if (sub->n_outer > 16) {
    if (!(outer = malloc((size_t)sub->n_outer * sizeof *outer))) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  }
  for (int k = 0; k < sub->n_outer; k++) outer[k] = &f->values[sub->outer_parent[k]];
  s = kx_frame_run(*child, inputs, outer, outputs);
  if (outer != outer_buf) free(outer);
  return s;
}

static const kx_exec_api exec_api = {
    .output = api_output,
    .output_view = api_output_view,
    .output_value = api_output_value,
    .scratch = api_scratch,
    .graph_input_count = api_graph_inputs,
    .graph_output_count = api_graph_outputs,
    .run_graph = api_run_graph,
};

/* ---- plans */

static kiln_status key_push(kx_frame *f, int64_t x) {
  if (f->key_len == f->key_cap) {
    int cap = f->key_cap ? f->key_cap * 2 : 32;
    int64_t *k = realloc(f->key, (size_t)cap * sizeof *k);
    if (!k) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    f->key = k;
    f->key_cap = cap;
  }
  f->key[f->key_len++] = x;
  return NULL;
}

static kiln_status key_value(kx_frame *f, const kiln_value *v) {
  kiln_status s = key_push(f, v ? (int64_t)v->kind : -1);
  if (s || !v) return s;
  if (v->kind == KILN_VALUE_TENSOR) {
    if ((s = key_push(f, v->tensor.dtype)) || (s = key_push(f, v->tensor.rank))) return s;
    for (int d = 0; d < v->tensor.rank; d++)
      if ((s = key_push(f, v->tensor.dims[d]))) return s;
  } else if (v->kind == KILN_VALUE_SEQUENCE) {
    s = key_push(f, (int64_t)v->count);
  }
  return s;
}

/* The plan for the current input shapes, or NULL when this shape runs for the first time. */
static kiln_status find_plan(kx_frame *f, const kiln_value *const *inputs, const kiln_value *const *outer, kx_plan **out) {
  f->key_len = 0;
  kiln_status s;
  for (int i = 0; i < f->g->n_inputs; i++)
    if ((s = key_value(f, inputs[i]))) return s;
  for (int i = 0; i < f->g->n_outer; i++)
    if ((s = key_value(f, outer[i]))) return s;
  *out = NULL;
  for (int i = 0; i < f->n_plans; i++) {
    kx_plan *p = &f->plans[i];
    if (p->key_len == f->key_len && memcmp(p->key, f->key, (size_t)f->key_len * sizeof *f->key) == 0) {
      p->last_used = ++f->tick;
      *out = p;
      return NULL;
    }
  }
  return NULL;
}

/* Builds (or rebuilds) the plan for the current key from this run's recorded sizes. */
static kiln_status save_plan(kx_frame *f, kx_plan *old) {
  const kx_graph *g = f->g;
  if (old) { /* keep the larger of the planned and the recorded size */
    for (int v = 0; v < g->n_vals; v++)
      if (old->size[v] > f->rec_size[v]) f->rec_size[v] = old->size[v];
    for (int i = 0; i < g->n_nodes; i++)
      if (old->scratch_size[i] > f->rec_scratch[i]) f->rec_scratch[i] = old->scratch_size[i];
  }
  kx_plan p = {0};
  size_t nv = (size_t)g->n_vals + 1, nn = (size_t)g->n_nodes + 1;
  p.key = malloc((size_t)(f->key_len + 1) * sizeof *p.key);
  p.offset = malloc(nv * sizeof *p.offset);
  p.size = malloc(nv * sizeof *p.size);
  p.scratch_offset = malloc(nn * sizeof *p.scratch_offset);
  p.scratch_size = malloc(nn * sizeof *p.scratch_size);
  kiln_status s = NULL;
  if (!p.key || !p.offset || !p.size || !p.scratch_offset || !p.scratch_size)
    s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  if (!s) s = kx_plan_build(g, f->rec_size, f->rec_scratch, &p);
  if (s) {
    kx_plan_release(&p);
    return s;
  }
  memcpy(p.key, f->key, (size_t)f->key_len * sizeof *p.key);
  p.key_len = f->key_len;
  p.last_used = ++f->tick;
  kx_plan *slot = old;
  if (!slot && f->n_plans < MAX_PLANS) slot = &f->plans[f->n_plans++];
  if (!slot) { /* evict the least recently used */
    slot = &f->plans[0];
    for (int i = 1; i < f->n_plans; i++)
      if (f->plans[i].last_used < slot->last_used) slot = &f->plans[i];
  }
  kx_plan_release(slot);
  *slot = p;
  return NULL;
}

/* ---- running */

static kiln_status run_nodes(kx_frame *f) {
  const kx_graph *g = f->g;
  kx_ctx c = {.in = f->in_ptrs, .api = &exec_api, .exec = f, .pool = f->pool, .threads = f->threads};
  char label[192];
  for (int pos = 0; pos < g->n_nodes; pos++) {
    const kx_node *n = &g->nodes[pos];
    f->pos = pos;
    for (int k = 0; k < n->n_in; k++) {
      int v = n->in[k];
      f->in_ptrs[k] = v >= 0 ? &f->values[v] : NULL;
    }
    c.node = n;
    c.post_applied = 0;
    double start = f->node_us ? now_us() : 0;
    kiln_status s = n->op->run(&c);
    if (!s && (n->post.kind != KX_ACT_NONE || n->post_bias) && !c.post_applied) {
      kiln_value *y = &f->values[n->out[0]];
      if (y->kind == KILN_VALUE_TENSOR) s = kx_post_apply(&c, &y->tensor);
    }
    if (f->node_us) {
      f->node_us[pos] += now_us() - start;
      f->node_calls[pos]++;
    }
    for (int i = 0; i < f->n_tmp; i++) kiln_tensor_release(&f->tmp_out[i]);
    f->n_tmp = 0;
    if (f->scratch_dyn) {
      free(f->scratch_dyn);
      f->scratch_dyn = NULL;
    }
    if (s) return kiln_status_prefix(s, "%s: ", kx_node_label(n, label, sizeof label));
    /* release what this node was the last to read */
    for (int k = 0; k < n->n_in; k++) {
      int v = n->in[k];
      if (v >= 0 && g->vals[v].last_use == pos && g->vals[v].kind == KX_VAL_NODE) release_value(f, v);
    }
    for (const int *v = g->implicit[pos]; v && *v >= 0; v++)
      if (g->vals[*v].last_use == pos && g->vals[*v].kind == KX_VAL_NODE) release_value(f, *v);
    for (int k = 0; k < n->n_out; k++) {
      int v = n->out[k];
      if (v >= 0 && g->vals[v].last_use == pos) release_value(f, v);
    }
  }
  return NULL;
}

kiln_status kx_frame_run(kx_frame *f, const kiln_value *const *inputs, const kiln_value *const *outer,
                         const kiln_value **outputs) {
  const kx_graph *g = f->g;
  release_all(f);
  kx_plan *plan;
  kiln_status s = find_plan(f, inputs, outer, &plan);
  if (s) return s;
  if (plan && plan->arena_size > f->arena_cap) {
    free(f->arena);
    f->arena_cap = 0;
    if (!(f->arena = aligned_alloc(ARENA_ALIGN, (plan->arena_size + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN)))
      return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory allocating a %zu-byte arena", plan->arena_size);
    f->arena_cap = plan->arena_size;
  }
  f->plan = plan;
  f->stale = 0;
  f->allocations = 0;
  memset(f->rec_size, 0, (size_t)g->n_vals * sizeof *f->rec_size);
  memset(f->rec_scratch, 0, (size_t)g->n_nodes * sizeof *f->rec_scratch);

  for (int i = 0; i < g->n_inputs; i++) {
    if (inputs[i]) f->values[g->inputs[i]] = *inputs[i]; /* a view of the caller's value */
    else f->values[g->inputs[i]].kind = KILN_VALUE_NONE;
  }
  for (int i = 0; i < g->n_outer; i++) f->values[g->outer_local[i]] = *outer[i];

  s = run_nodes(f);
  if (s) {
    release_all(f);
    return s;
  }
  if (!plan || f->stale) {
    if ((s = save_plan(f, plan))) {
      release_all(f);
      return s;
    }
  }
  for (int i = 0; i < g->n_outputs; i++) outputs[i] = &f->values[g->outputs[i]];
  return NULL;
}

void kx_frame_stats(const kx_frame *f, kiln_session_stats *out) {
  out->arena_bytes += f->arena_cap;
  out->plans += f->n_plans;
  out->last_run_allocations += f->allocations;
  for (int pos = 0; pos < f->g->n_nodes; pos++)
    for (int j = 0; f->children[pos] && j < f->g->nodes[pos].n_subgraphs; j++)
      if (f->children[pos][j]) kx_frame_stats(f->children[pos][j], out);
}
