"""Architecture names -> modules that build networks and windows.

Every architecture module exposes ``ARCH``, ``PRESETS``, ``preset_params(preset)``,
``window(pre, post, omission) -> WindowSpec`` and ``build(card) -> nn.Module``.
Every network maps a normalised window (B, C, *frame) to the normalised
prediction of the centre frame (B, 1, *frame).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from livedenoise.errors import UserError

ARCHS: dict[str, str] = {
    "interp2d": "livedenoise.models.nets.interp2d",
    "cad3d": "livedenoise.models.nets.cad3d",
    "classic": "livedenoise.models.nets.classic",
    "interp-ephys": "livedenoise.models.nets.interp_ephys",
    "block-ephys": "livedenoise.models.nets.block_ephys",
}


def arch_module(arch: str) -> ModuleType:
    if arch not in ARCHS:
        raise UserError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    try:
        return importlib.import_module(ARCHS[arch])
    except ModuleNotFoundError as exc:
        if exc.name == ARCHS[arch]:
            raise UserError(f"architecture {arch!r} is not available in this build of livedenoise") from None
        raise


def min_frames(card) -> int:
    """Fewest frames (or samples) a recording must have for this model: the one length rule.

    `train`, `denoise` and `serve` all ask this function, so a movie one of them
    accepts is accepted by the others. An architecture module may declare
    ``min_frames(card)``; otherwise a window of input offsets needs the target
    plus one usable neighbour (2), and the edge rule of `WindowSpec.source_indices`
    supplies the rest of the window.
    """
    mod = arch_module(card.arch)
    if hasattr(mod, "min_frames"):
        return int(mod.min_frames(card))
    return 2


def check_length(card, n: int, what: str) -> None:
    """UserError naming the rule when `what` (e.g. "movie.tif") has fewer than `min_frames(card)` frames."""
    need = min_frames(card)
    if n < need:
        unit = "samples" if card.modality == "ephys" else "frames"
        raise UserError(f"{what} has {n} {unit} but this {card.arch} model needs at least {need}; "
                        "use a longer recording or a model with a smaller window")


def build_network(card):
    """The torch module for a card, with freshly initialised weights."""
    return arch_module(card.arch).build(card)


def describe_receptive_field(card) -> dict:
    """Receptive field and lag of a card's model.

    Returns {"arch", "spatial": [h, w] pixels across (upper bound), "temporal_span":
    [first offset, last offset], "temporal_frames", "inputs", "lag", "uses_target"}.
    The spatial extent comes from the arch module's ``spatial_extent(card)`` when it
    has one (filters with no network to ask), else the network's
    ``spatial_receptive_field()``; the rest from the card's window.
    """
    mod = arch_module(card.arch)
    if hasattr(mod, "spatial_extent"):
        spatial = list(mod.spatial_extent(card))
    else:
        net = mod.build(card)
        rf = int(net.spatial_receptive_field()) if hasattr(net, "spatial_receptive_field") else None
        spatial = [rf, rf] if rf is not None else None
    first, last = card.window.span
    return {
        "arch": card.arch,
        "spatial": spatial,
        "temporal_span": [first, last],
        "temporal_frames": last - first + 1,
        "inputs": len(card.offsets),
        "lag": card.lag,
        "uses_target": card.window.uses_target,
    }
