"""Offline denoising of a movie file with any engine, in bounded memory.

For every input frame t the model sees the frames named by the card's window
(`card.window.source_indices(t, last)`: reflected at the movie's edges, the
same rule the live service uses), so the output has exactly as many frames as
the input; a frame with no usable context at all (the first frame for a
causal model) passes through unchanged.

The movie is read in chunks of whole batches plus the window's margins, so
memory holds one chunk, never the movie. Batches are formed from the global
frame index (frames [k*batch, (k+1)*batch)), so the engine sees the same
batches whatever the chunk size: output is bit-identical between runs and
between chunkings.

Output values keep the input's sample type, rounded and clipped to its range
(never wrapped around), unless `out_dtype` asks for float32.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from livedenoise.errors import UserError
from livedenoise.models.innovation import InnovationStep, step_for
from livedenoise.models.norm import denormalise, normalise

DEFAULT_CHUNK = 128  # frames per read, rounded up to a whole number of batches


@dataclass
class DenoiseStats:
    frames: int
    passthrough: int
    seconds: float
    batch: int
    dtype: str
    innovation: dict | None = None
    """The innovation step's settings when it was applied."""

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict:
        return {**asdict(self), "frames_per_s": self.fps}


def check_movie_fits(movie, card) -> None:
    """UserError when the movie is too short for the window or the wrong frame size."""
    need = card.window.size + 1
    if len(movie) < need:
        raise UserError(
            f"{movie.path.name} has {len(movie)} frames but this model's window uses {card.window.size} input "
            f"frames, so it needs at least {need}; use a longer movie or a model with a smaller window"
        )
    if card.frame_shape is not None and list(movie.shape[1:]) != list(card.frame_shape):
        h, w = movie.shape[1:]
        raise UserError(
            f"{movie.path.name} has {h}x{w} frames but the model was built for "
            f"{'x'.join(map(str, card.frame_shape))} frames; use a model trained at this size"
        )
    if getattr(card, "layout", "frames") != "frames":
        raise UserError(f"this model expects {card.layout!r} input ({card.modality}), not imaging frames")


def output_dtype(in_dtype, out_dtype) -> np.dtype:
    if out_dtype in (None, "same"):
        return np.dtype(in_dtype)
    dt = np.dtype(out_dtype)
    if dt != np.float32:
        raise UserError(f"output sample type must be 'same' or 'float32', not {out_dtype!r}")
    return dt


def _to_dtype(pred: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """float32 -> dtype: integers are rounded and clipped to the type's range (no wrap-around)."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        out = np.rint(pred)
        np.clip(out, info.min, info.max, out=out)
        return out.astype(dtype)
    return pred.astype(dtype, copy=False)


def denoise_movie(movie, engine, writer, *, batch: int = 8, out_dtype=None, progress: bool = True,
                  chunk: int = DEFAULT_CHUNK, innovation: InnovationStep | None = None) -> DenoiseStats:
    """Denoise every frame of `movie` with `engine`, appending the results to `writer`.

    With `innovation`, each prediction is corrected by its own raw frame (models/innovation.py).
    """
    card = engine.card
    spec = card.window
    check_movie_fits(movie, card)
    if batch < 1:
        raise UserError(f"batch must be >= 1 (got {batch})")
    dtype = output_dtype(movie.dtype, out_dtype)
    t_total = len(movie)
    last = t_total - 1
    h, w = movie.shape[1:]
    chunk = max(batch, -(-int(chunk) // batch) * batch)
    windows = np.empty((batch, spec.size, h, w), np.float32)
    current = np.empty((batch, h, w), np.float32) if innovation is not None else None
    mean, std = float(card.norm_mean), float(card.norm_std)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=t_total, unit="frame", desc="denoise", leave=False, dynamic_ncols=True)
    started = time.perf_counter()
    passthrough = 0
    try:
        for a in range(0, t_total, chunk):
            b = min(t_total, a + chunk)
            sources = [spec.source_indices(t, last) for t in range(a, b)]
            used = [s for s in sources if s is not None]
            lo = min([a] + [int(s.min()) for s in used])
            hi = max([b - 1] + [int(s.max()) for s in used])
            raw = movie.read(lo, hi + 1)
            out = np.empty((b - a, h, w), dtype)
            for ba in range(a, b, batch):
                bb = min(b, ba + batch)
                todo = [t for t in range(ba, bb) if sources[t - a] is not None]
                for t in range(ba, bb):
                    if sources[t - a] is None:
                        out[t - a] = _to_dtype(raw[t - lo].astype(np.float32), dtype)
                        passthrough += 1
                if not todo:
                    continue
                for k, t in enumerate(todo):
                    for c, j in enumerate(sources[t - a]):
                        normalise(raw[j - lo], mean, std, out=windows[k, c])
                pred = np.asarray(engine.run(windows[: len(todo)]), dtype=np.float32)
                if pred.shape != (len(todo), h, w):
                    raise RuntimeError(f"engine returned {pred.shape}, expected {(len(todo), h, w)}")
                pred = denormalise(pred, mean, std)
                if innovation is not None:
                    for k, t in enumerate(todo):
                        current[k] = raw[t - lo]
                    innovation.apply(pred, current[: len(todo)])
                for k, t in enumerate(todo):
                    out[t - a] = _to_dtype(pred[k], dtype)
            writer.write(out)
            if bar is not None:
                bar.update(b - a)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - started
    return DenoiseStats(t_total, passthrough, seconds, batch, dtype.name,
                        innovation.cfg.to_dict() if innovation is not None else None)


def denoise_array(frames: np.ndarray, engine, *, batch: int = 8, innovation: InnovationStep | None = None) -> np.ndarray:
    """`denoise_movie` of an in-memory (T, H, W) movie, returned as a float32 array."""
    from livedenoise.io.readers import ArrayMovie

    out = np.empty(np.shape(frames), np.float32)

    class _Into:
        done = 0

        def write(self, chunk: np.ndarray) -> None:
            out[self.done:self.done + len(chunk)] = chunk
            self.done += len(chunk)

    denoise_movie(ArrayMovie(np.asarray(frames)), engine, _Into(), batch=batch, out_dtype=np.float32,
                  progress=False, innovation=innovation)
    return out


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def denoise_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    model: str | os.PathLike,
    *,
    backend: str = "auto",
    batch: int = 8,
    out_dtype=None,
    channel: int | None = None,
    plane: int | None = None,
    dataset: str | None = None,
    progress: bool = True,
    chunk: int = DEFAULT_CHUNK,
    innovation: bool = False,
    innovation_k: float | None = None,
) -> DenoiseStats:
    """Open `src`, denoise it with `model`, write `dst` (TIFF or HDF5). The input is never written.

    `innovation` applies the innovation step with the card's settings (`innovation_k` overrides k).
    """
    from livedenoise.export.engines.base import open_engine
    from livedenoise.io.readers import open_movie
    from livedenoise.io.writers import WRITER_EXTS

    src, dst = Path(src), Path(dst)
    if same_file(src, dst):
        raise UserError(f"output {dst} is the input file; choose another output name (the input is never overwritten)")
    if dst.suffix.lower() not in WRITER_EXTS:
        raise UserError(f"cannot write {dst.name}: unknown output format {dst.suffix or '(no extension)'!r}; use one of {', '.join(WRITER_EXTS)}")
    from livedenoise.io.writers import open_writer

    with open_movie(src, channel=channel, plane=plane, dataset=dataset) as movie:
        engine = open_engine(model, backend)
        check_movie_fits(movie, engine.card)
        step, _ = step_for(engine.card, innovation, innovation_k)
        dtype = output_dtype(movie.dtype, out_dtype)
        attrs = {"source": str(src.name), "model": engine.card.summary(), "lag": int(engine.card.lag)}
        if step is not None:
            attrs["innovation"] = step.describe()
        with open_writer(dst, len(movie), movie.shape[1:], dtype, attrs=attrs) as writer:
            return denoise_movie(movie, engine, writer, batch=batch, out_dtype=out_dtype, progress=progress, chunk=chunk,
                                 innovation=step)
