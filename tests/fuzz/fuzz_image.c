/* libFuzzer target: JPEG and PNG decoding (kx_image_decode) with channels 0, 1 and 3. */
#include "data/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const int channels[] = {0, 1, 3};
  for (int i = 0; i < 3; i++) {
    kiln_tensor t;
    kiln_status s = kx_image_decode(data, size, channels[i], &t);
    if (s) kiln_status_free(s);
    else kiln_tensor_release(&t);
  }
  return 0;
}
