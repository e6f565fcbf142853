/* Graph rewrites at load time, the ones ONNX Runtime also does for exported models:
 *   - constant folding: a deterministic node whose inputs are all constants runs once, here, and
 *     its outputs become constants (exporters leave Identity, Reshape, Cast and shape arithmetic
 *     on weights; folding them lets kernels see their weights at prepare time);
 *   - fusion: a bias Add into the MatMul before it, Relu / LeakyRelu / Clip into the node that
 *     produces their input, and the decomposed forms of GELU and LayerNorm that torch.onnx
 *     emits into single Gelu / LayerNormalization nodes.
 * Every rewrite keeps the graph's results (tests compare fused and unfused runs). */
#include "graph/graph.h"
#include "ops/registry.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Folded outputs larger than this stay computed at run time, so that folding never multiplies a
 * model's resident size (e.g. a ConstantOfShape of a large shape). */
#define MAX_FOLD_BYTES ((size_t)16 << 20)

/* ---------------------------------------------------------------- constant folding */

/* The executor API for a node run once at load: outputs are owned constants of the graph. */
typedef struct fold_run {
  kx_graph *g;
  void *scratch;
  kiln_tensor tmp[4]; /* outputs the graph does not use */
  int n_tmp;
  size_t bytes;
} fold_run;

static kiln_status fold_output(kx_ctx *c, int i, kiln_dtype dtype, int rank, const int64_t *dims, kiln_tensor **out) {
  fold_run *r = c->exec;
  int v = i < c->node->n_out ? c->node->out[i] : -1;
  kiln_tensor shape = {0}, *t;
  kiln_status s = kiln_tensor_set_shape(&shape, dtype, rank, dims);
  if (s) return s;
  if (r->bytes + kiln_tensor_nbytes(&shape) > MAX_FOLD_BYTES) /* checked before allocating */
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "too large to fold");
  if (v >= 0) {
    kiln_value_release(&r->g->vals[v].konst);
    t = &r->g->vals[v].konst.tensor;
  } else if (r->n_tmp < (int)(sizeof r->tmp / sizeof r->tmp[0])) {
    t = &r->tmp[r->n_tmp++];
  } else {
    return kiln_error(KILN_INTERNAL, "too many unused outputs");
  }
  if ((s = kiln_tensor_alloc(t, dtype, rank, dims))) return s;
  r->bytes += kiln_tensor_nbytes(t);
  *out = t;
  return NULL;
}

static kiln_status fold_output_view(kx_ctx *c, int i, int rank, const int64_t *dims, kiln_tensor **out) {
  /* the view of a constant stays valid: the constant lives as long as the graph */
  fold_run *r = c->exec;
  const kiln_tensor *src = &c->in[0]->tensor;
  int v = c->node->out[i];
  kiln_tensor view = {0};
  kiln_status s = kiln_tensor_set_shape(&view, src->dtype, rank, dims);
  if (s) return s;
  view.data = src->data;
  if (v < 0) {
    if (r->n_tmp == (int)(sizeof r->tmp / sizeof r->tmp[0])) return kiln_error(KILN_INTERNAL, "too many unused outputs");
    r->tmp[r->n_tmp] = view;
    *out = &r->tmp[r->n_tmp++];
    return NULL;
  }
  kiln_value_release(&r->g->vals[v].konst);
  r->g->vals[v].konst.tensor = view;
  *out = &r->g->vals[v].konst.tensor;
  return NULL;
}

static kiln_value *fold_output_value(kx_ctx *c, int i) {
  fold_run *r = c->exec;
  int v = i < c->node->n_out ? c->node->out[i] : -1;
  if (v < 0) return NULL;
  kiln_value_release(&r->g->vals[v].konst);
  return &r->g->vals[v].konst;
}

static void *fold_scratch(kx_ctx *c, size_t bytes) {
  fold_run *r = c->exec;
  if (bytes > MAX_FOLD_BYTES) return NULL; /* the kernel fails; the node runs at run time */
  free(r->scratch);
  r->scratch = malloc(bytes ? bytes : 1);
  return r->scratch;
}

static const kx_exec_api fold_api = {
    .output = fold_output,
    .output_view = fold_output_view,
    .output_value = fold_output_value,
    .scratch = fold_scratch,
};

static int foldable(const kx_graph *g, const kx_node *n) {
  if (!n->op || n->op->nondeterministic || n->n_subgraphs || n->n_out < 1) return 0;
  for (int k = 0; k < n->n_in; k++)
    if (n->in[k] >= 0 && g->vals[n->in[k]].kind != KX_VAL_CONST) return 0;
  for (int k = 0; k < g->n_outputs; k++) /* keep graph outputs computed by nodes */
    for (int o = 0; o < n->n_out; o++)
      if (g->outputs[k] == n->out[o]) return 0;
  return 1;
}

/* Runs n now; on success its outputs become constants and 1 is returned. A node that fails or
 * whose outputs are too large stays as it is, to run (and report) at run time. */
static int fold(kx_graph *g, kx_node *n) {
  fold_run r = {.g = g};
  const kiln_value *in[64];
  if (n->n_in > 64) return 0;
  for (int k = 0; k < n->n_in; k++) in[k] = n->in[k] >= 0 ? &g->vals[n->in[k]].konst : NULL;
  kx_ctx c = {.node = n, .in = in, .api = &fold_api, .exec = &r};
  kiln_status s = n->op->run(&c);
  free(r.scratch);
  for (int i = 0; i < r.n_tmp; i++) kiln_tensor_release(&r.tmp[i]);
  int ok = !s && r.bytes <= MAX_FOLD_BYTES;
  kiln_status_free(s);
  for (int o = 0; o < n->n_out; o++) {
    int v = n->out[o];
    if (v < 0) continue;
    if (ok) {
      g->vals[v].kind = KX_VAL_CONST;
      if (g->vals[v].konst.kind == KILN_VALUE_TENSOR && !g->vals[v].konst.tensor.data &&
          kiln_tensor_numel(&g->vals[v].konst.tensor) > 0)
        ok = 0; /* an output the kernel never produced */
    }
  }
  if (!ok)
    for (int o = 0; o < n->n_out; o++)
      if (n->out[o] >= 0) {
        kiln_value_release(&g->vals[n->out[o]].konst);
        g->vals[n->out[o]].kind = KX_VAL_NODE;
      }
  return ok;
}

/* Points every input of n that is a constant at the constant's tensor. */
static void set_consts(const kx_graph *g, kx_node *n) {
  for (int k = 0; k < n->n_in; k++) {
    const kx_val *v = n->in[k] >= 0 ? &g->vals[n->in[k]] : NULL;
    n->consts[k] = v && v->kind == KX_VAL_CONST && v->konst.kind == KILN_VALUE_TENSOR ? &v->konst.tensor : NULL;
  }
}

static kiln_status prepare(kx_node *n) {
  if (!n->op || !n->op->prepare) return NULL;
  char label[192];
  kiln_status s = n->op->prepare(n);
  return s ? kiln_status_prefix(s, "%s: ", kx_node_label(n, label, sizeof label)) : NULL;
}

kiln_status kx_prepare_and_fold(kx_graph *g, unsigned char *gone) {
  for (int pos = 0; pos < g->n_nodes; pos++) {
    kx_node *n = &g->nodes[pos];
    set_consts(g, n); /* earlier folds may have turned inputs into constants */
    kiln_status s = prepare(n);
    if (s) return s;
    if (foldable(g, n) && fold(g, n)) gone[pos] = 1;
  }
  return NULL;
}

/* ---------------------------------------------------------------- fusion */

typedef struct fuser {
  kx_graph *g;
  unsigned char *gone;
  int *readers;  /* per value: how many node inputs read it (graph outputs and captures count 2) */
  int *producer; /* per value: position of the node producing it, -1 for others */
} fuser;

/* The only live node reading v (with v read once in all), or NULL. */
static kx_node *sole_reader(const fuser *f, int v, int *pos_out) {
  if (v < 0 || f->readers[v] != 1) return NULL;
  for (int pos = f->producer[v] + 1; pos < f->g->n_nodes; pos++) {
    if (f->gone[pos]) continue;
    kx_node *n = &f->g->nodes[pos];
    for (int k = 0; k < n->n_in; k++)
      if (n->in[k] == v) {
        if (pos_out) *pos_out = pos;
        return n;
      }
  }
  return NULL;
}

static int is_op(const kx_node *n, const char *op) {
  return n && n->op && !n->domain[0] && strcmp(n->op_type, op) == 0 && n->post.kind == KX_ACT_NONE && !n->post_bias;
}

/* The constant float32 tensor behind input k of n, or NULL. */
static const kiln_tensor *const_float(const kx_node *n, int k) {
  const kiln_tensor *t = k < n->n_in ? n->consts[k] : NULL;
  return t && t->dtype == KILN_FLOAT ? t : NULL;
}

static int const_scalar_is(const kx_node *n, int k, float want) {
  const kiln_tensor *t = const_float(n, k);
  return t && kiln_tensor_numel(t) == 1 && fabsf(*(const float *)t->data - want) <= 1e-5f * fabsf(want);
}

/* For a binary node reading v: the index of its other input (0 or 1), or -1. */
static int other_input(const kx_node *n, int v) {
  if (n->n_in != 2 || n->n_out != 1) return -1;
  if (n->in[0] == v) return 1;
  if (n->in[1] == v) return 0;
  return -1;
}

/* n's output 0 becomes `out`; the node that produced `out` is gone. */
static void take_output(fuser *f, kx_node *n, int pos_gone, int out) {
  ((int *)n->out)[0] = out;
  f->gone[pos_gone] = 1;
  f->producer[out] = (int)(n - f->g->nodes);
}

/* MatMul(A, W) + bias, W a constant [K, N] and the bias a constant float [N]. */
static void fuse_bias(fuser *f, kx_node *n) {
  if (!is_op(n, "MatMul") || n->out[0] < 0) return;
  const kiln_tensor *w = const_float(n, 1);
  int pos;
  kx_node *add = sole_reader(f, n->out[0], &pos);
  int k = add && is_op(add, "Add") ? other_input(add, n->out[0]) : -1;
  const kiln_tensor *bias = k >= 0 ? const_float(add, k) : NULL;
  if (!w || w->rank != 2 || !bias || bias->rank != 1 || bias->dims[0] != w->dims[1]) return;
  n->post_bias = bias;
  take_output(f, n, pos, add->out[0]);
}

static void fuse_activation(fuser *f, kx_node *n) {
  if (!n->op || !n->op->fuse_activation || n->post.kind != KX_ACT_NONE || n->n_out < 1) return;
  int pos;
  kx_node *a = sole_reader(f, n->out[0], &pos);
  kx_activation act;
  if (a && a->in[0] == n->out[0] && a->n_out == 1 && a->out[0] >= 0 && a->op && a->op->as_activation &&
      a->op->as_activation(a, &act)) {
    n->post = act;
    take_output(f, n, pos, a->out[0]);
  }
}

/* A node standing for a matched pattern: replaces node `last` (which keeps its output), with
 * inputs `in` and the attributes of `proto`, then prepared. */
static kiln_status replace_node(fuser *f, kx_node *last, Onnx__NodeProto *proto, const char *op, int opset,
                                const int *in, int n_in) {
  kx_graph *g = f->g;
  Onnx__NodeProto **protos = realloc(g->synthesized, (size_t)(g->n_synthesized + 1) * sizeof *protos);
  int *ins = malloc((size_t)n_in * sizeof *ins);
  const kiln_tensor **consts = calloc((size_t)n_in, sizeof *consts);
  if (protos) g->synthesized = protos;
  if (!protos || !ins || !consts) {
    free(ins);
    free(consts);
    onnx__node_proto__free_unpacked(proto, NULL);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  }
  g->synthesized[g->n_synthesized++] = proto;
  proto->op_type = strdup(op);
  proto->domain = strdup("");
  proto->name = strdup(last->name);
  if (!proto->op_type || !proto->domain || !proto->name) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  if (last->params) {
    if (last->op->release) last->op->release(last->params);
    else free(last->params);
    last->params = NULL;
  }
  memcpy(ins, in, (size_t)n_in * sizeof *ins);
  free((void *)last->in);
  free((void *)last->consts);
  last->in = ins;
  last->consts = consts;
  last->n_in = n_in;
  last->proto = proto;
  last->op_type = proto->op_type;
  last->opset = opset;
  last->op = kx_op_find("", op, opset);
  if (!last->op) return kiln_error(KILN_INTERNAL, "no kernel for fused %s", op);
  if (n_in > g->max_node_inputs) g->max_node_inputs = n_in;
  set_consts(g, last);
  return prepare(last);
}

/* An attribute for a synthesized node. */
static Onnx__AttributeProto *new_attr(const char *name, Onnx__AttributeProto__AttributeType type) {
  Onnx__AttributeProto *a = malloc(sizeof *a);
  if (!a) return NULL;
  onnx__attribute_proto__init(a);
  a->name = strdup(name);
  a->has_type = 1;
  a->type = type;
  if (!a->name) {
    free(a);
    return NULL;
  }
  return a;
}

static Onnx__NodeProto *new_proto(int n_attr) {
  Onnx__NodeProto *p = malloc(sizeof *p);
  if (!p) return NULL;
  onnx__node_proto__init(p);
  if (n_attr && !(p->attribute = calloc((size_t)n_attr, sizeof *p->attribute))) {
    free(p);
    return NULL;
  }
  return p;
}

/* torch.onnx's GELU: y = (x * (erf(x / sqrt 2) + 1)) * 0.5, as Div, Erf, Add, Mul, Mul. */
static kiln_status fuse_gelu(fuser *f, kx_node *div) {
  if (!is_op(div, "Div") || div->n_in != 2 || !const_scalar_is(div, 1, 1.41421356f)) return NULL;
  int x = div->in[0], p_erf, p_add, p_mul, p_half;
  kx_node *erf = sole_reader(f, div->out[0], &p_erf);
  if (!is_op(erf, "Erf")) return NULL;
  kx_node *add = sole_reader(f, erf->out[0], &p_add);
  int k = add && is_op(add, "Add") ? other_input(add, erf->out[0]) : -1;
  if (k < 0 || !const_scalar_is(add, k, 1.0f)) return NULL;
  kx_node *mul = sole_reader(f, add->out[0], &p_mul);
  if (!is_op(mul, "Mul") || other_input(mul, add->out[0]) < 0 || mul->in[other_input(mul, add->out[0])] != x) return NULL;
  kx_node *half = sole_reader(f, mul->out[0], &p_half);
  k = half && is_op(half, "Mul") ? other_input(half, mul->out[0]) : -1;
  if (k < 0 || !const_scalar_is(half, k, 0.5f)) return NULL;
  Onnx__NodeProto *proto = new_proto(0);
  if (!proto) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  f->gone[div - f->g->nodes] = f->gone[p_erf] = f->gone[p_add] = f->gone[p_mul] = 1;
  return replace_node(f, half, proto, "Gelu", 20, &x, 1);
}

static int reduces_last_axis(const kx_node *n) {
  const int64_t *axes;
  return is_op(n, "ReduceMean") && n->n_in == 1 && kx_attr_ints(n->proto, "axes", &axes) == 1 && axes[0] == -1 &&
         kx_attr_int(n->proto, "keepdims", 1) == 1;
}

/* torch.onnx's LayerNorm over the last axis: d = x - mean(x); y = d / sqrt(mean(d^2) + eps) *
 * gamma + beta, as ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add. */
static kiln_status fuse_layer_norm(fuser *f, kx_node *mean) {
  if (!reduces_last_axis(mean)) return NULL;
  int x = mean->in[0], p_sub = -1, p_pow = -1, p_var, p_eps, p_sqrt, p_div = -1, p_mul, p_add;
  kx_node *sub = NULL;
  for (int pos = (int)(mean - f->g->nodes) + 1; pos < f->g->n_nodes && !sub; pos++)
    if (!f->gone[pos] && is_op(&f->g->nodes[pos], "Sub") && f->g->nodes[pos].n_in == 2 &&
        f->g->nodes[pos].in[0] == x && f->g->nodes[pos].in[1] == mean->out[0])
      sub = &f->g->nodes[p_sub = pos];
  if (!sub || f->readers[mean->out[0]] != 1 || f->readers[sub->out[0]] != 2) return NULL;
  int d = sub->out[0];
  kx_node *pow = NULL, *div = NULL; /* d's two readers */
  for (int pos = p_sub + 1; pos < f->g->n_nodes; pos++) {
    kx_node *n = &f->g->nodes[pos];
    if (f->gone[pos] || n->n_in != 2) continue;
    if (!pow && is_op(n, "Pow") && n->in[0] == d && const_scalar_is(n, 1, 2.0f)) pow = &f->g->nodes[p_pow = pos];
    else if (!div && is_op(n, "Div") && n->in[0] == d) div = &f->g->nodes[p_div = pos];
  }
  if (!pow || !div) return NULL;
  kx_node *var = sole_reader(f, pow->out[0], &p_var);
  if (!var || !reduces_last_axis(var)) return NULL;
  kx_node *eps = sole_reader(f, var->out[0], &p_eps);
  int k = eps && is_op(eps, "Add") ? other_input(eps, var->out[0]) : -1;
  const kiln_tensor *eps_t = k >= 0 ? const_float(eps, k) : NULL;
  if (!eps_t || kiln_tensor_numel(eps_t) != 1) return NULL;
  kx_node *sqrt = sole_reader(f, eps->out[0], &p_sqrt);
  if (!is_op(sqrt, "Sqrt") || sole_reader(f, sqrt->out[0], NULL) != div || div->in[1] != sqrt->out[0]) return NULL;
  p_div = (int)(div - f->g->nodes);
  kx_node *mul = sole_reader(f, div->out[0], &p_mul);
  int kg = mul && is_op(mul, "Mul") ? other_input(mul, div->out[0]) : -1;
  const kiln_tensor *gamma = kg >= 0 ? const_float(mul, kg) : NULL;
  kx_node *add = mul ? sole_reader(f, mul->out[0], &p_add) : NULL;
  int kb = add && is_op(add, "Add") ? other_input(add, mul->out[0]) : -1;
  const kiln_tensor *beta = kb >= 0 ? const_float(add, kb) : NULL;
  if (!gamma || !beta || gamma->rank != 1 || beta->rank != 1 || gamma->dims[0] != beta->dims[0]) return NULL;
  int in[3] = {x, mul->in[kg], add->in[kb]};
  Onnx__NodeProto *proto = new_proto(2);
  Onnx__AttributeProto *axis = new_attr("axis", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
  Onnx__AttributeProto *epsilon = new_attr("epsilon", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
  if (proto && axis && epsilon) {
    axis->has_i = 1;
    axis->i = -1;
    epsilon->has_f = 1;
    epsilon->f = *(const float *)eps_t->data;
    proto->attribute[proto->n_attribute++] = axis;
    proto->attribute[proto->n_attribute++] = epsilon;
  } else {
    if (axis) onnx__attribute_proto__free_unpacked(axis, NULL);
    if (epsilon) onnx__attribute_proto__free_unpacked(epsilon, NULL);
    if (proto) onnx__node_proto__free_unpacked(proto, NULL);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  }
  int patterns[] = {(int)(mean - f->g->nodes), p_sub, p_pow, p_var, p_eps, p_sqrt, p_div, p_mul};
  for (size_t i = 0; i < sizeof patterns / sizeof patterns[0]; i++) f->gone[patterns[i]] = 1;
  return replace_node(f, add, proto, "LayerNormalization", 17, in, 3);
}

/* Counts the readers of every value among the live nodes (captures and graph outputs count 2,
 * so that nothing they read is fused away). */
static void count_readers(fuser *f) {
  const kx_graph *g = f->g;
  memset(f->readers, 0, ((size_t)g->n_vals + 1) * sizeof *f->readers);
  for (int v = 0; v < g->n_vals; v++) f->producer[v] = -1;
  for (int pos = 0; pos < g->n_nodes; pos++) {
    const kx_node *n = &g->nodes[pos];
    if (f->gone[pos]) continue;
    for (int k = 0; k < n->n_in; k++)
      if (n->in[k] >= 0) f->readers[n->in[k]]++;
    for (int k = 0; k < n->n_out; k++)
      if (n->out[k] >= 0) f->producer[n->out[k]] = pos;
    for (const int *v = g->implicit[pos]; v && *v >= 0; v++) f->readers[*v] += 2;
  }
  for (int i = 0; i < g->n_outputs; i++) f->readers[g->outputs[i]] += 2;
}

kiln_status kx_fuse(kx_graph *g, unsigned char *gone) {
  fuser f = {.g = g, .gone = gone};
  f.readers = calloc((size_t)g->n_vals + 1, sizeof *f.readers);
  f.producer = malloc(((size_t)g->n_vals + 1) * sizeof *f.producer);
  kiln_status s = NULL;
  if (!f.readers || !f.producer) {
    s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    goto done;
  }
  count_readers(&f);
  for (int pos = 0; pos < g->n_nodes && !s; pos++)
    if (!gone[pos] && !(s = fuse_gelu(&f, &g->nodes[pos]))) s = gone[pos] ? NULL : fuse_layer_norm(&f, &g->nodes[pos]);
  if (s) goto done;
  count_readers(&f); /* the patterns above read their input once where they read it twice */
  for (int pos = 0; pos < g->n_nodes; pos++) {
    if (gone[pos]) continue;
    fuse_bias(&f, &g->nodes[pos]);
    fuse_activation(&f, &g->nodes[pos]);
  }
done:
  free(f.readers);
  free(f.producer);
  return s;
}
