/* Dense tensors and graph values: shapes, ownership and element access. */
#include "kiln/core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int64_t kiln_tensor_numel(const kiln_tensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->rank; i++) n *= t->dims[i];
  return n;
}

size_t kiln_tensor_nbytes(const kiln_tensor *t) {
  return (size_t)kiln_tensor_numel(t) * kiln_dtype_size(t->dtype);
}

kiln_status kiln_tensor_set_shape(kiln_tensor *t, kiln_dtype dtype, int rank, const int64_t *dims) {
  if (rank < 0 || rank > KILN_MAX_RANK)
    return kiln_error(KILN_UNIMPLEMENTED, "rank %d is outside kiln's supported range 0..%d", rank,
                      KILN_MAX_RANK);
  size_t esize = kiln_dtype_size(dtype);
  if (esize == 0) return kiln_error(KILN_INVALID_ARGUMENT, "unknown element type %d", (int)dtype);
  /* 2^48 bytes: far beyond any machine, small enough that no size computation overflows */
  const int64_t limit = (int64_t)1 << 48;
  int64_t n = 1;
  for (int i = 0; i < rank; i++) {
    if (dims[i] < 0) return kiln_error(KILN_INVALID_ARGUMENT, "dimension %d is negative (%lld)", i, (long long)dims[i]);
    if (dims[i] > 0 && n > limit / dims[i])
      return kiln_error(KILN_RESOURCE_EXHAUSTED, "tensor with %d dims is too large", rank);
    n *= dims[i];
  }
  if (n > limit / (int64_t)esize) return kiln_error(KILN_RESOURCE_EXHAUSTED, "tensor is too large");
  t->dtype = dtype;
  t->rank = rank;
  int64_t stride = (int64_t)esize;
  for (int i = rank - 1; i >= 0; i--) {
    t->dims[i] = dims[i];
    t->strides[i] = stride;
    /* only a tensor with a zero dimension (no elements) can overflow here; its strides are moot */
    if (__builtin_mul_overflow(stride, dims[i], &stride)) stride = 0;
  }
  for (int i = rank; i < KILN_MAX_RANK; i++) t->dims[i] = t->strides[i] = 0;
  return NULL;
}

kiln_status kiln_tensor_alloc(kiln_tensor *t, kiln_dtype dtype, int rank, const int64_t *dims) {
  kiln_tensor n = {0};
  kiln_status s = kiln_tensor_set_shape(&n, dtype, rank, dims);
  if (s) return s;
  size_t bytes = kiln_tensor_nbytes(&n);
  if (bytes) {
    n.data = calloc(1, bytes);
    if (!n.data) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory allocating %zu bytes", bytes);
    n.owner = n.data;
  }
  *t = n;
  return NULL;
}

kiln_status kiln_tensor_copy(kiln_tensor *dst, const kiln_tensor *src) {
  kiln_tensor n;
  kiln_status s = kiln_tensor_alloc(&n, src->dtype, src->rank, src->dims);
  if (s) return s;
  int64_t count = kiln_tensor_numel(src);
  if (src->dtype == KILN_STRING) {
    char **from = src->data, **to = n.data;
    for (int64_t i = 0; i < count; i++) {
      to[i] = strdup(from[i] ? from[i] : "");
      if (!to[i]) {
        kiln_tensor_release(&n);
        return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory copying strings");
      }
    }
  } else if (count) {
    memcpy(n.data, src->data, kiln_tensor_nbytes(src));
  }
  *dst = n;
  return NULL;
}

void kiln_tensor_release(kiln_tensor *t) {
  if (t->owner) {
    if (t->dtype == KILN_STRING && t->data == t->owner) {
      char **str = t->data;
      int64_t n = kiln_tensor_numel(t);
      for (int64_t i = 0; i < n; i++) free(str[i]);
    }
    free(t->owner);
  }
  memset(t, 0, sizeof *t);
}

char *kiln_tensor_describe(const kiln_tensor *t, char *buf, size_t size) {
  size_t used = (size_t)snprintf(buf, size, "%s[", kiln_dtype_name(t->dtype));
  for (int i = 0; i < t->rank && used < size; i++)
    used += (size_t)snprintf(buf + used, size - used, i ? ",%lld" : "%lld", (long long)t->dims[i]);
  if (used < size) snprintf(buf + used, size - used, "]");
  return buf;
}

double kiln_tensor_get_f64(const kiln_tensor *t, int64_t i) {
  const void *p = t->data;
  switch (t->dtype) {
  case KILN_FLOAT: return ((const float *)p)[i];
  case KILN_DOUBLE: return ((const double *)p)[i];
  case KILN_FLOAT16: return kiln_half_to_float(((const uint16_t *)p)[i]);
  case KILN_BFLOAT16: return kiln_bfloat16_to_float(((const uint16_t *)p)[i]);
  case KILN_INT8: return ((const int8_t *)p)[i];
  case KILN_UINT8: return ((const uint8_t *)p)[i];
  case KILN_BOOL: return ((const uint8_t *)p)[i] != 0;
  case KILN_INT16: return ((const int16_t *)p)[i];
  case KILN_UINT16: return ((const uint16_t *)p)[i];
  case KILN_INT32: return ((const int32_t *)p)[i];
  case KILN_UINT32: return ((const uint32_t *)p)[i];
  case KILN_INT64: return (double)((const int64_t *)p)[i];
  case KILN_UINT64: return (double)((const uint64_t *)p)[i];
  default: return NAN;
  }
}

void kiln_value_release(kiln_value *v) {
  if (v->kind == KILN_VALUE_SEQUENCE) {
    for (size_t i = 0; i < v->count; i++) kiln_tensor_release(&v->items[i]);
    free(v->items);
  }
  kiln_tensor_release(&v->tensor);
  memset(v, 0, sizeof *v);
}

kiln_status kiln_value_seq_append(kiln_value *seq, kiln_tensor *t, int take) {
  if (seq->count == seq->capacity) {
    size_t cap = seq->capacity ? seq->capacity * 2 : 4;
    kiln_tensor *items = realloc(seq->items, cap * sizeof *items);
    if (!items) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory growing a sequence");
    seq->items = items;
    seq->capacity = cap;
  }
  kiln_tensor *slot = &seq->items[seq->count];
  if (take && (t->owner || kiln_tensor_numel(t) == 0)) { /* move the buffer */
    *slot = *t;
    memset(t, 0, sizeof *t);
  } else {
    kiln_status s = kiln_tensor_copy(slot, t);
    if (s) return s;
  }
  if (seq->elem_dtype == KILN_UNDEFINED) seq->elem_dtype = slot->dtype;
  seq->count++;
  return NULL;
}
