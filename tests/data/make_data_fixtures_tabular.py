#!/usr/bin/python3
"""Makes the fixtures of the tabular sources' tests (IDX, CSV, NPY/NPZ) in tests/data/data/ with
Python's own tools (struct+gzip, csv, numpy) and writes what those tools read back into
tabular_expected.json, which tests/unit/test_data_{idx,csv,npy}.c compare kiln's readers against.
Run with Debian's python3: /usr/bin/python3 tests/data/make_data_fixtures_tabular.py"""
import csv
import gzip
import hashlib
import io
import json
import os
import struct
import zipfile

import numpy as np

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
FASHION = "/usr/share/datasets/fashion-mnist"
expected = {}


def path(name):
    return os.path.join(HERE, name)


# ------------------------------------------------------------------ IDX
IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def idx_bytes(a):
    head = struct.pack(">BBBB", 0, 0, IDX_CODES[a.dtype.type], a.ndim) + struct.pack(">%dI" % a.ndim, *a.shape)
    return head + a.astype(a.dtype.newbyteorder(">")).tobytes()


def read_idx(data):
    """An independent IDX reader (struct), used for the expected values."""
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    dims = struct.unpack(">%dI" % ndim, data[4:4 + 4 * ndim])
    dt = {v: k for k, v in IDX_CODES.items()}[code]
    return np.frombuffer(data[4 + 4 * ndim:], dtype=np.dtype(dt).newbyteorder(">")).reshape(dims)


rng = np.random.default_rng(7)
images = rng.integers(0, 256, size=(5, 3, 4), dtype=np.uint8)
labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
open(path("tab_small-images-idx3-ubyte"), "wb").write(idx_bytes(images))
open(path("tab_small-labels-idx1-ubyte"), "wb").write(idx_bytes(labels))
floats = rng.standard_normal((4, 2, 3)).astype(np.float32)
# gzip-compressed but named without .gz: the reader must go by the magic
open(path("tab_f32.idx"), "wb").write(gzip.compress(idx_bytes(floats)))
shorts = rng.integers(-30000, 30000, size=(6, 2), dtype=np.int16)
open(path("tab_i16.idx"), "wb").write(idx_bytes(shorts))
open(path("tab_labels4.idx"), "wb").write(idx_bytes(labels[:4]))
whole = idx_bytes(images)
open(path("tab_truncated-images-idx3-ubyte"), "wb").write(whole[:16 + 12 * 3 + 5])  # 3 whole records of 5
open(path("tab_badmagic.idx"), "wb").write(b"\x01\x00" + whole[2:])
open(path("tab_baddtype.idx"), "wb").write(whole[:2] + b"\x07" + whole[3:])
open(path("tab_badrank.idx"), "wb").write(whole[:3] + b"\x09" + whole[4:])
expected["idx"] = {
    "small_images": read_idx(open(path("tab_small-images-idx3-ubyte"), "rb").read()).reshape(5, -1).tolist(),
    "small_labels": read_idx(open(path("tab_small-labels-idx1-ubyte"), "rb").read()).tolist(),
    "f32": read_idx(gzip.decompress(open(path("tab_f32.idx"), "rb").read())).astype(np.float64).reshape(4, -1).tolist(),
    "i16": read_idx(open(path("tab_i16.idx"), "rb").read()).tolist(),
}
fashion = {}
for part in ("train", "t10k"):
    img_path = os.path.join(FASHION, part + "-images-idx3-ubyte.gz")
    lab_path = os.path.join(FASHION, part + "-labels-idx1-ubyte.gz")
    if not os.path.exists(img_path):
        continue
    imgs = read_idx(gzip.open(img_path).read())
    labs = read_idx(gzip.open(lab_path).read())
    fashion[part] = {
        "count": int(imgs.shape[0]),
        "shape": list(imgs.shape[1:]),
        "label_counts": np.bincount(labs, minlength=10).tolist(),
        "first_label": int(labs[0]),
        "first_image_sum": int(imgs[0].astype(np.int64).sum()),
        "first_image_row14": imgs[0][14].tolist(),
        "pixel_sum": int(imgs.astype(np.int64).sum()),
    }
expected["fashion_mnist"] = fashion

# ------------------------------------------------------------------ CSV
# Written with Python's csv module (CRLF line ends, minimal quoting), read back with it for the
# expected values. Types as the reader infers them: id int64, name string, score float, flag bool.
rows = [
    [1, "plain", 0.5, "true"],
    [2, "with, comma", -1.25, "false"],
    [3, "line\nbreak", 1e-3, "True"],
    [4, 'doubled "quotes"', "", "FALSE"],
    [5, "", 3.0, "true"],
    [-6, "NA", "NaN", ""],
    [9007199254740993, "  spaced  ", 12345.678, "false"],
]
buf = io.StringIO(newline="")
w = csv.writer(buf)
w.writerow(["id", "name", "score", "flag"])
w.writerows(rows)
text = buf.getvalue()
assert text.endswith("\r\n")
text = text[:-2]  # the last line has no line end
open(path("tab_quotes.csv"), "w", newline="").write(text)
back = list(csv.reader(io.StringIO(text, newline="")))
missing = {"", "NA", "NaN", "null"}


def typed(v, kind):
    if v in missing:
        return None
    return {"int64": int, "float": float, "string": str, "bool": lambda s: s.lower() == "true"}[kind](v)


kinds = ["int64", "string", "float", "bool"]
expected["csv_quotes"] = {
    "columns": back[0],
    "dtypes": kinds,
    "rows": [[typed(v, k) for v, k in zip(r, kinds)] for r in back[1:]],
    "offsets": [],
}
# byte offsets of the data rows: where each row's first byte is
raw = text.encode()
offsets, pos = [], raw.index(b"\r\n") + 2
for r in back[1:]:
    offsets.append(pos)
    b = io.StringIO(newline="")
    csv.writer(b).writerow(r)
    pos += len(b.getvalue().encode())
expected["csv_quotes"]["offsets"] = offsets

# a BOM, ';' as the delimiter, LF line ends, no header
buf = io.StringIO(newline="")
w = csv.writer(buf, delimiter=";", lineterminator="\n")
semi = [["a;b", 1, 2.5], ["c", 2, -0.125], ["d\"e", 3, 7.0]]
w.writerows(semi)
open(path("tab_semicolon.csv"), "w", encoding="utf-8-sig", newline="").write(buf.getvalue())
back = list(csv.reader(io.open(path("tab_semicolon.csv"), encoding="utf-8-sig", newline=""), delimiter=";"))
expected["csv_semicolon"] = {"rows": [[r[0], int(r[1]), float(r[2])] for r in back]}

# bad rows among good ones, for the quarantine: x,y,label with x int, y float
good = [[i, i * 0.25, "r%d" % i] for i in range(20)]
lines = ["x,y,label"]
bad_rows = {}
for i, r in enumerate(good):
    lines.append("%d,%r,%s" % tuple(r))
    if i == 3:
        bad_rows[len(lines)] = "expected 3 fields, found 2"
        lines.append("99,1.5")  # too few fields
    if i == 7:
        bad_rows[len(lines)] = "expected 3 fields, found 4"
        lines.append("99,1.5,a,b")  # too many
    if i == 11:
        bad_rows[len(lines)] = "column 'x': 'twelve' is not a valid int64"
        lines.append("twelve,1.5,a")  # not an int64
    if i == 15:
        bad_rows[len(lines)] = "longer than max_line_bytes"
        lines.append("1,2," + "z" * 300)  # over-long (the test sets max_line_bytes 100)
bad_rows[len(lines)] = "unterminated quoted field"
lines.append('5,6,"never closed\nat the end')
open(path("tab_bad.csv"), "w", newline="").write("\n".join(lines))
# data row numbers (header excluded) of the bad rows; a multi-line tail counts as one row
expected["csv_bad"] = {
    "good": [[r[0], r[1], r[2]] for r in good],
    "bad": sorted([[k - 1, v] for k, v in bad_rows.items()]),
    "max_line_bytes": 100,
}

# ------------------------------------------------------------------ NPY / NPZ
arrays = {
    "tab_f32.npy": rng.standard_normal((5, 3)).astype(np.float32),
    "tab_i64.npy": np.array([1, -2, 3, 2**62], dtype=np.int64),
    "tab_u8_3d.npy": rng.integers(0, 256, size=(3, 2, 2), dtype=np.uint8),
    "tab_bool.npy": np.array([[True, False], [False, False], [True, True], [False, True]]),
    "tab_str.npy": np.array(["a", "héllo", "", "xyz"]),
    "tab_f64.npy": rng.standard_normal((2, 2, 2)),
}
for name, a in arrays.items():
    np.save(path(name), a)
with open(path("tab_f64_v2.npy"), "wb") as f:
    np.lib.format.write_array(f, arrays["tab_f64.npy"], version=(2, 0))
np.save(path("tab_fortran.npy"), np.asfortranarray(rng.standard_normal((3, 4)).astype(np.float32)))
whole = open(path("tab_f32.npy"), "rb").read()
open(path("tab_truncated.npy"), "wb").write(whole[:-12])  # 4 whole rows of 5 are left
members = {"x": rng.standard_normal((6, 2)).astype(np.float32), "y": np.arange(6, dtype=np.int64) * 10,
           "name": np.array(["r%d" % i for i in range(6)])}
np.savez(path("tab_stored.npz"), **members)
np.savez_compressed(path("tab_deflated.npz"), **members)
np.savez(path("tab_mismatch.npz"), a=np.zeros(5, np.float32), b=np.zeros(4, np.float32))
with zipfile.ZipFile(path("tab_stored.npz")) as z:
    assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())


def as_json(a):
    if a.dtype.kind == "f":
        return a.astype(np.float64).tolist()
    return a.tolist()


expected["npy"] = {name: {"dtype": str(a.dtype), "shape": list(a.shape), "values": as_json(np.load(path(name)))}
                   for name, a in arrays.items()}
loaded = np.load(path("tab_stored.npz"))
expected["npz"] = {"order": list(loaded.files),
                   "members": {k: {"dtype": str(loaded[k].dtype), "shape": list(loaded[k].shape),
                                   "values": as_json(loaded[k])} for k in loaded.files}}

with open(path("tabular_expected.json"), "w") as f:
    json.dump(expected, f, indent=1, sort_keys=True)
    f.write("\n")
