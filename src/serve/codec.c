/* What both REST codecs share: the signature, the dtype names of each API, JSON values walked into
 * tensor buffers (checked against the signature and the dtype's range) and tensors written back as
 * JSON. Kept apart from codec_tfs.c and codec_v2.c so that the two wire formats convert values
 * identically. */
#include "serve/codec.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ signature */

kiln_status kx_signature_from_model(const kiln_model *m, kx_signature *out) {
  memset(out, 0, sizeof *out);
  int ni = kiln_model_input_count(m), no = kiln_model_output_count(m);
  kiln_value_info *in = calloc(ni > 0 ? (size_t)ni : 1, sizeof *in);
  kiln_value_info *outs = calloc(no > 0 ? (size_t)no : 1, sizeof *outs);
  if (!in || !outs) {
    free(in);
    free(outs);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory copying a model's signature");
  }
  for (int i = 0; i < ni; i++) in[i] = *kiln_model_input(m, i);
  for (int i = 0; i < no; i++) outs[i] = *kiln_model_output(m, i);
  out->n_inputs = ni;
  out->inputs = in;
  out->n_outputs = no;
  out->outputs = outs;
  return NULL;
}

static int value_info_equal(const kiln_value_info *a, const kiln_value_info *b) {
  if (strcmp(a->name, b->name) != 0 || a->kind != b->kind || a->dtype != b->dtype || a->rank != b->rank) return 0;
  for (int d = 0; d < a->rank; d++)
    if (a->dims[d] != b->dims[d]) return 0;
  return 1;
}

int kx_signature_equal(const kx_signature *a, const kx_signature *b) {
  if (a->n_inputs != b->n_inputs || a->n_outputs != b->n_outputs) return 0;
  for (int i = 0; i < a->n_inputs; i++)
    if (!value_info_equal(&a->inputs[i], &b->inputs[i])) return 0;
  for (int i = 0; i < a->n_outputs; i++)
    if (!value_info_equal(&a->outputs[i], &b->outputs[i])) return 0;
  return 1;
}

void kx_signature_free(kx_signature *s) {
  free(s->inputs);
  free(s->outputs);
  memset(s, 0, sizeof *s);
}

/* ------------------------------------------------------------------ dtype names */

const char *kx_tf_dtype_name(kiln_dtype t) {
  switch (t) {
  case KILN_FLOAT: return "DT_FLOAT";
  case KILN_DOUBLE: return "DT_DOUBLE";
  case KILN_INT32: return "DT_INT32";
  case KILN_UINT8: return "DT_UINT8";
  case KILN_INT16: return "DT_INT16";
  case KILN_INT8: return "DT_INT8";
  case KILN_STRING: return "DT_STRING";
  case KILN_INT64: return "DT_INT64";
  case KILN_BOOL: return "DT_BOOL";
  case KILN_FLOAT16: return "DT_HALF";
  case KILN_BFLOAT16: return "DT_BFLOAT16";
  case KILN_UINT16: return "DT_UINT16";
  case KILN_UINT32: return "DT_UINT32";
  case KILN_UINT64: return "DT_UINT64";
  default: return NULL;
  }
}

static const struct {
  kiln_dtype dtype;
  const char *name;
} v2_names[] = {
    {KILN_BOOL, "BOOL"},     {KILN_UINT8, "UINT8"},   {KILN_UINT16, "UINT16"}, {KILN_UINT32, "UINT32"},
    {KILN_UINT64, "UINT64"}, {KILN_INT8, "INT8"},     {KILN_INT16, "INT16"},   {KILN_INT32, "INT32"},
    {KILN_INT64, "INT64"},   {KILN_FLOAT16, "FP16"},  {KILN_FLOAT, "FP32"},    {KILN_DOUBLE, "FP64"},
    {KILN_STRING, "BYTES"},  {KILN_BFLOAT16, "BF16"},
};

const char *kx_v2_dtype_name(kiln_dtype t) {
  for (size_t i = 0; i < sizeof v2_names / sizeof v2_names[0]; i++)
    if (v2_names[i].dtype == t) return v2_names[i].name;
  return NULL;
}

kiln_dtype kx_v2_dtype_from_name(const char *name) {
  if (!name) return KILN_UNDEFINED;
  for (size_t i = 0; i < sizeof v2_names / sizeof v2_names[0]; i++)
    if (!strcmp(v2_names[i].name, name)) return v2_names[i].dtype;
  return KILN_UNDEFINED;
}

/* ------------------------------------------------------------------ helpers for messages */

char *kx_codec_format_dims(char *s, size_t size, int rank, const int64_t *dims) {
  size_t used = (size_t)snprintf(s, size, "[");
  for (int i = 0; i < rank && used < size; i++)
    used += (size_t)snprintf(s + used, size - used, i ? ",%lld" : "%lld", (long long)dims[i]);
  if (used < size) snprintf(s + used, size - used, "]");
  return s;
}

/* The shortest %g text that reads back to v (numbers quoted in messages). */
static char *format_number(char *s, size_t size, double v) {
  snprintf(s, size, "%.15g", v);
  if (strtod(s, NULL) != v) snprintf(s, size, "%.17g", v);
  return s;
}

static const char *json_kind(const cJSON *v) {
  if (cJSON_IsString(v)) return "a string";
  if (cJSON_IsBool(v)) return "a boolean";
  if (cJSON_IsNull(v)) return "null";
  if (cJSON_IsObject(v)) return "an object";
  if (cJSON_IsArray(v)) return "a list";
  if (cJSON_IsNumber(v)) return "a number";
  return "an invalid value";
}

/* What an element of the dtype must be, for "expected ..." in messages. */
static const char *expected_kind(kiln_dtype t) {
  switch (t) {
  case KILN_STRING: return "a string";
  case KILN_BOOL: return "a boolean";
  default: return "a number";
  }
}

int kx_codec_find(const kiln_value_info *infos, int n, const char *name) {
  for (int i = 0; i < n; i++)
    if (infos[i].name && !strcmp(infos[i].name, name)) return i;
  return -1;
}

kiln_status kx_codec_claim_input(const kx_signature *sig, const char *name, int *seen, int *index) {
  int i = kx_codec_find(sig->inputs, sig->n_inputs, name);
  if (i < 0) return kx_codec_unknown_name(sig->inputs, sig->n_inputs, "input", name);
  if (seen[i]++) return kiln_error(KILN_INVALID_ARGUMENT, "input '%s' is given twice", name);
  *index = i;
  return NULL;
}

kiln_status kx_codec_check_all_inputs(const kx_signature *sig, const int *seen) {
  for (int i = 0; i < sig->n_inputs; i++)
    if (!seen[i]) return kiln_error(KILN_INVALID_ARGUMENT, "missing input '%s'", sig->inputs[i].name);
  return NULL;
}

kiln_status kx_codec_unknown_name(const kiln_value_info *infos, int n, const char *what, const char *name) {
  kx_buf b = {0};
  for (int i = 0; i < n; i++) {
    if (i) kx_buf_puts(&b, ", ");
    kx_buf_puts(&b, infos[i].name ? infos[i].name : "");
  }
  kiln_status s = kiln_error(KILN_INVALID_ARGUMENT, "unknown %s '%s' (the model's %ss: %s)", what, name, what,
                             b.failed ? "?" : b.data ? b.data : "none");
  kx_buf_free(&b);
  return s;
}

/* ------------------------------------------------------------------ decoding */

kiln_status kx_codec_check_input(const kiln_value_info *info, kiln_dtype *dtype) {
  if (info->kind != KILN_VALUE_TENSOR)
    return kiln_error(KILN_UNIMPLEMENTED, "input '%s' is not a tensor; the REST APIs carry only tensors", info->name);
  kiln_dtype t = info->dtype == KILN_UNDEFINED ? KILN_FLOAT : info->dtype;
  if (!kx_v2_dtype_name(t))
    return kiln_error(KILN_UNIMPLEMENTED, "input '%s' has element type %s, which the serving APIs cannot carry",
                      info->name, kiln_dtype_name(t));
  if (info->rank > KILN_MAX_RANK)
    return kiln_error(KILN_UNIMPLEMENTED, "input '%s' has rank %d, more than kiln's %d", info->name, info->rank,
                      KILN_MAX_RANK);
  *dtype = t;
  return NULL;
}

kiln_status kx_codec_check_shape(const kiln_value_info *info, int rank, const int64_t *dims) {
  if (info->rank < 0) return NULL;
  int ok = rank == info->rank;
  for (int i = 0; ok && i < rank; i++)
    if (info->dims[i] >= 0 && info->dims[i] != dims[i]) ok = 0;
  if (ok) return NULL;
  char want[KILN_MAX_RANK * 22 + 4], got[KILN_MAX_RANK * 22 + 4];
  return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': expected shape %s, got %s", info->name,
                    kx_codec_format_dims(want, sizeof want, info->rank, info->dims),
                    kx_codec_format_dims(got, sizeof got, rank, dims));
}

kiln_status kx_codec_infer_shape(const cJSON *v, const char *input, int max_rank, int *rank, int64_t *dims) {
  int r = 0;
  while (cJSON_IsArray(v)) {
    if (r == max_rank)
      return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': lists nested more than %d deep", input, max_rank);
    int64_t n = 0;
    for (const cJSON *c = v->child; c; c = c->next) n++;
    dims[r++] = n;
    v = v->child;
  }
  *rank = r;
  return NULL;
}

kiln_status kx_codec_shape_numel(const char *input, int rank, const int64_t *dims, int64_t *numel) {
  int64_t n = 1;
  for (int i = 0; i < rank; i++) {
    if (dims[i] < 0) return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': dimension %d is negative", input, i);
    if (dims[i] > KX_MAX_REQUEST_ELEMENTS)
      return kiln_error(KILN_RESOURCE_EXHAUSTED, "input '%s': dimension %d (%lld) is larger than the limit of %lld "
                        "elements per request", input, i, (long long)dims[i], (long long)KX_MAX_REQUEST_ELEMENTS);
    if (__builtin_mul_overflow(n, dims[i], &n) || n > KX_MAX_REQUEST_ELEMENTS)
      return kiln_error(KILN_RESOURCE_EXHAUSTED, "input '%s': more than %lld elements (the limit per request)", input,
                        (long long)KX_MAX_REQUEST_ELEMENTS);
  }
  *numel = n;
  return NULL;
}

kiln_status kx_codec_alloc(kiln_tensor *t, const char *input, kiln_dtype dtype, int rank, const int64_t *dims,
                           int64_t *total) {
  int64_t n;
  kiln_status s = kx_codec_shape_numel(input, rank, dims, &n);
  if (s) return s;
  if (n > KX_MAX_REQUEST_ELEMENTS - *total)
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "the request's inputs hold more than %lld elements (the limit); "
                      "input '%s' alone has %lld", (long long)KX_MAX_REQUEST_ELEMENTS, input, (long long)n);
  s = kiln_tensor_alloc(t, dtype, rank, dims);
  if (s) return kiln_status_prefix(s, "input '%s': ", input);
  *total += n;
  return NULL;
}

/* The integer range an element of an integer dtype may take. 64-bit types stop at 2^53: cJSON
 * reads numbers as doubles, and a larger integer may already have been rounded. */
static int integer_range(kiln_dtype t, double *lo, double *hi) {
  const double p53 = 9007199254740992.0;
  switch (t) {
  case KILN_INT8: *lo = -128, *hi = 127; return 1;
  case KILN_UINT8: *lo = 0, *hi = 255; return 1;
  case KILN_INT16: *lo = -32768, *hi = 32767; return 1;
  case KILN_UINT16: *lo = 0, *hi = 65535; return 1;
  case KILN_INT32: *lo = -2147483648.0, *hi = 2147483647.0; return 1;
  case KILN_UINT32: *lo = 0, *hi = 4294967295.0; return 1;
  case KILN_INT64: *lo = -p53, *hi = p53; return 1;
  case KILN_UINT64: *lo = 0, *hi = p53; return 1;
  default: return 0;
  }
}

static kiln_status element_type_error(const cJSON *v, const char *input, kiln_dtype t, int64_t i) {
  if (cJSON_IsObject(v) && cJSON_GetObjectItemCaseSensitive(v, "b64"))
    return kiln_error(KILN_UNIMPLEMENTED,
                      "input '%s': element %lld is a {\"b64\": ...} object; base64-encoded values are not "
                      "supported, send the text as a JSON string",
                      input, (long long)i);
  return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': element %lld is %s, expected %s (%s)", input, (long long)i,
                    json_kind(v), expected_kind(t), kiln_dtype_name(t));
}

/* Converts one JSON leaf into element i of data (dtype t); data NULL only checks it. */
static kiln_status put_element(const cJSON *v, const char *input, kiln_dtype t, void *data, int64_t i) {
  char num[40];
  if (t == KILN_STRING) {
    if (!cJSON_IsString(v)) return element_type_error(v, input, t, i);
    if (data) {
      char *s = strdup(v->valuestring);
      if (!s) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory copying input '%s'", input);
      ((char **)data)[i] = s;
    }
    return NULL;
  }
  if (t == KILN_BOOL) {
    uint8_t b;
    if (cJSON_IsBool(v)) b = cJSON_IsTrue(v) ? 1 : 0;
    else if (cJSON_IsNumber(v) && (v->valuedouble == 0 || v->valuedouble == 1)) b = v->valuedouble == 1;
    else if (cJSON_IsNumber(v))
      return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': element %lld is %s, expected a boolean or 0/1 (bool)",
                        input, (long long)i, format_number(num, sizeof num, v->valuedouble));
    else return element_type_error(v, input, t, i);
    if (data) ((uint8_t *)data)[i] = b;
    return NULL;
  }
  if (!cJSON_IsNumber(v)) return element_type_error(v, input, t, i);
  double d = v->valuedouble;
  if (!isfinite(d))
    return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': element %lld is out of range for %s", input, (long long)i,
                      kiln_dtype_name(t));
  double lo, hi;
  if (integer_range(t, &lo, &hi)) {
    if (d != floor(d))
      return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': element %lld is %s, expected an integer (%s)", input,
                        (long long)i, format_number(num, sizeof num, d), kiln_dtype_name(t));
    if (d < lo || d > hi)
      return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': element %lld is %s, out of range for %s (%.0f..%.0f%s)",
                        input, (long long)i, format_number(num, sizeof num, d), kiln_dtype_name(t), lo, hi,
                        t == KILN_INT64 || t == KILN_UINT64 ? ": JSON numbers carry integers exactly up to 2^53" : "");
    if (!data) return NULL;
    switch (t) {
    case KILN_INT8: ((int8_t *)data)[i] = (int8_t)d; break;
    case KILN_UINT8: ((uint8_t *)data)[i] = (uint8_t)d; break;
    case KILN_INT16: ((int16_t *)data)[i] = (int16_t)d; break;
    case KILN_UINT16: ((uint16_t *)data)[i] = (uint16_t)d; break;
    case KILN_INT32: ((int32_t *)data)[i] = (int32_t)d; break;
    case KILN_UINT32: ((uint32_t *)data)[i] = (uint32_t)d; break;
    case KILN_INT64: ((int64_t *)data)[i] = (int64_t)d; break;
    default: ((uint64_t *)data)[i] = (uint64_t)d; break;
    }
    return NULL;
  }
  if (t == KILN_DOUBLE) {
    if (data) ((double *)data)[i] = d;
    return NULL;
  }
  float f = (float)d;
  uint16_t h = 0;
  int inf = isinf(f);
  if (t == KILN_FLOAT16) h = kiln_float_to_half(f), inf = inf || isinf(kiln_half_to_float(h));
  else if (t == KILN_BFLOAT16) h = kiln_float_to_bfloat16(f), inf = inf || isinf(kiln_bfloat16_to_float(h));
  if (inf)
    return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': element %lld is %s, out of range for %s", input,
                      (long long)i, format_number(num, sizeof num, d), kiln_dtype_name(t));
  if (data) {
    if (t == KILN_FLOAT) ((float *)data)[i] = f;
    else ((uint16_t *)data)[i] = h;
  }
  return NULL;
}

/* Walks a list at dimension `dim` of t's shape whose flat position among the lists at that depth
 * is `row`; elements go to t->data (NULL: check only). */
static kiln_status fill_nested(const cJSON *v, const char *input, const kiln_tensor *t, int dim, int64_t row,
                               int64_t first) {
  if (!cJSON_IsArray(v)) {
    if (dim == 0) return put_element(v, input, t->dtype, t->data, first);
    return kiln_error(KILN_INVALID_ARGUMENT,
                      "input '%s': ragged list at dimension %d (row %lld is %s, row 0 is a list of %lld elements)",
                      input, dim, (long long)row, json_kind(v), (long long)t->dims[dim]);
  }
  int64_t want = t->dims[dim], n = 0;
  const cJSON *c = v->child;
  if (dim == t->rank - 1) {
    for (; c && n < want; c = c->next, n++) {
      if (cJSON_IsArray(c))
        return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': element %lld is a list, expected %s (%s)", input,
                          (long long)(first + n), expected_kind(t->dtype), kiln_dtype_name(t->dtype));
      kiln_status s = put_element(c, input, t->dtype, t->data, first + n);
      if (s) return s;
    }
  } else {
    int64_t inner = 1;
    for (int d = dim + 1; d < t->rank; d++) inner *= t->dims[d];
    for (; c && n < want; c = c->next, n++) {
      kiln_status s = fill_nested(c, input, t, dim + 1, row * want + n, first + n * inner);
      if (s) return s;
    }
  }
  for (; c; c = c->next) n++;
  if (n != want)
    return kiln_error(KILN_INVALID_ARGUMENT,
                      "input '%s': ragged list at dimension %d (row %lld has %lld elements, row 0 has %lld)", input,
                      dim, (long long)row, (long long)n, (long long)want);
  return NULL;
}

kiln_status kx_codec_fill(const cJSON *v, const char *input, const kiln_tensor *t, int dim, int64_t row) {
  int64_t inner = 1;
  for (int d = dim; d < t->rank; d++) inner *= t->dims[d];
  if (dim > 0 && t->rank > dim && cJSON_IsArray(v)) return fill_nested(v, input, t, dim, row, row * inner);
  if (dim == t->rank) { /* a row of a rank-1 tensor: one element */
    if (cJSON_IsArray(v))
      return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': element %lld is a list, expected %s (%s)", input,
                        (long long)row, expected_kind(t->dtype), kiln_dtype_name(t->dtype));
    return put_element(v, input, t->dtype, t->data, row);
  }
  if (dim == 0) return fill_nested(v, input, t, 0, 0, 0);
  return kiln_error(KILN_INVALID_ARGUMENT,
                    "input '%s': ragged list at dimension %d (row %lld is %s, row 0 is a list of %lld elements)",
                    input, dim, (long long)row, json_kind(v), (long long)t->dims[dim]);
}

/* Flattens nested lists (at most `depth` more levels) into t's elements from *n on. */
static kiln_status fill_flat(const cJSON *v, const char *input, const kiln_tensor *t, int64_t numel, int depth,
                             int64_t *n) {
  for (const cJSON *c = v->child; c; c = c->next) {
    if (cJSON_IsArray(c)) {
      if (depth == 0)
        return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': data lists nested more than %d deep", input,
                          KILN_MAX_RANK);
      kiln_status s = fill_flat(c, input, t, numel, depth - 1, n);
      if (s) return s;
      continue;
    }
    kiln_status s = put_element(c, input, t->dtype, *n < numel ? t->data : NULL, *n);
    if (s) return s;
    ++*n;
  }
  return NULL;
}

kiln_status kx_codec_fill_flat(const cJSON *data, const char *input, const kiln_tensor *t) {
  int64_t numel = kiln_tensor_numel(t), n = 0;
  kiln_status s;
  if (cJSON_IsArray(data)) s = fill_flat(data, input, t, numel, KILN_MAX_RANK - 1, &n);
  else s = put_element(data, input, t->dtype, numel > 0 ? t->data : NULL, 0), n = 1;
  if (s) return s;
  if (n != numel) {
    char dims[KILN_MAX_RANK * 22 + 4];
    return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': shape %s needs %lld elements, \"data\" has %lld", input,
                      kx_codec_format_dims(dims, sizeof dims, t->rank, t->dims), (long long)numel, (long long)n);
  }
  return NULL;
}

void kx_codec_release_all(kiln_tensor *t, int n) {
  for (int i = 0; i < n; i++) kiln_tensor_release(&t[i]);
}

/* ------------------------------------------------------------------ encoding */

static char *put_u64(char *p, uint64_t v) {
  char tmp[24];
  int n = 0;
  do tmp[n++] = (char)('0' + v % 10), v /= 10;
  while (v);
  while (n) *p++ = tmp[--n];
  return p;
}

static void put_int(kx_buf *b, int64_t v) {
  char *p = kx_buf_reserve(b, 24);
  if (!p) return;
  char *e = p;
  if (v < 0) *e++ = '-', e = put_u64(e, (uint64_t)0 - (uint64_t)v);
  else e = put_u64(e, (uint64_t)v);
  b->len += (size_t)(e - p);
  b->data[b->len] = '\0';
}

static void put_uint(kx_buf *b, uint64_t v) {
  char *p = kx_buf_reserve(b, 24);
  if (!p) return;
  char *e = put_u64(p, v);
  b->len += (size_t)(e - p);
  b->data[b->len] = '\0';
}

void kx_codec_put_elements(kx_buf *b, const kiln_tensor *t, int64_t begin, int64_t n) {
  const void *d = t->data;
#define KX_LOOP(stmt)                                       \
  for (int64_t i = begin; i < begin + n; i++) {             \
    if (i > begin) kx_buf_putc(b, ',');                     \
    stmt;                                                   \
  }
  switch (t->dtype) {
  case KILN_FLOAT: KX_LOOP(kx_buf_json_float(b, ((const float *)d)[i])); break;
  case KILN_DOUBLE: KX_LOOP(kx_buf_json_double(b, ((const double *)d)[i])); break;
  case KILN_FLOAT16: KX_LOOP(kx_buf_json_float(b, kiln_half_to_float(((const uint16_t *)d)[i]))); break;
  case KILN_BFLOAT16: KX_LOOP(kx_buf_json_float(b, kiln_bfloat16_to_float(((const uint16_t *)d)[i]))); break;
  case KILN_INT8: KX_LOOP(put_int(b, ((const int8_t *)d)[i])); break;
  case KILN_UINT8: KX_LOOP(put_uint(b, ((const uint8_t *)d)[i])); break;
  case KILN_INT16: KX_LOOP(put_int(b, ((const int16_t *)d)[i])); break;
  case KILN_UINT16: KX_LOOP(put_uint(b, ((const uint16_t *)d)[i])); break;
  case KILN_INT32: KX_LOOP(put_int(b, ((const int32_t *)d)[i])); break;
  case KILN_UINT32: KX_LOOP(put_uint(b, ((const uint32_t *)d)[i])); break;
  case KILN_INT64: KX_LOOP(put_int(b, ((const int64_t *)d)[i])); break;
  case KILN_UINT64: KX_LOOP(put_uint(b, ((const uint64_t *)d)[i])); break;
  case KILN_BOOL: KX_LOOP(kx_buf_puts(b, ((const uint8_t *)d)[i] ? "true" : "false")); break;
  case KILN_STRING: {
    const char *const *s = d;
    KX_LOOP(kx_buf_json_string(b, s[i] ? s[i] : ""));
    break;
  }
  default: b->failed = 1; break; /* callers check dtypes first */
  }
#undef KX_LOOP
}

void kx_codec_put_nested(kx_buf *b, const kiln_tensor *t, int dim, int64_t begin) {
  if (dim == t->rank) {
    kx_codec_put_elements(b, t, begin, 1);
    return;
  }
  kx_buf_putc(b, '[');
  if (dim == t->rank - 1) {
    kx_codec_put_elements(b, t, begin, t->dims[dim]);
  } else {
    int64_t inner = 1;
    for (int d = dim + 1; d < t->rank; d++) inner *= t->dims[d];
    for (int64_t i = 0; i < t->dims[dim]; i++) {
      if (i) kx_buf_putc(b, ',');
      kx_codec_put_nested(b, t, dim + 1, begin + i * inner);
    }
  }
  kx_buf_putc(b, ']');
}

void kx_codec_put_dims(kx_buf *b, int rank, const int64_t *dims) {
  kx_buf_putc(b, '[');
  for (int i = 0; i < rank; i++) {
    if (i) kx_buf_putc(b, ',');
    put_int(b, dims[i]);
  }
  kx_buf_putc(b, ']');
}

kiln_status kx_codec_check_output(const kx_signature *sig, const kiln_tensor *const *outputs, int i) {
  const char *name = sig->outputs[i].name;
  const kiln_tensor *t = outputs ? outputs[i] : NULL;
  if (!t) return kiln_error(KILN_INTERNAL, "output '%s' is missing", name);
  if (!kx_v2_dtype_name(t->dtype))
    return kiln_error(KILN_UNIMPLEMENTED, "output '%s' has element type %s, which the serving APIs cannot carry", name,
                      kiln_dtype_name(t->dtype));
  if (t->rank < 0 || t->rank > KILN_MAX_RANK)
    return kiln_error(KILN_INTERNAL, "output '%s' has rank %d", name, t->rank);
  if (!t->data && kiln_tensor_numel(t) > 0) return kiln_error(KILN_INTERNAL, "output '%s' has no data", name);
  return NULL;
}

kiln_status kx_codec_finish(kx_buf *out, size_t start, kiln_status s) {
  if (!s && out->failed) s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory encoding a response");
  if (s && !out->failed && out->data) {
    out->len = start;
    out->data[start] = '\0';
  }
  return s;
}
