"""A hand-over between two threads, bounded in bytes: the receiver never blocks, memory never grows unbounded.

The sidecar's receiver thread hands assembled blocks to its engine thread.
The engine sheds what is more than `max_backlog_s` behind (recorded raw, not
denoised), but if the engine thread cannot even record (a stalled disk, a
stuck engine call) the queue would grow with every block received. This
queue holds at most `max_bytes` of payload: a block that does not fit is
refused, counted (`lost_items`, `lost_samples`) and logged once per episode;
control items (gaps, restarts, "idle") weigh nothing and always pass, and
the sample numbers of the next accepted block show the hole as a gap
downstream. `put` never blocks, so the receiver keeps reading its socket
and answering heartbeats.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from typing import Any, Callable

log = logging.getLogger(__name__)


class BoundedHandover:
    """FIFO of items between one producer and one consumer thread, bounded by the items' weight in bytes.

    max_bytes: the most payload held at once (> 0). weigh(item) -> (bytes, samples): an item's payload and
    the samples it carries (0, 0 for control items, which are never refused). Raises ValueError for
    max_bytes <= 0. `get`/`get_nowait`/`empty`/`qsize` follow `queue.Queue`.
    """

    def __init__(self, max_bytes: int, weigh: Callable[[Any], tuple[int, int]]):
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._weigh = weigh
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self.bytes = 0
        """Payload held now."""
        self.peak_bytes = 0
        self.lost_items = 0
        """Items refused because the queue was full."""
        self.lost_samples = 0
        self._full = False

    def put(self, item: Any) -> bool:
        """Append `item`; False (and counted) when its payload does not fit. Never blocks."""
        nbytes, samples = self._weigh(item)
        with self._cond:
            if nbytes and self.bytes + nbytes > self.max_bytes:
                self.lost_items += 1
                self.lost_samples += samples
                if not self._full:
                    self._full = True
                    log.error("the engine thread is %d MB behind (limit %d MB): received blocks are lost "
                              "until it catches up (counted as lost_samples)", self.bytes >> 20, self.max_bytes >> 20)
                return False
            self._full = False
            self._items.append((item, nbytes))
            self.bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.bytes)
            self._cond.notify()
            return True

    def get(self, timeout: float | None = None) -> Any:
        """The oldest item; waits up to `timeout` s (None: forever). Raises queue.Empty."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise queue.Empty
                self._cond.wait(left)
            item, nbytes = self._items.popleft()
            self.bytes -= nbytes
            return item

    def get_nowait(self) -> Any:
        return self.get(timeout=0)

    def empty(self) -> bool:
        with self._cond:
            return not self._items

    def qsize(self) -> int:
        with self._cond:
            return len(self._items)
