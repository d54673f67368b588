"""DeepInterpolation's two-photon network (Lecoq et al. 2021) as a 2D U-Net.

Input: the window's frames stacked as channels (B, C, H, W), normalised;
output: the predicted centre frame (B, 1, H, W). Any frame size works: the
input is reflection-padded to a multiple of 2**depth and cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from livedenoise.models.window import WindowSpec

ARCH = "interp2d"

# widths per level, the last is the bottleneck; len(widths) - 1 max-pools;
# convs: 3x3 conv+ReLU layers per block. `di` is unet_single_1024 (15.7 M parameters).
PRESETS: dict[str, dict] = {
    "di": {"widths": [64, 128, 256, 512, 1024], "convs": 1},
    # lite: tuned for a 5-minute CPU training budget and CPU inference (~0.1 s per
    # 256x256 frame on one core); see docs/benchmarks.md.
    "lite": {"widths": [16, 32, 64], "convs": 2},
}


def window(pre: int, post: int, omission: int) -> WindowSpec:
    return WindowSpec.interp(pre, post, omission)


def preset_params(preset: str) -> dict:
    if preset not in PRESETS:
        raise ValueError(f"unknown interp2d preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return {"preset": preset, **PRESETS[preset]}


def _block(cin: int, cout: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class UNet2d(nn.Module):
    def __init__(self, in_channels: int, widths: list[int], convs: int = 2):
        super().__init__()
        self.depth = len(widths) - 1
        self.convs = convs
        self.encoders = nn.ModuleList()
        cin = in_channels
        for w in widths[:-1]:
            self.encoders.append(_block(cin, w, convs))
            cin = w
        self.bottleneck = _block(cin, widths[-1], convs)
        self.decoders = nn.ModuleList()
        cin = widths[-1]
        for w in reversed(widths[:-1]):
            self.decoders.append(_block(cin + w, w, convs))
            cin = w
        self.head = nn.Conv2d(cin, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = 2**self.depth
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        skips = []
        for enc in self.encoders:
            x = enc(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for dec, skip in zip(self.decoders, reversed(skips)):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = dec(torch.cat([x, skip], dim=1))
        x = self.head(x)
        return x[..., :h, :w]

    def spatial_receptive_field(self) -> int:
        """Pixels across that can influence one output pixel (upper bound)."""
        per_block = 2 * self.convs  # each 3x3 conv widens by 2 at the block's scale
        rf, scale = 1, 1
        for _ in range(self.depth):
            rf += per_block * scale + scale  # convs, then a 2x2 pool
            scale *= 2
        rf += per_block * scale  # bottleneck
        for _ in range(self.depth):
            scale //= 2
            rf += scale + per_block * scale  # nearest upsample, then convs
        return rf


def build(card) -> nn.Module:
    return UNet2d(card.n_inputs, list(card.params["widths"]), int(card.params.get("convs", 2)))
