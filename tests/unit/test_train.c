/* The trainer's losses, schedules and optimizers against their textbook formulas, and run-file
 * checks. With a folder argument it is the C half of the PyTorch step-by-step comparison
 * (tests/integration/test_train_torch.py): for each run*.json there it writes the initial
 * parameters, every step's loss and the final parameters as .npy files. */
#include "test.h"

#include "kiln/train.h"
#include "train/trainer.h"

#include <cjson/cJSON.h>
#include <dirent.h>

static void test_sparse_crossentropy_from_logits(void) {
  kx_loss l = {KX_LOSS_SPARSE_CCE, 1};
  const float y[] = {1, 2, 3, -1, 0, 1}, t[] = {2, 0};
  float dy[6];
  double sum = 0;
  int64_t correct = 0;
  CHECK_OK(kx_loss_compute(&l, y, t, 2, 3, 2.0, dy, &sum, &correct));
  double lse0 = log(exp(1.0) + exp(2.0) + exp(3.0)), lse1 = log(exp(-1.0) + exp(0.0) + exp(1.0));
  CHECK_NEAR(sum, (lse0 - 3) + (lse1 + 1), 1e-6);
  CHECK(correct == 1); /* row 0's arg-max is its label, row 1's is not */
  CHECK_NEAR(dy[2], (exp(3 - lse0) - 1) / 2, 1e-7);
  CHECK_NEAR(dy[3], (exp(-1 - lse1) - 1) / 2, 1e-7);
  CHECK_NEAR(dy[4], exp(0 - lse1) / 2, 1e-7);
  const float bad[] = {3, 0};
  CHECK_ERROR(kx_loss_compute(&l, y, bad, 2, 3, 1.0, dy, &sum, NULL), KILN_INVALID_ARGUMENT, "label 3 of row 0");
}

static void test_crossentropy_on_probabilities_and_mse(void) {
  kx_loss cce = {KX_LOSS_CCE, 0}, mse = {KX_LOSS_MSE, 0};
  const float p[] = {0.2f, 0.3f, 0.5f}, t[] = {0, 1, 0};
  float dy[3];
  double sum = 0;
  CHECK_OK(kx_loss_compute(&cce, p, t, 1, 3, 1.0, dy, &sum, NULL));
  CHECK_NEAR(sum, -log(0.3), 1e-6);
  /* d/dp_j of -log(p_1 / sum p): -1/p_1 + 1/sum for j = 1, 1/sum otherwise (sum = 1 here) */
  CHECK_NEAR(dy[1], -1 / 0.3 + 1, 1e-5);
  CHECK_NEAR(dy[0], 1, 1e-6);
  const float y[] = {1, 2, 4}, target[] = {0, 2, 1};
  CHECK_OK(kx_loss_compute(&mse, y, target, 1, 3, 1.0, dy, &sum, NULL));
  CHECK_NEAR(sum, (1 + 0 + 9) / 3.0, 1e-6);
  CHECK_NEAR(dy[2], 2 * 3 / 3.0, 1e-6);
}

static void test_schedules(void) {
  kx_schedule e = {.kind = KX_SCHEDULE_EXPONENTIAL, .lr = 0.1, .decay_steps = 10, .decay_rate = 0.5};
  CHECK_NEAR(kx_schedule_lr(&e, 5), 0.1 * pow(0.5, 0.5), 1e-12);
  e.staircase = 1;
  CHECK_NEAR(kx_schedule_lr(&e, 15), 0.05, 1e-12);
  kx_schedule c = {.kind = KX_SCHEDULE_COSINE, .lr = 1, .decay_steps = 100, .alpha = 0.1};
  CHECK_NEAR(kx_schedule_lr(&c, 50), 0.9 * 0.5 + 0.1, 1e-12);
  CHECK_NEAR(kx_schedule_lr(&c, 500), 0.1, 1e-12);
  kx_schedule p = {.kind = KX_SCHEDULE_PIECEWISE, .n_pieces = 2, .boundaries = {10, 20}, .values = {1, 0.5, 0.25}, .lr = 1};
  CHECK(kx_schedule_lr(&p, 10) == 1 && kx_schedule_lr(&p, 11) == 0.5 && kx_schedule_lr(&p, 21) == 0.25);
  kx_schedule_set_lr(&p, 2);
  CHECK(kx_schedule_lr(&p, 0) == 2 && kx_schedule_lr(&p, 21) == 0.5);
}

/* One Adam step by hand: Keras' form, lr * sqrt(1 - b2) / (1 - b1) * m / (sqrt(v) + eps). */
static void test_adam_and_sgd_steps(void) {
  cJSON *j = cJSON_Parse("{\"adam\": {\"learning_rate\": 0.1}}");
  kx_optim o;
  CHECK_OK(kx_optim_parse(j, &o));
  CHECK_OK(kx_optim_init(&o, 2));
  float p[2] = {1, -1}, g[2] = {4, -2};
  kx_optim_step(&o, NULL, 1, p, g, 0.5f);
  double m0 = 0.1 * 2, v0 = 0.001 * 4, step = 0.1 * sqrt(0.001) / 0.1;
  CHECK_NEAR(p[0], 1 - step * m0 / (sqrt(v0) + 1e-7), 1e-6);
  kx_optim_free(&o);
  cJSON_Delete(j);
  j = cJSON_Parse("{\"sgd\": {\"learning_rate\": 0.1, \"momentum\": 0.9, \"nesterov\": true}}");
  CHECK_OK(kx_optim_parse(j, &o));
  CHECK_OK(kx_optim_init(&o, 1));
  float q = 1, h = 1;
  kx_optim_step(&o, NULL, 1, &q, &h, 1);
  kx_optim_step(&o, NULL, 1, &q, &h, 1);
  /* m1 = -0.1, p1 = 1 - 0.09 - 0.1; m2 = -0.19, p2 = p1 - 0.171 - 0.1 */
  CHECK_NEAR(q, 1 - 0.19 - 0.271, 1e-6);
  kx_optim_free(&o);
  cJSON_Delete(j);
}

static void check_run_error(const char *json, const char *text) {
  kx_run r;
  CHECK_ERROR(kx_run_parse(json, strlen(json), NULL, &r), KILN_INVALID_ARGUMENT, text);
}

static void test_run_file_errors(void) {
  check_run_error("[1]", "run file: expected a JSON object");
  check_run_error("{\"model\": {\"layers\": []}, \"optimizer\": \"adam\", \"loss\": \"mse\", \"data\": {}, \"epochs\": 0}",
                  "run file.epochs: 0 is outside");
  check_run_error("{\"model\": {\"layers\": []}, \"optimizer\": {\"adam\": {\"beta_1\": 1.5}}, \"loss\": \"mse\", \"data\": {}}",
                  "beta_1 and beta_2 must be in [0, 1)");
  check_run_error("{\"model\": {\"layers\": []}, \"optimizer\": {\"sgd\": {\"learning_rate\": {\"cosine_decay\": {}}}}, "
                  "\"loss\": \"mse\", \"data\": {}}",
                  "missing required key 'initial_learning_rate'");
  check_run_error("{\"model\": {\"layers\": []}, \"optimizer\": \"adam\", \"loss\": \"mse\", \"metrics\": [\"accuracy\"], \"data\": {}}",
                  "accuracy metric needs a classification loss");
  check_run_error("{\"model\": {\"layers\": []}, \"optimizer\": \"adam\", \"loss\": {\"mse\": {\"from_logits\": true}}, \"data\": {}}",
                  "from_logits applies to the crossentropies");
  kx_run r;
  const char *ok = "{\"model\": {\"layers\": [\"flatten\"]}, \"optimizer\": \"sgd\", \"loss\": \"mse\", "
                   "\"data\": {\"source\": \"x.npy\", \"stages\": [{\"shuffle\": 10}, {\"shuffle\": {\"buffer_size\": 5}}]}}";
  CHECK_OK(kx_run_parse(ok, strlen(ok), NULL, &r));
  CHECK(r.optim.kind == KX_OPTIM_SGD && r.optim.schedule.lr == 0.01 && r.epochs == 1 && r.batch_size == 32);
  r.seed = 9;
  CHECK_OK(kx_run_seed_shuffles(&r));
  const cJSON *second = cJSON_GetArrayItem(cJSON_GetObjectItem(r.data, "stages"), 1)->child;
  CHECK(cJSON_GetObjectItem(second, "seed")->valuedouble == 9);
  kx_run_free(&r);
}

/* Small CNNs, one with dropout and batch norm, their gradients for one fixed batch under
 * `precision` and `recompute`; returns the activation bytes it held. */
static const char cnn[] = "{\"layers\": [{\"conv2d\": {\"filters\": 4, \"kernel_size\": 3, \"activation\": \"relu\"}}, "
                          "{\"batch_normalization\": {}}, {\"max_pooling2d\": {}}, \"flatten\", "
                          "{\"dropout\": {\"rate\": 0.3}}, {\"dense\": {\"units\": 5}}]}";
static const char marked_cnn[] = "{\"layers\": [{\"conv2d\": {\"filters\": 4, \"kernel_size\": 3, \"activation\": \"relu\"}}, "
                                 "{\"batch_normalization\": {\"recompute\": true}}, {\"max_pooling2d\": {}}, \"flatten\", "
                                 "{\"dropout\": {\"rate\": 0.3, \"recompute\": true}}, {\"dense\": {\"units\": 5}}]}";
/* without the max pooling after batch norm, whose ties 16 bits may break the other way */
static const char plain_cnn[] = "{\"layers\": [{\"conv2d\": {\"filters\": 4, \"kernel_size\": 3, \"activation\": \"relu\"}}, "
                                "{\"batch_normalization\": {}}, \"flatten\", {\"dense\": {\"units\": 5}}]}";

static size_t cnn_gradients(const char *model, kx_precision precision, int recompute, float *grads, float *state, int64_t *n_params) {
  cJSON *m = cJSON_Parse(model);
  kx_shape in = {3, {8, 8, 2}};
  kx_rng rng = {3};
  kx_net *n = NULL;
  CHECK_OK(kx_net_create(m, &in, 4, &rng, &n));
  CHECK_OK(kx_net_configure(n, precision, recompute));
  for (int64_t i = 0; i < 4 * 128; i++) n->input[i] = (float)((i * 37 % 101) / 50.0 - 1);
  kx_rng drop = {9};
  kx_pass p = {.batch = 4, .training = 1, .rng = &drop, .scratch = n->scratch, .threads = 1};
  float *y = kx_net_forward(n, &p), dy[20];
  for (int i = 0; i < 20; i++) dy[i] = y[i] * 0.5f - (float)(i % 3);
  kx_net_backward(n, &p, dy);
  memcpy(grads, n->grads, (size_t)n->n_params * sizeof *grads);
  if (n->n_state) memcpy(state, n->state, (size_t)n->n_state * sizeof *state);
  *n_params = n->n_params;
  size_t bytes = n->activation_bytes;
  kx_net_free(n);
  cJSON_Delete(m);
  return bytes;
}

/* Recomputation gives bitwise the same gradients and moving statistics (dropout redraws the same
 * mask, batch norm does not move its statistics twice) and holds fewer bytes; 16-bit storage
 * gives nearby gradients with half the bytes per stored activation. */
static void test_recompute_and_precision(void) {
  float g0[4096], g1[4096], g2[4096], s0[16] = {0}, s1[16] = {0}, s2[16] = {0};
  int64_t n0, n1, n2;
  size_t kept = cnn_gradients(cnn, KX_FP32, 0, g0, s0, &n0);
  size_t recomputed = cnn_gradients(cnn, KX_FP32, 1, g1, s1, &n1); /* every layer */
  CHECK(n0 == n1 && n0 < 4096 && memcmp(g0, g1, (size_t)n0 * sizeof *g0) == 0 && memcmp(s0, s1, sizeof s0) == 0);
  CHECK(recomputed < kept);
  cnn_gradients(marked_cnn, KX_FP32, 1, g1, s1, &n1); /* the two marked layers */
  CHECK(memcmp(g0, g1, (size_t)n0 * sizeof *g0) == 0 && memcmp(s0, s1, sizeof s0) == 0);
  kept = cnn_gradients(plain_cnn, KX_FP32, 0, g0, s0, &n0);
  size_t half = cnn_gradients(plain_cnn, KX_BF16, 0, g2, s2, &n2);
  double worst = 0, scale = 0;
  for (int64_t i = 0; i < n0; i++) {
    worst = fmax(worst, fabs(g2[i] - g0[i]));
    scale = fmax(scale, fabs(g0[i]));
  }
  CHECK(worst < 0.05 * scale);
  CHECK(half < kept + 2 * 4 * 8 * 8 * 4 * sizeof(float)); /* the 16-bit copies plus two fp32 work buffers */
  fprintf(stderr, "  activation bytes: fp32 %zu, recomputed %zu, bf16 %zu; bf16 gradients within %.2g of %.2g\n", kept,
          recomputed, half, worst, scale);
  /* dense layers read 16-bit activations themselves: an MLP keeps exactly half the bytes */
  static const char mlp[] = "{\"layers\": [\"flatten\", {\"dense\": {\"units\": 16, \"activation\": \"relu\"}}, "
                            "{\"dense\": {\"units\": 5, \"activation\": \"softmax\"}}]}";
  size_t mlp32 = cnn_gradients(mlp, KX_FP32, 0, g0, s0, &n0), mlp16 = cnn_gradients(mlp, KX_FP16, 0, g2, s2, &n2);
  CHECK(2 * mlp16 == mlp32);
  worst = scale = 0;
  for (int64_t i = 0; i < n0; i++) {
    worst = fmax(worst, fabs(g2[i] - g0[i]));
    scale = fmax(scale, fabs(g0[i]));
  }
  CHECK(worst < 0.01 * scale);
}

/* ------------------------------------------------------------ the PyTorch comparison's C half */

typedef struct losses {
  double *values;
  int64_t count, cap;
} losses;

static void record_loss(void *arg, const kiln_train_progress *p) {
  losses *l = arg;
  if (p->end_of_epoch) return;
  if (l->count == l->cap) {
    l->cap = l->cap ? 2 * l->cap : 256;
    l->values = realloc(l->values, (size_t)l->cap * sizeof *l->values);
  }
  l->values[l->count++] = p->step_loss;
}

static kiln_status write_floats(const char *path, kiln_dtype dtype, const void *data, int64_t n) {
  kiln_tensor t = {.dtype = dtype, .rank = 1, .dims = {n}, .data = (void *)data};
  return kiln_npy_write(path, &t);
}

static kiln_status dump_run(const char *dir, const char *name) {
  char path[4096], out[4200];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  losses l = {0};
  kiln_train_options o = {.run_file = path, .threads = 1, .logdir = "", .progress = record_loss, .progress_arg = &l};
  snprintf(out, sizeof out, "%s/%s.checkpoints", dir, name);
  o.checkpoint_dir = out;
  kiln_trainer *t;
  kiln_status s = kiln_trainer_create(&o, &t);
  if (s) return s;
  snprintf(out, sizeof out, "%s/%s.init.npy", dir, name);
  s = write_floats(out, KILN_FLOAT, t->net->params, t->net->n_params);
  kiln_train_result r;
  if (!s) s = kiln_trainer_fit(t, &r);
  snprintf(out, sizeof out, "%s/%s.final.npy", dir, name);
  if (!s) s = write_floats(out, KILN_FLOAT, t->net->params, t->net->n_params);
  snprintf(out, sizeof out, "%s/%s.losses.npy", dir, name);
  if (!s) s = write_floats(out, KILN_DOUBLE, l.values, l.count);
  free(l.values);
  kiln_trainer_free(t);
  return s;
}

static const test_case tests[] = {TEST(test_sparse_crossentropy_from_logits), TEST(test_crossentropy_on_probabilities_and_mse),
                                  TEST(test_schedules), TEST(test_adam_and_sgd_steps), TEST(test_run_file_errors),
                                  TEST(test_recompute_and_precision)};

int main(int argc, char **argv) {
  if (argc > 1) {
    DIR *d = opendir(argv[1]);
    int failed = !d;
    for (struct dirent *e; d && (e = readdir(d));) {
      size_t n = strlen(e->d_name);
      if (strncmp(e->d_name, "run", 3) != 0 || n < 5 || strcmp(e->d_name + n - 5, ".json") != 0) continue;
      kiln_status s = dump_run(argv[1], e->d_name);
      if (s) fprintf(stderr, "%s: %s\n", e->d_name, kiln_status_message(s));
      failed |= s != NULL;
      kiln_status_free(s);
    }
    if (d) closedir(d);
    return failed;
  }
  for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
    int before = test_failures;
    tests[i].fn();
    fprintf(stderr, "%s %s\n", test_failures == before ? "ok  " : "FAIL", tests[i].name);
  }
  return test_failures ? 1 : 0;
}
