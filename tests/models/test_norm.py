import numpy as np
import pytest

from livedenoise.models.norm import estimate_norm


def test_estimate_norm_leaves_out_non_finite_samples():
    rng = np.random.default_rng(0)
    x = rng.normal(100.0, 5.0, (20, 16, 16)).astype(np.float32)
    clean_mean, clean_std = float(x.astype(np.float64).mean()), float(x.astype(np.float64).std())
    y = x.copy()
    y[:, 0, :] = np.nan
    y[3, 5:8, 5:8] = np.inf
    finite = y[np.isfinite(y)].astype(np.float64)
    mean, std = estimate_norm(y)
    assert mean == pytest.approx(finite.mean()) and std == pytest.approx(finite.std())
    assert mean == pytest.approx(clean_mean, abs=0.5) and std == pytest.approx(clean_std, rel=0.05)
    # chunked (one frame at a time) gives the same
    assert estimate_norm(iter(y)) == pytest.approx((mean, std))


def test_estimate_norm_of_all_nan_is_the_identity():
    assert estimate_norm(np.full((3, 4, 4), np.nan, np.float32)) == (0.0, 1.0)
