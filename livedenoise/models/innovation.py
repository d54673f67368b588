"""The innovation step: add back what a model that never sees frame t cannot predict.

A self-supervised model predicts frame t from its neighbours only, so a calcium
transient that starts at frame t is missing from a causal model's output until
the next frame, and a lag-1 model spreads it over t-1..t+3. The innovation
d = raw_t - pred_t carries the onset, buried in shot noise. We smooth d with a
Gaussian whose centre tap is removed (e), estimate the noise variance of e per
frame robustly (s^2 = median(e^2) / 0.455, the median of a chi-square with one
degree of freedom), and add back the shrunk innovation

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
from scipy.ndimage import gaussian_filter

from livedenoise.errors import UserError

CHI2_1_MEDIAN = 0.454936423119572
"""Median of a chi-square variable with one degree of freedom: median(e^2) / this = variance of e."""
TRUNCATE = 3.0
"""Gaussian kernels reach 3 sigma."""
SIGMAS = (1.5, 2.0, 3.0, 4.0)
KS = (1.0, 2.0, 4.0, 8.0, 16.0)


@dataclass(frozen=True)
class InnovationConfig:
    sigma_xy: float = 3.0
    """Spatial scale (pixels) of the smoothed innovation: about a soma's radius."""
    k: float = 4.0
    """Shrinkage threshold in noise variances: lower keeps more of each onset, and more noise."""

    def __post_init__(self) -> None:
        if not 0.3 <= float(self.sigma_xy) <= 50:
            raise UserError(f"innovation: sigma_xy must be in [0.3, 50] pixels (got {self.sigma_xy})")
        if not 0 <= float(self.k) <= 1e6:
            raise UserError(f"innovation: k must be >= 0 (got {self.k})")

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model card") -> "InnovationConfig":
        try:
            return cls(float(data["sigma_xy"]), float(data["k"]))
        except (KeyError, TypeError, ValueError):
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
        cfg, origin = InnovationConfig(cfg.sigma_xy, float(k)), f"{origin}, k from the command line"
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
        return f"innovation step sigma_xy={self.cfg.sigma_xy:g} k={self.cfg.k:g}"

    def _buffers(self, b: int, h: int, w: int) -> None:
        if self._shape is not None and self._shape[0] >= b and self._shape[1:] == (h, w):
            return
        s = float(self.cfg.sigma_xy)
        r = int(TRUNCATE * s + 0.5)  # scipy's kernel radius
        taps = np.exp(-0.5 * (np.arange(-r, r + 1) / s) ** 2)
        self._centre = np.float32((taps[r] / taps.sum()) ** 2)
        ones = gaussian_filter(np.ones((h, w), np.float32), s, mode="constant", cval=0.0, truncate=TRUNCATE)
        self._norm = (ones - self._centre).astype(np.float32)  # weight of the off-centre taps that land inside
        self._d = np.empty((b, h, w), np.float32)
        self._e = np.empty((b, h, w), np.float32)
        self._sq = np.empty((h, w), np.float32)
        self._shape = (b, h, w)

    def _smoothed(self, pred: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """e: the innovation smoothed with the centre tap removed (a view of a buffer)."""
        b, h, w = pred.shape
        self._buffers(b, h, w)
        d, e = self._d[:b], self._e[:b]
        np.subtract(raw, pred, out=d, dtype=np.float32)
        s = float(self.cfg.sigma_xy)
        gaussian_filter(d, (0.0, s, s), output=e, mode="constant", cval=0.0, truncate=TRUNCATE)
        d *= self._centre
        e -= d
        e /= self._norm
        return e

    def _shrink(self, pred: np.ndarray, e: np.ndarray, k: float) -> None:
        """pred += max(0, 1 - k s^2 / e^2) * e, frame by frame, in place."""
        wgt = self._d[: len(e)]
        np.square(e, out=wgt)
        for i in range(len(e)):
            np.copyto(self._sq, wgt[i])
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


def tuning_summary(tuned: dict[str, Any]) -> str:
    """One line for a `tune_innovation` result: the settings and how much they lowered the loss."""
    gain = 100 * (1 - tuned["loss_best"] / tuned["loss_prediction"])
    return (f"sigma_xy {tuned['sigma_xy']:g}, k {tuned['k']:g} "
            f"(self-supervised loss -{gain:.2f}% on {tuned['frames']} frames)")


def tune(pred: np.ndarray, raw: np.ndarray, sigmas: Iterable[float] = SIGMAS,
         ks: Iterable[float] = KS) -> tuple[InnovationConfig | None, dict[str, Any]]:
    """Self-supervised choice of (sigma_xy, k): least mean squared difference to the raw frames.

    `pred` and `raw` are (T, H, W) in the same units, pred from a model that never
    reads frame t. Returns None when no setting beats the prediction alone, and a
    report: the loss of the prediction alone, of the best setting, and of each one.
    """
    pred = np.asarray(pred, np.float32)
    raw = np.asarray(raw)
    base = float(np.mean(np.square(pred - raw, dtype=np.float64)))
    table = []
    for s in sigmas:
        step = InnovationStep(InnovationConfig(float(s), 0.0))
        e = step._smoothed(pred, raw).copy()
        for k in ks:
            out = pred.copy()
            step._shrink(out, e, float(k))
            table.append({"sigma_xy": float(s), "k": float(k),
                          "loss": float(np.mean(np.square(out - raw, dtype=np.float64)))})
    best = min(table, key=lambda r: r["loss"]) if table else None
    report = {"loss_prediction": base, "loss_best": best["loss"] if best else base, "grid": table}
    if best is None or best["loss"] >= base:
        return None, report
    return InnovationConfig(best["sigma_xy"], best["k"]), report
