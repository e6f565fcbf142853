/* Recurrent layers: LSTM, GRU and RNN.
 *
 * The three share one driver. W and R are packed once (at load when they are constants) into
 * panels grouped by blocks of hidden units (see pack_panels). Each step multiplies H_{t-1} by
 * R^T, and X_t by W^T, with 6x16 register tiles, block by block: a block's product yields all
 * of its gates, and the cell update follows while they are in cache. Batches too small to fill
 * tiles (below FUSE_MIN_BATCH) take X.W^T for all steps up front instead, as one product.
 *
 * Threads: batch rows never interact, so a batch of 12 rows or more is split by rows, each
 * thread running every step for its rows with no barrier in between. A smaller batch splits
 * each step by blocks of hidden units, with a barrier per step, when the step is large enough to
 * repay it (MIN_SPLIT_MADDS). GRU with linear_before_reset=0 takes two passes per step, because
 * its candidate gate multiplies (r . H_{t-1}) by Rh and needs every unit of r first.
 *
 * sequence_lens: a batch entry b runs for lens[b] steps. Its outputs past that are zero, Y_h and
 * Y_c hold its state after its last step (zero when lens[b] is 0, as ONNX Runtime does), and the
 * reverse direction starts at its last valid step, not at seq_length - 1.
 *
 * Everything is computed in float32: float16, bfloat16 and double inputs are widened into
 * scratch and the outputs narrowed back. */
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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
  float *packed_w, *packed_r; /* constant W and R packed at load (see pack_panels), or NULL */
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

/* ------------------------------------------------------------------ packed weights */

enum { IN_X, IN_W, IN_R, IN_B, IN_LENS, IN_H0, IN_C0, IN_P };

/* The products of a step read W and R as panels of HB columns, one panel per gate of each block
 * of HB hidden units: panel[k * HB + q] = R[g * H + hb * HB + q][k] (W likewise), zero past H.
 * A block's gate panels are consecutive, so the product for a block of units yields all of its
 * gates in one pass over H_{t-1}, and whoever computes them can finish those units' cell update
 * without waiting for the other blocks. */
#define HB 16

static int64_t hidden_blocks(int64_t H) { return (H + HB - 1) / HB; }

static int64_t packed_floats(int64_t D, int64_t G, int64_t H, int64_t K) { return D * hidden_blocks(H) * G * K * HB; }

/* src: [D, G*H, K] (W: K = input_size, R: K = H) -> dst: [D][block][gate] panels of [K][HB]. */
static void pack_panels(const float *src, int64_t D, int64_t G, int64_t H, int64_t K, float *dst) {
  for (int64_t d = 0; d < D; d++)
    for (int64_t hb = 0; hb < hidden_blocks(H); hb++)
      for (int64_t g = 0; g < G; g++, dst += K * HB)
        for (int64_t q = 0; q < HB; q++) {
          int64_t unit = hb * HB + q;
          if (unit >= H) {
            for (int64_t k = 0; k < K; k++) dst[k * HB + q] = 0;
            continue;
          }
          const float *row = src + ((d * G + g) * H + unit) * K;
          for (int64_t k = 0; k < K; k++) dst[k * HB + q] = row[k];
        }
}

static void rnn_release(void *params) {
  rnn_params *p = params;
  free(p->packed_w);
  free(p->packed_r);
  free(p);
}

/* Packs input `in` (W or R) once at load when it is a constant float tensor; the run packs any
 * other into its scratch. A wrong shape is left for the run to report. */
static kiln_status pack_constant(const kx_node *n, const rnn_params *p, int in, float **out) {
  const kiln_tensor *t = n->n_in > in ? n->consts[in] : NULL;
  if (!t || t->dtype != KILN_FLOAT || t->rank != 3) return NULL;
  const int64_t D = t->dims[0], H = t->dims[1] / p->gates, K = t->dims[2];
  if (D != p->directions || t->dims[1] != p->gates * H || H < 1 || H > INT32_MAX / 8 || K < 1 || K > INT32_MAX ||
      (p->hidden >= 0 && p->hidden != H) || (in == IN_R && K != H))
    return NULL;
  *out = malloc((size_t)packed_floats(D, p->gates, H, K) * sizeof(float));
  if (!*out) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory packing %s", in == IN_R ? "R" : "W");
  pack_panels(t->data, D, p->gates, H, K, *out);
  return NULL;
}

static kiln_status rnn_prepare(kx_node *n, cell_kind cell) {
  rnn_params *p = calloc(1, sizeof *p);
  if (!p) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  kiln_status s = rnn_parse(n, cell, p);
  if (!s) s = pack_constant(n, p, IN_W, &p->packed_w);
  if (!s) s = pack_constant(n, p, IN_R, &p->packed_r);
  if (s) {
    rnn_release(p);
    return s;
  }
  n->params = p;
  return NULL;
}

static kiln_status lstm_prepare(kx_node *n) { return rnn_prepare(n, CELL_LSTM); }
static kiln_status gru_prepare(kx_node *n) { return rnn_prepare(n, CELL_GRU); }
static kiln_status simple_rnn_prepare(kx_node *n) { return rnn_prepare(n, CELL_RNN); }

/* ------------------------------------------------------------------ activations */

/* Sigmoid and tanh dominate the gate work, so they are written on AVX vectors with FMA (C11
 * contracts nothing by itself). Both are the rational approximations ONNX Runtime (MLAS) and
 * Eigen use: a few ulp from the exact functions over the clamped range. */

/* Clamps to [lo, hi]. max and min return their second operand when either is NaN, so NaN stays
 * NaN. */
static inline __m256 clamp8(__m256 x, float lo, float hi) {
  return _mm256_min_ps(_mm256_set1_ps(hi), _mm256_max_ps(_mm256_set1_ps(lo), x));
}

/* p * x2 + c */
static inline __m256 horner8(__m256 p, __m256 x2, float c) { return _mm256_fmadd_ps(p, x2, _mm256_set1_ps(c)); }

static inline __m256 sigmoid8(__m256 x) {
  x = clamp8(x, -18.0f, 18.0f);
  __m256 x2 = _mm256_mul_ps(x, x);
  __m256 p = horner8(_mm256_set1_ps(4.37031012579801e-11f), x2, 1.15627324459942e-07f);
  p = horner8(p, x2, 6.08574864600143e-05f);
  p = horner8(p, x2, 8.51377133304701e-03f);
  p = horner8(p, x2, 2.48287947061529e-01f);
  p = _mm256_mul_ps(p, x);
  __m256 q = horner8(_mm256_set1_ps(6.10247389755681e-13f), x2, 5.76102136993427e-09f);
  q = horner8(q, x2, 6.29106785017040e-06f);
  q = horner8(q, x2, 1.70198817374094e-03f);
  q = horner8(q, x2, 1.16817656904453e-01f);
  q = horner8(q, x2, 9.93151921023180e-01f);
  return _mm256_add_ps(_mm256_div_ps(p, q), _mm256_set1_ps(0.5f));
}

static inline __m256 tanh8(__m256 x) {
  x = clamp8(x, -9.0f, 9.0f);
  __m256 x2 = _mm256_mul_ps(x, x);
  __m256 p = horner8(_mm256_set1_ps(-2.76076847742355e-16f), x2, 2.00018790482477e-13f);
  p = horner8(p, x2, -8.60467152213735e-11f);
  p = horner8(p, x2, 5.12229709037114e-08f);
  p = horner8(p, x2, 1.48572235717979e-05f);
  p = horner8(p, x2, 6.37261928875436e-04f);
  p = horner8(p, x2, 4.89352455891786e-03f);
  p = _mm256_mul_ps(p, x);
  __m256 q = horner8(_mm256_set1_ps(1.19825839466702e-06f), x2, 1.18534705686654e-04f);
  q = horner8(q, x2, 2.26843463243900e-03f);
  q = horner8(q, x2, 4.89352518554385e-03f);
  return _mm256_div_ps(p, q);
}

/* x = sigmoid(x) / tanh(x) in place; the tail goes through a zero-padded vector. */
static void sigmoid_inplace(float *x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, sigmoid8(_mm256_loadu_ps(x + i)));
  if (i == n) return;
  float tail[8] = {0};
  memcpy(tail, x + i, (size_t)(n - i) * sizeof *x);
  _mm256_storeu_ps(tail, sigmoid8(_mm256_loadu_ps(tail)));
  memcpy(x + i, tail, (size_t)(n - i) * sizeof *x);
}

static void tanh_inplace(float *x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, tanh8(_mm256_loadu_ps(x + i)));
  if (i == n) return;
  float tail[8] = {0};
  memcpy(tail, x + i, (size_t)(n - i) * sizeof *x);
  _mm256_storeu_ps(tail, tanh8(_mm256_loadu_ps(tail)));
  memcpy(x + i, tail, (size_t)(n - i) * sizeof *x);
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

/* ------------------------------------------------------------------ the products */

/* Batch rows of one register tile. */
#define TILE_ROWS 6

/* One gate's values for the rows of a tile: row r holds units [r * HB, r * HB + HB). */
typedef float gate_tile[TILE_ROWS * HB];

/* out[r * HB + q] = a[r][0..K) . panel column q for `rows` rows (2, 4 or 6, a constant
 * where this is inlined): at most twelve accumulators, gemm.c's 6x16 tile with the rows read in
 * place and the weights already packed. */
static inline __attribute__((always_inline)) void rows_tile(const float *const *a, int rows, const float *panel,
                                                            int64_t K, float *out) {
  __m256 c[TILE_ROWS][2];
#pragma GCC unroll 6
  for (int r = 0; r < rows; r++)
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) c[r][h] = _mm256_setzero_ps();
  const float *a0 = a[0], *a1 = a[1], *a2 = a[rows > 2 ? 2 : 0], *a3 = a[rows > 2 ? 3 : 0];
  const float *a4 = a[rows > 4 ? 4 : 0], *a5 = a[rows > 4 ? 5 : 0];
  for (int64_t k = 0; k < K; k++, panel += HB) {
    __m256 b0 = _mm256_loadu_ps(panel), b1 = _mm256_loadu_ps(panel + 8);
    __m256 x = _mm256_broadcast_ss(a0 + k);
    c[0][0] = _mm256_fmadd_ps(x, b0, c[0][0]);
    c[0][1] = _mm256_fmadd_ps(x, b1, c[0][1]);
    x = _mm256_broadcast_ss(a1 + k);
    c[1][0] = _mm256_fmadd_ps(x, b0, c[1][0]);
    c[1][1] = _mm256_fmadd_ps(x, b1, c[1][1]);
    if (rows > 2) {
      x = _mm256_broadcast_ss(a2 + k);
      c[2][0] = _mm256_fmadd_ps(x, b0, c[2][0]);
      c[2][1] = _mm256_fmadd_ps(x, b1, c[2][1]);
      x = _mm256_broadcast_ss(a3 + k);
      c[3][0] = _mm256_fmadd_ps(x, b0, c[3][0]);
      c[3][1] = _mm256_fmadd_ps(x, b1, c[3][1]);
    }
    if (rows > 4) {
      x = _mm256_broadcast_ss(a4 + k);
      c[4][0] = _mm256_fmadd_ps(x, b0, c[4][0]);
      c[4][1] = _mm256_fmadd_ps(x, b1, c[4][1]);
      x = _mm256_broadcast_ss(a5 + k);
      c[5][0] = _mm256_fmadd_ps(x, b0, c[5][0]);
      c[5][1] = _mm256_fmadd_ps(x, b1, c[5][1]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < rows; r++)
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) _mm256_storeu_ps(out + r * HB + 8 * h, c[r][h]);
}

/* pre[p][0..HB) = a[0..K) . panel p for np consecutive panels (1 to 4, a constant where this
 * is inlined): one row against all of a block's gates, so a batch of one still runs up to eight
 * independent accumulator chains. */
static inline __attribute__((always_inline)) void row_tile(const float *a, const float *panels, int64_t K, int np,
                                                           gate_tile *pre) {
  const int64_t ps = K * HB; /* panel stride */
  __m256 c[4][2];
#pragma GCC unroll 4
  for (int p = 0; p < np; p++)
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) c[p][h] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; k++) {
    const float *b = panels + k * HB;
    __m256 x = _mm256_broadcast_ss(a + k);
    c[0][0] = _mm256_fmadd_ps(x, _mm256_loadu_ps(b), c[0][0]);
    c[0][1] = _mm256_fmadd_ps(x, _mm256_loadu_ps(b + 8), c[0][1]);
    if (np > 1) {
      c[1][0] = _mm256_fmadd_ps(x, _mm256_loadu_ps(b + ps), c[1][0]);
      c[1][1] = _mm256_fmadd_ps(x, _mm256_loadu_ps(b + ps + 8), c[1][1]);
    }
    if (np > 2) {
      c[2][0] = _mm256_fmadd_ps(x, _mm256_loadu_ps(b + 2 * ps), c[2][0]);
      c[2][1] = _mm256_fmadd_ps(x, _mm256_loadu_ps(b + 2 * ps + 8), c[2][1]);
    }
    if (np > 3) {
      c[3][0] = _mm256_fmadd_ps(x, _mm256_loadu_ps(b + 3 * ps), c[3][0]);
      c[3][1] = _mm256_fmadd_ps(x, _mm256_loadu_ps(b + 3 * ps + 8), c[3][1]);
    }
  }
#pragma GCC unroll 4
  for (int p = 0; p < np; p++)
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) _mm256_storeu_ps(pre[p] + 8 * h, c[p][h]);
}

/* pre[p] = rows a[0..rows) . panel p, for np <= 4 consecutive panels of K rows; rows is 1, 2,
 * 4 or 6. */
static void tile_product(const float *const *a, int rows, const float *panels, int64_t K, int np, gate_tile *pre) {
  if (rows == 1) {
    switch (np) {
    case 1: row_tile(a[0], panels, K, 1, pre); break;
    case 2: row_tile(a[0], panels, K, 2, pre); break;
    case 3: row_tile(a[0], panels, K, 3, pre); break;
    default: row_tile(a[0], panels, K, 4, pre); break;
    }
    return;
  }
  for (int p = 0; p < np; p++, panels += K * HB) {
    if (rows == 6) rows_tile(a, 6, panels, K, pre[p]);
    else if (rows == 4) rows_tile(a, 4, panels, K, pre[p]);
    else rows_tile(a, 2, panels, K, pre[p]);
  }
}

/* Batch rows of the next tile out of `left` (tiles come in 6, 4, 2 and 1 rows): 6 where it
 * can, but 4 rather than leave 2 behind, whose tile runs at half speed (4 accumulator chains do
 * not cover the FMA latency). */
static int tile_rows(int64_t left) {
  if (left >= 6 && left % 6 != 2) return 6;
  return left >= 4 ? 4 : left >= 2 ? 2 : 1;
}

/* ------------------------------------------------------------------ one step */

typedef struct rnn_step rnn_step;

/* Finishes a tile, rows [b0, b0 + rows) of block hb: rec holds its gates' recurrent part
 * (H_{t-1}.R^T), in their input part (X_t.W^T + biases), in the gate order of the pass. */
typedef void (*cell_fn)(const rnn_step *j, int64_t b0, int rows, int64_t hb, gate_tile *rec, gate_tile *in);

/* A step of one direction, split into (block of hidden units, batch rows) pieces: each computes
 * its part of the products and that part's cell update, so a step needs no barrier inside it
 * (GRU without linear_before_reset needs one between its two passes). H_t goes to the other
 * buffer of h because other pieces still read H_{t-1}. State rows are Hp (H rounded up to HB)
 * floats long. */
struct rnn_step {
  const rnn_params *p;
  int64_t T, B, I, H, Hp, D, G;
  int d, reverse;
  int64_t s;             /* the step, counted from this direction's start */
  const int32_t *lens;   /* [B] */
  const float *x;        /* X: [T*B, I], or [B*T, I] under layout 1 */
  const float *packed_w; /* this direction's panels of W when the step multiplies X_t by W... */
  const float *bias;     /* ...and its biases then, in block order (see input_projection) */
  const float *xw;       /* else this direction's columns of X.W^T + biases of all steps */
  int64_t xw_ld;
  const float *packed_r; /* this direction's panels of R */
  const float *rb_h;     /* GRU with linear_before_reset: Rb of the h gate [Hp] */
  const float *peep;     /* LSTM: P of this direction as [3][Hp], or NULL */
  float *h[2];           /* step s reads H_{t-1} from h[s % 2] and writes H_t to the other */
  const float *h_prev;
  float *h_next;
  float *c;              /* LSTM: the cell state, updated in place */
  float *rh, *z;         /* GRU without linear_before_reset: r . H_{t-1}, and z */
  float *y;              /* the Y output, or NULL */
  const act *acts;       /* this direction's activations */
  int64_t steps;         /* the longest sequence */
  cell_fn step_cell;     /* the cell of a step's single (or first) pass */
  int two_pass;          /* GRU without linear_before_reset */
  /* the pass: its gates, the rows its recurrent product reads (H_{t-1} or r . H_{t-1}), its cell */
  int first_gate, n_gates;
  const float *src;
  cell_fn cell;
};

/* The time index batch entry b works on at this step; -1 once its sequence has ended. */
static int64_t step_time(const rnn_step *j, int64_t b) {
  int64_t len = j->lens[b];
  if (j->s >= len) return -1;
  return j->reverse ? len - 1 - j->s : j->s;
}

/* Row (t, b) of X and of X.W^T. */
static int64_t input_row(const rnn_step *j, int64_t t, int64_t b) { return j->p->layout ? b * j->T + t : t * j->B + b; }

/* x += y over the first `rows` rows of a tile */
static void add_tile(float *restrict x, const float *restrict y, int rows) {
  for (int k = 0; k < rows * HB; k++) x[k] += y[k];
}

/* clip, then the activation, over a tile's values of one gate */
static void activate_tile(const rnn_step *j, const act *a, float *x, int rows) {
  clip_inplace(x, rows * HB, j->p->clip);
  activate(a, x, rows * HB);
}

/* Sets units [u0, u0 + HB) of row b of H_t to h when the row runs at this step, else carries
 * H_{t-1} over; Y gets the units that exist. */
static void set_h(const rnn_step *j, int64_t b, int64_t u0, const float *h) {
  const int64_t at = b * j->Hp + u0, t = step_time(j, b);
  memcpy(j->h_next + at, t < 0 ? j->h_prev + at : h, HB * sizeof *h);
  if (t < 0 || !j->y) return;
  int64_t row = j->p->layout ? (b * j->T + t) * j->D + j->d : (t * j->D + j->d) * j->B + b;
  int64_t units = j->H - u0 < HB ? j->H - u0 : HB;
  memcpy(j->y + row * j->H + u0, h, (size_t)units * sizeof *h);
}

static void rnn_cell(const rnn_step *j, int64_t b0, int rows, int64_t hb, gate_tile *rec, gate_tile *in) {
  add_tile(rec[0], in[0], rows);
  activate_tile(j, &j->acts[0], rec[0], rows);
  for (int r = 0; r < rows; r++) set_h(j, b0 + r, hb * HB, rec[0] + r * HB);
}

/* i, o, f, c~ = f(..), f(..), f(..), g(..); C = f.C + i.c~; H = o.h(C), with the peepholes
 * adding P.C_{t-1} to i and f and P.C_t to o. */
static void lstm_cell(const rnn_step *j, int64_t b0, int rows, int64_t hb, gate_tile *rec, gate_tile *in) {
  const int64_t Hp = j->Hp, u0 = hb * HB;
  const float *pi = j->peep ? j->peep + u0 : NULL, *po = pi ? pi + Hp : NULL, *pf = pi ? pi + 2 * Hp : NULL;
  float *gi = rec[0], *go = rec[1], *gf = rec[2], *gc = rec[3];
  gate_tile hc; /* h(C) */
  for (int g = 0; g < 4; g++) add_tile(rec[g], in[g], rows);
  for (int r = 0; pi && r < rows; r++) {
    const float *c = j->c + (b0 + r) * Hp + u0;
    for (int q = 0; q < HB; q++) {
      gi[r * HB + q] += pi[q] * c[q];
      gf[r * HB + q] += pf[q] * c[q];
    }
  }
  activate_tile(j, &j->acts[0], gi, rows);
  if (j->p->input_forget) /* coupled gates: f = 1 - i */
    for (int k = 0; k < rows * HB; k++) gf[k] = 1 - gi[k];
  else
    activate_tile(j, &j->acts[0], gf, rows);
  activate_tile(j, &j->acts[1], gc, rows);
  for (int r = 0; r < rows; r++) {
    float *restrict c = j->c + (b0 + r) * Hp + u0;
    if (step_time(j, b0 + r) >= 0) {
      for (int q = 0; q < HB; q++) c[q] = gf[r * HB + q] * c[q] + gi[r * HB + q] * gc[r * HB + q];
      if (po)
        for (int q = 0; q < HB; q++) go[r * HB + q] += po[q] * c[q];
    }
    memcpy(hc + r * HB, c, sizeof(float) * HB); /* C itself stays unclipped */
  }
  activate_tile(j, &j->acts[0], go, rows);
  activate_tile(j, &j->acts[2], hc, rows);
  for (int k = 0; k < rows * HB; k++) go[k] *= hc[k];
  for (int r = 0; r < rows; r++) set_h(j, b0 + r, u0, go + r * HB);
}

/* z and r = f(..) of a GRU tile, its first two gates. */
static void gru_update_reset(const rnn_step *j, int rows, gate_tile *rec, gate_tile *in) {
  for (int g = 0; g < 2; g++) {
    add_tile(rec[g], in[g], rows);
    activate_tile(j, &j->acts[0], rec[g], rows);
  }
}

/* h~ = g(gh) and H = (1 - z).h~ + z.H_{t-1}; z's rows are z_ld apart. */
static void gru_finish(const rnn_step *j, int64_t b0, int rows, int64_t u0, const float *z, int64_t z_ld, float *gh) {
  activate_tile(j, &j->acts[1], gh, rows);
  for (int r = 0; r < rows; r++) {
    const float *zr = z + r * z_ld, *h = j->h_prev + (b0 + r) * j->Hp + u0;
    float *restrict out = gh + r * HB;
    for (int q = 0; q < HB; q++) out[q] = (1 - zr[q]) * out[q] + zr[q] * h[q];
    set_h(j, b0 + r, u0, out);
  }
}

/* linear_before_reset: h~ = g(Xh.Wh^T + Wbh + r.(H_{t-1}.Rh^T + Rbh)). */
static void gru_cell(const rnn_step *j, int64_t b0, int rows, int64_t hb, gate_tile *rec, gate_tile *in) {
  const int64_t u0 = hb * HB;
  const float *r = rec[1], *rb = j->rb_h + u0;
  float *gh = rec[2];
  gru_update_reset(j, rows, rec, in);
  for (int i = 0; i < rows; i++)
    for (int q = 0; q < HB; q++) gh[i * HB + q] = in[2][i * HB + q] + r[i * HB + q] * (gh[i * HB + q] + rb[q]);
  gru_finish(j, b0, rows, u0, rec[0], HB, gh);
}

/* Without linear_before_reset, the first pass of a step: z, and r . H_{t-1} for the product
 * with Rh, which needs every unit of it. */
static void gru_reset_cell(const rnn_step *j, int64_t b0, int rows, int64_t hb, gate_tile *rec, gate_tile *in) {
  const int64_t Hp = j->Hp, u0 = hb * HB;
  const float *z = rec[0], *r = rec[1];
  gru_update_reset(j, rows, rec, in);
  for (int i = 0; i < rows; i++) {
    const int64_t at = (b0 + i) * Hp + u0;
    memcpy(j->z + at, z + i * HB, sizeof(float) * HB);
    for (int q = 0; q < HB; q++) j->rh[at + q] = r[i * HB + q] * j->h_prev[at + q];
  }
}

/* The second pass, for the h gate alone: rec is (r . H_{t-1}).Rh^T. */
static void gru_candidate_cell(const rnn_step *j, int64_t b0, int rows, int64_t hb, gate_tile *rec, gate_tile *in) {
  const int64_t u0 = hb * HB;
  add_tile(rec[0], in[0], rows);
  gru_finish(j, b0, rows, u0, j->z + b0 * j->Hp + u0, j->Hp, rec[0]);
}

/* The default LSTM and GRU (sigmoid and tanh, no clip; LSTM without peepholes or coupled gates;
 * GRU with linear_before_reset, as PyTorch exports it) take one pass over each row in registers
 * instead of a pass per gate and equation: with a batch of one, a tile is a single row and the
 * passes' overhead would be most of the gate work. */
static int plain_activations(const rnn_params *p, const act *a) {
  return p->clip == INFINITY && a[0].kind == ACT_SIGMOID && a[1].kind == ACT_TANH &&
         (p->cell != CELL_LSTM || a[2].kind == ACT_TANH);
}

static inline __m256 gate8(const gate_tile *rec, const gate_tile *in, int g, int k) {
  return _mm256_add_ps(_mm256_loadu_ps(rec[g] + k), _mm256_loadu_ps(in[g] + k));
}

static void lstm_cell_plain(const rnn_step *j, int64_t b0, int rows, int64_t hb, gate_tile *rec, gate_tile *in) {
  const int64_t u0 = hb * HB;
  for (int r = 0; r < rows; r++) {
    float h[HB];
    if (step_time(j, b0 + r) >= 0) {
      float *c = j->c + (b0 + r) * j->Hp + u0;
      for (int q = 0; q < HB; q += 8) {
        const int k = r * HB + q;
        __m256 i = sigmoid8(gate8(rec, in, 0, k)), o = sigmoid8(gate8(rec, in, 1, k));
        __m256 f = sigmoid8(gate8(rec, in, 2, k)), g = tanh8(gate8(rec, in, 3, k));
        __m256 cv = _mm256_fmadd_ps(f, _mm256_loadu_ps(c + q), _mm256_mul_ps(i, g));
        _mm256_storeu_ps(c + q, cv);
        _mm256_storeu_ps(h + q, _mm256_mul_ps(o, tanh8(cv)));
      }
    }
    set_h(j, b0 + r, u0, h);
  }
}

static void gru_cell_plain(const rnn_step *j, int64_t b0, int rows, int64_t hb, gate_tile *rec, gate_tile *in) {
  const int64_t u0 = hb * HB;
  for (int r = 0; r < rows; r++) {
    const float *h_prev = j->h_prev + (b0 + r) * j->Hp + u0;
    float h[HB];
    for (int q = 0; q < HB; q += 8) {
      const int k = r * HB + q;
      __m256 z = sigmoid8(gate8(rec, in, 0, k)), rg = sigmoid8(gate8(rec, in, 1, k));
      __m256 rec_h = _mm256_add_ps(_mm256_loadu_ps(rec[2] + k), _mm256_loadu_ps(j->rb_h + u0 + q));
      __m256 n = tanh8(_mm256_fmadd_ps(rg, rec_h, _mm256_loadu_ps(in[2] + k)));
      /* (1 - z).n + z.H_{t-1} */
      _mm256_storeu_ps(h + q, _mm256_fmadd_ps(z, _mm256_sub_ps(_mm256_loadu_ps(h_prev + q), n), n));
    }
    set_h(j, b0 + r, u0, h);
  }
}

/* in[g] = X_t.W^T + biases for a tile's rows and the pass's gates: multiplied here when the
 * step is fused, else copied from X.W^T of all steps. A row past its sequence's end takes the
 * row of time 0 (its results are not used). */
static void input_part(const rnn_step *j, int64_t b0, int rows, int64_t hb, gate_tile *in) {
  const int64_t block = (hb * j->G + j->first_gate) * HB; /* the pass's first gate of block hb */
  if (!j->packed_w) {
    for (int r = 0; r < rows; r++) {
      int64_t t = step_time(j, b0 + r);
      const float *xw = j->xw + input_row(j, t < 0 ? 0 : t, b0 + r) * j->xw_ld + block;
      for (int g = 0; g < j->n_gates; g++) memcpy(in[g] + r * HB, xw + g * HB, sizeof(float) * HB);
    }
    return;
  }
  const float *a[TILE_ROWS];
  for (int r = 0; r < rows; r++) {
    int64_t t = step_time(j, b0 + r);
    a[r] = j->x + input_row(j, t < 0 ? 0 : t, b0 + r) * j->I;
  }
  tile_product(a, rows, j->packed_w + block * j->I, j->I, j->n_gates, in);
  for (int g = 0; g < j->n_gates; g++)
    for (int r = 0; r < rows; r++)
      for (int q = 0; q < HB; q++) in[g][r * HB + q] += j->bias[block + g * HB + q];
}

/* The current pass over rows [b0, b1) of block hb. */
static void step_block(const rnn_step *j, int64_t hb, int64_t b0, int64_t b1) {
  const float *panels = j->packed_r + (hb * j->G + j->first_gate) * j->H * HB;
  for (int64_t b = b0; b < b1;) {
    const int rows = tile_rows(b1 - b);
    const float *a[TILE_ROWS];
    gate_tile rec[4], in[4];
    input_part(j, b, rows, hb, in);
    for (int r = 0; r < rows; r++) a[r] = j->src + (b + r) * j->Hp;
    tile_product(a, rows, panels, j->H, j->n_gates, rec);
    j->cell(j, b, rows, hb, rec, in);
    b += rows;
  }
}

/* Step s's first pass: every gate, or z and r when the GRU takes two. */
static void first_pass(rnn_step *j, int64_t s) {
  j->s = s;
  j->h_prev = j->h[s % 2];
  j->h_next = j->h[(s + 1) % 2];
  j->src = j->h_prev;
  j->first_gate = 0;
  j->n_gates = j->two_pass ? 2 : (int)j->G;
  j->cell = j->two_pass ? gru_reset_cell : j->step_cell;
}

/* The GRU's second pass: the h gate, from r . H_{t-1}. */
static void second_pass(rnn_step *j) {
  j->src = j->rh;
  j->first_gate = 2;
  j->n_gates = 1;
  j->cell = gru_candidate_cell;
}

/* The current pass over blocks [hb0, hb1) of every row. */
static void pass_blocks(void *arg, int64_t hb0, int64_t hb1) {
  for (int64_t hb = hb0; hb < hb1; hb++) step_block(arg, hb, 0, ((const rnn_step *)arg)->B);
}

/* Small batches split each pass by blocks of hidden units (each thread reads its part of R),
 * with a barrier per pass, once a pass has this many multiply-adds: below, the pool's hand-off
 * (microseconds, far more when the other cores are busy) costs more than it saves. A step of
 * LSTM(hidden 128) at batch 1 has 65536. */
#define MIN_SPLIT_MADDS (1 << 20)

static void run_pass(kx_ctx *c, rnn_step *j) {
  const int64_t blocks = hidden_blocks(j->H), K = j->H + (j->packed_w ? j->I : 0);
  const double madds = (double)j->B * j->n_gates * HB * K * blocks;
  if (madds < MIN_SPLIT_MADDS) pass_blocks(j, 0, blocks);
  else kx_parallel(c, blocks, 2 * madds / blocks, pass_blocks, j);
}

/* Larger batches: every step for rows [ROW_UNIT * u0, ROW_UNIT * u1). Batch rows never meet,
 * so splitting them between threads needs no barrier between steps: a thread that falls behind
 * (on a busy machine) delays the end of the run, not every step. Units of 4 rows let the pool
 * cut a batch of 64 into 8 equal parts of two full tiles each. */
#define ROW_UNIT 4

static void run_rows(void *arg, int64_t u0, int64_t u1) {
  rnn_step j = *(const rnn_step *)arg; /* this thread's step counter */
  const int64_t b0 = ROW_UNIT * u0, b1 = ROW_UNIT * u1 < j.B ? ROW_UNIT * u1 : j.B;
  for (int64_t s = 0; s < j.steps; s++) {
    first_pass(&j, s);
    for (int64_t hb = 0; hb < hidden_blocks(j.H); hb++) step_block(&j, hb, b0, b1);
    if (!j.two_pass) continue;
    second_pass(&j);
    for (int64_t hb = 0; hb < hidden_blocks(j.H); hb++) step_block(&j, hb, b0, b1);
  }
}

/* ------------------------------------------------------------------ the operator */


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
  /* bounds the sizes so that every product of them below fits in int64_t */
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


/* From this batch size on, each step multiplies X_t by W itself, with the same tiles as
 * H_{t-1}.R^T, instead of reading X.W^T computed for all steps at once: that buffer (T*B*4*H
 * floats for an LSTM) outgrows the caches and costs more to write and read back than W's panels
 * cost to stream. Smaller batches would read W once per step for few rows. */
#define FUSE_MIN_BATCH 4

/* The run's working memory, all float32. Pointers to inputs are views when X is float. */
typedef struct rnn_work {
  const float *x, *w, *r, *b, *h0, *c0, *p;
  int fused;                       /* B >= FUSE_MIN_BATCH */
  const float *packed_w, *packed_r; /* [D] W and R as panels: the node's, or in scratch */
  float *y, *yh, *yc;              /* where outputs are computed (the outputs themselves when float) */
  float *xw;                       /* unless fused: [T*B, D*G*Hp] X.W^T + biases (see input_projection) */
  float *bias;                     /* [D*G*Hp]: Wb + Rb in that column order (GRU linear_before_reset: Wbh alone) */
  float *rb_h;                     /* [D, Hp]: GRU with linear_before_reset: Rb of the h gate (zero without B) */
  float *peep;                     /* [D, 3, Hp]: P zero-padded, or NULL */
  float *h[2], *c, *rh, *z;        /* [B, Hp] states: H_{t-1} and H_t alternate between h[0] and h[1] */
  float *w_buf, *r_buf;            /* for W and R when the node has no packed copy */
  int32_t *lens;
} rnn_work;

static void carve_work(carve *cv, const kx_ctx *c, const rnn_inputs *in, int widen, int want_y, rnn_work *w) {
  const rnn_params *p = c->node->params;
  const int64_t T = in->T, B = in->B, I = in->I, H = in->H, D = in->D, G = in->G, GH = G * H;
  const int64_t Hp = hidden_blocks(H) * HB;
  w->fused = B >= FUSE_MIN_BATCH;
  w->xw = w->fused ? NULL : carve_floats(cv, T * B * D * G * Hp);
  w->w_buf = p->packed_w ? NULL : carve_floats(cv, packed_floats(D, G, H, I));
  w->r_buf = p->packed_r ? NULL : carve_floats(cv, packed_floats(D, G, H, H));
  w->bias = carve_floats(cv, D * G * Hp);
  w->rb_h = carve_floats(cv, D * Hp);
  w->peep = in->p ? carve_floats(cv, D * 3 * Hp) : NULL;
  w->h[0] = carve_floats(cv, B * Hp);
  w->h[1] = carve_floats(cv, B * Hp);
  w->c = carve_floats(cv, B * Hp);
  w->rh = carve_floats(cv, B * Hp);
  w->z = carve_floats(cv, B * Hp);
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

/* The biases of both products fold into one, in the panels' column order ([D][block][gate][HB],
 * zero past H), except Rbh under linear_before_reset, which the reset gate multiplies. P and
 * Rbh are padded to Hp. */
static void prepare_vectors(const rnn_params *p, const rnn_inputs *in, rnn_work *w) {
  const int64_t H = in->H, G = in->G, Hp = hidden_blocks(H) * HB;
  float *bias = w->bias;
  for (int64_t d = 0; d < in->D; d++) {
    const float *wb = w->b ? w->b + d * 2 * G * H : NULL, *rb = wb ? wb + G * H : NULL;
    for (int64_t hb = 0; hb < hidden_blocks(H); hb++)
      for (int64_t g = 0; g < G; g++)
        for (int64_t q = 0; q < HB; q++) {
          int64_t unit = hb * HB + q, k = g * H + unit;
          *bias++ = unit >= H || !wb ? 0 : p->linear_before_reset && g == 2 ? wb[k] : wb[k] + rb[k];
        }
    for (int64_t k = 0; k < Hp; k++) w->rb_h[d * Hp + k] = rb && p->linear_before_reset && k < H ? rb[2 * H + k] : 0;
    for (int64_t g = 0; w->peep && g < 3; g++)
      for (int64_t k = 0; k < Hp; k++) w->peep[(d * 3 + g) * Hp + k] = k < H ? w->p[(d * 3 + g) * H + k] : 0;
  }
}

typedef struct projection {
  const float *x, *packed_w, *bias;
  float *xw;
  int64_t rows, I, panels; /* panels of all directions, gates and blocks */
} projection;

/* Rows [TILE_ROWS * i0, TILE_ROWS * i1) of X.W^T + biases, with the panels of W. */
static void project_rows(void *arg, int64_t i0, int64_t i1) {
  const projection *q = arg;
  const int64_t end = TILE_ROWS * i1 < q->rows ? TILE_ROWS * i1 : q->rows, ld = q->panels * HB;
  for (int64_t row = TILE_ROWS * i0; row < end;) {
    const int rows = tile_rows(end - row);
    const float *a[TILE_ROWS];
    for (int r = 0; r < rows; r++) a[r] = q->x + (row + r) * q->I;
    for (int64_t p = 0; p < q->panels; p += 4) {
      const int np = q->panels - p < 4 ? (int)(q->panels - p) : 4;
      gate_tile out[4];
      tile_product(a, rows, q->packed_w + p * q->I * HB, q->I, np, out);
      for (int i = 0; i < np; i++)
        for (int r = 0; r < rows; r++) {
          float *dst = q->xw + (row + r) * ld + (p + i) * HB;
          for (int k = 0; k < HB; k++) dst[k] = out[i][r * HB + k] + q->bias[(p + i) * HB + k];
        }
    }
    row += rows;
  }
}

/* X.W^T + biases for every step and direction at once, for batches too small to fuse it into
 * the steps. */
static void input_projection(kx_ctx *c, const rnn_inputs *in, rnn_work *w) {
  projection q = {w->x, w->packed_w, w->bias, w->xw, in->T * in->B, in->I, in->D * hidden_blocks(in->H) * in->G};
  kx_parallel(c, (q.rows + TILE_ROWS - 1) / TILE_ROWS, TILE_ROWS * 2.0 * (double)(q.panels * HB * q.I), project_rows,
              &q);
}

/* The cell of direction d's steps (of their first pass, for a GRU that takes two). */
static cell_fn step_cell(const rnn_params *p, int d, int peepholes) {
  const int plain = plain_activations(p, p->acts[d]);
  switch (p->cell) {
  case CELL_LSTM: return plain && !peepholes && !p->input_forget ? lstm_cell_plain : lstm_cell;
  case CELL_GRU: return plain && p->linear_before_reset ? gru_cell_plain : gru_cell;
  default: return rnn_cell;
  }
}

/* Runs direction d over all steps and stores its final states in Y_h and Y_c. */
static void run_direction(kx_ctx *c, const rnn_params *p, const rnn_inputs *in, rnn_work *w, int d) {
  const int64_t B = in->B, H = in->H, G = in->G, Hp = hidden_blocks(H) * HB;
  rnn_step j = {
      .p = p,
      .T = in->T,
      .B = B,
      .H = H,
      .Hp = Hp,
      .D = in->D,
      .G = G,
      .d = d,
      .reverse = p->reverse || d == 1,
      .lens = w->lens,
      .I = in->I,
      .x = w->x,
      .packed_w = w->fused ? w->packed_w + d * hidden_blocks(H) * G * in->I * HB : NULL,
      .bias = w->bias + d * G * Hp,
      .xw = w->fused ? NULL : w->xw + d * G * Hp,
      .xw_ld = in->D * G * Hp,
      .packed_r = w->packed_r + d * hidden_blocks(H) * G * H * HB,
      .rb_h = w->rb_h + d * Hp,
      .peep = w->peep ? w->peep + d * 3 * Hp : NULL,
      .c = w->c,
      .rh = w->rh,
      .z = w->z,
      .y = w->y,
      .h = {w->h[0], w->h[1]},
      .acts = p->acts[d],
      .step_cell = step_cell(p, d, w->peep != NULL),
      .two_pass = p->cell == CELL_GRU && !p->linear_before_reset,
  };
  memset(w->h[0], 0, (size_t)(B * Hp) * sizeof(float));
  memset(w->c, 0, (size_t)(B * Hp) * sizeof(float));
  for (int64_t b = 0; b < B; b++) {
    int64_t row = state_row(p, in, d, b) * H;
    if (w->h0) memcpy(w->h[0] + b * Hp, w->h0 + row, (size_t)H * sizeof(float));
    if (w->c0) memcpy(w->c + b * Hp, w->c0 + row, (size_t)H * sizeof(float));
  }
  for (int64_t b = 0; b < B; b++)
    if (w->lens[b] > j.steps) j.steps = w->lens[b];
  if (B >= 2 * TILE_ROWS) {
    /* per row: the steps' multiply-adds and a few dozen operations per gate value */
    const double row_cost = (double)j.steps * G * Hp * (2.0 * ((w->fused ? in->I : 0) + H) + 40);
    kx_parallel(c, (B + ROW_UNIT - 1) / ROW_UNIT, ROW_UNIT * row_cost, run_rows, &j);
  } else {
    for (int64_t s = 0; s < j.steps; s++) {
      first_pass(&j, s);
      run_pass(c, &j);
      if (!j.two_pass) continue;
      second_pass(&j);
      run_pass(c, &j);
    }
  }
  const float *h = w->h[j.steps % 2];
  for (int64_t b = 0; b < B; b++) {
    int64_t row = state_row(p, in, d, b) * H;
    int empty = w->lens[b] == 0;
    for (int64_t k = 0; k < H; k++) {
      w->yh[row + k] = empty ? 0 : h[b * Hp + k];
      w->yc[row + k] = empty ? 0 : w->c[b * Hp + k];
    }
  }
}

static kiln_status rnn_run(kx_ctx *c) {
  const rnn_params *p = c->node->params;
  rnn_inputs in;
  kiln_status s;
  if ((s = rnn_check(c, p, &in))) return s;
  const int64_t T = in.T, B = in.B, H = in.H, D = in.D;
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
  carve_work(&cv, c, &in, widen, y != NULL, &w);
  if (cv.overflow) return kiln_error(KILN_RESOURCE_EXHAUSTED, "LSTM/GRU/RNN working memory too large");
  cv = (carve){.base = kx_scratch(c, cv.used)};
  if (!cv.base) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for LSTM/GRU/RNN scratch");
  carve_work(&cv, c, &in, widen, y != NULL, &w);
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
  w.packed_r = p->packed_r;
  if (!w.packed_r) {
    pack_panels(w.r, D, in.G, H, H, w.r_buf);
    w.packed_r = w.r_buf;
  }
  w.packed_w = p->packed_w;
  if (!w.packed_w) {
    pack_panels(w.w, D, in.G, H, in.I, w.w_buf);
    w.packed_w = w.w_buf;
  }

  int64_t min_len = T;
  for (int64_t b = 0; b < B; b++) {
    w.lens[b] = !in.lens                       ? (int32_t)T
                : in.lens->dtype == KILN_INT32 ? ((const int32_t *)in.lens->data)[b]
                                               : (int32_t)((const int64_t *)in.lens->data)[b];
    if (w.lens[b] < min_len) min_len = w.lens[b];
  }
  prepare_vectors(p, &in, &w);
  /* rows past a sequence's end stay zero */
  if (w.y && min_len < T) memset(w.y, 0, (size_t)(T * D * B * H) * sizeof(float));

  if (!w.fused) input_projection(c, &in, &w);
  for (int d = 0; d < D; d++) run_direction(c, p, &in, &w, d);
  if (widen) {
    if (y) kx_from_float(dt, w.y, y->data, kiln_tensor_numel(y));
    if (yh) kx_from_float(dt, w.yh, yh->data, kiln_tensor_numel(yh));
    if (yc) kx_from_float(dt, w.yc, yc->data, kiln_tensor_numel(yc));
  }
  return NULL;
}

const kx_op kx_ops_rnn[] = {
    {"", "LSTM", 1, 0, lstm_prepare, rnn_run, rnn_release, 0},
    {"", "GRU", 1, 0, gru_prepare, rnn_run, rnn_release, 0},
    {"", "RNN", 1, 0, simple_rnn_prepare, rnn_run, rnn_release, 0},
    {0},
};
