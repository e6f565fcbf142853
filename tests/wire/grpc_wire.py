#!/usr/bin/python3
"""Wire compatibility of kiln's gRPC codec with Google's protobuf: requests packed here by Python's
protobuf (stubs from proto/ via grpc_stubs.py) with numpy data go through grpc_wire_tool (kiln's
decoder, then its encoder, outputs = inputs), and the responses are read back here and compared
with numpy: every dtype kiln serves, TF Serving's typed fields (with the repeat-last rule) and
tensor_content, KServe V2 contents and raw_input_contents, the stream wrapper, both metadata
responses, and a refused request.

    grpc_wire.py GRPC_WIRE_TOOL
"""
import os
import struct
import subprocess
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "integration"))
import grpc_stubs  # noqa: E402

TOOL = None
S = None

# The tool's signature: name -> (numpy dtype, TF DataType name, V2 datatype); all rank 1 [-1] but f32 [-1,4].
IO = [("f32", np.float32, "DT_FLOAT", "FP32"), ("f64", np.float64, "DT_DOUBLE", "FP64"),
      ("i8", np.int8, "DT_INT8", "INT8"), ("u8", np.uint8, "DT_UINT8", "UINT8"),
      ("i16", np.int16, "DT_INT16", "INT16"), ("u16", np.uint16, "DT_UINT16", "UINT16"),
      ("i32", np.int32, "DT_INT32", "INT32"), ("i64", np.int64, "DT_INT64", "INT64"),
      ("u32", np.uint32, "DT_UINT32", "UINT32"), ("u64", np.uint64, "DT_UINT64", "UINT64"),
      ("b", np.bool_, "DT_BOOL", "BOOL"), ("h", np.float16, "DT_HALF", "FP16"),
      ("bf", np.uint16, "DT_BFLOAT16", "BF16"),  # bfloat16 as its bit patterns: numpy has no bfloat16
      ("s", object, "DT_STRING", "BYTES")]
TYPED = {"DT_FLOAT": "float_val", "DT_DOUBLE": "double_val", "DT_INT8": "int_val", "DT_UINT8": "int_val",
         "DT_INT16": "int_val", "DT_UINT16": "int_val", "DT_INT32": "int_val", "DT_INT64": "int64_val",
         "DT_UINT32": "uint32_val", "DT_UINT64": "uint64_val", "DT_BOOL": "bool_val", "DT_HALF": "half_val",
         "DT_BFLOAT16": "half_val", "DT_STRING": "string_val"}
CONTENTS = {"FP32": "fp32_contents", "FP64": "fp64_contents", "INT8": "int_contents", "INT16": "int_contents",
            "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
            "UINT32": "uint_contents", "UINT64": "uint64_contents", "BOOL": "bool_contents", "BYTES": "bytes_contents"}


def sample(rng, name, np_type, n):
    """n values spanning the dtype's range (extremes included)."""
    if name == "f32":
        return rng.standard_normal((n, 4)).astype(np.float32) * 1e3
    if np_type is object:
        words = [b"", b"kiln", "h\u00e9llo".encode(), bytes(range(1, 200))]
        return np.array([words[i % len(words)] for i in range(n)], dtype=object)
    if np_type is np.bool_:
        return rng.integers(0, 2, n).astype(np.bool_)
    if name == "bf":
        return rng.integers(0, 1 << 16, n, dtype=np.uint32).astype(np.uint16)
    if np.issubdtype(np_type, np.floating):
        return rng.standard_normal(n).astype(np_type)
    info = np.iinfo(np_type)
    v = rng.integers(info.min, info.max, n, dtype=np_type, endpoint=True)
    v[0], v[-1] = info.min, info.max
    return v


def run(mode, request=None):
    with tempfile.TemporaryDirectory() as d:
        args = [TOOL, mode]
        if request is not None:
            with open(os.path.join(d, "req.bin"), "wb") as f:
                f.write(request.SerializeToString())
            args.append(os.path.join(d, "req.bin"))
        args.append(os.path.join(d, "resp.bin"))
        p = subprocess.run(args, capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            return None, p.stdout.strip() + p.stderr.strip()
        with open(os.path.join(d, "resp.bin"), "rb") as f:
            return f.read(), None


def tensor_proto(name, tf_name, arr, form):
    tp = S.tensor_pb2.TensorProto(dtype=S.types_pb2.DataType.Value(tf_name))
    for n in arr.shape:
        tp.tensor_shape.dim.add(size=n)
    if form == "content" and tf_name != "DT_STRING":
        tp.tensor_content = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    else:
        values = arr.reshape(-1)
        if tf_name in ("DT_HALF", "DT_BFLOAT16"):
            values = values.view(np.uint16)
        getattr(tp, TYPED[tf_name]).extend(values.tolist())
    return tp


def from_tensor_proto(tp, np_type, tf_name):
    shape = [d.size for d in tp.tensor_shape.dim]
    if tf_name == "DT_STRING":
        return np.array(list(tp.string_val), dtype=object).reshape(shape)
    dt = np.dtype(np_type).newbyteorder("<")
    return np.frombuffer(tp.tensor_content, dtype=dt).reshape(shape)


def from_raw(raw, np_type, shape):
    if np_type is object:
        out, at = [], 0
        while at < len(raw):
            (n,) = struct.unpack_from("<I", raw, at)
            out.append(raw[at + 4:at + 4 + n])
            at += 4 + n
        return np.array(out, dtype=object).reshape(shape)
    return np.frombuffer(raw, dtype=np.dtype(np_type).newbyteorder("<")).reshape(shape)


def to_raw(arr):
    if arr.dtype == object:
        return b"".join(struct.pack("<I", len(v)) + v for v in arr.reshape(-1))
    return arr.astype(arr.dtype.newbyteorder("<")).tobytes()


class Wire(unittest.TestCase):
    def setUp(self):
        self.rng = np.random.default_rng(9)

    def data(self, n=5):
        return {name: sample(self.rng, name, t, n) for name, t, _, _ in IO}

    def check_predict(self, form):
        data = self.data()
        req = S.predict_pb2.PredictRequest()
        req.model_spec.name = "wire"
        req.model_spec.signature_name = "serving_default"
        for name, _, tf_name, _ in IO:
            req.inputs[name].CopyFrom(tensor_proto(name, tf_name, data[name], form))
        body, err = run("tfs", req)
        self.assertIsNone(err)
        resp = S.predict_pb2.PredictResponse.FromString(body)
        self.assertEqual(resp.model_spec.name, "wire")
        self.assertEqual(resp.model_spec.version.value, 7)
        self.assertEqual(resp.model_spec.signature_name, "serving_default")
        self.assertEqual(set(resp.outputs.keys()), {n for n, _, _, _ in IO})
        for name, t, tf_name, _ in IO:
            tp = resp.outputs[name]
            self.assertEqual(S.types_pb2.DataType.Name(tp.dtype), tf_name, name)
            got = from_tensor_proto(tp, t, tf_name)
            self.assertEqual(got.shape, data[name].shape, name)
            if t is np.float16 or t is np.float32 or t is np.float64:
                np.testing.assert_array_equal(got.view(np.dtype(t)), data[name], err_msg=name)
            else:
                self.assertTrue(np.array_equal(got, data[name]), name)

    def test_predict_typed_fields(self):
        self.check_predict("typed")

    def test_predict_tensor_content(self):
        self.check_predict("content")

    def test_predict_repeat_last_and_filter(self):
        data = self.data(4)
        req = S.predict_pb2.PredictRequest()
        for name, _, tf_name, _ in IO:
            tp = tensor_proto(name, tf_name, data[name], "typed")
            if name == "i64":  # two values for four elements: the last repeats
                del tp.int64_val[2:]
            if name == "f64":  # none: zeros
                del tp.double_val[:]
            req.inputs[name].CopyFrom(tp)
        req.output_filter.extend(["i64", "f64"])
        body, err = run("tfs", req)
        self.assertIsNone(err)
        resp = S.predict_pb2.PredictResponse.FromString(body)
        self.assertEqual(sorted(resp.outputs.keys()), ["f64", "i64"])
        i64 = from_tensor_proto(resp.outputs["i64"], np.int64, "DT_INT64")
        self.assertEqual(i64.tolist(), [data["i64"][0], data["i64"][1], data["i64"][1], data["i64"][1]])
        self.assertEqual(from_tensor_proto(resp.outputs["f64"], np.float64, "DT_DOUBLE").tolist(), [0.0] * 4)

    def test_predict_refused(self):
        data = self.data(2)
        req = S.predict_pb2.PredictRequest()
        for name, _, tf_name, _ in IO:
            req.inputs[name].CopyFrom(tensor_proto(name, tf_name, data[name], "typed"))
        req.inputs["s"].string_val[1] = b"a\x00b"
        body, err = run("tfs", req)
        self.assertIsNone(body)
        self.assertIn("INVALID_ARGUMENT input 's': string_val[1] holds a NUL byte", err)
        req.inputs["s"].string_val[1] = b"ok"
        req.inputs["u8"].dtype = S.types_pb2.DT_INT8
        body, err = run("tfs", req)
        self.assertIn("input 'u8': expected dtype DT_UINT8, got DT_INT8", err)

    def check_infer(self, raw, stream):
        data = self.data()
        req = S.grpc_predict_v2_pb2.ModelInferRequest(model_name="wire", id="abc")
        for name, _, _, v2 in IO:
            t = req.inputs.add(name=name, datatype=v2, shape=list(data[name].shape))
            if raw:
                req.raw_input_contents.append(to_raw(data[name]))
            elif v2 in CONTENTS:
                getattr(t.contents, CONTENTS[v2]).extend(data[name].reshape(-1).tolist())
        if not raw:  # FP16 and BF16 only travel raw, and raw is all or nothing: leave them out of this one
            kept = [t for t in req.inputs if t.datatype not in ("FP16", "BF16")]
            del req.inputs[:]
            req.inputs.extend(kept)
            body, err = run("v2stream" if stream else "v2", req)
            self.assertIn("missing input 'h'", err)
            return
        req.outputs.add(name="s")
        req.outputs.add(name="f32")
        req.outputs.add(name="h")
        body, err = run("v2stream" if stream else "v2", req)
        self.assertIsNone(err)
        if stream:
            wrap = S.grpc_predict_v2_pb2.ModelStreamInferResponse.FromString(body)
            self.assertEqual(wrap.error_message, "")
            resp = wrap.infer_response
        else:
            resp = S.grpc_predict_v2_pb2.ModelInferResponse.FromString(body)
        self.assertEqual((resp.model_name, resp.model_version, resp.id), ("wire", "7", "abc"))
        self.assertEqual([o.name for o in resp.outputs], ["s", "f32", "h"])
        self.assertEqual(len(resp.raw_output_contents), 3)
        types = {name: (t, v2) for name, t, _, v2 in IO}
        for o, raw_bytes in zip(resp.outputs, resp.raw_output_contents):
            t, v2 = types[o.name]
            self.assertEqual(o.datatype, v2)
            self.assertEqual(list(o.shape), list(data[o.name].shape))
            got = from_raw(raw_bytes, t, list(o.shape))
            self.assertTrue(np.array_equal(got, data[o.name]), o.name)

    def test_infer_raw(self):
        self.check_infer(raw=True, stream=False)

    def test_infer_raw_stream(self):
        self.check_infer(raw=True, stream=True)

    def test_infer_contents(self):
        self.check_infer(raw=False, stream=False)

    def test_infer_contents_every_typed_field(self):
        """Every datatype KServe carries in contents, decoded and returned raw."""
        data = self.data()
        data["h"] = np.zeros(0, np.float16)
        data["bf"] = np.zeros(0, np.uint16)
        req = S.grpc_predict_v2_pb2.ModelInferRequest(model_name="wire")
        for name, _, _, v2 in IO:
            t = req.inputs.add(name=name, datatype=v2, shape=list(data[name].shape))
            if v2 in CONTENTS:
                getattr(t.contents, CONTENTS[v2]).extend(data[name].reshape(-1).tolist())
        body, err = run("v2", req)
        self.assertIsNone(err)
        resp = S.grpc_predict_v2_pb2.ModelInferResponse.FromString(body)
        self.assertEqual(resp.id, "")
        self.assertEqual([o.name for o in resp.outputs], [n for n, _, _, _ in IO])
        for (name, t, _, _), o, raw_bytes in zip(IO, resp.outputs, resp.raw_output_contents):
            got = from_raw(raw_bytes, t, list(o.shape))
            self.assertTrue(np.array_equal(got, data[name]), name)

    def test_tfs_metadata(self):
        body, err = run("tfsmeta")
        self.assertIsNone(err)
        resp = S.get_model_metadata_pb2.GetModelMetadataResponse.FromString(body)
        self.assertEqual((resp.model_spec.name, resp.model_spec.version.value), ("wire", 7))
        sigs = S.get_model_metadata_pb2.SignatureDefMap()
        self.assertTrue(resp.metadata["signature_def"].Unpack(sigs))  # checks the type_url too
        d = sigs.signature_def["serving_default"]
        self.assertEqual(d.method_name, "tensorflow/serving/predict")
        for name, _, tf_name, _ in IO:
            for m in (d.inputs, d.outputs):
                ti = m[name]
                self.assertEqual((ti.name, S.types_pb2.DataType.Name(ti.dtype)), (name, tf_name))
                want = [-1, 4] if name == "f32" else [-1]
                self.assertEqual([x.size for x in ti.tensor_shape.dim], want)
                self.assertFalse(ti.tensor_shape.unknown_rank)

    def test_v2_metadata(self):
        body, err = run("v2meta")
        self.assertIsNone(err)
        resp = S.grpc_predict_v2_pb2.ModelMetadataResponse.FromString(body)
        self.assertEqual((resp.name, list(resp.versions), resp.platform), ("wire", ["3", "7"], "onnxruntime_onnx"))
        self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in resp.inputs],
                         [(n, v2, [-1, 4] if n == "f32" else [-1]) for n, _, _, v2 in IO])
        self.assertEqual(len(resp.outputs), len(IO))


if __name__ == "__main__":
    TOOL = sys.argv.pop(1)
    S = grpc_stubs.load()
    unittest.main(verbosity=1)
