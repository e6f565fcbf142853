/* libFuzzer target: schema JSON parsing (a file users edit), its round trip through
 * kiln_schema_to_json, and record checks against whatever schema parsed. */
#include <stdlib.h>
#include <string.h>

#include "kiln/data.h"

static const char *const names[] = {"a", "b", "c", "d"};

/* Checks a few records of different dtypes and shapes: a float vector with a NaN, an int64
 * scalar, a string, and a missing value. */
static void check_records(const kiln_schema *s) {
  kiln_record r;
  void *data;
  if (kiln_record_init(&r, names, 4, 64, &data)) return;
  int64_t three[1] = {3};
  kiln_tensor_set_shape(&r.values[0], KILN_FLOAT, 1, three);
  r.values[0].data = data;
  ((float *)data)[0] = 1.5f;
  ((float *)data)[1] = __builtin_nanf("");
  ((float *)data)[2] = -1e30f;
  kiln_tensor_set_shape(&r.values[1], KILN_INT64, 0, NULL);
  r.values[1].data = (char *)data + 16;
  *(int64_t *)r.values[1].data = 42;
  kiln_tensor t;
  if (!kiln_tensor_alloc(&t, KILN_STRING, 0, NULL)) {
    ((char **)t.data)[0] = strdup("red");
    kiln_record_set(&r, 2, &t);
  }
  kiln_status e = kiln_schema_check_record(s, &r);
  kiln_status_free(e);
  kiln_validation *v;
  if (!kiln_validation_create(s, &v)) {
    kiln_status_free(kiln_validation_add(v, &r));
    kiln_status_free(kiln_validation_finish(v));
    free(kiln_validation_to_json(v));
    kiln_validation_free(v);
  }
  kiln_record_release(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kiln_schema *s;
  kiln_status e = kiln_schema_parse((const char *)data, size, &s);
  if (e) {
    kiln_status_free(e);
    return 0;
  }
  char *json = kiln_schema_to_json(s);
  if (json) {
    /* what kiln writes, kiln reads back to the same text */
    kiln_schema *back;
    e = kiln_schema_parse(json, strlen(json), &back);
    if (e) __builtin_trap();
    char *again = kiln_schema_to_json(back);
    if (again && strcmp(json, again) != 0) __builtin_trap();
    free(again);
    kiln_schema_free(back);
    free(json);
  }
  check_records(s);
  kiln_schema_free(s);
  return 0;
}
