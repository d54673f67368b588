"""The frame source of `serve`: SUB socket thread -> per-stream acquisitions, each a `FramePipeline`.

`FrameReceiver`'s thread only reads the socket, validates each message
(`protocols.frames.decode`), hands raw frames to the recorder and pushes them
into the pipeline of their (channel, plane) stream (stream/pipeline.py: ring,
segments, windows). It never waits on the engine, so it keeps up with the
acquisition whatever the model does (a SUB socket never blocks the publisher
in any case).

Acquisition rules (docs/serve.md):
- a `start` message closes every open stream; the next frames open new ones;
- a `stop` message closes every open stream, so its last frames are output
  with the end of the acquisition known (the offline edge rule);
- a frame whose shape or dtype differs from its stream's, or whose frame
  number is not after the previous one (a publisher restart: ZeroMQ keeps
  order, so a counter going back means a new acquisition), closes that stream
  and opens a new one (counted in `restarts`);
- a skipped frame number is a gap: frames dropped upstream (counted in
  `dropped_upstream`). Nothing is invented for them: the pipeline ends its
  segment there (end-of-recording edge rule) and starts a new one at the
  received frame, in the same acquisition (same files) -- stream/gaps.py;
- a stream's frame numbers advance by `frame_step` from the `start` message
  (default 1). ScanImage counts every plane (and flyback frame) as a frame, so
  with 3 planes each plane's stream numbers its frames 1, 4, 7, ...: its
  `start` says `frame_step: 3`. A frame number off that grid starts a new
  acquisition, like a counter going back.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import zmq

from livedenoise.stream.pipeline import FramePipeline
from livedenoise.stream.protocols.frames import ControlMessage, FrameHeader, ProtocolError, decode

log = logging.getLogger("livedenoise.stream")

MALFORMED_LOG_EVERY_S = 5.0

PipelineFactory = Callable[[tuple[int, int], str, int, str], FramePipeline]
"""(frame shape, dtype, frame step, name) -> a new pipeline for one acquisition."""


@dataclass
class Acquisition:
    """One (channel, plane) stream of one acquisition: its pipeline and what the sinks need."""

    stream: tuple[int, int]
    number: int
    """1, 2, ... per stream: a new one at every start / restart / shape change."""
    pipeline: FramePipeline
    first_frame: int
    dtype: str
    source: str
    meta: dict = field(default_factory=dict)
    step: int = 1
    """Frame-number increment between consecutive frames of this stream (start's `frame_step`)."""
    last_frame_no: int = -1
    failed: bool = False
    """The engine cannot take this acquisition: its frames are only recorded."""
    checked: bool = False
    """Its frame size was checked against the model's."""

    @property
    def shape(self) -> tuple[int, int]:
        return self.pipeline.shape

    @property
    def closed(self) -> bool:
        return self.pipeline.closed

    @property
    def done(self) -> bool:
        return self.closed and (self.failed or self.pipeline.done)


class StreamTable:
    """Acquisitions shared by the receiver thread (writer) and the engine loop (reader).

    Every access holds `cond`'s lock; the receiver notifies it on each frame.
    """

    def __init__(self, make_pipeline: PipelineFactory, stats, recorder=None, max_closed: int = 8):
        self.make_pipeline = make_pipeline
        self.stats = stats
        self.recorder = recorder
        self.max_closed = max_closed
        self.cond = threading.Condition()
        self.active: dict[tuple[int, int], Acquisition] = {}
        self.closed: list[Acquisition] = []
        self.controls: list[tuple[str, dict]] = []
        """start / stop messages waiting to be forwarded on the output (after the frames before them)."""
        self.start_meta: dict = {}
        self._numbers: dict[tuple[int, int], int] = {}

    # -- called by the receiver thread ------------------------------------------------
    def on_frame(self, h: FrameHeader, pixels: np.ndarray, arrival: float, received: float) -> None:
        with self.cond:
            acq = self.active.get(h.stream)
            if acq is not None:
                why = None
                if h.shape != acq.shape or h.dtype != acq.dtype:
                    why = f"frame size/type changed to {h.shape[0]}x{h.shape[1]} {h.dtype}"
                elif h.frame <= acq.last_frame_no:
                    why = "frame counter went back (publisher restart)"
                elif (h.frame - acq.first_frame) % acq.step:
                    why = f"frame {h.frame} is off the stream's frame step of {acq.step}"
                if why:
                    self.stats.restarts += 1
                    log.info("stream ch%d plane%d: %s; starting a new acquisition", h.channel, h.plane, why)
                    self._close(acq)
                    acq = None
            if acq is None:
                acq = self._open(h)
            acq.pipeline.push(pixels, h.frame, h.t, arrival)  # a gap ends a segment; counted there
            acq.last_frame_no = h.frame
            self.stats.frames_in += 1
            number = acq.number
            meta = acq.meta
            self.cond.notify_all()
        if self.recorder is not None:
            self.recorder.write("raw", h.channel, h.plane, number, pixels, h.frame, h.t, received, meta)

    def on_control(self, msg: ControlMessage) -> None:
        with self.cond:
            for acq in list(self.active.values()):
                self._close(acq)
            if msg.topic == "start":
                self.start_meta = dict(msg.meta)
            self.controls.append((msg.topic, dict(msg.meta)))
            self.cond.notify_all()

    def close_all(self) -> None:
        with self.cond:
            for acq in list(self.active.values()):
                self._close(acq)
            self.cond.notify_all()

    def _open(self, h: FrameHeader) -> Acquisition:
        n = self._numbers.get(h.stream, 0) + 1
        self._numbers[h.stream] = n
        meta = {"start": self.start_meta, "source": h.source, "first_frame": h.frame}
        step = self.start_meta.get("frame_step", 1)
        step = step if isinstance(step, int) and not isinstance(step, bool) and step >= 1 else 1
        name = f"stream ch{h.channel} plane{h.plane} acquisition {n}"
        acq = Acquisition(h.stream, n, self.make_pipeline(h.shape, h.dtype, step, name), h.frame, h.dtype, h.source,
                          meta, step)
        self.active[h.stream] = acq
        return acq

    def _close(self, acq: Acquisition) -> None:
        acq.pipeline.finish()
        del self.active[acq.stream]
        self.closed.append(acq)
        if self.recorder is not None:
            self.recorder.end("raw", acq.stream[0], acq.stream[1], acq.number)
        while len(self.closed) > self.max_closed:  # restarts faster than the engine drains
            old = self.closed.pop(0)
            lost = max(0, old.pipeline.end - old.pipeline.next_out)
            self.stats.overflow += lost
            log.warning("dropped the unfinished tail (%d frames) of an old acquisition: restarts come too fast", lost)

    def pending(self) -> list[Acquisition]:
        """Acquisitions with possible work, oldest first (call with the lock held)."""
        return self.closed + list(self.active.values())


class FrameReceiver:
    """The SUB socket's thread: decode, count, hand over. Never blocks on anything else."""

    def __init__(self, sock: zmq.Socket, table: StreamTable, stats, stop: threading.Event):
        self.sock = sock
        self.table = table
        self.stats = stats
        self.stop = stop
        self._malformed_since_log = 0
        self._last_log = 0.0
        self._last_reason = ""
        self.thread = threading.Thread(target=self._run, name="livedenoise-receiver", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        try:
            while not self.stop.is_set():
                if not poller.poll(100):
                    self._maybe_log_malformed()
                    continue
                while True:  # drain what is there before polling again
                    try:
                        parts = self.sock.recv_multipart(flags=zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.handle(parts)
                self._maybe_log_malformed()
        finally:
            self.sock.close(linger=0)
            self._maybe_log_malformed(force=True)

    def handle(self, parts: list[bytes]) -> None:
        arrival, received = time.monotonic(), time.time()
        try:
            msg = decode(parts)
        except ProtocolError as exc:
            self.stats.malformed += 1
            self._malformed_since_log += 1
            self._last_reason = str(exc)
            return
        if isinstance(msg, ControlMessage):
            if msg.topic in ("start", "stop"):
                self.table.on_control(msg)
            return
        self.table.on_frame(msg.header, msg.pixels, arrival, received)

    def _maybe_log_malformed(self, force: bool = False) -> None:
        if not self._malformed_since_log:
            return
        now = time.monotonic()
        if force or now - self._last_log >= MALFORMED_LOG_EVERY_S:
            log.warning("ignored %d malformed message(s) (%d in total); last: %s",
                        self._malformed_since_log, self.stats.malformed, self._last_reason)
            self._malformed_since_log = 0
            self._last_log = now
