"""DeepInterpolation's Neuropixels network (Lecoq et al. 2021), `interp-ephys`.

One pass predicts ONE sample of every channel from `pre` samples before and
`post` after, with the sample itself and `omission` neighbours on each side
hidden (DI: pre = post = 30, omission 1, so 3 centre samples are hidden).

Layouts (how the C channels of one sample become a 2D frame):
- `checkerboard` (DI): C x 2; even channels in column 0 of even rows, odd
  channels in column 1 of odd rows, zeros elsewhere (the probe's staggered sites).
- `dense`: ceil(C/2) x 2; channel c at row c // 2, column c % 2.

Engine contract, as for every per-frame model: input (B, pre+post, rows, 2)
normalised windows, output (B, 1, rows, 2); the engine returns (B, rows, 2) and
`from_frames` turns that back into (B, C). Any channel count works.

Network: DI's `unet_single_ephys_1024` shape: 2D U-Net, (3, 2) convs + ReLU,
widths 64-128-256-512-1024, max-pool (2, 1) along the probe only, nearest
upsampling (2, 1), concat skips, 1x1 linear output. Trained with L2 on the
occupied sites only.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from livedenoise.models.nets.interp2d import UNet2d
from livedenoise.models.registry import Arch
from livedenoise.models.window import WindowSpec

LAYOUTS = ("checkerboard", "dense")
PRESETS: dict[str, dict] = {
    "di": {"widths": [64, 128, 256, 512, 1024], "convs": 1},
    "lite": {"widths": [16, 32, 64], "convs": 2},
}
DEFAULTS = {"pre": 30, "post": 30, "omission": 1}
"""DeepInterpolation's Neuropixels window."""

ARCH = Arch(
    name="interp-ephys",
    modality="ephys",
    trainer="ephys",
    layout="checkerboard",
    layouts=LAYOUTS,
    presets=PRESETS,
    defaults={**DEFAULTS, "preset": "lite", "loss": "l2", "crop": 512, "batch": 32, "lr": 1e-3},
    summary="DeepInterpolation's Neuropixels U-Net: one sample of every channel per pass",
)


def window(pre: int, post: int, omission: int) -> WindowSpec:
    return WindowSpec.interp(pre, post, omission)


def preset_params(preset: str, layout: str = "checkerboard") -> dict:
    if preset not in PRESETS:
        raise ValueError(f"unknown interp-ephys preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown ephys layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    return {"preset": preset, **PRESETS[preset], "layout": layout, "edge": "reflect"}


# --------------------------------------------------------------------------- layouts


def frame_shape(n_channels: int, layout: str) -> tuple[int, int]:
    if layout == "checkerboard":
        return (n_channels, 2)
    if layout == "dense":
        return ((n_channels + 1) // 2, 2)
    raise ValueError(f"unknown ephys layout {layout!r}")


def site_mask(n_channels: int, layout: str) -> np.ndarray:
    """(rows, 2) bool: True where a channel sits."""
    rows, _ = frame_shape(n_channels, layout)
    m = np.zeros((rows, 2), bool)
    r, c = _positions(n_channels, layout)
    m[r, c] = True
    return m


def _positions(n_channels: int, layout: str) -> tuple[np.ndarray, np.ndarray]:
    k = np.arange(n_channels)
    if layout == "checkerboard":
        return k, k % 2
    return k // 2, k % 2


def to_frames(samples: np.ndarray, layout: str) -> np.ndarray:
    """(..., C) -> (..., rows, 2) with zeros where no channel sits."""
    c = samples.shape[-1]
    rows, _ = frame_shape(c, layout)
    out = np.zeros(samples.shape[:-1] + (rows, 2), np.float32)
    r, col = _positions(c, layout)
    out[..., r, col] = samples
    return out


def from_frames(frames: np.ndarray, n_channels: int, layout: str) -> np.ndarray:
    """(..., rows, 2) -> (..., C)."""
    r, col = _positions(n_channels, layout)
    return np.ascontiguousarray(frames[..., r, col])


# --------------------------------------------------------------------------- network


def build(card) -> nn.Module:
    # cards from before 0.3 have no "edge": their nets saw zeros past the first and last sites
    return UNet2d(card.n_inputs, list(card.params["widths"]), int(card.params.get("convs", 1)),
                  kernel=(3, 2), pool=(2, 1), pad_mode="constant", edge=card.params.get("edge", "zeros"))


def min_frames(card) -> int:
    """One whole window: the samples before, the sample itself, and those after (up to the lag)."""
    return int(card.pre) + int(card.omission) + int(card.lag) + 1


def training_span(card, batch: int, crop: int) -> int:
    """Samples per in-memory training chunk."""
    return max(min_frames(card) + batch * 4, 30000)


def training_batch(card, data: np.ndarray, batch: int, crop: int, channels_per_crop: int, rng: np.random.Generator):
    """Random samples t with a full window: input (B, pre+post, rows, 2), target sample t (B, 1, rows, 2),
    and the mask of occupied sites (the loss covers those only)."""
    n, c = data.shape
    before, after = card.pre + card.omission, card.lag
    ts = rng.integers(before, n - after, size=batch)
    offs = np.asarray(card.offsets)
    win = data[ts[:, None] + offs[None, :]]  # (B, K, C)
    tgt = data[ts][:, None, :]  # (B, 1, C)
    x = torch.from_numpy(to_frames(win, card.layout))
    y = torch.from_numpy(to_frames(tgt, card.layout))
    m = torch.from_numpy(site_mask(c, card.layout).astype(np.float32))[None, None]
    return x, y, m


def example_input(card, frame_shape_=None) -> torch.Tensor:
    rows, cols = frame_shape_ or card.frame_shape or frame_shape(int(card.params.get("n_channels", 384)), card.layout)
    return torch.zeros(1, card.n_inputs, rows, cols)


def make_card(n_channels: int, pre: int = 30, post: int = 30, omission: int = 1, preset: str = "di",
              layout: str = "checkerboard", norm_mean: float = 0.0, norm_std: float = 1.0, training: dict | None = None):
    return card_for(ARCH.name, preset_params(preset, layout), n_channels, pre, post, omission, layout, norm_mean,
                    norm_std, training)


def card_for(arch: str, params: dict, n_channels: int, pre: int, post: int, omission: int, layout: str,
             norm_mean: float, norm_std: float, training: dict | None):
    """The card of a DeepInterpolation-style ephys model (`arch` with `params`) on `n_channels` sites;
    shared with `interp-ephys-di`, which uses this module's layouts and windows."""
    from livedenoise.models.card import ModelCard

    params = dict(params)
    params["n_channels"] = int(n_channels)
    spec = window(pre, post, omission)
    return ModelCard(
        arch=arch, params=params, modality="ephys", pre=pre, post=post, omission=omission,
        offsets=list(spec.offsets), layout=layout, frame_shape=list(frame_shape(n_channels, layout)),
        norm_mean=float(norm_mean), norm_std=float(norm_std), training=training or {},
    )
