/* Decimal text to numbers, fast and correctly rounded (internal to kiln): the JSON reader of the
 * REST front ends and the CSV source both convert through here, so kiln has one number parser. */
#ifndef KILN_CORE_NUMBER_H
#define KILN_CORE_NUMBER_H

#include <stdint.h>

/* Grammar switches for kx_parse_double. */
enum {
  KX_NUMBER_JSON = 0,        /* RFC 8259: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
  KX_NUMBER_LENIENT = 1 << 0, /* also a leading '+', leading zeros, ".5" and "5." (as strtod) */
  KX_NUMBER_SPECIAL = 1 << 1, /* also inf, infinity, nan (any case, with a sign) as pandas reads them */
};

/* Converts the number at p (not past end) into *out, correctly rounded as strtod: up to 19
 * significant digits with small exponents exactly in double arithmetic (Clinger's fast path),
 * the rare rest through strtod. Stops at the first character that cannot continue the number and
 * stores it in *stop. Returns NULL on success, else what is wrong (a static string); a number
 * beyond double's range is an error ("number out of range"). */
const char *kx_parse_double(const char *p, const char *end, int flags, double *out, const char **stop);

/* Parses the whole of p..end as a decimal integer with an optional sign ('+' or '-') into *out.
 * Returns 0 on success, -1 when the text is not an integer, -2 when it is out of int64's range. */
int kx_parse_int64(const char *p, const char *end, int64_t *out);

#endif
