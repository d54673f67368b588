"""GUI tests run on Qt's offscreen platform; helpers publish real ZMQ streams on loopback."""

import os

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before anything imports Qt

import socket  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")
zmq = pytest.importorskip("zmq")

from livedenoise.stream.protocol import FrameHeader, encode_control, encode_frame  # noqa: E402


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


class Publisher:
    """An XPUB bound on a free loopback port: `wait_subscribed` makes sends race-free."""

    def __init__(self, endpoint: str | None = None):
        self.endpoint = endpoint or free_endpoint()
        self.sock = zmq.Context.instance().socket(zmq.XPUB)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(self.endpoint)

    def wait_subscribed(self, timeout: float = 10.0) -> None:
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
    body = {"frames_in": 0, "frames_out": 0, "dropped": 0, "skipped": 0, "malformed": 0, "fps_in": 0.0,
            "fps_out": 0.0, "latency_p50_ms": None, "latency_p99_ms": None}
    body.update(kw)
    return encode_control("stats", body)


def wait_until(cond, timeout: float = 10.0, app=None, step: float = 0.01) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if app is not None:
            app.processEvents()
        if cond():
            return True
        time.sleep(step)
    return bool(cond())


@pytest.fixture(scope="session")
def qapp():
    from livedenoise.gui.app import qt_app

    app = qt_app()
    yield app
    app.processEvents()


@pytest.fixture(autouse=True)
def _delete_windows():
    """Windows closed in a test are deleted before the next one (no teardown at interpreter exit)."""
    yield
    from PySide6 import QtWidgets

    app = QtWidgets.QApplication.instance()
    if app is None:
        return
    for w in app.topLevelWidgets():
        w.close()
        w.deleteLater()
    for _ in range(3):
        app.processEvents()
    import gc

    gc.collect()


@pytest.fixture
def publishers():
    made = []

    def make():
        p = Publisher()
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def background(fn, *args):
    th = threading.Thread(target=fn, args=args, daemon=True)
    th.start()
    return th
