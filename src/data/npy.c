/* The NPY/NPZ source (arrays streamed one row along axis 0 per record; an .npz's members are the
 * features) and the NPZ writer (features stacked along a new axis 0, as numpy.savez writes them). */
#include "data/data.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zip.h>

#include "core/npy.h"

#define NPZ_MAX_MEMBERS 1024
#define NPY_MAX_ROW_BYTES ((size_t)1 << 30)

/* ---------------------------------------------------------------- reading */

/* One array being streamed: a .npy file, or a member of an .npz. */
typedef struct npy_array {
  char *name; /* the feature name */
  char *where; /* "x.npz:a.npy" or the .npy path, for errors */
  FILE *f;           /* a .npy file */
  zip_file_t *zf;    /* or an .npz member */
  zip_uint64_t member;
  kx_npy_header h;
  size_t row_bytes;
  int64_t row_elems;
  int64_t rows_held; /* whole rows the file (member) really holds: no row past them is allocated */
} npy_array;

typedef struct npy_stage {
  kx_stage base;
  char *path;
  zip_t *zip; /* NULL for a .npy file */
  npy_array *arrays;
  int n;
  const char **names;
  int64_t count, next;
  int stopped;
  unsigned char *scratch; /* one string row */
} npy_stage;

static int64_t array_read(npy_array *a, void *buf, size_t n) {
  if (a->f) {
    size_t got = fread(buf, 1, n, a->f);
    return got < n && ferror(a->f) ? -1 : (int64_t)got;
  }
  return zip_fread(a->zf, buf, n);
}

/* (Re)opens the array's stream and positions it at its data; with `parse` reads the header. */
static kiln_status array_start(npy_stage *s, npy_array *a, int parse) {
  if (s->zip) {
    if (a->zf) zip_fclose(a->zf);
    if (!(a->zf = zip_fopen_index(s->zip, a->member, 0)))
      return kiln_error(KILN_IO, "%s: cannot open the member: %s", a->where, zip_strerror(s->zip));
  } else if (fseek(a->f, 0, SEEK_SET) != 0) {
    return kiln_error(KILN_IO, "%s: cannot seek: %s", a->where, strerror(errno));
  }
  unsigned char *hdr = malloc(KX_NPY_MAX_HEADER);
  if (!hdr) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  size_t total = 0;
  int64_t got = array_read(a, hdr, 12);
  kiln_status st = got < 0 ? kiln_error(KILN_IO, "%s: read failed", a->where)
                           : kx_npy_header_length(hdr, (size_t)got, a->where, &total);
  if (!st && total > (size_t)got) {
    int64_t more = array_read(a, hdr + got, total - (size_t)got);
    if (more < 0 || (size_t)more != total - (size_t)got)
      st = kiln_error(KILN_INVALID_ARGUMENT, "%s: not a valid .npy file: truncated header", a->where);
  }
  if (!st && parse) st = kx_npy_header_parse(hdr, total, a->where, &a->h);
  free(hdr);
  if (st || !parse) return st;
  if (a->h.rank == 0)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: a 0-d array has no axis 0 to read records along", a->where);
  a->row_elems = 1;
  for (int i = 1; i < a->h.rank; i++) a->row_elems *= a->h.dims[i]; /* bounded: the header parser checked the count */
  if (a->row_elems && a->h.item_bytes > NPY_MAX_ROW_BYTES / (size_t)a->row_elems)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: rows of more than %zu bytes are not supported", a->where, NPY_MAX_ROW_BYTES);
  a->row_bytes = a->h.item_bytes * (size_t)a->row_elems;
  /* what the file holds after the header bounds what a header may make us allocate */
  uint64_t size = 0;
  struct stat st_file;
  zip_stat_t zs;
  if (s->zip) size = zip_stat_index(s->zip, a->member, 0, &zs) == 0 && (zs.valid & ZIP_STAT_SIZE) ? zs.size : 0;
  else if (fstat(fileno(a->f), &st_file) == 0) size = (uint64_t)st_file.st_size;
  uint64_t held = size > a->h.data_offset ? size - a->h.data_offset : 0;
  a->rows_held = a->row_bytes ? (int64_t)(held / a->row_bytes) : INT64_MAX;
  return NULL;
}

/* The array ends before record s->next: one bad record says so, and the source stops. */
static kiln_status truncated(npy_stage *s, const npy_array *a, int *done) {
  s->stopped = 1;
  atomic_fetch_add(&s->base.ctx->read, 1); /* the record that is not there counts as read, and bad */
  kiln_status why = s->zip ? kiln_error(KILN_INVALID_ARGUMENT, "member '%s.npy' ends after %lld of %lld records",
                                        a->name, (long long)s->next, (long long)s->count)
                           : kiln_error(KILN_INVALID_ARGUMENT, "file ends after %lld of %lld records",
                                        (long long)s->next, (long long)s->count);
  kiln_status st = kx_bad_record(s->base.ctx, s->path, s->next, -1, NULL, 0, why);
  if (!st) *done = 1;
  return st;
}

static kiln_status npy_next(kx_stage *base, kiln_record *out, int *done) {
  npy_stage *s = (npy_stage *)base;
  memset(out, 0, sizeof *out);
  *done = 0;
  if (s->stopped || s->next >= s->count) {
    *done = 1;
    return NULL;
  }
  for (int i = 0; i < s->n; i++)
    if (s->next >= s->arrays[i].rows_held) return truncated(s, &s->arrays[i], done);
  size_t total = 0;
  for (int i = 0; i < s->n; i++)
    if (s->arrays[i].h.dtype != KILN_STRING) total += kx_align64(s->arrays[i].row_bytes);
  void *data;
  kiln_record r;
  kiln_status st = kiln_record_init(&r, s->names, s->n, total, &data);
  if (st) return st;
  r.source = s->path;
  r.index = s->next;
  atomic_fetch_add(&s->base.ctx->read, 1);
  unsigned char *p = data;
  for (int i = 0; i < s->n && !st; i++) {
    npy_array *a = &s->arrays[i];
    int is_string = a->h.dtype == KILN_STRING;
    unsigned char *dst = is_string ? s->scratch : p;
    int64_t got = a->row_bytes ? array_read(a, dst, a->row_bytes) : 0;
    if (got < 0 || (size_t)got != a->row_bytes) {
      kiln_record_release(&r);
      atomic_fetch_sub(&s->base.ctx->read, 1); /* truncated() counts it */
      return truncated(s, a, done);
    }
    kiln_tensor *v = &r.values[i];
    if (is_string) {
      kiln_tensor t;
      if (!(st = kiln_tensor_alloc(&t, KILN_STRING, a->h.rank - 1, a->h.dims + 1))) {
        if ((st = kx_npy_decode_strings(&a->h, dst, a->row_elems, t.data))) kiln_tensor_release(&t);
        else kiln_record_set(&r, i, &t);
      }
      continue;
    }
    if ((st = kiln_tensor_set_shape(v, a->h.dtype, a->h.rank - 1, a->h.dims + 1))) break;
    v->data = a->row_bytes ? p : NULL;
    if (a->h.dtype == KILN_BOOL)
      for (size_t k = 0; k < a->row_bytes; k++) p[k] = p[k] != 0;
    p += kx_align64(a->row_bytes);
  }
  if (st) {
    kiln_record_release(&r);
    return kiln_status_prefix(st, "%s: record %lld: ", s->path, (long long)s->next);
  }
  if (!s->zip) r.offset = (int64_t)(s->arrays[0].h.data_offset + (size_t)s->next * s->arrays[0].row_bytes);
  s->next++;
  *out = r;
  return NULL;
}

static kiln_status npy_reset(kx_stage *base, int64_t epoch) {
  npy_stage *s = (npy_stage *)base;
  for (int i = 0; i < s->n; i++) {
    kiln_status st = array_start(s, &s->arrays[i], 0);
    if (st) return st;
  }
  s->next = 0;
  s->stopped = 0;
  return NULL;
}

static void npy_free(kx_stage *base) {
  npy_stage *s = (npy_stage *)base;
  for (int i = 0; i < s->n; i++) {
    npy_array *a = &s->arrays[i];
    if (a->f) fclose(a->f);
    if (a->zf) zip_fclose(a->zf);
    free(a->name);
    free(a->where);
  }
  if (s->zip) zip_discard(s->zip);
  free(s->arrays);
  free(s->names);
  free(s->scratch);
  free(s->path);
  free(s);
}

static const kx_stage_ops npy_ops = {"npy", npy_next, npy_reset, npy_free, NULL};

static kiln_status oom(void) { return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory opening a NumPy file"); }

static char *joined(const char *a, const char *sep, const char *b) {
  char *p = malloc(strlen(a) + strlen(sep) + strlen(b) + 1);
  if (p) sprintf(p, "%s%s%s", a, sep, b);
  return p;
}

static kiln_status open_npz(npy_stage *s) {
  int err = 0;
  if (!(s->zip = zip_open(s->path, ZIP_RDONLY, &err))) {
    zip_error_t ze;
    zip_error_init_with_code(&ze, err);
    kiln_status st = kiln_error(KILN_INVALID_ARGUMENT, "%s: not a readable .npz (zip) file: %s", s->path, zip_error_strerror(&ze));
    zip_error_fini(&ze);
    return st;
  }
  zip_int64_t n = zip_get_num_entries(s->zip, 0);
  if (n <= 0) return kiln_error(KILN_INVALID_ARGUMENT, "%s: the .npz holds no arrays", s->path);
  if (n > NPZ_MAX_MEMBERS) return kiln_error(KILN_INVALID_ARGUMENT, "%s: more than %d members", s->path, NPZ_MAX_MEMBERS);
  if (!(s->arrays = calloc((size_t)n, sizeof *s->arrays))) return oom();
  for (zip_int64_t i = 0; i < n; i++) {
    const char *name = zip_get_name(s->zip, (zip_uint64_t)i, 0);
    if (!name) return kiln_error(KILN_INVALID_ARGUMENT, "%s: member %lld has no name", s->path, (long long)i);
    size_t len = strlen(name);
    if (len < 5 || strcmp(name + len - 4, ".npy") != 0)
      return kiln_error(KILN_INVALID_ARGUMENT, "%s: member '%s' is not a .npy array", s->path, name);
    npy_array *a = &s->arrays[s->n++];
    a->member = (zip_uint64_t)i;
    if (!(a->name = strndup(name, len - 4)) || !(a->where = joined(s->path, ":", name))) return oom();
    kiln_status st = array_start(s, a, 1);
    if (st) return st;
  }
  return NULL;
}

static kiln_status open_npy(npy_stage *s, const char *name) {
  if (!(s->arrays = calloc(1, sizeof *s->arrays))) return oom();
  npy_array *a = &s->arrays[0];
  s->n = 1;
  if (!(a->where = strdup(s->path))) return oom();
  if (name) {
    a->name = strdup(name);
  } else { /* the file's stem */
    const char *slash = strrchr(s->path, '/'), *base = slash ? slash + 1 : s->path, *dot = strrchr(base, '.');
    a->name = strndup(base, dot && dot != base ? (size_t)(dot - base) : strlen(base));
  }
  if (!a->name) return oom();
  if (!(a->f = fopen(s->path, "rb")))
    return kiln_error(errno == ENOENT ? KILN_NOT_FOUND : KILN_IO, "%s: %s", s->path, strerror(errno));
  return array_start(s, a, 1);
}

kiln_status kx_npy_open(kx_data_ctx *ctx, const cJSON *spec, kx_stage **out) {
  static const char *const keys[] = {"format", "path", "name", NULL};
  const char *path = NULL, *name = NULL, *format = NULL;
  kiln_status st = kx_spec_keys(spec, "source", keys);
  if (!st) st = kx_spec_string(spec, "source", "path", 1, &path);
  if (!st) st = kx_spec_string(spec, "source", "name", 0, &name);
  if (!st) st = kx_spec_string(spec, "source", "format", 0, &format);
  if (st) return st;
  npy_stage *s = calloc(1, sizeof *s);
  if (!s) return oom();
  s->base.ops = &npy_ops;
  s->base.ctx = ctx;
  if (!(s->path = kx_data_path(ctx, path))) {
    npy_free(&s->base);
    return oom();
  }
  /* the format key decides; without one, the content (a zip starts with "PK") */
  int npz = 0;
  if (format && strcmp(format, "npz") == 0) {
    npz = 1;
  } else if (!format || strcmp(format, "npy") != 0) {
    FILE *f = fopen(s->path, "rb");
    char magic[2] = {0};
    if (f) {
      npz = fread(magic, 1, 2, f) == 2 && magic[0] == 'P' && magic[1] == 'K';
      fclose(f);
    }
  }
  if (npz && name) st = kiln_error(KILN_INVALID_ARGUMENT, "source.name: an .npz's features are named by its members");
  if (!st) st = npz ? open_npz(s) : open_npy(s, name);
  for (int i = 1; !st && i < s->n; i++)
    if (s->arrays[i].h.dims[0] != s->arrays[0].h.dims[0])
      st = kiln_error(KILN_INVALID_ARGUMENT, "%s: members must have the same first dimension: '%s' has %lld, '%s' has %lld",
                      s->path, s->arrays[0].name, (long long)s->arrays[0].h.dims[0], s->arrays[i].name,
                      (long long)s->arrays[i].h.dims[0]);
  /* rows of nothing cost no file bytes: bound how many such records a small file may promise */
  int all_empty = 1;
  for (int i = 0; !st && i < s->n; i++) all_empty &= s->arrays[i].row_bytes == 0;
  if (!st && s->n && all_empty && s->arrays[0].h.dims[0] > ((int64_t)1 << 20))
    st = kiln_error(KILN_INVALID_ARGUMENT, "%s: %lld records that hold no data: refused", s->path,
                    (long long)s->arrays[0].h.dims[0]);
  size_t scratch = 1;
  for (int i = 0; !st && i < s->n; i++)
    if (s->arrays[i].h.dtype == KILN_STRING && s->arrays[i].rows_held > 0 && s->arrays[i].row_bytes > scratch)
      scratch = s->arrays[i].row_bytes;
  if (!st && (!(s->names = calloc((size_t)s->n, sizeof *s->names)) || !(s->scratch = malloc(scratch)))) st = oom();
  if (st) {
    npy_free(&s->base);
    return st;
  }
  for (int i = 0; i < s->n; i++) s->names[i] = s->arrays[i].name;
  s->count = s->arrays[0].h.dims[0];
  *out = &s->base;
  return NULL;
}

/* ---------------------------------------------------------------- the NPZ writer */

/* Bytes reserved for each member's .npy header: its final text (the row count is known only at
 * the end) is padded to this length, as numpy pads its headers to a multiple of 64. */
#define NPZ_HEADER_BYTES 512

typedef struct npz_feature {
  char *name;
  kiln_dtype dtype;
  int rank;
  int64_t dims[KILN_MAX_RANK];
  FILE *f;           /* header placeholder, then the rows (strings: length-prefixed UTF-8) */
  size_t max_chars;  /* strings: the longest in code points */
} npz_feature;

typedef struct npz_writer {
  kx_writer base;
  char *path;
  npz_feature *features;
  int n;
  int64_t records;
  int finished;
} npz_writer;

static size_t utf8_chars(const char *s) {
  size_t n = 0;
  for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
  return n;
}

static kiln_status start_features(npz_writer *w, const kiln_record *r) {
  if (!(w->features = calloc((size_t)(r->count ? r->count : 1), sizeof *w->features)))
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  for (int i = 0; i < r->count; i++) {
    npz_feature *f = &w->features[i];
    const kiln_tensor *v = &r->values[i];
    w->n = i + 1;
    if (v->dtype == KILN_UNDEFINED)
      return kiln_error(KILN_INVALID_ARGUMENT, "%s: record %lld: feature '%s' is missing", w->path, (long long)w->records,
                        r->names[i]);
    if (v->dtype != KILN_STRING && !kx_npy_descr(v->dtype))
      return kiln_error(KILN_UNIMPLEMENTED, "%s: feature '%s': dtype %s has no .npy form", w->path, r->names[i],
                        kiln_dtype_name(v->dtype));
    if (v->rank >= KILN_MAX_RANK)
      return kiln_error(KILN_UNIMPLEMENTED, "%s: feature '%s' of rank %d cannot gain a batch axis", w->path, r->names[i], v->rank);
    if (!(f->name = strdup(r->names[i]))) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    f->dtype = v->dtype;
    f->rank = v->rank;
    memcpy(f->dims, v->dims, sizeof f->dims);
    static const char zeros[NPZ_HEADER_BYTES];
    if (!(f->f = tmpfile()) || fwrite(zeros, 1, sizeof zeros, f->f) != sizeof zeros)
      return kiln_error(KILN_IO, "%s: cannot create a temporary file: %s", w->path, strerror(errno));
  }
  return NULL;
}

static kiln_status npz_write(kx_writer *base, const kiln_record *r) {
  npz_writer *w = (npz_writer *)base;
  kiln_status s;
  if (!w->features && (s = start_features(w, r))) return s;
  if (r->count != w->n)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: record %lld has %d features, the first had %d", w->path,
                      (long long)w->records, r->count, w->n);
  for (int i = 0; i < w->n; i++) {
    npz_feature *f = &w->features[i];
    const kiln_tensor *v = &r->values[i];
    char have[96], want[96];
    kiln_tensor shape = {.dtype = f->dtype, .rank = f->rank};
    memcpy(shape.dims, f->dims, sizeof shape.dims);
    if (strcmp(r->names[i], f->name) != 0 || v->dtype != f->dtype || v->rank != f->rank ||
        memcmp(v->dims, f->dims, sizeof(int64_t) * (size_t)f->rank) != 0)
      return kiln_error(KILN_INVALID_ARGUMENT, "%s: record %lld: feature '%s' is %s, but the first record's '%s' was %s",
                        w->path, (long long)w->records, r->names[i], kiln_tensor_describe(v, have, sizeof have), f->name,
                        kiln_tensor_describe(&shape, want, sizeof want));
    int ok = 1;
    if (f->dtype == KILN_STRING) {
      int64_t n = kiln_tensor_numel(v);
      for (int64_t k = 0; k < n && ok; k++) {
        const char *text = ((char *const *)v->data)[k];
        if (!text) text = "";
        uint32_t len = (uint32_t)strlen(text);
        size_t chars = utf8_chars(text);
        if (chars > f->max_chars) f->max_chars = chars;
        ok = fwrite(&len, sizeof len, 1, f->f) == 1 && fwrite(text, 1, len, f->f) == len;
      }
    } else {
      size_t bytes = kiln_tensor_nbytes(v);
      ok = !bytes || fwrite(v->data, 1, bytes, f->f) == bytes;
    }
    if (!ok) return kiln_error(KILN_IO, "%s: writing a temporary file failed: %s", w->path, strerror(errno));
  }
  w->records++;
  return NULL;
}

/* Decodes one UTF-8 sequence (invalid bytes read as U+FFFD); returns the bytes used. */
static int next_code_point(const unsigned char *s, uint32_t *cp) {
  int n = s[0] < 0x80 ? 1 : (s[0] & 0xE0) == 0xC0 ? 2 : (s[0] & 0xF0) == 0xE0 ? 3 : (s[0] & 0xF8) == 0xF0 ? 4 : 0;
  if (!n) return *cp = 0xFFFD, 1;
  uint32_t c = n == 1 ? s[0] : s[0] & (0x7Fu >> n);
  for (int i = 1; i < n; i++) {
    if ((s[i] & 0xC0) != 0x80) return *cp = 0xFFFD, 1;
    c = c << 6 | (s[i] & 0x3F);
  }
  *cp = c;
  return n;
}

/* Rewrites a strings feature's temporary file as fixed-width UTF-32 ('<U' width) after the header. */
static kiln_status widen_strings(npz_writer *w, npz_feature *f, size_t width) {
  FILE *out = tmpfile();
  static const char zeros[NPZ_HEADER_BYTES];
  if (!out || fwrite(zeros, 1, sizeof zeros, out) != sizeof zeros || fseek(f->f, NPZ_HEADER_BYTES, SEEK_SET) != 0) {
    if (out) fclose(out);
    return kiln_error(KILN_IO, "%s: temporary file: %s", w->path, strerror(errno));
  }
  uint32_t *wide = malloc(width * 4);
  char *text = NULL;
  size_t text_cap = 0;
  kiln_status st = wide ? NULL : kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  uint32_t len;
  while (!st && fread(&len, sizeof len, 1, f->f) == 1) {
    if (len + 1 > text_cap) {
      char *bigger = realloc(text, len + 1);
      if (!bigger) {
        st = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
        break;
      }
      text = bigger, text_cap = len + 1;
    }
    if (fread(text, 1, len, f->f) != len) {
      st = kiln_error(KILN_IO, "%s: reading a temporary file failed", w->path);
      break;
    }
    text[len] = '\0';
    memset(wide, 0, width * 4);
    const unsigned char *p = (const unsigned char *)text;
    for (size_t k = 0; *p && k < width; k++) p += next_code_point(p, &wide[k]); /* little-endian hosts */
    if (fwrite(wide, 4, width, out) != width) st = kiln_error(KILN_IO, "%s: temporary file: %s", w->path, strerror(errno));
  }
  free(wide);
  free(text);
  fclose(f->f);
  f->f = out;
  return st;
}

static kiln_status npz_finish(kx_writer *base) {
  npz_writer *w = (npz_writer *)base;
  if (w->records == 0)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: no records to write: an .npz takes its arrays from the first record", w->path);
  int err = 0;
  zip_t *z = zip_open(w->path, ZIP_CREATE | ZIP_TRUNCATE, &err);
  if (!z) return kiln_error(KILN_IO, "%s: cannot create the zip file (libzip error %d)", w->path, err);
  kiln_status st = NULL;
  for (int i = 0; i < w->n && !st; i++) {
    npz_feature *f = &w->features[i];
    char descr[32];
    if (f->dtype == KILN_STRING) {
      size_t width = f->max_chars ? f->max_chars : 1;
      snprintf(descr, sizeof descr, "<U%zu", width);
      if ((st = widen_strings(w, f, width))) break;
    } else {
      snprintf(descr, sizeof descr, "%s", kx_npy_descr(f->dtype));
    }
    char header[NPZ_HEADER_BYTES];
    int len = snprintf(header, sizeof header, "{'descr': '%s', 'fortran_order': False, 'shape': (%lld,", descr,
                       (long long)w->records);
    for (int d = 0; d < f->rank; d++)
      len += snprintf(header + len, sizeof header - (size_t)len, " %lld%s", (long long)f->dims[d], d + 1 < f->rank ? "," : "");
    len += snprintf(header + len, sizeof header - (size_t)len, "), }");
    /* magic (10 bytes) + dict + spaces + '\n' fill the reserved bytes exactly */
    unsigned hl = NPZ_HEADER_BYTES - 10;
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hl & 0xFF), (unsigned char)(hl >> 8)};
    memset(header + len, ' ', sizeof header - (size_t)len);
    if (fseek(f->f, 0, SEEK_SET) != 0 || fwrite(pre, 1, 10, f->f) != 10 || fwrite(header, 1, hl - 1, f->f) != hl - 1 ||
        fputc('\n', f->f) == EOF || fflush(f->f) != 0 || fseek(f->f, 0, SEEK_SET) != 0) {
      st = kiln_error(KILN_IO, "%s: temporary file: %s", w->path, strerror(errno));
      break;
    }
    zip_source_t *src = zip_source_filep(z, f->f, 0, -1);
    if (src) f->f = NULL; /* the zip source owns it now (freeing the source closes it) */
    char *member = joined(f->name, "", ".npy");
    zip_int64_t idx = src && member ? zip_file_add(z, member, src, ZIP_FL_OVERWRITE | ZIP_FL_ENC_UTF_8) : -1;
    free(member);
    if (idx < 0) {
      if (src) zip_source_free(src);
      st = kiln_error(KILN_IO, "%s: cannot add feature '%s': %s", w->path, f->name, zip_strerror(z));
      break;
    }
    if (zip_set_file_compression(z, (zip_uint64_t)idx, ZIP_CM_STORE, 0) != 0)
      st = kiln_error(KILN_IO, "%s: %s", w->path, zip_strerror(z));
  }
  /* zip_close writes a temporary file beside the archive and renames it into place */
  if (!st && zip_close(z) != 0) st = kiln_error(KILN_IO, "%s: writing the zip failed: %s", w->path, zip_strerror(z));
  if (st) zip_discard(z);
  else w->finished = 1;
  return st;
}

static void npz_writer_free(kx_writer *base) {
  npz_writer *w = (npz_writer *)base;
  for (int i = 0; i < w->n; i++) {
    if (w->features[i].f) fclose(w->features[i].f);
    free(w->features[i].name);
  }
  free(w->features);
  free(w->path);
  free(w);
}

kiln_status kx_npz_writer_open(const char *path, kx_writer **out) {
  npz_writer *w = calloc(1, sizeof *w);
  if (!w || !(w->path = strdup(path))) {
    free(w);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  }
  w->base.write = npz_write;
  w->base.finish = npz_finish;
  w->base.free = npz_writer_free;
  *out = &w->base;
  return NULL;
}
