"""Owns extracellular denoising, offline and live: `SamplePipeline` (segments, ring, engine) and its file driver.

`SamplePipeline` takes samples with their acquisition sample numbers, in
whatever pieces they come (file chunks or network blocks), keeps preallocated
rings (`stream.ring.Ring`) of normalised and raw samples, and returns every
output sample, with its own sample number, as soon as the model's lag allows.
Offline denoising (`denoise_samples`, `denoise_recording`) is the same object
fed a file in chunks and then `finish()`ed, so the live sidecar and
`livedenoise denoise` compute the same numbers.

Segments (the one gap/restart policy, `stream/gaps.py`): samples are denoised
within a segment of consecutive sample numbers. Where a sample number is not
the expected one (a forward jump: a gap; a fall back: a restart) the pipeline
finishes the current segment with the end-of-recording edge rule and starts a
new one at the received number. Nothing is invented: no window crosses a
segment boundary and every sample goes out exactly once, with its own number.
This is the only place that splits a stream into segments; the file path and
the live path both go through `SamplePipeline.push`.

Edge rule at a segment's ends, declared by the model:
- block models (`card.layout == "block"`, e.g. `block-ephys`): normalised zeros
  (the mean) for the `ctx_before` / `ctx_after` samples outside the segment;
- per-sample models (`interp-ephys`): the window rule of models/window.py
  (mirror, then nearest usable sample); a causal model's first sample of a
  segment has no input and passes through raw (`passthrough`).

Length rule (the one of `models.registry.min_frames`, which `train` and
`denoise` apply to whole recordings): outputs of a segment wait until it holds
`min_frames(card)` samples; a segment that ends shorter than that passes through
raw (`passthrough`, counted in `too_short`, one log warning per segment).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import NamedTuple

import logging

import numpy as np

from livedenoise.errors import UserError
from livedenoise.models.norm import denormalise, normalise
from livedenoise.models.registry import check_length, min_frames
from livedenoise.stream import gaps
from livedenoise.stream.ring import Ring

log = logging.getLogger("livedenoise.stream.openephys")


def open_ephys_engine(model: str | os.PathLike, backend: str = "auto", device: str | None = None, threads: int | None = None):
    """An engine (`export.engines.open_engine`) for a .pt / .onnx / .engine ephys model; UserError for any other."""
    from livedenoise.export.engines import open_engine

    eng = open_engine(Path(model), backend, device=device, threads=threads)
    if eng.card.modality != "ephys":
        from livedenoise.models import registry

        raise UserError(f"{model} is a {eng.card.modality} model ({eng.card.arch}); the ephys denoiser needs "
                        f"{' or '.join(registry.names('ephys'))} (train one with `livedenoise train --arch site-ephys "
                        "REC`, or block-ephys where the recording has no probe geometry)")
    return eng


def ring_capacity(card, max_block: int = 4096, ring_samples: int | None = None) -> int:
    """Samples a `SamplePipeline` ring holds for this model card: the window plus 8 blocks (or `ring_samples`).

    It is also the pipeline's (and the sidecar's) largest gap: a forward jump of
    more samples is a new acquisition (stream/gaps.py).
    """
    p = card.params
    if card.layout == "block":
        before, after = int(p["ctx_before"]), int(p["ctx_after"])
    else:
        before = int(p.get("ctx_before", card.pre + card.omission))
        after = int(p.get("ctx_after", int(card.lag)))
    return max(ring_samples or (before + after + 1 + 8 * int(max_block)), min_frames(card) + 1)


class Samples(NamedTuple):
    """Output of the pipeline: `sample_numbers` (n,) int64 and `data` (n, channels) float32 µV."""

    sample_numbers: np.ndarray
    data: np.ndarray

    def __len__(self) -> int:  # type: ignore[override]
        return int(self.data.shape[0])


class SamplePipeline:
    """Streaming denoiser of one channel count, segment by segment.

    `push(uv, sample_numbers)` -> `Samples` ready now; `finish()` ends the current
    segment (end-of-recording rule) and returns its tail. `sample_numbers` is
    per sample (n,), or the first sample's number (the rest follow it), or None
    (continue the current segment; 0 for the very first sample).

    Counters: `segments` started, `gaps`, `jumps` and `restarts` that started
    one (a jump is a forward gap larger than `max_gap` samples, when given:
    a new acquisition; see stream/gaps.py), `passthrough` samples
    output raw, `too_short` of them because their segment ended before
    `min_frames(card)` samples. Nothing is allocated in proportion to a gap or
    a jump: the rings are allocated once.
    """

    def __init__(self, engine, n_channels: int, max_block: int = 4096, batch: int = 256, ring_samples: int | None = None,
                 max_gap: int | None = None):
        self.engine = engine
        self.card = card = engine.card
        if card.modality != "ephys":
            raise UserError(f"model is a {card.modality} model; the ephys denoiser needs an ephys model (interp-ephys, block-ephys)")
        self.C = int(n_channels)
        fixed = card.params.get("positions")
        if fixed is not None and len(fixed) != self.C:  # a model made for one probe's geometry (site-ephys)
            raise UserError(f"this {card.arch} model was made for {len(fixed)} channels (its probe geometry); "
                            f"the data has {self.C}: train one on this recording")
        self.block = card.layout == "block"
        self.spec = card.window
        self.lag = int(card.lag)
        self.mean, self.std = float(card.norm_mean), float(card.norm_std)
        self.max_block, self.batch = int(max_block), int(batch)
        p = card.params
        if self.block:
            self.before, self.after = int(p["ctx_before"]), int(p["ctx_after"])
        else:
            self.before = int(p.get("ctx_before", card.pre + card.omission))
            self.after = int(p.get("ctx_after", self.lag))
            from livedenoise.models.nets import interp_ephys

            self.layout = card.layout if card.layout in interp_ephys.LAYOUTS else "checkerboard"
            self._ie = interp_ephys
        self.history = self.before + self.after + 1
        self.need = min_frames(card)
        cap = ring_capacity(card, self.max_block, ring_samples)
        self.max_gap = None if max_gap is None else int(max_gap)
        self.ring = Ring(cap, (self.C,), np.float32)  # normalised samples of the current segment
        self.raw = Ring(cap, (self.C,), np.float32)  # raw µV, for pass-through samples
        self.offsets = np.asarray(self.spec.offsets, np.int64)
        self.n_in = 0
        """Samples received in the current segment."""
        self.n_out = 0
        """Samples of the current segment output so far."""
        self.base: int | None = None
        """Sample number of the current segment's first sample (None: no segment open)."""
        self.segments = self.gaps = self.jumps = self.restarts = self.passthrough = self.too_short = 0

    # ------------------------------------------------------------------ state

    @property
    def pending(self) -> int:
        """Samples received but not yet output (at most `lag` while a segment is open)."""
        return self.n_in - self.n_out

    @property
    def expected(self) -> int | None:
        """The sample number that continues the current segment (None: no segment open)."""
        return None if self.base is None else self.base + self.n_in

    def _empty(self) -> Samples:
        return Samples(np.zeros(0, np.int64), np.zeros((0, self.C), np.float32))

    # ------------------------------------------------------------------ input

    def push(self, uv: np.ndarray, sample_numbers=None) -> Samples:
        uv = np.asarray(uv, np.float32)
        if uv.ndim != 2 or uv.shape[1] != self.C:
            raise ValueError(f"expected (samples, {self.C}) got {uv.shape}")
        n = uv.shape[0]
        if n == 0:
            return self._empty()
        if sample_numbers is None:
            first = self.expected if self.expected is not None else 0
            sn = np.arange(first, first + n, dtype=np.int64)
        elif np.ndim(sample_numbers) == 0:
            sn = np.arange(int(sample_numbers), int(sample_numbers) + n, dtype=np.int64)
        else:
            sn = np.asarray(sample_numbers, np.int64)
            if sn.shape != (n,):
                raise ValueError(f"{len(sn)} sample numbers for {n} samples")
        outs: list[Samples] = []
        for a, b in gaps.segments(sn):
            step = gaps.classify(self.expected, int(sn[a]), self.max_gap)
            if step is not gaps.Step.CONTINUE or self.base is None:
                outs.append(self.finish())
                self.base = int(sn[a])
                self.segments += 1
                self.gaps += step is gaps.Step.GAP
                self.jumps += step is gaps.Step.JUMP
                self.restarts += step is gaps.Step.RESTART
            outs.append(self._push_segment(uv[a:b]))
        return _cat(outs, self.C)

    def finish(self) -> Samples:
        """End the current segment: its last `lag` samples go out with the end-of-recording rule."""
        if self.base is None:
            return self._empty()
        if 0 < self.n_in < self.need:  # shorter than the model's minimum: nothing was output yet; all of it raw
            log.warning("samples %d..%d end before this %s model's minimum of %d samples; they pass through raw",
                        self.base, self.base + self.n_in - 1, self.card.arch, self.need)
            y = self.raw.take(np.arange(self.n_out, self.n_in))
            self.passthrough += len(y)
            self.too_short += len(y)
        else:
            y = self._emit(self.n_in, last=self.n_in - 1) if self.n_in else np.zeros((0, self.C), np.float32)
        out = Samples(np.arange(self.base + self.n_in - len(y), self.base + self.n_in, dtype=np.int64), y)
        self.discard()
        return out

    def discard(self) -> int:
        """Drop the current segment without output (e.g. after an engine failure); returns the samples dropped."""
        lost = self.pending if self.base is not None else 0
        self.ring.reset()
        self.raw.reset()
        self.n_in = self.n_out = 0
        self.base = None
        return lost

    # ------------------------------------------------------------------ internals

    def _push_segment(self, uv: np.ndarray) -> Samples:
        first = self.base + self.n_out
        outs = []
        step = max(1, self.ring.capacity - self.history - 1)
        for a in range(0, uv.shape[0], step):
            piece = uv[a:a + step]
            self.ring.assign(self.n_in, normalise(piece, self.mean, self.std))
            self.raw.assign(self.n_in, piece)
            self.n_in += piece.shape[0]
            if self.n_in >= self.need:  # the length rule: a segment's outputs wait for min_frames samples
                outs.append(self._emit(self.n_in - self.lag, last=None))
        y = np.concatenate(outs) if outs else np.zeros((0, self.C), np.float32)
        return Samples(np.arange(first, first + len(y), dtype=np.int64), y)

    def _emit(self, upto: int, last: int | None) -> np.ndarray:
        outs = []
        while self.n_out < upto:
            b = min(upto, self.n_out + self.max_block)
            outs.append(self._block_out(self.n_out, b) if self.block else self._interp_out(self.n_out, b, last))
            self.n_out = b
        return np.concatenate(outs) if outs else np.zeros((0, self.C), np.float32)

    def _block_out(self, a: int, b: int) -> np.ndarray:
        x = self.ring.span(a - self.before, b + self.after, fill=0)  # the mean outside the segment
        y = self.engine.run(np.ascontiguousarray(x.T[None, None]))  # (1, C, T_out)
        y = np.asarray(y).reshape(self.C, b - a).T
        return denormalise(y, self.mean, self.std)

    def _interp_out(self, a: int, b: int, last: int | None) -> np.ndarray:
        ts = np.arange(a, b)
        idx = ts[:, None] + self.offsets[None, :]
        horizon = (ts + self.lag) if last is None else np.minimum(ts + self.lag, last)
        interior = (idx.min(1) >= 0) & (idx.max(1) <= horizon)
        passthrough = np.zeros(len(ts), bool)
        for k in np.nonzero(~interior)[0]:
            src = self.spec.source_indices(int(ts[k]), last)
            if src is None:
                passthrough[k] = True
                idx[k] = ts[k]
            else:
                idx[k] = src
        out = np.empty((len(ts), self.C), np.float32)
        for s in range(0, len(ts), self.batch):
            e = min(len(ts), s + self.batch)
            win = self.ring.take(idx[s:e])  # (B, K, C)
            frames = self._ie.to_frames(win, self.layout)  # (B, K, rows, 2)
            pred = np.asarray(self.engine.run(frames))  # (B, rows, 2)
            out[s:e] = self._ie.from_frames(pred, self.C, self.layout)
        out = denormalise(out, self.mean, self.std)
        if passthrough.any():
            out[passthrough] = self.raw.take(ts[passthrough])
            self.passthrough += int(passthrough.sum())
        return out


def _cat(parts: list[Samples], C: int) -> Samples:
    parts = [p for p in parts if len(p)]
    if not parts:
        return Samples(np.zeros(0, np.int64), np.zeros((0, C), np.float32))
    if len(parts) == 1:
        return parts[0]
    return Samples(np.concatenate([p.sample_numbers for p in parts]), np.concatenate([p.data for p in parts]))


def denoise_samples(engine, data: np.ndarray, chunk: int = 30000, sample_numbers: np.ndarray | None = None, **kw) -> np.ndarray:
    """Denoise an in-memory (samples, channels) µV array; same length out.

    `sample_numbers` (n,) gives each sample's acquisition number: the array is
    denoised segment by segment between gaps and restarts, as live. Other
    keywords go to `SamplePipeline`.
    """
    data = np.asarray(data)
    check_length(engine.card, data.shape[0], "the recording")
    pipe = SamplePipeline(engine, data.shape[1], **kw)
    sn = np.arange(data.shape[0], dtype=np.int64) if sample_numbers is None else np.asarray(sample_numbers, np.int64)
    outs = [pipe.push(data[a:a + chunk], sn[a:a + chunk]).data for a in range(0, data.shape[0], chunk)]
    outs.append(pipe.finish().data)
    return np.concatenate(outs) if outs else np.zeros((0, data.shape[1]), np.float32)


def denoise_recording(
    src,
    model,
    out: str | os.PathLike,
    backend: str = "auto",
    chunk: int = 30000,
    stream: str | int | None = None,
    channels: int | None = None,
    sample_rate: float | None = None,
    start: int = 0,
    stop: int | None = None,
    progress: bool = True,
    engine=None,
) -> dict:
    """Read a recording (path or Recording), denoise it, write the same format to `out`.

    The recording's own sample numbers (Open Ephys `sample_numbers.npy`) drive
    the segmenting: a gap or restart in them is handled exactly as live.
    """
    from livedenoise.io.readers_ephys import Recording, open_recording
    from livedenoise.io.writers_ephys import writer_like

    rec = src if isinstance(src, Recording) else open_recording(src, stream=stream, channels=channels, sample_rate=sample_rate)
    eng = engine or open_ephys_engine(model, backend)
    stop = rec.n_samples if stop is None else min(stop, rec.n_samples)
    check_length(eng.card, stop - start, str(rec.path))
    # non-neural channels the reader names (SpikeGLX sync, ...) are copied, never denoised
    neural = rec.meta.get("neural_channels")
    chans = np.asarray(neural, np.int64) if neural is not None and len(neural) < rec.n_channels else None
    pipe = SamplePipeline(eng, rec.n_channels if chans is None else len(chans))
    card = eng.card
    w = writer_like(rec, out, description=f"denoised by livedenoise {card.summary()}")
    sn = np.asarray(rec.sample_numbers[start:stop], np.int64)
    done = 0  # output leaves in input order: the k-th output sample is input position start + k

    def write(y: Samples) -> None:
        nonlocal done
        if not len(y):
            return
        data = y.data
        if chans is not None:
            data = rec.read(start + done, start + done + len(y))
            data[:, chans] = y.data
        w.write(data, y.sample_numbers)
        done += len(y)

    bar = None
    if progress:
        from livedenoise.progress import Progress

        bar = Progress(stop - start, "sample", "denoise", leave=False)
    t0 = time.perf_counter()
    try:
        for a in range(start, stop, chunk):
            b = min(stop, a + chunk)
            x = rec.read(a, b)
            before = done
            write(pipe.push(x if chans is None else x[:, chans], sn[a - start:b - start]))
            if bar is not None:
                bar.update(done - before)
        write(pipe.finish())
    except BaseException:
        w.abort()  # the final name is never given to an incomplete output
        raise
    else:
        w.close()
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t0
    return {
        "samples": done,
        "channels": rec.n_channels,
        "segments": pipe.segments,
        "gaps": pipe.gaps,
        "jumps": pipe.jumps,
        "restarts": pipe.restarts,
        "seconds": wall,
        "realtime_factor": (done / rec.sample_rate) / wall if wall > 0 else float("inf"),
        "out": str(getattr(w, "path", out)),
        "model": card.summary(),
    }
