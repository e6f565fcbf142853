/* The gRPC payload codecs (internal to serve): TF Serving's PredictRequest / TensorProto and KServe
 * V2's ModelInferRequest (protobuf-c messages, generated from proto/) decoded into kiln tensors
 * validated against a model's signature, and responses and metadata packed back into protobuf
 * bytes. Pure functions like codec.h's: no model, no I/O; they share its signature, limits and
 * error wording, so the REST and gRPC front ends accept and refuse the same tensors. */
#ifndef KILN_SERVE_CODEC_GRPC_H
#define KILN_SERVE_CODEC_GRPC_H

#include "kserve/grpc_predict_v2.pb-c.h"
#include "serve/codec.h"
#include "tensorflow/core/framework/tensor.pb-c.h"
#include "tensorflow_serving/apis/predict.pb-c.h"

/* Most elements a TensorProto's typed field may fill by repeating its last value (TensorFlow's rule
 * for fields holding fewer values than the shape has elements, zero values meaning zeros): a
 * constant tensor this large from a few bytes is plenty for real clients, and the bound keeps a
 * tiny message from making the server write gigabytes. More is RESOURCE_EXHAUSTED. */
#define KX_GRPC_MAX_REPEAT_ELEMENTS ((int64_t)1 << 22)

struct kx_scratch;
/* Packs m into a malloc'd buffer; RESOURCE_EXHAUSTED when s (an encoder's scratch allocator, may be
 * NULL) failed or memory runs out. On error *out is NULL and *len 0. */
kiln_status kx_grpc_pack(const ProtobufCMessage *m, struct kx_scratch *s, uint8_t **out, size_t *len);

/* TensorFlow's DataType number for a kiln dtype (DT_INVALID = 0 for those TF Serving cannot carry),
 * and back (KILN_UNDEFINED for DT_INVALID, complex and the other types kiln does not serve). */
int kx_grpc_tf_dtype(kiln_dtype t);
kiln_dtype kx_grpc_dtype_from_tf(int tf_dtype);

/* Decodes a TensorProto as the input `info` into an owned tensor, counting its elements into
 * *total against KX_MAX_REQUEST_ELEMENTS. TensorFlow's Tensor::FromProto rules: dtype must be the
 * declared one (an undeclared input takes the request's; DT_INVALID is an error); no tensor_shape
 * is a scalar, unknown_rank an error, and the shape must fit the signature (kx_codec_check_shape);
 * a non-empty tensor_content must be exactly numel * element size bytes (little-endian; not for
 * DT_STRING, which is UNIMPLEMENTED there); otherwise the dtype's typed field (float_val, double_val,
 * int_val for DT_INT32/INT16/INT8/UINT8/UINT16 with range checks, int64_val, bool_val, string_val,
 * half_val for DT_HALF/DT_BFLOAT16 as 16-bit patterns, uint32_val, uint64_val) holds 0..numel values,
 * fewer repeating the last (none: zeros) up to KX_GRPC_MAX_REPEAT_ELEMENTS. Values in any other
 * field, or in both tensor_content and the typed field, are INVALID_ARGUMENT naming them; so is a
 * NUL byte inside a string (kiln strings are NUL-terminated). On error *out is empty. */
kiln_status kx_grpc_tensor_from_proto(const kiln_value_info *info, const Tensorflow__TensorProto *tp,
                                      kiln_tensor *out, int64_t *total);

/* Decodes PredictRequest.inputs against sig into inputs[] (sig->n_inputs owned tensors, model input
 * order) and output_filter into *sel (sel->outputs: the selected model output indices in filter
 * order, n_outputs their count; an empty filter selects every output; sel->id is NULL). The
 * model_spec's signature_name must be "" or "serving_default" (else NOT_FOUND). Unknown, repeated
 * or missing inputs and unknown or repeated output names are INVALID_ARGUMENT naming them. On
 * error no tensor is left allocated and *sel is empty (kx_v2_request_free either way). */
kiln_status kx_grpc_decode_predict(const kx_signature *sig, const Tensorflow__Serving__PredictRequest *req,
                                   kiln_tensor *inputs, kx_v2_request *sel);

/* Packs a PredictResponse: model_spec {name: model, version (left out when version < 0),
 * signature_name: "serving_default"} and outputs {name: TensorProto} for sel's outputs (sel NULL:
 * all; outputs[i] may be NULL for one sel does not select), each with dtype, tensor_shape and the
 * elements in tensor_content (little-endian, as TF Serving answers) or, for strings, string_val.
 * Outputs are contiguous row-major. *out is malloc'd (the caller frees it); on error it is NULL. */
kiln_status kx_grpc_encode_predict(const kx_signature *sig, const char *model, int64_t version,
                                   const kx_v2_request *sel, const kiln_tensor *const *outputs, uint8_t **out,
                                   size_t *len);

/* Packs a GetModelMetadataResponse with kx_tfs_encode_metadata's content: model_spec {name,
 * version (left out when < 0)}, metadata {"signature_def": Any(type_url
 * "type.googleapis.com/tensorflow.serving.SignatureDefMap", SignatureDefMap {"serving_default":
 * SignatureDef {inputs, outputs: TensorInfo (name, dtype (undeclared: DT_FLOAT), tensor_shape with
 * -1 for free dims and unknown_rank for rank < 0), method_name "tensorflow/serving/predict"}})}. */
kiln_status kx_grpc_encode_tfs_metadata(const kx_signature *sig, const char *model, int64_t version, uint8_t **out,
                                        size_t *len);

/* Decodes a ModelInferRequest against sig into inputs[] (model input order): each input by name
 * with its datatype (a declared dtype must match exactly; an undeclared one takes it) and shape
 * (kx_codec_check_shape), its data either in `contents` (the datatype's field: bool_contents,
 * int_contents for INT8/INT16/INT32, int64_contents, uint_contents for UINT8/UINT16/UINT32,
 * uint64_contents, fp32_contents, fp64_contents, bytes_contents; 8- and 16-bit values range-checked;
 * FP16 and BF16 only raw) or, when raw_input_contents is given, there (one entry per input in
 * `inputs` order, little-endian; BYTES elements each a 4-byte little-endian length and the bytes;
 * BOOL bytes other than 0 become 1). Element counts must match the shape exactly; values in
 * another field, or contents beside raw_input_contents, are INVALID_ARGUMENT. Requested outputs go
 * into *sel as indices (none requested: every output) and a non-empty id into sel->id (malloc'd).
 * On error no tensor is left allocated and *sel is empty. */
kiln_status kx_grpc_decode_v2_infer(const kx_signature *sig, const Inference__ModelInferRequest *req,
                                    kiln_tensor *inputs, kx_v2_request *sel);

/* Packs a ModelInferResponse (stream != 0: a ModelStreamInferResponse holding it as infer_response,
 * error_message empty): model_name, model_version (decimal; "" when version < 0), id (sel->id or
 * ""), outputs {name, datatype, shape} in sel's order (sel NULL: every output) with their elements
 * in raw_output_contents (what Triton sends; BYTES as 4-byte lengths + bytes, a string over 4 GiB
 * OUT_OF_RANGE). *out is malloc'd; on error it is NULL. */
kiln_status kx_grpc_encode_v2_infer(const kx_signature *sig, const char *model, int64_t version,
                                    const kx_v2_request *sel, const kiln_tensor *const *outputs, int stream,
                                    uint8_t **out, size_t *len);

/* Packs a ModelMetadataResponse with kx_v2_encode_metadata's content: name, versions (decimal
 * text), platform "onnxruntime_onnx", inputs / outputs {name, datatype (undeclared: FP32), shape
 * (-1 for free dims; [-1] for an unknown rank)}. *out is malloc'd; on error it is NULL. */
kiln_status kx_grpc_encode_v2_metadata(const kx_signature *sig, const char *model, const int64_t *versions,
                                       int n_versions, uint8_t **out, size_t *len);

#endif
