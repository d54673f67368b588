import numpy as np
import pytest

from livedenoise.models.window import WindowSpec


@pytest.mark.parametrize("pre,post,omission", [(8, 0, 0), (8, 1, 0), (4, 2, 1), (30, 30, 1), (1, 0, 2)])
def test_window_never_uses_predicted_frame_or_frames_past_lag(pre, post, omission):
    spec = WindowSpec.interp(pre, post, omission)
    n = 50
    for last in (None, n - 1):
        for t in range(n):
            idx = spec.source_indices(t, last)
            if idx is None:
                continue
            assert np.all(np.abs(idx - t) > omission)
            assert np.all(idx <= t + spec.lag)
            assert np.all(idx >= 0)
            if last is not None:
                assert np.all(idx <= last)


def test_interior_window_is_plain_offsets():
    spec = WindowSpec.interp(3, 2, 1)
    assert spec.offsets == (-4, -3, -2, 2, 3)
    assert spec.lag == 3
    assert list(spec.source_indices(10)) == [6, 7, 8, 12, 13]


def test_causal_lag_is_zero_and_first_frame_has_no_context():
    spec = WindowSpec.interp(4, 0, 0)
    assert spec.lag == 0
    assert spec.source_indices(0) is None
    assert list(spec.source_indices(1)) == [0, 0, 0, 0]


def test_end_of_file_mirrors_future_into_past():
    spec = WindowSpec.interp(2, 2, 0)
    assert list(spec.source_indices(9, last=9)) == [7, 8, 8, 7]


def test_streaming_and_offline_indices_agree_away_from_the_end():
    spec = WindowSpec.interp(5, 1, 0)
    for t in range(40):
        assert np.array_equal(spec.source_indices(t), spec.source_indices(t, last=100))


def test_hidden_offsets_are_rejected():
    with pytest.raises(ValueError):
        WindowSpec((-1, 1), omission=1)


def test_classic_window_may_use_the_frame_itself_but_never_the_future():
    spec = WindowSpec((-2, -1, 0))
    assert spec.uses_target and spec.lag == 0
    assert list(spec.source_indices(0)) == [0, 0, 0]
    assert list(spec.source_indices(5)) == [3, 4, 5]
