"""Fuzz of the frame protocol's decoder: whatever the bytes, only ProtocolError may escape `decode`.

A seeded generator (thousands of random and mutated messages: random bytes, truncated, deep and huge JSON,
hostile literals, wrong types, out-of-range values, wrong payload sizes, flipped bytes) and hypothesis
(arbitrary part lists, arbitrary JSON values in every field). Bounded example counts: a few seconds.
"""

import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livedenoise.stream.protocols.frames import (
    MAX_CHANNEL, MAX_FRAME, MAX_PLANE, ControlMessage, FrameMessage, ProtocolError, decode,
)
from tests.stream.streamkit import hostile_message, valid_frame


def _check(parts):
    """decode() returns a valid message or raises ProtocolError: anything else fails the test."""
    try:
        msg = decode(parts)
    except ProtocolError as exc:
        assert str(exc)  # always a reason
        return None
    if isinstance(msg, FrameMessage):
        h = msg.header
        assert 0 <= h.frame <= MAX_FRAME and 0 <= h.channel <= MAX_CHANNEL and 0 <= h.plane <= MAX_PLANE
        assert np.isfinite(h.t) and msg.pixels.shape == h.shape and not msg.pixels.flags.writeable
    else:
        assert isinstance(msg, ControlMessage) and msg.meta.get("v", 1) == 1
    return msg


def test_seeded_fuzz_of_decode_only_raises_protocol_error():
    rng = np.random.default_rng(20240612)
    outcomes = {"bad": 0, "frame": 0, "control": 0}
    for _ in range(6000):
        msg = _check(hostile_message(rng))
        outcomes["bad" if msg is None else "frame" if isinstance(msg, FrameMessage) else "control"] += 1
    assert outcomes["bad"] > 3000 and outcomes["frame"] > 50 and outcomes["control"] > 50, outcomes  # a real mix


def test_valid_frames_decode_to_their_pixels():
    rng = np.random.default_rng(1)
    for k in range(200):
        parts = valid_frame(rng, k, k % 3, k % 5)
        msg = decode(parts)
        assert msg.header.frame == k and msg.pixels.tobytes() == parts[2]


_json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
    max_leaves=8,
)
_field = st.sampled_from(["v", "frame", "t", "channel", "plane", "shape", "dtype", "order", "source", "x"])


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(_field, _json_value, max_size=9), st.binary(max_size=64),
       st.sampled_from([b"frame", b"start", b"stop", b"stats"]))
def test_any_json_in_any_field_only_raises_protocol_error(header, payload, topic):
    raw = json.dumps(header).encode()
    _check([topic, raw, payload])
    _check([topic, raw])


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.binary(max_size=64), max_size=5))
def test_any_bytes_only_raise_protocol_error(parts):
    _check(parts)
    _check([b"frame", *parts])
