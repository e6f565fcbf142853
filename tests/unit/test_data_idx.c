/* The IDX source against Python's struct/gzip reading of the same files (tabular_expected.json)
 * and against Debian's Fashion-MNIST. */
#include <unistd.h>

#include "tabular_helpers.h"

#define IDX_SPEC "{\"format\":\"idx\",\"path\":\"%s\"}"

static kx_data_ctx ctx;

static void test_idx_pairs_images_with_labels(void) {
  kx_stage *s;
  char path[4096];
  snprintf(path, sizeof path, "%s", fixture("tab_small-images-idx3-ubyte"));
  CHECK_OK(open_source(kx_idx_open, &ctx, IDX_SPEC, path, &s));
  if (!s) return;
  const cJSON *images = expected_at("idx", "small_images", NULL), *labels = expected_at("idx", "small_labels", NULL);
  kiln_record r;
  kiln_status err;
  int n = 0;
  long long before = atomic_load(&ctx.read);
  for (; pull(s, &r, &err); n++) {
    CHECK(r.count == 2 && strcmp(r.names[0], "image") == 0 && strcmp(r.names[1], "label") == 0);
    CHECK(r.values[0].dtype == KILN_UINT8 && r.values[0].rank == 2 && r.values[0].dims[0] == 3 && r.values[0].dims[1] == 4);
    CHECK(r.values[1].dtype == KILN_UINT8 && r.values[1].rank == 0);
    CHECK(r.index == n && r.offset == 16 + 12 * n && strcmp(r.source, path) == 0);
    const cJSON *want = cJSON_GetArrayItem(images, n);
    for (int k = 0; k < 12; k++)
      CHECK(((uint8_t *)r.values[0].data)[k] == cJSON_GetArrayItem(want, k)->valueint);
    CHECK(*(uint8_t *)r.values[1].data == cJSON_GetArrayItem(labels, n)->valueint);
    kiln_record_release(&r);
  }
  CHECK_OK(err);
  CHECK(n == 5);
  CHECK(atomic_load(&ctx.read) - before == 5);
  /* a second epoch starts at record 0 */
  CHECK_OK(s->ops->reset(s, 1));
  CHECK(pull(s, &r, &err));
  CHECK(r.index == 0 && *(uint8_t *)r.values[1].data == 3);
  kiln_record_release(&r);
  s->ops->free(s);

  char *labels_path = kx_idx_labels_for(path);
  CHECK(labels_path && strstr(labels_path, "tab_small-labels-idx1-ubyte"));
  free(labels_path);
  CHECK(kx_idx_labels_for(fixture("tab_f32.idx")) == NULL);
}

static void test_idx_gzip_by_magic_and_dtypes(void) {
  kx_stage *s;
  /* gzip-compressed, named without .gz; float32 big-endian; renamed feature */
  CHECK_OK(open_source(kx_idx_open, &ctx, "{\"format\":\"idx\",\"path\":\"%s\",\"name\":\"x\"}", fixture("tab_f32.idx"), &s));
  if (!s) return;
  const cJSON *want = expected_at("idx", "f32", NULL);
  kiln_record r;
  kiln_status err;
  int n = 0;
  for (; pull(s, &r, &err); n++) {
    CHECK(r.count == 1 && strcmp(r.names[0], "x") == 0);
    CHECK(r.values[0].dtype == KILN_FLOAT && r.values[0].rank == 2 && r.values[0].dims[1] == 3);
    for (int k = 0; k < 6; k++)
      CHECK(((float *)r.values[0].data)[k] == (float)cJSON_GetArrayItem(cJSON_GetArrayItem(want, n), k)->valuedouble);
    kiln_record_release(&r);
  }
  CHECK_OK(err);
  CHECK(n == 4);
  s->ops->free(s);

  CHECK_OK(open_source(kx_idx_open, &ctx, IDX_SPEC, fixture("tab_i16.idx"), &s));
  if (!s) return;
  want = expected_at("idx", "i16", NULL);
  for (n = 0; pull(s, &r, &err); n++) {
    CHECK(strcmp(r.names[0], "image") == 0 && r.values[0].dtype == KILN_INT16 && r.values[0].rank == 1);
    for (int k = 0; k < 2; k++)
      CHECK(((int16_t *)r.values[0].data)[k] == cJSON_GetArrayItem(cJSON_GetArrayItem(want, n), k)->valueint);
    kiln_record_release(&r);
  }
  CHECK_OK(err);
  CHECK(n == 6);
  s->ops->free(s);

  /* a rank-1 file alone is a label */
  CHECK_OK(open_source(kx_idx_open, &ctx, IDX_SPEC, fixture("tab_small-labels-idx1-ubyte"), &s));
  if (!s) return;
  CHECK(pull(s, &r, &err));
  CHECK(r.count == 1 && strcmp(r.names[0], "label") == 0 && r.values[0].rank == 0);
  kiln_record_release(&r);
  s->ops->free(s);
}

static void test_idx_errors(void) {
  kx_stage *s;
  CHECK_ERROR(open_source(kx_idx_open, &ctx, IDX_SPEC, fixture("tab_badmagic.idx"), &s), KILN_INVALID_ARGUMENT,
              "tab_badmagic.idx: not an IDX file: the magic starts with 01 00, expected 00 00");
  CHECK_ERROR(open_source(kx_idx_open, &ctx, IDX_SPEC, fixture("tab_baddtype.idx"), &s), KILN_INVALID_ARGUMENT,
              "tab_baddtype.idx: IDX dtype code 0x07 is not one of");
  CHECK_ERROR(open_source(kx_idx_open, &ctx, IDX_SPEC, fixture("tab_badrank.idx"), &s), KILN_INVALID_ARGUMENT,
              "tab_badrank.idx: IDX rank 9 is outside 1..4");
  CHECK_ERROR(open_source(kx_idx_open, &ctx, IDX_SPEC, fixture("no-such-file"), &s), KILN_NOT_FOUND, "no-such-file");
  char spec[8192];
  snprintf(spec, sizeof spec, "{\"format\":\"idx\",\"path\":\"%%s\",\"labels\":\"%s\"}", fixture("tab_labels4.idx"));
  CHECK_ERROR(open_source(kx_idx_open, &ctx, spec, fixture("tab_small-images-idx3-ubyte"), &s), KILN_INVALID_ARGUMENT,
              "has 5 records but its labels file");
  CHECK_ERROR(open_source(kx_idx_open, &ctx, "{\"format\":\"idx\",\"path\":\"%s\",\"colour\":1}", "x", &s),
              KILN_INVALID_ARGUMENT, "unknown key 'colour'");

  /* a file that ends early: 3 records, then one bad record (fail: an error; skip: quarantined) */
  CHECK_OK(open_source(kx_idx_open, &ctx, IDX_SPEC, fixture("tab_truncated-images-idx3-ubyte"), &s));
  if (s) {
    kiln_record r;
    kiln_status err;
    int n = 0;
    while (pull(s, &r, &err)) n++, kiln_record_release(&r);
    CHECK(n == 3);
    CHECK_ERROR(err, KILN_INVALID_ARGUMENT, "record 3 (byte 52): ");
    s->ops->free(s);
  }
  kx_data_ctx skip;
  char quarantine[] = "/tmp/kiln_test_idx_quarantine_XXXXXX";
  int fd = mkstemp(quarantine);
  CHECK(fd >= 0);
  close(fd);
  CHECK_OK(kx_data_ctx_init(&skip, KILN_ON_ERROR_SKIP, quarantine, NULL, 2, NULL));
  CHECK_OK(open_source(kx_idx_open, &skip, IDX_SPEC, fixture("tab_truncated-images-idx3-ubyte"), &s));
  if (s) {
    kiln_record r;
    kiln_status err;
    int n = 0;
    while (pull(s, &r, &err)) n++, kiln_record_release(&r);
    CHECK_OK(err);
    CHECK(n == 3 && atomic_load(&skip.quarantined) == 1 && atomic_load(&skip.read) == 4);
    s->ops->free(s);
  }
  kx_data_ctx_free(&skip);
  CHECK(count_lines(quarantine) == 1);
  void *text;
  size_t len;
  CHECK_OK(kiln_file_read(quarantine, 0, &text, &len));
  CHECK(strstr(text, "file ends after 3 of 5 records") && strstr(text, "\"index\":3"));
  free(text);
  unlink(quarantine);
}

static void test_fashion_mnist(void) {
  static const char *parts[] = {"train", "t10k"};
  for (int p = 0; p < 2; p++) {
    char path[256];
    snprintf(path, sizeof path, "/usr/share/datasets/fashion-mnist/%s-images-idx3-ubyte.gz", parts[p]);
    const cJSON *want = expected_at("fashion_mnist", parts[p], NULL);
    if (access(path, R_OK) != 0 || !want) {
      fprintf(stderr, "skipping Fashion-MNIST %s: %s or its expected values missing\n", parts[p], path);
      continue;
    }
    kx_stage *s;
    CHECK_OK(open_source(kx_idx_open, &ctx, IDX_SPEC, path, &s));
    if (!s) continue;
    int64_t counts[10] = {0}, n = 0, pixel_sum = 0;
    kiln_record r;
    kiln_status err;
    for (; pull(s, &r, &err); n++) {
      const uint8_t *px = r.values[0].data;
      uint8_t label = *(uint8_t *)r.values[1].data;
      if (label < 10) counts[label]++;
      for (int k = 0; k < 784; k++) pixel_sum += px[k];
      if (n == 0) {
        CHECK(r.values[0].rank == 2 && r.values[0].dims[0] == 28 && r.values[0].dims[1] == 28);
        CHECK(label == cJSON_GetObjectItem(want, "first_label")->valueint);
        int64_t sum = 0;
        for (int k = 0; k < 784; k++) sum += px[k];
        CHECK(sum == (int64_t)cJSON_GetObjectItem(want, "first_image_sum")->valuedouble);
        const cJSON *row = cJSON_GetObjectItem(want, "first_image_row14");
        for (int k = 0; k < 28; k++) CHECK(px[14 * 28 + k] == cJSON_GetArrayItem(row, k)->valueint);
      }
      kiln_record_release(&r);
    }
    CHECK_OK(err);
    CHECK(n == cJSON_GetObjectItem(want, "count")->valueint);
    CHECK(n == (p == 0 ? 60000 : 10000));
    const cJSON *want_counts = cJSON_GetObjectItem(want, "label_counts");
    for (int k = 0; k < 10; k++) CHECK(counts[k] == cJSON_GetArrayItem(want_counts, k)->valueint && counts[k] == n / 10);
    CHECK(pixel_sum == (int64_t)cJSON_GetObjectItem(want, "pixel_sum")->valuedouble);
    s->ops->free(s);
  }
}

static void setup(void) { CHECK_OK(kx_data_ctx_init(&ctx, KILN_ON_ERROR_FAIL, NULL, NULL, 2, NULL)); }
static void teardown(void) {
  kx_data_ctx_free(&ctx);
  cJSON_Delete(expected_json());
}

TEST_MAIN(TEST(setup), TEST(test_idx_pairs_images_with_labels), TEST(test_idx_gzip_by_magic_and_dtypes),
          TEST(test_idx_errors), TEST(test_fashion_mnist), TEST(teardown))
