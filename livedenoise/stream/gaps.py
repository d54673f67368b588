"""The one gap and restart policy, live and offline, imaging and ephys.

Frames and samples carry the source's own counter (ScanImage `frameNumbers` or
the wire protocol's `frame`; Open Ephys `sample_numbers` or the ZMQ Interface's
`sample_num`). Where the next counter value is not the expected one:

- **gap** (it jumps forward: frames dropped upstream, samples missing from a
  file): the current segment ends there and is finished with the
  end-of-recording edge rule; a new segment starts at the received value. No
  frame or sample is invented: windows never cross the gap, the raw recording
  holds exactly what was received, and every output carries its own counter.
- **restart** (it falls back: the acquisition was restarted or the counter
  reset): the same, counted as a restart rather than a gap.
- **jump** (it jumps forward by more than the caller's `max_gap`, e.g. more
  frames than the ring holds, or a sample number from another recording): a
  new acquisition starts at the received value (new files live); nothing is
  allocated or counted in proportion to the jump, and it is not counted as
  dropped frames or samples (counters count only what was received).
- **continue**: the expected value.

A file whose counters have gaps is therefore denoised segment by segment, exactly
as the live service denoises the same data arriving with the same counters.
"""

from __future__ import annotations

from enum import Enum

import numpy as np


class Step(str, Enum):
    CONTINUE = "continue"
    GAP = "gap"
    RESTART = "restart"
    JUMP = "jump"


def classify(expected: int | None, got: int, max_gap: int | None = None) -> Step:
    """What a counter value `got` means when `expected` was next (None: nothing seen yet).

    max_gap: the largest forward gap that is still a gap in the same
    acquisition; a larger one is a JUMP (None: no limit).
    """
    if expected is None or got == expected:
        return Step.CONTINUE
    if got < expected:
        return Step.RESTART
    return Step.JUMP if max_gap is not None and got - expected > max_gap else Step.GAP


def segments(counters: np.ndarray) -> list[tuple[int, int]]:
    """[(start, stop)) position ranges of a counter array (e.g. `sample_numbers`) between gaps and restarts.

    Position i starts a new segment when counters[i] != counters[i - 1] + 1.
    An empty array gives no segment.
    """
    c = np.asarray(counters, np.int64)
    if c.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(c) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [c.size]])
    return [(int(a), int(b)) for a, b in zip(starts, stops)]
