import json

import numpy as np
import pytest

from livedenoise.stream.protocols.frames import (
    ControlMessage, FrameHeader, FrameMessage, ProtocolError, decode, encode_control, encode_frame,
)


def test_frame_round_trip_keeps_pixels_and_fields():
    img = np.arange(12, dtype=np.int16).reshape(3, 4)
    hdr = FrameHeader(frame=7, t=0.25, shape=(3, 4), dtype="int16", channel=2, plane=3, source="test",
                      extra={"lag": 1})
    msg = decode(encode_frame(hdr, img))
    assert isinstance(msg, FrameMessage)
    assert msg.header.frame == 7 and msg.header.stream == (2, 3) and msg.header.extra == {"lag": 1}
    assert np.array_equal(msg.pixels, img)


def test_fortran_order_payload_is_read_as_lines_by_pixels():
    img = np.arange(12, dtype=np.uint16).reshape(3, 4)
    parts = [b"frame", json.dumps({"v": 1, "frame": 0, "t": 0, "shape": [3, 4], "dtype": "uint16",
                                    "order": "F"}).encode(), img.tobytes(order="F")]
    assert np.array_equal(decode(parts).pixels, img)


@pytest.mark.parametrize("parts", [
    [b"frame", b"{not json", b""],
    [b"frame", b"{}"],
    [b"frame", json.dumps({"frame": 0, "shape": [2, 2], "dtype": "int16"}).encode(), b"\0" * 7],
    [b"frame", json.dumps({"frame": 0, "shape": [2, 2], "dtype": "int64"}).encode(), b"\0" * 32],
    [b"frame", json.dumps({"frame": -1, "shape": [2, 2], "dtype": "int16"}).encode(), b"\0" * 8],
    [b"bogus", b"{}"],
    [],
])
def test_malformed_messages_raise_protocol_error(parts):
    with pytest.raises(ProtocolError):
        decode(parts)


def test_control_message_round_trip():
    msg = decode(encode_control("start", {"frame_rate": 30.0}))
    assert msg == ControlMessage("start", {"v": 1, "frame_rate": 30.0})


# ---------------------------------------------------------------- limits of every field (docs/protocol.md)
from livedenoise.stream.protocols import edge  # noqa: E402
from livedenoise.stream.protocols.frames import MAX_CHANNEL, MAX_FRAME, MAX_PIXELS, MAX_PLANE  # noqa: E402


def _frame(payload: bytes | None = None, **fields):
    h = {"v": 1, "frame": 3, "t": 0.1, "shape": [2, 3], "dtype": "int16", "channel": 1, "plane": 1}
    h.update(fields)
    h = {k: v for k, v in h.items() if v is not _DROP}
    return [b"frame", json.dumps(h).encode(), b"\0" * 12 if payload is None else payload]


_DROP = object()


def test_protocol_error_is_the_edge_class():
    assert ProtocolError is edge.ProtocolError


@pytest.mark.parametrize("fields", [
    {"frame": 0}, {"frame": MAX_FRAME}, {"frame": 7.0}, {"channel": 0}, {"channel": MAX_CHANNEL},
    {"plane": 0}, {"plane": MAX_PLANE}, {"t": -1.5}, {"t": 1e300}, {"source": "x" * 256},
    {"channel": _DROP, "plane": _DROP, "t": _DROP, "v": _DROP}, {"order": "F"}, {"extra": {"a": [1, 2]}},
])
def test_values_at_the_limits_are_accepted(fields):
    msg = decode(_frame(**fields))
    assert isinstance(msg, FrameMessage)


@pytest.mark.parametrize("fields, why", [
    ({"frame": MAX_FRAME + 1}, "frame"),
    ({"frame": 2**63}, "int64"),
    ({"frame": -1}, "frame"),
    ({"frame": 1.5}, "frame"),
    ({"frame": "3"}, "frame"),
    ({"frame": True}, "frame"),
    ({"frame": _DROP}, "missing"),
    ({"channel": MAX_CHANNEL + 1}, "channel"),
    ({"channel": 2**64}, "int64"),
    ({"channel": -1}, "channel"),
    ({"plane": MAX_PLANE + 1}, "plane"),
    ({"plane": [1]}, "plane"),
    ({"t": "0.1"}, "'t'"),
    ({"t": None}, "'t'"),
    ({"source": "x" * 257}, "source"),
    ({"source": 5}, "source"),
    ({"v": 2}, "version"),
    ({"v": "1"}, "version"),
    ({"shape": [0, 3]}, "shape"),
    ({"shape": [2, 3, 1]}, "shape"),
    ({"shape": [32769, 1]}, "shape"),
    ({"shape": [8192, 4096]}, "pixels"),  # each side fine, the product is not
    ({"shape": [2.5, 3]}, "shape"),
    ({"dtype": "int64"}, "dtype"),
    ({"dtype": ["int16"]}, "dtype"),
    ({"order": "X"}, "order"),
    ({"order": 1}, "order"),
])
def test_each_field_out_of_range_or_mistyped_is_malformed_with_a_reason(fields, why):
    with pytest.raises(ProtocolError, match=why):
        decode(_frame(**fields))


def test_a_shape_beyond_the_pixel_limit_is_refused_before_the_payload_is_looked_at():
    side = int(MAX_PIXELS ** 0.5) + 1
    with pytest.raises(ProtocolError, match="pixels"):
        decode(_frame(payload=b"", shape=[side, side]))


@pytest.mark.parametrize("raw, why", [
    (b'{"frame": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "bytes"),
    (b'{"frame": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", "deeper"),
    (b'{"frame": ' + b"{\"a\": " * 17 + b"1" + b"}" * 17 + b"}", "deeper"),
    (b'{"frame": ' + b"9" * 5000 + b"}", "int64|bytes"),
    (b'{"frame": 1, "t": NaN}', "finite"),
    (b'{"frame": 1, "t": Infinity}', "finite"),
    (b'{"frame": 1, "t": -Infinity}', "finite"),
    (b'{"frame": 1, "t": 1e999}', "finite"),
    (b'{"frame": 1, "pad": "' + b"x" * (70 * 1024) + b'"}', "bytes"),
    (b"\xff\xfe{}", "UTF-8"),
])
def test_hostile_headers_are_refused_before_or_while_parsing(raw, why):
    with pytest.raises(ProtocolError, match=why):
        decode([b"frame", raw, b"\0" * 12])


@pytest.mark.parametrize("topic", [b"start", b"stop"])
@pytest.mark.parametrize("body, why", [
    ({"v": 2}, "version"),
    ({"v": 0}, "version"),
    ({"v": None}, "version"),
    ({"v": 1, "pad": 9 * 10**30}, None),  # an int of 31 digits: beyond int64
])
def test_start_and_stop_check_the_version_and_every_number(topic, body, why):
    raw = json.dumps(body).encode()
    with pytest.raises(ProtocolError, match=why):
        decode([topic, raw])


@pytest.mark.parametrize("meta, why", [
    ({"frame_step": 0}, "frame_step"),
    ({"frame_step": 2**17}, "frame_step"),
    ({"frame_step": "3"}, "frame_step"),
    ({"frame_step": 1.5}, "frame_step"),
    ({"frame_rate": -1}, "frame_rate"),
    ({"frame_rate": "fast"}, "frame_rate"),
    ({"frame_size": [-1, 512]}, "frame_size"),
    ({"frame_size": [40000, 512]}, "frame_size"),
    ({"shape": 512}, "shape"),
    ({"channels": [1, 999]}, "channels"),
    ({"channels": 2}, "channels"),
    ({"planes": -1}, "planes"),
    ({"frames": 2**63}, "int64"),
    ({"source": "s" * 1000}, "source"),
])
def test_start_fields_are_validated(meta, why):
    with pytest.raises(ProtocolError, match=why):
        decode(encode_control("start", meta))


def test_a_scanimage_start_with_nulls_is_accepted():
    meta = {"source": "scanimage", "frame_rate": 29.9, "volume_rate": None, "shape": [512, 512], "channels": [1, 2],
            "published_channels": [1], "planes": 3, "z": [0, 10, 20], "frame_step": 4, "zoom": 2.0, "dtype": "int16",
            "mode": "focus", "endpoint": "tcp://127.0.0.1:5570", "frames": None}
    assert decode(encode_control("start", {**meta, "shape": [0, 0], "frame_rate": 0}))  # not known yet: fine
    msg = decode(encode_control("start", meta))
    assert msg.meta["frame_step"] == 4
