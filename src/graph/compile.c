/* Graph compilation: names resolved to value ids, Constant nodes folded into constants, kernels
 * looked up by opset, nodes sorted topologically, lifetimes computed and kernels prepared.
 * Subgraphs (If/Loop/Scan bodies) compile recursively and capture the outer values they read. */
#include "graph/graph.h"
#include "ops/registry.h"

#include <stdlib.h>
#include <string.h>

typedef struct scope {
  struct scope *parent;
  kx_graph *g;
  int cap_vals;
  const char **keys; /* open-addressing name -> value id map */
  int *ids;
  size_t cap;
  int outer_cap;
} scope;

static uint64_t hash_name(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

static int map_get(const scope *s, const char *name) {
  if (!s->cap) return -1;
  for (size_t i = hash_name(name) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
    if (!s->keys[i]) return -1;
    if (strcmp(s->keys[i], name) == 0) return s->ids[i];
  }
}

static kiln_status map_put(scope *s, const char *name, int id) {
  if ((size_t)(s->g->n_vals + 1) * 2 > s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 64;
    while (cap < (size_t)(s->g->n_vals + 1) * 2) cap *= 2;
    const char **keys = calloc(cap, sizeof *keys);
    int *ids = calloc(cap, sizeof *ids);
    if (!keys || !ids) {
      free(keys);
      free(ids);
      return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    }
    for (size_t i = 0; i < s->cap; i++) {
      if (!s->keys[i]) continue;
      size_t j = hash_name(s->keys[i]) & (cap - 1);
      while (keys[j]) j = (j + 1) & (cap - 1);
      keys[j] = s->keys[i];
      ids[j] = s->ids[i];
    }
    free(s->keys);
    free(s->ids);
    s->keys = keys;
    s->ids = ids;
    s->cap = cap;
  }
  size_t i = hash_name(name) & (s->cap - 1);
  while (s->keys[i]) i = (i + 1) & (s->cap - 1);
  s->keys[i] = name;
  s->ids[i] = id;
  return NULL;
}

static kiln_status add_val(scope *s, const char *name, kx_val_kind kind, int *id) {
  kx_graph *g = s->g;
  if (g->n_vals == s->cap_vals) {
    int cap = s->cap_vals ? s->cap_vals * 2 : 64;
    kx_val *v = realloc(g->vals, (size_t)cap * sizeof *v);
    if (!v) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    g->vals = v;
    s->cap_vals = cap;
  }
  kx_val *v = &g->vals[g->n_vals];
  memset(v, 0, sizeof *v);
  v->name = name;
  v->kind = kind;
  v->producer = -1;
  v->last_use = -1;
  v->view_of = -1;
  *id = g->n_vals++;
  return name && *name ? map_put(s, name, *id) : NULL;
}

/* Finds a name in this graph or, capturing it, in an enclosing one; -1 when nowhere. */
static int lookup(scope *s, const char *name, kiln_status *err) {
  int id = map_get(s, name);
  if (id >= 0 || !s->parent) return id;
  int pid = lookup(s->parent, name, err);
  if (pid < 0) return -1;
  kx_graph *g = s->g;
  if (g->n_outer == s->outer_cap) {
    int cap = s->outer_cap ? s->outer_cap * 2 : 8;
    int *l = realloc(g->outer_local, (size_t)cap * sizeof *l);
    if (l) g->outer_local = l;
    int *p = realloc(g->outer_parent, (size_t)cap * sizeof *p);
    if (p) g->outer_parent = p;
    if (!l || !p) {
      *err = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
      return -1;
    }
    s->outer_cap = cap;
  }
  if ((*err = add_val(s, name, KX_VAL_OUTER, &id))) return -1;
  g->outer_local[g->n_outer] = id;
  g->outer_parent[g->n_outer] = pid;
  g->n_outer++;
  return id;
}

const char *kx_node_label(const kx_node *n, char *buf, size_t size) {
  if (n->name && *n->name) snprintf(buf, size, "node %d '%s' (%s)", n->index, n->name, n->op_type);
  else snprintf(buf, size, "node %d (%s)", n->index, n->op_type);
  return buf;
}

static void fill_info(const Onnx__ValueInfoProto *vi, kiln_value_info *info) {
  memset(info, 0, sizeof *info);
  info->name = vi->name ? vi->name : "";
  info->rank = -1;
  const Onnx__TypeProto *t = vi->type;
  if (t && t->value_case == ONNX__TYPE_PROTO__VALUE_OPTIONAL_TYPE && t->optional_type) {
    info->optional = 1;
    t = t->optional_type->elem_type;
  }
  if (t && t->value_case == ONNX__TYPE_PROTO__VALUE_SEQUENCE_TYPE && t->sequence_type) {
    info->kind = KILN_VALUE_SEQUENCE;
    t = t->sequence_type->elem_type;
  }
  if (!t || t->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !t->tensor_type) return;
  const Onnx__TypeProto__Tensor *tt = t->tensor_type;
  if (tt->has_elem_type && tt->elem_type > 0 && tt->elem_type < KILN_DTYPE_COUNT) info->dtype = (kiln_dtype)tt->elem_type;
  if (!tt->shape || tt->shape->n_dim > KILN_MAX_RANK) return;
  info->rank = (int)tt->shape->n_dim;
  for (int i = 0; i < info->rank; i++) {
    const Onnx__TensorShapeProto__Dimension *d = tt->shape->dim[i];
    info->dims[i] = -1;
    if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE && d->dim_value >= 0)
      info->dims[i] = d->dim_value;
    else if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM)
      info->dim_names[i] = d->dim_param;
  }
}

static int opset_of(const kx_compile_env *env, const char *domain, int64_t *version) {
  if (!domain || strcmp(domain, "ai.onnx") == 0) domain = "";
  for (int i = 0; i < env->n_opsets; i++) {
    const char *d = env->opset_domains[i];
    if (strcmp(d, "ai.onnx") == 0) d = "";
    if (strcmp(d, domain) == 0) {
      *version = env->opset_versions[i];
      return 1;
    }
  }
  return 0;
}

/* The value of a Constant node, from whichever of its value attributes is set. */
static kiln_status constant_value(const Onnx__NodeProto *np, const kx_compile_env *env, kiln_tensor *t) {
  const Onnx__TensorProto *tp = kx_attr_tensor(np, "value");
  if (tp) return kx_tensor_from_proto(tp, &env->source, t);
  const Onnx__AttributeProto *a;
  kiln_status s;
  if ((a = kx_attr_find(np, "value_float")) && a->has_f) {
    if ((s = kiln_tensor_alloc(t, KILN_FLOAT, 0, NULL))) return s;
    *(float *)t->data = a->f;
  } else if ((a = kx_attr_find(np, "value_int")) && a->has_i) {
    if ((s = kiln_tensor_alloc(t, KILN_INT64, 0, NULL))) return s;
    *(int64_t *)t->data = a->i;
  } else if ((a = kx_attr_find(np, "value_floats"))) {
    int64_t n = (int64_t)a->n_floats;
    if ((s = kiln_tensor_alloc(t, KILN_FLOAT, 1, &n))) return s;
    if (n) memcpy(t->data, a->floats, (size_t)n * sizeof(float));
  } else if ((a = kx_attr_find(np, "value_ints"))) {
    int64_t n = (int64_t)a->n_ints;
    if ((s = kiln_tensor_alloc(t, KILN_INT64, 1, &n))) return s;
    if (n) memcpy(t->data, a->ints, (size_t)n * sizeof(int64_t));
  } else if ((a = kx_attr_find(np, "value_string")) && a->has_s) {
    if ((s = kiln_tensor_alloc(t, KILN_STRING, 0, NULL))) return s;
    char *str = strndup((const char *)a->s.data, a->s.len);
    if (!str) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    *(char **)t->data = str;
  } else if ((a = kx_attr_find(np, "value_strings"))) {
    int64_t n = (int64_t)a->n_strings;
    if ((s = kiln_tensor_alloc(t, KILN_STRING, 1, &n))) return s;
    for (int64_t i = 0; i < n; i++)
      if (!(((char **)t->data)[i] = strndup((const char *)a->strings[i].data, a->strings[i].len)))
        return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  } else if (kx_attr_find(np, "sparse_value")) {
    return kiln_error(KILN_UNIMPLEMENTED, "sparse_value constants are not supported");
  } else {
    return kiln_error(KILN_INVALID_ARGUMENT, "Constant has no value attribute");
  }
  return NULL;
}

static int is_constant_node(const Onnx__NodeProto *np) {
  return np->op_type && strcmp(np->op_type, "Constant") == 0 &&
         (!np->domain || !*np->domain || strcmp(np->domain, "ai.onnx") == 0);
}

static kiln_status note_unsupported(kx_compile_env *env, const char *op, const char *domain, int64_t opset) {
  char buf[256];
  snprintf(buf, sizeof buf, "'%s' (domain '%s', opset %lld)", op, domain ? domain : "", (long long)opset);
  for (int i = 0; i < env->n_unsupported; i++)
    if (strcmp(env->unsupported[i], buf) == 0) return NULL;
  char **u = realloc(env->unsupported, (size_t)(env->n_unsupported + 1) * sizeof *u);
  if (!u) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  env->unsupported = u;
  if (!(u[env->n_unsupported] = strdup(buf))) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  env->n_unsupported++;
  return NULL;
}

/* Per-node data gathered before sorting. */
typedef struct pending {
  const Onnx__NodeProto *proto;
  int index;
  int *in, *out;
  int n_in, n_out;
  int *implicit; /* -1 terminated */
  const kx_op *op;
  int opset;
  int n_sub;
  const char **sub_names;
  kx_graph **subs;
} pending;

static void free_pending(pending *p) {
  free(p->in);
  free(p->out);
  free(p->implicit);
  for (int i = 0; i < p->n_sub; i++) kx_graph_free(p->subs[i]);
  free(p->subs);
  free(p->sub_names);
}

/* Compiles the node's graph attributes and records the outer values they capture. */
static kiln_status compile_subgraphs(pending *p, kx_compile_env *env, scope *s) {
  const Onnx__NodeProto *np = p->proto;
  int n = 0;
  for (size_t i = 0; i < np->n_attribute; i++)
    if (np->attribute[i]->g) n++;
  if (!n) return NULL;
  p->subs = calloc((size_t)n, sizeof *p->subs);
  p->sub_names = calloc((size_t)n, sizeof *p->sub_names);
  if (!p->subs || !p->sub_names) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  int captured = 0;
  for (size_t i = 0; i < np->n_attribute; i++) {
    const Onnx__AttributeProto *a = np->attribute[i];
    if (!a->g) continue;
    kx_graph *sub;
    kiln_status st = kx_graph_compile(a->g, env, s->g, s, &sub);
    if (st) return kiln_status_prefix(st, "subgraph '%s': ", a->name ? a->name : "");
    p->sub_names[p->n_sub] = a->name ? a->name : "";
    p->subs[p->n_sub++] = sub;
    captured += sub->n_outer;
  }
  p->implicit = malloc((size_t)(captured + 1) * sizeof *p->implicit);
  if (!p->implicit) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  int k = 0;
  for (int j = 0; j < p->n_sub; j++)
    for (int i = 0; i < p->subs[j]->n_outer; i++) p->implicit[k++] = p->subs[j]->outer_parent[i];
  p->implicit[k] = -1;
  return NULL;
}

static kiln_status resolve_node(pending *p, kx_compile_env *env, scope *s, const char *label) {
  const Onnx__NodeProto *np = p->proto;
  kiln_status st = NULL;
  p->n_in = (int)np->n_input;
  p->in = malloc(((size_t)p->n_in + 1) * sizeof *p->in);
  if (!p->in) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  for (int i = 0; i < p->n_in; i++) {
    const char *name = np->input[i];
    if (!name || !*name) {
      p->in[i] = -1;
      continue;
    }
    p->in[i] = lookup(s, name, &st);
    if (st) return st;
    if (p->in[i] < 0) return kiln_error(KILN_INVALID_ARGUMENT, "%s: input '%s' is not produced by any node", label, name);
  }
  if ((st = compile_subgraphs(p, env, s))) return kiln_status_prefix(st, "%s: ", label);

  int64_t opset = 0;
  if (!opset_of(env, np->domain, &opset))
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: domain '%s' is not imported by the model", label, np->domain ? np->domain : "");
  p->opset = opset > 0x7fffffff ? 0x7fffffff : (int)opset;
  p->op = kx_op_find(np->domain, np->op_type, p->opset);
  if (!p->op) {
    if (!env->allow_unsupported)
      return kiln_error(KILN_UNIMPLEMENTED, "unsupported operator '%s' (domain '%s', opset %lld)", np->op_type,
                        np->domain ? np->domain : "", (long long)opset);
    return note_unsupported(env, np->op_type, np->domain, opset);
  }
  return NULL;
}

/* Kahn's algorithm over data and capture dependencies; order receives pending indices. */
static kiln_status sort_nodes(const kx_graph *g, const pending *pend, int n, const int *producer_of, int *order) {
  int *indegree = calloc((size_t)n + 1, sizeof *indegree);
  int *queue = malloc(((size_t)n + 1) * sizeof *queue);
  /* consumers as an adjacency list in CSR form */
  int *count = calloc((size_t)n + 1, sizeof *count);
  if (!indegree || !queue || !count) {
    free(indegree);
    free(queue);
    free(count);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  }
  int edges = 0;
  for (int i = 0; i < n; i++) {
    for (int k = 0; k < pend[i].n_in; k++)
      if (pend[i].in[k] >= 0 && producer_of[pend[i].in[k]] >= 0) count[producer_of[pend[i].in[k]]]++, edges++;
    for (const int *v = pend[i].implicit; v && *v >= 0; v++)
      if (producer_of[*v] >= 0) count[producer_of[*v]]++, edges++;
  }
  int *start = malloc(((size_t)n + 1) * sizeof *start);
  int *adj = malloc(((size_t)edges + 1) * sizeof *adj);
  if (!start || !adj) {
    free(indegree); free(queue); free(count); free(start); free(adj);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  }
  start[0] = 0;
  for (int i = 0; i < n; i++) start[i + 1] = start[i] + count[i];
  memset(count, 0, (size_t)n * sizeof *count);
  for (int i = 0; i < n; i++) {
    for (int k = 0; k < pend[i].n_in; k++) {
      int v = pend[i].in[k];
      if (v >= 0 && producer_of[v] >= 0) adj[start[producer_of[v]] + count[producer_of[v]]++] = i, indegree[i]++;
    }
    for (const int *v = pend[i].implicit; v && *v >= 0; v++)
      if (producer_of[*v] >= 0) adj[start[producer_of[*v]] + count[producer_of[*v]]++] = i, indegree[i]++;
  }
  int head = 0, tail = 0;
  for (int i = 0; i < n; i++)
    if (indegree[i] == 0) queue[tail++] = i;
  while (head < tail) {
    int i = queue[head++];
    order[head - 1] = i;
    for (int e = start[i]; e < start[i + 1]; e++)
      if (--indegree[adj[e]] == 0) queue[tail++] = adj[e];
  }
  kiln_status st = NULL;
  if (tail < n) {
    int stuck = 0;
    while (stuck < n && indegree[stuck] == 0) stuck++;
    char label[160];
    kx_node tmp = {.index = pend[stuck].index, .op_type = pend[stuck].proto->op_type, .name = pend[stuck].proto->name};
    st = kiln_error(KILN_INVALID_ARGUMENT, "%s: the graph has a cycle through this node", kx_node_label(&tmp, label, sizeof label));
  }
  (void)g;
  free(indegree);
  free(queue);
  free(count);
  free(start);
  free(adj);
  return st;
}

static void free_node_arrays(kx_node *n) {
  for (int j = 0; j < n->n_subgraphs; j++) kx_graph_free(n->subgraphs[j]);
  free(n->subgraphs);
  free(n->subgraph_names);
  free((void *)n->in);
  free((void *)n->out);
  free((void *)n->consts);
}

/* Drops the nodes the rewrites marked gone, with what they own. */
static void drop_gone(kx_graph *g, const unsigned char *gone) {
  int kept = 0;
  for (int pos = 0; pos < g->n_nodes; pos++) {
    kx_node *n = &g->nodes[pos];
    if (!gone[pos]) {
      g->nodes[kept] = *n;
      g->implicit[kept++] = g->implicit[pos];
      continue;
    }
    if (n->params) {
      if (n->op && n->op->release) n->op->release(n->params);
      else free(n->params);
    }
    free_node_arrays(n);
    free(g->implicit[pos]);
  }
  g->n_nodes = kept;
}

kiln_status kx_graph_compile(const Onnx__GraphProto *gp, kx_compile_env *env, const kx_graph *parent,
                             void *parent_scope, kx_graph **out) {
  kx_graph *g = calloc(1, sizeof *g);
  if (!g) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  g->parent = parent;
  g->name = gp->name ? gp->name : "";
  scope s = {.parent = parent_scope, .g = g};
  kiln_status st = NULL;
  int n_nodes = 0;
  pending *pend = calloc(gp->n_node + 1, sizeof *pend);
  int *producer_of = NULL, *order = NULL;
  unsigned char *gone = NULL;
  char label[192];
  if (!pend) {
    st = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    goto done;
  }

  /* initializers */
  for (size_t i = 0; i < gp->n_initializer && !st; i++) {
    const Onnx__TensorProto *tp = gp->initializer[i];
    if (!tp->name || !*tp->name) {
      st = kiln_error(KILN_INVALID_ARGUMENT, "initializer %zu has no name", i);
      break;
    }
    if (map_get(&s, tp->name) >= 0) {
      st = kiln_error(KILN_INVALID_ARGUMENT, "initializer '%s' is defined twice", tp->name);
      break;
    }
    int id;
    if ((st = add_val(&s, tp->name, KX_VAL_CONST, &id))) break;
    g->vals[id].konst.kind = KILN_VALUE_TENSOR;
    st = kx_tensor_from_proto(tp, &env->source, &g->vals[id].konst.tensor);
  }
  if (!st && gp->n_sparse_initializer)
    st = kiln_error(KILN_UNIMPLEMENTED, "sparse initializers are not supported");
  if (st) goto done;

  /* inputs; one that is also an initializer keeps the initializer's value and is not fed */
  g->inputs = malloc((gp->n_input + 1) * sizeof *g->inputs);
  g->input_info = calloc(gp->n_input + 1, sizeof *g->input_info);
  if (!g->inputs || !g->input_info) {
    st = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    goto done;
  }
  for (size_t i = 0; i < gp->n_input; i++) {
    const char *name = gp->input[i]->name;
    if (!name || !*name) {
      st = kiln_error(KILN_INVALID_ARGUMENT, "graph input %zu has no name", i);
      goto done;
    }
    int id = map_get(&s, name);
    if (id >= 0 && g->vals[id].kind == KX_VAL_CONST) continue;
    if (id >= 0) {
      st = kiln_error(KILN_INVALID_ARGUMENT, "graph input '%s' is listed twice", name);
      goto done;
    }
    if ((st = add_val(&s, name, KX_VAL_INPUT, &id))) goto done;
    fill_info(gp->input[i], &g->input_info[g->n_inputs]);
    g->inputs[g->n_inputs++] = id;
  }

  /* node outputs (all first, so that inputs and subgraphs may refer to any of them) */
  for (size_t i = 0; i < gp->n_node; i++) {
    const Onnx__NodeProto *np = gp->node[i];
    kx_node tmp = {.index = (int)i, .op_type = np->op_type ? np->op_type : "?", .name = np->name};
    kx_node_label(&tmp, label, sizeof label);
    if (!np->op_type || !*np->op_type) {
      st = kiln_error(KILN_INVALID_ARGUMENT, "node %zu has no op_type", i);
      goto done;
    }
    int constant = is_constant_node(np);
    pending *p = constant ? NULL : &pend[n_nodes++];
    if (p) {
      p->proto = np;
      p->index = (int)i;
      p->n_out = (int)np->n_output;
      if (!(p->out = malloc(((size_t)p->n_out + 1) * sizeof *p->out))) {
        st = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
        goto done;
      }
    } else if (np->n_output != 1) {
      st = kiln_error(KILN_INVALID_ARGUMENT, "%s: Constant must have exactly one output", label);
      goto done;
    }
    for (size_t k = 0; k < np->n_output; k++) {
      const char *name = np->output[k];
      int id = -1;
      if (name && *name) {
        int prev = map_get(&s, name);
        if (prev >= 0) {
          st = kiln_error(KILN_INVALID_ARGUMENT, "%s: output '%s' is already defined (by %s)", label, name,
                          g->vals[prev].kind == KX_VAL_INPUT ? "a graph input" : g->vals[prev].kind == KX_VAL_CONST ? "an initializer or Constant" : "another node");
          goto done;
        }
        if ((st = add_val(&s, name, constant ? KX_VAL_CONST : KX_VAL_NODE, &id))) goto done;
      }
      if (p) p->out[k] = id;
      if (constant && id >= 0) {
        g->vals[id].konst.kind = KILN_VALUE_TENSOR;
        if ((st = constant_value(np, env, &g->vals[id].konst.tensor))) {
          st = kiln_status_prefix(st, "%s: ", label);
          goto done;
        }
      }
    }
  }

  for (int i = 0; i < n_nodes && !st; i++) {
    kx_node tmp = {.index = pend[i].index, .op_type = pend[i].proto->op_type, .name = pend[i].proto->name};
    st = resolve_node(&pend[i], env, &s, kx_node_label(&tmp, label, sizeof label));
  }
  if (st) goto done;

  /* outputs */
  g->outputs = malloc((gp->n_output + 1) * sizeof *g->outputs);
  g->output_info = calloc(gp->n_output + 1, sizeof *g->output_info);
  if (!g->outputs || !g->output_info) {
    st = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    goto done;
  }
  for (size_t i = 0; i < gp->n_output; i++) {
    const char *name = gp->output[i]->name;
    int id = name ? lookup(&s, name, &st) : -1;
    if (st) goto done;
    if (id < 0) {
      st = kiln_error(KILN_INVALID_ARGUMENT, "graph output '%s' is not produced by any node", name ? name : "");
      goto done;
    }
    fill_info(gp->output[i], &g->output_info[i]);
    g->outputs[g->n_outputs++] = id;
  }

  /* sort, then lay the nodes out in execution order */
  producer_of = malloc(((size_t)g->n_vals + 1) * sizeof *producer_of);
  order = malloc(((size_t)n_nodes + 1) * sizeof *order);
  if (!producer_of || !order) {
    st = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    goto done;
  }
  for (int v = 0; v < g->n_vals; v++) producer_of[v] = -1;
  for (int i = 0; i < n_nodes; i++)
    for (int k = 0; k < pend[i].n_out; k++)
      if (pend[i].out[k] >= 0) producer_of[pend[i].out[k]] = i;
  if ((st = sort_nodes(g, pend, n_nodes, producer_of, order))) goto done;

  g->nodes = calloc((size_t)n_nodes + 1, sizeof *g->nodes);
  g->implicit = calloc((size_t)n_nodes + 1, sizeof *g->implicit);
  if (!g->nodes || !g->implicit) {
    st = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    goto done;
  }
  for (int pos = 0; pos < n_nodes; pos++) {
    pending *p = &pend[order[pos]];
    kx_node *n = &g->nodes[pos];
    n->op = p->op;
    n->proto = p->proto;
    n->op_type = p->proto->op_type;
    n->domain = p->proto->domain ? p->proto->domain : "";
    n->name = p->proto->name ? p->proto->name : "";
    n->index = p->index;
    n->opset = p->opset;
    n->n_in = p->n_in;
    n->n_out = p->n_out;
    n->in = p->in;
    n->out = p->out;
    n->n_subgraphs = p->n_sub;
    n->subgraph_names = p->sub_names;
    n->subgraphs = p->subs;
    g->implicit[pos] = p->implicit;
    memset(p, 0, sizeof *p); /* ownership moved */
    g->n_nodes = pos + 1;
    if (n->n_in > g->max_node_inputs) g->max_node_inputs = n->n_in;
  }

  /* constant inputs (the fusion below reads Clip's bounds from them) */
  for (int pos = 0; pos < g->n_nodes && !st; pos++) {
    kx_node *n = &g->nodes[pos];
    const kiln_tensor **consts = calloc((size_t)n->n_in + 1, sizeof *consts);
    if (!consts) {
      st = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
      break;
    }
    for (int k = 0; k < n->n_in; k++)
      if (n->in[k] >= 0 && g->vals[n->in[k]].kind == KX_VAL_CONST) consts[k] = &g->vals[n->in[k]].konst.tensor;
    n->consts = consts;
  }
  if (st) goto done;
  gone = calloc((size_t)g->n_nodes + 1, 1);
  if (!gone) {
    st = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    goto done;
  }
  if ((st = kx_prepare_and_fold(g, gone)) || (st = kx_fuse(g, gone))) goto done;
  drop_gone(g, gone);
  for (int pos = 0; pos < g->n_nodes; pos++)
    for (int k = 0; k < g->nodes[pos].n_out; k++)
      if (g->nodes[pos].out[k] >= 0) g->vals[g->nodes[pos].out[k]].producer = pos;

  /* lifetimes: the last reader of each value; outputs live past the last node */
  for (int pos = 0; pos < g->n_nodes; pos++) {
    const kx_node *n = &g->nodes[pos];
    for (int k = 0; k < n->n_in; k++)
      if (n->in[k] >= 0) g->vals[n->in[k]].last_use = pos;
    for (const int *v = g->implicit[pos]; v && *v >= 0; v++) g->vals[*v].last_use = pos;
    for (int k = 0; k < n->n_out; k++)
      if (n->out[k] >= 0 && g->vals[n->out[k]].last_use < pos) g->vals[n->out[k]].last_use = pos;
  }
  for (int i = 0; i < g->n_outputs; i++) g->vals[g->outputs[i]].last_use = g->n_nodes;
  /* a view keeps its base alive: walk backwards so chains of views propagate */
  for (int pos = g->n_nodes - 1; pos >= 0; pos--) {
    const kx_node *n = &g->nodes[pos];
    if (!n->op || !n->op->view_output || n->n_in < 1 || n->in[0] < 0 || n->n_out < 1 || n->out[0] < 0) continue;
    kx_val *base = &g->vals[n->in[0]], *view = &g->vals[n->out[0]];
    view->view_of = n->in[0];
    if (view->last_use > base->last_use) base->last_use = view->last_use;
  }


done:
  for (int i = 0; i < n_nodes; i++) free_pending(&pend[i]);
  free(pend);
  free(producer_of);
  free(order);
  free(gone);
  free(s.keys);
  free(s.ids);
  if (st) {
    kx_graph_free(g);
    return st;
  }
  *out = g;
  return NULL;
}

void kx_graph_free(kx_graph *g) {
  if (!g) return;
  for (int pos = 0; pos < g->n_nodes; pos++) {
    kx_node *n = &g->nodes[pos];
    if (n->params) {
      if (n->op && n->op->release) n->op->release(n->params);
      else free(n->params);
    }
    free_node_arrays(n);
    free(g->implicit[pos]);
  }
  for (int v = 0; v < g->n_vals; v++)
    if (g->vals[v].kind == KX_VAL_CONST) kiln_value_release(&g->vals[v].konst);
  free(g->vals);
  free(g->nodes);
  free(g->implicit);
  free(g->inputs);
  free(g->input_info);
  free(g->outputs);
  free(g->output_info);
  free(g->outer_local);
  free(g->outer_parent);
  for (int i = 0; i < g->n_synthesized; i++) onnx__node_proto__free_unpacked(g->synthesized[i], NULL);
  free(g->synthesized);
  free(g);
}
