/* libFuzzer target: the REST payload codecs. Byte 0 picks one of three fixed signatures, bytes 1-2
 * are the V2 Inference-Header-Content-Length (little-endian; 0xffff = absent), the rest is the
 * body, decoded as a TF Serving predict request and as a V2 infer request; what decodes is encoded
 * back as outputs (the signatures' outputs are their inputs) through both encoders. */
#include <string.h>

#include "serve/codec.h"

static kiln_value_info info(const char *name, kiln_dtype dtype, int rank, int64_t d0, int64_t d1) {
  kiln_value_info v;
  memset(&v, 0, sizeof v);
  v.name = name;
  v.dtype = dtype;
  v.rank = rank;
  if (rank > 0) v.dims[0] = d0;
  if (rank > 1) v.dims[1] = d1;
  return v;
}

#define MAX_INPUTS 5

static void encode_all(const kx_signature *sig, kiln_tensor *t, const kx_v2_request *req) {
  const kiln_tensor *out[MAX_INPUTS];
  for (int i = 0; i < sig->n_outputs; i++) out[i] = &t[i];
  for (int columnar = 0; columnar < 2; columnar++) {
    kx_buf b = {0};
    kiln_status s = kx_tfs_encode_predict(sig, out, columnar, &b);
    kiln_status_free(s);
    kx_buf_free(&b);
  }
  kx_buf b = {0};
  size_t json_len = 0;
  kiln_status s = kx_v2_encode_infer(sig, "m", 1, req, out, &b, &json_len);
  if (!s && json_len > b.len) __builtin_trap();
  kiln_status_free(s);
  kx_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3) return 0;
  kiln_value_info a[3] = {info("x", KILN_FLOAT, 2, -1, 4), info("ids", KILN_INT64, 1, -1, 0),
                          info("flag", KILN_BOOL, 1, -1, 0)};
  kiln_value_info b[MAX_INPUTS] = {info("s", KILN_STRING, 1, -1, 0), info("h", KILN_FLOAT16, 2, -1, 2),
                                   info("u", KILN_UINT8, -1, 0, 0), info("k", KILN_DOUBLE, 0, 0, 0),
                                   info("bf", KILN_BFLOAT16, 2, 2, -1)};
  kiln_value_info c[1] = {info("x", KILN_FLOAT, 2, -1, 4)};
  kx_signature sigs[3] = {{3, a, 3, a}, {MAX_INPUTS, b, MAX_INPUTS, b}, {1, c, 1, c}};
  const kx_signature *sig = &sigs[data[0] % 3];
  unsigned h = data[1] | (unsigned)data[2] << 8;
  int64_t header_len = h == 0xffff ? -1 : (int64_t)h;
  const char *body = (const char *)data + 3;
  size_t len = size - 3;

  kiln_tensor t[MAX_INPUTS];
  int columnar;
  kiln_status s = kx_tfs_decode_predict(sig, body, len, t, &columnar);
  if (s) {
    kiln_status_free(s);
  } else {
    encode_all(sig, t, NULL);
    for (int i = 0; i < sig->n_inputs; i++) kiln_tensor_release(&t[i]);
  }
  kx_v2_request req;
  s = kx_v2_decode_infer(sig, body, len, header_len, t, &req);
  if (s) {
    kiln_status_free(s);
  } else {
    encode_all(sig, t, &req);
    for (int i = 0; i < sig->n_inputs; i++) kiln_tensor_release(&t[i]);
    kx_v2_request_free(&req);
  }
  return 0;
}
