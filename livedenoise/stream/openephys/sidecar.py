"""Owns the live Open Ephys sidecar: ZMQ Interface in, `SamplePipeline`, Ephys Socket / ZMQ / recorder out.

    Open Ephys GUI ──ZMQ Interface (PUB :5556, REP :5557)──> OpenEphysReceiver thread
        (SUB b"DATA"/b"EVENT", heartbeat REQ, BlockAssembler) ──queue──>
    processing loop: blocks concatenated while it is behind (batches as large as
        needed), SamplePipeline (segments, ring buffer in samples, engine) ──> sinks:
        Ephys Socket server (:9001, the GUI reads it as a new source),
        ZMQ Interface-format PUB (:5560, REP :5561), --record raw + denoised Binary.

The denoising, the segmenting at gaps and restarts and the edge rules are the
pipeline's (stream/ephys.py), shared with `livedenoise denoise`; this module
only routes items. At a `Gap` the pipeline ends the segment (its tail goes out
with the end-of-recording rule) when the next block's sample number arrives,
and recording continues in the same files with the true sample numbers; a
`Restart`, or data resuming after the input went idle, also ends the recording,
and the next block opens `DIR/segmentN`.

Output latency: a sample leaves once `lag` later samples exist, i.e. at most
lag samples + one block after it was acquired (plus compute). When input stops
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

from livedenoise.stream import gaps
from livedenoise.stream.ephys import SamplePipeline, Samples, open_ephys_engine
from livedenoise.stream.sources.openephys import Block, Gap, OpenEphysReceiver, Restart

log = logging.getLogger("livedenoise.stream.openephys")

DEFAULT_INPUT = "tcp://127.0.0.1:5556"


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
    stats_every: float = 5.0
    stats_file: str | None = None
    duration: float | None = None
    stop_after_idle: float | None = None
    """Stop once data has come and then stopped for this many seconds (scripted runs)."""
    heartbeat_s: float = 2.0
    idle_flush_s: float = 0.5
    max_block: int = 4096
    batch: int = 256
    """Windows per engine call for per-sample models (interp-ephys); larger suits GPUs."""
    max_pending: int = 3
    max_backlog_s: float = 10.0
    """When more than this much data waits (the engine is too slow), the oldest is skipped (`overflow`)."""
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
        self.emits = 0
        self.segments_before = 0
        self.passthrough_before = 0
        self.too_short_before = 0
        self.overflow = 0


class Sidecar:
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
        self.q: queue.Queue = queue.Queue()
        self.receiver = OpenEphysReceiver(cfg.input, self.q, self.stop_event, cfg.stream, cfg.channels, heartbeat_s=cfg.heartbeat_s,
                                 idle_flush_s=cfg.idle_flush_s, ctx=self.ctx, max_pending=cfg.max_pending)
        self.socket = None
        if cfg.socket_port is not None:
            from livedenoise.stream.sinks.ephys_socket import EphysSocketServer

            self.socket = EphysSocketServer(cfg.socket_port, cfg.socket_host, cfg.socket_samples)
        self.zout = None
        if cfg.zmq_output:
            from livedenoise.stream.sinks.zmq_interface_out import ZmqInterfaceOutput

            self.zout = ZmqInterfaceOutput(cfg.zmq_output, self.ctx, stream_name=cfg.zmq_stream_name)
        self.stats = SidecarStats()
        self.pipe: SamplePipeline | None = None
        self.recording = 0
        """Recording folders opened so far (DIR, DIR/segment2, ...)."""
        self.stream_name = ""
        self.sample_rate = 0.0
        self.names: list[str] = []
        self.rec_raw = self.rec_den = None
        self.thread: threading.Thread | None = None
        self._stats_fh = open(cfg.stats_file, "a") if cfg.stats_file else None
        self.final_stats: dict | None = None
        self._last_block: float | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "Sidecar":
        self.receiver.start()
        self.receiver.ready.wait(5)
        self.thread = threading.Thread(target=self.run, name="openephys-sidecar", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> dict:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(10)
        return self.final_stats or self.snapshot()

    def run(self) -> dict:
        """Process until stop() / duration; returns the final stats."""
        if not self.receiver.is_alive() and not self.receiver.ready.is_set():
            self.receiver.start()
        t_end = None if not self.cfg.duration else time.monotonic() + self.cfg.duration
        next_stats = time.monotonic() + self.cfg.stats_every if self.cfg.stats_every else None
        try:
            while not self.stop_event.is_set():
                if t_end is not None and time.monotonic() > t_end:
                    break
                if (self.cfg.stop_after_idle and self._last_block is not None
                        and time.monotonic() - self._last_block > self.cfg.stop_after_idle):
                    break
                try:
                    items = [self.q.get(timeout=0.1)]
                except queue.Empty:
                    items = []
                while True:
                    try:
                        items.append(self.q.get_nowait())
                    except queue.Empty:
                        break
                self._handle(self._shed(items))
                if next_stats is not None and time.monotonic() >= next_stats:
                    self._emit_stats()
                    next_stats = time.monotonic() + self.cfg.stats_every
        finally:
            self.stop_event.set()
            self.receiver.join(2)
            rest = []
            while True:  # what was received before the stop is still processed
                try:
                    rest.append(self.q.get_nowait())
                except queue.Empty:
                    break
            try:
                self._handle(rest)
            finally:
                self._end_segment()
            self.final_stats = self.snapshot(final=True)
            self._emit_stats(self.final_stats)
            if self.socket is not None:
                self.socket.close()
            if self.zout is not None:
                self.zout.close()
            if self._stats_fh:
                self._stats_fh.close()
        return self.final_stats

    # ------------------------------------------------------------------ processing

    def _shed(self, items: list) -> list:
        """Keep at most max_backlog_s of queued data; older blocks are skipped and counted."""
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
                full = full or acc + it.data.shape[1] > limit
                if full:
                    self.stats.overflow += it.data.shape[1]
                    continue
                acc += it.data.shape[1]
            keep.append(it)
        log.warning("engine too slow: skipped %d queued samples (overflow); a new segment starts after them",
                    total - acc)
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
            if isinstance(it, Gap):
                pass  # the pipeline sees the jump in the next block's sample numbers and ends the segment itself
            elif isinstance(it, Restart):  # also a new recording folder (and message_num restarts on the ZMQ output)
                self._end_segment()
                if self.zout is not None:
                    self.zout.restart()
            elif it == "idle":
                self._end_segment()
        if run:
            self._process(run)

    def _process(self, blocks: list[Block]) -> None:
        t0 = time.perf_counter()
        self._last_block = time.monotonic()
        first = blocks[0]
        C = first.data.shape[0]
        if self.pipe is None or self.pipe.C != C:
            self._end_segment()
            if self.pipe is not None:  # a new channel count: a new pipeline; keep the old one's counts
                self.stats.segments_before += self.pipe.segments
                self.stats.passthrough_before += self.pipe.passthrough
                self.stats.too_short_before += self.pipe.too_short
            self.pipe = SamplePipeline(self.engine, C, max_block=self.cfg.max_block, batch=self.cfg.batch)
            if self.socket is not None:
                self.socket.configure(C, self.cfg.socket_samples or first.data.shape[1])
        if self.stats.first_data is None:
            self.stats.first_data = time.monotonic()
        if self.cfg.record and self.rec_raw is None:
            self._open_recording(first)
        if (first.stream, first.sample_rate, first.channel_names) != (self.stream_name, self.sample_rate, self.names):
            self.stream_name, self.sample_rate, self.names = first.stream, first.sample_rate, list(first.channel_names)
            if self.zout is not None:
                self.zout.configure(first.stream, self.names, first.sample_rate)
            log.info("stream %r: %d channels at %g Hz from sample %d; model %s, lag %d samples",
                     first.stream, C, first.sample_rate, first.sample_num, self.card.arch, self.card.lag)
        raw = np.concatenate([b.data for b in blocks], axis=1).T  # (samples, C)
        sn = np.concatenate([b.sample_numbers for b in blocks])
        if self.rec_raw is not None:
            self.rec_raw.write(raw, sn)
        try:
            out = self.pipe.push(raw, sn)
        except Exception as exc:  # an engine failure must not kill the acquisition-side process
            self.stats.engine_errors += 1
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
        if self.socket is not None:
            self.socket.write(out.data)
        if self.zout is not None:
            for a, b in gaps.segments(out.sample_numbers):
                self.zout.write(int(out.sample_numbers[a]), out.data[a:b])
        if self.rec_den is not None:
            self.rec_den.write(out.data, out.sample_numbers)
        self.stats.output_samples += len(out)
        self.stats.emits += 1
        if arrival is not None:
            self.stats.latency_ms.append((time.monotonic() - arrival) * 1000)
            if len(self.stats.latency_ms) > 4096:
                del self.stats.latency_ms[:2048]

    def _open_recording(self, first: Block) -> None:
        from livedenoise.io.writers_ephys import BinaryWriter

        self.recording += 1
        root = Path(self.cfg.record)
        if self.recording > 1:
            root = root / f"segment{self.recording}"
        C = first.data.shape[0]
        bv = np.full(C, self.cfg.record_bit_volts)
        names = list(first.channel_names)
        kw = dict(stream_name=first.stream or "stream", first_sample=first.sample_num)
        self.rec_raw = BinaryWriter(root / "raw", first.sample_rate, bv, names, source_processor_name="ZMQ_Interface",
                                    description="raw input recorded by the livedenoise sidecar", **kw)
        self.rec_den = BinaryWriter(root / "denoised", first.sample_rate, bv, names, source_processor_name="livedenoise",
                                    description=f"denoised live by livedenoise {self.card.summary()}", **kw)

    def _end_segment(self) -> None:
        """End the pipeline's segment (its tail goes out with the end-of-recording rule) and close the recording."""
        if self.pipe is not None:
            try:
                self._emit(self.pipe.finish(), None)
            except Exception as exc:
                self.stats.engine_errors += 1
                self.pipe.discard()
                log.error("engine failed on a segment's tail: %s", exc)
        for w in (self.rec_raw, self.rec_den):
            if w is not None:
                w.close()
        self.rec_raw = self.rec_den = None

    # ------------------------------------------------------------------ stats

    def snapshot(self, final: bool = False) -> dict:
        st = self.stats
        c = self.receiver.counters()
        rate = self.sample_rate or 30000.0
        now = time.monotonic()
        wall = now - (st.first_data or now)
        lat = np.asarray(st.latency_ms[-2048:]) if st.latency_ms else np.zeros(0)
        up = max(now - st.started, 1e-9)
        out = {
            # the imaging service's keys (stream/stats.py), in ephys units where they differ
            "frames_in": c.get("blocks_in", 0),
            "frames_out": st.emits,
            "dropped": c.get("dropped_samples", 0),
            "skipped": 0,
            "overflow": st.overflow,
            "passthrough": st.passthrough_before + (self.pipe.passthrough if self.pipe is not None else 0),
            "too_short": st.too_short_before + (self.pipe.too_short if self.pipe is not None else 0),
            "record_dropped": 0,
            "fps_in": round(c.get("blocks_in", 0) / up, 2),
            "fps_out": round(st.emits / up, 2),
            "engine_ms": round(st.busy_s * 1000 / st.batches, 3) if st.batches else None,
            "record_queue": 0,
            "record_queue_mb": 0.0,
            **c,
            "processed_samples": st.processed_samples,
            "output_samples": st.output_samples,
            "batches": st.batches,
            "engine_errors": st.engine_errors,
            "segments": st.segments_before + (self.pipe.segments if self.pipe is not None else 0),
            "recordings": self.recording,
            "lag_samples": int(self.card.lag),
            "lag_ms": round(self.card.lag / rate * 1000, 3),
            "latency_p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
            "latency_p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
            "realtime_factor": round((st.processed_samples / rate) / st.busy_s, 3) if st.busy_s > 0 else None,
            "stream_factor": round((st.processed_samples / rate) / wall, 3) if wall > 0 else None,
            "queue": self.q.qsize(),
            "socket_clients": self.socket.n_clients if self.socket is not None else 0,
            "socket_packets": self.socket.packets if self.socket is not None else 0,
            "socket_dropped_packets": self.socket.dropped_packets if self.socket is not None else 0,
            "zmq_messages_out": self.zout.messages if self.zout is not None else 0,
            "channels": self.pipe.C if self.pipe is not None else None,
            "sample_rate": self.sample_rate or None,
            "stream": self.stream_name,
            "model": self.card.summary(),
            "uptime_s": round(now - st.started, 2),
        }
        return out

    def _emit_stats(self, s: dict | None = None) -> None:
        s = s or self.snapshot()
        if self._stats_fh:
            self._stats_fh.write(json.dumps(s) + "\n")
            self._stats_fh.flush()
        if not self.cfg.quiet:
            print(stats_line(s), file=sys.stderr, flush=True)


def stats_line(s: dict) -> str:
    def f(v, fmt="{:.1f}"):
        return "-" if v is None else fmt.format(v)

    return (
        f"sidecar: {s['samples_in']} samples in, {s['output_samples']} out | realtime x{f(s['realtime_factor'], '{:.2f}')} "
        f"| latency p50 {f(s['latency_p50_ms'])} ms p99 {f(s['latency_p99_ms'])} ms (lag {s['lag_ms']} ms) "
        f"| malformed {s['malformed']} dup {s['duplicates']} late {s['late']} gaps {s['gaps']} "
        f"missing-ch {s['missing_channels']} restarts {s['restarts']} events {s['events']} | GUI clients {s['socket_clients']} "
        f"| queue {s['queue']}"
    )
