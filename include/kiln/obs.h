/* kiln obs: a metrics registry and its Prometheus text exposition (format 0.0.4).
 *
 * Counters, gauges and histograms, each a family with fixed label names; a series is created the
 * first time a label-value combination is used. Updates are thread-safe and cheap (one lock per
 * family, no allocation once the series exists). The registry also reports the process's own
 * standard metrics (process_resident_memory_bytes, process_virtual_memory_bytes,
 * process_cpu_seconds_total, process_open_fds, process_threads, process_start_time_seconds) and,
 * when NVIDIA's NVML library loads (libnvidia-ml.so.1, or $KILN_NVML_LIBRARY), every GPU's
 * kiln_gpu_utilization_ratio, kiln_gpu_memory_used_bytes and kiln_gpu_memory_total_bytes
 * {gpu="<index>",name="<device>"} when rendered. */
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

#ifdef __cplusplus
}
#endif
#endif
