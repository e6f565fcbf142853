/* Helpers shared by the op families (see util.h). */
#include "ops/util.h"

#include <math.h>
#include <string.h>

kiln_status kx_require(const kx_ctx *c, int i, const kiln_tensor **out) {
  *out = kx_input(c, i);
  if (!*out) return kiln_error(KILN_INVALID_ARGUMENT, "input %d is missing (or not a tensor)", i);
  return NULL;
}

kiln_status kx_check_dtype(const kiln_tensor *t, int i, unsigned mask) {
  if (!t || ((unsigned)t->dtype < 32 && (mask & KX_BIT(t->dtype)))) return NULL;
  return kiln_error(KILN_UNIMPLEMENTED, "input %d has dtype %s, which this operator does not support", i,
                    kiln_dtype_name(t->dtype));
}

kiln_status kx_axis(int64_t axis, int rank, int inclusive, int *out) {
  int64_t r = rank + (inclusive ? 1 : 0);
  if (axis < -r || axis >= r)
    return kiln_error(KILN_INVALID_ARGUMENT, "axis %lld is out of range for rank %d", (long long)axis, rank);
  *out = (int)(axis < 0 ? axis + r : axis);
  return NULL;
}

kiln_status kx_broadcast(int n, const kiln_tensor *const *ts, int *rank, int64_t *dims) {
  int r = 0;
  for (int i = 0; i < n; i++)
    if (ts[i]->rank > r) r = ts[i]->rank;
  for (int d = 0; d < r; d++) dims[d] = 1;
  for (int i = 0; i < n; i++) {
    int off = r - ts[i]->rank;
    for (int d = 0; d < ts[i]->rank; d++) {
      int64_t x = ts[i]->dims[d], *y = &dims[off + d];
      if (x == *y || x == 1) continue;
      if (*y == 1) {
        *y = x;
        continue;
      }
      char a[96], b[96];
      return kiln_error(KILN_INVALID_ARGUMENT, "shapes %s and %s cannot be broadcast together",
                        kiln_tensor_describe(ts[0], a, sizeof a), kiln_tensor_describe(ts[i], b, sizeof b));
    }
  }
  *rank = r;
  return NULL;
}

void kx_broadcast_strides(const kiln_tensor *t, int rank, const int64_t *dims, int64_t *strides) {
  int off = rank - t->rank;
  int64_t s = 1;
  for (int d = rank - 1; d >= 0; d--) {
    int64_t own = d >= off ? t->dims[d - off] : 1;
    strides[d] = own == 1 && dims[d] != 1 ? 0 : s;
    if (own == 1 && dims[d] != 1) continue;
    s *= own;
  }
}

kiln_status kx_read_ints(const kiln_tensor *t, const char *what, int64_t *out, int max, int *count) {
  if (t->dtype != KILN_INT64 && t->dtype != KILN_INT32)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s must be int64 or int32, got %s", what, kiln_dtype_name(t->dtype));
  if (t->rank > 1) return kiln_error(KILN_INVALID_ARGUMENT, "%s must be a scalar or 1-D, got rank %d", what, t->rank);
  int64_t n = kiln_tensor_numel(t);
  if (n > max) return kiln_error(KILN_INVALID_ARGUMENT, "%s has %lld values, at most %d allowed", what, (long long)n, max);
  for (int64_t i = 0; i < n; i++)
    out[i] = t->dtype == KILN_INT64 ? ((const int64_t *)t->data)[i] : ((const int32_t *)t->data)[i];
  *count = (int)n;
  return NULL;
}

kiln_status kx_read_scalar(const kiln_tensor *t, const char *what, double *out) {
  if (kiln_tensor_numel(t) != 1)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s must hold exactly one value, it holds %lld", what, (long long)kiln_tensor_numel(t));
  if (t->dtype == KILN_STRING) return kiln_error(KILN_INVALID_ARGUMENT, "%s must be numeric", what);
  *out = kiln_tensor_get_f64(t, 0);
  return NULL;
}

void kx_set_f64(kiln_tensor *t, int64_t i, double v) {
  void *p = t->data;
  switch (t->dtype) {
  case KILN_FLOAT: ((float *)p)[i] = (float)v; break;
  case KILN_DOUBLE: ((double *)p)[i] = v; break;
  case KILN_FLOAT16: ((uint16_t *)p)[i] = kiln_float_to_half((float)v); break;
  case KILN_BFLOAT16: ((uint16_t *)p)[i] = kiln_float_to_bfloat16((float)v); break;
  case KILN_INT8: ((int8_t *)p)[i] = (int8_t)v; break;
  case KILN_UINT8: ((uint8_t *)p)[i] = (uint8_t)v; break;
  case KILN_BOOL: ((uint8_t *)p)[i] = v != 0; break;
  case KILN_INT16: ((int16_t *)p)[i] = (int16_t)v; break;
  case KILN_UINT16: ((uint16_t *)p)[i] = (uint16_t)v; break;
  case KILN_INT32: ((int32_t *)p)[i] = (int32_t)v; break;
  case KILN_UINT32: ((uint32_t *)p)[i] = (uint32_t)v; break;
  case KILN_INT64: ((int64_t *)p)[i] = (int64_t)v; break;
  case KILN_UINT64: ((uint64_t *)p)[i] = (uint64_t)v; break;
  default: break;
  }
}

void kx_to_float(kiln_dtype t, const void *src, float *dst, int64_t n) {
  switch (t) {
  case KILN_FLOAT16:
    for (int64_t i = 0; i < n; i++) dst[i] = kiln_half_to_float(((const uint16_t *)src)[i]);
    break;
  case KILN_BFLOAT16:
    for (int64_t i = 0; i < n; i++) dst[i] = kiln_bfloat16_to_float(((const uint16_t *)src)[i]);
    break;
  case KILN_DOUBLE:
    for (int64_t i = 0; i < n; i++) dst[i] = (float)((const double *)src)[i];
    break;
  default:
    if (n) memcpy(dst, src, (size_t)n * sizeof(float));
  }
}

void kx_from_float(kiln_dtype t, const float *src, void *dst, int64_t n) {
  switch (t) {
  case KILN_FLOAT16:
    for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = kiln_float_to_half(src[i]);
    break;
  case KILN_BFLOAT16:
    for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = kiln_float_to_bfloat16(src[i]);
    break;
  case KILN_DOUBLE:
    for (int64_t i = 0; i < n; i++) ((double *)dst)[i] = src[i];
    break;
  default:
    if (n) memcpy(dst, src, (size_t)n * sizeof(float));
  }
}

void kx_strides(int rank, const int64_t *dims, int64_t *strides) {
  int64_t s = 1;
  for (int d = rank - 1; d >= 0; d--) {
    strides[d] = s;
    s *= dims[d];
  }
}

int64_t kx_prod(const int64_t *dims, int from, int to) {
  int64_t p = 1;
  for (int d = from; d < to; d++) p *= dims[d];
  return p;
}

float *kx_scratch_floats(kx_ctx *c, int64_t n, kiln_status *s) {
  float *buf = kx_scratch(c, (size_t)n * sizeof *buf);
  if (!buf) *s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for %lld floats of scratch", (long long)n);
  return buf;
}

kiln_status kx_copy_strings(char **to, char *const *from, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    char *copy = strdup(from[i] ? from[i] : "");
    if (!copy) {
      memset(to + i, 0, (size_t)(n - i) * sizeof *to);
      return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory copying strings");
    }
    to[i] = copy;
  }
  return NULL;
}

kiln_status kx_own_strings(kiln_tensor *t) {
  if (t->dtype != KILN_STRING) return NULL;
  return kx_copy_strings(t->data, t->data, kiln_tensor_numel(t));
}

kiln_status kx_copy_elements(void *to, const void *from, kiln_dtype dtype, int64_t n) {
  if (dtype == KILN_STRING) return kx_copy_strings(to, from, n);
  if (n) memcpy(to, from, (size_t)n * kiln_dtype_size(dtype));
  return NULL;
}

kiln_status kx_output_copy(kx_ctx *c, int i, const kiln_tensor *t) {
  kiln_tensor *y;
  kiln_status s = kx_output(c, i, t->dtype, t->rank, t->dims, &y);
  return s ? s : kx_copy_elements(y->data, t->data, t->dtype, kiln_tensor_numel(t));
}

kiln_status kx_value_copy(kiln_value *dst, const kiln_value *src) {
  kiln_value_release(dst);
  if (src->kind == KILN_VALUE_TENSOR) return kiln_tensor_copy(&dst->tensor, &src->tensor);
  dst->kind = src->kind;
  if (src->kind != KILN_VALUE_SEQUENCE) return NULL;
  dst->elem_dtype = src->elem_dtype;
  for (size_t i = 0; i < src->count; i++) {
    kiln_status s = kiln_value_seq_append(dst, &src->items[i], 0);
    if (s) return s;
  }
  return NULL;
}

const char *kx_value_kind_name(const kiln_value *v) {
  if (!v) return "nothing (absent)";
  switch (v->kind) {
  case KILN_VALUE_TENSOR: return "a tensor";
  case KILN_VALUE_SEQUENCE: return "a sequence";
  default: return "an empty optional";
  }
}

const kx_graph *kx_node_subgraph(const kx_node *n, const char *attr) {
  for (int i = 0; i < n->n_subgraphs; i++)
    if (strcmp(n->subgraph_names[i], attr) == 0) return n->subgraphs[i];
  return NULL;
}

void kx_activation_apply(const kx_activation *a, kiln_tensor *t, int64_t begin, int64_t end) {
  if (a->kind == KX_ACT_NONE) return;
  if (t->dtype == KILN_FLOAT) {
    kx_activation_f32(a, (float *)t->data + begin, end - begin);
    return;
  }
  /* other dtypes through double; only elements the activation changes are written back, so
   * integers beyond double's 53 bits pass through exactly */
  for (int64_t i = begin; i < end; i++) {
    double v = kiln_tensor_get_f64(t, i);
    if (a->kind == KX_ACT_RELU && v < 0) kx_set_f64(t, i, 0);
    else if (a->kind == KX_ACT_CLIP && v < a->lo) kx_set_f64(t, i, a->lo);
    else if (a->kind == KX_ACT_CLIP && v > a->hi) kx_set_f64(t, i, a->hi);
    else if (a->kind == KX_ACT_LEAKY_RELU && v < 0) kx_set_f64(t, i, v * a->alpha);
  }
}

typedef struct post_job {
  const kx_node *n;
  kiln_tensor *t;
  int64_t width; /* the last dimension: the bias's length */
} post_job;

static void post_range(void *arg, int64_t begin, int64_t end) {
  const post_job *j = arg;
  if (j->n->post_bias) { /* rows of the last axis: begin/end count rows here */
    const float *bias = j->n->post_bias->data;
    float *y = j->t->data;
    for (int64_t r = begin; r < end; r++) {
      float *row = y + r * j->width;
      for (int64_t k = 0; k < j->width; k++) row[k] += bias[k];
      kx_activation_f32(&j->n->post, row, j->width);
    }
    return;
  }
  kx_activation_apply(&j->n->post, j->t, begin, end);
}

kiln_status kx_post_apply(const kx_ctx *c, kiln_tensor *y) {
  const kx_node *n = c->node;
  if (n->post.kind == KX_ACT_NONE && !n->post_bias) return NULL;
  post_job j = {n, y, y->rank ? y->dims[y->rank - 1] : 1};
  if (!n->post_bias) {
    kx_parallel(c, kiln_tensor_numel(y), 1, post_range, &j);
    return NULL;
  }
  /* the compiler fuses a bias only into a float output whose last axis matches it */
  if (y->dtype != KILN_FLOAT || kiln_tensor_numel(n->post_bias) != j.width)
    return kiln_error(KILN_INTERNAL, "fused bias of %lld values does not fit the output's last axis of %lld",
                      (long long)kiln_tensor_numel(n->post_bias), (long long)j.width);
  kx_parallel(c, j.width ? kiln_tensor_numel(y) / j.width : 0, 2.0 * (double)j.width, post_range, &j);
  return NULL;
}
