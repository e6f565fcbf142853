/* Tests for the map stage's transforms and the filter stage's predicates: results against numpy
 * and torch references (tests/data/make_data_fixtures_transform.py), parse and apply errors. */
#include <cjson/cJSON.h>
#include <pthread.h>

#include "data/data.h"
#include "test.h"

#define WHERE "stages[1].map.transforms"

static char *data_path(const char *name) {
  const char *dir = getenv("KILN_TEST_DATA");
  static _Thread_local char buf[4096];
  snprintf(buf, sizeof buf, "%s/data/%s", dir ? dir : "tests/data", name);
  return buf;
}

static char *data_dir(void) {
  const char *dir = getenv("KILN_TEST_DATA");
  static char buf[4096];
  snprintf(buf, sizeof buf, "%s/data", dir ? dir : "tests/data");
  return buf;
}

static cJSON *expected(void) {
  void *text = NULL;
  size_t len = 0;
  CHECK_OK(kiln_file_read(data_path("xf_expected.json"), 0, &text, &len));
  cJSON *j = text ? cJSON_ParseWithLength(text, len) : NULL;
  free(text);
  CHECK(j != NULL);
  return j;
}

static kx_data_ctx ctx;

/* Parses a transform list given as JSON text. */
static kiln_status parse(const char *json, kx_transforms **out) {
  cJSON *list = cJSON_Parse(json);
  if (!list) return kiln_error(KILN_INVALID_ARGUMENT, "test JSON does not parse: %s", json);
  kiln_status s = kx_transforms_parse(&ctx, list, WHERE, out);
  cJSON_Delete(list);
  return s;
}

static const char *const one_name[] = {"image"};

/* A record with one feature "image" holding a copy of t. */
static void one_feature(kiln_record *r, const kiln_tensor *t) {
  CHECK_OK(kiln_record_init(r, one_name, 1, 0, NULL));
  CHECK_OK(kiln_tensor_copy(&r->values[0], t));
}

/* Applies `json` to a one-feature record holding the npy `input`; returns the result's status
 * and leaves the record in *r. */
static kiln_status run_one(const char *json, const char *input, kiln_record *r) {
  memset(r, 0, sizeof *r);
  kiln_tensor in;
  kiln_status s = kiln_npy_read(data_path(input), &in);
  if (s) return s;
  one_feature(r, &in);
  kiln_tensor_release(&in);
  kx_transforms *t = NULL;
  s = parse(json, &t);
  if (!s) s = kx_transforms_apply(t, r);
  kx_transforms_free(t);
  return s;
}

static void check_against(const kiln_tensor *got, const char *expected_npy, double rtol, double atol) {
  kiln_tensor want;
  CHECK_OK(kiln_npy_read(data_path(expected_npy), &want));
  kiln_status s = kiln_tensor_compare(got, &want, rtol, atol);
  if (s) fprintf(stderr, "%s: %s\n", expected_npy, kiln_status_message(s));
  CHECK(s == NULL);
  kiln_status_free(s);
  kiln_tensor_release(&want);
}

static void test_resize_matches_torch(void) {
  cJSON *j = expected();
  const cJSON *c;
  int n = 0;
  cJSON_ArrayForEach(c, cJSON_GetObjectItem(j, "resize")) {
    const cJSON *size = cJSON_GetObjectItem(c, "size");
    const char *method = cJSON_GetObjectItem(c, "method")->valuestring;
    char json[256];
    snprintf(json, sizeof json, "[{\"resize\": {\"feature\": \"image\", \"size\": [%d, %d], \"method\": \"%s\"}}]",
             cJSON_GetArrayItem(size, 0)->valueint, cJSON_GetArrayItem(size, 1)->valueint, method);
    kiln_record r;
    CHECK_OK(run_one(json, cJSON_GetObjectItem(c, "input")->valuestring, &r));
    /* bilinear: float32 arithmetic in a different order than torch's; nearest: exact */
    int nearest = strcmp(method, "nearest") == 0;
    check_against(&r.values[0], cJSON_GetObjectItem(c, "expected")->valuestring, nearest ? 0 : 1e-5, nearest ? 0 : 1e-4);
    kiln_record_release(&r);
    n++;
  }
  CHECK(n == 9);
  cJSON_Delete(j);
}

static void test_crop(void) {
  cJSON *j = expected();
  const cJSON *c;
  cJSON_ArrayForEach(c, cJSON_GetObjectItem(j, "crop")) {
    const cJSON *spec = cJSON_GetObjectItem(c, "spec");
    cJSON *body = cJSON_Duplicate(spec, 1);
    cJSON_AddStringToObject(body, "feature", "image");
    char *text = cJSON_PrintUnformatted(body);
    char json[256];
    snprintf(json, sizeof json, "[{\"crop\": %s}]", text);
    kiln_record r;
    CHECK_OK(run_one(json, cJSON_GetObjectItem(c, "input")->valuestring, &r));
    check_against(&r.values[0], cJSON_GetObjectItem(c, "expected")->valuestring, 0, 0);
    kiln_record_release(&r);
    free(text);
    cJSON_Delete(body);
  }
  kiln_record r;
  CHECK_ERROR(run_one("[{\"crop\": {\"feature\": \"image\", \"size\": [10, 12], \"offset\": [8, 3]}}]", "xf_rgb17x23.npy", &r),
              KILN_INVALID_ARGUMENT, WHERE "[0].crop: feature 'image': a 10x12 crop at (8, 3) does not fit in uint8[17,23,3]");
  kiln_record_release(&r);
  CHECK_ERROR(run_one("[{\"crop\": {\"feature\": \"image\", \"size\": [18, 2], \"center\": true}}]", "xf_rgb17x23.npy", &r),
              KILN_INVALID_ARGUMENT, "a 18x2 crop");
  kiln_record_release(&r);
  cJSON_Delete(j);
}

static void test_scale_and_normalize(void) {
  cJSON *j = expected();
  const cJSON *sc = cJSON_GetObjectItem(j, "scale");
  char json[512];
  snprintf(json, sizeof json, "[{\"scale\": {\"feature\": \"image\", \"factor\": %.17g, \"offset\": %.17g}}]",
           cJSON_GetObjectItem(sc, "factor")->valuedouble, cJSON_GetObjectItem(sc, "offset")->valuedouble);
  kiln_record r;
  CHECK_OK(run_one(json, cJSON_GetObjectItem(sc, "input")->valuestring, &r));
  check_against(&r.values[0], cJSON_GetObjectItem(sc, "expected")->valuestring, 0, 0);
  kiln_record_release(&r);

  const cJSON *nm = cJSON_GetObjectItem(j, "normalize");
  char *mean = cJSON_PrintUnformatted(cJSON_GetObjectItem(nm, "mean"));
  char *std = cJSON_PrintUnformatted(cJSON_GetObjectItem(nm, "std"));
  snprintf(json, sizeof json, "[{\"normalize\": {\"feature\": \"image\", \"mean\": %s, \"std\": %s}}]", mean, std);
  CHECK_OK(run_one(json, cJSON_GetObjectItem(nm, "input")->valuestring, &r));
  /* cJSON prints doubles with 15 significant digits: allow for that in the reference */
  check_against(&r.values[0], cJSON_GetObjectItem(nm, "expected")->valuestring, 1e-6, 1e-6);
  kiln_record_release(&r);
  /* per-channel values against a tensor whose last axis is not 3 */
  snprintf(json, sizeof json, "[{\"normalize\": {\"feature\": \"image\", \"mean\": %s, \"std\": 2}}]", mean);
  CHECK_ERROR(run_one(json, "xf_gray28.npy", &r), KILN_INVALID_ARGUMENT,
              WHERE "[0].normalize: feature 'image': 3 per-channel mean/std values need a last axis of 3, found uint8[28,28]");
  kiln_record_release(&r);
  free(mean);
  free(std);

  const cJSON *ns = cJSON_GetObjectItem(j, "normalize_schema");
  /* the schema's feature is "x": rename first so the names line up (r.names died with the list) */
  CHECK_OK(run_one("[{\"rename\": {\"from\": \"image\", \"to\": \"x\"}}, {\"normalize\": {\"feature\": \"x\", \"schema\": "
                   "\"xf_schema.json\"}}]",
                   cJSON_GetObjectItem(ns, "input")->valuestring, &r));
  check_against(&r.values[0], cJSON_GetObjectItem(ns, "expected")->valuestring, 1e-6, 1e-6);
  kiln_record_release(&r);
  cJSON_Delete(j);
}

static void test_normalize_schema_errors(void) {
  kx_transforms *t = NULL;
  CHECK_ERROR(parse("[{\"normalize\": {\"feature\": \"image\", \"schema\": \"xf_schema.json\"}}]", &t), KILN_NOT_FOUND,
              WHERE "[0].normalize.schema: ");
  CHECK_ERROR(parse("[{\"normalize\": {\"feature\": \"image\", \"schema\": \"xf_schema.json\"}}]", &t), KILN_NOT_FOUND,
              "has no feature 'image'");
  CHECK_ERROR(parse("[{\"normalize\": {\"feature\": \"flat\", \"schema\": \"xf_schema.json\"}}]", &t),
              KILN_INVALID_ARGUMENT, "xf_schema.json: features[2].stats.std[0]: std must be > 0 (it divides), found 0");
  CHECK_ERROR(parse("[{\"normalize\": {\"feature\": \"name\", \"schema\": \"xf_schema.json\"}}]", &t),
              KILN_INVALID_ARGUMENT, "feature 'name' has no \"stats\" object");
  CHECK_ERROR(parse("[{\"normalize\": {\"feature\": \"x\", \"schema\": \"no_such_schema.json\"}}]", &t), KILN_NOT_FOUND,
              "no_such_schema.json");
  CHECK_ERROR(parse("[{\"normalize\": {\"feature\": \"x\", \"schema\": \"xf_gray28.npy\"}}]", &t),
              KILN_INVALID_ARGUMENT, "is not valid JSON");
  CHECK_ERROR(parse("[{\"normalize\": {\"feature\": \"x\", \"schema\": \"xf_schema.json\", \"mean\": 1}}]", &t),
              KILN_INVALID_ARGUMENT, "give 'schema' or 'mean' and 'std', not both");
  CHECK_ERROR(parse("[{\"normalize\": {\"feature\": \"x\", \"mean\": [1, 2, 3], \"std\": [1, 2]}}]", &t),
              KILN_INVALID_ARGUMENT, "3 mean values and 2 std values");
  CHECK_ERROR(parse("[{\"normalize\": {\"feature\": \"x\", \"mean\": 1, \"std\": [1, 0, 2]}}]", &t), KILN_INVALID_ARGUMENT,
              WHERE "[0].normalize.std[1]: std must be > 0 (it divides), found 0");
  CHECK_ERROR(parse("[{\"normalize\": {\"feature\": \"x\", \"mean\": 1}}]", &t), KILN_INVALID_ARGUMENT,
              "missing required key 'std'");
  CHECK(t == NULL);
}

static void test_one_hot(void) {
  cJSON *j = expected();
  const cJSON *oh = cJSON_GetObjectItem(j, "one_hot");
  kiln_record r;
  CHECK_OK(run_one("[{\"one_hot\": {\"feature\": \"image\", \"depth\": 10}}]", cJSON_GetObjectItem(oh, "input")->valuestring, &r));
  check_against(&r.values[0], cJSON_GetObjectItem(oh, "expected")->valuestring, 0, 0);
  kiln_record_release(&r);

  /* a scalar label gives a [depth] vector of the requested dtype */
  kiln_tensor label;
  CHECK_OK(kiln_tensor_alloc(&label, KILN_INT32, 0, NULL));
  ((int32_t *)label.data)[0] = 2;
  one_feature(&r, &label);
  kx_transforms *t = NULL;
  CHECK_OK(parse("[{\"one_hot\": {\"feature\": \"image\", \"depth\": 4, \"dtype\": \"uint8\"}}]", &t));
  CHECK_OK(kx_transforms_apply(t, &r));
  CHECK(r.values[0].dtype == KILN_UINT8 && r.values[0].rank == 1 && r.values[0].dims[0] == 4);
  static const uint8_t want[4] = {0, 0, 1, 0};
  CHECK(memcmp(r.values[0].data, want, 4) == 0);
  kiln_record_release(&r);
  ((int32_t *)label.data)[0] = 4;
  one_feature(&r, &label);
  CHECK_ERROR(kx_transforms_apply(t, &r), KILN_INVALID_ARGUMENT,
              WHERE "[0].one_hot: feature 'image': label 4 (element 0) is not an integer in 0..3");
  kiln_record_release(&r);
  ((int32_t *)label.data)[0] = -1;
  one_feature(&r, &label);
  CHECK_ERROR(kx_transforms_apply(t, &r), KILN_INVALID_ARGUMENT, "label -1 (element 0)");
  kiln_record_release(&r);
  kiln_tensor_release(&label);
  kx_transforms_free(t);
  cJSON_Delete(j);
}

static void test_cast(void) {
  cJSON *j = expected();
  const cJSON *c;
  int n = 0;
  cJSON_ArrayForEach(c, cJSON_GetObjectItem(j, "cast")) {
    char json[256];
    snprintf(json, sizeof json, "[{\"cast\": {\"feature\": \"image\", \"dtype\": \"%s\"}}]",
             cJSON_GetObjectItem(c, "dtype")->valuestring);
    kiln_record r;
    CHECK_OK(run_one(json, cJSON_GetObjectItem(c, "input")->valuestring, &r));
    check_against(&r.values[0], cJSON_GetObjectItem(c, "expected")->valuestring, 0, 0);
    kiln_record_release(&r);
    n++;
  }
  CHECK(n == 7);
  kiln_record r;
  CHECK_ERROR(run_one("[{\"cast\": {\"feature\": \"image\", \"dtype\": \"int8\"}}]", "xf_cast_floats.npy", &r),
              KILN_INVALID_ARGUMENT, WHERE "[0].cast: feature 'image': element 6 (255.89999389648438) does not fit int8");
  kiln_record_release(&r);
  /* text never casts to numbers */
  kiln_tensor text;
  CHECK_OK(kiln_tensor_alloc(&text, KILN_STRING, 0, NULL));
  ((char **)text.data)[0] = strdup("12");
  one_feature(&r, &text);
  kx_transforms *t = NULL;
  CHECK_OK(parse("[{\"cast\": {\"feature\": \"image\", \"dtype\": \"int64\"}}]", &t));
  CHECK_ERROR(kx_transforms_apply(t, &r), KILN_INVALID_ARGUMENT, "cannot cast string[] to int64");
  kx_transforms_free(t);
  kiln_record_release(&r);
  kiln_tensor_release(&text);
  cJSON_Delete(j);
}

/* A record of three features whose values view the record's own block (as sources make them). */
static const char *const abc[] = {"a", "b", "c"};
static void three_views(kiln_record *r, float base) {
  void *data;
  CHECK_OK(kiln_record_init(r, abc, 3, 3 * 2 * sizeof(float), &data));
  for (int i = 0; i < 3; i++) {
    int64_t dims[1] = {2};
    CHECK_OK(kiln_tensor_set_shape(&r->values[i], KILN_FLOAT, 1, dims));
    float *f = (float *)data + 2 * i;
    f[0] = base + (float)i;
    f[1] = base + (float)i + 0.5f;
    r->values[i].data = f;
  }
}

static void test_select_and_rename(void) {
  kx_transforms *t = NULL;
  CHECK_OK(parse("[{\"select\": {\"features\": [\"c\", \"a\"]}}, {\"rename\": {\"from\": \"a\", \"to\": \"alpha\"}},"
                 " {\"scale\": {\"feature\": \"c\", \"factor\": 2}}]", &t));
  const char *const *names = NULL;
  for (int k = 0; k < 3; k++) {
    kiln_record r;
    three_views(&r, (float)(10 * k));
    CHECK_OK(kx_transforms_apply(t, &r));
    CHECK(r.count == 2);
    CHECK(strcmp(r.names[0], "c") == 0 && strcmp(r.names[1], "alpha") == 0);
    /* the renamed names array is built once per upstream layout and shared */
    if (k) CHECK(r.names == names);
    names = r.names;
    CHECK(r.values[0].owner != NULL && ((float *)r.values[0].data)[1] == 2 * (10.0f * (float)k + 2.5f));
    CHECK(r.values[1].owner == NULL && ((float *)r.values[1].data)[0] == 10.0f * (float)k);
    kiln_record_release(&r);
  }
  kiln_record r;
  three_views(&r, 0);
  kx_transforms *bad = NULL;
  CHECK_OK(parse("[{\"select\": {\"features\": [\"c\", \"zz\"]}}]", &bad));
  CHECK_ERROR(kx_transforms_apply(bad, &r), KILN_INVALID_ARGUMENT,
              WHERE "[0].select: feature 'zz': not in the record (it has: a, b, c)");
  kx_transforms_free(bad);
  CHECK(r.count == 3);
  CHECK_OK(parse("[{\"rename\": {\"from\": \"a\", \"to\": \"b\"}}]", &bad));
  CHECK_ERROR(kx_transforms_apply(bad, &r), KILN_INVALID_ARGUMENT,
              "feature 'a': cannot rename it to 'b': the record already has a feature of that name");
  kx_transforms_free(bad);
  CHECK_OK(parse("[{\"rename\": {\"from\": \"q\", \"to\": \"r\"}}]", &bad));
  CHECK_ERROR(kx_transforms_apply(bad, &r), KILN_INVALID_ARGUMENT, "feature 'q': not in the record");
  kx_transforms_free(bad);
  kiln_record_release(&r);
  kx_transforms_free(t);
}

typedef struct worker_arg {
  const kx_transforms *t;
  int failures;
} worker_arg;

static void *worker(void *p) {
  worker_arg *w = p;
  for (int k = 0; k < 200; k++) {
    kiln_record r;
    three_views(&r, (float)k);
    kiln_status s = kx_transforms_apply(w->t, &r);
    if (s || r.count != 2 || strcmp(r.names[1], "alpha") != 0) w->failures++;
    kiln_status_free(s);
    kiln_record_release(&r);
  }
  return NULL;
}

/* One parsed list applied from several threads at once (the map stage's parallel workers). */
static void test_apply_from_threads(void) {
  kx_transforms *t = NULL;
  CHECK_OK(parse("[{\"rename\": {\"from\": \"a\", \"to\": \"alpha\"}}, {\"select\": {\"features\": [\"c\", \"alpha\"]}},"
                 " {\"normalize\": {\"features\": [\"c\", \"alpha\"], \"mean\": 1, \"std\": 3}}]", &t));
  pthread_t th[4];
  worker_arg args[4];
  for (int i = 0; i < 4; i++) {
    args[i] = (worker_arg){t, 0};
    CHECK(pthread_create(&th[i], NULL, worker, &args[i]) == 0);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    CHECK(args[i].failures == 0);
  }
  kx_transforms_free(t);
}

static void test_decode_chain(void) {
  void *png = NULL;
  size_t len = 0;
  CHECK_OK(kiln_file_read(data_path("img_rgb.png"), 0, &png, &len));
  kiln_tensor bytes, want;
  int64_t dims[1] = {(int64_t)len};
  CHECK_OK(kiln_tensor_alloc(&bytes, KILN_UINT8, 1, dims));
  memcpy(bytes.data, png, len);
  kiln_record r;
  one_feature(&r, &bytes);
  kx_transforms *t = NULL;
  CHECK_OK(parse("[{\"decode\": {\"feature\": \"image\", \"channels\": 3}}]", &t));
  CHECK_OK(kx_transforms_apply(t, &r));
  CHECK_OK(kiln_npy_read(data_path("img_rgb_png_c3.npy"), &want));
  kiln_status s = kiln_tensor_compare(&r.values[0], &want, 0, 0);
  CHECK(s == NULL);
  kiln_status_free(s);
  kiln_tensor_release(&want);
  kiln_record_release(&r);
  kx_transforms_free(t);

  /* decode, center crop, resize, normalize: a typical image pipeline's map */
  one_feature(&r, &bytes);
  CHECK_OK(parse("[{\"decode\": {\"feature\": \"image\"}}, {\"crop\": {\"feature\": \"image\", \"size\": [10, 10], "
                 "\"center\": true}}, {\"resize\": {\"feature\": \"image\", \"size\": [32, 32]}},"
                 " {\"normalize\": {\"feature\": \"image\", \"mean\": [120, 110, 100], \"std\": [60, 50, 40]}}]", &t));
  CHECK_OK(kx_transforms_apply(t, &r));
  CHECK(r.values[0].dtype == KILN_FLOAT && r.values[0].rank == 3 && r.values[0].dims[0] == 32 &&
        r.values[0].dims[1] == 32 && r.values[0].dims[2] == 3);
  kiln_record_release(&r);
  kx_transforms_free(t);

  /* corrupt bytes: the error names the transform, the feature and the decoder's complaint */
  ((uint8_t *)bytes.data)[len / 2] ^= 0x55;
  ((uint8_t *)bytes.data)[len / 2 + 1] ^= 0x55;
  one_feature(&r, &bytes);
  CHECK_OK(parse("[{\"decode\": {\"feature\": \"image\"}}]", &t));
  CHECK_ERROR(kx_transforms_apply(t, &r), KILN_INVALID_ARGUMENT, WHERE "[0].decode: feature 'image': corrupt PNG image");
  kiln_record_release(&r);
  kiln_tensor_release(&bytes);
  CHECK_OK(kiln_tensor_alloc(&bytes, KILN_FLOAT, 1, dims));
  one_feature(&r, &bytes);
  CHECK_ERROR(kx_transforms_apply(t, &r), KILN_INVALID_ARGUMENT,
              "feature 'image': expected encoded image bytes (uint8[N] or one string), found float[");
  kiln_record_release(&r);
  kx_transforms_free(t);
  kiln_tensor_release(&bytes);
  free(png);
}

static void test_apply_errors(void) {
  kiln_record r;
  CHECK_ERROR(run_one("[{\"resize\": {\"feature\": \"label\", \"size\": [4, 4]}}]", "xf_gray28.npy", &r),
              KILN_INVALID_ARGUMENT, WHERE "[0].resize: feature 'label': not in the record (it has: image)");
  kiln_record_release(&r);
  CHECK_ERROR(run_one("[{\"resize\": {\"feature\": \"image\", \"size\": [4, 4]}}]", "xf_labels.npy", &r),
              KILN_INVALID_ARGUMENT, WHERE "[0].resize: feature 'image': expected an image [H, W, C] or [H, W], found int64[5]");
  kiln_record_release(&r);
  CHECK_ERROR(run_one("[{\"one_hot\": {\"feature\": \"image\", \"depth\": 3}}]", "xf_cast_floats.npy", &r),
              KILN_INVALID_ARGUMENT, "label -2.7000000476837158 (element 0) is not an integer in 0..2");
  kiln_record_release(&r);
  /* a missing value (an empty CSV field) is a bad record for every transform that reads it */
  CHECK_OK(kiln_record_init(&r, one_name, 1, 0, NULL));
  kx_transforms *t = NULL;
  CHECK_OK(parse("[{\"scale\": {\"feature\": \"image\", \"factor\": 2}}]", &t));
  CHECK_ERROR(kx_transforms_apply(t, &r), KILN_INVALID_ARGUMENT, "feature 'image': the value is missing (null)");
  kx_transforms_free(t);
  kiln_record_release(&r);
}

static void test_parse_errors(void) {
  kx_transforms *t = NULL;
  CHECK_ERROR(parse("{\"resize\": {}}", &t), KILN_INVALID_ARGUMENT, WHERE ": expected a list of transforms");
  CHECK_ERROR(parse("[{\"blur\": {\"feature\": \"x\"}}]", &t), KILN_INVALID_ARGUMENT,
              WHERE "[0]: unknown transform 'blur' (known: decode, resize");
  CHECK_ERROR(parse("[{\"scale\": {\"feature\": \"x\"}}, {\"resize\": {\"feature\": \"x\", \"sise\": [1, 2]}}]", &t),
              KILN_INVALID_ARGUMENT, WHERE "[1].resize: unknown key 'sise' (known: feature, features, size, method)");
  CHECK_ERROR(parse("[{\"scale\": {\"feature\": \"x\"}, \"crop\": {}}]", &t), KILN_INVALID_ARGUMENT,
              WHERE "[0]: expected an object with exactly one key");
  CHECK_ERROR(parse("[{\"cast\": {\"feature\": \"x\", \"dtype\": \"strin\"}}]", &t), KILN_INVALID_ARGUMENT,
              WHERE "[0].cast.dtype: 'strin' is not a numeric dtype");
  CHECK_ERROR(parse("[{\"cast\": {\"feature\": \"x\", \"dtype\": \"string\"}}]", &t), KILN_INVALID_ARGUMENT,
              "'string' is not a numeric dtype");
  CHECK_ERROR(parse("[{\"cast\": {\"feature\": \"x\"}}]", &t), KILN_INVALID_ARGUMENT,
              WHERE "[0].cast: missing required key 'dtype'");
  CHECK_ERROR(parse("[{\"one_hot\": {\"feature\": \"x\", \"depth\": 0}}]", &t), KILN_INVALID_ARGUMENT,
              WHERE "[0].one_hot.depth: 0 is outside 1..16777216");
  CHECK_ERROR(parse("[{\"resize\": {\"feature\": \"x\", \"size\": [224]}}]", &t), KILN_INVALID_ARGUMENT,
              WHERE "[0].resize.size: expected [height, width], found 1 value(s)");
  CHECK_ERROR(parse("[{\"resize\": {\"feature\": \"x\", \"size\": [0, 5]}}]", &t), KILN_INVALID_ARGUMENT,
              WHERE "[0].resize.size[0]: expected an integer in 1..65536, found 0");
  CHECK_ERROR(parse("[{\"resize\": {\"feature\": \"x\", \"size\": [5, 5], \"method\": \"bicubic\"}}]", &t),
              KILN_INVALID_ARGUMENT, "expected \"bilinear\" or \"nearest\", found \"bicubic\"");
  CHECK_ERROR(parse("[{\"crop\": {\"feature\": \"x\", \"size\": [5, 5]}}]", &t), KILN_INVALID_ARGUMENT,
              "missing required key 'offset' (or \"center\": true)");
  CHECK_ERROR(parse("[{\"crop\": {\"feature\": \"x\", \"size\": [5, 5], \"offset\": [0, 0], \"center\": true}}]", &t),
              KILN_INVALID_ARGUMENT, "give 'offset' or \"center\": true, not both");
  CHECK_ERROR(parse("[{\"decode\": {\"feature\": \"x\", \"channels\": 2}}]", &t), KILN_INVALID_ARGUMENT,
              WHERE "[0].decode.channels: expected 0 (as stored), 1 or 3, found 2");
  CHECK_ERROR(parse("[{\"decode\": {\"channels\": 1}}]", &t), KILN_INVALID_ARGUMENT,
              WHERE "[0].decode: missing required key 'feature' (or 'features')");
  CHECK_ERROR(parse("[{\"scale\": {\"features\": [\"a\", \"b\", \"a\"]}}]", &t), KILN_INVALID_ARGUMENT,
              WHERE "[0].scale.features: 'a' is listed twice");
  CHECK_ERROR(parse("[{\"scale\": {\"feature\": \"a\", \"features\": [\"b\"]}}]", &t), KILN_INVALID_ARGUMENT,
              "give 'feature' or 'features', not both");
  CHECK_ERROR(parse("[{\"rename\": {\"from\": \"a\"}}]", &t), KILN_INVALID_ARGUMENT,
              WHERE "[0].rename: missing required key 'to'");
  CHECK(t == NULL);
  CHECK_OK(parse("[]", &t));
  kiln_record r;
  three_views(&r, 1);
  CHECK_OK(kx_transforms_apply(t, &r));
  CHECK(r.count == 3);
  kiln_record_release(&r);
  kx_transforms_free(t);
}

/* ---------------------------------------------------------------- predicates */

static kiln_status predicate(const char *json, kx_predicate **out) {
  cJSON *obj = cJSON_Parse(json);
  kiln_status s = kx_predicate_parse(obj, "stages[2].filter", out);
  cJSON_Delete(obj);
  return s;
}

static const char *const pred_names[] = {"label", "name", "x", "vec", "gone"};

/* label int64 scalar, name string, x float32 scalar, vec float32[2], gone missing. */
static void pred_record(kiln_record *r, int64_t label, const char *name, float x) {
  CHECK_OK(kiln_record_init(r, pred_names, 5, 0, NULL));
  int64_t two[1] = {2};
  CHECK_OK(kiln_tensor_alloc(&r->values[0], KILN_INT64, 0, NULL));
  ((int64_t *)r->values[0].data)[0] = label;
  CHECK_OK(kiln_tensor_alloc(&r->values[1], KILN_STRING, 0, NULL));
  ((char **)r->values[1].data)[0] = strdup(name);
  CHECK_OK(kiln_tensor_alloc(&r->values[2], KILN_FLOAT, 0, NULL));
  ((float *)r->values[2].data)[0] = x;
  CHECK_OK(kiln_tensor_alloc(&r->values[3], KILN_FLOAT, 1, two));
}

static int eval(const char *json, const kiln_record *r) {
  kx_predicate *p = NULL;
  int keep = -1;
  CHECK_OK(predicate(json, &p));
  if (p) CHECK_OK(kx_predicate_eval(p, r, &keep));
  kx_predicate_free(p);
  return keep;
}

static void test_predicates(void) {
  kiln_record r;
  pred_record(&r, 7, "cat", 0.5f);
  CHECK(eval("{\"feature\": \"label\", \"in\": [1, 7, 9]}", &r) == 1);
  CHECK(eval("{\"feature\": \"label\", \"in\": [1, 9]}", &r) == 0);
  CHECK(eval("{\"feature\": \"name\", \"in\": [\"dog\", \"cat\"]}", &r) == 1);
  CHECK(eval("{\"feature\": \"name\", \"in\": [\"dog\"]}", &r) == 0);
  CHECK(eval("{\"feature\": \"name\", \"op\": \"==\", \"value\": \"cat\"}", &r) == 1);
  CHECK(eval("{\"feature\": \"name\", \"op\": \"!=\", \"value\": \"cat\"}", &r) == 0);
  CHECK(eval("{\"feature\": \"x\", \"op\": \"<\", \"value\": 0.75}", &r) == 1);
  CHECK(eval("{\"feature\": \"x\", \"op\": \"<=\", \"value\": 0.5}", &r) == 1);
  CHECK(eval("{\"feature\": \"x\", \"op\": \">\", \"value\": 0.5}", &r) == 0);
  CHECK(eval("{\"feature\": \"x\", \"op\": \">=\", \"value\": 0.5}", &r) == 1);
  CHECK(eval("{\"feature\": \"label\", \"op\": \"==\", \"value\": 7}", &r) == 1);
  CHECK(eval("{\"feature\": \"label\", \"op\": \"!=\", \"value\": 7}", &r) == 0);
  CHECK(eval("{\"feature\": \"gone\", \"present\": true}", &r) == 0);
  CHECK(eval("{\"feature\": \"gone\", \"present\": false}", &r) == 1);
  CHECK(eval("{\"feature\": \"nowhere\", \"present\": false}", &r) == 1);
  CHECK(eval("{\"feature\": \"label\", \"present\": true}", &r) == 1);

  kx_predicate *p = NULL;
  int keep;
  CHECK_OK(predicate("{\"feature\": \"gone\", \"op\": \">\", \"value\": 1}", &p));
  CHECK_ERROR(kx_predicate_eval(p, &r, &keep), KILN_INVALID_ARGUMENT, "stages[2].filter: feature 'gone' is missing (null)");
  kx_predicate_free(p);
  CHECK_OK(predicate("{\"feature\": \"nowhere\", \"in\": [1]}", &p));
  CHECK_ERROR(kx_predicate_eval(p, &r, &keep), KILN_INVALID_ARGUMENT, "feature 'nowhere' is not in the record");
  kx_predicate_free(p);
  CHECK_OK(predicate("{\"feature\": \"vec\", \"op\": \"==\", \"value\": 0}", &p));
  CHECK_ERROR(kx_predicate_eval(p, &r, &keep), KILN_INVALID_ARGUMENT,
              "feature 'vec': expected a scalar (one element), found float[2]");
  kx_predicate_free(p);
  CHECK_OK(predicate("{\"feature\": \"name\", \"in\": [1, 2]}", &p));
  CHECK_ERROR(kx_predicate_eval(p, &r, &keep), KILN_INVALID_ARGUMENT, "feature 'name' is string[] but the predicate compares numbers");
  kx_predicate_free(p);
  kiln_record_release(&r);

  CHECK_ERROR(predicate("{\"feature\": \"x\", \"op\": \"~\", \"value\": 1}", &p), KILN_INVALID_ARGUMENT,
              "stages[2].filter.op: unknown operator \"~\"");
  CHECK_ERROR(predicate("{\"feature\": \"x\", \"op\": \"<\", \"value\": \"a\"}", &p), KILN_INVALID_ARGUMENT,
              "strings compare only with == and !=, not <");
  CHECK_ERROR(predicate("{\"feature\": \"x\", \"in\": [1, \"a\"]}", &p), KILN_INVALID_ARGUMENT,
              "stages[2].filter.in[1]: mixes strings and numbers");
  CHECK_ERROR(predicate("{\"feature\": \"x\", \"in\": [1], \"op\": \"==\", \"value\": 1}", &p), KILN_INVALID_ARGUMENT,
              "expected exactly one of 'in', 'op' (with 'value') or 'present'");
  CHECK_ERROR(predicate("{\"feature\": \"x\", \"in\": []}", &p), KILN_INVALID_ARGUMENT, "stages[2].filter.in: expected a non-empty list");
  CHECK_ERROR(predicate("{\"feature\": \"x\", \"op\": \"==\"}", &p), KILN_INVALID_ARGUMENT, "missing required key 'value'");
  CHECK_ERROR(predicate("{\"in\": [1]}", &p), KILN_INVALID_ARGUMENT, "stages[2].filter: missing required key 'feature'");
  CHECK_ERROR(predicate("{\"feature\": \"x\", \"in\": [1], \"where\": 1}", &p), KILN_INVALID_ARGUMENT,
              "stages[2].filter: unknown key 'where'");
  CHECK_ERROR(predicate("{\"feature\": \"x\", \"present\": 1}", &p), KILN_INVALID_ARGUMENT,
              "stages[2].filter.present: expected true or false");
  CHECK(p == NULL);
}

static void setup(void) { CHECK_OK(kx_data_ctx_init(&ctx, KILN_ON_ERROR_FAIL, NULL, NULL, 1, data_dir())); }
static void teardown(void) { kx_data_ctx_free(&ctx); }

TEST_MAIN(TEST(setup), TEST(test_resize_matches_torch), TEST(test_crop), TEST(test_scale_and_normalize),
          TEST(test_normalize_schema_errors), TEST(test_one_hot), TEST(test_cast), TEST(test_select_and_rename),
          TEST(test_apply_from_threads), TEST(test_decode_chain), TEST(test_apply_errors), TEST(test_parse_errors),
          TEST(test_predicates), TEST(teardown))
