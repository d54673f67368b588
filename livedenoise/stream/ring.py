"""Per-stream ring buffer of frames, indexed by position in the acquisition.

One `FrameRing` holds the most recent `capacity` frames of one (channel, plane)
stream of one acquisition. It is allocated once, when the acquisition's first
frame arrives, and never grows: writing frame i overwrites frame i - capacity.

Index i is the frame's position in the acquisition (first frame received = 0),
so the window arithmetic (`WindowSpec.source_indices`) is the same as for a
file. A skipped frame number (a frame dropped upstream) still gets its index:
by the documented default policy its slot repeats the nearest previous frame,
so windows stay regular; it is flagged as `filled` and never output.
"""

from __future__ import annotations

import numpy as np


class FrameRing:
    def __init__(self, capacity: int, shape: tuple[int, int], dtype: np.dtype | str):
        if capacity < 1:
            raise ValueError("ring capacity must be >= 1 frame")
        self.capacity = int(capacity)
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self.frames = np.zeros((self.capacity, *self.shape), self.dtype)
        self.index = np.full(self.capacity, -1, np.int64)
        """Acquisition index held by each slot (-1: empty)."""
        self.frame_no = np.zeros(self.capacity, np.int64)
        self.t = np.zeros(self.capacity, np.float64)
        self.arrival = np.zeros(self.capacity, np.float64)
        self.filled = np.zeros(self.capacity, bool)
        self.newest = -1
        """Highest index written so far (-1: none)."""

    @property
    def oldest(self) -> int:
        """Lowest index still held."""
        return max(0, self.newest - self.capacity + 1)

    def holds(self, i: int) -> bool:
        return 0 <= i <= self.newest and i >= self.newest - self.capacity + 1

    def slot(self, i: int) -> int:
        return i % self.capacity

    def put(self, i: int, pixels: np.ndarray, frame_no: int, t: float, arrival: float) -> int:
        """Write frame index `i` (> newest); returns how many skipped indices were filled.

        Indices between the previous newest and `i` are filled by repeating the
        previous frame (only the last `capacity` of them are materialised).
        """
        if i <= self.newest:
            raise ValueError(f"index {i} is not after the newest index {self.newest}")
        gap = i - self.newest - 1
        if gap and self.newest >= 0:
            prev = self.slot(self.newest)
            prev_no, prev_t, prev_arr = self.frame_no[prev], self.t[prev], self.arrival[prev]
            for j in range(max(self.newest + 1, i - self.capacity + 1), i):
                s = self.slot(j)
                if s != prev:
                    self.frames[s] = self.frames[prev]
                self.index[s] = j
                self.frame_no[s] = prev_no + (j - self.newest)
                self.t[s] = prev_t
                self.arrival[s] = prev_arr
                self.filled[s] = True
        s = self.slot(i)
        self.frames[s] = pixels
        self.index[s] = i
        self.frame_no[s] = frame_no
        self.t[s] = t
        self.arrival[s] = arrival
        self.filled[s] = False
        self.newest = i
        return gap

    def get(self, i: int) -> np.ndarray:
        """View of frame `i`; valid only while `holds(i)`."""
        s = self.slot(i)
        if self.index[s] != i:
            raise KeyError(f"frame index {i} is no longer in the ring (holds {self.oldest}..{self.newest})")
        return self.frames[s]
