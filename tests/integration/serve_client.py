"""Helpers for test_serve.py: starting and stopping `kiln serve`, HTTP clients (keep-alive, one-shot
and raw sockets for malformed or slow requests), Prometheus parsing, the models the tests serve and
`kiln run` as the reference. Talks to 127.0.0.1 only; every wait is bounded."""
import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from prometheus_client.parser import text_string_to_metric_families

HOST = "127.0.0.1"


# ---------------------------------------------------------------- HTTP

class Response:
    def __init__(self, status, headers, body, elapsed):
        self.status = status
        self.headers = headers  # lower-case names
        self.body = body
        self.elapsed = elapsed

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def error(self):
        """The message of an {"error": ...} body (the test fails when the body is not one)."""
        doc = self.json()
        if not isinstance(doc, dict) or not isinstance(doc.get("error"), str):
            raise AssertionError("not an {\"error\": ...} body: %r" % self.body[:300])
        return doc["error"]

    def __repr__(self):
        return "<%d %r>" % (self.status, self.body[:300])


def encode_body(body):
    if body is None or isinstance(body, (bytes, bytearray)):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


class Client:
    """One keep-alive connection (reopened when the server closed it)."""

    def __init__(self, port, timeout=10):
        self.port = port
        self.timeout = timeout
        self.conn = None

    def peer_closed(self):
        sock = self.conn.sock if self.conn is not None else None
        if sock is None:
            return False
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        try:
            return sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def ensure_open(self):
        if self.conn is not None and self.peer_closed():
            self.close()
        if self.conn is None:
            self.conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)

    def send(self, method, path, body=None, headers=None):
        """Sends a request (connecting when needed); exceptions come from connecting / sending."""
        self.ensure_open()
        hdrs = {"Content-Type": "application/json"} if body is not None and not isinstance(body, (bytes, bytearray)) else {}
        hdrs.update(headers or {})
        self.t0 = time.monotonic()
        self.conn.request(method, path, body=encode_body(body), headers=hdrs)

    def receive(self):
        """Reads the response to the request sent; exceptions come from receiving."""
        resp = self.conn.getresponse()
        data = resp.read()
        r = Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data, time.monotonic() - self.t0)
        if resp.will_close:
            self.close()
        return r

    def request(self, method, path, body=None, headers=None):
        try:
            self.send(method, path, body, headers)
            return self.receive()
        except Exception:
            self.close()
            raise

    def get(self, path):
        return self.request("GET", path)

    def post(self, path, body, headers=None):
        return self.request("POST", path, body, headers)

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def request(port, method, path, body=None, headers=None, timeout=10):
    """One request on a connection of its own."""
    c = Client(port, timeout)
    try:
        return c.request(method, path, body, headers)
    finally:
        c.close()


def raw_connect(port, timeout=10):
    s = socket.create_connection((HOST, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_response(sock, timeout=10):
    """Reads one HTTP response from a raw socket: (status, headers, body). Raises on a response cut short."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\r\n\r\n" not in data:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed after %d bytes of response head: %r" % (len(data), data[:200]))
        data += chunk
        if len(data) > 1 << 20:
            raise AssertionError("response head too long")
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
    if not m:
        raise AssertionError("bad status line %r" % lines[0])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("response body cut at %d of %d bytes" % (len(body), length))
        body += chunk
    return int(m.group(1)), headers, body[:length]


# ---------------------------------------------------------------- the server

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    """`kiln serve` on a free port of 127.0.0.1, its stderr in a temporary file."""

    def __init__(self, kiln, flags, workdir, ready=True, ready_timeout=10):
        self.kiln = kiln
        self.flags = list(flags)
        self.workdir = workdir
        for attempt in range(3):  # the port picked may be taken by someone else in between
            self.port = free_port()
            fd, self.log_path = tempfile.mkstemp(prefix="serve_", suffix=".log", dir=workdir)
            os.close(fd)
            self.log = open(self.log_path, "wb")
            env = dict(os.environ)
            for var in ("KILN_LOG_FORMAT", "KILN_LOG_LEVEL"):
                env.pop(var, None)
            # gRPC on any free port unless the test names one (its default, 8500, may be taken)
            grpc = [] if any(f.startswith("--port") for f in self.flags) else ["--port=0"]
            self.proc = subprocess.Popen(
                [kiln, "serve", "--rest_api_port=%d" % self.port, "--host=127.0.0.1"] + grpc + self.flags,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log, env=env)
            if not ready:
                return
            try:
                self.wait_ready(ready_timeout)
                return
            except AssertionError:
                if self.proc.poll() is not None and "in use" in self.log_text() and attempt < 2:
                    self.log.close()
                    continue
                self.kill()
                raise

    @property
    def pid(self):
        return self.proc.pid

    @property
    def grpc_port(self):
        """The gRPC port the server logged ("gRPC API listening on 127.0.0.1:PORT")."""
        m = re.search(r"gRPC API listening on \S+:(\d+)", self.log_text())
        if not m:
            self.fail("the server logged no gRPC port")
        return int(m.group(1))

    def log_text(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def log_tail(self, n=40):
        return "\n".join(self.log_text().splitlines()[-n:])

    def fail(self, why):
        raise AssertionError("%s\n--- kiln serve %s, stderr tail:\n%s" % (why, " ".join(self.flags), self.log_tail()))

    def wait_ready(self, timeout=10):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.fail("kiln serve exited with %d before it was ready" % self.proc.returncode)
            try:
                r = request(self.port, "GET", "/v2/health/ready", timeout=2)
                if r.status == 200:
                    return
                last = r
            except OSError as e:
                last = e
            time.sleep(0.02)
        self.fail("not ready within %g s (last answer: %r)" % (timeout, last))

    def stop(self, timeout=15):
        """SIGTERM, then the exit code (the process is killed when it does not exit in time)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.fail("did not exit within %g s of SIGTERM (killed)" % timeout)
        finally:
            self.log.close()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if not self.log.closed:
            self.log.close()

    def stop_ok(self):
        rc = self.stop()
        if rc != 0:
            self.fail("exit code %r after SIGTERM, expected 0" % rc)


# ---------------------------------------------------------------- metrics

class Metrics:
    """A /metrics page parsed with prometheus_client: families by name and samples by sample name."""

    def __init__(self, text):
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = {}
        for f in self.families.values():
            for s in f.samples:
                self.samples.setdefault(s.name, []).append(s)

    def has_family(self, name):
        if name in self.families:
            return True
        return name.endswith("_total") and name[: -len("_total")] in self.families

    def values(self, sample_name, **labels):
        return [s.value for s in self.samples.get(sample_name, [])
                if all(s.labels.get(k) == v for k, v in labels.items())]

    def value(self, sample_name, **labels):
        vs = self.values(sample_name, **labels)
        return sum(vs) if vs else None


def metrics(port, path="/metrics"):
    r = request(port, "GET", path)
    if r.status != 200:
        raise AssertionError("GET %s: %r" % (path, r))
    return Metrics(r.body.decode("utf-8"))


# ---------------------------------------------------------------- models

def save_model(nodes, inputs, outputs, initializers, path, name="g"):
    graph = helper.make_graph(nodes, name, inputs, outputs, initializers)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def mlp_model(path, rng):
    """test_cli.py's MLP: y = relu(x . W1^T + b1) . W2, x float[batch,8], y float[batch,4]."""
    w1 = rng.standard_normal((16, 8)).astype(np.float32)
    b1 = rng.standard_normal(16).astype(np.float32)
    w2 = rng.standard_normal((16, 4)).astype(np.float32)
    save_model([helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
                helper.make_node("Relu", ["h"], ["r"]),
                helper.make_node("MatMul", ["r", "w2"], ["y"])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
               [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"), numpy_helper.from_array(w2, "w2")],
               path, "mlp")


def pixels_model(path, rng):
    """y = flatten(x) . W^T + b, x float[batch,28,28], y float[batch,10]; returns W, b."""
    w = (rng.standard_normal((10, 784)) * 0.05).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    save_model([helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1)],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 28, 28])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
               [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")], path, "pixels")
    return w, b


def linear_model(path, w):
    """y = x . w, x float[batch, w.shape[0]]."""
    save_model([helper.make_node("MatMul", ["x", "w"], ["y"])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", w.shape[0]])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", w.shape[1]])],
               [numpy_helper.from_array(w.astype(np.float32), "w")], path, "linear")


def slow_model(path, rows=96, depth=50):
    """Deliberately slow: x float[batch,512] broadcast against `rows` offsets, then `depth` MatMuls
    of 512x512, averaged back to float[batch,512] (tens of ms a run on one thread)."""
    rng = np.random.default_rng(7)
    w = (rng.standard_normal((512, 512)) / np.sqrt(512)).astype(np.float32)
    z = (rng.standard_normal((rows, 1, 512)) * 0.1).astype(np.float32)
    nodes = [helper.make_node("Add", ["x", "z"], ["h0"])]
    for i in range(depth):
        nodes.append(helper.make_node("MatMul", ["h%d" % i, "w"], ["h%d" % (i + 1)]))
    nodes.append(helper.make_node("ReduceMean", ["h%d" % depth], ["y"], axes=[0], keepdims=0))
    save_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 512])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 512])],
               [numpy_helper.from_array(w, "w"), numpy_helper.from_array(z, "z")], path, "slow")


def add_version(base, number, write):
    """Creates <base>/<number> atomically: write(folder) fills <base>/.tmp-<number>, then it is renamed
    into place, so that the server's poller never sees a half-written version."""
    tmp = os.path.join(base, ".tmp-%d" % number)
    os.makedirs(tmp)
    write(tmp)
    os.rename(tmp, os.path.join(base, str(number)))


def kiln_run(kiln, model, x, workdir):
    """The reference: `kiln run` on x, returns y."""
    d = tempfile.mkdtemp(dir=workdir)
    np.save(os.path.join(d, "x.npy"), x)
    out = os.path.join(d, "out")
    os.makedirs(out)
    r = subprocess.run([kiln, "run", model, "--input", "x=" + os.path.join(d, "x.npy"), "--output", out],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise AssertionError("kiln run failed: %s" % r.stderr)
    return np.load(os.path.join(out, "y.npy"))


# ---------------------------------------------------------------- payloads

def tfs_rows(x):
    return {"instances": np.asarray(x).tolist()}


def v2_json(x, name="x", datatype="FP32"):
    x = np.asarray(x)
    return {"inputs": [{"name": name, "shape": list(x.shape), "datatype": datatype, "data": x.ravel().tolist()}]}


def v2_binary(x, name="x", output="y", size=None, extra=b""):
    """A V2 binary-extension body and its headers; `size` overrides binary_data_size."""
    x = np.ascontiguousarray(x, dtype="<f4")
    raw = x.tobytes() + extra
    header = json.dumps({"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(x.tobytes()) if size is None else size}}],
                         "outputs": [{"name": output, "parameters": {"binary_data": True}}]}).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}


def v2_output(resp, name="y"):
    """The named output of a V2 infer response (JSON or binary extension) as an array, and the
    response's JSON part."""
    hlen = resp.headers.get("inference-header-content-length")
    body = resp.body
    doc = json.loads(body[: int(hlen)] if hlen is not None else body)
    offset = int(hlen) if hlen is not None else len(body)
    for out in doc["outputs"]:
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            data = body[offset: offset + size]
            offset += size
        if out["name"] != name:
            continue
        if out["datatype"] != "FP32":
            raise AssertionError("output %s: datatype %s" % (name, out["datatype"]))
        if size is not None:
            if len(data) != size:
                raise AssertionError("binary output cut: %d of %d bytes" % (len(data), size))
            arr = np.frombuffer(data, dtype="<f4")
        else:
            arr = np.asarray(out["data"], dtype=np.float32)
        return arr.reshape(out["shape"]), doc
    raise AssertionError("no output %r in %r" % (name, doc))
