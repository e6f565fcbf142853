/* A growable byte buffer for building responses, JSON and metric text (internal to kiln).
 * Appends never fail loudly: after an allocation failure the buffer is marked failed, further
 * appends are ignored, and the owner checks `failed` once at the end. */
#ifndef KILN_CORE_BUF_H
#define KILN_CORE_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct kx_buf {
  char *data; /* NUL-terminated after every append (when not failed) */
  size_t len;
  size_t cap;
  int failed;
} kx_buf;

void kx_buf_append(kx_buf *b, const void *data, size_t len);
void kx_buf_puts(kx_buf *b, const char *s);
void kx_buf_putc(kx_buf *b, char c);
void kx_buf_printf(kx_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Ensures room for `extra` more bytes (plus the NUL); returns a pointer to the free space or NULL
 * (and marks the buffer failed). Callers that write into it then advance len themselves. */
char *kx_buf_reserve(kx_buf *b, size_t extra);
/* Appends s as a JSON string literal, quotes included (control characters escaped). */
void kx_buf_json_string(kx_buf *b, const char *s);
/* Appends a number as JSON the way TF Serving writes it: the shortest text that reads back to the
 * same value at the given precision (float: 9 significant digits at most, double: 17), integers
 * without a fraction, and NaN / Infinity / -Infinity for non-finite values. */
void kx_buf_json_float(kx_buf *b, float v);
void kx_buf_json_double(kx_buf *b, double v);
/* The text of a finite number as above (is_float: at float's precision) into s, which it returns. */
#define KX_NUMBER_CHARS 40
const char *kx_format_number(double v, int is_float, char s[KX_NUMBER_CHARS]);
/* Whether data[0..n) is valid UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF). */
int kx_is_utf8(const void *data, size_t n);
/* Appends data[0..n) in standard base64 with padding (RFC 4648), no quotes. */
void kx_buf_base64(kx_buf *b, const void *data, size_t n);
/* Hands the data to the caller (who frees it) and resets the buffer; NULL when failed. */
char *kx_buf_take(kx_buf *b, size_t *len);
void kx_buf_free(kx_buf *b);

#endif
