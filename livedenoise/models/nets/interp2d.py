"""DeepInterpolation's two-photon network (Lecoq et al. 2021) as a 2D U-Net.

Input: the window's frames stacked as channels (B, C, H, W), normalised;
output: the predicted centre frame (B, 1, H, W). Any frame size works: the
input is edge-padded to a multiple of unshuffle * 2**depth and cropped back.

The `fast` preset (the default) works in space-to-depth blocks
(pixel unshuffle / shuffle, Shi et al. 2016, "Real-time single image and video
super-resolution using an efficient sub-pixel convolutional neural network"):
its first layer is a 4x4 convolution with stride 4, which mixes the window's
frames and the 16 pixels of each block (a pixel unshuffle followed by a 1x1
conv, computed without moving the input), the U-Net runs at a quarter of the
resolution, and a pixel shuffle puts its 16 outputs per block back in place.
That takes the multiply-adds per output pixel from ~29,000 (`lite`) to ~5,000,
and a window frame costs ~30 of them, so `fast` reads 16 past frames where
`lite` reads 8 (docs/benchmarks.md, "Issue 14").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from livedenoise.models.registry import Arch
from livedenoise.models.window import WindowSpec

# widths per level, the last is the bottleneck; len(widths) - 1 max-pools;
# convs: 3x3 conv+ReLU layers per block. `di` is unet_single_1024 (15.7 M parameters).
PRESETS: dict[str, dict] = {
    "di": {"widths": [64, 128, 256, 512, 1024], "convs": 1},
    # lite: tuned for a 5-minute CPU training budget and CPU inference (~0.1 s per
    # 256x256 frame on one core); see docs/benchmarks.md.
    "lite": {"widths": [16, 32, 64], "convs": 2},
    # fast: a 4x4 stride-4 first layer (space-to-depth), then a U-Net at a quarter of the resolution (module docstring)
    "fast": {"widths": [32, 48, 64], "convs": 2, "unshuffle": 4, "stem": 1},
}

ARCH = Arch(
    name="interp2d",
    modality="2p",
    trainer="imaging",
    default=True,
    presets=PRESETS,
    # l2: Poisson noise at low counts
    defaults={"pre": 8, "post": 1, "omission": 0, "preset": "fast", "loss": "l2", "crop": 64, "batch": 8, "lr": 1e-3},
    # fast: its 1x1 first layer makes a frame of the window cheap (~30 multiply-adds per pixel), so it reads
    # 16 past frames where lite reads 8; it sees 4x4 blocks, so a 128-pixel crop gives its quarter-resolution
    # U-Net the context a 64-pixel crop gives lite (docs/benchmarks.md, issue 14)
    preset_defaults={"fast": {"pre": 16, "crop": 128, "lr": 2e-3}},
    summary="DeepInterpolation 2D U-Net: the window's frames as channels, predicts frame t",
)


WINDOW_INPUT = "encoders.0.0.weight"
"""The weight whose input channels are the window's offsets (models/retarget.py: `train --init` to another window)."""


def window(pre: int, post: int, omission: int) -> WindowSpec:
    return WindowSpec.interp(pre, post, omission)


def preset_params(preset: str) -> dict:
    if preset not in PRESETS:
        raise ValueError(f"unknown interp2d preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return {"preset": preset, **PRESETS[preset]}


EDGES = ("zeros", "reflect")
"""How convolutions see past the edge of a frame: zeros (the original nets), or mirrored data
(`reflect`: an edge pixel or probe site is treated like an inner one; ephys models trained since 0.3)."""


def edge_pad(x: torch.Tensor, pad: tuple[int, int, int, int], edge: str = "zeros") -> torch.Tensor:
    """F.pad of the last two axes (pad = left, right, top, bottom): zeros, or a mirror image
    (`reflect`; an axis too short to mirror repeats its edge value instead)."""
    if edge == "zeros" or not any(pad):
        return F.pad(x, pad)
    left, right, top, bottom = pad
    if left or right:
        mode = "reflect" if max(left, right) < x.shape[-1] else "replicate"
        x = F.pad(x, (left, right, 0, 0), mode=mode)
    if top or bottom:
        mode = "reflect" if max(top, bottom) < x.shape[-2] else "replicate"
        x = F.pad(x, (0, 0, top, bottom), mode=mode)
    return x


class SameConv(nn.Module):
    """'same' convolution (Keras pads after for an even kernel: DI's (3, 2) ephys kernel), edges per `edge`."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int], edge: str = "zeros"):
        super().__init__()
        kh, kw = kernel
        self.pad = ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2)
        self.edge = edge
        self.conv = nn.Conv2d(cin, cout, kernel)

    def forward(self, x):
        return self.conv(edge_pad(x, self.pad, self.edge))


def _conv(cin: int, cout: int, kernel: tuple[int, int], edge: str = "zeros") -> nn.Module:
    if edge not in EDGES:
        raise ValueError(f"unknown edge rule {edge!r}; choose one of {', '.join(EDGES)}")
    if kernel[0] % 2 and kernel[1] % 2 and edge == "zeros":
        return nn.Conv2d(cin, cout, kernel, padding=(kernel[0] // 2, kernel[1] // 2))
    return SameConv(cin, cout, kernel, edge)


def _block(cin: int, cout: int, convs: int, kernel: tuple[int, int], edge: str = "zeros",
           first: nn.Module | None = None) -> nn.Sequential:
    """`convs` conv+ReLU layers; the first is `first` when given (cin -> cout)."""
    layers: list[nn.Module] = []
    for i in range(convs):
        conv = first if i == 0 and first is not None else _conv(cin if i == 0 else cout, cout, kernel, edge)
        layers += [conv, nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class UNet2d(nn.Module):
    """DeepInterpolation's U-Net. The imaging net uses 3x3 convs and 2x2 pools; the
    Neuropixels net (interp_ephys) 3x2 convs and pools along the probe only."""

    def __init__(self, in_channels: int, widths: list[int], convs: int = 2,
                 kernel: tuple[int, int] = (3, 3), pool: tuple[int, int] = (2, 2), pad_mode: str = "replicate",
                 edge: str = "zeros", unshuffle: int = 1, stem: int | None = None):
        super().__init__()
        self.depth = len(widths) - 1
        self.convs = convs
        self.stem = int(stem) if stem else None
        """Kernel side of the first layer when it differs from `kernel` (1: a 1x1 conv mixes the frames)."""
        self.unshuffle = int(unshuffle)
        """Space-to-depth factor s (1: none): the first layer is an s x s convolution with stride s (what a pixel
        unshuffle and a 1x1 conv compute, without moving the input in memory), the head predicts s * s values per
        block and a pixel shuffle puts them in place."""
        if self.unshuffle < 1 or (self.unshuffle > 1 and self.stem != 1):
            raise ValueError(f"unshuffle must be >= 1, and > 1 only with stem 1; got unshuffle {unshuffle}, stem {stem}")
        self.kernel, self.pool, self.pad_mode = tuple(kernel), tuple(pool), pad_mode
        self.encoders = nn.ModuleList()
        cin = in_channels
        for i, w in enumerate(widths[:-1]):
            first = None  # the first layer mixes the window's frames (and, with space-to-depth, a block's pixels)
            if i == 0 and self.unshuffle > 1:
                first = nn.Conv2d(cin, w, self.unshuffle, stride=self.unshuffle)
            elif i == 0 and self.stem:
                first = _conv(cin, w, (self.stem, self.stem), edge)
            self.encoders.append(_block(cin, w, convs, self.kernel, edge, first))
            cin = w
        self.bottleneck = _block(cin, widths[-1], convs, self.kernel, edge)
        self.decoders = nn.ModuleList()
        cin = widths[-1]
        for w in reversed(widths[:-1]):
            self.decoders.append(_block(cin + w, w, convs, self.kernel, edge))
            cin = w
        self.head = nn.Conv2d(cin, self.unshuffle ** 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        s = self.unshuffle
        ph, pw = (-h) % (s * self.pool[0] ** self.depth), (-w) % (s * self.pool[1] ** self.depth)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode=self.pad_mode)
        skips = []
        for enc in self.encoders:
            x = enc(x)
            skips.append(x)
            x = F.max_pool2d(x, self.pool)
        x = self.bottleneck(x)
        scale = (float(self.pool[0]), float(self.pool[1]))
        for dec, skip in zip(self.decoders, reversed(skips)):
            x = F.interpolate(x, scale_factor=scale, mode="nearest")
            x = dec(torch.cat([x, skip], dim=1))
        x = self.head(x)
        if s > 1:
            x = F.pixel_shuffle(x, s)
        return x[..., :h, :w]

    def spatial_receptive_field(self) -> int:
        """Pixels (ephys: sites) along the first axis that can influence one output (upper bound)."""
        per_block = (self.kernel[0] - 1) * self.convs
        p = self.pool[0]
        rf, scale = 1, 1
        for _ in range(self.depth):
            rf += per_block * scale + (p - 1) * scale  # convs, then a pool
            scale *= p
        rf += per_block * scale  # bottleneck
        for _ in range(self.depth):
            scale //= p
            rf += (p - 1) * scale + per_block * scale  # nearest upsample, then convs
        if self.stem:
            rf -= self.kernel[0] - self.stem  # the first layer, at scale 1
        s = self.unshuffle
        return rf * s + s - 1  # rf blocks of s pixels, centred on an output pixel anywhere in its block


def build(card) -> nn.Module:
    p = card.params
    return UNet2d(card.n_inputs, list(p["widths"]), int(p.get("convs", 2)), unshuffle=int(p.get("unshuffle", 1)),
                  stem=p.get("stem"))
