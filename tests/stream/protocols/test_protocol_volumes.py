"""Volumes on the imaging wire protocol: `shape` [H, W] plus `depth` D, validated at the edge; frames without
`depth` are unchanged."""

import json

import numpy as np
import pytest

from livedenoise.stream.protocols.frames import (
    MAX_DEPTH, MAX_PIXELS, FrameHeader, FrameMessage, ProtocolError, check_start, decode, encode_frame,
)


def _parts(depth, shape=(3, 4), dtype="int16", payload=None, **extra):
    h = {"frame": 0, "shape": list(shape), "dtype": dtype, **extra}
    if depth is not None:
        h["depth"] = depth
    n = int(np.prod(shape)) * (depth or 1) * 2
    return [b"frame", json.dumps(h).encode(), b"\0" * n if payload is None else payload]


def test_a_volume_round_trips_as_shape_plus_depth():
    vol = np.arange(5 * 3 * 4, dtype=np.int16).reshape(5, 3, 4)
    parts = encode_frame(FrameHeader(frame=7, t=14.0, shape=(5, 3, 4), dtype="int16"), vol)
    wire = json.loads(parts[1])
    assert wire["shape"] == [3, 4] and wire["depth"] == 5
    msg = decode(parts)
    assert isinstance(msg, FrameMessage) and msg.header.shape == (5, 3, 4) and msg.header.nbytes == vol.nbytes
    np.testing.assert_array_equal(msg.pixels, vol)
    assert not msg.pixels.flags.writeable and "depth" not in msg.header.extra
    two_d = decode(encode_frame(FrameHeader(frame=0, t=0.0, shape=(3, 4), dtype="int16"), vol[0]))
    assert two_d.header.shape == (3, 4) and "depth" not in json.loads(
        encode_frame(two_d.header, vol[0])[1])  # a 2D frame's header is what it always was


@pytest.mark.parametrize("depth, why", [(0, "depth"), (-1, "depth"), (MAX_DEPTH + 1, "depth"), (2.5, "depth"),
                                        (True, "depth"), ("4", "depth"), (None, "depth")])
def test_bad_depths_are_refused(depth, why):
    parts = [b"frame", json.dumps({"frame": 0, "shape": [3, 4], "dtype": "int16", "depth": depth}).encode(), b"\0" * 24]
    with pytest.raises(ProtocolError, match=why):
        decode(parts)


def test_the_pixel_limit_covers_the_whole_volume_before_the_payload():
    side = 1 << 11  # 2048 x 2048 is within the 2D limit ...
    assert side * side <= MAX_PIXELS
    with pytest.raises(ProtocolError, match="pixels"):  # ... but not 5 planes of it; refused before the payload
        decode(_parts(5, (side, side), payload=b""))


def test_a_payload_of_the_wrong_size_is_refused():
    with pytest.raises(ProtocolError, match="payload"):
        decode(_parts(3, payload=b"\0" * (3 * 4 * 2 * 2)))  # two planes' worth for a depth of 3
    with pytest.raises(ProtocolError, match="shape"):  # a 3-element shape is still not a shape
        decode([b"frame", json.dumps({"frame": 0, "shape": [2, 3, 4], "dtype": "int16"}).encode(), b"\0" * 48])


def test_start_fields_of_a_volume_stream():
    assert check_start({"depth": 36, "tr": 2.0, "frame_size": [44, 36]})["tr"] == 2.0
    for bad in ({"depth": -1}, {"depth": MAX_DEPTH + 1}, {"tr": "2"}, {"tr": -1.0}):
        with pytest.raises(ProtocolError):
            check_start(bad)
