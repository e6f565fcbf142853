/* obs layer: the metrics registry, its Prometheus text exposition (checked line by line and by
 * prometheus_client's own parser when Debian's python3-prometheus-client is installed), the
 * process metrics, and the structured log fields that go with them. */
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "kiln/obs.h"
#include "test.h"

/* ---------------------------------------------------------------- helpers */

/* stderr redirected into a temporary file, to check what was logged. */
typedef struct capture {
  int fd;
  int saved;
  char path[32];
} capture;

static void capture_begin(capture *c) {
  fflush(stderr);
  snprintf(c->path, sizeof c->path, "/tmp/kiln_obs_XXXXXX");
  c->fd = mkstemp(c->path);
  c->saved = dup(STDERR_FILENO);
  CHECK(c->fd >= 0 && c->saved >= 0);
  if (c->fd >= 0) CHECK(dup2(c->fd, STDERR_FILENO) == STDERR_FILENO);
}

/* Restores stderr and returns what was written meanwhile (malloc'd, NUL-terminated). */
static char *capture_end(capture *c) {
  fflush(stderr);
  if (c->saved >= 0) {
    dup2(c->saved, STDERR_FILENO);
    close(c->saved);
  }
  char *text = NULL;
  size_t len = 0;
  if (c->fd >= 0) {
    kiln_status s = kiln_file_read(c->path, 0, (void **)&text, &len);
    CHECK(s == NULL);
    kiln_status_free(s);
    close(c->fd);
    unlink(c->path);
  }
  if (!text && (text = malloc(1))) text[0] = '\0';
  return text;
}

static int contains(const char *text, const char *part) { return text && strstr(text, part) != NULL; }

static char *render(kiln_metrics *r) {
  char *text = NULL;
  size_t len = 0;
  CHECK_OK(kiln_metrics_render(r, &text, &len));
  CHECK(text && strlen(text) == len);
  return text;
}

/* The value on the line that starts with `prefix` ("name{...} "), NAN when there is none. */
static double sample_value(const char *text, const char *prefix) {
  size_t n = strlen(prefix);
  for (const char *line = text; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL)
    if (strncmp(line, prefix, n) == 0) return strtod(line + n, NULL);
  return NAN;
}

/* ---------------------------------------------------------------- logging */

/* Runs first, before anything else logs, so the JSON format is the one read from the environment. */
static void test_log_fields(void) {
  unsetenv("KILN_LOG_FORMAT");
  kiln_log_set_level(KILN_LOG_INFO);
  CHECK(!kiln_log_enabled(KILN_LOG_DEBUG));
  CHECK(kiln_log_enabled(KILN_LOG_INFO) && kiln_log_enabled(KILN_LOG_ERROR));

  capture c;
  capture_begin(&c);
  const kiln_log_field fields[] = {
      {"model", "mnist"}, {"version", "2"}, {"request_id", NULL}, {"note", "say \"hi\"\n\\ok"}};
  kiln_log_fields(KILN_LOG_INFO, fields, 4, "loaded %d inputs", 3);
  kiln_log_fields(KILN_LOG_DEBUG, fields, 4, "not written");
  kiln_log(KILN_LOG_WARN, "plain");
  char *out = capture_end(&c);
  CHECK(strncmp(out, "{\"ts\":\"", 7) == 0);
  CHECK(contains(out, "\"level\":\"info\",\"msg\":\"loaded 3 inputs\",\"model\":\"mnist\",\"version\":\"2\","
                      "\"note\":\"say \\\"hi\\\"\\n\\\\ok\"}\n"));
  CHECK(!contains(out, "request_id"));
  CHECK(!contains(out, "not written"));
  CHECK(contains(out, "\"level\":\"warn\",\"msg\":\"plain\"}\n"));
  /* exactly two lines */
  const char *nl = strchr(out, '\n');
  CHECK(nl && strchr(nl + 1, '\n') && strchr(nl + 1, '\n')[1] == '\0');
  free(out);

  kiln_log_level level = KILN_LOG_ERROR;
  CHECK(kiln_log_level_from_name("debug", &level) == 0 && level == KILN_LOG_DEBUG);
  CHECK(kiln_log_level_from_name("warning", &level) == 0 && level == KILN_LOG_WARN);
  CHECK(kiln_log_level_from_name("warn", &level) == 0 && level == KILN_LOG_WARN);
  CHECK(kiln_log_level_from_name("error", &level) == 0 && level == KILN_LOG_ERROR);
  CHECK(kiln_log_level_from_name("verbose", &level) != 0 && level == KILN_LOG_ERROR);
  CHECK(kiln_log_level_from_name(NULL, &level) != 0);
}

/* ---------------------------------------------------------------- registry */

static void test_counter_and_gauge(void) {
  kiln_metrics *r = NULL;
  CHECK_OK(kiln_metrics_create(&r));
  kiln_metric *requests = kiln_metrics_counter(r, "kiln_requests_total", "Requests.", 0, NULL);
  CHECK(requests != NULL);
  CHECK(kiln_metric_value(requests, NULL) == 0);
  kiln_metric_add(requests, NULL, 1);
  kiln_metric_add(requests, NULL, 2.5);
  CHECK(kiln_metric_value(requests, NULL) == 3.5);

  /* a counter never goes down; set and observe are for other kinds (all logged) */
  capture c;
  capture_begin(&c);
  kiln_metric_add(requests, NULL, -1);
  kiln_metric_add(requests, NULL, NAN);
  kiln_metric_set(requests, NULL, 0);
  kiln_metric_observe(requests, NULL, 1);
  char *log = capture_end(&c);
  CHECK(kiln_metric_value(requests, NULL) == 3.5);
  CHECK(contains(log, "cannot grow by -1") && contains(log, "only gauges are set"));
  free(log);

  const char *labels[] = {"model", "version"};
  kiln_metric *loaded = kiln_metrics_gauge(r, "kiln_model_loaded", "Loaded versions.", 2, labels);
  CHECK(loaded != NULL);
  const char *mnist1[] = {"mnist", "1"}, *mnist2[] = {"mnist", "2"};
  CHECK(kiln_metric_value(loaded, mnist1) == 0);
  kiln_metric_set(loaded, mnist1, 1);
  kiln_metric_add(loaded, mnist2, 1);
  kiln_metric_add(loaded, mnist2, -3);
  CHECK(kiln_metric_value(loaded, mnist1) == 1);
  CHECK(kiln_metric_value(loaded, mnist2) == -2);

  /* a labelled family without a series renders its HELP and TYPE only */
  kiln_metric *empty = kiln_metrics_gauge(r, "kiln_empty", "Nothing yet.", 2, labels);
  char *text = render(r);
  CHECK(contains(text, "# HELP kiln_empty Nothing yet.\n# TYPE kiln_empty gauge\n# HELP kiln_model_loaded"));
  CHECK(contains(text, "kiln_model_loaded{model=\"mnist\",version=\"1\"} 1\n"
                       "kiln_model_loaded{model=\"mnist\",version=\"2\"} -2\n"));
  CHECK(contains(text, "kiln_requests_total 3.5\n"));
  free(text);
  CHECK(empty != NULL && kiln_metric_value(empty, mnist1) == 0);

  /* a NULL metric, as a failed registration returns, is a no-op everywhere */
  kiln_metric_add(NULL, mnist1, 1);
  kiln_metric_set(NULL, mnist1, 1);
  kiln_metric_observe(NULL, mnist1, 1);
  kiln_metric_remove(NULL, mnist1);
  CHECK(kiln_metric_value(NULL, mnist1) == 0);
  kiln_metrics_free(r);
  kiln_metrics_free(NULL);
}

/* A registry whose exposition test_exposition spells out line by line. */
static void fill_small_registry(kiln_metrics *r) {
  const char *req_labels[] = {"model", "code"};
  kiln_metric *requests = kiln_metrics_counter(r, "kiln_requests_total", "Requests served.", 2, req_labels);
  kiln_metric_add(requests, (const char *[]){"mnist", "200"}, 3);
  kiln_metric_add(requests, (const char *[]){"resnet", "500"}, 1);

  kiln_metric *queue = kiln_metrics_gauge(r, "kiln_queue_depth", "Requests waiting.\nPer model \\ version", 0, NULL);
  kiln_metric_set(queue, NULL, 2.5);

  const char *model[] = {"model"};
  const double bounds[] = {0.005, 0.1, 1};
  kiln_metric *latency = kiln_metrics_histogram(r, "kiln_latency_seconds", "Latency.", 1, model, 3, bounds);
  const char *mnist[] = {"mnist"};
  kiln_metric_observe(latency, mnist, 0.00390625); /* binary fractions: the sum is exact */
  kiln_metric_observe(latency, mnist, 0.0625);
  kiln_metric_observe(latency, mnist, 0.0625);
  kiln_metric_observe(latency, mnist, 2);

  const char *v[] = {"v"};
  kiln_metric *special = kiln_metrics_gauge(r, "b_values", "Number formats.", 1, v);
  kiln_metric_set(special, (const char *[]){"small"}, -1e-7);
  kiln_metric_set(special, (const char *[]){"big"}, 1e20);
  kiln_metric_set(special, (const char *[]){"pi"}, 3.141592653589793);
  kiln_metric_set(special, (const char *[]){"sum"}, 0.1 + 0.2);
  kiln_metric_set(special, (const char *[]){"inf"}, INFINITY);
  kiln_metric_set(special, (const char *[]){"ninf"}, -INFINITY);
  kiln_metric_set(special, (const char *[]){"nan"}, NAN);
  kiln_metric_set(special, (const char *[]){"int"}, -42);
  kiln_metric_set(special, (const char *[]){"zero"}, -0.0);

  kiln_metric *esc = kiln_metrics_gauge(r, "a_escaped", "Label values with \\, \" and newlines.", 1, v);
  kiln_metric_set(esc, (const char *[]){"a\\b\"c\nd"}, 1);
}

static const char small_exposition[] =
    "# HELP a_escaped Label values with \\\\, \" and newlines.\n"
    "# TYPE a_escaped gauge\n"
    "a_escaped{v=\"a\\\\b\\\"c\\nd\"} 1\n"
    "# HELP b_values Number formats.\n"
    "# TYPE b_values gauge\n"
    "b_values{v=\"small\"} -1e-07\n"
    "b_values{v=\"big\"} 1e+20\n"
    "b_values{v=\"pi\"} 3.141592653589793\n"
    "b_values{v=\"sum\"} 0.30000000000000004\n"
    "b_values{v=\"inf\"} +Inf\n"
    "b_values{v=\"ninf\"} -Inf\n"
    "b_values{v=\"nan\"} NaN\n"
    "b_values{v=\"int\"} -42\n"
    "b_values{v=\"zero\"} 0\n"
    "# HELP kiln_latency_seconds Latency.\n"
    "# TYPE kiln_latency_seconds histogram\n"
    "kiln_latency_seconds_bucket{model=\"mnist\",le=\"0.005\"} 1\n"
    "kiln_latency_seconds_bucket{model=\"mnist\",le=\"0.1\"} 3\n"
    "kiln_latency_seconds_bucket{model=\"mnist\",le=\"1\"} 3\n"
    "kiln_latency_seconds_bucket{model=\"mnist\",le=\"+Inf\"} 4\n"
    "kiln_latency_seconds_sum{model=\"mnist\"} 2.12890625\n"
    "kiln_latency_seconds_count{model=\"mnist\"} 4\n"
    "# HELP kiln_queue_depth Requests waiting.\\nPer model \\\\ version\n"
    "# TYPE kiln_queue_depth gauge\n"
    "kiln_queue_depth 2.5\n"
    "# HELP kiln_requests_total Requests served.\n"
    "# TYPE kiln_requests_total counter\n"
    "kiln_requests_total{model=\"mnist\",code=\"200\"} 3\n"
    "kiln_requests_total{model=\"resnet\",code=\"500\"} 1\n"
    "# HELP process_cpu_seconds_total ";

static void test_exposition(void) {
  kiln_metrics *r = NULL;
  CHECK_OK(kiln_metrics_create(&r));
  fill_small_registry(r);
  char *text = render(r);
  size_t n = strlen(small_exposition);
  int same = text && strncmp(text, small_exposition, n) == 0;
  CHECK(same);
  if (!same && text) fprintf(stderr, "--- expected\n%s\n--- got\n%.*s\n", small_exposition, (int)n + 200, text);
  free(text);
  kiln_metrics_free(r);
}

static void test_histogram(void) {
  CHECK(kiln_latency_bucket_count == 16);
  CHECK(kiln_latency_buckets[0] == 0.0001 && kiln_latency_buckets[15] == 10);
  for (int i = 1; i < kiln_latency_bucket_count; i++) CHECK(kiln_latency_buckets[i] > kiln_latency_buckets[i - 1]);

  kiln_metrics *r = NULL;
  CHECK_OK(kiln_metrics_create(&r));
  kiln_metric *h = kiln_metrics_histogram(r, "kiln_request_seconds", "Time per request.", 0, NULL,
                                          kiln_latency_bucket_count, kiln_latency_buckets);
  CHECK(h != NULL);
  /* without labels the series exists, at zero, from the start */
  char *text = render(r);
  CHECK(contains(text, "kiln_request_seconds_bucket{le=\"0.0001\"} 0\nkiln_request_seconds_bucket{le=\"0.00025\"} 0\n"));
  CHECK(contains(text, "kiln_request_seconds_bucket{le=\"10\"} 0\nkiln_request_seconds_bucket{le=\"+Inf\"} 0\n"
                       "kiln_request_seconds_sum 0\nkiln_request_seconds_count 0\n"));
  free(text);

  kiln_metric_observe(h, NULL, 0.0001); /* a bound is inclusive (le) */
  kiln_metric_observe(h, NULL, 0.003);
  kiln_metric_observe(h, NULL, 0.003);
  kiln_metric_observe(h, NULL, 7);
  kiln_metric_observe(h, NULL, 100); /* past every bound: +Inf only */
  CHECK(kiln_metric_value(h, NULL) == 5);
  text = render(r);
  const double want[] = {1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4, 5};
  const char *les[] = {"0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
                       "0.1",    "0.25",    "0.5",    "1",     "2.5",    "5",     "10",   "+Inf"};
  for (int i = 0; i < 17; i++) {
    char prefix[96];
    snprintf(prefix, sizeof prefix, "kiln_request_seconds_bucket{le=\"%s\"} ", les[i]);
    CHECK_NEAR(sample_value(text, prefix), want[i], 0);
  }
  CHECK_NEAR(sample_value(text, "kiln_request_seconds_sum "), 0.0001 + 0.003 + 0.003 + 7 + 100, 1e-12);
  CHECK_NEAR(sample_value(text, "kiln_request_seconds_count "), 5, 0);
  free(text);

  /* add and set are not for histograms */
  capture c;
  capture_begin(&c);
  kiln_metric_add(h, NULL, 1);
  kiln_metric_set(h, NULL, 1);
  free(capture_end(&c));
  CHECK(kiln_metric_value(h, NULL) == 5);
  kiln_metrics_free(r);
}

/* Every invalid registration returns NULL and says why in the log. */
static void test_invalid_names(void) {
  kiln_metrics *r = NULL;
  CHECK_OK(kiln_metrics_create(&r));
  const char *ok[] = {"model"};
  const char *bad_start[] = {"1model"}, *colon[] = {"a:b"}, *dash[] = {"a-b"}, *le[] = {"le"};
  const char *twice[] = {"model", "model"}, *null_name[] = {NULL};
  const char *nine[] = {"a", "b", "c", "d", "e", "f", "g", "h", "i"};
  const double increasing[] = {1, 2}, flat[] = {1, 1}, nan_bound[] = {1, NAN}, inf_bound[] = {1, INFINITY};

  capture c;
  capture_begin(&c);
  CHECK(!kiln_metrics_gauge(r, "", "h", 0, NULL));
  CHECK(!kiln_metrics_gauge(r, NULL, "h", 0, NULL));
  CHECK(!kiln_metrics_gauge(r, "1abc", "h", 0, NULL));
  CHECK(!kiln_metrics_gauge(r, "a-b", "h", 0, NULL));
  CHECK(!kiln_metrics_gauge(r, "a b", "h", 0, NULL));
  CHECK(!kiln_metrics_gauge(r, "caf\xc3\xa9", "h", 0, NULL));
  CHECK(!kiln_metrics_counter(r, "kiln_requests", "no _total", 0, NULL));
  CHECK(!kiln_metrics_gauge(r, "process_open_fds", "reserved", 0, NULL));
  CHECK(!kiln_metrics_gauge(r, "g", "h", 1, bad_start));
  CHECK(!kiln_metrics_gauge(r, "g", "h", 1, colon));
  CHECK(!kiln_metrics_gauge(r, "g", "h", 1, dash));
  CHECK(!kiln_metrics_gauge(r, "g", "h", 1, null_name));
  CHECK(!kiln_metrics_gauge(r, "g", "h", 1, NULL));
  CHECK(!kiln_metrics_gauge(r, "g", "h", 2, twice));
  CHECK(!kiln_metrics_gauge(r, "g", "h", 9, nine));
  CHECK(!kiln_metrics_gauge(r, "g", "h", -1, NULL));
  CHECK(!kiln_metrics_histogram(r, "hist", "h", 1, le, 2, increasing));
  CHECK(!kiln_metrics_histogram(r, "hist", "h", 0, NULL, 2, flat));
  CHECK(!kiln_metrics_histogram(r, "hist", "h", 0, NULL, 2, nan_bound));
  CHECK(!kiln_metrics_histogram(r, "hist", "h", 0, NULL, 2, inf_bound));
  CHECK(!kiln_metrics_histogram(r, "hist", "h", 0, NULL, 2, NULL));
  CHECK(!kiln_metrics_gauge(NULL, "g", "h", 0, NULL));
  char *log = capture_end(&c);
  CHECK(contains(log, "invalid metric name '1abc'"));
  CHECK(contains(log, "does not end in \\\"_total\\\""));
  CHECK(contains(log, "invalid label name 'a:b'"));
  CHECK(contains(log, "'le' is reserved"));
  CHECK(contains(log, "strictly increasing"));
  CHECK(contains(log, "\"level\":\"error\""));
  free(log);

  /* valid edge cases: colons in metric names, underscores first, 8 labels, a histogram of only +Inf */
  CHECK(kiln_metrics_gauge(r, "ns:sub_metric", "h", 1, ok) != NULL);
  CHECK(kiln_metrics_gauge(r, "_private", "", 8, nine) != NULL);
  CHECK(kiln_metrics_gauge(r, "le_ok", "le is fine outside histograms", 1, le) != NULL);
  CHECK(kiln_metrics_histogram(r, "only_inf", NULL, 0, NULL, 0, NULL) != NULL);
  char *text = render(r);
  CHECK(contains(text, "# HELP only_inf \n# TYPE only_inf histogram\nonly_inf_bucket{le=\"+Inf\"} 0\n"));
  free(text);
  kiln_metrics_free(r);
}

static void test_reregistration(void) {
  kiln_metrics *r = NULL;
  CHECK_OK(kiln_metrics_create(&r));
  const char *labels[] = {"model", "version"}, *other[] = {"model", "signature"};
  const double b1[] = {1, 2}, b2[] = {1, 3};
  kiln_metric *c1 = kiln_metrics_counter(r, "x_total", "first help", 2, labels);
  kiln_metric *c2 = kiln_metrics_counter(r, "x_total", "second help", 2, labels);
  CHECK(c1 != NULL && c1 == c2);
  kiln_metric *h1 = kiln_metrics_histogram(r, "h_seconds", "h", 0, NULL, 2, b1);
  CHECK(h1 != NULL && h1 == kiln_metrics_histogram(r, "h_seconds", "h", 0, NULL, 2, b1));

  capture c;
  capture_begin(&c);
  CHECK(!kiln_metrics_counter(r, "x_total", "h", 2, other));
  CHECK(!kiln_metrics_counter(r, "x_total", "h", 1, labels));
  CHECK(!kiln_metrics_gauge(r, "x_total", "h", 2, labels));
  CHECK(!kiln_metrics_histogram(r, "h_seconds", "h", 0, NULL, 2, b2));
  CHECK(!kiln_metrics_histogram(r, "h_seconds", "h", 0, NULL, 1, b1));
  char *log = capture_end(&c);
  CHECK(contains(log, "'x_total' is already registered as a counter"));
  free(log);

  kiln_metric_add(c1, (const char *[]){"m", "1"}, 2);
  kiln_metric_add(c2, (const char *[]){"m", "1"}, 3);
  CHECK(kiln_metric_value(c1, (const char *[]){"m", "1"}) == 5);
  char *text = render(r);
  CHECK(contains(text, "# HELP x_total first help\n"));
  /* one family, not two */
  const char *first = strstr(text, "# TYPE x_total");
  CHECK(first && !strstr(first + 1, "# TYPE x_total"));
  free(text);
  kiln_metrics_free(r);
}

static void test_remove(void) {
  kiln_metrics *r = NULL;
  CHECK_OK(kiln_metrics_create(&r));
  const char *labels[] = {"model", "version"};
  kiln_metric *g = kiln_metrics_gauge(r, "kiln_version_loaded", "h", 2, labels);
  const char *v1[] = {"m", "1"}, *v2[] = {"m", "2"}, *v3[] = {"m", "3"}, *v4[] = {"m", "4"};
  kiln_metric_set(g, v1, 1);
  kiln_metric_set(g, v2, 2);
  kiln_metric_set(g, v3, 3);
  kiln_metric_remove(g, v2); /* middle */
  kiln_metric_remove(g, v3); /* last: the next series goes after v1 */
  kiln_metric_remove(g, v4); /* absent: nothing happens */
  kiln_metric_set(g, v4, 4);
  CHECK(kiln_metric_value(g, v2) == 0 && kiln_metric_value(g, v3) == 0);
  char *text = render(r);
  CHECK(contains(text, "# TYPE kiln_version_loaded gauge\n"
                       "kiln_version_loaded{model=\"m\",version=\"1\"} 1\n"
                       "kiln_version_loaded{model=\"m\",version=\"4\"} 4\n# HELP"));
  free(text);
  kiln_metric_remove(g, v1); /* first */
  kiln_metric_remove(g, v4);
  kiln_metric_set(g, v2, 5); /* a series removed comes back from zero */
  kiln_metric_add(g, v3, 1);
  text = render(r);
  CHECK(contains(text, "kiln_version_loaded gauge\n"
                       "kiln_version_loaded{model=\"m\",version=\"2\"} 5\n"
                       "kiln_version_loaded{model=\"m\",version=\"3\"} 1\n# HELP"));
  free(text);

  const double bounds[] = {1};
  kiln_metric *h = kiln_metrics_histogram(r, "kiln_h", "h", 2, labels, 1, bounds);
  kiln_metric_observe(h, v1, 0.5);
  kiln_metric_remove(h, v1);
  CHECK(kiln_metric_value(h, v1) == 0);
  text = render(r);
  CHECK(!contains(text, "kiln_h_bucket"));
  free(text);

  /* NULL matches any value: every series of version 1, whatever the other labels say */
  const char *names3[] = {"model", "version", "code"};
  kiln_metric *c = kiln_metrics_counter(r, "kiln_c_total", "h", 3, names3);
  const char *a[] = {"m", "1", "200"}, *b[] = {"m", "1", "400"}, *keep[] = {"m", "2", "200"}, *other[] = {"n", "1", "200"};
  kiln_metric_add(c, a, 1);
  kiln_metric_add(c, b, 1);
  kiln_metric_add(c, keep, 1);
  kiln_metric_add(c, other, 1);
  const char *version1[] = {"m", "1", NULL};
  kiln_metric_remove(c, version1);
  CHECK(kiln_metric_value(c, a) == 0 && kiln_metric_value(c, b) == 0);
  CHECK(kiln_metric_value(c, keep) == 1 && kiln_metric_value(c, other) == 1);
  kiln_metrics_free(r);
}

/* ---------------------------------------------------------------- threads */

enum { THREADS = 8, PER_THREAD = 100000 };

typedef struct worker {
  kiln_metric *counter;
  kiln_metric *histogram;
  int index;
} worker;

static void *work(void *arg) {
  const worker *w = arg;
  char own[16];
  snprintf(own, sizeof own, "t%d", w->index);
  const char *shared[] = {"shared"}, *mine[] = {own};
  for (int i = 0; i < PER_THREAD; i++) {
    kiln_metric_add(w->counter, shared, 1);
    kiln_metric_add(w->counter, mine, 1); /* each thread's series is created concurrently */
    kiln_metric_observe(w->histogram, shared, (i % 4) * 0.25); /* 0, 0.25, 0.5, 0.75: exact sums */
  }
  return NULL;
}

static void test_threads(void) {
  kiln_metrics *r = NULL;
  CHECK_OK(kiln_metrics_create(&r));
  const char *labels[] = {"who"};
  const double bounds[] = {0.1, 0.3, 0.6};
  worker workers[THREADS];
  pthread_t threads[THREADS];
  kiln_metric *counter = kiln_metrics_counter(r, "ops_total", "h", 1, labels);
  kiln_metric *histogram = kiln_metrics_histogram(r, "op_seconds", "h", 1, labels, 3, bounds);
  int started = 0;
  for (int t = 0; t < THREADS; t++) {
    workers[t] = (worker){counter, histogram, t};
    if (pthread_create(&threads[t], NULL, work, &workers[t]) == 0) started++;
  }
  CHECK(started == THREADS);
  for (int t = 0; t < started; t++) pthread_join(threads[t], NULL);

  const char *shared[] = {"shared"};
  CHECK(kiln_metric_value(counter, shared) == (double)THREADS * PER_THREAD);
  for (int t = 0; t < THREADS; t++) {
    char own[16];
    snprintf(own, sizeof own, "t%d", t);
    CHECK(kiln_metric_value(counter, (const char *[]){own}) == PER_THREAD);
  }
  CHECK(kiln_metric_value(histogram, shared) == (double)THREADS * PER_THREAD);
  char *text = render(r);
  const double quarter = THREADS * PER_THREAD / 4.0;
  CHECK_NEAR(sample_value(text, "op_seconds_bucket{who=\"shared\",le=\"0.1\"} "), quarter, 0);
  CHECK_NEAR(sample_value(text, "op_seconds_bucket{who=\"shared\",le=\"0.3\"} "), 2 * quarter, 0);
  CHECK_NEAR(sample_value(text, "op_seconds_bucket{who=\"shared\",le=\"0.6\"} "), 3 * quarter, 0);
  CHECK_NEAR(sample_value(text, "op_seconds_bucket{who=\"shared\",le=\"+Inf\"} "), 4 * quarter, 0);
  CHECK_NEAR(sample_value(text, "op_seconds_sum{who=\"shared\"} "), quarter * 1.5, 0);
  CHECK_NEAR(sample_value(text, "op_seconds_count{who=\"shared\"} "), 4 * quarter, 0);
  free(text);
  kiln_metrics_free(r);
}

/* ---------------------------------------------------------------- process metrics */

static void test_process_metrics(void) {
  kiln_metrics *r = NULL;
  CHECK_OK(kiln_metrics_create(&r));
  size_t rss_before = kiln_process_rss();
  char *text = render(r);
  size_t rss_after = kiln_process_rss();
  const char *names[] = {"process_cpu_seconds_total counter", "process_open_fds gauge",
                         "process_resident_memory_bytes gauge", "process_start_time_seconds gauge",
                         "process_threads gauge", "process_virtual_memory_bytes gauge"};
  for (int i = 0; i < 6; i++) {
    char type[96];
    snprintf(type, sizeof type, "# TYPE %s\n", names[i]);
    CHECK(contains(text, type));
  }
  /* an empty registry renders the process metrics alone, HELP first */
  CHECK(text && strncmp(text, "# HELP process_cpu_seconds_total ", 33) == 0);

  double rss = sample_value(text, "process_resident_memory_bytes ");
  CHECK(rss > 0);
  CHECK(rss_before > 0 && rss_after > 0);
  CHECK(rss >= rss_before / 2.0 && rss <= rss_after * 2.0);
  double vsize = sample_value(text, "process_virtual_memory_bytes ");
  CHECK(vsize >= rss);
  double cpu = sample_value(text, "process_cpu_seconds_total ");
  CHECK(cpu >= 0 && cpu < 3600);
  double fds = sample_value(text, "process_open_fds ");
  CHECK(fds >= 3 && fds < 10000); /* stdin, stdout, stderr at least */
  double start = sample_value(text, "process_start_time_seconds ");
  double now = (double)time(NULL);
  CHECK(start > now - 86400 && start <= now + 2); /* this test started less than a day ago */
  CHECK(sample_value(text, "process_threads ") >= 1);
  free(text);
  kiln_metrics_free(r);
}

/* Threads parked on a barrier until the main thread has counted them. */
static void *park(void *arg) {
  pthread_barrier_wait(arg);
  pthread_barrier_wait(arg);
  return NULL;
}

/* process_threads follows the threads this test starts and joins. */
static void test_process_threads(void) {
  enum { EXTRA = 5 };
  kiln_metrics *r = NULL;
  CHECK_OK(kiln_metrics_create(&r));
  char *text = render(r);
  double before = sample_value(text, "process_threads ");
  free(text);
  pthread_barrier_t barrier;
  pthread_barrier_init(&barrier, NULL, EXTRA + 1);
  pthread_t threads[EXTRA];
  int started = 0;
  for (int i = 0; i < EXTRA; i++) started += pthread_create(&threads[i], NULL, park, &barrier) == 0;
  CHECK(started == EXTRA);
  if (started == EXTRA) {
    pthread_barrier_wait(&barrier); /* all of them are running */
    text = render(r);
    CHECK_NEAR(sample_value(text, "process_threads "), before + EXTRA, 0);
    free(text);
    pthread_barrier_wait(&barrier);
    for (int i = 0; i < EXTRA; i++) pthread_join(threads[i], NULL);
  }
  pthread_barrier_destroy(&barrier);
  text = render(r);
  CHECK_NEAR(sample_value(text, "process_threads "), before, 0);
  free(text);
  kiln_metrics_free(r);
}

/* ---------------------------------------------------------------- an independent parser */

#define PYTHON "/usr/bin/python3"

/* Parses the file with prometheus_client and prints: families, samples, untyped families (lines
 * the parser could not attribute to their family), then a_escaped's label value as JSON. */
static const char parse_script[] =
    "import sys, json\n"
    "from prometheus_client.parser import text_string_to_metric_families as parse\n"
    "families = list(parse(open(sys.argv[1]).read()))\n"
    "print(len(families), sum(len(f.samples) for f in families), sum(f.type == \"untyped\" for f in families))\n"
    "print(json.dumps([s.labels[\"v\"] for f in families for s in f.samples if s.name == \"a_escaped\"]))\n";

static void test_python_parser(void) {
  if (system(PYTHON " -c 'import prometheus_client' >/dev/null 2>&1") != 0) {
    fprintf(stderr, "note: " PYTHON " has no prometheus_client; the independent parser check is skipped\n");
    return;
  }
  /* no GPU families, whatever the machine has: their own test is test_obs_nvml */
  CHECK(setenv("KILN_NVML_LIBRARY", "/nonexistent/libnvidia-ml.so.1", 1) == 0);
  kiln_metrics *r = NULL;
  CHECK_OK(kiln_metrics_create(&r));
  fill_small_registry(r);
  const char *labels[] = {"model"};
  kiln_metric *latency = kiln_metrics_histogram(r, "kiln_request_seconds", "Latency.", 1, labels,
                                                kiln_latency_bucket_count, kiln_latency_buckets);
  kiln_metric_observe(latency, labels, 0.02);
  char *text = render(r);
  kiln_metrics_free(r);
  CHECK(unsetenv("KILN_NVML_LIBRARY") == 0);
  if (!text) return;

  /* what the parser should find: one family per TYPE line, one sample per other line */
  int families = 0, samples = 0;
  for (const char *line = text; *line;) {
    if (strncmp(line, "# TYPE ", 7) == 0) families++;
    else if (line[0] != '#') samples++;
    const char *nl = strchr(line, '\n');
    line = nl ? nl + 1 : line + strlen(line);
  }
  CHECK(families == 12 && samples > 40);

  char path[] = "/tmp/kiln_obs_XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  if (fd < 0) {
    free(text);
    return;
  }
  FILE *f = fdopen(fd, "w");
  CHECK(f && fputs(text, f) >= 0);
  if (f) fclose(f);
  free(text);

  /* the script holds no single quote, so the shell passes it on untouched */
  size_t cmd_size = sizeof parse_script + 128;
  char *cmd = malloc(cmd_size);
  snprintf(cmd, cmd_size, PYTHON " -c '%s' %s", parse_script, path);
  FILE *p = popen(cmd, "r");
  CHECK(p != NULL);
  char line1[128] = "", line2[256] = "";
  if (p) {
    if (!fgets(line1, sizeof line1, p)) line1[0] = '\0';
    if (!fgets(line2, sizeof line2, p)) line2[0] = '\0';
    CHECK(pclose(p) == 0);
  }
  free(cmd);
  unlink(path);

  int got_families = -1, got_samples = -1, untyped = -1;
  CHECK(sscanf(line1, "%d %d %d", &got_families, &got_samples, &untyped) == 3);
  CHECK(got_families == families);
  CHECK(got_samples == samples);
  CHECK(untyped == 0);
  if (got_families != families || got_samples != samples || untyped != 0)
    fprintf(stderr, "parser found %s; expected %d families, %d samples\n", line1, families, samples);
  /* the escaped label value reads back as the original */
  CHECK(strcmp(line2, "[\"a\\\\b\\\"c\\nd\"]\n") == 0);
}

TEST_MAIN(TEST(test_log_fields), TEST(test_counter_and_gauge), TEST(test_exposition), TEST(test_histogram),
          TEST(test_invalid_names), TEST(test_reregistration), TEST(test_remove), TEST(test_threads),
          TEST(test_process_metrics), TEST(test_process_threads), TEST(test_python_parser))
