/* Run files: what to train, in Keras' vocabulary (include/kiln/train.h shows the format), parsed
 * and checked up front so that a typo fails in the first second, not after an epoch. */
#include "train/train.h"

#include "core/sha256.h"
#include "data/data.h"

#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

/* The seed's run: Keras' Fashion-MNIST classifier, pixels scaled to [0, 1] as in its tutorial. */
static const char builtin_run[] =
    "{\"model\": {\"input_shape\": [28, 28], \"layers\": [\"flatten\", {\"dense\": {\"units\": 128, \"activation\": \"relu\"}},"
    " {\"dense\": {\"units\": 10}}]},"
    " \"optimizer\": {\"adam\": {\"learning_rate\": 0.001}},"
    " \"loss\": {\"sparse_categorical_crossentropy\": {\"from_logits\": true}}, \"metrics\": [\"accuracy\"],"
    " \"epochs\": 10, \"batch_size\": 32, \"seed\": 1,"
    " \"data\": {\"source\": {\"format\": \"idx\", \"path\": \"/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz\"},"
    "  \"stages\": [{\"map\": {\"transforms\": [{\"scale\": {\"feature\": \"image\", \"factor\": 0.00392156862745098}}]}},"
    "   {\"cache\": {}}, {\"shuffle\": {\"buffer_size\": 60000}}]},"
    " \"validation_data\": {\"source\": {\"format\": \"idx\", \"path\": \"/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz\"},"
    "  \"stages\": [{\"map\": {\"transforms\": [{\"scale\": {\"feature\": \"image\", \"factor\": 0.00392156862745098}}]}},"
    "   {\"cache\": {}}]},"
    " \"features\": \"image\", \"label\": \"label\"}";

#define MAX_RUN_FILE_BYTES (16 << 20)

static const char *const run_keys[] = {"model", "optimizer", "loss", "metrics", "epochs", "batch_size", "seed", "data",
                                       "validation_data", "validation_split", "features", "label", "checkpoint_every",
                                       "keep_checkpoints", "log_every", NULL};

static uint64_t fnv1a(const char *s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
  return h;
}

/* Checks a pipeline spec for the trainer (no batch stage: the trainer batches with batch_size);
 * with seed >= 0, gives every shuffle without a seed that one. */
static kiln_status prepare_pipeline(cJSON *spec, const char *where, int64_t seed) {
  if (!cJSON_IsObject(spec)) return kiln_error(KILN_INVALID_ARGUMENT, "%s: expected a pipeline object {\"source\": ..., \"stages\": [...]}", where);
  cJSON *stages = cJSON_GetObjectItemCaseSensitive(spec, "stages");
  int i = 0;
  for (cJSON *st = cJSON_IsArray(stages) ? stages->child : NULL; st; st = st->next, i++) {
    cJSON *kind = cJSON_IsObject(st) ? st->child : NULL;
    if (!kind) continue; /* the data layer reports malformed stages */
    if (strcmp(kind->string, "batch") == 0)
      return kiln_error(KILN_INVALID_ARGUMENT, "%s.stages[%d]: remove the batch stage: kiln train batches with batch_size", where, i);
    if (seed >= 0 && strcmp(kind->string, "shuffle") == 0 && cJSON_IsObject(kind) && !cJSON_GetObjectItemCaseSensitive(kind, "seed"))
      if (!cJSON_AddNumberToObject(kind, "seed", (double)seed)) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  }
  return NULL;
}

static kiln_status parse(kx_run *r) {
  const cJSON *root = r->root;
  kiln_status s = kx_spec_keys(root, "run file", run_keys);
  double split = 0;
  r->epochs = 1;
  r->batch_size = 32;
  r->seed = 1;
  r->keep_checkpoints = 3;
  r->log_every = 100;
  r->features = "image";
  r->label = "label";
  if (!s) s = kx_spec_int(root, "run file", "epochs", 0, 1, 1 << 30, &r->epochs);
  if (!s) s = kx_spec_int(root, "run file", "batch_size", 0, 1, 1 << 20, &r->batch_size);
  if (!s) s = kx_spec_int(root, "run file", "seed", 0, 0, INT64_MAX, &r->seed);
  if (!s) s = kx_spec_int(root, "run file", "checkpoint_every", 0, 0, INT64_MAX, &r->checkpoint_every);
  if (!s) s = kx_spec_int(root, "run file", "log_every", 0, 1, INT64_MAX, &r->log_every);
  int64_t keep = r->keep_checkpoints;
  if (!s) s = kx_spec_int(root, "run file", "keep_checkpoints", 0, 1, 1000, &keep);
  r->keep_checkpoints = (int)keep;
  if (!s) s = kx_spec_string(root, "run file", "features", 0, &r->features);
  if (!s) s = kx_spec_string(root, "run file", "label", 0, &r->label);
  if (!s) s = kx_spec_double(root, "run file", "validation_split", 0, &split);
  if (s) return s;
  if (!(split >= 0 && split < 1)) return kiln_error(KILN_INVALID_ARGUMENT, "run file: 'validation_split' must be in [0, 1), got %g", split);
  r->validation_split = split;
  r->model = cJSON_GetObjectItemCaseSensitive(root, "model");
  if (!cJSON_IsObject(r->model)) return kiln_error(KILN_INVALID_ARGUMENT, "run file: missing 'model' ({\"layers\": [...]})");
  if ((s = kx_spec_keys(r->model, "model", (const char *const[]){"input_shape", "layers", NULL}))) return s;
  const cJSON *optim = cJSON_GetObjectItemCaseSensitive(root, "optimizer"), *loss = cJSON_GetObjectItemCaseSensitive(root, "loss");
  if (!optim) return kiln_error(KILN_INVALID_ARGUMENT, "run file: missing 'optimizer' (e.g. \"adam\")");
  if (!loss) return kiln_error(KILN_INVALID_ARGUMENT, "run file: missing 'loss' (e.g. \"sparse_categorical_crossentropy\")");
  if ((s = kx_optim_parse(optim, &r->optim)) || (s = kx_loss_parse(loss, &r->loss))) return s;
  const cJSON *metrics = cJSON_GetObjectItemCaseSensitive(root, "metrics");
  for (const cJSON *m = cJSON_IsArray(metrics) ? metrics->child : NULL; m; m = m->next) {
    if (!cJSON_IsString(m) || (strcmp(m->valuestring, "accuracy") != 0 && strcmp(m->valuestring, "sparse_categorical_accuracy") != 0))
      return kiln_error(KILN_INVALID_ARGUMENT, "run file: unknown metric %s (known: accuracy)", cJSON_IsString(m) ? m->valuestring : "(not a string)");
    r->accuracy = 1;
  }
  if (metrics && !cJSON_IsArray(metrics)) return kiln_error(KILN_INVALID_ARGUMENT, "run file: 'metrics' must be a list, e.g. [\"accuracy\"]");
  if (r->accuracy && r->loss.kind == KX_LOSS_MSE)
    return kiln_error(KILN_INVALID_ARGUMENT, "run file: the accuracy metric needs a classification loss, not mse");
  r->data = cJSON_GetObjectItemCaseSensitive(root, "data");
  r->validation = cJSON_GetObjectItemCaseSensitive(root, "validation_data");
  if (!r->data) return kiln_error(KILN_INVALID_ARGUMENT, "run file: missing 'data' (a pipeline: {\"source\": ..., \"stages\": [...]})");
  if (r->validation && r->validation_split > 0)
    return kiln_error(KILN_INVALID_ARGUMENT, "run file: give 'validation_data' or 'validation_split', not both");
  if ((s = prepare_pipeline(r->data, "data", -1))) return s;
  if (r->validation && (s = prepare_pipeline(r->validation, "validation_data", -1))) return s;
  return NULL;
}

kiln_status kx_run_seed_shuffles(kx_run *r) {
  kiln_status s = prepare_pipeline(r->data, "data", r->seed);
  if (!s && r->validation) s = prepare_pipeline(r->validation, "validation_data", r->seed);
  return s;
}

kiln_status kx_run_parse(const char *json, size_t len, const char *base_dir, kx_run *r) {
  memset(r, 0, sizeof *r);
  r->root = cJSON_ParseWithLength(json, len);
  if (!r->root) return kiln_error(KILN_INVALID_ARGUMENT, "run file: not valid JSON near byte %ld", (long)(cJSON_GetErrorPtr() - json));
  char *canonical = cJSON_PrintUnformatted(r->root);
  if (!canonical) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  snprintf(r->hash, sizeof r->hash, "%016llx", (unsigned long long)fnv1a(canonical));
  free(canonical);
  kx_sha256_hex(json, len, r->sha256);
  if (base_dir && snprintf(r->base_dir, sizeof r->base_dir, "%s", base_dir) >= (int)sizeof r->base_dir)
    return kiln_error(KILN_INVALID_ARGUMENT, "run file: its folder's path is too long");
  kiln_status s = parse(r);
  if (s) kx_run_free(r);
  return s;
}

kiln_status kx_run_load(const char *path, kx_run *r) {
  if (!path) return kx_run_parse(builtin_run, sizeof builtin_run - 1, NULL, r);
  void *text;
  size_t len;
  kiln_status s = kiln_file_read(path, MAX_RUN_FILE_BYTES, &text, &len);
  if (s) return kiln_status_prefix(s, "run file %s: ", path);
  char *copy = strdup(path);
  s = copy ? kx_run_parse(text, len, dirname(copy), r) : kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  free(copy);
  free(text);
  return s ? kiln_status_prefix(s, "%s: ", path) : NULL;
}

void kx_run_free(kx_run *r) {
  kx_optim_free(&r->optim);
  cJSON_Delete(r->root);
  r->root = NULL;
}
