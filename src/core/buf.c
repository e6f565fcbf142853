/* kx_buf: the growable buffer every text producer in kiln writes into. */
#include "core/buf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *kx_buf_reserve(kx_buf *b, size_t extra) {
  if (b->failed) return NULL;
  if (extra > ((size_t)-1) / 2 - b->len) {
    b->failed = 1;
    return NULL;
  }
  size_t need = b->len + extra + 1;
  if (need > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
      b->failed = 1;
      return NULL;
    }
    b->data = d;
    b->cap = cap;
  }
  return b->data + b->len;
}

void kx_buf_append(kx_buf *b, const void *data, size_t len) {
  char *p = kx_buf_reserve(b, len);
  if (!p) return;
  if (len) memcpy(p, data, len);
  b->len += len;
  b->data[b->len] = '\0';
}

void kx_buf_puts(kx_buf *b, const char *s) { kx_buf_append(b, s, strlen(s)); }

void kx_buf_putc(kx_buf *b, char c) { kx_buf_append(b, &c, 1); }

void kx_buf_printf(kx_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char small[256];
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0) {
    b->failed = 1;
    return;
  }
  if ((size_t)n < sizeof small) {
    kx_buf_append(b, small, (size_t)n);
    return;
  }
  char *p = kx_buf_reserve(b, (size_t)n);
  if (!p) return;
  va_start(ap, fmt);
  vsnprintf(p, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

void kx_buf_json_string(kx_buf *b, const char *s) {
  kx_buf_putc(b, '"');
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    switch (*p) {
    case '"': kx_buf_puts(b, "\\\""); break;
    case '\\': kx_buf_puts(b, "\\\\"); break;
    case '\n': kx_buf_puts(b, "\\n"); break;
    case '\r': kx_buf_puts(b, "\\r"); break;
    case '\t': kx_buf_puts(b, "\\t"); break;
    default:
      if (*p < 0x20) kx_buf_printf(b, "\\u%04x", *p);
      else kx_buf_putc(b, (char)*p);
    }
  }
  kx_buf_putc(b, '"');
}

/* Non-finite values as TF Serving writes them; returns 1 when v was one. */
static int put_non_finite(kx_buf *b, double v) {
  if (isnan(v)) kx_buf_puts(b, "NaN");
  else if (isinf(v)) kx_buf_puts(b, v > 0 ? "Infinity" : "-Infinity");
  else return 0;
  return 1;
}

/* Integral values within 2^53 print as integers; others with the fewest significant digits (6 up
 * to 9 for float, 15 up to 17 for double) that read back to `v` at the element type's precision. */
const char *kx_format_number(double v, int is_float, char s[KX_NUMBER_CHARS]) {
  if (v == floor(v) && fabs(v) < 9007199254740992.0) {
    snprintf(s, KX_NUMBER_CHARS, "%.0f", v);
    return s;
  }
  for (int digits = is_float ? 6 : 15; digits <= (is_float ? 9 : 17); digits++) {
    snprintf(s, KX_NUMBER_CHARS, "%.*g", digits, v);
    double back = strtod(s, NULL);
    if (is_float ? (float)back == (float)v : back == v) break;
  }
  return s;
}

static void put_real(kx_buf *b, double v, int is_float) {
  char s[KX_NUMBER_CHARS];
  if (!put_non_finite(b, v)) kx_buf_puts(b, kx_format_number(v, is_float, s));
}

void kx_buf_json_float(kx_buf *b, float v) { put_real(b, v, 1); }

void kx_buf_json_double(kx_buf *b, double v) { put_real(b, v, 0); }

char *kx_buf_take(kx_buf *b, size_t *len) {
  char *d = NULL;
  size_t n = 0;
  if (b->failed) free(b->data);
  else if (b->data) d = b->data, n = b->len;
  else if ((d = malloc(1))) d[0] = '\0';
  memset(b, 0, sizeof *b);
  if (len) *len = n;
  return d;
}

void kx_buf_free(kx_buf *b) {
  free(b->data);
  memset(b, 0, sizeof *b);
}

int kx_is_utf8(const void *data, size_t n) {
  const unsigned char *s = data;
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    int extra;
    unsigned cp, min;
    if (c >= 0xC2 && c <= 0xDF) extra = 1, cp = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) extra = 2, cp = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) extra = 3, cp = c & 0x07, min = 0x10000;
    else return 0;
    if (n - i <= (size_t)extra) return 0;
    for (int k = 1; k <= extra; k++) {
      unsigned d = s[i + (size_t)k];
      if ((d & 0xC0) != 0x80) return 0;
      cp = cp << 6 | (d & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    i += (size_t)extra + 1;
  }
  return 1;
}

void kx_buf_base64(kx_buf *b, const void *data, size_t n) {
  static const char digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const unsigned char *p = data;
  char *out = kx_buf_reserve(b, (n + 2) / 3 * 4);
  if (!out) return;
  size_t o = 0;
  for (size_t i = 0; i < n; i += 3) {
    unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
    out[o++] = digits[v >> 18 & 63];
    out[o++] = digits[v >> 12 & 63];
    out[o++] = i + 1 < n ? digits[v >> 6 & 63] : '=';
    out[o++] = i + 2 < n ? digits[v & 63] : '=';
  }
  b->len += o;
  b->data[b->len] = '\0';
}
