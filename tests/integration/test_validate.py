#!/usr/bin/python3
"""`kiln validate`, the CI gate, end to end: small linear classifiers built with onnx.helper in a
model repository, golden outputs computed by PyTorch, accuracies by NumPy (Debian python3-onnx,
-torch, -numpy), and the gate's exit code, stderr summary and JSON report for a good version and
for each way a version fails: wrong golden outputs, accuracy below the bar, latency over budget, a
breaking signature change, a regression against a baseline; usage and I/O errors exit 2.

    test_validate.py KILN
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

KILN = None


def save_model(path, nodes, inputs, outputs, initializers):
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(a, n) for n, a in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.save(model, path)


def linear(path, w, b, probs=False):
    """y = x @ w + b, x float[N, in]; with probs, also Softmax(y) as a second output."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", w.shape[0]])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", w.shape[1]])
    nodes, outputs = [helper.make_node("Gemm", ["x", "w", "b"], ["y"])], [y]
    if probs:
        nodes.append(helper.make_node("Softmax", ["y"], ["probs"], axis=1))
        outputs.append(helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", w.shape[1]]))
    save_model(path, nodes, [x], outputs, {"w": w, "b": b})


def torch_linear(x, w, b):
    """The golden reference: PyTorch's linear layer (weight transposed as torch stores it)."""
    with torch.no_grad():
        return torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(w.T.copy()), torch.from_numpy(b)).numpy()


class ValidateTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = d = tempfile.mkdtemp(prefix="kiln_validate_")
        rng = np.random.default_rng(7)
        cls.w1, cls.b1 = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
        cls.w2, cls.b2 = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
        repo = os.path.join(d, "repo", "clf")
        linear(os.path.join(repo, "1", "model.onnx"), cls.w1, cls.b1)
        linear(os.path.join(repo, "2", "model.onnx"), cls.w2, cls.b2)
        # version 3 takes 5 features: a breaking change against version 2
        linear(os.path.join(repo, "3", "model.onnx"), rng.standard_normal((5, 3)).astype(np.float32), cls.b2)
        # a second model whose version 2 adds an output: compatible
        linear(os.path.join(d, "repo", "compat", "1", "model.onnx"), cls.w2, cls.b2)
        linear(os.path.join(d, "repo", "compat", "2", "model.onnx"), cls.w2, cls.b2, probs=True)

        # labelled data: version 2's arg-max is the label, so version 2 scores 1.0 and version 1 what NumPy says
        x = rng.standard_normal((300, 4)).astype(np.float32)
        cls.labels = (x @ cls.w2 + cls.b2).argmax(axis=1).astype(np.int64)
        cls.acc1 = float(((x @ cls.w1 + cls.b1).argmax(axis=1) == cls.labels).mean())
        assert cls.acc1 < 0.8, cls.acc1
        np.savez(os.path.join(d, "data.npz"), x=x, label=cls.labels)

        # golden cases for version 2 (.npy and ONNX TensorProto .pb), and a copy with one value off
        for name, rows in [("a", x[:3]), ("b", x[3:8])]:
            case = os.path.join(d, "golden", name)
            os.makedirs(case)
            np.save(os.path.join(case, "input_0.npy"), rows)
            np.save(os.path.join(case, "output_0.npy"), torch_linear(rows, cls.w2, cls.b2))
        case = os.path.join(d, "golden", "c_pb")
        os.makedirs(case)
        with open(os.path.join(case, "input_0.pb"), "wb") as f:
            f.write(numpy_helper.from_array(x[8:10]).SerializeToString())
        with open(os.path.join(case, "output_0.pb"), "wb") as f:
            f.write(numpy_helper.from_array(torch_linear(x[8:10], cls.w2, cls.b2)).SerializeToString())
        shutil.copytree(os.path.join(d, "golden"), os.path.join(d, "golden_bad"))
        bad = os.path.join(d, "golden_bad", "b", "output_0.npy")
        y = np.load(bad)
        cls.bad_got = float(y[2, 1])
        y[2, 1] += 0.01  # flat index 7
        cls.bad_expected = float(y[2, 1])
        np.save(bad, y)

        # a heavy model (eight 256x256 matrix products on a fixed 256x256 input) for the latency budget
        heavy = rng.standard_normal((256, 256)).astype(np.float32) / 16
        names = ["x"] + ["h%d" % i for i in range(7)] + ["y"]
        save_model(os.path.join(d, "repo", "heavy", "1", "model.onnx"),
                   [helper.make_node("MatMul", [names[i], "w"], [names[i + 1]]) for i in range(8)],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [256, 256])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [256, 256])], {"w": heavy})
        # a slow classifier with version 2's signature (a 2048-wide hidden layer) against version 2 as baseline
        save_model(os.path.join(d, "repo", "slow", "1", "model.onnx"),
                   [helper.make_node("MatMul", ["x", "w1"], ["h1"]), helper.make_node("Relu", ["h1"], ["r1"]),
                    helper.make_node("MatMul", ["r1", "w2"], ["h2"]), helper.make_node("MatMul", ["h2", "w3"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                   {"w1": rng.standard_normal((4, 2048)).astype(np.float32),
                    "w2": rng.standard_normal((2048, 2048)).astype(np.float32) / 45,
                    "w3": rng.standard_normal((2048, 3)).astype(np.float32)})
        os.makedirs(os.path.join(d, "repo", "broken", "1"))
        with open(os.path.join(d, "repo", "broken", "1", "model.onnx"), "wb") as f:
            f.write(b"this is not an ONNX model")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def validate(self, *args, expect):
        """Runs kiln validate with a --report; checks the exit code; returns (report, stderr)."""
        report = os.path.join(self.dir, "report.json")
        if os.path.exists(report):
            os.remove(report)
        r = subprocess.run([KILN, "validate", "--report", report, *args], cwd=self.dir, capture_output=True, text=True,
                           timeout=120)
        print("  kiln validate %s -> %d" % (" ".join(args), r.returncode))
        self.assertEqual(r.returncode, expect, r.stderr)
        with open(report) as f:
            return json.load(f), r.stderr

    def checks(self, report):
        return {c["name"]: c for c in report["checks"]}

    def assert_failed(self, report, stderr, name):
        """The gate failed on `name`, in the report and in the summary on stderr."""
        self.assertFalse(report["passed"])
        c = self.checks(report)[name]
        self.assertEqual(c["status"], "fail", c)
        self.assertIn("FAIL %s: " % name, stderr)
        return c

    def test_good_version_passes(self):
        report, err = self.validate("repo/clf/2", "--golden", "golden", "--eval", "data.npz", "--min-accuracy", "0.99",
                                    "--max-latency-p99-ms", "100", expect=0)
        self.assertTrue(report["passed"])
        self.assertEqual(report["version_dir"], "repo/clf/2")
        self.assertTrue(report["kiln_version"])
        c = self.checks(report)
        self.assertEqual([x["name"] for x in report["checks"]],
                         ["load", "manifest", "signature", "golden", "accuracy", "latency", "baseline"])
        self.assertEqual(c["load"]["status"], "pass")
        self.assertEqual(c["signature"]["status"], "pass")
        self.assertEqual(c["signature"]["previous_version"], 1)
        self.assertEqual(c["golden"]["status"], "pass")
        self.assertEqual((c["golden"]["cases"], c["golden"]["failed_cases"]), (3, 0))
        self.assertEqual(c["accuracy"]["status"], "pass")
        self.assertEqual(c["accuracy"]["records"], 300)
        self.assertEqual(c["accuracy"]["accuracy"], 1.0)
        self.assertEqual(c["latency"]["status"], "pass")
        self.assertEqual(c["latency"]["runs"], 200)
        self.assertLessEqual(c["latency"]["p50_ms"], c["latency"]["p99_ms"])
        self.assertEqual(c["baseline"]["status"], "skipped")
        for line in ["PASS load: ", "PASS signature: ", "PASS golden: ", "PASS accuracy: ", "PASS latency: ",
                     "validation passed"]:
            self.assertIn(line, err)

    def test_wrong_golden_outputs_fail(self):
        report, err = self.validate("repo/clf/2", "--golden", "golden_bad", "--latency-runs", "0", expect=1)
        c = self.assert_failed(report, err, "golden")
        self.assertEqual((c["cases"], c["failed_cases"]), (3, 1))
        [m] = c["mismatches"]
        self.assertEqual((m["case"], m["output"], m["index"]), ("b", "y", 7))
        self.assertAlmostEqual(m["expected"], self.bad_expected, places=5)
        self.assertAlmostEqual(m["got"], self.bad_got, places=5)
        # a looser tolerance accepts the difference
        report, _ = self.validate("repo/clf/2", "--golden", "golden_bad", "--atol", "0.02", "--latency-runs", "0", expect=0)
        self.assertEqual(self.checks(report)["golden"]["status"], "pass")

    def test_accuracy_below_the_bar_fails(self):
        report, err = self.validate("repo/clf/1", "--eval", "data.npz", "--min-accuracy", "0.9", "--latency-runs", "0",
                                    expect=1)
        c = self.assert_failed(report, err, "accuracy")
        self.assertAlmostEqual(c["accuracy"], self.acc1, places=6)  # kiln eval's number, as NumPy computes it
        self.assertEqual(c["min_accuracy"], 0.9)
        # and kiln eval agrees
        r = subprocess.run([KILN, "eval", "repo/clf/1", "data.npz", "--json"], cwd=self.dir, capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertAlmostEqual(json.loads(r.stdout)["accuracy"], self.acc1, places=6)

    def test_latency_over_budget_fails(self):
        report, err = self.validate("repo/heavy/1", "--latency-runs", "20", "--max-latency-p99-ms", "0.5", expect=1)
        c = self.assert_failed(report, err, "latency")
        self.assertEqual(c["runs"], 20)
        self.assertGreater(c["p99_ms"], 0.5)
        self.assertEqual(c["max_p99_ms"], 0.5)

    def test_breaking_signature_fails(self):
        report, err = self.validate("repo/clf/3", "--latency-runs", "0", expect=1)
        c = self.assert_failed(report, err, "signature")
        self.assertEqual(c["previous_version"], 2)
        self.assertEqual(c["breaking"], ["input 'x': dimension 1 4 -> 5"])
        # a new output is compatible, noted
        report, err = self.validate("repo/compat/2", "--latency-runs", "0", expect=0)
        c = self.checks(report)["signature"]
        self.assertEqual((c["status"], c["breaking"], c["notes"]), ("pass", [], ["new output 'probs'"]))
        # the first version has nothing to compare with
        report, _ = self.validate("repo/clf/1", "--latency-runs", "0", expect=0)
        self.assertEqual(self.checks(report)["signature"]["status"], "skipped")

    def test_baseline(self):
        # the same model as its own baseline: no regression
        report, _ = self.validate("repo/clf/2", "--baseline", "repo/clf/2", "--eval", "data.npz", "--latency-runs", "0",
                                  expect=0)
        c = self.checks(report)["baseline"]
        self.assertEqual((c["status"], c["baseline_accuracy"], c["max_regression"]), ("pass", 1.0, 0.05))
        # version 1 against version 2: accuracy well below 1.0 * (1 - 0.05)
        report, err = self.validate("repo/clf/1", "--baseline", "repo/clf/2", "--eval", "data.npz", "--latency-runs", "0",
                                    expect=1)
        c = self.assert_failed(report, err, "baseline")
        self.assertAlmostEqual(c["accuracy_floor"], 0.95)
        self.assertEqual(self.checks(report)["signature"]["against"], "repo/clf/2")
        # a 2048-wide hidden layer against the 4x3 baseline, timed in the same loop
        report, err = self.validate("repo/slow/1", "--baseline", "repo/clf/2", "--latency-runs", "50",
                                    "--max-regression", "0.5", expect=1)
        c = self.assert_failed(report, err, "baseline")
        self.assertGreater(c["p99_ms"], c["p99_ceiling_ms"])
        self.assertAlmostEqual(c["p99_ceiling_ms"], c["baseline_p99_ms"] * 1.5 + 0.05, places=9)

    def test_load_failure_fails(self):
        report, err = self.validate("repo/broken/1", "--golden", "golden", expect=1)
        self.assert_failed(report, err, "load")
        self.assertEqual(self.checks(report)["golden"]["status"], "skipped")

    def test_usage_and_io_errors_exit_2(self):
        for args, message in [
            (["repo/clf/9"], "repo/clf/9: not a folder"),
            (["repo/clf/2", "--golden", "no_such_dir"], "golden folder no_such_dir"),
            (["repo/clf/2", "--golden", "repo/clf"], "no input_0.npy or input_0.pb for the model's input 'x'"),
            (["repo/clf/2", "--min-accuracy", "0.5"], "a minimum accuracy needs evaluation data"),
            (["repo/clf/2", "--eval", "missing.npz"], "--eval: "),
            (["repo/clf/2", "--baseline", "repo/broken/1"], "baseline: "),
            (["repo/clf/2", "--max-regression", "0.1"], "--max-regression needs --baseline"),
            (["repo/clf/2", "--latency-runs", "-1"], "--latency-runs must be in"),
            (["repo/clf/2", "--no-such-flag"], "bad command line"),
        ]:
            report, err = self.validate(*args, expect=2)
            self.assertFalse(report["passed"])
            self.assertIn(message, report["error"])
            self.assertIn("kiln validate", err)
        r = subprocess.run([KILN, "validate"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)

    def test_manifest_when_the_registry_is_there(self):
        r = subprocess.run([KILN, "registry", "--help"], capture_output=True, text=True)
        if r.returncode != 0:
            self.skipTest("kiln registry is not built into this kiln")
        repo = os.path.join(self.dir, "pushed")
        src = os.path.join(self.dir, "repo", "clf", "2", "model.onnx")
        r = subprocess.run([KILN, "registry", "push", src, "--name", "clf", "--repo", repo], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        report, _ = self.validate("pushed/clf/1", "--latency-runs", "0", expect=0)
        self.assertEqual(self.checks(report)["manifest"]["status"], "pass")
        with open(os.path.join(repo, "clf", "1", "model.onnx"), "r+b") as f:  # tamper with a byte
            f.seek(10)
            byte = f.read(1)
            f.seek(10)
            f.write(bytes([byte[0] ^ 1]))
        report, err = self.validate("pushed/clf/1", "--latency-runs", "0", expect=1)
        self.assertIn("model.onnx", self.assert_failed(report, err, "manifest")["detail"])


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    KILN = os.path.abspath(sys.argv[1])
    unittest.main(argv=sys.argv[:1] + sys.argv[2:], verbosity=2)
