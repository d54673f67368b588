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
    frame_numbers: np.ndarray | None = None
    """The file's own counter of each frame, (T,) int64, where the file has one: ScanImage
    `frameNumbers`, the `frame` dataset of a `serve --record` file. None otherwise (then
    frames are taken as consecutive). -1 marks a frame whose number is missing."""
    frame_step: int = 1
    """Increment of `frame_numbers` between consecutive frames of this movie (ScanImage
    counts every plane of a volume, so one plane's frames step by the frames per volume)."""

    def counters(self) -> np.ndarray | None:
        """`frame_numbers` when the file gives one for every frame, else None.

        Offline denoising passes them to the pipeline, so a jump in them splits the
        movie into segments exactly as the live service splits the same stream
        (stream/gaps.py).
        """
        fn = self.frame_numbers
        if fn is None or len(fn) != len(self) or (len(fn) and int(np.min(fn)) < 0):
            return None
        return np.asarray(fn, np.int64)

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
