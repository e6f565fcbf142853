#!/usr/bin/python3
"""kiln train's gpu_utilization against a fake NVML library (tests/unit/fake_nvml.c, two devices):
the TensorBoard scalar (read by the independent tfevents.py) and the JSON progress lines carry the
mean utilization of the GPUs, which this test reads from the fake library itself through ctypes;
a device that does not report utilization is left out of the mean; without NVML neither carries
anything and nothing is logged above debug level.

    test_train_gpu.py KILN FAKE_NVML_LIBRARY
"""
import ctypes
import glob
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tfevents  # noqa: E402
from test_train import small_run  # noqa: E402

KILN = None
FAKE_NVML = None
RECORDS, BATCH, LOG_EVERY = 256, 32, 2  # 8 steps: scalars at steps 2, 4, 6, 8 and the epoch's end


class Utilization(ctypes.Structure):  # nvmlUtilization_t
    _fields_ = [("gpu", ctypes.c_uint), ("memory", ctypes.c_uint)]


def fake_utilizations(env):
    """Each device's utilization (0..1) as the fake NVML answers under `env`'s knobs, None where it refuses."""
    saved = {k: os.environ.get(k) for k in ("FAKE_NVML_NO_UTILIZATION",)}
    os.environ.update({k: v for k, v in env.items() if k in saved})
    try:
        lib = ctypes.CDLL(FAKE_NVML)
        assert lib.nvmlInit_v2() == 0
        count = ctypes.c_uint()
        assert lib.nvmlDeviceGetCount_v2(ctypes.byref(count)) == 0
        out = []
        for i in range(count.value):
            handle = ctypes.c_void_p()
            assert lib.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(handle)) == 0
            u = Utilization()
            out.append(u.gpu / 100 if lib.nvmlDeviceGetUtilizationRates(handle, ctypes.byref(u)) == 0 else None)
        lib.nvmlShutdown()
        return out
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


class TrainGpu(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="kiln_train_gpu_")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def train(self, name, nvml_library, extra_env=None):
        """One short epoch in its own directory; returns (TensorBoard events, JSON log lines, stderr)."""
        d = os.path.join(self.dir, name)
        os.makedirs(d)
        with open(os.path.join(d, "run.json"), "w") as f:
            json.dump(small_run(records=RECORDS, epochs=1, batch_size=BATCH), f)
        env = dict(os.environ, KILN_NVML_LIBRARY=nvml_library, **(extra_env or {}))
        r = subprocess.run([KILN, "train", "--config", "run.json", "--threads", "1", "--log-every", str(LOG_EVERY)],
                           cwd=d, env=env, capture_output=True, text=True, timeout=600)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        files = glob.glob(os.path.join(d, "runs", "events.out.tfevents.*"))
        self.assertEqual(len(files), 1)
        logs = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
        return tfevents.read_events(files[0]), logs, r.stderr

    def check_logged(self, events, logs, want):
        # kiln writes one event per scalar: the GPU's come at the steps the loss does
        losses = [step for step, _, v in events if "loss" in v]
        self.assertEqual(losses, [2, 4, 6, 8, 8], "every log_every steps and at the epoch's end")
        gpu = [(step, v["gpu_utilization"]) for step, _, v in events if "gpu_utilization" in v]
        self.assertEqual(gpu, [(step, f32(want)) for step in losses])
        lines = [l for l in logs if l["msg"] in ("train step", "epoch end")]
        self.assertEqual(len(lines), 5)
        for l in lines:
            self.assertAlmostEqual(float(l["gpu_utilization"]), want, places=6, msg=l)

    def test_mean_utilization_of_the_fake_gpus(self):
        each = fake_utilizations({})
        self.assertEqual(len(each), 2)
        self.assertNotEqual(each[0], each[1], "the fake's devices must differ for the mean to mean anything")
        want = sum(each) / len(each)
        events, logs, _ = self.train("fake", FAKE_NVML)
        self.check_logged(events, logs, want)
        print("gpu_utilization %.4f (mean of the fake's %s) in TensorBoard and the JSON lines" % (want, each))

    def test_device_without_utilization_is_left_out(self):
        each = fake_utilizations({"FAKE_NVML_NO_UTILIZATION": "1"})
        self.assertIsNone(each[1])
        want = each[0]
        events, logs, _ = self.train("fake_one", FAKE_NVML, {"FAKE_NVML_NO_UTILIZATION": "1"})
        self.check_logged(events, logs, want)
        print("one device without utilization: gpu_utilization %.4f, the other device's" % want)

    def test_nothing_without_nvml(self):
        events, logs, stderr = self.train("none", os.path.join(self.dir, "no-such-libnvidia-ml.so.1"))
        self.assertEqual(len([v for _, _, v in events if "loss" in v]), 5)
        self.assertEqual([v for _, _, v in events if "gpu_utilization" in v], [])
        for l in logs:
            self.assertNotIn("gpu_utilization", l)
            self.assertNotIn(l["level"], ("warn", "error"), l)
        self.assertNotIn("nvml", stderr.lower(), "a missing NVML is not worth an info line")
        print("no NVML: no gpu_utilization anywhere, no warning")


if __name__ == "__main__":
    KILN = os.path.abspath(sys.argv.pop(1))
    FAKE_NVML = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
