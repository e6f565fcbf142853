/* libFuzzer target: the CSV source. The input is written to a memfd and read through
 * /proc/self/fd/N (the source opens paths), in fail and in skip mode, every record pulled; then
 * through a batch stage, as batches the source builds itself, which must equal those the batch
 * stage stacks from records (a skip stage between forces that path). The first byte picks the
 * options (delimiter, header, a small max_line_bytes, infer_rows, the batch size). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "data/data.h"
#include "fuzz_source.h"

static kx_stage *open_csv(kx_data_ctx *ctx, const char *spec_text) {
  cJSON *spec = cJSON_Parse(spec_text);
  kx_stage *s = NULL;
  kiln_status st = spec ? kx_csv_open(ctx, spec, &s) : NULL;
  cJSON_Delete(spec);
  kiln_status_free(st);
  return st ? NULL : s;
}

static int same_batch(const kiln_record *a, const kiln_record *b) {
  if (a->count != b->count || a->index != b->index || a->offset != b->offset) return 0;
  for (int i = 0; i < a->count; i++) {
    const kiln_tensor *x = &a->values[i], *y = &b->values[i];
    if (strcmp(a->names[i], b->names[i]) != 0 || x->dtype != y->dtype || x->rank != y->rank || x->dims[0] != y->dims[0])
      return 0;
    int64_t n = kiln_tensor_numel(x);
    if (x->dtype == KILN_STRING) {
      for (int64_t k = 0; k < n; k++)
        if (strcmp(((char **)x->data)[k], ((char **)y->data)[k]) != 0) return 0;
    } else if (n && memcmp(x->data, y->data, kiln_tensor_nbytes(x)) != 0) {
      return 0;
    }
  }
  return 1;
}

/* Pulls batches of `size` from the source directly (built by the source) and through a skip
 * stage (stacked by the batch stage), two passes; any difference is a crash. */
static void compare_batches(kx_data_ctx *ctx, const char *spec_text, int64_t size, int drop) {
  kx_stage *fused_src = open_csv(ctx, spec_text), *records_src = open_csv(ctx, spec_text);
  kx_stage *skip = NULL, *fused = NULL, *stacked = NULL;
  char args_text[96];
  snprintf(args_text, sizeof args_text, "{\"batch_size\": %lld, \"drop_remainder\": %s}", (long long)size,
           drop ? "true" : "false");
  cJSON *args = cJSON_Parse(args_text), *zero = cJSON_CreateNumber(0);
  if (fused_src && records_src && args && zero) {
    kiln_status st = kx_batch_open(ctx, fused_src, args, "batch", &fused);
    if (!st) st = kx_skip_open(ctx, records_src, zero, "skip", &skip);
    if (!st) st = kx_batch_open(ctx, skip, args, "batch", &stacked);
    kiln_status_free(st);
  }
  for (int epoch = 0; stacked && epoch < 2; epoch++) {
    for (;;) {
      kiln_record a, b;
      int done_a = 0, done_b = 0;
      kiln_status sa = fused->ops->next(fused, &a, &done_a), sb = stacked->ops->next(stacked, &b, &done_b);
      int same = !sa == !sb && (!sa || strcmp(kiln_status_message(sa), kiln_status_message(sb)) == 0) && done_a == done_b &&
                 (sa || done_a || same_batch(&a, &b));
      if (!same && getenv("FUZZ_CSV_DEBUG"))
        fprintf(stderr, "differ: size %lld: '%s' / '%s', done %d/%d, counts %d/%d\n", (long long)size, sa ? kiln_status_message(sa) : "",
                sb ? kiln_status_message(sb) : "", done_a, done_b, a.count, b.count);
      if (!same) __builtin_trap();
      int stop = sa || done_a;
      kiln_status_free(sa);
      kiln_status_free(sb);
      if (stop) break;
      kiln_record_release(&a);
      kiln_record_release(&b);
    }
    kiln_status sa = fused->ops->reset(fused, epoch + 1), sb = stacked->ops->reset(stacked, epoch + 1);
    kiln_status_free(sa);
    kiln_status_free(sb);
  }
  cJSON_Delete(args);
  cJSON_Delete(zero);
  if (fused) fused->ops->free(fused);
  if (stacked) stacked->ops->free(stacked);
  if (skip) skip->ops->free(skip);
  if (fused_src) fused_src->ops->free(fused_src);
  if (records_src) records_src->ops->free(records_src);
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
  kx_data_ctx *fail = fuzz_context(KILN_ON_ERROR_FAIL, 2), *skip = fuzz_context(KILN_ON_ERROR_SKIP, 2);
  fuzz_read_all(kx_csv_open, fail, spec);
  fuzz_read_all(kx_csv_open, skip, spec);
  static const int64_t sizes[] = {1, 2, 3, 5, 8, 64, 3000, 10000};
  compare_batches(fail, spec, sizes[opts >> 5], opts & 32);
  compare_batches(skip, spec, sizes[opts >> 5], opts & 64);
  close(fd);
  return 0;
}
