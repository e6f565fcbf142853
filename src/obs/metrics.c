/* The metrics registry and its Prometheus text exposition (format 0.0.4), plus the process's own
 * standard metrics read from /proc and the GPUs' (obs/nvml.c). Kept apart from tracing: this file
 * knows nothing of HTTP. */
#include "kiln/obs.h"

#include <dirent.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "obs/nvml.h"

#define MAX_LABELS 8
/* Bucket bounds beyond this are a programming error (Prometheus advises ~10-20). */
#define MAX_BOUNDS 256

typedef enum metric_kind { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM } metric_kind;

static const char *const kind_names[] = {"counter", "gauge", "histogram"};

/* One label-value combination. Allocated in one block: the struct, then the histogram's
 * per-bucket counts (not cumulative; n_bounds + 1 of them, the last for +Inf), then the label
 * value pointers, then the strings they point to. */
typedef struct series {
  struct series *next;
  uint64_t hash; /* of the label values, to skip most string comparisons */
  double value;  /* counter, gauge; histogram: the sum of observations */
  uint64_t count; /* histogram: number of observations */
  uint64_t *buckets;
  char **values;
} series;

struct kiln_metric {
  metric_kind kind;
  char *name;
  char *help;
  int n_labels;
  char *label_names[MAX_LABELS];
  int n_bounds;
  double *bounds;
  pthread_mutex_t lock; /* guards the series list and every series' numbers */
  series *first;        /* in creation order, which is also the order they are rendered in */
  series *last;
};

struct kiln_metrics {
  pthread_mutex_t lock; /* guards the family array; taken before any family's lock */
  kiln_metric **families; /* sorted by name */
  size_t count;
  size_t capacity;
  /* NVML, loaded at the first render (guarded by `lock`): a registry that is never scraped never
   * touches the driver, and a machine without one costs one failed dlopen. */
  int nvml_tried;
  kx_nvml *nvml;
};

const double kiln_latency_buckets[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                       0.05,   0.1,     0.25,   0.5,   1,     2.5,   5,     10};
const int kiln_latency_bucket_count = (int)(sizeof kiln_latency_buckets / sizeof kiln_latency_buckets[0]);

/* Names the process and GPU sections render; a family may not take them. */
static const char *const process_metric_names[] = {
    "process_cpu_seconds_total",  "process_open_fds",           "process_resident_memory_bytes",
    "process_start_time_seconds", "process_threads",            "process_virtual_memory_bytes",
    "kiln_gpu_utilization_ratio", "kiln_gpu_memory_used_bytes", "kiln_gpu_memory_total_bytes",
    "kiln_gpu_temperature_celsius", "kiln_gpu_power_watts"};

/* ---------------------------------------------------------------- registry */

kiln_status kiln_metrics_create(kiln_metrics **out) {
  *out = NULL;
  kiln_metrics *r = calloc(1, sizeof *r);
  if (!r) return kiln_error(KILN_RESOURCE_EXHAUSTED, "metrics registry: out of memory");
  if (pthread_mutex_init(&r->lock, NULL) != 0) {
    free(r);
    return kiln_error(KILN_INTERNAL, "metrics registry: cannot create its mutex");
  }
  *out = r;
  return NULL;
}

static void family_free(kiln_metric *m) {
  if (!m) return;
  for (series *s = m->first, *next; s; s = next) {
    next = s->next;
    free(s);
  }
  for (int i = 0; i < m->n_labels; i++) free(m->label_names[i]);
  free(m->bounds);
  free(m->help);
  free(m->name);
  pthread_mutex_destroy(&m->lock);
  free(m);
}

void kiln_metrics_free(kiln_metrics *r) {
  if (!r) return;
  for (size_t i = 0; i < r->count; i++) family_free(r->families[i]);
  free(r->families);
  kx_nvml_close(r->nvml);
  pthread_mutex_destroy(&r->lock);
  free(r);
}

/* ASCII only, whatever the locale says */
static int is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static int is_name_char(char c) { return is_name_start(c) || (c >= '0' && c <= '9'); }

static int valid_metric_name(const char *s) {
  if (!s || !(is_name_start(*s) || *s == ':')) return 0;
  for (s++; *s; s++)
    if (!(is_name_char(*s) || *s == ':')) return 0;
  return 1;
}

static int valid_label_name(const char *s) {
  if (!s || !is_name_start(*s)) return 0;
  for (s++; *s; s++)
    if (!is_name_char(*s)) return 0;
  return 1;
}

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Checks everything a registration is given; logs what is wrong and returns 0. */
static int check_registration(metric_kind kind, const char *name, int n_labels,
                              const char *const *label_names, int n_bounds, const double *bounds) {
  if (!valid_metric_name(name)) {
    kiln_log(KILN_LOG_ERROR, "metrics: invalid metric name '%s' (expected [a-zA-Z_:][a-zA-Z0-9_:]*)",
             name ? name : "(null)");
    return 0;
  }
  if (kind == KIND_COUNTER && !ends_with(name, "_total")) {
    kiln_log(KILN_LOG_ERROR, "metrics: counter name '%s' does not end in \"_total\"", name);
    return 0;
  }
  for (size_t i = 0; i < sizeof process_metric_names / sizeof process_metric_names[0]; i++) {
    if (strcmp(name, process_metric_names[i]) == 0) {
      kiln_log(KILN_LOG_ERROR, "metrics: '%s' is reserved for the process and GPU metrics", name);
      return 0;
    }
  }
  if (n_labels < 0 || n_labels > MAX_LABELS || (n_labels > 0 && !label_names)) {
    kiln_log(KILN_LOG_ERROR, "metrics: '%s': %d labels (expected 0 to %d names)", name, n_labels,
             MAX_LABELS);
    return 0;
  }
  for (int i = 0; i < n_labels; i++) {
    if (!valid_label_name(label_names[i])) {
      kiln_log(KILN_LOG_ERROR, "metrics: '%s': invalid label name '%s' (expected [a-zA-Z_][a-zA-Z0-9_]*)",
               name, label_names[i] ? label_names[i] : "(null)");
      return 0;
    }
    /* "le" is the bucket bound's label; a second one would make the exposition ambiguous */
    if (kind == KIND_HISTOGRAM && strcmp(label_names[i], "le") == 0) {
      kiln_log(KILN_LOG_ERROR, "metrics: histogram '%s': the label name 'le' is reserved", name);
      return 0;
    }
    for (int j = 0; j < i; j++) {
      if (strcmp(label_names[i], label_names[j]) == 0) {
        kiln_log(KILN_LOG_ERROR, "metrics: '%s': label '%s' appears twice", name, label_names[i]);
        return 0;
      }
    }
  }
  if (kind != KIND_HISTOGRAM) return 1;
  if (n_bounds < 0 || n_bounds > MAX_BOUNDS || (n_bounds > 0 && !bounds)) {
    kiln_log(KILN_LOG_ERROR, "metrics: histogram '%s': %d bucket bounds (expected 0 to %d)", name,
             n_bounds, MAX_BOUNDS);
    return 0;
  }
  for (int i = 0; i < n_bounds; i++) {
    if (isnan(bounds[i]) || isinf(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1]))) {
      kiln_log(KILN_LOG_ERROR, "metrics: histogram '%s': bucket bounds must be finite and strictly "
               "increasing (bound %d is %g)", name, i, bounds[i]);
      return 0;
    }
  }
  return 1;
}

/* Whether an existing family is the one a second registration asks for. */
static int same_family(const kiln_metric *m, metric_kind kind, int n_labels,
                       const char *const *label_names, int n_bounds, const double *bounds) {
  if (m->kind != kind || m->n_labels != n_labels) return 0;
  for (int i = 0; i < n_labels; i++)
    if (strcmp(m->label_names[i], label_names[i]) != 0) return 0;
  if (kind != KIND_HISTOGRAM) return 1;
  if (m->n_bounds != n_bounds) return 0;
  for (int i = 0; i < n_bounds; i++)
    if (m->bounds[i] != bounds[i]) return 0;
  return 1;
}

static char *copy_string(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

static series *series_create(const kiln_metric *m, const char *const *values, uint64_t hash);

static kiln_metric *family_create(metric_kind kind, const char *name, const char *help, int n_labels,
                                  const char *const *label_names, int n_bounds, const double *bounds) {
  kiln_metric *m = calloc(1, sizeof *m);
  if (!m) return NULL;
  if (pthread_mutex_init(&m->lock, NULL) != 0) {
    free(m);
    return NULL;
  }
  m->kind = kind;
  m->name = copy_string(name);
  m->help = copy_string(help ? help : "");
  int ok = m->name && m->help;
  for (int i = 0; i < n_labels && ok; i++) {
    m->label_names[i] = copy_string(label_names[i]);
    ok = m->label_names[i] != NULL;
    m->n_labels = i + 1; /* so family_free releases what was copied */
  }
  if (ok && kind == KIND_HISTOGRAM && n_bounds > 0) {
    m->bounds = malloc((size_t)n_bounds * sizeof *m->bounds);
    ok = m->bounds != NULL;
    if (ok) memcpy(m->bounds, bounds, (size_t)n_bounds * sizeof *m->bounds);
  }
  m->n_bounds = kind == KIND_HISTOGRAM ? n_bounds : 0;
  /* A family without labels has exactly one series: exported (at 0) from the start, as the
   * Prometheus client libraries do, so that rate() sees the first increment. */
  if (ok && n_labels == 0) {
    m->first = m->last = series_create(m, NULL, 0);
    ok = m->first != NULL;
  }
  if (!ok) {
    family_free(m);
    return NULL;
  }
  return m;
}

/* Index of the first family whose name is >= name. Caller holds r->lock. */
static size_t family_position(const kiln_metrics *r, const char *name) {
  size_t lo = 0, hi = r->count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (strcmp(r->families[mid]->name, name) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

static kiln_metric *registry_add(kiln_metrics *r, metric_kind kind, const char *name, const char *help,
                                 int n_labels, const char *const *label_names, int n_bounds,
                                 const double *bounds) {
  if (!r) {
    kiln_log(KILN_LOG_ERROR, "metrics: '%s' registered in a NULL registry", name ? name : "(null)");
    return NULL;
  }
  if (!check_registration(kind, name, n_labels, label_names, n_bounds, bounds)) return NULL;
  kiln_metric *m = NULL;
  pthread_mutex_lock(&r->lock);
  size_t at = family_position(r, name);
  if (at < r->count && strcmp(r->families[at]->name, name) == 0) {
    m = r->families[at];
    if (!same_family(m, kind, n_labels, label_names, n_bounds, bounds)) {
      kiln_log(KILN_LOG_ERROR, "metrics: '%s' is already registered as a %s with other labels or "
               "buckets", name, kind_names[m->kind]);
      m = NULL;
    }
    pthread_mutex_unlock(&r->lock);
    return m;
  }
  if (r->count == r->capacity) {
    size_t capacity = r->capacity ? r->capacity * 2 : 16;
    kiln_metric **families = realloc(r->families, capacity * sizeof *families);
    if (!families) goto out_of_memory;
    r->families = families;
    r->capacity = capacity;
  }
  m = family_create(kind, name, help, n_labels, label_names, n_bounds, bounds);
  if (!m) goto out_of_memory;
  memmove(r->families + at + 1, r->families + at, (r->count - at) * sizeof *r->families);
  r->families[at] = m;
  r->count++;
  pthread_mutex_unlock(&r->lock);
  return m;
out_of_memory:
  pthread_mutex_unlock(&r->lock);
  kiln_log(KILN_LOG_ERROR, "metrics: out of memory registering '%s'", name);
  return NULL;
}

kiln_metric *kiln_metrics_counter(kiln_metrics *r, const char *name, const char *help, int n_labels,
                                  const char *const *label_names) {
  return registry_add(r, KIND_COUNTER, name, help, n_labels, label_names, 0, NULL);
}

kiln_metric *kiln_metrics_gauge(kiln_metrics *r, const char *name, const char *help, int n_labels,
                                const char *const *label_names) {
  return registry_add(r, KIND_GAUGE, name, help, n_labels, label_names, 0, NULL);
}

kiln_metric *kiln_metrics_histogram(kiln_metrics *r, const char *name, const char *help, int n_labels,
                                    const char *const *label_names, int n_bounds, const double *bounds) {
  return registry_add(r, KIND_HISTOGRAM, name, help, n_labels, label_names, n_bounds, bounds);
}

/* ---------------------------------------------------------------- series */

/* FNV-1a over the values, each followed by a 0xff byte (which UTF-8 text never contains). */
static uint64_t hash_values(int n, const char *const *values) {
  uint64_t h = 14695981039346656037ull;
  for (int i = 0; i < n; i++) {
    for (const unsigned char *p = (const unsigned char *)values[i]; *p; p++)
      h = (h ^ *p) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
  }
  return h;
}

static size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

static series *series_create(const kiln_metric *m, const char *const *values, uint64_t hash) {
  size_t n_buckets = m->kind == KIND_HISTOGRAM ? (size_t)m->n_bounds + 1 : 0;
  size_t at_buckets = align_up(sizeof(series), alignof(uint64_t));
  size_t at_values = align_up(at_buckets + n_buckets * sizeof(uint64_t), alignof(char *));
  size_t at_text = at_values + (size_t)m->n_labels * sizeof(char *);
  size_t total = at_text;
  for (int i = 0; i < m->n_labels; i++) total += strlen(values[i]) + 1;
  unsigned char *block = calloc(1, total);
  if (!block) return NULL;
  series *s = (series *)(void *)block;
  s->hash = hash;
  s->buckets = n_buckets ? (uint64_t *)(void *)(block + at_buckets) : NULL;
  s->values = m->n_labels ? (char **)(void *)(block + at_values) : NULL;
  char *text = (char *)block + at_text;
  for (int i = 0; i < m->n_labels; i++) {
    size_t n = strlen(values[i]) + 1;
    memcpy(text, values[i], n);
    s->values[i] = text;
    text += n;
  }
  return s;
}

/* Checks the label values a caller passes; logs and returns 0 when they cannot be used. */
static int check_values(const kiln_metric *m, const char *const *values) {
  if (m->n_labels == 0) return 1;
  if (!values) {
    kiln_log(KILN_LOG_ERROR, "metrics: '%s': NULL label values (expected %d)", m->name, m->n_labels);
    return 0;
  }
  for (int i = 0; i < m->n_labels; i++) {
    if (!values[i]) {
      kiln_log(KILN_LOG_ERROR, "metrics: '%s': label '%s' has a NULL value", m->name, m->label_names[i]);
      return 0;
    }
  }
  return 1;
}

/* The series for these values, or NULL when absent. Caller holds m->lock. The previous series is
 * stored in *prev (for unlinking). Linear: a family has a handful of series (models x versions x
 * outcomes), and the hash makes each miss one integer comparison. */
static series *series_find(const kiln_metric *m, const char *const *values, uint64_t hash,
                           series **prev) {
  series *before = NULL;
  for (series *s = m->first; s; before = s, s = s->next) {
    if (s->hash != hash) continue;
    int i = 0;
    while (i < m->n_labels && strcmp(s->values[i], values[i]) == 0) i++;
    if (i == m->n_labels) {
      if (prev) *prev = before;
      return s;
    }
  }
  return NULL;
}

static uint64_t series_hash(const kiln_metric *m, const char *const *values) {
  return m->n_labels ? hash_values(m->n_labels, values) : 0;
}

/* Finds or creates the series; NULL (logged) when memory runs out. Caller holds m->lock. */
static series *series_get(kiln_metric *m, const char *const *values, uint64_t hash) {
  series *s = series_find(m, values, hash, NULL);
  if (s) return s;
  s = series_create(m, values, hash);
  if (!s) {
    kiln_log(KILN_LOG_ERROR, "metrics: '%s': out of memory creating a series", m->name);
    return NULL;
  }
  if (m->last) m->last->next = s;
  else m->first = s;
  m->last = s;
  return s;
}

void kiln_metric_add(kiln_metric *m, const char *const *label_values, double v) {
  if (!m || !check_values(m, label_values)) return;
  if (m->kind == KIND_HISTOGRAM) {
    kiln_log(KILN_LOG_ERROR, "metrics: add on histogram '%s' (use observe)", m->name);
    return;
  }
  if (m->kind == KIND_COUNTER && !(v >= 0)) {
    kiln_log(KILN_LOG_ERROR, "metrics: counter '%s' cannot grow by %g", m->name, v);
    return;
  }
  uint64_t hash = series_hash(m, label_values);
  pthread_mutex_lock(&m->lock);
  series *s = series_get(m, label_values, hash);
  if (s) s->value += v;
  pthread_mutex_unlock(&m->lock);
}

void kiln_metric_set(kiln_metric *m, const char *const *label_values, double v) {
  if (!m || !check_values(m, label_values)) return;
  if (m->kind != KIND_GAUGE) {
    kiln_log(KILN_LOG_ERROR, "metrics: set on %s '%s' (only gauges are set)", kind_names[m->kind],
             m->name);
    return;
  }
  uint64_t hash = series_hash(m, label_values);
  pthread_mutex_lock(&m->lock);
  series *s = series_get(m, label_values, hash);
  if (s) s->value = v;
  pthread_mutex_unlock(&m->lock);
}

void kiln_metric_observe(kiln_metric *m, const char *const *label_values, double v) {
  if (!m || !check_values(m, label_values)) return;
  if (m->kind != KIND_HISTOGRAM) {
    kiln_log(KILN_LOG_ERROR, "metrics: observe on %s '%s' (only histograms observe)",
             kind_names[m->kind], m->name);
    return;
  }
  /* The first bucket whose bound is >= v; NaN lands in +Inf, as in the Go client. */
  int lo = 0, hi = m->n_bounds;
  while (lo < hi) {
    int mid = lo + (hi - lo) / 2;
    if (v <= m->bounds[mid]) hi = mid;
    else lo = mid + 1;
  }
  uint64_t hash = series_hash(m, label_values);
  pthread_mutex_lock(&m->lock);
  series *s = series_get(m, label_values, hash);
  if (s) {
    s->buckets[lo]++;
    s->count++;
    s->value += v;
  }
  pthread_mutex_unlock(&m->lock);
}

void kiln_metric_remove(kiln_metric *m, const char *const *label_values) {
  if (!m || (m->n_labels && !label_values)) return;
  series *doomed = NULL, *prev = NULL;
  pthread_mutex_lock(&m->lock);
  for (series *s = m->first, *next; s; s = next) {
    next = s->next;
    int match = 1;
    for (int i = 0; i < m->n_labels && match; i++) match = !label_values[i] || strcmp(label_values[i], s->values[i]) == 0;
    if (!match) {
      prev = s;
      continue;
    }
    if (prev) prev->next = next;
    else m->first = next;
    if (m->last == s) m->last = prev;
    s->next = doomed;
    doomed = s;
  }
  pthread_mutex_unlock(&m->lock);
  while (doomed) {
    series *s = doomed;
    doomed = s->next;
    free(s);
  }
}

/* Counters and gauges: the value; histograms: the number of observations. */
double kiln_metric_value(kiln_metric *m, const char *const *label_values) {
  if (!m || !check_values(m, label_values)) return 0;
  uint64_t hash = series_hash(m, label_values);
  pthread_mutex_lock(&m->lock);
  series *s = series_find(m, label_values, hash, NULL);
  double v = !s ? 0 : m->kind == KIND_HISTOGRAM ? (double)s->count : s->value;
  pthread_mutex_unlock(&m->lock);
  return v;
}

/* ---------------------------------------------------------------- exposition */

/* Prometheus' float syntax: finite values as JSON writes them (kx_format_number: integers exactly,
 * others with the fewest digits that read back to the same double), and +Inf, -Inf, NaN. */
static const char *format_value(double v, char s[KX_NUMBER_CHARS]) {
  if (isnan(v)) return "NaN";
  if (isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return kx_format_number(v == 0 ? 0.0 : v, 0, s); /* -0 prints as 0 */
}

static void put_value(kx_buf *b, double v) {
  char s[KX_NUMBER_CHARS];
  kx_buf_puts(b, format_value(v, s));
}

/* HELP text escapes backslash and newline; label values also the double quote. */
static void put_escaped(kx_buf *b, const char *s, int quote) {
  for (; *s; s++) {
    if (*s == '\\') kx_buf_puts(b, "\\\\");
    else if (*s == '\n') kx_buf_puts(b, "\\n");
    else if (*s == '"' && quote) kx_buf_puts(b, "\\\"");
    else kx_buf_putc(b, *s);
  }
}

static void put_header(kx_buf *b, const char *name, const char *help, const char *type) {
  kx_buf_printf(b, "# HELP %s ", name);
  put_escaped(b, help, 0);
  kx_buf_printf(b, "\n# TYPE %s %s\n", name, type);
}

/* name{labels[,le="bound"]} value. `le` is NULL for no bucket label. */
static void put_sample(kx_buf *b, const kiln_metric *m, const char *suffix, const series *s,
                       const char *le, double v) {
  kx_buf_puts(b, m->name);
  kx_buf_puts(b, suffix);
  if (m->n_labels || le) {
    kx_buf_putc(b, '{');
    for (int i = 0; i < m->n_labels; i++) {
      kx_buf_printf(b, "%s%s=\"", i ? "," : "", m->label_names[i]);
      put_escaped(b, s->values[i], 1);
      kx_buf_putc(b, '"');
    }
    if (le) kx_buf_printf(b, "%sle=\"%s\"", m->n_labels ? "," : "", le);
    kx_buf_putc(b, '}');
  }
  kx_buf_putc(b, ' ');
  put_value(b, v);
  kx_buf_putc(b, '\n');
}

static void put_family(kx_buf *b, kiln_metric *m) {
  pthread_mutex_lock(&m->lock);
  put_header(b, m->name, m->help, kind_names[m->kind]);
  for (const series *s = m->first; s; s = s->next) {
    if (m->kind != KIND_HISTOGRAM) {
      put_sample(b, m, "", s, NULL, s->value);
      continue;
    }
    uint64_t cumulative = 0;
    for (int i = 0; i <= m->n_bounds; i++) {
      char bound[KX_NUMBER_CHARS];
      const char *le = i < m->n_bounds ? format_value(m->bounds[i], bound) : "+Inf";
      cumulative += s->buckets[i];
      put_sample(b, m, "_bucket", s, le, (double)cumulative);
    }
    put_sample(b, m, "_sum", s, NULL, s->value);
    put_sample(b, m, "_count", s, NULL, (double)s->count);
  }
  pthread_mutex_unlock(&m->lock);
}

/* Reads a small /proc file into buf (NUL-terminated); 0 when it cannot be read. Not
 * kiln_file_read: procfs reports a size of 0 for these files. */
static int read_proc(const char *path, char *buf, size_t size) {
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  size_t n = fread(buf, 1, size - 1, f);
  fclose(f);
  buf[n] = '\0';
  return n > 0;
}

/* /proc/self/statm: sizes in pages; field 0 is the virtual size, 1 the resident set. */
static int read_statm(double *virtual_bytes, double *resident_bytes) {
  char text[256];
  unsigned long long size, resident;
  long page = sysconf(_SC_PAGESIZE);
  if (page <= 0 || !read_proc("/proc/self/statm", text, sizeof text) ||
      sscanf(text, "%llu %llu", &size, &resident) != 2)
    return 0;
  *virtual_bytes = (double)size * (double)page;
  *resident_bytes = (double)resident * (double)page;
  return 1;
}

size_t kiln_process_rss(void) {
  double virtual_bytes, resident_bytes;
  return read_statm(&virtual_bytes, &resident_bytes) ? (size_t)resident_bytes : 0;
}

/* The start time since boot in clock ticks, from /proc/self/stat (field 22; field 2, the command,
 * is in parentheses and may hold anything). */
static int read_start_time(double ticks_per_second, double *start_seconds) {
  char text[1024];
  if (!read_proc("/proc/self/stat", text, sizeof text)) return 0;
  const char *p = strrchr(text, ')');
  if (!p) return 0;
  unsigned long long starttime;
  /* after ')': fields 3..21 skipped, starttime (22) */
  if (sscanf(p + 1, "%*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %llu",
             &starttime) != 1)
    return 0;
  *start_seconds = (double)starttime / ticks_per_second;
  return 1;
}

/* User and system CPU time of all threads, to the nanosecond (/proc/self/stat counts 10 ms ticks,
 * which a young process may not have filled yet). */
static int read_cpu_seconds(double *out) {
  struct timespec ts;
  if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0) return 0;
  *out = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
  return 1;
}

/* The boot time in seconds since the epoch ("btime" in /proc/stat). */
static int read_boot_time(double *out) {
  FILE *f = fopen("/proc/stat", "r");
  if (!f) return 0;
  char line[512];
  int found = 0;
  while (!found && fgets(line, sizeof line, f)) {
    unsigned long long btime;
    if (sscanf(line, "btime %llu", &btime) == 1) {
      *out = (double)btime;
      found = 1;
    }
  }
  fclose(f);
  return found;
}

static int count_open_fds(double *out) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return 0;
  long n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  *out = (double)(n > 0 ? n - 1 : 0); /* not the descriptor opendir itself holds */
  return 1;
}

/* The "Threads:" line of /proc/self/status: every thread of the process, this one included. */
static int read_threads(double *out) {
  char text[4096]; /* the line comes well before the end of the first 4 KiB */
  if (!read_proc("/proc/self/status", text, sizeof text)) return 0;
  const char *line = strstr(text, "\nThreads:");
  unsigned long threads;
  if (!line || sscanf(line + 1, "Threads: %lu", &threads) != 1) return 0;
  *out = (double)threads;
  return 1;
}

static void put_process_metric(kx_buf *b, const char *name, const char *help, const char *type,
                               double v) {
  put_header(b, name, help, type);
  kx_buf_printf(b, "%s ", name);
  put_value(b, v);
  kx_buf_putc(b, '\n');
}

/* The standard process metrics of the Prometheus client libraries, in name order; each is left
 * out when its source (/proc, the CPU clock) cannot be read. */
static void put_process_metrics(kx_buf *b) {
  long ticks = sysconf(_SC_CLK_TCK);
  double cpu = 0, start = 0, boot = 0, fds = 0, threads = 0, virtual_bytes = 0, resident_bytes = 0;
  int have_statm = read_statm(&virtual_bytes, &resident_bytes);
  if (read_cpu_seconds(&cpu))
    put_process_metric(b, "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
                       "counter", cpu);
  if (count_open_fds(&fds))
    put_process_metric(b, "process_open_fds", "Number of open file descriptors.", "gauge", fds);
  if (have_statm)
    put_process_metric(b, "process_resident_memory_bytes", "Resident memory size in bytes.", "gauge",
                       resident_bytes);
  if (ticks > 0 && read_start_time((double)ticks, &start) && read_boot_time(&boot))
    put_process_metric(b, "process_start_time_seconds",
                       "Start time of the process since unix epoch in seconds.", "gauge", boot + start);
  if (read_threads(&threads)) put_process_metric(b, "process_threads", "Number of OS threads in the process.", "gauge", threads);
  if (have_statm)
    put_process_metric(b, "process_virtual_memory_bytes", "Virtual memory size in bytes.", "gauge",
                       virtual_bytes);
}

/* One GPU sample: name{gpu="index",name="device name"} value. */
static void put_gpu_sample(kx_buf *b, const char *name, const kx_gpu_reading *g, double v) {
  kx_buf_printf(b, "%s{gpu=\"%u\",name=\"", name, g->index);
  put_escaped(b, g->name, 1);
  kx_buf_puts(b, "\"} ");
  put_value(b, v);
  kx_buf_putc(b, '\n');
}

/* Each GPU family's reading of one device: 1 with *v set, 0 when the device did not report it. */
static int gpu_memory_total(const kx_gpu_reading *g, double *v) {
  *v = g->memory_total_bytes;
  return g->has_memory;
}
static int gpu_memory_used(const kx_gpu_reading *g, double *v) {
  *v = g->memory_used_bytes;
  return g->has_memory;
}
static int gpu_power(const kx_gpu_reading *g, double *v) {
  *v = g->power_watts;
  return g->has_power;
}
static int gpu_temperature(const kx_gpu_reading *g, double *v) {
  *v = g->temperature_celsius;
  return g->has_temperature;
}
static int gpu_utilization(const kx_gpu_reading *g, double *v) {
  *v = g->utilization;
  return g->has_utilization;
}

/* Sorted by name, as the registry's own families are. */
static const struct {
  const char *name, *help;
  int (*read)(const kx_gpu_reading *g, double *v);
} gpu_families[] = {
    {"kiln_gpu_memory_total_bytes", "Memory of the GPU in bytes (NVML).", gpu_memory_total},
    {"kiln_gpu_memory_used_bytes", "GPU memory allocated by all processes, in bytes (NVML).", gpu_memory_used},
    {"kiln_gpu_power_watts", "Power drawn by the GPU board in watts (NVML, read in milliwatts).", gpu_power},
    {"kiln_gpu_temperature_celsius", "Temperature of the GPU die in degrees Celsius (NVML).", gpu_temperature},
    {"kiln_gpu_utilization_ratio",
     "Fraction of the last sample period (1/6 s to 1 s) in which a kernel ran on the GPU (NVML).", gpu_utilization},
};

/* Every GPU NVML sees, read now: each family once with a sample per device that reported it; a
 * family no device reports (a driver without the function, a board without the sensor) is left
 * out whole. */
static void put_gpu_metrics(kx_buf *b, kx_nvml *nvml) {
  kx_gpu_reading gpus[KX_GPU_MAX];
  int n = kx_nvml_read(nvml, gpus, KX_GPU_MAX);
  for (size_t f = 0; f < sizeof gpu_families / sizeof gpu_families[0]; f++) {
    int header = 0;
    for (int i = 0; i < n; i++) {
      double v;
      if (!gpu_families[f].read(&gpus[i], &v)) continue;
      if (!header) put_header(b, gpu_families[f].name, gpu_families[f].help, "gauge");
      header = 1;
      put_gpu_sample(b, gpu_families[f].name, &gpus[i], v);
    }
  }
}

/* Loads NVML on the first call; its absence is the normal case on a machine without a GPU, so
 * it is told once, at debug level. Caller holds r->lock. */
static kx_nvml *registry_nvml(kiln_metrics *r) {
  if (r->nvml_tried) return r->nvml;
  r->nvml_tried = 1;
  kiln_status s = kx_nvml_open(NULL, &r->nvml);
  if (s) {
    kiln_log(KILN_LOG_DEBUG, "metrics: no GPU metrics: %s", kiln_status_message(s));
    kiln_status_free(s);
  }
  return r->nvml;
}

kiln_status kiln_metrics_render(kiln_metrics *r, char **text, size_t *len) {
  *text = NULL;
  if (len) *len = 0;
  if (!r) return kiln_error(KILN_INVALID_ARGUMENT, "metrics: render of a NULL registry");
  kx_buf b = {0};
  pthread_mutex_lock(&r->lock);
  for (size_t i = 0; i < r->count; i++) put_family(&b, r->families[i]);
  kx_nvml *nvml = registry_nvml(r);
  pthread_mutex_unlock(&r->lock);
  put_process_metrics(&b);
  if (nvml) put_gpu_metrics(&b, nvml); /* lives until kiln_metrics_free, which no render overlaps */
  *text = kx_buf_take(&b, len);
  if (!*text) return kiln_error(KILN_RESOURCE_EXHAUSTED, "metrics: out of memory rendering the exposition");
  return NULL;
}
