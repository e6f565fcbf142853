#!/usr/bin/python3
"""Writes the seed inputs of the fuzz targets into tests/fuzz/corpus/{model,npy,proto,payload}.
Seeds are small, valid or nearly valid inputs that reach every branch of the parsers; regression
inputs (crashes found so far) sit beside them under names starting with "crash-", and so do the
inputs that longer fuzzing runs found to add coverage (named by their SHA-1, kept with
`fuzz_model -merge=1 tests/fuzz/corpus/model NEW_CORPUS`).

    /usr/bin/python3 tests/fuzz/make_corpus.py
"""
import io
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))


def write(kind, name, data):
    path = os.path.join(HERE, "corpus", kind, name)
    with open(path, "wb") as f:
        f.write(data)


def model(nodes, inputs, outputs, inits=(), opset=13, extra_opsets=()):
    graph = helper.make_graph(nodes, "seed", inputs, outputs, list(inits))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)] + list(extra_opsets))
    return m.SerializeToString()


def vi(name, dtype=TensorProto.FLOAT, shape=("N", 4)):
    return helper.make_tensor_value_info(name, dtype, list(shape) if shape is not None else None)


def models():
    f32 = np.arange(16, dtype=np.float32).reshape(4, 4)
    yield "gemm_relu", model([helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["y"])],
                             [vi("x")], [vi("y")], [numpy_helper.from_array(f32, "w"), numpy_helper.from_array(f32[0], "b")])
    typed = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], f32.flatten().tolist())
    yield "typed_init", model([helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x")], [vi("y")], [typed])
    ext = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 4], data_location=TensorProto.EXTERNAL)
    for k, v in [("location", "weights.bin"), ("offset", "64"), ("length", "64")]:
        ext.external_data.add(key=k, value=v)
    yield "external", model([helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x")], [vi("y")], [ext])
    esc = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 4], data_location=TensorProto.EXTERNAL)
    esc.external_data.add(key="location", value="../../etc/passwd")
    yield "external_escape", model([helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x")], [vi("y")], [esc])
    yield "conv", model([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2], group=1)],
                        [vi("x", shape=(1, 2, 8, 8))], [vi("y", shape=None)],
                        [numpy_helper.from_array(np.ones((4, 2, 3, 3), np.float32), "w")])
    yield "constants", model([helper.make_node("Constant", [], ["s"], value_ints=[2, 8]),
                              helper.make_node("Constant", [], ["f"], value_float=1.5),
                              helper.make_node("Constant", [], ["t"], value=numpy_helper.from_array(np.ones(3, np.int32))),
                              helper.make_node("Reshape", ["x", "s"], ["y"])],
                             [vi("x")], [vi("y", shape=None)])
    then_g = helper.make_graph([helper.make_node("Relu", ["x"], ["r"])], "then", [], [vi("r", shape=None)])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["n"])], "else", [], [vi("n", shape=None)])
    yield "if", model([helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)],
                      [vi("c", TensorProto.BOOL, ()), vi("x")], [vi("y", shape=None)])
    body = helper.make_graph([helper.make_node("Add", ["acc", "x"], ["acc2"]), helper.make_node("Identity", ["cond"], ["cond2"])],
                             "body", [vi("i", TensorProto.INT64, ()), vi("cond", TensorProto.BOOL, ()), vi("acc", shape=None)],
                             [vi("cond2", TensorProto.BOOL, ()), vi("acc2", shape=None)])
    yield "loop", model([helper.make_node("Loop", ["m", "", "x"], ["y"], body=body)],
                        [vi("m", TensorProto.INT64, ()), vi("x")], [vi("y", shape=None)])
    yield "strings", model([helper.make_node("StringNormalizer", ["x"], ["y"], case_change_action="UPPER", stopwords=["a"])],
                           [vi("x", TensorProto.STRING, (3,))], [vi("y", TensorProto.STRING, None)], opset=10)
    seq_t = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None)
    yield "sequence", model([helper.make_node("SequenceConstruct", ["x", "x"], ["s"])], [vi("x")], [seq_t])
    yield "unsupported", model([helper.make_node("Foo", ["x"], ["y"], domain="com.example")], [vi("x")], [vi("y")],
                               extra_opsets=[helper.make_opsetid("com.example", 1)])
    yield "legacy_ir3", model([helper.make_node("Add", ["x", "w"], ["y"], broadcast=1)], [vi("x"), vi("w", shape=(4,))], [vi("y")],
                              [numpy_helper.from_array(f32[0], "w")], opset=6)


def npys():
    for name, arr in [("f4", np.arange(6, dtype=np.float32).reshape(2, 3)), ("i8", np.array([1, -2], np.int64)),
                      ("bool", np.array([True, False])), ("scalar", np.float64(3.5)), ("empty", np.zeros((0, 4), np.float16)),
                      ("unicode", np.array(["héllo", ""])), ("bytes", np.array([b"ab", b"c"]))]:
        buf = io.BytesIO()
        np.save(buf, arr)
        yield name, buf.getvalue()


def protos():
    yield "tensor_raw", b"\x00" + numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "t").SerializeToString()
    yield "tensor_typed", b"\x00" + helper.make_tensor("t", TensorProto.INT64, [3], [1, 2, 3]).SerializeToString()
    yield "tensor_string", b"\x00" + helper.make_tensor("t", TensorProto.STRING, [2], [b"a", b"bc"]).SerializeToString()
    yield "tensor_f16", b"\x00" + helper.make_tensor("t", TensorProto.FLOAT16, [2], [15360, 16384]).SerializeToString()
    seq = onnx.SequenceProto(name="s", elem_type=onnx.SequenceProto.TENSOR)
    seq.tensor_values.extend([numpy_helper.from_array(np.ones(2, np.float32)), numpy_helper.from_array(np.zeros(3, np.float32))])
    yield "sequence", b"\x01" + seq.SerializeToString()
    opt = onnx.OptionalProto(name="o", elem_type=onnx.OptionalProto.TENSOR, tensor_value=numpy_helper.from_array(np.ones(2, np.int32)))
    yield "optional", b"\x02" + opt.SerializeToString()
    yield "optional_empty", b"\x02" + onnx.OptionalProto(name="o").SerializeToString()


def payloads():
    """fuzz_payload: byte 0 picks the signature (0: x float [-1,4], ids int64 [-1], flag bool [-1];
    1: s string [-1], h float16 [-1,2], u uint8 any shape, k double scalar, bf bfloat16 [2,-1];
    2: x float [-1,4] alone), bytes 1-2 the V2 header length (0xffff: none), then the body."""
    import json
    import struct

    def p(sig, body, header_len=None, binary=b""):
        body = body.encode() if isinstance(body, str) else body
        h = 0xFFFF if header_len is None else header_len
        return bytes([sig]) + struct.pack("<H", h) + body + binary

    yield "tfs_row_multi", p(0, '{"instances":[{"x":[1,2,3,4],"ids":7,"flag":true},{"x":[5,6,7,8.5],"ids":-1,"flag":0}]}')
    yield "tfs_columnar", p(0, '{"signature_name":"serving_default","inputs":{"x":[[1,2,3,4]],"ids":[1,2],"flag":[false]}}')
    yield "tfs_row_bare", p(2, '{"instances":[[1,2,3,4],[0.5,-1e-3,1e30,0]]}')
    yield "tfs_columnar_bare", p(2, '{"inputs":[[1,2,3,4]]}')
    yield "tfs_types", p(1, '{"inputs":{"s":["a","\\u00e9\\n"],"h":[[0.5,2]],"u":[[[1],[255]]],"k":2.5,"bf":[[1],[2]]}}')
    yield "tfs_ragged", p(0, '{"instances":[{"x":[1,2,3,4],"ids":1,"flag":true},{"x":[1,2,3],"ids":1,"flag":true}]}')
    yield "tfs_bad_values", p(1, '{"inputs":{"s":[{"b64":"aGk="}],"h":[[70000,1]],"u":[300,-1],"k":[1],"bf":[]}}')
    yield "tfs_unknown_input", p(0, '{"instances":[{"x":[1,2,3,4],"foo":1}]}')
    v2 = {"id": "r", "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [[1, 2, 3, 4], [5, 6, 7, 8]]},
                                {"name": "ids", "shape": [2], "datatype": "INT64", "data": [3, 4]},
                                {"name": "flag", "shape": [1], "datatype": "BOOL", "data": [True]}],
          "outputs": [{"name": "x", "parameters": {"binary_data": True}}, {"name": "ids"}]}
    yield "v2_json", p(0, json.dumps(v2))
    bins = struct.pack("<4f", 1, 2, 3, 4) + struct.pack("<q", -5) + b"\x01"
    hdr = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}},
                                 {"name": "ids", "shape": [1], "datatype": "INT64", "parameters": {"binary_data_size": 8}},
                                 {"name": "flag", "shape": [1], "datatype": "BOOL", "parameters": {"binary_data_size": 1}}],
                      "parameters": {"binary_data_output": True}})
    yield "v2_binary", p(0, hdr, len(hdr), bins)
    yield "v2_binary_short", p(0, hdr, len(hdr), bins[:-2])
    strs = b"".join(struct.pack("<I", len(x)) + x for x in [b"ab", b"", b"xyz"])
    hdr = json.dumps({"inputs": [{"name": "s", "shape": [3], "datatype": "BYTES", "parameters": {"binary_data_size": len(strs)}},
                                 {"name": "h", "shape": [1, 2], "datatype": "FP16", "parameters": {"binary_data_size": 4}},
                                 {"name": "u", "shape": [2, 1, 1], "datatype": "UINT8", "data": [1, 2]},
                                 {"name": "k", "shape": [], "datatype": "FP64", "data": [0.25]},
                                 {"name": "bf", "shape": [2, 1], "datatype": "BF16", "data": [1.5, -2]}]})
    yield "v2_bytes_binary", p(1, hdr, len(hdr), strs + b"\x00\x3c\x00\xc0")
    yield "v2_header_too_long", p(2, '{"inputs":[]}', 500)
    yield "v2_bad_shape", p(2, '{"inputs":[{"name":"x","shape":[-1,4.5],"datatype":"FP32","data":[]}]}')
    yield "v2_count_mismatch", p(2, '{"inputs":[{"name":"x","shape":[99999,4],"datatype":"FP32","data":[1,2]}],"outputs":[{"name":"y"}]}')
    yield "invalid_json", p(0, '{"instances":[1,2')


def main():
    for kind, gen in [("model", models), ("npy", npys), ("proto", protos), ("payload", payloads)]:
        os.makedirs(os.path.join(HERE, "corpus", kind), exist_ok=True)
        for name, data in gen():
            write(kind, "seed-" + name, data)


if __name__ == "__main__":
    main()
