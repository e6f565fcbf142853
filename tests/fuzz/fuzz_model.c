/* libFuzzer target: model loading (protobuf decoding, graph compilation, kernels' prepare,
 * external data), from memory, with a model folder that holds one small external data file. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kiln/graph.h"

static char folder[] = "/tmp/kiln_fuzz_model_XXXXXX";

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  if (!mkdtemp(folder)) abort();
  char path[sizeof folder + 16];
  snprintf(path, sizeof path, "%s/weights.bin", folder);
  FILE *f = fopen(path, "wb");
  if (!f) abort();
  for (int i = 0; i < 4096; i++) fputc(i & 0xff, f);
  fclose(f);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kiln_load_options opt = {.name = "fuzz.onnx", .base_dir = folder};
  kiln_model *m = NULL;
  kiln_status s = kiln_model_load_buffer(data, size, &opt, &m);
  if (s) {
    /* every failure must carry a message naming the model */
    if (!strstr(kiln_status_message(s), "fuzz.onnx")) abort();
    kiln_status_free(s);
    return 0;
  }
  kiln_session *session = NULL;
  s = kiln_session_create(m, NULL, &session);
  kiln_status_free(s);
  kiln_session_free(session);
  kiln_model_free(m);
  return 0;
}
