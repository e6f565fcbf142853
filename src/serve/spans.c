/* The server's side of tracing: each call's trace context (W3C traceparent in, traceparent out) and
 * the spans of an answered request, handed to the OTLP exporter. With tracing off nothing here
 * allocates or records; the context is still made so that responses name their trace. */
#include "serve/serve.h"

#include <string.h>

void kx_trace_begin(kiln_server *s, kx_call *c, const char *traceparent, const char *tracestate) {
  kiln_trace_context parent;
  const char *why = NULL;
  if (traceparent && kiln_traceparent_parse(traceparent, &parent, &why) == 0) {
    memcpy(c->trace_id, parent.trace_id, 16);
    memcpy(c->parent_id, parent.span_id, 8);
    /* parent-based: the caller's sampled flag decides */
    c->sampled = s->tracer && (parent.flags & KILN_TRACE_FLAG_SAMPLED);
    c->trace_flags = parent.flags & KILN_TRACE_FLAG_SAMPLED; /* other bits are reserved: sent as 0 */
    c->tracestate = tracestate && kiln_tracestate_check(tracestate, NULL) == 0 ? tracestate : NULL;
  } else {
    if (why && kiln_log_enabled(KILN_LOG_DEBUG)) {
      kiln_log_field f[1] = {{"request_id", c->request_id}};
      kiln_log_fields(KILN_LOG_DEBUG, f, 1, "%s; starting a new trace", why);
    }
    kiln_trace_random_id(c->trace_id, 16);
    memset(c->parent_id, 0, 8);
    c->sampled = s->tracer && kiln_trace_sampled(c->trace_id, s->opt.trace_sampling_ratio);
    c->trace_flags = c->sampled ? KILN_TRACE_FLAG_SAMPLED : 0;
    c->tracestate = NULL; /* the spec: no tracestate without a valid traceparent */
  }
  kiln_trace_random_id(c->span_id, 8);
  if (c->sampled) c->clock_offset_ns = kiln_trace_now_ns() - (int64_t)(kiln_now() * 1e9);
}

char *kx_trace_parent(const kx_call *c, char buf[KILN_TRACEPARENT_SIZE]) {
  kiln_trace_context mine;
  memcpy(mine.trace_id, c->trace_id, 16);
  memcpy(mine.span_id, c->span_id, 8);
  mine.flags = c->trace_flags;
  kiln_traceparent_format(&mine, buf);
  return buf;
}

char *kx_trace_headers(const kx_call *c, char *buf, size_t size) {
  char tp[KILN_TRACEPARENT_SIZE];
  int n = snprintf(buf, size, "traceparent: %s\r\n", kx_trace_parent(c, tp));
  if (c->tracestate && n > 0 && (size_t)n < size) snprintf(buf + n, size - (size_t)n, "tracestate: %s\r\n", c->tracestate);
  return buf;
}

static int64_t wall_ns(const kx_call *c, double t) { return (int64_t)(t * 1e9) + c->clock_offset_ns; }

void kx_trace_receive(kiln_server *s, const kx_call *c, int status) {
  if (!c->sampled || !s->tracer) return;
  kiln_span sp;
  kiln_span_init(&sp, c->trace_id, c->span_id, c->parent_id, "receive", KILN_SPAN_SERVER);
  sp.start_ns = wall_ns(c, c->received_at);
  sp.end_ns = wall_ns(c, kiln_now());
  kiln_span_set_string(&sp, "http.method", c->method);
  kiln_span_set_string(&sp, "http.route", c->path);
  kiln_span_set_int(&sp, "http.status_code", status);
  kiln_span_set_string(&sp, "kiln.request_id", c->request_id);
  if (c->version) {
    kiln_span_set_string(&sp, "kiln.model", c->version->model_name);
    kiln_span_set_string(&sp, "kiln.model_version", c->version->version_text);
  }
  if (status >= 500) kiln_span_set_status(&sp, KILN_SPAN_ERROR, c->error);
  else kiln_span_set_status(&sp, KILN_SPAN_OK, NULL);
  kiln_tracer_submit(s->tracer, &sp);
}

/* One child of the receive span, from `start` to `end` (kiln_now() times). */
static void child(kiln_server *s, const kx_request *r, const char *name, double start, double end, const char *error,
                  const char *int_key, int64_t int_value) {
  const kx_call *c = &r->call;
  uint8_t id[8];
  kiln_trace_random_id(id, 8);
  kiln_span sp;
  kiln_span_init(&sp, c->trace_id, id, c->span_id, name, KILN_SPAN_INTERNAL);
  sp.start_ns = wall_ns(c, start);
  sp.end_ns = wall_ns(c, end);
  if (int_key) kiln_span_set_int(&sp, int_key, int_value);
  kiln_span_set_string(&sp, "kiln.model_version", r->version->version_text);
  kiln_span_set_status(&sp, error ? KILN_SPAN_ERROR : KILN_SPAN_OK, error);
  kiln_tracer_submit(s->tracer, &sp);
}

void kx_trace_request(kiln_server *s, const kx_request *r, const char *run_error, const char *encode_error) {
  if (!r->call.sampled || !s->tracer) return;
  int ran = r->run_start > 0 && r->run_end > 0;
  /* a request that never ran (its deadline passed in the queue, its version went away) failed there */
  if (r->enqueued_at > 0 && r->taken_at > 0) child(s, r, "queue", r->enqueued_at, r->taken_at, ran ? NULL : run_error, NULL, 0);
  if (r->taken_at > 0 && r->run_start > 0)
    child(s, r, "batch", r->taken_at, r->run_start, NULL, "kiln.batch_size", r->batch_rows);
  if (ran) child(s, r, "inference", r->run_start, r->run_end, run_error, NULL, 0);
  if (r->encode_start > 0 && r->encode_end > 0) child(s, r, "encode", r->encode_start, r->encode_end, encode_error, NULL, 0);
}
