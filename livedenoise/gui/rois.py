"""ROI traces: per-ROI rolling rings (`livedenoise.stream.ring.Ring`) of (t, frame, mean), filled for every frame.

Qt-free on purpose: the receiver threads call `RoiTraces.add` for every frame of
the selected (channel, plane) stream, so traces keep the stream's full time
resolution even though the display conflates to the newest frame. The GUI only
takes snapshots. ROIs are rectangles in pixel coordinates (rows y0:y1, columns
x0:x1 of the (H, W) image).
"""

from __future__ import annotations

import csv
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livedenoise.stream.protocols.frames import FrameHeader
from livedenoise.stream.ring import Ring


@dataclass(frozen=True)
class RectRoi:
    y0: int
    y1: int
    x0: int
    x1: int

    def clipped(self, shape: tuple[int, int]) -> "RectRoi | None":
        h, w = shape
        y0, y1 = max(0, min(self.y0, h)), max(0, min(self.y1, h))
        x0, x1 = max(0, min(self.x0, w)), max(0, min(self.x1, w))
        if y1 <= y0 or x1 <= x0:
            return None
        return RectRoi(y0, y1, x0, x1)


def _trace_ring(capacity: int) -> Ring:
    """One ROI's trace: the ROI mean per frame, with the frame's time and number as fields."""
    return Ring(capacity, (), np.float64, fields={"t": np.float64, "frame": np.int64})


def _ordered(ring: Ring) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(t, frame, mean) of every item the ring holds, oldest first (copies)."""
    slots = np.arange(ring.oldest, ring.end) % ring.capacity
    return ring.fields["t"][slots], ring.fields["frame"][slots], ring.data[slots]


class RoiTraces:
    """Rolling per-ROI mean traces of one stream (raw or denoised); thread-safe."""

    def __init__(self, capacity: int = 30_000):
        self.capacity = capacity
        self._lock = threading.Lock()
        self._rois: dict[int, RectRoi] = {}
        self._rings: dict[int, Ring] = {}
        self._stream: tuple[int, int] | None = None

    # --- GUI side -------------------------------------------------------
    def set_stream(self, stream: tuple[int, int] | None) -> None:
        """Which (channel, plane) the traces follow; changing it clears the traces."""
        with self._lock:
            if stream != self._stream:
                self._stream = stream
                self._rings = {k: _trace_ring(self.capacity) for k in self._rois}

    def set_roi(self, roi_id: int, roi: RectRoi) -> None:
        """Add or move an ROI; a moved ROI starts a fresh trace."""
        with self._lock:
            if self._rois.get(roi_id) != roi:
                self._rois[roi_id] = roi
                self._rings[roi_id] = _trace_ring(self.capacity)

    def remove_roi(self, roi_id: int) -> None:
        with self._lock:
            self._rois.pop(roi_id, None)
            self._rings.pop(roi_id, None)

    def clear(self) -> None:
        with self._lock:
            self._rings = {k: _trace_ring(self.capacity) for k in self._rois}

    def roi_ids(self) -> list[int]:
        with self._lock:
            return sorted(self._rois)

    def snapshot(self, roi_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(t seconds, frame numbers, ROI means), oldest first; empty if unknown."""
        with self._lock:
            ring = self._rings.get(roi_id)
            if ring is None:
                e = np.zeros(0)
                return e, np.zeros(0, np.int64), e
            return _ordered(ring)

    # --- receiver-thread side --------------------------------------------
    def add(self, header: FrameHeader, pixels: np.ndarray) -> None:
        if not self._rois:
            return
        with self._lock:
            if self._stream is None:
                self._stream = header.stream  # follow the first stream seen until told otherwise
            elif header.stream != self._stream:
                return
            for roi_id, roi in self._rois.items():
                r = roi.clipped(pixels.shape)
                if r is None:
                    continue
                value = float(pixels[r.y0:r.y1, r.x0:r.x1].mean(dtype=np.float64))
                self._rings[roi_id].append(np.array([value]), t=header.t, frame=header.frame)


def write_traces_csv(path: str | Path, raw: RoiTraces | None, denoised: RoiTraces | None) -> int:
    """Long-format CSV `roi,frame,t,raw,denoised`, raw and denoised joined on frame number.

    Returns the number of rows written. A side missing for a frame is left empty.
    """
    ids = sorted(set(raw.roi_ids() if raw else []) | set(denoised.roi_ids() if denoised else []))
    rows = 0
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["roi", "frame", "t", "raw", "denoised"])
        for roi_id in ids:
            table: dict[int, list] = {}
            for col, src in ((3, raw), (4, denoised)):
                if src is None:
                    continue
                t, fr, v = src.snapshot(roi_id)
                for ti, fi, vi in zip(t.tolist(), fr.tolist(), v.tolist()):
                    row = table.setdefault(fi, [roi_id, fi, ti, "", ""])
                    row[col] = repr(vi)
            for fi in sorted(table):
                w.writerow(table[fi])
                rows += 1
    return rows
