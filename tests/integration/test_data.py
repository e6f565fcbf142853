#!/usr/bin/python3
"""`kiln data` end to end, against independent tools: Python's gzip/struct for IDX, the csv
module for CSV, NumPy for NPY/NPZ, PIL for images; quarantine accounting, determinism across
thread counts, conversions that round-trip, and memory that stays flat on a large file.

    test_data.py KILN
"""
import csv
import gzip
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest

import numpy as np

KILN = None
FMNIST = "/usr/share/datasets/fashion-mnist"


def kiln(*args, timeout=300):
    return subprocess.run([KILN] + [str(a) for a in args], capture_output=True, text=True, timeout=timeout)


def records(result):
    return [json.loads(line) for line in result.stdout.splitlines()]


class Data(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="kiln_data_")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.dir, name)

    def ok(self, *args, **kw):
        r = kiln(*args, **kw)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r

    def pipeline(self, name, spec):
        p = self.path(name)
        with open(p, "w") as f:
            json.dump(spec, f)
        return p

    def test_fashion_mnist_counts_labels_and_pixels(self):
        r = self.ok("data", "cat", FMNIST + "/t10k-images-idx3-ubyte.gz")
        recs = records(r)
        self.assertEqual(len(recs), 10000)
        self.assertIn("10000 records read", r.stderr)
        with gzip.open(FMNIST + "/t10k-images-idx3-ubyte.gz") as f:
            magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
            images = np.frombuffer(f.read(), np.uint8).reshape(n, rows, cols)
        with gzip.open(FMNIST + "/t10k-labels-idx1-ubyte.gz") as f:
            labels = np.frombuffer(f.read()[8:], np.uint8)
        self.assertEqual((magic, n), (0x803, 10000))
        self.assertEqual(np.bincount([rec["label"] for rec in recs]).tolist(), [1000] * 10)
        for i in (0, 1, 4321, 9999):
            self.assertEqual(recs[i]["label"], int(labels[i]))
            self.assertEqual(np.array(recs[i]["image"], np.uint8).tolist(), images[i].tolist())
        train = self.ok("data", "bench", FMNIST + "/train-images-idx3-ubyte.gz", "--json")
        self.assertEqual(json.loads(train.stdout)["records"], 60000)

    def test_csv_matches_the_csv_module(self):
        rows = [["id", "name", "score", "note"],
                ["1", "plain", "1.5", "x"],
                ["2", "comma, inside", "-2", "line\nbreak"],
                ["3", 'say "hi"', "", "crlf"],
                ["4", "", "3e-2", ""]]
        p = self.path("people.csv")
        with open(p, "w", newline="") as f:
            csv.writer(f, lineterminator="\r\n").writerows(rows)
        got = records(self.ok("data", "cat", p))
        with open(p, newline="") as f:
            want = list(csv.DictReader(f))
        self.assertEqual(len(got), len(want))
        for g, w in zip(got, want):
            self.assertEqual(list(g), ["id", "name", "score", "note"])
            self.assertEqual(g["id"], int(w["id"]))
            self.assertEqual(g["name"], w["name"] if w["name"] else None)
            self.assertEqual(None if g["score"] is None else np.float32(g["score"]),
                             None if w["score"] == "" else np.float32(w["score"]))
            self.assertEqual(g["note"], w["note"] if w["note"] else None)

    def test_csv_text_that_looks_missing_round_trips(self):
        """Quoted "", "NA" and "null" in a text column are text; uint64 values above 2^63 are read; the
        writer quotes such text so that it reads back the same."""
        p = self.path("looks.csv")
        with open(p, "w", newline="") as f:
            w = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC)
            w.writerow(["name", "big"])
            for name in ["", "NA", "null", "x"]:
                w.writerow([name, 18446744073709551615])
        spec = self.pipeline("looks.json", {"source": {"format": "csv", "path": p,
                                                       "columns": {"name": "string", "big": "uint64"}}})
        got = records(self.ok("data", "cat", "--pipeline", spec))
        self.assertEqual([g["name"] for g in got], ["", "NA", "null", "x"])
        self.assertEqual({g["big"] for g in got}, {18446744073709551615})
        out = self.path("looks_out.csv")
        self.ok("data", "convert", "--pipeline", spec, out)
        with open(out, newline="") as f:
            self.assertEqual([r[0] for r in csv.reader(f)][1:], ["", "NA", "null", "x"])
        back = records(self.ok("data", "cat", "--pipeline", self.pipeline("looks2.json", {"source": {
            "format": "csv", "path": out, "columns": {"name": "string", "big": "uint64"}}})))
        self.assertEqual([g["name"] for g in back], ["", "NA", "null", "x"])

    def test_npy_headers_cannot_promise_what_the_file_lacks(self):
        def header_only(name, shape, payload=b""):
            with open(self.path(name), "wb") as f:
                np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
                f.write(payload)
            return self.path(name)
        r = kiln("data", "cat", header_only("many_empty.npy", (9999999999, 0)))
        self.assertEqual(r.returncode, 2)
        self.assertIn("records that hold no data", r.stderr)
        q = self.path("huge_q.jsonl")
        r = self.ok("data", "cat", header_only("huge_rows.npy", (3, 268435456), b"\0" * 32), "--on-error", "skip",
                    "--quarantine", q)
        self.assertIn("1 of 1 records quarantined", r.stderr)
        with open(q) as f:
            self.assertIn("file ends after 0 of 3 records", f.read())

    def test_npy_and_npz_match_numpy(self):
        rng = np.random.default_rng(3)
        x = rng.standard_normal((7, 3, 2)).astype(np.float32)
        np.save(self.path("x.npy"), x)
        got = records(self.ok("data", "cat", self.path("x.npy")))
        self.assertEqual(len(got), 7)
        np.testing.assert_array_equal(np.array([g["x"] for g in got], np.float32), x)
        y = rng.integers(-5, 5, size=7)
        np.savez_compressed(self.path("xy.npz"), x=x, y=y)
        got = records(self.ok("data", "cat", self.path("xy.npz")))
        np.testing.assert_array_equal(np.array([g["x"] for g in got], np.float32), x)
        self.assertEqual([g["y"] for g in got], y.tolist())

    def write_bad_csv(self):
        """200 rows; rows 10, 50, 51 and 199 are bad (ragged, not a number, ragged, not a number)."""
        p = self.path("bad.csv")
        bad = {10: "10,1.0,extra\n", 50: "50,abc\n", 51: "51\n", 199: "199,1.2.3\n"}
        with open(p, "w") as f:
            f.write("id,value\n")
            for i in range(200):
                f.write(bad.get(i, "%d,%g\n" % (i, i / 4)))
        return p, sorted(bad)

    def test_quarantine_holds_exactly_the_bad_records(self):
        p, bad = self.write_bad_csv()
        q = self.path("q.jsonl")
        # typed columns: inferred ones would take the bad values' type, as pandas does
        spec = self.pipeline("typed.json", {"source": {"format": "csv", "path": p,
                                                       "columns": {"id": "int64", "value": "float"}}})
        r = self.ok("data", "cat", "--pipeline", spec, "--on-error", "skip", "--quarantine", q)
        got = records(r)
        self.assertEqual([g["id"] for g in got], [i for i in range(200) if i not in bad])
        self.assertIn("4 of 200 records quarantined (%s)" % q, r.stderr)
        lines = [json.loads(line) for line in open(q)]
        self.assertEqual([line["index"] for line in lines], bad)
        for line in lines:
            self.assertEqual(line["source"], p)
            self.assertTrue(line["reason"])
            self.assertTrue(line["raw"].startswith(str(line["index"])))
        # fail mode stops at the first bad record and says where
        r = kiln("data", "cat", "--pipeline", spec)
        self.assertEqual(r.returncode, 2)
        self.assertIn("record 10", r.stderr)

    def test_records_a_batch_refuses_are_quarantined_once(self):
        """Missing values reach the batch stage after a map has read the whole file ahead: each
        such row is quarantined exactly once, however many epochs run."""
        p = self.path("holes.csv")
        holes = [5, 50, 99]
        with open(p, "w") as f:
            f.write("id,value\n")
            for i in range(100):
                f.write("%d,%s\n" % (i, "" if i in holes else "%d.5" % i))
        spec = self.pipeline("holes.json", {"source": p, "on_error": "skip", "stages": [
            {"map": {"transforms": [{"cast": {"feature": "value", "dtype": "double"}}]}}, {"batch": 8}]})
        for extra in ((), ("--epochs", 3)):
            q = self.path("holes_q.jsonl")
            r = self.ok("data", "bench", "--pipeline", spec, "--quarantine", q, "--json", *extra)
            epochs = extra[1] if extra else 1
            self.assertEqual(json.loads(r.stdout)["records"], 100 * epochs)
            self.assertEqual(json.loads(r.stdout)["quarantined"], 3)
            self.assertEqual([json.loads(line)["index"] for line in open(q)], holes)
        got = records(self.ok("data", "cat", "--pipeline", spec, "--quarantine", self.path("holes_q2.jsonl")))
        self.assertEqual(sum(len(g["id"]) for g in got), 97)

    def test_same_seed_same_order_across_thread_counts(self):
        src = {"format": "idx", "path": FMNIST + "/t10k-images-idx3-ubyte.gz",
               "labels": FMNIST + "/t10k-labels-idx1-ubyte.gz"}
        spec = {"source": src, "stages": [
            {"map": {"transforms": [{"normalize": {"feature": "image", "mean": 72.94, "std": 90.02}}]}},
            {"shuffle": {"buffer_size": 1000, "seed": 5}}, {"take": 300}, {"batch": 10}, {"prefetch": 2}]}
        p = self.pipeline("det.json", spec)
        one = self.ok("data", "cat", "--pipeline", p, "--threads", 1).stdout
        two = self.ok("data", "cat", "--pipeline", p, "--threads", 2).stdout
        self.assertEqual(one, two)
        self.assertEqual(len(one.splitlines()), 30)
        spec["stages"][1]["shuffle"]["seed"] = 6
        other = self.ok("data", "cat", "--pipeline", self.pipeline("det2.json", spec)).stdout
        self.assertNotEqual(one, other)
        # the normalization is numpy's
        first = records(self.ok("data", "cat", "--pipeline", self.pipeline("norm.json", {
            "source": src, "stages": spec["stages"][:1]}), "--limit", 1))[0]
        with gzip.open(src["path"]) as f:
            img = np.frombuffer(f.read()[16:16 + 784], np.uint8).reshape(28, 28)
        np.testing.assert_allclose(np.array(first["image"], np.float32),
                                   (img.astype(np.float32) - np.float32(72.94)) / np.float32(90.02), rtol=1e-6)

    def test_conversions_round_trip(self):
        rng = np.random.default_rng(7)
        x = rng.standard_normal((20, 4)).astype(np.float32)
        label = rng.integers(0, 10, size=20)
        np.savez(self.path("src.npz"), x=x, label=label)
        for ext in ("tfrecord", "csv", "npz"):
            out = self.path("out." + ext)
            r = self.ok("data", "convert", self.path("src.npz"), out)
            self.assertIn("wrote 20 records", r.stderr)
            if ext == "npz":
                back = np.load(out)
                np.testing.assert_array_equal(back["x"], x)
                np.testing.assert_array_equal(back["label"], label)
            elif ext == "csv":
                with open(out, newline="") as f:
                    rows = list(csv.reader(f))
                self.assertEqual(rows[0], ["x_0", "x_1", "x_2", "x_3", "label"])
                np.testing.assert_array_equal(np.array(rows[1:], float)[:, :4].astype(np.float32), x)
            else:
                got = records(self.ok("data", "cat", out))
                np.testing.assert_array_equal(np.array([g["x"] for g in got], np.float32), x)
                self.assertEqual([g["label"] for g in got], [[int(v)] for v in label])

    def test_images_decode_like_pil(self):
        from PIL import Image
        root = self.path("images")
        rng = np.random.default_rng(2)
        arrays = {}
        for cls in ("cat", "dog"):
            os.makedirs(os.path.join(root, cls))
            for k in range(3):
                a = rng.integers(0, 256, size=(5 + k, 7, 3), dtype=np.uint8)
                name = "%s/%d.png" % (cls, k)
                Image.fromarray(a).save(os.path.join(root, name))
                arrays[name] = a
        got = records(self.ok("data", "cat", root))
        self.assertEqual([g["path"] for g in got], sorted(arrays))
        self.assertEqual([g["label"] for g in got], [0, 0, 0, 1, 1, 1])
        for g in got:
            np.testing.assert_array_equal(np.array(g["image"], np.uint8), arrays[g["path"]])

    def test_a_large_file_streams_in_bounded_memory(self):
        p = self.path("large.csv")
        line = "".join("%d,%d.25,%d,word%d\n" % (i, i, i * 7, i % 13) for i in range(20000))
        with open(p, "w") as f:
            f.write("a,b,c,d\n")
            for _ in range(300):  # about 300 MB
                f.write(line)
        spec = self.pipeline("large.json", {"source": p, "stages": [
            {"shuffle": {"buffer_size": 1000, "seed": 1}}, {"batch": 256}, {"prefetch": 4}]})
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        r = self.ok("data", "bench", "--pipeline", spec, "--json", timeout=600)
        self.assertEqual(json.loads(r.stdout)["records"], 6000000)
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        self.assertGreater(peak_mib, 0)
        # the file is 300 MB; the pipeline holds a shuffle buffer, a few batches and read blocks
        if before / 1024 < 150:
            self.assertLess(peak_mib, 150)
        os.unlink(p)

    def test_usage_and_input_errors(self):
        self.assertEqual(kiln("data").returncode, 2)
        self.assertEqual(self.ok("data", "--help").returncode, 0)
        for sub in ("cat", "convert", "bench"):
            self.assertIn("--pipeline", self.ok("data", sub, "--help").stdout)
        r = kiln("data", "cat", self.path("nothing.csv"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("nothing.csv", r.stderr)
        r = kiln("data", "cat", self.path("x.parquet"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("cannot tell the format", r.stderr)
        r = kiln("data", "cat", "--pipeline", self.pipeline("bad.json", {"source": {"format": "range", "stop": 3}, "stages": [{"zip": 1}]}))
        self.assertEqual(r.returncode, 2)
        self.assertIn("stages[0].zip: unknown stage", r.stderr)
        self.assertEqual(kiln("data", "cat", "x.csv", "--on-error", "maybe").returncode, 2)


if __name__ == "__main__":
    KILN = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
