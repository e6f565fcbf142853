#!/usr/bin/python3
"""bench/serve: kiln serve against a Node.js + ONNX Runtime server and a Flask + PyTorch server,
all measured in the same run with wrk.

    /usr/bin/python3 bench/serve/run.py --kiln build/kiln [--models mlp,cnn] [--seconds S]
        [--connections 1,8,64] [--servers kiln,kiln-batched,ort,flask] [--json FILE]

For each model (exported by bench/runtime/models.py into bench/.cache/models when missing) every
server in turn serves TF Serving's REST predict API on a free 127.0.0.1 port:
  kiln          kiln serve --model_name=M --model_base_path=REPO/M --rest_api_port=P
                (REPO = bench/.cache/serve/repo, the model as version 1: REPO/M/1/model.onnx)
  kiln-batched  the same plus --enable_batching --batching_parameters_file=FILE
  ort           bench/serve/ort_server.js: node's http module + onnxruntime-node (the peer of
                bench/runtime, installed into bench/.cache/ort when missing)
  flask         bench/serve/flask_server.py: Flask + PyTorch (Debian's python3-flask and
                python3-torch) with the ONNX file's weights
Each server is launched --cold-starts times; cold start is the time from launch to the first
successful predict (polled every half millisecond), the median counts. On the last launch its
predictions for the request body (one instance of fixed random floats, bench/.cache/serve/M.json)
are checked against the first server's (within 1e-4, relative above 1), then wrk runs S seconds at each connection
count. For kiln on the MLP, a last run offers 80 % of its highest measured throughput at the
highest connection count, paced by post_rate.lua (an approximation of open-loop load: Debian's
wrk has no -R), and reports its p99. Servers are stopped with SIGTERM (killed after 10 s).

Prints a table (stdout) of requests/s, p50 and p99 per model, server and connection count with
kiln's ratios to each peer and batched / unbatched, then cold starts and the targets. --json FILE
writes every measurement, one JSON object per line. On a shared machine the absolute numbers are
noise; the ratios measured side by side in one run are the result. Exit status 1 when a server
failed to start, answered differently or had any error under load; missed targets are reported,
not failed.
"""
import argparse
import filecmp
import http.client
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

import numpy as np
import onnx

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CACHE = os.path.join(ROOT, "bench", ".cache", "serve")
SERVERS = ["kiln", "kiln-batched", "ort", "flask"]
LABELS = {"kiln": "kiln", "kiln-batched": "kiln batched", "ort": "node+ORT", "flask": "flask+torch"}
# TF Serving's BatchingParameters text format
BATCHING = "max_batch_size { value: 32 }\nbatch_timeout_micros { value: 500 }\nmax_enqueued_batches { value: 64 }\n"
TOLERANCE = 1e-4
STOP_TIMEOUT_S = 10


def _load_runtime_bench():
    """bench/runtime/run.py, for its model export and ORT peer install (it is also named run.py)."""
    spec = importlib.util.spec_from_file_location("runtime_bench", os.path.join(ROOT, "bench", "runtime", "run.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runtime_bench = _load_runtime_bench()


class ServerError(Exception):
    pass


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def write_body(model, onnx_path):
    """A predict request with one instance of the model's input shape, fixed random floats."""
    graph = onnx.load(onnx_path, load_external_data=False).graph
    inputs = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    if len(inputs) != 1 or inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise SystemExit("bench/serve: %s must have one float input" % model)
    shape = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim[1:]]
    x = np.random.default_rng(0).standard_normal([1] + shape).round(6)
    path = os.path.join(CACHE, model + ".json")
    with open(path, "w") as f:
        json.dump({"instances": x.tolist()}, f)
    return path


def layout_repo(model, onnx_path):
    """REPO/M/1/model.onnx, as kiln serve (and TF Serving) expect a model's base path."""
    base = os.path.join(CACHE, "repo", model)
    dst = os.path.join(base, "1", "model.onnx")
    if not os.path.exists(dst) or not filecmp.cmp(onnx_path, dst, shallow=False):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(onnx_path, dst)
    return base


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(server, model, port, args, onnx_path, node_path):
    """The command line and environment that start one server on port."""
    if server in ("kiln", "kiln-batched"):
        cmd = [args.kiln, "serve", "--model_name=" + model, "--model_base_path=" + layout_repo(model, onnx_path),
               "--rest_api_port=%d" % port, "--port=0"]
        if server == "kiln-batched":
            batching = os.path.join(CACHE, "batching.config")
            with open(batching, "w") as f:
                f.write(BATCHING)
            cmd += ["--enable_batching", "--batching_parameters_file=" + batching]
        return cmd, None
    if server == "ort":
        return (["node", os.path.join(HERE, "ort_server.js"), onnx_path, model, str(port), str(args.peer_threads)],
                dict(os.environ, NODE_PATH=node_path))
    return (["/usr/bin/python3", os.path.join(HERE, "flask_server.py"), onnx_path, model, str(port),
             "--threads", str(args.peer_threads)], None)


def post(port, path, body, timeout=5.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def log_tail(path, lines=15):
    with open(path, "rb") as f:
        return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])


def start(cmd, env, port, path, body, log_path, timeout_s):
    """Launches a server and polls until a predict succeeds: (process, cold start ms, predictions)."""
    logf = open(log_path, "ab")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
    logf.close()
    last = "no answer"
    while True:
        if proc.poll() is not None:
            raise ServerError("exited with status %d before answering a predict (%s):\n%s" % (
                proc.returncode, log_path, log_tail(log_path)))
        try:
            status, data = post(port, path, body)
            if status == 200:
                cold_ms = (time.monotonic() - t0) * 1e3
                return proc, cold_ms, json.loads(data)["predictions"]
            last = "HTTP %d: %s" % (status, data[:200].decode("utf-8", "replace"))
        except (OSError, http.client.HTTPException) as e:
            last = str(e)
        except (ValueError, KeyError) as e:
            stop(proc)
            raise ServerError("answered a predict with no predictions: %s" % e)
        if time.monotonic() - t0 > timeout_s:
            stop(proc)
            raise ServerError("no successful predict within %g s (last: %s; %s)" % (timeout_s, last, log_path))
        time.sleep(0.0005)


def stop(proc):
    """SIGTERM, then SIGKILL after STOP_TIMEOUT_S: (exit status, whether it had to be killed)."""
    killed = False
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            killed = True
    return proc.returncode, killed


_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}


def _ms(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError("unexpected wrk time %r" % text)
    return float(m.group(1)) * _UNIT_MS[m.group(2)]


def parse_wrk(out):
    """Requests/sec, p50 and p99 (ms), completed requests and errors from wrk --latency's output."""
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", out, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    done = re.search(r"^\s+(\d+) requests in", out, re.M)
    if not (rps and p50 and p99 and done):
        raise ValueError("unexpected wrk output:\n" + out)
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0, "non_2xx": 0}
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors.update(zip(["connect", "read", "write", "timeout"], map(int, sock.groups())))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors["non_2xx"] = int(non2xx.group(1))
    return {"requests_per_s": float(rps.group(1)), "p50_ms": _ms(p50.group(1)), "p99_ms": _ms(p99.group(1)),
            "requests": int(done.group(1)), "errors": errors}


def wrk(port, model, body_path, conns, seconds, rate=None):
    """One wrk run: closed loop with post.lua, or paced to about `rate` requests/s with post_rate.lua."""
    threads = min(conns, 2)
    script = ["-s", os.path.join(HERE, "post.lua")] if rate is None else ["-s", os.path.join(HERE, "post_rate.lua")]
    cmd = (["wrk", "-t", str(threads), "-c", str(conns), "-d", "%ds" % seconds, "--timeout", "10s", "--latency"] +
           script + ["http://127.0.0.1:%d/v1/models/%s:predict" % (port, model), "--", body_path])
    if rate is not None:
        cmd += ["%.3f" % rate, str(threads)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if r.returncode != 0:
        raise ServerError("wrk failed (%d): %s" % (r.returncode, (r.stderr or r.stdout).strip()[-500:]))
    return parse_wrk(r.stdout)


def max_diff(a, b):
    """The largest difference between two prediction lists, relative where |b| > 1."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b))))


def n_errors(r):
    return sum(r["errors"].values())


def measure_server(server, model, args, onnx_path, node_path, body_path, reference, records):
    """Cold starts, the prediction check and the wrk runs of one server on one model."""
    with open(body_path, "rb") as f:
        body = f.read()
    path = "/v1/models/%s:predict" % model
    log_path = os.path.join(CACHE, "logs", "%s-%s.log" % (model, server))
    open(log_path, "wb").close()
    cold, ok = [], True
    for i in range(args.cold_starts):
        port = free_port()
        cmd, env = command(server, model, port, args, onnx_path, node_path)
        if i == 0:
            log("%s %s: %s" % (model, LABELS[server], " ".join(cmd)))
        proc, cold_ms, predictions = start(cmd, env, port, path, body, log_path, args.start_timeout)
        try:
            cold.append(cold_ms)
            if i < args.cold_starts - 1:
                continue
            diff = 0.0 if reference[0] is None else max_diff(predictions, reference[1])
            if reference[0] is None:
                reference[:] = [server, predictions]
            agree = diff <= TOLERANCE
            ok &= agree
            if not agree:
                log("%s %s: predictions differ from %s's by %g (tolerance %g)" % (
                    model, LABELS[server], LABELS[reference[0]], diff, TOLERANCE))
            loads = []
            for conns in args.connections:
                r = wrk(port, model, body_path, conns, args.seconds)
                r.update(kind="load", model=model, server=server, connections=conns)
                records.append(r)
                loads.append(r)
                ok &= n_errors(r) == 0
                log("  %3d connections: %10.1f req/s  p50 %.2f ms  p99 %.2f ms  errors %d" % (
                    conns, r["requests_per_s"], r["p50_ms"], r["p99_ms"], n_errors(r)))
            if model in args.rate_models and server in args.rate_servers and loads:
                conns = max(args.connections)
                rate = 0.8 * max(r["requests_per_s"] for r in loads)
                r = wrk(port, model, body_path, conns, args.seconds, rate=rate)
                r.update(kind="fixed_rate", model=model, server=server, connections=conns, offered_per_s=rate)
                records.append(r)
                ok &= n_errors(r) == 0
                log("  fixed rate %.0f/s at %d connections: %.1f req/s  p99 %.2f ms  errors %d" % (
                    rate, conns, r["requests_per_s"], r["p99_ms"], n_errors(r)))
        finally:
            status, killed = stop(proc)
        if killed:
            log("%s %s: did not exit within %d s of SIGTERM; killed" % (model, LABELS[server], STOP_TIMEOUT_S))
    records.append({"kind": "server", "model": model, "server": server, "cold_start_ms": cold,
                    "cold_start_median_ms": statistics.median(cold), "reference": reference[0],
                    "max_diff": diff, "predictions_agree": agree, "exit_status": status,
                    "killed_after_sigterm": killed})
    return ok


def find(records, kind, model, server, conns=None):
    for r in records:
        if r["kind"] == kind and r["model"] == model and r["server"] == server and (
                conns is None or r.get("connections") == conns):
            return r
    return None


def ratio(a, b):
    return a["requests_per_s"] / b["requests_per_s"] if a and b and b["requests_per_s"] > 0 else None


def fmt(x, spec="%.2f"):
    return "-" if x is None else spec % x


def print_table(records, models, servers, connections):
    header = "%-6s %-13s %5s | %10s %8s %8s %6s | %8s %10s %9s" % (
        "model", "server", "conns", "req/s", "p50 ms", "p99 ms", "errors", "kiln/ORT", "kiln/Flask", "batch/unb")
    print(header)
    print("-" * len(header))
    for m in models:
        for s in servers:
            for c in connections:
                r = find(records, "load", m, s, c)
                if r is None:
                    continue
                kiln = s in ("kiln", "kiln-batched")
                print("%-6s %-13s %5d | %10.1f %8.2f %8.2f %6d | %8s %10s %9s" % (
                    m, LABELS[s], c, r["requests_per_s"], r["p50_ms"], r["p99_ms"], n_errors(r),
                    fmt(ratio(r, find(records, "load", m, "ort", c)) if kiln else None),
                    fmt(ratio(r, find(records, "load", m, "flask", c)) if kiln else None),
                    fmt(ratio(r, find(records, "load", m, "kiln", c)) if s == "kiln-batched" else None)))
    print("-" * len(header))
    print("%-6s %-13s | %16s | %s" % ("model", "server", "cold start ms", "predictions vs the first server"))
    for r in records:
        if r["kind"] == "server":
            print("%-6s %-13s | %7.1f (median) | max diff %.2g%s" % (
                r["model"], LABELS[r["server"]], r["cold_start_median_ms"], r["max_diff"],
                "" if r["predictions_agree"] else "  DIFFERENT"))
    for r in records:
        if r["kind"] == "fixed_rate":
            print("%s %s at a fixed offered rate of %.0f/s (80%% of its max), %d connections: %.1f req/s, "
                  "p50 %.2f ms, p99 %.2f ms, errors %d" % (
                      r["model"], LABELS[r["server"]], r["offered_per_s"], r["connections"], r["requests_per_s"],
                      r["p50_ms"], r["p99_ms"], n_errors(r)))


def targets(records, connections):
    """The issue's targets: (name, measured, met or None when not measured)."""
    top = max(connections)
    out = []
    k = find(records, "load", "mlp", "kiln", 64)
    for peer, want in (("ort", 3.0), ("flask", 10.0)):
        x = ratio(k, find(records, "load", "mlp", peer, 64))
        out.append(("mlp, 64 connections: kiln / %s throughput >= %g" % (LABELS[peer], want),
                    fmt(x, "%.2fx"), None if x is None else x >= want))
    f = find(records, "fixed_rate", "mlp", "kiln")
    out.append(("mlp: kiln's p99 at 80%% of its max throughput (%d connections) < 5 ms" % top,
                fmt(f and f["p99_ms"], "%.2f ms") + ("" if f is None else " (achieved %.0f of %.0f req/s)" % (
                    f["requests_per_s"], f["offered_per_s"])), None if f is None else f["p99_ms"] < 5.0))
    gains = {}
    for m in ("cnn", "mlp"):
        b, u = find(records, "load", m, "kiln-batched", 64), find(records, "load", m, "kiln", 64)
        gains[m] = (ratio(b, u), b, u)
    x, b, u = gains["cnn"]
    mlp_gain = gains["mlp"][0]
    out.append(("cnn, 64 connections: kiln batched / unbatched >= 1.5 with p99 no worse",
                "-" if x is None else "%.2fx, p99 %.2f vs %.2f ms (mlp: %s)" % (
                    x, b["p99_ms"], u["p99_ms"], fmt(mlp_gain, "%.2fx")),
                None if x is None else x >= 1.5 and b["p99_ms"] <= u["p99_ms"]))
    kc = [r for r in records if r["kind"] == "server" and r["server"] == "kiln"]
    small = next((r for r in kc if r["model"] == "mlp"), kc[0] if kc else None)
    out.append(("cold start, launch to first predict of a small model: kiln well under 50 ms",
                fmt(small and small["cold_start_median_ms"], "%.1f ms") + ("" if small is None else " (%s)" % small["model"]),
                None if small is None else small["cold_start_median_ms"] < 50.0))
    o = small and find(records, "server", small["model"], "ort")
    x = o["cold_start_median_ms"] / small["cold_start_median_ms"] if o else None
    out.append(("cold start: far below node+ORT's (counted as met at >= 5x)",
                "-" if x is None else "node+ORT %.1f ms = %.1fx kiln's" % (o["cold_start_median_ms"], x),
                None if x is None else x >= 5.0))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln", default=os.path.join(ROOT, "build", "kiln"))
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--servers", default=",".join(SERVERS), help="a subset of " + ",".join(SERVERS))
    ap.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    ap.add_argument("--connections", default="1,8,64")
    ap.add_argument("--cold-starts", type=int, default=3, help="launches per server; the median cold start counts")
    ap.add_argument("--peer-threads", type=int, default=os.cpu_count(),
                    help="intra-op threads of the ORT and PyTorch peers (default: all cores)")
    ap.add_argument("--rate-models", default="mlp", help="models that get the fixed-rate run")
    ap.add_argument("--rate-servers", default="kiln", help="servers that get the fixed-rate run")
    ap.add_argument("--start-timeout", type=float, default=60.0, help="seconds a server may take to answer")
    ap.add_argument("--json", metavar="FILE", help="write every measurement there, one JSON object per line")
    args = ap.parse_args()
    models = args.models.split(",")
    servers = [s for s in SERVERS if s in args.servers.split(",")]
    unknown = set(args.servers.split(",")) - set(SERVERS)
    args.connections = [int(c) for c in args.connections.split(",")]
    args.rate_models, args.rate_servers = args.rate_models.split(","), args.rate_servers.split(",")
    if unknown or not servers or args.seconds < 1 or args.cold_starts < 1 or min(args.connections) < 1:
        ap.error("bad --servers, --seconds, --cold-starts or --connections")
    if any(s.startswith("kiln") for s in servers) and not os.access(args.kiln, os.X_OK):
        ap.error("%s is not an executable (make build; or --servers ort,flask for the peers alone)" % args.kiln)
    for tool in ("wrk", "node"):
        if shutil.which(tool) is None:
            ap.error("%s not found (Debian packages wrk, nodejs)" % tool)

    model_dir = runtime_bench.ensure_models(models)
    node_path = runtime_bench.ensure_ort() if "ort" in servers else None
    os.makedirs(os.path.join(CACHE, "logs"), exist_ok=True)
    records, ok = [], True
    for m in models:
        onnx_path = os.path.join(model_dir, m + ".onnx")
        body_path = write_body(m, onnx_path)
        reference = [None, None]  # the first server's (name, predictions)
        for s in servers:
            try:
                ok &= measure_server(s, m, args, onnx_path, node_path, body_path, reference, records)
            except (ServerError, OSError, subprocess.TimeoutExpired, ValueError) as e:
                log("%s %s: %s" % (m, LABELS[s], e))
                records.append({"kind": "failure", "model": m, "server": s, "error": str(e)})
                ok = False

    print("kiln serve vs node+ORT (onnxruntime-node %s) and flask+torch %s, %d cores, wrk %ds per run; "
          "ratios are of requests/s" % (runtime_bench.ORT_VERSION, importlib.metadata.version("torch"), os.cpu_count(), args.seconds))
    print_table(records, models, servers, args.connections)
    print("targets:")
    for name, value, met in targets(records, args.connections):
        print("  %-80s %-45s %s" % (name, value, {None: "not measured", True: "met", False: "MISSED"}[met]))
        records.append({"kind": "target", "target": name, "value": value, "met": met})
    for r in records:
        if r["kind"] == "failure":
            print("FAILED: %s %s: %s" % (r["model"], LABELS[r["server"]], r["error"].splitlines()[0]))
    if args.json:
        with open(args.json, "w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
