"""Helpers for the GUI tests: real ZMQ publishers on free loopback ports, protocol frames."""

import threading
import time

import numpy as np
import zmq

from livedenoise.stream.loopback import free_endpoints
from livedenoise.stream.protocols.frames import FrameHeader, encode_control, encode_frame


def free_endpoint() -> str:
    return free_endpoints(1)[0]


class Publisher:
    """An XPUB bound on a free loopback port: `wait_subscribed` makes sends race-free."""

    def __init__(self, endpoint: str | None = None):
        self.endpoint = endpoint or free_endpoint()
        self.sock = zmq.Context.instance().socket(zmq.XPUB)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(self.endpoint)

    def wait_subscribed(self, timeout: float = 60.0) -> None:
        if not self.sock.poll(int(timeout * 1000)):
            raise TimeoutError(f"nobody subscribed to {self.endpoint}")
        self.sock.recv()

    def send(self, parts) -> None:
        self.sock.send_multipart(parts)

    def close(self) -> None:
        self.sock.close(0)


def frame(n: int, value, shape=(32, 48), dtype="int16", channel=1, plane=1, t=None, **extra):
    img = value if isinstance(value, np.ndarray) else np.full(shape, value, dtype)
    hdr = FrameHeader(frame=n, t=n / 30.0 if t is None else t, shape=img.shape, dtype=dtype,
                      channel=channel, plane=plane, source="test", extra=extra)
    return encode_frame(hdr, img)


def stats(**kw):
    body = {"frames_in": 0, "frames_out": 0, "dropped_upstream": 0, "skipped": 0, "malformed": 0, "fps_in": 0.0,
            "fps_out": 0.0, "latency_ms_p50": None, "latency_ms_p99": None}
    body.update(kw)
    return encode_control("stats", body)


def wait_until(cond, timeout: float = 60.0, app=None, step: float = 0.01) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if app is not None:
            app.processEvents()
        if cond():
            return True
        time.sleep(step)
    return bool(cond())


def background(fn, *args):
    th = threading.Thread(target=fn, args=args, daemon=True)
    th.start()
    return th
