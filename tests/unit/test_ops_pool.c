/* The pool family against a reference written from the ONNX spec: random MaxPool / AveragePool /
 * LpPool configurations in 1-D, 2-D and 3-D (strides, dilations, explicit and automatic pads,
 * ceil_mode, count_include_pad), reaching the AVX2 row paths (2x2/2 and padded rows of column
 * stride 1 or 2) for every width of their last block, the per-tap paths, the chunking of wide rows
 * and the per-element path, on one thread and on a 2-thread pool; MaxPool's
 * Indices; the other element types; global pooling, MaxUnpool, MaxRoiPool; bad attributes. */
#include "op_harness.h"

/* ---------------------------------------------------------------- reference */

enum { MAX, AVG, LP };
static const char *const names[] = {"MaxPool", "AveragePool", "LpPool"};
enum { NOTSET, SAME_UPPER, SAME_LOWER, VALID };
static const char *const pad_modes[] = {"NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"};

typedef struct pool_cfg {
  int kind, spatial, auto_pad, ceil_mode, count_include_pad, storage_order, p;
  int64_t k[3], s[3], d[3], pads[6];
} pool_cfg;

/* Output size and begin pad along axis i, from the spec's formulas. */
static int64_t out_size(const pool_cfg *c, int i, int64_t in, int64_t *pad_begin, int64_t *pad_end) {
  int64_t ext = (c->k[i] - 1) * c->d[i] + 1, out;
  if (c->auto_pad == SAME_UPPER || c->auto_pad == SAME_LOWER) {
    out = (in + c->s[i] - 1) / c->s[i];
    int64_t total = (out - 1) * c->s[i] + ext - in;
    if (total < 0) total = 0;
    *pad_begin = c->auto_pad == SAME_UPPER ? total / 2 : total - total / 2;
    *pad_end = total - *pad_begin;
    return out;
  }
  *pad_begin = c->auto_pad == VALID ? 0 : c->pads[i];
  *pad_end = c->auto_pad == VALID ? 0 : c->pads[c->spatial + i];
  int64_t span = in + *pad_begin + *pad_end - ext;
  if (span < 0) return -1;
  out = (c->ceil_mode ? (span + c->s[i] - 1) / c->s[i] : span / c->s[i]) + 1;
  if (c->ceil_mode && (out - 1) * c->s[i] >= in + *pad_begin) out--;
  return out;
}

/* The pooled output (and indices); returns 0 when a window holds no input element or the kernel
 * does not fit, the cases the kernel must reject. */
static int pool_reference(const pool_cfg *c, const kiln_tensor *x, kiln_tensor *want, kiln_tensor *indices) {
  int64_t in[3] = {1, 1, 1}, out[3] = {1, 1, 1}, pb[3] = {0}, pe[3] = {0}, k[3] = {1, 1, 1}, s[3] = {1, 1, 1},
          d[3] = {1, 1, 1};
  int64_t dims[5] = {x->dims[0], x->dims[1]};
  int off = 3 - c->spatial;
  for (int i = 0; i < c->spatial; i++) {
    in[off + i] = x->dims[2 + i];
    out[off + i] = dims[2 + i] = out_size(c, i, in[off + i], &pb[off + i], &pe[off + i]);
    if (out[off + i] < 0) return 0;
    k[off + i] = c->k[i];
    s[off + i] = c->s[i];
    d[off + i] = c->d[i];
  }
  *want = oh_tensor(x->dtype, x->rank, dims);
  *indices = oh_tensor(KILN_INT64, x->rank, dims);
  int64_t planes = x->dims[0] * x->dims[1], in_plane = in[0] * in[1] * in[2], out_plane = out[0] * out[1] * out[2];
  for (int64_t p = 0; p < planes; p++)
    for (int64_t o = 0; o < out_plane; o++) {
      int64_t oc[3] = {o / (out[1] * out[2]), o / out[2] % out[1], o % out[2]};
      double acc = c->kind == MAX ? -INFINITY : 0;
      int64_t count = 0, padded = 1, best = -1;
      for (int i = 0; i < 3; i++) { /* taps inside the padded input, for count_include_pad */
        int64_t n = 0;
        for (int64_t t = 0; t < k[i]; t++) n += oc[i] * s[i] - pb[i] + t * d[i] < in[i] + pe[i];
        padded *= n;
      }
      for (int64_t t0 = 0; t0 < k[0]; t0++)
        for (int64_t t1 = 0; t1 < k[1]; t1++)
          for (int64_t t2 = 0; t2 < k[2]; t2++) {
            int64_t pos[3] = {oc[0] * s[0] - pb[0] + t0 * d[0], oc[1] * s[1] - pb[1] + t1 * d[1],
                              oc[2] * s[2] - pb[2] + t2 * d[2]};
            if (pos[0] < 0 || pos[0] >= in[0] || pos[1] < 0 || pos[1] >= in[1] || pos[2] < 0 || pos[2] >= in[2])
              continue;
            double v = kiln_tensor_get_f64(x, p * in_plane + (pos[0] * in[1] + pos[1]) * in[2] + pos[2]);
            count++;
            if (c->kind == MAX && v > acc) {
              acc = v;
              best = c->storage_order ? (pos[2] * in[1] + pos[1]) * in[0] + pos[0]
                                      : (pos[0] * in[1] + pos[1]) * in[2] + pos[2];
              best += p * in_plane;
            } else if (c->kind == AVG) {
              acc += v;
            } else if (c->kind == LP) {
              acc += pow(fabs(v), c->p);
            }
          }
      if (count == 0) {
        kiln_tensor_release(want);
        kiln_tensor_release(indices);
        return 0;
      }
      if (c->kind == AVG) acc /= (double)(c->count_include_pad ? padded : count);
      if (c->kind == LP) acc = pow(acc, 1.0 / c->p);
      kx_set_f64(want, p * out_plane + o, acc);
      ((int64_t *)indices->data)[p * out_plane + o] = best;
    }
  return 1;
}

static tb_node *pool_node(tb_model *b, const pool_cfg *c, const kiln_tensor *const *in, int n_out) {
  tb_node *n = oh_node(b, names[c->kind], in, 1, 0, n_out);
  int sp = c->spatial;
  tb_attr_ints(n, "kernel_shape", sp, c->k);
  tb_attr_ints(n, "strides", sp, c->s);
  if (c->auto_pad == NOTSET)
    tb_attr_ints(n, "pads", 2 * sp, c->pads);
  else
    tb_attr_string(n, "auto_pad", pad_modes[c->auto_pad]);
  if (c->kind == MAX) tb_attr_ints(n, "dilations", sp, c->d);
  if (c->kind == MAX) tb_attr_int(n, "storage_order", c->storage_order);
  if (c->kind != LP) tb_attr_int(n, "ceil_mode", c->ceil_mode);
  if (c->kind == AVG) tb_attr_int(n, "count_include_pad", c->count_include_pad);
  if (c->kind == LP) tb_attr_int(n, "p", c->p);
  return n;
}

/* Runs one configuration and checks it against the reference (or the rejection). */
static void check_pool(const pool_cfg *c, const kiln_tensor *x, int with_indices, int threads) {
  kiln_tensor want, want_idx, got[2] = {{0}};
  const kiln_tensor *in[1] = {x};
  int valid = pool_reference(c, x, &want, &want_idx);
  tb_model *b = tb_new(c->kind == LP ? 11 : 12);
  pool_node(b, c, in, with_indices ? 2 : 1);
  kiln_status s = oh_run(b, in, 1, 0, got, with_indices ? 2 : 1, threads);
  char what[160];
  snprintf(what, sizeof what, "%s %dD k %lld s %lld d %lld pads %lld,%lld auto_pad %d ceil %d incl %d", names[c->kind],
           c->spatial, (long long)c->k[0], (long long)c->s[0], (long long)c->d[0], (long long)c->pads[0],
           (long long)c->pads[c->spatial], c->auto_pad, c->ceil_mode, c->count_include_pad);
  if (!valid) {
    CHECK_ERROR(s, KILN_INVALID_ARGUMENT, "");
    return;
  }
  CHECK_OK(s);
  double tol = x->dtype == KILN_FLOAT16 ? 2e-3 : x->dtype == KILN_BFLOAT16 ? 1e-2 : 1e-5;
  if (!s) CHECK(oh_close_to(&got[0], &want, tol, what));
  if (!s && with_indices) CHECK(oh_close_to(&got[1], &want_idx, 0, what));
  oh_release(got, 2);
  kiln_tensor_release(&want);
  kiln_tensor_release(&want_idx);
}

static pool_cfg random_cfg(int kind, int spatial) {
  pool_cfg c = {.kind = kind, .spatial = spatial, .p = (int)oh_int(1, 3)};
  c.auto_pad = oh_int(0, 2) ? NOTSET : (int)oh_int(1, 3);
  c.ceil_mode = kind != LP && oh_int(0, 1); /* LpPool has no ceil_mode */
  c.count_include_pad = (int)oh_int(0, 1);
  c.storage_order = (int)oh_int(0, 1);
  for (int i = 0; i < spatial; i++) {
    c.k[i] = oh_int(1, spatial == 3 ? 3 : 5);
    c.s[i] = oh_int(1, 3);
    c.d[i] = kind == MAX ? oh_int(1, 2) : 1;
    c.pads[i] = oh_int(0, c.k[i] - 1);
    c.pads[spatial + i] = oh_int(0, c.k[i] - 1);
  }
  return c;
}

/* ---------------------------------------------------------------- tests */

static void test_random(void) {
  for (int iter = 0; iter < 300; iter++) {
    int kind = iter % 3, spatial = (int)oh_int(1, 3);
    pool_cfg c = random_cfg(kind, spatial);
    int64_t dims[5] = {oh_int(1, 2), oh_int(1, 4)};
    for (int i = 0; i < spatial; i++) dims[2 + i] = oh_int(1, spatial == 3 ? 12 : spatial == 2 ? 40 : 200);
    kiln_tensor x = oh_tensor(KILN_FLOAT, 2 + spatial, dims);
    oh_fill_uniform(&x, -1, 1);
    check_pool(&c, &x, kind == MAX && iter % 2, iter % 4 < 2 ? 2 : 1);
    oh_release(&x, 1);
  }
}

/* The common CNN windows on shapes large enough to split over the pool. */
static void test_common_windows(void) {
  const int64_t k[4] = {3, 2, 3, 7}, s[4] = {2, 2, 1, 1}, p[4] = {1, 0, 1, 3};
  for (int w = 0; w < 4; w++)
    for (int kind = 0; kind < 2; kind++) {
      pool_cfg c = {.kind = kind,
                    .spatial = 2,
                    .k = {k[w], k[w]},
                    .s = {s[w], s[w]},
                    .d = {1, 1},
                    .pads = {p[w], p[w], p[w], p[w]},
                    .count_include_pad = w % 2};
      kiln_tensor x = oh_tensor(KILN_FLOAT, 4, (int64_t[]){2, 16, 57, 57});
      oh_fill_uniform(&x, -1, 1);
      check_pool(&c, &x, 0, 2);
      oh_release(&x, 1);
    }
}

/* The AVX2 paths over every row width up to three blocks of eight outputs, so that each count of
 * outputs in the last block is met: 2x2/2 from the input rows (floor and ceil_mode on odd sizes,
 * the latter leaving it for the padded path), and the padded row buffer for column strides 1 and 2
 * with padding and count_include_pad; max and average, on one thread and two. */
static void test_avx2_rows(void) {
  for (int64_t w = 1; w <= 50; w++)
    for (int kind = 0; kind < 2; kind++) {
      int64_t h = 2 + w % 5;
      kiln_tensor x = oh_tensor(KILN_FLOAT, 4, (int64_t[]){2, 3, h, w});
      oh_fill_uniform(&x, -1, 1);
      pool_cfg pairs = {.kind = kind, .spatial = 2, .k = {2, 2}, .s = {2, 2}, .d = {1, 1}, .ceil_mode = w % 3 == 0};
      if (w >= 2) check_pool(&pairs, &x, 0, w % 2 ? 1 : 2);
      for (int64_t k = 1; k <= 4; k++) {
        int64_t s = 1 + (w + k) % 2, pad = (w + k) % k;
        pool_cfg padded = {.kind = kind,
                           .spatial = 2,
                           .k = {k < h ? k : h, k},
                           .s = {s, s},
                           .d = {1, 1},
                           .pads = {0, pad, 0, k - 1 - pad},
                           .count_include_pad = (int)(w % 2)};
        check_pool(&padded, &x, 0, k % 2 ? 1 : 2);
      }
      oh_release(&x, 1);
    }
  /* a 3-D input with a 1x2x2 window is not the 2-D 2x2/2 case */
  pool_cfg c = {.kind = MAX, .spatial = 3, .k = {1, 2, 2}, .s = {2, 2, 2}, .d = {1, 1, 1}};
  kiln_tensor x = oh_tensor(KILN_FLOAT, 5, (int64_t[]){1, 2, 5, 6, 20});
  oh_fill_uniform(&x, -1, 1);
  check_pool(&c, &x, 0, 2);
  oh_release(&x, 1);
}

/* Rows wider than the row kernel's span are pooled in chunks; windows wider than it per element. */
static void test_wide(void) {
  pool_cfg chunked = {.kind = MAX, .spatial = 1, .k = {3}, .s = {2}, .d = {1}, .pads = {1, 1}};
  pool_cfg per_element = {.kind = AVG, .spatial = 1, .k = {300}, .s = {7}, .d = {1}, .pads = {5, 5}};
  pool_cfg dilated = {.kind = MAX, .spatial = 1, .k = {250}, .s = {3}, .d = {9}, .pads = {10, 0}};
  kiln_tensor x = oh_tensor(KILN_FLOAT, 3, (int64_t[]){1, 3, 5001});
  oh_fill_uniform(&x, -1, 1);
  check_pool(&chunked, &x, 0, 2);
  chunked.kind = AVG;
  check_pool(&chunked, &x, 0, 1);
  check_pool(&per_element, &x, 0, 2);
  check_pool(&dilated, &x, 0, 1);
  oh_release(&x, 1);
}

static void test_types(void) {
  const kiln_dtype types[] = {KILN_DOUBLE, KILN_FLOAT16, KILN_UINT8, KILN_INT8, KILN_BFLOAT16};
  for (int t = 0; t < 5; t++)
    for (int kind = 0; kind < 3; kind++) {
      int is_int = types[t] == KILN_UINT8 || types[t] == KILN_INT8;
      if (is_int && kind != MAX) continue;
      pool_cfg c = random_cfg(kind, 2);
      c.auto_pad = NOTSET;
      kiln_tensor x = oh_tensor(types[t], 4, (int64_t[]){1, 3, 17, 19});
      for (int64_t i = 0; i < kiln_tensor_numel(&x); i++)
        kx_set_f64(&x, i, is_int ? (double)oh_int(types[t] == KILN_INT8 ? -128 : 0, 127) : oh_uniform(-1, 1));
      check_pool(&c, &x, types[t] == KILN_DOUBLE && kind == MAX, 1);
      oh_release(&x, 1);
    }
}

static void test_global(void) {
  const char *const ops[3] = {"GlobalMaxPool", "GlobalAveragePool", "GlobalLpPool"};
  const kiln_dtype types[3] = {KILN_FLOAT, KILN_DOUBLE, KILN_FLOAT16};
  for (int iter = 0; iter < 27; iter++) {
    int kind = iter % 3, rank = (int)oh_int(2, 5);
    kiln_dtype t = types[iter / 3 % 3];
    int64_t dims[5] = {oh_int(1, 3), oh_int(1, 40), oh_int(1, 30), oh_int(1, 30), oh_int(1, 4)};
    kiln_tensor x = oh_tensor(t, rank, dims), y = {0};
    oh_fill_uniform(&x, -1, 1);
    int64_t wdims[5], plane = kx_prod(dims, 2, rank), planes = dims[0] * dims[1];
    for (int d = 0; d < rank; d++) wdims[d] = d < 2 ? dims[d] : 1;
    kiln_tensor want = oh_tensor(t, rank, wdims);
    for (int64_t p = 0; p < planes; p++) {
      double acc = kind == MAX ? -INFINITY : 0;
      for (int64_t i = 0; i < plane; i++) {
        double v = kiln_tensor_get_f64(&x, p * plane + i);
        acc = kind == MAX ? (v > acc ? v : acc) : kind == AVG ? acc + v : acc + v * v;
      }
      kx_set_f64(&want, p, kind == AVG ? acc / (double)plane : kind == LP ? sqrt(acc) : acc);
    }
    const kiln_tensor *in[1] = {&x};
    tb_model *b = tb_new(2);
    oh_node(b, ops[kind], in, 1, 0, 1);
    CHECK_OK(oh_run(b, in, 1, 0, &y, 1, iter % 2 ? 2 : 1));
    CHECK(oh_close_to(&y, &want, t == KILN_FLOAT16 ? 2e-3 : 1e-5, ops[kind]));
    oh_release(&x, 1);
    kiln_tensor_release(&y);
    kiln_tensor_release(&want);
  }
  /* opset 1's GlobalLpPool takes p as a float */
  kiln_tensor x = oh_tensor(KILN_FLOAT, 3, (int64_t[]){1, 1, 2}), y = {0};
  ((float *)x.data)[0] = 1;
  ((float *)x.data)[1] = 2;
  const kiln_tensor *in[1] = {&x};
  tb_model *b = tb_new(1);
  tb_attr_float(oh_node(b, "GlobalLpPool", in, 1, 0, 1), "p", 3.0f);
  CHECK_OK(oh_run(b, in, 1, 0, &y, 1, 1));
  CHECK(y.data && fabs(((float *)y.data)[0] - cbrt(9.0)) < 1e-6);
  kiln_tensor_release(&y);
  oh_release(&x, 1);
}

/* MaxUnpool scatters what MaxPool's Indices point at; an output_shape adds zeros at the ends. */
static void test_max_unpool(void) {
  kiln_tensor x = oh_tensor(KILN_FLOAT, 4, (int64_t[]){2, 3, 6, 8}), pooled[2] = {{0}}, y = {0};
  oh_fill_uniform(&x, -1, 1);
  pool_cfg c = {.kind = MAX, .spatial = 2, .k = {2, 2}, .s = {2, 2}, .d = {1, 1}};
  const kiln_tensor *in[1] = {&x};
  tb_model *b = tb_new(12);
  pool_node(b, &c, in, 2);
  CHECK_OK(oh_run(b, in, 1, 0, pooled, 2, 1));
  for (int with_shape = 0; with_shape < 2 && pooled[1].data; with_shape++) {
    kiln_tensor shape = oh_tensor(KILN_INT64, 1, (int64_t[]){4});
    int64_t out[4] = {2, 3, with_shape ? 7 : 6, with_shape ? 9 : 8};
    memcpy(shape.data, out, sizeof out);
    const kiln_tensor *uin[3] = {&pooled[0], &pooled[1], with_shape ? &shape : NULL};
    b = tb_new(11);
    tb_node *n = oh_node(b, "MaxUnpool", uin, 3, 0, 1);
    tb_attr_ints(n, "kernel_shape", 2, c.k);
    tb_attr_ints(n, "strides", 2, c.s);
    CHECK_OK(oh_run(b, uin, 3, 0, &y, 1, 1));
    CHECK(y.rank == 4 && y.dims[2] == out[2] && y.dims[3] == out[3]);
    const int64_t *idx = pooled[1].data;
    for (int64_t i = 0; y.data && i < kiln_tensor_numel(&y); i++) { /* y[n, c, h, w] = x where pooled, else 0 */
      int64_t w = i % out[3], h = i / out[3] % out[2], plane = i / (out[2] * out[3]);
      double want = 0;
      if (h < 6 && w < 8) {
        int64_t src = plane * 48 + h * 8 + w;
        for (int64_t k = 0; k < kiln_tensor_numel(&pooled[1]); k++)
          if (idx[k] == src) want = ((float *)x.data)[src];
      }
      if (((float *)y.data)[i] != want) {
        fprintf(stderr, "MaxUnpool element %lld is %g, want %g\n", (long long)i, ((float *)y.data)[i], want);
        test_failures++;
        break;
      }
    }
    kiln_tensor_release(&y);
    oh_release(&shape, 1);
  }
  ((int64_t *)pooled[1].data)[3] = 2 * 3 * 6 * 8;
  const kiln_tensor *bad[2] = {&pooled[0], &pooled[1]};
  b = tb_new(11);
  tb_node *n = oh_node(b, "MaxUnpool", bad, 2, 0, 1);
  tb_attr_ints(n, "kernel_shape", 2, c.k);
  tb_attr_ints(n, "strides", 2, c.s);
  CHECK_ERROR(oh_run(b, bad, 2, 0, &y, 1, 1), KILN_INVALID_ARGUMENT,
              "I[3] is 288, outside the unpooled tensor's 288 elements");
  oh_release(pooled, 2);
  oh_release(&x, 1);
}

static void test_max_roi_pool(void) {
  kiln_tensor x = oh_tensor(KILN_FLOAT, 4, (int64_t[]){1, 2, 4, 4}), rois = oh_tensor(KILN_FLOAT, 2, (int64_t[]){2, 5}), y = {0};
  for (int i = 0; i < 32; i++) ((float *)x.data)[i] = (float)i;
  const float r[10] = {0, 0, 0, 3, 3, /* the whole map */ 0, 2, 2, 7, 7 /* scaled by 0.5: cells 1..4, clipped */};
  memcpy(rois.data, r, sizeof r);
  const kiln_tensor *in[2] = {&x, &rois};
  tb_model *b = tb_new(1);
  tb_node *n = oh_node(b, "MaxRoiPool", in, 2, 0, 1);
  tb_attr_ints(n, "pooled_shape", 2, (int64_t[]){2, 2});
  tb_attr_float(n, "spatial_scale", 0.5f);
  CHECK_OK(oh_run(b, in, 2, 0, &y, 1, 1));
  /* roi 0 scaled: cells (0,0)-(2,2) (round(1.5) = 2), 3x3 split into bins [0,2)x[0,2) ... */
  const float want[16] = {5, 6, 9, 10, 21, 22, 25, 26, 10, 11, 14, 15, 26, 27, 30, 31};
  CHECK(y.rank == 4 && y.dims[0] == 2 && y.dims[1] == 2 && y.dims[2] == 2 && y.dims[3] == 2);
  for (int i = 0; i < 16 && y.data; i++) CHECK_NEAR(((float *)y.data)[i], want[i], 0);
  kiln_tensor_release(&y);
  ((float *)rois.data)[5] = 1; /* batch index 1 of 1 */
  b = tb_new(1);
  tb_attr_ints(oh_node(b, "MaxRoiPool", in, 2, 0, 1), "pooled_shape", 2, (int64_t[]){2, 2});
  CHECK_ERROR(oh_run(b, in, 2, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, "rois[1] has batch index 1, outside [0, 1)");
  oh_release(&x, 1);
  oh_release(&rois, 1);
}

static void test_errors(void) {
  kiln_tensor x = oh_tensor(KILN_FLOAT, 4, (int64_t[]){1, 1, 3, 3}), y = {0};
  const kiln_tensor *in[1] = {&x};
  pool_cfg big = {.kind = MAX, .spatial = 2, .k = {5, 5}, .s = {1, 1}, .d = {1, 1}};
  tb_model *b = tb_new(12);
  pool_node(b, &big, in, 1);
  CHECK_ERROR(oh_run(b, in, 1, 0, &y, 1, 1), KILN_INVALID_ARGUMENT,
              "kernel extent 5 is larger than spatial axis 0 of the padded input (3 + pads 0, 0)");
  pool_cfg padded = {.kind = AVG, .spatial = 2, .k = {2, 2}, .s = {1, 1}, .d = {1, 1}, .pads = {2, 0, 2, 0}};
  b = tb_new(12);
  pool_node(b, &padded, in, 1);
  CHECK_ERROR(oh_run(b, in, 1, 0, &y, 1, 1), KILN_INVALID_ARGUMENT,
              "pooling window 0 along spatial axis 0 lies entirely in the padding");
  b = tb_new(12);
  tb_node *n = oh_node(b, "MaxPool", in, 1, 0, 1);
  tb_attr_ints(n, "kernel_shape", 2, (int64_t[]){2, 2});
  tb_attr_ints(n, "pads", 3, (int64_t[]){1, 1, 1});
  CHECK_ERROR(oh_run(b, in, 1, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, "pads has 3 values, expected 4");
  b = tb_new(12);
  n = oh_node(b, "MaxPool", in, 1, 0, 1);
  tb_attr_ints(n, "kernel_shape", 2, (int64_t[]){2, 2});
  tb_attr_ints(n, "strides", 2, (int64_t[]){1, 0});
  CHECK_ERROR(oh_run(b, in, 1, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, "strides[1] is 0, outside [1, 2147483647]");
  b = tb_new(12);
  n = oh_node(b, "AveragePool", in, 1, 0, 1);
  tb_attr_ints(n, "kernel_shape", 2, (int64_t[]){2, 2});
  tb_attr_string(n, "auto_pad", "SAME");
  CHECK_ERROR(oh_run(b, in, 1, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, "auto_pad 'SAME' is not");
  b = tb_new(12);
  oh_node(b, "MaxPool", in, 1, 0, 1);
  CHECK_ERROR(oh_run(b, in, 1, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, "kernel_shape is required");
  b = tb_new(12);
  tb_attr_ints(oh_node(b, "MaxPool", in, 1, 0, 1), "kernel_shape", 1, (int64_t[]){2});
  CHECK_ERROR(oh_run(b, in, 1, 0, &y, 1, 1), KILN_INVALID_ARGUMENT, "input has rank 4, expected 3");
  kiln_tensor ints = oh_tensor(KILN_INT32, 4, (int64_t[]){1, 1, 3, 3});
  in[0] = &ints;
  b = tb_new(12);
  tb_attr_ints(oh_node(b, "MaxPool", in, 1, 0, 1), "kernel_shape", 2, (int64_t[]){2, 2});
  CHECK_ERROR(oh_run(b, in, 1, 0, &y, 1, 1), KILN_UNIMPLEMENTED, "dtype int32");
  oh_release(&x, 1);
  oh_release(&ints, 1);
}

TEST_MAIN(TEST(test_random), TEST(test_common_windows), TEST(test_avx2_rows), TEST(test_wide), TEST(test_types),
          TEST(test_global), TEST(test_max_unpool), TEST(test_max_roi_pool), TEST(test_errors))
