/* The C half of the gRPC wire check (grpc_wire.py): reads a request that Google's Python protobuf
 * packed, decodes it with kiln's gRPC codec against a fixed signature holding every dtype kiln
 * serves (its outputs are its inputs), and packs the response for Python to read back.
 *
 *   grpc_wire_tool tfs|v2|v2stream REQUEST_FILE RESPONSE_FILE
 *   grpc_wire_tool tfsmeta|v2meta RESPONSE_FILE
 *
 * Exit 0 on success; 1 with "CODE message" on stdout when the codec refuses the request; 2 on
 * usage or I/O errors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve/codec_grpc.h"

#define N_IO 14

static kiln_value_info vi(const char *name, kiln_dtype dtype, int rank, int64_t d1) {
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

static uint8_t *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 1 << 16, n = 0;
  uint8_t *buf = malloc(cap);
  while (buf) {
    n += fread(buf + n, 1, cap - n, f);
    if (n < cap) break;
    uint8_t *bigger = realloc(buf, cap *= 2);
    if (!bigger) free(buf);
    buf = bigger;
  }
  fclose(f);
  *len = n;
  return buf;
}

static int write_file(const char *path, const uint8_t *data, size_t len) {
  FILE *f = fopen(path, "wb");
  if (!f) return 0;
  int ok = fwrite(data, 1, len, f) == len;
  return fclose(f) == 0 && ok;
}

static int refuse(kiln_status s) {
  printf("%s %s\n", kiln_code_name(kiln_status_code(s)), kiln_status_message(s));
  kiln_status_free(s);
  return 1;
}

int main(int argc, char **argv) {
  kiln_value_info io[N_IO] = {
      vi("f32", KILN_FLOAT, 2, 4),  vi("f64", KILN_DOUBLE, 1, 0), vi("i8", KILN_INT8, 1, 0),
      vi("u8", KILN_UINT8, 1, 0),   vi("i16", KILN_INT16, 1, 0),  vi("u16", KILN_UINT16, 1, 0),
      vi("i32", KILN_INT32, 1, 0),  vi("i64", KILN_INT64, 1, 0),  vi("u32", KILN_UINT32, 1, 0),
      vi("u64", KILN_UINT64, 1, 0), vi("b", KILN_BOOL, 1, 0),     vi("h", KILN_FLOAT16, 1, 0),
      vi("bf", KILN_BFLOAT16, 1, 0), vi("s", KILN_STRING, 1, 0)};
  kx_signature sig = {N_IO, io, N_IO, io};
  if (argc < 3) {
    fprintf(stderr, "usage: grpc_wire_tool tfs|v2|v2stream REQUEST RESPONSE | tfsmeta|v2meta RESPONSE\n");
    return 2;
  }
  const char *mode = argv[1];
  uint8_t *out = NULL;
  size_t out_len = 0;
  kiln_status s = NULL;
  if (!strcmp(mode, "tfsmeta")) {
    s = kx_grpc_encode_tfs_metadata(&sig, "wire", 7, &out, &out_len);
  } else if (!strcmp(mode, "v2meta")) {
    int64_t versions[2] = {3, 7};
    s = kx_grpc_encode_v2_metadata(&sig, "wire", versions, 2, &out, &out_len);
  } else {
    if (argc != 4) return 2;
    size_t len;
    uint8_t *req = read_file(argv[2], &len);
    if (!req) return 2;
    kiln_tensor t[N_IO];
    const kiln_tensor *outs[N_IO];
    for (int i = 0; i < N_IO; i++) outs[i] = &t[i];
    kx_v2_request sel;
    if (!strcmp(mode, "tfs")) {
      Tensorflow__Serving__PredictRequest *m = tensorflow__serving__predict_request__unpack(NULL, len, req);
      if (!m) return refuse(kiln_error(KILN_INVALID_ARGUMENT, "not a PredictRequest"));
      s = kx_grpc_decode_predict(&sig, m, t, &sel);
      tensorflow__serving__predict_request__free_unpacked(m, NULL);
      if (!s) s = kx_grpc_encode_predict(&sig, "wire", 7, &sel, outs, &out, &out_len);
    } else {
      Inference__ModelInferRequest *m = inference__model_infer_request__unpack(NULL, len, req);
      if (!m) return refuse(kiln_error(KILN_INVALID_ARGUMENT, "not a ModelInferRequest"));
      s = kx_grpc_decode_v2_infer(&sig, m, t, &sel);
      inference__model_infer_request__free_unpacked(m, NULL);
      if (!s) s = kx_grpc_encode_v2_infer(&sig, "wire", 7, &sel, outs, !strcmp(mode, "v2stream"), &out, &out_len);
    }
    free(req);
    kx_codec_release_all(t, N_IO); /* empty after a refused decode: releasing is harmless */
    kx_v2_request_free(&sel);
  }
  if (s) return refuse(s);
  int ok = write_file(argv[argc - 1], out, out_len);
  free(out);
  return ok ? 0 : 2;
}
