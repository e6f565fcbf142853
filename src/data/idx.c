/* The IDX source: MNIST-style files (an images file, optionally paired with a labels file),
 * plain or gzip-compressed, streamed record by record. */
#include "data/data.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

/* A record bigger than this is refused at open: no IDX dataset has one, and the number comes
 * from the file. */
#define IDX_MAX_RECORD_BYTES ((size_t)1 << 30)
#define IDX_GZ_BUFFER (256 * 1024)
#define DIRECT_READ_BYTES ((size_t)1 << 20)

/* One IDX file: a header (2 zero bytes, dtype code, rank, big-endian u32 dims) and big-endian data. */
typedef struct idx_file {
  char *path;
  gzFile gz;
  kiln_dtype dtype;
  int rank;
  int64_t dims[4];
  size_t header_bytes;
  size_t record_bytes; /* bytes of one record: the product of dims[1:] times the element size */
} idx_file;

typedef struct idx_stage {
  kx_stage base;
  idx_file files[2]; /* images (or the only file), labels */
  int n_files;
  char *name; /* the `name` override, owned */
  const char *names[2];
  int64_t count; /* records in the dataset */
  int64_t next;  /* index of the next record */
  int stopped;   /* a file ended early: the source is done */
} idx_stage;

static kiln_dtype idx_dtype(int code) {
  switch (code) {
  case 0x08: return KILN_UINT8;
  case 0x09: return KILN_INT8;
  case 0x0B: return KILN_INT16;
  case 0x0C: return KILN_INT32;
  case 0x0D: return KILN_FLOAT;
  case 0x0E: return KILN_DOUBLE;
  default: return KILN_UNDEFINED;
  }
}

static kiln_status read_header(idx_file *f) {
  unsigned char h[4 + 4 * 4];
  int got = gzread(f->gz, h, 4);
  if (got != 4)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: not an IDX file: it ends within the 4-byte magic", f->path);
  if (h[0] != 0 || h[1] != 0)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: not an IDX file: the magic starts with %02x %02x, expected 00 00",
                      f->path, h[0], h[1]);
  f->dtype = idx_dtype(h[2]);
  if (f->dtype == KILN_UNDEFINED)
    return kiln_error(KILN_INVALID_ARGUMENT,
                      "%s: IDX dtype code 0x%02X is not one of 08 (u8), 09 (i8), 0B (i16), 0C (i32), 0D (f32), 0E (f64)",
                      f->path, h[2]);
  f->rank = h[3];
  if (f->rank < 1 || f->rank > 4)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: IDX rank %d is outside 1..4", f->path, f->rank);
  size_t dims_bytes = 4 * (size_t)f->rank;
  if (gzread(f->gz, h + 4, (unsigned)dims_bytes) != (int)dims_bytes)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: IDX header ends within its %d dimensions", f->path, f->rank);
  size_t bytes = kiln_dtype_size(f->dtype);
  for (int i = 0; i < f->rank; i++) {
    const unsigned char *d = h + 4 + 4 * i;
    f->dims[i] = (int64_t)((uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3]);
    if (i == 0) continue;
    if (f->dims[i] == 0) /* empty records, up to 2^32 of them, from a few bytes of file */
      return kiln_error(KILN_INVALID_ARGUMENT, "%s: IDX dimension %d is 0: records would hold nothing", f->path, i);
    if (bytes > IDX_MAX_RECORD_BYTES / (size_t)f->dims[i])
      return kiln_error(KILN_INVALID_ARGUMENT, "%s: IDX records of more than %zu bytes are not supported", f->path,
                        IDX_MAX_RECORD_BYTES);
    bytes *= (size_t)f->dims[i];
  }
  f->record_bytes = bytes;
  f->header_bytes = 4 + dims_bytes;
  return NULL;
}

static kiln_status open_file(idx_file *f, char *path) {
  f->path = path;
  /* gzread detects gzip by its magic (1f 8b) and reads anything else as it is, so a file's
   * name does not decide how it is read. */
  f->gz = gzopen(path, "rb");
  if (!f->gz) return kiln_error(errno == ENOENT ? KILN_NOT_FOUND : KILN_IO, "%s: %s", path, strerror(errno));
  if (gzbuffer(f->gz, IDX_GZ_BUFFER) != 0) return kiln_error(KILN_INTERNAL, "%s: gzbuffer failed", path);
  return read_header(f);
}

static void close_file(idx_file *f) {
  if (f->gz) gzclose(f->gz);
  free(f->path);
  memset(f, 0, sizeof *f);
}

char *kx_idx_labels_for(const char *images_path) {
  static const char from[] = "-images-idx3-ubyte", to[] = "-labels-idx1-ubyte";
  const char *at = strstr(images_path, from);
  if (!at) return NULL;
  char *labels = strdup(images_path);
  if (!labels) return NULL;
  memcpy(labels + (at - images_path), to, sizeof to - 1);
  struct stat st;
  if (stat(labels, &st) != 0 || !S_ISREG(st.st_mode)) {
    free(labels);
    return NULL;
  }
  return labels;
}

/* Converts n big-endian elements of `size` bytes in place. */
static void from_big_endian(unsigned char *p, size_t n, size_t size) {
  if (size == 1) return;
  for (size_t i = 0; i < n; i++, p += size)
    for (size_t a = 0, b = size - 1; a < b; a++, b--) {
      unsigned char t = p[a];
      p[a] = p[b];
      p[b] = t;
    }
}

/* Reads a record above DIRECT_READ_BYTES into a buffer that grows with what the file really
 * holds, before any record block is allocated: a header that claims huge records then costs
 * memory only as far as its data goes. Returns the buffer (NULL when memory ran out) and the
 * bytes read in *got; *failed is set when the read failed rather than the file ending. */
static unsigned char *read_big(idx_file *f, size_t *got, int *failed) {
  size_t have = 0, cap = 0;
  unsigned char *buf = NULL;
  while (have < f->record_bytes) {
    size_t want = f->record_bytes - have < DIRECT_READ_BYTES ? f->record_bytes - have : DIRECT_READ_BYTES;
    if (have + want > cap) {
      size_t bigger = cap ? cap * 2 : DIRECT_READ_BYTES;
      if (bigger > f->record_bytes) bigger = f->record_bytes;
      unsigned char *b = realloc(buf, bigger);
      if (!b) {
        free(buf);
        return NULL;
      }
      buf = b, cap = bigger;
    }
    int n = gzread(f->gz, buf + have, (unsigned)want);
    if (n < 0) *failed = 1;
    if (n <= 0) break;
    have += (size_t)n;
  }
  *got = have;
  return buf; /* record_bytes > 0: the first pass through the loop allocated it */
}

/* Where file f ended early or could not be read: a short file is one bad record (at the images
 * file's position of the record) and stops the source; a failed read is an I/O error. */
static kiln_status ended(idx_stage *s, idx_file *f, int read_error) {
  s->stopped = 1;
  if (read_error) {
    int zerr = 0;
    const char *zmsg = gzerror(f->gz, &zerr);
    return kiln_error(KILN_IO, "%s: read failed at record %lld: %s", f->path, (long long)s->next, zmsg ? zmsg : "?");
  }
  const idx_file *first = &s->files[0];
  kiln_status why = kiln_error(KILN_INVALID_ARGUMENT, "%s: file ends after %lld of %lld records", f->path,
                               (long long)s->next, (long long)s->count);
  return kx_bad_record(s->base.ctx, first->path, s->next,
                       (int64_t)(first->header_bytes + (size_t)s->next * first->record_bytes), NULL, 0, why);
}

static kiln_status idx_next(kx_stage *base, kiln_record *out, int *done) {
  idx_stage *s = (idx_stage *)base;
  memset(out, 0, sizeof *out);
  *done = 0;
  if (s->stopped || s->next >= s->count) {
    *done = 1;
    return NULL;
  }
  atomic_fetch_add(&s->base.ctx->read, 1);
  unsigned char *big[2] = {NULL, NULL};
  kiln_status st = NULL;
  for (int i = 0; i < s->n_files && !st && !*done; i++) {
    if (s->files[i].record_bytes <= DIRECT_READ_BYTES) continue;
    size_t got;
    int failed = 0;
    big[i] = read_big(&s->files[i], &got, &failed);
    if (!big[i]) st = kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: out of memory reading a record", s->files[i].path);
    else if (got != s->files[i].record_bytes) st = ended(s, &s->files[i], failed), *done = 1;
  }
  size_t offset1 = kx_align64(s->files[0].record_bytes);
  size_t total = s->n_files == 2 ? offset1 + s->files[1].record_bytes : s->files[0].record_bytes;
  void *data = NULL;
  kiln_record r = {0};
  if (!st && !*done) st = kiln_record_init(&r, s->names, s->n_files, total, &data);
  for (int i = 0; i < s->n_files && !st && !*done; i++) {
    idx_file *f = &s->files[i];
    unsigned char *p = (unsigned char *)data + (i ? offset1 : 0); /* total > 0: no dim is 0 */
    if (big[i]) {
      memcpy(p, big[i], f->record_bytes);
    } else {
      int got = f->record_bytes ? gzread(f->gz, p, (unsigned)f->record_bytes) : 0;
      if (got != (int)f->record_bytes) {
        st = ended(s, f, got < 0);
        *done = 1;
        break;
      }
    }
    from_big_endian(p, f->record_bytes / kiln_dtype_size(f->dtype), kiln_dtype_size(f->dtype));
    kiln_tensor *v = &r.values[i];
    if ((st = kiln_tensor_set_shape(v, f->dtype, f->rank - 1, f->dims + 1))) break;
    v->data = f->record_bytes ? p : NULL;
  }
  free(big[0]);
  free(big[1]);
  if (st || *done) {
    kiln_record_release(&r);
    if (st) *done = 0;
    return st;
  }
  r.source = s->files[0].path;
  r.index = s->next;
  r.offset = (int64_t)(s->files[0].header_bytes + (size_t)s->next * s->files[0].record_bytes);
  s->next++;
  *out = r;
  return NULL;
}

static kiln_status idx_reset(kx_stage *base, int64_t epoch) {
  idx_stage *s = (idx_stage *)base;
  for (int i = 0; i < s->n_files; i++) {
    idx_file *f = &s->files[i];
    gzclearerr(f->gz);
    if (gzrewind(f->gz) != 0 || gzseek(f->gz, (z_off_t)f->header_bytes, SEEK_SET) != (z_off_t)f->header_bytes)
      return kiln_error(KILN_IO, "%s: cannot rewind for epoch %lld", f->path, (long long)epoch);
  }
  s->next = 0;
  s->stopped = 0;
  return NULL;
}

static void idx_free(kx_stage *base) {
  idx_stage *s = (idx_stage *)base;
  for (int i = 0; i < 2; i++) close_file(&s->files[i]);
  free(s->name);
  free(s);
}

static const kx_stage_ops idx_ops = {"idx", idx_next, idx_reset, idx_free, NULL};

kiln_status kx_idx_open(kx_data_ctx *ctx, const cJSON *spec, kx_stage **out) {
  static const char *const keys[] = {"format", "path", "labels", "name", NULL};
  const char *path = NULL, *labels = NULL, *name = NULL;
  kiln_status st = kx_spec_keys(spec, "source", keys);
  if (!st) st = kx_spec_string(spec, "source", "path", 1, &path);
  if (!st) st = kx_spec_string(spec, "source", "labels", 0, &labels);
  if (!st) st = kx_spec_string(spec, "source", "name", 0, &name);
  if (st) return st;
  idx_stage *s = calloc(1, sizeof *s);
  if (!s) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  s->base.ops = &idx_ops;
  s->base.ctx = ctx;
  char *images_path = kx_data_path(ctx, path);
  char *labels_path = labels ? kx_data_path(ctx, labels) : images_path ? kx_idx_labels_for(images_path) : NULL;
  if (!images_path || (labels && !labels_path) || (name && !(s->name = strdup(name)))) {
    free(images_path);
    free(labels_path);
    idx_free(&s->base);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  }
  s->n_files = 1;
  st = open_file(&s->files[0], images_path);
  if (!st && labels_path) {
    s->n_files = 2;
    st = open_file(&s->files[1], labels_path);
    labels_path = NULL;
  }
  free(labels_path);
  if (!st && s->n_files == 2 && s->files[0].dims[0] != s->files[1].dims[0])
    st = kiln_error(KILN_INVALID_ARGUMENT, "%s has %lld records but its labels file %s has %lld", s->files[0].path,
                    (long long)s->files[0].dims[0], s->files[1].path, (long long)s->files[1].dims[0]);
  if (st) {
    idx_free(&s->base);
    return st;
  }
  s->count = s->files[0].dims[0];
  if (s->n_files == 2) {
    s->names[0] = s->name ? s->name : "image";
    s->names[1] = "label";
  } else {
    s->names[0] = s->name ? s->name : s->files[0].rank >= 2 ? "image" : "label";
  }
  *out = &s->base;
  return NULL;
}
