/* `kiln data <command>`: look at, convert and time datasets (the schema commands live in
 * data_schema.c). Every command takes a SOURCE path and/or --pipeline FILE.json. */
#include "cli/cli.h"
#include "kiln/data.h"
#include "kiln/net.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

kiln_status cli_data_open_status(const cli_data_source *src, const char *path, kiln_dataset **out) {
  kiln_data_options o = {0};
  o.threads = (int)src->threads;
  o.quarantine_path = src->quarantine;
  if (src->on_error) {
    o.on_error_set = 1;
    if (strcmp(src->on_error, "skip") == 0) o.on_error = KILN_ON_ERROR_SKIP;
    else if (strcmp(src->on_error, "fail") == 0) o.on_error = KILN_ON_ERROR_FAIL;
    else return kiln_error(KILN_INVALID_ARGUMENT, "--on-error takes fail or skip, not '%s'", src->on_error);
  }
  if (src->quarantine && !(src->on_error && o.on_error == KILN_ON_ERROR_SKIP) && !src->pipeline)
    return kiln_error(KILN_INVALID_ARGUMENT, "--quarantine needs --on-error skip");
  if (!src->pipeline && !path) return kiln_error(KILN_INVALID_ARGUMENT, "give a SOURCE or --pipeline FILE.json");
  if (!src->pipeline && src->batch <= 0) return kiln_dataset_open_path(path, &o, out);
  void *text = NULL;
  size_t len = 0;
  if (src->pipeline) {
    kiln_status s = kiln_file_read(src->pipeline, 1 << 20, &text, &len);
    if (s) return s;
  }
  /* SOURCE replaces the pipeline's source; a batch stage goes last. A pipeline that is not a JSON
   * object is left for the data layer to report. */
  cJSON *spec = !path && src->batch <= 0 ? NULL : text ? cJSON_ParseWithLength(text, len) : cJSON_CreateObject();
  char *printed = NULL;
  if (spec && cJSON_IsObject(spec)) {
    if (path) {
      cJSON_DeleteItemFromObjectCaseSensitive(spec, "source");
      cJSON_AddStringToObject(spec, "source", path);
    }
    cJSON *stages = cJSON_GetObjectItemCaseSensitive(spec, "stages"), *batch = NULL;
    if (src->batch > 0 && !stages) stages = cJSON_AddArrayToObject(spec, "stages");
    if (src->batch > 0 && cJSON_IsArray(stages) && (batch = cJSON_CreateObject())) {
      cJSON_AddNumberToObject(batch, "batch", (double)src->batch);
      cJSON_AddItemToArray(stages, batch);
    }
    printed = cJSON_PrintUnformatted(spec);
  }
  cJSON_Delete(spec);
  if (printed) {
    free(text);
    text = printed;
    len = strlen(printed);
  }
  kiln_status s = text ? kiln_dataset_open_spec(text, len, &o, out) : kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  free(text);
  if (s && src->pipeline) s = kiln_status_prefix(s, "%s: ", src->pipeline);
  return s;
}

int cli_data_open(const cli_data_source *src, const char *path, kiln_dataset **out) {
  kiln_status s = cli_data_open_status(src, path, out);
  return s ? cli_fail(s) : -1;
}

void cli_data_summary(const kiln_dataset *d) {
  kiln_data_counts c = kiln_dataset_counts(d);
  const char *q = kiln_dataset_quarantine_path(d);
  if (q)
    fprintf(stderr, "%lld of %lld records quarantined (%s)\n", (long long)c.quarantined, (long long)c.read, q);
  else
    fprintf(stderr, "%lld records read\n", (long long)c.read);
}

static int cat(int argc, char **argv) {
  cli_data_source src = {0};
  long limit = -1;
  const cli_flag flags[] = {
      CLI_DATA_SOURCE_FLAGS(src),
      {"limit", CLI_INT, &limit, "N", "print at most N records"},
      {0},
  };
  const cli_spec spec = {"kiln data cat", "[SOURCE] [flags]",
                         "Prints a dataset's records (after the pipeline's stages, when given) as JSON lines on stdout:\n"
                         "one object per record, keys the feature names, missing values null.",
                         flags, 0, 1};
  cli_list pos;
  int rc = cli_parse(&spec, argc, argv, &pos);
  if (rc >= 0) return rc;
  kiln_dataset *d;
  rc = cli_data_open(&src, pos.count ? pos.items[0] : NULL, &d);
  cli_list_free(&pos);
  if (rc >= 0) return rc;
  kiln_status s = NULL;
  for (long n = 0; limit < 0 || n < limit; n++) {
    kiln_record r;
    int done;
    s = kiln_dataset_next(d, &r, &done);
    if (s || done) break;
    char *json = kiln_record_to_json(&r);
    kiln_record_release(&r);
    if (!json) {
      s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory printing a record");
      break;
    }
    fputs(json, stdout);
    fputc('\n', stdout);
    free(json);
  }
  fflush(stdout);
  cli_data_summary(d);
  kiln_dataset_free(d);
  return s ? cli_fail(s) : EXIT_OK;
}

static int convert(int argc, char **argv) {
  cli_data_source src = {0};
  const char *format = NULL;
  const cli_flag flags[] = {
      CLI_DATA_SOURCE_FLAGS(src),
      {"format", CLI_STRING, &format, "F", "output format: csv, npz or tfrecord (default: from DEST's extension)"},
      {0},
  };
  const cli_spec spec = {"kiln data convert", "[SOURCE] DEST [flags]",
                         "Writes a dataset (after the pipeline's stages, when given) to DEST as CSV, NPZ or TFRecord.",
                         flags, 1, 2};
  cli_list pos;
  int rc = cli_parse(&spec, argc, argv, &pos);
  if (rc >= 0) return rc;
  const char *dest = pos.items[pos.count - 1];
  kiln_dataset *d;
  rc = cli_data_open(&src, pos.count == 2 ? pos.items[0] : NULL, &d);
  cli_list_free(&pos);
  if (rc >= 0) return rc;
  int64_t written = 0;
  kiln_status s = kiln_dataset_write(d, dest, format, &written);
  if (!s) fprintf(stderr, "wrote %lld records to %s\n", (long long)written, dest);
  cli_data_summary(d);
  kiln_dataset_free(d);
  return s ? cli_fail(s) : EXIT_OK;
}

static int bench(int argc, char **argv) {
  cli_data_source src = {0};
  long epochs = 1, step_us = 0;
  int json = 0;
  const cli_flag flags[] = {
      CLI_DATA_SOURCE_FLAGS(src),
      {"epochs", CLI_INT, &epochs, "N", "passes over the data (default 1)"},
      {"step-us", CLI_INT, &step_us, "US", "busy the consumer US microseconds per element, as a training step would"},
      {"json", CLI_BOOL, &json, NULL, "print one JSON line instead of text"},
      {0},
  };
  const cli_spec spec = {"kiln data bench", "[SOURCE] [flags]",
                         "Pulls every element of a dataset through its pipeline and reports the throughput: source\n"
                         "records per second, elements (batches after a batch stage) per second. With --step-us the\n"
                         "consumer works between elements like a training step, and wait_fraction tells how much of\n"
                         "the time after the first element it spent waiting for data (0 when prefetch keeps up).",
                         flags, 0, 1};
  cli_list pos;
  int rc = cli_parse(&spec, argc, argv, &pos);
  if (rc >= 0) return rc;
  if (epochs < 1) {
    cli_list_free(&pos);
    fprintf(stderr, "kiln data bench: --epochs must be at least 1\n");
    return EXIT_USAGE;
  }
  kiln_dataset *d;
  rc = cli_data_open(&src, pos.count ? pos.items[0] : NULL, &d);
  cli_list_free(&pos);
  if (rc >= 0) return rc;
  kiln_status s = NULL;
  int64_t elements = 0;
  double start = kiln_now(), first = 0, waited = 0;
  for (long e = 0; e < epochs && !s; e++) {
    if (e) s = kiln_dataset_reset(d, e);
    for (int done = 0; !s && !done;) {
      kiln_record r;
      double asked = kiln_now();
      s = kiln_dataset_next(d, &r, &done);
      double got = kiln_now();
      if (elements == 0) first = got;
      else waited += got - asked;
      if (!s && !done) {
        elements++;
        kiln_record_release(&r);
        for (double until = kiln_now() + (double)step_us * 1e-6; step_us > 0 && kiln_now() < until;) {
        }
      }
    }
  }
  double seconds = kiln_now() - start;
  double wait_fraction = elements > 1 ? waited / (kiln_now() - first) : 0;
  kiln_data_counts c = kiln_dataset_counts(d);
  long long records = (long long)c.read * epochs; /* the counts cover one pass */
  if (!s) {
    if (json)
      printf("{\"records\":%lld,\"elements\":%lld,\"quarantined\":%lld,\"seconds\":%.6f,\"records_per_s\":%.1f,"
             "\"elements_per_s\":%.1f,\"wait_fraction\":%.4f}\n",
             records, (long long)elements, (long long)c.quarantined, seconds, (double)records / seconds,
             (double)elements / seconds, wait_fraction);
    else
      printf("%lld records, %lld elements in %.3f s: %.0f records/s, %.0f elements/s; waited %.1f%% of the time\n",
             records, (long long)elements, seconds, (double)records / seconds, (double)elements / seconds,
             100 * wait_fraction);
  }
  kiln_dataset_free(d);
  return s ? cli_fail(s) : EXIT_OK;
}

static const cli_command commands[] = {
    {"cat", cat, "print records as JSON lines"},
    {"convert", convert, "write a dataset as CSV, NPZ or TFRecord"},
    {"bench", bench, "measure a pipeline's throughput"},
    {"schema", cmd_data_schema, "infer a dataset's schema (schema infer)"},
    {"validate", cmd_data_validate, "check a dataset against a schema"},
    {"stats", cmd_data_stats, "per-feature statistics"},
    {"diff", cmd_data_diff, "drift between two datasets"},
};

int cmd_data(int argc, char **argv) {
  return cli_dispatch("data", commands, (int)(sizeof commands / sizeof commands[0]),
                      "SOURCE is a file or folder (.csv, .npy, .npz, .tfrecord, *-ubyte[.gz], a folder of class folders of\n"
                      "images); --pipeline FILE.json describes a source and stages (README: Data pipelines).\n"
                      "Run 'kiln data <command> --help' for a command's flags.", argc, argv);
}
