import numpy as np
import pytest

from livedenoise.stream.ring import FrameRing
from livedenoise.stream.stats import LatencyHistogram


def img(v):
    return np.full((2, 3), v, np.int16)


def test_ring_holds_the_last_capacity_frames():
    r = FrameRing(4, (2, 3), "int16")
    for i in range(6):
        assert r.put(i, img(i), 100 + i, i / 30, float(i)) == 0
    assert (r.oldest, r.newest) == (2, 5)
    assert [int(r.get(i)[0, 0]) for i in range(2, 6)] == [2, 3, 4, 5]
    assert not r.holds(1) and r.holds(2)
    with pytest.raises(KeyError):
        r.get(1)


def test_skipped_indices_repeat_the_previous_frame_and_are_flagged():
    r = FrameRing(8, (2, 3), "int16")
    r.put(0, img(0), 10, 0.0, 0.0)
    assert r.put(3, img(3), 13, 0.1, 1.0) == 2
    assert [int(r.get(i)[0, 0]) for i in range(4)] == [0, 0, 0, 3]
    assert [bool(r.filled[r.slot(i)]) for i in range(4)] == [False, True, True, False]
    assert [int(r.frame_no[r.slot(i)]) for i in range(4)] == [10, 11, 12, 13]


def test_a_gap_longer_than_the_ring_fills_only_what_fits():
    r = FrameRing(4, (2, 3), "int16")
    r.put(0, img(7), 0, 0.0, 0.0)
    assert r.put(100, img(1), 100, 1.0, 1.0) == 99
    assert r.oldest == 97 and all(int(r.get(i)[0, 0]) == 7 for i in range(97, 100))
    assert int(r.get(100)[0, 0]) == 1


def test_indices_must_increase():
    r = FrameRing(4, (2, 3), "int16")
    r.put(0, img(0), 0, 0.0, 0.0)
    with pytest.raises(ValueError):
        r.put(0, img(0), 0, 0.0, 0.0)


def test_ring_memory_is_allocated_once():
    r = FrameRing(16, (8, 8), "uint16")
    buf = r.frames
    for i in range(100):
        r.put(i, np.full((8, 8), i, np.uint16), i, 0.0, 0.0)
    assert r.frames is buf


def test_latency_histogram_percentiles_are_close():
    h = LatencyHistogram()
    rng = np.random.default_rng(0)
    x = rng.uniform(5, 50, 10_000)
    h.add_many(x)
    assert h.percentile(50) == pytest.approx(np.percentile(x, 50), rel=0.07)
    assert h.percentile(99) == pytest.approx(np.percentile(x, 99), rel=0.07)
    assert sum(h.as_dict()["counts"]) == 10_000
