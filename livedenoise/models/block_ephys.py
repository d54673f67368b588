"""`block-ephys`: a blind-spot temporal network that denoises a whole block per pass.

DeepInterpolation's ephys net predicts one sample per pass (~19 TFLOP/s for a
384-channel probe at 30 kHz). This network keeps DI's self-supervision rule
but is fully convolutional in time, so one pass denoises T samples at once and
shares all intermediate work between neighbouring outputs:

    output sample t (all channels) sees input samples
        t - omission - pre  ...  t - omission - 1      (past branch)
        t + omission + 1    ...  t + omission + post   (future branch, post > 0)
    and never t itself, the omission band, nor anything after t + omission + post.

- past branch: input shifted by omission + 1, then a stack of causal dilated
  convolutions (time kernel 2, dilations 1, 2, 4, ... with the last cut so the
  reach is exactly pre - 1); the first layer mixes a local neighbourhood of
  `kc` channels, the others are per-channel (kernel 1 across channels), with
  residual connections.
- future branch (post > 0): the mirror image, anti-causal, reach post - 1.
- mixer: (kc x 1) convolutions over the concatenated branch features, i.e.
  1x1 in time across a local channel neighbourhood, then a linear 1x1 output.
All time convolutions are 'valid' (no padding), so nothing leaks in from
outside the window; channel padding is zeros.

I/O contract (does not fit the per-frame window contract; documented in
card.params['io']): input (B, 1, C, T_in) normalised samples, channel-major;
output (B, 1, C, T_in - ctx_before - ctx_after) for the samples
ctx_before .. T_in - ctx_after - 1 of the input, where ctx_before = pre + omission
and ctx_after = post + omission when post > 0, else 0 (= the card's lag). Any C,
any T_in > ctx_before + ctx_after. The engine's (B, *frame) output is (B, C, T_out).
Edges: callers pad normalised data with zeros (the mean) before the first and
after the last sample, offline and live alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from livedenoise.models.window import WindowSpec

ARCH = "block-ephys"
LAYOUTS = ("block",)
PRESETS: dict[str, dict] = {
    "fast": {"width": 8, "kc": 3, "mix": 1},
    "base": {"width": 24, "kc": 3, "mix": 2},
}
DEFAULTS = {"pre": 30, "post": 30, "omission": 1}


def window(pre: int, post: int, omission: int) -> WindowSpec:
    return WindowSpec.interp(pre, post, omission)


def dilations(reach: int) -> list[int]:
    """Kernel-2 dilations 1, 2, 4, ... whose sum is exactly `reach` (empty for 0)."""
    out, total, d = [], 0, 1
    while total < reach:
        step = min(d, reach - total)
        out.append(step)
        total += step
        d *= 2
    return out


def context(pre: int, post: int, omission: int) -> tuple[int, int]:
    """(samples needed before the first output, samples needed after the last)."""
    return pre + omission, (post + omission if post > 0 else 0)


def preset_params(preset: str, pre: int = 30, post: int = 30, omission: int = 1) -> dict:
    if preset not in PRESETS:
        raise ValueError(f"unknown block-ephys preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if pre < 1:
        raise ValueError("block-ephys needs pre >= 1")
    before, after = context(pre, post, omission)
    return {
        "preset": preset,
        **PRESETS[preset],
        "past_dilations": dilations(pre - 1),
        "future_dilations": dilations(post - 1) if post > 0 else [],
        "ctx_before": before,
        "ctx_after": after,
        "io": "input (B, 1, C, T_in) normalised; output (B, 1, C, T_in - ctx_before - ctx_after) = "
              "samples ctx_before .. T_in - ctx_after - 1; zero-pad (mean) outside the recording",
    }


class Stack(nn.Module):
    """Causal valid stack: output j (time j + reach) sees input j .. j + reach."""

    def __init__(self, width: int, kc: int, dils: list[int]):
        super().__init__()
        self.kc = kc
        self.first = nn.Conv2d(1, width, (kc, 1))
        self.layers = nn.ModuleList(nn.Conv2d(width, width, (1, 2), dilation=(1, d)) for d in dils)
        self.dils = list(dils)

    def forward(self, x):
        p = self.kc // 2
        h = F.relu(self.first(F.pad(x, (0, 0, p, p))))
        for conv, d in zip(self.layers, self.dils):
            h = F.relu(conv(h)) + h[..., d:]
        return h


class BlockEphys(nn.Module):
    def __init__(self, pre: int, post: int, omission: int, width: int = 8, kc: int = 3, mix: int = 1):
        super().__init__()
        self.pre, self.post, self.omission, self.kc = pre, post, omission, kc
        self.before, self.after = context(pre, post, omission)
        self.past = Stack(width, kc, dilations(pre - 1))
        self.future = Stack(width, kc, dilations(post - 1)) if post > 0 else None
        cin = width * (2 if post > 0 else 1)
        mixers: list[nn.Module] = []
        for _ in range(mix):
            mixers += [nn.Conv2d(cin, width, (kc, 1)), nn.ReLU()]
            cin = width
        self.mixers = nn.ModuleList(m for m in mixers if isinstance(m, nn.Conv2d))
        self.head = nn.Conv2d(cin, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # past: output t uses x[t .. t + pre - 1] (input coords: t + before - omission - pre ...)
        cut = self.omission + 1 + self.after
        xp = x[..., :-cut]
        h = self.past(xp)
        if self.future is not None:
            xf = x[..., self.before + self.omission + 1:]
            hf = self.future(torch.flip(xf, dims=[-1]))
            hf = torch.flip(hf, dims=[-1])
            h = torch.cat([h, hf], dim=1)
        p = self.kc // 2
        for conv in self.mixers:
            h = F.relu(conv(F.pad(h, (0, 0, p, p))))
        return self.head(h)


def build(card) -> nn.Module:
    p = card.params
    return BlockEphys(card.pre, card.post, card.omission, int(p["width"]), int(p["kc"]), int(p.get("mix", 1)))


def example_input(card, frame_shape=None, samples: int = 1024) -> torch.Tensor:
    """(1, 1, C, T_in) for ONNX export. frame_shape = (C, T_in) when given (the time axis is
    dynamic in the export anyway); otherwise the training channel count and 1024 outputs."""
    before, after = int(card.params["ctx_before"]), int(card.params["ctx_after"])
    c = int(frame_shape[0]) if frame_shape else int(card.params.get("n_channels", 384))
    t_in = int(frame_shape[1]) if frame_shape is not None and len(frame_shape) > 1 else before + samples + after
    return torch.zeros(1, 1, c, max(t_in, before + after + 64))


def dynamic_axes() -> dict:
    return {"input": {0: "batch", 2: "channels", 3: "samples_in"}, "output": {0: "batch", 2: "channels", 3: "samples_out"}}


def make_card(n_channels: int, pre: int = 30, post: int = 30, omission: int = 1, preset: str = "fast",
              norm_mean: float = 0.0, norm_std: float = 1.0, training: dict | None = None, layout: str = "block"):
    from livedenoise.models.card import ModelCard

    params = preset_params(preset, pre, post, omission)
    params["n_channels"] = int(n_channels)
    spec = window(pre, post, omission)
    return ModelCard(
        arch=ARCH, params=params, modality="ephys", pre=pre, post=post, omission=omission,
        offsets=list(spec.offsets), layout="block", frame_shape=None,
        norm_mean=float(norm_mean), norm_std=float(norm_std), training=training or {},
    )
