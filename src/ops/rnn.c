/* Recurrent layers: LSTM, GRU and RNN.
 *
 * The three share one driver. Before the recurrence, one GEMM projects the inputs of every time
 * step for every direction (X.W^T, W of all directions stacked). Each step then does one GEMM
 * H_{t-1}.R^T for the whole batch (GRU with linear_before_reset=0 needs a second one, because
 * its candidate gate multiplies (r . H_{t-1}) by Rh) and applies the gate equations row by row,
 * one row per batch entry, the rows split over the pool.
 *
 * sequence_lens: a batch entry b runs for lens[b] steps. Its outputs past that are zero, Y_h and
 * Y_c hold its state after its last step (zero when lens[b] is 0, as ONNX Runtime does), and the
 * reverse direction starts at its last valid step, not at seq_length - 1.
 *
 * Everything is computed in float32: float16, bfloat16 and double inputs are widened into
 * scratch and the outputs narrowed back. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ops/gemm.h"
#include "ops/util.h"

typedef enum cell_kind { CELL_RNN, CELL_GRU, CELL_LSTM } cell_kind;

typedef enum act_kind {
  ACT_RELU,
  ACT_TANH,
  ACT_SIGMOID,
  ACT_AFFINE,
  ACT_LEAKY_RELU,
  ACT_THRESHOLDED_RELU,
  ACT_SCALED_TANH,
  ACT_HARD_SIGMOID,
  ACT_ELU,
  ACT_SOFTSIGN,
  ACT_SOFTPLUS,
} act_kind;

typedef struct act {
  act_kind kind;
  float alpha, beta;
} act;

/* The activations ONNX allows, how many of activation_alpha / activation_beta each consumes
 * (alpha first), and its defaults (those of the ONNX operator of the same name). */
static const struct {
  const char *name;
  act_kind kind;
  int n_params;
  float alpha, beta;
} act_table[] = {
    {"Relu", ACT_RELU, 0, 0, 0},
    {"Tanh", ACT_TANH, 0, 0, 0},
    {"Sigmoid", ACT_SIGMOID, 0, 0, 0},
    {"Affine", ACT_AFFINE, 2, 1.0f, 0.0f},
    {"LeakyRelu", ACT_LEAKY_RELU, 1, 0.01f, 0},
    {"ThresholdedRelu", ACT_THRESHOLDED_RELU, 1, 1.0f, 0},
    {"ScaledTanh", ACT_SCALED_TANH, 2, 1.0f, 1.0f},
    {"HardSigmoid", ACT_HARD_SIGMOID, 2, 0.2f, 0.5f},
    {"Elu", ACT_ELU, 1, 1.0f, 0},
    {"Softsign", ACT_SOFTSIGN, 0, 0, 0},
    {"Softplus", ACT_SOFTPLUS, 0, 0, 0},
};

#define MAX_ACTS 3 /* per direction: LSTM f, g, h */

typedef struct rnn_params {
  cell_kind cell;
  int gates;      /* gate blocks in W and R: 1 (RNN), 3 (GRU: z r h), 4 (LSTM: i o f c) */
  int n_acts;     /* activations per direction */
  int directions; /* 1 or 2 */
  int reverse;    /* direction == "reverse" */
  int64_t hidden; /* the hidden_size attribute, -1 when absent */
  float clip;     /* INFINITY when absent */
  int layout;     /* 0: [seq, batch, ...]; 1 (opset 14): [batch, seq, ...] */
  int input_forget;
  int linear_before_reset;
  act acts[2][MAX_ACTS];
} rnn_params;

/* ------------------------------------------------------------------ attributes */

static kiln_status parse_activations(const kx_node *n, rnn_params *p) {
  static const char *const defaults[][MAX_ACTS] = {
      [CELL_RNN] = {"Tanh"}, [CELL_GRU] = {"Sigmoid", "Tanh"}, [CELL_LSTM] = {"Sigmoid", "Tanh", "Tanh"}};
  const ProtobufCBinaryData *names = NULL;
  const float *alphas = NULL, *betas = NULL;
  int64_t n_names = kx_attr_strings(n->proto, "activations", &names);
  int64_t n_alphas = kx_attr_floats(n->proto, "activation_alpha", &alphas);
  int64_t n_betas = kx_attr_floats(n->proto, "activation_beta", &betas);
  if (n_names >= 0 && n_names != p->n_acts && n_names != (int64_t)p->n_acts * p->directions)
    return kiln_error(KILN_INVALID_ARGUMENT, "activations has %lld names, expected %d per direction (%d directions)",
                      (long long)n_names, p->n_acts, p->directions);
  int64_t next_alpha = 0, next_beta = 0;
  for (int d = 0; d < p->directions; d++)
    for (int k = 0; k < p->n_acts; k++) {
      /* one set of names given for two directions serves both */
      int64_t idx = n_names == (int64_t)p->n_acts * p->directions ? (int64_t)d * p->n_acts + k : k;
      char name[32] = "";
      if (n_names < 0) {
        strcpy(name, defaults[p->cell][k]);
      } else if (names[idx].len < sizeof name) {
        memcpy(name, names[idx].data, names[idx].len);
        name[names[idx].len] = 0;
      }
      size_t t = 0;
      while (t < sizeof act_table / sizeof act_table[0] && strcasecmp(name, act_table[t].name) != 0) t++;
      if (t == sizeof act_table / sizeof act_table[0])
        return kiln_error(KILN_INVALID_ARGUMENT, "unknown activation '%.*s'", (int)(n_names < 0 ? 0 : names[idx].len),
                          n_names < 0 ? "" : (const char *)names[idx].data);
      act *a = &p->acts[d][k];
      a->kind = act_table[t].kind;
      a->alpha = act_table[t].alpha;
      a->beta = act_table[t].beta;
      /* as ONNX Runtime does: alphas and betas are consumed in order by the functions that
       * take them; missing ones keep the defaults */
      if (act_table[t].n_params >= 1 && next_alpha < n_alphas) a->alpha = alphas[next_alpha++];
      if (act_table[t].n_params >= 2 && next_beta < n_betas) a->beta = betas[next_beta++];
    }
  return NULL;
}

static kiln_status rnn_parse(const kx_node *n, cell_kind cell, rnn_params *p) {
  p->cell = cell;
  p->gates = cell == CELL_LSTM ? 4 : cell == CELL_GRU ? 3 : 1;
  p->n_acts = cell == CELL_LSTM ? 3 : cell == CELL_GRU ? 2 : 1;
  char dir[32];
  kx_attr_string(n->proto, "direction", "forward", dir, sizeof dir);
  if (strcmp(dir, "forward") == 0)
    p->directions = 1;
  else if (strcmp(dir, "reverse") == 0)
    p->directions = 1, p->reverse = 1;
  else if (strcmp(dir, "bidirectional") == 0)
    p->directions = 2;
  else
    return kiln_error(KILN_INVALID_ARGUMENT, "direction '%s' is not forward, reverse or bidirectional", dir);
  p->hidden = kx_attr_int(n->proto, "hidden_size", -1);
  if (kx_attr_has(n->proto, "hidden_size") && p->hidden < 1)
    return kiln_error(KILN_INVALID_ARGUMENT, "hidden_size must be positive, got %lld", (long long)p->hidden);
  p->clip = INFINITY;
  if (kx_attr_has(n->proto, "clip")) {
    p->clip = kx_attr_float(n->proto, "clip", 0);
    if (!(p->clip >= 0)) return kiln_error(KILN_INVALID_ARGUMENT, "clip must be non-negative, got %g", p->clip);
  }
  int64_t layout = n->opset >= 14 ? kx_attr_int(n->proto, "layout", 0) : 0;
  int64_t input_forget = cell == CELL_LSTM ? kx_attr_int(n->proto, "input_forget", 0) : 0;
  int64_t lbr = cell == CELL_GRU ? kx_attr_int(n->proto, "linear_before_reset", 0) : 0;
  if ((layout != 0 && layout != 1) || (input_forget != 0 && input_forget != 1) || (lbr != 0 && lbr != 1))
    return kiln_error(KILN_INVALID_ARGUMENT,
                      "layout, input_forget and linear_before_reset must be 0 or 1, got %lld, %lld, %lld",
                      (long long)layout, (long long)input_forget, (long long)lbr);
  p->layout = (int)layout;
  p->input_forget = (int)input_forget;
  p->linear_before_reset = (int)lbr;
  return parse_activations(n, p);
}

static kiln_status rnn_prepare(kx_node *n, cell_kind cell) {
  rnn_params *p = calloc(1, sizeof *p);
  if (!p) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  kiln_status s = rnn_parse(n, cell, p);
  if (s) {
    free(p);
    return s;
  }
  n->params = p;
  return NULL;
}

static kiln_status lstm_prepare(kx_node *n) { return rnn_prepare(n, CELL_LSTM); }
static kiln_status gru_prepare(kx_node *n) { return rnn_prepare(n, CELL_GRU); }
static kiln_status simple_rnn_prepare(kx_node *n) { return rnn_prepare(n, CELL_RNN); }

/* ------------------------------------------------------------------ activations */

/* Sigmoid and tanh dominate the gate work, and gcc at -O2 vectorizes no loop whose trip count
 * it does not know, so they are written on 8-float vectors (GCC/Clang vector extensions; plain
 * SSE/scalar code where AVX is unavailable). Both are the rational approximations ONNX Runtime
 * (MLAS) and Eigen use: a few ulp from the exact functions over the clamped range. */
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

static inline v8f v8_splat(float x) { return (v8f){x, x, x, x, x, x, x, x}; }

/* Clamps to [lo, hi]; NaN stays NaN. */
static inline v8f v8_clamp(v8f x, float lo, float hi) {
  v8i below = x<v8_splat(lo), above = x> v8_splat(hi);
  v8i r = (below & (v8i)v8_splat(lo)) | (above & (v8i)v8_splat(hi)) | (~(below | above) & (v8i)x);
  return (v8f)r;
}

static inline v8f v8_sigmoid(v8f x) {
  x = v8_clamp(x, -18.0f, 18.0f);
  v8f x2 = x * x;
  v8f p = x2 * 4.37031012579801e-11f + 1.15627324459942e-07f;
  p = p * x2 + 6.08574864600143e-05f;
  p = p * x2 + 8.51377133304701e-03f;
  p = p * x2 + 2.48287947061529e-01f;
  p = p * x;
  v8f q = x2 * 6.10247389755681e-13f + 5.76102136993427e-09f;
  q = q * x2 + 6.29106785017040e-06f;
  q = q * x2 + 1.70198817374094e-03f;
  q = q * x2 + 1.16817656904453e-01f;
  q = q * x2 + 9.93151921023180e-01f;
  return p / q + 0.5f;
}

static inline v8f v8_tanh(v8f x) {
  x = v8_clamp(x, -9.0f, 9.0f);
  v8f x2 = x * x;
  v8f p = x2 * -2.76076847742355e-16f + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  p = p * x;
  v8f q = x2 * 1.19825839466702e-06f + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return p / q;
}

/* x = sigmoid(x) / tanh(x) in place; the tail goes through a zero-padded vector. */
static void sigmoid_inplace(float *x, int64_t n) {
  int64_t i = 0;
  v8f v;
  for (; i + 8 <= n; i += 8) {
    memcpy(&v, x + i, sizeof v);
    v = v8_sigmoid(v);
    memcpy(x + i, &v, sizeof v);
  }
  if (i == n) return;
  v = v8_splat(0);
  memcpy(&v, x + i, (size_t)(n - i) * sizeof *x);
  v = v8_sigmoid(v);
  memcpy(x + i, &v, (size_t)(n - i) * sizeof *x);
}

static void tanh_inplace(float *x, int64_t n) {
  int64_t i = 0;
  v8f v;
  for (; i + 8 <= n; i += 8) {
    memcpy(&v, x + i, sizeof v);
    v = v8_tanh(v);
    memcpy(x + i, &v, sizeof v);
  }
  if (i == n) return;
  v = v8_splat(0);
  memcpy(&v, x + i, (size_t)(n - i) * sizeof *x);
  v = v8_tanh(v);
  memcpy(x + i, &v, (size_t)(n - i) * sizeof *x);
}

static void activate(const act *a, float *x, int64_t n) {
  const float alpha = a->alpha, beta = a->beta;
  switch (a->kind) {
  case ACT_SIGMOID: sigmoid_inplace(x, n); break;
  case ACT_TANH: tanh_inplace(x, n); break;
  case ACT_RELU:
    for (int64_t i = 0; i < n; i++) x[i] = x[i] > 0 ? x[i] : 0;
    break;
  case ACT_AFFINE:
    for (int64_t i = 0; i < n; i++) x[i] = alpha * x[i] + beta;
    break;
  case ACT_LEAKY_RELU:
    for (int64_t i = 0; i < n; i++) x[i] = x[i] >= 0 ? x[i] : alpha * x[i];
    break;
  case ACT_THRESHOLDED_RELU:
    for (int64_t i = 0; i < n; i++) x[i] = x[i] >= alpha ? x[i] : 0;
    break;
  case ACT_SCALED_TANH:
    for (int64_t i = 0; i < n; i++) x[i] *= beta;
    tanh_inplace(x, n);
    for (int64_t i = 0; i < n; i++) x[i] *= alpha;
    break;
  case ACT_HARD_SIGMOID:
    for (int64_t i = 0; i < n; i++) x[i] = fminf(fmaxf(alpha * x[i] + beta, 0), 1);
    break;
  case ACT_ELU:
    for (int64_t i = 0; i < n; i++) x[i] = x[i] >= 0 ? x[i] : alpha * expm1f(x[i]);
    break;
  case ACT_SOFTSIGN:
    for (int64_t i = 0; i < n; i++) x[i] = x[i] / (1 + fabsf(x[i]));
    break;
  case ACT_SOFTPLUS: /* log(1 + e^x) without overflowing e^x */
    for (int64_t i = 0; i < n; i++) x[i] = fmaxf(x[i], 0) + log1pf(expf(-fabsf(x[i])));
    break;
  }
}

/* The clip attribute bounds every activation's input to [-clip, clip]. */
static void clip_inplace(float *x, int64_t n, float clip) {
  if (clip == INFINITY) return;
  for (int64_t i = 0; i < n; i++) x[i] = x[i] < -clip ? -clip : x[i] > clip ? clip : x[i];
}

/* ------------------------------------------------------------------ one step */

/* What the row functions of one step of one direction need. */
typedef struct rnn_step {
  const rnn_params *p;
  int64_t T, B, H, D;
  int d, reverse;
  int64_t s;           /* the step, counted from this direction's start */
  const int32_t *lens; /* [B] */
  const float *xw;     /* this direction's column block of X.W^T */
  int64_t xw_ld;
  const float *bias; /* [G*H] Wb + Rb (GRU with linear_before_reset: Wb alone for the h gate) */
  const float *rb_h; /* GRU with linear_before_reset: Rb of the h gate */
  const float *peep; /* LSTM: P of this direction, or NULL */
  float *gates;      /* [B, G*H]: H_{t-1}.R^T of this step */
  float *h, *c;      /* [B, H] the states, updated in place */
  float *rh;         /* GRU without linear_before_reset: [B, H] r . H_{t-1} */
  float *y;          /* the Y output, or NULL */
  const act *acts;   /* this direction's activations */
} rnn_step;

/* The time index batch entry b works on at this step; -1 once its sequence has ended. */
static int64_t step_time(const rnn_step *j, int64_t b) {
  int64_t len = j->lens[b];
  if (j->s >= len) return -1;
  return j->reverse ? len - 1 - j->s : j->s;
}

static const float *xw_row(const rnn_step *j, int64_t t, int64_t b) {
  return j->xw + (j->p->layout ? b * j->T + t : t * j->B + b) * j->xw_ld;
}

static void write_y(const rnn_step *j, int64_t t, int64_t b, const float *h) {
  if (!j->y) return;
  int64_t row = j->p->layout ? (b * j->T + t) * j->D + j->d : (t * j->D + j->d) * j->B + b;
  memcpy(j->y + row * j->H, h, (size_t)j->H * sizeof *h);
}

/* g = g + xw + bias: the gates' pre-activations. */
static void add_input(float *restrict g, const float *restrict xw, const float *restrict bias, int64_t n) {
  for (int64_t i = 0; i < n; i++) g[i] += xw[i] + bias[i];
}

static void rnn_rows(void *arg, int64_t b0, int64_t b1) {
  const rnn_step *j = arg;
  const int64_t H = j->H;
  for (int64_t b = b0; b < b1; b++) {
    int64_t t = step_time(j, b);
    if (t < 0) continue;
    float *g = j->gates + b * H, *h = j->h + b * H;
    add_input(g, xw_row(j, t, b), j->bias, H);
    clip_inplace(g, H, j->p->clip);
    activate(&j->acts[0], g, H);
    memcpy(h, g, (size_t)H * sizeof *h);
    write_y(j, t, b, h);
  }
}

/* i, o, f, c~ = f(..), f(..), f(..), g(..); C = f.C + i.c~; H = o.h(C), with the peepholes
 * adding P.C_{t-1} to i and f and P.C_t to o. */
static void lstm_rows(void *arg, int64_t b0, int64_t b1) {
  const rnn_step *j = arg;
  const int64_t H = j->H;
  const float clip = j->p->clip;
  for (int64_t b = b0; b < b1; b++) {
    int64_t t = step_time(j, b);
    if (t < 0) continue;
    float *gi = j->gates + b * 4 * H, *go = gi + H, *gf = gi + 2 * H, *gc = gi + 3 * H;
    float *restrict c = j->c + b * H, *restrict h = j->h + b * H;
    add_input(gi, xw_row(j, t, b), j->bias, 4 * H);
    if (j->peep)
      for (int64_t k = 0; k < H; k++) {
        gi[k] += j->peep[k] * c[k];
        gf[k] += j->peep[2 * H + k] * c[k];
      }
    clip_inplace(gi, H, clip);
    activate(&j->acts[0], gi, H);
    if (j->p->input_forget) { /* coupled gates: f = 1 - i */
      for (int64_t k = 0; k < H; k++) gf[k] = 1 - gi[k];
    } else {
      clip_inplace(gf, H, clip);
      activate(&j->acts[0], gf, H);
    }
    clip_inplace(gc, H, clip);
    activate(&j->acts[1], gc, H);
    for (int64_t k = 0; k < H; k++) c[k] = gf[k] * c[k] + gi[k] * gc[k];
    if (j->peep)
      for (int64_t k = 0; k < H; k++) go[k] += j->peep[H + k] * c[k];
    clip_inplace(go, H, clip);
    activate(&j->acts[0], go, H);
    /* h(C) goes where c~ was; C itself is kept unclipped */
    memcpy(gc, c, (size_t)H * sizeof *c);
    clip_inplace(gc, H, clip);
    activate(&j->acts[2], gc, H);
    for (int64_t k = 0; k < H; k++) h[k] = go[k] * gc[k];
    write_y(j, t, b, h);
  }
}

/* z and r of a GRU row: f(H_{t-1}.R^T + X.W^T + biases), the first 2H gates. */
static void gru_update_reset(const rnn_step *j, float *g, const float *xw) {
  add_input(g, xw, j->bias, 2 * j->H);
  clip_inplace(g, 2 * j->H, j->p->clip);
  activate(&j->acts[0], g, 2 * j->H);
}

/* Without linear_before_reset, before the second GEMM: z, r, and r . H_{t-1}. */
static void gru_reset_rows(void *arg, int64_t b0, int64_t b1) {
  const rnn_step *j = arg;
  const int64_t H = j->H;
  for (int64_t b = b0; b < b1; b++) {
    int64_t t = step_time(j, b);
    if (t < 0) continue;
    float *g = j->gates + b * 3 * H, *rh = j->rh + b * H;
    const float *r = g + H, *h = j->h + b * H;
    gru_update_reset(j, g, xw_row(j, t, b));
    for (int64_t k = 0; k < H; k++) rh[k] = r[k] * h[k];
  }
}

/* h~ = g(..) and H = (1 - z).h~ + z.H_{t-1}. With linear_before_reset, z and r come first and
 * h~ = g(Xh.Wh^T + Wbh + r.(H_{t-1}.Rh^T + Rbh)); without, gru_reset_rows has done z and r and
 * the second GEMM left (r . H_{t-1}).Rh^T in the h block. */
static void gru_rows(void *arg, int64_t b0, int64_t b1) {
  const rnn_step *j = arg;
  const int64_t H = j->H;
  for (int64_t b = b0; b < b1; b++) {
    int64_t t = step_time(j, b);
    if (t < 0) continue;
    float *g = j->gates + b * 3 * H, *z = g, *r = g + H, *gh = g + 2 * H;
    float *restrict h = j->h + b * H;
    const float *xw = xw_row(j, t, b), *bias = j->bias;
    if (j->p->linear_before_reset) {
      gru_update_reset(j, g, xw);
      for (int64_t k = 0; k < H; k++) gh[k] = xw[2 * H + k] + bias[2 * H + k] + r[k] * (gh[k] + j->rb_h[k]);
    } else {
      add_input(gh, xw + 2 * H, bias + 2 * H, H);
    }
    clip_inplace(gh, H, j->p->clip);
    activate(&j->acts[1], gh, H);
    for (int64_t k = 0; k < H; k++) h[k] = (1 - z[k]) * gh[k] + z[k] * h[k];
    write_y(j, t, b, h);
  }
}

/* ------------------------------------------------------------------ H_{t-1}.R^T */

/* Up to this batch size the recurrent product does not go through BLAS: OpenBLAS's sgemm packs
 * R (G*H x H floats) on every call, which for a few rows costs more than the product itself
 * (H 256, one thread: batch 1 ~125 us against ~25 us here; the two meet near batch 4-8). */
#define SMALL_BATCH 4

typedef struct recur_job {
  const float *h, *r; /* [B, K], [N, K] */
  float *out;         /* [B, N] with leading dimension ldc */
  int64_t B, K, ldc;
} recur_job;

static inline float v8_sum(v8f v) { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }

/* out[b, j] = h[b, :] . r[j, :] for rows j of R in [j0, j1): each row of R is read once and used
 * for every batch row while it is in L1. */
static void recur_range(void *arg, int64_t j0, int64_t j1) {
  const recur_job *q = arg;
  const int64_t K = q->K;
  for (int64_t j = j0; j < j1; j++) {
    const float *r = q->r + j * K;
    for (int64_t b = 0; b < q->B; b++) {
      const float *h = q->h + b * K;
      v8f acc0 = v8_splat(0), acc1 = v8_splat(0), hv, rv;
      int64_t k = 0;
      for (; k + 16 <= K; k += 16) {
        memcpy(&hv, h + k, sizeof hv);
        memcpy(&rv, r + k, sizeof rv);
        acc0 += hv * rv;
        memcpy(&hv, h + k + 8, sizeof hv);
        memcpy(&rv, r + k + 8, sizeof rv);
        acc1 += hv * rv;
      }
      for (; k + 8 <= K; k += 8) {
        memcpy(&hv, h + k, sizeof hv);
        memcpy(&rv, r + k, sizeof rv);
        acc0 += hv * rv;
      }
      float sum = v8_sum(acc0 + acc1);
      for (; k < K; k++) sum += h[k] * r[k];
      q->out[b * q->ldc + j] = sum;
    }
  }
}

/* out[B, N] (leading dimension ldc) = h[B, K] . R[N, K]^T */
static void recurrent_product(kx_ctx *c, const float *h, int64_t B, int64_t K, const float *R, int64_t N, float *out,
                              int64_t ldc) {
  if (B > SMALL_BATCH) {
    kx_sgemm(c, 0, 1, B, N, K, 1, h, K, R, K, 0, out, ldc);
    return;
  }
  recur_job q = {h, R, out, B, K, ldc};
  kx_parallel(c, N, 2.0 * (double)(B * K), recur_range, &q);
}

/* ------------------------------------------------------------------ the operator */

enum { IN_X, IN_W, IN_R, IN_B, IN_LENS, IN_H0, IN_C0, IN_P };

typedef struct rnn_inputs {
  const kiln_tensor *x, *w, *r, *b, *lens, *h0, *c0, *p;
  int64_t T, B, I, H, D, G;
} rnn_inputs;

/* t must have exactly the dims `want`; `meaning` names them in the error. */
static kiln_status check_shape(const kiln_tensor *t, const char *what, int rank, const int64_t *want,
                               const char *meaning) {
  int ok = t->rank == rank;
  for (int d = 0; ok && d < rank; d++) ok = t->dims[d] == want[d];
  if (ok) return NULL;
  char got[96], exp[96] = "[";
  for (int d = 0; d < rank; d++)
    snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "%s%lld", d ? "," : "", (long long)want[d]);
  strcat(exp, "]");
  return kiln_error(KILN_INVALID_ARGUMENT, "%s has shape %s, expected %s (%s)", what,
                    kiln_tensor_describe(t, got, sizeof got), exp, meaning);
}

static kiln_status rnn_check(const kx_ctx *c, const rnn_params *p, rnn_inputs *in) {
  kiln_status s;
  const int lstm = p->cell == CELL_LSTM;
  if ((s = kx_require(c, IN_X, &in->x)) || (s = kx_require(c, IN_W, &in->w)) || (s = kx_require(c, IN_R, &in->r)))
    return s;
  in->b = kx_input(c, IN_B);
  in->lens = kx_input(c, IN_LENS);
  in->h0 = kx_input(c, IN_H0);
  in->c0 = lstm ? kx_input(c, IN_C0) : NULL;
  in->p = lstm ? kx_input(c, IN_P) : NULL;
  const kiln_tensor *x = in->x;
  if ((s = kx_check_dtype(x, IN_X, KX_FLOATS))) return s;
  const kiln_tensor *same[] = {in->w, in->r, in->b, in->h0, in->c0, in->p};
  const char *names[] = {"W", "R", "B", "initial_h", "initial_c", "P"};
  for (int i = 0; i < 6; i++)
    if (same[i] && same[i]->dtype != x->dtype)
      return kiln_error(KILN_INVALID_ARGUMENT, "%s is %s but X is %s", names[i], kiln_dtype_name(same[i]->dtype),
                        kiln_dtype_name(x->dtype));
  if (x->rank != 3) return kiln_error(KILN_INVALID_ARGUMENT, "X must have rank 3, got rank %d", x->rank);
  if (in->r->rank != 3) return kiln_error(KILN_INVALID_ARGUMENT, "R must have rank 3, got rank %d", in->r->rank);
  in->T = x->dims[p->layout ? 1 : 0];
  in->B = x->dims[p->layout ? 0 : 1];
  in->I = x->dims[2];
  in->D = p->directions;
  in->G = p->gates;
  in->H = p->hidden >= 0 ? p->hidden : in->r->dims[2];
  if (in->H > INT32_MAX / 8)
    return kiln_error(KILN_INVALID_ARGUMENT, "hidden_size %lld is too large", (long long)in->H);
  const int64_t D = in->D, B = in->B, H = in->H, GH = in->G * H, T = in->T;
  const char *gh = lstm ? "4*hidden_size" : p->cell == CELL_GRU ? "3*hidden_size" : "hidden_size";
  char meaning[96];
  snprintf(meaning, sizeof meaning, "[num_directions, %s, input_size]", gh);
  if ((s = check_shape(in->w, "W", 3, (int64_t[]){D, GH, in->I}, meaning))) return s;
  snprintf(meaning, sizeof meaning, "[num_directions, %s, hidden_size]", gh);
  if ((s = check_shape(in->r, "R", 3, (int64_t[]){D, GH, H}, meaning))) return s;
  snprintf(meaning, sizeof meaning, "[num_directions, 2*%s]", gh);
  if (in->b && (s = check_shape(in->b, "B", 2, (int64_t[]){D, 2 * GH}, meaning))) return s;
  int64_t state[3] = {D, B, H};
  const char *state_meaning = "[num_directions, batch_size, hidden_size]";
  if (p->layout) {
    state[0] = B, state[1] = D;
    state_meaning = "[batch_size, num_directions, hidden_size]";
  }
  if (in->h0 && (s = check_shape(in->h0, "initial_h", 3, state, state_meaning))) return s;
  if (in->c0 && (s = check_shape(in->c0, "initial_c", 3, state, state_meaning))) return s;
  if (in->p && (s = check_shape(in->p, "P", 2, (int64_t[]){D, 3 * H}, "[num_directions, 3*hidden_size]"))) return s;
  if (in->lens) {
    const kiln_tensor *l = in->lens;
    if (l->dtype != KILN_INT32 && l->dtype != KILN_INT64)
      return kiln_error(KILN_INVALID_ARGUMENT, "sequence_lens must be int32, got %s", kiln_dtype_name(l->dtype));
    if ((s = check_shape(l, "sequence_lens", 1, (int64_t[]){B}, "[batch_size]"))) return s;
    for (int64_t b = 0; b < B; b++) {
      int64_t v = l->dtype == KILN_INT32 ? ((const int32_t *)l->data)[b] : ((const int64_t *)l->data)[b];
      if (v < 0 || v > T)
        return kiln_error(KILN_INVALID_ARGUMENT, "sequence_lens[%lld] is %lld, outside [0, %lld] (seq_length)",
                          (long long)b, (long long)v, (long long)T);
    }
  }
  /* OpenBLAS takes int dimensions; T*B rows and D*G*H columns are the largest */
  int64_t rows;
  if (__builtin_mul_overflow(T, B, &rows) || rows > INT32_MAX || D * GH > INT32_MAX || in->I > INT32_MAX ||
      H > INT32_MAX)
    return kiln_error(KILN_INVALID_ARGUMENT, "LSTM/GRU/RNN sizes too large (seq_length*batch %lld x %lld gates)",
                      (long long)rows, (long long)(D * GH));
  return NULL;
}

/* Hands out 64-byte aligned pieces of one scratch block. A first pass with base NULL only
 * counts the bytes; the second, with the block, hands out the same pieces. */
typedef struct carve {
  char *base;
  size_t used;
  int overflow;
} carve;

static float *carve_floats(carve *cv, int64_t n) {
  float *p = cv->base ? (float *)(cv->base + cv->used) : NULL;
  size_t bytes;
  if (n < 0 || __builtin_mul_overflow((size_t)n, sizeof(float), &bytes) || bytes > SIZE_MAX / 2 - cv->used) {
    cv->overflow = 1;
    return NULL;
  }
  cv->used += (bytes + 63) & ~(size_t)63;
  return p;
}

/* The run's working memory, all float32. Pointers to inputs are views when X is float. */
typedef struct rnn_work {
  const float *x, *w, *r, *b, *h0, *c0, *p;
  float *y, *yh, *yc; /* where outputs are computed (the outputs themselves when float) */
  float *xw;          /* [T*B, D*G*H] */
  float *bias;        /* [D, G*H] */
  float *rb_h;        /* [D, H]: GRU with linear_before_reset: Rb of the h gate (zero without B) */
  float *gates, *h, *c, *rh;
  int32_t *lens;
} rnn_work;

static void carve_work(carve *cv, const rnn_inputs *in, int widen, int want_y, rnn_work *w) {
  const int64_t T = in->T, B = in->B, I = in->I, H = in->H, D = in->D, GH = in->G * H;
  w->xw = carve_floats(cv, T * B * D * GH);
  w->bias = carve_floats(cv, D * GH);
  w->rb_h = carve_floats(cv, D * H);
  w->gates = carve_floats(cv, B * GH);
  w->h = carve_floats(cv, B * H);
  w->c = carve_floats(cv, B * H);
  w->rh = carve_floats(cv, B * H);
  w->lens = (int32_t *)carve_floats(cv, B); /* int32 and float have the same size */
  w->yh = carve_floats(cv, D * B * H);
  w->yc = carve_floats(cv, D * B * H);
  if (!widen) return;
  w->x = carve_floats(cv, T * B * I);
  w->w = carve_floats(cv, D * GH * I);
  w->r = carve_floats(cv, D * GH * H);
  w->b = in->b ? carve_floats(cv, D * 2 * GH) : NULL;
  w->h0 = in->h0 ? carve_floats(cv, D * B * H) : NULL;
  w->c0 = in->c0 ? carve_floats(cv, D * B * H) : NULL;
  w->p = in->p ? carve_floats(cv, D * 3 * H) : NULL;
  w->y = want_y ? carve_floats(cv, T * D * B * H) : NULL;
}

static const float *widened(const kiln_tensor *t, const float *buf) {
  if (!t) return NULL;
  if (t->dtype == KILN_FLOAT) return t->data;
  kx_to_float(t->dtype, t->data, (float *)buf, kiln_tensor_numel(t));
  return buf;
}

/* Index of (direction d, batch b) in initial_h / Y_h and friends. */
static int64_t state_row(const rnn_params *p, const rnn_inputs *in, int64_t d, int64_t b) {
  return p->layout ? b * in->D + d : d * in->B + b;
}

/* Runs direction d over all steps, leaving its final states in w->h, w->c. */
static void run_direction(kx_ctx *c, const rnn_params *p, const rnn_inputs *in, rnn_work *w, int d) {
  const int64_t B = in->B, H = in->H, G = in->G, GH = G * H;
  const float *R = w->r + d * GH * H;
  rnn_step j = {
      .p = p,
      .T = in->T,
      .B = B,
      .H = H,
      .D = in->D,
      .d = d,
      .reverse = p->reverse || d == 1,
      .lens = w->lens,
      .xw = w->xw + d * GH,
      .xw_ld = in->D * GH,
      .bias = w->bias + d * GH,
      .gates = w->gates,
      .h = w->h,
      .c = w->c,
      .rh = w->rh,
      .y = w->y,
      .acts = p->acts[d],
  };
  if (p->linear_before_reset) j.rb_h = w->rb_h + d * H;
  if (w->p) j.peep = w->p + d * 3 * H;
  for (int64_t b = 0; b < B; b++) {
    int64_t row = state_row(p, in, d, b) * H;
    if (w->h0)
      memcpy(w->h + b * H, w->h0 + row, (size_t)H * sizeof(float));
    else
      memset(w->h + b * H, 0, (size_t)H * sizeof(float));
    if (w->c0)
      memcpy(w->c + b * H, w->c0 + row, (size_t)H * sizeof(float));
    else
      memset(w->c + b * H, 0, (size_t)H * sizeof(float));
  }
  memset(w->rh, 0, (size_t)(B * H) * sizeof(float));
  int64_t steps = 0;
  for (int64_t b = 0; b < B; b++)
    if (w->lens[b] > steps) steps = w->lens[b];
  const double row_cost = 40.0 * (double)GH; /* a few dozen operations per gate value */
  kiln_range_fn rows = p->cell == CELL_LSTM ? lstm_rows : p->cell == CELL_GRU ? gru_rows : rnn_rows;
  for (j.s = 0; j.s < steps; j.s++) {
    if (p->cell == CELL_GRU && !p->linear_before_reset) {
      recurrent_product(c, w->h, B, H, R, 2 * H, w->gates, GH);
      kx_parallel(c, B, row_cost, gru_reset_rows, &j);
      recurrent_product(c, w->rh, B, H, R + 2 * H * H, H, w->gates + 2 * H, GH);
    } else {
      recurrent_product(c, w->h, B, H, R, GH, w->gates, GH);
    }
    kx_parallel(c, B, row_cost, rows, &j);
  }
}

static kiln_status rnn_run(kx_ctx *c) {
  const rnn_params *p = c->node->params;
  rnn_inputs in;
  kiln_status s;
  if ((s = rnn_check(c, p, &in))) return s;
  const int64_t T = in.T, B = in.B, I = in.I, H = in.H, D = in.D, GH = in.G * H;
  const int lstm = p->cell == CELL_LSTM, widen = in.x->dtype != KILN_FLOAT;
  const kiln_dtype dt = in.x->dtype;

  kiln_tensor *y = NULL, *yh = NULL, *yc = NULL;
  int64_t ydims[4] = {T, D, B, H}, sdims[3] = {D, B, H};
  if (p->layout) {
    ydims[0] = B, ydims[1] = T, ydims[2] = D;
    sdims[0] = B, sdims[1] = D;
  }
  if (kx_has_output(c, 0) && (s = kx_output(c, 0, dt, 4, ydims, &y))) return s;
  if (kx_has_output(c, 1) && (s = kx_output(c, 1, dt, 3, sdims, &yh))) return s;
  if (lstm && kx_has_output(c, 2) && (s = kx_output(c, 2, dt, 3, sdims, &yc))) return s;

  rnn_work w = {0};
  carve cv = {0};
  carve_work(&cv, &in, widen, y != NULL, &w);
  if (cv.overflow) return kiln_error(KILN_RESOURCE_EXHAUSTED, "LSTM/GRU/RNN working memory too large");
  cv = (carve){.base = kx_scratch(c, cv.used)};
  if (!cv.base) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for LSTM/GRU/RNN scratch");
  carve_work(&cv, &in, widen, y != NULL, &w);
  if (!widen) {
    w.y = y ? y->data : NULL;
    w.yh = yh ? yh->data : w.yh;
    w.yc = yc ? yc->data : w.yc;
  }
  w.x = widened(in.x, w.x);
  w.w = widened(in.w, w.w);
  w.r = widened(in.r, w.r);
  w.b = widened(in.b, w.b);
  w.h0 = widened(in.h0, w.h0);
  w.c0 = widened(in.c0, w.c0);
  w.p = widened(in.p, w.p);

  int64_t min_len = T;
  for (int64_t b = 0; b < B; b++) {
    w.lens[b] = !in.lens                       ? (int32_t)T
                : in.lens->dtype == KILN_INT32 ? ((const int32_t *)in.lens->data)[b]
                                               : (int32_t)((const int64_t *)in.lens->data)[b];
    if (w.lens[b] < min_len) min_len = w.lens[b];
  }
  /* the biases of both GEMMs fold into one, except Rbh under linear_before_reset, which the
   * reset gate multiplies */
  for (int64_t d = 0; d < D; d++) {
    const float *wb = w.b ? w.b + d * 2 * GH : NULL, *rb = wb ? wb + GH : NULL;
    for (int64_t k = 0; k < GH; k++) {
      int rb_apart = p->linear_before_reset && k >= 2 * H;
      w.bias[d * GH + k] = !wb ? 0 : rb_apart ? wb[k] : wb[k] + rb[k];
    }
    for (int64_t k = 0; k < H; k++) w.rb_h[d * H + k] = rb && p->linear_before_reset ? rb[2 * H + k] : 0;
  }
  /* rows past a sequence's end stay zero */
  if (w.y && min_len < T) memset(w.y, 0, (size_t)(T * D * B * H) * sizeof(float));

  /* X.W^T for every step and direction at once: [T*B, I] x [D*G*H, I]^T */
  kx_sgemm(c, 0, 1, T * B, D * GH, I, 1, w.x, I, w.w, I, 0, w.xw, D * GH);
  for (int d = 0; d < D; d++) {
    run_direction(c, p, &in, &w, d);
    for (int64_t b = 0; b < B; b++) {
      int64_t row = state_row(p, &in, d, b) * H;
      int empty = w.lens[b] == 0;
      for (int64_t k = 0; k < H; k++) {
        w.yh[row + k] = empty ? 0 : w.h[b * H + k];
        w.yc[row + k] = empty ? 0 : w.c[b * H + k];
      }
    }
  }
  if (widen) {
    if (y) kx_from_float(dt, w.y, y->data, kiln_tensor_numel(y));
    if (yh) kx_from_float(dt, w.yh, yh->data, kiln_tensor_numel(yh));
    if (yc) kx_from_float(dt, w.yc, yc->data, kiln_tensor_numel(yc));
  }
  return NULL;
}

const kx_op kx_ops_rnn[] = {
    {"", "LSTM", 1, 0, lstm_prepare, rnn_run, NULL, 0},
    {"", "GRU", 1, 0, gru_prepare, rnn_run, NULL, 0},
    {"", "RNN", 1, 0, simple_rnn_prepare, rnn_run, NULL, 0},
    {0},
};
