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
  int64_t batch;
  int n_raw;                            /* features read from each record */
  const char *raw_names[MAX_FEATURES];
  kiln_record *records;                 /* the batch being gathered */
  int64_t count, correct, rows;
} eval_job;

/* Stacks feature `name` of n records into out [n, dims...]; every record must agree on its type. */
static kiln_status stack(const kiln_record *records, int64_t n, const char *name, kiln_tensor *out) {
  const kiln_tensor *first = NULL;
  for (int64_t r = 0; r < n; r++) {
    int i = kiln_record_find(&records[r], name);
    const kiln_tensor *v = i >= 0 ? &records[r].values[i] : NULL;
    if (!v || v->dtype == KILN_UNDEFINED)
      return kiln_error(KILN_INVALID_ARGUMENT, "record %lld has no value for feature '%s'", (long long)records[r].index, name);
    if (!first) {
      first = v;
      int64_t dims[8] = {n};
      if (v->rank > 7) return kiln_error(KILN_INVALID_ARGUMENT, "feature '%s' has more than 7 dimensions", name);
      memcpy(dims + 1, v->dims, (size_t)v->rank * sizeof *dims);
      kiln_status s = kiln_tensor_alloc(out, v->dtype, v->rank + 1, dims);
      if (s) return s;
    } else if (v->dtype != first->dtype || kiln_tensor_numel(v) != kiln_tensor_numel(first) || v->rank != first->rank) {
      kiln_tensor_release(out);
      return kiln_error(KILN_INVALID_ARGUMENT, "feature '%s' of record %lld differs in type or shape from the batch's first", name,
                        (long long)records[r].index);
    }
    size_t bytes = kiln_tensor_nbytes(v);
    memcpy((char *)out->data + (size_t)r * bytes, v->data, bytes);
  }
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

static kiln_status run_batch(eval_job *j) {
  int n_in = kiln_model_input_count(j->model);
  kiln_tensor raw[MAX_FEATURES] = {0}, inputs[MAX_FEATURES] = {0}, label = {0};
  const kiln_tensor *in_ptrs[MAX_FEATURES], *outputs[MAX_FEATURES] = {0};
  const char *names[MAX_FEATURES];
  kiln_status s = NULL;
  for (int i = 0; !s && i < j->n_raw; i++) s = stack(j->records, j->count, j->raw_names[i], &raw[i]);
  for (int i = 0; i < n_in; i++) names[i] = kiln_model_input(j->model, i)->name;
  if (!s && j->pre) s = kiln_preprocess_apply(j->pre, raw, n_in, names, inputs);
  for (int i = 0; !s && !j->pre && i < n_in; i++) {
    kiln_dtype want = kiln_model_input(j->model, i)->dtype;
    s = raw[i].dtype == want ? kiln_tensor_copy(&inputs[i], &raw[i]) : cast_to(&raw[i], want, &inputs[i]);
  }
  for (int i = 0; i < n_in; i++) in_ptrs[i] = &inputs[i];
  if (!s) s = stack(j->records, j->count, j->label, &label);
  if (!s) s = kiln_session_run_tensors(j->session, in_ptrs, outputs);
  if (!s) {
    const kiln_tensor *y = outputs[0];
    int64_t classes = y->rank == 2 ? y->dims[1] : 0;
    if (y->dtype != KILN_FLOAT || classes < 1 || y->dims[0] != j->count || kiln_tensor_numel(&label) != j->count)
      s = kiln_error(KILN_INVALID_ARGUMENT, "kiln eval needs a classifier: output 0 [batch, classes] of floats and one label per record");
    for (int64_t r = 0; !s && r < j->count; r++) {
      const float *row = (const float *)y->data + r * classes;
      int64_t best = 0;
      for (int64_t c = 1; c < classes; c++)
        if (row[c] > row[best]) best = c;
      j->correct += best == (int64_t)kiln_tensor_get_f64(&label, r);
    }
    j->rows += j->count;
  }
  for (int i = 0; i < MAX_FEATURES; i++) {
    kiln_tensor_release(&raw[i]);
    kiln_tensor_release(&inputs[i]);
  }
  kiln_tensor_release(&label);
  for (int64_t r = 0; r < j->count; r++) kiln_record_release(&j->records[r]);
  j->count = 0;
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

static void eval_free(eval_job *j, kiln_pool *pool, kiln_dataset *d) {
  for (int64_t r = 0; j->records && r < j->count; r++) kiln_record_release(&j->records[r]);
  free(j->records);
  kiln_dataset_free(d);
  kiln_preprocess_free(j->pre);
  kiln_session_free(j->session);
  kiln_model_free(j->model);
  kiln_pool_free(pool);
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
                         "Reports the accuracy: the share of records whose arg-max output is their label.",
                         flags, 1, 2};
  cli_list args;
  int rc = cli_parse(&spec, argc, argv, &args);
  if (rc >= 0) return rc;
  if (batch < 1 || batch > 1 << 16) {
    cli_list_free(&args);
    fprintf(stderr, "kiln eval: --batch-size must be in 1..65536\n");
    return EXIT_USAGE;
  }
  eval_job j = {.label = label, .batch = batch};
  kiln_pool *pool = NULL;
  kiln_dataset *d = NULL;
  kiln_status s = kiln_pool_create((int)src.threads, &pool);
  if (!s) s = open_model(&j, args.items[0], pool);
  if (s) {
    cli_list_free(&args);
    eval_free(&j, pool, d);
    return cli_fail(s);
  }
  rc = cli_data_open(&src, args.count > 1 ? args.items[1] : NULL, &d);
  cli_list_free(&args);
  if (rc >= 0) {
    eval_free(&j, pool, NULL);
    return rc;
  }
  j.records = calloc((size_t)batch, sizeof *j.records);
  if (!j.records) s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  double start = kiln_now();
  for (int done = 0; !s && !done;) {
    s = kiln_dataset_next(d, &j.records[j.count], &done);
    if (!s && !done) j.count++;
    if (!s && j.count > 0 && (done || j.count == j.batch)) s = run_batch(&j);
  }
  double wall = kiln_now() - start, accuracy = j.rows ? (double)j.correct / (double)j.rows : 0;
  if (!s && j.rows == 0) s = kiln_error(KILN_INVALID_ARGUMENT, "the data holds no records");
  if (!s) {
    if (json)
      printf("{\"records\": %lld, \"correct\": %lld, \"accuracy\": %.6f, \"samples_per_s\": %.1f}\n", (long long)j.rows,
             (long long)j.correct, accuracy, wall > 0 ? (double)j.rows / wall : 0);
    fprintf(stderr, "accuracy %.4f (%lld of %lld records) in %.2f s\n", accuracy, (long long)j.correct, (long long)j.rows, wall);
    cli_data_summary(d);
  }
  eval_free(&j, pool, d);
  return s ? cli_fail(s) : EXIT_OK;
}
