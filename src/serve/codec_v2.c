/* KServe V2 (Triton) REST payloads: infer requests in JSON with the binary tensor data extension
 * decoded into tensors, responses encoded (JSON "data" or binary after the JSON header), and the
 * model metadata document. */
#include "serve/codec.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static uint32_t read_u32le(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* A non-negative integer JSON number (sizes, shape entries). */
static int get_count(const cJSON *v, int64_t *out) {
  if (!cJSON_IsNumber(v)) return 0;
  double d = v->valuedouble;
  if (!(d >= 0 && d <= 9007199254740992.0) || d != (double)(int64_t)d) return 0;
  *out = (int64_t)d;
  return 1;
}

/* The binary_data_size parameter of an input or output entry: 1 with *size set, 0 when absent,
 * -1 when malformed. */
static int binary_size(const cJSON *entry, int64_t *size) {
  const cJSON *p = cJSON_GetObjectItemCaseSensitive(entry, "parameters");
  const cJSON *v = cJSON_IsObject(p) ? cJSON_GetObjectItemCaseSensitive(p, "binary_data_size") : NULL;
  if (!v) return 0;
  return get_count(v, size) ? 1 : -1;
}

static kiln_status decode_bytes(const char *name, const unsigned char *p, int64_t size, kiln_tensor *t) {
  int64_t n = kiln_tensor_numel(t), at = 0;
  char **out = t->data;
  for (int64_t i = 0; i < n; i++) {
    if (size - at < 4)
      return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': binary BYTES data ends inside the length of element %lld",
                        name, (long long)i);
    int64_t l = read_u32le(p + at);
    at += 4;
    if (l > size - at)
      return kiln_error(KILN_INVALID_ARGUMENT,
                        "input '%s': binary BYTES element %lld is %lld bytes long, but only %lld bytes are left", name,
                        (long long)i, (long long)l, (long long)(size - at));
    if (memchr(p + at, 0, (size_t)l))
      return kiln_error(KILN_INVALID_ARGUMENT,
                        "input '%s': binary BYTES element %lld holds a NUL byte, which kiln's string tensors cannot "
                        "hold", name, (long long)i);
    out[i] = malloc((size_t)l + 1);
    if (!out[i]) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory copying input '%s'", name);
    memcpy(out[i], p + at, (size_t)l);
    out[i][l] = '\0';
    at += l;
  }
  if (at != size)
    return kiln_error(KILN_INVALID_ARGUMENT,
                      "input '%s': binary_data_size is %lld bytes, but its %lld BYTES elements take %lld", name,
                      (long long)size, (long long)n, (long long)at);
  return NULL;
}

/* One entry of "inputs". *offset is where its binary data (if any) starts in bin. */
static kiln_status decode_input(const kx_signature *sig, const cJSON *e, int64_t k, const unsigned char *bin,
                                int64_t *offset, size_t json_len, int *seen, kiln_tensor *inputs, int64_t *total) {
  if (!cJSON_IsObject(e)) return kiln_error(KILN_INVALID_ARGUMENT, "\"inputs\" entry %lld is not an object", (long long)k);
  const cJSON *jn = cJSON_GetObjectItemCaseSensitive(e, "name");
  if (!cJSON_IsString(jn))
    return kiln_error(KILN_INVALID_ARGUMENT, "\"inputs\" entry %lld has no \"name\" string", (long long)k);
  const char *name = jn->valuestring;
  int i;
  kiln_status s = kx_codec_claim_input(sig, name, seen, &i);
  if (s) return s;
  const kiln_value_info *info = &sig->inputs[i];
  kiln_dtype want;
  if ((s = kx_codec_check_input(info, &want))) return s;

  const cJSON *jt = cJSON_GetObjectItemCaseSensitive(e, "datatype");
  if (!cJSON_IsString(jt)) return kiln_error(KILN_INVALID_ARGUMENT, "input '%s' has no \"datatype\" string", name);
  kiln_dtype dtype = kx_v2_dtype_from_name(jt->valuestring);
  if (dtype == KILN_UNDEFINED)
    return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': unknown datatype '%s'", name, jt->valuestring);
  if (info->dtype != KILN_UNDEFINED && dtype != want)
    return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': expected datatype %s, got %s", name, kx_v2_dtype_name(want),
                      jt->valuestring);

  const cJSON *js = cJSON_GetObjectItemCaseSensitive(e, "shape");
  if (!cJSON_IsArray(js)) return kiln_error(KILN_INVALID_ARGUMENT, "input '%s' has no \"shape\" list", name);
  int rank = 0;
  int64_t dims[KILN_MAX_RANK];
  for (const cJSON *c = js->child; c; c = c->next) {
    if (rank == KILN_MAX_RANK)
      return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': shape has more than %d dimensions", name, KILN_MAX_RANK);
    if (!get_count(c, &dims[rank]))
      return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': shape entry %d is not a non-negative integer", name, rank);
    rank++;
  }
  if ((s = kx_codec_check_shape(info, rank, dims))) return s;
  int64_t numel;
  if ((s = kx_codec_shape_numel(name, rank, dims, &numel))) return s;

  int64_t size;
  int has_binary = binary_size(e, &size);
  const cJSON *data = cJSON_GetObjectItemCaseSensitive(e, "data");
  if (has_binary < 0)
    return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': binary_data_size is not a non-negative integer", name);
  if (has_binary && data)
    return kiln_error(KILN_INVALID_ARGUMENT, "input '%s' has both \"data\" and binary_data_size", name);
  if (!has_binary && !data)
    return kiln_error(KILN_INVALID_ARGUMENT, "input '%s' has neither \"data\" nor parameters.binary_data_size", name);

  if (has_binary) {
    const unsigned char *p = bin + *offset;
    *offset += size;
    if (dtype == KILN_STRING) {
      if (numel > size / 4)
        return kiln_error(KILN_INVALID_ARGUMENT,
                          "input '%s': binary_data_size is %lld bytes, too few for %lld BYTES elements (4 bytes of "
                          "length each at least)", name, (long long)size, (long long)numel);
    } else if (numel * (int64_t)kiln_dtype_size(dtype) != size) {
      char d[KILN_MAX_RANK * 22 + 4];
      return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': binary_data_size is %lld bytes, but shape %s of %s needs %lld",
                        name, (long long)size, kx_codec_format_dims(d, sizeof d, rank, dims), jt->valuestring,
                        (long long)(numel * (int64_t)kiln_dtype_size(dtype)));
    }
    if ((s = kx_codec_alloc(&inputs[i], name, dtype, rank, dims, total))) return s;
    if (dtype == KILN_STRING) return decode_bytes(name, p, size, &inputs[i]);
    if (size) memcpy(inputs[i].data, p, (size_t)size);
    if (dtype == KILN_BOOL) {
      uint8_t *b = inputs[i].data;
      for (int64_t j = 0; j < numel; j++) b[j] = b[j] != 0;
    }
    return NULL;
  }
  kiln_tensor probe = {0};
  if (numel > (int64_t)json_len) { /* more elements than bytes: "data" cannot hold them; count what it has */
    probe.dtype = dtype;
    probe.rank = rank;
    memcpy(probe.dims, dims, (size_t)rank * sizeof *dims);
    s = kx_codec_fill_flat(data, name, &probe);
    return s ? s : kiln_error(KILN_INTERNAL, "input '%s': element count check failed", name);
  }
  if ((s = kx_codec_alloc(&inputs[i], name, dtype, rank, dims, total))) return s;
  return kx_codec_fill_flat(data, name, &inputs[i]);
}

static kiln_status decode_outputs(const kx_signature *sig, const cJSON *root, kx_v2_request *req) {
  int def = 0;
  const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "parameters");
  if (p && !cJSON_IsObject(p)) return kiln_error(KILN_INVALID_ARGUMENT, "\"parameters\" must be an object");
  const cJSON *bo = p ? cJSON_GetObjectItemCaseSensitive(p, "binary_data_output") : NULL;
  if (bo && !cJSON_IsBool(bo))
    return kiln_error(KILN_INVALID_ARGUMENT, "parameters.binary_data_output must be true or false");
  def = bo && cJSON_IsTrue(bo);
  const cJSON *outs = cJSON_GetObjectItemCaseSensitive(root, "outputs");
  if (outs && !cJSON_IsArray(outs)) return kiln_error(KILN_INVALID_ARGUMENT, "\"outputs\" must be a list");
  int n = 0;
  for (const cJSON *c = outs ? outs->child : NULL; c; c = c->next) n++;
  if (n > sig->n_outputs) n = sig->n_outputs + 1; /* a repeat or an unknown name: reported below */
  if (!outs || !outs->child) n = sig->n_outputs;
  req->outputs = calloc(n > 0 ? (size_t)n : 1, sizeof *req->outputs);
  if (!req->outputs) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  if (!outs || !outs->child) {
    for (int i = 0; i < n; i++) req->outputs[i].index = i, req->outputs[i].binary = def;
    req->n_outputs = n;
    return NULL;
  }
  int k = 0;
  for (const cJSON *c = outs->child; c; c = c->next, k++) {
    const cJSON *jn = cJSON_IsObject(c) ? cJSON_GetObjectItemCaseSensitive(c, "name") : NULL;
    if (!cJSON_IsString(jn))
      return kiln_error(KILN_INVALID_ARGUMENT, "\"outputs\" entry %d has no \"name\" string", k);
    int i = kx_codec_find(sig->outputs, sig->n_outputs, jn->valuestring);
    if (i < 0) return kx_codec_unknown_name(sig->outputs, sig->n_outputs, "output", jn->valuestring);
    for (int j = 0; j < req->n_outputs; j++)
      if (req->outputs[j].index == i)
        return kiln_error(KILN_INVALID_ARGUMENT, "output '%s' is requested twice", jn->valuestring);
    const cJSON *op = cJSON_GetObjectItemCaseSensitive(c, "parameters");
    const cJSON *b = cJSON_IsObject(op) ? cJSON_GetObjectItemCaseSensitive(op, "binary_data") : NULL;
    if (b && !cJSON_IsBool(b))
      return kiln_error(KILN_INVALID_ARGUMENT, "output '%s': parameters.binary_data must be true or false",
                        jn->valuestring);
    req->outputs[req->n_outputs].index = i;
    req->outputs[req->n_outputs].binary = b ? cJSON_IsTrue(b) : def;
    req->n_outputs++;
  }
  return NULL;
}

static kiln_status decode_infer(const kx_signature *sig, const cJSON *root, const char *body, size_t len,
                                size_t json_len, int binary_allowed, kiln_tensor *inputs, kx_v2_request *req) {
  if (!cJSON_IsObject(root)) return kiln_error(KILN_INVALID_ARGUMENT, "the request must be a JSON object");
  const cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "id");
  if (id) {
    if (!cJSON_IsString(id)) return kiln_error(KILN_INVALID_ARGUMENT, "\"id\" must be a string");
    if (!(req->id = strdup(id->valuestring))) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  }
  kiln_status s = decode_outputs(sig, root, req);
  if (s) return s;
  const cJSON *ins = cJSON_GetObjectItemCaseSensitive(root, "inputs");
  if (!cJSON_IsArray(ins)) return kiln_error(KILN_INVALID_ARGUMENT, "the request has no \"inputs\" list");

  /* the binary sizes first, so that no input reads past what follows the JSON */
  int64_t sum = 0, size, bin_len = (int64_t)(len - json_len);
  for (const cJSON *e = ins->child; e; e = e->next) {
    int has = cJSON_IsObject(e) ? binary_size(e, &size) : 0;
    if (has <= 0) continue; /* malformed sizes are reported with their input */
    if (!binary_allowed)
      return kiln_error(KILN_INVALID_ARGUMENT,
                        "an input gives binary_data_size, but the request has no Inference-Header-Content-Length");
    sum += size; /* each size is at most 2^53: no overflow for any realistic count of inputs */
    if (sum > bin_len) break;
  }
  if (sum != bin_len)
    return kiln_error(KILN_INVALID_ARGUMENT,
                      "the inputs' binary_data_size add up to %s%lld bytes, but %lld bytes follow the JSON header",
                      sum > bin_len ? "at least " : "", (long long)sum, (long long)bin_len);

  int *seen = calloc((size_t)sig->n_inputs + 1, sizeof *seen);
  if (!seen) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  int64_t offset = 0, total = 0, k = 0;
  const unsigned char *bin = (const unsigned char *)body + json_len;
  for (const cJSON *e = ins->child; e && !s; e = e->next, k++)
    s = decode_input(sig, e, k, bin, &offset, json_len, seen, inputs, &total);
  if (!s) s = kx_codec_check_all_inputs(sig, seen);
  free(seen);
  return s;
}

kiln_status kx_v2_decode_infer(const kx_signature *sig, const char *body, size_t len, int64_t header_len,
                               kiln_tensor *inputs, kx_v2_request *req) {
  memset(inputs, 0, (size_t)sig->n_inputs * sizeof *inputs);
  memset(req, 0, sizeof *req);
  if (header_len < -1)
    return kiln_error(KILN_INVALID_ARGUMENT, "Inference-Header-Content-Length is negative (%lld)", (long long)header_len);
  if (header_len >= 0 && (uint64_t)header_len > len)
    return kiln_error(KILN_INVALID_ARGUMENT, "Inference-Header-Content-Length is %lld, but the body has only %zu bytes",
                      (long long)header_len, len);
  size_t json_len = header_len < 0 ? len : (size_t)header_len;
  cJSON *root;
  kiln_status s = kx_codec_parse_json(body, json_len, &root);
  if (s) return s;
  s = decode_infer(sig, root, body, len, json_len, header_len >= 0, inputs, req);
  kx_codec_free_json(root);
  if (s) {
    kx_codec_release_all(inputs, sig->n_inputs);
    kx_v2_request_free(req);
  }
  return s;
}

void kx_v2_request_free(kx_v2_request *req) {
  free(req->id);
  free(req->outputs);
  memset(req, 0, sizeof *req);
}

/* Bytes of an output in the binary extension (BYTES: a 4-byte length before each element). */
static kiln_status binary_bytes(const char *name, const kiln_tensor *t, int64_t *out) {
  int64_t n = kiln_tensor_numel(t);
  if (t->dtype != KILN_STRING) {
    *out = n * (int64_t)kiln_dtype_size(t->dtype);
    return NULL;
  }
  int64_t total = 0;
  const char *const *s = t->data;
  for (int64_t i = 0; i < n; i++) {
    size_t l = s[i] ? strlen(s[i]) : 0;
    if (l > UINT32_MAX)
      return kiln_error(KILN_OUT_OF_RANGE, "output '%s': element %lld is longer than 4 GiB", name, (long long)i);
    total += 4 + (int64_t)l;
  }
  *out = total;
  return NULL;
}

static void put_binary(kx_buf *b, const kiln_tensor *t) {
  int64_t n = kiln_tensor_numel(t);
  if (t->dtype != KILN_STRING) {
    if (n) kx_buf_append(b, t->data, (size_t)n * kiln_dtype_size(t->dtype));
    return;
  }
  const char *const *s = t->data;
  for (int64_t i = 0; i < n; i++) {
    size_t l = s[i] ? strlen(s[i]) : 0;
    unsigned char h[4] = {(unsigned char)l, (unsigned char)(l >> 8), (unsigned char)(l >> 16), (unsigned char)(l >> 24)};
    kx_buf_append(b, h, 4);
    if (l) kx_buf_append(b, s[i], l);
  }
}

kiln_status kx_v2_encode_infer(const kx_signature *sig, const char *model, int64_t version, const kx_v2_request *req,
                               const kiln_tensor *const *outputs, kx_buf *out, size_t *json_len) {
  size_t start = out->len;
  int n = req ? req->n_outputs : sig->n_outputs;
  kiln_status s = NULL;
  for (int k = 0; k < n && !s; k++) {
    int i = req ? req->outputs[k].index : k;
    if (i < 0 || i >= sig->n_outputs) s = kiln_error(KILN_INTERNAL, "requested output %d does not exist", i);
    else s = kx_codec_check_output(sig, outputs, i);
  }
  if (s) return kx_codec_finish(out, start, s);
  int any_binary = 0;
  kx_buf_puts(out, "{\"model_name\":");
  kx_buf_json_string(out, model);
  if (version >= 0) kx_buf_printf(out, ",\"model_version\":\"%lld\"", (long long)version);
  if (req && req->id) {
    kx_buf_puts(out, ",\"id\":");
    kx_buf_json_string(out, req->id);
  }
  kx_buf_puts(out, ",\"outputs\":[");
  for (int k = 0; k < n && !s; k++) {
    int i = req ? req->outputs[k].index : k;
    const kiln_tensor *t = outputs[i];
    if (k) kx_buf_putc(out, ',');
    kx_buf_puts(out, "{\"name\":");
    kx_buf_json_string(out, sig->outputs[i].name);
    kx_buf_printf(out, ",\"datatype\":\"%s\",\"shape\":", kx_v2_dtype_name(t->dtype));
    kx_codec_put_dims(out, t->rank, t->dims);
    if (req && req->outputs[k].binary) {
      int64_t size = 0;
      if ((s = binary_bytes(sig->outputs[i].name, t, &size))) break;
      kx_buf_printf(out, ",\"parameters\":{\"binary_data_size\":%lld}}", (long long)size);
      any_binary = 1;
    } else {
      kx_buf_puts(out, ",\"data\":[");
      kx_codec_put_elements(out, t, 0, kiln_tensor_numel(t));
      kx_buf_puts(out, "]}");
    }
  }
  kx_buf_puts(out, "]}");
  size_t header = out->len - start;
  for (int k = 0; any_binary && k < n && !s; k++)
    if (req->outputs[k].binary) put_binary(out, outputs[req->outputs[k].index]);
  s = kx_codec_finish(out, start, s);
  if (!s && json_len) *json_len = header;
  return s;
}

static void put_v2_tensor_info(kx_buf *b, const kiln_value_info *v) {
  kx_buf_puts(b, "{\"name\":");
  kx_buf_json_string(b, v->name);
  const char *dt = v->dtype == KILN_UNDEFINED ? "FP32" : kx_v2_dtype_name(v->dtype);
  kx_buf_puts(b, ",\"datatype\":");
  kx_buf_json_string(b, dt ? dt : "INVALID");
  kx_buf_puts(b, ",\"shape\":");
  if (v->rank < 0) {
    kx_buf_puts(b, "[-1]");
  } else {
    int64_t dims[KILN_MAX_RANK];
    int r = v->rank < KILN_MAX_RANK ? v->rank : KILN_MAX_RANK;
    for (int i = 0; i < r; i++) dims[i] = v->dims[i] < 0 ? -1 : v->dims[i];
    kx_codec_put_dims(b, r, dims);
  }
  kx_buf_putc(b, '}');
}

void kx_v2_encode_metadata(const kx_signature *sig, const char *model, const int64_t *versions, int n_versions,
                           kx_buf *out) {
  kx_buf_puts(out, "{\"name\":");
  kx_buf_json_string(out, model);
  kx_buf_puts(out, ",\"versions\":[");
  for (int i = 0; i < n_versions; i++) kx_buf_printf(out, i ? ",\"%lld\"" : "\"%lld\"", (long long)versions[i]);
  kx_buf_puts(out, "],\"platform\":\"onnxruntime_onnx\",\"inputs\":[");
  for (int i = 0; i < sig->n_inputs; i++) {
    if (i) kx_buf_putc(out, ',');
    put_v2_tensor_info(out, &sig->inputs[i]);
  }
  kx_buf_puts(out, "],\"outputs\":[");
  for (int i = 0; i < sig->n_outputs; i++) {
    if (i) kx_buf_putc(out, ',');
    put_v2_tensor_info(out, &sig->outputs[i]);
  }
  kx_buf_puts(out, "]}");
}
