/* `kiln train --metrics-port`: the run's progress as Prometheus metrics on /metrics (rank 0), so
 * that the alerts and dashboards that watch the server watch training too. */
#include "cli/train_metrics.h"

#include "kiln/net.h"
#include "kiln/obs.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct train_metrics {
  kiln_metrics *registry;
  kiln_http_server *http;
  kiln_metric *epoch, *steps, *samples, *loss, *accuracy, *val_loss, *val_accuracy, *rate, *lr, *last_step, *step_seconds;
  kiln_metric *rss;
  double last_step_at;
};

static void handle(void *ctx, kiln_http_exchange *ex, const kiln_http_request *req) {
  train_metrics *m = ctx;
  if (strcmp(req->path, "/metrics") != 0) {
    kiln_http_respond_error(ex, 404, "not found: training serves /metrics only");
    return;
  }
  if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
    kiln_http_respond_error(ex, 405, "/metrics takes GET");
    return;
  }
  kiln_metric_set(m->rss, NULL, (double)kiln_process_rss());
  char *text;
  size_t len;
  kiln_status s = kiln_metrics_render(m->registry, &text, &len);
  if (s) {
    kiln_http_respond_error(ex, 500, kiln_status_message(s));
    kiln_status_free(s);
    return;
  }
  kiln_http_respond(ex, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, text, len);
}

kiln_status train_metrics_start(const char *host, int port, train_metrics **out) {
  *out = NULL;
  train_metrics *m = calloc(1, sizeof *m);
  if (!m) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  kiln_status s = kiln_metrics_create(&m->registry);
  if (s) {
    free(m);
    return s;
  }
  kiln_metrics *r = m->registry;
  m->epoch = kiln_metrics_gauge(r, "kiln_train_epoch", "Epoch in progress (1-based).", 0, NULL);
  m->steps = kiln_metrics_counter(r, "kiln_train_steps_total", "Optimizer steps taken.", 0, NULL);
  m->samples = kiln_metrics_counter(r, "kiln_train_samples_total", "Training samples processed, all ranks.", 0, NULL);
  m->loss = kiln_metrics_gauge(r, "kiln_train_loss", "Mean training loss over the epoch so far.", 0, NULL);
  m->accuracy = kiln_metrics_gauge(r, "kiln_train_accuracy", "Training accuracy over the epoch so far.", 0, NULL);
  m->val_loss = kiln_metrics_gauge(r, "kiln_train_val_loss", "Validation loss after the last epoch.", 0, NULL);
  m->val_accuracy = kiln_metrics_gauge(r, "kiln_train_val_accuracy", "Validation accuracy after the last epoch.", 0, NULL);
  m->rate = kiln_metrics_gauge(r, "kiln_train_samples_per_second", "Training throughput over the epoch so far, all ranks.", 0, NULL);
  m->lr = kiln_metrics_gauge(r, "kiln_train_learning_rate", "The learning rate of the next step.", 0, NULL);
  m->last_step = kiln_metrics_gauge(r, "kiln_train_last_step_timestamp_seconds", "Unix time of the last step (stalled runs stop it).", 0,
                                    NULL);
  m->step_seconds = kiln_metrics_histogram(r, "kiln_train_step_seconds", "Wall time between optimizer steps.", 0, NULL,
                                           kiln_latency_bucket_count, kiln_latency_buckets);
  m->rss = kiln_metrics_gauge(r, "kiln_process_resident_memory_bytes", "Resident set size of the trainer.", 0, NULL);
  kiln_http_options o = {.host = host, .port = port, .threads = 1};
  if ((s = kiln_http_server_start(&o, handle, m, &m->http))) {
    train_metrics_stop(m);
    return kiln_status_prefix(s, "--metrics-port: ");
  }
  *out = m;
  return NULL;
}

int train_metrics_port(const train_metrics *m) { return kiln_http_server_port(m->http); }

void train_metrics_update(train_metrics *m, const kiln_train_progress *p) {
  if (!m) return;
  double now = kiln_now();
  struct timespec wall;
  clock_gettime(CLOCK_REALTIME, &wall);
  kiln_metric_set(m->epoch, NULL, (double)(p->epoch + 1));
  if (!p->end_of_epoch) {
    kiln_metric_add(m->steps, NULL, 1);
    kiln_metric_add(m->samples, NULL, (double)p->step_samples);
    if (m->last_step_at > 0) kiln_metric_observe(m->step_seconds, NULL, now - m->last_step_at);
    m->last_step_at = now;
    kiln_metric_set(m->last_step, NULL, (double)wall.tv_sec + wall.tv_nsec * 1e-9);
  }
  kiln_metric_set(m->loss, NULL, p->loss);
  if (!isnan(p->accuracy)) kiln_metric_set(m->accuracy, NULL, p->accuracy);
  if (p->end_of_epoch && !isnan(p->val_loss)) kiln_metric_set(m->val_loss, NULL, p->val_loss);
  if (p->end_of_epoch && !isnan(p->val_accuracy)) kiln_metric_set(m->val_accuracy, NULL, p->val_accuracy);
  kiln_metric_set(m->rate, NULL, p->samples_per_s);
  kiln_metric_set(m->lr, NULL, p->learning_rate);
}

void train_metrics_stop(train_metrics *m) {
  if (!m) return;
  if (m->http) {
    kiln_http_server_stop_accepting(m->http);
    kiln_http_server_free(m->http);
  }
  kiln_metrics_free(m->registry);
  free(m);
}
