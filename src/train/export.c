/* ONNX export of a trained network: each layer mapped to opset-13 nodes with its weights as
 * initializers (packed with protobuf-c's generated messages), plus the schema and preprocessing
 * spec that let `kiln serve` take the raw input feature and treat it as training did. */
#include "train/trainer.h"

#include "core/sha256.h"

#include "onnx/onnx.pb-c.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

/* A layer emits at most 4 nodes (a reshape or transpose into NCHW, its op, then an activation or
 * a flatten) and 5 initializers (batch norm's 4 and a layout shape); each node at most 4 attributes. */
#define NODES_PER_LAYER 4
#define INITS_PER_LAYER 5
#define MAX_ATTRS 4

/* Every message the model points at lives in one list of blocks freed at once: protobuf-c packs
 * plain structs, and an export builds many small ones. */
typedef struct block {
  struct block *prev;
  max_align_t data[];
} block;

typedef struct builder {
  block *blocks;
  int oom; /* an allocation failed: everything after it is skipped */
  Onnx__NodeProto **nodes;
  Onnx__TensorProto **inits;
  size_t n_nodes, max_nodes, n_inits, max_inits;
  const kx_layer *l; /* the layer being emitted (NULL: the graph's output): names what it adds */
  char *x;           /* the current tensor */
  kx_shape shape;    /* its shape per sample, in the trainer's order (NHWC) */
  int nchw;          /* it is stored NCHW in the graph (inside a run of conv, pool and norm layers) */
} builder;

static void *bnew(builder *b, size_t size) {
  block *k = b->oom ? NULL : calloc(1, sizeof *k + size);
  if (!k) {
    b->oom = 1;
    return NULL;
  }
  k->prev = b->blocks;
  b->blocks = k;
  return k->data;
}

static char *bstr(builder *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *bstr(builder *b, const char *fmt, ...) {
  char buf[256]; /* names are a layer's (< 64) and a short suffix */
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  char *s = n >= 0 && n < (int)sizeof buf ? bnew(b, (size_t)n + 1) : NULL;
  if (s) memcpy(s, buf, (size_t)n + 1);
  else b->oom = 1;
  return s;
}

static const char *prefix(const builder *b) { return b->l ? b->l->name : "output"; }

/* A node with its input, output and attribute lists, in one allocation. */
typedef struct node_block {
  Onnx__NodeProto n;
  char *inputs[5], *outputs[1];
  Onnx__AttributeProto *attrs[MAX_ATTRS];
} node_block;

/* A node `op` reading the current tensor, then the non-NULL names in `in` (at most 4), and writing
 * "<layer>/<op>", which becomes the current tensor. NULL when memory ran out. */
static Onnx__NodeProto *node(builder *b, const char *op, int n_in, char *const *in) {
  node_block *k = bnew(b, sizeof *k);
  char *y = bstr(b, "%s/%s", prefix(b), op), *type = bstr(b, "%s", op);
  if (!k || !y || !type || b->n_nodes == b->max_nodes) return b->oom = 1, NULL;
  Onnx__NodeProto *n = &k->n;
  onnx__node_proto__init(n);
  k->inputs[n->n_input++] = b->x;
  for (int i = 0; i < n_in; i++)
    if (in[i]) k->inputs[n->n_input++] = in[i];
  k->outputs[0] = n->name = b->x = y;
  n->n_output = 1;
  n->input = k->inputs, n->output = k->outputs, n->attribute = k->attrs;
  n->op_type = type;
  return b->nodes[b->n_nodes++] = n;
}

/* An attribute of n: ints (count of them), else an int (count 0) or a float (count -1). */
static void attr(builder *b, Onnx__NodeProto *n, const char *name, int count, const int64_t *ints, float f) {
  struct {
    Onnx__AttributeProto a;
    int64_t ints[4];
  } *k = n && n->n_attribute < MAX_ATTRS && count <= 4 ? bnew(b, sizeof *k) : NULL;
  char *s = k ? bstr(b, "%s", name) : NULL;
  if (!s) return;
  Onnx__AttributeProto *a = &k->a;
  onnx__attribute_proto__init(a);
  a->name = s;
  a->has_type = 1;
  if (count > 0) {
    a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
    memcpy(k->ints, ints, (size_t)count * sizeof *ints);
    a->n_ints = (size_t)count, a->ints = k->ints;
  } else if (count == 0) a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT, a->has_i = 1, a->i = ints[0];
  else a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT, a->has_f = 1, a->f = f;
  n->attribute[n->n_attribute++] = a;
}

static void attr_int(builder *b, Onnx__NodeProto *n, const char *name, int64_t v) { attr(b, n, name, 0, &v, 0); }

/* An initializer "<layer>/<what>" (float or int64); returns its data for the caller to fill and
 * its name in *name (both NULL when memory ran out). */
static void *init(builder *b, const char *what, int32_t type, int rank, const int64_t *dims, char **name) {
  int64_t count = 1;
  for (int i = 0; i < rank; i++) count *= dims[i];
  int f32 = type == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
  struct {
    Onnx__TensorProto t;
    int64_t dims[4];
  } *k = rank <= 4 ? bnew(b, sizeof *k) : NULL;
  void *data = bnew(b, (size_t)count * (f32 ? sizeof(float) : sizeof(int64_t)));
  *name = bstr(b, "%s/%s", prefix(b), what);
  if (!k || !data || !*name || b->n_inits == b->max_inits) return b->oom = 1, *name = NULL, NULL;
  Onnx__TensorProto *t = &k->t;
  onnx__tensor_proto__init(t);
  memcpy(k->dims, dims, (size_t)rank * sizeof *dims);
  t->n_dims = (size_t)rank, t->dims = k->dims;
  t->has_data_type = 1, t->data_type = type;
  t->name = *name;
  if (f32) t->n_float_data = (size_t)count, t->float_data = data;
  else t->n_int64_data = (size_t)count, t->int64_data = data;
  b->inits[b->n_inits++] = t;
  return data;
}

/* A float vector initializer holding `values` (NULL: `fill` everywhere); returns its name. */
static char *init_vector(builder *b, const char *what, int64_t count, const float *values, float fill) {
  char *name;
  float *data = init(b, what, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 1, &count, &name);
  for (int64_t i = 0; data && i < count; i++) data[i] = values ? values[i] : fill;
  return name;
}

/* Reshape of the current tensor to [-1, dims...]; `what` names its shape initializer. */
static void reshape(builder *b, const char *what, int rank, const int64_t *dims) {
  char *name;
  int64_t n = rank + 1, *shape = init(b, what, ONNX__TENSOR_PROTO__DATA_TYPE__INT64, 1, &n, &name);
  if (!shape) return;
  shape[0] = -1;
  memcpy(shape + 1, dims, (size_t)rank * sizeof *shape);
  node(b, "Reshape", 1, &name);
}

static void transpose(builder *b, const int64_t perm[4]) { attr(b, node(b, "Transpose", 0, NULL), "perm", 4, perm, 0); }

/* NCHW before a convolution, pooling or image batch norm (an [H, W] image is one channel); back to
 * the trainer's NHWC wherever the order of a sample's values matters: flatten, reshape, the output. */
static void set_layout(builder *b, int nchw) {
  if (b->nchw == nchw) return;
  b->nchw = nchw;
  if (b->shape.rank == 2 && nchw) reshape(b, "nchw_shape", 3, (int64_t[]){1, b->shape.d[0], b->shape.d[1]});
  else if (b->shape.rank == 2) reshape(b, "nhwc_shape", 2, b->shape.d);
  else transpose(b, nchw ? (int64_t[]){0, 3, 1, 2} : (int64_t[]){0, 2, 3, 1});
}

static void activation(builder *b, kx_actfn a) {
  static const char *const ops[] = {[KX_ACTFN_RELU] = "Relu", [KX_ACTFN_SIGMOID] = "Sigmoid", [KX_ACTFN_TANH] = "Tanh",
                                    [KX_ACTFN_SOFTMAX] = "Softmax"};
  if (a == KX_ACTFN_LINEAR) return;
  Onnx__NodeProto *n = node(b, ops[a], 0, NULL);
  /* the trainer's softmax runs over the last axis of NHWC: the channels, axis 1 of NCHW */
  if (a == KX_ACTFN_SOFTMAX) attr_int(b, n, "axis", b->nchw ? 1 : -1);
}

/* ---------------------------------------------------------------- the layers */

static void emit_dense(builder *b, const kx_layer *l) {
  int64_t in = l->in.d[0], units = l->units;
  char *w;
  float *kernel = init(b, "kernel", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 2, (int64_t[]){in, units}, &w);
  if (kernel) memcpy(kernel, l->params, (size_t)(in * units) * sizeof *kernel);
  char *bias = l->use_bias ? init_vector(b, "bias", units, l->params + in * units, 0) : NULL;
  node(b, "Gemm", 2, (char *[]){w, bias}); /* Keras' W[in, units] is Gemm's B as it stands (transB = 0) */
  activation(b, l->act);
}

static void emit_flatten(builder *b, const kx_layer *l) {
  (void)l;
  set_layout(b, 0);
  attr_int(b, node(b, "Flatten", 0, NULL), "axis", 1);
}

static void emit_reshape(builder *b, const kx_layer *l) {
  set_layout(b, 0);
  reshape(b, "shape", l->target.rank, l->target.d);
}

static void emit_dropout(builder *b, const kx_layer *l) { (void)b, (void)l; } /* the identity at inference */

static void emit_activation(builder *b, const kx_layer *l) { activation(b, l->act); }

/* A window's kernel_shape, strides and pads: TF's "same" puts the smaller half top and left. */
static void window_attrs(builder *b, Onnx__NodeProto *n, const kx_layer *l) {
  int64_t pads[4] = {0, 0, 0, 0};
  for (int i = 0; i < 2 && l->same; i++) {
    int64_t total = (l->out.d[i] - 1) * l->strides[i] + l->kernel[i] - l->in.d[i];
    pads[i] = l->pad[i];
    pads[i + 2] = total > l->pad[i] ? total - l->pad[i] : 0;
  }
  attr(b, n, "kernel_shape", 2, l->kernel, 0);
  attr(b, n, "strides", 2, l->strides, 0);
  attr(b, n, "pads", 4, pads, 0);
}

static void emit_conv2d(builder *b, const kx_layer *l) {
  int64_t kh = l->kernel[0], kw = l->kernel[1], cin = l->in.rank == 3 ? l->in.d[2] : 1, cout = l->filters;
  set_layout(b, 1);
  char *name;
  float *w = init(b, "kernel", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 4, (int64_t[]){cout, cin, kh, kw}, &name);
  for (int64_t o = 0; w && o < cout; o++) /* Keras' [kh, kw, cin, cout] to ONNX's [cout, cin, kh, kw] */
    for (int64_t c = 0; c < cin; c++)
      for (int64_t i = 0; i < kh; i++)
        for (int64_t j = 0; j < kw; j++) w[((o * cin + c) * kh + i) * kw + j] = l->params[((i * kw + j) * cin + c) * cout + o];
  char *bias = l->use_bias ? init_vector(b, "bias", cout, l->params + kh * kw * cin * cout, 0) : NULL;
  window_attrs(b, node(b, "Conv", 2, (char *[]){name, bias}), l);
  activation(b, l->act);
}

static void emit_pooling2d(builder *b, const kx_layer *l) {
  int max = strcmp(l->ops->name, "max_pooling2d") == 0;
  set_layout(b, 1);
  Onnx__NodeProto *n = node(b, max ? "MaxPool" : "AveragePool", 0, NULL);
  window_attrs(b, n, l);
  if (!max) attr_int(b, n, "count_include_pad", 0); /* TF averages over the cells inside the image */
}

static void emit_global_average_pooling2d(builder *b, const kx_layer *l) {
  (void)l;
  set_layout(b, 1);
  node(b, "GlobalAveragePool", 0, NULL);
  attr_int(b, node(b, "Flatten", 0, NULL), "axis", 1);
  b->nchw = 0;
}

static void emit_batch_normalization(builder *b, const kx_layer *l) {
  int64_t c = l->in.rank == 1 ? l->in.d[0] : l->in.rank == 2 ? 1 : l->in.d[2];
  /* gamma then beta (Keras' order) where trained, else the identity's values */
  const float *gamma = l->scale ? l->params : NULL, *beta = l->center ? l->params + (l->scale ? c : 0) : NULL;
  if (l->in.rank > 1) set_layout(b, 1); /* ONNX normalizes axis 1: a vector's features, an image's channels */
  char *in[4] = {init_vector(b, "gamma", c, gamma, 1), init_vector(b, "beta", c, beta, 0),
                 init_vector(b, "moving_mean", c, l->state, 0), init_vector(b, "moving_variance", c, l->state + c, 0)};
  if (!b->oom) attr(b, node(b, "BatchNormalization", 4, in), "epsilon", -1, NULL, l->epsilon);
}

static const struct {
  const char *layer;
  void (*emit)(builder *b, const kx_layer *l);
} emitters[] = {
    {"dense", emit_dense}, {"flatten", emit_flatten}, {"reshape", emit_reshape}, {"dropout", emit_dropout},
    {"activation", emit_activation}, {"relu", emit_activation}, {"sigmoid", emit_activation}, {"tanh", emit_activation},
    {"softmax", emit_activation}, {"conv2d", emit_conv2d}, {"max_pooling2d", emit_pooling2d},
    {"average_pooling2d", emit_pooling2d}, {"global_average_pooling2d", emit_global_average_pooling2d},
    {"batch_normalization", emit_batch_normalization},
};
#define N_EMITTERS (sizeof emitters / sizeof emitters[0])

/* ---------------------------------------------------------------- the model */

/* A float tensor's type: [batch, shape...] with the batch symbolic. */
static Onnx__ValueInfoProto *value_info(builder *b, char *name, const kx_shape *shape) {
  struct {
    Onnx__ValueInfoProto v;
    Onnx__TypeProto type;
    Onnx__TypeProto__Tensor tensor;
    Onnx__TensorShapeProto shape;
    Onnx__TensorShapeProto__Dimension dims[4], *dim_list[4];
  } *k = bnew(b, sizeof *k);
  char *batch = bstr(b, "batch");
  if (!k || !batch || !name) return NULL;
  onnx__value_info_proto__init(&k->v);
  onnx__type_proto__init(&k->type);
  onnx__type_proto__tensor__init(&k->tensor);
  onnx__tensor_shape_proto__init(&k->shape);
  for (int i = 0; i <= shape->rank; i++) {
    onnx__tensor_shape_proto__dimension__init(&k->dims[i]);
    k->dims[i].value_case = i ? ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE : ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
    if (i) k->dims[i].dim_value = shape->d[i - 1];
    else k->dims[i].dim_param = batch;
    k->dim_list[i] = &k->dims[i];
  }
  k->shape.n_dim = (size_t)shape->rank + 1, k->shape.dim = k->dim_list;
  k->tensor.has_elem_type = 1, k->tensor.elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
  k->tensor.shape = &k->shape;
  k->type.value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE, k->type.tensor_type = &k->tensor;
  k->v.name = name, k->v.type = &k->type;
  return &k->v;
}

/* The network as a packed ModelProto (malloc'd into *out). */
static kiln_status pack_model(const kiln_trainer *t, builder *b, uint8_t **out, size_t *len) {
  const kx_net *net = t->net;
  b->max_nodes = (size_t)net->n_layers * NODES_PER_LAYER + 2;
  b->max_inits = (size_t)net->n_layers * INITS_PER_LAYER + 1;
  b->nodes = bnew(b, b->max_nodes * sizeof *b->nodes);
  b->inits = bnew(b, b->max_inits * sizeof *b->inits);
  b->x = bstr(b, "%s", t->run.features);
  b->shape = net->in_shape;
  Onnx__ValueInfoProto *input = value_info(b, b->x, &net->in_shape);
  for (int i = 0; i < net->n_layers && !b->oom; i++) {
    const kx_layer *l = b->l = &net->layers[i];
    size_t k = 0;
    while (k < N_EMITTERS && strcmp(emitters[k].layer, l->ops->name) != 0) k++;
    if (k == N_EMITTERS)
      return kiln_error(KILN_UNIMPLEMENTED, "layer %d (%s) is a %s, which has no ONNX mapping", i, l->name, l->ops->name);
    emitters[k].emit(b, l);
    b->shape = l->out;
  }
  b->l = NULL;
  set_layout(b, 0);
  if (b->n_nodes == 0) node(b, "Identity", 0, NULL); /* a model of dropouts: the output must still be a node's */
  char *name = bstr(b, "output");
  if (!b->oom) b->nodes[b->n_nodes - 1]->output[0] = b->x = name;
  Onnx__ValueInfoProto *output = value_info(b, name, &b->shape);
  Onnx__OperatorSetIdProto opset = ONNX__OPERATOR_SET_ID_PROTO__INIT, *opsets[] = {&opset};
  Onnx__GraphProto graph = ONNX__GRAPH_PROTO__INIT;
  Onnx__ModelProto model = ONNX__MODEL_PROTO__INIT;
  opset.domain = bstr(b, "%s", "");
  opset.has_version = 1;
  opset.version = 13;
  graph.name = bstr(b, "kiln");
  graph.n_node = b->n_nodes, graph.node = b->nodes;
  graph.n_initializer = b->n_inits, graph.initializer = b->inits;
  graph.n_input = 1, graph.input = &input;
  graph.n_output = 1, graph.output = &output;
  model.has_ir_version = 1;
  model.ir_version = 8;
  model.n_opset_import = 1, model.opset_import = opsets;
  model.producer_name = bstr(b, "kiln");
  model.producer_version = bstr(b, "%s", kiln_version());
  model.graph = &graph;
  if (b->oom || !input || !output) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory building the ONNX model");
  *len = onnx__model_proto__get_packed_size(&model);
  if (!(*out = malloc(*len))) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory packing the ONNX model (%zu bytes)", *len);
  onnx__model_proto__pack(&model, *out);
  return NULL;
}

/* ---------------------------------------------------------------- files */

/* dir/name, written whole or not at all. */
static kiln_status write_file(const char *dir, const char *name, const void *data, size_t len) {
  char path[4096];
  if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path) return kiln_error(KILN_INVALID_ARGUMENT, "%s: path too long", dir);
  return kiln_file_write_atomic(path, data, len);
}

/* schema.json: inferred over the training source reduced to the input feature, which is what a
 * request carries. */
static kiln_status write_schema(kiln_trainer *t, const char *dir) {
  static const char fmt[] = "{\"source\": %s, \"stages\": [{\"map\": {\"transforms\": [{\"select\": {\"features\": [%s]}}]}}]}";
  const cJSON *source = cJSON_GetObjectItemCaseSensitive(t->run.data, "source");
  if (!source) return kiln_error(KILN_INVALID_ARGUMENT, "the run's data has no 'source' to infer the schema from");
  cJSON *name = cJSON_CreateString(t->run.features);
  char *quoted = name ? cJSON_PrintUnformatted(name) : NULL, *src = cJSON_PrintUnformatted(source);
  size_t size = quoted && src ? sizeof fmt + strlen(quoted) + strlen(src) : 0;
  char *text = size ? malloc(size) : NULL;
  if (text) snprintf(text, size, fmt, src, quoted);
  cJSON_Delete(name);
  free(quoted);
  free(src);
  if (!text) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory building the schema's pipeline");
  kiln_data_options o = {.pool = t->pool, .base_dir = t->run.base_dir[0] ? t->run.base_dir : NULL};
  kiln_dataset *d;
  kiln_schema *schema = NULL;
  kiln_status s = kiln_dataset_open_spec(text, strlen(text), &o, &d);
  free(text);
  if (!s) {
    s = kiln_schema_infer(d, &schema);
    kiln_dataset_free(d);
  }
  if (s) return kiln_status_prefix(s, "inferring the schema of feature '%s' from the training data: ", t->run.features);
  char *json = kiln_schema_to_json(schema);
  kiln_schema_free(schema);
  if (!json) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory writing the schema");
  s = write_file(dir, "schema.json", json, strlen(json));
  if (!s) kx_sha256_hex(json, strlen(json), t->schema_sha256);
  free(json);
  return s;
}

/* Whether a transform's arguments name `feature` alone ("feature", or "features" listing only it). */
static int names_only(const cJSON *args, const char *feature) {
  const cJSON *one = cJSON_GetObjectItemCaseSensitive(args, "feature"), *many = cJSON_GetObjectItemCaseSensitive(args, "features");
  if (one) return cJSON_IsString(one) && strcmp(one->valuestring, feature) == 0;
  return cJSON_GetArraySize(many) == 1 && cJSON_IsString(many->child) && strcmp(many->child->valuestring, feature) == 0;
}

/* preprocess.json: the training map stages' transforms of the input feature, then the cast to
 * float that the trainer applies when it loads a batch. */
static kiln_status write_preprocess(const kiln_trainer *t, const char *dir) {
  const char *f = t->run.features;
  cJSON *root = cJSON_CreateObject(), *list = cJSON_AddArrayToObject(root, "transforms");
  int ok = list && cJSON_AddStringToObject(root, "schema", "schema.json");
  const cJSON *stage, *transform;
  cJSON_ArrayForEach(stage, cJSON_GetObjectItemCaseSensitive(t->run.data, "stages")) {
    cJSON_ArrayForEach(transform, cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(stage, "map"), "transforms")) {
      if (ok && cJSON_IsObject(transform) && transform->child && names_only(transform->child, f))
        ok = cJSON_AddItemToArray(list, cJSON_Duplicate(transform, 1));
    }
  }
  cJSON *cast = ok ? cJSON_CreateObject() : NULL, *args = cast ? cJSON_AddObjectToObject(cast, "cast") : NULL;
  ok = args && cJSON_AddStringToObject(args, "feature", f) && cJSON_AddStringToObject(args, "dtype", "float");
  if (!ok || !cJSON_AddItemToArray(list, cast)) ok = 0, cJSON_Delete(cast);
  char *text = ok ? cJSON_Print(root) : NULL;
  cJSON_Delete(root);
  if (!text) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory writing preprocess.json");
  kiln_status s = write_file(dir, "preprocess.json", text, strlen(text));
  free(text);
  return s;
}

kiln_status kiln_trainer_export(kiln_trainer *t, const char *dir) {
  if (t->world.rank != 0) return NULL;
  t->schema_sha256[0] = '\0';
  if (strcmp(t->run.features, "output") == 0)
    return kiln_error(KILN_INVALID_ARGUMENT, "ONNX export: the input feature may not be named 'output' (the model's output is)");
  builder b = {0};
  uint8_t *buf = NULL;
  size_t len = 0;
  kiln_status s = pack_model(t, &b, &buf, &len);
  while (b.blocks) {
    block *prev = b.blocks->prev;
    free(b.blocks);
    b.blocks = prev;
  }
  if (!s) s = write_file(dir, "model.onnx", buf, len);
  free(buf);
  if (!s) s = write_schema(t, dir);
  if (!s) s = write_preprocess(t, dir);
  kiln_preprocess *p = NULL;
  if (!s && !(s = kiln_preprocess_load(dir, &p)) && !p) s = kiln_error(KILN_INTERNAL, "preprocess.json did not load");
  kiln_preprocess_free(p);
  t->failed |= s != NULL;
  return s ? kiln_status_prefix(s, "ONNX export to %s: ", dir) : NULL;
}

void kiln_trainer_lineage(const kiln_trainer *t, kiln_train_lineage *out) {
  memcpy(out->run_file_sha256, t->run.sha256, sizeof out->run_file_sha256);
  memcpy(out->dataset_schema_sha256, t->schema_sha256, sizeof out->dataset_schema_sha256);
}
