/* The image folder source against a fixture made with PIL (tests/data/make_data_fixtures_images.py):
 * class labels, order, paths and bytes; unreadable and oversized files as bad records; spec errors. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/data.h"
#include "test.h"

static char root[1024];
static cJSON *expected;

static void load_expected(void) {
  if (expected) return;
  const char *data = getenv("KILN_TEST_DATA");
  char path[1100];
  snprintf(root, sizeof root, "%s/data/images/flowers", data ? data : "tests/data");
  snprintf(path, sizeof path, "%s/data/images/expected.json", data ? data : "tests/data");
  void *text;
  size_t len;
  kiln_status s = kiln_file_read(path, 0, &text, &len);
  if (s) {
    fprintf(stderr, "%s\n", kiln_status_message(s));
    exit(1);
  }
  expected = cJSON_Parse(text);
  free(text);
  if (!expected) exit(1);
}

typedef struct opened {
  kx_data_ctx ctx;
  kx_stage *stage;
  char quarantine[256];
} opened;

static kiln_status open_folder(opened *o, const char *folder, const char *extra, kiln_on_error mode) {
  memset(o, 0, sizeof *o);
  snprintf(o->quarantine, sizeof o->quarantine, "/tmp/kiln_test_images_%d.jsonl", (int)getpid());
  kiln_status s = kx_data_ctx_init(&o->ctx, mode, o->quarantine, NULL, 1, NULL);
  if (s) return s;
  char json[2048];
  snprintf(json, sizeof json, "{\"format\":\"images\",\"path\":\"%s\"%s%s}", folder, extra[0] ? "," : "", extra);
  cJSON *spec = cJSON_Parse(json);
  s = kx_images_open(&o->ctx, spec, &o->stage);
  cJSON_Delete(spec);
  return s;
}

static void close_folder(opened *o) {
  if (o->stage) o->stage->ops->free(o->stage);
  kx_data_ctx_free(&o->ctx);
  unlink(o->quarantine);
}

static void test_records(void) {
  load_expected();
  opened o;
  CHECK_OK(open_folder(&o, root, "", KILN_ON_ERROR_FAIL));
  if (!o.stage) {
    close_folder(&o);
    return;
  }
  const cJSON *records = cJSON_GetObjectItem(expected, "records");
  for (int pass = 0; pass < 2; pass++) {
    int n = 0;
    for (;;) {
      kiln_record r;
      int done;
      kiln_status s = o.stage->ops->next(o.stage, &r, &done);
      CHECK_OK(s);
      if (s || done) break;
      const cJSON *want = cJSON_GetArrayItem(records, n);
      if (want && r.count == 3) {
        const char *rel = cJSON_GetObjectItem(want, "path")->valuestring;
        CHECK(strcmp(r.names[0], "image") == 0 && strcmp(r.names[1], "label") == 0 && strcmp(r.names[2], "path") == 0);
        CHECK(r.index == n && r.offset == -1);
        CHECK(r.values[1].dtype == KILN_INT64 && r.values[1].rank == 0);
        CHECK(*(const int64_t *)r.values[1].data == (int64_t)cJSON_GetObjectItem(want, "label")->valuedouble);
        CHECK(r.values[2].dtype == KILN_STRING && strcmp(((char **)r.values[2].data)[0], rel) == 0);
        char file[1200];
        snprintf(file, sizeof file, "%s/%s", root, rel);
        CHECK(strcmp(r.source, file) == 0);
        void *bytes = NULL;
        size_t len = 0;
        CHECK_OK(kiln_file_read(file, 0, &bytes, &len));
        CHECK(len == (size_t)cJSON_GetObjectItem(want, "bytes")->valuedouble);
        CHECK(r.values[0].dtype == KILN_UINT8 && r.values[0].rank == 1 && r.values[0].dims[0] == (int64_t)len);
        CHECK(bytes && memcmp(r.values[0].data, bytes, len) == 0);
        free(bytes);
      } else {
        CHECK(!"an unexpected record");
      }
      kiln_record_release(&r);
      n++;
    }
    CHECK(n == cJSON_GetArraySize(records));
    CHECK_OK(o.stage->ops->reset(o.stage, pass + 1));
  }
  CHECK(atomic_load(&o.ctx.read) == 2 * cJSON_GetArraySize(records));
  close_folder(&o);

  /* "root/" is the same folder: the paths stay relative */
  char slash[1100];
  snprintf(slash, sizeof slash, "%s/", root);
  CHECK_OK(open_folder(&o, slash, "", KILN_ON_ERROR_FAIL));
  if (o.stage) {
    kiln_record r;
    int done;
    CHECK_OK(o.stage->ops->next(o.stage, &r, &done));
    CHECK(!done && strcmp(((char **)r.values[2].data)[0], "roses/C.PNG") == 0);
    if (!done) kiln_record_release(&r);
  }
  close_folder(&o);
}

static void test_decode_options(void) {
  load_expected();
  opened o;
  CHECK_OK(open_folder(&o, root, "", KILN_ON_ERROR_FAIL));
  CHECK(o.stage && kx_images_decode_channels(o.stage) == 0);
  close_folder(&o);
  CHECK_OK(open_folder(&o, root, "\"decode\":true,\"channels\":3", KILN_ON_ERROR_FAIL));
  CHECK(o.stage && kx_images_decode_channels(o.stage) == 3);
  close_folder(&o);
  CHECK_OK(open_folder(&o, root, "\"decode\":false,\"channels\":1", KILN_ON_ERROR_FAIL));
  CHECK(o.stage && kx_images_decode_channels(o.stage) == -1);
  close_folder(&o);
  CHECK_ERROR(open_folder(&o, root, "\"channels\":2", KILN_ON_ERROR_FAIL), KILN_INVALID_ARGUMENT,
              "source.channels: expected 0 (the image's own), 1 or 3, found 2");
  close_folder(&o);
  CHECK_ERROR(open_folder(&o, root, "\"decode\":1", KILN_ON_ERROR_FAIL), KILN_INVALID_ARGUMENT,
              "source.decode: expected true or false");
  close_folder(&o);
  CHECK_ERROR(open_folder(&o, root, "\"shuffle\":true", KILN_ON_ERROR_FAIL), KILN_INVALID_ARGUMENT,
              "source: unknown key 'shuffle'");
  close_folder(&o);
}

static void test_open_errors(void) {
  opened o;
  char dir[] = "/tmp/kiln_test_images_XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  CHECK_ERROR(open_folder(&o, dir, "", KILN_ON_ERROR_FAIL), KILN_INVALID_ARGUMENT, "has no class folders");
  close_folder(&o);
  char file[200];
  snprintf(file, sizeof file, "%s/loose.png", dir);
  FILE *f = fopen(file, "w");
  if (f) fclose(f);
  CHECK_ERROR(open_folder(&o, dir, "", KILN_ON_ERROR_FAIL), KILN_INVALID_ARGUMENT, "has no class folders");
  close_folder(&o);
  unlink(file);
  rmdir(dir);
  CHECK_ERROR(open_folder(&o, "/nonexistent/kiln/images", "", KILN_ON_ERROR_FAIL), KILN_NOT_FOUND,
              "image folder /nonexistent/kiln/images: cannot open");
  close_folder(&o);
}

static void test_bad_files(void) {
  char dir[] = "/tmp/kiln_test_images_XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char cls[200], good[220], broken[220], huge[220];
  snprintf(cls, sizeof cls, "%s/cats", dir);
  snprintf(good, sizeof good, "%s/good.png", cls);
  snprintf(broken, sizeof broken, "%s/broken.png", cls);
  snprintf(huge, sizeof huge, "%s/huge.jpg", cls);
  CHECK(mkdir(cls, 0755) == 0);
  FILE *f = fopen(good, "wb");
  if (f) {
    fputs("\x89PNG", f);
    fclose(f);
  }
  CHECK(symlink("/nonexistent/kiln.png", broken) == 0); /* listed, but cannot be opened */
  f = fopen(huge, "wb");
  if (f) {
    CHECK(ftruncate(fileno(f), ((off_t)64 << 20) + 1) == 0); /* sparse: costs no disk */
    fclose(f);
  }
  opened o;
  CHECK_OK(open_folder(&o, dir, "", KILN_ON_ERROR_SKIP));
  if (o.stage) {
    int n = 0;
    for (;;) {
      kiln_record r;
      int done;
      kiln_status s = o.stage->ops->next(o.stage, &r, &done);
      CHECK_OK(s);
      if (s || done) break;
      CHECK(r.index == 1 && r.values[0].dims[0] == 4 && strcmp(((char **)r.values[2].data)[0], "cats/good.png") == 0);
      kiln_record_release(&r);
      n++;
    }
    CHECK(n == 1);
    CHECK(atomic_load(&o.ctx.read) == 3 && atomic_load(&o.ctx.quarantined) == 2);
    fflush(o.ctx.quarantine);
    void *text = NULL;
    size_t len;
    CHECK_OK(kiln_file_read(o.quarantine, 0, &text, &len));
    CHECK(text && strstr(text, "broken.png\",\"index\":0,\"offset\":null,\"reason\":\"cannot open the image: No such file"));
    CHECK(text && strstr(text, "huge.jpg\",\"index\":2,\"offset\":null,\"reason\":\"the file has 67108865 bytes, more "
                               "than the 64 MiB an image may have\""));
    free(text);
  }
  close_folder(&o);
  CHECK_OK(open_folder(&o, dir, "", KILN_ON_ERROR_FAIL));
  if (o.stage) {
    kiln_record r;
    int done;
    CHECK_ERROR(o.stage->ops->next(o.stage, &r, &done), KILN_INVALID_ARGUMENT,
                "cats/broken.png: record 0: cannot open the image");
  }
  close_folder(&o);
  unlink(good);
  unlink(broken);
  unlink(huge);
  rmdir(cls);
  rmdir(dir);
}

TEST_MAIN(TEST(test_records), TEST(test_decode_options), TEST(test_open_errors), TEST(test_bad_files))
