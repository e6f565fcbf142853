#!/usr/bin/python3
"""kiln data schema infer / validate / stats / diff, end to end on CSV files written by Python's csv
module, checked against numpy's statistics and the textbook drift formulas.

    test_data_schema.py KILN
"""
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np

KILN = None
N = 2000
CITIES = ["paris", "lyon", "nice", "lille"]


def kiln(*args, cwd=None):
    return subprocess.run([KILN] + [str(a) for a in args], capture_output=True, text=True, timeout=120, cwd=cwd)


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def js(p, q):
    p = np.asarray(p, dtype=np.float64) / np.sum(p)
    q = np.asarray(q, dtype=np.float64) / np.sum(q)
    m = (p + q) / 2
    kl = lambda a, b: sum(x * math.log2(x / y) for x, y in zip(a, b) if x > 0)
    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


class DataSchema(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="kiln_schema_")
        rng = np.random.default_rng(3)
        cls.age = rng.integers(18, 81, N)
        # CSV floats are read as float32: keep the values float32-exact so numpy sees what kiln sees
        cls.income = rng.normal(40000, 8000, N).astype(np.float32)
        cls.score = rng.uniform(0, 1, N).astype(np.float32)
        city = rng.choice(CITIES, N, p=[0.4, 0.3, 0.2, 0.1])
        cls.city_missing = rng.uniform(0, 1, N) < 0.05
        rows = [[int(a), repr(float(i)), "" if miss else c, repr(float(s))]
                for a, i, c, miss, s in zip(cls.age, cls.income, city, cls.city_missing, cls.score)]
        write_csv(cls.path("train.csv"), ["age", "income", "city", "score"], rows)
        # the same rows with income shifted by three standard deviations
        cls.shifted = (cls.income + np.float32(24000)).astype(np.float32)
        write_csv(cls.path("shifted.csv"), ["age", "income", "city", "score"],
                  [[r[0], repr(float(s)), r[2], r[3]] for r, s in zip(rows, cls.shifted)])
        # every anomaly a CSV can carry: age out of range, income text, city new and mostly missing,
        # score NaN and above its max, an extra column
        broken = []
        for k in range(200):
            broken.append([200 if k in (3, 9) else 30, "n/a" if k == 0 else "41000.5",
                           "atlantis" if k == 5 else ("" if k % 2 else "paris"),
                           "nan" if k == 7 else ("1.5" if k == 8 else "0.5"), k])
        write_csv(cls.path("broken.csv"), ["age", "income", "city", "score", "extra"], broken)
        r = kiln("data", "schema", "infer", cls.path("train.csv"), "-o", cls.path("schema.json"))
        assert r.returncode == 0, r.stderr
        with open(cls.path("schema.json")) as f:
            cls.schema = json.load(f)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir)

    @classmethod
    def path(cls, name):
        return os.path.join(cls.dir, name)

    def feature(self, name):
        return next(f for f in self.schema["features"] if f["name"] == name)

    def test_inferred_schema(self):
        s = self.schema
        self.assertEqual(s["kiln_schema"], 1)
        self.assertEqual(s["num_records"], N)
        self.assertEqual([f["name"] for f in s["features"]], ["age", "income", "city", "score"])
        age, income, city = self.feature("age"), self.feature("income"), self.feature("city")
        self.assertEqual(age["dtype"], "int64")
        self.assertEqual(age["shape"], [])
        self.assertEqual((age["min"], age["max"]), (int(self.age.min()), int(self.age.max())))
        self.assertEqual(age["max_missing_rate"], 0)
        self.assertEqual(income["dtype"], "float")
        self.assertFalse(income["allow_nan"])
        self.assertEqual(income["min"], float(self.income.min()))
        v = self.income.astype(np.float64)
        self.assertAlmostEqual(income["stats"]["mean"], v.mean(), delta=1e-9 * abs(v.mean()))
        self.assertAlmostEqual(income["stats"]["std"], v.std(), delta=1e-9 * v.std())
        counts, edges = np.histogram(v, bins=10, range=(v.min(), v.max()))
        self.assertEqual(income["stats"]["histogram"]["counts"], counts.tolist())
        self.assertEqual(income["stats"]["histogram"]["edges"], edges.tolist())
        self.assertEqual(city["dtype"], "string")
        self.assertEqual(city["domain"], sorted(CITIES))
        rate = self.city_missing.mean()
        self.assertAlmostEqual(city["missing_rate"], rate, delta=1e-12)
        self.assertAlmostEqual(city["max_missing_rate"], math.ceil(rate * 100 - 1e-9) / 100, delta=1e-12)

    def test_validate_clean(self):
        r = kiln("data", "validate", self.path("train.csv"), "--schema", self.path("schema.json"),
                 "--report", self.path("clean.json"))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn(f"{N} records: clean", r.stdout)
        with open(self.path("clean.json")) as f:
            self.assertEqual(json.load(f), {"records": N, "anomalies": [], "clean": True})

    def test_validate_anomalies(self):
        r = kiln("data", "validate", self.path("broken.csv"), "--schema", self.path("schema.json"),
                 "--report", self.path("report.json"))
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        with open(self.path("report.json")) as f:
            report = json.load(f)
        self.assertEqual(report["records"], 200)
        self.assertFalse(report["clean"])
        got = {(a["feature"], a["kind"]): a for a in report["anomalies"]}
        self.assertEqual(set(got), {("age", "out_of_range"), ("income", "wrong_type"), ("city", "new_category"),
                                    ("city", "missing_feature"), ("score", "nan"), ("score", "out_of_range"),
                                    ("extra", "unexpected_feature")})
        self.assertEqual(got["age", "out_of_range"]["count"], 2)
        self.assertEqual(got["age", "out_of_range"]["examples"], [3, 9])
        self.assertIn("200 is outside [18, 80]", got["age", "out_of_range"]["description"])
        self.assertIn("expected float, found string", got["income", "wrong_type"]["description"])
        self.assertEqual(got["income", "wrong_type"]["count"], 200)
        self.assertIn("'atlantis' is not in the domain", got["city", "new_category"]["description"])
        self.assertEqual(got["city", "new_category"]["examples"], [5])
        self.assertEqual(got["city", "missing_feature"]["count"], 99)  # odd rows but 5, which is atlantis
        self.assertIn("missing in 99 of 200 records", got["city", "missing_feature"]["description"])
        self.assertEqual(got["score", "nan"]["examples"], [7])
        self.assertIn("1.5 is outside", got["score", "out_of_range"]["description"])
        self.assertEqual(got["extra", "unexpected_feature"]["count"], 200)
        self.assertEqual(len(got["extra", "unexpected_feature"]["examples"]), 5)
        # stdout says the same in words, one line per anomaly and a summary
        self.assertIn("feature 'age': out_of_range: 200 is outside [18, 80]", r.stdout)
        self.assertIn("200 records: 7 anomalies", r.stdout)

    def test_schema_edits_loosen(self):
        s = json.loads(json.dumps(self.schema))
        for f in s["features"]:
            if f["name"] == "age":
                f["max"] = 250
        with open(self.path("loose.json"), "w") as f:
            json.dump(s, f)
        r = kiln("data", "validate", self.path("broken.csv"), "--schema", self.path("loose.json"), "--report",
                 self.path("loose_report.json"))
        self.assertEqual(r.returncode, 1)
        with open(self.path("loose_report.json")) as f:
            kinds = {(a["feature"], a["kind"]) for a in json.load(f)["anomalies"]}
        self.assertNotIn(("age", "out_of_range"), kinds)

    def test_stats_json(self):
        r = kiln("data", "stats", self.path("train.csv"), "--json", "--bins", "5")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(len(lines), 1)
        stats = json.loads(lines[0])
        self.assertEqual(stats["num_records"], N)
        f = {x["name"]: x for x in stats["features"]}
        age = f["age"]["numeric"]
        self.assertEqual((age["min"], age["max"]), (self.age.min(), self.age.max()))
        self.assertAlmostEqual(age["mean"], self.age.mean(), delta=1e-9)
        self.assertAlmostEqual(age["std"], self.age.std(), delta=1e-9)
        counts, _ = np.histogram(self.age, bins=5, range=(self.age.min(), self.age.max()))
        self.assertEqual(age["histogram"]["counts"], counts.tolist())
        score = self.score.astype(np.float64)
        self.assertAlmostEqual(f["score"]["numeric"]["std"], score.std(), delta=1e-9)
        city = f["city"]
        self.assertEqual(city["missing"], int(self.city_missing.sum()))
        self.assertEqual(city["values"]["top"][0]["value"], "paris")
        self.assertEqual(city["values"]["distinct"], 4)
        # integers with few distinct values are counted too
        self.assertEqual(f["age"]["values"]["distinct"], len(set(self.age.tolist())))

    def test_stats_text(self):
        r = kiln("data", "stats", self.path("train.csv"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"{N} records, 4 features", r.stdout)
        self.assertIn("city: string [], present", r.stdout)

    def test_diff(self):
        r = kiln("data", "diff", self.path("train.csv"), self.path("train.csv"), "--json")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        same = json.loads(r.stdout)
        self.assertFalse(same["drifted"])
        self.assertTrue(all(f["distance"] == 0 for f in same["features"]))

        r = kiln("data", "diff", self.path("train.csv"), self.path("shifted.csv"), "--json")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        d = {f["name"]: f for f in json.loads(r.stdout)["features"]}
        a, b = self.income.astype(np.float64), self.shifted.astype(np.float64)
        edges = np.linspace(min(a.min(), b.min()), max(a.max(), b.max()), 11)
        want = js(np.histogram(a, bins=edges)[0], np.histogram(b, bins=edges)[0])
        self.assertEqual(d["income"]["method"], "jensen_shannon")
        self.assertAlmostEqual(d["income"]["distance"], want, delta=1e-9)
        self.assertTrue(d["income"]["drifted"])
        self.assertEqual(d["city"]["method"], "l_infinity")
        self.assertEqual(d["city"]["distance"], 0)
        self.assertFalse(d["age"]["drifted"])

        # text output, and a threshold above the drift
        r = kiln("data", "diff", self.path("train.csv"), self.path("shifted.csv"), "--threshold", "0.99")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("income: jensen_shannon", r.stdout)
        self.assertIn("0 of 4 features drifted past 0.99", r.stdout)

    def test_pipeline_source(self):
        with open(self.path("pipe.json"), "w") as f:
            json.dump({"source": {"format": "csv", "path": self.path("train.csv")}, "stages": [{"take": {"count": 10}}]}, f)
        r = kiln("data", "stats", "--pipeline", self.path("pipe.json"), "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["num_records"], 10)

    def test_usage_errors(self):
        cases = [
            (["data", "validate", self.path("train.csv")], "--schema FILE is required"),
            (["data", "validate", self.path("train.csv"), "--schema", self.path("nope.json")], "nope.json"),
            (["data", "diff", self.path("train.csv")], "missing arguments"),
            (["data", "stats", self.path("train.csv"), "--bins", "0"], "--bins must be"),
            (["data", "stats", self.path("train.csv"), "--frobnicate"], "unknown flag"),
            (["data", "schema", "guess"], "unknown command 'guess'"),
            (["data", "stats", self.path("absent.csv")], "absent.csv"),
        ]
        for args, text in cases:
            r = kiln(*args)
            self.assertEqual(r.returncode, 2, args)
            self.assertIn(text, r.stderr, args)
        with open(self.path("bad_schema.json"), "w") as f:
            f.write('{"kiln_schema": 1, "features": [{"name": "age", "dtype": "int64", "min": "zero"}]}')
        r = kiln("data", "validate", self.path("train.csv"), "--schema", self.path("bad_schema.json"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("features[0].min: expected a number or null", r.stderr)

    def test_help(self):
        for cmd in [["schema", "infer"], ["validate"], ["stats"], ["diff"]]:
            r = kiln("data", *cmd, "--help")
            self.assertEqual(r.returncode, 0, cmd)
            self.assertIn("usage: kiln data " + " ".join(cmd), r.stdout)


if __name__ == "__main__":
    KILN = os.path.abspath(sys.argv.pop(1))
    unittest.main()
