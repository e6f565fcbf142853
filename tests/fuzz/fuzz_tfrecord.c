/* libFuzzer target: TFRecord reading. The input is written as a TFRecord file (plain or, when it
 * starts with gzip's magic, gzip) and pulled to the end in skip mode and, with a `features`
 * description, in fail mode; then it is parsed directly as one serialized tf.train.Example. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/data.h"

static char file_path[64], quarantine_path[64];

/* Opens the file with `extra` spec members and pulls every record; errors end the pass. */
static void pull(kiln_on_error mode, const char *extra, const uint8_t *example, size_t size) {
  kx_data_ctx ctx;
  kiln_status s = kx_data_ctx_init(&ctx, mode, quarantine_path, NULL, 1, NULL);
  char json[512];
  snprintf(json, sizeof json, "{\"format\":\"tfrecord\",\"path\":\"%s\",\"max_record_bytes\":65536%s}", file_path,
           extra);
  cJSON *spec = cJSON_Parse(json);
  kx_stage *stage = NULL;
  if (!s) s = kx_tfrecord_open(&ctx, spec, &stage);
  for (int n = 0; !s && n < 100000; n++) {
    kiln_record r;
    int done = 0;
    s = stage->ops->next(stage, &r, &done);
    if (s || done) break;
    char *json_text = kiln_record_to_json(&r); /* walks every value the reader made */
    free(json_text);
    kiln_record_release(&r);
  }
  kiln_status_free(s);
  if (stage && example) {
    kiln_record r;
    s = kx_tfrecord_parse(stage, example, size, &r);
    if (s) kiln_status_free(s);
    else kiln_record_release(&r);
  }
  if (stage) stage->ops->free(stage);
  cJSON_Delete(spec);
  kx_data_ctx_free(&ctx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!file_path[0]) {
    snprintf(file_path, sizeof file_path, "/tmp/fuzz_tfrecord_%d.tfrecord", (int)getpid());
    snprintf(quarantine_path, sizeof quarantine_path, "/tmp/fuzz_tfrecord_%d.jsonl", (int)getpid());
  }
  FILE *f = fopen(file_path, "wb");
  if (!f) return 0;
  size_t wrote = fwrite(data, 1, size, f);
  if (fclose(f) != 0 || wrote != size) return 0;
  pull(KILN_ON_ERROR_SKIP, "", data, size);
  pull(KILN_ON_ERROR_FAIL,
       ",\"features\":{\"a\":{\"dtype\":\"float\",\"shape\":[2]},\"b\":{\"dtype\":\"int64\",\"shape\":[]},"
       "\"c\":{\"dtype\":\"string\"},\"d\":{\"dtype\":\"uint8\",\"shape\":[2,2]}}",
       data, size);
  return 0;
}
