/* The JSON reader of the REST front ends: a strict RFC 8259 parser that builds cJSON trees.
 *
 * Request bodies are mostly numbers, and cJSON's own parser converts each through strtod (with a
 * locale lookup and an arbitrary-precision path): profiling `kiln serve` on the MLP at 64
 * connections put 30 % of the server's CPU time in strtod alone. This reader converts numbers of
 * up to 19 significant digits and small exponents exactly in double arithmetic (Clinger's fast
 * path, correctly rounded) and leaves only the rare rest to strtod; the tree it builds is
 * cJSON's, so the codecs walk it as before. tests/unit/test_serve_json.c and the fuzz target
 * fuzz_json check that every document it accepts gives the same tree as cJSON's parser. */
#include "serve/codec.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64

typedef struct reader {
  const char *start, *p, *end;
  const char *error; /* what is wrong at p; NULL while all is well */
  int oom;
  int depth;
  char *scratch; /* decoded strings */
  size_t scratch_cap;
} reader;

static void skip_space(reader *r) {
  while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) r->p++;
}

static cJSON *fail(reader *r, const char *what) {
  if (!r->error) r->error = what;
  return NULL;
}

static cJSON *made(reader *r, cJSON *item) {
  if (!item) {
    r->oom = 1;
    return fail(r, "out of memory");
  }
  return item;
}

/* 10^0 .. 10^22: exactly representable as doubles. */
static const double powers_of_ten[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                       1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static cJSON *parse_number(reader *r) {
  const char *s = r->p, *q = s;
  int negative = 0;
  if (q < r->end && *q == '-') negative = 1, q++;
  if (q >= r->end || *q < '0' || *q > '9') return fail(r, "a number needs a digit");
  uint64_t mantissa = 0;
  int digits = 0, exponent = 0;
  if (*q == '0') {
    q++;
    if (q < r->end && *q >= '0' && *q <= '9') return fail(r, "numbers do not start with 0");
  } else {
    for (; q < r->end && *q >= '0' && *q <= '9'; q++) {
      if (digits < 19) mantissa = mantissa * 10 + (uint64_t)(*q - '0'), digits++;
      else exponent++, digits++;
    }
  }
  if (q < r->end && *q == '.') {
    q++;
    if (q >= r->end || *q < '0' || *q > '9') return fail(r, "a digit must follow the decimal point");
    for (; q < r->end && *q >= '0' && *q <= '9'; q++) {
      if (mantissa == 0 && *q == '0') {
        exponent--;
        continue;
      }
      if (digits < 19) mantissa = mantissa * 10 + (uint64_t)(*q - '0'), digits++, exponent--;
      else digits++;
    }
  }
  if (q < r->end && (*q == 'e' || *q == 'E')) {
    q++;
    int sign = 1, e = 0;
    if (q < r->end && (*q == '+' || *q == '-')) sign = *q == '-' ? -1 : 1, q++;
    if (q >= r->end || *q < '0' || *q > '9') return fail(r, "a digit must follow the exponent");
    for (; q < r->end && *q >= '0' && *q <= '9'; q++)
      if (e < 100000) e = e * 10 + (*q - '0');
    exponent += sign * e;
  }
  double v;
  if (digits <= 19 && mantissa <= (1ull << 53) && exponent >= -22 && exponent <= 22) {
    v = (double)mantissa;
    v = exponent < 0 ? v / powers_of_ten[-exponent] : v * powers_of_ten[exponent];
  } else { /* many digits or a large exponent: the exact conversion */
    char small[64], *copy = (size_t)(q - s) < sizeof small ? small : malloc((size_t)(q - s) + 1);
    if (!copy) return made(r, NULL);
    memcpy(copy, s, (size_t)(q - s));
    copy[q - s] = '\0';
    v = strtod(copy, NULL);
    if (copy != small) free(copy);
    negative = 0; /* strtod read the sign */
  }
  r->p = q;
  return made(r, cJSON_CreateNumber(negative ? -v : v));
}

static int hex4(const char *p, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
    else return -1;
  }
  *out = v;
  return 0;
}

static size_t put_utf8(char *o, unsigned cp) {
  if (cp < 0x80) {
    o[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (char)(0xC0 | (cp >> 6)), o[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (char)(0xE0 | (cp >> 12)), o[1] = (char)(0x80 | ((cp >> 6) & 0x3F)), o[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (char)(0xF0 | (cp >> 18)), o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), o[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* Decodes the string at r->p (its opening quote) into r->scratch; returns it or NULL. */
static const char *parse_string(reader *r) {
  const char *q = r->p + 1;
  size_t need = 1;
  for (const char *t = q; t < r->end && *t != '"'; t++) need += *t == '\\' ? (t++, 4) : 1;
  if (need > r->scratch_cap) {
    char *s = realloc(r->scratch, need);
    if (!s) return (const char *)made(r, NULL);
    r->scratch = s;
    r->scratch_cap = need;
  }
  char *o = r->scratch;
  for (;;) {
    if (q >= r->end) return (const char *)fail(r, "unterminated string");
    unsigned char c = (unsigned char)*q;
    if (c == '"') break;
    if (c < 0x20) return (const char *)fail(r, "control character in a string");
    if (c != '\\') {
      *o++ = (char)c;
      q++;
      continue;
    }
    if (q + 1 >= r->end) return (const char *)fail(r, "unterminated string");
    char e = q[1];
    q += 2;
    switch (e) {
    case '"': *o++ = '"'; break;
    case '\\': *o++ = '\\'; break;
    case '/': *o++ = '/'; break;
    case 'b': *o++ = '\b'; break;
    case 'f': *o++ = '\f'; break;
    case 'n': *o++ = '\n'; break;
    case 'r': *o++ = '\r'; break;
    case 't': *o++ = '\t'; break;
    case 'u': {
      unsigned cp, low;
      if (r->end - q < 4 || hex4(q, &cp) != 0) return (const char *)fail(r, "bad \\u escape");
      q += 4;
      if (cp >= 0xDC00 && cp <= 0xDFFF) return (const char *)fail(r, "lone low surrogate in \\u escape");
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (r->end - q < 6 || q[0] != '\\' || q[1] != 'u' || hex4(q + 2, &low) != 0 || low < 0xDC00 || low > 0xDFFF)
          return (const char *)fail(r, "high surrogate without its low half in \\u escape");
        q += 6;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
      }
      if (cp == 0) return (const char *)fail(r, "\\u0000 in a string");
      o += put_utf8(o, cp);
      break;
    }
    default: return (const char *)fail(r, "bad escape in a string");
    }
  }
  *o = '\0';
  r->p = q + 1;
  return r->scratch;
}

static cJSON *parse_value(reader *r);

static cJSON *parse_container(reader *r, int object) {
  if (++r->depth > MAX_DEPTH) return fail(r, "nesting deeper than 64 levels");
  cJSON *c = made(r, object ? cJSON_CreateObject() : cJSON_CreateArray());
  if (!c) return NULL;
  r->p++;
  skip_space(r);
  char close = object ? '}' : ']';
  if (r->p < r->end && *r->p == close) {
    r->p++;
    r->depth--;
    return c;
  }
  for (;;) {
    skip_space(r);
    char *key = NULL;
    if (object) {
      if (r->p >= r->end || *r->p != '"') break;
      const char *k = parse_string(r);
      if (!k || !(key = strdup(k))) {
        if (k) made(r, NULL);
        break;
      }
      skip_space(r);
      if (r->p >= r->end || *r->p != ':') {
        free(key);
        fail(r, "expected ':' after an object key");
        break;
      }
      r->p++;
    }
    cJSON *item = parse_value(r);
    if (!item) {
      free(key);
      break;
    }
    int added = object ? cJSON_AddItemToObject(c, key, item) : cJSON_AddItemToArray(c, item);
    free(key);
    if (!added) {
      cJSON_Delete(item);
      made(r, NULL);
      break;
    }
    skip_space(r);
    if (r->p < r->end && *r->p == ',') {
      r->p++;
      continue;
    }
    if (r->p < r->end && *r->p == close) {
      r->p++;
      r->depth--;
      return c;
    }
    fail(r, object ? "expected ',' or '}' in an object" : "expected ',' or ']' in an array");
    break;
  }
  fail(r, object ? "expected a string key in an object" : "expected a value");
  cJSON_Delete(c);
  return NULL;
}

static int literal(reader *r, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0) return 0;
  r->p += n;
  return 1;
}

static cJSON *parse_value(reader *r) {
  skip_space(r);
  if (r->p >= r->end) return fail(r, "unexpected end of the document");
  char c = *r->p;
  if (c == '{' || c == '[') return parse_container(r, c == '{');
  if (c == '"') {
    const char *s = parse_string(r);
    return s ? made(r, cJSON_CreateString(s)) : NULL;
  }
  if (c == '-' || (c >= '0' && c <= '9')) return parse_number(r);
  if (literal(r, "true")) return made(r, cJSON_CreateTrue());
  if (literal(r, "false")) return made(r, cJSON_CreateFalse());
  if (literal(r, "null")) return made(r, cJSON_CreateNull());
  return fail(r, "unexpected character");
}

kiln_status kx_codec_parse_json(const char *body, size_t len, cJSON **out) {
  reader r = {.start = body, .p = body, .end = body + len};
  *out = parse_value(&r);
  if (*out) {
    skip_space(&r);
    if (r.p < r.end) {
      cJSON_Delete(*out);
      *out = NULL;
      fail(&r, "data after the value");
    }
  }
  free(r.scratch);
  if (*out) return NULL;
  if (r.oom) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory parsing %zu bytes of JSON", len);
  return kiln_error(KILN_INVALID_ARGUMENT, "invalid JSON at byte %zu of %zu: %s", (size_t)(r.p - r.start), len, r.error);
}
