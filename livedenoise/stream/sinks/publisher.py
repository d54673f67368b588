"""Sockets at the service's edges: the input SUB, the output PUB, with one-line errors.

ZeroMQ errors at bind/connect time (port in use, malformed endpoint) become
a `UserError` naming the endpoint and the option to change. The output PUB
never blocks: a subscriber that does not read simply loses messages past its
high-water mark (ZeroMQ's PUB semantics), the service goes on.
"""

from __future__ import annotations

import errno
import json
from typing import Any

import numpy as np
import zmq

from livedenoise.errors import UserError
from livedenoise.stream.protocols.edge import MAX_HEADER_BYTES
from livedenoise.stream.protocols.frames import FrameHeader, encode_control, encode_frame


def _explain(exc: zmq.ZMQError, endpoint: str, what: str, option: str) -> UserError:
    if exc.errno == errno.EADDRINUSE or exc.errno == zmq.EADDRINUSE:
        return UserError(f"{what} {endpoint} is already in use (another livedenoise serve or replay?); "
                         f"stop it or choose another address with {option}")
    if exc.errno in (zmq.EPROTONOSUPPORT, errno.EINVAL, zmq.EINVAL, errno.ENODEV) or "Invalid" in str(exc):
        return UserError(f"{what} {endpoint!r} is not a valid ZeroMQ endpoint ({exc}); use e.g. tcp://127.0.0.1:5570 with {option}")
    if exc.errno in (errno.EADDRNOTAVAIL, getattr(zmq, "EADDRNOTAVAIL", -1)):
        return UserError(f"{what} {endpoint}: that address is not on this machine ({exc}); use tcp://127.0.0.1:PORT or tcp://*:PORT with {option}")
    return UserError(f"{what} {endpoint}: {exc} (check {option})")


def check_endpoint(endpoint: str, what: str, option: str) -> str:
    """Catch what ZeroMQ would accept silently or explain badly (a port out of range, a missing scheme)."""
    scheme, sep, rest = str(endpoint).partition("://")
    if not sep or scheme not in ("tcp", "ipc", "inproc"):
        raise UserError(f"{what} {endpoint!r} is not a ZeroMQ endpoint; use e.g. tcp://127.0.0.1:5570 with {option}")
    if scheme == "tcp":
        host, colon, port = rest.rpartition(":")
        if not colon or not host or not (port == "*" or (port.isdigit() and 0 < int(port) < 65536)):
            raise UserError(f"{what} {endpoint!r} needs tcp://HOST:PORT with a port from 1 to 65535 "
                            f"(e.g. tcp://127.0.0.1:5570); check {option}")
    return endpoint


def _attach(sock: zmq.Socket, endpoint: str, what: str, option: str, verb: str) -> None:
    """bind or connect, closing the socket and explaining the endpoint on failure."""
    try:
        check_endpoint(endpoint, what, option)
        getattr(sock, verb)(endpoint)
    except UserError:
        sock.close(linger=0)
        raise
    except zmq.ZMQError as exc:
        sock.close(linger=0)
        raise _explain(exc, endpoint, what, option) from None


def bind(sock: zmq.Socket, endpoint: str, what: str, option: str) -> None:
    _attach(sock, endpoint, what, option, "bind")


def connect(sock: zmq.Socket, endpoint: str, what: str, option: str) -> None:
    _attach(sock, endpoint, what, option, "connect")


def subscriber(ctx: zmq.Context, endpoint: str, topics=(b"frame", b"start", b"stop"), rcvhwm: int = 100_000,
               option: str = "--input") -> zmq.Socket:
    """A SUB socket connected to `endpoint` (the acquisition's PUB)."""
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, rcvhwm)
    sock.setsockopt(zmq.LINGER, 0)
    for t in topics:
        sock.setsockopt(zmq.SUBSCRIBE, t)
    connect(sock, endpoint, "input endpoint", option)
    return sock


class OutputPublisher:
    """The denoised side: frames, start/stop and stats on one PUB socket."""

    def __init__(self, ctx: zmq.Context, endpoint: str, sndhwm: int = 1000):
        self.endpoint = endpoint
        self.sock = ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.SNDHWM, sndhwm)
        self.sock.setsockopt(zmq.LINGER, 500)
        bind(self.sock, endpoint, "output endpoint", "--output")
        self.sent = 0
        self.dropped = 0

    def _send(self, parts: list) -> None:
        try:
            self.sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=True)
            self.sent += 1
        except zmq.Again:  # PUB drops rather than blocks; this only guards odd transports
            self.dropped += 1

    def frame(self, header: FrameHeader, pixels: np.ndarray) -> None:
        self._send(encode_frame(header, pixels))

    def control(self, topic: str, meta: dict[str, Any]) -> None:
        """Publish a start/stop/stats message; one that would break the protocol's header limit (64 KiB, so
        receivers would refuse it) loses its largest fields first, each replaced by `<key>_omitted: <bytes>`."""
        meta = json.loads(json.dumps({k: v for k, v in meta.items() if k != "v"}, default=str))
        parts = encode_control(topic, meta)
        while len(parts[1]) > MAX_HEADER_BYTES - 1024 and meta:
            sizes = {k: len(json.dumps(v)) for k, v in meta.items() if not k.endswith("_omitted")}
            if not sizes:
                break
            key = max(sizes, key=sizes.get)
            del meta[key]
            meta[f"{key}_omitted"] = sizes[key]
            parts = encode_control(topic, meta)
        self._send(parts)

    def close(self) -> None:
        self.sock.close()
