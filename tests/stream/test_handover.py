"""The receiver -> engine hand-over holds a bounded number of bytes, never blocks, and counts what it refuses."""

import queue
import threading

import numpy as np
import pytest

from livedenoise.stream.handover import BoundedHandover


def _weigh(item):
    if isinstance(item, np.ndarray):
        return item.nbytes, item.shape[-1]
    return 0, 0


def test_blocks_beyond_the_byte_limit_are_refused_and_counted_while_control_items_pass():
    q = BoundedHandover(3 * 4000, _weigh)
    blocks = [np.full((1, 1000), k, np.float32) for k in range(5)]  # 4000 bytes each
    accepted = [q.put(b) for b in blocks]
    assert accepted == [True, True, True, False, False]
    assert q.put("idle") is True  # a control item weighs nothing: never refused
    assert (q.bytes, q.lost_items, q.lost_samples, q.qsize()) == (12000, 2, 2000, 4)
    assert q.get(timeout=1)[0, 0] == 0  # FIFO
    assert q.bytes == 8000
    assert q.put(blocks[3]) is True  # room again
    out = [q.get_nowait() for _ in range(4)]
    assert [o if isinstance(o, str) else int(o[0, 0]) for o in out] == [1, 2, "idle", 3]
    assert q.empty() and q.bytes == 0 and q.peak_bytes == 12000


def test_get_waits_for_an_item_from_another_thread_and_times_out_when_none_comes():
    q = BoundedHandover(1 << 20, _weigh)
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    threading.Timer(0.05, q.put, args=(np.zeros((2, 10), np.float32),)).start()
    assert q.get(timeout=30).shape == (2, 10)


def test_a_limit_that_is_not_positive_is_refused():
    with pytest.raises(ValueError, match="max_bytes"):
        BoundedHandover(0, _weigh)
