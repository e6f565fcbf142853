/* libFuzzer target: run files — the JSON a user writes to say what to train (optimizer, schedule,
 * loss, metrics, data sections), parsed and checked by kx_run_parse, then given the run's seed. */
#include "train/train.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kx_run r;
  kiln_status s = kx_run_parse((const char *)data, size, NULL, &r);
  if (!s) {
    s = kx_run_seed_shuffles(&r);
    kx_schedule_lr(&r.optim.schedule, 1000);
    kx_run_free(&r);
  }
  kiln_status_free(s);
  return 0;
}
