"""Which input frames a model sees for output frame t, offline and live alike.

A window is a set of frame offsets relative to the frame being predicted plus
an `omission` band: frames with 0 < |j - t| <= omission are never inputs.
Offset 0 (the frame itself) is used only by classic filters and by blind-spot
models whose network hides the predicted voxel itself (`fmri-blind`), never
by a self-supervised model that reads the whole frame. Lag is the furthest future offset used.

Edge policy (the same offline and streaming, so both give the same frames):
for output t the usable frames are 0..H with H = t + lag, capped at the last
frame once the acquisition has ended, minus the hidden band. An offset whose
frame is unusable is first mirrored across t (DeepInterpolation's reflection),
and if that is unusable too it takes the nearest usable frame. When no frame
is usable at all (a causal model's very first frame) there is no prediction and
the raw frame is passed through.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WindowSpec:
    offsets: tuple[int, ...]
    omission: int = 0
    blind: bool = False
    """A blind-spot window (`fmri-blind`): offset 0 is frame t read with its predicted sample hidden by the
    network, so no other offset may ever resolve to frame t (at the edges, where the rule below would reflect
    or clamp onto t, it takes another usable frame; with none, there is no prediction: passthrough)."""

    def __post_init__(self) -> None:
        if self.blind and 0 not in self.offsets:
            raise ValueError("a blind-spot window reads frame t (offset 0) with its sample hidden; offset 0 is missing")
        if not self.offsets:
            raise ValueError("a window needs at least one input offset")
        if self.omission < 0:
            raise ValueError("omission must be >= 0")
        if 0 in self.offsets and self.omission:
            raise ValueError("a window that uses the frame itself (offset 0) cannot hide neighbours")
        hidden = [o for o in self.offsets if o != 0 and abs(o) <= self.omission]
        if hidden:
            raise ValueError(f"offsets {hidden} fall inside the hidden band +-{self.omission}")

    @classmethod
    def interp(cls, pre: int, post: int, omission: int = 0) -> "WindowSpec":
        """DeepInterpolation window: `pre` frames before and `post` after, `omission` hidden each side."""
        if pre < 0 or post < 0 or pre + post == 0:
            raise ValueError(f"need pre >= 0, post >= 0 and pre + post >= 1 (got pre={pre}, post={post})")
        past = tuple(range(-(omission + pre), -omission))
        future = tuple(range(omission + 1, omission + post + 1))
        return cls(past + future, omission)

    @property
    def uses_target(self) -> bool:
        """True for classic filters, which may read the frame they filter, and blind-spot models (`fmri-blind`)."""
        return 0 in self.offsets

    @property
    def size(self) -> int:
        return len(self.offsets)

    @property
    def lag(self) -> int:
        """Frames of delay: output t is ready once frame t + lag exists."""
        return max(0, max(self.offsets))

    @property
    def span(self) -> tuple[int, int]:
        """Temporal receptive field as (first offset, last offset)."""
        return min(self.offsets), max(self.offsets)

    def source_indices(self, t: int, last: int | None = None) -> np.ndarray | None:
        """Frame indices feeding output `t`, or None when no frame may be used.

        `last` is the index of the final frame of a finished acquisition (or
        file); None while frames keep coming.
        """
        horizon = t + self.lag if last is None else min(last, t + self.lag)
        past_hi = min(t if self.uses_target and not self.blind else t - self.omission - 1, horizon)
        fut_lo = t + self.omission + 1
        has_past = past_hi >= 0
        has_future = fut_lo <= horizon
        if not (has_past or has_future):
            return None

        def usable(j: int) -> bool:
            return (0 <= j <= past_hi) or (fut_lo <= j <= horizon)

        out = np.empty(len(self.offsets), dtype=np.int64)
        for k, o in enumerate(self.offsets):
            j = t + o
            if o == 0:  # the frame itself (filters; blind-spot models, which hide its sample)
                out[k] = t
                continue
            if not usable(j):
                j = t - o if usable(t - o) else self._nearest(j, past_hi, fut_lo, horizon)
            out[k] = j
        return out

    @staticmethod
    def _nearest(j: int, past_hi: int, fut_lo: int, horizon: int) -> int:
        best = None
        if past_hi >= 0:
            best = min(max(j, 0), past_hi)
        if fut_lo <= horizon:
            cand = min(max(j, fut_lo), horizon)
            if best is None or abs(cand - j) < abs(best - j):
                best = cand
        assert best is not None
        return best
