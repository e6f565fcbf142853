/* The gRPC payload codecs: TensorProto / PredictRequest and KServe V2 ModelInferRequest messages
 * (built with the protobuf-c structs) decoded against hand-built signatures, every dtype in both
 * forms, TensorFlow's repeat-the-last-value rule, every error with its message, and the packed
 * responses and metadata read back. Wire compatibility with Google's protobuf is checked by
 * grpc_wire.py (CTest unit_grpc_wire). */
#include <stdint.h>

#include "google/protobuf/any.pb-c.h"
#include "serve/codec_grpc.h"
#include "tensorflow_serving/apis/get_model_metadata.pb-c.h"
#include "test.h"

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

/* A TensorProto of the given TF dtype and shape (rank < 0: no tensor_shape) with no values. */
typedef struct proto_tensor {
  Tensorflow__TensorProto tp;
  Tensorflow__TensorShapeProto shape;
  Tensorflow__TensorShapeProto__Dim dim[KILN_MAX_RANK + 1];
  Tensorflow__TensorShapeProto__Dim *dims[KILN_MAX_RANK + 1];
} proto_tensor;

static void make_tp(proto_tensor *p, int dtype, int rank, const int64_t *dims) {
  memset(p, 0, sizeof *p);
  tensorflow__tensor_proto__init(&p->tp);
  p->tp.dtype = dtype;
  if (rank < 0) return;
  tensorflow__tensor_shape_proto__init(&p->shape);
  for (int i = 0; i < rank; i++) {
    tensorflow__tensor_shape_proto__dim__init(&p->dim[i]);
    p->dim[i].size = dims[i];
    p->dims[i] = &p->dim[i];
  }
  p->shape.n_dim = (size_t)rank;
  p->shape.dim = p->dims;
  p->tp.tensor_shape = &p->shape;
}

static kiln_status from(const kiln_value_info *info, const proto_tensor *p, kiln_tensor *t) {
  int64_t total = 0;
  return kx_grpc_tensor_from_proto(info, &p->tp, t, &total);
}

/* ------------------------------------------------------------------ TensorProto */

/* Every dtype through its typed field and through tensor_content: the same three values. */
static void test_every_dtype_both_forms(void) {
  static const struct {
    kiln_dtype dtype;
    int tf;
  } types[] = {{KILN_FLOAT, TENSORFLOW__DATA_TYPE__DT_FLOAT},   {KILN_DOUBLE, TENSORFLOW__DATA_TYPE__DT_DOUBLE},
               {KILN_INT32, TENSORFLOW__DATA_TYPE__DT_INT32},   {KILN_UINT8, TENSORFLOW__DATA_TYPE__DT_UINT8},
               {KILN_INT16, TENSORFLOW__DATA_TYPE__DT_INT16},   {KILN_INT8, TENSORFLOW__DATA_TYPE__DT_INT8},
               {KILN_INT64, TENSORFLOW__DATA_TYPE__DT_INT64},   {KILN_BOOL, TENSORFLOW__DATA_TYPE__DT_BOOL},
               {KILN_UINT16, TENSORFLOW__DATA_TYPE__DT_UINT16}, {KILN_FLOAT16, TENSORFLOW__DATA_TYPE__DT_HALF},
               {KILN_BFLOAT16, TENSORFLOW__DATA_TYPE__DT_BFLOAT16}, {KILN_UINT32, TENSORFLOW__DATA_TYPE__DT_UINT32},
               {KILN_UINT64, TENSORFLOW__DATA_TYPE__DT_UINT64}};
  float fv[3] = {1.5f, -2, 3};
  double dv[3] = {1.5, -2, 1e300};
  int32_t iv[3] = {1, 0, 100}; /* fits every narrow integer type */
  int32_t hv[3] = {0x3c00, 0xc000, 0x4200}; /* 1, -2, 3 as float16; as bfloat16 other numbers */
  int64_t lv[3] = {INT64_MIN, -1, INT64_MAX};
  protobuf_c_boolean bv[3] = {1, 0, 1};
  uint32_t uv[3] = {0, 1, UINT32_MAX};
  uint64_t qv[3] = {0, 1, UINT64_MAX};
  int64_t d3[1] = {3};
  for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
    kiln_dtype t = types[k].dtype;
    kiln_value_info info = vi("x", t, 1, -1, 0);
    proto_tensor p;
    make_tp(&p, types[k].tf, 1, d3);
    switch (t) {
    case KILN_FLOAT: p.tp.n_float_val = 3, p.tp.float_val = fv; break;
    case KILN_DOUBLE: p.tp.n_double_val = 3, p.tp.double_val = dv; break;
    case KILN_INT64: p.tp.n_int64_val = 3, p.tp.int64_val = lv; break;
    case KILN_BOOL: p.tp.n_bool_val = 3, p.tp.bool_val = bv; break;
    case KILN_UINT32: p.tp.n_uint32_val = 3, p.tp.uint32_val = uv; break;
    case KILN_UINT64: p.tp.n_uint64_val = 3, p.tp.uint64_val = qv; break;
    case KILN_FLOAT16:
    case KILN_BFLOAT16: p.tp.n_half_val = 3, p.tp.half_val = hv; break;
    default: p.tp.n_int_val = 3, p.tp.int_val = iv; break;
    }
    kiln_tensor a, b;
    CHECK_OK(from(&info, &p, &a));
    CHECK(a.dtype == t && a.rank == 1 && a.dims[0] == 3);
    for (int i = 0; i < 3; i++) {
      switch (t) {
      case KILN_FLOAT: CHECK(((float *)a.data)[i] == fv[i]); break;
      case KILN_DOUBLE: CHECK(((double *)a.data)[i] == dv[i]); break;
      case KILN_INT64: CHECK(((int64_t *)a.data)[i] == lv[i]); break;
      case KILN_BOOL: CHECK(((uint8_t *)a.data)[i] == bv[i]); break;
      case KILN_UINT32: CHECK(((uint32_t *)a.data)[i] == uv[i]); break;
      case KILN_UINT64: CHECK(((uint64_t *)a.data)[i] == qv[i]); break;
      case KILN_FLOAT16:
      case KILN_BFLOAT16:
      case KILN_UINT16: CHECK(((uint16_t *)a.data)[i] == (uint16_t)(t == KILN_UINT16 ? iv[i] : hv[i])); break;
      default: CHECK(kiln_tensor_get_f64(&a, i) == iv[i]); break;
      }
    }
    if (t == KILN_FLOAT16) CHECK(kiln_half_to_float(((uint16_t *)a.data)[1]) == -2.0f);
    /* the same bytes as tensor_content decode to the same tensor */
    proto_tensor q;
    make_tp(&q, types[k].tf, 1, d3);
    q.tp.tensor_content.data = a.data;
    q.tp.tensor_content.len = kiln_tensor_nbytes(&a);
    CHECK_OK(from(&info, &q, &b));
    CHECK(b.dtype == t && b.dims[0] == 3 && !memcmp(a.data, b.data, kiln_tensor_nbytes(&a)));
    kiln_tensor_release(&a);
    kiln_tensor_release(&b);
  }
}

static void test_strings(void) {
  kiln_value_info info = vi("s", KILN_STRING, 1, -1, 0);
  int64_t d3[1] = {3};
  ProtobufCBinaryData sv[2] = {{2, (uint8_t *)"hi"}, {0, (uint8_t *)""}};
  proto_tensor p;
  make_tp(&p, TENSORFLOW__DATA_TYPE__DT_STRING, 1, d3);
  p.tp.n_string_val = 2, p.tp.string_val = sv;
  kiln_tensor t;
  CHECK_OK(from(&info, &p, &t));
  char **s = t.data;
  CHECK(t.dtype == KILN_STRING && !strcmp(s[0], "hi") && !strcmp(s[1], "") && !strcmp(s[2], ""));
  kiln_tensor_release(&t);
  /* the last value repeats: "hi" fills the shape */
  p.tp.n_string_val = 1;
  CHECK_OK(from(&info, &p, &t));
  s = t.data;
  CHECK(!strcmp(s[0], "hi") && !strcmp(s[1], "hi") && !strcmp(s[2], "hi") && s[1] != s[2]);
  kiln_tensor_release(&t);
  /* no values: empty strings */
  p.tp.n_string_val = 0;
  CHECK_OK(from(&info, &p, &t));
  s = t.data;
  CHECK(s[0] && !s[0][0] && s[2] && !s[2][0]);
  kiln_tensor_release(&t);
  ProtobufCBinaryData bad[2] = {{2, (uint8_t *)"ok"}, {3, (uint8_t *)"a\0b"}};
  p.tp.n_string_val = 2, p.tp.string_val = bad;
  CHECK_ERROR(from(&info, &p, &t), KILN_INVALID_ARGUMENT, "input 's': string_val[1] holds a NUL byte");
  CHECK(t.data == NULL);
  p.tp.n_string_val = 0;
  p.tp.tensor_content.data = (uint8_t *)"\x02hi", p.tp.tensor_content.len = 3;
  CHECK_ERROR(from(&info, &p, &t), KILN_UNIMPLEMENTED, "DT_STRING values in tensor_content are not supported");
}

/* TensorFlow fills a tensor from fewer values by repeating the last one, and from none with zeros. */
static void test_repeat_last(void) {
  kiln_value_info info = vi("x", KILN_FLOAT, 2, -1, 3);
  int64_t d[2] = {2, 3};
  float fv[2] = {7, 8};
  proto_tensor p;
  make_tp(&p, TENSORFLOW__DATA_TYPE__DT_FLOAT, 2, d);
  p.tp.n_float_val = 2, p.tp.float_val = fv;
  kiln_tensor t;
  CHECK_OK(from(&info, &p, &t));
  const float *f = t.data;
  CHECK(f[0] == 7 && f[1] == 8 && f[2] == 8 && f[5] == 8);
  kiln_tensor_release(&t);
  p.tp.n_float_val = 0;
  CHECK_OK(from(&info, &p, &t));
  f = t.data;
  CHECK(f[0] == 0 && f[5] == 0);
  kiln_tensor_release(&t);
  /* int64 and narrow ints repeat too */
  kiln_value_info i8 = vi("b", KILN_INT8, 1, 4, 0);
  int64_t d4[1] = {4};
  int32_t iv[1] = {-5};
  make_tp(&p, TENSORFLOW__DATA_TYPE__DT_INT8, 1, d4);
  p.tp.n_int_val = 1, p.tp.int_val = iv;
  CHECK_OK(from(&i8, &p, &t));
  CHECK(((int8_t *)t.data)[0] == -5 && ((int8_t *)t.data)[3] == -5);
  kiln_tensor_release(&t);
  /* more values than elements */
  float many[7] = {0};
  make_tp(&p, TENSORFLOW__DATA_TYPE__DT_FLOAT, 2, d);
  p.tp.n_float_val = 7, p.tp.float_val = many;
  CHECK_ERROR(from(&info, &p, &t), KILN_INVALID_ARGUMENT,
              "input 'x': float_val has 7 values, more than the 6 elements of shape [2,3]");
  /* a tiny message may not fill a huge tensor */
  int64_t big[2] = {(int64_t)1 << 22, 3};
  make_tp(&p, TENSORFLOW__DATA_TYPE__DT_FLOAT, 2, big);
  p.tp.n_float_val = 1, p.tp.float_val = fv;
  CHECK_ERROR(from(&info, &p, &t), KILN_RESOURCE_EXHAUSTED, "repeats the last value for at most 4194304 elements");
  CHECK(t.data == NULL);
}

static void test_scalar_and_undeclared(void) {
  kiln_value_info scalar = vi("k", KILN_DOUBLE, 0, 0, 0);
  double dv[1] = {2.5};
  proto_tensor p;
  make_tp(&p, TENSORFLOW__DATA_TYPE__DT_DOUBLE, -1, NULL); /* no tensor_shape: a scalar */
  p.tp.n_double_val = 1, p.tp.double_val = dv;
  kiln_tensor t;
  CHECK_OK(from(&scalar, &p, &t));
  CHECK(t.rank == 0 && ((double *)t.data)[0] == 2.5);
  kiln_tensor_release(&t);
  /* an input the model gives no dtype or shape takes the request's */
  kiln_value_info any = vi("u", KILN_UNDEFINED, -1, 0, 0);
  int64_t d[2] = {1, 2};
  int64_t lv[2] = {4, 5};
  make_tp(&p, TENSORFLOW__DATA_TYPE__DT_INT64, 2, d);
  p.tp.n_int64_val = 2, p.tp.int64_val = lv;
  CHECK_OK(from(&any, &p, &t));
  CHECK(t.dtype == KILN_INT64 && t.rank == 2 && ((int64_t *)t.data)[1] == 5);
  kiln_tensor_release(&t);
  p.tp.dtype = TENSORFLOW__DATA_TYPE__DT_INVALID;
  p.tp.n_int64_val = 0;
  CHECK_ERROR(from(&any, &p, &t), KILN_INVALID_ARGUMENT, "input 'u': dtype is not set (DT_INVALID)");
  p.tp.dtype = TENSORFLOW__DATA_TYPE__DT_COMPLEX64;
  CHECK_ERROR(from(&any, &p, &t), KILN_UNIMPLEMENTED, "input 'u': dtype DT_COMPLEX64 is not supported");
  p.tp.dtype = 77;
  CHECK_ERROR(from(&any, &p, &t), KILN_UNIMPLEMENTED, "dtype DataType 77 is not supported");
}

static void test_tensor_errors(void) {
  kiln_value_info info = vi("x", KILN_FLOAT, 2, -1, 3);
  int64_t d[2] = {2, 3};
  float fv[6] = {0};
  int64_t lv[1] = {1};
  proto_tensor p;
  kiln_tensor t;
  make_tp(&p, TENSORFLOW__DATA_TYPE__DT_INT64, 2, d);
  CHECK_ERROR(from(&info, &p, &t), KILN_INVALID_ARGUMENT, "input 'x': expected dtype DT_FLOAT, got DT_INT64");
  make_tp(&p, TENSORFLOW__DATA_TYPE__DT_FLOAT, 2, d);
  p.tp.n_int64_val = 1, p.tp.int64_val = lv;
  CHECK_ERROR(from(&info, &p, &t), KILN_INVALID_ARGUMENT,
              "input 'x': dtype DT_FLOAT takes its values in float_val, but int64_val holds 1 values");
  make_tp(&p, TENSORFLOW__DATA_TYPE__DT_FLOAT, 2, d);
  p.tp.n_float_val = 6, p.tp.float_val = fv;
  p.tp.tensor_content.data = (uint8_t *)fv, p.tp.tensor_content.len = sizeof fv;
  CHECK_ERROR(from(&info, &p, &t), KILN_INVALID_ARGUMENT, "input 'x' has values in both tensor_content and float_val");
  make_tp(&p, TENSORFLOW__DATA_TYPE__DT_FLOAT, 2, d);
  p.tp.tensor_content.data = (uint8_t *)fv, p.tp.tensor_content.len = 20;
  CHECK_ERROR(from(&info, &p, &t), KILN_INVALID_ARGUMENT,
              "input 'x': tensor_content has 20 bytes, but shape [2,3] of DT_FLOAT needs 24");
  int64_t wrong[2] = {2, 4};
  make_tp(&p, TENSORFLOW__DATA_TYPE__DT_FLOAT, 2, wrong);
  CHECK_ERROR(from(&info, &p, &t), KILN_INVALID_ARGUMENT, "input 'x': expected shape [-1,3], got [2,4]");
  int64_t neg[2] = {-1, 3};
  make_tp(&p, TENSORFLOW__DATA_TYPE__DT_FLOAT, 2, neg);
  CHECK_ERROR(from(&info, &p, &t), KILN_INVALID_ARGUMENT, "input 'x': dimension 0 is negative");
  make_tp(&p, TENSORFLOW__DATA_TYPE__DT_FLOAT, 2, d);
  p.shape.unknown_rank = 1;
  CHECK_ERROR(from(&info, &p, &t), KILN_INVALID_ARGUMENT, "input 'x': tensor_shape has unknown_rank set");
  int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  make_tp(&p, TENSORFLOW__DATA_TYPE__DT_FLOAT, 9, nine);
  CHECK_ERROR(from(&info, &p, &t), KILN_INVALID_ARGUMENT, "input 'x': tensor_shape has 9 dimensions, more than kiln's 8");
  int64_t huge[2] = {(int64_t)1 << 40, 3};
  make_tp(&p, TENSORFLOW__DATA_TYPE__DT_FLOAT, 2, huge);
  CHECK_ERROR(from(&info, &p, &t), KILN_RESOURCE_EXHAUSTED, "larger than the limit");
  /* narrow integers and half_val are range-checked */
  kiln_value_info u8 = vi("b", KILN_UINT8, 1, -1, 0);
  int64_t d2[1] = {2};
  int32_t iv[2] = {255, 300};
  make_tp(&p, TENSORFLOW__DATA_TYPE__DT_UINT8, 1, d2);
  p.tp.n_int_val = 2, p.tp.int_val = iv;
  CHECK_ERROR(from(&u8, &p, &t), KILN_INVALID_ARGUMENT, "input 'b': int_val[1] is 300, out of range for DT_UINT8 (0..255)");
  CHECK(t.data == NULL);
  kiln_value_info h = vi("h", KILN_FLOAT16, 1, -1, 0);
  int32_t hv[2] = {0x3c00, -1};
  make_tp(&p, TENSORFLOW__DATA_TYPE__DT_HALF, 1, d2);
  p.tp.n_half_val = 2, p.tp.half_val = hv;
  CHECK_ERROR(from(&h, &p, &t), KILN_INVALID_ARGUMENT, "input 'h': half_val[1] is -1, out of range for DT_HALF (0..65535)");
  kiln_value_info i16 = vi("s16", KILN_INT16, 1, -1, 0);
  int32_t sv[1] = {-40000};
  make_tp(&p, TENSORFLOW__DATA_TYPE__DT_INT16, 1, d2);
  p.tp.n_int_val = 1, p.tp.int_val = sv;
  CHECK_ERROR(from(&i16, &p, &t), KILN_INVALID_ARGUMENT, "int_val[0] is -40000, out of range for DT_INT16");
  /* a sequence input cannot come as a tensor */
  kiln_value_info seq = vi("q", KILN_FLOAT, 1, -1, 0);
  seq.kind = KILN_VALUE_SEQUENCE;
  make_tp(&p, TENSORFLOW__DATA_TYPE__DT_FLOAT, 1, d2);
  CHECK_ERROR(from(&seq, &p, &t), KILN_UNIMPLEMENTED, "input 'q' is not a tensor");
  /* NULL TensorProto (a map entry without a value) */
  int64_t total = 0;
  CHECK_ERROR(kx_grpc_tensor_from_proto(&info, NULL, &t, &total), KILN_INVALID_ARGUMENT,
              "expected dtype DT_FLOAT, got DT_INVALID");
  /* the request-wide element limit counts across inputs */
  total = KX_MAX_REQUEST_ELEMENTS - 5;
  make_tp(&p, TENSORFLOW__DATA_TYPE__DT_FLOAT, 2, d);
  CHECK_ERROR(kx_grpc_tensor_from_proto(&info, &p.tp, &t, &total), KILN_RESOURCE_EXHAUSTED,
              "the request's inputs hold more than");
  CHECK(total == KX_MAX_REQUEST_ELEMENTS - 5);
}

/* ------------------------------------------------------------------ PredictRequest / Response */

static kiln_value_info two_in[2], two_out[2];
static kx_signature two_sig(void) {
  two_in[0] = vi("x", KILN_FLOAT, 2, -1, 3);
  two_in[1] = vi("ids", KILN_INT64, 1, -1, 0);
  two_out[0] = vi("y", KILN_FLOAT, 2, -1, 3);
  two_out[1] = vi("z", KILN_INT64, 1, -1, 0);
  kx_signature s = {2, two_in, 2, two_out};
  return s;
}

typedef struct predict_req {
  Tensorflow__Serving__PredictRequest req;
  Tensorflow__Serving__ModelSpec spec;
  Tensorflow__Serving__PredictRequest__InputsEntry e[3];
  Tensorflow__Serving__PredictRequest__InputsEntry *ep[3];
  proto_tensor x, ids;
  float fv[6];
  int64_t lv[2];
} predict_req;

static void make_predict(predict_req *r) {
  memset(r, 0, sizeof *r);
  tensorflow__serving__predict_request__init(&r->req);
  tensorflow__serving__model_spec__init(&r->spec);
  r->spec.name = "m";
  r->req.model_spec = &r->spec;
  int64_t dx[2] = {2, 3}, di[1] = {2};
  make_tp(&r->x, TENSORFLOW__DATA_TYPE__DT_FLOAT, 2, dx);
  for (int i = 0; i < 6; i++) r->fv[i] = (float)i + 0.5f;
  r->x.tp.n_float_val = 6, r->x.tp.float_val = r->fv;
  make_tp(&r->ids, TENSORFLOW__DATA_TYPE__DT_INT64, 1, di);
  r->lv[0] = 10, r->lv[1] = 11;
  r->ids.tp.n_int64_val = 2, r->ids.tp.int64_val = r->lv;
  for (int i = 0; i < 3; i++) {
    tensorflow__serving__predict_request__inputs_entry__init(&r->e[i]);
    r->ep[i] = &r->e[i];
  }
  r->e[0].key = "ids", r->e[0].value = &r->ids.tp; /* map order is not input order */
  r->e[1].key = "x", r->e[1].value = &r->x.tp;
  r->req.n_inputs = 2;
  r->req.inputs = r->ep;
}

static void test_decode_predict(void) {
  kx_signature sig = two_sig();
  predict_req r;
  make_predict(&r);
  kiln_tensor in[2];
  kx_v2_request sel;
  CHECK_OK(kx_grpc_decode_predict(&sig, &r.req, in, &sel));
  CHECK(in[0].dtype == KILN_FLOAT && in[0].dims[0] == 2 && ((float *)in[0].data)[5] == 5.5f);
  CHECK(in[1].dtype == KILN_INT64 && ((int64_t *)in[1].data)[1] == 11);
  CHECK(sel.n_outputs == 2 && sel.outputs[0].index == 0 && sel.outputs[1].index == 1 && sel.id == NULL);
  kx_codec_release_all(in, 2);
  kx_v2_request_free(&sel);

  char *filter[2] = {"z", "y"};
  r.req.n_output_filter = 1, r.req.output_filter = filter;
  CHECK_OK(kx_grpc_decode_predict(&sig, &r.req, in, &sel));
  CHECK(sel.n_outputs == 1 && sel.outputs[0].index == 1);
  kx_codec_release_all(in, 2);
  kx_v2_request_free(&sel);
  r.req.n_output_filter = 2;
  CHECK_OK(kx_grpc_decode_predict(&sig, &r.req, in, &sel));
  CHECK(sel.n_outputs == 2 && sel.outputs[0].index == 1 && sel.outputs[1].index == 0);
  kx_codec_release_all(in, 2);
  kx_v2_request_free(&sel);

  char *unknown[1] = {"w"};
  r.req.n_output_filter = 1, r.req.output_filter = unknown;
  CHECK_ERROR(kx_grpc_decode_predict(&sig, &r.req, in, &sel), KILN_INVALID_ARGUMENT,
              "unknown output 'w' (the model's outputs: y, z)");
  CHECK(in[0].data == NULL && in[1].data == NULL && sel.outputs == NULL);
  char *twice[2] = {"y", "y"};
  r.req.n_output_filter = 2, r.req.output_filter = twice;
  CHECK_ERROR(kx_grpc_decode_predict(&sig, &r.req, in, &sel), KILN_INVALID_ARGUMENT, "output 'y' is requested twice");
  r.req.n_output_filter = 0;

  r.spec.signature_name = "other";
  CHECK_ERROR(kx_grpc_decode_predict(&sig, &r.req, in, &sel), KILN_NOT_FOUND, "signature 'other' not found");
  r.spec.signature_name = "serving_default";
  CHECK_OK(kx_grpc_decode_predict(&sig, &r.req, in, &sel));
  kx_codec_release_all(in, 2);
  kx_v2_request_free(&sel);

  r.req.n_inputs = 1;
  CHECK_ERROR(kx_grpc_decode_predict(&sig, &r.req, in, &sel), KILN_INVALID_ARGUMENT, "missing input 'x'");
  CHECK(in[1].data == NULL);
  r.e[2].key = "ids", r.e[2].value = &r.ids.tp;
  r.req.n_inputs = 3;
  CHECK_ERROR(kx_grpc_decode_predict(&sig, &r.req, in, &sel), KILN_INVALID_ARGUMENT, "input 'ids' is given twice");
  r.e[2].key = "extra";
  CHECK_ERROR(kx_grpc_decode_predict(&sig, &r.req, in, &sel), KILN_INVALID_ARGUMENT,
              "unknown input 'extra' (the model's inputs: x, ids)");
  r.req.n_inputs = 2;
  r.x.tp.n_float_val = 0, r.x.tp.n_int_val = 6, r.x.tp.int_val = (int32_t *)r.fv;
  CHECK_ERROR(kx_grpc_decode_predict(&sig, &r.req, in, &sel), KILN_INVALID_ARGUMENT,
              "input 'x': dtype DT_FLOAT takes its values in float_val, but int_val holds 6 values");
  CHECK(in[0].data == NULL && in[1].data == NULL);
}

static void test_encode_predict(void) {
  kx_signature sig = two_sig();
  kiln_tensor y, z;
  int64_t dy[2] = {2, 3}, dz[1] = {2};
  CHECK_OK(kiln_tensor_alloc(&y, KILN_FLOAT, 2, dy));
  CHECK_OK(kiln_tensor_alloc(&z, KILN_INT64, 1, dz));
  for (int i = 0; i < 6; i++) ((float *)y.data)[i] = (float)i * 0.25f;
  ((int64_t *)z.data)[0] = -7, ((int64_t *)z.data)[1] = 1LL << 40;
  const kiln_tensor *outs[2] = {&y, &z};
  uint8_t *buf;
  size_t len;
  CHECK_OK(kx_grpc_encode_predict(&sig, "m", 3, NULL, outs, &buf, &len));
  Tensorflow__Serving__PredictResponse *r = tensorflow__serving__predict_response__unpack(NULL, len, buf);
  CHECK(r != NULL);
  if (r) {
    CHECK(!strcmp(r->model_spec->name, "m") && !strcmp(r->model_spec->signature_name, "serving_default"));
    CHECK(r->model_spec->version_choice_case == TENSORFLOW__SERVING__MODEL_SPEC__VERSION_CHOICE_VERSION &&
          r->model_spec->version->value == 3);
    CHECK(r->n_outputs == 2 && !strcmp(r->outputs[0]->key, "y") && !strcmp(r->outputs[1]->key, "z"));
    const Tensorflow__TensorProto *ty = r->outputs[0]->value;
    CHECK(ty->dtype == TENSORFLOW__DATA_TYPE__DT_FLOAT && ty->tensor_shape->n_dim == 2 &&
          ty->tensor_shape->dim[0]->size == 2 && ty->tensor_shape->dim[1]->size == 3);
    CHECK(ty->tensor_content.len == 24 && !memcmp(ty->tensor_content.data, y.data, 24) && ty->n_float_val == 0);
    /* decoding our own output gives the tensor back */
    kiln_value_info zi = vi("z", KILN_INT64, 1, -1, 0);
    kiln_tensor back;
    int64_t total = 0;
    CHECK_OK(kx_grpc_tensor_from_proto(&zi, r->outputs[1]->value, &back, &total));
    CHECK(((int64_t *)back.data)[1] == 1LL << 40);
    kiln_tensor_release(&back);
    tensorflow__serving__predict_response__free_unpacked(r, NULL);
  }
  free(buf);
  /* an output filter, no version, strings */
  kx_v2_output_request pick[1] = {{1, 0}};
  kx_v2_request sel = {NULL, 1, pick};
  const kiln_tensor *only_z[2] = {NULL, &z};
  CHECK_OK(kx_grpc_encode_predict(&sig, "m", -1, &sel, only_z, &buf, &len));
  r = tensorflow__serving__predict_response__unpack(NULL, len, buf);
  CHECK(r && r->n_outputs == 1 && !strcmp(r->outputs[0]->key, "z") &&
        r->model_spec->version_choice_case == TENSORFLOW__SERVING__MODEL_SPEC__VERSION_CHOICE__NOT_SET);
  if (r) tensorflow__serving__predict_response__free_unpacked(r, NULL);
  free(buf);
  kiln_value_info so = vi("s", KILN_STRING, 1, -1, 0);
  kx_signature ssig = {1, &so, 1, &so};
  kiln_tensor st;
  int64_t d2[1] = {2};
  CHECK_OK(kiln_tensor_alloc(&st, KILN_STRING, 1, d2));
  ((char **)st.data)[0] = strdup("héllo");
  ((char **)st.data)[1] = strdup("");
  const kiln_tensor *souts[1] = {&st};
  CHECK_OK(kx_grpc_encode_predict(&ssig, "m", 1, NULL, souts, &buf, &len));
  r = tensorflow__serving__predict_response__unpack(NULL, len, buf);
  CHECK(r && r->outputs[0]->value->dtype == TENSORFLOW__DATA_TYPE__DT_STRING &&
        r->outputs[0]->value->n_string_val == 2 && r->outputs[0]->value->string_val[0].len == 6 &&
        !memcmp(r->outputs[0]->value->string_val[0].data, "héllo", 6) &&
        r->outputs[0]->value->tensor_content.len == 0);
  if (r) tensorflow__serving__predict_response__free_unpacked(r, NULL);
  free(buf);
  /* a missing output is the server's bug */
  CHECK_ERROR(kx_grpc_encode_predict(&sig, "m", 1, NULL, only_z, &buf, &len), KILN_INTERNAL, "output 'y' is missing");
  CHECK(buf == NULL);
  kiln_tensor_release(&st);
  kiln_tensor_release(&y);
  kiln_tensor_release(&z);
}

static void test_tfs_metadata(void) {
  kiln_value_info in[2] = {vi("x", KILN_FLOAT, 2, -1, 784), vi("any", KILN_UNDEFINED, -1, 0, 0)};
  in[0].dim_names[0] = "batch";
  kiln_value_info out[1] = {vi("label", KILN_INT64, 1, -1, 0)};
  kx_signature sig = {2, in, 1, out};
  uint8_t *buf;
  size_t len;
  CHECK_OK(kx_grpc_encode_tfs_metadata(&sig, "mnist", 4, &buf, &len));
  Tensorflow__Serving__GetModelMetadataResponse *r =
      tensorflow__serving__get_model_metadata_response__unpack(NULL, len, buf);
  CHECK(r != NULL);
  if (!r) return;
  CHECK(!strcmp(r->model_spec->name, "mnist") && r->model_spec->version->value == 4);
  CHECK(r->n_metadata == 1 && !strcmp(r->metadata[0]->key, "signature_def"));
  const Google__Protobuf__Any *any = r->metadata[0]->value;
  CHECK(!strcmp(any->type_url, "type.googleapis.com/tensorflow.serving.SignatureDefMap"));
  Tensorflow__Serving__SignatureDefMap *m =
      tensorflow__serving__signature_def_map__unpack(NULL, any->value.len, any->value.data);
  CHECK(m && m->n_signature_def == 1 && !strcmp(m->signature_def[0]->key, "serving_default"));
  if (m) {
    const Tensorflow__SignatureDef *d = m->signature_def[0]->value;
    CHECK(!strcmp(d->method_name, "tensorflow/serving/predict") && d->n_inputs == 2 && d->n_outputs == 1);
    const Tensorflow__TensorInfo *x = d->inputs[0]->value;
    CHECK(!strcmp(d->inputs[0]->key, "x") && !strcmp(x->name, "x") && x->dtype == TENSORFLOW__DATA_TYPE__DT_FLOAT);
    CHECK(x->tensor_shape->n_dim == 2 && x->tensor_shape->dim[0]->size == -1 &&
          !strcmp(x->tensor_shape->dim[0]->name, "batch") && x->tensor_shape->dim[1]->size == 784);
    const Tensorflow__TensorInfo *a = d->inputs[1]->value;
    CHECK(a->dtype == TENSORFLOW__DATA_TYPE__DT_FLOAT && a->tensor_shape->unknown_rank && a->tensor_shape->n_dim == 0);
    CHECK(d->outputs[0]->value->dtype == TENSORFLOW__DATA_TYPE__DT_INT64);
    tensorflow__serving__signature_def_map__free_unpacked(m, NULL);
  }
  tensorflow__serving__get_model_metadata_response__free_unpacked(r, NULL);
  free(buf);
}

/* ------------------------------------------------------------------ KServe V2 */

typedef struct infer_req {
  Inference__ModelInferRequest req;
  Inference__ModelInferRequest__InferInputTensor in[3];
  Inference__ModelInferRequest__InferInputTensor *inp[3];
  Inference__InferTensorContents c[3];
  Inference__ModelInferRequest__InferRequestedOutputTensor out[3];
  Inference__ModelInferRequest__InferRequestedOutputTensor *outp[3];
  int64_t shape[3][2];
  ProtobufCBinaryData raw[3];
} infer_req;

/* One input k called name of datatype dt and shape [d0] (d1 > 0: [d0,d1]), no data yet. */
static void v2_input(infer_req *r, int k, const char *name, const char *dt, int64_t d0, int64_t d1) {
  inference__model_infer_request__infer_input_tensor__init(&r->in[k]);
  r->in[k].name = (char *)name;
  r->in[k].datatype = (char *)dt;
  r->shape[k][0] = d0, r->shape[k][1] = d1;
  r->in[k].n_shape = d1 > 0 ? 2 : 1;
  r->in[k].shape = r->shape[k];
  inference__infer_tensor_contents__init(&r->c[k]);
  r->inp[k] = &r->in[k];
}

static void make_infer(infer_req *r) {
  memset(r, 0, sizeof *r);
  inference__model_infer_request__init(&r->req);
  r->req.model_name = "m";
  r->req.inputs = r->inp;
  r->req.outputs = r->outp;
  for (int i = 0; i < 3; i++) {
    inference__model_infer_request__infer_requested_output_tensor__init(&r->out[i]);
    r->outp[i] = &r->out[i];
  }
}

static void test_v2_contents_every_dtype(void) {
  static const struct {
    kiln_dtype dtype;
    const char *name;
  } types[] = {{KILN_BOOL, "BOOL"},   {KILN_INT8, "INT8"},     {KILN_INT16, "INT16"},   {KILN_INT32, "INT32"},
               {KILN_INT64, "INT64"}, {KILN_UINT8, "UINT8"},   {KILN_UINT16, "UINT16"}, {KILN_UINT32, "UINT32"},
               {KILN_UINT64, "UINT64"}, {KILN_FLOAT, "FP32"},  {KILN_DOUBLE, "FP64"},   {KILN_STRING, "BYTES"}};
  protobuf_c_boolean bv[3] = {1, 0, 1};
  int32_t iv[3] = {-3, 0, 100};
  int64_t lv[3] = {INT64_MIN, 0, INT64_MAX};
  uint32_t uv[3] = {0, 7, 200};
  uint64_t qv[3] = {0, 1, UINT64_MAX};
  float fv[3] = {0.5f, -1, 1e30f};
  double dv[3] = {0.25, -2, 1e300};
  ProtobufCBinaryData sv[3] = {{1, (uint8_t *)"a"}, {0, (uint8_t *)""}, {3, (uint8_t *)"xyz"}};
  for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
    kiln_dtype t = types[k].dtype;
    kiln_value_info info = vi("x", t, 1, -1, 0);
    kx_signature sig = {1, &info, 1, &info};
    infer_req r;
    make_infer(&r);
    v2_input(&r, 0, "x", types[k].name, 3, 0);
    r.req.n_inputs = 1;
    r.in[0].contents = &r.c[0];
    Inference__InferTensorContents *c = &r.c[0];
    switch (t) {
    case KILN_BOOL: c->n_bool_contents = 3, c->bool_contents = bv; break;
    case KILN_INT64: c->n_int64_contents = 3, c->int64_contents = lv; break;
    case KILN_UINT8: case KILN_UINT16: case KILN_UINT32: c->n_uint_contents = 3, c->uint_contents = uv; break;
    case KILN_UINT64: c->n_uint64_contents = 3, c->uint64_contents = qv; break;
    case KILN_FLOAT: c->n_fp32_contents = 3, c->fp32_contents = fv; break;
    case KILN_DOUBLE: c->n_fp64_contents = 3, c->fp64_contents = dv; break;
    case KILN_STRING: c->n_bytes_contents = 3, c->bytes_contents = sv; break;
    default: c->n_int_contents = 3, c->int_contents = iv; break;
    }
    kiln_tensor a, b;
    kx_v2_request sel;
    CHECK_OK(kx_grpc_decode_v2_infer(&sig, &r.req, &a, &sel));
    CHECK(a.dtype == t && a.rank == 1 && a.dims[0] == 3 && sel.n_outputs == 1);
    for (int i = 0; i < 3; i++) {
      switch (t) {
      case KILN_BOOL: CHECK(((uint8_t *)a.data)[i] == bv[i]); break;
      case KILN_INT64: CHECK(((int64_t *)a.data)[i] == lv[i]); break;
      case KILN_UINT64: CHECK(((uint64_t *)a.data)[i] == qv[i]); break;
      case KILN_UINT8: case KILN_UINT16: case KILN_UINT32: CHECK(kiln_tensor_get_f64(&a, i) == uv[i]); break;
      case KILN_FLOAT: CHECK(((float *)a.data)[i] == fv[i]); break;
      case KILN_DOUBLE: CHECK(((double *)a.data)[i] == dv[i]); break;
      case KILN_STRING: CHECK(!strcmp(((char **)a.data)[i], (const char *)sv[i].data)); break;
      default: CHECK(kiln_tensor_get_f64(&a, i) == iv[i]); break;
      }
    }
    kx_v2_request_free(&sel);
    /* the response carries it raw; decoding that raw form as a request gives the same tensor */
    const kiln_tensor *outs[1] = {&a};
    uint8_t *buf;
    size_t len;
    CHECK_OK(kx_grpc_encode_v2_infer(&sig, "m", 2, NULL, outs, 0, &buf, &len));
    Inference__ModelInferResponse *resp = inference__model_infer_response__unpack(NULL, len, buf);
    CHECK(resp && resp->n_outputs == 1 && !strcmp(resp->outputs[0]->datatype, types[k].name) &&
          resp->n_raw_output_contents == 1 && !strcmp(resp->model_version, "2"));
    if (resp) {
      infer_req q;
      make_infer(&q);
      v2_input(&q, 0, "x", types[k].name, 3, 0);
      q.req.n_inputs = 1;
      q.req.n_raw_input_contents = 1;
      q.req.raw_input_contents = resp->raw_output_contents;
      CHECK_OK(kx_grpc_decode_v2_infer(&sig, &q.req, &b, &sel));
      if (t == KILN_STRING) {
        for (int i = 0; i < 3; i++) CHECK(!strcmp(((char **)a.data)[i], ((char **)b.data)[i]));
      } else {
        CHECK(!memcmp(a.data, b.data, kiln_tensor_nbytes(&a)));
      }
      kiln_tensor_release(&b);
      kx_v2_request_free(&sel);
      inference__model_infer_response__free_unpacked(resp, NULL);
    }
    free(buf);
    kiln_tensor_release(&a);
  }
}

static void test_v2_raw_and_outputs(void) {
  kiln_value_info in[2] = {vi("h", KILN_FLOAT16, 2, -1, 2), vi("s", KILN_STRING, 1, -1, 0)};
  kx_signature sig = {2, in, 2, in};
  infer_req r;
  make_infer(&r);
  v2_input(&r, 0, "h", "FP16", 1, 2);
  v2_input(&r, 1, "s", "BYTES", 2, 0);
  r.req.n_inputs = 2;
  uint16_t halves[2] = {0x3c00, 0xc000};
  uint8_t bytes[] = {2, 0, 0, 0, 'o', 'k', 0, 0, 0, 0};
  r.raw[0].data = (uint8_t *)halves, r.raw[0].len = 4;
  r.raw[1].data = bytes, r.raw[1].len = sizeof bytes;
  r.req.n_raw_input_contents = 2, r.req.raw_input_contents = r.raw;
  r.req.id = "req-1";
  r.out[0].name = "s";
  r.req.n_outputs = 1;
  kiln_tensor t[2];
  kx_v2_request sel;
  CHECK_OK(kx_grpc_decode_v2_infer(&sig, &r.req, t, &sel));
  CHECK(kiln_half_to_float(((uint16_t *)t[0].data)[1]) == -2.0f);
  CHECK(!strcmp(((char **)t[1].data)[0], "ok") && !strcmp(((char **)t[1].data)[1], ""));
  CHECK(sel.id && !strcmp(sel.id, "req-1") && sel.n_outputs == 1 && sel.outputs[0].index == 1);
  /* the stream form wraps the same response, with the id and only the selected output */
  const kiln_tensor *outs[2] = {&t[0], &t[1]};
  uint8_t *buf;
  size_t len;
  CHECK_OK(kx_grpc_encode_v2_infer(&sig, "m", -1, &sel, outs, 1, &buf, &len));
  Inference__ModelStreamInferResponse *sr = inference__model_stream_infer_response__unpack(NULL, len, buf);
  CHECK(sr && !sr->error_message[0] && sr->infer_response);
  if (sr && sr->infer_response) {
    const Inference__ModelInferResponse *ir = sr->infer_response;
    CHECK(!strcmp(ir->model_name, "m") && !strcmp(ir->model_version, "") && !strcmp(ir->id, "req-1"));
    CHECK(ir->n_outputs == 1 && !strcmp(ir->outputs[0]->name, "s") && ir->outputs[0]->n_shape == 1 &&
          ir->outputs[0]->shape[0] == 2 && ir->n_raw_output_contents == 1);
    CHECK(ir->raw_output_contents[0].len == sizeof bytes && !memcmp(ir->raw_output_contents[0].data, bytes, sizeof bytes));
  }
  if (sr) inference__model_stream_infer_response__free_unpacked(sr, NULL);
  free(buf);
  kx_codec_release_all(t, 2);
  kx_v2_request_free(&sel);

  /* malformed raw BYTES */
  uint8_t cut[] = {5, 0, 0, 0, 'a'};
  r.raw[1].data = cut, r.raw[1].len = sizeof cut;
  CHECK_ERROR(kx_grpc_decode_v2_infer(&sig, &r.req, t, &sel), KILN_INVALID_ARGUMENT,
              "input 's': raw_input_contents[1] has 5 bytes, too few for 2 BYTES elements");
  uint8_t longer[] = {6, 0, 0, 0, 'a', 'b', 'c', 'd', 'e'};
  r.raw[1].data = longer, r.raw[1].len = sizeof longer;
  CHECK_ERROR(kx_grpc_decode_v2_infer(&sig, &r.req, t, &sel), KILN_INVALID_ARGUMENT,
              "input 's': BYTES element 0 is 6 bytes long, but only 5 bytes are left");
  uint8_t extra[] = {1, 0, 0, 0, 'a', 0, 0, 0, 0, 'z'};
  r.raw[1].data = extra, r.raw[1].len = sizeof extra;
  CHECK_ERROR(kx_grpc_decode_v2_infer(&sig, &r.req, t, &sel), KILN_INVALID_ARGUMENT,
              "input 's': raw_input_contents[1] has 10 bytes, but its 2 BYTES elements take 9");
  uint8_t nul[] = {2, 0, 0, 0, 'a', 0, 0, 0, 0, 0};
  r.raw[1].data = nul, r.raw[1].len = sizeof nul;
  CHECK_ERROR(kx_grpc_decode_v2_infer(&sig, &r.req, t, &sel), KILN_INVALID_ARGUMENT,
              "input 's': raw BYTES element 0 holds a NUL byte");
  CHECK(t[0].data == NULL && t[1].data == NULL && sel.id == NULL && sel.outputs == NULL);
  r.raw[1].data = bytes, r.raw[1].len = sizeof bytes;
  r.raw[0].len = 6;
  CHECK_ERROR(kx_grpc_decode_v2_infer(&sig, &r.req, t, &sel), KILN_INVALID_ARGUMENT,
              "input 'h': raw_input_contents[0] has 6 bytes, but shape [1,2] of FP16 needs 4");
  r.raw[0].len = 4;
  r.req.n_raw_input_contents = 1;
  CHECK_ERROR(kx_grpc_decode_v2_infer(&sig, &r.req, t, &sel), KILN_INVALID_ARGUMENT,
              "raw_input_contents has 1 entries, but the request has 2 inputs");
  r.req.n_raw_input_contents = 2;
  r.in[1].contents = &r.c[1];
  CHECK_ERROR(kx_grpc_decode_v2_infer(&sig, &r.req, t, &sel), KILN_INVALID_ARGUMENT,
              "input 's' has contents, but the request uses raw_input_contents");
  r.in[1].contents = NULL;
  r.out[0].name = "nope";
  CHECK_ERROR(kx_grpc_decode_v2_infer(&sig, &r.req, t, &sel), KILN_INVALID_ARGUMENT,
              "unknown output 'nope' (the model's outputs: h, s)");
  r.out[0].name = "s", r.out[1].name = "s";
  r.req.n_outputs = 2;
  CHECK_ERROR(kx_grpc_decode_v2_infer(&sig, &r.req, t, &sel), KILN_INVALID_ARGUMENT, "output 's' is requested twice");
  r.req.n_outputs = 0;
  /* FP16 cannot come in contents */
  r.req.n_raw_input_contents = 0;
  r.in[0].contents = &r.c[0];
  float fv[2] = {1, 2};
  r.c[0].n_fp32_contents = 2, r.c[0].fp32_contents = fv;
  CHECK_ERROR(kx_grpc_decode_v2_infer(&sig, &r.req, t, &sel), KILN_INVALID_ARGUMENT,
              "input 'h': FP16 data must be sent in raw_input_contents, but fp32_contents holds 2 values");
  r.c[0].n_fp32_contents = 0;
  CHECK_ERROR(kx_grpc_decode_v2_infer(&sig, &r.req, t, &sel), KILN_INVALID_ARGUMENT,
              "input 'h': FP16 data must be sent in raw_input_contents");
}

static void test_v2_errors(void) {
  kiln_value_info in[2] = {vi("x", KILN_FLOAT, 2, -1, 3), vi("b", KILN_INT8, 1, -1, 0)};
  kx_signature sig = {2, in, 2, in};
  infer_req r;
  make_infer(&r);
  v2_input(&r, 0, "x", "FP32", 2, 3);
  v2_input(&r, 1, "b", "INT8", 2, 0);
  r.req.n_inputs = 2;
  float fv[6] = {1, 2, 3, 4, 5, 6};
  int32_t iv[2] = {1, -128};
  r.in[0].contents = &r.c[0], r.c[0].n_fp32_contents = 6, r.c[0].fp32_contents = fv;
  r.in[1].contents = &r.c[1], r.c[1].n_int_contents = 2, r.c[1].int_contents = iv;
  kiln_tensor t[2];
  kx_v2_request sel;
  CHECK_OK(kx_grpc_decode_v2_infer(&sig, &r.req, t, &sel));
  CHECK(((int8_t *)t[1].data)[1] == -128 && ((float *)t[0].data)[5] == 6 && sel.n_outputs == 2);
  kx_codec_release_all(t, 2);
  kx_v2_request_free(&sel);

  iv[1] = 128;
  CHECK_ERROR(kx_grpc_decode_v2_infer(&sig, &r.req, t, &sel), KILN_INVALID_ARGUMENT,
              "input 'b': int_contents element 1 is 128, out of range for INT8 (-128..127)");
  CHECK(t[0].data == NULL);
  iv[1] = 0;
  r.c[0].n_fp32_contents = 5;
  CHECK_ERROR(kx_grpc_decode_v2_infer(&sig, &r.req, t, &sel), KILN_INVALID_ARGUMENT,
              "input 'x': shape [2,3] needs 6 elements, fp32_contents has 5");
  r.c[0].n_fp32_contents = 6;
  int64_t lv[1] = {1};
  r.c[0].n_int64_contents = 1, r.c[0].int64_contents = lv;
  CHECK_ERROR(kx_grpc_decode_v2_infer(&sig, &r.req, t, &sel), KILN_INVALID_ARGUMENT,
              "input 'x': datatype FP32 takes its values in fp32_contents, but int64_contents holds 1 values");
  r.c[0].n_int64_contents = 0;
  r.in[0].datatype = "FP64";
  CHECK_ERROR(kx_grpc_decode_v2_infer(&sig, &r.req, t, &sel), KILN_INVALID_ARGUMENT,
              "input 'x': expected datatype FP32, got FP64");
  r.in[0].datatype = "FLOAT";
  CHECK_ERROR(kx_grpc_decode_v2_infer(&sig, &r.req, t, &sel), KILN_INVALID_ARGUMENT, "input 'x': unknown datatype 'FLOAT'");
  r.in[0].datatype = "FP32";
  r.shape[0][1] = 4;
  CHECK_ERROR(kx_grpc_decode_v2_infer(&sig, &r.req, t, &sel), KILN_INVALID_ARGUMENT,
              "input 'x': expected shape [-1,3], got [2,4]");
  r.shape[0][1] = -3;
  CHECK_ERROR(kx_grpc_decode_v2_infer(&sig, &r.req, t, &sel), KILN_INVALID_ARGUMENT, "input 'x': dimension 1 is negative");
  r.shape[0][1] = 3;
  r.in[0].contents = NULL;
  CHECK_ERROR(kx_grpc_decode_v2_infer(&sig, &r.req, t, &sel), KILN_INVALID_ARGUMENT,
              "input 'x': shape [2,3] needs 6 elements, fp32_contents has 0");
  r.in[0].contents = &r.c[0];
  r.req.n_inputs = 1;
  CHECK_ERROR(kx_grpc_decode_v2_infer(&sig, &r.req, t, &sel), KILN_INVALID_ARGUMENT, "missing input 'b'");
  r.in[1].name = "x";
  r.req.n_inputs = 2;
  CHECK_ERROR(kx_grpc_decode_v2_infer(&sig, &r.req, t, &sel), KILN_INVALID_ARGUMENT, "input 'x' is given twice");
  r.in[1].name = "q";
  CHECK_ERROR(kx_grpc_decode_v2_infer(&sig, &r.req, t, &sel), KILN_INVALID_ARGUMENT,
              "unknown input 'q' (the model's inputs: x, b)");
  CHECK(t[0].data == NULL && t[1].data == NULL && sel.outputs == NULL);
}

static void test_v2_metadata(void) {
  kiln_value_info in[2] = {vi("x", KILN_FLOAT, 2, -1, 784), vi("any", KILN_UNDEFINED, -1, 0, 0)};
  kiln_value_info out[1] = {vi("label", KILN_INT64, 1, -1, 0)};
  kx_signature sig = {2, in, 1, out};
  int64_t versions[2] = {1, 12};
  uint8_t *buf;
  size_t len;
  CHECK_OK(kx_grpc_encode_v2_metadata(&sig, "mnist", versions, 2, &buf, &len));
  Inference__ModelMetadataResponse *r = inference__model_metadata_response__unpack(NULL, len, buf);
  CHECK(r != NULL);
  if (r) {
    CHECK(!strcmp(r->name, "mnist") && !strcmp(r->platform, "onnxruntime_onnx"));
    CHECK(r->n_versions == 2 && !strcmp(r->versions[0], "1") && !strcmp(r->versions[1], "12"));
    CHECK(r->n_inputs == 2 && !strcmp(r->inputs[0]->datatype, "FP32") && r->inputs[0]->n_shape == 2 &&
          r->inputs[0]->shape[0] == -1 && r->inputs[0]->shape[1] == 784);
    CHECK(!strcmp(r->inputs[1]->name, "any") && !strcmp(r->inputs[1]->datatype, "FP32") &&
          r->inputs[1]->n_shape == 1 && r->inputs[1]->shape[0] == -1);
    CHECK(r->n_outputs == 1 && !strcmp(r->outputs[0]->datatype, "INT64"));
    inference__model_metadata_response__free_unpacked(r, NULL);
  }
  free(buf);
}

TEST_MAIN(TEST(test_every_dtype_both_forms), TEST(test_strings), TEST(test_repeat_last),
          TEST(test_scalar_and_undeclared), TEST(test_tensor_errors), TEST(test_decode_predict),
          TEST(test_encode_predict), TEST(test_tfs_metadata), TEST(test_v2_contents_every_dtype),
          TEST(test_v2_raw_and_outputs), TEST(test_v2_errors), TEST(test_v2_metadata))
