#!/usr/bin/python3
"""bench/serve/grpc: kiln serve's gRPC Predict against its REST predict, same model, same instance,
same load generator (h2load, Debian nghttp2-client), measured side by side in one run.

    /usr/bin/python3 bench/serve/grpc.py --kiln build/kiln [--models mlp,cnn] [--seconds S]
        [--warm-up S] [--concurrency 1,8,64] [--batched] [--rate-clients K] [--json FILE]

For each model (exported by bench/runtime/models.py into bench/.cache/models when missing) one
kiln serve --model_name=M --model_base_path=REPO/M --rest_api_port=P --port=0 --host=127.0.0.1
(REPO = bench/.cache/serve-grpc/repo, the model as version 1; --batched adds a second server with
bench/serve/run.py's batching parameters) serves both APIs; its gRPC port is read from its log line
"gRPC API listening on HOST:PORT". The request is one instance of fixed random floats (run.py's
body): REST POSTs TF Serving's JSON to /v1/models/M:predict; gRPC POSTs over h2c the gRPC frame
(0, 4-byte big-endian length, the packed tensorflow.serving.PredictRequest with the instance as
tensor_content) to /tensorflow.serving.PredictionService/Predict with content-type application/grpc
and te: trailers. Before any load, the REST predictions and the gRPC ones (grpcio's client, stubs
from tests/integration/grpc_stubs.py) must agree within 1e-5 (relative above 1).

At each concurrency N, h2load runs S seconds after a warm-up, closed loop: REST --h1 -c N (N HTTP/1.1
connections, one request at a time each), gRPC -c N -m 1 (N connections) and -c 1 -m N (N streams
multiplexed on one connection; at N = 1 the two are the same run). p50/p99 are nearest-rank over
h2load's --log-file (per-request microseconds; it logs the measured period only). Then the target
runs at the highest concurrency: gRPC offered 80 % of its highest measured throughput (K clients,
each -m N/K and --rps rate/K), REST offered 80 % of its own (N clients, --rps rate/N). h2load's
--rps holds requests back while all streams are busy and times them from when they are sent, so
the p99 is only meaningful where the achieved rate (printed) reaches the offered one.
h2load counts HTTP 200 as success whatever the gRPC status in the trailers says, so after the runs
the server's /metrics must show kiln_requests_total{api="grpc_predict"} with code "200" (at least as
often as h2load counted successes) and no other code but "499" (cancelled), at most once per
stream h2load had open (it resets those still in flight when it stops; kiln counts them cancelled).

Prints a table (stdout) of requests/s, p50 and p99 per model, server and concurrency with the
gRPC/REST throughput ratios, then the targets (gRPC >= REST throughput; p99 < 5 ms at 80 % of max
load). --json FILE writes every measurement, one JSON object per line. Absolute numbers on a
shared machine are noise; the ratios measured side by side are the result. Exit status 1 when a
server failed, the answers differed or any request failed; missed targets are reported, not failed.
"""
import argparse
import importlib.util
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
# This file is named grpc.py: without its folder on the path, `import grpc` finds grpcio, not itself.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import grpc  # noqa: E402
import grpc_stubs  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402


def _load_serve_bench():
    """bench/serve/run.py, for its body, repository layout, server start/stop and comparison helpers."""
    spec = importlib.util.spec_from_file_location("serve_bench", os.path.join(HERE, "run.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


serve_bench = _load_serve_bench()
# run.py's helpers write the body, the repository and the batching file under its CACHE: ours apart
CACHE = serve_bench.CACHE = os.path.join(ROOT, "bench", ".cache", "serve-grpc")
PREDICT = "/tensorflow.serving.PredictionService/Predict"
TOLERANCE = 1e-5
P99_TARGET_MS = 5.0
log = serve_bench.log
ServerError = serve_bench.ServerError


def write_frame(stubs, model, onnx_path, body_path):
    """The gRPC frame of a PredictRequest holding run.py's JSON instance (M.grpc beside M.json):
    (the request, its file, the name of the model's first output)."""
    graph = onnx.load(onnx_path, load_external_data=False).graph
    inputs = [i.name for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    with open(body_path) as f:
        x = np.asarray(json.load(f)["instances"], dtype="<f4")
    req = stubs.predict_pb2.PredictRequest()
    req.model_spec.name = model
    t = req.inputs[inputs[0]]
    t.dtype = stubs.types_pb2.DT_FLOAT
    t.tensor_shape.dim.extend(stubs.tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in x.shape)
    t.tensor_content = x.tobytes()
    packed = req.SerializeToString()
    frame_path = body_path[:-len(".json")] + ".grpc"
    with open(frame_path, "wb") as f:
        f.write(b"\0" + struct.pack(">I", len(packed)) + packed)
    return req, frame_path, graph.output[0].name


def grpc_predictions(stubs, port, req, output_name):
    """The Predict answer through grpcio's own client, as a NumPy array."""
    with grpc.insecure_channel("127.0.0.1:%d" % port) as channel:
        resp = stubs.prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(req, timeout=10)
    if output_name not in resp.outputs:
        raise ServerError("gRPC Predict answered outputs %s, expected %s" % (sorted(resp.outputs), output_name))
    t = resp.outputs[output_name]
    shape = [d.size for d in t.tensor_shape.dim]
    if t.dtype != stubs.types_pb2.DT_FLOAT:
        raise ServerError("gRPC Predict answered dtype %d, expected DT_FLOAT" % t.dtype)
    data = np.frombuffer(t.tensor_content, "<f4") if t.tensor_content else np.array(t.float_val, np.float32)
    return data.reshape(shape)


def grpc_port(log_path, proc, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        with open(log_path, "rb") as f:
            m = re.search(rb"gRPC API listening on \S+:(\d+)", f.read())
        if m:
            return int(m.group(1))
        time.sleep(0.01)
    raise ServerError("logged no 'gRPC API listening on HOST:PORT' (%s):\n%s" % (log_path, serve_bench.log_tail(log_path)))


def h2load(url, body_path, clients, streams, args, tag, rps=None):
    """One h2load run (gRPC over h2c for a .grpc body, else REST over HTTP/1.1): requests/s, p50/p99 (ms)
    from its per-request log, and the failures."""
    log_file = os.path.join(CACHE, "logs", tag + ".tsv")
    if os.path.exists(log_file):
        os.remove(log_file)  # h2load appends to it
    cmd = ["h2load", "-c", str(clients), "-m", str(streams), "-t", str(min(args.h2load_threads, clients)),
           "-D", str(args.seconds), "--warm-up-time", str(args.warm_up), "-d", body_path, "--log-file", log_file]
    if body_path.endswith(".grpc"):
        cmd += ["-H", "content-type: application/grpc", "-H", "te: trailers"]
    else:
        cmd += ["--h1", "-H", "content-type: application/json"]
    cmd += ["--rps", "%.3f" % rps] if rps is not None else []
    r = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=args.seconds + args.warm_up + 60)
    out = r.stdout
    rate = re.search(r"^finished in \S+, ([0-9.]+) req/s", out, re.M)
    reqs = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                     r"(\d+) errored, (\d+) timeout", out, re.M)
    if r.returncode != 0 or not (rate and reqs):
        raise ServerError("h2load failed (%d): %s" % (r.returncode, (r.stderr + out).strip()[-600:]))
    durations, statuses = [], {}
    with open(log_file) as f:
        for line in f:
            cols = line.split("\t")
            statuses[cols[1]] = statuses.get(cols[1], 0) + 1
            durations.append(int(cols[2]) / 1e3)
    durations.sort()
    rank = lambda q: durations[max(0, -(-len(durations) * q // 100) - 1)] if durations else float("nan")  # noqa: E731
    errors = max(int(reqs.group(5)) + int(reqs.group(7)), sum(n for s, n in statuses.items() if s != "200"))
    return {"requests_per_s": float(rate.group(1)), "p50_ms": rank(50), "p99_ms": rank(99),
            "requests": int(reqs.group(4)), "errors": errors, "statuses": statuses, "clients": clients,
            "streams_per_client": streams, "command": " ".join(cmd + [url])}


def grpc_codes(rest_port):
    """kiln_requests_total{api="grpc_predict"} from /metrics, as {code: count}."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % rest_port, timeout=10) as resp:
        text = resp.read().decode()
    codes = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "kiln_requests_total" and s.labels.get("api") == "grpc_predict":
                codes[s.labels.get("code")] = codes.get(s.labels.get("code"), 0) + int(s.value)
    return codes


def measure_server(server, model, args, stubs, onnx_path, body_path, records):
    """One server: the answer check, the closed-loop runs, the target runs and the gRPC status check."""
    with open(body_path, "rb") as f:
        body = f.read()
    req, frame_path, output_name = write_frame(stubs, model, onnx_path, body_path)
    log_path = os.path.join(CACHE, "logs", "%s-%s.log" % (model, server))
    open(log_path, "wb").close()
    port = serve_bench.free_port()
    cmd, env = serve_bench.command(server, model, port, args, onnx_path, None)
    cmd += [] if any(a.startswith("--port") for a in cmd) else ["--port=0"]  # gRPC's default 8500 may be taken
    cmd.append("--host=127.0.0.1")
    log("%s %s: %s" % (model, server, " ".join(cmd)))
    proc, cold_ms, rest = serve_bench.start(cmd, env, port, "/v1/models/%s:predict" % model, body, log_path,
                                            args.start_timeout)
    rec = {"kind": "server", "model": model, "server": server, "cold_start_ms": cold_ms}
    records.append(rec)
    ok = True
    try:
        gport = grpc_port(log_path, proc)
        rec["max_diff"] = serve_bench.max_diff(grpc_predictions(stubs, gport, req, output_name), rest)
        if not rec["max_diff"] <= TOLERANCE:
            raise ServerError("gRPC and REST predictions differ by %g (tolerance %g)" % (rec["max_diff"], TOLERANCE))
        rest_url = "http://127.0.0.1:%d/v1/models/%s:predict" % (port, model)
        grpc_url = "http://127.0.0.1:%d%s" % (gport, PREDICT)
        urls = {"rest": (rest_url, body_path), "grpc": (grpc_url, frame_path)}
        shapes = {"rest": lambda n: (n, 1), "grpc-conns": lambda n: (n, 1), "grpc-streams": lambda n: (1, n)}
        loads = []
        for n in args.concurrency:
            for proto, shape in shapes.items():
                if proto == "grpc-streams" and n == 1:
                    r = dict(loads[-1], same_as="grpc-conns")  # -c 1 -m 1 either way
                else:
                    r = h2load(*urls[proto[:4]], *shape(n), args, "%s-%s-%s-%d" % (model, server, proto, n))
                r.update(kind="load", model=model, server=server, protocol=proto, concurrency=n)
                records.append(r)
                loads.append(r)
                ok &= r["errors"] == 0
                log("  %-12s %3d: %9.1f req/s  p50 %6.2f ms  p99 %6.2f ms  errors %d" % (
                    proto, n, r["requests_per_s"], r["p50_ms"], r["p99_ms"], r["errors"]))
        n = max(args.concurrency)
        for proto in ("grpc", "rest"):
            rate = 0.8 * max(r["requests_per_s"] for r in loads if r["protocol"].startswith(proto))
            # gRPC: K connections of N/K streams; REST: N connections of one request at a time
            k = max(1, min(args.rate_clients, n)) if proto == "grpc" else n
            r = h2load(*urls[proto], k, max(1, n // k), args, "%s-%s-%s-rate" % (model, server, proto), rps=rate / k)
            r.update(kind="fixed_rate", model=model, server=server, protocol=proto, concurrency=n, offered_per_s=rate)
            records.append(r)
            ok &= r["errors"] == 0
            log("  %s at %.0f/s offered (80%% of max), %d in flight at most: %.1f req/s  p99 %.2f ms  errors %d" % (
                proto, rate, n, r["requests_per_s"], r["p99_ms"], r["errors"]))
        rec["grpc_codes"] = codes = grpc_codes(port)
        runs = [r for r in records if r.get("server") == server and r.get("model") == model and
                r.get("protocol", "").startswith("grpc") and "same_as" not in r]
        sent, left = sum(r["requests"] for r in runs), sum(r["clients"] * r["streams_per_client"] for r in runs)
        if set(codes) - {"200", "499"} or codes.get("200", 0) < sent or codes.get("499", 0) > left:
            raise ServerError("kiln_requests_total{api=\"grpc_predict\"} by code: %s (expected \"200\" at least %d "
                              "times, \"499\" at most %d, no other)" % (codes, sent, left))
    finally:
        rec["exit_status"], rec["killed_after_sigterm"] = serve_bench.stop(proc)
    if rec["killed_after_sigterm"]:
        log("%s %s: did not exit within %d s of SIGTERM; killed" % (model, server, serve_bench.STOP_TIMEOUT_S))
    return ok


def find(records, kind, model, server, proto, n=None):
    return next((r for r in records if r["kind"] == kind and r["model"] == model and r["server"] == server and
                 r["protocol"] == proto and (n is None or r["concurrency"] == n)), None)


def report(records, models, servers, concurrency):
    """The table and the targets (stdout); returns the target records."""
    head = "%-5s %-12s %4s | %-26s | %-26s | %-26s | %6s %6s" % (
        "model", "server", "conc", "REST  req/s  p50  p99 ms", "gRPC conns  req/s p50 p99", "gRPC streams req/s p50 p99",
        "conn/R", "strm/R")
    print(head)
    print("-" * len(head))
    cells = lambda r: "-" if r is None else "%9.1f %7.2f %7.2f" % (r["requests_per_s"], r["p50_ms"], r["p99_ms"])  # noqa: E731
    ratios = {"grpc-conns": [], "grpc-streams": []}
    for m in models:
        for s in servers:
            for n in concurrency:
                rest = find(records, "load", m, s, "rest", n)
                row = [find(records, "load", m, s, p, n) for p in ("grpc-conns", "grpc-streams")]
                x = [serve_bench.ratio(g, rest) for g in row]
                for p, v in zip(ratios, x):
                    if v is not None:
                        ratios[p].append((v, m, s, n))
                print("%-5s %-12s %4d | %-26s | %-26s | %-26s | %6s %6s" % (
                    m, s, n, cells(rest), cells(row[0]), cells(row[1]), serve_bench.fmt(x[0]), serve_bench.fmt(x[1])))
    print("-" * len(head))
    out = []
    for p, label in (("grpc-conns", "N connections"), ("grpc-streams", "N streams on one connection")):
        worst = min(ratios[p], default=None)
        out.append(("gRPC (%s) >= REST throughput at every model x concurrency" % label,
                    "-" if worst is None else "lowest %.2fx (%s, %s, %d)" % worst,
                    None if worst is None else worst[0] >= 1.0))
    for r in records:
        if r["kind"] == "fixed_rate":
            line = "%s %s at %.0f/s offered (achieved %.0f), %d in flight: p50 %.2f ms, p99 %.2f ms" % (
                r["model"], r["server"], r["offered_per_s"], r["requests_per_s"], r["concurrency"], r["p50_ms"], r["p99_ms"])
            if r["protocol"] == "rest":
                print("for comparison, REST: " + line)
            else:
                out.append(("%s %s: gRPC p99 < %g ms at 80%% of its max throughput" % (r["model"], r["server"], P99_TARGET_MS),
                            "%.2f ms (achieved %.0f of %.0f/s)" % (r["p99_ms"], r["requests_per_s"], r["offered_per_s"]),
                            r["p99_ms"] < P99_TARGET_MS))
    print("targets:")
    for name, value, met in out:
        print("  %-72s %-40s %s" % (name, value, {None: "not measured", True: "met", False: "MISSED"}[met]))
    return [{"kind": "target", "target": n, "value": v, "met": m} for n, v, m in out]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln", default=os.path.join(ROOT, "build", "kiln"))
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--seconds", type=int, default=3, help="measured length of each h2load run")
    ap.add_argument("--warm-up", type=int, default=1, help="h2load's warm-up before each run, seconds")
    ap.add_argument("--concurrency", default="1,8,64")
    ap.add_argument("--batched", action="store_true", help="also measure a server with --enable_batching")
    ap.add_argument("--rate-clients", type=int, default=8, help="gRPC connections of the target run")
    ap.add_argument("--h2load-threads", type=int, default=1)
    ap.add_argument("--start-timeout", type=float, default=60.0, help="seconds a server may take to answer")
    ap.add_argument("--json", metavar="FILE", help="write every measurement there, one JSON object per line")
    args = ap.parse_args()
    models = args.models.split(",")
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    if args.seconds < 1 or args.warm_up < 0 or min(args.concurrency) < 1 or args.rate_clients < 1:
        ap.error("bad --seconds, --warm-up, --concurrency or --rate-clients")
    if not os.access(args.kiln, os.X_OK):
        ap.error("%s is not an executable (make build)" % args.kiln)
    if shutil.which("h2load") is None:
        ap.error("h2load not found (Debian package nghttp2-client)")
    servers = ["kiln", "kiln-batched"] if args.batched else ["kiln"]

    model_dir = serve_bench.runtime_bench.ensure_models(models)
    stubs = grpc_stubs.load()
    os.makedirs(os.path.join(CACHE, "logs"), exist_ok=True)
    records, ok = [], True
    for m in models:
        onnx_path = os.path.join(model_dir, m + ".onnx")
        body_path = serve_bench.write_body(m, onnx_path)
        for s in servers:
            try:
                ok &= measure_server(s, m, args, stubs, onnx_path, body_path, records)
            except (ServerError, OSError, ValueError, subprocess.TimeoutExpired, grpc.RpcError) as e:
                log("%s %s: %s" % (m, s, e))
                records.append({"kind": "failure", "model": m, "server": s, "error": str(e)})
                ok = False

    print("kiln serve: gRPC Predict vs REST predict, h2load %ds per run (+%ds warm-up), %d cores; "
          "ratios are gRPC/REST requests/s" % (args.seconds, args.warm_up, os.cpu_count()))
    records += report(records, models, servers, args.concurrency)
    for r in records:
        if r["kind"] == "failure":
            print("FAILED: %s %s: %s" % (r["model"], r["server"], r["error"].splitlines()[0]))
    if args.json:
        with open(args.json, "w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
