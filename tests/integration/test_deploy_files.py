#!/usr/bin/python3
"""The deployment files in deploy/ are well-formed and agree with the kiln they deploy:

- every YAML file parses (python3-yaml); the Kubernetes objects refer to each other correctly
  (Service and PodDisruptionBudget selectors match the pod labels, the Service's targetPort and the
  probes' and Prometheus' ports are the container port, which is --rest_api_port; the HPA scales
  the Deployment; the kustomization lists every manifest; volumes and ConfigMap keys exist);
- every flag in the Deployment's args and the Dockerfile's CMD is one `kiln serve --help` lists,
  and the Deployment's whole command line starts a server on the ConfigMap's models.config and
  batching.config (rewritten to a temporary repository holding models of the same names): the
  probe and metrics paths answer 200, and the readiness path is the one that turns false while the
  server drains after SIGTERM (liveness stays true), then it exits 0;
- terminationGracePeriodSeconds covers the preStop sleep and --drain_timeout_seconds with a margin;
  the request deadline ends within the drain; thread counts are explicit and fit the CPU limit;
- the Dockerfile: build stage on debian:12 running scripts/deps.sh and `make build`, runtime stage
  on debian:12-slim whose packages hold every shared library `ldd kiln` lists (by `dpkg -S`), a
  non-root USER that is the Deployment's runAsUser; the manifests record `kiln --version`;
- deploy/nginx/kiln.conf accepts the bodies kiln accepts and waits longer than kiln's deadline.

    test_deploy_files.py KILN [unittest flags]
"""
import glob
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import numpy as np
import yaml

sys.dont_write_bytecode = True  # no __pycache__ beside the tests
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nginx_harness import client_max_body_bytes, conf_text  # noqa: E402
from serve_client import Client, Server, linear_model, request, tfs_rows, v2_json, v2_output  # noqa: E402

KILN = None
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(REPO, "deploy")
K8S = os.path.join(DEPLOY, "k8s")
DOCKERFILE = os.path.join(DEPLOY, "docker", "Dockerfile")


# ---------------------------------------------------------------- readers

def k8s_objects():
    """kind -> the one object of that kind in deploy/k8s (kustomization.yaml apart)."""
    objs = {}
    for path in sorted(glob.glob(os.path.join(K8S, "*.yaml"))):
        if os.path.basename(path) == "kustomization.yaml":
            continue
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc is None:
                    continue
                if doc.get("kind") in objs:
                    raise AssertionError("%s: a second %s" % (path, doc["kind"]))
                doc["_file"] = os.path.basename(path)
                objs[doc["kind"]] = doc
    return objs


def flag_args(args, where):
    """{flag: value or None} of `--flag[=value]` arguments; bare words other than the command are
    errors (kiln serve takes no positional arguments)."""
    out = {}
    for a in args:
        m = re.fullmatch(r"--([A-Za-z0-9_-]+)(?:=(.*))?", a)
        if not m:
            raise AssertionError("%s: %r is not a --flag or --flag=value" % (where, a))
        if m.group(1) in out:
            raise AssertionError("%s: --%s given twice" % (where, m.group(1)))
        out[m.group(1)] = m.group(2)
    return out


def dockerfile_stages():
    """The Dockerfile as a list of stages, each {"from": ..., "instructions": [(KEYWORD, text)]},
    with continuation lines joined and comments dropped."""
    with open(DOCKERFILE) as f:
        lines = f.read().splitlines()
    joined, cur = [], ""
    for line in lines:
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if cur and line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        joined.append(cur + line)
        cur = ""
    stages = []
    for ins in joined:
        kw, _, rest = ins.strip().partition(" ")
        kw = kw.upper()
        if kw == "FROM":
            stages.append({"from": rest.strip(), "instructions": []})
        elif not stages:
            raise AssertionError("Dockerfile: %s before the first FROM" % kw)
        else:
            stages[-1]["instructions"].append((kw, rest.strip()))
    return stages


def exec_form(text, what):
    try:
        v = json.loads(text)
    except ValueError:
        raise AssertionError("Dockerfile: %s is not in exec form (a JSON array): %s" % (what, text))
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise AssertionError("Dockerfile: %s is not a JSON array of strings: %s" % (what, text))
    return v


def serve_help_flags():
    r = subprocess.run([KILN, "serve", "--help"], capture_output=True, text=True, timeout=30)
    text = r.stdout + r.stderr
    flags = set(re.findall(r"^\s+--([a-z0-9_]+)", text, re.M))
    if "rest_api_port" not in flags:
        raise AssertionError("kiln serve --help lists no --rest_api_port:\n" + text)
    return flags


def seconds(value, what):
    try:
        return float(value)
    except (TypeError, ValueError):
        raise AssertionError("%s: %r is not a number" % (what, value))


def cpu_cores(q):
    q = str(q)
    return int(q[:-1]) / 1000 if q.endswith("m") else float(q)


class DeployFiles(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.objs = k8s_objects()
        cls.help_flags = serve_help_flags()

    # ------------------------------------------------------------ shortcuts

    def deployment(self):
        self.assertIn("Deployment", self.objs)
        return self.objs["Deployment"]

    def pod(self):
        return self.deployment()["spec"]["template"]

    def container(self):
        cs = self.pod()["spec"]["containers"]
        self.assertEqual(len(cs), 1, "one container in the pod")
        return cs[0]

    def args(self):
        """The Deployment's kiln command: ["serve", flags...] (the image's ENTRYPOINT is kiln)."""
        c = self.container()
        self.assertNotIn("command", c, "the Deployment keeps the image's ENTRYPOINT (kiln) and gives args")
        args = c["args"]
        self.assertEqual(args[0], "serve")
        return args

    def flags(self):
        return flag_args(self.args()[1:], "deployment.yaml args")

    def container_port(self, name="http"):
        ports = [p for p in self.container()["ports"] if p.get("name") == name]
        self.assertEqual(len(ports), 1, self.container()["ports"])
        return ports[0]

    def resolve_port(self, port):
        """A port given by name or number, as the container's port number."""
        p = self.container_port()
        if isinstance(port, str) and not port.isdigit():
            self.assertEqual(port, p.get("name"), "port %r is not the container port's name" % port)
            return p["containerPort"]
        return int(port)

    def prestop_sleep(self):
        cmd = self.container()["lifecycle"]["preStop"]["exec"]["command"]
        words = shlex.split(cmd[-1]) if cmd[:2] in (["sh", "-c"], ["/bin/sh", "-c"]) else cmd
        self.assertEqual(len(words), 2, "preStop is `sleep N`: %r" % cmd)
        self.assertIn(words[0], ("sleep", "/bin/sleep", "/usr/bin/sleep"), cmd)
        return seconds(words[1], "preStop sleep")

    def config_files(self):
        """{path in the container: ConfigMap key} for the files the Deployment reads from the ConfigMap."""
        pod = self.pod()["spec"]
        vols = {v["name"]: v for v in pod["volumes"]}
        out = {}
        for m in self.container()["volumeMounts"]:
            cm = vols[m["name"]].get("configMap")
            if cm:
                self.assertEqual(cm["name"], self.objs["ConfigMap"]["metadata"]["name"])
                for key in self.objs["ConfigMap"]["data"]:
                    out[os.path.join(m["mountPath"], key)] = key
        return out

    # ------------------------------------------------------------ YAML and Kubernetes objects

    def test_every_yaml_file_parses(self):
        paths = sorted(glob.glob(os.path.join(DEPLOY, "**", "*.y*ml"), recursive=True))
        self.assertGreaterEqual(len(paths), 6)
        for path in paths:
            with open(path) as f:
                docs = [d for d in yaml.safe_load_all(f) if d is not None]
            self.assertTrue(docs, path + " holds no document")
            for d in docs:
                self.assertIsInstance(d, dict, path)
        print("%d YAML files parse: %s" % (len(paths), ", ".join(os.path.relpath(p, DEPLOY) for p in paths)))
        for path in sorted(glob.glob(os.path.join(DEPLOY, "**", "*.json"), recursive=True)):
            with open(path) as f:
                self.assertIsInstance(json.load(f), dict, path)
        for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap", "PersistentVolumeClaim"):
            self.assertIn(kind, self.objs, "deploy/k8s has no " + kind)

    def test_kustomization_lists_every_manifest(self):
        with open(os.path.join(K8S, "kustomization.yaml")) as f:
            k = yaml.safe_load(f)
        self.assertEqual(k["kind"], "Kustomization")
        files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(K8S, "*.yaml")))
        files.remove("kustomization.yaml")
        self.assertEqual(sorted(k["resources"]), files)
        image = self.container()["image"].split(":")[0]
        self.assertIn(image, [i["name"] for i in k.get("images", [])], "the kustomization sets the kiln image")

    def test_manifests_record_the_kiln_version(self):
        r = subprocess.run([KILN, "--version"], capture_output=True, text=True, timeout=30)
        m = re.search(r"kiln (\S+)", r.stdout + r.stderr)
        self.assertIsNotNone(m, r.stdout + r.stderr)
        version = m.group(1)
        d = self.deployment()
        self.assertEqual(d["metadata"]["labels"]["app.kubernetes.io/version"], version)
        self.assertEqual(self.pod()["metadata"]["labels"]["app.kubernetes.io/version"], version)
        self.assertEqual(self.container()["image"].rsplit(":", 1)[1], version)
        with open(os.path.join(K8S, "kustomization.yaml")) as f:
            tags = [i.get("newTag") for i in yaml.safe_load(f)["images"]]
        self.assertEqual(tags, [version])
        self.assertNotIn("app.kubernetes.io/version", d["spec"]["selector"]["matchLabels"],
                         "the selector is immutable: a version in it would block upgrades")
        print("manifests record kiln %s (labels, image tag, kustomization)" % version)

    def test_flags_exist_in_kiln_serve_help(self):
        flags = self.flags()
        unknown = sorted(set(flags) - self.help_flags)
        self.assertEqual(unknown, [], "deployment.yaml args that kiln serve --help does not list")
        cmd = [ins for st in dockerfile_stages()[-1:] for kw, ins in st["instructions"] if kw == "CMD"]
        self.assertEqual(len(cmd), 1, "one CMD in the runtime stage")
        cmd = exec_form(cmd[0], "CMD")
        self.assertEqual(cmd[0], "serve")
        unknown = sorted(set(flag_args(cmd[1:], "Dockerfile CMD")) - self.help_flags)
        self.assertEqual(unknown, [], "Dockerfile CMD flags that kiln serve --help does not list")
        for need in ("model_config_file", "rest_api_port", "drain_timeout_seconds", "enable_batching"):
            self.assertIn(need, flags)
        print("%d Deployment flags and %d Dockerfile CMD flags are kiln serve flags"
              % (len(flags), len(cmd) - 1))

    def test_ports_agree(self):
        flags = self.flags()
        port = self.container_port()
        self.assertEqual(port["containerPort"], int(flags["rest_api_port"]), "container port == --rest_api_port")
        c = self.container()
        for probe in ("livenessProbe", "readinessProbe"):
            self.assertEqual(self.resolve_port(c[probe]["httpGet"]["port"]), port["containerPort"], probe)
        ann = self.pod()["metadata"]["annotations"]
        self.assertEqual(ann["prometheus.io/scrape"], "true")
        self.assertEqual(int(ann["prometheus.io/port"]), port["containerPort"])
        svc = {p["name"]: p for p in self.objs["Service"]["spec"]["ports"]}
        self.assertEqual(set(svc), {"http", "grpc"})
        self.assertEqual(self.resolve_port(svc["http"]["targetPort"]), port["containerPort"],
                         "the Service's http targetPort is the container port")
        grpc = self.container_port("grpc")
        self.assertEqual(grpc["containerPort"], int(flags["port"]), "grpc container port == --port")
        self.assertEqual(svc["grpc"]["targetPort"], "grpc")
        print("port %d: --rest_api_port, container, probes, Prometheus annotation, Service targetPort; gRPC %d: --port, "
              "container, Service" % (port["containerPort"], grpc["containerPort"]))

    def test_selectors_match_the_pod(self):
        labels = self.pod()["metadata"]["labels"]
        selectors = {"Deployment": self.deployment()["spec"]["selector"]["matchLabels"],
                     "Service": self.objs["Service"]["spec"]["selector"]}
        if "PodDisruptionBudget" in self.objs:
            selectors["PodDisruptionBudget"] = self.objs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]
        for kind, sel in selectors.items():
            self.assertTrue(sel, kind + " selects nothing")
            for k, v in sel.items():
                self.assertEqual(labels.get(k), v, "%s selector %s=%s does not match the pod labels %s" % (kind, k, v, labels))
        hpa = self.objs["HorizontalPodAutoscaler"]
        self.assertEqual(hpa["apiVersion"], "autoscaling/v2")
        ref = hpa["spec"]["scaleTargetRef"]
        self.assertEqual((ref["apiVersion"], ref["kind"], ref["name"]),
                         ("apps/v1", "Deployment", self.deployment()["metadata"]["name"]))
        self.assertIn("cpu", [m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"])
        self.assertLessEqual(hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"])
        print("selectors match the pod labels %s; the HPA scales Deployment %s" % (labels, ref["name"]))

    def test_termination_grace_covers_prestop_and_drain(self):
        flags = self.flags()
        drain = seconds(flags["drain_timeout_seconds"], "--drain_timeout_seconds")
        sleep = self.prestop_sleep()
        grace = self.pod()["spec"]["terminationGracePeriodSeconds"]
        self.assertGreater(sleep, 0)
        self.assertGreaterEqual(grace, sleep + drain + 5, "terminationGracePeriodSeconds >= preStop + drain + 5 s margin")
        # every request accepted before SIGTERM ends (answered, or 504 at its deadline) within the drain
        deadline = seconds(flags.get("rest_api_timeout_in_ms", 30000), "--rest_api_timeout_in_ms") / 1000
        self.assertLessEqual(deadline, drain, "--rest_api_timeout_in_ms fits in --drain_timeout_seconds")
        print("grace %ss >= preStop %gs + drain %gs + margin; request deadline %gs <= drain" % (grace, sleep, drain, deadline))

    def test_resources_threads_and_security(self):
        c, spec, flags = self.container(), self.pod()["spec"], self.flags()
        for kind in ("requests", "limits"):
            for res in ("cpu", "memory"):
                self.assertIn(res, c["resources"][kind], "resources.%s.%s" % (kind, res))
        cpus = cpu_cores(c["resources"]["limits"]["cpu"])
        # kiln's thread defaults follow the node's CPUs, not the container's limit: they must be given
        for f in ("rest_api_num_threads", "tensorflow_inter_op_parallelism"):
            self.assertIn(f, flags, "--%s is explicit" % f)
        intra = int(flags.get("tensorflow_intra_op_parallelism", 1))
        workers = int(flags["tensorflow_inter_op_parallelism"])
        if "enable_batching" in flags and "batching_parameters_file" in flags:
            text = self.objs["ConfigMap"]["data"][self.config_files()[flags["batching_parameters_file"]]]
            m = re.search(r"num_batch_threads\s*(?:\{\s*value\s*:\s*(\d+)\s*\}|:\s*(\d+))", text)
            if m:
                workers = max(workers, int(m.group(1) or m.group(2)))
        self.assertLessEqual(workers * intra, cpus, "inference threads fit the CPU limit")
        psc, csc = spec["securityContext"], c["securityContext"]
        self.assertIs(psc["runAsNonRoot"], True)
        self.assertNotEqual(psc.get("runAsUser", 0), 0)
        self.assertIs(csc["readOnlyRootFilesystem"], True)
        self.assertIs(csc["allowPrivilegeEscalation"], False)
        self.assertNotEqual(csc.get("privileged"), True)
        print("resources %s; %d inference threads on %g CPUs; non-root, read-only root, no escalation"
              % (c["resources"], workers * intra, cpus))

    def test_volumes(self):
        spec, c, flags = self.pod()["spec"], self.container(), self.flags()
        vols = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        self.assertIn("/models", mounts)
        models = mounts["/models"]
        self.assertFalse(models.get("readOnly", False), "/models is writable (the server records rollbacks in labels.json)")
        claim = vols[models["name"]]["persistentVolumeClaim"]["claimName"]
        self.assertEqual(claim, self.objs["PersistentVolumeClaim"]["metadata"]["name"])
        self.assertIn("ReadWriteMany", self.objs["PersistentVolumeClaim"]["spec"]["accessModes"],
                      "all replicas mount the one repository")
        files = self.config_files()
        for f in ("model_config_file", "batching_parameters_file"):
            if f in flags:
                self.assertIn(flags[f], files, "--%s is a file of the mounted ConfigMap" % f)
        with open(DOCKERFILE) as f:
            self.assertRegex(f.read(), r"(?m)^COPY --from=\S+ \S*build/kiln ")

    # ------------------------------------------------------------ the Deployment's command line, run

    def test_deployment_command_line_serves_the_configmap(self):
        flags, data = self.flags(), self.objs["ConfigMap"]["data"]
        files = self.config_files()
        config = data[files[flags["model_config_file"]]]
        models = re.findall(r'name\s*:\s*"([^"]+)"\s*base_path\s*:\s*"([^"]+)"', config)
        self.assertTrue(models, "models.config names no model")
        tmp = tempfile.mkdtemp(prefix="kiln_deploy_")
        server = None
        try:
            repo = os.path.join(tmp, "models")
            w = np.arange(32, dtype=np.float32).reshape(8, 4) / 10
            for name, base in models:
                self.assertTrue(base.startswith("/models/"), "base_path %s is on the /models volume" % base)
                src = os.path.join(tmp, "src", name + ".onnx")
                linear_model(src, w)
                r = subprocess.run([KILN, "registry", "push", src, "--repo", repo, "--name", os.path.basename(base)],
                                   capture_output=True, text=True, timeout=60)
                self.assertEqual(r.returncode, 0, r.stderr)
            # the container's files, with /models/ pointing at the temporary repository
            local = {}
            for path, key in files.items():
                local[path] = os.path.join(tmp, "etc", key)
                os.makedirs(os.path.dirname(local[path]), exist_ok=True)
                with open(local[path], "w") as f:
                    f.write(data[key].replace('"/models/', '"%s/' % repo))
            args = []
            for a in self.args()[1:]:
                name, eq, value = a[2:].partition("=")
                if name == "rest_api_port":
                    continue  # Server picks a free port on 127.0.0.1
                args.append("--%s=%s" % (name, local.get(value, value)) if eq else a)
            server = Server(KILN, args, tmp, ready_timeout=60)
            print("kiln serve %s: ready" % " ".join(self.args()[1:]))
            c = self.container()
            live, ready = c["livenessProbe"]["httpGet"]["path"], c["readinessProbe"]["httpGet"]["path"]
            metrics_path = self.pod()["metadata"]["annotations"].get("prometheus.io/path", "/metrics")
            for path in (live, ready, metrics_path):
                r = request(server.port, "GET", path)
                self.assertEqual(r.status, 200, "%s: %r" % (path, r))
            self.assertIn(b"# TYPE kiln_", request(server.port, "GET", metrics_path).body)
            x = np.ones((2, 8), np.float32)
            for name, _ in models:
                st = request(server.port, "GET", "/v1/models/" + name).json()
                self.assertEqual([v["state"] for v in st["model_version_status"]], ["AVAILABLE"], st)
                y = np.asarray(request(server.port, "POST", "/v1/models/%s:predict" % name, tfs_rows(x)).json()["predictions"])
                self.assertTrue(np.allclose(y, x @ w, rtol=1e-5), y)
                y2 = v2_output(request(server.port, "POST", "/v2/models/%s/infer" % name, v2_json(x)))[0]
                self.assertTrue(np.allclose(y2, x @ w, rtol=1e-5), y2)
            print("probes %s and %s and %s answer 200; models %s AVAILABLE and predict"
                  % (live, ready, metrics_path, [n for n, _ in models]))

            # SIGTERM: on connections opened before, readiness turns false, liveness stays true
            ready_conn, live_conn = Client(server.port), Client(server.port)
            self.assertEqual(ready_conn.get(ready).status, 200)
            self.assertEqual(live_conn.get(live).status, 200)
            server.proc.send_signal(signal.SIGTERM)
            deadline, r = time.monotonic() + 0.8, None
            while time.monotonic() < deadline:
                r = ready_conn.get(ready)
                if r.status != 200:
                    break
                time.sleep(0.01)
            self.assertEqual(r.status, 503, "%s while draining: %r" % (ready, r))
            r = live_conn.get(live)
            self.assertEqual(r.status, 200, "%s while draining: %r" % (live, r))
            ready_conn.close()
            live_conn.close()
            rc = server.proc.wait(30)
            self.assertEqual(rc, 0, server.log_tail())
            print("while draining: %s 503, %s 200; exit 0" % (ready, live))
        finally:
            if server:
                server.kill()
            shutil.rmtree(tmp, ignore_errors=True)

    def test_models_config_parse_errors_are_caught(self):
        """The check above would notice a broken ConfigMap: kiln refuses a config with a typo."""
        tmp = tempfile.mkdtemp(prefix="kiln_deploy_")
        try:
            flags = self.flags()
            key = self.config_files()[flags["model_config_file"]]
            bad = os.path.join(tmp, "models.config")
            with open(bad, "w") as f:
                f.write(self.objs["ConfigMap"]["data"][key].replace("base_path", "base_pth", 1))
            r = subprocess.run([KILN, "serve", "--model_config_file=" + bad, "--rest_api_port=0", "--port=0", "--host=127.0.0.1"],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn("unknown field 'base_pth'", r.stderr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # ------------------------------------------------------------ the Dockerfile

    def test_dockerfile_stages(self):
        stages = dockerfile_stages()
        self.assertEqual(len(stages), 2, [s["from"] for s in stages])
        build, run = stages
        self.assertRegex(build["from"], r"^debian:12(\s|$)")
        self.assertRegex(build["from"], r"(?i)\sAS\s+build$")
        self.assertEqual(run["from"], "debian:12-slim")
        build_runs = " && ".join(t for kw, t in build["instructions"] if kw == "RUN")
        self.assertIn("scripts/deps.sh", build_runs)
        self.assertIn("make build", build_runs)
        self.assertLess(build_runs.index("scripts/deps.sh"), build_runs.index("make build"))
        ins = dict(run["instructions"])  # last of each keyword
        self.assertEqual(exec_form(ins["ENTRYPOINT"], "ENTRYPOINT"), ["kiln"])
        self.assertIn(str(self.container_port()["containerPort"]), ins["EXPOSE"].split())
        user = ins["USER"].split(":")[0]
        self.assertNotIn(user, ("root", "0"), "the image runs as a non-root user")
        self.assertEqual(user, str(self.pod()["spec"]["securityContext"]["runAsUser"]),
                         "the image's USER is the Deployment's runAsUser")
        with open(os.path.join(REPO, ".dockerignore")) as f:
            ignored = {ln.strip() for ln in f if ln.strip() and not ln.startswith("#")}
        self.assertTrue({".git", "build"} <= ignored, ignored)
        print("Dockerfile: %s (deps.sh, make build) -> %s, USER %s, EXPOSE %s"
              % (build["from"], run["from"], ins["USER"], ins["EXPOSE"]))

    def test_runtime_packages_cover_ldd(self):
        run = dockerfile_stages()[-1]
        installed = set()
        for kw, text in run["instructions"]:
            m = re.search(r"apt-get install ((?:\s*-\S+)*)((?:\s+[a-z0-9][a-z0-9.+-]+)+)", text) if kw == "RUN" else None
            if m:
                installed |= set(m.group(2).split())
        self.assertTrue(installed, "the runtime stage installs no package with apt-get install")
        r = subprocess.run(["ldd", KILN], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        libs = re.findall(r"=>\s+(/\S+)", r.stdout) + re.findall(r"^\s+(/\S+)\s+\(", r.stdout, re.M)
        self.assertGreater(len(libs), 3, r.stdout)
        closure = dependency_closure(installed)  # apt installs what the listed packages depend on
        missing = {}
        for lib in libs:
            pkgs = dpkg_owner(lib)
            self.assertTrue(pkgs, "dpkg -S knows no package holding %s" % lib)
            if not pkgs & closure:
                missing[lib] = sorted(pkgs)
        self.assertEqual(missing, {}, "libraries of kiln that the runtime stage does not install")
        print("the runtime stage's %d packages (%d with their dependencies) hold all %d libraries `ldd kiln` lists" %
              (len(installed), len(closure), len(libs)))


def dependency_closure(packages):
    """The packages and, recursively, every package they depend on (Depends and Pre-Depends, every
    alternative), as dpkg records them on this machine."""
    seen, todo = set(), list(packages)
    while todo:
        pkg = todo.pop()
        if pkg in seen:
            continue
        seen.add(pkg)
        r = subprocess.run(["dpkg-query", "-W", "-f=${Depends}, ${Pre-Depends}", pkg], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            continue
        for alternative in re.split(r"[,|]", r.stdout):
            name = alternative.strip().split(" ")[0].split(":")[0]
            if name:
                todo.append(name)
    return seen


def dpkg_owner(path):
    """The Debian packages holding a shared library, trying the path ldd printed, its target and
    their /usr-merged twins (dpkg records the path the package shipped)."""
    real = os.path.realpath(path)
    candidates = []
    for p in (path, real):
        candidates += [p, "/usr" + p if not p.startswith("/usr/") else p[4:]]
    for p in candidates:
        r = subprocess.run(["dpkg", "-S", p], capture_output=True, text=True, timeout=30)
        if r.returncode == 0:
            pkgs = set()
            for line in r.stdout.splitlines():
                owners = line.rsplit(": ", 1)[0]
                pkgs |= {o.strip().split(":")[0] for o in owners.split(",")}
            return pkgs
    return set()


def github_anchor(heading):
    """The fragment GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


class OperationsDoc(unittest.TestCase):
    ALERTS = ["KilnHighLatencyP99", "KilnHighErrorRatio", "KilnQueueSaturated", "KilnModelLoadFailures",
              "KilnModelUnavailable", "KilnCanaryRolledBack", "KilnGpuSaturated", "KilnTrainingStalled"]

    def anchors(self):
        with open(os.path.join(REPO, "docs", "operations.md")) as f:
            text = re.sub(r"(?ms)^\s*```.*?^\s*```", "", f.read())  # no "headings" inside code blocks
        return {github_anchor(m) for m in re.findall(r"^#{1,6} (.+)$", text, re.M)}

    def test_every_alert_has_a_section(self):
        anchors = self.anchors()
        for alert in self.ALERTS:
            self.assertIn(alert.lower(), anchors, "docs/operations.md has no heading for " + alert)

    def test_runbook_urls_point_at_sections(self):
        rules = os.path.join(DEPLOY, "prometheus", "kiln-rules.yml")
        if not os.path.exists(rules):
            self.skipTest("no deploy/prometheus/kiln-rules.yml")
        with open(rules) as f:
            doc = yaml.safe_load(f)
        anchors, seen = self.anchors(), []
        for group in doc["groups"]:
            for rule in group["rules"]:
                if "alert" not in rule:
                    continue
                url = rule.get("annotations", {}).get("runbook_url", "")
                m = re.search(r"docs/operations\.md#([\w-]+)$", url)
                self.assertIsNotNone(m, "%s: runbook_url %r does not point into docs/operations.md" % (rule["alert"], url))
                self.assertIn(m.group(1), anchors, "%s: no section #%s in docs/operations.md" % (rule["alert"], m.group(1)))
                seen.append(rule["alert"])
        self.assertTrue(set(self.ALERTS) <= set(seen), "alerts without a rule: %s" % (set(self.ALERTS) - set(seen)))
        print("%d alerts' runbook_url anchors are sections of docs/operations.md" % len(seen))


class NginxConf(unittest.TestCase):
    def test_nginx_limits_match_kiln(self):
        flags = flag_args(k8s_objects()["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"][1:], "args")
        text = conf_text()
        self.assertEqual(client_max_body_bytes(text), int(flags.get("max_body_bytes", 64 << 20)),
                         "kiln.conf's client_max_body_size is kiln's --max_body_bytes")
        m = re.search(r"^\s*proxy_read_timeout\s+(\d+)s?\s*;", text, re.M)
        self.assertIsNotNone(m, "kiln.conf sets proxy_read_timeout")
        deadline = int(flags.get("rest_api_timeout_in_ms", 30000)) / 1000
        self.assertGreater(int(m.group(1)), deadline, "nginx waits longer than kiln's request deadline")
        for need in (r"keepalive\s+\d+;", r"proxy_http_version\s+1\.1;", r'proxy_set_header\s+Connection\s+"";',
                     r"proxy_next_upstream\s+[^;]*\bnon_idempotent\b", r"proxy_next_upstream_tries\s+\d+;"):
            self.assertRegex(text, need)
        print("nginx: client_max_body_size %d == --max_body_bytes; proxy_read_timeout %ss > deadline %gs"
              % (client_max_body_bytes(text), m.group(1), deadline))


if __name__ == "__main__":
    KILN = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
