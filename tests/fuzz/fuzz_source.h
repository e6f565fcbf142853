/* Shared by the fuzz targets of file sources: the contexts they read with, and a full read. */
#ifndef KILN_FUZZ_SOURCE_H
#define KILN_FUZZ_SOURCE_H

#include <cjson/cJSON.h>
#include <stdlib.h>

#include "data/data.h"

typedef kiln_status (*fuzz_open_fn)(kx_data_ctx *ctx, const cJSON *spec, kx_stage **out);

/* A fail-mode or a skip-mode context (quarantine: /dev/null), made once: a pool per input would
 * make fuzzing slow. The skip one forgets the records it quarantined, so that inputs are
 * independent and its memory does not grow. */
static kx_data_ctx *fuzz_context(kiln_on_error mode, int threads) {
  static kx_data_ctx contexts[2];
  static int ready[2];
  kx_data_ctx *c = &contexts[mode];
  if (!ready[mode]) {
    kiln_status_free(kx_data_ctx_init(c, mode, mode == KILN_ON_ERROR_SKIP ? "/dev/null" : NULL, NULL, threads, NULL));
    ready[mode] = 1;
  }
  free(c->seen);
  c->seen = NULL;
  c->n_seen = c->seen_capacity = 0;
  return c;
}

/* Opens the source a spec describes and pulls every record, as JSON too, over two passes. */
static void fuzz_read_all(fuzz_open_fn open, kx_data_ctx *ctx, const char *spec_text) {
  cJSON *spec = cJSON_Parse(spec_text);
  kx_stage *s = NULL;
  kiln_status st = spec ? open(ctx, spec, &s) : NULL;
  cJSON_Delete(spec);
  if (st || !s) {
    kiln_status_free(st);
    return;
  }
  for (int epoch = 0; epoch < 2; epoch++) {
    for (;;) {
      kiln_record r;
      int done = 0;
      st = s->ops->next(s, &r, &done);
      if (st || done) break;
      free(kiln_record_to_json(&r));
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

#endif
