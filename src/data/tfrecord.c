/* TFRecord files of tf.train.Example: a streaming reader (plain or gzip, CRC-32C-checked framing)
 * and a writer. The Example wire format is decoded and encoded by protobuf-c code generated from
 * kiln's copy of TensorFlow's messages (proto/tensorflow/core/example). */
#include "data/data.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <isa-l/crc.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "core/buf.h"
#include "tensorflow/core/example/example.pb-c.h"

#define DEFAULT_MAX_RECORD_BYTES ((int64_t)64 << 20)
#define MAX_RECORD_BYTES_LIMIT ((int64_t)1 << 32)
/* Distinct feature-name sets interned per file before we insist on a `features` description:
 * each set costs memory for the dataset's life, and a file of ever-new names is a schema problem. */
#define MAX_NAME_SETS 256
#define MAX_SPEC_FEATURES 4096
#define HEADER_BYTES 12 /* uint64 length + uint32 masked CRC of it */
#define GZIP_INPUT_BYTES (256 << 10)
#define SCRATCH_BYTES (64 << 10)
/* Every value region of a record starts at this alignment inside the record's block. */
#define VALUE_ALIGN 16

enum { COMPRESSION_DETECT, COMPRESSION_NONE, COMPRESSION_GZIP };

/* ---------------------------------------------------------------- CRC-32C */

uint32_t kx_crc32c(const void *data, size_t len) {
  /* ISA-L's crc32_iscsi neither inverts its seed nor its result: the standard CRC-32C starts from
   * all ones and inverts at the end. Its length is an int, so long buffers go in slices. */
  const unsigned char *p = data;
  uint32_t crc = 0xFFFFFFFFu;
  while (len > 0) {
    int n = len > (size_t)(1 << 30) ? 1 << 30 : (int)len;
    crc = crc32_iscsi((unsigned char *)p, n, crc);
    p += n;
    len -= (size_t)n;
  }
  return ~crc;
}

uint32_t kx_tfrecord_masked_crc(const void *data, size_t len) {
  uint32_t crc = kx_crc32c(data, len);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

static uint64_t get_le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

static uint32_t get_le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_le64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static size_t align_up(size_t n) { return (n + VALUE_ALIGN - 1) / VALUE_ALIGN * VALUE_ALIGN; }

/* ---------------------------------------------------------------- the source */

/* One feature of a `features` description. */
typedef struct spec_feature {
  kiln_dtype dtype; /* FLOAT, INT64, STRING or UINT8 */
  int has_shape;    /* without one, the values form a vector of whatever length they have */
  int rank;
  int64_t dims[KILN_MAX_RANK];
  int64_t numel;
} spec_feature;

/* The sorted feature names of one kind of Example, interned: records point at them. */
typedef struct name_set {
  int count;
  char **names; /* one allocation: the pointers, then the strings */
} name_set;

/* How one feature of one Example becomes a tensor. */
typedef struct feature_plan {
  const Tensorflow__Feature *feature; /* NULL: missing */
  kiln_dtype dtype;
  int rank;
  int64_t dims[KILN_MAX_RANK];
  size_t bytes; /* of its region in the record's block, aligned */
} feature_plan;

typedef struct map_entry {
  const char *key;
  const Tensorflow__Feature *feature;
  size_t order; /* position in the Example: the last of equal keys wins, as in protobuf maps */
} map_entry;

typedef struct tfr_source {
  kx_stage base;
  char *path;
  FILE *file;
  int64_t file_size;
  int gzip;
  z_stream z;
  int z_ready;
  int z_between_members; /* inflate finished a gzip member (or has not started one) */
  uint8_t *z_input;
  int64_t pos;   /* bytes of the (uncompressed) record stream consumed */
  int64_t index; /* ordinal of the next record */
  int finished;
  size_t max_record_bytes;
  uint8_t *buf; /* one record's data and CRC */
  size_t buf_cap;
  /* a `features` description, or none (n_spec < 0) */
  int n_spec;
  spec_feature *spec;
  char **spec_names;
  /* name sets seen so far, without a description */
  name_set sets[MAX_NAME_SETS];
  int n_sets;
  int last_set;
  /* per-record scratch, reused */
  map_entry *entries;
  size_t entries_cap;
  feature_plan *plans;
  size_t plans_cap;
} tfr_source;

static const kx_stage_ops tfr_ops;

/* A compressed stream that does not decode: framing is lost from there on, like a bad length CRC. */
#define CORRUPT KILN_OUT_OF_RANGE

static kiln_status read_plain(tfr_source *s, uint8_t *dst, size_t n, size_t *got) {
  *got = fread(dst, 1, n, s->file);
  if (*got < n && ferror(s->file)) return kiln_error(KILN_IO, "%s: read failed: %s", s->path, strerror(errno));
  return NULL;
}

static kiln_status read_gzip(tfr_source *s, uint8_t *dst, size_t n, size_t *got) {
  z_stream *z = &s->z;
  *got = 0;
  while (*got < n) {
    if (z->avail_in == 0) {
      size_t r = fread(s->z_input, 1, GZIP_INPUT_BYTES, s->file);
      if (r == 0) {
        if (ferror(s->file)) return kiln_error(KILN_IO, "%s: read failed: %s", s->path, strerror(errno));
        if (s->z_between_members) return NULL; /* the end of the file */
        return kiln_error(CORRUPT, "the gzip stream ends in the middle of a member (truncated file)");
      }
      z->next_in = s->z_input;
      z->avail_in = (uInt)r;
    }
    if (s->z_between_members) {
      /* Concatenated gzip members form one stream (as gzip -d and tf.data read them). */
      if (inflateReset(z) != Z_OK) return kiln_error(KILN_INTERNAL, "%s: zlib inflateReset failed", s->path);
      s->z_between_members = 0;
    }
    size_t want = n - *got > UINT_MAX ? UINT_MAX : n - *got;
    z->next_out = dst + *got;
    z->avail_out = (uInt)want;
    int rc = inflate(z, Z_NO_FLUSH);
    *got += want - z->avail_out;
    if (rc == Z_STREAM_END) {
      s->z_between_members = 1;
    } else if (rc == Z_MEM_ERROR) {
      return kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: out of memory decompressing", s->path);
    } else if (rc != Z_OK) {
      return kiln_error(CORRUPT, "the gzip stream is corrupt (zlib: %s)", z->msg ? z->msg : "no detail");
    }
  }
  return NULL;
}

/* Reads up to n bytes of the record stream; *got < n only at its end. */
static kiln_status stream_read(tfr_source *s, uint8_t *dst, size_t n, size_t *got) {
  kiln_status e = s->gzip ? read_gzip(s, dst, n, got) : read_plain(s, dst, n, got);
  s->pos += (int64_t)*got;
  return e;
}

static kiln_status grow_buffer(tfr_source *s, size_t need) {
  if (need <= s->buf_cap) return NULL;
  size_t cap = s->buf_cap ? s->buf_cap : SCRATCH_BYTES;
  while (cap < need) cap = cap > need / 2 ? need : cap * 2; /* never more than the record needs */
  uint8_t *b = realloc(s->buf, cap);
  if (!b) return kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: out of memory for a record of %zu bytes", s->path, need);
  s->buf = b;
  s->buf_cap = cap;
  return NULL;
}

/* Consumes n bytes of the stream without keeping them; *got < n at its end. */
static kiln_status stream_skip(tfr_source *s, uint64_t n, uint64_t *got) {
  *got = 0;
  if (!s->gzip) {
    uint64_t left = s->pos < s->file_size ? (uint64_t)(s->file_size - s->pos) : 0;
    uint64_t step = n < left ? n : left;
    if (step > (uint64_t)INT64_MAX || fseeko(s->file, (off_t)step, SEEK_CUR) != 0)
      return kiln_error(KILN_IO, "%s: seek failed: %s", s->path, strerror(errno));
    s->pos += (int64_t)step;
    *got = step;
    return NULL;
  }
  kiln_status e = grow_buffer(s, SCRATCH_BYTES);
  while (!e && *got < n) {
    size_t want = n - *got < SCRATCH_BYTES ? (size_t)(n - *got) : SCRATCH_BYTES, part;
    e = stream_read(s, s->buf, want, &part);
    *got += part;
    if (part < want) break;
  }
  return e;
}

/* Rewinds to the first byte of the file. */
static kiln_status rewind_stream(tfr_source *s) {
  if (fseeko(s->file, 0, SEEK_SET) != 0) return kiln_error(KILN_IO, "%s: seek failed: %s", s->path, strerror(errno));
  clearerr(s->file);
  if (s->gzip) {
    s->z.avail_in = 0;
    s->z_between_members = 1;
  }
  s->pos = 0;
  s->index = 0;
  s->finished = 0;
  return NULL;
}

/* ---------------------------------------------------------------- Example → record */

static int compare_entries(const void *a, const void *b) {
  const map_entry *x = a, *y = b;
  int c = strcmp(x->key, y->key);
  if (c) return c;
  return x->order < y->order ? -1 : x->order > y->order;
}

static int compare_key(const void *key, const void *entry) {
  return strcmp(key, ((const map_entry *)entry)->key);
}

/* The Example's features sorted by name, duplicates resolved (the last wins); returns the count. */
static kiln_status sorted_entries(tfr_source *s, const Tensorflow__Example *ex, size_t *count) {
  size_t n = ex->features ? ex->features->n_feature : 0;
  *count = 0;
  if (n > s->entries_cap) {
    map_entry *e = realloc(s->entries, n * sizeof *e);
    if (!e) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for %zu features", n);
    s->entries = e;
    s->entries_cap = n;
  }
  for (size_t i = 0; i < n; i++) {
    const Tensorflow__Features__FeatureEntry *fe = ex->features->feature[i];
    s->entries[i] = (map_entry){fe->key ? fe->key : "", fe->value, i};
  }
  if (n > 1) qsort(s->entries, n, sizeof *s->entries, compare_entries);
  size_t kept = 0;
  for (size_t i = 0; i < n; i++) {
    if (i + 1 < n && strcmp(s->entries[i].key, s->entries[i + 1].key) == 0) continue;
    s->entries[kept++] = s->entries[i];
  }
  *count = kept;
  return NULL;
}

static const char *kind_name(const Tensorflow__Feature *f) {
  switch (f ? f->kind_case : TENSORFLOW__FEATURE__KIND__NOT_SET) {
  case TENSORFLOW__FEATURE__KIND_BYTES_LIST: return "bytes_list";
  case TENSORFLOW__FEATURE__KIND_FLOAT_LIST: return "float_list";
  case TENSORFLOW__FEATURE__KIND_INT64_LIST: return "int64_list";
  default: return "no list";
  }
}

static size_t string_bytes(const Tensorflow__BytesList *b) {
  size_t total = align_up(b->n_value * sizeof(char *));
  for (size_t i = 0; i < b->n_value; i++) total += b->value[i].len + 1;
  return align_up(total);
}

/* protobuf-c leaves data NULL for empty values, which memchr may not be given. */
static int has_nul(const ProtobufCBinaryData *v) { return v->len && memchr(v->data, 0, v->len); }

static int is_text(const ProtobufCBinaryData *v) { return !v->len || (!has_nul(v) && kx_is_utf8(v->data, v->len)); }

static kiln_status plan_vector(feature_plan *p, kiln_dtype dtype, int64_t n, size_t elem) {
  p->dtype = dtype;
  p->rank = 1;
  p->dims[0] = n;
  p->bytes = align_up((size_t)n * elem);
  return NULL;
}

/* Without a description: the feature's own list decides. */
static kiln_status plan_free(feature_plan *p, const char *name, const Tensorflow__Feature *f) {
  memset(p, 0, sizeof *p);
  p->feature = f;
  switch (f ? f->kind_case : TENSORFLOW__FEATURE__KIND__NOT_SET) {
  case TENSORFLOW__FEATURE__KIND_FLOAT_LIST:
    return plan_vector(p, KILN_FLOAT, (int64_t)f->float_list->n_value, sizeof(float));
  case TENSORFLOW__FEATURE__KIND_INT64_LIST:
    return plan_vector(p, KILN_INT64, (int64_t)f->int64_list->n_value, sizeof(int64_t));
  case TENSORFLOW__FEATURE__KIND_BYTES_LIST: {
    const Tensorflow__BytesList *b = f->bytes_list;
    size_t binary = 0;
    for (size_t i = 0; i < b->n_value; i++) binary += !is_text(&b->value[i]);
    if (binary == 0) {
      plan_vector(p, KILN_STRING, (int64_t)b->n_value, 0);
      p->bytes = string_bytes(b);
      return NULL;
    }
    if (b->n_value == 1) return plan_vector(p, KILN_UINT8, (int64_t)b->value[0].len, 1);
    return kiln_error(KILN_INVALID_ARGUMENT,
                      "feature '%s': a bytes_list of %zu values, %zu of them binary (not UTF-8 text without NUL "
                      "bytes); only a single binary value can be read (as uint8) — describe the feature with "
                      "`features` as dtype \"string\" if its values are text",
                      name, b->n_value, binary);
  }
  default: p->feature = NULL; return NULL; /* a Feature with no list: a missing value */
  }
}

static Tensorflow__Feature__KindCase kind_for(kiln_dtype t) {
  switch (t) {
  case KILN_FLOAT: return TENSORFLOW__FEATURE__KIND_FLOAT_LIST;
  case KILN_INT64: return TENSORFLOW__FEATURE__KIND_INT64_LIST;
  default: return TENSORFLOW__FEATURE__KIND_BYTES_LIST;
  }
}

/* With a description: the list must be of the described kind and fill the described shape. */
static kiln_status plan_described(feature_plan *p, const char *name, const spec_feature *sf,
                                  const Tensorflow__Feature *f) {
  memset(p, 0, sizeof *p);
  if (!f) return NULL; /* absent from this Example: a missing value */
  Tensorflow__Feature__KindCase want = kind_for(sf->dtype);
  if (f->kind_case != want && f->kind_case != TENSORFLOW__FEATURE__KIND__NOT_SET)
    return kiln_error(KILN_INVALID_ARGUMENT, "feature '%s': expected %s (dtype %s), found %s", name,
                      want == TENSORFLOW__FEATURE__KIND_FLOAT_LIST   ? "float_list"
                      : want == TENSORFLOW__FEATURE__KIND_INT64_LIST ? "int64_list"
                                                                     : "bytes_list",
                      kiln_dtype_name(sf->dtype), kind_name(f));
  /* A Feature with no list reads as an empty list of the described kind (as in TensorFlow). */
  int set = f->kind_case != TENSORFLOW__FEATURE__KIND__NOT_SET;
  int64_t count;
  size_t bytes;
  switch (sf->dtype) {
  case KILN_FLOAT:
    count = set ? (int64_t)f->float_list->n_value : 0;
    bytes = align_up((size_t)count * sizeof(float));
    break;
  case KILN_INT64:
    count = set ? (int64_t)f->int64_list->n_value : 0;
    bytes = align_up((size_t)count * sizeof(int64_t));
    break;
  case KILN_STRING:
    count = set ? (int64_t)f->bytes_list->n_value : 0;
    for (int64_t i = 0; i < count; i++)
      if (has_nul(&f->bytes_list->value[i]))
        return kiln_error(KILN_INVALID_ARGUMENT,
                          "feature '%s': value %lld holds a NUL byte, which a string cannot; describe it as "
                          "dtype \"uint8\"",
                          name, (long long)i);
    bytes = set ? string_bytes(f->bytes_list) : 0;
    break;
  default: /* UINT8: one bytes value, its bytes the elements (raw pixels, an encoded image) */
    if (set && f->bytes_list->n_value != 1)
      return kiln_error(KILN_INVALID_ARGUMENT, "feature '%s': dtype uint8 needs a bytes_list of exactly 1 value, found %zu",
                        name, f->bytes_list->n_value);
    count = set ? (int64_t)f->bytes_list->value[0].len : 0;
    bytes = align_up((size_t)count);
    break;
  }
  if (sf->has_shape && count != sf->numel) {
    char shape[160] = "";
    size_t used = 0;
    for (int i = 0; i < sf->rank && used < sizeof shape; i++)
      used += (size_t)snprintf(shape + used, sizeof shape - used, i ? ",%lld" : "%lld", (long long)sf->dims[i]);
    return kiln_error(KILN_INVALID_ARGUMENT, "feature '%s': shape [%s] needs %lld values, found %lld", name, shape,
                      (long long)sf->numel, (long long)count);
  }
  p->feature = f;
  p->dtype = sf->dtype;
  if (sf->has_shape) {
    p->rank = sf->rank;
    memcpy(p->dims, sf->dims, sizeof p->dims);
  } else {
    p->rank = 1;
    p->dims[0] = count;
  }
  p->bytes = bytes;
  return NULL;
}

/* The interned name set equal to the entries' keys, added when new. */
static kiln_status intern_names(tfr_source *s, size_t count, const char *const **out) {
  for (int k = 0; k < s->n_sets; k++) {
    int i = (s->last_set + k) % s->n_sets; /* the previous record's set first: files are mostly uniform */
    const name_set *ns = &s->sets[i];
    if ((size_t)ns->count != count) continue;
    size_t j = 0;
    while (j < count && strcmp(ns->names[j], s->entries[j].key) == 0) j++;
    if (j == count) {
      s->last_set = i;
      *out = (const char *const *)ns->names;
      return NULL;
    }
  }
  if (s->n_sets == MAX_NAME_SETS)
    return kiln_error(KILN_RESOURCE_EXHAUSTED,
                      "more than %d different sets of feature names in one file; describe the features to read "
                      "with the source's `features` key",
                      MAX_NAME_SETS);
  if (count > INT_MAX / 2) return kiln_error(KILN_RESOURCE_EXHAUSTED, "an Example of %zu features", count);
  size_t bytes = count * sizeof(char *);
  for (size_t j = 0; j < count; j++) bytes += strlen(s->entries[j].key) + 1;
  char **names = malloc(bytes ? bytes : 1);
  if (!names) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for feature names");
  char *text = (char *)(names + count);
  for (size_t j = 0; j < count; j++) {
    size_t len = strlen(s->entries[j].key) + 1;
    memcpy(text, s->entries[j].key, len);
    names[j] = text;
    text += len;
  }
  s->sets[s->n_sets] = (name_set){(int)count, names};
  s->last_set = s->n_sets++;
  *out = (const char *const *)names;
  return NULL;
}

/* Whether a plan's value is one binary bytes value, which the tensor takes over from the parsed
 * Example instead of copying (protobuf-c allocates each bytes value with malloc on its own). */
static int takes_bytes(const feature_plan *p) {
  return p->dtype == KILN_UINT8 && p->feature && p->feature->kind_case == TENSORFLOW__FEATURE__KIND_BYTES_LIST &&
         p->feature->bytes_list->n_value == 1 && p->feature->bytes_list->value[0].len > 0;
}

/* Copies a planned feature's values into `at` and points the tensor at them. */
static void fill_value(const feature_plan *p, uint8_t *at, kiln_tensor *t) {
  kiln_status e = kiln_tensor_set_shape(t, p->dtype, p->rank, p->dims);
  kiln_status_free(e); /* shapes were checked when planned */
  const Tensorflow__Feature *f = p->feature;
  int set = f->kind_case != TENSORFLOW__FEATURE__KIND__NOT_SET;
  int64_t n = kiln_tensor_numel(t);
  t->data = n ? at : NULL;
  if (!n || !set) return;
  switch (p->dtype) {
  case KILN_FLOAT: memcpy(at, f->float_list->value, (size_t)n * sizeof(float)); break;
  case KILN_INT64: memcpy(at, f->int64_list->value, (size_t)n * sizeof(int64_t)); break;
  case KILN_UINT8:
    if (takes_bytes(p)) { /* the tensor owns the value from now on; the Example forgets it */
      ProtobufCBinaryData *v = &f->bytes_list->value[0];
      t->data = t->owner = v->data;
      v->data = NULL;
      v->len = 0;
    } else {
      memcpy(at, f->bytes_list->value[0].data, (size_t)n);
    }
    break;
  default: { /* STRING: the pointers, then the NUL-terminated texts */
    char **strings = (char **)(void *)at;
    char *text = (char *)at + align_up((size_t)n * sizeof(char *));
    for (int64_t i = 0; i < n; i++) {
      const ProtobufCBinaryData *v = &f->bytes_list->value[i];
      if (v->len) memcpy(text, v->data, v->len);
      text[v->len] = '\0';
      strings[i] = text;
      text += v->len + 1;
    }
    break;
  }
  }
}

static kiln_status grow_plans(tfr_source *s, size_t n) {
  if (n <= s->plans_cap) return NULL;
  feature_plan *p = realloc(s->plans, n * sizeof *p);
  if (!p) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for %zu features", n);
  s->plans = p;
  s->plans_cap = n;
  return NULL;
}

static kiln_status build_record(tfr_source *s, size_t n_entries, kiln_record *out) {
  const char *const *names = NULL;
  size_t count;
  kiln_status e;
  if (s->n_spec >= 0) {
    count = (size_t)s->n_spec;
    names = (const char *const *)s->spec_names;
    if ((e = grow_plans(s, count))) return e;
    for (size_t i = 0; i < count; i++) {
      const map_entry *m = n_entries ? bsearch(names[i], s->entries, n_entries, sizeof *m, compare_key) : NULL;
      if ((e = plan_described(&s->plans[i], names[i], &s->spec[i], m ? m->feature : NULL))) return e;
    }
  } else {
    count = n_entries;
    if ((e = grow_plans(s, count))) return e;
    for (size_t i = 0; i < count; i++)
      if ((e = plan_free(&s->plans[i], s->entries[i].key, s->entries[i].feature))) return e;
    if ((e = intern_names(s, count, &names))) return e;
  }
  size_t total = 0;
  for (size_t i = 0; i < count; i++) /* each at most ~9x the record: no overflow */
    if (!takes_bytes(&s->plans[i])) total += s->plans[i].bytes;
  void *data;
  if ((e = kiln_record_init(out, names, (int)count, total, &data))) return e;
  uint8_t *at = data;
  for (size_t i = 0; i < count; i++) {
    if (!s->plans[i].feature) continue;
    int taken = takes_bytes(&s->plans[i]);
    fill_value(&s->plans[i], at, &out->values[i]);
    if (!taken) at += s->plans[i].bytes;
  }
  return NULL;
}

kiln_status kx_tfrecord_parse(kx_stage *stage, const void *example, size_t len, kiln_record *out) {
  tfr_source *s = (tfr_source *)stage;
  memset(out, 0, sizeof *out);
  Tensorflow__Example *ex = tensorflow__example__unpack(NULL, len, example);
  if (!ex)
    return kiln_error(KILN_INVALID_ARGUMENT, "%zu bytes that are not a tf.train.Example (the protobuf does not parse)",
                      len);
  size_t n;
  kiln_status e = sorted_entries(s, ex, &n);
  if (!e) e = build_record(s, n, out);
  tensorflow__example__free_unpacked(ex, NULL);
  return e;
}

/* Bytes from `offset` to the end of the stream, for the message that says what a lost framing
 * leaves unread; *exact = 0 when a corrupt compressed stream hides the rest. */
static int64_t remaining_bytes(tfr_source *s, int64_t offset, int *exact) {
  *exact = 1;
  if (!s->gzip) return s->file_size > offset ? s->file_size - offset : 0;
  uint64_t skipped = 0;
  kiln_status e = stream_skip(s, UINT64_MAX, &skipped);
  if (e) {
    *exact = 0;
    kiln_status_free(e);
  }
  return s->pos - offset;
}

static kiln_status tfr_next(kx_stage *stage, kiln_record *out, int *done) {
  tfr_source *s = (tfr_source *)stage;
  kx_data_ctx *ctx = stage->ctx;
  memset(out, 0, sizeof *out);
  *done = 0;
  for (;;) {
    if (s->finished) {
      *done = 1;
      return NULL;
    }
    int64_t offset = s->pos, index = s->index;
    uint8_t head[HEADER_BYTES];
    size_t got;
    const void *raw = NULL;
    size_t raw_len = 0;
    kiln_status why = NULL;
    kiln_status e = stream_read(s, head, HEADER_BYTES, &got);
    if (e && kiln_status_code(e) != CORRUPT) return e;
    if (!e && got == 0) {
      s->finished = 1;
      continue;
    }
    s->index++;
    atomic_fetch_add(&ctx->read, 1);
    if (e) {
      s->finished = 1;
      why = kiln_error(KILN_INVALID_ARGUMENT, "framing lost: %s", kiln_status_message(e));
      kiln_status_free(e);
    } else if (got < HEADER_BYTES) {
      s->finished = 1;
      raw = head;
      raw_len = got;
      why = kiln_error(KILN_INVALID_ARGUMENT, "truncated record: the file ends %zu bytes into its 12-byte header", got);
    } else {
      uint64_t len = get_le64(head);
      uint32_t stored = get_le32(head + 8), computed = kx_tfrecord_masked_crc(head, 8);
      if (stored != computed) {
        s->finished = 1;
        int exact;
        int64_t rest = remaining_bytes(s, offset, &exact);
        why = kiln_error(KILN_INVALID_ARGUMENT,
                         "length CRC mismatch (stored 0x%08x, computed 0x%08x): the framing is lost at byte %lld; "
                         "%s%lld bytes from there to the end of the file are not read",
                         stored, computed, (long long)offset, exact ? "" : "at least ", (long long)rest);
        raw = head;
        raw_len = HEADER_BYTES;
      } else if (len > s->max_record_bytes) {
        uint64_t skipped, whole = len > UINT64_MAX - 4 ? UINT64_MAX : len + 4;
        if ((e = stream_skip(s, whole, &skipped)) && kiln_status_code(e) != CORRUPT) return e;
        int corrupt = e != NULL;
        kiln_status_free(e);
        if (corrupt || skipped < whole) s->finished = 1;
        why = kiln_error(KILN_INVALID_ARGUMENT, "a record of %llu bytes is longer than max_record_bytes (%zu)%s",
                         (unsigned long long)len, s->max_record_bytes,
                         corrupt ? "; the gzip stream is corrupt after it"
                         : skipped < whole ? "; the file ends inside it" : "");
      } else if (!s->gzip && len + 4 > (uint64_t)(s->file_size - s->pos)) {
        /* a plain file too short for the record: said without allocating what the header claims */
        s->finished = 1;
        why = kiln_error(KILN_INVALID_ARGUMENT,
                         "truncated record: expected %llu data bytes and a 4-byte CRC, the file ends after %lld",
                         (unsigned long long)len, (long long)(s->file_size - s->pos));
      } else {
        if ((e = grow_buffer(s, (size_t)len + 4))) return e;
        if ((e = stream_read(s, s->buf, (size_t)len + 4, &got)) && kiln_status_code(e) != CORRUPT) return e;
        raw = s->buf;
        raw_len = got < len ? got : (size_t)len;
        if (e) {
          s->finished = 1;
          why = kiln_error(KILN_INVALID_ARGUMENT, "framing lost inside a record of %llu bytes: %s",
                           (unsigned long long)len, kiln_status_message(e));
          kiln_status_free(e);
        } else if (got < len + 4) {
          s->finished = 1;
          why = kiln_error(KILN_INVALID_ARGUMENT,
                           "truncated record: expected %llu data bytes and a 4-byte CRC, the file ends after %zu",
                           (unsigned long long)len, got);
        } else if ((stored = get_le32(s->buf + len)) != (computed = kx_tfrecord_masked_crc(s->buf, (size_t)len))) {
          why = kiln_error(KILN_INVALID_ARGUMENT, "data CRC mismatch (stored 0x%08x, computed 0x%08x) over %llu bytes",
                           stored, computed, (unsigned long long)len);
        } else if ((why = kx_tfrecord_parse(stage, s->buf, (size_t)len, out))) {
          if (kiln_status_code(why) != KILN_INVALID_ARGUMENT)
            return kiln_status_prefix(why, "%s: record %lld (byte %lld): ", s->path, (long long)index,
                                      (long long)offset);
        } else {
          out->source = s->path;
          out->index = index;
          out->offset = offset;
          return NULL;
        }
      }
    }
    kiln_status r = kx_bad_record(ctx, s->path, index, offset, raw, raw_len, why);
    if (r) return r;
  }
}

static kiln_status tfr_reset(kx_stage *stage, int64_t epoch) {
  (void)epoch;
  return rewind_stream((tfr_source *)stage);
}

static void tfr_free(kx_stage *stage) {
  tfr_source *s = (tfr_source *)stage;
  if (!s) return;
  if (s->file) fclose(s->file);
  if (s->z_ready) inflateEnd(&s->z);
  free(s->z_input);
  free(s->buf);
  if (s->spec_names)
    for (int i = 0; i < s->n_spec; i++) free(s->spec_names[i]);
  free(s->spec_names);
  free(s->spec);
  for (int i = 0; i < s->n_sets; i++) free(s->sets[i].names);
  free(s->entries);
  free(s->plans);
  free(s->path);
  free(s);
}

static const kx_stage_ops tfr_ops = {"tfrecord", tfr_next, tfr_reset, tfr_free, NULL};

/* ---------------------------------------------------------------- opening */

static kiln_status parse_feature_spec(tfr_source *s, const cJSON *features) {
  if (!cJSON_IsObject(features))
    return kiln_error(KILN_INVALID_ARGUMENT, "source.features: expected an object of feature name → "
                                             "{\"dtype\": ..., \"shape\": [...]}");
  int n = cJSON_GetArraySize(features);
  if (n > MAX_SPEC_FEATURES)
    return kiln_error(KILN_INVALID_ARGUMENT, "source.features: %d features, more than the %d allowed", n,
                      MAX_SPEC_FEATURES);
  s->spec = calloc((size_t)(n ? n : 1), sizeof *s->spec);
  s->spec_names = calloc((size_t)(n ? n : 1), sizeof *s->spec_names);
  if (!s->spec || !s->spec_names) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  s->n_spec = 0;
  static const char *const keys[] = {"dtype", "shape", NULL};
  for (const cJSON *m = features->child; m; m = m->next) {
    char where[320];
    snprintf(where, sizeof where, "source.features.%.256s", m->string);
    for (int i = 0; i < s->n_spec; i++)
      if (strcmp(s->spec_names[i], m->string) == 0)
        return kiln_error(KILN_INVALID_ARGUMENT, "%s: described twice", where);
    kiln_status e = kx_spec_keys(m, where, keys);
    if (e) return e;
    const char *dtype = NULL;
    if ((e = kx_spec_string(m, where, "dtype", 1, &dtype))) return e;
    spec_feature *sf = &s->spec[s->n_spec];
    if (strcmp(dtype, "float") == 0) sf->dtype = KILN_FLOAT;
    else if (strcmp(dtype, "int64") == 0) sf->dtype = KILN_INT64;
    else if (strcmp(dtype, "string") == 0) sf->dtype = KILN_STRING;
    else if (strcmp(dtype, "uint8") == 0) sf->dtype = KILN_UINT8;
    else
      return kiln_error(KILN_INVALID_ARGUMENT, "%s.dtype: expected \"float\", \"int64\", \"string\" or \"uint8\", found \"%s\"",
                        where, dtype);
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(m, "shape");
    if (shape) {
      if (!cJSON_IsArray(shape))
        return kiln_error(KILN_INVALID_ARGUMENT, "%s.shape: expected a list of sizes ([] for a scalar)", where);
      for (const cJSON *d = shape->child; d; d = d->next) {
        if (sf->rank == KILN_MAX_RANK)
          return kiln_error(KILN_INVALID_ARGUMENT, "%s.shape: more than %d dimensions", where, KILN_MAX_RANK);
        if (!cJSON_IsNumber(d) || d->valuedouble < 0 || d->valuedouble > (double)INT32_MAX ||
            d->valuedouble != (double)(int64_t)d->valuedouble)
          return kiln_error(KILN_INVALID_ARGUMENT, "%s.shape[%d]: expected a size from 0 to %d", where, sf->rank,
                            INT32_MAX);
        sf->dims[sf->rank++] = (int64_t)d->valuedouble;
      }
      kiln_tensor probe = {0};
      if ((e = kiln_tensor_set_shape(&probe, sf->dtype, sf->rank, sf->dims)))
        return kiln_status_prefix(e, "%s.shape: ", where);
      sf->numel = kiln_tensor_numel(&probe);
      sf->has_shape = 1;
    }
    if (!(s->spec_names[s->n_spec] = strdup(m->string))) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    s->n_spec++;
  }
  return NULL;
}

/* Plain or gzip: the spec says, or the first bytes do. A plain file can begin with gzip's magic
 * (a length whose low bytes are 1f 8b), so it is gzip only when those bytes are not a valid
 * TFRecord header. */
static kiln_status detect_compression(tfr_source *s, int mode) {
  if (mode != COMPRESSION_DETECT) {
    s->gzip = mode == COMPRESSION_GZIP;
    return NULL;
  }
  uint8_t head[HEADER_BYTES];
  size_t got = fread(head, 1, sizeof head, s->file);
  if (ferror(s->file)) return kiln_error(KILN_IO, "%s: read failed: %s", s->path, strerror(errno));
  s->gzip = got >= 2 && head[0] == 0x1f && head[1] == 0x8b &&
            !(got == HEADER_BYTES && kx_tfrecord_masked_crc(head, 8) == get_le32(head + 8));
  if (fseeko(s->file, 0, SEEK_SET) != 0) return kiln_error(KILN_IO, "%s: seek failed: %s", s->path, strerror(errno));
  return NULL;
}

static kiln_status open_file(tfr_source *s, int mode) {
  s->file = fopen(s->path, "rb");
  if (!s->file)
    return kiln_error(errno == ENOENT ? KILN_NOT_FOUND : KILN_IO, "%s: cannot open: %s", s->path, strerror(errno));
  struct stat st;
  if (fstat(fileno(s->file), &st) != 0 || !S_ISREG(st.st_mode))
    return kiln_error(KILN_IO, "%s: not a regular file", s->path);
  s->file_size = (int64_t)st.st_size;
  kiln_status e = detect_compression(s, mode);
  if (e) return e;
  if (s->gzip) {
    if (!(s->z_input = malloc(GZIP_INPUT_BYTES))) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    if (inflateInit2(&s->z, 16 + MAX_WBITS) != Z_OK)
      return kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: zlib cannot start a gzip decoder", s->path);
    s->z_ready = 1;
  }
  return rewind_stream(s);
}

kiln_status kx_tfrecord_open(kx_data_ctx *ctx, const cJSON *spec, kx_stage **out) {
  *out = NULL;
  static const char *const keys[] = {"format", "path", "compression", "max_record_bytes", "features", NULL};
  kiln_status e = kx_spec_keys(spec, "source", keys);
  const char *path = NULL, *compression = NULL;
  int64_t max_record = DEFAULT_MAX_RECORD_BYTES;
  if (!e) e = kx_spec_string(spec, "source", "path", 1, &path);
  if (!e) e = kx_spec_string(spec, "source", "compression", 0, &compression);
  if (!e) e = kx_spec_int(spec, "source", "max_record_bytes", 0, 1, MAX_RECORD_BYTES_LIMIT, &max_record);
  if (e) return e;
  int mode = COMPRESSION_DETECT;
  if (compression && strcmp(compression, "none") == 0) mode = COMPRESSION_NONE;
  else if (compression && strcmp(compression, "gzip") == 0) mode = COMPRESSION_GZIP;
  else if (compression)
    return kiln_error(KILN_INVALID_ARGUMENT, "source.compression: expected \"none\" or \"gzip\", found \"%s\"",
                      compression);
  tfr_source *s = calloc(1, sizeof *s);
  if (!s) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  s->base = (kx_stage){&tfr_ops, NULL, ctx};
  s->max_record_bytes = (size_t)max_record;
  s->n_spec = -1;
  const cJSON *features = cJSON_GetObjectItemCaseSensitive(spec, "features");
  if (!(s->path = kx_data_path(ctx, path))) e = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  if (!e && features) e = parse_feature_spec(s, features);
  if (!e) e = open_file(s, mode);
  if (e) {
    tfr_free(&s->base);
    return e;
  }
  *out = &s->base;
  return NULL;
}

/* ---------------------------------------------------------------- the writer */

typedef struct tfr_writer {
  kx_writer base;
  char *path;
  char *tmp_path;
  FILE *file;
  int64_t records;
  uint8_t *buf;
  size_t buf_cap;
} tfr_writer;

/* One feature's protobuf objects; the values point into the record or into `owned`. */
typedef struct out_feature {
  Tensorflow__Features__FeatureEntry entry;
  Tensorflow__Feature feature;
  Tensorflow__FloatList floats;
  Tensorflow__Int64List ints;
  Tensorflow__BytesList bytes;
  ProtobufCBinaryData one; /* the single value of a uint8 tensor */
  void *owned;             /* converted values */
} out_feature;

static kiln_status convert_feature(out_feature *o, const char *name, const kiln_tensor *t) {
  int64_t n = kiln_tensor_numel(t);
  size_t count = (size_t)n;
  switch (t->dtype) {
  case KILN_FLOAT:
  case KILN_DOUBLE:
  case KILN_FLOAT16:
  case KILN_BFLOAT16:
    tensorflow__float_list__init(&o->floats);
    o->feature.kind_case = TENSORFLOW__FEATURE__KIND_FLOAT_LIST;
    o->feature.float_list = &o->floats;
    o->floats.n_value = count;
    if (t->dtype == KILN_FLOAT) {
      o->floats.value = t->data;
    } else if (count) {
      float *v = malloc(count * sizeof *v);
      if (!v) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory converting feature '%s'", name);
      for (size_t i = 0; i < count; i++) v[i] = (float)kiln_tensor_get_f64(t, (int64_t)i);
      o->floats.value = o->owned = v;
    }
    return NULL;
  case KILN_STRING: {
    tensorflow__bytes_list__init(&o->bytes);
    o->feature.kind_case = TENSORFLOW__FEATURE__KIND_BYTES_LIST;
    o->feature.bytes_list = &o->bytes;
    ProtobufCBinaryData *v = count ? malloc(count * sizeof *v) : NULL;
    if (count && !v) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory converting feature '%s'", name);
    char *const *strings = t->data;
    for (size_t i = 0; i < count; i++) {
      v[i].data = (uint8_t *)(strings[i] ? strings[i] : "");
      v[i].len = strlen((const char *)v[i].data);
    }
    o->bytes.n_value = count;
    o->bytes.value = o->owned = v;
    return NULL;
  }
  case KILN_UINT8:
    if (t->rank >= 1) { /* raw bytes as one value: TensorFlow's image_raw convention */
      tensorflow__bytes_list__init(&o->bytes);
      o->feature.kind_case = TENSORFLOW__FEATURE__KIND_BYTES_LIST;
      o->feature.bytes_list = &o->bytes;
      o->one.data = t->data;
      o->one.len = count;
      o->bytes.n_value = 1;
      o->bytes.value = &o->one;
      return NULL;
    }
    /* a uint8 scalar is a number */
    /* fall through */
  case KILN_INT8:
  case KILN_UINT16:
  case KILN_INT16:
  case KILN_INT32:
  case KILN_INT64:
  case KILN_UINT32:
  case KILN_UINT64:
  case KILN_BOOL: {
    tensorflow__int64_list__init(&o->ints);
    o->feature.kind_case = TENSORFLOW__FEATURE__KIND_INT64_LIST;
    o->feature.int64_list = &o->ints;
    o->ints.n_value = count;
    if (t->dtype == KILN_INT64) {
      o->ints.value = t->data;
      return NULL;
    }
    if (!count) return NULL;
    int64_t *v = malloc(count * sizeof *v);
    if (!v) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory converting feature '%s'", name);
    o->ints.value = o->owned = v;
    for (size_t i = 0; i < count; i++) {
      switch (t->dtype) {
      case KILN_UINT8:
      case KILN_BOOL: v[i] = ((const uint8_t *)t->data)[i]; break;
      case KILN_INT8: v[i] = ((const int8_t *)t->data)[i]; break;
      case KILN_UINT16: v[i] = ((const uint16_t *)t->data)[i]; break;
      case KILN_INT16: v[i] = ((const int16_t *)t->data)[i]; break;
      case KILN_INT32: v[i] = ((const int32_t *)t->data)[i]; break;
      case KILN_UINT32: v[i] = ((const uint32_t *)t->data)[i]; break;
      default: {
        uint64_t u = ((const uint64_t *)t->data)[i];
        if (u > (uint64_t)INT64_MAX)
          return kiln_error(KILN_INVALID_ARGUMENT, "feature '%s': uint64 value %llu does not fit an int64_list", name,
                            (unsigned long long)u);
        v[i] = (int64_t)u;
      }
      }
    }
    return NULL;
  }
  default:
    return kiln_error(KILN_UNIMPLEMENTED, "feature '%s': %s values have no tf.train.Feature list", name,
                      kiln_dtype_name(t->dtype));
  }
}

static kiln_status write_all(tfr_writer *w, const void *data, size_t len) {
  if (len && fwrite(data, 1, len, w->file) != len)
    return kiln_error(KILN_IO, "%s: write failed: %s", w->tmp_path, strerror(errno));
  return NULL;
}

static kiln_status tfr_write(kx_writer *base, const kiln_record *r) {
  tfr_writer *w = (tfr_writer *)base;
  if (!w->file) return kiln_error(KILN_FAILED_PRECONDITION, "%s: the writer is finished", w->path);
  size_t n = r->count > 0 ? (size_t)r->count : 0;
  out_feature *of = calloc(n ? n : 1, sizeof *of);
  Tensorflow__Features__FeatureEntry **entries = calloc(n ? n : 1, sizeof *entries);
  kiln_status e = of && entries ? NULL : kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  size_t used = 0;
  for (size_t i = 0; i < n && !e; i++) {
    if (r->values[i].dtype == KILN_UNDEFINED) continue; /* missing: left out, as TensorFlow does */
    out_feature *o = &of[used];
    tensorflow__features__feature_entry__init(&o->entry);
    tensorflow__feature__init(&o->feature);
    o->entry.key = (char *)r->names[i];
    o->entry.value = &o->feature;
    entries[used++] = &o->entry;
    e = convert_feature(o, r->names[i], &r->values[i]);
  }
  if (!e) {
    Tensorflow__Features features = TENSORFLOW__FEATURES__INIT;
    Tensorflow__Example example = TENSORFLOW__EXAMPLE__INIT;
    features.n_feature = used;
    features.feature = entries;
    example.features = &features;
    size_t len = tensorflow__example__get_packed_size(&example);
    if (len + HEADER_BYTES + 4 > w->buf_cap) {
      uint8_t *b = realloc(w->buf, len + HEADER_BYTES + 4);
      if (!b) e = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for a record of %zu bytes", len);
      else w->buf = b, w->buf_cap = len + HEADER_BYTES + 4;
    }
    if (!e) {
      uint8_t *head = w->buf, *body = w->buf + HEADER_BYTES;
      size_t packed = tensorflow__example__pack(&example, body);
      if (packed != len) {
        e = kiln_error(KILN_INTERNAL, "protobuf-c packed %zu bytes of an Example sized %zu", packed, len);
      } else {
        put_le64(head, len);
        put_le32(head + 8, kx_tfrecord_masked_crc(head, 8));
        put_le32(body + len, kx_tfrecord_masked_crc(body, len));
        e = write_all(w, w->buf, len + HEADER_BYTES + 4);
      }
    }
  }
  if (of)
    for (size_t i = 0; i < used; i++) free(of[i].owned);
  free(of);
  free(entries);
  if (e) return kiln_status_prefix(e, "%s: record %lld: ", w->path, (long long)w->records);
  w->records++;
  return NULL;
}

static kiln_status tfr_finish(kx_writer *base) {
  tfr_writer *w = (tfr_writer *)base;
  if (!w->file) return kiln_error(KILN_FAILED_PRECONDITION, "%s: the writer is finished", w->path);
  int failed = fflush(w->file) != 0 || fsync(fileno(w->file)) != 0;
  int err = errno;
  failed |= fclose(w->file) != 0;
  w->file = NULL;
  if (failed) {
    unlink(w->tmp_path);
    return kiln_error(KILN_IO, "%s: cannot write: %s", w->tmp_path, strerror(err));
  }
  if (rename(w->tmp_path, w->path) != 0) {
    err = errno;
    unlink(w->tmp_path);
    return kiln_error(KILN_IO, "cannot rename %s to %s: %s", w->tmp_path, w->path, strerror(err));
  }
  return NULL;
}

static void tfr_writer_free(kx_writer *base) {
  tfr_writer *w = (tfr_writer *)base;
  if (!w) return;
  if (w->file) { /* never finished: the partial file goes */
    fclose(w->file);
    unlink(w->tmp_path);
  }
  free(w->buf);
  free(w->tmp_path);
  free(w->path);
  free(w);
}

kiln_status kx_tfrecord_writer_open(const char *path, kx_writer **out) {
  *out = NULL;
  tfr_writer *w = calloc(1, sizeof *w);
  if (!w) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  w->base = (kx_writer){tfr_write, tfr_finish, tfr_writer_free};
  size_t n = strlen(path) + 5;
  w->path = strdup(path);
  w->tmp_path = malloc(n);
  if (!w->path || !w->tmp_path) {
    tfr_writer_free(&w->base);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  }
  snprintf(w->tmp_path, n, "%s.tmp", path);
  w->file = fopen(w->tmp_path, "wb");
  if (!w->file) {
    kiln_status e = kiln_error(KILN_IO, "%s: cannot create: %s", w->tmp_path, strerror(errno));
    tfr_writer_free(&w->base);
    return e;
  }
  *out = &w->base;
  return NULL;
}
