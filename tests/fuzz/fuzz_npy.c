/* libFuzzer target: .npy parsing. */
#include "kiln/core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kiln_tensor t;
  kiln_status s = kiln_npy_parse(data, size, "fuzz.npy", &t);
  if (s) kiln_status_free(s);
  else kiln_tensor_release(&t);
  return 0;
}
