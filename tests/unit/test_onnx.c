/* The ONNX layer: TensorProto in every storage form, external data (mapped, bounded, confined to
 * the model's folder), SequenceProto / OptionalProto, and model files with weights outside. */
#include <sys/stat.h>
#include <unistd.h>

#include "kiln/graph.h"
#include "kiln/onnx.h"
#include "onnx/onnx-data.pb-c.h"
#include "onnx_builder.h"
#include "test.h"

static kiln_status parse_tensor(Onnx__TensorProto *tp, kiln_value *out) {
  size_t len = onnx__tensor_proto__get_packed_size(tp);
  uint8_t *buf = malloc(len + 1);
  onnx__tensor_proto__pack(tp, buf);
  kiln_status s = kiln_proto_value_parse(buf, len, KILN_PROTO_TENSOR, "t.pb", out);
  free(buf);
  return s;
}

static void test_tensor_forms(void) {
  Onnx__TensorProto tp = ONNX__TENSOR_PROTO__INIT;
  int64_t dims[2] = {2, 2};
  tp.n_dims = 2;
  tp.dims = dims;
  tp.has_data_type = 1;
  kiln_value v;

  tp.data_type = KILN_FLOAT; /* float_data */
  float f[4] = {1, -2, 3.5f, 4};
  tp.n_float_data = 4;
  tp.float_data = f;
  CHECK_OK(parse_tensor(&tp, &v));
  CHECK(v.kind == KILN_VALUE_TENSOR && ((float *)v.tensor.data)[2] == 3.5f);
  kiln_value_release(&v);
  tp.n_float_data = 3; /* wrong count */
  CHECK_ERROR(parse_tensor(&tp, &v), KILN_INVALID_ARGUMENT, "float_data holds 3 values, its shape needs 4");
  tp.n_float_data = 0;

  tp.data_type = KILN_FLOAT16; /* packed into int32_data */
  int32_t halves[4] = {0x3c00, 0xc000, 0x3800, 0x7c00};
  tp.n_int32_data = 4;
  tp.int32_data = halves;
  CHECK_OK(parse_tensor(&tp, &v));
  CHECK(kiln_half_to_float(((uint16_t *)v.tensor.data)[1]) == -2.0f);
  kiln_value_release(&v);
  tp.n_int32_data = 0;

  tp.data_type = KILN_INT64; /* raw_data, little-endian */
  int64_t raw[4] = {1, -1, INT64_MAX, 0};
  tp.has_raw_data = 1;
  tp.raw_data.data = (uint8_t *)raw;
  tp.raw_data.len = sizeof raw;
  CHECK_OK(parse_tensor(&tp, &v));
  CHECK(((int64_t *)v.tensor.data)[2] == INT64_MAX);
  kiln_value_release(&v);
  tp.raw_data.len = sizeof raw - 8;
  CHECK_ERROR(parse_tensor(&tp, &v), KILN_INVALID_ARGUMENT, "raw_data has 24 bytes, its shape int64[2,2] needs 32");
  tp.has_raw_data = 0;

  tp.data_type = 99;
  CHECK_ERROR(parse_tensor(&tp, &v), KILN_INVALID_ARGUMENT, "unknown data_type 99");
  tp.data_type = KILN_FLOAT;
  CHECK_ERROR(parse_tensor(&tp, &v), KILN_INVALID_ARGUMENT, "float_data holds 0 values");
  CHECK_ERROR(kiln_proto_value_parse("\xff\xff", 2, KILN_PROTO_TENSOR, "junk.pb", &v), KILN_INVALID_ARGUMENT, "junk.pb");
}

/* A model whose weight lives in weights.bin beside it, at an offset. */
static void write_external_model(const char *dir, const char *location, int64_t offset, int64_t length) {
  tb_model *b = tb_new(13);
  tb_input(b, "x", KILN_FLOAT, 1, (int64_t[]){4});
  tb_output(b, "y", KILN_FLOAT);
  tb_add_node(b, "Add", "x,w", "y");
  Onnx__TensorProto *tp = calloc(1, sizeof *tp);
  onnx__tensor_proto__init(tp);
  tp->name = strdup("w");
  tp->has_data_type = 1;
  tp->data_type = KILN_FLOAT;
  tp->n_dims = 1;
  tp->dims = calloc(1, sizeof *tp->dims);
  tp->dims[0] = 4;
  tp->has_data_location = 1;
  tp->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
  char off[32], len[32];
  snprintf(off, sizeof off, "%lld", (long long)offset);
  snprintf(len, sizeof len, "%lld", (long long)length);
  const char *kv[3][2] = {{"location", location}, {"offset", off}, {"length", len}};
  tp->n_external_data = 3;
  tp->external_data = calloc(3, sizeof *tp->external_data);
  for (int i = 0; i < 3; i++) {
    tp->external_data[i] = calloc(1, sizeof **tp->external_data);
    onnx__string_string_entry_proto__init(tp->external_data[i]);
    tp->external_data[i]->key = strdup(kv[i][0]);
    tp->external_data[i]->value = strdup(kv[i][1]);
  }
  b->graph.initializer = tb_grow(b->graph.initializer, &b->graph.n_initializer, sizeof *b->graph.initializer);
  b->graph.initializer[b->graph.n_initializer - 1] = tp;
  void *buf;
  size_t n;
  tb_pack(b, &buf, &n);
  tb_free(b);
  char path[512];
  snprintf(path, sizeof path, "%s/model.onnx", dir);
  FILE *f = fopen(path, "wb");
  fwrite(buf, 1, n, f);
  fclose(f);
  free(buf);
}

static void test_external_data(void) {
  char dir[] = "/tmp/kiln_test_external_XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char path[512], model[512];
  snprintf(path, sizeof path, "%s/weights.bin", dir);
  snprintf(model, sizeof model, "%s/model.onnx", dir);
  FILE *f = fopen(path, "wb");
  float pad[2] = {0, 0}, w[4] = {10, 20, 30, 40};
  fwrite(pad, sizeof pad, 1, f); /* the weight starts at byte 8 */
  fwrite(w, sizeof w, 1, f);
  fclose(f);

  kiln_model *m = NULL;
  write_external_model(dir, "weights.bin", 8, 16);
  CHECK_OK(kiln_model_load(model, NULL, &m));
  if (m) {
    kiln_session *s;
    CHECK_OK(kiln_session_create(m, NULL, &s));
    kiln_tensor x;
    CHECK_OK(kiln_tensor_alloc(&x, KILN_FLOAT, 1, (int64_t[]){4}));
    const kiln_tensor *in[1] = {&x}, *out[1];
    CHECK_OK(kiln_session_run_tensors(s, in, out));
    for (int i = 0; i < 4; i++) CHECK(((float *)out[0]->data)[i] == w[i]);
    kiln_tensor_release(&x);
    kiln_session_free(s);
    kiln_model_free(m);
  }
  write_external_model(dir, "weights.bin", 16, 16);
  CHECK_ERROR(kiln_model_load(model, NULL, &m), KILN_INVALID_ARGUMENT, "is too short for offset 16 + 16 bytes");
  write_external_model(dir, "weights.bin", 8, 12);
  CHECK_ERROR(kiln_model_load(model, NULL, &m), KILN_INVALID_ARGUMENT, "external data length 12 does not match its shape (16 bytes)");
  write_external_model(dir, "../../etc/passwd", 0, 16);
  CHECK_ERROR(kiln_model_load(model, NULL, &m), KILN_INVALID_ARGUMENT, "escapes the model's folder");
  write_external_model(dir, "/etc/passwd", 0, 16);
  CHECK_ERROR(kiln_model_load(model, NULL, &m), KILN_INVALID_ARGUMENT, "is absolute");
  write_external_model(dir, "missing.bin", 0, 16);
  CHECK_ERROR(kiln_model_load(model, NULL, &m), KILN_NOT_FOUND, "missing.bin");
  /* a symlink inside the folder that points outside it is refused too */
  char link[512];
  snprintf(link, sizeof link, "%s/escape.bin", dir);
  CHECK(symlink("/etc/hostname", link) == 0);
  write_external_model(dir, "escape.bin", 0, 0);
  CHECK_ERROR(kiln_model_load(model, NULL, &m), KILN_INVALID_ARGUMENT, "escapes the model's folder");
  /* from memory, external data needs a folder to be named */
  write_external_model(dir, "weights.bin", 8, 16);
  void *buf;
  size_t len;
  CHECK_OK(kiln_file_read(model, 0, &buf, &len));
  kiln_load_options none = {.name = "mem.onnx"}, with_dir = {.name = "mem.onnx", .base_dir = dir};
  CHECK_ERROR(kiln_model_load_buffer(buf, len, &none, &m), KILN_INVALID_ARGUMENT, "without a folder");
  CHECK_OK(kiln_model_load_buffer(buf, len, &with_dir, &m));
  kiln_model_free(m);
  free(buf);
  unlink(link);
  unlink(path);
  unlink(model);
  rmdir(dir);
}

static void test_sequence_and_optional(void) {
  Onnx__SequenceProto seq = ONNX__SEQUENCE_PROTO__INIT;
  Onnx__TensorProto items[2] = {ONNX__TENSOR_PROTO__INIT, ONNX__TENSOR_PROTO__INIT};
  Onnx__TensorProto *ptrs[2] = {&items[0], &items[1]};
  int64_t dims[2][1] = {{2}, {3}};
  int64_t data[5] = {1, 2, 3, 4, 5};
  for (int i = 0; i < 2; i++) {
    items[i].n_dims = 1;
    items[i].dims = dims[i];
    items[i].has_data_type = 1;
    items[i].data_type = KILN_INT64;
    items[i].n_int64_data = (size_t)dims[i][0];
    items[i].int64_data = data + 2 * i;
  }
  seq.n_tensor_values = 2;
  seq.tensor_values = ptrs;
  size_t len = onnx__sequence_proto__get_packed_size(&seq);
  uint8_t *buf = malloc(len);
  onnx__sequence_proto__pack(&seq, buf);
  kiln_value v;
  CHECK_OK(kiln_proto_value_parse(buf, len, KILN_PROTO_SEQUENCE, "s.pb", &v));
  CHECK(v.kind == KILN_VALUE_SEQUENCE && v.count == 2 && v.items[1].dims[0] == 3 && ((int64_t *)v.items[1].data)[2] == 5);
  kiln_value_release(&v);
  free(buf);

  Onnx__OptionalProto opt = ONNX__OPTIONAL_PROTO__INIT;
  len = onnx__optional_proto__get_packed_size(&opt);
  buf = malloc(len + 1);
  onnx__optional_proto__pack(&opt, buf);
  CHECK_OK(kiln_proto_value_parse(buf, len, KILN_PROTO_OPTIONAL, "o.pb", &v));
  CHECK(v.kind == KILN_VALUE_NONE);
  free(buf);
}

static void test_nesting_bomb(void) {
  /* ModelProto.graph (field 7) -> NodeProto (field 1) -> AttributeProto (field 5) -> GraphProto
   * (field 6) -> ... nested far deeper than any real model, in a few kilobytes */
  enum { LEVELS = 3000 };
  size_t cap = LEVELS * 16, len = 0;
  uint8_t *buf = malloc(cap);
  for (int i = LEVELS - 1; i >= 0; i--) { /* build inside out: each level wraps the previous */
    static const uint8_t tags[3] = {(1 << 3) | 2, (5 << 3) | 2, (6 << 3) | 2};
    uint8_t tag = i == 0 ? (7 << 3) | 2 : tags[(i - 1) % 3];
    uint8_t head[8];
    size_t h = 0, n = len;
    head[h++] = tag;
    do {
      head[h++] = (uint8_t)((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
      n >>= 7;
    } while (n);
    memmove(buf + h, buf, len);
    memcpy(buf, head, h);
    len += h;
  }
  kiln_model *m = NULL;
  kiln_load_options opt = {.name = "deep.onnx"};
  CHECK_ERROR(kiln_model_load_buffer(buf, len, &opt, &m), KILN_INVALID_ARGUMENT, "nested deeper than 64 levels");
  free(buf);
}

TEST_MAIN(TEST(test_tensor_forms), TEST(test_external_data), TEST(test_sequence_and_optional), TEST(test_nesting_bomb))
