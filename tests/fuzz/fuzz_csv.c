/* libFuzzer target: the CSV source. The input is written to a memfd and read through
 * /proc/self/fd/N (the source opens paths), in fail and in skip mode, every record pulled; the
 * first byte picks the options (delimiter, header, a small max_line_bytes, infer_rows). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "data/data.h"

static void read_all(kx_data_ctx *ctx, const char *spec_text) {
  cJSON *spec = cJSON_Parse(spec_text);
  kx_stage *s = NULL;
  kiln_status st = spec ? kx_csv_open(ctx, spec, &s) : NULL;
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
      char *json = kiln_record_to_json(&r);
      free(json);
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
  if (size < 1) return 0;
  uint8_t opts = data[0];
  int fd = memfd_create("fuzz.csv", 0);
  if (fd < 0) return 0;
  if (write(fd, data + 1, size - 1) != (ssize_t)(size - 1)) {
    close(fd);
    return 0;
  }
  char spec[256];
  snprintf(spec, sizeof spec,
           "{\"format\":\"csv\",\"path\":\"/proc/self/fd/%d\",\"delimiter\":\"%s\",\"header\":%s,"
           "\"max_line_bytes\":%d,\"infer_rows\":%d%s}",
           fd, opts & 1 ? ";" : ",", opts & 2 ? "false" : "true", opts & 4 ? 16 : 1 << 20, opts & 8 ? 2 : 1000,
           opts & 16 ? ",\"columns\":{\"c0\":\"int8\"}" : "");
  static kx_data_ctx fail, skip;
  static int ready;
  if (!ready) {
    kiln_status_free(kx_data_ctx_init(&fail, KILN_ON_ERROR_FAIL, NULL, NULL, 2, NULL));
    kiln_status_free(kx_data_ctx_init(&skip, KILN_ON_ERROR_SKIP, "/dev/null", NULL, 2, NULL));
    ready = 1;
  }
  read_all(&fail, spec);
  read_all(&skip, spec);
  close(fd);
  return 0;
}
