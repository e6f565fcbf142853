/* A harness for the operator unit tests (tests/unit/test_ops_*.c), on top of onnx_builder.h and
 * test.h: a seeded random number generator, tensor makers, one-node models whose inputs are graph
 * inputs or initializers, loaded and run on one thread or on a pool, and comparisons.
 *
 *   kiln_tensor x = oh_uniform_tensor(KILN_FLOAT, 2, (int64_t[]){3, 4}, -1, 1);
 *   kiln_tensor axes = oh_vec(1, (int64_t[]){1}), y;
 *   const kiln_tensor *in[2] = {&x, &axes};
 *   tb_model *b = tb_new(13);
 *   tb_node *n = oh_node(b, "ReduceSum", in, 2, 1u << 1, 1);  // input 1 (axes) an initializer
 *   tb_attr_int(n, "keepdims", 0);
 *   CHECK_OK(oh_run(b, in, 2, 1u << 1, &y, 1, 2));            // runs twice on 2 threads
 *   CHECK(oh_close_to(&y, &want, 1e-6, "ReduceSum"));
 *
 * The node's inputs are named x0, x1, ... (NULL entries of `in` are absent optional inputs) and
 * its outputs y0, y1, ...; graph inputs are declared with their tensor's dtype and shape. Runs on
 * more than one thread make a pool of their own. Random numbers come from one xorshift64 generator
 * with a fixed seed in each test program, so a failure repeats run after run. */
#ifndef KILN_OP_HARNESS_H
#define KILN_OP_HARNESS_H

#include <stdint.h>

#include "kiln/graph.h"
#include "onnx_builder.h"
#include "ops/util.h"
#include "test.h"

/* The most inputs and outputs one node of these models has. */
#define OH_MAX_IO 16

/* ---------------------------------------------------------------- random numbers */

static uint64_t oh_rng_state = 0x9e3779b97f4a7c15u;

static inline uint64_t oh_rand(void) { /* xorshift64 */
  oh_rng_state ^= oh_rng_state << 13;
  oh_rng_state ^= oh_rng_state >> 7;
  oh_rng_state ^= oh_rng_state << 17;
  return oh_rng_state;
}

/* Uniform in [lo, hi], both included. */
static inline int64_t oh_int(int64_t lo, int64_t hi) { return lo + (int64_t)(oh_rand() % (uint64_t)(hi - lo + 1)); }

/* Uniform in [lo, hi), from the generator's top 53 bits. */
static inline double oh_uniform(double lo, double hi) {
  return lo + (hi - lo) * (double)(oh_rand() >> 11) / 9007199254740992.0;
}

/* ---------------------------------------------------------------- tensors */

/* A zero-filled tensor; a test that cannot allocate one stops. */
static inline kiln_tensor oh_tensor(kiln_dtype dtype, int rank, const int64_t *dims) {
  kiln_tensor t;
  kiln_status s = kiln_tensor_alloc(&t, dtype, rank, dims);
  if (s) abort();
  return t;
}

/* An int64 tensor holding a copy of values; the 1-D one of n values; the scalar v. */
static inline kiln_tensor oh_ints(int rank, const int64_t *dims, const int64_t *values) {
  kiln_tensor t = oh_tensor(KILN_INT64, rank, dims);
  memcpy(t.data, values, kiln_tensor_nbytes(&t));
  return t;
}
static inline kiln_tensor oh_vec(int n, const int64_t *values) { return oh_ints(1, (int64_t[]){n}, values); }
static inline kiln_tensor oh_scalar(int64_t v) { return oh_ints(0, NULL, &v); }

/* A tensor viewing the caller's memory (string tensors: the caller's pointers); not released. */
static inline kiln_tensor oh_view(kiln_dtype dtype, int rank, const int64_t *dims, const void *data) {
  kiln_tensor t = {0};
  kiln_tensor_set_shape(&t, dtype, rank, dims);
  t.data = (void *)data;
  return t;
}

/* A tensor of random bits (random short strings for KILN_STRING): for kernels that move elements
 * without looking at them. */
static inline kiln_tensor oh_random_tensor(kiln_dtype dtype, int rank, const int64_t *dims) {
  kiln_tensor t = oh_tensor(dtype, rank, dims);
  int64_t n = kiln_tensor_numel(&t);
  if (dtype == KILN_STRING) {
    for (int64_t i = 0; i < n; i++) {
      char buf[24];
      snprintf(buf, sizeof buf, "s%llu", (unsigned long long)(oh_rand() % 100000));
      ((char **)t.data)[i] = strdup(buf);
    }
  } else {
    for (size_t i = 0; i < kiln_tensor_nbytes(&t); i++) ((unsigned char *)t.data)[i] = (unsigned char)oh_rand();
  }
  return t;
}

/* Fills a numeric tensor with values uniform in [lo, hi), converted to its dtype as kx_set_f64 does. */
static inline void oh_fill_uniform(kiln_tensor *t, double lo, double hi) {
  for (int64_t i = 0; i < kiln_tensor_numel(t); i++) kx_set_f64(t, i, oh_uniform(lo, hi));
}

static inline kiln_tensor oh_uniform_tensor(kiln_dtype dtype, int rank, const int64_t *dims, double lo, double hi) {
  kiln_tensor t = oh_tensor(dtype, rank, dims);
  oh_fill_uniform(&t, lo, hi);
  return t;
}

static inline void oh_release(kiln_tensor *t, int n) {
  for (int i = 0; i < n; i++) kiln_tensor_release(&t[i]);
}

/* ---------------------------------------------------------------- indices */

/* The coordinates of element `flat` of a row-major (rank, dims) array, and back. */
static inline void oh_unravel(int64_t flat, int rank, const int64_t *dims, int64_t *idx) {
  for (int d = rank - 1; d >= 0; d--) {
    idx[d] = flat % dims[d];
    flat /= dims[d];
  }
}
static inline int64_t oh_ravel(int rank, const int64_t *dims, const int64_t *idx) {
  int64_t flat = 0;
  for (int d = 0; d < rank; d++) flat = flat * dims[d] + idx[d];
  return flat;
}

/* Element i of src into element j of dst, which has src's dtype (string elements duplicated). */
static inline void oh_put(kiln_tensor *dst, int64_t j, const kiln_tensor *src, int64_t i) {
  size_t es = kiln_dtype_size(src->dtype);
  if (src->dtype == KILN_STRING) ((char **)dst->data)[j] = strdup(((char **)src->data)[i]);
  else memcpy((char *)dst->data + j * (int64_t)es, (const char *)src->data + i * (int64_t)es, es);
}

/* ---------------------------------------------------------------- comparisons */

static inline int oh_has_shape(const kiln_tensor *t, int rank, const int64_t *dims) {
  if (t->rank != rank) return 0;
  for (int d = 0; d < rank; d++)
    if (t->dims[d] != dims[d]) return 0;
  return 1;
}

/* Same dtype, shape and bits (string elements compared as strings). */
static inline int oh_same(const kiln_tensor *a, const kiln_tensor *b) {
  if (a->dtype != b->dtype || !oh_has_shape(a, b->rank, b->dims)) return 0;
  if (a->dtype != KILN_STRING) return kiln_tensor_nbytes(a) == 0 || memcmp(a->data, b->data, kiln_tensor_nbytes(a)) == 0;
  for (int64_t i = 0; i < kiln_tensor_numel(a); i++)
    if (strcmp(((char **)a->data)[i], ((char **)b->data)[i])) return 0;
  return 1;
}

/* Elementwise comparison: |got - want| <= tol * max(1, |want|); NaNs and same-signed infinities
 * match. Reports the first mismatch with `what`. */
static inline int oh_close_to(const kiln_tensor *got, const kiln_tensor *want, double tol, const char *what) {
  if (got->dtype != want->dtype || got->rank != want->rank) {
    fprintf(stderr, "%s: got %s rank %d, want %s rank %d\n", what, kiln_dtype_name(got->dtype), got->rank,
            kiln_dtype_name(want->dtype), want->rank);
    return 0;
  }
  for (int d = 0; d < got->rank; d++)
    if (got->dims[d] != want->dims[d]) {
      fprintf(stderr, "%s: dimension %d is %lld, want %lld\n", what, d, (long long)got->dims[d],
              (long long)want->dims[d]);
      return 0;
    }
  for (int64_t i = 0; i < kiln_tensor_numel(got); i++) {
    double g = kiln_tensor_get_f64(got, i), w = kiln_tensor_get_f64(want, i);
    if ((isnan(g) && isnan(w)) || g == w) continue;
    if (!(fabs(g - w) <= tol * (fabs(w) > 1 ? fabs(w) : 1))) {
      fprintf(stderr, "%s: element %lld is %.9g, want %.9g\n", what, (long long)i, g, w);
      return 0;
    }
  }
  return 1;
}

/* For references computed in another dtype (double sums for float kernels): same shape, and each
 * element within tol * (1 + |want|) of want's, whatever the two dtypes. Reports the first
 * mismatch with `what`. */
static inline int oh_values_close(const kiln_tensor *got, const kiln_tensor *want, double tol, const char *what) {
  if (!oh_has_shape(got, want->rank, want->dims)) {
    char g[128], w[128];
    fprintf(stderr, "%s: shape %s, expected %s\n", what, kiln_tensor_describe(got, g, sizeof g),
            kiln_tensor_describe(want, w, sizeof w));
    return 0;
  }
  for (int64_t i = 0; i < kiln_tensor_numel(want); i++) {
    double g = kiln_tensor_get_f64(got, i), w = kiln_tensor_get_f64(want, i);
    if (!(fabs(g - w) <= tol * (1 + fabs(w)))) {
      fprintf(stderr, "%s: element %lld is %.8g, expected %.8g\n", what, (long long)i, g, w);
      return 0;
    }
  }
  return 1;
}

/* ---------------------------------------------------------------- one-node models */

/* Adds an `op` node reading x0.. and writing y0..: in[i] becomes graph input xi, or initializer xi
 * where const_mask has bit i; NULL entries of `in` are absent inputs. Returns the node, for
 * attributes. */
static inline tb_node *oh_node(tb_model *b, const char *op, const kiln_tensor *const *in, int n_in, unsigned const_mask,
                               int n_out) {
  char ins[8 * OH_MAX_IO] = "", outs[8 * OH_MAX_IO] = "", name[16];
  for (int i = 0; i < n_in; i++) {
    snprintf(name, sizeof name, "x%d", i);
    if (in[i] && (const_mask >> i & 1))
      tb_initializer(b, name, in[i]);
    else if (in[i])
      tb_input(b, name, in[i]->dtype, in[i]->rank, in[i]->dims);
    snprintf(ins + strlen(ins), sizeof ins - strlen(ins), "%s%s", i ? "," : "", in[i] ? name : "");
  }
  for (int i = 0; i < n_out; i++) {
    snprintf(name, sizeof name, "y%d", i);
    tb_output(b, name, KILN_UNDEFINED);
    snprintf(outs + strlen(outs), sizeof outs - strlen(outs), "%s%s", i ? "," : "", name);
  }
  return tb_add_node(b, op, ins, outs);
}

/* A model at `opset` holding one such node, all of whose inputs are graph inputs; *node receives
 * the node. */
static inline tb_model *oh_model(int opset, const char *op, const kiln_tensor *const *in, int n_in, int n_out,
                                 tb_node **node) {
  tb_model *b = tb_new(opset);
  *node = oh_node(b, op, in, n_in, 0, n_out);
  return b;
}

/* Loads the model and frees the builder; NULL (and a failed check) if it does not load. */
static inline kiln_model *oh_load(tb_model *b) {
  kiln_model *m = NULL;
  CHECK_OK(tb_load(b, &m));
  tb_free(b);
  return m;
}

/* Loads the model built by oh_node (freeing the builder) and runs it `runs` times on `threads`
 * threads, feeding the inputs that are not initializers; out receives copies of the last run's
 * n_out outputs. Use oh_run or oh_run_once. */
static inline kiln_status oh_run_times(tb_model *b, const kiln_tensor *const *in, int n_in, unsigned const_mask,
                                       kiln_tensor *out, int n_out, int threads, int runs) {
  if (n_in > OH_MAX_IO || n_out > OH_MAX_IO) abort();
  kiln_model *m = NULL;
  kiln_session *session = NULL;
  kiln_pool *pool = NULL;
  kiln_status s = tb_load(b, &m);
  tb_free(b);
  if (!s && threads > 1) s = kiln_pool_create(threads, &pool);
  kiln_session_options opt = {.pool = pool};
  if (!s) s = kiln_session_create(m, &opt, &session);
  const kiln_tensor *inputs[OH_MAX_IO], *outputs[OH_MAX_IO];
  int k = 0;
  for (int i = 0; i < n_in; i++)
    if (in[i] && !(const_mask >> i & 1)) inputs[k++] = in[i];
  for (int rep = 0; rep < runs && !s; rep++) s = kiln_session_run_tensors(session, inputs, outputs);
  for (int i = 0; i < n_out && !s; i++) s = kiln_tensor_copy(&out[i], outputs[i]);
  kiln_session_free(session);
  kiln_model_free(m);
  kiln_pool_free(pool);
  return s;
}

/* Runs twice: the first run allocates the outputs, the second uses the planned arena. */
static inline kiln_status oh_run(tb_model *b, const kiln_tensor *const *in, int n_in, unsigned const_mask,
                                 kiln_tensor *out, int n_out, int threads) {
  return oh_run_times(b, in, n_in, const_mask, out, n_out, threads, 2);
}

static inline kiln_status oh_run_once(tb_model *b, const kiln_tensor *const *in, int n_in, unsigned const_mask,
                                      kiln_tensor *out, int n_out, int threads) {
  return oh_run_times(b, in, n_in, const_mask, out, n_out, threads, 1);
}

#endif
