import numpy as np
import pytest

from livedenoise.errors import UserError
from livedenoise.export import parity
from livedenoise.models.card import ModelCard
from livedenoise.models.norm import normalise
from livedenoise.models.nets import interp2d
def card(pre=3, post=1, omission=0):
    return ModelCard("interp2d", interp2d.preset_params("lite"), "2p", pre, post, omission,
                     list(interp2d.window(pre, post, omission).offsets), norm_mean=10.0, norm_std=4.0)


def test_relative_error_is_against_the_largest_reference_value():
    ref = np.array([[0.0, 2.0], [-4.0, 1e-9]])
    got = ref + np.array([[0.0, 0.0], [0.0, 0.004]])
    max_abs, max_rel, ref_max = parity.compare(ref, got)
    assert max_abs == pytest.approx(0.004)
    assert ref_max == 4.0
    assert max_rel == pytest.approx(0.001)  # not 0.004 / 1e-9
    assert parity.compare(ref, ref * np.nan)[1] == float("inf")


def test_limits():
    assert parity.limit_for("onnx", "fp32") == 1e-4
    assert parity.limit_for("tensorrt", "fp16") == 1e-2
    assert parity.limit_for("tensorrt", "fp16", 5e-2) == 5e-2
    assert parity.limit_for("tensorrt", "int8") == 1e-1


def test_windows_from_a_movie_file_match_the_window_spec(tmp_path):
    rng = np.random.default_rng(0)
    movie = (100 + 10 * rng.standard_normal((40, 20, 24))).astype(np.int16)
    np.save(tmp_path / "mov.npy", movie)
    c = card()
    w, source = parity.movie_windows(c, (16, 16), tmp_path / "mov.npy", n=4)
    assert w.shape == (4, c.n_inputs, 16, 16) and w.dtype == np.float32
    assert "mov.npy" in source
    # each window is normalised frames t+offset of a centre crop of the movie
    a = 40 // 2 - (c.window.span[1] - c.window.span[0] + 1 + 4) // 2
    crop = normalise(movie[:, 2:18, 4:20], c.norm_mean, c.norm_std)
    t0 = a + (-c.window.span[0])
    np.testing.assert_array_equal(w[0], crop[[t0 + o for o in c.offsets]])


def test_small_movie_is_refused(tmp_path):
    np.save(tmp_path / "tiny.npy", np.zeros((20, 8, 8), np.int16))
    with pytest.raises(UserError, match="smaller than the exported"):
        parity.movie_windows(card(), (16, 16), tmp_path / "tiny.npy")


def test_simulated_windows_without_a_movie():
    w, source = parity.movie_windows(card(), (16, 24), None, n=3)
    assert w.shape == (3, 4, 16, 24) and "simulated" in source
    assert np.isfinite(w).all() and w.std() > 0
