/* kiln onnx: reading ONNX's serialized tensors (TensorProto, SequenceProto, OptionalProto), the
 * .pb files of ONNX's test data and an accepted input format of `kiln run`. Models themselves
 * are loaded through kiln/graph.h. */
#ifndef KILN_ONNX_H
#define KILN_ONNX_H

#include "kiln/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kiln_proto_kind {
  KILN_PROTO_TENSOR = 0,   /* onnx.TensorProto */
  KILN_PROTO_SEQUENCE = 1, /* onnx.SequenceProto of tensors */
  KILN_PROTO_OPTIONAL = 2, /* onnx.OptionalProto of a tensor or a sequence */
} kiln_proto_kind;

/* Decodes a serialized proto of the given kind into a value of owned tensors. `name` only
 * appears in errors. External data is refused here (test data never uses it). */
kiln_status kiln_proto_value_parse(const void *buf, size_t len, kiln_proto_kind kind, const char *name,
                                   kiln_value *out);
kiln_status kiln_proto_value_read(const char *path, kiln_proto_kind kind, kiln_value *out);

#ifdef __cplusplus
}
#endif
#endif
