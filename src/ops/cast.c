/* Cast and CastLike: conversions between the numeric types, bool, float16, bfloat16 and strings.
 *
 * Numbers convert through one of three wide forms, chosen by the source type: int64 (signed
 * integers), uint64 (unsigned integers and bool) or double (floating point). Each block of
 * elements is widened and then narrowed to the target type, so every pair of types needs only
 * one load and one store loop. The semantics are numpy's astype where that is defined: integers
 * wrap, integer -> float rounds to nearest, anything -> bool is `!= 0` (NaN is true). Where numpy
 * is undefined (float -> integer out of range), values saturate and NaN becomes 0. float -> bfloat16
 * truncates, like ONNX's reference.
 *
 * Strings parse as numbers the way numpy does ("1.5", "-INF", "NaN", surrounding spaces; bools
 * also from "True"/"False") and numbers print as numpy's str() does: integers in decimal, bools
 * as True/False, floats with the fewest digits that read back as the same value of their type,
 * positionally for 1e-4 <= |x| < 1e16 ("0.5", "100.0") and in scientific notation otherwise
 * ("1e-05", "1.5e+16"). */
#include "ops/util.h"

#include <ctype.h>
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------------ numbers */

typedef enum wide_kind { WIDE_I64, WIDE_U64, WIDE_F64 } wide_kind;

static wide_kind wide_of(kiln_dtype t) {
  switch (t) {
  case KILN_BOOL:
  case KILN_UINT8:
  case KILN_UINT16:
  case KILN_UINT32:
  case KILN_UINT64: return WIDE_U64;
  case KILN_FLOAT:
  case KILN_DOUBLE:
  case KILN_FLOAT16:
  case KILN_BFLOAT16: return WIDE_F64;
  default: return WIDE_I64;
  }
}

enum { BLOCK = 256 };

/* One block in its wide form. */
typedef union wide_block {
  int64_t i64[BLOCK];
  uint64_t u64[BLOCK];
  double f64[BLOCK];
} wide_block;

#define CONVERT_LOOP(TD, dst, TS, src, n, EXPR) \
  do {                                          \
    const TS *s_ = (const TS *)(src);           \
    TD *d_ = (TD *)(dst);                       \
    for (int64_t i = 0; i < (n); i++) {         \
      TS v = s_[i];                             \
      d_[i] = (EXPR);                           \
    }                                           \
  } while (0)

/* Widens n elements of dtype t into w (in the form wide_of(t)). */
static void load_wide(kiln_dtype t, const void *src, wide_block *w, int64_t n) {
  switch (t) {
  case KILN_BOOL:
  case KILN_UINT8: CONVERT_LOOP(uint64_t, w->u64, uint8_t, src, n, v); break;
  case KILN_UINT16: CONVERT_LOOP(uint64_t, w->u64, uint16_t, src, n, v); break;
  case KILN_UINT32: CONVERT_LOOP(uint64_t, w->u64, uint32_t, src, n, v); break;
  case KILN_UINT64: CONVERT_LOOP(uint64_t, w->u64, uint64_t, src, n, v); break;
  case KILN_INT8: CONVERT_LOOP(int64_t, w->i64, int8_t, src, n, v); break;
  case KILN_INT16: CONVERT_LOOP(int64_t, w->i64, int16_t, src, n, v); break;
  case KILN_INT32: CONVERT_LOOP(int64_t, w->i64, int32_t, src, n, v); break;
  case KILN_INT64: CONVERT_LOOP(int64_t, w->i64, int64_t, src, n, v); break;
  case KILN_FLOAT: CONVERT_LOOP(double, w->f64, float, src, n, v); break;
  case KILN_DOUBLE: CONVERT_LOOP(double, w->f64, double, src, n, v); break;
  case KILN_FLOAT16: CONVERT_LOOP(double, w->f64, uint16_t, src, n, kiln_half_to_float(v)); break;
  case KILN_BFLOAT16: CONVERT_LOOP(double, w->f64, uint16_t, src, n, kiln_bfloat16_to_float(v)); break;
  default: break;
  }
}

/* double -> integer, truncating toward zero, saturating at [lo, hi], NaN -> 0. */
static int64_t f64_to_int(double v, int64_t lo, int64_t hi) {
  if (v != v) return 0;
  if (v <= (double)lo) return lo;
  if (v >= (double)hi) return hi; /* (double)INT64_MAX is 2^63: values below it fit */
  return (int64_t)v;
}

static uint64_t f64_to_uint(double v, uint64_t hi) {
  if (!(v > 0)) return 0; /* NaN too */
  if (v >= (double)hi) return hi;
  return (uint64_t)v;
}

/* Cast rounds float -> bfloat16 toward zero, keeping the top half of the float's bits, as ONNX's
 * reference implementation (and its conformance data) does. NaN stays a (quiet) NaN. */
static uint16_t truncate_to_bfloat16(float f) {
  uint32_t bits;
  memcpy(&bits, &f, sizeof bits);
  return f != f ? (uint16_t)((bits >> 16) | 0x40) : (uint16_t)(bits >> 16);
}

/* Narrows n integers (W: int64_t or uint64_t) into dtype t; integer targets wrap (C's conversion,
 * modulo 2^bits in gcc). */
#define STORE_FROM_INTEGERS(W, src, t, dst, n)                                                       \
  switch (t) {                                                                                       \
  case KILN_BOOL: CONVERT_LOOP(uint8_t, dst, W, src, n, v != 0); break;                              \
  case KILN_UINT8: CONVERT_LOOP(uint8_t, dst, W, src, n, (uint8_t)v); break;                         \
  case KILN_UINT16: CONVERT_LOOP(uint16_t, dst, W, src, n, (uint16_t)v); break;                      \
  case KILN_UINT32: CONVERT_LOOP(uint32_t, dst, W, src, n, (uint32_t)v); break;                      \
  case KILN_UINT64: CONVERT_LOOP(uint64_t, dst, W, src, n, (uint64_t)v); break;                      \
  case KILN_INT8: CONVERT_LOOP(int8_t, dst, W, src, n, (int8_t)v); break;                            \
  case KILN_INT16: CONVERT_LOOP(int16_t, dst, W, src, n, (int16_t)v); break;                         \
  case KILN_INT32: CONVERT_LOOP(int32_t, dst, W, src, n, (int32_t)v); break;                         \
  case KILN_INT64: CONVERT_LOOP(int64_t, dst, W, src, n, (int64_t)v); break;                         \
  case KILN_FLOAT: CONVERT_LOOP(float, dst, W, src, n, (float)v); break;                             \
  case KILN_DOUBLE: CONVERT_LOOP(double, dst, W, src, n, (double)v); break;                          \
  case KILN_FLOAT16: CONVERT_LOOP(uint16_t, dst, W, src, n, kiln_float_to_half((float)v)); break;    \
  case KILN_BFLOAT16: CONVERT_LOOP(uint16_t, dst, W, src, n, truncate_to_bfloat16((float)v)); break; \
  default: break;                                                                                    \
  }

/* Narrows n doubles into dtype t; integer targets saturate. */
static void store_from_double(const double *src, kiln_dtype t, void *dst, int64_t n) {
  switch (t) {
  case KILN_BOOL: CONVERT_LOOP(uint8_t, dst, double, src, n, v != 0); break;
  case KILN_UINT8: CONVERT_LOOP(uint8_t, dst, double, src, n, (uint8_t)f64_to_uint(v, UINT8_MAX)); break;
  case KILN_UINT16: CONVERT_LOOP(uint16_t, dst, double, src, n, (uint16_t)f64_to_uint(v, UINT16_MAX)); break;
  case KILN_UINT32: CONVERT_LOOP(uint32_t, dst, double, src, n, (uint32_t)f64_to_uint(v, UINT32_MAX)); break;
  case KILN_UINT64: CONVERT_LOOP(uint64_t, dst, double, src, n, f64_to_uint(v, UINT64_MAX)); break;
  case KILN_INT8: CONVERT_LOOP(int8_t, dst, double, src, n, (int8_t)f64_to_int(v, INT8_MIN, INT8_MAX)); break;
  case KILN_INT16: CONVERT_LOOP(int16_t, dst, double, src, n, (int16_t)f64_to_int(v, INT16_MIN, INT16_MAX)); break;
  case KILN_INT32: CONVERT_LOOP(int32_t, dst, double, src, n, (int32_t)f64_to_int(v, INT32_MIN, INT32_MAX)); break;
  case KILN_INT64: CONVERT_LOOP(int64_t, dst, double, src, n, f64_to_int(v, INT64_MIN, INT64_MAX)); break;
  case KILN_FLOAT: CONVERT_LOOP(float, dst, double, src, n, (float)v); break;
  case KILN_DOUBLE: CONVERT_LOOP(double, dst, double, src, n, v); break;
  case KILN_FLOAT16: CONVERT_LOOP(uint16_t, dst, double, src, n, kiln_float_to_half((float)v)); break;
  case KILN_BFLOAT16: CONVERT_LOOP(uint16_t, dst, double, src, n, truncate_to_bfloat16((float)v)); break;
  default: break;
  }
}

/* Narrows n values of w, in form `from`, into dtype t. */
static void store_wide(wide_kind from, const wide_block *w, kiln_dtype t, void *dst, int64_t n) {
  switch (from) {
  case WIDE_I64: STORE_FROM_INTEGERS(int64_t, w->i64, t, dst, n) break;
  case WIDE_U64: STORE_FROM_INTEGERS(uint64_t, w->u64, t, dst, n) break;
  case WIDE_F64: store_from_double(w->f64, t, dst, n); break;
  }
}

typedef struct cast_job {
  kiln_dtype from, to;
  const char *src;
  char *dst;
  size_t src_size, dst_size;
} cast_job;

static void cast_range(void *arg, int64_t begin, int64_t end) {
  const cast_job *j = arg;
  wide_block w;
  for (int64_t i = begin; i < end; i += BLOCK) {
    int64_t n = end - i < BLOCK ? end - i : BLOCK;
    load_wide(j->from, j->src + (size_t)i * j->src_size, &w, n);
    store_wide(wide_of(j->from), &w, j->to, j->dst + (size_t)i * j->dst_size, n);
  }
}

/* ------------------------------------------------------------------ strings -> numbers */

static const char *skip_spaces(const char *p) {
  while (isspace((unsigned char)*p)) p++;
  return p;
}

/* Parses s as a number for target t into element i of w (in the form wide_of(t)). Integer
 * targets read integers exactly and fall back to reading a float ("1e3", "2.5" -> 2); bools
 * read True/False or any number (non-zero is true). */
static kiln_status parse_number(const char *s, kiln_dtype t, wide_block *w, int i) {
  const char *p = skip_spaces(s);
  char *end = (char *)p;
  wide_kind k = wide_of(t);
  errno = 0;
  if (t == KILN_BOOL && (strncasecmp(p, "true", 4) == 0 || strncasecmp(p, "false", 5) == 0)) {
    w->u64[i] = *p == 't' || *p == 'T';
    end = (char *)p + (w->u64[i] ? 4 : 5);
  } else if (t != KILN_BOOL && k == WIDE_I64) {
    w->i64[i] = strtoll(p, &end, 10);
  } else if (t != KILN_BOOL && k == WIDE_U64 && *p != '-') {
    w->u64[i] = strtoull(p, &end, 10);
  }
  if (end == p || errno == ERANGE || *skip_spaces(end)) { /* not an integer (in range): a float */
    double v = strtod(p, &end);
    if (t == KILN_BOOL)
      w->u64[i] = v != 0;
    else if (k == WIDE_F64)
      w->f64[i] = v;
    else if (k == WIDE_U64)
      w->u64[i] = f64_to_uint(v, UINT64_MAX);
    else
      w->i64[i] = f64_to_int(v, INT64_MIN, INT64_MAX);
  }
  if (end == p || *skip_spaces(end))
    return kiln_error(KILN_INVALID_ARGUMENT, "cannot parse '%.64s' as %s", s, kiln_dtype_name(t));
  return NULL;
}

static kiln_status strings_to_numbers(char *const *src, kiln_tensor *y, int64_t count) {
  wide_block w;
  kiln_status s;
  for (int64_t i = 0; i < count; i += BLOCK) {
    int64_t n = count - i < BLOCK ? count - i : BLOCK;
    for (int64_t k = 0; k < n; k++)
      if ((s = parse_number(src[i + k] ? src[i + k] : "", y->dtype, &w, (int)k))) return s;
    store_wide(wide_of(y->dtype), &w, y->dtype, (char *)y->data + (size_t)i * kiln_dtype_size(y->dtype), n);
  }
  return NULL;
}

/* ------------------------------------------------------------------ numbers -> strings */

/* Whether the decimal text reads back as v in dtype t's precision. */
static int reads_back(const char *text, double v, kiln_dtype t) {
  switch (t) {
  case KILN_DOUBLE: return strtod(text, NULL) == v;
  case KILN_FLOAT16: return kiln_float_to_half(strtof(text, NULL)) == kiln_float_to_half((float)v);
  case KILN_BFLOAT16: return kiln_float_to_bfloat16(strtof(text, NULL)) == kiln_float_to_bfloat16((float)v);
  default: return strtof(text, NULL) == (float)v;
  }
}

enum { NUMBER_TEXT = 64 }; /* room for any number's text */

/* Formats v, a value of floating-point dtype t, as numpy's str() does (see the top of the file). */
static void format_float(double v, kiln_dtype t, char out[NUMBER_TEXT]) {
  const size_t size = NUMBER_TEXT;
  if (v != v) {
    snprintf(out, size, "nan");
    return;
  }
  if (isinf(v)) {
    snprintf(out, size, v < 0 ? "-inf" : "inf");
    return;
  }
  /* The shortest "%.*e" that reads back: d.ddde+XX. */
  char sci[40];
  int max_digits = t == KILN_DOUBLE ? 17 : t == KILN_FLOAT ? 9 : 5;
  for (int digits = 1; digits <= max_digits; digits++) {
    snprintf(sci, sizeof sci, "%.*e", digits - 1, v);
    if (reads_back(sci, v, t)) break;
  }
  const char *p = sci + (sci[0] == '-');
  char digits[24];
  int nd = 0;
  for (; *p && *p != 'e'; p++)
    if (isdigit((unsigned char)*p)) digits[nd++] = *p;
  while (nd > 1 && digits[nd - 1] == '0') nd--;
  digits[nd] = '\0';
  int exp = atoi(p + 1);
  size_t len = 0;
  if (signbit(v)) out[len++] = '-';
  if (v != 0 && (fabs(v) < 1e-4 || fabs(v) >= 1e16)) { /* d.ddde-XX */
    out[len++] = digits[0];
    if (nd > 1) len += (size_t)snprintf(out + len, size - len, ".%s", digits + 1);
    snprintf(out + len, size - len, "e%c%02d", exp < 0 ? '-' : '+', abs(exp));
    return;
  }
  if (exp < 0) { /* 0.000ddd */
    len += (size_t)snprintf(out + len, size - len, "0.");
    for (int z = 0; z < -exp - 1; z++) out[len++] = '0';
    snprintf(out + len, size - len, "%s", digits);
    return;
  }
  for (int d = 0; d <= exp; d++) out[len++] = d < nd ? digits[d] : '0'; /* ddd or ddd000 */
  snprintf(out + len, size - len, ".%s", nd > exp + 1 ? digits + exp + 1 : "0");
}

static kiln_status numbers_to_strings(const kiln_tensor *x, char **dst, int64_t count) {
  wide_block w;
  wide_kind k = wide_of(x->dtype);
  for (int64_t i = 0; i < count; i += BLOCK) {
    int64_t n = count - i < BLOCK ? count - i : BLOCK;
    load_wide(x->dtype, (const char *)x->data + (size_t)i * kiln_dtype_size(x->dtype), &w, n);
    for (int64_t e = 0; e < n; e++) {
      char text[NUMBER_TEXT];
      if (x->dtype == KILN_BOOL)
        snprintf(text, sizeof text, "%s", w.u64[e] ? "True" : "False");
      else if (k == WIDE_I64)
        snprintf(text, sizeof text, "%lld", (long long)w.i64[e]);
      else if (k == WIDE_U64)
        snprintf(text, sizeof text, "%llu", (unsigned long long)w.u64[e]);
      else
        format_float(w.f64[e], x->dtype, text);
      if (!(dst[i + e] = strdup(text))) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    }
  }
  return NULL;
}

/* ------------------------------------------------------------------ running */

static kiln_status copy_strings(char *const *src, char **dst, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (!(dst[i] = strdup(src[i] ? src[i] : ""))) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  return NULL;
}

static int castable(kiln_dtype t) {
  return t != KILN_UNDEFINED && t != KILN_COMPLEX64 && t != KILN_COMPLEX128 && (unsigned)t < KILN_DTYPE_COUNT &&
         kiln_dtype_size(t) > 0;
}

static kiln_status cast_to(kx_ctx *c, const kiln_tensor *x, kiln_dtype to) {
  kiln_status s;
  if (!castable(x->dtype)) return kiln_error(KILN_UNIMPLEMENTED, "cannot cast from %s", kiln_dtype_name(x->dtype));
  kiln_tensor *y;
  if ((s = kx_output(c, 0, to, x->rank, x->dims, &y))) return s;
  int64_t n = kiln_tensor_numel(x);
  if (n == 0) return NULL;
  if (x->dtype == to) {
    if (to == KILN_STRING) return copy_strings(x->data, y->data, n);
    memcpy(y->data, x->data, kiln_tensor_nbytes(x));
    return NULL;
  }
  if (x->dtype == KILN_STRING || to == KILN_STRING) {
    /* Numbers read and print in the "C" locale whatever the application set. */
    locale_t c_numeric = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    if (!c_numeric) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    locale_t saved = uselocale(c_numeric);
    s = x->dtype == KILN_STRING ? strings_to_numbers(x->data, y, n) : numbers_to_strings(x, y->data, n);
    uselocale(saved);
    freelocale(c_numeric);
    return s;
  }
  cast_job j = {x->dtype, to, x->data, y->data, kiln_dtype_size(x->dtype), kiln_dtype_size(to)};
  kx_parallel(c, n, 2, cast_range, &j);
  return NULL;
}

typedef struct cast_params {
  kiln_dtype to;
} cast_params;

static kiln_status cast_run(kx_ctx *c) {
  const kiln_tensor *x;
  kiln_status s;
  if ((s = kx_require(c, 0, &x))) return s;
  return cast_to(c, x, ((const cast_params *)c->node->params)->to);
}

static kiln_status cast_like_run(kx_ctx *c) {
  const kiln_tensor *x, *like;
  kiln_status s;
  if ((s = kx_require(c, 0, &x)) || (s = kx_require(c, 1, &like))) return s;
  if (!castable(like->dtype)) return kiln_error(KILN_UNIMPLEMENTED, "cannot cast to %s", kiln_dtype_name(like->dtype));
  return cast_to(c, x, like->dtype);
}

static kiln_status cast_prepare(kx_node *n) {
  if (n->n_in != 1) return kiln_error(KILN_INVALID_ARGUMENT, "Cast takes 1 input, got %d", n->n_in);
  if (!kx_attr_has(n->proto, "to")) return kiln_error(KILN_INVALID_ARGUMENT, "attribute 'to' is missing");
  kiln_dtype to;
  if (n->opset < 6) { /* `to` was a string: "FLOAT", "INT64", ... */
    char name[32];
    kx_attr_string(n->proto, "to", "", name, sizeof name);
    for (char *p = name; *p; p++) *p = (char)tolower((unsigned char)*p);
    to = kiln_dtype_from_name(name);
  } else {
    int64_t v = kx_attr_int(n->proto, "to", KILN_UNDEFINED);
    to = v > 0 && v < KILN_DTYPE_COUNT ? (kiln_dtype)v : KILN_UNDEFINED;
  }
  if (to == KILN_UNDEFINED) return kiln_error(KILN_INVALID_ARGUMENT, "attribute 'to' is not a known dtype");
  if (!castable(to)) return kiln_error(KILN_UNIMPLEMENTED, "cannot cast to %s", kiln_dtype_name(to));
  cast_params *p = malloc(sizeof *p);
  if (!p) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  p->to = to;
  n->params = p;
  return NULL;
}

static kiln_status cast_like_prepare(kx_node *n) {
  if (n->n_in != 2) return kiln_error(KILN_INVALID_ARGUMENT, "CastLike takes 2 inputs, got %d", n->n_in);
  return NULL;
}

const kx_op kx_ops_cast[] = {
    {"", "Cast", 1, 0, cast_prepare, cast_run, NULL, 0},
    {"", "CastLike", 15, 0, cast_like_prepare, cast_like_run, NULL, 0},
    {0},
};
