/* libFuzzer target: pipeline descriptions (the JSON of --pipeline and of a run file's data
 * section) — stages, their arguments and the transforms and predicates inside them. The source is
 * always replaced by a small range (a fuzzer must not open arbitrary files) and file caches are
 * left out; up to 64 elements are pulled, twice (two epochs). */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 4096 || memmem(data, size, "filename", 8)) return 0;
  cJSON *spec = cJSON_ParseWithLength((const char *)data, size);
  if (!spec || !cJSON_IsObject(spec)) {
    cJSON_Delete(spec);
    return 0;
  }
  cJSON_DeleteItemFromObjectCaseSensitive(spec, "source");
  cJSON_DeleteItemFromObjectCaseSensitive(spec, "quarantine");
  cJSON_AddItemToObject(spec, "source", cJSON_Parse("{\"format\": \"range\", \"stop\": 50}"));
  char *text = cJSON_PrintUnformatted(spec);
  cJSON_Delete(spec);
  if (!text) return 0;
  kiln_data_options o = {.threads = 2, .on_error_set = 1, .on_error = KILN_ON_ERROR_SKIP, .quarantine_path = "/dev/null"};
  kiln_dataset *d = NULL;
  kiln_status s = kiln_dataset_open_spec(text, strlen(text), &o, &d);
  free(text);
  for (int epoch = 0; !s && epoch < 2; epoch++) {
    if (epoch) s = kiln_dataset_reset(d, epoch);
    for (int n = 0; !s && n < 64; n++) {
      kiln_record r;
      int done = 0;
      s = kiln_dataset_next(d, &r, &done);
      if (s || done) break;
      free(kiln_record_to_json(&r));
      kiln_record_release(&r);
    }
  }
  kiln_status_free(s);
  kiln_dataset_free(d);
  return 0;
}
