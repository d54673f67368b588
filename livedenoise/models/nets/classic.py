"""Classic zero-training filters as fixed torch modules (architecture `classic`).

Each filter is a temporal kernel over the window's frames (offsets -pre..post,
offset 0 being the frame itself, which classic filters may read) optionally
followed by a separable spatial Gaussian. Weights are buffers computed from the
card's parameters, so the module exports to ONNX and runs in every Engine, and
its state_dict is saved like any other model's. Every kernel sums to one, so
the filter commutes with the card's normalisation.

Kinds (`params["kind"]`):

- `exp`       causal exponential, weight exp(o / tau) for o = -pre..0 (past only)
- `boxcar`    uniform over -pre..post
- `halfgauss` half Gaussian exp(-o^2 / 2 sigma_t^2) over -pre..0 (past only)
- `gauss`     symmetric Gaussian in sigma_t, truncated to the lag budget -pre..post
- `spatial`   spatial Gaussian only (window = the frame itself)

Every temporal kind takes `sigma_xy` (0 = no spatial stage). No kind reads a
frame after t + post, so a filter's lag is at most `post` (exactly `post` for
boxcar and gauss; 0 for the causal kinds whatever `post` is).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from livedenoise.models.registry import Arch
from livedenoise.models.window import WindowSpec
KINDS = ("exp", "boxcar", "halfgauss", "gauss", "spatial")
CAUSAL_KINDS = ("exp", "halfgauss", "spatial")

# Presets are starting points; `tune` finds the parameters for a given movie and lag.
PRESETS: dict[str, dict] = {
    "exp": {"kind": "exp", "tau": 3.0, "sigma_xy": 1.0},
    "boxcar": {"kind": "boxcar", "sigma_xy": 1.0},
    "halfgauss": {"kind": "halfgauss", "sigma_t": 3.0, "sigma_xy": 1.0},
    "gauss": {"kind": "gauss", "sigma_t": 3.0, "sigma_xy": 1.0},
    "spatial": {"kind": "spatial", "sigma_xy": 1.5},
}

ARCH = Arch(
    name="classic",
    modality="2p",
    trainer="filter",
    presets=PRESETS,
    # tune_pre: the cap on past frames when grid-searching against ground truth
    defaults={"pre": 8, "post": 1, "omission": 0, "preset": "gauss", "tune_pre": 64},
    summary="zero-training filters (exp, boxcar, halfgauss, gauss, spatial), optionally tuned against ground truth",
)


def preset_params(preset: str) -> dict:
    if preset not in PRESETS:
        raise ValueError(f"unknown classic preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return {"preset": preset, **PRESETS[preset]}


def _kind_offsets(kind: str, pre: int, post: int) -> tuple[int, ...]:
    if kind == "spatial":
        return (0,)
    if kind in ("exp", "halfgauss"):
        return tuple(range(-pre, 1))
    if kind in ("boxcar", "gauss"):
        return tuple(range(-pre, post + 1))
    raise ValueError(f"unknown classic filter kind {kind!r}; choose one of {', '.join(KINDS)}")


def window(pre: int, post: int, omission: int, kind: str = "gauss") -> WindowSpec:
    """The window of a classic filter: the frame itself and `pre` frames before (+ `post` after)."""
    if omission:
        raise ValueError("classic filters read the frame itself and cannot hide neighbours (omission must be 0)")
    if pre < 0 or post < 0:
        raise ValueError(f"need pre >= 0 and post >= 0 (got pre={pre}, post={post})")
    return WindowSpec(_kind_offsets(kind, pre, post), 0)


def temporal_weights(kind: str, offsets: Iterable[int], tau: float = 3.0, sigma_t: float = 3.0) -> np.ndarray:
    o = np.asarray(list(offsets), dtype=np.float64)
    if kind == "spatial":
        w = np.ones_like(o)
    elif kind == "exp":
        if not tau > 0:
            raise ValueError("exp filter needs tau > 0")
        w = np.exp(o / tau)
    elif kind == "boxcar":
        w = np.ones_like(o)
    elif kind in ("halfgauss", "gauss"):
        if not sigma_t > 0:
            raise ValueError(f"{kind} filter needs sigma_t > 0")
        w = np.exp(-0.5 * (o / sigma_t) ** 2)
    else:
        raise ValueError(f"unknown classic filter kind {kind!r}")
    return (w / w.sum()).astype(np.float32)


def gaussian_kernel(sigma: float) -> np.ndarray:
    """1D Gaussian truncated at 3 sigma, summing to one."""
    r = max(1, int(math.ceil(3.0 * sigma)))
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


class ClassicFilter(nn.Module):
    """(B, C, H, W) window -> (B, 1, H, W): weighted sum over C, then optional separable Gaussian."""

    def __init__(self, weights: np.ndarray, sigma_xy: float = 0.0):
        super().__init__()
        self.register_buffer("weights", torch.as_tensor(weights, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.sigma_xy = float(sigma_xy)
        if self.sigma_xy > 0:
            k = torch.as_tensor(gaussian_kernel(self.sigma_xy))
            self.radius = (k.numel() - 1) // 2
            self.register_buffer("kernel_y", k.reshape(1, 1, -1, 1).clone())
            self.register_buffer("kernel_x", k.reshape(1, 1, 1, -1).clone())
        else:
            self.radius = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (x * self.weights).sum(dim=1, keepdim=True)
        if self.radius:
            r = self.radius
            h, w = y.shape[-2:]
            # replicate padding works for any frame size (reflect needs frames wider than r)
            y = F.pad(y, (r, r, r, r), mode="replicate")
            y = F.conv2d(y, self.kernel_y)
            y = F.conv2d(y, self.kernel_x)
            y = y[..., :h, :w]
        return y


def build(card) -> nn.Module:
    p = card.params
    kind = p.get("kind", "gauss")
    w = temporal_weights(kind, card.offsets, tau=float(p.get("tau", 3.0)), sigma_t=float(p.get("sigma_t", 3.0)))
    return ClassicFilter(w, float(p.get("sigma_xy", 0.0)))


def spatial_extent(card) -> tuple[int, int]:
    """Pixels across the spatial Gaussian reaches (3 sigma each side), for the registry's report."""
    sigma = float(card.params.get("sigma_xy", 0.0))
    side = 2 * max(1, int(math.ceil(3.0 * sigma))) + 1 if sigma > 0 else 1
    return side, side


def classic_card(kind: str, pre: int = 8, post: int = 0, modality: str = "2p", **params: Any):
    """A ready-to-use model card for a classic filter (no training needed)."""
    from livedenoise.models.card import ModelCard

    if kind not in KINDS:
        raise ValueError(f"unknown classic filter kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "spatial":
        pre, post = 0, 0
    elif kind in ("exp", "halfgauss"):
        post = 0
    if kind != "spatial" and pre < 1 and post < 1:
        raise ValueError(f"a temporal {kind} filter needs pre >= 1 or post >= 1")
    spec = window(pre, post, 0, kind)
    full = {"preset": kind, **PRESETS[kind], **{k: float(v) for k, v in params.items() if v is not None}}
    full["kind"] = kind
    return ModelCard(ARCH.name, full, modality, int(pre), int(post), 0, list(spec.offsets), training={"kind": "classic (no training)"})


def make_card(pre: int = 8, post: int = 0, omission: int = 0, preset: str = "gauss", modality: str = "2p",
              norm_mean: float = 0.0, norm_std: float = 1.0, training: dict | None = None, frame_shape=None, **params: Any):
    """The registry's card maker: `classic_card` with the preset naming the kind."""
    if omission:
        raise ValueError("classic filters read the frame itself and cannot hide neighbours (omission must be 0)")
    card = classic_card(preset, pre=pre, post=post, modality=modality, **params)
    card.norm_mean, card.norm_std, card.frame_shape = float(norm_mean), float(norm_std), frame_shape
    if training:
        card.training = dict(training)
    return card


# ---------------------------------------------------------------- tuning

DEFAULT_GRID: dict[str, dict[str, list[float]]] = {
    "exp": {"tau": [1.0, 2.0, 4.0, 8.0, 12.0, 16.0, 24.0, 32.0], "sigma_xy": [0.0, 0.7, 1.0, 1.5, 2.0]},
    "boxcar": {"pre": [2, 4, 8, 12, 16, 24, 32, 48], "sigma_xy": [0.0, 0.7, 1.0, 1.5, 2.0]},
    "halfgauss": {"sigma_t": [1.0, 2.0, 4.0, 8.0, 12.0, 16.0], "sigma_xy": [0.0, 0.7, 1.0, 1.5, 2.0]},
    "gauss": {"sigma_t": [1.0, 2.0, 4.0, 8.0, 12.0, 16.0], "sigma_xy": [0.0, 0.7, 1.0, 1.5, 2.0]},
    "spatial": {"sigma_xy": [0.7, 1.0, 1.5, 2.0, 3.0, 4.0]},
}


def _support(kind: str, params: dict, pre: int) -> int:
    """Frames of past a kernel needs (its weights beyond are negligible)."""
    if kind == "exp":
        return int(math.ceil(4.0 * float(params["tau"])))
    if kind in ("halfgauss", "gauss"):
        return int(math.ceil(3.0 * float(params["sigma_t"])))
    return pre


def _psnr(pred: np.ndarray, truth: np.ndarray) -> float:
    rng = float(truth.max() - truth.min()) or 1.0
    mse = float(np.mean((pred.astype(np.float64) - truth) ** 2))
    return 10.0 * math.log10(rng * rng / max(mse, 1e-20))


def apply_filter(card, movie: np.ndarray, frames: Iterable[int], batch: int = 16) -> np.ndarray:
    """Filter the given frames of an in-memory movie through the card's window (edge policy included)."""
    net = build(card).eval()
    frames = list(frames)
    per = card.n_inputs * int(np.prod(movie.shape[1:])) * 4
    batch = max(1, min(batch, (256 << 20) // max(per, 1)))  # keep a batch of windows under ~256 MB
    last = len(movie) - 1
    out = np.empty((len(frames), *movie.shape[1:]), np.float32)
    with torch.inference_mode():
        for a in range(0, len(frames), batch):
            chunk = frames[a : a + batch]
            win = np.stack([np.asarray(movie[card.window.source_indices(t, last=last)], np.float32) for t in chunk])
            out[a : a + len(chunk)] = net(torch.from_numpy(win))[:, 0].numpy()
    return out


def tune(
    movie: np.ndarray,
    truth: np.ndarray,
    post: int,
    kinds: Iterable[str] | None = None,
    pre: int = 64,
    frames: Iterable[int] | None = None,
    n_frames: int = 64,
    score: Callable[[np.ndarray, np.ndarray], float] | None = None,
    grid: dict[str, dict[str, list[float]]] | None = None,
) -> tuple[Any, float, list[tuple[dict, float]]]:
    """Grid-search classic filters within lag budget `post` against ground truth.

    `pre` caps the past frames a kernel may use (exp: 4 tau, Gaussians: 3 sigma_t,
    boxcar: its grid's `pre`). Scores (PSNR by default; higher is better) are
    computed on `frames` (default: `n_frames` evenly spread frames, the same
    for every lag) through the same windows and module as inference.
    Returns (best card, best score, [(params, score), ...] for every candidate).
    """
    movie = np.asarray(movie)
    truth = np.asarray(truth)
    score = score or _psnr
    grid = grid or DEFAULT_GRID
    kinds = list(kinds) if kinds is not None else list(KINDS)
    if frames is None:
        n = len(movie)
        lo, hi = min(pre, n // 4), max(min(pre, n // 4), n - 1 - min(pre, n // 4))
        frames = np.unique(np.linspace(lo, hi, min(n_frames, hi - lo + 1)).astype(int))
    frames = [int(t) for t in frames]
    ref = truth[frames].astype(np.float32)
    results: list[tuple[dict, float]] = []
    best = (None, -math.inf)
    for kind in kinds:
        g = dict(grid.get(kind, {}))
        pres = [int(p) for p in g.pop("pre", [pre]) if int(p) <= pre]
        sigmas = [float(v) for v in g.pop("sigma_xy", [0.0])]
        names = list(g)
        for pre_g in pres:
            for values in itertools.product(*(g[k] for k in names)):
                params = dict(zip(names, values))
                pre_k = min(pre, _support(kind, params, pre_g))
                try:
                    base = classic_card(kind, pre=pre_k, post=post, **params, sigma_xy=0.0)
                except ValueError:
                    continue
                temporal = None if kind == "spatial" else apply_filter(base, movie, frames)
                for sigma in sigmas:
                    card = classic_card(kind, pre=pre_k, post=post, **params, sigma_xy=sigma)
                    if temporal is None:
                        out = apply_filter(card, movie, frames)
                    else:
                        out = _spatial(temporal, sigma)
                    s = score(out, ref)
                    results.append(({"kind": kind, "pre": card.pre, "post": card.post, **params, "sigma_xy": sigma}, s))
                    if s > best[1]:
                        best = (card, s)
    if best[0] is None:
        raise ValueError("no classic filter candidate fits the given budget")
    return best[0], best[1], results


def _spatial(frames: np.ndarray, sigma: float, batch: int = 64) -> np.ndarray:
    """The spatial stage of ClassicFilter alone (same kernel and padding)."""
    if sigma <= 0:
        return frames
    f = ClassicFilter(np.ones(1, np.float32), sigma).eval()
    out = np.empty_like(frames)
    with torch.inference_mode():
        for a in range(0, len(frames), batch):
            out[a : a + batch] = f(torch.from_numpy(np.ascontiguousarray(frames[a : a + batch, None])))[:, 0].numpy()
    return out
