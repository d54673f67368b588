"""Shared helpers for the live-service tests: free ports, tiny models, a service in a thread, a raw publisher.

Imported as `streamkit` by tests/stream and as `tests.stream.streamkit` by tests/commands.
"""

from __future__ import annotations

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
from livedenoise.stream.loopback import free_endpoints
from livedenoise.stream.protocols.frames import decode, encode_control
from livedenoise.stream.replay import open_publisher, wait_for_subscriber
from livedenoise.stream.service import ServeConfig, Service


def endpoints() -> tuple[str, str]:
    """Two different free loopback endpoints, outside the ephemeral range (livedenoise.stream.loopback)."""
    a, b = free_endpoints(2)
    return a, b


def lite_card(pre: int = 3, post: int = 0, mean: float = 100.0, std: float = 20.0, preset: str = "lite") -> ModelCard:
    return ModelCard("interp2d", interp2d.preset_params(preset), "2p", pre, post, 0,
                     list(interp2d.window(pre, post, 0).offsets), norm_mean=mean, norm_std=std)


def make_checkpoint(path, pre=3, post=0, seed=0, arch="interp2d", **kw):
    """A random-init checkpoint: interp2d lite (`arch="interp2d"`), the default `fast` (`arch="interp2d-fast"`),
    or DeepCAD-RT (`arch="cad3d"`)."""
    if arch == "cad3d":
        from livedenoise.models.nets import cad3d
        card = ModelCard("cad3d", cad3d.preset_params("rt"), "2p", pre, post, 0,
                         list(cad3d.window(pre, post, 0).offsets), norm_mean=kw.get("mean", 100.0),
                         norm_std=kw.get("std", 20.0))
    elif arch == "interp2d-fast":
        card = lite_card(pre, post, preset="fast", **kw)
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

    def __init__(self, cfg: ServeConfig, engine=None, on_stats=None, service_cls=Service):
        self.cfg = cfg
        self.stats: list[dict] = []
        self.stop_event = threading.Event()
        self.service = service_cls(cfg, engine, self.stop_event, self._on_stats if on_stats is None else on_stats)
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

    def wait_frames_in(self, n: int, timeout: float = 120.0) -> bool:
        """Until `frames_in` reaches n (True), or timeout (False)."""
        deadline = time.monotonic() + timeout
        while self.service.stats.frames_in < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.service.stats.frames_in >= n

    def wait_messages(self, n: int, timeout: float = 60.0) -> bool:
        """Until `frames_in + malformed` reaches n (every message sent so far was handled), or timeout."""
        st = self.service.stats
        deadline = time.monotonic() + timeout
        while st.frames_in + st.malformed < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return st.frames_in + st.malformed >= n

    def wait_idle(self, timeout: float = 120.0) -> None:
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

    def wait_for(self, pred, timeout=120.0) -> bool:
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

    def wait_subscriber(self, timeout=120.0):
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


# -- hostile input: a seeded generator of random and mutated messages (fuzz tests) ------------------------------
_FIELDS = ("v", "frame", "t", "channel", "plane", "shape", "dtype", "order", "source")
_WEIRD_VALUES = [None, True, False, -1, 0, 1, 2, 63, 64, 65, 4096, 4097, 2**31, 2**62, 2**62 + 1, 2**63 - 1, 2**63,
                 2**64, -2**63, 1.5, 2.0, -0.0, 1e308, "", "1", "int16", "C", "x" * 300, [], [1], [2, 3], [0, 3],
                 [32768, 512], [8192, 8192], [2, 3, 4], {}, {"a": 1}, [[1, 2]], ["2", "3"]]
_LITERALS = [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"9" * 5000, b"-" + b"9" * 25, b"1" * 19,
             b"9223372036854775808", b"[" * 40 + b"]" * 40, b'"\\ud800"', b"0x10", b"01", b"+1", b"1.", b".5"]


def valid_frame(rng: np.random.Generator, frame: int, channel: int = 1, plane: int = 1) -> list[bytes]:
    """A small valid frame message with random pixels, shape and dtype."""
    dtype = ("int16", "uint16", "float32")[int(rng.integers(3))]
    shape = (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
    img = rng.integers(0, 1000, shape).astype(dtype)
    return frame_parts(frame, img, channel=channel, plane=plane)


def hostile_message(rng: np.random.Generator) -> list[bytes]:
    """One random or mutated message: random bytes, truncated / deep / huge JSON, wrong types, huge ints, NaN,
    wrong payload sizes, mutations of valid frame, start and stop messages. Some happen to be valid."""
    import json as _json

    kind = int(rng.integers(12))
    base = valid_frame(rng, int(rng.integers(0, 50)), int(rng.integers(0, 3)), int(rng.integers(0, 3)))
    if kind == 0:  # random bytes, random number of parts, maybe a real topic
        n = int(rng.integers(0, 5))
        parts = [rng.bytes(int(rng.integers(0, 40))) for _ in range(n)]
        if parts and rng.random() < 0.7:
            parts[0] = [b"frame", b"start", b"stop", b"stats"][int(rng.integers(4))]
        return parts
    if kind == 1:  # truncated header
        h = base[1]
        return [b"frame", h[: int(rng.integers(0, len(h)))], base[2]]
    if kind == 2:  # deep nesting, in a field or as the whole header
        d = int(rng.choice([17, 100, 1000, 20_000]))
        o, c = (b"[", b"]") if rng.random() < 0.5 else (b'{"a":', b"}")
        body = b'{"frame": 1, "x": ' + o * d + b"1" + c * d + b"}"
        return [[b"frame", b"start", b"stop"][int(rng.integers(3))], body] + ([base[2]] if rng.random() < 0.5 else [])
    if kind == 3:  # a huge header
        return [b"frame", b'{"frame": 1, "pad": "' + b"x" * int(rng.integers(60_000, 200_000)) + b'"}', base[2]]
    if kind == 4:  # a hostile literal spliced in for a field's value
        h = _json.loads(base[1])
        key = _FIELDS[int(rng.integers(len(_FIELDS)))]
        h[key] = "@@"
        raw = _json.dumps(h).encode().replace(b'"@@"', _LITERALS[int(rng.integers(len(_LITERALS)))])
        return [b"frame", raw, base[2]]
    if kind == 5:  # a field of the wrong type or out of range
        h = _json.loads(base[1])
        key = _FIELDS[int(rng.integers(len(_FIELDS)))]
        if rng.random() < 0.2:
            h.pop(key, None)
        else:
            h[key] = _WEIRD_VALUES[int(rng.integers(len(_WEIRD_VALUES)))]
        return [b"frame", _json.dumps(h).encode(), base[2]]
    if kind == 6:  # wrong payload size
        p = base[2]
        cut = int(rng.integers(-len(p), 9))
        return [b"frame", base[1], p[:cut] if cut < 0 else p + rng.bytes(cut)]
    if kind == 7:  # flipped bytes in the header
        h = bytearray(base[1])
        for _ in range(int(rng.integers(1, 4))):
            h[int(rng.integers(len(h)))] = int(rng.integers(256))
        return [b"frame", bytes(h), base[2]]
    if kind == 8:  # start / stop with bad or good fields
        topic = b"start" if rng.random() < 0.6 else b"stop"
        meta = {"v": [1, 1, 1, 2, 0, "1", None][int(rng.integers(7))]}
        if rng.random() < 0.5:
            meta["frame_step"] = [1, 1, 0, -3, 2**20, "2", 1.5][int(rng.integers(7))]
        if rng.random() < 0.3:
            meta["frame_rate"] = [30.0, -1, "x"][int(rng.integers(3))]
        parts = [topic, _json.dumps(meta).encode()]
        if rng.random() < 0.2:
            parts.append(rng.bytes(int(rng.integers(0, 3))))
        return parts
    if kind == 9:  # a topic that passes the SUB prefix filter but is not ours
        return [b"frame" + rng.bytes(int(rng.integers(1, 6))), base[1], base[2]]
    if kind == 10:  # JSON that is not an object
        return [b"frame", [b"[]", b"3", b'"x"', b"null", b"true", b"[1, 2]"][int(rng.integers(6))], base[2]]
    return [base[0], base[1], base[2], b"extra"] if rng.random() < 0.5 else [base[0], base[1]]  # part counts


def raw_frames_recorded(directory) -> "collections.Counter":
    """Every raw frame in every recorded file of `directory` (parts and `.partial` files included), as a
    multiset of (channel, plane, frame number, dtype, shape, pixel bytes)."""
    import collections
    from pathlib import Path

    import h5py

    from livedenoise.stream.sinks.recorder import read_recording

    got = collections.Counter()
    for p in sorted(Path(directory).glob("raw_*.h5")):
        with h5py.File(p, "r", libver="latest", swmr=True) as fh:
            ch, pl = int(fh.attrs["channel"]), int(fh.attrs["plane"])
        r = read_recording(p)
        for k in range(len(r["frame"])):
            f = r["frames"][k]
            got[(ch, pl, int(r["frame"][k]), f.dtype.str, f.shape, np.ascontiguousarray(f).tobytes())] += 1
    return got


def read_stream_safe(rec) -> list[int]:
    """Raw frame numbers recorded so far in the directory `rec` (files still being written included)."""
    from livedenoise.stream.sinks.recorder import read_recording

    out = []
    for p in sorted(rec.glob("raw_*.h5")) if rec.exists() else ():
        try:
            out += [int(x) for x in read_recording(p)["frame"]]
        except Exception:  # being created right now
            pass
    return out


def frame_key(msg) -> tuple:
    """The `raw_frames_recorded` key of a decoded FrameMessage."""
    h, px = msg.header, msg.pixels
    return (h.channel, h.plane, h.frame, px.dtype.str, px.shape, np.ascontiguousarray(px).tobytes())


def delivered(parts) -> bool:
    """Whether a SUB socket subscribed to frame/start/stop (serve's) receives this message at all."""
    return bool(parts) and any(bytes(parts[0]).startswith(t) for t in (b"frame", b"start", b"stop"))
