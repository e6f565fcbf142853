/* libFuzzer target: trainer checkpoint verification (kx_ckpt_parse), on the bytes as given and on
 * a copy with the magic, version, size and checksum made right, so that mutations reach the
 * section table's checks behind the checksum. */
#include <stdlib.h>
#include <string.h>

#include "data/data.h"
#include "train/checkpoint.h"

static void check(const uint8_t *data, size_t size) {
  kx_ckpt *c = NULL;
  kiln_status s = kx_ckpt_parse(data, size, "fuzz.kiln", &c);
  if (s) {
    kiln_status_free(s);
    return;
  }
  /* every section a verified checkpoint names must be readable in full */
  volatile uint8_t sink = 0;
  for (int i = 0; i < kx_ckpt_count(c); i++) {
    size_t len;
    const uint8_t *p = kx_ckpt_get(c, kx_ckpt_name(c, i), &len);
    if (!p || ((uintptr_t)p % 64) != 0) abort();
    for (size_t k = 0; k < len; k++) sink ^= p[k];
  }
  (void)sink;
  kx_ckpt_free(c);
}

static void put_le(uint8_t *p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; i++) p[i] = (uint8_t)(v >> (8 * i));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  check(data, size);
  if (size < 36 || size > (1 << 20)) return 0;
  uint8_t *copy = malloc(size);
  if (!copy) return 0;
  memcpy(copy, data, size);
  memcpy(copy, "KILNCKPT", 8);
  put_le(copy + 8, 1, 4);
  put_le(copy + 16, size, 8);
  put_le(copy + size - 4, kx_crc32c(copy, size - 4), 4);
  check(copy, size);
  free(copy);
  return 0;
}
