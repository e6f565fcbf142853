/* Records: named tensors with the provenance of where they were read, and their JSON form. */
#include "data/data.h"

#include <stdlib.h>
#include <string.h>

#include "core/buf.h"

kiln_status kiln_record_init(kiln_record *r, const char *const *names, int count, size_t data_bytes,
                             void **data) {
  memset(r, 0, sizeof *r);
  if (count < 0) return kiln_error(KILN_INVALID_ARGUMENT, "a record cannot have %d features", count);
  size_t head = kx_align64((size_t)count * sizeof(kiln_tensor));
  if (data_bytes > SIZE_MAX / 2 - head)
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "a record of %zu bytes is too large", data_bytes);
  size_t total = kx_align64(head + data_bytes);
  if (total == 0) total = KX_DATA_ALIGN;
  void *block = aligned_alloc(KX_DATA_ALIGN, total);
  if (!block) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory allocating a record of %zu bytes", total);
  memset(block, 0, head); /* the values; the data area is the caller's to fill */
  r->count = count;
  r->names = names;
  r->values = block;
  r->block = block;
  r->index = -1;
  r->offset = -1;
  if (data) *data = data_bytes ? (char *)block + head : NULL;
  return NULL;
}

void kiln_record_release(kiln_record *r) {
  /* Most values view the record's block: only owned ones need releasing (zeroing each 152-byte
   * tensor of a block about to be freed was a sixth of reading a CSV). */
  for (int i = 0; i < r->count; i++)
    if (r->values[i].owner) kiln_tensor_release(&r->values[i]);
  free(r->block);
  memset(r, 0, sizeof *r);
}

int kiln_record_find(const kiln_record *r, const char *name) {
  for (int i = 0; i < r->count; i++)
    if (strcmp(r->names[i], name) == 0) return i;
  return -1;
}

void kiln_record_set(kiln_record *r, int i, kiln_tensor *t) {
  kiln_tensor_release(&r->values[i]);
  r->values[i] = *t;
  memset(t, 0, sizeof *t);
}

kiln_status kiln_record_copy(kiln_record *dst, const kiln_record *src) {
  kiln_record c;
  kiln_status s = kiln_record_init(&c, src->names, src->count, 0, NULL);
  if (s) return s;
  for (int i = 0; i < src->count && !s; i++)
    if (src->values[i].dtype != KILN_UNDEFINED) s = kiln_tensor_copy(&c.values[i], &src->values[i]);
  if (s) {
    kiln_record_release(&c);
    return s;
  }
  c.source = src->source;
  c.index = src->index;
  c.offset = src->offset;
  *dst = c;
  return NULL;
}

static void put_element(kx_buf *b, const kiln_tensor *t, int64_t i) {
  switch (t->dtype) {
  case KILN_FLOAT: kx_buf_json_float(b, ((const float *)t->data)[i]); break;
  case KILN_FLOAT16:
  case KILN_BFLOAT16: kx_buf_json_float(b, (float)kiln_tensor_get_f64(t, i)); break;
  case KILN_DOUBLE: kx_buf_json_double(b, ((const double *)t->data)[i]); break;
  case KILN_BOOL: kx_buf_puts(b, ((const uint8_t *)t->data)[i] ? "true" : "false"); break;
  case KILN_INT64: kx_buf_printf(b, "%lld", (long long)((const int64_t *)t->data)[i]); break;
  case KILN_UINT64: kx_buf_printf(b, "%llu", (unsigned long long)((const uint64_t *)t->data)[i]); break;
  case KILN_STRING: {
    const char *s = ((char *const *)t->data)[i];
    size_t n = s ? strlen(s) : 0;
    if (kx_is_utf8(s, n)) {
      kx_buf_json_string(b, s ? s : "");
    } else {
      kx_buf_puts(b, "{\"b64\":\"");
      kx_buf_base64(b, s, n);
      kx_buf_puts(b, "\"}");
    }
    break;
  }
  default: kx_buf_printf(b, "%.0f", kiln_tensor_get_f64(t, i)); break; /* the other integer types */
  }
}

/* Nested arrays, dimension `dim` onwards, starting at element *at. */
static void put_dims(kx_buf *b, const kiln_tensor *t, int dim, int64_t *at) {
  if (dim == t->rank) {
    put_element(b, t, (*at)++);
    return;
  }
  kx_buf_putc(b, '[');
  for (int64_t k = 0; k < t->dims[dim]; k++) {
    if (k) kx_buf_putc(b, ',');
    put_dims(b, t, dim + 1, at);
  }
  kx_buf_putc(b, ']');
}

char *kiln_record_to_json(const kiln_record *r) {
  kx_buf b = {0};
  kx_buf_putc(&b, '{');
  for (int i = 0; i < r->count; i++) {
    if (i) kx_buf_putc(&b, ',');
    kx_buf_json_string(&b, r->names[i]);
    kx_buf_putc(&b, ':');
    if (r->values[i].dtype == KILN_UNDEFINED) {
      kx_buf_puts(&b, "null");
    } else {
      int64_t at = 0;
      put_dims(&b, &r->values[i], 0, &at);
    }
  }
  kx_buf_putc(&b, '}');
  return kx_buf_take(&b, NULL);
}
