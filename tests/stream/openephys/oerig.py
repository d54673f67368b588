"""A test rig: the ZMQ Interface plugin's sockets (PUB + heartbeat REP) driven by a test, and a real sidecar on loopback.

Everything is real: ZeroMQ sockets on 127.0.0.1 (free ports), the sidecar's
threads, its recordings on disk. Waits are for conditions, with generous
timeouts; nothing is asserted on speed.
"""

from __future__ import annotations

import glob
import json
import threading
import time
from pathlib import Path

import numpy as np
import zmq

from livedenoise.io.readers_ephys import open_recording
from livedenoise.io.writers_ephys import quantise
from livedenoise.stream.openephys.sidecar import Sidecar, SidecarConfig
from livedenoise.stream.protocols.zmq_interface import DATA, DataEncoder
from livedenoise.stream.replay import wait_for_subscriber
from livedenoise.stream.sinks.zmq_interface_out import HeartbeatResponder

BV = 0.195


def wait_for(cond, timeout: float = 60.0, step: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return bool(cond())


def settled(read, quiet: float = 1.0, timeout: float = 120.0):
    """read()'s value once it has not changed for `quiet` s (a counter that a lagging thread may still bump)."""
    end = time.monotonic() + timeout
    value, since = read(), time.monotonic()
    while time.monotonic() < end and time.monotonic() - since < quiet:
        time.sleep(0.05)
        now = read()
        if now != value:
            value, since = now, time.monotonic()
    return value


class Plugin:
    """The plugin's sockets: PUB on `data_port` (no send limit), and a heartbeat REP on data_port + 1.

    The PUB is an XPUB (it sends as a PUB does) so that `wait_subscribed` can see a client's subscription
    arrive: data sent after that is never lost to a slow-joining subscriber."""

    def __init__(self, data_port: int, ctx: zmq.Context | None = None, rep: bool = True):
        self.ctx = ctx or zmq.Context.instance()
        self.pub = self.ctx.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.pub.setsockopt(zmq.SNDHWM, 0)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(f"tcp://127.0.0.1:{data_port}")
        self.stop_event = threading.Event()
        self.rep = HeartbeatResponder(self.ctx, f"tcp://127.0.0.1:{data_port + 1}", self.stop_event) if rep else None
        if self.rep is not None:
            self.rep.start()
        self.sent = 0

    def wait_subscribed(self, timeout: float = 120.0) -> bool:
        """True once a client has subscribed to the data (each call waits for a new subscription)."""
        return wait_for_subscriber(self.pub, timeout, topic=DATA) >= 1

    def send(self, parts) -> None:
        self.pub.send_multipart(parts)
        self.sent += 1

    def close(self) -> None:
        self.stop_event.set()
        if self.rep is not None:
            self.rep.join(2)
        self.pub.close(0)


def block_data(C: int, n: int, sample_num: int, seed: int = 0) -> np.ndarray:
    """(C, n) float32 µV that are exact multiples of the recording's bit_volts (so int16 recordings are exact)."""
    rng = np.random.default_rng(seed + sample_num % 100_003)
    return (rng.integers(-2000, 2000, size=(C, n)) * BV).astype(np.float32)


class Acquisition:
    """Blocks of one stream as the plugin numbers them; remembers what was sent (sample_num -> (C, n) data)."""

    def __init__(self, plugin: Plugin, C: int, stream: str = "ProbeA-AP", rate: float = 30000.0):
        self.plugin, self.C = plugin, C
        self.enc = DataEncoder(stream, [f"CH{k + 1}" for k in range(C)], rate)
        self.sent: dict[int, np.ndarray] = {}

    def block(self, sample_num: int, n: int, skip=(), extra: list | None = None, pace: float = 0.0) -> np.ndarray:
        x = block_data(self.C, n, sample_num)
        parts = self.enc.encode_block(sample_num, x)
        for k, p in enumerate(parts):
            if k not in skip:
                self.plugin.send(p)
        for p in extra or []:
            self.plugin.send(p)
        self.sent[sample_num] = x
        if pace:
            time.sleep(pace)
        return x


def start_sidecar(model, data_port: int, plugin: Plugin | None, record=None, engine=None, ctx=None, **kw) -> Sidecar:
    cfg = dict(model=str(model), backend="torch", input=f"tcp://127.0.0.1:{data_port}", socket_port=None,
               zmq_output=None, stats_every=0, quiet=True, idle_flush_s=5.0, record=None if record is None else str(record))
    cfg.update(kw)
    sc = Sidecar(SidecarConfig(**cfg), engine=engine, ctx=ctx).start()
    if plugin is not None:
        assert plugin.wait_subscribed(), "the sidecar's subscription never reached the plugin"
        if plugin.rep is not None:
            assert plugin.rep.first.wait(120), "the sidecar's heartbeat never arrived"
    return sc


def raw_recordings(root) -> list:
    """Every raw recording under `root` (DIR/raw, DIR/segmentN/raw), in folder order."""
    paths = sorted(glob.glob(str(Path(root) / "**" / "raw"), recursive=True), key=lambda p: (len(p), p))
    return [open_recording(p) for p in paths]


def check_all_recorded(root, sent: dict[int, np.ndarray]) -> None:
    """Every sent block is in some raw recording, at its own sample numbers, every channel exact (int16)."""
    index = []
    for rec in raw_recordings(root):
        sn = np.asarray(rec.sample_numbers)
        index.append((rec, sn, rec.read_raw()))
    for s, x in sent.items():
        C, n = x.shape
        want = quantise(x.T, np.full(C, BV))
        for rec, sn, raw in index:
            if raw.shape[1] != C:
                continue
            hit = np.flatnonzero(sn == s)
            if any(k + n <= len(sn) and np.array_equal(sn[k:k + n], np.arange(s, s + n))
                   and np.array_equal(raw[k:k + n], want) for k in hit):
                break
        else:
            raise AssertionError(f"block at sample {s} ({C} x {n}) is not in any raw recording under {root}")


def filled_flags(root) -> list[dict]:
    out = []
    for f in sorted(glob.glob(str(Path(root) / "**" / "filled_channels.jsonl"), recursive=True)):
        out += [json.loads(line) for line in Path(f).read_text().splitlines()]
    return out
