#!/usr/bin/python3
"""Writes the TFRecord fixtures of tests/unit/test_data_tfrecord.c into tests/data/data/tfrecord/
and seeds for the fuzz target into tests/fuzz/corpus/tfrecord/.

An independent writer: TFRecord framing with struct and a table-driven CRC-32C of its own, and
tf.train.Example encoded by hand in the protobuf wire format (TensorFlow is not installed). The
expected reader output (expected.json) is computed here from the Python values by TensorFlow's
rules: features sorted by name, the last of duplicate keys wins, float_list -> float32 values,
int64_list -> int64 (written as decimal strings, beyond a double's precision), a bytes_list of
UTF-8 text without NUL -> strings, else its single value -> uint8 bytes; a Feature without a list
is a missing value (null).

    /usr/bin/python3 tests/data/make_data_fixtures_tfrecord.py
"""
import gzip
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "data", "tfrecord")
FUZZ = os.path.join(HERE, "..", "fuzz", "corpus", "tfrecord")

# ---------------------------------------------------------------- CRC-32C, framing


def _crc_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


CRC_TABLE = _crc_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


def masked(data):
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(data):
    head = struct.pack("<Q", len(data))
    return head + struct.pack("<I", masked(head)) + data + struct.pack("<I", masked(data))


# ---------------------------------------------------------------- protobuf wire format


def varint(v):
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(number, wire_type, payload):
    return varint(number << 3 | wire_type) + payload


def ldelim(number, data):
    return field(number, 2, varint(len(data)) + data)


def f32(v):
    return struct.unpack("<f", struct.pack("<f", v))[0]


def encode_feature(kind, values, packed=True):
    """A tf.train.Feature: kind is 'float', 'int64', 'bytes' or None (no list set)."""
    if kind is None:
        return b""
    if kind == "bytes":
        return ldelim(1, b"".join(ldelim(1, v) for v in values))
    if kind == "float":
        if packed:
            body = ldelim(1, b"".join(struct.pack("<f", v) for v in values)) if values else b""
        else:
            body = b"".join(field(1, 5, struct.pack("<f", v)) for v in values)
        return ldelim(2, body)
    if packed:
        body = ldelim(1, b"".join(varint(v) for v in values)) if values else b""
    else:
        body = b"".join(field(1, 0, varint(v)) for v in values)
    return ldelim(3, body)


def encode_example(entries):
    """entries: a list of (name, kind, values[, packed]) in wire order (duplicates allowed)."""
    body = b""
    for e in entries:
        name, kind, values = e[:3]
        packed = e[3] if len(e) > 3 else True
        entry = ldelim(1, name.encode()) + ldelim(2, encode_feature(kind, values, packed))
        body += ldelim(1, entry)
    return ldelim(1, body)


# ---------------------------------------------------------------- what a reader returns


def is_text(v):
    if b"\0" in v:
        return False
    try:
        v.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def expected_features(entries):
    """The reader's view: [name, dtype, shape, values] sorted by name (values None: missing)."""
    last = {}
    for e in entries:
        last[e[0]] = (e[1], e[2])
    out = []
    for name in sorted(last, key=lambda n: n.encode()):
        kind, values = last[name]
        if kind is None:
            out.append([name, None, None, None])
        elif kind == "float":
            out.append([name, "float", [len(values)], [f32(v) for v in values]])
        elif kind == "int64":
            out.append([name, "int64", [len(values)], [str(v) for v in values]])
        elif all(is_text(v) for v in values):
            out.append([name, "string", [len(values)], [v.decode() for v in values]])
        else:
            assert len(values) == 1
            out.append([name, "uint8", [len(values[0])], list(values[0])])
    return out


def rewritten_entries(entries):
    """What kiln's writer makes of the reader's record: sorted, deduplicated, missing values left out."""
    out = []
    for name, dtype, shape, values in expected_features(entries):
        if dtype is None:
            continue
        if dtype == "float":
            out.append((name, "float", values))
        elif dtype == "int64":
            out.append((name, "int64", [int(v) for v in values]))
        elif dtype == "string":
            out.append((name, "bytes", [v.encode() for v in values]))
        else:
            out.append((name, "bytes", [bytes(values)]))
    return out


# ---------------------------------------------------------------- the records

GOOD = [
    [("label", "int64", [3]), ("weights", "float", [0.5, -1.25, 3.0e-3]), ("name", "bytes", [b"hello"]),
     ("image_raw", "bytes", [bytes([0, 1, 2, 255, 128, 7])])],
    [("weights", "float", [1.0, 2.0, 1.0e30]), ("label", "int64", [-7]),
     ("name", "bytes", ["h\u00e9llo w\u00f6rld".encode()]), ("image_raw", "bytes", [b"\x89PNG\r\n\x1a\n\0"])],
    [("tags", "bytes", [b"a", b"", b"ccc"]), ("score", "float", []),
     ("ids", "int64", [-1, 1 << 40, -(1 << 63), (1 << 63) - 1])],
    # unpacked repeated scalars, a duplicate key (the last wins) and a Feature with no list
    [("x", "float", [9.0]), ("y", "int64", [5, 6], False), ("x", "float", [1.5, 2.5], False), ("empty", None, [])],
    [],  # an Example with no features
]
EXAMPLES = [encode_example(r) for r in GOOD]

GARBAGE = b"\x0a\xff\xff\xff\xff\x0f"  # field 1, length 2^32-1: runs past the end
MULTI_BINARY = encode_example([("blobs", "bytes", [b"\xff\x00", b"\x01\xfe"])])

# what the writer test builds in C, in record order (see test_writer_dtypes)
WRITER_TYPES = encode_example([
    ("d", "float", [0.25, -2.0]),
    ("i32", "int64", [-5, 70000]),
    ("flag", "int64", [1, 0, 1]),
    ("raw", "bytes", [bytes([0, 200, 3, 4])]),
    ("s", "bytes", [b"caf\xc3\xa9", b"x"]),
    ("h", "float", [1.5]),
    ("small", "int64", [250]),
])


def write(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


def main():
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(FUZZ, exist_ok=True)
    frames = [frame(e) for e in EXAMPLES]
    offsets = []
    at = 0
    for fr in frames:
        offsets.append(at)
        at += len(fr)
    good = b"".join(frames)
    write("good.tfrecord", good)
    # two gzip members, the second starting mid-record: one stream, as tf.data reads it
    half = len(good) // 2
    write("good.tfrecord.gz", gzip.compress(good[:half], mtime=0) + gzip.compress(good[half:], mtime=0))

    bad_crc = bytearray(frames[1])
    bad_crc[-1] ^= 0x01
    write("bad_data_crc.tfrecord", frames[0] + bytes(bad_crc) + frames[2])

    bad_len = bytearray(frames[1])
    bad_len[8] ^= 0x40
    bad_len_file = frames[0] + bytes(bad_len) + frames[2]
    write("bad_length_crc.tfrecord", bad_len_file)

    write("truncated.tfrecord", frames[0] + frames[1] + frames[2][:-5])
    write("truncated_header.tfrecord", frames[0] + frames[1][:7])
    garbage = [frames[0], frame(GARBAGE), frame(MULTI_BINARY), frames[1]]
    write("garbage_example.tfrecord", b"".join(garbage))

    rewrite = [frame(encode_example(rewritten_entries(r))) for r in GOOD]
    write("rewrite.tfrecord", b"".join(rewrite))
    write("writer_types.tfrecord", frame(WRITER_TYPES))

    expected = {
        "crc32c_123456789": crc32c(b"123456789"),
        "records": [{"index": i, "offset": offsets[i], "features": expected_features(r)} for i, r in enumerate(GOOD)],
        "rewritten": [{"index": i, "features": [f for f in expected_features(r) if f[1] is not None]}
                      for i, r in enumerate(GOOD)],
        "bad_length_crc": {"offset": offsets[1], "unread": len(bad_len_file) - offsets[1]},
        "truncated": {"offset": offsets[2]},
        "garbage_offsets": [sum(len(g) for g in garbage[:i]) for i in range(len(garbage))],
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, ensure_ascii=False)
        f.write("\n")

    # fuzz seeds: whole files, one gzip file, and raw Examples
    for name in ("good.tfrecord", "bad_length_crc.tfrecord", "garbage_example.tfrecord"):
        with open(os.path.join(OUT, name), "rb") as src, open(os.path.join(FUZZ, "seed-" + name), "wb") as dst:
            dst.write(src.read())
    with open(os.path.join(FUZZ, "seed-small.tfrecord.gz"), "wb") as f:
        f.write(gzip.compress(frames[0] + frames[3], mtime=0))
    for i, e in enumerate(EXAMPLES[:4]):
        with open(os.path.join(FUZZ, "seed-example-%d" % i), "wb") as f:
            f.write(e)
    with open(os.path.join(FUZZ, "seed-example-described"), "wb") as f:
        f.write(encode_example([("a", "float", [1.0, 2.0]), ("b", "int64", [4]), ("c", "bytes", [b"t"]),
                                ("d", "bytes", [b"\0\1\2\3"])]))


if __name__ == "__main__":
    main()
