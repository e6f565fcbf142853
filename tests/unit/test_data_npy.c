/* The NPY/NPZ source against numpy.load of the same files (tabular_expected.json), and the NPZ
 * writer read back through the source. */
#include <unistd.h>

#include "tabular_helpers.h"

#define NPY_SPEC "{\"format\":\"npy\",\"path\":\"%s\"}"
#define NPZ_SPEC "{\"format\":\"npz\",\"path\":\"%s\"}"

static kx_data_ctx ctx;

/* Flattens a nested JSON list into out[] (doubles; strings into strs[]); returns the count. */
static int flatten(const cJSON *v, double *out, const char **strs, int at, int max) {
  if (cJSON_IsArray(v)) {
    for (const cJSON *e = v->child; e; e = e->next) at = flatten(e, out, strs, at, max);
    return at;
  }
  if (at < max) {
    out[at] = cJSON_IsBool(v) ? cJSON_IsTrue(v) : v->valuedouble;
    strs[at] = cJSON_IsString(v) ? v->valuestring : NULL;
  }
  return at + 1;
}

/* Reads every record of the source and compares feature `feature` with the expected array. */
static void check_array(kx_stage *s, int feature, const cJSON *want, const char *what) {
  double values[256];
  const char *strs[256];
  int total = flatten(cJSON_GetObjectItem(want, "values"), values, strs, 0, 256);
  const cJSON *shape = cJSON_GetObjectItem(want, "shape");
  int64_t rows = cJSON_GetArrayItem(shape, 0)->valueint;
  kiln_record r;
  kiln_status err;
  int n = 0, at = 0;
  for (; pull(s, &r, &err); n++) {
    const kiln_tensor *v = &r.values[feature];
    CHECK(v->rank == cJSON_GetArraySize(shape) - 1);
    for (int d = 0; d < v->rank; d++) CHECK(v->dims[d] == cJSON_GetArrayItem(shape, d + 1)->valueint);
    int64_t count = kiln_tensor_numel(v);
    for (int64_t k = 0; k < count && at < total; k++, at++) {
      int same = v->dtype == KILN_STRING ? strs[at] && strcmp(((char **)v->data)[k], strs[at]) == 0
                                         : kiln_tensor_get_f64(v, k) == values[at];
      if (!same) fprintf(stderr, "%s: record %d element %lld differs\n", what, n, (long long)k), test_failures++;
    }
    kiln_record_release(&r);
  }
  CHECK_OK(err);
  CHECK(n == rows && at == total);
}

static void test_npy_files(void) {
  static const char *files[] = {"tab_f32.npy", "tab_i64.npy", "tab_u8_3d.npy", "tab_bool.npy", "tab_str.npy", "tab_f64.npy"};
  static const kiln_dtype dtypes[] = {KILN_FLOAT, KILN_INT64, KILN_UINT8, KILN_BOOL, KILN_STRING, KILN_DOUBLE};
  for (int i = 0; i < 6; i++) {
    kx_stage *s;
    CHECK_OK(open_source(kx_npy_open, &ctx, NPY_SPEC, fixture(files[i]), &s));
    if (!s) continue;
    kiln_record r;
    kiln_status err;
    CHECK(pull(s, &r, &err));
    CHECK(r.count == 1 && r.values[0].dtype == dtypes[i]);
    char stem[32];
    snprintf(stem, sizeof stem, "%.*s", (int)(strlen(files[i]) - 4), files[i]);
    CHECK(strcmp(r.names[0], stem) == 0); /* the feature is named after the file */
    kiln_record_release(&r);
    CHECK_OK(s->ops->reset(s, 1));
    check_array(s, 0, expected_at("npy", files[i], NULL), files[i]);
    s->ops->free(s);
  }
  /* format 2.0 header, and the name option */
  kx_stage *s;
  CHECK_OK(open_source(kx_npy_open, &ctx, "{\"format\":\"npy\",\"path\":\"%s\",\"name\":\"w\"}", fixture("tab_f64_v2.npy"), &s));
  if (s) {
    kiln_record r;
    kiln_status err;
    CHECK(pull(s, &r, &err) && strcmp(r.names[0], "w") == 0);
    kiln_record_release(&r);
    CHECK_OK(s->ops->reset(s, 0));
    check_array(s, 0, expected_at("npy", "tab_f64.npy", NULL), "tab_f64_v2.npy");
    s->ops->free(s);
  }
}

static void test_npy_errors(void) {
  kx_stage *s;
  CHECK_ERROR(open_source(kx_npy_open, &ctx, NPY_SPEC, fixture("tab_fortran.npy"), &s), KILN_INVALID_ARGUMENT,
              "tab_fortran.npy: Fortran-order arrays are not supported");
  CHECK_ERROR(open_source(kx_npy_open, &ctx, NPY_SPEC, fixture("tab_bad.csv"), &s), KILN_INVALID_ARGUMENT,
              "tab_bad.csv: not a valid .npy file: missing the \\x93NUMPY magic");
  CHECK_ERROR(open_source(kx_npy_open, &ctx, NPZ_SPEC, fixture("tab_mismatch.npz"), &s), KILN_INVALID_ARGUMENT,
              "members must have the same first dimension: 'a' has 5, 'b' has 4");
  CHECK_ERROR(open_source(kx_npy_open, &ctx, NPZ_SPEC, fixture("tab_f32.npy"), &s), KILN_INVALID_ARGUMENT,
              "tab_f32.npy: not a readable .npz (zip) file");
  /* truncated data: 4 of 5 rows, then a bad record */
  CHECK_OK(open_source(kx_npy_open, &ctx, NPY_SPEC, fixture("tab_truncated.npy"), &s));
  if (s) {
    kiln_record r;
    kiln_status err;
    int n = 0;
    while (pull(s, &r, &err)) n++, kiln_record_release(&r);
    CHECK(n == 4);
    CHECK_ERROR(err, KILN_INVALID_ARGUMENT, "file ends after 4 of 5 records");
    s->ops->free(s);
  }
}

static void test_npz_files(void) {
  static const char *files[] = {"tab_stored.npz", "tab_deflated.npz"};
  const cJSON *order = expected_at("npz", "order", NULL), *members = expected_at("npz", "members", NULL);
  for (int i = 0; i < 2; i++) {
    for (int m = 0; m < cJSON_GetArraySize(order); m++) {
      kx_stage *s;
      /* no format key: the zip magic decides */
      CHECK_OK(open_source(kx_npy_open, &ctx, "{\"path\":\"%s\"}", fixture(files[i]), &s));
      if (!s) continue;
      const char *name = cJSON_GetArrayItem(order, m)->valuestring;
      kiln_record r;
      kiln_status err;
      CHECK(pull(s, &r, &err));
      int f = kiln_record_find(&r, name);
      CHECK(f >= 0 && r.count == cJSON_GetArraySize(order));
      kiln_record_release(&r);
      CHECK_OK(s->ops->reset(s, 1));
      if (f >= 0) check_array(s, f, cJSON_GetObjectItem(members, name), files[i]);
      s->ops->free(s);
    }
  }
}

static void test_npz_writer_round_trip(void) {
  char out[128];
  snprintf(out, sizeof out, "/tmp/kiln_test_npz_%d.npz", (int)getpid());
  kx_stage *s;
  CHECK_OK(open_source(kx_npy_open, &ctx, NPZ_SPEC, fixture("tab_deflated.npz"), &s));
  if (!s) return;
  kx_writer *w;
  CHECK_OK(kx_npz_writer_open(out, &w));
  kiln_record r;
  kiln_status err;
  while (pull(s, &r, &err)) {
    CHECK_OK(w->write(w, &r));
    kiln_record_release(&r);
  }
  CHECK_OK(err);
  CHECK_OK(w->finish(w));
  w->free(w);
  s->ops->free(s);
  /* what was written reads back as the original */
  const cJSON *order = expected_at("npz", "order", NULL), *members = expected_at("npz", "members", NULL);
  for (int m = 0; m < cJSON_GetArraySize(order); m++) {
    const char *name = cJSON_GetArrayItem(order, m)->valuestring;
    CHECK_OK(open_source(kx_npy_open, &ctx, NPZ_SPEC, out, &s));
    if (!s) continue;
    CHECK(pull(s, &r, &err));
    int f = kiln_record_find(&r, name);
    kiln_record_release(&r);
    CHECK_OK(s->ops->reset(s, 0));
    if (f >= 0) check_array(s, f, cJSON_GetObjectItem(members, name), "written npz");
    s->ops->free(s);
  }
  unlink(out);

  /* IDX images stack into [n, 3, 4]; a record whose shape differs is refused, naming it */
  CHECK_OK(kx_npz_writer_open(out, &w));
  static const char *const names[] = {"v"};
  CHECK_OK(kiln_record_init(&r, names, 1, 0, NULL));
  int64_t two = 2, three = 3;
  CHECK_OK(kiln_tensor_alloc(&r.values[0], KILN_FLOAT, 1, &two));
  CHECK_OK(w->write(w, &r));
  kiln_tensor_release(&r.values[0]);
  CHECK_OK(kiln_tensor_alloc(&r.values[0], KILN_FLOAT, 1, &three));
  CHECK_ERROR(w->write(w, &r), KILN_INVALID_ARGUMENT, "record 1: feature 'v' is float[3], but the first record's 'v' was float[2]");
  kiln_record_release(&r);
  w->free(w);
  CHECK(access(out, F_OK) != 0);
}

static void setup(void) { CHECK_OK(kx_data_ctx_init(&ctx, KILN_ON_ERROR_FAIL, NULL, NULL, 2, NULL)); }
static void teardown(void) {
  kx_data_ctx_free(&ctx);
  cJSON_Delete(expected_json());
}

TEST_MAIN(TEST(setup), TEST(test_npy_files), TEST(test_npy_errors), TEST(test_npz_files), TEST(test_npz_writer_round_trip),
          TEST(teardown))
