"""DeepCAD-RT PyTorch state dicts (.pth) -> `cad3d` checkpoints.

Source: DeepCAD-RT (Li et al., Nat Methods 2021; Nat Biotech 2023), package
`deepcad` 1.2.0: network.py (``Network_3D_Unet`` wraps ``UNet3D`` as
``Generator``), model_3DUnet.py, buildingblocks.py. Its 3D U-Net with
``f_maps=16`` (feature maps 16-32-64-128, two conv+ReLU per level, the first
encoder conv to half the level's width, max-pools, nearest up-sampling,
concat [skip, up], 1x1x1 linear output: the final sigmoid is built but never
applied in ``forward``) is `cad3d`'s network, layer for layer, so the weights
map by name:

    Generator.encoders.{i}.basic_module.SingleConv{1,2}.conv -> encoders.{i}.{0,2}
    Generator.decoders.{i}.basic_module.SingleConv{1,2}.conv -> decoders.{i}.{0,2}
    Generator.final_conv                                      -> head

The feature maps are read from the weights (DeepCAD's ``fmap`` option).
DeepCAD-RT writes its settings next to the weights (``para.yaml``:
patch_x/patch_y/patch_t, overlap_factor, scale_factor, fmap); they go into the
card's origin. Normalisation: DeepCAD trains on ``raw / scale_factor`` (and
subtracts the movie's mean at inference): the card gets mean 0 and std
scale_factor, i.e. ``--norm card`` feeds the network what it was trained on.

Window. DeepCAD trains Noise2Noise on the odd and even frames of a sub-stack
of 2 x patch_t frames; its network is convolutional in time, so the same
weights serve `cad3d`'s window (odd offsets within [-pre, post], see
models/nets/cad3d.py) for any pre/post: the default is cad3d's (8 before, 1
after), chosen at import with --pre/--post.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from livedenoise.errors import UserError
from livedenoise.export.foreign.common import Imported, describe_file, given_norm
from livedenoise.models import registry

PARA_KEYS = ("patch_x", "patch_y", "patch_t", "overlap_factor", "scale_factor", "fmap", "gap_x", "gap_y", "gap_t")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path} is not a readable PyTorch state dict: {first[:200]}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path} is not a state dict of tensors (DeepCAD-RT saves model.state_dict() in its .pth files)")
    out = {}
    for k, v in obj.items():
        k = k[len("module."):] if k.startswith("module.") else k
        if not v.is_floating_point() or not torch.isfinite(v).all():
            raise UserError(f"{path}: tensor {k} is not finite floating point")
        out[k] = v.float()
    return out


def f_maps_of(state: dict, path) -> list[int]:
    """Feature maps per level from the encoder weights; UserError when the keys are not DeepCAD-RT's UNet3D."""
    f_maps = []
    i = 0
    while f"Generator.encoders.{i}.basic_module.SingleConv2.conv.weight" in state:
        f_maps.append(int(state[f"Generator.encoders.{i}.basic_module.SingleConv2.conv.weight"].shape[0]))
        i += 1
    if len(f_maps) < 2 or "Generator.final_conv.weight" not in state:
        some = ", ".join(list(state)[:3])
        raise UserError(f"{path}: not a DeepCAD-RT Network_3D_Unet state dict (keys {some}, ...); expected "
                        "Generator.encoders.N.basic_module.SingleConvK.conv.weight and Generator.final_conv")
    w0 = state["Generator.encoders.0.basic_module.SingleConv1.conv.weight"]
    if w0.shape[1] != 1 or state["Generator.final_conv.weight"].shape[0] != 1:
        raise UserError(f"{path}: DeepCAD-RT model with {w0.shape[1]} input / "
                        f"{state['Generator.final_conv.weight'].shape[0]} output channels; livedenoise denoises one channel")
    return f_maps


def mapping(n_levels: int) -> dict[str, str]:
    """DeepCAD-RT key -> cad3d key."""
    m = {}
    for i in range(n_levels):
        for j, ours in ((1, 0), (2, 2)):
            for p in ("weight", "bias"):
                m[f"Generator.encoders.{i}.basic_module.SingleConv{j}.conv.{p}"] = f"encoders.{i}.{ours}.{p}"
    for i in range(n_levels - 1):
        for j, ours in ((1, 0), (2, 2)):
            for p in ("weight", "bias"):
                m[f"Generator.decoders.{i}.basic_module.SingleConv{j}.conv.{p}"] = f"decoders.{i}.{ours}.{p}"
    m["Generator.final_conv.weight"] = "head.weight"
    m["Generator.final_conv.bias"] = "head.bias"
    return m


def read_para(path: Path | None, pth: Path) -> tuple[dict, str | None]:
    """DeepCAD-RT's settings: `path`, else para.yaml (or the one .yaml) next to the .pth; ({}, None) when none."""
    if path is None:
        cands = [pth.parent / "para.yaml"] + sorted(pth.parent.glob("*.yaml"))
        found = [c for c in dict.fromkeys(cands) if c.is_file()]
        if not found or (found[0].name != "para.yaml" and len(found) > 1):
            return {}, None
        path = found[0]
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: unreadable DeepCAD-RT settings ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: DeepCAD-RT settings should be a YAML mapping")
    para = {}
    for k in PARA_KEYS:
        if k in data:
            v = data[k]
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v == v:
                raise UserError(f"{path}: {k} should be a number, got {v!r}")
            para[k] = v
    return para, str(path)


def import_pth(path, *, pre: int | None = None, post: int | None = None, omission: int | None = None,
               para_path=None, norm_mean: float | None = None, norm_std: float | None = None) -> Imported:
    """A DeepCAD-RT .pth as a cad3d card + state dict. UserError for anything not importable."""
    path = Path(path)
    state = read_state_dict(path)
    f_maps = f_maps_of(state, path)
    m = mapping(len(f_maps))
    extra = sorted(set(state) - set(m))
    missing = sorted(set(m) - set(state))
    if extra or missing:
        raise UserError(f"{path}: DeepCAD-RT keys do not match its 3D U-Net ({len(missing)} missing, e.g. "
                        f"{missing[:2]}; {len(extra)} unexpected, e.g. {extra[:2]}); normalisation layers are not supported")
    para, para_file = read_para(Path(para_path) if para_path else None, path)
    notes = []
    if "fmap" in para and int(para["fmap"]) != f_maps[0]:
        raise UserError(f"{para_file}: fmap {para['fmap']} but the weights have {f_maps[0]} feature maps")
    d = registry.defaults("cad3d")
    if pre is None or post is None:
        notes.append(f"window: cad3d's odd/even window with {d['pre'] if pre is None else pre} before, "
                     f"{d['post'] if post is None else post} after (the network is convolutional in time; DeepCAD-RT "
                     f"ran sub-stacks of {para.get('patch_t', 'patch_t')} frames); choose with --pre/--post")
    try:
        card = registry.make_card("cad3d", pre=pre, post=post, omission=omission)
    except ValueError as exc:
        raise UserError(f"window: {exc}") from None
    card.params = {"preset": "rt" if f_maps == [16, 32, 64, 128] else "deepcad", "f_maps": f_maps}
    scale = float(para.get("scale_factor", 1))
    if not scale > 0:
        raise UserError(f"{para_file}: scale_factor must be > 0 (got {scale})")
    norm_note = given_norm(card, norm_mean, norm_std)
    if norm_note is None:
        card.norm_mean, card.norm_std = 0.0, scale
        norm_note = (f"DeepCAD-RT trains on raw / scale_factor ({scale:g}): the card holds mean 0, std {scale:g}, so "
                     "--norm card feeds the network what it was trained on (DeepCAD-RT also subtracts the movie's mean "
                     "at inference)")
    notes.append("normalisation: " + norm_note)
    if not para_file:
        notes.append("no DeepCAD-RT para.yaml next to the weights: patch settings unknown (give --deepcad-yaml)")
    ours = {m[k]: v for k, v in state.items()}
    net = registry.build_network(card)
    try:
        net.load_state_dict(ours, strict=True)
    except RuntimeError as exc:
        raise UserError(f"{path}: weights do not fit cad3d: {str(exc).splitlines()[0]}") from None
    card.origin = {
        "tool": "DeepCAD-RT",
        "network": "Network_3D_Unet (UNet3D, DoubleConv 'cr')",
        "reference": "Li et al., Nat Methods 18, 1395-1400 (2021); Nat Biotechnol 41, 282-292 (2023); "
                     "github.com/cabooster/DeepCAD-RT",
        **describe_file(path),
        "format": "PyTorch state dict",
        "settings_file": Path(para_file).name if para_file else None,
        "patch": {k: para[k] for k in PARA_KEYS if k in para},
        "f_maps": f_maps,
        "window": {"pre": card.pre, "post": card.post, "omission": card.omission,
                   "rule": "odd/even Noise2Noise: inputs at odd offsets, prediction read at offset -(omission+1)"},
        "normalisation": norm_note,
    }
    return Imported(card, net.state_dict(), notes)
