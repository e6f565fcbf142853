#!/usr/bin/python3
"""kiln registry end to end: push (a file and a folder) with manifests whose sizes and SHA-256 are
checked against Python's hashlib, list, show, verify (tampered and truncated files exit 1 naming
the file), label / rollback / gc, the $KILN_REPO and ./models defaults, usage errors (exit 2), and
`kiln train --export` pushing a version whose lineage names the run file's and schema's digests.

    test_registry.py KILN
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import onnx
from onnx import TensorProto, helper

KILN = None


def kiln(*args, cwd=None, env=None, timeout=300):
    r = subprocess.run([KILN] + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)
    print("kiln %s -> %d" % (" ".join(str(a) for a in args), r.returncode))
    return r


def sha256(path):
    return hashlib.sha256(read_bytes(path)).hexdigest()


def write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def load_json(path):
    with open(path) as f:
        return json.load(f)


def tiny_model(path, width=4):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


class Registry(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="kiln_registry_")
        cls.repo = os.path.join(cls.dir, "repo")
        cls.model = os.path.join(cls.dir, "relu.onnx")
        tiny_model(cls.model)
        # a version folder's worth of files: the model, a schema, warm-up inputs in a sub-folder
        cls.folder = os.path.join(cls.dir, "export")
        os.makedirs(os.path.join(cls.folder, "warmup"))
        tiny_model(os.path.join(cls.folder, "model.onnx"), width=8)
        with open(os.path.join(cls.folder, "schema.json"), "w") as f:
            json.dump({"features": [{"name": "x", "dtype": "float", "shape": [8]}]}, f)
        np.save(os.path.join(cls.folder, "warmup", "x.npy"), np.arange(8, dtype=np.float32).reshape(1, 8))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def push(self, source, name, *extra, repo=None):
        r = kiln("registry", "push", source, "--name", name, "--repo", repo or self.repo, *extra)
        self.assertEqual(r.returncode, 0, r.stderr)
        return int(r.stdout.strip()), r

    def manifest(self, name, version, repo=None):
        with open(os.path.join(repo or self.repo, name, str(version), "manifest.json")) as f:
            return json.load(f)

    def check_manifest_against_files(self, name, version, repo=None):
        vdir = os.path.join(repo or self.repo, name, str(version))
        m = self.manifest(name, version, repo)
        on_disk = sorted(os.path.relpath(os.path.join(d, f), vdir) for d, _, fs in os.walk(vdir) for f in fs)
        self.assertEqual(sorted([f["path"] for f in m["files"]] + ["manifest.json"]), sorted(on_disk))
        for f in m["files"]:
            path = os.path.join(vdir, f["path"])
            self.assertEqual(f["bytes"], os.path.getsize(path), f["path"])
            self.assertEqual(f["sha256"], sha256(path), f["path"])
        return m

    def test_1_push_file_and_folder(self):
        v, r = self.push(self.model, "relu", "--meta", "owner=ml-team", "--meta", "ticket=ML-42")
        self.assertEqual(v, 1)
        size = os.path.getsize(self.model)
        self.assertIn("pushed relu version 1 (1 files, %d bytes)" % size, r.stderr)
        m = self.check_manifest_against_files("relu", 1)
        self.assertEqual([f["path"] for f in m["files"]], ["model.onnx"])
        self.assertEqual(m["files"][0]["sha256"], sha256(self.model))  # the source's digest: a faithful copy
        self.assertEqual((m["format"], m["name"], m["version"]), (1, "relu", 1))
        self.assertRegex(m["created"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertEqual(sorted(m["libraries"]), ["cjson", "nettle", "protobuf-c", "zlib"])
        self.assertEqual(m["meta"], {"owner": "ml-team", "ticket": "ML-42"})
        self.assertEqual(m["kiln_version"], kiln("version").stdout.split()[1])

        v, r = self.push(self.folder, "relu")
        self.assertEqual(v, 2)
        m = self.check_manifest_against_files("relu", 2)
        self.assertEqual([f["path"] for f in m["files"]], ["model.onnx", "schema.json", "warmup/x.npy"])
        for f in m["files"]:
            self.assertEqual(f["sha256"], sha256(os.path.join(self.folder, f["path"])))
        self.assertIn("pushed relu version 2 (3 files, ", r.stderr)
        # nothing but versions, the lock and (later) labels.json: no temporary left behind
        self.assertEqual(sorted(os.listdir(os.path.join(self.repo, "relu"))), [".lock", "1", "2"])

    def test_2_list_show_verify(self):
        r = kiln("registry", "list", "--repo", self.repo)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(lines[0].split(), ["MODEL", "VERSION", "LABELS", "CREATED", "SIZE"])
        rows = [l.split() for l in lines[1:]]
        self.assertEqual([(row[0], row[1]) for row in rows], [("relu", "1"), ("relu", "2")])
        self.assertEqual(rows[0][4:], [str(os.path.getsize(self.model)), "B"])

        r = kiln("registry", "show", "relu", "--repo", self.repo)  # the newest version
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("version:  2", r.stdout)
        self.assertIn(sha256(os.path.join(self.folder, "warmup", "x.npy")), r.stdout)
        r = kiln("registry", "show", "relu", "1", "--repo", self.repo)
        self.assertIn(sha256(self.model), r.stdout)
        self.assertIn("labels:   -", r.stdout)

        r = kiln("registry", "verify", "relu", "--repo", self.repo)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout.splitlines(), ["relu version 1: ok", "relu version 2: ok"])

    def test_3_tamper_and_truncate(self):
        v, _ = self.push(self.folder, "tamper")
        vdir = os.path.join(self.repo, "tamper", str(v))
        model = os.path.join(vdir, "model.onnx")
        original = read_bytes(model)
        changed = bytearray(original)
        changed[len(changed) // 2] ^= 0x01
        write_bytes(model, bytes(changed))
        r = kiln("registry", "verify", "tamper", "--repo", self.repo)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("tamper version 1: FAILED: model.onnx: SHA-256 differs from the manifest", r.stdout)
        write_bytes(model, original)
        self.assertEqual(kiln("registry", "verify", "tamper", "1", "--repo", self.repo).returncode, 0)

        warm = os.path.join(vdir, "warmup", "x.npy")
        data = read_bytes(warm)
        write_bytes(warm, data[:-7])
        r = kiln("registry", "verify", "tamper", "1", "--repo", self.repo)
        self.assertEqual(r.returncode, 1)
        self.assertIn("warmup/x.npy: %d bytes, the manifest says %d" % (len(data) - 7, len(data)), r.stdout)
        write_bytes(warm, data)

        write_bytes(os.path.join(vdir, "notes.txt"), b"added later")
        r = kiln("registry", "verify", "tamper", "--repo", self.repo)
        self.assertEqual(r.returncode, 1)
        self.assertIn("notes.txt: not listed in the manifest", r.stdout)
        os.remove(os.path.join(vdir, "notes.txt"))

        with open(os.path.join(vdir, "manifest.json"), "r+") as f:
            f.truncate(40)
        r = kiln("registry", "verify", "tamper", "--repo", self.repo)
        self.assertEqual(r.returncode, 1)
        self.assertIn("manifest.json: not valid JSON", r.stdout)

    def test_4_label_rollback_gc(self):
        repo = os.path.join(self.dir, "labels_repo")
        for _ in range(5):
            self.push(self.model, "m", repo=repo)
        labels_path = os.path.join(repo, "m", "labels.json")
        for args in [("1", "stable"), ("2", "canary"), ("2", "stable"), ("3", "canary")]:
            r = kiln("registry", "label", "m", *args, "--repo", repo)
            self.assertEqual(r.returncode, 0, r.stderr)
        labels = load_json(labels_path)
        self.assertEqual(labels["labels"], {"stable": 2, "canary": 3})  # 2's canary label went with its promotion
        self.assertEqual(labels["stable_history"], [1])

        r = kiln("registry", "list", "m", "--repo", repo)
        rows = {row.split()[1]: row.split()[2] for row in r.stdout.splitlines()[1:]}
        self.assertEqual((rows["2"], rows["3"], rows["4"]), ("stable", "canary", "-"))

        r = kiln("registry", "rollback", "m", "--repo", repo)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "1")
        labels = load_json(labels_path)
        self.assertEqual((labels["labels"]["stable"], labels["stable_history"]), (1, []))
        r = kiln("registry", "rollback", "m", "--repo", repo)
        self.assertEqual(r.returncode, 2)
        self.assertIn("no earlier stable version", r.stderr)

        # a version the server rejected (it writes labels.json through the same library) shows as such
        labels["rejected"] = [{"version": 4, "reason": "canary error rate 0.31 > stable 0.00 + 0.01", "at": "2026-11-26T12:00:00Z"}]
        with open(labels_path, "w") as f:
            json.dump(labels, f)
        r = kiln("registry", "list", "m", "--repo", repo)
        self.assertEqual([row.split()[2] for row in r.stdout.splitlines()[1:] if row.split()[1] == "4"], ["rejected"])
        r = kiln("registry", "show", "m", "4", "--repo", repo)
        self.assertIn("rejected: canary error rate 0.31", r.stdout)

        r = kiln("registry", "gc", "m", "--keep", "1", "--repo", repo)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("removed m version 2", r.stderr)
        self.assertEqual(sorted(e for e in os.listdir(os.path.join(repo, "m")) if not e.startswith(".")), ["1", "3", "5", "labels.json"])
        self.assertEqual(sorted(os.listdir(os.path.join(repo, "m"))), [".lock", "1", "3", "5", "labels.json"])

    def test_5_default_repositories(self):
        env = dict(os.environ, KILN_REPO=os.path.join(self.dir, "env_repo"))
        r = kiln("registry", "push", self.model, "--name", "viaenv", env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(os.path.isfile(os.path.join(self.dir, "env_repo", "viaenv", "1", "manifest.json")))
        self.assertEqual(kiln("registry", "verify", "viaenv", env=env).returncode, 0)
        env = {k: v for k, v in os.environ.items() if k != "KILN_REPO"}
        cwd = os.path.join(self.dir, "cwd")
        os.makedirs(cwd)
        r = kiln("registry", "push", self.model, "--name", "local", cwd=cwd, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(os.path.isfile(os.path.join(cwd, "models", "local", "1", "model.onnx")))
        r = kiln("registry", "list", cwd=cwd, env=env)
        self.assertIn("local", r.stdout)

    def test_6_usage_errors(self):
        cases = [
            (["registry"], "usage: kiln registry"),
            (["registry", "frobnicate"], "unknown command 'frobnicate'"),
            (["registry", "push", self.model], "--name NAME is required"),
            (["registry", "push", self.model, "--name", "../up"], "is not a model name"),
            (["registry", "push", self.model, "--name", "ok", "--meta", "novalue"], "KEY=VALUE expected"),
            (["registry", "push", os.path.join(self.dir, "missing.onnx"), "--name", "ok"], "missing.onnx"),
            (["registry", "push", self.folder + "/schema.json", "--name", "ok"], "does not start like an ONNX model"),
            (["registry", "label", "relu", "one", "stable"], "is not a version number"),
            (["registry", "label", "relu", "9", "stable"], "no version 9"),
            (["registry", "label", "relu", "1", "bad label"], "not a label name"),
            (["registry", "gc", "relu"], "--keep K"),
            (["registry", "verify", "nosuchmodel"], "no such model folder"),
            (["registry", "verify", "relu", "7"], "no version 7"),
            (["registry", "show", "relu", "x"], "is not a version number"),
            (["registry", "list", "--bogus"], "unknown flag"),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                r = kiln(*args, "--repo", self.repo) if len(args) > 1 else kiln(*args)
                self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                self.assertIn(message, r.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.repo, "ok", "1")))
        for sub in ["push", "list", "show", "verify", "label", "rollback", "gc"]:
            with self.subTest(help=sub):
                r = kiln("registry", sub, "--help")
                self.assertEqual(r.returncode, 0)
                self.assertIn("usage: kiln registry " + sub, r.stdout)
                self.assertIn("--repo DIR", r.stdout)

    def test_7_train_export_lineage(self):
        d = os.path.join(self.dir, "train")
        os.makedirs(d)
        rng = np.random.default_rng(3)
        x = rng.uniform(-2, 2, size=(64, 4, 4)).astype(np.float32)
        np.savez(os.path.join(d, "data.npz"), x=x, label=(x[:, 0, 0] > 0).astype(np.int64))
        run = {"model": {"layers": ["flatten", {"dense": {"units": 2}}]}, "optimizer": {"adam": {"learning_rate": 0.01}},
               "loss": {"sparse_categorical_crossentropy": {}}, "metrics": ["accuracy"], "epochs": 3, "batch_size": 16,
               "seed": 3, "features": "x", "label": "label",
               "data": {"source": "data.npz", "stages": [{"map": {"transforms": [{"cast": {"feature": "label", "dtype": "float"}}]}}]}}
        with open(os.path.join(d, "run.json"), "w") as f:
            json.dump(run, f, indent=1)
        r = kiln("train", "--config", "run.json", "--epochs", "1", "--threads", "2", "--logdir", "", "--checkpoint-dir", "ckpt",
                 "--export", "repo/trained", "--metrics-out", "m.json", cwd=d, timeout=600)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        self.assertIn("exported version 1", r.stderr)
        repo = os.path.join(d, "repo")
        m = self.check_manifest_against_files("trained", 1, repo=repo)
        self.assertEqual([f["path"] for f in m["files"]], ["model.onnx", "preprocess.json", "schema.json"])
        lineage = m["lineage"]
        self.assertEqual(lineage["run_file_sha256"], sha256(os.path.join(d, "run.json")))
        self.assertEqual(lineage["dataset_schema_sha256"], sha256(os.path.join(repo, "trained", "1", "schema.json")))
        metrics = load_json(os.path.join(d, "m.json"))
        self.assertEqual(sorted(lineage["metrics"]), ["epochs", "steps", "test_accuracy", "test_loss", "train_accuracy", "train_loss"])
        self.assertEqual((lineage["metrics"]["epochs"], lineage["metrics"]["steps"]), (1, metrics["steps"]))
        self.assertAlmostEqual(lineage["metrics"]["train_loss"], metrics["train_loss"], places=5)
        self.assertIsNone(lineage["metrics"]["test_accuracy"])  # no validation data: null, as in --metrics-out
        self.assertEqual(sorted(os.listdir(os.path.join(repo, "trained"))), [".lock", "1"])  # the export's temporary is gone
        r = kiln("registry", "verify", "trained", "--repo", repo)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout.strip(), "trained version 1: ok")


if __name__ == "__main__":
    KILN = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
