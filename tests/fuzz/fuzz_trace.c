/* libFuzzer target: W3C traceparent and tracestate parsing. The input up to its first newline is a
 * traceparent, the rest a tracestate; a parsed traceparent is formatted and must parse back to the
 * same context, and a string attribute made from the input must stay UTF-8 and in bounds. */
#include "kiln/obs.h"
#include "core/buf.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 4096) return 0;
  char *text = malloc(size + 1);
  if (!text) return 0;
  memcpy(text, data, size);
  text[size] = '\0';
  char *state = strchr(text, '\n');
  if (state) *state++ = '\0';

  kiln_trace_context c;
  memset(&c, 0, sizeof c);
  const char *why = NULL;
  if (kiln_traceparent_parse(text, &c, &why) == 0) {
    if (why) abort(); /* no reason on success */
    char out[KILN_TRACEPARENT_SIZE];
    kiln_traceparent_format(&c, out);
    kiln_trace_context again;
    if (strlen(out) != 55 || kiln_traceparent_parse(out, &again, NULL) != 0 || memcmp(&again, &c, sizeof c) != 0) abort();
    if (strncmp(text, "00-", 3) == 0 && strcmp(out, text) != 0) abort(); /* version 00 reads and writes alike */
  } else if (!why) {
    abort();
  }
  if (state) {
    why = NULL;
    int rc = kiln_tracestate_check(state, &why);
    if ((rc == 0) == (why != NULL)) abort();
    if (rc == 0 && strlen(state) > KILN_TRACESTATE_MAX_CHARS) abort();
  }
  kiln_span s;
  kiln_span_init(&s, c.trace_id, c.trace_id, NULL, text, KILN_SPAN_SERVER);
  while (kiln_span_set_string(&s, "k", state ? state : text) == 0) {
  }
  if (s.text_len > sizeof s.text || !kx_is_utf8(s.name, strlen(s.name))) abort();
  for (int i = 0; i < s.n_attributes; i++)
    if (!kx_is_utf8(s.text + s.attributes[i].value, strlen(s.text + s.attributes[i].value))) abort();
  free(text);
  return 0;
}
