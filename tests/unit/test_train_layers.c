/* The trainer's layers: every kind's backward pass against central finite differences, conv2d,
 * pooling and batch norm against PyTorch (fixtures written by
 * tests/data/make_train_layer_fixtures.py), dropout's mask, batch norm's moving statistics, output
 * shapes and parameter counts against Keras', and the errors of bad layer configs. */
#include "test.h"

#include "train/train.h"

#include <stdint.h>

#include <cjson/cJSON.h>

static kiln_pool *pool;

static kx_net *net_from(const char *json, kx_shape in, int64_t batch) {
  cJSON *m = cJSON_Parse(json);
  CHECK(m != NULL);
  kx_rng rng = {42};
  kx_net *n = NULL;
  if (m) CHECK_OK(kx_net_create(m, &in, batch, &rng, &n));
  cJSON_Delete(m);
  return n;
}

static kiln_status net_error(const char *json, kx_shape in) {
  cJSON *m = cJSON_Parse(json);
  if (!m) return kiln_error(KILN_INTERNAL, "bad JSON in the test: %s", json);
  kx_rng rng = {42};
  kx_net *n = NULL;
  kiln_status s = kx_net_create(m, &in, 4, &rng, &n);
  kx_net_free(n);
  cJSON_Delete(m);
  return s;
}

static kx_pass pass_for(kx_net *n, int64_t batch, int training, kx_rng *rng) {
  return (kx_pass){.pool = pool, .threads = 2, .batch = batch, .training = training, .rng = rng, .scratch = n->scratch};
}

static void fill_uniform(float *a, int64_t count, kx_rng *r, float lo, float hi) {
  for (int64_t i = 0; i < count; i++) a[i] = lo + (hi - lo) * kx_rng_uniform(r);
}

static float *floats(int64_t count) {
  float *a = calloc((size_t)(count > 0 ? count : 1), sizeof(float));
  if (!a) abort();
  return a;
}

/* ---------------------------------------------------------------- finite differences */

#define DROPOUT_SEED 7

static int is_max_pool(const kx_layer *l) { return strcmp(l->ops->name, "max_pooling2d") == 0; }

/* The loss sum(y * r) in double after a forward whose dropout draws the same mask every time;
 * *sig hashes every piecewise choice the forward made (which relu outputs are positive, where
 * each max came from), so that a step that crosses a kink or a tie can be told apart. */
static double loss_at(kx_net *n, int64_t batch, int training, const float *r, uint64_t *sig) {
  kx_rng rng = {DROPOUT_SEED};
  kx_pass p = pass_for(n, batch, training, &rng);
  const float *y = kx_net_forward(n, &p);
  double sum = 0;
  for (int64_t i = 0; i < batch * kx_net_output_size(n); i++) sum += (double)y[i] * r[i];
  uint64_t h = 1469598103934665603ull;
  for (int i = 0; i < n->n_layers; i++) {
    const kx_layer *l = &n->layers[i];
    if (l->act == KX_ACTFN_RELU)
      for (int64_t j = 0; j < batch * kx_shape_size(&l->out); j++) h = (h ^ (uint64_t)(((const float *)n->acts[i + 1])[j] > 0)) * 1099511628211ull;
    if (is_max_pool(l))
      for (int64_t j = 0; j < batch * l->saved_per_sample; j++) h = (h ^ (uint64_t)l->saved[j]) * 1099511628211ull;
  }
  *sig = h;
  return sum;
}

/* The backward pass from dy = r through every layer, the first one included, so that its input
 * gradient lands in dinput; parameter gradients in n->grads. */
static void gradients(kx_net *n, int64_t batch, int training, const float *r, float *dinput) {
  kx_rng rng = {DROPOUT_SEED};
  kx_pass p = pass_for(n, batch, training, &rng);
  kx_net_forward(n, &p);
  for (int64_t i = 0; i < n->n_params; i++) n->grads[i] = NAN; /* backward must write every gradient */
  int64_t count = batch * kx_net_output_size(n);
  float *dy = floats(count);
  memcpy(dy, r, (size_t)count * sizeof(float));
  for (int i = n->n_layers - 1; i >= 0; i--) {
    kx_layer *l = &n->layers[i];
    float *dx = i ? floats(batch * kx_shape_size(&l->in)) : dinput;
    if (l->ops->view) memcpy(dx, dy, (size_t)(batch * kx_shape_size(&l->in)) * sizeof *dx); /* flatten, reshape */
    else l->ops->backward(&p, l, n->acts[i], n->acts[i + 1], dy, dx);
    free(dy);
    dy = dx;
  }
}

typedef struct fd_stats {
  int checked, skipped, failed;
} fd_stats;

/* Checks up to ~120 entries of v (parameters or inputs) against (L(v + h) - L(v - h)) / 2h. */
static void check_entries(const char *name, const char *what, kx_net *n, int64_t batch, int training, const float *r,
                          float *v, int64_t count, const float *analytic, float h, uint64_t sig0, fd_stats *st) {
  int64_t step = count > 120 ? count / 120 + 1 : 1;
  for (int64_t i = count > 120 ? 3 % step : 0; i < count; i += step) {
    float keep = v[i], up = keep + h, down = keep - h;
    uint64_t sig_up, sig_down;
    v[i] = up;
    double l_up = loss_at(n, batch, training, r, &sig_up);
    v[i] = down;
    double l_down = loss_at(n, batch, training, r, &sig_down);
    v[i] = keep;
    if (sig_up != sig0 || sig_down != sig0) { /* crossed a relu kink or a max pooling tie */
      st->skipped++;
      continue;
    }
    st->checked++;
    double fd = (l_up - l_down) / ((double)up - (double)down), an = analytic[i];
    double tol = 1e-2 * fmax(fabs(fd), fabs(an)) + 2e-3;
    if (!(fabs(fd - an) <= tol)) {
      if (st->failed++ < 5)
        fprintf(stderr, "%s: d loss / d %s[%lld]: backward %.7g, finite difference %.7g\n", name, what, (long long)i, an, fd);
    }
  }
}

/* Builds `json` on samples of shape `in`, draws an input and r, and compares every parameter
 * gradient and the input gradient against finite differences with step h. */
static void check_layers(const char *name, const char *json, kx_shape in, int64_t batch, int training, float h) {
  kx_net *n = net_from(json, in, batch);
  if (!n) {
    fprintf(stderr, "%s: no network\n", name);
    return;
  }
  kx_rng rng = {1234};
  int64_t in_count = batch * kx_shape_size(&in), out_count = batch * kx_net_output_size(n);
  float *r = floats(out_count), *dinput = floats(in_count), *grads = floats(n->n_params);
  fill_uniform(n->input, in_count, &rng, -1, 1);
  fill_uniform(r, out_count, &rng, -1, 1);
  /* Layers whose defaults start at zero or one get random values, so their gradients matter. */
  for (int i = 0; i < n->n_layers; i++)
    if (strcmp(n->layers[i].ops->name, "batch_normalization") == 0 || n->layers[i].use_bias)
      fill_uniform(n->layers[i].params, n->layers[i].n_params, &rng, -1, 1);
  uint64_t sig0;
  loss_at(n, batch, training, r, &sig0);
  gradients(n, batch, training, r, dinput);
  if (n->n_params) memcpy(grads, n->grads, (size_t)n->n_params * sizeof(float));

  /* The network's own backward pass gives the same parameter gradients. */
  float *dy = floats(out_count);
  memcpy(dy, r, (size_t)out_count * sizeof(float));
  kx_rng drop = {DROPOUT_SEED};
  kx_pass p = pass_for(n, batch, training, &drop);
  kx_net_forward(n, &p);
  kx_net_backward(n, &p, dy);
  CHECK(n->n_params == 0 || memcmp(grads, n->grads, (size_t)n->n_params * sizeof(float)) == 0);

  fd_stats st = {0};
  check_entries(name, "params", n, batch, training, r, n->params, n->n_params, grads, h, sig0, &st);
  check_entries(name, "input", n, batch, training, r, n->input, in_count, dinput, h, sig0, &st);
  if (st.failed || st.checked == 0 || st.checked < 10 || st.skipped * 5 > st.checked + st.skipped) {
    fprintf(stderr, "%s: %d gradients checked, %d failed, %d skipped (kinks)\n", name, st.checked, st.failed, st.skipped);
    test_failures++;
  }
  free(dy);
  free(r);
  free(dinput);
  free(grads);
  kx_net_free(n);
}

#define VEC(n) ((kx_shape){1, {n}})
#define IMG(h, w, c) ((kx_shape){3, {h, w, c}})

static void test_dense_gradients(void) {
  static const char *const acts[] = {"linear", "relu", "sigmoid", "tanh", "softmax"};
  for (int i = 0; i < 5; i++) {
    char json[256], name[64];
    snprintf(json, sizeof json, "{\"layers\": [{\"dense\": {\"units\": 5, \"activation\": \"%s\"}}]}", acts[i]);
    snprintf(name, sizeof name, "dense %s", acts[i]);
    check_layers(name, json, VEC(6), 3, 1, 1e-2f);
  }
  check_layers("dense without bias", "{\"layers\": [{\"dense\": {\"units\": 4, \"use_bias\": false}}]}", VEC(7), 2, 1, 1e-2f);
  check_layers("dense, dense", "{\"layers\": [{\"dense\": {\"units\": 6, \"activation\": \"tanh\"}}, {\"dense\": {\"units\": 3}}]}",
               VEC(5), 4, 1, 1e-2f);
}

static void test_conv2d_gradients(void) {
  check_layers("conv2d valid relu", "{\"layers\": [{\"conv2d\": {\"filters\": 3, \"kernel_size\": 3, \"activation\": \"relu\"}}]}",
               IMG(6, 5, 2), 2, 1, 2e-3f);
  check_layers("conv2d same relu",
               "{\"layers\": [{\"conv2d\": {\"filters\": 3, \"kernel_size\": [3, 2], \"padding\": \"same\", \"activation\": \"relu\"}}]}",
               IMG(5, 6, 2), 2, 1, 2e-3f);
  check_layers("conv2d same strided relu",
               "{\"layers\": [{\"conv2d\": {\"filters\": 4, \"kernel_size\": 3, \"strides\": 2, \"padding\": \"same\", \"activation\": \"relu\"}}]}",
               IMG(7, 6, 2), 2, 1, 2e-3f);
  check_layers("conv2d valid strided tanh",
               "{\"layers\": [{\"conv2d\": {\"filters\": 2, \"kernel_size\": [2, 3], \"strides\": [2, 1], \"activation\": \"tanh\"}}]}",
               IMG(7, 6, 3), 2, 1, 1e-2f);
  check_layers("conv2d 1x1 sigmoid",
               "{\"layers\": [{\"conv2d\": {\"filters\": 3, \"kernel_size\": 1, \"activation\": \"sigmoid\"}}]}", IMG(3, 4, 5), 2, 1,
               1e-2f);
  check_layers("conv2d whole image", "{\"layers\": [{\"conv2d\": {\"filters\": 3, \"kernel_size\": [3, 4]}}]}", IMG(3, 4, 2), 3, 1,
               1e-2f);
  check_layers("conv2d on [H, W] without bias",
               "{\"layers\": [{\"conv2d\": {\"filters\": 2, \"kernel_size\": 3, \"padding\": \"same\", \"use_bias\": false}}]}",
               ((kx_shape){2, {5, 5}}), 2, 1, 1e-2f);
  check_layers("conv2d softmax over channels",
               "{\"layers\": [{\"conv2d\": {\"filters\": 4, \"kernel_size\": 2, \"activation\": \"softmax\"}}]}", IMG(4, 4, 2), 2, 1,
               1e-2f);
}

static void test_pooling_gradients(void) {
  check_layers("max_pooling2d valid", "{\"layers\": [\"max_pooling2d\"]}", IMG(6, 5, 3), 2, 1, 1e-3f);
  check_layers("max_pooling2d same overlapping",
               "{\"layers\": [{\"max_pooling2d\": {\"pool_size\": 3, \"strides\": 2, \"padding\": \"same\"}}]}", IMG(6, 7, 2), 2, 1,
               1e-3f);
  check_layers("max_pooling2d strides 1", "{\"layers\": [{\"max_pooling2d\": {\"pool_size\": [2, 3], \"strides\": 1}}]}",
               ((kx_shape){2, {5, 5}}), 2, 1, 1e-3f);
  check_layers("average_pooling2d valid", "{\"layers\": [{\"average_pooling2d\": {\"pool_size\": [2, 3]}}]}", IMG(5, 7, 2), 2, 1,
               1e-2f);
  check_layers("average_pooling2d same",
               "{\"layers\": [{\"average_pooling2d\": {\"pool_size\": 3, \"strides\": 2, \"padding\": \"same\"}}]}", IMG(6, 5, 3), 2,
               1, 1e-2f);
  check_layers("global_average_pooling2d", "{\"layers\": [\"global_average_pooling2d\"]}", IMG(3, 4, 5), 3, 1, 1e-2f);
}

static void test_batch_normalization_gradients(void) {
  check_layers("batch_normalization on images", "{\"layers\": [\"batch_normalization\"]}", IMG(3, 3, 4), 4, 1, 1e-2f);
  check_layers("batch_normalization on vectors", "{\"layers\": [\"batch_normalization\"]}", VEC(5), 6, 1, 1e-2f);
  check_layers("batch_normalization without scale or center",
               "{\"layers\": [{\"batch_normalization\": {\"center\": false}}, {\"batch_normalization\": {\"scale\": false}}]}",
               IMG(2, 3, 3), 4, 1, 1e-2f);
  check_layers("batch_normalization at inference", "{\"layers\": [\"batch_normalization\"]}", IMG(2, 2, 3), 3, 0, 1e-2f);
}

static void test_other_layer_gradients(void) {
  check_layers("flatten", "{\"layers\": [\"flatten\", {\"dense\": {\"units\": 3}}]}", IMG(2, 3, 2), 2, 1, 1e-2f);
  check_layers("reshape", "{\"layers\": [{\"reshape\": {\"target_shape\": [3, 2, 2]}}, {\"conv2d\": {\"filters\": 2, \"kernel_size\": 2}}]}",
               VEC(12), 2, 1, 1e-2f);
  check_layers("dropout", "{\"layers\": [{\"dropout\": {\"rate\": 0.4}}, {\"dense\": {\"units\": 3, \"activation\": \"tanh\"}}]}",
               VEC(10), 3, 1, 1e-2f);
  static const char *const acts[] = {"relu", "sigmoid", "tanh", "softmax"};
  for (int i = 0; i < 4; i++) {
    char json[128];
    snprintf(json, sizeof json, "{\"layers\": [\"%s\"]}", acts[i]);
    check_layers(acts[i], json, IMG(2, 3, 4), 2, 1, 1e-2f);
  }
  check_layers("activation", "{\"layers\": [{\"activation\": {\"activation\": \"sigmoid\"}}]}", VEC(7), 2, 1, 1e-2f);
  check_layers("a small CNN",
               "{\"layers\": [{\"conv2d\": {\"filters\": 4, \"kernel_size\": 3, \"activation\": \"relu\"}}, \"max_pooling2d\","
               " \"batch_normalization\", {\"conv2d\": {\"filters\": 3, \"kernel_size\": 2, \"padding\": \"same\"}},"
               " \"flatten\", {\"dropout\": {\"rate\": 0.25}}, {\"dense\": {\"units\": 4, \"activation\": \"softmax\"}}]}",
               ((kx_shape){2, {8, 8}}), 3, 1, 1e-3f);
}

/* ---------------------------------------------------------------- against PyTorch */

static int load(const char *fixture, const char *name, kiln_tensor *t) {
  char path[512];
  const char *dir = getenv("KILN_TEST_DATA");
  snprintf(path, sizeof path, "%s/train/%s_%s.npy", dir ? dir : "tests/data", fixture, name);
  kiln_status s = kiln_npy_read(path, t);
  CHECK_OK(s);
  return s == NULL && t->dtype == KILN_FLOAT;
}

/* got (laid out as want) against the fixture `name`, rtol 1e-4 (with a floor for values near 0). */
static void compare(const char *fixture, const char *name, const float *got) {
  kiln_tensor want = {0}, g = {0};
  if (!load(fixture, name, &want)) return;
  CHECK_OK(kiln_tensor_set_shape(&g, KILN_FLOAT, want.rank, want.dims));
  g.data = (void *)got;
  kiln_status s = kiln_tensor_compare(&g, &want, 1e-4, 1e-5);
  if (s) {
    fprintf(stderr, "%s %s: %s\n", fixture, name, kiln_status_message(s));
    kiln_status_free(s);
    test_failures++;
  }
  kiln_tensor_release(&want);
}

/* Loads the fixture's input and parameters (in kiln's order), runs one training forward and the
 * backward from dy = r, and compares y, dx and each parameter gradient with PyTorch's. */
static void check_torch(const char *fixture, const char *json, const char *const *params, const char *const *grads) {
  kiln_tensor x = {0}, r = {0};
  if (!load(fixture, "x", &x) || !load(fixture, "r", &r)) return;
  int64_t batch = x.dims[0];
  kx_net *n = net_from(json, (kx_shape){3, {x.dims[1], x.dims[2], x.dims[3]}}, batch);
  CHECK(n && kiln_tensor_numel(&r) == batch * kx_net_output_size(n));
  if (n && kiln_tensor_numel(&r) == batch * kx_net_output_size(n)) {
    int64_t at = 0;
    for (int i = 0; params[i]; i++) {
      kiln_tensor t = {0};
      if (load(fixture, params[i], &t) && at + kiln_tensor_numel(&t) <= n->n_params)
        memcpy(n->params + at, t.data, kiln_tensor_nbytes(&t));
      at += kiln_tensor_numel(&t);
      kiln_tensor_release(&t);
    }
    CHECK(at == n->n_params);
    memcpy(n->input, x.data, kiln_tensor_nbytes(&x));
    float *dx = floats(kiln_tensor_numel(&x));
    gradients(n, batch, 1, r.data, dx);
    compare(fixture, "y", n->output);
    compare(fixture, "dx", dx);
    at = 0;
    for (int i = 0; grads[i]; i++) {
      compare(fixture, grads[i], n->grads + at);
      kiln_tensor t = {0};
      if (load(fixture, grads[i], &t)) at += kiln_tensor_numel(&t);
      kiln_tensor_release(&t);
    }
    free(dx);
  }
  kx_net_free(n);
  kiln_tensor_release(&x);
  kiln_tensor_release(&r);
}

static void test_against_torch(void) {
  static const char *const none[] = {NULL};
  check_torch("conv2d_same_s2_relu",
              "{\"layers\": [{\"conv2d\": {\"filters\": 4, \"kernel_size\": 3, \"strides\": 2, \"padding\": \"same\", \"activation\": \"relu\"}}]}",
              (const char *const[]){"kernel", "bias", NULL}, (const char *const[]){"dkernel", "dbias", NULL});
  check_torch("max_pooling2d_same", "{\"layers\": [{\"max_pooling2d\": {\"pool_size\": 3, \"strides\": 2, \"padding\": \"same\"}}]}",
              none, none);
  check_torch("average_pooling2d_same", "{\"layers\": [{\"average_pooling2d\": {\"padding\": \"same\"}}]}", none, none);
  check_torch("batch_normalization_training", "{\"layers\": [\"batch_normalization\"]}",
              (const char *const[]){"gamma", "beta", NULL}, (const char *const[]){"dgamma", "dbeta", NULL});

  /* One training step moves the moving statistics as Keras does (biased batch variance). */
  kiln_tensor x = {0};
  if (!load("batch_normalization_training", "x", &x)) return;
  kx_net *n = net_from("{\"layers\": [\"batch_normalization\"]}", (kx_shape){3, {x.dims[1], x.dims[2], x.dims[3]}}, x.dims[0]);
  if (n) {
    memcpy(n->input, x.data, kiln_tensor_nbytes(&x));
    kx_pass p = pass_for(n, x.dims[0], 1, NULL);
    kx_net_forward(n, &p);
    compare("batch_normalization_training", "moving_mean", n->state);
    compare("batch_normalization_training", "moving_variance", n->state + x.dims[3]);
  }
  kx_net_free(n);
  kiln_tensor_release(&x);
}

/* ---------------------------------------------------------------- layer behaviour */

/* Keras' output shapes and parameter counts for a Fashion-MNIST CNN, and its initial values. */
static void test_shapes_and_init(void) {
  kx_net *n = net_from("{\"layers\": [{\"conv2d\": {\"filters\": 32, \"kernel_size\": 3, \"activation\": \"relu\"}}, \"max_pooling2d\","
                       " {\"conv2d\": {\"filters\": 64, \"kernel_size\": 3, \"strides\": 2, \"padding\": \"same\"}},"
                       " \"batch_normalization\", {\"average_pooling2d\": {\"pool_size\": 3, \"strides\": 2}},"
                       " \"global_average_pooling2d\", {\"dense\": {\"units\": 10}}]}",
                       (kx_shape){2, {28, 28}}, 8);
  if (!n) return;
  static const int64_t shapes[][3] = {{26, 26, 32}, {13, 13, 32}, {7, 7, 64}, {7, 7, 64}, {3, 3, 64}, {64, 0, 0}, {10, 0, 0}};
  static const int64_t params[] = {320, 0, 18496, 128, 0, 0, 650};
  for (int i = 0; i < n->n_layers; i++) {
    const kx_layer *l = &n->layers[i];
    for (int d = 0; d < l->out.rank; d++) CHECK(l->out.d[d] == shapes[i][d]);
    CHECK(l->n_params == params[i]);
  }
  CHECK(strcmp(n->layers[2].name, "conv2d_1") == 0);
  CHECK(n->n_state == 128);
  /* Glorot uniform: within sqrt(6 / (fan_in + fan_out)) and filling it; zero bias */
  const kx_layer *c = &n->layers[2];
  double limit = sqrt(6.0 / (9 * 32 + 9 * 64)), most = 0;
  for (int64_t i = 0; i < 9 * 32 * 64; i++) most = fmax(most, fabs(c->params[i]));
  CHECK(most <= limit && most > 0.99 * limit);
  for (int64_t i = 9 * 32 * 64; i < c->n_params; i++) CHECK(c->params[i] == 0);
  const kx_layer *bn = &n->layers[3];
  for (int t = 0; t < 64; t++) {
    CHECK(bn->params[t] == 1 && bn->params[64 + t] == 0);
    CHECK(bn->state[t] == 0 && bn->state[64 + t] == 1);
  }
  kx_net_free(n);
}

/* Inference uses the moving statistics: y = gamma * (x - mean) / sqrt(var + eps) + beta. */
static void test_batch_normalization_inference(void) {
  kx_net *n = net_from("{\"layers\": [{\"batch_normalization\": {\"epsilon\": 0.01}}]}", IMG(2, 2, 3), 2);
  if (!n) return;
  kx_rng rng = {5};
  fill_uniform(n->params, 6, &rng, 0.5f, 2);
  fill_uniform(n->state, 3, &rng, -1, 1);
  fill_uniform(n->state + 3, 3, &rng, 0.1f, 3);
  fill_uniform(n->input, 24, &rng, -2, 2);
  float state[6];
  memcpy(state, n->state, sizeof state);
  kx_pass p = pass_for(n, 2, 0, NULL);
  const float *y = kx_net_forward(n, &p);
  for (int i = 0; i < 24; i++) {
    int t = i % 3;
    double want = n->params[t] * (n->input[i] - state[t]) / sqrt(state[3 + t] + 0.01) + n->params[3 + t];
    CHECK_NEAR(y[i], want, 1e-5 * (1 + fabs(want)));
  }
  CHECK(memcmp(state, n->state, sizeof state) == 0); /* inference leaves them alone */
  kx_net_free(n);
}

/* Dropout drops about `rate` of the values, scales the rest by 1 / (1 - rate), draws its mask
 * from the pass's generator, and is the identity at inference. */
static void test_dropout_mask(void) {
  kx_net *n = net_from("{\"layers\": [{\"dropout\": {\"rate\": 0.3}}]}", VEC(1000), 20);
  if (!n) return;
  for (int i = 0; i < 20000; i++) n->input[i] = 1.5f;
  kx_rng rng = {99};
  kx_pass p = pass_for(n, 20, 1, &rng);
  const float *y = kx_net_forward(n, &p);
  int dropped = 0, odd = 0;
  for (int i = 0; i < 20000; i++) {
    dropped += y[i] == 0;
    odd += y[i] != 0 && y[i] != 1.5f * (1 / 0.7f);
  }
  double sigma = sqrt(0.3 * 0.7 / 20000);
  CHECK(fabs(dropped / 20000.0 - 0.3) < 5 * sigma);
  CHECK(odd == 0);
  /* the same seed gives the same mask; the next draw a different one */
  float *first = floats(20000);
  memcpy(first, y, 20000 * sizeof(float));
  kx_net_forward(n, &p);
  CHECK(memcmp(first, y, 20000 * sizeof(float)) != 0);
  rng.state = 99;
  kx_net_forward(n, &p);
  CHECK(memcmp(first, y, 20000 * sizeof(float)) == 0);
  p.training = 0;
  kx_net_forward(n, &p);
  for (int i = 0; i < 20000; i++) odd += y[i] != 1.5f;
  CHECK(odd == 0);
  free(first);
  kx_net_free(n);
}

/* "same" average pooling divides by the cells inside the image: a 3x3 image of ones pooled 2x2
 * with stride 2 averages to one everywhere, including the windows half over the padding. */
static void test_average_pooling_same_counts(void) {
  kx_net *n = net_from("{\"layers\": [{\"average_pooling2d\": {\"padding\": \"same\"}}]}", IMG(3, 3, 1), 1);
  if (!n) return;
  for (int i = 0; i < 9; i++) n->input[i] = 1;
  kx_pass p = pass_for(n, 1, 1, NULL);
  const float *y = kx_net_forward(n, &p);
  CHECK(n->layers[0].out.d[0] == 2 && n->layers[0].out.d[1] == 2);
  for (int i = 0; i < 4; i++) CHECK(y[i] == 1);
  kx_net_free(n);
}

static void test_config_errors(void) {
  kx_shape img = IMG(5, 5, 2);
  CHECK_ERROR(net_error("{\"layers\": [{\"conv2d\": {\"filters\": 2, \"kernel_size\": 3, \"dilation_rate\": 2}}]}", img),
              KILN_INVALID_ARGUMENT, "model.layers[0].conv2d: unknown key 'dilation_rate'");
  CHECK_ERROR(net_error("{\"layers\": [{\"conv2d\": {\"filters\": 2, \"kernel_size\": []}}]}", img), KILN_INVALID_ARGUMENT,
              "model.layers[0].conv2d.kernel_size: expected an integer or a pair of integers, got an empty list");
  CHECK_ERROR(net_error("{\"layers\": [\"flatten\", {\"max_pooling2d\": {\"pool\": 2}}]}", img), KILN_INVALID_ARGUMENT,
              "model.layers[1].max_pooling2d: unknown key 'pool'");
  CHECK_ERROR(net_error("{\"layers\": [{\"batch_normalization\": {\"axis\": 1}}]}", img), KILN_INVALID_ARGUMENT,
              "model.layers[0].batch_normalization: unknown key 'axis'");
  CHECK_ERROR(net_error("{\"layers\": [{\"conv2d\": {\"filters\": 2, \"kernel_size\": [3, 6]}}]}", img), KILN_INVALID_ARGUMENT,
              "model.layers[0] (conv2d): kernel 3x6 is larger than the input 5x5 (padding \"valid\")");
  CHECK_ERROR(net_error("{\"layers\": [{\"conv2d\": {\"filters\": 2, \"kernel_size\": 2}}, {\"conv2d\": {\"filters\": 2, \"kernel_size\": 5}}]}", img),
              KILN_INVALID_ARGUMENT, "model.layers[1] (conv2d_1): kernel 5x5 is larger than the input 4x4");
  CHECK_ERROR(net_error("{\"layers\": [{\"max_pooling2d\": {\"pool_size\": 6}}]}", img), KILN_INVALID_ARGUMENT,
              "model.layers[0] (max_pooling2d): pool 6x6 is larger than the input 5x5");
  CHECK_ERROR(net_error("{\"layers\": [{\"average_pooling2d\": {\"padding\": \"full\"}}]}", img), KILN_INVALID_ARGUMENT,
              "model.layers[0].average_pooling2d.padding: expected \"valid\" or \"same\", got \"full\"");
  CHECK_ERROR(net_error("{\"layers\": [{\"conv2d\": {\"filters\": 2, \"kernel_size\": 3, \"padding\": 1}}]}", img),
              KILN_INVALID_ARGUMENT, "model.layers[0].conv2d.padding: expected a string");
  CHECK_ERROR(net_error("{\"layers\": [{\"conv2d\": {\"filters\": 2}}]}", img), KILN_INVALID_ARGUMENT,
              "model.layers[0].conv2d: missing required key 'kernel_size'");
  CHECK_ERROR(net_error("{\"layers\": [{\"conv2d\": {\"filters\": 2, \"kernel_size\": [3, 3, 3]}}]}", img), KILN_INVALID_ARGUMENT,
              "model.layers[0].conv2d.kernel_size: more than 2 values");
  CHECK_ERROR(net_error("{\"layers\": [{\"conv2d\": {\"filters\": 2, \"kernel_size\": 2.5}}]}", img), KILN_INVALID_ARGUMENT,
              "model.layers[0].conv2d.kernel_size: expected an integer or a pair of integers in [1, 4096], got 2.5");
  CHECK_ERROR(net_error("{\"layers\": [{\"conv2d\": {\"filters\": 2, \"kernel_size\": 3, \"strides\": [1, 0]}}]}", img),
              KILN_INVALID_ARGUMENT, "model.layers[0].conv2d.strides: expected an integer or a pair of integers in [1, 4096], got 0");
  CHECK_ERROR(net_error("{\"layers\": [{\"conv2d\": {\"filters\": 0, \"kernel_size\": 3}}]}", img), KILN_INVALID_ARGUMENT,
              "model.layers[0].conv2d.filters");
  CHECK_ERROR(net_error("{\"layers\": [{\"conv2d\": {\"filters\": 2, \"kernel_size\": 3, \"activation\": \"gelu\"}}]}", img),
              KILN_INVALID_ARGUMENT, "model.layers[0].conv2d: unknown activation 'gelu'");
  CHECK_ERROR(net_error("{\"layers\": [\"flatten\", {\"conv2d\": {\"filters\": 2, \"kernel_size\": 3}}]}", img), KILN_INVALID_ARGUMENT,
              "model.layers[1] (conv2d): conv2d takes images [H, W, C] (or [H, W]) per sample, got a vector of 50 values");
  CHECK_ERROR(net_error("{\"layers\": [\"flatten\", \"global_average_pooling2d\"]}", img), KILN_INVALID_ARGUMENT,
              "model.layers[1] (global_average_pooling2d): global_average_pooling2d takes images");
  CHECK_ERROR(net_error("{\"layers\": [{\"batch_normalization\": {\"momentum\": 1.5}}]}", img), KILN_INVALID_ARGUMENT,
              "model.layers[0].batch_normalization.momentum: expected a number in [0, 1], got 1.5");
  CHECK_ERROR(net_error("{\"layers\": [{\"batch_normalization\": {\"epsilon\": 0}}]}", img), KILN_INVALID_ARGUMENT,
              "model.layers[0].batch_normalization.epsilon");
  CHECK_ERROR(net_error("{\"layers\": [{\"conv2d\": {\"filters\": 1048576, \"kernel_size\": 4096}}]}", IMG(4096, 4096, 1)),
              KILN_INVALID_ARGUMENT, "is over kiln's limit");
}

static void setup(void) { CHECK_OK(kiln_pool_create(2, &pool)); }
static void teardown(void) { kiln_pool_free(pool); }

TEST_MAIN(TEST(setup), TEST(test_dense_gradients), TEST(test_conv2d_gradients), TEST(test_pooling_gradients),
          TEST(test_batch_normalization_gradients), TEST(test_other_layer_gradients), TEST(test_against_torch),
          TEST(test_shapes_and_init), TEST(test_batch_normalization_inference), TEST(test_dropout_mask),
          TEST(test_average_pooling_same_counts), TEST(test_config_errors), TEST(teardown))
