/* libFuzzer target: the admin API's request body (POST /v1/admin/models/{m}/labels), as the server
 * parses it: JSON, then the version and the label. */
#include "serve/serve.h"

#include <cjson/cJSON.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  cJSON *body = cJSON_ParseWithLength((const char *)data, size);
  if (!body) return 0;
  int64_t version = -1;
  const char *label = NULL;
  kiln_status s = kx_admin_label_params(body, &version, &label);
  if (!s && (version < 0 || !label)) abort(); /* accepted means a version and a label */
  kiln_status_free(s);
  cJSON_Delete(body);
  return 0;
}
