/* libFuzzer target: manifest.json checking (kiln_manifest_check, the parser kiln_manifest_verify uses). */
#include "kiln/registry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kiln_status_free(kiln_manifest_check((const char *)data, size, "manifest.json"));
  return 0;
}
