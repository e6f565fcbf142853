/* The KServe V2 (Triton) gRPC payloads: ModelInferRequest decoded into kiln tensors (typed contents
 * or raw_input_contents), ModelInferResponse / ModelStreamInferResponse and ModelMetadataResponse
 * packed. The same checks and wording as the V2 REST codec (codec_v2.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve/codec_grpc.h"
#include "serve/codec_grpc_util.h"

/* ------------------------------------------------------------------ ModelInferRequest */

/* The typed fields of InferTensorContents, in one table so that checks can name them. */
enum { C_BOOL, C_INT, C_INT64, C_UINT, C_UINT64, C_FP32, C_FP64, C_BYTES, C_N };
static const char *const content_names[C_N] = {"bool_contents",   "int_contents",  "int64_contents",
                                               "uint_contents",   "uint64_contents", "fp32_contents",
                                               "fp64_contents",   "bytes_contents"};

static void content_counts(const Inference__InferTensorContents *c, size_t *n) {
  n[C_BOOL] = c->n_bool_contents;
  n[C_INT] = c->n_int_contents;
  n[C_INT64] = c->n_int64_contents;
  n[C_UINT] = c->n_uint_contents;
  n[C_UINT64] = c->n_uint64_contents;
  n[C_FP32] = c->n_fp32_contents;
  n[C_FP64] = c->n_fp64_contents;
  n[C_BYTES] = c->n_bytes_contents;
}

/* The field KServe carries a datatype's values in; -1 for FP16 and BF16 (raw only). */
static int own_content(kiln_dtype t) {
  switch (t) {
  case KILN_BOOL: return C_BOOL;
  case KILN_INT8:
  case KILN_INT16:
  case KILN_INT32: return C_INT;
  case KILN_INT64: return C_INT64;
  case KILN_UINT8:
  case KILN_UINT16:
  case KILN_UINT32: return C_UINT;
  case KILN_UINT64: return C_UINT64;
  case KILN_FLOAT: return C_FP32;
  case KILN_DOUBLE: return C_FP64;
  case KILN_STRING: return C_BYTES;
  default: return -1;
  }
}

/* A copy of bytes as a NUL-terminated string; element `i` of field `what` in messages. */
static kiln_status copy_string(const char *input, const char *what, int64_t i, const uint8_t *p, size_t len,
                               char **out) {
  if (len && memchr(p, 0, len))
    return kiln_error(KILN_INVALID_ARGUMENT,
                      "input '%s': %s element %lld holds a NUL byte, which kiln's string tensors cannot hold", input,
                      what, (long long)i);
  char *s = malloc(len + 1);
  if (!s) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory copying input '%s'", input);
  if (len) memcpy(s, p, len);
  s[len] = '\0';
  *out = s;
  return NULL;
}

static kiln_status fill_contents(const Inference__InferTensorContents *c, const char *input, kiln_tensor *t) {
  int64_t n = kiln_tensor_numel(t);
  void *d = t->data;
  for (int64_t i = 0; i < n; i++) {
    switch (t->dtype) {
    case KILN_BOOL: ((uint8_t *)d)[i] = c->bool_contents[i] != 0; break;
    case KILN_INT32: ((int32_t *)d)[i] = c->int_contents[i]; break;
    case KILN_INT64: ((int64_t *)d)[i] = c->int64_contents[i]; break;
    case KILN_UINT32: ((uint32_t *)d)[i] = c->uint_contents[i]; break;
    case KILN_UINT64: ((uint64_t *)d)[i] = c->uint64_contents[i]; break;
    case KILN_FLOAT: ((float *)d)[i] = c->fp32_contents[i]; break;
    case KILN_DOUBLE: ((double *)d)[i] = c->fp64_contents[i]; break;
    case KILN_STRING: {
      kiln_status s = copy_string(input, "bytes_contents", i, c->bytes_contents[i].data, c->bytes_contents[i].len,
                                  &((char **)d)[i]);
      if (s) return s;
      break;
    }
    case KILN_INT8:
    case KILN_INT16: {
      int32_t v = c->int_contents[i], lo = t->dtype == KILN_INT8 ? -128 : -32768, hi = t->dtype == KILN_INT8 ? 127 : 32767;
      if (v < lo || v > hi)
        return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': int_contents element %lld is %d, out of range for %s "
                          "(%d..%d)", input, (long long)i, (int)v, kx_v2_dtype_name(t->dtype), (int)lo, (int)hi);
      if (t->dtype == KILN_INT8) ((int8_t *)d)[i] = (int8_t)v;
      else ((int16_t *)d)[i] = (int16_t)v;
      break;
    }
    default: { /* UINT8, UINT16 */
      uint32_t v = c->uint_contents[i], hi = t->dtype == KILN_UINT8 ? 255 : 65535;
      if (v > hi)
        return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': uint_contents element %lld is %u, out of range for %s "
                          "(0..%u)", input, (long long)i, (unsigned)v, kx_v2_dtype_name(t->dtype), (unsigned)hi);
      if (t->dtype == KILN_UINT8) ((uint8_t *)d)[i] = (uint8_t)v;
      else ((uint16_t *)d)[i] = (uint16_t)v;
      break;
    }
    }
  }
  return NULL;
}

static uint32_t read_u32le(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Raw BYTES: each element a 4-byte little-endian length and the bytes, exactly filling the entry. */
static kiln_status fill_raw_bytes(const char *input, size_t k, const ProtobufCBinaryData *raw, kiln_tensor *t) {
  int64_t n = kiln_tensor_numel(t);
  size_t at = 0, size = raw->len;
  char **out = t->data;
  for (int64_t i = 0; i < n; i++) {
    if (size - at < 4)
      return kiln_error(KILN_INVALID_ARGUMENT,
                        "input '%s': raw_input_contents[%zu] ends inside the length of BYTES element %lld", input, k,
                        (long long)i);
    size_t l = read_u32le(raw->data + at);
    at += 4;
    if (l > size - at)
      return kiln_error(KILN_INVALID_ARGUMENT,
                        "input '%s': BYTES element %lld is %zu bytes long, but only %zu bytes are left in "
                        "raw_input_contents[%zu]", input, (long long)i, l, size - at, k);
    kiln_status s = copy_string(input, "raw BYTES", i, raw->data + at, l, &out[i]);
    if (s) return s;
    at += l;
  }
  if (at != size)
    return kiln_error(KILN_INVALID_ARGUMENT,
                      "input '%s': raw_input_contents[%zu] has %zu bytes, but its %lld BYTES elements take %zu", input,
                      k, size, (long long)n, at);
  return NULL;
}

/* Input k of the request; raw is its raw_input_contents entry or NULL. */
static kiln_status decode_input(const kx_signature *sig, const Inference__ModelInferRequest__InferInputTensor *e,
                                size_t k, const ProtobufCBinaryData *raw, int *seen, kiln_tensor *inputs,
                                int64_t *total) {
  const char *name = e->name ? e->name : "";
  int i;
  kiln_status s = kx_codec_claim_input(sig, name, seen, &i);
  if (s) return s;
  const kiln_value_info *info = &sig->inputs[i];
  kiln_dtype want;
  s = kx_codec_check_input(info, &want);
  if (s) return s;
  const char *dt = e->datatype ? e->datatype : "";
  kiln_dtype dtype = kx_v2_dtype_from_name(dt);
  if (dtype == KILN_UNDEFINED) return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': unknown datatype '%s'", name, dt);
  if (info->dtype != KILN_UNDEFINED && dtype != want)
    return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': expected datatype %s, got %s", name, kx_v2_dtype_name(want),
                      dt);
  if (e->n_shape > KILN_MAX_RANK)
    return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': shape has %zu dimensions, more than kiln's %d", name,
                      e->n_shape, KILN_MAX_RANK);
  int rank = (int)e->n_shape;
  int64_t dims[KILN_MAX_RANK], numel;
  for (int d = 0; d < rank; d++) dims[d] = e->shape[d];
  if ((s = kx_codec_shape_numel(name, rank, dims, &numel))) return s;
  if ((s = kx_codec_check_shape(info, rank, dims))) return s;
  char dim_text[KILN_MAX_RANK * 22 + 4];

  if (raw) {
    if (dtype == KILN_STRING) {
      if ((uint64_t)numel > raw->len / 4)
        return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': raw_input_contents[%zu] has %zu bytes, too few for %lld "
                          "BYTES elements (4 bytes of length each at least)", name, k, raw->len, (long long)numel);
      if ((s = kx_codec_alloc(&inputs[i], name, dtype, rank, dims, total))) return s;
      return fill_raw_bytes(name, k, raw, &inputs[i]);
    }
    size_t es = kiln_dtype_size(dtype);
    if (raw->len % es || raw->len / es != (uint64_t)numel)
      return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': raw_input_contents[%zu] has %zu bytes, but shape %s of %s "
                        "needs %lld", name, k, raw->len, kx_codec_format_dims(dim_text, sizeof dim_text, rank, dims), dt,
                        (long long)(numel * (int64_t)es));
    if ((s = kx_codec_alloc(&inputs[i], name, dtype, rank, dims, total))) return s;
    if (raw->len) memcpy(inputs[i].data, raw->data, raw->len);
    if (dtype == KILN_BOOL)
      for (int64_t j = 0; j < numel; j++) ((uint8_t *)inputs[i].data)[j] = ((uint8_t *)inputs[i].data)[j] != 0;
    return NULL;
  }

  static const Inference__InferTensorContents none = INFERENCE__INFER_TENSOR_CONTENTS__INIT;
  const Inference__InferTensorContents *c = e->contents ? e->contents : &none;
  size_t counts[C_N];
  content_counts(c, counts);
  int own = own_content(dtype);
  for (int f = 0; f < C_N; f++) {
    if (f == own || !counts[f]) continue;
    if (own < 0)
      return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': %s data must be sent in raw_input_contents, but %s holds "
                        "%zu values", name, dt, content_names[f], counts[f]);
    return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': datatype %s takes its values in %s, but %s holds %zu values",
                      name, dt, content_names[own], content_names[f], counts[f]);
  }
  if (own < 0 && numel > 0)
    return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': %s data must be sent in raw_input_contents", name, dt);
  size_t n = own < 0 ? 0 : counts[own];
  if (n != (uint64_t)numel)
    return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': shape %s needs %lld elements, %s has %zu", name,
                      kx_codec_format_dims(dim_text, sizeof dim_text, rank, dims), (long long)numel,
                      own < 0 ? "the request" : content_names[own], n);
  if ((s = kx_codec_alloc(&inputs[i], name, dtype, rank, dims, total))) return s;
  return fill_contents(c, name, &inputs[i]);
}

static kiln_status decode_infer(const kx_signature *sig, const Inference__ModelInferRequest *req,
                                kiln_tensor *inputs, kx_v2_request *sel) {
  if (req->id && req->id[0] && !(sel->id = strdup(req->id)))
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  kiln_status s = kx_grpc_select_all(sig, req->n_outputs, sel);
  for (size_t k = 0; k < req->n_outputs && !s; k++)
    s = kx_grpc_select_output(sig, req->outputs[k]->name ? req->outputs[k]->name : "", sel);
  if (s) return s;
  int raw = req->n_raw_input_contents > 0;
  if (raw && req->n_raw_input_contents != req->n_inputs)
    return kiln_error(KILN_INVALID_ARGUMENT, "raw_input_contents has %zu entries, but the request has %zu inputs; "
                      "give one per input, in input order", req->n_raw_input_contents, req->n_inputs);
  for (size_t k = 0; raw && k < req->n_inputs; k++)
    if (req->inputs[k]->contents)
      return kiln_error(KILN_INVALID_ARGUMENT, "input '%s' has contents, but the request uses raw_input_contents; "
                        "send one or the other", req->inputs[k]->name ? req->inputs[k]->name : "");
  int *seen = calloc((size_t)sig->n_inputs + 1, sizeof *seen);
  if (!seen) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  int64_t total = 0;
  for (size_t k = 0; k < req->n_inputs && !s; k++)
    s = decode_input(sig, req->inputs[k], k, raw ? &req->raw_input_contents[k] : NULL, seen, inputs, &total);
  if (!s) s = kx_codec_check_all_inputs(sig, seen);
  free(seen);
  return s;
}

kiln_status kx_grpc_decode_v2_infer(const kx_signature *sig, const Inference__ModelInferRequest *req,
                                    kiln_tensor *inputs, kx_v2_request *sel) {
  memset(inputs, 0, (size_t)sig->n_inputs * sizeof *inputs);
  memset(sel, 0, sizeof *sel);
  kiln_status s = decode_infer(sig, req, inputs, sel);
  if (s) {
    kx_codec_release_all(inputs, sig->n_inputs);
    kx_v2_request_free(sel);
  }
  return s;
}

/* ------------------------------------------------------------------ ModelInferResponse */

/* An output's raw bytes: the tensor's own for numbers (packing copies them), a scratch buffer of
 * 4-byte lengths + bytes for BYTES. */
static kiln_status raw_output(kx_scratch *sc, const char *name, const kiln_tensor *t, ProtobufCBinaryData *out) {
  int64_t n = kiln_tensor_numel(t);
  if (t->dtype != KILN_STRING) {
    out->data = n > 0 ? t->data : NULL;
    out->len = n > 0 ? (size_t)n * kiln_dtype_size(t->dtype) : 0;
    return NULL;
  }
  const char *const *s = t->data;
  size_t total = 0;
  for (int64_t i = 0; i < n; i++) {
    size_t l = s[i] ? strlen(s[i]) : 0;
    if (l > UINT32_MAX)
      return kiln_error(KILN_OUT_OF_RANGE, "output '%s': element %lld is longer than 4 GiB", name, (long long)i);
    total += 4 + l;
  }
  uint8_t *p = kx_scratch_calloc(sc, total, 1);
  if (!p) return NULL; /* reported by packing */
  out->data = p;
  out->len = total;
  for (int64_t i = 0; i < n; i++) {
    size_t l = s[i] ? strlen(s[i]) : 0;
    p[0] = (uint8_t)l, p[1] = (uint8_t)(l >> 8), p[2] = (uint8_t)(l >> 16), p[3] = (uint8_t)(l >> 24);
    if (l) memcpy(p + 4, s[i], l);
    p += 4 + l;
  }
  return NULL;
}

kiln_status kx_grpc_encode_v2_infer(const kx_signature *sig, const char *model, int64_t version,
                                    const kx_v2_request *sel, const kiln_tensor *const *outputs, int stream,
                                    uint8_t **out, size_t *len) {
  *out = NULL;
  *len = 0;
  kiln_status s = kx_grpc_check_outputs(sig, sel, outputs);
  if (s) return s;
  kx_scratch sc = {0};
  int n = sel ? sel->n_outputs : sig->n_outputs;
  char version_text[24] = "";
  if (version >= 0) snprintf(version_text, sizeof version_text, "%lld", (long long)version);
  Inference__ModelInferResponse resp = INFERENCE__MODEL_INFER_RESPONSE__INIT;
  resp.model_name = (char *)model;
  resp.model_version = version_text;
  if (sel && sel->id) resp.id = sel->id;
  Inference__ModelInferResponse__InferOutputTensor *o = kx_scratch_calloc(&sc, (size_t)n, sizeof *o);
  Inference__ModelInferResponse__InferOutputTensor **op = kx_scratch_calloc(&sc, (size_t)n, sizeof *op);
  ProtobufCBinaryData *raw = kx_scratch_calloc(&sc, (size_t)n, sizeof *raw);
  for (int k = 0; k < n && o && op && raw && !s; k++) {
    int i = sel ? sel->outputs[k].index : k;
    const kiln_tensor *t = outputs[i];
    inference__model_infer_response__infer_output_tensor__init(&o[k]);
    o[k].name = (char *)sig->outputs[i].name;
    o[k].datatype = (char *)kx_v2_dtype_name(t->dtype);
    o[k].n_shape = (size_t)t->rank;
    o[k].shape = (int64_t *)t->dims;
    op[k] = &o[k];
    s = raw_output(&sc, sig->outputs[i].name, t, &raw[k]);
  }
  if (s) {
    kx_scratch_free(&sc);
    return s;
  }
  resp.n_outputs = (size_t)n;
  resp.outputs = op;
  resp.n_raw_output_contents = (size_t)n;
  resp.raw_output_contents = raw;
  if (stream) {
    Inference__ModelStreamInferResponse wrap = INFERENCE__MODEL_STREAM_INFER_RESPONSE__INIT;
    wrap.infer_response = &resp;
    s = kx_grpc_pack(&wrap.base, &sc, out, len);
  } else {
    s = kx_grpc_pack(&resp.base, &sc, out, len);
  }
  kx_scratch_free(&sc);
  return s;
}

/* ------------------------------------------------------------------ ModelMetadataResponse */

static void tensor_metadata(kx_scratch *sc, const kiln_value_info *v, Inference__ModelMetadataResponse__TensorMetadata *m) {
  inference__model_metadata_response__tensor_metadata__init(m);
  m->name = (char *)v->name;
  const char *dt = v->dtype == KILN_UNDEFINED ? "FP32" : kx_v2_dtype_name(v->dtype);
  m->datatype = (char *)(dt ? dt : "INVALID");
  int rank = v->rank < 0 ? 1 : v->rank > KILN_MAX_RANK ? KILN_MAX_RANK : v->rank;
  int64_t *shape = kx_scratch_calloc(sc, (size_t)rank, sizeof *shape);
  if (!shape) return;
  for (int i = 0; i < rank; i++) shape[i] = v->rank < 0 || v->dims[i] < 0 ? -1 : v->dims[i];
  m->n_shape = (size_t)rank;
  m->shape = shape;
}

static Inference__ModelMetadataResponse__TensorMetadata **metadata_list(kx_scratch *sc, const kiln_value_info *v,
                                                                        int n) {
  Inference__ModelMetadataResponse__TensorMetadata *m = kx_scratch_calloc(sc, (size_t)n, sizeof *m);
  Inference__ModelMetadataResponse__TensorMetadata **mp = kx_scratch_calloc(sc, (size_t)n, sizeof *mp);
  for (int i = 0; i < n && m && mp; i++) {
    tensor_metadata(sc, &v[i], &m[i]);
    mp[i] = &m[i];
  }
  return mp;
}

kiln_status kx_grpc_encode_v2_metadata(const kx_signature *sig, const char *model, const int64_t *versions,
                                       int n_versions, uint8_t **out, size_t *len) {
  *out = NULL;
  *len = 0;
  kx_scratch sc = {0};
  Inference__ModelMetadataResponse resp = INFERENCE__MODEL_METADATA_RESPONSE__INIT;
  resp.name = (char *)model;
  resp.platform = "onnxruntime_onnx";
  int nv = n_versions > 0 ? n_versions : 0;
  char **vs = kx_scratch_calloc(&sc, (size_t)nv, sizeof *vs);
  for (int i = 0; i < nv && vs; i++) {
    if ((vs[i] = kx_scratch_calloc(&sc, 24, 1))) snprintf(vs[i], 24, "%lld", (long long)versions[i]);
  }
  resp.n_versions = (size_t)nv;
  resp.versions = vs;
  resp.n_inputs = (size_t)sig->n_inputs;
  resp.inputs = metadata_list(&sc, sig->inputs, sig->n_inputs);
  resp.n_outputs = (size_t)sig->n_outputs;
  resp.outputs = metadata_list(&sc, sig->outputs, sig->n_outputs);
  kiln_status s = kx_grpc_pack(&resp.base, &sc, out, len);
  kx_scratch_free(&sc);
  return s;
}
