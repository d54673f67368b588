"""`livedenoise serve`: receiver -> ring -> windows -> engine -> sinks.

`run_service(cfg)` runs the whole service in the calling thread (the engine
loop) plus a receiver thread and, with `--record`, a writer thread. It returns
the final stats once `stop_event` is set (or `cfg.duration` has passed): it
then closes every stream, denoises what is left, flushes the files and sends
a last `stats` message.

Timing rule: output frame t is computed as soon as frame t + lag has arrived
(lag 0 for causal models). When the engine is behind, up to `max_batch` ready
windows of a stream are run in one batch. `policy="all"` processes every frame
in order; a frame whose inputs the ring has already overwritten is counted as
`overflow`. `policy="latest"` keeps only the newest `max_batch` ready frames
and counts the rest as `skipped`. Windows at the start (and, once a `stop`
arrives, at the end) of an acquisition follow `WindowSpec.source_indices`,
exactly as offline denoising does, so streamed output equals `livedenoise
denoise` of the same frames.

Innovation step (`innovation=True`): each prediction is corrected by its own
raw frame t, copied from the ring when the window is collected, with the same
`InnovationStep` offline denoising uses (models/innovation.py); lag unchanged.

Normalisation: the model card's mean/std, or with `renorm=N` the mean/std of
the first N frames of each acquisition (all of frames 0..N-1 of that stream):
outputs of a new acquisition then wait until its N-th frame has arrived (or
the acquisition ended), after which they catch up in batches.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from livedenoise.errors import UserError
from livedenoise.models.innovation import step_for
from livedenoise.models.norm import denormalise, normalise
from livedenoise.stream.protocols.frames import DEFAULT_INPUT, DEFAULT_OUTPUT, FrameHeader
from livedenoise.stream.sources.frames import Acquisition, Receiver, StreamTable
from livedenoise.stream.stats import ServiceStats

log = logging.getLogger("livedenoise.stream")

POLICIES = ("all", "latest")


@dataclass
class ServeConfig:
    model: str | None = None
    backend: str = "auto"
    input: str = DEFAULT_INPUT
    output: str = DEFAULT_OUTPUT
    record: str | None = None
    record_format: str = "h5"
    ring: int = 256
    max_batch: int = 8
    policy: str = "all"
    renorm: int = 0
    stats_interval: float = 1.0
    rcvhwm: int = 100_000
    sndhwm: int = 1000
    duration: float | None = None
    view: bool = False
    record_queue_mb: float = 1024.0
    drain_timeout: float = 30.0
    innovation: bool = False
    innovation_k: float | None = None
    """Override of the innovation step's k; implies `innovation`."""
    extra: dict = field(default_factory=dict)

    def validate(self) -> "ServeConfig":
        if self.policy not in POLICIES:
            raise UserError(f"--policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if self.max_batch < 1:
            raise UserError(f"--max-batch must be >= 1, got {self.max_batch}")
        if self.ring < 2:
            raise UserError(f"--ring must be >= 2 frames, got {self.ring}")
        if self.renorm < 0:
            raise UserError(f"--renorm must be >= 0 frames, got {self.renorm}")
        if self.renorm > self.ring:
            raise UserError(f"--renorm {self.renorm} needs a ring of at least that many frames; raise --ring to {self.renorm}")
        if self.stats_interval <= 0:
            raise UserError("the stats interval must be > 0 s")
        if self.duration is not None and self.duration <= 0:
            raise UserError(f"--duration must be > 0 s, got {self.duration}")
        if self.record_format not in ("h5", "tiff"):
            raise UserError(f"--record-format must be h5 or tiff, got {self.record_format!r}")
        if self.input == self.output:
            raise UserError(f"--input and --output are the same endpoint ({self.input}); the output needs its own port")
        return self


def _check_engine(engine, cfg: ServeConfig) -> None:
    card = engine.card
    if card.modality != "2p":
        raise UserError(
            f"serve denoises imaging frames, but this model is for {card.modality} data; "
            "use `livedenoise sidecar` for Open Ephys models"
        )
    span = card.window.lag - min(card.window.offsets)
    if cfg.ring < span + 2:
        raise UserError(f"--ring {cfg.ring} is too small for this model's window of {span + 1} frames; use at least {span + 2}")


class _Batch:
    """Preallocated window batch (and, for the innovation step, the raw target frames),
    reallocated only when the frame size changes."""

    def __init__(self, with_current: bool) -> None:
        self.with_current = with_current
        self.buf = np.zeros((0, 0, 0, 0), np.float32)
        self.current: np.ndarray | None = None

    def get(self, b: int, c: int, shape: tuple[int, int]) -> np.ndarray:
        if self.buf.shape[0] < b or self.buf.shape[1:] != (c, *shape):
            self.buf = np.zeros((b, c, *shape), np.float32)
            self.current = np.zeros((b, *shape), np.float32) if self.with_current else None
        return self.buf


@dataclass
class _Job:
    acq: Acquisition
    ts: list = field(default_factory=list)       # indices run through the engine
    raw: list = field(default_factory=list)      # (t, float32 frame) passed through
    info: dict = field(default_factory=dict)     # t -> (frame_no, time, arrival)
    windows: np.ndarray | None = None
    current: np.ndarray | None = None            # raw frames t of `ts`, for the innovation step


class Service:
    def __init__(self, cfg: ServeConfig, engine=None, stop_event: threading.Event | None = None,
                 on_stats: Callable[[dict], None] | None = None, ctx=None):
        import zmq

        from livedenoise.stream.sinks.publisher import OutputPublisher, subscriber

        self.cfg = cfg.validate()
        if engine is None:
            if not cfg.model:
                raise UserError("no model given; pass --model MODEL (a .pt checkpoint, .onnx or engine file)")
            from livedenoise.export.engines.base import open_engine

            engine = open_engine(cfg.model, cfg.backend)
        self.engine = engine
        _check_engine(engine, cfg)
        self.card = engine.card
        self.window = self.card.window
        self.lag = self.window.lag
        self.model_name = Path(cfg.model).name if cfg.model else self.card.arch
        self.innovation, origin = step_for(self.card, cfg.innovation, cfg.innovation_k)
        if self.innovation is not None:
            log.info("%s (%s)", self.innovation.describe(), origin)
        self.stop = stop_event or threading.Event()
        self.on_stats = on_stats
        self.stats = ServiceStats()
        self.recorder = None
        self._own_ctx = ctx is None
        self.ctx = ctx or zmq.Context()
        self.out = None
        self.sub = None
        try:
            self.out = OutputPublisher(self.ctx, cfg.output, cfg.sndhwm)
            self.sub = subscriber(self.ctx, cfg.input, rcvhwm=cfg.rcvhwm)
            if cfg.record:
                from livedenoise.stream.sinks.recorder import Recorder

                self.recorder = Recorder(cfg.record, cfg.record_format, cfg.record_queue_mb, self.stats)
        except BaseException:
            self._close_sockets()
            raise
        self.table = StreamTable(cfg.ring, self.stats, self.recorder)
        self._recv_stop = threading.Event()
        self.receiver = Receiver(self.sub, self.table, self.stats, self._recv_stop)
        self._batch = _Batch(with_current=self.innovation is not None)

    # ------------------------------------------------------------------ main loop
    def run(self) -> dict:
        self.receiver.start()
        try:
            self.engine.warmup(1)
        except Exception as exc:  # a fixed-shape engine may refuse the default size; the first frames will tell
            log.debug("engine warm-up skipped: %s", exc)
        t_end = None if self.cfg.duration is None else time.monotonic() + self.cfg.duration
        next_stats = time.monotonic() + self.cfg.stats_interval
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                if t_end is not None and now >= t_end:
                    break
                if now >= next_stats:
                    self._emit_stats()
                    next_stats = now + self.cfg.stats_interval
                if not self._step():
                    with self.table.cond:
                        if not self._has_work():
                            self.table.cond.wait(min(0.05, max(0.0, next_stats - time.monotonic())))
            return self._shutdown()
        except BaseException:
            self._recv_stop.set()
            self.receiver.join(2)
            if self.recorder is not None:
                self.recorder.close()
            self._close_sockets()
            raise

    def _shutdown(self) -> dict:
        self._recv_stop.set()
        self.receiver.join(5)
        self.table.close_all()
        deadline = time.monotonic() + self.cfg.drain_timeout
        while time.monotonic() < deadline and self._step():
            pass
        self._forward_controls()
        if self.recorder is not None:
            self.recorder.close()
        final = self.stats.snapshot(final=True)
        final.update(self._identity())
        if self.recorder is not None:
            final["recorded"] = [str(p) for p in self.recorder.paths]
        try:
            self.out.control("stats", {**final, "final": True})
        except Exception:  # pragma: no cover
            pass
        self._close_sockets()
        return final

    def _close_sockets(self) -> None:
        if self.out is not None:
            self.out.close()
        receiver = getattr(self, "receiver", None)
        if self.sub is not None and (receiver is None or receiver.thread.ident is None):
            self.sub.close(linger=0)  # otherwise the receiver thread closes its own socket
        if self._own_ctx:
            if receiver is not None and receiver.thread.is_alive():
                self.ctx.destroy(linger=0)  # the receiver is stuck: do not wait for it
            else:
                self.ctx.term()

    def _emit_stats(self) -> None:
        with self.table.cond:
            self.stats.queue_depth = sum(self._backlog(a) for a in self.table.pending())
        snap = self.stats.snapshot()
        snap.update(self._identity())
        self.out.control("stats", snap)
        if self.on_stats is not None:
            try:
                self.on_stats(snap)
            except Exception as exc:  # a caller's callback must not take the service down
                log.error("stats callback failed: %s", exc)

    def _identity(self) -> dict:
        return {"model": self.model_name, "backend": getattr(self.engine, "backend", "?"), "lag": self.lag,
                "innovation": self.innovation is not None}

    def _backlog(self, acq: Acquisition) -> int:
        hi = acq.last if acq.closed else acq.ring.newest - self.lag
        return max(0, (hi if hi is not None else -1) - acq.next_out + 1)

    def _has_work(self) -> bool:
        if self.table.controls and not self.table.closed:
            return True
        return any(self._ready_hi(a) >= a.next_out or a.done for a in self.table.pending())

    def _ready_hi(self, acq: Acquisition) -> int:
        """Highest index whose window is complete now (-1: none)."""
        if acq.failed:
            return -1
        hi = acq.last if acq.closed else acq.ring.newest - self.lag
        if self.cfg.renorm and acq.mean is None and not acq.closed and acq.ring.newest + 1 < self.cfg.renorm:
            return -1
        return hi

    # ------------------------------------------------------------------ one step
    def _step(self) -> bool:
        """Collect one batch under the lock, run it outside; False when there was nothing to do."""
        job = None
        with self.table.cond:
            for acq in list(self.table.closed):
                if acq.done:
                    self._finish(acq)
            if not self.table.closed:
                self._forward_controls()
            for acq in self.table.pending():
                job = self._collect(acq)
                if job is not None:
                    break
        if job is None:
            return False
        self._run_job(job)
        return True

    def _forward_controls(self) -> None:
        while self.table.controls:
            topic, meta = self.table.controls.pop(0)
            self.out.control(topic, {**meta, "model": self.model_name, "lag": self.lag, "denoised": True})

    def _finish(self, acq: Acquisition) -> None:
        self.table.closed.remove(acq)
        if self.recorder is not None:
            self.recorder.end("denoised", acq.stream[0], acq.stream[1], acq.number)

    def _collect(self, acq: Acquisition) -> _Job | None:
        ring = acq.ring
        hi = self._ready_hi(acq)
        if hi < acq.next_out:
            return None
        if acq.mean is None:
            fs = self.card.frame_shape
            if fs is not None and tuple(fs) != acq.shape:
                acq.failed = True
                self.stats.engine_errors += 1
                log.error("stream ch%d plane%d sends %dx%d frames but the model was built for %s frames; "
                          "this acquisition is only recorded (use a model exported at this size)",
                          acq.stream[0], acq.stream[1], *acq.shape, "x".join(map(str, fs)))
                return None
            self._estimate_norm(acq)
        lo = acq.next_out
        if self.cfg.policy == "latest" and hi - lo + 1 > self.cfg.max_batch:  # keep only the newest
            new_lo = hi - self.cfg.max_batch + 1
            self.stats.skipped += sum(1 for j in range(lo, new_lo) if not (ring.holds(j) and ring.filled[ring.slot(j)]))
            lo = new_lo
        if lo < ring.oldest:  # the ring overwrote frames before their turn
            self.stats.overflow += ring.oldest - lo
            lo = ring.oldest
        job = _Job(acq)
        last = acq.last
        t = lo
        while t <= hi and len(job.ts) + len(job.raw) < self.cfg.max_batch:
            s = ring.slot(t)
            if ring.filled[s]:  # dropped upstream: an input for others, never an output
                t += 1
                continue
            idx = self.window.source_indices(t, last)
            if idx is not None and idx.min() < ring.oldest:
                self.stats.overflow += 1
                t += 1
                continue
            job.info[t] = (int(ring.frame_no[s]), float(ring.t[s]), float(ring.arrival[s]))
            if idx is None:
                job.raw.append((t, ring.frames[s].astype(np.float32)))
            else:
                if job.windows is None:
                    job.windows = self._batch.get(self.cfg.max_batch, self.card.n_inputs, ring.shape)
                    job.current = self._batch.current
                if self.innovation is not None:
                    job.current[len(job.ts)] = ring.frames[s]
                w = job.windows[len(job.ts)]
                for c, j in enumerate(idx):
                    normalise(ring.frames[ring.slot(int(j))], acq.mean, acq.std, out=w[c])
                job.ts.append(t)
            t += 1
        acq.next_out = t
        if not job.ts and not job.raw:
            return None
        return job

    def _estimate_norm(self, acq: Acquisition) -> None:
        if not self.cfg.renorm:
            acq.mean, acq.std = float(self.card.norm_mean), float(self.card.norm_std)
            return
        ring = acq.ring
        n = min(self.cfg.renorm, ring.newest + 1)
        frames = [ring.frames[ring.slot(j)] for j in range(n) if ring.holds(j)]
        acq.mean, acq.std = estimate_norm(np.stack(frames))
        log.info("stream ch%d plane%d acquisition %d: normalisation from its first %d frames: mean %.4g std %.4g",
                 acq.stream[0], acq.stream[1], acq.number, len(frames), acq.mean, acq.std)

    def _run_job(self, job: _Job) -> None:
        acq = job.acq
        outputs: list[tuple[int, np.ndarray, bool]] = [(t, f, True) for t, f in job.raw]
        if job.ts:
            b = len(job.ts)
            t0 = time.perf_counter()
            try:
                pred = self.engine.run(job.windows[:b])
            except Exception as exc:
                acq.failed = True
                self.stats.engine_errors += 1
                log.error("engine failed on stream ch%d plane%d (%dx%d frames): %s; this acquisition is only recorded",
                          acq.stream[0], acq.stream[1], *acq.shape, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                pred = None
            ms = (time.perf_counter() - t0) * 1000
            if pred is not None:
                self.stats.batches += 1
                self.stats.add_engine(ms / b, ms)
                den = denormalise(np.asarray(pred).reshape(b, *acq.shape), acq.mean, acq.std)
                if self.innovation is not None:
                    self.innovation.apply(den, job.current[:b])
                outputs += [(t, den[k], False) for k, t in enumerate(job.ts)]
        outputs.sort(key=lambda o: o[0])
        ch, plane = acq.stream
        for t, frame, passthrough in outputs:
            frame_no, ts, arrival = job.info[t]
            latency = (time.monotonic() - arrival) * 1000
            extra = {"lag": self.lag, "latency_ms": round(latency, 3), "model": self.model_name}
            if self.innovation is not None and not passthrough:
                extra["innovation"] = True
            if passthrough:
                extra["passthrough"] = True
            h = FrameHeader(frame=frame_no, t=ts, shape=acq.shape, dtype="float32", channel=ch, plane=plane,
                            source=acq.source, extra=extra)
            self.out.frame(h, frame)
            self.stats.frames_out += 1
            self.stats.passthrough += passthrough
            self.stats.add_latency(latency)
            if self.recorder is not None:
                if "denoised" not in acq.meta:  # attributes of the denoised file, built once
                    acq.meta = {**acq.meta, "denoised": {
                        "model": self.model_name, "card": self.card.to_dict(), "lag": self.lag, "norm": [acq.mean, acq.std],
                        "innovation": self.innovation.cfg.to_dict() if self.innovation is not None else None}}
                self.recorder.write("denoised", ch, plane, acq.number, frame, frame_no, ts, time.time(), acq.meta)


def estimate_norm(frames: np.ndarray) -> tuple[float, float]:
    """Mean and std (float64) of a stack of frames; std 1 when the frames are constant."""
    x = np.asarray(frames, dtype=np.float64)
    mean = float(x.mean())
    std = float(x.std())
    return mean, (std if std > 0 else 1.0)


def run_service(cfg: ServeConfig, engine=None, stop_event: threading.Event | None = None,
                on_stats: Callable[[dict], None] | None = None) -> dict:
    """Run `serve` in this thread until `stop_event` is set or `cfg.duration` passes; returns the final stats."""
    return Service(cfg, engine, stop_event, on_stats).run()
