"""Random-initialised checkpoints of every exportable architecture, for export tests."""

from __future__ import annotations

import importlib.util

import torch

from livedenoise.models.card import ModelCard
from livedenoise.models.checkpoint import save_checkpoint
from livedenoise.models.registry import ARCHS, arch_module


def arch_present(arch: str) -> bool:
    return importlib.util.find_spec(ARCHS[arch]) is not None


def make_checkpoint(path, arch="interp2d", preset="lite", pre=4, post=1, omission=0, frame_shape=None,
                    mean=70.0, std=25.0, seed=0):
    """Save a random-weight checkpoint (torch.manual_seed(seed)) and return its path."""
    mod = arch_module(arch)
    if arch == "classic":
        card = mod.classic_card(preset, pre=pre, post=post, sigma_xy=1.0)
        card.norm_mean, card.norm_std, card.frame_shape = mean, std, frame_shape
    else:
        card = ModelCard(arch, mod.preset_params(preset), "2p", pre, post, omission,
                         list(mod.window(pre, post, omission).offsets), frame_shape=frame_shape,
                         norm_mean=mean, norm_std=std)
    torch.manual_seed(seed)
    return save_checkpoint(path, card, mod.build(card).state_dict())


# (id, arch, preset, pre, post, omission, frame shape): small frames keep tests fast
MODELS = [
    ("lite-causal", "interp2d", "lite", 6, 0, 0, (32, 40)),
    ("lite-shortlag", "interp2d", "lite", 4, 2, 1, (36, 32)),
    ("fast-default", "interp2d", "fast", 8, 1, 0, (40, 52)),
    ("di-causal", "interp2d", "di", 3, 0, 0, (32, 32)),
    ("di-shortlag", "interp2d", "di", 2, 1, 0, (32, 32)),
    ("cad3d-causal", "cad3d", "rt", 8, 0, 0, (32, 32)),
    ("cad3d-shortlag", "cad3d", "rt", 8, 1, 0, (24, 40)),
    ("classic-exp", "classic", "exp", 6, 0, 0, (32, 32)),
]
