#!/usr/bin/python3
"""Writes the seed inputs of fuzz_grpc_payload into tests/fuzz/corpus/grpc_payload: byte 0 picks the
message (0: TF Serving PredictRequest, 1: KServe V2 ModelInferRequest), the rest is the message as
Google's Python protobuf packs it (stubs from proto/ via tests/integration/grpc_stubs.py). The
seeds fit the target's signature (x float [-1,4], ids int64 [-1], s string [-1]) in every form the
codec reads, plus near misses; crash inputs sit beside them under names starting with "crash-".

    /usr/bin/python3 tests/fuzz/make_grpc_corpus.py
"""
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import grpc_stubs  # noqa: E402

S = grpc_stubs.load()
OUT = os.path.join(HERE, "corpus", "grpc_payload")


def write(name, kind, msg):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(bytes([kind]) + msg.SerializeToString())


def tp(dtype, shape, **values):
    t = S.tensor_pb2.TensorProto(dtype=dtype)
    for n in shape:
        t.tensor_shape.dim.add(size=n)
    for k, v in values.items():
        if k == "tensor_content":
            t.tensor_content = v
        else:
            getattr(t, k).extend(v)
    return t


def predict(name, x, ids, s, filt=()):
    r = S.predict_pb2.PredictRequest()
    r.model_spec.name = "m"
    r.model_spec.version.value = 1
    for key, t in (("x", x), ("ids", ids), ("s", s)):
        if t is not None:
            r.inputs[key].CopyFrom(t)
    r.output_filter.extend(filt)
    write(name, 0, r)


def infer(name, raw, contents=True, outputs=()):
    r = S.grpc_predict_v2_pb2.ModelInferRequest(model_name="m", id="seed")
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    ids = np.array([3, -4], dtype=np.int64)
    s = [b"ab", b""]
    tx = r.inputs.add(name="x", datatype="FP32", shape=[2, 4])
    ti = r.inputs.add(name="ids", datatype="INT64", shape=[2])
    ts = r.inputs.add(name="s", datatype="BYTES", shape=[2])
    if raw:
        r.raw_input_contents.extend([x.tobytes(), ids.tobytes(), b"".join(struct.pack("<I", len(v)) + v for v in s)])
    elif contents:
        tx.contents.fp32_contents.extend(x.reshape(-1).tolist())
        ti.contents.int64_contents.extend(ids.tolist())
        ts.contents.bytes_contents.extend(s)
    for o in outputs:
        r.outputs.add(name=o)
    write(name, 1, r)


def main():
    os.makedirs(OUT, exist_ok=True)
    f = S.types_pb2
    x = np.arange(8, dtype=np.float32)
    predict("seed-typed", tp(f.DT_FLOAT, [2, 4], float_val=x.tolist()), tp(f.DT_INT64, [2], int64_val=[1, 2]),
            tp(f.DT_STRING, [2], string_val=[b"a", b"bc"]))
    predict("seed-content", tp(f.DT_FLOAT, [2, 4], tensor_content=x.tobytes()),
            tp(f.DT_INT64, [2], tensor_content=np.array([5, 6], np.int64).tobytes()),
            tp(f.DT_STRING, [1], string_val=[b"z"]), filt=["s", "x"])
    predict("seed-repeat", tp(f.DT_FLOAT, [3, 4], float_val=[1.5]), tp(f.DT_INT64, [4]),
            tp(f.DT_STRING, [3], string_val=[b"r"]))
    predict("seed-wrong-field", tp(f.DT_FLOAT, [1, 4], int_val=[1, 2]), tp(f.DT_INT64, [1], int64_val=[1]),
            tp(f.DT_STRING, [1], string_val=[b"q"]))
    predict("seed-missing", tp(f.DT_FLOAT, [1, 4], float_val=[0]), None, None, filt=["nope"])
    infer("seed-raw", raw=True)
    infer("seed-contents", raw=False, outputs=["ids", "s"])
    infer("seed-empty", raw=False, contents=False)


if __name__ == "__main__":
    main()
