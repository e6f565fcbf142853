#!/usr/bin/python3
"""bench/runtime: kiln against ONNX Runtime on the reference models, in one run.

    /usr/bin/python3 bench/runtime/run.py [--kiln build/kiln] [--models mlp,cnn,...] [--seconds S]

Exports the reference models with PyTorch (models.py) into bench/.cache/models, installs the
ONNX Runtime peer (npm onnxruntime-node, CLARIFICATIONS.md) into bench/.cache/ort, then measures
each model at batch 1 and 64, on 1 thread and on all cores, kiln and ORT alternately (--repeat
times each; the median counts), each in its own process. Prints a table of throughput ratios (kiln / ORT), latency, load time and peak RSS,
then the geometric mean of the ratios. Absolute times on shared machines are noise; the ratios
measured side by side are the result.
"""
import argparse
import json
import math
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CACHE = os.path.join(ROOT, "bench", ".cache")
ORT_VERSION = "1.30.0"
ALL_MODELS = ["mlp", "cnn", "resnet18", "mobilenetv2", "transformer", "lstm", "gru"]


def ensure_models(names):
    out = os.path.join(CACHE, "models")
    missing = [n for n in names if not os.path.exists(os.path.join(out, n + ".onnx"))]
    if missing:
        subprocess.run(["/usr/bin/python3", os.path.join(HERE, "models.py"), out] + missing, check=True,
                       stderr=subprocess.DEVNULL)
    return out


def ensure_ort():
    prefix = os.path.join(CACHE, "ort")
    pkg = os.path.join(prefix, "node_modules", "onnxruntime-node", "package.json")
    if not os.path.exists(pkg) or json.load(open(pkg))["version"] != ORT_VERSION:
        os.makedirs(prefix, exist_ok=True)
        # --ignore-scripts: the package's install script downloads CUDA files and fails offline
        subprocess.run(["npm", "install", "--prefix", prefix, "--ignore-scripts", "--no-audit", "--no-fund",
                        "onnxruntime-node@" + ORT_VERSION], check=True, stdout=subprocess.DEVNULL)
    return os.path.join(prefix, "node_modules")


def measure(cmd, env=None):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if r.returncode != 0:
        raise RuntimeError("%s failed: %s" % (" ".join(cmd), r.stderr.strip()[-500:]))
    return json.loads(r.stdout.strip().splitlines()[-1])


def median(results):
    """The measurement with the median throughput."""
    return sorted(results, key=lambda r: r["throughput_per_s"])[len(results) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln", default=os.path.join(ROOT, "build", "kiln"))
    ap.add_argument("--models", default=",".join(ALL_MODELS))
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--seconds", type=float, default=2.0, help="time budget per measurement")
    ap.add_argument("--repeat", type=int, default=3,
                    help="measurements per runtime and configuration, alternating; the median counts")
    args = ap.parse_args()
    names = args.models.split(",")
    models = ensure_models(names)
    node_path = ensure_ort()
    cores = os.cpu_count()
    env = dict(os.environ, NODE_PATH=node_path)
    print("kiln vs ONNX Runtime %s (onnxruntime-node), %d cores; ratio = kiln throughput / ORT throughput" % (ORT_VERSION, cores))
    header = "%-12s %5s %3s | %10s %10s %6s | %9s %9s | %8s %8s | %9s %9s %9s" % (
        "model", "batch", "thr", "kiln/s", "ort/s", "ratio", "kiln p99", "ort p99", "kiln ld", "ort ld",
        "kiln RSS", "ort RSS", "ort base")
    print(header)
    print("-" * len(header))
    ratios, worst, rows = [], None, []
    for name in names:
        path = os.path.join(models, name + ".onnx")
        for batch in [int(b) for b in args.batches.split(",")]:
            for threads in sorted({1, cores}):
                ks, os_ = [], []
                for _ in range(args.repeat):  # alternate, so drifting load hits both sides alike
                    ks.append(measure([args.kiln, "bench", path, "--batch", str(batch), "--threads", str(threads),
                                       "--iters", "100000", "--max-seconds", str(args.seconds), "--json"]))
                    os_.append(measure(["node", os.path.join(HERE, "ort_bench.js"), path, str(batch), str(threads),
                                        "100000", str(args.seconds)], env=env))
                k, o = median(ks), median(os_)
                ratio = k["throughput_per_s"] / o["throughput_per_s"]
                ratios.append(ratio)
                if worst is None or ratio < worst[0]:
                    worst = (ratio, name, batch, threads)
                rows.append((name, batch, threads, k, o, ratio))
                print("%-12s %5d %3d | %10.1f %10.1f %6.2f | %7.0fus %7.0fus | %6.1fms %6.1fms | %7.1fMB %7.1fMB %7.1fMB" % (
                    name, batch, threads, k["throughput_per_s"], o["throughput_per_s"], ratio, k["p99_us"], o["p99_us"],
                    k["load_ms"], o["load_ms"], k["peak_rss_kb"] / 1024, o["peak_rss_kb"] / 1024, o["base_rss_kb"] / 1024),
                    flush=True)
    geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    print("-" * len(header))
    print("geometric mean of throughput ratios: %.2f (target >= 1.0)" % geo)
    print("lowest ratio: %.2f (%s, batch %d, %d threads; target >= 0.7)" % worst)
    mlp1 = [r for (n, b, t, k, o, r) in rows if n == "mlp" and b == 1]
    if mlp1:
        print("MLP at batch 1: %s (target >= 3.0)" % ", ".join("%.2f" % r for r in mlp1))
    rss = [k["peak_rss_kb"] / o["peak_rss_kb"] for (n, b, t, k, o, r) in rows]
    print("peak RSS kiln/ORT: max %.2f (target <= 1.3; ORT's figure includes Node.js's own ~%.0f MB)" % (
        max(rss), min(o["base_rss_kb"] for (n, b, t, k, o, r) in rows) / 1024))
    load = [k["load_ms"] / o["load_ms"] for (n, b, t, k, o, r) in rows]
    print("load time kiln/ORT: max %.2f (target <= 1.0)" % max(load))
    return 0


if __name__ == "__main__":
    sys.exit(main())
