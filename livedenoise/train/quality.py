"""A quality report without ground truth: the model against a classic filter, the previous frame and the noise floor.

Method (Noise2Self, Batson & Royer 2019, "J-invariance"; the same argument as
DeepInterpolation's validation loss): when an estimate of frame t never reads
frame t, and the noise is independent between frames with zero mean,

    E |f(x)_t - x_t|^2  =  E |f(x)_t - s_t|^2  +  E |n_t|^2

so the self-supervised loss of every such estimator is its true error plus the
same noise variance: the losses rank estimators by their true error. Every
estimator here is blind to frame t: the model's prediction (its window never
holds offset 0; the innovation step, which reads frame t, is *not* scored),
the classic filters (temporal kernels over the same past/future frames as the
model, frame t left out, then a spatial Gaussian) and the previous frame.

Losses are given in units of the estimated noise variance, so the noise floor
(a perfect estimator) is 1.0 and `loss - 1` estimates the error left relative
to the noise. The noise variance is estimated from the second temporal
difference d_t = x_t - (x_{t-1} + x_{t+1}) / 2, whose variance is 1.5 sigma^2
for white noise; the largest 1 % of d_t^2 (onsets, motion) are trimmed and the
trim corrected for a Gaussian.

The classic filter is tuned on the same held-out frames it is scored on (a few
parameters over a grid), which flatters it slightly: a model that beats it has
beaten its best setting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

TRIM = 0.01
SIGMAS_XY = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
BOXCAR_PAST = (1, 2, 4, 8, 16, 32)
EXP_TAU = (1.0, 2.0, 4.0, 8.0, 16.0)


def _trim_factor(q: float = TRIM) -> float:
    """E[z^2 | z^2 below its (1-q) quantile] for z ~ N(0, 1) (to undo the trim)."""
    from scipy import stats

    c = stats.chi2.ppf(1.0 - q, df=1)
    # E[z^2; z^2 < c] = P(chi2_3 < c) (a standard identity), divided by P(chi2_1 < c) = 1 - q
    return float(stats.chi2.cdf(c, df=3) / (1.0 - q))


def noise_variance(raw: np.ndarray) -> float:
    """Mean noise variance per pixel of a movie (T, H, W), from its second temporal difference.

    Needs T >= 3. Non-finite pixels are left out. Units: the movie's (ADU^2).
    """
    x = np.asarray(raw, np.float64)
    if x.ndim != 3 or x.shape[0] < 3:
        raise ValueError(f"need a movie (T >= 3, H, W), got shape {x.shape}")
    d = x[1:-1] - 0.5 * (x[:-2] + x[2:])
    d2 = (d * d)[np.isfinite(d)].ravel()
    if d2.size == 0:
        raise ValueError("no finite pixels to estimate the noise from")
    cut = np.quantile(d2, 1.0 - TRIM)
    kept = d2[d2 <= cut]
    return float(kept.mean() / _trim_factor() / 1.5)


@dataclass(frozen=True)
class Classic:
    """A blind classic filter: temporal weights over offsets (never 0), then a spatial Gaussian."""

    kind: str
    """`boxcar` (uniform over `past` frames before and every frame up to the lag) or `exp` (weight exp(-|o| / tau))."""
    past: int
    lag: int
    tau: float = 0.0
    sigma_xy: float = 0.0

    def weights(self) -> tuple[np.ndarray, np.ndarray]:
        offs = np.array([o for o in range(-self.past, self.lag + 1) if o != 0], np.int64)
        if self.kind == "boxcar":
            w = np.ones(len(offs))
        else:
            w = np.exp(-np.abs(offs) / self.tau)
        return offs, w / w.sum()

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "past": self.past, "lag": self.lag, "sigma_xy": self.sigma_xy}
        if self.kind == "exp":
            d["tau"] = self.tau
        return d


def _temporal(raw: np.ndarray, offs: np.ndarray, w: np.ndarray, t0: int, t1: int) -> np.ndarray:
    out = np.zeros((t1 - t0,) + raw.shape[1:], np.float64)
    for o, wk in zip(offs, w):
        out += wk * raw[t0 + o:t1 + o]
    return out


def _spatial(frames: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return frames
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(frames, sigma=(0, sigma, sigma), mode="reflect")


def _loss(est: np.ndarray, raw: np.ndarray, mask: np.ndarray) -> float:
    d = est - raw
    return float(np.mean((d * d)[mask]))


def quality_report(raw: np.ndarray, pred: np.ndarray, past: int, lag: int) -> dict[str, Any]:
    """Score a model's blind prediction on held-out frames against blind baselines.

    raw: (T, H, W) held-out raw frames; pred: (T, H, W) the model's prediction of
    the same frames (without the innovation step); past: how many frames before
    t the model reads (card `pre` + omission); lag: frames after t it reads.
    Frames scored: those with `past` frames before and `lag` after them, so every
    estimator has its whole window. Raises ValueError when fewer than 3 frames
    are left or the shapes differ.

    Returns a dict: frames, noise_var (ADU^2), loss {model, classic,
    previous_frame, noise_floor} in units of noise_var, classic (the best
    filter's settings), model_beats_classic, flat_output, warnings (lines).
    """
    raw = np.asarray(raw, np.float64)
    pred = np.asarray(pred, np.float64)
    if raw.shape != pred.shape or raw.ndim != 3:
        raise ValueError(f"raw {raw.shape} and prediction {pred.shape} must be the same (T, H, W)")
    past_c = max(1, min(past, max(BOXCAR_PAST)))
    t0, t1 = past_c, raw.shape[0] - lag
    if t1 - t0 < 3:
        raise ValueError(f"{raw.shape[0]} held-out frames leave {max(t1 - t0, 0)} to score "
                         f"(a window of {past_c} before and {lag} after); need at least 3")
    var = noise_variance(raw)
    if not var > 0:
        raise ValueError("the held-out frames have no noise to measure (constant movie?)")
    target = raw[t0:t1]
    mask = np.isfinite(target) & np.isfinite(pred[t0:t1]) & np.isfinite(raw[t0 - 1:t1 - 1])

    model = _loss(pred[t0:t1], target, mask) / var
    prev = _loss(raw[t0 - 1:t1 - 1], target, mask) / var

    filled = np.where(np.isfinite(raw), raw, np.nanmean(raw))
    best: tuple[float, Classic] | None = None
    kernels = [Classic("boxcar", k, lag) for k in BOXCAR_PAST if k <= past_c]
    kernels += [Classic("exp", past_c, lag, tau=tau) for tau in EXP_TAU]
    for base in kernels:
        offs, w = base.weights()
        temporal = _temporal(filled, offs, w, t0, t1)
        for s in SIGMAS_XY:
            c = Classic(base.kind, base.past, base.lag, base.tau, s)
            loss = _loss(_spatial(temporal, s), target, mask) / var
            if best is None or loss < best[0]:
                best = (loss, c)
    assert best is not None
    classic, classic_cfg = best

    # "learned little": the prediction barely moves in time where the data do
    signal_var = max(float(np.nanvar(target, axis=0).mean()) - var, 0.0)
    pred_var = float(np.nanvar(pred[t0:t1], axis=0).mean())
    flat = signal_var > 0.05 * var and pred_var < 0.05 * signal_var

    warnings = []
    if model >= classic:
        warnings.append(
            f"the model does not beat the best classic filter on these frames (loss {model:.3f} vs {classic:.3f} "
            f"noise variances; 1.0 is the noise floor): use `--arch classic` or train longer / on more data")
    if flat:
        warnings.append(
            "the model's output is nearly flat in time while the data vary: it learned little "
            "(noise-dominated data, too few steps, or a normalisation that does not fit)")
    return {
        "method": "self-supervised loss on held-out frames, every estimator blind to frame t (Noise2Self)",
        "frames": int(t1 - t0),
        "frame_shape": [int(raw.shape[1]), int(raw.shape[2])],
        "noise_var": var,
        "units": "noise variance (1.0 = noise floor)",
        "loss": {"model": model, "classic": classic, "previous_frame": prev, "noise_floor": 1.0},
        "classic": classic_cfg.describe(),
        "model_beats_classic": bool(model < classic),
        "flat_output": bool(flat),
        "warnings": warnings,
    }


def summary_lines(report: dict[str, Any]) -> list[str]:
    """Human-readable lines of a report (for the CLI)."""
    loss = report["loss"]

    def err(v: float) -> str:
        return f"{v:.3f} (error left {max(v - 1.0, 0.0):.3f})"

    c = report["classic"]
    cdesc = f"{c['kind']} past {c['past']} lag {c['lag']}" + (f" tau {c['tau']:g}" if "tau" in c else "") + \
        f" sigma_xy {c['sigma_xy']:g}"
    where = {True: " held-out", False: " training"}.get(report.get("held_out"), "")
    lines = [
        f"quality on {report['frames']}{where} frames {report['frame_shape'][0]}x{report['frame_shape'][1]} "
        f"(self-supervised loss in noise variances; 1.000 = noise floor):",
        f"  model           {err(loss['model'])}",
        f"  classic filter  {err(loss['classic'])}   [{cdesc}]",
        f"  previous frame  {err(loss['previous_frame'])}",
    ]
    inn = report.get("innovation")
    if inn:
        lines.append(f"  innovation step (sigma_xy {inn['sigma_xy']:g}, k {inn['k']:g}; {inn['origin']}): brings "
                     f"onsets back to their frame and passes {100 * inn['noise_passed']:.2f}% of this movie's noise "
                     f"variance into the output (it reads frame t, so the losses above do not score it)")
    lines += [f"warning: {w}" for w in report["warnings"]]
    return lines


def held_out_loss(raw: np.ndarray, pred: np.ndarray, past: int, lag: int) -> float:
    """The model's self-supervised loss (mean squared, ADU^2) on frames with their whole window; for selection."""
    raw = np.asarray(raw, np.float64)
    t0, t1 = max(1, past), raw.shape[0] - lag
    d = np.asarray(pred, np.float64)[t0:t1] - raw[t0:t1]
    m = np.isfinite(d)
    return float(np.mean(d[m] ** 2)) if m.any() else math.inf
