/* libFuzzer target: the gRPC payload codecs. Byte 0 picks the message (even: a TF Serving
 * PredictRequest, odd: a KServe V2 ModelInferRequest), the rest is its protobuf encoding, unpacked by
 * protobuf-c and decoded against a fixed signature (x float [-1,4], ids int64 [-1], s string [-1]);
 * what decodes is packed back through the response encoders (the signature's outputs are its
 * inputs), and the metadata encoders run once per input. */
#include <stdlib.h>
#include <string.h>

#include "serve/codec_grpc.h"

static kiln_value_info info(const char *name, kiln_dtype dtype, int rank, int64_t d1) {
  kiln_value_info v;
  memset(&v, 0, sizeof v);
  v.name = name;
  v.kind = KILN_VALUE_TENSOR;
  v.dtype = dtype;
  v.rank = rank;
  v.dims[0] = -1;
  v.dims[1] = d1;
  return v;
}

static void check(kiln_status s, uint8_t *buf) {
  if (!s && !buf) __builtin_trap(); /* success always gives a buffer */
  kiln_status_free(s);
  free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  kiln_value_info io[3] = {info("x", KILN_FLOAT, 2, 4), info("ids", KILN_INT64, 1, 0), info("s", KILN_STRING, 1, 0)};
  kx_signature sig = {3, io, 3, io};
  kiln_tensor t[3];
  const kiln_tensor *outs[3] = {&t[0], &t[1], &t[2]};
  kx_v2_request sel;
  uint8_t *buf;
  size_t len;
  kiln_status s;
  if (data[0] % 2 == 0) {
    Tensorflow__Serving__PredictRequest *m = tensorflow__serving__predict_request__unpack(NULL, size - 1, data + 1);
    if (!m) return 0;
    s = kx_grpc_decode_predict(&sig, m, t, &sel);
    tensorflow__serving__predict_request__free_unpacked(m, NULL);
    if (!s) {
      s = kx_grpc_encode_predict(&sig, "m", 1, &sel, outs, &buf, &len);
      check(s, buf);
      s = NULL;
    }
    int64_t total = 0;
    kiln_tensor one;
    Tensorflow__TensorProto *tp = tensorflow__tensor_proto__unpack(NULL, size - 1, data + 1);
    if (tp) { /* the bytes as a bare TensorProto, against an input that takes any dtype and shape */
      kiln_value_info any = info("any", KILN_UNDEFINED, -1, 0);
      kiln_status_free(kx_grpc_tensor_from_proto(&any, tp, &one, &total));
      kiln_tensor_release(&one);
      tensorflow__tensor_proto__free_unpacked(tp, NULL);
    }
  } else {
    Inference__ModelInferRequest *m = inference__model_infer_request__unpack(NULL, size - 1, data + 1);
    if (!m) return 0;
    s = kx_grpc_decode_v2_infer(&sig, m, t, &sel);
    inference__model_infer_request__free_unpacked(m, NULL);
    if (!s) {
      check(kx_grpc_encode_v2_infer(&sig, "m", 1, &sel, outs, 0, &buf, &len), buf);
      check(kx_grpc_encode_v2_infer(&sig, "m", -1, &sel, outs, 1, &buf, &len), buf);
    }
  }
  kiln_status_free(s);
  kx_codec_release_all(t, 3);
  kx_v2_request_free(&sel);
  int64_t versions[1] = {1};
  check(kx_grpc_encode_tfs_metadata(&sig, "m", 1, &buf, &len), buf);
  check(kx_grpc_encode_v2_metadata(&sig, "m", versions, 1, &buf, &len), buf);
  return 0;
}
