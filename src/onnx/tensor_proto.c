/* TensorProto -> kiln_tensor: raw_data, the typed fields, and external data files (mapped when
 * their offset allows, confined to the model's folder). */
#include "onnx/onnx.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

void kx_mappings_free(kx_mapping *m) {
  while (m) {
    kx_mapping *next = m->next;
    munmap(m->addr, m->len);
    free(m);
    m = next;
  }
}

static const char *tensor_name(const Onnx__TensorProto *p) {
  return p->name && *p->name ? p->name : "(unnamed)";
}

/* Resolves `location` inside base_dir, refusing anything that ends up outside it. */
static kiln_status resolve_location(const char *base_dir, const char *location, char *out, size_t size) {
  if (!location || !*location) return kiln_error(KILN_INVALID_ARGUMENT, "external data has no location");
  if (location[0] == '/')
    return kiln_error(KILN_INVALID_ARGUMENT, "external data location '%s' is absolute; it must be relative to the model's folder", location);
  char base_real[PATH_MAX], joined[PATH_MAX];
  if (!realpath(base_dir, base_real))
    return kiln_error(KILN_IO, "model folder '%s': %s", base_dir, strerror(errno));
  if ((size_t)snprintf(joined, sizeof joined, "%s/%s", base_real, location) >= sizeof joined)
    return kiln_error(KILN_INVALID_ARGUMENT, "external data location '%s' is too long", location);
  if (!realpath(joined, out))
    return kiln_error(errno == ENOENT ? KILN_NOT_FOUND : KILN_IO, "external data file '%s': %s", location, strerror(errno));
  size_t n = strlen(base_real);
  if (strncmp(out, base_real, n) != 0 || (out[n] != '/' && n > 1))
    return kiln_error(KILN_INVALID_ARGUMENT, "external data location '%s' escapes the model's folder", location);
  (void)size;
  return NULL;
}

static kiln_status load_external(const Onnx__TensorProto *p, const kx_tensor_source *src, kiln_tensor *t) {
  if (!src->base_dir)
    return kiln_error(KILN_INVALID_ARGUMENT, "tensor '%s' uses external data, but the model was loaded without a folder to find it in",
                      tensor_name(p));
  const char *location = NULL;
  int64_t offset = 0, length = -1;
  for (size_t i = 0; i < p->n_external_data; i++) {
    const char *k = p->external_data[i]->key, *v = p->external_data[i]->value;
    if (!k || !v) continue;
    char *end;
    errno = 0;
    if (strcmp(k, "location") == 0) {
      location = v;
    } else if (strcmp(k, "offset") == 0 || strcmp(k, "length") == 0) {
      long long x = strtoll(v, &end, 10);
      if (errno || *end || x < 0)
        return kiln_error(KILN_INVALID_ARGUMENT, "tensor '%s': external data %s '%s' is not a non-negative integer", tensor_name(p), k, v);
      if (k[0] == 'o') offset = x;
      else length = x;
    }
  }
  char path[PATH_MAX];
  kiln_status s = resolve_location(src->base_dir, location, path, sizeof path);
  if (s) return kiln_status_prefix(s, "tensor '%s': ", tensor_name(p));
  size_t need = kiln_tensor_nbytes(t);
  if (length >= 0 && (size_t)length != need)
    return kiln_error(KILN_INVALID_ARGUMENT, "tensor '%s': external data length %lld does not match its shape (%zu bytes)",
                      tensor_name(p), (long long)length, need);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return kiln_error(KILN_IO, "tensor '%s': %s: %s", tensor_name(p), location, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || (uint64_t)offset > (uint64_t)st.st_size || need > (uint64_t)st.st_size - (uint64_t)offset) {
    close(fd);
    return kiln_error(KILN_INVALID_ARGUMENT, "tensor '%s': external file '%s' is too short for offset %lld + %zu bytes",
                      tensor_name(p), location, (long long)offset, need);
  }
  if (need == 0) {
    close(fd);
    return NULL;
  }
  long page = sysconf(_SC_PAGESIZE);
  size_t esize = kiln_dtype_size(t->dtype);
  if (src->mappings && offset % (int64_t)esize == 0) {
    /* Map from the enclosing page: the weights stay in the page cache, shared and not copied. */
    off_t start = (off_t)(offset - offset % page);
    size_t len = need + (size_t)(offset - start);
    void *addr = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, start);
    kx_mapping *m = addr != MAP_FAILED ? malloc(sizeof *m) : NULL;
    if (m) {
      close(fd);
      m->addr = addr;
      m->len = len;
      m->next = *src->mappings;
      *src->mappings = m;
      t->data = (char *)addr + (offset - start);
      return NULL;
    }
    if (addr != MAP_FAILED) munmap(addr, len);
  }
  void *buf = malloc(need);
  if (!buf) {
    close(fd);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "tensor '%s': out of memory", tensor_name(p));
  }
  size_t got = 0;
  while (got < need) {
    ssize_t r = pread(fd, (char *)buf + got, need - got, (off_t)(offset + (int64_t)got));
    if (r <= 0) {
      free(buf);
      close(fd);
      return kiln_error(KILN_IO, "tensor '%s': reading '%s' failed", tensor_name(p), location);
    }
    got += (size_t)r;
  }
  close(fd);
  t->data = t->owner = buf;
  return NULL;
}

static kiln_status count_mismatch(const Onnx__TensorProto *p, const char *field, size_t have, int64_t want) {
  return kiln_error(KILN_INVALID_ARGUMENT, "tensor '%s': %s holds %zu values, its shape needs %lld",
                    tensor_name(p), field, have, (long long)want);
}

kiln_status kx_tensor_from_proto(const Onnx__TensorProto *p, const kx_tensor_source *src, kiln_tensor *out) {
  int dtype = p->has_data_type ? p->data_type : 0;
  if (dtype <= 0 || dtype >= KILN_DTYPE_COUNT)
    return kiln_error(KILN_INVALID_ARGUMENT, "tensor '%s': unknown data_type %d", tensor_name(p), dtype);
  if (p->n_dims > KILN_MAX_RANK)
    return kiln_error(KILN_UNIMPLEMENTED, "tensor '%s': rank %zu is above kiln's limit of %d", tensor_name(p), p->n_dims, KILN_MAX_RANK);
  if (p->segment) return kiln_error(KILN_UNIMPLEMENTED, "tensor '%s': segmented tensors are not supported", tensor_name(p));
  kiln_tensor t = {0};
  kiln_status s = kiln_tensor_set_shape(&t, (kiln_dtype)dtype, (int)p->n_dims, p->dims);
  if (s) return kiln_status_prefix(s, "tensor '%s': ", tensor_name(p));
  int64_t n = kiln_tensor_numel(&t);
  size_t nbytes = kiln_tensor_nbytes(&t);

  if (p->has_data_location && p->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL) {
    if (dtype == KILN_STRING)
      return kiln_error(KILN_INVALID_ARGUMENT, "tensor '%s': string tensors cannot use external data", tensor_name(p));
    if ((s = load_external(p, src, &t))) return s;
    *out = t;
    return NULL;
  }
  if (p->has_raw_data) {
    if (dtype == KILN_STRING)
      return kiln_error(KILN_INVALID_ARGUMENT, "tensor '%s': string tensors cannot use raw_data", tensor_name(p));
    if (p->raw_data.len != nbytes)
      return kiln_error(KILN_INVALID_ARGUMENT, "tensor '%s': raw_data has %zu bytes, its shape %s needs %zu",
                        tensor_name(p), p->raw_data.len, kiln_tensor_describe(&t, (char[96]){0}, 96), nbytes);
    if (src->view_raw && ((uintptr_t)p->raw_data.data % kiln_dtype_size(t.dtype)) == 0) {
      t.data = nbytes ? p->raw_data.data : NULL;
    } else if (nbytes) {
      if (!(t.data = t.owner = malloc(nbytes))) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
      memcpy(t.data, p->raw_data.data, nbytes);
    }
    *out = t;
    return NULL;
  }

  /* typed fields: check the count before allocating, so a hostile shape costs nothing */
  const char *field;
  size_t have;
  int64_t want = n;
  switch (dtype) {
  case KILN_FLOAT: case KILN_COMPLEX64: field = "float_data"; have = p->n_float_data; want = dtype == KILN_FLOAT ? n : 2 * n; break;
  case KILN_DOUBLE: case KILN_COMPLEX128: field = "double_data"; have = p->n_double_data; want = dtype == KILN_DOUBLE ? n : 2 * n; break;
  case KILN_INT64: field = "int64_data"; have = p->n_int64_data; break;
  case KILN_UINT32: case KILN_UINT64: field = "uint64_data"; have = p->n_uint64_data; break;
  case KILN_STRING: field = "string_data"; have = p->n_string_data; break;
  default: field = "int32_data"; have = p->n_int32_data; /* int32 and narrower, bool, float16, bfloat16 */
  }
  if ((int64_t)have != want) return count_mismatch(p, field, have, want);
  if ((s = kiln_tensor_alloc(&t, (kiln_dtype)dtype, (int)p->n_dims, p->dims))) return s;
  switch (dtype) {
  case KILN_FLOAT: case KILN_COMPLEX64:
    if (want) memcpy(t.data, p->float_data, (size_t)want * sizeof(float));
    break;
  case KILN_DOUBLE: case KILN_COMPLEX128:
    if (want) memcpy(t.data, p->double_data, (size_t)want * sizeof(double));
    break;
  case KILN_INT64:
    if (n) memcpy(t.data, p->int64_data, (size_t)n * sizeof(int64_t));
    break;
  case KILN_UINT32: case KILN_UINT64:
    for (int64_t i = 0; i < n; i++) {
      if (dtype == KILN_UINT32) ((uint32_t *)t.data)[i] = (uint32_t)p->uint64_data[i];
      else ((uint64_t *)t.data)[i] = p->uint64_data[i];
    }
    break;
  case KILN_STRING:
    for (int64_t i = 0; i < n; i++) {
      char *str = malloc(p->string_data[i].len + 1);
      if (!str) { s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory"); break; }
      if (p->string_data[i].len) memcpy(str, p->string_data[i].data, p->string_data[i].len);
      str[p->string_data[i].len] = '\0';
      ((char **)t.data)[i] = str;
    }
    break;
  default:
    for (int64_t i = 0; i < n; i++) {
      int32_t v = p->int32_data[i];
      switch (dtype) {
      case KILN_INT32: ((int32_t *)t.data)[i] = v; break;
      case KILN_INT16: ((int16_t *)t.data)[i] = (int16_t)v; break;
      case KILN_INT8: ((int8_t *)t.data)[i] = (int8_t)v; break;
      case KILN_UINT16: case KILN_FLOAT16: case KILN_BFLOAT16: ((uint16_t *)t.data)[i] = (uint16_t)v; break;
      case KILN_UINT8: ((uint8_t *)t.data)[i] = (uint8_t)v; break;
      case KILN_BOOL: ((uint8_t *)t.data)[i] = v != 0; break;
      }
    }
  }
  if (s) {
    kiln_tensor_release(&t);
    return s;
  }
  *out = t;
  return NULL;
}

kiln_status kx_value_from_sequence_proto(const Onnx__SequenceProto *p, kiln_value *out) {
  kiln_value v = {.kind = KILN_VALUE_SEQUENCE};
  if (p->n_sequence_values || p->n_map_values || p->n_optional_values || p->n_sparse_tensor_values)
    return kiln_error(KILN_UNIMPLEMENTED, "sequences of sequences, maps, optionals or sparse tensors are not supported");
  if (p->has_elem_type && p->elem_type != ONNX__SEQUENCE_PROTO__DATA_TYPE__TENSOR &&
      p->elem_type != ONNX__SEQUENCE_PROTO__DATA_TYPE__UNDEFINED)
    return kiln_error(KILN_UNIMPLEMENTED, "sequence element type %d is not supported", p->elem_type);
  kx_tensor_source src = {0};
  for (size_t i = 0; i < p->n_tensor_values; i++) {
    kiln_tensor t = {0};
    kiln_status s = kx_tensor_from_proto(p->tensor_values[i], &src, &t);
    if (!s) s = kiln_value_seq_append(&v, &t, 1);
    if (s) {
      kiln_tensor_release(&t);
      kiln_value_release(&v);
      return kiln_status_prefix(s, "sequence item %zu: ", i);
    }
  }
  *out = v;
  return NULL;
}

kiln_status kx_value_from_optional_proto(const Onnx__OptionalProto *p, kiln_value *out) {
  memset(out, 0, sizeof *out);
  if (p->tensor_value) {
    kx_tensor_source src = {0};
    out->kind = KILN_VALUE_TENSOR;
    return kx_tensor_from_proto(p->tensor_value, &src, &out->tensor);
  }
  if (p->sequence_value) return kx_value_from_sequence_proto(p->sequence_value, out);
  if (p->sparse_tensor_value || p->map_value || p->optional_value)
    return kiln_error(KILN_UNIMPLEMENTED, "optional of a sparse tensor, map or optional is not supported");
  out->kind = KILN_VALUE_NONE;
  return NULL;
}
