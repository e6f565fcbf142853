/* Control flow: If, Loop, Scan and SequenceMap. Their bodies are subgraphs compiled by the graph
 * layer and run with c->api->run_graph, which binds the outer-scope values they read. What a
 * subgraph run returns stays valid only until that subgraph runs again, so a value carried into
 * the next iteration is copied first: into one of two buffers used in turn, which keep their
 * memory, so a loop whose carried shapes do not change stops allocating after two iterations. */
#include "ops/util.h"

#include <stdlib.h>
#include <string.h>

/* dst becomes a deep copy of src. dst's buffer is reused when it is an owned tensor buffer of the
 * same size (no strings), which is what makes steady loops allocation-free. */
static kiln_status value_assign(kiln_value *dst, const kiln_value *src) {
  const kiln_tensor *t = &src->tensor;
  if (src->kind == KILN_VALUE_TENSOR && dst->kind == KILN_VALUE_TENSOR && t->dtype != KILN_STRING &&
      dst->tensor.dtype != KILN_STRING && dst->tensor.owner && kiln_tensor_nbytes(&dst->tensor) == kiln_tensor_nbytes(t)) {
    void *buf = dst->tensor.owner;
    kiln_status s = kiln_tensor_set_shape(&dst->tensor, t->dtype, t->rank, t->dims);
    if (s) return s;
    memcpy(buf, t->data, kiln_tensor_nbytes(t));
    return NULL;
  }
  return kx_value_copy(dst, src);
}

/* Node output i becomes a copy of v: tensors through kx_output (the planned arena), sequences and
 * optionals as owned values. */
static kiln_status emit(kx_ctx *c, int i, const kiln_value *v) {
  if (!kx_has_output(c, i)) return NULL;
  if (v->kind == KILN_VALUE_TENSOR) return kx_output_copy(c, i, &v->tensor);
  return value_assign(kx_output_value(c, i), v);
}

/* The dtype and shape a subgraph declares for its output i. Used for scan outputs of zero
 * iterations, whose shape no run reveals: unknown dimensions become 0, an unknown dtype float. */
static void declared_output(const kx_node *n, const char *attr, int i, kiln_dtype *dtype, int *rank, int64_t *dims) {
  const Onnx__GraphProto *g = kx_attr_graph(n->proto, attr);
  const Onnx__TypeProto *t = g && i >= 0 && (size_t)i < g->n_output && g->output[i] ? g->output[i]->type : NULL;
  *dtype = KILN_FLOAT;
  *rank = 0;
  if (!t || t->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !t->tensor_type) return;
  const Onnx__TypeProto__Tensor *tt = t->tensor_type;
  if (tt->has_elem_type && tt->elem_type > 0 && tt->elem_type < KILN_DTYPE_COUNT && kiln_dtype_size((kiln_dtype)tt->elem_type))
    *dtype = (kiln_dtype)tt->elem_type;
  if (!tt->shape || tt->shape->n_dim >= KILN_MAX_RANK) return;
  *rank = (int)tt->shape->n_dim;
  for (int d = 0; d < *rank; d++) {
    const Onnx__TensorShapeProto__Dimension *dim = tt->shape->dim[d];
    dims[d] = dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE && dim->dim_value > 0 ? dim->dim_value : 0;
  }
}

/* Checks a subgraph's input and output counts against what the node feeds and expects. */
static kiln_status check_arity(const kx_ctx *c, const kx_graph *g, const char *attr, int n_in, int n_out) {
  int gi = c->api->graph_input_count(g), go = c->api->graph_output_count(g);
  if (gi != n_in) return kiln_error(KILN_INVALID_ARGUMENT, "%s takes %d inputs, the node feeds it %d", attr, gi, n_in);
  if (go != n_out) return kiln_error(KILN_INVALID_ARGUMENT, "%s has %d outputs, the node needs %d", attr, go, n_out);
  return NULL;
}

static kiln_status require_graph(const kx_node *n, const char *attr) {
  if (!kx_node_subgraph(n, attr)) return kiln_error(KILN_INVALID_ARGUMENT, "the graph attribute '%s' is missing", attr);
  return NULL;
}

/* A one-element tensor's value as a bool, or an error naming `what`. */
static kiln_status read_bool(const kiln_value *v, const char *what, int *out) {
  if (!v || v->kind != KILN_VALUE_TENSOR || v->tensor.dtype != KILN_BOOL || kiln_tensor_numel(&v->tensor) != 1) {
    char buf[96];
    if (v && v->kind == KILN_VALUE_TENSOR)
      return kiln_error(KILN_INVALID_ARGUMENT, "%s must be a bool tensor of one element, got %s", what,
                        kiln_tensor_describe(&v->tensor, buf, sizeof buf));
    return kiln_error(KILN_INVALID_ARGUMENT, "%s must be a bool tensor of one element, got %s", what, kx_value_kind_name(v));
  }
  *out = *(const uint8_t *)v->tensor.data != 0;
  return NULL;
}

/* A rank-0 tensor value viewing *data. */
static kiln_value scalar_view(kiln_dtype dtype, void *data) {
  kiln_value v = {.kind = KILN_VALUE_TENSOR};
  v.tensor.dtype = dtype;
  v.tensor.data = data;
  return v;
}

/* ---------------------------------------------------------------- If */

static kiln_status if_prepare(kx_node *n) {
  kiln_status s = require_graph(n, "then_branch");
  return s ? s : require_graph(n, "else_branch");
}

static kiln_status if_run(kx_ctx *c) {
  int cond;
  kiln_status s = read_bool(kx_input_value(c, 0), "cond", &cond);
  if (s) return s;
  const char *attr = cond ? "then_branch" : "else_branch";
  const kx_graph *g = kx_node_subgraph(c->node, attr);
  int n = c->node->n_out;
  if ((s = check_arity(c, g, attr, 0, n))) return s;
  const kiln_value **outs = kx_scratch(c, (size_t)(n + 1) * sizeof *outs);
  if (!outs) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  if ((s = c->api->run_graph(c, g, NULL, 0, outs))) return kiln_status_prefix(s, "%s: ", attr);
  for (int i = 0; i < n && !s; i++) s = emit(c, i, outs[i]);
  return s;
}

/* ---------------------------------------------------------------- Loop */

/* A Loop scan output: every iteration's tensor appended to one growing buffer, stacked along a
 * new axis 0 at the end. All iterations must agree on dtype and shape. */
typedef struct stack {
  kiln_dtype dtype;
  int rank;
  int64_t dims[KILN_MAX_RANK];
  int64_t count;
  char *data;
  size_t len, cap; /* bytes */
} stack;

static kiln_status stack_push(stack *st, const kiln_value *v, int k, int64_t iter) {
  if (v->kind != KILN_VALUE_TENSOR)
    return kiln_error(KILN_INVALID_ARGUMENT, "scan output %d must be a tensor, got %s", k, kx_value_kind_name(v));
  const kiln_tensor *t = &v->tensor;
  if (st->count == 0) {
    if (t->rank >= KILN_MAX_RANK)
      return kiln_error(KILN_UNIMPLEMENTED, "scan output %d: stacking rank-%d tensors exceeds kiln's rank limit", k, t->rank);
    st->dtype = t->dtype;
    st->rank = t->rank;
    memcpy(st->dims, t->dims, sizeof st->dims);
  } else {
    int same = t->dtype == st->dtype && t->rank == st->rank;
    for (int d = 0; same && d < t->rank; d++) same = t->dims[d] == st->dims[d];
    if (!same) {
      kiln_tensor first = {0};
      char a[96], b[96];
      kiln_tensor_set_shape(&first, st->dtype, st->rank, st->dims);
      return kiln_error(KILN_INVALID_ARGUMENT, "scan output %d is %s in iteration %lld but %s in iteration 0", k,
                        kiln_tensor_describe(t, a, sizeof a), (long long)iter, kiln_tensor_describe(&first, b, sizeof b));
    }
  }
  size_t bytes = kiln_tensor_nbytes(t);
  if (bytes > st->cap - st->len) {
    size_t cap = st->cap ? st->cap * 2 : 256;
    while (cap - st->len < bytes) cap *= 2;
    char *data = realloc(st->data, cap);
    if (!data) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory stacking scan output %d", k);
    st->data = data;
    st->cap = cap;
  }
  char *to = st->data + st->len;
  if (t->dtype == KILN_STRING) memset(to, 0, bytes); /* so that a failed copy leaves freeable NULLs */
  st->len += bytes;
  st->count++;
  return kx_copy_elements(to, t->data, t->dtype, kiln_tensor_numel(t));
}

static void stack_free(stack *st) {
  if (st->dtype == KILN_STRING)
    for (size_t i = 0; i < st->len / sizeof(char *); i++) free(((char **)st->data)[i]);
  free(st->data);
}

/* Node output i: the stacked iterations, or an empty tensor of the body's declared type. */
static kiln_status stack_emit(kx_ctx *c, int i, stack *st, int body_output) {
  if (!kx_has_output(c, i)) return NULL;
  int64_t dims[KILN_MAX_RANK];
  if (st->count == 0) declared_output(c->node, "body", body_output, &st->dtype, &st->rank, st->dims);
  dims[0] = st->count;
  memcpy(dims + 1, st->dims, (size_t)st->rank * sizeof *dims);
  kiln_tensor *y;
  kiln_status s = kx_output(c, i, st->dtype, st->rank + 1, dims, &y);
  if (s) return s;
  if (st->len) memcpy(y->data, st->data, st->len);
  if (st->dtype == KILN_STRING) st->len = 0; /* the output owns the strings now */
  return NULL;
}

static kiln_status loop_prepare(kx_node *n) {
  if (n->n_in < 2) return kiln_error(KILN_INVALID_ARGUMENT, "Loop needs the inputs M and cond (either may be empty), got %d inputs", n->n_in);
  if (n->n_out < n->n_in - 2)
    return kiln_error(KILN_INVALID_ARGUMENT, "Loop has %d loop-carried inputs but only %d outputs", n->n_in - 2, n->n_out);
  /* legal ONNX, but such a loop can never end: refuse it rather than hang a server thread */
  if (n->in[0] < 0 && n->in[1] < 0)
    return kiln_error(KILN_INVALID_ARGUMENT, "Loop has neither a trip count M nor a condition, so it would never end");
  return require_graph(n, "body");
}

/* The per-run state of a Loop, laid out in the node's scratch memory. */
typedef struct loop_state {
  kiln_value *bufs[2];      /* [n_carried] each: carried values, written in turn */
  stack *stacks;            /* [n_scan] */
  const kiln_value **in;    /* [2 + n_carried]: the body's inputs */
  const kiln_value **out;   /* [1 + n_carried + n_scan]: the body's outputs */
  const kiln_value **carry; /* [n_carried]: the current carried values */
} loop_state;

static kiln_status loop_state_init(kx_ctx *c, int n_carried, int n_scan, loop_state *st) {
  size_t nv = 2 * (size_t)n_carried, np = (size_t)(2 + n_carried) + (size_t)(1 + n_carried + n_scan) + (size_t)n_carried;
  size_t bytes = nv * sizeof(kiln_value) + (size_t)n_scan * sizeof(stack) + np * sizeof(kiln_value *);
  char *mem = kx_scratch(c, bytes);
  if (!mem) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  memset(mem, 0, bytes);
  st->bufs[0] = (kiln_value *)mem;
  st->bufs[1] = st->bufs[0] + n_carried;
  st->stacks = (stack *)(st->bufs[1] + n_carried);
  st->in = (const kiln_value **)(st->stacks + n_scan);
  st->out = st->in + 2 + n_carried;
  st->carry = st->out + 1 + n_carried + n_scan;
  return NULL;
}

static void loop_state_free(loop_state *st, int n_carried, int n_scan) {
  for (int j = 0; j < n_carried; j++) {
    kiln_value_release(&st->bufs[0][j]);
    kiln_value_release(&st->bufs[1][j]);
  }
  for (int k = 0; k < n_scan; k++) stack_free(&st->stacks[k]);
}

/* Reads the optional trip count M: a one-element integer tensor; absent means no limit. */
static kiln_status read_trip_count(const kx_ctx *c, int64_t *out) {
  const kiln_value *v = kx_input_value(c, 0);
  *out = INT64_MAX;
  if (!v || v->kind == KILN_VALUE_NONE) return NULL;
  const kiln_tensor *t = kx_input(c, 0);
  if (!t || (t->dtype != KILN_INT64 && t->dtype != KILN_INT32) || kiln_tensor_numel(t) != 1)
    return kiln_error(KILN_INVALID_ARGUMENT, "M (the trip count) must be an int64 tensor of one element");
  *out = t->dtype == KILN_INT64 ? *(const int64_t *)t->data : *(const int32_t *)t->data;
  return NULL;
}

static kiln_status loop_run(kx_ctx *c) {
  const kx_node *n = c->node;
  const kx_graph *body = kx_node_subgraph(n, "body");
  int n_carried = n->n_in - 2, n_scan = n->n_out - n_carried;
  kiln_status s;
  if ((s = check_arity(c, body, "body", 2 + n_carried, 1 + n_carried + n_scan))) return s;
  int64_t trips;
  int cond = 1, has_cond = kx_input_value(c, 1) && kx_input_value(c, 1)->kind != KILN_VALUE_NONE;
  if ((s = read_trip_count(c, &trips)) || (has_cond && (s = read_bool(kx_input_value(c, 1), "cond", &cond)))) return s;
  loop_state st = {0};
  if ((s = loop_state_init(c, n_carried, n_scan, &st))) return s;

  static const kiln_value none = {.kind = KILN_VALUE_NONE};
  for (int j = 0; j < n_carried; j++) st.carry[j] = kx_input_value(c, 2 + j) ? kx_input_value(c, 2 + j) : &none;
  int64_t iter = 0;
  uint8_t cond_in = 1;
  kiln_value iter_v = scalar_view(KILN_INT64, &iter), cond_v = scalar_view(KILN_BOOL, &cond_in);
  for (; iter < trips && cond; iter++) {
    st.in[0] = &iter_v;
    st.in[1] = &cond_v;
    for (int j = 0; j < n_carried; j++) st.in[2 + j] = st.carry[j];
    if ((s = c->api->run_graph(c, body, st.in, 2 + n_carried, st.out))) break;
    /* without a cond input the body's condition is ignored (a for loop) */
    if (has_cond && (s = read_bool(st.out[0], "the body's condition output", &cond))) break;
    cond_in = (uint8_t)cond;
    kiln_value *next = st.bufs[iter & 1]; /* never the buffer the body just read */
    for (int j = 0; j < n_carried && !s; j++) {
      s = value_assign(&next[j], st.out[1 + j]);
      st.carry[j] = &next[j];
    }
    for (int k = 0; k < n_scan && !s; k++) s = stack_push(&st.stacks[k], st.out[1 + n_carried + k], k, iter);
    if (s) break;
  }
  if (s) {
    s = kiln_status_prefix(s, "body, iteration %lld: ", (long long)iter);
  } else {
    for (int j = 0; j < n_carried && !s; j++) s = emit(c, j, st.carry[j]);
    for (int k = 0; k < n_scan && !s; k++) s = stack_emit(c, n_carried + k, &st.stacks[k], 1 + n_carried + k);
  }
  loop_state_free(&st, n_carried, n_scan);
  return s;
}

/* ---------------------------------------------------------------- Scan */

/* Attributes of Scan, checked at load. Opset 8 has only `directions` (for the inputs). */
typedef struct scan_params {
  int n_state, n_in, n_out; /* loop-carried states, scan inputs, scan outputs */
  int64_t *in_axes, *in_dirs, *out_axes, *out_dirs;
} scan_params;

/* Reads an optional list attribute of `count` values (default all 0) into out; `dirs` limits the
 * values to 0 and 1. */
static kiln_status scan_list(const kx_node *n, const char *name, int count, int dirs, int64_t *out) {
  const int64_t *v;
  int64_t len = kx_attr_ints(n->proto, name, &v);
  memset(out, 0, (size_t)count * sizeof *out);
  if (len < 0) return NULL;
  if (len != count) return kiln_error(KILN_INVALID_ARGUMENT, "%s has %lld values, expected %d", name, (long long)len, count);
  for (int i = 0; i < count; i++) {
    if (dirs && v[i] != 0 && v[i] != 1)
      return kiln_error(KILN_INVALID_ARGUMENT, "%s[%d] is %lld; directions are 0 (forward) or 1 (reverse)", name, i, (long long)v[i]);
    out[i] = v[i];
  }
  return NULL;
}

static kiln_status scan_prepare(kx_node *n) {
  kiln_status s = require_graph(n, "body");
  if (s) return s;
  int v8 = n->opset < 9, first = v8; /* opset 8 starts with sequence_lens */
  int64_t m = kx_attr_int(n->proto, "num_scan_inputs", -1);
  if (m < 1 || m > n->n_in - first)
    return kiln_error(KILN_INVALID_ARGUMENT, "num_scan_inputs is %lld, expected 1..%d", (long long)m, n->n_in - first);
  int n_state = n->n_in - first - (int)m, n_out = n->n_out - n_state;
  if (n_out < 0) return kiln_error(KILN_INVALID_ARGUMENT, "Scan has %d states but only %d outputs", n_state, n->n_out);
  scan_params *p = calloc(1, sizeof *p + 2 * ((size_t)m + (size_t)n_out) * sizeof(int64_t));
  if (!p) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  p->n_state = n_state;
  p->n_in = (int)m;
  p->n_out = n_out;
  p->in_axes = (int64_t *)(p + 1);
  p->in_dirs = p->in_axes + m;
  p->out_axes = p->in_dirs + m;
  p->out_dirs = p->out_axes + n_out;
  n->params = p;
  if (v8) return scan_list(n, "directions", p->n_in, 1, p->in_dirs);
  if ((s = scan_list(n, "scan_input_axes", p->n_in, 0, p->in_axes)) || (s = scan_list(n, "scan_input_directions", p->n_in, 1, p->in_dirs)) ||
      (s = scan_list(n, "scan_output_axes", p->n_out, 0, p->out_axes)))
    return s;
  return scan_list(n, "scan_output_directions", p->n_out, 1, p->out_dirs);
}

/* The per-run state of a Scan, laid out in the node's scratch memory. */
typedef struct scan_state {
  kiln_value *bufs[2];      /* [n_state] each: states, written in turn */
  kiln_value *initial;      /* [n_state]: opset 8: the batch entry's initial states */
  kiln_value *slices;       /* [n_in]: this iteration's slice of each scan input */
  kiln_tensor **ys;         /* [n_state + n_out]: node outputs once shaped, else NULL */
  const kiln_value **in;    /* [n_state + n_in]: the body's inputs */
  const kiln_value **out;   /* [n_state + n_out]: the body's outputs */
  const kiln_value **carry; /* [n_state]: the current states */
  int *axes;                /* [n_in]: the scan inputs' axes, normalized */
  char *gather;             /* room for the slices that are not contiguous */
} scan_state;

static size_t round64(size_t n) { return (n + 63) / 64 * 64; }

static kiln_status scan_state_init(kx_ctx *c, const scan_params *p, size_t gather_bytes, scan_state *st) {
  size_t nv = 3 * (size_t)p->n_state + (size_t)p->n_in;
  size_t np = 2 * (size_t)(p->n_state + p->n_out) + (size_t)(p->n_state + p->n_in) + (size_t)p->n_state;
  size_t head = round64(nv * sizeof(kiln_value) + np * sizeof(void *) + (size_t)p->n_in * sizeof(int));
  char *mem = kx_scratch(c, head + gather_bytes);
  if (!mem) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  memset(mem, 0, head);
  st->bufs[0] = (kiln_value *)mem;
  st->bufs[1] = st->bufs[0] + p->n_state;
  st->initial = st->bufs[1] + p->n_state;
  st->slices = st->initial + p->n_state;
  st->ys = (kiln_tensor **)(st->slices + p->n_in);
  st->in = (const kiln_value **)(st->ys + p->n_state + p->n_out);
  st->out = st->in + p->n_state + p->n_in;
  st->carry = st->out + p->n_state + p->n_out;
  st->axes = (int *)(st->carry + p->n_state);
  st->gather = mem + head;
  return NULL;
}

static void scan_state_free(scan_state *st, const scan_params *p) {
  for (int j = 0; j < p->n_state; j++) {
    kiln_value_release(&st->bufs[0][j]);
    kiln_value_release(&st->bufs[1][j]);
  }
}

/* One body run on the current states and slices; the new states are copied. */
static kiln_status scan_step(kx_ctx *c, const kx_graph *body, const scan_params *p, scan_state *st, int64_t iter) {
  for (int j = 0; j < p->n_state; j++) st->in[j] = st->carry[j];
  for (int i = 0; i < p->n_in; i++) st->in[p->n_state + i] = &st->slices[i];
  kiln_status s = c->api->run_graph(c, body, st->in, p->n_state + p->n_in, st->out);
  if (s) return s;
  for (int k = 0; k < p->n_state + p->n_out; k++)
    if (st->out[k]->kind != KILN_VALUE_TENSOR)
      return kiln_error(KILN_INVALID_ARGUMENT, "body output %d must be a tensor, got %s", k, kx_value_kind_name(st->out[k]));
  kiln_value *next = st->bufs[iter & 1]; /* never the buffer the body just read */
  for (int j = 0; j < p->n_state; j++) {
    if ((s = value_assign(&next[j], st->out[j]))) return s;
    st->carry[j] = &next[j];
  }
  return NULL;
}

/* Slice `pos` of x's dimension `axis`: a view when contiguous, else gathered into buf (strings as
 * borrowed pointers: the slice owns nothing). */
static void take_slice(const kiln_tensor *x, int axis, int64_t pos, char *buf, kiln_value *slice) {
  int64_t outer = kx_prod(x->dims, 0, axis), len = x->dims[axis], inner = kx_prod(x->dims, axis + 1, x->rank);
  size_t row = (size_t)inner * kiln_dtype_size(x->dtype);
  int64_t dims[KILN_MAX_RANK];
  for (int d = 0, k = 0; d < x->rank; d++)
    if (d != axis) dims[k++] = x->dims[d];
  *slice = (kiln_value){.kind = KILN_VALUE_TENSOR};
  kiln_tensor_set_shape(&slice->tensor, x->dtype, x->rank - 1, dims); /* cannot fail: x's shape is valid */
  if (outer == 1) {
    slice->tensor.data = (char *)x->data + (size_t)pos * row;
    return;
  }
  for (int64_t o = 0; o < outer; o++)
    if (row) memcpy(buf + (size_t)o * row, (const char *)x->data + (size_t)(o * len + pos) * row, row);
  slice->tensor.data = buf;
}

/* Node output i shaped like t with a dimension of `len` inserted at `axis`, zero-filled (string
 * elements NULL) so that slots no iteration writes are defined. */
static kiln_status output_around(kx_ctx *c, int i, const kiln_tensor *t, int axis, int64_t len, kiln_tensor **y) {
  int64_t dims[KILN_MAX_RANK];
  if (t->rank >= KILN_MAX_RANK)
    return kiln_error(KILN_UNIMPLEMENTED, "output %d: adding a dimension to rank %d exceeds kiln's limit", i, t->rank);
  for (int d = 0, e = 0; d <= t->rank; d++) dims[d] = d == axis ? len : t->dims[e++];
  kiln_status s = kx_output(c, i, t->dtype, t->rank + 1, dims, y);
  if (!s) memset((*y)->data, 0, kiln_tensor_nbytes(*y));
  return s;
}

/* Writes t at position pos of y's dimension `axis` after checking that it fits there. */
static kiln_status write_slot(kiln_tensor *y, int axis, int64_t pos, const kiln_tensor *t, const char *what, int k) {
  int fits = t->dtype == y->dtype && t->rank == y->rank - 1;
  for (int d = 0; fits && d < t->rank; d++) fits = t->dims[d] == y->dims[d < axis ? d : d + 1];
  if (!fits) {
    char a[96], b[96];
    return kiln_error(KILN_INVALID_ARGUMENT, "%s %d is %s, unlike in the first iteration (output %s)", what, k,
                      kiln_tensor_describe(t, a, sizeof a), kiln_tensor_describe(y, b, sizeof b));
  }
  int64_t outer = kx_prod(y->dims, 0, axis), len = y->dims[axis], inner = kx_prod(y->dims, axis + 1, y->rank);
  size_t es = kiln_dtype_size(y->dtype);
  for (int64_t o = 0; o < outer; o++) {
    char *to = (char *)y->data + (size_t)((o * len + pos) * inner) * es;
    kiln_status s = kx_copy_elements(to, (const char *)t->data + (size_t)(o * inner) * es, y->dtype, inner);
    if (s) return s;
  }
  return NULL;
}

/* Node output i for a scan output that no iteration shaped: the body's declared output type,
 * after the `lead` dimensions, with a dimension of `len` inserted at axis_attr (normalized like
 * an insertion point), zero-filled. */
static kiln_status declared_scan_output(kx_ctx *c, int i, const int64_t *lead, int n_lead, int64_t axis_attr, int64_t len) {
  kiln_dtype dtype;
  int rank, axis;
  int64_t dims[KILN_MAX_RANK], full[KILN_MAX_RANK];
  declared_output(c->node, "body", i, &dtype, &rank, dims);
  if (rank + n_lead >= KILN_MAX_RANK) return kiln_error(KILN_UNIMPLEMENTED, "output %d: rank exceeds kiln's limit", i);
  for (int d = 0; d < n_lead; d++) full[d] = lead[d];
  memcpy(full + n_lead, dims, (size_t)rank * sizeof *full);
  kiln_tensor shape = {0}, *y;
  kiln_status s = kiln_tensor_set_shape(&shape, dtype, rank + n_lead, full);
  if (!s) s = kx_axis(axis_attr, shape.rank, 1, &axis);
  return s ? s : output_around(c, i, &shape, axis, len, &y);
}

/* Checks the scan inputs (from input `first` + n_state on) and finds their common length. */
static kiln_status scan_inputs(const kx_ctx *c, const scan_params *p, int first, int *axes, int64_t *len, size_t *gather) {
  *len = -1;
  *gather = 0;
  for (int i = 0; i < p->n_in; i++) {
    const kiln_tensor *x;
    int axis;
    kiln_status s = kx_require(c, first + p->n_state + i, &x);
    if (s) return s;
    if (x->rank == 0) return kiln_error(KILN_INVALID_ARGUMENT, "scan input %d is a scalar; it needs an axis to scan", i);
    if ((s = kx_axis(p->in_axes[i], x->rank, 0, &axis))) return kiln_status_prefix(s, "scan input %d: ", i);
    int64_t n = x->dims[axis];
    if (*len >= 0 && n != *len)
      return kiln_error(KILN_INVALID_ARGUMENT, "scan input %d has %lld items along its scan axis, scan input 0 has %lld", i,
                        (long long)n, (long long)*len);
    *len = n;
    if (axis > 0 && n) *gather += round64(kiln_tensor_nbytes(x) / (size_t)n);
    if (axes) axes[i] = axis;
  }
  return NULL;
}

static kiln_status scan_run(kx_ctx *c) {
  const scan_params *p = c->node->params;
  const kx_graph *body = kx_node_subgraph(c->node, "body");
  kiln_status s;
  if ((s = check_arity(c, body, "body", p->n_state + p->n_in, p->n_state + p->n_out))) return s;
  for (int j = 0; j < p->n_state; j++)
    if (!kx_input(c, j)) return kiln_error(KILN_INVALID_ARGUMENT, "state %d must be a tensor, got %s", j, kx_value_kind_name(kx_input_value(c, j)));
  scan_state st = {0};
  int64_t len;
  size_t gather;
  /* a first pass checks the inputs and sizes the scratch, a second one stores their axes in it */
  if ((s = scan_inputs(c, p, 0, NULL, &len, &gather)) || (s = scan_state_init(c, p, gather, &st))) return s;
  scan_inputs(c, p, 0, st.axes, &len, &gather);
  for (int j = 0; j < p->n_state; j++) st.carry[j] = kx_input_value(c, j);

  for (int64_t t = 0; t < len && !s; t++) {
    char *buf = st.gather;
    for (int i = 0; i < p->n_in; i++) {
      const kiln_tensor *x = kx_input(c, p->n_state + i);
      take_slice(x, st.axes[i], p->in_dirs[i] ? len - 1 - t : t, buf, &st.slices[i]);
      if (st.axes[i] > 0) buf += round64(kiln_tensor_nbytes(x) / (size_t)len);
    }
    s = scan_step(c, body, p, &st, t);
    for (int k = 0; k < p->n_out && !s; k++) {
      int i = p->n_state + k, axis;
      const kiln_tensor *v = &st.out[i]->tensor;
      if (!kx_has_output(c, i)) continue;
      if ((s = kx_axis(p->out_axes[k], v->rank, 1, &axis))) s = kiln_status_prefix(s, "scan output %d: ", k);
      if (!s && !st.ys[i]) s = output_around(c, i, v, axis, len, &st.ys[i]);
      if (!s) s = write_slot(st.ys[i], axis, p->out_dirs[k] ? len - 1 - t : t, v, "scan output", k);
    }
    if (s) s = kiln_status_prefix(s, "body, iteration %lld: ", (long long)t);
  }
  for (int j = 0; j < p->n_state && !s; j++) s = emit(c, j, st.carry[j]);
  for (int k = 0; k < p->n_out && !s; k++) { /* no iteration: empty outputs */
    int i = p->n_state + k;
    if (!st.ys[i] && kx_has_output(c, i)) s = declared_scan_output(c, i, NULL, 0, p->out_axes[k], 0);
  }
  scan_state_free(&st, p);
  return s;
}

/* One batch entry of a Scan-8: n steps over row b of every input, then its final states. */
static kiln_status scan8_entry(kx_ctx *c, const kx_graph *body, const scan_params *p, scan_state *st, int64_t b, int64_t n) {
  const kiln_tensor *x0 = kx_input(c, 1 + p->n_state);
  int64_t batch = x0->dims[0], max_len = x0->dims[1];
  kiln_status s = NULL;
  for (int j = 0; j < p->n_state; j++) {
    take_slice(kx_input(c, 1 + j), 0, b, NULL, &st->initial[j]);
    st->carry[j] = &st->initial[j];
  }
  for (int64_t t = 0; t < n && !s; t++) {
    for (int i = 0; i < p->n_in; i++) {
      kiln_value entry;
      take_slice(kx_input(c, 1 + p->n_state + i), 0, b, NULL, &entry);
      take_slice(&entry.tensor, 0, p->in_dirs[i] ? n - 1 - t : t, NULL, &st->slices[i]);
    }
    s = scan_step(c, body, p, st, t);
    for (int k = 0; k < p->n_out && !s; k++) {
      int i = p->n_state + k;
      const kiln_tensor *v = &st->out[i]->tensor;
      if (!kx_has_output(c, i)) continue;
      if (!st->ys[i]) { /* [batch, max_len, v's shape] */
        kiln_tensor steps = {0};
        int64_t dims[KILN_MAX_RANK];
        if (v->rank >= KILN_MAX_RANK) return kiln_error(KILN_UNIMPLEMENTED, "scan output %d: rank %d exceeds kiln's limit", k, v->rank + 2);
        dims[0] = max_len;
        memcpy(dims + 1, v->dims, (size_t)v->rank * sizeof *dims);
        s = kiln_tensor_set_shape(&steps, v->dtype, v->rank + 1, dims);
        if (!s) s = output_around(c, i, &steps, 0, batch, &st->ys[i]);
      }
      kiln_value row;
      if (!s) take_slice(st->ys[i], 0, b, NULL, &row);
      if (!s) s = write_slot(&row.tensor, 0, t, v, "scan output", k);
    }
    if (s) return kiln_status_prefix(s, "body, batch entry %lld, iteration %lld: ", (long long)b, (long long)t);
  }
  for (int j = 0; j < p->n_state && !s; j++) {
    if (!kx_has_output(c, j)) continue;
    const kiln_tensor *v = &st->carry[j]->tensor;
    if (!st->ys[j]) s = output_around(c, j, v, 0, batch, &st->ys[j]);
    if (!s) s = write_slot(st->ys[j], 0, b, v, "state", j);
  }
  return s;
}

/* Scan-8: every input and output has a leading batch dimension, the scan axis is 1, and batch
 * entry b runs sequence_lens[b] steps (the later steps of its scan outputs stay zero). */
static kiln_status scan8_run(kx_ctx *c) {
  const scan_params *p = c->node->params;
  const kx_graph *body = kx_node_subgraph(c->node, "body");
  kiln_status s;
  if ((s = check_arity(c, body, "body", p->n_state + p->n_in, p->n_state + p->n_out))) return s;
  int64_t len;
  size_t gather;
  if ((s = scan_inputs(c, p, 1, NULL, &len, &gather))) return s;
  const kiln_tensor *x0 = kx_input(c, 1 + p->n_state), *lens = kx_input(c, 0);
  int64_t batch = x0->dims[0], max_len = x0->rank > 1 ? x0->dims[1] : 0;
  for (int i = 0; i < p->n_in; i++) {
    const kiln_tensor *x = kx_input(c, 1 + p->n_state + i);
    if (x->rank < 2 || x->dims[0] != batch || x->dims[1] != max_len)
      return kiln_error(KILN_INVALID_ARGUMENT, "scan input %d must be [batch %lld, sequence %lld, ...]", i, (long long)batch, (long long)max_len);
  }
  for (int j = 0; j < p->n_state; j++) {
    const kiln_tensor *x = kx_input(c, 1 + j);
    if (!x || x->rank < 1 || x->dims[0] != batch)
      return kiln_error(KILN_INVALID_ARGUMENT, "state %d must be a tensor with the batch size %lld as its first dimension", j, (long long)batch);
  }
  if (kx_input_value(c, 0) && (!lens || lens->dtype != KILN_INT64 || lens->rank != 1 || lens->dims[0] != batch))
    return kiln_error(KILN_INVALID_ARGUMENT, "sequence_lens must be an int64 tensor of shape [%lld]", (long long)batch);
  scan_state st = {0};
  if ((s = scan_state_init(c, p, 0, &st))) return s;
  for (int64_t b = 0; b < batch && !s; b++) {
    int64_t n = lens ? ((const int64_t *)lens->data)[b] : max_len;
    if (n < 0 || n > max_len)
      s = kiln_error(KILN_INVALID_ARGUMENT, "sequence_lens[%lld] is %lld, outside 0..%lld", (long long)b, (long long)n, (long long)max_len);
    else
      s = scan8_entry(c, body, p, &st, b, n);
  }
  /* outputs no batch entry shaped (an empty batch, or no step at all) */
  for (int j = 0; j < p->n_state && !s; j++)
    if (!st.ys[j]) s = emit(c, j, kx_input_value(c, 1 + j));
  for (int k = 0; k < p->n_out && !s; k++) {
    int i = p->n_state + k;
    if (!st.ys[i] && kx_has_output(c, i)) s = declared_scan_output(c, i, &max_len, 1, 0, batch);
  }
  scan_state_free(&st, p);
  return s;
}

/* ---------------------------------------------------------------- SequenceMap */

static kiln_status sequence_map_prepare(kx_node *n) {
  if (n->n_in < 1 || n->n_out < 1) return kiln_error(KILN_INVALID_ARGUMENT, "SequenceMap needs at least one input and one output");
  return require_graph(n, "body");
}

static kiln_status sequence_map_run(kx_ctx *c) {
  const kx_node *n = c->node;
  const kx_graph *body = kx_node_subgraph(n, "body");
  kiln_status s;
  if ((s = check_arity(c, body, "body", n->n_in, n->n_out))) return s;
  const kiln_value *seq = kx_input_value(c, 0);
  if (!seq || seq->kind != KILN_VALUE_SEQUENCE) return kiln_error(KILN_INVALID_ARGUMENT, "input 0 must be a sequence, got %s", kx_value_kind_name(seq));
  for (int i = 1; i < n->n_in; i++) {
    const kiln_value *v = kx_input_value(c, i);
    if (!v || v->kind == KILN_VALUE_NONE)
      return kiln_error(KILN_INVALID_ARGUMENT, "input %d must be a sequence or a tensor, got %s", i, kx_value_kind_name(v));
    if (v->kind == KILN_VALUE_SEQUENCE && v->count != seq->count)
      return kiln_error(KILN_INVALID_ARGUMENT, "input %d is a sequence of %zu items, input 0 has %zu", i, v->count, seq->count);
  }
  size_t bytes = (size_t)n->n_in * sizeof(kiln_value) + (size_t)(n->n_in + 2 * n->n_out) * sizeof(void *);
  char *mem = kx_scratch(c, bytes);
  if (!mem) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  kiln_value *items = (kiln_value *)mem;        /* [n_in]: views of this iteration's items */
  const kiln_value **in = (const kiln_value **)(items + n->n_in), **out = in + n->n_in;
  kiln_value **ys = (kiln_value **)(out + n->n_out);
  for (int k = 0; k < n->n_out; k++) {
    ys[k] = kx_has_output(c, k) ? kx_output_value(c, k) : NULL;
    if (!ys[k]) continue;
    int rank;
    int64_t dims[KILN_MAX_RANK];
    ys[k]->kind = KILN_VALUE_SEQUENCE; /* the declared dtype tells an empty result's item type */
    declared_output(n, "body", k, &ys[k]->elem_dtype, &rank, dims);
  }
  for (size_t t = 0; t < seq->count; t++) {
    for (int i = 0; i < n->n_in; i++) {
      const kiln_value *v = kx_input_value(c, i);
      if (v->kind == KILN_VALUE_SEQUENCE) {
        items[i] = (kiln_value){.kind = KILN_VALUE_TENSOR, .tensor = v->items[t]};
        items[i].tensor.owner = NULL; /* a view */
        v = &items[i];
      }
      in[i] = v;
    }
    if ((s = c->api->run_graph(c, body, in, n->n_in, out))) return kiln_status_prefix(s, "body, item %zu: ", t);
    for (int k = 0; k < n->n_out; k++) {
      if (out[k]->kind != KILN_VALUE_TENSOR)
        return kiln_error(KILN_INVALID_ARGUMENT, "body, item %zu: output %d must be a tensor, got %s", t, k, kx_value_kind_name(out[k]));
      if (!ys[k]) continue;
      if (t == 0) ys[k]->elem_dtype = out[k]->tensor.dtype;
      /* with take = 0 the tensor is only read */
      if ((s = kiln_value_seq_append(ys[k], (kiln_tensor *)&out[k]->tensor, 0))) return s;
    }
  }
  return NULL;
}

const kx_op kx_ops_control[] = {
    {"", "If", 1, 0, if_prepare, if_run, NULL, 0},
    {"", "Loop", 1, 0, loop_prepare, loop_run, NULL, 0},
    {"", "Scan", 8, 8, scan_prepare, scan8_run, NULL, 0},
    {"", "Scan", 9, 0, scan_prepare, scan_run, NULL, 0},
    {"", "SequenceMap", 17, 0, sequence_map_prepare, sequence_map_run, NULL, 0},
    {0},
};
