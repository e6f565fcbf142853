#!/usr/bin/python3
"""The gRPC APIs end to end, driven by Google's own Python gRPC client (Debian python3-grpcio) with
stubs generated from kiln's proto/ files: TF Serving's PredictionService / ModelService and KServe
V2's GRPCInferenceService (ModelStreamInfer included) on --port, beside REST on --rest_api_port.
Predictions are checked against NumPy and against the REST API's answers to the same inputs; bad
requests against the gRPC status codes TF Serving and Triton give; deadlines, cancellation, message
size limits, metrics, request ids and trace context.

    test_grpc.py KILN [unittest flags]

Every server listens on 127.0.0.1 on free ports; every load loop is bounded in count and time.
"""
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import unittest

import grpc
import numpy as np
from onnx import TensorProto, helper, numpy_helper

sys.dont_write_bytecode = True  # no __pycache__ beside the tests
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc_stubs  # noqa: E402
from serve_client import Server, metrics, request, save_model, slow_model, tfs_rows, v2_json, v2_output  # noqa: E402

KILN = None
S = grpc_stubs.load()
RNG = np.random.default_rng(11)
W1 = RNG.standard_normal((16, 8)).astype(np.float32)
B1 = RNG.standard_normal(16).astype(np.float32)
W2 = RNG.standard_normal((16, 4)).astype(np.float32)


def mlp(path, scale=1.0):
    """y = relu(x . W1^T + b1) . (scale W2), x float[batch,8], y float[batch,4]."""
    save_model([helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
                helper.make_node("MatMul", ["r", "w2"], ["y"])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
               [numpy_helper.from_array(W1, "w1"), numpy_helper.from_array(B1, "b1"),
                numpy_helper.from_array(W2 * np.float32(scale), "w2")], path, "mlp")


def mlp_reference(x, scale=1.0):
    return np.maximum(x @ W1.T + B1, 0) @ (W2 * np.float32(scale))


def two_outputs(path):
    """x float[batch,3], k int64[batch] -> doubled = 2x (float), next = k + 1 (int64)."""
    save_model([helper.make_node("Add", ["x", "x"], ["doubled"]), helper.make_node("Add", ["k", "one"], ["next"])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3]),
                helper.make_tensor_value_info("k", TensorProto.INT64, ["batch"])],
               [helper.make_tensor_value_info("doubled", TensorProto.FLOAT, ["batch", 3]),
                helper.make_tensor_value_info("next", TensorProto.INT64, ["batch"])],
               [numpy_helper.from_array(np.int64(1), "one")], path, "two")


def tensor_proto(x, dtype=None, typed=False):
    """A tensorflow.TensorProto for a NumPy array: tensor_content, or the typed *_val field."""
    t = S.tensor_pb2.TensorProto()
    x = np.asarray(x)
    t.dtype = dtype if dtype is not None else {np.float32: S.types_pb2.DT_FLOAT, np.int64: S.types_pb2.DT_INT64,
                                               np.float64: S.types_pb2.DT_DOUBLE, np.int32: S.types_pb2.DT_INT32}[x.dtype.type]
    for d in x.shape:
        t.tensor_shape.dim.add().size = d
    if not typed:
        t.tensor_content = np.ascontiguousarray(x).astype(x.dtype.newbyteorder("<")).tobytes()
    elif x.dtype == np.float32:
        t.float_val.extend(x.ravel().tolist())
    elif x.dtype == np.int64:
        t.int64_val.extend(x.ravel().tolist())
    elif x.dtype == np.int32:
        t.int_val.extend(x.ravel().tolist())
    else:
        t.double_val.extend(x.ravel().tolist())
    return t


def from_tensor_proto(t):
    """A TensorProto as a NumPy array (tensor_content or the typed field)."""
    shape = [d.size for d in t.tensor_shape.dim]
    dtype = {S.types_pb2.DT_FLOAT: "<f4", S.types_pb2.DT_INT64: "<i8", S.types_pb2.DT_DOUBLE: "<f8",
             S.types_pb2.DT_INT32: "<i4"}[t.dtype]
    if t.tensor_content:
        return np.frombuffer(t.tensor_content, dtype=dtype).reshape(shape)
    vals = {"<f4": t.float_val, "<i8": t.int64_val, "<f8": t.double_val, "<i4": t.int_val}[dtype]
    return np.array(list(vals), dtype=dtype).reshape(shape)


def predict_request(model, inputs, version=None, label=None, output_filter=()):
    req = S.predict_pb2.PredictRequest()
    req.model_spec.name = model
    if version is not None:
        req.model_spec.version.value = version
    if label is not None:
        req.model_spec.version_label = label
    for name, t in inputs.items():
        req.inputs[name].CopyFrom(t)
    req.output_filter.extend(output_filter)
    return req


def v2_request(model, x, name="x", raw=True, version="", rid=""):
    req = S.grpc_predict_v2_pb2.ModelInferRequest(model_name=model, model_version=version, id=rid)
    t = req.inputs.add(name=name, datatype="FP32", shape=list(x.shape))
    if raw:
        req.raw_input_contents.append(np.ascontiguousarray(x, dtype="<f4").tobytes())
    else:
        t.contents.fp32_contents.extend(x.ravel().tolist())
    return req


def v2_output_array(resp, name="y"):
    for i, out in enumerate(resp.outputs):
        if out.name == name:
            assert out.datatype == "FP32", out.datatype
            return np.frombuffer(resp.raw_output_contents[i], dtype="<f4").reshape(list(out.shape))
    raise AssertionError("no output %s in %s" % (name, resp))


class GrpcTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="kiln_grpc_")
        cls.repo = os.path.join(cls.dir, "repo")
        mlp(os.path.join(cls.repo, "mlp", "1", "model.onnx"))
        mlp(os.path.join(cls.repo, "mlp", "2", "model.onnx"), scale=2.0)
        two_outputs(os.path.join(cls.repo, "two", "1", "model.onnx"))
        slow_model(os.path.join(cls.repo, "slow", "1", "model.onnx"), rows=48, depth=25)
        config = os.path.join(cls.dir, "models.config")
        with open(config, "w") as f:
            f.write('model_config_list {\n'
                    '  config { name: "mlp" base_path: "%s" model_version_policy { all {} }\n'
                    '           version_labels { key: "stable" value: 1 } }\n'
                    '  config { name: "two" base_path: "%s" }\n'
                    '  config { name: "slow" base_path: "%s" }\n}\n'
                    % (os.path.join(cls.repo, "mlp"), os.path.join(cls.repo, "two"), os.path.join(cls.repo, "slow")))
        cls.token = os.path.join(cls.dir, "token")
        with open(cls.token, "w") as f:
            f.write("s3cret\n")
        cls.server = Server(KILN, ["--model_config_file=" + config, "--admin_token_file=" + cls.token,
                                   "--grpc_max_message_bytes=1000000", "--tensorflow_inter_op_parallelism=2",
                                   "--access_log"], cls.dir)
        cls.channel = grpc.insecure_channel("127.0.0.1:%d" % cls.server.grpc_port)
        cls.predict = S.prediction_service_pb2_grpc.PredictionServiceStub(cls.channel)
        cls.models = S.model_service_pb2_grpc.ModelServiceStub(cls.channel)
        cls.v2 = S.grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.server.stop_ok()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def expect_code(self, code, fn, *args, contains=None, **kwargs):
        with self.assertRaises(grpc.RpcError) as cm:
            fn(*args, **kwargs)
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        if contains:
            self.assertIn(contains, cm.exception.details())
        return cm.exception.details()

    # ------------------------------------------------------------ TF Serving

    def test_predict_equals_numpy_and_rest(self):
        x = RNG.standard_normal((5, 8)).astype(np.float32)
        rest = request(self.server.port, "POST", "/v1/models/mlp:predict", tfs_rows(x)).json()["predictions"]
        for typed in (False, True):
            resp = self.predict.Predict(predict_request("mlp", {"x": tensor_proto(x, typed=typed)}), timeout=10)
            y = from_tensor_proto(resp.outputs["y"])
            np.testing.assert_allclose(y, mlp_reference(x), rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(y, np.array(rest, dtype=np.float32))
            self.assertEqual(resp.model_spec.name, "mlp")
            self.assertEqual(resp.model_spec.version.value, 1)  # the stable label
            self.assertEqual(resp.model_spec.signature_name, "serving_default")
        print("Predict: tensor_content and float_val both equal NumPy and REST's predictions")

    def test_predict_version_and_label(self):
        x = RNG.standard_normal((2, 8)).astype(np.float32)
        for kwargs, scale, number in (({"version": 2}, 2.0, 2), ({"label": "stable"}, 1.0, 1), ({"version": 1}, 1.0, 1)):
            resp = self.predict.Predict(predict_request("mlp", {"x": tensor_proto(x)}, **kwargs), timeout=10)
            np.testing.assert_allclose(from_tensor_proto(resp.outputs["y"]), mlp_reference(x, scale), rtol=1e-5, atol=1e-5)
            self.assertEqual(resp.model_spec.version.value, number)
        self.expect_code(grpc.StatusCode.NOT_FOUND, self.predict.Predict,
                         predict_request("mlp", {"x": tensor_proto(x)}, version=7), timeout=10)
        self.expect_code(grpc.StatusCode.NOT_FOUND, self.predict.Predict,
                         predict_request("mlp", {"x": tensor_proto(x)}, label="canary"), timeout=10)
        print("Predict: ModelSpec version and version_label route; unknown ones are NOT_FOUND")

    def test_predict_two_outputs_and_filter(self):
        x = RNG.standard_normal((3, 3)).astype(np.float32)
        k = np.array([4, -2, 9], dtype=np.int64)
        resp = self.predict.Predict(predict_request("two", {"x": tensor_proto(x), "k": tensor_proto(k, typed=True)}), timeout=10)
        self.assertEqual(set(resp.outputs), {"doubled", "next"})
        np.testing.assert_array_equal(from_tensor_proto(resp.outputs["doubled"]), 2 * x)
        np.testing.assert_array_equal(from_tensor_proto(resp.outputs["next"]), k + 1)
        self.assertEqual(resp.outputs["next"].dtype, S.types_pb2.DT_INT64)
        resp = self.predict.Predict(predict_request("two", {"x": tensor_proto(x), "k": tensor_proto(k)},
                                                    output_filter=["next"]), timeout=10)
        self.assertEqual(list(resp.outputs), ["next"])
        self.expect_code(grpc.StatusCode.INVALID_ARGUMENT, self.predict.Predict,
                         predict_request("two", {"x": tensor_proto(x), "k": tensor_proto(k)}, output_filter=["nope"]),
                         timeout=10, contains="nope")
        print("Predict: two outputs (float, int64), output_filter, an unknown filter name is INVALID_ARGUMENT")

    def test_predict_errors(self):
        x = RNG.standard_normal((2, 8)).astype(np.float32)
        cases = [
            (predict_request("nope", {"x": tensor_proto(x)}), grpc.StatusCode.NOT_FOUND, "nope"),
            (predict_request("mlp", {"x": tensor_proto(x[:, :7])}), grpc.StatusCode.INVALID_ARGUMENT, "x"),
            (predict_request("mlp", {"z": tensor_proto(x)}), grpc.StatusCode.INVALID_ARGUMENT, "z"),
            (predict_request("mlp", {"x": tensor_proto(x.astype(np.float64))}), grpc.StatusCode.INVALID_ARGUMENT, "DT_"),
            (predict_request("", {"x": tensor_proto(x)}), grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec"),
        ]
        bad_content = tensor_proto(x)
        bad_content.tensor_content = bad_content.tensor_content[:-4]
        cases.append((predict_request("mlp", {"x": bad_content}), grpc.StatusCode.INVALID_ARGUMENT, "tensor_content"))
        sig = predict_request("mlp", {"x": tensor_proto(x)})
        sig.model_spec.signature_name = "other"
        cases.append((sig, grpc.StatusCode.FAILED_PRECONDITION, "other"))
        for req, code, word in cases:
            details = self.expect_code(code, self.predict.Predict, req, timeout=10)
            self.assertIn(word, details)
        # bytes that are no PredictRequest, through the generic API
        raw = self.channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
        self.expect_code(grpc.StatusCode.INVALID_ARGUMENT, raw, b"\xff\xff\xff", timeout=10, contains="PredictRequest")
        self.expect_code(grpc.StatusCode.UNIMPLEMENTED, self.channel.unary_unary("/tensorflow.serving.PredictionService/Classify"),
                         b"", timeout=10)
        print("Predict errors: %d bad requests got their codes and messages; Classify is UNIMPLEMENTED" % (len(cases) + 2))

    def test_metadata_and_status(self):
        req = S.get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        req.model_spec.name = "two"
        resp = self.predict.GetModelMetadata(req, timeout=10)
        self.assertEqual(resp.model_spec.name, "two")
        sigmap = S.get_model_metadata_pb2.SignatureDefMap()
        self.assertTrue(resp.metadata["signature_def"].Unpack(sigmap))
        sd = sigmap.signature_def["serving_default"]
        self.assertEqual(sd.method_name, "tensorflow/serving/predict")
        self.assertEqual(sd.inputs["k"].dtype, S.types_pb2.DT_INT64)
        self.assertEqual([d.size for d in sd.inputs["x"].tensor_shape.dim], [-1, 3])
        self.assertEqual(set(sd.outputs), {"doubled", "next"})
        rest = request(self.server.port, "GET", "/v1/models/two/metadata").json()
        rest_sd = rest["metadata"]["signature_def"]["signature_def"]["serving_default"]
        self.assertEqual(set(rest_sd["inputs"]), set(sd.inputs))
        req.metadata_field[:] = []
        self.expect_code(grpc.StatusCode.INVALID_ARGUMENT, self.predict.GetModelMetadata, req, timeout=10)
        req.metadata_field[:] = ["other"]
        self.expect_code(grpc.StatusCode.INVALID_ARGUMENT, self.predict.GetModelMetadata, req, timeout=10, contains="other")

        sreq = S.get_model_status_pb2.GetModelStatusRequest()
        sreq.model_spec.name = "mlp"
        st = self.models.GetModelStatus(sreq, timeout=10)
        states = {s.version: s.state for s in st.model_version_status}
        avail = S.get_model_status_pb2.ModelVersionStatus.AVAILABLE
        self.assertEqual(states, {1: avail, 2: avail})
        self.assertTrue(all(s.status.error_code == 0 for s in st.model_version_status))
        sreq.model_spec.version.value = 2
        st = self.models.GetModelStatus(sreq, timeout=10)
        self.assertEqual([s.version for s in st.model_version_status], [2])
        sreq.model_spec.name = "nope"
        self.expect_code(grpc.StatusCode.NOT_FOUND, self.models.GetModelStatus, sreq, timeout=10)
        print("GetModelMetadata (SignatureDefMap in Any) and GetModelStatus match the models and REST")

    def test_reload_config(self):
        extra = os.path.join(self.repo, "extra")
        mlp(os.path.join(extra, "1", "model.onnx"), scale=3.0)
        req = S.model_management_pb2.ReloadConfigRequest()
        for name in ("mlp", "two", "slow", "extra"):
            c = req.config.model_config_list.config.add(name=name, base_path=os.path.join(self.repo, name))
            if name == "mlp":
                c.model_version_policy.all.SetInParent()
                c.version_labels["stable"] = 1
        self.expect_code(grpc.StatusCode.UNAUTHENTICATED, self.models.HandleReloadConfigRequest, req, timeout=30)
        self.expect_code(grpc.StatusCode.PERMISSION_DENIED, self.models.HandleReloadConfigRequest, req, timeout=30,
                         metadata=[("authorization", "Bearer wrong")])
        dup = S.model_management_pb2.ReloadConfigRequest()
        dup.CopyFrom(req)
        dup.config.model_config_list.config.add(name="two", base_path=extra)
        self.expect_code(grpc.StatusCode.INVALID_ARGUMENT, self.models.HandleReloadConfigRequest, dup, timeout=30,
                         metadata=[("authorization", "Bearer s3cret")], contains="two")
        resp = self.models.HandleReloadConfigRequest(req, timeout=60, metadata=[("authorization", "Bearer s3cret")])
        self.assertEqual(resp.status.error_code, 0)
        x = RNG.standard_normal((2, 8)).astype(np.float32)
        out = self.predict.Predict(predict_request("extra", {"x": tensor_proto(x)}), timeout=10)
        np.testing.assert_allclose(from_tensor_proto(out.outputs["y"]), mlp_reference(x, 3.0), rtol=1e-5, atol=1e-5)
        audits = [json.loads(line) for line in self.server.log_text().splitlines()
                  if '"type":"audit"' in line.replace(" ", "") and "reload_config" in line]
        audits = [json.loads(a["msg"]) if "msg" in a and a["msg"].startswith("{") else a for a in audits]
        self.assertEqual([(a["auth"], a["status"]) for a in audits],
                         [("no token", 401), ("wrong token", 403), ("token", 400), ("token", 200)], audits)
        self.assertEqual(audits[-1]["params"]["models"], ["mlp", "two", "slow", "extra"])
        print("HandleReloadConfigRequest: needs the admin token, refuses a duplicate name, adds a model that then serves; "
              "4 audit lines")

    # ------------------------------------------------------------ KServe V2

    def test_v2_health_and_metadata(self):
        pb = S.grpc_predict_v2_pb2
        self.assertTrue(self.v2.ServerLive(pb.ServerLiveRequest(), timeout=10).live)
        self.assertTrue(self.v2.ServerReady(pb.ServerReadyRequest(), timeout=10).ready)
        self.assertTrue(self.v2.ModelReady(pb.ModelReadyRequest(name="mlp"), timeout=10).ready)
        self.assertTrue(self.v2.ModelReady(pb.ModelReadyRequest(name="mlp", version="2"), timeout=10).ready)
        self.expect_code(grpc.StatusCode.NOT_FOUND, self.v2.ModelReady, pb.ModelReadyRequest(name="nope"), timeout=10)
        md = self.v2.ServerMetadata(pb.ServerMetadataRequest(), timeout=10)
        self.assertEqual(md.name, "kiln")
        mm = self.v2.ModelMetadata(pb.ModelMetadataRequest(name="mlp"), timeout=10)
        rest = request(self.server.port, "GET", "/v2/models/mlp").json()
        self.assertEqual(mm.name, rest["name"])
        self.assertEqual(list(mm.versions), rest["versions"])
        self.assertEqual(mm.platform, rest["platform"])
        self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in mm.inputs],
                         [(t["name"], t["datatype"], t["shape"]) for t in rest["inputs"]])
        self.expect_code(grpc.StatusCode.INVALID_ARGUMENT, self.v2.ModelMetadata, pb.ModelMetadataRequest(name="mlp", version="x"),
                         timeout=10)
        print("V2: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata (equal to REST's)")

    def test_health_check(self):
        h = S.health_pb2
        check = self.channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=h.HealthCheckRequest.SerializeToString,
                                         response_deserializer=h.HealthCheckResponse.FromString)
        for service in ("", "inference.GRPCInferenceService", "tensorflow.serving.PredictionService"):
            self.assertEqual(check(h.HealthCheckRequest(service=service), timeout=10).status, h.HealthCheckResponse.SERVING)
        self.expect_code(grpc.StatusCode.NOT_FOUND, check, h.HealthCheckRequest(service="nope"), timeout=10, contains="nope")
        watch = self.channel.unary_stream("/grpc.health.v1.Health/Watch", request_serializer=h.HealthCheckRequest.SerializeToString,
                                          response_deserializer=h.HealthCheckResponse.FromString)
        with self.assertRaises(grpc.RpcError) as cm:
            list(watch(h.HealthCheckRequest(), timeout=10))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        # a server with a model that has no version is up but not serving
        d = tempfile.mkdtemp(prefix="kiln_grpc_health_", dir=self.dir)
        os.makedirs(os.path.join(d, "empty"))
        server = Server(KILN, ["--model_name=empty", "--model_base_path=" + os.path.join(d, "empty")], d, ready=False)
        try:
            deadline = time.monotonic() + 10
            while "gRPC API listening" not in server.log_text() and time.monotonic() < deadline:
                time.sleep(0.05)
            with grpc.insecure_channel("127.0.0.1:%d" % server.grpc_port) as ch:
                c2 = ch.unary_unary("/grpc.health.v1.Health/Check", request_serializer=h.HealthCheckRequest.SerializeToString,
                                    response_deserializer=h.HealthCheckResponse.FromString)
                self.assertEqual(c2(h.HealthCheckRequest(), timeout=10).status, h.HealthCheckResponse.NOT_SERVING)
        finally:
            server.kill()
        print("grpc.health.v1 Check: SERVING for the server and its services, NOT_FOUND for others, NOT_SERVING "
              "without a loaded model; Watch UNIMPLEMENTED")

    def test_v2_infer(self):
        x = RNG.standard_normal((4, 8)).astype(np.float32)
        rest = v2_output(request(self.server.port, "POST", "/v2/models/mlp/infer", v2_json(x)))[0]
        for raw in (True, False):
            resp = self.v2.ModelInfer(v2_request("mlp", x, raw=raw, rid="r-%d" % raw), timeout=10)
            y = v2_output_array(resp)
            np.testing.assert_allclose(y, mlp_reference(x), rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(y, rest)
            self.assertEqual(resp.id, "r-%d" % raw)
            self.assertEqual(resp.model_name, "mlp")
            self.assertEqual(resp.model_version, "1")
        resp = self.v2.ModelInfer(v2_request("mlp", x, version="2"), timeout=10)
        np.testing.assert_allclose(v2_output_array(resp), mlp_reference(x, 2.0), rtol=1e-5, atol=1e-5)
        pb = S.grpc_predict_v2_pb2
        bad = v2_request("mlp", x)
        bad.raw_input_contents[0] = bad.raw_input_contents[0][:-1]
        for req, code in ((v2_request("nope", x), grpc.StatusCode.NOT_FOUND), (v2_request("mlp", x[:, :5]), grpc.StatusCode.INVALID_ARGUMENT),
                          (v2_request("mlp", x, name="q"), grpc.StatusCode.INVALID_ARGUMENT), (bad, grpc.StatusCode.INVALID_ARGUMENT),
                          (pb.ModelInferRequest(model_name="mlp"), grpc.StatusCode.INVALID_ARGUMENT)):
            self.expect_code(code, self.v2.ModelInfer, req, timeout=10)
        print("V2 ModelInfer: raw_input_contents and fp32_contents equal NumPy and REST; 5 bad requests rejected")

    def test_v2_stream(self):
        xs = [RNG.standard_normal((1 + i % 3, 8)).astype(np.float32) for i in range(40)]

        def requests():
            for i, x in enumerate(xs):
                yield v2_request("mlp", x, rid="s%d" % i)
                if i == 20:
                    yield v2_request("mlp", x[:, :3], rid="bad")  # an error answer; the stream goes on

        got, errors = {}, []
        for resp in self.v2.ModelStreamInfer(requests(), timeout=60):
            if resp.error_message:
                errors.append(resp.error_message)
            else:
                got[resp.infer_response.id] = v2_output_array(resp.infer_response)
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("x", errors[0])
        self.assertEqual(set(got), {"s%d" % i for i in range(len(xs))})
        for i, x in enumerate(xs):
            np.testing.assert_allclose(got["s%d" % i], mlp_reference(x), rtol=1e-5, atol=1e-5)
        # an empty stream ends cleanly
        self.assertEqual(list(self.v2.ModelStreamInfer(iter(()), timeout=10)), [])
        print("ModelStreamInfer: 40 answers equal NumPy, a bad message answered with error_message mid-stream")

    # ------------------------------------------------------------ limits, deadlines, cancellation, observability

    def test_limits_deadline_cancel(self):
        big = RNG.standard_normal((40000, 8)).astype(np.float32)  # 1.28 MB > --grpc_max_message_bytes
        self.expect_code(grpc.StatusCode.RESOURCE_EXHAUSTED, self.v2.ModelInfer, v2_request("mlp", big), timeout=10)
        slow = RNG.standard_normal((1, 512)).astype(np.float32)
        t0 = time.monotonic()
        self.expect_code(grpc.StatusCode.DEADLINE_EXCEEDED, self.v2.ModelInfer, v2_request("slow", slow), timeout=0.002)
        self.assertLess(time.monotonic() - t0, 5)
        # queue up slow requests and cancel them: the server stays healthy and lets go of them
        futures = [self.v2.ModelInfer.future(v2_request("slow", slow), timeout=30) for _ in range(30)]
        time.sleep(0.05)
        for f in futures:
            f.cancel()
        # and a stream the client walks away from mid-way, with answers still owed
        stop = threading.Event()

        def endless():
            while not stop.is_set():
                yield v2_request("slow", slow)
                time.sleep(0.01)

        stream = self.v2.ModelStreamInfer(endless(), timeout=30)
        next(stream)
        stream.cancel()
        stop.set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            m = metrics(self.server.port)
            if m.value("kiln_requests_in_flight") <= 1:  # the /metrics request itself
                break
            time.sleep(0.1)
        self.assertLessEqual(m.value("kiln_requests_in_flight"), 1)
        x = RNG.standard_normal((1, 8)).astype(np.float32)
        np.testing.assert_allclose(v2_output_array(self.v2.ModelInfer(v2_request("mlp", x), timeout=10)), mlp_reference(x),
                                   rtol=1e-5, atol=1e-5)
        print("limits: an oversized message is RESOURCE_EXHAUSTED, a 2 ms deadline DEADLINE_EXCEEDED, 30 cancelled calls "
              "and a cancelled stream let go")

    def test_metadata_metrics_and_concurrency(self):
        x = RNG.standard_normal((1, 8)).astype(np.float32)
        tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        resp, call = self.predict.Predict.with_call(predict_request("mlp", {"x": tensor_proto(x)}), timeout=10,
                                                    metadata=[("x-request-id", "grpc-req-1"), ("traceparent", tp)])
        md = dict(call.initial_metadata())
        self.assertEqual(md.get("x-request-id"), "grpc-req-1")
        self.assertTrue(md.get("traceparent", "").startswith("00-0af7651916cd43dd8448eb211c80319c-"), md)
        failures, done = [], [0]

        def client():
            ch = grpc.insecure_channel("127.0.0.1:%d" % self.server.grpc_port)
            stub = S.prediction_service_pb2_grpc.PredictionServiceStub(ch)
            for _ in range(50):
                xi = RNG.standard_normal((2, 8)).astype(np.float32)
                try:
                    y = from_tensor_proto(stub.Predict(predict_request("mlp", {"x": tensor_proto(xi)}), timeout=10).outputs["y"])
                    if not np.allclose(y, mlp_reference(xi), rtol=1e-5, atol=1e-5):
                        failures.append("wrong answer")
                except grpc.RpcError as e:
                    failures.append(str(e.code()))
                done[0] += 1
            ch.close()

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(failures, [])
        self.assertEqual(done[0], 400)
        m = metrics(self.server.port)
        self.assertGreaterEqual(m.value("kiln_requests_total", model="mlp", api="grpc_predict", code="200"), 401)
        self.assertTrue(m.has_family("kiln_grpc_connections"))
        self.assertIn('"grpc_status":"OK"', self.server.log_text().replace(" ", ""))
        print("metadata: x-request-id and traceparent carried; 8 channels x 50 Predicts all right; metrics count them")


class DrainTest(unittest.TestCase):
    def test_sigterm_finishes_calls_in_flight(self):
        d = tempfile.mkdtemp(prefix="kiln_grpc_drain_")
        try:
            slow_model(os.path.join(d, "slow", "1", "model.onnx"), rows=48, depth=25)
            server = Server(KILN, ["--model_name=slow", "--model_base_path=" + os.path.join(d, "slow")], d)
            channel = grpc.insecure_channel("127.0.0.1:%d" % server.grpc_port)
            stub = S.grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
            x = RNG.standard_normal((1, 512)).astype(np.float32)
            futures = [stub.ModelInfer.future(v2_request("slow", x), timeout=30) for _ in range(6)]
            time.sleep(0.1)
            server.proc.send_signal(signal.SIGTERM)
            ok = sum(1 for f in futures if f.result(timeout=30).outputs)
            self.assertEqual(ok, 6)
            self.assertEqual(server.proc.wait(30), 0)
            server.kill()  # closes its log
            channel.close()
            print("drain: SIGTERM with 6 gRPC calls in flight: all 6 answered, exit 0")
        finally:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    KILN = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
