#!/usr/bin/python3
"""The trainer's ONNX export against two independent runtimes and ONNX's own checker. The unit
test binary trains a small MLP for an epoch, exports it into the folder it is given and writes
input.npy and expected.npy there (the trainer's own forward pass on those inputs), and an image
model (conv, pooling, batch norm) likewise in conv/; each exported
model must reproduce it in `kiln run` and in ONNX Runtime (npm onnxruntime-node, installed into
bench/.cache/ort as bench/runtime does), and pass onnx.checker (Debian python3-onnx).

    test_train_export.py TEST_TRAIN_EXPORT_BINARY KILN
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import onnx

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
UNIT, KILN = None, None
RTOL, ATOL = 1e-5, 1e-6


def runtime_bench():
    """bench/runtime/run.py as a module: its ensure_ort installs the pinned ONNX Runtime (as bench/serve uses it)."""
    spec = importlib.util.spec_from_file_location("runtime_bench", os.path.join(ROOT, "bench", "runtime", "run.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ExportTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="kiln_train_export_")
        r = subprocess.run([UNIT, cls.dir], capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError("%s failed:\n%s" % (UNIT, r.stderr[-3000:]))
        cls.model = os.path.join(cls.dir, "model.onnx")
        cls.input = np.load(os.path.join(cls.dir, "input.npy"))
        cls.expected = np.load(os.path.join(cls.dir, "expected.npy"))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def test_files(self):
        self.assertEqual(self.input.dtype, np.float32)
        self.assertEqual(self.input.shape, (16, 4, 4))
        self.assertEqual(self.expected.shape, (16, 3))
        # a softmax output: rows are distributions, and not all the same one (the model learned something of x)
        np.testing.assert_allclose(self.expected.sum(axis=1), 1, rtol=1e-5)
        self.assertGreater(np.ptp(self.expected[:, 0]), 1e-4)
        with open(os.path.join(self.dir, "preprocess.json")) as f:
            pre = json.load(f)
        self.assertEqual(pre["schema"], "schema.json")
        self.assertEqual(pre["transforms"], [{"scale": {"feature": "x", "factor": 0.5, "offset": 0.25}},
                                             {"cast": {"feature": "x", "dtype": "float"}}])
        with open(os.path.join(self.dir, "schema.json")) as f:
            schema = json.load(f)
        self.assertEqual([(x["name"], x["dtype"], x["shape"]) for x in schema["features"]], [("x", "float", [4, 4])])
        self.assertEqual(schema["num_records"], 64)

    def test_onnx_checker(self):
        m = onnx.load(self.model)
        onnx.checker.check_model(m, full_check=True)
        self.assertEqual(m.ir_version, 8)
        self.assertEqual([(o.domain, o.version) for o in m.opset_import], [("", 13)])
        self.assertEqual(m.producer_name, "kiln")
        self.assertEqual(sorted(i.name for i in m.graph.initializer),
                         ["dense/bias", "dense/kernel", "dense_1/bias", "dense_1/kernel"])
        kernel = next(i for i in m.graph.initializer if i.name == "dense/kernel")
        self.assertEqual(list(kernel.dims), [16, 8])
        [x], [y] = m.graph.input, m.graph.output
        self.assertEqual(x.name, "x")
        self.assertEqual([d.dim_param or d.dim_value for d in x.type.tensor_type.shape.dim], ["batch", 4, 4])
        self.assertEqual(y.name, "output")
        self.assertEqual([d.dim_param or d.dim_value for d in y.type.tensor_type.shape.dim], ["batch", 3])

    def exports(self):
        """The MLP's folder and the image model's."""
        return [self.dir, os.path.join(self.dir, "conv")]

    def test_kiln_run(self):
        for d in self.exports():
            with self.subTest(model=d):
                out = os.path.join(d, "kiln_out")
                os.makedirs(out, exist_ok=True)
                r = subprocess.run([KILN, "run", os.path.join(d, "model.onnx"), "--input", "x=" + os.path.join(d, "input.npy"),
                                    "--output", out], capture_output=True, text=True, timeout=120)
                self.assertEqual(r.returncode, 0, r.stderr)
                np.testing.assert_allclose(np.load(os.path.join(out, "output.npy")), np.load(os.path.join(d, "expected.npy")),
                                           rtol=RTOL, atol=ATOL)

    def test_onnxruntime(self):
        try:
            node_path = runtime_bench().ensure_ort()
        except subprocess.CalledProcessError as e:
            # the peer comes from the npm registry (CLARIFICATIONS: ONNX Runtime peer); a machine that cannot reach
            # it (no network, a proxy whose certificate it lacks) skips this comparison, loudly
            print("SKIPPED: onnxruntime-node could not be installed from the npm registry (%s)" % e, file=sys.stderr)
            self.skipTest("onnxruntime-node could not be installed from the npm registry")
        for d in self.exports():
            with self.subTest(model=d):
                x, expected = np.load(os.path.join(d, "input.npy")), np.load(os.path.join(d, "expected.npy"))
                raw_in, raw_out = os.path.join(d, "input.f32"), os.path.join(d, "ort_output.f32")
                x.astype("<f4").tofile(raw_in)
                r = subprocess.run(["node", os.path.join(HERE, "ort_run.js"), os.path.join(d, "model.onnx"), "x",
                                    ",".join(map(str, x.shape)), raw_in, raw_out], capture_output=True, text=True, timeout=300,
                                   env=dict(os.environ, NODE_PATH=node_path))
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(json.loads(r.stdout.strip().splitlines()[-1]), {"output": "output", "dims": list(expected.shape)})
                got = np.fromfile(raw_out, dtype="<f4").reshape(expected.shape)
                np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)

    def test_onnx_checker_image_model(self):
        m = onnx.load(os.path.join(self.dir, "conv", "model.onnx"))
        onnx.checker.check_model(m, full_check=True)
        ops = [n.op_type for n in m.graph.node]
        for op in ["Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "BatchNormalization", "Transpose"]:
            self.assertIn(op, ops)

if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    UNIT, KILN = sys.argv[1], sys.argv[2]
    unittest.main(argv=sys.argv[:1] + sys.argv[3:], verbosity=2)
