"""Moving a model's weights to another window, so `train --init` can fine-tune it into a shorter-lag one.

A DeepInterpolation-style network (`interp2d`, `interp-ephys-di`) reads the
window's frames as the input channels of its first convolution, one channel
per offset. For a new window, each old offset's first-layer weights are
added to the channel of the nearest new offset in time (ties go to the past
one), and a new offset no old one folds onto starts at zero. A signal that
is constant over the folded frames then gives exactly the old first-layer
response, so the start of fine-tuning is the old model's behaviour with the
dropped future frames replaced by the nearest frames still available; all
later layers are unchanged. Example: DeepInterpolation's 30 + 30 window
(1 s of lag at 30 Hz) to 30 + 1: the weights of frames t+2..t+30 fold onto
t+1, and `train --init` adapts the rest.

A `cad3d` network is convolutional in time: its weights serve any window, and
only the read position (from the new card) changes.

An architecture opts in by declaring ``WINDOW_INPUT`` (the state-dict key of
the weight whose dim 1 indexes the window's offsets) or ``WINDOW_FREE = True``
in its module; others refuse a change of window.
"""

from __future__ import annotations

import numpy as np
import torch

from livedenoise.models import registry


def fold_map(old: list[int], new: list[int]) -> np.ndarray:
    """For each old offset, the index of the new offset it folds onto (nearest in time, ties to the past one)."""
    new_arr = np.asarray(new, np.int64)
    out = []
    for o in old:
        d = np.abs(new_arr - int(o))
        best = np.flatnonzero(d == d.min())
        out.append(int(best[np.argmin(new_arr[best])]))
    return np.asarray(out, np.int64)


def fold_weight(weight: torch.Tensor, old: list[int], new: list[int]) -> torch.Tensor:
    """(out, len(old), ...) first-layer weight -> (out, len(new), ...) by `fold_map`."""
    if weight.shape[1] != len(old):
        raise ValueError(f"first-layer weight has {weight.shape[1]} input channels, the window {len(old)} offsets")
    out = weight.new_zeros((weight.shape[0], len(new)) + tuple(weight.shape[2:]))
    for i, j in enumerate(fold_map(old, new)):
        out[:, j] += weight[:, i]
    return out


def retarget(old_card, new_card, state: dict) -> tuple[dict, str]:
    """`state` (weights for `old_card`'s window) for `new_card`'s window, and one line saying how.

    ValueError when the architectures differ or the architecture cannot change window.
    """
    if old_card.arch != new_card.arch:
        raise ValueError(f"cannot move {old_card.arch} weights to a {new_card.arch} model")
    same = list(old_card.offsets) == list(new_card.offsets) and int(old_card.omission) == int(new_card.omission)
    if same:
        return state, "same window"
    mod = registry.arch_module(old_card.arch)
    if getattr(mod, "WINDOW_FREE", False):
        return state, "the network is convolutional in time: same weights, new read position"
    key = getattr(mod, "WINDOW_INPUT", None)
    if key is None or key not in state:
        raise ValueError(f"{old_card.arch} cannot change window (offsets {list(old_card.offsets)} -> "
                         f"{list(new_card.offsets)}); fine-tune with the checkpoint's own window")
    out = dict(state)
    out[key] = fold_weight(state[key], list(old_card.offsets), list(new_card.offsets))
    folded = sorted(set(old_card.offsets) - set(new_card.offsets))
    return out, (f"first-layer weights of offsets {_ranges(folded)} folded onto the nearest kept offsets"
                 if folded else "new offsets start at zero weight")


def _ranges(values: list[int]) -> str:
    if not values:
        return "none"
    parts, start, prev = [], values[0], values[0]
    for v in values[1:] + [None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        parts.append(f"{start:+d}" if start == prev else f"{start:+d}..{prev:+d}")
        if v is not None:
            start = prev = v
    return ", ".join(parts)
