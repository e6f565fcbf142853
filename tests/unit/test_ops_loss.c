/* NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss against a naive reference written like
 * ONNX's (per-element loop, weights gathered per target, mean over the counted weight), over
 * ranks 2..4, all reductions, with and without weights and ignore_index; plus bad inputs. */
#include "op_harness.h"

static kiln_model *loss_model(const char *op, const char *reduction, int has_weight, int has_ignore, int64_t ignore, int log_prob) {
  tb_model *b = tb_new(13);
  tb_input(b, "x", KILN_FLOAT, -1, NULL);
  tb_input(b, "t", KILN_INT64, -1, NULL);
  if (has_weight) tb_input(b, "w", KILN_FLOAT, 1, (int64_t[]){-1});
  tb_output(b, "loss", KILN_FLOAT);
  if (log_prob) tb_output(b, "log_prob", KILN_FLOAT);
  tb_node *n = tb_add_node(b, op, has_weight ? "x,t,w" : "x,t", log_prob ? "loss,log_prob" : "loss");
  tb_attr_string(n, "reduction", reduction);
  if (has_ignore) tb_attr_int(n, "ignore_index", ignore);
  return oh_load(b);
}

/* The reference: log-probabilities lp (the scores themselves for NLL), per-element losses and
 * their reduction. Returns the number of loss values written to out. */
static int64_t reference(int sce, const float *x, const int64_t *t, const float *w, int has_ignore, int64_t ignore,
                         const char *reduction, int64_t n, int64_t c, int64_t d, double *lp, double *out) {
  for (int64_t i = 0; i < n * c * d; i++) lp[i] = x[i];
  if (sce)
    for (int64_t i = 0; i < n; i++)
      for (int64_t j = 0; j < d; j++) {
        double sum = 0;
        for (int64_t k = 0; k < c; k++) sum += exp(x[(i * c + k) * d + j]);
        for (int64_t k = 0; k < c; k++) lp[(i * c + k) * d + j] = x[(i * c + k) * d + j] - log(sum);
      }
  double total = 0, weight = 0;
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < d; j++) {
      int64_t k = t[i * d + j];
      double l = 0, wk = 0;
      if (!has_ignore || k != ignore) {
        wk = w ? w[k] : 1;
        l = -lp[(i * c + k) * d + j] * wk;
      }
      out[i * d + j] = l;
      total += l;
      weight += wk;
    }
  if (!strcmp(reduction, "none")) return n * d;
  out[0] = !strcmp(reduction, "sum") ? total : total / weight;
  return 1;
}

static void check_case(int sce, int rank, const char *reduction, int has_weight, int has_ignore, int log_prob) {
  int64_t dims[4] = {oh_int(2, 3), oh_int(2, 5), oh_int(1, 3), oh_int(1, 3)};
  int64_t n = dims[0], c = dims[1], d = 1;
  for (int k = 2; k < rank; k++) d *= dims[k];
  int64_t ignore = has_ignore ? oh_int(0, c - 1) : 0;
  float x[3 * 5 * 9], w[5];
  int64_t t[3 * 9];
  for (int64_t i = 0; i < n * c * d; i++) x[i] = (float)oh_uniform(-2, 2);
  for (int64_t i = 0; i < c; i++) w[i] = (float)oh_uniform(0.25, 1.25);
  for (int64_t i = 0; i < n * d; i++) t[i] = oh_int(0, c - 1);
  t[0] = has_ignore ? ignore : t[0]; /* at least one ignored target */
  if (has_ignore) t[1] = (ignore + 1) % c; /* and one counted */

  kiln_model *m = loss_model(sce ? "SoftmaxCrossEntropyLoss" : "NegativeLogLikelihoodLoss", reduction, has_weight, has_ignore, ignore, log_prob);
  if (!m) return;
  kiln_session *s;
  CHECK_OK(kiln_session_create(m, NULL, &s));
  int64_t tdims[3] = {dims[0], dims[2], dims[3]};
  kiln_tensor tx = oh_view(KILN_FLOAT, rank, dims, x), tt = oh_view(KILN_INT64, rank - 1, tdims, t);
  kiln_tensor tw = oh_view(KILN_FLOAT, 1, &c, w);
  const kiln_tensor *in[3] = {&tx, &tt, &tw}, *out[2];
  CHECK_OK(kiln_session_run_tensors(s, in, out));
  double lp[3 * 5 * 9], want[3 * 9];
  int64_t count = reference(sce, x, t, has_weight ? w : NULL, has_ignore, ignore, reduction, n, c, d, lp, want);
  CHECK(kiln_tensor_numel(out[0]) == count && out[0]->rank == (count == 1 && strcmp(reduction, "none") ? 0 : rank - 1));
  for (int64_t i = 0; i < count && i < kiln_tensor_numel(out[0]); i++)
    CHECK_NEAR(((const float *)out[0]->data)[i], want[i], 1e-5 * (1 + fabs(want[i])));
  if (log_prob)
    for (int64_t i = 0; i < n * c * d; i++) CHECK_NEAR(((const float *)out[1]->data)[i], lp[i], 1e-5);
  kiln_session_free(s);
  kiln_model_free(m);
}

static void test_against_reference(void) {
  const char *reductions[] = {"none", "sum", "mean"};
  for (int sce = 0; sce < 2; sce++)
    for (int rank = 2; rank <= 4; rank++)
      for (int r = 0; r < 3; r++)
        for (int weight = 0; weight < 2; weight++)
          for (int ignore = 0; ignore < 2; ignore++) check_case(sce, rank, reductions[r], weight, ignore, sce);
}

static void test_bad_inputs(void) {
  kiln_model *m = loss_model("NegativeLogLikelihoodLoss", "mean", 0, 1, -1, 0);
  if (!m) return;
  kiln_session *s;
  CHECK_OK(kiln_session_create(m, NULL, &s));
  float x[6] = {0};
  int64_t t[2] = {1, 3};
  kiln_tensor tx = oh_view(KILN_FLOAT, 2, (int64_t[]){2, 3}, x), tt = oh_view(KILN_INT64, 1, (int64_t[]){2}, t);
  const kiln_tensor *in[2] = {&tx, &tt}, *out[1];
  CHECK_ERROR(kiln_session_run_tensors(s, in, out), KILN_INVALID_ARGUMENT, "target value 3 (element 1) is not a class in 0..2");
  t[1] = -1; /* ignored */
  CHECK_OK(kiln_session_run_tensors(s, in, out));
  kiln_tensor_set_shape(&tt, KILN_INT64, 1, (int64_t[]){3});
  CHECK_ERROR(kiln_session_run_tensors(s, in, out), KILN_INVALID_ARGUMENT, "the target int64[3] does not match the scores float[2,3]");
  kiln_session_free(s);
  kiln_model_free(m);

  tb_model *b = tb_new(13);
  tb_input(b, "x", KILN_FLOAT, -1, NULL);
  tb_input(b, "t", KILN_INT64, -1, NULL);
  tb_output(b, "y", KILN_FLOAT);
  tb_attr_string(tb_add_node(b, "SoftmaxCrossEntropyLoss", "x,t", "y"), "reduction", "average");
  CHECK_ERROR(tb_load(b, &m), KILN_INVALID_ARGUMENT, "reduction must be 'none', 'sum' or 'mean', got 'average'");
  tb_free(b);
}

TEST_MAIN(TEST(test_against_reference), TEST(test_bad_inputs))
