/* libFuzzer target: serialized TensorProto / SequenceProto / OptionalProto (the .pb inputs of
 * `kiln run` and of the conformance runner). The first byte picks the message type. */
#include "kiln/onnx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  kiln_value v;
  kiln_status s = kiln_proto_value_parse(data + 1, size - 1, (kiln_proto_kind)(data[0] % 3), "fuzz.pb", &v);
  if (s) kiln_status_free(s);
  else kiln_value_release(&v);
  return 0;
}
