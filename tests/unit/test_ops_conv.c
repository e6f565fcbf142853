/* Conv and ConvTranspose against naive reference loops over random shapes that reach every fast
 * path (pointwise, depthwise 3x3 stride 1/2 and general, direct small-channel kernels, im2col
 * with several GEMM blocks, Winograd, groups, 1-D/3-D, padding modes), with 1 and 2 threads,
 * with and without a fused activation; plus malformed inputs. */
#include "op_harness.h"

/* ------------------------------------------------------------------ harness */

static kiln_tensor random_tensor(kiln_dtype dtype, int rank, const int64_t *dims) {
  return oh_uniform_tensor(dtype, rank, dims, -1, 1);
}

/* Element 0 of a float, double or float16 tensor. */
static void kx_test_set(kiln_tensor *t, double v) {
  if (t->dtype == KILN_FLOAT) *(float *)t->data = (float)v;
  else if (t->dtype == KILN_DOUBLE) *(double *)t->data = v;
  else *(uint16_t *)t->data = kiln_float_to_half((float)v);
}

typedef struct conv_attrs {
  int transpose;
  int nd;
  const char *auto_pad; /* NULL: NOTSET */
  int64_t group;
  int64_t strides[3], dilations[3], pads[6], out_pad[3], out_shape[3];
  int has_out_shape, has_out_pad, has_pads;
  const char *act; /* an activation node after the convolution (fused into it): NULL, "Relu", "Clip", "LeakyRelu" */
  float lo, hi, alpha;
} conv_attrs;

/* Runs one Conv / ConvTranspose node on x, w and b (b may be NULL); *y receives a copy. The
 * weights are initializers when `w_const` (as in real models), else graph inputs. */
static kiln_status run_conv(const conv_attrs *a, const kiln_tensor *x, const kiln_tensor *w, const kiln_tensor *b,
                            int w_const, kiln_pool *pool, kiln_tensor *y) {
  tb_model *m = tb_new(13);
  tb_input(m, "x", x->dtype, x->rank, x->dims);
  if (w_const) tb_initializer(m, "w", w);
  else tb_input(m, "w", w->dtype, w->rank, w->dims);
  if (b) tb_input(m, "b", b->dtype, b->rank, b->dims);
  tb_output(m, "y", x->dtype);
  tb_node *n = tb_add_node(m, a->transpose ? "ConvTranspose" : "Conv", b ? "x,w,b" : "x,w", a->act ? "c" : "y");
  int nd = a->nd;
  if (a->auto_pad) tb_attr_string(n, "auto_pad", a->auto_pad);
  if (a->group > 1) tb_attr_int(n, "group", a->group);
  tb_attr_ints(n, "strides", nd, a->strides);
  tb_attr_ints(n, "dilations", nd, a->dilations);
  if (a->has_pads) tb_attr_ints(n, "pads", 2 * nd, a->pads);
  if (a->has_out_pad) tb_attr_ints(n, "output_padding", nd, a->out_pad);
  if (a->has_out_shape) tb_attr_ints(n, "output_shape", nd, a->out_shape);
  kiln_tensor lo = {0}, hi = {0};
  if (a->act && strcmp(a->act, "Clip") == 0) { /* bounds as constant inputs, as exporters write them */
    if (kiln_tensor_alloc(&lo, x->dtype, 0, NULL) || kiln_tensor_alloc(&hi, x->dtype, 0, NULL)) abort();
    kx_test_set(&lo, a->lo);
    kx_test_set(&hi, a->hi);
    tb_initializer(m, "lo", &lo);
    tb_initializer(m, "hi", &hi);
    tb_add_node(m, "Clip", "c,lo,hi", "y");
  } else if (a->act) {
    tb_node *act = tb_add_node(m, a->act, "c", "y");
    if (strcmp(a->act, "LeakyRelu") == 0) tb_attr_float(act, "alpha", a->alpha);
  }
  kiln_tensor_release(&lo);
  kiln_tensor_release(&hi);
  kiln_model *model = NULL;
  kiln_status s = tb_load(m, &model);
  tb_free(m);
  if (s) return s;
  kiln_session *sess = NULL;
  kiln_session_options opt = {.pool = pool};
  if ((s = kiln_session_create(model, &opt, &sess))) {
    kiln_model_free(model);
    return s;
  }
  const kiln_tensor *in[3] = {x, w_const ? b : w, b}, *out[1];
  for (int rep = 0; rep < 2 && !s; rep++) s = kiln_session_run_tensors(sess, in, out); /* second run: planned arena */
  if (!s) s = kiln_tensor_copy(y, out[0]);
  kiln_session_free(sess);
  kiln_model_free(model);
  return s;
}

static double get(const kiln_tensor *t, int64_t i) { return kiln_tensor_get_f64(t, i); }

/* The activation after the reference convolution, as ONNX defines it (Clip: min, then max). */
static void ref_activation(const conv_attrs *a, kiln_tensor *y) {
  double *v = y->data;
  for (int64_t i = 0; a->act && i < kiln_tensor_numel(y); i++) {
    if (strcmp(a->act, "Relu") == 0) v[i] = v[i] > 0 ? v[i] : 0;
    else if (strcmp(a->act, "LeakyRelu") == 0) v[i] = v[i] >= 0 ? v[i] : v[i] * a->alpha;
    else v[i] = v[i] < a->lo ? a->lo : v[i] > a->hi ? a->hi : v[i];
  }
}

/* Output size and leading padding of spatial dim i, as the ONNX spec defines them. */
static void ref_geometry(const conv_attrs *a, const kiln_tensor *x, const kiln_tensor *w, int i, int64_t *out, int64_t *pb) {
  int64_t in = x->dims[2 + i], k = w->dims[2 + i], s = a->strides[i], d = a->dilations[i], dk = (k - 1) * d + 1;
  if (!a->transpose) {
    if (a->auto_pad && strcmp(a->auto_pad, "VALID") != 0) {
      *out = (in + s - 1) / s;
      int64_t total = (*out - 1) * s + dk - in;
      if (total < 0) total = 0;
      *pb = strcmp(a->auto_pad, "SAME_UPPER") == 0 ? total / 2 : total - total / 2;
      return;
    }
    int64_t p0 = a->has_pads && !a->auto_pad ? a->pads[i] : 0, p1 = a->has_pads && !a->auto_pad ? a->pads[a->nd + i] : 0;
    *out = (in + p0 + p1 - dk) / s + 1;
    *pb = p0;
    return;
  }
  int64_t op = a->has_out_pad ? a->out_pad[i] : 0, full = s * (in - 1) + op + dk;
  if (a->has_out_shape) {
    *out = a->out_shape[i];
    int64_t total = full - *out > 0 ? full - *out : 0;
    *pb = a->auto_pad && strcmp(a->auto_pad, "SAME_UPPER") == 0 ? total / 2 : total - total / 2;
    return;
  }
  int64_t p0 = a->has_pads ? a->pads[i] : 0, p1 = a->has_pads ? a->pads[a->nd + i] : 0;
  *out = full - p0 - p1;
  *pb = p0;
}

/* Naive Conv / ConvTranspose in double: y (allocated here, as doubles). */
static kiln_tensor ref_conv(const conv_attrs *a, const kiln_tensor *x, const kiln_tensor *w, const kiln_tensor *b) {
  int nd = a->nd;
  int64_t N = x->dims[0], C = x->dims[1], G = a->group > 1 ? a->group : 1, Cg = C / G;
  int64_t M = a->transpose ? w->dims[1] * G : w->dims[0], Mg = M / G;
  int64_t out[3] = {1, 1, 1}, pb[3] = {0, 0, 0}, in[3] = {1, 1, 1}, k[3] = {1, 1, 1};
  int64_t dims[5] = {N, M};
  for (int i = 0; i < nd; i++) {
    ref_geometry(a, x, w, i, &out[i], &pb[i]);
    dims[2 + i] = out[i];
    in[i] = x->dims[2 + i];
    k[i] = w->dims[2 + i];
  }
  int64_t s[3] = {1, 1, 1}, d[3] = {1, 1, 1};
  for (int i = 0; i < nd; i++) {
    s[i] = a->strides[i];
    d[i] = a->dilations[i];
  }
  kiln_tensor y;
  if (kiln_tensor_alloc(&y, KILN_DOUBLE, 2 + nd, dims)) abort();
  double *yv = y.data;
  int64_t osz = out[0] * out[1] * out[2], isz = in[0] * in[1] * in[2], ksz = k[0] * k[1] * k[2];
  for (int64_t n = 0; n < N; n++)
    for (int64_t m = 0; m < M; m++)
      for (int64_t o = 0; o < osz; o++) yv[(n * M + m) * osz + o] = b ? get(b, m) : 0;
  for (int64_t n = 0; n < N; n++)
    for (int64_t g = 0; g < G; g++)
      for (int64_t c = 0; c < Cg; c++)
        for (int64_t mg = 0; mg < Mg; mg++)
          for (int64_t kk = 0; kk < ksz; kk++) {
            int64_t kq[3] = {kk / (k[1] * k[2]), kk / k[2] % k[1], kk % k[2]};
            double wv = a->transpose ? get(w, ((g * Cg + c) * Mg + mg) * ksz + kk) : get(w, ((g * Mg + mg) * Cg + c) * ksz + kk);
            int64_t cin = g * Cg + c, m = g * Mg + mg;
            /* conv: walk outputs and read the input; transpose: walk inputs and write outputs */
            const int64_t *sp = a->transpose ? in : out;
            for (int64_t q = 0; q < sp[0] * sp[1] * sp[2]; q++) {
              int64_t p[3] = {q / (sp[1] * sp[2]), q / sp[2] % sp[1], q % sp[2]};
              int64_t t[3], inside = 1, off = 0;
              for (int i = 0; i < 3; i++) {
                t[i] = i < nd ? p[i] * s[i] - pb[i] + kq[i] * d[i] : 0;
                int64_t lim = a->transpose ? out[i] : in[i];
                inside &= t[i] >= 0 && t[i] < lim;
                off = off * lim + t[i];
              }
              if (!inside) continue;
              if (a->transpose) yv[(n * M + m) * osz + off] += wv * get(x, (n * C + cin) * isz + q);
              else yv[(n * M + m) * osz + q] += wv * get(x, (n * C + cin) * isz + off);
            }
          }
  return y;
}

/* One case: random X [N, C, sp...], W, B; checks kiln against the reference with 1 and 2
 * threads, weights constant and not. */
static void check_case(const char *what, const conv_attrs *a, kiln_dtype dtype, int64_t N, int64_t C, int64_t M,
                       const int64_t *sp, const int64_t *k, int bias, kiln_pool *pool) {
  int nd = a->nd;
  int64_t G = a->group > 1 ? a->group : 1, xd[5] = {N, C}, wd[5];
  wd[0] = a->transpose ? C : M;
  wd[1] = a->transpose ? M / G : C / G;
  for (int i = 0; i < nd; i++) {
    xd[2 + i] = sp[i];
    wd[2 + i] = k[i];
  }
  kiln_tensor x = random_tensor(dtype, 2 + nd, xd), w = random_tensor(dtype, 2 + nd, wd), b = random_tensor(dtype, 1, &M);
  kiln_tensor want = ref_conv(a, &x, &w, bias ? &b : NULL);
  ref_activation(a, &want);
  double tol = dtype == KILN_FLOAT16 ? 2e-2 : 1e-4;
  for (int variant = 0; variant < 3; variant++) { /* 1 thread, 2 threads, 2 threads with constant W */
    kiln_tensor y = {0};
    kiln_status s = run_conv(a, &x, &w, bias ? &b : NULL, variant == 2, variant ? pool : NULL, &y);
    if (s) {
      fprintf(stderr, "%s (variant %d): %s\n", what, variant, kiln_status_message(s));
      kiln_status_free(s);
      test_failures++;
    } else if (!oh_values_close(&y, &want, tol, what)) {
      fprintf(stderr, "  ... in %s, variant %d\n", what, variant);
      test_failures++;
    }
    kiln_tensor_release(&y);
  }
  kiln_tensor_release(&x);
  kiln_tensor_release(&w);
  kiln_tensor_release(&b);
  kiln_tensor_release(&want);
}

static kiln_pool *test_pool(void) {
  kiln_pool *p = NULL;
  CHECK_OK(kiln_pool_create(2, &p));
  return p;
}

static conv_attrs attrs2d(int64_t s, int64_t d, int64_t p, int64_t group) {
  conv_attrs a = {.nd = 2, .group = group, .strides = {s, s}, .dilations = {d, d}, .pads = {p, p, p, p}, .has_pads = 1};
  return a;
}

/* ------------------------------------------------------------------ Conv */

static void test_conv_pointwise(void) {
  kiln_pool *pool = test_pool();
  conv_attrs a = attrs2d(1, 1, 0, 1);
  check_case("1x1", &a, KILN_FLOAT, 1, 24, 37, (int64_t[]){17, 19}, (int64_t[]){1, 1}, 1, pool);
  check_case("1x1 batch 3", &a, KILN_FLOAT, 3, 40, 13, (int64_t[]){9, 30}, (int64_t[]){1, 1}, 0, pool);
  check_case("1x1 K>384", &a, KILN_FLOAT, 1, 400, 7, (int64_t[]){5, 5}, (int64_t[]){1, 1}, 1, pool);
  check_case("1x1 images side by side", &a, KILN_FLOAT, 5, 12, 10, (int64_t[]){7, 7}, (int64_t[]){1, 1}, 1, pool);
  a = attrs2d(2, 1, 0, 1);
  check_case("1x1 stride 2", &a, KILN_FLOAT, 2, 16, 20, (int64_t[]){15, 14}, (int64_t[]){1, 1}, 1, pool);
  kiln_pool_free(pool);
}

static void test_conv_depthwise(void) {
  kiln_pool *pool = test_pool();
  conv_attrs a = attrs2d(1, 1, 1, 8);
  check_case("dw 3x3 s1", &a, KILN_FLOAT, 1, 8, 8, (int64_t[]){13, 21}, (int64_t[]){3, 3}, 1, pool);
  check_case("dw 3x3 s1 parallel", &a, KILN_FLOAT, 2, 8, 8, (int64_t[]){40, 41}, (int64_t[]){3, 3}, 1, pool);
  check_case("dw 3x3 s1 narrow", &a, KILN_FLOAT, 2, 8, 8, (int64_t[]){5, 3}, (int64_t[]){3, 3}, 0, pool);
  a = attrs2d(2, 1, 1, 6);
  check_case("dw 3x3 s2", &a, KILN_FLOAT, 3, 6, 6, (int64_t[]){14, 37}, (int64_t[]){3, 3}, 1, pool);
  check_case("dw 3x3 s2 odd", &a, KILN_FLOAT, 1, 6, 6, (int64_t[]){7, 7}, (int64_t[]){3, 3}, 1, pool);
  a = attrs2d(1, 2, 3, 4);
  check_case("dw 5x5 dilated", &a, KILN_FLOAT, 1, 4, 4, (int64_t[]){12, 19}, (int64_t[]){5, 5}, 1, pool);
  a = attrs2d(3, 1, 2, 4);
  check_case("dw 4x2 stride 3", &a, KILN_FLOAT, 1, 4, 4, (int64_t[]){16, 11}, (int64_t[]){4, 2}, 1, pool);
  a = attrs2d(2, 1, 2, 4);
  check_case("dw 5x5 stride 2", &a, KILN_FLOAT, 1, 4, 4, (int64_t[]){32, 32}, (int64_t[]){5, 5}, 1, pool);
  a = attrs2d(1, 1, 0, 3);
  check_case("dw multiplier 2", &a, KILN_FLOAT, 2, 3, 6, (int64_t[]){10, 9}, (int64_t[]){3, 3}, 1, pool);
  a = attrs2d(2, 1, 0, 5);
  a.pads[2] = 2; /* asymmetric */
  check_case("dw asymmetric pads", &a, KILN_FLOAT, 1, 5, 5, (int64_t[]){9, 12}, (int64_t[]){3, 3}, 1, pool);
  kiln_pool_free(pool);
}

static void test_conv_im2col(void) {
  kiln_pool *pool = test_pool();
  conv_attrs a = attrs2d(1, 1, 1, 1);
  check_case("3x3 s1", &a, KILN_FLOAT, 1, 8, 11, (int64_t[]){20, 23}, (int64_t[]){3, 3}, 1, pool);
  check_case("3x3 K and N blocks", &a, KILN_FLOAT, 2, 48, 13, (int64_t[]){18, 17}, (int64_t[]){3, 3}, 1, pool);
  check_case("3x3 images side by side", &a, KILN_FLOAT, 5, 8, 9, (int64_t[]){7, 6}, (int64_t[]){3, 3}, 1, pool);
  a = attrs2d(2, 1, 3, 1);
  check_case("7x7 s2", &a, KILN_FLOAT, 1, 3, 8, (int64_t[]){29, 30}, (int64_t[]){7, 7}, 1, pool);
  a = attrs2d(2, 2, 1, 1);
  check_case("dilated strided", &a, KILN_FLOAT, 3, 12, 7, (int64_t[]){15, 12}, (int64_t[]){3, 2}, 0, pool);
  a = attrs2d(1, 1, 0, 1);
  a.pads[0] = 2, a.pads[3] = 1;
  check_case("asymmetric pads", &a, KILN_FLOAT, 1, 11, 5, (int64_t[]){8, 6}, (int64_t[]){3, 2}, 1, pool);
  a = attrs2d(3, 1, 0, 1);
  check_case("stride 3", &a, KILN_FLOAT, 1, 5, 5, (int64_t[]){40, 41}, (int64_t[]){4, 4}, 1, pool);
  a = attrs2d(2, 1, 0, 1);
  a.has_pads = 0;
  a.auto_pad = "SAME_UPPER";
  check_case("SAME_UPPER", &a, KILN_FLOAT, 1, 6, 3, (int64_t[]){7, 8}, (int64_t[]){4, 3}, 1, pool);
  a.auto_pad = "SAME_LOWER";
  check_case("SAME_LOWER", &a, KILN_FLOAT, 1, 6, 3, (int64_t[]){7, 8}, (int64_t[]){4, 3}, 1, pool);
  a.auto_pad = "VALID";
  check_case("VALID", &a, KILN_FLOAT, 1, 6, 3, (int64_t[]){7, 8}, (int64_t[]){4, 3}, 1, pool);
  kiln_pool_free(pool);
}

/* Few input channels (C * kernel <= 64): the direct kernels, four output channels by 24 columns,
 * with channel tails, rows that end inside a vector, and 1 or several images per thread. */
static void test_conv_direct(void) {
  kiln_pool *pool = test_pool();
  conv_attrs a = attrs2d(1, 1, 1, 1);
  check_case("direct 1 channel", &a, KILN_FLOAT, 1, 1, 32, (int64_t[]){28, 28}, (int64_t[]){3, 3}, 1, pool);
  check_case("direct batch", &a, KILN_FLOAT, 5, 1, 9, (int64_t[]){11, 30}, (int64_t[]){3, 3}, 1, pool);
  check_case("direct tiny rows", &a, KILN_FLOAT, 3, 2, 6, (int64_t[]){4, 3}, (int64_t[]){3, 3}, 1, pool);
  check_case("direct one column", &a, KILN_FLOAT, 2, 3, 5, (int64_t[]){6, 1}, (int64_t[]){3, 3}, 0, pool);
  a = attrs2d(2, 1, 1, 1);
  check_case("direct stem", &a, KILN_FLOAT, 2, 3, 8, (int64_t[]){34, 35}, (int64_t[]){3, 3}, 1, pool);
  check_case("direct stride 2 narrow", &a, KILN_FLOAT, 1, 3, 7, (int64_t[]){9, 13}, (int64_t[]){3, 3}, 1, pool);
  a = attrs2d(3, 2, 2, 1);
  check_case("direct stride 3 dilated", &a, KILN_FLOAT, 2, 2, 5, (int64_t[]){23, 40}, (int64_t[]){3, 4}, 1, pool);
  a = attrs2d(1, 1, 0, 1);
  a.pads[1] = 3, a.pads[2] = 1;
  check_case("direct asymmetric", &a, KILN_FLOAT, 1, 4, 4, (int64_t[]){10, 17}, (int64_t[]){4, 4}, 1, pool);
  a = attrs2d(2, 1, 0, 1);
  a.has_pads = 0;
  a.auto_pad = "SAME_LOWER";
  check_case("direct SAME_LOWER", &a, KILN_FLOAT, 3, 2, 4, (int64_t[]){15, 26}, (int64_t[]){5, 5}, 1, pool);
  a = attrs2d(2, 1, 3, 1); /* 147 taps on rows of 35: three-, two- and one-vector tiles */
  check_case("direct 7x7 stem", &a, KILN_FLOAT, 2, 3, 10, (int64_t[]){21, 70}, (int64_t[]){7, 7}, 1, pool);
  kiln_pool_free(pool);
}

static void test_conv_winograd(void) {
  kiln_pool *pool = test_pool();
  conv_attrs a = attrs2d(1, 1, 1, 1);
  check_case("winograd", &a, KILN_FLOAT, 1, 20, 18, (int64_t[]){16, 17}, (int64_t[]){3, 3}, 1, pool);
  check_case("winograd odd", &a, KILN_FLOAT, 1, 17, 19, (int64_t[]){15, 21}, (int64_t[]){3, 3}, 0, pool);
  check_case("winograd batch", &a, KILN_FLOAT, 5, 16, 24, (int64_t[]){9, 7}, (int64_t[]){3, 3}, 1, pool);
  check_case("winograd blocks of many images", &a, KILN_FLOAT, 70, 16, 16, (int64_t[]){3, 4}, (int64_t[]){3, 3}, 1, pool);
  check_case("winograd wide channels", &a, KILN_FLOAT, 3, 96, 80, (int64_t[]){30, 13}, (int64_t[]){3, 3}, 1, pool);
  check_case("winograd one tile row", &a, KILN_FLOAT, 1, 16, 20, (int64_t[]){2, 90}, (int64_t[]){3, 3}, 1, pool); /* steps split */
  a = attrs2d(1, 1, 0, 1);
  check_case("winograd unpadded", &a, KILN_FLOAT, 2, 33, 16, (int64_t[]){20, 12}, (int64_t[]){3, 3}, 1, pool);
  a.pads[0] = 2, a.pads[1] = 1;
  check_case("winograd asymmetric", &a, KILN_FLOAT, 1, 16, 16, (int64_t[]){18, 26}, (int64_t[]){3, 3}, 1, pool);
  kiln_pool_free(pool);
}

/* Relu, Clip and LeakyRelu fused into every lowering (and left to the executor where a kernel does
 * not apply them: ConvTranspose, float16, a Clip with min > max). */
static void test_conv_activations(void) {
  kiln_pool *pool = test_pool();
  const char *acts[] = {"Relu", "Clip", "LeakyRelu", "Clip"};
  for (int i = 0; i < 4; i++) {
    conv_attrs a = attrs2d(1, 1, 0, 1);
    a.act = acts[i];
    a.lo = i == 3 ? 0.5f : -0.25f, a.hi = i == 3 ? -0.5f : 0.5f, a.alpha = 0.1f;
    char what[64];
    snprintf(what, sizeof what, "%s%s pointwise", acts[i], i == 3 ? " min>max" : "");
    check_case(what, &a, KILN_FLOAT, 1, 24, 13, (int64_t[]){9, 10}, (int64_t[]){1, 1}, 1, pool);
    check_case(what, &a, KILN_FLOAT, 2, 400, 7, (int64_t[]){5, 6}, (int64_t[]){1, 1}, 1, pool); /* 2 K blocks */
    check_case(what, &a, KILN_FLOAT, 1, 9, 11, (int64_t[]){1, 1}, (int64_t[]){1, 1}, 1, pool);  /* one column */
    a.strides[0] = a.strides[1] = 2, a.pads[0] = a.pads[1] = a.pads[2] = a.pads[3] = 1;
    check_case(what, &a, KILN_FLOAT, 1, 8, 10, (int64_t[]){12, 13}, (int64_t[]){3, 3}, 1, pool);   /* im2col */
    check_case(what, &a, KILN_FLOAT, 2, 3, 6, (int64_t[]){12, 13}, (int64_t[]){3, 3}, 1, pool);    /* direct */
    a.group = 5;
    check_case(what, &a, KILN_FLOAT, 1, 5, 5, (int64_t[]){12, 19}, (int64_t[]){3, 3}, 1, pool);    /* depthwise */
    a.strides[0] = a.strides[1] = 1;
    check_case(what, &a, KILN_FLOAT, 1, 5, 5, (int64_t[]){7, 7}, (int64_t[]){3, 3}, 1, pool);
    a.group = 1;
    check_case(what, &a, KILN_FLOAT, 2, 16, 17, (int64_t[]){9, 11}, (int64_t[]){3, 3}, 1, pool);   /* Winograd */
    check_case(what, &a, KILN_FLOAT16, 1, 3, 4, (int64_t[]){6, 7}, (int64_t[]){3, 3}, 1, pool);
    a.transpose = 1;
    check_case(what, &a, KILN_FLOAT, 1, 4, 3, (int64_t[]){5, 6}, (int64_t[]){3, 3}, 1, pool);
  }
  kiln_pool_free(pool);
}

static void test_conv_groups_and_dims(void) {
  kiln_pool *pool = test_pool();
  conv_attrs a = attrs2d(1, 1, 1, 2);
  check_case("groups 2", &a, KILN_FLOAT, 1, 6, 10, (int64_t[]){9, 11}, (int64_t[]){3, 3}, 1, pool);
  a = attrs2d(2, 1, 0, 4);
  check_case("groups 4 batch 3", &a, KILN_FLOAT, 3, 8, 12, (int64_t[]){10, 7}, (int64_t[]){2, 3}, 1, pool);
  conv_attrs a1 = {.nd = 1, .group = 1, .strides = {2}, .dilations = {3}, .pads = {2, 1}, .has_pads = 1};
  check_case("1-D", &a1, KILN_FLOAT, 2, 5, 7, (int64_t[]){50}, (int64_t[]){4}, 1, pool);
  conv_attrs a3 = {.nd = 3, .group = 2, .strides = {1, 2, 1}, .dilations = {1, 1, 2}, .pads = {1, 0, 1, 1, 1, 0}, .has_pads = 1};
  check_case("3-D", &a3, KILN_FLOAT, 2, 4, 6, (int64_t[]){5, 7, 6}, (int64_t[]){3, 2, 3}, 1, pool);
  a = attrs2d(1, 1, 1, 1);
  check_case("double", &a, KILN_DOUBLE, 2, 3, 4, (int64_t[]){6, 7}, (int64_t[]){3, 3}, 1, pool);
  check_case("float16", &a, KILN_FLOAT16, 1, 3, 4, (int64_t[]){6, 7}, (int64_t[]){3, 3}, 1, pool);
  a = attrs2d(1, 1, 1, 3);
  check_case("double depthwise", &a, KILN_DOUBLE, 1, 3, 3, (int64_t[]){6, 7}, (int64_t[]){3, 3}, 1, pool);
  kiln_pool_free(pool);
}

/* ------------------------------------------------------------------ ConvTranspose */

static void test_conv_transpose(void) {
  kiln_pool *pool = test_pool();
  conv_attrs a = attrs2d(2, 1, 1, 1);
  a.transpose = 1;
  check_case("T 3x3 s2", &a, KILN_FLOAT, 2, 5, 7, (int64_t[]){6, 9}, (int64_t[]){3, 3}, 1, pool);
  a.has_out_pad = 1;
  a.out_pad[0] = 1;
  check_case("T output_padding", &a, KILN_FLOAT, 1, 5, 4, (int64_t[]){6, 5}, (int64_t[]){3, 3}, 0, pool);
  a = attrs2d(3, 2, 0, 2);
  a.transpose = 1;
  check_case("T groups dilation", &a, KILN_FLOAT, 3, 4, 6, (int64_t[]){5, 4}, (int64_t[]){2, 3}, 1, pool);
  a = attrs2d(2, 1, 0, 1);
  a.transpose = 1;
  a.has_pads = 0;
  a.has_out_shape = 1;
  a.out_shape[0] = 12, a.out_shape[1] = 9;
  check_case("T output_shape", &a, KILN_FLOAT, 1, 3, 2, (int64_t[]){5, 4}, (int64_t[]){3, 3}, 1, pool);
  a.auto_pad = "SAME_UPPER";
  a.out_shape[0] = 10, a.out_shape[1] = 8;
  check_case("T SAME_UPPER", &a, KILN_FLOAT, 1, 3, 2, (int64_t[]){5, 4}, (int64_t[]){3, 3}, 1, pool);
  conv_attrs a1 = {.transpose = 1, .nd = 1, .group = 1, .strides = {3}, .dilations = {1}, .pads = {1, 2}, .has_pads = 1};
  check_case("T 1-D", &a1, KILN_FLOAT, 2, 3, 4, (int64_t[]){7}, (int64_t[]){4}, 1, pool);
  conv_attrs a3 = {.transpose = 1, .nd = 3, .group = 1, .strides = {2, 1, 2}, .dilations = {1, 2, 1}, .has_pads = 0};
  check_case("T 3-D", &a3, KILN_FLOAT, 1, 2, 3, (int64_t[]){3, 4, 3}, (int64_t[]){2, 2, 3}, 1, pool);
  a = attrs2d(2, 1, 1, 1);
  a.transpose = 1;
  check_case("T double", &a, KILN_DOUBLE, 2, 3, 4, (int64_t[]){4, 5}, (int64_t[]){3, 3}, 1, pool);
  check_case("T large", &a, KILN_FLOAT, 1, 40, 9, (int64_t[]){20, 21}, (int64_t[]){3, 3}, 1, pool);
  kiln_pool_free(pool);
}

/* ------------------------------------------------------------------ errors */

static void expect_error(const char *what, const conv_attrs *a, const int64_t *xd, int xr, const int64_t *wd, int wr,
                         const int64_t *bd, const char *text) {
  kiln_tensor x = random_tensor(KILN_FLOAT, xr, xd), w = random_tensor(KILN_FLOAT, wr, wd), b = {0};
  if (bd) b = random_tensor(KILN_FLOAT, 1, bd);
  kiln_tensor y = {0};
  kiln_status s = run_conv(a, &x, &w, bd ? &b : NULL, 0, NULL, &y);
  if (!s || kiln_status_code(s) != KILN_INVALID_ARGUMENT || !strstr(kiln_status_message(s), text)) {
    fprintf(stderr, "%s: got '%s', expected INVALID_ARGUMENT containing '%s'\n", what, s ? kiln_status_message(s) : "ok", text);
    test_failures++;
  }
  kiln_status_free(s);
  kiln_tensor_release(&x);
  kiln_tensor_release(&w);
  kiln_tensor_release(&b);
  kiln_tensor_release(&y);
}

static void test_conv_errors(void) {
  conv_attrs a = attrs2d(1, 1, 0, 1);
  expect_error("channel mismatch", &a, (int64_t[]){1, 3, 5, 5}, 4, (int64_t[]){2, 4, 3, 3}, 4, NULL,
               "W float[2,4,3,3] expects 4 input channels per group, X float[1,3,5,5] has 3");
  a.group = 2;
  expect_error("groups not dividing C", &a, (int64_t[]){1, 3, 5, 5}, 4, (int64_t[]){2, 1, 3, 3}, 4, NULL,
               "group 2 does not divide the 3 input channels");
  expect_error("groups not dividing M", &a, (int64_t[]){1, 4, 5, 5}, 4, (int64_t[]){3, 2, 3, 3}, 4, NULL,
               "group 2 does not divide the 3 output channels");
  a.group = 1;
  expect_error("rank", &a, (int64_t[]){3, 5}, 2, (int64_t[]){2, 3}, 2, NULL, "X must have rank >= 3");
  expect_error("W rank", &a, (int64_t[]){1, 3, 5, 5}, 4, (int64_t[]){2, 3, 3}, 3, NULL, "must have the rank of X");
  expect_error("bias length", &a, (int64_t[]){1, 3, 5, 5}, 4, (int64_t[]){2, 3, 3, 3}, 4, (int64_t[]){3},
               "bias B float[3] must be 1-D with the 2 output channels");
  expect_error("kernel too big", &a, (int64_t[]){1, 3, 2, 5}, 4, (int64_t[]){2, 3, 3, 3}, 4, NULL,
               "is smaller than the dilated kernel");
  a.transpose = 1;
  expect_error("transpose channels", &a, (int64_t[]){1, 3, 5, 5}, 4, (int64_t[]){2, 3, 3, 3}, 4, NULL,
               "must have X's 3 input channels first");

  /* attributes are checked at load */
  tb_model *m = tb_new(13);
  tb_input(m, "x", KILN_FLOAT, 4, (int64_t[]){1, 1, 3, 3});
  tb_input(m, "w", KILN_FLOAT, 4, (int64_t[]){1, 1, 3, 3});
  tb_output(m, "y", KILN_FLOAT);
  tb_attr_ints(tb_add_node(m, "Conv", "x,w", "y"), "strides", 2, (int64_t[]){0, 1});
  kiln_model *model = NULL;
  CHECK_ERROR(tb_load(m, &model), KILN_INVALID_ARGUMENT, "strides must be >= 1, got 0");
  tb_free(m);
  m = tb_new(13);
  tb_input(m, "x", KILN_FLOAT, 4, (int64_t[]){1, 1, 3, 3});
  tb_input(m, "w", KILN_FLOAT, 4, (int64_t[]){1, 1, 3, 3});
  tb_output(m, "y", KILN_FLOAT);
  tb_attr_string(tb_add_node(m, "Conv", "x,w", "y"), "auto_pad", "SAME");
  CHECK_ERROR(tb_load(m, &model), KILN_INVALID_ARGUMENT, "unknown auto_pad 'SAME'");
  tb_free(m);
}

static void test_conv_empty(void) {
  conv_attrs a = attrs2d(1, 1, 0, 1);
  kiln_tensor x = random_tensor(KILN_FLOAT, 4, (int64_t[]){0, 3, 5, 5}), w = random_tensor(KILN_FLOAT, 4, (int64_t[]){2, 3, 3, 3});
  kiln_tensor y = {0};
  CHECK_OK(run_conv(&a, &x, &w, NULL, 0, NULL, &y));
  CHECK(y.rank == 4 && y.dims[0] == 0 && y.dims[1] == 2 && y.dims[2] == 3);
  kiln_tensor_release(&x);
  kiln_tensor_release(&w);
  kiln_tensor_release(&y);
}

TEST_MAIN(TEST(test_conv_pointwise), TEST(test_conv_depthwise), TEST(test_conv_im2col), TEST(test_conv_direct),
          TEST(test_conv_winograd), TEST(test_conv_activations), TEST(test_conv_groups_and_dims),
          TEST(test_conv_transpose), TEST(test_conv_errors), TEST(test_conv_empty))
