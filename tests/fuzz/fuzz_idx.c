/* libFuzzer target: the IDX source, on a memfd read through /proc/self/fd/N (plain or, when the
 * input starts with gzip's magic, compressed), in fail and in skip mode, every record pulled. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "data/data.h"

static void read_all(kx_data_ctx *ctx, const char *spec_text) {
  cJSON *spec = cJSON_Parse(spec_text);
  kx_stage *s = NULL;
  kiln_status st = spec ? kx_idx_open(ctx, spec, &s) : NULL;
  cJSON_Delete(spec);
  if (st) {
    kiln_status_free(st);
    return;
  }
  if (!s) return;
  for (int epoch = 0; epoch < 2; epoch++) {
    for (;;) {
      kiln_record r;
      int done = 0;
      st = s->ops->next(s, &r, &done);
      if (st || done) break;
      kiln_record_release(&r);
    }
    kiln_status_free(st);
    st = s->ops->reset(s, epoch + 1);
    if (st) {
      kiln_status_free(st);
      break;
    }
  }
  s->ops->free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int fd = memfd_create("fuzz.idx", 0);
  if (fd < 0) return 0;
  if (write(fd, data, size) != (ssize_t)size) {
    close(fd);
    return 0;
  }
  char spec[128];
  snprintf(spec, sizeof spec, "{\"format\":\"idx\",\"path\":\"/proc/self/fd/%d\"}", fd);
  static kx_data_ctx fail, skip;
  static int ready;
  if (!ready) {
    kiln_status_free(kx_data_ctx_init(&fail, KILN_ON_ERROR_FAIL, NULL, NULL, 1, NULL));
    kiln_status_free(kx_data_ctx_init(&skip, KILN_ON_ERROR_SKIP, "/dev/null", NULL, 1, NULL));
    ready = 1;
  }
  read_all(&fail, spec);
  read_all(&skip, spec);
  close(fd);
  return 0;
}
