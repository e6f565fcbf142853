"""An independent reader of TensorBoard event files (no kiln code): TFRecord framing with masked
CRC-32C written here from the spec, and the tensorflow.Event / Summary wire format decoded by hand
with the field numbers of TensorFlow's event.proto and summary.proto.

    read_events(path) -> [(step, wall_time, {tag: simple_value}), ...]
"""
import struct

# TensorFlow's field numbers (tensorflow/core/util/event.proto, tensorflow/core/framework/summary.proto)
EVENT_WALL_TIME, EVENT_STEP, EVENT_FILE_VERSION, EVENT_SUMMARY = 1, 2, 3, 5
SUMMARY_VALUE = 1
VALUE_TAG, VALUE_SIMPLE_VALUE = 1, 2

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


def _crc32c_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data):
    """CRC-32C (Castagnoli, reflected): crc32c(b"123456789") == 0xE3069283."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data):
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(path):
    """The data of every record, both CRCs checked; ValueError names the offset of what is wrong."""
    with open(path, "rb") as f:
        buf = f.read()
    records, at = [], 0
    while at < len(buf):
        if len(buf) - at < 12:
            raise ValueError(f"{path}: truncated record header at byte {at}")
        (length,) = struct.unpack_from("<Q", buf, at)
        (length_crc,) = struct.unpack_from("<I", buf, at + 8)
        if length_crc != masked_crc(buf[at : at + 8]):
            raise ValueError(f"{path}: length CRC mismatch at byte {at}")
        if len(buf) - at - 16 < length:
            raise ValueError(f"{path}: truncated record at byte {at}: {length} data bytes announced")
        data = buf[at + 12 : at + 12 + length]
        (data_crc,) = struct.unpack_from("<I", buf, at + 12 + length)
        if data_crc != masked_crc(data):
            raise ValueError(f"{path}: data CRC mismatch in the record at byte {at}")
        records.append(data)
        at += 16 + length
    return records


def _varint(buf, at):
    value, shift = 0, 0
    while True:
        if at >= len(buf) or shift > 63:
            raise ValueError("truncated or overlong varint")
        b = buf[at]
        value |= (b & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not b & 0x80:
            return value, at


def _fields(buf):
    """(field number, wire type, value) of each field; LENGTH values are bytes."""
    at = 0
    while at < len(buf):
        key, at = _varint(buf, at)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, at = _varint(buf, at)
        elif wire == FIXED64:
            value, at = buf[at : at + 8], at + 8
        elif wire == FIXED32:
            value, at = buf[at : at + 4], at + 4
        elif wire == LENGTH:
            n, at = _varint(buf, at)
            value, at = buf[at : at + n], at + n
        else:
            raise ValueError(f"field {number}: unsupported wire type {wire}")
        if at > len(buf):
            raise ValueError(f"field {number}: truncated")
        yield number, wire, value


def _expect(number, wire, want):
    if wire != want:
        raise ValueError(f"field {number}: wire type {wire}, expected {want}")


def decode_value(buf):
    """Summary.Value -> (tag, simple_value or None)."""
    tag, simple = "", None
    for number, wire, value in _fields(buf):
        if number == VALUE_TAG:
            _expect(number, wire, LENGTH)
            tag = value.decode("utf-8")
        elif number == VALUE_SIMPLE_VALUE:
            _expect(number, wire, FIXED32)
            (simple,) = struct.unpack("<f", value)
    return tag, simple


def decode_event(buf):
    """Event -> {"wall_time", "step", "file_version" (or None), "values": [(tag, simple_value), ...]}."""
    event = {"wall_time": 0.0, "step": 0, "file_version": None, "values": []}
    for number, wire, value in _fields(buf):
        if number == EVENT_WALL_TIME:
            _expect(number, wire, FIXED64)
            (event["wall_time"],) = struct.unpack("<d", value)
        elif number == EVENT_STEP:
            _expect(number, wire, VARINT)
            event["step"] = value - (1 << 64) if value >= 1 << 63 else value  # int64: two's complement
        elif number == EVENT_FILE_VERSION:
            _expect(number, wire, LENGTH)
            event["file_version"] = value.decode("utf-8")
        elif number == EVENT_SUMMARY:
            _expect(number, wire, LENGTH)
            for n, w, v in _fields(value):
                if n == SUMMARY_VALUE:
                    _expect(n, w, LENGTH)
                    event["values"].append(decode_value(v))
    return event


def read_events(path):
    """The scalar events of a file whose first event is a file_version "brain.Event:...":
    [(step, wall_time, {tag: simple_value})] in file order."""
    events = [decode_event(r) for r in read_records(path)]
    if not events or not (events[0]["file_version"] or "").startswith("brain.Event:"):
        raise ValueError(f"{path}: the first event is not a file_version brain.Event:N")
    out = []
    for e in events[1:]:
        scalars = {tag: v for tag, v in e["values"] if v is not None}
        if scalars:
            out.append((e["step"], e["wall_time"], scalars))
    return out
