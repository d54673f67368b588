import math

import numpy as np
import pytest

from livedenoise.sim import metrics
from livedenoise.io.readers import open_movie


@pytest.fixture
def clean():
    rng = np.random.default_rng(0)
    t, h, w = 300, 16, 20
    base = rng.uniform(50, 150, size=(h, w))
    tt = np.arange(t)[:, None, None]
    return (base + 30 * np.sin(2 * np.pi * tt / 50 + rng.uniform(0, 6, size=(h, w)))).astype(np.float32)


def test_identical_movies():
    x = np.random.default_rng(1).normal(size=(10, 8, 8)).astype(np.float32)
    assert metrics.psnr(x, x) == math.inf
    assert metrics.pixel_snr(x, x) == math.inf


def test_psnr_of_known_noise(clean):
    sigma = 5.0
    noisy = clean + np.random.default_rng(2).normal(0, sigma, clean.shape)
    assert metrics.psnr(noisy, clean, data_range=100.0) == pytest.approx(20 * np.log10(100 / sigma), abs=0.05)
    # default range: the clean movie's 0.1..99.9 percentile range
    lo, hi = np.percentile(clean, [0.1, 99.9])
    assert metrics.robust_range(clean) == pytest.approx(hi - lo)
    assert metrics.psnr(noisy, clean) == pytest.approx(20 * np.log10((hi - lo) / sigma), abs=0.05)


def test_pixel_snr_of_known_signal_and_noise(clean):
    sigma = 3.0
    noisy = clean + np.random.default_rng(3).normal(0, sigma, clean.shape)
    # fluctuating part: 30 * sine, power 30^2 / 2 (the static base does not count)
    expected = 10 * np.log10(30**2 / 2 / sigma**2)
    assert metrics.pixel_snr(noisy, clean) == pytest.approx(expected, abs=0.1)
    # adding a constant offset to everything changes nothing in the signal part
    assert metrics.pixel_snr(noisy + 1000, clean + 1000) == pytest.approx(expected, abs=0.1)


def test_trace_correlations():
    rng = np.random.default_rng(4)
    t = 200
    clean = np.zeros((t, 10, 10), np.float32)
    masks = np.zeros((3, 10, 10), bool)
    masks[0, :3, :3] = masks[1, 5:, 5:] = masks[2, 0, 9] = True
    clean[:, :3, :3] = rng.normal(size=(t, 1, 1))
    clean[:, 5:, 5:] = rng.normal(size=(t, 1, 1))
    clean[:, 0, 9] = 7.0  # flat trace: no correlation defined
    r = metrics.trace_correlations(3 * clean + 10, clean, masks)
    assert r[0] == pytest.approx(1.0) and r[1] == pytest.approx(1.0) and np.isnan(r[2])
    r = metrics.trace_correlations(-clean, clean, masks)
    assert r[0] == pytest.approx(-1.0)
    noisy = clean + rng.normal(0, 1, clean.shape)  # ROI of 9 px: noise var 1/9 vs signal var 1
    r = metrics.trace_correlations(noisy, clean, masks)
    assert r[0] == pytest.approx(np.sqrt(1 / (1 + 1 / 9)), abs=0.03)


def test_spike_rise_fraction():
    t = 300
    onsets = [np.array([50, 120, 200]), np.array([30, 90])]
    dff = np.zeros((2, t))
    for i, k in enumerate(onsets):
        drive = np.zeros(t)
        drive[k] = 1.0
        for j in range(t):
            dff[i, j] = drive[j] + (0.9 * dff[i, j - 1] if j else 0)
    masks = np.zeros((2, 8, 8), bool)
    masks[0, :4] = masks[1, 4:] = True
    clean = np.ones((t, 8, 8)) * 10
    clean[:, :4] += dff[0][:, None, None]
    clean[:, 4:] += dff[1][:, None, None]
    assert metrics.spike_rise_fraction(clean, clean, masks, onsets) == pytest.approx(1.0)
    # a 3-frame causal average keeps only about a third of the one-frame rise
    smooth = clean.copy()
    smooth[2:] = (clean[2:] + clean[1:-1] + clean[:-2]) / 3
    frac = metrics.spike_rise_fraction(smooth, clean, masks, onsets)
    assert 0.25 < frac < 0.45
    # a one-frame delay loses the rise at the onset frame entirely
    late = clean.copy()
    late[1:] = clean[:-1]
    assert metrics.spike_rise_fraction(late, clean, masks, onsets) < 0.15
    # ... which the rise profile finds one frame later
    profile = metrics.rise_profile(late, clean, masks, onsets)
    assert profile[1] == pytest.approx(1.0, abs=0.02) and abs(profile[0]) < 0.15 and abs(profile[-1]) < 0.15
    assert metrics.rise_profile(clean, clean, masks, onsets, offsets=(0,)) == {0: pytest.approx(1.0)}


def test_movies_from_files_give_the_same_numbers(tmp_path, clean):
    noisy = (clean + np.random.default_rng(5).normal(0, 4, clean.shape)).astype(np.float32)
    np.save(tmp_path / "n.npy", noisy)
    np.save(tmp_path / "c.npy", clean)
    masks = np.zeros((2, 16, 20), bool)
    masks[0, :5, :5] = masks[1, 8:, 10:] = True
    spikes = [np.array([10, 60]), np.array([100])]
    direct = metrics.summary(noisy, clean, masks, spikes)
    with open_movie(tmp_path / "n.npy") as n, open_movie(tmp_path / "c.npy") as c:
        from_files = metrics.summary(n, c, masks, spikes)
    assert set(direct) >= {"psnr_db", "pixel_snr_db", "trace_r_median", "spike_rise_fraction", "data_range"}
    for k in direct:
        assert from_files[k] == pytest.approx(direct[k], rel=1e-9)
    old = metrics.CHUNK
    try:
        metrics.CHUNK = 7  # chunking does not change the answer
        assert metrics.summary(noisy, clean, masks, spikes)["psnr_db"] == pytest.approx(direct["psnr_db"], rel=1e-12)
    finally:
        metrics.CHUNK = old


def test_float64_inputs_are_not_modified(clean):
    clean64 = clean.astype(np.float64)
    noisy64 = clean64 + np.random.default_rng(6).normal(0, 4, clean.shape)
    before_n, before_c = noisy64.copy(), clean64.copy()
    masks = np.zeros((1, 16, 20), bool)
    masks[0, :5, :5] = True
    metrics.summary(noisy64, clean64, masks, [np.array([10])])
    metrics.psnr(noisy64, clean64)
    metrics.pixel_snr(noisy64, clean64)
    np.testing.assert_array_equal(noisy64, before_n)
    np.testing.assert_array_equal(clean64, before_c)


def test_shape_mismatch():
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.psnr(np.zeros((3, 4, 4)), np.zeros((4, 4, 4)))
