/* LSTM, GRU and RNN: bad inputs, and the kernels (threaded, small- and large-batch recurrent
 * products, both layouts) against a naive double-precision reference of the ONNX equations. */
#include "op_harness.h"

/* Float values uniform in [-scale, scale). */
static kiln_tensor random_tensor(int rank, const int64_t *dims, double scale) {
  return oh_uniform_tensor(KILN_FLOAT, rank, dims, -scale, scale);
}

/* ------------------------------------------------------------------ the reference */

typedef struct rnn_case {
  const char *op;
  int64_t T, B, I, H;
  int dirs, reverse, layout;
  int with_bias, with_lens, with_h0, with_c0, with_peep;
  int const_weights; /* W, R and B as initializers (packed when the model loads) */
  float clip; /* 0: none */
  int input_forget, linear_before_reset;
  int n_acts;
  const char *acts[6];
  float alpha[6], beta[6]; /* the alpha / beta of each activation (the test passes them in order) */
} rnn_case;

/* Activation a of the flattened list (direction-major); the op's defaults when none is given. */
static double ref_act(const rnn_case *k, int a, double x) {
  const char *lstm[] = {"Sigmoid", "Tanh", "Tanh"}, *gru[] = {"Sigmoid", "Tanh"};
  const char *n = k->n_acts                ? k->acts[a]
                  : !strcmp(k->op, "LSTM") ? lstm[a % 3]
                  : !strcmp(k->op, "GRU")  ? gru[a % 2]
                                           : "Tanh";
  double al = k->alpha[a], be = k->beta[a];
  if (!strcmp(n, "Sigmoid")) return 1 / (1 + exp(-x));
  if (!strcmp(n, "Tanh")) return tanh(x);
  if (!strcmp(n, "Relu")) return x > 0 ? x : 0;
  if (!strcmp(n, "LeakyRelu")) return x >= 0 ? x : al * x;
  if (!strcmp(n, "HardSigmoid")) return fmin(fmax(al * x + be, 0), 1);
  if (!strcmp(n, "Softsign")) return x / (1 + fabs(x));
  if (!strcmp(n, "Softplus")) return log1p(exp(x));
  if (!strcmp(n, "Elu")) return x >= 0 ? x : al * (exp(x) - 1);
  if (!strcmp(n, "Affine")) return al * x + be;
  if (!strcmp(n, "ScaledTanh")) return al * tanh(be * x);
  if (!strcmp(n, "ThresholdedRelu")) return x >= al ? x : 0;
  abort();
}

static double clipped(const rnn_case *k, double x) { return k->clip > 0 ? fmin(fmax(x, -k->clip), k->clip) : x; }

/* Logical (layout 0) data: X [T,B,I], W [D,G*H,I], R [D,G*H,H], Bias [D,2*G*H], h0/c0 [D,B,H],
 * P [D,3H]; outputs Y [T,D,B,H], Yh/Yc [D,B,H]. */
typedef struct rnn_data {
  const float *x, *w, *r, *bias, *h0, *c0, *p;
  const int32_t *lens;
  double *y, *yh, *yc;
} rnn_data;

static void reference(const rnn_case *k, const rnn_data *io) {
  const int64_t T = k->T, B = k->B, I = k->I, H = k->H, D = k->dirs;
  const int G = !strcmp(k->op, "LSTM") ? 4 : !strcmp(k->op, "GRU") ? 3 : 1;
  const int per_dir = G == 4 ? 3 : G == 3 ? 2 : 1;
  double *g = calloc((size_t)(G * H), sizeof *g), *h = calloc((size_t)H, sizeof *h), *c = calloc((size_t)H, sizeof *c);
  double *rh = calloc((size_t)H, sizeof *rh);
  memset(io->y, 0, (size_t)(T * D * B * H) * sizeof *io->y);
  for (int64_t d = 0; d < D; d++) {
    const float *W = io->w + d * G * H * I, *R = io->r + d * G * H * H;
    const float *Wb = io->bias ? io->bias + d * 2 * G * H : NULL, *Rb = Wb ? Wb + G * H : NULL;
    const float *P = io->p ? io->p + d * 3 * H : NULL;
    int rev = k->reverse || d == 1, a0 = (int)d * per_dir;
    for (int64_t b = 0; b < B; b++) {
      int64_t len = io->lens ? io->lens[b] : T;
      for (int64_t j = 0; j < H; j++) {
        h[j] = io->h0 ? io->h0[(d * B + b) * H + j] : 0;
        c[j] = io->c0 ? io->c0[(d * B + b) * H + j] : 0;
      }
      for (int64_t s = 0; s < len; s++) {
        int64_t t = rev ? len - 1 - s : s;
        const float *xt = io->x + (t * B + b) * I;
        for (int64_t q = 0; q < G * H; q++) {
          double v = Wb ? (double)Wb[q] + Rb[q] : 0;
          for (int64_t i = 0; i < I; i++) v += (double)xt[i] * W[q * I + i];
          int recur_later = G == 3 && q >= 2 * H; /* GRU's h gate: handled below */
          if (!recur_later)
            for (int64_t j = 0; j < H; j++) v += h[j] * R[q * H + j];
          g[q] = v;
        }
        if (G == 1) {
          for (int64_t j = 0; j < H; j++) h[j] = ref_act(k, a0, clipped(k, g[j]));
        } else if (G == 3) {
          double *z = g, *r = g + H, *hh = g + 2 * H;
          for (int64_t j = 0; j < 2 * H; j++) g[j] = ref_act(k, a0, clipped(k, g[j]));
          for (int64_t q = 0; q < H; q++) {
            double rec = 0;
            if (k->linear_before_reset) {
              for (int64_t j = 0; j < H; j++) rec += h[j] * R[(2 * H + q) * H + j];
              double rbh = Rb ? Rb[2 * H + q] : 0;
              hh[q] = hh[q] - rbh + r[q] * (rec + rbh);
            } else {
              for (int64_t j = 0; j < H; j++) rh[j] = r[j] * h[j];
              for (int64_t j = 0; j < H; j++) rec += rh[j] * R[(2 * H + q) * H + j];
              hh[q] += rec;
            }
          }
          for (int64_t j = 0; j < H; j++) {
            double cand = ref_act(k, a0 + 1, clipped(k, hh[j]));
            h[j] = (1 - z[j]) * cand + z[j] * h[j];
          }
        } else {
          for (int64_t j = 0; j < H; j++) {
            double gi = g[j] + (P ? P[j] * c[j] : 0), gf = g[2 * H + j] + (P ? P[2 * H + j] * c[j] : 0);
            double i = ref_act(k, a0, clipped(k, gi));
            double f = k->input_forget ? 1 - i : ref_act(k, a0, clipped(k, gf));
            double cc = ref_act(k, a0 + 1, clipped(k, g[3 * H + j]));
            c[j] = f * c[j] + i * cc;
            double o = ref_act(k, a0, clipped(k, g[H + j] + (P ? P[H + j] * c[j] : 0)));
            h[j] = o * ref_act(k, a0 + 2, clipped(k, c[j]));
          }
        }
        for (int64_t j = 0; j < H; j++) io->y[((t * D + d) * B + b) * H + j] = h[j];
      }
      for (int64_t j = 0; j < H; j++) {
        io->yh[(d * B + b) * H + j] = len ? h[j] : 0;
        io->yc[(d * B + b) * H + j] = len ? c[j] : 0;
      }
    }
  }
  free(g);
  free(h);
  free(c);
  free(rh);
}

/* ------------------------------------------------------------------ the model */

static const char *const direction_names[] = {"forward", "reverse", "bidirectional"};

/* weights: W, R and B, made initializers when k->const_weights */
static kiln_model *build(const rnn_case *k, int opset, const kiln_tensor *const *weights) {
  int lstm = !strcmp(k->op, "LSTM");
  tb_model *b = tb_new(opset);
  const char *names[] = {"X", "W", "R", "B", "L", "H0", "C0", "P"};
  int present[] = {1, 1, 1, k->with_bias, k->with_lens, k->with_h0, lstm && k->with_c0, lstm && k->with_peep};
  char inputs[64] = "";
  int n_in = lstm ? 8 : 6;
  for (int i = 0; i < n_in; i++) {
    if (present[i] && k->const_weights && i >= 1 && i <= 3)
      tb_initializer(b, names[i], weights[i - 1]);
    else if (present[i])
      tb_input(b, names[i], i == 4 ? KILN_INT32 : KILN_FLOAT, -1, NULL);
    snprintf(inputs + strlen(inputs), sizeof inputs - strlen(inputs), "%s%s", i ? "," : "", present[i] ? names[i] : "");
  }
  tb_output(b, "Y", KILN_FLOAT);
  tb_output(b, "Yh", KILN_FLOAT);
  if (lstm) tb_output(b, "Yc", KILN_FLOAT);
  tb_node *n = tb_add_node(b, k->op, inputs, lstm ? "Y,Yh,Yc" : "Y,Yh");
  tb_attr_int(n, "hidden_size", k->H);
  tb_attr_string(n, "direction", direction_names[k->dirs == 2 ? 2 : k->reverse]);
  if (k->layout) tb_attr_int(n, "layout", 1);
  if (k->clip > 0) tb_attr_float(n, "clip", k->clip);
  if (k->input_forget) tb_attr_int(n, "input_forget", 1);
  if (k->linear_before_reset) tb_attr_int(n, "linear_before_reset", 1);
  if (k->n_acts) {
    tb_attr_strings(n, "activations", k->n_acts, k->acts);
    /* the lists hold values only for the functions that take them, in order */
    float alphas[6], betas[6];
    int n_alpha = 0, n_beta = 0;
    for (int i = 0; i < k->n_acts; i++) {
      const char *f = k->acts[i];
      int two = !strcmp(f, "Affine") || !strcmp(f, "ScaledTanh") || !strcmp(f, "HardSigmoid");
      if (two || !strcmp(f, "LeakyRelu") || !strcmp(f, "ThresholdedRelu") || !strcmp(f, "Elu"))
        alphas[n_alpha++] = k->alpha[i];
      if (two) betas[n_beta++] = k->beta[i];
    }
    if (n_alpha) tb_attr_floats(n, "activation_alpha", n_alpha, alphas);
    if (n_beta) tb_attr_floats(n, "activation_beta", n_beta, betas);
  }
  return oh_load(b);
}

/* Transposes the first two axes of a contiguous [a, b, rest] float tensor. */
static void swap01(const float *src, float *dst, int64_t a, int64_t b, int64_t rest) {
  for (int64_t i = 0; i < a; i++)
    for (int64_t j = 0; j < b; j++)
      memcpy(dst + (j * a + i) * rest, src + (i * b + j) * rest, (size_t)rest * sizeof *dst);
}

static double max_error(const float *got, const double *want, int64_t n) {
  double worst = 0;
  for (int64_t i = 0; i < n; i++) {
    double e = fabs(got[i] - want[i]) / (1 + fabs(want[i]));
    if (!(e <= worst)) worst = e;
  }
  return worst;
}

static void check_case(const rnn_case *k, kiln_pool *pool) {
  const int lstm = !strcmp(k->op, "LSTM");
  const int64_t T = k->T, B = k->B, I = k->I, H = k->H, D = k->dirs;
  const int64_t G = lstm ? 4 : !strcmp(k->op, "GRU") ? 3 : 1;
  kiln_tensor x = random_tensor(3, (int64_t[]){T, B, I}, 1), w = random_tensor(3, (int64_t[]){D, G * H, I}, 0.5f);
  kiln_tensor r = random_tensor(3, (int64_t[]){D, G * H, H}, 0.5f),
              bias = random_tensor(2, (int64_t[]){D, 2 * G * H}, 0.5f);
  kiln_tensor h0 = random_tensor(3, (int64_t[]){D, B, H}, 1), c0 = random_tensor(3, (int64_t[]){D, B, H}, 1);
  kiln_tensor p = random_tensor(2, (int64_t[]){D, 3 * H}, 0.5f), lens;
  CHECK_OK(kiln_tensor_alloc(&lens, KILN_INT32, 1, (int64_t[]){B}));
  for (int64_t b = 0; b < B; b++) /* a mix of lengths, full and empty ones included */
    ((int32_t *)lens.data)[b] = (int32_t)(b == 0 ? T : b == 1 ? 0 : (b * 7) % (T + 1));
  /* the kernel's view: batch-major X / states under layout 1 */
  kiln_tensor xk = x, h0k = h0, c0k = c0;
  if (k->layout) {
    CHECK_OK(kiln_tensor_alloc(&xk, KILN_FLOAT, 3, (int64_t[]){B, T, I}));
    CHECK_OK(kiln_tensor_alloc(&h0k, KILN_FLOAT, 3, (int64_t[]){B, D, H}));
    CHECK_OK(kiln_tensor_alloc(&c0k, KILN_FLOAT, 3, (int64_t[]){B, D, H}));
    swap01(x.data, xk.data, T, B, I);
    swap01(h0.data, h0k.data, D, B, H);
    swap01(c0.data, c0k.data, D, B, H);
  }
  const kiln_tensor *all[] = {&xk, &w, &r, &bias, &lens, &h0k, &c0k, &p}, *in[8];
  int present[] = {1, 1, 1, k->with_bias, k->with_lens, k->with_h0, lstm && k->with_c0, lstm && k->with_peep}, n = 0;
  for (int i = 0; i < 8; i++)
    if (present[i] && !(k->const_weights && i >= 1 && i <= 3)) in[n++] = all[i];
  kiln_model *m = build(k, k->layout ? 14 : 13, all + 1);
  kiln_session *s = NULL;
  kiln_session_options opt = {.pool = pool};
  if (m) CHECK_OK(kiln_session_create(m, &opt, &s));
  rnn_data io = {.x = x.data,
                 .w = w.data,
                 .r = r.data,
                 .bias = k->with_bias ? bias.data : NULL,
                 .h0 = k->with_h0 ? h0.data : NULL,
                 .c0 = lstm && k->with_c0 ? c0.data : NULL,
                 .p = lstm && k->with_peep ? p.data : NULL,
                 .lens = k->with_lens ? lens.data : NULL,
                 .y = calloc((size_t)(T * D * B * H + 1), sizeof(double)),
                 .yh = calloc((size_t)(D * B * H + 1), sizeof(double)),
                 .yc = calloc((size_t)(D * B * H + 1), sizeof(double))};
  reference(k, &io);
  float *tmp = calloc((size_t)(T * D * B * H + 1), sizeof(float));
  for (int rep = 0; s && rep < 2; rep++) { /* the second run uses the memory plan */
    const kiln_tensor *out[3];
    kiln_status st = kiln_session_run_tensors(s, in, out);
    if (st) {
      fprintf(stderr, "%s: %s\n", k->op, kiln_status_message(st));
      kiln_status_free(st);
      test_failures++;
      break;
    }
    const float *y = out[0]->data, *yh = out[1]->data, *yc = lstm ? out[2]->data : NULL;
    if (k->layout) { /* [B, T, D, H] -> [T, D, B, H]; [B, D, H] -> [D, B, H] */
      CHECK(out[0]->dims[0] == B && out[0]->dims[1] == T && out[0]->dims[2] == D);
      for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
          for (int64_t d = 0; d < D; d++)
            memcpy(tmp + ((t * D + d) * B + b) * H, y + ((b * T + t) * D + d) * H, (size_t)H * sizeof *tmp);
      y = tmp;
    } else {
      CHECK(out[0]->dims[0] == T && out[0]->dims[1] == D && out[0]->dims[2] == B && out[0]->dims[3] == H);
    }
    double e = max_error(y, io.y, T * D * B * H);
    float *states = malloc((size_t)(D * B * H + 1) * sizeof *states);
    for (int which = 0; which < (lstm ? 2 : 1); which++) {
      const float *st = which ? yc : yh;
      if (k->layout) {
        swap01(st, states, B, D, H);
        st = states;
      }
      double es = max_error(st, which ? io.yc : io.yh, D * B * H);
      if (es > e) e = es;
    }
    free(states);
    if (e > 2e-5) {
      fprintf(stderr, "%s T=%lld B=%lld I=%lld H=%lld dirs=%d reverse=%d layout=%d: max error %g\n", k->op,
              (long long)T, (long long)B, (long long)I, (long long)H, k->dirs, k->reverse, k->layout, e);
      test_failures++;
    }
  }
  free(tmp);
  free(io.y);
  free(io.yh);
  free(io.yc);
  kiln_tensor *owned[] = {&x, &w, &r, &bias, &h0, &c0, &p, &lens};
  for (int i = 0; i < 8; i++) kiln_tensor_release(owned[i]);
  if (k->layout) {
    kiln_tensor_release(&xk);
    kiln_tensor_release(&h0k);
    kiln_tensor_release(&c0k);
  }
  kiln_session_free(s);
  kiln_model_free(m);
}

/* ------------------------------------------------------------------ tests */

static void test_lstm_against_reference(void) {
  kiln_pool *pool;
  CHECK_OK(kiln_pool_create(2, &pool));
  /* batch 3 takes X.W^T of all steps, 19 splits its rows; H 13 and 33 leave a partial block */
  const int64_t shapes[][4] = {{5, 3, 4, 13}, {6, 19, 7, 16}, {1, 1, 3, 8}, {4, 2, 5, 33}};
  for (int sh = 0; sh < 4; sh++)
    for (int variant = 0; variant < 6; variant++) {
      rnn_case k = {.op = "LSTM", .T = shapes[sh][0], .B = shapes[sh][1], .I = shapes[sh][2], .H = shapes[sh][3]};
      k.dirs = variant >= 3 ? 2 : 1;
      k.reverse = variant == 1;
      k.layout = variant == 2 || variant == 5;
      k.with_bias = variant != 0;
      k.with_lens = variant >= 1;
      k.with_h0 = k.with_c0 = variant >= 2;
      k.with_peep = variant == 3 || variant == 4;
      k.clip = variant == 4 ? 0.7f : 0;
      k.input_forget = variant == 5;
      check_case(&k, pool);
    }
  kiln_pool_free(pool);
}

static void test_gru_rnn_against_reference(void) {
  kiln_pool *pool;
  CHECK_OK(kiln_pool_create(2, &pool));
  const int64_t shapes[][4] = {{5, 3, 4, 13}, {6, 19, 7, 16}};
  for (int sh = 0; sh < 2; sh++)
    for (int variant = 0; variant < 4; variant++) {
      rnn_case k = {.op = "GRU", .T = shapes[sh][0], .B = shapes[sh][1], .I = shapes[sh][2], .H = shapes[sh][3]};
      k.dirs = variant >= 2 ? 2 : 1;
      k.reverse = variant == 1;
      k.layout = variant == 3;
      k.with_bias = k.with_lens = k.with_h0 = variant != 0;
      k.linear_before_reset = variant & 1;
      k.clip = variant == 2 ? 0.5f : 0;
      check_case(&k, pool);
      k.op = "RNN";
      k.linear_before_reset = 0;
      if (variant == 3) { /* a non-default activation per direction */
        k.n_acts = 2;
        k.acts[0] = "Relu";
        k.acts[1] = "Tanh";
      }
      check_case(&k, pool);
    }
  kiln_pool_free(pool);
}

/* The kernel's other paths: batches of 4 and more multiply X_t by W in each step, smaller ones
 * take X.W^T of all steps; batches of 12 and more split their rows between threads, smaller ones
 * split each step by blocks of hidden units once it is big enough; tiles of 6, 4, 2 and 1 rows;
 * W and R packed at load when they are constants. On 1 and 2 threads. */
static void test_paths(void) {
  kiln_pool *pools[2];
  CHECK_OK(kiln_pool_create(1, &pools[0]));
  CHECK_OK(kiln_pool_create(2, &pools[1]));
  const struct {
    const char *op;
    int64_t T, B, I, H;
    int linear_before_reset;
  } shapes[] = {
      {"LSTM", 3, 3, 5, 300, 0}, /* X.W^T up front; steps split by blocks */
      {"GRU", 3, 8, 7, 256, 0},  /* X_t.W^T in the steps; the first of two passes split; 4+4 rows */
      {"GRU", 4, 5, 6, 40, 1},   /* tiles of 4 and 1 rows */
      {"LSTM", 4, 13, 6, 20, 0}, /* rows split; tiles of 6, 4 and 1 rows */
      {"RNN", 3, 7, 4, 17, 0},
  };
  for (size_t sh = 0; sh < sizeof shapes / sizeof *shapes; sh++)
    for (int variant = 0; variant < 4; variant++) {
      rnn_case k = {.op = shapes[sh].op,
                    .T = shapes[sh].T,
                    .B = shapes[sh].B,
                    .I = shapes[sh].I,
                    .H = shapes[sh].H,
                    .dirs = variant & 1 ? 2 : 1,
                    .with_bias = 1,
                    .with_lens = 1,
                    .with_h0 = 1,
                    .with_c0 = 1,
                    .const_weights = variant >= 2,
                    .linear_before_reset = shapes[sh].linear_before_reset};
      check_case(&k, pools[variant & 1]);
    }
  kiln_pool_free(pools[0]);
  kiln_pool_free(pools[1]);
}

/* Every activation, with parameters where it takes them (the kernel reads the packed
 * activation_alpha / activation_beta lists that build() makes). */
static void test_activations(void) {
  kiln_pool *pool;
  CHECK_OK(kiln_pool_create(2, &pool));
  const char *sets[][2] = {{"LeakyRelu", "Affine"},
                           {"ThresholdedRelu", "HardSigmoid"},
                           {"Elu", "ScaledTanh"},
                           {"Softplus", "Softsign"},
                           {"Relu", "Sigmoid"}};
  for (int i = 0; i < 5; i++) {
    rnn_case k = {.op = "RNN",
                  .T = 5,
                  .B = 4,
                  .I = 3,
                  .H = 10,
                  .dirs = 2,
                  .with_bias = 1,
                  .with_lens = 1,
                  .n_acts = 2,
                  .acts = {sets[i][0], sets[i][1]},
                  .alpha = {0.2f, 0.6f},
                  .beta = {0.3f, 0.1f}};
    check_case(&k, pool);
  }
  rnn_case k = {.op = "LSTM",
                .T = 4,
                .B = 3,
                .I = 5,
                .H = 9,
                .dirs = 2,
                .with_bias = 1,
                .with_lens = 1,
                .with_h0 = 1,
                .with_c0 = 1,
                .n_acts = 6,
                .acts = {"HardSigmoid", "Softsign", "ScaledTanh", "Sigmoid", "Elu", "Softplus"},
                .alpha = {0.3f, 0, 0.9f, 0, 0.8f, 0},
                .beta = {0.4f, 0, 1.1f, 0, 0, 0}};
  check_case(&k, pool);
  rnn_case g = {.op = "GRU",
                .T = 4,
                .B = 3,
                .I = 5,
                .H = 9,
                .dirs = 1,
                .with_bias = 1,
                .n_acts = 2,
                .acts = {"HardSigmoid", "Affine"},
                .alpha = {0.25f, 0.5f},
                .beta = {0.45f, -0.2f}};
  check_case(&g, pool);
  kiln_pool_free(pool);
}

/* Runs a one-node model whose inputs are all fed, expecting an error containing `text`. */
static void expect_run_error(const char *op, const char *attr_dir, int n_in, const kiln_tensor *const *in,
                             const char *text) {
  tb_model *b = tb_new(14);
  tb_node *n = oh_node(b, op, in, n_in, 0, 1);
  tb_attr_int(n, "hidden_size", 2);
  if (attr_dir) tb_attr_string(n, "direction", attr_dir);
  kiln_tensor y;
  CHECK_ERROR(oh_run_once(b, in, n_in, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, text);
}

static void test_bad_inputs(void) {
  /* LSTM, hidden 2, input 3, batch 4, seq 5 */
  kiln_tensor x = random_tensor(3, (int64_t[]){5, 4, 3}, 1), w = random_tensor(3, (int64_t[]){1, 8, 3}, 1);
  kiln_tensor r = random_tensor(3, (int64_t[]){1, 8, 2}, 1), bias = random_tensor(2, (int64_t[]){1, 16}, 1);
  kiln_tensor bad_w = random_tensor(3, (int64_t[]){1, 6, 3}, 1), bad_r = random_tensor(3, (int64_t[]){1, 8, 3}, 1);
  kiln_tensor bad_b = random_tensor(2, (int64_t[]){1, 8}, 1), h0 = random_tensor(3, (int64_t[]){1, 3, 2}, 1);
  kiln_tensor x2 = random_tensor(2, (int64_t[]){5, 4}, 1), w2 = random_tensor(3, (int64_t[]){2, 8, 3}, 1);
  kiln_tensor wd, lens;
  CHECK_OK(kiln_tensor_alloc(&wd, KILN_DOUBLE, 3, (int64_t[]){1, 8, 3}));
  CHECK_OK(kiln_tensor_alloc(&lens, KILN_INT32, 1, (int64_t[]){4}));
  ((int32_t *)lens.data)[2] = 6;
  expect_run_error("LSTM", NULL, 3, (const kiln_tensor *[]){&x, &bad_w, &r},
                   "W has shape float[1,6,3], expected [1,8,3] ([num_directions, 4*hidden_size, input_size])");
  expect_run_error("LSTM", NULL, 3, (const kiln_tensor *[]){&x, &w, &bad_r},
                   "R has shape float[1,8,3], expected [1,8,2]");
  expect_run_error("LSTM", NULL, 4, (const kiln_tensor *[]){&x, &w, &r, &bad_b},
                   "B has shape float[1,8], expected [1,16]");
  expect_run_error("LSTM", NULL, 6, (const kiln_tensor *[]){&x, &w, &r, NULL, NULL, &h0},
                   "initial_h has shape float[1,3,2], expected [1,4,2]");
  expect_run_error("LSTM", NULL, 5, (const kiln_tensor *[]){&x, &w, &r, NULL, &lens},
                   "sequence_lens[2] is 6, outside [0, 5] (seq_length)");
  expect_run_error("LSTM", NULL, 3, (const kiln_tensor *[]){&x2, &w, &r}, "X must have rank 3, got rank 2");
  expect_run_error("LSTM", NULL, 3, (const kiln_tensor *[]){&x, &wd, &r}, "W is double but X is float");
  expect_run_error("LSTM", "bidirectional", 3, (const kiln_tensor *[]){&x, &w, &r},
                   "W has shape float[1,8,3], expected [2,8,3]");
  expect_run_error("LSTM", NULL, 3, (const kiln_tensor *[]){&x, &w2, &r}, "expected [1,8,3]");
  expect_run_error("GRU", NULL, 3, (const kiln_tensor *[]){&x, &w, &r},
                   "([num_directions, 3*hidden_size, input_size])");

  /* attributes are checked when the model loads */
  const kiln_tensor *xwr[3] = {&x, &w, &r};
  kiln_model *m = NULL;
  tb_model *b = tb_new(13);
  tb_attr_string(oh_node(b, "LSTM", xwr, 3, 0, 1), "direction", "sideways");
  CHECK_ERROR(tb_load(b, &m), KILN_INVALID_ARGUMENT, "direction 'sideways' is not forward, reverse or bidirectional");
  tb_free(b);
  b = tb_new(13);
  tb_attr_strings(oh_node(b, "GRU", xwr, 3, 0, 1), "activations", 1, (const char *[]){"Tanh"});
  CHECK_ERROR(tb_load(b, &m), KILN_INVALID_ARGUMENT, "activations has 1 names, expected 2 per direction");
  tb_free(b);
  b = tb_new(13);
  tb_attr_strings(oh_node(b, "RNN", xwr, 3, 0, 1), "activations", 1, (const char *[]){"Swish"});
  CHECK_ERROR(tb_load(b, &m), KILN_INVALID_ARGUMENT, "unknown activation 'Swish'");
  tb_free(b);

  kiln_tensor *all[] = {&x, &w, &r, &bias, &bad_w, &bad_r, &bad_b, &h0, &x2, &w2, &wd, &lens};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) kiln_tensor_release(all[i]);
}

/* Runs RNN (hidden 3, X all 0.5, W all 1, R zero) in dtype dt: every step gives tanh(1.5 * I / 3). */
static void check_simple_rnn(kiln_dtype dt, int64_t T, int64_t B, double tol) {
  const int64_t I = 3, H = 3;
  tb_model *b = tb_new(13);
  tb_input(b, "X", dt, -1, NULL);
  tb_input(b, "W", dt, -1, NULL);
  tb_input(b, "R", dt, -1, NULL);
  tb_output(b, "Y", dt);
  tb_output(b, "Yh", dt);
  tb_node *n = tb_add_node(b, "RNN", "X,W,R", "Y,Yh");
  tb_attr_int(n, "hidden_size", H);
  kiln_model *m = oh_load(b);
  if (!m) return;
  kiln_session *s;
  CHECK_OK(kiln_session_create(m, NULL, &s));
  kiln_tensor x, w, r;
  CHECK_OK(kiln_tensor_alloc(&x, dt, 3, (int64_t[]){T, B, I}));
  CHECK_OK(kiln_tensor_alloc(&w, dt, 3, (int64_t[]){1, H, I}));
  CHECK_OK(kiln_tensor_alloc(&r, dt, 3, (int64_t[]){1, H, H}));
  for (int64_t i = 0; i < T * B * I; i++) {
    if (dt == KILN_DOUBLE)
      ((double *)x.data)[i] = 0.5;
    else
      ((uint16_t *)x.data)[i] = kiln_float_to_half(0.5f);
  }
  for (int64_t i = 0; i < H * I; i++) {
    if (dt == KILN_DOUBLE)
      ((double *)w.data)[i] = 1;
    else
      ((uint16_t *)w.data)[i] = kiln_float_to_half(1);
  }
  const kiln_tensor *out[2];
  CHECK_OK(kiln_session_run_tensors(s, (const kiln_tensor *[]){&x, &w, &r}, out));
  CHECK(out[0]->dtype == dt && out[0]->rank == 4 && out[0]->dims[0] == T && out[0]->dims[2] == B);
  CHECK(out[1]->rank == 3 && out[1]->dims[1] == B && out[1]->dims[2] == H);
  for (int64_t i = 0; i < kiln_tensor_numel(out[0]); i++) CHECK_NEAR(kiln_tensor_get_f64(out[0], i), tanh(1.5), tol);
  for (int64_t i = 0; i < kiln_tensor_numel(out[1]); i++) /* no steps: Y_h is zero */
    CHECK_NEAR(kiln_tensor_get_f64(out[1], i), T ? tanh(1.5) : 0, tol);
  kiln_tensor_release(&x);
  kiln_tensor_release(&w);
  kiln_tensor_release(&r);
  kiln_session_free(s);
  kiln_model_free(m);
}

static void test_other_dtypes_and_empty(void) {
  check_simple_rnn(KILN_DOUBLE, 4, 2, 1e-6);
  check_simple_rnn(KILN_FLOAT16, 4, 2, 2e-3);
  check_simple_rnn(KILN_DOUBLE, 0, 2, 0);
  check_simple_rnn(KILN_DOUBLE, 3, 0, 0);
}

TEST_MAIN(TEST(test_lstm_against_reference), TEST(test_gru_rnn_against_reference), TEST(test_paths), TEST(test_activations),
          TEST(test_bad_inputs), TEST(test_other_dtypes_and_empty))
