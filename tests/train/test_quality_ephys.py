"""The ephys quality report: noise before/after and the amplitude detected spikes keep, with its warning."""

import numpy as np
import pytest

from livedenoise.train.quality import ephys_quality_report, ephys_summary_lines

RATE = 30000.0


def recording(seed=0, seconds=4.0, C=6, noise=7.0):
    """(noisy, clean) µV: white noise plus negative spikes of 60-120 µV (a 1 ms biphasic shape)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    clean = np.zeros((n, C))
    t = np.arange(-30, 60)
    shape = -np.exp(-0.5 * (t / 6.0) ** 2) + 0.3 * np.exp(-0.5 * ((t - 20) / 12.0) ** 2)
    shape /= -shape.min()
    for c in range(C):
        for s in rng.choice(np.arange(100, n - 100), 60, replace=False):
            clean[s + t, c] += rng.uniform(60, 120) * shape
    return clean + rng.standard_normal((n, C)) * noise, clean


def test_the_identity_keeps_every_spike_and_no_warning():
    raw, _ = recording()
    rep = ephys_quality_report(raw, raw, RATE)
    assert rep["spikes_strong"] > 100
    assert rep["amplitude_kept"] == pytest.approx(1.0) and rep["noise_reduction"] == pytest.approx(1.0)
    assert rep["warnings"] == []


def test_a_perfect_denoiser_reads_as_keeping_the_amplitude_and_removing_the_noise():
    raw, clean = recording(1)
    rep = ephys_quality_report(raw, clean, RATE)
    assert 0.97 <= rep["amplitude_kept"] <= 1.03  # the spike time is read off the denoised trace: no selection bias
    assert rep["noise_reduction"] > 10
    assert rep["warnings"] == []


def test_spikes_cut_by_a_fifth_are_measured_and_warned_about():
    raw, clean = recording(2)
    den = 0.8 * clean + np.random.default_rng(5).standard_normal(clean.shape) * 2.0
    rep = ephys_quality_report(raw, den, RATE)
    assert 0.75 <= rep["amplitude_kept"] <= 0.85
    assert rep["noise_reduction"] > 2.5
    assert any("spikes lose amplitude" in w for w in rep["warnings"])
    text = "\n".join(ephys_summary_lines(rep))
    assert "warning: spikes lose amplitude" in text and "lower" in text


def test_without_spikes_the_check_says_it_cannot_tell():
    rng = np.random.default_rng(0)
    raw = rng.standard_normal((int(2 * RATE), 4)) * 7.0
    rep = ephys_quality_report(raw, raw * 0.5, RATE)
    assert rep["amplitude_kept"] is None and any("not possible" in w for w in rep["warnings"])


def test_bad_shapes_and_short_input_are_refused():
    with pytest.raises(ValueError):
        ephys_quality_report(np.zeros((40000, 3)), np.zeros((40000, 4)), RATE)
    with pytest.raises(ValueError, match="1 s"):
        ephys_quality_report(np.zeros((100, 3)), np.zeros((100, 3)), RATE)


def test_power_added_outside_the_spike_band_is_warned_about():
    raw, clean = recording(3)
    n = len(raw)
    hum = 20.0 * np.sin(2 * np.pi * 50.0 * np.arange(n) / RATE)[:, None]  # 50 Hz the input does not have
    rep = ephys_quality_report(raw, clean + hum, RATE)
    lf = rep["outside_band_uv"]["below 300 Hz"]
    assert lf["denoised"] > 3 * lf["raw"]
    assert any("below 300 Hz" in w for w in rep["warnings"])
    assert not any("above 10 kHz" in w for w in rep["warnings"])
    ok = ephys_quality_report(raw, clean, RATE)
    assert not any("outside the spike band" in w for w in ok["warnings"])
