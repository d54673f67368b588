"""DeepInterpolation Keras models (.h5) -> livedenoise checkpoints, read with h5py only.

Source: DeepInterpolation 0.1.4 (Lecoq et al., Nat Methods 2021),
deepinterpolation/network_collection.py and generator_collection.py.

Families (recognised from the convolution kernels and widths in the file, and
checked against the model config when the file has one):

- ``unet_single_1024`` (two-photon; the published Ai93/Ai148 models): ten
  3x3 "same" convolutions 64-128-256-512-1024-512-256-128-64 with ReLU,
  2x2 max-pools, 2x2 nearest up-sampling, concat [up, skip], 1x1 linear
  output -> ``interp2d`` preset ``di`` (the same network, layer for layer);
- ``unet_single_ephys_1024`` (Neuropixels) -> ``interp-ephys-di``
  (models/nets/interp_ephys_di.py).

Window. DeepInterpolation's input channels are the frames
``t - pre - omission .. t + post + omission`` without t and the ``omission``
frames each side of it, in time order (``SequentialGenerator``); that is
``WindowSpec.interp(pre, post, omission)`` here, channel for channel. The
.h5 stores only pre + post (the input channels), so the split is the
published one unless given: two-photon pre = post = 30, omission 0 (30 + 30
frames: 1 s of lag at 30 Hz); Neuropixels pre = post = 30, omission 1.

Normalisation. DeepInterpolation normalises a movie by its own mean and std
(two-photon generators: ``local_mean``/``local_std`` of the movie's frames;
Neuropixels: of its first 200000 samples): for two-photon that is
``--norm data``, the default of `denoise` and `serve`; an ephys card needs the
recording's statistics (``--norm-mean``/``--norm-std`` at import).

Weights. Keras Conv2D kernels are (kh, kw, in, out) on channels-last
tensors; PyTorch's are (out, in, kh, kw) on channels-first: a transpose, and
the concatenations keep their [up, skip] order in channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from livedenoise.errors import UserError
from livedenoise.export.foreign.common import Imported, describe_file, given_norm
from livedenoise.export.foreign.keras_h5 import KerasLayer, KerasModel, read_keras_h5
from livedenoise.models import registry

WIDTHS = [64, 128, 256, 512, 1024]


@dataclass(frozen=True)
class Family:
    network: str
    """DeepInterpolation's name for the network (network_collection.py)."""
    arch: str
    preset: str
    modality: str
    enc_kernels: tuple
    dec_kernels: tuple
    pools: tuple
    ups: tuple
    window: tuple[int, int, int]
    """Published (pre, post, omission)."""
    conv_keys: tuple[str, ...]
    """State-dict prefixes of the architecture's convolutions in DeepInterpolation's layer order."""


FAMILIES = {
    "unet_single_1024": Family(
        "unet_single_1024", "interp2d", "di", "2p",
        ((3, 3),) * 5, ((3, 3),) * 4, ((2, 2),) * 4, ((2, 2),) * 4, (30, 30, 0),
        tuple(f"encoders.{i}.0" for i in range(4)) + ("bottleneck.0",) + tuple(f"decoders.{i}.0" for i in range(4))
        + ("head",),
    ),
    "unet_single_ephys_1024": Family(
        "unet_single_ephys_1024", "interp-ephys-di", "di", "ephys",
        ((2, 2),) + ((3, 1),) * 4, ((3, 1),) * 3 + ((2, 2),), ((2, 2),) + ((2, 1),) * 3, ((2, 1),) * 3 + ((2, 2),),
        (30, 30, 1), tuple(f"convs.{i}.conv" for i in range(9)) + ("head",),
    ),
}
EPHYS_CHANNELS = 384
"""DeepInterpolation's EphysGenerator reads 384 channels (nb_probes) on a (384, 2) checkerboard."""


def _conv_layers(model: KerasModel) -> list[KerasLayer]:
    convs = model.with_weights()
    for layer in convs:
        if layer.class_name not in (None, "Conv2D"):
            raise UserError(f"{model.path}: layer {layer.name!r} is a {layer.class_name}; DeepInterpolation's U-Nets "
                            f"({', '.join(FAMILIES)}) have Conv2D layers only")
        if len(layer.weights) != 2 or layer.weights[0].ndim != 4 or layer.weights[1].ndim != 1:
            raise UserError(f"{model.path}: layer {layer.name!r} is not a Conv2D with a bias (weights "
                            f"{[w.shape for w in layer.weights]})")
    return convs


def detect(model: KerasModel) -> Family:
    """The family whose convolution kernels and widths the file has; UserError naming what was found otherwise."""
    convs = _conv_layers(model)
    kernels = tuple(tuple(int(s) for s in c.weights[0].shape[:2]) for c in convs)
    couts = [int(c.weights[0].shape[3]) for c in convs]
    for fam in FAMILIES.values():
        want_k = fam.enc_kernels + fam.dec_kernels + ((1, 1),)
        want_c = WIDTHS + WIDTHS[-2::-1] + [1]
        if kernels == want_k and couts == want_c:
            return fam
    raise UserError(
        f"{model.path}: not a DeepInterpolation network livedenoise can import (found {len(convs)} Conv2D layers, "
        f"kernels {list(kernels)[:3]}..., widths {couts}); supported: {', '.join(FAMILIES)}"
    )


def _check_config(model: KerasModel, fam: Family) -> None:
    """Every setting the weights do not show: activations, padding, strides, pools, up-sampling, concat order."""
    if not model.has_config:
        return
    path = model.path
    kinds = [lay.class_name for lay in model.layers]
    allowed = {"InputLayer", "Conv2D", "MaxPooling2D", "UpSampling2D", "Concatenate"}
    other = sorted({k for k in kinds if k not in allowed})
    if other:
        raise UserError(f"{path}: layers {other} are not in DeepInterpolation's {fam.network}")
    convs = [lay for lay in model.layers if lay.class_name == "Conv2D"]
    for i, lay in enumerate(convs):
        c = lay.config
        act = "linear" if i == len(convs) - 1 else "relu"
        checks = {
            "activation": (c.get("activation", act), act),
            "padding": (c.get("padding", "same"), "same"),
            "strides": (list(c.get("strides", [1, 1])), [1, 1]),
            "dilation_rate": (list(c.get("dilation_rate", [1, 1])), [1, 1]),
            "data_format": (c.get("data_format") or "channels_last", "channels_last"),
            "groups": (c.get("groups", 1), 1),
        }
        for key, (got, want) in checks.items():
            if got != want:
                raise UserError(f"{path}: Conv2D {lay.name!r} has {key}={got!r}; {fam.network} has {want!r}")
    pools = [tuple(lay.config.get("pool_size", (2, 2))) for lay in model.layers if lay.class_name == "MaxPooling2D"]
    ups = [tuple(lay.config.get("size", (2, 2))) for lay in model.layers if lay.class_name == "UpSampling2D"]
    if pools != list(fam.pools) or ups != list(fam.ups):
        raise UserError(f"{path}: pools {pools} / up-sampling {ups} differ from {fam.network}'s {list(fam.pools)} / {list(fam.ups)}")
    for lay in model.layers:
        if lay.class_name == "MaxPooling2D":
            strides = lay.config.get("strides")
            if lay.config.get("padding", "valid") != "valid" or (strides is not None and tuple(strides) != tuple(lay.config.get("pool_size"))):
                raise UserError(f"{path}: MaxPooling2D {lay.name!r} is not a plain 'valid' pool")
        if lay.class_name == "UpSampling2D" and lay.config.get("interpolation", "nearest") != "nearest":
            raise UserError(f"{path}: UpSampling2D {lay.name!r} is not nearest-neighbour")
        if lay.class_name == "Concatenate" and lay.config.get("axis", -1) not in (-1, 3):
            raise UserError(f"{path}: Concatenate {lay.name!r} joins along axis {lay.config.get('axis')}, not channels")


def _check_concat_order(model: KerasModel) -> None:
    by_name = {lay.name: lay for lay in model.layers}
    for lay in model.layers:
        if lay.class_name != "Concatenate":
            continue
        src = lay.inbound_names(set(by_name))
        if len(src) != 2 or by_name.get(src[0]) is None or by_name[src[0]].class_name != "UpSampling2D":
            raise UserError(f"{model.path}: Concatenate {lay.name!r} joins {src}; DeepInterpolation joins [up-sampled, skip]")


def _torch_conv(kernel: np.ndarray, bias: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Keras (kh, kw, in, out) -> PyTorch (out, in, kh, kw)."""
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))), torch.from_numpy(bias.copy())


def import_h5(path, *, pre: int | None = None, post: int | None = None, omission: int | None = None,
              norm_mean: float | None = None, norm_std: float | None = None, n_channels: int | None = None) -> Imported:
    """A DeepInterpolation .h5 as a card + state dict for this project's faithful network.

    `pre`/`post`/`omission` default to the family's published window when pre + post matches the
    file's input channels; otherwise they must be given. UserError for anything not importable.
    """
    model = read_keras_h5(path)
    fam = detect(model)
    _check_config(model, fam)
    _check_concat_order(model)
    convs = _conv_layers(model)
    k = int(convs[0].weights[0].shape[2])
    notes: list[str] = []
    d_pre, d_post, d_om = fam.window
    if pre is None and post is None:
        if k != d_pre + d_post:
            raise UserError(f"{path} reads {k} input frames, not DeepInterpolation's published {d_pre}+{d_post}: "
                            "give the split with --pre N --post M (and --omission)")
        pre, post = d_pre, d_post
        notes.append(f"window: DeepInterpolation's published {d_pre} before + {d_post} after (the .h5 stores only their "
                     f"sum, {k}); give --pre/--post if this model was trained otherwise")
    elif pre is None or post is None:
        raise UserError("give both --pre and --post (their sum is the model's input frames)")
    if pre + post != k:
        raise UserError(f"{path} reads {k} input frames; --pre {pre} + --post {post} = {pre + post}")
    if omission is None:
        omission = d_om
        notes.append(f"omission {d_om} (DeepInterpolation's default for {fam.network}; give --omission if trained otherwise)")
    try:
        if fam.modality == "ephys":
            rows = model.input_shape[0] if model.input_shape and model.input_shape[0] else None
            n_channels = int(n_channels or rows or EPHYS_CHANNELS)
            if rows is not None and rows != n_channels:
                raise UserError(f"{path} was built for {rows} channels; --channels {n_channels} differs")
            card = registry.make_card(fam.arch, preset=fam.preset, pre=pre, post=post, omission=omission, n_channels=n_channels)
        else:
            card = registry.make_card(fam.arch, preset=fam.preset, pre=pre, post=post, omission=omission)
    except ValueError as exc:
        raise UserError(f"window pre={pre} post={post} omission={omission}: {exc}") from None
    norm_note = given_norm(card, norm_mean, norm_std)
    if norm_note is None:  # none given: the card keeps 0/1 placeholders
        if fam.modality == "ephys":
            raise UserError("an ephys model needs the recording's statistics, as DeepInterpolation normalised by the mean "
                            "and std of its first 200000 samples: give --norm-mean and --norm-std (e.g. from the "
                            "training recording)")
        norm_note = ("DeepInterpolation normalises each movie by its own mean and std: use --norm data (the default of "
                     "denoise and serve); the card's 0/1 are placeholders until `train --init` fine-tunes it")
        notes.append("normalisation: " + norm_note)
    net = registry.build_network(card)
    state = {}
    for layer, key in zip(convs, fam.conv_keys):
        w, b = _torch_conv(*layer.weights)
        state[f"{key}.weight"], state[f"{key}.bias"] = w, b
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UserError(f"{path}: weights do not fit {card.arch}: {str(exc).splitlines()[0]}") from None
    card.origin = {
        "tool": "DeepInterpolation",
        "network": fam.network,
        "reference": "Lecoq et al., Nat Methods 18, 1401-1408 (2021); github.com/AllenInstitute/deepinterpolation",
        **describe_file(path),
        "format": f"Keras HDF5 (keras {model.keras_version}, backend {model.backend})",
        "config_checked": bool(model.has_config),
        "input_shape": model.input_shape,
        "window": {"pre": pre, "post": post, "omission": omission,
                   "rule": "frames t-pre-omission..t+post+omission without t and the omission frames each side, in time order"},
        "normalisation": norm_note,
    }
    if not model.has_config:
        notes.append("the file has no model config (saved with save_weights): activations, pools and joins were not "
                     "checked, only the weights' shapes")
    return Imported(card, net.state_dict(), notes)
