/* libFuzzer target: labels.json parsing; a parsed file is also written back and must parse again. */
#include "registry/registry_internal.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kiln_labels l;
  kiln_status s = kiln_labels_parse((const char *)data, size, "labels.json", &l);
  if (s) {
    kiln_status_free(s);
    return 0;
  }
  char *text = NULL;
  if (!(s = kx_labels_format(&l, &text))) {
    kiln_labels again;
    s = kiln_labels_parse(text, strlen(text), "labels.json (written)", &again);
    if (s) abort(); /* what kiln writes, kiln must read */
    if (again.n_labels != l.n_labels || again.n_history != l.n_history || again.n_rejected != l.n_rejected) abort();
    kiln_labels_free(&again);
  }
  kiln_status_free(s);
  free(text);
  kiln_labels_free(&l);
  return 0;
}
