"""Per-movie normalisation, done the same way offline and live.

Both paths call these two functions, so a streamed frame and a file frame pass
through identical float32 arithmetic (the "streaming equals offline" rule).
"""

from __future__ import annotations

import numpy as np


def normalise(frames: np.ndarray, mean: float, std: float, out: np.ndarray | None = None) -> np.ndarray:
    """(frames - mean) / std in float32, into `out` when given."""
    out = np.subtract(frames, np.float32(mean), out=out, dtype=np.float32, casting="unsafe")
    out *= np.float32(1.0 / std)
    return out


def denormalise(pred: np.ndarray, mean: float, std: float, out: np.ndarray | None = None) -> np.ndarray:
    """pred * std + mean in float32, into `out` when given."""
    out = np.multiply(pred, np.float32(std), out=out, dtype=np.float32, casting="unsafe")
    out += np.float32(mean)
    return out
