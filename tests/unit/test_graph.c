/* The graph layer through the public API: loading, signature checks on run, memory plans. */
#include <pthread.h>

#include "kiln/graph.h"
#include "onnx_builder.h"
#include "test.h"

static kiln_model *add_model(void) {
  tb_model *b = tb_new(13);
  tb_input(b, "a", KILN_FLOAT, 2, (int64_t[]){-1, 3});
  tb_input(b, "b", KILN_FLOAT, 2, (int64_t[]){-1, 3});
  tb_output(b, "y", KILN_FLOAT);
  tb_add_node(b, "Add", "a,b", "y");
  kiln_model *m = NULL;
  CHECK_OK(tb_load(b, &m));
  tb_free(b);
  return m;
}

static void test_run_and_plan(void) {
  kiln_model *m = add_model();
  if (!m) return;
  CHECK(kiln_model_input_count(m) == 2);
  CHECK(kiln_model_input(m, 0)->dims[0] == -1);
  CHECK(strcmp(kiln_model_input(m, 0)->dim_names[0], "N") == 0);
  kiln_session *s;
  CHECK_OK(kiln_session_create(m, NULL, &s));
  for (int64_t rows = 1; rows <= 3; rows++)
    for (int rep = 0; rep < 3; rep++) { /* first run records, later runs use the plan */
      kiln_tensor a, b;
      CHECK_OK(kiln_tensor_alloc(&a, KILN_FLOAT, 2, (int64_t[]){rows, 3}));
      CHECK_OK(kiln_tensor_alloc(&b, KILN_FLOAT, 2, (int64_t[]){rows, 3}));
      for (int64_t i = 0; i < rows * 3; i++) {
        ((float *)a.data)[i] = (float)i;
        ((float *)b.data)[i] = (float)(10 * i + rep);
      }
      const kiln_tensor *in[2] = {&a, &b}, *out[1];
      CHECK_OK(kiln_session_run_tensors(s, in, out));
      CHECK(out[0]->rank == 2 && out[0]->dims[0] == rows && out[0]->dims[1] == 3);
      for (int64_t i = 0; i < rows * 3; i++) CHECK(((float *)out[0]->data)[i] == (float)(11 * i + rep));
      kiln_tensor_release(&a);
      kiln_tensor_release(&b);
    }
  kiln_session_free(s);
  kiln_model_free(m);
}

static void test_bad_inputs(void) {
  kiln_model *m = add_model();
  if (!m) return;
  kiln_session *s;
  CHECK_OK(kiln_session_create(m, NULL, &s));
  kiln_tensor good, wrong_dtype, wrong_rank, wrong_dim;
  CHECK_OK(kiln_tensor_alloc(&good, KILN_FLOAT, 2, (int64_t[]){2, 3}));
  CHECK_OK(kiln_tensor_alloc(&wrong_dtype, KILN_DOUBLE, 2, (int64_t[]){2, 3}));
  CHECK_OK(kiln_tensor_alloc(&wrong_rank, KILN_FLOAT, 1, (int64_t[]){3}));
  CHECK_OK(kiln_tensor_alloc(&wrong_dim, KILN_FLOAT, 2, (int64_t[]){2, 4}));
  const kiln_tensor *out[1];
  CHECK_ERROR(kiln_session_run_tensors(s, (const kiln_tensor *[]){&good, &wrong_dtype}, out), KILN_INVALID_ARGUMENT,
              "input 'b': expected float[N,3], got double[2,3] (wrong dtype)");
  CHECK_ERROR(kiln_session_run_tensors(s, (const kiln_tensor *[]){&wrong_rank, &good}, out), KILN_INVALID_ARGUMENT,
              "input 'a': expected float[N,3], got float[3] (rank 1, expected 2)");
  CHECK_ERROR(kiln_session_run_tensors(s, (const kiln_tensor *[]){&good, &wrong_dim}, out), KILN_INVALID_ARGUMENT,
              "dimension 1 is 4, expected 3");
  CHECK_ERROR(kiln_session_run_tensors(s, (const kiln_tensor *[]){&good, NULL}, out), KILN_INVALID_ARGUMENT,
              "input 'b' is missing");
  /* the session still works after rejected runs */
  CHECK_OK(kiln_session_run_tensors(s, (const kiln_tensor *[]){&good, &good}, out));
  kiln_tensor_release(&good);
  kiln_tensor_release(&wrong_dtype);
  kiln_tensor_release(&wrong_rank);
  kiln_tensor_release(&wrong_dim);
  kiln_session_free(s);
  kiln_model_free(m);
}

static void test_malformed_models(void) {
  kiln_model *m = NULL;
  kiln_load_options opt = {.name = "bad.onnx"};
  CHECK_ERROR(kiln_model_load_buffer("", 0, &opt, &m), KILN_INVALID_ARGUMENT, "bad.onnx: empty file");
  CHECK_ERROR(kiln_model_load_buffer("\x0a\xff\xff\xff\x0f", 5, &opt, &m), KILN_INVALID_ARGUMENT, "bad.onnx: not a valid ONNX model");

  tb_model *b = tb_new(13);
  tb_input(b, "x", KILN_FLOAT, 1, (int64_t[]){3});
  tb_output(b, "y", KILN_FLOAT);
  tb_add_node(b, "Add", "x,w", "y");
  CHECK_ERROR(tb_load(b, &m), KILN_INVALID_ARGUMENT, "test.onnx: node 0 (Add): input 'w' is not produced by any node");
  tb_free(b);

  b = tb_new(13);
  tb_input(b, "x", KILN_FLOAT, 1, (int64_t[]){3});
  tb_output(b, "y", KILN_FLOAT);
  tb_add_node(b, "Foo", "x", "y");
  CHECK_ERROR(tb_load(b, &m), KILN_UNIMPLEMENTED, "test.onnx: unsupported operator 'Foo' (domain '', opset 13)");
  tb_free(b);

  b = tb_new(13);
  tb_input(b, "x", KILN_FLOAT, 1, (int64_t[]){3});
  tb_output(b, "y", KILN_FLOAT);
  tb_add_node(b, "Add", "x,z", "y");
  tb_add_node(b, "Add", "x,y", "z");
  CHECK_ERROR(tb_load(b, &m), KILN_INVALID_ARGUMENT, "cycle");
  tb_free(b);

  b = tb_new(13);
  tb_input(b, "x", KILN_FLOAT, 1, (int64_t[]){3});
  tb_output(b, "nowhere", KILN_FLOAT);
  CHECK_ERROR(tb_load(b, &m), KILN_INVALID_ARGUMENT, "graph output 'nowhere' is not produced by any node");
  tb_free(b);
}

/* A chain of ten Adds: the plan reuses buffers (the arena holds a few tensors, not ten), and once a
 * shape has run, runs with it allocate nothing. */
static void test_memory_plan_reuse(void) {
  tb_model *b = tb_new(13);
  tb_input(b, "x", KILN_FLOAT, 1, (int64_t[]){-1});
  tb_output(b, "y9", KILN_FLOAT);
  char in[16], out[16], names[40];
  for (int i = 0; i < 10; i++) {
    snprintf(in, sizeof in, i ? "y%d" : "x", i - 1);
    snprintf(out, sizeof out, "y%d", i);
    snprintf(names, sizeof names, "%s,%s", in, in);
    tb_add_node(b, "Add", names, out);
  }
  kiln_model *m;
  CHECK_OK(tb_load(b, &m));
  tb_free(b);
  kiln_session *s;
  CHECK_OK(kiln_session_create(m, NULL, &s));
  kiln_session_stats st;
  for (int64_t n = 1000; n <= 2000; n += 1000) {
    kiln_tensor x;
    CHECK_OK(kiln_tensor_alloc(&x, KILN_FLOAT, 1, &n));
    for (int64_t i = 0; i < n; i++) ((float *)x.data)[i] = (float)i;
    const kiln_tensor *in_t[1] = {&x}, *out_t[1];
    for (int rep = 0; rep < 3; rep++) {
      CHECK_OK(kiln_session_run_tensors(s, in_t, out_t));
      kiln_session_stats_get(s, &st);
      CHECK(st.last_run_allocations == (rep == 0 ? 10 : 0));
      for (int64_t i = 0; i < n; i += 97) CHECK(((float *)out_t[0]->data)[i] == 1024.0f * (float)i);
    }
    size_t bytes = (size_t)n * sizeof(float);
    CHECK(st.arena_bytes >= 2 * bytes && st.arena_bytes <= 3 * bytes + 256);
    kiln_tensor_release(&x);
  }
  CHECK(st.plans == 2);
  kiln_session_free(s);
  kiln_model_free(m);
}

/* Runs a one-input model built by `build` and returns output 0 (copied) and the number of nodes
 * the session runs after fusion. */
static int run_counting_nodes(tb_model *b, const kiln_tensor *x, kiln_tensor *y) {
  kiln_model *m;
  kiln_session *s = NULL;
  kiln_session_options opt = {.profile = 1};
  CHECK_OK(tb_load(b, &m));
  tb_free(b);
  CHECK_OK(kiln_session_create(m, &opt, &s));
  const kiln_tensor *in[1] = {x}, *out[8];
  CHECK_OK(kiln_session_run_tensors(s, in, out));
  CHECK_OK(kiln_tensor_copy(y, out[0]));
  int nodes = kiln_session_profile(s, NULL, 0);
  kiln_session_free(s);
  kiln_model_free(m);
  return nodes;
}

/* An activation after Conv / MatMul / Add runs inside its producer, with the same result as the
 * unfused pair (the intermediate made a graph output keeps them apart). */
static void test_activation_fusion(void) {
  kiln_tensor x, w, lo, hi;
  CHECK_OK(kiln_tensor_alloc(&x, KILN_FLOAT, 4, (int64_t[]){1, 2, 5, 5}));
  CHECK_OK(kiln_tensor_alloc(&w, KILN_FLOAT, 4, (int64_t[]){3, 2, 3, 3}));
  CHECK_OK(kiln_tensor_alloc(&lo, KILN_FLOAT, 0, NULL));
  CHECK_OK(kiln_tensor_alloc(&hi, KILN_FLOAT, 0, NULL));
  for (int i = 0; i < 50; i++) ((float *)x.data)[i] = (float)((i * 37) % 11) - 5.0f;
  for (int i = 0; i < 54; i++) ((float *)w.data)[i] = (float)((i * 13) % 7) - 3.0f;
  *(float *)lo.data = -2.0f;
  *(float *)hi.data = 6.0f;
  const char *acts[] = {"Relu", "LeakyRelu", "Clip"};
  for (int a = 0; a < 3; a++)
    for (int producer = 0; producer < 2; producer++) {
      kiln_tensor fused, apart;
      for (int keep_apart = 0; keep_apart < 2; keep_apart++) {
        tb_model *b = tb_new(13);
        tb_input(b, "x", KILN_FLOAT, 4, (int64_t[]){1, 2, 5, 5});
        tb_output(b, "y", KILN_FLOAT);
        if (keep_apart) tb_output(b, "h", KILN_FLOAT);
        tb_initializer(b, "w", &w);
        if (producer == 0) tb_add_node(b, "Conv", "x,w", "h");
        else tb_add_node(b, "Add", "x,x", "h");
        if (a == 2) {
          tb_initializer(b, "lo", &lo);
          tb_initializer(b, "hi", &hi);
          tb_add_node(b, "Clip", "h,lo,hi", "y");
        } else {
          tb_attr_float(tb_add_node(b, acts[a], "h", "y"), "alpha", 0.25f);
        }
        int nodes = run_counting_nodes(b, &x, keep_apart ? &apart : &fused);
        CHECK(nodes == (keep_apart ? 2 : 1));
      }
      CHECK_OK(kiln_tensor_compare(&fused, &apart, 0, 0));
      kiln_tensor_release(&fused);
      kiln_tensor_release(&apart);
    }
  /* Clip with bounds that are graph inputs stays a node of its own */
  tb_model *b = tb_new(13);
  tb_input(b, "x", KILN_FLOAT, 4, (int64_t[]){1, 2, 5, 5});
  tb_input(b, "lo", KILN_FLOAT, 0, NULL);
  tb_output(b, "y", KILN_FLOAT);
  tb_add_node(b, "Add", "x,x", "h");
  tb_add_node(b, "Clip", "h,lo", "y");
  kiln_model *m;
  CHECK_OK(tb_load(b, &m));
  tb_free(b);
  kiln_session *s;
  kiln_session_options opt = {.profile = 1};
  CHECK_OK(kiln_session_create(m, &opt, &s));
  const kiln_tensor *in[2] = {&x, &lo}, *out[1];
  CHECK_OK(kiln_session_run_tensors(s, in, out));
  CHECK(kiln_session_profile(s, NULL, 0) == 2);
  for (int i = 0; i < 50; i++) CHECK(((float *)out[0]->data)[i] == fmaxf(2 * ((float *)x.data)[i], -2.0f));
  kiln_session_free(s);
  kiln_model_free(m);
  kiln_tensor_release(&x);
  kiln_tensor_release(&w);
  kiln_tensor_release(&lo);
  kiln_tensor_release(&hi);
}

/* One loaded model, many threads: each runs its own session on a shared pool, with inputs of
 * its own shape, and must get the result a lone session gets. */
typedef struct worker {
  const kiln_model *m;
  kiln_pool *pool;
  int64_t rows;
  const kiln_tensor *want;
  int bad;
} worker;

static kiln_model *conv_gemm_model(void) {
  tb_model *b = tb_new(13);
  tb_input(b, "x", KILN_FLOAT, 4, (int64_t[]){-1, 3, 32, 32});
  tb_output(b, "y", KILN_FLOAT);
  kiln_tensor w, fc;
  /* big enough that convolution and product split across the pool's threads */
  CHECK_OK(kiln_tensor_alloc(&w, KILN_FLOAT, 4, (int64_t[]){16, 3, 3, 3}));
  CHECK_OK(kiln_tensor_alloc(&fc, KILN_FLOAT, 2, (int64_t[]){16 * 32 * 32, 5}));
  for (int i = 0; i < 16 * 27; i++) ((float *)w.data)[i] = (float)(i % 7) / 7.0f - 0.4f;
  for (int i = 0; i < 16 * 1024 * 5; i++) ((float *)fc.data)[i] = (float)(i % 13) / 13.0f - 0.5f;
  tb_initializer(b, "w", &w);
  tb_initializer(b, "fc", &fc);
  tb_attr_ints(tb_add_node(b, "Conv", "x,w", "c"), "pads", 4, (int64_t[]){1, 1, 1, 1});
  tb_add_node(b, "Relu", "c", "r");
  tb_add_node(b, "Flatten", "r", "f");
  tb_add_node(b, "MatMul", "f,fc", "y");
  kiln_model *m = NULL;
  CHECK_OK(tb_load(b, &m));
  tb_free(b);
  kiln_tensor_release(&w);
  kiln_tensor_release(&fc);
  return m;
}

static kiln_tensor input_rows(int64_t rows) {
  kiln_tensor x;
  CHECK_OK(kiln_tensor_alloc(&x, KILN_FLOAT, 4, (int64_t[]){rows, 3, 32, 32}));
  for (int64_t i = 0; i < kiln_tensor_numel(&x); i++) ((float *)x.data)[i] = (float)((i * 31) % 17) / 17.0f - 0.5f;
  return x;
}

static void *concurrent_runs(void *arg) {
  worker *w = arg;
  kiln_session *s = NULL;
  kiln_session_options opt = {.pool = w->pool};
  kiln_tensor x = input_rows(w->rows);
  if (kiln_session_create(w->m, &opt, &s)) w->bad++;
  for (int i = 0; s && i < 50; i++) {
    const kiln_tensor *in[1] = {&x}, *out[1];
    kiln_status st = kiln_session_run_tensors(s, in, out);
    if (st || kiln_tensor_compare(out[0], w->want, 0, 0)) w->bad++;
    kiln_status_free(st);
  }
  kiln_session_free(s);
  kiln_tensor_release(&x);
  return NULL;
}

static void test_concurrent_sessions(void) {
  kiln_model *m = conv_gemm_model();
  if (!m) return;
  kiln_pool *pool;
  CHECK_OK(kiln_pool_create(2, &pool));
  enum { THREADS = 4 };
  kiln_tensor want[THREADS];
  worker workers[THREADS];
  pthread_t threads[THREADS];
  for (int t = 0; t < THREADS; t++) {
    kiln_session *s;
    CHECK_OK(kiln_session_create(m, NULL, &s));
    kiln_tensor x = input_rows(t + 1);
    const kiln_tensor *in[1] = {&x}, *out[1];
    CHECK_OK(kiln_session_run_tensors(s, in, out));
    CHECK_OK(kiln_tensor_copy(&want[t], out[0]));
    kiln_tensor_release(&x);
    kiln_session_free(s);
    workers[t] = (worker){m, pool, t + 1, &want[t], 0};
  }
  for (int t = 0; t < THREADS; t++) pthread_create(&threads[t], NULL, concurrent_runs, &workers[t]);
  for (int t = 0; t < THREADS; t++) {
    pthread_join(threads[t], NULL);
    CHECK(workers[t].bad == 0);
    kiln_tensor_release(&want[t]);
  }
  kiln_pool_free(pool);
  kiln_model_free(m);
}

static kiln_tensor ramp(int rank, const int64_t *dims, float scale) {
  kiln_tensor t;
  CHECK_OK(kiln_tensor_alloc(&t, KILN_FLOAT, rank, dims));
  for (int64_t i = 0; i < kiln_tensor_numel(&t); i++) ((float *)t.data)[i] = scale * (float)((i * 29) % 23 - 11);
  return t;
}

static kiln_tensor scalar(float v) {
  kiln_tensor t;
  CHECK_OK(kiln_tensor_alloc(&t, KILN_FLOAT, 0, NULL));
  *(float *)t.data = v;
  return t;
}

/* torch.onnx's transformer block pieces (weights through Identity, MatMul + bias, GELU from Erf,
 * LayerNorm from ReduceMean / Pow / Sqrt) fold and fuse into MatMul, Gelu and
 * LayerNormalization nodes, with the results of the decomposed graph (within float rounding:
 * the fused kernels round differently). */
static void test_transformer_fusions(void) {
  kiln_tensor w = ramp(2, (int64_t[]){8, 8}, 0.05f), bias = ramp(1, (int64_t[]){8}, 0.1f);
  kiln_tensor gamma = ramp(1, (int64_t[]){8}, 0.2f), beta = ramp(1, (int64_t[]){8}, 0.3f);
  kiln_tensor sqrt2 = scalar(1.41421356f), one = scalar(1.0f), half = scalar(0.5f), two = scalar(2.0f), eps = scalar(1e-5f);
  kiln_tensor x = ramp(3, (int64_t[]){2, 3, 8}, 0.25f);
  kiln_tensor results[2];
  for (int keep_apart = 0; keep_apart < 2; keep_apart++) {
    tb_model *b = tb_new(13);
    tb_input(b, "x", KILN_FLOAT, 3, (int64_t[]){-1, 3, 8});
    tb_output(b, "y", KILN_FLOAT);
    const struct { const char *name; const kiln_tensor *t; } inits[] = {
        {"w0", &w}, {"bias", &bias}, {"gamma", &gamma}, {"beta", &beta}, {"sqrt2", &sqrt2},
        {"one", &one}, {"half", &half}, {"two", &two}, {"eps", &eps}};
    for (size_t i = 0; i < sizeof inits / sizeof inits[0]; i++) tb_initializer(b, inits[i].name, inits[i].t);
    tb_add_node(b, "Identity", "w0", "w");
    tb_add_node(b, "MatMul", "x,w", "mm");
    tb_add_node(b, "Add", "bias,mm", "h");
    tb_add_node(b, "Div", "h,sqrt2", "d");
    tb_add_node(b, "Erf", "d", "e");
    tb_add_node(b, "Add", "e,one", "e1");
    tb_add_node(b, "Mul", "h,e1", "m");
    tb_add_node(b, "Mul", "m,half", "g");
    tb_attr_ints(tb_add_node(b, "ReduceMean", "g", "mean"), "axes", 1, (int64_t[]){-1});
    tb_add_node(b, "Sub", "g,mean", "c");
    tb_add_node(b, "Pow", "c,two", "c2");
    tb_attr_ints(tb_add_node(b, "ReduceMean", "c2", "var"), "axes", 1, (int64_t[]){-1});
    tb_add_node(b, "Add", "var,eps", "ve");
    tb_add_node(b, "Sqrt", "ve", "sd");
    tb_add_node(b, "Div", "c,sd", "n");
    tb_add_node(b, "Mul", "n,gamma", "ng");
    tb_add_node(b, "Add", "ng,beta", "y");
    if (keep_apart) { /* graph outputs in the middle of every pattern keep it unfused */
      tb_output(b, "mm", KILN_FLOAT);
      tb_output(b, "e", KILN_FLOAT);
      tb_output(b, "var", KILN_FLOAT);
    }
    int nodes = run_counting_nodes(b, &x, &results[keep_apart]);
    /* fused: MatMul (+bias), Gelu, LayerNormalization; the Identity is folded either way */
    CHECK(nodes == (keep_apart ? 16 : 3));
  }
  CHECK_OK(kiln_tensor_compare(&results[0], &results[1], 1e-5, 1e-5));
  kiln_tensor all[] = {w, bias, gamma, beta, sqrt2, one, half, two, eps, x, results[0], results[1]};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) kiln_tensor_release(&all[i]);
}

/* MatMul -> Add(bias) -> Relu runs as one MatMul applying both in its store. */
static void test_matmul_bias_relu(void) {
  kiln_tensor w = ramp(2, (int64_t[]){8, 24}, 0.05f), bias = ramp(1, (int64_t[]){24}, 0.1f);
  kiln_tensor x = ramp(2, (int64_t[]){5, 8}, 0.25f), results[2];
  for (int keep_apart = 0; keep_apart < 2; keep_apart++) {
    tb_model *b = tb_new(13);
    tb_input(b, "x", KILN_FLOAT, 2, (int64_t[]){-1, 8});
    tb_output(b, "y", KILN_FLOAT);
    tb_initializer(b, "w", &w);
    tb_initializer(b, "bias", &bias);
    tb_add_node(b, "MatMul", "x,w", "mm");
    tb_add_node(b, "Add", "mm,bias", "h");
    tb_add_node(b, "Relu", "h", "y");
    if (keep_apart) tb_output(b, "mm", KILN_FLOAT);
    CHECK(run_counting_nodes(b, &x, &results[keep_apart]) == (keep_apart ? 2 : 1));
  }
  CHECK_OK(kiln_tensor_compare(&results[0], &results[1], 0, 0));
  kiln_tensor all[] = {w, bias, x, results[0], results[1]};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) kiln_tensor_release(&all[i]);
}

TEST_MAIN(TEST(test_run_and_plan), TEST(test_transformer_fusions), TEST(test_matmul_bias_relu), TEST(test_concurrent_sessions), TEST(test_activation_fusion), TEST(test_memory_plan_reuse), TEST(test_bad_inputs), TEST(test_malformed_models))
