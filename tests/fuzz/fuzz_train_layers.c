/* libFuzzer target: the trainer's layer configs — a model's JSON built on a small image, then a
 * training and an inference forward and a backward pass through whatever was built. Input: three
 * bytes (H, W, C; C 0 for an [H, W] image; the first two also pick 16-bit storage and
 * recomputation), then the model's JSON text. Numbers in the JSON are
 * held to |v| <= 16 so that what the fuzzer finds is a bug, not a large allocation. */
#include "train/train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

static int small_numbers(const cJSON *j) {
  for (; j; j = j->next) {
    if (cJSON_IsNumber(j) && !(fabs(j->valuedouble) <= 16)) return 0;
    if (!small_numbers(j->child)) return 0;
  }
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3 || size > 4096) return 0;
  kx_shape in = {data[2] % 5 ? 3 : 2, {1 + data[0] % 12, 1 + data[1] % 12, data[2] % 5}};
  char *text = malloc(size - 2);
  if (!text) return 0;
  memcpy(text, data + 3, size - 3);
  text[size - 3] = 0;
  cJSON *model = cJSON_Parse(text);
  free(text);
  kx_rng rng = {size};
  kx_net *n = NULL;
  kiln_status s = model && small_numbers(model) ? kx_net_create(model, &in, 2, &rng, &n) : NULL;
  cJSON_Delete(model);
  if (s) kiln_status_free(s);
  if (!n) return 0;
  /* the same bytes also choose the storage (fp32, bf16, fp16) and whether layers are recomputed */
  if ((s = kx_net_configure(n, (kx_precision)(data[0] / 12 % 3), data[1] / 12 % 2))) {
    kiln_status_free(s);
    kx_net_free(n);
    return 0;
  }
  for (int64_t i = 0; i < 2 * kx_shape_size(&in); i++) n->input[i] = 2 * kx_rng_uniform(&rng) - 1;
  int64_t out = 2 * kx_net_output_size(n);
  float *dy = malloc((size_t)out * sizeof(float));
  for (int training = 1; dy && training >= 0; training--) {
    kx_pass p = {.pool = NULL, .threads = 1, .batch = 2 - training, .training = training, .rng = &rng, .scratch = n->scratch};
    kx_net_forward(n, &p);
    for (int64_t i = 0; i < out; i++) dy[i] = kx_rng_uniform(&rng);
    kx_net_backward(n, &p, dy);
  }
  free(dy);
  kx_net_free(n);
  return 0;
}
