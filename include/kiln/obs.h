/* kiln obs: a metrics registry and its Prometheus text exposition (format 0.0.4).
 *
 * Counters, gauges and histograms, each a family with fixed label names; a series is created the
 * first time a label-value combination is used. Updates are thread-safe and cheap (one lock per
 * family, no allocation once the series exists). The registry also reports the process's own
 * standard metrics (process_resident_memory_bytes, process_virtual_memory_bytes,
 * process_cpu_seconds_total, process_open_fds, process_threads, process_start_time_seconds) and,
 * when NVIDIA's NVML library loads (libnvidia-ml.so.1, or $KILN_NVML_LIBRARY), every GPU's
 * kiln_gpu_utilization_ratio, kiln_gpu_memory_used_bytes, kiln_gpu_memory_total_bytes,
 * kiln_gpu_temperature_celsius and kiln_gpu_power_watts {gpu="<index>",name="<device>"} when
 * rendered (each only for the devices that report it). */
#ifndef KILN_OBS_H
#define KILN_OBS_H

#include "kiln/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kiln_metrics kiln_metrics;
typedef struct kiln_metric kiln_metric;

kiln_status kiln_metrics_create(kiln_metrics **out);
/* Frees the registry and every family it holds. */
void kiln_metrics_free(kiln_metrics *r);

/* Registers a family. `name` must match [a-zA-Z_:][a-zA-Z0-9_:]* (counters end in "_total"),
 * label names [a-zA-Z_][a-zA-Z0-9_]*, at most 8 labels. Registering the same name twice returns
 * the existing family when kind and labels agree. NULL when the name or labels are invalid or
 * memory runs out (a programming error, logged). */
kiln_metric *kiln_metrics_counter(kiln_metrics *r, const char *name, const char *help, int n_labels,
                                  const char *const *label_names);
kiln_metric *kiln_metrics_gauge(kiln_metrics *r, const char *name, const char *help, int n_labels,
                                const char *const *label_names);
/* `bounds`: the buckets' upper bounds, strictly increasing, without +Inf (added always). */
kiln_metric *kiln_metrics_histogram(kiln_metrics *r, const char *name, const char *help, int n_labels,
                                    const char *const *label_names, int n_bounds, const double *bounds);

/* Default latency buckets in seconds: 100 us to 10 s. */
extern const double kiln_latency_buckets[];
extern const int kiln_latency_bucket_count;

/* label_values has the family's n_labels entries (NULL when it has none). A NULL metric is
 * ignored, so a failed registration never crashes the caller. */
void kiln_metric_add(kiln_metric *m, const char *const *label_values, double v); /* counter, gauge */
void kiln_metric_set(kiln_metric *m, const char *const *label_values, double v); /* gauge */
void kiln_metric_observe(kiln_metric *m, const char *const *label_values, double v); /* histogram */
/* Removes every series whose label values match; a NULL entry matches any value (all series of
 * a version that was unloaded: {"mnist", "3", NULL, NULL}). */
void kiln_metric_remove(kiln_metric *m, const char *const *label_values);
/* Current value of a counter or gauge series (0 when absent); for tests. */
double kiln_metric_value(kiln_metric *m, const char *const *label_values);

/* Renders every family, sorted by name, in the Prometheus text format: HELP and TYPE lines,
 * escaped label values, histograms as cumulative _bucket{le=...} series with _sum and _count;
 * then the process metrics and the GPU metrics (read at each call; NVML is loaded at the first
 * one, and a missing library or a failing nvmlInit only leaves the GPU metrics out, with a debug
 * log line). The text is malloc'd; the caller frees it. */
kiln_status kiln_metrics_render(kiln_metrics *r, char **text, size_t *len);

/* This process's resident set size in bytes (from /proc/self/statm), 0 when unknown. */
size_t kiln_process_rss(void);

/* ---------------------------------------------------------------- GPUs (nvml.c)
 *
 * NVIDIA GPUs as the driver's NVML library (libnvidia-ml.so.1, or $KILN_NVML_LIBRARY) reports them,
 * loaded at run time: kiln needs no CUDA at build time, and a machine without a GPU simply has
 * none. For layers outside obs (the trainer's gpu_utilization scalar, the CLI's --device check). */

/* The longest device name NVML writes, its NUL included (NVML_DEVICE_NAME_V2_BUFFER_SIZE). */
#define KILN_GPU_NAME_BYTES 96
/* Devices read at once; further ones are left out (a node has at most 16 in practice). */
#define KILN_GPU_MAX 64

/* One device's numbers, read now; a reading NVML refused (not supported, lost device, a driver
 * without the function) is marked absent. */
typedef struct kiln_gpu_reading {
  unsigned index;                /* NVML's device index: CUDA's with CUDA_DEVICE_ORDER=PCI_BUS_ID */
  char name[KILN_GPU_NAME_BYTES]; /* "" when NVML cannot tell it */
  int has_utilization;
  double utilization; /* 0..1: fraction of the last sample period a kernel ran */
  int has_memory;
  double memory_used_bytes;
  double memory_total_bytes;
  int has_temperature;
  double temperature_celsius; /* the GPU die's sensor */
  int has_power;
  double power_watts; /* the board's draw, NVML's milliwatts / 1000 */
} kiln_gpu_reading;

typedef struct kiln_gpus kiln_gpus;

/* Loads and initialises NVML. An error (KILN_UNAVAILABLE) when the library is absent, is not NVML
 * or nvmlInit_v2 fails; its message names the library and the reason, for a caller that must say
 * why it sees no GPU (most callers just go on without one). */
kiln_status kiln_gpus_open(kiln_gpus **out);
/* Reads up to `max` devices into out (NVML's indexes, in order); returns how many, 0 when NVML
 * cannot count them. Thread-safe. */
int kiln_gpus_read(kiln_gpus *g, kiln_gpu_reading *out, int max);
/* The mean utilization (0..1) over the devices that report one, read now: 1 with *mean set, 0
 * when none does. */
int kiln_gpus_mean_utilization(kiln_gpus *g, double *mean);
/* Shuts NVML down (balancing kiln_gpus_open's init) and unloads it. NULL is ignored. */
void kiln_gpus_close(kiln_gpus *g);

/* ---------------------------------------------------------------- tracing (trace.c, otlp.c)
 *
 * W3C Trace Context (https://www.w3.org/TR/trace-context/): the traceparent and tracestate
 * headers, spans, and their export as OTLP/HTTP JSON to a collector (Jaeger, the OpenTelemetry
 * Collector). Parsing and id generation never allocate: they run on every request, traced or not. */

/* traceparent's flags bit that says the caller may have recorded the trace. */
#define KILN_TRACE_FLAG_SAMPLED 0x01
/* Characters of a version-00 traceparent ("00-<32 hex>-<16 hex>-<2 hex>") plus the NUL. */
#define KILN_TRACEPARENT_SIZE 56
/* The longest tracestate carried on (W3C: vendors propagate at least 512 characters) and the most
 * list members. */
#define KILN_TRACESTATE_MAX_CHARS 512
#define KILN_TRACESTATE_MAX_MEMBERS 32

/* What a traceparent carries: the trace, the caller's span (parent-id) and the flags. */
typedef struct kiln_trace_context {
  uint8_t trace_id[16];
  uint8_t span_id[8];
  uint8_t flags;
} kiln_trace_context;

/* Parses a traceparent header value. Version 00 must be exactly "00-<trace-id>-<parent-id>-<flags>"
 * in lower-case hex; a higher version (not "ff") is accepted when its first four fields parse that
 * way and anything after them starts with '-'. All-zero ids are invalid. Returns 0, or -1 with a
 * static sentence in *why (when why is non-NULL) naming the field and what was expected; it returns
 * no kiln_status because it runs on every request and must not allocate. */
int kiln_traceparent_parse(const char *text, kiln_trace_context *out, const char **why);
/* Writes the version-00 traceparent of `c` into out (KILN_TRACEPARENT_SIZE bytes, NUL-terminated). */
void kiln_traceparent_format(const kiln_trace_context *c, char out[KILN_TRACEPARENT_SIZE]);
/* Whether a tracestate header value may be carried on unchanged: at most 512 characters, at most 32
 * list members, each "key=value" as the W3C grammar defines them (empty members between commas
 * are allowed), no key twice. Returns 0, or -1 with a static reason in *why as above. */
int kiln_tracestate_check(const char *text, const char **why);
/* Fills out[0..n) with random bytes, not all zero, from this thread's xorshift generator (seeded
 * from getrandom() on first use): fresh trace ids (n = 16) and span ids (n = 8). */
void kiln_trace_random_id(uint8_t *out, size_t n);
/* Whether a trace that kiln starts is sampled at `ratio` (0..1): decided from the trace id's last
 * 7 bytes (random in W3C ids) as OpenTelemetry's consistent probability sampling does (kept when
 * they are >= (1 - ratio) * 2^56), so every service that sees the trace decides alike. */
int kiln_trace_sampled(const uint8_t trace_id[16], double ratio);
/* Lower-case hex of n bytes into out (2n + 1 bytes, NUL-terminated); returns out. */
char *kiln_trace_hex(const uint8_t *id, size_t n, char *out);

/* OTLP's SpanKind and Status.code numbers, as the JSON encoding writes them. */
typedef enum kiln_span_kind { KILN_SPAN_INTERNAL = 1, KILN_SPAN_SERVER = 2 } kiln_span_kind;
typedef enum kiln_span_status { KILN_SPAN_UNSET = 0, KILN_SPAN_OK = 1, KILN_SPAN_ERROR = 2 } kiln_span_status;

#define KILN_SPAN_MAX_ATTRIBUTES 8

/* One span, fixed size so that the export queue holds spans without allocating. Attribute keys and
 * string values live in `text`; what does not fit is left out (kiln's attributes fit). */
typedef struct kiln_span {
  uint8_t trace_id[16];
  uint8_t span_id[8];
  uint8_t parent_span_id[8]; /* all zero: a root span */
  char name[32];
  kiln_span_kind kind;
  int64_t start_ns, end_ns; /* CLOCK_REALTIME nanoseconds since the Unix epoch */
  kiln_span_status status;
  char status_message[128];
  int n_attributes;
  struct {
    uint16_t key, value; /* offsets of NUL-terminated strings in text (value: string attributes) */
    uint8_t is_int;
    int64_t int_value;
  } attributes[KILN_SPAN_MAX_ATTRIBUTES];
  uint16_t text_len;
  char text[512];
} kiln_span;

/* Starts a span: ids, name (truncated to 31 bytes), kind; no attributes, status unset, times 0. */
void kiln_span_init(kiln_span *s, const uint8_t trace_id[16], const uint8_t span_id[8],
                    const uint8_t parent_span_id[8], const char *name, kiln_span_kind kind);
/* Adds an attribute. A string value that is not UTF-8 has its bytes >= 0x80 replaced by '?', and a
 * long one is cut (at a character boundary) so that it fits. Returns 0, or -1 when the span has no
 * room left (the attribute is dropped). */
int kiln_span_set_string(kiln_span *s, const char *key, const char *value);
int kiln_span_set_int(kiln_span *s, const char *key, int64_t value);
/* Sets the status and its message (cut to 127 bytes, made UTF-8 as above; NULL: none). */
void kiln_span_set_status(kiln_span *s, kiln_span_status status, const char *message);
/* CLOCK_REALTIME now, in nanoseconds since the epoch. */
int64_t kiln_trace_now_ns(void);

/* Encodes spans as one OTLP/HTTP JSON ExportTraceServiceRequest: one resourceSpans with the resource
 * attributes service.name and service.version, one scopeSpans with scope "kiln", ids as lower-case
 * hex, times and integer attributes as decimal strings, as the OTLP JSON mapping requires. The text
 * is malloc'd; the caller frees it. */
kiln_status kiln_otlp_encode(const kiln_span *spans, int n, const char *service_name, const char *service_version,
                             char **json, size_t *len);
/* The URL spans are POSTed to: "<base>/v1/traces" for an endpoint without a path (or with "/"),
 * the endpoint itself when it has one. Errors name the endpoint and say what was expected (an
 * http:// or https:// URL). */
kiln_status kiln_otlp_url(const char *endpoint, char *out, size_t size);

typedef struct kiln_tracer kiln_tracer;

typedef struct kiln_tracer_options {
  const char *endpoint;    /* collector: see kiln_otlp_url */
  int max_queue_spans;     /* spans waiting for export; beyond, new ones are dropped. <= 0: 4096 */
  int max_batch_spans;     /* spans per POST; <= 0: 512 */
  double flush_interval_s; /* a partial batch waits at most this; <= 0: 1 */
  double timeout_s;        /* connect and whole POST; also the shutdown flush's bound; <= 0: 2 */
  const char *service_name;    /* NULL: "kiln" */
  const char *service_version; /* NULL: kiln_version() */
  /* Registers kiln_trace_spans_exported_total, kiln_trace_spans_dropped_total and
   * kiln_trace_export_failures_total here (NULL: no metrics). */
  kiln_metrics *metrics;
  /* No background thread: spans wait until kiln_tracer_flush (tools that export at their end,
   * and tests). */
  int synchronous;
} kiln_tracer_options;

/* Creates the exporter: the queue (allocated once, here), a reused libcurl handle, and unless
 * synchronous the thread that POSTs a batch when max_batch_spans are queued or flush_interval_s
 * after the oldest, whichever comes first. */
kiln_status kiln_tracer_create(const kiln_tracer_options *opt, kiln_tracer **out);
/* Queues a copy of the span for export. Never blocks on the network and never allocates: on a full
 * queue the span is dropped and counted. Returns 0, or -1 when dropped. Any thread. */
int kiln_tracer_submit(kiln_tracer *t, const kiln_span *span);
/* Exports everything queued now, on the caller's thread, giving up after timeout_s (what is left
 * is dropped and counted). Returns an error when a POST failed. */
kiln_status kiln_tracer_flush(kiln_tracer *t, double timeout_s);

typedef struct kiln_tracer_stats {
  int64_t exported, dropped, failures; /* spans accepted by the collector, spans dropped, failed POSTs */
  int64_t queued;                      /* spans waiting now */
} kiln_tracer_stats;
void kiln_tracer_stats_get(kiln_tracer *t, kiln_tracer_stats *out);
/* Stops the thread after exporting what is queued, within timeout_s of the options (2 s), and frees
 * the exporter. NULL is ignored. */
void kiln_tracer_free(kiln_tracer *t);

#ifdef __cplusplus
}
#endif
#endif
