/* ModelProto decoding. protobuf-c does the decoding; a pre-pass over the wire format bounds the
 * nesting depth first, because protobuf-c recurses once per nested message without a limit and
 * a hostile file of a few megabytes could otherwise exhaust the stack. */
#include "onnx/onnx.h"

#include <stdlib.h>
#include <string.h>

/* Graphs nest through If/Loop bodies; real models stay far below this. */
#define MAX_NESTING 64

static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*p >= end) return -1;
    uint8_t b = *(*p)++;
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *out = v;
      return 0;
    }
  }
  return -1;
}

/* Walks one message's fields; descends into fields the descriptor says are messages. */
static kiln_status check_nesting(const uint8_t *p, const uint8_t *end, const ProtobufCMessageDescriptor *d,
                                 int depth) {
  if (depth > MAX_NESTING)
    return kiln_error(KILN_INVALID_ARGUMENT, "messages nested deeper than %d levels", MAX_NESTING);
  while (p < end) {
    uint64_t tag, len;
    if (read_varint(&p, end, &tag)) return kiln_error(KILN_INVALID_ARGUMENT, "truncated field tag");
    switch (tag & 7) {
    case 0:
      if (read_varint(&p, end, &len)) return kiln_error(KILN_INVALID_ARGUMENT, "truncated varint");
      break;
    case 1:
      if (end - p < 8) return kiln_error(KILN_INVALID_ARGUMENT, "truncated fixed64 field");
      p += 8;
      break;
    case 5:
      if (end - p < 4) return kiln_error(KILN_INVALID_ARGUMENT, "truncated fixed32 field");
      p += 4;
      break;
    case 2: {
      if (read_varint(&p, end, &len) || len > (uint64_t)(end - p))
        return kiln_error(KILN_INVALID_ARGUMENT, "length-delimited field runs past the end of the data");
      const ProtobufCFieldDescriptor *f =
          tag >> 3 <= UINT32_MAX ? protobuf_c_message_descriptor_get_field(d, (unsigned)(tag >> 3)) : NULL;
      if (f && f->type == PROTOBUF_C_TYPE_MESSAGE) {
        kiln_status s = check_nesting(p, p + len, f->descriptor, depth + 1);
        if (s) return s;
      }
      p += len;
      break;
    }
    default:
      return kiln_error(KILN_INVALID_ARGUMENT, "unknown wire type %u", (unsigned)(tag & 7));
    }
  }
  return NULL;
}

kiln_status kx_onnx_decode_model(const void *buf, size_t len, const char *name, Onnx__ModelProto **out) {
  if (len == 0) return kiln_error(KILN_INVALID_ARGUMENT, "%s: empty file, not an ONNX model", name);
  kiln_status s = check_nesting(buf, (const uint8_t *)buf + len, &onnx__model_proto__descriptor, 0);
  if (s) return kiln_status_prefix(s, "%s: not a valid ONNX model: ", name);
  Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, len, buf);
  if (!m)
    return kiln_error(KILN_INVALID_ARGUMENT,
                      "%s: not a valid ONNX model (protobuf decoding of ModelProto failed: truncated or corrupt)", name);
  if (!m->graph) {
    onnx__model_proto__free_unpacked(m, NULL);
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: ModelProto has no graph", name);
  }
  *out = m;
  return NULL;
}

void kx_onnx_free_model(Onnx__ModelProto *m) {
  if (m) onnx__model_proto__free_unpacked(m, NULL);
}

kiln_status kiln_proto_value_parse(const void *buf, size_t len, kiln_proto_kind kind, const char *name,
                                   kiln_value *out) {
  static const ProtobufCMessageDescriptor *descs[] = {&onnx__tensor_proto__descriptor,
                                                      &onnx__sequence_proto__descriptor,
                                                      &onnx__optional_proto__descriptor};
  if ((unsigned)kind > KILN_PROTO_OPTIONAL) return kiln_error(KILN_INVALID_ARGUMENT, "unknown proto kind %d", kind);
  kiln_status s = check_nesting(buf, (const uint8_t *)buf + len, descs[kind], 0);
  if (s) return kiln_status_prefix(s, "%s: ", name);
  ProtobufCMessage *msg = protobuf_c_message_unpack(descs[kind], NULL, len, buf);
  if (!msg) return kiln_error(KILN_INVALID_ARGUMENT, "%s: not a valid %s", name, descs[kind]->name);
  memset(out, 0, sizeof *out);
  kx_tensor_source src = {0};
  switch (kind) {
  case KILN_PROTO_TENSOR: s = kx_tensor_from_proto((Onnx__TensorProto *)msg, &src, &out->tensor); break;
  case KILN_PROTO_SEQUENCE: s = kx_value_from_sequence_proto((Onnx__SequenceProto *)msg, out); break;
  case KILN_PROTO_OPTIONAL: s = kx_value_from_optional_proto((Onnx__OptionalProto *)msg, out); break;
  }
  protobuf_c_message_free_unpacked(msg, NULL);
  return s ? kiln_status_prefix(s, "%s: ", name) : NULL;
}

kiln_status kiln_proto_value_read(const char *path, kiln_proto_kind kind, kiln_value *out) {
  void *buf;
  size_t len;
  kiln_status s = kiln_file_read(path, (size_t)1 << 32, &buf, &len);
  if (s) return s;
  s = kiln_proto_value_parse(buf, len, kind, path, out);
  free(buf);
  return s;
}
