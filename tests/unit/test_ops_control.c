/* Control flow (If, Loop, Scan, SequenceMap) and the sequence / optional operators, through
 * models built in memory: subgraph outputs of changing shapes, values carried across iterations
 * (including bodies that pass them through or swap them), outer-scope values read by subgraphs
 * nested two deep, plan reuse across runs, and the errors bad inputs get. The bodies use only
 * these families' operators and Add on float tensors of one shape. */
#include "op_harness.h"

/* ---------------------------------------------------------------- helpers */

/* Attaches sub's graph to node n as graph attribute `name`; sub is consumed. */
static void tb_attr_graph(tb_node *n, const char *name, tb_model *sub) {
  Onnx__AttributeProto *a = tb_attr(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH);
  a->g = malloc(sizeof *a->g);
  *a->g = sub->graph;
  free(sub->opset.domain);
  free(sub);
}

/* A subgraph (opset is irrelevant: only the graph is kept). */
static tb_model *tb_sub(const char *name) {
  tb_model *g = tb_new(1);
  free(g->graph.name);
  g->graph.name = strdup(name);
  return g;
}

/* A float initializer of any shape. */
static void init_f(tb_model *b, const char *name, int rank, const int64_t *dims, const float *v) {
  kiln_tensor t = oh_view(KILN_FLOAT, rank, dims, v);
  tb_initializer(b, name, &t);
}

static void init_i64(tb_model *b, const char *name, int64_t v) {
  kiln_tensor t = oh_view(KILN_INT64, 0, NULL, &v);
  tb_initializer(b, name, &t);
}

/* Tensor values over caller memory. */
static kiln_value val(kiln_dtype dtype, int rank, const int64_t *dims, const void *data) {
  return (kiln_value){.kind = KILN_VALUE_TENSOR, .tensor = oh_view(dtype, rank, dims, data)};
}

static kiln_value scalar_b(const uint8_t *b) { return val(KILN_BOOL, 0, NULL, b); }
static kiln_value scalar_i64(const int64_t *i) { return val(KILN_INT64, 0, NULL, i); }

static int floats_are(const kiln_tensor *t, int n, const float *want) {
  if (t->dtype != KILN_FLOAT || kiln_tensor_numel(t) != n) return 0;
  for (int i = 0; i < n; i++)
    if (((const float *)t->data)[i] != want[i]) return 0;
  return 1;
}

/* ---------------------------------------------------------------- If */

/* y = If(c) { then: x + x (x read from the outer graph) } { else: the constant [7, 8, 9] } */
static kiln_model *if_model(int branch_outputs) {
  tb_model *b = tb_new(16);
  tb_input(b, "c", KILN_BOOL, 0, NULL);
  tb_input(b, "x", KILN_FLOAT, 1, (int64_t[]){2});
  tb_output(b, "y", KILN_FLOAT);
  tb_node *n = tb_add_node(b, "If", "c", "y");
  tb_model *then = tb_sub("then");
  tb_add_node(then, "Add", "x,x", "twice");
  tb_output(then, "twice", KILN_FLOAT);
  if (branch_outputs == 2) tb_output(then, "x", KILN_FLOAT);
  tb_attr_graph(n, "then_branch", then);
  tb_model *els = tb_sub("else");
  init_f(els, "k", 1, (int64_t[]){3}, (float[]){7, 8, 9});
  tb_output(els, "k", KILN_FLOAT);
  tb_attr_graph(n, "else_branch", els);
  return oh_load(b);
}

static void test_if(void) {
  kiln_model *m = if_model(1);
  if (!m) return;
  kiln_session *s;
  CHECK_OK(kiln_session_create(m, NULL, &s));
  float x[2] = {1, 2};
  for (int rep = 0; rep < 2; rep++) /* alternate branches, twice: plans are reused */
    for (uint8_t c = 0; c < 2; c++) {
      kiln_value vc = scalar_b(&c), vx = val(KILN_FLOAT, 1, (int64_t[]){2}, x);
      const kiln_value *in[2] = {&vc, &vx}, *out[1];
      CHECK_OK(kiln_session_run(s, in, out));
      if (c) CHECK(oh_has_shape(&out[0]->tensor, 1, (int64_t[]){2}) && floats_are(&out[0]->tensor, 2, (float[]){2, 4}));
      else CHECK(oh_has_shape(&out[0]->tensor, 1, (int64_t[]){3}) && floats_are(&out[0]->tensor, 3, (float[]){7, 8, 9}));
    }
  kiln_session_free(s);
  kiln_model_free(m);

  /* a condition that is not one bool, through a model that does not declare its type */
  tb_model *b = tb_new(16);
  tb_input(b, "c", KILN_UNDEFINED, -1, NULL);
  tb_output(b, "y", KILN_FLOAT);
  tb_node *n = tb_add_node(b, "If", "c", "y");
  tb_model *then = tb_sub("then"), *els = tb_sub("else");
  init_f(then, "k", 0, NULL, (float[]){1});
  tb_output(then, "k", KILN_FLOAT);
  init_f(els, "k", 0, NULL, (float[]){2});
  tb_output(els, "k", KILN_FLOAT);
  tb_attr_graph(n, "then_branch", then);
  tb_attr_graph(n, "else_branch", els);
  if (!(m = oh_load(b))) return;
  CHECK_OK(kiln_session_create(m, NULL, &s));
  float bad = 1;
  kiln_value vc = val(KILN_FLOAT, 0, NULL, &bad);
  const kiln_value *in[1] = {&vc}, *out[1];
  CHECK_ERROR(kiln_session_run(s, in, out), KILN_INVALID_ARGUMENT, "node 0 (If): cond must be a bool tensor of one element, got float[]");
  uint8_t two[2] = {1, 1};
  vc = val(KILN_BOOL, 1, (int64_t[]){2}, two);
  CHECK_ERROR(kiln_session_run(s, in, out), KILN_INVALID_ARGUMENT, "cond must be a bool tensor of one element, got bool[2]");
  kiln_session_free(s);
  kiln_model_free(m);
}

static void test_if_wrong_branch_outputs(void) {
  kiln_model *m = if_model(2);
  if (!m) return;
  kiln_session *s;
  CHECK_OK(kiln_session_create(m, NULL, &s));
  uint8_t c = 1;
  float x[2] = {1, 2};
  kiln_value vc = scalar_b(&c), vx = val(KILN_FLOAT, 1, (int64_t[]){2}, x);
  const kiln_value *in[2] = {&vc, &vx}, *out[1];
  CHECK_ERROR(kiln_session_run(s, in, out), KILN_INVALID_ARGUMENT, "node 0 (If): then_branch has 2 outputs, the node needs 1");
  c = 0; /* the other branch is fine */
  CHECK_OK(kiln_session_run(s, in, out));
  kiln_session_free(s);
  kiln_model_free(m);
}

/* ---------------------------------------------------------------- Loop */

/* y, ys = Loop(M, cond, y0) { y = y + x (outer) ; scan y } */
static kiln_model *loop_add_model(void) {
  tb_model *b = tb_new(16);
  tb_input(b, "M", KILN_INT64, 0, NULL);
  tb_input(b, "cond", KILN_BOOL, 0, NULL);
  tb_input(b, "y0", KILN_FLOAT, 1, (int64_t[]){2});
  tb_input(b, "x", KILN_FLOAT, 1, (int64_t[]){2});
  tb_output(b, "y", KILN_FLOAT);
  tb_output(b, "ys", KILN_FLOAT);
  tb_node *n = tb_add_node(b, "Loop", "M,cond,y0", "y,ys");
  tb_model *body = tb_sub("body");
  tb_input(body, "i", KILN_INT64, 0, NULL);
  tb_input(body, "c", KILN_BOOL, 0, NULL);
  tb_input(body, "y_in", KILN_FLOAT, 1, (int64_t[]){2});
  tb_add_node(body, "Add", "y_in,x", "y_out");
  tb_output(body, "c", KILN_BOOL);
  tb_output(body, "y_out", KILN_FLOAT);
  body->graph.output = tb_grow(body->graph.output, &body->graph.n_output, sizeof *body->graph.output);
  body->graph.output[2] = tb_value_info("y_out", KILN_FLOAT, 1, (int64_t[]){2}); /* declared shape for 0 trips */
  tb_attr_graph(n, "body", body);
  return oh_load(b);
}

static void test_loop(void) {
  kiln_model *m = loop_add_model();
  if (!m) return;
  kiln_pool *pool;
  CHECK_OK(kiln_pool_create(2, &pool));
  kiln_session_options opt = {.pool = pool};
  kiln_session *s;
  CHECK_OK(kiln_session_create(m, &opt, &s));
  float y0[2] = {1, 2}, x[2] = {10, 100};
  uint8_t cond = 1;
  int64_t trips[] = {3, 3, 1, 0, 3};
  for (size_t r = 0; r < sizeof trips / sizeof *trips; r++) {
    kiln_value vm = scalar_i64(&trips[r]), vc = scalar_b(&cond), vy = val(KILN_FLOAT, 1, (int64_t[]){2}, y0),
               vx = val(KILN_FLOAT, 1, (int64_t[]){2}, x);
    const kiln_value *in[4] = {&vm, &vc, &vy, &vx}, *out[2];
    CHECK_OK(kiln_session_run(s, in, out));
    int64_t t = trips[r];
    CHECK(floats_are(&out[0]->tensor, 2, (float[]){1 + 10.f * t, 2 + 100.f * t}));
    CHECK(oh_has_shape(&out[1]->tensor, 2, (int64_t[]){t, 2}));
    for (int64_t k = 0; k < t; k++) {
      const float *row = (const float *)out[1]->tensor.data + 2 * k;
      CHECK(row[0] == 1 + 10.f * (k + 1) && row[1] == 2 + 100.f * (k + 1));
    }
  }
  /* cond false: no iteration even with trips left */
  cond = 0;
  int64_t many = 5;
  kiln_value vm = scalar_i64(&many), vc = scalar_b(&cond), vy = val(KILN_FLOAT, 1, (int64_t[]){2}, y0),
             vx = val(KILN_FLOAT, 1, (int64_t[]){2}, x);
  const kiln_value *in[4] = {&vm, &vc, &vy, &vx}, *out[2];
  CHECK_OK(kiln_session_run(s, in, out));
  CHECK(floats_are(&out[0]->tensor, 2, y0) && oh_has_shape(&out[1]->tensor, 2, (int64_t[]){0, 2}));
  kiln_session_free(s);
  kiln_model_free(m);
  kiln_pool_free(pool);
}

/* a, b = Loop(M, "", a0, b0) { return cond_in, b_in, a_in }: a body with no nodes at all, whose
 * outputs are its inputs (swapped): the carried buffers must not alias. */
static void test_loop_passthrough_swap(void) {
  tb_model *b = tb_new(13);
  tb_input(b, "M", KILN_INT64, 0, NULL);
  tb_input(b, "a0", KILN_FLOAT, 1, (int64_t[]){2});
  tb_input(b, "b0", KILN_FLOAT, 1, (int64_t[]){3});
  tb_output(b, "a", KILN_FLOAT);
  tb_output(b, "b", KILN_FLOAT);
  tb_output(b, "iters", KILN_INT64);
  tb_node *n = tb_add_node(b, "Loop", "M,,a0,b0", "a,b,iters");
  tb_model *body = tb_sub("body");
  tb_input(body, "i", KILN_INT64, 0, NULL);
  tb_input(body, "c", KILN_BOOL, 0, NULL);
  tb_input(body, "a_in", KILN_FLOAT, -1, NULL);
  tb_input(body, "b_in", KILN_FLOAT, -1, NULL);
  tb_output(body, "c", KILN_BOOL);
  tb_output(body, "b_in", KILN_FLOAT);
  tb_output(body, "a_in", KILN_FLOAT);
  tb_output(body, "i", KILN_INT64);
  tb_attr_graph(n, "body", body);
  kiln_model *m = oh_load(b);
  if (!m) return;
  kiln_session *s;
  CHECK_OK(kiln_session_create(m, NULL, &s));
  float a0[2] = {1, 2}, b0[3] = {3, 4, 5};
  for (int64_t trips = 0; trips <= 5; trips++) {
    kiln_value vm = scalar_i64(&trips), va = val(KILN_FLOAT, 1, (int64_t[]){2}, a0), vb = val(KILN_FLOAT, 1, (int64_t[]){3}, b0);
    const kiln_value *in[3] = {&vm, &va, &vb}, *out[3];
    CHECK_OK(kiln_session_run(s, in, out));
    int swapped = trips % 2;
    CHECK(floats_are(&out[0]->tensor, swapped ? 3 : 2, swapped ? b0 : a0));
    CHECK(floats_are(&out[1]->tensor, swapped ? 2 : 3, swapped ? a0 : b0));
    CHECK(oh_has_shape(&out[2]->tensor, 1, &trips));
    for (int64_t k = 0; k < trips; k++) CHECK(((const int64_t *)out[2]->tensor.data)[k] == k);
  }
  kiln_session_free(s);
  kiln_model_free(m);
}

/* seq = Loop(M, "", SequenceEmpty) { seq.insert(If(flag) { x + y_in... }) }: a sequence carried
 * across iterations, and an If nested in the body whose branches read a value of the body (the
 * iteration's carried tensor) and one of the main graph (x, two scopes up). */
static kiln_model *loop_nested_model(void) {
  tb_model *b = tb_new(16);
  tb_input(b, "M", KILN_INT64, 0, NULL);
  tb_input(b, "flag", KILN_BOOL, 0, NULL);
  tb_input(b, "x", KILN_FLOAT, 1, (int64_t[]){2});
  tb_output(b, "seq", KILN_FLOAT);
  tb_output(b, "len", KILN_INT64);
  tb_output(b, "last", KILN_FLOAT);
  tb_add_node(b, "SequenceEmpty", "", "empty");
  tb_node *n = tb_add_node(b, "Loop", "M,,empty,x", "seq,last");
  tb_add_node(b, "SequenceLength", "seq", "len");

  tb_model *body = tb_sub("body");
  tb_input(body, "i", KILN_INT64, 0, NULL);
  tb_input(body, "c", KILN_BOOL, 0, NULL);
  tb_input(body, "seq_in", KILN_FLOAT, -1, NULL);
  tb_input(body, "v_in", KILN_FLOAT, 1, (int64_t[]){2});
  tb_node *inner = tb_add_node(body, "If", "flag", "v_out");
  tb_add_node(body, "SequenceInsert", "seq_in,v_out", "seq_out");
  tb_output(body, "c", KILN_BOOL);
  tb_output(body, "seq_out", KILN_FLOAT);
  tb_output(body, "v_out", KILN_FLOAT);
  tb_model *then = tb_sub("then"), *els = tb_sub("else");
  tb_add_node(then, "Add", "v_in,x", "sum"); /* v_in: one scope up; x: two */
  tb_output(then, "sum", KILN_FLOAT);
  tb_output(els, "v_in", KILN_FLOAT);
  tb_attr_graph(inner, "then_branch", then);
  tb_attr_graph(inner, "else_branch", els);
  tb_attr_graph(n, "body", body);
  return oh_load(b);
}

static void test_loop_sequence_nested(void) {
  kiln_model *m = loop_nested_model();
  if (!m) return;
  kiln_session *s;
  CHECK_OK(kiln_session_create(m, NULL, &s));
  float x[2] = {1, 10};
  for (int rep = 0; rep < 2; rep++)
    for (uint8_t flag = 0; flag < 2; flag++) {
      int64_t trips = 4;
      kiln_value vm = scalar_i64(&trips), vf = scalar_b(&flag), vx = val(KILN_FLOAT, 1, (int64_t[]){2}, x);
      const kiln_value *in[3] = {&vm, &vf, &vx}, *out[3];
      CHECK_OK(kiln_session_run(s, in, out));
      CHECK(out[0]->kind == KILN_VALUE_SEQUENCE && out[0]->count == 4);
      CHECK(*(const int64_t *)out[1]->tensor.data == 4);
      for (size_t k = 0; out[0]->kind == KILN_VALUE_SEQUENCE && k < out[0]->count; k++) {
        float f = flag ? (float)(k + 2) : 1; /* v doubles as x accumulates: x * (k + 2) */
        CHECK(floats_are(&out[0]->items[k], 2, (float[]){f, 10 * f}));
      }
      float f = flag ? 5 : 1;
      CHECK(floats_are(&out[2]->tensor, 2, (float[]){f, 10 * f}));
    }
  kiln_session_free(s);
  kiln_model_free(m);
}

/* Loop nodes fed wrong values: M of the wrong type, a non-bool condition output. */
static void test_loop_errors(void) {
  tb_model *b = tb_new(13);
  tb_input(b, "M", KILN_UNDEFINED, -1, NULL);
  tb_input(b, "y0", KILN_UNDEFINED, -1, NULL);
  tb_output(b, "y", KILN_FLOAT);
  tb_node *n = tb_add_node(b, "Loop", "M,,y0", "y");
  tb_model *body = tb_sub("body");
  tb_input(body, "i", KILN_INT64, 0, NULL);
  tb_input(body, "c", KILN_BOOL, 0, NULL);
  tb_input(body, "y_in", KILN_FLOAT, -1, NULL);
  tb_output(body, "y_in", KILN_FLOAT); /* the carried value as the condition */
  tb_output(body, "y_in", KILN_FLOAT);
  tb_attr_graph(n, "body", body);
  kiln_model *m = oh_load(b);
  if (!m) return;
  kiln_session *s;
  CHECK_OK(kiln_session_create(m, NULL, &s));
  float fm = 2, y0 = 0;
  kiln_value vm = val(KILN_FLOAT, 0, NULL, &fm), vy = val(KILN_FLOAT, 0, NULL, &y0);
  const kiln_value *in[2] = {&vm, &vy}, *out[1];
  CHECK_ERROR(kiln_session_run(s, in, out), KILN_INVALID_ARGUMENT, "node 0 (Loop): M (the trip count) must be an int64 tensor of one element");
  /* without a cond input the body's condition is ignored, so this runs */
  int64_t trips = 2;
  vm = scalar_i64(&trips);
  CHECK_OK(kiln_session_run(s, in, out));
  kiln_session_free(s);
  kiln_model_free(m);

  /* with a cond input, a float condition output is an error */
  b = tb_new(13);
  tb_input(b, "cond", KILN_BOOL, 0, NULL);
  tb_input(b, "y0", KILN_FLOAT, 0, NULL);
  tb_output(b, "y", KILN_FLOAT);
  n = tb_add_node(b, "Loop", ",cond,y0", "y");
  body = tb_sub("body");
  tb_input(body, "i", KILN_INT64, 0, NULL);
  tb_input(body, "c", KILN_BOOL, 0, NULL);
  tb_input(body, "y_in", KILN_FLOAT, -1, NULL);
  tb_output(body, "y_in", KILN_FLOAT);
  tb_output(body, "y_in", KILN_FLOAT);
  tb_attr_graph(n, "body", body);
  if (!(m = oh_load(b))) return;
  CHECK_OK(kiln_session_create(m, NULL, &s));
  uint8_t cond = 1;
  kiln_value vc = scalar_b(&cond);
  const kiln_value *in2[2] = {&vc, &vy};
  CHECK_ERROR(kiln_session_run(s, in2, out), KILN_INVALID_ARGUMENT,
              "node 0 (Loop): body, iteration 0: the body's condition output must be a bool tensor of one element, got float[]");
  kiln_session_free(s);
  kiln_model_free(m);

  /* a body with too few outputs */
  b = tb_new(13);
  tb_input(b, "y0", KILN_FLOAT, 0, NULL);
  tb_output(b, "y", KILN_FLOAT);
  tb_output(b, "ys", KILN_FLOAT);
  init_i64(b, "M", 2);
  n = tb_add_node(b, "Loop", "M,,y0", "y,ys");
  body = tb_sub("body");
  tb_input(body, "i", KILN_INT64, 0, NULL);
  tb_input(body, "c", KILN_BOOL, 0, NULL);
  tb_input(body, "y_in", KILN_FLOAT, -1, NULL);
  tb_output(body, "c", KILN_BOOL);
  tb_output(body, "y_in", KILN_FLOAT);
  tb_attr_graph(n, "body", body);
  if (!(m = oh_load(b))) return;
  CHECK_OK(kiln_session_create(m, NULL, &s));
  const kiln_value *in3[1] = {&vy}, *out2[2];
  CHECK_ERROR(kiln_session_run(s, in3, out2), KILN_INVALID_ARGUMENT, "node 0 (Loop): body has 2 outputs, the node needs 3");
  kiln_session_free(s);
  kiln_model_free(m);
}

/* ---------------------------------------------------------------- Scan */

/* sum, ys = Scan(sum0, x) { sum += x_t; scan sum } with the given axes and directions. */
static kiln_model *scan_model(int opset, int64_t in_axis, int64_t in_dir, int64_t out_axis, int64_t out_dir, int with_lens) {
  tb_model *b = tb_new(opset);
  if (with_lens) tb_input(b, "lens", KILN_INT64, 1, (int64_t[]){-1});
  tb_input(b, "sum0", KILN_FLOAT, -1, NULL);
  tb_input(b, "x", KILN_FLOAT, -1, NULL);
  tb_output(b, "sum", KILN_FLOAT);
  tb_output(b, "ys", KILN_FLOAT);
  tb_node *n = tb_add_node(b, "Scan", opset == 8 ? (with_lens ? "lens,sum0,x" : ",sum0,x") : "sum0,x", "sum,ys");
  tb_attr_int(n, "num_scan_inputs", 1);
  if (opset == 8) {
    tb_attr_ints(n, "directions", 1, &in_dir);
  } else {
    tb_attr_ints(n, "scan_input_axes", 1, &in_axis);
    tb_attr_ints(n, "scan_input_directions", 1, &in_dir);
    tb_attr_ints(n, "scan_output_axes", 1, &out_axis);
    tb_attr_ints(n, "scan_output_directions", 1, &out_dir);
  }
  tb_model *body = tb_sub("body");
  tb_input(body, "s_in", KILN_FLOAT, -1, NULL);
  tb_input(body, "x_t", KILN_FLOAT, -1, NULL);
  tb_add_node(body, "Add", "s_in,x_t", "s_out");
  tb_output(body, "s_out", KILN_FLOAT);
  tb_output(body, "s_out", KILN_FLOAT);
  tb_attr_graph(n, "body", body);
  return oh_load(b);
}

/* x is [R, C] = rows of values r * C + c; scanning axis `axis` of it with running sums. */
static void test_scan_axes(void) {
  const int64_t R = 3, C = 4;
  float x[12];
  for (int i = 0; i < 12; i++) x[i] = (float)(i + 1);
  for (int64_t axis = -2; axis < 2; axis++)
    for (int64_t in_dir = 0; in_dir < 2; in_dir++)
      for (int64_t out_axis = -2; out_axis < 2; out_axis++)
        for (int64_t out_dir = 0; out_dir < 2; out_dir++) {
          kiln_model *m = scan_model(16, axis, in_dir, out_axis, out_dir, 0);
          if (!m) return;
          kiln_session *s;
          CHECK_OK(kiln_session_create(m, NULL, &s));
          int a = axis < 0 ? (int)axis + 2 : (int)axis, oa = out_axis < 0 ? (int)out_axis + 2 : (int)out_axis;
          int64_t len = a == 0 ? R : C, width = a == 0 ? C : R;
          float sum0[4] = {0};
          kiln_value vs = val(KILN_FLOAT, 1, &width, sum0), vx = val(KILN_FLOAT, 2, (int64_t[]){R, C}, x);
          const kiln_value *in[2] = {&vs, &vx}, *out[2];
          CHECK_OK(kiln_session_run(s, in, out));
          /* the naive reference */
          float run[4] = {0}, ys[12];
          for (int64_t t = 0; t < len; t++) {
            int64_t at = in_dir ? len - 1 - t : t, pos = out_dir ? len - 1 - t : t;
            for (int64_t w = 0; w < width; w++) {
              run[w] += a == 0 ? x[at * C + w] : x[w * C + at];
              if (oa == 0) ys[pos * width + w] = run[w];
              else ys[w * len + pos] = run[w];
            }
          }
          CHECK(floats_are(&out[0]->tensor, (int)width, run));
          int64_t dims[2] = {oa == 0 ? len : width, oa == 0 ? width : len};
          CHECK(oh_has_shape(&out[1]->tensor, 2, dims) && floats_are(&out[1]->tensor, 12, ys));
          kiln_session_free(s);
          kiln_model_free(m);
        }
}

static void test_scan_errors(void) {
  kiln_model *m = scan_model(16, 0, 0, 0, 0, 0);
  if (!m) return;
  kiln_session *s;
  CHECK_OK(kiln_session_create(m, NULL, &s));
  float sum0[3] = {0}, x[6] = {0};
  kiln_value vs = val(KILN_FLOAT, 1, (int64_t[]){3}, sum0), vx = val(KILN_FLOAT, 2, (int64_t[]){3, 2}, x);
  const kiln_value *in[2] = {&vs, &vx}, *out[2];
  kiln_status st = kiln_session_run(s, in, out); /* the body's Add fails: its error comes with the context */
  CHECK(st && strstr(kiln_status_message(st), "node 0 (Scan): body, iteration 0: node 0 (Add): "));
  kiln_status_free(st);
  vx = val(KILN_FLOAT, 0, NULL, x);
  CHECK_ERROR(kiln_session_run(s, in, out), KILN_INVALID_ARGUMENT, "scan input 0 is a scalar");
  /* no iteration: the state passes through and the scan output is empty */
  vx = val(KILN_FLOAT, 2, (int64_t[]){0, 3}, x);
  CHECK_OK(kiln_session_run(s, in, out));
  CHECK(floats_are(&out[0]->tensor, 3, sum0) && kiln_tensor_numel(&out[1]->tensor) == 0 && out[1]->tensor.dims[0] == 0);
  kiln_session_free(s);
  kiln_model_free(m);

  tb_model *b = tb_new(16);
  tb_input(b, "x", KILN_FLOAT, -1, NULL);
  tb_output(b, "y", KILN_FLOAT);
  tb_node *n = tb_add_node(b, "Scan", "x", "y");
  tb_attr_int(n, "num_scan_inputs", 1);
  tb_attr_ints(n, "scan_input_directions", 1, (int64_t[]){2});
  tb_model *body = tb_sub("body");
  tb_input(body, "x_t", KILN_FLOAT, -1, NULL);
  tb_output(body, "x_t", KILN_FLOAT);
  tb_attr_graph(n, "body", body);
  CHECK_ERROR(tb_load(b, &m), KILN_INVALID_ARGUMENT, "scan_input_directions[0] is 2; directions are 0 (forward) or 1 (reverse)");
  tb_free(b);
}

/* Scan-8: batch entries of different lengths; steps past a length stay zero. */
static void test_scan8(void) {
  kiln_model *m = scan_model(8, 0, 1, 0, 0, 1);
  if (!m) return;
  kiln_session *s;
  CHECK_OK(kiln_session_create(m, NULL, &s));
  float sum0[4] = {0, 0, 100, 100}, x[12];
  for (int i = 0; i < 12; i++) x[i] = (float)(i + 1); /* [2 batch, 3 steps, 2] */
  int64_t lens[2] = {3, 1};
  kiln_value vl = val(KILN_INT64, 1, (int64_t[]){2}, lens), vs = val(KILN_FLOAT, 2, (int64_t[]){2, 2}, sum0),
             vx = val(KILN_FLOAT, 3, (int64_t[]){2, 3, 2}, x);
  const kiln_value *in[3] = {&vl, &vs, &vx}, *out[2];
  CHECK_OK(kiln_session_run(s, in, out));
  /* batch 0, reversed: steps (5,6), (3,4), (1,2); batch 1, one step: (7,8) */
  CHECK(floats_are(&out[0]->tensor, 4, (float[]){9, 12, 107, 108}));
  CHECK(oh_has_shape(&out[1]->tensor, 3, (int64_t[]){2, 3, 2}));
  CHECK(floats_are(&out[1]->tensor, 12, (float[]){5, 6, 8, 10, 9, 12, 107, 108, 0, 0, 0, 0}));
  lens[1] = 4;
  CHECK_ERROR(kiln_session_run(s, in, out), KILN_INVALID_ARGUMENT, "sequence_lens[1] is 4, outside 0..3");
  kiln_session_free(s);
  kiln_model_free(m);
}

/* ---------------------------------------------------------------- sequences and optionals */

/* Runs a model with no inputs and returns its outputs (valid until *s is freed). */
static kiln_status run_no_inputs(kiln_model *m, kiln_session **s, const kiln_value **out) {
  kiln_status st = kiln_session_create(m, NULL, s);
  return st ? st : kiln_session_run(*s, NULL, out);
}

static void test_sequence_ops(void) {
  tb_model *b = tb_new(16);
  float a[6] = {1, 2, 3, 4, 5, 6}, c[2] = {7, 8};
  init_f(b, "a", 2, (int64_t[]){3, 2}, a);
  init_f(b, "c", 2, (int64_t[]){1, 2}, c);
  init_i64(b, "zero", 0);
  init_i64(b, "minus1", -1);
  init_i64(b, "two", 2);
  tb_node *split = tb_add_node(b, "SplitToSequence", "a,two", "halves"); /* [2,2], [1,2] */
  tb_attr_int(split, "axis", 0);
  tb_add_node(b, "SequenceInsert", "halves,c,zero", "ins"); /* c, [2,2], [1,2] */
  tb_add_node(b, "SequenceErase", "ins,minus1", "erased");   /* c, [2,2] */
  tb_add_node(b, "SequenceAt", "erased,minus1", "at");       /* [2,2] */
  tb_add_node(b, "ConcatFromSequence", "ins", "cat");        /* [4,2]: c then a */
  tb_node *stack = tb_add_node(b, "SplitToSequence", "a", "rows");
  tb_attr_int(stack, "keepdims", 0);
  tb_node *st = tb_add_node(b, "ConcatFromSequence", "rows", "stacked"); /* [2,3] */
  tb_attr_int(st, "axis", -1);
  tb_attr_int(st, "new_axis", 1);
  tb_add_node(b, "SequenceLength", "erased", "len");
  tb_add_node(b, "Optional", "", "none");
  tb_add_node(b, "OptionalHasElement", "none", "has_none");
  tb_add_node(b, "Optional", "erased", "some");
  tb_add_node(b, "OptionalHasElement", "some", "has_some");
  tb_add_node(b, "OptionalGetElement", "some", "got");
  const char *outs[] = {"at", "cat", "stacked", "len", "has_none", "has_some", "got", "none"};
  for (int i = 0; i < 8; i++) tb_output(b, outs[i], KILN_FLOAT);
  kiln_model *m = oh_load(b);
  if (!m) return;
  kiln_session *s = NULL;
  const kiln_value *out[8];
  CHECK_OK(run_no_inputs(m, &s, out));
  if (s && out[0]) {
    CHECK(oh_has_shape(&out[0]->tensor, 2, (int64_t[]){2, 2}) && floats_are(&out[0]->tensor, 4, a));
    CHECK(oh_has_shape(&out[1]->tensor, 2, (int64_t[]){4, 2}) && floats_are(&out[1]->tensor, 8, (float[]){7, 8, 1, 2, 3, 4, 5, 6}));
    CHECK(oh_has_shape(&out[2]->tensor, 2, (int64_t[]){2, 3}) && floats_are(&out[2]->tensor, 6, (float[]){1, 3, 5, 2, 4, 6}));
    CHECK(*(const int64_t *)out[3]->tensor.data == 2);
    CHECK(*(const uint8_t *)out[4]->tensor.data == 0 && *(const uint8_t *)out[5]->tensor.data == 1);
    CHECK(out[6]->kind == KILN_VALUE_SEQUENCE && out[6]->count == 2 && floats_are(&out[6]->items[0], 2, c));
    CHECK(out[7]->kind == KILN_VALUE_NONE);
  }
  kiln_session_free(s);
  kiln_model_free(m);
}

/* A model running `op` on `inputs` among: seq = [p, q] (float [1] each), empty (a sequence),
 * none (an empty optional), p, q, dbl (a double scalar), five and zero (int64 scalars). */
static kiln_model *seq_model(const char *op, const char *inputs, const char *attr, int64_t attr_value) {
  tb_model *b = tb_new(16);
  init_f(b, "p", 1, (int64_t[]){1}, (float[]){1});
  init_f(b, "q", 1, (int64_t[]){1}, (float[]){2});
  init_i64(b, "five", 5);
  init_i64(b, "zero", 0);
  kiln_tensor d = {0};
  kiln_tensor_set_shape(&d, KILN_DOUBLE, 0, NULL);
  d.data = &(double){3};
  tb_initializer(b, "dbl", &d);
  tb_add_node(b, "SequenceConstruct", "p,q", "seq");
  tb_add_node(b, "SequenceEmpty", "", "empty");
  tb_add_node(b, "Optional", "", "none");
  tb_node *n = tb_add_node(b, op, inputs, "y");
  if (attr) tb_attr_int(n, attr, attr_value);
  tb_output(b, "y", KILN_FLOAT);
  return oh_load(b);
}

static void expect_error(kiln_model *m, kiln_code code, const char *text) {
  if (!m) return;
  kiln_session *s = NULL;
  const kiln_value *out[1];
  CHECK_ERROR(run_no_inputs(m, &s, out), code, text);
  kiln_session_free(s);
  kiln_model_free(m);
}

static void test_sequence_errors(void) {
  expect_error(seq_model("SequenceAt", "seq,five", NULL, 0), KILN_INVALID_ARGUMENT,
               "(SequenceAt): position 5 is out of range [-2, 1] for a sequence of 2 items");
  expect_error(seq_model("SequenceAt", "p,zero", NULL, 0), KILN_INVALID_ARGUMENT, "input 0 must be a sequence, got a tensor");
  expect_error(seq_model("SequenceAt", "seq,p", NULL, 0), KILN_INVALID_ARGUMENT, "position must be a scalar int32 or int64");
  expect_error(seq_model("SequenceInsert", "seq,dbl", NULL, 0), KILN_INVALID_ARGUMENT, "cannot insert a double tensor into a sequence of float");
  expect_error(seq_model("SequenceInsert", "seq,p,five", NULL, 0), KILN_INVALID_ARGUMENT, "position 5 is out of range [-2, 2]");
  expect_error(seq_model("SequenceErase", "empty", NULL, 0), KILN_INVALID_ARGUMENT, "cannot erase from an empty sequence");
  expect_error(seq_model("SequenceConstruct", "p,dbl", NULL, 0), KILN_INVALID_ARGUMENT, "input 1 has dtype double, input 0 has float");
  expect_error(seq_model("ConcatFromSequence", "empty", "axis", 0), KILN_INVALID_ARGUMENT, "cannot concatenate an empty sequence");
  expect_error(seq_model("ConcatFromSequence", "seq", "axis", 1), KILN_INVALID_ARGUMENT, "axis 1 is out of range for rank 1");
  expect_error(seq_model("SplitToSequence", "p,zero", NULL, 0), KILN_INVALID_ARGUMENT, "split size must be positive, got 0");
  expect_error(seq_model("OptionalGetElement", "none", NULL, 0), KILN_INVALID_ARGUMENT, "(OptionalGetElement): the optional input is empty");

  tb_model *b = tb_new(16);
  tb_output(b, "y", KILN_FLOAT);
  tb_attr_int(tb_add_node(b, "SequenceEmpty", "", "y"), "dtype", 99);
  kiln_model *m;
  CHECK_ERROR(tb_load(b, &m), KILN_INVALID_ARGUMENT, "node 0 (SequenceEmpty): dtype 99 is not a tensor element type");
  tb_free(b);
}

/* SplitToSequence with a scalar split larger than the axis: one short piece. */
static void test_split_scalar(void) {
  kiln_model *m = seq_model("SplitToSequence", "p,five", NULL, 0);
  if (!m) return;
  kiln_session *s = NULL;
  const kiln_value *out[1];
  CHECK_OK(run_no_inputs(m, &s, out));
  if (s) CHECK(out[0]->kind == KILN_VALUE_SEQUENCE && out[0]->count == 1 && floats_are(&out[0]->items[0], 1, (float[]){1}));
  kiln_session_free(s);
  kiln_model_free(m);
}

/* ys = SequenceMap(seq, t) { item + t }, and over an empty sequence. */
static void test_sequence_map(void) {
  for (int empty = 0; empty < 2; empty++) {
    tb_model *b = tb_new(17);
    init_f(b, "p", 1, (int64_t[]){2}, (float[]){1, 2});
    init_f(b, "q", 1, (int64_t[]){2}, (float[]){3, 4});
    init_f(b, "t", 1, (int64_t[]){2}, (float[]){10, 20});
    if (empty) {
      tb_node *e = tb_add_node(b, "SequenceEmpty", "", "seq");
      tb_attr_int(e, "dtype", KILN_FLOAT);
    } else {
      tb_add_node(b, "SequenceConstruct", "p,q", "seq");
    }
    tb_node *n = tb_add_node(b, "SequenceMap", "seq,t", "ys");
    tb_output(b, "ys", KILN_FLOAT);
    tb_model *body = tb_sub("body");
    tb_input(body, "item", KILN_FLOAT, -1, NULL);
    tb_input(body, "tt", KILN_FLOAT, -1, NULL);
    tb_add_node(body, "Add", "item,tt", "sum");
    body->graph.output = tb_grow(body->graph.output, &body->graph.n_output, sizeof *body->graph.output);
    body->graph.output[0] = tb_value_info("sum", KILN_DOUBLE, -1, NULL); /* declared: tells an empty result's dtype */
    tb_attr_graph(n, "body", body);
    kiln_model *m = oh_load(b);
    if (!m) return;
    kiln_session *s = NULL;
    const kiln_value *out[1];
    CHECK_OK(run_no_inputs(m, &s, out));
    if (s && empty) CHECK(out[0]->kind == KILN_VALUE_SEQUENCE && out[0]->count == 0 && out[0]->elem_dtype == KILN_DOUBLE);
    if (s && !empty) {
      CHECK(out[0]->kind == KILN_VALUE_SEQUENCE && out[0]->count == 2 && out[0]->elem_dtype == KILN_FLOAT);
      CHECK(floats_are(&out[0]->items[0], 2, (float[]){11, 22}) && floats_are(&out[0]->items[1], 2, (float[]){13, 24}));
    }
    kiln_session_free(s);
    kiln_model_free(m);
  }
}

TEST_MAIN(TEST(test_if), TEST(test_if_wrong_branch_outputs), TEST(test_loop), TEST(test_loop_passthrough_swap),
          TEST(test_loop_sequence_nested), TEST(test_loop_errors), TEST(test_scan_axes), TEST(test_scan_errors), TEST(test_scan8),
          TEST(test_sequence_ops), TEST(test_sequence_errors), TEST(test_split_scalar), TEST(test_sequence_map))
