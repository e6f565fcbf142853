#!/usr/bin/python3
"""deploy/nginx/kiln.conf in front of kiln serve replicas, on 127.0.0.1 with Debian's nginx:

- two `kiln serve` replicas and nginx; client threads send TF Serving and KServe V2 predict
  requests without pause; one replica gets SIGTERM mid-run (it drains and exits 0) and traffic goes
  on: no request fails, both replicas answered before the stop and only the survivor after it
  (nginx's access log names the replica of every attempt), nginx stops cleanly;
- the headers and retries the file promises, against Python upstreams that record what they get:
  X-Request-Id and traceparent/tracestate passed through unchanged (and an id made up when the
  client sent none), HTTP/1.1 with kept-alive upstream connections, a POST answered 503 retried on
  the next replica, bodies over client_max_body_size refused by nginx.

    test_nginx.py KILN [unittest flags]

Every load loop is bounded in count and time.
"""
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ beside the tests
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nginx_harness import NGINX, Nginx, client_max_body_bytes  # noqa: E402
from serve_client import Client, Server, linear_model, raw_connect, read_response, tfs_rows, v2_json, v2_output  # noqa: E402

KILN = None
W = (np.arange(32, dtype=np.float32).reshape(8, 4) - 10) / 16  # y = x . W, x float[batch,8]


def final_upstream(entry):
    """The replica that gave the answer: the last of the attempts nginx logged."""
    return re.split(r"\s*[,:]\s+", entry["upstream"].strip())[-1]


class Traffic(threading.Thread):
    """One client of nginx sending predict requests, alternating TF Serving rows and V2 JSON, each
    with a fresh X-Request-Id, until told to stop (or `limit` requests). Records every request's
    id and its failure, if any: an exception, a status other than 200, a wrong output or a
    response whose X-Request-Id is not the request's."""

    def __init__(self, port, seed, limit=20000):
        super().__init__(daemon=True)
        self.client = Client(port, timeout=30)
        self.rng = np.random.default_rng(seed)
        self.limit = limit
        self.stop_flag = threading.Event()
        self.ids = []
        self.failures = []

    def one(self, i):
        x = self.rng.standard_normal((1 + i % 3, 8)).astype(np.float32)
        want = x.astype(np.float64) @ W.astype(np.float64)
        rid = uuid.uuid4().hex
        self.ids.append(rid)
        try:
            if i % 2:
                r = self.client.post("/v1/models/m:predict", tfs_rows(x), headers={"X-Request-Id": rid})
                y = np.asarray(r.json()["predictions"], dtype=np.float64) if r.status == 200 else None
            else:
                r = self.client.post("/v2/models/m/infer", v2_json(x), headers={"X-Request-Id": rid})
                y = v2_output(r)[0] if r.status == 200 else None
        except Exception as e:  # noqa: BLE001 - every failure is recorded, whatever its kind
            self.failures.append("%s: %r" % (rid, e))
            return
        if r.status != 200:
            self.failures.append("%s: %d %r" % (rid, r.status, r.body[:200]))
        elif r.headers.get("x-request-id") != rid:
            self.failures.append("%s: response X-Request-Id %r" % (rid, r.headers.get("x-request-id")))
        elif y.shape != want.shape or not np.allclose(y, want, rtol=1e-5, atol=1e-5):
            self.failures.append("%s: got %r, expected %r" % (rid, y.ravel()[:4], want.ravel()[:4]))

    def run(self):
        for i in range(self.limit):
            if self.stop_flag.is_set():
                break
            self.one(i)
        self.client.close()


class ReplicaStopTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="kiln_nginx_")
        self.replicas = []
        self.nginx = None
        self.traffic = []

    def tearDown(self):
        for t in self.traffic:
            t.stop_flag.set()
        for t in self.traffic:
            t.join(30)
        if self.nginx:
            self.nginx.kill()
        for r in self.replicas:
            r.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def wait_log(self, what, cond, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond(self.nginx.log_entries()):
                return
            time.sleep(0.05)
        raise AssertionError("timed out waiting for " + what)

    def test_sigterm_one_replica_under_traffic(self):
        model = os.path.join(self.tmp, "src", "m.onnx")
        linear_model(model, W)
        repo = os.path.join(self.tmp, "models")
        r = subprocess.run([KILN, "registry", "push", model, "--repo", repo, "--name", "m"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        # both replicas serve the same repository, as the Kubernetes pods share theirs
        flags = ["--model_name=m", "--model_base_path=" + os.path.join(repo, "m"), "--require_manifest",
                 "--max_body_bytes=%d" % client_max_body_bytes(), "--drain_timeout_seconds=10",
                 "--rest_api_num_threads=1", "--tensorflow_inter_op_parallelism=1", "--enable_batching"]
        for _ in range(2):
            self.replicas.append(Server(KILN, flags, self.tmp, ready_timeout=30))
        stopped, survivor = self.replicas
        addr = {"127.0.0.1:%d" % s.port: s for s in self.replicas}
        a_stopped, a_survivor = "127.0.0.1:%d" % stopped.port, "127.0.0.1:%d" % survivor.port
        print("replicas %s (to be stopped) and %s; nginx %s" % (a_stopped, a_survivor, NGINX))
        self.nginx = Nginx(self.tmp, list(addr))

        self.traffic = [Traffic(self.nginx.port, seed) for seed in range(3)]
        for t in self.traffic:
            t.start()

        def answered_by(entries, a):
            return sum(1 for e in entries if e["status"] == 200 and final_upstream(e) == a)

        self.wait_log("20 answers from each replica",
                      lambda es: answered_by(es, a_stopped) >= 20 and answered_by(es, a_survivor) >= 20)
        t_term = time.time()
        rc = stopped.stop(timeout=30)
        t_exit = time.time()
        self.assertEqual(rc, 0, "the stopped replica's exit code after SIGTERM\n" + stopped.log_tail())
        print("SIGTERM to %s: drained and exited 0 after %.2f s" % (a_stopped, t_exit - t_term))
        self.wait_log("2 s and 100 answers after the replica exited",
                      lambda es: time.time() > t_exit + 2
                      and sum(1 for e in es if e["msec"] - e["request_time"] > t_exit) >= 100)
        for t in self.traffic:
            t.stop_flag.set()
        for t in self.traffic:
            t.join(60)
            self.assertFalse(t.is_alive(), "a client thread did not finish")

        failures = [f for t in self.traffic for f in t.failures]
        ids = [i for t in self.traffic for i in t.ids]
        print("%d requests through nginx, %d failed" % (len(ids), len(failures)))
        self.assertEqual(failures, [], "failed requests (first 10): %s" % failures[:10])

        self.assertEqual(self.nginx.stop(), 0, "nginx's exit code after SIGQUIT")
        # nginx logs the refused connections to the stopped replica as errors: those, and only those
        errors = self.nginx.errors()
        unexpected = [e for e in errors if a_stopped not in e or re.search(r"\[(crit|alert|emerg)\]", e)]
        self.assertEqual(unexpected, [], "nginx errors not about the stopped replica")
        print("nginx stopped cleanly (exit 0); %d error lines, all about the stopped replica" % len(errors))
        survivor.stop_ok()
        self.replicas = [stopped]

        entries = {e["request_id"]: e for e in self.nginx.log_entries()}
        missing = [i for i in ids if i not in entries]
        self.assertEqual(missing, [], "requests without an nginx log line")
        by_phase = {"before": {}, "after": {}}
        retried = 0
        for i in ids:
            e = entries[i]
            self.assertEqual(e["status"], 200, e)
            self.assertIn(final_upstream(e), addr, e)
            start = e["msec"] - e["request_time"]
            retried += "," in e["upstream"]
            phase = "before" if e["msec"] < t_term else "after" if start > t_exit else None
            if phase:
                up = final_upstream(e)
                by_phase[phase][up] = by_phase[phase].get(up, 0) + 1
        print("answers before SIGTERM by replica: %s" % by_phase["before"])
        print("answers to requests sent after the exit: %s" % by_phase["after"])
        print("%d requests retried on another replica by nginx" % retried)
        self.assertEqual(set(by_phase["before"]), {a_stopped, a_survivor}, "both replicas serve before the stop")
        self.assertEqual(set(by_phase["after"]), {a_survivor}, "only the survivor serves after the stop")
        self.assertGreaterEqual(by_phase["after"][a_survivor], 100)


class Recorder(http.server.BaseHTTPRequestHandler):
    """An upstream that answers `self.server.status` with a JSON record of what it received (and keeps
    the record: method, path, HTTP version, headers, the peer's port, the body's length)."""

    protocol_version = "HTTP/1.1"

    def do_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        rec = {"method": self.command, "path": self.path, "version": self.request_version,
               "headers": {k.lower(): v for k, v in self.headers.items()}, "port": self.client_address[1],
               "length": len(body)}
        self.server.seen.append(rec)
        out = json.dumps(rec).encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_any

    def log_message(self, *args):
        pass


def recorder(status):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    srv.daemon_threads = True
    srv.status = status
    srv.seen = []
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


class HeadersAndRetriesTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="kiln_nginx_")
        self.refuser = recorder(503)  # a draining replica's answer
        self.echo = recorder(200)
        self.nginx = Nginx(self.tmp, ["127.0.0.1:%d" % self.refuser.server_address[1],
                                      "127.0.0.1:%d" % self.echo.server_address[1]])

    def tearDown(self):
        self.nginx.kill()
        for srv in (self.refuser, self.echo):
            srv.shutdown()
            srv.server_close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def logged(self, request_id, timeout=5):
        """nginx's log line for a request (written once the response is out, so it may lag the client)."""
        deadline = time.monotonic() + timeout
        while True:
            for e in self.nginx.log_entries():
                if e["request_id"] == request_id:
                    return e
            if time.monotonic() > deadline:
                raise AssertionError("no nginx log line for request %s" % request_id)
            time.sleep(0.02)

    def test_headers_keepalive_retry_and_body_limit(self):
        client = Client(self.nginx.port)
        trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        state = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
        body = {"instances": [[1.0, 2.0]]}
        for i in range(4):
            r = client.post("/v1/models/m:predict", body,
                            headers={"X-Request-Id": "req-%d" % i, "traceparent": trace, "tracestate": state})
            self.assertEqual(r.status, 200, "request %d: %r" % (i, r))
            got = r.json()
            self.assertEqual((got["method"], got["path"], got["version"]), ("POST", "/v1/models/m:predict", "HTTP/1.1"))
            self.assertEqual(got["headers"].get("x-request-id"), "req-%d" % i)
            self.assertEqual(got["headers"].get("traceparent"), trace)
            self.assertEqual(got["headers"].get("tracestate"), state)
            self.assertNotEqual(got["headers"].get("connection", "").lower(), "close")
            self.assertEqual(got["length"], len(json.dumps(body)))
        print("X-Request-Id, traceparent and tracestate reach the upstream unchanged, over HTTP/1.1")
        ports = [rec["port"] for rec in self.echo.seen]
        self.assertEqual(len(set(ports[-3:])), 1, "consecutive requests reuse one upstream connection: %s" % ports)
        print("upstream connections kept alive: %d requests on %d connection(s)" % (len(ports), len(set(ports))))

        # the first POST went to the refusing replica first (round robin starts there) and was
        # answered by the other; nginx then rested the refusing one (max_fails=1)
        self.assertEqual(len(self.refuser.seen), 1, self.refuser.seen)
        self.assertEqual(self.refuser.seen[0]["method"], "POST")
        first = self.logged("req-0")
        self.assertEqual((first["status"], first["upstream_status"]), (200, "503, 200"), first)
        print("a POST answered 503 was retried on the next replica: %s -> %s" % (first["upstream"], first["upstream_status"]))

        r = client.get("/v2/health/ready")
        self.assertEqual(r.status, 200, r)
        made_up = r.json()["headers"].get("x-request-id", "")
        self.assertRegex(made_up, r"^[0-9a-f]{32}$", "nginx gives a request without X-Request-Id one of its own")
        self.logged(made_up)
        self.assertNotIn("traceparent", r.json()["headers"], "no traceparent is made up")
        print("a request without X-Request-Id gets nginx's $request_id: %s" % made_up)
        client.close()

        limit = client_max_body_bytes()
        seen = len(self.echo.seen)
        sock = raw_connect(self.nginx.port)
        try:
            sock.sendall(b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % (limit + 1))
            status, _, _ = read_response(sock)
        finally:
            sock.close()
        self.assertEqual(status, 413)
        self.assertEqual(len(self.echo.seen), seen, "the oversized request reached the upstream")
        print("a body of client_max_body_size + 1 = %d bytes is refused by nginx (413)" % (limit + 1))
        self.assertEqual(self.nginx.stop(), 0)
        self.assertEqual([e for e in self.nginx.errors() if not re.search(r"upstream|client intended to send too large", e)],
                         [], "unexpected nginx errors")


if __name__ == "__main__":
    KILN = os.path.abspath(sys.argv.pop(1))
    if not os.access(NGINX, os.X_OK):
        sys.exit("test_nginx: %s is missing: scripts/deps.sh installs nginx-light" % NGINX)
    unittest.main(verbosity=2)
