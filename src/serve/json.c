/* The JSON reader of the REST front ends: a strict RFC 8259 parser that builds cJSON trees.
 *
 * Request bodies are mostly numbers, and cJSON's own parser converts each through strtod (with a
 * locale lookup and an arbitrary-precision path): profiling `kiln serve` on the MLP at 64
 * connections put 30 % of the server's CPU time in strtod alone. This reader converts numbers of
 * up to 19 significant digits and small exponents exactly in double arithmetic (Clinger's fast
 * path, correctly rounded: core/number.c, which the CSV source shares) and leaves only the rare
 * rest to strtod. The tree it builds is made of cJSON nodes, so the codecs walk it with cJSON's
 * accessors, but they live in one arena per document (a few allocations instead of one per
 * number) and are freed with kx_codec_free_json.
 * tests/unit/test_serve_json.c and the fuzz target fuzz_json check that every document it accepts
 * gives the same tree as cJSON's parser. */
#include "serve/codec.h"

#include "core/number.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64

/* The arena: chunks of nodes and strings, the first one holding the document header. */
typedef struct chunk {
  struct chunk *next;
  size_t used, cap;
  _Alignas(16) unsigned char data[];
} chunk;

typedef struct document {
  chunk *chunks;
  cJSON root;
} document;

typedef struct reader {
  const char *start, *p, *end;
  const char *error; /* what is wrong at p; NULL while all is well */
  int oom;
  int depth;
  chunk *chunks;
} reader;

static chunk *chunk_new(size_t cap) {
  chunk *c = malloc(sizeof *c + cap);
  if (c) c->next = NULL, c->used = 0, c->cap = cap;
  return c;
}

/* Zeroed memory from the arena, 8-byte aligned; NULL when memory runs out. */
static void *arena_alloc(reader *r, size_t size) {
  size = (size + 7) & ~(size_t)7;
  chunk *c = r->chunks;
  if (c->cap - c->used < size) {
    size_t cap = c->cap * 2 > size ? c->cap * 2 : size;
    chunk *n = chunk_new(cap);
    if (!n) return NULL;
    n->next = c;
    r->chunks = c = n;
  }
  void *p = c->data + c->used;
  c->used += size;
  memset(p, 0, size);
  return p;
}

static void skip_space(reader *r) {
  while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) r->p++;
}

static int fail(reader *r, const char *what) {
  if (!r->error) r->error = what;
  return -1;
}

static int out_of_memory(reader *r) {
  r->oom = 1;
  return fail(r, "out of memory");
}

static int parse_number(reader *r, cJSON *node) {
  double value;
  const char *stop;
  const char *error = kx_parse_double(r->p, r->end, KX_NUMBER_JSON, &value, &stop);
  if (error) return strcmp(error, "out of memory") == 0 ? out_of_memory(r) : fail(r, error);
  r->p = stop;
  node->type = cJSON_Number;
  node->valuedouble = value;
  /* as cJSON_CreateNumber saturates it */
  node->valueint = value >= INT_MAX ? INT_MAX : value <= (double)INT_MIN ? INT_MIN : (int)value;
  return 0;
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

/* Decodes the string at r->p (its opening quote) into the arena; returns it or NULL. */
static char *parse_string(reader *r) {
  const char *q = r->p + 1;
  size_t need = 1;
  for (const char *t = q; t < r->end && *t != '"'; t++) need += *t == '\\' ? (t++, 4) : 1;
  char *start = arena_alloc(r, need), *o = start;
  if (!start) return out_of_memory(r), NULL;
  for (;;) {
    if (q >= r->end) return fail(r, "unterminated string"), NULL;
    unsigned char c = (unsigned char)*q;
    if (c == '"') break;
    if (c < 0x20) return fail(r, "control character in a string"), NULL;
    if (c != '\\') {
      *o++ = (char)c;
      q++;
      continue;
    }
    if (q + 1 >= r->end) return fail(r, "unterminated string"), NULL;
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
      if (r->end - q < 4 || hex4(q, &cp) != 0) return fail(r, "bad \\u escape"), NULL;
      q += 4;
      if (cp >= 0xDC00 && cp <= 0xDFFF) return fail(r, "lone low surrogate in \\u escape"), NULL;
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (r->end - q < 6 || q[0] != '\\' || q[1] != 'u' || hex4(q + 2, &low) != 0 || low < 0xDC00 || low > 0xDFFF)
          return fail(r, "high surrogate without its low half in \\u escape"), NULL;
        q += 6;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
      }
      if (cp == 0) return fail(r, "\\u0000 in a string"), NULL;
      o += put_utf8(o, cp);
      break;
    }
    default: return fail(r, "bad escape in a string"), NULL;
    }
  }
  *o = '\0';
  r->p = q + 1;
  return start;
}

static int parse_value(reader *r, cJSON *node);

/* Fills `node` with the object or array at r->p, its items allocated in the arena. */
static int parse_container(reader *r, cJSON *node, int object) {
  if (++r->depth > MAX_DEPTH) return fail(r, "nesting deeper than 64 levels");
  node->type = object ? cJSON_Object : cJSON_Array;
  r->p++;
  skip_space(r);
  char close = object ? '}' : ']';
  if (r->p < r->end && *r->p == close) {
    r->p++;
    r->depth--;
    return 0;
  }
  cJSON *last = NULL;
  for (;;) {
    skip_space(r);
    cJSON *item = arena_alloc(r, sizeof *item);
    if (!item) return out_of_memory(r);
    if (object) {
      if (r->p >= r->end || *r->p != '"') return fail(r, "expected a string key in an object");
      if (!(item->string = parse_string(r))) return -1;
      skip_space(r);
      if (r->p >= r->end || *r->p != ':') return fail(r, "expected ':' after an object key");
      r->p++;
    }
    if (parse_value(r, item) != 0) return -1;
    if (object) item->type |= cJSON_StringIsConst;
    /* cJSON's list: next links forward, prev links back, and the first item's prev is the last */
    if (last) last->next = item, item->prev = last;
    else node->child = item;
    node->child->prev = item;
    last = item;
    skip_space(r);
    if (r->p < r->end && *r->p == ',') {
      r->p++;
      continue;
    }
    if (r->p < r->end && *r->p == close) {
      r->p++;
      r->depth--;
      return 0;
    }
    return fail(r, object ? "expected ',' or '}' in an object" : "expected ',' or ']' in an array");
  }
}

static int literal(reader *r, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0) return 0;
  r->p += n;
  return 1;
}

static int parse_value(reader *r, cJSON *node) {
  skip_space(r);
  if (r->p >= r->end) return fail(r, "unexpected end of the document");
  char c = *r->p;
  if (c == '{' || c == '[') return parse_container(r, node, c == '{');
  if (c == '"') {
    node->type = cJSON_String;
    return (node->valuestring = parse_string(r)) ? 0 : -1;
  }
  if (c == '-' || (c >= '0' && c <= '9')) return parse_number(r, node);
  if (literal(r, "true")) node->type = cJSON_True;
  else if (literal(r, "false")) node->type = cJSON_False;
  else if (literal(r, "null")) node->type = cJSON_NULL;
  else return fail(r, "unexpected character");
  return 0;
}

static void free_chunks(chunk *c) {
  while (c) {
    chunk *next = c->next;
    free(c);
    c = next;
  }
}

kiln_status kx_codec_parse_json(const char *body, size_t len, cJSON **out) {
  *out = NULL;
  /* numbers take a node of 64 bytes for every 2 to 10 bytes of text */
  size_t first = len < ((size_t)1 << 20) ? 8 * len + 4096 : ((size_t)8 << 20);
  reader r = {.start = body, .p = body, .end = body + len, .chunks = chunk_new(first)};
  if (!r.chunks) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory parsing %zu bytes of JSON", len);
  document *doc = arena_alloc(&r, sizeof *doc);
  int rc = parse_value(&r, &doc->root);
  if (rc == 0) {
    skip_space(&r);
    if (r.p < r.end) rc = fail(&r, "data after the value");
  }
  if (rc != 0) {
    free_chunks(r.chunks);
    if (r.oom) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory parsing %zu bytes of JSON", len);
    return kiln_error(KILN_INVALID_ARGUMENT, "invalid JSON at byte %zu of %zu: %s", (size_t)(r.p - r.start), len, r.error);
  }
  doc->chunks = r.chunks;
  *out = &doc->root;
  return NULL;
}

void kx_codec_free_json(cJSON *root) {
  if (root) free_chunks(((document *)((char *)root - offsetof(document, root)))->chunks);
}
