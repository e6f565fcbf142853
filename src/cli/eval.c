/* `kiln eval MODEL DATA`: the accuracy of an exported classifier on a dataset, through the same
 * preprocessing the server applies (the version folder's preprocess.json), batch by batch. */
#include "cli/cli.h"
#include "kiln/data.h"
#include "kiln/graph.h"
#include "kiln/net.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_FEATURES 64

typedef struct eval_job {
  kiln_model *model;
  kiln_session *session;
  kiln_preprocess *pre; /* NULL: records carry the model's inputs by name */
  const char *label;
  int n_raw;                            /* features read from each batch */
  const char *raw_names[MAX_FEATURES];
  int64_t correct, rows;
} eval_job;

/* Feature `name` of a batch. */
static kiln_status feature(const kiln_record *batch, const char *name, const kiln_tensor **out) {
  int i = kiln_record_find(batch, name);
  if (i < 0 || batch->values[i].dtype == KILN_UNDEFINED)
    return kiln_error(KILN_INVALID_ARGUMENT, "the data has no feature '%s' (records from %lld on)", name, (long long)batch->index);
  *out = &batch->values[i];
  return NULL;
}

/* A tensor cast to the dtype the model declares for it (float inputs fed from uint8 pixels). */
static kiln_status cast_to(const kiln_tensor *in, kiln_dtype dtype, kiln_tensor *out) {
  kiln_status s = kiln_tensor_alloc(out, dtype, in->rank, in->dims);
  if (s) return s;
  int64_t n = kiln_tensor_numel(in);
  if (dtype == KILN_FLOAT)
    for (int64_t i = 0; i < n; i++) ((float *)out->data)[i] = (float)kiln_tensor_get_f64(in, i);
  else if (dtype == KILN_INT64)
    for (int64_t i = 0; i < n; i++) ((int64_t *)out->data)[i] = (int64_t)kiln_tensor_get_f64(in, i);
  else {
    kiln_tensor_release(out);
    return kiln_error(KILN_UNIMPLEMENTED, "kiln eval feeds float or int64 inputs, not %s", kiln_dtype_name(dtype));
  }
  return NULL;
}

/* One batch (a record whose features have a leading batch dimension, from the pipeline's batch
 * stage): preprocessed, run, and its arg-max predictions counted against the labels. */
static kiln_status run_batch(eval_job *j, const kiln_record *batch) {
  int n_in = kiln_model_input_count(j->model);
  kiln_tensor raw[MAX_FEATURES] = {0}, inputs[MAX_FEATURES] = {0};
  const kiln_tensor *in_ptrs[MAX_FEATURES], *outputs[MAX_FEATURES] = {0}, *label = NULL, *v = NULL;
  const char *names[MAX_FEATURES];
  kiln_status s = NULL;
  for (int i = 0; !s && i < j->n_raw; i++)
    if (!(s = feature(batch, j->raw_names[i], &v))) raw[i] = *v; /* a view: the batch owns the data */
  for (int i = 0; i < n_in; i++) names[i] = kiln_model_input(j->model, i)->name;
  if (!s && j->pre) s = kiln_preprocess_apply(j->pre, raw, n_in, names, inputs);
  for (int i = 0; i < n_in; i++) in_ptrs[i] = j->pre ? &inputs[i] : &raw[i];
  for (int i = 0; !s && !j->pre && i < n_in; i++) {
    kiln_dtype want = kiln_model_input(j->model, i)->dtype;
    if (raw[i].dtype != want && !(s = cast_to(&raw[i], want, &inputs[i]))) in_ptrs[i] = &inputs[i];
  }
  if (!s) s = feature(batch, j->label, &label);
  if (!s) s = kiln_session_run_tensors(j->session, in_ptrs, outputs);
  if (!s) {
    const kiln_tensor *y = outputs[0];
    int64_t rows = y->rank >= 1 ? y->dims[0] : 0, classes = y->rank == 2 ? y->dims[1] : 0;
    if (y->dtype != KILN_FLOAT || classes < 1 || kiln_tensor_numel(label) != rows)
      s = kiln_error(KILN_INVALID_ARGUMENT, "kiln eval needs a classifier: output 0 [batch, classes] of floats and one label per record");
    for (int64_t r = 0; !s && r < rows; r++) {
      const float *row = (const float *)y->data + r * classes;
      int64_t best = 0;
      for (int64_t c = 1; c < classes; c++)
        if (row[c] > row[best]) best = c;
      j->correct += best == (int64_t)kiln_tensor_get_f64(label, r);
    }
    j->rows += rows;
  }
  for (int i = 0; i < MAX_FEATURES; i++) kiln_tensor_release(&inputs[i]);
  return s;
}

/* MODEL is a .onnx file or a version folder holding model.onnx (and maybe preprocess.json). */
static kiln_status open_model(eval_job *j, const char *path, kiln_pool *pool) {
  struct stat st;
  char file[4096], dir[4096];
  int is_dir = stat(path, &st) == 0 && S_ISDIR(st.st_mode);
  if (cli_path(file, sizeof file, is_dir ? "%s/model.onnx" : "%s", path)) return kiln_error(KILN_INVALID_ARGUMENT, "path too long");
  snprintf(dir, sizeof dir, "%s", is_dir ? path : file);
  if (!is_dir) {
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
  }
  kiln_status s = kiln_model_load(file, NULL, &j->model);
  kiln_session_options so = {.pool = pool};
  if (!s) s = kiln_session_create(j->model, &so, &j->session);
  if (!s) s = kiln_preprocess_load(dir, &j->pre);
  if (s) return s;
  int n_in = kiln_model_input_count(j->model);
  if (n_in > MAX_FEATURES) return kiln_error(KILN_INVALID_ARGUMENT, "the model has %d inputs, over %d", n_in, MAX_FEATURES);
  const kiln_schema *schema = j->pre ? kiln_preprocess_schema(j->pre) : NULL;
  j->n_raw = schema ? schema->count : n_in;
  if (j->n_raw > MAX_FEATURES) return kiln_error(KILN_INVALID_ARGUMENT, "the schema has more than %d features", MAX_FEATURES);
  for (int i = 0; i < j->n_raw; i++) j->raw_names[i] = schema ? schema->features[i].name : kiln_model_input(j->model, i)->name;
  return NULL;
}

static void job_free(eval_job *j) {
  kiln_preprocess_free(j->pre);
  kiln_session_free(j->session);
  kiln_model_free(j->model);
}

kiln_status cli_eval_model(const char *model, kiln_dataset *d, const char *label, kiln_pool *pool, cli_eval_result *out) {
  eval_job j = {.label = label};
  memset(out, 0, sizeof *out);
  kiln_status s = open_model(&j, model, pool);
  double start = kiln_now();
  for (int done = 0; !s && !done;) {
    kiln_record b = {0};
    s = kiln_dataset_next(d, &b, &done);
    if (!s && !done) s = run_batch(&j, &b);
    kiln_record_release(&b);
  }
  if (!s && j.rows == 0) s = kiln_error(KILN_INVALID_ARGUMENT, "the data holds no records");
  if (!s) {
    out->records = j.rows;
    out->correct = j.correct;
    out->accuracy = (double)j.correct / (double)j.rows;
    out->seconds = kiln_now() - start;
  }
  job_free(&j);
  return s;
}

int cmd_eval(int argc, char **argv) {
  cli_data_source src = {0};
  const char *label = "label";
  long batch = 256;
  int json = 0;
  const cli_flag flags[] = {
      CLI_DATA_SOURCE_FLAGS(src),
      {"label", CLI_STRING, &label, "NAME", "the feature holding each record's class (default label)"},
      {"batch-size", CLI_INT, &batch, "N", "records per model run (default 256)"},
      {"json", CLI_BOOL, &json, NULL, "print the result as one JSON object on stdout"},
      {0},
  };
  const cli_spec spec = {"kiln eval", "MODEL [DATA] [flags]",
                         "Evaluates an exported classifier: MODEL is a model repository's version folder (model.onnx, and\n"
                         "preprocess.json when training had preprocessing) or a .onnx file; DATA a dataset (or --pipeline).\n"
                         "Reports the accuracy: the share of records whose arg-max output is their label. The data is\n"
                         "batched here: a --pipeline without a batch stage.",
                         flags, 1, 2};
  cli_list args;
  int rc = cli_parse(&spec, argc, argv, &args);
  if (rc >= 0) return rc;
  if (batch < 1 || batch > 1 << 16) {
    cli_list_free(&args);
    fprintf(stderr, "kiln eval: --batch-size must be in 1..65536\n");
    return EXIT_USAGE;
  }
  kiln_pool *pool = NULL;
  kiln_dataset *d = NULL;
  kiln_status s = kiln_pool_create((int)src.threads, &pool);
  if (s) {
    cli_list_free(&args);
    return cli_fail(s);
  }
  src.batch = batch;
  rc = cli_data_open(&src, args.count > 1 ? args.items[1] : NULL, &d);
  if (rc >= 0) {
    cli_list_free(&args);
    kiln_pool_free(pool);
    return rc;
  }
  cli_eval_result r;
  s = cli_eval_model(args.items[0], d, label, pool, &r);
  cli_list_free(&args);
  if (!s) {
    if (json)
      printf("{\"records\": %lld, \"correct\": %lld, \"accuracy\": %.6f, \"samples_per_s\": %.1f}\n", (long long)r.records,
             (long long)r.correct, r.accuracy, r.seconds > 0 ? (double)r.records / r.seconds : 0);
    fprintf(stderr, "accuracy %.4f (%lld of %lld records) in %.2f s\n", r.accuracy, (long long)r.correct, (long long)r.records,
            r.seconds);
    cli_data_summary(d);
  }
  kiln_dataset_free(d);
  kiln_pool_free(pool);
  return s ? cli_fail(s) : EXIT_OK;
}
