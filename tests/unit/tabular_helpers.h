/* Helpers of the tabular sources' tests (test_data_idx.c, test_data_csv.c, test_data_npy.c):
 * fixture paths, the expected values the fixture script wrote, and opening a source from a spec. */
#ifndef KILN_TEST_TABULAR_HELPERS_H
#define KILN_TEST_TABULAR_HELPERS_H

#include <cjson/cJSON.h>

#include "data/data.h"
#include "test.h"

/* tests/data/data/<name> into a static buffer (one at a time). */
static const char *fixture(const char *name) {
  static char path[4096];
  const char *root = getenv("KILN_TEST_DATA");
  snprintf(path, sizeof path, "%s/data/%s", root ? root : "tests/data", name);
  return path;
}

/* tabular_expected.json, parsed once; NULL (and a failed check) when missing. */
static cJSON *expected_json(void) {
  static cJSON *root;
  if (root) return root;
  void *text;
  size_t len;
  kiln_status s = kiln_file_read(fixture("tabular_expected.json"), 0, &text, &len);
  CHECK_OK(s);
  if (s) return NULL;
  root = cJSON_ParseWithLength(text, len);
  free(text);
  CHECK(root != NULL);
  return root;
}

/* expected.a.b... (NULL-terminated keys). */
static inline const cJSON *expected_at(const char *first, ...) {
  const cJSON *node = cJSON_GetObjectItemCaseSensitive(expected_json(), first);
  va_list ap;
  va_start(ap, first);
  for (const char *k; node && (k = va_arg(ap, const char *));) node = cJSON_GetObjectItemCaseSensitive(node, k);
  va_end(ap);
  if (!node) fprintf(stderr, "expected value %s... missing\n", first);
  CHECK(node != NULL);
  return node;
}

/* Opens a source with `open` from a spec whose "%s" placeholders are replaced by `path`. */
static inline kiln_status open_source(kiln_status (*open)(kx_data_ctx *, const struct cJSON *, kx_stage **), kx_data_ctx *ctx,
                               const char *spec_fmt, const char *path, kx_stage **out) {
  char spec_text[8192];
  snprintf(spec_text, sizeof spec_text, spec_fmt, path, path);
  cJSON *spec = cJSON_Parse(spec_text);
  if (!spec) return kiln_error(KILN_INVALID_ARGUMENT, "test: bad spec %s", spec_text);
  *out = NULL;
  kiln_status s = open(ctx, spec, out);
  cJSON_Delete(spec);
  return s;
}

/* Pulls the next record; returns 1 with *r filled, 0 at the end or on an error (put in *err). */
static inline int pull(kx_stage *s, kiln_record *r, kiln_status *err) {
  int done = 0;
  *err = s->ops->next(s, r, &done);
  return !*err && !done;
}

/* Counts the lines of a file (the quarantine); -1 when it cannot be read. */
static inline int count_lines(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  int n = 0, c;
  while ((c = fgetc(f)) != EOF) n += c == '\n';
  fclose(f);
  return n;
}

#endif
