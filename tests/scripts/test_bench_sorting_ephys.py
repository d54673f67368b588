"""scripts/bench_sorting_ephys.py: the ground truth it generates and the metrics it scores (no sorter run here)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("spikeinterface")
ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_sorting_ephys", ROOT / "scripts" / "bench_sorting_ephys.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.mark.parametrize("dist, lo, hi", [("log", 20, 46), ("uniform", 3, 20)])
def test_amplitudes_are_drawn_log_uniformly_by_default_as_in_the_issue(dist, lo, hi):
    # log-uniform over 15-150 µV puts log(25/15)/log(10) = 22 % of the units under 25 µV (the issue: 31 of 150);
    # uniform puts 7 % there
    noisy, clean, gt, probe = bench.ground_truth(8, 0.2, 150, 7.0, (15.0, 150.0), seed=1, amp_dist=dist)
    peaks = np.asarray(gt.get_property("gt_peak_uv"))
    assert peaks.shape == (150,) and peaks.min() >= 15.0 - 1e-3 and peaks.max() <= 150.0 + 1e-3
    assert lo <= int((peaks < 25).sum()) <= hi
    assert noisy.shape == clean.shape == (6000, 8) and noisy.dtype == np.float32
    assert 6.5 < float(np.std(noisy - clean)) < 7.5  # 7 µV of white noise per site
    assert np.asarray(probe.contact_positions).shape == (8, 2)


def test_an_unknown_amplitude_distribution_is_refused():
    with pytest.raises(ValueError, match="amp_dist"):
        bench.ground_truth(4, 0.1, 3, 7.0, (15.0, 150.0), seed=0, amp_dist="normal")


def test_waveform_metrics_read_the_clean_peak_and_shape():
    noisy, clean, gt, _ = bench.ground_truth(16, 2.0, 6, 7.0, (40.0, 150.0), seed=0)
    same = bench.waveform_metrics(clean, clean, gt, 30000.0)
    assert same["amp"] == pytest.approx(1.0) and same["cos"] == pytest.approx(1.0)
    half = bench.waveform_metrics(0.5 * clean, clean, gt, 30000.0)
    assert half["amp"] == pytest.approx(0.5, abs=1e-6) and half["cos"] == pytest.approx(1.0, abs=1e-6)


def test_residual_rms_in_chunks_equals_the_whole_array():
    rng = np.random.default_rng(0)
    y, c = rng.standard_normal((1001, 3)).astype(np.float32), rng.standard_normal((1001, 3)).astype(np.float32)
    assert bench.resid_rms(y, c, chunk=97) == pytest.approx(float(np.sqrt(np.mean((y - c) ** 2.0))), rel=1e-6)


def test_well_detected_units_are_counted_by_their_ground_truth_amplitude():
    _, _, gt, _ = bench.ground_truth(8, 0.2, 40, 7.0, (15.0, 150.0), seed=2)
    peaks = np.asarray(gt.get_property("gt_peak_uv"))
    ids = np.asarray(gt.unit_ids)
    small, big = ids[peaks < 25], ids[peaks >= 50]
    got = bench.well_by_amplitude([*small[:2], *big], gt)
    assert list(got) == ["<25", "25-50", ">=50"]
    assert got["<25"] == [min(2, len(small)), len(small)]
    assert got["25-50"] == [0, int(((peaks >= 25) & (peaks < 50)).sum())]
    assert got[">=50"] == [len(big), len(big)]
    assert sum(n for _, n in got.values()) == 40


def test_a_sorting_is_scored_against_the_ground_truth_units_it_matches():
    # the sorter names its units its own way: the amplitude bins must follow the matched ground-truth units
    pytest.importorskip("numba", reason="SpikeInterface's comparison needs numba: pip install -e '.[bench]'")
    from spikeinterface.core import NumpySorting

    _, _, gt, _ = bench.ground_truth(8, 10.0, 12, 7.0, (15.0, 150.0), seed=3)
    peaks = np.asarray(gt.get_property("gt_peak_uv"))
    ids = list(gt.unit_ids)
    keep = [u for u, p in zip(ids, peaks) if p >= 25]  # the sorter found only the units of 25 µV or more
    trains = {f"s{i}": gt.get_unit_spike_train(u) for i, u in enumerate(keep)}
    got = bench.score_sorting(gt, NumpySorting.from_unit_dict([trains], gt.get_sampling_frequency()))
    assert got["well"] == got["found"] == len(keep)
    assert got["well_by_amp"]["<25"] == [0, int((peaks < 25).sum())]
    assert got["well_by_amp"]["25-50"][0] + got["well_by_amp"][">=50"][0] == len(keep)
