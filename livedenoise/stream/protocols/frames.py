"""The imaging wire protocol (docs/protocol.md; DESIGN.md section 4).

ZeroMQ multipart messages: [topic, JSON header, payload]. Topics `frame`,
`start`, `stop` (and `stats` on the output side). Decoding validates every
field, so everything past the socket can trust a `FrameMessage`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PROTOCOL_VERSION = 1
DEFAULT_INPUT = "tcp://127.0.0.1:5570"
DEFAULT_OUTPUT = "tcp://127.0.0.1:5571"
DTYPES = {"int16": np.dtype("<i2"), "uint16": np.dtype("<u2"), "float32": np.dtype("<f4")}
TOPICS = (b"frame", b"start", b"stop", b"stats")


class ProtocolError(ValueError):
    """A message that does not follow the protocol; counted, never fatal."""


@dataclass(frozen=True)
class FrameHeader:
    frame: int
    t: float
    shape: tuple[int, int]
    dtype: str
    channel: int = 1
    plane: int = 1
    order: str = "C"
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    """Output-side fields (lag, latency_ms, model) and anything else sent along."""

    @property
    def stream(self) -> tuple[int, int]:
        return (self.channel, self.plane)

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * DTYPES[self.dtype].itemsize

    def to_json(self) -> bytes:
        body = {
            "v": PROTOCOL_VERSION,
            "frame": self.frame,
            "t": self.t,
            "channel": self.channel,
            "plane": self.plane,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "order": self.order,
            "source": self.source,
            **self.extra,
        }
        return json.dumps(body).encode()


@dataclass(frozen=True)
class FrameMessage:
    header: FrameHeader
    pixels: np.ndarray
    """(H, W) read-only view of the received payload (F-ordered when the sender said so)."""


@dataclass(frozen=True)
class ControlMessage:
    topic: str  # "start" | "stop" | "stats"
    meta: dict[str, Any]


def encode_frame(header: FrameHeader, pixels: np.ndarray) -> list[bytes]:
    """Multipart message for one frame; pixels are sent in C order."""
    arr = np.ascontiguousarray(pixels, dtype=DTYPES[header.dtype])
    if arr.shape != tuple(header.shape):
        raise ValueError(f"pixels shape {arr.shape} != header shape {header.shape}")
    if header.order != "C":
        header = FrameHeader(**{**header.__dict__, "order": "C"})
    return [b"frame", header.to_json(), arr.tobytes()]


def encode_control(topic: str, meta: dict[str, Any]) -> list[bytes]:
    return [topic.encode(), json.dumps({"v": PROTOCOL_VERSION, **meta}).encode()]


def _require_int(d: dict, key: str, minimum: int | None = None) -> int:
    v = d.get(key)
    if not isinstance(v, int) or isinstance(v, bool):
        raise ProtocolError(f"header field {key!r} must be an integer, got {v!r}")
    if minimum is not None and v < minimum:
        raise ProtocolError(f"header field {key!r} must be >= {minimum}, got {v}")
    return v


def decode(parts: list[bytes]) -> FrameMessage | ControlMessage:
    """Parse and validate one multipart message; raises ProtocolError."""
    if not parts:
        raise ProtocolError("empty message")
    topic = bytes(parts[0])
    if topic not in TOPICS:
        raise ProtocolError(f"unknown topic {topic[:20]!r}")
    if topic != b"frame":
        if len(parts) not in (2, 3) or (len(parts) == 3 and len(parts[2]) != 0):
            raise ProtocolError(f"{topic.decode()} message needs 2 parts, got {len(parts)}")
        return ControlMessage(topic.decode(), _json(parts[1]))
    if len(parts) != 3:
        raise ProtocolError(f"frame message needs 3 parts (topic, header, payload), got {len(parts)}")
    h = _json(parts[1])
    v = h.get("v", PROTOCOL_VERSION)
    if v != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {v!r} not supported (expected {PROTOCOL_VERSION})")
    shape = h.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= 1 << 15 for s in shape)
    ):
        raise ProtocolError(f"header field 'shape' must be [H, W] of positive integers, got {shape!r}")
    dtype = h.get("dtype")
    if dtype not in DTYPES:
        raise ProtocolError(f"unknown dtype {dtype!r} (expected one of {', '.join(DTYPES)})")
    order = h.get("order", "C")
    if order not in ("C", "F"):
        raise ProtocolError(f"header field 'order' must be 'C' or 'F', got {order!r}")
    t = h.get("t", 0.0)
    if not isinstance(t, (int, float)) or isinstance(t, bool):
        raise ProtocolError(f"header field 't' must be a number, got {t!r}")
    header = FrameHeader(
        frame=_require_int(h, "frame", 0),
        t=float(t),
        shape=(shape[0], shape[1]),
        dtype=dtype,
        channel=_require_int(h, "channel", 0) if "channel" in h else 1,
        plane=_require_int(h, "plane", 0) if "plane" in h else 1,
        order=order,
        source=str(h.get("source", "")),
        extra={k: val for k, val in h.items() if k not in _HEADER_KEYS},
    )
    payload = parts[2]
    if len(payload) != header.nbytes:
        raise ProtocolError(
            f"payload is {len(payload)} bytes but shape {shape} of {dtype} needs {header.nbytes}"
        )
    flat = np.frombuffer(payload, dtype=DTYPES[dtype])
    pixels = flat.reshape(shape, order=order)
    return FrameMessage(header, pixels)


_HEADER_KEYS = {"v", "frame", "t", "channel", "plane", "shape", "dtype", "order", "source"}


def _json(raw: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ProtocolError("header is not UTF-8 JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError("header JSON is not an object")
    return obj
