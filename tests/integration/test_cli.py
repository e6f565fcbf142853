#!/usr/bin/python3
"""The kiln command line, end to end: help and usage errors, info, run (with every kind of bad
input a user can give it), bench --json, conformance, and --device on run, bench, serve, validate
and train (with no NVML, and with the fake NVML library's two GPUs: kiln has no CUDA backend yet, so
every cuda device exits 2 and says why, never running on the CPU instead).

    test_cli.py KILN FAKE_NVML_LIBRARY
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
from onnx import TensorProto, helper, numpy_helper

KILN = None
FAKE_NVML = None
DATA = "/usr/include/onnx/backend/test/data/node"


def kiln(*args, env=None):
    return subprocess.run([KILN] + [str(a) for a in args], capture_output=True, text=True, timeout=120, env=env)


def mlp_model(path, rng):
    """y = relu(x . W1^T + b1) . W2 with a symbolic batch dimension; returns the weights."""
    w1 = rng.standard_normal((16, 8)).astype(np.float32)
    b1 = rng.standard_normal(16).astype(np.float32)
    w2 = rng.standard_normal((16, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
         helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["y"])],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"), numpy_helper.from_array(w2, "w2")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return w1, b1, w2


class Cli(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="kiln_cli_")
        cls.model = os.path.join(cls.dir, "mlp.onnx")
        cls.w1, cls.b1, cls.w2 = mlp_model(cls.model, np.random.default_rng(1))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir)

    def path(self, name):
        return os.path.join(self.dir, name)

    def save(self, name, array):
        np.save(self.path(name), array)
        return self.path(name)

    def assertFails(self, result, text, code=2):
        self.assertEqual(result.returncode, code, result.stderr)
        self.assertIn(text, result.stderr)

    # --- help and usage
    def test_help_everywhere(self):
        r = kiln("--help")
        self.assertEqual(r.returncode, 0)
        for cmd in ["info", "run", "bench", "conformance"]:
            self.assertIn(cmd, r.stdout)
            r2 = kiln(cmd, "--help")
            self.assertEqual(r2.returncode, 0, cmd)
            self.assertIn("usage: kiln " + cmd, r2.stdout)

    def test_usage_errors(self):
        self.assertFails(kiln(), "usage: kiln <command>")
        self.assertFails(kiln("frobnicate"), "unknown command 'frobnicate'")
        self.assertFails(kiln("info"), "missing arguments")
        self.assertFails(kiln("bench", self.model, "--iters", "many"), "is not an integer")
        self.assertFails(kiln("bench", self.model, "--no-such-flag"), "unknown flag '--no-such-flag'")
        self.assertEqual(kiln("version").returncode, 0)

    # --- info
    def test_info_text_and_json(self):
        r = kiln("info", self.model)
        self.assertEqual(r.returncode, 0, r.stderr)
        for text in ["x", "float[batch,8]", "float[batch,4]", "ai.onnx 13", "Gemm", "parameters: 208", "unsupported: none"]:
            self.assertIn(text, r.stdout)
        info = json.loads(kiln("info", self.model, "--json").stdout)
        self.assertEqual(info["inputs"], [{"name": "x", "kind": "tensor", "optional": False, "dtype": "float", "shape": ["batch", 8]}])
        self.assertEqual(info["operators"], {"Gemm": 1, "Relu": 1, "MatMul": 1})
        self.assertEqual(info["parameters"], 16 * 8 + 16 + 16 * 4)

    def test_info_lists_unsupported_ops(self):
        graph = helper.make_graph([helper.make_node("FancyOp", ["x"], ["y"], domain="com.example")], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
        path = self.path("fancy.onnx")
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.example", 1)]), path)
        r = kiln("info", path)
        self.assertEqual(r.returncode, 0)
        self.assertIn("'FancyOp' (domain 'com.example', opset 1)", r.stdout)
        self.assertFails(kiln("run", path, "--input", "x=" + self.save("f.npy", np.zeros(2, np.float32))),
                         "unsupported operator 'FancyOp' (domain 'com.example', opset 1)")

    # --- run
    def test_run_matches_numpy(self):
        x = np.random.default_rng(2).standard_normal((5, 8)).astype(np.float32)
        out = self.path("out")
        os.makedirs(out, exist_ok=True)
        r = kiln("run", self.model, "--input", "x=" + self.save("x.npy", x), "--output", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        y = np.load(os.path.join(out, "y.npy"))
        want = np.maximum(x @ self.w1.T + self.b1, 0) @ self.w2
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)

    def test_run_bad_inputs(self):
        x = np.zeros((2, 8), np.float32)
        self.assertFails(kiln("run", self.model, "--input", "x=" + self.save("d.npy", x.astype(np.float64))),
                         "input 'x': expected float[batch,8], got double[2,8] (wrong dtype)")
        self.assertFails(kiln("run", self.model, "--input", "x=" + self.save("r.npy", np.zeros(8, np.float32))),
                         "input 'x': expected float[batch,8], got float[8] (rank 1, expected 2)")
        self.assertFails(kiln("run", self.model, "--input", "x=" + self.save("m.npy", np.zeros((2, 7), np.float32))),
                         "dimension 1 is 7, expected 8")
        self.assertFails(kiln("run", self.model), "input 'x' is missing")
        self.assertFails(kiln("run", self.model, "--input", "z=" + self.save("z.npy", x)),
                         "the model has no input named 'z' (its inputs: 'x')")
        good = open(self.save("t.npy", x), "rb").read()
        with open(self.path("trunc.npy"), "wb") as f:
            f.write(good[:-5])
        self.assertFails(kiln("run", self.model, "--input", "x=" + self.path("trunc.npy")), "truncated data")
        self.assertFails(kiln("run", self.model, "--input", "x=" + self.path("missing.npy")), "missing.npy")
        self.assertFails(kiln("run", self.model, "--input", "x=" + self.path("t.npy"), "--output", self.path("nodir")),
                         "output folder")

    def test_run_malformed_models(self):
        with open(self.path("junk.onnx"), "wb") as f:
            f.write(b"\x08\x07\x12\xff\xff\xff\xff\x0fjunk")
        self.assertFails(kiln("run", self.path("junk.onnx")), "not a valid ONNX model")
        whole = open(self.model, "rb").read()
        with open(self.path("cut.onnx"), "wb") as f:
            f.write(whole[: len(whole) // 2])
        self.assertFails(kiln("info", self.path("cut.onnx")), "cut.onnx")
        self.assertFails(kiln("info", self.path("absent.onnx")), "absent.onnx: No such file")

    # --- bench
    def test_bench_json(self):
        r = kiln("bench", self.model, "--batch", 4, "--iters", 20, "--threads", 1, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.strip().splitlines()
        self.assertEqual(len(lines), 1)
        result = json.loads(lines[0])
        for key in ["p50_us", "p90_us", "p99_us", "throughput_per_s"]:
            self.assertGreater(result[key], 0)
        self.assertLessEqual(result["p50_us"], result["p99_us"])
        self.assertEqual(result["batch"], 4)


    # --- --device
    def device_commands(self):
        """Each command with arguments it accepts, so that --device is what decides."""
        x = self.save("dev_x.npy", np.zeros((2, 8), np.float32))
        os.makedirs(self.path("dev_out"), exist_ok=True)  # so that a run that went ahead would leave y.npy
        return {"run": ["run", self.model, "--input", "x=" + x, "--output", self.path("dev_out")],
                "bench": ["bench", self.model, "--iters", 2, "--threads", 1],
                "serve": ["serve", "--model_name", "m", "--model_base_path", self.path("no_repo"), "--rest_api_port", 0,
                          "--port", 0],
                "validate": ["validate", self.path("no_version")],
                "train": ["train", "--epochs", 1, "--logdir", "", "--checkpoint-dir", self.path("dev_ckpt")]}

    def nvml_env(self, library):
        return dict(os.environ, KILN_NVML_LIBRARY=library)

    def test_device_in_help(self):
        for cmd in self.device_commands():
            r = kiln(cmd, "--help")
            self.assertEqual(r.returncode, 0, cmd)
            self.assertRegex(r.stdout, r"--device DEV +cpu \(default\) or cuda\[:N\]", cmd)

    def test_device_cpu_runs(self):
        x = np.random.default_rng(3).standard_normal((3, 8)).astype(np.float32)
        want = np.maximum(x @ self.w1.T + self.b1, 0) @ self.w2
        for flags in ([], ["--device", "cpu"], ["--device=cpu"]):
            out = self.path("cpu_out%d" % len(flags))
            os.makedirs(out, exist_ok=True)
            r = kiln("run", self.model, "--input", "x=" + self.save("cpu_x.npy", x), "--output", out, *flags)
            self.assertEqual(r.returncode, 0, r.stderr)
            np.testing.assert_allclose(np.load(os.path.join(out, "y.npy")), want, rtol=1e-5, atol=1e-5)
            r = kiln("bench", self.model, "--iters", 3, "--threads", 1, "--json", *flags)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(json.loads(r.stdout)["batch"], 1)
        # serve, validate and train get past --device cpu to their next check
        self.assertFails(kiln("serve", "--device", "cpu"), "give either --model_name")
        self.assertFails(kiln("validate", self.path("no_version"), "--device", "cpu"), "no_version")
        self.assertFails(kiln("train", "--device", "cpu", "--epochs", -1), "must not be negative")

    def test_device_bad_values(self):
        for cmd, args in self.device_commands().items():
            for value in ["gpu", "CUDA", "cuda:", "cuda:-1", "cuda:+1", "cuda: 1", "cuda:1x", "cuda:0x1", "cuda1",
                          "cuda:1024", "cuda:99999999999999999999", "cpu:0", ""]:
                r = kiln(*args, "--device", value)
                self.assertFails(r, "kiln %s: --device '%s': expected cpu, cuda or cuda:N (N a GPU index, 0 to 1023)"
                                 % (cmd, value))
            self.assertFails(kiln(*args, "--device"), "--device")

    def test_device_cuda_without_nvml(self):
        missing = self.path("no-such-libnvidia-ml.so.1")
        for cmd, args in self.device_commands().items():
            for value in ["cuda", "cuda:0", "cuda:3"]:
                r = kiln(*args, "--device", value, env=self.nvml_env(missing))
                self.assertFails(r, "kiln %s: --device %s: no such GPU (NVML sees 0 GPUs: NVML: cannot load %s"
                                 % (cmd, value, missing))
        self.assertFalse(os.path.exists(os.path.join(self.path("dev_out"), "y.npy")), "nothing ran on the CPU")

    def test_device_cuda_missing_gpu_with_fake_nvml(self):
        for cmd, args in self.device_commands().items():
            r = kiln(*args, "--device", "cuda:5", env=self.nvml_env(FAKE_NVML))
            self.assertFails(r, "kiln %s: --device cuda:5: no such GPU (NVML sees 2 GPUs: cuda:0 'Fake GPU A', "
                             "cuda:1 'Fake \"B\" \\ 80GB')" % cmd)
        # nvmlInit failing (9: NVML_ERROR_DRIVER_NOT_LOADED, a library without its driver) is told as such
        env = dict(self.nvml_env(FAKE_NVML), FAKE_NVML_INIT_RESULT="9")
        self.assertFails(kiln("run", self.model, "--device", "cuda", env=env), "NVML sees 0 GPUs: NVML: nvmlInit_v2 in")

    def test_device_cuda_present_gpu_has_no_backend(self):
        for cmd, args in self.device_commands().items():
            for value, name in [("cuda", "Fake GPU A"), ("cuda:0", "Fake GPU A"), ("cuda:1", 'Fake "B" \\ 80GB')]:
                r = kiln(*args, "--device=" + value, env=self.nvml_env(FAKE_NVML))
                self.assertFails(r, "kiln %s: --device %s ('%s'): this kiln has no CUDA backend yet; run with --device cpu"
                                 % (cmd, value, name))
                self.assertEqual(r.stdout, "", cmd)
        self.assertFalse(os.path.exists(os.path.join(self.path("dev_out"), "y.npy")), "nothing ran on the CPU")
        # serve's snake_case spelling is the same word; validate's report says why it did not run
        report = self.path("dev_report.json")
        r = kiln("validate", self.path("no_version"), "--device", "cuda:0", "--report", report, env=self.nvml_env(FAKE_NVML))
        self.assertFails(r, "no CUDA backend yet")
        with open(report) as f:
            self.assertIn("no CUDA backend yet", f.read())

    # --- conformance
    def test_conformance_pass_and_fail(self):
        case = os.path.join(DATA, "test_relu")
        r = kiln("conformance", case)
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertEqual(r.stdout.strip().splitlines()[-1], "conformance: 1 passed, 0 failed, 0 skipped")
        broken = self.path("test_relu_broken")
        shutil.copytree(case, broken)
        out = os.path.join(broken, "test_data_set_0", "output_0.pb")
        t = onnx.load_tensor(out)
        arr = numpy_helper.to_array(t).copy()
        arr.flat[0] += 1.0
        onnx.save_tensor(numpy_helper.from_array(arr, t.name), out)
        r = kiln("conformance", broken)
        self.assertEqual(r.returncode, 1)
        self.assertIn("FAIL test_relu_broken: test_data_set_0: output 0 'y': 1 of 60 elements differ", r.stdout)
        self.assertEqual(r.stdout.strip().splitlines()[-1], "conformance: 0 passed, 1 failed, 0 skipped")


if __name__ == "__main__":
    KILN = os.path.abspath(sys.argv.pop(1))
    FAKE_NVML = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
