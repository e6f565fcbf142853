#!/usr/bin/python3
"""Safe rollout, end to end: `kiln registry push` → the server checks each version against its
manifest (a tampered byte is refused, with the reason in the model status and the log); canary
traffic split by label; a good canary promoted, and canaries that return NaN, that error and that
are 10x slower rolled back automatically while a client keeps sending requests — with zero failed
requests and every response from a live version; canaries that fail warm-up rejected; the admin
API's token checks and audit log.

    test_rollout.py KILN [unittest flags]

Every server listens on 127.0.0.1 on a free port; every load loop is bounded in count and time.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

import numpy as np
from onnx import TensorProto, helper, numpy_helper

sys.dont_write_bytecode = True  # no __pycache__ beside the tests
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_client import Client, Server, metrics, request, save_model, slow_model, v2_json, v2_output  # noqa: E402

KILN = None
W = np.arange(16, dtype=np.float32).reshape(4, 4) / 8 - 1


# ---------------------------------------------------------------- models (x float[batch,4] -> y float[batch,4])

def linear(path, scale=1.0):
    """y = x . (scale W)."""
    save_model([helper.make_node("MatMul", ["x", "w"], ["y"])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
               [numpy_helper.from_array((W * scale).astype(np.float32), "w")], path, "linear")


def nan_beyond_two(path):
    """y = x . W + 0 * sqrt(2 - x): finite for the warm-up inputs (uniform in [-1, 1)), NaN for x > 2."""
    save_model([helper.make_node("Sub", ["two", "x"], ["d"]), helper.make_node("Sqrt", ["d"], ["r"]),
                helper.make_node("Mul", ["r", "zero"], ["z"]), helper.make_node("MatMul", ["x", "w"], ["m"]),
                helper.make_node("Add", ["m", "z"], ["y"])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
               [numpy_helper.from_array(W, "w"), numpy_helper.from_array(np.float32(2), "two"),
                numpy_helper.from_array(np.float32(0), "zero")], path, "nan")


def error_beyond_two(path):
    """y = x . W + 0 * table[int(x)]: a Gather whose indices are in range for the warm-up inputs and out
    of range (an error) for x >= 3."""
    save_model([helper.make_node("Cast", ["x"], ["i"], to=TensorProto.INT64),
                helper.make_node("Gather", ["table", "i"], ["g"]), helper.make_node("Mul", ["g", "zero"], ["z"]),
                helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "z"], ["y"])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
               [numpy_helper.from_array(W, "w"), numpy_helper.from_array(np.ones(3, np.float32), "table"),
                numpy_helper.from_array(np.float32(0), "zero")], path, "error")


def nan_on_warmup(path):
    """y = x . W + log(x - 5): NaN for every warm-up input."""
    save_model([helper.make_node("Sub", ["x", "five"], ["d"]), helper.make_node("Log", ["d"], ["l"]),
                helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "l"], ["y"])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
               [numpy_helper.from_array(W, "w"), numpy_helper.from_array(np.float32(5), "five")], path, "nanwarm")


def fails_warmup(path):
    """Reshapes every batch to 3 elements: a run on any input fails."""
    save_model([helper.make_node("Reshape", ["x", "shape"], ["r"]), helper.make_node("Identity", ["r"], ["y"])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
               [numpy_helper.from_array(np.array([3], np.int64), "shape")], path, "broken")


def scaled_512(path):
    """The slow canary's stable: y = 2 x, x float[batch,512]."""
    save_model([helper.make_node("Mul", ["x", "two"], ["y"])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 512])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 512])],
               [numpy_helper.from_array(np.float32(2), "two")], path, "fast")


# ---------------------------------------------------------------- helpers

def kiln(*args, check=True):
    r = subprocess.run([KILN] + list(args), capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError("kiln %s: exit %d\n%s" % (" ".join(args), r.returncode, r.stderr))
    return r


def push(repo, name, model):
    return int(kiln("registry", "push", model, "--repo", repo, "--name", name).stdout.strip())


def label(repo, name, version, lab):
    kiln("registry", "label", name, str(version), lab, "--repo", repo)


def labels_json(repo, name):
    path = os.path.join(repo, name, "labels.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def wait_for(what, cond, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


class Traffic:
    """A client sending V2 requests with fresh request ids: counts the versions that answered and
    every failure (a non-200 answer, NaN/Inf in an answer, or an answer that is not the answering
    version's output)."""

    def __init__(self, port, name, x, expected):
        self.client = Client(port, timeout=30)
        self.path = "/v2/models/%s/infer" % name
        self.x = x
        self.expected = expected  # version -> y
        self.by_version = {}
        self.failures = []

    def send(self, n, until=None, limit_s=60):
        deadline = time.monotonic() + limit_s
        for _ in range(n):
            if until is not None and until():
                return
            if time.monotonic() > deadline:
                raise AssertionError("traffic: %d requests took over %d s" % (n, limit_s))
            r = self.client.post(self.path, v2_json(self.x), headers={"X-Request-Id": uuid.uuid4().hex})
            if r.status != 200:
                self.failures.append("%d %s" % (r.status, r.body[:200]))
                continue
            y, doc = v2_output(r)
            version = int(doc["model_version"])
            self.by_version[version] = self.by_version.get(version, 0) + 1
            want = self.expected.get(version)
            if want is None:
                self.failures.append("answered by version %d, which is not live" % version)
            elif not np.all(np.isfinite(y)) or not np.allclose(y, want, rtol=1e-5, atol=1e-5):
                self.failures.append("version %d answered %r, expected %r" % (version, y.ravel()[:4], want.ravel()[:4]))


class RolloutTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="kiln_rollout_")
        self.repo = os.path.join(self.tmp, "models")
        self.models = os.path.join(self.tmp, "src")
        os.makedirs(self.models)
        self.server = None

    def tearDown(self):
        if self.server:
            self.server.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def model(self, name, make, *args):
        path = os.path.join(self.models, name + ".onnx")
        make(path, *args)
        return path

    def serve(self, name="m", *flags, ready=True):
        self.server = Server(KILN, ["--model_name=" + name, "--model_base_path=" + os.path.join(self.repo, name),
                                    "--file_system_poll_wait_seconds=0.2", "--canary_percent=25",
                                    "--canary_min_requests=40"] + list(flags), self.tmp, ready=ready, ready_timeout=30)
        return self.server

    def status(self, name="m"):
        r = request(self.server.port, "GET", "/v1/models/" + name)
        self.assertEqual(r.status, 200, r)
        return {int(v["version"]): v for v in r.json()["model_version_status"]}

    def status_when_up(self, name="m"):
        try:
            return self.status(name)
        except OSError:
            return {}

    def rollbacks(self, reason):
        return metrics(self.server.port).value("kiln_rollbacks_total", model="m", reason=reason) or 0

    # ---------------------------------------------------------------- manifests

    def test_tampered_version_is_refused(self):
        v1 = push(self.repo, "m", self.model("a", linear))
        v2 = push(self.repo, "m", self.model("b", linear, 2.0))
        label(self.repo, "m", v1, "stable")
        kiln("registry", "verify", "m", "--repo", self.repo)
        model = os.path.join(self.repo, "m", str(v2), "model.onnx")
        with open(model, "r+b") as f:  # flip one byte of the weights (the file's tail)
            f.seek(-3, os.SEEK_END)
            b = f.read(1)
            f.seek(-3, os.SEEK_END)
            f.write(bytes([b[0] ^ 0x01]))
        self.serve()
        st = self.status()
        self.assertEqual(st[v1]["state"], "AVAILABLE")
        self.assertEqual(st[v2]["state"], "END")
        msg = st[v2]["status"]["error_message"]
        self.assertIn("manifest", msg)
        self.assertIn("model.onnx", msg)
        self.assertIn("SHA-256", msg)
        self.assertIn("model.onnx", self.server.log_text())
        r = request(self.server.port, "POST", "/v2/models/m/infer", v2_json(np.ones((1, 4), np.float32)))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(v2_output(r)[1]["model_version"], str(v1))
        self.server.stop_ok()
        self.server = None

    def test_missing_manifest_refused_only_when_required(self):
        os.makedirs(os.path.join(self.repo, "m", "1"))
        linear(os.path.join(self.repo, "m", "1", "model.onnx"))
        self.serve("m", "--require_manifest", ready=False)
        wait_for("version 1 refused", lambda: self.status_when_up().get(1, {}).get("state") == "END")
        self.assertIn("no manifest.json", self.status()[1]["status"]["error_message"])
        self.server.stop_ok()
        self.server = Server(KILN, ["--model_name=m", "--model_base_path=" + os.path.join(self.repo, "m")], self.tmp)
        self.assertEqual(self.status()[1]["state"], "AVAILABLE")
        self.server.stop_ok()
        self.server = None

    # ---------------------------------------------------------------- canaries under traffic

    def start_canary(self, canary_model, x, y_canary, *flags):
        """Serves stable (linear) and labels `canary_model` canary; returns the traffic and the versions."""
        x = np.asarray(x, np.float32)
        stable = push(self.repo, "m", self.model("stable", linear))
        label(self.repo, "m", stable, "stable")
        self.serve("m", *flags)
        canary = push(self.repo, "m", canary_model)
        label(self.repo, "m", canary, "canary")
        wait_for("the canary to load", lambda: self.status().get(canary, {}).get("state") in ("AVAILABLE", "END"))
        return Traffic(self.server.port, "m", x, {stable: x @ W, canary: y_canary}), stable, canary

    def assert_rolled_back(self, traffic, stable, canary, reason):
        traffic.send(1500, until=lambda: any(r.get("version") == canary for r in labels_json(self.repo, "m").get("rejected", [])))
        doc = labels_json(self.repo, "m")
        rejected = [r for r in doc.get("rejected", []) if r["version"] == canary]
        self.assertEqual(len(rejected), 1, "canary %d not rejected in labels.json: %r" % (canary, doc))
        print("  %s canary rolled back after %d requests (answered by version: %r): %s" %
              (reason, sum(traffic.by_version.values()) + len(traffic.failures), traffic.by_version, rejected[0]["reason"]))
        self.assertNotIn("canary", doc.get("labels", {}))
        self.assertEqual(doc["labels"]["stable"], stable)
        self.assertEqual(self.rollbacks(reason), 1)
        self.assertIn("canary rolled back", self.server.log_text())
        before = traffic.by_version.get(stable, 0)
        traffic.send(60)
        self.assertEqual(traffic.by_version.get(stable, 0) - before, 60, "traffic went on to the canary: %r" % traffic.by_version)
        self.assertEqual(traffic.failures, [])
        traffic.client.close()
        wait_for("the canary to be unloaded", lambda: canary not in self.status())
        self.server.stop_ok()
        self.server = None

    def test_good_canary_is_promoted(self):
        x = np.full((1, 4), 0.5, np.float32)
        traffic, stable, canary = self.start_canary(self.model("good", linear, 1.5), x, x @ (W * 1.5),
                                                    "--canary_promote_requests=60")
        self.assertEqual(self.status()[canary]["state"], "AVAILABLE")
        traffic.send(1500, until=lambda: labels_json(self.repo, "m").get("labels", {}).get("stable") == canary)
        doc = labels_json(self.repo, "m")
        self.assertEqual(doc["labels"].get("stable"), canary, doc)
        self.assertNotIn("canary", doc["labels"])
        self.assertIn(stable, doc.get("stable_history", []))
        self.assertGreater(traffic.by_version.get(canary, 0), 0)
        wait_for("the old stable to be unloaded", lambda: stable not in self.status())
        traffic.send(40)
        self.assertEqual(traffic.failures, [])
        self.assertEqual(self.rollbacks("error_rate"), 0)
        self.assertEqual(metrics(self.server.port).value("kiln_canary_promotions_total", model="m"), 1)
        # the operator rolls back: stable returns to the previous stable, without a failed request
        kiln("registry", "rollback", "m", "--repo", self.repo)
        wait_for("the rollback", lambda: self.status().get(stable, {}).get("state") == "AVAILABLE")
        before = traffic.by_version.get(stable, 0)
        traffic.send(40, limit_s=30)
        self.assertGreater(traffic.by_version.get(stable, 0), before)
        self.assertEqual(traffic.failures, [])
        traffic.client.close()
        self.server.stop_ok()
        self.server = None

    def test_rollout_and_rollback_under_concurrent_traffic(self):
        x = np.full((1, 4), 0.5, np.float32)
        v1 = push(self.repo, "m", self.model("a", linear))
        label(self.repo, "m", v1, "stable")
        self.serve("m")
        v2 = push(self.repo, "m", self.model("b", linear, 2.0))
        expected = {v1: x @ W, v2: x @ (W * 2)}
        stop = threading.Event()
        clients = [Traffic(self.server.port, "m", x, expected) for _ in range(3)]

        def run(t):
            while not stop.is_set():
                t.send(20)

        threads = [threading.Thread(target=run, args=(t,)) for t in clients]
        for t in threads:
            t.start()
        try:
            def answered(version):
                return lambda: sum(c.by_version.get(version, 0) for c in clients) > 0

            label(self.repo, "m", v2, "canary")
            wait_for("canary traffic", answered(v2))
            label(self.repo, "m", v2, "stable")  # the rollout
            wait_for("v1 to be unloaded", lambda: v1 not in self.status())
            before = sum(c.by_version.get(v1, 0) for c in clients)
            kiln("registry", "rollback", "m", "--repo", self.repo)
            wait_for("v1 to serve again", lambda: sum(c.by_version.get(v1, 0) for c in clients) > before)
            time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        total = sum(sum(c.by_version.values()) for c in clients)
        failures = [f for c in clients for f in c.failures]
        print("  %d requests over a canary, a rollout and a rollback: %d failed" % (total, len(failures)))
        self.assertEqual(failures, [])
        for reason in ("error_rate", "nonfinite", "latency", "warmup"):  # a healthy canary under load stays
            self.assertEqual(self.rollbacks(reason), 0, reason)
        for c in clients:
            c.client.close()
        self.server.stop_ok()
        self.server = None

    def test_split_is_sticky_per_request_id(self):
        x = np.full((1, 4), 0.5, np.float32)
        traffic, stable, canary = self.start_canary(self.model("good", linear, 1.5), x, x @ (W * 1.5),
                                                    "--canary_min_requests=100000")
        traffic.send(400)
        share = traffic.by_version.get(canary, 0) / 400
        print("  canary share of 400 requests at --canary_percent=25: %.1f%%" % (100 * share))
        self.assertTrue(0.15 < share < 0.35, share)
        for k in range(20):
            rid = "client-%d" % k
            versions = set()
            for _ in range(5):
                r = traffic.client.post("/v2/models/m/infer", v2_json(x), headers={"X-Request-Id": rid})
                self.assertEqual(r.status, 200, r)
                versions.add(v2_output(r)[1]["model_version"])
            self.assertEqual(len(versions), 1, "request id %s went to %r" % (rid, versions))
        self.assertEqual(traffic.failures, [])
        traffic.client.close()
        self.server.stop_ok()
        self.server = None

    def test_nan_canary_is_rolled_back(self):
        x = np.full((1, 4), 3.0, np.float32)
        traffic, stable, canary = self.start_canary(self.model("nan", nan_beyond_two), x, None)
        self.assertEqual(self.status()[canary]["state"], "AVAILABLE")
        self.assert_rolled_back(traffic, stable, canary, "nonfinite")

    def test_erroring_canary_is_rolled_back(self):
        x = np.full((1, 4), 3.0, np.float32)
        traffic, stable, canary = self.start_canary(self.model("error", error_beyond_two), x, None)
        self.assertEqual(self.status()[canary]["state"], "AVAILABLE")
        self.assert_rolled_back(traffic, stable, canary, "error_rate")

    def test_rollback_in_a_read_only_repository(self):
        x = np.full((1, 4), 3.0, np.float32)
        traffic, stable, canary = self.start_canary(self.model("error", error_beyond_two), x, None)
        lock = os.path.join(self.repo, "m", ".lock")  # the registry cannot lock the model: no write succeeds
        os.remove(lock)
        os.mkdir(lock)
        traffic.send(1500, until=lambda: self.rollbacks("error_rate") == 1)
        self.assertEqual(self.rollbacks("error_rate"), 1)
        self.assertIn("cannot record the canary's verdict", self.server.log_text())
        self.assertEqual(labels_json(self.repo, "m")["labels"].get("canary"), canary)  # unchanged on disk
        wait_for("the canary to be unloaded", lambda: canary not in self.status())
        time.sleep(1)  # five polls: the rejected canary must not come back
        self.assertNotIn(canary, self.status())
        traffic.send(200)
        self.assertEqual(self.rollbacks("error_rate"), 1)
        self.assertEqual(traffic.failures, [])
        self.assertEqual(list(traffic.by_version), [stable])
        traffic.client.close()
        self.server.stop_ok()
        self.server = None

    def test_slow_canary_is_rolled_back(self):
        x = np.linspace(-1, 1, 512, dtype=np.float32).reshape(1, 512)
        stable = push(self.repo, "m", self.model("fast", scaled_512))
        label(self.repo, "m", stable, "stable")
        self.serve("m")
        slow = self.model("slow", slow_model, 64, 40)
        canary = push(self.repo, "m", slow)
        label(self.repo, "m", canary, "canary")
        wait_for("the canary to load", lambda: self.status().get(canary, {}).get("state") == "AVAILABLE")
        y_slow = v2_output(request(self.server.port, "POST", "/v2/models/m/versions/%d/infer" % canary, v2_json(x)))[0]
        traffic = Traffic(self.server.port, "m", x, {stable: 2 * x, canary: y_slow})
        # time the two versions side by side: the canary must really be 10x slower for this test to mean anything
        t = {}
        for v in (stable, canary):
            t0 = time.monotonic()
            for _ in range(20):
                traffic.client.post("/v2/models/m/versions/%d/infer" % v, v2_json(x))
            t[v] = time.monotonic() - t0
        self.assertGreater(t[canary], 10 * t[stable], "the slow model is not 10x slower: %r" % t)
        self.assert_rolled_back(traffic, stable, canary, "latency")

    def test_canary_failing_warmup_is_rejected(self):
        for make, name in ((fails_warmup, "broken"), (nan_on_warmup, "nanwarm")):
            with self.subTest(name):
                stable = push(self.repo, "m", self.model("stable", linear))
                label(self.repo, "m", stable, "stable")
                self.serve("m")
                canary = push(self.repo, "m", self.model(name, make))
                label(self.repo, "m", canary, "canary")
                wait_for("the rejection", lambda: any(r["version"] == canary for r in labels_json(self.repo, "m").get("rejected", [])))
                self.assertEqual(self.rollbacks("warmup"), 1)
                traffic = Traffic(self.server.port, "m", np.ones((1, 4), np.float32), {stable: np.ones((1, 4), np.float32) @ W})
                traffic.send(40)
                self.assertEqual(traffic.failures, [])
                self.assertEqual(list(traffic.by_version), [stable])
                traffic.client.close()
                self.server.stop_ok()
                self.server = None
                shutil.rmtree(self.repo)

    # ---------------------------------------------------------------- admin API

    def test_admin_api(self):
        v1 = push(self.repo, "m", self.model("a", linear))
        v2 = push(self.repo, "m", self.model("b", linear, 2.0))
        label(self.repo, "m", v1, "stable")
        token = os.path.join(self.tmp, "token")
        with open(token, "w") as f:
            f.write("s3cret-token\n")
        os.chmod(token, 0o600)
        audit = os.path.join(self.tmp, "audit.jsonl")
        self.serve("m", "--admin_token_file=" + token, "--admin_audit_log=" + audit)
        port = self.server.port
        path = "/v1/admin/models/m/labels"
        body = {"version": v2, "label": "stable"}
        before = labels_json(self.repo, "m")
        r = request(port, "POST", path, body)
        self.assertEqual(r.status, 401, r)
        self.assertIn("Bearer", r.headers.get("www-authenticate", ""))
        r = request(port, "POST", path, body, headers={"Authorization": "Bearer wrong"})
        self.assertEqual(r.status, 403, r)
        r = request(port, "POST", path, body, headers={"Authorization": "Bearer s3cret-token-and-more"})
        self.assertEqual(r.status, 403, r)
        self.assertEqual(labels_json(self.repo, "m"), before, "an unauthorized call changed the labels")
        auth = {"Authorization": "Bearer s3cret-token"}
        self.assertEqual(request(port, "GET", path, headers=auth).status, 405)
        self.assertEqual(request(port, "POST", "/v1/admin/models/m/delete", {}, headers=auth).status, 404)
        self.assertEqual(request(port, "POST", "/v1/admin/models/nope/reload", None, headers=auth).status, 404)
        self.assertEqual(request(port, "POST", path, "{broken", headers=auth).status, 400)
        self.assertEqual(request(port, "POST", path, {"version": 99, "label": "stable"}, headers=auth).status // 100, 4)
        r = request(port, "POST", path, body, headers=auth)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(labels_json(self.repo, "m")["labels"]["stable"], v2)
        x = np.ones((1, 4), np.float32)
        wait_for("v2 to serve", lambda: v2_output(request(port, "POST", "/v2/models/m/infer", v2_json(x)))[1]["model_version"] == str(v2))
        r = request(port, "POST", "/v1/admin/models/m/rollback", None, headers=auth)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["stable"], str(v1))
        wait_for("v1 to serve again", lambda: v2_output(request(port, "POST", "/v2/models/m/infer", v2_json(x)))[1]["model_version"] == str(v1))
        self.assertEqual(request(port, "POST", "/v1/admin/models/m/reload", None, headers=auth).status, 200)
        self.server.stop_ok()
        self.server = None
        with open(audit) as f:
            entries = [json.loads(line) for line in f]
        self.assertEqual([e["status"] for e in entries], [401, 403, 403, 405, 404, 404, 400, 404, 200, 200, 200],
                         entries)
        self.assertEqual([e["auth"] for e in entries[:3]], ["no token", "wrong token", "wrong token"])
        for e in entries:
            for key in ("time", "remote", "action", "model", "status", "result"):
                self.assertIn(key, e)
            self.assertTrue(e["remote"].startswith("127.0.0.1:"), e)
            self.assertNotIn("s3cret", json.dumps(e))
        self.assertEqual(entries[8]["params"], body)
        self.assertEqual(entries[9]["action"], "rollback")

    def test_admin_api_disabled_without_token(self):
        push(self.repo, "m", self.model("a", linear))
        self.serve("m")
        r = request(self.server.port, "POST", "/v1/admin/models/m/reload", None, headers={"Authorization": "Bearer x"})
        self.assertEqual(r.status, 404, r)
        self.assertIn("disabled", r.error())
        self.server.stop_ok()
        self.server = None


if __name__ == "__main__":
    KILN = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
