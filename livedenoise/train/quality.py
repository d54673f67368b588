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


# --------------------------------------------------------------------------- ephys: spikes kept?

SPIKE_BAND_HZ = (300.0, 6000.0)
"""Band in which spikes are detected and measured (the usual spike-sorting band)."""
AMPLITUDE_WARN = 0.95
"""Warn when detected spikes keep less than this fraction of their raw amplitude."""


def _band(x: np.ndarray, rate: float) -> np.ndarray:
    from scipy.signal import butter, sosfiltfilt

    hi = min(SPIKE_BAND_HZ[1], 0.45 * rate)
    sos = butter(3, (SPIKE_BAND_HZ[0], hi), btype="bandpass", fs=rate, output="sos")
    return sosfiltfilt(sos, np.asarray(x, np.float64), axis=0)


def _mad_sigma(x: np.ndarray) -> np.ndarray:
    return np.median(np.abs(x - np.median(x, axis=0)), axis=0) / 0.6745


def ephys_quality_report(raw: np.ndarray, den: np.ndarray, rate: float, threshold: float = 5.0,
                         strong: float = 8.0) -> dict[str, Any]:
    """Noise reduction and the amplitude kept at detected spikes, without ground truth.

    raw, den: (samples, channels) µV, the same samples before and after denoising;
    rate: Hz. Both are band-passed to `SPIKE_BAND_HZ` (3rd-order Butterworth, zero
    phase). Noise: per-channel MAD / 0.6745 (robust to spikes), mean over channels.
    Spikes: negative threshold crossings of the raw trace at `threshold` x its noise,
    at least 1 ms apart per channel; each spike's time is the minimum of the
    *denoised* trace within +-0.5 ms of the crossing (the raw minimum would pick
    the noise's own extreme), and its amplitude is read there on both traces.
    `amplitude_kept` = sum of denoised / sum of raw amplitudes over spikes whose
    raw amplitude is >= `strong` x noise (for those, detection hardly depends on the
    noise, so the raw amplitude is not inflated by the selection); `amplitude_kept_weak`:
    the same for the spikes between `threshold` and `strong` (biased low by the
    selection: a guide only). Raises ValueError for mismatched shapes or < 1 s.

    Returns {"noise_raw_uv", "noise_denoised_uv", "noise_reduction" (raw / denoised),
    "spikes", "spikes_strong", "amplitude_kept", "amplitude_kept_weak", "warnings"}.
    """
    raw = np.asarray(raw, np.float64)
    den = np.asarray(den, np.float64)
    if raw.shape != den.shape or raw.ndim != 2:
        raise ValueError(f"raw {raw.shape} and denoised {den.shape} must be the same (samples, channels)")
    if raw.shape[0] < rate:
        raise ValueError(f"{raw.shape[0]} samples: the spike report needs at least 1 s")
    rb, db = _band(raw, rate), _band(den, rate)
    s_raw, s_den = _mad_sigma(rb), _mad_sigma(db)
    half, refr = max(1, int(0.5e-3 * rate)), max(1, int(1e-3 * rate))
    amps_r, amps_d, strong_mask = [], [], []
    n = rb.shape[0]
    for c in range(rb.shape[1]):
        if not s_raw[c] > 0:
            continue
        below = rb[:, c] < -threshold * s_raw[c]
        onsets = np.flatnonzero(below[1:] & ~below[:-1]) + 1
        last = -refr
        for t in onsets:
            if t - last < refr or t < half or t >= n - half:
                continue
            last = t
            k = t - half + int(np.argmin(db[t - half:t + half + 1, c]))
            r = -rb[k, c]
            amps_r.append(r)
            amps_d.append(-db[k, c])
            strong_mask.append(r >= strong * s_raw[c])
    ar, ad, sm = np.asarray(amps_r), np.asarray(amps_d), np.asarray(strong_mask, bool)
    kept = float(ad[sm].sum() / ar[sm].sum()) if sm.any() and ar[sm].sum() > 0 else None
    weak = float(ad[~sm].sum() / ar[~sm].sum()) if (~sm).any() and ar[~sm].sum() > 0 else None
    nr, nd = float(s_raw.mean()), float(s_den.mean())
    warnings = []
    bands = _outside_band_rms(raw, den, rate)
    for name, (r_uv, d_uv) in bands.items():
        if d_uv > 1.1 * r_uv + 0.05:
            warnings.append(f"the denoised output carries more power {name} than the input ({r_uv:.2f} -> {d_uv:.2f} uV "
                            "RMS): the model adds noise outside the spike band")
    if kept is not None and kept < AMPLITUDE_WARN:
        warnings.append(f"spikes lose amplitude: detected spikes keep {kept:.0%} of their raw amplitude "
                        f"(more than {1 - AMPLITUDE_WARN:.0%} lost); spike sorting may find fewer or distorted "
                        "units: compare with the raw recording before sorting the denoised one")
    if kept is None:
        warnings.append(f"no spike of {strong:g}x the noise or more in these samples: the amplitude check is not possible")
    return {
        "method": f"band {SPIKE_BAND_HZ[0]:g}-{SPIKE_BAND_HZ[1]:g} Hz; spikes = raw crossings of {threshold:g}x MAD noise",
        "samples": int(raw.shape[0]), "channels": int(raw.shape[1]),
        "noise_raw_uv": nr, "noise_denoised_uv": nd, "noise_reduction": nr / nd if nd > 0 else None,
        "spikes": int(len(ar)), "spikes_strong": int(sm.sum()),
        "amplitude_kept": kept, "amplitude_kept_weak": weak,
        "outside_band_uv": {k: {"raw": v[0], "denoised": v[1]} for k, v in bands.items()}, "warnings": warnings,
    }


def _outside_band_rms(raw: np.ndarray, den: np.ndarray, rate: float) -> dict[str, tuple[float, float]]:
    """{"below 300 Hz": (raw, denoised) µV RMS, "above 10 kHz": ...} (the second only when the rate allows it);
    from the spectrum of the first 10 s, mean power over channels."""
    n = min(raw.shape[0], int(10 * rate))
    f = np.fft.rfftfreq(n, 1.0 / rate)
    out = {}
    bands = {"below 300 Hz": (1.0, SPIKE_BAND_HZ[0])}
    if rate / 2 > 10000.0:
        bands["above 10 kHz"] = (10000.0, rate / 2 + 1)
    spectra = [np.abs(np.fft.rfft(x[:n] - x[:n].mean(0), axis=0)) ** 2 for x in (raw, den)]
    for name, (lo, hi) in bands.items():
        sel = (f >= lo) & (f < hi)
        out[name] = tuple(float(np.sqrt(p[sel].sum(0).mean() * 2 / n ** 2)) for p in spectra)
    return out


def ephys_summary_lines(report: dict[str, Any]) -> list[str]:
    """Human-readable lines of an `ephys_quality_report` (for the CLI)."""
    def pct(v):
        return "-" if v is None else f"{v:.1%}"

    nr = report["noise_reduction"]
    lines = [
        f"quality on {report['samples']} samples x {report['channels']} channels ({report['method']}):",
        f"  noise            {report['noise_raw_uv']:.2f} -> {report['noise_denoised_uv']:.2f} uV"
        + (f" ({nr:.2f}x lower)" if nr else ""),
        f"  spike amplitude  {pct(report['amplitude_kept'])} kept over {report['spikes_strong']} clear spikes; "
        f"{pct(report['amplitude_kept_weak'])} over {report['spikes'] - report['spikes_strong']} small ones",
    ]
    for name, v in report.get("outside_band_uv", {}).items():
        lines.append(f"  {name:15s}  {v['raw']:.2f} -> {v['denoised']:.2f} uV RMS")
    return lines + [f"warning: {w}" for w in report["warnings"]]
