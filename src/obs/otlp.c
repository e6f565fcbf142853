/* The OTLP/HTTP JSON span exporter: the ExportTraceServiceRequest encoding, the collector's URL,
 * and the tracer (a bounded queue of spans drained by a background thread that POSTs batches with
 * libcurl). Separate from trace.c because only this file touches the network. */
#include "kiln/obs.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/buf.h"

#define DEFAULT_QUEUE 4096
#define DEFAULT_BATCH 512
#define MAX_URL 2048
/* Failed exports are logged at most this often (a dead collector must not flood the log). */
#define FAILURE_LOG_INTERVAL_S 10.0

/* ---------------------------------------------------------------- encoding */

static void put_key_value(kx_buf *b, const char *key, const char *value) {
  kx_buf_puts(b, "{\"key\":");
  kx_buf_json_string(b, key);
  kx_buf_puts(b, ",\"value\":{\"stringValue\":");
  kx_buf_json_string(b, value);
  kx_buf_puts(b, "}}");
}

static void put_span(kx_buf *b, const kiln_span *s) {
  char hex[33];
  kx_buf_printf(b, "{\"traceId\":\"%s\"", kiln_trace_hex(s->trace_id, 16, hex));
  kx_buf_printf(b, ",\"spanId\":\"%s\"", kiln_trace_hex(s->span_id, 8, hex));
  static const uint8_t zero[8];
  if (memcmp(s->parent_span_id, zero, 8) != 0)
    kx_buf_printf(b, ",\"parentSpanId\":\"%s\"", kiln_trace_hex(s->parent_span_id, 8, hex));
  kx_buf_puts(b, ",\"name\":");
  kx_buf_json_string(b, s->name);
  /* OTLP's JSON mapping: enums as numbers, 64-bit integers as decimal strings */
  kx_buf_printf(b, ",\"kind\":%d,\"startTimeUnixNano\":\"%" PRId64 "\",\"endTimeUnixNano\":\"%" PRId64 "\"",
                (int)s->kind, s->start_ns, s->end_ns);
  kx_buf_puts(b, ",\"attributes\":[");
  for (int i = 0; i < s->n_attributes; i++) {
    if (i) kx_buf_putc(b, ',');
    if (s->attributes[i].is_int) {
      kx_buf_puts(b, "{\"key\":");
      kx_buf_json_string(b, s->text + s->attributes[i].key);
      kx_buf_printf(b, ",\"value\":{\"intValue\":\"%" PRId64 "\"}}", s->attributes[i].int_value);
    } else {
      put_key_value(b, s->text + s->attributes[i].key, s->text + s->attributes[i].value);
    }
  }
  kx_buf_printf(b, "],\"status\":{\"code\":%d", (int)s->status);
  if (s->status_message[0]) {
    kx_buf_puts(b, ",\"message\":");
    kx_buf_json_string(b, s->status_message);
  }
  kx_buf_puts(b, "}}");
}

/* Encodes n spans that start at `first` in a ring of `cap` (the tracer's queue; a plain array is a
 * ring that does not wrap). */
static kiln_status encode_ring(const kiln_span *ring, int cap, int first, int n, const char *service_name,
                               const char *service_version, char **json, size_t *len) {
  kx_buf b = {0};
  kx_buf_puts(&b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
  put_key_value(&b, "service.name", service_name);
  kx_buf_putc(&b, ',');
  put_key_value(&b, "service.version", service_version);
  kx_buf_puts(&b, "]},\"scopeSpans\":[{\"scope\":{\"name\":\"kiln\",\"version\":");
  kx_buf_json_string(&b, kiln_version());
  kx_buf_puts(&b, "},\"spans\":[");
  for (int i = 0; i < n; i++) {
    if (i) kx_buf_putc(&b, ',');
    put_span(&b, &ring[(first + i) % cap]);
  }
  kx_buf_puts(&b, "]}]}]}");
  *json = kx_buf_take(&b, len);
  if (!*json) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory encoding %d spans as OTLP JSON", n);
  return NULL;
}

kiln_status kiln_otlp_encode(const kiln_span *spans, int n, const char *service_name, const char *service_version,
                             char **json, size_t *len) {
  *json = NULL;
  *len = 0;
  if (n < 0 || (n > 0 && !spans)) return kiln_error(KILN_INVALID_ARGUMENT, "OTLP encoding: %d spans at %p", n, (const void *)spans);
  return encode_ring(spans, n > 0 ? n : 1, 0, n, service_name ? service_name : "kiln",
                     service_version ? service_version : kiln_version(), json, len);
}

kiln_status kiln_otlp_url(const char *endpoint, char *out, size_t size) {
  if (!endpoint || !*endpoint) return kiln_error(KILN_INVALID_ARGUMENT, "OTLP endpoint: expected an http:// or https:// URL, got nothing");
  size_t n = strnlen(endpoint, MAX_URL + 1);
  if (n > MAX_URL) return kiln_error(KILN_INVALID_ARGUMENT, "OTLP endpoint: longer than %d characters", MAX_URL);
  size_t scheme = strncasecmp(endpoint, "http://", 7) == 0 ? 7 : strncasecmp(endpoint, "https://", 8) == 0 ? 8 : 0;
  if (!scheme)
    return kiln_error(KILN_INVALID_ARGUMENT, "OTLP endpoint '%.200s': expected an http:// or https:// URL", endpoint);
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)endpoint[i] <= 0x20 || (unsigned char)endpoint[i] >= 0x7f)
      return kiln_error(KILN_INVALID_ARGUMENT, "OTLP endpoint '%.200s': a URL holds no spaces, control or non-ASCII characters",
                        endpoint);
  const char *host = endpoint + scheme, *path = strchr(host, '/');
  size_t host_len = path ? (size_t)(path - host) : strlen(host);
  if (host_len == 0 || host[0] == ':')
    return kiln_error(KILN_INVALID_ARGUMENT, "OTLP endpoint '%.200s': expected a host after the scheme", endpoint);
  if (memchr(host, '?', host_len) || memchr(host, '#', host_len))
    return kiln_error(KILN_INVALID_ARGUMENT, "OTLP endpoint '%.200s': expected a path before a query or fragment", endpoint);
  /* a base URL (no path, or just "/") gets the OTLP/HTTP traces path, as OpenTelemetry SDKs do */
  int base = !path || strcmp(path, "/") == 0;
  int w = snprintf(out, size, "%.*s%s", (int)(scheme + host_len), endpoint, base ? "/v1/traces" : path);
  if (w < 0 || (size_t)w >= size) return kiln_error(KILN_INVALID_ARGUMENT, "OTLP endpoint '%.200s': too long", endpoint);
  return NULL;
}

/* ---------------------------------------------------------------- the tracer */

struct kiln_tracer {
  kiln_tracer_options opt;
  char url[MAX_URL + 16];
  char *service_name, *service_version;
  pthread_mutex_t lock; /* the queue and `stop` */
  pthread_cond_t cond;
  kiln_span *ring;
  int cap, head, count; /* spans [head, head + count) wait; the exporter reads its batch unlocked */
  int stop;
  pthread_t thread;
  int started;
  pthread_mutex_t export_lock; /* one exporter at a time: the thread or kiln_tracer_flush */
  CURL *curl;
  struct curl_slist *headers;
  _Atomic double abort_at; /* a POST in progress gives up at this monotonic time (shutdown) */
  atomic_llong exported, dropped, failures;
  kiln_metric *m_exported, *m_dropped, *m_failures;
  double last_failure_log; /* under export_lock */
  int64_t unlogged_failures;
};

static double mono_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void count_dropped(kiln_tracer *t, int64_t n) {
  if (n <= 0) return;
  atomic_fetch_add(&t->dropped, n);
  kiln_metric_add(t->m_dropped, NULL, (double)n);
}

static size_t discard_body(char *data, size_t size, size_t n, void *ctx) {
  (void)data;
  (void)ctx;
  return size * n;
}

/* libcurl's progress callback: a non-zero return aborts the transfer (a shutdown past its bound). */
static int progress(void *ctx, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un) {
  kiln_tracer *t = ctx;
  return mono_now() > atomic_load(&t->abort_at);
}

/* POSTs one JSON body; returns NULL or why it failed. */
static kiln_status post(kiln_tracer *t, const char *json, size_t len, double timeout_s) {
  long ms = (long)(timeout_s * 1000);
  if (ms < 1) ms = 1;
  CURL *c = t->curl;
  CURLcode rc = curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
  if (rc == CURLE_OK) rc = curl_easy_setopt(c, CURLOPT_POSTFIELDS, json);
  if (rc == CURLE_OK) rc = curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, ms);
  if (rc == CURLE_OK) rc = curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, ms);
  if (rc == CURLE_OK) rc = curl_easy_perform(c);
  if (rc != CURLE_OK) return kiln_error(KILN_UNAVAILABLE, "POST %s: %s", t->url, curl_easy_strerror(rc));
  long status = 0;
  if (curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK || status < 200 || status > 299)
    return kiln_error(KILN_UNAVAILABLE, "POST %s: the collector answered HTTP %ld, expected 2xx", t->url, status);
  return NULL;
}

/* A failed export: counted always, logged at most once per FAILURE_LOG_INTERVAL_S. export_lock held. */
static void export_failed(kiln_tracer *t, kiln_status e, int spans) {
  atomic_fetch_add(&t->failures, 1);
  kiln_metric_add(t->m_failures, NULL, 1);
  count_dropped(t, spans);
  t->unlogged_failures++;
  double now = mono_now();
  if (t->last_failure_log == 0 || now - t->last_failure_log >= FAILURE_LOG_INTERVAL_S) {
    kiln_log(KILN_LOG_WARN, "trace export failed, %d spans dropped (%lld failures since the last message): %s", spans,
             (long long)t->unlogged_failures, kiln_status_message(e));
    t->last_failure_log = now;
    t->unlogged_failures = 0;
  }
  kiln_status_free(e);
}

/* Exports up to one batch; returns how many spans it took off the queue (0: none queued) and sets
 * *failed. export_lock held. The batch's slots stay counted (so submitters leave them alone) until
 * it has been encoded. */
static int export_batch(kiln_tracer *t, double timeout_s, int *failed) {
  pthread_mutex_lock(&t->lock);
  int first = t->head, n = t->count < t->opt.max_batch_spans ? t->count : t->opt.max_batch_spans;
  pthread_mutex_unlock(&t->lock);
  if (n == 0) return 0;
  char *json;
  size_t len;
  kiln_status e = encode_ring(t->ring, t->cap, first, n, t->service_name, t->service_version, &json, &len);
  pthread_mutex_lock(&t->lock);
  t->head = (t->head + n) % t->cap;
  t->count -= n;
  pthread_mutex_unlock(&t->lock);
  if (!e) {
    e = post(t, json, len, timeout_s);
    free(json);
  }
  *failed = e != NULL;
  if (e) {
    export_failed(t, e, n);
  } else {
    atomic_fetch_add(&t->exported, n);
    kiln_metric_add(t->m_exported, NULL, (double)n);
  }
  return n;
}

/* Exports what is queued until `until` (monotonic); what is left then is dropped. Returns the
 * number of failed POSTs. */
static int drain(kiln_tracer *t, double until) {
  int failures = 0, failed = 0;
  pthread_mutex_lock(&t->export_lock);
  for (;;) {
    double left = until - mono_now();
    if (left <= 0) break;
    if (export_batch(t, left < t->opt.timeout_s ? left : t->opt.timeout_s, &failed) == 0) break;
    failures += failed;
  }
  pthread_mutex_unlock(&t->export_lock);
  return failures;
}

static void *exporter_main(void *arg) {
  kiln_tracer *t = arg;
  double last = mono_now();
  pthread_mutex_lock(&t->lock);
  while (!t->stop) {
    double due = last + t->opt.flush_interval_s;
    while (!t->stop && t->count < t->opt.max_batch_spans && mono_now() < due) {
      struct timespec ts = {(time_t)due, (long)((due - (double)(time_t)due) * 1e9)};
      pthread_cond_timedwait(&t->cond, &t->lock, &ts);
    }
    if (t->stop) break;
    pthread_mutex_unlock(&t->lock);
    int failed;
    pthread_mutex_lock(&t->export_lock);
    export_batch(t, t->opt.timeout_s, &failed);
    pthread_mutex_unlock(&t->export_lock);
    last = mono_now();
    pthread_mutex_lock(&t->lock);
  }
  pthread_mutex_unlock(&t->lock);
  return NULL;
}

static kiln_status set_curl(kiln_tracer *t) {
  t->curl = curl_easy_init();
  if (!t->curl) return kiln_error(KILN_RESOURCE_EXHAUSTED, "OTLP exporter: libcurl could not create a handle");
  t->headers = curl_slist_append(NULL, "Content-Type: application/json");
  if (!t->headers) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  CURL *c = t->curl;
  CURLcode rc = curl_easy_setopt(c, CURLOPT_URL, t->url);
  if (rc == CURLE_OK) rc = curl_easy_setopt(c, CURLOPT_HTTPHEADER, t->headers);
  if (rc == CURLE_OK) rc = curl_easy_setopt(c, CURLOPT_POST, 1L);
  if (rc == CURLE_OK) rc = curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L); /* no SIGALRM in a threaded server */
  if (rc == CURLE_OK) rc = curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  if (rc == CURLE_OK) rc = curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard_body);
  if (rc == CURLE_OK) rc = curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, progress);
  if (rc == CURLE_OK) rc = curl_easy_setopt(c, CURLOPT_XFERINFODATA, t);
  if (rc == CURLE_OK) rc = curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  if (rc != CURLE_OK) return kiln_error(KILN_INTERNAL, "OTLP exporter: libcurl refused an option: %s", curl_easy_strerror(rc));
  return NULL;
}

static kiln_metric *counter(kiln_metrics *m, const char *name, const char *help) {
  return m ? kiln_metrics_counter(m, name, help, 0, NULL) : NULL;
}

/* Frees what kiln_tracer_create made (its thread already joined); curl_global_cleanup only when
 * curl_global_init succeeded. */
static void tracer_destroy(kiln_tracer *t, int curl_global) {
  curl_slist_free_all(t->headers);
  if (t->curl) curl_easy_cleanup(t->curl);
  if (curl_global) curl_global_cleanup();
  pthread_cond_destroy(&t->cond);
  pthread_mutex_destroy(&t->lock);
  pthread_mutex_destroy(&t->export_lock);
  free(t->ring);
  free(t->service_name);
  free(t->service_version);
  free(t);
}

kiln_status kiln_tracer_create(const kiln_tracer_options *opt, kiln_tracer **out) {
  *out = NULL;
  kiln_tracer *t = calloc(1, sizeof *t);
  if (!t) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  t->opt = *opt;
  if (t->opt.max_queue_spans <= 0) t->opt.max_queue_spans = DEFAULT_QUEUE;
  if (t->opt.max_batch_spans <= 0) t->opt.max_batch_spans = DEFAULT_BATCH;
  if (!(t->opt.flush_interval_s > 0)) t->opt.flush_interval_s = 1;
  if (!(t->opt.timeout_s > 0)) t->opt.timeout_s = 2;
  t->cap = t->opt.max_queue_spans;
  atomic_init(&t->abort_at, 1e300);
  atomic_init(&t->exported, 0);
  atomic_init(&t->dropped, 0);
  atomic_init(&t->failures, 0);
  pthread_mutex_init(&t->lock, NULL);
  pthread_mutex_init(&t->export_lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&t->cond, &ca);
  pthread_condattr_destroy(&ca);
  kiln_status e = kiln_otlp_url(opt->endpoint, t->url, sizeof t->url);
  if (!e && (size_t)t->cap > SIZE_MAX / sizeof *t->ring) e = kiln_error(KILN_INVALID_ARGUMENT, "OTLP queue of %d spans is too large", t->cap);
  if (!e) {
    t->ring = calloc((size_t)t->cap, sizeof *t->ring);
    t->service_name = strdup(opt->service_name ? opt->service_name : "kiln");
    t->service_version = strdup(opt->service_version ? opt->service_version : kiln_version());
    if (!t->ring || !t->service_name || !t->service_version)
      e = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory allocating a queue of %d spans", t->cap);
  }
  int global = 0;
  if (!e) {
    CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (rc != CURLE_OK) e = kiln_error(KILN_INTERNAL, "OTLP exporter: libcurl did not initialise: %s", curl_easy_strerror(rc));
    else global = 1;
  }
  if (!e) e = set_curl(t);
  if (!e) {
    t->m_exported = counter(opt->metrics, "kiln_trace_spans_exported_total", "Spans the OTLP collector accepted.");
    t->m_dropped = counter(opt->metrics, "kiln_trace_spans_dropped_total",
                           "Spans lost: the export queue was full, or their POST to the collector failed.");
    t->m_failures = counter(opt->metrics, "kiln_trace_export_failures_total", "Failed POSTs to the OTLP collector.");
  }
  if (!e && !opt->synchronous) {
    if (pthread_create(&t->thread, NULL, exporter_main, t) != 0)
      e = kiln_error(KILN_RESOURCE_EXHAUSTED, "OTLP exporter: cannot start its thread");
    else t->started = 1;
  }
  if (e) {
    tracer_destroy(t, global);
    return e;
  }
  *out = t;
  return NULL;
}

int kiln_tracer_submit(kiln_tracer *t, const kiln_span *span) {
  pthread_mutex_lock(&t->lock);
  if (t->count == t->cap || t->stop) {
    pthread_mutex_unlock(&t->lock);
    count_dropped(t, 1);
    return -1;
  }
  t->ring[(t->head + t->count) % t->cap] = *span;
  t->count++;
  if (t->count == t->opt.max_batch_spans) pthread_cond_signal(&t->cond); /* a full batch: export now */
  pthread_mutex_unlock(&t->lock);
  return 0;
}

kiln_status kiln_tracer_flush(kiln_tracer *t, double timeout_s) {
  double until = mono_now() + (timeout_s > 0 ? timeout_s : t->opt.timeout_s);
  int failures = drain(t, until);
  pthread_mutex_lock(&t->lock);
  int left = t->count;
  pthread_mutex_unlock(&t->lock);
  if (failures) return kiln_error(KILN_UNAVAILABLE, "OTLP export to %s: %d POSTs failed", t->url, failures);
  if (left) return kiln_error(KILN_DEADLINE_EXCEEDED, "OTLP export to %s: %d spans still queued after %.1f s", t->url, left, timeout_s);
  return NULL;
}

void kiln_tracer_stats_get(kiln_tracer *t, kiln_tracer_stats *out) {
  out->exported = atomic_load(&t->exported);
  out->dropped = atomic_load(&t->dropped);
  out->failures = atomic_load(&t->failures);
  pthread_mutex_lock(&t->lock);
  out->queued = t->count;
  pthread_mutex_unlock(&t->lock);
}

void kiln_tracer_free(kiln_tracer *t) {
  if (!t) return;
  double until = mono_now() + t->opt.timeout_s;
  atomic_store(&t->abort_at, until); /* a POST in progress ends by then too */
  pthread_mutex_lock(&t->lock);
  t->stop = 1;
  pthread_cond_signal(&t->cond);
  pthread_mutex_unlock(&t->lock);
  if (t->started) pthread_join(t->thread, NULL);
  drain(t, until);
  count_dropped(t, t->count); /* what the bound left behind */
  tracer_destroy(t, 1);
}
