"""Self-supervised training samples: (input window, target) crops from noisy movies.

Windows are gathered with `card.window.source_indices(t, last)`, the very
function inference uses, so training and denoising share the edge policy.

The architecture says which pairs (`registry.target_shift(card)`):

- None (interp2d and any single-output arch): input = the window's frames for
  output t, target = frame t (never an input).
- k (cad3d: DeepCAD's odd/even Noise2Noise sub-stacks, k = omission + 1):
  input = the window's frames for an interior output t, target = each input
  frame + k; the loss covers every temporal position.

Crops are square (so rot90 applies) and augmented with flips and rot90,
identically for input and target. fMRI volumes (I, J, K) give cubic crops
(the side capped by the volume's smallest axis), flipped along I only: the
voxel grid is usually anisotropic (slices thicker than in-plane voxels), so
axes are never swapped, and a left-right flip keeps the anatomy plausible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from livedenoise.models import registry
from livedenoise.models.norm import estimate_norm, normalise

IN_MEMORY_BYTES = 2 << 30
"""Movies smaller than this (as float32) are read into RAM once; larger ones are read crop by crop."""


class MovieSource:
    """Frames lo..hi-1 of an array-like movie (N, H, W) or run of volumes (N, I, J, K), seen as a movie of its own."""

    def __init__(self, movie, lo: int = 0, hi: int | None = None, name: str = "movie", in_memory_bytes: int = IN_MEMORY_BYTES):
        shape = tuple(int(s) for s in getattr(movie, "shape", np.shape(movie)))
        if len(shape) not in (3, 4):
            raise ValueError(f"{name}: expected a movie of shape (frames, height, width) or (volumes, I, J, K), "
                             f"got {shape}")
        n = shape[0]
        hi = n if hi is None else min(int(hi), n)
        lo = max(0, int(lo))
        if hi <= lo:
            raise ValueError(f"{name}: empty frame range {lo}..{hi}")
        self.name = name
        self.lo, self.hi = lo, hi
        self.frame_shape = shape[1:]
        nbytes = (hi - lo) * int(np.prod(shape[1:])) * 4
        self._reader = None
        if nbytes <= in_memory_bytes:
            self.data = np.asarray(movie.read(lo, hi)) if _is_reader(movie) else np.asarray(movie[lo:hi])
            self.offset = 0
        elif _is_reader(movie):
            self.data = None
            self._reader = movie  # a readers.Movie: read frame by frame
            self.offset = lo
        else:
            self.data = movie
            self.offset = lo

    def __len__(self) -> int:
        return self.hi - self.lo

    @property
    def last(self) -> int:
        return len(self) - 1

    def crop(self, indices: np.ndarray, *corner_and_size: int) -> np.ndarray:
        """(len(indices), size, ...) float32 crop of the given (local) frames: `crop(idx, y, x, size)` for
        images, `crop(idx, i, j, k, size)` for volumes (a cube of side `size` from corner (i, j, k))."""
        *corner, size = (int(v) for v in corner_and_size)
        if len(corner) != len(self.frame_shape):
            raise ValueError(f"a crop of {len(self.frame_shape)}-axis frames needs {len(self.frame_shape)} corner "
                             f"coordinates, got {len(corner)}")
        box = tuple(slice(c, c + size) for c in corner)
        idx = np.asarray(indices, dtype=np.int64) + self.offset
        if self._reader is not None:
            return np.stack([self._frame(int(i))[box] for i in idx]).astype(np.float32)
        try:
            block = self.data[(idx, *box)]
        except (TypeError, IndexError, ValueError):
            block = np.stack([np.asarray(self.data[int(i)])[box] for i in idx])
        return np.asarray(block, dtype=np.float32)

    def frames(self, indices) -> np.ndarray:
        idx = [int(i) + self.offset for i in indices]
        if self._reader is not None:
            return np.stack([self._frame(i) for i in idx]).astype(np.float32)
        return np.stack([np.asarray(self.data[i], dtype=np.float32) for i in idx])

    def _frame(self, i: int) -> np.ndarray:
        return self._reader.read(i, i + 1)[0]


def _is_reader(movie) -> bool:
    """A livedenoise.io.readers.Movie (shape + read(start, stop)), not an array."""
    return not isinstance(movie, np.ndarray) and callable(getattr(movie, "read", None))


def sample_norm(sources: list[MovieSource], max_frames: int = 256) -> tuple[float, float]:
    """Global mean and std of up to `max_frames` evenly spread frames of all sources.

    The frames are read one at a time and go to `models.norm.estimate_norm`, the
    estimate `serve --renorm` uses too.
    """
    from livedenoise.models.norm import spread

    per = max(1, max_frames // max(1, len(sources)))

    def frames():
        for src in sources:
            for i in spread(len(src), per):
                yield src.frames([int(i)])

    return estimate_norm(frames())


@dataclass
class Plan:
    """Which output frames of a source can make a training sample."""

    source: MovieSource
    ts: np.ndarray


def plan_source(card, src: MovieSource) -> Plan:
    spec = card.window
    last = src.last
    shift = registry.target_shift(card)
    if shift is None:
        ts = [t for t in range(len(src)) if spec.source_indices(t, last=last) is not None]
    else:
        offs = np.asarray(spec.offsets)
        lo = -int(offs.min())
        hi = last - int(offs.max()) - shift
        ts = list(range(lo, hi + 1)) if hi >= lo else []
    return Plan(src, np.asarray(ts, dtype=np.int64))


def _augment(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if x.ndim == 4:  # (C, I, J, K) volumes: a flip along I only (axes never swapped: voxels are anisotropic)
        if rng.integers(2):
            x, y = x[:, ::-1], y[:, ::-1]
        return x, y
    k = int(rng.integers(4))
    if k:
        x, y = np.rot90(x, k, axes=(-2, -1)), np.rot90(y, k, axes=(-2, -1))
    if rng.integers(2):
        x, y = x[..., ::-1], y[..., ::-1]
    return x, y


class SampleMaker:
    """Draws normalised (input, target) crop batches from planned sources."""

    def __init__(self, card, sources: list[MovieSource], crop: int, rng: np.random.Generator, augment: bool = True):
        self.card = card
        self.shift = registry.target_shift(card)
        self.plans = [p for p in (plan_source(card, s) for s in sources) if len(p.ts)]
        if not self.plans:
            raise ValueError("no frame of the movies can make a training sample for this window")
        h = min(min(p.source.frame_shape) for p in self.plans)
        self.crop = int(min(crop, h))
        self.rng = rng
        self.augment = augment
        weights = np.array([len(p.ts) for p in self.plans], dtype=np.float64)
        self.weights = weights / weights.sum()
        self.mean, self.std = float(card.norm_mean), float(card.norm_std)

    @property
    def n_samples(self) -> int:
        return int(sum(len(p.ts) for p in self.plans))

    def one(self, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        rng = rng or self.rng
        plan = self.plans[int(rng.choice(len(self.plans), p=self.weights))] if len(self.plans) > 1 else self.plans[0]
        t = int(plan.ts[int(rng.integers(len(plan.ts)))])
        src = plan.source
        c = self.crop
        corner = [int(rng.integers(n - c + 1)) for n in src.frame_shape]
        idx = self.card.window.source_indices(t, last=src.last)
        if self.shift is None:
            block = src.crop(np.append(idx, t), *corner, c)
            x, y = block[:-1], block[-1:]
        else:
            x = src.crop(idx, *corner, c)
            y = src.crop(idx + self.shift, *corner, c)
        if self.augment:
            x, y = _augment(x, y, rng)
        return x, y

    def batch(self, n: int, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = zip(*(self.one(rng) for _ in range(n)))
        x = normalise(np.stack(xs), self.mean, self.std)
        y = normalise(np.stack(ys), self.mean, self.std)
        # non-finite pixels: inputs filled with the mean (0 once normalised), targets NaN (left out of the loss)
        np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        y[~np.isfinite(y)] = np.nan
        return x, y

    def fixed(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """A repeatable set of n samples (validation), unaugmented."""
        rng = np.random.default_rng(seed)
        aug, self.augment = self.augment, False
        try:
            return self.batch(n, rng)
        finally:
            self.augment = aug
