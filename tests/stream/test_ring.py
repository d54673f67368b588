import numpy as np
import pytest

from livedenoise.stream.ring import Ring
from livedenoise.stream.stats import LatencyHistogram


def img(v):
    return np.full((2, 3), v, np.int16)


FIELDS = {"counter": np.int64, "time": np.float64, "arrival": np.float64}


def test_ring_holds_the_last_capacity_frames():
    r = Ring(4, (2, 3), "int16", FIELDS)
    for i in range(6):
        assert r.put(img(i), counter=100 + i, time=i / 30, arrival=float(i)) == i
    assert (r.oldest, r.newest) == (2, 5)
    assert [int(r.item(i)[0, 0]) for i in range(2, 6)] == [2, 3, 4, 5]
    assert [int(r.field("counter", i)) for i in range(2, 6)] == [102, 103, 104, 105]
    assert not r.holds(1) and r.holds(2)
    with pytest.raises(KeyError):
        r.item(1)
    with pytest.raises(KeyError):
        r.take([1, 2])


def test_nothing_is_invented_for_missing_frames():
    """The ring holds only what was put: a frame that never arrived has no index (gaps are the pipeline's segments)."""
    r = Ring(8, (2, 3), "int16", FIELDS)
    r.put(img(0), counter=10)
    r.put(img(3), counter=13)
    assert r.end == 2 and [int(r.field("counter", i)) for i in range(2)] == [10, 13]
    with pytest.raises(KeyError):
        r.item(2)


def test_append_and_put_agree():
    a, b = Ring(5, (2, 3), "int16", FIELDS), Ring(5, (2, 3), "int16", FIELDS)
    block = np.stack([img(i) for i in range(7)])
    a.append(block, counter=np.arange(7))
    for i in range(7):
        b.put(block[i], counter=i)
    assert (a.oldest, a.end) == (b.oldest, b.end) == (2, 7)
    np.testing.assert_array_equal(a.take(np.arange(2, 7)), b.take(np.arange(2, 7)))
    np.testing.assert_array_equal(a.fields["counter"], b.fields["counter"])


def test_ring_memory_is_allocated_once():
    r = Ring(16, (8, 8), "uint16", FIELDS)
    buf = r.data
    for i in range(100):
        r.put(np.full((8, 8), i, np.uint16), counter=i, time=0.0, arrival=0.0)
    assert r.data is buf


def test_latency_histogram_percentiles_are_close():
    h = LatencyHistogram()
    rng = np.random.default_rng(0)
    x = rng.uniform(5, 50, 10_000)
    h.add_many(x)
    assert h.percentile(50) == pytest.approx(np.percentile(x, 50), rel=0.07)
    assert h.percentile(99) == pytest.approx(np.percentile(x, 99), rel=0.07)
    assert sum(h.as_dict()["counts"]) == 10_000
