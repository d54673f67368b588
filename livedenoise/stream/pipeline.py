"""The imaging pipeline core: one stream of frames -> ring -> windows -> engine -> innovation step -> outputs.

Every path that denoises imaging frames runs a `FramePipeline`:

- `livedenoise denoise` (stream/offline.py) pushes a file's frames chunk by
  chunk, collects full batches, and calls `finish()` at the end of the file;
- `livedenoise serve` (stream/service.py) keeps one pipeline per acquisition of
  a (channel, plane) stream: the receiver thread pushes each frame as it
  arrives, the engine loop collects and runs batches, and a `stop`, `start` or
  restart calls `finish()`.

A frame is an (H, W) image or, for fMRI models (card layout `volumes`), an
(I, J, K) volume: every rule below is the same for both (the innovation step
applies to images only).

So a streamed acquisition equals offline denoising of the same frames by
construction: the same code decides which frames are ready, builds the same
windows with the same edge rule, normalises with the same function and runs
the same innovation step. The rules:

- **Indices.** Pushed frames get consecutive indices 0, 1, 2, ... in a `Ring`
  (raw samples in their own dtype, plus per-frame fields `counter`, `time`,
  `arrival`); nothing is ever written for a frame that did not arrive.
- **Segments** (the gap/restart policy of stream/gaps.py). Each frame carries
  its source's counter (ScanImage frame number, wire protocol `frame`; the
  position in the file offline). A counter that is not the previous one plus
  `step` ends the current segment and starts a new one at that frame: a jump
  forward is a gap (the missing counter values are counted as
  `dropped_upstream`), a fall back is a restart (`restarts`). A jump forward
  by more than the ring holds (`capacity` frames of `step`) is a JUMP: a new
  segment too, counted in `gaps` and `jumps` but not as dropped frames
  (counters count only what was received; the live service starts a new
  acquisition there before the pipeline sees it). Nothing is allocated or
  looped over in proportion to a gap or jump. Windows never
  cross a segment boundary: output t of a segment starting at index a uses
  `a + card.window.source_indices(t - a, last - a)`, with `last` the segment's
  final index once it has ended (`None` while it is open) -- the end-of-recording
  edge rule at every gap, exactly as at the end of a file.
- **When an output is ready.** Frame t of an open segment once frame t + lag has
  arrived; every frame of an ended segment. The one length rule
  (`models.registry.min_frames`): outputs of a segment wait until it has
  `min_frames(card)` frames; a segment that ends shorter than that passes its
  frames through raw (`passthrough`, counted in `too_short`, one log warning
  per segment). With `renorm=N`, outputs also wait for the stream's first N
  frames (or its end).
- **Normalisation** (models/norm.py): `norm=(mean, std)` when given (offline:
  the movie's own statistics), else with `renorm=N` `estimate_norm` of the
  stream's first N frames (live), else the card's mean/std.
- **Non-finite pixels** (NaN borders of motion-corrected movies, Inf): filled
  with the normalisation mean in the model's input windows; where frame t
  itself is non-finite the output is NaN (masked), the innovation step adds
  nothing there, and the pixels are counted in `nonfinite`.
- **Passthrough.** A frame whose window has no usable frame at all (a causal
  model's first frame of each segment) is output raw, as float32, flagged.
- **Batching.** `collect()` takes up to `max_batch` ready frames in index order
  (passthrough frames included). `full=True` (offline) forms a batch only when
  `max_batch` frames are ready or the stream has ended, so batches cover
  frames [k*max_batch, (k+1)*max_batch) however the frames were chunked:
  offline output is bit-identical between runs and chunkings.
  `policy="latest"` keeps only the newest `max_batch` ready frames (the rest
  counted in `skipped`). A frame whose inputs the ring has overwritten is not
  output (counted in `overflow`).

Hot path: `push` and `collect` allocate nothing per frame and never log
(buffers are preallocated per frame size; a warning is logged only when a
segment ends too short, once per segment).

Threading: a pipeline is not thread-safe; its owner serialises `push`,
`finish`, `collect` and the properties (the service holds its stream table's
lock). `run(job)` touches only the job's batch buffers and the engine, so it
may run outside that lock, one job per `Batch` at a time.
"""

from __future__ import annotations

import bisect
import logging
import time
from dataclasses import dataclass

import numpy as np

from livedenoise.models.norm import denormalise, estimate_norm, normalise
from livedenoise.models.registry import min_frames
from livedenoise.stream.gaps import Step, classify
from livedenoise.stream.ring import Ring

log = logging.getLogger("livedenoise.stream")

POLICIES = ("all", "latest")
FRAME_AXES = {"frames": 2, "volumes": 3}
"""Axes of one frame for each model layout this pipeline runs: (H, W) images, (I, J, K) fMRI volumes."""


class PipelineCounts:
    """Counters a pipeline adds to (the service passes its `ServiceStats` instead)."""

    def __init__(self) -> None:
        self.dropped_upstream = 0
        """Counter values missing at gaps (frames dropped upstream)."""
        self.restarts = 0
        """Counters that fell back inside one stream."""
        self.gaps = 0
        """Gaps (segments ended by a jump forward), JUMPs included."""
        self.jumps = 0
        """Jumps forward by more than the ring holds (not counted in dropped_upstream)."""
        self.overflow = 0
        """Frames not output: the ring overwrote their inputs first."""
        self.skipped = 0
        """Frames not output under policy "latest"."""
        self.too_short = 0
        """Frames passed through raw because their segment had fewer than min_frames frames."""
        self.nonfinite = 0
        """NaN/Inf pixels of denoised frames t: filled for the model, output as NaN."""


class Batch:
    """Preallocated buffers for one job: engine input windows (B, C, *frame) float32,
    raw target frames for the innovation step, denoised and output frames (B, *frame)
    float32, and per-output fields (a frame is an (H, W) image or an (I, J, K) volume). Reallocated only when the frame size changes;
    several pipelines run by one thread may share one."""

    def __init__(self, max_batch: int, n_inputs: int, with_current: bool):
        self.max_batch = int(max_batch)
        self.n_inputs = int(n_inputs)
        self.with_current = with_current
        self.shape: tuple[int, ...] | None = None
        b = self.max_batch
        self.index = np.zeros(b, np.int64)
        self.counter = np.zeros(b, np.int64)
        self.time = np.zeros(b, np.float64)
        self.arrival = np.zeros(b, np.float64)
        self.passthrough = np.zeros(b, bool)
        self.row = np.zeros(b, np.int64)
        self.idx = np.zeros(self.n_inputs, np.int64)

    def ensure(self, shape: tuple[int, ...]) -> None:
        if self.shape == shape:
            return
        b, c = self.max_batch, self.n_inputs
        self.windows = np.zeros((b, c, *shape), np.float32)
        self.current = np.zeros((b, *shape), np.float32)
        self.norm_mean = np.zeros(b, np.float32)
        self.norm_std = np.ones(b, np.float32)
        self.mask = np.zeros((b, *shape), bool)
        self.fmask = np.zeros(shape, bool)
        self.den = np.zeros((b, *shape), np.float32)
        self.out = np.zeros((b, *shape), np.float32)
        self.shape = shape


@dataclass
class Job:
    """A collected batch: `n` outputs in index order, `rows` of them through the engine."""

    batch: Batch
    n: int
    rows: int


@dataclass
class Outputs:
    """The outputs of one job, in index order; arrays are views of the batch buffers,
    valid until the next `collect` on the same `Batch`.

    index (n,) int64: position in the stream (0 = first frame pushed);
    counter (n,) int64, time (n,) float64 (source seconds), arrival (n,) float64
    (`time.monotonic()` at push): as pushed; frames (n, *frame) float32 in raw units;
    passthrough (n,) bool: raw frame, not denoised; engine_ms: the engine call
    (0 when none); model_frames: how many went through the engine.
    """

    index: np.ndarray
    counter: np.ndarray
    time: np.ndarray
    arrival: np.ndarray
    frames: np.ndarray
    passthrough: np.ndarray
    engine_ms: float = 0.0
    model_frames: int = 0

    def __len__(self) -> int:
        return len(self.index)


class FramePipeline:
    """One stream's frames -> denoised frames (see the module docstring for the rules).

    Parameters: `engine` (`.run((B, C, *frame) float32) -> (B, *frame)` or (B, 1, *frame),
    `.card` its model card); `frame_shape` (H, W) of an image or (I, J, K) of an fMRI volume
    (every rule below is the same for both: a volume is one frame), and `dtype` of the raw frames;
    `capacity`: frames the ring holds (>= the window's span + 2 and >= renorm);
    `max_batch`: most outputs per job; `innovation`: an `InnovationStep` or None;
    `renorm`: 0 for the card's normalisation, else the number of first frames to
    estimate it on; `renorm_rate`: with renorm, the slow update: the statistics
    of outputs in block j = t // renorm (j >= 2) are (1 - rate) * those of
    block j - 1 + rate * those of frames (j-1)*renorm .. j*renorm - 1, so they
    depend on the output's index only (live equals offline); 0 keeps the first
    N frames' statistics; `norm`: (mean, std) to use instead of either; `step`: counter increment between consecutive frames;
    `name`: for log messages; `stats`: the object whose counters are added to
    (`PipelineCounts` by default, or any object with its attributes); `batch`: a shared `Batch` (one is made otherwise);
    `warn`: called as `warn(fmt, *args)` for the too-short warning (default: the module logger's warning; the
    service passes a rate-limited one).
    Errors: ValueError for a capacity too small for the window or renorm, or a frame shape of other than 2 or 3 axes.
    """

    def __init__(self, engine, frame_shape: tuple[int, int], dtype, *, capacity: int, max_batch: int = 8,
                 innovation=None, renorm: int = 0, step: int = 1, name: str = "stream", stats=None,
                 batch: Batch | None = None, warn=None, norm: tuple[float, float] | None = None,
                 renorm_rate: float = 0.0):
        self.engine = engine
        self._warn = warn if warn is not None else log.warning
        self.card = engine.card
        self.window = self.card.window
        self.lag = self.window.lag
        self.need = min_frames(self.card)
        self.offsets = np.asarray(self.window.offsets, np.int64)
        self._min_off = int(self.offsets.min())
        span = self.lag - min(0, self._min_off)
        if capacity < span + 2:
            raise ValueError(f"a ring of {capacity} frames is too small for this model's window of {span + 1} frames; "
                             f"use at least {span + 2}")
        if renorm > capacity:
            raise ValueError(f"renorm over {renorm} frames needs a ring of at least that many frames")
        self.shape = tuple(int(s) for s in frame_shape)
        if len(self.shape) not in (2, 3):
            raise ValueError(f"frames must be (H, W) images or (I, J, K) volumes, got shape {self.shape}")
        self.ring = Ring(capacity, self.shape, dtype, {"counter": np.int64, "time": np.float64, "arrival": np.float64})
        self.max_batch = int(max_batch)
        self.innovation = innovation
        self.renorm = int(renorm)
        if not 0.0 <= renorm_rate <= 1.0:
            raise ValueError(f"renorm_rate must be in 0..1, got {renorm_rate}")
        self.renorm_rate = float(renorm_rate) if renorm else 0.0
        self._norm_block = -1
        """The block j (outputs j*renorm .. (j+1)*renorm - 1) whose statistics mean/std hold (slow update)."""
        self.step = max(1, int(step))
        self.name = name
        self.stats = stats if stats is not None else PipelineCounts()
        self.batch = batch if batch is not None else Batch(self.max_batch, self.card.n_inputs, innovation is not None)
        if self.batch.max_batch < self.max_batch or self.batch.n_inputs != self.card.n_inputs:
            raise ValueError("the shared batch does not fit this pipeline")
        self.mean: float | None = None
        self.std: float | None = None
        if norm is not None:
            mean, std = float(norm[0]), float(norm[1])
            if not (np.isfinite(mean) and np.isfinite(std) and std > 0):
                raise ValueError(f"normalisation needs a finite mean and a std > 0, got {norm}")
            self.mean, self.std = mean, std
        self._float = np.dtype(dtype).kind == "f"
        """Float frames may hold NaN/Inf: masked (module docstring)."""
        self.next_out = 0
        """Next index to output (or skip)."""
        self.closed = False
        """True once `finish()` was called: no more frames."""
        self.passthrough = 0
        """Frames output raw so far."""
        self._starts: list[int] = [0]
        """First index of each segment still of interest, ascending."""
        self._last_counter: int | None = None
        n_cache = span + self.max_batch + 2
        self._normed = np.empty((n_cache, *self.shape), np.float32)
        """Frames normalised once each (a frame enters up to len(offsets) windows): slot j % n_cache holds frame j."""
        self._normed_idx = np.full(n_cache, -1, np.int64)
        self._normed_stats: tuple[float, float] | None = None

    # ------------------------------------------------------------------ input
    def push(self, frame: np.ndarray, counter: int | None = None, t: float = 0.0, arrival: float = 0.0) -> Step:
        """Append one raw frame (H, W) or volume (I, J, K); returns how its counter continued the stream (gaps.Step).

        `counter` None means the expected next value (previous + step, 0 first).
        A gap, jump or restart ends the current segment here (module docstring).
        Errors: RuntimeError after `finish()`.
        """
        if self.closed:
            raise RuntimeError(f"{self.name}: frame pushed after the stream finished")
        expected = None if self._last_counter is None else self._last_counter + self.step
        if counter is None:
            counter = 0 if expected is None else expected
        what = classify(expected, int(counter), self.ring.capacity * self.step)
        if what is not Step.CONTINUE:
            self._end_segment()
            self._starts.append(self.ring.end)
            if what is Step.GAP:
                self.stats.dropped_upstream += (int(counter) - expected) // self.step
                self.stats.gaps += 1
            elif what is Step.JUMP:
                self.stats.gaps += 1
                self.stats.jumps += 1
            else:
                self.stats.restarts += 1
        self.ring.put(frame, counter=counter, time=t, arrival=arrival)
        self._last_counter = int(counter)
        return what

    def push_many(self, frames: np.ndarray, counters=None, times=None, arrivals=None) -> None:
        """`push` each frame of a (n, *frame) block, with optional per-frame counters / times / arrivals."""
        for k in range(len(frames)):
            self.push(frames[k], None if counters is None else int(counters[k]),
                      0.0 if times is None else float(times[k]), 0.0 if arrivals is None else float(arrivals[k]))

    def finish(self) -> None:
        """The stream has ended: its last segment ends at the newest frame (idempotent)."""
        if not self.closed:
            self._end_segment()
            self.closed = True

    def _end_segment(self) -> None:
        a, n = self._starts[-1], self.ring.end - self._starts[-1]
        if 0 < n < self.need:
            c0 = int(self.ring.field("counter", a)) if self.ring.holds(a) else a
            self._warn("%s: %d frame(s) from frame %d end before this %s model's minimum of %d frames; "
                       "they pass through raw (flagged passthrough)", self.name, n, c0, self.card.arch, self.need)

    # ------------------------------------------------------------------ state
    @property
    def end(self) -> int:
        """One past the newest index pushed."""
        return self.ring.end

    @property
    def done(self) -> bool:
        """Finished and every frame output, skipped or lost."""
        return self.closed and self.next_out >= self.ring.end

    def ready_hi(self) -> int:
        """Highest index whose output can be computed now (-1: none)."""
        end = self.ring.end
        if self.closed:
            return end - 1
        if self.renorm and self.mean is None and end < self.renorm:
            return -1
        a = self._starts[-1]
        if end - a < self.need:
            return a - 1  # the open segment is still too short to tell; earlier segments have ended
        return max(a - 1, end - 1 - self.lag)

    def backlog(self) -> int:
        """Outputs ready but not yet collected."""
        return max(0, self.ready_hi() - self.next_out + 1)

    def has_work(self) -> bool:
        return self.ready_hi() >= self.next_out

    def _segment(self, t: int) -> tuple[int, int | None]:
        """(first index, last index or None while open) of the segment holding index t."""
        k = bisect.bisect_right(self._starts, t) - 1
        a = self._starts[k]
        if k + 1 < len(self._starts):
            return a, self._starts[k + 1] - 1
        return a, (self.ring.end - 1 if self.closed else None)

    def sources(self, t: int) -> np.ndarray | None:
        """Ring indices feeding output t (a view of a reused buffer), or None: output raw.

        None when the window has no usable frame or t's segment ended shorter than min_frames.
        """
        a, last = self._segment(t)
        rel = t - a
        if last is not None and last - a + 1 < self.need:
            return None
        idx = self.batch.idx
        if rel + self._min_off >= 0 and (last is None or t + self.lag <= last):
            np.add(self.offsets, t, out=idx)  # interior: the plain offsets (what source_indices gives here)
            return idx
        rel_idx = self.window.source_indices(rel, None if last is None else last - a)
        if rel_idx is None:
            return None
        np.add(rel_idx, a, out=idx)
        return idx

    def _ensure_norm(self) -> None:
        if self.mean is not None:
            return
        if not self.renorm:
            self.mean, self.std = float(self.card.norm_mean), float(self.card.norm_std)
            return
        ring = self.ring
        n = min(self.renorm, ring.end)
        self.mean, self.std = estimate_norm(ring.item(j) for j in range(ring.oldest, n))
        log.info("%s: normalisation from its first %d frames: mean %.4g std %.4g", self.name,
                 max(0, n - ring.oldest), self.mean, self.std)

    def _slow_norm(self, t: int) -> tuple[float, float]:
        """(mean, std) for output index t under the slow update (see `renorm_rate`)."""
        j = t // self.renorm
        if self._norm_block < 0:
            self._norm_block = 1  # blocks 0 and 1: the first N frames' statistics (from _ensure_norm)
        while self._norm_block < j:
            k = self._norm_block + 1  # the next block: blend in frames (k-1)*N .. k*N - 1
            a, b = (k - 1) * self.renorm, k * self.renorm
            if a >= self.ring.oldest and b <= self.ring.end:
                m, s = estimate_norm(self.ring.item(i) for i in range(a, b))
                r = self.renorm_rate
                self.mean = (1.0 - r) * self.mean + r * m
                self.std = (1.0 - r) * self.std + r * s
            self._norm_block = k
        return self.mean, self.std

    def _normalised(self, j: int, mean: float, std: float) -> np.ndarray:
        """Ring frame j normalised with (mean, std), non-finite values as 0 (the mean); computed once per frame
        and statistics, then reused by every window that holds it (a view of a cache slot)."""
        if self._normed_stats != (mean, std):
            self._normed_idx[:] = -1
            self._normed_stats = (mean, std)
        slot = j % len(self._normed_idx)
        buf = self._normed[slot]
        if self._normed_idx[slot] != j:
            normalise(self.ring.data[j % self.ring.capacity], mean, std, out=buf)
            if self._float:  # non-finite inputs take the mean (0 once normalised)
                fmask = self.batch.fmask
                np.isfinite(buf, out=fmask)
                if not fmask.all():
                    np.logical_not(fmask, out=fmask)
                    np.copyto(buf, np.float32(0.0), where=fmask)
            self._normed_idx[slot] = j
        return buf

    def _prune(self) -> None:
        floor = min(self.next_out, self.ring.oldest)
        while len(self._starts) > 1 and self._starts[1] <= floor:
            self._starts.pop(0)

    # ------------------------------------------------------------------ batches
    def collect(self, policy: str = "all", full: bool = False) -> Job | None:
        """Gather the next ready outputs into the batch buffers; None when nothing is ready.

        Windows are normalised into `batch.windows`, raw frames t copied for the
        innovation step, passthrough frames copied (float32) into `batch.out`.
        `policy`: "all" or "latest"; `full`: only whole batches until the stream ends.
        """
        hi = self.ready_hi()
        lo = self.next_out
        if hi < lo:
            return None
        if full and not self.closed and hi - lo + 1 < self.max_batch:
            return None
        self._ensure_norm()
        ring, b = self.ring, self.batch
        b.ensure(self.shape)
        if policy == "latest" and hi - lo + 1 > self.max_batch:  # keep only the newest
            self.stats.skipped += hi - self.max_batch + 1 - lo
            lo = hi - self.max_batch + 1
        if lo < ring.oldest:  # the ring overwrote frames before their turn
            self.stats.overflow += ring.oldest - lo
            lo = ring.oldest
        cap, data, fields = ring.capacity, ring.data, ring.fields
        mean, std = self.mean, self.std
        n = rows = 0
        t = lo
        while t <= hi and n < self.max_batch:
            idx = self.sources(t)
            if idx is not None and idx.min() < ring.oldest:
                self.stats.overflow += 1
                t += 1
                continue
            s = t % cap
            b.index[n] = t
            b.counter[n] = fields["counter"][s]
            b.time[n] = fields["time"][s]
            b.arrival[n] = fields["arrival"][s]
            if idx is None:
                b.passthrough[n] = True
                np.copyto(b.out[n], data[s], casting="unsafe")
                a, last = self._segment(t)
                if last is not None and last - a + 1 < self.need:
                    self.stats.too_short += 1
            else:
                b.passthrough[n] = False
                b.row[n] = rows
                if self.renorm_rate:
                    mean, std = self._slow_norm(t)
                b.norm_mean[rows], b.norm_std[rows] = mean, std
                w = b.windows[rows]
                for c in range(len(idx)):
                    np.copyto(w[c], self._normalised(int(idx[c]), mean, std))
                if self.innovation is not None or self._float:
                    np.copyto(b.current[rows], data[s], casting="unsafe")
                rows += 1
            n += 1
            t += 1
        self.next_out = t
        self._prune()
        if not n:
            return None
        self.passthrough += int(n - rows)
        return Job(b, n, rows)

    def run(self, job: Job) -> Outputs:
        """Run the job's windows through the engine, denormalise, apply the innovation step.

        Errors: whatever the engine raises; RuntimeError when it returns the wrong size.
        """
        b, n, rows = job.batch, job.n, job.rows
        frames = b.out[:n]
        ms = 0.0
        if rows:
            shape = (rows, *self.shape)
            t0 = time.perf_counter()
            pred = np.asarray(self.engine.run(b.windows[:rows]))
            ms = (time.perf_counter() - t0) * 1000
            if pred.size != int(np.prod(shape)):
                raise RuntimeError(f"engine returned {pred.shape}, expected {shape}")
            den = b.den[:rows]
            if self.renorm_rate:  # each row with the statistics of its own block
                per_row = (rows,) + (1,) * len(self.shape)
                np.multiply(pred.reshape(shape), b.norm_std[:rows].reshape(per_row), out=den)
                den += b.norm_mean[:rows].reshape(per_row)
            else:
                denormalise(pred.reshape(shape), self.mean, self.std, out=den)
            bad = 0
            if self._float:
                cur, mask = b.current[:rows], b.mask[:rows]
                np.isfinite(cur, out=mask)
                np.logical_not(mask, out=mask)
                bad = int(np.count_nonzero(mask))
                if bad:
                    self.stats.nonfinite += bad
                    np.copyto(cur, den, where=mask)  # no innovation where frame t has no value
            if self.innovation is not None:
                self.innovation.apply(den, b.current[:rows])
            if bad:
                np.copyto(den, np.float32(np.nan), where=b.mask[:rows])
            if rows == n:
                frames = den
            else:
                for k in range(n):
                    if not b.passthrough[k]:
                        b.out[k] = den[b.row[k]]
        return Outputs(b.index[:n], b.counter[:n], b.time[:n], b.arrival[:n], frames, b.passthrough[:n], ms, rows)

    def drain(self, full: bool = False):
        """Yield `Outputs` until nothing is ready (single-threaded use, e.g. offline)."""
        while (job := self.collect("all", full)) is not None:
            yield self.run(job)
