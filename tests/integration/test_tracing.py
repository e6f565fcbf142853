#!/usr/bin/python3
"""Tracing, end to end: `kiln serve --otlp_endpoint` against a fake OTLP/HTTP collector (Python's
http.server on 127.0.0.1, recording every POST /v1/traces body). Requests that carry a W3C
traceparent produce spans in the caller's trace — "receive" (whose parent is the caller's span)
with the children queue, batch, inference and encode nested inside it — and the response's
traceparent names the receive span; a request without one starts a new trace; the sampled flag 00
and --trace_sampling_ratio=0 record nothing; an unreachable collector and one that hangs 5 s cost
the requests no latency, and with a small --otlp_max_queue_spans drops are counted. Log lines carry
the request id (and the access log the trace id).

    test_tracing.py KILN [unittest flags]

Everything listens on 127.0.0.1; every wait is bounded.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from onnx import TensorProto, helper, numpy_helper

sys.dont_write_bytecode = True  # no __pycache__ beside the tests
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_client import Client, Server, linear_model, metrics, request, save_model, tfs_rows, v2_json  # noqa: E402

KILN = None
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
CHILDREN = ("queue", "batch", "inference", "encode")


# ---------------------------------------------------------------- a fake OTLP collector

class Collector:
    """An OTLP/HTTP receiver on 127.0.0.1: records the spans of every POST /v1/traces; with
    hang_s, each POST is answered only after that many seconds."""

    def __init__(self, hang_s=0):
        self.lock = threading.Lock()
        self.spans = []   # (resource attributes, scope, span)
        self.posts = []   # (path, content type, number of spans)
        self.hang_s = hang_s
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if collector.hang_s:
                    time.sleep(collector.hang_s)
                doc = json.loads(body.decode("utf-8"))
                with collector.lock:
                    n = 0
                    for rs in doc["resourceSpans"]:
                        res = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}
                        for ss in rs["scopeSpans"]:
                            for sp in ss["spans"]:
                                collector.spans.append((res, ss["scope"], sp))
                                n += 1
                    collector.posts.append((self.path, self.headers.get("Content-Type"), n))
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                except OSError:
                    pass  # kiln gave up waiting (the hanging collector)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d" % self.port

    def trace(self, trace_id):
        with self.lock:
            return [sp for _, _, sp in self.spans if sp["traceId"] == trace_id]

    def wait_trace(self, trace_id, count, timeout=10):
        """The trace's spans once `count` have arrived (the exporter flushes every second)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spans = self.trace(trace_id)
            if len(spans) >= count:
                return spans
            time.sleep(0.05)
        raise AssertionError("trace %s: %d spans within %g s, expected %d" % (trace_id, len(self.trace(trace_id)), timeout, count))

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def dead_port():
    """A port on 127.0.0.1 nothing listens on: bound and never listened, kept until the test ends."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


def attrs(span):
    out = {}
    for a in span.get("attributes", []):
        v = a["value"]
        out[a["key"]] = v["stringValue"] if "stringValue" in v else int(v["intValue"])
    return out


def new_ids():
    return uuid.uuid4().hex, uuid.uuid4().hex[:16]


# ---------------------------------------------------------------- the tests

class TracingTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="kiln_tracing_")
        self.base = os.path.join(self.tmp, "m")
        self.w = np.arange(16, dtype=np.float32).reshape(4, 4) / 8 - 1
        linear_model(os.path.join(self.base, "1", "model.onnx"), self.w)
        self.servers, self.collectors, self.sockets = [], [], []
        self.x = np.array([[0.5, -1, 2, 0.25]], np.float32)

    def tearDown(self):
        for s in self.servers:
            s.kill()
        for c in self.collectors:
            c.close()
        for s in self.sockets:
            s.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def serve(self, *flags):
        s = Server(KILN, ["--model_name=m", "--model_base_path=" + self.base, "--access_log"] + list(flags), self.tmp)
        self.servers.append(s)
        return s

    def collector(self, hang_s=0):
        c = Collector(hang_s)
        self.collectors.append(c)
        return c

    def infer(self, port, headers=None, tfs=False):
        h = dict(headers or {})
        if tfs:
            r = request(port, "POST", "/v1/models/m:predict", tfs_rows(self.x), headers=h)
        else:
            r = request(port, "POST", "/v2/models/m/infer", v2_json(self.x), headers=h)
        self.assertEqual(r.status, 200, r)
        return r

    def check_inference_trace(self, col, trace_id, caller_span, response, route, request_id):
        m = TRACEPARENT.match(response.headers.get("traceparent", ""))
        self.assertIsNotNone(m, "response traceparent %r" % response.headers.get("traceparent"))
        self.assertEqual(m.group(1), trace_id)
        receive_id = m.group(2)
        spans = col.wait_trace(trace_id, 5)
        by_name = {}
        for sp in spans:
            self.assertNotIn(sp["name"], by_name, "span %s twice in %r" % (sp["name"], spans))
            by_name[sp["name"]] = sp
        self.assertEqual(sorted(by_name), sorted(("receive",) + CHILDREN))
        recv = by_name["receive"]
        print("  trace %s: receive %s (parent %s) with %s" % (trace_id, recv["spanId"], recv.get("parentSpanId"),
                                                           ", ".join(CHILDREN)))
        self.assertEqual(recv["spanId"], receive_id, "the response's traceparent names the receive span")
        if caller_span:
            self.assertEqual(recv.get("parentSpanId"), caller_span)
        else:
            self.assertNotIn("parentSpanId", recv)
        self.assertEqual(recv["kind"], 2)  # SPAN_KIND_SERVER
        a = attrs(recv)
        self.assertEqual(a.get("http.method"), "POST")
        self.assertEqual(a.get("http.route"), route)
        self.assertEqual(a.get("http.status_code"), 200)
        self.assertEqual(a.get("kiln.request_id"), request_id)
        self.assertEqual(a.get("kiln.model"), "m")
        self.assertEqual(a.get("kiln.model_version"), "1")
        self.assertEqual(recv["status"].get("code"), 1)
        t = {n: (int(sp["startTimeUnixNano"]), int(sp["endTimeUnixNano"])) for n, sp in by_name.items()}
        now_ns = time.time_ns()
        self.assertTrue(now_ns - 60e9 < t["receive"][0] <= t["receive"][1] <= now_ns + 1e9, t)
        for name in CHILDREN:
            sp = by_name[name]
            self.assertEqual(sp.get("parentSpanId"), receive_id, name)
            self.assertEqual(sp["kind"], 1, name)  # SPAN_KIND_INTERNAL
            self.assertEqual(sp["traceId"], trace_id)
            self.assertTrue(t["receive"][0] <= t[name][0] <= t[name][1] <= t["receive"][1],
                            "%s %r not inside receive %r" % (name, t[name], t["receive"]))
        for before, after in zip(CHILDREN, CHILDREN[1:]):
            self.assertLessEqual(t[before][1], t[after][0], "%s ends after %s starts: %r" % (before, after, t))
        self.assertEqual(attrs(by_name["batch"]).get("kiln.batch_size"), 1)

    def test_traceparent_spans(self):
        col = self.collector()
        s = self.serve("--otlp_endpoint=" + col.endpoint, "--enable_batching")
        tracestate = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
        for tfs in (False, True):
            trace_id, caller = new_ids()
            rid = "req-" + uuid.uuid4().hex[:12]
            r = self.infer(s.port, {"traceparent": "00-%s-%s-01" % (trace_id, caller), "tracestate": tracestate,
                                    "X-Request-Id": rid}, tfs=tfs)
            self.assertEqual(r.headers.get("tracestate"), tracestate)
            self.assertTrue(r.headers["traceparent"].endswith("-01"), r.headers)
            self.check_inference_trace(col, trace_id, caller, r, "/v1/models/m:predict" if tfs else "/v2/models/m/infer", rid)
        with col.lock:
            posts = list(col.posts)
            res, scope, _ = col.spans[0]
        self.assertTrue(all(p == "/v1/traces" and ct == "application/json" for p, ct, _ in posts), posts)
        self.assertEqual(res.get("service.name"), {"stringValue": "kiln"})
        self.assertIn("service.version", res)
        self.assertEqual(scope.get("name"), "kiln")
        print("  %d POSTs to /v1/traces, application/json, service.name=kiln, scope kiln" % len(posts))

        # another endpoint: a single receive span
        trace_id, caller = new_ids()
        r = request(s.port, "GET", "/v2/models/m", headers={"traceparent": "00-%s-%s-01" % (trace_id, caller)})
        self.assertEqual(r.status, 200)
        spans = col.wait_trace(trace_id, 1)
        time.sleep(0.2)
        spans = col.trace(trace_id)
        self.assertEqual([sp["name"] for sp in spans], ["receive"])
        self.assertEqual(spans[0]["parentSpanId"], caller)
        self.assertEqual(attrs(spans[0]).get("http.status_code"), 200)
        # an error answer: receive with the HTTP status, 404 is not a server error
        trace_id, caller = new_ids()
        r = request(s.port, "POST", "/v2/models/nosuch/infer", v2_json(self.x), headers={"traceparent": "00-%s-%s-01" % (trace_id, caller)})
        self.assertEqual(r.status, 404)
        spans = col.wait_trace(trace_id, 1)
        self.assertEqual(attrs(spans[0]).get("http.status_code"), 404)
        print("  metadata and 404 answers: one receive span each")

        # the access log carries the request id and the trace id
        log = s.log_text()
        s.stop_ok()
        access = [json.loads(l) for l in log.splitlines() if l.startswith("{") and '"type":"access"' in l]
        self.assertGreaterEqual(len(access), 5)
        for line in access:
            self.assertRegex(line.get("request_id", ""), r"^\S+$", line)
            self.assertRegex(line.get("trace_id", ""), r"^[0-9a-f]{32}$", line)
        self.assertTrue(any(l["request_id"] == rid and l["path"] == "/v1/models/m:predict" for l in access))
        self.assertTrue(any(l["trace_id"] == trace_id and l["status"] == "404" for l in access))
        print("  %d access log lines, each with request_id and trace_id" % len(access))

    def test_new_trace_and_sampling_flag(self):
        col = self.collector()
        s = self.serve("--otlp_endpoint=" + col.endpoint)
        # no traceparent: kiln starts a trace (sampled at the default ratio 1)
        r = self.infer(s.port, {"X-Request-Id": "fresh-1", "tracestate": "a=1"})
        m = TRACEPARENT.match(r.headers.get("traceparent", ""))
        self.assertIsNotNone(m, r.headers)
        self.assertNotEqual(m.group(1), "0" * 32)
        self.assertEqual(m.group(3), "01")
        self.assertNotIn("tracestate", r.headers)  # no tracestate without a valid traceparent
        self.check_inference_trace(col, m.group(1), None, r, "/v2/models/m/infer", "fresh-1")
        # an invalid traceparent (upper-case hex) starts a new trace too
        trace_id, caller = new_ids()
        r = self.infer(s.port, {"traceparent": "00-%s-%s-01" % (trace_id.upper(), caller), "tracestate": "a=1"})
        m = TRACEPARENT.match(r.headers["traceparent"])
        self.assertNotEqual(m.group(1), trace_id)
        self.assertNotIn("tracestate", r.headers)
        self.assertEqual(len(col.wait_trace(m.group(1), 5)), 5)
        print("  no / invalid traceparent: new traces %s..., recorded" % m.group(1)[:8])
        # a future version is accepted; kiln answers with version 00
        trace_id, caller = new_ids()
        r = self.infer(s.port, {"traceparent": "cc-%s-%s-01-future" % (trace_id, caller)})
        self.assertTrue(r.headers["traceparent"].startswith("00-%s-" % trace_id), r.headers)
        # sampled flag 00: propagated, nothing recorded
        unsampled, caller = new_ids()
        r = self.infer(s.port, {"traceparent": "00-%s-%s-00" % (unsampled, caller)})
        m = TRACEPARENT.match(r.headers["traceparent"])
        self.assertEqual((m.group(1), m.group(3)), (unsampled, "00"))
        # the queue is first in, first out: once a later sampled trace has arrived, the unsampled one
        # would have arrived before it
        later, caller = new_ids()
        self.infer(s.port, {"traceparent": "00-%s-%s-01" % (later, caller)})
        col.wait_trace(later, 5)
        self.assertEqual(col.trace(unsampled), [])
        print("  sampled flag 00: traceparent 00-%s...-00 answered, no spans" % unsampled[:8])
        s.stop_ok()

    def test_ratio_zero(self):
        col = self.collector()
        s = self.serve("--otlp_endpoint=" + col.endpoint, "--trace_sampling_ratio=0")
        fresh = []
        for _ in range(5):
            r = self.infer(s.port)
            m = TRACEPARENT.match(r.headers["traceparent"])
            self.assertEqual(m.group(3), "00")
            fresh.append(m.group(1))
        # parent-based: a caller's sampled trace is still recorded
        later, caller = new_ids()
        self.infer(s.port, {"traceparent": "00-%s-%s-01" % (later, caller)})
        col.wait_trace(later, 5)
        self.assertEqual([t for t in fresh if col.trace(t)], [])
        with col.lock:
            traces = {sp["traceId"] for _, _, sp in col.spans}
        self.assertEqual(traces, {later})
        print("  ratio 0: 5 new traces unrecorded, the caller-sampled one recorded")
        s.stop_ok()

    def check_no_latency(self, s, label):
        client = Client(s.port, timeout=5)
        worst = 0
        t_end = time.monotonic() + 2.5  # spans the exporter's 1 s flush (and a POST that fails or hangs)
        n = 0
        while time.monotonic() < t_end:
            trace_id, caller = new_ids()
            r = client.post("/v2/models/m/infer", v2_json(self.x), headers={"traceparent": "00-%s-%s-01" % (trace_id, caller)})
            self.assertEqual(r.status, 200, r)
            worst = max(worst, r.elapsed)
            n += 1
        client.close()
        self.assertLess(worst, 0.5, "%s: a request took %.3f s" % (label, worst))
        mt = metrics(s.port)
        dropped = mt.value("kiln_trace_spans_dropped_total")
        self.assertIsNotNone(dropped)
        self.assertGreater(dropped, 0)
        self.assertEqual(mt.value("kiln_trace_spans_exported_total"), 0)
        print("  %s: %d requests, slowest %.1f ms; kiln_trace_spans_dropped_total %g" % (label, n, worst * 1e3, dropped))
        return mt

    def test_unreachable_collector(self):
        sock, port = dead_port()
        self.sockets.append(sock)
        s = self.serve("--otlp_endpoint=http://127.0.0.1:%d" % port, "--otlp_max_queue_spans=16")
        self.check_no_latency(s, "unreachable collector")
        deadline = time.monotonic() + 5
        while metrics(s.port).value("kiln_trace_export_failures_total") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertGreaterEqual(metrics(s.port).value("kiln_trace_export_failures_total"), 1)
        t0 = time.monotonic()
        s.stop_ok()
        took = time.monotonic() - t0
        self.assertLess(took, 5)
        failures = [l for l in s.log_text().splitlines() if "trace export failed" in l]
        self.assertGreaterEqual(len(failures), 1)
        self.assertLessEqual(len(failures), 2, "failures are logged at most once per 10 s")
        print("  export failures logged %d time(s); SIGTERM to exit %.2f s" % (len(failures), took))

    def test_hanging_collector(self):
        col = self.collector(hang_s=5)
        s = self.serve("--otlp_endpoint=" + col.endpoint, "--otlp_max_queue_spans=16")
        self.check_no_latency(s, "collector hanging 5 s")
        t0 = time.monotonic()
        s.stop_ok()
        took = time.monotonic() - t0
        self.assertLess(took, 5, "shutdown flush is bounded (2 s)")
        print("  SIGTERM to exit with a hanging collector: %.2f s" % took)

    def test_canary_fallback_one_trace(self):
        """A canary request that fails is answered by stable, in one trace: the canary's attempt and
        stable's answer are both children of the one receive span."""
        w = self.w
        save_model([helper.make_node("Cast", ["x"], ["i"], to=TensorProto.INT64),
                    helper.make_node("Gather", ["table", "i"], ["g"]), helper.make_node("Mul", ["g", "zero"], ["z"]),
                    helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "z"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
                   [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.ones(3, np.float32), "table"),
                    numpy_helper.from_array(np.float32(0), "zero")], os.path.join(self.base, "2", "model.onnx"), "error")
        for version, lab in ((1, "stable"), (2, "canary")):
            r = subprocess.run([KILN, "registry", "label", "m", str(version), lab, "--repo", self.tmp],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
        col = self.collector()
        s = self.serve("--otlp_endpoint=" + col.endpoint, "--canary_percent=100", "--canary_min_requests=1000")
        trace_id, caller = new_ids()
        self.x = np.full((1, 4), 3, np.float32)  # out of the canary's table: its run fails
        r = self.infer(s.port, {"traceparent": "00-%s-%s-01" % (trace_id, caller), "X-Request-Id": "canary-1"})
        y = np.asarray(r.json()["outputs"][0]["data"], np.float32)
        np.testing.assert_allclose(y, (self.x @ w).ravel(), rtol=1e-6)
        spans = col.wait_trace(trace_id, 8)
        receive_id = TRACEPARENT.match(r.headers["traceparent"]).group(2)
        names = sorted((sp["name"], attrs(sp).get("kiln.model_version")) for sp in spans if sp["name"] != "receive")
        self.assertEqual(names, sorted([("queue", "2"), ("batch", "2"), ("inference", "2"),
                                        ("queue", "1"), ("batch", "1"), ("inference", "1"), ("encode", "1")]), spans)
        recv = [sp for sp in spans if sp["name"] == "receive"]
        self.assertEqual(len(recv), 1)
        self.assertEqual(recv[0]["spanId"], receive_id)
        self.assertEqual(attrs(recv[0]).get("kiln.model_version"), "1")
        for sp in spans:
            if sp["name"] != "receive":
                self.assertEqual(sp["parentSpanId"], receive_id)
        failed = [sp for sp in spans if sp["name"] == "inference" and attrs(sp)["kiln.model_version"] == "2"][0]
        self.assertEqual(failed["status"]["code"], 2)
        self.assertTrue(failed["status"].get("message"), failed)
        print("  canary failure answered by stable: one trace, 8 spans, the canary's inference span in error (%s)"
              % failed["status"]["message"][:60])
        s.stop_ok()

    def test_bad_flags(self):
        base = ["--model_name=m", "--model_base_path=" + self.base, "--rest_api_port=0", "--port=0", "--host=127.0.0.1"]
        for flags, message in ((["--otlp_endpoint=ftp://collector:4318"], "expected an http:// or https:// URL"),
                               (["--otlp_endpoint=http://"], "expected a host"),
                               (["--otlp_endpoint=http://127.0.0.1:4318", "--trace_sampling_ratio=1.5"],
                                "--trace_sampling_ratio must be between 0 and 1"),
                               (["--otlp_endpoint=http://127.0.0.1:4318", "--otlp_max_queue_spans=0"],
                                "--otlp_max_queue_spans must be 1-1048576")):
            r = subprocess.run([KILN, "serve"] + base + flags, capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 2, (flags, r.stderr))
            self.assertIn(message, r.stderr)
        print("  bad --otlp_endpoint / --trace_sampling_ratio / --otlp_max_queue_spans: exit 2 with the reason")

    def test_tracing_off(self):
        s = self.serve()
        trace_id, caller = new_ids()
        r = self.infer(s.port, {"traceparent": "00-%s-%s-01" % (trace_id, caller), "tracestate": "k=v"})
        m = TRACEPARENT.match(r.headers["traceparent"])
        self.assertEqual((m.group(1), m.group(3)), (trace_id, "01"))
        self.assertNotEqual(m.group(2), caller)
        self.assertEqual(r.headers.get("tracestate"), "k=v")
        self.assertIsNone(metrics(s.port).value("kiln_trace_spans_dropped_total"))
        s.stop_ok()
        print("  tracing off: traceparent and tracestate still propagated, no trace metrics")


def main():
    global KILN
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    KILN = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)


if __name__ == "__main__":
    main()
