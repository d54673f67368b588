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
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_DATA_PORT = 5556
DEFAULT_OUTPUT_PORT = 5560
DATA = b"DATA\0"
EVENT = b"EVENT\0"
HEARTBEAT_REPLY = b"heartbeat received"
BAD_JSON_REPLY = b"JSON message could not be read"
TTL_TYPE = 3


class ProtocolError(ValueError):
    """A message that does not follow the plugin's format: counted, never fatal."""


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


def _int(d: dict, key: str) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v):
        raise ProtocolError(f"field {key!r} must be an integer, got {v!r}")
    return int(v)


def decode(parts: list[bytes]) -> DataMessage | EventMessage:
    """Validate and decode one multipart message; raises ProtocolError."""
    if len(parts) < 2:
        raise ProtocolError(f"expected 2-3 message parts, got {len(parts)}")
    env = bytes(parts[0])
    try:
        head = json.loads(bytes(parts[1]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"header is not JSON: {exc}") from None
    if not isinstance(head, dict):
        raise ProtocolError("header is not a JSON object")
    mnum = head.get("message_num", head.get("message_no", -1))
    if isinstance(mnum, bool) or not isinstance(mnum, (int, float)):
        raise ProtocolError("header has no integer message_num")
    mnum = int(mnum)
    payload = bytes(parts[2]) if len(parts) > 2 else b""
    if env in (DATA, b"DATA"):
        c = head.get("content")
        if not isinstance(c, dict):
            raise ProtocolError("DATA header has no content object")
        n = _int(c, "num_samples")
        size = _int(head, "data_size") if "data_size" in head else n * 4
        if n < 0 or size != n * 4:
            raise ProtocolError(f"data_size {size} != num_samples {n} * 4")
        if len(parts) < 3 or len(parts[2]) != size:
            raise ProtocolError(f"payload is {len(parts[2]) if len(parts) > 2 else 0} bytes, header says {size}")
        rate = c.get("sample_rate")
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
            raise ProtocolError(f"bad sample_rate {rate!r}")
        ch = _int(c, "channel_num")
        if ch < 0:
            raise ProtocolError(f"bad channel_num {ch}")
        return DataMessage(
            message_num=mnum,
            stream=str(c.get("stream", "")),
            channel_num=ch,
            channel_name=str(c.get("channel_name", f"CH{ch + 1}")),
            num_samples=n,
            sample_num=_int(c, "sample_num"),
            sample_rate=float(rate),
            timestamp=float(head.get("timestamp", 0) or 0),
            samples=np.frombuffer(parts[2], dtype="<f4"),
        )
    if env in (EVENT, b"EVENT"):
        if "spike" in head:
            kind = "spike"
        else:
            c = head.get("content") if isinstance(head.get("content"), dict) else {}
            kind = "ttl" if c.get("type") == TTL_TYPE else "event"
        return EventMessage(mnum, kind, head, payload)
    raise ProtocolError(f"unknown envelope {env[:16]!r}")
