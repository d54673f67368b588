"""Replay a ScanImage TIFF as the acquisition stream the live user functions send.

`scanimage_acquisition(path)` returns the `start` metadata (the same keys the
MATLAB side sends: frame_rate, volume_rate, shape, channels, planes, z,
frame_step, zoom, dtype) and an iterator over (FrameHeader, pixels) in
acquisition order: every saved channel of every frame, planes de-interleaved
from the file's metadata, `frame` and `t` from each page's frameNumbers /
frameTimestamps_sec, flyback frames left out. Pixels are read lazily, one page
at a time (memory-mapped). `livedenoise replay` publishes them.

Sample types outside the protocol (int16 / uint16 / float32) are widened:
uint8 -> uint16, int8 -> int16, anything else -> float32.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from livedenoise.errors import UserError
from livedenoise.io.readers_scanimage import PageReader, ScanImageLayout, read_layout
from livedenoise.io.readers_scanimage import is_scanimage_tiff as _is_scanimage_tiff
from livedenoise.stream.protocols.frames import FrameHeader

SOURCE = "scanimage"

__all__ = ["is_scanimage_tiff", "scanimage_acquisition", "start_metadata"]


def is_scanimage_tiff(path: str | os.PathLike) -> bool:
    """True when `path` is a TIFF written by ScanImage."""
    return _is_scanimage_tiff(path)


def _wire_dtype(dtype: np.dtype) -> str:
    if dtype.kind == "i" and dtype.itemsize <= 2:
        return "int16"
    if dtype.kind == "u" and dtype.itemsize <= 2:
        return "uint16"
    return "float32"


def start_metadata(layout: ScanImageLayout) -> dict[str, Any]:
    """The `start` message of the acquisition recorded in `layout`."""
    return {
        "source": SOURCE,
        "frame_rate": layout.frame_rate,
        "volume_rate": layout.volume_rate,
        "shape": list(layout.shape),
        "channels": list(layout.channels),
        "published_channels": list(layout.channels),
        "planes": layout.planes,
        "z": list(layout.z),
        "frame_step": layout.stream_frame_step,
        "zoom": layout.zoom,
        "dtype": _wire_dtype(layout.dtype),
        "mode": "replay",
        "file": layout.path.name,
    }


def scanimage_acquisition(path: str | os.PathLike) -> tuple[dict[str, Any], Iterator[tuple[FrameHeader, np.ndarray]]]:
    """(start metadata, iterator of (header, pixels)) reproducing the recorded acquisition.

    Raises UserError (one line) for a missing file, a TIFF without ScanImage
    metadata, or an unreadable one; the iterator raises UserError if the file
    turns out truncated part-way.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist; check the path")
    layout = read_layout(path)
    meta = start_metadata(layout)
    return meta, _frames(layout)


def _frames(layout: ScanImageLayout) -> Iterator[tuple[FrameHeader, np.ndarray]]:
    ch_idx, planes, _ = layout.page_plan()
    wire = _wire_dtype(layout.dtype)
    shape = (int(layout.shape[0]), int(layout.shape[1]))
    reader = PageReader(layout)
    try:
        for p in range(layout.n_pages):
            plane = int(planes[p])
            if plane == 0:
                continue  # flyback frame
            frame = int(layout.frame_numbers[p])
            if frame < 0:  # no frameNumbers in the description: count frames instead
                frame = p // len(layout.channels) + 1
            t = float(layout.timestamps[p])
            if not np.isfinite(t):
                t = (frame - 1) / layout.frame_rate if layout.frame_rate > 0 else 0.0
            pixels = reader.read(p)
            if pixels.dtype != np.dtype(wire):
                pixels = pixels.astype(wire)
            header = FrameHeader(frame=frame, t=t, shape=shape, dtype=wire,
                                 channel=int(layout.channels[int(ch_idx[p])]), plane=plane,
                                 order="C", source=SOURCE)
            yield header, pixels
    finally:
        reader.close()
