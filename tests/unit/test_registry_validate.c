/* The validation gate: signature rules, the first-mismatch helper golden reports use, and whole
 * gate runs on small models written to a temporary repository (report contents, error paths). */
#include "kiln/registry.h"
#include "onnx_builder.h"
#include "registry/validate_internal.h"
#include "test.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- signatures */

typedef struct io_spec {
  const char *name;
  kiln_dtype dtype;
  int rank;
  int64_t dims[4];
} io_spec;

/* A model whose outputs are Identity copies of its first input (types as declared). */
static kiln_model *sig_model(const io_spec *in, int n_in, const io_spec *out, int n_out) {
  tb_model *b = tb_new(13);
  for (int i = 0; i < n_in; i++) tb_input(b, in[i].name, in[i].dtype, in[i].rank, in[i].dims);
  for (int i = 0; i < n_out; i++) {
    b->graph.output = tb_grow(b->graph.output, &b->graph.n_output, sizeof *b->graph.output);
    b->graph.output[b->graph.n_output - 1] = tb_value_info(out[i].name, out[i].dtype, out[i].rank, out[i].dims);
    tb_add_node(b, "Identity", in[0].name, out[i].name);
  }
  kiln_load_options lo = {.allow_unsupported = 1};
  void *buf;
  size_t len;
  tb_pack(b, &buf, &len);
  kiln_model *m = NULL;
  CHECK_OK(kiln_model_load_buffer(buf, len, &lo, &m));
  free(buf);
  tb_free(b);
  return m;
}

/* Lines of a diff array joined with '|'. */
static void joined(const cJSON *a, char *buf, size_t size) {
  buf[0] = 0;
  size_t n = 0;
  const cJSON *e;
  cJSON_ArrayForEach(e, a) {
    int w = snprintf(buf + n, size - n, "%s%s", n ? "|" : "", e->valuestring);
    if (w < 0 || (size_t)w >= size - n) break;
    n += (size_t)w;
  }
}

/* Compares prev and cand and checks the breaking and note lines exactly. */
static void expect_diff(const io_spec *pi, int npi, const io_spec *po, int npo, const io_spec *ci, int nci, const io_spec *co,
                        int nco, const char *breaking, const char *notes) {
  kiln_model *p = sig_model(pi, npi, po, npo), *c = sig_model(ci, nci, co, nco);
  kx_signature_diff d = {0};
  char b[2048], n[2048];
  if (p && c) {
    CHECK_OK(kx_validate_signature(p, c, &d));
    joined(d.breaking, b, sizeof b);
    joined(d.notes, n, sizeof n);
    if (strcmp(b, breaking) != 0 || strcmp(n, notes) != 0) {
      fprintf(stderr, "  breaking: '%s'\n  expected: '%s'\n  notes:    '%s'\n  expected: '%s'\n", b, breaking, n, notes);
      test_failures++;
    }
  }
  cJSON_Delete(d.breaking);
  cJSON_Delete(d.notes);
  kiln_model_free(p);
  kiln_model_free(c);
}

#define F KILN_FLOAT
static const io_spec X = {"x", F, 2, {-1, 4}}, Y = {"y", F, 2, {-1, 4}};

static void test_signature_same(void) { expect_diff(&X, 1, &Y, 1, &X, 1, &Y, 1, "", ""); }

static void test_signature_type_and_rank(void) {
  io_spec xi = {"x", KILN_INT64, 2, {-1, 4}}, x3 = {"x", F, 3, {-1, 4, 1}}, yd = {"y", KILN_DOUBLE, 2, {-1, 4}};
  expect_diff(&X, 1, &Y, 1, &xi, 1, &Y, 1, "input 'x': type float[N,4] -> int64[N,4]", "");
  expect_diff(&X, 1, &Y, 1, &x3, 1, &Y, 1, "input 'x': rank 2 -> 3 (float[N,4] -> float[N,4,1])", "");
  expect_diff(&X, 1, &Y, 1, &X, 1, &yd, 1, "output 'y': type float[N,4] -> double[N,4]", "");
}

static void test_signature_dimensions(void) {
  io_spec x5 = {"x", F, 2, {-1, 5}}, x8 = {"x", F, 2, {8, 4}}, xd = {"x", F, 2, {-1, -1}}, xu = {"x", F, -1, {0}};
  expect_diff(&X, 1, &Y, 1, &x5, 1, &Y, 1, "input 'x': dimension 1 4 -> 5", "");
  expect_diff(&X, 1, &Y, 1, &x8, 1, &Y, 1, "input 'x': dimension 0 dynamic -> fixed 8", "");
  expect_diff(&X, 1, &Y, 1, &xd, 1, &Y, 1, "", "input 'x': dimension 1 4 -> dynamic");
  expect_diff(&X, 1, &Y, 1, &xu, 1, &Y, 1, "", "input 'x': shape float[N,4] no longer declared");
  expect_diff(&xu, 1, &Y, 1, &X, 1, &Y, 1, "input 'x': shape now declared as float[N,4]", "");
}

static void test_signature_added_and_removed(void) {
  io_spec x2[2] = {X, {"mask", F, 2, {-1, 4}}}, y2[2] = {Y, {"probs", F, 2, {-1, 4}}}, renamed = {"features", F, 2, {-1, 4}};
  expect_diff(&X, 1, &Y, 1, x2, 2, &Y, 1, "new required input 'mask'", "");
  expect_diff(x2, 2, &Y, 1, &X, 1, &Y, 1, "input 'mask' removed (or renamed)", "");
  expect_diff(&X, 1, &Y, 1, &X, 1, y2, 2, "", "new output 'probs'");
  expect_diff(&X, 1, y2, 2, &X, 1, &Y, 1, "output 'probs' removed (or renamed)", "");
  expect_diff(&X, 1, &Y, 1, &renamed, 1, &Y, 1, "input 'x' removed (or renamed)|new required input 'features'", "");
}

/* ---------------------------------------------------------------- first mismatch */

static void test_first_mismatch(void) {
  kiln_tensor a = {0}, b = {0}, c = {0};
  CHECK_OK(kiln_tensor_alloc(&a, F, 1, (int64_t[]){5}));
  CHECK_OK(kiln_tensor_alloc(&b, F, 1, (int64_t[]){5}));
  CHECK_OK(kiln_tensor_alloc(&c, F, 1, (int64_t[]){4}));
  float *x = a.data, *y = b.data;
  for (int i = 0; i < 5; i++) x[i] = y[i] = (float)i;
  CHECK(kiln_tensor_first_mismatch(&a, &b, 1e-4, 1e-5) == -1);
  x[1] += 0.5f; /* small, first */
  x[3] += 2.0f; /* worst */
  CHECK(kiln_tensor_first_mismatch(&a, &b, 1e-4, 1e-5) == 1);
  CHECK_ERROR(kiln_tensor_compare(&a, &b, 1e-4, 1e-5), KILN_INVALID_ARGUMENT, "worst at flat index 3");
  CHECK(kiln_tensor_first_mismatch(&a, &b, 0, 1.0) == 3); /* 0.5 is within atol 1 */
  x[1] = y[1] = NAN;
  x[3] = 3;
  CHECK(kiln_tensor_first_mismatch(&a, &b, 1e-4, 1e-5) == -1); /* NaN matches NaN */
  x[0] = INFINITY;
  CHECK(kiln_tensor_first_mismatch(&a, &b, 1e-4, 1e-5) == 0);
  CHECK(kiln_tensor_first_mismatch(&a, &c, 1e-4, 1e-5) == -1); /* shapes differ: compare says so */
  kiln_tensor_release(&a);
  kiln_tensor_release(&b);
  kiln_tensor_release(&c);
}

/* ---------------------------------------------------------------- whole gate runs */

static char root[64];

static void path_of(char *buf, size_t size, const char *rel) { snprintf(buf, size, "%s/%s", root, rel); }

/* y = Relu(x), x float[N,dim] (dtype and dim vary per version). */
static void write_model(const char *rel_dir, kiln_dtype dtype, int64_t dim) {
  char dir[256], file[300];
  path_of(dir, sizeof dir, rel_dir);
  CHECK_OK(kiln_dir_create(dir));
  snprintf(file, sizeof file, "%s/model.onnx", dir);
  tb_model *b = tb_new(13);
  tb_input(b, "x", dtype, 2, (int64_t[]){-1, dim});
  tb_output(b, "y", dtype);
  tb_add_node(b, "Relu", "x", "y");
  void *buf;
  size_t len;
  tb_pack(b, &buf, &len);
  CHECK_OK(kiln_file_write_atomic(file, buf, len));
  free(buf);
  tb_free(b);
}

/* A golden case: x = [[-1, 2, -3, 4], [5, -6, 7, -8]], y = relu(x), with y[flat `bad`] off by 1. */
static void write_case(const char *rel_dir, int bad) {
  static const float xs[8] = {-1, 2, -3, 4, 5, -6, 7, -8}, ys[8] = {0, 2, 0, 4, 5, 0, 7, 0};
  char dir[256], file[300];
  path_of(dir, sizeof dir, rel_dir);
  CHECK_OK(kiln_dir_create(dir));
  kiln_tensor x = {0}, y = {0};
  CHECK_OK(kiln_tensor_alloc(&x, F, 2, (int64_t[]){2, 4}));
  CHECK_OK(kiln_tensor_alloc(&y, F, 2, (int64_t[]){2, 4}));
  memcpy(x.data, xs, sizeof xs);
  memcpy(y.data, ys, sizeof ys);
  if (bad >= 0) ((float *)y.data)[bad] += 1;
  snprintf(file, sizeof file, "%s/input_0.npy", dir);
  CHECK_OK(kiln_npy_write(file, &x));
  snprintf(file, sizeof file, "%s/output_0.npy", dir);
  CHECK_OK(kiln_npy_write(file, &y));
  kiln_tensor_release(&x);
  kiln_tensor_release(&y);
}

static void setup(void) {
  snprintf(root, sizeof root, "/tmp/kiln_validate_XXXXXX");
  CHECK(mkdtemp(root) != NULL);
  write_model("m/1", F, 4);
  write_model("m/2", F, 4);
  write_model("m/3", KILN_DOUBLE, 4);
  write_model("m/10", F, 4); /* not "previous" to 2 or 3: numbers, not names, order versions */
  write_case("golden/a", -1);
  write_case("golden/b", -1);
  write_case("bad/a", -1);
  write_case("bad/b", 6);
  write_case("bad/c", 1);
}

static void teardown(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  CHECK(system(cmd) == 0);
}

static cJSON *report_json(const kiln_gate_report *r, const char *error) {
  char *text = NULL;
  size_t len = 0;
  CHECK_OK(kiln_gate_report_json(r, error, &text, &len));
  cJSON *j = text ? cJSON_ParseWithLength(text, len) : NULL;
  CHECK(j != NULL);
  free(text);
  return j;
}

static const cJSON *check_of(const cJSON *report, const char *name) {
  const cJSON *c;
  cJSON_ArrayForEach(c, cJSON_GetObjectItem(report, "checks")) {
    if (strcmp(cJSON_GetObjectItem(c, "name")->valuestring, name) == 0) return c;
  }
  return NULL;
}

static const char *status_of(const cJSON *report, const char *name) {
  const cJSON *c = check_of(report, name);
  return c ? cJSON_GetObjectItem(c, "status")->valuestring : "(missing)";
}

static double number_of(const cJSON *report, const char *name, const char *key) {
  const cJSON *c = check_of(report, name);
  const cJSON *v = c ? cJSON_GetObjectItem(c, key) : NULL;
  return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static kiln_gate_options options(const char *version, const char *golden) {
  static char vdir[256], gdir[256];
  path_of(vdir, sizeof vdir, version);
  if (golden) path_of(gdir, sizeof gdir, golden);
  return (kiln_gate_options){.version_dir = vdir, .golden_dir = golden ? gdir : NULL, .rtol = 1e-4, .atol = 1e-5,
                             .min_accuracy = -1, .latency_runs = 5, .max_regression = 0.05};
}

static void test_gate_passes(void) {
  kiln_gate_options o = options("m/2", "golden");
  kiln_gate_report *r = NULL;
  CHECK_OK(kiln_gate_run(&o, &r));
  CHECK(r && kiln_gate_report_passed(r));
  CHECK(r && kiln_gate_report_count(r) == 7);
  cJSON *j = report_json(r, NULL);
  CHECK(cJSON_IsTrue(cJSON_GetObjectItem(j, "passed")));
  CHECK(strcmp(status_of(j, "load"), "pass") == 0);
  CHECK(strcmp(status_of(j, "manifest"), "skipped") == 0);
  CHECK(strcmp(status_of(j, "signature"), "pass") == 0);
  CHECK(number_of(j, "signature", "previous_version") == 1);
  CHECK(strcmp(status_of(j, "golden"), "pass") == 0);
  CHECK(number_of(j, "golden", "cases") == 2);
  CHECK(strcmp(status_of(j, "accuracy"), "skipped") == 0);
  CHECK(strcmp(status_of(j, "latency"), "pass") == 0);
  CHECK(number_of(j, "latency", "runs") == 5);
  CHECK(number_of(j, "latency", "p50_ms") <= number_of(j, "latency", "p99_ms"));
  CHECK(strcmp(status_of(j, "baseline"), "skipped") == 0);
  CHECK(cJSON_IsString(cJSON_GetObjectItem(j, "kiln_version")));
  cJSON_Delete(j);
  kiln_gate_report_free(r);
  /* version 1 has nothing before it */
  o = options("m/1/", NULL);
  CHECK_OK(kiln_gate_run(&o, &r));
  j = report_json(r, NULL);
  CHECK(strcmp(status_of(j, "signature"), "skipped") == 0);
  CHECK(strcmp(status_of(j, "golden"), "skipped") == 0);
  cJSON_Delete(j);
  kiln_gate_report_free(r);
}

static void test_gate_golden_mismatch(void) {
  kiln_gate_options o = options("m/2", "bad");
  kiln_gate_report *r = NULL;
  CHECK_OK(kiln_gate_run(&o, &r));
  CHECK(r && !kiln_gate_report_passed(r));
  cJSON *j = report_json(r, NULL);
  CHECK(cJSON_IsFalse(cJSON_GetObjectItem(j, "passed")));
  CHECK(strcmp(status_of(j, "golden"), "fail") == 0);
  CHECK(number_of(j, "golden", "failed_cases") == 2);
  const cJSON *mm = cJSON_GetObjectItem(check_of(j, "golden"), "mismatches");
  CHECK(cJSON_GetArraySize(mm) == 2);
  const cJSON *b = cJSON_GetArrayItem(mm, 0), *c = cJSON_GetArrayItem(mm, 1);
  CHECK(b && strcmp(cJSON_GetObjectItem(b, "case")->valuestring, "b") == 0);
  CHECK(b && strcmp(cJSON_GetObjectItem(b, "output")->valuestring, "y") == 0);
  CHECK(b && cJSON_GetObjectItem(b, "index")->valuedouble == 6);
  CHECK(b && cJSON_GetObjectItem(b, "expected")->valuedouble == 8); /* relu(7) + 1 */
  CHECK(b && cJSON_GetObjectItem(b, "got")->valuedouble == 7);
  CHECK(c && strcmp(cJSON_GetObjectItem(c, "case")->valuestring, "c") == 0 && cJSON_GetObjectItem(c, "index")->valuedouble == 1);
  const char *detail = cJSON_GetObjectItem(check_of(j, "golden"), "detail")->valuestring;
  CHECK(strstr(detail, "2 of 3 cases differ; first: case 'b': output 0 'y': first difference at flat index 6: got 7, expected 8"));
  cJSON_Delete(j);
  kiln_gate_report_free(r);
}

static void test_gate_signature_break(void) {
  kiln_gate_options o = options("m/3", NULL); /* double input after version 2's float */
  kiln_gate_report *r = NULL;
  CHECK_OK(kiln_gate_run(&o, &r));
  cJSON *j = report_json(r, NULL);
  CHECK(strcmp(status_of(j, "signature"), "fail") == 0);
  CHECK(number_of(j, "signature", "previous_version") == 2);
  const char *detail = cJSON_GetObjectItem(check_of(j, "signature"), "detail")->valuestring;
  CHECK(strstr(detail, "breaking change against previous version 2: input 'x': type float[N,4] -> double[N,4] (and 1 more)"));
  cJSON_Delete(j);
  kiln_gate_report_free(r);
  /* 10 follows 3: the same break, found by number */
  o = options("m/10", NULL);
  CHECK_OK(kiln_gate_run(&o, &r));
  j = report_json(r, NULL);
  CHECK(number_of(j, "signature", "previous_version") == 3);
  CHECK(strcmp(status_of(j, "signature"), "fail") == 0);
  cJSON_Delete(j);
  kiln_gate_report_free(r);
}

/* A fake evaluation: version folders ending in "2" score 0.80, others 0.90. */
static kiln_status fake_accuracy(void *ctx, const char *dir, double *accuracy, int64_t *records) {
  (*(int *)ctx)++;
  *accuracy = dir[strlen(dir) - 1] == '2' ? 0.80 : 0.90;
  *records = 100;
  return NULL;
}

static kiln_status failing_accuracy(void *ctx, const char *dir, double *accuracy, int64_t *records) {
  (void)ctx, (void)dir, (void)accuracy, (void)records;
  return kiln_error(KILN_INVALID_ARGUMENT, "the data has no feature 'label'");
}

static void test_gate_accuracy_and_baseline(void) {
  char base[256];
  path_of(base, sizeof base, "m/1");
  int calls = 0;
  kiln_gate_options o = options("m/2", NULL);
  o.accuracy = fake_accuracy;
  o.accuracy_ctx = &calls;
  o.min_accuracy = 0.85;
  o.latency_runs = 0;
  kiln_gate_report *r = NULL;
  CHECK_OK(kiln_gate_run(&o, &r));
  cJSON *j = report_json(r, NULL);
  CHECK(strcmp(status_of(j, "accuracy"), "fail") == 0);
  CHECK(number_of(j, "accuracy", "accuracy") == 0.80);
  CHECK(strcmp(status_of(j, "latency"), "skipped") == 0);
  cJSON_Delete(j);
  kiln_gate_report_free(r);
  /* baseline 0.90 * (1 - 0.05) = 0.855 > 0.80: a regression; with 0.2 the floor is 0.72 */
  o.min_accuracy = 0.5;
  o.baseline_dir = base;
  calls = 0;
  CHECK_OK(kiln_gate_run(&o, &r));
  j = report_json(r, NULL);
  CHECK(calls == 2);
  CHECK(strcmp(status_of(j, "accuracy"), "pass") == 0);
  CHECK(strcmp(status_of(j, "baseline"), "fail") == 0);
  CHECK(fabs(number_of(j, "baseline", "accuracy_floor") - 0.855) < 1e-12);
  CHECK(strcmp(status_of(j, "signature"), "pass") == 0);
  CHECK(strstr(cJSON_GetObjectItem(check_of(j, "signature"), "detail")->valuestring, "baseline"));
  cJSON_Delete(j);
  kiln_gate_report_free(r);
  o.max_regression = 0.2;
  CHECK_OK(kiln_gate_run(&o, &r));
  CHECK(r && kiln_gate_report_passed(r));
  kiln_gate_report_free(r);
  /* an evaluation that fails is a failed check, not an error */
  o.accuracy = failing_accuracy;
  CHECK_OK(kiln_gate_run(&o, &r));
  j = report_json(r, NULL);
  CHECK(strcmp(status_of(j, "accuracy"), "fail") == 0);
  CHECK(strstr(cJSON_GetObjectItem(check_of(j, "accuracy"), "detail")->valuestring, "no feature 'label'"));
  CHECK(strcmp(status_of(j, "baseline"), "skipped") == 0);
  cJSON_Delete(j);
  kiln_gate_report_free(r);
}

static void test_gate_load_failure(void) {
  char file[256];
  path_of(file, sizeof file, "broken/4");
  CHECK_OK(kiln_dir_create(file));
  path_of(file, sizeof file, "broken/4/model.onnx");
  CHECK_OK(kiln_file_write_atomic(file, "not a model", 11));
  kiln_gate_options o = options("broken/4", "golden");
  kiln_gate_report *r = NULL;
  CHECK_OK(kiln_gate_run(&o, &r));
  cJSON *j = report_json(r, NULL);
  CHECK(strcmp(status_of(j, "load"), "fail") == 0);
  CHECK(strcmp(status_of(j, "golden"), "skipped") == 0);
  CHECK(strstr(cJSON_GetObjectItem(check_of(j, "golden"), "detail")->valuestring, "did not load"));
  cJSON_Delete(j);
  kiln_gate_report_free(r);
}

static void test_gate_errors(void) {
  kiln_gate_report *r = NULL;
  kiln_gate_options o = options("m/99", NULL);
  CHECK_ERROR(kiln_gate_run(&o, &r), KILN_NOT_FOUND, "m/99: not a folder");
  cJSON *j = report_json(r, "m/99: not a folder");
  CHECK(cJSON_IsFalse(cJSON_GetObjectItem(j, "passed")));
  CHECK(strcmp(cJSON_GetObjectItem(j, "error")->valuestring, "m/99: not a folder") == 0);
  CHECK(strstr(cJSON_GetObjectItem(check_of(j, "load"), "detail")->valuestring, "not run"));
  cJSON_Delete(j);
  kiln_gate_report_free(r);
  /* a report before there was one */
  j = report_json(NULL, "bad flag");
  CHECK(cJSON_IsNull(cJSON_GetObjectItem(j, "version_dir")) && cJSON_GetArraySize(cJSON_GetObjectItem(j, "checks")) == 0);
  cJSON_Delete(j);
  o = options("m/2", "missing");
  CHECK_ERROR(kiln_gate_run(&o, &r), KILN_NOT_FOUND, "golden folder");
  kiln_gate_report_free(r);
  o = options("m/2", "m"); /* sub-folders, but no input files in them */
  CHECK_ERROR(kiln_gate_run(&o, &r), KILN_NOT_FOUND, "no input_0.npy or input_0.pb for the model's input 'x'");
  kiln_gate_report_free(r);
  char empty[256];
  path_of(empty, sizeof empty, "empty");
  CHECK_OK(kiln_dir_create(empty));
  o = options("m/2", "empty");
  CHECK_ERROR(kiln_gate_run(&o, &r), KILN_NOT_FOUND, "holds no cases");
  kiln_gate_report_free(r);
  o = options("m/2", NULL);
  o.min_accuracy = 0.5;
  CHECK_ERROR(kiln_gate_run(&o, &r), KILN_INVALID_ARGUMENT, "needs evaluation data");
  kiln_gate_report_free(r);
  o = options("m/2", NULL);
  o.max_regression = 1.5;
  CHECK_ERROR(kiln_gate_run(&o, &r), KILN_INVALID_ARGUMENT, "fraction");
  kiln_gate_report_free(r);
  o = options("m/2", NULL);
  o.latency_runs = 0;
  o.max_latency_p99_ms = 1;
  CHECK_ERROR(kiln_gate_run(&o, &r), KILN_INVALID_ARGUMENT, "needs latency runs");
  kiln_gate_report_free(r);
  char base[256];
  path_of(base, sizeof base, "broken/4");
  o = options("m/2", NULL);
  o.baseline_dir = base;
  CHECK_ERROR(kiln_gate_run(&o, &r), KILN_INVALID_ARGUMENT, "baseline: ");
  kiln_gate_report_free(r);
}

static void test_gate_setup(void) { setup(); }
static void test_gate_teardown(void) { teardown(); }

TEST_MAIN(TEST(test_signature_same), TEST(test_signature_type_and_rank), TEST(test_signature_dimensions),
          TEST(test_signature_added_and_removed), TEST(test_first_mismatch), TEST(test_gate_setup), TEST(test_gate_passes),
          TEST(test_gate_golden_mismatch), TEST(test_gate_signature_break), TEST(test_gate_accuracy_and_baseline),
          TEST(test_gate_load_failure), TEST(test_gate_errors), TEST(test_gate_teardown))
