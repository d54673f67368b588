"""`block-ephys`: a blind-spot temporal network that denoises a whole block per pass.

DeepInterpolation's ephys net predicts one sample per pass (~19 TFLOP/s for a
384-channel probe at 30 kHz). This network keeps DI's self-supervision rule
but is fully convolutional in time, so one pass denoises T samples at once and
shares all intermediate work between neighbouring outputs:

    output sample t (all channels) sees input samples
        t - omission - pre  ...  t - omission - 1      (past branch)
        t + omission + 1    ...  t + omission + post   (future branch, post > 0)
    and never t itself, the omission band, nor anything after t + omission + post.

- preset `fast` (CPU-friendly: a few large operations): ONE per-channel
  convolution over the whole window, (pre + hidden band + post) samples, whose
  taps on the hidden band (t - omission .. t + omission) are multiplied by a
  fixed zero mask (a blind-spot kernel), then the mixer below.
- preset `base` (capacity, GPU): a past branch (input shifted by omission + 1,
  a stack of causal dilated convolutions, time kernel 2, dilations 1, 2, 4, ...
  with the last cut so the reach is exactly pre - 1; the first layer mixes `kc`
  neighbouring channels, the others are per channel, with residual
  connections) and, when post > 0, its mirror image, anti-causal, reach post - 1.
- mixer: (kc x 1) convolutions over the (concatenated) features, i.e.
  1x1 in time across a local channel neighbourhood, then a linear 1x1 output.
All time convolutions are 'valid' (no padding), so nothing leaks in from
outside the window. Across channels, the first and last channels see mirrored
neighbours (`params["edge"] = "reflect"`, models trained since 0.3), so they are
denoised like inner ones (identical channels in give identical channels out);
older cards have no `edge` and keep the zeros they were trained with.

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

import numpy as np

from livedenoise.models.nets.interp2d import edge_pad
from livedenoise.models.registry import Arch
from livedenoise.models.window import WindowSpec

LAYOUTS = ("block",)
PRESETS: dict[str, dict] = {
    # one wide convolution per branch spanning the whole window (few, large, CPU-friendly ops)
    "fast": {"width": 8, "kc": 3, "mix": 1, "full_span": True, "window_kc": 1},
    # deep dilated stacks: more capacity, many small ops (GPU)
    "base": {"width": 24, "kc": 3, "mix": 2, "full_span": False},
}
DEFAULTS = {"pre": 30, "post": 30, "omission": 1}

ARCH = Arch(
    name="block-ephys",
    modality="ephys",
    trainer="ephys",
    default=False,
    layout="block",
    cpu_backend="onnxruntime",  # one core, 384 channels: 1.4x real time in one pass, 0.6x in PyTorch
    tile=128,  # onnxruntime in tiles of 128 samples: 1.8x real time (docs/benchmarks.md, issue 18)
    layouts=LAYOUTS,
    presets=PRESETS,
    defaults={**DEFAULTS, "preset": "fast", "loss": "l2", "crop": 512, "batch": 8, "lr": 1e-3},
    summary="blind-spot temporal network: a whole block of samples per pass",
)


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
        "past_dilations": [] if PRESETS[preset].get("full_span") else dilations(pre - 1),
        "future_dilations": [] if (post == 0 or PRESETS[preset].get("full_span")) else dilations(post - 1),
        "ctx_before": before,
        "ctx_after": after,
        "edge": "reflect",
        "io": "input (B, 1, C, T_in) normalised; output (B, 1, C, T_in - ctx_before - ctx_after) = "
              "samples ctx_before .. T_in - ctx_after - 1; zero-pad (mean) outside the recording",
    }


def _channel_pad(x: torch.Tensor, k: int, edge: str) -> torch.Tensor:
    """Pad the channel axis (-2) for a 'same' convolution of `k` channels (odd)."""
    return edge_pad(x, (0, 0, k // 2, k // 2), edge)


class Stack(nn.Module):
    """Causal valid stack: output j (time j + reach) sees input j .. j + reach, reach = span - 1 + sum(dils).

    The first layer spans `span` samples x `kc` channels (the whole window when
    `span` = pre and there are no dilated layers: the `fast` preset); the
    dilated layers are per channel, kernel 2, with residual connections.
    """

    def __init__(self, width: int, kc: int, dils: list[int], span: int = 1, edge: str = "zeros"):
        super().__init__()
        self.kc = kc
        self.edge = edge
        self.first = nn.Conv2d(1, width, (kc, span))
        self.layers = nn.ModuleList(nn.Conv2d(width, width, (1, 2), dilation=(1, d)) for d in dils)
        self.dils = list(dils)

    def forward(self, x):
        h = F.relu(self.first(_channel_pad(x, self.kc, self.edge)))
        for conv, d in zip(self.layers, self.dils):
            h = F.relu(conv(h)) + h[..., d:]
        return h


class BlockEphys(nn.Module):
    def __init__(self, pre: int, post: int, omission: int, width: int = 8, kc: int = 3, mix: int = 1,
                 full_span: bool = False, window_kc: int | None = None, edge: str = "zeros"):
        super().__init__()
        self.pre, self.post, self.omission, self.kc = pre, post, omission, kc
        self.edge = edge
        self.before, self.after = context(pre, post, omission)
        self.full_span = full_span
        if full_span:
            # one conv over the whole window [t - before, t + after] whose hidden taps are held at zero
            span = self.before + self.after + 1
            self.wkc = kc if window_kc is None else window_kc
            self.window_conv = nn.Conv2d(1, width, (self.wkc, span))
            mask = torch.ones(1, 1, 1, span)
            mask[..., self.before - omission:self.before + omission + 1] = 0.0
            self.register_buffer("mask", mask, persistent=False)
            self.past = self.future = None
            cin = width
        else:
            self.past = Stack(width, kc, dilations(pre - 1), edge=edge)
            self.future = Stack(width, kc, dilations(post - 1), edge=edge) if post > 0 else None
            cin = width * (2 if post > 0 else 1)
        mixers: list[nn.Module] = []
        for _ in range(mix):
            mixers.append(nn.Conv2d(cin, width, (kc, 1)))
            cin = width
        self.mixers = nn.ModuleList(mixers)
        self.head = nn.Conv2d(cin, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.full_span:
            w = self.window_conv.weight * self.mask
            h = F.relu(F.conv2d(_channel_pad(x, self.wkc, self.edge), w, self.window_conv.bias))
        else:
            h = self._stacks(x)
        for conv in self.mixers:
            h = F.relu(conv(_channel_pad(h, self.kc, self.edge)))
        return self.head(h)

    def _stacks(self, x: torch.Tensor) -> torch.Tensor:
        # past: output t uses x[t .. t + pre - 1] (input coords: t + before - omission - pre ...)
        cut = self.omission + 1 + self.after
        xp = x[..., :-cut]
        h = self.past(xp)
        if self.future is not None:
            xf = x[..., self.before + self.omission + 1:]
            hf = self.future(torch.flip(xf, dims=[-1]))
            hf = torch.flip(hf, dims=[-1])
            h = torch.cat([h, hf], dim=1)
        return h


def build(card) -> nn.Module:
    p = card.params
    return BlockEphys(card.pre, card.post, card.omission, int(p["width"]), int(p["kc"]), int(p.get("mix", 1)),
                      bool(p.get("full_span", False)), p.get("window_kc"), p.get("edge", "zeros"))


def min_frames(card) -> int:
    """One whole window: ctx_before samples, the sample itself, ctx_after samples."""
    before, after = context(int(card.pre), int(card.post), int(card.omission))
    return before + after + 1


def training_span(card, batch: int, crop: int) -> int:
    """Samples per in-memory training chunk."""
    before, after = context(int(card.pre), int(card.post), int(card.omission))
    return max(before + after + crop, 60000)


def training_batch(card, data: np.ndarray, batch: int, crop: int, channels_per_crop: int, rng: np.random.Generator):
    """Random crops of `crop` output samples (plus context) over a random run of up to
    `channels_per_crop` neighbouring channels: input (B, 1, c, T_in), target (B, 1, c, crop); no mask."""
    n, C = data.shape
    before, after = context(int(card.pre), int(card.post), int(card.omission))
    c = min(C, channels_per_crop)
    t_in = before + crop + after
    xs, ys = [], []
    for _ in range(batch):
        a = int(rng.integers(0, n - t_in + 1))
        c0 = int(rng.integers(0, C - c + 1))
        seg = data[a:a + t_in, c0:c0 + c].T  # (c, T_in)
        xs.append(seg)
        ys.append(seg[:, before:before + crop])
    x = torch.from_numpy(np.ascontiguousarray(np.stack(xs)[:, None]))
    y = torch.from_numpy(np.ascontiguousarray(np.stack(ys)[:, None]))
    return x, y, None


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
        arch=ARCH.name, params=params, modality="ephys", pre=pre, post=post, omission=omission,
        offsets=list(spec.offsets), layout="block", frame_shape=None,
        norm_mean=float(norm_mean), norm_std=float(norm_std), training=training or {},
    )
