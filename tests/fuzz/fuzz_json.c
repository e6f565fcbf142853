/* libFuzzer target: the REST front ends' JSON reader, differentially: every document it accepts
 * must be accepted by cJSON's own parser with the same tree, item by item. */
#include <cjson/cJSON.h>
#include <stdlib.h>

#include "../unit/json_tree.h"
#include "serve/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  cJSON *ours = NULL;
  kiln_status s = kx_codec_parse_json((const char *)data, size, &ours);
  if (s) {
    kiln_status_free(s);
    return 0;
  }
  cJSON *theirs = cJSON_ParseWithLength((const char *)data, size);
  if (!theirs || !json_same_tree(ours, theirs)) abort();
  cJSON_Delete(theirs);
  kx_codec_free_json(ours);
  return 0;
}
