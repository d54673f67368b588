"""DeepCAD-RT's 3D U-Net (Li et al., Nat Methods 2021; Nat Biotech 2023), streaming form.

Network (preset `rt`): 4 levels with feature maps 16-32-64-128, each level two
3x3x3 conv+ReLU (the first conv of an encoder goes to half the level's width,
as in DeepCAD-RT's pytorch-3dunet blocks), no normalisation, 3 max-pools,
nearest upsampling + concatenation in the decoder, 1x1x1 linear output:
1,020,337 parameters.

Window and alignment. DeepCAD trains Noise2Noise on the odd and even frames
of a sub-stack: for 2T consecutive frames s..s+2T-1 the input is s, s+2, ...
and the target is s+1, s+3, ...; output position i predicts input_i + 1.
Here the input offsets for output frame t are the ODD offsets within
[-pre, post] in increasing order (so frame t and its same-parity neighbours
are never inputs), and the prediction for t is read at the temporal position
of offset -1. A causal model (post=0) reads the last position; post=1 reads
the one before last. With `omission` m > 0 the same scheme runs on a stride
of 2(m+1): offsets are the odd multiples of (m+1) within [-(pre+m), post+m]
and the prediction is read at offset -(m+1), so frames t-m..t+m stay hidden.

Shapes: the network maps (B, C, H, W) -> unsqueeze to (B, 1, T=C, H, W) ->
3D U-Net (T, H, W replicate-padded to multiples of 8, cropped back) ->
(B, 1, T, H, W) -> the read position -> (B, 1, H, W). `forward_all` returns
every temporal position (used for training on odd/even sub-stacks).

Offline inference on big frames: `tiled_forward(net, x, tile, overlap)` runs
overlapping spatial tiles and keeps tile centres; away from the borders it
equals the untiled result within float tolerance.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from livedenoise.models.registry import Arch
from livedenoise.models.window import WindowSpec

# f_maps: feature maps per level (the last is the bottleneck); len(f_maps) - 1 max-pools.
PRESETS: dict[str, dict] = {
    "rt": {"f_maps": [16, 32, 64, 128]},
}

ARCH = Arch(
    name="cad3d",
    modality="2p",
    trainer="imaging",
    presets=PRESETS,
    defaults={"pre": 8, "post": 1, "omission": 0, "preset": "rt", "loss": "mixed", "crop": 64, "batch": 2, "lr": 3e-4},
    summary="DeepCAD-RT 3D U-Net: odd/even Noise2Noise sub-stacks",
)


WINDOW_FREE = True
"""Convolutional in time: the same weights serve any window (models/retarget.py: `train --init` to another window)."""


def stride(omission: int) -> int:
    """Temporal spacing of the inputs: 2 (odd/even) without omission."""
    return 2 * (int(omission) + 1)


def offsets(pre: int, post: int, omission: int = 0) -> tuple[int, ...]:
    """Odd multiples of (omission+1) within [-(pre+omission), post+omission], increasing."""
    if pre < 1 or post < 0 or omission < 0:
        raise ValueError(f"cad3d needs pre >= 1, post >= 0, omission >= 0 (got pre={pre}, post={post}, omission={omission})")
    h = omission + 1
    lo, hi = -(pre + omission), (post + omission if post > 0 else 0)
    return tuple(o for o in range(lo, hi + 1) if o % h == 0 and (o // h) % 2 != 0)


def window(pre: int, post: int, omission: int) -> WindowSpec:
    return WindowSpec(offsets(pre, post, omission), omission)


def min_frames(card) -> int:
    """A whole odd/even sub-stack: the window's span plus the target shift (DeepCAD-RT's pairs)."""
    offs = card.window.offsets
    return max(offs) - min(offs) + int(card.omission) + 2


def target_shift(card) -> int:
    """Training pairs: every input frame's target is the frame omission + 1 later (odd/even sub-stacks)."""
    return int(card.omission) + 1


def training_outputs(net, on: bool) -> None:
    """Training: forward returns every temporal position (B, T, H, W), shaped like the targets, instead of the read one."""
    net.all_positions = bool(on)


def read_offset(omission: int) -> int:
    """Window offset whose output position predicts frame t."""
    return -(int(omission) + 1)


def preset_params(preset: str) -> dict:
    if preset not in PRESETS:
        raise ValueError(f"unknown cad3d preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return {"preset": preset, **PRESETS[preset]}


class DoubleConv3d(nn.Sequential):
    def __init__(self, cin: int, cout: int, encoder: bool):
        mid = max(cout // 2, cin) if encoder else cout
        super().__init__(
            nn.Conv3d(cin, mid, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, cout, 3, padding=1),
            nn.ReLU(inplace=True),
        )


class UNet3d(nn.Module):
    """(B, C, H, W) window -> (B, 1, H, W) prediction read at temporal position `read_index`."""

    def __init__(self, f_maps: list[int], read_index: int):
        super().__init__()
        self.pools = len(f_maps) - 1
        self.read_index = int(read_index)
        self.encoders = nn.ModuleList()
        cin = 1
        for f in f_maps:
            self.encoders.append(DoubleConv3d(cin, f, encoder=True))
            cin = f
        self.decoders = nn.ModuleList()
        for f in reversed(f_maps[:-1]):
            self.decoders.append(DoubleConv3d(cin + f, f, encoder=False))
            cin = f
        self.head = nn.Conv3d(cin, 1, 1)
        self.all_positions = False
        """When True (training), forward returns every temporal position, (B, T, H, W): shaped like the targets."""

    @property
    def multiple(self) -> int:
        return 2**self.pools

    def forward_all(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, H, W) or (B, 1, T, H, W) -> (B, 1, T, H, W): every temporal position."""
        if x.dim() == 4:
            x = x.unsqueeze(1)
        t, h, w = x.shape[-3:]
        m = self.multiple
        pt, ph, pw = (-t) % m, (-h) % m, (-w) % m
        if pt or ph or pw:
            x = F.pad(x, (0, pw, 0, ph, 0, pt), mode="replicate")
        skips = []
        for i, enc in enumerate(self.encoders):
            if i:
                x = F.max_pool3d(x, 2)
            x = enc(x)
            skips.append(x)
        for dec, skip in zip(self.decoders, reversed(skips[:-1])):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = dec(torch.cat([skip, x], dim=1))
        x = self.head(x)
        return x[:, :, :t, :h, :w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.forward_all(x)
        if self.all_positions:
            return y[:, 0]
        return y[:, :, self.read_index]

    def spatial_receptive_field(self) -> int:
        """Pixels (or frames) across that can influence one output voxel (upper bound)."""
        rf, scale = 1, 1
        for i in range(self.pools + 1):
            if i:
                rf += scale  # 2x2x2 pool
                scale *= 2
            rf += 4 * scale  # two 3x3x3 convs
        for _ in range(self.pools):
            scale //= 2
            rf += scale + 4 * scale  # nearest upsample, then two convs
        return rf


def build(card) -> nn.Module:
    offs = list(card.offsets)
    read = read_offset(card.omission)
    if read not in offs:
        raise ValueError(f"cad3d window {offs} lacks the read offset {read}")
    return UNet3d(list(card.params["f_maps"]), offs.index(read))


def _starts(n: int, tile: int, step: int) -> list[int]:
    if n <= tile:
        return [0]
    starts = list(range(0, n - tile, step))
    starts.append(n - tile)
    return starts


def tiled_forward(net: UNet3d, x: torch.Tensor, tile: int = 256, overlap: int | None = None) -> torch.Tensor:
    """Run `net` (B, C, H, W) -> (B, 1, H, W) on overlapping spatial tiles, keeping tile centres.

    `tile` and the step between tiles are multiples of the pooling grid (8), so
    every tile sees the same pooling alignment as the whole frame; `overlap`
    defaults to the network's receptive field, which makes the result equal
    to the untiled one within float tolerance (zero-padding at tile borders is
    then out of reach of the kept centres).
    """
    m = net.multiple
    tile = max(m, int(math.ceil(tile / m)) * m)
    if overlap is None:
        overlap = net.spatial_receptive_field()
    overlap = int(math.ceil(overlap / m)) * m
    if overlap >= tile:
        raise ValueError(f"overlap {overlap} must be smaller than the tile {tile}")
    h, w = x.shape[-2:]
    if h <= tile and w <= tile:
        return net(x)
    ph, pw = (-h) % m, (-w) % m
    xp = F.pad(x, (0, pw, 0, ph), mode="replicate") if (ph or pw) else x
    hp, wp = xp.shape[-2:]
    step = tile - overlap
    ys, xs = _starts(hp, tile, step), _starts(wp, tile, step)
    out = x.new_empty((x.shape[0], 1, hp, wp))

    def bounds(starts: list[int], n: int) -> list[tuple[int, int]]:
        size = min(tile, n)
        cuts = [0] + [(starts[k] + size + starts[k + 1]) // 2 for k in range(len(starts) - 1)] + [n]
        return [(cuts[k], cuts[k + 1]) for k in range(len(starts))]

    for y0, (ya, yb) in zip(ys, bounds(ys, hp)):
        for x0, (xa, xb) in zip(xs, bounds(xs, wp)):
            pred = net(xp[..., y0 : y0 + tile, x0 : x0 + tile])
            out[..., ya:yb, xa:xb] = pred[..., ya - y0 : yb - y0, xa - x0 : xb - x0]
    return out[..., :h, :w]
