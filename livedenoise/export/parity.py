"""Parity of an exported model against its PyTorch original, on real windows.

Windows come from a movie (``--check`` / ``--calibrate``), normalised with the
card's mean/std and assembled with the card's window exactly as denoising does;
without a movie, from a simulated two-photon movie
(`livedenoise.sim.imaging`). Models whose input is not a stack of frames
(`layout` other than ``frames``) are checked on seeded standard-normal inputs
of their example-input shape.

Errors, over every output pixel of every checked window:

* ``max_abs`` = max |candidate - reference|
* ``max_rel`` = max |candidate - reference| / max |reference|

(relative to the largest reference magnitude, not per pixel, so near-zero
pixels do not blow the ratio up). fp32 ONNX must reach ``max_rel <= 1e-4``;
fp32 TensorRT ``<= 1e-3`` (it may choose Winograd/FFT kernels); fp16 and int8
engines ``<= --tolerance``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from livedenoise.errors import UserError
from livedenoise.models.card import ModelCard
from livedenoise.models.norm import normalise

ONNX_FP32_LIMIT = 1e-4
TENSORRT_FP32_LIMIT = 1e-3
DEFAULT_TOLERANCE = {"fp16": 1e-2, "int8": 1e-1}


def limit_for(kind: str, precision: str, tolerance: float | None = None) -> float:
    if kind == "onnx":
        return ONNX_FP32_LIMIT
    if precision == "fp32":
        return TENSORRT_FP32_LIMIT if tolerance is None else min(TENSORRT_FP32_LIMIT, tolerance)
    return DEFAULT_TOLERANCE[precision] if tolerance is None else float(tolerance)


@dataclass
class ParityResult:
    target: str
    """What was checked (`onnx`, `tensorrt`)."""
    backend: str
    precision: str
    path: str
    max_abs: float
    max_rel: float
    ref_max: float
    limit: float
    windows: int
    source: str
    ok: bool = field(init=False)

    def __post_init__(self) -> None:
        self.ok = bool(np.isfinite(self.max_rel) and self.max_rel <= self.limit)

    def to_dict(self) -> dict:
        return asdict(self)


def compare(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float, float]:
    """(max_abs, max_rel, max|reference|) with max_rel = max|a-b| / max|reference|."""
    reference = np.asarray(reference, np.float64)
    candidate = np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        raise ValueError(f"shapes differ: {reference.shape} vs {candidate.shape}")
    diff = np.abs(candidate - reference)
    max_abs = float(diff.max()) if diff.size else 0.0
    if not np.all(np.isfinite(candidate)):
        max_abs = float("inf")
    ref_max = float(np.abs(reference).max()) if reference.size else 0.0
    max_rel = max_abs / ref_max if ref_max > 0 else (0.0 if max_abs == 0 else float("inf"))
    return max_abs, max_rel, ref_max


def _fit_frames(frames: np.ndarray, frame_shape, source: str) -> np.ndarray:
    """Centre-crop movie frames to the exported frame size (they may not be smaller)."""
    h, w = frames.shape[-2:]
    H, W = frame_shape
    if h < H or w < W:
        raise UserError(f"{source}: frames are {h}x{w}, smaller than the exported {H}x{W}; check with a movie of at least that size")
    y, x = (h - H) // 2, (w - W) // 2
    return frames[..., y : y + H, x : x + W]


def simulated_movie(frames: int, frame_shape, seed: int = 0) -> np.ndarray:
    """A small simulated two-photon movie (int16) for parity and calibration without a file."""
    from livedenoise.sim.imaging import simulate_movie

    h, w = (max(8, int(s)) for s in frame_shape)
    return simulate_movie(frames=int(frames), height=h, width=w, seed=seed).noisy


def movie_windows(card: ModelCard, frame_shape, movie=None, n: int = 8, seed: int = 0) -> tuple[np.ndarray, str]:
    """(n, *window) float32 normalised windows and a description of where they came from.

    `movie` is a path (read with `open_movie`), a (T, H, W) array, or None for a
    simulated movie.
    """
    from livedenoise.export.engines.base import example_input

    n = max(1, int(n))
    if card.layout != "frames":
        shape = tuple(example_input(card, frame_shape).shape[1:])
        rng = np.random.default_rng(seed)
        return rng.standard_normal((n, *shape), dtype=np.float32), f"{n} seeded standard-normal inputs ({card.layout} layout)"

    spec = card.window
    first, last = spec.span
    span = last - first + 1
    need = span + n
    if movie is None:
        data = simulated_movie(need, frame_shape, seed)
        source = f"simulated movie ({need} frames of {frame_shape[0]}x{frame_shape[1]})"
    elif isinstance(movie, np.ndarray):
        data, source = movie, "array"
    else:
        from livedenoise.io.readers import open_movie

        with open_movie(movie) as mv:
            t = len(mv)
            # a block of consecutive targets from the middle of the movie, with their whole window
            a = max(0, min(t - need, t // 2 - need // 2))
            data = mv.read(a, min(t, a + need))
            source = f"{Path(movie).name} frames {a}..{a + len(data) - 1}"
    if data.ndim != 3:
        raise UserError(f"{source}: expected a (T, H, W) movie, got shape {data.shape}")
    data = _fit_frames(data, frame_shape, source)
    T = len(data)
    # targets: as many as fit with full windows, else spread over what there is (edge policy applies)
    lo, hi = max(0, -first), T - 1 - max(0, last)
    targets = list(range(lo, hi + 1))[:n] if hi >= lo else []
    if len(targets) < n:
        targets = sorted(set(np.linspace(0, T - 1, num=min(n, T)).astype(int).tolist()))
    frames = normalise(data, card.norm_mean, card.norm_std)
    out = []
    for t in targets:
        idx = spec.source_indices(t, T - 1)
        if idx is not None:
            out.append(frames[idx])
    if not out:
        raise UserError(f"{source}: too few frames ({T}) to build a single window for this model")
    windows = np.ascontiguousarray(np.stack(out), dtype=np.float32)
    return windows, f"{len(windows)} windows from {source}"


def run_batched(engine, windows: np.ndarray, batch: int) -> np.ndarray:
    parts = [engine.run(windows[i : i + batch]) for i in range(0, len(windows), batch)]
    return np.concatenate(parts, axis=0)


def check(reference, candidate, windows: np.ndarray, *, target: str, path, limit: float, source: str, batch: int = 4) -> ParityResult:
    """Run `candidate` on `windows` and compare with `reference` (an engine, or its outputs as an array)."""
    ref = reference if isinstance(reference, np.ndarray) else run_batched(reference, windows, batch)
    got = run_batched(candidate, windows, batch)
    max_abs, max_rel, ref_max = compare(ref, got)
    return ParityResult(
        target=target,
        backend=getattr(candidate, "backend", "?") + (f" ({candidate.provider})" if hasattr(candidate, "provider") else ""),
        precision=getattr(candidate, "precision", "fp32"),
        path=str(path),
        max_abs=max_abs,
        max_rel=max_rel,
        ref_max=ref_max,
        limit=limit,
        windows=len(windows),
        source=source,
    )


def format_table(results: list[ParityResult], reference: str = "torch (CPU, fp32)") -> str:
    head = f"parity against {reference}; max_rel = max|diff| / max|reference|"
    cols = ("target", "backend", "precision", "max_abs", "max_rel", "limit", "result")
    rows = [
        (
            r.target,
            r.backend,
            r.precision,
            f"{r.max_abs:.3g}",
            f"{r.max_rel:.3g}",
            f"{r.limit:.0e}",
            "ok" if r.ok else "FAIL",
        )
        for r in results
    ]
    widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c) for i, c in enumerate(cols)]
    lines = [head, "  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in rows]
    sources = sorted({r.source for r in results})
    if sources:
        lines.append("checked on: " + "; ".join(sources))
    return "\n".join(lines)


def to_json(results: list[ParityResult], **extra) -> str:
    return json.dumps({**extra, "parity": [r.to_dict() for r in results], "ok": all(r.ok for r in results)}, indent=2)
