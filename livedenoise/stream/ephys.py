"""Denoise extracellular data, offline and live, with ONE streaming processor.

`EphysStream` takes samples in whatever pieces they come (file chunks or
network blocks), keeps a preallocated ring buffer of normalised samples, and
returns every output sample as soon as the model's lag allows. Offline
denoising is the same object fed a file in chunks and then `finish()`ed, so the
live sidecar and `livedenoise denoise` compute the same numbers.

Edge policy, identical offline and live:
- per-sample models (`interp-ephys`): the window rule of models/window.py
  (mirror, then nearest usable sample); a causal model's first sample passes
  through raw.
- block models (`block-ephys`): normalised zeros (the mean) before the first
  and after the last sample.
Output has exactly as many samples as the input.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from livedenoise.errors import UserError
from livedenoise.models.norm import denormalise, normalise

BLOCK_ARCHS = ("block-ephys",)


def is_block_card(card) -> bool:
    return card.arch in BLOCK_ARCHS or card.layout == "block"


class _TorchRunner:
    """Minimal engine for a torch module (B, ...) -> (B, *frame), same contract as export.engine."""

    def __init__(self, card, net, device: str = "cpu"):
        import torch

        self.card, self.backend = card, "torch"
        self.torch = torch
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()

    def run(self, x: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            y = self.net(self.torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device))[:, 0]
            return y.cpu().numpy()

    def describe(self) -> str:
        return f"torch on {self.device}: {self.card.summary()}"


def open_ephys_engine(model: str | os.PathLike, backend: str = "auto", device: str | None = None, threads: int | None = None):
    """An engine (export.engine.open_engine) for a .pt / .onnx / .engine ephys model."""
    from livedenoise.export.engines.base import open_engine

    eng = open_engine(Path(model), backend, device=device, threads=threads)
    if eng.card.modality != "ephys":
        raise UserError(f"{model} is a {eng.card.modality} model ({eng.card.arch}); the ephys denoiser needs "
                        "interp-ephys or block-ephys (train one with `livedenoise train --arch block-ephys REC`)")
    return eng


class SampleRing:
    """Preallocated (capacity, channels) float32 ring addressed by absolute sample index."""

    def __init__(self, capacity: int, channels: int):
        self.cap = int(capacity)
        self.buf = np.zeros((self.cap, channels), np.float32)
        self.end = 0  # absolute index one past the newest sample

    def write(self, block: np.ndarray) -> None:
        n = block.shape[0]
        if n > self.cap:
            raise ValueError("block larger than the ring")
        i = self.end % self.cap
        k = min(n, self.cap - i)
        self.buf[i:i + k] = block[:k]
        if k < n:
            self.buf[:n - k] = block[k:]
        self.end += n

    def oldest(self) -> int:
        return max(0, self.end - self.cap)

    def take(self, idx: np.ndarray) -> np.ndarray:
        return self.buf[np.asarray(idx) % self.cap]

    def span(self, a: int, b: int) -> np.ndarray:
        """Samples a..b-1 (absolute), zeros for indices < 0 or >= end."""
        out = np.zeros((b - a, self.buf.shape[1]), np.float32)
        lo, hi = max(a, 0), min(b, self.end)
        if hi > lo:
            if lo < self.oldest():
                raise ValueError(f"sample {lo} already left the ring (oldest {self.oldest()})")
            out[lo - a:hi - a] = self.take(np.arange(lo, hi))
        return out


class EphysStream:
    """Streaming denoiser: push(uv) -> (first sample index, denoised µV), finish() flushes the tail."""

    def __init__(self, engine, n_channels: int, max_block: int = 4096, batch: int = 256, ring_samples: int | None = None):
        self.engine = engine
        self.card = card = engine.card
        if card.modality != "ephys":
            raise UserError(f"model is a {card.modality} model; the ephys denoiser needs an ephys model (interp-ephys, block-ephys)")
        self.C = int(n_channels)
        self.block = is_block_card(card)
        self.spec = card.window
        self.lag = int(card.lag)
        self.mean, self.std = float(card.norm_mean), float(card.norm_std)
        self.max_block, self.batch = int(max_block), int(batch)
        if self.block:
            self.before, self.after = int(card.params["ctx_before"]), int(card.params["ctx_after"])
        else:
            self.before, self.after = card.pre + card.omission, self.lag
            from livedenoise.models.nets import interp_ephys
            self.layout = card.layout if card.layout in interp_ephys.LAYOUTS else "checkerboard"
            self._ie = interp_ephys
        self.history = self.before + self.after + 1
        cap = ring_samples or (self.history + 8 * self.max_block)
        self.ring = SampleRing(cap, self.C)
        self.raw = SampleRing(cap, self.C)  # raw µV, for pass-through samples
        self.n_in = 0
        self.n_out = 0
        self.finished = False
        self.offsets = np.asarray(self.spec.offsets, np.int64)
        self.passthrough = 0
        """Samples output raw (a causal per-sample model's very first sample has no input)."""

    @property
    def pending(self) -> int:
        return self.n_in - self.n_out

    def reset(self) -> None:
        self.ring.end = self.raw.end = 0
        self.n_in = self.n_out = self.passthrough = 0
        self.finished = False

    def push(self, uv: np.ndarray) -> tuple[int, np.ndarray]:
        uv = np.asarray(uv, np.float32)
        if uv.ndim != 2 or uv.shape[1] != self.C:
            raise ValueError(f"expected (samples, {self.C}) got {uv.shape}")
        first = self.n_out
        outs = []
        step = max(1, self.ring.cap - self.history - 1)
        for a in range(0, uv.shape[0], step):
            piece = uv[a:a + step]
            self.ring.write(normalise(piece, self.mean, self.std))
            self.raw.write(piece)
            self.n_in += piece.shape[0]
            outs.append(self._emit(self.n_in - self.lag, last=None))
        out = np.concatenate(outs) if outs else np.zeros((0, self.C), np.float32)
        return first, out

    def finish(self) -> tuple[int, np.ndarray]:
        first = self.n_out
        if self.finished or self.n_in == 0:
            return first, np.zeros((0, self.C), np.float32)
        self.finished = True
        return first, self._emit(self.n_in, last=self.n_in - 1)

    # ------------------------------------------------------------------ internals

    def _emit(self, upto: int, last: int | None) -> np.ndarray:
        outs = []
        while self.n_out < upto:
            b = min(upto, self.n_out + self.max_block)
            outs.append(self._block_out(self.n_out, b, last) if self.block else self._interp_out(self.n_out, b, last))
            self.n_out = b
        return np.concatenate(outs) if outs else np.zeros((0, self.C), np.float32)

    def _block_out(self, a: int, b: int, last: int | None) -> np.ndarray:
        x = self.ring.span(a - self.before, b + self.after)  # zeros outside the recording
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


def denoise_array(engine, uv: np.ndarray, chunk: int = 30000, **kw) -> np.ndarray:
    """Denoise an in-memory (samples, channels) µV array; same length out."""
    st = EphysStream(engine, uv.shape[1], **kw)
    outs = []
    for a in range(0, uv.shape[0], chunk):
        outs.append(st.push(uv[a:a + chunk])[1])
    outs.append(st.finish()[1])
    return np.concatenate(outs)


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
    """Read a recording (path or Recording), denoise it, write the same format to `out`."""
    from livedenoise.io.readers_ephys import Recording, open_recording
    from livedenoise.io.writers_ephys import writer_like

    rec = src if isinstance(src, Recording) else open_recording(src, stream=stream, channels=channels, sample_rate=sample_rate)
    eng = engine or open_ephys_engine(model, backend)
    stop = rec.n_samples if stop is None else min(stop, rec.n_samples)
    # SpikeGLX sync (and other non-neural) channels are copied, never denoised
    neural = rec.meta.get("neural_channels") if rec.format == "spikeglx" else None
    chans = np.asarray(neural, np.int64) if neural is not None and len(neural) < rec.n_channels else None
    st = EphysStream(eng, rec.n_channels if chans is None else len(chans))
    card = eng.card
    w = writer_like(rec, out, description=f"denoised by livedenoise {card.summary()}")

    def full(first: int, y: np.ndarray) -> np.ndarray:
        if chans is None:
            return y
        out_ = rec.read(start + first, start + first + len(y))
        out_[:, chans] = y
        return out_
    t0 = time.perf_counter()
    done = 0
    try:
        sn = np.asarray(rec.sample_numbers[start:stop])
        for a in range(start, stop, chunk):
            b = min(stop, a + chunk)
            x = rec.read(a, b)
            first, y = st.push(x if chans is None else x[:, chans])
            if len(y):
                w.write(full(first, y), sn[first:first + len(y)])
                done += len(y)
            if progress and sys.stderr.isatty():
                print(f"\rdenoised {done}/{stop - start} samples", end="", file=sys.stderr)
        first, y = st.finish()
        if len(y):
            w.write(full(first, y), sn[first:first + len(y)])
            done += len(y)
    finally:
        w.close()
    wall = time.perf_counter() - t0
    if progress and sys.stderr.isatty():
        print(file=sys.stderr)
    return {
        "samples": done,
        "channels": rec.n_channels,
        "seconds": wall,
        "realtime_factor": (done / rec.sample_rate) / wall if wall > 0 else float("inf"),
        "out": str(getattr(w, "path", out)),
        "model": card.summary(),
    }
