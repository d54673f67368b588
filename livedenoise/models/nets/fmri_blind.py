"""`fmri-blind`: DeepInterpolation's fMRI blind-spot voxel model, fully convolutional (whole volumes per pass).

Source: DeepInterpolation (Lecoq et al., Nature Methods 18, 1401-1408, 2021), its
fMRI network: one voxel v of volume t is predicted from the 7 x 7 x 7
neighbourhood around v in the volumes t - 2 .. t + 2, with v itself hidden in
volume t, so the noisy run is its own training target (no clean data). DI applies
a small dense network to that flattened 7 x 7 x 7 x 5 neighbourhood, one voxel
per pass. Its first dense layer is exactly a 3D convolution of kernel 7 over the
five volumes taken as input channels, with the centre tap of volume t's kernel
held at zero (a blind-spot kernel); its later dense layers are exactly 1 x 1 x 1
convolutions. Written that way, one pass denoises every voxel of a volume and
shares nothing that could reach back to the hidden voxel:

    output (v, t) reads input volumes t - pre .. t + post (the card's offsets,
    in channel order) inside the k x k x k cube around v, except voxel v of
    volume t; nothing after t + post (the lag is `post` volumes).

Variants, by the window (`pre`, `post`; omission is always 0 because volume t
itself is read, only its centre voxel is hidden):

- symmetric (DI's): pre 2, post 2, lag 2 volumes (the default);
- short-lag: pre 3, post 1, lag 1 volume;
- causal: pre 4, post 0, lag 0 (real-time fMRI: a volume is denoised as it arrives).

Presets: `fast` (one masked convolution of `width` filters, one 1x1x1 hidden
layer) and `base` (wider, three 1x1x1 hidden layers, closer to DI's dense stack).

I/O contract: input (B, pre + post + 1, I, J, K) normalised volumes, channel c
being volume t + offsets[c]; output (B, 1, I, J, K), the normalised prediction of
volume t. Any I, J, K (>= 1). Outside the volume the convolution pads with zeros
(the mean, after normalisation). At a run's first and last volumes the window
follows `WindowSpec.source_indices` (reflected), like every other model, as a
blind-spot window (the card's params say `blind_spot`): no other channel ever
resolves to volume t itself, so voxel v of volume t is never read through
another channel either; a causal model's first volume has no other volume to
read and passes through raw (flagged), as for every causal model.

Registration: ``ARCH`` below (modality `fmri`, layout `volumes`, trained by
`train/imaging.py` on 3D crops). `make_card` takes a `variant` (symmetric,
short-lag, causal) as a shorthand for the window.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from livedenoise.models.registry import Arch
from livedenoise.models.window import WindowSpec

NAME = "fmri-blind"
PRESETS: dict[str, dict] = {
    "fast": {"width": 32, "hidden": 1, "kernel": 7},
    "base": {"width": 64, "hidden": 3, "kernel": 7},
}
VARIANTS: dict[str, tuple[int, int]] = {"symmetric": (2, 2), "short-lag": (3, 1), "causal": (4, 0)}
"""Named windows: variant -> (pre, post) volumes."""
ARCH = Arch(
    name="fmri-blind",
    modality="fmri",
    trainer="imaging",
    layout="volumes",
    default=True,
    presets=PRESETS,
    defaults={"pre": 2, "post": 2, "omission": 0, "preset": "fast", "loss": "l2", "crop": 16, "batch": 4, "lr": 2e-3},
    summary="DeepInterpolation's fMRI blind-spot voxel model: whole volumes per pass",
)


def window(pre: int, post: int, omission: int = 0) -> WindowSpec:
    """Volumes t - pre .. t + post, volume t included (its voxel v is hidden by the kernel, not the window).

    ValueError for omission != 0, pre < 0, post < 0 or pre + post == 0.
    """
    if omission:
        raise ValueError("fmri-blind hides only the predicted voxel of volume t: omission must be 0")
    if pre < 0 or post < 0 or pre + post == 0:
        raise ValueError(f"need pre >= 0, post >= 0 and pre + post >= 1 (got pre={pre}, post={post})")
    return WindowSpec(tuple(range(-pre, post + 1)), 0, blind=True)


def preset_params(preset: str) -> dict:
    """The card's params for a preset. ValueError for an unknown preset."""
    if preset not in PRESETS:
        raise ValueError(f"unknown {NAME} preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return {"preset": preset, **PRESETS[preset], "blind_spot": True,
            "io": "input (B, n_inputs, I, J, K) normalised volumes; output (B, 1, I, J, K) = volume t"}


class BlindVoxelNet(nn.Module):
    """Masked k^3 convolution over the window's volumes (centre tap of volume t zero), then 1x1x1 layers.

    `target`: the input channel holding volume t (its index in the card's offsets).
    """

    def __init__(self, n_inputs: int, target: int, width: int = 32, hidden: int = 1, kernel: int = 7):
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"kernel must be odd (got {kernel})")
        if not 0 <= target < n_inputs:
            raise ValueError(f"target channel {target} outside 0..{n_inputs - 1}")
        self.kernel, self.target = int(kernel), int(target)
        self.first = nn.Conv3d(n_inputs, width, kernel)
        mask = torch.ones(1, n_inputs, kernel, kernel, kernel)
        c = kernel // 2
        mask[0, target, c, c, c] = 0.0
        self.register_buffer("mask", mask, persistent=False)
        self.hidden = nn.ModuleList(nn.Conv3d(width, width, 1) for _ in range(int(hidden)))
        self.head = nn.Conv3d(width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(F.conv3d(x, self.first.weight * self.mask, self.first.bias, padding=self.kernel // 2))
        for conv in self.hidden:
            h = F.relu(conv(h))
        return self.head(h)

    def spatial_receptive_field(self) -> int:
        """Voxels across the cube each output reads (the kernel: later layers are 1x1x1)."""
        return self.kernel


def build(card) -> nn.Module:
    """A freshly initialised network for `card` (offsets must contain 0: volume t)."""
    p = card.params
    offsets = [int(o) for o in card.offsets]
    if 0 not in offsets:
        raise ValueError(f"{NAME} needs volume t (offset 0) among the inputs; got offsets {offsets}")
    return BlindVoxelNet(len(offsets), offsets.index(0), int(p["width"]), int(p.get("hidden", 1)),
                         int(p.get("kernel", 7)))


def min_frames(card) -> int:
    """Volume t plus one neighbour (the edge rule reflects the rest of the window)."""
    return 2


def spatial_extent(card) -> tuple[int, int, int]:
    k = int(card.params.get("kernel", 7))
    return (k, k, k)


def make_card(pre: int = 2, post: int = 2, omission: int = 0, preset: str = "fast", norm_mean: float = 0.0,
              norm_std: float = 1.0, training: dict | None = None, variant: str | None = None, **_ignored):
    """A model card (modality `fmri`, layout `volumes`); `variant` (symmetric, short-lag, causal) sets pre/post."""
    from livedenoise.models.card import ModelCard

    if variant is not None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown {NAME} variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        pre, post = VARIANTS[variant]
    spec = window(int(pre), int(post), int(omission))
    return ModelCard(arch=NAME, params=preset_params(preset), modality="fmri", pre=int(pre), post=int(post),
                     omission=0, offsets=list(spec.offsets), layout="volumes", frame_shape=None,
                     norm_mean=float(norm_mean), norm_std=float(norm_std), training=training or {})


def example_input(card, frame_shape=None) -> torch.Tensor:
    """(1, n_inputs, I, J, K) zeros for ONNX export; frame_shape = (I, J, K) volume shape
    (default, or anything not 3D: 16 x 16 x 16; the spatial axes are dynamic in the export)."""
    fs = tuple(frame_shape) if frame_shape is not None else ()
    i, j, k = (int(s) for s in fs) if len(fs) == 3 else (16, 16, 16)
    return torch.zeros(1, len(card.offsets), i, j, k)


def dynamic_axes() -> dict:
    return {"input": {0: "batch", 2: "i", 3: "j", 4: "k"}, "output": {0: "batch", 2: "i", 3: "j", 4: "k"}}
