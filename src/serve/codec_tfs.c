/* TF Serving's REST payloads: predict requests in the row ("instances") and columnar ("inputs")
 * formats decoded into tensors, predictions encoded back, and the metadata document. */
#include "serve/codec.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

/* An object that names inputs, as opposed to TF's {"b64": "..."} encoding of one string value. */
static int is_named(const cJSON *v) {
  return cJSON_IsObject(v) && !(v->child && !v->child->next && v->child->string && !strcmp(v->child->string, "b64"));
}

/* Checks that an object names every input exactly once; `where` prefixes messages. */
static kiln_status check_names(const kx_signature *sig, const cJSON *obj, const char *where, int *seen) {
  memset(seen, 0, (size_t)sig->n_inputs * sizeof *seen);
  int i;
  for (const cJSON *c = obj->child; c; c = c->next) {
    kiln_status s = kx_codec_claim_input(sig, c->string, seen, &i);
    if (s) return kiln_status_prefix(s, "%s", where);
  }
  return kiln_status_prefix(kx_codec_check_all_inputs(sig, seen), "%s", where);
}

/* An empty list says nothing of the dimensions inside it: take them from the signature (free ones
 * as 0), so that [] is an empty batch of a [-1,3] input. `skip` signature dims precede dims. */
static void complete_empty(const kiln_value_info *info, int skip, int *rank, int64_t *dims) {
  if (*rank == 0 || dims[*rank - 1] != 0 || info->rank <= *rank + skip) return;
  for (int d = *rank + skip; d < info->rank; d++) dims[d - skip] = info->dims[d] < 0 ? 0 : info->dims[d];
  *rank = info->rank - skip;
}

/* Allocates t, or, when the shape holds more elements than the body has bytes (so the lists must
 * be ragged somewhere), walks them without writing to find where. */
static kiln_status alloc_checked(kiln_tensor *t, const kiln_value_info *info, kiln_dtype dtype, int rank,
                                 const int64_t *dims, size_t len, int64_t *total, const cJSON *rows, int row_format,
                                 int named) {
  int64_t numel = 1;
  for (int i = 0; i < rank; i++)
    if (__builtin_mul_overflow(numel, dims[i], &numel)) numel = INT64_MAX;
  if (numel > (int64_t)len) {
    kiln_tensor probe = {0};
    probe.dtype = dtype;
    probe.rank = rank;
    memcpy(probe.dims, dims, (size_t)rank * sizeof *dims);
    kiln_status s = NULL;
    if (!row_format) s = kx_codec_fill(rows, info->name, &probe, 0, 0);
    int64_t k = 0;
    for (const cJSON *r = row_format ? rows->child : NULL; r && !s; r = r->next, k++) {
      const cJSON *v = named ? cJSON_GetObjectItemCaseSensitive(r, info->name) : r;
      s = kx_codec_fill(v, info->name, &probe, 1, k);
    }
    if (s) return s;
  }
  return kx_codec_alloc(t, info->name, dtype, rank, dims, total);
}

static kiln_status decode_rows(const kx_signature *sig, const cJSON *rows, size_t len, kiln_tensor *inputs) {
  if (!cJSON_IsArray(rows)) return kiln_error(KILN_INVALID_ARGUMENT, "\"instances\" must be a list");
  int64_t n = 0;
  for (const cJSON *r = rows->child; r; r = r->next) n++;
  if (n == 0) return kiln_error(KILN_INVALID_ARGUMENT, "\"instances\" is empty");
  int named = sig->n_inputs != 1 || is_named(rows->child);
  kiln_status s = NULL;
  if (named) {
    int *seen = calloc((size_t)sig->n_inputs + 1, sizeof *seen);
    if (!seen) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    int64_t k = 0;
    char where[64];
    for (const cJSON *r = rows->child; r && !s; r = r->next, k++) {
      snprintf(where, sizeof where, "instance %lld: ", (long long)k);
      if (!cJSON_IsObject(r))
        s = kiln_error(KILN_INVALID_ARGUMENT, "instance %lld is %s; %s", (long long)k,
                       cJSON_IsArray(r) ? "a list" : "not an object",
                       sig->n_inputs == 1 ? "instance 0 names the inputs, so every instance must"
                                          : "with several inputs each instance must be an object naming them");
      else s = check_names(sig, r, where, seen);
    }
    free(seen);
    if (s) return s;
  }
  int64_t total = 0;
  for (int i = 0; i < sig->n_inputs && !s; i++) {
    const kiln_value_info *info = &sig->inputs[i];
    kiln_dtype dtype;
    if ((s = kx_codec_check_input(info, &dtype))) break;
    if (info->rank == 0) {
      s = kiln_error(KILN_INVALID_ARGUMENT,
                     "input '%s' is a scalar (rank 0), which the row format (\"instances\") cannot carry; use the "
                     "columnar format (\"inputs\")", info->name);
      break;
    }
    const cJSON *first = named ? cJSON_GetObjectItemCaseSensitive(rows->child, info->name) : rows->child;
    int rank;
    int64_t dims[KILN_MAX_RANK];
    dims[0] = n;
    if ((s = kx_codec_infer_shape(first, info->name, KILN_MAX_RANK - 1, &rank, dims + 1))) break;
    complete_empty(info, 1, &rank, dims + 1);
    rank++;
    if ((s = kx_codec_check_shape(info, rank, dims))) break;
    if ((s = alloc_checked(&inputs[i], info, dtype, rank, dims, len, &total, rows, 1, named))) break;
    int64_t k = 0;
    for (const cJSON *r = rows->child; r && !s; r = r->next, k++)
      s = kx_codec_fill(named ? cJSON_GetObjectItemCaseSensitive(r, info->name) : r, info->name, &inputs[i], 1, k);
  }
  return s;
}

static kiln_status decode_value(const kiln_value_info *info, const cJSON *v, size_t len, kiln_tensor *t,
                                int64_t *total) {
  kiln_dtype dtype;
  kiln_status s = kx_codec_check_input(info, &dtype);
  if (s) return s;
  int rank;
  int64_t dims[KILN_MAX_RANK];
  if ((s = kx_codec_infer_shape(v, info->name, KILN_MAX_RANK, &rank, dims))) return s;
  complete_empty(info, 0, &rank, dims);
  if ((s = kx_codec_check_shape(info, rank, dims))) return s;
  if ((s = alloc_checked(t, info, dtype, rank, dims, len, total, v, 0, 0))) return s;
  return kx_codec_fill(v, info->name, t, 0, 0);
}

static kiln_status decode_columns(const kx_signature *sig, const cJSON *v, size_t len, kiln_tensor *inputs) {
  int64_t total = 0;
  if (sig->n_inputs == 1 && !is_named(v)) return decode_value(&sig->inputs[0], v, len, &inputs[0], &total);
  if (!cJSON_IsObject(v))
    return kiln_error(KILN_INVALID_ARGUMENT, "the model has %d inputs, so \"inputs\" must be an object naming them",
                      sig->n_inputs);
  int *seen = calloc((size_t)sig->n_inputs + 1, sizeof *seen);
  if (!seen) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  kiln_status s = check_names(sig, v, "", seen);
  free(seen);
  for (const cJSON *c = v->child; c && !s; c = c->next) {
    int i = kx_codec_find(sig->inputs, sig->n_inputs, c->string);
    s = decode_value(&sig->inputs[i], c, len, &inputs[i], &total);
  }
  return s;
}

kiln_status kx_tfs_decode_predict(const kx_signature *sig, const char *body, size_t len, kiln_tensor *inputs,
                                  int *columnar) {
  memset(inputs, 0, (size_t)sig->n_inputs * sizeof *inputs);
  cJSON *root;
  kiln_status s = kx_codec_parse_json(body, len, &root);
  if (s) return s;
  const cJSON *rows = NULL, *cols = NULL;
  if (!cJSON_IsObject(root)) {
    s = kiln_error(KILN_INVALID_ARGUMENT, "the request must be a JSON object with \"instances\" or \"inputs\"");
    goto done;
  }
  for (const cJSON *c = root->child; c && !s; c = c->next) {
    if (!strcmp(c->string, "signature_name")) {
      if (!cJSON_IsString(c)) s = kiln_error(KILN_INVALID_ARGUMENT, "\"signature_name\" must be a string");
      else if (c->valuestring[0] && strcmp(c->valuestring, "serving_default"))
        s = kiln_error(KILN_NOT_FOUND, "signature '%s' not found (the model has serving_default)", c->valuestring);
    } else if (!strcmp(c->string, "instances")) {
      if (rows) s = kiln_error(KILN_INVALID_ARGUMENT, "\"instances\" is given twice");
      rows = c;
    } else if (!strcmp(c->string, "inputs")) {
      if (cols) s = kiln_error(KILN_INVALID_ARGUMENT, "\"inputs\" is given twice");
      cols = c;
    }
  }
  if (s) goto done;
  if (rows && cols) s = kiln_error(KILN_INVALID_ARGUMENT, "the request has both \"instances\" and \"inputs\"; send one");
  else if (!rows && !cols) s = kiln_error(KILN_INVALID_ARGUMENT, "the request has neither \"instances\" nor \"inputs\"");
  else if (rows) s = decode_rows(sig, rows, len, inputs);
  else s = decode_columns(sig, cols, len, inputs);
  if (!s && columnar) *columnar = cols != NULL;
done:
  kx_codec_free_json(root);
  if (s) kx_codec_release_all(inputs, sig->n_inputs);
  return s;
}

kiln_status kx_tfs_encode_predict(const kx_signature *sig, const kiln_tensor *const *outputs, int columnar,
                                  kx_buf *out) {
  size_t start = out->len;
  kiln_status s = NULL;
  for (int i = 0; i < sig->n_outputs && !s; i++) s = kx_codec_check_output(sig, outputs, i);
  if (s) return kx_codec_finish(out, start, s);
  int64_t batch = 0;
  if (!columnar) {
    for (int i = 0; i < sig->n_outputs && !s; i++) {
      const kiln_tensor *t = outputs[i];
      if (t->rank == 0)
        s = kiln_error(KILN_INVALID_ARGUMENT,
                       "row format needs a batch dimension, but output '%s' is a scalar (rank 0); use the columnar "
                       "format (\"inputs\" in the request)", sig->outputs[i].name);
      else if (i > 0 && t->dims[0] != batch)
        s = kiln_error(KILN_INVALID_ARGUMENT,
                       "row format needs every output to have the same batch size (dimension 0), but output '%s' has "
                       "%lld and output '%s' has %lld; use the columnar format (\"inputs\" in the request)",
                       sig->outputs[0].name, (long long)batch, sig->outputs[i].name, (long long)t->dims[0]);
      else batch = t->dims[0];
    }
    if (s) return kx_codec_finish(out, start, s);
  }
  int single = sig->n_outputs == 1;
  if (columnar) {
    kx_buf_puts(out, "{\"outputs\":");
    if (single) {
      kx_codec_put_nested(out, outputs[0], 0, 0);
    } else {
      kx_buf_putc(out, '{');
      for (int i = 0; i < sig->n_outputs; i++) {
        if (i) kx_buf_putc(out, ',');
        kx_buf_json_string(out, sig->outputs[i].name);
        kx_buf_putc(out, ':');
        kx_codec_put_nested(out, outputs[i], 0, 0);
      }
      kx_buf_putc(out, '}');
    }
    kx_buf_putc(out, '}');
    return kx_codec_finish(out, start, NULL);
  }
  kx_buf_puts(out, "{\"predictions\":[");
  for (int64_t k = 0; k < batch && !out->failed; k++) {
    if (k) kx_buf_putc(out, ',');
    if (!single) kx_buf_putc(out, '{');
    for (int i = 0; i < sig->n_outputs; i++) {
      const kiln_tensor *t = outputs[i];
      int64_t inner = 1;
      for (int d = 1; d < t->rank; d++) inner *= t->dims[d];
      if (!single) {
        if (i) kx_buf_putc(out, ',');
        kx_buf_json_string(out, sig->outputs[i].name);
        kx_buf_putc(out, ':');
      }
      kx_codec_put_nested(out, t, 1, k * inner);
    }
    if (!single) kx_buf_putc(out, '}');
  }
  kx_buf_puts(out, "]}");
  return kx_codec_finish(out, start, NULL);
}

static void put_tf_tensor_info(kx_buf *b, const kiln_value_info *v) {
  kx_buf_json_string(b, v->name);
  kx_buf_puts(b, ":{\"dtype\":");
  const char *dt = v->dtype == KILN_UNDEFINED ? "DT_FLOAT" : kx_tf_dtype_name(v->dtype);
  kx_buf_json_string(b, dt ? dt : "DT_INVALID");
  kx_buf_puts(b, ",\"tensor_shape\":{\"dim\":[");
  for (int i = 0; i < v->rank && i < KILN_MAX_RANK; i++) {
    if (i) kx_buf_putc(b, ',');
    kx_buf_printf(b, "{\"size\":\"%lld\",\"name\":", (long long)v->dims[i]);
    kx_buf_json_string(b, v->dim_names[i] ? v->dim_names[i] : "");
    kx_buf_putc(b, '}');
  }
  kx_buf_printf(b, "],\"unknown_rank\":%s},\"name\":", v->rank < 0 ? "true" : "false");
  kx_buf_json_string(b, v->name);
  kx_buf_putc(b, '}');
}

void kx_tfs_encode_metadata(const kx_signature *sig, const char *model, int64_t version, kx_buf *out) {
  kx_buf_puts(out, "{\"model_spec\":{\"name\":");
  kx_buf_json_string(out, model);
  kx_buf_puts(out, ",\"signature_name\":\"\",\"version\":");
  if (version >= 0) kx_buf_printf(out, "\"%lld\"", (long long)version);
  else kx_buf_puts(out, "\"\"");
  kx_buf_puts(out, "},\"metadata\":{\"signature_def\":{\"signature_def\":{\"serving_default\":{\"inputs\":{");
  for (int i = 0; i < sig->n_inputs; i++) {
    if (i) kx_buf_putc(out, ',');
    put_tf_tensor_info(out, &sig->inputs[i]);
  }
  kx_buf_puts(out, "},\"outputs\":{");
  for (int i = 0; i < sig->n_outputs; i++) {
    if (i) kx_buf_putc(out, ',');
    put_tf_tensor_info(out, &sig->outputs[i]);
  }
  kx_buf_puts(out, "},\"method_name\":\"tensorflow/serving/predict\"}}}}}");
}
