/* Tests for kx_image_decode: PNG and JPEG fixtures made by PIL (tests/data/make_data_fixtures_transform.py)
 * against the pixels PIL decodes, and malformed images that must fail with a clear error. */
#include <cjson/cJSON.h>

#include "data/data.h"
#include "test.h"

static char *data_path(const char *name) {
  const char *dir = getenv("KILN_TEST_DATA");
  static char buf[4096];
  snprintf(buf, sizeof buf, "%s/data/%s", dir ? dir : "tests/data", name);
  return buf;
}

static cJSON *load_json(const char *name) {
  void *text = NULL;
  size_t len = 0;
  kiln_status s = kiln_file_read(data_path(name), 0, &text, &len);
  CHECK_OK(s);
  cJSON *j = text ? cJSON_ParseWithLength(text, len) : NULL;
  free(text);
  CHECK(j != NULL);
  return j;
}

static kiln_status decode_file(const char *name, int channels, kiln_tensor *out) {
  void *bytes = NULL;
  size_t len = 0;
  kiln_status s = kiln_file_read(data_path(name), 0, &bytes, &len);
  if (s) return s;
  s = kx_image_decode(bytes, len, channels, out);
  free(bytes);
  return s;
}

/* JPEG decoders may differ in their IDCT: mean |diff| <= 1 and max |diff| <= 4 levels. */
static void check_close(const char *file, int channels, const kiln_tensor *got, const kiln_tensor *want) {
  CHECK(got->rank == 3 && want->rank == 3);
  for (int d = 0; d < 3; d++) CHECK(got->dims[d] == want->dims[d]);
  if (kiln_tensor_numel(got) != kiln_tensor_numel(want)) return;
  const uint8_t *a = got->data, *b = want->data;
  int64_t n = kiln_tensor_numel(got);
  double sum = 0;
  int worst = 0;
  for (int64_t i = 0; i < n; i++) {
    int d = abs((int)a[i] - (int)b[i]);
    sum += d;
    if (d > worst) worst = d;
  }
  if (!(sum / (double)n <= 1.0 && worst <= 4))
    fprintf(stderr, "%s channels %d: mean |diff| %.3f, max %d\n", file, channels, sum / (double)n, worst);
  CHECK(sum / (double)n <= 1.0);
  CHECK(worst <= 4);
}

static void test_decode_matches_pil(void) {
  cJSON *j = load_json("image_expected.json");
  if (!j) return;
  int n = 0;
  const cJSON *c;
  cJSON_ArrayForEach(c, cJSON_GetObjectItem(j, "decode")) {
    const char *file = cJSON_GetObjectItem(c, "file")->valuestring;
    int channels = cJSON_GetObjectItem(c, "channels")->valueint;
    int exact = cJSON_IsTrue(cJSON_GetObjectItem(c, "exact"));
    kiln_tensor got, want;
    CHECK_OK(kiln_npy_read(data_path(cJSON_GetObjectItem(c, "expected")->valuestring), &want));
    kiln_status s = decode_file(file, channels, &got);
    if (s) {
      fprintf(stderr, "%s channels %d: %s\n", file, channels, kiln_status_message(s));
      kiln_status_free(s);
      test_failures++;
    } else if (exact) {
      kiln_status cmp = kiln_tensor_compare(&got, &want, 0, 0);
      if (cmp) fprintf(stderr, "%s channels %d: %s\n", file, channels, kiln_status_message(cmp));
      CHECK(cmp == NULL);
      kiln_status_free(cmp);
    } else {
      check_close(file, channels, &got, &want);
    }
    kiln_tensor_release(&got);
    kiln_tensor_release(&want);
    n++;
  }
  CHECK(n >= 18);
  cJSON_Delete(j);
}

static void test_malformed_images(void) {
  cJSON *j = load_json("image_expected.json");
  if (!j) return;
  const cJSON *c;
  int n = 0;
  cJSON_ArrayForEach(c, cJSON_GetObjectItem(j, "malformed")) {
    const char *file = cJSON_GetObjectItem(c, "file")->valuestring;
    const char *error = cJSON_GetObjectItem(c, "error")->valuestring;
    for (int channels = 0; channels <= 3; channels += channels ? 2 : 1) {
      kiln_tensor t;
      kiln_status s = decode_file(file, channels, &t);
      if (!s) {
        fprintf(stderr, "%s channels %d: decoded, expected an error\n", file, channels);
        test_failures++;
        kiln_tensor_release(&t);
        continue;
      }
      if (!strstr(kiln_status_message(s), error)) {
        fprintf(stderr, "%s: '%s' does not mention '%s'\n", file, kiln_status_message(s), error);
        test_failures++;
      }
      CHECK(t.data == NULL);
      kiln_status_free(s);
    }
    n++;
  }
  CHECK(n == 5);
  cJSON_Delete(j);
}

static void test_bad_arguments(void) {
  kiln_tensor t;
  static const uint8_t png_start[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  CHECK_ERROR(kx_image_decode(png_start, 0, 0, &t), KILN_INVALID_ARGUMENT, "with nothing");
  CHECK_ERROR(kx_image_decode(png_start, sizeof png_start, 0, &t), KILN_INVALID_ARGUMENT, "corrupt PNG image: header");
  CHECK_ERROR(kx_image_decode(png_start, sizeof png_start, 2, &t), KILN_INVALID_ARGUMENT, "0 (as stored), 1 or 3, not 2");
  static const uint8_t jpeg_start[] = {0xff, 0xd8, 0xff, 0xe0, 0, 0};
  CHECK_ERROR(kx_image_decode(jpeg_start, sizeof jpeg_start, 3, &t), KILN_INVALID_ARGUMENT, "corrupt JPEG");
  static const uint8_t text[] = "hello";
  CHECK_ERROR(kx_image_decode(text, 5, 0, &t), KILN_INVALID_ARGUMENT, "starting 68 65 6c 6c 6f");
}

TEST_MAIN(TEST(test_decode_matches_pil), TEST(test_malformed_images), TEST(test_bad_arguments))
