/* Error statuses: a NULL pointer means success, anything else owns a code and a message. */
#include "kiln/core.h"

#include <stdlib.h>
#include <string.h>

struct kiln_error {
  kiln_code code;
  char *message;
};

static struct kiln_error out_of_memory = {KILN_RESOURCE_EXHAUSTED, "out of memory"};

kiln_status kiln_errorv(kiln_code code, const char *fmt, va_list ap) {
  va_list copy;
  va_copy(copy, ap);
  int n = vsnprintf(NULL, 0, fmt, copy);
  va_end(copy);
  if (n < 0) n = 0;
  struct kiln_error *e = malloc(sizeof *e);
  char *msg = malloc((size_t)n + 1);
  if (!e || !msg) {
    free(e);
    free(msg);
    return &out_of_memory;
  }
  vsnprintf(msg, (size_t)n + 1, fmt, ap);
  e->code = code == KILN_OK ? KILN_INTERNAL : code;
  e->message = msg;
  return e;
}

kiln_status kiln_error(kiln_code code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  kiln_status s = kiln_errorv(code, fmt, ap);
  va_end(ap);
  return s;
}

kiln_status kiln_status_prefix(kiln_status s, const char *fmt, ...) {
  if (!s || s == &out_of_memory) return s;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n <= 0) return s;
  size_t old = strlen(s->message);
  char *msg = malloc((size_t)n + old + 1);
  if (!msg) return s; /* keep the original message rather than lose the error */
  va_start(ap, fmt);
  vsnprintf(msg, (size_t)n + 1, fmt, ap);
  va_end(ap);
  memcpy(msg + n, s->message, old + 1);
  free(s->message);
  s->message = msg;
  return s;
}

kiln_code kiln_status_code(kiln_status s) { return s ? s->code : KILN_OK; }

const char *kiln_status_message(kiln_status s) { return s ? s->message : "ok"; }

void kiln_status_free(kiln_status s) {
  if (!s || s == &out_of_memory) return;
  free(s->message);
  free(s);
}

const char *kiln_code_name(kiln_code code) {
  switch (code) {
  case KILN_OK: return "OK";
  case KILN_CANCELLED: return "CANCELLED";
  case KILN_INVALID_ARGUMENT: return "INVALID_ARGUMENT";
  case KILN_DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
  case KILN_NOT_FOUND: return "NOT_FOUND";
  case KILN_RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
  case KILN_FAILED_PRECONDITION: return "FAILED_PRECONDITION";
  case KILN_OUT_OF_RANGE: return "OUT_OF_RANGE";
  case KILN_UNIMPLEMENTED: return "UNIMPLEMENTED";
  case KILN_INTERNAL: return "INTERNAL";
  case KILN_UNAVAILABLE: return "UNAVAILABLE";
  case KILN_IO: return "IO";
  case KILN_PERMISSION_DENIED: return "PERMISSION_DENIED";
  case KILN_UNAUTHENTICATED: return "UNAUTHENTICATED";
  }
  return "UNKNOWN";
}
