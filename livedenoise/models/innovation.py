"""The innovation step: add back what a model that never sees frame t cannot predict.

A self-supervised model predicts frame t from its neighbours only, so a calcium
transient that starts at frame t is missing from a causal model's output until
the next frame, and a lag-1 model spreads it over t-1..t+3. The innovation
d = raw_t - pred_t carries the onset, buried in shot noise. We smooth d with a
Gaussian whose centre tap is removed (e), estimate the noise variance of e per
frame robustly (s^2 = median(e^2) / 0.455, the median of a chi-square with one
degree of freedom; on a regular grid of at least MEDIAN_SAMPLES pixels, every
pixel of frames up to 128 x 128), and add back the shrunk innovation

    out = pred + max(0, 1 - k s^2 / e^2) * e

so that large, spatially coherent innovations (a soma lighting up) pass and
noise does not. The output still has the model's lag: it reads frame t only.

Removing the centre tap, with zero padding renormalised at the borders, keeps
the output at pixel p independent of raw_t at p (J-invariance, Batson & Royer
2019). Then the mean squared difference between output and raw frame is the
error against the unknown clean frame plus the noise variance, so `tune` picks
sigma and k on the user's own movie without ground truth. That holds only for
models whose window excludes frame t (`applies_to`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable

import numpy as np
import scipy.fft as sp_fft

from livedenoise.errors import UserError

CHI2_1_MEDIAN = 0.454936423119572
"""Median of a chi-square variable with one degree of freedom: median(e^2) / this = variance of e."""
TRUNCATE = 3.0
"""Gaussian kernels reach 3 sigma."""
SIGMAS = (1.5, 2.0, 3.0, 4.0)
KS = (1.0, 2.0, 4.0, 8.0, 16.0)
MAX_EXCLUDE = 4
FFT_CHUNK = 8
"""Frames filtered per FFT call (bounds the padded buffer and the spectra for long `tune` inputs)."""
MEDIAN_SAMPLES = 16384
"""The noise variance s^2 is the median over every n-th pixel along y and x, n the largest stride that keeps at
least this many pixels (1 up to 128 x 128; 4 at 512 x 512): the median's relative standard error is then ~1%,
and at 512 x 512 the step takes ~3 ms less per frame (docs/benchmarks.md, issue 14)."""
NOISE_CORR = 0.05
"""Neighbouring pixels whose noise correlates above this are left out together (`noise_radius`)."""
MIN_GAIN = 0.0
"""Tuning keeps the step only when it lowers the self-supervised loss by more than this fraction. 0: any
gain; with the correlated block excluded, what residual correlation can fake is ~1e-4 and the settings it
picks then pass almost nothing (tests/models/test_innovation.py)."""


def noise_radius(raw: np.ndarray, max_radius: int = MAX_EXCLUDE) -> int:
    """Radius in pixels within which the noise of a movie (T, H, W) is spatially correlated.

    The noise is isolated by the second temporal difference x_t - (x_{t-1} + x_{t+1}) / 2;
    the radius is the largest shift r (capped at `max_radius`) up to which the
    correlation of that difference between pixels r apart, along x or y, exceeds
    NOISE_CORR. 0: independent pixels.
    """
    x = np.asarray(raw, np.float32)
    if x.ndim != 3 or x.shape[0] < 3:
        return 0
    d = x[1:-1] - 0.5 * (x[:-2] + x[2:])
    d = np.where(np.isfinite(d), d, 0.0)
    d -= d.mean()
    var = float(np.mean(d * d))
    if not var > 0:
        return 0
    r = 0
    for k in range(1, max_radius + 1):
        cx = float(np.mean(d[:, :, :-k] * d[:, :, k:])) / var if d.shape[2] > k else 0.0
        cy = float(np.mean(d[:, :-k, :] * d[:, k:, :])) / var if d.shape[1] > k else 0.0
        if max(abs(cx), abs(cy)) <= NOISE_CORR:
            break
        r = k
    return r


@dataclass(frozen=True)
class InnovationConfig:
    sigma_xy: float = 3.0
    """Spatial scale (pixels) of the smoothed innovation: about a soma's radius."""
    k: float = 4.0
    """Shrinkage threshold in noise variances: lower keeps more of each onset, and more noise."""
    exclude: int = 1
    """Radius (pixels) of the block around each pixel left out of its smoothed innovation: 0 removes the
    centre tap only; the noise of neighbouring pixels is often correlated (motion correction, scanning,
    the detector's bandwidth), and J-invariance needs the whole correlated block left out (`noise_radius`)."""

    def __post_init__(self) -> None:
        if not 0.3 <= float(self.sigma_xy) <= 50:
            raise UserError(f"innovation: sigma_xy must be in [0.3, 50] pixels (got {self.sigma_xy})")
        if not 0 <= float(self.k) <= 1e6:
            raise UserError(f"innovation: k must be >= 0 (got {self.k})")
        if not (isinstance(self.exclude, int) and 0 <= self.exclude <= MAX_EXCLUDE):
            raise UserError(f"innovation: exclude must be an integer radius in 0..{MAX_EXCLUDE} (got {self.exclude!r})")

    def to_dict(self) -> dict[str, float]:
        return {k: (int(v) if k == "exclude" else float(v)) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model card") -> "InnovationConfig":
        """Settings from a card; cards tuned before `exclude` existed left out the centre tap only (exclude 0)."""
        try:
            ex = data.get("exclude", 0)
            if isinstance(ex, float) and ex == int(ex):
                ex = int(ex)
            return cls(float(data["sigma_xy"]), float(data["k"]), ex)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UserError(f"{source}: innovation settings {data!r} need numeric sigma_xy and k") from None


def applies_to(card) -> str | None:
    """Why the innovation step cannot be used with this model, or None when it can."""
    if card.layout != "frames":
        return f"the innovation step is for imaging models; {card.arch} reads {card.layout} data"
    if card.window.uses_target:
        return f"the innovation step adds back frame t, which {card.arch} already reads"
    return None


def config_for(card, k: float | None = None) -> tuple[InnovationConfig, str]:
    """The settings tuned at training time (stored in the card) or the defaults; `k` overrides. With where they came from."""
    why = applies_to(card)
    if why:
        raise UserError(f"--innovation: {why}")
    if card.innovation:
        cfg, origin = InnovationConfig.from_dict(card.innovation), "tuned at training"
    elif "innovation_tuning" in (card.training or {}):
        cfg, origin = InnovationConfig(), "defaults: training skipped tuning, or no setting lowered the loss"
    else:
        cfg, origin = InnovationConfig(), "defaults: this model predates tuning"
    if k is not None:
        cfg, origin = InnovationConfig(cfg.sigma_xy, float(k), cfg.exclude), f"{origin}, k from the command line"
    return cfg, origin


def step_for(card, enabled: bool, k: float | None = None) -> tuple["InnovationStep | None", str]:
    """The step that `--innovation` / `--innovation-k K` ask for (None when neither), and where its settings came from."""
    if not enabled and k is None:
        return None, ""
    cfg, origin = config_for(card, k)
    return InnovationStep(cfg), origin


class InnovationStep:
    """Applies the step to batches of frames; buffers are allocated once per frame size and batch."""

    def __init__(self, cfg: InnovationConfig):
        self.cfg = cfg
        self._shape: tuple[int, int, int] | None = None

    def describe(self) -> str:
        return f"innovation step sigma_xy={self.cfg.sigma_xy:g} k={self.cfg.k:g} exclude={self.cfg.exclude}"

    def _buffers(self, b: int, h: int, w: int) -> None:
        if self._shape is not None and self._shape[0] >= b and self._shape[1:] == (h, w):
            return
        s = float(self.cfg.sigma_xy)
        r = int(TRUNCATE * s + 0.5)  # scipy.ndimage.gaussian_filter's kernel radius
        taps = np.exp(-0.5 * (np.arange(-r, r + 1) / s) ** 2)
        taps /= taps.sum()
        x = min(int(self.cfg.exclude), r)
        kernel = np.outer(taps, taps)
        kernel[r - x:r + x + 1, r - x:r + x + 1] = 0.0  # the left-out block
        # Linear (zero-padded) correlation as a product of FFTs: the padded size leaves r zeros past each edge,
        # so nothing wraps around into the frame.
        self._fft_shape = (sp_fft.next_fast_len(h + r, real=True), sp_fft.next_fast_len(w + r, real=True))
        wrapped = np.zeros(self._fft_shape)
        taps_at = -np.arange(-r, r + 1)  # correlation: output p reads input p + i, i.e. tap i sits at -i
        wrapped[np.ix_(taps_at % self._fft_shape[0], taps_at % self._fft_shape[1])] = kernel
        self._kernel_ft = sp_fft.rfft2(wrapped).astype(np.complex64)
        self._pad = np.zeros((min(b, FFT_CHUNK),) + self._fft_shape, np.float32)
        self._ok = np.empty((b, h, w), bool)
        self._e = np.empty((b, h, w), np.float32)
        self._shape = (b, h, w)
        self._norm = np.empty((h, w), np.float32)
        self._correlate(np.ones((1, h, w), np.float32), self._norm[None])  # weight of the taps kept, inside
        self._d = np.empty((b, h, w), np.float32)
        self._stride = max(1, int(np.sqrt(h * w / MEDIAN_SAMPLES)))
        """Pixels between the samples of the median, along y and x (MEDIAN_SAMPLES)."""
        n = self._stride
        self._sq = np.empty(((h + n - 1) // n, (w + n - 1) // n), np.float32)

    def _filter(self, d: np.ndarray) -> np.ndarray:
        """d (B, H, W) correlated with the Gaussian whose block of radius `exclude` is removed, zero padding,
        divided by the weight of the taps that fall inside the frame; a view of a buffer.

        Float32 FFTs on all cores, FFT_CHUNK frames at a time: ~1.4 ms per 512 x 512 frame on two cores,
        against ~6 ms for separable filters (scipy.ndimage); the spectra are allocated once per chunk.
        """
        e = self._correlate(d, self._e[:len(d)])
        e /= self._norm
        return e

    def _correlate(self, d: np.ndarray, out: np.ndarray) -> np.ndarray:
        """d (B, H, W) correlated with the kernel, zero padding, into `out` (B, H, W)."""
        b, h, w = d.shape
        for a in range(0, b, FFT_CHUNK):
            n = min(FFT_CHUNK, b - a)
            pad = self._pad[:n]
            pad[:, :h, :w] = d[a:a + n]
            spec = sp_fft.rfft2(pad, workers=-1)
            spec *= self._kernel_ft
            out[a:a + n] = sp_fft.irfft2(spec, s=self._fft_shape, workers=-1)[:, :h, :w]
        return out

    def _smoothed(self, pred: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """e: the innovation smoothed with the block of radius `exclude` around each pixel removed (a view of a buffer)."""
        b, h, w = pred.shape
        self._buffers(b, h, w)
        d, ok = self._d[:b], self._ok[:b]
        np.subtract(raw, pred, out=d, dtype=np.float32)
        np.isfinite(d, out=ok)
        if not ok.all():  # a non-finite value would spread through the whole frame's spectrum
            np.copyto(d, np.float32(0.0), where=~ok)
        return self._filter(d)

    def _shrink(self, pred: np.ndarray, e: np.ndarray, k: float) -> None:
        """pred += max(0, 1 - k s^2 / e^2) * e, frame by frame, in place."""
        wgt = self._d[: len(e)]
        np.square(e, out=wgt)
        n = self._stride
        for i in range(len(e)):
            np.copyto(self._sq, wgt[i, ::n, ::n])
            var = float(np.median(self._sq, overwrite_input=True)) / CHI2_1_MEDIAN
            np.maximum(wgt[i], np.float32(1e-30), out=wgt[i])
            np.divide(np.float32(k * var), wgt[i], out=wgt[i])
        np.subtract(np.float32(1.0), wgt, out=wgt)
        np.clip(wgt, 0.0, 1.0, out=wgt)
        wgt *= e
        pred += wgt

    def apply(self, pred: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """Update `pred` ((B, H, W) float32, the model's output in raw units) in place from `raw` frames t; returns it."""
        if pred.shape != raw.shape or pred.ndim != 3:
            raise ValueError(f"innovation step: prediction {pred.shape} and raw {raw.shape} must be equal (B, H, W) shapes")
        if len(pred):
            self._shrink(pred, self._smoothed(pred, raw), float(self.cfg.k))
        return pred


def noise_passed(raw: np.ndarray, cfg: "InnovationConfig", frames: int = 200) -> float:
    """Fraction of the noise variance the step lets into the output, on this movie's own noise.

    raw: (T, H, W) frames, T >= 3 (the first `frames` are used). The noise is
    the movie's second temporal difference x_t - (x_{t-1} + x_{t+1}) / 2,
    scaled to the noise variance (x sqrt(2/3)): it keeps the noise's spatial
    correlation and leaves out slow signal. With a prediction of 0, everything
    the step outputs is noise it passed; the result is mean(out^2) / mean(d^2)
    over finite pixels (0 for a movie without noise). This is what the step
    trades for onsets: the self-supervised losses cannot score it, since it
    reads frame t.
    """
    m = np.asarray(raw[: frames + 2], np.float32)
    if m.ndim != 3 or len(m) < 3:
        raise ValueError(f"need a movie (T >= 3, H, W), got shape {m.shape}")
    d = (m[1:-1] - 0.5 * (m[:-2] + m[2:])) * np.float32(np.sqrt(2.0 / 3.0))
    finite = np.isfinite(d)
    d = np.where(finite, d, 0.0).astype(np.float32)
    den = float(np.mean(np.square(d, dtype=np.float64)[finite])) if finite.any() else 0.0
    if den <= 0:
        return 0.0
    out = InnovationStep(cfg).apply(np.zeros_like(d), d)
    return float(np.mean(np.square(out, dtype=np.float64)[finite]) / den)


def tuning_summary(tuned: dict[str, Any]) -> str:
    """One line for a `tune_innovation` result: the settings and how much they lowered the loss."""
    gain = 100 * (1 - tuned["loss_best"] / tuned["loss_prediction"])
    passed = (f"; passes {100 * tuned['noise_passed']:.2f}% of this movie's noise variance"
              if tuned.get("noise_passed") is not None else "")
    return (f"sigma_xy {tuned['sigma_xy']:g}, k {tuned['k']:g}, exclude {tuned.get('exclude', 0)} "
            f"(self-supervised loss -{gain:.2f}% on {tuned['frames']} frames{passed})")


def tune(pred: np.ndarray, raw: np.ndarray, sigmas: Iterable[float] = SIGMAS,
         ks: Iterable[float] = KS, exclude: int | None = None) -> tuple[InnovationConfig | None, dict[str, Any]]:
    """Self-supervised choice of (sigma_xy, k): least mean squared difference to the raw frames.

    `pred` and `raw` are (T, H, W) in the same units, pred from a model that never
    reads frame t. `exclude`: the radius left out around each pixel; None
    measures it on `raw` (`noise_radius`), so that the loss stays blind to the
    noise of frame t even where neighbouring pixels share it. Non-finite pixels
    are left out of the loss. Returns None when no setting beats the prediction
    alone by at least MIN_GAIN, and a report: the loss of the prediction alone, of
    the best setting, and of each one, and the exclusion radius.
    """
    pred = np.asarray(pred, np.float32)
    raw = np.asarray(raw)
    ex = noise_radius(raw) if exclude is None else int(exclude)
    finite = np.isfinite(raw) & np.isfinite(pred)
    pred = np.where(finite, pred, 0.0).astype(np.float32)
    raw_f = np.where(finite, raw, 0.0).astype(np.float32)

    def loss(est: np.ndarray) -> float:
        return float(np.mean(np.square(est - raw_f, dtype=np.float64)[finite])) if finite.any() else 0.0

    base = loss(pred)
    table = []
    for s in sigmas:
        step = InnovationStep(InnovationConfig(float(s), 0.0, ex))
        e = step._smoothed(pred, raw_f).copy()
        for k in ks:
            out = pred.copy()
            step._shrink(out, e, float(k))
            table.append({"sigma_xy": float(s), "k": float(k), "loss": loss(out)})
    best = min(table, key=lambda r: r["loss"]) if table else None
    report = {"loss_prediction": base, "loss_best": best["loss"] if best else base, "grid": table, "exclude": ex}
    if best is None or best["loss"] >= base * (1.0 - MIN_GAIN):
        return None, report
    return InnovationConfig(best["sigma_xy"], best["k"], ex), report
