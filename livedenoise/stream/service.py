"""`livedenoise serve`: the live service -- frame receiver -> one `FramePipeline` per acquisition -> sinks.

`run_service(cfg)` runs the whole service in the calling thread (the engine
loop) plus a receiver thread and, with `--record`, a writer thread. It returns
the final stats once `stop_event` is set (or `cfg.duration` has passed): it
then takes the messages already queued in the input socket (raw data is never
dropped; without waiting for more, at most `FINAL_DRAIN_S` s), closes every
stream, denoises what is left, flushes the files and sends a last `stats`
message.

The denoising itself is stream/pipeline.py, the same core `livedenoise
denoise` runs on files: windows, edge rule, gap/restart segments, the length
rule (outputs of an acquisition wait for `min_frames(card)` frames; a shorter
acquisition or segment passes through raw), normalisation and the innovation
step are decided there, so streamed output equals offline denoising of the
same frames. This module owns the policies around it:

- timing: output frame t is computed as soon as frame t + lag has arrived (lag
  0 for causal models); when the engine is behind, up to `max_batch` ready
  windows of a stream are run in one batch;
- `policy="all"` processes every frame in order; a frame whose inputs the ring
  has already overwritten is counted as `overflow`. `policy="latest"` keeps
  only the newest `max_batch` ready frames and counts the rest as `skipped`;
- sinks: each output goes to the PUB socket (header: frame number, time, lag,
  latency, `passthrough` / `innovation` flags) and, with `--record`, to the
  recorder; stats once per `stats_interval`;
- normalisation: the model card's mean/std, or with `renorm=N` the mean/std
  of the first N frames of each acquisition (outputs wait for them);
- supervision (stream/health.py): the receiver and the recorder run under
  `SupervisedThread`, and the engine loop (this thread) is supervised the same
  way: an unexpected exception is counted in the loop's `ThreadHealth` and the
  loop goes on after a short pause; an exception while collecting or
  publishing one acquisition's outputs is that acquisition's (retried, and
  after `ACQ_MAX_FAULTS` in a row it is only recorded). Every stats message
  carries each thread's health (`threads`). When a thread cannot go on
  (restarts exhausted), the service stops cleanly (drains, flushes, final
  stats with `fatal`) and `run()` raises `ServiceFailed` with one line, so
  `serve` exits non-zero: it never stays up deaf while still sending stats.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from livedenoise.errors import UserError
from livedenoise.models.innovation import step_for
from livedenoise.models.registry import min_frames
from livedenoise.stream.health import ThreadHealth
from livedenoise.stream.protocols.frames import DEFAULT_INPUT, DEFAULT_OUTPUT, FrameHeader
from livedenoise.stream.pipeline import FRAME_AXES, Batch, FramePipeline
from livedenoise.stream.sources.frames import FINAL_DRAIN_S, Acquisition, FrameReceiver, RateLimitedLog, StreamTable
from livedenoise.stream.stats import ServiceStats

log = logging.getLogger("livedenoise.stream")

POLICIES = ("all", "latest")
ACQ_MAX_FAULTS = 3
"""Unexpected errors in a row on one acquisition's outputs before it is only recorded."""


class ServiceFailed(UserError):
    """A thread of the service could not go on; the service stopped cleanly first.

    `str(exc)` is one line; `exc.final` holds the final stats (with `fatal`).
    The CLI prints the line and exits 1.
    """

    exit_code = 1

    def __init__(self, line: str, final: dict | None = None):
        super().__init__(line)
        self.final = final or {}


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
    renorm_rate: float = 0.0
    """With renorm: the slow update of the statistics every `renorm` frames (stream/pipeline.py)."""
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
    max_streams: int = 256
    """Most (channel, plane) streams open at once; one more closes the least recently used."""
    record_max_open: int = 256
    """Most recording files open at once (also at most a quarter of the open-file limit)."""
    record_idle_s: float = 30.0
    """A recording file whose stream sent nothing for this long is closed (it continues in a new part)."""
    max_restarts: int = 5
    """Restarts of a thread within 60 s before the service gives up (non-zero exit)."""
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
        if not self.drain_timeout >= 0:
            raise UserError(f"--drain-timeout must be >= 0 s, got {self.drain_timeout}")
        if self.stats_interval <= 0:
            raise UserError("the stats interval must be > 0 s")
        if self.duration is not None and self.duration <= 0:
            raise UserError(f"--duration must be > 0 s, got {self.duration}")
        if self.record_format not in ("h5", "tiff"):
            raise UserError(f"--record-format must be h5 or tiff, got {self.record_format!r}")
        if self.max_streams < 1:
            raise UserError(f"--max-streams must be >= 1, got {self.max_streams}")
        if self.record_max_open < 1:
            raise UserError(f"--record-max-open must be >= 1, got {self.record_max_open}")
        if self.input == self.output:
            raise UserError(f"--input and --output are the same endpoint ({self.input}); the output needs its own port")
        return self


def _check_engine(engine, cfg: ServeConfig) -> None:
    card = engine.card
    if card.layout not in FRAME_AXES:
        raise UserError(
            f"serve denoises imaging frames and fMRI volumes, but this model is for {card.modality} data; "
            "use `livedenoise sidecar` for Open Ephys models"
        )
    span = card.window.lag - min(0, min(card.window.offsets))
    need = max(span + 2, min_frames(card))
    if cfg.ring < need:
        raise UserError(f"--ring {cfg.ring} is too small for this model (window of {span + 1} frames, "
                        f"at least {min_frames(card)} frames per acquisition); use at least {need}")


class Service:
    def __init__(self, cfg: ServeConfig, engine=None, stop_event: threading.Event | None = None,
                 on_stats: Callable[[dict], None] | None = None, ctx=None):
        import zmq

        from livedenoise.stream.sinks.publisher import OutputPublisher, subscriber

        self.cfg = cfg.validate()
        if engine is None:
            if not cfg.model:
                raise UserError("no model given; pass --model MODEL (a .pt checkpoint, .onnx or engine file)")
            from livedenoise.export.engines import open_engine

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
        self._give_up = threading.Event()
        self.announce_give_up = False
        """Whether the draining line says "Ctrl-C again to give them up" (the CLI wires a second signal)."""
        self.on_stats = on_stats
        self.stats = ServiceStats()
        self.fatal: str | None = None
        """One line once a thread could not go on (run() then raises ServiceFailed)."""
        self.engine_health = ThreadHealth("engine")
        self._engine_restarts: list[float] = []
        self._log_fault = RateLimitedLog(logging.ERROR)
        self._warn_short = RateLimitedLog(logging.WARNING)
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

                self.recorder = Recorder(cfg.record, cfg.record_format, cfg.record_queue_mb, self.stats,
                                         max_open=cfg.record_max_open, idle_close_s=cfg.record_idle_s,
                                         on_fatal=self._on_fatal)
        except BaseException:
            self._close_sockets()
            raise
        self._batch = Batch(cfg.max_batch, self.card.n_inputs, self.innovation is not None)
        self.table = StreamTable(self._make_pipeline, self.stats, self.recorder, max_gap=cfg.ring,
                                 max_streams=cfg.max_streams)
        self._recv_stop = threading.Event()
        self.receiver = self._make_receiver()
        self.stats.threads = {"receiver": self.receiver.health, "engine": self.engine_health}
        if self.recorder is not None:
            self.stats.threads["recorder"] = self.recorder.health

    def _make_receiver(self) -> FrameReceiver:
        """The SUB socket's supervised thread (not started yet)."""
        return FrameReceiver(self.sub, self.table, self.stats, self._recv_stop, on_fatal=self._on_fatal,
                             max_restarts=self.cfg.max_restarts)

    def _make_pipeline(self, shape: tuple[int, int], dtype: str, step: int, name: str) -> FramePipeline:
        """A new acquisition's pipeline (called by the receiver thread); all share the engine loop's batch buffers."""
        return FramePipeline(self.engine, shape, dtype, capacity=self.cfg.ring, max_batch=self.cfg.max_batch,
                             innovation=self.innovation, renorm=self.cfg.renorm, step=step, name=name,
                             renorm_rate=self.cfg.renorm_rate if self.cfg.renorm else 0.0,
                             stats=self.stats, batch=self._batch, warn=self._warn_short)

    def _on_fatal(self, line: str) -> None:
        """A thread cannot go on (any thread may call this): stop the service; run() then raises."""
        if self.fatal is None:
            self.fatal = line
            self.stats.fatal = line
        self.stop.set()
        try:
            with self.table.cond:
                self.table.cond.notify_all()
        except AttributeError:  # during __init__, before the table exists
            pass

    # ------------------------------------------------------------------ main loop
    def run(self) -> dict:
        """Run until `stop_event` is set or `cfg.duration` passes; returns the final stats.

        Errors: `ServiceFailed` (one line, `.final` the final stats) when a
        thread could not go on; the service has then stopped cleanly.
        """
        self.receiver.start()
        try:
            self.engine.warmup(1)
        except Exception as exc:  # a fixed-shape engine may refuse the default size; the first frames will tell
            log.debug("engine warm-up skipped: %s", exc)
        t_end = None if self.cfg.duration is None else time.monotonic() + self.cfg.duration
        next_stats = time.monotonic() + self.cfg.stats_interval
        self.engine_health.state = "running"
        try:
            while not self.stop.is_set():
                try:
                    now = time.monotonic()
                    if t_end is not None and now >= t_end:
                        break
                    if now >= next_stats:
                        next_stats = now + self.cfg.stats_interval
                        self._emit_stats()
                    if not self._step():
                        with self.table.cond:
                            if not self._has_work():
                                self.table.cond.wait(min(0.05, max(0.0, next_stats - time.monotonic())))
                except Exception as exc:  # noqa: BLE001 -- the engine loop never dies silently
                    self._engine_fault(exc)
            final = self._shutdown()
        except BaseException:
            self.receiver.take_queued_on_stop = False  # not a graceful stop: end reception at once
            self._recv_stop.set()
            self.receiver.join(2)
            if self.recorder is not None:
                self.recorder.close()
            self._close_sockets()
            raise
        if self.fatal:
            raise ServiceFailed(self.fatal, final)
        return final

    def _engine_fault(self, exc: BaseException) -> None:
        """An unexpected exception in the engine loop: count it, pause, go on; give up when they come too often."""
        h = self.engine_health
        h.record(exc, "loop: ")
        log.error("engine loop: unexpected error, going on:\n%s", traceback.format_exc())
        now = time.monotonic()
        self._engine_restarts = [t for t in self._engine_restarts if now - t < 60.0] + [now]
        if len(self._engine_restarts) > self.cfg.max_restarts:
            h.state = "failed"
            line = (f"the engine loop failed {len(self._engine_restarts)} times in 60 s "
                    f"(last: {h.last_error}); cannot go on")
            log.error(line)
            self._on_fatal(line)
            return
        h.restarts += 1
        h.state = "restarting"
        self.stop.wait(0.2)
        h.state = "running"

    def _acq_fault(self, acq: Acquisition, exc: BaseException, what: str) -> None:
        """An unexpected exception on one acquisition's outputs: counted; after ACQ_MAX_FAULTS in a row it is only recorded."""
        self.engine_health.record(exc, f"{what} ch{acq.stream[0]} plane{acq.stream[1]}: ")
        self.engine_health.restarts += 1  # the loop starts over with the next step (not counted towards giving up)
        acq.faults += 1
        if acq.faults >= ACQ_MAX_FAULTS:
            acq.failed = True
            self.stats.engine_errors += 1
        self._log_fault("engine loop: unexpected error %s stream ch%d plane%d (%s: %s)%s", what, *acq.stream,
                        type(exc).__name__, exc,
                        "; this acquisition is only recorded from now on" if acq.failed else "; retrying")

    def queued(self) -> tuple[int, int]:
        """(queued, lost) over all streams: outputs ready to compute but not yet sent whose frames are still in
        the ring, and those whose frames the ring already overwrote (they will count as `overflow`)."""
        queued = lost = 0
        with self.table.cond:
            for a in self.table.pending():
                if a.failed:
                    continue
                p = a.pipeline
                hi, lo = p.ready_hi(), p.next_out
                if hi < lo:
                    continue
                oldest = max(lo, min(hi + 1, p.ring.oldest))
                lost += oldest - lo
                queued += hi - oldest + 1
        return queued, lost

    def give_up_drain(self) -> None:
        """End the drain now (e.g. a second Ctrl-C): what is still queued is given up and counted."""
        self._give_up.set()

    def _shutdown(self) -> dict:
        self._recv_stop.set()  # the receiver first takes what is already queued in its socket (bounded)
        self.receiver.join(FINAL_DRAIN_S + 5)
        self.table.close_all()
        queued, lost = self.queued()
        timeout = self.cfg.drain_timeout
        if queued:
            log.info("stopping: draining %d queued frame(s) (at most %g s%s)", queued, timeout,
                     "; Ctrl-C again to give them up" if self.announce_give_up else "")
        else:
            log.info("stopping: nothing queued")
        now = time.monotonic()
        deadline, next_note = now + timeout, now + 5.0
        why = f"at the drain timeout ({timeout:g} s)"
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            if self._give_up.is_set():
                why = "on a second Ctrl-C / signal"
                break
            if now >= next_note:  # a long drain is not silent
                next_note = now + 5.0
                log.info("draining: %d frame(s) left, %.0f s to the drain timeout", self.queued()[0], deadline - now)
            try:
                if not self._step():
                    break
            except Exception as exc:  # noqa: BLE001
                self.engine_health.record(exc, "drain: ")
                log.error("engine loop: unexpected error while draining: %s: %s", type(exc).__name__, exc)
                why = "after an error while draining"
                break
        given_up, lost = self.queued()
        self.stats.overflow += lost  # overwritten before their turn: never collected now, so counted here
        if given_up:
            log.warning("gave up %d queued frame(s) %s: they were received%s but not denoised",
                        given_up, why, " and recorded raw" if self.recorder is not None else "")
        try:
            self._forward_controls()
        except Exception as exc:  # noqa: BLE001
            self.engine_health.record(exc, "drain: ")
        if self.recorder is not None:
            mb = float(getattr(self.stats, "record_queue_mb", 0.0) or 0.0)
            if mb >= 16:
                log.info("stopping: writing %.0f MB still queued for the recording", mb)
            self.recorder.close()
        if self.engine_health.state != "failed":
            self.engine_health.state = "stopped"
        final = self.stats.snapshot(final=True)
        final.update(self._identity())
        final["drain_given_up"] = given_up
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
            self.stats.queue_depth = sum(a.pipeline.backlog() for a in self.table.pending() if not a.failed)
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

    def _has_work(self) -> bool:
        if self.table.controls and not self.table.closed:
            return True
        return any(a.done or (not a.failed and a.pipeline.has_work()) for a in self.table.pending())

    # ------------------------------------------------------------------ one step
    def _step(self) -> bool:
        """Collect one batch under the lock, run it outside; False when there was nothing to do."""
        job = acq = None
        with self.table.cond:
            for done in list(self.table.closed):
                if done.done:
                    self._finish(done)
            if not self.table.closed:
                self._forward_controls()
            for acq in self.table.pending():
                if acq.failed or not self._fits(acq):
                    continue
                try:
                    job = acq.pipeline.collect(self.cfg.policy)
                except Exception as exc:  # noqa: BLE001 -- this acquisition's fault, not the loop's
                    self._acq_fault(acq, exc, "collecting")
                    continue
                if job is not None:
                    break
        if job is None:
            return False
        try:
            self._run_job(acq, job)
            acq.faults = 0
        except Exception as exc:  # noqa: BLE001
            self._acq_fault(acq, exc, "publishing")
        return True

    def _forward_controls(self) -> None:
        while self.table.controls:
            topic, meta = self.table.controls.pop(0)
            self.out.control(topic, {**meta, "model": self.model_name, "lag": self.lag, "denoised": True})

    def _finish(self, acq: Acquisition) -> None:
        self.table.closed.remove(acq)
        if self.recorder is not None:
            self.recorder.end("denoised", acq.stream[0], acq.stream[1], acq.number)

    def _fits(self, acq: Acquisition) -> bool:
        """Whether the model takes this acquisition's frame size (checked once; a misfit is only recorded)."""
        if not acq.checked:
            acq.checked = True
            fs = self.card.frame_shape
            axes = FRAME_AXES.get(self.card.layout)
            if axes is not None and len(acq.shape) != axes:
                acq.failed = True
                self.stats.engine_errors += 1
                log.error("stream ch%d plane%d sends %s %s but the model (%s) reads %s; this acquisition is only "
                          "recorded", acq.stream[0], acq.stream[1], "x".join(map(str, acq.shape)),
                          "volumes" if len(acq.shape) == 3 else "frames", self.card.arch,
                          "volumes (frames with a `depth`)" if axes == 3 else "2D frames")
            elif fs is not None and tuple(fs) != acq.shape:
                acq.failed = True
                self.stats.engine_errors += 1
                log.error("stream ch%d plane%d sends %s frames but the model was built for %s frames; "
                          "this acquisition is only recorded (use a model exported at this size)",
                          acq.stream[0], acq.stream[1], "x".join(map(str, acq.shape)), "x".join(map(str, fs)))
        return not acq.failed

    def _run_job(self, acq: Acquisition, job) -> None:
        try:
            res = acq.pipeline.run(job)
        except Exception as exc:
            acq.failed = True
            self.stats.engine_errors += 1
            log.error("engine failed on stream ch%d plane%d (%s frames): %s; this acquisition is only recorded",
                      acq.stream[0], acq.stream[1], "x".join(map(str, acq.shape)),
                      str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return
        if res.model_frames:
            self.stats.batches += 1
            self.stats.add_engine(res.engine_ms / res.model_frames, res.engine_ms)
        ch, plane = acq.stream
        pipe = acq.pipeline
        for k in range(len(res)):
            passthrough = bool(res.passthrough[k])
            frame_no, ts = int(res.counter[k]), float(res.time[k])
            latency = (time.monotonic() - float(res.arrival[k])) * 1000
            extra = {"lag": self.lag, "latency_ms": round(latency, 3), "model": self.model_name}
            if passthrough:
                extra["passthrough"] = True
            elif self.innovation is not None:
                extra["innovation"] = True
            h = FrameHeader(frame=frame_no, t=ts, shape=acq.shape, dtype="float32", channel=ch, plane=plane,
                            source=acq.source, extra=extra)
            frame = res.frames[k]
            self.out.frame(h, frame)
            self.stats.frames_out += 1
            self.stats.passthrough += passthrough
            self.stats.add_latency(latency)
            if self.recorder is not None:
                if "denoised" not in acq.meta:  # attributes of the denoised file, built once
                    acq.meta = {**acq.meta, "denoised": {
                        "model": self.model_name, "card": self.card.to_dict(), "lag": self.lag, "norm": [pipe.mean, pipe.std],
                        "innovation": self.innovation.cfg.to_dict() if self.innovation is not None else None}}
                # the recorder keeps the array until its thread writes it; the batch buffer is reused
                self.recorder.write("denoised", ch, plane, acq.number, frame.copy(), frame_no, ts, time.time(), acq.meta)


def run_service(cfg: ServeConfig, engine=None, stop_event: threading.Event | None = None,
                on_stats: Callable[[dict], None] | None = None) -> dict:
    """Run `serve` in this thread until `stop_event` is set or `cfg.duration` passes; returns the final stats."""
    return Service(cfg, engine, stop_event, on_stats).run()
