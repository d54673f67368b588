"""A one-page picture of a live session: what a user looks at after the demo.

Reads the service's recording (raw and denoised HDF5 of one stream), the
simulator's ground truth when there is one, and the per-frame latencies seen
by a subscriber; writes a PNG with a raw vs denoised frame, a few ROI traces
and the latency histogram, and returns the numbers it drew. Missing frames are
never bridged: traces break at them and runs of them are shaded, and metrics
on a partial movie say how many frames they cover.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from livedenoise.sim import metrics
@dataclass
class SessionFiles:
    raw: Path
    denoised: Path


def find_recording(record_dir: Path, channel: int = 1, plane: int = 1) -> SessionFiles | None:
    """The newest acquisition's raw and denoised files of one stream, if both exist."""
    raws = sorted(record_dir.glob(f"raw_c{channel}_p{plane}_a*.h5"))
    for raw in reversed(raws):
        den = raw.with_name(raw.name.replace("raw_", "denoised_", 1))
        if den.exists():
            return SessionFiles(raw, den)
    return None


def _frames(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(path, "r") as f:
        return f["frames"][()], f["frame"][()]


def missing_runs(idx: np.ndarray, n: int) -> list[tuple[int, int]]:
    """[(first, last)] of the runs of frame numbers in 0..n-1 that are not in `idx` (sorted)."""
    have = np.zeros(n, bool)
    idx = np.asarray(idx, np.int64)
    have[idx[(idx >= 0) & (idx < n)]] = True
    missing = np.flatnonzero(~have)
    if not missing.size:
        return []
    breaks = np.flatnonzero(np.diff(missing) > 1)
    starts = np.concatenate([[missing[0]], missing[breaks + 1]])
    ends = np.concatenate([missing[breaks], [missing[-1]]])
    return [(int(a), int(b)) for a, b in zip(starts, ends)]


def on_frame_grid(idx: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """`values` (..., len(idx)) placed at frame numbers `idx` of a 0..n-1 grid, NaN where a frame is missing:
    a line plot then breaks at every gap instead of drawing a straight line across it."""
    values = np.asarray(values, np.float64)
    out = np.full(values.shape[:-1] + (n,), np.nan)
    idx = np.asarray(idx, np.int64)
    keep = (idx >= 0) & (idx < n)
    out[..., idx[keep]] = values[..., keep]
    return out


def session_numbers(files: SessionFiles, truth=None, frames: int | None = None) -> dict:
    """Frame counts, and PSNR / trace r against ground truth when given (truth: a Simulation).

    `frames`: how many frames were sent (default: the truth's length, else the
    highest frame number recorded + 1). The metrics cover the frames that have
    both a raw and a denoised frame: `metric_frames` of `movie_frames`, with
    `partial` True when some are missing. The onset rise (and its profile around
    the onset frame) needs every frame from the first, so it is left out of a
    partial movie.
    """
    raw, raw_idx = _frames(files.raw)
    den, den_idx = _frames(files.denoised)
    if frames is None:
        frames = truth.clean.shape[0] if truth is not None else int(max(raw_idx.max(initial=-1), den_idx.max(initial=-1)) + 1)
    out = {"raw_frames": int(len(raw_idx)), "denoised_frames": int(len(den_idx)), "movie_frames": int(frames),
           "missing_denoised": missing_runs(den_idx, frames), "missing_raw": missing_runs(raw_idx, frames)}
    if truth is not None and len(den_idx):
        common = np.intersect1d(raw_idx, den_idx)
        common = common[common < truth.clean.shape[0]]
        clean = truth.clean[common]
        r_raw = raw[np.searchsorted(raw_idx, common)].astype(np.float32)
        r_den = den[np.searchsorted(den_idx, common)].astype(np.float32)
        rng = metrics.robust_range(clean)
        out.update(
            metric_frames=int(len(common)),
            partial=bool(len(common) < frames),
            psnr_raw=metrics.psnr(r_raw, clean, rng),
            psnr_denoised=metrics.psnr(r_den, clean, rng),
            trace_r_raw=float(np.nanmedian(metrics.trace_correlations(r_raw, clean, truth.masks))),
            trace_r_denoised=float(np.nanmedian(metrics.trace_correlations(r_den, clean, truth.masks))),
        )
        if np.array_equal(common, np.arange(len(common))):  # event frames index the movie from its start
            out.update(onset_rise_raw=metrics.spike_rise_fraction(r_raw, clean, truth.masks, truth.spikes),
                       onset_rise_denoised=metrics.spike_rise_fraction(r_den, clean, truth.masks, truth.spikes),
                       rise_profile_denoised=metrics.rise_profile(r_den, clean, truth.masks, truth.spikes,
                                                                  offsets=(-1, 0, 1, 2)))
    return out


def write_summary_png(path: Path, files: SessionFiles, latencies_ms: np.ndarray, truth=None,
                      fps: float = 30.0, title: str = "livedenoise live session", frames: int | None = None) -> dict:
    """Draw the session summary; returns the numbers shown (`session_numbers`, plus latency percentiles).

    Traces are drawn on the full frame grid with breaks at missing frames, and
    runs of missing denoised frames are shaded; a partial movie says so in the
    title, with the number of frames its metrics cover.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    raw, raw_idx = _frames(files.raw)
    den, den_idx = _frames(files.denoised)
    numbers = session_numbers(files, truth, frames)
    n = numbers["movie_frames"]
    k = int(np.argmin(np.abs(den_idx - den_idx[len(den_idx) // 2]))) if len(den_idx) else 0
    frame_no = int(den_idx[k]) if len(den_idx) else 0
    raw_k = raw[int(np.searchsorted(raw_idx, frame_no))] if len(raw_idx) else np.zeros((8, 8))
    # one contrast for every panel, from the raw movie's mean image: no panel sets its own
    lo, hi = np.percentile(raw.mean(axis=0) if len(raw_idx) else raw_k, [0.5, 99.8])

    panels = 3 if truth is not None else 2
    fig = plt.figure(figsize=(4 * panels, 8.5), constrained_layout=True)
    grid = fig.add_gridspec(3, panels)
    images = [("raw", raw_k), ("denoised", den[k] if len(den_idx) else raw_k)]
    if truth is not None and frame_no < truth.clean.shape[0]:
        images.append(("ground truth", truth.clean[frame_no]))
    for i, (name, img) in enumerate(images):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(f"{name}, frame {frame_no}")
        ax.axis("off")

    ax = fig.add_subplot(grid[1, :])
    t_grid = np.arange(n) / fps
    if truth is not None and len(truth.masks):
        order = np.argsort([-len(s) for s in truth.spikes])[:3] if truth.spikes else range(min(3, len(truth.masks)))
        masks = truth.masks[list(order)]
        t_raw = on_frame_grid(raw_idx, metrics.roi_traces(raw.astype(np.float32), masks), n)
        t_den = on_frame_grid(den_idx, metrics.roi_traces(den.astype(np.float32), masks), n)
        t_true = metrics.roi_traces(truth.clean, masks)
        spread = float(np.nanmax(t_true) - np.nanmin(t_true)) or 1.0
        for j in range(len(masks)):
            off = j * spread
            ax.plot(t_grid, t_raw[j] + off, color="0.75", lw=0.6, label="raw" if j == 0 else None)
            ax.plot(t_grid, t_den[j] + off, color="C0", lw=1.0, label="denoised" if j == 0 else None)
            ax.plot(np.arange(t_true.shape[1]) / fps, t_true[j] + off, color="C3", lw=0.8, ls="--",
                    label="truth" if j == 0 else None)
    gaps = numbers["missing_denoised"]
    for g, (a, b) in enumerate(gaps):  # missing frames are shaded, and the traces break there (NaN)
        ax.axvspan((a - 0.5) / fps, (b + 0.5) / fps, color="C1", alpha=0.25, lw=0,
                   label=f"no denoised frame ({sum(e - s + 1 for s, e in gaps)} frames)" if g == 0 else None)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right")
    ax.set_xlabel("acquisition time (s)")
    ax.set_title("ROI traces" + (f": {numbers['denoised_frames']} of {n} frames denoised, "
                                 f"{len(gaps)} gap(s) shaded" if gaps else f": all {n} frames"))

    ax = fig.add_subplot(grid[2, :])
    lat = np.asarray(latencies_ms, dtype=float)
    lat = lat[np.isfinite(lat)]
    if lat.size:
        ax.hist(lat, bins=50, color="C2")
        p50, p99 = np.percentile(lat, [50, 99])
        ax.axvline(p50, color="k", ls="--", lw=1)
        ax.set_title(f"latency raw frame received -> denoised frame sent (includes the model's lag): "
                     f"p50 {p50:.1f} ms, p99 {p99:.1f} ms")
        numbers.update(latency_ms_p50=float(p50), latency_ms_p99=float(p99))
    ax.set_xlabel("ms")
    if "psnr_raw" in numbers:
        title += (f"\nPSNR {numbers['psnr_raw']:.1f} -> {numbers['psnr_denoised']:.1f} dB, "
                  f"trace r {numbers['trace_r_raw']:.2f} -> {numbers['trace_r_denoised']:.2f}")
        title += (f" (PARTIAL: on the {numbers['metric_frames']} of {n} frames denoised)" if numbers["partial"]
                  else f" (all {n} frames)")
    fig.suptitle(title)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return numbers
