/* TFRecord reader and writer against fixtures written by an independent Python implementation
 * (tests/data/make_data_fixtures_tfrecord.py): values, framing errors, skip mode's quarantine,
 * `features` descriptions, and byte-identical output of the writer. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/data.h"
#include "test.h"

static char fixture_dir[1024];
static cJSON *expected;

static const char *fixture(const char *name) {
  static char path[4][1200];
  static int turn;
  char *p = path[turn++ % 4];
  snprintf(p, sizeof path[0], "%s/%s", fixture_dir, name);
  return p;
}

static void load_expected(void) {
  if (expected) return;
  const char *root = getenv("KILN_TEST_DATA");
  snprintf(fixture_dir, sizeof fixture_dir, "%s/data/tfrecord", root ? root : "tests/data");
  void *text;
  size_t len;
  kiln_status s = kiln_file_read(fixture("expected.json"), 0, &text, &len);
  if (s) {
    fprintf(stderr, "%s\n", kiln_status_message(s));
    kiln_status_free(s);
    exit(1);
  }
  expected = cJSON_Parse(text);
  free(text);
  if (!expected) exit(1);
}

/* A source over `file` with extra spec members (a JSON object's inner text, may be ""). */
typedef struct opened {
  kx_data_ctx ctx;
  kx_stage *stage;
  char quarantine[256];
} opened;

static kiln_status open_source(opened *o, const char *file, const char *extra, kiln_on_error mode) {
  memset(o, 0, sizeof *o);
  snprintf(o->quarantine, sizeof o->quarantine, "/tmp/kiln_test_tfrecord_%d.jsonl", (int)getpid());
  kiln_status s = kx_data_ctx_init(&o->ctx, mode, o->quarantine, NULL, 1, NULL);
  if (s) return s;
  char json[4096];
  snprintf(json, sizeof json, "{\"format\":\"tfrecord\",\"path\":\"%s\"%s%s}", file, extra[0] ? "," : "", extra);
  cJSON *spec = cJSON_Parse(json);
  if (!spec) return kiln_error(KILN_INTERNAL, "test spec does not parse: %s", json);
  s = kx_tfrecord_open(&o->ctx, spec, &o->stage);
  cJSON_Delete(spec);
  return s;
}

static void close_source(opened *o) {
  if (o->stage) o->stage->ops->free(o->stage);
  kx_data_ctx_free(&o->ctx);
  unlink(o->quarantine);
}

/* Pulls every record (at most max) until the end or an error, which is returned. */
static kiln_status pull_all(opened *o, kiln_record *out, int max, int *n) {
  *n = 0;
  for (;;) {
    kiln_record r;
    int done = 0;
    kiln_status s = o->stage->ops->next(o->stage, &r, &done);
    if (s || done) return s;
    if (*n < max) out[(*n)++] = r;
    else kiln_record_release(&r);
  }
}

static void release_all(kiln_record *r, int n) {
  for (int i = 0; i < n; i++) kiln_record_release(&r[i]);
}

/* The quarantine file's text (malloc'd), and its number of lines. */
static char *quarantine_text(const opened *o, int *lines) {
  fflush(o->ctx.quarantine);
  void *text = NULL;
  size_t len = 0;
  kiln_status s = kiln_file_read(o->quarantine, 0, &text, &len);
  CHECK_OK(s);
  *lines = 0;
  for (size_t i = 0; text && i < len; i++) *lines += ((char *)text)[i] == '\n';
  return text;
}

/* One expected feature [name, dtype, shape, values] against the record's feature i. */
static void check_feature(const kiln_record *r, int i, const cJSON *want) {
  const char *name = cJSON_GetArrayItem(want, 0)->valuestring;
  const cJSON *dtype = cJSON_GetArrayItem(want, 1), *shape = cJSON_GetArrayItem(want, 2),
              *values = cJSON_GetArrayItem(want, 3);
  CHECK(strcmp(r->names[i], name) == 0);
  const kiln_tensor *t = &r->values[i];
  if (cJSON_IsNull(dtype)) {
    CHECK(t->dtype == KILN_UNDEFINED);
    return;
  }
  CHECK(t->dtype == kiln_dtype_from_name(dtype->valuestring));
  CHECK(t->rank == cJSON_GetArraySize(shape));
  for (int d = 0; d < t->rank && d < cJSON_GetArraySize(shape); d++)
    CHECK(t->dims[d] == (int64_t)cJSON_GetArrayItem(shape, d)->valuedouble);
  int64_t n = kiln_tensor_numel(t);
  CHECK(n == cJSON_GetArraySize(values));
  for (int64_t k = 0; k < n && k < cJSON_GetArraySize(values); k++) {
    const cJSON *v = cJSON_GetArrayItem(values, (int)k);
    int ok = 1;
    switch (t->dtype) {
    case KILN_FLOAT: ok = ((const float *)t->data)[k] == (float)v->valuedouble; break;
    case KILN_INT64: ok = ((const int64_t *)t->data)[k] == strtoll(v->valuestring, NULL, 10); break;
    case KILN_UINT8: ok = ((const uint8_t *)t->data)[k] == (uint8_t)v->valuedouble; break;
    case KILN_STRING: ok = strcmp(((char *const *)t->data)[k], v->valuestring) == 0; break;
    default: ok = 0;
    }
    if (!ok) {
      fprintf(stderr, "record %lld feature '%s' element %lld differs\n", (long long)r->index, name, (long long)k);
      test_failures++;
    }
  }
}

static void check_record(const kiln_record *r, const cJSON *want) {
  const cJSON *features = cJSON_GetObjectItem(want, "features");
  CHECK(r->index == (int64_t)cJSON_GetObjectItem(want, "index")->valuedouble);
  const cJSON *offset = cJSON_GetObjectItem(want, "offset");
  if (offset) CHECK(r->offset == (int64_t)offset->valuedouble);
  CHECK(r->count == cJSON_GetArraySize(features));
  for (int i = 0; i < r->count && i < cJSON_GetArraySize(features); i++)
    check_feature(r, i, cJSON_GetArrayItem(features, i));
}

static const cJSON *want_record(const char *list, int i) {
  return cJSON_GetArrayItem(cJSON_GetObjectItem(expected, list), i);
}

static void test_crc32c(void) {
  load_expected();
  CHECK(kx_crc32c("123456789", 9) == 0xE3069283u);
  CHECK(kx_crc32c("123456789", 9) == (uint32_t)cJSON_GetObjectItem(expected, "crc32c_123456789")->valuedouble);
  CHECK(kx_crc32c("", 0) == 0);
  /* 32 zero bytes: RFC 3720's test vector */
  uint8_t zeros[32] = {0};
  CHECK(kx_crc32c(zeros, sizeof zeros) == 0x8A9136AAu);
}

static void check_good_file(const char *file, const char *extra) {
  opened o;
  kiln_record r[8];
  int n = 0;
  CHECK_OK(open_source(&o, fixture(file), extra, KILN_ON_ERROR_FAIL));
  if (!o.stage) {
    close_source(&o);
    return;
  }
  CHECK_OK(pull_all(&o, r, 8, &n));
  CHECK(n == 5);
  for (int i = 0; i < n; i++) {
    check_record(&r[i], want_record("records", i));
    CHECK(strcmp(r[i].source, fixture(file)) == 0);
  }
  CHECK(atomic_load(&o.ctx.read) == 5);
  release_all(r, n);
  /* a second pass starts at record 0 again */
  CHECK_OK(o.stage->ops->reset(o.stage, 1));
  CHECK_OK(pull_all(&o, r, 8, &n));
  CHECK(n == 5);
  if (n) check_record(&r[0], want_record("records", 0));
  release_all(r, n);
  close_source(&o);
}

static void test_read_good(void) {
  load_expected();
  check_good_file("good.tfrecord", "");
  check_good_file("good.tfrecord", "\"compression\":\"none\"");
}

static void test_read_gzip(void) {
  load_expected();
  check_good_file("good.tfrecord.gz", "");
  check_good_file("good.tfrecord.gz", "\"compression\":\"gzip\"");
  /* read as plain, the gzip bytes are no framing */
  opened o;
  kiln_record r[8];
  int n;
  CHECK_OK(open_source(&o, fixture("good.tfrecord.gz"), "\"compression\":\"none\"", KILN_ON_ERROR_FAIL));
  if (o.stage) CHECK_ERROR(pull_all(&o, r, 8, &n), KILN_INVALID_ARGUMENT, "length CRC mismatch");
  close_source(&o);
  /* a plain file is never taken for gzip */
  CHECK_OK(open_source(&o, fixture("good.tfrecord"), "\"compression\":\"gzip\"", KILN_ON_ERROR_FAIL));
  if (o.stage) CHECK_ERROR(pull_all(&o, r, 8, &n), KILN_INVALID_ARGUMENT, "record 0 (byte 0): framing lost: the gzip stream is corrupt");
  close_source(&o);
}

/* Reads `file` in skip mode: the good records' indices, and the quarantine's text. */
static char *read_skipping(const char *file, const char *extra, int64_t *indices, int *n, int *lines) {
  opened o;
  kiln_record r[8];
  *n = 0;
  *lines = 0;
  char *text = NULL;
  CHECK_OK(open_source(&o, fixture(file), extra, KILN_ON_ERROR_SKIP));
  if (o.stage) {
    CHECK_OK(pull_all(&o, r, 8, n));
    for (int i = 0; i < *n; i++) indices[i] = r[i].index;
    for (int i = 0; i < *n; i++) {
      const cJSON *want = want_record("records", (int)r[i].index);
      if (!extra[0] && strcmp(file, "garbage_example.tfrecord") != 0) check_record(&r[i], want);
    }
    release_all(r, *n);
    text = quarantine_text(&o, lines);
    CHECK(atomic_load(&o.ctx.quarantined) == *lines);
  }
  close_source(&o);
  return text;
}

static void test_bad_data_crc(void) {
  load_expected();
  int64_t idx[8];
  int n, lines;
  char *q = read_skipping("bad_data_crc.tfrecord", "", idx, &n, &lines);
  CHECK(n == 2 && idx[0] == 0 && idx[1] == 2);
  CHECK(lines == 1);
  CHECK(q && strstr(q, "\"index\":1,\"offset\":107,\"reason\":\"data CRC mismatch (stored 0x"));
  CHECK(q && strstr(q, "\"raw\":{\"b64\":"));
  free(q);
  opened o;
  kiln_record r[8];
  CHECK_OK(open_source(&o, fixture("bad_data_crc.tfrecord"), "", KILN_ON_ERROR_FAIL));
  if (o.stage) {
    CHECK_ERROR(pull_all(&o, r, 8, &n), KILN_INVALID_ARGUMENT, "bad_data_crc.tfrecord: record 1 (byte 107): data CRC mismatch");
    release_all(r, n);
  }
  close_source(&o);
}

static void test_bad_length_crc(void) {
  load_expected();
  const cJSON *want = cJSON_GetObjectItem(expected, "bad_length_crc");
  int64_t idx[8];
  int n, lines;
  char *q = read_skipping("bad_length_crc.tfrecord", "", idx, &n, &lines);
  CHECK(n == 1 && idx[0] == 0);
  CHECK(lines == 1);
  char text[256];
  snprintf(text, sizeof text, "the framing is lost at byte %d; %d bytes from there to the end of the file are not read",
           (int)cJSON_GetObjectItem(want, "offset")->valuedouble, (int)cJSON_GetObjectItem(want, "unread")->valuedouble);
  CHECK(q && strstr(q, "length CRC mismatch"));
  CHECK(q && strstr(q, text));
  if (q && !strstr(q, text)) fprintf(stderr, "quarantine: %s\nexpected: %s\n", q, text);
  free(q);
}

static void test_truncated(void) {
  load_expected();
  int64_t idx[8];
  int n, lines;
  char *q = read_skipping("truncated.tfrecord", "", idx, &n, &lines);
  CHECK(n == 2 && idx[0] == 0 && idx[1] == 1);
  CHECK(lines == 1);
  char text[128];
  snprintf(text, sizeof text, "\"index\":2,\"offset\":%d,\"reason\":\"truncated record: expected ",
           (int)cJSON_GetObjectItem(cJSON_GetObjectItem(expected, "truncated"), "offset")->valuedouble);
  CHECK(q && strstr(q, text));
  free(q);
  q = read_skipping("truncated_header.tfrecord", "", idx, &n, &lines);
  CHECK(n == 1 && lines == 1);
  CHECK(q && strstr(q, "the file ends 7 bytes into its 12-byte header"));
  free(q);
}

static void test_garbage_example(void) {
  load_expected();
  int64_t idx[8];
  int n, lines;
  char *q = read_skipping("garbage_example.tfrecord", "", idx, &n, &lines);
  CHECK(n == 2 && idx[0] == 0 && idx[1] == 3);
  CHECK(lines == 2);
  CHECK(q && strstr(q, "\"index\":1,") && strstr(q, "6 bytes that are not a tf.train.Example"));
  CHECK(q && strstr(q, "\"index\":2,") && strstr(q, "feature 'blobs': a bytes_list of 2 values, 2 of them binary"));
  free(q);
}

static void test_max_record_bytes(void) {
  load_expected();
  /* the Examples are 91, 111, 85, 60 and 2 bytes long */
  int64_t idx[8];
  int n, lines;
  char *q = read_skipping("good.tfrecord", "\"max_record_bytes\":90", idx, &n, &lines);
  CHECK(n == 3 && idx[0] == 2 && idx[1] == 3 && idx[2] == 4);
  CHECK(lines == 2);
  CHECK(q && strstr(q, "a record of 111 bytes is longer than max_record_bytes (90)"));
  free(q);
  q = read_skipping("good.tfrecord.gz", "\"max_record_bytes\":90", idx, &n, &lines);
  CHECK(n == 3 && idx[0] == 2 && lines == 2);
  free(q);
}

static void test_features_described(void) {
  load_expected();
  opened o;
  kiln_record r[8];
  int n = 0;
  CHECK_OK(open_source(&o, fixture("good.tfrecord"),
                       "\"features\":{\"weights\":{\"dtype\":\"float\",\"shape\":[3,1]},"
                       "\"label\":{\"dtype\":\"int64\",\"shape\":[]},\"name\":{\"dtype\":\"string\"},"
                       "\"image_raw\":{\"dtype\":\"uint8\"},\"tags\":{\"dtype\":\"string\",\"shape\":[3]}}",
                       KILN_ON_ERROR_FAIL));
  if (o.stage) {
    CHECK_OK(pull_all(&o, r, 8, &n));
    CHECK(n == 5);
    if (n == 5) {
      CHECK(r[0].count == 5 && strcmp(r[0].names[0], "weights") == 0 && strcmp(r[0].names[4], "tags") == 0);
      const kiln_tensor *w = &r[0].values[0], *label = &r[0].values[1], *name = &r[0].values[2], *img = &r[0].values[3];
      CHECK(w->dtype == KILN_FLOAT && w->rank == 2 && w->dims[0] == 3 && w->dims[1] == 1);
      CHECK(((const float *)w->data)[1] == -1.25f);
      CHECK(label->dtype == KILN_INT64 && label->rank == 0 && ((const int64_t *)label->data)[0] == 3);
      CHECK(name->dtype == KILN_STRING && name->dims[0] == 1 && strcmp(((char **)name->data)[0], "hello") == 0);
      CHECK(img->dtype == KILN_UINT8 && img->dims[0] == 6 && ((const uint8_t *)img->data)[3] == 255);
      CHECK(r[0].values[4].dtype == KILN_UNDEFINED); /* absent: missing */
      CHECK(r[1].values[1].dtype == KILN_INT64 && ((const int64_t *)r[1].values[1].data)[0] == -7);
      /* record 2 has none of them but tags */
      CHECK(r[2].values[0].dtype == KILN_UNDEFINED && r[2].values[3].dtype == KILN_UNDEFINED);
      CHECK(r[2].values[4].dtype == KILN_STRING && strcmp(((char **)r[2].values[4].data)[2], "ccc") == 0);
      CHECK(r[4].count == 5 && r[4].names == r[0].names);
    }
    release_all(r, n);
  }
  close_source(&o);

  int64_t idx[8];
  int lines;
  char *q = read_skipping("good.tfrecord", "\"features\":{\"weights\":{\"dtype\":\"float\",\"shape\":[2]}}", idx, &n, &lines);
  CHECK(n == 3 && lines == 2);
  CHECK(q && strstr(q, "feature 'weights': shape [2] needs 2 values, found 3"));
  free(q);
  q = read_skipping("good.tfrecord", "\"features\":{\"label\":{\"dtype\":\"float\"}}", idx, &n, &lines);
  CHECK(n == 3 && lines == 2);
  CHECK(q && strstr(q, "feature 'label': expected float_list (dtype float), found int64_list"));
  free(q);
  q = read_skipping("good.tfrecord", "\"features\":{\"image_raw\":{\"dtype\":\"string\"}}", idx, &n, &lines);
  CHECK(n == 3 && lines == 2); /* both images hold a NUL byte */
  CHECK(q && strstr(q, "feature 'image_raw': value 0 holds a NUL byte"));
  free(q);
  q = read_skipping("good.tfrecord", "\"features\":{\"tags\":{\"dtype\":\"uint8\"}}", idx, &n, &lines);
  CHECK(n == 4 && lines == 1);
  CHECK(q && strstr(q, "dtype uint8 needs a bytes_list of exactly 1 value, found 3"));
  free(q);
}

static void test_spec_errors(void) {
  load_expected();
  opened o;
  CHECK_ERROR(open_source(&o, fixture("good.tfrecord"), "\"compression\":\"zstd\"", KILN_ON_ERROR_FAIL),
              KILN_INVALID_ARGUMENT, "source.compression: expected \"none\" or \"gzip\", found \"zstd\"");
  close_source(&o);
  CHECK_ERROR(open_source(&o, fixture("good.tfrecord"), "\"features\":{\"x\":{\"dtype\":\"double\"}}", KILN_ON_ERROR_FAIL),
              KILN_INVALID_ARGUMENT, "source.features.x.dtype: expected \"float\", \"int64\", \"string\" or \"uint8\"");
  close_source(&o);
  CHECK_ERROR(open_source(&o, fixture("good.tfrecord"), "\"features\":{\"x\":{\"dtype\":\"float\",\"shape\":[-1]}}",
                          KILN_ON_ERROR_FAIL),
              KILN_INVALID_ARGUMENT, "source.features.x.shape[0]: expected a size");
  close_source(&o);
  CHECK_ERROR(open_source(&o, fixture("good.tfrecord"), "\"features\":{\"x\":{\"dtype\":\"float\",\"size\":1}}",
                          KILN_ON_ERROR_FAIL),
              KILN_INVALID_ARGUMENT, "source.features.x: unknown key 'size'");
  close_source(&o);
  CHECK_ERROR(open_source(&o, fixture("good.tfrecord"), "\"buffer\":1", KILN_ON_ERROR_FAIL), KILN_INVALID_ARGUMENT,
              "source: unknown key 'buffer'");
  close_source(&o);
  CHECK_ERROR(open_source(&o, fixture("good.tfrecord"), "\"max_record_bytes\":0", KILN_ON_ERROR_FAIL),
              KILN_INVALID_ARGUMENT, "source.max_record_bytes");
  close_source(&o);
  CHECK_ERROR(open_source(&o, fixture("absent.tfrecord"), "", KILN_ON_ERROR_FAIL), KILN_NOT_FOUND,
              "absent.tfrecord: cannot open");
  close_source(&o);
}

/* Whole-file comparison. */
static int same_file(const char *a, const char *b) {
  void *x = NULL, *y = NULL;
  size_t nx = 0, ny = 0;
  kiln_status s = kiln_file_read(a, 0, &x, &nx);
  CHECK_OK(s);
  s = kiln_file_read(b, 0, &y, &ny);
  CHECK_OK(s);
  int same = x && y && nx == ny && memcmp(x, y, nx) == 0;
  free(x);
  free(y);
  return same;
}

static void test_writer_roundtrip(void) {
  load_expected();
  char out[256], tmp[300];
  snprintf(out, sizeof out, "/tmp/kiln_test_tfrecord_%d.tfrecord", (int)getpid());
  snprintf(tmp, sizeof tmp, "%s.tmp", out);
  opened o;
  kiln_record r[8];
  int n = 0;
  CHECK_OK(open_source(&o, fixture("good.tfrecord"), "", KILN_ON_ERROR_FAIL));
  if (o.stage) CHECK_OK(pull_all(&o, r, 8, &n));
  kx_writer *w = NULL;
  CHECK_OK(kx_tfrecord_writer_open(out, &w));
  if (w) {
    for (int i = 0; i < n; i++) CHECK_OK(w->write(w, &r[i]));
    CHECK(access(tmp, F_OK) == 0 && access(out, F_OK) != 0); /* nothing in place before finish */
    CHECK_OK(w->finish(w));
    CHECK(access(tmp, F_OK) != 0);
    w->free(w);
  }
  release_all(r, n);
  close_source(&o);
  CHECK(same_file(out, fixture("rewrite.tfrecord")));

  CHECK_OK(open_source(&o, out, "", KILN_ON_ERROR_FAIL));
  if (o.stage) {
    CHECK_OK(pull_all(&o, r, 8, &n));
    CHECK(n == 5);
    for (int i = 0; i < n; i++) check_record(&r[i], want_record("rewritten", i));
    release_all(r, n);
  }
  close_source(&o);
  unlink(out);

  /* an unfinished writer leaves nothing behind */
  CHECK_OK(kx_tfrecord_writer_open(out, &w));
  if (w) w->free(w);
  CHECK(access(tmp, F_OK) != 0 && access(out, F_OK) != 0);
}

static void test_writer_dtypes(void) {
  load_expected();
  static const char *const names[] = {"d", "i32", "gone", "flag", "raw", "s", "h", "small", "c"};
  kiln_record r;
  CHECK_OK(kiln_record_init(&r, names, 8, 0, NULL));
  int64_t two = 2, three = 3, four = 4, one = 1;
  CHECK_OK(kiln_tensor_alloc(&r.values[0], KILN_DOUBLE, 1, &two));
  ((double *)r.values[0].data)[0] = 0.25;
  ((double *)r.values[0].data)[1] = -2.0;
  CHECK_OK(kiln_tensor_alloc(&r.values[1], KILN_INT32, 1, &two));
  ((int32_t *)r.values[1].data)[0] = -5;
  ((int32_t *)r.values[1].data)[1] = 70000;
  CHECK_OK(kiln_tensor_alloc(&r.values[3], KILN_BOOL, 1, &three));
  memcpy(r.values[3].data, "\1\0\1", 3);
  CHECK_OK(kiln_tensor_alloc(&r.values[4], KILN_UINT8, 1, &four));
  memcpy(r.values[4].data, "\0\310\3\4", 4);
  CHECK_OK(kiln_tensor_alloc(&r.values[5], KILN_STRING, 1, &two));
  ((char **)r.values[5].data)[0] = strdup("caf\xc3\xa9");
  ((char **)r.values[5].data)[1] = strdup("x");
  CHECK_OK(kiln_tensor_alloc(&r.values[6], KILN_FLOAT16, 1, &one));
  ((uint16_t *)r.values[6].data)[0] = kiln_float_to_half(1.5f);
  CHECK_OK(kiln_tensor_alloc(&r.values[7], KILN_UINT8, 0, NULL));
  ((uint8_t *)r.values[7].data)[0] = 250;

  char out[256];
  snprintf(out, sizeof out, "/tmp/kiln_test_tfrecord_types_%d.tfrecord", (int)getpid());
  kx_writer *w = NULL;
  CHECK_OK(kx_tfrecord_writer_open(out, &w));
  if (w) {
    CHECK_OK(w->write(w, &r));
    /* a feature with no list kind fails the record and names it */
    kiln_record c;
    CHECK_OK(kiln_record_init(&c, names + 8, 1, 0, NULL));
    CHECK_OK(kiln_tensor_alloc(&c.values[0], KILN_COMPLEX64, 1, &one));
    CHECK_ERROR(w->write(w, &c), KILN_UNIMPLEMENTED, "record 1: feature 'c': complex64 values have no tf.train.Feature list");
    kiln_record_release(&c);
    CHECK_OK(w->finish(w));
    w->free(w);
  }
  kiln_record_release(&r);
  CHECK(same_file(out, fixture("writer_types.tfrecord")));
  unlink(out);
}

static void test_name_set_cap(void) {
  char out[256];
  snprintf(out, sizeof out, "/tmp/kiln_test_tfrecord_sets_%d.tfrecord", (int)getpid());
  static char names[300][8];
  static const char *name_ptrs[300];
  kx_writer *w = NULL;
  CHECK_OK(kx_tfrecord_writer_open(out, &w));
  if (!w) return;
  for (int i = 0; i < 257; i++) {
    snprintf(names[i], sizeof names[i], "f%d", i);
    name_ptrs[i] = names[i];
    kiln_record r;
    int64_t one = 1;
    CHECK_OK(kiln_record_init(&r, &name_ptrs[i], 1, 0, NULL));
    CHECK_OK(kiln_tensor_alloc(&r.values[0], KILN_INT64, 1, &one));
    CHECK_OK(w->write(w, &r));
    kiln_record_release(&r);
  }
  CHECK_OK(w->finish(w));
  w->free(w);
  opened o;
  kiln_record r[4];
  int n;
  CHECK_OK(open_source(&o, out, "", KILN_ON_ERROR_SKIP));
  if (o.stage)
    CHECK_ERROR(pull_all(&o, r, 0, &n), KILN_RESOURCE_EXHAUSTED,
                "more than 256 different sets of feature names in one file; describe");
  close_source(&o);
  CHECK_OK(open_source(&o, out, "\"features\":{\"f3\":{\"dtype\":\"int64\",\"shape\":[]}}", KILN_ON_ERROR_FAIL));
  if (o.stage) {
    CHECK_OK(pull_all(&o, r, 4, &n));
    CHECK(n == 4 && r[3].values[0].dtype == KILN_INT64 && r[0].values[0].dtype == KILN_UNDEFINED);
    release_all(r, n < 4 ? n : 4);
  }
  close_source(&o);
  unlink(out);
}

static void test_parse_direct(void) {
  load_expected();
  opened o;
  CHECK_OK(open_source(&o, fixture("good.tfrecord"), "", KILN_ON_ERROR_FAIL));
  if (!o.stage) {
    close_source(&o);
    return;
  }
  kiln_record r;
  CHECK_OK(kx_tfrecord_parse(o.stage, "", 0, &r));
  CHECK(r.count == 0);
  kiln_record_release(&r);
  CHECK_ERROR(kx_tfrecord_parse(o.stage, "\x0a\x05\x0a\x03", 4, &r), KILN_INVALID_ARGUMENT, "not a tf.train.Example");
  close_source(&o);
}

TEST_MAIN(TEST(test_crc32c), TEST(test_read_good), TEST(test_read_gzip), TEST(test_bad_data_crc),
          TEST(test_bad_length_crc), TEST(test_truncated), TEST(test_garbage_example), TEST(test_max_record_bytes),
          TEST(test_features_described), TEST(test_spec_errors), TEST(test_writer_roundtrip), TEST(test_writer_dtypes),
          TEST(test_name_set_cap), TEST(test_parse_direct))
