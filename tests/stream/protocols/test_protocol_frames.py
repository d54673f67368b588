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
