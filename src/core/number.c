/* Decimal text to numbers: one correctly rounded parser with Clinger's fast path, shared by the
 * JSON reader (serve) and the CSV source (data).
 *
 * Request bodies and CSV files are mostly numbers, and strtod (a locale lookup and an
 * arbitrary-precision path on every call) dominated both: profiling `kiln serve` on the MLP at 64
 * connections put 30 % of the server's CPU time in it. A mantissa of up to 19 significant digits
 * that fits 2^53, scaled by 10^-22..10^22, converts exactly in double arithmetic (both operands are
 * exact and IEEE division/multiplication round once), so only longer or larger numbers go to
 * strtod. */
#include "core/number.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* 10^0 .. 10^22: exactly representable as doubles. */
static const double powers_of_ten[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                       1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* Case-insensitive match of the ASCII word at p; returns its length or 0. */
static size_t word_at(const char *p, const char *end, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(end - p) < n) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = p[i];
    if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
    if (c != word[i]) return 0;
  }
  return n;
}

const char *kx_parse_double(const char *p, const char *end, int flags, double *out, const char **stop) {
  const char *s = p, *q = p;
  int negative = 0;
  *stop = p;
  if (q < end && *q == '-') negative = 1, q++;
  else if (q < end && *q == '+' && (flags & KX_NUMBER_LENIENT)) q++;
  if ((flags & KX_NUMBER_SPECIAL) && q < end && !is_digit(*q) && *q != '.') {
    size_t n;
    if ((n = word_at(q, end, "infinity")) || (n = word_at(q, end, "inf"))) {
      *out = negative ? -INFINITY : INFINITY;
      *stop = q + n;
      return NULL;
    }
    if ((n = word_at(q, end, "nan"))) {
      *out = negative ? -NAN : NAN;
      *stop = q + n;
      return NULL;
    }
  }
  /* One pass values the digits as it finds them. Past 19 digits the mantissa wraps (unsigned:
   * defined) and is not used: such numbers go to strtod. */
  uint64_t mantissa = 0;
  const char *int_start = q;
  while (q < end && is_digit(*q)) mantissa = mantissa * 10 + (uint64_t)(*q++ - '0');
  size_t n_int = (size_t)(q - int_start), n_frac = 0;
  if (!(flags & KX_NUMBER_LENIENT)) {
    if (n_int == 0) return "a number needs a digit";
    if (n_int > 1 && *int_start == '0') return "numbers do not start with 0";
  }
  const char *frac_start = q;
  if (q < end && *q == '.') {
    frac_start = ++q;
    while (q < end && is_digit(*q)) mantissa = mantissa * 10 + (uint64_t)(*q++ - '0');
    n_frac = (size_t)(q - frac_start);
    if (n_frac == 0 && !((flags & KX_NUMBER_LENIENT) && n_int))
      return n_int ? "a digit must follow the decimal point" : "a number needs a digit";
  }
  if (n_int + n_frac == 0) return "a number needs a digit";
  int exponent = 0;
  if (q < end && (*q == 'e' || *q == 'E')) {
    q++;
    int sign = 1, e = 0;
    if (q < end && (*q == '+' || *q == '-')) sign = *q == '-' ? -1 : 1, q++;
    if (q >= end || !is_digit(*q)) return "a digit must follow the exponent";
    for (; q < end && is_digit(*q); q++)
      if (e < 100000) e = e * 10 + (*q - '0');
    exponent = sign * e;
  }
  int exact = n_int + n_frac <= 19; /* leading zeros count too: harmless, they add nothing */
  if (exact) exponent -= (int)n_frac;
  double v;
  if (exact && mantissa <= (1ull << 53) && exponent >= -22 && exponent <= 22) {
    v = (double)mantissa;
    v = exponent < 0 ? v / powers_of_ten[-exponent] : v * powers_of_ten[exponent];
    if (negative) v = -v;
  } else if (exact && mantissa == 0) {
    v = negative ? -0.0 : 0.0;
  } else { /* many digits or a large exponent: the exact conversion */
    size_t n = (size_t)(q - s);
    char small[64], *copy = n < sizeof small ? small : malloc(n + 1);
    if (!copy) return "out of memory";
    memcpy(copy, s, n);
    copy[n] = '\0';
    v = strtod(copy, NULL); /* reads the sign itself */
    if (copy != small) free(copy);
    if (isinf(v)) return "number out of range";
  }
  *out = v;
  *stop = q;
  return NULL;
}

int kx_parse_int64(const char *p, const char *end, int64_t *out) {
  int negative = 0;
  if (p < end && (*p == '-' || *p == '+')) negative = *p == '-', p++;
  if (p >= end) return -1;
  uint64_t v = 0;
  const uint64_t limit = negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
  int overflow = 0;
  for (; p < end; p++) {
    if (!is_digit(*p)) return -1;
    unsigned d = (unsigned)(*p - '0');
    if (v > (limit - d) / 10) overflow = 1;
    else v = v * 10 + d;
  }
  if (overflow) return -2;
  *out = negative ? (v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v) : (int64_t)v;
  return 0;
}
