/* The REST payload codecs (internal to serve): TF Serving's predict JSON (row and columnar
 * formats) and KServe V2's infer JSON with the binary tensor extension, decoded into kiln tensors
 * validated against a model's signature, and outputs encoded back. Also the metadata documents
 * both APIs describe a model with. Pure functions of their inputs: no model, no I/O, so each is
 * fuzzed on its own. */
#ifndef KILN_SERVE_CODEC_H
#define KILN_SERVE_CODEC_H

#include "core/buf.h"
#include "kiln/graph.h"

/* What the front ends know of a model: its declared inputs and outputs (shallow copies of the
 * model's kiln_value_info; names point into the model). */
typedef struct kx_signature {
  int n_inputs;
  kiln_value_info *inputs;
  int n_outputs;
  kiln_value_info *outputs;
} kx_signature;

kiln_status kx_signature_from_model(const kiln_model *m, kx_signature *out);
void kx_signature_free(kx_signature *s);
/* Whether two signatures take and give the same tensors: names, kinds, dtypes and shapes. */
int kx_signature_equal(const kx_signature *a, const kx_signature *b);

/* Most elements one decoded request may hold (all inputs together); more is RESOURCE_EXHAUSTED. */
#define KX_MAX_REQUEST_ELEMENTS ((int64_t)1 << 28)

/* ---- TF Serving REST: POST /v1/models/M[...]:predict */

/* Decodes {"instances": [...]} (row format: one list entry per batch row; each entry is the value
 * of the only input, or an object naming every input) or {"inputs": value | {name: value}}
 * (columnar: the whole tensor, batch dimension included). "signature_name" is accepted ("" or
 * "serving_default"; anything else is NOT_FOUND). On success inputs[i] (sig->n_inputs entries,
 * model input order) are owned tensors of the declared dtypes and *columnar tells the format.
 * Errors are INVALID_ARGUMENT naming the input and what was expected: invalid JSON (with the byte
 * offset), an unknown or missing input, a ragged list, a non-numeric or out-of-range value
 * (strings, booleans for numbers, 1.5 for an integer input, 300 for uint8), a rank or a fixed
 * dimension that differs from the signature, rows whose batch sizes differ. On error no tensor
 * is left allocated.
 * Values: numbers go into the declared dtype (an undeclared one decodes as float); integers must
 * be integral and in range, and int64/uint64 stop at 2^53 because cJSON reads every number as a
 * double (larger ones are refused, never rounded); booleans (or 0/1) only for bool, strings only
 * for string ({"b64": ...} is UNIMPLEMENTED). An empty list takes its inner dimensions from the
 * signature (free ones as 0), so [] is an empty batch. A scalar (rank 0) input cannot be fed in
 * the row format. NaN and Infinity are not accepted in requests (cJSON rejects them). */
kiln_status kx_tfs_decode_predict(const kx_signature *sig, const char *body, size_t len, kiln_tensor *inputs,
                                  int *columnar);
/* Encodes outputs (sig->n_outputs tensors, model output order, dims[0] is the batch) as
 * {"predictions": [...]} (row format: one entry per batch row, the bare value when the model has
 * one output, else an object by output name) or {"outputs": value | {name: value}} (columnar).
 * Non-finite numbers are written NaN, Infinity, -Infinity. Outputs are contiguous row-major (views
 * are fine). The row format needs every output to have a dimension 0 of one size (else
 * INVALID_ARGUMENT pointing at the columnar format). On error `out` is left as it was. */
kiln_status kx_tfs_encode_predict(const kx_signature *sig, const kiln_tensor *const *outputs, int columnar,
                                  kx_buf *out);
/* GET /v1/models/M[/versions/V]/metadata (an undeclared dtype as DT_FLOAT, what the decoder
 * assumes; version < 0 as ""):
 * {"model_spec":{"name":M,"signature_name":"","version":"V"},"metadata":{"signature_def":{
 *   "signature_def":{"serving_default":{"inputs":{NAME:{"dtype":"DT_FLOAT","tensor_shape":{"dim":[
 *   {"size":"-1","name":""}],"unknown_rank":false},"name":NAME}},"outputs":{...},
 *   "method_name":"tensorflow/serving/predict"}}}}} */
void kx_tfs_encode_metadata(const kx_signature *sig, const char *model, int64_t version, kx_buf *out);

/* ---- KServe V2 / Triton: POST /v2/models/M[/versions/V]/infer */

typedef struct kx_v2_output_request {
  int index;  /* model output index */
  int binary; /* answer in the binary extension */
} kx_v2_output_request;

typedef struct kx_v2_request {
  char *id;                      /* the request's "id", NULL when absent */
  int n_outputs;                 /* outputs to return: the requested ones, else all */
  kx_v2_output_request *outputs; /* n_outputs entries */
} kx_v2_request;

/* Decodes {"id", "parameters", "inputs": [{"name", "shape", "datatype", "data" | "parameters":
 * {"binary_data_size": N}}], "outputs": [{"name", "parameters": {"binary_data": bool}}]}.
 * `header_len` is Inference-Header-Content-Length (-1 when absent: the whole body is JSON); the
 * binary data of inputs that give binary_data_size follows the JSON in input order, and the sizes
 * must add up to exactly what follows. "data" may be flat or nested (row-major); its element count
 * must equal the product of "shape". Validates datatype, shape and values against the signature
 * as kx_tfs_decode_predict does; an unknown requested output is INVALID_ARGUMENT. A request-level
 * parameters.binary_data_output sets the default for every output. A declared dtype must match
 * "datatype" exactly (an undeclared one takes it). Binary BOOL bytes other than 0 become 1; binary
 * BYTES elements may not hold a NUL byte (kiln's strings are NUL-terminated). On error no tensor
 * is left allocated and *req is empty. */
kiln_status kx_v2_decode_infer(const kx_signature *sig, const char *body, size_t len, int64_t header_len,
                               kiln_tensor *inputs, kx_v2_request *req);
void kx_v2_request_free(kx_v2_request *req);
/* Encodes {"model_name","model_version","id"?,"outputs":[{"name","datatype","shape","data"} or
 * {"name","datatype","shape","parameters":{"binary_data_size":N}}]}; binary outputs' bytes follow
 * the JSON in output order, and *json_len is the JSON's length (the response's
 * Inference-Header-Content-Length; equal to out->len when nothing is binary). req NULL returns
 * every output as JSON; outputs[i] may be NULL for an output req does not ask for. "model_version"
 * is left out when version < 0. On error `out` is left as it was. */
kiln_status kx_v2_encode_infer(const kx_signature *sig, const char *model, int64_t version, const kx_v2_request *req,
                               const kiln_tensor *const *outputs, kx_buf *out, size_t *json_len);
/* GET /v2/models/M[/versions/V]: {"name":M,"versions":["1","2"],"platform":"onnxruntime_onnx",
 * "inputs":[{"name","datatype":"FP32","shape":[-1,784]}],"outputs":[...]}. An undeclared dtype is
 * given as FP32 (what the decoders assume), an unknown rank as the shape [-1]. */
void kx_v2_encode_metadata(const kx_signature *sig, const char *model, const int64_t *versions, int n_versions,
                           kx_buf *out);

/* Names of a dtype in each API ("DT_FLOAT", "FP32"); NULL for dtypes the API cannot carry. */
const char *kx_tf_dtype_name(kiln_dtype t);
const char *kx_v2_dtype_name(kiln_dtype t);
kiln_dtype kx_v2_dtype_from_name(const char *name);

/* ---- Shared by the codec files (codec.c, codec_tfs.c, codec_v2.c); not for other callers. */

struct cJSON;
/* Parses a JSON document of exactly len bytes (trailing whitespace allowed); errors give the byte
 * offset. The tree (cJSON nodes in an arena, src/serve/json.c) is freed with kx_codec_free_json,
 * never cJSON_Delete. */
kiln_status kx_codec_parse_json(const char *body, size_t len, struct cJSON **out);
void kx_codec_free_json(struct cJSON *root);
/* The dtype an input is decoded into (KILN_UNDEFINED: float); UNIMPLEMENTED for inputs the serving
 * APIs cannot carry (sequences, complex numbers). */
kiln_status kx_codec_check_input(const kiln_value_info *info, kiln_dtype *dtype);
/* INVALID_ARGUMENT "input 'x': expected shape [-1,784], got [2,783]" unless the shape fits. */
kiln_status kx_codec_check_shape(const kiln_value_info *info, int rank, const int64_t *dims);
/* The shape of nested JSON lists, read along the first element of each level. */
kiln_status kx_codec_infer_shape(const struct cJSON *v, const char *input, int max_rank, int *rank, int64_t *dims);
/* Element count of a shape; negative dims are INVALID_ARGUMENT, more than KX_MAX_REQUEST_ELEMENTS
 * (or an overflowing product) RESOURCE_EXHAUSTED. */
kiln_status kx_codec_shape_numel(const char *input, int rank, const int64_t *dims, int64_t *numel);
/* Allocates an input tensor, counting its elements into *total against KX_MAX_REQUEST_ELEMENTS. */
kiln_status kx_codec_alloc(kiln_tensor *t, const char *input, kiln_dtype dtype, int rank, const int64_t *dims,
                           int64_t *total);
/* Writes nested lists v into t (t->data NULL: only checks them) exactly matching t's shape from
 * dimension `dim` on: dim 0 is the whole tensor, dim 1 the row `row` of dimension 0. Errors name
 * the flat element index or the ragged row. */
kiln_status kx_codec_fill(const struct cJSON *v, const char *input, const kiln_tensor *t, int dim, int64_t row);
/* Writes V2 "data" (flat or nested, row-major) into t; its element count must be t's. */
kiln_status kx_codec_fill_flat(const struct cJSON *data, const char *input, const kiln_tensor *t);
kiln_status kx_codec_unknown_name(const kiln_value_info *infos, int n, const char *what, const char *name);
/* The index of the value called `name` among infos[0..n), or -1. */
int kx_codec_find(const kiln_value_info *infos, int n, const char *name);
/* A request's input `name`: its index into *index, counted in seen[] (sig->n_inputs zeroed entries
 * at the start of the request); INVALID_ARGUMENT for an unknown name (listing the model's inputs)
 * or one given twice. */
kiln_status kx_codec_claim_input(const kx_signature *sig, const char *name, int *seen, int *index);
/* INVALID_ARGUMENT "missing input 'x'" for the first input seen[] has not counted. */
kiln_status kx_codec_check_all_inputs(const kx_signature *sig, const int *seen);
char *kx_codec_format_dims(char *s, size_t size, int rank, const int64_t *dims);
void kx_codec_release_all(kiln_tensor *t, int n);
/* Checks output i before encoding: present, a dtype JSON can carry, data for its elements. */
kiln_status kx_codec_check_output(const kx_signature *sig, const kiln_tensor *const *outputs, int i);
/* Elements [begin, begin+n) of a contiguous tensor, comma-separated JSON. */
void kx_codec_put_elements(kx_buf *b, const kiln_tensor *t, int64_t begin, int64_t n);
/* Nested lists for t's dimensions from `dim` on, starting at flat element `begin`. */
void kx_codec_put_nested(kx_buf *b, const kiln_tensor *t, int dim, int64_t begin);
void kx_codec_put_dims(kx_buf *b, int rank, const int64_t *dims);
/* Ends an encoder: an out-of-memory buffer becomes RESOURCE_EXHAUSTED, and on error `out` is cut
 * back to `start`. */
kiln_status kx_codec_finish(kx_buf *out, size_t start, kiln_status s);

#endif
