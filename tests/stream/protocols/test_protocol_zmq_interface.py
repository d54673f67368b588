"""The ZMQ Interface format at the edge: every field validated, and nothing but ProtocolError escapes `decode`.

Hostile cases from issue 12 (NaN/Infinity, a timestamp string, deep headers,
5000-digit integers, out-of-range numbers), the limits of the module docstring,
heartbeat requests and replies, and fuzzing with hypothesis (random frames,
random JSON in every field, byte mutations of valid messages).
"""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livedenoise.stream.protocols import edge
from livedenoise.stream.protocols.zmq_interface import (
    BAD_JSON_REPLY, DATA, EVENT, HEARTBEAT_REPLY, MAX_CHANNELS, MAX_NUM_SAMPLES, DataMessage, EventMessage,
    ProtocolError, check_heartbeat_reply, decode, decode_heartbeat, encode_data, encode_ttl, heartbeat,
)

N = 4


def data_header(**over):
    content = {"stream": "ProbeA-AP", "channel_num": 3, "channel_name": "CH4", "num_samples": N,
               "sample_num": 1000, "sample_rate": 30000.0}
    head = {"message_num": 7, "type": "data", "content": content, "data_size": N * 4, "timestamp": 1700000000000}
    for k, v in over.items():
        if k in content:
            content[k] = v
        else:
            head[k] = v
    return head


def data_msg(head=None, payload=None, raw_head=None):
    h = raw_head if raw_head is not None else json.dumps(head if head is not None else data_header()).encode()
    return [DATA, h, np.arange(N, dtype="<f4").tobytes() if payload is None else payload]


def raw_header_with(field_text: str, field: str = "num_samples") -> bytes:
    """A valid header whose `field` holds literal JSON text (e.g. Infinity, a 5000-digit integer)."""
    h = json.dumps(data_header(**{field: "@@"}))
    return h.replace('"@@"', field_text).encode()


def test_protocol_error_is_the_edge_class():
    assert ProtocolError is edge.ProtocolError


def test_a_valid_message_decodes():
    m = decode(data_msg())
    assert isinstance(m, DataMessage) and (m.channel_num, m.sample_num, m.num_samples) == (3, 1000, N)
    assert m.timestamp == 1700000000000.0 and m.samples.dtype == np.float32 and not m.samples.flags.writeable
    assert decode([b"DATA", data_msg()[1], data_msg()[2]]).channel_num == 3  # envelope without the NUL
    e = decode(encode_ttl(3, "ProbeA-AP", 10, 1, True))
    assert isinstance(e, EventMessage) and e.kind == "ttl"


@pytest.mark.parametrize("parts,why", [
    # the kinds of issue 12
    (data_msg(raw_head=raw_header_with("Infinity")), "non-finite"),
    (data_msg(raw_head=raw_header_with("NaN")), "non-finite"),
    (data_msg(raw_head=raw_header_with("-Infinity", "sample_rate")), "non-finite"),
    (data_msg(raw_head=raw_header_with("1e400", "sample_rate")), "not finite"),
    (data_msg(data_header(timestamp="1700000000000")), "timestamp"),
    (data_msg(raw_head=b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"), "bytes"),
    (data_msg(raw_head=b'{"a":' + b"[" * 20_000 + b"]" * 20_000 + b"}"), "nested deeper"),
    (data_msg(raw_head=raw_header_with("[" * 17 + "]" * 17, "stream")), "nested deeper"),
    (data_msg(raw_head=raw_header_with("9" * 5000)), "integer literal"),
    (data_msg(raw_head=raw_header_with(str(2**63), "sample_num")), "int64"),
    (data_msg(raw_head=raw_header_with(str(2**64), "channel_num")), "int64"),
    # every field in its range and of its type
    (data_msg(data_header(num_samples=0, data_size=0), payload=b""), "num_samples"),
    (data_msg(data_header(num_samples=MAX_NUM_SAMPLES + 1)), "num_samples"),
    (data_msg(data_header(num_samples=4.5)), "num_samples"),
    (data_msg(data_header(num_samples=True)), "num_samples"),
    (data_msg(data_header(num_samples="4")), "num_samples"),
    (data_msg(data_header(data_size=12)), "data_size"),
    (data_msg(payload=b"\0" * 12), "payload"),
    (data_msg(payload=np.array([0, np.nan, 0, 0], "<f4").tobytes()), "NaN"),
    (data_msg(payload=np.array([0, 0, np.inf, 0], "<f4").tobytes()), "NaN"),
    (data_msg(data_header(sample_num=-1)), "sample_num"),
    (data_msg(data_header(sample_num=2**62 + 1)), "sample_num"),
    (data_msg(data_header(channel_num=MAX_CHANNELS)), "channel_num"),
    (data_msg(data_header(channel_num=-1)), "channel_num"),
    (data_msg(data_header(sample_rate=0)), "sample_rate"),
    (data_msg(data_header(sample_rate=-30000)), "sample_rate"),
    (data_msg(data_header(sample_rate=1e9)), "sample_rate"),
    (data_msg(data_header(sample_rate="30000")), "sample_rate"),
    (data_msg(data_header(timestamp=[1])), "timestamp"),
    (data_msg(data_header(message_num=-1)), "message_num"),
    (data_msg(data_header(message_num="7")), "message_num"),
    (data_msg(data_header(stream=["x"])), "stream"),
    (data_msg(data_header(stream="x" * 300)), "stream"),
    (data_msg(data_header(channel_name={"a": 1})), "channel_name"),
    (data_msg(data_header(content=[1, 2])), "content"),
    (data_msg(raw_head=b"{not json"), "JSON"),
    (data_msg(raw_head=b"[1, 2]"), "object"),
    (data_msg(raw_head=b"\xff\xfe"), "JSON"),
    (data_msg(raw_head=b" " * (65 * 1024) + b"{}"), "bytes"),
    ([DATA, data_msg()[1]], "payload"),
    ([DATA], "parts"),
    (data_msg() + [b"extra"], "parts"),
    ([b"BOGUS", b"{}", b""], "envelope"),
    ([b"DATA\0" * 1000, b"{}", b""], "envelope"),
    ([EVENT, json.dumps({"message_num": 1, "content": {"type": 3}, "data_size": 10}).encode(), b"\0" * 9], "payload"),
    ([EVENT, json.dumps({"message_num": 1, "content": {"type": 3}}).encode(), b"\0" * 11], "TTL"),
    ([EVENT, json.dumps({"message_num": 1, "content": {"type": 300}}).encode(), b""], "type"),
    ([EVENT, json.dumps({"message_num": 1, "content": {"sample_num": -5}}).encode(), b""], "sample_num"),
    ([EVENT, json.dumps({"message_num": 1, "spike": [1]}).encode(), b""], "spike"),
    ([EVENT, json.dumps({"message_num": 1}).encode(), b""], "content"),
    ([EVENT, json.dumps({"message_num": 1, "spike": {}}).encode(), b"\0" * ((1 << 20) + 1)], "event payload"),
    ([None, b"{}", b""], "undecodable|bytes"),
    ("DATA", "parts"),
])
def test_every_malformed_kind_is_a_protocol_error_with_its_reason(parts, why):
    with pytest.raises(ProtocolError, match=why):
        decode(parts)


def test_heartbeat_requests_and_replies():
    assert decode_heartbeat([heartbeat("u-1", "app")]) == ("app", "u-1")
    for bad in ([b"{"], [b"[]"], [json.dumps({"type": "other", "uuid": "x"}).encode()],
                [json.dumps({"type": "heartbeat"}).encode()], [json.dumps({"type": "heartbeat", "uuid": 5}).encode()],
                [heartbeat("x"), b"more"], [b"{" * 50 + b"}" * 50], [b'{"uuid": "' + b"x" * 5000 + b'"}'],
                [json.dumps({"type": "heartbeat", "uuid": "x" * 300}).encode()], []):
        with pytest.raises(ProtocolError):
            decode_heartbeat(bad)
    check_heartbeat_reply([HEARTBEAT_REPLY])
    for bad in ([BAD_JSON_REPLY], [HEARTBEAT_REPLY + b"!"], [HEARTBEAT_REPLY, b""], [], [b""], [b"\xff" * 10_000]):
        with pytest.raises(ProtocolError):
            check_heartbeat_reply(bad)


# --------------------------------------------------------------------------- fuzz: only ProtocolError escapes

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
FIELDS = ["message_num", "type", "data_size", "timestamp", "content", "stream", "channel_num", "channel_name",
          "num_samples", "sample_num", "sample_rate"]
LITERALS = ["NaN", "Infinity", "-Infinity", "1e999", "9" * 5000, str(2**63), "-" + "1" * 30, '"' + "x" * 2000 + '"',
            "[" * 40 + "]" * 40, "{}", "[]", "null", "true", "0.0", "-0", "1e-400"]


def _check(parts):
    try:
        m = decode(parts)
    except ProtocolError:
        return None
    # what does decode must hold the documented limits
    if isinstance(m, DataMessage):
        assert 1 <= m.num_samples <= MAX_NUM_SAMPLES and m.samples.shape == (m.num_samples,)
        assert 0 <= m.channel_num < MAX_CHANNELS and 0 <= m.sample_num <= 2**62 and 0 <= m.message_num <= 2**62
        assert np.isfinite(m.sample_rate) and m.sample_rate > 0 and np.isfinite(m.timestamp)
        assert np.isfinite(m.samples).all() and len(m.stream) <= 256 and len(m.channel_name) <= 256
    return m


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@FUZZ
@given(st.lists(st.binary(max_size=300), min_size=0, max_size=5))
def test_fuzz_random_frames(parts):
    _check(parts)


@FUZZ
@given(st.sampled_from([DATA, EVENT, b"DATA", b"EVENT"]), st.sampled_from(FIELDS), JSON_VALUES, st.binary(max_size=40))
def test_fuzz_a_field_holds_any_json(env, field, value, payload):
    head = data_header()
    if field in head["content"]:
        head["content"][field] = value
    else:
        head[field] = value
    _check([env, json.dumps(head).encode(), payload])
    _check([env, json.dumps(head).encode(), np.arange(N, dtype="<f4").tobytes()])
    _check([env, json.dumps(value).encode()] + ([payload] if payload else []))


@FUZZ
@given(st.sampled_from(FIELDS), st.sampled_from(LITERALS))
def test_fuzz_a_field_holds_a_hostile_literal(field, literal):
    _check(data_msg(raw_head=raw_header_with(literal, field) if field in data_header()["content"]
                    else json.dumps(data_header(**{field: "@@"})).replace('"@@"', literal).encode()))


@FUZZ
@given(st.binary(min_size=1, max_size=8), st.integers(0, 400), st.sampled_from(["flip", "insert", "delete", "cut"]))
def test_fuzz_byte_mutations_of_a_valid_message(noise, where, how):
    h = bytearray(data_msg()[1])
    i = where % len(h)
    if how == "flip":
        h[i:i + len(noise)] = bytes(a ^ b for a, b in zip(h[i:i + len(noise)], noise))
    elif how == "insert":
        h[i:i] = noise
    elif how == "delete":
        del h[i:i + len(noise)]
    else:
        h = h[:i]
    _check(data_msg(raw_head=bytes(h)))
    _check([EVENT, bytes(h), b"\0" * 10])


def test_fuzz_seeded_mutations_of_every_message_kind():
    """Thousands of deterministic mutations (no hypothesis): DATA, EVENT, heartbeat requests and replies."""
    rng = np.random.default_rng(12)
    bases = [encode_data(5, "ProbeA-AP", 2, "CH3", 123, 30000.0, np.ones(16, np.float32)),
             encode_ttl(6, "ProbeA-AP", 10, 1, True),
             [EVENT, json.dumps({"message_num": 7, "spike": {"stream": "ProbeA-AP", "num_channels": 4,
                                                              "num_samples": 8}}).encode(), b"\0" * 128]]
    valid = 0
    for i in range(3000):
        parts = [bytearray(p) for p in bases[i % len(bases)]]
        for _ in range(int(rng.integers(1, 4))):
            k = int(rng.integers(0, len(parts)))
            p = parts[k]
            j = int(rng.integers(0, len(p) + 1))
            op = int(rng.integers(0, 4))
            if op == 0 and p:
                p[min(j, len(p) - 1)] = int(rng.integers(0, 256))
            elif op == 1:
                p[j:j] = rng.bytes(int(rng.integers(1, 6)))
            elif op == 2:
                del p[j:j + int(rng.integers(1, 6))]
            else:
                p[j:j] = rng.choice([b"9" * 30, b"[" * 20, b"NaN", b"Infinity", b'"', b"\xff"])
        valid += _check([bytes(p) for p in parts]) is not None
        for f in (decode_heartbeat, check_heartbeat_reply):
            try:
                f([bytes(parts[1])])
            except ProtocolError:
                pass
    assert valid < 3000  # the mutations do break most messages; none raised anything but ProtocolError
