"""Owns the Open Ephys ZMQ Interface plugin's wire format (GUI 0.6 / 1.0), both directions.

PUB on data_port (default 5556), REP on data_port + 1 for client heartbeats.
One three-part message per selected channel per processing block:

    [b"DATA\\0", JSON header, float32[num_samples] payload (µV)]

    {"message_num": n, "type": "data",
     "content": {"stream": name, "channel_num": k, "channel_name": str,
                 "num_samples": n, "sample_num": first sample (int64), "sample_rate": Hz},
     "data_size": num_samples * 4, "timestamp": ms since epoch}

Events: [b"EVENT\\0", JSON with "content" {stream, source_node, type: 3, sample_num}
(TTL, 10-byte payload) or "spike" {...} (float32 payload)]. Heartbeats are JSON
{"application", "uuid", "type": "heartbeat"} answered with `heartbeat received`.

Validation at the edge (`decode`, `decode_heartbeat`, `check_heartbeat_reply`;
protocols/edge.py bounds the header before parsing). Anything outside these
limits raises `ProtocolError` (the receiver counts it as `malformed`, with
its reason, and goes on); nothing else escapes `decode`, whatever the bytes:

| field | rule |
|---|---|
| message | 2 or 3 parts (DATA: 3); envelope `DATA\\0` or `EVENT\\0` (also without the NUL) |
| header | a JSON object of <= 64 KiB, nested <= 16 levels, integers <= 19 digits, no NaN/Infinity |
| `message_num` (or `message_no`) | integer 0 .. 2**62 |
| `num_samples` | integer 1 .. 65536 (`MAX_NUM_SAMPLES`) |
| `data_size` | integer, = num_samples * 4 (missing: taken as that); the payload has exactly that many bytes |
| payload (DATA) | finite float32 values (NaN or infinities are malformed) |
| `sample_num` | integer 0 .. 2**62 |
| `channel_num` | integer 0 .. 4095 (`MAX_CHANNELS` channels per stream) |
| `sample_rate` | finite number, 1 .. 1 000 000 Hz |
| `timestamp` | finite number (a string is malformed); missing: 0 |
| `stream`, `channel_name` | strings of <= 256 characters |
| EVENT | `content` or `spike` object; payload <= 1 MiB and = `data_size` when given; a TTL payload is 10 bytes |
| heartbeat request | one frame, JSON object <= 4 KiB, `type` "heartbeat", `uuid` and `application` strings <= 256 |
| heartbeat reply | one frame, exactly `heartbeat received` |

Frames larger than `MAX_FRAME_BYTES` (64 MiB; heartbeat sockets: 1 MiB) never arrive: ZeroMQ drops the
sending peer's connection instead (it reconnects).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from livedenoise.stream.protocols.edge import (
    ProtocolError, float_field, int_field, json_object, only_protocol_errors, str_field,
)

DEFAULT_DATA_PORT = 5556
DEFAULT_OUTPUT_PORT = 5560
DATA = b"DATA\0"
EVENT = b"EVENT\0"
HEARTBEAT_REPLY = b"heartbeat received"
BAD_JSON_REPLY = b"JSON message could not be read"
TTL_TYPE = 3
TTL_BYTES = 10

MAX_NUM_SAMPLES = 1 << 16
"""Samples per DATA message (the GUI sends one processing block: usually 1024 .. 8192)."""
MAX_CHANNELS = 4096
"""Channels per stream: `channel_num` is 0 .. 4095."""
MAX_SAMPLE_NUM = 1 << 62
"""Largest `sample_num` (int64 with room for arithmetic)."""
MAX_MESSAGE_NUM = 1 << 62
MIN_SAMPLE_RATE = 1.0
MAX_SAMPLE_RATE = 1_000_000.0
MAX_TIMESTAMP = float(1 << 62)
MAX_NAME = 256
"""Characters of a stream, channel, application or uuid string."""
MAX_EVENT_BYTES = 1 << 20
MAX_HEARTBEAT_BYTES = 4096
_MIN, _MAX = np.minimum.reduce, np.maximum.reduce
MAX_FRAME_BYTES = 64 << 20
"""Largest frame the receiving SUB socket accepts (ZMQ_MAXMSGSIZE; a larger one makes ZeroMQ drop that peer's
connection, which reconnects, and is never counted): far above any valid message, so that every oversized but
deliverable message is received and counted as malformed, yet bounded."""
MAX_HEARTBEAT_FRAME = 1 << 20
"""The same for the heartbeat sockets (a request or reply over MAX_HEARTBEAT_BYTES is still received and
counted as malformed)."""


@dataclass
class DataMessage:
    message_num: int
    stream: str
    channel_num: int
    channel_name: str
    num_samples: int
    sample_num: int
    sample_rate: float
    timestamp: float
    samples: np.ndarray
    """float32 (num_samples,) read-only view of the payload, µV."""


@dataclass
class EventMessage:
    message_num: int
    kind: str
    """`ttl`, `spike` or `event` (anything else)."""
    header: dict[str, Any]
    payload: bytes


def reason_key(reason: str) -> str:
    """A malformed reason without its values (numbers, quoted strings): for counting reasons by kind."""
    key = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", reason)
    return re.sub(r"-?\d+(\.\d+)?(e[+-]?\d+)?", "N", key)[:100]


def now_ms() -> int:
    return int(time.time() * 1000)


def encode_data(message_num: int, stream: str, channel_num: int, channel_name: str, sample_num: int,
                sample_rate: float, samples: np.ndarray, timestamp: int | None = None) -> list[bytes]:
    payload = np.ascontiguousarray(samples, dtype="<f4")
    n = int(payload.shape[0])
    header = {
        "message_num": int(message_num),
        "type": "data",
        "content": {
            "stream": stream,
            "channel_num": int(channel_num),
            "channel_name": channel_name,
            "num_samples": n,
            "sample_num": int(sample_num),
            "sample_rate": float(sample_rate),
        },
        "data_size": n * 4,
        "timestamp": int(now_ms() if timestamp is None else timestamp),
    }
    return [DATA, json.dumps(header).encode(), payload.tobytes()]


class DataEncoder:
    """Fast encoder for many channels of one stream (pre-escaped strings, one format per message)."""

    def __init__(self, stream: str, channel_names: list[str], sample_rate: float):
        self.stream_js = json.dumps(stream)
        self.names_js = [json.dumps(n) for n in channel_names]
        self.rate = float(sample_rate)
        self.message_num = 0

    def encode_block(self, sample_num: int, block: np.ndarray, timestamp: int | None = None) -> list[list[bytes]]:
        """block (channels, samples) float32 -> one message per channel."""
        block = np.ascontiguousarray(block, dtype="<f4")
        c, n = block.shape
        ts = int(now_ms() if timestamp is None else timestamp)
        out = []
        for k in range(c):
            head = (
                '{"message_num": %d, "type": "data", "content": {"stream": %s, "channel_num": %d, '
                '"channel_name": %s, "num_samples": %d, "sample_num": %d, "sample_rate": %r}, '
                '"data_size": %d, "timestamp": %d}'
                % (self.message_num, self.stream_js, k, self.names_js[k] if k < len(self.names_js) else json.dumps(f"CH{k + 1}"),
                   n, int(sample_num), self.rate, n * 4, ts)
            )
            out.append([DATA, head.encode(), block[k].tobytes()])
            self.message_num += 1
        return out


def encode_ttl(message_num: int, stream: str, sample_num: int, line: int, state: bool, source_node: int = 100,
               word: int = 0, timestamp: int | None = None) -> list[bytes]:
    header = {
        "message_num": int(message_num),
        "type": "event",
        "content": {"stream": stream, "source_node": int(source_node), "type": TTL_TYPE, "sample_num": int(sample_num)},
        "data_size": 10,
        "timestamp": int(now_ms() if timestamp is None else timestamp),
    }
    payload = np.array([line], "u1").tobytes() + np.array([1 if state else 0], "u1").tobytes() + np.array([word], "<u8").tobytes()
    return [EVENT, json.dumps(header).encode(), payload]


def heartbeat(uuid: str, application: str = "livedenoise") -> bytes:
    return json.dumps({"application": application, "uuid": uuid, "type": "heartbeat"}).encode()


# --------------------------------------------------------------------------- decoding (the socket edge)


def _part(p) -> bytes | memoryview:
    if isinstance(p, (bytes, bytearray, memoryview)):
        return p
    buf = getattr(p, "buffer", None)  # a zmq.Frame
    if buf is not None:
        return buf
    raise ProtocolError(f"message part is {type(p).__name__}, not bytes")


def decode(parts: list[bytes]) -> DataMessage | EventMessage:
    """Validate and decode one multipart message of the plugin.

    parts: the message's frames (bytes-like or zmq.Frame). Returns a
    `DataMessage` (samples: a read-only float32 view of the payload, µV) or an
    `EventMessage`. Raises `ProtocolError` (with the reason) for anything
    outside the format and the limits in the module docstring, and never any
    other exception, whatever the bytes.
    """
    return _guarded_decode(parts)


# fast paths for the common, valid case; anything else goes to edge.py, which decides and says why


def _int(d: dict, key: str, lo: int, hi: int, default=None, what: str = "header field") -> int:
    v = d.get(key)
    if type(v) is int and lo <= v <= hi:
        return v
    if v is None and default is not None and key not in d:
        return default
    return int_field(d, key, lo, hi, what=what) if default is None else int_field(d, key, lo, hi, default, what)


def _str(d: dict, key: str, default: str, what: str) -> str:
    v = d.get(key)
    if type(v) is str and len(v) <= MAX_NAME:
        return v
    return str_field(d, key, MAX_NAME, default, what)


def _message_num(head: dict) -> int:
    key = "message_num" if "message_num" in head or "message_no" not in head else "message_no"
    return _int(head, key, 0, MAX_MESSAGE_NUM)


def _decode(parts) -> DataMessage | EventMessage:
    if not isinstance(parts, (list, tuple)) or not 2 <= len(parts) <= 3:
        n = len(parts) if isinstance(parts, (list, tuple)) else 0
        raise ProtocolError(f"expected 2-3 message parts, got {n}")
    env = _part(parts[0])
    env = bytes(env) if len(env) <= 8 else b"?"
    if env not in (DATA, b"DATA", EVENT, b"EVENT"):
        raise ProtocolError(f"unknown envelope {bytes(_part(parts[0])[:16])!r}")
    head = json_object(_part(parts[1]))
    mnum = _message_num(head)
    typ = head.get("type", "")
    if not (type(typ) is str and len(typ) <= 32):
        str_field(head, "type", 32, default="")
    payload = _part(parts[2]) if len(parts) > 2 else b""
    if env in (DATA, b"DATA"):
        c = head.get("content")
        if not isinstance(c, dict):
            raise ProtocolError("DATA header has no content object")
        n = _int(c, "num_samples", 1, MAX_NUM_SAMPLES, what="content field")
        size = _int(head, "data_size", 0, 4 * MAX_NUM_SAMPLES, default=n * 4)
        if size != n * 4:
            raise ProtocolError(f"data_size {size} != num_samples {n} * 4")
        if len(parts) < 3 or len(payload) != size:
            raise ProtocolError(f"payload is {len(payload)} bytes, header says {size}")
        ch = _int(c, "channel_num", 0, MAX_CHANNELS - 1, what="content field")
        sample_num = _int(c, "sample_num", 0, MAX_SAMPLE_NUM, what="content field")
        rate = c.get("sample_rate")
        if not (type(rate) is float and MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE):
            rate = float_field(c, "sample_rate", MIN_SAMPLE_RATE, MAX_SAMPLE_RATE, what="content field")
        stream = _str(c, "stream", "", "content field")
        name = _str(c, "channel_name", "", "content field") or f"CH{ch + 1}"
        ts = head.get("timestamp", 0.0)
        if not (type(ts) in (int, float) and -MAX_TIMESTAMP <= ts <= MAX_TIMESTAMP):
            ts = float_field(head, "timestamp", -MAX_TIMESTAMP, MAX_TIMESTAMP, default=0.0)
        samples = np.frombuffer(payload, dtype="<f4")
        # NaN propagates through min and max, and an infinity is one of them: no temporary array
        if not (np.isfinite(_MIN(samples)) and np.isfinite(_MAX(samples))):
            raise ProtocolError("payload holds NaN or infinite samples")
        return DataMessage(message_num=mnum, stream=stream, channel_num=ch, channel_name=name, num_samples=n,
                           sample_num=sample_num, sample_rate=rate, timestamp=float(ts), samples=samples)
    # EVENT: TTL (content) or spike
    if len(payload) > MAX_EVENT_BYTES:
        raise ProtocolError(f"event payload is {len(payload)} bytes (at most {MAX_EVENT_BYTES})")
    size = int_field(head, "data_size", 0, MAX_EVENT_BYTES, default=len(payload))
    if size != len(payload):
        raise ProtocolError(f"event payload is {len(payload)} bytes, header says {size}")
    float_field(head, "timestamp", -MAX_TIMESTAMP, MAX_TIMESTAMP, default=0.0)
    if "spike" in head:
        c = head["spike"]
        if not isinstance(c, dict):
            raise ProtocolError("EVENT spike is not an object")
        kind = "spike"
        int_field(c, "num_channels", 1, MAX_CHANNELS, default=1, what="spike field")
        int_field(c, "num_samples", 1, MAX_NUM_SAMPLES, default=1, what="spike field")
    else:
        c = head.get("content")
        if not isinstance(c, dict):
            raise ProtocolError("EVENT header has neither a content nor a spike object")
        etype = int_field(c, "type", 0, 255, default=-1, what="event field") if "type" in c else -1
        kind = "ttl" if etype == TTL_TYPE else "event"
        if kind == "ttl" and len(payload) not in (0, TTL_BYTES):
            raise ProtocolError(f"TTL payload is {len(payload)} bytes, not {TTL_BYTES}")
        int_field(c, "source_node", 0, (1 << 31) - 1, default=0, what="event field")
    int_field(c, "sample_num", 0, MAX_SAMPLE_NUM, default=0, what="event field")
    str_field(c, "stream", MAX_NAME, default="", what="event field")
    return EventMessage(mnum, kind, head, bytes(payload))


def decode_heartbeat(parts: list[bytes]) -> tuple[str, str]:
    """Validate a client's heartbeat request (one JSON frame); returns (application, uuid).

    `{"application": str, "uuid": str, "type": "heartbeat"}`, at most
    `MAX_HEARTBEAT_BYTES`. Raises `ProtocolError` for anything else, and never
    any other exception.
    """
    try:
        if not isinstance(parts, (list, tuple)) or len(parts) != 1:
            raise ProtocolError(f"heartbeat has {len(parts) if isinstance(parts, (list, tuple)) else 0} parts, not 1")
        hb = json_object(_part(parts[0]), "heartbeat", max_bytes=MAX_HEARTBEAT_BYTES)
        kind = str_field(hb, "type", 32, what="heartbeat field")
        if kind != "heartbeat":
            raise ProtocolError(f"heartbeat type is {kind[:32]!r}, not 'heartbeat'")
        app = str_field(hb, "application", MAX_NAME, default="", what="heartbeat field")
        uuid = str_field(hb, "uuid", MAX_NAME, what="heartbeat field")
        return app, uuid
    except ProtocolError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ProtocolError(f"undecodable heartbeat ({type(exc).__name__})") from None


def check_heartbeat_reply(parts: list[bytes]) -> None:
    """A plugin's reply to our heartbeat must be the one frame `heartbeat received`; ProtocolError otherwise."""
    if not isinstance(parts, (list, tuple)) or len(parts) != 1:
        raise ProtocolError(f"heartbeat reply has {len(parts) if isinstance(parts, (list, tuple)) else 0} parts, not 1")
    try:
        body = bytes(_part(parts[0])[:64])
    except Exception:  # noqa: BLE001
        raise ProtocolError("heartbeat reply is not bytes") from None
    if len(_part(parts[0])) != len(HEARTBEAT_REPLY) or body != HEARTBEAT_REPLY:
        raise ProtocolError(f"heartbeat reply is {body[:32]!r}, not {HEARTBEAT_REPLY!r}")


_guarded_decode = only_protocol_errors(_decode)
