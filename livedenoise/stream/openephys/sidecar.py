"""Owns the live Open Ephys sidecar: ZMQ Interface in, `SamplePipeline`, Ephys Socket / ZMQ / recorder out.

    Open Ephys GUI ──ZMQ Interface (PUB :5556, REP :5557)──> OpenEphysReceiver thread
        (SUB b"DATA"/b"EVENT", heartbeat REQ thread, BlockAssembler) ──queue──>
    engine thread: blocks concatenated while it is behind (batches as large as
        needed), SamplePipeline (segments, ring buffer in samples, engine) ──> sinks:
        Ephys Socket server (:9001, the GUI reads it as a new source),
        ZMQ Interface-format PUB (:5560, REP :5561), --record raw + denoised Binary.
    monitor (the caller of `run()`): stats, --duration, --stop-after-idle, shutdown.

The denoising, the segmenting at gaps and restarts and the edge rules are the
pipeline's (stream/ephys.py), shared with `livedenoise denoise`; this module
only routes items. At a `Gap` the pipeline ends the segment (its tail goes out
with the end-of-recording rule) when the next block's sample number arrives,
and recording continues in the same files with the true sample numbers; a
`Restart` (a counter falling back, a jump beyond the ring, a new rate or
channel count), or data resuming after the input went idle, also ends the
recording, and the next block opens `DIR/segmentN`.

Threads (each a `SupervisedThread`, stream/health.py; their health is in the
stats under `threads`): `openephys-receiver`, `openephys-heartbeat`,
`openephys-engine`, `ephys-socket`, `zmq-heartbeat-rep`. An unexpected error
on one message or one batch is counted (the thread's `errors`, `last_error`)
and the thread goes on; an error in a thread's loop restarts it; a thread that
cannot go on (too many restarts) is fatal: the sidecar stops (heartbeats to
the plugin stop with it, so the GUI sees it gone), processes and records what
it had received, and `run()` returns with `fatal` set (the command exits 1
with that one line).

Stopping (`stop()`, Ctrl-C, `--duration`, `--stop-after-idle`): the receiver
reads what is already queued on its socket, hands over what the assembler
holds (missing channels filled and flagged), and only then does the engine
thread finish: everything received is processed (or, when the engine is more
than `max_backlog_s` behind, skipped as `overflow`: recorded raw, not
denoised) and recorded before `run()` returns. The hand-over from the
receiver to the engine thread holds at most `max_queue_mb` (stream/handover.py):
if the engine thread stalls altogether, further blocks are lost and counted
(`lost_samples`) rather than growing memory without bound. `--stop-after-idle S` counts
from the last message *received*, not processed.

Output latency: a sample leaves once `lag` later samples exist, i.e. at most
lag samples + one block after it was acquired (plus one more block when the
channel count is learned rather than given, plus compute). When input stops
for `idle_flush_s` the tail is flushed with the end-of-recording rule, so a
finished acquisition is denoised exactly like `livedenoise denoise` would.
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zmq

from livedenoise.errors import UserError
from livedenoise.models.card import rate_mismatch
from livedenoise.stream import gaps
from livedenoise.stream.ephys import SamplePipeline, Samples, open_ephys_engine, ring_capacity
from livedenoise.stream.handover import BoundedHandover
from livedenoise.stream.health import SupervisedThread, ThreadHealth
from livedenoise.stream.sources.openephys import Block, Gap, OpenEphysReceiver, Restart

log = logging.getLogger("livedenoise.stream.openephys")

DEFAULT_INPUT = "tcp://127.0.0.1:5556"
FILLED_FILE = "filled_channels.jsonl"
"""Beside each recording's raw/ and denoised/: one JSON line per block whose missing channels were filled with zeros."""


def default_threads() -> int:
    """Compute threads for the engine: all cores but one (the receiver's), at most 8."""
    import os

    return max(1, min(8, (os.cpu_count() or 2) - 1))


@dataclass
class SidecarConfig:
    model: str | None = None
    input: str = DEFAULT_INPUT
    stream: str | None = None
    channels: int | None = None
    backend: str = "auto"
    device: str | None = None
    threads: int | None = None
    socket_port: int | None = 9001
    """Ephys Socket server port; None disables it, 0 picks a free port."""
    socket_host: str = "127.0.0.1"
    socket_samples: int | None = None
    """Samples per Ephys Socket packet (default: the first input block's size)."""
    zmq_output: str | None = "tcp://127.0.0.1:5560"
    zmq_stream_name: str | None = None
    record: str | None = None
    record_bit_volts: float = 0.195
    record_settings: str | None = None
    """The acquisition's Open Ephys settings.xml, copied beside both recordings (probe geometry for sorters)."""
    stats_every: float = 5.0
    stats_file: str | None = None
    duration: float | None = None
    stop_after_idle: float | None = None
    """Stop once data has come and then stopped for this many seconds (scripted runs)."""
    force_rate: bool = False
    """Denoise even when the stream's sample rate is not the one the model was trained at
    (`models.card.rate_mismatch`); without it such a stream stops the sidecar (`refused`)."""
    heartbeat_s: float = 2.0
    heartbeat_timeout_s: float = 1.0
    """A heartbeat without a reply within this many seconds counts as a timeout (the socket is reopened)."""
    idle_flush_s: float = 0.5
    max_block: int = 4096
    batch: int = 256
    """Windows per engine call for per-sample models (interp-ephys); larger suits GPUs."""
    max_pending: int = 3
    max_backlog_s: float = 10.0
    """When more than this much data waits (the engine is too slow), the oldest is skipped (`overflow`:
    recorded raw, not denoised)."""
    max_queue_mb: float = 1024.0
    """The most received data (MB) waiting for the engine thread; beyond it received blocks are lost,
    counted as `lost_samples` (the engine thread cannot even record: `stream.handover`)."""
    max_gap: int | None = None
    """Largest forward sample_num jump that is a gap (same recording); a larger one is a new acquisition.
    None: the pipeline ring's capacity (`stream.ephys.ring_capacity`, ~1.1 s at 30 kHz with the defaults)."""
    quiet: bool = False


class SidecarStats:
    def __init__(self):
        self.started = time.monotonic()
        self.processed_samples = 0
        self.output_samples = 0
        self.busy_s = 0.0
        self.batches = 0
        self.latency_ms: list[float] = []
        self.first_data: float | None = None
        self.engine_errors = 0
        self.failed_samples = 0
        """Samples whose denoising failed (engine error): recorded raw, not output."""
        self.emits = 0
        self.segments_before = 0
        self.passthrough_before = 0
        self.too_short_before = 0
        self.overflow = 0
        self.record_errors = 0
        self.record_dropped = 0
        """Raw samples that could not be recorded (a writer failed)."""
        self.filled_blocks = 0
        self.output_errors = 0
        """Failed writes to the Ephys Socket or ZMQ output (the other outputs went on)."""


def _weigh(item) -> tuple[int, int]:
    """A queued item's payload (bytes, samples): blocks weigh their data; gaps, restarts and "idle" nothing."""
    if isinstance(item, Block):
        return item.data.nbytes, item.data.shape[1]
    return 0, 0


class _Skipped:
    """A block skipped because the engine is behind (overflow): recorded raw, not denoised."""

    __slots__ = ("block",)

    def __init__(self, block: Block):
        self.block = block


class Sidecar:
    """The live sidecar: `start()` (threads + a monitor thread) and `stop()`, or `run()` on the caller's thread.

    cfg: `SidecarConfig`. engine: an opened engine (default: opened from
    `cfg.model`). ctx: the ZeroMQ context (default: the process's instance).
    Raises zmq.ZMQError / OSError when an output port cannot be bound.
    `snapshot()` gives the stats at any time; `fatal` is the line of a thread
    that could not go on (None otherwise).
    """

    def __init__(self, cfg: SidecarConfig, engine=None, ctx: zmq.Context | None = None):
        self.cfg = cfg
        self.ctx = ctx or zmq.Context.instance()
        if engine is None:
            threads = cfg.threads or default_threads()
            if cfg.backend in ("auto", "torch"):
                import torch

                torch.set_num_threads(threads)  # leave a core to the receiver; oversubscription is ruinous
            engine = open_ephys_engine(cfg.model, cfg.backend, device=cfg.device, threads=threads)
        self.engine = engine
        self.card = self.engine.card
        self.stop_event = threading.Event()
        """Set to stop (signals, stop(), duration, idle, a fatal error): what was received is still processed."""
        self.abort_event = threading.Event()
        """Set to stop without processing what is queued (a second Ctrl-C, the engine thread failing)."""
        self.fatal: str | None = None
        self.refused: str | None = None
        """One line when the stream cannot be denoised with this model (its sample rate): the sidecar stops,
        the command exits 2."""
        self.q = BoundedHandover(int(cfg.max_queue_mb * 2**20), _weigh)
        self.max_gap = int(cfg.max_gap) if cfg.max_gap else ring_capacity(self.card, cfg.max_block)
        self.receiver = OpenEphysReceiver(cfg.input, self.q, self.stop_event, cfg.stream, cfg.channels,
                                          heartbeat_s=cfg.heartbeat_s, heartbeat_timeout_s=cfg.heartbeat_timeout_s,
                                          idle_flush_s=cfg.idle_flush_s, ctx=self.ctx,
                                          max_pending=cfg.max_pending, max_gap=self.max_gap, on_fatal=self._on_fatal)
        self.socket = None
        self.zout = None
        try:
            if cfg.socket_port is not None:
                from livedenoise.stream.sinks.ephys_socket import EphysSocketServer

                self.socket = EphysSocketServer(cfg.socket_port, cfg.socket_host, cfg.socket_samples,
                                                on_fatal=self._on_fatal)
            if cfg.zmq_output:
                from livedenoise.stream.sinks.zmq_interface_out import ZmqInterfaceOutput

                self.zout = ZmqInterfaceOutput(cfg.zmq_output, self.ctx, stream_name=cfg.zmq_stream_name,
                                               on_fatal=self._on_fatal)
        except Exception:
            if self.socket is not None:
                self.socket.close()
            raise
        self.stats = SidecarStats()
        self.pipe: SamplePipeline | None = None
        self.recording = 0
        """Recording folders opened so far (DIR, DIR/segment2, ...)."""
        self.stream_name = ""
        self.sample_rate = 0.0
        self.names: list[str] = []
        self.rec_raw = self.rec_den = None
        self._rec_root: Path | None = None
        self._filled_fh = None
        self._record_retry_at = 0.0
        self.engine_health = ThreadHealth("openephys-engine")
        self.engine_thread = SupervisedThread("openephys-engine", self._engine_body, self.abort_event,
                                              on_fatal=self._on_engine_fatal, health=self.engine_health)
        self._rx_finished = threading.Event()
        self._started = False
        self._start_lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self._stats_fh = open(cfg.stats_file, "a") if cfg.stats_file else None
        self.final_stats: dict | None = None
        self._finished = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    def _start_threads(self) -> None:
        with self._start_lock:
            if self._started:
                return
            self._started = True
        self.receiver.start()
        self.receiver.ready.wait(5)
        self.engine_thread.start()

    def start(self) -> "Sidecar":
        """Start the threads and a monitor thread running `run()`; returns self."""
        self._start_threads()
        self.thread = threading.Thread(target=self.run, name="openephys-sidecar", daemon=True)
        self.thread.start()
        return self

    def stop(self, timeout: float = 120.0) -> dict:
        """Stop, wait until what was received is processed and recorded (up to `timeout` s); the final stats."""
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout)
            if self.thread.is_alive():
                self.abort_event.set()
                self.thread.join(10)
        return self.final_stats or self.snapshot()

    def _on_fatal(self, line: str) -> None:
        if self.fatal is None:
            self.fatal = line
        log.error("fatal: %s; stopping", line)
        self.stop_event.set()  # heartbeats to the plugin stop with the receiver: the GUI sees the sidecar gone
        if self.zout is not None:
            self.zout.stop_heartbeats()  # and clients of the ZMQ output see it gone too

    def _on_engine_fatal(self, line: str) -> None:
        self.abort_event.set()
        self._on_fatal(line)

    def run(self) -> dict:
        """Run until stop() / duration / idle / a fatal error, on this thread; returns the final stats."""
        self._start_threads()
        t_end = None if not self.cfg.duration else time.monotonic() + self.cfg.duration
        next_stats = time.monotonic() + self.cfg.stats_every if self.cfg.stats_every else None
        try:
            while not self.stop_event.is_set():
                now = time.monotonic()
                if t_end is not None and now > t_end:
                    break
                last = self.receiver.last_message
                if self.cfg.stop_after_idle and last is not None and now - last > self.cfg.stop_after_idle:
                    log.info("no message for %g s: stopping", self.cfg.stop_after_idle)
                    break
                if next_stats is not None and now >= next_stats:
                    self._emit_stats()
                    next_stats = now + self.cfg.stats_every
                self.stop_event.wait(0.05)
        finally:
            self._shutdown()
        return self.final_stats

    def _shutdown(self) -> None:
        self.stop_event.set()
        # 1. the receiver ends: what is on its socket is read, what the assembler holds goes on the queue
        if not self.receiver.finish(timeout=30):
            log.error("the receiver did not stop within 30 s")
        self._rx_finished.set()
        # 2. the engine thread processes everything queued, then ends
        while self.engine_thread.is_alive() and not self.abort_event.is_set():
            self.engine_thread.join(0.2)
        self.engine_thread.join(5)
        try:
            if not self.engine_thread.is_alive():
                self._end_segment()
        except Exception as exc:  # noqa: BLE001
            self.engine_health.record(exc, "final segment: ")
            log.exception("could not end the last segment")
        finally:
            self.final_stats = self.snapshot(final=True)
            self._emit_stats(self.final_stats)
            if self.socket is not None:
                self.socket.close()
            if self.zout is not None:
                self.zout.close()
            if self._stats_fh:
                self._stats_fh.close()
                self._stats_fh = None
            self._finished.set()

    # ------------------------------------------------------------------ the engine thread

    def _engine_body(self) -> None:
        while not self.abort_event.is_set():
            if self._rx_finished.is_set() and self.q.empty():
                return
            try:
                items = [self.q.get(timeout=0.1)]
            except queue.Empty:
                continue
            while True:
                try:
                    items.append(self.q.get_nowait())
                except queue.Empty:
                    break
            try:
                self._handle(self._shed(items))
            except Exception as exc:  # noqa: BLE001 -- one bad batch is counted; the stream goes on
                self.engine_health.record(exc, "batch: ")
                log.exception("unexpected error on a batch (counted; the segment ends, the stream goes on)")
                self._drop_segment()

    def _drop_segment(self) -> None:
        """After an unexpected error: the pipeline's state is unknown; the next block starts a new segment."""
        try:
            if self.pipe is not None:
                self.pipe.discard()
            self._close_recording()
        except Exception as exc:  # noqa: BLE001
            self.engine_health.record(exc, "reset: ")

    # ------------------------------------------------------------------ processing

    def _shed(self, items: list) -> list:
        """Keep at most max_backlog_s of queued data; older blocks are skipped (overflow: recorded raw only)."""
        blocks = [it for it in items if isinstance(it, Block)]
        if not blocks or not self.cfg.max_backlog_s:
            return items
        limit = self.cfg.max_backlog_s * (blocks[0].sample_rate or 30000.0)
        total = sum(b.data.shape[1] for b in blocks)
        if total <= limit:
            return items
        keep, acc, full = [], 0, False
        for it in reversed(items):
            if isinstance(it, Block):
                full = full or (acc > 0 and acc + it.data.shape[1] > limit)  # the newest block is always kept
                if full:
                    keep.append(_Skipped(it))
                    continue
                acc += it.data.shape[1]
            keep.append(it)
        log.warning("engine too slow: skipped %d queued samples (overflow, recorded raw only); a new segment "
                    "starts after them", total - acc)
        # the kept blocks carry their sample numbers: the pipeline sees the jump as a gap
        return list(reversed(keep))

    def _handle(self, items: list) -> None:
        run: list[Block] = []
        for it in items:
            if isinstance(it, Block):
                if run and (it.data.shape[0] != run[0].data.shape[0]):
                    self._process(run)
                    run = []
                run.append(it)
                continue
            if run:
                self._process(run)
                run = []
            if isinstance(it, _Skipped):
                self._skip(it.block)
            elif isinstance(it, Gap):
                pass  # the pipeline sees the jump in the next block's sample numbers and ends the segment itself
            elif isinstance(it, Restart):  # also a new recording folder (and message_num restarts on the ZMQ output)
                self._end_segment()
                if self.zout is not None:
                    self.zout.restart()
            elif it == "idle":
                self._end_segment()
        if run:
            self._process(run)

    def _skip(self, block: Block, count: bool = True) -> None:
        """Overflow: the block is recorded raw (never lost) but not denoised; the pipeline sees a gap after it.
        `count`: add it to `overflow` (not when the stream was refused)."""
        n = block.data.shape[1]
        if count:
            self.stats.overflow += n
        if self.pipe is not None and self.pipe.C != block.data.shape[0]:
            self._end_segment()
        self._record_raw([block], block.data.T, block.sample_numbers)

    def _process(self, blocks: list[Block]) -> None:
        t0 = time.perf_counter()
        first = blocks[0]
        C = first.data.shape[0]
        if self.pipe is None or self.pipe.C != C:
            self._end_segment()
            if self.pipe is not None:  # a new channel count: a new pipeline; keep the old one's counts
                self.stats.segments_before += self.pipe.segments
                self.stats.passthrough_before += self.pipe.passthrough
                self.stats.too_short_before += self.pipe.too_short
            try:
                self.pipe = SamplePipeline(self.engine, C, max_block=self.cfg.max_block, batch=self.cfg.batch,
                                           max_gap=self.max_gap)
            except UserError as exc:  # a model made for another probe layout (site-ephys): refuse, record raw
                self.pipe = None
                if self.refused is None:
                    self.refused = f"stream {first.stream!r}: {exc}"
                    self._on_fatal(self.refused)
                for b in blocks:
                    self._skip(b, count=False)
                return
            if self.socket is not None:
                self.socket.configure(C, self.cfg.socket_samples or first.data.shape[1])
        if self.stats.first_data is None:
            self.stats.first_data = time.monotonic()
        if (first.stream, first.sample_rate, first.channel_names) != (self.stream_name, self.sample_rate, self.names):
            self.stream_name, self.sample_rate, self.names = first.stream, first.sample_rate, list(first.channel_names)
            if self.zout is not None:
                self.zout.configure(first.stream, self.names, first.sample_rate)
            log.info("stream %r: %d channels at %g Hz from sample %d; model %s, lag %d samples",
                     first.stream, C, first.sample_rate, first.sample_num, self.card.arch, self.card.lag)
            why = rate_mismatch(self.card, first.sample_rate)
            if why is not None and self.cfg.force_rate:
                log.warning("%s (--force-rate)", why)
            elif why is not None and self.refused is None:
                self.refused = (f"stream {first.stream!r}: {why}; train a model on data at {first.sample_rate:g} Hz, "
                                "or start the sidecar with --force-rate to run it anyway")
                self._on_fatal(self.refused)
        if self.refused is not None:  # nothing is denoised with the wrong model; the raw data are still recorded
            for b in blocks:
                self._skip(b, count=False)
            return
        raw = np.concatenate([b.data for b in blocks], axis=1).T if len(blocks) > 1 else first.data.T  # (samples, C)
        sn = np.concatenate([b.sample_numbers for b in blocks]) if len(blocks) > 1 else first.sample_numbers
        self._record_raw(blocks, raw, sn)
        try:
            out = self.pipe.push(raw, sn)
        except Exception as exc:  # an engine failure must not kill the acquisition-side process
            self.stats.engine_errors += 1
            self.stats.failed_samples += raw.shape[0]
            self.pipe.discard()  # the segment cannot continue: the next block starts a new one
            log.error("engine failed on a block: %s", exc)
            return
        self.stats.processed_samples += raw.shape[0]
        self._emit(out, blocks[-1].arrival)
        self.stats.busy_s += time.perf_counter() - t0
        self.stats.batches += 1

    def _emit(self, out: Samples, arrival: float | None) -> None:
        if not len(out):
            return
        # each output on its own: one that fails (counted in `output_errors`) never stops the others
        if self.socket is not None:
            try:
                self.socket.write(out.data)
            except Exception as exc:  # noqa: BLE001
                self._output_failed("Ephys Socket", exc)
        if self.zout is not None:
            try:
                for a, b in gaps.segments(out.sample_numbers):
                    self.zout.write(int(out.sample_numbers[a]), out.data[a:b])
            except Exception as exc:  # noqa: BLE001
                self._output_failed("ZMQ output", exc)
        if self.rec_den is not None:
            try:
                self.rec_den.write(out.data, out.sample_numbers)
            except Exception as exc:  # noqa: BLE001 -- a disk error never stops the live output
                self._record_failed(exc)
        self.stats.output_samples += len(out)
        self.stats.emits += 1
        if arrival is not None:
            self.stats.latency_ms.append((time.monotonic() - arrival) * 1000)
            if len(self.stats.latency_ms) > 4096:
                del self.stats.latency_ms[:2048]

    def _output_failed(self, what: str, exc: BaseException) -> None:
        self.stats.output_errors += 1
        if self.stats.output_errors == 1 or self.stats.output_errors % 1000 == 0:
            log.error("%s failed (%s: %s); the other outputs go on (%d errors so far)", what, type(exc).__name__,
                      exc, self.stats.output_errors)

    # ------------------------------------------------------------------ recording

    def _record_raw(self, blocks: list[Block], raw: np.ndarray, sn: np.ndarray) -> None:
        """Write raw samples (samples, C) with their numbers; flag the blocks' filled channels. Never raises."""
        if not self.cfg.record:
            return
        if self.rec_raw is not None and self.rec_raw.n_channels != raw.shape[1]:
            self._close_recording()  # never mix channel counts in one recording (a Restart comes first anyway)
        if self.rec_raw is None:
            if time.monotonic() < self._record_retry_at:
                self.stats.record_dropped += raw.shape[0]
                return
            try:
                self._open_recording(blocks[0])
            except Exception as exc:  # noqa: BLE001
                self.stats.record_dropped += raw.shape[0]
                self._record_failed(exc)
                return
        try:
            self.rec_raw.write(raw, sn)
            for b in blocks:
                if b.filled:
                    self.stats.filled_blocks += 1
                    self._flag_filled(b)
        except Exception as exc:  # noqa: BLE001 -- a disk error never stops reception or the live output
            self.stats.record_dropped += raw.shape[0]
            self._record_failed(exc)

    def _flag_filled(self, b: Block) -> None:
        if self._filled_fh is None:
            self._filled_fh = open(self._rec_root / FILLED_FILE, "a")
        self._filled_fh.write(json.dumps({"sample_num": int(b.sample_num), "samples": int(b.data.shape[1]),
                                          "channels": [int(k) for k in b.filled]}) + "\n")
        self._filled_fh.flush()

    def _record_failed(self, exc: BaseException) -> None:
        self.stats.record_errors += 1
        log.error("recording failed (%s: %s): this recording ends; a new folder is tried in 1 s",
                  type(exc).__name__, exc)
        try:
            self._close_recording()
        except Exception:  # noqa: BLE001
            self.rec_raw = self.rec_den = self._filled_fh = None
        self._record_retry_at = time.monotonic() + 1.0

    def _open_recording(self, first: Block) -> None:
        from livedenoise.io.writers_ephys import BinaryWriter

        self.recording += 1
        root = Path(self.cfg.record)
        if self.recording > 1:
            root = root / f"segment{self.recording}"
        C = first.data.shape[0]
        bv = np.full(C, self.cfg.record_bit_volts)
        names = list(first.channel_names)
        kw = dict(stream_name=first.stream or "stream", first_sample=first.sample_num, settings=self.cfg.record_settings)
        note = f" (channels that never arrived are zeros, listed in ../{FILLED_FILE})"
        self._rec_root = root
        self.rec_raw = BinaryWriter(root / "raw", first.sample_rate, bv, names, source_processor_name="ZMQ_Interface",
                                    description="raw input recorded by the livedenoise sidecar" + note, **kw)
        if self.refused is not None:  # nothing will be denoised: no denoised recording
            return
        try:
            self.rec_den = BinaryWriter(root / "denoised", first.sample_rate, bv, names,
                                        source_processor_name="livedenoise",
                                        description=f"denoised live by livedenoise {self.card.summary()}" + note, **kw)
        except Exception:
            self.rec_raw.close()
            self.rec_raw = None
            raise

    def _close_recording(self) -> None:
        writers, self.rec_raw, self.rec_den = (self.rec_raw, self.rec_den), None, None
        fh, self._filled_fh = self._filled_fh, None
        errors = []
        for w in (*writers, fh):
            if w is not None:
                try:
                    w.close()
                except Exception as exc:  # noqa: BLE001
                    errors.append(exc)
        if errors:
            self.stats.record_errors += len(errors)
            log.error("closing the recording failed: %s", errors[0])

    def _end_segment(self) -> None:
        """End the pipeline's segment (its tail goes out with the end-of-recording rule) and close the recording."""
        if self.pipe is not None:
            try:
                self._emit(self.pipe.finish(), None)
            except Exception as exc:
                self.stats.engine_errors += 1
                self.stats.failed_samples += self.pipe.discard()
                log.error("engine failed on a segment's tail: %s", exc)
        self._close_recording()

    # ------------------------------------------------------------------ stats

    def threads(self) -> dict:
        """Every thread's health (`ThreadHealth.as_dict()`), by name."""
        out = self.receiver.threads()
        out[self.engine_health.name] = self.engine_health.as_dict()
        if self.socket is not None:
            out[self.socket.health.name] = self.socket.health.as_dict()
        if self.zout is not None and self.zout.rep is not None:
            out[self.zout.rep.health.name] = self.zout.rep.health.as_dict()
        return out

    def snapshot(self, final: bool = False) -> dict:
        st = self.stats
        c = self.receiver.counters()
        rate = self.sample_rate or 30000.0
        now = time.monotonic()
        wall = now - (st.first_data or now)
        lat = np.asarray(st.latency_ms[-2048:]) if st.latency_ms else np.zeros(0)
        up = max(now - st.started, 1e-9)
        pipe = self.pipe
        threads = self.threads()
        out = {
            # the imaging service's keys (stream/stats.py), in ephys units where they differ
            "frames_in": c.get("blocks_in", 0),
            "frames_out": st.emits,
            "dropped": c.get("dropped_samples", 0),
            "skipped": 0,
            "overflow": st.overflow,
            "passthrough": st.passthrough_before + (pipe.passthrough if pipe is not None else 0),
            "too_short": st.too_short_before + (pipe.too_short if pipe is not None else 0),
            "record_dropped": st.record_dropped,
            "fps_in": round(c.get("blocks_in", 0) / up, 2),
            "fps_out": round(st.emits / up, 2),
            "engine_ms": round(st.busy_s * 1000 / st.batches, 3) if st.batches else None,
            "record_queue": 0,
            "record_queue_mb": 0.0,
            **c,
            "processed_samples": st.processed_samples,
            "output_samples": st.output_samples,
            "failed_samples": st.failed_samples,
            "unprocessed_samples": max(0, c.get("samples_in", 0) - st.processed_samples - st.overflow - st.failed_samples
                                          - self.q.lost_samples),
            "batches": st.batches,
            "engine_errors": st.engine_errors,
            "record_errors": st.record_errors,
            "output_errors": st.output_errors,
            "filled_blocks": st.filled_blocks,
            "segments": st.segments_before + (pipe.segments if pipe is not None else 0),
            "recordings": self.recording,
            "lag_samples": int(self.card.lag),
            "lag_ms": round(self.card.lag / rate * 1000, 3),
            "latency_p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
            "latency_p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
            "realtime_factor": round((st.processed_samples / rate) / st.busy_s, 3) if st.busy_s > 0 else None,
            "stream_factor": round((st.processed_samples / rate) / wall, 3) if wall > 0 else None,
            "queue": self.q.qsize(),
            "queue_mb": round(self.q.bytes / 2**20, 3),
            "lost_samples": self.q.lost_samples,
            "socket_clients": self.socket.n_clients if self.socket is not None else 0,
            "socket_packets": self.socket.packets if self.socket is not None else 0,
            "socket_dropped_packets": self.socket.dropped_packets if self.socket is not None else 0,
            "zmq_messages_out": self.zout.messages if self.zout is not None else 0,
            "channels": pipe.C if pipe is not None else None,
            "sample_rate": self.sample_rate or None,
            "stream": self.stream_name,
            "model": self.card.summary(),
            "uptime_s": round(now - st.started, 2),
            "threads": threads,
            "thread_errors": sum(h["errors"] for h in threads.values()),
            "thread_restarts": sum(h["restarts"] for h in threads.values()),
            "fatal": self.fatal,
        }
        if self.socket is not None:
            out.update(self.socket.counters())
        if self.zout is not None and self.zout.rep is not None:
            out.update(self.zout.rep.counters())
        if final:
            out["final"] = True
        return out

    def _emit_stats(self, s: dict | None = None) -> None:
        s = s or self.snapshot()
        if self._stats_fh:
            self._stats_fh.write(json.dumps(s) + "\n")
            self._stats_fh.flush()
        if not self.cfg.quiet:
            print(stats_line(s), file=sys.stderr, flush=True)


def stats_line(s: dict) -> str:
    """One human line: samples in/out, speed, latency, and every way a sample can be missing or not denoised."""
    def f(v, fmt="{:.1f}"):
        return "-" if v is None else fmt.format(v)

    line = (
        f"sidecar: {s['samples_in']} samples in, {s['output_samples']} out | realtime x{f(s['realtime_factor'], '{:.2f}')} "
        f"| latency p50 {f(s['latency_p50_ms'])} ms p99 {f(s['latency_p99_ms'])} ms (lag {s['lag_ms']} ms) "
        f"| overflow {s['overflow']} dropped {s['dropped']} (in {s['sample_gaps']} gaps) jumps {s['jumps']} "
        f"restarts {s['restarts']} | malformed {s['malformed']} dup {s['duplicates']} late {s['late']} "
        f"msg-gaps {s['gaps']} missing-ch {s['missing_channels']} events {s['events']} "
        f"| GUI clients {s['socket_clients']} | queue {s['queue']}"
    )
    if s.get("unprocessed_samples"):
        line += f" | unprocessed {s['unprocessed_samples']}"
    if s.get("lost_samples"):
        line += f" | LOST {s['lost_samples']} samples (engine thread stalled, hand-over full)"
    if s.get("record_errors") or s.get("record_dropped"):
        line += f" | RECORDING: {s['record_errors']} errors, {s['record_dropped']} samples not recorded"
    bad = {k: v for k, v in (s.get("threads") or {}).items() if v.get("state") not in ("running", "stopped", "starting")
           or v.get("errors")}
    if bad:
        line += " | threads: " + ", ".join(f"{k} {v['state']} ({v['errors']} errors, {v['restarts']} restarts: "
                                           f"{v['last_error'][:80]})" for k, v in bad.items())
    if s.get("fatal"):
        line += f" | FATAL: {s['fatal']}"
    if not s.get("samples_in") and s.get("heartbeats", 0) >= 3 and not s.get("heartbeat_replies"):
        line += (" | nothing from the plugin: no data, no heartbeat reply (on --input's port + 1); is --input the"
                 " ZMQ Interface plugin's data port, and is the GUI acquiring?")
    return line
