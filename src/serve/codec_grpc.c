/* The TF Serving gRPC payloads: TensorProto and PredictRequest decoded into kiln tensors with
 * TensorFlow's own rules (Tensor::FromProto), PredictResponse and GetModelMetadataResponse packed.
 * The KServe V2 messages are in codec_grpc_v2.c; what both share (a scratch allocator for the
 * messages an encoder builds, packing) is at the top here. */
#include "serve/codec_grpc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/any.pb-c.h"
#include "serve/codec_grpc_util.h"
#include "tensorflow_serving/apis/get_model_metadata.pb-c.h"

/* ------------------------------------------------------------------ shared by the gRPC codecs */

void *kx_scratch_calloc(kx_scratch *s, size_t count, size_t size) {
  if (s->failed) return NULL;
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 32;
    void **p = realloc(s->ptrs, cap * sizeof *p);
    if (!p) {
      s->failed = 1;
      return NULL;
    }
    s->ptrs = p;
    s->cap = cap;
  }
  void *q = calloc(count ? count : 1, size ? size : 1);
  if (!q) {
    s->failed = 1;
    return NULL;
  }
  s->ptrs[s->n++] = q;
  return q;
}

void kx_scratch_free(kx_scratch *s) {
  for (size_t i = 0; i < s->n; i++) free(s->ptrs[i]);
  free(s->ptrs);
  memset(s, 0, sizeof *s);
}

kiln_status kx_grpc_pack(const ProtobufCMessage *m, kx_scratch *s, uint8_t **out, size_t *len) {
  *out = NULL;
  *len = 0;
  if (s && s->failed) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory encoding a response");
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(n ? n : 1);
  if (!buf) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory encoding a %zu-byte response", n);
  if (protobuf_c_message_pack(m, buf) != n) {
    free(buf);
    return kiln_error(KILN_INTERNAL, "packing a %s gave another size than computed", m->descriptor->name);
  }
  *out = buf;
  *len = n;
  return NULL;
}

kiln_status kx_grpc_check_outputs(const kx_signature *sig, const kx_v2_request *sel,
                                  const kiln_tensor *const *outputs) {
  int n = sel ? sel->n_outputs : sig->n_outputs;
  for (int k = 0; k < n; k++) {
    int i = sel ? sel->outputs[k].index : k;
    if (i < 0 || i >= sig->n_outputs) return kiln_error(KILN_INTERNAL, "requested output %d does not exist", i);
    kiln_status s = kx_codec_check_output(sig, outputs, i);
    if (s) return s;
  }
  return NULL;
}

kiln_status kx_grpc_select_output(const kx_signature *sig, const char *name, kx_v2_request *sel) {
  int i = kx_codec_find(sig->outputs, sig->n_outputs, name);
  if (i < 0) return kx_codec_unknown_name(sig->outputs, sig->n_outputs, "output", name);
  for (int j = 0; j < sel->n_outputs; j++)
    if (sel->outputs[j].index == i) return kiln_error(KILN_INVALID_ARGUMENT, "output '%s' is requested twice", name);
  sel->outputs[sel->n_outputs++].index = i;
  return NULL;
}

kiln_status kx_grpc_select_all(const kx_signature *sig, size_t n_requested, kx_v2_request *sel) {
  /* more names than outputs must repeat one or name an unknown one: reported by select_output */
  size_t n = n_requested ? n_requested : (size_t)sig->n_outputs;
  if (n > (size_t)sig->n_outputs) n = (size_t)sig->n_outputs + 1;
  sel->outputs = calloc(n ? n : 1, sizeof *sel->outputs);
  if (!sel->outputs) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  if (!n_requested) {
    for (int i = 0; i < sig->n_outputs; i++) sel->outputs[i].index = i;
    sel->n_outputs = sig->n_outputs;
  }
  return NULL;
}

/* ------------------------------------------------------------------ dtypes */

int kx_grpc_tf_dtype(kiln_dtype t) {
  switch (t) {
  case KILN_FLOAT: return TENSORFLOW__DATA_TYPE__DT_FLOAT;
  case KILN_DOUBLE: return TENSORFLOW__DATA_TYPE__DT_DOUBLE;
  case KILN_INT32: return TENSORFLOW__DATA_TYPE__DT_INT32;
  case KILN_UINT8: return TENSORFLOW__DATA_TYPE__DT_UINT8;
  case KILN_INT16: return TENSORFLOW__DATA_TYPE__DT_INT16;
  case KILN_INT8: return TENSORFLOW__DATA_TYPE__DT_INT8;
  case KILN_STRING: return TENSORFLOW__DATA_TYPE__DT_STRING;
  case KILN_INT64: return TENSORFLOW__DATA_TYPE__DT_INT64;
  case KILN_BOOL: return TENSORFLOW__DATA_TYPE__DT_BOOL;
  case KILN_BFLOAT16: return TENSORFLOW__DATA_TYPE__DT_BFLOAT16;
  case KILN_UINT16: return TENSORFLOW__DATA_TYPE__DT_UINT16;
  case KILN_FLOAT16: return TENSORFLOW__DATA_TYPE__DT_HALF;
  case KILN_UINT32: return TENSORFLOW__DATA_TYPE__DT_UINT32;
  case KILN_UINT64: return TENSORFLOW__DATA_TYPE__DT_UINT64;
  default: return TENSORFLOW__DATA_TYPE__DT_INVALID;
  }
}

kiln_dtype kx_grpc_dtype_from_tf(int tf_dtype) {
  static const kiln_dtype all[] = {KILN_FLOAT, KILN_DOUBLE, KILN_INT32,   KILN_UINT8,  KILN_INT16,
                                   KILN_INT8,  KILN_STRING, KILN_INT64,   KILN_BOOL,   KILN_BFLOAT16,
                                   KILN_UINT16, KILN_FLOAT16, KILN_UINT32, KILN_UINT64};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
    if (tf_dtype != TENSORFLOW__DATA_TYPE__DT_INVALID && kx_grpc_tf_dtype(all[i]) == tf_dtype) return all[i];
  return KILN_UNDEFINED;
}

/* "DT_FLOAT", or "DataType 99" for a number the enum does not know. */
static const char *tf_dtype_text(int v, char *buf, size_t size) {
  const ProtobufCEnumValue *e = protobuf_c_enum_descriptor_get_value(&tensorflow__data_type__descriptor, v);
  if (e) return e->name;
  snprintf(buf, size, "DataType %d", v);
  return buf;
}

/* ------------------------------------------------------------------ TensorProto -> tensor */

/* The typed value fields of a TensorProto, in one table so that checks can name them. */
enum { F_HALF, F_FLOAT, F_DOUBLE, F_INT, F_STRING, F_SCOMPLEX, F_INT64, F_BOOL, F_DCOMPLEX, F_UINT32, F_UINT64, F_N };
static const char *const field_names[F_N] = {"half_val",  "float_val", "double_val", "int_val",
                                            "string_val", "scomplex_val", "int64_val", "bool_val",
                                            "dcomplex_val", "uint32_val", "uint64_val"};

static void field_counts(const Tensorflow__TensorProto *tp, size_t *n) {
  n[F_HALF] = tp->n_half_val;
  n[F_FLOAT] = tp->n_float_val;
  n[F_DOUBLE] = tp->n_double_val;
  n[F_INT] = tp->n_int_val;
  n[F_STRING] = tp->n_string_val;
  n[F_SCOMPLEX] = tp->n_scomplex_val;
  n[F_INT64] = tp->n_int64_val;
  n[F_BOOL] = tp->n_bool_val;
  n[F_DCOMPLEX] = tp->n_dcomplex_val;
  n[F_UINT32] = tp->n_uint32_val;
  n[F_UINT64] = tp->n_uint64_val;
}

/* The field TensorFlow reads a dtype's values from. */
static int own_field(kiln_dtype t) {
  switch (t) {
  case KILN_FLOAT16:
  case KILN_BFLOAT16: return F_HALF;
  case KILN_FLOAT: return F_FLOAT;
  case KILN_DOUBLE: return F_DOUBLE;
  case KILN_INT32:
  case KILN_INT16:
  case KILN_INT8:
  case KILN_UINT8:
  case KILN_UINT16: return F_INT;
  case KILN_STRING: return F_STRING;
  case KILN_INT64: return F_INT64;
  case KILN_BOOL: return F_BOOL;
  case KILN_UINT32: return F_UINT32;
  default: return F_UINT64;
  }
}

/* Range of an int_val / half_val element for a narrow dtype; 0 when any int32 fits. */
static int int32_range(kiln_dtype t, int32_t *lo, int32_t *hi) {
  switch (t) {
  case KILN_INT8: *lo = -128, *hi = 127; return 1;
  case KILN_UINT8: *lo = 0, *hi = 255; return 1;
  case KILN_INT16: *lo = -32768, *hi = 32767; return 1;
  case KILN_UINT16:
  case KILN_FLOAT16:
  case KILN_BFLOAT16: *lo = 0, *hi = 65535; return 1;
  default: return 0;
  }
}

/* Copies element `from` of the typed field into element i of t (n values given). */
static kiln_status put_typed(const Tensorflow__TensorProto *tp, const char *name, kiln_tensor *t, int64_t i,
                             size_t from) {
  void *d = t->data;
  switch (t->dtype) {
  case KILN_FLOAT: ((float *)d)[i] = tp->float_val[from]; return NULL;
  case KILN_DOUBLE: ((double *)d)[i] = tp->double_val[from]; return NULL;
  case KILN_INT64: ((int64_t *)d)[i] = tp->int64_val[from]; return NULL;
  case KILN_UINT32: ((uint32_t *)d)[i] = tp->uint32_val[from]; return NULL;
  case KILN_UINT64: ((uint64_t *)d)[i] = tp->uint64_val[from]; return NULL;
  case KILN_BOOL: ((uint8_t *)d)[i] = tp->bool_val[from] != 0; return NULL;
  case KILN_STRING: {
    const ProtobufCBinaryData *b = &tp->string_val[from];
    if (b->len && memchr(b->data, 0, b->len))
      return kiln_error(KILN_INVALID_ARGUMENT,
                        "input '%s': string_val[%zu] holds a NUL byte, which kiln's string tensors cannot hold", name,
                        from);
    char *s = malloc(b->len + 1);
    if (!s) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory copying input '%s'", name);
    if (b->len) memcpy(s, b->data, b->len);
    s[b->len] = '\0';
    ((char **)d)[i] = s;
    return NULL;
  }
  default: break;
  }
  int32_t v = t->dtype == KILN_FLOAT16 || t->dtype == KILN_BFLOAT16 ? tp->half_val[from] : tp->int_val[from];
  int32_t lo, hi;
  if (int32_range(t->dtype, &lo, &hi) && (v < lo || v > hi)) {
    char buf[32];
    return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': %s[%zu] is %d, out of range for %s (%d..%d)", name,
                      t->dtype == KILN_FLOAT16 || t->dtype == KILN_BFLOAT16 ? "half_val" : "int_val", from, (int)v,
                      tf_dtype_text(kx_grpc_tf_dtype(t->dtype), buf, sizeof buf), (int)lo, (int)hi);
  }
  switch (t->dtype) {
  case KILN_INT32: ((int32_t *)d)[i] = v; break;
  case KILN_INT16: ((int16_t *)d)[i] = (int16_t)v; break;
  case KILN_INT8: ((int8_t *)d)[i] = (int8_t)v; break;
  case KILN_UINT8: ((uint8_t *)d)[i] = (uint8_t)v; break;
  default: ((uint16_t *)d)[i] = (uint16_t)v; break; /* UINT16, FLOAT16, BFLOAT16 bit patterns */
  }
  return NULL;
}

/* The values of the dtype's typed field, n of them (at most numel): the rest repeat the last one
 * (zeros, or empty strings, when there are none). */
static kiln_status fill_typed(const Tensorflow__TensorProto *tp, const char *name, kiln_tensor *t, size_t n) {
  int64_t numel = kiln_tensor_numel(t);
  for (int64_t i = 0; i < numel; i++) {
    if ((size_t)i >= n && n > 0 && t->dtype != KILN_STRING) { /* the repeat: copy the last element onward */
      size_t es = kiln_dtype_size(t->dtype);
      char *base = t->data;
      for (int64_t j = i; j < numel; j++) memcpy(base + (size_t)j * es, base + (size_t)(n - 1) * es, es);
      return NULL;
    }
    if ((size_t)i >= n && n == 0) {
      if (t->dtype != KILN_STRING) return NULL; /* kiln_tensor_alloc zero-filled it */
      if (!(((char **)t->data)[i] = strdup("")))
        return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory copying input '%s'", name);
      continue;
    }
    kiln_status s = put_typed(tp, name, t, i, (size_t)i < n ? (size_t)i : n - 1);
    if (s) return s;
  }
  return NULL;
}

static kiln_status from_proto(const kiln_value_info *info, const Tensorflow__TensorProto *tp, kiln_tensor *out,
                              int64_t *total) {
  const char *name = info->name;
  kiln_dtype want;
  kiln_status s = kx_codec_check_input(info, &want);
  if (s) return s;
  char got_buf[32], want_buf[32];
  const char *got_text = tf_dtype_text(tp->dtype, got_buf, sizeof got_buf);
  kiln_dtype dtype = kx_grpc_dtype_from_tf(tp->dtype);
  if (info->dtype != KILN_UNDEFINED) {
    if (dtype != want)
      return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': expected dtype %s, got %s", name,
                        tf_dtype_text(kx_grpc_tf_dtype(want), want_buf, sizeof want_buf), got_text);
  } else if (tp->dtype == TENSORFLOW__DATA_TYPE__DT_INVALID) {
    return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': dtype is not set (DT_INVALID)", name);
  } else if (dtype == KILN_UNDEFINED) {
    return kiln_error(KILN_UNIMPLEMENTED, "input '%s': dtype %s is not supported", name, got_text);
  }

  int rank = 0;
  int64_t dims[KILN_MAX_RANK];
  const Tensorflow__TensorShapeProto *shape = tp->tensor_shape;
  if (shape) { /* no tensor_shape: a scalar, as in TensorFlow */
    if (shape->unknown_rank)
      return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': tensor_shape has unknown_rank set; a request's tensor "
                        "needs its full shape", name);
    if (shape->n_dim > KILN_MAX_RANK)
      return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': tensor_shape has %zu dimensions, more than kiln's %d",
                        name, shape->n_dim, KILN_MAX_RANK);
    for (size_t d = 0; d < shape->n_dim; d++) dims[rank++] = shape->dim[d] ? shape->dim[d]->size : 0;
  }
  int64_t numel;
  if ((s = kx_codec_shape_numel(name, rank, dims, &numel))) return s;
  if ((s = kx_codec_check_shape(info, rank, dims))) return s;

  size_t counts[F_N];
  field_counts(tp, counts);
  int own = own_field(dtype);
  for (int f = 0; f < F_N; f++)
    if (f != own && counts[f])
      return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': dtype %s takes its values in %s, but %s holds %zu values",
                        name, tf_dtype_text(kx_grpc_tf_dtype(dtype), want_buf, sizeof want_buf), field_names[own],
                        field_names[f], counts[f]);
  size_t n = counts[own];
  char dim_text[KILN_MAX_RANK * 22 + 4];
  if (tp->tensor_content.len) {
    if (n)
      return kiln_error(KILN_INVALID_ARGUMENT, "input '%s' has values in both tensor_content and %s; send one", name,
                        field_names[own]);
    if (dtype == KILN_STRING)
      return kiln_error(KILN_UNIMPLEMENTED, "input '%s': DT_STRING values in tensor_content are not supported; send "
                        "them in string_val", name);
    size_t es = kiln_dtype_size(dtype);
    if (tp->tensor_content.len / es != (size_t)numel || tp->tensor_content.len % es)
      return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': tensor_content has %zu bytes, but shape %s of %s needs "
                        "%lld", name, tp->tensor_content.len, kx_codec_format_dims(dim_text, sizeof dim_text, rank, dims),
                        got_text, (long long)(numel * (int64_t)es));
    if ((s = kx_codec_alloc(out, name, dtype, rank, dims, total))) return s;
    memcpy(out->data, tp->tensor_content.data, tp->tensor_content.len);
    if (dtype == KILN_BOOL)
      for (int64_t i = 0; i < numel; i++) ((uint8_t *)out->data)[i] = ((uint8_t *)out->data)[i] != 0;
    return NULL;
  }
  if (n > (size_t)numel)
    return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': %s has %zu values, more than the %lld elements of shape %s",
                      name, field_names[own], n, (long long)numel,
                      kx_codec_format_dims(dim_text, sizeof dim_text, rank, dims));
  if (numel - (int64_t)n > KX_GRPC_MAX_REPEAT_ELEMENTS)
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "input '%s': %s has %zu values for the %lld elements of shape %s; kiln "
                      "repeats the last value for at most %lld elements (send the values, or tensor_content)",
                      name, field_names[own], n, (long long)numel,
                      kx_codec_format_dims(dim_text, sizeof dim_text, rank, dims),
                      (long long)KX_GRPC_MAX_REPEAT_ELEMENTS);
  if ((s = kx_codec_alloc(out, name, dtype, rank, dims, total))) return s;
  return fill_typed(tp, name, out, n);
}

kiln_status kx_grpc_tensor_from_proto(const kiln_value_info *info, const Tensorflow__TensorProto *tp,
                                      kiln_tensor *out, int64_t *total) {
  memset(out, 0, sizeof *out);
  static const Tensorflow__TensorProto empty = TENSORFLOW__TENSOR_PROTO__INIT;
  int64_t before = *total;
  kiln_status s = from_proto(info, tp ? tp : &empty, out, total);
  if (s) {
    kiln_tensor_release(out);
    *total = before;
  }
  return s;
}

/* ------------------------------------------------------------------ PredictRequest */

static kiln_status decode_predict(const kx_signature *sig, const Tensorflow__Serving__PredictRequest *req,
                                  kiln_tensor *inputs, kx_v2_request *sel) {
  const char *signature = req->model_spec ? req->model_spec->signature_name : NULL;
  if (signature && signature[0] && strcmp(signature, "serving_default"))
    return kiln_error(KILN_NOT_FOUND, "signature '%s' not found (the model has serving_default)", signature);
  kiln_status s = kx_grpc_select_all(sig, req->n_output_filter, sel);
  for (size_t k = 0; k < req->n_output_filter && !s; k++) s = kx_grpc_select_output(sig, req->output_filter[k], sel);
  if (s) return s;
  int *seen = calloc((size_t)sig->n_inputs + 1, sizeof *seen);
  if (!seen) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  int64_t total = 0;
  for (size_t k = 0; k < req->n_inputs && !s; k++) {
    const Tensorflow__Serving__PredictRequest__InputsEntry *e = req->inputs[k];
    const char *name = e->key ? e->key : "";
    int i;
    s = kx_codec_claim_input(sig, name, seen, &i);
    if (!s) s = kx_grpc_tensor_from_proto(&sig->inputs[i], e->value, &inputs[i], &total);
  }
  if (!s) s = kx_codec_check_all_inputs(sig, seen);
  free(seen);
  return s;
}

kiln_status kx_grpc_decode_predict(const kx_signature *sig, const Tensorflow__Serving__PredictRequest *req,
                                   kiln_tensor *inputs, kx_v2_request *sel) {
  memset(inputs, 0, (size_t)sig->n_inputs * sizeof *inputs);
  memset(sel, 0, sizeof *sel);
  kiln_status s = decode_predict(sig, req, inputs, sel);
  if (s) {
    kx_codec_release_all(inputs, sig->n_inputs);
    kx_v2_request_free(sel);
  }
  return s;
}

/* ------------------------------------------------------------------ PredictResponse */

static Tensorflow__TensorShapeProto *shape_proto(kx_scratch *sc, int rank, const int64_t *dims,
                                                 const char *const *names) {
  Tensorflow__TensorShapeProto *sp = kx_scratch_calloc(sc, 1, sizeof *sp);
  Tensorflow__TensorShapeProto__Dim *d = kx_scratch_calloc(sc, rank > 0 ? (size_t)rank : 1, sizeof *d);
  Tensorflow__TensorShapeProto__Dim **dp = kx_scratch_calloc(sc, rank > 0 ? (size_t)rank : 1, sizeof *dp);
  if (!sp || !d || !dp) return NULL;
  tensorflow__tensor_shape_proto__init(sp);
  if (rank < 0) {
    sp->unknown_rank = 1;
    return sp;
  }
  for (int i = 0; i < rank; i++) {
    tensorflow__tensor_shape_proto__dim__init(&d[i]);
    d[i].size = dims[i] < 0 ? -1 : dims[i];
    if (names && names[i]) d[i].name = (char *)names[i];
    dp[i] = &d[i];
  }
  sp->n_dim = (size_t)rank;
  sp->dim = dp;
  return sp;
}

/* An output as a TensorProto: numbers in tensor_content (pointing at the tensor's own bytes, which
 * packing copies), strings in string_val. */
static Tensorflow__TensorProto *tensor_proto(kx_scratch *sc, const kiln_tensor *t) {
  Tensorflow__TensorProto *tp = kx_scratch_calloc(sc, 1, sizeof *tp);
  if (!tp) return NULL;
  tensorflow__tensor_proto__init(tp);
  tp->dtype = kx_grpc_tf_dtype(t->dtype);
  if (!(tp->tensor_shape = shape_proto(sc, t->rank, t->dims, NULL))) return NULL;
  int64_t numel = kiln_tensor_numel(t);
  if (t->dtype == KILN_STRING) {
    ProtobufCBinaryData *v = kx_scratch_calloc(sc, (size_t)numel, sizeof *v);
    if (!v) return NULL;
    const char *const *s = t->data;
    for (int64_t i = 0; i < numel; i++) {
      v[i].data = (uint8_t *)(s[i] ? s[i] : "");
      v[i].len = s[i] ? strlen(s[i]) : 0;
    }
    tp->n_string_val = (size_t)numel;
    tp->string_val = v;
  } else if (numel > 0) {
    tp->tensor_content.data = t->data;
    tp->tensor_content.len = (size_t)numel * kiln_dtype_size(t->dtype);
  }
  return tp;
}

static Tensorflow__Serving__ModelSpec *model_spec(kx_scratch *sc, const char *model, int64_t version,
                                                  const char *signature) {
  Tensorflow__Serving__ModelSpec *spec = kx_scratch_calloc(sc, 1, sizeof *spec);
  if (!spec) return NULL;
  tensorflow__serving__model_spec__init(spec);
  spec->name = (char *)model;
  spec->signature_name = (char *)signature;
  if (version >= 0) {
    Google__Protobuf__Int64Value *v = kx_scratch_calloc(sc, 1, sizeof *v);
    if (!v) return NULL;
    google__protobuf__int64_value__init(v);
    v->value = version;
    spec->version_choice_case = TENSORFLOW__SERVING__MODEL_SPEC__VERSION_CHOICE_VERSION;
    spec->version = v;
  }
  return spec;
}

kiln_status kx_grpc_encode_predict(const kx_signature *sig, const char *model, int64_t version,
                                   const kx_v2_request *sel, const kiln_tensor *const *outputs, uint8_t **out,
                                   size_t *len) {
  *out = NULL;
  *len = 0;
  kiln_status s = kx_grpc_check_outputs(sig, sel, outputs);
  if (s) return s;
  kx_scratch sc = {0};
  int n = sel ? sel->n_outputs : sig->n_outputs;
  Tensorflow__Serving__PredictResponse resp = TENSORFLOW__SERVING__PREDICT_RESPONSE__INIT;
  resp.model_spec = model_spec(&sc, model, version, "serving_default");
  Tensorflow__Serving__PredictResponse__OutputsEntry *e = kx_scratch_calloc(&sc, (size_t)n, sizeof *e);
  Tensorflow__Serving__PredictResponse__OutputsEntry **ep = kx_scratch_calloc(&sc, (size_t)n, sizeof *ep);
  for (int k = 0; k < n && e && ep; k++) {
    int i = sel ? sel->outputs[k].index : k;
    tensorflow__serving__predict_response__outputs_entry__init(&e[k]);
    e[k].key = (char *)sig->outputs[i].name;
    e[k].value = tensor_proto(&sc, outputs[i]);
    ep[k] = &e[k];
  }
  resp.n_outputs = (size_t)n;
  resp.outputs = ep;
  s = kx_grpc_pack(&resp.base, &sc, out, len);
  kx_scratch_free(&sc);
  return s;
}

/* ------------------------------------------------------------------ GetModelMetadataResponse */

static Tensorflow__TensorInfo *tensor_info(kx_scratch *sc, const kiln_value_info *v) {
  Tensorflow__TensorInfo *ti = kx_scratch_calloc(sc, 1, sizeof *ti);
  if (!ti) return NULL;
  tensorflow__tensor_info__init(ti);
  ti->encoding_case = TENSORFLOW__TENSOR_INFO__ENCODING_NAME;
  ti->name = (char *)v->name;
  ti->dtype = v->dtype == KILN_UNDEFINED ? TENSORFLOW__DATA_TYPE__DT_FLOAT : kx_grpc_tf_dtype(v->dtype);
  int rank = v->rank > KILN_MAX_RANK ? KILN_MAX_RANK : v->rank;
  ti->tensor_shape = shape_proto(sc, rank, v->dims, v->dim_names);
  return ti->tensor_shape ? ti : NULL;
}

/* The `inputs` or `outputs` map of a SignatureDef (both entry types have the same layout, but are
 * distinct C types: one builder per map). */
static Tensorflow__SignatureDef__InputsEntry **input_entries(kx_scratch *sc, const kiln_value_info *v, int n) {
  Tensorflow__SignatureDef__InputsEntry *e = kx_scratch_calloc(sc, (size_t)n, sizeof *e);
  Tensorflow__SignatureDef__InputsEntry **ep = kx_scratch_calloc(sc, (size_t)n, sizeof *ep);
  for (int i = 0; i < n && e && ep; i++) {
    tensorflow__signature_def__inputs_entry__init(&e[i]);
    e[i].key = (char *)v[i].name;
    e[i].value = tensor_info(sc, &v[i]);
    ep[i] = &e[i];
  }
  return ep;
}

static Tensorflow__SignatureDef__OutputsEntry **output_entries(kx_scratch *sc, const kiln_value_info *v, int n) {
  Tensorflow__SignatureDef__OutputsEntry *e = kx_scratch_calloc(sc, (size_t)n, sizeof *e);
  Tensorflow__SignatureDef__OutputsEntry **ep = kx_scratch_calloc(sc, (size_t)n, sizeof *ep);
  for (int i = 0; i < n && e && ep; i++) {
    tensorflow__signature_def__outputs_entry__init(&e[i]);
    e[i].key = (char *)v[i].name;
    e[i].value = tensor_info(sc, &v[i]);
    ep[i] = &e[i];
  }
  return ep;
}

kiln_status kx_grpc_encode_tfs_metadata(const kx_signature *sig, const char *model, int64_t version, uint8_t **out,
                                        size_t *len) {
  *out = NULL;
  *len = 0;
  kx_scratch sc = {0};
  Tensorflow__SignatureDef def = TENSORFLOW__SIGNATURE_DEF__INIT;
  def.n_inputs = (size_t)sig->n_inputs;
  def.inputs = input_entries(&sc, sig->inputs, sig->n_inputs);
  def.n_outputs = (size_t)sig->n_outputs;
  def.outputs = output_entries(&sc, sig->outputs, sig->n_outputs);
  def.method_name = "tensorflow/serving/predict";
  Tensorflow__Serving__SignatureDefMap__SignatureDefEntry entry =
      TENSORFLOW__SERVING__SIGNATURE_DEF_MAP__SIGNATURE_DEF_ENTRY__INIT;
  entry.key = "serving_default";
  entry.value = &def;
  Tensorflow__Serving__SignatureDefMap__SignatureDefEntry *entries[1] = {&entry};
  Tensorflow__Serving__SignatureDefMap map = TENSORFLOW__SERVING__SIGNATURE_DEF_MAP__INIT;
  map.n_signature_def = 1;
  map.signature_def = entries;

  uint8_t *packed_map = NULL;
  size_t packed_len = 0;
  kiln_status s = kx_grpc_pack(&map.base, &sc, &packed_map, &packed_len);
  if (s) {
    kx_scratch_free(&sc);
    return s;
  }
  Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
  any.type_url = "type.googleapis.com/tensorflow.serving.SignatureDefMap";
  any.value.data = packed_map;
  any.value.len = packed_len;
  Tensorflow__Serving__GetModelMetadataResponse__MetadataEntry meta =
      TENSORFLOW__SERVING__GET_MODEL_METADATA_RESPONSE__METADATA_ENTRY__INIT;
  meta.key = "signature_def";
  meta.value = &any;
  Tensorflow__Serving__GetModelMetadataResponse__MetadataEntry *metas[1] = {&meta};
  Tensorflow__Serving__GetModelMetadataResponse resp = TENSORFLOW__SERVING__GET_MODEL_METADATA_RESPONSE__INIT;
  resp.model_spec = model_spec(&sc, model, version, "");
  resp.n_metadata = 1;
  resp.metadata = metas;
  s = kx_grpc_pack(&resp.base, &sc, out, len);
  free(packed_map);
  kx_scratch_free(&sc);
  return s;
}
