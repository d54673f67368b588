"""DeepInterpolation's Neuropixels network exactly as published, `interp-ephys-di` (Lecoq et al., Nat Methods 2021).

This is `unet_single_ephys_1024` of deepinterpolation/network_collection.py
(DeepInterpolation 0.1.4), layer for layer, so that a model trained with
DeepInterpolation (a Keras `.h5`) runs here with the same output
(`livedenoise import MODEL.h5`, export/foreign/deepinterpolation.py):

    conv1  (2, 2) 64   ReLU  -> max-pool (2, 2)         (the two columns merge into one)
    conv2  (3, 1) 128  ReLU  -> max-pool (2, 1)
    conv3  (3, 1) 256  ReLU  -> max-pool (2, 1)
    conv4  (3, 1) 512  ReLU  -> max-pool (2, 1)
    conv5  (3, 1) 1024 ReLU
    up (2, 1), concat conv4 -> conv7  (3, 1) 512 ReLU
    up (2, 1), concat conv3 -> conv8  (3, 1) 256 ReLU
    up (2, 1), concat conv2 -> conv9  (3, 1) 128 ReLU
    up (2, 2), concat conv1 -> conv10 (2, 2) 64  ReLU
    1x1 linear -> 1 channel

Keras "same" padding with zeros (an even kernel pads one after, none before),
nearest up-sampling, concatenation [up, skip]. `interp-ephys` is this
project's own variant of the same idea ((3, 2) kernels everywhere, pools along
the probe only, mirrored edges); this module keeps DeepInterpolation's.

Data layout and window are DeepInterpolation's (EphysGenerator): the C
channels of one sample on a (C, 2) checkerboard (channel c at row c, column
c % 2, zeros elsewhere), inputs the `pre` samples before and `post` after the
predicted one with `omission` hidden on each side (published: 30, 30, 1),
normalised by the recording's mean and std. Input (B, pre+post, C, 2),
output (B, 1, C, 2). Rows are zero-padded at the end to a multiple of 16 (C =
384 needs none) and cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from livedenoise.models.nets.interp_ephys import (  # noqa: F401  (the registry reads these hooks from this module)
    card_for,
    example_input,
    frame_shape,
    from_frames,
    min_frames,
    site_mask,
    to_frames,
    training_batch,
    training_span,
    window,
)
from livedenoise.models.registry import Arch

LAYOUTS = ("checkerboard",)
PRESETS: dict[str, dict] = {
    "di": {"widths": [64, 128, 256, 512, 1024]},
}

ARCH = Arch(
    name="interp-ephys-di",
    modality="ephys",
    trainer="ephys",
    layout="checkerboard",
    presets=PRESETS,
    defaults={"pre": 30, "post": 30, "omission": 1, "preset": "di", "loss": "l2", "crop": 512, "batch": 32, "lr": 1e-4},
    summary="DeepInterpolation's Neuropixels U-Net exactly as published (imported .h5 models)",
)


WINDOW_INPUT = "convs.0.conv.weight"
"""The weight whose input channels are the window's offsets (models/retarget.py)."""


def preset_params(preset: str, layout: str = "checkerboard") -> dict:
    if preset not in PRESETS:
        raise ValueError(f"unknown interp-ephys-di preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if layout not in LAYOUTS:
        raise ValueError(f"interp-ephys-di reads the {LAYOUTS[0]} layout only (got {layout!r})")
    return {"preset": preset, **PRESETS[preset], "layout": layout}


class KerasSameConv(nn.Module):
    """Conv2d with Keras' "same" zero padding: (k - 1) // 2 before and k // 2 after on each axis."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int]):
        super().__init__()
        kh, kw = kernel
        self.pad = ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2)
        self.conv = nn.Conv2d(cin, cout, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad))


class DIEphysUNet(nn.Module):
    """(B, K, rows, 2) normalised windows -> (B, 1, rows, 2). `convs` holds the ten 3x3-ish convolutions
    in DeepInterpolation's order (conv1..conv5, conv7..conv10), `head` the 1x1 output."""

    MULTIPLE = (16, 2)

    def __init__(self, in_channels: int, widths: list[int]):
        super().__init__()
        if len(widths) != 5:
            raise ValueError(f"interp-ephys-di has five levels of widths, got {widths}")
        w = list(widths)
        enc_k = [(2, 2), (3, 1), (3, 1), (3, 1), (3, 1)]
        layers = []
        cin = in_channels
        for width, k in zip(w, enc_k):
            layers.append(KerasSameConv(cin, width, k))
            cin = width
        dec_k = [(3, 1), (3, 1), (3, 1), (2, 2)]
        for skip, k in zip(reversed(w[:-1]), dec_k):
            layers.append(KerasSameConv(cin + skip, skip, k))
            cin = skip
        self.convs = nn.ModuleList(layers)
        self.head = nn.Conv2d(cin, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.MULTIPLE[0], (-w) % self.MULTIPLE[1]
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        pools = [(2, 2), (2, 1), (2, 1), (2, 1)]
        skips = []
        for conv, pool in zip(self.convs[:4], pools):
            x = torch.relu(conv(x))
            skips.append(x)
            x = F.max_pool2d(x, pool)
        x = torch.relu(self.convs[4](x))
        ups = [(2.0, 1.0), (2.0, 1.0), (2.0, 1.0), (2.0, 2.0)]
        for conv, up, skip in zip(self.convs[5:], ups, reversed(skips)):
            x = F.interpolate(x, scale_factor=up, mode="nearest")
            x = torch.relu(conv(torch.cat([x, skip], dim=1)))
        x = self.head(x)
        return x[..., :h, :w]


def build(card) -> nn.Module:
    return DIEphysUNet(card.n_inputs, list(card.params["widths"]))


def make_card(n_channels: int, pre: int = 30, post: int = 30, omission: int = 1, preset: str = "di",
              layout: str = "checkerboard", norm_mean: float = 0.0, norm_std: float = 1.0, training: dict | None = None):
    return card_for(ARCH.name, preset_params(preset, layout), n_channels, pre, post, omission, layout, norm_mean,
                    norm_std, training)
