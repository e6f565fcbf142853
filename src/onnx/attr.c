/* Node attribute access for kernels' prepare functions. A getter that finds the attribute with
 * another type than asked treats it as absent, so a hostile model gets the default, not a crash. */
#include "onnx/onnx.h"

#include <string.h>

const Onnx__AttributeProto *kx_attr_find(const Onnx__NodeProto *n, const char *name) {
  for (size_t i = 0; i < n->n_attribute; i++)
    if (n->attribute[i]->name && strcmp(n->attribute[i]->name, name) == 0) return n->attribute[i];
  return NULL;
}

int kx_attr_has(const Onnx__NodeProto *n, const char *name) { return kx_attr_find(n, name) != NULL; }

static const Onnx__AttributeProto *typed(const Onnx__NodeProto *n, const char *name, Onnx__AttributeProto__AttributeType t) {
  const Onnx__AttributeProto *a = kx_attr_find(n, name);
  if (!a) return NULL;
  /* Old exporters leave `type` unset; accept the attribute when the field for `t` is present. */
  if (a->has_type) return a->type == t ? a : NULL;
  switch (t) {
  case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT: return a->has_i ? a : NULL;
  case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT: return a->has_f ? a : NULL;
  case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING: return a->has_s ? a : NULL;
  case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR: return a->t ? a : NULL;
  case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH: return a->g ? a : NULL;
  case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS: return a->n_ints ? a : NULL;
  case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS: return a->n_floats ? a : NULL;
  case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS: return a->n_strings ? a : NULL;
  default: return NULL;
  }
}

int64_t kx_attr_int(const Onnx__NodeProto *n, const char *name, int64_t def) {
  const Onnx__AttributeProto *a = typed(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
  return a ? a->i : def;
}

float kx_attr_float(const Onnx__NodeProto *n, const char *name, float def) {
  const Onnx__AttributeProto *a = typed(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
  return a ? a->f : def;
}

const char *kx_attr_string(const Onnx__NodeProto *n, const char *name, const char *def, char *buf, size_t size) {
  const Onnx__AttributeProto *a = typed(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);
  if (size == 0) return buf;
  if (!a) {
    snprintf(buf, size, "%s", def ? def : "");
    return buf;
  }
  size_t len = a->s.len < size - 1 ? a->s.len : size - 1;
  if (len) memcpy(buf, a->s.data, len);
  buf[len] = '\0';
  return buf;
}

int64_t kx_attr_ints(const Onnx__NodeProto *n, const char *name, const int64_t **out) {
  const Onnx__AttributeProto *a = typed(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
  *out = a ? a->ints : NULL;
  return a ? (int64_t)a->n_ints : -1;
}

int64_t kx_attr_floats(const Onnx__NodeProto *n, const char *name, const float **out) {
  const Onnx__AttributeProto *a = typed(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS);
  *out = a ? a->floats : NULL;
  return a ? (int64_t)a->n_floats : -1;
}

int64_t kx_attr_strings(const Onnx__NodeProto *n, const char *name, const ProtobufCBinaryData **out) {
  const Onnx__AttributeProto *a = typed(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS);
  *out = a ? a->strings : NULL;
  return a ? (int64_t)a->n_strings : -1;
}

const Onnx__TensorProto *kx_attr_tensor(const Onnx__NodeProto *n, const char *name) {
  const Onnx__AttributeProto *a = typed(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR);
  return a ? a->t : NULL;
}

const Onnx__GraphProto *kx_attr_graph(const Onnx__NodeProto *n, const char *name) {
  const Onnx__AttributeProto *a = typed(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH);
  return a ? a->g : NULL;
}
