/* protobuf text format into a schema-less tree (textproto.h): a one-token-lookahead lexer and a
 * recursive-descent parser whose recursion is capped at KX_TP_MAX_DEPTH. */
#include "serve/textproto.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"

typedef enum tok_kind { TOK_EOF, TOK_IDENT, TOK_INT, TOK_STRING, TOK_SYMBOL } tok_kind;

typedef struct tok {
  tok_kind kind;
  int line, col;
  size_t start, end; /* the token's text; a string's includes its quotes */
  int64_t i;         /* TOK_INT */
  char sym;          /* TOK_SYMBOL */
} tok;

typedef struct reader {
  const char *text;
  size_t len, pos;
  int line, col; /* of text[pos] */
  const char *name;
  tok t; /* the current token */
  int items;
} reader;

kiln_status kx_tp_error(const char *name, int line, int col, kiln_code code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  kiln_status s = kiln_errorv(code, fmt, ap);
  va_end(ap);
  return kiln_status_prefix(s, "%s:%d:%d: ", name, line, col);
}

const char *kx_tp_kind_name(kx_tp_kind kind) {
  switch (kind) {
  case KX_TP_INT: return "an integer";
  case KX_TP_STRING: return "a string";
  case KX_TP_IDENT: return "a bare word";
  case KX_TP_MESSAGE: return "a message";
  }
  return "a value";
}

static kiln_status out_of_memory(void) { return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory"); }

/* ---------------------------------------------------------------- lexer */

static int is_digit(int c) { return c >= '0' && c <= '9'; }
static int is_ident_start(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static int is_ident_char(int c) { return is_ident_start(c) || is_digit(c); }
static int hex_value(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Moves past text[pos], keeping line and column (both saturate rather than overflow). */
static void step(reader *r) {
  if (r->text[r->pos] == '\n') {
    if (r->line < INT_MAX) r->line++;
    r->col = 1;
  } else if (r->col < INT_MAX) {
    r->col++;
  }
  r->pos++;
}

static kiln_status error_here(const reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static kiln_status error_here(const reader *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  kiln_status s = kiln_errorv(KILN_INVALID_ARGUMENT, fmt, ap);
  va_end(ap);
  return kiln_status_prefix(s, "%s:%d:%d: ", r->name, r->t.line, r->t.col);
}

/* Decodes the body of a string literal, s[0..n) without its quotes, into out (NULL: only checks
 * it) and returns the number of bytes written; on a bad escape returns an error message and sets
 * *at to the escape's offset. The decoded text is never longer than the body. */
static const char *unescape(const char *s, size_t n, char *out, size_t *written, size_t *at) {
  size_t w = 0;
  for (size_t i = 0; i < n;) {
    unsigned char c = (unsigned char)s[i];
    if (c != '\\') {
      if (out) out[w] = (char)c;
      w++, i++;
      continue;
    }
    *at = i;
    if (i + 1 >= n) return "a backslash ends the string";
    char e = s[i + 1];
    i += 2;
    int v;
    switch (e) {
    case 'n': v = '\n'; break;
    case 't': v = '\t'; break;
    case 'r': v = '\r'; break;
    case 'a': v = '\a'; break;
    case 'b': v = '\b'; break;
    case 'f': v = '\f'; break;
    case 'v': v = '\v'; break;
    case '\\': v = '\\'; break;
    case '\'': v = '\''; break;
    case '"': v = '"'; break;
    case '?': v = '?'; break;
    case 'x':
    case 'X': {
      int k = 0;
      v = 0;
      while (k < 2 && i < n && hex_value((unsigned char)s[i]) >= 0)
        v = v * 16 + hex_value((unsigned char)s[i]), i++, k++;
      if (k == 0) return "\\x must be followed by one or two hex digits";
      break;
    }
    default:
      if (e < '0' || e > '7')
        return "unknown escape sequence (kiln knows \\n \\t \\r \\a \\b \\f \\v \\\\ \\' \\\" \\? \\xNN \\NNN)";
      v = e - '0';
      for (int k = 1; k < 3 && i < n && s[i] >= '0' && s[i] <= '7'; k++) v = v * 8 + (s[i] - '0'), i++;
      if (v > 0377) return "octal escape above \\377";
      break;
    }
    if (out) out[w] = (char)v;
    w++;
  }
  *written = w;
  return NULL;
}

/* The current token is a number's text: checks it is an integer kiln accepts and converts it. */
static kiln_status lex_integer(reader *r) {
  tok *t = &r->t;
  const char *s = r->text + t->start;
  size_t n = t->end - t->start, k = 0;
  int shown = n > 40 ? 40 : (int)n;
  int negative = s[0] == '-';
  if (negative) k = 1;
  unsigned base = 10;
  if (n - k > 2 && s[k] == '0' && (s[k + 1] == 'x' || s[k + 1] == 'X')) base = 16, k += 2;
  uint64_t v = 0;
  for (size_t j = k; j < n; j++) {
    int d = hex_value((unsigned char)s[j]);
    if (d < 0 || (unsigned)d >= base)
      return error_here(r, "'%.*s' is not an integer (kiln's configuration files take decimal or 0x hex integers)",
                        shown, s);
    if (v > (UINT64_MAX - (unsigned)d) / base) return error_here(r, "integer '%.*s' is out of range", shown, s);
    v = v * base + (unsigned)d;
  }
  if (base == 10 && n - k > 1 && s[k] == '0')
    return error_here(r, "integer '%.*s' has a leading zero: octal is not supported, write it in decimal", shown, s);
  uint64_t limit = negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
  if (v > limit) return error_here(r, "integer '%.*s' is out of range", shown, s);
  if (!negative) t->i = (int64_t)v;
  else if (v == (uint64_t)INT64_MAX + 1) t->i = INT64_MIN;
  else t->i = -(int64_t)v;
  t->kind = TOK_INT;
  return NULL;
}

/* Finds the end of a quoted string (which may not cross a line) and checks its escapes. */
static kiln_status lex_string(reader *r) {
  tok *t = &r->t;
  char quote = r->text[r->pos];
  size_t i = r->pos + 1;
  for (;;) {
    if (i >= r->len) return error_here(r, "string not closed: the input ends inside it");
    char c = r->text[i];
    if (c == '\n') return error_here(r, "string not closed on its line (strings cannot span lines)");
    if (c == quote) break;
    if (c == '\\') {
      if (i + 1 >= r->len) return error_here(r, "string not closed: the input ends inside it");
      if (r->text[i + 1] == '\n') return error_here(r, "string not closed on its line (strings cannot span lines)");
      i++;
    }
    i++;
  }
  size_t written, at = 0;
  const char *bad = unescape(r->text + r->pos + 1, i - r->pos - 1, NULL, &written, &at);
  if (bad) {
    /* the string lies on one line, so the escape's column is an offset from its start */
    size_t col = (size_t)t->col + 1 + at;
    return kx_tp_error(r->name, t->line, col > INT_MAX ? INT_MAX : (int)col, KILN_INVALID_ARGUMENT, "%s", bad);
  }
  while (r->pos <= i) step(r);
  t->kind = TOK_STRING;
  return NULL;
}

/* Reads the next token into r->t. */
static kiln_status lex(reader *r) {
  while (r->pos < r->len) {
    char c = r->text[r->pos];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f') {
      step(r);
    } else if (c == '#') {
      while (r->pos < r->len && r->text[r->pos] != '\n') step(r);
    } else {
      break;
    }
  }
  tok *t = &r->t;
  memset(t, 0, sizeof *t);
  t->line = r->line;
  t->col = r->col;
  t->start = r->pos;
  if (r->pos >= r->len) {
    t->kind = TOK_EOF;
    t->end = r->pos;
    return NULL;
  }
  unsigned char c = (unsigned char)r->text[r->pos];
  kiln_status s = NULL;
  if (is_ident_start(c)) {
    while (r->pos < r->len && is_ident_char((unsigned char)r->text[r->pos])) step(r);
    t->kind = TOK_IDENT;
  } else if (is_digit(c) || (c == '-' && r->pos + 1 < r->len && is_digit((unsigned char)r->text[r->pos + 1]))) {
    step(r);
    /* take what a float or a typo would run on to, so that the error shows all of it */
    while (r->pos < r->len && (is_ident_char((unsigned char)r->text[r->pos]) || r->text[r->pos] == '.')) step(r);
    t->end = r->pos;
    s = lex_integer(r);
  } else if (c == '"' || c == '\'') {
    s = lex_string(r);
  } else if (c != 0 && strchr("{}<>[]:,;./", c)) {
    step(r);
    t->kind = TOK_SYMBOL;
    t->sym = (char)c;
  } else if (c > 0x20 && c < 0x7f) {
    return error_here(r, "unexpected character '%c'", c);
  } else {
    return error_here(r, "unexpected byte 0x%02x outside a string", c);
  }
  t->end = r->pos;
  return s;
}

static int is_symbol(const reader *r, char sym) { return r->t.kind == TOK_SYMBOL && r->t.sym == sym; }

/* The current token, for errors: "'}'", "'foo'", "a string", "the end of the input". */
static const char *describe(const reader *r, char *buf, size_t size) {
  const tok *t = &r->t;
  switch (t->kind) {
  case TOK_EOF: return "the end of the input";
  case TOK_STRING: return "a string";
  case TOK_SYMBOL: snprintf(buf, size, "'%c'", t->sym); return buf;
  case TOK_IDENT:
  case TOK_INT: {
    size_t n = t->end - t->start;
    snprintf(buf, size, "'%.*s'", n > 40 ? 40 : (int)n, r->text + t->start);
    return buf;
  }
  }
  return "?";
}

/* ---------------------------------------------------------------- parser */

static kiln_status count_item(reader *r) {
  if (++r->items <= KX_TP_MAX_ITEMS) return NULL;
  return kx_tp_error(r->name, r->t.line, r->t.col, KILN_RESOURCE_EXHAUSTED,
                     "more than %d fields and values: the document is too large", KX_TP_MAX_ITEMS);
}

/* Grows an array of `*cap` elements of `size` bytes to hold one more; caps stay below
 * KX_TP_MAX_ITEMS, so nothing overflows. */
static int grow(void **items, int *cap, int n, size_t size) {
  if (n < *cap) return 1;
  int c = *cap ? *cap * 2 : 4;
  void *p = realloc(*items, (size_t)c * size);
  if (!p) return 0;
  *items = p;
  *cap = c;
  return 1;
}

static kiln_status add_field(reader *r, kx_tp_value *msg, kx_tp_field **out) {
  kiln_status s = count_item(r);
  if (s) return s;
  if (!grow((void **)&msg->fields, &msg->cap_fields, msg->n_fields, sizeof *msg->fields)) return out_of_memory();
  *out = &msg->fields[msg->n_fields++];
  memset(*out, 0, sizeof **out);
  return NULL;
}

static kiln_status add_value(reader *r, kx_tp_field *f, kx_tp_value **out) {
  kiln_status s = count_item(r);
  if (s) return s;
  if (!grow((void **)&f->values, &f->cap_values, f->n_values, sizeof *f->values)) return out_of_memory();
  *out = &f->values[f->n_values++];
  memset(*out, 0, sizeof **out);
  return NULL;
}

static char *copy_text(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d) {
    memcpy(d, s, n);
    d[n] = '\0';
  }
  return d;
}

/* A field name: an identifier, or an extension or Any type name in brackets. */
static kiln_status field_name(reader *r, kx_tp_field *f) {
  char what[64];
  if (r->t.kind == TOK_IDENT) {
    if (!(f->name = copy_text(r->text + r->t.start, r->t.end - r->t.start))) return out_of_memory();
    return lex(r);
  }
  if (!is_symbol(r, '[')) return error_here(r, "expected a field name, got %s", describe(r, what, sizeof what));
  kx_buf b = {0};
  kx_buf_putc(&b, '[');
  kiln_status s = lex(r);
  while (!s && (r->t.kind == TOK_IDENT || is_symbol(r, '.') || is_symbol(r, '/'))) {
    kx_buf_append(&b, r->text + r->t.start, r->t.end - r->t.start);
    s = lex(r);
  }
  if (!s && (b.len == 1 || !is_symbol(r, ']')))
    s = error_here(r, "expected a type name and ']' in a bracketed field name, got %s", describe(r, what, sizeof what));
  kx_buf_putc(&b, ']');
  if (!s) s = lex(r);
  if (!s && b.failed) s = out_of_memory();
  if (s) {
    kx_buf_free(&b);
    return s;
  }
  f->name = kx_buf_take(&b, NULL);
  return f->name ? NULL : out_of_memory();
}

static kiln_status parse_fields(reader *r, kx_tp_value *msg, int depth, char close, const char *owner);

/* One value of field f: a message, or (when a ':' came before it) a scalar. */
static kiln_status parse_value(reader *r, kx_tp_field *f, int depth, int colon) {
  char what[64];
  kx_tp_value *v = NULL;
  kiln_status s = add_value(r, f, &v);
  if (s) return s;
  v->line = r->t.line;
  v->col = r->t.col;
  if (is_symbol(r, '{') || is_symbol(r, '<')) {
    if (depth >= KX_TP_MAX_DEPTH)
      return kx_tp_error(r->name, v->line, v->col, KILN_RESOURCE_EXHAUSTED, "messages nested more than %d deep",
                         KX_TP_MAX_DEPTH);
    v->kind = KX_TP_MESSAGE;
    char close = r->t.sym == '{' ? '}' : '>';
    if ((s = lex(r))) return s;
    return parse_fields(r, v, depth + 1, close, f->name);
  }
  if (!colon)
    return error_here(r, "expected ':' or '{' after '%.100s', got %s", f->name, describe(r, what, sizeof what));
  switch (r->t.kind) {
  case TOK_INT:
    v->kind = KX_TP_INT;
    v->i = r->t.i;
    return lex(r);
  case TOK_IDENT:
    v->kind = KX_TP_IDENT;
    v->len = r->t.end - r->t.start;
    if (!(v->s = copy_text(r->text + r->t.start, v->len))) return out_of_memory();
    return lex(r);
  case TOK_STRING:
    /* adjacent literals are one string: 'a' "b" is "ab" */
    v->kind = KX_TP_STRING;
    if (!(v->s = calloc(1, 1))) return out_of_memory();
    for (size_t cap = 1; r->t.kind == TOK_STRING;) {
      size_t body = r->t.end - r->t.start - 2, written, at;
      if (v->len + body + 1 > cap) { /* geometric, so that many short pieces cost linear time */
        cap = v->len + body + 1 > 2 * cap ? v->len + body + 1 : 2 * cap;
        char *grown = realloc(v->s, cap);
        if (!grown) return out_of_memory();
        v->s = grown;
      }
      if (unescape(r->text + r->t.start + 1, body, v->s + v->len, &written, &at))
        return error_here(r, "bad escape"); /* not reached: lex_string checked it */
      v->len += written;
      v->s[v->len] = '\0';
      if ((s = lex(r))) return s;
    }
    return NULL;
  default:
    return error_here(r, "expected a value for '%.100s', got %s", f->name, describe(r, what, sizeof what));
  }
}

/* The fields of a message up to `close` ('}' or '>'), or up to the end of the input for the
 * document itself (close 0). `owner` names the field the message belongs to, for errors. */
static kiln_status parse_fields(reader *r, kx_tp_value *msg, int depth, char close, const char *owner) {
  char what[64];
  kiln_status s;
  for (;;) {
    if (r->t.kind == TOK_EOF) {
      if (!close) return NULL;
      return error_here(r, "missing '%c' to close '%.100s' opened at %d:%d", close, owner, msg->line, msg->col);
    }
    if (close && is_symbol(r, close)) return lex(r);
    if (is_symbol(r, '}') || is_symbol(r, '>')) {
      if (!close) return error_here(r, "'%c' closes nothing: is there one too many?", r->t.sym);
      return error_here(r, "expected '%c' to close '%.100s' opened at %d:%d, got '%c'", close, owner, msg->line,
                        msg->col, r->t.sym);
    }
    kx_tp_field *f = NULL;
    if ((s = add_field(r, msg, &f))) return s;
    f->line = r->t.line;
    f->col = r->t.col;
    if ((s = field_name(r, f))) return s;
    int colon = is_symbol(r, ':');
    if (colon && (s = lex(r))) return s;
    if (is_symbol(r, '[')) {
      /* a list: name: [1, 2] or name: [{...}, {...}] (messages also without the ':') */
      f->is_list = 1;
      if ((s = lex(r))) return s;
      if (is_symbol(r, ']')) {
        if ((s = lex(r))) return s;
      } else {
        for (;;) {
          if ((s = parse_value(r, f, depth, colon))) return s;
          if (is_symbol(r, ']')) break;
          if (!is_symbol(r, ','))
            return error_here(r, "expected ',' or ']' in the list of '%.100s', got %s", f->name,
                              describe(r, what, sizeof what));
          if ((s = lex(r))) return s;
        }
        if ((s = lex(r))) return s;
      }
    } else if ((s = parse_value(r, f, depth, colon))) {
      return s;
    }
    if ((is_symbol(r, ',') || is_symbol(r, ';')) && (s = lex(r))) return s;
  }
}

kiln_status kx_tp_parse(const char *text, size_t len, const char *name, kx_tp_value *root) {
  memset(root, 0, sizeof *root);
  root->kind = KX_TP_MESSAGE;
  root->line = root->col = 1;
  reader r = {.text = text, .len = text ? len : 0, .line = 1, .col = 1, .name = name ? name : "config"};
  kiln_status s = lex(&r);
  if (!s) s = parse_fields(&r, root, 0, 0, NULL);
  if (s) kx_tp_free(root);
  return s;
}

void kx_tp_free(kx_tp_value *v) {
  if (!v) return;
  for (int i = 0; i < v->n_fields; i++) {
    kx_tp_field *f = &v->fields[i];
    for (int j = 0; j < f->n_values; j++) kx_tp_free(&f->values[j]);
    free(f->values);
    free(f->name);
  }
  free(v->fields);
  free(v->s);
  memset(v, 0, sizeof *v);
}
