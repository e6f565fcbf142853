#!/usr/bin/python3
"""Fixtures for tests/unit/test_data_schema.c: the columns of a small dataset (.npy, and JSON for the
strings) and the statistics numpy computes from them, plus drift distances by the textbook formulas.

    /usr/bin/python3 tests/data/make_data_fixtures_schema.py   (writes tests/data/data/schema_*)
"""
import collections
import json
import math
import os

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
N = 1000
BINS = 10


def numeric_stats(values, present):
    """What kiln reports for a numeric column: moments over the finite elements, NaN/inf apart."""
    v = np.asarray(values, dtype=np.float64)[present]
    finite = v[np.isfinite(v)]
    lo, hi = float(finite.min()), float(finite.max())
    counts, edges = np.histogram(finite, bins=BINS, range=(lo, hi))
    return {"present": int(present.sum()), "missing": int((~present).sum()), "count": int(finite.size),
            "nan": int(np.isnan(v).sum()), "inf": int(np.isinf(v).sum()), "min": lo, "max": hi,
            "mean": float(finite.mean()), "std": float(finite.std()),
            "edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def value_counts(values):
    return {str(k): int(c) for k, c in collections.Counter(values).items()}


def js(p, q):
    """Jensen-Shannon divergence, base 2."""
    p = np.asarray(p, dtype=np.float64) / sum(p)
    q = np.asarray(q, dtype=np.float64) / sum(q)
    m = (p + q) / 2
    kl = lambda a, b: sum(x * math.log2(x / y) for x, y in zip(a, b) if x > 0)
    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def linf(p, q):
    tp, tq = sum(p.values()), sum(q.values())
    return max(abs(p.get(k, 0) / tp - q.get(k, 0) / tq) for k in set(p) | set(q))


def main():
    rng = np.random.default_rng(7)
    x = rng.normal(5, 2, N).astype(np.float32)
    x[[10, 500]] = np.nan
    x[77] = np.inf
    x_present = np.ones(N, dtype=bool)
    x_present[::50] = False  # every 50th record has no x
    n = rng.integers(0, 20, N).astype(np.int64)
    # a large offset: a naive sum of squares loses every digit of this variance
    big = 1e9 + rng.normal(0, 1, N)
    colours = ["red", "green", "blue", "cyan", "magenta"]
    s = [colours[i] for i in rng.choice(5, N, p=[0.4, 0.3, 0.15, 0.1, 0.05])]
    s_json = [None if i % 7 == 3 else c for i, c in enumerate(s)]
    s_present = [c for c in s_json if c is not None]
    shifted = (rng.normal(5, 2, N) + 1.5).astype(np.float32)

    np.save(os.path.join(OUT, "schema_x.npy"), x)
    np.save(os.path.join(OUT, "schema_x_present.npy"), x_present.astype(np.uint8))
    np.save(os.path.join(OUT, "schema_n.npy"), n)
    np.save(os.path.join(OUT, "schema_big.npy"), big)
    np.save(os.path.join(OUT, "schema_shifted.npy"), shifted)
    with open(os.path.join(OUT, "schema_s.json"), "w") as f:
        json.dump(s_json, f)

    # drift of x (its finite present values) against shifted, over common equal-width edges
    a = x.astype(np.float64)[x_present]
    a = a[np.isfinite(a)]
    b = shifted.astype(np.float64)
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    edges = np.linspace(lo, hi, BINS + 1)
    ha, _ = np.histogram(a, bins=edges)
    hb, _ = np.histogram(b, bins=edges)
    s_other = [colours[i] for i in rng.choice(5, 400, p=[0.2, 0.2, 0.2, 0.2, 0.2])]

    expected = {
        "records": N,
        "x": numeric_stats(x, x_present),
        "n": dict(numeric_stats(n, np.ones(N, dtype=bool)), values=value_counts(n.tolist())),
        "big": numeric_stats(big, np.ones(N, dtype=bool)),
        "s": {"present": len(s_present), "missing": N - len(s_present), "values": value_counts(s_present)},
        "drift": {"edges": [float(e) for e in edges], "a": [int(c) for c in ha], "b": [int(c) for c in hb],
                  "js": js(ha, hb)},
        "linf": {"other": s_other, "distance": linf(value_counts(s_present), value_counts(s_other))},
        "js_cases": [{"p": p, "q": q, "js": js(p, q)} for p, q in
                     [([1, 2, 3], [3, 2, 1]), ([5, 0, 0], [0, 0, 5]), ([1, 1], [1, 1]), ([10, 0, 3, 7], [2, 9, 0, 1])]],
    }
    with open(os.path.join(OUT, "schema_expected.json"), "w") as f:
        json.dump(expected, f, indent=1)


if __name__ == "__main__":
    main()
