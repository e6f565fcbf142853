/* A reader for protobuf's text format (internal to serve): it parses a document into a tree of
 * fields and values that knows no schema, so that the syntax lives in one place and each
 * configuration file only maps the tree onto its own structs. Nesting depth and the number of
 * fields and values are capped, so a hostile file costs bounded memory and stack. */
#ifndef KILN_SERVE_TEXTPROTO_H
#define KILN_SERVE_TEXTPROTO_H

#include "kiln/core.h"

/* Most messages nested in one another (the document itself is level 0); deeper is
 * RESOURCE_EXHAUSTED. TF Serving's configs nest 4 levels deep. */
#define KX_TP_MAX_DEPTH 32
/* Most fields and values (all together) one document may hold; more is RESOURCE_EXHAUSTED. */
#define KX_TP_MAX_ITEMS (1 << 18)

typedef enum kx_tp_kind {
  KX_TP_INT,     /* decimal or 0x hex, optionally negative, within int64 */
  KX_TP_STRING,  /* quoted, escapes decoded, adjacent literals joined */
  KX_TP_IDENT,   /* a bare word: true, false, an enum value */
  KX_TP_MESSAGE, /* { ... } or < ... > */
} kx_tp_kind;

typedef struct kx_tp_field kx_tp_field;

typedef struct kx_tp_value {
  kx_tp_kind kind;
  int line, col; /* 1-based, where the value starts */
  int64_t i;     /* KX_TP_INT */
  char *s;       /* KX_TP_STRING, KX_TP_IDENT: NUL-terminated; a string may hold NULs (\0) */
  size_t len;    /* bytes in s, the terminator excluded */
  kx_tp_field *fields; /* KX_TP_MESSAGE, in document order; a name may repeat */
  int n_fields, cap_fields;
} kx_tp_value;

struct kx_tp_field {
  char *name; /* an identifier, or "[type.googleapis.com/pkg.Msg]" for extensions and Any */
  int line, col;
  int is_list; /* written as name: [a, b]: values holds the list, possibly empty */
  kx_tp_value *values; /* exactly one when !is_list */
  int n_values, cap_values;
};

/* Parses a whole document into `root` (a KX_TP_MESSAGE). Errors are INVALID_ARGUMENT (or
 * RESOURCE_EXHAUSTED for the caps above and out of memory) and begin "name:line:col: ". On
 * error nothing is left to free. */
kiln_status kx_tp_parse(const char *text, size_t len, const char *name, kx_tp_value *root);
/* Frees what the value holds and zeroes it. */
void kx_tp_free(kx_tp_value *v);

/* An error whose message begins "name:line:col: ". */
kiln_status kx_tp_error(const char *name, int line, int col, kiln_code code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* "an integer", "a string", "a bare word", "a message": for errors. */
const char *kx_tp_kind_name(kx_tp_kind kind);

#endif
