"""The frame source of `serve`: SUB socket thread -> per-stream acquisitions, each a `FramePipeline`.

`FrameReceiver`'s thread only reads the socket, validates each message
(`protocols.frames.decode`: every field bounded at the edge), hands raw frames
to the recorder and pushes them into the pipeline of their (channel, plane)
stream (stream/pipeline.py: ring, segments, windows). It never waits on the
engine, so it keeps up with the acquisition whatever the model does (a SUB
socket never blocks the publisher in any case).

The thread never dies silently: it runs under `health.SupervisedThread`. A
malformed message is counted (`malformed`, with the last reason logged at most
every 5 s); an unexpected exception while handling one message is counted in
the thread's health (`errors`, `last_error`: the stats' `threads.receiver`)
and the thread starts over with the next message (`restarts`; the frame was
counted and recorded all the same); an exception outside message handling
(the socket itself) restarts the loop after a pause, and when those restarts
are exhausted `on_fatal(line)` stops the service (non-zero exit). No message
can make the service give up: only the loop's own failures count towards it.

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
- a jump forward by more than the ring holds (`max_gap` frames, `--ring`) is
  not a gap but a new acquisition (counted in `jumps`, not in
  `dropped_upstream`): gaps.classify's JUMP. Nothing is allocated, looped or
  counted in proportion to the jump;
- a stream's frame numbers advance by `frame_step` from the `start` message
  (default 1). ScanImage counts every plane (and flyback frame) as a frame, so
  with 3 planes each plane's stream numbers its frames 1, 4, 7, ...: its
  `start` says `frame_step: 3`. A frame number off that grid starts a new
  acquisition, like a counter going back;
- at most `max_streams` streams are open at once: a frame of one more stream
  closes the least recently used one (counted in `evicted`; it opens a new
  acquisition if it sends again). Every raw frame is recorded either way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import zmq

from livedenoise.stream.gaps import Step, classify
from livedenoise.stream.health import SupervisedThread, ThreadHealth
from livedenoise.stream.pipeline import FramePipeline
from livedenoise.stream.protocols.frames import ControlMessage, FrameHeader, ProtocolError, decode
from livedenoise.stream.sources.waiting import take_waiting

log = logging.getLogger("livedenoise.stream")

MALFORMED_LOG_EVERY_S = 5.0
LOG_EVERY_S = 5.0
MAX_CONTROLS = 256
"""start/stop messages waiting to be forwarded (a flood beyond this forwards only the newest)."""
DRAIN_MAX = 1000
"""Messages read per poll before the stop event is looked at again."""
FINAL_DRAIN_S = 10.0
"""On a graceful stop, at most this long taking what is already queued in the socket (a publisher that keeps
sending would otherwise keep the receiver going)."""

PipelineFactory = Callable[[tuple[int, int], str, int, str], FramePipeline]
"""(frame shape, dtype, frame step, name) -> a new pipeline for one acquisition."""


class RateLimitedLog:
    """One log line per `every_s` seconds at most; the lines in between are counted and summarised."""

    def __init__(self, level: int = logging.INFO, every_s: float = LOG_EVERY_S):
        self.level = level
        self.every_s = every_s
        self._last = -1e18
        self._suppressed = 0

    def __call__(self, msg: str, *args) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            self._suppressed += 1
            return
        if self._suppressed:
            msg += f" (and {self._suppressed} more such line(s) not shown)"
            self._suppressed = 0
        self._last = now
        log.log(self.level, msg, *args)


@dataclass
class Acquisition:
    """One (channel, plane) stream of one acquisition: its pipeline and what the sinks need."""

    stream: tuple[int, int]
    number: int
    """1, 2, ... per stream: a new one at every start / restart / jump / shape change."""
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
    faults: int = 0
    """Unexpected errors in a row while collecting or publishing its outputs (the engine loop's)."""

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
    `max_gap`: the largest forward gap (in frames of `frame_step`) that stays
    a gap in the same acquisition (the ring's capacity; None: no limit);
    `max_streams`: most streams open at once.
    """

    def __init__(self, make_pipeline: PipelineFactory, stats, recorder=None, max_closed: int = 8,
                 max_gap: int | None = None, max_streams: int = 256):
        self.make_pipeline = make_pipeline
        self.stats = stats
        self.recorder = recorder
        self.max_closed = max_closed
        self.max_gap = max_gap
        self.max_streams = max(1, int(max_streams))
        self.cond = threading.Condition()
        self.active: OrderedDict[tuple[int, int], Acquisition] = OrderedDict()
        """Open acquisitions, least recently fed first."""
        self.closed: list[Acquisition] = []
        self.controls: list[tuple[str, dict]] = []
        """start / stop messages waiting to be forwarded on the output (after the frames before them)."""
        self.start_meta: dict = {}
        self._numbers: dict[tuple[int, int], int] = {}
        self._log_restart = RateLimitedLog(logging.INFO)
        self._log_evict = RateLimitedLog(logging.WARNING)
        self._log_drop = RateLimitedLog(logging.WARNING)

    # -- called by the receiver thread ------------------------------------------------
    def on_frame(self, h: FrameHeader, pixels: np.ndarray, arrival: float, received: float) -> None:
        """Route one valid frame: its stream's pipeline, then the recorder (always, even if the pipeline fails).

        Errors: whatever the pipeline raises (unexpected), after the frame has been counted and recorded.
        """
        error = None
        with self.cond:
            acq = self.active.get(h.stream)
            if acq is not None:
                why = None
                if h.shape != acq.shape or h.dtype != acq.dtype:
                    why = f"frame size/type changed to {'x'.join(map(str, h.shape))} {h.dtype}"
                elif h.frame <= acq.last_frame_no:
                    why = "frame counter went back (publisher restart)"
                elif (h.frame - acq.first_frame) % acq.step:
                    why = f"frame {h.frame} is off the stream's frame step of {acq.step}"
                if why:
                    self.stats.restarts += 1
                elif classify(acq.last_frame_no + acq.step, h.frame,
                              None if self.max_gap is None else self.max_gap * acq.step) is Step.JUMP:
                    why = (f"frame number jumped from {acq.last_frame_no} to {h.frame}, beyond the "
                           f"{self.max_gap} frames the ring holds")
                    self.stats.jumps += 1
                if why:
                    self._log_restart("stream ch%d plane%d: %s; starting a new acquisition", h.channel, h.plane, why)
                    self._close(acq)
                    acq = None
                else:
                    self.active.move_to_end(h.stream)
            if acq is None:
                while len(self.active) >= self.max_streams:
                    lru = next(iter(self.active.values()))
                    self.stats.evicted += 1
                    self._log_evict("more than %d streams at once: closed the least recently used (ch%d plane%d)",
                                    self.max_streams, *lru.stream)
                    self._close(lru)
                acq = self._open(h)
            try:
                acq.pipeline.push(pixels, h.frame, h.t, arrival)  # a gap ends a segment; counted there
            except Exception as exc:  # noqa: BLE001 -- recorded below all the same, then reported
                error = exc
            acq.last_frame_no = h.frame
            self.stats.frames_in += 1
            number = acq.number
            meta = acq.meta
            self.cond.notify_all()
        if self.recorder is not None:
            self.recorder.write("raw", h.channel, h.plane, number, pixels, h.frame, h.t, received, meta)
        if error is not None:
            raise error

    def on_control(self, msg: ControlMessage) -> None:
        with self.cond:
            for acq in list(self.active.values()):
                self._close(acq)
            if msg.topic == "start":
                self.start_meta = dict(msg.meta)
            self.controls.append((msg.topic, dict(msg.meta)))
            if len(self.controls) > MAX_CONTROLS:
                del self.controls[:len(self.controls) - MAX_CONTROLS]
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
        step = self.start_meta.get("frame_step", 1)  # validated by decode (check_start): 1..65536 or absent
        step = int(step) if isinstance(step, (int, float)) and not isinstance(step, bool) and step >= 1 else 1
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
            lost = 0 if old.failed else max(0, old.pipeline.end - old.pipeline.next_out)
            self.stats.overflow += lost
            if self.recorder is not None:
                self.recorder.end("denoised", old.stream[0], old.stream[1], old.number)
            if lost:
                self._log_drop("dropped the unfinished tail (%d frames) of an old acquisition: restarts come too fast",
                               lost)

    def pending(self) -> list[Acquisition]:
        """Acquisitions with possible work, oldest first (call with the lock held)."""
        return self.closed + list(self.active.values())


class FrameReceiver:
    """The SUB socket's thread: decode, count, hand over. Never blocks on anything else, never dies silently.

    sock: the SUB socket (closed by this thread when it ends); table: the
    `StreamTable`; stats: `ServiceStats`; stop: ends the thread;
    on_fatal(line): called once if the loop cannot go on (restarts exhausted);
    health: where its `ThreadHealth` goes (one is made otherwise).
    """

    def __init__(self, sock: zmq.Socket, table: StreamTable, stats, stop: threading.Event,
                 on_fatal: Callable[[str], None] | None = None, health: ThreadHealth | None = None,
                 max_restarts: int = 5):
        self.sock = sock
        self.table = table
        self.stats = stats
        self.stop = stop
        self.health = health if health is not None else ThreadHealth("receiver")
        self._malformed_since_log = 0
        self._last_log = 0.0
        self._last_reason = ""
        self._log_error = RateLimitedLog(logging.ERROR)
        self.take_queued_on_stop = True
        """Whether a stop first takes what is already queued in the socket (a graceful stop); False to end at once."""
        self._sup = SupervisedThread("livedenoise-receiver", self._body, stop, cleanup=self._cleanup,
                                     on_fatal=on_fatal, max_restarts=max_restarts, health=self.health)
        self.thread = self._sup.thread

    def start(self) -> None:
        self._sup.start()

    def join(self, timeout: float | None = None) -> None:
        self._sup.join(timeout)

    def _body(self) -> None:
        """Poll, drain, handle; returns when `stop` is set, after taking what is already queued in the socket
        (`take_queued_on_stop`). Socket errors propagate (the supervisor restarts)."""
        while not self.stop.is_set():
            if not self.sock.poll(100):
                self._maybe_log_malformed()
                continue
            take_waiting(self.sock, self.handle, limit=DRAIN_MAX)  # drain what is there before polling again
            self._maybe_log_malformed()
        if self.take_queued_on_stop:
            self._take_queued()

    def _take_queued(self) -> int:
        """A graceful stop: handle what has already arrived in the socket (raw data is never dropped), without
        waiting for more; at most `FINAL_DRAIN_S` s and the socket's RCVHWM messages. Returns how many."""
        limit = self.sock.getsockopt(zmq.RCVHWM) or 10 * DRAIN_MAX  # 0: unlimited queue
        n = take_waiting(self.sock, self.handle, FINAL_DRAIN_S, limit)
        if self.sock.poll(0):
            log.warning("stopping: took %d queued message(s) (at most %g s, %d messages); what still arrives is "
                        "not received", n, FINAL_DRAIN_S, limit)
        elif n:
            log.debug("stopping: took %d message(s) already queued in the input socket", n)
        return n

    def _cleanup(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)
        self._maybe_log_malformed(force=True)

    def handle(self, parts: list[bytes]) -> None:
        """One message: decode, count, route. Never raises (unexpected errors go to `health`)."""
        try:
            self._handle(parts)
        except Exception as exc:  # noqa: BLE001 -- one message never ends reception
            self.health.record(exc, "message: ")
            self.health.restarts += 1  # started over with the next message (not counted towards giving up)
            self._log_error("receiver: unexpected error on one message (%d so far, reception goes on): %s: %s",
                            self.health.errors, type(exc).__name__, exc)

    def _handle(self, parts: list[bytes]) -> None:
        arrival, received = time.monotonic(), time.time()
        try:
            msg = decode(parts)
        except ProtocolError as exc:
            self.stats.malformed += 1
            self._malformed_since_log += 1
            self._last_reason = str(exc)
            self.stats.last_malformed = self._last_reason[:200]
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
