/* W3C Trace Context (traceparent, tracestate), trace and span ids, the sampling decision and the
 * span record: everything about a trace that runs per request and must not allocate. */
#include "kiln/obs.h"

#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "core/buf.h"

/* ---------------------------------------------------------------- hex */

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1; /* upper case too: the spec allows lower-case hex only */
}

/* Decodes exactly n bytes from 2n lower-case hex characters; -1 on any other character. */
static int parse_hex(const char *text, uint8_t *out, size_t n) {
  for (size_t i = 0; i < n; i++) {
    int hi = hex_value(text[2 * i]), lo = hi < 0 ? -1 : hex_value(text[2 * i + 1]);
    if (lo < 0) return -1;
    out[i] = (uint8_t)(hi << 4 | lo);
  }
  return 0;
}

static int all_zero(const uint8_t *id, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (id[i]) return 0;
  return 1;
}

char *kiln_trace_hex(const uint8_t *id, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[id[i] >> 4];
    out[2 * i + 1] = digits[id[i] & 15];
  }
  out[2 * n] = '\0';
  return out;
}

/* ---------------------------------------------------------------- traceparent */

static int fail(const char **why, const char *reason) {
  if (why) *why = reason;
  return -1;
}

/* Layout: version(2) '-' trace-id(32) '-' parent-id(16) '-' flags(2) = 55 characters. */
int kiln_traceparent_parse(const char *text, kiln_trace_context *out, const char **why) {
  if (!text) return fail(why, "no traceparent");
  size_t len = strnlen(text, 56);
  if (len < 55) return fail(why, "traceparent is shorter than the 55 characters of version 00");
  uint8_t version;
  if (parse_hex(text, &version, 1) != 0 || text[2] != '-')
    return fail(why, "traceparent version must be 2 lower-case hex digits followed by '-'");
  if (version == 0xff) return fail(why, "traceparent version ff is invalid");
  if (version == 0 && len != 55) return fail(why, "a version-00 traceparent must be exactly 55 characters");
  if (version > 0 && len > 55 && text[55] != '-')
    return fail(why, "a future-version traceparent must continue with '-' after its flags");
  kiln_trace_context c;
  if (parse_hex(text + 3, c.trace_id, 16) != 0 || text[35] != '-')
    return fail(why, "traceparent trace-id must be 32 lower-case hex digits followed by '-'");
  if (parse_hex(text + 36, c.span_id, 8) != 0 || text[52] != '-')
    return fail(why, "traceparent parent-id must be 16 lower-case hex digits followed by '-'");
  if (parse_hex(text + 53, &c.flags, 1) != 0) return fail(why, "traceparent flags must be 2 lower-case hex digits");
  if (all_zero(c.trace_id, 16)) return fail(why, "traceparent trace-id is all zeros");
  if (all_zero(c.span_id, 8)) return fail(why, "traceparent parent-id is all zeros");
  *out = c;
  return 0;
}

void kiln_traceparent_format(const kiln_trace_context *c, char out[KILN_TRACEPARENT_SIZE]) {
  char trace[33], span[17], flags[3];
  kiln_trace_hex(c->trace_id, 16, trace);
  kiln_trace_hex(c->span_id, 8, span);
  kiln_trace_hex(&c->flags, 1, flags);
  memcpy(out, "00-", 3);
  memcpy(out + 3, trace, 32);
  out[35] = '-';
  memcpy(out + 36, span, 16);
  out[52] = '-';
  memcpy(out + 53, flags, 3); /* with the NUL */
}

/* ---------------------------------------------------------------- tracestate */

static int is_lcalpha(char c) { return c >= 'a' && c <= 'z'; }
static int is_digit(char c) { return c >= '0' && c <= '9'; }
static int is_key_char(char c) { return is_lcalpha(c) || is_digit(c) || c == '_' || c == '-' || c == '*' || c == '/'; }
/* nblk-chr: printable ASCII except ',' and '='. */
static int is_value_char(char c) { return c >= 0x21 && c <= 0x7e && c != ',' && c != '='; }

/* A key: simple-key = lcalpha 0*255(keychar), or multi-tenant-key = tenant-id "@" system-id with
 * tenant-id = (lcalpha / DIGIT) 0*240(keychar) and system-id = lcalpha 0*13(keychar). */
static int valid_key(const char *k, size_t n) {
  const char *at = memchr(k, '@', n);
  if (!at) {
    if (n < 1 || n > 256 || !is_lcalpha(k[0])) return 0;
    for (size_t i = 1; i < n; i++)
      if (!is_key_char(k[i])) return 0;
    return 1;
  }
  size_t tn = (size_t)(at - k), sn = n - tn - 1;
  if (tn < 1 || tn > 241 || !(is_lcalpha(k[0]) || is_digit(k[0]))) return 0;
  if (sn < 1 || sn > 14 || !is_lcalpha(at[1])) return 0;
  for (size_t i = 1; i < tn; i++)
    if (!is_key_char(k[i])) return 0;
  for (size_t i = 2; i < sn + 1; i++)
    if (!is_key_char(at[i])) return 0;
  return 1;
}

/* A value: 0*255(chr) nblk-chr, chr being nblk-chr or a space; so 1..256 characters, the last not a
 * space. */
static int valid_value(const char *v, size_t n) {
  if (n < 1 || n > 256 || v[n - 1] == ' ') return 0;
  for (size_t i = 0; i < n; i++)
    if (!is_value_char(v[i]) && v[i] != ' ') return 0;
  return 1;
}

static int is_ows(char c) { return c == ' ' || c == '\t'; }

int kiln_tracestate_check(const char *text, const char **why) {
  if (!text) return fail(why, "no tracestate");
  size_t len = strnlen(text, KILN_TRACESTATE_MAX_CHARS + 1);
  if (len > KILN_TRACESTATE_MAX_CHARS) return fail(why, "tracestate is longer than 512 characters");
  struct {
    const char *key;
    size_t n;
  } keys[KILN_TRACESTATE_MAX_MEMBERS];
  int members = 0;
  const char *p = text, *end = text + len;
  for (;;) {
    const char *comma = memchr(p, ',', (size_t)(end - p));
    const char *stop = comma ? comma : end, *a = p, *b = stop;
    while (a < b && is_ows(*a)) a++;
    while (b > a && is_ows(b[-1])) b--;
    if (a < b) { /* an empty member is allowed and does not count */
      const char *eq = memchr(a, '=', (size_t)(b - a));
      if (!eq) return fail(why, "a tracestate list member has no '='");
      if (!valid_key(a, (size_t)(eq - a))) return fail(why, "a tracestate key is not a valid W3C key");
      if (!valid_value(eq + 1, (size_t)(b - eq - 1))) return fail(why, "a tracestate value is not a valid W3C value");
      if (members == KILN_TRACESTATE_MAX_MEMBERS) return fail(why, "tracestate has more than 32 list members");
      for (int i = 0; i < members; i++)
        if (keys[i].n == (size_t)(eq - a) && memcmp(keys[i].key, a, keys[i].n) == 0)
          return fail(why, "a tracestate key appears twice");
      keys[members].key = a;
      keys[members].n = (size_t)(eq - a);
      members++;
    }
    if (!comma) break;
    p = comma + 1;
  }
  return 0;
}

/* ---------------------------------------------------------------- ids and sampling */

/* xorshift64* per thread: ids need to be unique and unpredictable enough for a trace, not secret;
 * a lock-free generator keeps id creation off every shared cache line. */
static _Thread_local uint64_t rng_state;

static uint64_t rng_next(void) {
  if (rng_state == 0) {
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed || seed == 0) {
      struct timespec ts; /* no entropy yet (early boot): the clock and this thread's stack */
      clock_gettime(CLOCK_REALTIME, &ts);
      seed = ((uint64_t)ts.tv_nsec << 32) ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)&seed;
    }
    rng_state = seed ? seed : 0x9e3779b97f4a7c15ull;
  }
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545f4914f6cdd1dull;
}

void kiln_trace_random_id(uint8_t *out, size_t n) {
  do {
    for (size_t i = 0; i < n; i += 8) {
      uint64_t r = rng_next();
      size_t k = n - i < 8 ? n - i : 8;
      memcpy(out + i, &r, k);
    }
  } while (all_zero(out, n));
}

/* OpenTelemetry's consistent probability sampling: the trace id's last 56 bits R are random, and
 * a trace is kept when R >= T, the rejection threshold (1 - ratio) * 2^56; so a higher ratio keeps
 * a superset of the traces a lower one keeps, in kiln and in OpenTelemetry SDKs alike. */
int kiln_trace_sampled(const uint8_t trace_id[16], double ratio) {
  if (!(ratio > 0)) return 0; /* NaN too */
  if (ratio >= 1) return 1;
  uint64_t r = 0;
  for (int i = 9; i < 16; i++) r = r << 8 | trace_id[i];
  uint64_t threshold = (uint64_t)((1 - ratio) * 72057594037927936.0); /* 2^56; < 2^56 as ratio > 0 */
  return r >= threshold;
}

/* ---------------------------------------------------------------- spans */

int64_t kiln_trace_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Copies at most size-1 bytes of s into dst as UTF-8: a string that is not UTF-8 has its bytes
 * >= 0x80 replaced by '?', and a cut never splits a character. Returns the bytes written. */
static size_t copy_utf8(char *dst, size_t size, const char *s) {
  size_t n = strlen(s);
  if (n > size - 1) n = size - 1;
  int ok = kx_is_utf8(s, strlen(s));
  memcpy(dst, s, n);
  if (!ok) {
    for (size_t i = 0; i < n; i++)
      if ((unsigned char)dst[i] >= 0x80) dst[i] = '?';
  } else {
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80) n--; /* s[n] continues a character */
  }
  dst[n] = '\0';
  return n;
}

void kiln_span_init(kiln_span *s, const uint8_t trace_id[16], const uint8_t span_id[8],
                    const uint8_t parent_span_id[8], const char *name, kiln_span_kind kind) {
  memcpy(s->trace_id, trace_id, 16);
  memcpy(s->span_id, span_id, 8);
  if (parent_span_id) memcpy(s->parent_span_id, parent_span_id, 8);
  else memset(s->parent_span_id, 0, 8);
  copy_utf8(s->name, sizeof s->name, name);
  s->kind = kind;
  s->start_ns = s->end_ns = 0;
  s->status = KILN_SPAN_UNSET;
  s->status_message[0] = '\0';
  s->n_attributes = 0;
  s->text_len = 0;
}

/* Puts a string into the span's text; returns its offset, or -1 when fewer than `min` bytes of it
 * (NUL included) fit. */
static int put_text(kiln_span *s, const char *text, size_t min) {
  size_t room = sizeof s->text - s->text_len;
  if (room < min || room < 2) return -1;
  size_t at = s->text_len;
  s->text_len = (uint16_t)(at + copy_utf8(s->text + at, room, text) + 1);
  return (int)at;
}

static int add_attribute(kiln_span *s, const char *key) {
  if (s->n_attributes == KILN_SPAN_MAX_ATTRIBUTES) return -1;
  uint16_t saved = s->text_len;
  int k = put_text(s, key, strlen(key) + 1); /* a key is never cut */
  if (k < 0) return -1;
  if (sizeof s->text - s->text_len < 2) { /* no room for even a one-byte value */
    s->text_len = saved;
    return -1;
  }
  s->attributes[s->n_attributes].key = (uint16_t)k;
  return s->n_attributes;
}

int kiln_span_set_string(kiln_span *s, const char *key, const char *value) {
  int i = add_attribute(s, key);
  if (i < 0) return -1;
  int v = put_text(s, value ? value : "", 1);
  s->attributes[i].value = (uint16_t)v; /* room was checked by add_attribute */
  s->attributes[i].is_int = 0;
  s->attributes[i].int_value = 0;
  s->n_attributes++;
  return 0;
}

int kiln_span_set_int(kiln_span *s, const char *key, int64_t value) {
  int i = add_attribute(s, key);
  if (i < 0) return -1;
  s->attributes[i].value = 0;
  s->attributes[i].is_int = 1;
  s->attributes[i].int_value = value;
  s->n_attributes++;
  return 0;
}

void kiln_span_set_status(kiln_span *s, kiln_span_status status, const char *message) {
  s->status = status;
  copy_utf8(s->status_message, sizeof s->status_message, message ? message : "");
}
