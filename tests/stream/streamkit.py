"""Shared helpers for the live-service tests: free ports, tiny models, a service in a thread, a raw publisher.

Imported as `streamkit` by tests/stream and as `tests.stream.streamkit` by tests/commands.
"""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest
import torch
import zmq

from livedenoise.export.engines.base import Engine
from livedenoise.models.nets import interp2d
from livedenoise.models.card import ModelCard
from livedenoise.models.checkpoint import save_checkpoint
from livedenoise.stream.protocols.frames import decode, encode_control
from livedenoise.stream.replay import open_publisher, wait_for_subscriber
from livedenoise.stream.service import ServeConfig, Service


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def endpoints() -> tuple[str, str]:
    return f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"


def lite_card(pre: int = 3, post: int = 0, mean: float = 100.0, std: float = 20.0) -> ModelCard:
    return ModelCard("interp2d", interp2d.preset_params("lite"), "2p", pre, post, 0,
                     list(interp2d.window(pre, post, 0).offsets), norm_mean=mean, norm_std=std)


def make_checkpoint(path, pre=3, post=0, seed=0, arch="interp2d", **kw):
    """A random-init checkpoint: interp2d lite, or DeepCAD-RT (`arch="cad3d"`)."""
    if arch == "cad3d":
        from livedenoise.models.nets import cad3d
        card = ModelCard("cad3d", cad3d.preset_params("rt"), "2p", pre, post, 0,
                         list(cad3d.window(pre, post, 0).offsets), norm_mean=kw.get("mean", 100.0),
                         norm_std=kw.get("std", 20.0))
    else:
        card = lite_card(pre, post, **kw)
    torch.manual_seed(seed)
    from livedenoise.models.registry import build_network

    return save_checkpoint(path, card, build_network(card).state_dict())


class MeanEngine(Engine):
    """A cheap real engine: the mean of the window's frames (plus an optional sleep per batch)."""

    backend = "numpy"

    def __init__(self, card: ModelCard, sleep_s: float = 0.0):
        self.card = card
        self.sleep_s = sleep_s
        self.calls = 0
        self.batch_sizes: list[int] = []

    def run(self, windows: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.batch_sizes.append(len(windows))
        if self.sleep_s:
            time.sleep(self.sleep_s)
        return windows.mean(axis=1)

    def warmup(self, batch: int = 1) -> None:
        pass

    def describe(self) -> str:
        return "mean of the window (test engine)"


class RunningService:
    """A Service bound in the test thread and run in another; `.stop()` returns the final stats."""

    def __init__(self, cfg: ServeConfig, engine=None, on_stats=None):
        self.cfg = cfg
        self.stats: list[dict] = []
        self.stop_event = threading.Event()
        self.service = Service(cfg, engine, self.stop_event, self._on_stats if on_stats is None else on_stats)
        self.final: dict | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _on_stats(self, s):
        self.stats.append(s)

    def _run(self):
        try:
            self.final = self.service.run()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def wait_frames_in(self, n: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.service.stats.frames_in < n and time.monotonic() < deadline:
            time.sleep(0.01)

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Until every received frame has been output, skipped or lost (or timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.service.table.cond:
                busy = any(not a.done and not a.failed and a.pipeline.backlog() for a in self.service.table.pending())
            if not busy:
                return
            time.sleep(0.02)

    def stop(self, timeout: float = 60.0) -> dict:
        self.stop_event.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "service did not stop"
        if self.error:
            raise self.error
        return self.final


class Collector:
    """SUB on the service output, decoding everything into a list (in a thread)."""

    def __init__(self, endpoint: str):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.connect(endpoint)
        self.messages: list = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop.is_set():
            if self.sock.poll(50):
                self.messages.append((decode(self.sock.recv_multipart()), time.perf_counter()))

    def wait_for(self, pred, timeout=20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(pred(m) for m, _ in list(self.messages)):
                return True
            time.sleep(0.02)
        return False

    def frames(self):
        from livedenoise.stream.protocols.frames import FrameMessage

        return [m for m, _ in self.messages if isinstance(m, FrameMessage)]

    def close(self):
        self._stop.set()
        self.thread.join(5)
        self.sock.close(linger=0)
        self.ctx.term()


class RawPublisher:
    """A test microscope: an XPUB bound on `endpoint` sending hand-made multipart messages."""

    def __init__(self, endpoint: str):
        self.ctx = zmq.Context()
        self.sock = open_publisher(self.ctx, endpoint)

    def wait_subscriber(self, timeout=20.0):
        assert wait_for_subscriber(self.sock, timeout), "the service never subscribed"

    def send(self, parts) -> None:
        self.sock.send_multipart(parts)

    def control(self, topic, **meta):
        self.send(encode_control(topic, meta))

    def close(self):
        self.sock.close(linger=1000)
        self.ctx.term()


def frame_parts(frame: int, img: np.ndarray, t: float | None = None, channel: int = 1, plane: int = 1):
    from livedenoise.stream.protocols.frames import FrameHeader, encode_frame

    h = FrameHeader(frame=frame, t=frame / 30 if t is None else t, shape=img.shape, dtype=str(img.dtype),
                    channel=channel, plane=plane, source="test")
    return encode_frame(h, img)


# -- fixtures (imported by the test modules: `from streamkit import cfg_factory`) --
@pytest.fixture
def cfg_factory():
    """ServeConfig on two fresh loopback ports, stats every 0.2 s."""

    def make(**kw) -> ServeConfig:
        i, o = endpoints()
        base = dict(input=i, output=o, stats_interval=0.2)
        base.update(kw)
        return ServeConfig(**base)

    return make
