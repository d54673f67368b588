"""The receiver-thread lifecycle shared by the viewer's imaging and ephys sources, and their SUB sockets.

A source owns one daemon thread that drains its socket or file; the Qt side only
reads what the thread left behind. An exception in the thread is kept for the
status bar instead of killing the viewer.
"""

from __future__ import annotations

import threading
import time

from livedenoise.errors import UserError


def connectable(endpoint: str) -> str:
    """A bind address (`tcp://*:5571`, `tcp://0.0.0.0:5571`) turned into one a SUB can connect to."""
    for wildcard in ("tcp://*:", "tcp://0.0.0.0:"):
        if endpoint.startswith(wildcard):
            return "tcp://127.0.0.1:" + endpoint[len(wildcard):]
    return endpoint


class SourceThread:
    """One daemon thread running `_run`; its exception, if any, is kept in `_error`."""

    def __init__(self, name: str, endpoint: str, thread_prefix: str = "view"):
        self.name = name
        self.endpoint = endpoint
        self._thread_name = f"{thread_prefix}-{name}"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()
        self._rate_t = self._t0
        self._error = ""

    def start(self):
        self._t0 = self._rate_t = time.monotonic()
        self._thread = threading.Thread(target=self._guarded_run, name=self._thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def seconds_since_start(self) -> float:
        return time.monotonic() - self._t0

    def _guarded_run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # surfaced in the status bar, never a crash of the GUI
            with self._lock:
                self._error = f"{type(exc).__name__}: {exc}"
        finally:
            self._on_finished()

    def _subscribe(self, topic: bytes, rcvhwm: int):
        """A SUB socket connected to this source's endpoint, and a poller on it."""
        import zmq

        sock = zmq.Context.instance().socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, rcvhwm)
        sock.setsockopt(zmq.SUBSCRIBE, topic)
        try:
            sock.connect(connectable(self.endpoint))
        except zmq.ZMQError as exc:
            sock.close(0)
            raise UserError(f"cannot connect to {self.endpoint}: {exc}") from None
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        return sock, poller

    def _on_finished(self) -> None:
        """Called on the thread when `_run` returns or fails."""

    def _run(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError
