/* libFuzzer target: the IDX source, on a memfd read through /proc/self/fd/N (plain or, when the
 * input starts with gzip's magic, compressed), in fail and in skip mode, every record pulled. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "data/data.h"
#include "fuzz_source.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int fd = memfd_create("fuzz.idx", 0);
  if (fd < 0) return 0;
  if (write(fd, data, size) != (ssize_t)size) {
    close(fd);
    return 0;
  }
  char spec[128];
  snprintf(spec, sizeof spec, "{\"format\":\"idx\",\"path\":\"/proc/self/fd/%d\"}", fd);
  kx_data_ctx *fail = fuzz_context(KILN_ON_ERROR_FAIL, 1), *skip = fuzz_context(KILN_ON_ERROR_SKIP, 1);
  fuzz_read_all(kx_idx_open, fail, spec);
  fuzz_read_all(kx_idx_open, skip, spec);
  close(fd);
  return 0;
}
