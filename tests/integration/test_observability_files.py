#!/usr/bin/python3
"""The monitoring files against the metrics kiln really exports: every metric that
deploy/prometheus/kiln-rules.yml and deploy/grafana/kiln.json name is found, with the right type,
in a live scrape — the serving and process ones from `kiln serve` after some requests and a
version that fails to load, the training ones from `kiln train --metrics_port` (the snake_case
spelling of --metrics-port), the GPU ones from both with a fake NVML library — and every label
their selectors and groupings use is one those series carry. Also the files' shape: the fixed
alert names, severities and runbook links; the dashboard's schema, data source variable and rows;
and, with a missing NVML library, no kiln_gpu_ metric and no error.

    test_observability_files.py KILN FAKE_NVML_LIBRARY
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

import numpy as np
import yaml
from prometheus_client.parser import text_string_to_metric_families

sys.dont_write_bytecode = True  # no __pycache__ beside the tests
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_client import Server, add_version, linear_model, metrics, request, tfs_rows, v2_json  # noqa: E402

KILN = None
FAKE_NVML = None
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RULES = os.path.join(ROOT, "deploy", "prometheus", "kiln-rules.yml")
DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "kiln.json")
FMNIST = "/usr/share/datasets/fashion-mnist"

ALERTS = {"KilnHighLatencyP99", "KilnHighErrorRatio", "KilnQueueSaturated", "KilnModelLoadFailures",
          "KilnModelUnavailable", "KilnCanaryRolledBack", "KilnGpuSaturated", "KilnTrainingStalled"}
# Series Prometheus makes itself for every target, and the labels it adds to every series.
PROMETHEUS_SERIES = {"up"}
TARGET_LABELS = {"job", "instance"}
GPU_FAMILIES = {"kiln_gpu_utilization_ratio", "kiln_gpu_memory_used_bytes", "kiln_gpu_memory_total_bytes",
                "kiln_gpu_temperature_celsius", "kiln_gpu_power_watts"}

# ---------------------------------------------------------------- reading PromQL

KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right",
            "inf", "nan"}
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*\"\"")
NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def without_strings(expr):
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def read_promql(expr):
    """(metric names, {metric: label names in its selectors}, grouping labels) of a PromQL
    expression or a Grafana label_values(...) query."""
    expr = without_strings(expr)
    expr = re.sub(r"\$\{?\w+\}?", "", expr)  # Grafana variables ($__rate_interval, ${job})
    selectors = {}
    for name, matchers in SELECTOR.findall(expr):
        selectors.setdefault(name, set()).update(label for label, _ in MATCHER.findall(matchers))
    grouping = set()
    for _, labels in GROUPING.findall(expr):
        grouping.update(label.strip() for label in labels.split(",") if label.strip())
    m = re.match(r"\s*label_values\s*\(\s*(?:([a-zA-Z_:][\w:]*)\s*(?:\{[^}]*\})?\s*,)?\s*(\w+)\s*\)\s*$", expr)
    if m:  # label_values(metric{...}, label): the label is grouped by, so to speak
        return ({m.group(1)} if m.group(1) else set()), selectors, {m.group(2)}
    bare = GROUPING.sub(" ", expr)
    bare = re.sub(r"\{[^}]*\}", " ", bare)
    bare = re.sub(r"\[[^\]]*\]", " ", bare)  # ranges
    bare = re.sub(r"\boffset\s+\w+", " ", bare)
    names = set()
    for m in NAME.finditer(bare):
        word = m.group(0)
        if word.lower() in KEYWORDS or bare[m.end():].lstrip().startswith("("):  # functions, aggregations
            continue
        if m.start() > 0 and (bare[m.start() - 1].isdigit() or bare[m.start() - 1] == "."):
            continue  # an exponent or unit inside a number (1e3)
        names.add(word)
    return names, selectors, grouping


class PromqlReader(unittest.TestCase):
    """The expression reader itself, on expressions whose answers are known."""

    def test_reader(self):
        names, selectors, grouping = read_promql(
            'histogram_quantile(0.99, sum by (job, model, le) (rate(x_bucket{api=~"a|b", code="5.."}[5m]))) > 0.1 '
            'or (y_total > 0 unless y_total offset 15m) and on (job, instance) up == 1')
        self.assertEqual(names, {"x_bucket", "y_total", "up"})
        self.assertEqual(selectors, {"x_bucket": {"api", "code"}})
        self.assertEqual(grouping, {"job", "model", "le", "instance"})
        names, selectors, grouping = read_promql('label_values(kiln_requests_total{job=~"$job"}, model)')
        self.assertEqual((names, selectors, grouping), ({"kiln_requests_total"}, {"kiln_requests_total": {"job"}}, {"model"}))
        self.assertEqual(read_promql('sum(rate(z[$__rate_interval])) / 1e3')[0], {"z"})


# ---------------------------------------------------------------- the files

def rules():
    with open(RULES) as f:
        doc = yaml.safe_load(f)
    return [r for g in doc["groups"] for r in g["rules"]]


def dashboard():
    with open(DASHBOARD) as f:
        return json.load(f)


def dashboard_queries(d):
    """(where, PromQL) of every panel target and query variable."""
    out = []
    for p in d["panels"]:
        for t in p.get("targets", []):
            out.append(("panel '%s'" % p["title"], t["expr"]))
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            out.append(("variable $%s" % v["name"], q))
    return out


def used_metrics():
    """{metric: [where it is used]}, {metric: labels its selectors use}, [(where, grouping labels, metrics)]."""
    used, labels, groupings = {}, {}, []
    queries = [("alert %s" % r["alert"], r["expr"]) for r in rules()] + dashboard_queries(dashboard())
    for where, expr in queries:
        names, selectors, grouping = read_promql(expr)
        for n in names:
            used.setdefault(n, []).append(where)
        for n, ls in selectors.items():
            labels.setdefault(n, set()).update(ls)
        groupings.append((where, grouping, names))
    return used, labels, groupings


class Files(unittest.TestCase):
    def test_rules_shape(self):
        rs = rules()
        self.assertEqual({r["alert"] for r in rs}, ALERTS)
        print("alerts:", ", ".join(sorted(r["alert"] for r in rs)))
        for r in rs:
            self.assertIn(r["labels"]["severity"], {"page", "warning", "ticket"}, r["alert"])
            self.assertEqual(set(r["annotations"]), {"summary", "description", "runbook_url"}, r["alert"])
            self.assertEqual(r["annotations"]["runbook_url"], "docs/operations.md#" + r["alert"].lower(), r["alert"])
        self.assertEqual(next(r for r in rs if r["alert"] == "KilnCanaryRolledBack")["labels"]["severity"], "warning")
        self.assertIn("reason", next(r for r in rs if r["alert"] == "KilnCanaryRolledBack")["annotations"]["summary"])

    def test_dashboard_shape(self):
        d = dashboard()
        self.assertGreaterEqual(d["schemaVersion"], 37)
        variables = {v["name"]: v for v in d["templating"]["list"]}
        self.assertEqual((variables["datasource"]["type"], variables["datasource"]["query"]), ("datasource", "prometheus"))
        rows = [p["title"] for p in d["panels"] if p["type"] == "row"]
        self.assertEqual(rows, ["Serving", "Process", "GPU", "Training"])
        ids = [p["id"] for p in d["panels"]]
        self.assertEqual(len(ids), len(set(ids)), "panel ids are unique")
        for p in d["panels"]:
            if p["type"] == "row":
                continue
            self.assertEqual(p["datasource"], {"type": "prometheus", "uid": "${datasource}"}, p["title"])
            self.assertTrue(p["targets"], p["title"])
            g = p["gridPos"]
            self.assertTrue(0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"])
        titles = " | ".join(p["title"] for p in d["panels"])
        for want in ["Request rate by model and code", "p50 / p99", "Error ratio", "Queue time p99", "Batch size",
                     "In-flight", "Versions available", "load failures", "rollbacks", "promotions", "CPU",
                     "Resident memory", "Threads", "file descriptors", "GPU utilization", "GPU memory", "Loss",
                     "Accuracy", "Samples per second", "Step time p99", "Epoch", "Last step age"]:
            self.assertIn(want.lower(), titles.lower())
        print("dashboard: %d panels in rows %s" % (len(d["panels"]) - len(rows), rows))


# ---------------------------------------------------------------- live scrapes

def families_of(text):
    """{family name as exposed (counters with _total): (type, set of label names, sample count)}."""
    out = {}
    for f in text_string_to_metric_families(text):
        name = f.name + "_total" if f.type == "counter" else f.name
        labels = set()
        for s in f.samples:
            labels.update(k for k in s.labels if k != "le")
        out[name] = (f.type, labels, len(f.samples))
    return out


def family_of(name, families):
    """The family a sample name belongs to, and how: (family, kind) or (None, None)."""
    if name in families:
        return name, families[name][0]
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[: -len(suffix)] if name.endswith(suffix) else None
        if base and base in families and families[base][0] == "histogram":
            return base, "histogram" + suffix
    return None, None


def sources():
    for d, _, files in os.walk(os.path.join(ROOT, "src")):
        for f in sorted(files):
            if f.endswith(".c"):
                with open(os.path.join(d, f), encoding="utf-8") as fh:
                    yield fh.read()


def registered_in_source(name):
    """The label names of the family a kiln_metrics_counter/gauge/histogram call in src/ registers
    as `name` (read from the label array it passes), None when no call does."""
    call = re.compile(r'kiln_metrics_(?:counter|gauge|histogram)\(\s*[^,]*,\s*"%s",\s*"(?:[^"\\]|\\.)*",\s*(\d+),\s*(\w+)'
                      % re.escape(name))
    for text in sources():
        m = call.search(text)
        if not m:
            continue
        if int(m.group(1)) == 0:
            return set()
        array = re.search(r"\b%s\[\d*\]\s*=\s*\{([^}]*)\}" % re.escape(m.group(2)), text)
        assert array, "%s: the label array %s of its registration is not found" % (name, m.group(2))
        return set(re.findall(r'"(\w+)"', array.group(1)))
    return None


def write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)


def small_run():
    """A training run long enough to scrape: 50 epochs of 4096 Fashion-MNIST images (killed early)."""
    scale = {"map": {"transforms": [{"scale": {"feature": "image", "factor": 1 / 255}}]}}
    return {"model": {"layers": ["flatten", {"dense": {"units": 32, "activation": "relu"}}, {"dense": {"units": 10}}]},
            "optimizer": {"adam": {"learning_rate": 0.001}},
            "loss": {"sparse_categorical_crossentropy": {"from_logits": True}},
            "metrics": ["accuracy"], "epochs": 50, "batch_size": 32, "seed": 7,
            "data": {"source": {"format": "idx", "path": FMNIST + "/train-images-idx3-ubyte.gz"},
                     "stages": [{"take": 4096}, scale, {"cache": {}}]},
            "validation_data": {"source": {"format": "idx", "path": FMNIST + "/t10k-images-idx3-ubyte.gz"},
                                "stages": [{"take": 500}, scale]}}


class Live(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="kiln_obsfiles_")
        cls.serving = cls.scrape_server(FAKE_NVML)
        cls.training = cls.scrape_training(FAKE_NVML)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    @classmethod
    def start_server(cls, nvml_library):
        """kiln serve on model lin (y = x . I), with KILN_NVML_LIBRARY set for it."""
        base = os.path.join(cls.dir, "repo-%d" % len(os.listdir(cls.dir)), "lin")
        add_version(base, 1, lambda d: linear_model(os.path.join(d, "model.onnx"), np.eye(4)))
        saved = os.environ.get("KILN_NVML_LIBRARY")
        os.environ["KILN_NVML_LIBRARY"] = nvml_library
        try:
            server = Server(KILN, ["--model_name=lin", "--model_base_path=" + base, "--enable_batching",
                                   "--file_system_poll_wait_seconds=1"], cls.dir)
        finally:
            if saved is None:
                del os.environ["KILN_NVML_LIBRARY"]
            else:
                os.environ["KILN_NVML_LIBRARY"] = saved
        return server, base

    @classmethod
    def scrape_server(cls, nvml_library):
        """The /metrics text after inference requests on both APIs, a 404, and a version 2 that
        fails to load (so that the load failure family has a series)."""
        server, base = cls.start_server(nvml_library)
        try:
            x = np.arange(8, dtype=np.float32).reshape(2, 4)
            for _ in range(5):
                assert request(server.port, "POST", "/v2/models/lin/infer", v2_json(x)).status == 200
                assert request(server.port, "POST", "/v1/models/lin:predict", tfs_rows(x)).status == 200
            assert request(server.port, "POST", "/v2/models/none/infer", v2_json(x)).status == 404
            add_version(base, 2, lambda d: write_bytes(os.path.join(d, "model.onnx"), b"not an ONNX model"))
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                m = metrics(server.port)
                if m.value("kiln_model_load_failures_total", model="lin"):
                    break
                time.sleep(0.1)
            assert m.value("kiln_model_load_failures_total", model="lin") == 1, "version 2's load failure is counted"
            # the broken version never replaced version 1
            assert request(server.port, "POST", "/v2/models/lin/infer", v2_json(x)).status == 200
            return metrics(server.port).text
        finally:
            server.stop_ok()

    @classmethod
    def scrape_training(cls, nvml_library):
        """/metrics of a training run started with --metrics_port (snake_case) once it has stepped."""
        d = tempfile.mkdtemp(dir=cls.dir)
        with open(os.path.join(d, "run.json"), "w") as f:
            json.dump(small_run(), f)
        env = dict(os.environ, KILN_NVML_LIBRARY=nvml_library)
        p = subprocess.Popen([KILN, "train", "--config", "run.json", "--logdir", "", "--metrics_port", "0",
                              "--metrics_host", "127.0.0.1", "--threads", "1"], cwd=d, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            line = p.stderr.readline()
            assert "training metrics on http://127.0.0.1:" in line, "kiln train --metrics_port: %r" % line
            url = line.split()[-1]
            deadline, text = time.monotonic() + 120, ""
            while time.monotonic() < deadline:
                text = urllib.request.urlopen(url, timeout=5).read().decode()
                steps = [s.value for f in text_string_to_metric_families(text) if f.name == "kiln_train_steps"
                         for s in f.samples]
                if steps and steps[0] > 0:
                    break
                time.sleep(0.1)
            assert steps and steps[0] > 0, "the training run took no step within 120 s"
            return text
        finally:
            p.kill()
            p.communicate()

    def test_every_metric_exists(self):
        serving, training = families_of(self.serving), families_of(self.training)
        used, _, _ = used_metrics()
        self.assertGreater(len(used), 25)
        from_source = []
        for name in sorted(used):
            if name in PROMETHEUS_SERIES:
                continue
            where = "training" if name.startswith("kiln_train_") else "serving"
            family, kind = family_of(name, training if where == "training" else serving)
            if family is None and registered_in_source(name) is not None:
                from_source.append(name)
                continue
            self.assertIsNotNone(family, "%s (used by %s) is in no %s scrape" % (name, ", ".join(used[name]), where))
            print("  %-45s %-18s %s scrape" % (name, kind, where))
        print("accepted from the source alone (no series yet): %s" % (from_source or "none"))

    def test_selector_and_grouping_labels(self):
        families = families_of(self.serving)
        families.update(families_of(self.training))
        from_source = []
        for name, (kind, _, count) in list(families.items()):
            if count == 0:  # no series yet (no rollback happened): the labels its registration names
                registered = registered_in_source(name)
                self.assertIsNotNone(registered, "%s has no series and no registration in src/" % name)
                families[name] = (kind, registered, count)
                from_source.append(name)
        _, labels, groupings = used_metrics()
        for name, ls in sorted(labels.items()):
            family, _ = family_of(name, families)
            self.assertIsNotNone(family, name)
            have = families[family][1] | TARGET_LABELS | ({"le"} if name.endswith("_bucket") else set())
            self.assertLessEqual(ls, have, "%s{%s}: labels %s are not on its series" % (name, ",".join(ls), ls - have))
        for where, grouping, names in groupings:
            have = set(TARGET_LABELS)
            for n in names:
                family, _ = family_of(n, families)
                if family:
                    have |= families[family][1] | ({"le"} if n.endswith("_bucket") else set())
            self.assertLessEqual(grouping, have, "%s groups by %s, which none of %s carries" % (where, grouping - have, names))
        print("selector and grouping labels checked against the live series; labels read from the source for %s"
              % (from_source or "none"))

    def test_gpu_metrics_with_fake_nvml(self):
        for what, text in (("kiln serve", self.serving), ("kiln train", self.training)):
            gpus = {}
            for f in text_string_to_metric_families(text):
                if f.name in GPU_FAMILIES:
                    self.assertEqual(f.type, "gauge")
                    gpus[f.name] = {(s.labels["gpu"], s.labels["name"]): s.value for s in f.samples}
            # fake_nvml.c's two devices, read back by prometheus_client (which undoes the escaping)
            a, b = ("0", "Fake GPU A"), ("1", 'Fake "B" \\ 80GB')
            self.assertEqual(gpus, {"kiln_gpu_utilization_ratio": {a: 0.37, b: 1.0},
                                    "kiln_gpu_memory_used_bytes": {a: 1073741824, b: 42949672960},
                                    "kiln_gpu_memory_total_bytes": {a: 17179869184, b: 85899345920},
                                    "kiln_gpu_temperature_celsius": {a: 41, b: 83},
                                    "kiln_gpu_power_watts": {a: 71.5, b: 349.999}}, what)
            self.assertIn("process_threads", families_of(text), what)
            print("%s: GPU metrics of the fake NVML's 2 devices, process_threads present" % what)

    def test_no_gpu_without_nvml(self):
        server, _ = self.start_server(os.path.join(self.dir, "no-such-libnvidia-ml.so.1"))
        try:
            r = request(server.port, "GET", "/metrics")
            self.assertEqual(r.status, 200)
            text = r.body.decode()
            self.assertNotIn("kiln_gpu_", text)
            self.assertIn("process_threads", families_of(text))
        finally:
            server.stop_ok()
        log = server.log_text()
        self.assertNotIn("nvml", log.lower(), "a missing NVML is not worth an info line")
        self.assertNotIn('"level":"error"', log)
        print("missing NVML library: no kiln_gpu_ metric, /metrics 200, nothing logged at info level")

    def test_promtool_lints_the_scrapes(self):
        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool, "promtool not found: install Debian prometheus (scripts/deps.sh)")
        for what, text in (("kiln serve", self.serving), ("kiln train", self.training)):
            r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, "%s: promtool check metrics:\n%s%s" % (what, r.stdout, r.stderr))
        print("promtool check metrics: both scrapes clean")


if __name__ == "__main__":
    KILN = os.path.abspath(sys.argv.pop(1))
    FAKE_NVML = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
