/* libFuzzer target: TF Serving's configuration files (ModelServerConfig and BatchingParameters
 * in protobuf text format), both parsers on every input. */
#include "kiln/serve.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int quiet;
  if (!quiet) kiln_log_set_level(KILN_LOG_ERROR), quiet = 1; /* ignored batching fields warn */
  kiln_model_server_config c;
  kiln_status s = kiln_model_server_config_parse((const char *)data, size, "fuzz.config", &c);
  if (s) kiln_status_free(s);
  else kiln_model_server_config_free(&c);
  kiln_batching_config b;
  s = kiln_batching_config_parse((const char *)data, size, "fuzz.config", &b);
  if (s) kiln_status_free(s);
  else kiln_batching_config_free(&b);
  return 0;
}
