"""Validation at the socket edge, shared by every wire protocol we receive.

Everything that arrives from a socket is hostile until this module has read it:
the header's size and nesting depth are bounded *before* it is parsed, integers
are bounded to int64 and to a range per field, floats must be finite, every
field must have its JSON type. Anything else raises `ProtocolError` (counted as
malformed with its reason by the receiving thread, never fatal).

Limits (docs/protocol.md, docs/openephys.md):

- header: at most `MAX_HEADER_BYTES` (64 KiB) of UTF-8 JSON, an object, nested
  at most `MAX_DEPTH` (16) brackets deep (brackets inside strings count too:
  the check runs before parsing);
- integer literals: at most 19 digits (int64); NaN/Infinity literals refused;
- the field ranges are the callers' (`int_field(..., lo, hi)`).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

MAX_HEADER_BYTES = 64 * 1024
MAX_DEPTH = 16
INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)

_OPEN = np.zeros(256, np.int8)
_OPEN[[ord("{"), ord("[")]] = 1
_OPEN[[ord("}"), ord("]")]] = -1


class ProtocolError(ValueError):
    """A message that does not follow its protocol; counted as malformed, never fatal."""


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > 19:
        raise ProtocolError(f"integer literal of {len(text)} characters (int64 at most)")
    v = int(text)
    if not INT64_MIN <= v <= INT64_MAX:
        raise ProtocolError(f"integer {v} outside int64")
    return v


def _parse_constant(name: str) -> float:
    raise ProtocolError(f"non-finite number {name} in header")


def _parse_float(text: str) -> float:
    if len(text) > 64:
        raise ProtocolError(f"number literal of {len(text)} characters")
    v = float(text)
    if not math.isfinite(v):
        raise ProtocolError(f"number {text[:24]} is not finite")
    return v


def json_object(raw: bytes | memoryview, what: str = "header",
                max_bytes: int = MAX_HEADER_BYTES, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Parse one JSON object from the wire, bounded before parsing.

    raw: the frame's bytes. Returns the dict. Raises ProtocolError when the
    header is larger than `max_bytes`, nested deeper than `max_depth`, not UTF-8
    JSON, not an object, or holds an integer beyond int64 or a NaN/Infinity.
    """
    n = len(raw)
    if n > max_bytes:
        raise ProtocolError(f"{what} is {n} bytes (at most {max_bytes})")
    raw = bytes(raw)
    # the nesting scan runs only when there are enough opening brackets to exceed the limit
    if raw.count(b"{") + raw.count(b"[") > max_depth:
        arr = np.frombuffer(raw, np.uint8)
        if int(np.cumsum(_OPEN[arr], dtype=np.int32).max()) > max_depth:
            raise ProtocolError(f"{what} is nested deeper than {max_depth} levels")
    try:
        obj = _DECODER.decode(raw.decode("utf-8"))
    except ProtocolError as exc:
        raise ProtocolError(f"{what}: {exc}") from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ProtocolError(f"{what} is not UTF-8 JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what} JSON is not an object")
    return obj


_DECODER = json.JSONDecoder(parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
"""One decoder for every message (building one per call costs more than the parse)."""

_MISSING = object()


def int_field(d: dict, key: str, lo: int, hi: int, default: Any = _MISSING, what: str = "header field") -> int:
    """d[key] as an int in [lo, hi]; integral floats (2.0) are accepted, booleans are not."""
    v = d.get(key, _MISSING)
    if v is _MISSING:
        if default is _MISSING:
            raise ProtocolError(f"{what} {key!r} is missing")
        return default
    if isinstance(v, float) and math.isfinite(v) and v == int(v):
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ProtocolError(f"{what} {key!r} must be an integer, got {_short(v)}")
    if not lo <= v <= hi:
        raise ProtocolError(f"{what} {key!r} must be in {lo}..{hi}, got {_short(v)}")
    return v


def float_field(d: dict, key: str, lo: float = -math.inf, hi: float = math.inf, default: Any = _MISSING,
                what: str = "header field", lo_open: bool = False) -> float:
    """d[key] as a finite float in [lo, hi] (or (lo, hi] with `lo_open`)."""
    v = d.get(key, _MISSING)
    if v is _MISSING:
        if default is _MISSING:
            raise ProtocolError(f"{what} {key!r} is missing")
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ProtocolError(f"{what} {key!r} must be a number, got {_short(v)}")
    v = float(v)
    if not math.isfinite(v) or v < lo or v > hi or (lo_open and v == lo):
        raise ProtocolError(f"{what} {key!r} must be a finite number in {lo}..{hi}, got {_short(v)}")
    return v


def str_field(d: dict, key: str, max_len: int = 256, default: Any = _MISSING, what: str = "header field") -> str:
    """d[key] as a string of at most `max_len` characters."""
    v = d.get(key, _MISSING)
    if v is _MISSING:
        if default is _MISSING:
            raise ProtocolError(f"{what} {key!r} is missing")
        return default
    if not isinstance(v, str):
        raise ProtocolError(f"{what} {key!r} must be a string, got {_short(v)}")
    if len(v) > max_len:
        raise ProtocolError(f"{what} {key!r} is {len(v)} characters (at most {max_len})")
    return v


def only_protocol_errors(decode):
    """Wrap a message decoder so that nothing but `ProtocolError` ever leaves it (the last net at the edge).

    MemoryError / RecursionError become "too large or too deep", any other exception
    "undecodable message (...)": a decoder bug costs one message, never the receiving thread.
    """
    import functools

    @functools.wraps(decode)
    def guarded(parts):
        try:
            return decode(parts)
        except ProtocolError:
            raise
        except (MemoryError, RecursionError) as exc:
            raise ProtocolError(f"message too large or too deep to decode ({type(exc).__name__})") from None
        except Exception as exc:  # noqa: BLE001 -- the point: nothing but ProtocolError leaves the edge
            raise ProtocolError(f"undecodable message ({type(exc).__name__}: {str(exc)[:80]})") from None

    return guarded


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."
