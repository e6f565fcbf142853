#!/usr/bin/python3
"""kiln's TensorBoard event files, read by an independent reader (tfevents.py: CRC-32C and the
protobuf wire format from the specs) and cross-checked with google.protobuf messages built from
TensorFlow's field numbers. The file comes from the writer's unit test, which writes its known
events into the directory it is given.

    test_train_events.py TEST_TRAIN_EVENTS_BINARY
"""
import math
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tfevents  # noqa: E402

WRITER = None

# The table tests/unit/test_train_events.c writes: every tag at every step.
TAGS = ["loss", "accuracy", "learning_rate", "samples_per_s", "val/\u03c4"]
STEPS = [0, 1, 2, 1 << 40, -1]
VALUES = [
    [2.5, 0.0, 1e-3, 12345.678, -7.25],
    [1.25, 0.5, 1e-3, 0.0, 1e-45],
    [0.75, 0.875, 5e-4, 3.4028235e38, -0.0],
    [0.0, 1.0, 1e-4, 1e6, 100.0],
    [math.nan, math.inf, -math.inf, 0.0, 0.0],
]


def f32_bits(x):
    """The float32 a C literal of x denotes, as bytes (NaN and -0.0 compare bitwise)."""
    return struct.pack("<f", x)


def event_class():
    """tensorflow.Event built with google.protobuf from TensorFlow's field numbers (not kiln's .proto)."""
    f = descriptor_pb2.FileDescriptorProto(name="tb_events_test.proto", package="tbtest", syntax="proto3")
    T = descriptor_pb2.FieldDescriptorProto
    summary = f.message_type.add(name="Summary")
    value = summary.nested_type.add(name="Value")
    value.oneof_decl.add(name="value")
    value.field.add(name="tag", number=1, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
    value.field.add(name="simple_value", number=2, type=T.TYPE_FLOAT, label=T.LABEL_OPTIONAL, oneof_index=0)
    summary.field.add(name="value", number=1, type=T.TYPE_MESSAGE, label=T.LABEL_REPEATED,
                      type_name=".tbtest.Summary.Value")
    event = f.message_type.add(name="Event")
    event.oneof_decl.add(name="what")
    event.field.add(name="wall_time", number=1, type=T.TYPE_DOUBLE, label=T.LABEL_OPTIONAL)
    event.field.add(name="step", number=2, type=T.TYPE_INT64, label=T.LABEL_OPTIONAL)
    event.field.add(name="file_version", number=3, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL, oneof_index=0)
    event.field.add(name="summary", number=5, type=T.TYPE_MESSAGE, label=T.LABEL_OPTIONAL, oneof_index=0,
                    type_name=".tbtest.Summary")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    desc = pool.FindMessageTypeByName("tbtest.Event")
    get = getattr(message_factory, "GetMessageClass", None)
    return get(desc) if get else message_factory.MessageFactory(pool).GetPrototype(desc)


class TrainEvents(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln_events_")
        cls.dir = os.path.join(cls.tmp, "runs", "seed")
        cls.t0 = time.time()
        proc = subprocess.Popen([WRITER, cls.dir], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate(timeout=60)
        cls.t1 = time.time()
        cls.pid = proc.pid
        if proc.returncode != 0:
            raise AssertionError(f"writer failed ({proc.returncode}): {err}")
        cls.path = out.strip()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_crc32c_check_value(self):
        self.assertEqual(tfevents.crc32c(b"123456789"), 0xE3069283)  # the CRC catalogue's check value
        self.assertEqual(tfevents.crc32c(b""), 0)

    def test_file_name(self):
        self.assertEqual(os.listdir(self.dir), [os.path.basename(self.path)])
        self.assertEqual(os.path.dirname(self.path), self.dir)
        m = re.fullmatch(r"events\.out\.tfevents\.(\d+)\.(.+)\.(\d+)\.(\d+)", os.path.basename(self.path))
        self.assertIsNotNone(m, self.path)
        self.assertTrue(int(self.t0) <= int(m.group(1)) <= self.t1)
        self.assertEqual(m.group(2), socket.gethostname())
        self.assertEqual(int(m.group(3)), self.pid)

    def test_events(self):
        records = tfevents.read_records(self.path)
        first = tfevents.decode_event(records[0])
        self.assertEqual(first["file_version"], "brain.Event:2")
        events = tfevents.read_events(self.path)
        self.assertEqual(len(events), len(STEPS) * len(TAGS))  # one event per tag
        for i, (step, wall_time, scalars) in enumerate(events):
            s, t = divmod(i, len(TAGS))
            self.assertEqual(step, STEPS[s])
            self.assertTrue(self.t0 - 0.01 <= wall_time <= self.t1 + 0.01, wall_time)
            self.assertEqual(list(scalars), [TAGS[t]])
            self.assertEqual(f32_bits(scalars[TAGS[t]]), f32_bits(VALUES[s][t]), (step, TAGS[t]))
        times = [first["wall_time"]] + [e[1] for e in events]
        self.assertEqual(times, sorted(times))

    def test_google_protobuf_agrees(self):
        Event = event_class()
        for data in tfevents.read_records(self.path):
            mine = tfevents.decode_event(data)
            theirs = Event.FromString(data)
            self.assertEqual(theirs.step, mine["step"])
            self.assertEqual(theirs.wall_time, mine["wall_time"])
            if theirs.WhichOneof("what") == "file_version":
                self.assertEqual(theirs.file_version, mine["file_version"])
            else:
                self.assertEqual(theirs.WhichOneof("what"), "summary")
                got = [(v.tag, f32_bits(v.simple_value)) for v in theirs.summary.value]
                self.assertEqual(got, [(tag, f32_bits(v)) for tag, v in mine["values"]])

    def test_reader_rejects_damage(self):
        with open(self.path, "rb") as f:
            good = f.read()
        (first_len,) = struct.unpack_from("<Q", good, 0)
        second = 16 + first_len
        cases = {
            "truncated record header": good[: second + 5],
            "truncated record at byte": good[:-1],
            "length CRC mismatch at byte %d" % second: good[:second] + bytes([good[second] ^ 1]) + good[second + 1 :],
            "data CRC mismatch in the record at byte %d" % second:
                good[: second + 14] + bytes([good[second + 14] ^ 0x40]) + good[second + 15 :],
        }
        for want, data in cases.items():
            bad = os.path.join(self.tmp, "damaged")
            with open(bad, "wb") as f:
                f.write(data)
            with self.assertRaisesRegex(ValueError, re.escape(want)):
                tfevents.read_events(bad)


if __name__ == "__main__":
    WRITER = sys.argv.pop(1)
    unittest.main()
