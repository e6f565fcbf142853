/* The ONNX layer's internal interface: protobuf decoding (protobuf-c code generated from Debian's
 * onnx.proto), TensorProto conversion with external data, and node attribute access. */
#ifndef KX_ONNX_H
#define KX_ONNX_H

#include "kiln/core.h"
#include "kiln/onnx.h"
#include "onnx/onnx-data.pb-c.h"
#include "onnx/onnx.pb-c.h"

/* Decodes a serialized ModelProto. Fails with a message on malformed or truncated input and on
 * nesting deeper than kiln accepts (protobuf-c's decoder recurses without a bound). */
kiln_status kx_onnx_decode_model(const void *buf, size_t len, const char *name, Onnx__ModelProto **out);
void kx_onnx_free_model(Onnx__ModelProto *m);

/* Memory-mapped external data files, kept by the model for as long as its tensors view them. */
typedef struct kx_mapping {
  void *addr;
  size_t len;
  struct kx_mapping *next;
} kx_mapping;
void kx_mappings_free(kx_mapping *m);

/* Where a TensorProto's bytes may come from. */
typedef struct kx_tensor_source {
  const char *base_dir;   /* the model's folder, for external_data; NULL refuses external data */
  kx_mapping **mappings;  /* external files are mapped and recorded here (NULL: read and copied) */
  int view_raw;           /* raw_data may be viewed in place (the proto outlives the tensor) */
} kx_tensor_source;

/* Converts a TensorProto into a tensor: a view of raw_data or of a mapped external file where
 * possible, an owned copy otherwise. Checks that the data's size matches the dims. */
kiln_status kx_tensor_from_proto(const Onnx__TensorProto *p, const kx_tensor_source *src, kiln_tensor *out);
/* Converts a SequenceProto / OptionalProto (ONNX test data) into a value of owned tensors. */
kiln_status kx_value_from_sequence_proto(const Onnx__SequenceProto *p, kiln_value *out);
kiln_status kx_value_from_optional_proto(const Onnx__OptionalProto *p, kiln_value *out);

/* ---- attributes. Getters return the default when the attribute is absent or has another type. */
const Onnx__AttributeProto *kx_attr_find(const Onnx__NodeProto *n, const char *name);
int kx_attr_has(const Onnx__NodeProto *n, const char *name);
int64_t kx_attr_int(const Onnx__NodeProto *n, const char *name, int64_t def);
float kx_attr_float(const Onnx__NodeProto *n, const char *name, float def);
/* Copies a string attribute (or `def`) into buf, NUL-terminated and truncated to size; returns buf. */
const char *kx_attr_string(const Onnx__NodeProto *n, const char *name, const char *def, char *buf, size_t size);
/* Number of elements of a list attribute, -1 when absent; *out points into the proto. */
int64_t kx_attr_ints(const Onnx__NodeProto *n, const char *name, const int64_t **out);
int64_t kx_attr_floats(const Onnx__NodeProto *n, const char *name, const float **out);
int64_t kx_attr_strings(const Onnx__NodeProto *n, const char *name, const ProtobufCBinaryData **out);
const Onnx__TensorProto *kx_attr_tensor(const Onnx__NodeProto *n, const char *name);
const Onnx__GraphProto *kx_attr_graph(const Onnx__NodeProto *n, const char *name);

#endif
