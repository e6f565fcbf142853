/* `kiln train`: trains a run file's model (the seed's Fashion-MNIST classifier by default), with a
 * progress bar on a terminal or JSON log lines otherwise, final metrics as JSON, and export into
 * the next version folder of a model repository (through the registry's push, with lineage). */
#include "cli/cli.h"
#include "cli/train_metrics.h"
#include "kiln/net.h"
#include "kiln/registry.h"
#include "kiln/train.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

typedef struct progress_view {
  int tty;
  int64_t log_every;
  double last_draw;
  train_metrics *metrics; /* --metrics-port, NULL without */
} progress_view;

static void format_rate(double r, char *buf, size_t size) {
  if (r >= 1e6) snprintf(buf, size, "%.2fM", r / 1e6);
  else if (r >= 1e3) snprintf(buf, size, "%.1fk", r / 1e3);
  else snprintf(buf, size, "%.0f", r);
}

static void draw_bar(const kiln_train_progress *p) {
  char rate[32], acc[32] = "", eta[32] = "";
  format_rate(p->samples_per_s, rate, sizeof rate);
  if (!isnan(p->accuracy)) snprintf(acc, sizeof acc, " acc %.4f", p->accuracy);
  int width = 24, filled = p->steps > 0 ? (int)(width * p->step / p->steps) : 0;
  char bar[32];
  for (int i = 0; i < width; i++) bar[i] = i < filled ? '=' : i == filled ? '>' : ' ';
  bar[width] = 0;
  if (p->steps > 0 && p->step > 0 && p->step < p->steps)
    snprintf(eta, sizeof eta, " ETA %.0fs", p->elapsed_s / (double)p->step * (double)(p->steps - p->step));
  if (p->steps > 0) fprintf(stderr, "\repoch %lld/%lld [%s] %lld/%lld loss %.4f%s %s samples/s%s\033[K", (long long)p->epoch + 1,
                            (long long)p->epochs, bar, (long long)p->step, (long long)p->steps, p->loss, acc, rate, eta);
  else fprintf(stderr, "\repoch %lld/%lld step %lld loss %.4f%s %s samples/s\033[K", (long long)p->epoch + 1, (long long)p->epochs,
               (long long)p->step, p->loss, acc, rate);
}

static void on_progress(void *arg, const kiln_train_progress *p) {
  progress_view *v = arg;
  train_metrics_update(v->metrics, p);
  char loss[32], acc[32], rate[32], lr[32], vloss[32], vacc[32], epoch[32], step[32], gpu[32];
  if (v->tty) {
    double now = kiln_now();
    if (p->end_of_epoch || now - v->last_draw >= 0.1) {
      v->last_draw = now;
      draw_bar(p);
    }
    if (p->end_of_epoch) {
      if (!isnan(p->val_loss)) fprintf(stderr, " - val_loss %.4f", p->val_loss);
      if (!isnan(p->val_accuracy)) fprintf(stderr, " val_acc %.4f", p->val_accuracy);
      fputc('\n', stderr);
    }
    return;
  }
  if (!p->end_of_epoch && p->global_step % v->log_every != 0) return;
  snprintf(epoch, sizeof epoch, "%lld", (long long)p->epoch + 1);
  snprintf(step, sizeof step, "%lld", (long long)p->global_step);
  snprintf(loss, sizeof loss, "%.6g", p->loss);
  snprintf(acc, sizeof acc, "%.6g", p->accuracy);
  snprintf(rate, sizeof rate, "%.1f", p->samples_per_s);
  snprintf(lr, sizeof lr, "%.6g", p->learning_rate);
  snprintf(vloss, sizeof vloss, "%.6g", p->val_loss);
  snprintf(vacc, sizeof vacc, "%.6g", p->val_accuracy);
  snprintf(gpu, sizeof gpu, "%.6g", p->gpu_utilization);
  kiln_log_field fields[] = {{"epoch", epoch},
                             {"step", step},
                             {"loss", loss},
                             {"accuracy", isnan(p->accuracy) ? NULL : acc},
                             {"samples_per_s", rate},
                             {"learning_rate", lr},
                             {"val_loss", p->end_of_epoch && !isnan(p->val_loss) ? vloss : NULL},
                             {"val_accuracy", p->end_of_epoch && !isnan(p->val_accuracy) ? vacc : NULL},
                             {"gpu_utilization", isnan(p->gpu_utilization) ? NULL : gpu}};
  kiln_log_fields(KILN_LOG_INFO, fields, (int)(sizeof fields / sizeof fields[0]), p->end_of_epoch ? "epoch end" : "train step");
}

/* The JSON numbers of --metrics-out: null for what the run did not measure. */
static void json_number(FILE *f, const char *key, double v, int last) {
  if (isnan(v) || isinf(v)) fprintf(f, "\"%s\": null%s", key, last ? "" : ", ");
  else fprintf(f, "\"%s\": %.9g%s", key, v, last ? "" : ", ");
}

static kiln_status write_metrics(const char *path, const kiln_train_result *r) {
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (!f) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  fprintf(f, "{\"epochs\": %lld, \"steps\": %lld, \"peak_activation_bytes\": %zu, \"skipped_steps\": %lld, ", (long long)r->epochs,
          (long long)r->steps, r->activation_bytes, (long long)r->skipped_steps);
  json_number(f, "train_loss", r->train_loss, 0);
  json_number(f, "train_accuracy", r->train_accuracy, 0);
  json_number(f, "test_loss", r->test_loss, 0);
  json_number(f, "test_accuracy", r->test_accuracy, 0);
  json_number(f, "samples_per_s", r->samples_per_s, 0);
  json_number(f, "wall_s", r->wall_s, 1);
  fputs("}\n", f);
  if (fclose(f) != 0) {
    free(text);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  }
  kiln_status s = kiln_file_write_atomic(path, text, len);
  free(text);
  return s ? kiln_status_prefix(s, "--metrics-out: ") : NULL;
}

/* The lineage kiln_registry_push stores in the manifest: what the model was trained from (the run
 * file's and the dataset schema's SHA-256) and how well it did; NaN metrics become null. */
static char *lineage_json(const kiln_trainer *t, const kiln_train_result *r) {
  kiln_train_lineage l;
  kiln_trainer_lineage(t, &l);
  cJSON *root = cJSON_CreateObject(), *m = NULL;
  int ok = root && cJSON_AddStringToObject(root, "run_file_sha256", l.run_file_sha256) &&
           cJSON_AddStringToObject(root, "dataset_schema_sha256", l.dataset_schema_sha256) && (m = cJSON_AddObjectToObject(root, "metrics")) &&
           cJSON_AddNumberToObject(m, "train_loss", r->train_loss) && cJSON_AddNumberToObject(m, "train_accuracy", r->train_accuracy) &&
           cJSON_AddNumberToObject(m, "test_loss", r->test_loss) && cJSON_AddNumberToObject(m, "test_accuracy", r->test_accuracy) &&
           cJSON_AddNumberToObject(m, "epochs", (double)r->epochs) && cJSON_AddNumberToObject(m, "steps", (double)r->steps);
  char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
  cJSON_Delete(root);
  return text;
}

/* The export's temporary folder and what the trainer wrote into it (files only). */
static void remove_export(const char *tmp) {
  char file[4200];
  DIR *d = opendir(tmp);
  for (struct dirent *e; d && (e = readdir(d));)
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 && !cli_path(file, sizeof file, "%s/%s", tmp, e->d_name)) unlink(file);
  if (d) closedir(d);
  rmdir(tmp);
}

/* --export REPO/NAME: the trainer exports into a hidden temporary folder beside the versions, and
 * the registry pushes that folder as the next version, with a manifest and the run's lineage (the
 * push copies, fsyncs and renames: a server watching the repository never sees half a version). */
static kiln_status export_version(kiln_trainer *t, const char *model_dir, const kiln_train_result *r) {
  char tmp[4096];
  kiln_status s = kiln_dir_create(model_dir);
  if (s) return kiln_status_prefix(s, "--export: ");
  if (cli_path(tmp, sizeof tmp, "%s/.export-XXXXXX", model_dir)) return kiln_error(KILN_INVALID_ARGUMENT, "--export path too long");
  if (!mkdtemp(tmp)) return kiln_error(KILN_IO, "--export: cannot create %s: %s", tmp, strerror(errno));
  s = kiln_trainer_export(t, tmp);
  char *lineage = s ? NULL : lineage_json(t, r);
  if (!s && !lineage) s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  int64_t version = -1;
  if (!s) {
    kiln_push_options push = {.model_dir = model_dir, .source = tmp, .lineage_json = lineage};
    s = kiln_registry_push(&push, &version);
  }
  free(lineage);
  remove_export(tmp);
  if (s) return kiln_status_prefix(s, "--export: ");
  fprintf(stderr, "exported version %lld to %s/%lld\n", (long long)version, model_dir, (long long)version);
  return NULL;
}

int cmd_train(int argc, char **argv) {
  kiln_train_options o = {0};
  const char *metrics_out = NULL, *export_dir = NULL, *metrics_host = "0.0.0.0";
  long epochs = 0, batch = 0, threads = 0, seed = -1, every = 0, keep = 0, log_every = 0, metrics_port = -1;
  double lr = 0;
  int resume = 0, recompute = 0;
  const char *device = NULL;
  const cli_flag flags[] = {
      {"config", CLI_STRING, &o.run_file, "RUN.json", "the run file (default: the built-in Fashion-MNIST run)"},
      {"epochs", CLI_INT, &epochs, "N", "epochs (overrides the run file)"},
      {"batch-size", CLI_INT, &batch, "N", "the global batch: N processes take batch/N each"},
      {"threads", CLI_INT, &threads, "N", "threads per process (default $KILN_NUM_THREADS, else the CPU count)"},
      {"seed", CLI_INT, &seed, "N", "seed of initialization, shuffling and dropout"},
      {"lr", CLI_DOUBLE, &lr, "X", "the (initial) learning rate"},
      {"precision", CLI_STRING, &o.precision, "P", "fp32 (default), bf16 or fp16: 16-bit weights and activations"},
      {"recompute", CLI_BOOL, &recompute, NULL, "recompute marked layers' outputs (all when none is marked) in backward"},
      {"checkpoint-dir", CLI_STRING, &o.checkpoint_dir, "DIR", "checkpoints (default ./checkpoints)"},
      {"checkpoint-every", CLI_INT, &every, "N", "also checkpoint every N steps (default: each epoch's end)"},
      {"keep-checkpoints", CLI_INT, &keep, "K", "keep the newest K checkpoints (default 3)"},
      {"resume", CLI_BOOL, &resume, NULL, "continue from the newest valid checkpoint"},
      {"logdir", CLI_STRING, &o.logdir, "DIR", "TensorBoard event files (default ./runs; \"\" for none)"},
      {"log-every", CLI_INT, &log_every, "N", "TensorBoard scalars and JSON log lines every N steps (default 100)"},
      {"metrics-out", CLI_STRING, &metrics_out, "FILE", "write the final metrics as one JSON object"},
      {"metrics-port", CLI_INT, &metrics_port, "PORT", "serve the run's Prometheus metrics on /metrics (0: any free port)"},
      {"metrics-host", CLI_STRING, &metrics_host, "ADDR", "address for --metrics-port (default 0.0.0.0)"},
      {"export", CLI_STRING, &export_dir, "REPO/NAME", "export the model as ONNX into the next version folder"},
      CLI_DEVICE_FLAG(device),
      {0},
  };
  const cli_spec spec = {"kiln train", "[--config RUN.json] [flags]",
                         "Trains a Keras-style model on a kiln data pipeline. Without --config, trains the seed's\n"
                         "classifier (Flatten -> Dense(128, relu) -> Dense(10), Adam, 10 epochs) on Fashion-MNIST.\n"
                         "Under mpirun every process trains on its shard of the data (data-parallel).",
                         flags, 0, 0};
  cli_list args;
  int rc = cli_parse(&spec, argc, argv, &args);
  if (rc >= 0) return rc;
  cli_list_free(&args);
  if ((rc = cli_device_require("kiln train", device)) >= 0) return rc;
  if (metrics_port > 65535) {
    fprintf(stderr, "kiln train: --metrics-port must be a port number (0 to 65535)\n");
    return EXIT_USAGE;
  }
  if (epochs < 0 || batch < 0 || every < 0 || keep < 0 || log_every < 0 || lr < 0) {
    fprintf(stderr, "kiln train: --epochs, --batch-size, --checkpoint-every, --keep-checkpoints, --log-every and --lr must not be "
                    "negative\n");
    return EXIT_USAGE;
  }
  o.epochs = epochs;
  o.batch_size = batch;
  o.threads = (int)threads;
  o.seed = seed;
  o.seed_set = seed >= 0;
  o.learning_rate = lr;
  o.checkpoint_every = every;
  o.keep_checkpoints = (int)keep;
  o.resume = resume;
  o.log_every = log_every;
  o.recompute = recompute;
  progress_view view = {.tty = isatty(2)};
  o.progress = on_progress;
  o.progress_arg = &view;

  kiln_trainer *t;
  kiln_status s = kiln_trainer_create(&o, &t);
  if (s) return cli_fail(s);
  view.log_every = kiln_trainer_log_every(t);
  int rank = kiln_trainer_rank(t);
  if (metrics_port >= 0 && rank == 0) {
    if ((s = train_metrics_start(metrics_host, (int)metrics_port, &view.metrics))) {
      kiln_trainer_free(t);
      return cli_fail(s);
    }
    fprintf(stderr, "training metrics on http://%s:%d/metrics\n", metrics_host, train_metrics_port(view.metrics));
  }
  kiln_train_result r;
  s = kiln_trainer_fit(t, &r);
  if (!s && rank == 0) {
    fprintf(stderr, "trained %lld epochs in %.1f s: loss %.4f", (long long)r.epochs, r.wall_s, r.train_loss);
    if (!isnan(r.test_accuracy)) fprintf(stderr, ", test accuracy %.4f", r.test_accuracy);
    fprintf(stderr, ", %.0f samples/s\n", r.samples_per_s);
    if (metrics_out) s = write_metrics(metrics_out, &r);
    if (!s && export_dir) s = export_version(t, export_dir, &r);
  }
  kiln_trainer_free(t);
  train_metrics_stop(view.metrics);
  return s ? cli_fail(s) : EXIT_OK;
}
