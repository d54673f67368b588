"""The `Movie` contract: a (frames, height, width) movie on disk, read in frame ranges.

Every reader (`livedenoise.io.readers` for TIFF / HDF5 / .npy,
`livedenoise.io.readers_scanimage` for ScanImage TIFFs) returns a subclass;
`open_movie` in `readers` picks the reader. Also the two helpers both readers
share: one-line error text and quiet tifffile logging.
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterator

import numpy as np


class Movie(ABC):
    """A (T, H, W) movie on disk, read in frame ranges."""

    path: Path
    shape: tuple[int, int, int]
    dtype: np.dtype
    memmapped: bool = False
    """True when reads come from a memory map (no file I/O until pages are touched)."""

    def __len__(self) -> int:
        return int(self.shape[0])

    @property
    def frame_shape(self) -> tuple[int, int]:
        return (int(self.shape[1]), int(self.shape[2]))

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    def _check_range(self, start: int, stop: int) -> tuple[int, int]:
        start, stop = int(start), int(stop)
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"frames {start}:{stop} outside 0:{len(self)} of {self.path}")
        return start, stop

    @abstractmethod
    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames start..stop-1 as a new (stop - start, H, W) array of `dtype`."""

    def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first frame index, frames) in consecutive pieces of at most `size` frames."""
        for a in range(0, len(self), size):
            yield a, self.read(a, min(len(self), a + size))

    def close(self) -> None:
        pass

    def __enter__(self) -> "Movie":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> str:
        t, h, w = self.shape
        return f"{self.path.name}: {t} frames of {h}x{w} {np.dtype(self.dtype).name}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


@contextlib.contextmanager
def quiet_tifffile():
    """tifffile logs multi-line warnings about broken files; we report one line ourselves."""
    log = logging.getLogger("tifffile")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]
