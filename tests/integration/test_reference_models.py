#!/usr/bin/python3
"""Every reference model of bench/runtime, exported by PyTorch, gives PyTorch's outputs when run
by kiln: max |kiln - torch| / max |torch| <= 1e-4 per output.

    test_reference_models.py KILN WORK_DIR
"""
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench", "runtime"))
import models  # noqa: E402

TOLERANCE = 1e-4


def main():
    kiln, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    failures = 0
    for name in models.MODELS:
        path = models.export(name, work)
        inputs = np.load(os.path.join(work, name + ".inputs.npz"))
        expected = np.load(os.path.join(work, name + ".outputs.npz"))["output"]
        cmd = [kiln, "run", path, "--output", work]
        for key in inputs.files:
            npy = os.path.join(work, "%s.%s.npy" % (name, key))
            np.save(npy, inputs[key])
            cmd += ["--input", "%s=%s" % (key, npy)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print("FAIL %s: kiln run exited %d: %s" % (name, r.returncode, r.stderr.strip()))
            failures += 1
            continue
        got = np.load(os.path.join(work, "output.npy"))
        if got.shape != expected.shape or got.dtype != expected.dtype:
            print("FAIL %s: got %s %s, expected %s %s" % (name, got.dtype, got.shape, expected.dtype, expected.shape))
            failures += 1
            continue
        err = float(np.max(np.abs(got - expected)) / max(np.max(np.abs(expected)), 1e-30))
        ok = err <= TOLERANCE
        failures += not ok
        print("%s %s: relative error %.2e (limit %.0e)" % ("ok  " if ok else "FAIL", name, err, TOLERANCE))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
