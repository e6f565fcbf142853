/* The CSV source (RFC 4180, streamed in big blocks whose rows are parsed in parallel) and the
 * CSV writer.
 *
 * Reading: a read-ahead thread finds row boundaries (memchr for the newline, a quote-aware state
 * machine only for rows that hold a quote) and parses a batch of up to BATCH_ROWS rows on the pool
 * into one record each (one allocation per row: tensors, values and string text) while the
 * consumer takes the previous batch's records, in file order, bad ones reported where they fall.
 *
 * Batches (next_batch, when a batch stage follows): the read-ahead thread parses rows straight
 * into the columns of the batch (or of a group of small batches, copied out by the consumer),
 * plain rows in one pass with fast paths for common numbers, scanning the next chunk while the
 * pool parses this one. A row that cannot join (bad, or with a missing value) is set aside and
 * reported when the consumer takes the batch it falls before, exactly as the batch stage would
 * report it, so batches, errors, counts and quarantine equal the record path's.
 *
 * Types: a column's dtype comes from `columns`, else from the first infer_rows rows (read in a
 * pass of their own, then read again as records): int64 when every present value is an integer
 * in range, float (float32) when every one is a number, bool when every one is true/false (any
 * case), else string. Missing values (na_values; by default "", "NA", "NaN", "null" — "NaN" is
 * missing as pandas reads it, rather than a float NaN; "nan"/"inf" in other spellings are
 * numbers) become dtype KILN_UNDEFINED. Blank lines are skipped and do not count as rows. */
#include "data/data.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/number.h"

#define CSV_BLOCK ((size_t)4 << 20)
/* Rows parsed together: enough to split across the pool, few enough that their records (about
 * 1 KB each with 6 columns) are still in cache when the consumer takes and frees them. */
#define BATCH_ROWS 2048
#define MAX_COLUMNS 65536
/* Batches of rows (or built batches) parsed ahead of the consumer: one parsed while the consumer
 * takes the other. */
#define SLOTS 2
/* Built batches smaller than this are built several at a time (a group) so that each parallel
 * parse has enough rows to be worth waking the pool for: the consumer copies each batch out. */
#define GROUP_ROWS 8192
/* ... and at most this many bytes of values per group (a wide file makes smaller groups). */
#define GROUP_BYTES ((size_t)4 << 20)
#define MAX_NA_VALUES 64

/* ---------------------------------------------------------------- scanning rows */

enum { ROW_OK, ROW_TOO_LONG, ROW_UNTERMINATED };

typedef struct row {
  const char *p; /* the row's text without its line end (NULL for ROW_TOO_LONG) */
  size_t len;
  int64_t offset; /* byte offset of its first byte in the file */
  int64_t index;  /* data row number */
  int64_t next_offset; /* where the scan goes on after it: reading resumes there */
  int kind;
  int quoted; /* it holds a quote */
} row;

/* Field-aware quote state: a quote opens a quoted field only at a field's start, as Python's csv
 * module and pandas read it. */
enum { ST_FIELD_START, ST_UNQUOTED, ST_QUOTED, ST_QUOTE_IN_QUOTED };

typedef struct scanner {
  FILE *f;
  const char *path;
  char delim;
  size_t max_line;
  char *buf, *spare;    /* both of cap bytes (spare made when first needed) */
  size_t cap, pos, len; /* valid bytes buf[pos, len) */
  int64_t base;         /* file offset of buf[0] */
  int eof;
  /* The first quote at or after buf[quote_from], or NULL when none before buf[len]: one search
   * for quotes serves many rows of a file that has few. Reset when the buffer moves. */
  const char *quote;
  size_t quote_from;
  int quote_known;
  /* scan_rows stops at an over-long row, whose skipping would read more than once */
  int ahead;
} scanner;

/* Advances the state machine over p..end; returns the newline that ends the row or NULL. */
static const char *scan_state(const char *p, const char *end, char delim, int *state) {
  int st = *state;
  for (; p < end; p++) {
    char c = *p;
    switch (st) {
    case ST_FIELD_START:
      if (c == '"') st = ST_QUOTED;
      else if (c == '\n') goto found;
      else if (c != delim) st = ST_UNQUOTED;
      break;
    case ST_UNQUOTED:
      if (c == delim) st = ST_FIELD_START;
      else if (c == '\n') goto found;
      break;
    case ST_QUOTED:
      if (c == '"') st = ST_QUOTE_IN_QUOTED;
      break;
    default: /* after a quote inside a quoted field: a doubled quote, the field's end, or stray text */
      if (c == '"') st = ST_QUOTED;
      else if (c == delim) st = ST_FIELD_START;
      else if (c == '\n') goto found;
      else st = ST_UNQUOTED;
      break;
    }
  }
  *state = st;
  return NULL;
found:
  *state = ST_FIELD_START;
  return p;
}

/* The newline ending the row that starts at p (sc's buffer), or NULL; *state says where an
 * unfinished row is, *quoted whether the row holds a quote. */
static const char *row_end(scanner *sc, const char *p, const char *end, int *state, int *quoted) {
  const char *nl = memchr(p, '\n', (size_t)(end - p));
  if (!sc->quote_known || (size_t)(p - sc->buf) < sc->quote_from || (sc->quote && sc->quote < p)) {
    sc->quote = memchr(p, '"', (size_t)(end - p));
    sc->quote_from = (size_t)(p - sc->buf);
    sc->quote_known = 1;
  }
  *quoted = sc->quote && sc->quote < (nl ? nl : end);
  if (!*quoted) {
    *state = ST_UNQUOTED;
    return nl;
  }
  *state = ST_FIELD_START;
  return scan_state(p, end, sc->delim, state);
}

/* Moves the unread bytes to the front of the spare buffer, which becomes the buffer, and reads
 * more: rows scanned before a refill stay where they are until the next one, so one chunk can be
 * parsed while the next is scanned (and read). */
static kiln_status refill(scanner *sc) {
  sc->quote_known = 0;
  if (sc->pos) {
    /* made on the first refill: a file that fits one block never needs it */
    if (!sc->spare && !(sc->spare = malloc(sc->cap)))
      return kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: out of memory for the read buffer", sc->path);
    memcpy(sc->spare, sc->buf + sc->pos, sc->len - sc->pos);
    char *old = sc->buf;
    sc->buf = sc->spare;
    sc->spare = old;
    sc->base += (int64_t)sc->pos;
    sc->len -= sc->pos;
    sc->pos = 0;
  }
  size_t got = fread(sc->buf + sc->len, 1, sc->cap - sc->len, sc->f);
  if (got < sc->cap - sc->len) {
    if (ferror(sc->f)) return kiln_error(KILN_IO, "%s: read failed: %s", sc->path, strerror(errno));
    sc->eof = 1;
  }
  sc->len += got;
  return NULL;
}

/* Skips the rest of an over-long row whose unread part starts at buf[pos] in `state`. */
static kiln_status skip_row(scanner *sc, int state) {
  for (;;) {
    const char *nl = scan_state(sc->buf + sc->pos, sc->buf + sc->len, sc->delim, &state);
    if (nl) {
      sc->pos = (size_t)(nl - sc->buf) + 1;
      return NULL;
    }
    sc->pos = sc->len;
    if (sc->eof) return NULL;
    kiln_status s = refill(sc);
    if (s) return s;
  }
}

/* Appends up to `max` rows to rows[*n...], numbering them from *index. Rows point into the
 * buffer, so the buffer moves only while the batch is empty. *n stays 0 only at the end. */
static kiln_status scan_rows(scanner *sc, row *rows, int max, int *n, int64_t *index) {
  *n = 0;
  int refilled = 0;
  while (*n < max) {
    const char *start = sc->buf + sc->pos, *end = sc->buf + sc->len;
    int state, quoted = 0;
    const char *nl = start < end ? row_end(sc, start, end, &state, &quoted) : NULL;
    size_t len;
    int kind = ROW_OK;
    if (nl) {
      len = (size_t)(nl - start);
    } else if (sc->eof) {
      if (start == end) return NULL;
      len = (size_t)(end - start);
      if (state == ST_QUOTED) kind = ROW_UNTERMINATED;
    } else if ((size_t)(end - start) > sc->max_line) {
      if (*n || sc->ahead) return NULL; /* hand out the rows before it first */
      rows[0] = (row){NULL, (size_t)(end - start), sc->base + (int64_t)sc->pos, (*index)++, 0, ROW_TOO_LONG, 1};
      *n = 1;
      sc->pos = sc->len;
      kiln_status s = skip_row(sc, state);
      rows[0].next_offset = sc->base + (int64_t)sc->pos;
      return s;
    } else {
      /* the rows of one call lie in one buffer; scanning ahead, a second refill would reuse the
       * buffer of the rows being parsed */
      if (*n || (sc->ahead && refilled)) return NULL;
      refilled = 1;
      kiln_status s = refill(sc);
      if (s) return s;
      continue;
    }
    int64_t offset = sc->base + (int64_t)sc->pos;
    sc->pos += len + (nl ? 1 : 0);
    if (len && start[len - 1] == '\r' && kind == ROW_OK) len--;
    if (len == 0) continue; /* blank line */
    if (len > sc->max_line) kind = ROW_TOO_LONG;
    rows[(*n)++] = (row){kind == ROW_TOO_LONG ? NULL : start, len, offset, (*index)++, sc->base + (int64_t)sc->pos, kind, quoted};
  }
  return NULL;
}

static kiln_status scanner_seek(scanner *sc, int64_t offset) {
  if (fseeko(sc->f, (off_t)offset, SEEK_SET) != 0)
    return kiln_error(KILN_IO, "%s: cannot seek: %s", sc->path, strerror(errno));
  sc->pos = sc->len = 0;
  sc->quote_known = 0;
  sc->base = offset;
  sc->eof = 0;
  return NULL;
}

/* ---------------------------------------------------------------- fields */

typedef struct field {
  const char *p;
  size_t len;
  int quoted; /* a quoted text field is text, even "" or "NA": never missing */
} field;

/* Splits a row into fields (at most max; *n gets the true count). Quoted fields are unescaped
 * into scratch (at least len bytes). */
static void split_fields(const char *p, size_t len, char delim, field *fields, int max, int *n, char *scratch) {
  const char *end = p + len;
  int count = 0;
  for (;;) {
    field f;
    if (p < end && *p == '"') {
      char *o = scratch;
      p++;
      for (;;) {
        if (p >= end) break;
        if (*p == '"') {
          if (p + 1 < end && p[1] == '"') {
            *o++ = '"';
            p += 2;
            continue;
          }
          p++;
          break;
        }
        *o++ = *p++;
      }
      while (p < end && *p != delim) *o++ = *p++; /* stray text after the closing quote */
      f.p = scratch;
      f.len = (size_t)(o - scratch);
      f.quoted = 1;
      scratch = o;
    } else {
      const char *d = memchr(p, delim, (size_t)(end - p));
      f.p = p;
      f.len = (size_t)((d ? d : end) - p);
      f.quoted = 0;
      p += f.len;
    }
    if (count < max) fields[count] = f;
    count++;
    if (p >= end) break;
    p++; /* the delimiter */
  }
  *n = count;
}

static void trim(const char **p, size_t *len) {
  while (*len && (**p == ' ' || **p == '\t')) (*p)++, (*len)--;
  while (*len && ((*p)[*len - 1] == ' ' || (*p)[*len - 1] == '\t')) (*len)--;
}

static int parse_bool(const char *p, size_t len, uint8_t *out) {
  trim(&p, &len);
  if (len == 4 && strncasecmp(p, "true", 4) == 0) return *out = 1, 0;
  if (len == 5 && strncasecmp(p, "false", 5) == 0) return *out = 0, 0;
  return -1;
}

static int parse_double(const char *p, size_t len, double *out) {
  trim(&p, &len);
  const char *stop;
  if (!len || kx_parse_double(p, p + len, KX_NUMBER_LENIENT | KX_NUMBER_SPECIAL, out, &stop) || stop != p + len)
    return -1;
  return 0;
}

/* Decimal digits (an optional '+' first) as a uint64 into *out; non-zero when not one. */
static int parse_uint64(const char *p, size_t len, uint64_t *out) {
  size_t i = len && p[0] == '+';
  if (i == len) return -1;
  uint64_t v = 0;
  for (; i < len; i++) {
    if (p[i] < '0' || p[i] > '9' || v > (UINT64_MAX - (uint64_t)(p[i] - '0')) / 10) return -1;
    v = v * 10 + (uint64_t)(p[i] - '0');
  }
  *out = v;
  return 0;
}

/* Parses an integer field into *out, checking the range of `dtype` (a uint64 comes back with its
 * bits in *out). */
static int parse_integer(const char *p, size_t len, kiln_dtype dtype, int64_t *out) {
  trim(&p, &len);
  if (dtype == KILN_UINT64) {
    uint64_t u;
    if (parse_uint64(p, len, &u) != 0) return -1;
    memcpy(out, &u, sizeof u);
    return 0;
  }
  if (kx_parse_int64(p, p + len, out) != 0) return -1;
  int64_t lo = INT64_MIN, hi = INT64_MAX;
  switch (dtype) {
  case KILN_INT8: lo = INT8_MIN, hi = INT8_MAX; break;
  case KILN_INT16: lo = INT16_MIN, hi = INT16_MAX; break;
  case KILN_INT32: lo = INT32_MIN, hi = INT32_MAX; break;
  case KILN_UINT8: lo = 0, hi = UINT8_MAX; break;
  case KILN_UINT16: lo = 0, hi = UINT16_MAX; break;
  case KILN_UINT32: lo = 0, hi = UINT32_MAX; break;
  default: break;
  }
  return *out < lo || *out > hi ? -1 : 0;
}

/* ---------------------------------------------------------------- the source */

enum { SLOT_FREE, SLOT_READY };

/* A row that cannot join a fused batch, reported when the consumer takes the batch: a bad CSV
 * row (kx_bad_record with its text) or one with a missing value (kx_bad_parsed_record with its
 * record, as the batch stage reports it). */
typedef struct fused_bad {
  kiln_status why;
  kiln_record record; /* missing: the row as the record path reads it */
  int missing;
  char *raw; /* a bad row's text (NULL when too long to keep) */
  size_t raw_len;
  int64_t index, offset, next_offset;
  int64_t seq;          /* rows the group's scan read before this one */
  int64_t goods_before; /* rows of the group that joined before it */
} fused_bad;

/* Where a fused batch keeps a string column's value before the batch is complete: text offsets,
 * since the text buffer grows while the batch fills. */
typedef struct str_ref {
  size_t off, len;
} str_ref;

/* Parsed rows waiting for the consumer. Bad rows keep a copy of their text (the scanner's buffer
 * moves on while the batch waits). In columnar mode (next_batch) a slot holds instead one whole
 * batch, its columns parsed in place, and the rows that could not join it. */
typedef struct batch {
  row rows[BATCH_ROWS];
  kiln_record records[BATCH_ROWS];
  kiln_status errors[BATCH_ROWS];
  char *raw[BATCH_ROWS];
  int n, next;
  int state;         /* SLOT_FREE or SLOT_READY; guarded by the stage's mu */
  int end;           /* no batch follows this one */
  kiln_status fatal; /* an I/O error after this batch's rows */
  /* columnar mode */
  uint8_t kind[BATCH_ROWS]; /* per scanned row: ROW_JOINS, ROW_BAD, ROW_MISSING */
  size_t text_at[BATCH_ROWS]; /* where each scanned row's string text goes in `text` */
  kiln_record out;            /* the batch: count 0 when no row joined */
  char **cols;                /* each numeric column's values in out's block */
  str_ref *refs;              /* [string column][size] */
  size_t refs_cap;
  char *text;
  size_t text_len, text_cap;
  fused_bad *bad;
  int64_t n_bad, bad_cap;
  int64_t good, scanned; /* rows in the batch; rows read for it */
  int64_t end_offset, end_index; /* where the scan stood after the batch */
  int consumed;                  /* the last batch was taken: later calls end */
  int fused_whole;               /* the group is one batch, built in `out` */
  /* a group of batches: each one's first row and the scan count at its last row */
  int64_t *first_index, *first_offset, *last_seq;
  int64_t *after_offset, *after_index; /* where reading resumes after each batch */
  int64_t group_cap;
  char *stage; /* a group's numeric columns (the batch's own block when the group is one batch) */
  size_t stage_cap;
  int64_t taken, counted, report_at; /* batches handed out, rows counted, reports made */
  const row *crow;               /* the chunk being parsed: rows[] or one of the stage's ahead[] */
} batch;

enum { ROW_JOINS, ROW_BAD, ROW_MISSING };

typedef struct csv_stage {
  kx_stage base;
  char *path;
  scanner sc;
  int64_t data_start; /* offset of the first data row */
  int ncols;
  char **names;
  kiln_dtype *dtypes;
  char **na; /* missing-value spellings */
  size_t *na_len;
  int n_na;
  size_t na_max_len;
  uint8_t na_first[256]; /* whether a non-empty missing-value spelling starts with this byte */
  size_t *sizes;         /* per column: its dtype's size */
  int64_t next_index; /* the scanner's next data row number (read-ahead thread only) */
  /* What the read-ahead thread makes: records (next) or whole batches of fused_size (next_batch).
   * A consumer that changes its mind restarts the scan after the last row it took. */
  int columnar;
  int64_t fused_size;
  int64_t fused_rows; /* rows per group: a multiple of fused_size */
  int nstr; /* string columns */
  int *str_at; /* per column: its index among the string columns, -1 for others */
  int64_t resume_offset, resume_index;
  /* Rows scanned ahead (columnar mode) while the previous ones were parsed: the next chunk's. */
  row ahead[2][BATCH_ROWS];
  int n_ahead, ahead_at, ahead_in; /* unparsed rows: ahead[ahead_in][ahead_at...] */
  kiln_status ahead_error;         /* where scanning ahead stopped, after those rows */
  /* Two batches: the read-ahead thread scans and parses one while the consumer takes the
   * records of the other, so on two cores parsing overlaps whatever the consumer does. */
  batch slots[SLOTS];
  int consume_at, produce_at;
  pthread_t thread;
  int running; /* the thread was started and not yet joined */
  int stop;    /* asks the thread to end; guarded by mu */
  pthread_mutex_t mu;
  pthread_cond_t cv;
} csv_stage;

/* Whether field f of a column of dtype t is a missing value. */
static int missing_field(const csv_stage *s, const field *f, kiln_dtype t);

static int is_missing(const csv_stage *s, const char *p, size_t len) {
  if (len > s->na_max_len) return 0;
  for (int i = 0; i < s->n_na; i++)
    if (s->na_len[i] == len && memcmp(s->na[i], p, len) == 0) return 1;
  return 0;
}

static int missing_field(const csv_stage *s, const field *f, kiln_dtype t) {
  return !(f->quoted && t == KILN_STRING) && is_missing(s, f->p, f->len);
}

/* Parses a present, non-string field of dtype t into slot (the dtype's size); non-zero when it is
 * not a valid t. */
static int parse_number(kiln_dtype t, const field *f, void *slot) {
  int bad = 0;
  switch (t) {
  case KILN_BOOL: bad = parse_bool(f->p, f->len, slot); break;
  case KILN_FLOAT:
  case KILN_DOUBLE:
  case KILN_FLOAT16: {
    double d;
    bad = parse_double(f->p, f->len, &d);
    if (t == KILN_FLOAT) *(float *)slot = (float)d;
    else if (t == KILN_DOUBLE) *(double *)slot = d;
    else *(uint16_t *)slot = kiln_float_to_half((float)d);
    break;
  }
  default: {
    int64_t i = 0;
    bad = parse_integer(f->p, f->len, t, &i);
    switch (kiln_dtype_size(t)) {
    case 1: *(uint8_t *)slot = (uint8_t)i; break;
    case 2: *(uint16_t *)slot = (uint16_t)i; break;
    case 4: *(uint32_t *)slot = (uint32_t)i; break;
    default: memcpy(slot, &i, 8); break;
    }
    break;
  }
  }
  return bad;
}

/* Writes one field into the record's value `v` (slot: 8 bytes; text: where string text goes). */
static kiln_status parse_value(const csv_stage *s, int col, const field *f, kiln_tensor *v, void *slot, char **text) {
  kiln_dtype t = s->dtypes[col];
  if (missing_field(s, f, t)) return NULL; /* stays KILN_UNDEFINED */
  int bad = 0;
  if (t == KILN_STRING) {
    memcpy(*text, f->p, f->len);
    (*text)[f->len] = '\0';
    *(char **)slot = *text;
    *text += f->len + 1;
  } else {
    bad = parse_number(t, f, slot);
  }
  if (bad) {
    int shown = f->len > 64 ? 64 : (int)f->len;
    return kiln_error(KILN_INVALID_ARGUMENT, "column '%s': '%.*s%s' is not a valid %s", s->names[col], shown, f->p,
                      f->len > 64 ? "..." : "", kiln_dtype_name(t));
  }
  v->dtype = t; /* a scalar: rank 0, no dims */
  v->rank = 0;
  v->data = slot;
  return NULL;
}

/* Parses one row into a record. */
static kiln_status parse_row(const csv_stage *s, const row *rw, field *fields, char *scratch, kiln_record *out) {
  if (rw->kind == ROW_TOO_LONG)
    return kiln_error(KILN_INVALID_ARGUMENT, "line of %s%zu bytes is longer than max_line_bytes (%zu)",
                      rw->p ? "" : "at least ", rw->len, s->sc.max_line);
  if (rw->kind == ROW_UNTERMINATED)
    return kiln_error(KILN_INVALID_ARGUMENT, "unterminated quoted field at the end of the file");
  int n;
  split_fields(rw->p, rw->len, s->sc.delim, fields, s->ncols, &n, scratch);
  if (n != s->ncols) return kiln_error(KILN_INVALID_ARGUMENT, "expected %d fields, found %d", s->ncols, n);
  size_t text = 0;
  for (int i = 0; i < n; i++)
    if (s->dtypes[i] == KILN_STRING) text += fields[i].len + 1;
  void *data;
  kiln_status st = kiln_record_init(out, (const char *const *)s->names, n, (size_t)n * 8 + text, &data);
  if (st) return st;
  char *t = (char *)data + (size_t)n * 8;
  for (int i = 0; i < n; i++)
    if ((st = parse_value(s, i, &fields[i], &out->values[i], (char *)data + 8 * (size_t)i, &t))) {
      kiln_record_release(out);
      return st;
    }
  out->source = s->path;
  out->index = rw->index;
  out->offset = rw->offset;
  return NULL;
}

typedef struct parse_job {
  const csv_stage *s;
  batch *b;
} parse_job;

static void parse_range(void *arg, int64_t begin, int64_t end) {
  const parse_job *job = arg;
  batch *b = job->b;
  size_t longest = 0;
  for (int64_t i = begin; i < end; i++)
    if (b->rows[i].p && b->rows[i].len > longest) longest = b->rows[i].len;
  field *fields = malloc(sizeof *fields * (size_t)(job->s->ncols ? job->s->ncols : 1));
  char *scratch = malloc(longest + 1);
  for (int64_t i = begin; i < end; i++) {
    const row *rw = &b->rows[i];
    if (!fields || !scratch) b->errors[i] = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory parsing a CSV row");
    else b->errors[i] = parse_row(job->s, rw, fields, scratch, &b->records[i]);
    b->raw[i] = NULL;
    /* longer raw text is not quarantined anyway (kx_bad_record keeps up to 4 KiB) */
    if (b->errors[i] && rw->p && rw->len <= 4096 && (b->raw[i] = malloc(rw->len + 1)))
      memcpy(b->raw[i], rw->p, rw->len); /* not strndup: a row may hold NUL bytes */
  }
  free(fields);
  free(scratch);
}


/* ---------------------------------------------------------------- batches built in place */

typedef struct fused_job {
  csv_stage *s;
  batch *b;
  int64_t at;     /* the batch position of the chunk's first row */
  int scan_ahead; /* item 0 scans the next chunk's rows (without reading) */
} fused_job;

/* Puts a string field at batch position pos. */
static void put_string(const csv_stage *s, batch *b, int col, int64_t pos, const char *p, size_t len, char **text) {
  memcpy(*text, p, len);
  (*text)[len] = '\0';
  b->refs[(size_t)s->str_at[col] * (size_t)s->fused_rows + (size_t)pos] = (str_ref){(size_t)(*text - b->text), len};
  *text += len + 1;
}

/* Parses a row straight into the batch's columns at position pos; non-zero when the row cannot
 * join (a bad row or a missing value: the record path then says which). */
static int fused_row(const csv_stage *s, batch *b, const row *rw, field *fields, char *scratch, int64_t pos,
                     char **text_at) {
  int n;
  split_fields(rw->p, rw->len, s->sc.delim, fields, s->ncols, &n, scratch);
  if (n != s->ncols) return -1;
  char *text = *text_at;
  for (int c = 0; c < n; c++) {
    const field *f = &fields[c];
    kiln_dtype t = s->dtypes[c];
    if (missing_field(s, f, t)) return -1;
    if (t == KILN_STRING) put_string(s, b, c, pos, f->p, f->len, &text);
    else if (parse_number(t, f, b->cols[c] + (size_t)pos * s->sizes[c])) return -1;
  }
  *text_at = text;
  return 0;
}

/* 10^0 .. 10^22: exact as doubles. */
static const double exact_tens[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* Fast paths for the common spellings of numbers: [-]digits (up to 18) for integers,
 * [-]digits[.digits] (up to 19 digits, a mantissa up to 2^53) for floats. They give the values the
 * general parsers give (the float one kx_parse_double's exact path: mantissa / 10^fraction
 * digits, rounded once); anything else (signs, spaces, exponents, long numbers, words) goes to
 * those. Each returns where the number ends, or NULL. */
static const char *fast_int64(const char *p, const char *end, int64_t *out) {
  int negative = p < end && *p == '-';
  const char *q = p + negative, *digits = q;
  uint64_t v = 0;
  while (q < end && (unsigned)(*q - '0') < 10 && q - digits < 18) v = v * 10 + (uint64_t)(*q++ - '0');
  if (q == digits) return NULL;
  *out = negative ? -(int64_t)v : (int64_t)v;
  return q;
}

static const char *fast_double(const char *p, const char *end, double *out) {
  int negative = p < end && *p == '-';
  const char *q = p + negative, *digits = q;
  uint64_t mantissa = 0;
  while (q < end && (unsigned)(*q - '0') < 10) mantissa = mantissa * 10 + (uint64_t)(*q++ - '0');
  size_t n_int = (size_t)(q - digits), n_frac = 0;
  if (q < end && *q == '.') {
    const char *frac = ++q;
    while (q < end && (unsigned)(*q - '0') < 10) mantissa = mantissa * 10 + (uint64_t)(*q++ - '0');
    n_frac = (size_t)(q - frac);
  }
  if (n_int + n_frac == 0 || n_int + n_frac > 19 || n_frac > 22 || mantissa > (1ull << 53)) return NULL;
  double v = (double)mantissa;
  v = n_frac ? v / exact_tens[n_frac] : v;
  *out = negative ? -v : v;
  return q;
}

/* fused_row for a row without quotes: numbers are parsed where they stand, fields split as they
 * are read. */
static int fused_plain_row(const csv_stage *s, batch *b, const row *rw, int64_t pos, char **text_at) {
  const char *p = rw->p, *end = p + rw->len;
  const char delim = s->sc.delim;
  char *text = *text_at;
  for (int c = 0; c < s->ncols; c++) {
    kiln_dtype t = s->dtypes[c];
    const char *q = NULL;
    if (t == KILN_FLOAT || t == KILN_DOUBLE) {
      double d;
      if ((q = fast_double(p, end, &d)) && (q == end || *q == delim)) {
        if (t == KILN_FLOAT) ((float *)(void *)b->cols[c])[pos] = (float)d;
        else ((double *)(void *)b->cols[c])[pos] = d;
      } else {
        q = NULL;
      }
    } else if (t == KILN_INT64) {
      int64_t v;
      if ((q = fast_int64(p, end, &v)) && (q == end || *q == delim)) ((int64_t *)(void *)b->cols[c])[pos] = v;
      else q = NULL;
    }
    if (q) { /* a number: it is missing only if a missing-value spelling looks like it */
      if ((size_t)(q - p) <= s->na_max_len && s->na_first[(uint8_t)*p] && is_missing(s, p, (size_t)(q - p)))
        return -1;
    } else {
      q = memchr(p, delim, (size_t)(end - p));
      if (!q) q = end;
      field f = {p, (size_t)(q - p), 0};
      if (is_missing(s, f.p, f.len)) return -1;
      if (t == KILN_STRING) put_string(s, b, c, pos, f.p, f.len, &text);
      else if (parse_number(t, &f, b->cols[c] + (size_t)pos * s->sizes[c])) return -1;
    }
    if (q == end) {
      if (c != s->ncols - 1) return -1; /* too few fields */
      *text_at = text;
      return 0;
    }
    p = q + 1;
  }
  return -1; /* too many fields */
}

static void fused_range(void *arg, int64_t begin, int64_t end) {
  const fused_job *job = arg;
  batch *b = job->b;
  if (job->scan_ahead) {
    if (begin == 0) { /* the scan overlaps the parse instead of leaving the other threads idle */
      csv_stage *w = job->s;
      /* The chunk may be ahead[ahead_in]'s rows: scan into the other. A refill here keeps the
       * chunk's buffer (the scan reads into the spare one): the chunk's rows are all in one. */
      w->sc.ahead = 1;
      w->ahead_in ^= 1;
      w->ahead_error = scan_rows(&w->sc, w->ahead[w->ahead_in], BATCH_ROWS, &w->n_ahead, &w->next_index);
      w->sc.ahead = 0;
      w->ahead_at = 0;
      begin++;
    }
    begin--;
    end--;
  }
  const csv_stage *s = job->s;
  size_t longest = 0;
  for (int64_t i = begin; i < end; i++)
    if (b->crow[i].p && b->crow[i].len > longest) longest = b->crow[i].len;
  field *fields = malloc(sizeof *fields * (size_t)(s->ncols ? s->ncols : 1));
  char *scratch = malloc(longest + 1);
  /* The range's string text goes one after the other from its first row's place (each row has
   * room for its length: text is never longer than the row). */
  char *text = s->nstr && begin < end ? b->text + b->text_at[begin] : NULL;
  for (int64_t i = begin; i < end; i++) {
    const row *rw = &b->crow[i];
    int64_t pos = job->at + i;
    b->kind[i] = ROW_JOINS;
    b->errors[i] = NULL;
    b->raw[i] = NULL;
    if (rw->kind == ROW_OK && !rw->quoted && fused_plain_row(s, b, rw, pos, &text) == 0) continue;
    if (fields && scratch && rw->kind == ROW_OK && rw->quoted && fused_row(s, b, rw, fields, scratch, pos, &text) == 0)
      continue;
    /* The slow path reads the row exactly as the record path does, so messages and the
     * quarantined record are the same. */
    kiln_record r;
    kiln_status st = !fields || !scratch ? kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory parsing a CSV row")
                                         : parse_row(s, rw, fields, scratch, &r);
    if (st) {
      b->kind[i] = ROW_BAD;
      b->errors[i] = st;
      if (rw->p && rw->len <= 4096 && (b->raw[i] = malloc(rw->len + 1))) memcpy(b->raw[i], rw->p, rw->len);
      continue;
    }
    int missing = 0;
    while (missing < r.count && r.values[missing].dtype != KILN_UNDEFINED) missing++;
    if (missing < r.count) {
      b->kind[i] = ROW_MISSING;
      b->records[i] = r;
      b->errors[i] = kiln_error(KILN_INVALID_ARGUMENT, "feature '%s' is missing; a batch needs a value in every record",
                                r.names[missing]);
      continue;
    }
    /* the fast path refused a row the record path reads: take its values */
    for (int c = 0; c < r.count; c++) {
      kiln_dtype t = s->dtypes[c];
      if (t == KILN_STRING) {
        const char *v = *(char *const *)r.values[c].data;
        put_string(s, b, c, pos, v, strlen(v), &text);
      } else {
        memcpy(b->cols[c] + (size_t)pos * kiln_dtype_size(t), r.values[c].data, kiln_dtype_size(t));
      }
    }
    kiln_record_release(&r);
  }
  free(fields);
  free(scratch);
}

static kiln_status fused_oom(const csv_stage *s) {
  return kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: out of memory building a batch", s->path);
}

/* Moves the rows of a chunk that cannot join out of the batch (into b->bad, in order) and closes
 * the gaps they leave; returns the rows that joined. */
static kiln_status fused_sort_chunk(const csv_stage *s, batch *b, int m, int64_t *joined) {
  int64_t w = b->good;
  for (int i = 0; i < m; i++) {
    int64_t pos = b->good + i;
    if (b->kind[i] == ROW_JOINS) {
      if (w != pos) {
        for (int c = 0; c < s->ncols; c++) {
          if (s->dtypes[c] == KILN_STRING) {
            str_ref *col = b->refs + (size_t)s->str_at[c] * (size_t)s->fused_rows;
            col[w] = col[pos];
          } else {
            size_t each = kiln_dtype_size(s->dtypes[c]);
            memcpy(b->cols[c] + (size_t)w * each, b->cols[c] + (size_t)pos * each, each);
          }
        }
      }
      int64_t k = w / s->fused_size;
      if (w % s->fused_size == 0) {
        b->first_index[k] = b->crow[i].index;
        b->first_offset[k] = b->crow[i].offset;
      }
      b->last_seq[k] = b->scanned + i;
      b->after_offset[k] = b->crow[i].next_offset;
      b->after_index[k] = b->crow[i].index + 1;
      w++;
      continue;
    }
    if (b->n_bad == b->bad_cap) {
      int64_t cap = b->bad_cap ? 2 * b->bad_cap : 16;
      fused_bad *more = realloc(b->bad, (size_t)cap * sizeof *more);
      if (!more) {
        for (int j = i; j < m; j++) { /* the rows not yet handed over */
          kiln_status_free(b->errors[j]);
          if (b->kind[j] == ROW_MISSING) kiln_record_release(&b->records[j]);
          free(b->raw[j]);
          b->errors[j] = NULL;
          b->raw[j] = NULL;
        }
        return fused_oom(s);
      }
      b->bad = more;
      b->bad_cap = cap;
    }
    const row *rw = &b->crow[i];
    fused_bad *f = &b->bad[b->n_bad++];
    memset(f, 0, sizeof *f);
    f->why = b->errors[i];
    f->missing = b->kind[i] == ROW_MISSING;
    if (f->missing) f->record = b->records[i];
    f->raw = b->raw[i];
    f->raw_len = rw->len;
    f->index = rw->index;
    f->offset = rw->offset;
    f->next_offset = rw->next_offset;
    f->seq = b->scanned + i;
    f->goods_before = w;
    b->errors[i] = NULL;
    b->raw[i] = NULL;
  }
  *joined = w - b->good;
  return NULL;
}

/* Makes out (initialized, numeric values set) batch k of the group, rows [first, first + n): shapes,
 * provenance, and the string columns in blocks of their own, [pointers][text]. */
static kiln_status fused_finish(const csv_stage *s, const batch *b, int64_t k, int64_t first, int64_t n,
                                kiln_record *out) {
  out->source = s->path;
  out->index = b->first_index[k];
  out->offset = b->first_offset[k];
  for (int c = 0; c < s->ncols; c++) {
    kiln_tensor *t = &out->values[c];
    void *data = t->data;
    kiln_status st = kiln_tensor_set_shape(t, s->dtypes[c], 1, &n);
    t->data = data;
    if (st) return st;
    if (s->dtypes[c] != KILN_STRING) continue;
    const str_ref *col = b->refs + (size_t)s->str_at[c] * (size_t)s->fused_rows + first;
    size_t text = 0;
    for (int64_t r = 0; r < n; r++) text += col[r].len + 1;
    /* data != owner: the strings live in the owner's block and are freed with it */
    char *block = malloc(64 + (size_t)n * sizeof(char *) + text);
    if (!block) return fused_oom(s);
    char **ptrs = (char **)(void *)(block + 64);
    char *at = block + 64 + (size_t)n * sizeof(char *);
    for (int64_t r = 0; r < n; r++) {
      memcpy(at, b->text + col[r].off, col[r].len + 1);
      ptrs[r] = at;
      at += col[r].len + 1;
    }
    t->data = ptrs;
    t->owner = block;
  }
  return NULL;
}

/* Batch k of a group of several: its values copied out of the group's columns. */
static kiln_status fused_copy_out(const csv_stage *s, const batch *b, int64_t k, int64_t n, kiln_record *out) {
  int64_t first = k * s->fused_size;
  size_t bytes = 0;
  for (int c = 0; c < s->ncols; c++)
    if (s->dtypes[c] != KILN_STRING) bytes += kx_align64(s->sizes[c] * (size_t)n);
  char *data;
  kiln_status st = kiln_record_init(out, (const char *const *)s->names, s->ncols, bytes, (void **)&data);
  if (st) return st;
  for (int c = 0; c < s->ncols; c++) {
    if (s->dtypes[c] == KILN_STRING) continue;
    memcpy(data, b->cols[c] + (size_t)first * s->sizes[c], (size_t)n * s->sizes[c]);
    out->values[c].data = data;
    data += kx_align64(s->sizes[c] * (size_t)n);
  }
  if ((st = fused_finish(s, b, k, first, n, out))) kiln_record_release(out);
  return st;
}

/* Reads the next group of fused_rows rows into slot b (the read-ahead thread). *end: the file
 * ended before the group filled. */
static kiln_status fused_fill(csv_stage *s, batch *b, int *end) {
  int64_t size = s->fused_rows;
  int64_t group = s->fused_rows / s->fused_size;
  *end = 0;
  b->fused_whole = group == 1;
  b->good = b->scanned = b->n_bad = 0;
  b->taken = b->counted = b->report_at = 0;
  if (group > b->group_cap) {
    free(b->first_index);
    free(b->first_offset);
    free(b->last_seq);
    free(b->after_offset);
    free(b->after_index);
    b->first_index = malloc(sizeof(int64_t) * (size_t)group);
    b->first_offset = malloc(sizeof(int64_t) * (size_t)group);
    b->last_seq = malloc(sizeof(int64_t) * (size_t)group);
    b->after_offset = malloc(sizeof(int64_t) * (size_t)group);
    b->after_index = malloc(sizeof(int64_t) * (size_t)group);
    b->group_cap = b->first_index && b->first_offset && b->last_seq && b->after_offset && b->after_index ? group : 0;
    if (!b->group_cap) return fused_oom(s);
  }
  b->text_len = 0;
  b->end_offset = s->sc.base + (int64_t)s->sc.pos;
  b->end_index = s->next_index;
  if (!b->cols && !(b->cols = calloc((size_t)(s->ncols ? s->ncols : 1), sizeof *b->cols))) return fused_oom(s);
  size_t need = (size_t)s->nstr * (size_t)size;
  if (need > b->refs_cap) {
    free(b->refs);
    if (!(b->refs = malloc(need * sizeof *b->refs))) {
      b->refs_cap = 0;
      return fused_oom(s);
    }
    b->refs_cap = need;
  }
  size_t bytes = 0;
  for (int c = 0; c < s->ncols; c++)
    if (s->dtypes[c] != KILN_STRING) bytes += kx_align64(kiln_dtype_size(s->dtypes[c]) * (size_t)size);
  char *data;
  kiln_status st = NULL;
  if (group == 1) { /* the group is the batch: parse into its own block */
    if ((st = kiln_record_init(&b->out, (const char *const *)s->names, s->ncols, bytes, (void **)&data))) return st;
  } else {
    if (bytes > b->stage_cap) {
      free(b->stage);
      b->stage_cap = 0;
      if (!(b->stage = aligned_alloc(64, bytes))) return fused_oom(s);
      b->stage_cap = bytes;
    }
    data = b->stage;
  }
  for (int c = 0; c < s->ncols; c++) {
    b->cols[c] = NULL;
    if (s->dtypes[c] == KILN_STRING) continue;
    b->cols[c] = data;
    data += kx_align64(kiln_dtype_size(s->dtypes[c]) * (size_t)size);
  }
  /* Everything a parse thread touches is sized before the parse: the join is the barrier. */
  int threads = s->base.ctx->threads > 0 ? s->base.ctx->threads : 1;
  while (!st && b->good < size) {
    int m = 0;
    int64_t want = size - b->good < BATCH_ROWS ? size - b->good : BATCH_ROWS;
    kiln_status scan = NULL;
    if (s->n_ahead) {
      m = s->n_ahead < want ? s->n_ahead : (int)want;
      b->crow = s->ahead[s->ahead_in] + s->ahead_at;
      s->ahead_at += m;
      s->n_ahead -= m;
    } else if (s->ahead_error) {
      scan = s->ahead_error;
      s->ahead_error = NULL;
    } else { /* the buffer may move: no row points into it now */
      scan = scan_rows(&s->sc, b->rows, (int)want, &m, &s->next_index);
      b->crow = b->rows;
    }
    if (m == 0) {
      st = scan;
      *end = 1;
      break;
    }
    size_t text = b->text_len;
    for (int i = 0; i < m; i++) {
      b->text_at[i] = text;
      if (s->nstr) text += (b->crow[i].p ? b->crow[i].len : 0) + (size_t)s->nstr;
    }
    if (text > b->text_cap) {
      size_t cap = b->text_cap ? b->text_cap : 1 << 16;
      while (cap < text) cap *= 2;
      char *more = realloc(b->text, cap);
      if (!more) {
        kiln_status_free(scan);
        st = fused_oom(s);
        break;
      }
      b->text = more;
      b->text_cap = cap;
    }
    /* scanning ahead needs a free ahead[] and a chunk worth sharing: a single row is a blank
     * row's or a long one's, and the file's end has nothing ahead */
    fused_job job = {s, b, b->good, !s->n_ahead && !scan && m > 1 && threads > 1};
    kiln_parallel_for(s->base.ctx->pool, threads, m + job.scan_ahead, 50.0 * (double)(b->crow[0].len + 1),
                      fused_range, &job);
    b->text_len = text;
    int64_t joined = 0;
    st = fused_sort_chunk(s, b, m, &joined);
    b->good += joined;
    b->scanned += m;
    b->end_offset = b->crow[m - 1].next_offset;
    b->end_index = b->crow[m - 1].index + 1;
    if (scan) {
      if (st) kiln_status_free(st);
      st = scan;
      *end = 1;
    }
  }
  if (group == 1) {
    if (!st && b->good) {
      for (int c = 0; c < s->ncols; c++) b->out.values[c].data = b->cols[c];
      st = fused_finish(s, b, 0, 0, b->good, &b->out);
    }
    if (st || !b->good) {
      kiln_record_release(&b->out);
      b->good = 0; /* no batch to hand out: the error is what this call returns */
    }
  }
  return st;
}

static void drop_batch(batch *b) {
  for (int i = b->next; i < b->n; i++) {
    if (b->errors[i]) kiln_status_free(b->errors[i]);
    else kiln_record_release(&b->records[i]);
    free(b->raw[i]);
  }
  for (int64_t i = 0; i < b->n_bad; i++) {
    kiln_status_free(b->bad[i].why);
    if (b->bad[i].missing) kiln_record_release(&b->bad[i].record);
    free(b->bad[i].raw);
  }
  b->n_bad = 0;
  kiln_record_release(&b->out);
  b->consumed = 0;
  if (b->fatal) kiln_status_free(b->fatal);
  b->n = b->next = b->end = 0;
  b->fatal = NULL;
  b->state = SLOT_FREE;
}

/* The read-ahead thread: fills free slots in turn until the end of the file or an error. */
static void *read_ahead(void *arg) {
  csv_stage *s = arg;
  for (;;) {
    batch *b = &s->slots[s->produce_at];
    pthread_mutex_lock(&s->mu);
    while (!s->stop && b->state != SLOT_FREE) pthread_cond_wait(&s->cv, &s->mu);
    int stop = s->stop;
    pthread_mutex_unlock(&s->mu);
    if (stop) return NULL;
    int n = 0, end = 0;
    kiln_status st;
    if (s->columnar) {
      st = fused_fill(s, b, &end);
    } else if (!(st = scan_rows(&s->sc, b->rows, BATCH_ROWS, &n, &s->next_index)) && n == 0) {
      end = 1;
    }
    if (n) {
      parse_job job = {s, b};
      /* ~50 operations per byte of a row: worth splitting from a few hundred rows up. One thread
       * is the consumer's: the parse uses the others (on two cores, this thread alone). */
      int threads = s->base.ctx->threads > 1 ? s->base.ctx->threads - 1 : 1;
      kiln_parallel_for(s->base.ctx->pool, threads, n, 50.0 * (double)(b->rows[0].len + 1), parse_range, &job);
    }
    pthread_mutex_lock(&s->mu);
    b->n = n;
    b->next = 0;
    b->fatal = st;
    b->end = st || end;
    b->state = SLOT_READY;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (b->end) return NULL;
    s->produce_at = (s->produce_at + 1) % SLOTS;
  }
}

/* Ends the read-ahead thread and drops what it read; the scanner is then free to move. */
static void stop_read_ahead(csv_stage *s) {
  if (s->running) {
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    s->running = 0;
    s->stop = 0;
  }
  for (int k = 0; k < SLOTS; k++) drop_batch(&s->slots[k]);
  s->n_ahead = s->ahead_at = 0; /* the scan is restarted from a known row */
  kiln_status_free(s->ahead_error);
  s->ahead_error = NULL;
  s->consume_at = s->produce_at = 0;
}

/* Starts the read-ahead thread making records (columnar 0) or batches of `size` rows, unless it
 * already does; a thread making the other kind is stopped and the scan restarts after the last
 * row the consumer took. */
static kiln_status start_read_ahead(csv_stage *s, int columnar, int64_t size) {
  int started = s->running;
  for (int k = 0; k < SLOTS; k++) started |= s->slots[k].state != SLOT_FREE;
  if (started && (s->columnar != columnar || (columnar && s->fused_size != size))) {
    stop_read_ahead(s);
    s->next_index = s->resume_index;
    kiln_status st = scanner_seek(&s->sc, s->resume_offset);
    if (st) return st;
    started = 0;
  }
  if (started) return NULL;
  s->columnar = columnar;
  s->fused_size = size;
  s->fused_rows = size; /* size 0: records */
  if (size > 0 && size < GROUP_ROWS) {
    size_t row_bytes = 1;
    for (int c = 0; c < s->ncols; c++) row_bytes += s->dtypes[c] == KILN_STRING ? sizeof(str_ref) : s->sizes[c];
    int64_t group = GROUP_ROWS / size;
    if ((size_t)group * (size_t)size * row_bytes > GROUP_BYTES) group = (int64_t)(GROUP_BYTES / row_bytes) / size;
    s->fused_rows = (group > 1 ? group : 1) * size;
  }
  if (pthread_create(&s->thread, NULL, read_ahead, s) != 0)
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: cannot start the CSV read-ahead thread", s->path);
  s->running = 1;
  return NULL;
}

static kiln_status csv_next(kx_stage *base, kiln_record *out, int *done) {
  csv_stage *s = (csv_stage *)base;
  memset(out, 0, sizeof *out);
  *done = 0;
  kiln_status started = start_read_ahead(s, 0, 0);
  if (started) return started;
  for (;;) {
    batch *b = &s->slots[s->consume_at];
    pthread_mutex_lock(&s->mu);
    while (b->state != SLOT_READY) pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    if (b->next == b->n) {
      if (b->end) {
        kiln_status fatal = b->fatal;
        b->fatal = NULL;
        *done = !fatal;
        return fatal;
      }
      pthread_mutex_lock(&s->mu);
      b->n = b->next = 0;
      b->state = SLOT_FREE;
      pthread_cond_broadcast(&s->cv);
      pthread_mutex_unlock(&s->mu);
      s->consume_at = (s->consume_at + 1) % SLOTS;
      continue;
    }
    int i = b->next++;
    atomic_fetch_add(&s->base.ctx->read, 1);
    s->resume_offset = b->rows[i].next_offset;
    s->resume_index = b->rows[i].index + 1;
    if (!b->errors[i]) {
      *out = b->records[i];
      return NULL;
    }
    const row *rw = &b->rows[i];
    kiln_status why = b->errors[i];
    char *raw = b->raw[i];
    b->errors[i] = NULL;
    b->raw[i] = NULL;
    kiln_status st = kx_bad_record(s->base.ctx, s->path, rw->index, rw->offset, raw, raw ? rw->len : 0, why);
    free(raw);
    if (st) return st;
  }
}

/* Hands the slot back to the read-ahead thread. */
static void fused_release_slot(csv_stage *s, batch *b) {
  pthread_mutex_lock(&s->mu);
  b->state = SLOT_FREE;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
  s->consume_at = (s->consume_at + 1) % SLOTS;
}

/* Takes the next batch of the group the read-ahead thread built: first reports, in order, the rows
 * before its last one that could not join, counting every row read up to there, then hands it out
 * as the batch stage would have made it. */
static kiln_status csv_next_batch(kx_stage *base, int64_t size, int drop_remainder, kiln_record *out, int *done,
                                  int *ended) {
  csv_stage *s = (csv_stage *)base;
  kx_data_ctx *ctx = s->base.ctx;
  memset(out, 0, sizeof *out);
  *done = *ended = 0;
  kiln_status st = start_read_ahead(s, 1, size);
  if (st) return st;
  batch *b = &s->slots[s->consume_at];
  pthread_mutex_lock(&s->mu);
  while (b->state != SLOT_READY) pthread_cond_wait(&s->cv, &s->mu);
  pthread_mutex_unlock(&s->mu);
  if (b->consumed) { /* after the end */
    *done = *ended = 1;
    return NULL;
  }
  int64_t batches = (b->good + size - 1) / size, k = b->taken;
  /* the rows before batch k's last one; at the end (k == batches, or k partial) all the rest */
  while (b->report_at < b->n_bad && b->bad[b->report_at].goods_before < (k + 1) * size) {
    fused_bad *f = &b->bad[b->report_at++];
    atomic_fetch_add(&ctx->read, f->seq + 1 - b->counted);
    b->counted = f->seq + 1;
    kiln_status why = f->why;
    f->why = NULL;
    if (f->missing) st = kx_bad_parsed_record(ctx, &f->record, why);
    else st = kx_bad_record(ctx, s->path, f->index, f->offset, f->raw, f->raw ? f->raw_len : 0, why);
    kiln_record_release(&f->record);
    f->missing = 0;
    free(f->raw);
    f->raw = NULL;
    if (st) {
      /* as after the batch stage's error: the next call starts after this row */
      s->resume_offset = f->next_offset;
      s->resume_index = f->index + 1;
      stop_read_ahead(s);
      s->next_index = s->resume_index;
      kiln_status seek = scanner_seek(&s->sc, s->resume_offset);
      if (seek) kiln_status_free(seek); /* the next call reports it again */
      return st;
    }
  }
  int64_t n = k < batches ? (b->good - k * size < size ? b->good - k * size : size) : 0;
  if (n == size) { /* a full batch: the rows after it are the next call's */
    atomic_fetch_add(&ctx->read, b->last_seq[k] + 1 - b->counted);
    b->counted = b->last_seq[k] + 1;
    if (b->fused_whole) {
      *out = b->out;
      memset(&b->out, 0, sizeof b->out);
    } else if ((st = fused_copy_out(s, b, k, n, out))) {
      return st;
    }
    b->taken++;
    s->resume_offset = b->after_offset[k];
    s->resume_index = b->after_index[k];
    if (k == batches - 1 && !b->end) fused_release_slot(s, b);
    return NULL;
  }
  /* the end: a last, partial batch or none */
  atomic_fetch_add(&ctx->read, b->scanned - b->counted);
  b->counted = b->scanned;
  s->resume_offset = b->end_offset;
  s->resume_index = b->end_index;
  kiln_status fatal = b->fatal;
  b->fatal = NULL;
  if (!fatal && n && !drop_remainder) {
    if (b->fused_whole) {
      *out = b->out;
      memset(&b->out, 0, sizeof b->out);
    } else if ((st = fused_copy_out(s, b, k, n, out))) {
      return st;
    }
  }
  b->taken = batches;
  b->consumed = 1; /* the slot stays ready: later calls end at once */
  *ended = !fatal;
  *done = !fatal && !out->block;
  return fatal;
}

static kiln_status csv_reset(kx_stage *base, int64_t epoch) {
  csv_stage *s = (csv_stage *)base;
  stop_read_ahead(s);
  s->next_index = 0;
  s->resume_offset = s->data_start;
  s->resume_index = 0;
  return scanner_seek(&s->sc, s->data_start);
}

static void csv_free(kx_stage *base) {
  csv_stage *s = (csv_stage *)base;
  stop_read_ahead(s);
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->cv);
  if (s->sc.f) fclose(s->sc.f);
  free(s->sc.buf);
  free(s->sc.spare);
  for (int k = 0; k < SLOTS; k++) {
    free(s->slots[k].cols);
    free(s->slots[k].refs);
    free(s->slots[k].text);
    free(s->slots[k].bad);
    free(s->slots[k].first_index);
    free(s->slots[k].first_offset);
    free(s->slots[k].last_seq);
    free(s->slots[k].after_offset);
    free(s->slots[k].after_index);
    free(s->slots[k].stage);
  }
  free(s->str_at);
  free(s->sizes);
  for (int i = 0; s->names && i < s->ncols; i++) free(s->names[i]);
  free(s->names);
  free(s->dtypes);
  for (int i = 0; i < s->n_na; i++) free(s->na[i]);
  free(s->na);
  free(s->na_len);
  free(s->path);
  free(s);
}

static const kx_stage_ops csv_ops = {"csv", csv_next, csv_reset, csv_free, csv_next_batch};

static kiln_status oom(void) { return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory opening a CSV file"); }

static kiln_status read_na_values(csv_stage *s, const cJSON *spec) {
  static const char *const defaults[] = {"", "NA", "NaN", "null"};
  const cJSON *list = cJSON_GetObjectItemCaseSensitive(spec, "na_values");
  if (list && !cJSON_IsArray(list))
    return kiln_error(KILN_INVALID_ARGUMENT, "source.na_values: expected a list of strings");
  int n = list ? cJSON_GetArraySize(list) : 4;
  if (n > MAX_NA_VALUES)
    return kiln_error(KILN_INVALID_ARGUMENT, "source.na_values: more than %d values", MAX_NA_VALUES);
  if (n && (!(s->na = calloc((size_t)n, sizeof *s->na)) || !(s->na_len = calloc((size_t)n, sizeof *s->na_len))))
    return oom();
  for (int i = 0; i < n; i++) {
    const char *v = defaults[i < 4 ? i : 0];
    if (list) {
      const cJSON *e = cJSON_GetArrayItem(list, i);
      if (!cJSON_IsString(e)) return kiln_error(KILN_INVALID_ARGUMENT, "source.na_values[%d]: expected a string", i);
      v = e->valuestring;
    }
    if (!(s->na[i] = strdup(v))) return oom();
    s->n_na = i + 1;
    s->na_len[i] = strlen(v);
    if (s->na_len[i]) s->na_first[(uint8_t)v[0]] = 1;
    if (s->na_len[i] > s->na_max_len) s->na_max_len = s->na_len[i];
  }
  return NULL;
}

/* Reads the header row (or counts the first row's fields) and names the columns. */
static kiln_status read_header(csv_stage *s, int header) {
  row first;
  int n;
  int64_t index = 0;
  kiln_status st = scan_rows(&s->sc, &first, 1, &n, &index);
  if (st) return st;
  if (n == 0) {
    if (header) return kiln_error(KILN_INVALID_ARGUMENT, "%s: the file is empty: expected a header row", s->path);
    s->ncols = 0;
    return NULL;
  }
  if (first.kind != ROW_OK)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: the first row is %s", s->path,
                      first.kind == ROW_TOO_LONG ? "longer than max_line_bytes" : "an unterminated quoted field");
  field *fields = malloc(sizeof *fields * MAX_COLUMNS);
  char *scratch = malloc(first.len + 1);
  if (!fields || !scratch) {
    free(fields);
    free(scratch);
    return oom();
  }
  split_fields(first.p, first.len, s->sc.delim, fields, MAX_COLUMNS, &n, scratch);
  if (n > MAX_COLUMNS) st = kiln_error(KILN_INVALID_ARGUMENT, "%s: %d columns, at most %d are supported", s->path, n, MAX_COLUMNS);
  if (!st && (!(s->names = calloc((size_t)n, sizeof *s->names)) || !(s->dtypes = calloc((size_t)n, sizeof *s->dtypes))))
    st = oom();
  if (!st) s->ncols = n;
  for (int i = 0; !st && i < n; i++) {
    char generated[32];
    snprintf(generated, sizeof generated, "c%d", i);
    s->names[i] = header ? strndup(fields[i].p, fields[i].len) : strdup(generated);
    if (!s->names[i]) st = oom();
  }
  if (!st && header) s->data_start = s->sc.base + (int64_t)s->sc.pos;
  free(fields);
  free(scratch);
  return st;
}

/* What the values seen so far allow a column to be. */
enum { CAN_INT = 1, CAN_FLOAT = 2, CAN_BOOL = 4 };

/* Infers the dtypes of the columns `columns` did not give from the first `rows` rows. */
static kiln_status infer_types(csv_stage *s, int64_t rows) {
  int *can = malloc(sizeof *can * (size_t)(s->ncols ? s->ncols : 1));
  field *fields = malloc(sizeof *fields * (size_t)(s->ncols ? s->ncols : 1));
  row *batch = malloc(sizeof *batch * 256);
  char *scratch = malloc(s->sc.max_line + 1);
  kiln_status st = NULL;
  if (!can || !fields || !batch || !scratch) st = oom();
  for (int i = 0; !st && i < s->ncols; i++) can[i] = CAN_INT | CAN_FLOAT | CAN_BOOL;
  int64_t seen = 0, index = 0;
  while (!st && seen < rows) {
    int n;
    if ((st = scan_rows(&s->sc, batch, 256, &n, &index)) || n == 0) break;
    for (int r = 0; r < n && seen < rows; r++) {
      int nf;
      if (batch[r].kind != ROW_OK) continue;
      split_fields(batch[r].p, batch[r].len, s->sc.delim, fields, s->ncols, &nf, scratch);
      if (nf != s->ncols) continue; /* a bad row: reported when read */
      seen++;
      for (int i = 0; i < s->ncols; i++) {
        const field *f = &fields[i];
        if (!can[i] || is_missing(s, f->p, f->len)) continue;
        int64_t iv;
        double dv;
        uint8_t bv;
        if ((can[i] & CAN_INT) && parse_integer(f->p, f->len, KILN_INT64, &iv) != 0) can[i] &= ~CAN_INT;
        if ((can[i] & CAN_FLOAT) && parse_double(f->p, f->len, &dv) != 0) can[i] &= ~(CAN_FLOAT | CAN_INT);
        if ((can[i] & CAN_BOOL) && parse_bool(f->p, f->len, &bv) != 0) can[i] &= ~CAN_BOOL;
      }
    }
  }
  for (int i = 0; !st && i < s->ncols; i++) {
    if (s->dtypes[i] != KILN_UNDEFINED) continue;
    /* a column with no value at all reads as float, as pandas reads an all-missing column */
    if (can[i] == (CAN_INT | CAN_FLOAT | CAN_BOOL)) s->dtypes[i] = KILN_FLOAT;
    else if (can[i] & CAN_INT) s->dtypes[i] = KILN_INT64;
    else if (can[i] & CAN_FLOAT) s->dtypes[i] = KILN_FLOAT;
    else if (can[i] & CAN_BOOL) s->dtypes[i] = KILN_BOOL;
    else s->dtypes[i] = KILN_STRING;
  }
  free(can);
  free(fields);
  free(batch);
  free(scratch);
  return st;
}

static kiln_status read_columns(csv_stage *s, const cJSON *spec) {
  const cJSON *cols = cJSON_GetObjectItemCaseSensitive(spec, "columns");
  if (!cols) return NULL;
  if (!cJSON_IsObject(cols))
    return kiln_error(KILN_INVALID_ARGUMENT, "source.columns: expected an object of column name to dtype name");
  for (const cJSON *c = cols->child; c; c = c->next) {
    if (!cJSON_IsString(c))
      return kiln_error(KILN_INVALID_ARGUMENT, "source.columns.%s: expected a dtype name (a string)", c->string);
    kiln_dtype t = strcmp(c->valuestring, "string") == 0 ? KILN_STRING : kiln_dtype_from_name(c->valuestring);
    if (t == KILN_UNDEFINED || t == KILN_BFLOAT16 || t == KILN_COMPLEX64 || t == KILN_COMPLEX128)
      return kiln_error(KILN_INVALID_ARGUMENT,
                        "source.columns.%s: '%s' is not a CSV column type (float, double, int8..int64, uint8..uint64, bool, string)",
                        c->string, c->valuestring);
    int i = 0;
    while (i < s->ncols && strcmp(s->names[i], c->string) != 0) i++;
    if (i == s->ncols)
      return kiln_error(KILN_INVALID_ARGUMENT, "source.columns.%s: %s has no such column", c->string, s->path);
    s->dtypes[i] = t;
  }
  return NULL;
}

kiln_status kx_csv_open(kx_data_ctx *ctx, const cJSON *spec, kx_stage **out) {
  static const char *const keys[] = {"format", "path", "delimiter", "header", "columns", "na_values",
                                     "max_line_bytes", "infer_rows", NULL};
  const char *path = NULL, *delimiter = ",";
  int header = 1;
  int64_t max_line = 1 << 20, infer_rows = 1000;
  kiln_status st = kx_spec_keys(spec, "source", keys);
  if (!st) st = kx_spec_string(spec, "source", "path", 1, &path);
  if (!st) st = kx_spec_string(spec, "source", "delimiter", 0, &delimiter);
  if (!st) st = kx_spec_bool(spec, "source", "header", &header);
  if (!st) st = kx_spec_int(spec, "source", "max_line_bytes", 0, 1, (int64_t)1 << 30, &max_line);
  if (!st) st = kx_spec_int(spec, "source", "infer_rows", 0, 0, INT64_MAX / 2, &infer_rows);
  if (st) return st;
  if (strlen(delimiter) != 1 || *delimiter == '"' || *delimiter == '\n' || *delimiter == '\r')
    return kiln_error(KILN_INVALID_ARGUMENT, "source.delimiter: expected one character other than a quote or a line end, found '%s'",
                      delimiter);
  csv_stage *s = calloc(1, sizeof *s);
  if (!s) return oom();
  s->base.ops = &csv_ops;
  s->base.ctx = ctx;
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  s->sc.delim = *delimiter;
  s->sc.max_line = (size_t)max_line;
  /* room for a whole block after a row of max_line bytes that was cut at the block's end */
  s->sc.cap = CSV_BLOCK + (size_t)max_line + 1;
  if (!(s->path = kx_data_path(ctx, path)) || !(s->sc.buf = malloc(s->sc.cap))) {
    csv_free(&s->base);
    return oom();
  }
  s->sc.path = s->path;
  if (!(s->sc.f = fopen(s->path, "rb"))) {
    st = kiln_error(errno == ENOENT ? KILN_NOT_FOUND : KILN_IO, "%s: %s", s->path, strerror(errno));
    csv_free(&s->base);
    return st;
  }
  st = read_na_values(s, spec);
  if (!st) st = refill(&s->sc);
  if (!st && s->sc.len >= 3 && memcmp(s->sc.buf, "\xEF\xBB\xBF", 3) == 0) s->sc.pos = 3; /* UTF-8 BOM */
  if (!st) s->data_start = (int64_t)s->sc.pos;
  if (!st) st = read_header(s, header);
  if (!st) st = read_columns(s, spec);
  if (!st) st = scanner_seek(&s->sc, s->data_start);
  if (!st) st = infer_types(s, infer_rows);
  if (!st) st = scanner_seek(&s->sc, s->data_start);
  if (!st && !(s->str_at = malloc(sizeof *s->str_at * (size_t)(s->ncols ? s->ncols : 1)))) st = oom();
  if (!st && !(s->sizes = malloc(sizeof *s->sizes * (size_t)(s->ncols ? s->ncols : 1)))) st = oom();
  for (int c = 0; !st && c < s->ncols; c++) {
    s->str_at[c] = s->dtypes[c] == KILN_STRING ? s->nstr++ : -1;
    s->sizes[c] = kiln_dtype_size(s->dtypes[c]);
  }
  s->resume_offset = s->data_start;
  if (st) {
    csv_free(&s->base);
    return st;
  }
  *out = &s->base;
  return NULL;
}

/* ---------------------------------------------------------------- the writer */

typedef struct csv_writer {
  kx_writer base;
  char *path, *tmp;
  FILE *f;
  int started;
  int count;        /* features per record */
  int64_t *widths;  /* columns each feature takes */
  int64_t records;
  kx_buf line;
} csv_writer;

/* Appends a field, quoted (RFC 4180) when it holds a delimiter, a quote, a line end or edge spaces,
 * or reads as a missing value unquoted ("", "NA", "NaN", "null"): the reader takes a quoted field
 * of a text column as text. */
static void put_text(kx_buf *b, const char *s) {
  size_t n = strlen(s);
  int looks_missing = !n || !strcmp(s, "NA") || !strcmp(s, "NaN") || !strcmp(s, "null");
  if (!looks_missing && !strpbrk(s, ",\"\r\n") && s[0] != ' ' && s[n - 1] != ' ') {
    kx_buf_append(b, s, n);
    return;
  }
  kx_buf_putc(b, '"');
  for (const char *p = s; *p; p++) {
    if (*p == '"') kx_buf_putc(b, '"');
    kx_buf_putc(b, *p);
  }
  kx_buf_putc(b, '"');
}

static void put_number(kx_buf *b, double v, int is_float) {
  char text[KX_NUMBER_CHARS];
  if (isnan(v)) kx_buf_puts(b, "nan");
  else if (isinf(v)) kx_buf_puts(b, v < 0 ? "-inf" : "inf");
  else kx_buf_puts(b, kx_format_number(v, is_float, text));
}

static void put_element(kx_buf *b, const kiln_tensor *t, int64_t i) {
  switch (t->dtype) {
  case KILN_STRING: {
    const char *s = ((char *const *)t->data)[i];
    put_text(b, s ? s : "");
    break;
  }
  case KILN_BOOL: kx_buf_puts(b, ((const uint8_t *)t->data)[i] ? "true" : "false"); break;
  case KILN_INT64: kx_buf_printf(b, "%lld", (long long)((const int64_t *)t->data)[i]); break;
  case KILN_UINT64: kx_buf_printf(b, "%llu", (unsigned long long)((const uint64_t *)t->data)[i]); break;
  case KILN_DOUBLE: put_number(b, ((const double *)t->data)[i], 0); break;
  case KILN_FLOAT:
  case KILN_FLOAT16:
  case KILN_BFLOAT16: put_number(b, kiln_tensor_get_f64(t, i), 1); break;
  default: kx_buf_printf(b, "%.0f", kiln_tensor_get_f64(t, i)); break; /* the smaller integers: exact */
  }
}

static kiln_status write_header(csv_writer *w, const kiln_record *r) {
  w->count = r->count;
  if (!(w->widths = calloc((size_t)(r->count ? r->count : 1), sizeof *w->widths)))
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  kx_buf_free(&w->line);
  for (int i = 0; i < r->count; i++) {
    const kiln_tensor *v = &r->values[i];
    int scalar = v->dtype == KILN_UNDEFINED || v->rank == 0;
    w->widths[i] = scalar ? 1 : kiln_tensor_numel(v);
    for (int64_t k = 0; k < w->widths[i]; k++) {
      if (i || k) kx_buf_putc(&w->line, ',');
      if (scalar) {
        put_text(&w->line, r->names[i]);
      } else {
        char *name = malloc(strlen(r->names[i]) + 24);
        if (!name) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
        sprintf(name, "%s_%lld", r->names[i], (long long)k);
        put_text(&w->line, name);
        free(name);
      }
    }
  }
  kx_buf_putc(&w->line, '\n');
  return NULL;
}

static kiln_status csv_write(kx_writer *base, const kiln_record *r) {
  csv_writer *w = (csv_writer *)base;
  kiln_status s;
  if (!w->started && (s = write_header(w, r))) return s;
  w->started = 1;
  if (r->count != w->count)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: record %lld has %d features, the first had %d", w->path,
                      (long long)w->records, r->count, w->count);
  for (int i = 0; i < r->count; i++) {
    const kiln_tensor *v = &r->values[i];
    int64_t n = v->dtype == KILN_UNDEFINED ? w->widths[i] : kiln_tensor_numel(v);
    if (n != w->widths[i])
      return kiln_error(KILN_INVALID_ARGUMENT, "%s: record %lld: feature '%s' has %lld values, the first record's had %lld",
                        w->path, (long long)w->records, r->names[i], (long long)n, (long long)w->widths[i]);
    for (int64_t k = 0; k < n; k++) {
      if (i || k) kx_buf_putc(&w->line, ',');
      if (v->dtype != KILN_UNDEFINED) put_element(&w->line, v, k);
    }
  }
  kx_buf_putc(&w->line, '\n');
  if (w->line.failed) return kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: out of memory writing a row", w->path);
  if (w->line.len >= (1 << 20)) {
    if (fwrite(w->line.data, 1, w->line.len, w->f) != w->line.len)
      return kiln_error(KILN_IO, "%s: write failed: %s", w->tmp, strerror(errno));
    w->line.len = 0;
  }
  w->records++;
  return NULL;
}

static kiln_status csv_finish(kx_writer *base) {
  csv_writer *w = (csv_writer *)base;
  if (w->line.len && fwrite(w->line.data, 1, w->line.len, w->f) != w->line.len)
    return kiln_error(KILN_IO, "%s: write failed: %s", w->tmp, strerror(errno));
  w->line.len = 0;
  int failed = fflush(w->f) != 0 || fsync(fileno(w->f)) != 0;
  failed |= fclose(w->f) != 0;
  w->f = NULL;
  if (failed) return kiln_error(KILN_IO, "%s: write failed: %s", w->tmp, strerror(errno));
  if (rename(w->tmp, w->path) != 0)
    return kiln_error(KILN_IO, "cannot rename %s to %s: %s", w->tmp, w->path, strerror(errno));
  free(w->tmp);
  w->tmp = NULL;
  return NULL;
}

static void csv_writer_free(kx_writer *base) {
  csv_writer *w = (csv_writer *)base;
  if (w->f) fclose(w->f);
  if (w->tmp) remove(w->tmp); /* unfinished */
  free(w->tmp);
  free(w->path);
  free(w->widths);
  kx_buf_free(&w->line);
  free(w);
}

kiln_status kx_csv_writer_open(const char *path, kx_writer **out) {
  csv_writer *w = calloc(1, sizeof *w);
  if (!w) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  w->base.write = csv_write;
  w->base.finish = csv_finish;
  w->base.free = csv_writer_free;
  w->path = strdup(path);
  w->tmp = malloc(strlen(path) + 5);
  if (!w->path || !w->tmp) {
    csv_writer_free(&w->base);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  }
  sprintf(w->tmp, "%s.tmp", path);
  if (!(w->f = fopen(w->tmp, "wb"))) {
    kiln_status s = kiln_error(KILN_IO, "cannot create %s: %s", w->tmp, strerror(errno));
    free(w->tmp);
    w->tmp = NULL;
    csv_writer_free(&w->base);
    return s;
  }
  *out = &w->base;
  return NULL;
}
