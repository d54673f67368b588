"""The imaging wire protocol (docs/protocol.md; DESIGN.md section 4).

ZeroMQ multipart messages: [topic, JSON header, payload]. Topics `frame`,
`start`, `stop` (and `stats` on the output side). Decoding validates every
field at the edge (protocols/edge.py: header size and nesting depth bounded
before parsing, integers within int64 and a range per field, floats finite,
strings bounded, the product of the frame shape bounded before anything is
allocated), so everything past the socket can trust a `FrameMessage`.
`decode` raises `ProtocolError` and nothing else, whatever the bytes.

Limits (docs/protocol.md, "Validation"):

| field | range |
|---|---|
| header | <= 64 KiB UTF-8 JSON object, nested <= 16 levels |
| `v` | 1 (every topic; missing means 1) |
| `frame` | integer 0 .. 2**62 |
| `channel` | integer 0 .. 64 |
| `plane` | integer 0 .. 4096 |
| `shape` | [H, W], each 1 .. 32768, H * W <= 2**24 pixels |
| `depth` (optional) | integer 1 .. 4096: the frame is a volume of `depth` planes of [H, W] (fMRI), depth * H * W <= 2**24 |
| `t` | finite number |
| `source` | string of <= 256 characters |
| `frame_step` (start) | integer 1 .. 65536 |
| `depth` (start) | integer 0 .. 4096 (0: unknown) |
| `tr` (start) | finite number 0 .. 1e9 (seconds) |

Volumes (fMRI). A frame message whose header has `depth` D carries one volume:
its payload is D * H * W samples, a (D, H, W) array (C order: the last axis
fastest). A header without `depth` is a 2D frame, exactly as before; the
protocol version stays 1 (a receiver that does not know `depth` refuses such a
message by its payload size, never misreads it). Inside livedenoise a volume's
`FrameHeader.shape` is (D, H, W); on the wire it is `shape` [H, W] plus `depth`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from livedenoise.stream.protocols.edge import (
    ProtocolError, float_field, int_field, json_object, only_protocol_errors, str_field,
)

__all__ = [
    "PROTOCOL_VERSION", "DEFAULT_INPUT", "DEFAULT_OUTPUT", "DTYPES", "TOPICS", "MAX_FRAME", "MAX_CHANNEL",
    "MAX_PLANE", "MAX_SIDE", "MAX_PIXELS", "MAX_FRAME_STEP", "MAX_SOURCE", "MAX_DEPTH", "ProtocolError", "FrameHeader",
    "FrameMessage", "ControlMessage", "encode_frame", "encode_control", "decode", "check_start",
]

PROTOCOL_VERSION = 1
DEFAULT_INPUT = "tcp://127.0.0.1:5570"
DEFAULT_OUTPUT = "tcp://127.0.0.1:5571"
DTYPES = {"int16": np.dtype("<i2"), "uint16": np.dtype("<u2"), "float32": np.dtype("<f4")}
TOPICS = (b"frame", b"start", b"stop", b"stats")

MAX_FRAME = 1 << 62
"""Largest frame number (a counter from 0; int64 with room for `frame_step` arithmetic)."""
MAX_CHANNEL = 64
"""Channel numbers are 0 .. 64 (ScanImage uses 1 .. 4)."""
MAX_PLANE = 4096
"""Plane numbers are 0 .. 4096."""
MAX_SIDE = 1 << 15
"""Each side of a frame is 1 .. 32768 pixels ..."""
MAX_PIXELS = 1 << 24
"""... and a frame has at most 2**24 pixels (e.g. 4096 x 4096, 64 MiB as float32)."""
MAX_FRAME_STEP = 1 << 16
"""`frame_step` of a start message: 1 .. 65536."""
MAX_SOURCE = 256
"""`source`: at most 256 characters."""
MAX_DEPTH = 1 << 12
"""`depth` of a volume: 1 .. 4096 planes (the pixel limit applies to the whole volume)."""


@dataclass(frozen=True)
class FrameHeader:
    frame: int
    t: float
    shape: tuple[int, ...]
    """(H, W) of a 2D frame, or (D, H, W) of a volume (sent as `shape` [H, W] and `depth` D)."""
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
        n = 1
        for s in self.shape:
            n *= int(s)
        return n * DTYPES[self.dtype].itemsize

    def to_json(self) -> bytes:
        if len(self.shape) not in (2, 3):
            raise ValueError(f"a frame is (H, W) or a (D, H, W) volume, not shape {self.shape}")
        body = {
            "v": PROTOCOL_VERSION,
            "frame": self.frame,
            "t": self.t,
            "channel": self.channel,
            "plane": self.plane,
            "shape": list(self.shape[-2:]),
            "dtype": self.dtype,
            "order": self.order,
            "source": self.source,
            **self.extra,
        }
        if len(self.shape) == 3:
            body["depth"] = int(self.shape[0])
        return json.dumps(body).encode()


@dataclass(frozen=True)
class FrameMessage:
    header: FrameHeader
    pixels: np.ndarray
    """(H, W) (a volume: (D, H, W)) read-only view of the received payload (F-ordered when the sender said so)."""


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


def decode(parts: list[bytes]) -> FrameMessage | ControlMessage:
    """Parse and validate one multipart message.

    parts: the message's frames (bytes-like). Returns a `FrameMessage` (pixels:
    an (H, W) read-only view of the payload, no copy) or a `ControlMessage`.
    Raises `ProtocolError` (with the reason) for anything that breaks the
    protocol, and never any other exception.
    """
    return _guarded_decode(parts)


def _bytes(part) -> bytes | memoryview:
    if isinstance(part, (bytes, bytearray, memoryview)):
        return part
    buf = getattr(part, "buffer", None)  # a zmq.Frame
    if buf is not None:
        return buf
    raise ProtocolError(f"message part is {type(part).__name__}, not bytes")


def _decode(parts) -> FrameMessage | ControlMessage:
    if not isinstance(parts, (list, tuple)) or not parts:
        raise ProtocolError("empty message")
    head = _bytes(parts[0])
    topic = bytes(head) if len(head) <= 8 else None
    if topic not in TOPICS:
        raise ProtocolError(f"unknown topic {bytes(head[:20])!r}")
    if topic != b"frame":
        if len(parts) not in (2, 3) or (len(parts) == 3 and len(_bytes(parts[2])) != 0):
            raise ProtocolError(f"{topic.decode()} message needs 2 parts, got {len(parts)}")
        meta = json_object(_bytes(parts[1]), f"{topic.decode()} header")
        _check_version(meta, topic.decode())
        if topic == b"start":
            check_start(meta)
        return ControlMessage(topic.decode(), meta)
    if len(parts) != 3:
        raise ProtocolError(f"frame message needs 3 parts (topic, header, payload), got {len(parts)}")
    h = json_object(_bytes(parts[1]), "frame header")
    _check_version(h, "frame")
    shape = _shape(h.get("shape"), "shape")
    if "depth" in h:  # a volume of `depth` planes; the pixel limit covers all of it, checked before allocating
        depth = int_field(h, "depth", 1, MAX_DEPTH)
        if depth * shape[0] * shape[1] > MAX_PIXELS:
            raise ProtocolError(f"a volume of {depth} x {shape[0]}x{shape[1]} has more than {MAX_PIXELS} pixels")
        shape = (depth, *shape)
    dtype = h.get("dtype")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ProtocolError(f"unknown dtype {_short(dtype)} (expected one of {', '.join(DTYPES)})")
    order = h.get("order", "C")
    if not isinstance(order, str) or order not in ("C", "F"):
        raise ProtocolError(f"header field 'order' must be 'C' or 'F', got {_short(order)}")
    header = FrameHeader(
        frame=int_field(h, "frame", 0, MAX_FRAME),
        t=float_field(h, "t", default=0.0),
        shape=shape,
        dtype=dtype,
        channel=int_field(h, "channel", 0, MAX_CHANNEL, default=1),
        plane=int_field(h, "plane", 0, MAX_PLANE, default=1),
        order=order,
        source=str_field(h, "source", MAX_SOURCE, default=""),
        extra={k: val for k, val in h.items() if k not in _HEADER_KEYS},
    )
    payload = _bytes(parts[2])
    if len(payload) != header.nbytes:
        raise ProtocolError(f"payload is {len(payload)} bytes but shape {list(shape)} of {dtype} needs {header.nbytes}")
    flat = np.frombuffer(payload, dtype=DTYPES[dtype])
    if flat.flags.writeable:  # a bytearray or writable buffer: the view must stay read-only
        flat.flags.writeable = False
    pixels = flat.reshape(shape, order=order)
    return FrameMessage(header, pixels)


_HEADER_KEYS = {"v", "frame", "t", "channel", "plane", "shape", "depth", "dtype", "order", "source"}


def _check_version(d: dict, what: str) -> None:
    v = d.get("v", PROTOCOL_VERSION)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != PROTOCOL_VERSION:
        raise ProtocolError(f"{what}: protocol version {_short(v)} not supported (expected {PROTOCOL_VERSION})")


def _shape(shape, key: str) -> tuple[int, int]:
    """[H, W] within the limits; the product is checked before anything is allocated."""
    if not isinstance(shape, list) or len(shape) != 2:
        raise ProtocolError(f"header field {key!r} must be [H, W], got {_short(shape)}")
    hw = []
    for s in shape:
        if isinstance(s, float) and s.is_integer():
            s = int(s)
        if isinstance(s, bool) or not isinstance(s, int) or not 0 < s <= MAX_SIDE:
            raise ProtocolError(f"header field {key!r} must be [H, W] of integers 1..{MAX_SIDE}, got {_short(shape)}")
        hw.append(s)
    if hw[0] * hw[1] > MAX_PIXELS:
        raise ProtocolError(f"a {hw[0]}x{hw[1]} frame has more than {MAX_PIXELS} pixels")
    return hw[0], hw[1]


def check_start(meta: dict) -> dict:
    """Validate the fields of a `start` message that a receiver uses or documents.

    `frame_step` (int 1..65536) is required to be valid because `serve` uses
    it; the documented metadata fields are type-checked where present (`null`
    is accepted for each: ScanImage writes NaN, Inf and empty values as null).
    Unknown keys are kept as they are. Returns `meta`; raises ProtocolError.
    """
    what = "start field"
    if meta.get("frame_step") is not None:
        int_field(meta, "frame_step", 1, MAX_FRAME_STEP, what=what)
    if meta.get("depth") is not None:
        int_field(meta, "depth", 0, MAX_DEPTH, what=what)
    for key in ("frame_rate", "volume_rate", "zoom", "tr"):
        if meta.get(key) is not None:
            float_field(meta, key, 0.0, 1e9, what=what)
    for key in ("frames", "planes"):
        if meta.get(key) is not None:
            int_field(meta, key, 0, MAX_FRAME, what=what)
    for key in ("frame_size", "shape"):  # metadata: 0 stands for "unknown" (ScanImage before it knows)
        v = meta.get(key)
        if v is not None and (not isinstance(v, list) or len(v) != 2):
            raise ProtocolError(f"{what} {key!r} must be [H, W], got {_short(v)}")
        for side in v or ():
            int_field({"side": side}, "side", 0, MAX_SIDE, what=f"{what} {key!r} item")
    for key in ("channels", "published_channels"):
        v = meta.get(key)
        if v is None:
            continue
        if not isinstance(v, list) or len(v) > MAX_CHANNEL + 1:
            raise ProtocolError(f"{what} {key!r} must be a list of at most {MAX_CHANNEL + 1} channel numbers")
        for c in v:
            int_field({"c": c}, "c", 0, MAX_CHANNEL, what=f"{what} {key!r} item")
    for key in ("dtype", "source", "mode"):
        if meta.get(key) is not None:
            str_field(meta, key, MAX_SOURCE, what=what)
    return meta


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


_guarded_decode = only_protocol_errors(_decode)
