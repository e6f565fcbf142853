#!/usr/bin/python3
"""kiln serve, end to end: predictions through every API equal `kiln run`, batched equals unbatched,
every kind of bad request answered with the right status and the server still healthy, version
churn without a failed request, a bad version never replacing a healthy one, overload (429) and
deadlines (504), draining on SIGTERM, Prometheus metrics, reloads that do not grow memory, the
config file with labels and SIGHUP, and structured logs.

    test_serve.py KILN [unittest flags]

Every server listens on 127.0.0.1 on a free port; every wait and loop is bounded.
"""
import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ beside the tests
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_client import (Client, Server, add_version, kiln_run, linear_model, metrics, mlp_model,  # noqa: E402
                          pixels_model, raw_connect, read_response, request, slow_model, tfs_rows, v2_binary, v2_json, v2_output)

KILN = None
RTOL, ATOL = 1e-5, 1e-6
PREDICT = "/v1/models/mlp:predict"
INFER = "/v2/models/mlp/infer"


def write_text(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)
    return path


def model_config(models):
    """TF Serving's ModelServerConfig text: models is a list of (name, base_path, extra lines)."""
    out = ["model_config_list {"]
    for name, base, extra in models:
        out += ["  config {", '    name: "%s"' % name, '    base_path: "%s"' % base, '    model_platform: "onnx"']
        out += ["    " + line for line in extra]
        out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"


class ServeTest(unittest.TestCase):
    """A temporary folder per class and helpers shared by the tests."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="kiln_serve_")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def start(self, flags, **kw):
        server = Server(KILN, flags, self.dir, **kw)
        self.addCleanup(server.kill)
        return server

    def assertClose(self, got, want, msg=None):
        np.testing.assert_allclose(np.asarray(got, dtype=np.float32), want, rtol=RTOL, atol=ATOL, err_msg=msg or "")

    def status_of(self, port, model):
        """{version: (state, error_message)} from GET /v1/models/M (empty when it answers 404)."""
        r = request(port, "GET", "/v1/models/%s" % model)
        if r.status == 404:
            return {}
        self.assertEqual(r.status, 200, r)
        return {int(s["version"]): (s["state"], s["status"].get("error_message", ""))
                for s in r.json()["model_version_status"]}

    def wait_for(self, what, check, timeout=10, interval=0.02):
        """Polls check() until it returns a true value (which it returns); fails after timeout."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(interval)
        self.fail("%s: not within %g s (last: %r)" % (what, timeout, last))


# ============================================================================ the APIs and bad requests

class Api(ServeTest):
    """One server for the MLP (from a config file labelling version 1 'stable'), with a 4 KiB body
    limit, a 1 s read timeout and the access log."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.base = os.path.join(cls.dir, "mlp")
        cls.model = os.path.join(cls.base, "1", "model.onnx")
        mlp_model(cls.model, np.random.default_rng(1))
        rng = np.random.default_rng(2)
        cls.x3 = rng.standard_normal((3, 8)).astype(np.float32)
        cls.y3 = kiln_run(KILN, cls.model, cls.x3, cls.dir)
        cls.config = write_text(os.path.join(cls.dir, "models.config"),
                                model_config([("mlp", cls.base, ['version_labels { key: "stable" value: 1 }'])]))
        cls.server = Server(KILN, ["--model_config_file=" + cls.config, "--max_body_bytes=4096",
                                   "--read_timeout_seconds=1", "--access_log"], cls.dir)
        cls.port = cls.server.port

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.stop_ok()
        finally:
            cls.server.kill()
            super().tearDownClass()

    def post(self, path, body, headers=None):
        return request(self.port, "POST", path, body, headers)

    def get(self, path):
        return request(self.port, "GET", path)

    def assertStillHealthy(self, after=""):
        r = self.get("/v2/health/live")
        self.assertEqual(r.status, 200, "live after %s: %r" % (after, r))
        r = self.post(PREDICT, tfs_rows(self.x3))
        self.assertEqual(r.status, 200, "predict after %s: %r" % (after, r))
        self.assertClose(r.json()["predictions"], self.y3, "predict after " + after)

    # --- 1. predictions equal kiln run
    def test_predictions_equal_kiln_run(self):
        c = Client(self.port)
        try:
            r = c.post(PREDICT, tfs_rows(self.x3))
            self.assertEqual(r.status, 200, r)
            self.assertTrue(r.headers.get("content-type", "").startswith("application/json"), r.headers)
            self.assertClose(r.json()["predictions"], self.y3, "TF Serving row format")

            r = c.post(PREDICT, {"inputs": {"x": self.x3.tolist()}})
            self.assertEqual(r.status, 200, r)
            self.assertClose(r.json()["outputs"], self.y3, "TF Serving columnar format")

            r = c.post(PREDICT, {"instances": [{"x": row} for row in self.x3.tolist()]})
            self.assertEqual(r.status, 200, r)
            self.assertClose(r.json()["predictions"], self.y3, "TF Serving row format, named inputs")

            for path in ["/v1/models/mlp/versions/1:predict", "/v1/models/mlp/labels/stable:predict"]:
                r = c.post(path, tfs_rows(self.x3))
                self.assertEqual(r.status, 200, (path, r))
                self.assertClose(r.json()["predictions"], self.y3, path)

            r = c.post(INFER, dict(v2_json(self.x3), id="req-7"))
            self.assertEqual(r.status, 200, r)
            y, doc = v2_output(r)
            self.assertClose(y, self.y3, "V2 JSON")
            self.assertEqual(doc["model_name"], "mlp")
            self.assertEqual(str(doc["model_version"]), "1")
            self.assertEqual(doc.get("id"), "req-7")
            self.assertEqual(doc["outputs"][0]["datatype"], "FP32")
            self.assertEqual(doc["outputs"][0]["shape"], [3, 4])

            body, headers = v2_binary(self.x3)
            r = c.post(INFER, body, headers)
            self.assertEqual(r.status, 200, r)
            self.assertIn("inference-header-content-length", r.headers, "binary output without its header length")
            y, doc = v2_output(r)
            self.assertEqual(doc["outputs"][0]["parameters"]["binary_data_size"], 3 * 4 * 4)
            self.assertEqual(len(r.body), int(r.headers["inference-header-content-length"]) + 48)
            self.assertClose(y, self.y3, "V2 binary in, binary out")

            r = c.post("/v2/models/mlp/versions/1/infer", v2_json(self.x3))
            self.assertEqual(r.status, 200, r)
            self.assertClose(v2_output(r)[0], self.y3, "V2 JSON, version named")
        finally:
            c.close()

    def test_status_and_metadata(self):
        r = self.get("/v1/models/mlp")
        self.assertEqual(r.status, 200, r)
        st = r.json()["model_version_status"]
        self.assertEqual([(s["version"], s["state"]) for s in st], [("1", "AVAILABLE")])
        self.assertEqual(st[0]["status"]["error_code"], "OK")
        for path in ["/v1/models/mlp/versions/1", "/v1/models/mlp/labels/stable"]:
            r = self.get(path)
            self.assertEqual(r.status, 200, (path, r))
            self.assertEqual([(s["version"], s["state"]) for s in r.json()["model_version_status"]],
                             [("1", "AVAILABLE")], path)

        for path in ["/v1/models/mlp/metadata", "/v1/models/mlp/versions/1/metadata"]:
            r = self.get(path)
            self.assertEqual(r.status, 200, (path, r))
            meta = r.json()
            self.assertEqual(meta["model_spec"]["name"], "mlp")
            self.assertEqual(str(meta["model_spec"]["version"]), "1")
            sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
            self.assertEqual(sig["inputs"]["x"]["dtype"], "DT_FLOAT")
            self.assertEqual([d["size"] for d in sig["inputs"]["x"]["tensor_shape"]["dim"]], ["-1", "8"])
            self.assertEqual(sig["outputs"]["y"]["dtype"], "DT_FLOAT")
            self.assertEqual([d["size"] for d in sig["outputs"]["y"]["tensor_shape"]["dim"]], ["-1", "4"])

        r = self.get("/v2/models/mlp")
        self.assertEqual(r.status, 200, r)
        meta = r.json()
        self.assertEqual(meta["name"], "mlp")
        self.assertEqual(meta["versions"], ["1"])
        self.assertEqual(meta["inputs"], [{"name": "x", "datatype": "FP32", "shape": [-1, 8]}])
        self.assertEqual(meta["outputs"], [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}])
        r = self.get("/v2/models/mlp/versions/1")
        self.assertEqual(r.status, 200, r)

        for path in ["/v2/models/mlp/ready", "/v2/models/mlp/versions/1/ready"]:
            r = self.get(path)
            self.assertEqual(r.status, 200, (path, r))
            self.assertIs(r.json()["ready"], True)
        r = self.get("/v2")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["name"], "kiln")
        self.assertIn("binary_tensor_data", r.json()["extensions"])
        r = self.get("/v2/health/live")
        self.assertEqual((r.status, r.json()), (200, {"live": True}))
        r = self.get("/v2/health/ready")
        self.assertEqual((r.status, r.json()), (200, {"ready": True}))
        r = self.get("/no/such/endpoint")
        self.assertEqual(r.status, 404, r)

    # --- 3. bad requests
    def test_bad_requests(self):
        row = [0.5] * 8
        nan_body = '{"instances": [[NaN, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]]}'
        cases = [
            # name, method, path, body, status, the error message must match (regex, case-insensitive)
            ("invalid JSON", "POST", PREDICT, '{"instances": [[1, 2,', 400, r"json"),
            ("invalid JSON (V2)", "POST", INFER, '{"inputs": [', 400, r"json"),
            ("wrong shape", "POST", PREDICT, {"instances": [[0.5] * 7]}, 400, r"\bx\b"),
            ("wrong rank", "POST", PREDICT, {"inputs": {"x": row}}, 400, r"\bx\b"),
            ("wrong shape (V2)", "POST", INFER, {"inputs": [{"name": "x", "shape": [1, 7], "datatype": "FP32",
                                                            "data": [0.5] * 7}]}, 400, r"\bx\b"),
            ("V2 data count differs from shape", "POST", INFER,
             {"inputs": [{"name": "x", "shape": [2, 8], "datatype": "FP32", "data": row}]}, 400, r"\bx\b|shape|element"),
            ("wrong dtype (V2 INT64 for FP32)", "POST", INFER,
             {"inputs": [{"name": "x", "shape": [1, 8], "datatype": "INT64", "data": [1] * 8}]}, 400,
             r"INT64|FP32|datatype|dtype"),
            ("NaN literal", "POST", PREDICT, nan_body, 400, r"nan|json|number|numeric|value"),
            ("string among numbers", "POST", PREDICT, {"instances": [[0.5, "a"] + [0.5] * 6]}, 400,
             r"string|number|numeric|\bx\b"),
            ("boolean among numbers", "POST", PREDICT, {"instances": [[0.5, True] + [0.5] * 6]}, 400,
             r"bool|number|numeric|\bx\b"),
            ("ragged rows", "POST", PREDICT, {"instances": [row, [0.5] * 7]}, 400,
             r"ragged|\bx\b|shape|dimension|length|size"),
            ("ragged columnar", "POST", PREDICT, {"inputs": {"x": [row, [0.5] * 7]}}, 400,
             r"ragged|\bx\b|shape|dimension|length|size"),
            ("unknown input name", "POST", PREDICT, {"inputs": {"z": [row]}}, 400, r"\bz\b"),
            ("unknown input name (V2)", "POST", INFER, v2_json(np.zeros((1, 8), np.float32), name="z"), 400, r"\bz\b"),
            ("missing input", "POST", PREDICT, {"inputs": {}}, 400, r"\bx\b"),
            ("missing input (V2)", "POST", INFER, {"inputs": []}, 400, r"\bx\b"),
            ("neither instances nor inputs", "POST", PREDICT, {"foo": 1}, 400, r"instances|inputs"),
            ("unknown output (V2)", "POST", INFER, dict(v2_json(np.zeros((1, 8), np.float32)),
                                                        outputs=[{"name": "nope"}]), 400, r"nope"),
            ("unknown model", "POST", "/v1/models/nope:predict", tfs_rows([row]), 404, r"nope"),
            ("unknown model (V2)", "POST", "/v2/models/nope/infer", v2_json(np.zeros((1, 8), np.float32)), 404, r"nope"),
            ("unknown model status", "GET", "/v1/models/nope", None, 404, r"nope"),
            ("unknown version", "POST", "/v1/models/mlp/versions/7:predict", tfs_rows([row]), 404, r"\b7\b"),
            ("unknown version (V2)", "POST", "/v2/models/mlp/versions/7/infer", v2_json(np.zeros((1, 8), np.float32)),
             404, r"\b7\b"),
            ("unknown version status", "GET", "/v1/models/mlp/versions/7", None, 404, r"\b7\b"),
            ("unknown label", "POST", "/v1/models/mlp/labels/canary:predict", tfs_rows([row]), 404, r"canary"),
            ("unknown label status", "GET", "/v1/models/mlp/labels/canary", None, 404, r"canary"),
            ("GET on :predict", "GET", PREDICT, None, 400, r"POST"),
            ("GET on V2 infer", "GET", INFER, None, 400, r"POST"),
            ("non-numeric version", "GET", "/v1/models/mlp/versions/abc", None, 400, r"abc"),
            ("non-numeric version :predict", "POST", "/v1/models/mlp/versions/abc:predict", tfs_rows([row]), 400, r"abc"),
            ("non-numeric version (V2)", "POST", "/v2/models/mlp/versions/abc/infer",
             v2_json(np.zeros((1, 8), np.float32)), 400, r"abc"),
        ]
        for name, method, path, body, status, pattern in cases:
            with self.subTest(name):
                r = request(self.port, method, path, body)
                self.assertEqual(r.status, status, "%s: %s %s -> %r" % (name, method, path, r))
                self.assertRegex(r.error(), re.compile(pattern, re.I), name)
                self.assertStillHealthy(name)

    def test_binary_extension_wrong_sizes(self):
        x = self.x3
        cases = [("binary_data_size larger than the bytes sent", dict(size=96 + 4)),
                 ("binary_data_size smaller than the bytes sent", dict(size=96 - 4)),
                 ("binary_data_size matching what follows but not the shape", dict(size=100, extra=b"\0" * 4))]
        for name, kw in cases:
            with self.subTest(name):
                body, headers = v2_binary(x, **kw)
                r = self.post(INFER, body, headers)
                self.assertEqual(r.status, 400, "%s: %r" % (name, r))
                self.assertRegex(r.error(), re.compile(r"binary|bytes|size|\bx\b", re.I), name)
                self.assertStillHealthy(name)
        with self.subTest("Inference-Header-Content-Length beyond the body"):
            body, headers = v2_binary(x)
            headers["Inference-Header-Content-Length"] = str(len(body) + 10)
            r = self.post(INFER, body, headers)
            self.assertEqual(r.status, 400, r)
            r.error()
            self.assertStillHealthy("header length beyond the body")

    def test_oversized_body_413(self):
        body = b'{"instances": [[' + b" " * 5000 + b"0]]}"
        s = raw_connect(self.port)
        try:
            head = ("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    "Content-Length: %d\r\n\r\n" % (PREDICT, len(body))).encode()
            try:
                s.sendall(head + body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may refuse before reading the body; its answer must still arrive
            status, _, resp = read_response(s, timeout=5)
        finally:
            s.close()
        self.assertEqual(status, 413, resp)
        self.assertRegex(json.loads(resp)["error"], re.compile(r"large|size|bytes|limit|exceed|4096", re.I))
        self.assertStillHealthy("413")

    def test_truncated_body_408(self):
        s = raw_connect(self.port)
        try:
            t0 = time.monotonic()
            s.sendall(("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                       "Content-Length: 100\r\n\r\n" % PREDICT).encode() + b'{"instance')
            status, _, resp = read_response(s, timeout=5)
            took = time.monotonic() - t0
        finally:
            s.close()
        self.assertEqual(status, 408, resp)
        self.assertRegex(json.loads(resp)["error"], re.compile(r"time", re.I))
        self.assertGreater(took, 0.8, "408 before the 1 s read timeout")
        self.assertLess(took, 3.0, "408 long after the 1 s read timeout")
        self.assertStillHealthy("408 (truncated body)")

    def test_slow_client_408_and_others_served(self):
        lat, errors, done = [], [], threading.Event()

        def others():
            c = Client(self.port, timeout=5)
            try:
                for _ in range(100):  # about 3 s at most
                    if done.is_set():
                        break
                    try:
                        r = c.post(PREDICT, tfs_rows(self.x3[:1]))
                        lat.append(r.elapsed)
                        if r.status != 200:
                            errors.append(r)
                    except Exception as e:  # noqa: BLE001 - reported below
                        errors.append(e)
                    time.sleep(0.03)
            finally:
                c.close()

        t = threading.Thread(target=others)
        head = ("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                "X-Padding: %s\r\nContent-Length: 40\r\n\r\n" % (PREDICT, "p" * 20)).encode()
        s = raw_connect(self.port)
        status = resp = None
        try:
            t.start()
            t0 = time.monotonic()
            for i in range(len(head)):  # one byte per 50 ms: longer than the 1 s read timeout
                readable, _, _ = select.select([s], [], [], 0.05)
                if readable or time.monotonic() - t0 > 4:
                    break
                try:
                    s.send(head[i:i + 1])
                except (BrokenPipeError, ConnectionResetError):
                    break
            status, _, resp = read_response(s, timeout=3)
            took = time.monotonic() - t0
        finally:
            done.set()
            s.close()
            t.join(10)
        self.assertEqual(status, 408, resp)
        json.loads(resp)["error"]
        self.assertGreater(took, 0.8)
        self.assertLess(took, 3.0)
        self.assertEqual(errors, [], "other clients during the slow one")
        self.assertGreater(len(lat), 5)
        self.assertLess(max(lat), 0.5, "another client's predict waited on the slow one")
        self.assertStillHealthy("408 (slow client)")

    # --- 8. metrics
    def test_metrics(self):
        self.assertEqual(self.post(PREDICT, '{"instances": [[1, 2,').status, 400)
        self.assertEqual(self.post(PREDICT, tfs_rows(self.x3)).status, 200)
        self.assertEqual(self.post(INFER, v2_json(self.x3)).status, 200)
        pages = {path: metrics(self.port, path) for path in ["/metrics", "/monitoring/prometheus/metrics"]}
        for path, m in pages.items():
            with self.subTest(path):
                for name in ["kiln_requests_total", "kiln_request_duration_seconds", "kiln_queue_duration_seconds",
                             "kiln_inference_duration_seconds", "kiln_batch_size", "kiln_model_versions_available",
                             "kiln_model_load_failures_total", "kiln_requests_in_flight",
                             "process_resident_memory_bytes", "process_cpu_seconds_total"]:
                    self.assertTrue(m.has_family(name), "%s: no family %s" % (path, name))
                reqs = m.samples.get("kiln_requests_total", [])
                self.assertTrue(reqs)
                for s in reqs:
                    self.assertTrue({"model", "version", "api", "code"} <= set(s.labels), s)
                self.assertGreaterEqual(m.value("kiln_requests_total", code="400"), 1)
                self.assertGreaterEqual(m.value("kiln_requests_total", model="mlp", version="1", code="200"), 2)
                self.assertEqual(m.families["kiln_request_duration_seconds"].type, "histogram")
                les = {s.labels["le"] for s in m.samples["kiln_request_duration_seconds_bucket"]}
                self.assertIn("+Inf", les)
                self.assertGreater(len(les), 5)
                self.assertGreater(m.value("kiln_request_duration_seconds_count"), 0)
                for h in ["kiln_queue_duration_seconds", "kiln_inference_duration_seconds", "kiln_batch_size"]:
                    self.assertEqual(m.families[h].type, "histogram", h)
                    self.assertGreater(m.value(h + "_count", model="mlp", version="1") or 0, 0, h)
                    self.assertTrue(m.values(h + "_bucket", model="mlp", version="1", le="+Inf"), h)
                self.assertEqual(m.value("kiln_model_versions_available", model="mlp"), 1)
                self.assertIsNotNone(m.value("kiln_requests_in_flight"))
                self.assertGreater(m.value("process_resident_memory_bytes"), 1 << 20)
                self.assertGreater(m.value("process_cpu_seconds_total"), 0)
        r = request(self.port, "GET", "/metrics")
        self.assertTrue(r.headers.get("content-type", "").startswith("text/plain"), r.headers)

    # --- 11. structured logs
    def test_structured_logs(self):
        self.assertEqual(self.post(PREDICT, tfs_rows(self.x3)).status, 200)

        def access_line():
            lines = [ln for ln in self.server.log_text().splitlines() if ln.strip()]
            for ln in lines:
                try:
                    rec = json.loads(ln)
                except ValueError:
                    self.fail("stderr line is not JSON: %r" % ln)
                self.assertIsInstance(rec, dict, ln)
                for key in ["ts", "level", "msg"]:
                    self.assertIn(key, rec, ln)
            return [json.loads(ln) for ln in lines if json.loads(ln).get("type") == "access"
                    and json.loads(ln).get("path") == PREDICT and str(json.loads(ln).get("status")) == "200"]

        recs = self.wait_for("an access-log line for the predict", access_line, timeout=3)
        self.assertEqual(recs[-1].get("method"), "POST")
        self.assertRegex(recs[-1]["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


class Readiness(ServeTest):
    def test_not_ready_until_loaded_and_warmed_up(self):
        """/v2/health/ready stays 503 while the first version warms up (a slow model, many warm-up
        runs), and once it says 200 a predict succeeds at once."""
        model = os.path.join(self.dir, "slow", "1", "model.onnx")
        slow_model(model)
        server = Server(KILN, ["--model_name=slow", "--model_base_path=" + os.path.dirname(os.path.dirname(model)),
                               "--warmup_runs=30", "--tensorflow_inter_op_parallelism=1"], self.dir, ready=False)
        try:
            seen = []
            t_end = time.monotonic() + 30
            while time.monotonic() < t_end:
                try:
                    status = request(server.port, "GET", "/v2/health/ready").status
                except OSError:
                    status = None  # not listening yet
                if status is not None:
                    seen.append(status)
                if status == 200:
                    break
                time.sleep(0.005)
            self.assertEqual(seen[-1:], [200], "never ready: %s" % server.log_tail())
            self.assertIn(503, seen, "no probe saw the server loading; the check proves nothing")
            x = np.zeros((1, 512), np.float32)
            r = request(server.port, "POST", "/v2/models/slow/infer", v2_json(x))
            self.assertEqual(r.status, 200, r)
            server.stop_ok()
        finally:
            server.kill()


class Usage(ServeTest):
    def test_usage_errors(self):
        r = subprocess.run([KILN, "serve", "--help"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0)
        self.assertIn("usage: kiln serve", r.stdout)
        for flag in ["--model_name", "--model_base_path", "--model_config_file", "--rest_api_port", "--enable_batching",
                     "--batching_parameters_file", "--file_system_poll_wait_seconds", "--rest_api_timeout_in_ms"]:
            self.assertIn(flag, r.stdout)
        r = subprocess.run([KILN, "serve"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 2, r.stderr)
        r = subprocess.run([KILN, "serve", "--model_name=m", "--model_base_path=" + self.dir, "--rest_api_port=many"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 2, r.stderr)
        bad = write_text(os.path.join(self.dir, "bad.config"), "model_config_list { config { nme: 'm' } }\n")
        r = subprocess.run([KILN, "serve", "--model_config_file=" + bad, "--rest_api_port=%d" % 0, "--port=0"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("bad.config", r.stderr)


# ============================================================================ 2. batching

class Batching(ServeTest):
    THREADS, ROUNDS = 32, 3

    def test_batched_equals_unbatched(self):
        base = os.path.join(self.dir, "mlp")
        model = os.path.join(base, "1", "model.onnx")
        mlp_model(model, np.random.default_rng(3))
        n = self.THREADS * self.ROUNDS
        x = np.random.default_rng(4).standard_normal((n, 8)).astype(np.float32)
        want = kiln_run(KILN, model, x, self.dir)
        params = write_text(os.path.join(self.dir, "batching.config"),
                            "max_batch_size { value: 16 }\nbatch_timeout_micros { value: 5000 }\n"
                            "max_enqueued_batches { value: 100 }\n")
        server = self.start(["--model_name=mlp", "--model_base_path=" + base, "--enable_batching",
                             "--batching_parameters_file=" + params])
        barrier = threading.Barrier(self.THREADS, timeout=20)
        got, errors = {}, []

        def client(i):
            c = Client(server.port, timeout=20)
            try:
                c.ensure_open()
                c.conn.connect()
                for r in range(self.ROUNDS):
                    k = r * self.THREADS + i
                    barrier.wait()
                    if i % 2:
                        resp = c.post(INFER, v2_json(x[k:k + 1]))
                        got[k] = v2_output(resp)[0] if resp.status == 200 else resp
                    else:
                        resp = c.post(PREDICT, tfs_rows(x[k:k + 1]))
                        got[k] = np.asarray(resp.json()["predictions"], np.float32) if resp.status == 200 else resp
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append((i, repr(e)))
                barrier.abort()
            finally:
                c.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(self.THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertFalse(any(t.is_alive() for t in threads), "clients still waiting after 60 s")
        self.assertEqual(errors, [])
        self.assertEqual(sorted(got), list(range(n)))
        for k in range(n):
            self.assertIsInstance(got[k], np.ndarray, "request %d: %r" % (k, got[k]))
            self.assertClose(got[k], want[k:k + 1], "request %d" % k)
        m = metrics(server.port)
        total, count = m.value("kiln_batch_size_sum", model="mlp"), m.value("kiln_batch_size_count", model="mlp")
        self.assertTrue(count, "no kiln_batch_size observations")
        self.assertGreater(total / count, 1.0, "requests were never merged (mean batch %.2f)" % (total / count))
        self.assertLess(count, n, "as many model runs as requests")
        server.stop_ok()


# ============================================================================ 4, 5. versions

class Versions(ServeTest):
    def setUp(self):
        self.b = np.random.default_rng(5).standard_normal((8, 4)).astype(np.float32)
        self.x = np.random.default_rng(6).standard_normal((2, 8)).astype(np.float32)

    def write_linear(self, k, warmup=None):
        def write(folder):
            linear_model(os.path.join(folder, "model.onnx"), k * self.b)
            if warmup is not None:
                os.makedirs(os.path.join(folder, "warmup"))
                np.save(os.path.join(folder, "warmup", "x.npy"), warmup)
        return write

    def want(self, k):
        return (self.x @ (k * self.b)).astype(np.float32)

    def infer(self, port):
        r = request(port, "POST", "/v2/models/m/infer", v2_json(self.x))
        self.assertEqual(r.status, 200, r)
        y, doc = v2_output(r)
        return int(doc["model_version"]), y

    def test_version_churn_without_failures(self):
        base = os.path.join(self.dir, "churn")
        os.makedirs(base)
        created = {}
        for k in (1, 2):
            created[k] = time.monotonic()
            add_version(base, k, self.write_linear(k))
        server = self.start(["--model_name=m", "--model_base_path=" + base, "--file_system_poll_wait_seconds=0.2"])
        self.assertEqual(self.infer(server.port)[0], 2)
        results, stop = [], threading.Event()

        def client():
            c = Client(server.port, timeout=10)
            t_end = time.monotonic() + 10
            try:
                while not stop.is_set() and time.monotonic() < t_end and len(results) < 50000:
                    try:
                        r = c.post("/v2/models/m/infer", v2_json(self.x))
                        results.append((time.monotonic(), r))
                    except Exception as e:  # noqa: BLE001 - counted as a failure
                        results.append((time.monotonic(), e))
            finally:
                c.close()

        t = threading.Thread(target=client)
        t.start()
        on_disk = [1, 2]
        try:
            for _ in range(6):
                time.sleep(1.0)
                n = max(created) + 1
                created[n] = time.monotonic()
                add_version(base, n, self.write_linear(n))
                on_disk.append(n)
                shutil.rmtree(os.path.join(base, str(on_disk.pop(0))))
            time.sleep(0.5)
        finally:
            stop.set()
            t.join(15)
        self.assertFalse(t.is_alive())
        failures = [(when, r) for when, r in results if not (hasattr(r, "status") and r.status == 200)]
        self.assertEqual(failures[:5], [], "%d of %d requests failed" % (len(failures), len(results)))
        self.assertGreater(len(results), 50)
        served = set()
        for when, r in results:
            y, doc = v2_output(r)
            v = int(doc["model_version"])
            served.add(v)
            self.assertIn(v, created, "answered by a version never created")
            self.assertLess(created[v], when, "version %d answered before it was created" % v)
            self.assertClose(y, self.want(v), "version %d" % v)
        self.assertGreaterEqual(len(served), 4, "the versions served: %s" % sorted(served))
        final = max(created)
        self.wait_for("the newest version served", lambda: self.infer(server.port)[0] == final, timeout=5)
        server.stop_ok()

    def test_bad_version_never_replaces_healthy(self):
        base = os.path.join(self.dir, "bad")
        os.makedirs(base)
        for k in (1, 2):
            add_version(base, k, self.write_linear(k))
        server = self.start(["--model_name=m", "--model_base_path=" + base, "--file_system_poll_wait_seconds=0.1"])
        self.assertEqual(self.infer(server.port)[0], 2)

        def garbage(folder):
            with open(os.path.join(folder, "model.onnx"), "wb") as f:
                f.write(b"\x08\x07\x12\xff\xff\xff\xff\x0fthis is not a model" * 10)

        add_version(base, 3, garbage)
        st = self.wait_for("version 3 in state END", lambda: (lambda s: s if s.get(3, ("",))[0] == "END" else None)(
            self.status_of(server.port, "m")), timeout=5)
        self.assertTrue(st[3][1], "version 3 is END without an error message: %r" % (st,))
        self.assertEqual(st.get(2, ("",))[0], "AVAILABLE", st)
        for _ in range(3):
            v, y = self.infer(server.port)
            self.assertEqual(v, 2)
            self.assertClose(y, self.want(2))
            time.sleep(0.15)  # a few more polls
        r = request(server.port, "POST", "/v1/models/m:predict", tfs_rows(self.x))
        self.assertEqual(r.status, 200, r)
        self.assertClose(r.json()["predictions"], self.want(2))
        self.assertGreaterEqual(metrics(server.port).value("kiln_model_load_failures_total", model="m") or 0, 1)
        self.assertEqual(request(server.port, "GET", "/v2/health/ready").status, 200)

        add_version(base, 4, self.write_linear(4, warmup=np.zeros((1, 7), np.float32)))
        st = self.wait_for("version 4 in state END", lambda: (lambda s: s if s.get(4, ("",))[0] == "END" else None)(
            self.status_of(server.port, "m")), timeout=5)
        self.assertRegex(st[4][1], re.compile(r"warm", re.I), "the error should name the warm-up")
        self.assertEqual(st.get(2, ("",))[0], "AVAILABLE", st)
        for _ in range(3):
            v, y = self.infer(server.port)
            self.assertEqual(v, 2)
            self.assertClose(y, self.want(2))
            time.sleep(0.15)
        m = metrics(server.port)
        self.assertGreaterEqual(m.value("kiln_model_load_failures_total", model="m") or 0, 2)
        self.assertEqual(m.value("kiln_model_versions_available", model="m"), 1)
        server.stop_ok()


# ============================================================================ 6. overload and deadlines

class Overload(ServeTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.base = os.path.join(cls.dir, "slow")
        slow_model(os.path.join(cls.base, "1", "model.onnx"))
        cls.body, cls.headers = v2_binary(np.full((1, 512), 0.1, np.float32))

    def concurrent(self, port, n):
        """n requests at once, each on its own connection: [(status, elapsed, Response)]."""
        barrier = threading.Barrier(n, timeout=20)
        out, errors = [], []

        def one():
            c = Client(port, timeout=20)
            try:
                c.ensure_open()
                c.conn.connect()
                barrier.wait()
                out.append(c.post("/v2/models/slow/infer", self.body, self.headers))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))
            finally:
                c.close()

        threads = [threading.Thread(target=one) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertFalse(any(t.is_alive() for t in threads), "requests still unanswered after 30 s")
        self.assertEqual(errors, [])
        return out

    def single_run_seconds(self, port):
        times = []
        for _ in range(3):
            r = request(port, "POST", "/v2/models/slow/infer", self.body, self.headers)
            self.assertEqual(r.status, 200, r)
            times.append(r.elapsed)
        return min(times)

    def test_queue_full_429(self):
        params = write_text(os.path.join(self.dir, "batching.config"),
                            "max_batch_size { value: 1 }\nmax_enqueued_batches { value: 1 }\n"
                            "num_batch_threads { value: 1 }\n")
        server = self.start(["--model_name=slow", "--model_base_path=" + self.base, "--enable_batching",
                             "--batching_parameters_file=" + params, "--warmup_runs=1"])
        self.assertGreaterEqual(self.single_run_seconds(server.port), 0.02, "the slow model is not slow")
        out = self.concurrent(server.port, 12)
        statuses = sorted(r.status for r in out)
        self.assertEqual(len(out), 12)
        self.assertTrue(set(statuses) <= {200, 429}, statuses)
        self.assertIn(429, statuses)
        self.assertIn(200, statuses)
        for r in out:
            if r.status == 429:
                self.assertLess(r.elapsed, 1.0, "429 not answered at once")
                self.assertRegex(r.error(), re.compile(r"queue|full|retry", re.I))
        self.assertEqual(request(server.port, "POST", "/v2/models/slow/infer", self.body, self.headers).status, 200)
        self.assertGreaterEqual(metrics(server.port).value("kiln_requests_total", code="429") or 0, 1)
        server.stop_ok()

    def test_deadline_504(self):
        server = self.start(["--model_name=slow", "--model_base_path=" + self.base, "--rest_api_timeout_in_ms=30",
                             "--tensorflow_inter_op_parallelism=1", "--warmup_runs=1"])
        out = self.concurrent(server.port, 6)
        statuses = sorted(r.status for r in out)
        self.assertTrue(set(statuses) <= {200, 504}, statuses)
        self.assertIn(504, statuses)
        for r in out:
            if r.status == 504:
                self.assertRegex(r.error(), re.compile(r"deadline|time", re.I))
        self.assertEqual(request(server.port, "GET", "/v2/health/live").status, 200)
        server.stop_ok()


# ============================================================================ 7. SIGTERM under load

class Drain(ServeTest):
    def test_sigterm_during_load(self):
        base = os.path.join(self.dir, "mlp")
        mlp_model(os.path.join(base, "1", "model.onnx"), np.random.default_rng(8))
        server = self.start(["--model_name=mlp", "--model_base_path=" + base, "--drain_timeout_seconds=5"])
        x = np.random.default_rng(9).standard_normal((2, 8)).astype(np.float32)
        body = json.dumps(tfs_rows(x))
        sigterm = threading.Event()
        lock = threading.Lock()
        counts = {"ok": 0, "ok_after": 0, "closed": 0, "refused": 0}
        failures = []

        def count(key):
            with lock:
                counts[key] += 1

        def fail(i, what):
            with lock:
                failures.append("thread %d: %s%s" % (i, what, " (after SIGTERM)" if sigterm.is_set() else ""))

        def worker(i):
            c = Client(server.port, timeout=10)
            t_end = time.monotonic() + 10
            try:
                for _ in range(100000):
                    if time.monotonic() > t_end:
                        fail(i, "still running after 10 s")
                        break
                    after = sigterm.is_set()
                    try:
                        c.send("POST", PREDICT, body, {"Content-Type": "application/json"})
                    except ConnectionRefusedError:
                        c.close()
                        if after:
                            count("refused")
                            break
                        fail(i, "connection refused before SIGTERM")
                        break
                    except (BrokenPipeError, ConnectionResetError) as e:
                        c.close()  # the request never went out: the server had closed the connection
                        if after:
                            count("closed")
                            continue
                        fail(i, "send failed: %r" % e)
                        break
                    except OSError as e:
                        c.close()
                        fail(i, "send failed: %r" % e)
                        break
                    try:
                        r = c.receive()
                    except http.client.RemoteDisconnected:
                        c.close()
                        if sigterm.is_set():
                            count("closed")
                            continue
                        fail(i, "connection closed without a response before SIGTERM")
                        break
                    except http.client.IncompleteRead as e:
                        c.close()
                        fail(i, "response cut in the middle: %r" % e)
                        break
                    except ConnectionResetError as e:
                        c.close()
                        fail(i, "connection reset with a request pending: %r" % e)
                        break
                    except (socket.timeout, OSError, http.client.HTTPException) as e:
                        c.close()
                        fail(i, "no complete response: %r" % e)
                        break
                    try:
                        ok = r.status == 200 and len(r.json()["predictions"]) == 2
                    except (ValueError, KeyError, TypeError):
                        ok = False
                    if not ok:
                        fail(i, "bad response %r" % r)
                        break
                    count("ok_after" if after else "ok")
            finally:
                c.close()

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        sigterm.set()
        t0 = time.monotonic()
        os.kill(server.pid, signal.SIGTERM)
        try:
            rc = server.proc.wait(12)
        except Exception:  # noqa: BLE001
            rc = None
        took = time.monotonic() - t0
        for t in threads:
            t.join(15)
        self.assertFalse(any(t.is_alive() for t in threads), "clients hang after the server exited")
        self.assertEqual(failures, [], "counts %s\n%s" % (counts, server.log_tail()))
        self.assertEqual(rc, 0, server.log_tail())
        self.assertLess(took, 5 + 2, "exit took longer than the drain timeout")
        self.assertGreater(counts["ok"], 8, counts)


# ============================================================================ 9. reloads and memory

class ReloadMemory(ServeTest):
    CYCLES = 100

    @staticmethod
    def settled_rss(port):
        """RSS once the retired version is gone: it is freed within 50 ms of its last request and
        jemalloc hands its pages back after 1 s, later on a busy machine; wait for two readings
        half a second apart to agree within 1 % (at most 10 s)."""
        time.sleep(1.2)
        last = metrics(port).value("process_resident_memory_bytes")
        for _ in range(20):
            time.sleep(0.5)
            now = metrics(port).value("process_resident_memory_bytes")
            if abs(now - last) <= 0.01 * last:
                return now
            last = now
        return last

    def test_reload_does_not_grow_memory(self):
        base = os.path.join(self.dir, "big")
        template = os.path.join(self.dir, "big.onnx")
        w = (np.random.default_rng(10).standard_normal((512, 512)) / 20).astype(np.float32)  # 1 MiB of weights
        linear_model(template, w)
        add_version(base, 1, lambda folder: shutil.copyfile(template, os.path.join(folder, "model.onnx")))
        server = self.start(["--model_name=m", "--model_base_path=" + base, "--file_system_poll_wait_seconds=0.02"])
        x = np.full((1, 512), 0.5, np.float32)
        want = x @ w
        c = Client(server.port)
        rss = {}
        t_end = time.monotonic() + 120
        try:
            for n in range(1, self.CYCLES + 1):
                self.assertLess(time.monotonic(), t_end, "100 reload cycles took over 120 s")
                add_version(base, n + 1, lambda folder: shutil.copyfile(template, os.path.join(folder, "model.onnx")))

                def swapped():
                    st = self.status_of(server.port, "m")
                    return st if list(st.items()) == [(n + 1, ("AVAILABLE", ""))] else None
                self.wait_for("cycle %d: version %d alone AVAILABLE" % (n, n + 1), swapped, timeout=5, interval=0.005)
                shutil.rmtree(os.path.join(base, str(n)))
                r = c.post("/v2/models/m/infer", v2_json(x))
                self.assertEqual(r.status, 200, r)
                y, doc = v2_output(r)
                self.assertEqual(int(doc["model_version"]), n + 1)
                self.assertClose(y, want)
                if n in (1, self.CYCLES):
                    rss[n] = self.settled_rss(server.port)
        finally:
            c.close()
        first, last = rss[1], rss[self.CYCLES]
        self.assertGreater(first, 0)
        self.assertLessEqual(last, first * 1.05, "RSS grew from %.1f MB to %.1f MB over %d reloads"
                             % (first / 1e6, last / 1e6, self.CYCLES - 1))
        server.stop_ok()


# ============================================================================ 10. config file, labels, SIGHUP

class Preprocessing(ServeTest):
    """A version folder with preprocess.json + schema.json takes raw records: the server checks them
    against the schema and applies the transforms training used before the model sees them."""
    MEAN, STD = 72.94, 90.02

    def write_version(self, folder, transforms=None):
        self.w, self.b = pixels_model(os.path.join(folder, "model.onnx"), np.random.default_rng(5))
        schema = {"kiln_schema": 1, "num_records": 100, "features": [
            {"name": "pixels", "dtype": "uint8", "shape": [28, 28], "min": 0, "max": 200}]}
        with open(os.path.join(folder, "schema.json"), "w") as f:
            json.dump(schema, f)
        if transforms is None:
            transforms = [{"normalize": {"feature": "pixels", "mean": self.MEAN, "std": self.STD}},
                          {"rename": {"from": "pixels", "to": "x"}}]
        with open(os.path.join(folder, "preprocess.json"), "w") as f:
            json.dump({"schema": "schema.json", "transforms": transforms}, f)

    def want(self, pixels):
        x = (pixels.astype(np.float32) - np.float32(self.MEAN)) / np.float32(self.STD)
        return x.reshape(len(x), -1) @ self.w.T + self.b

    def test_raw_records_are_checked_and_transformed(self):
        base = os.path.join(self.dir, "pix")
        add_version(base, 1, self.write_version)
        server = self.start(["--model_name=pix", "--model_base_path=" + base])
        pixels = np.random.default_rng(1).integers(0, 201, size=(3, 28, 28), dtype=np.uint8)
        r = request(server.port, "POST", "/v1/models/pix:predict", {"instances": pixels.tolist()})
        self.assertEqual(r.status, 200, r)
        self.assertClose(r.json()["predictions"], self.want(pixels))
        r = request(server.port, "POST", "/v2/models/pix/infer", v2_json(pixels, name="pixels", datatype="UINT8"))
        self.assertEqual(r.status, 200, r)
        self.assertClose(v2_output(r)[0], self.want(pixels))
        # metadata describes what clients send: the raw feature
        meta = request(server.port, "GET", "/v2/models/pix").json()
        self.assertEqual(meta["inputs"], [{"name": "pixels", "datatype": "UINT8", "shape": [-1, 28, 28]}])
        # a value outside the schema's range is refused, naming the row and the feature
        bad = pixels.copy()
        bad[2, 5, 5] = 250
        r = request(server.port, "POST", "/v1/models/pix:predict", {"instances": bad.tolist()})
        self.assertEqual(r.status, 400, r)
        self.assertIn("row 2", r.json()["error"])
        self.assertIn("pixels", r.json()["error"])
        # the model's own input is not what this version takes
        r = request(server.port, "POST", "/v1/models/pix:predict", {"instances": [{"x": [[0.0] * 28] * 28}]})
        self.assertEqual(r.status, 400, r)
        server.stop_ok()

    def test_broken_preprocessing_refuses_the_version(self):
        base = os.path.join(self.dir, "pixbad")
        add_version(base, 1, lambda folder: self.write_version(folder, [{"sharpen": {"feature": "pixels"}}]))
        server = self.start(["--model_name=pixbad", "--model_base_path=" + base], ready=False)

        def refused():
            try:
                state = self.status_of(server.port, "pixbad").get(1)
            except OSError:
                return None  # not listening yet
            return state if state and state[0] == "END" else None
        state, error = self.wait_for("version 1 refused", refused)
        self.assertIn("preprocess.json", error)
        self.assertIn("sharpen", error)
        server.kill()


class ConfigReload(ServeTest):
    def test_config_labels_and_sighup(self):
        b = np.random.default_rng(11).standard_normal((8, 4)).astype(np.float32)
        x = np.random.default_rng(12).standard_normal((2, 8)).astype(np.float32)
        base_a, base_b = os.path.join(self.dir, "a"), os.path.join(self.dir, "b")
        for k in (1, 2):
            add_version(base_a, k, lambda folder, k=k: linear_model(os.path.join(folder, "model.onnx"), k * b))
        os.makedirs(base_b)
        add_version(base_b, 1, lambda folder: linear_model(os.path.join(folder, "model.onnx"), 3 * b))
        a_config = ["model_version_policy { specific { versions: 1 versions: 2 } }",
                    "version_labels { key: 'stable' value: 1 }"]

        def config(models):
            out = ["model_config_list {"]
            for name, base, extra in models:
                out += ["  config {", "    name: '%s'" % name, "    base_path: '%s'" % base,
                        "    model_platform: 'onnx'"] + ["    " + e for e in extra] + ["  }"]
            return "\n".join(out + ["}"]) + "\n"

        path = write_text(os.path.join(self.dir, "models.config"), config([("a", base_a, a_config)]))
        server = self.start(["--model_config_file=" + path, "--file_system_poll_wait_seconds=0.2"])
        port = server.port
        both = {1: ("AVAILABLE", ""), 2: ("AVAILABLE", "")}
        self.wait_for("versions 1 and 2 of a AVAILABLE", lambda: self.status_of(port, "a") == both, timeout=5)
        r = request(port, "POST", "/v2/models/a/infer", v2_json(x))
        self.assertEqual(r.status, 200, r)
        y, doc = v2_output(r)
        self.assertEqual(str(doc["model_version"]), "1", "the default should be the version labelled stable")
        self.assertClose(y, x @ b)
        r = request(port, "POST", "/v1/models/a:predict", tfs_rows(x))
        self.assertEqual(r.status, 200, r)
        self.assertClose(r.json()["predictions"], x @ b)
        r = request(port, "POST", "/v1/models/a/versions/2:predict", tfs_rows(x))
        self.assertEqual(r.status, 200, r)
        self.assertClose(r.json()["predictions"], x @ (2 * b))
        r = request(port, "POST", "/v1/models/a/labels/stable:predict", tfs_rows(x))
        self.assertEqual(r.status, 200, r)
        self.assertClose(r.json()["predictions"], x @ b)
        r = request(port, "GET", "/v1/models/a/labels/stable")
        self.assertEqual(r.status, 200, r)
        self.assertEqual([s["version"] for s in r.json()["model_version_status"]], ["1"])
        self.assertEqual(request(port, "GET", "/v2/models/b/ready").status, 404)

        write_text(path, config([("a", base_a, a_config), ("b", base_b, [])]))
        os.kill(server.pid, signal.SIGHUP)
        self.wait_for("model b ready after SIGHUP", lambda: request(port, "GET", "/v2/models/b/ready").status == 200,
                      timeout=5)
        r = request(port, "POST", "/v1/models/b:predict", tfs_rows(x))
        self.assertEqual(r.status, 200, r)
        self.assertClose(r.json()["predictions"], x @ (3 * b))
        r = request(port, "POST", "/v2/models/a/infer", v2_json(x))
        self.assertEqual(str(v2_output(r)[1]["model_version"]), "1")
        self.assertEqual(request(port, "GET", "/v2/health/ready").status, 200)
        self.assertEqual(server.proc.poll(), None, "SIGHUP ended the server")
        server.stop_ok()


if __name__ == "__main__":
    KILN = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
