/* kiln_trainer_export: a model trained for an epoch, exported, loaded back with kiln's runtime
 * and run on the same inputs must give the trainer's own forward pass; the schema and
 * preprocessing written beside it must turn raw features into the inputs training saw. With a
 * directory as argv[1], the MLP's export stays there with input.npy and expected.npy (the
 * trainer's outputs) for the integration test to run in `kiln run` and ONNX Runtime; the image
 * model's likewise in its conv/ folder. */
#include "test.h"

#include "data/data.h"
#include "kiln/graph.h"
#include "train/trainer.h"

#include <ftw.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#define ROWS 64
#define BATCH 16

static const char *keep_dir; /* argv[1] */

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

static void remove_tree(const char *dir) { CHECK(nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS) == 0); }

/* A deterministic value in [-2, 2) (a tiny LCG: the data need not be random, only varied). */
static float next_value(uint32_t *state) {
  *state = *state * 1664525u + 1013904223u;
  return (float)(*state >> 8) / (float)(1 << 24) * 4 - 2;
}

/* dir/data.npz: "x" float32 [ROWS, h, w] and "label" int64 [ROWS] in 0..2; the raw x into raw. */
static void write_data(const char *dir, int64_t h, int64_t w, float *raw) {
  char path[512];
  snprintf(path, sizeof path, "%s/data.npz", dir);
  kx_writer *wr;
  CHECK_OK(kx_npz_writer_open(path, &wr));
  static const char *const names[] = {"x", "label"};
  uint32_t state = 7;
  for (int64_t i = 0; i < ROWS; i++) {
    kiln_record r;
    CHECK_OK(kiln_record_init(&r, names, 2, 0, NULL));
    CHECK_OK(kiln_tensor_alloc(&r.values[0], KILN_FLOAT, 2, (int64_t[]){h, w}));
    CHECK_OK(kiln_tensor_alloc(&r.values[1], KILN_INT64, 0, NULL));
    float *x = r.values[0].data;
    for (int64_t k = 0; k < h * w; k++) raw[i * h * w + k] = x[k] = next_value(&state);
    *(int64_t *)r.values[1].data = (x[0] > 0.5f) + (x[1] > 0);
    CHECK_OK(wr->write(wr, &r));
    kiln_record_release(&r);
  }
  CHECK_OK(wr->finish(wr));
  wr->free(wr);
}

/* A run file over data.npz: the model's layers as given, one epoch of Adam. The map stage scales
 * x (which serving must repeat) and casts the label (which it must not: requests carry no label). */
static void write_run(const char *dir, const char *layers) {
  char path[512];
  snprintf(path, sizeof path, "%s/run.json", dir);
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  if (!f) return;
  fprintf(f,
          "{\"model\": {\"layers\": %s}, \"optimizer\": {\"adam\": {\"learning_rate\": 0.01}},"
          " \"loss\": {\"sparse_categorical_crossentropy\": {}}, \"metrics\": [\"accuracy\"],"
          " \"epochs\": 1, \"batch_size\": %d, \"seed\": 3, \"features\": \"x\", \"label\": \"label\","
          " \"data\": {\"source\": \"data.npz\", \"stages\": [{\"map\": {\"transforms\": ["
          "   {\"scale\": {\"feature\": \"x\", \"factor\": 0.5, \"offset\": 0.25}},"
          "   {\"cast\": {\"feature\": \"label\", \"dtype\": \"float\"}}]}}]}}\n",
          layers, BATCH);
  CHECK(fclose(f) == 0);
}

/* Trains `layers` for an epoch on [h, w] samples, exports into `out` and checks the export
 * against the trainer's forward pass on BATCH raw rows sent through the exported preprocessing. */
static void export_and_compare(const char *layers, int64_t h, int64_t w, const char *out) {
  char dir[] = "/tmp/kiln_export_XXXXXX", run[600], ckpt[600];
  CHECK(mkdtemp(dir) != NULL);
  float *raw = malloc(sizeof(float) * ROWS * (size_t)(h * w));
  write_data(dir, h, w, raw);
  write_run(dir, layers);
  snprintf(run, sizeof run, "%s/run.json", dir);
  snprintf(ckpt, sizeof ckpt, "%s/checkpoints", dir);
  if (!out) out = dir;
  kiln_train_options o = {.run_file = run, .threads = 2, .checkpoint_dir = ckpt, .logdir = ""};
  kiln_trainer *t = NULL;
  kiln_train_result result;
  CHECK_OK(kiln_trainer_create(&o, &t));
  if (t) CHECK_OK(kiln_trainer_fit(t, &result));
  if (t) CHECK_OK(kiln_trainer_export(t, out));

  /* raw rows -> preprocess.json (scale, cast; never the label's cast) -> the model's input */
  kiln_preprocess *p = NULL;
  kiln_tensor x_raw = {0}, x = {0};
  CHECK_OK(kiln_preprocess_load(out, &p));
  CHECK(p != NULL);
  CHECK_OK(kiln_tensor_alloc(&x_raw, KILN_FLOAT, 3, (int64_t[]){BATCH, h, w}));
  memcpy(x_raw.data, raw, sizeof(float) * BATCH * (size_t)(h * w));
  if (p) {
    const kiln_schema *schema = kiln_preprocess_schema(p);
    CHECK(schema->count == 1 && strcmp(schema->features[0].name, "x") == 0);
    CHECK_OK(kiln_preprocess_apply(p, &x_raw, 1, (const char *const[]){"x"}, &x));
  }
  for (int64_t i = 0; x.data && i < BATCH * h * w; i++) CHECK_NEAR(((float *)x.data)[i], raw[i] * 0.5f + 0.25f, 1e-6);

  kiln_model *m = NULL;
  char model_path[600];
  snprintf(model_path, sizeof model_path, "%s/model.onnx", out);
  CHECK_OK(kiln_model_load(model_path, NULL, &m));
  if (t && m && x.data) {
    kiln_model_summary sum;
    kiln_model_summarize(m, &sum);
    CHECK(sum.ir_version == 8 && strcmp(sum.producer, "kiln") == 0 && strcmp(sum.producer_version, kiln_version()) == 0);
    CHECK(sum.n_opsets == 1 && strcmp(sum.opset_domains[0], "") == 0 && sum.opset_versions[0] == 13);
    CHECK(sum.parameters >= t->net->n_params);
    const kiln_value_info *in = kiln_model_input(m, 0), *outv = kiln_model_output(m, 0);
    CHECK(kiln_model_input_count(m) == 1 && strcmp(in->name, "x") == 0 && in->rank == 3 && in->dims[0] == -1 &&
          in->dim_names[0] && strcmp(in->dim_names[0], "batch") == 0 && in->dims[1] == h && in->dims[2] == w);
    CHECK(strcmp(outv->name, "output") == 0 && outv->rank == 2 && outv->dims[1] == kx_net_output_size(t->net));

    /* the trainer's inference pass on the same rows */
    memcpy(t->net->acts[0], x.data, sizeof(float) * BATCH * (size_t)(h * w));
    kx_pass pass = {.pool = t->pool, .threads = 1, .batch = BATCH, .training = 0, .rng = &t->rng, .scratch = t->net->scratch};
    const float *y = kx_net_forward(t->net, &pass);
    kiln_tensor want = {0};
    CHECK_OK(kiln_tensor_alloc(&want, KILN_FLOAT, 2, (int64_t[]){BATCH, kx_net_output_size(t->net)}));
    memcpy(want.data, y, kiln_tensor_nbytes(&want));
    /* the outputs depend on the input (a model that ignored it would hide a wrong layout or padding) */
    double spread = 0;
    for (int64_t i = want.dims[1]; i < BATCH * want.dims[1]; i++) spread = fmax(spread, fabs((double)y[i] - y[i % want.dims[1]]));
    CHECK(spread > 1e-4);

    kiln_session *s = NULL;
    const kiln_tensor *inputs[] = {&x}, *outputs[1] = {NULL};
    CHECK_OK(kiln_session_create(m, &(kiln_session_options){0}, &s));
    if (s) CHECK_OK(kiln_session_run_tensors(s, inputs, outputs));
    if (outputs[0]) CHECK_OK(kiln_tensor_compare(outputs[0], &want, 1e-5, 1e-6));
    kiln_session_free(s);
    if (out != dir) {
      char path[600];
      snprintf(path, sizeof path, "%s/input.npy", out);
      CHECK_OK(kiln_npy_write(path, &x));
      snprintf(path, sizeof path, "%s/expected.npy", out);
      CHECK_OK(kiln_npy_write(path, &want));
    }
    kiln_tensor_release(&want);
  }
  kiln_model_free(m);
  kiln_preprocess_free(p);
  kiln_tensor_release(&x);
  kiln_tensor_release(&x_raw);
  kiln_trainer_free(t);
  free(raw);
  remove_tree(dir);
}

static void test_mlp(void) {
  export_and_compare("[\"flatten\", {\"dense\": {\"units\": 8, \"activation\": \"relu\"}}, {\"dropout\": {\"rate\": 0.25}},"
                     " {\"dense\": {\"units\": 3, \"activation\": \"softmax\"}}]",
                     4, 4, keep_dir);
}

/* Without biases, activations as layers, a reshape back into an image and its softmax (last axis). */
static void test_layer_variants(void) {
  export_and_compare("[{\"reshape\": {\"target_shape\": [6, 2]}}, {\"softmax\": {}}, \"flatten\","
                     " {\"dense\": {\"units\": 6, \"use_bias\": false}}, {\"activation\": {\"activation\": \"tanh\"}},"
                     " {\"reshape\": {\"target_shape\": [2, 3]}}, \"sigmoid\", \"flatten\", {\"dense\": {\"units\": 3, \"activation\": \"softmax\"}}]",
                     3, 4, NULL);
}

/* The image layers: NHWC in the trainer, NCHW in the graph, with transposes wherever the order of a
 * sample's values matters; batch norm on the raw [H, W] image (one channel), with only beta trained
 * and with both. */
static void test_conv(void) {
  char out[600];
  if (keep_dir) {
    snprintf(out, sizeof out, "%s/conv", keep_dir);
    CHECK(mkdir(out, 0777) == 0);
  }
  export_and_compare(
      "[{\"batch_normalization\": {\"scale\": false}}, {\"conv2d\": {\"filters\": 4, \"kernel_size\": 3, \"strides\": 2,"
      " \"padding\": \"same\", \"activation\": \"softmax\"}}, {\"batch_normalization\": {\"momentum\": 0.5}},"
      " {\"max_pooling2d\": {\"pool_size\": 2, \"strides\": 1, \"padding\": \"same\"}}, {\"conv2d\": {\"filters\": 3,"
      " \"kernel_size\": [2, 3], \"use_bias\": false, \"activation\": \"relu\"}}, {\"average_pooling2d\": {\"pool_size\": [2, 2],"
      " \"strides\": 2, \"padding\": \"same\"}}, \"flatten\", {\"reshape\": {\"target_shape\": [2, 6, 1]}},"
      " {\"conv2d\": {\"filters\": 2, \"kernel_size\": 1, \"activation\": \"tanh\"}}, \"global_average_pooling2d\","
      " {\"dense\": {\"units\": 3, \"activation\": \"softmax\"}}]",
      7, 9, keep_dir ? out : NULL);
}

static void test_errors(void) {
  char dir[] = "/tmp/kiln_export_XXXXXX", run[600], ckpt[600], missing[600];
  CHECK(mkdtemp(dir) != NULL);
  float raw[ROWS * 4];
  write_data(dir, 2, 2, raw);
  write_run(dir, "[\"flatten\", {\"dense\": {\"units\": 3}}]");
  snprintf(run, sizeof run, "%s/run.json", dir);
  snprintf(ckpt, sizeof ckpt, "%s/checkpoints", dir);
  snprintf(missing, sizeof missing, "%s/no/such/folder", dir);
  kiln_train_options o = {.run_file = run, .threads = 1, .checkpoint_dir = ckpt, .logdir = ""};
  kiln_trainer *t = NULL;
  CHECK_OK(kiln_trainer_create(&o, &t));
  if (!t) return;
  CHECK_ERROR(kiln_trainer_export(t, missing), KILN_NOT_FOUND, "no/such/folder/.model.onnx.tmp");

  /* a layer kind without a mapping (as a future layer would be) is named */
  const kx_layer_ops *ops = t->net->layers[1].ops, lstm = {.name = "lstm"};
  t->net->layers[1].ops = &lstm;
  CHECK_ERROR(kiln_trainer_export(t, dir), KILN_UNIMPLEMENTED, "layer 1 (dense) is a lstm, which has no ONNX mapping");
  t->net->layers[1].ops = ops;

  /* the graph's output is "output": an input of that name would clash */
  const char *features = t->run.features;
  t->run.features = "output";
  CHECK_ERROR(kiln_trainer_export(t, dir), KILN_INVALID_ARGUMENT, "may not be named 'output'");
  t->run.features = features;

  /* the schema comes from the training source: one that vanished is reported */
  char data[600];
  snprintf(data, sizeof data, "%s/data.npz", dir);
  CHECK(remove(data) == 0);
  CHECK_ERROR(kiln_trainer_export(t, dir), KILN_INVALID_ARGUMENT, "inferring the schema of feature 'x' from the training data: ");
  kiln_trainer_free(t);
  remove_tree(dir);
}

int main(int argc, char **argv) {
  static const test_case tests[] = {TEST(test_mlp), TEST(test_layer_variants), TEST(test_conv), TEST(test_errors)};
  keep_dir = argc > 1 ? argv[1] : NULL;
  for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
    int before = test_failures;
    tests[i].fn();
    fprintf(stderr, "%s %s\n", test_failures == before ? "ok  " : "FAIL", tests[i].name);
  }
  return test_failures ? 1 : 0;
}
