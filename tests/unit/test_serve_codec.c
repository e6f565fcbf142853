/* The REST payload codecs: TF Serving predict (row and columnar) and KServe V2 infer (JSON and
 * binary), decoded against hand-built signatures and encoded back, every error class, and the
 * metadata documents. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <unistd.h>

#include "serve/codec.h"
#include "test.h"

/* ------------------------------------------------------------------ signatures */

static kiln_value_info vi(const char *name, kiln_dtype dtype, int rank, int64_t d0, int64_t d1) {
  kiln_value_info v;
  memset(&v, 0, sizeof v);
  v.name = name;
  v.kind = KILN_VALUE_TENSOR;
  v.dtype = dtype;
  v.rank = rank;
  if (rank > 0) v.dims[0] = d0;
  if (rank > 1) v.dims[1] = d1;
  return v;
}

static kx_signature sig_of(kiln_value_info *in, int ni, kiln_value_info *out, int no) {
  kx_signature s = {ni, in, no, out};
  return s;
}

/* x float [-1,3] + mask int64 [-1] -> y float [-1,3], z int64 [-1] */
static kiln_value_info two_in[2], two_out[2];
static kx_signature two_sig(void) {
  two_in[0] = vi("x", KILN_FLOAT, 2, -1, 3);
  two_in[1] = vi("mask", KILN_INT64, 1, -1, 0);
  two_out[0] = vi("y", KILN_FLOAT, 2, -1, 3);
  two_out[1] = vi("z", KILN_INT64, 1, -1, 0);
  return sig_of(two_in, 2, two_out, 2);
}

static kiln_value_info one_in[1], one_out[1];
static kx_signature one_sig(kiln_dtype dtype, int rank, int64_t d0, int64_t d1) {
  one_in[0] = vi("x", dtype, rank, d0, d1);
  one_out[0] = vi("y", dtype, rank, d0, d1);
  return sig_of(one_in, 1, one_out, 1);
}

static kiln_status tfs(const kx_signature *s, const char *body, kiln_tensor *in, int *columnar) {
  return kx_tfs_decode_predict(s, body, strlen(body), in, columnar);
}

static kiln_status v2(const kx_signature *s, const char *body, kiln_tensor *in, kx_v2_request *req) {
  return kx_v2_decode_infer(s, body, strlen(body), -1, in, req);
}

static int dims_are(const kiln_tensor *t, int rank, int64_t d0, int64_t d1) {
  return t->rank == rank && (rank < 1 || t->dims[0] == d0) && (rank < 2 || t->dims[1] == d1);
}

static void release(kiln_tensor *t, int n) {
  for (int i = 0; i < n; i++) kiln_tensor_release(&t[i]);
}

/* ------------------------------------------------------------------ TF Serving decode */

static void test_tfs_row_single(void) {
  kx_signature s = one_sig(KILN_FLOAT, 2, -1, 3);
  kiln_tensor in[1];
  int columnar = -1;
  CHECK_OK(tfs(&s, "{\"signature_name\":\"serving_default\",\"instances\":[[1,2,3],[4,5.5,-6e-3]]}", in, &columnar));
  CHECK(columnar == 0);
  CHECK(in[0].dtype == KILN_FLOAT && dims_are(&in[0], 2, 2, 3));
  const float *f = in[0].data;
  CHECK(f[0] == 1 && f[2] == 3 && f[4] == 5.5f && f[5] == -6e-3f);
  release(in, 1);
  /* the named form works for a single input too */
  CHECK_OK(tfs(&s, "{\"instances\":[{\"x\":[1,2,3]}]}", in, &columnar));
  CHECK(dims_are(&in[0], 2, 1, 3) && ((float *)in[0].data)[1] == 2);
  release(in, 1);
}

static void test_tfs_row_multi(void) {
  kx_signature s = two_sig();
  kiln_tensor in[2];
  int columnar = -1;
  CHECK_OK(tfs(&s, "{\"instances\":[{\"x\":[1,2,3],\"mask\":1},{\"mask\":0,\"x\":[4,5,6]}]}", in, &columnar));
  CHECK(columnar == 0);
  CHECK(dims_are(&in[0], 2, 2, 3) && dims_are(&in[1], 1, 2, 0));
  CHECK(in[1].dtype == KILN_INT64 && ((int64_t *)in[1].data)[0] == 1 && ((int64_t *)in[1].data)[1] == 0);
  CHECK(((float *)in[0].data)[5] == 6);
  release(in, 2);
}

static void test_tfs_columnar(void) {
  kx_signature s = one_sig(KILN_FLOAT, 2, -1, 3);
  kiln_tensor in[2];
  int columnar = -1;
  CHECK_OK(tfs(&s, "{\"inputs\":[[1,2,3]]}", in, &columnar));
  CHECK(columnar == 1 && dims_are(&in[0], 2, 1, 3));
  release(in, 1);
  CHECK_OK(tfs(&s, "{\"inputs\":{\"x\":[[1,2,3],[4,5,6]]}}", in, &columnar));
  CHECK(columnar == 1 && dims_are(&in[0], 2, 2, 3) && ((float *)in[0].data)[3] == 4);
  release(in, 1);
  /* columnar inputs may have different batch sizes */
  kx_signature t = two_sig();
  CHECK_OK(tfs(&t, "{\"inputs\":{\"mask\":[7,8,9],\"x\":[[1,2,3]]}}", in, &columnar));
  CHECK(dims_are(&in[0], 2, 1, 3) && dims_are(&in[1], 1, 3, 0) && ((int64_t *)in[1].data)[2] == 9);
  release(in, 2);
  /* an empty batch */
  CHECK_OK(tfs(&t, "{\"inputs\":{\"mask\":[],\"x\":[]}}", in, &columnar));
  CHECK(kiln_tensor_numel(&in[1]) == 0 && in[1].rank == 1);
  release(in, 2);
  /* a scalar input in the columnar format */
  kx_signature sc = one_sig(KILN_INT32, 0, 0, 0);
  CHECK_OK(tfs(&sc, "{\"inputs\":42}", in, &columnar));
  CHECK(in[0].rank == 0 && ((int32_t *)in[0].data)[0] == 42);
  release(in, 1);
}

static void test_tfs_dtypes(void) {
  kiln_tensor in[1];
  int c;
  kx_signature s = one_sig(KILN_BOOL, 1, -1, 0);
  CHECK_OK(tfs(&s, "{\"instances\":[true,false,1,0]}", in, &c));
  CHECK(in[0].dtype == KILN_BOOL && !memcmp(in[0].data, "\1\0\1\0", 4));
  release(in, 1);
  s = one_sig(KILN_STRING, 1, -1, 0);
  CHECK_OK(tfs(&s, "{\"instances\":[\"a\\\"b\",\"\\u00e9\"]}", in, &c));
  CHECK(!strcmp(((char **)in[0].data)[0], "a\"b") && !strcmp(((char **)in[0].data)[1], "\xc3\xa9"));
  release(in, 1);
  s = one_sig(KILN_UINT8, 1, -1, 0);
  CHECK_OK(tfs(&s, "{\"inputs\":[0,255,7.0]}", in, &c));
  CHECK(!memcmp(in[0].data, "\0\xff\7", 3));
  release(in, 1);
  s = one_sig(KILN_FLOAT16, 1, -1, 0);
  CHECK_OK(tfs(&s, "{\"inputs\":[0.5,-2,65504]}", in, &c));
  CHECK(((uint16_t *)in[0].data)[0] == kiln_float_to_half(0.5f) && ((uint16_t *)in[0].data)[2] == 0x7bff);
  release(in, 1);
  s = one_sig(KILN_BFLOAT16, 1, -1, 0);
  CHECK_OK(tfs(&s, "{\"inputs\":[1.5]}", in, &c));
  CHECK(((uint16_t *)in[0].data)[0] == kiln_float_to_bfloat16(1.5f));
  release(in, 1);
  s = one_sig(KILN_DOUBLE, 1, -1, 0);
  CHECK_OK(tfs(&s, "{\"inputs\":[0.1]}", in, &c));
  CHECK(((double *)in[0].data)[0] == 0.1);
  release(in, 1);
  s = one_sig(KILN_INT64, 1, -1, 0);
  CHECK_OK(tfs(&s, "{\"inputs\":[-9007199254740992,9007199254740992]}", in, &c));
  CHECK(((int64_t *)in[0].data)[0] == -9007199254740992LL);
  release(in, 1);
  /* unknown rank takes any shape; an undeclared dtype decodes as float */
  s = one_sig(KILN_UNDEFINED, -1, 0, 0);
  CHECK_OK(tfs(&s, "{\"instances\":[[[1],[2]],[[3],[4]]]}", in, &c));
  CHECK(in[0].dtype == KILN_FLOAT && in[0].rank == 3 && in[0].dims[1] == 2 && in[0].dims[2] == 1);
  release(in, 1);
  CHECK_OK(tfs(&s, "{\"inputs\":2.5}", in, &c));
  CHECK(in[0].rank == 0 && ((float *)in[0].data)[0] == 2.5f);
  release(in, 1);
}

/* A body of `rows` rows of `cols` zeros for input x. */
static char *rows_body(const char *key, int rows, int cols) {
  kx_buf b = {0};
  kx_buf_printf(&b, "{\"%s\":[", key);
  for (int r = 0; r < rows; r++) {
    kx_buf_puts(&b, r ? ",[" : "[");
    for (int i = 0; i < cols; i++) kx_buf_puts(&b, i ? ",0" : "0");
    kx_buf_putc(&b, ']');
  }
  kx_buf_puts(&b, "]}");
  return kx_buf_take(&b, NULL);
}

static void test_tfs_errors(void) {
  kiln_tensor in[2];
  int c;
  kx_signature s = one_sig(KILN_FLOAT, 2, -1, 784);
  char *body = rows_body("instances", 2, 783);
  CHECK_ERROR(tfs(&s, body, in, &c), KILN_INVALID_ARGUMENT, "input 'x': expected shape [-1,784], got [2,783]");
  free(body);
  CHECK_ERROR(tfs(&s, "{\"instances\":[[1,2]", in, &c), KILN_INVALID_ARGUMENT, "invalid JSON at byte");
  CHECK_ERROR(tfs(&s, "{\"inputs\":[1]} x", in, &c), KILN_INVALID_ARGUMENT, "invalid JSON at byte 15");
  CHECK_ERROR(tfs(&s, "[1]", in, &c), KILN_INVALID_ARGUMENT, "must be a JSON object");
  CHECK_ERROR(tfs(&s, "{}", in, &c), KILN_INVALID_ARGUMENT, "neither \"instances\" nor \"inputs\"");
  CHECK_ERROR(tfs(&s, "{\"inputs\":[],\"instances\":[]}", in, &c), KILN_INVALID_ARGUMENT, "both");
  CHECK_ERROR(tfs(&s, "{\"instances\":[]}", in, &c), KILN_INVALID_ARGUMENT, "\"instances\" is empty");
  CHECK_ERROR(tfs(&s, "{\"signature_name\":\"other\",\"inputs\":[]}", in, &c), KILN_NOT_FOUND, "signature 'other'");

  s = one_sig(KILN_FLOAT, 2, -1, 3);
  CHECK_ERROR(tfs(&s, "{\"instances\":[[1,2,3],[4,5,\"a\"]]}", in, &c), KILN_INVALID_ARGUMENT,
              "input 'x': element 5 is a string, expected a number (float)");
  CHECK_ERROR(tfs(&s, "{\"instances\":[[1,2,3],[4,5,true]]}", in, &c), KILN_INVALID_ARGUMENT,
              "element 5 is a boolean, expected a number (float)");
  CHECK_ERROR(tfs(&s, "{\"instances\":[[1,2,3],[4,5,null]]}", in, &c), KILN_INVALID_ARGUMENT, "element 5 is null");
  CHECK_ERROR(tfs(&s, "{\"instances\":[[1,2,3],[4,5]]}", in, &c), KILN_INVALID_ARGUMENT,
              "input 'x': ragged list at dimension 1 (row 1 has 2 elements, row 0 has 3)");
  CHECK_ERROR(tfs(&s, "{\"inputs\":[[1,2,3],[4,5,6,7]]}", in, &c), KILN_INVALID_ARGUMENT,
              "ragged list at dimension 1 (row 1 has 4 elements, row 0 has 3)");
  CHECK_ERROR(tfs(&s, "{\"inputs\":[[1,2,3],4]}", in, &c), KILN_INVALID_ARGUMENT,
              "ragged list at dimension 1 (row 1 is a number, row 0 is a list of 3 elements)");
  CHECK_ERROR(tfs(&s, "{\"inputs\":[[1,2,3],[4,[5],6]]}", in, &c), KILN_INVALID_ARGUMENT,
              "element 4 is a list, expected a number (float)");
  CHECK_ERROR(tfs(&s, "{\"inputs\":[1,2,3]}", in, &c), KILN_INVALID_ARGUMENT, "expected shape [-1,3], got [3]");
  CHECK_ERROR(tfs(&s, "{\"instances\":[[1,2,3],{\"x\":[1,2,3]}]}", in, &c), KILN_INVALID_ARGUMENT,
              "row 1 is an object");
  CHECK_ERROR(tfs(&s, "{\"instances\":[{\"x\":[1,2,3]},[1,2,3]]}", in, &c), KILN_INVALID_ARGUMENT,
              "instance 1 is a list");
  /* a first row far longer than the rest: the shape would hold more elements than the body has
   * bytes, so it is reported as ragged without allocating that shape */
  kx_signature u = one_sig(KILN_FLOAT, -1, 0, 0);
  body = rows_body("inputs", 1, 3000);
  size_t l = strlen(body);
  body[l - 2] = '\0';
  kx_buf b = {0};
  kx_buf_puts(&b, body);
  kx_buf_puts(&b, ",[0],[0],[0],[0]]}");
  CHECK_ERROR(tfs(&u, b.data, in, &c), KILN_INVALID_ARGUMENT,
              "ragged list at dimension 1 (row 1 has 1 elements, row 0 has 3000)");
  kx_buf_free(&b);
  free(body);
  CHECK_ERROR(tfs(&u, "{\"inputs\":[[[[[[[[[1]]]]]]]]]}", in, &c), KILN_INVALID_ARGUMENT, "nested more than 8");
  CHECK_ERROR(tfs(&u, "{\"instances\":[[[[[[[[[1]]]]]]]]]}", in, &c), KILN_INVALID_ARGUMENT, "nested more than 7");

  kx_signature t = two_sig();
  CHECK_ERROR(tfs(&t, "{\"instances\":[{\"x\":[1,2,3],\"mask\":1,\"foo\":2}]}", in, &c), KILN_INVALID_ARGUMENT,
              "unknown input 'foo' (the model's inputs: x, mask)");
  CHECK_ERROR(tfs(&t, "{\"instances\":[{\"x\":[1,2,3],\"mask\":1},{\"x\":[1,2,3]}]}", in, &c),
              KILN_INVALID_ARGUMENT, "instance 1: missing input 'mask'");
  CHECK_ERROR(tfs(&t, "{\"inputs\":{\"x\":[[1,2,3]]}}", in, &c), KILN_INVALID_ARGUMENT, "missing input 'mask'");
  CHECK_ERROR(tfs(&t, "{\"inputs\":{\"x\":[[1,2,3]],\"mask\":[1],\"x\":[]}}", in, &c), KILN_INVALID_ARGUMENT,
              "input 'x' is given twice");
  CHECK_ERROR(tfs(&t, "{\"inputs\":[[1,2,3]]}", in, &c), KILN_INVALID_ARGUMENT, "must be an object naming them");
  CHECK_ERROR(tfs(&t, "{\"instances\":[[1,2,3]]}", in, &c), KILN_INVALID_ARGUMENT, "each instance must be an object");
  CHECK_ERROR(tfs(&t, "{\"instances\":[{\"x\":[1,2,3],\"mask\":1.5}]}", in, &c), KILN_INVALID_ARGUMENT,
              "input 'mask': element 0 is 1.5, expected an integer (int64)");
  CHECK_ERROR(tfs(&t, "{\"instances\":[{\"x\":[1,2,3],\"mask\":1e300}]}", in, &c), KILN_INVALID_ARGUMENT,
              "out of range for int64");
  CHECK_ERROR(tfs(&t, "{\"instances\":[{\"x\":[1,2,3],\"mask\":9007199254740994}]}", in, &c), KILN_INVALID_ARGUMENT,
              "exactly up to 2^53");
  /* x decoded fine before mask failed: nothing may be left allocated (ASan checks) */
  CHECK_ERROR(tfs(&t, "{\"instances\":[{\"x\":[1,2,3],\"mask\":[1]}]}", in, &c), KILN_INVALID_ARGUMENT,
              "input 'mask': expected shape [-1], got [1,1]");
  CHECK(in[0].data == NULL && in[1].data == NULL);

  s = one_sig(KILN_UINT8, 1, -1, 0);
  CHECK_ERROR(tfs(&s, "{\"inputs\":[1,300]}", in, &c), KILN_INVALID_ARGUMENT,
              "input 'x': element 1 is 300, out of range for uint8 (0..255)");
  CHECK_ERROR(tfs(&s, "{\"inputs\":[-1]}", in, &c), KILN_INVALID_ARGUMENT, "element 0 is -1, out of range for uint8");
  s = one_sig(KILN_INT32, 1, -1, 0);
  CHECK_ERROR(tfs(&s, "{\"inputs\":[1.5]}", in, &c), KILN_INVALID_ARGUMENT, "element 0 is 1.5, expected an integer (int32)");
  CHECK_ERROR(tfs(&s, "{\"inputs\":[2147483648]}", in, &c), KILN_INVALID_ARGUMENT, "out of range for int32");
  s = one_sig(KILN_FLOAT, 1, -1, 0);
  CHECK_ERROR(tfs(&s, "{\"inputs\":[1e39]}", in, &c), KILN_INVALID_ARGUMENT, "element 0 is 1e+39, out of range for float");
  s = one_sig(KILN_FLOAT16, 1, -1, 0);
  CHECK_ERROR(tfs(&s, "{\"inputs\":[70000]}", in, &c), KILN_INVALID_ARGUMENT, "out of range for float16");
  s = one_sig(KILN_BOOL, 1, -1, 0);
  CHECK_ERROR(tfs(&s, "{\"inputs\":[true,2]}", in, &c), KILN_INVALID_ARGUMENT, "element 1 is 2, expected a boolean or 0/1");
  CHECK_ERROR(tfs(&s, "{\"inputs\":[\"true\"]}", in, &c), KILN_INVALID_ARGUMENT, "element 0 is a string, expected a boolean");
  s = one_sig(KILN_STRING, 1, -1, 0);
  CHECK_ERROR(tfs(&s, "{\"inputs\":[\"a\",1]}", in, &c), KILN_INVALID_ARGUMENT, "element 1 is a number, expected a string");
  CHECK_ERROR(tfs(&s, "{\"instances\":[{\"b64\":\"aGk=\"}]}", in, &c), KILN_UNIMPLEMENTED, "not supported");
  CHECK_ERROR(tfs(&s, "{\"inputs\":[\"a\",{\"b64\":\"aGk=\"}]}", in, &c), KILN_UNIMPLEMENTED, "not supported");
  s = one_sig(KILN_FLOAT, 0, 0, 0);
  CHECK_ERROR(tfs(&s, "{\"instances\":[1,2]}", in, &c), KILN_INVALID_ARGUMENT, "scalar (rank 0)");
  s = one_sig(KILN_COMPLEX64, 1, -1, 0);
  CHECK_ERROR(tfs(&s, "{\"inputs\":[1]}", in, &c), KILN_UNIMPLEMENTED, "cannot carry");
  s = one_sig(KILN_FLOAT, 2, 2, 3);
  CHECK_ERROR(tfs(&s, "{\"instances\":[[1,2,3]]}", in, &c), KILN_INVALID_ARGUMENT, "expected shape [2,3], got [1,3]");
}

/* ------------------------------------------------------------------ TF Serving encode */

static kiln_tensor view(kiln_dtype dtype, int rank, int64_t d0, int64_t d1, void *data) {
  kiln_tensor t;
  int64_t dims[2] = {d0, d1};
  memset(&t, 0, sizeof t);
  kiln_status s = kiln_tensor_set_shape(&t, dtype, rank, dims);
  CHECK(s == NULL);
  kiln_status_free(s);
  t.data = data;
  return t;
}

static void check_tfs_text(const kx_signature *s, const kiln_tensor *const *out, int columnar, const char *want) {
  kx_buf b = {0};
  CHECK_OK(kx_tfs_encode_predict(s, out, columnar, &b));
  if (!b.data || strcmp(b.data, want)) {
    fprintf(stderr, "encoded %s\n   wanted %s\n", b.data ? b.data : "(null)", want);
    test_failures++;
  }
  kx_buf_free(&b);
}

static void test_tfs_encode(void) {
  float yv[4] = {1, 0.5f, NAN, -INFINITY};
  kiln_tensor y = view(KILN_FLOAT, 2, 2, 2, yv);
  const kiln_tensor *out1[1] = {&y};
  kx_signature s = one_sig(KILN_FLOAT, 2, -1, 2);
  check_tfs_text(&s, out1, 1, "{\"outputs\":[[1,0.5],[NaN,-Infinity]]}");
  check_tfs_text(&s, out1, 0, "{\"predictions\":[[1,0.5],[NaN,-Infinity]]}");

  float y2[3] = {0.1f, 1e30f, INFINITY};
  int64_t z2[3] = {INT64_MIN, INT64_MAX, 0};
  kiln_tensor ty = view(KILN_FLOAT, 1, 3, 0, y2), tz = view(KILN_INT64, 1, 3, 0, z2);
  const kiln_tensor *out2[2] = {&ty, &tz};
  kx_signature t = two_sig();
  check_tfs_text(&t, out2, 0,
                 "{\"predictions\":[{\"y\":0.1,\"z\":-9223372036854775808},{\"y\":1e+30,\"z\":9223372036854775807},"
                 "{\"y\":Infinity,\"z\":0}]}");
  check_tfs_text(&t, out2, 1,
                 "{\"outputs\":{\"y\":[0.1,1e+30,Infinity],\"z\":[-9223372036854775808,9223372036854775807,0]}}");

  /* other dtypes, as columnar single outputs */
  uint64_t u[2] = {UINT64_MAX, 3};
  kiln_tensor tu = view(KILN_UINT64, 1, 2, 0, u);
  const kiln_tensor *ou[1] = {&tu};
  check_tfs_text(&s, ou, 1, "{\"outputs\":[18446744073709551615,3]}");
  uint8_t bv[3] = {1, 0, 1};
  kiln_tensor tb = view(KILN_BOOL, 1, 3, 0, bv);
  const kiln_tensor *ob[1] = {&tb};
  check_tfs_text(&s, ob, 0, "{\"predictions\":[true,false,true]}");
  const char *sv[2] = {"a\"b\n", "\x01"};
  kiln_tensor ts = view(KILN_STRING, 1, 2, 0, (void *)sv);
  const kiln_tensor *os[1] = {&ts};
  check_tfs_text(&s, os, 1, "{\"outputs\":[\"a\\\"b\\n\",\"\\u0001\"]}");
  uint16_t hv[2] = {kiln_float_to_half(0.333f), kiln_float_to_half(-2)};
  kiln_tensor th = view(KILN_FLOAT16, 2, 1, 2, hv);
  const kiln_tensor *oh[1] = {&th};
  check_tfs_text(&s, oh, 0, "{\"predictions\":[[0.3330078,-2]]}");
  double dv[1] = {0.1};
  kiln_tensor td = view(KILN_DOUBLE, 0, 0, 0, dv);
  const kiln_tensor *od[1] = {&td};
  check_tfs_text(&s, od, 1, "{\"outputs\":0.1}");
  int8_t iv[6] = {-128, 127, 0, 1, 2, 3};
  kiln_tensor ti = view(KILN_INT8, 2, 3, 2, iv);
  const kiln_tensor *oi[1] = {&ti};
  check_tfs_text(&s, oi, 0, "{\"predictions\":[[-128,127],[0,1],[2,3]]}");
  kiln_tensor te = view(KILN_FLOAT, 2, 2, 0, NULL);
  const kiln_tensor *oe[1] = {&te};
  check_tfs_text(&s, oe, 1, "{\"outputs\":[[],[]]}");
  check_tfs_text(&s, oe, 0, "{\"predictions\":[[],[]]}");

  /* the row format needs one batch size and a batch dimension */
  kx_buf b = {0};
  kx_buf_puts(&b, "keep");
  kiln_tensor tz2 = view(KILN_INT64, 1, 2, 0, z2);
  const kiln_tensor *bad[2] = {&ty, &tz2};
  CHECK_ERROR(kx_tfs_encode_predict(&t, bad, 0, &b), KILN_INVALID_ARGUMENT, "use the columnar format");
  CHECK_ERROR(kx_tfs_encode_predict(&s, od, 0, &b), KILN_INVALID_ARGUMENT, "scalar (rank 0)");
  CHECK(b.len == 4 && !strcmp(b.data, "keep"));
  kiln_tensor tc = view(KILN_COMPLEX64, 1, 1, 0, yv);
  const kiln_tensor *oc[1] = {&tc};
  CHECK_ERROR(kx_tfs_encode_predict(&s, oc, 1, &b), KILN_UNIMPLEMENTED, "cannot carry");
  kx_buf_free(&b);
}

/* ------------------------------------------------------------------ round trips */

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static uint32_t next_u32(void) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return (uint32_t)(rng >> 16);
}
static float random_float(void) {
  float m = (float)(next_u32() % 16777216) / 16777216.0f;
  int e = (int)(next_u32() % 80) - 40;
  return ldexpf(next_u32() & 1 ? -m : m, e);
}

/* Replaces the first `from` in s by `to` (same buffer, to no longer than from). */
static void replace_key(char *s, const char *from, const char *to) {
  char *p = strstr(s, from);
  CHECK(p != NULL);
  if (!p) return;
  size_t lf = strlen(from), lt = strlen(to);
  memcpy(p, to, lt);
  memmove(p + lt, p + lf, strlen(p + lf) + 1);
}

static void test_round_trip(void) {
  kx_signature s = one_sig(KILN_FLOAT, 2, -1, 7);
  one_in[0].name = "y"; /* so that an encoded response reads back as a request */
  for (int round = 0; round < 4; round++) {
    float v[35];
    for (int i = 0; i < 35; i++) v[i] = random_float();
    kiln_tensor y = view(KILN_FLOAT, 2, 5, 7, v);
    const kiln_tensor *out[1] = {&y};
    int columnar = round & 1;
    kx_buf b = {0};
    CHECK_OK(kx_tfs_encode_predict(&s, out, columnar, &b));
    replace_key(b.data, columnar ? "\"outputs\"" : "\"predictions\"", columnar ? "\"inputs\"" : "\"instances\"");
    kiln_tensor in[1];
    int c;
    CHECK_OK(kx_tfs_decode_predict(&s, b.data, strlen(b.data), in, &c));
    CHECK(c == columnar && dims_are(&in[0], 2, 5, 7) && in[0].data && !memcmp(in[0].data, v, sizeof v));
    release(in, 1);
    kx_buf_free(&b);

    /* V2: JSON data, then binary */
    kx_v2_output_request o = {0, round >= 2};
    kx_v2_request req = {NULL, 1, &o};
    size_t json_len = 0;
    CHECK_OK(kx_v2_encode_infer(&s, "m", 3, &req, out, &b, &json_len));
    size_t total = b.len;
    CHECK(o.binary ? total == json_len + sizeof v : total == json_len);
    char *header = malloc(json_len + 1);
    memcpy(header, b.data, json_len);
    header[json_len] = '\0';
    replace_key(header, "\"outputs\"", "\"inputs\"");
    kx_buf r = {0};
    kx_buf_puts(&r, header);
    size_t hl = r.len;
    kx_buf_append(&r, b.data + json_len, total - json_len);
    kx_v2_request got;
    CHECK_OK(kx_v2_decode_infer(&s, r.data, r.len, o.binary ? (int64_t)hl : -1, in, &got));
    CHECK(dims_are(&in[0], 2, 5, 7) && in[0].data && !memcmp(in[0].data, v, sizeof v));
    release(in, 1);
    kx_v2_request_free(&got);
    kx_buf_free(&r);
    free(header);
    kx_buf_free(&b);
  }
  one_in[0].name = "x";
}

/* ------------------------------------------------------------------ KServe V2 */

static void test_v2_decode(void) {
  kx_signature s = two_sig();
  kiln_tensor in[2];
  kx_v2_request req;
  CHECK_OK(v2(&s,
              "{\"id\":\"r1\",\"inputs\":[{\"name\":\"mask\",\"shape\":[2],\"datatype\":\"INT64\",\"data\":[5,6]},"
              "{\"name\":\"x\",\"shape\":[2,3],\"datatype\":\"FP32\",\"data\":[[1,2,3],[4,5,6]]}]}",
              in, &req));
  CHECK(dims_are(&in[0], 2, 2, 3) && ((float *)in[0].data)[5] == 6);
  CHECK(dims_are(&in[1], 1, 2, 0) && ((int64_t *)in[1].data)[1] == 6);
  CHECK(req.id && !strcmp(req.id, "r1"));
  CHECK(req.n_outputs == 2 && req.outputs[0].index == 0 && req.outputs[1].index == 1 && !req.outputs[0].binary);
  release(in, 2);
  kx_v2_request_free(&req);

  /* requested outputs: a subset, in the order asked, binary per output or by default */
  CHECK_OK(v2(&s,
              "{\"parameters\":{\"binary_data_output\":true},\"inputs\":[{\"name\":\"mask\",\"shape\":[1],"
              "\"datatype\":\"INT64\",\"data\":[5]},{\"name\":\"x\",\"shape\":[1,3],\"datatype\":\"FP32\",\"data\":"
              "[1,2,3]}],\"outputs\":[{\"name\":\"z\"},{\"name\":\"y\",\"parameters\":{\"binary_data\":false}}]}",
              in, &req));
  CHECK(req.id == NULL && req.n_outputs == 2 && req.outputs[0].index == 1 && req.outputs[0].binary &&
        req.outputs[1].index == 0 && !req.outputs[1].binary);
  release(in, 2);
  kx_v2_request_free(&req);

  /* binary inputs */
  float xv[3] = {1.5f, -2, 1e-3f};
  int64_t mv[1] = {-7};
  const char *h = "{\"inputs\":[{\"name\":\"x\",\"shape\":[1,3],\"datatype\":\"FP32\",\"parameters\":"
                  "{\"binary_data_size\":12}},{\"name\":\"mask\",\"shape\":[1],\"datatype\":\"INT64\",\"parameters\":"
                  "{\"binary_data_size\":8}}],\"outputs\":[{\"name\":\"y\",\"parameters\":{\"binary_data\":true}}]}";
  kx_buf b = {0};
  kx_buf_puts(&b, h);
  kx_buf_append(&b, xv, 12);
  kx_buf_append(&b, mv, 8);
  int64_t hl = (int64_t)strlen(h);
  CHECK_OK(kx_v2_decode_infer(&s, b.data, b.len, hl, in, &req));
  CHECK(!memcmp(in[0].data, xv, 12) && ((int64_t *)in[1].data)[0] == -7);
  CHECK(req.n_outputs == 1 && req.outputs[0].index == 0 && req.outputs[0].binary);
  release(in, 2);
  kx_v2_request_free(&req);
  CHECK_ERROR(kx_v2_decode_infer(&s, b.data, b.len - 1, hl, in, &req), KILN_INVALID_ARGUMENT,
              "add up to at least 20 bytes, but 19 bytes follow");
  kx_buf_putc(&b, 0);
  CHECK_ERROR(kx_v2_decode_infer(&s, b.data, b.len, hl, in, &req), KILN_INVALID_ARGUMENT,
              "add up to 20 bytes, but 21 bytes follow");
  CHECK_ERROR(kx_v2_decode_infer(&s, b.data, b.len, (int64_t)b.len + 1, in, &req), KILN_INVALID_ARGUMENT,
              "Inference-Header-Content-Length is");
  CHECK_ERROR(kx_v2_decode_infer(&s, b.data, b.len, -2, in, &req), KILN_INVALID_ARGUMENT, "negative");
  CHECK_ERROR(kx_v2_decode_infer(&s, b.data, hl, -1, in, &req), KILN_INVALID_ARGUMENT,
              "no Inference-Header-Content-Length");
  kx_buf_free(&b);
  /* a binary size that does not match the shape, with the sum right */
  h = "{\"inputs\":[{\"name\":\"x\",\"shape\":[1,3],\"datatype\":\"FP32\",\"parameters\":{\"binary_data_size\":16}},"
      "{\"name\":\"mask\",\"shape\":[1],\"datatype\":\"INT64\",\"parameters\":{\"binary_data_size\":4}}]}";
  kx_buf_puts(&b, h);
  kx_buf_append(&b, xv, 12);
  kx_buf_append(&b, mv, 8);
  CHECK_ERROR(kx_v2_decode_infer(&s, b.data, b.len, (int64_t)strlen(h), in, &req), KILN_INVALID_ARGUMENT,
              "input 'x': binary_data_size is 16 bytes, but shape [1,3] of FP32 needs 12");
  CHECK(in[0].data == NULL && in[1].data == NULL && req.outputs == NULL);
  kx_buf_free(&b);

  /* BYTES, in binary and in JSON, and BOOL in binary */
  kiln_value_info sin[2] = {vi("s", KILN_STRING, 1, -1, 0), vi("f", KILN_BOOL, 1, -1, 0)};
  kx_signature ss = sig_of(sin, 2, two_out, 1);
  h = "{\"inputs\":[{\"name\":\"s\",\"shape\":[3],\"datatype\":\"BYTES\",\"parameters\":{\"binary_data_size\":17}},"
      "{\"name\":\"f\",\"shape\":[2],\"datatype\":\"BOOL\",\"parameters\":{\"binary_data_size\":2}}]}";
  kx_buf_puts(&b, h);
  kx_buf_append(&b, "\2\0\0\0hi\0\0\0\0\3\0\0\0abc\0\7", 19);
  hl = (int64_t)strlen(h);
  CHECK_OK(kx_v2_decode_infer(&ss, b.data, b.len, hl, in, &req));
  char **sv = in[0].data;
  CHECK(!strcmp(sv[0], "hi") && !strcmp(sv[1], "") && !strcmp(sv[2], "abc"));
  CHECK(!memcmp(in[1].data, "\0\1", 2));
  release(in, 2);
  kx_v2_request_free(&req);
  b.data[hl + 10] = 4; /* element 2 claims 4 bytes, 3 are left */
  CHECK_ERROR(kx_v2_decode_infer(&ss, b.data, b.len, hl, in, &req), KILN_INVALID_ARGUMENT,
              "binary BYTES element 2 is 4 bytes long, but only 3 bytes are left");
  b.data[hl + 10] = 2; /* element 2 leaves a byte over */
  CHECK_ERROR(kx_v2_decode_infer(&ss, b.data, b.len, hl, in, &req), KILN_INVALID_ARGUMENT, "BYTES elements take 16");
  b.data[hl + 10] = 3;
  b.data[hl + 0] = 0x10; /* element 0 runs past the end */
  CHECK_ERROR(kx_v2_decode_infer(&ss, b.data, b.len, hl, in, &req), KILN_INVALID_ARGUMENT, "only 13 bytes are left");
  kx_buf_free(&b);
  CHECK_OK(v2(&ss,
              "{\"inputs\":[{\"name\":\"s\",\"shape\":[2],\"datatype\":\"BYTES\",\"data\":[\"x\",\"yz\"]},"
              "{\"name\":\"f\",\"shape\":[2],\"datatype\":\"BOOL\",\"data\":[true,0]}]}",
              in, &req));
  CHECK(!strcmp(((char **)in[0].data)[1], "yz") && !memcmp(in[1].data, "\1\0", 2));
  release(in, 2);
  kx_v2_request_free(&req);
}

static void test_v2_errors(void) {
  kx_signature s = two_sig();
  kiln_tensor in[2];
  kx_v2_request req;
  const char *mask = "{\"name\":\"mask\",\"shape\":[1],\"datatype\":\"INT64\",\"data\":[5]}";
  char body[1024];
#define X_BODY(x_entry, rest) (snprintf(body, sizeof body, "{\"inputs\":[%s,%s]%s}", mask, x_entry, rest), body)
  CHECK_ERROR(v2(&s, X_BODY("{\"name\":\"x\",\"shape\":[1,3],\"datatype\":\"INT64\",\"data\":[1,2,3]}", ""), in, &req),
              KILN_INVALID_ARGUMENT, "input 'x': expected datatype FP32, got INT64");
  CHECK_ERROR(v2(&s, X_BODY("{\"name\":\"x\",\"shape\":[1,3],\"datatype\":\"FP8\",\"data\":[1,2,3]}", ""), in, &req),
              KILN_INVALID_ARGUMENT, "unknown datatype 'FP8'");
  CHECK_ERROR(v2(&s, X_BODY("{\"name\":\"x\",\"shape\":[1,4],\"datatype\":\"FP32\",\"data\":[1,2,3,4]}", ""), in, &req),
              KILN_INVALID_ARGUMENT, "input 'x': expected shape [-1,3], got [1,4]");
  CHECK_ERROR(v2(&s, X_BODY("{\"name\":\"x\",\"shape\":[2,3],\"datatype\":\"FP32\",\"data\":[1,2,3,4,5]}", ""), in, &req),
              KILN_INVALID_ARGUMENT, "input 'x': shape [2,3] needs 6 elements, \"data\" has 5");
  CHECK_ERROR(v2(&s, X_BODY("{\"name\":\"x\",\"shape\":[1,3],\"datatype\":\"FP32\",\"data\":[1,2,3,4]}", ""), in, &req),
              KILN_INVALID_ARGUMENT, "needs 3 elements, \"data\" has 4");
  CHECK_ERROR(v2(&s, X_BODY("{\"name\":\"x\",\"shape\":[-1,3],\"datatype\":\"FP32\",\"data\":[]}", ""), in, &req),
              KILN_INVALID_ARGUMENT, "shape entry 0 is not a non-negative integer");
  CHECK_ERROR(v2(&s, X_BODY("{\"name\":\"x\",\"shape\":[1.5,3],\"datatype\":\"FP32\",\"data\":[]}", ""), in, &req),
              KILN_INVALID_ARGUMENT, "shape entry 0 is not a non-negative integer");
  CHECK_ERROR(v2(&s, X_BODY("{\"name\":\"x\",\"shape\":[4294967296,3],\"datatype\":\"FP32\",\"data\":[]}", ""), in, &req),
              KILN_RESOURCE_EXHAUSTED, "limit");
  /* far more elements than the body holds: counted, not allocated */
  CHECK_ERROR(v2(&s, X_BODY("{\"name\":\"x\",\"shape\":[50000000,3],\"datatype\":\"FP32\",\"data\":[1,2]}", ""), in, &req),
              KILN_INVALID_ARGUMENT, "needs 150000000 elements, \"data\" has 2");
  CHECK_ERROR(v2(&s, X_BODY("{\"name\":\"x\",\"shape\":[1,3],\"datatype\":\"FP32\",\"data\":[1,\"2\",3]}", ""), in, &req),
              KILN_INVALID_ARGUMENT, "input 'x': element 1 is a string, expected a number (float)");
  CHECK_ERROR(v2(&s, X_BODY("{\"name\":\"x\",\"shape\":[1,3],\"datatype\":\"FP32\"}", ""), in, &req),
              KILN_INVALID_ARGUMENT, "neither \"data\" nor");
  CHECK_ERROR(v2(&s, X_BODY("{\"name\":\"foo\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":[1]}", ""), in, &req),
              KILN_INVALID_ARGUMENT, "unknown input 'foo' (the model's inputs: x, mask)");
  CHECK_ERROR(v2(&s, X_BODY("{\"name\":\"mask\",\"shape\":[1],\"datatype\":\"INT64\",\"data\":[1]}", ""), in, &req),
              KILN_INVALID_ARGUMENT, "input 'mask' is given twice");
  CHECK_ERROR(v2(&s, "{\"inputs\":[{\"name\":\"mask\",\"shape\":[1],\"datatype\":\"INT64\",\"data\":[5]}]}", in, &req),
              KILN_INVALID_ARGUMENT, "missing input 'x'");
  const char *x = "{\"name\":\"x\",\"shape\":[1,3],\"datatype\":\"FP32\",\"data\":[1,2,3]}";
  CHECK_ERROR(v2(&s, X_BODY(x, ",\"outputs\":[{\"name\":\"w\"}]"), in, &req), KILN_INVALID_ARGUMENT,
              "unknown output 'w' (the model's outputs: y, z)");
  CHECK_ERROR(v2(&s, X_BODY(x, ",\"outputs\":[{\"name\":\"y\"},{\"name\":\"y\"}]"), in, &req), KILN_INVALID_ARGUMENT,
              "output 'y' is requested twice");
  CHECK_ERROR(v2(&s, X_BODY(x, ",\"id\":7"), in, &req), KILN_INVALID_ARGUMENT, "\"id\" must be a string");
  CHECK_ERROR(v2(&s, X_BODY(x, ",\"id\":\"a\",\"outputs\":[{\"name\":\"q\"}]"), in, &req), KILN_INVALID_ARGUMENT,
              "unknown output");
  CHECK(req.id == NULL && in[0].data == NULL);
  CHECK_ERROR(v2(&s, "{\"inputs\":{}}", in, &req), KILN_INVALID_ARGUMENT, "no \"inputs\" list");
  CHECK_ERROR(v2(&s, "{\"inputs\":[", in, &req), KILN_INVALID_ARGUMENT, "invalid JSON");
  kiln_value_info big[1] = {vi("x", KILN_FLOAT, -1, 0, 0)};
  kx_signature sb = sig_of(big, 1, two_out, 1);
  CHECK_ERROR(v2(&sb, "{\"inputs\":[{\"name\":\"x\",\"shape\":[268435457],\"datatype\":\"FP32\",\"data\":[]}]}", in, &req),
              KILN_RESOURCE_EXHAUSTED, "limit");
#undef X_BODY
}

static void test_v2_encode(void) {
  kx_signature s = two_sig();
  float yv[6] = {1, 2, NAN, INFINITY, -0.25f, 3e-5f};
  int64_t zv[2] = {INT64_MIN, 42};
  kiln_tensor y = view(KILN_FLOAT, 2, 2, 3, yv), z = view(KILN_INT64, 1, 2, 0, zv);
  const kiln_tensor *out[2] = {&y, &z};
  kx_buf b = {0};
  size_t jl = 0;
  CHECK_OK(kx_v2_encode_infer(&s, "mlp", 2, NULL, out, &b, &jl));
  const char *want = "{\"model_name\":\"mlp\",\"model_version\":\"2\",\"outputs\":[{\"name\":\"y\",\"datatype\":\"FP32\","
                     "\"shape\":[2,3],\"data\":[1,2,NaN,Infinity,-0.25,3e-05]},{\"name\":\"z\",\"datatype\":"
                     "\"INT64\",\"shape\":[2],\"data\":[-9223372036854775808,42]}]}";
  CHECK(b.data && !strcmp(b.data, want) && jl == b.len);
  if (b.data && strcmp(b.data, want)) fprintf(stderr, "encoded %s\n", b.data);
  kx_buf_free(&b);

  /* a subset, z binary first, with the request's id */
  kx_v2_output_request o[2] = {{1, 1}, {0, 0}};
  kx_v2_request req = {"req-\"1\"", 2, o};
  const kiln_tensor *only[2] = {&y, &z};
  CHECK_OK(kx_v2_encode_infer(&s, "mlp", -1, &req, only, &b, &jl));
  want = "{\"model_name\":\"mlp\",\"id\":\"req-\\\"1\\\"\",\"outputs\":[{\"name\":\"z\",\"datatype\":\"INT64\",\"shape\":"
         "[2],\"parameters\":{\"binary_data_size\":16}},{\"name\":\"y\",\"datatype\":\"FP32\",\"shape\":[2,3],\"data\":"
         "[1,2,NaN,Infinity,-0.25,3e-05]}]}";
  CHECK(jl == strlen(want) && b.len == jl + 16 && !memcmp(b.data, want, jl) && !memcmp(b.data + jl, zv, 16));
  kx_buf_free(&b);
  /* only the requested outputs need to exist */
  kx_v2_output_request oz[1] = {{1, 0}};
  kx_v2_request rz = {NULL, 1, oz};
  const kiln_tensor *zonly[2] = {NULL, &z};
  CHECK_OK(kx_v2_encode_infer(&s, "mlp", 1, &rz, zonly, &b, &jl));
  CHECK(b.data && strstr(b.data, "\"z\"") && !strstr(b.data, "\"y\""));
  kx_buf_free(&b);

  /* BYTES and FP16 in binary */
  const char *sv[2] = {"ab", ""};
  uint16_t hv[2] = {kiln_float_to_half(1), kiln_float_to_half(-0.5f)};
  kiln_tensor ts = view(KILN_STRING, 1, 2, 0, (void *)sv), th = view(KILN_FLOAT16, 1, 2, 0, hv);
  const kiln_tensor *o2[2] = {&ts, &th};
  kx_v2_output_request ob[2] = {{0, 1}, {1, 1}};
  kx_v2_request rb = {NULL, 2, ob};
  CHECK_OK(kx_v2_encode_infer(&s, "m", 1, &rb, o2, &b, &jl));
  CHECK(b.len == jl + 10 + 4);
  CHECK(b.data && strstr(b.data, "\"name\":\"y\",\"datatype\":\"BYTES\",\"shape\":[2],\"parameters\":{\"binary_data_size\":10}"));
  CHECK(b.data && strstr(b.data, "\"datatype\":\"FP16\",\"shape\":[2],\"parameters\":{\"binary_data_size\":4}"));
  CHECK(b.len >= jl + 14 && !memcmp(b.data + jl, "\2\0\0\0ab\0\0\0\0", 10) && !memcmp(b.data + jl + 10, hv, 4));
  kx_buf_free(&b);
  /* the same as JSON: strings escaped, FP16 as float */
  ob[0].binary = ob[1].binary = 0;
  CHECK_OK(kx_v2_encode_infer(&s, "m", 1, &rb, o2, &b, &jl));
  CHECK(b.data && strstr(b.data, "\"data\":[\"ab\",\"\"]") && strstr(b.data, "\"data\":[1,-0.5]") && jl == b.len);
  kx_buf_free(&b);
  kiln_tensor tc = view(KILN_COMPLEX64, 1, 1, 0, yv);
  const kiln_tensor *oc[2] = {&tc, &z};
  CHECK_ERROR(kx_v2_encode_infer(&s, "m", 1, NULL, oc, &b, &jl), KILN_UNIMPLEMENTED, "cannot carry");
  CHECK(b.len == 0);
  kx_buf_free(&b);
}

/* ------------------------------------------------------------------ metadata */

static void test_metadata(void) {
  kiln_value_info in[2] = {vi("x", KILN_FLOAT, 2, -1, 784), vi("u", KILN_UNDEFINED, -1, 0, 0)};
  in[0].dim_names[0] = "batch";
  kiln_value_info out[1] = {vi("p", KILN_INT64, 1, -1, 0)};
  kx_signature s = sig_of(in, 2, out, 1);
  kx_buf b = {0};
  kx_tfs_encode_metadata(&s, "mnist", 3, &b);
  cJSON *j = cJSON_Parse(b.data);
  CHECK(j != NULL);
  const cJSON *spec = cJSON_GetObjectItem(j, "model_spec");
  CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(spec, "name")), "mnist"));
  CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(spec, "version")), "3"));
  const cJSON *sd = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "metadata"),
                                                                                "signature_def"), "signature_def"),
                                        "serving_default");
  CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(sd, "method_name")), "tensorflow/serving/predict"));
  const cJSON *x = cJSON_GetObjectItem(cJSON_GetObjectItem(sd, "inputs"), "x");
  CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(x, "dtype")), "DT_FLOAT"));
  const cJSON *shape = cJSON_GetObjectItem(x, "tensor_shape");
  const cJSON *dim = cJSON_GetObjectItem(shape, "dim");
  CHECK(cJSON_GetArraySize(dim) == 2 && cJSON_IsFalse(cJSON_GetObjectItem(shape, "unknown_rank")));
  CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(dim, 0), "size")), "-1"));
  CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(dim, 0), "name")), "batch"));
  CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(dim, 1), "size")), "784"));
  const cJSON *u = cJSON_GetObjectItem(cJSON_GetObjectItem(sd, "inputs"), "u");
  CHECK(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(u, "tensor_shape"), "unknown_rank")));
  const cJSON *p = cJSON_GetObjectItem(cJSON_GetObjectItem(sd, "outputs"), "p");
  CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(p, "dtype")), "DT_INT64"));
  cJSON_Delete(j);
  kx_buf_free(&b);

  int64_t versions[2] = {1, 2};
  kx_v2_encode_metadata(&s, "mnist", versions, 2, &b);
  j = cJSON_Parse(b.data);
  CHECK(j != NULL);
  CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(j, "name")), "mnist"));
  CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(j, "platform")), "onnxruntime_onnx"));
  const cJSON *vs = cJSON_GetObjectItem(j, "versions");
  CHECK(cJSON_GetArraySize(vs) == 2 && !strcmp(cJSON_GetStringValue(cJSON_GetArrayItem(vs, 1)), "2"));
  const cJSON *i0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "inputs"), 0);
  CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(i0, "datatype")), "FP32"));
  const cJSON *sh = cJSON_GetObjectItem(i0, "shape");
  CHECK(cJSON_GetArraySize(sh) == 2 && cJSON_GetArrayItem(sh, 0)->valuedouble == -1 &&
        cJSON_GetArrayItem(sh, 1)->valuedouble == 784);
  const cJSON *o0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "outputs"), 0);
  CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(o0, "name")), "p") &&
        !strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(o0, "datatype")), "INT64"));
  cJSON_Delete(j);
  kx_buf_free(&b);
}

static void test_dtype_names(void) {
  CHECK(!strcmp(kx_tf_dtype_name(KILN_FLOAT16), "DT_HALF") && !strcmp(kx_tf_dtype_name(KILN_STRING), "DT_STRING"));
  CHECK(kx_tf_dtype_name(KILN_COMPLEX64) == NULL && kx_v2_dtype_name(KILN_UNDEFINED) == NULL);
  const kiln_dtype all[] = {KILN_BOOL,  KILN_UINT8,   KILN_UINT16, KILN_UINT32,  KILN_UINT64,
                            KILN_INT8,  KILN_INT16,   KILN_INT32,  KILN_INT64,   KILN_FLOAT16,
                            KILN_FLOAT, KILN_DOUBLE,  KILN_STRING, KILN_BFLOAT16};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
    CHECK(kx_v2_dtype_from_name(kx_v2_dtype_name(all[i])) == all[i]);
    CHECK(kx_tf_dtype_name(all[i]) != NULL);
  }
  CHECK(kx_v2_dtype_from_name("fp32") == KILN_UNDEFINED);
}

/* ------------------------------------------------------------------ an independent reader */

static int python_check(const char *json, size_t len, const char *script) {
  char path[] = "/tmp/kiln_codec_XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) return -1;
  int ok = write(fd, json, len) == (ssize_t)len;
  close(fd);
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "/usr/bin/python3 -c '%s' %s", script, path);
  int rc = ok ? system(cmd) : -1;
  unlink(path);
  return rc;
}

static void test_python_reads(void) {
  if (access("/usr/bin/python3", X_OK) != 0) {
    fprintf(stderr, "note: /usr/bin/python3 is missing; skipping the independent JSON check\n");
    return;
  }
  float yv[4] = {0.1f, NAN, -INFINITY, 1e-45f};
  int64_t zv[2] = {INT64_MAX, -3};
  kiln_tensor y = view(KILN_FLOAT, 2, 2, 2, yv), z = view(KILN_INT64, 1, 2, 0, zv);
  const kiln_tensor *out[2] = {&y, &z};
  kx_signature s = two_sig();
  kx_buf b = {0};
  CHECK_OK(kx_tfs_encode_predict(&s, out, 0, &b));
  CHECK(python_check(b.data, b.len,
                     "import json,sys,math,struct; d=json.load(open(sys.argv[1])); p=d[\"predictions\"]; "
                     "f=lambda v: struct.unpack(\"f\",struct.pack(\"f\",v))[0]; "
                     "assert len(p)==2 and f(p[0][\"y\"][0])==f(0.1) and math.isnan(p[0][\"y\"][1]); "
                     "assert p[1][\"y\"][0]==-math.inf and f(p[1][\"y\"][1])==f(1e-45); "
                     "assert p[0][\"z\"]==9223372036854775807 and p[1][\"z\"]==-3") == 0);
  kx_buf_free(&b);
  size_t jl;
  CHECK_OK(kx_v2_encode_infer(&s, "m\"x", 7, NULL, out, &b, &jl));
  CHECK(python_check(b.data, b.len,
                     "import json,sys,math; d=json.load(open(sys.argv[1])); o=d[\"outputs\"]; "
                     "assert d[\"model_name\"]==\"m\\\"x\" and d[\"model_version\"]==\"7\"; "
                     "assert o[0][\"name\"]==\"y\" and o[0][\"datatype\"]==\"FP32\" and o[0][\"shape\"]==[2,2]; "
                     "assert math.isnan(o[0][\"data\"][1]) and o[0][\"data\"][2]==-math.inf; "
                     "assert o[1][\"data\"]==[9223372036854775807,-3] and o[1][\"datatype\"]==\"INT64\"") == 0);
  kx_buf_free(&b);
}

TEST_MAIN(TEST(test_tfs_row_single), TEST(test_tfs_row_multi), TEST(test_tfs_columnar), TEST(test_tfs_dtypes),
          TEST(test_tfs_errors), TEST(test_tfs_encode), TEST(test_round_trip), TEST(test_v2_decode),
          TEST(test_v2_errors), TEST(test_v2_encode), TEST(test_metadata), TEST(test_dtype_names),
          TEST(test_python_reads))
