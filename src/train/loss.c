/* Losses (Keras' sparse_categorical_crossentropy, categorical_crossentropy, mean_squared_error),
 * their gradient with respect to the model's output, and the accuracy metric. */
#include "train/train.h"

#include "data/data.h"

#include <math.h>
#include <string.h>

#include <cjson/cJSON.h>

/* Keras clips probabilities into [EPS, 1 - EPS] before the log when the output is not logits. */
#define EPS 1e-7f

static const struct {
  const char *name;
  kx_loss_kind kind;
} loss_names[] = {
    {"sparse_categorical_crossentropy", KX_LOSS_SPARSE_CCE},
    {"categorical_crossentropy", KX_LOSS_CCE},
    {"mse", KX_LOSS_MSE},
    {"mean_squared_error", KX_LOSS_MSE},
};

kiln_status kx_loss_parse(const cJSON *j, kx_loss *out) {
  const char *name = NULL;
  const cJSON *config = NULL;
  kiln_status s = NULL;
  memset(out, 0, sizeof *out);
  if (cJSON_IsString(j)) name = j->valuestring;
  else if (cJSON_IsObject(j) && j->child && !j->child->next) {
    name = j->child->string;
    config = j->child;
    s = kx_spec_keys(config, "loss", (const char *const[]){"from_logits", NULL});
    if (!s) s = kx_spec_bool(config, "loss", "from_logits", &out->from_logits);
    if (s) return s;
  } else
    return kiln_error(KILN_INVALID_ARGUMENT, "loss: expected a name or {\"<loss>\": {\"from_logits\": true}}");
  for (size_t i = 0; i < sizeof loss_names / sizeof loss_names[0]; i++)
    if (strcmp(name, loss_names[i].name) == 0) {
      out->kind = loss_names[i].kind;
      if (out->kind == KX_LOSS_MSE && out->from_logits)
        return kiln_error(KILN_INVALID_ARGUMENT, "loss: from_logits applies to the crossentropies, not %s", name);
      return NULL;
    }
  return kiln_error(KILN_INVALID_ARGUMENT,
                    "loss: unknown loss '%s' (known: sparse_categorical_crossentropy, categorical_crossentropy, mse)", name);
}

int64_t kx_loss_target_width(const kx_loss *l, int64_t out_width) { return l->kind == KX_LOSS_SPARSE_CCE ? 1 : out_width; }

static int64_t argmax(const float *v, int64_t n) {
  int64_t best = 0;
  for (int64_t j = 1; j < n; j++)
    if (v[j] > v[best]) best = j;
  return best;
}

/* Loss of one row with targets t[width] (sparse labels made one-hot by the caller's view: label
 * >= 0 means t is unused); writes the row's gradient (undivided) into g when not NULL. */
static double crossentropy_row(const kx_loss *l, const float *y, const float *t, int64_t label, int64_t width, float *g) {
  double loss = 0;
  if (l->from_logits) {
    float max = y[argmax(y, width)];
    double sum = 0, tsum = 0;
    for (int64_t j = 0; j < width; j++) sum += exp((double)(y[j] - max));
    double lse = log(sum) + max;
    for (int64_t j = 0; j < width; j++) {
      double tj = label >= 0 ? (j == label) : t[j];
      loss -= tj * (y[j] - lse);
      tsum += tj;
    }
    for (int64_t j = 0; g && j < width; j++) {
      double tj = label >= 0 ? (j == label) : t[j];
      g[j] = (float)(exp(y[j] - lse) * tsum - tj);
    }
    return loss;
  }
  /* probabilities: normalized by their sum (Keras does the same), clipped, then the log */
  double sum = 0, tsum = 0;
  for (int64_t j = 0; j < width; j++) sum += y[j];
  if (!(sum > 0)) sum = EPS;
  for (int64_t j = 0; j < width; j++) {
    double tj = label >= 0 ? (j == label) : t[j], p = y[j] / sum;
    int clipped = p < EPS || p > 1 - EPS;
    p = p < EPS ? EPS : p > 1 - EPS ? 1 - EPS : p;
    loss -= tj * log(p);
    tsum += tj;
    if (g) g[j] = clipped ? 0 : (float)(-tj / y[j]);
  }
  for (int64_t j = 0; g && j < width; j++) g[j] += (float)(tsum / sum);
  return loss;
}

kiln_status kx_loss_compute(const kx_loss *l, const float *y, const float *t, int64_t rows, int64_t width,
                            double denominator, float *dy, double *loss_sum, int64_t *correct) {
  double total = 0;
  int64_t right = 0;
  float scale = (float)(1.0 / denominator);
  for (int64_t r = 0; r < rows; r++) {
    const float *yr = y + r * width;
    float *g = dy ? dy + r * width : NULL;
    if (l->kind == KX_LOSS_MSE) {
      const float *tr = t + r * width;
      double sq = 0;
      for (int64_t j = 0; j < width; j++) {
        double d = (double)yr[j] - tr[j];
        sq += d * d;
        if (g) g[j] = (float)(2 * d / (double)width) * scale;
      }
      total += sq / (double)width;
      continue;
    }
    int64_t label = -1;
    const float *tr = t + r * (l->kind == KX_LOSS_SPARSE_CCE ? 1 : width);
    if (l->kind == KX_LOSS_SPARSE_CCE) {
      if (!(tr[0] >= 0 && tr[0] < (float)width) || tr[0] != (float)(int64_t)tr[0])
        return kiln_error(KILN_INVALID_ARGUMENT, "label %g of row %lld is not a class index in [0, %lld) (the model has %lld outputs)",
                          (double)tr[0], (long long)r, (long long)width, (long long)width);
      label = (int64_t)tr[0];
    }
    total += crossentropy_row(l, yr, tr, label, width, g);
    for (int64_t j = 0; g && j < width; j++) g[j] *= scale;
    right += argmax(yr, width) == (label >= 0 ? label : argmax(tr, width));
  }
  *loss_sum = total;
  if (correct) *correct += right;
  return NULL;
}
