"""How close a denoised movie is to the ground truth (docs/data.md has the definitions).

Every function takes movies as (T, H, W) arrays, memory maps or `Movie`
objects (from `open_movie`) and walks them in chunks of frames, accumulating in
float64, so two 20 GB movies are compared without loading either.

* `psnr`: 10 log10(R^2 / MSE); R is `data_range`, by default the clean
  movie's robust range: its 99.9th minus its 0.1st percentile (`robust_range`).
* `pixel_snr`: SNR in dB of the fluctuating part: the signal is the clean
  movie minus its per-pixel temporal mean, the noise is estimate minus clean:
  10 log10(sum (clean - mean_t clean)^2 / sum (estimate - clean)^2).
* `trace_correlations`: per ROI, Pearson r between the ROI-mean trace of the
  estimate and that of the clean movie.
* `spike_rise_fraction`: per neuron, the summed frame-to-frame rise of the
  estimate's ROI-mean trace at calcium-event onset frames divided by the clean
  rise there; the median over neurons. 1 = onsets kept sharp; a filter that
  smears or delays the rise gives less.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import numpy as np

CHUNK = 128
"""Most frames per chunk; fewer for large frames (CHUNK_VALUES float64 values per movie per chunk)."""
CHUNK_VALUES = 4_000_000


def _length(x) -> int:
    return len(x)


def _shape(x) -> tuple[int, ...]:
    return tuple(x.shape)


def _read(x, a: int, b: int) -> np.ndarray:
    """Frames a..b-1 as a float64 copy (callers work on it in place), from an array, a memmap or a Movie."""
    read = getattr(x, "read", None)
    data = read(a, b) if callable(read) else x[a:b]
    return np.array(data, dtype=np.float64, copy=True)


def _chunk_frames(x) -> int:
    pixels = int(np.prod(_shape(x)[1:])) or 1
    return max(1, min(CHUNK, CHUNK_VALUES // pixels))


def _pairs(estimate, clean) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    if _shape(estimate) != _shape(clean):
        raise ValueError(f"estimate {_shape(estimate)} and clean {_shape(clean)} differ in shape")
    t = _length(clean)
    chunk = _chunk_frames(clean)
    for a in range(0, t, chunk):
        b = min(t, a + chunk)
        yield a, _read(estimate, a, b), _read(clean, a, b)


def _sumsq(d: np.ndarray) -> float:
    flat = d.ravel()
    return float(np.dot(flat, flat))


def robust_range(clean, lo: float = 0.1, hi: float = 99.9, max_samples: int = 2_000_000) -> float:
    """Percentile range of the clean movie (on an even subsample of frames for long movies)."""
    t = _length(clean)
    per_frame = int(np.prod(_shape(clean)[1:]))
    step = max(1, int(math.ceil(t * per_frame / max_samples)))
    frames = [_read(clean, i, i + 1) for i in range(0, t, step)]
    values = np.concatenate([f.ravel() for f in frames])
    p0, p1 = np.percentile(values, [lo, hi])
    return float(p1 - p0)


def mse(estimate, clean) -> float:
    total, count = 0.0, 0
    for _, e, c in _pairs(estimate, clean):
        d = e - c
        total += _sumsq(d)
        count += d.size
    return total / max(count, 1)


def psnr(estimate, clean, data_range: float | None = None) -> float:
    """Peak SNR in dB; inf when the estimate equals the clean movie."""
    r = robust_range(clean) if data_range is None else float(data_range)
    err = mse(estimate, clean)
    if err == 0:
        return math.inf
    return 10.0 * math.log10(r * r / err)


def pixel_snr(estimate, clean) -> float:
    """SNR (dB) of the fluctuating part: var of clean around each pixel's mean / error power."""
    t = _length(clean)
    shape = _shape(clean)[1:]
    ref = _read(clean, 0, 1)[0]  # shift for a stable one-pass variance
    s1 = np.zeros(shape)
    s2 = np.zeros(shape)
    err = 0.0
    for _, e, c in _pairs(estimate, clean):
        d = e - c
        err += _sumsq(d)
        c -= ref
        s1 += c.sum(axis=0)
        s2 += (c * c).sum(axis=0)
    signal = float((s2 - s1 * s1 / t).sum())
    if err == 0:
        return math.inf
    if signal <= 0:
        return -math.inf
    return 10.0 * math.log10(signal / err)


def roi_traces(movie, masks: np.ndarray) -> np.ndarray:
    """(N, T) mean of the movie inside each (N, H, W) boolean mask."""
    masks = np.asarray(masks, bool)
    n = masks.shape[0]
    t = _length(movie)
    weights = masks.reshape(n, -1).astype(np.float64)
    sizes = weights.sum(axis=1)
    weights /= np.maximum(sizes, 1)[:, None]
    out = np.empty((n, t))
    chunk = _chunk_frames(movie)
    for a in range(0, t, chunk):
        b = min(t, a + chunk)
        out[:, a:b] = weights @ _read(movie, a, b).reshape(b - a, -1).T
    out[sizes == 0] = np.nan
    return out


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    den = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (x * y).sum(axis=1) / den
    r[den == 0] = np.nan  # a flat trace has no correlation
    return np.clip(r, -1.0, 1.0)


def trace_correlations(movie, clean, masks: np.ndarray) -> np.ndarray:
    """Per-ROI Pearson r of the ROI-mean traces (NaN for an empty mask or a flat trace)."""
    if _shape(movie) != _shape(clean):
        raise ValueError(f"movie {_shape(movie)} and clean {_shape(clean)} differ in shape")
    return _pearson_rows(roi_traces(movie, masks), roi_traces(clean, masks))


def _rise_fraction(est_tr: np.ndarray, clean_tr: np.ndarray, spikes: Sequence[np.ndarray], offset: int = 0) -> np.ndarray:
    """Per neuron: the estimate's rise from frame k+offset-1 to k+offset, summed over onsets k, / the true rise at k."""
    t = clean_tr.shape[1]
    out = np.full(len(spikes), np.nan)
    for i, onsets in enumerate(spikes):
        k = np.asarray(onsets, np.int64)
        k = k[(k >= 1) & (k < t) & (k + offset >= 1) & (k + offset < t)]
        if not k.size:
            continue
        true_rise = float((clean_tr[i, k] - clean_tr[i, k - 1]).sum())
        if true_rise <= 0:
            continue
        out[i] = float((est_tr[i, k + offset] - est_tr[i, k + offset - 1]).sum()) / true_rise
    return out


def spike_rise_fraction(estimate, clean, masks: np.ndarray, spikes: Sequence[np.ndarray]) -> float:
    """Median over neurons of (estimated rise / true rise) summed over event-onset frames."""
    per = _rise_fraction(roi_traces(estimate, masks), roi_traces(clean, masks), spikes)
    return float(np.nanmedian(per)) if np.isfinite(per).any() else math.nan


def rise_profile(estimate, clean, masks: np.ndarray, spikes: Sequence[np.ndarray],
                 offsets: Sequence[int] = (-1, 0, 1, 2, 3)) -> dict[int, float]:
    """Where an onset's rise lands: {offset: median over neurons of the estimate's rise from frame
    k+offset-1 to k+offset / the true rise at onset k}. Offset 0 is `spike_rise_fraction`; a model
    that smears or delays onsets moves rise to the other offsets."""
    est_tr, clean_tr = roi_traces(estimate, masks), roi_traces(clean, masks)
    out = {}
    for o in offsets:
        per = _rise_fraction(est_tr, clean_tr, spikes, int(o))
        out[int(o)] = float(np.nanmedian(per)) if np.isfinite(per).any() else math.nan
    return out


def summary(
    estimate,
    clean,
    masks: np.ndarray | None = None,
    spikes: Sequence[np.ndarray] | None = None,
    data_range: float | None = None,
) -> dict[str, Any]:
    """All metrics in one dict, from a single pass over both movies (floats; inf/NaN kept)."""
    r = robust_range(clean) if data_range is None else float(data_range)
    t = _length(clean)
    shape = _shape(clean)[1:]
    ref = _read(clean, 0, 1)[0]
    s1, s2 = np.zeros(shape), np.zeros(shape)
    err, count = 0.0, 0
    use_rois = masks is not None and len(masks) > 0
    if use_rois:
        masks = np.asarray(masks, bool)
        weights = masks.reshape(len(masks), -1).astype(np.float64)
        sizes = weights.sum(axis=1)
        weights /= np.maximum(sizes, 1)[:, None]
        est_tr, clean_tr = np.empty((len(masks), t)), np.empty((len(masks), t))
    for a, e, c in _pairs(estimate, clean):
        b = a + len(c)
        if use_rois:
            est_tr[:, a:b] = weights @ e.reshape(b - a, -1).T
            clean_tr[:, a:b] = weights @ c.reshape(b - a, -1).T
        e -= c
        err += _sumsq(e)
        count += e.size
        c -= ref
        s1 += c.sum(axis=0)
        s2 += (c * c).sum(axis=0)
    signal = float((s2 - s1 * s1 / t).sum())
    mse_ = err / max(count, 1)
    out: dict[str, Any] = {
        "frames": t,
        "data_range": r,
        "psnr_db": math.inf if mse_ == 0 else 10.0 * math.log10(r * r / mse_),
        "pixel_snr_db": math.inf if err == 0 else (-math.inf if signal <= 0 else 10.0 * math.log10(signal / err)),
    }
    if use_rois:
        est_tr[sizes == 0] = np.nan
        clean_tr[sizes == 0] = np.nan
        rs = _pearson_rows(est_tr, clean_tr)
        finite = np.isfinite(rs).any()
        out["trace_r_median"] = float(np.nanmedian(rs)) if finite else math.nan
        out["trace_r_mean"] = float(np.nanmean(rs)) if finite else math.nan
        out["n_rois"] = int(len(rs))
        if spikes is not None:
            per = _rise_fraction(est_tr, clean_tr, spikes)
            out["spike_rise_fraction"] = float(np.nanmedian(per)) if np.isfinite(per).any() else math.nan
    return out
