/* NumPy .npy files: the exchange format for tensors on the command line and in tests. */
#include "core/npy.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define NPY_MAX_FILE ((size_t)1 << 40)

static kiln_status bad(const char *name, const char *what) {
  return kiln_error(KILN_INVALID_ARGUMENT, "%s: not a valid .npy file: %s", name, what);
}

/* Finds the value text after 'key': in the header dict. */
static const char *dict_value(const char *hdr, const char *key) {
  char pat[32];
  snprintf(pat, sizeof pat, "'%s'", key);
  const char *p = strstr(hdr, pat);
  if (!p) return NULL;
  p += strlen(pat);
  while (*p == ' ') p++;
  if (*p != ':') return NULL;
  p++;
  while (*p == ' ') p++;
  return p;
}

/* Decodes one UTF-8 sequence; returns bytes used (0 on error). */
static int utf8_decode(const unsigned char *s, uint32_t *cp) {
  if (s[0] < 0x80) { *cp = s[0]; return 1; }
  int n = (s[0] & 0xe0) == 0xc0 ? 2 : (s[0] & 0xf0) == 0xe0 ? 3 : (s[0] & 0xf8) == 0xf0 ? 4 : 0;
  if (!n) return 0;
  uint32_t c = s[0] & (0x7f >> n);
  for (int i = 1; i < n; i++) {
    if ((s[i] & 0xc0) != 0x80) return 0;
    c = (c << 6) | (s[i] & 0x3f);
  }
  *cp = c;
  return n;
}

static size_t utf8_encode(uint32_t c, char *out) {
  if (c < 0x80) { out[0] = (char)c; return 1; }
  if (c < 0x800) { out[0] = (char)(0xc0 | (c >> 6)); out[1] = (char)(0x80 | (c & 0x3f)); return 2; }
  if (c < 0x10000) {
    out[0] = (char)(0xe0 | (c >> 12)); out[1] = (char)(0x80 | ((c >> 6) & 0x3f));
    out[2] = (char)(0x80 | (c & 0x3f)); return 3;
  }
  if (c > 0x10ffff) return 0;
  out[0] = (char)(0xf0 | (c >> 18)); out[1] = (char)(0x80 | ((c >> 12) & 0x3f));
  out[2] = (char)(0x80 | ((c >> 6) & 0x3f)); out[3] = (char)(0x80 | (c & 0x3f)); return 4;
}

kiln_status kx_npy_header_length(const void *prefix, size_t len, const char *name, size_t *total) {
  const unsigned char *b = prefix;
  if (len < 10 || memcmp(b, "\x93NUMPY", 6) != 0) return bad(name, "missing the \\x93NUMPY magic");
  int major = b[6];
  size_t hlen, start;
  if (major == 1) {
    hlen = (size_t)b[8] | (size_t)b[9] << 8;
    start = 10;
  } else if (major == 2 || major == 3) {
    if (len < 12) return bad(name, "truncated header");
    hlen = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
    start = 12;
  } else {
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: .npy format version %d is not supported", name, major);
  }
  if (hlen > 65536) return bad(name, "header longer than 64 KiB");
  *total = start + hlen;
  return NULL;
}

kiln_status kx_npy_header_parse(const void *buf, size_t len, const char *name, kx_npy_header *h) {
  const unsigned char *b = buf;
  size_t total;
  kiln_status s = kx_npy_header_length(buf, len, name, &total);
  if (s) return s;
  if (total > len) return bad(name, "truncated header");
  size_t start = b[6] == 1 ? 10 : 12, hlen = total - start;
  char hdr[65537];
  memcpy(hdr, b + start, hlen);
  hdr[hlen] = '\0';
  memset(h, 0, sizeof *h);
  h->data_offset = total;

  const char *descr = dict_value(hdr, "descr");
  const char *fortran = dict_value(hdr, "fortran_order");
  const char *shape = dict_value(hdr, "shape");
  if (!descr || !fortran || !shape) return bad(name, "header lacks descr, fortran_order or shape");
  if (strncmp(fortran, "True", 4) == 0)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: Fortran-order arrays are not supported (save with np.ascontiguousarray)", name);
  if (*descr != '\'') return bad(name, "descr is not a string (structured dtypes are not supported)");
  char code[16] = {0};
  size_t ci = 0;
  for (const char *p = descr + 1; *p && *p != '\'' && ci < sizeof code - 1; p++) code[ci++] = *p;
  if (code[0] == '>' && strcmp(code + 1, "u1") != 0 && strcmp(code + 1, "i1") != 0 && strcmp(code + 1, "b1") != 0)
    return kiln_error(KILN_UNIMPLEMENTED, "%s: big-endian dtype '%s' is not supported", name, code);

  if (*shape != '(') return bad(name, "shape is not a tuple");
  for (const char *p = shape + 1;;) {
    while (*p == ' ' || *p == ',') p++;
    if (*p == ')') break;
    if (!isdigit((unsigned char)*p)) return bad(name, "shape holds a non-integer");
    if (h->rank == KILN_MAX_RANK)
      return kiln_error(KILN_UNIMPLEMENTED, "%s: rank above %d is not supported", name, KILN_MAX_RANK);
    errno = 0;
    char *end;
    long long d = strtoll(p, &end, 10);
    if (errno) return bad(name, "dimension out of range");
    h->dims[h->rank++] = d;
    p = end;
  }

  const char *c = code[0] == '<' || code[0] == '|' || code[0] == '=' || code[0] == '>' ? code + 1 : code;
  kiln_tensor t = {0};
  if (c[0] == 'U' || c[0] == 'S') { /* fixed-width strings: UTF-32 ('U') or bytes ('S') */
    long width = strtol(c + 1, NULL, 10);
    if (width < 1 || width > 1 << 20) return bad(name, "string width out of range");
    h->dtype = KILN_STRING;
    h->str_width = (size_t)width;
    h->str_unit = c[0] == 'U' ? 4 : 1;
    h->item_bytes = h->str_width * h->str_unit;
  } else {
    h->dtype = kiln_dtype_from_name(c);
    if (h->dtype == KILN_UNDEFINED || h->dtype == KILN_STRING)
      return kiln_error(KILN_UNIMPLEMENTED, "%s: dtype '%s' is not supported", name, code);
    h->item_bytes = kiln_dtype_size(h->dtype);
  }
  /* the shape's element count must not overflow */
  if ((s = kiln_tensor_set_shape(&t, h->dtype, h->rank, h->dims))) return kiln_status_prefix(s, "%s: ", name);
  return NULL;
}

kiln_status kx_npy_decode_strings(const kx_npy_header *h, const unsigned char *data, int64_t n, char **out) {
  for (int64_t i = 0; i < n; i++) {
    const unsigned char *e = data + (size_t)i * h->item_bytes;
    char *o = malloc(h->str_width * 4 + 1);
    if (!o) {
      for (int64_t k = 0; k < i; k++) free(out[k]), out[k] = NULL;
      return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    }
    size_t used = 0;
    for (size_t k = 0; k < h->str_width; k++) {
      uint32_t cp = h->str_unit == 4 ? (uint32_t)e[4 * k] | (uint32_t)e[4 * k + 1] << 8 |
                                           (uint32_t)e[4 * k + 2] << 16 | (uint32_t)e[4 * k + 3] << 24
                                     : e[k];
      if (cp == 0) break;
      used += h->str_unit == 4 ? utf8_encode(cp, o + used) : (o[used] = (char)cp, 1);
    }
    o[used] = '\0';
    out[i] = o;
  }
  return NULL;
}

kiln_status kiln_npy_parse(const void *buf, size_t len, const char *name, kiln_tensor *out) {
  kx_npy_header h;
  kiln_status s = kx_npy_header_parse(buf, len, name, &h);
  if (s) return s;
  const unsigned char *data = (const unsigned char *)buf + h.data_offset;
  size_t data_len = len - h.data_offset;
  kiln_tensor shape = {0};
  if ((s = kiln_tensor_set_shape(&shape, h.dtype, h.rank, h.dims))) return kiln_status_prefix(s, "%s: ", name);
  int64_t n = kiln_tensor_numel(&shape);
  if (h.dtype == KILN_STRING) {
    if ((size_t)n > data_len / h.item_bytes)
      return kiln_error(KILN_INVALID_ARGUMENT, "%s: truncated data: %lld strings of width %zu need more than the %zu bytes the file has",
                        name, (long long)n, h.str_width, data_len);
    if ((s = kiln_tensor_alloc(out, KILN_STRING, h.rank, h.dims))) return kiln_status_prefix(s, "%s: ", name);
    if ((s = kx_npy_decode_strings(&h, data, n, out->data))) kiln_tensor_release(out);
    return s;
  }
  size_t need = kiln_tensor_nbytes(&shape);
  if (need > data_len)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: truncated data: shape needs %zu bytes, file has %zu", name, need, data_len);
  if ((s = kiln_tensor_alloc(out, h.dtype, h.rank, h.dims))) return kiln_status_prefix(s, "%s: ", name);
  if (need) memcpy(out->data, data, need);
  return NULL;
}

kiln_status kiln_npy_read(const char *path, kiln_tensor *out) {
  void *buf;
  size_t len;
  kiln_status s = kiln_file_read(path, NPY_MAX_FILE, &buf, &len);
  if (s) return s;
  s = kiln_npy_parse(buf, len, path, out);
  free(buf);
  return s;
}

const char *kx_npy_descr(kiln_dtype t) {
  switch (t) {
  case KILN_FLOAT: return "<f4";
  case KILN_DOUBLE: return "<f8";
  case KILN_FLOAT16: return "<f2";
  case KILN_INT8: return "|i1";
  case KILN_UINT8: return "|u1";
  case KILN_BOOL: return "|b1";
  case KILN_INT16: return "<i2";
  case KILN_UINT16: return "<u2";
  case KILN_INT32: return "<i4";
  case KILN_UINT32: return "<u4";
  case KILN_INT64: return "<i8";
  case KILN_UINT64: return "<u8";
  case KILN_COMPLEX64: return "<c8";
  case KILN_COMPLEX128: return "<c16";
  default: return NULL;
  }
}

kiln_status kiln_npy_write(const char *path, const kiln_tensor *t) {
  int64_t n = kiln_tensor_numel(t);
  long width = 0; /* string width in code points */
  char descr[32];
  if (t->dtype == KILN_STRING) {
    char **str = t->data;
    for (int64_t i = 0; i < n; i++) {
      long w = 0;
      uint32_t cp;
      for (const unsigned char *p = (const unsigned char *)str[i]; *p; w++) {
        int k = utf8_decode(p, &cp);
        p += k ? k : 1;
      }
      if (w > width) width = w;
    }
    snprintf(descr, sizeof descr, "<U%ld", width ? width : 1);
    if (!width) width = 1;
  } else if (t->dtype == KILN_BFLOAT16) {
    snprintf(descr, sizeof descr, "<f4"); /* numpy has no bfloat16: widen to float32 */
  } else {
    const char *d = kx_npy_descr(t->dtype);
    if (!d) return kiln_error(KILN_UNIMPLEMENTED, "%s: dtype %s has no .npy form", path, kiln_dtype_name(t->dtype));
    snprintf(descr, sizeof descr, "%s", d);
  }
  char header[512];
  int len = snprintf(header, sizeof header, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
  for (int i = 0; i < t->rank; i++)
    len += snprintf(header + len, sizeof header - (size_t)len, "%lld,%s", (long long)t->dims[i],
                    i + 1 < t->rank ? " " : "");
  len += snprintf(header + len, sizeof header - (size_t)len, "), }");
  /* pad with spaces so that magic + header is a multiple of 64, ending in '\n' */
  int total = 10 + len + 1;
  int pad = (64 - total % 64) % 64;
  FILE *f = fopen(path, "wb");
  if (!f) return kiln_error(KILN_IO, "%s: %s", path, strerror(errno));
  unsigned hl = (unsigned)(len + pad + 1);
  unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hl & 0xff), (unsigned char)(hl >> 8)};
  fwrite(pre, 1, sizeof pre, f);
  fwrite(header, 1, (size_t)len, f);
  for (int i = 0; i < pad; i++) fputc(' ', f);
  fputc('\n', f);
  if (t->dtype == KILN_STRING) {
    char **str = t->data;
    for (int64_t i = 0; i < n; i++) {
      const unsigned char *p = (const unsigned char *)str[i];
      for (long k = 0; k < width; k++) {
        uint32_t cp = 0;
        if (*p) {
          int used = utf8_decode(p, &cp);
          p += used ? used : 1;
          if (!used) cp = 0xfffd;
        }
        unsigned char le[4] = {(unsigned char)cp, (unsigned char)(cp >> 8), (unsigned char)(cp >> 16), (unsigned char)(cp >> 24)};
        fwrite(le, 1, 4, f);
      }
    }
  } else if (t->dtype == KILN_BFLOAT16) {
    const uint16_t *src = t->data;
    for (int64_t i = 0; i < n; i++) {
      float v = kiln_bfloat16_to_float(src[i]);
      fwrite(&v, sizeof v, 1, f);
    }
  } else if (n) {
    fwrite(t->data, 1, kiln_tensor_nbytes(t), f);
  }
  int err = ferror(f);
  if (fclose(f) != 0 || err) return kiln_error(KILN_IO, "%s: write failed: %s", path, strerror(errno));
  return NULL;
}
