"""Normalisation of imaging frames: the one place that estimates, applies and undoes it.

Training, offline denoising and the live service all call these functions, so a
streamed frame and a file frame pass through identical float32 arithmetic (the
"streaming equals offline" rule), and the statistics a model is trained with
are estimated the same way as `serve --renorm` re-estimates them.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np


def normalise(frames: np.ndarray, mean: float, std: float, out: np.ndarray | None = None) -> np.ndarray:
    """(frames - mean) / std in float32, into `out` when given (any shape; `out` the same shape)."""
    out = np.subtract(frames, np.float32(mean), out=out, dtype=np.float32, casting="unsafe")
    out *= np.float32(1.0 / std)
    return out


def denormalise(pred: np.ndarray, mean: float, std: float, out: np.ndarray | None = None) -> np.ndarray:
    """pred * std + mean in float32, into `out` when given (any shape; `out` the same shape)."""
    out = np.multiply(pred, np.float32(std), out=out, dtype=np.float32, casting="unsafe")
    out += np.float32(mean)
    return out


def estimate_norm(frames: np.ndarray | Iterable[np.ndarray]) -> tuple[float, float]:
    """Mean and standard deviation (float64) of every sample of `frames`.

    `frames`: one array of any shape (e.g. (T, H, W) raw frames, any numeric
    dtype), or an iterable of such arrays (frames or chunks read one at a time,
    so a long movie never has to be in memory): the result is that of all their
    samples together. Chunks are combined with Chan's pairwise update, which
    stays exact for large means. Non-finite samples (NaN, Inf) are left out.
    The std is 1.0 when the samples are constant (or there are none), so
    normalising never divides by zero; the mean is 0.0 when there are no samples.
    """
    parts = (frames,) if isinstance(frames, np.ndarray) else frames
    n, mean, m2 = 0, 0.0, 0.0
    for part in parts:
        x = np.asarray(part, dtype=np.float64)
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            x = x[np.isfinite(x)]
        k = x.size
        if not k:
            continue
        mk = float(x.mean())
        m2k = float(np.square(x - mk).sum())
        delta = mk - mean
        tot = n + k
        mean += delta * k / tot
        m2 += m2k + delta * delta * n * k / tot
        n = tot
    std = float(np.sqrt(m2 / n)) if n else 0.0
    return mean, (std if std > 0 and np.isfinite(std) else 1.0)


NORM_MODES = ("data", "card")
"""`--norm`: the data's own statistics (offline: the movie, up to SAMPLE_FRAMES evenly spread frames, or its
first `--renorm N`; live: the first `--renorm N` frames of each acquisition), or the model card's (those of
the training movies)."""
SAMPLE_FRAMES = 256


def sample_frames_norm(n: int, frame, max_frames: int = SAMPLE_FRAMES) -> tuple[float, float]:
    """`estimate_norm` of up to `max_frames` evenly spread frames of 0..n-1; `frame(i)` reads frame i.

    The estimate training uses for the card (train/samples.py) and `denoise` for a movie's own statistics.
    """
    return estimate_norm(frame(int(i)) for i in spread(n, max_frames))


def spread(n: int, k: int) -> np.ndarray:
    """Up to `k` evenly spread indices of 0..n-1 (first and last included); empty for n <= 0."""
    if n <= 0:
        return np.zeros(0, np.int64)
    return np.unique(np.linspace(0, n - 1, min(k, n)).astype(np.int64))


def mismatch(card_mean: float, card_std: float, mean: float, std: float) -> str | None:
    """One line when a movie's statistics are far from the card's (brightness x2 or more apart,
    or means more than one card std apart), else None."""
    ratio = std / card_std if card_std > 0 else float("inf")
    shift = abs(mean - card_mean) / card_std if card_std > 0 else float("inf")
    if 0.5 <= ratio <= 2.0 and shift <= 1.0:
        return None
    return (f"this movie's statistics differ from the training movies' (mean {mean:.4g} vs {card_mean:.4g}, "
            f"std {std:.4g} vs {card_std:.4g})")
