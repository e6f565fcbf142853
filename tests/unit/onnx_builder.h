/* Builds small ONNX models in memory for tests (one or a few nodes), serialized with protobuf-c
 * exactly as a file would be, then loaded through kiln's public API.
 *
 *   tb_model *b = tb_new(17);
 *   tb_input(b, "x", KILN_FLOAT, 2, (int64_t[]){-1, 4});   // -1: symbolic dimension "N"
 *   tb_output(b, "y", KILN_FLOAT);
 *   tb_node *n = tb_add_node(b, "Softmax", "x", "y");       // comma-separated names, "" = absent
 *   tb_attr_int(n, "axis", 1);
 *   kiln_model *m; CHECK_OK(tb_load(b, &m)); tb_free(b);
 */
#ifndef KILN_ONNX_BUILDER_H
#define KILN_ONNX_BUILDER_H

#include <stdlib.h>
#include <string.h>

#include "kiln/graph.h"
#include "onnx/onnx.pb-c.h"

typedef Onnx__NodeProto tb_node;

typedef struct tb_model {
  Onnx__ModelProto model;
  Onnx__GraphProto graph;
  Onnx__OperatorSetIdProto opset;
  Onnx__OperatorSetIdProto *opsets[1];
} tb_model;

static inline void *tb_grow(void *array, size_t *n, size_t elem) {
  array = realloc(array, (*n + 1) * elem);
  if (!array) abort();
  (*n)++;
  return array;
}

static inline tb_model *tb_new(int opset) {
  tb_model *b = calloc(1, sizeof *b);
  onnx__model_proto__init(&b->model);
  onnx__graph_proto__init(&b->graph);
  onnx__operator_set_id_proto__init(&b->opset);
  b->opset.domain = strdup("");
  b->opset.has_version = 1;
  b->opset.version = opset;
  b->opsets[0] = &b->opset;
  b->model.has_ir_version = 1;
  b->model.ir_version = 8;
  b->model.n_opset_import = 1;
  b->model.opset_import = b->opsets;
  b->model.graph = &b->graph;
  b->graph.name = strdup("test");
  return b;
}

static inline Onnx__ValueInfoProto *tb_value_info(const char *name, kiln_dtype dtype, int rank, const int64_t *dims) {
  Onnx__ValueInfoProto *vi = calloc(1, sizeof *vi);
  onnx__value_info_proto__init(vi);
  vi->name = strdup(name);
  Onnx__TypeProto *tp = calloc(1, sizeof *tp);
  onnx__type_proto__init(tp);
  Onnx__TypeProto__Tensor *tt = calloc(1, sizeof *tt);
  onnx__type_proto__tensor__init(tt);
  tt->has_elem_type = 1;
  tt->elem_type = dtype;
  if (rank >= 0) {
    Onnx__TensorShapeProto *sp = calloc(1, sizeof *sp);
    onnx__tensor_shape_proto__init(sp);
    sp->n_dim = (size_t)rank;
    sp->dim = calloc((size_t)rank + 1, sizeof *sp->dim);
    for (int d = 0; d < rank; d++) {
      Onnx__TensorShapeProto__Dimension *dim = calloc(1, sizeof *dim);
      onnx__tensor_shape_proto__dimension__init(dim);
      if (dims[d] >= 0) {
        dim->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
        dim->dim_value = dims[d];
      } else {
        dim->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
        dim->dim_param = strdup("N");
      }
      sp->dim[d] = dim;
    }
    tt->shape = sp;
  }
  tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
  tp->tensor_type = tt;
  vi->type = tp;
  return vi;
}

/* A graph input; rank -1 leaves the shape unknown, dims[d] = -1 makes dimension d symbolic. */
static inline void tb_input(tb_model *b, const char *name, kiln_dtype dtype, int rank, const int64_t *dims) {
  b->graph.input = tb_grow(b->graph.input, &b->graph.n_input, sizeof *b->graph.input);
  b->graph.input[b->graph.n_input - 1] = tb_value_info(name, dtype, rank, dims);
}

static inline void tb_output(tb_model *b, const char *name, kiln_dtype dtype) {
  b->graph.output = tb_grow(b->graph.output, &b->graph.n_output, sizeof *b->graph.output);
  b->graph.output[b->graph.n_output - 1] = tb_value_info(name, dtype, -1, NULL);
}

/* An initializer holding a copy of t's data (raw_data form). */
static inline void tb_initializer(tb_model *b, const char *name, const kiln_tensor *t) {
  Onnx__TensorProto *tp = calloc(1, sizeof *tp);
  onnx__tensor_proto__init(tp);
  tp->name = strdup(name);
  tp->has_data_type = 1;
  tp->data_type = t->dtype;
  tp->n_dims = (size_t)t->rank;
  tp->dims = calloc((size_t)t->rank + 1, sizeof *tp->dims);
  memcpy(tp->dims, t->dims, (size_t)t->rank * sizeof *tp->dims);
  size_t bytes = kiln_tensor_nbytes(t);
  tp->has_raw_data = 1;
  tp->raw_data.len = bytes;
  tp->raw_data.data = malloc(bytes + 1);
  if (bytes) memcpy(tp->raw_data.data, t->data, bytes);
  b->graph.initializer = tb_grow(b->graph.initializer, &b->graph.n_initializer, sizeof *b->graph.initializer);
  b->graph.initializer[b->graph.n_initializer - 1] = tp;
}

static inline void tb_split(const char *list, size_t *n, char ***out) {
  *n = 0;
  *out = NULL;
  if (!list || !*list) return;
  const char *p = list;
  for (;;) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    *out = tb_grow(*out, n, sizeof **out);
    (*out)[*n - 1] = strndup(p, len);
    if (!comma) break;
    p = comma + 1;
  }
}

static inline tb_node *tb_add_node(tb_model *b, const char *op, const char *inputs, const char *outputs) {
  tb_node *n = calloc(1, sizeof *n);
  onnx__node_proto__init(n);
  n->op_type = strdup(op);
  n->domain = strdup("");
  tb_split(inputs, &n->n_input, &n->input);
  tb_split(outputs, &n->n_output, &n->output);
  b->graph.node = tb_grow(b->graph.node, &b->graph.n_node, sizeof *b->graph.node);
  b->graph.node[b->graph.n_node - 1] = n;
  return n;
}

static inline Onnx__AttributeProto *tb_attr(tb_node *n, const char *name, Onnx__AttributeProto__AttributeType type) {
  Onnx__AttributeProto *a = calloc(1, sizeof *a);
  onnx__attribute_proto__init(a);
  a->name = strdup(name);
  a->has_type = 1;
  a->type = type;
  n->attribute = tb_grow(n->attribute, &n->n_attribute, sizeof *n->attribute);
  n->attribute[n->n_attribute - 1] = a;
  return a;
}

static inline void tb_attr_int(tb_node *n, const char *name, int64_t v) {
  Onnx__AttributeProto *a = tb_attr(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
  a->has_i = 1;
  a->i = v;
}

static inline void tb_attr_float(tb_node *n, const char *name, float v) {
  Onnx__AttributeProto *a = tb_attr(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
  a->has_f = 1;
  a->f = v;
}

static inline void tb_attr_ints(tb_node *n, const char *name, int count, const int64_t *v) {
  Onnx__AttributeProto *a = tb_attr(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
  a->n_ints = (size_t)count;
  a->ints = calloc((size_t)count + 1, sizeof *a->ints);
  memcpy(a->ints, v, (size_t)count * sizeof *v);
}

static inline void tb_attr_floats(tb_node *n, const char *name, int count, const float *v) {
  Onnx__AttributeProto *a = tb_attr(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS);
  a->n_floats = (size_t)count;
  a->floats = calloc((size_t)count + 1, sizeof *a->floats);
  memcpy(a->floats, v, (size_t)count * sizeof *v);
}

static inline void tb_attr_string(tb_node *n, const char *name, const char *v) {
  Onnx__AttributeProto *a = tb_attr(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);
  a->has_s = 1;
  a->s.len = strlen(v);
  a->s.data = (uint8_t *)strdup(v);
}

static inline void tb_attr_strings(tb_node *n, const char *name, int count, const char *const *v) {
  Onnx__AttributeProto *a = tb_attr(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS);
  a->n_strings = (size_t)count;
  a->strings = calloc((size_t)count + 1, sizeof *a->strings);
  for (int i = 0; i < count; i++) {
    a->strings[i].len = strlen(v[i]);
    a->strings[i].data = (uint8_t *)strdup(v[i]);
  }
}

/* Serializes the model; the caller frees *buf. */
static inline void tb_pack(tb_model *b, void **buf, size_t *len) {
  *len = onnx__model_proto__get_packed_size(&b->model);
  *buf = malloc(*len + 1);
  onnx__model_proto__pack(&b->model, *buf);
}

static inline kiln_status tb_load(tb_model *b, kiln_model **out) {
  void *buf;
  size_t len;
  tb_pack(b, &buf, &len);
  kiln_load_options opt = {.name = "test.onnx"};
  kiln_status s = kiln_model_load_buffer(buf, len, &opt, out);
  free(buf);
  return s;
}

/* Frees the builder. Everything under the graph was malloc'd, as protobuf-c's own decoder does, so
 * protobuf-c frees it; the model and opset structs are embedded in the builder. */
static inline void tb_free(tb_model *b) {
  Onnx__GraphProto *g = malloc(sizeof *g);
  *g = b->graph;
  b->model.graph = NULL;
  b->model.opset_import = NULL;
  b->model.n_opset_import = 0;
  free(b->opset.domain);
  protobuf_c_message_free_unpacked(&g->base, NULL);
  free(b);
}

#endif
