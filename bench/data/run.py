#!/usr/bin/python3
"""bench/data: kiln's data pipeline against its peers, side by side in one run.

    /usr/bin/python3 bench/data/run.py [--kiln build/kiln] [--repeat 3] [--csv-rows 1000000]

1. Fashion-MNIST (Debian dataset-fashion-mnist) decode -> normalize -> shuffle -> batch 32:
   kiln's pipeline against the same steps in NumPy (gzip + frombuffer + vectorised normalize +
   permutation + batch gather). Records per second, and the ratio.
2. A CSV of --csv-rows rows (6 numeric columns and one text column, written by pandas) read into
   typed columns: `kiln data bench` with a batch stage (columnar output, like a DataFrame) against
   pandas.read_csv. Target: kiln >= 5x pandas.
3. TFRecord read throughput against the raw read speed of the same file (page cache warm): files
   of large records (64 KiB, like encoded images) and of small ones (Fashion-MNIST, 784 bytes).
   Target: >= 50 % of the raw speed.
4. Prefetch: the Fashion-MNIST pipeline consumed by a simulated training step (--step-us per batch,
   about what kiln trains a batch of 32 in): the fraction of time the consumer waits for data at
   steady state, with and without a prefetch stage. Target: ~0 with prefetch.

Each measurement runs --repeat times, alternating kiln and the peer; the median counts. Absolute
times on shared machines are noise; the ratios measured side by side are the result. Data files
are generated into bench/.cache/data (kept between runs).
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CACHE = os.path.join(ROOT, "bench", ".cache", "data")
FMNIST = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 72.94, 90.02  # Fashion-MNIST's pixel mean and std on the 0-255 scale


def kiln_bench(kiln, pipeline, extra=()):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(pipeline, f)
    try:
        r = subprocess.run([kiln, "data", "bench", "--pipeline", f.name, "--json", *extra], capture_output=True,
                           text=True, timeout=900)
    finally:
        os.unlink(f.name)
    if r.returncode != 0:
        raise RuntimeError("kiln data bench failed: " + r.stderr.strip()[-800:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def median(xs):
    return sorted(xs)[len(xs) // 2]


def fmnist_pipeline(prefetch):
    stages = [
        {"map": {"transforms": [{"normalize": {"feature": "image", "mean": MEAN, "std": STD}}]}},
        {"shuffle": {"buffer_size": 60000, "seed": 1}},
        {"batch": {"batch_size": 32}},
    ]
    if prefetch:
        stages.append({"prefetch": {"buffer_size": "autotune"}})
    return {"source": {"format": "idx", "path": FMNIST + "/train-images-idx3-ubyte.gz",
                       "labels": FMNIST + "/train-labels-idx1-ubyte.gz"},
            "stages": stages}


def numpy_fmnist():
    t0 = time.perf_counter()
    with gzip.open(FMNIST + "/train-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FMNIST + "/train-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    x = (x.astype(np.float32) - np.float32(MEAN)) / np.float32(STD)
    perm = np.random.default_rng(1).permutation(len(x))
    n = 0
    for i in range(0, len(x), 32):
        idx = perm[i:i + 32]
        bx, by = x[idx], y[idx]
        n += len(bx) + 0 * len(by)
    return n / (time.perf_counter() - t0)


def make_csv(rows):
    path = os.path.join(CACHE, "table_%d.csv" % rows)
    if not os.path.exists(path):
        import pandas as pd
        rng = np.random.default_rng(0)
        df = pd.DataFrame({
            "id": np.arange(rows),
            "a": rng.normal(size=rows).round(6),
            "b": rng.uniform(0, 1000, size=rows).round(3),
            "c": rng.integers(-1000, 1000, size=rows),
            "d": rng.normal(50, 10, size=rows).round(4),
            "e": rng.exponential(size=rows).round(5),
            "city": rng.choice(["Paris", "Berlin", "New York", "Tokyo", "Lagos"], size=rows),
        })
        df.to_csv(path + ".tmp", index=False)
        os.rename(path + ".tmp", path)
    return path


def pandas_csv(path):
    import pandas as pd
    t0 = time.perf_counter()
    df = pd.read_csv(path)
    return len(df) / (time.perf_counter() - t0)


def make_tfrecords(kiln):
    """Two TFRecord files written by kiln convert (its TFRecord writer is checked against an
    independent one in the tests): large records and Fashion-MNIST."""
    large = os.path.join(CACHE, "large.tfrecord")
    if not os.path.exists(large):
        npz = os.path.join(CACHE, "large.npz")
        rng = np.random.default_rng(0)
        np.savez(npz, blob=rng.integers(0, 256, size=(4000, 65536), dtype=np.uint8),
                 label=rng.integers(0, 10, size=4000))
        subprocess.run([kiln, "data", "convert", npz, large], check=True, stderr=subprocess.DEVNULL)
        os.unlink(npz)
    small = os.path.join(CACHE, "fmnist.tfrecord")
    if not os.path.exists(small):
        subprocess.run([kiln, "data", "convert", FMNIST + "/train-images-idx3-ubyte.gz", small], check=True,
                       stderr=subprocess.DEVNULL)
    return [("64 KiB records", large), ("784 B records (Fashion-MNIST)", small)]


def raw_read(path):
    buf = bytearray(1 << 20)
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass
    return os.path.getsize(path) / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln", default=os.path.join(ROOT, "build", "kiln"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--csv-rows", type=int, default=1000000)
    ap.add_argument("--step-us", type=int, default=2000)
    args = ap.parse_args()
    os.makedirs(CACHE, exist_ok=True)
    rows = []

    kiln_rps, np_rps = [], []
    for _ in range(args.repeat):
        kiln_rps.append(kiln_bench(args.kiln, fmnist_pipeline(False))["records_per_s"])
        np_rps.append(numpy_fmnist())
    k, p = median(kiln_rps), median(np_rps)
    rows.append(("Fashion-MNIST decode/normalize/shuffle/batch", "records/s", k, "NumPy", p, k / p, None))

    csv = make_csv(args.csv_rows)
    kiln_rps, pd_rps = [], []
    for _ in range(args.repeat):
        kiln_rps.append(kiln_bench(args.kiln, {"source": csv, "stages": [{"batch": 1024}]})["records_per_s"])
        pd_rps.append(pandas_csv(csv))
    k, p = median(kiln_rps), median(pd_rps)
    rows.append(("CSV %d rows into typed columns" % args.csv_rows, "rows/s", k, "pandas.read_csv", p, k / p, 5.0))

    for name, path in make_tfrecords(args.kiln):
        size = os.path.getsize(path)
        kiln_bps, raw_bps = [], []
        for _ in range(args.repeat):
            raw_bps.append(raw_read(path))
            r = kiln_bench(args.kiln, {"source": path})
            kiln_bps.append(size / r["seconds"])
        k, p = median(kiln_bps), median(raw_bps)
        rows.append(("TFRecord read, " + name, "MB/s", k / 1e6, "raw read", p / 1e6, k / p, 0.5))

    waits = {}
    for prefetch in (False, True):
        waits[prefetch] = median([kiln_bench(args.kiln, fmnist_pipeline(prefetch), ["--step-us", str(args.step_us)])
                                  ["wait_fraction"] for _ in range(args.repeat)])

    print("%-52s %-9s %12s %-16s %12s %8s %s" % ("benchmark", "unit", "kiln", "peer", "peer", "ratio", "target"))
    for name, unit, k, peer, p, ratio, target in rows:
        verdict = "" if target is None else ("%.1fx %s" % (target, "met" if ratio >= target else "MISSED"))
        print("%-52s %-9s %12.0f %-16s %12.0f %7.2fx %s" % (name, unit, k, peer, p, ratio, verdict))
    print("consumer waiting on data with a %d us step per batch of 32: %.1f %% without prefetch, %.1f %% with"
          % (args.step_us, 100 * waits[False], 100 * waits[True]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
